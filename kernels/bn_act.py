"""BatchNorm + activation: ``act(batch_norm(x, ...))`` with act in {gelu, silu}.

Implementations
    eager    F.batch_norm + F.gelu / F.silu (the reference)
    compile  the reference under torch.compile
    triton   fused Triton kernels, forward and backward (below)

The Triton path views a 4-D activation as a matrix [M = N*H*W, C]: in channels_last memory
that matrix is row-major (row m = one pixel, its C channels contiguous), in NCHW memory each
channel is N runs of H*W contiguous values. Every kernel works on [BLOCK_M, BLOCK_C] tiles
of it and reduces over M.

Training forward (3 launches + 1 for the running statistics)
    1. _stats_kernel: each program walks ROWS rows of its channel block and keeps a running
       (mean, M2) per channel. A tile's own mean and sum of squared deviations are computed from
       registers, then merged with Chan's parallel formula, so there is no E[x^2] - E[x]^2
       cancellation when |mean| >> std. Output: one (mean, M2) partial row per program.
    2. _finalize_kernel: merges the partial rows of a channel block (tl.reduce with the same
       Chan combine) into mean and biased variance, in fp32.
    3. _apply_kernel: y = act(x * scale + shift), scale = w / sqrt(var + eps),
       shift = b - mean * scale, written in x's dtype.
    4. _running_kernel (its own mutating custom op, outside autograd):
       running = (1 - momentum) * running + momentum * batch, with the unbiased variance.
Eval forward: step 3 alone, from the running statistics.

Backward (2 launches + a column sum): nothing activation-sized is saved but x itself.
    z = w * xhat + b is recomputed from x, mean, var; dz = dy * act'(z).
    1. _bwd_reduce_kernel: per-program partial sums of dz and dz * xhat (= dbias, dweight).
    2. _bwd_dx_kernel: training: dx = w * invstd * (dz - mean(dz) - xhat * mean(dz * xhat));
       eval: dx = w * invstd * dz.
Traffic at the real shapes: forward reads x twice and writes y once; backward reads x and dy
twice and writes dx once (8 passes over an activation for forward + backward).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from ._compiled import compiled
from ._triton import HAS_TRITON, check_tensor, interpreting, memory_layout
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


# ------------------------------------------------------------------------------------ kernels
if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _offsets(rows, cols, M, C, HW, CHANNELS_LAST: tl.constexpr):
        """Element offsets and mask of the [rows, cols] tile of the [M, C] view."""
        mask = (rows[:, None] < M) & (cols[None, :] < C)
        if CHANNELS_LAST:
            offs = rows[:, None].to(tl.int64) * C + cols[None, :]
        else:
            n = rows // HW
            hw = rows - n * HW
            offs = (n.to(tl.int64) * C * HW + hw)[:, None] + cols[None, :].to(tl.int64) * HW
        return offs, mask

    @triton.jit
    def _chan_combine(mean_a, m2_a, n_a, mean_b, m2_b, n_b):
        """Merge two (mean, M2, count) summaries (Chan et al.); empty summaries are neutral."""
        n = n_a + n_b
        w_b = tl.where(n > 0, n_b / tl.maximum(n, 1.0), 0.0)
        delta = mean_b - mean_a
        return mean_a + delta * w_b, m2_a + m2_b + delta * delta * n_a * w_b, n

    @triton.jit
    def _act_fwd(z, ACT: tl.constexpr):
        if ACT == 0:  # exact (erf) GELU, as F.gelu
            return 0.5 * z * (1.0 + tl.math.erf(z * 0.7071067811865476))
        else:  # SiLU
            return z / (1.0 + tl.exp(-z))

    @triton.jit
    def _act_grad(z, ACT: tl.constexpr):
        if ACT == 0:
            cdf = 0.5 * (1.0 + tl.math.erf(z * 0.7071067811865476))
            return cdf + z * 0.3989422804014327 * tl.exp(-0.5 * z * z)
        else:
            s = 1.0 / (1.0 + tl.exp(-z))
            return s * (1.0 + z * (1.0 - s))

    @triton.jit
    def _stats_kernel(x_ptr, pmean_ptr, pm2_ptr, M, C, HW, ROWS,
                      BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr):
        pid_m = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        start = pid_m * ROWS
        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        for i in range(0, ROWS, BLOCK_M):
            rows = start + i + tl.arange(0, BLOCK_M)
            offs, mask = _offsets(rows, cols, M, C, HW, CHANNELS_LAST)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            n_seen = tl.minimum(tl.maximum(M - start, 0), i).to(tl.float32)
            n_tile = tl.minimum(tl.maximum(M - start - i, 0), BLOCK_M).to(tl.float32)
            t_mean = tl.sum(x, axis=0) / tl.maximum(n_tile, 1.0)
            d = tl.where(mask, x - t_mean[None, :], 0.0)
            t_m2 = tl.sum(d * d, axis=0)
            mean, m2, _ = _chan_combine(mean, m2, n_seen, t_mean, t_m2, n_tile)
        cmask = cols < C
        tl.store(pmean_ptr + pid_m * C + cols, mean, mask=cmask)
        tl.store(pm2_ptr + pid_m * C + cols, m2, mask=cmask)

    @triton.jit
    def _finalize_kernel(pmean_ptr, pm2_ptr, mean_ptr, var_ptr, P, M, C, ROWS,
                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        mean = tl.zeros([BLOCK_C], dtype=tl.float32)
        m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
        n = tl.zeros([BLOCK_C], dtype=tl.float32)
        for p0 in range(0, P, BLOCK_P):
            ps = p0 + tl.arange(0, BLOCK_P)
            mask = (ps[:, None] < P) & (cols[None, :] < C)
            pm = tl.load(pmean_ptr + ps[:, None] * C + cols[None, :], mask=mask, other=0.0)
            pq = tl.load(pm2_ptr + ps[:, None] * C + cols[None, :], mask=mask, other=0.0)
            cnt = tl.minimum(tl.maximum(M - ps * ROWS, 0), ROWS).to(tl.float32)
            pn = tl.where(mask, cnt[:, None] + tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32), 0.0)
            b_mean, b_m2, b_n = tl.reduce((pm, pq, pn), 0, _chan_combine)
            mean, m2, n = _chan_combine(mean, m2, n, b_mean, b_m2, b_n)
        cmask = cols < C
        tl.store(mean_ptr + cols, mean, mask=cmask)
        tl.store(var_ptr + cols, m2 / tl.maximum(n, 1.0), mask=cmask)

    @triton.jit
    def _channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps,
                        HAS_W: tl.constexpr, HAS_B: tl.constexpr):
        cmask = cols < C
        mean = tl.load(mean_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        invstd = 1.0 / tl.sqrt(tl.load(var_ptr + cols, mask=cmask, other=1.0).to(tl.float32) + eps)
        w = tl.load(w_ptr + cols, mask=cmask, other=1.0).to(tl.float32) if HAS_W else invstd * 0.0 + 1.0
        b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32) if HAS_B else invstd * 0.0
        return mean, invstd, w, b

    @triton.jit
    def _apply_kernel(x_ptr, y_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, M, C, HW, eps,
                      BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                      HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mean, invstd, w, b = _channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, HAS_W, HAS_B)
        scale = w * invstd
        shift = b - mean * scale
        offs, mask = _offsets(rows, cols, M, C, HW, CHANNELS_LAST)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = _act_fwd(x * scale[None, :] + shift[None, :], ACT)
        tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _running_kernel(rm_ptr, rv_ptr, mean_ptr, var_ptr, C, momentum, unbias, BLOCK_C: tl.constexpr):
        cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        m = cols < C
        rm = tl.load(rm_ptr + cols, mask=m).to(tl.float32)
        rv = tl.load(rv_ptr + cols, mask=m).to(tl.float32)
        mean = tl.load(mean_ptr + cols, mask=m)
        var = tl.load(var_ptr + cols, mask=m)
        tl.store(rm_ptr + cols, ((1 - momentum) * rm + momentum * mean).to(rm_ptr.dtype.element_ty), mask=m)
        tl.store(rv_ptr + cols, ((1 - momentum) * rv + momentum * var * unbias).to(rv_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _bwd_reduce_kernel(dy_ptr, x_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, pdz_ptr, pdzx_ptr,
                           M, C, HW, ROWS, eps,
                           BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                           HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr):
        pid_m = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mean, invstd, w, b = _channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, HAS_W, HAS_B)
        s_dz = tl.zeros([BLOCK_C], dtype=tl.float32)
        s_dzx = tl.zeros([BLOCK_C], dtype=tl.float32)
        for i in range(0, ROWS, BLOCK_M):
            rows = pid_m * ROWS + i + tl.arange(0, BLOCK_M)
            offs, mask = _offsets(rows, cols, M, C, HW, CHANNELS_LAST)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            xhat = (x - mean[None, :]) * invstd[None, :]
            dz = tl.where(mask, dy * _act_grad(xhat * w[None, :] + b[None, :], ACT), 0.0)
            s_dz += tl.sum(dz, axis=0)
            s_dzx += tl.sum(dz * xhat, axis=0)
        cmask = cols < C
        tl.store(pdz_ptr + pid_m * C + cols, s_dz, mask=cmask)
        tl.store(pdzx_ptr + pid_m * C + cols, s_dzx, mask=cmask)

    @triton.jit
    def _bwd_dx_kernel(dy_ptr, x_ptr, dx_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, sdz_ptr, sdzx_ptr,
                       M, C, HW, eps,
                       BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                       HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr, TRAINING: tl.constexpr):
        rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mean, invstd, w, b = _channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, HAS_W, HAS_B)
        offs, mask = _offsets(rows, cols, M, C, HW, CHANNELS_LAST)
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        xhat = (x - mean[None, :]) * invstd[None, :]
        dz = dy * _act_grad(xhat * w[None, :] + b[None, :], ACT)
        if TRAINING:
            cmask = cols < C
            m_dz = tl.load(sdz_ptr + cols, mask=cmask, other=0.0) / M
            m_dzx = tl.load(sdzx_ptr + cols, mask=cmask, other=0.0) / M
            dz = dz - m_dz[None, :] - xhat * m_dzx[None, :]
        dx = dz * (w * invstd)[None, :]
        tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------- launchers
# Block configurations: (BLOCK_M, BLOCK_C, num_warps) for the elementwise and the reducing kernels.
# Listed here so that tools (profiling static) can compile every one of them.
APPLY_CONFIGS = [(64, 64, 4), (128, 32, 4), (32, 128, 4), (128, 64, 8)]
REDUCE_CONFIGS = [(32, 64, 4), (64, 32, 4), (16, 128, 4)]
TARGET_PROGRAMS = 1024   # reduction programs per launch: enough to fill an H100 (132 SMs) several times
# The Triton interpreter (CPU) pays per program, not per element: there, launch few tall tiles.
INTERPRETER_PROGRAMS, INTERPRETER_BLOCK_M = 4, 512


def _pick(configs, C: int, M: int | None = None):
    """The first configuration whose channel block is not wider than needed."""
    cpow = triton.next_power_of_2(C)
    cfg = next((c for c in configs if c[1] <= cpow), min(configs, key=lambda c: c[1]))
    if M is not None and interpreting():
        cfg = (max(cfg[0], min(INTERPRETER_BLOCK_M, triton.next_power_of_2(M))),) + cfg[1:]
    return cfg


def _geometry(x: torch.Tensor):
    n, c, h, w = x.shape
    return n * h * w, c, h * w


def _reduce_grid(M: int, C: int):
    bm, bc, warps = _pick(REDUCE_CONFIGS, C, M)
    cblocks = triton.cdiv(C, bc)
    per_cblock = max(1, (INTERPRETER_PROGRAMS if interpreting() else TARGET_PROGRAMS) // cblocks)
    rows = max(bm, triton.cdiv(triton.cdiv(M, per_cblock), bm) * bm)
    return bm, bc, warps, rows, triton.cdiv(M, rows), cblocks


_ACT_CODE = {"gelu": 0, "silu": 1}


def _opt(t, like: torch.Tensor):
    """``t``, or a placeholder on ``like``'s device for an absent tensor: the kernel never reads it
    (HAS_W / HAS_B are False), but Triton checks that every pointer lives on the launch device."""
    return t if t is not None else like.new_empty(0, dtype=torch.float32)


@torch.library.custom_op("speedrun::bn_act_fwd", mutates_args=())
def bn_act_fwd(x: torch.Tensor, mean_in: torch.Tensor | None, var_in: torch.Tensor | None,
               weight: torch.Tensor | None, bias: torch.Tensor | None, training: bool, eps: float,
               activation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y = act(batch_norm(x)); returns (y, mean, biased var) of the statistics it used (fp32 [C])."""
    x, cl = memory_layout(x)
    M, C, HW = _geometry(x)
    y = torch.empty_like(x)
    if training:
        bm, bc, warps, rows, P, cblocks = _reduce_grid(M, C)
        pmean = torch.empty((P, C), device=x.device, dtype=torch.float32)
        pm2 = torch.empty_like(pmean)
        _stats_kernel[(P, cblocks)](x, pmean, pm2, M, C, HW, rows, BLOCK_M=bm, BLOCK_C=bc,
                                    CHANNELS_LAST=cl, num_warps=warps)
        mean = torch.empty(C, device=x.device, dtype=torch.float32)
        var = torch.empty_like(mean)
        fbc = min(32, triton.next_power_of_2(C))
        _finalize_kernel[(triton.cdiv(C, fbc),)](pmean, pm2, mean, var, P, M, C, rows,
                                                  BLOCK_P=min(64, max(2, triton.next_power_of_2(P))), BLOCK_C=fbc,
                                                  num_warps=4)
    else:
        mean, var = mean_in.float().clone(), var_in.float().clone()
    bm, bc, warps = _pick(APPLY_CONFIGS, C, M)
    _apply_kernel[(triton.cdiv(M, bm), triton.cdiv(C, bc))](
        x, y, mean, var, _opt(weight, x), _opt(bias, x), M, C, HW, eps, BLOCK_M=bm, BLOCK_C=bc, CHANNELS_LAST=cl,
        HAS_W=weight is not None, HAS_B=bias is not None, ACT=_ACT_CODE[activation], num_warps=warps)
    return y, mean, var


@bn_act_fwd.register_fake
def _(x, mean_in, var_in, weight, bias, training, eps, activation):
    C = x.shape[1]
    return (torch.empty_like(x), x.new_empty(C, dtype=torch.float32), x.new_empty(C, dtype=torch.float32))


@torch.library.custom_op("speedrun::bn_act_bwd", mutates_args=())
def bn_act_bwd(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
               weight: torch.Tensor | None, bias: torch.Tensor | None, training: bool, eps: float,
               activation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) of bn_act_fwd; dweight/dbias in fp32."""
    x, cl = memory_layout(x)
    dy = dy.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    M, C, HW = _geometry(x)
    bm, bc, warps, rows, P, cblocks = _reduce_grid(M, C)
    pdz = torch.empty((P, C), device=x.device, dtype=torch.float32)
    pdzx = torch.empty_like(pdz)
    flags = dict(CHANNELS_LAST=cl, HAS_W=weight is not None, HAS_B=bias is not None, ACT=_ACT_CODE[activation])
    _bwd_reduce_kernel[(P, cblocks)](dy, x, mean, var, _opt(weight, x), _opt(bias, x), pdz, pdzx, M, C, HW, rows, eps,
                                     BLOCK_M=bm, BLOCK_C=bc, num_warps=warps, **flags)
    sdz, sdzx = pdz.sum(0), pdzx.sum(0)
    dx = torch.empty_like(x)
    bm, bc, warps = _pick(APPLY_CONFIGS, C, M)
    _bwd_dx_kernel[(triton.cdiv(M, bm), triton.cdiv(C, bc))](
        dy, x, dx, mean, var, _opt(weight, x), _opt(bias, x), sdz, sdzx, M, C, HW, eps,
        BLOCK_M=bm, BLOCK_C=bc, num_warps=warps, TRAINING=training, **flags)
    return dx, sdzx, sdz


@bn_act_bwd.register_fake
def _(dy, x, mean, var, weight, bias, training, eps, activation):
    C = x.shape[1]
    return torch.empty_like(x), x.new_empty(C, dtype=torch.float32), x.new_empty(C, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, _, _, weight, bias, training, eps, activation = inputs
    _, mean, var = output
    ctx.save_for_backward(x, mean, var, weight, bias)
    ctx.training, ctx.eps, ctx.activation = training, eps, activation


def _backward(ctx, dy, _dmean, _dvar):
    x, mean, var, weight, bias = ctx.saved_tensors
    dx, dw, db = bn_act_bwd(dy, x, mean, var, weight, bias, ctx.training, ctx.eps, ctx.activation)
    dw = dw.to(weight.dtype) if weight is not None and ctx.needs_input_grad[3] else None
    db = db.to(bias.dtype) if bias is not None and ctx.needs_input_grad[4] else None
    return dx, None, None, dw, db, None, None, None


bn_act_fwd.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("speedrun::bn_running_update", mutates_args=("running_mean", "running_var"))
def bn_running_update(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor,
                      var: torch.Tensor, momentum: float, count: int) -> None:
    """running = (1 - momentum) * running + momentum * batch statistic (variance unbiased)."""
    C = mean.numel()
    bc = min(1024, triton.next_power_of_2(C))
    _running_kernel[(triton.cdiv(C, bc),)](running_mean, running_var, mean, var, C, momentum,
                                           count / max(count - 1, 1), BLOCK_C=bc)


@bn_running_update.register_fake
def _(running_mean, running_var, mean, var, momentum, count):
    return None


@register("bn_act", "triton")
def bn_act_triton(x: torch.Tensor, running_mean, running_var, weight=None, bias=None,
                  training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                  activation: str = "gelu") -> torch.Tensor:
    """Fused Triton kernels: Chan-merged batch statistics, normalise + affine + activation, and a
    backward that recomputes the activation from x (nothing activation-sized saved)."""
    check_activation(activation)
    check_tensor("bn_act", "x", x, dim=4)
    C = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor("bn_act", name, t, dim=1)
            if t.numel() != C:
                raise ValueError(f"bn_act (triton): {name} has {t.numel()} elements, x has {C} channels")
            if t.device != x.device:
                raise RuntimeError(f"bn_act (triton): {name} is on {t.device}, x on {x.device}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("bn_act (triton): eval mode (training=False) needs running_mean and running_var")
    if training and momentum is None:
        raise ValueError("bn_act (triton): momentum=None (cumulative average) is not supported")
    count = x.numel() // C
    if training and count <= 1:
        raise ValueError(f"bn_act: expected more than 1 value per channel when training, got input size "
                         f"{list(x.shape)}")
    y, mean, var = bn_act_fwd(x, running_mean, running_var, weight, bias, training, eps, activation)
    if training and running_mean is not None and running_var is not None:
        bn_running_update(running_mean, running_var, mean.detach(), var.detach(), momentum, count)
    return y
