"""2-D convolution: the 3x3 'same' convs and the 2x2 valid whitening conv.

Implementations: ``eager`` (F.conv2d, i.e. cuDNN on a GPU) and ``compile``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._compiled import compiled
from .registry import register


@register("conv", "eager")
def conv_eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               padding: int | str = 0) -> torch.Tensor:
    """Reference: F.conv2d (cuDNN on a GPU)."""
    return F.conv2d(x, weight, bias, padding=padding)


register("conv", "compile")(compiled(conv_eager, "F.conv2d under torch.compile."))
