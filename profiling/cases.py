"""Build a ready-to-time callable for one op x implementation x mode at one shape.

Used by the pytest-benchmark suite (profiling/benchmarks) and ``python -m profiling bench``.
Inputs are created once; the callable runs the op (and, for 'fwd+bwd', its backward) and
synchronises the device when ``sync`` is set, so that wall-clock timers measure the work.
"""
from __future__ import annotations

from typing import Callable

import torch

import kernels

from .shapes import OpCase

MODES = ("fwd", "fwd+bwd")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_callable(case: OpCase, impl: str, mode: str, dtype: torch.dtype, device: torch.device | str,
                  sync: bool = False, seed: int = 0) -> Callable[[], None]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    device = torch.device(device)
    fn = kernels.get(case.op, impl)
    g = torch.Generator(device="cpu").manual_seed(seed)
    grad = mode == "fwd+bwd"

    def rand(shape, dt=dtype, scale=1.0):
        return (torch.randn(shape, generator=g) * scale).to(device=device, dtype=dt)

    x = rand(case.x_shape).contiguous(memory_format=torch.channels_last).requires_grad_(grad)
    dy = rand(case.out_shape).contiguous(memory_format=torch.channels_last) if grad else None
    if case.op == "conv":
        cin, k = case.x_shape[1], case.params["k"]
        w = rand((case.params["cout"], cin, k, k), scale=0.1).requires_grad_(grad)
        if case.params.get("input_grad", True) is False:
            x.requires_grad_(False)
        if case.params.get("weight_grad", True) is False:
            w.requires_grad_(False)
        # the whitening conv is frozen but its bias trains: its backward is the bias gradient alone
        b = rand((case.params["cout"],), scale=0.1).requires_grad_(grad) if case.params.get("bias") else None
        if grad and not (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
            raise ValueError(f"{case.label()}: nothing takes a gradient, so fwd+bwd has no backward")

        def run():
            return fn(x, w, b, case.params["padding"])
    elif case.op == "bn_act":
        C = case.x_shape[1]
        rm = torch.zeros(C, device=device)
        rv = torch.ones(C, device=device)
        bias = torch.zeros(C, device=device, requires_grad=grad)
        training = case.params.get("training", True)
        act = case.params.get("activation", "gelu")

        def run():
            return fn(x, rm, rv, None, bias, training, 0.4, 1e-12, act)
    elif case.op == "maxpool":
        k = case.params["k"]

        def run():
            return fn(x, k, k)
    else:
        raise ValueError(f"no benchmark inputs for op {case.op!r}")

    if grad:
        def step():
            run().backward(dy)
            if sync:
                _sync(device)
    else:
        def step():
            with torch.no_grad():
                run()
            if sync:
                _sync(device)
    return step
