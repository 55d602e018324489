"""Triton conv (implicit GEMM) against F.conv2d: forward, input-grad, weight-grad, bias-grad.

In the Triton interpreter (CPU) tl.dot is exact for fp32, fp16 and fp8 but returns garbage for
bf16, so the bf16 case runs only where a GPU compiles the kernels.
"""
import contextlib

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.conv import FP8_BWD, FP8_FWD, check_fp8_device, conv_fp8, conv_triton, quantize_fp8

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
# relative (Frobenius) error allowed per input dtype; fp32 on a GPU runs tl.dot in tf32
TOL = {torch.float32: 5e-3 if CUDA else 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.5e-2}
# fp8 kernel vs the fp32 conv of its dequantised operands: exact up to summation order on the CPU;
# Hopper's fp8 MMA accumulates with fewer mantissa bits than fp32
FP8_KERNEL_TOL = 5e-3 if CUDA else 1e-5
# fp8 against the fp32 conv: e4m3 ~3% forward, e5m2 ~6% for gradients. (The interpreter's own fp32 ->
# fp8 conversion drops round-up carries, -1.992 -> -1 in e4m3; the kernels round on the format's grid
# first there, kernels/fp8.py fp8_grid, so the CPU sees the GPU's numbers and the same bounds.)
FP8_FWD_TOL = 0.06
FP8_GRAD_TOL = 0.12


@pytest.fixture(autouse=True)
def exact_reference():
    """The reference F.conv2d in true fp32 (cuDNN would use TF32 on a GPU by default)."""
    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = old
CASES = [  # (x shape, out channels, kernel, padding)
    ((2, 5, 7, 9), 6, 3, 1),        # odd everything
    ((1, 3, 8, 8), 24, 2, 0),       # the whitening conv, batch 1
    ((3, 20, 5, 5), 17, 3, 1),      # channels not a multiple of any block
    ((2, 40, 3, 3), 70, 3, "same"),  # 3x3 image: every tap touches the border
    ((2, 1, 10, 9), 8, 3, 1),       # one input channel (the MNIST recipe's first conv)
    ((2, 12, 6, 7), 32, 1, 0),      # 1x1 (hlb's projection after its whitening conv)
]


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


H100_SMEM = 232448  # an H100 / H200 block's shared memory (opt-in), as the first GPU run reported it


class MockGPU:
    type = "cuda"


def mock_gpu(monkeypatch, conv):
    """The conv launcher's view of an H100 on this CPU: compiled mode, sm_90, an H100's shared memory,
    no capture in progress, nothing chosen or rejected yet. Returns the device to pass."""
    monkeypatch.setattr(conv, "interpreting", lambda: False)
    monkeypatch.setattr(conv, "_arch", lambda d: 9)
    monkeypatch.setattr(conv, "_smem_limit", lambda d: H100_SMEM)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(conv, "_chosen", {})
    monkeypatch.setattr(conv, "_rejected", [])
    return MockGPU()


def run(fn, shape, co, k, pad, dtype, layout="channels_last", bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).to(dtype)
    w = (torch.randn(co, shape[1], k, k, generator=g) * 0.3).to(dtype)
    b = torch.randn(co, generator=g).to(dtype) if bias else None
    if layout == "channels_last":
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.cat([x, x], dim=3)[..., ::2]
    x, w = x.to(DEV).requires_grad_(), w.to(DEV).requires_grad_()
    b = b.to(DEV).requires_grad_() if bias else None
    y = fn(x, w, b, pad)
    dy = torch.randn(y.shape, generator=g).to(dtype).to(DEV)
    y.backward(dy)
    xr, wr = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    br = b.detach().float().requires_grad_() if bias else None
    yr = F.conv2d(xr, wr, br, padding=pad)
    yr.backward(dy.float())
    assert y.shape == yr.shape and y.dtype == dtype and x.grad.dtype == dtype and w.grad.dtype == dtype
    return dict(y=rel(y, yr), dx=rel(x.grad, xr.grad), dw=rel(w.grad, wr.grad),
                db=rel(b.grad, br.grad) if bias else 0.0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-co{c[1]}-k{c[2]}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_forward_and_grads(case, dtype):
    errs = run(conv_triton, *case, dtype)
    assert max(errs.values()) < TOL[dtype], errs


@pytest.mark.skipif(not CUDA, reason="tl.dot on bf16 returns garbage in the Triton interpreter: GPU only")
@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: f"{'x'.join(map(str, c[0]))}")
def test_bf16_on_gpu(case):
    errs = run(conv_triton, *case, torch.bfloat16)
    assert max(errs.values()) < TOL[torch.bfloat16], errs


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_other_layouts(layout):
    errs = run(conv_triton, (2, 6, 5, 7), 8, 3, 1, torch.float32, layout=layout, bias=False)
    assert max(errs.values()) < TOL[torch.float32], errs


def test_no_input_grad_and_frozen_weight():
    x = torch.randn(2, 3, 6, 6, device=DEV).contiguous(memory_format=torch.channels_last)
    w = torch.randn(24, 3, 2, 2, device=DEV)
    b = torch.zeros(24, device=DEV, requires_grad=True)
    conv_triton(x, w, b, 0).sum().backward()
    assert torch.allclose(b.grad, torch.full((24,), 2.0 * 5 * 5, device=DEV))


@pytest.mark.parametrize("case, triton", [(CASES[1], True), (((2, 4, 6, 6), 8, 2, 0), True),
                                          (((2, 3, 6, 6), 8, 3, 0), True),     # 27 <= 64: Triton
                                          (((2, 8, 6, 6), 8, 3, 0), False),    # 72 > 64: cuDNN
                                          (CASES[0], False), (CASES[3], False)],
                         ids=["whiten", "4ch-2x2", "3ch-3x3-valid", "8ch-3x3", "padded", "same"])
def test_triton_small_hands_only_small_valid_convs_to_triton(case, triton, monkeypatch):
    """conv=triton_small: Triton's direct kernel where the whole reduction (channels x taps <= 64, no
    padding) is small, F.conv2d for the rest; forward and grads match the fp32 reference either way."""
    from kernels import conv
    calls = []
    for name in ("conv_triton", "conv_eager"):
        real = getattr(conv, name)
        monkeypatch.setattr(conv, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    errs = run(kernels.get("conv", "triton_small"), *case, torch.float32)
    assert calls == ["conv_triton" if triton else "conv_eager"]
    assert max(errs.values()) < TOL[torch.float32], errs


@pytest.mark.parametrize("shape, co, k, layout, idx64", [
    ((2, 3, 6, 6), 8, 2, "channels_last", False),      # the whitening conv's form: 5x5 outputs
    ((3, 3, 7, 5), 24, 2, "channels_last", False),     # non-square, OH*OW = 24 (not a power of two)
    ((1, 4, 9, 4), 12, 3, "strided", False),           # a strided input, 3x3 taps, 7x2 outputs
    ((2, 3, 6, 6), 8, 2, "channels_last", True),       # 64-bit offsets (forced)
    ((1, 2, 5, 3), 4, 1, "channels_last", True),       # two channels, 1x1, 64-bit
], ids=["whiten", "non-square", "strided", "idx64", "1x1-idx64"])
def test_the_small_kernel_takes_the_image_size_at_compile_time(monkeypatch, shape, co, k, layout, idx64):
    """The direct kernel of small valid convs gets the output size as constexprs (OH, OW: the pixel
    arithmetic a multiply and a shift; sm_90 SASS 1109 -> 557 instructions for the whitening conv with
    32-bit offsets) and 64-bit offsets only where a tensor needs them; forward and grads match either way."""
    from kernels import _triton, conv
    seen, orig_launch = [], _triton.launch

    def launch(fn, grid, args, meta, dev, **kw):
        if fn is conv._conv_small_kernel:
            seen.append((meta["OH"], meta["OW"], meta["IDX64"]))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    if idx64:
        monkeypatch.setattr(conv, "_span", lambda t: 2 ** 31)
    errs = run(conv_triton, shape, co, k, 0, torch.float32, layout=layout)
    assert seen == [(shape[2] - k + 1, shape[3] - k + 1, idx64)], seen
    assert max(errs.values()) < TOL[torch.float32], errs


def test_triton_small_leaves_paddings_triton_cannot_take_to_f_conv2d():
    x = torch.randn(1, 3, 6, 6, device=DEV)
    w = torch.randn(4, 3, 2, 2, device=DEV)
    y = kernels.get("conv", "triton_small")(x, w, None, "same")  # an even kernel: the Triton conv refuses it
    torch.testing.assert_close(y, F.conv2d(x, w, None, padding="same"))


# ----------------------------------------------------------------------------------- fp8
import triton  # noqa: E402  (after kernels: the interpreter is chosen there)
import triton.language as tl  # noqa: E402

from kernels.fp8 import fp8_cast  # noqa: E402


@triton.jit
def _quantise_as_the_kernels_do(x_ptr, o_ptr, n, inv, FMAX: tl.constexpr, E5: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    q = fp8_cast(tl.load(x_ptr + i, mask=i < n, other=0.0).to(tl.float32), inv, FMAX, E5)
    tl.store(o_ptr + i, q.to(tl.float32), mask=i < n)


def dequantised(t, amax, e5=False):
    """``t`` through the kernels' own fp8 conversion (kernels/fp8.py fp8_cast: on a GPU the hardware's;
    in the interpreter, rounded on the format's grid first), scale amax / max, dequantised."""
    fmax = 57344.0 if e5 else 448.0
    scale = float(amax) / fmax
    src = t.detach().contiguous()
    out = torch.empty(src.shape, dtype=torch.float32, device=src.device)
    _quantise_as_the_kernels_do[(triton.cdiv(src.numel(), 1024),)](src, out, src.numel(), 1.0 / scale, fmax, e5, 1024)
    return out * scale


@pytest.mark.parametrize("case", CASES[2:], ids=lambda c: f"{'x'.join(map(str, c[0]))}")
def test_fp8_matches_the_conv_of_its_quantized_operands(case):
    shape, co, k, pad = case
    shape = (shape[0], 40) + shape[2:]  # >= 32 input channels: the fp8 path proper
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
    w = (torch.randn(co, 40, k, k, generator=g) * 0.3).contiguous(memory_format=torch.channels_last).to(DEV)
    y = conv_fp8(x, w, None, pad)  # the first call of a layer measures its amaxes
    ref_q = F.conv2d(dequantised(x, x.abs().max()), dequantised(w, w.abs().max()), padding=pad)
    assert rel(y, ref_q) < FP8_KERNEL_TOL  # the kernel itself, apart from quantisation
    assert rel(y, F.conv2d(x, w, padding=pad)) < FP8_FWD_TOL


@pytest.mark.skipif(not CUDA, reason="Hopper's fp8 MMA accumulates with fewer mantissa bits than fp32 only on a GPU; "
                                     "the interpreter's dot is exact")
def test_fp8_accumulation_over_the_networks_longest_reduction():
    """K = 256 channels x 9 taps = 2304, the longest reduction of the network (group2 / group3),
    accumulated in the tensor cores without promotion to fp32: within FP8_KERNEL_TOL of the fp32 conv
    of the same fp8 operands (kernels/fp8.py's docstring states this bound)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, 8, 8, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
    w = (torch.randn(256, 256, 3, 3, generator=g) * 0.05).contiguous(memory_format=torch.channels_last).to(DEV)
    y = conv_fp8(x, w, None, 1)
    ref_q = F.conv2d(dequantised(x, x.abs().max()), dequantised(w, w.abs().max()), padding=1)
    assert rel(y, ref_q) < FP8_KERNEL_TOL


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_fp8_forward_backward_against_fp32(dtype):
    errs = run(conv_fp8, (2, 40, 5, 5), 33, 3, 1, dtype)
    # the weight-grad runs in the input's dtype, and the bias grad involves no fp8 at all
    assert errs["y"] < FP8_FWD_TOL and errs["dx"] < FP8_GRAD_TOL and errs["dw"] < TOL[dtype] and errs["db"] < 5e-3, errs


def test_fp8_doubles_the_reduction_block_on_hopper_where_the_channels_allow():
    """Issue 22 item 5: with 1-byte operands an sm_90 configuration's BLOCK_K doubles (128-byte tile rows,
    as fp16's 64) where the reduction has the channels; not for 64 channels, not for 16-bit operands,
    not on sm_80 / sm_89."""
    from kernels import conv
    cfgs = conv.FWD_CONFIGS
    wide = conv._candidates(cfgs, 256, 256, 32, 9, esize=1)
    plain = conv._candidates(cfgs, 256, 256, 32, 9, esize=2)
    assert len(wide) == len(plain) and all(w[2] == 2 * p[2] for w, p in zip(wide, plain) if p[2] == 64)
    assert any(c[2] == 128 for c in wide) and not any(c[2] > 64 for c in plain)
    assert not any(c[2] > 64 for c in conv._candidates(cfgs, 256, 64, 32, 9, esize=1))  # group2.conv1
    assert conv._candidates(cfgs, 256, 256, 32, 8, esize=1) == conv._candidates(cfgs, 256, 256, 32, 8)


@pytest.mark.parametrize("ci, co", [(160, 136), (130, 70)])
def test_fp8_wide_reduction_block_forward_and_input_grad(monkeypatch, ci, co):
    """A 64-wide configuration widened to BLOCK_K 128 for fp8 operands, with a partial last channel block
    in the forward's reduction (160 = 128 + 32; 130 = 128 + 2) and the input-grad's (136, 70 channels):
    against the conv of the dequantised operands and against fp32 (forward, input-grad, weight-grad)."""
    from kernels import _triton, conv
    orig_launch, seen = _triton.launch, []

    def launch(fn, grid, args, meta, dev, **kw):
        if fn is conv._conv_kernel:
            seen.append((meta["FLIP"], meta["BLOCK_K"], meta["CRED"]))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    monkeypatch.setattr(conv, "_arch", lambda d: 9)
    with conv.FWD_CONFIGS.pinned(conv.GemmConfig(64, 64, 64, 4, 2, (9,))):
        g = torch.Generator().manual_seed(ci)
        x = torch.randn(2, ci, 4, 5, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
        w = (torch.randn(co, ci, 3, 3, generator=g) * 0.1).contiguous(memory_format=torch.channels_last).to(DEV)
        y = conv_fp8(x, w, None, 1)
        ref_q = F.conv2d(dequantised(x, x.abs().max()), dequantised(w, w.abs().max()), padding=1)
        assert rel(y, ref_q) < FP8_KERNEL_TOL
        errs = run(conv_fp8, (2, ci, 4, 5), co, 3, 1, torch.float16, seed=ci)
    assert errs["y"] < FP8_FWD_TOL and errs["dx"] < FP8_GRAD_TOL and errs["dw"] < TOL[torch.float16], errs
    assert {(0, 128, ci), (1, 128, co)} <= set(seen), seen  # both GEMMs ran the wide block


def test_fp8_scales_are_delayed_per_layer():
    """A call quantises with the amax its layer saw last time, and rolls over the amax it sees now."""
    from kernels import fp8
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 32, 5, 5, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
    w = (torch.randn(16, 32, 3, 3, generator=g) * 0.3).contiguous(memory_format=torch.channels_last).to(DEV)
    state = fp8.Fp8State()
    y1 = conv_fp8(x, w, None, 1, fp8_state=state)
    st = state.scale(w, "x")  # no producer wrote a copy: the conv quantised x itself, with its own scale
    assert torch.allclose(st.amax, torch.stack([x.abs().max(), torch.tensor(0.0, device=DEV)]))
    y2 = conv_fp8(2 * x, w, None, 1, fp8_state=state)  # quantised with x's scale: 2x saturates at 448 * scale
    assert st.amax[0].item() == pytest.approx(2 * x.abs().max().item())  # ... and 2x's amax is next
    ref = F.conv2d(dequantised(2 * x, x.abs().max()), dequantised(w, w.abs().max()), padding=1)
    assert rel(y2, ref) < FP8_KERNEL_TOL
    y3 = conv_fp8(2 * x, w, None, 1, fp8_state=state)  # now with 2x's own scale: no saturation
    assert rel(y3, 2 * y1) < 1e-5 if not CUDA else rel(y3, 2 * y1) < FP8_KERNEL_TOL
    other = w.clone()  # another layer keeps its own scales
    conv_fp8(x, other, None, 1, fp8_state=state)
    assert state.scale(other, "x") is not st and st.amax[0].item() == pytest.approx(2 * x.abs().max().item())
    # without a state, each call scales x by its own amax: 2x is not saturated on the first call
    assert rel(conv_fp8(2 * x, w, None, 1), 2 * y1) < (1e-5 if not CUDA else FP8_KERNEL_TOL)


def test_fp8_non_finite_amax_keeps_the_scale_and_is_counted():
    from kernels import fp8
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 32, 5, 5, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
    w = (torch.randn(16, 32, 3, 3, generator=g) * 0.3).contiguous(memory_format=torch.channels_last).to(DEV)
    state = fp8.Fp8State()
    conv_fp8(x, w, None, 1, fp8_state=state)
    prev = state.scale(w, "x").amax[0].item()
    before = state.counts()["nonfinite"]
    bad = x.clone()
    bad[0, 3, 2, 2] = float("inf")
    y = conv_fp8(bad, w, None, 1, fp8_state=state)
    assert torch.isfinite(y).all()  # the inf saturates at the format's maximum: no inf or NaN step
    assert state.scale(w, "x").amax[0].item() == prev  # the broken amax was not rolled over
    assert state.counts()["nonfinite"] == before + 1
    y_ok = conv_fp8(x, w, None, 1, fp8_state=state)  # and the next healthy call runs on the kept scale
    assert rel(y_ok, F.conv2d(x, w, padding=1)) < FP8_FWD_TOL


def test_fp8_gradient_formats(monkeypatch):
    """The input-grad quantises gradients to e5m2 (default) or e4m3 (kernels.fp8.GRAD): both are correct, e4m3
    with its extra mantissa bit more precise; which trains better is for a GPU to measure."""
    from kernels import fp8
    errs = {}
    for name, fmt in (("e5m2", fp8.E5M2), ("e4m3", fp8.E4M3)):
        monkeypatch.setattr(fp8, "GRAD", fmt)
        errs[name] = run(conv_fp8, (2, 40, 5, 5), 33, 3, 1, torch.float32, seed=3)["dx"]
    assert errs["e4m3"] < errs["e5m2"] < FP8_GRAD_TOL, errs


def test_autotuning_drops_a_candidate_whose_output_differs(monkeypatch):
    """A configuration that computes something else (as an 8-warp flattened-loop conv was seen to
    on GPUs, pytorch issue 173068) is dropped even when it is the fastest."""
    from kernels import conv

    out = torch.zeros(4)
    configs = [(64, 64, 32, 4, 3, (9,)), (128, 256, 64, 8, 3, (9,))]

    def launch(cfg):
        out.copy_(torch.arange(4.0) if cfg[3] == 4 else -torch.arange(4.0))
    dev = mock_gpu(monkeypatch, conv)
    import triton.testing
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, warmup, rep: (fn(), 1.0 if out[1] > 0 else 0.1)[1])
    cfg = conv._select("fwd", ("test",), configs, 256, 64, launch, dev, output=lambda: out)
    assert cfg == configs[0][:5] and conv._rejected and conv._rejected[0][2] == configs[1][:5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_the_l1_twin_reads_the_activation_in_8_byte_vectors_and_computes_the_same(monkeypatch, dtype):
    """The A_VIA_L1 twin (an autotuning candidate only; forced here as profiling static forces it,
    ``l1_twins``) launches the same kernels with 8-byte vectors for the tile each reads once per
    tap (cp.async.ca: through L1; the weight-grad's x chunks) and gives the same forward,
    input-grad and weight-grad; a tile already narrower than 16 bytes has no twin."""
    from kernels import _triton, conv
    orig_launch, aligns = _triton.launch, []

    def launch(fn, grid, args, meta, dev, **kw):
        if fn in (conv._conv_kernel, conv._wgrad_kernel):
            aligns.append((fn.__name__, meta["ALIGN_X"]))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    monkeypatch.setattr(conv, "_chosen", {})
    esize = torch.empty((), dtype=dtype).element_size()
    kinds = ["_conv_kernel", "_conv_kernel", "_wgrad_kernel"]  # forward, input-grad, weight-grad
    with conv.l1_twins():
        errs = run(conv_triton, (2, 16, 6, 7), 24, 3, 1, dtype)
        assert max(errs.values()) < TOL[dtype], errs
        assert sorted(aligns) == sorted(zip(kinds, [8 // esize] * 3)), aligns  # all three twins
        # 6 input channels (rows of 12 or 24 bytes) already copy 2-element vectors: the forward and
        # the weight-grad (whose x it is) have no twin
        aligns.clear()
        run(conv_triton, (2, 6, 6, 7), 8, 3, 1, dtype)
        assert [a for a in aligns if a[0] == "_wgrad_kernel"] == [("_wgrad_kernel", 2)] and aligns[0][1] == 2, aligns
    aligns.clear()
    run(conv_triton, (2, 16, 6, 7), 24, 3, 1, dtype)
    assert sorted(aligns) == sorted(zip(kinds, [16 // esize] * 3)), aligns  # outside: as listed


def _spy_packing(monkeypatch):
    from kernels import _triton, conv
    orig_launch, seen = _triton.launch, []

    def launch(fn, grid, args, meta, dev, **kw):
        if fn is conv._conv_kernel:
            seen.append(dict(flip=meta["FLIP"], pack=meta.get("PACK", 0), steps=args[-1], cred=meta["CRED"],
                             bk=meta["BLOCK_K"], layout=meta["WLAYOUT"], idx64=meta["IDX64"],
                             scale=meta["HAS_SCALE"]))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    return seen


PACK_CASES = [  # (x shape, out channels, kernel, padding, layout): a reduction that does not fill its blocks
    ((2, 24, 9, 9), 64, 3, 1, "channels_last"),  # group1.conv1's 24 channels (forward packs)
    ((2, 64, 5, 7), 24, 3, 1, "channels_last"),  # 24 output channels: the input-grad packs ([c][tap][j])
    ((3, 3, 6, 5), 8, 3, 1, "channels_last"),    # 3 channels: 1-element vectors, the whole reduction one block
    ((2, 1, 7, 7), 8, 3, 1, "channels_last"),    # 1 channel
    ((2, 40, 3, 3), 20, 3, 1, "channels_last"),  # 3x3 image: every tap touches the border; 40 in 64-wide blocks
    ((2, 24, 6, 7), 40, 3, 1, "strided"),        # non-contiguous input (padded pixel stride)
    ((2, 24, 8, 8), 16, 5, 2, "channels_last"),  # 5x5: 25 taps, 600 pairs
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", PACK_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-co{c[1]}-k{c[2]}-{c[4]}")
def test_taps_packed_into_the_reduction_forward_and_grads(monkeypatch, case, dtype):
    """A channel count that does not fill the reduction block: the forward / input-grad run their
    reduction over packed (tap, channel) pairs, cdiv(taps x channels, BLOCK_K) iterations instead of
    taps x cdiv(channels, BLOCK_K), and give what F.conv2d gives; ``taps_apart()`` runs them tap by tap."""
    from kernels import conv
    shape, co, k, pad, layout = case
    seen = _spy_packing(monkeypatch)
    monkeypatch.setattr(conv, "_chosen", {})
    errs = run(conv_triton, shape, co, k, pad, dtype, layout=layout)
    assert max(errs.values()) < TOL[dtype], errs
    packed = [s for s in seen if s["pack"]]
    assert packed, seen
    for s in seen:
        want = -(-k * k * s["cred"] // s["bk"]) if s["pack"] else k * k * -(-s["cred"] // s["bk"])
        assert s["steps"] == want, s
        assert s["pack"] == (s["steps"] < k * k * -(-s["cred"] // s["bk"])), s  # packed exactly where it saves steps
    if shape[1] % 32:
        assert any(s["flip"] == 0 for s in packed), seen
    if co % 32:
        assert any(s["flip"] == 1 for s in packed), seen
    seen.clear()
    with conv.taps_apart():
        apart = run(conv_triton, shape, co, k, pad, dtype, layout=layout)
    assert max(apart.values()) < TOL[dtype] and seen and not any(s["pack"] for s in seen), (apart, seen)


def test_taps_packed_with_64_bit_offsets(monkeypatch):
    """IDX64 (a tensor of 2^31 elements or more; forced here) with the packed reduction."""
    from kernels import conv
    seen = _spy_packing(monkeypatch)
    monkeypatch.setattr(conv, "_chosen", {})
    monkeypatch.setattr(conv, "_span", lambda t: 2 ** 31)
    errs = run(conv_triton, (2, 24, 6, 7), 24, 3, 1, torch.float16)
    assert max(errs.values()) < TOL[torch.float16], errs
    assert {(s["flip"], s["pack"], s["idx64"]) for s in seen} == {(0, 1, 1), (1, 1, 1)}, seen


def test_fp8_taps_packed_into_the_reduction(monkeypatch):
    """fp8 operands (16-byte vectors of 48 input channels; the input-grad's transposed [tap][j][c] weight
    over 24 output channels) with packed taps."""
    from kernels import conv
    seen = _spy_packing(monkeypatch)
    monkeypatch.setattr(conv, "_chosen", {})
    errs = run(conv_fp8, (2, 48, 5, 6), 24, 3, 1, torch.float16)
    assert errs["y"] < FP8_FWD_TOL and errs["dx"] < FP8_GRAD_TOL and errs["dw"] < TOL[torch.float16], errs
    assert {(s["flip"], s["layout"], s["pack"], s["scale"]) for s in seen} == {(0, 0, 1, 1), (1, 2, 1, 1)}, seen


def test_where_taps_are_packed():
    from kernels import conv
    assert conv._packs(24, 32, 3, 3, 8)        # group1.conv1: 216 pairs in 7 blocks, not 9
    assert conv._packs(24, 16, 3, 3, 8)        # 14 blocks, not 18
    assert not conv._packs(64, 32, 3, 3, 8)    # whole blocks already
    assert not conv._packs(24, 32, 1, 1, 8)    # 1x1: one tap
    assert not conv._packs(20, 32, 3, 3, 8)    # an 8-element vector would straddle two taps
    assert conv._packs(20, 32, 3, 3, 4)        # 4-element ones do not
    assert not conv._packs(24, 12, 3, 3, 8)    # a block not a whole number of vectors
    assert not conv._packs(56, 64, 1, 2, 8)    # 2 blocks either way (112 pairs): no gain
    with conv.taps_apart():
        assert not conv._packs(24, 32, 3, 3, 8)
    assert conv._apart_twin(24, 3, 3, 8) is not None and conv._apart_twin(64, 3, 3, 8) is None
    assert conv._apart_twin(24, 1, 1, 8) is None


def test_narrow_outputs_get_32_column_tiles_with_64_wide_reductions():
    """group1.conv1's input-grad (24 output channels, 64 to reduce per tap): a 32-column tile with a 64-wide
    reduction block from the list (9 main-loop iterations), not the smallest tile widened (18 of 32)."""
    from kernels import conv
    assert conv._candidates(conv.FWD_CONFIGS, 24, 64, 16, 9)[0] == (256, 32, 64, 8, 3)
    assert conv._candidates(conv.FWD_CONFIGS, 24, 64, 16, 8)[0] == (256, 32, 64, 8, 3)  # sm_80 too (2026-12-02)
    # sm_80's 64-column tiles: 128x64x32 at 4 warps ahead of 128x64x64 at 8 (shared-memory bound there)
    assert conv._candidates(conv.FWD_CONFIGS, 64, 576, 16, 8)[:2] == [(128, 64, 32, 4, 4), (128, 64, 64, 8, 4)]
    assert all(c[1] == 32 for c in conv._candidates(conv.FWD_CONFIGS, 24, 64, 16, 9))


def _time_twins(monkeypatch, conv, configs, marker, n_cols, k_chans, twin, key):
    """_select on a mock H100 with do_bench timing a launch marked ``marker`` at 0.5, the rest at 1.0:
    (the choice, the launched configurations)."""
    out = torch.zeros(4)
    launched = []

    def launch(cfg):
        launched.append(cfg)
        out.copy_(torch.arange(4.0))
    dev = mock_gpu(monkeypatch, conv)
    import triton.testing
    monkeypatch.setattr(triton.testing, "do_bench",
                        lambda fn, warmup, rep: (fn(), 0.5 if launched[-1][-1] == marker else 1.0)[1])
    return conv._select("fwd", key, configs, n_cols, k_chans, launch, dev, output=lambda: out, twin=twin), launched


def test_autotuning_times_the_taps_apart_twin(monkeypatch):
    """On a GPU the tap-by-tap form of the first candidate (APART appended) is timed beside the packed
    candidates and kept when faster; --cache-dir keeps it."""
    from kernels import conv
    configs = [(128, 64, 32, 4, 4, (9,)), (64, 64, 32, 4, 3, (9,))]
    cfg, launched = _time_twins(monkeypatch, conv, configs, conv.APART, 64, 24, conv._apart_twin(24, 3, 3, 8), ("apart",))
    assert cfg == (128, 64, 32, 4, 4, conv.APART)
    assert (64, 64, 32, 4, 3, conv.APART) not in launched  # the twin of the first candidate only
    # tap by tap, a block no wider than a tap's channels need (sm_90's packed first candidate is 256x64x64)
    assert conv._apart_twin(24, 3, 3, 8)((256, 64, 64, 8, 3)) == (256, 64, 32, 8, 3, conv.APART)
    assert conv._apart_twin(24, 3, 3, 8, 32)((128, 64, 128, 8, 3)) == (128, 64, 32, 8, 3, conv.APART)


def test_the_taps_apart_twin_survives_the_choices_file(tmp_path, monkeypatch):
    from kernels import conv
    monkeypatch.setattr(conv, "_chosen", {})
    monkeypatch.setattr(conv, "_choice_context", lambda: {"device": "H200", "triton": "3.6.0"})
    key = ("fwd", (2000, 24, 31, 31), 64, 3, 3, 1, "torch.float16", 0)
    conv._chosen[key] = (256, 64, 32, 8, 3, conv.APART)  # the twin of the 256x64x64 entry, narrowed
    path = str(tmp_path / "choices.json")
    conv.save_choices(path)
    conv._chosen.clear()
    assert conv.load_choices(path) == 1 and conv._chosen[key] == (256, 64, 32, 8, 3, conv.APART)


def test_autotuning_times_the_l1_twin_of_the_first_candidate(monkeypatch):
    """On a GPU the twin (A_VIA_L1 appended) is timed beside the list and kept when faster;
    without autotuning it never runs; --cache-dir keeps it as a choice."""
    from kernels import conv
    configs = [(128, 128, 64, 4, 4, (9,)), (64, 64, 32, 4, 3, (9,))]
    twin = lambda c: tuple(c) + (conv.A_VIA_L1,)  # noqa: E731
    cfg, launched = _time_twins(monkeypatch, conv, configs, conv.A_VIA_L1, 256, 64, twin, ("l1",))
    assert cfg == (128, 128, 64, 4, 4, conv.A_VIA_L1)
    assert (64, 64, 32, 4, 3, conv.A_VIA_L1) not in launched  # the twin of the first candidate only
    monkeypatch.setattr(conv, "AUTOTUNE", False)
    launched.clear()
    assert conv._select("fwd", ("no tuning",), configs, 256, 64, launched.append, MockGPU(),
                        output=lambda: torch.zeros(4), twin=twin) == configs[0][:5]
    assert not launched


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", [((4, 8, 12, 12), 70, 3, 1),   # 2 column tiles, a partial last row tile
                                  ((3, 20, 5, 5), 17, 3, 1),    # channels not a multiple of any block
                                  ((2, 12, 6, 7), 32, 1, 0)],   # 1x1
                         ids=lambda c: f"{'x'.join(map(str, c[0]))}-co{c[1]}-k{c[2]}")
def test_the_persistent_twin_walks_every_tile_from_a_small_grid(monkeypatch, case, dtype):
    """The persistent twin (an autotuning candidate on Hopper; forced here, ``persistent_twins``):
    a grid of two programs, each walking its tiles in one flattened loop, the last tile partial, gives
    the forward and the input-grad of the one-tile-per-program kernel."""
    from kernels import _triton, conv
    if not conv.FLATTEN:
        pytest.skip(f"triton {conv.triton_version()} has no tl.range(flatten=): the twin is never offered")
    orig_launch, seen = _triton.launch, []

    def launch(fn, grid, args, meta, dev, **kw):
        if fn is conv._conv_kernel:
            seen.append((grid, meta.get("PERSIST")))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    monkeypatch.setattr(conv, "_chosen", {})
    monkeypatch.setattr(conv, "PERSIST_PROGRAMS", 2)
    shape, co, k, pad = case
    with conv.persistent_twins():
        errs = run(conv_triton, shape, co, k, pad, dtype)
    assert max(errs.values()) < TOL[dtype], errs
    # the forward and (but for a 1x1 conv, whose input-grad is no implicit GEMM) the input-grad
    assert len(seen) == (1 if k == 1 else 2) and all(p == 1 and grid[0] <= 2 for grid, p in seen), seen
    seen.clear()
    run(conv_triton, shape, co, k, pad, dtype)
    assert seen and all(p is None for _, p in seen)  # outside: one tile per program


def test_autotuning_times_both_twins_of_the_first_candidate_on_hopper(monkeypatch):
    """On an sm_90 GPU the forward's first candidate is timed with its L1 twin and its persistent
    twin too (where Triton flattens loop nests), each checked against the 4-warp candidate's output;
    an A100 gets no persistent twin."""
    from kernels import conv
    if not conv.FLATTEN:
        pytest.skip(f"triton {conv.triton_version()} has no tl.range(flatten=): the twin is never offered")
    out, launched = torch.zeros(4), []

    def launch(cfg):
        launched.append(cfg)
        out.copy_(torch.arange(4.0))
    dev = mock_gpu(monkeypatch, conv)
    import triton.testing
    monkeypatch.setattr(triton.testing, "do_bench",
                        lambda fn, warmup, rep: (fn(), 0.4 if launched[-1][-1] == conv.PERSISTENT else 1.0)[1])
    configs = [(128, 128, 64, 4, 4, (9,)), (64, 64, 32, 4, 3, (9,))]
    twins = (lambda c: tuple(c) + (conv.A_VIA_L1,), conv._persistent_twin(dev))
    cfg = conv._select("fwd", ("persist",), configs, 256, 64, launch, dev, output=lambda: out, twin=twins)
    assert cfg == (128, 128, 64, 4, 4, conv.PERSISTENT)
    assert (128, 128, 64, 4, 4, conv.A_VIA_L1) in launched
    # a twin that this Triton cannot compile (flatten on an older compiler) is dropped, not fatal
    conv._chosen.clear()

    def broken(cfg):
        if cfg[-1] == conv.PERSISTENT:
            raise RuntimeError("CompilationError: cannot flatten\nmore")
        launch(cfg)
    cfg = conv._select("fwd", ("broken",), configs, 256, 64, broken, dev, output=lambda: out, twin=twins)
    assert cfg[-1] != conv.PERSISTENT
    assert conv._rejected[-1][2][-1] == conv.PERSISTENT and "cannot flatten" in conv._rejected[-1][3]
    monkeypatch.setattr(conv, "_arch", lambda d: 8)
    assert conv._persistent_twin(dev) is None and conv._persistent_twin(dev, fused=True) is None


TMA_CASES = [  # channels whose rows are multiples of 16 bytes in fp16 (the TMA descriptor's strides)
    ((2, 24, 7, 9), 40, 3, 1),        # 24 input channels: a partial 32-wide channel block; 40 output columns
    ((2, 16, 5, 5), 136, 3, 1),       # the input-grad reduces 136 channels: 4 blocks of 32, the last partial
    ((1, 8, 3, 3), 8, 3, "same"),     # 3x3 image, every tap at the border
    ((2, 16, 6, 7), 32, 1, 0),        # 1x1
]


def _spy_conv_launches(monkeypatch):
    from kernels import _triton, conv
    orig_launch, seen = _triton.launch, []

    def launch(fn, grid, args, meta, dev, **kw):
        if fn is conv._conv_kernel:
            seen.append(dict(flip=meta["FLIP"], tma=meta.get("W_TMA", 0), bk=meta["BLOCK_K"], bn=meta["BLOCK_N"],
                             bm=meta["BLOCK_M"], pack=meta.get("PACK", 0), swap=meta.get("SWAP", 0),
                             persist=meta.get("PERSIST", 0)))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    return seen


SWAP_CASES = [  # (x shape, out channels, kernel, padding, layout): 64-column tiles, forward and input-grad
    ((2, 64, 5, 7), 64, 3, 1, "channels_last"),   # 70 rows: one partial 128-row tile
    ((3, 40, 9, 6), 48, 3, 1, "strided"),         # partial channel blocks and columns, non-contiguous input
    ((2, 24, 9, 9), 64, 3, 1, "channels_last"),   # packed taps (group1.conv1's 24 channels) and swapped
    ((2, 64, 6, 6), 40, 1, 0, "channels_last"),   # 1x1
]


@pytest.mark.parametrize("case", SWAP_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-co{c[1]}-k{c[2]}-{c[4]}")
def test_operands_swapped_forward_and_input_grad(monkeypatch, case):
    """A 64-column tile of at least 128 rows with 2-byte operands runs its GEMM transposed (SWAP: the weight
    tile the MMA's first operand), forward and input-grad, and gives what F.conv2d gives; under
    ``operands_unswapped()`` the same launches run untransposed and agree."""
    from kernels import conv
    shape, co, k, pad, layout = case
    seen = _spy_conv_launches(monkeypatch)
    with conv.FWD_CONFIGS.pinned(conv.GemmConfig(128, 64, 32, 4, 2, (8, 9))):
        errs = run(conv_triton, shape, co, k, pad, torch.float16, layout=layout)
        assert max(errs.values()) < TOL[torch.float16], errs
        # every 64-column launch swapped; the input-grad into 24 channels takes 32 columns, unswapped
        assert seen and all(s["swap"] == (s["bn"] == 64) and s["bm"] == 128 for s in seen), seen
        if k == 3:
            assert {s["flip"] for s in seen if s["swap"]} == ({0} if shape[1] <= 32 else {0, 1}), seen
        if shape[1] == 24:
            assert any(s["pack"] and s["swap"] for s in seen), seen
        seen.clear()
        with conv.operands_unswapped():
            plain = run(conv_triton, shape, co, k, pad, torch.float16, layout=layout)
        assert max(plain.values()) < TOL[torch.float16] and seen and not any(s["swap"] for s in seen), (plain, seen)


def test_swapped_operands_in_a_persistent_grid(monkeypatch):
    """The persistent twin walks several swapped tiles per program, the last one partial."""
    from kernels import conv
    seen = _spy_conv_launches(monkeypatch)
    monkeypatch.setattr(conv, "PERSIST_PROGRAMS", 2)
    with conv.FWD_CONFIGS.pinned(conv.GemmConfig(128, 64, 32, 4, 2, (8, 9))), conv.persistent_twins():
        errs = run(conv_triton, (3, 64, 9, 11), 64, 3, 1, torch.float16)
    assert max(errs.values()) < TOL[torch.float16], errs
    assert seen and all(s["swap"] == 1 and s["persist"] == 1 for s in seen), seen


def test_where_operands_swap():
    from kernels import conv
    assert conv._swaps(256, 64, 2, False, 9) and conv._swaps(128, 64, 2, False, 9)
    assert not conv._swaps(64, 64, 2, False, 9)     # one 64-row instruction: nothing re-read
    assert not conv._swaps(256, 32, 2, False, 9)    # 32 columns would fill half of each 64-row instruction
    assert not conv._swaps(128, 128, 2, False, 9)   # wide tiles read the weights once per 64 rows already
    assert not conv._swaps(256, 64, 1, False, 9)    # fp8: Hopper's wgmma takes K-major fp8 operands only
    assert not conv._swaps(256, 64, 4, False, 9)    # tf32 likewise
    assert not conv._swaps(256, 64, 2, True, 9)     # the fused pool / statistics epilogues
    assert not conv._swaps(256, 64, 2, False, 8)    # sm_80: mma.sync
    with conv.operands_unswapped():
        assert not conv._swaps(256, 64, 2, False, 9)
    assert conv._swaps(256, 64, 2, False, 9)


@pytest.mark.skipif(not kernels.conv.HAS_TMA, reason="this Triton has no tl.make_tensor_descriptor")
@pytest.mark.parametrize("case", TMA_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-co{c[1]}-k{c[2]}")
def test_weight_tiles_through_tma_forward_and_grads(monkeypatch, case):
    """Issue 22 item 6: the weight tiles through a 3-d TMA descriptor (forced here; on a GPU sm_90 and tiles
    of 128 columns or more): partial channel blocks and column tiles read zeros, the input-grad's [c][tap][j]
    reading and the 1x1 conv as the pointer path does. Outside the block the interpreter reads pointers.
    Taps apart: a partial channel block is otherwise packed (PACK), whose weights go through pointers."""
    from kernels import conv
    seen = _spy_conv_launches(monkeypatch)
    with conv.tma_weights(), conv.taps_apart():
        errs = run(conv_triton, *case, torch.float16)
    assert max(errs.values()) < TOL[torch.float16], errs
    assert len(seen) == (1 if case[2] == 1 else 2) and all(s["tma"] == 1 for s in seen), seen
    seen.clear()
    with conv.tma_weights():  # packed taps keep the pointer path (the TMA tiles are one tap's), the rest TMA
        errs = run(conv_triton, *case, torch.float16)
    assert max(errs.values()) < TOL[torch.float16], errs
    assert all(s["tma"] == 1 - s["pack"] for s in seen), seen
    seen.clear()
    run(conv_triton, *case, torch.float16)
    assert seen and not any(s["tma"] for s in seen)
    seen.clear()
    with conv.tma_weights():  # channels whose rows are not 16-byte multiples keep the pointer path
        errs = run(conv_triton, (2, 20, 5, 5), 12, 3, 1, torch.float16)
    assert max(errs.values()) < TOL[torch.float16] and not any(s["tma"] for s in seen), (errs, seen)


@pytest.mark.skipif(not kernels.conv.HAS_TMA, reason="this Triton has no tl.make_tensor_descriptor")
def test_fp8_weight_tiles_through_tma(monkeypatch):
    """fp8 through TMA: the forward's [j][tap][c] e4m3 weight and the input-grad's transposed [tap][j][c] copy
    (taps apart: 48 channels in blocks of 32 would otherwise be packed)."""
    from kernels import conv
    seen = _spy_conv_launches(monkeypatch)
    with conv.tma_weights(), conv.taps_apart():
        errs = run(conv_fp8, (2, 48, 5, 6), 32, 3, 1, torch.float16)
    assert errs["y"] < FP8_FWD_TOL and errs["dx"] < FP8_GRAD_TOL and errs["dw"] < TOL[torch.float16], errs
    assert {s["flip"] for s in seen if s["tma"]} == {0, 1}, seen


def test_the_tma_path_is_taken_only_where_it_can_run(monkeypatch):
    from kernels import conv
    if not conv.HAS_TMA:
        pytest.skip("this Triton has no tl.make_tensor_descriptor")

    class Gpu:
        type, index = "cuda", 0
    monkeypatch.setattr(conv, "interpreting", lambda: False)
    monkeypatch.setattr(conv, "_capability_major", lambda idx: 9)
    monkeypatch.setattr(conv, "_tma_ok", {})
    w = torch.empty(64, 64, 3, 3, dtype=torch.float16).contiguous(memory_format=torch.channels_last)
    assert conv._w_tma(w, 2, 64, 64, 0, Gpu())
    assert not conv._w_tma(w.float(), 4, 64, 64, 0, Gpu())       # fp32 (TF32 wgmma wants K-major operands)
    assert not conv._w_tma(w, 2, 20, 64, 0, Gpu())               # 40-byte rows: not a TMA stride
    assert not conv._w_tma(w, 2, 64, 20, 1, Gpu())               # the input-grad's rows are output channels
    assert not conv._w_tma(w, 2, 64, 64, 0, torch.device("cpu"))  # the interpreter, unless forced
    with conv.weight_pointers():
        assert not conv._w_tma(w, 2, 64, 64, 0, Gpu())
    conv._tma_ok[0] = False                                       # the first launch's check failed
    assert not conv._w_tma(w, 2, 64, 64, 0, Gpu())
    monkeypatch.setattr(conv, "_capability_major", lambda idx: 8)
    conv._tma_ok.clear()
    assert not conv._w_tma(w, 2, 64, 64, 0, Gpu())               # sm_80 / sm_89: no TMA
    conv._tma_ok[0] = True
    assert not conv._w_tma(w, 2, 64, 64, 0, Gpu())


def test_the_first_tma_launch_is_checked_against_the_pointer_path(monkeypatch):
    """On a GPU the first TMA launch runs beside the pointer path: an error or a different output turns TMA off
    for the process (a warning, and ``_rejected`` says why); a match keeps it; an OutOfResources leaves it open."""
    from kernels import conv

    class Gpu:
        type, index = "cuda", 0
    monkeypatch.setattr(conv, "_tma_ok", {})
    monkeypatch.setattr(conv, "_rejected", [])
    out = torch.zeros(8)

    def pointers():
        out.copy_(torch.arange(8.0))

    def tma_ok():
        out.copy_(torch.arange(8.0))

    def tma_wrong():
        out.copy_(torch.arange(8.0) * 1.5)

    def tma_broken():
        raise RuntimeError("Kernel requires a runtime memory allocation")

    def tma_too_big():
        raise conv.OutOfResources(300000, 232448, "shared memory")
    conv._tma_checked(tma_too_big, pointers, lambda: out, Gpu(), 2)
    assert conv._tma_ok == {}
    conv._tma_checked(tma_ok, pointers, lambda: out, Gpu(), 2)
    assert conv._tma_ok == {0: True}
    for bad, why in ((tma_wrong, "differs"), (tma_broken, "allocation")):
        conv._tma_ok.clear()
        with pytest.warns(RuntimeWarning, match="pointer path runs"):
            conv._tma_checked(bad, pointers, lambda: out, Gpu(), 2)
        assert conv._tma_ok == {0: False} and why in conv._rejected[-1][3]


def test_autotuning_fp8_times_the_wide_and_the_narrow_reduction_blocks(monkeypatch):
    """fp8 on sm_90: the wide-K candidates first (the default without autotuning), the lists' own BLOCK_K
    timed after them, the faster kept; 16-bit operands are offered no such pair."""
    from kernels import conv
    out, launched = torch.zeros(4), []

    def launch(cfg):
        launched.append(cfg)
        out.copy_(torch.arange(4.0))
    dev = mock_gpu(monkeypatch, conv)
    import triton.testing
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, warmup, rep: (fn(), 0.5 if launched[-1][2] == 64 else 1.0)[1])
    configs = [(128, 128, 64, 4, 4, (9,)), (128, 64, 64, 4, 4, (9,))]
    cfg = conv._select("fwd", ("fp8",), configs, 256, 256, launch, dev, min_k=32, output=lambda: out, esize=1)
    assert cfg == (128, 128, 64, 4, 4) and {(128, 128, 128, 4, 4), (128, 64, 128, 4, 4)} <= set(launched)
    monkeypatch.setattr(conv, "AUTOTUNE", False)
    assert conv._select("fwd", ("fp8 untuned",), configs, 256, 256, launch, dev, min_k=32, output=lambda: out,
                        esize=1) == (128, 128, 128, 4, 4)
    launched.clear()
    monkeypatch.setattr(conv, "AUTOTUNE", True)
    conv._select("fwd", ("fp16",), configs, 256, 256, launch, dev, output=lambda: out, esize=2)
    assert launched and all(c[2] == 64 for c in launched)


def test_persistent_and_wide_fp8_choices_survive_the_choices_file(tmp_path, monkeypatch):
    from kernels import conv
    monkeypatch.setattr(conv, "_chosen", {})
    base = tuple(conv.FWD_CONFIGS[0][:-1])
    keys = {("fwd", (2000, 64, 16, 16), 256, 3, 3, 1, "torch.float16"): base + (conv.PERSISTENT,),
            ("fwd_fp8", (2000, 256, 8, 8), 256, 3, 3, 1, "torch.float8_e4m3fn"): (*base[:2], 2 * base[2], *base[3:])}
    conv._chosen.update(keys)
    path = str(tmp_path / "choices.json")
    conv.save_choices(path)
    conv._chosen.clear()
    assert conv.load_choices(path) == 2 and conv._chosen == keys


def test_the_l1_twin_survives_the_choices_file(tmp_path, monkeypatch):
    from kernels import conv
    monkeypatch.setattr(conv, "_chosen", {})
    key = ("fwd", (2000, 64, 16, 16), 256, 3, 3, 1, "torch.float16")
    conv._chosen[key] = tuple(conv.FWD_CONFIGS[0][:-1]) + (conv.A_VIA_L1,)
    wkey = ("wgrad",) + key[1:]
    conv._chosen[wkey] = tuple(conv.WGRAD_CONFIGS[0][:-1]) + (conv.A_VIA_L1,)
    path = str(tmp_path / "choices.json")
    conv.save_choices(path)
    conv._chosen.clear()
    assert conv.load_choices(path) == 2 and conv._chosen[key][-1] == conv._chosen[wkey][-1] == conv.A_VIA_L1


def test_fp8_narrow_convs_run_in_input_dtype():
    errs = run(conv_fp8, (1, 3, 8, 8), 24, 2, 0, torch.float32)  # the whitening conv: not quantised
    assert max(errs.values()) < TOL[torch.float32], errs


def test_fp8_scaling_round_trip():
    t = torch.randn(1000) * 5
    for dtype, rel_step in ((FP8_FWD, 2 ** -3), (FP8_BWD, 2 ** -2)):
        q, s = quantize_fp8(t, dtype)
        assert q.dtype == dtype and s.shape == (1,)
        back = q.float() * s
        big = t.abs() > t.abs().max() / 100  # away from the subnormal range
        assert ((back - t).abs() <= rel_step * t.abs())[big].all()
        assert q.float().abs().max() == torch.finfo(dtype).max  # amax maps to the top of the range


def test_fp8_saturates_instead_of_overflowing():
    t = torch.tensor([1e30, -3e38, 1.0, 0.0])
    q, s = quantize_fp8(t, FP8_FWD)
    assert torch.isfinite(q.float()).all() and torch.isfinite(s).all()
    assert q.float()[1] == -torch.finfo(FP8_FWD).max


def test_fp8_all_zero_tensor():
    q, s = quantize_fp8(torch.zeros(4, 4), FP8_BWD)
    assert s.item() == 1.0 and (q.float() == 0).all()
    x = torch.zeros(1, 32, 4, 4, device=DEV)
    w = torch.zeros(8, 32, 3, 3, device=DEV)
    y = conv_fp8(x, w, None, 1)
    assert torch.equal(y, torch.zeros_like(y))


def test_fp8_one_huge_outlier():
    t = torch.randn(10000)
    t[123] = 1e6
    q, s = quantize_fp8(t, FP8_FWD)
    back = q.float() * s
    assert abs(back[123].item() - 1e6) <= 1e6 * 2 ** -3  # the outlier survives
    assert torch.isfinite(back).all()  # the rest underflows towards 0 (expected with per-tensor scales)
    assert (back.abs() < 1e3).sum() == 9999


def test_fp8_refuses_gpus_without_fp8_tensor_cores(monkeypatch):
    class FakeCuda:
        device = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(RuntimeError, match=r"A100-SXM4-80GB \(compute capability 8.0\) has no FP8 tensor cores.*conv=triton"):
        check_fp8_device(FakeCuda())
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    check_fp8_device(FakeCuda())  # an H100 passes


def test_registered():
    assert kernels.get("conv", "triton") is conv_triton and kernels.get("conv", "fp8") is conv_fp8


def test_errors_are_clear():
    x = torch.randn(1, 4, 6, 6, device=DEV)
    w = torch.randn(8, 4, 3, 3, device=DEV)
    with pytest.raises(TypeError, match="x is torch.float16 but weight is torch.float32"):
        conv_triton(x.half(), w, None, 1)
    with pytest.raises(ValueError, match="x has 4 channels but weight expects 2"):
        conv_triton(x, w[:, :2], None, 1)
    with pytest.raises(ValueError, match="only equal padding"):
        conv_triton(x, w, None, (1, 0))
    with pytest.raises(ValueError, match="padding must be"):
        conv_triton(x, w, None, "full")
    with pytest.raises(ValueError, match="bias has 3 elements for 8 output channels"):
        conv_triton(x, w, torch.zeros(3, device=DEV), 1)
    with pytest.raises(TypeError, match="dtype torch.int64"):
        conv_triton(x.long(), w.long(), None, 1)


def test_autotune_choices_round_trip(tmp_path, monkeypatch):
    """train.py --cache-dir keeps the timed conv configurations for the next process: saved
    with the GPU's name and triton version, reloaded only for the same ones, stale configs dropped."""
    import json

    from kernels import conv
    monkeypatch.setattr(conv, "_chosen", {})
    fwd_key = ("fwd", (2000, 64, 16, 16), 256, 3, 3, 1, "torch.float16")
    conv._chosen[fwd_key] = tuple(conv.FWD_CONFIGS[1][:-1])  # a configuration without its archs
    conv._chosen[("wgrad", (2000, 64, 16, 16), 256, 3, 3, 1, "torch.float16")] = tuple(conv.WGRAD_CONFIGS[0][:-1])
    path = str(tmp_path / "choices.json")
    assert conv.save_choices(path) == 2
    conv._chosen.clear()
    assert conv.load_choices(path) == 2
    assert conv._chosen[fwd_key] == tuple(conv.FWD_CONFIGS[1][:-1])
    data = json.load(open(path))
    data["choices"][0][-1] = [512, 512, 64, 8, 3]  # a configuration no longer in the list
    json.dump(data, open(path, "w"))
    conv._chosen.clear()
    assert conv.load_choices(path) == 1 and fwd_key not in conv._chosen
    json.dump(dict(data, device="another GPU"), open(path, "w"))
    assert conv.load_choices(path) == 0
    open(path, "w").write("{not json")
    assert conv.load_choices(path) == 0
    assert conv.load_choices(str(tmp_path / "missing.json")) == 0


@pytest.mark.skipif(not CUDA, reason="compiled configurations exist only on a GPU (the interpreter ignores them)")
@pytest.mark.parametrize("kind", ["fwd", "wgrad"])
def test_every_configuration_against_cudnn_on_gpu(kind, monkeypatch):
    """Each block configuration of the lists, forced one at a time (the 8-warp ones included: the
    flattened-loop trap of pytorch issue 173068), and each one's L1 twin (A_VIA_L1) and, on Hopper,
    persistent twin (both of which the autotuner may choose), forward / input-grad / weight-grad
    against cuDNN, also with 24 channels to reduce (taps packed, PACK; the weight-grad's packed columns); on Hopper each with the weights through TMA (forced on every tile width) and through
    pointers, and fp8 with 256 reduction channels (BLOCK_K doubled) and with the lists' own BLOCK_K."""
    from kernels import conv
    torch.backends.cudnn.allow_tf32 = False
    major = torch.cuda.get_device_capability()[0]
    listname = "FWD_CONFIGS" if kind == "fwd" else "WGRAD_CONFIGS"
    for cfg in getattr(conv, listname):
        if major not in cfg[-1]:  # its archs
            continue
        for twin in (None, "l1", "persistent"):
            if twin == "persistent" and (kind != "fwd" or not conv.FLATTEN or major < 9):
                continue  # the persistent twin: Hopper's forward / input-grad only
            monkeypatch.setattr(conv, listname, [cfg])
            monkeypatch.setattr(conv, "AUTOTUNE", False)
            conv._chosen.clear()
            forced = dict(l1=conv.l1_twins, persistent=conv.persistent_twins).get(twin, contextlib.nullcontext)
            # the weights' paths: pointers, and TMA where a GPU takes it (sm_90, tiles >= W_TMA_MIN_N columns)
            weights = [conv.weight_pointers] + ([conv.tma_weights] if major >= 9 and conv.HAS_TMA and twin != "l1"
                                                and cfg[1] >= conv.W_TMA_MIN_N else [])
            for wpath in weights:
                with forced(), wpath():  # the autotuner's twins, forced; the weights' path
                    for dtype in (torch.float16, torch.bfloat16):
                        errs = run(conv_triton, (8, 64, 15, 15), 256, 3, 1, dtype, bias=False, seed=1)
                        assert max(errs.values()) < TOL[dtype], (cfg, twin, wpath.__name__, dtype, errs)
                        # taps packed into the reduction: 24 input (forward, weight-grad) / output (input-grad) channels
                        # (fp16, each configuration as listed: a compile per configuration and shape on the GPU)
                        for shape, co in (((8, 24, 31, 31), 64), ((8, 64, 9, 9), 24)) if (
                                dtype == torch.float16 and twin is None and wpath is weights[0]) else ():
                            errs = run(conv_triton, shape, co, 3, 1, dtype, bias=False, seed=1)
                            assert max(errs.values()) < TOL[dtype], (cfg, twin, wpath.__name__, dtype, shape, errs)
                    if torch.cuda.get_device_capability() >= (8, 9) and kind == "fwd" and cfg[2] >= 32:
                        # 64 reduction channels, and 256 (BLOCK_K doubled on Hopper; with twin None also not)
                        for shape, k_block in (((8, 64, 15, 15), contextlib.nullcontext),
                                               ((8, 256, 7, 7), contextlib.nullcontext),
                                               ((8, 256, 7, 7), conv.fp8_narrow_k if twin is None else None)):
                            if k_block is None:
                                continue
                            with k_block():
                                errs = run(conv_fp8, shape, 256, 3, 1, torch.float16, bias=False, seed=1)
                            assert errs["y"] < FP8_FWD_TOL and errs["dx"] < FP8_GRAD_TOL, (
                                cfg, twin, wpath.__name__, k_block.__name__, shape, "fp8", errs)
    conv._chosen.clear()


@pytest.mark.parametrize("dtype, esize, err, kept", [
    (torch.float16, 2, 5e-3, False),   # 2.5x the fp16 tolerance: a partly wrong tile, dropped (2e-2 kept it)
    (torch.float16, 2, 1e-3, True),    # accumulation order and output rounding: kept
    (torch.bfloat16, 2, 5e-3, True),   # within bf16's own rounding noise: kept
    (torch.bfloat16, 2, 3e-2, False),
    (torch.float16, 1, 5e-3, True),    # fp8 operands: Hopper's fp8 MMA accumulates in reduced precision
    (torch.float16, 1, 3e-2, False),
])
def test_autotune_drops_a_candidate_beyond_its_dtype_tolerance(monkeypatch, dtype, esize, err, kept):
    """Issue 25: a candidate 2e-2 away from the 4-warp reference was accepted for fp16."""
    from kernels import conv

    ref = torch.linspace(1, 2, 64).to(dtype)
    out = ref.clone()
    configs = [(64, 64, 32, 4, 3, (9,)), (128, 256, 64, 8, 3, (9,))]
    bad = (ref.float() * (1 + err * torch.tensor([1.0, -1.0]).repeat(32))).to(dtype)  # relative error ~ err

    def launch(cfg):
        out.copy_(ref if cfg[3] == 4 else bad)
    dev = mock_gpu(monkeypatch, conv)
    import triton.testing
    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, warmup, rep: (fn(), 1.0 if out.equal(ref) else 0.1)[1])
    cfg = conv._select("fwd", ("tol",), configs, 256, 64, launch, dev, output=lambda: out, esize=esize)
    assert (cfg == configs[1][:5]) == kept, (cfg, conv._rejected)
    assert conv.autotune_tolerance(torch.float16) == 2e-3 and conv.autotune_tolerance(torch.bfloat16) == 1e-2


@pytest.mark.parametrize("differs", [False, True])
def test_an_eight_warp_choice_is_checked_even_without_autotuning(monkeypatch, differs):
    """The 128x256 8-warp tile comes first on sm_90 for 256-channel outputs; with autotuning off
    its first use is still compared with a 4-warp candidate (pytorch issue 173068) and dropped
    when it differs."""
    from kernels import conv

    ref = torch.linspace(1, 2, 64)
    out = ref.clone()
    launched = []

    def launch(cfg):
        launched.append(cfg)
        out.copy_(ref * (1.05 if differs and cfg[3] == 8 else 1.0))
    dev = mock_gpu(monkeypatch, conv)
    monkeypatch.setattr(conv, "AUTOTUNE", False)
    # first under triton >= 3.7 (under 3.6 an autotuning candidate only: kernels/conv.py _WIDE_FIRST)
    assert (conv.FWD_CONFIGS[0][:5] == (128, 256, 64, 8, 3)) == conv._WIDE_FIRST
    configs = [conv.GemmConfig(*conv._WIDE), conv.GemmConfig(128, 128, 64, 4, 4, (9,))]
    cfg = conv._select("fwd", ("check",), configs, 256, 64, launch, dev, output=lambda: out)
    assert {c[3] for c in launched} == {4, 8}  # the 4-warp reference ran beside it
    assert cfg == ((128, 128, 64, 4, 4) if differs else (128, 256, 64, 8, 3)), (cfg, conv._rejected)
    assert len(conv._rejected) == int(differs)


WGRAD_CASES = [  # (x shape, out channels, kernel, padding)
    ((2, 20, 5, 5), 17, 3, 1),   # channels not a multiple of any block; 2 pixel chunks summed by a second launch
    ((1, 40, 3, 3), 70, 3, 1),   # 3x3 image: every tap but the centre reads the border
    ((2, 12, 6, 7), 32, 1, 0),   # 1x1: one tap per tile whatever the configuration says
    ((1, 8, 4, 4), 8, 3, 1),     # 16 pixels: one chunk, the gradient written directly (no partials)
    ((2, 24, 7, 9), 64, 3, 1),   # group1.conv1's 24 channels: packed (tap, channel) columns where pinned
    ((1, 136, 3, 3), 130, 3, 1),  # over 128 channels (256-wide tiles apply), a partial channel block and row tile
]


@pytest.mark.parametrize("index", range(len(kernels.conv.WGRAD_CONFIGS)))
def test_every_weight_grad_configuration_against_the_reference(index):
    """Each weight-grad configuration pinned in turn (tiles of one tap, a kernel row, all nine taps),
    on odd shapes, against torch's weight gradient: the shifted x chunks land on the right taps."""
    from kernels import conv
    cfg = conv.WGRAD_CONFIGS[index]
    g = torch.Generator().manual_seed(index)
    with conv.WGRAD_CONFIGS.pinned(cfg):
        for shape, co, k, pad in WGRAD_CASES:
            x = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
            oh, ow = shape[2] + 2 * pad - k + 1, shape[3] + 2 * pad - k + 1
            dy = torch.randn(shape[0], co, oh, ow, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
            dw = conv.conv2d_wgrad(dy, x, [co, shape[1], k, k], pad)
            ref = torch.nn.grad.conv2d_weight(x, (co, shape[1], k, k), dy, padding=pad)
            assert rel(dw, ref) < TOL[torch.float32], (cfg, shape, rel(dw, ref))
            assert dw.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", [
    ((2, 24, 9, 9), 64, 3, 1, "channels_last"),  # 216 columns: one 256-wide tile (40 masked), two of 128
    ((3, 40, 5, 6), 70, 3, 1, "channels_last"),  # 360 columns: a partial last column tile; 2 row tiles (70 > 64)
    ((2, 24, 6, 7), 64, 3, 1, "strided"),        # non-contiguous input
    ((2, 24, 8, 8), 64, 5, 2, "channels_last"),  # 5x5: 600 columns, 25 taps
    ((1, 24, 3, 3), 64, 3, 1, "channels_last"),  # 3x3 image: every tap but the centre at the border
], ids=lambda c: f"{'x'.join(map(str, c[0]))}-co{c[1]}-k{c[2]}-{c[4]}")
def test_weight_grad_packed_columns(monkeypatch, case, dtype):
    """The weight-grad's tile over packed (tap, channel) columns (WGRAD_PACKED; pinned here, as the interpreter
    takes the last candidate): the weight gradient F.conv2d's autograd gives, and the same tap by tap."""
    from kernels import _triton, conv
    shape, co, k, pad, layout = case
    orig_launch, seen = _triton.launch, []

    def launch(fn, grid, args, meta, dev, **kw):
        if fn is conv._wgrad_kernel:
            seen.append(dict(pack=meta.get("PACK", 0), bn=meta["BLOCK_N"], grid=tuple(grid)))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    for cfg in (c for c in conv.WGRAD_CONFIGS if c.taps == conv.WGRAD_PACKED):
        seen.clear()
        with conv.WGRAD_CONFIGS.pinned(cfg):
            errs = run(conv_triton, shape, co, k, pad, dtype, layout=layout)
            assert errs["dw"] < TOL[dtype], (cfg, errs)
            ncol = k * k * shape[1]
            assert len(seen) == 1 and seen[0]["pack"] == 1 and seen[0]["bn"] == cfg.block_n, seen
            assert seen[0]["grid"][0] == -(-co // 64) * -(-ncol // cfg.block_n), seen  # row tiles x column tiles
            seen.clear()
            with conv.taps_apart():
                errs = run(conv_triton, shape, co, k, pad, dtype, layout=layout)
            assert errs["dw"] < TOL[dtype] and seen and not seen[0]["pack"], (errs, seen)


def test_weight_grad_packed_columns_with_64_bit_offsets(monkeypatch):
    from kernels import _triton, conv
    monkeypatch.setattr(conv, "_chosen", {})
    orig_launch, seen = _triton.launch, []

    def launch(fn, grid, args, meta, dev, **kw):
        if fn is conv._wgrad_kernel:
            seen.append((meta.get("PACK", 0), meta["IDX64"]))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    g = torch.Generator().manual_seed(3)
    x = torch.randn((2, 24, 6, 7), generator=g).contiguous(memory_format=torch.channels_last)
    dy = torch.randn((2, 64, 6, 7), generator=g).contiguous(memory_format=torch.channels_last)
    monkeypatch.setattr(conv, "_span", lambda t: 2 ** 31)  # 64-bit offsets forced
    with conv.WGRAD_CONFIGS.pinned(conv.WGRAD_CONFIGS[0]):
        dw = conv.conv2d_wgrad(dy, x, [64, 24, 3, 3], 1)
    monkeypatch.undo()
    ref = torch.nn.grad.conv2d_weight(x, (64, 24, 3, 3), dy, padding=1)
    assert rel(dw, ref) < TOL[torch.float32] and seen == [(1, True)], seen


def test_which_weight_grads_pack_their_columns():
    from kernels import conv
    assert conv._wgrad_packs(24, 3, 3, 8) and conv._wgrad_packs(40, 3, 3, 4)
    assert not conv._wgrad_packs(64, 3, 3, 8)   # whole 32-wide blocks already
    assert not conv._wgrad_packs(24, 1, 1, 8)   # one tap
    assert not conv._wgrad_packs(20, 3, 3, 8)   # a vector would straddle two taps
    with conv.taps_apart():
        assert not conv._wgrad_packs(24, 3, 3, 8)


def test_weight_grad_taps_per_tile():
    from kernels.conv import _wgrad_taps
    assert _wgrad_taps(9, 3, 3) == 9 and _wgrad_taps(3, 3, 3) == 3 and _wgrad_taps(1, 3, 3) == 1
    assert _wgrad_taps(9, 1, 1) == 1 and _wgrad_taps(9, 2, 2) == 4 and _wgrad_taps(3, 2, 2) == 1



def _smem(kind, cfg, esize):
    """Shared memory the pipelined operand tiles take: stages x (A tile + B tile(s)) x element size
    (the weight-grad's B spans its taps). The first GPU run's OutOfResources figures match it."""
    bm, bn, bk, _, stages = cfg[:5]
    taps = cfg[5] if kind == "wgrad" else 1
    return stages * (bm * bk + bk * bn * taps) * esize


@pytest.mark.parametrize("kind, cands, esize", [
    ("wgrad", [(64, 32, 64, 4, 3, 9)], 4),                           # 270336 bytes in fp32 (H200, 2026-11-30)
    ("wgrad", [(64, 64, 32, 8, 3, 9), (64, 32, 64, 4, 3, 9)], 4),    # 245760 and 270336
    ("fwd", [(128, 128, 64, 4, 4), (128, 64, 32, 4, 4)], 4),         # 262144, then one that fits
    ("fwd", [(128, 128, 64, 4, 4)], 2),                              # fp16: fits as listed
])
def test_the_chosen_configuration_fits_the_gpus_shared_memory(monkeypatch, kind, cands, esize):
    """fp32 doubles every tile's bytes: the first GPU run (H200) found fp32 convs failing with
    OutOfResources (270336 bytes of shared memory asked, 232448 there). A candidate that does not
    fit is dropped, or, where none fits, run with fewer pipeline stages."""
    from kernels import conv

    dev = mock_gpu(monkeypatch, conv)
    monkeypatch.setattr(conv, "AUTOTUNE", False)
    cfg = conv._select(kind, ("smem", esize), [], 256, 64, lambda c: None, dev, cands=list(cands), esize=esize)
    assert _smem(kind, cfg, esize) <= H100_SMEM, cfg
    assert cfg[:4] == cands[0][:4] or _smem(kind, cands[0], esize) > H100_SMEM, cfg  # the first kept if it fits
    if _smem(kind, cands[0], esize) <= H100_SMEM:
        assert cfg == cands[0]


def test_a_launch_out_of_shared_memory_retries_with_fewer_stages(monkeypatch):
    """Where the compiler needs more shared memory than the estimate (an epilogue's scratch), the
    launch's OutOfResources is not the user's error: the same tile runs with one stage fewer, and
    that choice is kept for the shape."""
    from triton.runtime.errors import OutOfResources
    from kernels import conv
    tried = []

    def launch(cfg):
        tried.append(cfg)
        if cfg[4] > 2:
            raise OutOfResources(300000, H100_SMEM, "shared memory")
    monkeypatch.setattr(conv, "_chosen", {("fwd", "k"): (128, 128, 64, 4, 4, conv.A_VIA_L1)})
    cfg = conv._run_chosen(("fwd", "k"), (128, 128, 64, 4, 4, conv.A_VIA_L1), launch)
    assert cfg == (128, 128, 64, 4, 2, conv.A_VIA_L1) and conv._chosen[("fwd", "k")] == cfg
    assert [c[4] for c in tried] == [4, 3, 2]
    with pytest.raises(OutOfResources):  # one stage and still too large: the compiler's error stands
        conv._run_chosen(("fwd", "k2"), (128, 128, 64, 4, 1), launch=lambda c: launch((0, 0, 0, 0, 9)))


@pytest.mark.parametrize("allow_tf32, want", [(True, "tf32"), (False, "ieee")])
def test_fp32_convs_follow_cudnns_tf32_switch(monkeypatch, allow_tf32, want):
    """In fp32, F.conv2d on a GPU runs in TF32 unless torch.backends.cudnn.allow_tf32 is off; the
    Triton convs do the same (tl.dot's input_precision), so swapping eager for triton keeps the
    numerics the user asked for. The first GPU run found fp32 kernel tests 3e-4 to 8e-2 off a
    1e-5 tolerance: both sides had run in TF32. fp16 is never changed."""
    from kernels import _triton, conv
    orig_launch, precs = _triton.launch, []

    def launch(fn, grid, args, meta, dev, **kw):
        if fn in (conv._conv_kernel, conv._wgrad_kernel, conv._conv_small_kernel):
            precs.append((fn.__name__, meta.get("DOT_PREC")))
        return orig_launch(fn, grid, args, meta, dev, **kw)
    monkeypatch.setattr(_triton, "launch", launch)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow_tf32)
    monkeypatch.setattr(conv, "_chosen", {})
    run(conv_triton, (2, 16, 5, 6), 24, 3, 1, torch.float32)
    run(conv_triton, (2, 3, 6, 6), 8, 2, 0, torch.float32)  # the whitening conv's small kernel
    assert {p for _, p in precs} == {want} and len({n for n, _ in precs}) == 3, precs
    precs.clear()
    run(conv_triton, (2, 16, 5, 6), 24, 3, 1, torch.float16)
    assert {p for _, p in precs} == {"tf32"}, precs  # the default: ignored for fp16 operands


# ------------------------------------------------------------------------- offsets past 2^31
# A child process (the test reads its exit status and last line): a 32-bit offset that wraps there reads or
# writes 4 GiB below the tensor, which crashes the interpreter (a GPU faults: an illegal address).
_PAST_2_31 = r'''
import json, sys, torch, torch.nn.functional as F
import kernels
from kernels import conv
DEV = "cuda" if torch.cuda.is_available() else "cpu"
S = 2 ** 30 + 2 ** 10  # an image's stride: the third image starts past 2^31 elements


def far(vals):
    """vals (N, C, H, W) as channels_last images S elements apart in a buffer allocated, not written (the
    pages the view never touches cost nothing), so that the last image's offsets need 64 bits"""
    N, C, H, W = vals.shape
    t = torch.empty((N - 1) * S + H * W * C, dtype=vals.dtype, device=DEV).as_strided((N, C, H, W), (S, 1, W * C, C))
    return t.copy_(vals)


def rel(a, b):
    return ((a.float().cpu() - b.float()).norm() / b.float().norm()).item()


g = torch.Generator().manual_seed(0)
dt = torch.float16
xs = torch.randn(3, 5, 4, 6, generator=g).to(dt)
w = (torch.randn(7, 5, 3, 3, generator=g) * 0.3).to(dt).contiguous(memory_format=torch.channels_last)
dys = torch.randn(3, 7, 4, 6, generator=g).to(dt)
xr, wr = xs.float().requires_grad_(), w.float().requires_grad_()
yr = F.conv2d(xr, wr, None, padding=1)
yr.backward(dys.float())
x, wd = far(xs), w.to(DEV)
errs = {}
for step in sys.argv[1:]:
    print(step, flush=True)  # the step a crash stopped in: the last line of stdout
    if step == "fwd":  # the activation's rows (the main loop's A operand)
        errs[step] = rel(conv.conv2d_fwd(x, wd, None, 1), yr)
    elif step == "fwd_out":  # the output's rows (the epilogue's stores)
        y = far(torch.zeros(3, 7, 4, 6, dtype=dt))
        conv._launch_conv(x, wd, None, y, 4, 6, 4, 6, 5, 7, 3, 3, 1, False, 0, "fwd")
        errs[step] = rel(y, yr)
    elif step == "dgrad":  # the output gradient's rows
        errs[step] = rel(conv.conv2d_dgrad(far(dys), wd, list(xs.shape), 1), xr.grad)
    elif step == "wgrad":  # x and dy in the weight-grad
        errs[step] = rel(conv.conv2d_wgrad(far(dys), x, list(w.shape), 1), wr.grad)
print(json.dumps(errs))
'''


@pytest.mark.parametrize("steps", [("fwd", "fwd_out", "dgrad"), ("wgrad",)], ids="-".join)
def test_offsets_past_2_31_elements(steps):
    """Tensors whose elements lie more than 2^31 apart (a strided view: few elements, a large span) get
    64-bit offsets in the forward's rows and stores, the input-grad's and the weight-grad's: their results
    match F.conv2d's. The weight-grad chose them by its tensors' element counts, not their spans, and
    read 4 GiB below x there (found by this test)."""
    import json
    import os
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", _PAST_2_31, *steps], capture_output=True, text=True, timeout=900,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    last = (p.stdout.strip().splitlines() or ["(nothing)"])[-1]
    assert p.returncode == 0, f"the child process ended with {p.returncode} in step {last}: {p.stderr[-1500:]}"
    errs = json.loads(last)
    assert set(errs) == set(steps) and max(errs.values()) < TOL[torch.float16], errs


@pytest.mark.parametrize("ci, want", [(256, (128, 256, 8, 1)), (64, (128, 64, 8, 3))])
def test_hoppers_weight_grad_takes_one_tap_per_wide_tile_where_a_tap_has_256_channels(monkeypatch, ci, want):
    """Without autotuning, sm_90's weight-grad of a 256-channel input (group2.conv2, group3) is one tap per
    128x256 tile at 8 warps (tensor-core bound in the static model where 3 taps of 64 channels are shared-memory
    bound); a 64-channel input keeps the 3-tap 128x64 tiles. The launches are recorded, not run."""
    from kernels import _triton, conv
    mock_gpu(monkeypatch, conv)
    monkeypatch.setattr(conv, "AUTOTUNE", False)
    seen = []
    x = torch.empty(4, ci, 7, 7).contiguous(memory_format=torch.channels_last)
    dy = torch.empty(4, 256, 7, 7).contiguous(memory_format=torch.channels_last)
    with _triton.recording(lambda kernel, grid, args, meta: seen.append((kernel, meta)), sms=132):
        conv.conv2d_wgrad(dy, x, [256, ci, 3, 3], 1)
    metas = [m for k, m in seen if k is conv._wgrad_kernel]
    assert metas and {(m["BLOCK_M"], m["BLOCK_N"], m["num_warps"], m["TAPS"]) for m in metas} == {want}, metas
