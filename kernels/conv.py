"""2-D convolution: the 3x3 'same' convs and the 2x2 valid whitening conv.

Implementations
    eager    F.conv2d (cuDNN on a GPU), the reference
    compile  F.conv2d under torch.compile
    triton   implicit-GEMM Triton kernels on tensor cores: forward, input-grad and weight-grad,
             computed in the input's dtype (fp16 or bf16 in the network, fp32 for tests) with
             fp32 accumulation; fp32 operands in TF32 unless torch.backends.cudnn.allow_tf32 is
             off (as F.conv2d on a GPU), then in full fp32. The configuration lists are sized for
             fp16: on a GPU a configuration whose tiles overflow its shared memory (fp32 doubles
             them) is dropped, or run with fewer pipeline stages
    fp8      the same GEMMs with FP8 operands for the forward (e4m3) and the input-grad (e5m2
             gradients x e4m3 weights); the weight-grad stays in the input's dtype

Stride 1 and no dilation or groups only (the network's convs); anything else in the
arguments is a clear error. Activations are read in any dense layout through their strides;
channels_last (NHWC) is the fast one: the GEMM's reduction runs over channels, contiguous there.

Forward as a GEMM: rows = output pixels (N*OH*OW), columns = output channels, reduction =
(tap, input channel). One software-pipelined loop runs over the flattened (tap, channel block)
index, so the pipeline fills once per tile instead of once per tap; out-of-image taps load
zeros (the padding). Programs are ordered in groups of GROUP_M row tiles, so the column tiles
that share an input tile run together and find it in L2. The channel counts are compile-time
constants and the row strides carry alignment hints, so 24-channel inputs are read with
16-byte (async) loads too. The input-grad is the same kernel with the filter flipped
(``FLIP``): dx[n,ih,iw,ci] = sum dy[n, ih+pad-kh, iw+pad-kw, co] w[co,ci,kh,kw].
The whitening conv (3 input channels, 2x2) has its own small kernel: its 12-element reduction
is one MMA step.

Weight-grad as one GEMM: rows = output channels, columns = (tap, input channel) (exactly the
channels_last memory order of the weight), reduction = the N*OH*OW pixels, split across programs
(split-K) so that the grid fills the GPU. A program's tile spans ``TAPS`` taps of a channel block
(all nine for the default configurations): it loads each chunk of the output gradient once and
multiplies it with the nine shifted chunks of x, one accumulator per tap, so dy goes through L2
once per tile instead of once per tap (the layer's whole 64 x 216 gradient is one tile for
group1.conv1). Each program writes its fp32 partial; a second launch (``_wgrad_sum_kernel``)
sums the partials in a fixed order, each program a slice of the gradient (deterministic, and the
tail is one pass of parallel reads, not one program reading every partial).

FP8 (``conv=fp8``, compute capability 8.9+; kernels/fp8.py): the GEMMs read FP8 operands that are
already in memory. The activation's e4m3 copy is written by the kernel that produces it
(bn_act=fp8's apply) and the output gradient's e5m2 copy by the kernel that produces it
(bn_act=fp8's or maxpool=fp8's backward); with any other producer one standalone pass quantises
it. The weights are quantised by one small launch per call that also writes the [tap][ci][co]
copy the input-grad needs, so both FP8 operands of every GEMM are K-major (no byte-wise
transposes in shared memory). Scales are delayed (the amax of the previous call; kernels/fp8.py
says how a non-finite amax is handled). The MMAs accumulate in the tensor cores (``acc =
tl.dot(a, b, acc)``); the two scales are applied once, in the epilogue. The weight-grad runs in the
input's dtype (an FP8 weight-grad would need pixel-major FP8 copies of x and dy).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import math
from collections import namedtuple

import torch
import torch.nn.functional as F

from . import fp8
from ._compiled import compiled
from . import _triton
from ._triton import HAS_TRITON, check_tensor, interpreting, programs_per_wave, sm_count, triton_version
from .registry import register
from .spec import L2_FIT, ConfigList, OpSpec, SampleCall, Sampler, Work, grid_of, programs_of, register_spec, rows_iters


@register("conv", "eager")
def conv_eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               padding: int | str = 0) -> torch.Tensor:
    """Reference: F.conv2d (cuDNN on a GPU)."""
    return F.conv2d(x, weight, bias, padding=padding)


register("conv", "compile")(compiled(conv_eager, "F.conv2d under torch.compile."))

FP8_FWD = fp8.E4M3   # activations and weights: 3 mantissa bits, max 448
FP8_BWD = fp8.E5M2   # gradients: 2 mantissa bits, max 57344 (range over precision); fp8.GRAD picks
# Below this many input channels fp8 gains little: the whitening conv (3 channels) and group1.conv1
# (24) run in the input's dtype.
FP8_MIN_CHANNELS = 32

if HAS_TRITON:
    import triton
    import triton.language as tl
    from triton.runtime.errors import OutOfResources

    @triton.jit
    def _grouped(pid, GM, GN: tl.constexpr, GROUP_M: tl.constexpr):
        """(row tile, column tile) of program ``pid`` with GROUP_M row tiles per group: the column
        tiles of a group's rows run one after another, while those rows are still in L2. One column
        tile: the program's own row tile (no division by the last group's run-time size)."""
        if GN == 1:
            return pid, 0
        width = GROUP_M * GN
        group = pid // width
        first = group * GROUP_M
        size = tl.minimum(GM - first, GROUP_M)
        return first + (pid % width) % size, (pid % width) // size

    @triton.jit
    def _pixels(rm, OH, OW):
        """(image, output row, output column) of the flat output pixel indices ``rm``."""
        n = rm // (OH * OW)
        r = rm - n * (OH * OW)
        oh = r // OW
        return n, oh, r - oh * OW

    @triton.jit
    def _pixels_of(rm, OH: tl.constexpr, OW: tl.constexpr):
        """_pixels for a compile-time image size and 32-bit ``rm``: a division by a constant is a
        multiply and a shift, and the unsigned one (the indices are never negative) the shorter."""
        n = (rm.to(tl.uint32, bitcast=True) // (OH * OW)).to(tl.int32, bitcast=True)
        r = rm - n * (OH * OW)
        oh = (r.to(tl.uint32, bitcast=True) // OW).to(tl.int32, bitcast=True)
        return n, oh, r - oh * OW

    @triton.jit
    def _weight_desc(w_ptr, CRED: tl.constexpr, COUT: tl.constexpr, TAPS: tl.constexpr, WLAYOUT: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """The weight at w_ptr (contiguous, in the layout WLAYOUT names as in _conv_tile: 0
        [COUT][TAPS][CRED], 1 [CRED][TAPS][COUT], 2 [TAPS][COUT][CRED]; 16-byte aligned, rows of a
        multiple of 16 bytes) as a 3-d TMA tensor descriptor whose block is one tap's [BLOCK_N x
        BLOCK_K] tile: the tap a dimension of its own, so a partial channel block reads zeros past
        CRED, not the next tap's channels."""
        if WLAYOUT == 0:
            return tl.make_tensor_descriptor(w_ptr, shape=[COUT, TAPS, CRED], strides=[TAPS * CRED, CRED, 1],
                                             block_shape=[BLOCK_N, 1, BLOCK_K])
        elif WLAYOUT == 1:
            return tl.make_tensor_descriptor(w_ptr, shape=[CRED, TAPS, COUT], strides=[TAPS * COUT, COUT, 1],
                                             block_shape=[BLOCK_K, 1, BLOCK_N])
        else:
            return tl.make_tensor_descriptor(w_ptr, shape=[TAPS, COUT, CRED], strides=[COUT * CRED, CRED, 1],
                                             block_shape=[1, BLOCK_N, BLOCK_K])

    @triton.jit
    def _tap_shift(tap, sxh, sxw, KW: tl.constexpr, PAD: tl.constexpr, FLIP: tl.constexpr):
        """The element offset tap ``tap`` (kh * KW + kw) adds to an output pixel's input offset: the
        forward's (kh - PAD, kw - PAD) shift, or the input-grad's mirrored one (FLIP); sxh and sxw are the
        input's row and pixel strides in elements."""
        kh = tap // KW
        kw = tap - kh * KW
        if FLIP:
            return (PAD - kh) * sxh + (PAD - kw) * sxw
        else:
            return (kh - PAD) * sxh + (kw - PAD) * sxw

    @triton.jit
    def _packed_operands(it, a_rows, w_ptr, taps, rn, rk, col_ok, sxh, sxw, PAD: tl.constexpr,
                         CRED: tl.constexpr, COUT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                         FLIP: tl.constexpr, WLAYOUT: tl.constexpr, ALIGN_X: tl.constexpr, IDX64: tl.constexpr,
                         BLOCK_K: tl.constexpr):
        """Iteration ``it`` of _conv_tile's main loop with the taps packed into the reduction (PACK): the
        A tile [rows x BLOCK_K] and the B tile [BLOCK_K x columns] of the reduction indices it * BLOCK_K
        + rk, each index k a (tap k // CRED, channel k % CRED) pair. A vector of ALIGN_X indices stays
        within one tap (CRED and BLOCK_K are multiples of ALIGN_X: the launcher's condition), which the
        hints say, so the copies stay ALIGN_X wide and each vector's mask and address is computed once
        (the compiler keeps only a vector's first element of either). a_rows: each output row's pointer
        into the input (x_ptr plus the row's base offset); w_ptr: the weight in _conv_tile's WLAYOUT; sxh,
        sxw: the input's row and pixel strides; taps: each row's bit mask of the taps inside the image."""
        kk = it * BLOCK_K + rk
        kmask = kk < KH * KW * CRED
        # past the last tap (masked): clamped, so that no shift below reaches the tap mask's width
        tap = tl.max_constancy(tl.minimum(kk // CRED, KH * KW - 1), ALIGN_X)
        c = kk - (kk // CRED) * CRED
        shift = _tap_shift(tap, sxh, sxw, KW, PAD, FLIP)
        if IDX64:
            col = shift.to(tl.int64) + c
        else:
            col = shift + c
        col = tl.max_contiguous(tl.multiple_of(col, ALIGN_X), ALIGN_X)
        ok = tl.max_constancy((((taps[:, None] >> tap[None, :]) & 1) != 0) & kmask[None, :], [1, ALIGN_X])
        a = tl.load(a_rows[:, None] + col[None, :], mask=ok, other=0.0)
        if WLAYOUT == 0:  # [j][tap][c]: the packed index is the weight row's own offset
            w_off = rn[None, :] * (KH * KW * CRED) + kk[:, None]
        elif WLAYOUT == 1:  # [c][tap][j]
            w_off = c[:, None] * (KH * KW * COUT) + tap[:, None] * COUT + rn[None, :]
        else:  # [tap][j][c]
            wk = tl.max_contiguous(tl.multiple_of(tap * (COUT * CRED) + c, ALIGN_X), ALIGN_X)
            w_off = wk[:, None] + rn[None, :] * CRED
        b = tl.load(w_ptr + w_off, mask=kmask[:, None] & col_ok[None, :], other=0.0)
        return a, b

    @triton.jit
    def _conv_tile(pid, x_ptr, w_ptr, b_ptr, y_ptr, sa_ptr, sb_ptr, idx_ptr, part_ptr,
                     M, sxn, sxh, sxw, syn, syh, syw, STEPS,
                     H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr, PAD: tl.constexpr,
                     CRED: tl.constexpr, COUT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                     FLIP: tl.constexpr, WLAYOUT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr,
                     ALIGN_X: tl.constexpr, ALIGN_Y: tl.constexpr, IDX64: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                     POOL: tl.constexpr, STATS: tl.constexpr, DOT_PREC: tl.constexpr = "tf32",
                     W_TMA: tl.constexpr = 0, PACK: tl.constexpr = 0, SWAP: tl.constexpr = 0):
        """y[m, j] = sum over (tap, c) of x[pixel(m) shifted by tap, c] * w(tap, c, j).

        WLAYOUT: where w(tap, c, j) lives. 0: a [j][tap][c] tensor (the forward's channels_last
        weight); 1: [c][tap][j] (the same weight read by the input-grad); 2: [tap][j][c] (the fp8
        input-grad's transposed copy). HAS_SCALE: x and w are fp8 with per-tensor scales at sa_ptr and
        sb_ptr, applied once to the accumulator. IDX64: 64-bit element offsets (a tensor of 2^31
        elements or more); otherwise 32-bit.

        The main loop keeps its per-iteration work to the operand loads: each output row's base
        offset is computed once, before the loop, and a tap adds one offset the whole tile shares
        ((kh - PAD) * sxh + (kw - PAD) * sxw); which taps of a row fall inside the image is one bit
        per tap in a mask computed once, so a tap's bounds test is a shift and an AND.
        Arguments (the launcher, ``_launch_conv``, passes them; every activation is channels_last):
        x_ptr    input [N][H][W][CRED] (channel stride 1); sxn, sxh, sxw its strides in elements
        w_ptr    weight in the layout WLAYOUT names; b_ptr: bias [COUT] when HAS_BIAS. W_TMA: w_ptr is
                 the weight's TMA tensor descriptor (_weight_desc), its tiles copied by the TMA unit
        y_ptr    output [N][OH][OW][COUT] (channel stride 1); syn, syh, syw its strides
        sa_ptr, sb_ptr  fp32 [1] scales of x and w (HAS_SCALE: fp8 operands), else unused
        M        output pixels, N * OH * OW (the GEMM's rows); COUT: output channels (its columns)
        CRED     channels reduced per tap (the GEMM's K is KH * KW * CRED); KH, KW: the filter size
        PAD      zero padding on every side; FLIP: the input-grad's form (taps mirrored, the
                 shift added instead of subtracted), which reads dy as x and the weight transposed
        H, W, OH, OW  input and output image size, compile-time constants (one compile per image size,
                 four in the network) as PAD is: the pixel of a row is a multiply and a shift, not a
                 run-time division (about a third of the instructions outside the main loop)
        STEPS    KH * KW * cdiv(CRED, BLOCK_K): the main loop's trip count, a run-time value
                 (PACK: cdiv(KH * KW * CRED, BLOCK_K))
        PACK     the taps packed into the reduction: a block of BLOCK_K runs over consecutive (tap,
                 channel) pairs, KH * KW * CRED of them, not over one tap's channels, so a channel
                 count that does not fill a block (group1.conv1's 24 in a block of 32) pads the
                 whole reduction once, not each tap. The launcher sets it only where CRED and
                 BLOCK_K are multiples of ALIGN_X (a vector never straddles two taps)
        ALIGN_X, ALIGN_Y  the element alignment of a pixel's row in x and y (tl.multiple_of)
        GROUP_M  row tiles per group of the launch order (_grouped)
        SWAP     the GEMM computed transposed, y^T = w^T x^T: the weight tile is the MMA's first
                 operand (its BLOCK_N columns the instruction's 64 rows) and the activation tile the
                 second (its BLOCK_M rows the instruction's width), the accumulator transposed back
                 once for the epilogue. On Hopper a wgmma re-reads its second operand from shared
                 memory for every 64 rows of the first: a 256x64 tile reads its 64 weight columns four
                 times per step, swapped once (the launcher's _swaps says where)

        Fused epilogues (kernels/conv_block.py, issue 23), each a constexpr, off for the plain conv:
        POOL     the 2x2 max-pool (stride 2, floor mode) of the output: the GEMM's rows run over the
                 pooled windows, four consecutive rows one window in scan order ((0,0), (0,1), (1,0),
                 (1,1)), so that a tile holds whole windows; M = N * (OH // 2) * (OW // 2) * 4. The
                 output y (strides syn, syh, syw) is the pooled [N][OH // 2][OW // 2][COUT], and
                 idx_ptr its uint8 window index with y's strides (maxpool's: first strict maximum,
                 last NaN, compared after rounding to y's dtype, as the unfused pool sees them)
        STATS    per row tile, the BatchNorm partials of the (pooled) output as stored: part_ptr
                 [row tiles][2][COUT] fp32, the tile's sum and its sum of squared deviations from the
                 tile's own mean (no cancellation; merged by conv_block's _stats_merge_kernel)"""
        GM = tl.cdiv(M, BLOCK_M)
        GN: tl.constexpr = (COUT + BLOCK_N - 1) // BLOCK_N
        pid_m, pid_n = _grouped(pid, GM, GN, GROUP_M)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        if POOL:  # four consecutive rows: one 2x2 window of the pooled pixel rm // 4
            n, ph, pw = _pixels_of(rm // 4, OH // 2, OW // 2)
            oh = 2 * ph + (rm % 4) // 2
            ow = 2 * pw + rm % 2
        else:
            n, oh, ow = _pixels_of(rm, OH, OW)
        row_ok = rm < M
        col_ok = rn < COUT
        if IDX64:
            base = n.to(tl.int64) * sxn + oh.to(tl.int64) * sxh + ow.to(tl.int64) * sxw
        else:
            base = n * sxn + oh * sxh + ow * sxw
        # bit t of taps: tap t of the row reads inside the image (and the row exists)
        taps = tl.zeros([BLOCK_M], dtype=tl.int32)
        for t in tl.static_range(KH * KW):
            if FLIP:
                ih = oh + PAD - t // KW
                iw = ow + PAD - t % KW
            else:
                ih = oh + t // KW - PAD
                iw = ow + t % KW - PAD
            inside = row_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            taps = taps | (inside.to(tl.int32) << t)
        if PACK:  # each row's pointer, made once: the per-(tap, channel) offset added in the loop stays one add
            a_rows = x_ptr + tl.multiple_of(base, ALIGN_X)
        else:
            a_rows = x_ptr
        if SWAP:
            acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        else:
            acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        # one pipelined loop over (channel block, tap); STEPS = KH * KW * cdiv(CRED, BLOCK_K), passed at run time: a
        # constant 9-step loop with this small a body is unrolled whole by LLVM, and its prefetch lost
        for it in range(0, STEPS):
            if PACK:
                a, b = _packed_operands(it, a_rows, w_ptr, taps, rn, rk, col_ok, sxh, sxw, PAD, CRED, COUT, KH,
                                        KW, FLIP, WLAYOUT, ALIGN_X, IDX64, BLOCK_K)
            else:
                # the taps of a channel block run back to back: their shifted tiles overlap in L2
                if CRED <= BLOCK_K:  # one channel block: the loop runs over the taps alone
                    tap = it
                    c0 = 0
                else:
                    cb = it // (KH * KW)
                    tap = it - cb * (KH * KW)
                    c0 = cb * BLOCK_K
                shift = _tap_shift(tap, sxh, sxw, KW, PAD, FLIP)
                ok = ((taps >> tap) & 1) != 0
                if IDX64:
                    a_row = tl.multiple_of(base + shift.to(tl.int64), ALIGN_X)
                else:
                    a_row = tl.multiple_of(base + shift, ALIGN_X)
                kk = c0 + rk
                kmask = kk < CRED
                a = tl.load(x_ptr + a_row[:, None] + kk[None, :], mask=ok[:, None] & kmask[None, :], other=0.0)
                if W_TMA:  # one TMA copy per tile; channels past CRED and columns past COUT read as zeros
                    if WLAYOUT == 0:
                        b = tl.trans(tl.reshape(w_ptr.load([pid_n * BLOCK_N, tap, c0]), (BLOCK_N, BLOCK_K)))
                    elif WLAYOUT == 1:
                        b = tl.reshape(w_ptr.load([c0, tap, pid_n * BLOCK_N]), (BLOCK_K, BLOCK_N))
                    else:
                        b = tl.trans(tl.reshape(w_ptr.load([tap, pid_n * BLOCK_N, c0]), (BLOCK_N, BLOCK_K)))
                else:
                    if WLAYOUT == 0:
                        w_off = rn[None, :] * (KH * KW * CRED) + tap * CRED + kk[:, None]
                    elif WLAYOUT == 1:
                        w_off = kk[:, None] * (KH * KW * COUT) + tap * COUT + rn[None, :]
                    else:
                        w_off = tap * (COUT * CRED) + rn[None, :] * CRED + kk[:, None]
                    b = tl.load(w_ptr + w_off, mask=kmask[:, None] & col_ok[None, :], other=0.0)
            if SWAP:
                acc = tl.dot(tl.trans(b), tl.trans(a), acc, input_precision=DOT_PREC)
            else:
                acc = tl.dot(a, b, acc, input_precision=DOT_PREC)  # the accumulator stays in the tensor cores
        if SWAP:
            acc = tl.trans(acc)
        if HAS_SCALE:
            acc = acc * (tl.load(sa_ptr) * tl.load(sb_ptr))
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        if POOL:
            # the tile's windows: [rows / 4][2 (window row)][2 (window column)][columns], split into
            # its four elements; compared as stored (rounded to y's dtype), in scan order
            v = tl.reshape(acc.to(y_ptr.dtype.element_ty).to(tl.float32), (BLOCK_M // 4, 2, 2, BLOCK_N))
            left, right = tl.split(tl.permute(v, (0, 3, 1, 2)))  # window column 0 and 1: [rows/4][cols][2]
            v00, v10 = tl.split(left)
            v01, v11 = tl.split(right)
            out = v00
            win = tl.zeros([BLOCK_M // 4, BLOCK_N], dtype=tl.int32)
            take = (v01 > out) | (v01 != v01)
            out = tl.where(take, v01, out)
            win = tl.where(take, 1, win)
            take = (v10 > out) | (v10 != v10)
            out = tl.where(take, v10, out)
            win = tl.where(take, 2, win)
            take = (v11 > out) | (v11 != v11)
            out = tl.where(take, v11, out)
            win = tl.where(take, 3, win)
            rq = pid_m * (BLOCK_M // 4) + tl.arange(0, BLOCK_M // 4)
            out_ok = rq < M // 4
            qn, qh, qw = _pixels_of(rq, OH // 2, OW // 2)
            if IDX64:
                y_row = qn.to(tl.int64) * syn + qh.to(tl.int64) * syh + qw.to(tl.int64) * syw
            else:
                y_row = qn * syn + qh * syh + qw * syw
            y_off = tl.multiple_of(y_row, ALIGN_Y)[:, None] + rn[None, :]
            omask = out_ok[:, None] & col_ok[None, :]
            tl.store(y_ptr + y_off, out.to(y_ptr.dtype.element_ty), mask=omask)
            tl.store(idx_ptr + y_off, win.to(tl.uint8), mask=omask)
        else:
            if IDX64:
                y_row = tl.multiple_of(n.to(tl.int64) * syn + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw, ALIGN_Y)
            else:
                y_row = tl.multiple_of(n * syn + oh * syh + ow * syw, ALIGN_Y)
            tl.store(y_ptr + y_row[:, None] + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                     mask=row_ok[:, None] & col_ok[None, :])
            if STATS:
                out = acc.to(y_ptr.dtype.element_ty).to(tl.float32)
                out_ok = row_ok
        if STATS:  # the tile's sum and squared deviations from its own mean, per column
            live = out_ok[:, None]
            s1 = tl.sum(tl.where(live, out, 0.0), axis=0)
            tile_mean = s1 / tl.sum(out_ok.to(tl.float32), axis=0)
            dev = tl.where(live, out - tile_mean[None, :], 0.0)
            s2 = tl.sum(dev * dev, axis=0)
            tl.store(part_ptr + pid_m * (2 * COUT) + rn, s1, mask=col_ok)
            tl.store(part_ptr + pid_m * (2 * COUT) + COUT + rn, s2, mask=col_ok)

    @triton.jit
    def _conv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, sa_ptr, sb_ptr, idx_ptr, part_ptr,
                     M, sxn, sxh, sxw, syn, syh, syw, STEPS,
                     H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr, PAD: tl.constexpr,
                     CRED: tl.constexpr, COUT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                     FLIP: tl.constexpr, WLAYOUT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_SCALE: tl.constexpr,
                     ALIGN_X: tl.constexpr, ALIGN_Y: tl.constexpr, IDX64: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                     POOL: tl.constexpr, STATS: tl.constexpr, DOT_PREC: tl.constexpr = "tf32",
                     PERSIST: tl.constexpr = 0, W_TMA: tl.constexpr = 0, PACK: tl.constexpr = 0,
                     SWAP: tl.constexpr = 0):
        """_conv_tile for one tile per program, or (PERSIST) a persistent grid: each program walks
        the tiles pid, pid + programs, ... in one loop nest that Triton flattens, so the next tile's
        first loads are in flight while this tile's last MMAs run. The arguments are _conv_tile's:
        x_ptr (input, strides sxn, sxh, sxw), w_ptr (weight), b_ptr (bias), y_ptr (output, strides
        syn, syh, syw), sa_ptr and sb_ptr (fp8 scales), idx_ptr (the pool's index), part_ptr (the
        BatchNorm partials). W_TMA: the weight tiles through a TMA tensor descriptor made once per
        program (_weight_desc; the launcher sets a Triton allocator for its 128 bytes). PACK: the
        taps packed into the reduction (_conv_tile)."""
        if W_TMA:
            w_ptr = _weight_desc(w_ptr, CRED, COUT, KH * KW, WLAYOUT, BLOCK_N, BLOCK_K)
        if PERSIST:
            tiles = tl.cdiv(M, BLOCK_M) * ((COUT + BLOCK_N - 1) // BLOCK_N)
            for t in tl.range(tl.program_id(0), tiles, tl.num_programs(0), flatten=True):
                _conv_tile(t, x_ptr, w_ptr, b_ptr, y_ptr, sa_ptr, sb_ptr, idx_ptr, part_ptr, M, sxn, sxh, sxw,
                           syn, syh, syw, STEPS, H, W, OH, OW, PAD, CRED, COUT, KH, KW, FLIP, WLAYOUT, HAS_BIAS,
                           HAS_SCALE, ALIGN_X, ALIGN_Y, IDX64, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, POOL, STATS,
                           DOT_PREC, W_TMA, PACK, SWAP)
        else:
            _conv_tile(tl.program_id(0), x_ptr, w_ptr, b_ptr, y_ptr, sa_ptr, sb_ptr, idx_ptr, part_ptr, M, sxn,
                       sxh, sxw, syn, syh, syw, STEPS, H, W, OH, OW, PAD, CRED, COUT, KH, KW, FLIP, WLAYOUT,
                       HAS_BIAS, HAS_SCALE, ALIGN_X, ALIGN_Y, IDX64, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, POOL,
                       STATS, DOT_PREC, W_TMA, PACK, SWAP)

    @triton.jit
    def _conv_small_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, sxn, sxh, sxw, syn, syh, syw,
                           OH: tl.constexpr, OW: tl.constexpr,
                           CI: tl.constexpr, COUT: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                           HAS_BIAS: tl.constexpr, ALIGN_Y: tl.constexpr, IDX64: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                           DOT_PREC: tl.constexpr = "tf32"):
        """A valid conv whose whole reduction (KH*KW*CI <= BLOCK_K: the whitening conv's 12) is one
        MMA step: k = (kh, kw, c), the channels_last order of the weight.
        x_ptr    input [N][H][W][CI] (channel stride 1), strides sxn, sxh, sxw in elements
        w_ptr    weight [COUT][KH][KW][CI] (channels_last, contiguous); b_ptr: bias [COUT] (HAS_BIAS)
        y_ptr    output [N][OH][OW][COUT] (channel stride 1), strides syn, syh, syw; ALIGN_Y as in
                 _conv_kernel; M = N * OH * OW output pixels
        OH, OW   the output's size, compile-time (the pixel arithmetic a multiply and a shift, not a
                 division); IDX64: 64-bit element offsets (x or y of 2^31 elements or more)"""
        pid_m = tl.program_id(0)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        n, oh, ow = _pixels_of(rm, OH, OW)
        row_ok = rm < M
        col_ok = rn < COUT
        K: tl.constexpr = KH * KW * CI
        kh = rk // (KW * CI)
        kw = (rk // CI) % KW
        c = rk % CI
        if IDX64:
            n, oh, ow = n.to(tl.int64), oh.to(tl.int64), ow.to(tl.int64)
        a_off = (n * sxn + oh * sxh + ow * sxw)[:, None] + (kh * sxh + kw * sxw + c)[None, :]
        a = tl.load(x_ptr + a_off, mask=row_ok[:, None] & (rk < K)[None, :], other=0.0)
        b = tl.load(w_ptr + rn[None, :] * K + rk[:, None], mask=(rk < K)[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, b, input_precision=DOT_PREC)
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=col_ok, other=0.0).to(tl.float32)[None, :]
        y_row = tl.multiple_of(n * syn + oh * syh + ow * syw, ALIGN_Y)
        tl.store(y_ptr + y_row[:, None] + rn[None, :], acc.to(y_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & col_ok[None, :])

    @triton.jit
    def _wgrad_kernel(x_ptr, dy_ptr, out_ptr, P, ROWS,
                      sxn, sxh, sxw, sdn, sdh, sdw,
                      H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr, PAD: tl.constexpr,
                      CI: tl.constexpr, CO: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                      ALIGN_X: tl.constexpr, ALIGN_D: tl.constexpr, SPLIT: tl.constexpr, IDX64: tl.constexpr,
                      TAPS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                      DOT_PREC: tl.constexpr = "tf32", PACK: tl.constexpr = 0):
        """dw[co, (tap, ci)] = sum over pixels p of dy[p, co] * x[p shifted by tap, ci]: one GEMM
        (M = CO, N = KH*KW*CI, K = pixels), the pixels split in chunks of ROWS (program_id 1).

        A tile is BLOCK_M output channels x (TAPS consecutive taps x BLOCK_N input channels): each
        chunk of dy ([BLOCK_M, BLOCK_K]) is loaded once and multiplied with the TAPS shifted chunks
        of x, one accumulator per tap (a tuple), so dy is read once per tile, not once per tap. The
        x loads are rows of contiguous channels; the image sizes are compile-time constants, so the
        pixel decomposition is multiply-shifts.
        x_ptr    the forward's input [N][H][W][CI] (channel stride 1), strides sxn, sxh, sxw
        dy_ptr   the output gradient [N][OH][OW][CO] (channel stride 1), strides sdn, sdh, sdw
        out_ptr  SPLIT == 1: the weight gradient dw, [CO][KH][KW][CI] contiguous (the weight's
                 channels_last layout), in its dtype; SPLIT > 1: fp32 partials [SPLIT][CO][KH*KW*CI],
                 one per pixel chunk, summed by _wgrad_sum_kernel
        P        pixels, N * OH * OW (the GEMM's K); ROWS: pixels per program (program_id 1)
        PAD      zero padding; ALIGN_X, ALIGN_D: element alignment of a pixel's row in x and dy
        SPLIT    programs along the pixels; IDX64: 64-bit offsets (a tensor of 2^31 elements or more)
        TAPS     taps per tile (divides KH*KW); the channels of a tap are padded to whole BLOCK_N tiles
        PACK     the columns packed instead (_wgrad_packed_tile): a tile is BLOCK_N consecutive (tap,
                 channel) columns of the KH*KW*CI, one accumulator, TAPS unused"""
        if PACK:
            _wgrad_packed_tile(x_ptr, dy_ptr, out_ptr, P, ROWS, sxn, sxh, sxw, sdn, sdh, sdw, H, W, OH, OW, PAD, CI,
                               CO, KH, KW, ALIGN_X, ALIGN_D, SPLIT, IDX64, BLOCK_M, BLOCK_N, BLOCK_K, DOT_PREC)
        else:
            _wgrad_taps_tile(x_ptr, dy_ptr, out_ptr, P, ROWS, sxn, sxh, sxw, sdn, sdh, sdw, H, W, OH, OW, PAD, CI,
                             CO, KH, KW, ALIGN_X, ALIGN_D, SPLIT, IDX64, TAPS, BLOCK_M, BLOCK_N, BLOCK_K, DOT_PREC)

    @triton.jit
    def _wgrad_dy_chunk(p0, end, dy_ptr, rco, co_ok, sdn, sdh, sdw, OH: tl.constexpr, OW: tl.constexpr,
                        ALIGN_D: tl.constexpr, IDX64: tl.constexpr, BLOCK_K: tl.constexpr):
        """The weight-grad's dy chunk [output channels rco x pixels p0 ...] and those pixels' (image, row,
        column) and liveness (< end). dy_ptr: the output gradient [N][OH][OW][CO] (channel stride 1), its
        strides sdn, sdh, sdw."""
        rp = p0 + tl.arange(0, BLOCK_K)
        live = rp < end
        n, oh, ow = _pixels(rp, OH, OW)
        if IDX64:
            n = n.to(tl.int64)
        d_off = tl.multiple_of(n * sdn + oh * sdh + ow * sdw, ALIGN_D)
        a = tl.load(dy_ptr + rco[:, None] + d_off[None, :], mask=co_ok[:, None] & live[None, :], other=0.0)
        return a, n, oh, ow, live

    @triton.jit
    def _wgrad_taps_tile(x_ptr, dy_ptr, out_ptr, P, ROWS, sxn, sxh, sxw, sdn, sdh, sdw,
                         H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr, PAD: tl.constexpr,
                         CI: tl.constexpr, CO: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                         ALIGN_X: tl.constexpr, ALIGN_D: tl.constexpr, SPLIT: tl.constexpr, IDX64: tl.constexpr,
                         TAPS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                         DOT_PREC: tl.constexpr):
        """_wgrad_kernel's tile of TAPS taps x BLOCK_N channels of one channel block. Arguments as
        _wgrad_kernel's: x_ptr (the forward's input, strides sxn, sxh, sxw), dy_ptr (the output gradient,
        strides sdn, sdh, sdw), out_ptr (dw, or the fp32 partials when SPLIT > 1)."""
        CB: tl.constexpr = (CI + BLOCK_N - 1) // BLOCK_N
        GN: tl.constexpr = (KH * KW // TAPS) * CB
        NCOL: tl.constexpr = KH * KW * CI
        tile = tl.program_id(0)
        pid_m = tile // GN
        pid_n = tile - pid_m * GN
        t0 = (pid_n // CB) * TAPS
        rco = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        ci = (pid_n % CB) * BLOCK_N + tl.arange(0, BLOCK_N)
        co_ok = rco < CO
        ci_ok = ci < CI
        start = tl.program_id(1) * ROWS
        end = tl.minimum(start + ROWS, P)
        accs = ()
        for j in tl.static_range(TAPS):
            accs = accs + (tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32),)
        for p0 in range(start, start + ROWS, BLOCK_K):
            a, n, oh, ow, live = _wgrad_dy_chunk(p0, end, dy_ptr, rco, co_ok, sdn, sdh, sdw, OH, OW, ALIGN_D, IDX64,
                                                 BLOCK_K)
            x_pix = n * sxn + oh * sxh + ow * sxw
            nxt = ()
            for j in tl.static_range(TAPS):
                kh = (t0 + j) // KW
                kw = (t0 + j) - kh * KW
                ih = oh + kh - PAD
                iw = ow + kw - PAD
                ok = live & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                x_row = tl.multiple_of(x_pix + (kh - PAD) * sxh + (kw - PAD) * sxw, ALIGN_X)
                b = tl.load(x_ptr + x_row[:, None] + ci[None, :], mask=ok[:, None] & ci_ok[None, :], other=0.0)
                nxt = nxt + (tl.dot(a, b, accs[j], input_precision=DOT_PREC),)
            accs = nxt
        omask = co_ok[:, None] & ci_ok[None, :]
        for j in tl.static_range(TAPS):
            out = rco[:, None] * NCOL + ((t0 + j) * CI + ci)[None, :]  # channels_last [co][kh][kw][ci]
            if SPLIT == 1:
                tl.store(out_ptr + out, accs[j].to(out_ptr.dtype.element_ty), mask=omask)
            else:
                tl.store(out_ptr + tl.program_id(1) * (CO * NCOL) + out, accs[j], mask=omask, cache_modifier=".cg")

    @triton.jit
    def _wgrad_packed_tile(x_ptr, dy_ptr, out_ptr, P, ROWS, sxn, sxh, sxw, sdn, sdh, sdw,
                           H: tl.constexpr, W: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr, PAD: tl.constexpr,
                           CI: tl.constexpr, CO: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
                           ALIGN_X: tl.constexpr, ALIGN_D: tl.constexpr, SPLIT: tl.constexpr, IDX64: tl.constexpr,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, DOT_PREC: tl.constexpr):
        """_wgrad_kernel's tile of BLOCK_M output channels x BLOCK_N packed columns: column j is (tap j // CI,
        channel j % CI) of the weight's channels_last [co][kh][kw][ci] row, so a tile spans several taps
        and no tap's channels are padded to a block (group1.conv1's 9 x 24 = 216 columns: one 256-wide
        tile, dy read once, instead of three tiles of 3 taps x 32 channels, a quarter of them zeros). Each
        x row's ALIGN_X-vectors stay within one tap (CI and BLOCK_N multiples of ALIGN_X: the launcher's
        condition), which the hints say, so the copies stay ALIGN_X wide. Arguments as _wgrad_kernel's:
        x_ptr (the forward's input, strides sxn, sxh, sxw), dy_ptr (the output gradient, strides sdn, sdh,
        sdw), out_ptr (dw [CO][KH*KW*CI], or the fp32 partials when SPLIT > 1)."""
        NCOL: tl.constexpr = KH * KW * CI
        GN: tl.constexpr = (NCOL + BLOCK_N - 1) // BLOCK_N
        tile = tl.program_id(0)
        pid_m = tile // GN
        pid_n = tile - pid_m * GN
        rco = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        co_ok = rco < CO
        j = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        j_ok = j < NCOL
        tap = tl.max_constancy(tl.minimum(j // CI, KH * KW - 1), ALIGN_X)
        c = j - (j // CI) * CI
        dh = tap // KW - PAD
        dw = tap - (tap // KW) * KW - PAD
        colx = tl.max_contiguous(tl.multiple_of(dh * sxh + dw * sxw + c, ALIGN_X), ALIGN_X)
        start = tl.program_id(1) * ROWS
        end = tl.minimum(start + ROWS, P)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for p0 in range(start, start + ROWS, BLOCK_K):
            a, n, oh, ow, live = _wgrad_dy_chunk(p0, end, dy_ptr, rco, co_ok, sdn, sdh, sdw, OH, OW, ALIGN_D, IDX64,
                                                 BLOCK_K)
            # each pixel's row pointer, then one add per column vector (not a re-distributed multiply per tap)
            x_rows = x_ptr + tl.multiple_of(n * sxn + oh * sxh + ow * sxw, ALIGN_X)
            ih = oh[:, None] + dh[None, :]
            iw = ow[:, None] + dw[None, :]
            ok = live[:, None] & j_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            b = tl.load(x_rows[:, None] + colx[None, :], mask=tl.max_constancy(ok, [1, ALIGN_X]), other=0.0)
            acc = tl.dot(a, b, acc, input_precision=DOT_PREC)
        out = rco[:, None] * NCOL + j[None, :]
        omask = co_ok[:, None] & j_ok[None, :]
        if SPLIT == 1:
            tl.store(out_ptr + out, acc.to(out_ptr.dtype.element_ty), mask=omask)
        else:
            tl.store(out_ptr + tl.program_id(1) * (CO * NCOL) + out, acc, mask=omask, cache_modifier=".cg")

    @triton.jit
    def _wgrad_sum_kernel(part_ptr, dw_ptr, TOTAL, SPLIT: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK: tl.constexpr):
        """dw[i] = the sum over s of part[s][i], in dw's dtype; each program a BLOCK-element slice,
        BLOCK_S partials at a time (a [BLOCK_S, BLOCK] tile in flight per step, reduced in a fixed
        order: deterministic). part_ptr: fp32 [SPLIT][TOTAL] (the weight-grad's partials); dw_ptr:
        [TOTAL] (the gradient in its memory order)."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < TOTAL
        rs = tl.arange(0, BLOCK_S)
        total = tl.zeros([BLOCK], dtype=tl.float32)
        for s0 in range(0, SPLIT, BLOCK_S):
            s = s0 + rs
            v = tl.load(part_ptr + s[:, None] * TOTAL + i[None, :], mask=(s < SPLIT)[:, None] & m[None, :], other=0.0,
                        cache_modifier=".cg")
            total += tl.sum(v, axis=0)
        tl.store(dw_ptr + i, total.to(dw_ptr.dtype.element_ty), mask=m)


# ---------------------------------------------------------------------------------- configs
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages, archs): the launchers pick the first that fits
# the shape and the GPU (archs: compute capabilities' major versions it is meant for) unless
# autotuning on a GPU timed a better one. Listed here so that `profiling static` compiles each
# (pinned with ``FWD_CONFIGS.pinned(entry)``, which also forgets the choices made per shape).
# PyTorch's Triton conv template with the same flattened loop was miscompiled at 8 warps (pytorch
# issue 173068), so an 8-warp configuration never runs unchecked: the autotuner drops any whose
# output differs from a 4-warp candidate's, and without autotuning the first use of an 8-warp
# choice is checked the same way (``_checked``). On sm_90 the 128x256x64 tile at 8 warps (two
# consumer warpgroups) comes first for the forward and input-grad where the output has 256
# channels or more: per FLOP it reads 25% fewer operand bytes through L2 than 128x128, the bound
# of every 256-channel conv in the static model (group2's forward and input-grad 0.25-0.29 ms ->
# 0.19-0.22 ms, predicted). Where its grid leaves most of a last round idle (group3: 141 tiles on
# 132 SMs) the wave-aware order (``_wave_aware``) moves it back. For 64-channel outputs (group1.conv2,
# group2.conv1's input-grad) 256x64 at 8 warps: 1/51 operand elements per FLOP against 128x64's 1/43
# (0.110 -> 0.092 ms and 0.434 -> 0.362 ms on sm_90, predicted; its loads stay in flight under both
# compilers); where 128 columns fit, 128x128 stays ahead of it.
# sm_80's 128x64x64 tile runs 8 warps: with 4 it needs 242 registers under triton 3.8 and spills (255 + 16-72 B)
# under triton 3.6, the GPU machine's compiler; 8 warps need 128 under both (predicted 9% slower, no spill).
# Under the model refitted on 2026-12-01 that 8-warp tile is shared-memory bound on sm_80 (each warp's 32x32
# share of the tile loads its operand fragments for few MMAs), and 128x64x32 at 4 warps (164 registers under
# 3.8, 128 under 3.6, no spill, 4 loads in flight) goes ahead of it: group2.conv1's input-grad 0.684 -> 0.578 ms,
# group1.conv2 0.172 -> 0.151 forward and 0.164 input-grad; and 256x32x64 at 8 warps serves sm_80's 32-column
# outputs too (group1.conv1's input-grad 0.515 -> 0.463, L2-bound). Predictions, sm_80, not measured (no A100 lent).
GemmConfig = namedtuple("GemmConfig", "block_m block_n block_k num_warps num_stages archs")
# Under triton 3.6 (the GPU machine's) that tile's forward form keeps no load in flight (static: cp.async
# wait depth 0, the conv_wait_depth rule), so there it is an autotuning candidate only, last.
# The 32-column tiles serve an output of at most 32 channels (group1.conv1's input-grad: 24 channels of the
# whitening conv's output, 576 to reduce), where no other entry fits: without them the launcher widened its
# smallest tile to 128x32x32, 18 main-loop iterations of 4 HGMMA.64x32 each (33.5 instructions per MMA on
# sm_90 against a budget of 16). 256x32x64 at 8 warps (sm_90): 9 iterations, 19.5 per MMA, the weight tiles
# re-read half as often; predicted 0.386 -> 0.348 ms (L2-bound) on sm_90, and 128x32x64 on sm_80 0.526 ->
# 0.515 (profiling static, triton 3.8; the second H200 session measured this input-grad at 0.670 ms against
# cuDNN's 0.289, the step's largest conv loss).
_WIDE = (128, 256, 64, 8, 3, (9,))
_WIDE_FIRST = triton_version() >= (3, 7)
FWD_CONFIGS = ConfigList("FWD_CONFIGS", [GemmConfig(*c) for c in ((_WIDE,) if _WIDE_FIRST else ()) + (
    (128, 128, 64, 4, 4, (9,)), (256, 64, 64, 8, 3, (9,)),
    (128, 64, 64, 4, 4, (9,)), (128, 128, 32, 4, 4, (9,)), (128, 64, 32, 4, 4, (9,)),
    (64, 128, 64, 4, 4, (8,)), (128, 64, 32, 4, 4, (8,)), (128, 64, 64, 8, 4, (8,)), (64, 64, 64, 4, 4, (8,)),
    (64, 64, 32, 4, 4, (8, 9)), (256, 32, 64, 8, 3, (8, 9)), (128, 32, 64, 4, 4, (8, 9)),
) + (() if _WIDE_FIRST else (_WIDE,))], forget=lambda: forget_choices())
# The weight-grad's tiles span ``taps`` taps of a channel block (9: all of a 3x3 filter; 3: a row of
# it; 1: one tap per tile, as before), each chunk of dy read once per tile, with one fp32 accumulator
# per tap. Per FLOP a tile loads (BLOCK_M + taps x BLOCK_N) / (taps x BLOCK_M x BLOCK_N) operand
# elements through L2: 1/43 for 128x64x3, 1/58 for 64x64x9, 1/52 for 64x32x9 and 1/21 for 64x32x3
# against 1/43, 1/32 and 1/21 for the same tiles of one tap. Chosen with profiling static (sm_90,
# batch 2000, predictions): group1.conv1 0.463 -> 0.258 ms, group1.conv2 0.146 -> 0.082,
# group2.conv1 0.434 -> 0.242, group2.conv2 0.253 -> 0.211, group3.conv2 0.048 -> 0.041. Two
# limits found in the SASS: a tile of more than 3 taps over a partial channel block (24 channels in
# a 32-wide block) leaves its x loads out of the pipeline (plain loads, no cp.async wait depth),
# so such tiles need whole channel blocks; and on sm_80 (mma.sync, accumulators and operand
# fragments in registers) 9-tap tiles spill and 3-tap tiles of 128 rows are shared-memory bound,
# so its larger layers keep 128x64 one-tap tiles (group1.conv1 0.715 -> 0.410 ms, group1.conv2
# 0.194 -> 0.171 there).
# Packed columns (taps WGRAD_PACKED, first: they apply only where a tap's channels do not fill 32-wide blocks,
# _wgrad_packs): a tile spans BLOCK_N consecutive (tap, channel) columns of the KH*KW*CI, one accumulator, so
# group1.conv1's 216 columns (24 channels x 9 taps) are one 64x256 tile on sm_90, dy read once, where the
# 3-tap tiles of 32 channels took three (dy read three times, a quarter of each tile zeros); two 64x128 tiles on
# sm_80. The x bytes through L2 are the same (each tap's 48 bytes read in two 32-byte sectors either way).
# Predicted (profiling static, triton 3.8, not measured): group1.conv1 0.258 -> 0.190 ms on sm_90 (L2-bound),
# 0.410 -> 0.309 on sm_80 (shared-memory-bound before, issue-bound now).
# Where a tap has 256 channels (group2.conv2, group3's convs) sm_90 takes one tap per 128x256 tile at 8 warps (two
# consumer warpgroups, each 64 output channels x 256 input channels), ahead of the 3-tap 128x64 tiles: those feed
# each tap's wgmma a 64-wide B tile, which both warpgroups read, and reread the dy tile per tap, so per FLOP they
# read 1.6x the shared-memory bytes and are shared-memory bound (0.196 ms for group2.conv2), where the wide tile is
# tensor-core bound: 0.196 -> 0.158 ms (group2.conv2, group3.conv1), 0.038 -> 0.031 (group3.conv2), 144 KB of
# shared memory and 204 registers, no spill, a load in flight under triton 3.8 and 3.6. Its 18 column tiles split
# the pixels 22 ways (3 whole rounds) where the 3-tap tiles' 24 took 11, so the partials' sum doubles (0.013 ->
# 0.023 ms): with it 0.208 -> 0.181 ms per 7x7 layer, and group3.conv2 0.050 -> 0.054, slower (profiling static,
# sm_90: predictions, not measured). The first H200
# session's autotuner preferred the 3-tap tile (its L1 twin) to one tap per 128x128 tile at 4 warps, which the
# model put 12% ahead: on a GPU the autotuner times this tile against the rest and keeps what is faster.
WgradConfig = namedtuple("WgradConfig", "block_m block_n block_k num_warps num_stages taps archs")
WGRAD_CONFIGS = ConfigList("WGRAD_CONFIGS", [WgradConfig(*c) for c in (
    (64, 256, 64, 4, 3, 0, (9,)), (64, 128, 64, 4, 3, 0, (8, 9)), (128, 256, 64, 8, 3, 1, (9,)),
    (128, 64, 64, 8, 3, 3, (9,)), (64, 64, 32, 8, 3, 9, (9,)), (64, 32, 64, 4, 3, 9, (9,)),
    (128, 64, 64, 4, 4, 1, (8, 9)), (64, 64, 64, 4, 3, 3, (8,)), (64, 32, 64, 4, 3, 3, (8, 9)),
    (128, 128, 64, 4, 3, 1, (9,)), (64, 128, 64, 4, 4, 1, (9,)), (64, 64, 64, 4, 4, 1, (8, 9)),
    (64, 32, 64, 4, 4, 1, (8, 9)),
)], forget=lambda: forget_choices())
# The forward with the pool epilogue (conv_block: the 2x2 windows compared, the index and the BatchNorm
# partials) holds the tile in registers twice: 128x256 at 8 warps spills 48 bytes on sm_90 (255 registers)
# and 128x128 at 4 warps 40; at 8 warps 128x128 needs 188 and no spill (profiling static, triton 3.8). Its
# own list (the partials alone fit FWD_CONFIGS' tiles: 128x256 with them needs 246 registers, no spill):
FUSED_CONFIGS = ConfigList("FUSED_CONFIGS", [GemmConfig(*c) for c in (
    (128, 128, 64, 8, 3, (9,)), (256, 64, 64, 8, 3, (9,)), (128, 64, 64, 4, 4, (9,)), (128, 64, 32, 4, 4, (9,)),
    (64, 128, 64, 4, 4, (8,)), (128, 64, 64, 8, 4, (8,)), (64, 64, 64, 4, 4, (8,)), (128, 64, 32, 4, 4, (8,)),
    (64, 64, 32, 4, 4, (8, 9)),
)], forget=lambda: forget_choices())
# The activation tile through L1 (issue 22): with 16-byte vectors Triton copies A with cp.async.cg (SASS
# LDGSTS.E.BYPASS.128: L2 only), so each tap of a channel block re-reads its shifted tile from L2, the bound
# of most convs in the static model (9 reads of each activation element per column tile). With 8-byte vectors
# the copy is cp.async.ca (LDGSTS.E.64), which allocates in L1, where the next taps' tiles (the same rows
# shifted by a pixel or an image row, loaded in the following iterations) may hit. The weight-grad's twin
# does the same for its x chunks, one per tap of the tile in the same iteration. It costs instructions
# (sm_90, triton 3.8: 152 -> 199 per main-loop iteration for group2.conv1's 128x256x64 forward, 186 -> 213
# for its 256x64x64 input-grad), and the static model has no L1, so it predicts only that cost: never the
# default. On a GPU the autotuner times it as a twin of the first candidate (the configuration with A_VIA_L1
# appended) and keeps it where it is faster: the measurement decides what the model cannot.
A_VIA_L1 = "l1"
_twins_forced = False


def _l1_twin(align: int, esize: int):
    """The twin maker for a tile copied in vectors of ``align`` elements of ``esize`` bytes: only
    16-byte copies bypass L1 (narrower ones are cp.async.ca already), so otherwise None."""
    return (lambda c: tuple(c) + (A_VIA_L1,)) if align * esize == 16 else None


# The persistent twin (issue 22, item 3): one round of programs (SMs x resident), each walking its tiles
# in a loop nest Triton flattens (tl.range(..., flatten=True)), so that the next tile's first operand loads
# are in flight while this tile's last MMAs run instead of every tile filling its pipeline anew. cuDNN's
# Hopper conv kernels are persistent (the second H200 session's traces: sm90_xmma_* on 120-132 programs);
# ours ran one tile per program (9 main-loop iterations a tile for the 64-channel convs). The static model
# counts the flattened loop's guarded per-tile blocks once per tile (the work's tile_iters) but has no term
# for the pipeline fill a persistent grid saves, so it predicts the twin no faster (group3.conv2: 0.042 ms
# either way) and cannot judge it: like the L1 twin it is an autotuning candidate only (the first candidate's
# twin, sm_90, plain conv: not the fused epilogues), timed and checked against the 4-warp candidate's output
# on the GPU.
PERSISTENT = "persistent"
PERSIST_PROGRAMS: int | None = None  # tests: the persistent grid's size (else SMs x resident)
_persistent_forced = False
FLATTEN = HAS_TRITON and "flatten" in inspect.signature(tl.range.__init__).parameters


def _persistent_twin(device, fused: bool = False):
    """The persistent twin maker on Hopper where Triton flattens loop nests, else None."""
    if not FLATTEN or fused or (_persistent_forced is False and _arch(device) < 9):
        return None
    return _mark(lambda c: tuple(c) + (PERSISTENT,), PERSISTENT)


def _mark(fn, marker: str):
    fn.marker = marker
    return fn


@contextlib.contextmanager
def persistent_twins():
    """Within the block the forward / input-grad launcher runs the persistent twin of the
    configuration it chooses (profiling static compiles and models it: conv's ``variants``; tests)."""
    global _persistent_forced
    saved, _persistent_forced = _persistent_forced, True
    forget_choices()
    try:
        yield
    finally:
        _persistent_forced = saved
        forget_choices()


# Taps packed into the reduction (issue 22, group1.conv1): the forward of a conv whose channels do not fill a
# reduction block (group1.conv1's 24 input channels: a block of 32, 8 of them zeros on every tap) runs its
# reduction over the (tap, channel) pairs instead, KH x KW x CRED of them in blocks of BLOCK_K: 216 in 7
# blocks of 32 where the taps one by one take 9, the MMA's zero padding 3.6% of the work, not 25%. The L2
# traffic is the same (each pixel's 48 bytes per tap still read: masked lanes were never fetched), the
# per-iteration work per MMA larger (a vector's tap, address and mask from its reduction index); the static
# model (sm_80: issue-bound) predicts it faster, so it is the default wherever it applies (``_packs``): CRED
# and BLOCK_K multiples of the copy's vector (no vector straddles two taps) and fewer iterations than tap by
# tap. On a GPU the autotuner also times the first candidate tap by tap (the twin marked APART) and keeps
# the faster; ``taps_apart()`` forces that form (profiling static / launches: the TAPS_APART variant), and
# the weight-grad's one-tap-block columns too (its packed columns: WGRAD_PACKED, below).
APART = "apart"
_pack_forced: bool | None = None


def _packs(cred: int, bk: int, kh: int, kw: int, vector: int) -> bool:
    """The reduction runs over packed (tap, channel) pairs for this channel count and block (PACK)."""
    if _pack_forced is False or kh * kw == 1 or cred % vector or bk % vector:
        return False
    return triton.cdiv(kh * kw * cred, bk) < kh * kw * triton.cdiv(cred, bk)


def _packs_some(channels: int, kh: int, kw: int, vector: int = 1) -> bool:
    """Packing applies to a reduction over ``channels`` per tap for some block a launch may take (as wide as
    the channels rounded up to a power of two, ``_fits``)."""
    return any(_packs(channels, bk, kh, kw, vector) for bk in (16, 32, 64, 128)
               if bk <= max(16, triton.next_power_of_2(channels)))


def _apart_twin(cred: int, kh: int, kw: int, align: int, min_k: int = 16):
    """The tap-by-tap twin maker where packing applies to some block (a reduction not a multiple of 16
    channels), else None: the configuration tap by tap, its reduction block no wider than a tap's channels
    need (a 64-wide block over 24 channels would be 63% zeros)."""
    if not _packs_some(cred, kh, kw, align):
        return None
    width = max(min_k, triton.next_power_of_2(cred))
    return _mark(lambda c: (c[0], c[1], min(c[2], width), *c[3:]) + (APART,), APART)




# Operands swapped (issue 22; SWAP in _conv_tile). A wgmma reads its second operand from shared memory once
# per 64 rows of its first, so the 64-column tiles of the forward and input-grad (the 64-channel layers, and
# every input-grad into 64 channels: 256x64 on sm_90) read their weight tile once per 64 rows: as many bytes
# as the activation tile itself, the shared-memory bound of the static model. Swapped, the weight tile is the
# first operand (64 rows: one instruction) and the activation tile the second, 64x256 per instruction, read
# once. Predicted on sm_90 (profiling static, triton 3.8, model of 2026-12-01; not measured):
# group2.conv1's input-grad 0.274 -> 0.242 ms (shared memory 0.272 -> 0.233, then L2-bound), group1.conv2's
# forward and input-grad 0.070 -> 0.062 each, group1.conv1's forward 0.154 -> 0.148. Only where the tile is
# 64 columns wide (32 would waste half of each 64-row instruction) and at least 128 rows, for 2-byte operands
# (Hopper's fp8 and tf32 wgmma take K-major operands only, which the swapped weight tile is not), off with the
# fused epilogues (they work on the tile's rows) and on sm_80 (mma.sync has no such re-read: group2.conv2's
# input-grad there was predicted 12% slower, 235 registers). ``operands_unswapped()`` turns it off
# (profiling static / launches: the variant UNSWAPPED), so a GPU session times both forms.
SWAP_COLUMNS = 64
_swap_forced: bool | None = None


def _swaps(bm: int, bn: int, esize: int, fused: bool, arch: int) -> bool:
    """The launch computes its GEMM transposed (SWAP)."""
    if _swap_forced is False or fused or esize != 2:
        return False
    return arch >= 9 and bn == SWAP_COLUMNS and bm >= 2 * SWAP_COLUMNS


@contextlib.contextmanager
def operands_unswapped():
    """Within the block no conv GEMM runs transposed (SWAP off)."""
    global _swap_forced
    saved, _swap_forced = _swap_forced, False
    forget_choices()
    try:
        yield
    finally:
        _swap_forced = saved
        forget_choices()


# profiling (OpSpec.variants_for): listed where a forward (output channels) or input-grad (input channels) may
# take a 64-column tile
operands_unswapped.applies = lambda case: case.params.get("k", 1) > 1 and (
    SWAP_COLUMNS // 2 < case.params["cout"] <= SWAP_COLUMNS
    or (case.params.get("input_grad", True) and SWAP_COLUMNS // 2 < case.x_shape[1] <= SWAP_COLUMNS))


@contextlib.contextmanager
def taps_apart():
    """Within the block every conv GEMM runs its taps one by one, never packed (PACK off)."""
    global _pack_forced
    saved, _pack_forced = _pack_forced, False
    forget_choices()
    try:
        yield
    finally:
        _pack_forced = saved
        forget_choices()


# profiling (OpSpec.variants_for): a conv whose forward (input channels) or input-grad (output channels) packs
# (the forward of a valid conv with a reduction of at most SMALL_REDUCTION runs the direct small kernel)
taps_apart.applies = lambda case: (case.params.get("k", 1) > 1 and
                                   ((_packs_some(case.x_shape[1], case.params["k"], case.params["k"]) and
                                     (case.params.get("padding") != 0
                                      or case.x_shape[1] * case.params["k"] ** 2 > SMALL_REDUCTION)) or
                                    (case.params.get("input_grad", True) and
                                     _packs_some(case.params["cout"], case.params["k"], case.params["k"]))))


# The weights through the TMA unit (issue 22, item 6): on sm_90, where the installed Triton makes tensor
# descriptors in a kernel (tl.make_tensor_descriptor: 3.6 on the GPU machine, 3.8 in CI), each weight tile is
# one TMA copy issued by one thread instead of cp.async vectors whose addresses and masks every thread computes
# (group2.conv1's 128x256x64 forward: 8 of its 12 16-byte copies per thread and iteration are the weight's).
# The descriptor is 3-d with the tap a dimension of its own, so a partial channel block reads zeros past the
# last channel (TMA's bounds), as the masked loads did. Conditions (``_w_tma``): 1- or 2-byte operands (TF32's
# wgmma wants both operands K-major: fp32 stays on the pointer path), the weight 16-byte aligned with row
# strides that are multiples of 16 bytes (CRED or COUT channels a multiple of 8 in fp16, 16 in fp8), and on a
# GPU, a first launch that ran and matched the pointer path's output (``_tma_checked``); otherwise, and on
# sm_80 / sm_89, the pointer path. ``weight_pointers()`` forces the pointer path (profiling's W_POINTERS
# variant), ``tma_weights()`` the TMA path wherever the alignment allows it (interpreter tests).
# Only tiles at least W_TMA_MIN_N columns wide take it: compiled for sm_90 (triton 3.8, profiling static) the
# 128- and 256-wide tiles' main loops lose 8-15% of their instructions (group2.conv2's forward 151 -> 139 a
# loop iteration, its input-grad 159 -> 136, group3.conv2's 213 -> 188; fp8 alike), the 64-wide ones none
# (group1.conv2 168 -> 171) and the 24-channel ones gain some (group1.conv1's forward 115 -> 127: its small
# weight tile costs the TMA's barrier handshake more than the copies it saves).
W_TMA_MIN_N = 128
HAS_TMA = HAS_TRITON and hasattr(tl, "make_tensor_descriptor") and hasattr(triton, "set_allocator")
_tma_forced: bool | None = None
_tma_ok: dict = {}  # GPU index -> the first TMA launch's check passed (True) or failed (False)


def _w_tma(w: torch.Tensor, esize: int, cred: int, cout: int, wlayout: int, device) -> bool:
    """The weight tiles go through a TMA descriptor on this launch (see HAS_TMA)."""
    if not HAS_TMA or _tma_forced is False or esize not in (1, 2) or w.data_ptr() % 16:
        return False
    if (cout if wlayout == 1 else cred) * esize % 16:
        return False
    if _tma_forced:
        return True
    if _triton.target_sms():  # profiling static: what the modelled GPU runs
        return _arch(device) >= 9
    if device.type != "cuda" or interpreting():
        return False
    idx = _gpu_index(device)
    return _tma_ok.get(idx, True) and _capability_major(idx) >= 9  # (per launch: no driver query after the first)


def _gpu_index(device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _capability_major(idx: int) -> int:
    return torch.cuda.get_device_capability(idx)[0]


def _tma_checked(run_tma, run_pointers, output, device, esize: int) -> None:
    """The first TMA launch on a GPU: run it and the pointer path; on an error or a different output
    the process keeps to the pointer path (a warning says why; ``_rejected`` has it), else TMA."""
    idx = _gpu_index(device)
    run_pointers()  # its errors are the launch's own (OutOfResources: _run_chosen takes a stage off)
    ref = output().detach().float().clone()
    try:
        run_tma()
        err = _rel_err(output(), ref)
        ok, why = err <= autotune_tolerance(output().dtype, esize), f"differs from the pointer path by {err:.2e}"
    except OutOfResources:  # this configuration's TMA form needs more shared memory: decided on another launch
        return
    except Exception as e:  # noqa: BLE001 - any failure keeps the proven path
        ok, why = False, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
    _tma_ok[idx] = ok
    if not ok:
        import warnings
        _rejected.append(("w_tma", (), "W_TMA", why))
        warnings.warn(f"conv (triton): the weights' TMA path is off on this GPU ({why}); the pointer path runs",
                      RuntimeWarning, stacklevel=3)


def _force_tma(value: bool | None, name: str, doc: str):
    @contextlib.contextmanager
    def ctx():
        global _tma_forced
        saved, _tma_forced = _tma_forced, value
        forget_choices()
        try:
            yield
        finally:
            _tma_forced = saved
            forget_choices()
    ctx.__name__, ctx.__qualname__, ctx.__doc__ = name, name, doc
    return ctx


weight_pointers = _force_tma(False, "weight_pointers",
                             "Within the block the conv GEMMs read the weights through pointers (cp.async), never TMA.")
tma_weights = _force_tma(True, "tma_weights", "Within the block the conv GEMMs read the weights through TMA "
                         "wherever the alignment allows it, on every tile width.")


def _twin_makers(twin) -> tuple:
    return () if twin is None else (twin if isinstance(twin, tuple) else (twin,))


def _vector(via: list, align: int, esize: int) -> int:
    """The ALIGN_X a launch passes: 8 bytes' worth of elements for the twin, else the tile's own."""
    return 8 // esize if via == [A_VIA_L1] else align


@contextlib.contextmanager
def l1_twins():
    """Within the block the conv launchers (forward, input-grad, weight-grad) run the L1 twin of
    the configuration they choose, where it has one (profiling static compiles and models it:
    conv's ``variants``)."""
    global _twins_forced
    saved, _twins_forced = _twins_forced, True
    forget_choices()
    try:
        yield
    finally:
        _twins_forced = saved
        forget_choices()


SMALL_CONFIG = (128, 32, 16, 4)   # the whitening conv: BLOCK_M, BLOCK_N, BLOCK_K (>= KH*KW*CI), warps
# The largest reduction (input channels x taps) of a valid conv that runs the direct small kernel (and
# that conv=triton_small hands to Triton): the whitening conv's 3 x 2 x 2 = 12; group1.conv1's 24 x 9 not.
SMALL_REDUCTION = 64
GROUP_M = 8
AUTOTUNE = True                # on a GPU, time each config once per shape (chosen_configs() shows them)
# Autotune acceptance: a candidate whose output differs from the first 4-warp candidate's by more than this
# (relative Frobenius norm) is dropped, whatever its time (the PyTorch issue 173068 trap: 8-warp flattened-loop
# convs miscompiled). Correct candidates differ only in the fp32 accumulation order (about sqrt(K) x 2^-24 at
# K = 2304: 3e-6, negligible) and in where the final rounding to the output dtype lands: at most one ulp per
# element, about ulp / sqrt(6) in norm: 2e-4 for fp16 (ulp 2^-11), 1.6e-3 for bf16 (2^-8). A partly wrong
# tile (a dropped K chunk of 1 in 36, one wrong tile in 282) moves the norm by 3e-2 or more. So: fp16 and fp32
# 2e-3 (10x the noise), bf16 1e-2 (6x). FP8 operands (element size 1): Hopper's fp8 MMA accumulates with
# about 14 mantissa bits (DeepSeek-V3 report), and BLOCK_K changes where partial sums are promoted, so two
# correct fp8 candidates may differ by ~1e-3: 1e-2 against the fp8 path's own 4-warp reference.
AUTOTUNE_REL_TOL = {torch.float16: 2e-3, torch.float32: 2e-3, torch.bfloat16: 1e-2}
AUTOTUNE_REL_TOL_FP8 = 1e-2


def autotune_tolerance(out_dtype: torch.dtype, esize: int = 2) -> float:
    """The relative error to the 4-warp reference beyond which an autotune candidate is dropped."""
    tol = AUTOTUNE_REL_TOL.get(out_dtype, 1e-2)
    return max(tol, AUTOTUNE_REL_TOL_FP8) if esize == 1 else tol
_chosen: dict[tuple, tuple] = {}
_rejected: list = []


def forget_choices() -> None:
    """Forget the configurations chosen per shape (the next launch of each shape chooses again)."""
    _chosen.clear()


def chosen_configs() -> dict:
    """Configurations picked so far, keyed by (kernel, shape key): for benchmark output."""
    return {f"{k[0]} {k[1:]}": v for k, v in _chosen.items()}


def _choice_context() -> dict:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return dict(device=name, triton=triton.__version__)


def save_choices(path: str) -> int:
    """Write the configurations timed so far to ``path`` (JSON, with the GPU's name and the
    triton version they hold for), so that a later process skips the timing; returns how many."""
    import json
    rows = [[k[0], list(k[1]), *k[2:], list(v)] for k, v in _chosen.items()]
    with open(path, "w") as f:
        json.dump(dict(_choice_context(), choices=rows), f)
    return len(rows)


def load_choices(path: str) -> int:
    """Read what ``save_choices`` wrote, if it is for this GPU and triton version; entries
    naming a configuration that is no longer in the lists are dropped. Returns how many were
    taken (0 for a missing, foreign or unreadable file)."""
    import json
    try:
        with open(path) as f:
            data = json.load(f)
        if {k: data.get(k) for k in ("device", "triton")} != _choice_context():
            return 0
        valid = {kind: {tuple(c[:-1]) + via for c in cs for via in ((), (A_VIA_L1,), (PERSISTENT,), (APART,))}
                 for kind, cs in (("wgrad", WGRAD_CONFIGS), ("fwd", FWD_CONFIGS + FUSED_CONFIGS))}
        valid["fwd"] |= {(c[0], c[1], 2 * c[2], *c[3:]) for c in valid["fwd"]}  # fp8's wide-K tiles
        # the tap-by-tap twin, its reduction block narrowed to a tap's channels (_apart_twin)
        valid["fwd"] |= {(c[0], c[1], k, *c[3:5], APART) for c in valid["fwd"] for k in (16, 32, 64) if k <= c[2]}
        n = 0
        for kind, shape, *rest in data["choices"]:
            cfg = tuple(rest[-1])
            if cfg in valid["wgrad" if kind == "wgrad" else "fwd"]:
                _chosen[(kind, tuple(shape), *rest[:-1])] = cfg
                n += 1
        return n
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _arch(device: torch.device) -> int:
    """The compute capability's major version the launch is for (the modelled GPU under profiling static)."""
    if _triton.target_sms():
        return 8 if _triton.target_sms() == 108 else 9
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0]
    return 9


def _fits(cfg, n_cols: int, k_chans: int, min_k: int) -> bool:
    """The output tile is not wider than needed, and the reduction block not wider than the
    channel count rounded up to a power of two (nor narrower than tl.dot allows)."""
    bm, bn, bk = cfg[:3]
    return bn <= max(16, triton.next_power_of_2(n_cols)) and min_k <= bk <= max(min_k, triton.next_power_of_2(k_chans))


# FP8 operands on sm_90 (issue 22, item 5): the lists are sized for 2-byte elements; with 1-byte ones each
# configuration's BLOCK_K doubles where the reduction has the channels for it (256: group2.conv2 and group3,
# forward and input-grad; not the 64-channel ones), so that a tile row is 128 bytes as in fp16 (the same shared
# memory per stage, 128-byte swizzle) and each main-loop iteration's address, mask and copy instructions feed
# twice the QGMMAs (sm_90, triton 3.8, profiling static: group2.conv2 56 -> 38 instructions per QGMMA, group3.conv2
# 33 -> 27, group2.conv1's input-grad 31 -> 23). The wide tile takes twice the shared memory of fp8's narrow one,
# so 128x128 and 256x64 tiles go from two programs per SM to one (the same bytes in flight per SM); the model
# predicts both at the same time (L2-bound), so on a GPU the autotuner times the narrow ones too, after the
# wide. sm_89 (mma.sync) keeps the lists as they are: not modelled, not measured.
FP8_WIDE_K_ARCH = 9


@contextlib.contextmanager
def fp8_narrow_k():
    """Within the block fp8 launches keep the lists' own BLOCK_K (the candidates autotuning times after the
    wide ones; profiling static and profiling launches compile and time them: conv's ``variants``)."""
    global FP8_WIDE_K_ARCH
    saved, FP8_WIDE_K_ARCH = FP8_WIDE_K_ARCH, 99
    forget_choices()
    try:
        yield
    finally:
        FP8_WIDE_K_ARCH = saved
        forget_choices()


fp8_narrow_k.impls = ("fp8",)  # the variant changes nothing else (profiling: OpSpec.variants_for)


def _fp8_wide(c: tuple, n_cols: int, k_chans: int, min_k: int) -> tuple:
    """``c`` with BLOCK_K doubled where the reduction's channels allow it, else ``c``."""
    wide = (c[0], c[1], 2 * c[2], *c[3:])
    return wide if _fits(wide, n_cols, k_chans, min_k) else c


def _candidates(configs, n_cols: int, k_chans: int, min_k: int, arch: int, esize: int = 2) -> list[tuple]:
    mine = [c for c in configs if arch in c[-1]] or list(configs)  # a forced list (static) may name any arch
    cands = [tuple(c[:-1]) for c in mine if _fits(c, n_cols, k_chans, min_k)]
    if esize == 1 and arch >= FP8_WIDE_K_ARCH:
        cands = list(dict.fromkeys(_fp8_wide(c, n_cols, k_chans, min_k) for c in cands))
    if not cands:  # widen the smallest configuration to what the shape and dtype need
        c = min(mine, key=lambda c: c[1] * c[2])
        cands = [(c[0], min(c[1], max(16, triton.next_power_of_2(n_cols))), max(c[2], min_k), c[3], c[4])]
    return cands


def _wave_loss(programs: int, sms: int) -> float:
    """Time a GEMM grid loses to an uneven last round, relative: the busiest SM runs
    ceil(programs / SMs) programs where the average is programs / SMs (0: every SM equally busy)."""
    return (-(-programs // sms)) * sms / programs - 1


def _wave_aware(cands: list, programs, device, esize: int, limit: float = 0.5) -> list:
    """The candidates reordered: the first (in preference order: the larger tiles, which re-read less
    through L2) whose grid loses at most ``limit`` to an uneven last round goes first; without one,
    the one losing least. (profiling static finds a large tile losing 40% to its last round still
    faster than an even grid of small tiles, so the limit is loose; on a GPU the autotuner times them.)"""
    sms = sm_count(device)
    losses = [_wave_loss(programs(c), sms) for c in cands]
    good = [c for c, l in zip(cands, losses) if l <= limit]
    first = good[0] if good else cands[losses.index(min(losses))]
    return [first] + [c for c in cands if c != first]


def _select(kind: str, key: tuple, configs, n_cols: int, k_chans: int, launch, device, min_k: int = 16,
            output=None, cands: list | None = None, programs=None, esize: int = 2, twin=None) -> tuple:
    """The configuration for this shape: measured once on a GPU, else the first that fits.
    ``min_k``: tl.dot needs a reduction block of at least 16 (fp16/bf16) or 32 (fp8).
    ``output()`` returns the tensor a launch writes: autotuning keeps only the candidates whose
    output matches the first 4-warp candidate's (a miscompiled configuration is dropped).
    ``twin(cfg)``: a variant of the first candidate that only autotuning tries (A_VIA_L1), or a tuple
    of them (the forward's L1 and persistent twins); under ``l1_twins`` / ``persistent_twins``
    (profiling static, tests) the choice's twin of that kind, where it has one."""
    choice = _choose(kind, key, configs, n_cols, k_chans, launch, device, min_k, output, cands, programs, esize, twin)
    for t in _twin_makers(twin):
        marker = getattr(t, "marker", A_VIA_L1)
        if (_twins_forced and marker == A_VIA_L1) or (_persistent_forced and marker == PERSISTENT):
            choice = t(choice)
    return choice


def _smem_need(kind: str, cfg, esize: int) -> int:
    """Shared memory a configuration's pipelined operand tiles take: stages x (A tile + B tile) x
    element size, the weight-grad's B tile spanning its taps. It matches the compiler's figures in
    the OutOfResources errors of the first GPU run (H200: fp32 weight-grads of 9 taps, 245760 and
    270336 bytes); an epilogue's scratch can add a little (``_run_chosen`` covers that)."""
    bm, bn, bk, _, stages = cfg[:5]
    taps = max(1, cfg[5]) if kind == "wgrad" else 1  # (WGRAD_PACKED: one B tile of BLOCK_N columns)
    return stages * (bm * bk + bk * bn * taps) * esize


def _smem_limit(device) -> int:
    """The most shared memory one program may use on ``device`` (opt-in: 227 KB on an H100 / H200,
    163 KB on an A100)."""
    return torch.cuda.get_device_properties(device).shared_memory_per_block_optin


def _fitting(kind: str, cands: list, esize: int, limit: int) -> list:
    """The candidates whose tiles fit ``limit`` (in their order); where none does, the first with
    as few pipeline stages as it needs (at least 2), else the smallest as it is (the compiler's
    error then names the problem). The lists are sized for fp16: fp32 doubles every tile."""
    fit = [c for c in cands if _smem_need(kind, c, esize) <= limit]
    if fit:
        return fit
    first = cands[0]
    for stages in range(first[4] - 1, 1, -1):
        c = tuple(first[:4]) + (stages,) + tuple(first[5:])
        if _smem_need(kind, c, esize) <= limit:
            return [c]
    return [min(cands, key=lambda c: _smem_need(kind, c, esize))]


def _run_chosen(full_key: tuple, cfg: tuple, launch) -> tuple:
    """Launch the configuration chosen for ``full_key``; where the compiled kernel needs more shared
    memory than the GPU has (triton's OutOfResources, raised before anything runs), the same tile with
    one pipeline stage fewer, down to one, kept as the shape's choice. Returns what ran."""
    while True:
        try:
            launch(cfg)
            return cfg
        except OutOfResources:
            if cfg[4] <= 1:
                raise
            cfg = tuple(cfg[:4]) + (cfg[4] - 1,) + tuple(cfg[5:])
            _chosen[full_key] = cfg


def _dot_precision(esize: int) -> str:
    """tl.dot's input_precision: fp32 operands in TF32 unless torch.backends.cudnn.allow_tf32 is off
    (as F.conv2d runs them on a GPU), then in full fp32 ("ieee"); other dtypes: the default, "tf32",
    which they ignore."""
    return "ieee" if esize == 4 and not torch.backends.cudnn.allow_tf32 else "tf32"


def _choose(kind, key, configs, n_cols, k_chans, launch, device, min_k, output, cands, programs, esize, twin):
    full_key = (kind,) + key
    if full_key in _chosen:  # the launch path: one dict lookup after the first call per shape
        return _chosen[full_key]
    narrow = []  # fp8 on sm_90: the lists' own BLOCK_K, which autotuning times after the wide ones
    if not cands:
        cands = _candidates(configs, n_cols, k_chans, min_k, _arch(device), esize)
        if esize == 1:
            narrow = [c for c in _candidates(configs, n_cols, k_chans, min_k, _arch(device)) if c not in cands]
    if device.type == "cuda" and not interpreting():
        cands = _fitting(kind, cands, esize, _smem_limit(device))
        narrow = [c for c in narrow if _smem_need(kind, c, esize) <= _smem_limit(device)]
    if programs is not None and not interpreting():
        cands = _wave_aware(cands, programs, device, esize)
    if interpreting():
        c = cands[-1]
        _chosen[full_key] = (max(c[0], 64), *c[1:])  # the interpreter pays per program
    elif AUTOTUNE and len(cands) + len(narrow) > 1 and device.type == "cuda" and not torch.cuda.is_current_stream_capturing():
        from triton.testing import do_bench
        cands = cands + narrow + [t(cands[0]) for t in _twin_makers(twin)]
        ref_cfg = next((c for c in cands if c[3] <= 4), cands[0])
        ref_cfg = _run_chosen(full_key, ref_cfg, launch)
        ref = output().detach().float().clone() if output else None
        tol = autotune_tolerance(output().dtype, esize) if output else None
        times = {}
        for c in cands:
            try:
                t = do_bench(lambda c=c: launch(c), warmup=5, rep=20)
            except OutOfResources:  # more shared memory than the estimate: not a candidate here
                continue
            except Exception as e:  # noqa: BLE001 - a twin this Triton cannot build is no candidate
                if c[-1] not in (A_VIA_L1, PERSISTENT, APART):
                    raise
                _rejected.append((kind, key, c, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"))
                continue
            if ref is not None and c != ref_cfg:
                err = _rel_err(output(), ref)
                if not err <= tol:
                    _rejected.append((kind, key, c, err))
                    continue
            times[c] = t
        _chosen[full_key] = min(times, key=times.get) if times else ref_cfg
    else:
        _chosen[full_key] = _checked(kind, key, cands, launch, output, device, esize)
    return _chosen[full_key]


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative (Frobenius) distance of a candidate's output from the 4-warp reference's (fp32)."""
    return ((out.float() - ref).norm() / ref.norm().clamp_min(1e-12)).item()


def _checked(kind: str, key: tuple, cands: list, launch, output, device, esize: int) -> tuple:
    """The first candidate, checked against the first 4-warp one when it has more warps (the
    pytorch issue 173068 trap) and a GPU runs it outside a capture; a mismatch is recorded in
    ``_rejected`` and the 4-warp candidate used instead."""
    first = cands[0]
    ref_cfg = next((c for c in cands if c[3] <= 4), None)
    if (first[3] <= 4 or ref_cfg is None or output is None or device.type != "cuda"
            or torch.cuda.is_current_stream_capturing()):
        return first
    launch(ref_cfg)
    ref = output().detach().float().clone()
    launch(first)
    err = _rel_err(output(), ref)
    if err <= autotune_tolerance(output().dtype, esize):
        return first
    _rejected.append((kind, key, first, err))
    return ref_cfg


def _align(elem_size: int, *strides: int) -> int:
    """The largest power of two (up to 16 bytes' worth of elements) dividing every stride."""
    a = max(1, 16 // elem_size)
    while a > 1 and any(s % a for s in strides):
        a //= 2
    return a


def _out_nhwc(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A fresh channels_last tensor (allocated in that layout: no copy)."""
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype, memory_format=torch.channels_last)


def _span(t: torch.Tensor) -> int:
    """The largest element offset of ``t`` from its first element (strides may be padded)."""
    return sum((d - 1) * abs(st) for d, st in zip(t.shape, t.stride()) if d > 0)


def _launch_conv(x, w, bias, y, H, W, OH, OW, cred, cout, KH, KW, pad, flip, wlayout, kind, scales=None,
                 fused: dict | None = None):
    """y = implicit GEMM of x (pixels x cred channels, channels contiguous) with w (see WLAYOUT);
    ``scales``: (scale of x, scale of w) when both are fp8. ``fused`` (the forward only, conv_block's
    epilogues): ``pool`` (y is the 2x2 max-pooled output, ``idx`` its uint8 index, both with y's
    strides) and ``stats`` (the launcher stores the BatchNorm partials of y in ``fused["part"]``,
    [row tiles][2][cout] fp32, and the rows one tile covers in ``fused["rows"]``)."""
    fused = fused if fused is not None else {}
    pool, stats = fused.get("pool", False), fused.get("stats", False)
    N = x.shape[0]
    M = N * (OH // 2) * (OW // 2) * 4 if pool else N * OH * OW
    dev = x.device
    sa, sb = scales if scales is not None else (y, y)
    idx = fused["idx"] if pool else y
    sxn, _, sxh, sxw = x.stride()[0], x.stride()[1], x.stride()[2], x.stride()[3]
    if x.stride(1) != 1 and x.shape[1] != 1:  # one channel: its stride is never used
        raise ValueError("conv (triton): internal error: the GEMM input must have contiguous channels")
    align_x = _align(x.element_size(), sxn, sxh, sxw)
    align_y = _align(y.element_size(), y.stride(0), y.stride(2), y.stride(3))
    if pool:  # the index is stored through y's offsets: 1-byte elements align at the same element counts
        align_y = min(align_y, _align(1, y.stride(0), y.stride(2), y.stride(3)))
    # 32-bit offsets unless an offset can reach 2^31 (the last element of x or y, plus a tap's shift)
    idx64 = max(_span(x), _span(y)) + abs(pad) * (abs(sxh) + abs(sxw)) >= 2 ** 31

    w_tma = _w_tma(w, w.element_size(), cred, cout, wlayout, dev)

    def packed(cfg) -> bool:
        """The taps go into the reduction on this launch (PACK; not for the twin marked APART)."""
        return APART not in cfg[5:] and _packs(cred, cfg[2], KH, KW, _vector([v for v in cfg[5:] if v == A_VIA_L1],
                                                                              align_x, x.element_size()))

    # (launch_as and launch are two closures, neither calling itself: a closure that did would be a reference
    # cycle holding y until the garbage collector ran, and autograd copies an input-grad it cannot steal)
    def launch_as(cfg, tma: bool):
        bm, bn, bk, warps, stages, *via = cfg
        persist = PERSISTENT in via
        pack = packed(cfg)
        via = [v for v in via if v not in (PERSISTENT, APART)]
        ax = _vector(via, align_x, x.element_size())
        meta = dict(H=H, W=W, OH=OH, OW=OW, PAD=pad, CRED=cred, COUT=cout, KH=KH, KW=KW, FLIP=flip, WLAYOUT=wlayout, HAS_BIAS=bias is not None,
                    HAS_SCALE=scales is not None, ALIGN_X=ax, ALIGN_Y=align_y, IDX64=idx64, BLOCK_M=bm, BLOCK_N=bn,
                    BLOCK_K=bk, GROUP_M=GROUP_M, num_warps=warps, num_stages=stages)
        meta.update(POOL=pool, STATS=stats, DOT_PREC=_dot_precision(x.element_size()))
        if tma:
            meta["W_TMA"] = 1
            if dev.type == "cuda":
                _triton.ensure_allocator()
        if pack:
            meta["PACK"] = 1
        if _swaps(bm, bn, x.element_size(), pool or stats, _arch(dev)):
            meta["SWAP"] = 1
        part = y
        if stats:  # a fresh buffer per call (two streams never share one); every entry is written
            part = torch.empty((triton.cdiv(M, bm), 2, cout), device=dev, dtype=torch.float32)
            fused.update(part=part, rows=bm // 4 if pool else bm)
        grid = (triton.cdiv(M, bm) * triton.cdiv(cout, bn),)
        if persist:  # one round of programs, each walking its tiles
            meta["PERSIST"] = 1
            slots = PERSIST_PROGRAMS or programs_per_wave(_conv_kernel, meta, 1, dev)
            grid = (max(1, min(grid[0], slots)),)
        steps = triton.cdiv(KH * KW * cred, bk) if pack else KH * KW * triton.cdiv(cred, bk)
        _triton.launch(_conv_kernel, grid, (x, w, bias if bias is not None else y, y, sa, sb, idx, part, M,
                                            sxn, sxh, sxw, y.stride(0), y.stride(2), y.stride(3), steps),
                       meta, dev)

    def launch(cfg):
        """Launch ``cfg``, its weights through TMA where _w_tma allows it and the tile is wide enough; the
        first such launch on a GPU is checked against the pointer path (_tma_checked)."""
        tma = w_tma and (cfg[1] >= W_TMA_MIN_N or _tma_forced is True) and not packed(cfg)
        if tma and dev.type == "cuda" and _tma_forced is None and _gpu_index(dev) not in _tma_ok:
            if not torch.cuda.is_current_stream_capturing():  # unchecked: not inside a graph
                _tma_checked(lambda: launch_as(cfg, True), lambda: launch_as(cfg, False), lambda: y, dev,
                             x.element_size())
            tma = _tma_ok.get(_gpu_index(dev), False)
        launch_as(cfg, tma)

    key = (tuple(x.shape), cout, KH, KW, pad, str(x.dtype), flip) + ((pool, stats) if pool or stats else ())
    # packed taps (sm_90): the reduction blocks may be as wide as the packed reduction, not a tap's channels
    # (group1.conv1's forward: 256x64x64, 4 iterations; predicted 0.216 -> 0.190 ms, L2-bound: the weight tiles
    # re-read half as often). sm_80 keeps a tap's width: there the wider blocks are predicted slower (issue-bound)
    # (the fused pool + statistics forward keeps a tap's width: its 256x64x64 tile loses its load in flight)
    k_red = KH * KW * cred if _arch(dev) >= 9 and not (pool or stats) and _packs_some(cred, KH, KW, align_x) else cred
    min_k = 32 if x.element_size() == 1 else 16
    cfg = _select(kind, key, FUSED_CONFIGS if pool else FWD_CONFIGS, cout, k_red, launch, dev, min_k, output=lambda: y,
                  programs=lambda c: triton.cdiv(M, c[0]) * triton.cdiv(cout, c[1]), esize=x.element_size(),
                  twin=tuple(t for t in (_l1_twin(align_x, x.element_size()), _persistent_twin(dev, pool or stats),
                                         _apart_twin(cred, KH, KW, align_x, min_k)) if t is not None))
    return _run_chosen((kind,) + key, cfg, launch)


def _launch_small(x, w, bias, y, KH, KW):
    N, CI, H, W = x.shape
    CO, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    bm, bn, bk, warps = SMALL_CONFIG
    bk = max(bk, triton.next_power_of_2(KH * KW * CI))
    bn = min(bn, max(16, triton.next_power_of_2(CO))) if CO <= bn else bn
    meta = dict(OH=OH, OW=OW, CI=CI, COUT=CO, KH=KH, KW=KW, HAS_BIAS=bias is not None,
                IDX64=max(_span(x), _span(y)) >= 2 ** 31,
                ALIGN_Y=_align(y.element_size(), y.stride(0), y.stride(2), y.stride(3)),
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, DOT_PREC=_dot_precision(x.element_size()), num_warps=warps)
    M = N * OH * OW
    _triton.launch(_conv_small_kernel, (triton.cdiv(M, bm), triton.cdiv(CO, bn)),
                   (x, w, bias if bias is not None else y, y, M, x.stride(0), x.stride(2), x.stride(3),
                    y.stride(0), y.stride(2), y.stride(3)), meta, x.device)


def _small_ok(x: torch.Tensor, w: torch.Tensor, padding: int) -> bool:
    """The whitening-style conv: valid, channels_last input and weight, reduction <= 64."""
    return (padding == 0 and w.shape[1] * w.shape[2] * w.shape[3] <= SMALL_REDUCTION and x.stride(1) == 1
            and w.is_contiguous(memory_format=torch.channels_last))


def _gemm_input(t: torch.Tensor) -> torch.Tensor:
    """The GEMM kernels read channels contiguously: channels_last (or C == 1) as is, else a copy."""
    return t if t.stride(1) == 1 else t.contiguous(memory_format=torch.channels_last)


def _weight_cl(w: torch.Tensor) -> torch.Tensor:
    return w if w.is_contiguous(memory_format=torch.channels_last) else w.contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("speedrun::conv2d_fwd", mutates_args=())
def conv2d_fwd(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    N, CI, H, W = x.shape
    CO, _, KH, KW = w.shape
    OH, OW = H + 2 * padding - KH + 1, W + 2 * padding - KW + 1
    y = _out_nhwc((N, CO, OH, OW), x)
    x, w = _gemm_input(x), _weight_cl(w)
    if _small_ok(x, w, padding):
        _launch_small(x, w, bias, y, KH, KW)
    else:
        _launch_conv(x, w, bias, y, H, W, OH, OW, CI, CO, KH, KW, padding, False, 0, "fwd")
    return y


@conv2d_fwd.register_fake
def _(x, w, bias, padding):
    N, _, H, W = x.shape
    CO, _, KH, KW = w.shape
    return _out_nhwc((N, CO, H + 2 * padding - KH + 1, W + 2 * padding - KW + 1), x)


@torch.library.custom_op("speedrun::conv2d_dgrad", mutates_args=())
def conv2d_dgrad(dy: torch.Tensor, w: torch.Tensor, x_shape: list[int], padding: int) -> torch.Tensor:
    """dx of conv2d_fwd (in dy's dtype, channels_last)."""
    N, CI, H, W = x_shape
    _, CO, OH, OW = dy.shape
    KH, KW = w.shape[2:]
    dx = _out_nhwc((N, CI, H, W), dy)
    # input-grad: rows = dx pixels, reduction over co (the [co][tap][ci] weight read as layout 1)
    _launch_conv(_gemm_input(dy), _weight_cl(w), None, dx, OH, OW, H, W, CO, CI, KH, KW, padding, True, 1, "dgrad")
    return dx


@conv2d_dgrad.register_fake
def _(dy, w, x_shape, padding):
    return _out_nhwc(tuple(x_shape), dy)


def _wgrad_split(tiles: int, P: int, bk: int, slots: int, sms: int) -> int:
    """Split-K factor: the smallest split whose grid (tiles x split) fills every resident slot of the
    GPU (``slots``) with every SM equally busy (within 5%), with at least 8 reduction steps per
    program; failing that, the most even grid that fills it. (A tile spanning all taps leaves few
    tiles, one for group1.conv1: the split fills the GPU, up to 512.)"""
    max_split = max(1, min(512, P // (8 * bk)))
    scored = []
    for split in range(1, max_split + 1):
        programs = tiles * split
        scored.append((programs < slots, _wave_loss(programs, sms) > 0.05, _wave_loss(programs, sms), split))
    return min(scored)[3]


WGRAD_PACKED = 0  # a WGRAD_CONFIGS entry's ``taps``: packed (tap, channel) columns (_wgrad_packed_tile)


def _wgrad_packs(ci: int, kh: int, kw: int, vector: int) -> bool:
    """The weight-grad's columns may be packed: more than one tap, each tap's ``ci`` channels a whole number
    of copy vectors but not of 32-wide blocks (group1.conv1's 24), and not forced apart (``taps_apart``)."""
    return _pack_forced is not False and kh * kw > 1 and ci % vector == 0 and ci % 32 != 0


def _wgrad_taps(taps: int, KH: int, KW: int) -> int:
    """Taps per weight-grad tile: a configuration's ``taps`` capped at the filter's KH*KW, and 1
    where it does not divide them."""
    n = KH * KW
    return n if taps >= n else (taps if n % taps == 0 else 1)


@torch.library.custom_op("speedrun::conv2d_wgrad", mutates_args=())
def conv2d_wgrad(dy: torch.Tensor, x: torch.Tensor, w_shape: list[int], padding: int,
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """dw (channels_last, in out_dtype or x's dtype): one GEMM with split-K over the pixels, its
    partials summed by a second launch."""
    N, CI, H, W = x.shape
    _, CO, OH, OW = dy.shape
    KH, KW = w_shape[2], w_shape[3]
    P = N * OH * OW
    x, dy = _gemm_input(x), _gemm_input(dy)
    dw = torch.empty(w_shape, device=x.device, dtype=out_dtype or x.dtype, memory_format=torch.channels_last)
    ncol = KH * KW * CI
    align_x = _align(x.element_size(), x.stride(0), x.stride(2), x.stride(3))
    align_d = _align(dy.element_size(), dy.stride(0), dy.stride(2), dy.stride(3))
    # 32-bit offsets unless one can reach 2^31: by the tensors' spans, not their element counts (a strided view's
    # elements may lie further apart), plus a tap's shift, as in _launch_conv
    idx64 = max(_span(x), _span(dy)) + abs(padding) * (abs(x.stride(2)) + abs(x.stride(3))) >= 2 ** 31

    def launch(cfg):
        bm, bn, bk, warps, stages, taps, *via = cfg
        pack = taps == WGRAD_PACKED
        taps = 1 if pack else _wgrad_taps(taps, KH, KW)
        if pack:  # BLOCK_N consecutive (tap, channel) columns per tile
            tiles = triton.cdiv(CO, bm) * triton.cdiv(ncol, bn)
        else:
            tiles = triton.cdiv(CO, bm) * (KH * KW // taps) * triton.cdiv(CI, bn)
        ax = _vector(via, align_x, x.element_size())  # the twin: the taps' shifted x chunks through L1
        meta0 = dict(H=H, W=W, OH=OH, OW=OW, PAD=padding, CI=CI, CO=CO, KH=KH, KW=KW, ALIGN_X=ax,
                     ALIGN_D=align_d, IDX64=idx64, TAPS=taps, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                     DOT_PREC=_dot_precision(x.element_size()), num_warps=warps, num_stages=stages)
        if pack:
            meta0["PACK"] = 1
        if interpreting():
            split = min(2, max(1, P // bk))
        else:
            split = _wgrad_split(tiles, P, bk, programs_per_wave(_wgrad_kernel, meta0, 1, x.device),
                                 sm_count(x.device))
        rows = triton.cdiv(triton.cdiv(P, split), bk) * bk
        split = triton.cdiv(P, rows)
        # split > 1: fp32 partials (a fresh buffer per call: two streams never share one)
        out = torch.empty((split, CO, ncol), device=x.device, dtype=torch.float32) if split > 1 else dw
        _triton.launch(_wgrad_kernel, (tiles, split),
                       (x, dy, out, P, rows, x.stride(0), x.stride(2), x.stride(3),
                        dy.stride(0), dy.stride(2), dy.stride(3)), dict(meta0, SPLIT=split), x.device, note_meta=meta0)
        if split > 1:
            total, block_s = CO * ncol, min(32, triton.next_power_of_2(split))
            block = 128 if not interpreting() else 4096
            _triton.launch(_wgrad_sum_kernel, (triton.cdiv(total, block),), (out, dw, total),
                           dict(SPLIT=split, BLOCK_S=block_s, BLOCK=block, num_warps=4), x.device,
                           note_meta=dict(BLOCK_S=block_s, BLOCK=block))

    arch = _arch(x.device)
    mine = [c for c in WGRAD_CONFIGS if arch in c[-1]] or list(WGRAD_CONFIGS)
    # a column tile within one tap's channels; more than 3 taps per tile only over whole channel blocks; packed
    # columns (taps WGRAD_PACKED) where a tap's channels do not fill 32-wide blocks and its vectors stay in one tap
    packs = _wgrad_packs(CI, KH, KW, align_x)
    cands = [tuple(c[:-1]) for c in mine if c[0] <= max(16, triton.next_power_of_2(CO)) and (
             (c[5] == WGRAD_PACKED and packs and c[1] <= max(16, triton.next_power_of_2(ncol)))
             or (c[5] != WGRAD_PACKED and c[1] <= max(16, triton.next_power_of_2(CI))
                 and (_wgrad_taps(c[5], KH, KW) <= 3 or CI % c[1] == 0)))]
    if not cands:  # the smallest tile, narrowed to the shape (a packed one, pinned where nothing packs: one tap)
        c = min(mine, key=lambda c: (c[5] == WGRAD_PACKED, c[0] * c[1]))
        cands = [(min(c[0], 64), min(c[1], max(16, triton.next_power_of_2(CI))), *c[2:5],
                  1 if c[5] == WGRAD_PACKED else c[5])]
    key = (tuple(x.shape), CO, KH, KW, padding, str(x.dtype))
    cfg = _select("wgrad", key, WGRAD_CONFIGS, ncol, CO, launch, x.device, 16, output=lambda: dw, cands=cands,
                  esize=x.element_size(), twin=_l1_twin(align_x, x.element_size()))
    _run_chosen(("wgrad",) + key, cfg, launch)
    return dw


@conv2d_wgrad.register_fake
def _(dy, x, w_shape, padding, out_dtype=None):
    return torch.empty(w_shape, device=x.device, dtype=out_dtype or x.dtype, memory_format=torch.channels_last)


def _setup_context(ctx, inputs, output):
    x, w, bias, padding = inputs
    ctx.save_for_backward(x, w)
    ctx.padding, ctx.has_bias = padding, bias is not None


def _backward(ctx, dy):
    x, w = ctx.saved_tensors
    dx = conv2d_dgrad(dy, w, list(x.shape), ctx.padding) if ctx.needs_input_grad[0] else None
    dw = conv2d_wgrad(dy, x, list(w.shape), ctx.padding) if ctx.needs_input_grad[1] else None
    db = dy.sum((0, 2, 3)).to(dy.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return dx, dw, db, None


conv2d_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------- FP8
def quantize_fp8(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Current per-tensor scaling (a reference for tests): (t / scale) in ``dtype`` and the fp32
    scale [1], scale = amax / dtype's max, saturating (no inf); an all-zero tensor gets scale 1."""
    fmax = torch.finfo(dtype).max
    amax = t.detach().abs().amax().float().reshape(1)
    scale = torch.where(amax > 0, amax / fmax, torch.ones_like(amax))
    q = (t.float() / scale).clamp(-fmax, fmax).to(dtype)
    return q, scale


def check_fp8_device(t: torch.Tensor) -> None:
    if t.device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(t.device)
        if (major, minor) < (8, 9):
            raise RuntimeError(
                f"conv (fp8): {torch.cuda.get_device_name(t.device)} (compute capability {major}.{minor}) has no "
                "FP8 tensor cores (they need 8.9 or newer: Ada, Hopper). Use --op conv=triton (fp16/bf16) instead.")


def fp8_operand(t: torch.Tensor, dtype: torch.dtype, state: fp8.Fp8State, owner: torch.Tensor, role: str
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 ``t`` in GEMM layout, its scale): the copy its producer wrote into ``state``, else one
    quantisation pass with the layer's own delayed scale (``owner``: the conv weight; ``role``: "x"
    or "dy")."""
    t = _gemm_input(t)
    c = state.copy_of(t, dtype)
    if c is not None:
        return c
    q, s, _ = fp8.quantize(t, dtype, state.scale(owner, role))
    return q, s


@torch.library.custom_op("speedrun::conv2d_fp8_fwd", mutates_args=())
def conv2d_fp8_fwd(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: int, fp8_state: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y in x's dtype from e4m3 x (its producer's copy, or quantised here) and e4m3 weights, with
    the delayed scales of the state with handle ``fp8_state`` (kernels/fp8.py ``of``); also returns
    (the weights' [tap][ci][co] e4m3 copy, its scale) for the input-grad. Marks y so that the op
    reading it writes an e5m2 copy of its gradient."""
    N, CI, H, W = x.shape
    CO, _, KH, KW = w.shape
    OH, OW = H + 2 * padding - KH + 1, W + 2 * padding - KW + 1
    state = fp8.of(fp8_state)
    wq, s_w, wqt = fp8.quantize(_weight_cl(w), fp8.E4M3, state.scale(w, "w"), transposed=(CO, KH * KW, CI))
    xq, s_x = fp8_operand(x, fp8.E4M3, state, w, "x")
    y = _out_nhwc((N, CO, OH, OW), x)
    _launch_conv(xq, wq, bias, y, H, W, OH, OW, CI, CO, KH, KW, padding, False, 0, "fwd_fp8", scales=(s_x, s_w))
    state.want_grad(y, state.scale(w, "dy").init(y))
    return y, wqt.view(KH, KW, CI, CO), s_w


@conv2d_fp8_fwd.register_fake
def _(x, w, bias, padding, fp8_state):
    N, _, H, W = x.shape
    CO, CI, KH, KW = w.shape
    y = _out_nhwc((N, CO, H + 2 * padding - KH + 1, W + 2 * padding - KW + 1), x)
    return y, x.new_empty((KH, KW, CI, CO), dtype=fp8.E4M3), x.new_empty(1, dtype=torch.float32)


@torch.library.custom_op("speedrun::conv2d_fp8_dgrad", mutates_args=())
def conv2d_fp8_dgrad(dy: torch.Tensor, wqt: torch.Tensor, s_w: torch.Tensor, w: torch.Tensor,
                     x_shape: list[int], padding: int, fp8_state: int) -> torch.Tensor:
    """dx in dy's dtype from fp8 dy (its producer's copy in the state with handle ``fp8_state``, or
    quantised here with the layer's gradient scale) and the weights' e4m3 [tap][ci][co] copy."""
    N, CI, H, W = x_shape
    _, CO, OH, OW = dy.shape
    KH, KW = wqt.shape[0], wqt.shape[1]
    dx = _out_nhwc((N, CI, H, W), dy)
    dyq, s_dy = fp8_operand(dy, fp8.GRAD, fp8.of(fp8_state), w, "dy")
    _launch_conv(dyq, wqt, None, dx, OH, OW, H, W, CO, CI, KH, KW, padding, True, 2, "dgrad_fp8", scales=(s_dy, s_w))
    return dx


@conv2d_fp8_dgrad.register_fake
def _(dy, wqt, s_w, w, x_shape, padding, fp8_state):
    return _out_nhwc(tuple(x_shape), dy)


def _fp8_setup(ctx, inputs, output):
    x, w, bias, padding, fp8_state = inputs
    _, wqt, s_w = output
    ctx.save_for_backward(x, w, wqt, s_w)
    ctx.padding, ctx.has_bias, ctx.fp8_state = padding, bias is not None, fp8_state
    ctx.mark_non_differentiable(wqt, s_w)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the two extra outputs


def _fp8_backward(ctx, dy, *_):
    x, w, wqt, s_w = ctx.saved_tensors
    if dy is None:
        return None, None, None, None, None
    dx = (conv2d_fp8_dgrad(dy, wqt, s_w, w, list(x.shape), ctx.padding, ctx.fp8_state)
          if ctx.needs_input_grad[0] else None)
    dw = conv2d_wgrad(dy, x, list(w.shape), ctx.padding, w.dtype) if ctx.needs_input_grad[1] else None
    db = dy.sum((0, 2, 3)).to(dy.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return dx, dw, db, None, None


conv2d_fp8_fwd.register_autograd(_fp8_backward, setup_context=_fp8_setup)


def _padding(padding, kh: int, kw: int) -> int:
    if padding == "valid":
        return 0
    if padding == "same":
        if kh != kw or kh % 2 == 0:
            raise ValueError(f"conv (triton): padding='same' needs an odd square kernel, got {kh}x{kw}")
        return kh // 2
    if isinstance(padding, (tuple, list)):
        if len(set(padding)) != 1:
            raise ValueError(f"conv (triton): only equal padding on both axes is supported, got {padding}")
        padding = padding[0]
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"conv (triton): padding must be a non-negative int, 'same' or 'valid', got {padding!r}")
    return padding


def _check(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding) -> int:
    check_tensor("conv", "x", x, dim=4)
    check_tensor("conv", "weight", weight, dim=4)
    if weight.dtype != x.dtype:
        raise TypeError(f"conv (triton): x is {x.dtype} but weight is {weight.dtype}; cast one of them")
    if weight.device != x.device:
        raise RuntimeError(f"conv (triton): weight is on {weight.device}, x on {x.device}")
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"conv (triton): x has {x.shape[1]} channels but weight expects {weight.shape[1]} "
                         "(groups are not supported)")
    if bias is not None:
        check_tensor("conv", "bias", bias, dim=1)
        if bias.numel() != weight.shape[0]:
            raise ValueError(f"conv (triton): bias has {bias.numel()} elements for {weight.shape[0]} output channels")
    pad = _padding(padding, weight.shape[2], weight.shape[3])
    if x.shape[2] + 2 * pad < weight.shape[2] or x.shape[3] + 2 * pad < weight.shape[3]:
        raise ValueError(f"conv (triton): input {list(x.shape)} with padding {pad} is smaller than the kernel")
    return pad


@register("conv", "triton")
def conv_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                padding: int | str = 0) -> torch.Tensor:
    """Implicit-GEMM Triton kernels (one pipelined loop over taps and channels; a split-K weight-grad
    GEMM finished in the same launch) on tensor cores, in the input's dtype (fp16 / bf16 in the
    network) with fp32 accumulation; stride 1, no dilation or groups."""
    return conv2d_fwd(x, weight, bias, _check(x, weight, bias, padding))


@register("conv", "triton_small")
def conv_triton_small(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                      padding: int | str = 0) -> torch.Tensor:
    """Triton's direct kernel for a valid conv with a small reduction (input channels x taps <= 64:
    the whitening conv), F.conv2d (cuDNN) for every other conv. Measured inside a training step (H200,
    profiler trace, reports/nvidia-h200-2026-11-30b): the whitening conv's forward 0.044 ms with its
    bias, against cuDNN's 0.303 ms (padding kernels, the conv, then a separate bias add); cuDNN is
    faster on every 3x3 layer of the network (1.3-1.8x), which this leaves to it."""
    try:  # a padding the Triton conv cannot take is F.conv2d's to accept or refuse
        valid = weight.dim() == 4 and _padding(padding, weight.shape[2], weight.shape[3]) == 0
    except ValueError:
        valid = False
    if valid and weight.shape[1] * weight.shape[2] * weight.shape[3] <= SMALL_REDUCTION:
        return conv_triton(x, weight, bias, padding)
    return conv_eager(x, weight, bias, padding)


# made of two other implementations: no kernel of its own (profiling static drives those, bench times it
# only when --impls names it; kernels.registry.composite)
conv_triton_small.composite_of = ("triton", "eager")


@register("conv", "fp8")
def conv_fp8(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
             padding: int | str = 0, *, fp8_state: fp8.Fp8State | None = None) -> torch.Tensor:
    """The Triton GEMMs on FP8 tensor cores for the forward (e4m3) and the input-grad (e5m2 x e4m3),
    reading the fp8 copies their producers wrote (bn_act=fp8, maxpool=fp8; else one quantisation
    pass), with per-layer delayed scales; the weight-grad in the input's dtype. Needs compute
    capability 8.9+ (H100, L4/Ada). Convs with fewer than 32 input channels (the whitening conv,
    group1.conv1) run in the input's dtype. ``fp8_state``: the network's kernels.fp8.Fp8State (its
    delayed scales and the copies its producers wrote); None: each operand scaled by its own amax."""
    pad = _check(x, weight, bias, padding)
    check_fp8_device(x)
    handle = fp8.handle_of(fp8_state)
    if x.shape[1] < FP8_MIN_CHANNELS:
        return conv2d_fwd(x, weight, bias, pad)
    return conv2d_fp8_fwd(x, weight, bias, pad, handle)[0]


def opcheck_samples(x: torch.Tensor, w: torch.Tensor) -> list:
    """(op, args) of the fp8 custom ops for torch.library.opcheck (tests): x has >= 32 channels."""
    y, wqt, s_w = conv2d_fp8_fwd(x, w, None, 1, 0)
    dy = torch.randn(y.shape, device=y.device, dtype=y.dtype).contiguous(memory_format=torch.channels_last)
    return [(conv2d_fp8_fwd, (x, w, None, 1, 0)), (conv2d_fp8_dgrad, (dy, wqt, s_w, w, list(x.shape), 1, 0))]


# ------------------------------------------------------------------------------------------ spec
class ConvSpec(OpSpec):
    """conv's shapes, must-move bytes and FLOPs, sample inputs, configurations and work models
    (kernels/spec.py).

    FLOPs = 2 * N * Ho * Wo * Cout * Cin * k * k per GEMM (forward, input-grad and weight-grad each);
    bytes = each GEMM's two operands and its result, once each. ``input_grad`` / ``weight_grad``
    false (the whitening conv: frozen, on the images) drop that GEMM; ``bias``: the conv has one."""
    name = "conv"
    optional_input_grad = True
    config_lists = (FWD_CONFIGS, WGRAD_CONFIGS)
    # the autotuner's twins of each default launch, and fp8's narrow reduction blocks
    variants = {"A_VIA_L1": l1_twins, "PERSISTENT": persistent_twins, "FP8_NARROW_K": fp8_narrow_k,
                "W_POINTERS": weight_pointers, "TAPS_APART": taps_apart, "UNSWAPPED": operands_unswapped}

    def out_shape(self, case):
        n, c, h, w = case.x_shape
        cout, k, pad = case.params["cout"], case.params["k"], case.params["padding"]
        return (n, cout, h + 2 * pad - k + 1, w + 2 * pad - k + 1)

    def flops(self, case, mode="fwd"):
        n, cin, _, _ = case.x_shape
        _, cout, ho, wo = self.out_shape(case)
        gemm = 2.0 * n * ho * wo * cout * cin * case.params["k"] ** 2
        if mode == "fwd":
            return gemm
        return gemm * (1 + case.params.get("input_grad", True) + case.params.get("weight_grad", True))

    def phase_bytes(self, case, phase, esize=2):
        x, y = case.numel(case.x_shape), case.numel(self.out_shape(case))
        w = case.params["cout"] * case.x_shape[1] * case.params["k"] ** 2
        if phase == "fwd":
            return esize * (x + w + y)
        return esize * ((y + w + x if case.params.get("input_grad", True) else 0)
                        + (x + y + w if case.params.get("weight_grad", True) else 0))

    def sample_call(self, case, device, dtype, *, grad=True, fill="randn", seed=0):
        t = Sampler(device, dtype, fill, seed)
        p = case.params
        cin, k = case.x_shape[1], p["k"]
        x = t(case.x_shape, requires_grad=grad and p.get("input_grad", True))
        dy = t(self.out_shape(case)) if grad else None
        w = t((p["cout"], cin, k, k), scale=0.1, requires_grad=grad and p.get("weight_grad", True))
        # the whitening conv is frozen but its bias trains: its backward is the bias gradient alone
        b = t((p["cout"],), scale=0.1, requires_grad=grad) if p.get("bias") else None
        if grad and not (x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)):
            raise ValueError(f"{case.label()}: nothing takes a gradient, so fwd+bwd has no backward")
        return SampleCall((x, w, b, p["padding"]), dy)

    def fp8_ready(self, call, case, phase, state):
        """A conv=fp8 past its first step: every delayed scale measured, its input's e4m3 copy written
        by the producer (bn_act=fp8), its output gradient's e5m2 copy by the consumer's backward."""
        x, w = call.args[0], call.args[1]
        if x.shape[1] < FP8_MIN_CHANNELS:
            return
        if phase == "fwd":
            for role in ("w", "x", "dy"):
                state.scale(w, role).ready = True
            state.attach(x, torch.empty(x.shape, dtype=FP8_FWD, device=x.device, memory_format=torch.channels_last),
                         torch.ones(1, device=x.device))
        elif call.dy is not None:
            dy = call.dy
            state.attach(dy, torch.empty(dy.shape, dtype=fp8.GRAD, device=dy.device,
                                         memory_format=torch.channels_last), torch.ones(1, device=dy.device))

    def trace(self, x, args, kwargs):
        w = args[0]
        b = args[1] if len(args) > 1 else kwargs.get("bias")
        padding = args[2] if len(args) > 2 else kwargs.get("padding", 0)
        n, cin, h, wd = x.shape
        k = w.shape[-1]
        params = dict(cout=w.shape[0], k=k, padding=padding)
        if b is not None:
            params["bias"] = True
        if not w.requires_grad:
            params["weight_grad"] = False
        out = (n, w.shape[0], h + 2 * padding - k + 1, wd + 2 * padding - k + 1)
        return params, out, "whiten" if k == 2 else "conv", ""

    def produces(self, case):
        return case.x_shape[1]

    def forget_choices(self):
        forget_choices()


def _work_conv(launch, peak, capacity: int) -> Work:
    a, cx = launch.args, launch.cx
    x, w, y = a["x_ptr"], a["w_ptr"], a["y_ptr"]
    M = a["M"]
    CI, CO, KH, KW = cx["CRED"], cx["COUT"], cx["KH"], cx["KW"]
    bm, bn, bk = cx["BLOCK_M"], cx["BLOCK_N"], cx["BLOCK_K"]
    programs = programs_of(launch)
    col_blocks = math.ceil(CO / bn)
    grouped = (cx.get("GROUP_M") or 1) > 1
    fits = x.nbytes <= L2_FIT * peak.l2_mb * 1e6
    reread = 1 if (col_blocks == 1 or grouped or fits) else col_blocks
    # PACK: the reduction runs over the packed (tap, channel) pairs (_conv_tile)
    iters = math.ceil(KH * KW * CI / bk) if cx.get("PACK") else KH * KW * math.ceil(CI / bk)
    tile_iters = iters
    tiles = programs
    if cx.get("PERSIST"):  # one round of programs walking the tiles: a program's loop runs its tiles' steps
        tiles = math.ceil(M / bm) * col_blocks
        iters *= math.ceil(tiles / programs)
    flops = 2.0 * M * CO * CI * KH * KW
    out = M * CO * y.esize
    if cx.get("POOL"):  # the pooled tensor and its 1-byte index, a quarter of the rows each
        out = M // 4 * CO * (y.esize + 1)
    if cx.get("STATS"):  # two fp32 partials per row tile and column
        out += math.ceil(M / bm) * 2 * CO * 4
    dram = x.nbytes * reread + w.nbytes + out
    # A through L2 in 32-byte sectors: a tap of a pixel's CI channels (not the block's zero padding, which is never
    # fetched) rounded up to whole sectors, as the tiles of one tap or of packed taps read it
    a_tap = bm * min(math.ceil(CI * x.esize / 32) * 32, math.ceil(CI / bk) * bk * x.esize)
    l2 = tiles * (KH * KW * a_tap + tile_iters * bk * bn * w.esize)
    notes = [f"A (activation, {x.nbytes / 1e6:.1f} MB) read {reread}x from DRAM"
             + ("" if reread == 1 else f" (once per column block: {col_blocks} blocks, too big for L2, no grouped order)"),
             f"{programs} programs" + (", grouped by %d row tiles" % cx["GROUP_M"] if grouped else "")
             + (f", persistent: {tiles} tiles walked in one flattened loop (each tile's prologue and "
                f"epilogue, under a branch in the loop, counted once per tile; the pipeline fill it saves is "
                f"not modelled)" if cx.get("PERSIST") else "")]
    if cx.get("HAS_SCALE"):
        notes.append("fp8 operands written by their producers (or one quantisation pass)")
    if cx.get("POOL") or cx.get("STATS"):
        notes.append("epilogue: " + " + ".join(n for n, on in (("2x2 max-pool with its 1-byte index", cx.get("POOL")),
                                                             ("BatchNorm partials per row tile", cx.get("STATS"))) if on))
    return Work("gemm", iters, bm * bn * bk, dram, x.nbytes + w.nbytes + out, x.esize,
                flops=flops, l2_bytes=l2, notes=notes, units=tiles, read_bytes=x.nbytes * reread + w.nbytes,
                tile_iters=tile_iters if cx.get("PERSIST") else None)


def _work_conv_small(launch, peak, capacity: int) -> Work:
    a, cx = launch.args, launch.cx
    x, y = a["x_ptr"], a["y_ptr"]
    M = a["M"]
    CI, CO, KH, KW = cx["CI"], cx["COUT"], cx["KH"], cx["KW"]
    bm, bn, bk = cx["BLOCK_M"], cx["BLOCK_N"], cx["BLOCK_K"]
    out = M * CO * y.esize
    return Work("gemm", 1, bm * bn * bk, x.nbytes + out, x.nbytes + out, x.esize, flops=2.0 * M * CO * CI * KH * KW,
                l2_bytes=programs_of(launch) * bm * bk * x.esize, notes=["the whole reduction in one MMA step"],
                units=programs_of(launch), read_bytes=x.nbytes)


def _work_wgrad(launch, peak, capacity: int) -> Work:
    a, cx = launch.args, launch.cx
    x, dy = a["x_ptr"], a["dy_ptr"]
    P, rows = a["P"], a["ROWS"]
    CI, CO, KH, KW = cx["CI"], cx["CO"], cx["KH"], cx["KW"]
    bm, bn, bk, taps = cx["BLOCK_M"], cx["BLOCK_N"], cx["BLOCK_K"], cx.get("TAPS", 1)
    cip = math.ceil(CI / bn) * bn
    g = grid_of(launch)
    tiles, split = g[0], g[1]
    iters = rows_iters(P, rows, bk, split)
    flops = 2.0 * CO * CI * KH * KW * P
    ncol = KH * KW * CI
    dw = CO * ncol * 2
    out = split * CO * ncol * 4 if split > 1 else dw  # fp32 partials (summed by _wgrad_sum_kernel), or dw
    # the programs of one split chunk (every tile of it) are neighbours in the launch order: when they
    # fit on the GPU at once they stream the chunk together and DRAM serves it once
    reread = 1 if tiles <= capacity else math.ceil(tiles / capacity)
    dram = (dy.nbytes + x.nbytes) * reread + out
    # per iteration a tile loads its dy chunk once and one shifted x chunk per tap; packed columns (PACK): one x
    # chunk of BLOCK_N columns, each tap's CI channels read in whole 32-byte sectors (24 fp16 channels: 64 bytes)
    if cx.get("PACK"):
        sectors = math.ceil(CI * x.esize / 32) * 32 / (CI * x.esize)
        x_chunk = bk * ncol / math.ceil(ncol / bn) * sectors
        l2 = programs_of(launch) * iters * (bm * bk + x_chunk) * x.esize
    else:
        l2 = programs_of(launch) * iters * (bm * bk + taps * bk * bn) * x.esize
    return Work("gemm", iters, bm * bn * bk * taps, dram, dy.nbytes + x.nbytes + dw, x.esize,
                flops=flops, l2_bytes=l2,
                notes=[f"one GEMM {CO}x{ncol}x{P}"
                       + (f", tiles of {bn} packed (tap, channel) columns" if cx.get("PACK") else
                          (f" (each tap's {CI} channels padded to {cip})" if cip != CI else "")
                          + f", tiles of {taps} tap(s)") + f": dy read once per tile, split-K {split}"
                       + (f": fp32 partials {out / 1e6:.1f} MB, summed by a second launch" if split > 1 else ""),
                       f"grid {tiles}x{split}"], units=tiles * split, read_bytes=(dy.nbytes + x.nbytes) * reread)


def _work_wgrad_sum(launch, peak, capacity: int) -> Work:
    """The weight-grad's partials summed: SPLIT fp32 slices read, the gradient written once."""
    a, cx = launch.args, launch.cx
    total, split, dw, bs = a["TOTAL"], cx["SPLIT"], a["dw_ptr"], cx["BLOCK_S"]
    read = split * total * 4
    nbytes = read + total * dw.esize
    return Work("memory", math.ceil(split / bs), bs * cx["BLOCK"], nbytes, nbytes, 4 + dw.esize / split,
                notes=[f"{split} fp32 partials of {total} elements summed in order"], read_bytes=read,
                units=programs_of(launch))


SPEC = register_spec(ConvSpec())
if HAS_TRITON:
    SPEC.work = {_conv_kernel: _work_conv, _conv_small_kernel: _work_conv_small, _wgrad_kernel: _work_wgrad,
                 _wgrad_sum_kernel: _work_wgrad_sum, fp8._quantize_kernel: fp8.work_quantize}
    # the pipelined GEMM main loops the conv rules check (profiling/rules.py); _conv_kernel's is the
    # implicit GEMM of the forward and input-grad, whose issue budget per MMA is a rule of its own
    SPEC.tags = {_conv_kernel: ("pipelined_gemm", "implicit_gemm_loop"), _wgrad_kernel: ("pipelined_gemm",)}
