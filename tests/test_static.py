"""Static checks of every Triton kernel as the GPU would compile it (profiling/static.py):
compiled here, on a CPU, for sm_80 (A100) and sm_90 (H100), at the network's real shapes,
for every block configuration the launchers can pick."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("static")
    r = subprocess.run([sys.executable, "-m", "profiling", "static", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    data = json.loads((out / "static.json").read_text())
    assert (out / "static.md").read_text().startswith("# Static analysis")
    return data["rows"]


def test_every_registered_triton_kernel_is_compiled_for_both_archs(rows):
    kernels_seen = {(r["kernel"], r["arch"]) for r in rows}
    for name in ("_stats_kernel", "_finalize_kernel", "_apply_kernel", "_running_kernel", "_bwd_reduce_kernel",
                 "_bwd_dx_kernel", "_maxpool_fwd_kernel", "_maxpool_bwd_kernel"):
        assert (name, "sm_80") in kernels_seen and (name, "sm_90") in kernels_seen, name
    for r in rows:
        assert r["regs"] > 0 and 0 < r["occupancy"] <= 1, r


def test_no_default_configuration_spills(rows):
    spilling = [(r["kernel"], r["arch"], r["config"], r["spill_bytes"]) for r in rows
                if r["default"] and r["spill_bytes"] > 0]
    assert not spilling, spilling


def test_every_configuration_fits_shared_memory(rows):
    too_big = [(r["kernel"], r["arch"], r["config"], r["shared"]) for r in rows if r["shared"] > r["shared_limit"]]
    assert not too_big, too_big


def test_memory_bound_kernels_use_vector_loads(rows):
    # the channels_last elementwise kernels must load 128 bits at a time, or they cannot reach HBM speed
    for r in rows:
        if r["kernel"] in ("_apply_kernel", "_bwd_dx_kernel", "_maxpool_fwd_kernel") and "CHANNELS_LAST=0" not in r["config"]:
            assert r["ld128"] > 0, (r["kernel"], r["arch"], r["config"])


@pytest.mark.parametrize("arch, dtype, instr", [("sm_80", "fp16", "HMMA"), ("sm_90", "fp16", "HGMMA"),
                                                 ("sm_90", "fp8", "QGMMA")])
def test_tensor_core_detection_on_a_reference_gemm(arch, dtype, instr):
    r = subprocess.run([sys.executable, "-c", f"from profiling.static import probe_gemm; import json; "
                        f"print(json.dumps(probe_gemm({arch!r}, {dtype!r})['tc']))"], cwd=ROOT,
                       env=dict(os.environ, TRITON_INTERPRET="0"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    tc = json.loads(r.stdout.strip().splitlines()[-1])
    assert tc[instr] > 0, tc


def test_conv_kernels_use_tensor_cores(rows):
    conv = [r for r in rows if r["op"] == "conv"]
    import kernels
    triton_conv = [i for i in kernels.impls("conv") if i not in ("eager", "compile")]
    # every Triton conv implementation must show up in the static rows ...
    assert bool(conv) == bool(triton_conv), (triton_conv, len(conv))
    # ... and run on tensor cores: HMMA (sm_80), HGMMA (sm_90), QGMMA (fp8 on sm_90)
    for r in conv:
        fp8 = "HAS_SCALE=1" in r["config"]  # the fp8 implementation runs narrow convs in fp16 (HAS_SCALE=0)
        want = "QGMMA" if fp8 else ("HGMMA" if r["arch"] == "sm_90" else "HMMA")
        assert r["tc"].get(want, 0) > 0, (r["kernel"], r["arch"], r["config"], r["tc"])
