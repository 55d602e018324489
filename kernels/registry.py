"""The op registry: one name per op the network uses, several implementations each.

Every implementation of an op has the same signature as the eager reference (the
torch.nn.functional counterpart), so the network is built once from a mapping
op -> callable and never asks which backend it runs on. The fp8 implementations also take a
keyword ``fp8_state`` (kernels/fp8.py ``Fp8State``: the state the network owns and passes at
their call sites, model/net.py ``call_op``); without it they are drop-ins too.

    >>> import kernels
    >>> kernels.ops()
    ['bn_act', 'conv', 'conv_block', 'maxpool']
    >>> kernels.impls("maxpool")
    ['compile', 'eager', 'triton']
    >>> pool = kernels.get("maxpool", "triton")

A *backend* is a named default mapping (``eager``, ``triton``, ``triton_all``, ``fp8``,
``compile``, ``fused``);
``resolve(backend, {"conv": "eager"})`` applies per-op overrides on top of it. ``conv_block`` (a
conv [-> max-pool] -> BatchNorm -> activation block, kernels/conv_block.py) is ``eager`` in every
backend but ``fused``: its eager implementation is the composition of the backend's own conv,
maxpool and bn_act, so naming a fused block changes only the blocks.
"""
from __future__ import annotations

import difflib
from typing import Callable, Iterable, Mapping

_IMPLS: dict[str, dict[str, Callable]] = {}
_DOCS: dict[tuple[str, str], str] = {}

# Backend name -> implementation per op. An op missing from a backend falls back to "eager".
BACKENDS: dict[str, dict[str, str]] = {
    "eager": {},
    "triton": {"bn_act": "triton", "maxpool": "triton"},
    "triton_all": {"bn_act": "triton", "maxpool": "triton", "conv": "triton"},
    "fp8": {"bn_act": "fp8", "maxpool": "fp8", "conv": "fp8"},
    "compile": {"bn_act": "compile", "maxpool": "compile", "conv": "compile"},
    # the fused conv blocks (issue 23); the ops outside the blocks (whitening conv, final pool) in Triton
    "fused": {"bn_act": "triton", "maxpool": "triton", "conv": "triton", "conv_block": "triton_fused"},
}


class UnknownNameError(ValueError):
    """An op, implementation or backend name that the registry does not know."""


def register(op: str, impl: str, doc: str = "") -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as implementation ``impl`` of ``op``."""

    def deco(fn: Callable) -> Callable:
        table = _IMPLS.setdefault(op, {})
        if impl in table:
            raise ValueError(f"implementation {impl!r} of op {op!r} is registered twice")
        table[impl] = fn
        first_paragraph = (fn.__doc__ or "").strip().split("\n\n")[0]
        _DOCS[(op, impl)] = doc or " ".join(line.strip() for line in first_paragraph.splitlines())
        return fn

    return deco


def ops() -> list[str]:
    """Names of all registered ops, sorted."""
    return sorted(_IMPLS)


def impls(op: str) -> list[str]:
    """Names of the implementations of ``op``, sorted."""
    _check_op(op)
    return sorted(_IMPLS[op])


def composite(op: str, impl: str) -> bool:
    """Whether ``impl`` of ``op`` only picks between other implementations of the same op (its
    ``composite_of`` attribute names them): it has no kernel of its own to model or, by default, to
    benchmark. (conv_block's eager, which ``composes`` the conv, pool and bn_act ops, is the
    baseline of the fused blocks and stays in both.)"""
    return bool(getattr(get(op, impl), "composite_of", ()))


def describe(op: str, impl: str) -> str:
    """One-line description of an implementation (for --help and reports)."""
    get(op, impl)
    return _DOCS[(op, impl)]


def get(op: str, impl: str) -> Callable:
    """The callable registered as implementation ``impl`` of ``op``."""
    _check_op(op)
    table = _IMPLS[op]
    if impl not in table:
        raise UnknownNameError(
            f"unknown implementation {impl!r} of op {op!r}{_closest(impl, table)}; known: {', '.join(sorted(table))}")
    return table[impl]


def backends() -> list[str]:
    return sorted(BACKENDS)


def resolve_names(backend: str = "eager", overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Implementation name per op for ``backend`` with per-op ``overrides`` applied."""
    if backend not in BACKENDS:
        raise UnknownNameError(f"unknown backend {backend!r}{_closest(backend, BACKENDS)}; known: {', '.join(backends())}")
    names = {op: BACKENDS[backend].get(op, "eager") for op in ops()}
    for op, impl in (overrides or {}).items():
        get(op, impl)  # validates both names
        names[op] = impl
    return names


def resolve(backend: str = "eager", overrides: Mapping[str, str] | None = None) -> dict[str, Callable]:
    """Callable per op for ``backend`` with per-op ``overrides`` applied."""
    return {op: get(op, impl) for op, impl in resolve_names(backend, overrides).items()}


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """Parse repeated ``OP=IMPL`` strings (the ``--op`` flag) into a dict, with clear errors."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise UnknownNameError(f"--op expects OP=IMPL, got {item!r}; ops: {', '.join(ops())}")
        op, impl = (s.strip() for s in item.split("=", 1))
        get(op, impl)
        out[op] = impl
    return out


def _check_op(op: str) -> None:
    if op not in _IMPLS:
        raise UnknownNameError(f"unknown op {op!r}{_closest(op, _IMPLS)}; known: {', '.join(ops())}")


def _closest(name: str, known: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` when a known name is close to a mistyped one, else ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
