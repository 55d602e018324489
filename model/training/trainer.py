"""One training run of a recipe, timed the way airbench times it.

Timed (CUDA events on a GPU, wall clock on the CPU): the whitening init, each epoch's
training loop and the final TTA evaluation. Not timed: the per-epoch plain evaluation and
the warm-up run (random labels, a few steps) that pays for cuDNN autotuning and compilation.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from ..data import Cifar10, TrainLoader, normalize
from ..net import CifarNet, tta_logits
from ..recipes import Recipe
from .compiled import StepFunctions

EVAL_BATCH = 2000


class Timer:
    """Accumulates device time of the regions between ``start`` and ``stop``."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.total = 0.0
        if self.cuda:
            self._a = torch.cuda.Event(enable_timing=True)
            self._b = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        if self.cuda:
            self._a.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> float:
        if self.cuda:
            self._b.record()
            torch.cuda.synchronize()
            dt = 1e-3 * self._a.elapsed_time(self._b)
        else:
            dt = time.perf_counter() - self._t0
        self.total += dt
        return dt


class Progress:
    """A one-line progress display on stderr for runs that take long (a terminal, or
    ``force``); silent otherwise. It reads only Python counters: no device sync."""

    EVERY_S = 0.5  # redraw at most this often

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last, self._shown = 0.0, 0

    def update(self, text: str) -> None:
        if self.enabled and time.perf_counter() - self._last >= self.EVERY_S:
            self._last = time.perf_counter()
            line = f"{text:<70}"
            sys.stderr.write("\r" + line + " " * max(0, self._shown - len(line)))
            sys.stderr.flush()
            self._shown = len(line)

    def clear(self) -> None:
        if self.enabled and self._shown:
            sys.stderr.write("\r" + " " * self._shown + "\r")
            sys.stderr.flush()
            self._shown = 0

    def print(self, text: str, file=None) -> None:
        """Print a line (a table row, a note) without garbling the progress line: clear it
        first; the next ``update`` draws it again below."""
        self.clear()
        print(text, file=file or sys.stdout, flush=True)
        self._last = 0.0


@dataclass
class DeviceData:
    """The data set on the training device, plus the normalised test images."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_inputs: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple | None = None
    std: tuple | None = None

    @classmethod
    def create(cls, data: Cifar10, device: torch.device, dtype: torch.dtype) -> "DeviceData":
        return cls(data.train_images.to(device), data.train_labels.to(device),
                   normalize(data.test_images.to(device), dtype, data.mean, data.std), data.test_labels.to(device),
                   data.mean, data.std)


@torch.no_grad()
def evaluate(net: CifarNet, inputs: torch.Tensor, labels: torch.Tensor, tta_level: int = 0,
             forward: Callable | None = None, gate: float = 0.0) -> float:
    """Accuracy on (inputs, labels) with test-time augmentation ``tta_level``; ``forward``
    replaces ``net`` for the forward passes (a compiled version of it). ``gate`` > 0 (hiverge):
    plain logits first, then TTA (level 2) only for that fraction of least confident images."""
    net.eval()
    fwd = net if forward is None else forward
    if gate > 0 and tta_level > 0:
        logits = torch.cat([fwd(x) for x in inputs.split(EVAL_BATCH)])
        idx = least_confident(logits, gate)
        if len(idx):
            sel = inputs[idx]
            logits[idx] = torch.cat([gated_tta_logits(fwd, x) for x in sel.split(EVAL_BATCH)]).to(logits.dtype)
    else:
        logits = torch.cat([tta_logits(fwd, x, tta_level) for x in inputs.split(EVAL_BATCH)])
    net.train()
    return (logits.argmax(1) == labels).float().mean().item()


def least_confident(logits: torch.Tensor, fraction: float) -> torch.Tensor:
    """Indices of the ``int(fraction * N)`` images whose top softmax probability is lowest."""
    k = int(len(logits) * fraction)
    conf = logits.float().softmax(1).amax(1)
    return torch.topk(conf, k, largest=False, sorted=False).indices


def gated_tta_logits(net, x: torch.Tensor) -> torch.Tensor:
    """hiverge's TTA views, equally weighted: the image and its two 1-pixel translations (reflect
    pad 1, crops at (0,0) and (2,2)), each also mirrored: 6 views."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, p[:, :, :h, :w], p[:, :, 2:, 2:]]
    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
    views += [v.flip(-1) for v in views]
    return torch.stack([net(v).float() for v in views]).mean(0)


def make_loader(data: DeviceData, labels: torch.Tensor, recipe: Recipe, dtype: torch.dtype, seed: int,
                total_epochs: float) -> TrainLoader:
    return TrainLoader(data.train_images, labels, recipe.batch_size, dtype, seed=seed, flip=recipe.flip,
                       translate=recipe.translate, flip_mode=recipe.flip_mode, cutout=recipe.cutout,
                       jitter=(recipe.jitter_brightness, recipe.jitter_contrast), cutmix=recipe.cutmix,
                       cutmix_from=total_epochs - recipe.cutmix_epochs if recipe.cutmix else float("inf"),
                       mean=data.mean, std=data.std)


def train_run(net: CifarNet, data: DeviceData, recipe: Recipe, seed: int, dtype: torch.dtype,
              epochs: float | None = None, tta_level: int | None = None, warmup_steps: int | None = None,
              log: Callable[[dict], None] | None = None, progress: Progress | None = None,
              label: str = "", fns: StepFunctions | None = None,
              on_step: Callable[[int, int], None] | None = None, target: float | None = None) -> dict:
    """Train ``net`` from a fresh initialisation; returns a result dict.

    ``warmup_steps``: a warm-up run instead, on random labels for that many steps, then one
    TTA evaluation (its results are meaningless; only its time is reported). The warm-up
    switches the whitening bias off halfway, so that both variants of a compiled step are built.
    ``fns``: compiled step functions (model/training/compiled.py); eager when None.
    ``on_step(step, total_steps)``: called with step 0 just before the first step, then after each
    step is issued (no device sync).
    ``target``: after each epoch evaluate with the recipe's TTA (untimed); the first epoch at or
    above ``target`` stops the run and the clock (time to target, as hlb and fast-MNIST report).
    """
    torch.manual_seed(seed)
    net.reset_parameters()
    plan = _plan(data, recipe, seed, dtype, epochs, tta_level, warmup_steps, target)
    loader, total_steps, target = plan.loader, plan.total_steps, plan.target
    fns = fns or StepFunctions(net)
    runner = fns.runner(recipe)
    runner.start_run(total_steps, plan.whiten_steps, len(loader))
    evaluate_tta = partial(evaluate, net, data.test_inputs, data.test_labels, plan.tta_level, fns.eval_forward,
                           plan.gate)
    timer = Timer(data.train_images.device)
    progress = progress or Progress(False)

    timer.start()
    if recipe.whiten_images:
        net.init_whiten(normalize(data.train_images[:recipe.whiten_images], dtype, data.mean, data.std),
                        recipe.whiten_eps)
    timer.stop()

    rows, step, reached = [], 0, None
    n_epochs = math.ceil(total_steps / len(loader))
    if on_step is not None:
        on_step(0, total_steps)
    for epoch in range(n_epochs):
        timer.start()
        batches = loader.next_epoch()
        runner.start_epoch(batches)
        for i in range(min(len(batches), total_steps - step)):
            outputs, loss, targets = runner.step(batches, i, step)
            step += 1
            progress.update(f"{label} epoch {epoch + 1}/{n_epochs} step {step}/{total_steps}")
            if on_step is not None:
                on_step(step, total_steps)
        last = step >= total_steps
        if last:
            runner.finish()
        timer.stop()
        row = _epoch_row(net, data, fns.eval_forward, epoch, outputs, loss, targets, timer, warmup_steps is None)
        if target is not None and not last:
            # what the run would report if it stopped here: the current weights with the recipe's TTA
            row["target_acc"] = acc = evaluate_tta()
            if acc >= target:
                reached = dict(epoch=epoch + 1, step=step, time_s=timer.total, accuracy=acc)
        rows.append(row)
        if log and warmup_steps is None:
            log(row)
        if reached:
            runner.finish()
            break

    if reached:
        tta_acc = reached["accuracy"]
    else:
        timer.start()
        tta_acc = evaluate_tta()
        timer.stop()
    progress.clear()
    return _result(plan, recipe, seed, tta_acc, timer.total, step, rows, reached)


@dataclass
class _Plan:
    """What one run trains on and for how long (train_run's arguments resolved against the recipe)."""
    loader: object
    tta_level: int
    gate: float
    total_steps: int
    whiten_steps: int
    target: float | None


def _plan(data: DeviceData, recipe: Recipe, seed: int, dtype: torch.dtype, epochs: float | None,
          tta_level: int | None, warmup_steps: int | None, target: float | None) -> _Plan:
    labels = data.train_labels
    if warmup_steps is not None:  # random labels: a warm-up learns nothing a measured run could reuse
        g = torch.Generator(device=data.train_images.device).manual_seed(seed)
        labels = torch.randint(0, 10, labels.shape, device=data.train_images.device, generator=g)
    epochs = recipe.epochs if epochs is None else epochs
    loader = make_loader(data, labels, recipe, dtype, seed, epochs)
    tta_level = recipe.tta_level if tta_level is None else tta_level
    total_steps = max(1, math.ceil(epochs * len(loader)))
    whiten_steps = math.ceil(recipe.whiten_bias_epochs * len(loader))
    if warmup_steps is not None:
        total_steps = min(total_steps, max(1, warmup_steps))
        whiten_steps = total_steps // 2 if total_steps > 1 else whiten_steps
        target = None
    return _Plan(loader, tta_level, recipe.tta_gate if tta_level == 2 else 0.0, total_steps, whiten_steps, target)


def _epoch_row(net: CifarNet, data: DeviceData, eval_fwd, epoch: int, outputs, loss, targets, timer: Timer,
               measured: bool) -> dict:
    """One row of the per-epoch table (the last batch's loss and accuracy, untimed validation accuracy)."""
    if targets.dim() == 2:
        targets = targets[:, 0]
    return dict(epoch=epoch + 1, train_loss=loss.item() / len(targets),
                train_acc=(outputs.detach().argmax(1) == targets).float().mean().item(),
                val_acc=evaluate(net, data.test_inputs, data.test_labels, 0, eval_fwd) if measured else float("nan"),
                time_s=timer.total)


def _result(plan: _Plan, recipe: Recipe, seed: int, tta_acc: float, time_s: float, step: int, rows: list[dict],
            reached: dict | None) -> dict:
    target = plan.target
    out = dict(seed=seed, accuracy=tta_acc, time_s=time_s, steps=step, per_epoch=rows,
               tta_level=plan.tta_level, batch_size=recipe.batch_size,
               final_train_loss=rows[-1]["train_loss"])
    if target is not None and reached is None and tta_acc >= target:  # reached at the end: the full run's time
        reached = dict(epoch=len(rows), step=step, time_s=time_s, accuracy=tta_acc)
    if target is not None:
        out.update(target=target, reached=reached is not None,
                   time_to_target_s=reached["time_s"] if reached else None,
                   steps_to_target=reached["step"] if reached else None)
    return out
