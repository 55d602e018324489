"""Optimizers of the two recipes.

``MuonSGD`` (airbench94_muon): Muon-style orthogonalised Nesterov momentum for the conv
filters, Nesterov SGD for the whitening bias, BN biases and head; linear LR decay.
``SGDLookahead`` (legacy airbench94): one Nesterov SGD over everything with a warm-up /
warm-down schedule and a lookahead EMA of the weights every 5 steps.

Both expose ``step(step_index)``: set this step's learning rates, update, zero the grads.
"""
from __future__ import annotations

import math

import torch
from torch import nn

NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: torch.Tensor, steps: int = 3, eps: float = 1e-7,
                  coeffs: tuple[float, float, float] = NS_COEFFS, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximately orthogonalise the 2-D matrix ``g`` (its singular values are pushed towards
    1, roughly into [0.5, 1.5] with these quintic coefficients) by ``steps`` Newton-Schulz
    iterations in ``dtype`` (bf16 as published), on the wide orientation. Returns ``dtype``."""
    if g.dim() != 2:
        raise ValueError(f"newton_schulz expects a matrix, got shape {list(g.shape)}")
    a, b, c = coeffs
    x = g.to(dtype)
    x = x / (x.norm() + eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        m = x @ x.T
        x = a * x + (b * m + c * (m @ m)) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Nesterov momentum (buf = mu*buf + g; direction g + mu*buf) whose direction, reshaped to
    [out, in*k*k], is orthogonalised by Newton-Schulz. Each weight is first rescaled to
    Frobenius norm sqrt(out_channels). Newton-Schulz runs in bf16 on a GPU, as published, and
    in fp32 on a CPU, where bf16 matrix products are emulated and ~8x slower."""

    def __init__(self, params, lr: float, momentum: float, nesterov: bool = True, ns_steps: int = 3):
        if lr < 0 or momentum < 0:
            raise ValueError(f"Muon: lr and momentum must be >= 0 (got {lr}, {momentum})")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))
        self.newton_schulz = newton_schulz  # replaced by a compiled version under --compile

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(mu).add_(p.grad)
                d = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
                p.mul_(math.sqrt(p.shape[0]) / p.norm())
                ns_dtype = torch.float32 if p.device.type == "cpu" else torch.bfloat16
                update = self.newton_schulz(d.reshape(len(d), -1), group["ns_steps"], dtype=ns_dtype).view(d.shape)
                p.add_(update.to(p.dtype), alpha=-group["lr"])


def _fused_ok(params) -> bool:
    return all(p.is_cuda for p in params)


class MuonSGD:
    """The airbench94_muon optimizer split and schedules."""

    def __init__(self, net: nn.Module, recipe, total_steps: int, whiten_steps: int):
        self.total_steps, self.whiten_steps = total_steps, max(whiten_steps, 1)
        filters = [p for p in net.parameters() if p.dim() == 4 and p.requires_grad]
        norm_biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
        wd = recipe.weight_decay * recipe.batch_size  # airbench: 2e-6 x batch size
        groups = [dict(params=[net.whiten_bias], lr=recipe.bias_lr, weight_decay=wd / recipe.bias_lr),
                  dict(params=norm_biases, lr=recipe.bias_lr, weight_decay=wd / recipe.bias_lr),
                  dict(params=[net.head.weight], lr=recipe.head_lr, weight_decay=wd / recipe.head_lr)]
        all_sgd = [p for g in groups for p in g["params"]]
        self.sgd = torch.optim.SGD(groups, momentum=recipe.sgd_momentum, nesterov=True,
                                   fused=_fused_ok(all_sgd) or None)
        self.muon = Muon(filters, lr=recipe.muon_lr, momentum=recipe.muon_momentum, nesterov=True)
        for opt in (self.sgd, self.muon):
            for g in opt.param_groups:
                g["initial_lr"] = g["lr"]

    def step(self, step: int) -> None:
        wb = self.sgd.param_groups[0]
        wb["lr"] = wb["initial_lr"] * max(0.0, 1 - step / self.whiten_steps)
        frac = 1 - step / self.total_steps
        for g in self.sgd.param_groups[1:] + self.muon.param_groups:
            g["lr"] = g["initial_lr"] * frac
        self.sgd.step()
        self.muon.step()
        self.sgd.zero_grad(set_to_none=True)
        self.muon.zero_grad(set_to_none=True)

    def finish(self) -> None:
        pass


class SGDLookahead:
    """The legacy airbench94 optimizer: Nesterov SGD in "decoupled" hyper-parameters, BN biases
    at ``bias_scaler`` x the lr, LR 0.2x -> 1x over the first 23% of steps then -> 0.07x,
    lookahead EMA every 5 steps with decay 0.95^5 * (step/total)^3; weights = EMA at the end."""

    def __init__(self, net: nn.Module, recipe, total_steps: int, whiten_steps: int):
        self.net, self.total_steps = net, total_steps
        scale = 1024 * (1 + 1 / (1 - recipe.sgd_momentum))
        lr = recipe.lr / scale
        wd = recipe.weight_decay * recipe.batch_size / scale
        bias_lr = lr * recipe.bias_scaler
        norm_biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
        others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
        groups = [dict(params=norm_biases, lr=bias_lr, weight_decay=wd / bias_lr),
                  dict(params=others, lr=lr, weight_decay=wd / lr)]
        self.sgd = torch.optim.SGD(groups, momentum=recipe.sgd_momentum, nesterov=True,
                                   fused=_fused_ok(norm_biases + others) or None)
        for g in self.sgd.param_groups:
            g["initial_lr"] = g["lr"]
        self.warmup = int(total_steps * 0.23)
        self.ema = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    def lr_factor(self, step: int) -> float:
        if step < self.warmup:
            f = step / self.warmup
            return 0.2 * (1 - f) + f
        f = (step - self.warmup) / max(self.total_steps - self.warmup, 1)
        return (1 - f) + 0.07 * f

    @torch.no_grad()
    def _lookahead(self, decay: float) -> None:
        state = self.net.state_dict()
        for k, e in self.ema.items():
            e.lerp_(state[k], 1 - decay)
            state[k].copy_(e)

    def step(self, step: int) -> None:
        f = self.lr_factor(step)
        for g in self.sgd.param_groups:
            g["lr"] = g["initial_lr"] * f
        self.sgd.step()
        self.sgd.zero_grad(set_to_none=True)
        done = step + 1
        if done % 5 == 0:
            self._lookahead(0.95 ** 5 * (done / self.total_steps) ** 3)

    def finish(self) -> None:
        self._lookahead(1.0)
