"""torch.compile'd versions of the eager references, built lazily on first call."""
from __future__ import annotations

import functools
from typing import Callable

import torch


def compiled(fn: Callable, doc: str) -> Callable:
    """A wrapper that torch.compiles ``fn`` (fullgraph, static shapes) the first time it runs."""
    cache: dict[str, Callable] = {}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if "fn" not in cache:
            cache["fn"] = torch.compile(fn, fullgraph=True, dynamic=False)
        return cache["fn"](*args, **kwargs)

    wrapper.__doc__ = doc
    return wrapper
