"""Max-pooling with stride = kernel size (the network's 2x2 and 3x3 pools), floor mode.

Implementations
    eager    F.max_pool2d (the reference; its backward saves an int64 index per output)
    compile  F.max_pool2d under torch.compile
    triton   Triton forward and backward; the backward saves no index tensor

Ties and NaN, as F.max_pool2d picks them: a window is scanned row by row, left to right; a
value replaces the current maximum if it is strictly greater, or if it is NaN. So among equal
maxima the *first* in scan order wins; if the window holds NaN, the output is NaN and the
gradient goes to the *last* NaN. The Triton backward recomputes that choice from the saved
input, so its gradients equal the reference's exactly, ties included.

The backward grid covers ceil(H/K) x ceil(W/K) windows: full windows route dy to their argmax
and write zeros elsewhere; the partial windows past the floor-mode edge write zeros. Each
element of dx is written exactly once, so dx needs no zero-fill pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._compiled import compiled
from ._triton import HAS_TRITON, check_tensor, interpreting
from .registry import register

KERNEL_SIZES = (2, 3)


@register("maxpool", "eager")
def maxpool_eager(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Reference: F.max_pool2d (floor mode, no padding)."""
    return F.max_pool2d(x, kernel_size, stride)


register("maxpool", "compile")(compiled(
    maxpool_eager, "F.max_pool2d under torch.compile."))


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _window_base(p, Ho, Wo, sn, sh, sw, K: tl.constexpr):
        n = p // (Ho * Wo)
        r = p - n * (Ho * Wo)
        ho = r // Wo
        wo = r - ho * Wo
        return n.to(tl.int64) * sn + (ho * K).to(tl.int64) * sh + (wo * K).to(tl.int64) * sw, ho, wo

    @triton.jit
    def _maxpool_fwd_kernel(x_ptr, y_ptr, P, C, Ho, Wo,
                            sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                            K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask = (p < P)[:, None] & (c < C)[None, :]
        xbase, _, _ = _window_base(p, Ho, Wo, sxn, sxh, sxw, K)
        ybase, _, _ = _window_base(p, Ho, Wo, syn, syh, syw, 1)
        xoff = xbase[:, None] + c[None, :].to(tl.int64) * sxc
        # compared in fp32: exact for every input dtype (and bf16-safe in the interpreter)
        best = tl.load(x_ptr + xoff, mask=mask, other=0.0).to(tl.float32)
        for t in tl.static_range(1, K * K):
            v = tl.load(x_ptr + xoff + (t // K) * sxh + (t % K) * sxw, mask=mask, other=0.0).to(tl.float32)
            best = tl.where((v > best) | (v != v), v, best)
        tl.store(y_ptr + ybase[:, None] + c[None, :].to(tl.int64) * syc, best.to(y_ptr.dtype.element_ty),
                 mask=mask)

    @triton.jit
    def _maxpool_bwd_kernel(dy_ptr, x_ptr, dx_ptr, PE, C, H, W, Ho, Wo, He, We,
                            sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                            K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # one program per [BLOCK_P windows of the ceil-mode grid, BLOCK_C channels]
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        pmask = p < PE
        cmask = c < C
        n = p // (He * We)
        r = p - n * (He * We)
        ho = r // We
        wo = r - ho * We
        full = (ho < Ho) & (wo < Wo)
        xbase = n.to(tl.int64) * sxn + (ho * K).to(tl.int64) * sxh + (wo * K).to(tl.int64) * sxw
        xoff = xbase[:, None] + c[None, :].to(tl.int64) * sxc
        fmask = (pmask & full)[:, None] & cmask[None, :]
        # recompute the forward's choice: first strict maximum in scan order, last NaN
        best = tl.load(x_ptr + xoff, mask=fmask, other=0.0).to(tl.float32)
        arg = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.int32)
        for t in tl.static_range(1, K * K):
            v = tl.load(x_ptr + xoff + (t // K) * sxh + (t % K) * sxw, mask=fmask, other=0.0).to(tl.float32)
            take = (v > best) | (v != v)
            best = tl.where(take, v, best)
            arg = tl.where(take, t, arg)
        yoff = n.to(tl.int64) * syn + ho.to(tl.int64) * syh + wo.to(tl.int64) * syw
        g = tl.load(dy_ptr + yoff[:, None] + c[None, :].to(tl.int64) * syc, mask=fmask, other=0.0)
        zero = tl.zeros([BLOCK_P, BLOCK_C], dtype=g.dtype)
        for t in tl.static_range(0, K * K):
            h = ho * K + t // K
            w = wo * K + t % K
            inb = (pmask & (h < H) & (w < W))[:, None] & cmask[None, :]
            val = tl.where(full[:, None] & (arg == t), g, zero)
            tl.store(dx_ptr + xoff + (t // K) * sxh + (t % K) * sxw, val, mask=inb)


# (BLOCK_P, BLOCK_C, num_warps), listed for the static checks; _pick chooses per shape.
CONFIGS = [(64, 64, 4), (256, 16, 4), (128, 32, 4)]


def _pick(C: int, P: int):
    cpow = triton.next_power_of_2(C)
    cfg = next((c for c in CONFIGS if c[1] <= cpow), min(CONFIGS, key=lambda c: c[1]))
    if interpreting():  # the interpreter pays per program: few tall tiles
        cfg = (max(cfg[0], min(1024, triton.next_power_of_2(P))),) + cfg[1:]
    return cfg


def _out_like(x: torch.Tensor, shape) -> torch.Tensor:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.empty(shape, device=x.device, dtype=x.dtype,
                       memory_format=torch.channels_last if cl else torch.contiguous_format)


@torch.library.custom_op("speedrun::maxpool_fwd", mutates_args=())
def maxpool_fwd(x: torch.Tensor, k: int) -> torch.Tensor:
    N, C, H, W = x.shape
    Ho, Wo = H // k, W // k
    y = _out_like(x, (N, C, Ho, Wo))
    P = N * Ho * Wo
    bp, bc, warps = _pick(C, P)
    _maxpool_fwd_kernel[(triton.cdiv(P, bp), triton.cdiv(C, bc))](
        x, y, P, C, Ho, Wo, *x.stride(), *y.stride(), K=k, BLOCK_P=bp, BLOCK_C=bc, num_warps=warps)
    return y


@maxpool_fwd.register_fake
def _(x, k):
    N, C, H, W = x.shape
    return _out_like(x, (N, C, H // k, W // k))


@torch.library.custom_op("speedrun::maxpool_bwd", mutates_args=())
def maxpool_bwd(dy: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    N, C, H, W = x.shape
    Ho, Wo, He, We = H // k, W // k, triton.cdiv(H, k), triton.cdiv(W, k)
    dx = torch.empty_like(x)
    if dx.stride() != x.stride():  # keep x's strides so one set of offsets serves x and dx
        dx = torch.empty_strided(x.shape, x.stride(), device=x.device, dtype=x.dtype)
    PE = N * He * We
    bp, bc, warps = _pick(C, PE)
    _maxpool_bwd_kernel[(triton.cdiv(PE, bp), triton.cdiv(C, bc))](
        dy, x, dx, PE, C, H, W, Ho, Wo, He, We, *x.stride(), *dy.stride(),
        K=k, BLOCK_P=bp, BLOCK_C=bc, num_warps=warps)
    return dx


@maxpool_bwd.register_fake
def _(dy, x, k):
    return torch.empty_strided(x.shape, x.stride(), device=x.device, dtype=x.dtype)


def _setup_context(ctx, inputs, output):
    x, k = inputs
    ctx.save_for_backward(x)
    ctx.k = k


def _backward(ctx, dy):
    (x,) = ctx.saved_tensors
    return maxpool_bwd(dy, x, ctx.k), None


maxpool_fwd.register_autograd(_backward, setup_context=_setup_context)


@register("maxpool", "triton")
def maxpool_triton(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Triton forward and backward; the backward recomputes the argmax from the saved input
    (no int64 index tensor)."""
    check_tensor("maxpool", "x", x, dim=4)
    if kernel_size not in KERNEL_SIZES:
        raise ValueError(f"maxpool (triton): kernel_size {kernel_size} not supported; supported: {KERNEL_SIZES}")
    if stride is not None and stride != kernel_size:
        raise ValueError(f"maxpool (triton): only stride == kernel_size is supported, got stride {stride}")
    if x.shape[2] < kernel_size or x.shape[3] < kernel_size:
        raise ValueError(f"maxpool (triton): input {list(x.shape)} is smaller than the {kernel_size}x{kernel_size} window")
    return maxpool_fwd(x, kernel_size)
