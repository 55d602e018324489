"""``python -m profiling bench``: every op x implementation at the network's real shapes.

Times forward and forward+backward with triton.testing.do_bench on a GPU (CUDA events,
median) or a perf_counter loop on a CPU, and reports time, achieved GB/s and TFLOP/s on the
must-move bytes / FLOPs of profiling/shapes.py, the roofline lower bound and the fraction of
it reached, on the device's peak (profiling/devices.py; ``--peak`` overrides detection).
Writes bench.json, bench.md, bench_time.png and roofline.png to ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import torch

import kernels
from model.cli import SessionError, did_you_mean, usage_error
from model.training.config import device_of
from model.training.env import environment

from . import plots
from .cases import MODES, make_callable
from .devices import ALIASES, PEAKS, detect, lookup
from .options import Options
from .report_io import markdown_table, write_json
from .shapes import dtype_size, unique_ops
from .timing import (
    CPU_NOTE,
    TIMING_NOTE_CPU,
    TIMING_NOTE_GPU,
    UNRELIABLE_SPREAD,
    load_average,
    measure,
    measure_graph,
)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
COLUMNS = [("case", "op @ shape"), ("impl", "impl"), ("mode", "mode"), ("ms", "ms"), ("graph_ms", "graph ms"),
           ("gbps", "GB/s"),
           ("tflops_text", "TFLOP/s"), ("bound_ms", "bound ms"), ("frac_roofline", "of roofline"), ("reps", "reps")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default=None,
                   help="the shapes of this recipe's network (model/recipes.py; default: airbench94_muon)")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: the recipe's, 2000 for airbench94_muon, on a GPU; 2 on a CPU)")
    p.add_argument("--ops", default=None,
                   help="comma-separated ops (default: all on a GPU; bn_act,maxpool on a CPU, where the Triton "
                        "interpreter takes minutes per conv)")
    p.add_argument("--impls", default=None,
                   help="comma-separated implementations (default: all but a composite such as conv=triton_small, "
                        "whose kernels are other implementations'; on a CPU: eager,triton)")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"comma-separated: {', '.join(MODES)} (default: {','.join(MODES)}, both)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: fp16 on a GPU, fp32 on a CPU")
    p.add_argument("--peak", default=None,
                   help="device peak table entry, any case (default: detected from the GPU's name; none on a CPU): "
                        + ", ".join(sorted(set(PEAKS) | set(ALIASES))))
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--out", default="runs/bench",
                   help="output directory (default: runs/bench, an ignored folder; a report keeps its own copy)")
    p.add_argument("--no-plots", action="store_true",
                   help="skip bench_time.png and roofline.png (default: draw them when matplotlib is installed)")


@dataclass(frozen=True)
class BenchOptions(Options):
    """``python -m profiling bench``'s flags (add_arguments says what each means)."""
    recipe: str | None = None
    batch: int | None = None
    ops: str | None = None
    impls: str | None = None
    modes: str = ",".join(MODES)
    dtype: str | None = None
    peak: str | None = None
    device: str | None = None
    out: str = "runs/bench"
    no_plots: bool = False


def _names(flag: str, value: str, known, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    for v in items:
        if v not in known:
            raise usage_error(f"{flag}: unknown {what} {v!r}{did_you_mean(v, known)}; known: {', '.join(known)}")
    if not items:
        raise usage_error(f"{flag} names nothing")
    return items


def check_args(args):
    """Every flag checked before any work: a one-line error and a non-zero exit."""
    try:
        device = device_of(args.device)
    except SessionError as e:
        raise usage_error(str(e)) from None
    cuda = device.type == "cuda"
    if args.batch is not None and args.batch < 1:
        raise usage_error(f"--batch must be at least 1 (got {args.batch})")
    from model.recipes import RECIPES
    if args.recipe is not None and args.recipe not in RECIPES:
        raise usage_error(f"--recipe: unknown recipe {args.recipe!r}{did_you_mean(args.recipe, RECIPES)}; "
                          f"known: {', '.join(RECIPES)}")
    ops = _names("--ops", args.ops, kernels.ops(), "op") if args.ops else (
        list(kernels.ops()) if cuda else ["bn_act", "maxpool"])
    known_impls = sorted({i for op in ops for i in kernels.impls(op)})
    impls = _names("--impls", args.impls, known_impls, "implementation") if args.impls else (
        None if cuda else ["eager", "triton"])
    modes = _names("--modes", args.modes, MODES, "mode")
    try:
        peak = lookup(args.peak) if args.peak else (detect(torch.cuda.get_device_name(device)) if cuda else None)
    except ValueError as e:
        raise usage_error(f"--peak: {e}") from None
    return device, ops, impls, modes, peak


def main(args: argparse.Namespace) -> list[dict]:
    return run(BenchOptions.from_args(args))


def run(args: BenchOptions) -> list[dict]:
    device, op_list, impls_filter, modes, peak = check_args(args)
    cuda = device.type == "cuda"
    recipe = args.recipe
    from model.recipes import get_recipe
    batch = args.batch or (get_recipe(recipe or "airbench94_muon").batch_size if cuda else 2)
    dtype = DTYPES[args.dtype or ("fp16" if cuda else "fp32")]
    env = environment(device)
    load = load_average()
    print(f"# bench on {env['device']}, {recipe or 'airbench94_muon'} shapes, batch {batch}, "
          f"{str(dtype).replace('torch.', '')}, "
          f"peak table: {peak.name if peak else 'none'}" + (f", load average {load:.2f}" if load is not None else ""))
    if not cuda:
        print(f"# {CPU_NOTE}")
    records = []
    for op in op_list:
        impls = [i for i in kernels.impls(op) if (i in impls_filter if impls_filter is not None
                                                  else not kernels.composite(op, i))]
        for case in unique_ops(batch, op, recipe=recipe):
            for impl in impls:
                for mode in modes:
                    records.append(measure_case(op, case, impl, mode, dtype, device, peak))
    os.makedirs(args.out, exist_ok=True)
    ok = [r for r in records if "error" not in r]
    for r in ok:
        r["tflops_text"] = fmt_tflops(r)
    unreliable = [r for r in ok if r["unreliable"]]
    from kernels.conv import chosen_configs
    configs = chosen_configs()
    if configs:
        print("# Triton conv block configurations chosen (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages; a last 'l1': "
              "the L1 twin, A_VIA_L1, won the timing; 'persistent': the persistent twin did):")
        for k, v in configs.items():
            print(f"#   {k}: {v}")
    meta = dict(env=env, recipe=recipe or "airbench94_muon", batch=batch, dtype=str(dtype), peak=peak.__dict__ if peak else None,
                note=None if cuda else CPU_NOTE, conv_configs=configs, load_average=[load, load_average()],
                timing=TIMING_NOTE_GPU if cuda else TIMING_NOTE_CPU, unreliable=len(unreliable))
    write_json(os.path.join(args.out, "bench.json"), dict(meta=meta, records=records))
    write_markdown(os.path.join(args.out, "bench.md"), meta, records, peak, cuda)
    charts = [] if args.no_plots or not ok else draw_charts(ok, args.out, meta, peak, cuda)
    print(f"# wrote {args.out}/bench.json, bench.md" + "".join(f", {os.path.basename(c)}" for c in charts))
    if unreliable:
        print(f"# {len(unreliable)} timing(s) unreliable (repetitions spread > {int(100 * UNRELIABLE_SPREAD)}%): "
              "rerun on a quiet machine")
    return records


def measure_case(op: str, case, impl: str, mode: str, dtype: torch.dtype, device: torch.device, peak) -> dict:
    """One op x shape x implementation x mode timed: its record (or failure record), printed as a line."""
    try:
        fn = make_callable(case, impl, mode, dtype, device)
        timing = measure(fn, device)
        ms = timing.ms
    except Exception as e:  # one failing implementation must not hide the others
        print(f"  {case.label()} {impl} {mode}: FAILED {type(e).__name__}: {e}", file=sys.stderr)
        return dict(op=op, case=case.label(), impl=impl, mode=mode, error=str(e))
    graph = graph_error = None
    try:
        graph = measure_graph(fn, device)
    except Exception as e:  # a call that cannot be captured keeps its do_bench time
        graph_error = f"{type(e).__name__}: {e}"[:200]
    s = ms / 1e3
    nbytes = case.bytes_min(mode, dtype_size(dtype))
    r = dict(op=op, case=case.label(), shape=list(case.x_shape), impl=impl, mode=mode, ms=ms,
             bytes_min=nbytes, flops=case.flops(mode), gbps=nbytes / s / 1e9,
             tflops=case.flops(mode) / s / 1e12, reps=timing.reps, spread=timing.spread,
             statistic=timing.statistic, unreliable=timing.unreliable)
    if graph is not None:  # device time alone; a do_bench time well above it was the host's
        r.update(graph_ms=graph.ms, host_bound=ms > 1.5 * graph.ms)
    elif graph_error:
        r["graph_error"] = graph_error
    if peak:
        bound = case.bound_s(peak, mode, dtype_size(dtype))
        r.update(bound_ms=1e3 * bound, frac_roofline=bound / s, frac_hbm=r["gbps"] / peak.hbm_gbps,
                 frac_fp16_peak=r["tflops"] / peak.fp16_tflops)
    print(f"  {case.label():<28} {impl:<8} {mode:<8} {ms:9.3f} ms {r['gbps']:8.1f} GB/s "
          f"{fmt_tflops(r):>7} TFLOP/s" + (f"  {100 * r['frac_roofline']:5.1f}% of roofline" if peak else "")
          + ("  (unreliable: repetitions spread %.0f%%)" % (100 * timing.spread) if timing.unreliable
             else "") + (f"  graph {graph.ms:.3f} ms" + ("  (host-bound)" if r["host_bound"] else "")
                         if graph is not None else ""))
    return r


def write_markdown(path: str, meta: dict, records: list[dict], peak, cuda: bool) -> None:
    """bench.md: the header (device, versions, timing method, load), the table, configurations, failures."""
    env, (load, load_after), configs = meta["env"], meta["load_average"], meta["conv_configs"]
    ok = [r for r in records if "error" not in r]
    with open(path, "w") as f:
        f.write(f"# Op benchmarks: {env['device']}\n\nbatch {meta['batch']}, {meta['dtype']}, torch {env['torch']}, "
                f"triton {env['triton']}, commit {env['git_commit']}; peak table: {peak.name if peak else 'none'}.\n"
                "Bytes and FLOPs are the must-move minimum of profiling/shapes.py. "
                + (TIMING_NOTE_GPU if cuda else TIMING_NOTE_CPU)
                + (f" Load average (1 min) {load:.2f} before, {load_after:.2f} after." if load is not None else "")
                + "\n\n")
        if meta["unreliable"]:
            f.write(f"**{meta['unreliable']} of {len(ok)} timings are unreliable** (their repetitions spread more than "
                    f"{int(100 * UNRELIABLE_SPREAD)}%: another process was probably running); they are marked `*`.\n\n")
        if not cuda:
            f.write(f"**{CPU_NOTE}**\n\n")
        f.write(markdown_table([dict(r, ms=f"{r['ms']:.4g}" + ("*" if r["unreliable"] else "")) for r in ok],
                               COLUMNS) + "\n")
        if configs:
            f.write("\nTriton conv configurations chosen (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages):\n\n"
                    + "\n".join(f"- `{k}`: {v}" for k, v in configs.items()) + "\n")
        failed = [r for r in records if "error" in r]
        if failed:
            f.write("\nFailed:\n\n" + "\n".join(f"- {r['case']} {r['impl']} {r['mode']}: {r['error']}" for r in failed) + "\n")


def draw_charts(ok: list[dict], out: str, meta: dict, peak, cuda: bool) -> list[str]:
    """bench_time.png and roofline.png (where matplotlib and a peak table allow): the paths written."""
    title = (f"{meta['env']['device']}, batch {meta['batch']}, {meta['dtype'].replace('torch.', '')}"
             + ("" if cuda else " - CPU / Triton interpreter: not GPU speed"))
    charts = [c for c in (plots.time_per_op(ok, os.path.join(out, "bench_time.png"), title),
                          plots.roofline(ok, os.path.join(out, "roofline.png"), peak, title)) if c]
    if plots.plt_missing():
        print("# no PNG charts: matplotlib is not installed (pip install -e .[plots])")
    elif peak is None:
        print("# no roofline chart: no peak table for this device (a GPU, or --peak NAME)")
    return charts


def fmt_tflops(r: dict) -> str:
    """'-' for an op that does no matrix math (memory-bound: its FLOP rate means nothing)."""
    return "-" if not r.get("flops") else f"{r['tflops']:.2f}"
