"""torch.compile'd versions of the eager references, built lazily on first call."""
from __future__ import annotations

import functools
from typing import Callable

import torch


# Graphs one compiled op may hold: static shapes compile once per shape, dtype and grad mode (the
# network's seven convs in training and evaluation are 14 graphs of one function), past Dynamo's
# default recompile limit of 8, where fullgraph turns the ninth into a hard error.
GRAPHS_PER_OP = 64


def compiled(fn: Callable, doc: str) -> Callable:
    """A wrapper that torch.compiles ``fn`` (fullgraph, static shapes) the first time it runs, with
    room for GRAPHS_PER_OP graphs: a call that would pass Dynamo's recompile limit is made again with
    the limit raised for that call only (patching the config costs about 1 ms, so not on every call)."""
    cache: dict[str, Callable] = {}

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if torch.compiler.is_compiling():  # traced into an outer torch.compile: its graph takes fn as is
            return fn(*args, **kwargs)
        if "fn" not in cache:
            cache["fn"] = torch.compile(fn, fullgraph=True, dynamic=False)
        try:  # a graph already compiled is found without the limit: no patch on the launch path (~1 ms)
            return cache["fn"](*args, **kwargs)
        except torch._dynamo.exc.FailOnRecompileLimitHit:  # raised before the graph runs: nothing done
            limit = max(torch._dynamo.config.recompile_limit, GRAPHS_PER_OP)
            with torch._dynamo.config.patch(recompile_limit=limit):
                return cache["fn"](*args, **kwargs)

    wrapper.__doc__ = doc
    return wrapper
