"""Swappable implementations of the network's ops (see kernels/registry.py).

Importing this package registers every implementation: eager references, the
Triton kernels and torch.compile'd versions of the references, and each op's spec
(kernels/spec.py: what the profiling lab needs to know about the op, in the op's own file).
"""
from .registry import (BACKENDS, UnknownNameError, backends, composite, describe, get, impls, ops,
                       parse_overrides, register, resolve, resolve_names)
from . import bn_act, conv, conv_block, maxpool  # noqa: F401  (registration side effects)

__all__ = ["BACKENDS", "UnknownNameError", "backends", "composite", "describe", "get", "impls", "ops",
           "parse_overrides", "register", "resolve", "resolve_names"]
