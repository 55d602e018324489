"""Triton bn_act against the eager reference (F.batch_norm + F.gelu/F.silu), forward and backward.

On a CPU these run in the Triton interpreter (kernels/_triton.py switches it on), on a GPU as
compiled kernels; the same assertions hold in both.
"""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.bn_act import bn_act_eager, bn_act_triton

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# tolerance on outputs/grads relative to the fp32 reference's scale, per input dtype
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def reference(x, rm, rv, w, b, training, momentum, eps, activation):
    """fp32 eager reference on the same (possibly half-precision) input values: kernels' bn_act_eager
    (F.batch_norm + the activation; a bias without a weight is added after it, which CUDA's
    batch-norm backward cannot take)."""
    return bn_act_eager(x.float(), rm, rv, w if w is None else w.float(), b if b is None else b.float(),
                        training, momentum, eps, activation)


def make_input(shape, dtype, layout, seed=0, scale=2.0, shift=0.5):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale + shift).to(dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":  # a non-contiguous view: every other column of a wider tensor
        wide = torch.zeros(shape[:3] + (2 * shape[3],), dtype=dtype)
        wide[..., ::2] = x
        x = wide[..., ::2]
        assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":  # NHWC memory presented as NCHW but not dense channels_last either
        x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)[:, :, :, :]
    return x.to(DEV)


def close(a, b, dtype, what):
    scale = max(b.abs().max().item(), 1.0)
    err = (a.float() - b.float()).abs().max().item()
    assert err <= TOL[dtype] * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g}, dtype {dtype})"


def run_both(shape, dtype, layout, training=True, activation="gelu", affine=(True, True), momentum=0.4,
             eps=1e-5, seed=0, scale=2.0, shift=0.5):
    C = shape[1]
    x = make_input(shape, dtype, layout, seed, scale, shift)
    g = torch.Generator().manual_seed(seed + 1)
    w = (torch.rand(C, generator=g) + 0.5).to(DEV) if affine[0] else None
    b = torch.randn(C, generator=g).to(DEV) if affine[1] else None
    rm = torch.randn(C, generator=g).to(DEV)
    rv = (torch.rand(C, generator=g) + 0.5).to(DEV)
    dy = torch.randn(shape, generator=g).to(dtype).to(DEV)

    xt = x.clone().requires_grad_()
    wt = w.clone().requires_grad_() if w is not None else None
    bt = b.clone().requires_grad_() if b is not None else None
    rmt, rvt = rm.clone(), rv.clone()
    yt = bn_act_triton(xt, rmt, rvt, wt, bt, training, momentum, eps, activation)
    yt.backward(dy)

    xr = x.detach().float().clone().requires_grad_()
    wr = w.clone().requires_grad_() if w is not None else None
    br = b.clone().requires_grad_() if b is not None else None
    rmr, rvr = rm.clone(), rv.clone()
    yr = reference(xr, rmr, rvr, wr, br, training, momentum, eps, activation)
    yr.backward(dy.float())

    assert yt.dtype == dtype and yt.shape == x.shape
    close(yt, yr, dtype, "y")
    close(xt.grad, xr.grad, dtype, "dx")
    if w is not None:
        close(wt.grad, wr.grad, dtype, "dweight")
    if b is not None:
        close(bt.grad, br.grad, dtype, "dbias")
    close(rmt, rmr, torch.float32 if dtype == torch.float32 else dtype, "running_mean")
    close(rvt, rvr, torch.float32 if dtype == torch.float32 else dtype, "running_var")
    return yt, xt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", ["gelu", "silu", "identity"])
def test_train_forward_backward(dtype, layout, activation):
    run_both((3, 5, 7, 9), dtype, layout, activation=activation)


@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (4, 70, 3, 3), (2, 130, 1, 3), (5, 16, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_odd_shapes(shape, layout):
    run_both(shape, torch.float32, layout)


@pytest.mark.parametrize("layout", ["strided", "permuted"])
def test_non_contiguous_input(layout):
    y, x = run_both((2, 6, 5, 4), torch.float16, layout)
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("affine", [(False, False), (True, False), (False, True)])
def test_weight_bias_none(affine):
    run_both((2, 4, 5, 5), torch.float32, "channels_last", affine=affine)


@pytest.mark.parametrize("activation", ["gelu", "silu", "identity"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_eval_mode(activation, dtype):
    run_both((3, 12, 4, 6), dtype, "channels_last", training=False, activation=activation)


def test_large_mean_is_stable():
    # values around 1e4 with std 1: E[x^2] - E[x]^2 in fp32 would lose everything
    C = 3
    x = make_input((8, C, 16, 16), torch.float32, "channels_last", scale=1.0, shift=1e4)
    rm, rv = torch.zeros(C, device=DEV), torch.ones(C, device=DEV)
    bn_act_triton(x, rm, rv, None, None, True, 1.0, 1e-5)  # momentum 1: running = batch statistics
    xd = x.double().transpose(0, 1).reshape(C, -1)
    n = xd.shape[1]
    assert n == 2048
    # the mean to a few fp32 ulps at 1e4 (ulp = 1e-3)
    assert (rm.double() - xd.mean(1)).abs().max() < 5e-3
    # the variance (~1) to 1%: a naive E[x^2] - E[x]^2 in fp32 is off by O(100) here
    assert torch.allclose(rv.double(), xd.var(1), rtol=1e-2), (rv, xd.var(1))
    naive = (xd.float() ** 2).mean(1) - xd.float().mean(1) ** 2
    assert (naive.double() - xd.var(1)).abs().max() > 0.5  # the trap this test guards against


def test_running_stats_update_unbiased():
    x = make_input((4, 6, 3, 5), torch.float32, "contiguous")
    rm, rv = torch.full((6,), 2.0, device=DEV), torch.full((6,), 3.0, device=DEV)
    bn_act_triton(x, rm, rv, None, None, True, 0.4, 1e-5, "silu")
    xs = x.transpose(0, 1).reshape(6, -1)
    assert torch.allclose(rm, 0.6 * 2.0 + 0.4 * xs.mean(1), atol=1e-6)
    assert torch.allclose(rv, 0.6 * 3.0 + 0.4 * xs.var(1, unbiased=True), atol=1e-5)


def test_no_running_stats_in_training():
    x = make_input((2, 3, 4, 4), torch.float32, "channels_last")
    y = bn_act_triton(x, None, None, None, None, True, 0.1, 1e-5)
    assert torch.allclose(y, F.gelu(F.batch_norm(x, None, None, training=True)), atol=1e-5)


def test_registered_and_in_backend():
    assert kernels.get("bn_act", "triton") is bn_act_triton
    assert kernels.resolve_names("triton")["bn_act"] == "triton"


def test_errors_are_clear():
    x = torch.randn(2, 3, 4, 4, device=DEV)
    rm, rv = torch.zeros(3, device=DEV), torch.ones(3, device=DEV)
    with pytest.raises(TypeError, match=r"bn_act \(triton\): x has dtype torch.int64"):
        bn_act_triton(x.long(), rm, rv, training=True)
    with pytest.raises(ValueError, match="must be 4-D"):
        bn_act_triton(x[0], rm, rv, training=True)
    with pytest.raises(ValueError, match="running_mean has 4 elements, x has 3 channels"):
        bn_act_triton(x, torch.zeros(4, device=DEV), rv, training=True)
    with pytest.raises(ValueError, match="unknown activation 'relu'"):
        bn_act_triton(x, rm, rv, training=True, activation="relu")
    with pytest.raises(ValueError, match="needs running_mean"):
        bn_act_triton(x, None, None, training=False)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn_act_triton(x[:1, :, :1, :1], rm, rv, training=True)


def test_cpu_tensor_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="Triton kernels need a CUDA tensor"):
        bn_act_triton(torch.randn(2, 3, 4, 4), torch.zeros(3), torch.ones(3), training=True)


@pytest.fixture
def many_programs(monkeypatch):
    """Tiles small enough that several programs share each channel block, so the atomically merged
    sums and the last-program finalise run with more than one program per block (on a GPU they
    always do; the interpreter otherwise launches one tall tile)."""
    import kernels.bn_act as m
    if m.interpreting():
        monkeypatch.setattr(m, "INTERPRETER_PROGRAMS", 12)
        monkeypatch.setattr(m, "INTERPRETER_BLOCK_M", 16)
        monkeypatch.setattr(m, "REDUCE_CONFIGS", [(16, 32, 4, 4)])
        monkeypatch.setattr(m, "APPLY_CONFIGS", [(16, 32, 4, 4)])
    return m


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("activation", ["gelu", "silu", "identity"])
def test_several_programs_per_channel_block(many_programs, layout, activation):
    # 70 channels: three channel blocks of 32, the last partial; 6 x 5 x 7 = 210 rows over several programs
    run_both((6, 70, 5, 7), torch.float32, layout, activation=activation)
    run_both((6, 70, 5, 7), torch.float16, layout, activation=activation, training=False)


def test_workspace_is_left_zero_for_the_next_call(many_programs):
    x = make_input((4, 40, 6, 6), torch.float32, "channels_last")
    rm, rv = torch.zeros(40, device=DEV), torch.ones(40, device=DEV)
    for _ in range(2):  # a second call must see a clean workspace and give the same statistics
        y = bn_act_triton(x.clone().requires_grad_(), rm.clone(), rv.clone(), None, None, True, 0.4, 1e-5)
        y.backward(torch.ones_like(y))
        ws, cnt = many_programs._WORKSPACES[many_programs.stream_key(x.device)]
        assert not ws.any() and not cnt.any()
    a = bn_act_triton(x, rm.clone(), rv.clone(), None, None, True, 0.4, 1e-5)
    b = bn_act_triton(x, rm.clone(), rv.clone(), None, None, True, 0.4, 1e-5)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


import triton  # noqa: E402  (after kernels: the interpreter is chosen there)
import triton.language as tl  # noqa: E402

from kernels.bn_act import _act_fwd, _act_grad  # noqa: E402


@triton.jit
def probe(z_ptr, out_ptr, n, ACT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    z = tl.load(z_ptr + i, mask=i < n, other=0.0)
    tl.store(out_ptr + i, _act_fwd(z, ACT), mask=i < n)
    tl.store(out_ptr + n + i, _act_grad(z, ACT), mask=i < n)


def test_gelu_and_silu_approximations_over_the_whole_range():
    """The one-exp GELU (Abramowitz & Stegun 7.1.26 erf) and SiLU against float64, forward and derivative."""
    z = torch.linspace(-12, 12, 24001, dtype=torch.float32, device=DEV)
    zd = z.double()
    out = torch.empty(2 * z.numel(), device=DEV)
    for act, (f, df) in {0: (lambda v: F.gelu(v), lambda v: 0.5 * (1 + torch.erf(v / 2 ** 0.5))
                             + v * torch.exp(-v * v / 2) / (2 * torch.pi) ** 0.5),
                         1: (lambda v: F.silu(v), lambda v: torch.sigmoid(v) * (1 + v * (1 - torch.sigmoid(v))))}.items():
        probe[(triton.cdiv(z.numel(), 1024),)](z, out, z.numel(), ACT=act, BLOCK=1024)
        fwd, grad = out[:z.numel()].double(), out[z.numel():].double()
        # GELU = z * Phi(z): the erf approximation's 1.5e-7 (plus fp32 rounding) scaled by |z|
        assert ((fwd - f(zd)).abs() / zd.abs().clamp_min(1)).max() < 4e-7, act
        assert (grad - df(zd)).abs().max() < 4e-7 * 12, act
        assert (grad - df(zd)).abs()[zd.abs() < 4].max() < 1e-6, act
    # the CDF itself (through GELU / z) to about 1e-7 absolute, as fp32 erf
    probe[(triton.cdiv(z.numel(), 1024),)](z, out, z.numel(), ACT=0, BLOCK=1024)
    nz = zd.abs() > 0.5
    cdf = out[:z.numel()].double()[nz] / zd[nz]
    ref = 0.5 * (1 + torch.erf(zd[nz] / 2 ** 0.5))
    fp32 = 0.5 * (1 + torch.erf(z[nz] / 2 ** 0.5)).double()
    assert (cdf - ref).abs().max() < 3e-7 and (fp32 - ref).abs().max() < 3e-7
