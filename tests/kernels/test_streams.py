"""The zeroed scratch of the last-program finalisations (bn_act's fp32 sums and tickets) is keyed by
(device, stream): two launches in flight on two streams never share it. Every kind of launch leaves
it zero, one whose host side raises too. The conv weight-grad keeps no scratch between calls: its
split-K partials are a fresh buffer per call, summed by a second launch. On a GPU, two streams
running at once give what one stream gives."""
import pytest
import torch

import kernels  # noqa: F401  (chooses the interpreter on a CPU)
import kernels.bn_act as bn
import kernels.conv as cv
from kernels._triton import stream_key
from kernels.bn_act import bn_act_triton
from kernels.conv import conv_triton

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"


def test_scratch_is_one_per_stream(monkeypatch):
    dev = torch.device(DEV)
    monkeypatch.setattr(bn, "stream_key", lambda d: ("test", "stream A"))
    a_ws, a_cnt = bn._workspace(dev, 64, 2)
    assert bn._workspace(dev, 64, 2)[0] is a_ws  # one stream: shared
    monkeypatch.setattr(bn, "stream_key", lambda d: ("test", "stream B"))
    b_ws, b_cnt = bn._workspace(dev, 64, 2)
    assert b_ws.data_ptr() != a_ws.data_ptr() and b_cnt.data_ptr() != a_cnt.data_ptr()
    for key in (("test", "stream A"), ("test", "stream B")):
        bn._WORKSPACES.pop(key, None)
    assert not hasattr(cv, "_WGRAD_COUNTERS")  # the weight-grad has no scratch to share


def test_stream_key_names_the_stream_on_a_gpu_and_the_device_elsewhere():
    assert stream_key(torch.device("cpu")) == ("cpu", None, 0)
    if CUDA:
        dev = torch.device("cuda")
        main = stream_key(dev)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            assert stream_key(dev) != main
        assert stream_key(dev) == main


def _all_zero():
    for ws, cnt in bn._WORKSPACES.values():
        assert not ws.any() and not cnt.any()


def test_every_launch_leaves_the_scratch_zero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 40, 6, 6, generator=g).to(DEV).requires_grad_()
    y = bn_act_triton(x, torch.zeros(40, device=DEV), torch.ones(40, device=DEV), None, None, True, 0.4, 1e-5)
    y.backward(torch.randn(y.shape, generator=g).to(DEV))  # statistics, apply, backward sums, dx
    _all_zero()
    xc = torch.randn(2, 8, 6, 6, generator=g).to(DEV).requires_grad_()
    w = (torch.randn(8, 8, 3, 3, generator=g) * 0.3).to(DEV).requires_grad_()
    yc = conv_triton(xc, w, None, 1)
    dy = torch.randn(yc.shape, generator=g).to(DEV)
    yc.backward(dy)  # the weight-grad splits over the pixels: partials summed by a second launch
    ref = torch.nn.grad.conv2d_weight(xc.detach(), w.shape, dy, padding=1)
    torch.testing.assert_close(w.grad, ref, rtol=1e-4, atol=1e-4)
    _all_zero()
    with pytest.raises(TypeError):  # the host side refuses before any kernel runs
        bn_act_triton(x.detach().long(), torch.zeros(40, device=DEV), torch.ones(40, device=DEV), training=True)
    _all_zero()


@pytest.mark.skipif(not CUDA, reason="two streams in flight at once need a GPU (the interpreter runs one launch "
                                     "at a time)")
def test_two_streams_at_once_give_what_one_stream_gives():
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = [torch.randn(512, 256, 8, 8, device="cuda", generator=g).contiguous(memory_format=torch.channels_last)
          for _ in range(2)]
    dys = [torch.randn(512, 256, 8, 8, device="cuda", generator=g, dtype=torch.float16) for _ in range(2)]
    ws = [torch.randn(256, 256, 3, 3, device="cuda", generator=g, dtype=torch.float16) for _ in range(2)]

    def work(i):
        mean, var = bn.bn_stats(xs[i], None, None, 0.1)
        dw = cv.conv2d_wgrad(dys[i], xs[i].half(), list(ws[i].shape), 1)
        return mean, var, dw
    torch.cuda.synchronize()
    sequential = [work(0), work(1)]
    torch.cuda.synchronize()
    streams = [torch.cuda.Stream(), torch.cuda.Stream()]
    out = [None, None]
    for _ in range(20):  # many overlapping rounds: a shared counter would mix them in some round
        for i, s in enumerate(streams):
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                out[i] = work(i)
        torch.cuda.synchronize()
        for i in range(2):
            for a, b in zip(out[i], sequential[i]):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    _all_zero()
