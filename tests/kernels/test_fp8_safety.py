"""FP8 says what it does with values its formats cannot hold (kernels/fp8.py's docstring): NaN
propagates into the copy and is counted, inf saturates and is counted, a finite value beyond the
delayed scale saturates and the launch is counted; the scale is never initialised inside a CUDA-graph
capture; a run record carries the counts. And the weights' transposed copy (the input-grad's
operand) is exactly the transpose of the forward's copy, whatever the weights' dtype."""
import pytest
import torch
import torch.nn.functional as F

import kernels  # noqa: F401  (chooses the interpreter on a CPU)
from kernels import fp8
from kernels.conv import conv_fp8

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"


def _layer(seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 32, 5, 5, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
    w = (torch.randn(16, 32, 3, 3, generator=g) * 0.3).contiguous(memory_format=torch.channels_last).to(DEV)
    return x, w


@pytest.mark.parametrize("fmt", [fp8.E4M3, fp8.E5M2], ids=["e4m3", "e5m2"])
def test_nan_stays_nan_in_the_copy_inf_saturates_and_both_are_counted(fmt):
    st = fp8.DelayedScale(torch.device(DEV)).init(torch.full((64,), 2.0, device=DEV))
    t = torch.linspace(-2, 2, 64, device=DEV)
    t[3], t[5] = float("nan"), float("inf")
    q, s, _ = fp8.quantize(t, fmt, st)
    back = q.float()
    assert torch.isnan(back[3]) and back[5] == torch.finfo(fmt).max  # NaN kept, inf saturated
    assert torch.isfinite(back[[i for i in range(64) if i not in (3, 5)]]).all()
    assert st.nonfinite[0].item() == 1 and st.amax[0].item() == 2.0  # counted once, scale kept


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(16, 40, 3, 3), (64, 64, 3, 3), (24, 7, 1, 1)], ids=str)
def test_the_transposed_weight_copy_is_the_transpose_of_the_copy(shape, dtype):
    """quantize(transposed=...) writes [co][tap][ci] and its [tap][ci][co] transpose in one call. On
    the GPU (H200, triton 3.6) fp32 weights got a wrong transposed copy from the single kernel (a
    quarter to all of its bytes wrong, some NaN: the fp8 input-grads of fp32 layers went NaN) while
    the forward copy and 16-bit weights were right."""
    co, ci, kh, kw = shape
    g = torch.Generator().manual_seed(3)
    w = (torch.randn(shape, generator=g) * 0.3).to(dtype).contiguous(memory_format=torch.channels_last).to(DEV)
    st = fp8.DelayedScale(torch.device(DEV)).init(w)
    q, s, qt = fp8.quantize(w, fp8.E4M3, st, transposed=(co, kh * kw, ci))
    assert q.shape == w.shape and q.stride() == w.stride() and qt.shape == (w.numel(),)
    rows = q.view(torch.uint8).permute(0, 2, 3, 1).reshape(co, kh * kw * ci)  # q's memory: [co][tap][ci]
    assert torch.equal(qt.view(torch.uint8), rows.t().reshape(-1))
    # the forward copy: w / s to e4m3 (3 mantissa bits: within 1/16 relative, or s near zero)
    err = (q.float() * s - w.float()).abs()
    assert (err <= w.float().abs() / 16 + s).all(), err.max()


def test_nan_in_a_conv_input_is_counted_and_reaches_the_output_on_a_gpu():
    x, w = _layer()
    state = fp8.Fp8State()
    conv_fp8(x, w, None, 1, fp8_state=state)  # the first call measures the amax
    prev = state.scale(w, "x").amax[0].item()
    before = state.counts()["nonfinite"]
    bad = x.clone()
    bad[0, 3, 2, 2] = float("nan")
    y = conv_fp8(bad, w, None, 1, fp8_state=state)
    assert state.counts()["nonfinite"] == before + 1
    assert state.scale(w, "x").amax[0].item() == prev  # the scale was kept
    if CUDA:  # the interpreter's fp8 dot reads the NaN code as a number; a GPU's MMA keeps it
        assert torch.isnan(y[0]).any() and not torch.isnan(y[1]).any()
    assert torch.isfinite(conv_fp8(x, w, None, 1, fp8_state=state)).all()


def test_a_value_beyond_the_delayed_scale_saturates_and_the_launch_is_counted():
    x, w = _layer(3)
    state = fp8.Fp8State()

    def saturated():
        return state.counts()["saturated"]
    conv_fp8(x, w, None, 1, fp8_state=state)
    conv_fp8(x, w, None, 1, fp8_state=state)  # the copy is written with the previous amax from here on
    before = saturated()
    conv_fp8(x * 0.5, w, None, 1, fp8_state=state)  # within the scale: nothing saturates
    assert saturated() == before
    conv_fp8(x * 4, w, None, 1, fp8_state=state)  # 4x the previous amax: values beyond 448 x scale saturate
    assert saturated() == before + 1
    y = conv_fp8(x * 4, w, None, 1, fp8_state=state)  # the next call's scale covers them again
    assert saturated() == before + 1
    assert ((y - F.conv2d(x * 4, w, padding=1)).norm() / F.conv2d(x * 4, w, padding=1).norm()).item() < 0.15


def test_scale_initialisation_is_refused_during_capture(monkeypatch):
    st = fp8.DelayedScale(torch.device("cpu"))
    t = torch.ones(4)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="during CUDA-graph capture"):
        st.init(t)
    assert not st.ready
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert st.init(t).ready


def test_run_record_carries_the_counts_of_the_networks_state_since_its_reset():
    from types import SimpleNamespace

    import model.training.execute as execution
    net = SimpleNamespace(fp8=fp8.Fp8State())
    assert execution.with_fp8_counts(dict(accuracy=0.5), net) == dict(accuracy=0.5)  # no fp8 layer ran
    x, w = _layer(4)
    for scale in (1, 1, 4):  # the third call saturates (4x the delayed amax)
        conv_fp8(x * scale, w, None, 1, fp8_state=net.fp8)
    assert execution.with_fp8_counts(dict(accuracy=0.5), net)["fp8"] == dict(nonfinite=0, saturated=1)
    net.fp8.reset()  # a run's start (the network's reset_parameters): counts from zero
    conv_fp8(x, w, None, 1, fp8_state=net.fp8)
    assert execution.with_fp8_counts(dict(accuracy=0.5), net)["fp8"] == dict(nonfinite=0, saturated=0)


def test_quantize_takes_64_bit_offsets_where_its_last_block_ends_past_2_31():
    """program_id * BLOCK is 32-bit: a tensor of 2^31 elements or more would wrap and write 4 GiB below the
    copy. The launch of a (never written, lazily allocated) 2^31-element tensor is recorded, not run, and asks
    for 64-bit offsets; a small one keeps 32."""
    from kernels import _triton
    seen = []
    for n in (2 ** 31 - 2 ** 20, 2 ** 31):
        st = fp8.DelayedScale(torch.device("cpu"))
        st.ready = True  # no amax measurement over the untouched pages
        t = torch.empty(n, dtype=torch.float16)
        with _triton.recording(lambda kernel, grid, args, meta: seen.append((grid, meta)), sms=132):
            fp8.quantize(t, fp8.E4M3, st)
        del t
    assert [m["IDX64"] for _, m in seen] == [False, True], [(g, m["BLOCK"]) for g, m in seen]


@pytest.mark.parametrize("transposed", [None, (16, 9, 40)], ids=["plain", "transposed"])
def test_quantizes_64_bit_path_writes_what_the_32_bit_one_does(monkeypatch, transposed):
    """The IDX64 form of the quantize kernel (run here on a small tensor by lowering its threshold) writes the
    same fp8 bytes, scale and transposed copy as the 32-bit one."""
    g = torch.Generator().manual_seed(5)
    w = (torch.randn(16, 40, 3, 3, generator=g) * 0.3).half().contiguous(memory_format=torch.channels_last).to(DEV)
    outs = []
    for at in (2 ** 31, 0):
        monkeypatch.setattr(fp8, "_IDX64_AT", at)
        st = fp8.DelayedScale(torch.device(DEV)).init(w)
        outs.append(fp8.quantize(w, fp8.E4M3, st, transposed=transposed))
    (q32, s32, t32), (q64, s64, t64) = outs
    assert torch.equal(q32.view(torch.uint8), q64.view(torch.uint8)) and torch.equal(s32, s64)
    assert (t32 is None and t64 is None) or torch.equal(t32.view(torch.uint8), t64.view(torch.uint8))
