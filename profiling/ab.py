"""``python -m profiling ab``: is B faster (or more accurate) than A?

    python -m profiling ab --a "--backend eager" --b "--backend triton" --runs 10 -- --data data

Both configurations are built in one process (sharing the data), warmed up, then trained
interleaved A, B, A, B, ... with the same seed for the i-th run of each, so that drifts of
clock, temperature or other load hit both alike. Reports per configuration the mean training
time and TTA accuracy with 95% confidence intervals (Student t), and Welch's t-test for the
difference of the means (significant at p < 0.05). Everything after ``--`` is shared
train.py flags; --a / --b add each configuration's own flags. Under torchrun
(``torchrun --nproc-per-node K -m profiling ab ...``) run i of both goes to rank i mod K.
"""
from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass

from model.cli import SessionError, usage_error
from model.training import distributed
from model.training.config import TrainConfig, build_parser
from model.training.execute import Config, execute
from model.training.stats import runs_needed, summarize, welch

from .options import Options
from .report_io import markdown_table, write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--a", default="", metavar="FLAGS", help="train.py flags of configuration A")
    p.add_argument("--b", required=True, metavar="FLAGS", help="train.py flags of configuration B")
    p.add_argument("--runs", type=int, default=5, help="runs per configuration (default 5)")
    p.add_argument("--out", default=None, help="directory for ab.json / ab.md (default: none, printed only)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then shared train.py flags")


def compare(a_vals, b_vals) -> dict:
    sa, sb = summarize(a_vals), summarize(b_vals)
    out = dict(a=sa.as_dict(), b=sb.as_dict(), diff=sb.mean - sa.mean)
    if sa.n >= 2 and sb.n >= 2:
        t, df, p = welch(b_vals, a_vals)
        out.update(t=t, df=df, p=p, significant=p < 0.05)
        if not p < 0.05:  # "no" from a sample too small to show anything is not "no difference"
            out["runs_needed"] = runs_needed(a_vals, b_vals)
    return out


def verdict(c: dict) -> str:
    """The significance column: yes, no, or why the sample cannot say."""
    if "p" not in c:
        return "n/a: runs < 2, no test possible"
    if c["significant"]:
        return "yes"
    n, need = min(c["a"]["n"], c["b"]["n"]), c.get("runs_needed")
    if need is not None and need > n:
        return (f"not shown: {n} runs per side are too few to conclude; about {need} per side would detect a "
                f"difference this size (80% power)")
    return "no"


@dataclass(frozen=True)
class AbOptions(Options):
    """``python -m profiling ab``'s flags (add_arguments says what each means)."""
    b: str
    a: str = ""
    runs: int = 5
    out: str | None = None
    train_args: tuple = ()


def main(args: argparse.Namespace) -> dict | None:
    return run(AbOptions.from_args(args))


def run(args: AbOptions) -> dict | None:
    """A/B on the session machinery (model/training/execute.py ``execute``, interleaved): under torchrun
    the pairs (A_i, B_i) are spread over the ranks, each pair on one GPU; rank 0 reports."""
    if args.runs < 1:
        raise usage_error(f"--runs must be at least 1 (got {args.runs})")
    shared = [a for a in args.train_args if a != "--"]
    flags = {"A": shared + shlex.split(args.a), "B": shared + shlex.split(args.b)}
    parser = build_parser()
    configs = []
    world = distributed.World.from_env()
    try:
        for k, v in flags.items():
            train = TrainConfig.from_flags(v, parser)
            configs.append(Config(k, v, train.replace(device=world.device(train.device))))
    except SessionError as e:
        raise usage_error(f"configuration {k}: {e}") from None
    for k, c in zip(flags, configs):
        print(f"{k}: {' '.join(flags[k]) or '(defaults)'}")
    try:
        outcome = execute(configs, args.runs, world=world, quiet=True, interleave=True, strict=True)
    except SessionError as e:
        raise usage_error(str(e)) from None
    world.close()
    if world.rank != 0:
        return None
    if outcome.failures:
        for f in outcome.failures:
            print(f"FAILED: {f['sweep']['name']} run {f['run']}: {f['error']}")
    results = {"A": [], "B": []}
    done = [r for r in outcome.records if not r.get("failed")]
    for r in done:
        results[r["sweep"]["name"]].append(dict(seed=r["seed"], time_s=r["time_s"], accuracy=r["accuracy"]))
    if not results["A"] or not results["B"]:
        raise SystemExit("error: no run of " + " and ".join(k for k in results if not results[k]) + " finished")
    setups = {r["sweep"]["name"]: r for r in done}
    warm = {k: setups[k]["config"].get("warmup_s") for k in ("A", "B")}
    time_cmp = compare([r["time_s"] for r in results["A"]], [r["time_s"] for r in results["B"]])
    acc_cmp = compare([100 * r["accuracy"] for r in results["A"]], [100 * r["accuracy"] for r in results["B"]])
    rows = []
    for what, c, unit in (("time", time_cmp, "s"), ("accuracy", acc_cmp, "%")):
        rows.append(dict(metric=f"{what} ({unit})", a=f"{c['a']['mean']:.4g} ± {c['a']['ci95']:.2g}",
                         b=f"{c['b']['mean']:.4g} ± {c['b']['ci95']:.2g}", diff=c["diff"], p=c.get("p"),
                         sig=verdict(c)))
    table = markdown_table(rows, [("metric", "metric"), ("a", "A: mean ± 95% CI"), ("b", "B: mean ± 95% CI"),
                                  ("diff", "B - A"), ("p", "Welch p"), ("sig", "significant (p < 0.05)")])
    env = setups["A"]["env"]
    head = (f"A/B on {env['device']}, {args.runs} interleaved runs each; A: `{' '.join(flags['A']) or '(defaults)'}`, "
            f"B: `{' '.join(flags['B'])}`")
    print(head + "\n\n" + table)
    if any(w is not None for w in warm.values()):
        table += "\n\nWarm-up (untimed; includes compilation): " + ", ".join(
            f"{k} {w:.1f} s" for k, w in warm.items() if w is not None)
    out = dict(device=env["device"], env=env, runs=args.runs, flags=flags, results=results, time=time_cmp, warmup_s=warm,
               accuracy=acc_cmp, configs={k: s["config"] for k, s in setups.items()},
               failures=outcome.failures)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_json(os.path.join(args.out, "ab.json"), out)
        with open(os.path.join(args.out, "ab.md"), "w") as f:
            f.write(f"# {head}\n\n{table}\n")
    return out
