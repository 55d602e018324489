"""The FP8 producers and consumers together: bn_act=fp8 and maxpool=fp8 write the fp8 copies that
conv=fp8 reads (kernels/fp8.py), so from the second step on no activation or gradient is quantised
by a separate pass; any mix with other implementations stays correct."""
import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import fp8

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = 0.06 if DEV == "cuda" else 0.15  # fp8 against fp32 (the interpreter's fp8 rounding: tests/kernels/test_conv.py)


def cl(t):
    return t.contiguous(memory_format=torch.channels_last).to(DEV)


def block(ops, x, w1, w2, rm, rv, b):
    """conv -> pool -> bn_act -> conv: every producer/consumer pair of the network."""
    y = ops["conv"](x, w1, None, 1)
    y = ops["maxpool"](y, 2, 2)
    y = ops["bn_act"](y, rm, rv, None, b, True, 0.4, 1e-12, "gelu")
    return ops["conv"](y, w2, None, 1)


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
    for step in range(3):
        quantize_calls.clear()
        for t in (x, w1, w2, b):
            t.grad = None
        out = block(ops, x, w1, w2, rm, rv, b)
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
    for _ in range(3):
        for t in (xs, w1s, w2s, bs):
            t.grad = None
        ref = block(self_ops, xs, w1s, w2s, torch.zeros(40, device=DEV), torch.ones(40, device=DEV), bs)
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
    for _ in range(2):  # the second call runs with the producers' copies where there are producers
        x, w1, w2, b = inputs(1)
        out = block(ops, x, w1, w2, torch.zeros(40, device=DEV), torch.ones(40, device=DEV), b)
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
    for _ in range(2):
        y = ops["bn_act"](x.detach(), rm, rv, None, None, True, 0.4, 1e-12, "gelu")
    assert fp8.copy_of(y, fp8.E4M3) is not None
    q, s = fp8.copy_of(y, fp8.E4M3)
    assert q.shape == y.shape and q.stride() == y.stride() and s.numel() == 1
    y.mul_(2)  # an in-place change: the copy no longer describes y
    assert fp8.copy_of(y, fp8.E4M3) is None
