"""``python -m profiling accept``: the first GPU session's acceptance run, in one device call.

    python -m profiling accept --data data --commit      # on an H100 / H200: about 6-9 minutes
    python -m profiling accept --quick                   # the CPU smoke version CI runs (tiny sizes)

Steps, in order, each logged as it goes (its output streams to ``<step>.log`` in the run's folder
and its result into ``accept.json`` and ``README.md`` the moment it ends):
  1. kernel_tests   tests/kernels without the interpreter: every kernel forward and backward against
                    its eager reference, every conv configuration against cuDNN, two streams in
                    flight at once, fp8 accumulation over K = 2304 (``--quick``: the stream and fp8
                    safety tests in the interpreter)
  2. train_<backend> one training run per backend (eager, triton, triton_all, fp8; fp8 only on
                    compute capability 8.9+) with ``--cuda-graph``: accuracy and time from its record
                    (``--quick``: eager and triton on 100 images of batch 50, one epoch, on the CPU)
  3. report_quick   ``python -m profiling report --quick`` (its CPU smoke version; ``--quick`` only: on a
                    GPU the report proper is its own device call)
It is safe to resume: ``--resume`` continues the newest run of this device and commit, skipping
the steps that already passed (a device call cut short by its time limit loses only the step it
was in). The whole run is time-boxed by ``--budget-s`` (default 540 s): a step that would start
later is skipped and says so. Writes ``runs/acceptance/<device>-<date>/`` (``--commit``:
``reports/acceptance/``); ``--quick`` without ``--data`` trains on a small synthetic data set.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time

import torch

from model.cli import usage_error

from .report import ROOT, report_dir, slug

BACKENDS = ("eager", "triton", "triton_all", "fp8")
STEP_TIMEOUT_S = {"kernel_tests": 300, "train": 150, "report_quick": 240}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=None,
                   help="CIFAR-10 directory (as train.py --data); required on a GPU, a synthetic set with --quick")
    p.add_argument("--quick", action="store_true", help="the CPU smoke version: tiny sizes (the default on a CPU)")
    p.add_argument("--out", default="runs/acceptance", help="parent directory of the run (default runs/acceptance)")
    p.add_argument("--commit", action="store_true", help="write under the committed reports/acceptance/ instead")
    p.add_argument("--resume", action="store_true",
                   help="continue the newest run of this device and commit, skipping the steps that passed")
    p.add_argument("--budget-s", type=float, default=540, help="wall-clock budget in seconds (default 540)")


def _stream(cmd: list[str], log_path: str, timeout_s: float, env: dict | None = None) -> tuple[int, str]:
    """Run ``cmd`` with its output going to ``log_path`` as it comes; (return code, last lines).
    A command past ``timeout_s`` is stopped (return code 124)."""
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, **(env or {})))
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = 124
            log.write(f"\n(stopped after {timeout_s:.0f} s)\n")
    with open(log_path) as f:
        lines = f.read().strip().splitlines()
    counts = [ln for ln in lines if re.search(r"\d+ (passed|failed|errors?)\b", ln)]  # pytest's summary
    return rc, (counts[-1] if counts else " / ".join(lines[-2:])).strip("= ")[:300]


class Run:
    """The acceptance run's state: steps done (kept across --resume), written after every step."""

    def __init__(self, out: str, meta: dict, budget_s: float, earlier: dict):
        self.out, self.meta, self.budget, self.t0 = out, meta, budget_s, time.perf_counter()
        self.steps = {s["step"]: s for s in earlier.get("steps", [])}
        self.order = [s["step"] for s in earlier.get("steps", [])]

    def step(self, name: str, fn, skip: str | None = None) -> None:
        elapsed = time.perf_counter() - self.t0
        old = self.steps.get(name)
        if old and old["status"] == "passed":
            print(f"# accept: {name}: passed in an earlier call, kept", flush=True)
            self._record(dict(old, note="earlier call"))
            return
        if skip:
            self._record(dict(step=name, status=f"skipped ({skip})", seconds=0.0, result=""))
            return
        if elapsed > self.budget:
            self._record(dict(step=name, status=f"skipped (budget of {self.budget:.0f} s used)", seconds=0.0,
                              result=""))
            return
        print(f"# accept: {name} ({elapsed:.0f} s elapsed) ...", flush=True)
        t = time.perf_counter()
        try:
            ok, result = fn()
            status = "passed" if ok else "failed"
        except Exception as e:  # a failing step must not take the others with it
            status, result = "failed", f"{type(e).__name__}: {e}"[:300]
        secs = time.perf_counter() - t
        print(f"# accept: {name}: {status} in {secs:.0f} s: {result}", flush=True)
        self._record(dict(step=name, status=status, seconds=round(secs, 1), result=result))

    def _record(self, entry: dict) -> None:
        if entry["step"] not in self.order:
            self.order.append(entry["step"])
        self.steps[entry["step"]] = entry
        steps = [self.steps[n] for n in self.order]
        with open(os.path.join(self.out, "accept.json"), "w") as f:
            json.dump(dict(meta=self.meta, steps=steps), f, indent=1)
        with open(os.path.join(self.out, "README.md"), "w") as f:
            f.write(render(self.meta, steps))

    @property
    def passed(self) -> bool:
        return all(s["status"] == "passed" or s["status"].startswith("skipped (not ") for s in self.steps.values())


def render(meta: dict, steps: list[dict]) -> str:
    lines = [f"# Acceptance run: {meta['device']}, commit {meta['commit']}, {meta['date']}", "",
             ("CPU smoke version (`--quick`, tiny sizes): it checks that the script runs end to end, "
              "nothing about a GPU." if meta["quick"] else
              f"On the GPU: torch {meta['torch']}, triton {meta['triton']}."), "",
             "| step | status | seconds | result |", "|---|---|---|---|"]
    for s in steps:
        note = " (earlier call)" if s.get("note") else ""
        lines.append(f"| {s['step']} | {s['status']}{note} | {s['seconds']:.0f} | {s.get('result', '')} |")
    lines += ["", "Each step's full output is in `<step>.log` beside this file; `python -m profiling accept "
                  "--resume` continues a run cut short."]
    return "\n".join(lines) + "\n"


def _kernel_tests(out: str, quick: bool):
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cmd += (["tests/kernels/test_streams.py", "tests/kernels/test_fp8_safety.py"] if quick else ["tests/kernels"])
    rc, tail = _stream(cmd, os.path.join(out, "kernel_tests.log"), STEP_TIMEOUT_S["kernel_tests"])
    return rc == 0, tail


def _train(out: str, backend: str, data: str, quick: bool):
    record = os.path.join(out, f"train_{backend}.jsonl")
    if os.path.exists(record):
        os.remove(record)
    cmd = [sys.executable, "train.py", "--data", data, "--backend", backend, "--runs", "1", "--json", record]
    cmd += (["--device", "cpu", "--subset", "100", "--batch-size", "50", "--epochs", "1", "--tta", "0"]
            if quick else ["--cuda-graph"])
    rc, tail = _stream(cmd, os.path.join(out, f"train_{backend}.log"), STEP_TIMEOUT_S["train"])
    recs = []
    if os.path.exists(record):
        with open(record) as f:
            recs = [json.loads(line) for line in f if line.strip()]
    ok = rc == 0 and recs and not recs[0].get("failed")
    if not recs:
        return False, tail
    r = recs[0]
    if r.get("failed"):
        return False, r.get("error", tail)[:300]
    fp8 = f", fp8 counts {r['fp8']}" if r.get("fp8") else ""
    return ok, f"accuracy {100 * r['accuracy']:.2f}%, {r['time_s']:.3f} s{fp8}"


def _report_quick(out: str, data: str):
    cmd = [sys.executable, "-m", "profiling", "report", "--quick", "--skip", "tests,static", "--runs", "2",
           "--data", data, "--out", os.path.join(out, "report")]
    rc, tail = _stream(cmd, os.path.join(out, "report_quick.log"), STEP_TIMEOUT_S["report_quick"])
    return rc == 0, tail


def resume_dir(parent: str, prefix: str, commit: str | None, quick: bool) -> str | None:
    """The newest run folder under ``parent`` of the device ``prefix`` (``<prefix>-<date>[-n]``) whose
    accept.json was written at ``commit`` in the same mode (``quick``), or None."""
    pattern = re.compile(re.escape(prefix) + r"-\d{4}-\d{2}-\d{2}(-\d+)?$")
    found = []
    try:
        names = os.listdir(parent)
    except OSError:
        return None
    for n in names:
        path = os.path.join(parent, n, "accept.json")
        if not pattern.match(n) or not os.path.isfile(path):
            continue
        try:
            m = json.load(open(path)).get("meta", {})
        except (OSError, ValueError):
            continue
        if m.get("commit") == commit and m.get("quick") == quick:
            found.append((os.path.getmtime(path), os.path.join(parent, n)))
    return max(found)[1] if found else None


def main(args) -> int:
    from model.training.env import environment
    cuda = torch.cuda.is_available()
    quick = args.quick or not cuda
    if not quick and not args.data:
        raise usage_error("accept: --data is required on a GPU (the CIFAR-10 directory, as train.py --data); "
                          "--quick runs the CPU smoke version on a synthetic set")
    if args.data and not os.path.isdir(args.data):
        raise usage_error(f"accept: --data {args.data!r} is not a directory")
    parent = os.path.join(ROOT, "reports", "acceptance") if args.commit else args.out
    env = environment("cuda" if cuda else "cpu")
    prefix = slug(env['device'].split('(')[0]) if cuda else 'cpu'
    name = f"{prefix}-{datetime.date.today().isoformat()}"
    # --resume: the newest run of this device and commit, whatever its date (one cut short before midnight)
    out = (args.resume and resume_dir(parent, prefix, env.get("git_commit"), quick)) or report_dir(parent, name, False)
    os.makedirs(out, exist_ok=True)
    meta = dict(device=env["device"], commit=env.get("git_commit"), date=datetime.date.today().isoformat(),
                quick=quick, torch=torch.__version__, triton=env.get("triton"),
                capability=env.get("capability"))
    earlier = {}
    if args.resume:
        try:
            with open(os.path.join(out, "accept.json")) as f:
                prev = json.load(f)
            if prev.get("meta", {}).get("commit") == meta["commit"] and prev["meta"].get("quick") == quick:
                earlier = prev
        except (OSError, ValueError):
            pass
    data = args.data
    if not data:
        from model.synthetic import write_cifar_dir
        data = os.path.join(out, "data")
        write_cifar_dir(data, n_per_batch=100)
    run = Run(out, meta, args.budget_s, earlier)
    print(f"# accept: writing {out}", flush=True)
    run.step("kernel_tests", lambda: _kernel_tests(out, quick))
    cap = tuple(int(v) for v in (meta["capability"] or "0.0").split("."))
    for backend in (("eager", "triton") if quick else BACKENDS):
        skip = "not run: fp8 needs compute capability 8.9+" if backend == "fp8" and cuda and cap < (8, 9) else None
        run.step(f"train_{backend}", lambda b=backend: _train(out, b, data, quick), skip)
    # the report's CPU smoke version says nothing on a GPU machine (and there mixes CPU flags with GPU kernels:
    # its trace step failed in the first GPU run); `profiling report` proper is the GPU's report
    run.step("report_quick", lambda: _report_quick(out, data),
             None if quick else "not run on a GPU: run `python -m profiling report` there")
    print(f"# accept: {'all steps passed' if run.passed else 'NOT all steps passed'}: {out}/README.md", flush=True)
    return 0 if run.passed else 1
