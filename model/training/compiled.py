"""torch.compile of the training step, and the persistent caches that make a cold start cheap.

``--compile MODE`` (train.py) compiles, once per process and reused across runs:
  - forward + loss as one graph (fullgraph=True, static shapes); AOTAutograd derives the
    backward graph from it, so forward, loss and backward run as compiled code. The whitening
    bias flag (trained for the first epochs only) is a Python bool: two graph variants, both
    compiled during the warm-up;
  - the optimizer update as a second fullgraph graph: the tensor-only optimizers of
    model/optim.py (Nesterov SGD + Muon with Newton-Schulz, or SGD + lookahead) whose
    schedules are computed on the device from a step counter, so one graph serves every
    step and every run (model/training/runner.py FunctionalRunner);
  - the eval forward (plain and TTA views, batches of 2000).
Forward + backward and the update are two graphs, not one: a single graph would need the
backward traced inside the forward (compiled autograd or torch.func.grad over the custom
Triton ops and the BatchNorm buffer updates), which is fragile across torch versions; under
``--cuda-graph`` both run inside one captured CUDA graph anyway. Shapes are static: the last
partial training batch is dropped (as airbench does), so nothing recompiles.

MODES maps the flag to torch.compile arguments: ``default``; ``reduce-overhead`` (inductor's
CUDA graphs for the forward and backward graphs); ``max-autotune`` (autotuned GEMM / conv
templates and CUDA graphs: the published airbench94_muon setting) and
``max-autotune-no-cudagraphs``.

Cold start: ``--cache-dir DIR`` puts inductor's FX-graph cache, the AOTAutograd cache,
autotuning results, Triton's kernel cache and the Triton conv's timed configurations
(conv_autotune.json, GPU only) under DIR (both caches switched on), so that a second process
reuses the first one's work; train.py reports the warm-up (compile) time on
its own line.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import torch
import torch.nn.functional as F

MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def use_cache_dir(path: str) -> dict:
    """Persistent compile caches under ``path``; call before the first compilation."""
    path = os.path.abspath(path)
    dirs = dict(TORCHINDUCTOR_CACHE_DIR=os.path.join(path, "inductor"), TRITON_CACHE_DIR=os.path.join(path, "triton"))
    for k, v in dirs.items():
        os.makedirs(v, exist_ok=True)
        os.environ[k] = v
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    return dirs


def conv_choices_path(cache_dir: str) -> str:
    """Where train.py keeps the Triton conv autotuner's choices (kernels/conv.py save_choices)."""
    return os.path.join(os.path.abspath(cache_dir), "conv_autotune.json")


def cache_stats() -> dict:
    """Hits and misses of inductor's FX-graph cache and the AOTAutograd cache so far."""
    from torch._dynamo.utils import counters
    return {k: int(v) for group in ("inductor", "aot_autograd") for k, v in counters[group].items()
            if "cache" in k}


def forward_loss(net, inputs: torch.Tensor, targets: torch.Tensor, whiten_bias_grad: bool, label_smoothing: float,
                 mix: float = 0.0, scale: float = 1.0):
    """Summed cross-entropy with label smoothing. ``targets`` [B], or [B, 2] under cutmix: the
    image's label and its patch donor's, mixed by area ``mix`` (the loss is linear in the
    target distribution). ``scale`` multiplies the sum (hlb)."""
    outputs = net(inputs, whiten_bias_grad=whiten_bias_grad)
    logits = outputs.float()
    if targets.dim() == 2:
        loss = ((1 - mix) * F.cross_entropy(logits, targets[:, 0], label_smoothing=label_smoothing, reduction="sum")
                + mix * F.cross_entropy(logits, targets[:, 1], label_smoothing=label_smoothing, reduction="sum"))
    else:
        loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="sum")
    return outputs, loss * scale if scale != 1.0 else loss


def check_modes(mode: str, cuda_graph: bool, device: torch.device) -> None:
    """ValueError naming the problem for a compile mode / --cuda-graph / device that cannot work."""
    if mode not in MODES:
        raise ValueError(f"unknown compile mode {mode!r}; known: {', '.join(MODES)}")
    if cuda_graph and mode in ("reduce-overhead", "max-autotune"):
        raise ValueError(f"--cuda-graph captures the whole step itself and cannot hold --compile {mode}'s own "
                         "CUDA graphs; use --compile default or max-autotune-no-cudagraphs with it")
    if cuda_graph and torch.device(device).type != "cuda":
        raise ValueError(f"--cuda-graph needs a CUDA device, and the network is on {device}")


class StepFunctions:
    """What a training run executes, built once per process: the forward+loss and eval
    forward (eager, or compiled with ``mode``) and, per recipe, the runner that steps
    (model/training/runner.py; cached, so compiled graphs and CUDA graphs serve every run).
    ``cuda_graph``: capture each whole step (batch gather, forward, backward, optimizer
    update, schedules) in a CUDA graph."""

    def __init__(self, net, mode: str = "none", cuda_graph: bool = False):
        check_modes(mode, cuda_graph, next(net.parameters()).device)
        self.net, self.mode, self.cuda_graph = net, mode, cuda_graph
        self._runners: dict = {}
        if mode == "none":
            self.forward_loss: Callable = lambda *a: forward_loss(net, *a)
            self.eval_forward: Callable = net
            return
        if not torch.cuda.is_available():  # inductor's C++ build warns that CUDA is absent: expected on a CPU
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        kw = dict(fullgraph=True, dynamic=False, mode=None if mode == "default" else mode)
        self.forward_loss = torch.compile(lambda *a: forward_loss(net, *a), **kw)
        self.eval_forward = torch.compile(net, **kw)

    def runner(self, recipe):
        """The runner for ``recipe`` (one per recipe and process)."""
        if recipe not in self._runners:
            from .runner import make_runner
            self._runners[recipe] = make_runner(self.net, recipe, self)
        return self._runners[recipe]
