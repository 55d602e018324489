"""``python -m profiling calibrate``: the static model against published GPU measurements.

Every case of the suite (profiling/calibration/cases.py: public Triton kernels, their published
times, sources, GPUs and timing methods) is compiled here for its GPU's architecture and predicted
as one isolated launch (what ``triton.testing.do_bench`` times); an autotuned kernel is predicted
for every configuration of its list that fits the GPU and the fastest prediction is taken, as the
autotuner takes the fastest measurement. The table gives published, predicted, their ratio and the
deciding bound; the summary, for the fit and held-out parts separately: the median and worst
error (|log2 of predicted / published|, shown as a factor), how many predictions are faster than
measured, and Spearman's rank correlation. ``--fit`` re-fits the model's constants on the fit part
only and prints them (copy them into profiling/perfmodel.py); the held-out part is never fitted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics

from .cases import DATASETS, MATMUL_CONFIGS, DataSet, seconds

# the constants the fit may move, with the grids it searches (profiling/perfmodel.py names them)
FIT_GRID = {
    "MEM_EFFICIENCY": [0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95],
    "TC_EFFICIENCY": [0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 1.0],
    "ISSUE_EFFICIENCY": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "LATENCY_NS": [500.0, 600.0, 700.0, 800.0, 900.0, 1000.0, 1200.0],
    "FIXED_ISOLATED_US": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0],
    # a factor on the microbenchmark L2 bandwidths of profiling/devices.py (above 1: the figure is low)
    "L2_EFFICIENCY": [0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4],
}


@contextlib.contextmanager
def constants(**values):
    """Within the block, profiling/perfmodel.py uses these constants (names as in perfmodel.constants())."""
    from .. import perfmodel as pm
    saved = dict(pm.constants())
    fixed = dict(pm.FIXED_US)

    def apply(v):
        for k, x in v.items():
            if k == "FIXED_ISOLATED_US":
                pm.FIXED_US["isolated"] = x
            elif k == "FIXED_IN_STEP_US":
                pm.FIXED_US["in_step"] = x
            else:
                setattr(pm, k, x)
    apply(values)
    try:
        yield
    finally:
        apply({k: v for k, v in saved.items() if not k.startswith("FIXED")})
        pm.FIXED_US.clear()
        pm.FIXED_US.update(fixed)


def _next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _row_warps(block: int, liger: bool) -> int:
    if liger:  # Liger's calculate_settings
        return 32 if block >= 32768 else 16 if block >= 8192 else 8 if block >= 2048 else 4
    return 16 if block >= 4096 else 8 if block >= 2048 else 4  # tutorial 02 (early 2024)


def _launches(ds: DataSet, size: int) -> list[tuple]:
    """(kernel, grid, args, constexprs, num_warps, num_stages, work) for every configuration a case
    may run (one, or the autotuning list)."""
    import torch

    from ..predict import gemm, rows
    from . import kernels as K
    dt = dict(fp32=torch.float32, fp16=torch.float16, bf16=torch.bfloat16,
              fp8e5=getattr(torch, "float8_e5m2", None))

    def t(*shape, dtype=torch.float32):
        return torch.empty(shape, dtype=dtype, device="meta")
    if ds.kernel == "softmax_rows":
        r = ds.params["rows"]
        x, y = t(r, size), t(r, size)
        block = _next_pow2(size)
        return [(K.softmax_rows, (r,), (y, x, size, size, size), dict(BLOCK_SIZE=block), _row_warps(block, False), 3,
                 rows(r, size, [x], [y]))]
    if ds.kernel in ("rms_norm_rows", "layer_norm_rows"):
        r = ds.params["rows"]
        x, y = t(r, size, dtype=dt[ds.params["dtype"]]), t(r, size, dtype=dt[ds.params["dtype"]])
        w, b, mean, rstd = t(size), t(size), t(r), t(r)
        block = _next_pow2(size)
        if ds.kernel == "rms_norm_rows":
            args = (y, size, x, size, w, 1, rstd, 1, size, 1e-6, 0.0)
            work = rows(r, size, [x, w], [y, rstd])
        else:
            args = (y, size, x, size, w, 1, b, 1, mean, 1, rstd, 1, size, 1e-6)
            work = rows(r, size, [x, w, b], [y, mean, rstd])
        fn = getattr(K, ds.kernel)
        return [(fn, (r,), args, dict(BLOCK_SIZE=block), _row_warps(block, True), 3, work)]
    if ds.kernel == "matmul_grouped":
        m = n = k = size
        ad = dt[ds.params["dtype"]]
        a = t(m, k, dtype=ad)
        b = t(n, k, dtype=ad).T if ds.params.get("b_kmajor") else t(k, n, dtype=ad)
        c = t(m, n, dtype=torch.float16)
        es = a.element_size()
        out = []
        for bm, bn, bk, gm, stages, warps in MATMUL_CONFIGS:
            grid = (math.ceil(m / bm) * math.ceil(n / bn),)
            args = (a, b, c, m, n, k, a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1))
            out.append((K.matmul_grouped, grid, args,
                        dict(BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=bk, GROUP_SIZE_M=gm), warps, stages,
                        gemm(m, n, k, es, es, 2)))
        return out
    raise ValueError(f"{ds.key}: no launch builder for kernel {ds.kernel}")


def prepare(datasets=None, progress=None) -> list[dict]:
    """Compile every case's candidates (SASS facts, cached per specialisation) and build their work."""
    from ..devices import lookup
    from ..predict import ARCH_OF, _jit_function, compile_facts
    cases = []
    for ds in datasets or DATASETS:
        peak = lookup(ds.device)
        arch = ARCH_OF[peak.capability]
        for size, value, part in ds.points:
            cands = []
            for fn, grid, args, cx, warps, stages, work in _launches(ds, size):
                fn = _jit_function(fn)
                ln, facts = compile_facts(fn, args, cx, warps, stages, arch)
                if facts["shared"] > peak.smem_per_block_kib * 1024:
                    continue  # does not fit the GPU: the autotuner drops it
                ln.grid = grid
                w = work(ln, facts)
                cands.append((ln, facts, w))
            if progress:
                progress(f"{ds.key} {size}: {len(cands)} configuration(s)")
            cases.append(dict(dataset=ds.key, kernel=ds.kernel, device=ds.device, arch=arch, size=size, part=part,
                              published=value, unit=ds.unit, measured_s=seconds(ds, size, value), peak=peak,
                              candidates=cands, source=ds.source))
    return cases


def evaluate(cases: list[dict], **consts) -> list[dict]:
    """Predicted beside published for every case, under the model's constants (or ``consts``)."""
    from ..perfmodel import predict
    out = []
    with constants(**consts):
        for c in cases:
            best = None
            for ln, facts, w in c["candidates"]:
                fp8 = "QGMMA" in facts["sass"]["total"]["mma_kinds"]
                p = predict(ln, facts, w, c["peak"], c["arch"], fp8=fp8, context="isolated")
                if best is None or p["predicted_ms"] < best["predicted_ms"]:
                    best = dict(p, config=ln.cx, num_warps=ln.num_warps, num_stages=ln.num_stages)
            pred_s = best["predicted_ms"] * 1e-3
            out.append(dict(dataset=c["dataset"], kernel=c["kernel"], device=c["device"], size=c["size"],
                            part=c["part"], published=c["published"], unit=c["unit"], measured_us=c["measured_s"] * 1e6,
                            predicted_us=pred_s * 1e6, ratio=pred_s / c["measured_s"], bound=best["bound"],
                            config={k: v for k, v in best["config"].items() if k.isupper()},
                            num_warps=best["num_warps"], source=c["source"]))
    return out


def _spearman(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3:
        return None

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for pos, i in enumerate(order):
            r[i] = pos
        return r
    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx = math.sqrt(sum((a - mx) ** 2 for a in rx))
    sy = math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx and sy else None


def _quantile(v: list[float], q: float) -> float:
    s = sorted(v)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(rows: list[dict], part: str) -> dict:
    """Median and worst error (as factors), faster-than-measured count, Spearman and the
    measured / predicted percentiles that make the prediction range."""
    rs = [r for r in rows if r["part"] == part]
    if not rs:
        return dict(part=part, cases=0)
    err = [abs(math.log2(r["ratio"])) for r in rs]
    inv = [1 / r["ratio"] for r in rs]
    return dict(part=part, cases=len(rs), gpus=sorted({r["device"] for r in rs}),
                median_error=2 ** statistics.median(err), worst_error=2 ** max(err),
                faster_than_measured=sum(r["ratio"] < 1 for r in rs),
                spearman=_spearman([r["predicted_us"] for r in rs], [r["measured_us"] for r in rs]),
                range=(_quantile(inv, 0.1), _quantile(inv, 0.9)),
                bounds=dict(sorted({b: sum(r["bound"] == b for r in rs) for b in {r["bound"] for r in rs}}.items())))


def _objective(rows: list[dict]) -> float:
    err = [abs(math.log2(r["ratio"])) for r in rows if r["part"] == "fit"]
    return statistics.median(err) + statistics.fmean(err)


def fit(cases: list[dict], rounds: int = 3, progress=None) -> dict:
    """Coordinate descent over FIT_GRID on the fit part only: the constants that minimise the mean
    |log2 error| plus the median one (robust to one odd data set, unlike the worst)."""
    from .. import perfmodel as pm
    fit_cases = [c for c in cases if c["part"] == "fit"]
    now = {k: v for k, v in pm.constants().items() if k in FIT_GRID}
    best = _objective(evaluate(fit_cases, **now))
    for r in range(rounds):
        moved = False
        for name, grid in FIT_GRID.items():
            for v in grid:
                trial = dict(now, **{name: v})
                obj = _objective(evaluate(fit_cases, **trial))
                if obj < best - 1e-9:
                    best, now, moved = obj, trial, True
        if progress:
            progress(f"fit round {r + 1}: objective {best:.4f} with {now}")
        if not moved:
            break
    return now


def render(rows: list[dict], sums: list[dict]) -> str:
    lines = ["| part | data set | size | published | measured us | predicted us | predicted / measured | bound |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['part']} | {r['dataset']} | {r['size']} | {r['published']:.4g} {r['unit']} | "
                     f"{r['measured_us']:.3g} | {r['predicted_us']:.3g} | {r['ratio']:.2f} | {r['bound']} |")
    lines += ["", "| part | cases | GPUs | median error | worst error | faster than measured | Spearman | "
                  "measured / predicted, 10th-90th percentile |", "|---|---|---|---|---|---|---|---|"]
    for s in sums:
        if not s["cases"]:
            continue
        sp = f"{s['spearman']:.2f}" if s["spearman"] is not None else "n/a"
        lines.append(f"| {s['part']} | {s['cases']} | {', '.join(s['gpus'])} | {s['median_error']:.2f}x | "
                     f"{s['worst_error']:.2f}x | {s['faster_than_measured']} of {s['cases']} | {sp} | "
                     f"{s['range'][0]:.2f}-{s['range'][1]:.2f} |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fit", action="store_true",
                   help="re-fit the model's constants on the fit part and print them (the held-out part is "
                        "reported, never fitted)")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the table and summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def main(args) -> int:
    import sys
    os.environ.setdefault("TRITON_INTERPRET", "0")
    say = None if args.quiet else (lambda m: print(f"# {m}", file=sys.stderr, flush=True))
    cases = prepare(progress=say)
    consts = {}
    if args.fit:
        consts = fit(cases, progress=say)
        print("fitted on the fit part (copy into profiling/perfmodel.py):")
        for k, v in consts.items():
            print(f"  {k} = {v}")
        print()
    rows = evaluate(cases, **consts)
    sums = [summary(rows, "fit"), summary(rows, "held-out")]
    print(render(rows, sums))
    print("\n(published: measured on a GPU by the source; predicted: this model, on this machine, no GPU)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(rows=rows, summary=sums, constants=consts or None), f, indent=1, default=str)
    return 0
