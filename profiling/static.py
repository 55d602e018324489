"""``python -m profiling static``: a GPU-free performance model of every Triton kernel.

Every op behind the registry is driven forward and backward through the registry, exactly as
the network calls it, at the network's real shapes, on CPU tensors: every Triton kernel launch is
recorded instead of run (with its real arguments, grid, block sizes and warps), and every eager
ATen op the launchers and autograd formulas run around the kernels (copies, casts, reductions:
the "glue") is recorded with its bytes, computing nothing (profiling/glue.py). Each recorded
kernel is compiled for sm_80 (A100) and sm_90 (H100) exactly as Triton's JIT would (ints equal to
1 become constants, pointers and ints divisible by 16 are marked so) and its SASS is read
(profiling/sass.py). The performance model (profiling/perfmodel.py, with the work of each kernel
in each op's spec, kernels/<op>.py) turns that into a predicted time per launch, per op and per training
step, beside the roofline minimum.

Outputs (``--out``, default ``runs/static``, an ignored folder; ``--commit`` writes the
committed ``reports/static``):
  static.json   ``rows``: one per kernel launch x configuration x architecture with the SASS facts
                (loops, wait depth, async vs plain loads, tensor-core instructions and whether the
                accumulator stays in them, byte-wide shared stores), the work (bytes, FLOPs,
                instructions per element beside the issue budget), the grid (programs, resident
                programs per SM, waves) and the prediction (every bound, the deciding one, the
                predicted time and fraction of roofline); ``ops`` (per op and shape), ``steps`` (per
                training step, backend and architecture), ``host`` (host time per step), ``rules``
  static.md     the same as tables, default configurations first, findings and rules last
  static.png    predicted vs roofline per op and architecture (matplotlib)
  static_steps.png  predicted training step per backend with its range, and its HBM traffic (model)
Every configuration of each launcher's configuration lists (``*_CONFIGS`` in kernels/<op>.py) is
compiled and modelled too, unless ``--default-only``.

The command is a pipeline of small modules, one job each (this file holds only the pipeline and its CLI):
  profiling/capture.py        launches recorded instead of run (also used by predict and hosttime)
  profiling/drive.py          every op driven through the registry at the network's shapes
  profiling/cubin.py          each launch compiled for sm_80 / sm_90 here; its SASS read (profiling/sass.py)
  profiling/assemble.py       per launch, op, step and run: the model's tables (profiling/perfmodel.py)
  profiling/static_render.py  static.md, static.png, the compact JSON and the printed summary
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

import kernels
from model.cli import did_you_mean, usage_error

from .assemble import build_rows, glue_rows, learn_residency, measured_vs_predicted, op_table, run_times, step_table
from .cubin import ARCHS
from .devices import PEAKS
from .drive import collect
from .report_io import write_json
from .rules import known
from .shapes import fusion_costs, fusion_savings, network_ops, unique_ops
from .static_render import compact, plot, plot_steps, print_summary, render


def run_static(batch: int, ops: list[str], archs: list[str], all_configs: bool, out: str | None,
               dtype: str = "fp16", host: bool = True, reports_dir: str = "reports",
               activation: str = "gelu", recipe: str | None = None, lean_json: bool = False) -> dict:
    import triton

    from . import rules as rule_mod
    cases = [c for op in ops for c in unique_ops(batch, op, producers=True, frozen=True, activation=activation,
                                                 recipe=recipe)]
    esize = {"fp16": 2, "bf16": 2, "fp32": 4}[dtype]
    rows, glue, op_rows, cache = [], [], [], {}
    for arch in archs:  # the launchers size their grids from the SM count: record per modelled GPU
        sms = PEAKS[ARCHS[arch][1]].sms
        records = collect(batch, ops, all_configs, dtype, cases=cases, sms=sms)
        for _ in range(3):  # as a GPU learns each kernel's residency after its first launch
            if not learn_residency(records, arch, sms, cache):
                break
            records = collect(batch, ops, all_configs, dtype, cases=cases, sms=sms)
        arch_rows = build_rows(records, [arch], cache)
        arch_glue = glue_rows(records, [arch])
        rows += arch_rows
        glue += arch_glue
        op_rows += op_table(records, arch_rows, arch_glue, [arch], esize)
    rows.sort(key=lambda r: (not r["default"], r["op"], r["impl"], r["case"], r["phase"], r["launch_index"], r["arch"],
                             r["variant"]))
    steps = step_table(op_rows, batch, archs, esize, activation, recipe) if {"bn_act", "maxpool", "conv"} <= set(ops) else []
    host_rows = None
    if host and steps:
        from .hosttime import host_times
        host_rows = host_times(batch, recipe)
        by_backend = {h["backend"]: h for h in host_rows}
        for s in steps:
            h = by_backend.get(s["backend"])
            if h and h.get("host_ms") is not None and not s.get("note"):
                s["host_ms"] = h["host_ms"]
                device = (s.get("predicted_ms") or 0) + s["eager_roofline_ms"]
                if h["host_ms"] <= device:
                    s["host_bound"] = "no"
                else:  # with eager ops only their roofline is known: the real device time is longer
                    s["host_bound"] = "yes" if not s["eager_ops"] else "possibly (host > predicted + eager roofline)"
    if steps:
        run_times(steps, batch, recipe)
    findings = rule_mod.check(rows) + rule_mod.check_ops(op_rows)
    measured = (measured_vs_predicted(rows, op_rows, batch, reports_dir, steps)
                if recipe in (None, "airbench94_muon") else None)
    header = (f"Static performance model of the Triton kernels ({dtype}, batch {batch}"
              + (f", recipe {recipe}" if recipe else "") + f"), triton {triton.__version__}, "
              f"{datetime.date.today().isoformat()}; compiled on a CPU for {', '.join(archs)}")
    meta = dict(header=header, triton=triton.__version__, batch=batch, dtype=dtype, archs=archs,
                date=datetime.date.today().isoformat(), network_ops=len(network_ops(batch, recipe=recipe)),
                recipe=recipe)
    # what each fusion of issue 23 would remove per step, predicted before any is built
    # and, for those not built, the extra work the compiled kernels would do (net of it)
    net_cases, esize = network_ops(batch, activation=activation, recipe=recipe), {"fp16": 2, "bf16": 2, "fp32": 4}[dtype]
    fusions = ({arch: fusion_costs(fusion_savings(net_cases, PEAKS[ARCHS[arch][1]], esize), net_cases, rows, arch,
                                   PEAKS[ARCHS[arch][1]], esize) for arch in archs} if steps else None)
    text = render(meta, rows, op_rows, steps, findings, measured, host_rows, glue, fusions)
    print_summary(meta, steps, op_rows, findings, out)
    result = dict(meta=meta, rows=rows, ops=op_rows, steps=steps, host=host_rows,
                  glue=[g for g in glue if g["default"]], rules=rule_mod.describe(), findings=findings,
                  measured=measured, fusions=fusions)
    if out:
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, "static.json"), compact(result, lean=lean_json))
        with open(os.path.join(out, "static.md"), "w") as f:
            f.write(text)
        if plot(op_rows, os.path.join(out, "static.png"), f"batch {batch}") is None:
            print("# no chart: matplotlib is not installed (pip install -e .[plots])")
        plot_steps(steps, os.path.join(out, "static_steps.png"), f"batch {batch}")
        charts = [f for f in ("static.png", "static_steps.png") if os.path.exists(os.path.join(out, f))]
        print(f"# wrote {out}/static.json, static.md" + "".join(f", {f}" for f in charts))
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of the real shapes (default: the recipe's, 2000 for airbench94_muon)")
    p.add_argument("--recipe", default=None,
                   help="model the network of this recipe (model/recipes.py; default: airbench94_muon)")
    p.add_argument("--ops", default="bn_act,maxpool,conv,conv_block",
                   help="comma-separated ops to compile (default: bn_act,maxpool,conv,conv_block, all of them; "
                        "a training step per backend needs the first three)")
    p.add_argument("--archs", default="sm_80,sm_90",
                   help="comma-separated targets: sm_80 (A100), sm_90 (H100/H200) (default: both)")
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"),
                   help="activation dtype the kernels are compiled for (default: fp16, as trained on a GPU)")
    p.add_argument("--default-only", action="store_true", help="only the configuration each launcher picks")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a rule of profiling/rules.py is violated (CI; known findings of an older "
                        "Triton are listed, not failed)")
    p.add_argument("--no-host", action="store_true", help="skip the host-time measurement")
    p.add_argument("--out", default=None,
                   help="output directory (default: runs/static, an ignored folder; see --commit)")
    p.add_argument("--commit", action="store_true",
                   help="write the committed report reports/static instead (a deliberate act)")


def _check_args(args) -> None:
    known = set(kernels.ops())
    bad = [o for o in args.ops.split(",") if o and o not in known]
    if bad:
        raise usage_error(f"unknown op(s) {', '.join(bad)} for --ops{did_you_mean(bad[0], known)}; "
                          f"known: {', '.join(sorted(known))}")
    archs = [a for a in args.archs.split(",") if a]
    bad = [a for a in archs if a not in ARCHS]
    if bad or not archs:
        raise usage_error(f"unknown arch(s) {', '.join(bad) or '(none)'} for --archs"
                          f"{did_you_mean(bad[0], ARCHS) if bad else ''}; known: {', '.join(ARCHS)}")
    if args.recipe is not None:
        from model.recipes import RECIPES
        if args.recipe not in RECIPES:
            raise usage_error(f"unknown recipe {args.recipe!r} for --recipe{did_you_mean(args.recipe, RECIPES)}; "
                              f"known: {', '.join(RECIPES)}")
    if args.batch is None:
        from model.recipes import get_recipe
        args.batch = get_recipe(args.recipe or "airbench94_muon").batch_size
    if args.batch < 1:
        raise usage_error(f"--batch must be at least 1, got {args.batch}")


def main(args) -> int:
    if os.environ.get("TRITON_INTERPRET") == "1" or ("kernels" in sys.modules and
                                                     os.environ.get("TRITON_INTERPRET", "") != "0"):
        # Triton picked the interpreter for already-decorated kernels: compile in a fresh process.
        env = dict(os.environ, TRITON_INTERPRET="0")
        argv = [sys.executable, "-m", "profiling", "static", "--ops", args.ops] \
            + (["--batch", str(args.batch)] if args.batch else []) + (["--recipe", args.recipe] if args.recipe else []) + [
                "--archs", args.archs, "--dtype", args.dtype] + (["--out", args.out] if args.out else []) \
            + (["--default-only"] if args.default_only else []) + (["--no-host"] if args.no_host else []) \
            + (["--commit"] if args.commit else []) + (["--check"] if args.check else [])
        return subprocess.run(argv, env=env).returncode
    import torch  # noqa: F401
    _check_args(args)
    out = args.out or ("reports/static" if args.commit else os.path.join("runs", "static"))
    result = run_static(args.batch, [o for o in args.ops.split(",") if o], args.archs.split(","), not args.default_only,
                        out, args.dtype, host=not args.no_host,
                        recipe=None if args.recipe == "airbench94_muon" else args.recipe, lean_json=args.commit)
    return check_findings(result) if args.check else 0


def check_findings(result: dict) -> int:
    """``--check``: 1 when a rule is violated (other than a known finding of an older Triton,
    profiling/rules.py KNOWN, which is listed with its reason), else 0."""
    bad, excused = [], []
    for f in result["findings"]:
        why = known(f, result["meta"]["triton"])
        (excused if why else bad).append((f, why))
    seen: dict = {}
    for f, why in excused:
        seen.setdefault((f["rule"], f["kernel"], f["impl"], f["arch"], why), []).append(f["case"])
    for (rule, kernel, impl, arch, why), cases in seen.items():
        print(f"# known under triton {result['meta']['triton']}: {rule} {kernel} ({impl}, {arch}; {len(cases)} "
              f"launches): {why}")
    if bad:
        print(f"error: {len(bad)} rule(s) violated: " + "; ".join(
            f"{f['rule']} {f['kernel']} {f['impl']} {f['arch']} {f['case']} ({f['value']} vs {f['limit']})"
            for f, _ in bad[:10]))
        return 1
    return 0
