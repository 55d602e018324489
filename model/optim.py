"""Optimizers of the recipes (model/recipes.py ``Recipe.optimizer``).

``MuonSGD`` (airbench94_muon, hiverge): Muon-style orthogonalised Nesterov momentum for the
conv filters, Nesterov SGD for the whitening bias, BN biases and head; linear LR decay.
hiverge adds decoupled Muon weight decay, renormalisation every 2 + int(15 * progress) steps
instead of every step, other Newton-Schulz coefficients and all filters orthogonalised as one
zero-padded batch.
``SGDLookahead`` (legacy airbench94/95/96; ``sgd_onecycle`` for hlb and mnist): Nesterov SGD
with a warm-up / warm-down schedule and a lookahead EMA of the weights every few steps
(hlb's "EMA" copies back into the network too, so it is the same mechanism, started later).

All expose ``step(step_index)``: set this step's learning rates, update, zero the grads.
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


def newton_schulz_batched(mats: list[torch.Tensor], steps: int = 3, eps: float = 1e-7,
                          coeffs: tuple[float, float, float] = NS_COEFFS,
                          dtype: torch.dtype = torch.bfloat16) -> list[torch.Tensor]:
    """``newton_schulz`` of several matrices at once (hiverge): each zero-padded to the largest
    rows x columns, stacked, iterated with batched products, cut back. Zero rows and columns
    stay zero through X X^T and its powers, so each block's result equals the per-matrix one
    up to rounding; the gain is one launch per product instead of one per matrix."""
    if not mats:
        return []
    a, b, c = coeffs
    rows = max(m.shape[0] for m in mats)
    cols = max(m.shape[1] for m in mats)
    x = mats[0].new_zeros((len(mats), rows, cols), dtype=dtype)
    for i, m in enumerate(mats):
        x[i, :m.shape[0], :m.shape[1]] = m.to(dtype)
    x = x / (x.norm(dim=(1, 2), keepdim=True) + eps)
    tall = rows > cols
    if tall:
        x = x.transpose(1, 2)
    for _ in range(steps):
        m = x @ x.transpose(1, 2)
        x = a * x + (b * m + c * (m @ m)) @ x
    if tall:
        x = x.transpose(1, 2)
    return [x[i, :m.shape[0], :m.shape[1]] for i, m in enumerate(mats)]


def renorm_due(count: int, last: int, total: int, mode: str) -> bool:
    """Whether the weights are rescaled to Frobenius norm sqrt(out) at this step (``count``
    is 1-based, ``last`` the count of the previous rescale): every step, or (hiverge) when
    2 + int(15 * count / total) steps have passed since the last one."""
    if mode == "every":
        return True
    return count - last >= 2 + int(15 * count / max(total, 1))


def _ns_dtype(p: torch.Tensor) -> torch.dtype:
    """Newton-Schulz in bf16 on a GPU (as published), fp32 on a CPU (bf16 matmuls are emulated there)."""
    return torch.float32 if p.device.type == "cpu" else torch.bfloat16


class Muon(torch.optim.Optimizer):
    """Nesterov momentum (buf = mu*buf + g; direction g + mu*buf) whose direction, reshaped to
    [out, in*k*k], is orthogonalised by Newton-Schulz. Each weight is first rescaled to
    Frobenius norm sqrt(out_channels) (every step, or when ``renorm`` "adaptive" says so).
    ``weight_decay`` is decoupled: after the update p *= 1 - lr * weight_decay. ``batched``:
    all directions orthogonalised as one zero-padded batch. Newton-Schulz runs in bf16 on a
    GPU, as published, and in fp32 on a CPU, where bf16 matrix products are emulated and ~8x
    slower."""

    def __init__(self, params, lr: float, momentum: float, nesterov: bool = True, ns_steps: int = 3,
                 weight_decay: float = 0.0, coeffs: tuple = NS_COEFFS, batched: bool = False,
                 renorm: str = "every", total_steps: int = 1):
        if lr < 0 or momentum < 0:
            raise ValueError(f"Muon: lr and momentum must be >= 0 (got {lr}, {momentum})")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
                                      weight_decay=weight_decay))
        self.coeffs, self.batched, self.renorm, self.total_steps = tuple(coeffs), batched, renorm, total_steps
        self.count = self.last_renorm = 0

    @torch.no_grad()
    def step(self):
        self.count += 1
        due = renorm_due(self.count, self.last_renorm, self.total_steps, self.renorm)
        if due:
            self.last_renorm = self.count
        for group in self.param_groups:
            mu = group["momentum"]
            live, dirs = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(mu).add_(p.grad)
                d = p.grad.add(buf, alpha=mu) if group["nesterov"] else buf
                if due:
                    p.mul_(math.sqrt(p.shape[0]) / p.norm())
                live.append(p)
                dirs.append(d.reshape(len(d), -1))
            if not live:
                continue
            dt = _ns_dtype(live[0])
            if self.batched:
                updates = newton_schulz_batched(dirs, group["ns_steps"], coeffs=self.coeffs, dtype=dt)
            else:
                updates = [newton_schulz(d, group["ns_steps"], coeffs=self.coeffs, dtype=dt) for d in dirs]
            decay = 1 - group["lr"] * group["weight_decay"]
            for p, u in zip(live, updates):
                p.add_(u.view(p.shape).to(p.dtype), alpha=-group["lr"])
                if decay != 1:
                    p.mul_(decay)


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


def onecycle_groups(net: nn.Module, recipe) -> list[dict]:
    """hlb's split (also mnist's): biases at ``bias_scaler`` x the lr and 1/bias_scaler the
    weight decay, everything else at the lr; PyTorch (coupled) weight decay = wd x batch."""
    wd = recipe.weight_decay * recipe.batch_size
    biases = [p for n, p in net.named_parameters() if "bias" in n and p.requires_grad]
    others = [p for n, p in net.named_parameters() if "bias" not in n and p.requires_grad]
    return [dict(params=biases, lr=recipe.lr * recipe.bias_scaler, weight_decay=wd / recipe.bias_scaler),
            dict(params=others, lr=recipe.lr, weight_decay=wd)]


SGD_GROUPS = {"sgd_lookahead": lookahead_groups, "sgd_onecycle": onecycle_groups}


def lookahead_warmup(total_steps: int, frac: float = 0.23) -> int:
    return int(total_steps * frac)


def lr_factor(step: int, total: int, warm: int, start: float, end: float) -> float:
    """Linear from ``start`` to 1 over the first ``warm`` steps, then linear to ``end`` at ``total``."""
    if step < warm:
        f = step / warm
        return start * (1 - f) + f
    f = (step - warm) / max(total - warm, 1)
    return (1 - f) + end * f


def lookahead_start(recipe, steps_per_epoch: int) -> int:
    """The step from which the lookahead runs (hlb: from epoch 2; airbench: from the start)."""
    return int(math.ceil(recipe.lookahead_from_epoch * steps_per_epoch))


class MuonSGD:
    """The airbench94_muon optimizer split and schedules (torch.optim; the eager baseline)."""

    def __init__(self, net: nn.Module, recipe, total_steps: int, whiten_steps: int, steps_per_epoch: int = 1):
        self.total_steps, self.whiten_steps = total_steps, max(whiten_steps, 1)
        groups, filters = muon_sgd_groups(net, recipe)
        all_sgd = [p for g in groups for p in g["params"]]
        self.sgd = torch.optim.SGD(groups, momentum=recipe.sgd_momentum, nesterov=True,
                                   fused=_fused_ok(all_sgd) or None)
        self.muon = Muon(filters, lr=recipe.muon_lr, momentum=recipe.muon_momentum, nesterov=True,
                         weight_decay=recipe.muon_weight_decay * recipe.batch_size, coeffs=recipe.ns_coeffs,
                         batched=recipe.ns_batched, renorm=recipe.renorm, total_steps=total_steps)
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
    """The legacy airbench optimizer: Nesterov SGD in "decoupled" hyper-parameters, BN biases
    at ``bias_scaler`` x the lr, LR ``lr_start`` x -> 1x over the first ``lr_peak_frac`` of the
    steps then -> ``lr_end`` x, lookahead EMA every ``lookahead_every`` steps with decay
    0.95^5 * (step/total)^3; weights = EMA at the end. With ``sgd_onecycle`` (hlb, mnist): hlb's
    groups and PyTorch hyper-parameters, and the EMA from ``lookahead_from_epoch`` on, its first
    call a snapshot."""

    def __init__(self, net: nn.Module, recipe, total_steps: int, whiten_steps: int, steps_per_epoch: int = 1):
        self.net, self.total_steps, self.recipe = net, total_steps, recipe
        groups = SGD_GROUPS[recipe.optimizer](net, recipe)
        self.sgd = torch.optim.SGD(groups, momentum=recipe.sgd_momentum, nesterov=True,
                                   fused=_fused_ok([p for g in groups for p in g["params"]]) or None)
        for g in self.sgd.param_groups:
            g["initial_lr"] = g["lr"]
        self.warmup = lookahead_warmup(total_steps, recipe.lr_peak_frac)
        self.start = lookahead_start(recipe, steps_per_epoch)
        self.snapshot = recipe.lookahead_from_epoch > 0
        self.ema = {k: v.detach().clone() for k, v in net.state_dict().items() if v.is_floating_point()}
        self.started = False

    def lr_factor(self, step: int) -> float:
        return lr_factor(step, self.total_steps, self.warmup, self.recipe.lr_start, self.recipe.lr_end)

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
        if done % self.recipe.lookahead_every == 0 and step >= self.start:
            first = self.snapshot and not self.started
            self.started = True
            self._lookahead(0.0 if first else 0.95 ** 5 * (done / self.total_steps) ** 3)

    def finish(self) -> None:
        if self.started or not self.snapshot:
            self._lookahead(1.0)


SGDOneCycle = SGDLookahead


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

    def reset(self, total_steps: int, whiten_steps: int, steps_per_epoch: int = 1) -> None:
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
        self.recipe = recipe
        self.groups = [(g["params"], g["lr"], g["weight_decay"]) for g in groups]
        self.filters, self.muon_lr = filters, recipe.muon_lr
        self.muon_wd = recipe.muon_weight_decay * recipe.batch_size
        self.last_renorm_t = torch.zeros((), device=dev)
        self.sgd_momentum, self.muon_momentum = recipe.sgd_momentum, recipe.muon_momentum
        self.params = [p for ps, _, _ in self.groups for p in ps] + filters
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.step_t = torch.zeros((), device=dev)
        self.total_t = torch.ones((), device=dev)
        self.whiten_t = torch.ones((), device=dev)

    def state_tensors(self) -> list[torch.Tensor]:
        return self.bufs + [self.step_t, self.total_t, self.whiten_t, self.last_renorm_t]

    @torch.no_grad()
    def reset(self, total_steps: int, whiten_steps: int, steps_per_epoch: int = 1) -> None:
        for b in self.bufs:
            b.zero_()
        self.step_t.zero_()
        self.last_renorm_t.zero_()
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
        r = self.recipe
        if r.renorm == "every":
            due = None
        else:  # on the device: one graph serves every step
            count = s + 1
            due = (count - self.last_renorm_t) >= 2 + torch.floor(15 * count / self.total_t)
            self.last_renorm_t.copy_(torch.where(due, count, self.last_renorm_t))
        live, dirs = [], []
        for p, g, buf in zip(self.filters, grads[i:], self.bufs[i:]):
            if g is None:
                continue
            buf.mul_(mu).add_(g)
            d = g.add(buf, alpha=mu)
            scale = math.sqrt(p.shape[0]) / p.norm()
            p.mul_(scale if due is None else torch.where(due, scale, torch.ones_like(scale)))
            live.append(p)
            dirs.append(d.reshape(len(d), -1))
        if live:
            dt = _ns_dtype(live[0])
            ups = (newton_schulz_batched(dirs, 3, coeffs=r.ns_coeffs, dtype=dt) if r.ns_batched
                   else [newton_schulz(d, 3, coeffs=r.ns_coeffs, dtype=dt) for d in dirs])
            for p, u in zip(live, ups):
                p.sub_(u.view(p.shape).to(p.dtype) * lr)
                if self.muon_wd:
                    p.mul_(1 - lr * self.muon_wd)
        s.add_(1)


class TensorSGDLookahead(TensorOptimizer):
    """``SGDLookahead`` (airbench94/95/96, and hlb/mnist as ``sgd_onecycle``) with on-device
    schedules. ``lookahead`` (every few steps, which the host knows) reads its decay
    0.95^5 * (step/total)^3 from the counter; hlb's first call (a snapshot) is decay 0, chosen
    on the device too, so one graph serves every call."""

    def __init__(self, net: nn.Module, recipe):
        groups = SGD_GROUPS[recipe.optimizer](net, recipe)
        self.recipe = recipe
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
        self.first_t = torch.full((), -1.0, device=dev)  # the step count of the snapshot call (hlb), else -1
        self.start = 0
        self.snapshot = recipe.lookahead_from_epoch > 0
        self.started = False

    def state_tensors(self) -> list[torch.Tensor]:
        return self.bufs + self.ema + [self.step_t, self.total_t, self.warm_t, self.first_t]

    @torch.no_grad()
    def reset(self, total_steps: int, whiten_steps: int, steps_per_epoch: int = 1) -> None:
        for b in self.bufs:
            b.zero_()
        torch._foreach_copy_(self.ema, self.ema_src)
        self.step_t.zero_()
        self.total_t.fill_(total_steps)
        self.warm_t.fill_(lookahead_warmup(total_steps, self.recipe.lr_peak_frac))
        self.start = lookahead_start(self.recipe, steps_per_epoch)
        every = self.recipe.lookahead_every
        first = next((d for d in range(every, total_steps + 1, every) if d - 1 >= self.start), -1)
        self.first_t.fill_(first if self.snapshot else -1)
        self.started = False

    def lr_factor(self) -> torch.Tensor:
        s, warm, total = self.step_t, self.warm_t, self.total_t
        start, end = self.recipe.lr_start, self.recipe.lr_end
        f_up = s / warm.clamp_min(1)
        f_down = (s - warm) / (total - warm).clamp_min(1)
        return torch.where(s < warm, start * (1 - f_up) + f_up, (1 - f_down) + end * f_down)

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
        due = (step + 1) % self.recipe.lookahead_every == 0 and step >= self.start
        if due:
            self.started = True
        return due

    @torch.no_grad()
    def lookahead(self) -> None:
        """After ``update``: the counter holds the number of steps done."""
        decay = 0.95 ** 5 * (self.step_t / self.total_t) ** 3
        decay = torch.where(self.step_t == self.first_t, torch.zeros_like(decay), decay)
        # ema += (1 - decay) * (src - ema). Not _foreach_lerp_: it has no tensor-weight overload,
        # and a 0-dim tensor passed as its Scalar weight is read back to the host (a sync).
        diff = torch._foreach_sub(self.ema_src, self.ema)
        torch._foreach_mul_(diff, 1 - decay)
        torch._foreach_add_(self.ema, diff)
        torch._foreach_copy_(self.ema_src, self.ema)

    @torch.no_grad()
    def finish(self) -> None:
        if self.started or not self.snapshot:
            torch._foreach_copy_(self.ema_src, self.ema)


TENSOR_OPTIMIZERS = {"muon_sgd": TensorMuonSGD, "sgd_lookahead": TensorSGDLookahead,
                     "sgd_onecycle": TensorSGDLookahead}
