"""2-D convolution: the 3x3 'same' convs and the 2x2 valid whitening conv.

Implementations
    eager    F.conv2d (cuDNN on a GPU), the reference
    compile  F.conv2d under torch.compile
    triton   implicit-GEMM Triton kernels on tensor cores: forward, input-grad and weight-grad,
             computed in the input's dtype (fp16 or bf16 in the network, fp32 for tests) with
             fp32 accumulation

Stride 1 and no dilation or groups only (the network's convs); anything else in the
arguments is a clear error. Activations are read in any dense layout through their strides;
channels_last (NHWC) is the fast one: the GEMM's reduction runs over channels, contiguous there.

Forward as a GEMM: rows = output pixels (N*OH*OW), columns = output channels, reduction =
(tap, input channel) with the taps (kh, kw) unrolled; out-of-image taps load zeros, which
implements the padding. The input-grad is the same kernel with the filter flipped and
transposed (``FLIP``): dx[n,ih,iw,ci] = sum dy[n, ih+pad-kh, iw+pad-kw, co] w[co,ci,kh,kw].
The weight-grad is one GEMM per tap, dw[:, :, kh, kw] = dy^T @ shifted(x), whose reduction over
N*OH*OW pixels is split across programs (split-K) and summed afterwards in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._compiled import compiled
from ._triton import HAS_TRITON, check_tensor, interpreting
from .registry import register


@register("conv", "eager")
def conv_eager(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               padding: int | str = 0) -> torch.Tensor:
    """Reference: F.conv2d (cuDNN on a GPU)."""
    return F.conv2d(x, weight, bias, padding=padding)


register("conv", "compile")(compiled(conv_eager, "F.conv2d under torch.compile."))


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _conv_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, H, W, CI, OH, OW, CO,
                     sxn, sxh, sxw, sxc, swi, swj, swh, sww, syn, syh, syw, syc, PAD_H, PAD_W, sa_ptr, sb_ptr,
                     KH: tl.constexpr, KW: tl.constexpr, FLIP: tl.constexpr, HAS_BIAS: tl.constexpr,
                     HAS_SCALE: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """y[m, j] = sum over taps and i of x[pixel(m) + tap offset, i] * w(tap, i, j)."""
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        n = rm // (OH * OW)
        r = rm - n * (OH * OW)
        oh = r // OW
        ow = r - oh * OW
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        for tap in tl.static_range(KH * KW):
            kh = tap // KW
            kw = tap % KW
            if FLIP:
                ih = oh + PAD_H - kh
                iw = ow + PAD_W - kw
            else:
                ih = oh + kh - PAD_H
                iw = ow + kw - PAD_W
            valid = (rm < M) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a_base = n.to(tl.int64) * sxn + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
            for c0 in range(0, CI, BLOCK_K):
                rk = c0 + tl.arange(0, BLOCK_K)
                a = tl.load(x_ptr + a_base[:, None] + rk[None, :] * sxc,
                            mask=valid[:, None] & (rk < CI)[None, :], other=0.0)
                b = tl.load(w_ptr + rk[:, None] * swi + rn[None, :] * swj + kh * swh + kw * sww,
                            mask=(rk < CI)[:, None] & (rn < CO)[None, :], other=0.0)
                acc += tl.dot(a, b)
        if HAS_SCALE:  # fp8 operands: undo the two per-tensor scales
            acc = acc * (tl.load(sa_ptr) * tl.load(sb_ptr))
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=rn < CO, other=0.0).to(tl.float32)[None, :]
        y_off = n.to(tl.int64) * syn + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw
        tl.store(y_ptr + y_off[:, None] + rn[None, :] * syc, acc.to(y_ptr.dtype.element_ty),
                 mask=(rm < M)[:, None] & (rn < CO)[None, :])

    @triton.jit
    def _wgrad_kernel(x_ptr, dy_ptr, part_ptr, P, H, W, CI, OH, OW, CO, ROWS,
                      sxn, sxh, sxw, sxc, sdn, sdh, sdw, sdc, PAD_H, PAD_W, sa_ptr, sb_ptr,
                      KH: tl.constexpr, KW: tl.constexpr, HAS_SCALE: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """part[split, tap, co, ci] = sum over this split's pixels p of dy[p, co] * x[p + tap, ci]."""
        n_ci = tl.cdiv(CI, BLOCK_N)
        pid = tl.program_id(0)
        pid_co = pid // n_ci
        pid_ci = pid - pid_co * n_ci
        tap = tl.program_id(1)
        split = tl.program_id(2)
        kh = tap // KW
        kw = tap - kh * KW
        rco = pid_co * BLOCK_M + tl.arange(0, BLOCK_M)
        rci = pid_ci * BLOCK_N + tl.arange(0, BLOCK_N)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
        start = split * ROWS
        for p0 in range(start, start + ROWS, BLOCK_K):
            rp = p0 + tl.arange(0, BLOCK_K)
            n = rp // (OH * OW)
            r = rp - n * (OH * OW)
            oh = r // OW
            ow = r - oh * OW
            ih = oh + kh - PAD_H
            iw = ow + kw - PAD_W
            live = (rp < P) & (rp < start + ROWS)
            valid = live & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            d_off = n.to(tl.int64) * sdn + oh.to(tl.int64) * sdh + ow.to(tl.int64) * sdw
            x_off = n.to(tl.int64) * sxn + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
            a = tl.load(dy_ptr + rco[:, None] * sdc + d_off[None, :],
                        mask=(rco < CO)[:, None] & live[None, :], other=0.0)
            b = tl.load(x_ptr + x_off[:, None] + rci[None, :] * sxc,
                        mask=valid[:, None] & (rci < CI)[None, :], other=0.0)
            acc += tl.dot(a, b)
        if HAS_SCALE:
            acc = acc * (tl.load(sa_ptr) * tl.load(sb_ptr))
        out = part_ptr + ((split * (KH * KW) + tap) * CO).to(tl.int64) * CI
        tl.store(out + rco[:, None] * CI + rci[None, :], acc, mask=(rco < CO)[:, None] & (rci < CI)[None, :])


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages); the first that fits the channel counts is used
# unless autotuning (on a GPU) measured a better one for the shape. Listed for `profiling static`.
FWD_CONFIGS = [(128, 64, 32, 8, 3), (128, 128, 32, 8, 3), (64, 64, 32, 4, 3), (128, 64, 16, 8, 3), (64, 32, 16, 4, 2)]
WGRAD_CONFIGS = [(64, 64, 64, 4, 3), (128, 64, 32, 4, 3), (64, 32, 32, 4, 3), (64, 16, 32, 4, 2)]
TARGET_PROGRAMS = 528          # weight-grad split-K aims at ~4 programs per H100 SM
AUTOTUNE = True                # on a GPU, time each config once per shape (chosen_configs() shows them)
_chosen: dict[tuple, tuple] = {}


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
        # the lists, and their entries widened to the K block fp16 / fp8 need (see _select)
        valid = {kind: set(cs) | {(c[0], c[1], max(c[2], k), c[3], c[4]) for c in cs for k in (16, 32)}
                 for kind, cs in (("wgrad", WGRAD_CONFIGS), ("fwd", FWD_CONFIGS))}
        n = 0
        for kind, shape, *rest in data["choices"]:
            cfg = tuple(rest[-1])
            if cfg in valid["wgrad" if kind == "wgrad" else "fwd"]:
                _chosen[(kind, tuple(shape), *rest[:-1])] = cfg
                n += 1
        return n
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _fits(cfg, n_cols: int, k_chans: int, min_k: int) -> bool:
    """The output tile is not wider than needed, and the reduction block is not wider than the channel
    count rounded down to a power of two (a block of 32 over 24 channels masks a quarter of its work
    and, measured by `profiling static`, spills)."""
    bm, bn, bk = cfg[:3]
    k_floor = 1 << (max(k_chans, 1).bit_length() - 1)
    if bk > k_chans and bm > 64:  # a masked reduction block (fp8 needs K >= 32): keep the tile small
        return False
    return bn <= max(16, triton.next_power_of_2(n_cols)) and min_k <= bk <= max(min_k, k_floor)


def _select(kind: str, key: tuple, configs, n_cols: int, k_chans: int, launch, device, min_k: int = 16) -> tuple:
    """The configuration for this shape: measured once on a GPU, else the first that fits.
    ``min_k``: tl.dot needs a reduction block of at least 16 (fp16/bf16) or 32 (fp8) on a GPU."""
    full_key = (kind,) + key
    if full_key in _chosen:  # the launch path: one dict lookup after the first call per shape
        return _chosen[full_key]
    cands = [c for c in configs if _fits(c, n_cols, k_chans, min_k)]
    if not cands:  # widen the smallest-K configuration to what the dtype needs
        c = min(configs, key=lambda c: c[1] * c[2])
        cands = [(c[0], c[1], max(c[2], min_k), c[3], c[4])]
    if interpreting():
        c = cands[-1]
        _chosen[full_key] = (max(c[0], 128), c[1], c[2], c[3], c[4])  # the interpreter pays per program
    elif AUTOTUNE and len(cands) > 1 and device.type == "cuda" and not torch.cuda.is_current_stream_capturing():
        from triton.testing import do_bench
        times = {c: do_bench(lambda c=c: launch(c), warmup=5, rep=20) for c in cands}
        _chosen[full_key] = min(times, key=times.get)
    else:
        _chosen[full_key] = cands[0]
    return _chosen[full_key]


def _launch_gemm(x, w_strides, w, bias, y, M, H, W, CI, OH, OW, CO, pad, flip, scales=None, kind="fwd"):
    KH, KW = w_strides[4], w_strides[5]
    sa, sb = scales if scales is not None else (y, y)

    def launch(cfg):
        bm, bn, bk, warps, stages = cfg
        grid = (triton.cdiv(M, bm), triton.cdiv(CO, bn))
        _conv_kernel[grid](x, w, bias if bias is not None else y, y, M, H, W, CI, OH, OW, CO,
                           *x.stride()[0:1], x.stride(2), x.stride(3), x.stride(1),
                           *w_strides[:4], y.stride(0), y.stride(2), y.stride(3), y.stride(1),
                           pad, pad, sa, sb, KH=KH, KW=KW, FLIP=flip, HAS_BIAS=bias is not None,
                           HAS_SCALE=scales is not None,
                           BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)

    key = (tuple(x.shape), CO, KH, KW, pad, str(x.dtype))
    cfg = _select(kind, key, FWD_CONFIGS, CO, CI, launch, x.device, 32 if x.element_size() == 1 else 16)
    launch(cfg)
    return cfg


def _out_nhwc(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty(shape, device=like.device, dtype=dtype or like.dtype).contiguous(memory_format=torch.channels_last)


@torch.library.custom_op("speedrun::conv2d_fwd", mutates_args=())
def conv2d_fwd(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    N, CI, H, W = x.shape
    CO, _, KH, KW = w.shape
    OH, OW = H + 2 * padding - KH + 1, W + 2 * padding - KW + 1
    y = _out_nhwc((N, CO, OH, OW), x)
    # weight element (tap, i = ci, j = co): strides (ci, co, kh, kw)
    _launch_gemm(x, (w.stride(1), w.stride(0), w.stride(2), w.stride(3), KH, KW), w, bias, y,
                 N * OH * OW, H, W, CI, OH, OW, CO, padding, False)
    return y


@conv2d_fwd.register_fake
def _(x, w, bias, padding):
    N, _, H, W = x.shape
    CO, _, KH, KW = w.shape
    return _out_nhwc((N, CO, H + 2 * padding - KH + 1, W + 2 * padding - KW + 1), x)


@torch.library.custom_op("speedrun::conv2d_dgrad", mutates_args=())
def conv2d_dgrad(dy: torch.Tensor, w: torch.Tensor, x_shape: list[int], padding: int,
                 s_dy: torch.Tensor | None = None, s_w: torch.Tensor | None = None,
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """dx; with fp8 operands, s_dy / s_w are their per-tensor scales and out_dtype the dx dtype."""
    N, CI, H, W = x_shape
    _, CO, OH, OW = dy.shape
    KH, KW = w.shape[2:]
    dx = _out_nhwc((N, CI, H, W), dy, out_dtype)
    # input-grad: reduction over co, output over ci; weight element (tap, i = co, j = ci)
    _launch_gemm(dy, (w.stride(0), w.stride(1), w.stride(2), w.stride(3), KH, KW), w, None, dx,
                 N * H * W, OH, OW, CO, H, W, CI, padding, True,
                 scales=(s_dy, s_w) if s_dy is not None else None, kind="dgrad")
    return dx


@conv2d_dgrad.register_fake
def _(dy, w, x_shape, padding, s_dy=None, s_w=None, out_dtype=None):
    return _out_nhwc(tuple(x_shape), dy, out_dtype)


@torch.library.custom_op("speedrun::conv2d_wgrad", mutates_args=())
def conv2d_wgrad(dy: torch.Tensor, x: torch.Tensor, w_shape: list[int], padding: int,
                 s_dy: torch.Tensor | None = None, s_x: torch.Tensor | None = None,
                 out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """dw (channels_last); with fp8 operands, s_dy / s_x are their scales and out_dtype the dw dtype."""
    N, CI, H, W = x.shape
    _, CO, OH, OW = dy.shape
    KH, KW = w_shape[2], w_shape[3]
    P = N * OH * OW
    scaled = s_dy is not None

    def launch(cfg):
        bm, bn, bk, warps, stages = cfg
        tiles = triton.cdiv(CO, bm) * triton.cdiv(CI, bn) * KH * KW
        programs = 4 if interpreting() else TARGET_PROGRAMS
        split = max(1, min(triton.cdiv(programs, tiles), triton.cdiv(P, bk)))
        rows = triton.cdiv(triton.cdiv(P, split), bk) * bk
        split = triton.cdiv(P, rows)
        part = torch.empty((split, KH * KW, CO, CI), device=x.device, dtype=torch.float32)
        _wgrad_kernel[(triton.cdiv(CO, bm) * triton.cdiv(CI, bn), KH * KW, split)](
            x, dy, part, P, H, W, CI, OH, OW, CO, rows, x.stride(0), x.stride(2), x.stride(3), x.stride(1),
            dy.stride(0), dy.stride(2), dy.stride(3), dy.stride(1), padding, padding,
            s_dy if scaled else part, s_x if scaled else part, KH=KH, KW=KW, HAS_SCALE=scaled,
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages)
        return part

    cfg = _select("wgrad", (tuple(x.shape), CO, KH, KW, padding, str(x.dtype)), WGRAD_CONFIGS, CI, P,
                  launch, x.device, 32 if x.element_size() == 1 else 16)
    part = launch(cfg)
    dw = part.sum(0).view(KH, KW, CO, CI).permute(2, 3, 0, 1)  # [CO, CI, KH, KW], channels_last memory
    return dw.to(out_dtype or x.dtype)


@conv2d_wgrad.register_fake
def _(dy, x, w_shape, padding, s_dy=None, s_x=None, out_dtype=None):
    return torch.empty(w_shape, device=x.device, dtype=out_dtype or x.dtype).contiguous(
        memory_format=torch.channels_last)


def _setup_context(ctx, inputs, output):
    x, w, bias, padding = inputs
    ctx.save_for_backward(x, w)
    ctx.padding, ctx.has_bias = padding, bias is not None


def _backward(ctx, dy):
    x, w = ctx.saved_tensors
    dy = dy.contiguous(memory_format=torch.channels_last)
    dx = conv2d_dgrad(dy, w, list(x.shape), ctx.padding) if ctx.needs_input_grad[0] else None
    dw = conv2d_wgrad(dy, x, list(w.shape), ctx.padding) if ctx.needs_input_grad[1] else None
    db = dy.sum((0, 2, 3)).to(dy.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return dx, dw, db, None


conv2d_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------- FP8
FP8_FWD = torch.float8_e4m3fn   # activations and weights: 3 mantissa bits, max 448
FP8_BWD = torch.float8_e5m2     # gradients: 2 mantissa bits, max 57344 (range over precision)
# Below this many input channels fp8 gains little and costs registers: fp8 dots need a reduction block
# of 32 per tap, so the whitening conv (3 channels) and group1.conv1 (24) would mask most of it, and
# both spill on sm_90 (profiling static: 32 and 576 bytes). Such convs run in the input's dtype.
FP8_MIN_CHANNELS = 32


def quantize_fp8(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-tensor scaling: (t / scale) in ``dtype`` and the fp32 scale [1], with
    scale = amax / dtype's max, so the largest magnitude maps to the top of the fp8 range.
    Values are clamped (saturating: no inf); an all-zero tensor gets scale 1. Runs on the
    device with no host synchronisation."""
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


@torch.library.custom_op("speedrun::conv2d_fp8_fwd", mutates_args=())
def conv2d_fp8_fwd(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, padding: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """y in x's dtype from e4m3 x and w; also returns (x_q, s_x, w_q, s_w) for the backward."""
    x_q, s_x = quantize_fp8(x.contiguous(memory_format=torch.channels_last), FP8_FWD)
    w_q, s_w = quantize_fp8(w.contiguous(memory_format=torch.channels_last), FP8_FWD)
    N, CI, H, W = x.shape
    CO, _, KH, KW = w.shape
    OH, OW = H + 2 * padding - KH + 1, W + 2 * padding - KW + 1
    y = _out_nhwc((N, CO, OH, OW), x)
    _launch_gemm(x_q, (w_q.stride(1), w_q.stride(0), w_q.stride(2), w_q.stride(3), KH, KW), w_q, bias, y,
                 N * OH * OW, H, W, CI, OH, OW, CO, padding, False, scales=(s_x, s_w), kind="fwd_fp8")
    return y, x_q, s_x, w_q, s_w


@conv2d_fp8_fwd.register_fake
def _(x, w, bias, padding):
    N, _, H, W = x.shape
    CO, _, KH, KW = w.shape
    one = x.new_empty(1, dtype=torch.float32)
    return (_out_nhwc((N, CO, H + 2 * padding - KH + 1, W + 2 * padding - KW + 1), x),
            _out_nhwc(tuple(x.shape), x, FP8_FWD), one, _out_nhwc(tuple(w.shape), w, FP8_FWD), one.clone())


def _fp8_setup(ctx, inputs, output):
    x, w, bias, padding = inputs
    _, x_q, s_x, w_q, s_w = output
    ctx.save_for_backward(x_q, s_x, w_q, s_w)  # 1 byte per activation element instead of 2
    ctx.padding, ctx.has_bias, ctx.x_shape, ctx.w_shape = padding, bias is not None, list(x.shape), list(w.shape)
    ctx.x_dtype, ctx.w_dtype = x.dtype, w.dtype


def _fp8_backward(ctx, dy, *_):
    x_q, s_x, w_q, s_w = ctx.saved_tensors
    dy_q, s_dy = quantize_fp8(dy.contiguous(memory_format=torch.channels_last), FP8_BWD)
    dx = conv2d_dgrad(dy_q, w_q, ctx.x_shape, ctx.padding, s_dy, s_w, ctx.x_dtype) if ctx.needs_input_grad[0] else None
    dw = conv2d_wgrad(dy_q, x_q, ctx.w_shape, ctx.padding, s_dy, s_x, ctx.w_dtype) if ctx.needs_input_grad[1] else None
    db = dy.sum((0, 2, 3)).to(dy.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return dx, dw, db, None


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
    """Implicit-GEMM Triton kernels (forward, input-grad, split-K weight-grad) on tensor cores, in the
    input's dtype (fp16 / bf16 in the network) with fp32 accumulation; stride 1, no dilation or groups."""
    return conv2d_fwd(x, weight, bias, _check(x, weight, bias, padding))


@register("conv", "fp8")
def conv_fp8(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
             padding: int | str = 0) -> torch.Tensor:
    """The Triton kernels on FP8 tensor cores: e4m3 activations and weights (forward), e5m2
    gradients (backward), dynamic per-tensor scales from amax, saturating; needs compute
    capability 8.9+ (H100, L4/Ada). Output and gradients in the input's dtype; master weights untouched.
    Convs with fewer than 32 input channels (the whitening conv, group1.conv1) run in the input's dtype."""
    pad = _check(x, weight, bias, padding)
    check_fp8_device(x)
    if x.shape[1] < FP8_MIN_CHANNELS:
        return conv2d_fwd(x, weight, bias, pad)
    return conv2d_fp8_fwd(x, weight, bias, pad)[0]
