"""Rendering ``profiling static``'s result: static.md's tables, static.png, the JSON's compact
form and the summary printed at the end."""
from __future__ import annotations

import os

from .assemble import BEATEN_MARGIN, PUBLISHED_RUNS, losses
from .capture import TRAIN_PHASES
from .perfmodel import RANGE, constants, with_range
from .report_io import markdown_table
from .shapes import whiten_fraction

# ------------------------------------------------------------------------------ presentation
KERNEL_COLUMNS = [("kernel", "kernel"), ("impl", "impl"), ("case", "used at"), ("phase", "phase"), ("arch", "arch"),
                  ("bound", "bound"), ("predicted_ms", "predicted ms"), ("predicted_range", "range ms"),
                  ("roofline_ms", "roofline ms"), ("predicted_fraction", "of roofline"), ("instr_per_elem", "instr/elem"),
                  ("issue_budget", "budget"),
                  ("instr_per_mma", "instr/MMA"), ("mma_budget", "MMA budget"), ("loops", "loops"),
                  ("drained_loops", "drained"), ("wait_depth", "wait depth"), ("async_copies", "async loads"),
                  ("plain_loads", "plain loads"), ("mma_shapes", "MMA"), ("fadd_after_mma", "FADD after MMA"),
                  ("sts_u8", "STS.U8"), ("programs", "programs"), ("resident", "per SM"), ("waves", "waves"),
                  ("regs", "regs"), ("spill_bytes", "spill B"), ("occupancy", "occupancy")]
CONFIG_COLUMNS = [("kernel", "kernel"), ("impl", "impl"), ("case", "used at"), ("arch", "arch"), ("variant", "variant"),
                  ("config", "config"), ("num_warps", "warps"), ("num_stages", "stages"), ("regs", "regs"),
                  ("spill_bytes", "spill B"), ("shared", "smem B"), ("tensor_core_instrs", "TC instrs"),
                  ("vector_loads", "vector loads"), ("occupancy", "occupancy"), ("bound", "bound"),
                  ("predicted_ms", "predicted ms"), ("predicted_range", "range ms"), ("predicted_fraction", "of roofline")]
OP_COLUMNS = [("op", "op"), ("impl", "impl"), ("case", "shape"), ("arch", "arch"), ("fwd_ms", "fwd ms"),
              ("roofline_fwd_ms", "fwd roofline"), ("fwd_fraction", "fwd of roofline"), ("bwd_ms", "bwd ms"),
              ("roofline_bwd_ms", "bwd roofline"), ("bwd_fraction", "bwd of roofline"),
              ("fwd_glue_ms", "glue fwd ms"), ("bwd_glue_ms", "glue bwd ms"), ("kernels", "kernels"),
              ("glue_ops", "glue ops"), ("predicted_ms", "fwd+bwd ms"), ("predicted_range", "range ms"),
              ("bound", "bound"),
              ("predicted_fraction", "fwd+bwd of roofline"), ("slowest_kernel", "slowest kernel")]
STEP_COLUMNS = [("backend", "backend"), ("arch", "arch"), ("predicted_ms", "Triton ops predicted ms"),
                ("predicted_range", "range ms"), ("bound", "bound (most time)"), ("roofline_ms", "their roofline ms"),
                ("predicted_fraction", "of roofline"), ("floor_ms", "kernels at their floor ms"),
                ("fused_min_ms", "fused minimum ms"),
                ("of_fused_min", "of fused minimum"), ("hbm_mb", "HBM MB / step (model)"),
                ("fused_min_mb", "fused minimum MB"),
                ("eager_roofline_ms", "eager ops (not modelled): roofline ms"), ("host_ms", "host ms / step"),
                ("host_bound", "host-bound?"), ("run_graph_s", "run s, --cuda-graph"),
                ("run_graph_range", "range s"), ("run_eager_s", "run s, no graph")]


def _fmt_list(v):
    if isinstance(v, list):
        return " ".join(map(str, v)) or "-"
    if isinstance(v, dict):
        return " ".join(f"{k}:{n}" for k, n in v.items()) or "-"
    return v


NOT_RUNNABLE = "n/a: needs sm_89+"


def step_display(steps: list[dict]) -> list[dict]:
    """Step rows as the tables show them: a backend that cannot run on an arch says so; a prediction
    carries its range."""
    out = []
    for r in steps:
        if r.get("note"):
            out.append(dict(r, predicted_ms=NOT_RUNNABLE))
        elif r.get("predicted_ms") is not None:
            lo, hi = with_range(r["predicted_ms"])
            out.append(dict(r, predicted_range=f"{lo:.3f}-{hi:.3f}"))
        else:
            out.append(r)
    return out


def markdown(rows, columns):
    return markdown_table([{k: _fmt_list(v) for k, v in r.items()} for r in rows], columns)


def _span(row: dict, best: str, worst: str) -> str:
    """``row[best]`` to ``row[worst]`` (ms) as a range, "-" when not modelled (a built fusion)."""
    if row.get(best) is None:
        return "in the fused step" if row.get("built") else "-"
    return f"{row[best]:+.3f} to {row[worst]:+.3f}"


def fusion_section(fusions: dict, steps: list[dict]) -> list[str]:
    """The HBM traffic each fusion of issue 23 would remove per step (profiling/shapes.py
    fusion_savings), per arch, beside triton_all's modelled traffic."""
    parts = ["### Fusions of issue 23: predicted HBM traffic removed per step, and the extra work", "",
             "Bytes each fusion removes from a training step of the network, and their time at the model's "
             "effective HBM bandwidth (a prediction before building). Beside: `triton_all`'s modelled HBM traffic "
             "per step; `built`: the implementation that has it, whose step (backend `fused`) the table above "
             "predicts with its extra work. For a fusion not built, `extra ms` is the work it would add to the "
             "kernels that absorb it, from their compiled SASS (profiling/shapes.py fusion_costs): the prologue "
             "transform is charged BatchNorm's apply pass once per tap in the next conv's forward and again in "
             "its weight-grad (implicit GEMM loads each input element KxK times), the backward sums the reduce "
             "pass in the input-grad's epilogue. It is a range: overlapped (only the growth of the kernel's "
             "largest bound, the model's rule) to serial (added in full, as an epilogue with one program per SM "
             "is); `net ms` is the saving minus it, best to worst case.", ""]
    by = {(s["backend"], s["arch"]): s for s in steps}
    for arch, rows in fusions.items():
        base = by.get(("triton_all", arch), {}).get("hbm_mb")
        fused = by.get(("fused", arch), {})
        total = sum(r["mb"] for r in rows)
        parts += [f"{arch}: all five remove {total:.0f} MB, {sum(r['ms'] for r in rows):.3f} ms per step"
                  + (f" ({100 * total / base:.0f}% of triton_all's {base:.0f} MB)" if base else "")
                  + (f"; the built ones, modelled in backend fused: {fused['hbm_mb']:.0f} MB per step "
                     f"({100 * (1 - fused['hbm_mb'] / base):.0f}% less), {fused['predicted_ms']:.2f} ms against "
                     f"triton_all's {by[('triton_all', arch)]['predicted_ms']:.2f}"
                     if base and fused.get("hbm_mb") and fused.get("predicted_ms") else ""), "",
                  markdown([dict(r, mb=f"{r['mb']:.1f}", ms=f"{r['ms']:.4f}", layers=", ".join(r["layers"]),
                                 built=r.get("built") or "no", extra=_span(r, "extra_ms", "extra_serial_ms"),
                                 net=_span(r, "net_ms", "net_low_ms"))
                            for r in rows], [("fusion", "fusion"), ("mb", "MB / step"), ("ms", "ms / step"),
                                             ("built", "built"), ("extra", "extra ms (overlapped - serial)"),
                                             ("net", "net ms (best - worst)"), ("layers", "where"),
                                             ("what", "what moves")]), ""]
        for r in rows:
            if r.get("by_layer"):
                parts += [f"{arch} {r['fusion']} per layer, net ms (best - worst): "
                          + "; ".join(f"{n} {v['net_ms']:+.3f} to {v['net_low_ms']:+.3f}"
                                      for n, v in r["by_layer"].items()), ""]
    return parts



def measured_section(measured: dict | None) -> list[str]:
    """static.md's measured-vs-predicted section: whole runs, kernels, conv layers and op benchmarks of the
    GPU reports (profiling.assemble.measured_vs_predicted), with the spread of our kernels' ratios."""
    if not measured:
        return ["## Measured vs predicted", "", "No GPU report with a profiler trace exists in reports/ yet: the "
                "first GPU session's `profiling report` calibrates the model.", ""]
    parts = [f"## Measured vs predicted ({measured['device']}, report {measured['report']})", ""]
    if measured.get("predicted_for") and measured["predicted_for"] != measured.get("modelled"):
        parts += [f"Predictions redone for the measured GPU ({measured['predicted_for']}): each bound scaled by the "
                  f"ratio of its peak to the modelled {measured['modelled']}'s (HBM bandwidth for the memory bound), "
                  "the rest of the model unchanged.", ""]
    other = [v for v in measured.get("gpu_triton") or [] if v != measured.get("local_triton")]
    if other:
        parts += [f"The GPU ran another Triton (triton {', '.join(other)}) than the one whose SASS is modelled here "
                  f"(triton {measured['local_triton']}): where the two compile a kernel differently, measured and "
                  "predicted are two builds (the whitening conv's direct kernel of 2026-11-30: 479 SASS instructions "
                  "under triton 3.6, 1109 under 3.8, so its issue bound looked beaten). The kernels' instruction "
                  "counts under the GPU's Triton: `profiling static` run in that Triton's environment (CI's second "
                  "stage installs it).", ""]
    if measured.get("runs"):
        parts += ["Whole training runs (train.py --cuda-graph, no torch.compile; median of the runs) beside the "
                  "step table's run prediction; a step: epochs 2 on, Triton ops predicted (the run prediction "
                  "leaves out the optimizer, the augmentation and the loss).", "",
                  markdown(measured["runs"], [("backend", "backend"), ("report", "report"), ("runs", "runs"),
                                              ("measured_s", "measured run s"), ("predicted_s", "predicted run s"),
                                              ("predicted_range", "range s"), ("ratio", "measured / predicted"),
                                              ("measured_step_ms", "measured step ms"),
                                              ("predicted_step_ms", "predicted Triton ops ms")]), ""]
    if measured.get("spread"):
        sp = measured["spread"]
        parts += [f"**Our own kernels, timed inside training steps** (the kernel and conv-layer tables below: "
                  f"profiler traces, device time): measured / predicted over {sp['n']} of them has median "
                  f"{sp['median']:.2f}, 10th-90th percentiles {sp['p10']:.2f}-{sp['p90']:.2f} (all: {sp['lo']:.2f}-"
                  f"{sp['hi']:.2f}; {sp['slower']} of {sp['n']} slower than predicted). The stated range "
                  f"({RANGE[0]:.2f}-{RANGE[1]:.2f}, from public kernels timed alone) is narrower: read a "
                  f"prediction of ours as itself times {sp['p10']:.2f}-{sp['p90']:.2f}.", ""]
    if measured["kernels"]:
        parts += ["Per kernel name, summed over the step (profiler trace of each backend's training step):", "",
                  markdown(measured["kernels"], [("backend", "backend"), ("kernel", "kernel"),
                                                 ("measured_ms", "measured ms / step"),
                                                 ("predicted_ms", "predicted ms / step"),
                                                 ("ratio", "measured / predicted")]), ""]
    if measured.get("layers"):
        parts += ["Per conv layer (profiler trace, `profiling trace`'s conv-layer table: forward, the kernels its "
                  "conv range launched; backward, those of its autograd node), while the whitening bias trains. "
                  "`modelled`: `as run`, the configurations the run chose (autotuning on the GPU picks its own; "
                  "each launch matched by its grid and threads per block to the configuration the model compiled), "
                  "or `default`, the launcher's default ones, which the step table predicts (the trace does not "
                  "say which ran, or the model did not compile it); `default ms`: the default configurations' "
                  "prediction:", "",
                  markdown(measured["layers"], [("backend", "backend"), ("layer", "layer"), ("phase", "phase"),
                                                ("measured_ms", "measured ms / step"),
                                                ("predicted_ms", "predicted ms / step"),
                                                ("ratio", "measured / predicted"), ("modelled", "modelled"),
                                                ("default_ms", "default ms")]), ""]
    parts += bound_checks_section(measured.get("bound_checks"))
    if measured["ops"]:
        parts += ["Op benchmarks (`profiling bench`, one op at a time) beside the op's predicted forward, or "
                  "forward + backward as a training step runs it (the whitening conv computes no input-grad "
                  "there). `timed`: `graph`, replayed from a CUDA graph (the device's time, what the model "
                  "predicts), or `do_bench`, the host-side launch included (an op whose Python launch path "
                  "outlasts its kernels is then timed at the host's pace).", "",
                  markdown(measured["ops"], [("op", "op"), ("case", "shape"), ("impl", "impl"), ("mode", "mode"),
                                             ("timed", "timed"), ("measured_ms", "measured ms"),
                                             ("predicted_ms", "predicted ms"), ("ratio", "measured / predicted")]),
                  ""]
    parts += launches_section(measured.get("launches"))
    return parts


def bound_checks_section(checks: list[dict] | None) -> list[str]:
    """Every traced launch of our kernels against the bounds of the configuration it ran: a bound above
    the measured time is a ceiling the GPU beat (profiling.assemble.bound_checks)."""
    if not checks:
        return []
    beaten = [c for c in checks if c["beaten"]]
    parts = ["Every traced launch of our kernels against the bounds of the configuration it ran (predicted for "
             "the measured GPU). Each bound is a floor on the time, so a measured time below one (by more than "
             f"{round(100 * (BEATEN_MARGIN - 1))}%) is a ceiling the GPU beat: the peak or efficiency behind it is "
             "too low for that kernel. `L2 TB/s`: the model's L2 bytes of the launch over its measured time, a lower "
             f"limit of the L2 throughput the GPU reached. Beaten: {len(beaten)} of {len(checks)} launches"
             + (" (" + ", ".join(f"{k} {sum(1 for c in beaten if k in c['beaten'])}"
                                  for k in sorted({k for c in beaten for k in c["beaten"]})) + ")" if beaten else "")
             + ".", ""]
    rows = [dict(c, grid="x".join(str(g) for g in c["grid"]),
                 beaten_s=", ".join(f"{k} {v:.2f}x" for k, v in sorted(c["beaten"].items())) or "-",
                 l2=f"{c['l2_tbps']:.1f}" if c.get("l2_tbps") else "-",
                 bounds=", ".join(f"{k} {v:.3f}" for k, v in c["bounds_ms"].items() if v >= 0.001))
            for c in checks]
    parts += [markdown(rows, [("backend", "backend"), ("layer", "layer"), ("phase", "phase"), ("kernel", "kernel"),
                              ("grid", "grid"), ("measured_ms", "measured ms"), ("predicted_ms", "predicted ms"),
                              ("bound", "bound"), ("beaten_s", "bounds beaten (bound / measured)"),
                              ("l2", "L2 TB/s"), ("bounds", "bounds ms")]), ""]
    return parts


def launches_section(lau: dict | None) -> list[str]:
    """Launches timed alone (profiling launches) beside the model, from measured_vs_predicted."""
    if not lau or not lau.get("spread"):
        return []
    sp = lau["spread"]
    parts = [f"Triton launches timed alone (`profiling launches`, {lau['file']}: do_bench, L2 flushed), each compiled "
             f"here and predicted as a launch timed alone: measured / predicted over {sp['n']} launches (every "
             f"configuration timed) has median {sp['median']:.2f}, 10th-90th {sp['p10']:.2f}-{sp['p90']:.2f}"
             + ("" if lau.get("complete", True) else "; the run stopped at its time budget") + ".", "",
             "| kernel | launches | median | 10th-90th |", "|---|---|---|---|"]
    parts += [f"| {k} | {s['n']} | {s['median']:.2f} | {s['p10']:.2f}-{s['p90']:.2f} |"
              for k, s in lau["per_kernel"].items() if s]
    parts.append("")
    if lau.get("best"):
        parts += ["Per launch, the default configuration against the fastest one measured, and the one the model "
                  "predicts fastest (its measured time):", "",
                  markdown(lau["best"], [("case", "case"), ("phase", "phase"), ("kernel", "kernel"),
                                         ("configs", "configs"), ("default_ms", "default ms"), ("best_ms", "best ms"),
                                         ("default_over_best", "default / best"), ("best_variant", "best"),
                                         ("model_picks", "model picks"), ("model_pick_ms", "its ms")]), ""]
    return parts


def loss_lines(meta: dict, ops: list[dict], rows: list[dict], arch: str) -> list[str]:
    """The largest predicted losses (predicted minus roofline) and headroom (predicted minus floor)
    per step on one architecture, as markdown paragraphs."""
    parts = []
    ls = losses(ops, rows, meta["batch"], arch, recipe=meta.get("recipe"))
    if ls:
        parts += [f"Largest predicted losses per step on {arch} (`--backend triton_all`, predicted minus "
                  "roofline, summed over layers): " + ", ".join(f"{x['kernel']} {x['loss_ms']:.3f} ms" for x in ls), ""]
    hs = losses(ops, rows, meta["batch"], arch, recipe=meta.get("recipe"), against="floor")
    if hs:
        parts += [f"Largest headroom to the floor per step on {arch} (the same, predicted minus the kernel's "
                  "floor: what tuning it can still gain): "
                  + ", ".join(f"{x['kernel']} {x['loss_ms']:.3f} ms" for x in hs), ""]
    return parts


def render(meta: dict, rows: list[dict], ops: list[dict], steps: list[dict], findings: list[dict],
           measured: dict | None, host: list[dict] | None, glue: list[dict], fusions: dict | None = None) -> str:

    def ranged(r):
        lo, hi = r.get("predicted_range_ms") or (None, None)
        return dict(r, predicted_range=f"{lo:.4f}-{hi:.4f}") if lo is not None else r
    rows = [ranged(r) for r in rows]
    d = [r for r in rows if r["default"]]
    parts = [f"# {meta['header']}", "",
             "**Predictions of a static model, not measurements**: no GPU ran any of this. The model "
             "(profiling/perfmodel.py) gives each launch a fixed cost plus the largest of the memory, latency, "
             "L2, issue, tensor-core and shared-memory bounds, with constants fitted to published GPU "
             "measurements of public Triton kernels (`python -m profiling calibrate`); a range is the "
             "prediction times the held-out part's 10th-90th percentile of measured / predicted. Its "
             "constants: " + ", ".join(f"{k} = {v}" for k, v in dict(constants(), RANGE=RANGE).items()) + ".", "",
             "## Per training step (forward + backward of every layer)", "",
             markdown(step_display(steps), STEP_COLUMNS), "",
             "A step is the mean step of a run: the op after the whitening conv computes its input-grad only "
             "while the whitening bias trains (the recipe's whiten_bias_epochs of its epochs, "
             f"{100 * whiten_fraction(meta.get('recipe')):.1f}% of the steps here; after that autograd skips it), "
             "so it is modelled twice (the second named '(whitening bias frozen)') and weighted by that share. "
             "The Triton column covers the ops each backend runs in Triton; the ops it leaves to cuDNN / "
             "ATen are shown by their roofline only (not modelled). Host time: the CPU time of one step's "
             "Python, dispatch and launch preparation with launches recorded (see `host` in static.json). "
             "Run time: steps x (Triton ops + eager ops at their roofline) + evaluation; with --cuda-graph "
             "the host is hidden, without it a step costs the larger of host and device time. Kernels at "
             "their floor: the same step with every launch at its fixed cost plus the larger of its DRAM and "
             "tensor-core bounds (the model's efficiencies), its L2, issue, shared-memory and latency bounds out of "
             "the way: the most that tuning the kernels' code and configurations can gain under this model; below "
             "it only less work (fusion, fp8) or other efficiencies. Published, "
             "measured: " + "; ".join(f"{n} {t} s on an {g}" for n, t, g in PUBLISHED_RUNS) + ".", ""]
    sp = (measured or {}).get("spread")
    if sp:
        read = [f"{st['backend']} {st['arch']} {st['predicted_ms'] * sp['median']:.2f} ms "
                f"({st['predicted_ms'] * sp['p10']:.2f}-{st['predicted_ms'] * sp['p90']:.2f})"
                for st in steps if st.get("predicted_ms") and not st.get("note") and st["arch"] == measured["arch"]]
        parts += [f"Read with our own kernels' measured spread (measured / predicted inside training steps on "
                  f"{measured['device']}: median {sp['median']:.2f}, 10th-90th {sp['p10']:.2f}-{sp['p90']:.2f}, "
                  f"n = {sp['n']}; section 'Measured vs predicted'), the Triton ops' step predictions for "
                  f"{measured['arch']} are: "
                  + "; ".join(read) + ". Still predictions; the spread comes from one GPU's traces.", ""]
    if host:
        parts += ["### Host time per step", "", markdown(host, [("backend", "backend"), ("host_ms", "host ms"),
                                                          ("python_ms", "Python + dispatch ms"),
                                                          ("launches", "kernel launches"),
                                                          ("launch_ms", "launch cost ms (assumed)"),
                                                          ("note", "how")]), ""]
    for arch in meta["archs"]:
        parts += loss_lines(meta, ops, rows, arch)
    if fusions:
        parts += fusion_section(fusions, steps)
    parts += ["## Per op (default configurations, training forward + backward)", "", markdown(ops, OP_COLUMNS), "",
              "## Per kernel launch (default configurations)", "", markdown(d, KERNEL_COLUMNS), ""]
    parts += measured_section(measured)
    gl = [g for g in glue if g["default"] and g["phase"] in TRAIN_PHASES and g["bytes"] > 1e6]
    if gl:
        parts += ["## Eager glue around the kernels (ops over 1 MB)", "",
                  markdown(gl, [("op", "op"), ("impl", "impl"), ("case", "shape"), ("phase", "phase"), ("arch", "arch"),
                              ("aten", "ATen op"), ("bytes", "bytes"), ("predicted_ms", "predicted ms")]), ""]
    parts += ["## Findings (rules, profiling/rules.py)", "",
              markdown(findings, [("rule", "rule"), ("kernel", "kernel"), ("impl", "impl"), ("arch", "arch"),
                                ("case", "used at"), ("value", "value"), ("limit", "limit"), ("status", "status")])
              if findings else "No rule is violated.", ""]
    other = [r for r in rows if not r["default"]]
    if other:
        parts += ["## Every configuration", "",
                  "Each entry of each configuration list, pinned in turn (`LIST[i]`), and each variant an op's "
                  "spec names (`OpSpec.variants`; conv's `A_VIA_L1`: the autotuner's L1 twin, its tap-read tiles "
                  "in 8-byte vectors that go through L1; the model has no L1, so it shows only their cost; `PERSISTENT`: "
                  "the persistent twin, one round of programs walking the tiles; `FP8_NARROW_K` (fp8 only): the "
                  "lists' own BLOCK_K, which the autotuner times after fp8's doubled one; `W_POINTERS`: the weights "
                  "through pointers, not TMA; `TAPS_APART` (where the taps pack): the reduction tap by tap, not "
                  "over packed (tap, channel) pairs).", "",
                  markdown(other, CONFIG_COLUMNS), ""]
    return "\n".join(parts)


def plot(ops: list[dict], path: str, title: str) -> str | None:
    """Predicted vs roofline per op (fwd+bwd), one panel per architecture, stacked (each panel as
    wide as the page, as tall as its rows need, labels never clipped)."""
    from .plots import _plt
    plt = _plt()
    if plt is None or not ops:
        return None
    archs = sorted({o["arch"] for o in ops})
    per_arch = {a: [o for o in ops if o["arch"] == a and o.get("predicted_ms")] for a in archs}
    heights = [max(2.0, 0.26 * len(rs) + 1.2) for rs in per_arch.values()]
    fig, axes = plt.subplots(len(archs), 1, figsize=(11, sum(heights)), squeeze=False,
                             gridspec_kw=dict(height_ratios=heights))
    for ax, (arch, rs) in zip(axes[:, 0], per_arch.items()):
        labels = [f"{o['op']}/{o['impl']} {o['case']}" for o in rs]
        ys = list(range(len(rs)))[::-1]  # first row on top, as in static.md
        ax.scatter([o["predicted_ms"] for o in rs], ys, marker="o", label="predicted (static model)")
        ax.scatter([o["roofline_ms"] for o in rs], ys, marker="|", s=200, c="k", label="roofline minimum")
        for y, o in zip(ys, rs):
            ax.plot([o["roofline_ms"], o["predicted_ms"]], [y, y], c="0.7", zorder=0)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_ylim(-0.7, len(rs) - 0.3)
        ax.set_xscale("log")
        ax.grid(True, axis="x", which="both", alpha=0.3)
        ax.set_xlabel("ms per op (forward + backward), log scale")
        ax.set_title(f"{title} - {arch} (predictions, no GPU)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a point
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_steps(steps: list[dict], path: str, title: str) -> str | None:
    """Predicted training step per backend (the Triton kernels' time, with the model's range as an
    error bar) and its HBM traffic, one panel per architecture; a backend that leaves ops to
    cuDNN / ATen is drawn hatched (its eager ops are a roofline, not a prediction)."""
    from .plots import _plt
    plt = _plt()
    rows = [s for s in steps if s.get("predicted_ms")]
    if plt is None or not rows:
        return None
    archs = sorted({s["arch"] for s in rows})
    fig, axes = plt.subplots(len(archs), 2, figsize=(12, 1.2 + 2.2 * len(archs)), squeeze=False)
    for (ax, axb), arch in zip(axes, archs):
        rs = sorted((s for s in rows if s["arch"] == arch), key=lambda s: -s["predicted_ms"])
        ys = list(range(len(rs)))
        ms = [s["predicted_ms"] + (s.get("eager_roofline_ms") or 0) for s in rs]
        lo = [s["predicted_ms"] - (s.get("predicted_range_ms") or [s["predicted_ms"]] * 2)[0] for s in rs]
        hi = [(s.get("predicted_range_ms") or [s["predicted_ms"]] * 2)[1] - s["predicted_ms"] for s in rs]
        bars = ax.barh(ys, ms, xerr=[lo, hi], color="C0", alpha=0.8, capsize=3)
        for b, s in zip(bars, rs):
            if s.get("eager_ops"):
                b.set_hatch("//")
                b.set_alpha(0.4)
        ax.axvline(rs[0]["fused_min_ms"], c="k", ls=":", lw=1, label="fused minimum")
        ax.set_yticks(ys)
        ax.set_yticklabels([s["backend"] for s in rs])
        ax.set_xlabel("ms per training step (predicted; hatched: + eager ops' roofline)")
        ax.set_title(f"{arch}: predicted step", fontsize=10)
        ax.legend(fontsize=8)
        axb.barh(ys, [s.get("hbm_mb") or 0 for s in rs], color="C1", alpha=0.8)
        axb.axvline(rs[0]["fused_min_mb"], c="k", ls=":", lw=1)
        axb.set_yticks(ys)
        axb.set_yticklabels([])
        axb.set_xlabel("HBM MB per training step (model)")
        axb.set_title(f"{arch}: DRAM traffic", fontsize=10)
    fig.suptitle(f"{title} (predictions of the static model, no GPU)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


_SLIM = ("notes", "bounds_ms", "loop_instrs", "async_widths", "plain_load_widths", "tc", "grid", "layer",
         "launch_index", "l2_bytes", "mma_flops", "case_key")


def compact(obj, lean: bool = False):
    """The JSON as written: floats to 4 significant digits; rows of non-default configurations
    without their detail fields (static.md lists them in full), or (``lean``: the committed
    report) without those rows at all."""
    def walk(v):
        if isinstance(v, float):
            return float(f"{v:.4g}")
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v
    out = dict(obj)
    out["rows"] = [r if r["default"] else {k: v for k, v in r.items() if k not in _SLIM} for r in obj["rows"]
                   if r["default"] or not lean]
    if lean:
        out["meta"] = dict(out["meta"], rows_omitted=sum(1 for r in obj["rows"] if not r["default"]),
                           rows_note="non-default configurations: see static.md, or run profiling static")
    return walk(out)


def print_summary(meta, steps, ops, findings, out: str | None) -> None:
    """What the terminal shows: the per-step predictions and the rules; the per-op and per-kernel
    tables (about 80 lines) are in static.md."""
    print(meta["header"])
    print("PREDICTIONS of a static model (no GPU ran this):")
    if steps:
        print(markdown(step_display(steps), STEP_COLUMNS))
    bad = [f for f in findings if f["status"] == "violated"]
    from .rules import known
    excused = sum(1 for f in bad if known(f, meta["triton"]))
    print(f"\nrules: {len(bad)} violated" + (f" ({excused} known: profiling/rules.py KNOWN)" if excused else "")
          + ("" if not bad else ": " + "; ".join(
        f"{f['rule']} {f['kernel']} {f['arch']} ({f['value']} {'<' if f.get('kind') == 'min' else '>'} {f['limit']})"
        for f in bad[:8])))
    if out:
        print(f"per op ({len(ops)} rows), per kernel and per configuration: {os.path.join(out, 'static.md')}")
