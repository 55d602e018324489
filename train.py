#!/usr/bin/env python
"""Train the CIFAR-10 speedrun network (airbench94) to ~94% and report accuracy and time.

    python train.py                               # airbench94_muon, eager ops, one run
    python train.py --runs 10 --json runs.jsonl   # accuracy mean/std/95% CI, time min/median/max
    python train.py --backend triton --op conv=eager
    python train.py --compile default --cuda-graph --cache-dir ~/.cache/speedrun   # compiled, graphed (GPU)
    python train.py --data DIR --device cpu --subset 2000 --epochs 1   # smoke run on a CPU

Data: DIR holds cifar-10-batches-py/ or cifar-10-python.tar.gz (the original python layout);
--download fetches the original with torchvision; ../shared/data/make_cifar10.py DIR writes
the JPEG stand-in in the same layout.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

import torch

import kernels
import kernels.conv as conv_kernels
from model.compiled import (MODES as COMPILE_MODES, StepFunctions, cache_stats, check_modes, conv_choices_path,
                            use_cache_dir)
from model.data import DataError, load_cifar10
from model.net import CifarNet
from model.recipes import DEFAULT, RECIPES, get_recipe
from model.trainer import DeviceData, Progress, train_run
from profiling.env import environment
from profiling.stats import summarize

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
COLUMNS = ("run", "epoch", "train_loss", "train_acc", "val_acc", "tta_acc", "time_s")


def ops_help() -> str:
    lines = ["ops and implementations (--op OP=IMPL):"]
    for op in kernels.ops():
        for impl in kernels.impls(op):
            lines.append(f"  {op + '=' + impl:<16} {kernels.describe(op, impl)}")
    lines.append("backends (--backend): " + ", ".join(
        f"{b} ({', '.join(f'{o}={i}' for o, i in kernels.resolve_names(b).items())})" for b in kernels.backends()))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, epilog=ops_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data", help="CIFAR-10 directory or .tar.gz (default: ./data)")
    p.add_argument("--download", action="store_true", help="download the original CIFAR-10 if absent")
    p.add_argument("--recipe", default=DEFAULT, choices=sorted(RECIPES), help=f"default: {DEFAULT}")
    p.add_argument("--runs", type=int, default=1, help="independent training runs (seeds seed..seed+runs-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="network precision; BatchNorm stays fp32 (default: fp16 on a GPU, fp32 on a CPU)")
    p.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--subset", type=int, default=None,
                   help="only the first N training images and at most N test images (smoke runs)")
    p.add_argument("--tta", type=int, choices=(0, 1, 2), default=None, help="test-time augmentation level")
    p.add_argument("--backend", default="eager", help=f"op backend: {', '.join(kernels.backends())}")
    p.add_argument("--op", action="append", default=[], metavar="OP=IMPL",
                   help="per-op implementation, repeatable (see the list below)")
    p.add_argument("--compile", default="none", choices=COMPILE_MODES,
                   help="torch.compile the training step (forward + loss + backward), the eval forward and "
                        "Newton-Schulz: default, reduce-overhead (CUDA graphs), max-autotune (as published), "
                        "max-autotune-no-cudagraphs; none = eager (default)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture each whole training step (batch gather, forward, backward, optimizer update and "
                        "schedules) in a CUDA graph and replay it: no host sync, allocation or Python per step. "
                        "GPU only; combines with --compile none, default or max-autotune-no-cudagraphs")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="persistent compile caches (inductor FX graphs, AOTAutograd, autotuning, Triton) under DIR")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="untimed warm-up run length in steps, random labels "
                        "(default: 25 on a GPU; on a CPU 4 with --compile, else 0)")
    p.add_argument("--json", default=None, metavar="PATH", help="append one JSON record per run to PATH")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress line on stderr (default: when stderr is a terminal)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch table")
    return p


def fmt_row(values: dict) -> str:
    out = []
    for c in COLUMNS:
        v = values.get(c, "")
        out.append(f"{v:>10.4f}" if isinstance(v, float) else f"{v!s:>10}")
    return " ".join(out)


@dataclass
class Setup:
    """Everything one training configuration needs, built from train.py's flags."""
    args: argparse.Namespace
    device: torch.device
    dtype: torch.dtype
    recipe: object
    names: dict
    data: DeviceData
    net: CifarNet
    config: dict
    env: dict
    fns: StepFunctions


def prepare(args: argparse.Namespace, data_cache: dict | None = None) -> Setup:
    """Resolve ops, device, dtype and recipe, load the data onto the device, build the network.
    Errors in the flags or the data exit with a clear message. ``data_cache`` lets several
    configurations in one process share the loaded data."""
    try:
        names = kernels.resolve_names(args.backend, kernels.parse_overrides(args.op))
    except kernels.UnknownNameError as e:
        sys.exit(f"error: {e}")
    ops = {op: kernels.get(op, impl) for op, impl in names.items()}
    if args.runs < 1:
        sys.exit("error: --runs must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {device} asked for, but no CUDA GPU is available (use --device cpu)")
    try:
        check_modes(args.compile, args.cuda_graph, device)
    except ValueError as e:
        sys.exit(f"error: {e}")
    dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.cache_dir:
        use_cache_dir(args.cache_dir)
        if device.type == "cuda":  # the Triton conv's timed configurations of an earlier process
            n = conv_kernels.load_choices(conv_choices_path(args.cache_dir))
            if n:
                print(f"conv autotuning: {n} timed configurations reused from {conv_choices_path(args.cache_dir)}")

    recipe = get_recipe(args.recipe).replace(batch_size=args.batch_size)
    key = (args.data, args.subset, str(device), str(dtype))
    if data_cache is not None and key in data_cache:
        data, device_data = data_cache[key]
    else:
        try:
            data = load_cifar10(args.data, download=args.download).subset(args.subset)
        except DataError as e:
            sys.exit(f"error: {e}")
        device_data = DeviceData.create(data, device, dtype)
        if data_cache is not None:
            data_cache[key] = (data, device_data)
    if recipe.batch_size > len(data.train_labels):
        recipe = recipe.replace(batch_size=len(data.train_labels))
        print(f"note: batch size reduced to {recipe.batch_size}, the number of training images")

    net = CifarNet(ops, head_scale=recipe.head_scale, bn_momentum=recipe.bn_momentum, bn_eps=recipe.bn_eps,
                   activation=recipe.activation, head_unit_std=recipe.head_unit_std,
                   zero_whiten_bias=recipe.zero_whiten_bias).to(device).to_training_dtype(dtype)
    try:
        fns = StepFunctions(net, args.compile, args.cuda_graph)
    except ValueError as e:
        sys.exit(f"error: {e}")
    env = environment(device)
    config = dict(recipe=recipe.name, ops=names, backend=args.backend, dtype=str(dtype).replace("torch.", ""),
                  batch_size=recipe.batch_size, epochs=args.epochs or recipe.epochs,
                  tta=recipe.tta_level if args.tta is None else args.tta, subset=args.subset, compile=args.compile,
                  cuda_graph=args.cuda_graph,
                  data=data.source, data_checksum=data.checksum,
                  train_images=len(data.train_labels), test_images=len(data.test_labels))
    return Setup(args, device, dtype, recipe, names, device_data, net, config, env, fns)


def describe(s: Setup) -> str:
    return (f"# {s.recipe.name} on {s.env['device']} | {s.config['dtype']} | ops: "
            + ", ".join(f"{k}={v}" for k, v in s.names.items())
            + (f" | compile={s.args.compile}" if s.args.compile != "none" else "")
            + (" | cuda-graph" if s.args.cuda_graph else "")
            + f" | {s.config['train_images']} train / {s.config['test_images']} test images")


def warmup(s: Setup, progress=None) -> float | None:
    """The untimed warm-up run (random labels); returns its wall time, or None when skipped."""
    default = 25 if s.device.type == "cuda" else (4 if s.args.compile != "none" else 0)
    steps = s.args.warmup_steps if s.args.warmup_steps is not None else default
    if steps <= 0:
        return None
    t0 = time.perf_counter()
    w = train_run(s.net, s.data, s.recipe, seed=s.args.seed + 10_000, dtype=s.dtype, epochs=s.args.epochs,
                  tta_level=s.args.tta, warmup_steps=steps, progress=progress, label="warm-up", fns=s.fns)
    dt = time.perf_counter() - t0
    what = ("compilation + " if s.args.compile != "none" else "") + ("CUDA graph capture + " if s.args.cuda_graph else "")
    print(f"warm-up ({what}{w['steps']} steps on random labels + TTA eval): {dt:.2f} s wall (not counted below)")
    if s.args.cache_dir and s.device.type == "cuda" and conv_kernels.chosen_configs():
        conv_kernels.save_choices(conv_choices_path(s.args.cache_dir))
    if s.args.compile != "none":
        stats = cache_stats()
        if stats:
            print("compile caches: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
    s.config["warmup_s"] = dt
    return dt


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    s = prepare(args)
    print(describe(s))
    if s.device.type == "cpu":
        print("# note: CPU timings say nothing about GPU speed")
    progress = Progress(args.progress)

    warmup(s, progress)

    results = []
    if not args.quiet:
        print(" ".join(f"{c:>10}" for c in COLUMNS))
    for r in range(args.runs):
        seed = args.seed + r

        def log(row, r=r):
            if not args.quiet:
                print(fmt_row(dict(row, run=r if row["epoch"] == 1 else "")), flush=True)

        res = train_run(s.net, s.data, s.recipe, seed=seed, dtype=s.dtype, epochs=args.epochs,
                        tta_level=args.tta, log=log, progress=progress, label=f"run {r + 1}/{args.runs}", fns=s.fns)
        print(fmt_row(dict(run=r if args.quiet else "", epoch="tta", tta_acc=res["accuracy"], time_s=res["time_s"])),
              flush=True)
        record = dict(config=s.config, env=s.env, run=r, **res)
        results.append(record)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "a") as f:
                f.write(json.dumps(record) + "\n")

    acc = summarize([100 * r["accuracy"] for r in results])
    t = summarize([r["time_s"] for r in results])
    print(f"accuracy (TTA, %): mean {acc.mean:.2f}  std {acc.std:.2f}  95% CI ±{acc.ci95:.2f}  (n={acc.n})"
          if acc.n > 1 else f"accuracy (TTA, %): {acc.mean:.2f}")
    print(f"time (s): min {t.min:.3f}  median {t.median:.3f}  max {t.max:.3f}  ({s.env['device']})")
    return results


if __name__ == "__main__":
    main()
