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
from typing import Callable

import torch

from .compiled import StepFunctions
from .data import Cifar10, TrainLoader, normalize
from .net import CifarNet, tta_logits
from .recipes import Recipe

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

    @classmethod
    def create(cls, data: Cifar10, device: torch.device, dtype: torch.dtype) -> "DeviceData":
        return cls(data.train_images.to(device), data.train_labels.to(device),
                   normalize(data.test_images.to(device), dtype), data.test_labels.to(device))


@torch.no_grad()
def evaluate(net: CifarNet, inputs: torch.Tensor, labels: torch.Tensor, tta_level: int = 0,
             forward: Callable | None = None) -> float:
    """Accuracy on (inputs, labels) with test-time augmentation ``tta_level``; ``forward``
    replaces ``net`` for the forward passes (a compiled version of it)."""
    net.eval()
    fwd = net if forward is None else forward
    logits = torch.cat([tta_logits(fwd, x, tta_level) for x in inputs.split(EVAL_BATCH)])
    net.train()
    return (logits.argmax(1) == labels).float().mean().item()


def train_run(net: CifarNet, data: DeviceData, recipe: Recipe, seed: int, dtype: torch.dtype,
              epochs: float | None = None, tta_level: int | None = None, warmup_steps: int | None = None,
              log: Callable[[dict], None] | None = None, progress: Progress | None = None,
              label: str = "", fns: StepFunctions | None = None,
              on_step: Callable[[int, int], None] | None = None) -> dict:
    """Train ``net`` from a fresh initialisation; returns a result dict.

    ``warmup_steps``: a warm-up run instead, on random labels for that many steps, then one
    TTA evaluation (its results are meaningless; only its time is reported). The warm-up
    switches the whitening bias off halfway, so that both variants of a compiled step are built.
    ``fns``: compiled step functions (model/compiled.py); eager when None.
    ``on_step(step, total_steps)``: called after each step is issued (no device sync).
    """
    device = data.train_images.device
    torch.manual_seed(seed)
    net.reset_parameters()
    labels = data.train_labels
    if warmup_steps is not None:
        g = torch.Generator(device=device).manual_seed(seed)
        labels = torch.randint(0, 10, labels.shape, device=device, generator=g)
    loader = TrainLoader(data.train_images, labels, recipe.batch_size, dtype, seed=seed,
                         flip=recipe.flip, translate=recipe.translate)
    epochs = recipe.epochs if epochs is None else epochs
    tta_level = recipe.tta_level if tta_level is None else tta_level
    total_steps = max(1, math.ceil(epochs * len(loader)))
    whiten_steps = math.ceil(recipe.whiten_bias_epochs * len(loader))
    if warmup_steps is not None:
        total_steps = min(total_steps, max(1, warmup_steps))
        whiten_steps = total_steps // 2 if total_steps > 1 else whiten_steps
    fns = fns or StepFunctions(net)
    runner = fns.runner(recipe)
    runner.start_run(total_steps, whiten_steps)
    eval_fwd = fns.eval_forward
    timer = Timer(device)
    progress = progress or Progress(False)

    timer.start()
    net.init_whiten(normalize(data.train_images[:recipe.whiten_images], dtype), recipe.whiten_eps)
    timer.stop()

    rows, step = [], 0
    n_epochs = math.ceil(total_steps / len(loader))
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
        if step >= total_steps:
            runner.finish()
        timer.stop()
        row = dict(epoch=epoch + 1, train_loss=loss.item() / len(targets),
                   train_acc=(outputs.detach().argmax(1) == targets).float().mean().item(),
                   val_acc=evaluate(net, data.test_inputs, data.test_labels, 0, eval_fwd) if warmup_steps is None
                   else float("nan"),
                   time_s=timer.total)
        rows.append(row)
        if log and warmup_steps is None:
            log(row)

    timer.start()
    tta_acc = evaluate(net, data.test_inputs, data.test_labels, tta_level, eval_fwd)
    timer.stop()
    progress.clear()
    return dict(seed=seed, accuracy=tta_acc, time_s=timer.total, steps=step, per_epoch=rows,
                tta_level=tta_level, batch_size=recipe.batch_size,
                final_train_loss=rows[-1]["train_loss"])
