"""profiling launches: each Triton launch timed alone where the op launches it (here in the Triton
interpreter, with a stand-in timer), recorded so that a CPU can rebuild and model the very launch.
The modelling half (--predict, compiling for sm_90) is in test_predict.py, in compiled mode."""
import json
import os

import pytest
import torch

from profiling import launches
from profiling.capture import launch_from_json, launch_to_json
from profiling.kernel_work import TensorInfo

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "launches_interpreted.json")


def test_the_defaults_come_first_then_each_configuration_list():
    items = launches.work_list(["conv"], 2, "all", ["triton"], ["group3.conv2"])
    labels = [it[3] for it in items]
    assert labels[0] == "default" and labels.count("default") == 1
    # then the spec's variants (the autotuner's twins, the weights through pointers, not TMA), then the lists
    assert labels[1:4] == ["A_VIA_L1", "PERSISTENT", "W_POINTERS"]
    assert len(labels) > 6 and all(lab.split("[")[0].endswith("CONFIGS") for lab in labels[4:])
    fp8 = [it[3] for it in launches.work_list(["conv"], 2, "all", ["fp8"], ["group3.conv2"])]
    assert fp8[1:5] == ["A_VIA_L1", "PERSISTENT", "FP8_NARROW_K", "W_POINTERS"]  # and fp8's lists' own BLOCK_K
    both = launches.work_list(["conv"], 2, "all", ["triton"], ["group3.conv2", "group2.conv2"])
    assert [it[3] for it in both[:2]] == ["default", "default"]  # every layer's default before any list entry
    assert launches.work_list(["conv"], 2, "default", ["triton"], None)[-1][3] == "default"
    # the tap-by-tap form only where the taps pack (group1.conv1's 24 input channels), not a duplicate elsewhere
    g1 = [it[3] for it in launches.work_list(["conv"], 2, "all", ["triton"], ["group1.conv1"])]
    assert g1[1:6] == ["A_VIA_L1", "PERSISTENT", "W_POINTERS", "TAPS_APART", "UNSWAPPED"]
    # the untransposed form only where a 64-column tile may be swapped (64 output or input channels)
    assert "UNSWAPPED" not in labels
    assert "TAPS_APART" not in [it[3] for it in launches.work_list(["conv"], 2, "all", ["triton"], ["whiten"])]
    assert "TAPS_APART" not in labels


def test_every_launch_of_a_conv_is_timed_and_recorded_in_the_interpreter():
    calls = []

    def timer(fn):
        calls.append(fn)
        fn()
        return 0.5

    res = launches.measure(["conv"], torch.device("cpu"), torch.float32, 2, configs="default", impls=["triton"],
                           layers=["group3.conv2"], timer=timer)
    recs = res["records"]
    assert res["complete"] and [(r["kernel"], r["phase"]) for r in recs] == [
        ("_conv_kernel", "fwd"), ("_conv_kernel", "bwd"), ("_wgrad_kernel", "bwd")]
    assert len(calls) == 3 and all(r["measured_ms"] == 0.5 and r["default"] for r in recs)
    fwd, dgrad = recs[0], recs[1]
    assert "FLIP=0" in fwd["config"] and "FLIP=1" in dgrad["config"]
    ln = launch_from_json(json.loads(json.dumps(fwd["launch"])))  # through JSON, as a GPU's file comes back
    assert ln.kernel == "_conv_kernel" and ln.grid == tuple(fwd["grid"]) and ln.phase == "fwd"
    assert ln.cx["OH"] == 3 and ln.cx["CRED"] == 256 and isinstance(ln.args["x_ptr"], TensorInfo)
    assert ln.args["x_ptr"].shape == (2, 256, 3, 3) and ln.args["M"] == 18


def test_a_launch_timed_once_per_op_and_case_and_run_every_time():
    class FakeKernel:  # stands for a @triton.jit kernel: what make_launch reads, and kernel[grid](...)
        arg_names = ["x", "n"]
        constexprs = []
        __name__ = "_fake_kernel"
        runs = 0

        def __getitem__(self, grid):
            def run(*args, **kwargs):
                FakeKernel.runs += 1
            return run

    k, x, timed, out = FakeKernel(), torch.zeros(4), set(), []
    hook = launches._timing_hook(out, lambda fn: (fn(), 1.0)[1], timed)
    assert hook(k, (2,), (x, 4), {"num_warps": 4}) is True  # ran (the interpreter compiles nothing to return)
    hook(k, (2,), (x, 4), {"num_warps": 4})
    hook(k, (3,), (x, 4), {"num_warps": 4})  # another grid: another launch
    assert [ln.grid for ln, _ in out] == [(2,), (3,)]
    assert FakeKernel.runs == 3 + 2  # every launch ran for the op; the two timed ones ran again on the clock


def test_a_configuration_that_fails_is_recorded_with_its_error(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("out of resources: shared memory\nmore")
    monkeypatch.setattr(launches, "_drive", boom)
    res = launches.measure(["conv"], torch.device("cpu"), torch.float32, 2, configs="default", impls=["triton"],
                           layers=["group3.conv2"], timer=launches.wall_timer)
    (r,) = res["records"]
    assert r["error"] == "RuntimeError: out of resources: shared memory" and r["variant"] == "default"


def test_the_time_budget_keeps_what_was_timed(monkeypatch):
    monkeypatch.setattr(launches, "_drive", lambda *a, **k: None)
    seen = []
    res = launches.measure(["conv"], torch.device("cpu"), torch.float32, 2, configs="all", impls=["triton"],
                           layers=["group3.conv2"], budget_s=0.0, checkpoint=seen.append)
    assert not res["complete"] and res["records"] == [] and seen == []
    res = launches.measure(["conv"], torch.device("cpu"), torch.float32, 2, configs="default", impls=["triton"],
                           layers=["group3.conv2"], checkpoint=seen.append)
    assert res["complete"] and len(seen) == 1 and seen[0]["complete"] is False


def test_launch_json_round_trip_keeps_the_specialisation():
    data = json.load(open(FIXTURE))  # launches the interpreter recorded (test_predict.py models them)
    ln = launch_from_json(data["records"][2]["launch"])
    again = launch_from_json(json.loads(json.dumps(launch_to_json(ln))))
    assert (again.key, again.signature, again.constexprs, again.attrs, again.grid, again.num_warps) == \
        (ln.key, ln.signature, ln.constexprs, ln.attrs, ln.grid, ln.num_warps)
    with pytest.raises(KeyError, match="no Triton kernel named '_gone_kernel'"):
        launch_from_json(dict(data["records"][0]["launch"], kernel="_gone_kernel"))
    # recorded before the kernel gained a trailing constexpr with a default (PERSIST): the default is filled in
    old = dict(data["records"][0]["launch"])
    sig = dict(old["signature"])
    sig.pop("PERSIST", None)
    n = len(sig)
    old.update(signature=sig, constexprs=[c for c in old["constexprs"] if c[0][0] < n])
    ln = launch_from_json(old)
    assert ln.signature["PERSIST"] == "constexpr" and ln.cx["PERSIST"] == 0
    # an argument missing from the middle: another version of the lab, said so
    sig.pop("M")
    with pytest.raises(ValueError, match="another version of the lab"):
        launch_from_json(dict(old, signature=sig))


def test_spread_and_the_default_against_the_fastest_configuration():
    def row(variant, ms, pred, kernel="_conv_kernel", phase="fwd"):
        return dict(impl="triton", case="group1.conv1 2000x24x31x31", phase=phase, kernel=kernel, variant=variant,
                    default=variant == "default", config=variant, measured_ms=ms, predicted_ms=pred, ratio=ms / pred)
    rows = [row("default", 0.40, 0.20), row("FWD_CONFIGS[0]", 0.30, 0.25), row("FWD_CONFIGS[1]", 0.50, 0.10),
            row("default", 0.2, 0.2, kernel="_wgrad_kernel", phase="bwd")]
    sp = launches.spread(rows)
    assert sp["n"] == 4 and sp["median"] == pytest.approx(1.6) and sp["p10"] < sp["median"] < sp["p90"]
    (b,) = launches.best_configs(rows)  # the weight-grad has one configuration: nothing to compare
    assert b["best_variant"] == "FWD_CONFIGS[0]" and b["default_over_best"] == pytest.approx(0.40 / 0.30)
    assert b["model_picks"] == "FWD_CONFIGS[1]" and b["model_pick_ms"] == 0.50 and b["configs"] == 3
    assert launches.spread([]) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the command times launches")
def test_timing_needs_a_gpu_and_says_so(tmp_path):
    from profiling.__main__ import main
    with pytest.raises(SystemExit, match="needs a GPU"):
        main(["launches", "--out", str(tmp_path)])
