"""What a new user still hit on a fresh clone (issue 24), one test per item: a Triton conv on a
CPU refused before any work, one exit-code rule for bad input (2, one line, the closest name,
no usage block), README's set-up and smoke run, a first-step line and an early estimate,
--target slips, trace's CPU note, A/B samples too small to conclude, and the cosmetic items."""
import os
import re
import subprocess
import sys

import pytest

import model.training.config as train_config
import model.training.console as console
import model.training.session as session
import train
from profiling import ab as ab_mod, plots, report as report_mod, static as static_mod, static_render, trace as trace_mod
from profiling.__main__ import main as profiling_main

from conftest import ROOT

README = open(os.path.join(ROOT, "README.md")).read()


def run(*argv, timeout=300):
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_error_line(p) -> str:
    """The process failed as bad input must: status 2, exactly one line on stderr, no usage block."""
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and "Warning" not in ln]
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "usage:" not in p.stderr and "Traceback" not in p.stderr
    return lines[0]


# ---- 1. a Triton conv on a CPU: refused before any work, naming a smoke command


@pytest.mark.parametrize("flags", [["--backend", "fp8"], ["--backend", "triton_all"], ["--op", "conv=fp8"],
                                   ["--op", "conv=triton"]])
def test_triton_conv_on_a_cpu_is_refused_before_any_work(flags, cifar_dir):
    p = run("train.py", "--data", cifar_dir, "--device", "cpu", *flags, timeout=120)
    line = one_error_line(p)
    assert "Triton interpreter" in line and "--allow-interpreter" in line and "Smoke run" in line
    assert " ".join(flags) in line
    assert "per training step at batch 2000" in line  # an estimate from the measured interpreter cost


def test_allow_interpreter_lets_it_through_and_trace_ab_refuse_too(cifar_dir, tmp_path, capsys):
    args = train_config.parse_args(["--data", cifar_dir, "--device", "cpu", "--backend", "fp8", "--allow-interpreter"])
    assert args.allow_interpreter
    with pytest.raises(SystemExit) as e:
        profiling_main(["ab", "--b", "--backend triton_all", "--runs", "1", "--", "--data", cifar_dir,
                        "--device", "cpu"])
    assert e.value.code == 2 and "--allow-interpreter" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        profiling_main(["trace", "--out", str(tmp_path), "--", "--data", cifar_dir, "--device", "cpu",
                        "--op", "conv=triton"])
    assert e.value.code == 2 and "--allow-interpreter" in capsys.readouterr().err


def test_triton_memory_bound_ops_on_a_cpu_are_announced_before_the_first_step(cifar_dir):
    s = session.Session.prepare(train_config.parse_args(["--data", cifar_dir, "--device", "cpu", "--backend", "triton",
                                                    "--batch-size", "100"]))
    note = next(n for n in s.notes if "Triton interpreter" in n)
    assert "bn_act=triton, maxpool=triton" in note and "per training step at batch 100" in note


# ---- 2. exit codes: bad input -> 2, one line, the closest valid name, no usage dump


@pytest.mark.parametrize("argv, expect", [
    (["--subset", "0"], "--subset must be at least 1"),
    (["--runs", "0"], "--runs must be at least 1"),
    (["--backend", "trition"], "did you mean 'triton'"),
    (["--op", "conv=trion"], "did you mean 'triton'"),
    (["--recipe", "airbench94_mu0n"], "did you mean 'airbench94_muon'"),
    (["--dtype", "fp64"], "invalid choice 'fp64'"),
    (["--set", "muon_lrr=0.2"], "did you mean 'muon_lr'"),
    (["--sweep", "missing.toml"], "no such file"),
])
def test_bad_input_exits_2_with_one_line(argv, expect, cifar_dir):
    line = one_error_line(run("train.py", "--data", cifar_dir, *argv, timeout=120))
    assert expect in line


def test_sweep_key_typo_exits_2_with_the_closest_key(cifar_dir, tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('[grid]\nbakend = ["eager", "triton"]\n')
    line = one_error_line(run("train.py", "--data", cifar_dir, "--sweep", str(f), timeout=120))
    assert "unknown key 'bakend'" in line and "did you mean 'backend'" in line


def test_missing_data_is_bad_input_too(tmp_path):
    line = one_error_line(run("train.py", "--data", str(tmp_path / "nowhere"), "--device", "cpu", timeout=120))
    assert "no CIFAR-10 found" in line


@pytest.mark.parametrize("argv, expect", [
    (["bench", "--peak", "nope"], "--peak: unknown device 'nope'"),
    (["bench", "--ops", "bn_akt"], "did you mean 'bn_act'"),
    (["static", "--archs", "sm90"], "did you mean 'sm_90'"),
    (["report", "--skip", "ab_conf"], "did you mean 'ab_conv'"),
    (["nope"], "did you mean") ,
    (["trace", "--vs", "--backend", "triton"], 'quote it, e.g. --vs "--backend triton"'),
    (["ab", "--b"], "quote it"),
])
def test_profiling_bad_input_exits_2_with_one_line(argv, expect):
    line = one_error_line(run("-m", "profiling", *argv, timeout=120))
    assert expect in line or (argv == ["nope"] and "invalid choice 'nope'" in line)


def test_readme_states_the_exit_code_rule():
    assert "exit status 2" in README and "did you mean" in README
    assert "exit status 1" in README or "Exit status 1" in README


# ---- 3. README set-up: the CPU/GPU choice before the command, each command whole


def setup_section() -> str:
    return README[README.index("## Set-up on a fresh machine"):README.index("## Data")]


def test_readme_setup_puts_the_torch_choice_before_each_command():
    text = setup_section()
    commands = [ln.strip() for ln in text.splitlines() if ln.startswith("    ") and "train.py" in ln and "pip" in ln]
    gpu = [c for c in commands if c.startswith("pip install -e .") and c.endswith("python train.py")]
    cpu = [c for c in commands if "whl/cpu" in c]
    assert gpu and cpu, commands
    # the CPU line installs the CPU-only torch before the project, so pip never picks the CUDA build
    assert cpu[0].index("whl/cpu") < cpu[0].index("pip install -e .")
    assert "torch==2.14.1 torchvision==0.29.1" in text  # this project's machines: the local wheels
    assert text.index("without a GPU") < text.index(cpu[0])
    assert "install torch first from the local wheels" not in text  # the old parenthesis is gone


# ---- 4. the smoke run learns something visible, and README says what to expect


def readme_smoke() -> list[str]:
    text = setup_section()
    line = next(ln.strip() for ln in text.splitlines() if ln.startswith("    python train.py") and "--subset" in ln)
    return line.split()[2:]


def test_readme_smoke_run_is_the_one_the_estimate_names():
    assert " ".join(readme_smoke()) in console.SMOKE
    flags = readme_smoke()
    assert flags[flags.index("--tta") + 1] == "0"  # TTA costs most of a CPU evaluation and says nothing here
    batch, subset, epochs = (int(flags[flags.index(f) + 1]) for f in ("--batch-size", "--subset", "--epochs"))
    assert subset // batch * epochs >= 20  # many steps, not one step at batch 2000
    assert re.search(r"expect[^.]*\d+(\.\d+)?%", setup_section()), "README must say what accuracy to expect"


@pytest.mark.slow
def test_readme_smoke_run_learns(tmp_path):
    from conftest import write_cifar_dir
    write_cifar_dir(str(tmp_path), n_per_batch=400)  # 2,000 training images, as the smoke run's --subset takes
    recs = train.main(["--data", str(tmp_path), *readme_smoke(), "--quiet"])
    assert recs[0]["steps"] == 40 and recs[0]["tta_level"] == 0
    assert recs[0]["accuracy"] > 0.3  # chance is 0.1: one step at batch 2000 printed 9.70%


# ---- 5. a line when the first step starts, an estimate as early as it is honest


def test_first_step_line_before_the_table_rows(cifar_dir, capsys, monkeypatch):
    monkeypatch.setattr(console.CpuEstimate, "started", False)  # once per process: earlier tests ran here
    monkeypatch.setattr(console.CpuEstimate, "shown", False)
    train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "60", "--batch-size", "30", "--epochs", "1"])
    out = capsys.readouterr().out
    assert "# training: first step started (2 steps of batch 30 on this CPU)" in out
    assert out.index("first step started") < re.search(r"\d\.\d{4}", out).start()  # before the first row


def test_estimate_after_one_timed_step_past_the_first(monkeypatch):
    clock = iter([0.0, 12.0, 24.0, 36.0])
    monkeypatch.setattr(console.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(console.CpuEstimate, "shown", False)
    monkeypatch.setattr(console.CpuEstimate, "started", False)
    said = []
    est = console.CpuEstimate(type("P", (), {"print": lambda self, t: said.append(t)})(), batch=2000)
    est(0, 200)
    assert said and "first step started" in said[0]
    est(1, 200)  # the first step: one-off work, not a measurement
    assert len(said) == 1
    est(2, 200)  # one clean 12 s step: long enough to say the run takes about 42 min
    assert len(said) == 2 and "estimate" in said[1] and "12.00 s/step x 200 steps" in said[1]


# ---- 6. --target slips


def test_target_between_1_and_20_needs_its_percent_sign(cifar_dir):
    line = one_error_line(run("train.py", "--data", cifar_dir, "--target", "1.5", timeout=120))
    assert "1.5%" in line and "slip" in line
    assert train_config.parse_args(["--data", cifar_dir, "--device", "cpu", "--target", "1.5%"]).target == pytest.approx(0.015)
    for text, frac in (("0.94", 0.94), ("94", 0.94), ("94%", 0.94), ("50", 0.5)):
        assert train_config.parse_args(["--data", cifar_dir, "--device", "cpu", "--target", text]).target == pytest.approx(frac)


# ---- 7. trace on a CPU says that CPU timings say nothing about GPU speed


def test_trace_on_a_cpu_says_cpu_timings_mean_nothing(cifar_dir, tmp_path, capsys):
    profiling_main(["trace", "--wait", "0", "--warmup", "1", "--active", "1", "--out", str(tmp_path), "--",
                    "--data", cifar_dir, "--device", "cpu", "--subset", "60", "--batch-size", "30"])
    assert "CPU timings say nothing about GPU speed" in capsys.readouterr().out
    assert "CPU timings say nothing about GPU speed" in (tmp_path / "trace.md").read_text()


# ---- 8. an A/B sample too small to conclude says so, and how many runs would


def test_ab_too_few_runs_is_not_a_no():
    c = ab_mod.compare([1.0, 1.6], [10.0, 17.0])  # a 10x slowdown measured twice on a noisy CPU
    assert not c["significant"]
    v = ab_mod.verdict(c)
    assert v.startswith("not shown") and "too few" in v and f"about {c['runs_needed']} per side" in v
    assert c["runs_needed"] > 2
    assert ab_mod.verdict(ab_mod.compare([1.0, 1.01, 0.99], [2.0, 2.01, 1.99])) == "yes"
    assert ab_mod.verdict(ab_mod.compare([1.0, 1.0, 1.0], [1.0, 1.0, 1.0])) == "no"


def test_runs_needed_grows_as_the_effect_shrinks():
    from model.training.stats import runs_needed
    big = runs_needed([1.0, 1.2, 0.9, 1.1], [2.0, 2.2, 1.9, 2.1])
    small = runs_needed([1.0, 1.2, 0.9, 1.1], [1.1, 1.3, 1.0, 1.2])
    assert big is not None and small is not None and small > big >= 2


# ---- 9. README states the measured test time and suggests the fast subset first


def test_readme_states_measured_test_times_and_the_fast_subset_first():
    text = setup_section()
    fast = text.index('python -m pytest -q -m "not slow" tests')
    full = text.index("python -m pytest -q tests")
    assert fast < full
    assert re.search(r"\d+ minutes on 2 cores", text) and re.search(r"\d+ minutes on a fresh clone", text)


# ---- 10. cosmetic


def test_peak_any_case():
    from profiling.devices import lookup
    assert lookup("h100") == lookup("H100") == lookup("h100-sxm")


def test_report_help_names_the_steps_that_skip_takes():
    import argparse
    p = argparse.ArgumentParser(prog="report", description=report_mod.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    report_mod.add_arguments(p)
    text = p.format_help()
    flat = " ".join(text.split())
    for step in report_mod.STEPS:
        assert re.search(rf"(?<![\w]){step}(?![\w])", flat), step  # every step name, never wrapped mid-word
    assert "ab_ compile" not in flat and "ab_triton_all/, ab_fp8/" not in text


def test_profiling_help_has_no_raw_backticks():
    for argv in (["--help"], ["static", "--help"], ["report", "--help"], ["trace", "--help"]):
        p = run("-m", "profiling", *argv, timeout=120)
        assert p.returncode == 0 and "``" not in p.stdout, argv


def test_every_lab_flag_has_help_with_its_default():
    import argparse
    from profiling import bench as bench_mod
    for mod, flags in ((bench_mod, ("--device", "--no-plots", "--modes")),
                       (static_mod, ("--ops", "--archs", "--dtype"))):
        p = argparse.ArgumentParser()
        mod.add_arguments(p)
        for a in p._actions:
            if set(a.option_strings) & set(flags):
                assert a.help and "default" in a.help, (mod.__name__, a.option_strings)


def test_compile_help_and_readme_agree():
    p = train_config.build_parser()
    helptext = next(a.help for a in p._actions if "--compile" in a.option_strings)
    row = next(ln for ln in README.splitlines() if ln.startswith("| `--compile MODE`"))
    for part in ("forward + loss", "optimizer update", "eval forward"):
        assert part in helptext and part in row, part


def test_readme_flag_table_lists_quiet():
    assert re.search(r"^\| `--quiet`", README, re.M)


def test_interruption_says_it_once(cifar_dir, monkeypatch, capsys):
    def interrupt(self, seed, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(session.Session, "train", interrupt)
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "60", "--batch-size", "30", "--epochs", "1"])
    text = capsys.readouterr()
    assert e.value.code == 130 and "interrupted: 0 run(s) finished" in text.err
    assert "no run finished" not in text.out


def test_time_column_says_it_is_cumulative():
    assert "cum_time_s" in console.header() and "time_s" in console.COLUMNS  # the record keeps its key
    assert "cumulative" in README


def test_warmup_line_singular(cifar_dir, capsys):
    train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "60", "--batch-size", "30", "--epochs", "1",
                "--warmup-steps", "1", "--quiet"])
    out = capsys.readouterr().out
    assert "warm-up (1 step on random labels" in out and "1 steps" not in out


def test_trace_size_hint_suggests_only_what_is_missing():
    hint = trace_mod.smaller_hint(["--subset", "256", "--batch-size", "64"], 64, 6)
    assert "--subset" not in hint and "--batch-size 16" in hint and "--active 1" in hint
    assert "--subset 256" in trace_mod.smaller_hint(["--device", "cpu"], 2000, 6)


def test_static_step_table_says_fp8_needs_sm89():
    rows = [dict(backend="fp8", arch="sm_80", predicted_ms=None, roofline_ms=None, eager_roofline_ms=None,
                 note="conv=fp8 needs FP8 tensor cores (sm_89+)")]
    table = static_render.markdown(static_render.step_display(rows), static_render.STEP_COLUMNS)
    assert "n/a: needs sm_89+" in table and "| 0 |" not in table


def test_static_prints_a_summary_and_points_at_the_file(capsys, tmp_path):
    meta = dict(header="Static performance model")
    steps = [dict(backend=b, arch=a, predicted_ms=1.0, roofline_ms=0.5, eager_roofline_ms=0.0,
                  predicted_fraction=0.5, host_ms=1.0, host_bound="no") for b in ("eager", "triton") for a in ("x", "y")]
    ops = [dict(op="conv", impl="triton", case=f"c{i}", arch="sm_90") for i in range(60)]
    static_render.print_summary(meta, steps, ops, [], str(tmp_path))
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 20 and str(tmp_path / "static.md") in out


def _figures(monkeypatch):
    import matplotlib.figure
    seen = []
    real = matplotlib.figure.Figure.savefig

    def keep(self, *a, **k):
        seen.append(self)
        return real(self, *a, **k)
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    return seen


def test_static_chart_panels_stacked_and_readable(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    seen = _figures(monkeypatch)
    ops = [dict(op="conv", impl="triton", case=f"group{i} 2000x256x8x8", arch=a, predicted_ms=1.0 + i,
                roofline_ms=0.5 + i) for i in range(30) for a in ("sm_80", "sm_90")]
    assert static_render.plot(ops, str(tmp_path / "static.png"), "batch 2000")
    fig = seen[0]
    w, h = fig.get_size_inches()
    assert len(fig.axes) == 2 and h > w  # one wide panel per arch, stacked, tall enough for 30 labels each
    assert fig.axes[0].get_position().y0 > fig.axes[1].get_position().y1


def test_bench_chart_has_an_x_label_and_marks_unreliable_timings(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    seen = _figures(monkeypatch)
    recs = [dict(mode="fwd", case="group1.pool 2x64x32x32", impl="eager", ms=0.1, unreliable=False),
            dict(mode="fwd", case="group1.pool 2x64x32x32", impl="triton", ms=0.3, unreliable=True)]
    assert plots.time_per_op(recs, str(tmp_path / "t.png"), "bench")
    ax = seen[0].axes[0]
    assert ax.get_xlabel()
    assert any("unreliable" in t.get_text() for t in ax.get_legend().get_texts())


def test_report_embeds_the_static_chart(tmp_path):
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "static.md").write_text("# static\n")
    (tmp_path / "static" / "static.png").write_bytes(b"png")
    r = dict(env=dict(device="cpu", torch="x", triton="y", git_commit="z"), quick=True,
             steps=[dict(step="static", status="ok", seconds=1.0)])
    text = report_mod.render_readme(str(tmp_path), r, [])
    assert "](static/static.png)" in text


# ---- 11. README on what a CPU cannot do quickly


def test_readme_says_what_a_cpu_cannot_do_quickly():
    text = setup_section()
    assert "--allow-interpreter" in text and "Triton interpreter" in text
    assert re.search(r"mnist.{0,40}--download", text, re.S)
    assert re.search(r"static --default-only.{0,200}\d+ s", text, re.S)
