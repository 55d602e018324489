"""The eager ATen ops a launcher runs around its Triton kernels ("glue"), recorded without computing.

``record_aten()`` is a TorchDispatchMode: every ATen op that would be a kernel on a GPU (a
copy, a cast, a reduction, an elementwise op, a fill) is recorded with the bytes it reads and
writes; views, allocations (``empty*``) and metadata queries are not kernels and are passed
through. With ``compute=False`` (the default) nothing is computed: each op's output shape and
strides come from running it on the meta device, and an uninitialised tensor of that layout is
returned on the op's real device, so launchers can be driven at the network's real shapes on a
CPU in milliseconds. In-place ops return their mutated argument untouched.

Used by ``profiling static`` (the time of the glue is part of an op's prediction) and by the
tests that check a launcher issues no copy (``kinds`` of the records).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

_PASS = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "alias",
         "lift_fresh", "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size",
         "_local_scalar_dense", "set_", "resize_", "_has_compatible_shallow_copy_type", "record_stream",
         "is_pinned", "_to_copy_meta"}


@dataclass
class AtenOp:
    name: str           # e.g. "aten.clone.default"
    read_bytes: int
    write_bytes: int
    shapes: list

    @property
    def bytes(self) -> int:
        return self.read_bytes + self.write_bytes

    @property
    def kind(self) -> str:
        """'copy' for ops that only move data (clone, copy_, contiguous, _to_copy), else the op's base name."""
        if self.name.startswith("custom:"):
            return "custom"
        base = self.name.split(".")[1] if self.name.count(".") >= 1 else self.name
        return "copy" if base in ("clone", "copy_", "_to_copy", "contiguous", "copy") else base


def python_impl(op):
    """The Python function behind a ``torch.library.custom_op`` (given as the op or as one of its
    OpOverloads); the op itself when there is none."""
    fn = getattr(op, "_init_fn", None)
    if fn is not None:
        return fn
    try:
        from torch._library.custom_ops import OPDEFS
        opdef = OPDEFS.get(op._schema.name)
        return getattr(opdef, "_init_fn", op)
    except (ImportError, AttributeError):  # pragma: no cover
        return op


def _composite(func) -> bool:
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")
    except (AttributeError, RuntimeError):  # pragma: no cover
        return False


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _is_view(func) -> bool:
    if getattr(func, "is_view", False):
        return True
    schema = func._schema
    return any(r.alias_info is not None and not r.alias_info.is_write for r in schema.returns)


def _mutated_outputs(func, args, kwargs):
    """For an in-place / out= op: the arguments its schema writes, in return order."""
    schema = func._schema
    written = []
    for i, a in enumerate(schema.arguments):
        if a.alias_info is not None and a.alias_info.is_write:
            v = args[i] if i < len(args) else kwargs.get(a.name)
            written.append(v)
    if not written:
        return None
    return written[0] if len(schema.returns) == 1 else tuple(written[:len(schema.returns)])


_INTERP = {"depth": 0, "orig": None}


def _hide_interpreter(enter: bool) -> None:
    """While recording, a kernel run by the Triton interpreter (CPU) is not glue: its own
    copies between torch and numpy are hidden from the recorder."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover
        return
    from torch.utils._python_dispatch import _disable_current_modes
    if enter:
        if _INTERP["depth"] == 0:
            orig = _INTERP["orig"] = InterpretedFunction.run

            def run(self, *args, **kwargs):
                with _disable_current_modes():
                    return orig(self, *args, **kwargs)
            InterpretedFunction.run = run
        _INTERP["depth"] += 1
    else:
        _INTERP["depth"] -= 1
        if _INTERP["depth"] == 0:
            InterpretedFunction.run = _INTERP["orig"]


class record_aten(TorchDispatchMode):
    """Context manager; ``.ops`` holds the AtenOp records in order."""

    def __enter__(self):
        _hide_interpreter(True)
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            _hide_interpreter(False)

    def __init__(self, compute: bool = False, ops: list | None = None, into_custom: bool = True):
        super().__init__()
        self.compute, self.into_custom = compute, into_custom
        self.ops: list[AtenOp] = [] if ops is None else ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func.overloadpacket.__name__) if hasattr(func, "overloadpacket") else str(func)
        if func.namespace not in ("aten", "prims"):
            if not self.into_custom:  # recorded as a whole, kind "custom"
                out = func(*args, **kwargs)
                self.ops.append(AtenOp("custom:" + str(func), 0, 0, []))
                return out
            # a custom op (the project's own): run its Python implementation with a recorder pushed
            # again (a mode is inactive inside its own __torch_dispatch__), so the ATen ops and
            # kernel launches inside it are seen one by one
            with record_aten(self.compute, self.ops):
                return python_impl(func)(*args, **kwargs)
        if name in _PASS:
            return func(*args, **kwargs)
        if _is_view(func):
            if _composite(func):  # to, contiguous, reshape...: may copy; decompose to see what runs
                with record_aten(self.compute, self.ops):
                    return func.decompose(*args, **kwargs)
            return func(*args, **kwargs)
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        mutated = _mutated_outputs(func, args, kwargs) if func._schema.is_mutable else None
        if self.compute:
            out = func(*args, **kwargs)
        elif mutated is not None:
            out = mutated
        else:
            out = self._fake(func, args, kwargs)
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        read = sum(_nbytes(t) for t in ins if mutated is None or not any(t is m for m in tree_flatten(mutated)[0]))
        if mutated is not None and name not in ("zero_", "fill_", "copy_"):
            read += sum(_nbytes(t) for t in outs)  # an in-place op reads what it overwrites
        self.ops.append(AtenOp(str(func), read, sum(_nbytes(t) for t in outs),
                               [list(t.shape) for t in ins + outs]))
        return out

    @staticmethod
    def _fake(func, args, kwargs):
        """Run ``func`` on meta tensors for the output layout; return uninitialised real tensors."""
        device = next((t.device for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)), None)

        def to_meta(t):
            if isinstance(t, torch.Tensor):
                return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
            return t
        try:
            meta_out = func(*tree_map(to_meta, args), **tree_map(to_meta, kwargs))
        except (NotImplementedError, RuntimeError):
            return func(*args, **kwargs)
        dev = kwargs.get("device") or device or "cpu"

        def to_real(t):
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=dev)
            return t
        return tree_map(to_real, meta_out)
