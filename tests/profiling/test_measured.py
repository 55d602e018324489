"""The static model's measured-vs-predicted section reads every GPU report (profiling.assemble):
newest first by the folder's name, each backend's newest trace, conv layers beside their predicted
kernels, and the spread of our kernels' ratios. Fake model rows: no static run needed."""
import json

import pytest

import kernels
from profiling.assemble import gpu_reports, layer_predictions, measured_vs_predicted, trace_backend
from profiling.shapes import FROZEN, case_key, step_calls

LAYERS = ["whiten", "group1.conv1", "group1.conv2", "group2.conv1", "group2.conv2", "group3.conv1", "group3.conv2"]


def _report(root, name, device="NVIDIA H100 80GB HBM3", device_type="cuda", quick=False, traces=None, triton=None):
    d = root / name
    (d / "trace").mkdir(parents=True)
    env = dict(device=device, device_type=device_type) | (dict(triton=triton) if triton else {})
    (d / "report.json").write_text(json.dumps(dict(quick=quick, env=env)))
    if traces is not None:
        (d / "trace" / "trace.json").write_text(json.dumps(traces))
    return d


def _rows(arch="sm_90"):
    """As profiling static's rows, one per distinct case (two layers of one shape share theirs): a fwd
    and a bwd row of 0.1 ms per conv case of triton_all, an _apply_kernel row of 0.01 ms per bn_act case."""
    rows, seen = [], set()
    for case, _ in step_calls(2000, backend="triton_all"):
        key = case_key(case)
        if key in seen:
            continue
        seen.add(key)
        if case.op == "conv":
            for ph in ("fwd", "bwd"):
                rows.append(dict(default=True, arch=arch, impl="triton", op="conv", case_key=key,
                                 phase=ph, kernel="_conv_kernel", predicted_ms=0.1))
        if case.op == "bn_act":
            rows.append(dict(default=True, arch=arch, impl="triton", op="bn_act", case_key=key,
                             phase="fwd", kernel="_apply_kernel", predicted_ms=0.01))
    return rows


def test_reports_newest_first_by_name_gpu_only(tmp_path):
    _report(tmp_path, "nvidia-h200-2026-11-30")
    _report(tmp_path, "nvidia-h200-2026-11-30b")
    _report(tmp_path, "nvidia-h100-2026-11-29")
    _report(tmp_path, "cpu-2026-12-01", device_type="cpu")
    _report(tmp_path, "nvidia-h100-2026-12-02", quick=True)
    assert [p.split("/")[-1] for p, _ in gpu_reports(str(tmp_path))] == [
        "nvidia-h200-2026-11-30b", "nvidia-h200-2026-11-30", "nvidia-h100-2026-11-29"]


def test_a_traces_backend_from_its_op_mapping_or_its_flags():
    assert trace_backend(dict(ops=kernels.resolve_names("triton_all"), flags="--backend eager")) == "triton_all"
    assert trace_backend(dict(ops=kernels.resolve_names("triton", {"conv": "triton_small"}))) is None
    assert trace_backend(dict(flags="--data d --backend triton_all --backend triton")) == "triton"
    assert trace_backend(dict(flags="--data d --backend=fp8")) == "fp8"
    assert trace_backend(dict(flags="--data d")) == "eager"
    assert trace_backend(dict(flags="--backend nonsense")) is None


def test_layer_predictions_sum_each_layers_kernels_while_the_whitening_bias_trains():
    pred = layer_predictions(_rows(), 2000, "triton_all", "sm_90")
    assert set(pred) == set(LAYERS) and not any(FROZEN in k for k in pred)
    assert pred["group1.conv1"] == pytest.approx(dict(fwd=0.1, bwd=0.1))


def test_layers_and_kernels_of_the_newest_trace_per_backend_and_their_spread(tmp_path):
    layers = [dict(layer=n, fwd_ms=0.2, bwd_ms=0.15, fwd_kernels=1, bwd_kernels=3) for n in LAYERS]
    new = [dict(flags="--backend triton_all", ops=kernels.resolve_names("triton_all"), batch=2000, conv_layers=layers,
                top=[dict(name="_conv_kernel", ms=9.0), dict(name="_apply_kernel", ms=0.06)])]
    old = [dict(flags="--data d --backend triton", batch=2000, top=[dict(name="_apply_kernel", ms=1.0)]),
           dict(flags="--data d --backend triton_all", batch=2000, top=[dict(name="_apply_kernel", ms=5.0)])]
    _report(tmp_path, "nvidia-h100-2026-12-01", traces=old)
    _report(tmp_path, "nvidia-h100-2026-12-01b", traces=new)
    m = measured_vs_predicted(_rows(), [], 2000, str(tmp_path))
    assert {(r["layer"], r["phase"]): r["ratio"] for r in m["layers"]} == pytest.approx(
        {(n, ph): (2.0 if ph == "fwd" else 1.5) for n in LAYERS for ph in ("fwd", "bwd")})
    got = {(r["backend"], r["kernel"]): r["measured_ms"] for r in m["kernels"]}
    assert got == {("triton_all", "_conv_kernel"): 9.0, ("triton_all", "_apply_kernel"): 0.06,
                   ("triton", "_apply_kernel"): 1.0}  # the older report's triton_all trace is superseded
    # 14 layer rows and _apply_kernel once (triton_all's: 0.06 ms against 6 calls of 0.01, ratio 1);
    # _conv_kernel is in the layers
    sp = m["spread"]
    assert sp["n"] == 15 and sp["median"] == pytest.approx(1.5) and sp["slower"] == 14
    assert "nvidia-h100-2026-12-01b" in m["report"].split(", ")[0]


def test_reports_of_another_gpu_are_left_out(tmp_path):
    _report(tmp_path, "nvidia-a100-2026-12-03", device="NVIDIA A100-SXM4-80GB",
            traces=[dict(flags="--backend triton", batch=2000, top=[dict(name="_apply_kernel", ms=1.0)])])
    _report(tmp_path, "nvidia-h100-2026-12-01",
            traces=[dict(flags="--backend triton", batch=2000, top=[dict(name="_apply_kernel", ms=2.0)])])
    m = measured_vs_predicted(_rows() + _rows("sm_80"), [], 2000, str(tmp_path))
    assert m["device"].startswith("NVIDIA A100") and m["arch"] == "sm_80"
    assert [(r["kernel"], r["measured_ms"]) for r in m["kernels"]] == [("_apply_kernel", 1.0)]


def test_runs_with_an_op_override_are_not_their_backends(tmp_path):
    """Training records of --backend triton --op conv=triton_small are not --backend triton's runs."""
    from profiling.assemble import measured_runs
    d = tmp_path / "nvidia-h200-2026-12-04"
    (d / "runs").mkdir(parents=True)
    per_epoch = [dict(epoch=e, time_s=0.14 * e) for e in range(1, 9)]

    def rec(t, ops):
        return dict(config=dict(backend="triton", compile="none", cuda_graph=True, recipe="airbench94_muon", ops=ops),
                    accuracy=0.908, time_s=t, steps=200, per_epoch=per_epoch)
    recs = [rec(1.12, kernels.resolve_names("triton")), rec(1.07, kernels.resolve_names("triton", {"conv": "triton_small"}))]
    (d / "runs" / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    steps = [dict(backend="triton", arch="sm_90", run_graph_s=1.0, run_graph_range="0.9-1.1", predicted_ms=4.0)]
    got = measured_runs(str(d), steps, "sm_90")
    assert [(r["backend"], r["runs"], r["measured_s"]) for r in got] == [("triton", 1, 1.12)]


def test_a_layer_is_predicted_with_the_configurations_its_run_chose():
    """Autotuning on the GPU picks its own configurations: a traced launch is matched by kernel, grid and
    threads per block to the row the model compiled for it (shared memory decides between twins)."""
    from profiling.assemble import ran_prediction

    def row(kernel, grid, warps, ms, default=False, shared=0, regs=100):
        return dict(kernel=kernel, grid=grid, num_warps=warps, predicted_ms=ms, default=default, shared=shared,
                    regs=regs)
    cands = [row("_conv_kernel", [3516], 8, 0.20, default=True), row("_conv_kernel", [7032], 4, 0.25),  # as recorded
             row("_wgrad_kernel", [6, 22], 8, 0.10, default=True, shared=98304),
             row("_wgrad_kernel", [6, 22], 8, 0.12, shared=122880)]  # an L1 twin: same grid and warps
    ran = [dict(kernel="_conv_kernel", grid=[7032, 1, 1], threads=128),
           dict(kernel="_wgrad_kernel", grid=[6, 22, 1], threads=256, shared=122880),
           dict(kernel="void at::native::reduce_kernel", grid=[2, 1056, 1], threads=128)]  # not ours: ignored
    assert ran_prediction(cands, ran) == pytest.approx(0.25 + 0.12)
    ran[1]["shared"] = 4096  # no twin with that shared memory: the default of the two
    assert ran_prediction(cands, ran) == pytest.approx(0.25 + 0.10)
    cands[3]["shared"], cands[3]["regs"] = 98304, 160  # twins alike but for their registers: the nearest
    ran[1].update(shared=98304, regs=151)
    assert ran_prediction(cands, ran) == pytest.approx(0.25 + 0.12)
    ran[1]["regs"] = None  # no register count: the default
    assert ran_prediction(cands, ran) == pytest.approx(0.25 + 0.10)
    assert ran_prediction(cands, [dict(kernel="_conv_kernel", grid=[999, 1, 1], threads=128)]) is None
    assert ran_prediction(cands, ran[2:]) is None  # no Triton launch at all


def test_a_measured_launch_below_a_bound_names_the_ceiling_it_beat():
    """A bound is a floor on a launch's time: a traced launch faster than one of the bounds of the row it
    ran (beyond the margin for trace noise) names that bound, and the L2 throughput it implies is its
    L2 bytes over the measured time."""
    from profiling.assemble import BEATEN_MARGIN, bound_checks
    row = dict(kernel="_conv_kernel", grid=[3516], num_warps=4, default=True, shared=98304, regs=152,
               config="BLOCK_M=128", variant="default", predicted_ms=0.43, bound="l2", l2_bytes=3.11e9,
               bounds_ms=dict(l2=0.432, smem=0.25, issue=0.30, fixed=0.002))
    ran = [dict(kernel="_conv_kernel", grid=[3516, 1, 1], threads=128, shared=98304, regs=152, ms=0.301),
           dict(kernel="void at::native::reduce_kernel", grid=[2, 1, 1], threads=128, ms=0.05)]  # not ours
    (c,) = bound_checks([row], ran, "group2.conv1", "bwd", "triton_all")
    assert set(c["beaten"]) == {"l2"} and c["beaten"]["l2"] == pytest.approx(0.432 / 0.301)
    assert c["l2_tbps"] == pytest.approx(3.11e9 / 0.301e-3 / 1e12)
    assert c["grid"] == [3516, 1, 1] and c["layer"] == "group2.conv1"
    ran[0]["ms"] = 0.432 / BEATEN_MARGIN * 1.001  # within the margin: not beaten
    assert bound_checks([row], ran, "group2.conv1", "bwd", "triton_all")[0]["beaten"] == {}
    ran[0]["grid"] = [999, 1, 1]  # a configuration the model did not compile: no check
    assert bound_checks([row], ran, "group2.conv1", "bwd", "triton_all") == []


def test_the_measured_section_says_when_the_gpu_ran_another_triton(tmp_path, monkeypatch):
    """The SASS modelled here comes from the installed Triton; the GPU's times from the GPU machine's.
    The second H200 session's whitening conv was 479 SASS instructions under its triton 3.6 and 1109
    under CI's 3.8, so its issue bound looked beaten 2.57x: the section names both versions where they
    differ, and says nothing where they agree."""
    import triton

    from profiling.static_render import measured_section
    traces = [dict(flags="--backend triton", batch=2000, top=[dict(name="_apply_kernel", ms=1.0)])]
    _report(tmp_path, "nvidia-h100-2026-12-01", traces=traces, triton="3.6.0")
    monkeypatch.setattr(triton, "__version__", "3.8.0")
    m = measured_vs_predicted(_rows(), [], 2000, str(tmp_path))
    assert m["gpu_triton"] == ["3.6.0"] and m["local_triton"] == "3.8.0"
    text = "\n".join(measured_section(m))
    assert "triton 3.6.0" in text and "triton 3.8.0" in text
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    text = "\n".join(measured_section(measured_vs_predicted(_rows(), [], 2000, str(tmp_path))))
    assert "another Triton" not in text
