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


def test_a_launch_at_its_floor_keeps_only_its_dram_or_tensor_core_bound():
    """The floor of a launch: its fixed cost plus the larger of its memory and tensor bounds, whatever its L2,
    issue, shared-memory or latency bounds say; a launch already there has no headroom."""
    l2_bound = dict(bounds_ms=dict(fixed=0.002, memory=0.05, tensor=0.1, l2=0.3, issue=0.2, smem=0.1, latency=0.01),
                    predicted_ms=0.302, roofline_ms=0.075)
    assert assemble.floor_ms(l2_bound) == pytest.approx(0.102)
    memory_bound = dict(bounds_ms=dict(fixed=0.002, memory=0.05, tensor=0.0, issue=0.01), predicted_ms=0.052)
    assert assemble.floor_ms(memory_bound) == pytest.approx(0.052)


def test_the_step_at_its_floor_weighs_the_ops_as_the_step_does():
    """The step table's floor: each op's floor (its launches' floors plus its glue) with the step's weights;
    an op table without floors (older static.json) counts its prediction."""
    batch = 64
    ops = []
    for case, _ in step_calls(batch):
        ms = 11.0 if case.name == "group1.conv1" else 1.0
        ops.append(dict(op=case.op, impl=kernels.resolve_names("triton_all")[case.op], key=assemble.case_key(case),
                        arch="sm_90", predicted_ms=ms, roofline_ms=ms / 2, floor_ms=ms * 0.8, dram_bytes=0.0,
                        bound_ms={"memory": ms}))
    row = next(r for r in assemble.step_table(ops, batch, ["sm_90"], 2) if r["backend"] == "triton_all")
    assert row["floor_ms"] == pytest.approx(0.8 * row["predicted_ms"])
    for o in ops:
        del o["floor_ms"]
    row = next(r for r in assemble.step_table(ops, batch, ["sm_90"], 2) if r["backend"] == "triton_all")
    assert row["floor_ms"] == pytest.approx(row["predicted_ms"])


def test_losses_against_the_floor():
    """``losses(against="floor")`` sums predicted minus floor over the step's calls; an unknown baseline is an
    error that names it."""
    batch = 64
    names = kernels.resolve_names("triton_all")
    rows, keys = [], set()
    for case, _ in step_calls(batch):
        if case.op != "conv" or assemble.case_key(case) in keys:  # one row per shape, as the model's
            continue
        keys.add(assemble.case_key(case))
        rows.append(dict(kernel="_conv_kernel", default=True, arch="sm_90", phase="fwd", impl=names["conv"],
                         case_key=assemble.case_key(case), predicted_ms=1.0, roofline_ms=0.5,
                         bounds_ms=dict(fixed=0.0, memory=0.1, tensor=0.7, l2=1.0)))
    n = sum(w for c, w in step_calls(batch) if c.op == "conv")  # the calls per step of those shapes
    (roof,) = assemble.losses([], rows, batch, "sm_90")
    (floor,) = assemble.losses([], rows, batch, "sm_90", against="floor")
    assert roof["loss_ms"] == pytest.approx(0.5 * n) and floor["loss_ms"] == pytest.approx(0.3 * n)
    with pytest.raises(ValueError, match="against 'ceiling'"):
        assemble.losses([], rows, batch, "sm_90", against="ceiling")
