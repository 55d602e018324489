"""python -m profiling launches: every Triton launch of the network's ops timed alone on this GPU, for
the default configuration, each configuration of the ops' configuration lists and each variant of
their specs (conv: the autotuner's L1 and persistent twins, W_POINTERS, FP8_NARROW_K, TAPS_APART), so that the static
model can be held against its own kernels launch by launch (not only against public kernels).

On a GPU (run it in a device session; about 0.1 s of timing per launch plus each kernel's first
compile): every op of ``--ops`` is driven forward and backward through the registry at the network's
real shapes (as ``profiling static`` drives it), once to compile and autotune, then again with every
kernel launch timed alone where it happens (triton.testing.do_bench: L2 flushed, the median of
--reps runs), in the order the op launches them. Each record keeps the launch itself (kernel,
specialised signature, constexprs, grid, warps, stages, each argument's value or tensor facts), so
that a CPU can compile that very launch for the GPU's architecture and model it.

Here, on a CPU, no GPU needed: ``--predict FILE`` reads such a file (a GPU report's
``launches.json``) and writes each launch's measured time beside the static model's prediction for
it on the measured GPU (the "isolated" context: one launch timed alone, as do_bench does),
their ratio, the deciding bound, and per kernel and per layer which configuration measured fastest
against the one the launcher chooses. ``profiling static`` reads the newest GPU report's file
the same way (its 'Measured vs predicted' section).

Outputs (--out, default runs/launches): launches.json (the records, with the environment) and, with
--predict, launches_predicted.json and launches.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import kernels
from kernels.spec import spec

from .capture import config_str, launch_from_json, launch_to_json, make_launch
from .drive import _drive, triton_impls
from .report_io import fmt, markdown_table, write_json
from .shapes import unique_ops

DTYPES = ("fp16", "bf16", "fp32")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ops", default="conv", help="comma-separated ops (default: conv)")
    p.add_argument("--impls", default=None,
                   help="comma-separated implementations (default: every Triton one of each op but composites)")
    p.add_argument("--layers", default=None, help="comma-separated layer names, e.g. group1.conv1 (default: all)")
    p.add_argument("--configs", choices=("default", "all"), default="all",
                   help="the default configuration only, or also each entry of each configuration list (default)")
    p.add_argument("--batch", type=int, default=None, help="batch size (default: the recipe's, 2000)")
    p.add_argument("--dtype", choices=DTYPES, default="fp16")
    p.add_argument("--reps", type=int, default=20, help="timed runs per launch (do_bench's rep in ms; default 20)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new configurations after this many seconds; what was timed is written")
    p.add_argument("--predict", metavar="FILE", default=None,
                   help="no GPU: model the launches of a launches.json a GPU wrote, beside their measured times")
    p.add_argument("--out", default="runs/launches")


# ------------------------------------------------------------------------------------ on a GPU
def do_bench_timer(reps: int):
    """Median ms of one launch alone: triton.testing.do_bench (L2 flushed between runs)."""
    from triton.testing import do_bench

    def timer(fn) -> float:
        return float(do_bench(fn, warmup=max(1, reps // 4), rep=reps, return_mode="median"))
    return timer


def wall_timer(fn) -> float:
    """A CPU's stand-in (the interpreter's time says nothing about a GPU): one run, in ms."""
    t0 = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t0)


def _timing_hook(out: list, timer, timed: set):
    """Run each launch (the op needs it) and time it alone, unless the same launch (kernel,
    specialisation, grid) was timed already for this op and case: a pinned configuration list changes
    only its own kernels' launches."""
    def hook(kernel, grid, args, kwargs):
        ln = make_launch(kernel, grid, args, kwargs)
        g = ln.grid

        def run():
            return kernel[g](*args, **kwargs)
        compiled = run()  # the launch the op needs (and the compile, off the clock)
        key = (ln.key, ln.grid, ln.phase)
        if key not in timed:
            timed.add(key)
            out.append((ln, timer(run)))
        return compiled if compiled is not None else True
    return hook


def work_list(ops: list[str], batch: int, configs: str = "all", impls: list[str] | None = None,
              layers: list[str] | None = None) -> list[tuple]:
    """(op, impl, case, variant label, the context that forces it or None) to time: every default
    first (each layer's default configuration, the one training runs), then the spec's variants (conv:
    the autotuner's L1 and persistent twins of the default, the pointer path beside TMA, fp8's narrow
    BLOCK_K), then each configuration list's entries, so that a time budget keeps the defaults and
    the variants."""
    items = []
    for op in ops:
        s = spec(op)
        for impl in [i for i in triton_impls(op) if impls is None or i in impls]:
            for case in unique_ops(batch, op):
                if layers and case.name not in layers:
                    continue
                items.append((op, impl, case, "default", None))
                if configs == "all":
                    items += [(op, impl, case, f"{cl.name}[{j}]", lambda cl=cl, cfg=cfg: cl.pinned(cfg))
                              for cl in s.config_lists for j, cfg in enumerate(cl)]
                    items += [(op, impl, case, name, form) for name, form in s.variants_for(impl, case).items()]
    # stable: the defaults first, in op order, then the variants (the autotuner's alternatives to each default,
    # what the model cannot judge), then the lists' entries, so that a time budget keeps the first two
    return sorted(items, key=lambda it: 0 if it[3] == "default" else 2 if it[3].endswith("]") else 1)


def measure(ops: list[str], device, dtype, batch: int, configs: str = "all", impls: list[str] | None = None,
            layers: list[str] | None = None, timer=None, budget_s: float | None = None,
            checkpoint=None) -> dict:
    """Every launch of ``ops`` driven at the network's shapes on ``device``, timed alone.
    Returns dict(records=[...], complete=bool, seconds): a record per launch with its case, variant
    (``default`` or ``LIST[i]``), phase, kernel, configuration, measured ms and the launch; a
    configuration that fails records its error instead. ``checkpoint(result)`` after each
    configuration (the GPU run writes its file each time: a timeout loses at most one)."""
    from kernels._triton import recording

    timer = timer or wall_timer
    start = time.perf_counter()
    records, complete = [], True
    timed: dict = {}
    for op, impl, case, label, pin in work_list(ops, batch, configs, impls, layers):
        if budget_s is not None and time.perf_counter() - start > budget_s:
            complete = False
            break
        s = spec(op)
        got: list = []
        s.forget_choices()
        try:
            with (pin() if pin else _null()):
                _drive(case, impl, dtype, None, device=device, fill="randn")  # compile, autotune
                with recording(_timing_hook(got, timer, timed.setdefault((op, impl, case.label()), set()))):
                    _drive(case, impl, dtype, None, device=device, fill="randn")
        except Exception as e:  # noqa: BLE001 - a configuration that cannot run is a finding
            msg = str(e).splitlines()[0][:200] if str(e) else ""
            records.append(dict(op=op, impl=impl, case=case.label(), layer=case.name, variant=label,
                                error=f"{type(e).__name__}: {msg}"))
            continue
        finally:
            s.forget_choices()
        for ln, ms in got:
            records.append(dict(op=op, impl=impl, case=case.label(), layer=case.name, variant=label,
                                default=label == "default", phase=ln.phase, kernel=ln.kernel,
                                config=config_str(ln), grid=list(ln.grid), num_warps=ln.num_warps,
                                num_stages=ln.num_stages, measured_ms=ms, launch=launch_to_json(ln)))
        if checkpoint is not None:
            checkpoint(dict(records=records, complete=False, seconds=time.perf_counter() - start))
    return dict(records=records, complete=complete, seconds=time.perf_counter() - start)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ------------------------------------------------------------------------------------ on a CPU
def predict_records(data: dict, arch: str | None = None, peak=None, cache: dict | None = None) -> list[dict]:
    """Each timed launch of ``data`` (a launches.json) compiled here for the GPU's architecture and
    modelled on its peaks, as one launch timed alone ("isolated"); rows with measured, predicted,
    their ratio and the bound."""
    from .cubin import kernel_facts
    from .devices import PEAKS, detect
    from .kernel_work import work_of
    from .perfmodel import predict, resident_programs

    env = data.get("env", {})
    peak = peak or detect(env.get("device", "")) or PEAKS["H100-SXM"]
    arch = arch or ("sm_80" if peak.name.startswith("A100") else "sm_90")
    cache = {} if cache is None else cache
    rows = []
    for r in data["records"]:
        if "error" in r:
            rows.append(dict(r))
            continue
        try:
            ln = launch_from_json(r["launch"])
        except (KeyError, ValueError) as e:
            rows.append(dict({k: v for k, v in r.items() if k != "launch"}, error=str(e)))
            continue
        if (ln.key, arch) not in cache:
            cache[(ln.key, arch)] = kernel_facts(ln, arch)
        f = cache[(ln.key, arch)]
        fp8 = "QGMMA" in f["sass"]["total"]["mma_kinds"]
        capacity = peak.sms * max(1, resident_programs(f["regs"], f["shared"], ln.num_warps, peak))
        p = predict(ln, f, work_of(ln, peak, capacity), peak, arch, fp8=fp8, context="isolated")
        rows.append(dict({k: v for k, v in r.items() if k != "launch"}, arch=arch, device=peak.name,
                         predicted_ms=p["predicted_ms"], bound=p["bound"], bounds_ms=p["bounds_ms"],
                         roofline_ms=p["roofline_ms"], regs=f["regs"], resident=p["resident"],
                         ratio=r["measured_ms"] / p["predicted_ms"] if p["predicted_ms"] else None))
    return rows


def spread(rows: list[dict]) -> dict | None:
    """measured / predicted over ``rows``: n, median, 10th and 90th percentiles."""
    ratios = sorted(r["ratio"] for r in rows if r.get("ratio"))
    if not ratios:
        return None
    q = statistics.quantiles(ratios, n=10, method="inclusive") if len(ratios) > 1 else ratios * 9
    return dict(n=len(ratios), median=statistics.median(ratios), p10=q[0], p90=q[-1])


def best_configs(rows: list[dict]) -> list[dict]:
    """Per (impl, layer, phase, kernel position): the default configuration's measured time against
    the fastest configuration measured for the same launch, and whether the model ranks them the same."""
    groups: dict = {}
    for r in rows:
        if r.get("measured_ms") is None or "error" in r:
            continue
        groups.setdefault((r["impl"], r["case"], r["phase"], r["kernel"]), []).append(r)
    out = []
    for (impl, case, phase, kernel), rs in sorted(groups.items()):
        default = next((r for r in rs if r["default"]), None)
        if default is None or len(rs) < 2:
            continue
        best = min(rs, key=lambda r: r["measured_ms"])
        model_best = min((r for r in rs if r.get("predicted_ms")), key=lambda r: r["predicted_ms"], default=None)
        out.append(dict(impl=impl, case=case, phase=phase, kernel=kernel, configs=len(rs),
                        default_ms=default["measured_ms"], default_config=default["config"],
                        best_ms=best["measured_ms"], best_config=best["config"], best_variant=best["variant"],
                        default_over_best=default["measured_ms"] / best["measured_ms"],
                        model_picks=model_best["variant"] if model_best else None,
                        model_pick_ms=model_best["measured_ms"] if model_best else None))
    return out


def render(rows: list[dict], data: dict) -> str:
    env = data.get("env", {})
    ok = [r for r in rows if r.get("ratio")]
    errors = [r for r in rows if "error" in r]
    lines = [f"# Triton launches timed alone: {env.get('device', '?')}", "",
             f"Measured on {env.get('device', '?')} (torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, "
             f"commit {env.get('git_commit', '?')}), batch {data.get('batch')}, {data.get('dtype')}: each launch "
             f"timed alone with triton.testing.do_bench (L2 flushed, median of its runs), where the op launches it. "
             f"Predicted: the static model for the same launch compiled here "
             f"({rows[0].get('arch', '?') if rows else '?'}) on the measured GPU's peaks, as a launch timed alone. "
             + ("" if data.get("complete", True) else "The run stopped at its time budget: not every configuration "
                "was timed. "), ""]
    sp = spread(ok)
    if sp:
        lines += [f"measured / predicted over {sp['n']} launches: median {sp['median']:.2f}, "
                  f"10th-90th {sp['p10']:.2f}-{sp['p90']:.2f}.", ""]
        by_kernel = {}
        for r in ok:
            by_kernel.setdefault(r["kernel"], []).append(r)
        lines += ["| kernel | launches | median | 10th-90th |", "|---|---|---|---|"]
        for k, rs in sorted(by_kernel.items()):
            s = spread(rs)
            lines.append(f"| {k} | {s['n']} | {s['median']:.2f} | {s['p10']:.2f}-{s['p90']:.2f} |")
        lines.append("")
    best = best_configs(ok)
    if best:
        lines += ["## The default configuration against the fastest one measured", "",
                  "`model picks`: the configuration the model predicts fastest, and its measured time.", "",
                  markdown_table(best, [("impl", "impl"), ("case", "case"), ("phase", "phase"), ("kernel", "kernel"),
                                        ("configs", "configs"), ("default_ms", "default ms"),
                                        ("best_ms", "best ms"), ("default_over_best", "default / best"),
                                        ("best_variant", "best"), ("best_config", "best configuration"),
                                        ("model_picks", "model picks"), ("model_pick_ms", "its ms")]), ""]
    defaults = [r for r in ok if r["default"]]
    if defaults:
        lines += ["## Default configurations", "",
                  markdown_table(defaults, [("impl", "impl"), ("case", "case"), ("phase", "phase"), ("kernel", "kernel"),
                                            ("config", "configuration"), ("measured_ms", "measured ms"),
                                            ("predicted_ms", "predicted ms"), ("ratio", "measured / predicted"),
                                            ("bound", "bound"), ("regs", "regs"), ("resident", "per SM")]), ""]
    if errors:
        lines += ["## Configurations that did not run", ""]
        lines += [f"- {r['impl']} {r['case']} {r['variant']}: {r['error']}" for r in errors]
        lines.append("")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    import torch

    from model.training.env import environment

    os.makedirs(args.out, exist_ok=True)
    if args.predict:
        try:
            data = json.load(open(args.predict))
        except (OSError, ValueError) as e:
            raise SystemExit(f"profiling launches --predict: cannot read {args.predict}: {e}")
        from .cubin import require_compiled_mode
        require_compiled_mode()
        rows = predict_records(data)
        write_json(os.path.join(args.out, "launches_predicted.json"), dict(data, records=rows))
        md = render(rows, data)
        with open(os.path.join(args.out, "launches.md"), "w") as f:
            f.write(md)
        print(md.split("\n## ")[0])
        return 0
    if not torch.cuda.is_available():
        raise SystemExit("profiling launches: timing launches needs a GPU (CUDA); on a CPU the kernels run in the Triton "
                         "interpreter, whose times say nothing. On a CPU, --predict FILE models a file a GPU wrote.")
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in kernels.ops()]
    if unknown:
        raise SystemExit(f"profiling launches: unknown op(s) {', '.join(unknown)}; known: {', '.join(kernels.ops())}")
    device = torch.device("cuda")
    from model.recipes import get_recipe
    batch = args.batch or get_recipe("airbench94_muon").batch_size
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    impls = [i.strip() for i in args.impls.split(",")] if args.impls else None
    layers = [s.strip() for s in args.layers.split(",")] if args.layers else None
    head = dict(env=environment(device), batch=batch, dtype=args.dtype, configs=args.configs, ops=ops, reps=args.reps)
    path = os.path.join(args.out, "launches.json")
    res = measure(ops, device, dtype, batch, args.configs, impls, layers, do_bench_timer(args.reps), args.budget_s,
                  checkpoint=lambda part: write_json(path, dict(head, **part), indent=None))
    write_json(path, dict(head, **res), indent=None)
    n = sum(1 for r in res["records"] if "error" not in r)
    print(f"# {n} launches timed in {res['seconds']:.0f} s" + ("" if res["complete"] else " (stopped at the budget)")
          + f"; {len(res['records']) - n} configurations did not run: {path}")
    for r in res["records"]:
        if r.get("default"):
            print(f"#   {r['impl']:8s} {r['case'][:36]:36s} {r['phase']:4s} {r['kernel']:20s} {fmt(r['measured_ms'])} ms")
    return 0
