"""FP8 plumbing shared by the ops: delayed scales, the fp8 copy a producer hands its consumer, and
the standalone quantisation kernel used when no producer did.

Why producers: an FP8 GEMM must read FP8 operands. Converting fp16 tiles to fp8 inside the conv
kernel costs 9 x (output channel blocks) conversions per element, which makes the tensor-core
loop issue-bound (profiling static: ~160 instructions per MMA where 64 fit). Instead, the kernel
that writes a conv's input also writes its e4m3 copy (1 byte per element more, no extra pass):
bn_act=fp8's apply kernel in the forward; in the backward, the kernel that writes a conv's output
gradient writes its e5m2 copy (bn_act=fp8's dx kernel, maxpool=fp8's backward). Each op still
works with any other implementation: a conv=fp8 whose input has no fp8 copy quantises it with
one standalone pass (``quantize``), and the copies of a producer whose consumer is not an fp8
conv are simply not used.

How the copy travels: as an attribute of the fp16 tensor object (``attach`` / ``copy_of``),
checked against the tensor's version counter so that an in-place change invalidates it. Which
backward producers should write a gradient copy: a conv=fp8 forward marks its output
(``want_grad``), the op that reads that output (maxpool, bn_act) carries the mark to its
backward through a tensor it saves, and writes the copy with the conv's gradient scale. All of
this is looked up inside the ops' implementations at run time (not traced), so it works in eager
mode, under torch.compile (where a lost attribute means the fallback pass, never a wrong result)
and inside captured CUDA graphs (the decisions are taken at capture).

Delayed scaling (as Transformer Engine and torchao do): a ``DelayedScale`` holds, on the device,
the amax of the previous call and of the current one. A launch scales by the previous amax (over
the format's maximum), observes the current amax (atomic max), and its last program rolls the
amax over, unless it is not finite (an inf or NaN in the tensor): then the previous scale is kept,
values saturate at the format's maximum, and ``nonfinite()`` counts the event. The first use
measures the amax directly.
"""
from __future__ import annotations

import weakref

import torch

from ._triton import HAS_TRITON, interpreting, note_launch

E4M3 = torch.float8_e4m3fn   # activations and weights: 3 mantissa bits, max 448
E5M2 = torch.float8_e5m2     # gradients: 2 mantissa bits, max 57344
GRAD = E5M2                  # the gradients' format (e4m3 is the alternative to measure on a GPU)
FMAX = {E4M3: 448.0, E5M2: 57344.0}


class DelayedScale:
    """One tensor role's delayed-scaling state on its device."""

    def __init__(self, device: torch.device):
        self.amax = torch.zeros(2, device=device, dtype=torch.float32)      # [previous, current]
        self.ticket = torch.zeros(1, device=device, dtype=torch.int32)
        self.nonfinite = torch.zeros(1, device=device, dtype=torch.float32)
        self.ready = False

    def init(self, t: torch.Tensor) -> "DelayedScale":
        """The first use measures the amax of ``t`` (1 where it is 0 or not finite)."""
        if not self.ready:
            with torch.no_grad():
                a = t.detach().abs().amax().float()
                self.amax[0] = torch.where(torch.isfinite(a) & (a > 0), a, torch.ones_like(a))
            self.ready = True
        return self


_STATES: dict[tuple, tuple] = {}  # (id(owner), role) -> (weakref to owner, DelayedScale)


def state(owner: torch.Tensor, role: str) -> DelayedScale:
    """The delayed scale of ``role`` for the layer ``owner`` identifies (a weight, a running mean);
    created on first use, dropped with the owner."""
    key = (id(owner), role)
    entry = _STATES.get(key)
    if entry is not None and entry[0]() is owner:
        return entry[1]
    st = DelayedScale(owner.device)
    _STATES[key] = (weakref.ref(owner, lambda _r, key=key: _STATES.pop(key, None)), st)
    return st


def nonfinite() -> int:
    """How many times any layer saw a non-finite amax (its scale was kept). Reads the device."""
    return int(sum(float(st.nonfinite.sum()) for _, st in list(_STATES.values())))


# ----------------------------------------------------------------------- the copy a producer hands on
_COPY, _WANT = "_speedrun_fp8", "_speedrun_fp8_grad"


def attach(t: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> None:
    """Hand ``t``'s fp8 copy ``q`` (same shape and strides) and the scale it was written with to
    whoever reads ``t`` next."""
    setattr(t, _COPY, (q, scale, t._version))


def copy_of(t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(fp8 copy, scale [1]) of ``t`` in ``dtype`` if its producer wrote one and ``t`` has not
    changed since; else None."""
    c = getattr(t, _COPY, None)
    if c is None or c[2] != t._version or c[0].dtype != dtype or c[0].stride() != t.stride():
        return None
    return c[0], c[1]


def want_grad(t: torch.Tensor, st: DelayedScale) -> None:
    """Mark ``t`` (a conv's output): the op reading it should write an fp8 copy of its gradient with
    the conv's gradient scale ``st``."""
    setattr(t, _WANT, st)


def grad_wanted(t: torch.Tensor) -> DelayedScale | None:
    return getattr(t, _WANT, None)


def carry_want(src: torch.Tensor, dst: torch.Tensor) -> None:
    """Carry the mark of ``src`` to ``dst`` (a tensor the op saves for its backward)."""
    st = grad_wanted(src)
    if st is not None:
        want_grad(dst, st)


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def fp8_scale(st_ptr, FMAX: tl.constexpr):
        """The delayed scale: the amax of the previous call over the format's maximum."""
        return tl.maximum(tl.load(st_ptr), 1e-12) / FMAX

    @triton.jit
    def fp8_cast(v, inv_scale, FMAX: tl.constexpr, E5: tl.constexpr):
        """``v`` (fp32) scaled and saturated into e4m3 (E5 false) or e5m2."""
        v = tl.clamp(v * inv_scale, -FMAX, FMAX)
        if E5:
            return v.to(tl.float8e5)
        else:
            return v.to(tl.float8e4nv)

    @triton.jit
    def fp8_rollover(st_ptr, cnt_ptr, nf_ptr, n_programs):
        """Called by every program after its atomic max into st_ptr[1]: the last one rolls the amax
        over (previous <- current when finite and positive), zeroes the current and the ticket."""
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr, 1)
        if ticket == n_programs - 1:
            cur = tl.atomic_add(st_ptr + 1, 0.0)  # read where the atomics landed
            finite = (cur == cur) & (cur < float("inf"))
            prev = tl.load(st_ptr)
            tl.store(st_ptr, tl.where(finite & (cur > 0), cur, prev))
            tl.store(st_ptr + 1, 0.0)
            tl.store(nf_ptr, tl.load(nf_ptr) + tl.where(finite, 0.0, 1.0))
            tl.store(cnt_ptr, 0)

    @triton.jit
    def _quantize_kernel(x_ptr, q_ptr, qt_ptr, st_ptr, s_ptr, cnt_ptr, nf_ptr, N,
                         FMAX: tl.constexpr, E5: tl.constexpr, TRANSPOSED: tl.constexpr,
                         D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, BLOCK: tl.constexpr):
        """q = fp8(x / delayed scale) over N elements in x's memory order; with TRANSPOSED also
        qt[d1][d0] for x viewed as [d0][d1] (d1 = D1 * D2 elements): the input-grad's copy of a
        [co][tap][ci] weight as [tap][ci][co]. Writes the scale used; observes the amax."""
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = i < N
        v = tl.load(x_ptr + i, mask=m, other=0.0).to(tl.float32)
        scale = fp8_scale(st_ptr, FMAX)
        q = fp8_cast(v, 1.0 / scale, FMAX, E5)
        tl.store(q_ptr + i, q, mask=m)
        if TRANSPOSED:
            d0 = i // (D1 * D2)
            rest = i - d0 * (D1 * D2)
            tl.store(qt_ptr + rest * D0 + d0, q, mask=m)
        if tl.program_id(0) == 0:
            tl.store(s_ptr, scale)
        tl.atomic_max(st_ptr + 1, tl.max(tl.abs(v), axis=0))
        fp8_rollover(st_ptr, cnt_ptr, nf_ptr, tl.num_programs(0))


def quantize(t: torch.Tensor, dtype: torch.dtype, st: DelayedScale, transposed: tuple | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(fp8 copy of ``t`` with t's strides, the scale used [1], the transposed copy or None) in one
    launch, with the delayed scale ``st``. ``t`` must be dense in its memory order. ``transposed``:
    (d0, d1, d2) of t's memory viewed as [d0][d1*d2], copied as [d1*d2][d0]."""
    q = torch.empty_strided(t.shape, t.stride(), device=t.device, dtype=dtype)
    s = torch.empty(1, device=t.device, dtype=torch.float32)
    qt = None
    st.init(t)
    d0, d1, d2 = transposed or (1, 1, 1)
    if transposed:
        qt = torch.empty(t.numel(), device=t.device, dtype=dtype)
    block = 1024 if not interpreting() else 4096
    k = _quantize_kernel[(triton.cdiv(t.numel(), block),)](
        t, q, qt if qt is not None else q, st.amax, s, st.ticket, st.nonfinite, t.numel(),
        FMAX=FMAX[dtype], E5=dtype == E5M2, TRANSPOSED=transposed is not None, D0=d0, D1=d1, D2=d2,
        BLOCK=block, num_warps=4)
    note_launch(_quantize_kernel, dict(BLOCK=block), t.device, k)
    return q, s, qt
