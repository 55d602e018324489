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


def _ns_dtype(p: torch.Tensor) -> torch.dtype:
    """Newton-Schulz in bf16 on a GPU (as published), fp32 on a CPU (bf16 matmuls are emulated there)."""
    return torch.float32 if p.device.type == "cpu" else torch.bfloat16


class Muon(torch.optim.Optimizer):
    """Nesterov momentum (buf = mu*buf + g; direction g + mu*buf) whose direction, reshaped to
    [out, in*k*k], is orthogonalised by Newton-Schulz. Each weight is first rescaled to
    Frobenius norm sqrt(out_channels). Newton-Schulz runs in bf16 on a GPU, as published, and
    in fp32 on a CPU, where bf16 matrix products are emulated and ~8x slower."""

    def __init__(self, params, lr: float, momentum: float, nesterov: bool = True, ns_steps: int = 3):
        if lr < 0 or momentum < 0:
            raise ValueError(f"Muon: lr and momentum must be >= 0 (got {lr}, {momentum})")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))

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
                update = newton_schulz(d.reshape(len(d), -1), group["ns_steps"], dtype=_ns_dtype(p)).view(d.shape)
                p.add_(update.to(p.dtype), alpha=-group["lr"])


def _fused_ok(params) -> bool:
    return all(p.is_cuda for p in params)


def muon_sgd_groups(net: nn.Module, recipe) -> tuple[list[dict], list[nn.Parameter]]:
    """airbench94_muon's split: SGD groups (whitening bias, BN biases, head; weight decay in
    PyTorch's convention, wd * lr = 2e-6 x batch size) and the conv filters for Muon."""
    filters = [p for p in net.parameters() if p.dim() == 4 and p.requires_grad]
    norm_biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    wd = recipe.weight_decay * recipe.batch_size  # airbench: 2e-6 x batch size
    groups = [dict(params=[net.whiten_bias], lr=recipe.bias_lr, weight_decay=wd / recipe.bias_lr),
              dict(params=norm_biases, lr=recipe.bias_lr, weight_decay=wd / recipe.bias_lr),
              dict(params=[net.head.weight], lr=recipe.head_lr, weight_decay=wd / recipe.head_lr)]
    return groups, filters


def lookahead_groups(net: nn.Module, recipe) -> list[dict]:
    """The legacy airbench94 split in "decoupled" hyper-parameters: BN biases at
    ``bias_scaler`` x the lr, everything else at the lr."""
    scale = 1024 * (1 + 1 / (1 - recipe.sgd_momentum))
    lr = recipe.lr / scale
    wd = recipe.weight_decay * recipe.batch_size / scale
    bias_lr = lr * recipe.bias_scaler
    norm_biases = [p for n, p in net.named_parameters() if "norm" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "norm" not in n and p.requires_grad]
    return [dict(params=norm_biases, lr=bias_lr, weight_decay=wd / bias_lr),
            dict(params=others, lr=lr, weight_decay=wd / lr)]


def lookahead_warmup(total_steps: int) -> int:
    return int(total_steps * 0.23)


class MuonSGD:
    """The airbench94_muon optimizer split and schedules (torch.optim; the eager baseline)."""

    def __init__(self, net: nn.Module, recipe, total_steps: int, whiten_steps: int):
        self.total_steps, self.whiten_steps = total_steps, max(whiten_steps, 1)
        groups, filters = muon_sgd_groups(net, recipe)
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
        groups = lookahead_groups(net, recipe)
        self.sgd = torch.optim.SGD(groups, momentum=recipe.sgd_momentum, nesterov=True,
                                   fused=_fused_ok([p for g in groups for p in g["params"]]) or None)
        for g in self.sgd.param_groups:
            g["initial_lr"] = g["lr"]
        self.warmup = lookahead_warmup(total_steps)
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


# ------------------------------------------------------------------ tensor-only (graphable) versions

class TensorOptimizer:
    """The same updates as tensor operations only: every learning rate is computed on the
    device from a step counter (``step_t``), the run length lives in tensors set by ``reset``,
    and the state is allocated once. Nothing a step does depends on a Python number that
    changes from step to step, so ``update`` compiles to one graph (torch.compile) and can be
    captured in a CUDA graph and replayed for every step of every run.

    ``params``: the parameters in the order ``update`` expects their gradients (a gradient
    may be None: that parameter is skipped this step, as torch.optim skips ``grad is None``).
    """

    params: list[nn.Parameter]

    def state_tensors(self) -> list[torch.Tensor]:
        """Every tensor ``update`` mutates besides the parameters (for snapshots)."""
        raise NotImplementedError

    def reset(self, total_steps: int, whiten_steps: int) -> None:
        raise NotImplementedError

    def update(self, grads: list[torch.Tensor | None]) -> None:
        raise NotImplementedError

    def lookahead_due(self, step: int) -> bool:
        return False

    def lookahead(self) -> None:
        pass

    def finish(self) -> None:
        pass


def _nesterov_sgd(params, grads, bufs, lr: torch.Tensor, weight_decay: float, momentum: float) -> None:
    """torch.optim.SGD(nesterov=True, dampening=0) on one group, lr a 0-dim tensor:
    d = g + wd*p; buf = mu*buf + d; p -= lr * (d + mu*buf). (torch.optim starts buf at d,
    which equals mu*0 + d.)"""
    live = [(p, g, b) for p, g, b in zip(params, grads, bufs) if g is not None]
    if not live:
        return
    ps, gs, bs = (list(t) for t in zip(*live))
    d = torch._foreach_add(gs, ps, alpha=weight_decay) if weight_decay else [g.clone() for g in gs]
    torch._foreach_mul_(bs, momentum)
    torch._foreach_add_(bs, d)
    torch._foreach_add_(d, bs, alpha=momentum)
    torch._foreach_mul_(d, lr)
    torch._foreach_sub_(ps, d)


class TensorMuonSGD(TensorOptimizer):
    """``MuonSGD`` (airbench94_muon) with on-device schedules: the whitening bias lr decays
    linearly to 0 at ``whiten_steps`` (where it stays: a zero lr also stops its weight decay),
    everything else linearly to 0 at ``total_steps``."""

    def __init__(self, net: nn.Module, recipe):
        groups, filters = muon_sgd_groups(net, recipe)
        dev = filters[0].device
        self.groups = [(g["params"], g["lr"], g["weight_decay"]) for g in groups]
        self.filters, self.muon_lr = filters, recipe.muon_lr
        self.sgd_momentum, self.muon_momentum = recipe.sgd_momentum, recipe.muon_momentum
        self.params = [p for ps, _, _ in self.groups for p in ps] + filters
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.step_t = torch.zeros((), device=dev)
        self.total_t = torch.ones((), device=dev)
        self.whiten_t = torch.ones((), device=dev)

    def state_tensors(self) -> list[torch.Tensor]:
        return self.bufs + [self.step_t, self.total_t, self.whiten_t]

    @torch.no_grad()
    def reset(self, total_steps: int, whiten_steps: int) -> None:
        for b in self.bufs:
            b.zero_()
        self.step_t.zero_()
        self.total_t.fill_(total_steps)
        self.whiten_t.fill_(max(whiten_steps, 1))

    @torch.no_grad()
    def update(self, grads: list[torch.Tensor | None]) -> None:
        s = self.step_t
        frac = 1 - s / self.total_t
        factors = [(1 - s / self.whiten_t).clamp_min(0), frac, frac]
        i = 0
        for (ps, lr0, wd), f in zip(self.groups, factors):
            n = len(ps)
            _nesterov_sgd(ps, grads[i:i + n], self.bufs[i:i + n], lr0 * f, wd, self.sgd_momentum)
            i += n
        lr = self.muon_lr * frac
        mu = self.muon_momentum
        for p, g, buf in zip(self.filters, grads[i:], self.bufs[i:]):
            if g is None:
                continue
            buf.mul_(mu).add_(g)
            d = g.add(buf, alpha=mu)
            p.mul_(math.sqrt(p.shape[0]) / p.norm())
            upd = newton_schulz(d.reshape(len(d), -1), 3, dtype=_ns_dtype(p)).view(d.shape)
            p.sub_(upd.to(p.dtype) * lr)
        s.add_(1)


class TensorSGDLookahead(TensorOptimizer):
    """``SGDLookahead`` (legacy airbench94) with on-device schedules. ``lookahead`` (every 5th
    step, which the host knows) reads its decay 0.95^5 * (step/total)^3 from the counter."""

    def __init__(self, net: nn.Module, recipe):
        groups = lookahead_groups(net, recipe)
        self.groups = [(g["params"], g["lr"], g["weight_decay"]) for g in groups]
        self.momentum = recipe.sgd_momentum
        self.params = [p for ps, _, _ in self.groups for p in ps]
        dev = self.params[0].device
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.ema_src = [v for v in net.state_dict().values() if v.is_floating_point()]
        self.ema = [v.detach().clone() for v in self.ema_src]
        self.step_t = torch.zeros((), device=dev)
        self.total_t = torch.ones((), device=dev)
        self.warm_t = torch.zeros((), device=dev)

    def state_tensors(self) -> list[torch.Tensor]:
        return self.bufs + self.ema + [self.step_t, self.total_t, self.warm_t]

    @torch.no_grad()
    def reset(self, total_steps: int, whiten_steps: int) -> None:
        for b in self.bufs:
            b.zero_()
        torch._foreach_copy_(self.ema, self.ema_src)
        self.step_t.zero_()
        self.total_t.fill_(total_steps)
        self.warm_t.fill_(lookahead_warmup(total_steps))

    def lr_factor(self) -> torch.Tensor:
        s, warm, total = self.step_t, self.warm_t, self.total_t
        f_up = s / warm.clamp_min(1)
        f_down = (s - warm) / (total - warm).clamp_min(1)
        return torch.where(s < warm, 0.2 * (1 - f_up) + f_up, (1 - f_down) + 0.07 * f_down)

    @torch.no_grad()
    def update(self, grads: list[torch.Tensor | None]) -> None:
        f = self.lr_factor()
        i = 0
        for ps, lr0, wd in self.groups:
            n = len(ps)
            _nesterov_sgd(ps, grads[i:i + n], self.bufs[i:i + n], lr0 * f, wd, self.momentum)
            i += n
        self.step_t.add_(1)

    def lookahead_due(self, step: int) -> bool:
        return (step + 1) % 5 == 0

    @torch.no_grad()
    def lookahead(self) -> None:
        """After ``update``: the counter holds the number of steps done."""
        decay = 0.95 ** 5 * (self.step_t / self.total_t) ** 3
        # ema += (1 - decay) * (src - ema). Not _foreach_lerp_: it has no tensor-weight overload,
        # and a 0-dim tensor passed as its Scalar weight is read back to the host (a sync).
        diff = torch._foreach_sub(self.ema_src, self.ema)
        torch._foreach_mul_(diff, 1 - decay)
        torch._foreach_add_(self.ema, diff)
        torch._foreach_copy_(self.ema_src, self.ema)

    @torch.no_grad()
    def finish(self) -> None:
        torch._foreach_copy_(self.ema_src, self.ema)


TENSOR_OPTIMIZERS = {"muon_sgd": TensorMuonSGD, "sgd_lookahead": TensorSGDLookahead}
