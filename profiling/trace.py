"""``python -m profiling trace``: torch.profiler over a few training steps.

    python -m profiling trace -- --data data                        # eager, default recipe
    python -m profiling trace --vs "--backend triton" -- --data data   # side by side

Everything after ``--`` is train.py's flags (the configuration A); ``--vs FLAGS`` adds a
configuration B = A's flags followed by FLAGS. For each configuration: a torch.profiler run
over real training steps with a wait / warm-up / active schedule (shapes recorded), saved as
a Chrome / Perfetto trace (open it in ui.perfetto.dev or chrome://tracing), and two tables per
active step:
  - time per model op: forward ops from the network's record_function ranges (conv, maxpool,
    bn_act, gelu, head), backward ops from the autograd nodes that ran them, and the step's
    phases (forward, backward, optimizer);
  - the top kernels by device time (on a CPU: the top operators by CPU time);
  - on a GPU, per conv layer (whiten, group1.conv1, ...): the device time of the kernels launched
    inside its forward range and inside its autograd node, read back from the saved trace
    (conv_layer_times), so that two conv implementations compare layer by layer.
With --vs, one table puts A and B side by side.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import shlex
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass

import torch

from model.cli import SessionError, usage_error
from model.data import TrainLoader
from model.training.config import TrainConfig, fmt_duration
from model.training.console import CPU_ESTIMATE_AFTER_S
from model.training.session import Session

from .options import Options
from .quiet import native_stderr_filtered
from .report_io import markdown_table, write_json

PHASES = ("forward", "backward", "optimizer")
FORWARD_OPS = ("conv", "maxpool", "bn_act", "gelu", "head")
BACKWARD_PREFIX = "autograd::engine::evaluate_function: "


def backward_op(node: str) -> str:
    """Model op that an autograd node belongs to, from its name."""
    n = node.lower()
    if "convolution" in n or "conv" in n:
        return "conv"
    if "maxpool" in n or "max_pool" in n:
        return "maxpool"
    if "bn_act" in n or "batchnorm" in n or "native_batch_norm" in n or "silu" in n:
        return "bn_act"
    if "gelu" in n:
        return "gelu"  # eager bn_act's GELU and the whitening GELU (bn_act's own is counted above when fused)
    if "mm" in n or "addmm" in n or "linear" in n or "mul" in n:
        return "head"
    return "other"


def _dev_time(e, cuda: bool) -> float:
    if not cuda:
        return e.cpu_time_total
    return getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0.0)


def summarize_events(events, active_steps: int, cuda: bool, top: int = 15) -> dict:
    """Per-op and per-phase time (ms per step) and the top kernels, from profiler events."""
    def on_gpu(e) -> bool:
        return str(getattr(e, "device_type", "")).endswith("CUDA")

    per_op = defaultdict(float)
    for e in events:
        if on_gpu(e):  # the GPU-side copies of record_function ranges: their time is in the CPU range's total
            continue
        name = e.name
        if name in PHASES:
            per_op[f"step: {name}"] += _dev_time(e, cuda)
        elif name in FORWARD_OPS:
            per_op[f"fwd: {name}"] += _dev_time(e, cuda)
        elif name.startswith(BACKWARD_PREFIX):
            per_op[f"bwd: {backward_op(name[len(BACKWARD_PREFIX):])}"] += _dev_time(e, cuda)
    kernels = defaultdict(lambda: [0.0, 0])
    ranges = set(PHASES) | set(FORWARD_OPS)
    for e in events:
        if e.name in ranges or e.name.startswith(("autograd::", "ProfilerStep")):
            continue
        is_kernel = on_gpu(e) if cuda else True
        if is_kernel:
            t = _dev_time(e, cuda) if cuda else e.self_cpu_time_total  # a kernel event's total is its own duration
            kernels[e.name][0] += t
            kernels[e.name][1] += 1
    ops = {k: v / 1e3 / active_steps for k, v in sorted(per_op.items())}
    top_k = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]
    return dict(per_op_ms=ops, top=[dict(name=k[:90], ms=v[0] / 1e3 / active_steps, calls=v[1] / active_steps)
                                    for k, v in top_k],
                unit="device (CUDA) time" if cuda else "CPU time")


def conv_layer_names(net) -> list[str]:
    """The network's convs in forward order: "whiten", then "group1.conv1", "group1.conv2", ..."""
    from model.net import Conv3x3
    names = ["whiten"] if hasattr(net, "whiten_weight") else []
    for n, m in net.named_modules():
        if isinstance(m, Conv3x3):
            g, c = n.split(".")[-2:] if n.count(".") >= 2 else ("0", n)
            names.append(f"group{int(g) + 1}.{c}" if g.isdigit() else n)
    return names


def conv_layer_times(trace_path: str, layers: list[str]) -> list[dict] | None:
    """Device ms per step of each conv layer from a saved Chrome trace (profile_config's): forward,
    the kernels launched inside the layer's ``conv`` range (the network's ranges, in layer order);
    backward, those launched inside its autograd node (a conv backward node per layer, the reverse
    of the forward order in a chain network). A kernel is matched to its launch through the
    runtime call's correlation id and the launching thread. ``fwd_launches`` / ``bwd_launches``: each
    launch of the layer's phase in order, with its kernel, grid, threads per block, shared memory,
    registers and mean ms per step (what identifies the configuration the run chose: the static
    model predicts that one). None where the trace has no kernels or the ranges do not come in
    whole steps of ``layers`` (a fused block has no conv range)."""
    opener = gzip.open if trace_path.endswith(".gz") else open
    with opener(trace_path, "rt") as f:
        ev = json.load(f).get("traceEvents", [])
    launched = {e["args"]["correlation"]: (e.get("tid"), e["ts"]) for e in ev
                if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
    kernels = [(launched[e["args"]["correlation"]], e.get("dur", 0.0), e) for e in ev
               if e.get("cat") == "kernel" and e.get("args", {}).get("correlation") in launched]
    key = (lambda e: e["ts"])
    fwd = sorted((e for e in ev if e.get("cat") == "user_annotation" and e.get("name") == "conv"), key=key)
    bwd = sorted((e for e in ev if e.get("cat") == "cpu_op" and e.get("name", "").startswith(BACKWARD_PREFIX)
                  and backward_op(e["name"][len(BACKWARD_PREFIX):]) == "conv"), key=key)
    n = len(layers)
    steps = len(fwd) // n if n else 0
    if not kernels or not steps or len(fwd) != steps * n or len(bwd) != len(fwd):
        return None

    def inside(r) -> list:
        return [(d, e) for (tid, ts), d, e in kernels if tid == r.get("tid") and r["ts"] <= ts <= r["ts"] + r.get("dur", 0)]

    rows = {name: dict(layer=name, fwd_ms=0.0, bwd_ms=0.0, fwd_kernels=0, bwd_kernels=0, fwd_launches=[],
                       bwd_launches=[]) for name in layers}

    def add(name, phase, found):
        row = rows[name]
        row[f"{phase}_ms"] += sum(d for d, _ in found) / 1e3 / steps
        row[f"{phase}_kernels"] += len(found) / steps
        launches = row[f"{phase}_launches"]
        for j, (d, e) in enumerate(found):  # the same launches each step: their mean, by position
            if j == len(launches):
                a = e.get("args", {})
                launches.append(dict(kernel=e.get("name", "").split("(")[0].strip(), grid=list(a.get("grid", [])),
                                     threads=math.prod(a.get("block", [0])), shared=a.get("shared memory"),
                                     regs=a.get("registers per thread"), ms=0.0))
            if j < len(launches):
                launches[j]["ms"] += d / 1e3 / steps

    for i in range(steps):
        for name, r in zip(layers, fwd[i * n:(i + 1) * n]):
            add(name, "fwd", inside(r))
        for name, r in zip(reversed(layers), bwd[i * n:(i + 1) * n]):
            add(name, "bwd", inside(r))
    return [rows[name] for name in layers]


def profile_config(train_argv: list[str], steps: tuple[int, int, int], out_dir: str, label: str,
                   data_cache: dict | None = None) -> dict:
    """Profile ``wait + warmup + active`` training steps of the configuration ``train_argv``."""
    from .timing import CPU_NOTE, load_average
    try:
        cfg = TrainConfig.from_flags(train_argv)
        s = Session.prepare(cfg, data_cache)
    except SessionError as e:
        raise usage_error(str(e)) from None
    wait, warm, active = steps
    total = wait + warm + active
    s.net.reset_parameters()
    s.net.init_whiten(s.data.test_inputs[:256].float())
    s.net.profile_ranges = True
    loader = TrainLoader(s.data.train_images, s.data.train_labels, s.recipe.batch_size, s.dtype, seed=cfg.seed)
    runner = s.fns.runner(s.recipe)
    runner.start_run(max(total + 1, 2), whiten_steps=total + 1)
    cuda = s.device.type == "cuda"
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    epochs = [loader.next_epoch() for _ in range(-(-(total + 1) // len(loader)))]

    def step(n, ranges):
        e, i = divmod(n, len(loader))
        if i == 0:
            runner.start_epoch(epochs[e])
        runner.step(epochs[e], i, n, ranges=ranges)

    if not cuda:
        print(f"# {label}: note: {CPU_NOTE}", flush=True)
    # one untimed step first: cuDNN autotuning, compilation and CUDA-graph capture stay out of the profile
    t0 = time.perf_counter()
    step(0, False)
    if not cuda:
        first = time.perf_counter() - t0
        if first * total > CPU_ESTIMATE_AFTER_S:
            print(f"estimate: {label}'s {total} profiled steps take about {fmt_duration(first * total * 1.5)} on this "
                  f"CPU ({first:.1f} s for the first step, profiler overhead on top); smaller: "
                  f"{smaller_hint(train_argv, s.recipe.batch_size, total)}", flush=True)
    load = load_average()
    sched = torch.profiler.schedule(wait=wait, warmup=warm, active=active, repeat=1)
    with native_stderr_filtered(cuda), torch.profiler.profile(activities=acts, schedule=sched,
                                                              record_shapes=True) as prof:
        for n in range(1, total + 1):
            step(n, True)
            if cuda:
                torch.cuda.synchronize()
            prof.step()
    s.net.profile_ranges = False
    os.makedirs(out_dir, exist_ok=True)
    raw = os.path.join(out_dir, f"trace_{label}.json")
    prof.export_chrome_trace(raw)
    with open(raw, "rb") as f, gzip.open(raw + ".gz", "wb") as g:
        shutil.copyfileobj(f, g)
    layers = conv_layer_times(raw + ".gz", conv_layer_names(s.net)) if cuda else None
    os.remove(raw)
    with native_stderr_filtered(cuda):
        summary = summarize_events(prof.events(), active, cuda)
    summary["conv_layers"] = layers
    summary.update(label=label, flags=" ".join(train_argv), ops=s.names, device=s.env["device"],
                   trace=os.path.basename(raw) + ".gz", trace_bytes=os.path.getsize(raw + ".gz"),
                   batch=s.recipe.batch_size, steps=dict(wait=wait, warmup=warm, active=active),
                   load_average=[load, load_average()], note=None if cuda else CPU_NOTE)
    return summary


def smaller_hint(train_argv: list[str], batch: int, steps: int) -> str:
    """How to make a slow CPU trace smaller, suggesting only what the flags do not already say."""
    given = {a.split("=")[0] for a in train_argv if a.startswith("--")}
    tips = []
    if "--subset" not in given:
        tips.append("--subset 256")
    if batch > 16:
        tips.append(f"--batch-size {max(8, batch // 4) if '--batch-size' in given else 64}")
    flags = f"add {' '.join(tips)} to the flags after --" if tips else ""
    fewer = "--wait 0 --warmup 1 --active 1 (fewer profiled steps)" if steps > 2 else ""
    return "; or ".join(t for t in (flags, fewer) if t) or "this is already the smallest trace"


def side_by_side(a: dict, b: dict) -> str:
    keys = sorted(set(a["per_op_ms"]) | set(b["per_op_ms"]))
    rows = []
    for k in keys:
        ta, tb = a["per_op_ms"].get(k), b["per_op_ms"].get(k)
        rows.append(dict(op=k, a=ta, b=tb, ratio=(tb / ta) if ta and tb else None))
    return markdown_table(rows, [("op", "op (ms / step)"), ("a", "A: " + (a["flags"] or "defaults")), ("b", "B: " + b["flags"]),
                                 ("ratio", "B / A")])


def render(summaries: list[dict]) -> str:
    parts = []
    for s in summaries:
        parts.append(f"## {s['label']}: `{s['flags'] or '(defaults)'}`\n\n{s['device']}, batch {s['batch']}, "
                     f"{s['steps']['active']} active steps, {s['unit']}; ops: "
                     + ", ".join(f"{k}={v}" for k, v in s["ops"].items())
                     + f"; trace: {s['trace']} ({s['trace_bytes'] / 1e6:.1f} MB)\n\n"
                     + (f"**{s['note']}**\n\n" if s.get("note") else "")
                     + markdown_table([dict(op=k, ms=v) for k, v in s["per_op_ms"].items()],
                                      [("op", "op"), ("ms", "ms / step")])
                     + "\n\nTop kernels:\n\n"
                     + markdown_table(s["top"], [("name", "kernel / operator"), ("ms", "ms / step"),
                                                 ("calls", "calls / step")])
                     + ("\n\nConv layers:\n\n" + layers_table(s) if s.get("conv_layers") else ""))
    if len(summaries) == 2:
        parts.append("## Side by side\n\n" + side_by_side(*summaries))
        if summaries[0].get("conv_layers") and summaries[1].get("conv_layers"):
            parts.append("## Conv layers side by side\n\n" + layers_side_by_side(*summaries))
    return "\n\n".join(parts) + "\n"


LAYER_NOTE = ("Device ms per step of the kernels each conv layer launches: forward inside its `conv` range, "
              "backward (input-grad, weight-grad, bias) inside its autograd node.")


def layers_table(s: dict) -> str:
    text = LAYER_NOTE + "\n\n" + markdown_table(
        [dict(r, total=r["fwd_ms"] + r["bwd_ms"]) for r in s["conv_layers"]],
        [("layer", "layer"), ("fwd_ms", "forward"), ("bwd_ms", "backward"), ("total", "total"),
         ("fwd_kernels", "kernels fwd"), ("bwd_kernels", "kernels bwd")])
    launches = [dict(ln, layer=r["layer"], phase=ph, kernel=ln["kernel"][:48], grid="x".join(map(str, ln["grid"])))
                for r in s["conv_layers"] for ph in ("fwd", "bwd") for ln in r.get(f"{ph}_launches") or []]
    if launches:
        text += ("\n\nEach launch (grid, threads per block, shared memory and registers: what tells the "
                 "configuration that ran):\n\n" + markdown_table(
                     launches, [("layer", "layer"), ("phase", "phase"), ("kernel", "kernel"), ("grid", "grid"),
                                ("threads", "threads"), ("shared", "shared B"), ("regs", "regs"), ("ms", "ms / step")]))
    return text


def layers_side_by_side(a: dict, b: dict) -> str:
    """Per conv layer, A's and B's device time and B / A (below 1: B is faster)."""
    rows = []
    for ra, rb in zip(a["conv_layers"], b["conv_layers"]):
        ta, tb = ra["fwd_ms"] + ra["bwd_ms"], rb["fwd_ms"] + rb["bwd_ms"]
        rows.append(dict(layer=ra["layer"], af=ra["fwd_ms"], bf=rb["fwd_ms"],
                         rf=rb["fwd_ms"] / ra["fwd_ms"] if ra["fwd_ms"] else None,
                         ab=ra["bwd_ms"], bb=rb["bwd_ms"], rb=rb["bwd_ms"] / ra["bwd_ms"] if ra["bwd_ms"] else None,
                         at=ta, bt=tb, rt=tb / ta if ta else None))
    sa = sum(r["at"] for r in rows)
    sb = sum(r["bt"] for r in rows)
    rows.append(dict(layer="all convs", at=sa, bt=sb, rt=sb / sa if sa else None))
    return LAYER_NOTE + " B / A below 1: B is faster.\n\n" + markdown_table(rows, [
        ("layer", "layer"), ("af", "A fwd"), ("bf", "B fwd"), ("rf", "B / A"), ("ab", "A bwd"), ("bb", "B bwd"),
        ("rb", "B / A"), ("at", "A total"), ("bt", "B total"), ("rt", "B / A")])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vs", default=None, metavar="FLAGS", help="a second configuration: A's flags followed by FLAGS")
    p.add_argument("--wait", type=int, default=1,
                   help="steps run with the profiler off after the first (untimed) step (default 1)")
    p.add_argument("--warmup", type=int, default=2,
                   help="steps profiled but discarded: the profiler's own start-up cost (default 2)")
    p.add_argument("--active", type=int, default=3,
                   help="steps recorded; the tables are per active step (default 3)")
    p.add_argument("--out", default="runs/trace",
                   help="directory for traces and trace.md / trace.json (default: runs/trace, an ignored folder)")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then train.py's flags")


@dataclass(frozen=True)
class TraceOptions(Options):
    """``python -m profiling trace``'s flags (add_arguments says what each means)."""
    vs: str | None = None
    wait: int = 1
    warmup: int = 2
    active: int = 3
    out: str = "runs/trace"
    train_args: tuple = ()


def main(args: argparse.Namespace) -> list[dict]:
    return run(TraceOptions.from_args(args))


def run(args: TraceOptions) -> list[dict]:
    base = [a for a in args.train_args if a != "--"]
    configs = [("A", base)] + ([("B", base + shlex.split(args.vs))] if args.vs else [])
    cache: dict = {}
    summaries = [profile_config(flags, (args.wait, args.warmup, args.active), args.out, label, cache)
                 for label, flags in configs]
    text = render(summaries)
    print(text)
    write_json(os.path.join(args.out, "trace.json"), summaries)
    with open(os.path.join(args.out, "trace.md"), "w") as f:
        f.write("# Profiler traces\n\n" + text)
    return summaries
