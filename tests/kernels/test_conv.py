"""Triton conv (implicit GEMM) against F.conv2d: forward, input-grad, weight-grad, bias-grad.

In the Triton interpreter (CPU) tl.dot is exact for fp32, fp16 and fp8 but returns garbage for
bf16, so the bf16 case runs only where a GPU compiles the kernels.
"""
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
]


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


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


# ----------------------------------------------------------------------------------- fp8
@pytest.mark.parametrize("case", CASES[2:], ids=lambda c: f"{'x'.join(map(str, c[0]))}")
def test_fp8_matches_the_conv_of_its_quantized_operands(case):
    shape, co, k, pad = case
    shape = (shape[0], 40) + shape[2:]  # >= 32 input channels: the fp8 path proper
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last).to(DEV)
    w = (torch.randn(co, 40, k, k, generator=g) * 0.3).contiguous(memory_format=torch.channels_last).to(DEV)
    y = conv_fp8(x, w, None, pad)
    xq, sx = quantize_fp8(x, FP8_FWD)
    wq, sw = quantize_fp8(w, FP8_FWD)
    ref_q = F.conv2d(xq.float() * sx, wq.float() * sw, padding=pad)
    assert rel(y, ref_q) < FP8_KERNEL_TOL  # the kernel itself, apart from quantisation
    assert rel(y, F.conv2d(x, w, padding=pad)) < 0.06  # e4m3 quantisation: ~3% measured


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_fp8_forward_backward_against_fp32(dtype):
    errs = run(conv_fp8, (2, 40, 5, 5), 33, 3, 1, dtype)
    # e4m3 forward ~3%, e5m2 gradients ~6% (measured); bias grad is exact (no fp8 involved)
    assert errs["y"] < 0.06 and errs["dx"] < 0.12 and errs["dw"] < 0.12 and errs["db"] < 5e-3, errs


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
    conv._chosen[fwd_key] = conv.FWD_CONFIGS[1]
    conv._chosen[("wgrad", (2000, 64, 16, 16), 256, 3, 3, 1, "torch.float16")] = conv.WGRAD_CONFIGS[0]
    path = str(tmp_path / "choices.json")
    assert conv.save_choices(path) == 2
    conv._chosen.clear()
    assert conv.load_choices(path) == 2
    assert conv._chosen[fwd_key] == conv.FWD_CONFIGS[1]
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
