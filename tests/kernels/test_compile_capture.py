"""The Triton ops are torch.library custom ops with fake implementations and autograd, so
torch.compile(fullgraph=True) captures a conv -> maxpool -> bn_act block, forward and backward,
without a graph break (fullgraph=True raises on one)."""
import pytest
import torch

import kernels

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def block(ops, x, w, rm, rv, bias):
    y = ops["conv"](x, w, None, 1)
    y = ops["maxpool"](y, 2, 2)
    return ops["bn_act"](y, rm, rv, None, bias, True, 0.4, 1e-12, "gelu")


@pytest.mark.parametrize("backend, ops_backend", [("aot_eager", "triton"), ("inductor", "triton"),
                                                  ("aot_eager", "triton_all")])
def test_fullgraph_capture_matches_eager(backend, ops_backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    ops = kernels.resolve(ops_backend)
    x = torch.randn(2, 4, 6, 6, device=DEV).contiguous(memory_format=torch.channels_last)
    w = torch.randn(8, 4, 3, 3, device=DEV).contiguous(memory_format=torch.channels_last).requires_grad_()
    bias = torch.zeros(8, device=DEV, requires_grad=True)
    rm, rv = torch.zeros(8, device=DEV), torch.ones(8, device=DEV)
    rm2, rv2 = rm.clone(), rv.clone()

    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(lambda *a: block(ops, *a), fullgraph=True, backend=backend)
    out = compiled(x, w, rm, rv, bias)
    out.sum().backward()
    gw, gb = w.grad.clone(), bias.grad.clone()
    w.grad = bias.grad = None

    ref = block(ops, x, w, rm2, rv2, bias)
    ref.sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(gw, w.grad, atol=1e-4) and torch.allclose(gb, bias.grad, atol=1e-4)
    assert torch.allclose(rm, rm2) and torch.allclose(rv, rv2)  # the running-stat mutation survives compile
    assert sum(counters["graph_break"].values()) == 0
