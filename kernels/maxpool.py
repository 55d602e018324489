"""Max-pooling with stride = kernel size (the network's 2x2 and 3x3 pools), floor mode.

Implementations
    eager              F.max_pool2d (the reference; its backward saves an int64 index per output)
    compile            F.max_pool2d under torch.compile
    triton             Triton forward and backward with a 1-byte window index: the forward also
                       writes, per output, which of the K*K window elements won (uint8); the
                       backward routes dy there and writes zeros elsewhere, reading neither x nor
                       an int64 index. The pre-pool activation (4x the pooled size for 2x2) need not
                       be kept for the backward.
    triton_recompute   the backward recomputes the winner from the saved input instead (no index
                       at all, but it keeps x alive and reads it again).

Bytes of forward + backward per pooled element (2x2, fp16: x is 4 elements of 2 bytes):
triton 8 + 2 + 1 (fwd) + 1 + 2 + 8 (bwd) = 22; triton_recompute 8 + 2 + 8 + 2 + 8 = 28. The
static model (``python -m profiling static``) predicts the index design faster on both GPUs;
it is the default until a GPU measurement says otherwise (``profiling bench`` times both).

Ties and NaN, as F.max_pool2d picks them: a window is scanned row by row, left to right; a
value replaces the current maximum if it is strictly greater, or if it is NaN. So among equal
maxima the *first* in scan order wins; if the window holds NaN, the output is NaN and the
gradient goes to the *last* NaN. Both designs make exactly that choice, so their gradients equal
the reference's bit for bit, ties included.

The backward grid covers ceil(H/K) x ceil(W/K) windows: full windows route dy to their winner
and write zeros elsewhere; the partial windows past the floor-mode edge write zeros. Each
element of dx is written exactly once, so dx needs no zero-fill pass. Every kernel is a
grid-stride loop over its tiles on a grid of whole waves (kernels/_triton.py).
"""
from __future__ import annotations

from collections import namedtuple

import torch
import torch.nn.functional as F

from . import fp8
from ._compiled import compiled
from ._triton import HAS_TRITON, check_tensor, interpreting, launch, programs_per_wave, sm_count
from .registry import register
from .spec import (ConfigList, OpSpec, SampleCall, Sampler, Work, grid_of, register_spec,
                   stride_iters)

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

    from .fp8 import fp8_amax_of, fp8_amax_update, fp8_cast, fp8_rollover, fp8_scale

    @triton.jit
    def _window(p, Ho, Wo, sn, sh, sw, K: tl.constexpr):
        """Offset of the first element of the KxK window of output pixels ``p`` (flat over N, Ho, Wo)
        in a tensor with strides sn, sh, sw (K = 1: the output pixel itself), and (ho, wo)."""
        n = p // (Ho * Wo)
        r = p - n * (Ho * Wo)
        ho = r // Wo
        wo = r - ho * Wo
        return n.to(tl.int64) * sn + (ho * K).to(tl.int64) * sh + (wo * K).to(tl.int64) * sw, ho, wo

    @triton.jit
    def _winner(x_ptr, xoff, mask, sxh, sxw, K: tl.constexpr):
        """(max, index of the winning window element): first strict maximum in scan order, last NaN.
        Compared in fp32: exact for every input dtype (and bf16-safe in the interpreter). x_ptr + xoff:
        each window's first element (mask: the live ones); sxh, sxw: x's row and column strides."""
        best = tl.load(x_ptr + xoff, mask=mask, other=0.0).to(tl.float32)
        arg = tl.zeros(xoff.shape, dtype=tl.int32)
        for t in tl.static_range(1, K * K):
            v = tl.load(x_ptr + xoff + (t // K) * sxh + (t % K) * sxw, mask=mask, other=0.0).to(tl.float32)
            take = (v > best) | (v != v)
            best = tl.where(take, v, best)
            arg = tl.where(take, t, arg)
        return best, arg

    @triton.jit
    def _maxpool_fwd_kernel(x_ptr, y_ptr, idx_ptr, P, C, Ho, Wo, TILES,
                            sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                            K: tl.constexpr, SAVE_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """y = the maximum of each KxK window (stride K, no padding), and its 1-byte index (SAVE_INDEX).

        x_ptr    input, any strides: sxn, sxc, sxh, sxw in elements
        y_ptr    output [N][C][Ho][Wo] with strides syn, syc, syh, syw; idx_ptr: uint8 window index
                 (0 .. K*K-1, scan order) with y's strides (SAVE_INDEX)
        P        output pixels N * Ho * Wo; C channels (program_id 1, BLOCK_C each)
        TILES    pixel tiles of BLOCK_P, walked grid-stride by program_id 0"""
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        for tile in range(tl.program_id(0), TILES, tl.num_programs(0)):  # grid-stride over output tiles
            p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
            mask = (p < P)[:, None] & (c < C)[None, :]
            xbase, _, _ = _window(p, Ho, Wo, sxn, sxh, sxw, K)
            ybase, _, _ = _window(p, Ho, Wo, syn, syh, syw, 1)
            best, arg = _winner(x_ptr, xbase[:, None] + c[None, :].to(tl.int64) * sxc, mask, sxh, sxw, K)
            yoff = ybase[:, None] + c[None, :].to(tl.int64) * syc
            tl.store(y_ptr + yoff, best.to(y_ptr.dtype.element_ty), mask=mask)
            if SAVE_INDEX:  # the index tensor has y's strides
                tl.store(idx_ptr + yoff, arg.to(tl.uint8), mask=mask)

    @triton.jit
    def _maxpool_bwd_kernel(dy_ptr, x_ptr, idx_ptr, dx_ptr, q_ptr, st_ptr, s_ptr, cnt_ptr, nf_ptr,
                            PE, C, H, W, Ho, Wo, He, We, TILES,
                            sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                            K: tl.constexpr, FROM_INDEX: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                            FP8_OUT: tl.constexpr, E5: tl.constexpr):
        # programs walk [BLOCK_P windows of the ceil-mode grid, BLOCK_C channels] tiles; dx has x's strides.
        # FP8_OUT: also dx's fp8 copy (same strides) for the conv=fp8 whose output x was (kernels/fp8.py)
        """dx: each window's gradient to its winner, zero elsewhere (every element of x written once, so
        dx needs no zeroing pass); FP8_OUT: also dx's fp8 copy.

        dy_ptr   the output gradient, strides syn, syc, syh, syw (the forward's y)
        x_ptr    the forward's input (FROM_INDEX false: the winner recomputed); strides sxn, sxc, sxh, sxw
        idx_ptr  the forward's uint8 window index, y's strides (FROM_INDEX)
        dx_ptr   the input gradient, x's strides; H, W: x's size, Ho, Wo: y's
        He, We   the ceil-mode window grid (covers a last partial row / column, whose dx is zero)
        PE       windows of that grid, N * He * We; TILES: tiles of BLOCK_P windows (grid-stride)
        q_ptr, st_ptr, s_ptr, cnt_ptr, nf_ptr  FP8_OUT: dx's fp8 copy (x's strides; e5m2 when E5)
                 and the delayed scale's state, as in _bwd_dx_kernel of bn_act"""
        c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = c < C
        FMAX: tl.constexpr = 57344.0 if E5 else 448.0
        if FP8_OUT:
            q_scale = fp8_scale(st_ptr, FMAX)
            inv_q = 1.0 / q_scale
            amax = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for tile in range(tl.program_id(0), TILES, tl.num_programs(0)):
            p = tile * BLOCK_P + tl.arange(0, BLOCK_P)
            pmask = p < PE
            n = p // (He * We)
            r = p - n * (He * We)
            ho = r // We
            wo = r - ho * We
            full = (ho < Ho) & (wo < Wo)
            xoff = (n.to(tl.int64) * sxn + (ho * K).to(tl.int64) * sxh + (wo * K).to(tl.int64) * sxw)[:, None] \
                + c[None, :].to(tl.int64) * sxc
            fmask = (pmask & full)[:, None] & cmask[None, :]
            yoff = (n.to(tl.int64) * syn + ho.to(tl.int64) * syh + wo.to(tl.int64) * syw)[:, None] \
                + c[None, :].to(tl.int64) * syc
            if FROM_INDEX:
                arg = tl.load(idx_ptr + yoff, mask=fmask, other=0).to(tl.int32)
            else:
                _, arg = _winner(x_ptr, xoff, fmask, sxh, sxw, K)
            g = tl.load(dy_ptr + yoff, mask=fmask, other=0.0)
            zero = tl.zeros([BLOCK_P, BLOCK_C], dtype=g.dtype)
            if FP8_OUT:
                gq = fp8_cast(g.to(tl.float32), inv_q, FMAX, E5)
                zq = fp8_cast(zero.to(tl.float32), inv_q, FMAX, E5)
                amax = fp8_amax_update(amax, tl.where(fmask, tl.abs(g.to(tl.float32)), 0.0))
            for t in tl.static_range(0, K * K):
                h = ho * K + t // K
                w = wo * K + t % K
                inb = (pmask & (h < H) & (w < W))[:, None] & cmask[None, :]
                off = xoff + (t // K) * sxh + (t % K) * sxw
                hit = fmask & (arg == t)
                tl.store(dx_ptr + off, tl.where(hit, g, zero), mask=inb)
                if FP8_OUT:
                    tl.store(q_ptr + off, tl.where(hit, gq, zq), mask=inb)
        if FP8_OUT:
            if (tl.program_id(0) == 0) & (tl.program_id(1) == 0):
                tl.store(s_ptr, q_scale)
            tl.atomic_max(st_ptr + 1, fp8_amax_of(amax))
            fp8_rollover(st_ptr, cnt_ptr, nf_ptr, tl.num_programs(0) * tl.num_programs(1))


# Listed for the static checks (profiling static compiles each, pinned with CONFIGS.pinned); _pick
# chooses per shape: the first whose channel block is not wider than the channels.
PoolConfig = namedtuple("PoolConfig", "block_p block_c num_warps per_sm")  # per_sm: programs per SM
CONFIGS = ConfigList("CONFIGS", [PoolConfig(64, 64, 4, 4), PoolConfig(256, 16, 4, 4), PoolConfig(128, 32, 4, 4)])


def _pick(C: int, P: int):
    cpow = triton.next_power_of_2(C)
    cfg = next((c for c in CONFIGS if c[1] <= cpow), min(CONFIGS, key=lambda c: c[1]))
    if interpreting():  # the interpreter pays per program: few tall tiles
        cfg = (max(cfg[0], min(1024, triton.next_power_of_2(P))),) + cfg[1:]
    return cfg


def _launch(kernel, P: int, C: int, head: tuple, tail: tuple, flags: dict, device) -> None:
    """kernel(*head, TILES, *tail): a grid-stride loop over the [BLOCK_P, BLOCK_C] tiles of P
    positions x C channels, on a grid of whole waves."""
    bp, bc, warps, per_sm = _pick(C, P)
    meta = dict(BLOCK_P=bp, BLOCK_C=bc, num_warps=warps, **flags)
    cblocks = triton.cdiv(C, bc)
    tiles = triton.cdiv(P, bp)
    if interpreting():
        grid = (tiles, cblocks)
    else:
        small = 8 * sm_count(device)  # a small pool (the final one): smaller tiles, more programs
        while tiles * cblocks < small and meta["BLOCK_P"] > 16:
            meta["BLOCK_P"] //= 2
            # keep 8 channels (16 bytes) per thread: fewer warps for a smaller tile
            meta["num_warps"] = max(1, min(warps, meta["BLOCK_P"] * meta["BLOCK_C"] // 256))
            tiles = triton.cdiv(P, meta["BLOCK_P"])
        grid = (max(1, min(tiles, programs_per_wave(kernel, meta, per_sm, device) // cblocks)), cblocks)
    launch(kernel, grid, (*head, tiles, *tail), meta, device)


def _out_like(x: torch.Tensor, shape, dtype=None) -> torch.Tensor:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.empty(shape, device=x.device, dtype=dtype or x.dtype,
                       memory_format=torch.channels_last if cl else torch.contiguous_format)


def _fwd(x: torch.Tensor, k: int, save_index: bool) -> tuple[torch.Tensor, torch.Tensor]:
    N, C, H, W = x.shape
    Ho, Wo = H // k, W // k
    y = _out_like(x, (N, C, Ho, Wo))
    idx = _out_like(x, (N, C, Ho, Wo), torch.uint8) if save_index else y.new_empty(0, dtype=torch.uint8)
    if idx.numel() and idx.stride() != y.stride():  # one set of offsets serves y and the index
        idx = torch.empty_strided(y.shape, y.stride(), device=y.device, dtype=torch.uint8)
    P = N * Ho * Wo
    _launch(_maxpool_fwd_kernel, P, C, (x, y, idx if save_index else y, P, C, Ho, Wo), (*x.stride(), *y.stride()),
            dict(K=k, SAVE_INDEX=save_index), x.device)
    return y, idx


def _bwd(dy: torch.Tensor, x_or_idx: torch.Tensor, x_shape, x_stride, k: int, from_index: bool,
         grad_scale=None, state=None) -> torch.Tensor:
    """dx; with ``grad_scale`` (a ready DelayedScale of the conv that produced x) also dx's fp8 copy,
    handed on through ``state`` (kernels/fp8.py)."""
    N, C, H, W = x_shape
    Ho, Wo, He, We = H // k, W // k, triton.cdiv(H, k), triton.cdiv(W, k)
    # dx keeps x's strides (channels_last in the network) so one set of offsets serves x and dx
    dx = torch.empty_strided(x_shape, x_stride, device=dy.device, dtype=dy.dtype)
    PE = N * He * We
    # unused pointers (x with an index, the index without) get a placeholder of the launch device
    x_ptr, idx_ptr = (dx, x_or_idx) if from_index else (x_or_idx, dy)
    ready = grad_scale is not None and grad_scale.ready
    q = torch.empty_strided(x_shape, x_stride, device=dy.device, dtype=fp8.GRAD) if ready else None
    sc = torch.empty(1, device=dy.device, dtype=torch.float32) if ready else None
    fp8_args = (q, grad_scale.amax, sc, grad_scale.ticket, grad_scale.nonfinite) if ready else (dx,) * 5
    _launch(_maxpool_bwd_kernel, PE, C, (dy, x_ptr, idx_ptr, dx, *fp8_args, PE, C, H, W, Ho, Wo, He, We),
            (*x_stride, *dy.stride()), dict(K=k, FROM_INDEX=from_index, FP8_OUT=ready, E5=fp8.GRAD == fp8.E5M2),
            dy.device)
    if ready:
        state.attach(dx, q, sc)
    return dx


# ------------------------------------------------------------------ triton: with a window index
@torch.library.custom_op("speedrun::maxpool_fwd_index", mutates_args=())
def maxpool_fwd_index(x: torch.Tensor, k: int, fp8_state: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, uint8 index of each output's winning window element), both with y's layout. ``fp8_state``
    (maxpool=fp8: the handle of the network's kernels.fp8.Fp8State, 0: none): when x is the output
    of a conv=fp8, the backward writes dx's fp8 copy for it."""
    y, idx = _fwd(x, k, True)
    if fp8_state:
        fp8.of(fp8_state).carry_want(x, idx)  # the backward sees the index, not x
    return y, idx


@maxpool_fwd_index.register_fake
def _(x, k, fp8_state=0):
    N, C, H, W = x.shape
    y = _out_like(x, (N, C, H // k, W // k))
    return y, torch.empty_strided(y.shape, y.stride(), device=y.device, dtype=torch.uint8)


@torch.library.custom_op("speedrun::maxpool_bwd_index", mutates_args=())
def maxpool_bwd_index(dy: torch.Tensor, idx: torch.Tensor, x_shape: list[int], x_stride: list[int],
                      k: int, fp8_state: int = 0) -> torch.Tensor:
    if dy.stride() != idx.stride():
        dy = torch.empty_strided(idx.shape, idx.stride(), device=dy.device, dtype=dy.dtype).copy_(dy)
    state = fp8.of(fp8_state) if fp8_state else None
    return _bwd(dy, idx, tuple(x_shape), tuple(x_stride), k, True, state.grad_wanted(idx) if state else None, state)


@maxpool_bwd_index.register_fake
def _(dy, idx, x_shape, x_stride, k, fp8_state=0):
    return torch.empty_strided(tuple(x_shape), tuple(x_stride), device=dy.device, dtype=dy.dtype)


def _setup_index(ctx, inputs, output):
    x, k, fp8_state = inputs
    _, idx = output
    ctx.save_for_backward(idx)  # 1 byte per output; x itself is not kept
    ctx.k, ctx.x_shape, ctx.x_stride, ctx.fp8_state = k, list(x.shape), list(x.stride()), fp8_state
    ctx.mark_non_differentiable(idx)
    ctx.set_materialize_grads(False)  # no zero-filled gradient for the index output


def _backward_index(ctx, dy, _didx):
    (idx,) = ctx.saved_tensors
    if dy is None:
        return None, None, None
    return maxpool_bwd_index(dy, idx, ctx.x_shape, ctx.x_stride, ctx.k, ctx.fp8_state), None, None


maxpool_fwd_index.register_autograd(_backward_index, setup_context=_setup_index)


# ------------------------------------------------------------- triton_recompute: no index at all
@torch.library.custom_op("speedrun::maxpool_fwd", mutates_args=())
def maxpool_fwd(x: torch.Tensor, k: int) -> torch.Tensor:
    return _fwd(x, k, False)[0]


@maxpool_fwd.register_fake
def _(x, k):
    N, C, H, W = x.shape
    return _out_like(x, (N, C, H // k, W // k))


@torch.library.custom_op("speedrun::maxpool_bwd", mutates_args=())
def maxpool_bwd(dy: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
    return _bwd(dy, x, tuple(x.shape), tuple(x.stride()), k, False)


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


def _check(x: torch.Tensor, kernel_size: int, stride) -> None:
    check_tensor("maxpool", "x", x, dim=4)
    if kernel_size not in KERNEL_SIZES:
        raise ValueError(f"maxpool (triton): kernel_size {kernel_size} not supported; supported: {KERNEL_SIZES}")
    if stride is not None and stride != kernel_size:
        raise ValueError(f"maxpool (triton): only stride == kernel_size is supported, got stride {stride}")
    if x.shape[2] < kernel_size or x.shape[3] < kernel_size:
        raise ValueError(f"maxpool (triton): input {list(x.shape)} is smaller than the {kernel_size}x{kernel_size} window")


@register("maxpool", "triton")
def maxpool_triton(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Triton forward and backward; the forward saves a 1-byte window index per output, which the
    backward uses (neither x nor an int64 index is kept)."""
    _check(x, kernel_size, stride)
    return maxpool_fwd_index(x, kernel_size)[0]


@register("maxpool", "fp8")
def maxpool_fp8(x: torch.Tensor, kernel_size: int, stride: int | None = None, *,
                fp8_state: fp8.Fp8State | None = None) -> torch.Tensor:
    """maxpool=triton whose backward also writes dx's e5m2 copy when x came from a conv=fp8 (the
    copy that conv's input-grad reads), with that conv's delayed gradient scale, in the same pass.
    ``fp8_state``: the network's kernels.fp8.Fp8State that carries the copy (None: no copy)."""
    _check(x, kernel_size, stride)
    return maxpool_fwd_index(x, kernel_size, fp8.handle_of(fp8_state))[0]


@register("maxpool", "triton_recompute")
def maxpool_triton_recompute(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """Triton forward and backward; the backward recomputes the winner from the saved input (no
    index tensor, but x is kept and read again)."""
    _check(x, kernel_size, stride)
    return maxpool_fwd(x, kernel_size)


# ------------------------------------------------------------------------------------------ spec
class MaxPoolSpec(OpSpec):
    """maxpool's shapes, must-move bytes, sample inputs, configurations and work models (kernels/spec.py).

    Bytes: the forward reads x and writes y. Training must also tell the backward which window
    element won: the cheapest way is one byte per output (uint8 index), written by the forward and
    read by the backward, which then reads dy and writes dx; so forward + backward = x + y + idx
    (forward) + idx + dy + dx (backward). (Recomputing the winner instead reads x again, 4x the
    index's bytes; the eager reference reads an int64 index.)"""
    name = "maxpool"
    tracks_producer = True
    config_lists = (CONFIGS,)

    def out_shape(self, case):
        n, c, h, w = case.x_shape
        k = case.params["k"]
        return (n, c, h // k, w // k)

    def phase_bytes(self, case, phase, esize=2):
        x, y, k = case.numel(case.x_shape), case.numel(self.out_shape(case)), case.params["k"]
        read = y * k * k  # floor mode: the forward reads only the pooled windows
        idx = y  # one byte per output
        return esize * (read + y) + idx if phase == "fwd" else idx + esize * (y + x)

    def bytes_min(self, case, mode="fwd", esize=2):
        if mode == "fwd":  # inference: no index
            y = case.numel(self.out_shape(case))
            return esize * (y * case.params["k"] ** 2 + y)
        return super().bytes_min(case, mode, esize)

    def sample_call(self, case, device, dtype, *, grad=True, fill="randn", seed=0):
        t = Sampler(device, dtype, fill, seed)
        x = t(case.x_shape, requires_grad=grad)
        dy = t(self.out_shape(case)) if grad else None
        return SampleCall((x, case.params["k"], case.params["k"]), dy)

    def trace(self, x, args, kwargs):
        k = args[0] if args else kwargs["kernel_size"]
        n, c, h, w = x.shape
        return dict(k=k), (n, c, h // k, w // k), "final_pool", ".pool"


def _work_fwd(launch, peak, capacity: int) -> Work:
    a, cx = launch.args, launch.cx
    x, P, C = a["x_ptr"], a["P"], a["C"]
    K, bp, bc = cx["K"], cx["BLOCK_P"], cx["BLOCK_C"]
    es = x.esize
    index = bool(cx.get("SAVE_INDEX"))
    read = P * C * K * K * es
    write = P * C * (es + (1 if index else 0))
    iters = stride_iters(launch) if "TILES" in a else 1
    return Work("memory", iters, bp * bc, read + write, read + write, K * K * es + es + (1 if index else 0),
                notes=["reads the pooled windows of x, writes y" + (" and a 1-byte window index" if index else "")
                       + " (elements = outputs)"], units=a.get("TILES", 1) * grid_of(launch)[1], read_bytes=read)


def _work_bwd(launch, peak, capacity: int) -> Work:
    a, cx = launch.args, launch.cx
    C, P = a["C"], a["PE"]
    K, bp, bc = cx["K"], cx["BLOCK_P"], cx["BLOCK_C"]
    dy, dx = a["dy_ptr"], a["dx_ptr"]
    es = dy.esize
    from_index = bool(cx.get("FROM_INDEX", 0))
    out = P * C  # windows of the ceil-mode grid x channels (~ outputs)
    read = dy.nbytes + (out if from_index else dx.nbytes)
    nbytes = read + dx.nbytes + (dx.nbytes // dx.esize if cx.get("FP8_OUT") else 0)
    iters = stride_iters(launch) if "TILES" in a else 1
    per = es + (1 if from_index else K * K * es) + K * K * es
    return Work("memory", iters, bp * bc, nbytes, nbytes, per,
                notes=["reads dy and " + ("the window index" if from_index else "x (winner recomputed)")
                       + ", writes dx (elements = windows)"], units=a.get("TILES", 1) * grid_of(launch)[1],
                read_bytes=read)


SPEC = register_spec(MaxPoolSpec())
if HAS_TRITON:
    SPEC.work = {_maxpool_fwd_kernel: _work_fwd, _maxpool_bwd_kernel: _work_bwd}
    # the backward writes every element of dx from scattered windows: its stores are not 128-bit vectors
    SPEC.tags = {_maxpool_bwd_kernel: ("scatter",)}
