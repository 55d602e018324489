"""train.py as a new user meets it (issue 17): bad flags fail before any work with one line,
the progress line never garbles the table, --json is checked before training, a CPU run on the
full data says how long it will take, help texts and record fields say what they are."""
import io
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import model.training.config as train_config
import model.training.console as console
import model.training.execute as execution
import model.training.session as session
import model.training.trainer as trainer
import train

from conftest import ROOT


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any training starts."""
    def refuse(*a, **k):
        raise AssertionError("training started although the flags are invalid")
    monkeypatch.setattr(trainer, "train_run", refuse)
    monkeypatch.setattr(session, "train_run", refuse)


@pytest.mark.parametrize("argv, message", [
    (["--subset", "0"], "--subset must be at least 1"),
    (["--subset", "-5"], "--subset must be at least 1"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--epochs", "-1"], "--epochs must be positive"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--batch-size", "-3"], "--batch-size must be at least 1"),
    (["--runs", "0"], "--runs must be at least 1"),
    (["--warmup-steps", "-1"], "--warmup-steps must be 0 or more"),
    (["--device", "nope"], "--device 'nope' is not a device"),
    (["--device", "tpu"], "--device 'tpu'"),
])
def test_bad_flags_one_line_before_work(argv, message, cifar_dir, no_training):
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir] + argv)
    text = str(e.value)
    assert message in text and text.startswith("error:") and "\n" not in text and e.value.code == 2


def test_cache_dir_naming_a_file(cifar_dir, tmp_path, no_training):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--cache-dir", str(f)])
    assert "--cache-dir" in str(e.value) and "not a directory" in str(e.value)


def test_json_checked_before_training(cifar_dir, tmp_path, no_training):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--json", str(f / "runs.jsonl")])
    assert "--json" in str(e.value) and "cannot write" in str(e.value)


def test_bad_flags_exit_code_and_no_traceback(cifar_dir):
    p = subprocess.run([sys.executable, "train.py", "--data", cifar_dir, "--subset", "-5"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "error: --subset must be at least 1 (got -5)"


def test_later_json_write_error_keeps_records_and_goes_on(cifar_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "runs.jsonl"
    real = execution.append_record
    calls = []

    def flaky(path, record):
        calls.append(record["run"])
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, record)

    monkeypatch.setattr(execution, "append_record", flaky)
    with pytest.raises(SystemExit) as e:
        train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "60", "--batch-size", "30", "--epochs", "1",
                    "--runs", "3", "--json", str(out), "--quiet"])
    assert e.value.code == 1
    text = capsys.readouterr()
    assert calls == [0, 1, 2]  # the third run still trained after the failed write
    assert [json.loads(line)["run"] for line in out.read_text().splitlines()] == [0, 2]
    assert "could not write the record of run 1" in text.err and "No space left" in text.err


def screen(stream: str) -> list[str]:
    """What a terminal shows for ``stream``: carriage returns overwrite the line."""
    lines = []
    for raw in stream.split("\n"):
        line = ""
        for part_i, part in enumerate(raw.split("\r")):
            line = part + line[len(part):] if part_i else part
        lines.append(line.rstrip())
    return lines


def test_progress_never_garbles_the_table(cifar_dir, monkeypatch):
    tty = io.StringIO()
    monkeypatch.setattr(sys, "stdout", tty)
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setattr(trainer.Progress, "EVERY_S", 0.0)
    train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "90", "--batch-size", "30", "--epochs", "2",
                "--progress"])
    shown = screen(tty.getvalue())
    rows = [line for line in shown if re.search(r"\d\.\d{4}", line)]
    assert len(rows) >= 3, shown  # two epochs and the TTA line
    assert re.search(r"step \d+/\d+", tty.getvalue()), "no progress was drawn"
    for line in shown:
        assert not (re.search(r"step \d+/\d+", line) and re.search(r"\d\.\d{4}", line)), \
            f"progress and a table row share a line: {line!r}"


def test_cpu_full_data_run_says_how_long(cifar_dir, monkeypatch, capsys):
    """On a CPU, a run longer than a minute gets an estimate after its first steps and the
    smoke-run command; here the threshold is lowered so that the tiny run counts as long."""
    monkeypatch.setattr(console, "CPU_ESTIMATE_AFTER_S", 0.0)
    # once per process: an earlier CPU run in this pytest process may have said it already
    monkeypatch.setattr(console.CpuEstimate, "started", False)
    monkeypatch.setattr(console.CpuEstimate, "shown", False)
    train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "120", "--batch-size", "30", "--epochs", "2",
                "--quiet"])
    out = capsys.readouterr().out
    assert "estimate:" in out and "on this CPU" in out
    assert console.SMOKE in out  # the smoke-run pointer
    assert out.index("estimate:") < out.index("accuracy (TTA")


def test_help_texts_and_wording():
    p = train_config.build_parser()
    helps = {a.dest: a.help for a in p._actions}
    for dest in ("tta", "seed", "runs", "sweep", "set"):
        assert helps.get(dest), f"--{dest} has no help"
    assert "0 = none" in helps["tta"]
    assert "stand-in" in p.description  # not a bare "~94%": the JPEG stand-in reaches about 91%
    from profiling import trace
    import argparse
    tp = argparse.ArgumentParser()
    trace.add_arguments(tp)
    th = {a.dest: a.help for a in tp._actions}
    for dest in ("wait", "warmup", "active"):
        assert th[dest], f"trace --{dest} has no help"


def test_record_fields(cifar_dir):
    res = train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "60", "--batch-size", "30", "--epochs", "1",
                      "--quiet"])
    rec = res[0]
    assert isinstance(rec["config"]["epochs"], float) and isinstance(rec["per_epoch"], list)
    assert "epochs" not in rec
    assert rec["env"]["cuda"] is None or torch.cuda.is_available()
    assert rec["env"]["torch_cuda"] == torch.version.cuda


def test_no_import_of_the_script():
    """profiling, model and kernels import the library, never train.py (issue 16)."""
    p = subprocess.run(["grep", "-rn", r"import train\b\|from train\b", "profiling", "model", "kernels"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.stdout == "", p.stdout
    assert not os.path.exists(os.path.join(ROOT, "profiling", "env.py.orig"))


def test_no_native_noise_from_the_profiler_on_a_cpu(cifar_dir, tmp_path):
    p = subprocess.run([sys.executable, "-m", "profiling", "trace", "--wait", "0", "--warmup", "1", "--active", "1",
                        "--out", str(tmp_path / "t"), "--", "--data", cifar_dir, "--device", "cpu", "--subset", "60",
                        "--batch-size", "30"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    for noise in ("USDT", "gpuGetDeviceCount", "No CUDA runtime"):
        assert noise not in p.stderr and noise not in p.stdout


def test_native_stderr_filter_passes_other_lines_on(capfd):
    from profiling.quiet import native_stderr_filtered
    with native_stderr_filtered(gpu=False):
        os.write(2, b"USDT:2026 x.cpp:39] profiler_start\nreal problem\nERROR: gpuGetDeviceCount failed with code 35\n")
    err = capfd.readouterr().err
    assert err == "real problem\n"


def test_compile_on_a_cpu_does_not_warn_about_cuda():
    import logging
    from model.training.compiled import StepFunctions
    from model.net import CifarNet
    import kernels
    if torch.cuda.is_available():
        pytest.skip("the warning is expected only without a GPU")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.NOTSET)
    StepFunctions(CifarNet(kernels.resolve("eager"), widths=(8, 8, 8)), "default")
    assert logging.getLogger("torch.utils.cpp_extension").getEffectiveLevel() >= logging.ERROR


def test_slow_tests_can_be_deselected():
    p = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "--strict-markers", "-m", "slow", "tests"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:]
    picked = p.stdout
    for slow in ("test_static.py", "test_report_quick", "test_second_process_reuses_caches",
                 "test_benchmark_suite_passes"):
        assert slow in picked
