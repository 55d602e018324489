"""The profiling commands produce well-formed output with real numbers (CPU, tiny sizes)."""
import gzip
import json
import math
import os

import pytest

from conftest import ROOT
from profiling.__main__ import main

SMALL = ["--device", "cpu", "--subset", "64", "--batch-size", "32", "--epochs", "1", "--tta", "0"]


def test_trace_two_configs(cifar_dir, tmp_path, capsys):
    out = tmp_path / "trace"
    main(["trace", "--vs", "--backend triton", "--wait", "0", "--warmup", "1", "--active", "1", "--out", str(out),
          "--", "--data", cifar_dir] + SMALL)
    sums = json.loads((out / "trace.json").read_text())
    assert [s["label"] for s in sums] == ["A", "B"]
    assert sums[1]["ops"]["bn_act"] == "triton" and sums[0]["ops"]["bn_act"] == "eager"
    for s in sums:
        ops = s["per_op_ms"]
        for key in ("step: forward", "step: backward", "step: optimizer", "fwd: conv", "fwd: bn_act", "fwd: maxpool",
                    "bwd: conv"):
            assert key in ops and math.isfinite(ops[key]) and ops[key] > 0, (key, ops)
        assert s["top"] and all(t["ms"] >= 0 for t in s["top"])
        trace = json.loads(gzip.open(out / s["trace"]).read())
        names = {e.get("name") for e in trace["traceEvents"]}
        assert {"forward", "backward", "optimizer", "bn_act"} <= names
    md = (out / "trace.md").read_text()
    assert "## Side by side" in md and "B / A" in md
    assert "fwd: bn_act" in capsys.readouterr().out


def test_ab_interleaved(cifar_dir, tmp_path, capsys):
    out = tmp_path / "ab"
    main(["ab", "--a", "", "--b", "--recipe airbench94", "--runs", "2", "--out", str(out), "--", "--data", cifar_dir]
         + SMALL)
    text = capsys.readouterr().out
    order = [ln.split()[2].rstrip(":") for ln in text.splitlines() if ln.strip().startswith("run ")]
    assert order == ["A", "B", "A", "B"]  # interleaved
    res = json.loads((out / "ab.json").read_text())
    assert len(res["results"]["A"]) == len(res["results"]["B"]) == 2
    assert [r["seed"] for r in res["results"]["A"]] == [r["seed"] for r in res["results"]["B"]] == [0, 1]
    for metric in ("time", "accuracy"):
        c = res[metric]
        assert 0 <= c["p"] <= 1 and isinstance(c["significant"], bool) and c["a"]["n"] == 2
        assert math.isfinite(c["a"]["ci95"]) and c["a"]["mean"] > 0
    assert res["configs"]["B"]["recipe"] == "airbench94"
    assert "Welch p" in (out / "ab.md").read_text()


@pytest.mark.slow
def test_report_quick(cifar_dir, tmp_path):
    out = tmp_path / "reports"
    main(["report", "--quick", "--skip", "tests,static", "--runs", "2", "--data", cifar_dir, "--out", str(out)])
    latest = (out / "LATEST.md").read_text()
    name = latest.split("[")[1].split("]")[0]
    rep = out / name
    readme = (rep / "README.md").read_text()
    assert "CPU smoke run" in readme
    assert "| bench | ok |" in readme and "| trace | ok |" in readme and "| ab | ok |" in readme
    assert "| tests | skipped (asked) |" in readme
    for f in ("ab/ab.json", "bench/bench.json", "trace/trace.json", "report.json"):
        assert (rep / f).is_file(), f
    for s in json.loads((rep / "trace" / "trace.json").read_text()):
        path = rep / "trace" / s["trace"].split(" ")[0]
        assert path.is_file() and os.path.getsize(path) < 2_000_000
    assert "| ab_compile | skipped (GPU only) |" in readme and "(not run: skipped (GPU only))" in readme
    # a second call (as a GPU session with 10-minute device calls makes) that skips what the
    # first one ran keeps the first one's steps and results
    ab_before = json.loads((rep / "report.json").read_text())["ab"]
    main(["report", "--quick", "--resume", "--skip", "tests,static,bench,trace,ab", "--data", cifar_dir, "--out", str(out)])
    readme = (rep / "README.md").read_text()
    assert "| bench | ok (earlier call) |" in readme and "| ab | ok (earlier call) |" in readme
    assert "| tests | skipped (asked) |" in readme
    assert "A/B: eager vs triton" in readme and "Welch p" in readme
    assert json.loads((rep / "report.json").read_text())["ab"] == ab_before


# ---- issue 17: bad flags, where outputs go, what the report says


import argparse  # noqa: E402

from profiling import bench as bench_mod, report as report_mod, trace as trace_mod  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--ops", "nope"], "--ops: unknown op 'nope'"),
    (["--peak", "nope"], "--peak: unknown device 'nope'"),
    (["--impls", "nope"], "--impls: unknown implementation 'nope'"),
    (["--modes", "nope"], "--modes: unknown mode 'nope'"),
    (["--batch", "0"], "--batch must be at least 1"),
    (["--device", "nope"], "--device 'nope' is not a device"),
])
def test_bench_bad_flags(argv, message, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as e:
        main(["bench", "--out", str(out)] + argv)
    assert message in str(e.value) and str(e.value).startswith("error:")
    assert not out.exists()  # nothing ran, nothing written


def test_report_bad_skip(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["report", "--skip", "tests,nope", "--out", str(tmp_path)])
    assert "--skip: unknown step 'nope'" in str(e.value)
    assert not list(tmp_path.iterdir())


def test_ad_hoc_outputs_go_to_ignored_runs():
    for mod, default in ((bench_mod, "runs/bench"), (trace_mod, "runs/trace"), (report_mod, "runs/reports")):
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        assert p.get_default("out") == default, mod.__name__
    ignored = open(os.path.join(ROOT, ".gitignore")).read().split()
    assert "/runs/" in ignored


def test_report_never_overwrites_another(cifar_dir, tmp_path):
    tmp_path = tmp_path / "reports"
    everything = "tests,static,bench,trace,ab"
    main(["report", "--quick", "--skip", everything, "--data", cifar_dir, "--out", str(tmp_path)])
    main(["report", "--quick", "--skip", everything, "--data", cifar_dir, "--out", str(tmp_path)])
    dirs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(dirs) == 2 and dirs[1] == dirs[0] + "-2", dirs
    main(["report", "--quick", "--resume", "--skip", everything, "--data", cifar_dir, "--out", str(tmp_path)])
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2  # --resume continues the newest one
    readme = (tmp_path / dirs[1] / "README.md").read_text()
    assert "](bench/" not in readme  # no link to an image that was never drawn
    assert "(no output)" not in readme
    assert "## A/B: eager vs triton\n\n(not run: skipped (asked))" in readme


def test_each_command_run_by_report_takes_typed_options_that_mirror_its_flags():
    """report calls bench, trace and ab through their typed ``run(Options)`` (profiling/options.py): each
    Options has exactly its parser's flags at the parser's defaults, so a flag added to a command
    without its field fails here; a misspelt field is an error where report writes it."""
    import dataclasses

    from profiling import ab, bench, trace
    from profiling.options import parser_defaults
    from profiling.report import STEPS, Report
    for mod, cls in ((bench, bench.BenchOptions), (trace, trace.TraceOptions), (ab, ab.AbOptions)):
        flags = parser_defaults(mod.add_arguments)
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        assert set(fields) == set(flags), (cls.__name__, set(fields) ^ set(flags))
        for name, default in fields.items():
            if default is not dataclasses.MISSING and name != "train_args":  # REMAINDER's default is None
                assert default == flags[name], (cls.__name__, name, default, flags[name])
    opts = bench.BenchOptions(ops="conv")
    assert opts.ops == "conv" and opts.no_plots is False and opts.recipe is None and opts.modes
    assert ab.AbOptions(b="--backend triton").runs == 5 and trace.TraceOptions().active == 3
    with pytest.raises(TypeError):
        bench.BenchOptions(nonexistent=1)
    with pytest.raises(TypeError):
        ab.AbOptions(a="--backend eager")  # B is required, as --b is
    import argparse
    ns = argparse.Namespace(cmd="bench", **dict(parser_defaults(bench.add_arguments), ops="maxpool"))
    assert bench.BenchOptions.from_args(ns) == bench.BenchOptions(ops="maxpool")
    rep = Report.__new__(Report)
    rep.runs, rep.out, rep.quick, rep.data_flags = 2, "x", True, []
    assert [step for step, _, _ in rep.plan()] == list(STEPS)
