"""One training session, shared by train.py (the command line) and the profiling lab.

    parser = build_parser(); args = parse_args(argv)        # flags, checked: SessionError if wrong
    s = Session.prepare(args)        # ops, device, dtype, recipe, data on the device, net, step fns
    s.warmup(); res = s.train(seed)  # untimed warm-up (compilation, autotuning), then timed runs

``execute(configs, ...)`` runs many seeded runs of one or more configurations, spread over the
ranks of a torchrun job (model/distributed.py) when there are several: each rank trains whole
runs (run r on rank r mod K), rank 0 gathers every record and prints the table and summary.
Nothing here exits the process: errors are exceptions (SessionError for a bad flag, data or
device, with a one-line message), and train.py turns them into exit codes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field

import torch

import kernels
import kernels.conv as conv_kernels

from . import distributed
from .cli import Parser, SessionError, did_you_mean
from .compiled import (MODES as COMPILE_MODES, StepFunctions, cache_stats, check_modes, conv_choices_path,
                       use_cache_dir)
from .data import DataError, load_dataset
from .env import environment
from .net import build_net
from .recipes import DEFAULT, RECIPES, Recipe, get_recipe, recipes_help
from .stats import summarize
from .trainer import DeviceData, Progress, train_run

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
COLUMNS = ("run", "epoch", "train_loss", "train_acc", "val_acc", "tta_acc", "time_s")
SMOKE = "python train.py --device cpu --subset 2000 --batch-size 100 --epochs 2 --tta 0"
# what SMOKE reaches on the stand-in (2-core CPU, 4 runs): 56.1% mean (std 1.0), chance being 10%
CPU_ESTIMATE_AFTER_S = 60.0  # a CPU run predicted to take longer than this says so after its first steps
DESCRIPTION = """Train the CIFAR-10 speedrun network (airbench94) and report accuracy and time.
The published recipes reach 94% on the original CIFAR-10; the JPEG stand-in of ../shared/data
is harder (about 3 points lower): compare accuracy only with runs on the same data."""


def ops_help() -> str:
    lines = ["ops and implementations (--op OP=IMPL):"]
    for op in kernels.ops():
        for impl in kernels.impls(op):
            lines.append(f"  {op + '=' + impl:<16} {kernels.describe(op, impl)}")
    lines.append("backends (--backend): " + ", ".join(
        f"{b} ({', '.join(f'{o}={i}' for o, i in kernels.resolve_names(b).items())})" for b in kernels.backends()))
    lines.append("recipe fields (--set NAME=VALUE): " + ", ".join(settable_fields()))
    return recipes_help() + "\n" + "\n".join(lines)


def settable_fields() -> dict:
    return {f.name: f for f in dataclasses.fields(Recipe) if f.name not in ("name", "published", "network",
                                                                             "dataset", "optimizer")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of one training configuration (train.py's, and those of --a/--b/--vs in the lab)."""
    p.add_argument("--data", default="data", help="CIFAR-10 directory or .tar.gz (default: ./data)")
    p.add_argument("--download", action="store_true", help="download the original CIFAR-10 if absent")
    p.add_argument("--recipe", default=DEFAULT, choices=list(RECIPES),
                   help=f"training recipe and network (default: {DEFAULT}; published figures below)")
    p.add_argument("--target", type=target_arg, default=None, metavar="ACC",
                   help="time to accuracy: evaluate after each epoch (untimed, with the recipe's TTA) and stop at the "
                        f"first at or above ACC: a fraction (0.94) or a percentage (94 or 94%%); a bare number between "
                        f"1 and {TARGET_AMBIGUOUS_BELOW:g} is refused as a likely slip (write 1.5%% if you mean it)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override one recipe hyper-parameter, repeatable: --set lr=10 --set label_smoothing=0.1 "
                        "(fields listed below)")
    p.add_argument("--runs", type=int, default=1, help="independent training runs, seeds SEED..SEED+RUNS-1")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the first run (initialisation, batch order, augmentation); run i uses SEED+i")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="network precision; BatchNorm stays fp32 (default: fp16 on a GPU, fp32 on a CPU)")
    p.add_argument("--epochs", type=float, default=None, help="override the recipe's epochs (> 0; may be fractional)")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--subset", type=int, default=None,
                   help="only the first N training images and at most N test images (smoke runs)")
    p.add_argument("--tta", type=int, choices=(0, 1, 2), default=None,
                   help="test-time augmentation: 0 = none, 1 = + horizontal flip, 2 = + flip and 1-pixel "
                        "translations (default: the recipe's, 2)")
    p.add_argument("--backend", default="eager", help=f"op backend: {', '.join(kernels.backends())}")
    p.add_argument("--op", action="append", default=[], metavar="OP=IMPL",
                   help="per-op implementation, repeatable (see the list below)")
    p.add_argument("--compile", default="none", choices=COMPILE_MODES,
                   help="torch.compile forward + loss (one fullgraph; AOTAutograd builds the backward), the optimizer "
                        "update with its schedules and Newton-Schulz (a second fullgraph) and the eval forward: "
                        "default, reduce-overhead (inductor's CUDA graphs), max-autotune (as published), "
                        "max-autotune-no-cudagraphs; none = eager (default)")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture each whole training step (batch gather, forward, backward, optimizer update and "
                        "schedules) in a CUDA graph and replay it: no host sync, allocation or Python per step. "
                        "GPU only; combines with --compile none, default or max-autotune-no-cudagraphs")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="persistent compile caches (inductor FX graphs, AOTAutograd, autotuning, Triton) under DIR")
    p.add_argument("--allow-interpreter", action="store_true",
                   help="on a CPU, run a Triton conv (conv=triton or fp8: --backend triton_all, fp8) in the Triton "
                        "interpreter anyway: about 30 s per step at batch 2, hours at the recipe's batch; "
                        "refused without this flag")
    p.add_argument("--warmup-steps", type=int, default=None,
                   help="untimed warm-up run length in steps, random labels "
                        "(default: 25 on a GPU; on a CPU 4 with --compile, else 0)")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="train.py", description=DESCRIPTION, epilog=ops_help(),
               formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("--sweep", default=None, metavar="FILE.toml",
                   help="train every configuration of a TOML sweep file (see README), --runs each; the flags "
                        "given here are the base that the file's [base] and [grid] override")
    p.add_argument("--json", default=None, metavar="PATH", help="append one JSON record per run to PATH")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress line on stderr (default: when stderr is a terminal)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch table: one line per run, then the summary")
    return p


def parse_recipe_sets(items: list[str]) -> dict:
    """``--set NAME=VALUE`` items -> {field: typed value}; SessionError names a bad one."""
    fields = settable_fields()
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not value.strip():
            raise SessionError(f"--set expects NAME=VALUE, got {item!r}")
        if name not in fields:
            raise SessionError(f"--set: unknown recipe field {name!r}{did_you_mean(name, fields)}; "
                               f"known: {', '.join(fields)}")
        kind = type(getattr(RECIPES[DEFAULT], name))
        try:
            if kind is tuple:
                elem = type(getattr(RECIPES[DEFAULT], name)[0])
                out[name] = tuple(elem(v) for v in value.split(","))
                continue
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                out[name] = value.lower() in ("true", "1")
            else:
                out[name] = kind(value)
        except ValueError:
            raise SessionError(f"--set {name}: {value!r} is not a {kind.__name__}") from None
    return out


def check_args(args: argparse.Namespace) -> None:
    """Everything about the flags that can be checked before any work: raises SessionError."""
    def positive(flag, value, minimum=1, what="at least 1"):
        if value is not None and value < minimum:
            raise SessionError(f"{flag} must be {what} (got {value:g})")

    positive("--runs", args.runs)
    positive("--subset", args.subset)
    positive("--batch-size", args.batch_size)
    positive("--warmup-steps", args.warmup_steps, 0, "0 or more")
    if args.epochs is not None and not (args.epochs > 0 and math.isfinite(args.epochs)):
        raise SessionError(f"--epochs must be positive (got {args.epochs:g})")
    if args.target is not None and not 0 < target_fraction(args.target) <= 1:
        raise SessionError(f"--target must be an accuracy in (0, 1] or (0, 100] percent (got {args.target:g})")
    try:
        names = kernels.resolve_names(args.backend, kernels.parse_overrides(args.op))
    except kernels.UnknownNameError as e:
        raise SessionError(str(e)) from None
    parse_recipe_sets(args.set)
    device = device_of(args)
    if device.type == "cpu" and names["conv"] in INTERPRETED_CONVS and not getattr(args, "allow_interpreter", False):
        raise SessionError(interpreter_refusal(args, names))
    for flag, path in (("--cache-dir", args.cache_dir),):
        if path and os.path.exists(path) and not os.path.isdir(path):
            raise SessionError(f"{flag} {path} is not a directory")
    if getattr(args, "json", None):
        check_writable(args.json)


TARGET_AMBIGUOUS_BELOW = 20.0  # a bare --target in (1, 20) is almost surely a slip (1.5 for 0.015?): ask for "%"


def target_arg(text: str) -> float:
    """--target's value as a fraction: ``0.94``, ``94`` and ``94%`` all mean 94%. A bare number
    between 1 and 20 would read as a percentage no speedrun aims at (``--target 1.5`` was reached
    after one epoch): it is refused unless written with its percent sign."""
    s = str(text).strip()
    percent = s.endswith("%")
    try:
        v = float(s[:-1] if percent else s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an accuracy: write 0.94, 94 or 94%") from None
    if not percent and 1 < v < TARGET_AMBIGUOUS_BELOW:
        raise argparse.ArgumentTypeError(
            f"{s} would mean {v:g}%, almost surely a slip: write 0.94, 94 or 94% for 94%, or {v:g}% if you mean it")
    frac = v / 100 if percent or v > 1 else v
    if not (0 < frac <= 1 and math.isfinite(frac)):
        raise argparse.ArgumentTypeError(f"must be an accuracy in (0, 1] or (0, 100] percent (got {s})")
    return frac


INTERPRETED_CONVS = ("triton", "fp8")  # conv implementations that a CPU runs in the Triton interpreter
# Measured on this project's CPU machine (2 cores, triton 3.8 interpreter, airbench94_muon, fp32, the
# stand-in, one process): --backend triton_all took 25-33 s per training step at batch 2 and 54-64 s at
# batch 6, so a step costs about INTERP_STEP_S + INTERP_IMAGE_S x batch seconds (fp8: about the same).
INTERP_STEP_S = 15.0
INTERP_IMAGE_S = 7.5
# bn_act / maxpool in Triton (--backend triton, conv on ATen): 3 steps of batch 100 took 43 s (eager: 0.5 s a
# step), about INTERP_MEMBOUND_IMAGE_S per image per step; allowed, but announced before the first step
INTERP_MEMBOUND_IMAGE_S = 0.13
INTERPRETED = ("triton", "triton_recompute", "fp8")  # implementations that run in the interpreter on a CPU
INTERP_SMOKE = ("python train.py --device cpu {which} --subset 8 --batch-size 2 --epochs 1 --tta 0 "
                "--allow-interpreter")


def interpreter_cost_s(batch: int, names: dict) -> float:
    """Predicted seconds per training step spent in the Triton interpreter on a CPU (from the
    measurements above): a Triton conv's cost, plus bn_act / maxpool's when they are Triton too."""
    s = INTERP_STEP_S + INTERP_IMAGE_S * batch if names.get("conv") in INTERPRETED_CONVS else 0.0
    if any(names.get(op) in INTERPRETED for op in ("bn_act", "maxpool")):
        s += INTERP_MEMBOUND_IMAGE_S * batch
    return s


def interpreter_refusal(args: argparse.Namespace, names: dict) -> str:
    """Why a Triton conv on a CPU is refused without --allow-interpreter, with a smoke command."""
    impl = names["conv"]
    which = f"--backend {args.backend}" if args.backend in ("triton_all", "fp8") else f"--op conv={impl}"
    batch = args.batch_size or get_recipe(args.recipe).batch_size
    return (f"{which} on a CPU runs the Triton conv in the Triton interpreter: about "
            f"{fmt_duration(interpreter_cost_s(batch, names))} per training step at batch {batch} (measured on a 2-core "
            f"CPU). "
            f"Smoke run (a few minutes): {INTERP_SMOKE.format(which=which)}; or add --allow-interpreter to run this "
            f"one anyway")


def target_fraction(t: float | None) -> float | None:
    """--target as a fraction: 0.94 and 94 both mean 94%."""
    if t is None:
        return None
    return t / 100 if t > 1 else t


def device_of(args: argparse.Namespace) -> torch.device:
    if args.device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise SessionError(f"--device {args.device!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise SessionError(f"--device {args.device!r}: this lab trains on cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SessionError(f"--device {args.device} asked for, but no CUDA GPU is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SessionError(f"--device {args.device}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def check_writable(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as e:
        raise SessionError(f"--json: cannot write {path}: {e.strerror or e}") from None


def append_record(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Parse and check one configuration's flags (argparse exits on a malformed flag)."""
    args = (parser or build_parser()).parse_args(argv)
    check_args(args)
    return args


def fmt_row(values: dict) -> str:
    out = []
    for c in COLUMNS:
        v = values.get(c, "")
        out.append(f"{v:>10.4f}" if isinstance(v, float) else f"{v!s:>10}")
    return " ".join(out)


# the table's own names where the record's key would mislead: the time column is cumulative (whitening,
# training epochs so far, then the final TTA evaluation), not the epoch's own time
SHOWN = {"time_s": "cum_time_s"}


def header() -> str:
    return " ".join(f"{SHOWN.get(c, c):>10}" for c in COLUMNS)


def epoch_row(run: int, row: dict) -> str:
    return fmt_row(dict(row, run=run if row["epoch"] == 1 else ""))


def final_row(run: int, res: dict, quiet: bool) -> str:
    return fmt_row(dict(run=run if quiet else "", epoch="tta", tta_acc=res["accuracy"], time_s=res["time_s"]))


def summary_lines(records: list[dict]) -> list[str]:
    ok = [r for r in records if not r.get("failed")]
    if not ok:
        return ["no run finished"]
    acc = summarize([100 * r["accuracy"] for r in ok])
    t = summarize([r["time_s"] for r in ok])
    lines = [f"accuracy (TTA, %): mean {acc.mean:.2f}  std {acc.std:.2f}  95% CI ±{acc.ci95:.2f}  (n={acc.n})"
             if acc.n > 1 else f"accuracy (TTA, %): {acc.mean:.2f}",
             f"time (s): min {t.min:.3f}  median {t.median:.3f}  max {t.max:.3f}  ({ok[0]['env']['device']})"]
    if ok[0].get("target") is not None:
        hit = [r for r in ok if r.get("reached")]
        tt = summarize([r["time_to_target_s"] for r in hit]) if hit else None
        lines.append(f"time to {100 * ok[0]['target']:.2f}%: reached in {len(hit)}/{len(ok)} runs"
                     + (f"; median {tt.median:.3f} s, mean {tt.mean:.3f} s" if tt else ""))
    recipe = RECIPES.get(ok[0]["config"]["recipe"])
    if recipe is not None and recipe.published is not None:
        lines.append(recipe.published.line() + ("; on the original data set (the JPEG stand-in of ../shared/data "
                                                "is about 3 points harder)" if recipe.dataset == "cifar10" else ""))
    return lines


class CpuEstimate:
    """On a CPU: one line when the first timed step starts (a CPU step at the recipe's batch takes
    seconds, and nothing else would be printed meanwhile), then, as soon as one step past the
    first (which carries one-off work) has been timed, how long the run will take and the
    smoke-run command when that is longer than a minute. Printed once per process."""
    shown = False
    started = False

    def __init__(self, progress: Progress, runs: int = 1, what: str = "this run", batch: int | None = None):
        self.progress, self.runs, self.what, self.batch = progress, runs, what, batch
        self.t0 = self.n0 = None

    def start(self, total: int) -> None:
        """Just before the first step of the first run: say that training has started."""
        if CpuEstimate.started or CpuEstimate.shown:
            return
        CpuEstimate.started = True
        batch = f" of batch {self.batch}" if self.batch else ""
        self.progress.print(f"# training: first step started ({total} steps{batch} on this CPU); an estimate of "
                            f"the run's length follows after the first steps")

    def __call__(self, step: int, total: int) -> None:
        if step == 0:
            return self.start(total)
        if CpuEstimate.shown:
            return
        now = time.perf_counter()
        if self.t0 is None:  # the first step includes one-off work (whitening, allocation)
            self.t0, self.n0 = now, step
            return
        if step - self.n0 < 3 and now - self.t0 < 2:  # quick steps: average a few before saying anything
            return
        per_step = (now - self.t0) / (step - self.n0)
        total_s = per_step * total * 1.05  # + evaluation
        if total_s * self.runs < CPU_ESTIMATE_AFTER_S:
            return
        CpuEstimate.shown = True
        runs = f" (x {self.runs} runs: about {fmt_duration(total_s * self.runs)})" if self.runs > 1 else ""
        self.progress.print(f"estimate: {self.what} takes about {fmt_duration(total_s)} on this CPU "
                            f"({per_step:.2f} s/step x {total} steps){runs}. A GPU takes seconds; for a smoke "
                            f"run here: {SMOKE}")


def fmt_duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")


@dataclass
class Session:
    """Everything one training configuration needs, built from its flags."""
    args: argparse.Namespace
    device: torch.device
    dtype: torch.dtype
    recipe: Recipe
    names: dict
    data: DeviceData
    net: torch.nn.Module
    config: dict
    env: dict
    fns: StepFunctions
    notes: list = field(default_factory=list)

    @classmethod
    def prepare(cls, args: argparse.Namespace, data_cache: dict | None = None) -> "Session":
        """Resolve ops, device, dtype and recipe, load the data onto the device, build the
        network and its step functions. ``data_cache`` lets configurations in one process share
        the loaded data. Raises SessionError with a one-line message."""
        check_args(argparse.Namespace(**{**vars(args), "json": None}))
        names = kernels.resolve_names(args.backend, kernels.parse_overrides(args.op))
        ops = {op: kernels.get(op, impl) for op, impl in names.items()}
        device = device_of(args)
        try:
            check_modes(args.compile, args.cuda_graph, device)
        except ValueError as e:
            raise SessionError(str(e)) from None
        dtype = DTYPES[args.dtype or ("fp16" if device.type == "cuda" else "fp32")]
        notes = []
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if args.cache_dir:
            try:
                use_cache_dir(args.cache_dir)
            except OSError as e:
                raise SessionError(f"--cache-dir {args.cache_dir}: {e.strerror or e}") from None
            if device.type == "cuda":  # the Triton conv's timed configurations of an earlier process
                n = conv_kernels.load_choices(conv_choices_path(args.cache_dir))
                if n:
                    notes.append(f"conv autotuning: {n} timed configurations reused from "
                                 f"{conv_choices_path(args.cache_dir)}")

        recipe = get_recipe(args.recipe).replace(batch_size=args.batch_size, **parse_recipe_sets(args.set))
        slow = [f"{op}={impl}" for op, impl in names.items() if impl in INTERPRETED]
        if device.type == "cpu" and slow:  # said before the first step (a Triton conv needs --allow-interpreter)
            notes.append(f"note: {', '.join(slow)} run{'s' if len(slow) == 1 else ''} in the Triton interpreter on "
                         f"this CPU: about {fmt_duration(interpreter_cost_s(recipe.batch_size, names))} per training "
                         f"step at batch {recipe.batch_size} (measured on a 2-core CPU)")
        key = (recipe.dataset, args.data, args.subset, str(device), str(dtype))
        if data_cache is not None and key in data_cache:
            data, device_data = data_cache[key]
        else:
            try:
                data = load_dataset(recipe.dataset, args.data, download=args.download).subset(args.subset)
            except DataError as e:
                raise SessionError(str(e)) from None
            device_data = DeviceData.create(data, device, dtype)
            if data_cache is not None:
                data_cache[key] = (data, device_data)
        if recipe.batch_size > len(data.train_labels):
            recipe = recipe.replace(batch_size=len(data.train_labels))
            notes.append(f"note: batch size reduced to {recipe.batch_size}, the number of training images")

        if recipe.whiten_images > len(data.train_labels):
            recipe = recipe.replace(whiten_images=len(data.train_labels))
        net = build_net(ops, recipe).to(device).to_training_dtype(dtype, recipe.bn_half)
        try:
            fns = StepFunctions(net, args.compile, args.cuda_graph)
        except ValueError as e:
            raise SessionError(str(e)) from None
        env = environment(device)
        config = dict(recipe=recipe.name, ops=names, backend=args.backend, dtype=str(dtype).replace("torch.", ""),
                      batch_size=recipe.batch_size, epochs=float(args.epochs or recipe.epochs),
                      tta=recipe.tta_level if args.tta is None else args.tta, subset=args.subset,
                      compile=args.compile, cuda_graph=args.cuda_graph, recipe_overrides=parse_recipe_sets(args.set),
                      target=target_fraction(args.target), dataset=recipe.dataset,
                      data=data.source, data_checksum=data.checksum,
                      train_images=len(data.train_labels), test_images=len(data.test_labels))
        return cls(args, device, dtype, recipe, names, device_data, net, config, env, fns, notes)

    def describe(self) -> str:
        return (f"# {self.recipe.name} on {self.env['device']} | {self.config['dtype']} | ops: "
                + ", ".join(f"{k}={v}" for k, v in self.names.items())
                + (f" | compile={self.args.compile}" if self.args.compile != "none" else "")
                + (" | cuda-graph" if self.args.cuda_graph else "")
                + "".join(f" | {k}={v}" for k, v in self.config["recipe_overrides"].items())
                + f" | {self.config['train_images']} train / {self.config['test_images']} test images")

    def warmup(self, progress: Progress | None = None, say=print) -> float | None:
        """The untimed warm-up run (random labels); returns its wall time, or None when skipped."""
        args = self.args
        default = 25 if self.device.type == "cuda" else (4 if args.compile != "none" else 0)
        steps = args.warmup_steps if args.warmup_steps is not None else default
        if steps <= 0:
            return None
        t0 = time.perf_counter()
        w = train_run(self.net, self.data, self.recipe, seed=args.seed + 10_000, dtype=self.dtype, epochs=args.epochs,
                      tta_level=args.tta, warmup_steps=steps, progress=progress, label="warm-up", fns=self.fns)
        dt = time.perf_counter() - t0
        what = ("compilation + " if args.compile != "none" else "") + ("CUDA graph capture + " if args.cuda_graph else "")
        say(f"warm-up ({what}{w['steps']} step{'' if w['steps'] == 1 else 's'} on random labels + TTA eval): "
            f"{dt:.2f} s wall (not counted below)")
        if args.cache_dir and self.device.type == "cuda" and conv_kernels.chosen_configs():
            conv_kernels.save_choices(conv_choices_path(args.cache_dir))
        if args.compile != "none":
            stats = cache_stats()
            if stats:
                say("compile caches: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
        self.config["warmup_s"] = dt
        return dt

    def train(self, seed: int, log=None, progress: Progress | None = None, label: str = "", on_step=None) -> dict:
        """One timed run from a fresh initialisation with ``seed``."""
        a = self.args
        return train_run(self.net, self.data, self.recipe, seed=seed, dtype=self.dtype, epochs=a.epochs,
                         tta_level=a.tta, log=log, progress=progress, label=label, fns=self.fns, on_step=on_step,
                         target=target_fraction(getattr(a, "target", None)))


@dataclass
class Config:
    """One configuration of a sweep (or the only one): a name and its train.py flags."""
    name: str
    argv: list
    args: argparse.Namespace | None = None


@dataclass
class Outcome:
    records: list       # every run's record, successes and failures, in (configuration, run) order
    interrupted: bool = False
    write_failed: bool = False  # a record could not be written to --json

    @property
    def failures(self) -> list:
        return [r for r in self.records if r.get("failed")]


def fp8_counts() -> dict | None:
    """The fp8 layers' counts so far (kernels/fp8.py: launches that saw NaN / inf, launches that
    saturated a value beyond their delayed scale), or None when no fp8 layer has run."""
    from kernels import fp8
    return fp8.counts()


def with_fp8_counts(res: dict, before: dict | None) -> dict:
    """``res`` with this run's fp8 counts (``fp8``: nonfinite, saturated) when an fp8 layer ran."""
    after = fp8_counts()
    if after is None:
        return res
    before = before or dict(nonfinite=0, saturated=0)
    return dict(res, fp8={k: after[k] - before[k] for k in after})


def failure_record(cfg_index: int, cfg: Config, run: int, seed: int, exc: BaseException, rank: int) -> dict:
    kind = "out of memory" if isinstance(exc, torch.OutOfMemoryError) else type(exc).__name__
    return dict(failed=True, sweep=dict(index=cfg_index, name=cfg.name), flags=cfg.argv, run=run, seed=seed,
                rank=rank, error=f"{kind}: {exc}".splitlines()[0],
                traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:])


class Printer:
    """Output of one process: everything on rank 0 of a one-process job; in a torchrun job the
    table comes from rank 0 after the gather, and the ranks only say which run finished."""

    def __init__(self, world: distributed.World, quiet: bool, progress: Progress):
        self.world, self.quiet, self.progress = world, quiet, progress
        self.live = world.size == 1

    def say(self, text: str) -> None:
        if self.live:
            self.progress.print(text)
        elif self.world.rank == 0 or not text.startswith(("#", "warm-up", "compile caches")):
            self.progress.print(f"[rank {self.world.rank}] {text}", file=sys.stderr)

    def row(self, text: str) -> None:
        if self.live:
            self.progress.print(text)


def _keep(record: dict, json_path: str | None, world: distributed.World) -> bool:
    """Append a record as soon as its run finishes; on a write error keep going and say so."""
    if not json_path:
        return True
    path = json_path if world.size == 1 else distributed.partial_path(json_path, world.rank)
    try:
        append_record(path, record)
        return True
    except OSError as e:
        print(f"warning: could not write the record of run {record['run']} to {path}: {e.strerror or e}; "
              "the records written before it are kept, this one is printed only", file=sys.stderr, flush=True)
        return False


def execute(configs: list[Config], runs: int, *, world: distributed.World | None = None, json_path: str | None = None,
            quiet: bool = False, progress: Progress | None = None, interleave: bool = False,
            strict: bool = False) -> Outcome:
    """Train ``runs`` seeded runs of every configuration. Run r of every configuration goes to
    rank r mod K (so the seeds and results do not depend on K, and an A/B pair shares a GPU).
    ``interleave``: prepare every configuration first, then train A0 B0 A1 B1 ... (A/B runs);
    otherwise one configuration after the other, each dropped when done. A configuration that
    fails to build, or a run that raises, becomes a failure record; the rest goes on (``strict``:
    a SessionError while building is raised instead: one configuration, a usage error). Returns
    the gathered records on rank 0 (the local ones elsewhere)."""
    world = world or distributed.World.single()
    progress = progress or Progress(False)
    ex = _Execution(configs, runs, world, json_path, quiet, progress, interleave, strict,
                    Printer(world, quiet, progress))
    interrupted = False
    try:
        ex.run_mine([r for r in range(runs) if r % world.size == world.rank])
    except KeyboardInterrupt:
        interrupted = True
        ex.say_interrupted()
    outcome = Outcome(ex.records, interrupted, ex.write_failed)
    if world.size > 1 and not interrupted:
        _gather(outcome, world, json_path)
    return outcome


@dataclass
class _Execution:
    """The state of one ``execute``: the configurations built so far (or the error that building
    one raised), the records kept, and whether writing one failed."""
    configs: list[Config]
    runs: int
    world: distributed.World
    json_path: str | None
    quiet: bool
    progress: Progress
    interleave: bool
    strict: bool
    out: Printer
    records: list = field(default_factory=list)
    sessions: dict = field(default_factory=dict)
    data_cache: dict = field(default_factory=dict)
    write_failed: bool = False

    def run_mine(self, mine: list[int]) -> None:
        """This rank's runs: interleaved across configurations, or one configuration after the other."""
        if mine and self.interleave:
            for i, cfg in enumerate(self.configs):
                self.build(i, cfg)
            for r in mine:
                for i, cfg in enumerate(self.configs):
                    self.one(i, cfg, r)
        elif mine:
            for i, cfg in enumerate(self.configs):
                self.build(i, cfg)
                if not self.quiet:  # each configuration's own table
                    self.out.row(header())
                for r in mine:
                    self.one(i, cfg, r)
                self.sessions.pop(i, None)

    def build(self, i: int, cfg: Config):
        """Configuration i's Session, prepared and warmed up once (or the exception that stopped it)."""
        if i in self.sessions:
            return self.sessions[i]
        out = self.out
        try:
            s = Session.prepare(cfg.args, self.data_cache)
            if len(self.configs) > 1:
                out.say(f"## {cfg.name}")
            out.say(s.describe())
            for note in s.notes:
                out.say(note)
            if s.device.type == "cpu" and i == 0:
                out.say("# note: CPU timings say nothing about GPU speed")
            s.warmup(self.progress, say=out.say)
        except SessionError:
            if self.strict:
                raise
            s = sys.exc_info()[1]
        except Exception as e:  # a bad configuration: every run of it here fails, the rest goes on
            s = e
        self.sessions[i] = s
        return s

    def one(self, i: int, cfg: Config, r: int) -> None:
        """Run r of configuration i: its record (or failure record) printed, kept and written."""
        seed = cfg.args.seed + r
        s = self.build(i, cfg)
        try:
            if isinstance(s, BaseException):
                raise s
            res = self.train(s, cfg, r, seed)
        except KeyboardInterrupt:
            raise
        except Exception as e:
            rec = failure_record(i, cfg, r, seed, e, self.world.rank)
            self.out.say(f"FAILED: {cfg.name or 'run'} run {r} (seed {seed}): {rec['error']}")
            if s is not None and not isinstance(s, BaseException) and s.device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            rec = self.success(s, i, cfg, r, seed, res)
        self.records.append(rec)
        if not _keep(rec, self.json_path, self.world):
            self.write_failed = True

    def train(self, s: Session, cfg: Config, r: int, seed: int) -> dict:
        estimate = (CpuEstimate(self.progress, runs=self.runs, what="this run", batch=s.recipe.batch_size)
                    if s.device.type == "cpu" else None)
        live = not (self.quiet or self.interleave)
        fp8_before = fp8_counts()
        res = s.train(seed, log=(lambda row: self.out.row(epoch_row(r, row))) if live else None,
                      progress=self.progress, on_step=estimate,
                      label=f"{cfg.name + ' ' if len(self.configs) > 1 else ''}run {r + 1}/{self.runs}")
        return with_fp8_counts(res, fp8_before)

    def success(self, s: Session, i: int, cfg: Config, r: int, seed: int, res: dict) -> dict:
        out = self.out
        rec = dict(config=s.config, env=s.env, run=r, rank=self.world.rank, **res)
        if len(self.configs) > 1 or cfg.name:
            rec["sweep"] = dict(index=i, name=cfg.name)
        if self.interleave:  # configurations alternate: one labelled line per run instead of a table
            out.say(f"  run {r} {cfg.name}: {res['time_s']:.3f} s  {100 * res['accuracy']:.2f}%")
        else:
            out.row(final_row(r, res, self.quiet))
        if not out.live:
            out.say(f"{cfg.name + ': ' if cfg.name else ''}run {r} (seed {seed}) done: "
                    f"{100 * res['accuracy']:.2f}%  {res['time_s']:.3f} s")
        return rec

    def say_interrupted(self) -> None:
        world, json_path = self.world, self.json_path
        self.progress.clear()
        where = (f"; the records written so far are in {json_path if world.size == 1 else distributed.partial_path(json_path, world.rank)}"
                 if json_path else "")
        print(f"interrupted{f' (rank {world.rank})' if world.size > 1 else ''}: {len(self.records)} run(s) finished"
              + where, file=sys.stderr, flush=True)


def _gather(outcome: Outcome, world: distributed.World, json_path: str | None) -> None:
    """Every rank's records onto rank 0, in sweep and run order, written to ``json_path`` there."""
    gathered = world.gather(outcome.records)
    if world.rank == 0:
        outcome.records = sorted(gathered, key=lambda r: (r.get("sweep", {}).get("index", 0), r["run"]))
        if json_path:
            try:
                for rec in outcome.records:
                    append_record(json_path, rec)
            except OSError as e:
                outcome.write_failed = True
                print(f"warning: could not write {json_path}: {e.strerror or e}; each rank's records are kept in "
                      f"{distributed.partial_path(json_path, 'N')}", file=sys.stderr)
    world.barrier()
    if json_path and not outcome.write_failed:
        distributed.remove_partial(json_path, world.rank)


def render_table(records: list[dict], quiet: bool) -> list[str]:
    """The per-epoch table of the records, as a one-process run prints it live."""
    lines = [] if quiet else [header()]
    for rec in records:
        if rec.get("failed"):
            continue
        if not quiet:
            lines += [epoch_row(rec["run"], row) for row in rec["per_epoch"]]
        lines.append(final_row(rec["run"], rec, quiet))
    return lines


def report(outcome: Outcome, configs: list[Config], quiet: bool, live: bool) -> list[str]:
    """The lines rank 0 prints at the end: the table (when not printed live), the summary of
    each configuration, the failures, and for a sweep one row per configuration."""
    lines = []
    by_cfg = {i: [r for r in outcome.records if r.get("sweep", {}).get("index", 0) == i] for i in range(len(configs))}
    for i, cfg in enumerate(configs):
        recs = by_cfg[i]
        if len(configs) > 1:
            lines.append(f"## {cfg.name}")
        if not live:
            lines += render_table(recs, quiet)
        lines += summary_lines(recs)
    if len(configs) > 1:
        lines.append("")
        lines.append(f"{'configuration':<40} {'runs':>5} {'failed':>6} {'acc mean %':>10} {'95% CI':>8} "
                     f"{'median s':>9}")
        for i, cfg in enumerate(configs):
            ok = [r for r in by_cfg[i] if not r.get("failed")]
            bad = len(by_cfg[i]) - len(ok)
            if ok:
                acc = summarize([100 * r["accuracy"] for r in ok])
                t = summarize([r["time_s"] for r in ok])
                lines.append(f"{cfg.name:<40} {len(ok):>5} {bad:>6} {acc.mean:>10.2f} {'±%.2f' % acc.ci95 if acc.n > 1 else '-':>8} "
                             f"{t.median:>9.3f}")
            else:
                lines.append(f"{cfg.name:<40} {0:>5} {bad:>6} {'-':>10} {'-':>8} {'-':>9}")
    for f in outcome.failures:
        lines.append(f"FAILED: {f['sweep']['name'] or 'configuration'} run {f['run']} (seed {f['seed']}, rank "
                     f"{f['rank']}): {f['error']}")
    return lines
