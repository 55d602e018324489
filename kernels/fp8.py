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

Where the state lives: in an ``Fp8State`` that its caller owns and passes to every fp8 call
(``fp8_state=`` of conv=fp8, bn_act=fp8, maxpool=fp8). A network owns one (``net.fp8``, model/net.py,
passed at each layer's call site); a run resets it (``reset``: each scale back to its first
measurement, counts to zero) and records its counts (``counts``, train.py's ``fp8`` record). It holds
each layer's delayed scales (keyed by the tensor that identifies the layer: a conv's weight, a
BatchNorm's running mean), the copies producers hand on (keyed by the fp16 tensor they copy, checked
against its version counter so that an in-place change invalidates the copy) and the marks saying
which gradient a backward producer should copy: a conv=fp8 forward marks its output (``want_grad``),
the op that reads that output (maxpool, bn_act) carries the mark to its backward through a tensor it
saves, and writes the copy with the conv's gradient scale. A call without a state scales each tensor
by its own amax (one measuring pass each) and hands nothing on: an fp8 op is still a drop-in for the
eager one.

The ops look their state up inside their custom ops' bodies at run time (not traced): a custom op
takes tensors and numbers only, so it receives the state's ``handle`` (an int; ``of(handle)`` finds
the live state, 0: none). This works in eager mode, under torch.compile (the handle is a constant of
the graph; a lost copy means the fallback pass, never a wrong result) and inside captured CUDA graphs
(the decisions are taken at capture; ``reset`` changes the scales in place, so a replay sees it).

Delayed scaling (as Transformer Engine and torchao do): a ``DelayedScale`` holds, on the device,
the amax of the previous call and of the current one. A launch scales by the previous amax (over
the format's maximum), observes the current amax (atomic max), and its last program rolls the
amax over. The first use measures the amax directly (``DelayedScale.init``, refused during CUDA-graph
capture: the warm-up steps run it before any capture).

What happens to values the format cannot hold, decided here and tested (tests/kernels/test_fp8_safety.py):
- NaN propagates: it stays NaN in the fp8 copy (e4m3fn and e5m2 both have a NaN), so the conv's
  output shows it as the fp16 conv would; the launch counts it as non-finite (``nonfinite()``) and
  keeps the previous scale.
- +-inf saturates at the format's maximum (448 for e4m3, 57344 for e5m2) and is counted the same way.
- A finite value beyond the delayed scale's range (|v| > the previous call's amax) saturates; a launch
  in which any value did is counted (``saturated()``: launches, not values). The next call's scale
  covers it. Both counts go into train.py's run record (``fp8``).
- Accumulation: Hopper's fp8 MMA accumulates with fewer mantissa bits than fp32 (about 14, as
  DeepSeek-V3's report measured); the conv accumulates K up to 2304 (256 channels x 9 taps) in the
  tensor cores without promotion. tests/kernels/test_conv.py bounds the error at K = 2304 against the
  fp32 conv of the dequantised operands on a GPU (FP8_KERNEL_TOL); on a CPU the interpreter's dot is
  exact and cannot show it.
"""
from __future__ import annotations

import inspect
import itertools
import weakref

import torch
from torch.utils.weak import WeakIdKeyDictionary

from ._triton import HAS_TRITON, interpreting, launch

E4M3 = torch.float8_e4m3fn   # activations and weights: 3 mantissa bits, max 448
E5M2 = torch.float8_e5m2     # gradients: 2 mantissa bits, max 57344
GRAD = E5M2                  # the gradients' format (e4m3 is the alternative to measure on a GPU)
FMAX = {E4M3: 448.0, E5M2: 57344.0}


class DelayedScale:
    """One tensor role's delayed-scaling state on its device."""

    def __init__(self, device: torch.device):
        self.amax = torch.zeros(2, device=device, dtype=torch.float32)      # [previous, current]
        self.ticket = torch.zeros(1, device=device, dtype=torch.int32)
        # [launches that saw a non-finite amax, launches in which a finite value saturated]
        self.nonfinite = torch.zeros(2, device=device, dtype=torch.float32)
        self.ready = False
        self.first = None  # the first measurement's amax [1] (what ``reset`` goes back to)

    def init(self, t: torch.Tensor) -> "DelayedScale":
        """The first use measures the amax of ``t`` (1 where it is 0 or not finite). Refused while a
        CUDA graph is being captured: the measurement would be captured too and re-run at every
        replay, resetting the delayed scale (train.py's warm-up steps run before any capture)."""
        if not self.ready:
            if t.is_cuda and torch.cuda.is_current_stream_capturing():
                raise RuntimeError("fp8: a delayed scale is being initialised during CUDA-graph capture; run at "
                                   "least one step outside the capture first (train.py's warm-up does)")
            with torch.no_grad():
                a = t.detach().abs().amax().float()
                self.amax[0] = torch.where(torch.isfinite(a) & (a > 0), a, torch.ones_like(a))
                self.first = self.amax[:1].clone()
            self.ready = True
        return self


    def reset(self) -> None:
        """Back to the amax of the first measurement (in place: a captured CUDA graph sees it), with
        the counts at zero: each run starts from the same scales, whatever ran before."""
        if self.ready:
            with torch.no_grad():
                self.amax[0].copy_(self.first[0])
                self.amax[1].zero_()
                self.ticket.zero_()
                self.nonfinite.zero_()


class Fp8State:
    """The fp8 state of one network (or of one caller): each layer's delayed scales, the fp8 copies
    producers hand to consumers and the gradient-copy marks (the module docstring says how they
    flow). The network owns it and passes it at its fp8 call sites; nothing else keeps it alive."""

    def __init__(self):
        self.handle = next(_HANDLES)
        _LIVE[self.handle] = self
        self._scales = WeakIdKeyDictionary()   # layer's tensor -> {role: DelayedScale}
        self._copies = WeakIdKeyDictionary()   # fp16 tensor -> (fp8 copy, scale [1], tensor's version)
        self._wants = WeakIdKeyDictionary()    # conv=fp8 output (or what carries it) -> its gradient scale

    def __repr__(self) -> str:
        return f"Fp8State(handle={self.handle}, {len(self.scales())} delayed scales)"

    def scale(self, owner: torch.Tensor, role: str) -> DelayedScale:
        """The delayed scale of ``role`` ("w", "x", "dy", "y") for the layer ``owner`` identifies (a
        weight, a running mean); created on first use, dropped with the owner."""
        roles = self._scales.get(owner)
        if roles is None:
            roles = self._scales[owner] = {}
        if role not in roles:
            roles[role] = DelayedScale(owner.device)
        return roles[role]

    def scales(self) -> list[DelayedScale]:
        return [st for roles in list(self._scales.values()) for st in roles.values()]

    def reset(self) -> None:
        """A run's start: every scale back to its first measurement, counts at zero, no copies."""
        for st in self.scales():
            st.reset()
        self._copies.clear()
        self._wants.clear()

    def counts(self) -> dict | None:
        """{"nonfinite": launches that saw a NaN or inf (the scale was kept), "saturated": launches
        that saturated a finite value beyond their delayed scale} since the last ``reset``, over every
        layer; None when no fp8 layer ran. Reads the device."""
        scales = self.scales()
        if not scales:
            return None
        return dict(nonfinite=int(sum(float(st.nonfinite[0]) for st in scales)),
                    saturated=int(sum(float(st.nonfinite[1]) for st in scales)))

    # ----------------------------------------------------------------- the copy a producer hands on
    def attach(self, t: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> None:
        """Hand ``t``'s fp8 copy ``q`` (same shape and strides) and the scale it was written with to
        whoever reads ``t`` next with this state."""
        self._copies[t] = (q, scale, t._version)

    def copy_of(self, t: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(fp8 copy, scale [1]) of ``t`` in ``dtype`` if its producer wrote one and ``t`` has not
        changed since; else None."""
        c = self._copies.get(t)
        if c is None or c[2] != t._version or c[0].dtype != dtype or c[0].stride() != t.stride():
            return None
        return c[0], c[1]

    def want_grad(self, t: torch.Tensor, st: DelayedScale) -> None:
        """Mark ``t`` (a conv's output): the op reading it should write an fp8 copy of its gradient
        with the conv's gradient scale ``st``."""
        self._wants[t] = st

    def grad_wanted(self, t: torch.Tensor) -> DelayedScale | None:
        return self._wants.get(t)

    def carry_want(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Carry the mark of ``src`` to ``dst`` (a tensor the op saves for its backward)."""
        st = self.grad_wanted(src)
        if st is not None:
            self.want_grad(dst, st)


_HANDLES = itertools.count(1)
_LIVE: weakref.WeakValueDictionary[int, Fp8State] = weakref.WeakValueDictionary()  # handle -> live state


def of(handle: int) -> Fp8State:
    """The live state with ``handle``; 0 (a call without a state): a fresh one, used for that call
    alone (each tensor scaled by its own amax, nothing handed on)."""
    if handle == 0:
        return Fp8State()
    st = _LIVE.get(handle)
    if st is None:
        raise RuntimeError(f"fp8: no live Fp8State has handle {handle}; keep the state (net.fp8) alive while its "
                           "network runs")
    return st


def handle_of(state: Fp8State | None) -> int:
    """What an fp8 op passes its custom ops: the state's handle, 0 for none (checked: a clear error
    for anything else)."""
    if state is None:
        return 0
    if not isinstance(state, Fp8State):
        raise TypeError(f"fp8_state must be a kernels.fp8.Fp8State or None, got {type(state).__name__}")
    return state.handle


def takes_state(fn) -> bool:
    """Whether the op implementation ``fn`` keeps fp8 state (takes ``fp8_state=``)."""
    try:
        return "fp8_state" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def fp8_scale(st_ptr, FMAX: tl.constexpr):
        """The delayed scale: the amax of the previous call (st_ptr[0], the fp32 state of fp8_rollover)
        over the format's maximum FMAX."""
        return tl.maximum(tl.load(st_ptr), 1e-12) / FMAX

    # the interpreter converts fp32 NaN to an fp8 number (a GPU's satfinite conversion keeps NaN),
    # and rounds wrongly (fp8_grid)
    _INTERPRETED = tl.constexpr(interpreting())

    @triton.jit
    def fp8_grid(c, E5: tl.constexpr):
        """``c`` (fp32, within the format's range) rounded to nearest-even on the e4m3 / e5m2 grid in
        fp32 arithmetic, so that the conversion after it is exact. The interpreter only: its own
        fp32 -> fp8 conversion drops the carry of a round-up into the exponent (126.8 -> 64 and
        7.99 -> 4 in e4m3, triton 3.8) and loses subnormals (0.0019 -> 0), where a GPU's cvt.rn
        gives 128, 8 and 2^-9."""
        MBITS: tl.constexpr = 2 if E5 else 3
        EMIN: tl.constexpr = -14 if E5 else -6
        e = ((c.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
        step = ((tl.maximum(e, EMIN) - MBITS + 127) << 23).to(tl.float32, bitcast=True)
        return ((c / step + 12582912.0) - 12582912.0) * step  # + 1.5 * 2^23: fp32's round to even

    @triton.jit
    def fp8_cast(v, inv_scale, FMAX: tl.constexpr, E5: tl.constexpr):
        """``v`` (fp32) scaled and saturated into e4m3 (E5 false) or e5m2; NaN stays NaN (the NaN
        -propagating clamp is the same single instruction per bound as the plain one)."""
        c = tl.clamp(v * inv_scale, -FMAX, FMAX, propagate_nan=tl.PropagateNan.ALL)
        if _INTERPRETED:
            c = fp8_grid(c, E5)
        if E5:
            q = c.to(tl.float8e5)
        else:
            q = c.to(tl.float8e4nv)
        if _INTERPRETED:  # the format's NaN (0x7F in both), where the conversion lost it
            bits = tl.where(v == v, q.to(tl.uint8, bitcast=True), tl.full(q.shape, 0x7F, tl.uint8))
            q = bits.to(q.dtype, bitcast=True)
        return q

    @triton.jit
    def fp8_amax_update(amax, a):
        """The running elementwise max of |values| (``a`` >= 0), NaN-propagating: a NaN makes the
        launch's amax NaN, so it is counted as non-finite (a plain max may drop NaN)."""
        return tl.maximum(amax, a, propagate_nan=tl.PropagateNan.ALL)

    @triton.jit
    def _max_nan(a, b):
        """max(a, b), NaN if either is NaN (tl.maximum drops NaN): the amax keeps a NaN to count it."""
        return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)

    @triton.jit
    def fp8_amax_of(amax):
        """The program's amax of a 2-D tile of running maxima, NaN-propagating."""
        return tl.reduce(tl.reduce(amax, 1, _max_nan), 0, _max_nan)

    @triton.jit
    def fp8_rollover(st_ptr, cnt_ptr, nf_ptr, n_programs):
        """Called by every program after its atomic max into st_ptr[1]: the last one rolls the amax
        over (previous <- current when finite and positive), zeroes the current and the ticket.
        st_ptr   fp32 [2]: the previous call's amax (the scale's source) and the current one (atomic max)
        cnt_ptr  int32 [1]: the ticket, zero between launches; n_programs: the launch's programs
        nf_ptr   fp32 [2]: running counts of launches with a non-finite amax and with a saturated value"""
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr, 1)
        if ticket == n_programs - 1:
            cur = tl.atomic_add(st_ptr + 1, 0.0)  # read where the atomics landed
            finite = (cur == cur) & (cur < float("inf"))
            prev = tl.load(st_ptr)
            tl.store(st_ptr, tl.where(finite & (cur > 0), cur, prev))
            tl.store(st_ptr + 1, 0.0)
            tl.store(nf_ptr, tl.load(nf_ptr) + tl.where(finite, 0.0, 1.0))
            tl.store(nf_ptr + 1, tl.load(nf_ptr + 1) + tl.where(finite & (cur > prev), 1.0, 0.0))
            tl.store(cnt_ptr, 0)

    @triton.jit
    def _quantize_kernel(x_ptr, q_ptr, qt_ptr, st_ptr, s_ptr, cnt_ptr, nf_ptr, N,
                         FMAX: tl.constexpr, E5: tl.constexpr, TRANSPOSED: tl.constexpr,
                         D0: tl.constexpr, D1: tl.constexpr, D2: tl.constexpr, BLOCK: tl.constexpr,
                         IDX64: tl.constexpr = False):
        """q = fp8(x / delayed scale) over N elements in x's memory order; with TRANSPOSED also
        qt[d1][d0] for x viewed as [d0][d1] (d1 = D1 * D2 elements): the input-grad's copy of a
        [co][tap][ci] weight as [tap][ci][co]. Writes the scale used; observes the amax.
        x_ptr    the tensor, N elements dense in its memory order; q_ptr: its fp8 copy, same order
        qt_ptr   the transposed copy [D1*D2][D0] (TRANSPOSED only)
        st_ptr, s_ptr, cnt_ptr, nf_ptr  the delayed scale's state, the scale used, the ticket and
                 the counts, as in fp8_rollover; FMAX: the format's maximum (E5: e5m2, else e4m3)
        IDX64    64-bit offsets (N + BLOCK past 2^31: program_id * BLOCK would wrap in 32 bits)"""
        pid = tl.program_id(0)
        if IDX64:
            pid = pid.to(tl.int64)
        i = pid * BLOCK + tl.arange(0, BLOCK)
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
        tl.atomic_max(st_ptr + 1, tl.reduce(tl.where(m, tl.abs(v), 0.0), 0, _max_nan))
        fp8_rollover(st_ptr, cnt_ptr, nf_ptr, tl.num_programs(0))


def work_quantize(launch, peak, capacity: int):
    """The work of one ``_quantize_kernel`` launch (kernels/spec.py Work): x read, each fp8 copy written."""
    from .spec import Work, programs_of
    a, cx = launch.args, launch.cx
    x, n = a["x_ptr"], a["N"]
    copies = 2 if cx.get("TRANSPOSED") else 1
    nbytes = n * x.esize + copies * n
    return Work("memory", 1, cx["BLOCK"], nbytes, nbytes, x.esize + copies,
                notes=[f"{n} elements to fp8 ({copies} layout(s)), delayed scale, amax for the next call"],
                read_bytes=n * x.esize, units=programs_of(launch))


def quantize(t: torch.Tensor, dtype: torch.dtype, st: DelayedScale, transposed: tuple | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(fp8 copy of ``t`` with t's strides, the scale used [1], the transposed copy or None) in one
    launch (a 32-bit ``t`` with ``transposed``: two), with the delayed scale ``st``. ``t`` must be
    dense in its memory order. ``transposed``: (d0, d1, d2) of t's memory viewed as [d0][d1*d2],
    copied as [d1*d2][d0]."""
    d0, d1, d2 = transposed or (1, 1, 1)
    if transposed and t.element_size() != 2:
        # One kernel writing both layouts is right for 16-bit inputs only: from fp32 inputs Triton
        # 3.6 (sm_90, H200) moves the fp8 values between the two stores' layouts through shared
        # memory and writes a wrong transposed copy (second GPU run; the forward copy is right). fp32
        # weights (tests, user code; training's are 16-bit) get their transpose from a copy of q.
        q, s, _ = _quantize(t, dtype, st, None)
        rows = q.as_strided((d0, d1 * d2), (d1 * d2, 1))  # q's memory order (t is dense in it)
        return q, s, rows.view(torch.uint8).t().contiguous().view(dtype).view(-1)
    return _quantize(t, dtype, st, transposed)


_IDX64_AT = 2 ** 31  # element offsets at or past this need 64 bits (a test lowers it to run that path)


def _quantize(t: torch.Tensor, dtype: torch.dtype, st: DelayedScale, transposed: tuple | None):
    """quantize's one launch of _quantize_kernel."""
    d0, d1, d2 = transposed or (1, 1, 1)
    q = torch.empty_strided(t.shape, t.stride(), device=t.device, dtype=dtype)
    s = torch.empty(1, device=t.device, dtype=torch.float32)
    st.init(t)
    qt = torch.empty(t.numel(), device=t.device, dtype=dtype) if transposed else None
    block = 1024 if not interpreting() else 4096
    meta = dict(FMAX=FMAX[dtype], E5=dtype == E5M2, TRANSPOSED=transposed is not None, D0=d0, D1=d1, D2=d2,
                BLOCK=block, IDX64=t.numel() + block > _IDX64_AT, num_warps=4)
    launch(_quantize_kernel, (triton.cdiv(t.numel(), block),),
           (t, q, qt if qt is not None else q, st.amax, s, st.ticket, st.nonfinite, t.numel()), meta, t.device,
           note_meta=dict(BLOCK=block))
    return q, s, qt
