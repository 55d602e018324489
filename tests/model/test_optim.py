import math

import pytest
import torch

import kernels
from model.net import CifarNet
from model.optim import Muon, MuonSGD, SGDLookahead, TensorMuonSGD, TensorSGDLookahead, newton_schulz
from model.recipes import AIRBENCH94, AIRBENCH94_MUON, get_recipe


@pytest.mark.parametrize("shape", [(64, 216), (256, 576), (300, 40)])
def test_newton_schulz_close_to_orthogonal(shape):
    torch.manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k))
    g = u @ torch.diag(torch.logspace(0, -1, k)) @ v.T  # singular values spread over a decade
    x = newton_schulz(g)
    assert x.shape == g.shape and x.dtype == torch.bfloat16
    s = torch.linalg.svdvals(x.float())
    # 3 quintic steps land the singular values roughly in [0.5, 1.5] (by design not exactly 1)
    assert s.max() < 1.5 and s.min() > 0.45, (s.min(), s.max())
    # 5 steps tighten the band
    s5 = torch.linalg.svdvals(newton_schulz(g, steps=5).float())
    assert s5.max() < 1.2 and s5.min() > 0.6


def test_newton_schulz_rejects_tensors():
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.randn(2, 3, 4))


def test_muon_step_normalises_and_moves():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8, 4, 3, 3) * 5)
    opt = Muon([w], lr=0.1, momentum=0.6)
    w.grad = torch.randn_like(w)
    before = w.detach().clone()
    opt.step()
    # weight was rescaled to norm sqrt(8) before the update of norm ~ 0.1 * sqrt(8)
    assert abs(w.norm().item() - math.sqrt(8)) < 0.5
    assert not torch.allclose(w, before)
    buf = opt.state[w]["momentum_buffer"]
    assert torch.allclose(buf, w.grad)


def _small_net():
    torch.manual_seed(0)
    return CifarNet(kernels.resolve("eager"), widths=(8, 16, 16))


def test_muon_sgd_schedules():
    net = _small_net()
    r = AIRBENCH94_MUON
    opt = MuonSGD(net, r, total_steps=200, whiten_steps=75)
    for p in net.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step(50)
    assert opt.sgd.param_groups[0]["lr"] == pytest.approx(0.053 * (1 - 50 / 75))
    assert opt.sgd.param_groups[2]["lr"] == pytest.approx(0.67 * 0.75)
    assert opt.muon.param_groups[0]["lr"] == pytest.approx(0.24 * 0.75)
    assert opt.sgd.param_groups[2]["weight_decay"] == pytest.approx(2e-6 * 2000 / 0.67)
    opt.step(100)
    assert opt.sgd.param_groups[0]["lr"] == 0.0
    n_filters = sum(1 for p in net.parameters() if p.dim() == 4 and p.requires_grad)
    assert n_filters == 6 and len(opt.muon.param_groups[0]["params"]) == 6


def test_sgd_lookahead_schedule_and_ema():
    net = _small_net()
    r = AIRBENCH94
    opt = SGDLookahead(net, r, total_steps=100, whiten_steps=30)
    assert opt.lr_factor(0) == pytest.approx(0.2)
    assert opt.lr_factor(23) == pytest.approx(1.0)
    assert opt.lr_factor(100) == pytest.approx(0.07)
    kilo = 1024 * (1 + 1 / 0.15)
    assert opt.sgd.param_groups[1]["initial_lr"] == pytest.approx(11.5 / kilo)
    assert opt.sgd.param_groups[0]["initial_lr"] == pytest.approx(64 * 11.5 / kilo)
    # lookahead pulls the weights towards the EMA every 5 steps
    head0 = net.head.weight.detach().clone()
    for s in range(5):
        net.head.weight.grad = torch.ones_like(net.head.weight)
        opt.step(s)
    moved = (net.head.weight - head0).abs().mean()
    assert moved > 0
    opt.finish()
    assert torch.equal(net.head.weight, opt.ema["head.weight"])


def test_recipes_registry():
    assert get_recipe("airbench94_muon").batch_size == 2000
    assert get_recipe("airbench94").replace(batch_size=512).batch_size == 512
    with pytest.raises(ValueError, match="known: airbench94, airbench94_muon"):
        get_recipe("nope")


@pytest.mark.parametrize("recipe, eager_cls, tensor_cls", [
    (AIRBENCH94_MUON, MuonSGD, TensorMuonSGD), (AIRBENCH94, SGDLookahead, TensorSGDLookahead),
    (get_recipe("hiverge"), MuonSGD, TensorMuonSGD), (get_recipe("airbench96"), SGDLookahead, TensorSGDLookahead),
    (get_recipe("hlb"), SGDLookahead, TensorSGDLookahead)],
    ids=["muon_sgd", "sgd_lookahead", "hiverge", "airbench96", "hlb"])
def test_tensor_optimizer_matches_torch_optim(recipe, eager_cls, tensor_cls):
    """The same gradients through torch.optim (Python-float schedules) and through the
    tensor-only optimizer (schedules from a device counter): the same weights, step by step,
    across the whitening-bias switch (step 3), the lookahead (steps 4 and 9) and finish."""
    recipe = recipe.replace(batch_size=100)
    a, b = _small_net(), _small_net()
    eager, tens = eager_cls(a, recipe, total_steps=12, whiten_steps=3, steps_per_epoch=2), tensor_cls(b, recipe)
    tens.reset(12, 3, 2)  # hlb: the EMA starts at epoch 2 = step 4, with a snapshot at step 5
    g = torch.Generator().manual_seed(0)
    names = {id(p): n for n, p in b.named_parameters()}
    params_a = dict(a.named_parameters())
    bias0 = None
    for step in range(12):
        grads = [torch.randn(p.shape, generator=g) if step < 3 or p is not b.whiten_bias else None
                 for p in tens.params]
        for p, grad in zip(tens.params, grads):
            params_a[names[id(p)]].grad = None if grad is None else grad.clone()
        eager.step(step)
        tens.update(grads)
        if tens.lookahead_due(step):
            tens.lookahead()
        if step == 2:
            bias0 = b.whiten_bias.detach().clone()
        for n, p in b.named_parameters():
            assert (params_a[n] - p).norm() <= 1e-6 * p.norm(), (step, n)
        for (n, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(x, y, rtol=1e-5, atol=1e-6), (step, n)  # BN buffers: lookahead only
    assert tens.step_t.item() == 12
    if recipe.optimizer == "muon_sgd":  # frozen after whiten_steps (legacy: the lookahead still moves it)
        assert torch.equal(b.whiten_bias, bias0)
    eager.finish()
    tens.finish()
    for n, p in b.named_parameters():
        assert (params_a[n] - p).norm() <= 1e-6 * p.norm(), n


def test_tensor_optimizer_reset_and_schedule():
    net = _small_net()
    opt = TensorSGDLookahead(net, AIRBENCH94)
    opt.reset(100, 30)
    assert opt.warm_t.item() == 23
    for s, want in [(0, 0.2), (23, 1.0), (100, 0.07)]:
        opt.step_t.fill_(s)
        assert opt.lr_factor().item() == pytest.approx(want)
    opt.bufs[0].fill_(3)
    opt.reset(50, 10)
    assert opt.step_t.item() == 0 and opt.total_t.item() == 50 and opt.bufs[0].abs().sum() == 0


def test_tensor_update_compiles_to_one_graph():
    """The whole update, schedules included, is one fullgraph graph: nothing reads a device
    value back to the host (a .item() would be a graph break, which fullgraph refuses)."""
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    net = _small_net()
    opt = TensorMuonSGD(net, AIRBENCH94_MUON)
    opt.reset(10, 2)
    update = torch.compile(opt.update, fullgraph=True, dynamic=False)
    grads = [torch.randn_like(p) for p in opt.params]
    before = [p.detach().clone() for p in opt.params]
    update(grads)
    update(grads)
    assert opt.step_t.item() == 2
    assert all(not torch.equal(p, q) for p, q in zip(opt.params, before))
    assert sum(counters["graph_break"].values()) == 0 and counters["stats"]["unique_graphs"] == 1
