"""Shared plumbing for the Triton kernels: interpreter selection and input checks.

On a machine without a CUDA GPU, Triton kernels can only run in the Triton interpreter
(``TRITON_INTERPRET=1``, slow, for correctness). This module turns it on when no GPU is
visible and the user has not chosen, *before* any kernel is decorated (Triton picks the
interpreter at ``@triton.jit`` time), so ``--backend triton`` works on a CPU out of the box.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

try:
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401
    HAS_TRITON = True
except ImportError:  # pragma: no cover - triton ships with Linux torch wheels
    HAS_TRITON = False


def triton_version() -> tuple[int, int]:
    """(major, minor) of the installed Triton; (0, 0) when it cannot be read."""
    try:
        return tuple(int(v) for v in triton.__version__.split(".")[:2])
    except (NameError, ValueError):
        return (0, 0)


def _interpreter_shim_for_triton_36() -> bool:
    """Triton < 3.7's interpreter turns a loop bound (a shape-(1,) array) into an int with ``int()``,
    which numpy 2 refuses ("only 0-dimensional arrays can be converted"): every grid-stride loop
    (bn_act, maxpool) stopped there. Give its tensors an ``__index__`` that takes the one element,
    as triton 3.7+ does. Installed only for such a triton in the interpreter; True when installed."""
    if not HAS_TRITON or os.environ.get("TRITON_INTERPRET", "0") != "1":
        return False
    try:
        from triton.runtime import interpreter
    except ImportError:
        return False
    if triton_version() >= (3, 7) or not hasattr(interpreter, "_patch_lang_tensor"):
        return False
    original = interpreter._patch_lang_tensor

    def patch(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))
    interpreter._patch_lang_tensor = patch
    return True


INTERPRETER_SHIM = _interpreter_shim_for_triton_36()

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
DEFAULT_SMS = 132  # a launch recorded on a CPU with no target given: an H100


class _Recording:
    """The launch hook profiling installs (``recording``): while set, ``launch`` hands each launch
    to ``hook`` instead of running it, the input checks let CPU tensors through, and the launchers
    size their grids for a GPU of ``sms`` SMs."""
    hook = None
    sms: int | None = None


@contextlib.contextmanager
def recording(hook: Callable, sms: int | None = None) -> Iterator[None]:
    """Within the block every kernel launch of the lab calls ``hook(kernel, grid, args, meta)``
    (the kernel object, the grid, its positional arguments and keyword options) and runs nothing.
    ``sms``: the SM count of the GPU being modelled (108 for an A100, 132 for an H100), from which
    the launchers size their grids and pick their configurations (``target_sms``)."""
    saved = (_Recording.hook, _Recording.sms)
    _Recording.hook, _Recording.sms = hook, sms
    try:
        yield
    finally:
        _Recording.hook, _Recording.sms = saved


def is_recording() -> bool:
    return _Recording.hook is not None


def target_sms() -> int | None:
    """The SM count of the GPU a recording models (None: the local device's)."""
    return _Recording.sms if _Recording.hook is not None else None


def launch(kernel, grid, args: tuple, meta: dict, device: torch.device, note_meta: dict | None = None):
    """Launch a Triton kernel: ``kernel[grid](*args, **meta)``, its residency learned (note_launch);
    the compiled kernel is returned. Under ``recording`` the hook gets the launch instead, and None
    is returned. Every launcher of the lab launches through here. ``note_meta``: the options that key
    the kernel's residency, where they differ from ``meta`` (a grid-sizing option left out)."""
    if _Recording.hook is not None:
        # a recording hook runs nothing and returns None; a timing hook (profiling launches) runs
        # the kernel itself and returns what it compiled, whose residency is learned as usual
        compiled = _Recording.hook(kernel, grid, args, meta)
        if compiled is not None:
            note_launch(kernel, meta if note_meta is None else note_meta, device, compiled)
        return compiled
    compiled = kernel[grid](*args, **meta)
    note_launch(kernel, meta if note_meta is None else note_meta, device, compiled)
    return compiled


def _torch_allocator(size: int, alignment: int, stream):
    """Triton's run-time scratch (a TMA descriptor made in a kernel: 128 bytes a program) from
    torch's caching allocator on the current device and stream (inside a CUDA-graph capture, from the
    graph's pool)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def ensure_allocator() -> None:
    """Give Triton an allocator for kernels that need run-time global memory (``tl.make_tensor_descriptor``)
    where none is set in this thread (Triton keeps it in a context variable); one set by the user stays."""
    from triton.runtime import _allocation
    if _allocation._allocator.get() is _allocation._NULL_ALLOCATOR:
        triton.set_allocator(_torch_allocator)


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


_SMS: dict = {}


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device`` (the modelled GPU's under profiling static)."""
    if target_sms():
        return target_sms()
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        if idx not in _SMS:
            _SMS[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
        return _SMS[idx]
    return DEFAULT_SMS


def stream_key(device: torch.device) -> tuple:
    """The key of the zeroed scratch (ticket counters, fp32 partial sums) that a launch's programs
    merge through: launches queued on one stream run one after another and may share it; launches on
    two streams may run at once and must not (their sums and tickets would mix without an error).
    On a GPU: (device, the current stream); during CUDA-graph capture the current stream is the
    capture stream, so a captured graph gets scratch of its own, kept alive for its replays (which
    must not overlap each other, as for any graph's buffers). Elsewhere (CPU, interpreter): one key
    per device."""
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        return ("cuda", idx, torch.cuda.current_stream(idx).cuda_stream)
    return (device.type, device.index, 0)


# (kernel, launch options, SM count) -> programs one SM holds at once, learned from the compiled
# kernel: after the first launch on a GPU (``note_launch``), or by profiling static for the GPU it models.
_RESIDENCY: dict = {}


_NOT_RESIDENCY = ("SPLIT", "P", "ROWS")  # options that size the grid, not the kernel's resources


def residency_key(kernel, meta: dict, sms: int) -> tuple:
    name = getattr(kernel, "__name__", None) or getattr(getattr(kernel, "fn", None), "__name__", str(kernel))
    return (name, tuple(sorted((k, v) for k, v in meta.items()
                               if isinstance(v, (bool, int, float, str)) and k not in _NOT_RESIDENCY)), sms)


def programs_per_wave(kernel, meta: dict, per_sm: int, device: torch.device) -> int:
    """Programs that fill every SM once: SMs x the programs of ``kernel`` launched with ``meta``
    (its constexprs and num_warps) one SM holds at once. That residency is read off the compiled
    kernel (registers, shared memory, warps) once it has been launched; before that, ``per_sm``."""
    sms = sm_count(device)
    return sms * _RESIDENCY.get(residency_key(kernel, meta, sms), per_sm)


def blocks_per_sm(regs: int, shared: int, num_warps: int, regs_per_sm: int = 65536, threads_per_sm: int = 2048,
                  smem_per_sm: int = 228 * 1024) -> int:
    """Thread blocks of a kernel that fit on one SM (registers are allocated per warp in units of 256)."""
    warp_regs = -(-max(regs, 1) * 32 // 256) * 256
    by_regs = (regs_per_sm // warp_regs) // num_warps
    by_smem = smem_per_sm // shared if shared else 32
    return max(1, min(by_regs, by_smem, threads_per_sm // (32 * num_warps), 32))


def note_launch(kernel, meta: dict, device: torch.device, compiled) -> None:
    """Learn the residency of a kernel just launched on a GPU from its compiled form."""
    if device.type != "cuda" or compiled is None:
        return
    key = residency_key(kernel, meta, sm_count(device))
    if key in _RESIDENCY:
        return
    try:
        regs = int(compiled.n_regs)
        shared = int(getattr(compiled.metadata, "shared", 0) or 0)
        props = torch.cuda.get_device_properties(device)
        _RESIDENCY[key] = blocks_per_sm(regs, shared, meta.get("num_warps", 4),
                                        getattr(props, "regs_per_multiprocessor", 65536),
                                        getattr(props, "max_threads_per_multi_processor", 2048),
                                        getattr(props, "shared_memory_per_multiprocessor", 228 * 1024))
    except (AttributeError, TypeError, ValueError, RuntimeError):
        _RESIDENCY[key] = meta.get("per_sm_default", 4)


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
    if t.device.type == "cpu" and (interpreting() or is_recording()):
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
