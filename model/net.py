"""The recipes' networks, built from the op registry.

CifarNet (airbench94, airbench94_muon, hiverge, airbench95; airbench96 with ``convs=3``):

    whiten (frozen 2x2 conv, 3 -> 24, bias) -> GELU
    ConvGroup(24 -> w1) -> ConvGroup(w1 -> w2) -> ConvGroup(w2 -> w3)
    max-pool 3 -> flatten -> linear w3 -> 10 (no bias) -> * head_scale

    ConvGroup: conv3x3 -> max-pool 2 -> BN -> act -> conv3x3 -> BN -> act
    airbench96: conv3x3 -> max-pool 2 -> BN -> act = r -> conv3x3 -> BN -> act -> conv3x3 -> BN -> + r -> act

HlbNet (hlb-CIFAR10): frozen 2x2 whitening conv 3 -> 12 (no bias, top eigenvectors of the
centred patch covariance), 1x1 conv 12 -> 32, GELU; three residual groups conv3x3 -> max-pool 2
-> BN -> GELU = r -> conv3x3 -> BN -> GELU -> + r (32 -> 64 -> 256 -> 512); global max-pool
(3x3), linear 512 -> 10, * 1/9.

MnistNet (fast MNIST): conv3x3 1 -> 32 -> max-pool 2 -> BN -> GELU -> conv3x3 32 -> 64 -> BN ->
GELU -> conv3x3 64 -> 64 -> BN -> GELU -> global mean -> dropout -> linear 64 -> 10.

Each op (``conv``, ``maxpool``, ``bn_act``) comes from the mapping passed in ``ops``, so the
same module runs the eager reference, the Triton kernels or any mix. A conv group asks the mapping
for ``conv_block`` too: a fused block (kernels/conv_block.py, backend ``fused``) replaces each
conv [-> pool] -> BN -> act of the group with one call; the eager one composes the ops above. The fp8 implementations keep
state (delayed scales, the fp8 copies producers hand to consumers: kernels/fp8.py): the network
owns it (``net.fp8``), passes it at each of their call sites (``fp8_state=``), and resets it with
its parameters, so that every run starts from the same scales; a run records its counts. Each
block's forward is wrapped in a ``record_function`` range when ``profile_ranges`` is set, so that
profiler traces group kernels by model op.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kernels import fp8

WIDTHS = (64, 256, 256)
WHITEN_KERNEL = 2
WHITEN_WIDTH = 2 * 3 * WHITEN_KERNEL ** 2  # 24: the 12 eigen-filters and their negatives


def state_for(op: Callable, state: fp8.Fp8State | None) -> fp8.Fp8State | None:
    """The fp8 state ``op`` is called with: the network's ``state`` when ``op`` keeps one (an fp8
    implementation), else None (the op is called with the eager reference's signature)."""
    return state if state is not None and fp8.takes_state(op) else None


def call_op(op: Callable, fp8_state: fp8.Fp8State | None, *args):
    """``op(*args)``, with ``fp8_state=`` when the op keeps fp8 state (``state_for``)."""
    return op(*args) if fp8_state is None else op(*args, fp8_state=fp8_state)


class BatchNormAct(nn.Module):
    """BatchNorm (weight frozen at 1, bias trained) fused with an activation via ``bn_act``;
    ``fp8_state``: the network's fp8 state (bn_act=fp8 writes the next conv's input copy into it)."""

    def __init__(self, channels: int, bn_act: Callable, momentum: float, eps: float, activation: str,
                 fp8_state: fp8.Fp8State | None = None):
        super().__init__()
        self.bn_act, self.momentum, self.eps, self.activation = bn_act, momentum, eps, activation
        self.fp8 = state_for(bn_act, fp8_state)
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
        return call_op(self.bn_act, self.fp8, x, self.running_mean, self.running_var, self.weight, self.bias,
                       self.training, self.momentum, self.eps, self.activation)


class Conv3x3(nn.Module):
    """3x3 'same' conv without bias; PyTorch's default init, then identity on the first
    ``in_channels`` filters (dirac), as airbench does. ``fp8_state``: the network's fp8 state
    (conv=fp8's delayed scales and the input copy its producer wrote)."""

    def __init__(self, cin: int, cout: int, conv: Callable, dirac: bool = True, k: int = 3,
                 fp8_state: fp8.Fp8State | None = None):
        super().__init__()
        self.conv, self.dirac, self.padding = conv, dirac, k // 2
        self.fp8 = state_for(conv, fp8_state)
        self.weight = nn.Parameter(torch.empty(cout, cin, k, k))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # = nn.Conv2d's default
        if self.dirac:
            with torch.no_grad():
                nn.init.dirac_(self.weight[:min(self.weight.shape[:2])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return call_op(self.conv, self.fp8, x, self.weight, None, self.padding)


def op_range(on: bool, name: str):
    """A profiler range named after the model op when ``on``, else nothing."""
    return torch.profiler.record_function(name) if on else contextlib.nullcontext()


class ConvGroup(nn.Module):
    """conv -> pool -> BN+act -> conv -> BN+act. ``convs=3`` (airbench96): a third conv whose
    BatchNorm output is added to the first BN+act's before the activation. ``residual``
    (hlb): the first BN+act's output added after the second BN+act. ``fp8_state``: the network's."""

    def __init__(self, cin: int, cout: int, ops: Mapping[str, Callable], bn_momentum: float,
                 bn_eps: float, activation: str, convs: int = 2, residual: bool = False, dirac: bool = True,
                 fp8_state: fp8.Fp8State | None = None):
        super().__init__()
        self.pool, self.pool_fp8 = ops["maxpool"], state_for(ops["maxpool"], fp8_state)
        self.activation, self.residual = activation, residual
        # a fused conv_block (kernels/conv_block.py) replaces each conv [-> pool] -> BN+act; the eager one
        # ``composes``: the conv, maxpool and bn_act of the mapping, called one by one as below
        block = ops.get("conv_block")
        self.block = None if block is None or getattr(block, "composes", False) else block
        self.conv1 = Conv3x3(cin, cout, ops["conv"], dirac, fp8_state=fp8_state)
        self.norm1 = BatchNormAct(cout, ops["bn_act"], bn_momentum, bn_eps, activation, fp8_state)
        self.conv2 = Conv3x3(cout, cout, ops["conv"], dirac, fp8_state=fp8_state)
        self.norm2 = BatchNormAct(cout, ops["bn_act"], bn_momentum, bn_eps, activation, fp8_state)
        self.conv3 = self.norm3 = None
        if convs == 3:
            self.conv3 = Conv3x3(cout, cout, ops["conv"], dirac, fp8_state=fp8_state)
            self.norm3 = BatchNormAct(cout, ops["bn_act"], bn_momentum, bn_eps, "identity", fp8_state)
        self.ranges = False

    def layers(self) -> list[nn.Module]:
        return [m for m in (self.conv1, self.conv2, self.conv3, self.norm1, self.norm2, self.norm3) if m is not None]

    def _range(self, name: str):
        return op_range(self.ranges, name)

    def _fused(self, x: torch.Tensor, conv: "Conv3x3", norm: BatchNormAct, pool: bool) -> torch.Tensor:
        with self._range("conv_block"):
            return self.block(x, conv.weight, norm.running_mean, norm.running_var, norm.weight, norm.bias,
                              norm.training, norm.momentum, norm.eps, norm.activation, pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.block is not None:
            x = r = self._fused(x, self.conv1, self.norm1, True)
            x = self._fused(x, self.conv2, self.norm2, False)
            if self.conv3 is not None:
                x = self._fused(x, self.conv3, self.norm3, False)
                with self._range("gelu"):
                    return _act(x + r, self.activation)
            return x + r if self.residual else x
        with self._range("conv"):
            x = self.conv1(x)
        with self._range("maxpool"):  # maxpool=fp8 writes conv1's output-gradient copy into the state
            x = call_op(self.pool, self.pool_fp8, x, 2, 2)
        with self._range("bn_act"):
            x = self.norm1(x)
        r = x
        with self._range("conv"):
            x = self.conv2(x)
        with self._range("bn_act"):
            x = self.norm2(x)
        if self.conv3 is not None:
            with self._range("conv"):
                x = self.conv3(x)
            with self._range("bn_act"):
                x = self.norm3(x)
            with self._range("gelu"):
                x = _act(x + r, self.activation)
        elif self.residual:
            x = x + r
        return x


def _act(x: torch.Tensor, activation: str) -> torch.Tensor:
    return F.gelu(x) if activation == "gelu" else F.silu(x) if activation == "silu" else x


class CifarNet(nn.Module):
    """The airbench94 network. ``ops`` maps 'conv', 'maxpool', 'bn_act' to implementations."""

    def __init__(self, ops: Mapping[str, Callable], widths=WIDTHS, head_scale: float = 1 / 256,
                 bn_momentum: float = 0.4, bn_eps: float = 1e-12, activation: str = "gelu",
                 head_unit_std: bool = True, zero_whiten_bias: bool = False, convs: int = 2):
        super().__init__()
        missing = {"conv", "maxpool", "bn_act"} - set(ops)
        if missing:
            raise ValueError(f"CifarNet needs implementations of {sorted(missing)}")
        self.ops = dict(ops)
        self.fp8 = fp8.Fp8State()  # the fp8 ops' scales and copies (kernels/fp8.py), reset with the parameters
        self.fp8_of = {op: state_for(fn, self.fp8) for op, fn in ops.items()}
        self.head_scale, self.head_unit_std, self.zero_whiten_bias = head_scale, head_unit_std, zero_whiten_bias
        self.whiten_weight = nn.Parameter(torch.empty(WHITEN_WIDTH, 3, WHITEN_KERNEL, WHITEN_KERNEL),
                                          requires_grad=False)
        self.whiten_bias = nn.Parameter(torch.empty(WHITEN_WIDTH))
        w = (WHITEN_WIDTH,) + tuple(widths)
        self.groups = nn.ModuleList(
            ConvGroup(w[i], w[i + 1], ops, bn_momentum, bn_eps, activation, convs, fp8_state=self.fp8)
            for i in range(len(widths)))
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
        """Fresh initialisation (the whitening weight still needs ``init_whiten``), the fp8 state
        back to its first scales."""
        fan_in = 3 * WHITEN_KERNEL ** 2
        self.fp8.reset()
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.whiten_weight, a=math.sqrt(5))
            if self.zero_whiten_bias:
                self.whiten_bias.zero_()
            else:  # nn.Conv2d's default bias init
                self.whiten_bias.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
            for g in self.groups:
                for m in g.layers():
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
            x = call_op(self.ops["conv"], self.fp8_of["conv"], x, self.whiten_weight, b, 0)
        with rng("gelu"):
            x = F.gelu(x)
        for g in self.groups:
            x = g(x)
        with rng("maxpool"):
            x = call_op(self.ops["maxpool"], self.fp8_of["maxpool"], x, 3, 3)
        with rng("head"):
            return self.head(x.flatten(1)) * self.head_scale

    def to_training_dtype(self, dtype: torch.dtype, bn_half: bool = False) -> "CifarNet":
        return to_training_dtype(self, dtype, bn_half)


def to_training_dtype(net: nn.Module, dtype: torch.dtype, bn_half: bool = False) -> nn.Module:
    """Everything in ``dtype``, channels_last; BatchNorm kept in fp32 as airbench does, unless
    ``bn_half`` (hiverge: every module in fp16, BatchNorm included)."""
    net.to(dtype=dtype, memory_format=torch.channels_last)
    if not bn_half:
        for m in net.modules():
            if isinstance(m, BatchNormAct):
                m.float()
    return net


class HlbNet(nn.Module):
    """hlb-CIFAR10's network (tysam-code/hlb-CIFAR10 main.py), from the op registry."""

    def __init__(self, ops: Mapping[str, Callable], widths=(64, 256, 512), head_scale: float = 1 / 9,
                 bn_momentum: float = 0.5, bn_eps: float = 1e-12, activation: str = "gelu", project: int = 32):
        super().__init__()
        self.ops, self.head_scale = dict(ops), head_scale
        self.fp8 = fp8.Fp8State()
        self.fp8_of = {op: state_for(fn, self.fp8) for op, fn in ops.items()}
        self.whiten_weight = nn.Parameter(torch.empty(3 * WHITEN_KERNEL ** 2, 3, WHITEN_KERNEL, WHITEN_KERNEL),
                                          requires_grad=False)
        self.project = Conv3x3(3 * WHITEN_KERNEL ** 2, project, ops["conv"], dirac=False, k=1, fp8_state=self.fp8)
        w = (project,) + tuple(widths)
        self.groups = nn.ModuleList(ConvGroup(w[i], w[i + 1], ops, bn_momentum, bn_eps, activation, residual=True,
                                              dirac=False, fp8_state=self.fp8) for i in range(len(widths)))
        self.head = nn.Linear(w[-1], 10, bias=False)
        self.reset_parameters()

    profile_ranges = CifarNet.profile_ranges

    def reset_parameters(self) -> None:
        self.fp8.reset()
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.whiten_weight, a=math.sqrt(5))
            self.project.reset_parameters()
            for g in self.groups:
                for m in g.layers():
                    m.reset_parameters()
            self.head.reset_parameters()

    @torch.no_grad()
    def init_whiten(self, images: torch.Tensor, eps: float = 1e-2) -> None:
        """The 12 eigenvectors of the centred 2x2x3 patch covariance, each scaled by
        1/sqrt(eigenvalue + eps), largest eigenvalue first (no negatives, no bias)."""
        k = WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
        eigvals, eigvecs = torch.linalg.eigh(torch.cov(patches.T))
        filters = (eigvecs.T / torch.sqrt(eigvals + eps).view(-1, 1)).reshape(-1, 3, k, k).flip(0)
        self.whiten_weight.copy_(filters.to(self.whiten_weight.dtype))

    def forward(self, x: torch.Tensor, whiten_bias_grad: bool = True) -> torch.Tensor:
        def rng(name):
            return op_range(self.profile_ranges, name)
        with rng("conv"):
            x = call_op(self.ops["conv"], self.fp8_of["conv"], x, self.whiten_weight, None, 0)
            x = self.project(x)
        with rng("gelu"):
            x = F.gelu(x)
        for g in self.groups:
            x = g(x)
        with rng("maxpool"):
            # global max: 3x3 at 32x32 inputs
            x = call_op(self.ops["maxpool"], self.fp8_of["maxpool"], x, x.shape[-1], x.shape[-1])
        with rng("head"):
            return self.head(x.flatten(1)) * self.head_scale

    def to_training_dtype(self, dtype: torch.dtype, bn_half: bool = False) -> "HlbNet":
        return to_training_dtype(self, dtype, bn_half)


class MnistNet(nn.Module):
    """The fast-MNIST network: one max-pool after the first conv, one dropout before the head."""

    def __init__(self, ops: Mapping[str, Callable], widths=(32, 64, 64), head_scale: float = 1.0,
                 bn_momentum: float = 0.2, bn_eps: float = 1e-5, activation: str = "gelu", dropout: float = 0.2):
        super().__init__()
        self.ops, self.head_scale, self.dropout = dict(ops), head_scale, dropout
        self.fp8 = state = fp8.Fp8State()
        self.fp8_of = {op: state_for(fn, state) for op, fn in ops.items()}
        c1, c2, c3 = widths
        self.conv1 = Conv3x3(1, c1, ops["conv"], dirac=False, fp8_state=state)
        self.norm1 = BatchNormAct(c1, ops["bn_act"], bn_momentum, bn_eps, activation, state)
        self.conv2 = Conv3x3(c1, c2, ops["conv"], dirac=False, fp8_state=state)
        self.norm2 = BatchNormAct(c2, ops["bn_act"], bn_momentum, bn_eps, activation, state)
        self.conv3 = Conv3x3(c2, c3, ops["conv"], dirac=False, fp8_state=state)
        self.norm3 = BatchNormAct(c3, ops["bn_act"], bn_momentum, bn_eps, activation, state)
        self.head = nn.Linear(c3, 10, bias=False)
        self.profile_ranges = False

    def reset_parameters(self) -> None:
        self.fp8.reset()
        with torch.no_grad():
            for m in (self.conv1, self.norm1, self.conv2, self.norm2, self.conv3, self.norm3, self.head):
                m.reset_parameters()

    def init_whiten(self, images: torch.Tensor, eps: float = 0.0) -> None:
        pass  # no whitening layer

    def forward(self, x: torch.Tensor, whiten_bias_grad: bool = True) -> torch.Tensor:
        x = self.norm1(call_op(self.ops["maxpool"], self.fp8_of["maxpool"], self.conv1(x), 2, 2))
        x = self.norm3(self.conv3(self.norm2(self.conv2(x))))
        x = F.dropout(x.mean((2, 3)), self.dropout, self.training)
        return self.head(x) * self.head_scale

    def to_training_dtype(self, dtype: torch.dtype, bn_half: bool = False) -> "MnistNet":
        return to_training_dtype(self, dtype, bn_half)


def build_net(ops: Mapping[str, Callable], recipe) -> nn.Module:
    """The network of ``recipe`` (model/recipes.py ``Recipe.network``) from the ops ``ops``."""
    missing = {"conv", "maxpool", "bn_act"} - set(ops)
    if missing:
        raise ValueError(f"the network needs implementations of {sorted(missing)}")
    r = recipe
    if r.network in ("airbench", "airbench96"):
        return CifarNet(ops, widths=r.widths, head_scale=r.head_scale, bn_momentum=r.bn_momentum, bn_eps=r.bn_eps,
                        activation=r.activation, head_unit_std=r.head_unit_std, zero_whiten_bias=r.zero_whiten_bias,
                        convs=3 if r.network == "airbench96" else 2)
    if r.network == "hlb":
        return HlbNet(ops, widths=r.widths, head_scale=r.head_scale, bn_momentum=r.bn_momentum, bn_eps=r.bn_eps,
                      activation=r.activation)
    if r.network == "mnist":
        return MnistNet(ops, widths=r.widths, head_scale=r.head_scale, bn_momentum=r.bn_momentum,
                        activation=r.activation, dropout=r.dropout)
    raise ValueError(f"unknown network {r.network!r}")


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
