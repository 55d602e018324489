"""One training session: a Session is built from a TrainConfig (model/training/config.py).

    s = Session.prepare(cfg)         # ops, device, dtype, recipe, data on the device, net, step fns
    s.warmup(); res = s.train(seed)  # untimed warm-up (compilation, autotuning), then timed runs
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

import kernels
import kernels.conv as conv_kernels

from ..cli import SessionError
from ..data import DataError, load_dataset
from ..net import build_net
from ..recipes import Recipe, get_recipe
from .compiled import (
    StepFunctions,
    cache_stats,
    check_modes,
    conv_choices_path,
    use_cache_dir,
)
from .config import (
    DTYPES,
    INTERPRETED,
    TrainConfig,
    device_of,
    fmt_duration,
    interpreter_cost_s,
    target_fraction,
)
from .env import environment
from .trainer import DeviceData, Progress, train_run


@dataclass
class Session:
    """Everything one training configuration needs, built from its TrainConfig."""
    cfg: TrainConfig
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
    def prepare(cls, cfg: TrainConfig, data_cache: dict | None = None) -> "Session":
        """Resolve ops, device, dtype and recipe, load the data onto the device, build the
        network and its step functions. ``data_cache`` lets configurations in one process share
        the loaded data. Raises SessionError with a one-line message."""
        cfg.check()
        names = cfg.names
        ops = {op: kernels.get(op, impl) for op, impl in names.items()}
        device = device_of(cfg.device)
        try:
            check_modes(cfg.compile, cfg.cuda_graph, device)
        except ValueError as e:
            raise SessionError(str(e)) from None
        dtype = DTYPES[cfg.dtype or ("fp16" if device.type == "cuda" else "fp32")]
        notes = [cfg.fast] if cfg.fast else []  # --fast: what it chose, and on what evidence
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if cfg.cache_dir:
            try:
                use_cache_dir(cfg.cache_dir)
            except OSError as e:
                raise SessionError(f"--cache-dir {cfg.cache_dir}: {e.strerror or e}") from None
            if device.type == "cuda":  # the Triton conv's timed configurations of an earlier process
                n = conv_kernels.load_choices(conv_choices_path(cfg.cache_dir))
                if n:
                    notes.append(f"conv autotuning: {n} timed configurations reused from "
                                 f"{conv_choices_path(cfg.cache_dir)}")

        recipe = get_recipe(cfg.recipe).replace(batch_size=cfg.batch_size, **cfg.recipe_sets)
        slow = [f"{op}={impl}" for op, impl in names.items() if impl in INTERPRETED]
        if device.type == "cpu" and slow:  # said before the first step (a Triton conv needs --allow-interpreter)
            notes.append(f"note: {', '.join(slow)} run{'s' if len(slow) == 1 else ''} in the Triton interpreter on "
                         f"this CPU: about {fmt_duration(interpreter_cost_s(recipe.batch_size, names))} per training "
                         f"step at batch {recipe.batch_size} (measured on a 2-core CPU)")
        key = (recipe.dataset, cfg.data, cfg.subset, str(device), str(dtype))
        if data_cache is not None and key in data_cache:
            data, device_data = data_cache[key]
        else:
            try:
                data = load_dataset(recipe.dataset, cfg.data, download=cfg.download).subset(cfg.subset)
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
            fns = StepFunctions(net, cfg.compile, cfg.cuda_graph)
        except ValueError as e:
            raise SessionError(str(e)) from None
        env = environment(device)
        config = dict(recipe=recipe.name, ops=names, backend=cfg.backend, dtype=str(dtype).replace("torch.", ""),
                      batch_size=recipe.batch_size, epochs=float(cfg.epochs or recipe.epochs),
                      tta=recipe.tta_level if cfg.tta is None else cfg.tta, subset=cfg.subset,
                      compile=cfg.compile, cuda_graph=cfg.cuda_graph, recipe_overrides=dict(cfg.recipe_sets),
                      target=target_fraction(cfg.target), dataset=recipe.dataset,
                      data=data.source, data_checksum=data.checksum,
                      train_images=len(data.train_labels), test_images=len(data.test_labels))
        return cls(cfg, device, dtype, recipe, names, device_data, net, config, env, fns, notes)

    def describe(self) -> str:
        return (f"# {self.recipe.name} on {self.env['device']} | {self.config['dtype']} | ops: "
                + ", ".join(f"{k}={v}" for k, v in self.names.items())
                + (f" | compile={self.cfg.compile}" if self.cfg.compile != "none" else "")
                + (" | cuda-graph" if self.cfg.cuda_graph else "")
                + "".join(f" | {k}={v}" for k, v in self.config["recipe_overrides"].items())
                + f" | {self.config['train_images']} train / {self.config['test_images']} test images")

    def warmup(self, progress: Progress | None = None, say=print) -> float | None:
        """The untimed warm-up run (random labels); returns its wall time, or None when skipped."""
        cfg = self.cfg
        default = 25 if self.device.type == "cuda" else (4 if cfg.compile != "none" else 0)
        steps = cfg.warmup_steps if cfg.warmup_steps is not None else default
        if steps <= 0:
            return None
        t0 = time.perf_counter()
        w = train_run(self.net, self.data, self.recipe, seed=cfg.seed + 10_000, dtype=self.dtype, epochs=cfg.epochs,
                      tta_level=cfg.tta, warmup_steps=steps, progress=progress, label="warm-up", fns=self.fns)
        dt = time.perf_counter() - t0
        what = ("compilation + " if cfg.compile != "none" else "") + ("CUDA graph capture + " if cfg.cuda_graph else "")
        say(f"warm-up ({what}{w['steps']} step{'' if w['steps'] == 1 else 's'} on random labels + TTA eval): "
            f"{dt:.2f} s wall (not counted below)")
        if cfg.cache_dir and self.device.type == "cuda" and conv_kernels.chosen_configs():
            conv_kernels.save_choices(conv_choices_path(cfg.cache_dir))
        if cfg.compile != "none":
            stats = cache_stats()
            if stats:
                say("compile caches: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.items())))
        self.config["warmup_s"] = dt
        return dt

    def train(self, seed: int, log=None, progress: Progress | None = None, label: str = "", on_step=None) -> dict:
        """One timed run from a fresh initialisation with ``seed``."""
        a = self.cfg
        return train_run(self.net, self.data, self.recipe, seed=seed, dtype=self.dtype, epochs=a.epochs,
                         tta_level=a.tta, log=log, progress=progress, label=label, fns=self.fns, on_step=on_step,
                         target=target_fraction(a.target))
