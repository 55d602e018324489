"""Build a ready-to-time callable for one op x implementation x mode at one shape.

Used by the pytest-benchmark suite (profiling/benchmarks) and ``python -m profiling bench``.
The inputs are the op's spec's ``sample_call`` (kernels/spec.py: built once, the same for every
implementation at the same ``seed``); the callable runs the op (and, for 'fwd+bwd', its backward),
synchronises the device when ``sync`` is set, so that wall-clock timers measure the work, and
returns the op's output.
"""
from __future__ import annotations

from typing import Callable

import torch

import kernels
from kernels import fp8

from .shapes import OpCase

MODES = ("fwd", "fwd+bwd")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_callable(case: OpCase, impl: str, mode: str, dtype: torch.dtype, device: torch.device | str,
                  sync: bool = False, seed: int = 0) -> Callable[[], torch.Tensor]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    fn = kernels.get(case.op, impl)
    grad = mode == "fwd+bwd"
    call = case.spec.sample_call(case, device, dtype, grad=grad, seed=seed)
    # an fp8 implementation keeps its delayed scales across calls in a state, as in the network
    kw = dict(fp8_state=fp8.Fp8State()) if fp8.takes_state(fn) else {}

    if grad:
        def step():
            y = fn(*call.args, **kw)
            y.backward(call.dy)
            if sync:
                _sync(device)
            return y
    else:
        def step():
            with torch.no_grad():
                y = fn(*call.args, **kw)
            if sync:
                _sync(device)
            return y
    return step
