"""``profiling static``: every Triton kernel compiled as the GPU would compile it (on this CPU, for
sm_80 and sm_90, at the network's real shapes, every block configuration), its SASS read, and the
performance model's predictions; the rules of profiling/rules.py hold."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# compiling every kernel for two architectures takes about two minutes on a 2-core CPU
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def static(tmp_path_factory):
    out = tmp_path_factory.mktemp("static")
    r = subprocess.run([sys.executable, "-m", "profiling", "static", "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    data = json.loads((out / "static.json").read_text())
    data["_md"] = (out / "static.md").read_text()
    data["_stdout"] = r.stdout
    data["_png"] = (out / "static.png").is_file()
    return data


@pytest.fixture(scope="module")
def rows(static):
    return static["rows"]


def test_every_registered_triton_kernel_is_compiled_for_both_archs(rows):
    kernels_seen = {(r["kernel"], r["arch"]) for r in rows}
    for name in ("_stats_kernel", "_apply_kernel", "_bwd_reduce_kernel", "_bwd_dx_kernel", "_maxpool_fwd_kernel", "_maxpool_bwd_kernel", "_conv_kernel", "_wgrad_kernel"):
        assert (name, "sm_80") in kernels_seen and (name, "sm_90") in kernels_seen, name
    for r in rows:
        assert r["regs"] > 0 and 0 < r["occupancy"] <= 1, r


def test_every_shape_and_implementation_on_every_arch_it_runs_on(rows):
    # conv=triton runs on both GPUs, so all of its shapes (the whitening and first convs too) are on both;
    # conv=fp8 refuses an A100 and is modelled on sm_90 only
    from profiling.shapes import unique_ops
    for impl, archs in (("triton", {"sm_80", "sm_90"}), ("fp8", {"sm_90"})):
        for case in unique_ops(2000, "conv"):
            seen = {r["arch"] for r in rows if r["impl"] == impl and r["case"] == case.label() and r["default"]}
            assert seen == archs, (impl, case.label(), seen)


def test_bn_act_is_compiled_with_the_weight_the_network_passes(rows):
    bn = [r for r in rows if r["op"] == "bn_act" and r["default"] and "HAS_W" in r["config"]]
    assert bn and all("HAS_W=1" in r["config"] for r in bn)


def test_rows_carry_the_model_fields(rows):
    need = ("predicted_ms", "predicted_fraction", "bound", "loops", "wait_depth", "instr_per_elem", "issue_budget",
            "fadd_after_mma", "sts_u8", "waves", "programs", "resident", "dram_bytes", "min_bytes", "roofline_ms",
            "predicted_range_ms")
    for r in rows:
        if r["default"]:
            for k in need:
                assert k in r, (k, r["kernel"])
            assert r["predicted_ms"] > 0 and r["bound"] in ("memory", "latency", "l2", "issue", "tensor", "smem",
                                                            "launch")
            assert r["predicted_ms"] >= r["roofline_ms"] * 0.999 or r["roofline_ms"] == 0, r
    mem = [r for r in rows if r["default"] and r["op"] in ("bn_act", "maxpool")]
    assert mem and all(r["instr_per_elem"] and r["issue_budget"] for r in mem)
    gemm = [r for r in rows if r["default"] and r["kernel"] in ("_conv_kernel", "_wgrad_kernel")]
    assert gemm and all(r["instr_per_mma"] and r["mma_budget"] for r in gemm)


def test_async_copies_count_as_vector_loads(rows):
    conv90 = [r for r in rows if r["default"] and r["kernel"] == "_conv_kernel" and r["arch"] == "sm_90"
              and r["shape"][1] >= 32]
    assert conv90 and all(r["vector_loads"] > 0 for r in conv90)


def test_per_op_and_per_step_predictions(static):
    ops, steps = static["ops"], static["steps"]
    assert {(o["op"], o["impl"]) for o in ops} >= {("bn_act", "triton"), ("maxpool", "triton"), ("conv", "triton"),
                                                    ("conv", "fp8")}
    for o in ops:
        assert o["predicted_ms"] > 0 and o["roofline_ms"] > 0 and 0 < o["predicted_fraction"] <= 1.2
    by = {(s["backend"], s["arch"]): s for s in steps}
    for arch in ("sm_80", "sm_90"):
        t = by[("triton_all", arch)]
        assert t["predicted_ms"] > t["roofline_ms"] > 0 and t["eager_roofline_ms"] == 0
        # the fused minimum (every op fused where data allows) lies below the per-op rooflines
        assert 0 < t["fused_min_ms"] < t["roofline_ms"] and 0 < t["of_fused_min"] < 1
        # HBM bytes per step: above the fused minimum; the eager backend's is its ops' must-move bytes
        assert t["hbm_mb"] > t["fused_min_mb"] > 0 and by[("eager", arch)]["hbm_mb"] > t["fused_min_mb"]
        assert "HBM MB / step (model)" in static["_md"]
        # each fusion of issue 23 predicted before it is built: bytes removed, within triton_all's traffic
        fus = {f["fusion"]: f for f in static["fusions"][arch]}
        assert set(fus) == {"pool_stats_in_conv1", "stats_in_conv2", "bn_act_in_prologue", "bn_bwd_sums_in_dgrad",
                            "pool_bwd_in_bn_dx"}
        assert all(f["mb"] > 0 and f["ms"] > 0 and f["layers"] for f in fus.values())
        assert fus["pool_stats_in_conv1"]["layers"] == ["group1.conv1", "group2.conv1", "group3.conv1"]
        assert sum(f["mb"] for f in fus.values()) < t["hbm_mb"]
        assert "Fusions of issue 23: predicted HBM traffic removed per step" in static["_md"]
        assert t["bound"] in ("memory", "latency", "l2", "issue", "tensor", "smem", "launch", "glue")
        # the whole run: steps x step + evaluation, with its range
        assert t["steps_per_run"] == 200 and t["run_graph_s"] > 200 * t["predicted_ms"] / 1e3
        lo, hi = (float(v) for v in t["run_graph_range"].split("-"))
        assert lo < t["run_graph_s"] < hi
        lo, hi = t["predicted_range_ms"]  # the JSON carries every prediction's range
        assert lo < t["predicted_ms"] < hi
        assert by[("triton", arch)]["eager_roofline_ms"] > 0  # cuDNN convs: not modelled, roofline only
        assert by[("eager", arch)]["predicted_ms"] is None
    assert by[("fp8", "sm_80")]["predicted_ms"] is None and by[("fp8", "sm_90")]["predicted_ms"] > 0
    assert all(s.get("host_ms") for s in steps if s["backend"] in ("eager", "triton") )


def test_host_time_per_backend(static):
    host = {h["backend"]: h for h in static["host"]}
    for b in ("eager", "triton", "triton_all", "fp8"):
        assert host[b]["host_ms"] > 0 and host[b]["launches"] > 100
    assert host["eager"]["triton_launches"] == 0 and host["triton_all"]["triton_launches"] > 0


def test_report_says_predictions_and_writes_chart(static):
    md = static["_md"]
    assert md.startswith("# Static performance model") and "not measurements" in md
    for section in ("## Per training step", "## Per op", "## Per kernel launch", "## Findings", "## Every configuration"):
        assert section in md, section
    assert "PREDICTIONS" in static["_stdout"]
    assert static["_png"]


def test_rules_hold(static):
    """Every rule holds but the known findings (profiling/rules.py KNOWN, each with its open issue),
    as ``profiling static --check`` decides."""
    from profiling.rules import RULES, check, known
    assert {r["name"] for r in static["rules"]} == {r.name for r in RULES}
    violated = [f for f in check(static["rows"]) if not known(f, static["meta"]["triton"])]
    assert not violated, violated


def test_rules_catch_a_violation():
    from profiling.rules import RULES, check
    row = dict(kernel="_conv_kernel", op="conv", impl="fp8", arch="sm_90", case="x", config="", default=True,
               shape=[2000, 64, 15, 15], spill_bytes=0, shared=0, shared_limit=1, tensor_core_instrs=9,
               main_loops=1, drained_loops=1, wait_depth=1, plain_loads=0, fadd_after_mma=10_000, sts_u8=0,
               vector_loads=1, waves=2.0, sm_balance=1.0, async_widths={"128": 4}, instr_per_elem=None,
               issue_budget=None, tags=["pipelined_gemm", "implicit_gemm_loop"])
    found = {f["rule"] for f in check([row], RULES)}
    assert found == {"fadd_after_mma"}
    found = {f["rule"] for f in check([dict(row, fadd_after_mma=0, main_loops=9, drained_loops=9)], RULES)}
    assert found == {"conv_main_loops", "conv_drained_loops"}


@pytest.mark.parametrize("arch, dtype, instr", [("sm_80", "fp16", "HMMA"), ("sm_90", "fp16", "HGMMA"),
                                                 ("sm_90", "fp8", "QGMMA")])
def test_tensor_core_detection_on_a_reference_gemm(arch, dtype, instr):
    r = subprocess.run([sys.executable, "-c", f"from profiling.cubin import probe_gemm; import json; "
                        f"print(json.dumps(probe_gemm({arch!r}, {dtype!r})['tc']))"], cwd=ROOT,
                       env=dict(os.environ, TRITON_INTERPRET="0"), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    tc = json.loads(r.stdout.strip().splitlines()[-1])
    assert tc[instr] > 0, tc


def _run_record(backend, time_s, compile_="none", cuda_graph=True, steps=200):
    per_epoch = [dict(epoch=e, time_s=0.14 * e) for e in range(1, 9)]
    return dict(config=dict(backend=backend, compile=compile_, cuda_graph=cuda_graph, recipe="airbench94_muon",
                            batch_size=2000), accuracy=0.908, time_s=time_s, steps=steps, per_epoch=per_epoch)


def test_measured_runs_beside_the_predicted_run(static, tmp_path):
    """A GPU report's training records (runs/*.jsonl) stand beside the step table's whole-run
    prediction of the same backend with --cuda-graph (no torch.compile: the model has none), on the
    report's architecture: the median time, the step of epochs 2-8, and measured / predicted."""
    from profiling.assemble import measured_vs_predicted
    rep = tmp_path / "nvidia-h200-2026-11-30"
    (rep / "runs").mkdir(parents=True)
    (rep / "report.json").write_text(json.dumps(dict(quick=False, env=dict(device="NVIDIA H100 80GB HBM3",
                                                                            device_type="cuda"))))
    recs = [_run_record("triton_all", t) for t in (1.30, 1.32, 1.35)] + [_run_record("triton_all", 1.0, "default")]
    recs += [_run_record("triton_all", 9.0, cuda_graph=False)]
    (rep / "runs" / "runs_a.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    m = measured_vs_predicted(static["rows"], static["ops"], 2000, str(tmp_path), steps=static["steps"])
    assert m is not None and [r["backend"] for r in m["runs"]] == ["triton_all"], m
    r = m["runs"][0]
    step = next(s for s in static["steps"] if s["backend"] == "triton_all" and s["arch"] == "sm_90")
    assert r["runs"] == 3 and r["measured_s"] == pytest.approx(1.32) and r["predicted_s"] == step["run_graph_s"]
    assert r["ratio"] == pytest.approx(1.32 / step["run_graph_s"])
    assert r["measured_step_ms"] == pytest.approx(1e3 * 0.14 * 7 / 175) and r["predicted_step_ms"] == step["predicted_ms"]
    # on an H200 (1.43x the H100's HBM bandwidth, the same SMs) the memory-bound kernels are predicted
    # faster: the run's prediction moves down, and the ratio up (the first GPU run's case)
    (rep / "report.json").write_text(json.dumps(dict(quick=False, env=dict(device="NVIDIA H200", device_type="cuda"))))
    h200 = measured_vs_predicted(static["rows"], static["ops"], 2000, str(tmp_path), steps=static["steps"])
    assert h200["predicted_for"] == "H200" and h200["modelled"] == "H100-SXM"
    assert 0.7 * step["run_graph_s"] <= h200["runs"][0]["predicted_s"] < step["run_graph_s"]
    assert h200["runs"][0]["ratio"] > r["ratio"]


def test_predictions_for_a_measured_gpu_scale_each_bound_by_its_peak():
    """An H200 row: the memory bound shrinks by 3350/4800, an issue bound stays; a row of another
    arch and a row without bounds are left as they are."""
    from profiling.assemble import on_device
    from profiling.devices import PEAKS
    rows = [dict(arch="sm_90", bounds_ms=dict(memory=1.0, issue=0.8, fixed=0.002), predicted_ms=1.002, tc={}),
            dict(arch="sm_90", bounds_ms=dict(memory=1.0, issue=0.9, fixed=0.002), predicted_ms=1.002, tc={}),
            dict(arch="sm_80", bounds_ms=dict(memory=1.0, fixed=0.002), predicted_ms=1.002, tc={}),
            dict(arch="sm_90", predicted_ms=0.5)]
    out = on_device(rows, "sm_90", PEAKS["H200"])
    assert out[0]["predicted_ms"] == pytest.approx(0.002 + 0.8)            # issue-bound now
    assert out[1]["predicted_ms"] == pytest.approx(0.002 + 0.9)
    assert out[0]["bounds_ms"]["memory"] == pytest.approx(3350 / 4800)
    assert out[2] is rows[2] and out[3] is rows[3]
    assert on_device(rows, "sm_90", PEAKS["H100-SXM"]) is rows


def test_measured_beside_predicted_when_a_gpu_report_exists(static, tmp_path):
    """A GPU report (trace of --backend triton, op benchmarks) in the reports folder is read and
    put beside the predictions, with the ratio."""
    from profiling.assemble import measured_vs_predicted
    rep = tmp_path / "nvidia-h100-2026-12-01"
    (rep / "trace").mkdir(parents=True)
    (rep / "bench").mkdir()
    (rep / "report.json").write_text(json.dumps(dict(quick=False, env=dict(device="NVIDIA H100 80GB HBM3",
                                                                            device_type="cuda"))))
    (rep / "trace" / "trace.json").write_text(json.dumps([
        dict(flags="--data data", top=[dict(name="_apply_kernel", ms=1.0)]),
        dict(flags="--data data --backend triton", batch=2000,
             top=[dict(name="_apply_kernel", ms=0.5), dict(name="cudnn_conv", ms=3.0)])]))
    (rep / "bench" / "bench.json").write_text(json.dumps(dict(records=[
        dict(op="maxpool", case="group1.pool 2000x64x31x31", impl="triton", mode="fwd+bwd", ms=0.4),
        dict(op="maxpool", case="group1.pool 2000x64x31x31", impl="triton", mode="fwd", ms=0.1),
        dict(op="maxpool", case="group2.pool 2000x64x31x31", impl="triton", mode="fwd+bwd", ms=0.4)])))
    m = measured_vs_predicted(static["rows"], static["ops"], 2000, str(tmp_path))
    assert m["arch"] == "sm_90" and m["device"].startswith("NVIDIA H100")
    k = {x["kernel"]: x for x in m["kernels"]}
    assert set(k) == {"_apply_kernel"} and k["_apply_kernel"]["measured_ms"] == 0.5
    assert k["_apply_kernel"]["ratio"] == pytest.approx(0.5 / k["_apply_kernel"]["predicted_ms"])
    # matched by layer and shape (group1.conv2 and group2.conv1 share an input shape but not the work; the
    # first GPU run's table put both beside group1.conv2's prediction); the forward beside the forward
    op = next(o for o in static["ops"] if o["case"] == "group1.pool 2000x64x31x31" and o["impl"] == "triton"
              and o["arch"] == "sm_90")
    got = {(o["case"], o["mode"]): o for o in m["ops"]}
    assert set(got) == {("group1.pool 2000x64x31x31", "fwd+bwd"), ("group1.pool 2000x64x31x31", "fwd")}, got
    assert got[("group1.pool 2000x64x31x31", "fwd")]["predicted_ms"] == op["fwd_ms"]
    assert got[("group1.pool 2000x64x31x31", "fwd+bwd")]["predicted_ms"] == op["predicted_ms"] > 0
