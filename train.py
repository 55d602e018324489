#!/usr/bin/env python
"""Train the CIFAR-10 speedrun network (airbench94) and report accuracy and time.

    python train.py                               # airbench94_muon, eager ops, one run
    python train.py --runs 10 --json runs.jsonl   # accuracy mean/std/95% CI, time min/median/max
    python train.py --backend triton --op conv=eager
    python train.py --compile default --cuda-graph --cache-dir ~/.cache/speedrun   # compiled, graphed (GPU)
    python train.py --data DIR --device cpu --subset 2000 --batch-size 100 --epochs 2 --tta 0   # CPU smoke run
    python train.py --sweep sweep.toml --runs 20 --json sweep.jsonl    # a grid of configurations
    torchrun --nproc-per-node 8 train.py --runs 200 --json runs.jsonl  # runs spread over 8 GPUs

Data: DIR holds cifar-10-batches-py/ or cifar-10-python.tar.gz (the original python layout);
--download fetches the original with torchvision; ../shared/data/make_cifar10.py DIR writes
the JPEG stand-in in the same layout.

This file is the command line only: the session (flags -> ops, device, data, network, step
functions; warm-up; the runs) is model/training/ (config.py, session.py, execute.py), shared with the profiling lab.
Exit status: 0 when every run finished, 1 when a run or configuration failed (the others are
still reported and written), 2 for bad input (a flag, the data, the device: one line naming it),
130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys

from model.cli import SessionError, usage_error
from model.training import distributed, sweep
from model.training.config import TrainConfig, build_parser, check_writable
from model.training.execute import Config, execute, report
from model.training.trainer import Progress

__all__ = ["main", "build_parser"]


def configurations(parser: argparse.ArgumentParser, args, argv: list[str]) -> tuple[list[Config], int]:
    """The configurations to train and the runs of each: the flags alone, or a sweep file's grid
    over them. Every configuration's flags are checked here, before any work."""
    if not args.sweep:
        return [Config("", argv, TrainConfig.from_args(args))], args.runs
    try:
        entries, runs = sweep.load(args.sweep, parser)
    except sweep.SweepError as e:
        raise SessionError(str(e)) from None
    configs = []
    for name, flags in entries:
        try:
            train = TrainConfig.from_args(parser.parse_args(argv + flags))
        except SessionError as e:
            raise SessionError(f"sweep configuration {name!r}: {e}") from None
        configs.append(Config(name, flags, train))
    return configs, runs or args.runs


def main(argv: list[str] | None = None) -> list[dict]:
    """Train; returns the records (rank 0 of a torchrun job: all of them). Bad input (a flag, the
    data, the device) exits with one line ``error: ...`` and status 2 before any work; a failed
    run exits with status 1 after the report."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        world = distributed.World.from_env()
        configs, runs = configurations(parser, args, argv)
        for cfg in configs:
            cfg.train = cfg.train.replace(device=world.device(cfg.train.device))
        if args.json:
            check_writable(args.json if world.size == 1 else distributed.partial_path(args.json, world.rank))
    except SessionError as e:
        raise usage_error(str(e)) from None
    progress = Progress(args.progress if world.rank == 0 else False)
    if world.size > 1 and world.rank == 0:
        print(f"# torchrun job: {world.size} ranks, {runs} run(s) x {len(configs)} configuration(s), "
              f"run r on rank r mod {world.size}", file=sys.stderr)
    try:
        # without a sweep, a configuration that cannot be built (data, device) is a usage error
        outcome = execute(configs, runs, world=world, json_path=args.json, quiet=args.quiet, progress=progress,
                          strict=not args.sweep)
    except SessionError as e:
        world.close()
        raise usage_error(str(e)) from None
    code = 0
    if world.rank == 0 and not (outcome.interrupted and not outcome.records):  # "interrupted: 0 run(s)" says it all
        for line in report(outcome, configs, args.quiet, live=world.size == 1):
            print(line)
        if outcome.failures:
            print(f"{len(outcome.failures)} run(s) failed" + (f"; every record is in {args.json}" if args.json else ""))
    if outcome.interrupted:
        code = 130
    elif outcome.failures or outcome.write_failed:
        code = 1
    world.close()
    if code:
        sys.exit(code)
    return outcome.records


if __name__ == "__main__":
    main()
