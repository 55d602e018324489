"""Triton maxpool against F.max_pool2d, forward and backward, ties and NaN included."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.maxpool import maxpool_triton, maxpool_triton_recompute

DEV = "cuda" if torch.cuda.is_available() else "cpu"
IMPLS = {"triton": maxpool_triton, "triton_recompute": maxpool_triton_recompute}


def make(shape, dtype, layout, ties=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 3, shape, generator=g).float() if ties else torch.randn(shape, generator=g)
    x = x.to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.cat([x, x], dim=3)[..., ::2]  # not dense in any format
    return x.to(DEV)


def check(x, k, impl="triton"):
    xt = x.detach().clone().requires_grad_()
    xr = x.detach().clone().requires_grad_()
    yt = IMPLS[impl](xt, k)
    yr = F.max_pool2d(xr, k)
    assert yt.shape == yr.shape and yt.dtype == yr.dtype
    torch.testing.assert_close(yt, yr, rtol=0, atol=0, equal_nan=True)  # max is exact
    dy = torch.randn(yr.shape, generator=torch.Generator().manual_seed(1)).to(x.dtype).to(DEV)
    yt.backward(dy)
    yr.backward(dy)
    assert torch.equal(xt.grad, xr.grad), (xt.grad - xr.grad).abs().max()
    return yt, xt.grad


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_forward_backward(k, dtype, layout, impl):
    check(make((2, 5, 7, 9), dtype, layout), k, impl)


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("shape", [(1, 3, 6, 6), (2, 70, 5, 4), (3, 4, 31, 31), (2, 2, 3, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("k", [2, 3])
def test_shapes(shape, k, impl):
    check(make(shape, torch.float32, "channels_last"), k, impl)


@pytest.mark.parametrize("impl", sorted(IMPLS))
@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_ties_go_to_the_first_maximum(k, layout, impl):
    x = make((2, 4, 6, 7), torch.float16, layout, ties=True)
    _, grad = check(x, k, impl)
    # the all-equal window: only its first element receives the gradient
    z = torch.zeros(1, 1, k, k, device=DEV).requires_grad_()
    IMPLS[impl](z, k).backward(torch.ones(1, 1, 1, 1, device=DEV))
    expect = torch.zeros(k, k, device=DEV)
    expect[0, 0] = 1
    assert torch.equal(z.grad[0, 0], expect)


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_nan_propagates_like_reference(impl):
    x = make((1, 2, 4, 4), torch.float32, "channels_last")
    x[0, 0, 0, 1] = float("nan")
    x[0, 0, 1, 0] = float("nan")
    y = IMPLS[impl](x, 2)
    assert torch.isnan(y[0, 0, 0, 0]) and not torch.isnan(y[0, 1]).any()
    check(x, 2, impl)  # gradient lands on the same (last) NaN as the reference's


@pytest.mark.parametrize("impl", sorted(IMPLS))
def test_non_contiguous_input(impl):
    check(make((2, 3, 6, 8), torch.float32, "strided"), 2, impl)


def _saved(fn, x):
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn(x.detach().clone().requires_grad_(), 2)
    return saved


def test_what_each_design_saves_for_the_backward():
    x = make((2, 3, 8, 8), torch.float32, "channels_last")
    # the index design keeps one uint8 per output and not the input; recompute keeps the input only;
    # the reference keeps the input and an int64 index per output
    ours = _saved(maxpool_triton, x)
    assert len(ours) == 1 and ours[0].dtype == torch.uint8 and ours[0].shape == (2, 3, 4, 4)
    assert ours[0].is_contiguous(memory_format=torch.channels_last)
    recompute = _saved(maxpool_triton_recompute, x)
    assert len(recompute) == 1 and recompute[0].shape == x.shape and recompute[0].dtype == x.dtype
    assert any(t.dtype == torch.int64 for t in _saved(F.max_pool2d, x))


def test_index_records_the_winning_window_element():
    from kernels.maxpool import maxpool_fwd_index
    x = make((2, 3, 6, 9), torch.float32, "channels_last")
    y, idx = maxpool_fwd_index(x, 3)
    _, ref = F.max_pool2d(x, 3, return_indices=True)  # flat index into H*W
    hw = ref.cpu()
    h, w = hw // x.shape[3], hw % x.shape[3]
    local = (h % 3) * 3 + (w % 3)
    assert torch.equal(idx.cpu().long(), local)


def test_registered():
    assert kernels.get("maxpool", "triton") is maxpool_triton
    assert kernels.get("maxpool", "triton_recompute") is maxpool_triton_recompute
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
