"""A short training run with --backend triton follows eager's losses.

Tolerance: the per-epoch training losses agree within 2e-3 (absolute, on losses ~2.3). The
kernels agree with the reference to ~1e-6 per op in fp32; Muon's bf16 Newton-Schulz step
amplifies such differences a little over a few steps (measured: < 3e-4 after 6 steps).
"""
import pytest
import torch

import kernels
from model.net import CifarNet
from model.recipes import AIRBENCH94_MUON
from model.training.trainer import train_run

from test_train import small_problem


DEV = "cuda" if torch.cuda.is_available() else "cpu"  # compiled kernels on a GPU, the interpreter on a CPU


def test_triton_backend_training_matches_eager():
    data = small_problem(96, 32, DEV)
    recipe = AIRBENCH94_MUON.replace(batch_size=32, whiten_images=96)
    results = {}
    for backend in ("eager", "triton"):
        net = CifarNet(kernels.resolve(backend), widths=(8, 16, 16), head_scale=recipe.head_scale).to(DEV)
        results[backend] = train_run(net, data, recipe, seed=0, dtype=torch.float32, epochs=2, tta_level=1)
    e, t = results["eager"], results["triton"]
    assert e["steps"] == t["steps"] == 6
    for re, rt in zip(e["per_epoch"], t["per_epoch"]):
        assert abs(re["train_loss"] - rt["train_loss"]) < 2e-3, (e["per_epoch"], t["per_epoch"])
    assert abs(e["accuracy"] - t["accuracy"]) <= 2 / 32  # at most two of 32 test images flip



@pytest.mark.parametrize("convs", [2, 3])
def test_fused_network_step_matches_triton_all(convs):
    """One training step of the network (batch 2, narrow widths) with the fused blocks against the
    same Triton kernels unfused: outputs, every parameter's gradient and the running statistics.
    convs=3: airbench96's groups (a third block without activation, the residual added before it)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last).to(DEV)
    nets = {}
    for backend in ("triton_all", "fused"):
        torch.manual_seed(1)
        net = CifarNet(kernels.resolve(backend), widths=(8, 8, 8), convs=convs).to(DEV)
        net.init_whiten(x)
        out = net(x)
        out.square().sum().backward()
        nets[backend] = (net, out)
    (a, oa), (f, of) = nets["triton_all"], nets["fused"]
    assert all(g.block is None for g in a.groups) and all(g.block is not None for g in f.groups)
    torch.testing.assert_close(of, oa, rtol=1e-4, atol=1e-5)
    for (name, pa), (_, pf) in zip(a.named_parameters(), f.named_parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pf.grad, pa.grad, rtol=1e-3, atol=1e-5, msg=name)
    for (name, ba), (_, bf) in zip(a.named_buffers(), f.named_buffers()):
        torch.testing.assert_close(bf, ba, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_fused_backend_training_matches_triton_all():
    """--backend fused (the conv blocks of kernels/conv_block.py) trains like --backend triton_all (the
    same Triton conv, pool and BatchNorm kernels unfused), seeds paired, for airbench94_muon and hiverge
    (hiverge keeps BatchNorm in fp16 on a GPU: here both run fp32). Slow on a CPU (every conv in the
    Triton interpreter: 16 images, two steps of 8); same tolerance as above."""
    from model.net import build_net
    from model.recipes import HIVERGE
    n_test = 8
    data = small_problem(16, n_test, DEV)
    for recipe in (AIRBENCH94_MUON, HIVERGE):
        recipe = recipe.replace(batch_size=8, whiten_images=16, widths=(8, 8, 8))
        results = {}
        for backend in ("triton_all", "fused"):
            net = build_net(kernels.resolve(backend), recipe).to(DEV)
            results[backend] = train_run(net, data, recipe, seed=0, dtype=torch.float32, epochs=1, tta_level=0)
        a, f = results["triton_all"], results["fused"]
        assert a["steps"] == f["steps"] >= 2
        for ra, rf in zip(a["per_epoch"], f["per_epoch"]):
            assert abs(ra["train_loss"] - rf["train_loss"]) < 2e-3, (recipe.name, a["per_epoch"], f["per_epoch"])
        assert abs(a["accuracy"] - f["accuracy"]) <= 2 / n_test, recipe.name
