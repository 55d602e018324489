"""One training configuration: train.py's flags (``add_arguments``, ``build_parser``) and the
typed, checked configuration they make (``TrainConfig``), which a sweep entry or a Python caller
makes the same way. Nothing here exits the process: a bad value is a SessionError with one line.

    cfg = TrainConfig.from_flags(["--backend", "triton", "--set", "muon_lr=0.3"])
    cfg = TrainConfig(recipe="airbench94_muon", backend="triton", recipe_sets={"muon_lr": 0.3}).check()
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from dataclasses import dataclass, field

import torch

import kernels

from ..cli import Parser, SessionError, did_you_mean
from ..recipes import DEFAULT, RECIPES, Recipe, get_recipe, recipes_help
from .compiled import MODES as COMPILE_MODES

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}

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
    p.add_argument("--fast", action="store_true",
                   help="the fastest known configuration for this GPU: sets --backend, --compile and --cuda-graph "
                        "from a GPU report when one exists, else from the static model's predicted step "
                        "(reports/static); printed in full. Not with --backend, --op or --compile")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="persistent compile caches (inductor FX graphs, AOTAutograd, autotuning, Triton) under DIR")
    p.add_argument("--allow-interpreter", action="store_true",
                   help="on a CPU, run a Triton conv (conv=triton or fp8, conv_block=triton_fused: --backend "
                        "triton_all, fp8, fused) in the Triton "
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


INTERPRETED_CONVS = ("triton", "fp8", "triton_small")  # conv implementations that a CPU runs in the Triton interpreter


# Measured on this project's CPU machine (2 cores, triton 3.8 interpreter, airbench94_muon, fp32, the
# stand-in, one process): --backend triton_all took 25-33 s per training step at batch 2 and 54-64 s at
# batch 6, so a step costs about INTERP_STEP_S + INTERP_IMAGE_S x batch seconds (fp8: about the same).
INTERP_STEP_S = 15.0


INTERP_IMAGE_S = 7.5


# bn_act / maxpool in Triton (--backend triton, conv on ATen): 3 steps of batch 100 took 43 s (eager: 0.5 s a
# step), about INTERP_MEMBOUND_IMAGE_S per image per step; allowed, but announced before the first step
INTERP_MEMBOUND_IMAGE_S = 0.13


INTERPRETED = ("triton", "triton_recompute", "fp8", "triton_fused")  # implementations the interpreter runs on a CPU
INTERPRETED_BLOCKS = ("triton_fused",)  # conv_block implementations with a Triton conv inside


def triton_conv(names: dict) -> str | None:
    """``op=impl`` of the Triton conv a mapping runs (a conv or a fused conv block), or None."""
    if names.get("conv") in INTERPRETED_CONVS:
        return f"conv={names['conv']}"
    if names.get("conv_block") in INTERPRETED_BLOCKS:
        return f"conv_block={names['conv_block']}"
    return None


INTERP_SMOKE = ("python train.py --device cpu {which} --subset 8 --batch-size 2 --epochs 1 --tta 0 "
                "--allow-interpreter")


def interpreter_cost_s(batch: int, names: dict) -> float:
    """Predicted seconds per training step spent in the Triton interpreter on a CPU (from the
    measurements above): a Triton conv's cost, plus bn_act / maxpool's when they are Triton too."""
    s = INTERP_STEP_S + INTERP_IMAGE_S * batch if triton_conv(names) else 0.0
    if any(names.get(op) in INTERPRETED for op in ("bn_act", "maxpool")):
        s += INTERP_MEMBOUND_IMAGE_S * batch
    return s


def interpreter_refusal(cfg: TrainConfig, names: dict) -> str:
    """Why a Triton conv on a CPU is refused without --allow-interpreter, with a smoke command."""
    which = f"--backend {cfg.backend}" if cfg.backend in ("triton_all", "fp8", "fused") else f"--op {triton_conv(names)}"
    batch = cfg.batch_size or get_recipe(cfg.recipe).batch_size
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


def device_of(name: str | None) -> torch.device:
    """The device ``--device`` names (None: cuda when a GPU is visible, else cpu); SessionError if unusable."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SessionError(f"--device {name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise SessionError(f"--device {name!r}: this lab trains on cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SessionError(f"--device {name} asked for, but no CUDA GPU is available (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SessionError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def check_writable(path: str) -> None:
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as e:
        raise SessionError(f"--json: cannot write {path}: {e.strerror or e}") from None


def parse_args(argv: list[str] | None, parser: argparse.ArgumentParser | None = None) -> TrainConfig:
    """One configuration's flags, parsed and checked (argparse exits on a malformed flag)."""
    return TrainConfig.from_flags(argv, parser)


def fast_values(args: argparse.Namespace, ops: dict) -> dict:
    """--fast: backend, compile and cuda_graph of the fastest known configuration for the run's GPU
    (model/training/fast.py), and the line that says so; SessionError beside a flag it would override."""
    from . import fast
    given = [flag for flag, on in (("--backend", args.backend != "eager"), ("--op", bool(ops)),
                                   ("--compile", args.compile != "none")) if on]
    if given:
        raise SessionError(f"--fast chooses --backend, --compile and --cuda-graph itself; drop {', '.join(given)} "
                           f"(or drop --fast)")
    try:
        choice = fast.choose(device_of(args.device))
    except fast.FastError as e:
        raise SessionError(str(e)) from None
    return dict(backend=choice.backend, compile=choice.compile, cuda_graph=choice.cuda_graph, fast=choice.line())


def fmt_duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else (f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h")


@dataclass(frozen=True)
class TrainConfig:
    """One training configuration, typed and checked once (``check``, run by every constructor
    below): from the flags of train.py (``from_flags`` / ``from_args``), from a sweep entry (the same,
    with the entry's flags), or from a Python caller (``TrainConfig(recipe=..., backend=...).check()``).
    The fields are train.py's flags; ``recipe_sets`` holds ``--set NAME=VALUE`` typed, ``ops``
    ``--op OP=IMPL``. A Session is built from one (``Session.prepare``)."""
    data: str = "data"
    download: bool = False
    recipe: str = DEFAULT
    target: float | None = None          # a fraction (0.94), as --target's parser makes it
    recipe_sets: dict = field(default_factory=dict)
    runs: int = 1
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    epochs: float | None = None
    batch_size: int | None = None
    subset: int | None = None
    tta: int | None = None
    backend: str = "eager"
    ops: dict = field(default_factory=dict)
    compile: str = "none"
    cuda_graph: bool = False
    cache_dir: str | None = None
    allow_interpreter: bool = False
    warmup_steps: int | None = None
    fast: str | None = None              # --fast: the line that says what it chose and why

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainConfig:
        """From parsed flags (``add_arguments``' namespace; other attributes are ignored), checked."""
        try:
            ops = kernels.parse_overrides(args.op)
        except kernels.UnknownNameError as e:
            raise SessionError(str(e)) from None
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if f.name not in ("recipe_sets", "ops", "fast") and hasattr(args, f.name)}
        if getattr(args, "fast", False):
            values.update(fast_values(args, ops))
        return cls(**values, recipe_sets=parse_recipe_sets(args.set), ops=ops).check()

    @classmethod
    def from_flags(cls, argv: list[str] | None, parser: argparse.ArgumentParser | None = None) -> TrainConfig:
        """From train.py's flags (argparse exits on a malformed flag), checked."""
        return cls.from_args((parser or build_parser()).parse_args(argv))

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def names(self) -> dict:
        """The implementation of each op: the backend's, with ``ops`` applied."""
        return kernels.resolve_names(self.backend, self.ops)

    def check(self) -> TrainConfig:
        """Everything that can be checked before any work; raises SessionError, returns self."""
        def positive(flag, value, minimum=1, what="at least 1"):
            if value is not None and value < minimum:
                raise SessionError(f"{flag} must be {what} (got {value:g})")

        positive("--runs", self.runs)
        positive("--subset", self.subset)
        positive("--batch-size", self.batch_size)
        positive("--warmup-steps", self.warmup_steps, 0, "0 or more")
        if self.epochs is not None and not (self.epochs > 0 and math.isfinite(self.epochs)):
            raise SessionError(f"--epochs must be positive (got {self.epochs:g})")
        if self.target is not None and not 0 < target_fraction(self.target) <= 1:
            raise SessionError(f"--target must be an accuracy in (0, 1] or (0, 100] percent (got {self.target:g})")
        if self.recipe not in RECIPES:
            raise SessionError(f"unknown recipe {self.recipe!r}{did_you_mean(self.recipe, RECIPES)}")
        try:
            names = self.names
        except kernels.UnknownNameError as e:
            raise SessionError(str(e)) from None
        unknown = sorted(set(self.recipe_sets) - set(settable_fields()))
        if unknown:
            raise SessionError(f"--set: unknown recipe field {unknown[0]!r}{did_you_mean(unknown[0], settable_fields())}")
        device = device_of(self.device)
        if device.type == "cpu" and triton_conv(names) and not self.allow_interpreter:
            raise SessionError(interpreter_refusal(self, names))
        if self.cache_dir and os.path.exists(self.cache_dir) and not os.path.isdir(self.cache_dir):
            raise SessionError(f"--cache-dir {self.cache_dir} is not a directory")
        return self
