"""The airbench94 network, built from the op registry.

    whiten (frozen 2x2 conv, 3 -> 24, bias) -> GELU
    ConvGroup(24 -> 64) -> ConvGroup(64 -> 256) -> ConvGroup(256 -> 256)
    max-pool 3 -> flatten -> linear 256 -> 10 (no bias) -> * head_scale

    ConvGroup: conv3x3 -> max-pool 2 -> BN -> act -> conv3x3 -> BN -> act

Each op (``conv``, ``maxpool``, ``bn_act``) comes from the mapping passed in ``ops``, so the
same module runs the eager reference, the Triton kernels or any mix. Each block's forward is
wrapped in a ``record_function`` range when ``profile_ranges`` is set, so that profiler traces
group kernels by model op.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL ** 2  # 24: the 12 eigen-filters and their negatives


class BatchNormAct(nn.Module):
    """BatchNorm (weight frozen at 1, bias trained) fused with an activation via ``bn_act``."""

    def __init__(self, channels: int, bn_act: Callable, momentum: float, eps: float, activation: str):
        super().__init__()
        self.bn_act, self.momentum, self.eps, self.activation = bn_act, momentum, eps, activation
        self.weight = nn.Parameter(torch.ones(channels), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1)
            self.bias.zero_()
            self.running_mean.zero_()
            self.running_var.fill_(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_act(x, self.running_mean, self.running_var, self.weight, self.bias,
                           self.training, self.momentum, self.eps, self.activation)


class Conv3x3(nn.Module):
    """3x3 'same' conv without bias; PyTorch's default init, then identity on the first
    ``in_channels`` filters (dirac), as airbench does."""

    def __init__(self, cin: int, cout: int, conv: Callable):
        super().__init__()
        self.conv = conv
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # = nn.Conv2d's default
        with torch.no_grad():
            nn.init.dirac_(self.weight[:self.weight.shape[1]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.weight, None, 1)


def op_range(on: bool, name: str):
    """A profiler range named after the model op when ``on``, else nothing."""
    return torch.profiler.record_function(name) if on else contextlib.nullcontext()


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, ops: Mapping[str, Callable], bn_momentum: float,
                 bn_eps: float, activation: str):
        super().__init__()
        self.pool = ops["maxpool"]
        self.conv1 = Conv3x3(cin, cout, ops["conv"])
        self.norm1 = BatchNormAct(cout, ops["bn_act"], bn_momentum, bn_eps, activation)
        self.conv2 = Conv3x3(cout, cout, ops["conv"])
        self.norm2 = BatchNormAct(cout, ops["bn_act"], bn_momentum, bn_eps, activation)
        self.ranges = False

    def _range(self, name: str):
        return op_range(self.ranges, name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._range("conv"):
            x = self.conv1(x)
        with self._range("maxpool"):
            x = self.pool(x, 2, 2)
        with self._range("bn_act"):
            x = self.norm1(x)
        with self._range("conv"):
            x = self.conv2(x)
        with self._range("bn_act"):
            x = self.norm2(x)
        return x


class CifarNet(nn.Module):
    """The airbench94 network. ``ops`` maps 'conv', 'maxpool', 'bn_act' to implementations."""

    def __init__(self, ops: Mapping[str, Callable], widths=WIDTHS, head_scale: float = 1 / 256,
                 bn_momentum: float = 0.4, bn_eps: float = 1e-12, activation: str = "gelu",
                 head_unit_std: bool = True, zero_whiten_bias: bool = False):
        super().__init__()
        missing = {"conv", "maxpool", "bn_act"} - set(ops)
        if missing:
            raise ValueError(f"CifarNet needs implementations of {sorted(missing)}")
        self.ops = dict(ops)
        self.head_scale, self.head_unit_std, self.zero_whiten_bias = head_scale, head_unit_std, zero_whiten_bias
        self.whiten_weight = nn.Parameter(torch.empty(WHITEN_WIDTH, 3, WHITEN_KERNEL, WHITEN_KERNEL),
                                          requires_grad=False)
        self.whiten_bias = nn.Parameter(torch.empty(WHITEN_WIDTH))
        w = (WHITEN_WIDTH,) + tuple(widths)
        self.groups = nn.ModuleList(
            ConvGroup(w[i], w[i + 1], ops, bn_momentum, bn_eps, activation) for i in range(len(widths)))
        self.head = nn.Linear(w[-1], 10, bias=False)
        self.reset_parameters()

    @property
    def profile_ranges(self) -> bool:
        return self.groups[0].ranges

    @profile_ranges.setter
    def profile_ranges(self, on: bool) -> None:
        for g in self.groups:
            g.ranges = on

    def reset_parameters(self) -> None:
        """Fresh initialisation (the whitening weight still needs ``init_whiten``)."""
        fan_in = 3 * WHITEN_KERNEL ** 2
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.whiten_weight, a=math.sqrt(5))
            if self.zero_whiten_bias:
                self.whiten_bias.zero_()
            else:  # nn.Conv2d's default bias init
                self.whiten_bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            for g in self.groups:
                for m in (g.conv1, g.conv2, g.norm1, g.norm2):
                    m.reset_parameters()
            self.head.reset_parameters()
            if self.head_unit_std:
                self.head.weight.mul_(1 / self.head.weight.std())

    @torch.no_grad()
    def init_whiten(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the frozen whitening filters from the 2x2x3 patch covariance of ``images``
        (normalised, [N,3,H,W]): each eigenvector scaled by 1/sqrt(eigenvalue + eps), and its
        negative."""
        k = WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)       # N,C,H',W',k,k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
        cov = patches.T @ patches / len(patches)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        filters = (eigvecs.T / torch.sqrt(eigvals + eps).view(-1, 1)).reshape(-1, 3, k, k)
        self.whiten_weight.copy_(torch.cat([filters, -filters]).to(self.whiten_weight.dtype))

    def forward(self, x: torch.Tensor, whiten_bias_grad: bool = True) -> torch.Tensor:
        def rng(name):
            return op_range(self.profile_ranges, name)
        b = self.whiten_bias if whiten_bias_grad else self.whiten_bias.detach()
        with rng("conv"):
            x = self.ops["conv"](x, self.whiten_weight, b, 0)
        with rng("gelu"):
            x = F.gelu(x)
        for g in self.groups:
            x = g(x)
        with rng("maxpool"):
            x = self.ops["maxpool"](x, 3, 3)
        with rng("head"):
            return self.head(x.flatten(1)) * self.head_scale

    def to_training_dtype(self, dtype: torch.dtype) -> "CifarNet":
        """Everything in ``dtype`` except BatchNorm (kept in fp32 as airbench does), channels_last."""
        self.to(dtype=dtype, memory_format=torch.channels_last)
        for m in self.modules():
            if isinstance(m, BatchNormAct):
                m.float()
        return self


def tta_logits(net: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Test-time augmentation. 0: plain; 1: mean over the image and its mirror;
    2: 0.5 * mirror-mean + 0.5 * mean over the two 1-pixel translations (reflect pad 1,
    crops at (0,0) and (2,2)) of their mirror-mean."""
    def mirror(v):
        return 0.5 * net(v) + 0.5 * net(v.flip(-1))

    if level == 0:
        return net(x)
    if level == 1:
        return mirror(x)
    if level == 2:
        h, w = x.shape[-2:]
        p = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = 0.5 * (mirror(p[:, :, :h, :w].contiguous(memory_format=torch.channels_last))
                         + mirror(p[:, :, 2:, 2:].contiguous(memory_format=torch.channels_last)))
        return 0.5 * mirror(x) + 0.5 * shifted
    raise ValueError(f"tta level must be 0, 1 or 2, got {level}")
