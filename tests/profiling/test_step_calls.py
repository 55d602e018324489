"""The mean training step of a run (profiling/shapes.py step_calls): the op after the frozen
whitening conv runs its input-grad only while the whitening bias trains, and the static model's
step, fused minimum and per-kernel totals weigh its two variants by the recipe's schedule."""
import pytest

import kernels
from model.recipes import get_recipe
from profiling import assemble
from profiling.devices import PEAKS
from profiling.shapes import FROZEN, fused_minimum, input_grad_shares, network_ops, step_calls, whiten_fraction


@pytest.mark.parametrize("recipe, first", [(None, "group1.conv1"), ("hiverge", "group1.conv1"), ("hlb", "project")])
def test_the_op_after_the_whitening_conv_is_split_by_the_schedule(recipe, first):
    r = get_recipe(recipe or "airbench94_muon")
    f = r.whiten_bias_epochs / r.epochs
    assert whiten_fraction(recipe) == pytest.approx(f)
    calls = step_calls(4, recipe=recipe)
    plain = network_ops(4, recipe=recipe)
    names = [c.name for c, _ in calls]
    # every call of the network once, weight 1, but the op after the whitening conv
    bases = [n.removesuffix(FROZEN) for n in names]
    assert list(dict.fromkeys(bases)) == [c.name for c in plain]
    weights = {c.name: w for c, w in calls}
    assert weights.get(first, 0.0) == pytest.approx(f)
    assert weights[first + FROZEN] == pytest.approx(1 - f)
    frozen = next(c for c, _ in calls if c.name == first + FROZEN)
    assert frozen.params["input_grad"] is False and frozen.x_shape == next(c for c in plain if c.name == first).x_shape
    assert all(w == 1.0 for c, w in calls if c.name not in (first, first + FROZEN))
    assert sum(weights.values()) == pytest.approx(len(plain))


def test_a_fused_backend_splits_its_first_block():
    calls = dict((c.name, w) for c, w in step_calls(4, backend="fused"))
    assert calls["group1.block1"] == pytest.approx(3 / 8) and calls["group1.block1" + FROZEN] == pytest.approx(5 / 8)


def test_fused_minimum_blends_the_input_grad_by_its_share():
    cases = network_ops(64)
    peak = PEAKS["H100-SXM"]
    full = fused_minimum(cases, peak)
    never = fused_minimum(cases, peak, input_grad_share={"group1.conv1": 0.0})
    half = fused_minimum(cases, peak, input_grad_share={"group1.conv1": 0.5})
    c = next(c for c in cases if c.name == "group1.conv1")
    assert full["flops"] - never["flops"] == pytest.approx(c.flops("fwd"))  # the input-grad GEMM
    assert never["bytes"] < half["bytes"] < full["bytes"]
    for k in ("bytes", "flops", "ms"):
        assert half[k] == pytest.approx((full[k] + never[k]) / 2)
    assert input_grad_shares(64) == {"group1.conv1": pytest.approx(3 / 8)}


def test_step_table_weighs_the_two_variants():
    """A made-up op table (1 ms per call, 11 ms for the call with the input-grad): the triton_all step is
    the calls' sum with the split call weighted 3/8 and 5/8."""
    batch = 64
    ops = []
    for case, _ in step_calls(batch):
        ms = 11.0 if case.name == "group1.conv1" else 1.0
        ops.append(dict(op=case.op, impl=kernels.resolve_names("triton_all")[case.op], key=assemble.case_key(case),
                        arch="sm_90", predicted_ms=ms, roofline_ms=ms / 2, dram_bytes=0.0, bound_ms={"memory": ms}))
    row = next(r for r in assemble.step_table(ops, batch, ["sm_90"], 2) if r["backend"] == "triton_all")
    n = len(network_ops(batch))
    assert row["predicted_ms"] == pytest.approx((n - 1) + 3 / 8 * 11 + 5 / 8 * 1)
    assert row["modelled_ops"] == n and row["eager_ops"] == 0
