"""Shared plumbing for the Triton kernels: interpreter selection and input checks.

On a machine without a CUDA GPU, Triton kernels can only run in the Triton interpreter
(``TRITON_INTERPRET=1``, slow, for correctness). This module turns it on when no GPU is
visible and the user has not chosen, *before* any kernel is decorated (Triton picks the
interpreter at ``@triton.jit`` time), so ``--backend triton`` works on a CPU out of the box.
"""
from __future__ import annotations

import os

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

try:
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401
    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton ships with Linux torch wheels
    HAS_TRITON = False

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Set by profiling/static.py while it drives the launchers on CPU tensors with every kernel launch
# recorded instead of run: the device checks then let CPU tensors through.
RECORDING = False


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_tensor(op: str, name: str, t: torch.Tensor, dtypes=FLOAT_DTYPES, dim: int | None = None) -> None:
    """Raise a clear error for an input a Triton kernel cannot take (instead of a compile trace)."""
    if not HAS_TRITON:
        raise RuntimeError(f"{op} (triton): the triton package is not installed; use the eager implementation")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op} (triton): {name} must be a tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{op} (triton): {name} has dtype {t.dtype}; supported: "
                        + ", ".join(str(d).replace("torch.", "") for d in dtypes))
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{op} (triton): {name} must be {dim}-D, got shape {list(t.shape)}")
    if t.device.type in ("cuda", "meta"):  # meta: shape inference only (the ops' fake implementations)
        return
    if t.device.type == "cpu" and (interpreting() or RECORDING):
        return
    if t.device.type == "cpu":
        raise RuntimeError(f"{op} (triton): {name} is on the CPU; Triton kernels need a CUDA tensor "
                           "(or set TRITON_INTERPRET=1 before importing kernels to run them in the interpreter)")
    raise RuntimeError(f"{op} (triton): {name} is on device {t.device}; Triton kernels here run on CUDA only")


def memory_layout(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(x in a dense layout the kernels index directly, channels_last?) for a 4-D tensor.

    channels_last (NHWC in memory) and contiguous NCHW are used as they are; anything else
    (a strided view, a permutation) is copied into the nearer of the two formats first.
    """
    if x.is_contiguous():  # also covers C == 1 or H == W == 1, where both layouts coincide
        return x, False
    if x.is_contiguous(memory_format=torch.channels_last):
        return x, True
    channels_last = x.stride(1) < x.stride(3)  # channels vary faster than columns: nearer NHWC
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt), channels_last
