"""Triton maxpool against F.max_pool2d, forward and backward, ties and NaN included."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.maxpool import maxpool_triton

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def make(shape, dtype, layout, ties=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    x = x.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.cat([x, x], dim=3)[..., ::2]  # not dense in any format
    return x.to(DEV)


def check(x, k):
    xt = x.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    yt = maxpool_triton(xt, k)
    yr = F.max_pool2d(xr, k)
    assert yt.shape == yr.shape and yt.dtype == yr.dtype
    torch.testing.assert_close(yt, yr, rtol=0, atol=0, equal_nan=True)  # max is exact
    dy = torch.randn(yr.shape, generator=torch.Generator().manual_seed(1)).to(x.dtype).to(DEV)
    yt.backward(dy)
    yr.backward(dy)
    assert torch.equal(xt.grad, xr.grad), (xt.grad - xr.grad).abs().max()
    return yt, xt.grad


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward_backward(k, dtype, layout):
    check(make((2, 5, 7, 9), dtype, layout), k)


@pytest.mark.parametrize("shape", [(1, 3, 6, 6), (2, 70, 5, 4), (3, 4, 31, 31), (2, 2, 3, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("k", [2, 3])
def test_shapes(shape, k):
    check(make(shape, torch.float32, "channels_last"), k)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_ties_go_to_the_first_maximum(k, layout):
    x = make((2, 4, 6, 7), torch.float16, layout, ties=True)
    _, grad = check(x, k)
    # the all-equal window: only its first element receives the gradient
    z = torch.zeros(1, 1, k, k, device=DEV).requires_grad_()
    maxpool_triton(z, k).backward(torch.ones(1, 1, 1, 1, device=DEV))
    expect = torch.zeros(k, k, device=DEV)
    expect[0, 0] = 1
    assert torch.equal(z.grad[0, 0], expect)


def test_nan_propagates_like_reference():
    x = make((1, 2, 4, 4), torch.float32, "channels_last")
    x[0, 0, 0, 1] = float("nan")
    x[0, 0, 1, 0] = float("nan")
    y = maxpool_triton(x, 2)
    assert torch.isnan(y[0, 0, 0, 0]) and not torch.isnan(y[0, 1]).any()
    check(x, 2)  # gradient lands on the same (last) NaN as the reference's


def test_non_contiguous_input():
    check(make((2, 3, 6, 8), torch.float32, "strided"), 2)


def test_no_index_tensor_saved():
    x = make((2, 3, 8, 8), torch.float32, "channels_last").requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        maxpool_triton(x, 2)
        F.max_pool2d(x.detach().clone().requires_grad_(), 2)
    ours, ref = saved[:-2], saved[-2:]
    # ours keeps the input only; the reference keeps the input and an int64 index per output
    assert len(ours) == 1 and ours[0].shape == x.shape and ours[0].dtype == x.dtype
    assert any(t.dtype == torch.int64 for t in ref)


def test_registered():
    assert kernels.get("maxpool", "triton") is maxpool_triton
    assert kernels.resolve_names("triton")["maxpool"] == "triton"


def test_errors_are_clear():
    x = torch.randn(1, 2, 6, 6, device=DEV)
    with pytest.raises(ValueError, match="kernel_size 4 not supported"):
        maxpool_triton(x, 4)
    with pytest.raises(ValueError, match="only stride == kernel_size"):
        maxpool_triton(x, 2, 1)
    with pytest.raises(ValueError, match="smaller than the 3x3 window"):
        maxpool_triton(x[:, :, :2], 3)
    with pytest.raises(TypeError, match="dtype torch.int32"):
        maxpool_triton(x.int(), 2)
    with pytest.raises(ValueError, match="must be 4-D"):
        maxpool_triton(x[0], 2)
