"""kernels/spec.py: every op of the registry has a spec, joined to its kernels by Python references."""
import pytest
import torch

import kernels
from kernels import conv
from kernels.spec import ConfigList, OpCase, spec, specs, work_model


def test_every_registered_op_has_its_own_spec_and_every_kernel_a_work_model():
    assert [s.name for s in specs()] == kernels.ops()
    for s in specs():
        assert s.work, s.name  # each op's Triton kernels are modelled
        for kernel, model in s.work.items():
            assert work_model(kernel) is model
    assert work_model(object()) is None


def test_a_case_takes_its_shapes_and_bytes_from_its_spec():
    c = OpCase("conv", "g", (2, 64, 16, 16), dict(cout=256, k=3, padding=1))
    assert c.out_shape == (2, 256, 16, 16) and c.spec is spec("conv")
    gemm = 2.0 * 2 * 16 * 16 * 256 * 64 * 9
    assert c.flops("fwd") == gemm and c.flops("fwd+bwd") == 3 * gemm
    p = OpCase("maxpool", "p", (2, 8, 5, 5), dict(k=2))
    assert p.out_shape == (2, 8, 2, 2)
    y = 2 * 8 * 2 * 2
    assert p.bytes_min("fwd", 2) == 2 * (y * 4 + y)  # the pooled windows read (floor mode), y written


def test_sample_call_is_what_the_network_passes():
    c = OpCase("bn_act", "n", (2, 8, 4, 4), dict(activation="gelu"))
    call = spec("bn_act").sample_call(c, "cpu", torch.float32)
    x, rm, rv, w, b, training, momentum, eps, act = call.args
    assert x.requires_grad and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(w, torch.ones(8)) and not w.requires_grad and b.requires_grad  # model/net.py BatchNormAct
    assert training and act == "gelu" and call.dy.shape == x.shape and call.eval_args[5] is False
    again = spec("bn_act").sample_call(c, "cpu", torch.float32)
    assert torch.equal(again.x, x)  # the same seed: the same inputs for every implementation


def test_a_pinned_configuration_list_holds_one_entry_and_forgets_choices_before_and_after():
    forgot = []
    cl = ConfigList("L", [(1,), (2,), (3,)], forget=lambda: forgot.append(1))
    with cl.pinned((2,)):
        assert list(cl) == [(2,)] and len(forgot) == 1
    assert list(cl) == [(1,), (2,), (3,)] and len(forgot) == 2
    with pytest.raises(RuntimeError):
        with cl.pinned((3,)):
            raise RuntimeError("a launch failed")
    assert list(cl) == [(1,), (2,), (3,)]  # restored whatever happened inside


def test_the_conv_lists_forget_the_per_shape_choices(monkeypatch):
    monkeypatch.setattr(conv, "_chosen", {("fwd", "shape"): (64, 64, 32, 4, 4)})
    with conv.FWD_CONFIGS.pinned(conv.FWD_CONFIGS[0]):
        assert conv._chosen == {}
