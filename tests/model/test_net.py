import pytest
import torch
import torch.nn.functional as F

import kernels
from model.net import CifarNet, tta_logits

PUBLISHED_PARAMS = (24 * 3 * 2 * 2 + 24            # whitening conv + bias
                    + 64 * 24 * 9 + 64 * 64 * 9    # group 1
                    + 256 * 64 * 9 + 256 * 256 * 9  # group 2
                    + 2 * 256 * 256 * 9            # group 3
                    + 2 * 2 * (64 + 256 + 256)     # BN weight + bias, two per group
                    + 256 * 10)                    # head


@pytest.fixture
def net():
    torch.manual_seed(0)
    return CifarNet(kernels.resolve("eager"))


def test_parameter_count(net):
    assert PUBLISHED_PARAMS == 1_972_792
    assert sum(p.numel() for p in net.parameters()) == PUBLISHED_PARAMS
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == PUBLISHED_PARAMS - 288 - (64 + 64 + 256 + 256 + 256 + 256)  # whiten w, BN w frozen


def test_stage_shapes(net):
    shapes = []
    net.groups[0].register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    for g in net.groups:
        g.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape)))
    out = net(torch.randn(3, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert shapes == [(3, 24, 31, 31), (3, 64, 15, 15), (3, 256, 7, 7), (3, 256, 3, 3)]
    assert out.shape == (3, 10)


def test_conv_init_dirac(net):
    w = net.groups[1].conv1.weight  # 64 -> 256
    eye = torch.zeros(64, 64, 3, 3)
    eye[torch.arange(64), torch.arange(64), 1, 1] = 1
    assert torch.equal(w[:64], eye)
    assert w[64:].abs().sum() > 0


def test_head_unit_std(net):
    assert abs(net.head.weight.std().item() - 1) < 1e-5
    legacy = CifarNet(kernels.resolve("eager"), head_unit_std=False, zero_whiten_bias=True)
    assert legacy.head.weight.std().item() < 0.2 and legacy.whiten_bias.abs().sum() == 0


def test_whitening_decorrelates_patches(net):
    torch.manual_seed(1)
    # correlated "images": smooth noise
    x = F.avg_pool2d(torch.randn(200, 3, 36, 36), 5, 1)[:, :, :32, :32] * 3
    x = x + 0.5 * x.mean(1, keepdim=True)
    net.init_whiten(x, eps=5e-4)
    w = net.whiten_weight
    assert torch.allclose(w[12:], -w[:12])
    y = F.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12)
    cov = y.T @ y / len(y)
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    eig = torch.linalg.eigvalsh(patches.T @ patches / len(patches))
    expect = torch.diag(eig / (eig + 5e-4))
    assert torch.allclose(cov, expect, atol=2e-3), (cov - expect).abs().max()


def test_tta_levels(net):
    net.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        l0 = tta_logits(net, x, 0)
        l1 = tta_logits(net, x, 1)
        l2 = tta_logits(net, x, 2)
        assert torch.allclose(l1, 0.5 * (net(x) + net(x.flip(-1))), atol=1e-6)
        p = F.pad(x, (1, 1, 1, 1), mode="reflect")
        m = lambda v: 0.5 * (net(v) + net(v.flip(-1)))
        expect = 0.5 * m(x) + 0.25 * (m(p[:, :, :32, :32]) + m(p[:, :, 2:, 2:]))
        assert torch.allclose(l2, expect, atol=1e-5)
    assert l0.shape == l1.shape == l2.shape == (4, 10)
    with pytest.raises(ValueError):
        tta_logits(net, x, 3)


def test_training_dtype_keeps_bn_fp32(net):
    net.to_training_dtype(torch.bfloat16)
    assert net.groups[0].conv1.weight.dtype == torch.bfloat16
    assert net.groups[0].norm1.bias.dtype == torch.float32
    assert net.groups[0].norm1.running_var.dtype == torch.float32
    assert net.head.weight.dtype == torch.bfloat16


def test_whiten_bias_detach(net):
    x = torch.randn(2, 3, 32, 32)
    net(x, whiten_bias_grad=False).sum().backward()
    assert net.whiten_bias.grad is None
    net(x, whiten_bias_grad=True).sum().backward()
    assert net.whiten_bias.grad is not None


def test_the_network_owns_its_fp8_state_and_passes_it_at_its_call_sites():
    """kernels/fp8.py: the fp8 ops' scales and copies are the network's (``net.fp8``), handed to every
    layer whose op keeps state; layers with a stateless op get none; two networks share nothing."""
    from kernels import fp8
    a, b = CifarNet(kernels.resolve("fp8")), CifarNet(kernels.resolve("fp8", {"bn_act": "triton"}))
    assert isinstance(a.fp8, fp8.Fp8State) and a.fp8 is not b.fp8 and a.fp8.handle != b.fp8.handle
    for g in a.groups:
        assert g.conv1.fp8 is g.conv2.fp8 is g.norm1.fp8 is g.norm2.fp8 is g.pool_fp8 is a.fp8
    assert all(g.conv1.fp8 is b.fp8 and g.norm1.fp8 is None for g in b.groups)  # bn_act=triton keeps none
    eager = CifarNet(kernels.resolve("eager"))
    assert all(m.fp8 is None for g in eager.groups for m in g.layers()) and eager.fp8.counts() is None


def test_a_run_resets_the_networks_fp8_state():
    """Each run starts from the scales of the first measurement with zero counts (train_run calls
    reset_parameters), whatever the runs before it saw. MnistNet: the cheapest network with every
    fp8 producer/consumer pair (conv -> pool -> BN -> conv) on a CPU."""
    from model.net import MnistNet
    torch.manual_seed(0)
    net = MnistNet(kernels.resolve("fp8"), widths=(32, 32, 32))
    x = torch.randn(2, 1, 8, 8).contiguous(memory_format=torch.channels_last)
    for scale in (1.0, 1.0, 8.0):  # the last step saturates: 8x the delayed amaxes
        net(x * scale).sum().backward()
    scales = net.fp8.scales()
    assert len(scales) == 2 * 3 + 3 and all(st.ready for st in scales)  # conv2, conv3: w, x, dy; 3 BatchNorms
    assert net.fp8.counts()["saturated"] > 0
    moved = [st for st in scales if st.amax[0].item() != st.first.item()]
    assert moved  # the amaxes rolled over from the first measurement
    net.reset_parameters()
    assert net.fp8.counts() == dict(nonfinite=0, saturated=0)
    assert all(st.amax[0].item() == st.first.item() for st in scales)
