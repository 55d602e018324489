"""The FP8 producers and consumers together: bn_act=fp8 and maxpool=fp8 write the fp8 copies that
conv=fp8 reads into the state the caller owns and passes (kernels/fp8.py Fp8State), so from the
second step on no activation or gradient is quantised by a separate pass; any mix with other
implementations stays correct; without a state nothing is handed on."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import fp8
from model.net import call_op, state_for

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = 0.06 if DEV == "cuda" else 0.15  # fp8 against fp32 (the interpreter's fp8 rounding: tests/kernels/test_conv.py)


def cl(t):
    return t.contiguous(memory_format=torch.channels_last).to(DEV)


def block(ops, x, w1, w2, rm, rv, b, state=None):
    """conv -> pool -> bn_act -> conv: every producer/consumer pair of the network, each fp8 op called
    with ``state`` as the network calls it (model/net.py call_op)."""
    def op(name, *args):
        return call_op(ops[name], state_for(ops[name], state), *args)
    y = op("conv", x, w1, None, 1)
    y = op("maxpool", y, 2, 2)
    y = op("bn_act", y, rm, rv, None, b, True, 0.4, 1e-12, "gelu")
    return op("conv", y, w2, None, 1)


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = cl(torch.randn(2, 32, 8, 8, generator=g))
    w1 = cl(torch.randn(40, 32, 3, 3, generator=g) * 0.15).requires_grad_()
    w2 = cl(torch.randn(48, 40, 3, 3, generator=g) * 0.15).requires_grad_()
    b = torch.zeros(40, device=DEV, requires_grad=True)
    return x.requires_grad_(), w1, w2, b


@pytest.fixture
def quantize_calls(monkeypatch):
    calls = []
    real = fp8.quantize

    def counting(t, dtype, st, transposed=None):
        calls.append("weight" if transposed else ("grad" if dtype == fp8.GRAD and dtype != fp8.E4M3 else "act"))
        return real(t, dtype, st, transposed)
    monkeypatch.setattr(fp8, "quantize", counting)
    return calls


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def cos(a, b):
    return F.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).item()


def dy_like(out):
    return cl(torch.randn(out.shape, generator=torch.Generator().manual_seed(9)))


def test_producers_write_the_copies_from_the_second_step(quantize_calls):
    ops = kernels.resolve("fp8")
    x, w1, w2, b = inputs()
    rm, rv = torch.zeros(40, device=DEV), torch.ones(40, device=DEV)
    state = fp8.Fp8State()
    for step in range(3):
        quantize_calls.clear()
        for t in (x, w1, w2, b):
            t.grad = None
        out = block(ops, x, w1, w2, rm, rv, b, state)
        out.backward(cl(torch.randn(out.shape, generator=torch.Generator().manual_seed(9))))
        if step == 0:  # the first call of each layer measures its amaxes: the conv quantises itself
            assert "act" in quantize_calls and "grad" in quantize_calls
        else:  # then every fp8 operand comes from its producer; only the weights are quantised (one launch each)
            assert quantize_calls.count("weight") == 2, quantize_calls
            assert quantize_calls.count("act") == 1, quantize_calls   # the block's input: no fp8 producer
            assert quantize_calls.count("grad") == 1, quantize_calls  # the block's output grad: no producer
    # the same values as conv=fp8 quantising its operands itself (same delayed amaxes: same scales;
    # the producers round from fp32, the pass from the fp16 tensor, so a few elements differ by a step)
    self_ops = kernels.resolve("triton", {"conv": "fp8"})
    xs, w1s, w2s, bs = (t.detach().clone().requires_grad_() for t in (x, w1, w2, b))
    self_state = fp8.Fp8State()
    for _ in range(3):
        for t in (xs, w1s, w2s, bs):
            t.grad = None
        ref = block(self_ops, xs, w1s, w2s, torch.zeros(40, device=DEV), torch.ones(40, device=DEV), bs, self_state)
        ref.backward(cl(torch.randn(out.shape, generator=torch.Generator().manual_seed(9))))
    assert rel(out, ref) < 0.03 and rel(w1.grad, w1s.grad) < 0.05 and rel(x.grad, xs.grad) < 0.05
    # and the fp32 block's result, to the precision of two chained fp8 convs
    xr, w1r, w2r, br = (t.detach().float().clone().requires_grad_() for t in (x, w1, w2, b))
    ref = block(kernels.resolve("eager"), xr, w1r, w2r, torch.zeros(40, device=DEV), torch.ones(40, device=DEV), br)
    ref.backward(cl(torch.randn(out.shape, generator=torch.Generator().manual_seed(9))))
    assert rel(out, ref) < 2 * TOL and rel(w2.grad, w2r.grad) < 2 * TOL and cos(x.grad, xr.grad) > 0.9


@pytest.mark.parametrize("backend, overrides", [("triton", {"conv": "fp8"}), ("fp8", {"conv": "triton"}),
                                                ("fp8", {"bn_act": "eager", "maxpool": "eager"})])
def test_any_mix_of_implementations(backend, overrides):
    ops = kernels.resolve(backend, overrides)
    ref_ops = kernels.resolve("eager")
    state = fp8.Fp8State()
    for _ in range(2):  # the second call runs with the producers' copies where there are producers
        x, w1, w2, b = inputs(1)
        out = block(ops, x, w1, w2, torch.zeros(40, device=DEV), torch.ones(40, device=DEV), b, state)
        out.backward(dy_like(out))
    xr, w1r, w2r, br = (t.detach().float().clone().requires_grad_() for t in (x, w1, w2, b))
    ref = block(ref_ops, xr, w1r, w2r, torch.zeros(40, device=DEV), torch.ones(40, device=DEV), br)
    ref.backward(dy_like(ref))
    # the input gradient went through two e5m2 input-grads and a BatchNorm backward (a difference of
    # large terms): its relative error is large, its direction is the reference's
    assert rel(out, ref) < 2 * TOL and rel(w2.grad, w2r.grad) < 2 * TOL and cos(x.grad, xr.grad) > 0.9


def test_a_changed_tensor_loses_its_copy():
    ops = kernels.resolve("fp8")
    x, *_ = inputs()
    rm, rv = torch.zeros(32, device=DEV), torch.ones(32, device=DEV)
    state = fp8.Fp8State()
    for _ in range(2):
        y = ops["bn_act"](x.detach(), rm, rv, None, None, True, 0.4, 1e-12, "gelu", fp8_state=state)
    assert state.copy_of(y, fp8.E4M3) is not None
    q, s = state.copy_of(y, fp8.E4M3)
    assert q.shape == y.shape and q.stride() == y.stride() and s.numel() == 1
    assert fp8.Fp8State().copy_of(y, fp8.E4M3) is None  # the copy lives in the state it was written to
    y.mul_(2)  # an in-place change: the copy no longer describes y
    assert state.copy_of(y, fp8.E4M3) is None


def test_without_a_state_nothing_is_handed_on(quantize_calls):
    """The fp8 ops called with the eager reference's signature: a drop-in, each operand quantised by
    the conv itself with its own amax, every call."""
    ops = kernels.resolve("fp8")
    x, w1, w2, b = inputs()
    live = len(fp8._LIVE)
    for _ in range(2):
        quantize_calls.clear()
        out = block(ops, x, w1, w2, torch.zeros(40, device=DEV), torch.ones(40, device=DEV), b)
        out.backward(dy_like(out))
        assert quantize_calls.count("act") == 2 and quantize_calls.count("grad") == 2, quantize_calls
    assert len(fp8._LIVE) == live  # the per-call states did not outlive their calls


def test_the_state_is_reset_to_its_first_scales_and_counts():
    ops = kernels.resolve("fp8")
    x, w1, w2, b = inputs()
    rm, rv = torch.zeros(40, device=DEV), torch.ones(40, device=DEV)
    state = fp8.Fp8State()
    assert state.counts() is None  # no fp8 layer ran
    for scale in (1.0, 3.0, 9.0):  # the amaxes move; the last call saturates (9x over 3x)
        out = block(ops, x * scale, w1, w2, rm, rv, b, state)
        out.backward(dy_like(out))
    y_scale = state.scale(rm, "y")  # bn_act's, for the copy of y the second conv reads
    assert y_scale.ready
    first = y_scale.first.item()
    assert state.counts()["saturated"] >= 1
    state.reset()
    assert y_scale.amax[0].item() == first and y_scale.amax[1].item() == 0.0
    assert state.counts() == dict(nonfinite=0, saturated=0)
    assert state.copy_of(out, fp8.E4M3) is None and not state._copies and not state._wants


def test_a_bad_state_is_refused_clearly():
    x, w1, *_ = inputs()
    with pytest.raises(TypeError, match="fp8_state must be a kernels.fp8.Fp8State"):
        kernels.get("conv", "fp8")(x, w1, None, 1, fp8_state="network")
    with pytest.raises(RuntimeError, match="no live Fp8State has handle"):
        fp8.of(10 ** 9)
