"""BatchNorm + activation: ``act(batch_norm(x, ...))`` with act in {gelu, silu}.

Implementations: ``eager`` (F.batch_norm + F.gelu/F.silu, the reference) and
``compile`` (the reference under torch.compile).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._compiled import compiled
from .registry import register

ACTIVATIONS = ("gelu", "silu")


def check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"bn_act: unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")


@register("bn_act", "eager")
def bn_act_eager(x: torch.Tensor, running_mean, running_var, weight=None, bias=None,
                 training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                 activation: str = "gelu") -> torch.Tensor:
    """Reference: F.batch_norm followed by F.gelu or F.silu (cuDNN / ATen kernels)."""
    check_activation(activation)
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return F.gelu(y) if activation == "gelu" else F.silu(y)


register("bn_act", "compile")(compiled(
    bn_act_eager, "The eager reference under torch.compile (inductor's fused kernels)."))
