"""Max-pooling with stride = kernel size (the network's 2x2 and 3x3 pools).

Implementations: ``eager`` (F.max_pool2d) and ``compile`` (the same under torch.compile).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._compiled import compiled
from .registry import register


@register("maxpool", "eager")
def maxpool_eager(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Reference: F.max_pool2d (floor mode, no padding)."""
    return F.max_pool2d(x, kernel_size, stride)


register("maxpool", "compile")(compiled(
    maxpool_eager, "F.max_pool2d under torch.compile."))
