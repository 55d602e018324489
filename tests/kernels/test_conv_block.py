"""The fused conv block (kernels/conv_block.py, issue 23) against the unfused composition of the
eager ops, forward and backward: conv -> [max-pool 2] -> BatchNorm (batch statistics) -> activation.
Odd spatial sizes (the pool drops a row and a column), channel counts that are not a multiple of
the tile, batch 1, fp32 and fp16, train and eval; the running statistics and every gradient."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import conv_block as cb

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def cl(t):
    return t.contiguous(memory_format=torch.channels_last).to(DEV)


def inputs(n, cin, h, w, cout, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = cl(torch.randn(n, cin, h, w, generator=g).to(dtype))
    wt = cl((torch.randn(cout, cin, 3, 3, generator=g) * 0.2).to(dtype))
    rm = (torch.randn(cout, generator=g) * 0.1).to(DEV)
    rv = (torch.rand(cout, generator=g) + 0.5).to(DEV)
    bw = (torch.rand(cout, generator=g) + 0.5).to(DEV)
    bb = (torch.randn(cout, generator=g) * 0.1).to(DEV)
    return x, wt, rm, rv, bw, bb


def run(fn, x, w, rm, rv, bw, bb, training, act, pool, dy, upcast=False):
    """Outputs, gradients (x, w, bn weight, bn bias) and the running statistics after one call."""
    x, w = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    bw, bb = bw.detach().clone().requires_grad_(), bb.detach().clone().requires_grad_()
    rm, rv = rm.clone(), rv.clone()
    if upcast:  # the reference in fp32 from the same fp16 values, rounded like the fused output
        out = fn(x.float(), w.float(), rm, rv, bw, bb, training, 0.4, 1e-5, act, pool).to(x.dtype)
    else:
        out = fn(x, w, rm, rv, bw, bb, training, 0.4, 1e-5, act, pool)
    if not training:
        return [out, rm, rv]
    out.backward(dy)
    return [out, x.grad, w.grad, bw.grad, bb.grad, rm, rv]


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12)).item()


CASES = [  # n, cin, h, w, cout, pool, activation
    (2, 24, 7, 7, 40, True, "gelu"),        # odd size: 7x7 pools to 3x3; 40 output channels (not a tile)
    (1, 32, 5, 6, 24, True, "silu"),        # batch 1, odd height only
    (3, 16, 6, 6, 16, False, "gelu"),       # the second block of a group: no pool
    (2, 8, 4, 5, 8, False, "identity"),     # airbench96's third block: no activation
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("n, cin, h, w, cout, pool, act", CASES)
def test_fused_block_matches_the_composition(n, cin, h, w, cout, pool, act, dtype):
    x, wt, rm, rv, bw, bb = inputs(n, cin, h, w, cout, dtype)
    out_shape = (n, cout, h // 2, w // 2) if pool else (n, cout, h, w)
    dy = cl(torch.randn(out_shape, generator=torch.Generator().manual_seed(1)).to(dtype))
    upcast = dtype == torch.float16
    tol = 2e-3 if dtype == torch.float16 else 1e-5
    for training in (True, False):
        got = run(cb.conv_block_fused, x, wt, rm, rv, bw, bb, training, act, pool, dy)
        ref = run(cb.conv_block_eager, x, wt, rm, rv, bw, bb, training, act, pool, dy, upcast)
        assert got[0].shape == out_shape and got[0].dtype == dtype
        assert got[0].is_contiguous(memory_format=torch.channels_last)
        names = ["out", "dx", "dw", "d bn weight", "d bn bias", "running_mean", "running_var"] if training \
            else ["out", "running_mean", "running_var"]
        for name, a, b in zip(names, got, ref):
            assert a.dtype == b.dtype, name
            assert rel(a, b) < tol, (name, training, rel(a, b))


def test_pool_ties_and_index_route_the_gradient_as_the_unfused_pool():
    """All-equal conv outputs (x = 0): every window ties; the first element in scan order wins, so
    the gradient reaches conv1 exactly where F.max_pool2d's does."""
    x = cl(torch.zeros(2, 8, 6, 6))
    w = cl(torch.randn(8, 8, 3, 3) * 0.2)
    y, idx, mean, var = cb.conv2d_fwd_fused(x, w, 1, True, True)
    assert idx.dtype == torch.uint8 and idx.shape == (2, 8, 3, 3) and int(idx.max()) == 0
    assert torch.equal(mean, torch.zeros(8, device=DEV)) and torch.equal(var, torch.zeros(8, device=DEV))
    # a strict maximum anywhere in the window is found, and its position recorded
    g = torch.Generator().manual_seed(3)
    x = cl(torch.randn(2, 8, 6, 6, generator=g))
    y, idx, _, _ = cb.conv2d_fwd_fused(x, w, 1, True, False)
    full = F.conv2d(x, w, padding=1)
    ref, where = F.max_pool2d(full, 2, return_indices=True)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    win = ((where // 6) % 2) * 2 + (where % 6) % 2
    assert torch.equal(idx.long(), win)


@pytest.mark.parametrize("h, w, affine", [(7, 7, True), (6, 5, False), (4, 4, True)])
def test_bn_dx_scatters_through_the_pool_index(h, w, affine):
    """bn_act_pool_bwd (BatchNorm's dx pass writing the full-size gradient through the pool's index)
    equals bn_act's backward followed by the pool's, element for element: the winner gets the
    gradient, the other three pixels and the row / column an odd size drops get zeros, whatever the
    memory held before (the allocator's previous block is filled with NaN first)."""
    from kernels import bn_act, maxpool
    g = torch.Generator().manual_seed(7)
    C = 12
    full = cl(torch.randn(2, C, h, w, generator=g))
    y, idx = maxpool.maxpool_fwd_index(full, 2)
    mean, var = y.mean((0, 2, 3)), y.var((0, 2, 3), unbiased=False)
    bw, bb = ((torch.rand(C, generator=g) + 0.5).to(DEV), torch.randn(C, generator=g).to(DEV)) if affine else (None, None)
    dy = cl(torch.randn(y.shape, generator=g))
    ref_pooled, ref_dw, ref_db = bn_act.bn_act_bwd(dy, y, mean, var, bw, bb, True, 1e-5, "gelu")
    ref = maxpool.maxpool_bwd_index(ref_pooled, idx, list(full.shape), list(full.stride()), 2)
    dirty = torch.full_like(full, float("nan"))
    del dirty
    got, dw, db = cb.bn_act_pool_bwd(dy, y, idx, mean, var, bw, bb, 1e-5, "gelu", list(full.shape))
    assert got.shape == full.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert int((got != 0).sum()) <= y.numel()  # one winner per window at most
    if h % 2:
        assert torch.equal(got[:, :, -1], torch.zeros_like(got[:, :, -1]))
    if w % 2:
        assert torch.equal(got[..., -1], torch.zeros_like(got[..., -1]))
    torch.testing.assert_close(dw, ref_dw)
    torch.testing.assert_close(db, ref_db)
    # any layout of the pooled inputs gives the same gradient (the op makes them channels_last)
    nchw = [t.contiguous() for t in (dy, y, idx)]
    again, _, _ = cb.bn_act_pool_bwd(nchw[0], nchw[1], nchw[2], mean, var, bw, bb, 1e-5, "gelu", list(full.shape))
    torch.testing.assert_close(again, got, rtol=0, atol=0)


def test_statistics_have_no_cancellation_at_a_large_mean():
    """Outputs of mean ~1000 and std ~1: the tile partials (deviations from each tile's own mean,
    merged pairwise) keep the variance exact where sum-of-squares minus squared sum in fp32 would
    lose it (1000^2 * 2^-24 ~ 0.06 per element of error budget, 6% of the variance)."""
    g = torch.Generator().manual_seed(0)
    x = cl(torch.randn(4, 16, 8, 8, generator=g) * 0.05 + 1.0)
    w = cl(torch.full((8, 16, 3, 3), 1000.0 / (16 * 9)) + torch.randn(8, 16, 3, 3, generator=g) * 0.01)
    for pool in (False, True):
        y, _, mean, var = cb.conv2d_fwd_fused(x, w, 1, pool, True)
        y64 = y.double()
        torch.testing.assert_close(mean.double(), y64.mean((0, 2, 3)), rtol=1e-6, atol=1e-4)
        torch.testing.assert_close(var.double(), y64.var((0, 2, 3), unbiased=False), rtol=1e-4, atol=1e-6)
        assert float(y64.mean()) > 300  # the case is the one it claims to be


def test_merge_over_several_programs(monkeypatch):
    """The two-level merge (each program a chunk of tiles, the last program the chunks) equals the
    one-program merge and torch's statistics."""
    x, w, *_ = inputs(4, 16, 12, 12, 24, torch.float32, seed=5)
    one = cb.conv2d_fwd_fused(x, w, 1, False, True)
    seen = []
    real = cb._triton.launch
    monkeypatch.setattr(cb._triton, "launch", lambda fn, grid, *a, **k: (seen.append(grid), real(fn, grid, *a, **k)))
    monkeypatch.setattr(cb, "MERGE_MIN_CHUNK", 4)
    monkeypatch.setattr(cb, "MERGE_BLOCK_P", 2)   # a chunk spans two blocks of partials
    monkeypatch.setattr(cb, "interpreting", lambda: False)
    many = cb.conv2d_fwd_fused(x, w, 1, False, True)
    assert seen[-1][0] >= 2, seen  # the merge ran on several programs
    torch.testing.assert_close(many[2], one[2], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(many[3], one[3], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(many[3], one[0].double().var((0, 2, 3), unbiased=False).float(), rtol=1e-5, atol=1e-6)


def test_running_statistics_update_in_their_own_dtype():
    """hiverge keeps BatchNorm in fp16: the running statistics stay fp16, updated like bn_act's."""
    x, w, rm, rv, bw, bb = inputs(2, 8, 6, 6, 8, torch.float16)
    rm16, rv16 = rm.half(), rv.half()
    rm_ref, rv_ref = rm16.clone(), rv16.clone()
    cb.conv_block_fused(x, w, rm16, rv16, bw.half(), bb.half(), True, 0.4, 1e-5, "gelu", False)
    y = F.conv2d(x.float(), w.float(), padding=1).half().float()
    n = y.numel() // 8
    exp_m = 0.6 * rm_ref.float() + 0.4 * y.mean((0, 2, 3))
    exp_v = 0.6 * rv_ref.float() + 0.4 * y.var((0, 2, 3), unbiased=False) * n / (n - 1)
    assert rm16.dtype == torch.float16 and rv16.dtype == torch.float16
    torch.testing.assert_close(rm16.float(), exp_m, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(rv16.float(), exp_v, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("bad, match", [
    (dict(activation="relu"), "activation"),
    (dict(w_shape=(8, 8, 2, 2)), "square with an odd size"),
    (dict(rm_len=5), "running_mean must have 8"),
    (dict(x_dtype=torch.int32), "dtype"),
    (dict(training=False, rm_len=None), "eval mode"),
])
def test_bad_input_is_a_clear_error(bad, match):
    x = cl(torch.randn(2, 8, 6, 6)).to(bad.get("x_dtype", torch.float32))
    w = cl(torch.randn(*bad.get("w_shape", (8, 8, 3, 3))))
    n = bad.get("rm_len", 8)
    rm = torch.zeros(n, device=DEV) if n else None
    rv = torch.ones(8, device=DEV) if n else None
    with pytest.raises((ValueError, TypeError), match=match):
        cb.conv_block_fused(x, w, rm, rv, None, None, bad.get("training", True), 0.4, 1e-5,
                            bad.get("activation", "gelu"), True)


def test_registry_and_backend():
    assert kernels.impls("conv_block") == ["eager", "triton_fused"]
    assert kernels.resolve_names("fused")["conv_block"] == "triton_fused"
    # every other backend composes its own conv / maxpool / bn_act for the blocks
    for b in kernels.backends():
        if b != "fused":
            assert getattr(kernels.resolve(b)["conv_block"], "composes", False), b
    assert kernels.resolve_names("triton", {"conv_block": "triton_fused"})["conv_block"] == "triton_fused"
