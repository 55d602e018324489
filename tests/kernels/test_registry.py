import pytest
import torch
import torch.nn.functional as F

import kernels


def test_public_api():
    assert {"bn_act", "conv", "maxpool"} <= set(kernels.ops())
    for op in kernels.ops():
        assert "eager" in kernels.impls(op)
    assert kernels.get("maxpool", "eager") is kernels.maxpool.maxpool_eager


def test_unknown_names_list_known_ones():
    with pytest.raises(kernels.UnknownNameError, match="unknown op 'nope'; known: bn_act, conv, conv_block, maxpool"):
        kernels.impls("nope")
    with pytest.raises(kernels.UnknownNameError, match="unknown implementation 'x' of op 'conv'; known: .*eager"):
        kernels.get("conv", "x")
    with pytest.raises(kernels.UnknownNameError, match="unknown backend 'b'; known: .*eager"):
        kernels.resolve("b")
    with pytest.raises(kernels.UnknownNameError, match="OP=IMPL"):
        kernels.parse_overrides(["conv"])


def test_resolve_with_overrides():
    names = kernels.resolve_names("compile", kernels.parse_overrides(["conv=eager"]))
    assert names["conv"] == "eager" and names["maxpool"] == "compile"
    fns = kernels.resolve("eager")
    assert set(fns) == set(kernels.ops())


def test_eager_ops_match_functional():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 6, 6)
    rm, rv = torch.zeros(4), torch.ones(4)
    out = kernels.get("bn_act", "eager")(x, rm, rv, None, None, True, 0.1, 1e-5, activation="silu")
    assert torch.allclose(out, F.silu(F.batch_norm(x, torch.zeros(4), torch.ones(4), None, None, True, 0.1, 1e-5)))
    assert rm.abs().sum() > 0  # running stats updated
    assert torch.equal(kernels.get("maxpool", "eager")(x, 3), F.max_pool2d(x, 3))
    w = torch.randn(5, 4, 3, 3)
    assert torch.allclose(kernels.get("conv", "eager")(x, w, None, 1), F.conv2d(x, w, padding=1))
    with pytest.raises(ValueError, match="activation"):
        kernels.get("bn_act", "eager")(x, rm, rv, activation="relu")


def test_only_conv_triton_small_is_a_composite():
    """A composite picks between other implementations: profiling static has no kernel of its own to
    model for it, and bench leaves it out unless --impls names it."""
    from profiling.drive import triton_impls
    found = [(op, i) for op in kernels.ops() for i in kernels.impls(op) if kernels.composite(op, i)]
    assert found == [("conv", "triton_small")]
    assert "triton_small" not in triton_impls("conv") and "triton" in triton_impls("conv")
