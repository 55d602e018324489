"""``python -m profiling report``: everything a GPU session can show, in one command.

    python -m profiling report --data data                 # on a GPU (time-boxed: --budget-s)
    python -m profiling report --data data --commit        # the same, into the committed reports/
    python -m profiling report --data data --quick         # CPU smoke version (tiny sizes)

Writes ``runs/reports/<device>-<date>/`` (an ignored folder; ``--commit``: ``reports/``, for a
report meant to be committed) with a README.md summary and, per step, its own files:
  1. tests/     the kernel tests (tests/kernels) without the interpreter and the CUDA-graph
                tests (tests/model/test_runner.py), when a GPU is present
  2. bench/     every op x implementation at the real shapes (JSON, markdown, PNG charts)
  3. trace/     torch.profiler summaries of eager vs triton training steps (traces .json.gz)
  4. ab/        eager vs triton trained interleaved (time and accuracy, 95% CI, Welch's test)
  5. ab_compile/ eager vs --compile default --cuda-graph (GPU only; its warm-up is the
                 first-process compile + capture time)
     ab_graph/   eager vs --cuda-graph alone (GPU only)
     cold_start/ two train.py processes on one empty --cache-dir: warm-up of each (GPU only)
  6. ab_conv    cuDNN conv vs the Triton conv (folder ab_triton_all/) and vs its fp8 version
                (folder ab_fp8/) (GPU only)
  7. static/    registers, spills, shared memory, tensor-core use of every kernel (sm_80, sm_90);
                last, since it needs no GPU
Each step's name (the word before its folder) is what ``--skip`` takes.
The summary (README.md, report.json, ../LATEST.md) is rewritten after every step, so a run that
the device's time limit cuts short still leaves what it finished.
The whole report is time-boxed by ``--budget-s`` (default 540 s, to fit a 10-minute device
call): a step that would start after the budget is skipped and says so; a failing step is
recorded without stopping the others. Traces over 2 MB are deleted (the repository keeps no
trace over 2 MB). A new report never overwrites another: a second report on the same day
gets a ``-2`` suffix, unless ``--resume`` continues the newest one (a second device call
that ``--skip``s what the first finished). ``LATEST.md`` beside it points at the new report.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
import traceback

import torch

from model.cli import did_you_mean, usage_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_TRACE_BYTES = 2_000_000


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


STEPS = ("tests", "bench", "trace", "ab", "ab_compile", "ab_graph", "cold_start", "ab_conv", "static")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="data", help="CIFAR-10 directory (as train.py --data)")
    p.add_argument("--out", default="runs/reports",
                   help="parent directory of the report (default: runs/reports, an ignored folder; see --commit)")
    p.add_argument("--commit", action="store_true",
                   help="write under the committed reports/ instead (a deliberate act; never overwrites a report)")
    p.add_argument("--resume", action="store_true",
                   help="continue today's newest report of this device (a second device call) instead of a new one")
    p.add_argument("--budget-s", type=float, default=540,
                   help="wall-clock budget for all steps in seconds (default 540); later steps are skipped")
    p.add_argument("--runs", type=int, default=None, help="A/B runs per configuration (default: 10 on a GPU, 2 on a CPU)")
    p.add_argument("--quick", action="store_true", help="tiny sizes everywhere (the default on a CPU)")
    p.add_argument("--skip", default="", metavar="STEP,...",
                   help="comma-separated steps to skip (default: none): " + ", ".join(STEPS))


def check_args(args) -> set:
    asked = {x.strip() for x in args.skip.split(",") if x.strip()}
    for step in sorted(asked):
        if step not in STEPS:
            raise usage_error(f"--skip: unknown step {step!r}{did_you_mean(step, STEPS)}; steps: {', '.join(STEPS)}")
    if args.runs is not None and args.runs < 1:
        raise usage_error(f"--runs must be at least 1 (got {args.runs})")
    if not args.budget_s > 0:
        raise usage_error(f"--budget-s must be positive (got {args.budget_s:g})")
    if args.commit and args.out != "runs/reports":
        raise usage_error("--commit writes under reports/; leave out --out (or drop --commit)")
    return asked


def report_dir(parent: str, name: str, resume: bool) -> str:
    """``parent/name``, or ``name-2``, ``-3``... so that no report overwrites another; with
    ``resume`` the newest existing one."""
    taken = [name] + [f"{name}-{i}" for i in range(2, 1000)]
    existing = [n for n in taken if os.path.isdir(os.path.join(parent, n))]
    if resume and existing:
        return os.path.join(parent, existing[-1])
    return os.path.join(parent, next(n for n in taken if n not in existing))


class Steps:
    """Runs the report's steps in order within a wall-clock budget; ``after`` is called after each
    step (the report rewrites its summary then, so a run cut short still leaves one)."""

    def __init__(self, budget_s: float, after=None):
        self.t0, self.budget, self.log, self.after = time.perf_counter(), budget_s, [], after

    def run(self, name: str, fn, skip: str | None = None):
        """Run step ``name`` unless ``skip`` gives a reason not to, or the budget is spent."""
        out = self._run(name, fn, skip)
        if self.after:
            self.after()
        return out

    def _run(self, name: str, fn, skip: str | None):
        elapsed = time.perf_counter() - self.t0
        if skip:
            self.log.append(dict(step=name, status=f"skipped ({skip})", seconds=0.0))
            return None
        if elapsed > self.budget:
            self.log.append(dict(step=name, status=f"skipped (budget of {self.budget:.0f} s used)", seconds=0.0))
            return None
        t = time.perf_counter()
        print(f"\n=== report: {name} ({elapsed:.0f} s elapsed) ===", flush=True)
        try:
            out = fn()
            self.log.append(dict(step=name, status="ok", seconds=time.perf_counter() - t))
            return out
        except BaseException as e:  # a failing step must not take the others with it
            if isinstance(e, KeyboardInterrupt):
                raise
            traceback.print_exc()
            self.log.append(dict(step=name, status=f"failed: {type(e).__name__}: {str(e)[:300]}",
                                 seconds=time.perf_counter() - t))
            return None


def run_tests(out: str, quick: bool) -> dict:
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/kernels"]
    if not quick:  # the CUDA-graph capture tests, which only a GPU runs
        cmd += ["tests/model/test_runner.py"]
    if quick:
        cmd += ["-k", "test_train_forward_backward and float32"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    text = r.stdout + r.stderr
    with open(os.path.join(out, "pytest.txt"), "w") as f:
        f.write(text)
    last = [ln for ln in text.strip().splitlines() if re.search(r"\d+ (passed|failed|error)", ln)]
    return dict(returncode=r.returncode, summary=last[-1].strip("= ") if last else text[-300:],
                interpreter=not torch.cuda.is_available())


def main(args) -> str:
    asked = check_args(args)
    if args.commit:
        args.out = os.path.join(ROOT, "reports")
    rep = Report.open(args, asked)
    for step, fn, gpu_only in rep.plan():
        rep.results[step] = rep.steps.run(step, fn, rep.skip(step, gpu_only))
    print(f"\nreport written to {rep.out}/README.md")
    return rep.out


class Report:
    """One call of ``profiling report``: where it writes, what it runs (quick or full), and the results so
    far. Each step is a method; ``plan`` lists them in order."""

    def __init__(self, args, asked: set, env: dict, out: str, cuda: bool, quick: bool):
        self.args, self.asked, self.env, self.out, self.cuda, self.quick = args, asked, env, out, cuda, quick
        self.runs = args.runs or (10 if cuda else 2)
        self.data_flags = ["--data", args.data] + (["--device", "cpu", "--subset", "100", "--batch-size", "50",
                                                    "--epochs", "1", "--tta", "1"] if quick else [])
        self.results = dict(env=env, quick=quick)
        self.earlier = previous_call(out, env, quick)
        self.steps = Steps(args.budget_s, after=self.write_outputs)

    @classmethod
    def open(cls, args, asked: set) -> Report:
        from model.training.env import environment
        cuda = torch.cuda.is_available()
        env = environment("cuda" if cuda else "cpu")
        out = report_dir(args.out, f"{slug(env['device'].split('(')[0]) if cuda else 'cpu'}-"
                                   f"{datetime.date.today().isoformat()}", args.resume)
        os.makedirs(out, exist_ok=True)
        return cls(args, asked, env, out, cuda, args.quick or not cuda)

    def plan(self) -> list[tuple]:
        """(step, function, GPU only) in the order they run; static last: it needs no GPU."""
        return [("tests", lambda: run_tests(os.path.join(self.out, "tests"), self.quick), False),
                ("bench", self.bench, False), ("trace", self.trace, False),
                ("ab", lambda: self.ab("ab", "--backend eager", "--backend triton", self.runs), False),
                ("ab_compile", self.ab_compile, True),
                # what the CUDA graph alone buys over the eager step (no compilation)
                ("ab_graph", lambda: self.ab("ab_graph", "--backend eager", "--backend eager --cuda-graph",
                                             max(2, self.runs // 2)), True),
                ("cold_start", lambda: cold_start(os.path.join(self.out, "cold_start"), self.data_flags), True),
                ("ab_conv", self.ab_conv, True), ("static", self.static, False)]

    def skip(self, step: str, gpu_only: bool = False) -> str | None:
        if step in self.asked:
            return "asked"
        return "GPU only" if gpu_only and self.quick else None

    def write_outputs(self) -> None:
        results, out, env = self.results, self.out, self.env
        results["steps"] = merge_steps(self.earlier.get("steps", []), self.steps.log)
        for k, v in self.earlier.items():
            if k != "steps" and results.get(k) is None and _status(results["steps"], k).endswith("(earlier call)"):
                results[k] = v
        with open(os.path.join(out, "report.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        with open(os.path.join(out, "README.md"), "w") as f:
            f.write(render_readme(out, results, self.data_flags))
        name = os.path.basename(out)
        with open(os.path.join(self.args.out, "LATEST.md"), "w") as f:
            f.write(f"# Latest report\n\n[{name}]({name}/README.md): {env['device']}, commit {env['git_commit']}"
                    + (" (CPU smoke run: no GPU figures)" if not self.cuda else "") + "\n")

    def bench(self) -> int:
        from .bench import BenchOptions, run
        quick = self.quick
        opts = BenchOptions(batch=2 if quick else None, ops="bn_act,maxpool" if quick else "bn_act,maxpool,conv",
                            impls="eager,triton" if quick else "eager,triton,fp8", modes="fwd,fwd+bwd",
                            out=os.path.join(self.out, "bench"))
        recs = run(opts)
        if self.cuda:  # torch.compile of the memory-bound ops, the fusion baseline the Triton kernels must beat
            recs += run(opts.replace(ops="bn_act,maxpool", impls="compile", out=os.path.join(self.out, "bench_compile")))
        return len(recs)

    def trace(self) -> list[dict]:
        from .trace import TraceOptions, run
        sums = run(TraceOptions(vs="--backend triton", wait=1, warmup=1 if self.quick else 2,
                                active=1 if self.quick else 3, out=os.path.join(self.out, "trace"),
                                train_args=tuple(self.data_flags)))
        for s in sums:
            path = os.path.join(self.out, "trace", s["trace"])
            if os.path.getsize(path) > MAX_TRACE_BYTES:
                os.remove(path)
                s["trace"] += f" (deleted: {s['trace_bytes'] / 1e6:.1f} MB > 2 MB; rerun `profiling trace` for it)"
        return sums

    def ab(self, name: str, a: str, b: str, runs: int, extra: list[str] = ()) -> dict:
        from .ab import AbOptions, run
        return run(AbOptions(a=a, b=b, runs=runs, out=os.path.join(self.out, name),
                             train_args=(*self.data_flags, *extra)))

    def ab_compile(self) -> dict:
        """The compiled + graphed step vs eager (the issue-6 acceptance configuration)."""
        cache = os.path.join(self.out, "compile_cache")
        try:
            return self.ab("ab_compile", "--backend eager", "--backend eager " + COMPILED, self.runs,
                           ["--cache-dir", cache])
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def ab_conv(self) -> dict:
        """The Triton convs (bf16/fp16 and fp8) against cuDNN, whole training runs."""
        return {name: self.ab(f"ab_{name}", "--backend triton", flags, max(2, self.runs // 2))
                for name, flags in (("triton_all", "--backend triton_all"), ("fp8", "--backend fp8"))}

    def static(self) -> int:
        return subprocess.run(
            [sys.executable, "-m", "profiling", "static", "--default-only", "--out", os.path.join(self.out, "static")],
            cwd=ROOT, env=dict(os.environ, TRITON_INTERPRET="0"), check=True, timeout=300).returncode


COMPILED = "--compile default --cuda-graph"


def cold_start(out: str, data_flags: list[str], flags: str = COMPILED) -> dict:
    """Two processes of ``train.py FLAGS --runs 1`` on one empty --cache-dir: the first
    process's warm-up is the full compile + capture cost, the second's what a warm cache
    leaves. Writes cold_start.md; returns the warm-up and run times."""
    cache = os.path.join(out, "cache")
    shutil.rmtree(cache, ignore_errors=True)
    os.makedirs(out, exist_ok=True)
    rows = []
    for proc in ("first", "second"):
        js = os.path.join(out, f"{proc}.jsonl")
        if os.path.exists(js):
            os.remove(js)
        argv = [sys.executable, "train.py", *data_flags, *flags.split(), "--runs", "1", "--cache-dir", cache,
                "--json", js, "--quiet"]
        t0 = time.perf_counter()
        r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        with open(os.path.join(out, f"{proc}.log"), "w") as f:
            f.write(r.stdout + r.stderr)
        if r.returncode != 0:
            raise RuntimeError(f"{proc} process failed (exit {r.returncode}): {(r.stdout + r.stderr)[-800:]}")
        rec = json.loads(open(js).read().splitlines()[-1])
        caches = re.findall(r"compile caches: (.*)", r.stdout)
        rows.append(dict(process=proc, warmup_s=rec["config"].get("warmup_s"), run_s=rec["time_s"],
                         accuracy=rec["accuracy"], process_wall_s=wall, caches=caches[-1] if caches else ""))
    shutil.rmtree(cache, ignore_errors=True)
    from .report_io import markdown_table
    text = (f"# Cold start\n\n`train.py {' '.join(data_flags)} {flags} --runs 1 --cache-dir DIR`, two processes on "
            "one empty cache dir; warm-up = compilation + autotuning (+ CUDA-graph capture with --cuda-graph; untimed), run = the "
            "timed training run.\n\n" + markdown_table(rows, [(k, k) for k in rows[0]]) + "\n")
    with open(os.path.join(out, "cold_start.md"), "w") as f:
        f.write(text)
    return dict(rows=rows)


def previous_call(out: str, env: dict, quick: bool) -> dict:
    """The report.json an earlier call wrote into the same directory, if it was made from the
    same commit in the same mode: the steps it ran count when this call skips them. (A GPU
    session whose device calls are limited to 10 minutes runs the report in two calls, the
    second with --skip naming the steps the first one finished.)"""
    try:
        with open(os.path.join(out, "report.json")) as f:
            prev = json.load(f)
    except (OSError, ValueError):
        return {}
    same = prev.get("env", {}).get("git_commit") == env.get("git_commit") and prev.get("quick") == quick
    return prev if same else {}


def merge_steps(earlier: list[dict], now: list[dict]) -> list[dict]:
    """This call's step log, where a step it skipped takes the earlier call's entry if that one ran."""
    before = {e["step"]: e for e in earlier}
    merged = []
    for e in now:
        old = before.get(e["step"])
        if e["status"].startswith("skipped") and old and not old["status"].startswith("skipped"):
            e = dict(old, status=old["status"].replace(" (earlier call)", "") + " (earlier call)")
        merged.append(e)
    seen = {e["step"] for e in merged}
    return merged + [e for e in earlier if e["step"] not in seen]


def _status(log: list[dict], step: str) -> str:
    return next((e["status"] for e in log if e["step"] == step), "")


def _section(path: str, title: str, missing: str) -> str:
    """A step's markdown under a level-2 heading: its own title dropped, its headings one level down."""
    if not os.path.exists(path):
        return f"## {title}\n\n(no output: {missing})\n"
    text = open(path).read()
    text = re.sub(r"^# .*\n", "", text, count=1)
    text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)
    return f"## {title}\n\n{text.strip()}\n"


def render_readme(out: str, r: dict, data_flags: list[str]) -> str:
    env = r["env"]
    lines = [f"# Report: {env['device']}", "",
             f"torch {env['torch']}, triton {env['triton']}, CUDA {env.get('cuda') or 'none (no GPU)'}, "
             f"commit `{env['git_commit']}`, "
             f"{datetime.datetime.now().isoformat(timespec='minutes')}. Data flags: `{' '.join(data_flags)}`.", ""]
    if r["quick"]:
        lines += ["**CPU smoke run at tiny sizes: the timings say nothing about GPU speed, and the accuracies "
                  "come from a few steps on a small subset.**", ""]
    lines += ["| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} |" for s in r["steps"]]
    t = r.get("tests")
    if t:
        lines += ["", f"## Kernel tests\n\n`{t['summary']}` ("
                  + ("Triton interpreter" if t["interpreter"] else "compiled kernels on the GPU")
                  + "; full output in tests/pytest.txt)"]

    def section(step: str, rel: str, title: str, missing: str = "the step wrote no file; see its status above") -> str:
        """A step's markdown, only if that step ran for this report (files of an older run may lie there)."""
        status = _status(r["steps"], step)
        if not status or status.startswith("skipped"):
            return f"## {title}\n\n(not run: {status or 'not reached'})\n"
        if status.startswith("failed"):
            return f"## {title}\n\n(no output: the step {status})\n"
        return _section(os.path.join(out, rel), title, missing)

    def images() -> str:
        if not _status(r["steps"], "bench").startswith("ok"):
            return ""
        shown = [f"![{alt}](bench/{f})" for f, alt in (("bench_time.png", "time per op"), ("roofline.png", "roofline"))
                 if os.path.exists(os.path.join(out, "bench", f))]
        return "\n\n".join(shown) + "\n" if shown else ("(no charts: matplotlib missing, or no peak table for a "
                                                         "roofline on this device)\n")

    def static_image() -> str:
        if not _status(r["steps"], "static").startswith("ok"):
            return ""
        if os.path.exists(os.path.join(out, "static", "static.png")):
            return "![predicted vs roofline per op (static model, no GPU)](static/static.png)\n"
        return "(no static chart: matplotlib missing)\n"

    lines += ["", section("ab", "ab/ab.md", "A/B: eager vs triton"),
              section("ab_compile", "ab_compile/ab.md", f"A/B: eager vs {COMPILED}"),
              section("ab_graph", "ab_graph/ab.md", "A/B: eager vs --cuda-graph"),
              section("cold_start", "cold_start/cold_start.md", "Cold start (first and second process)"),
              section("ab_conv", "ab_triton_all/ab.md", "A/B: cuDNN conv vs Triton conv"),
              section("ab_conv", "ab_fp8/ab.md", "A/B: cuDNN conv vs FP8 Triton conv"),
              section("bench", "bench/bench.md", "Op benchmarks"),
              section("bench", "bench_compile/bench.md", "Op benchmarks: torch.compile",
                      "torch.compile's op benchmarks run on a GPU only"),
              images(),
              section("trace", "trace/trace.md", "Profiler traces"),
              section("static", "static/static.md", "Static analysis (default configurations)"),
              static_image()]
    return "\n".join(lines) + "\n"
