"""The fusion savings of issue 23 (profiling/shapes.py fusion_savings), checked by hand on a small network."""
import pytest

from profiling.devices import PEAKS
from profiling.shapes import fusion_savings, network_ops


def test_fusion_savings_count_the_bytes_each_fusion_removes():
    cases = network_ops(2)
    by = {c.name: c for c in cases}
    rows = {r["fusion"]: r for r in fusion_savings(cases, PEAKS["H100-SXM"], esize=2)}
    # group1: conv1 writes 64x31x31 per image, the pool keeps 64x15x15
    y1, p1 = 2 * 64 * 31 * 31, 2 * 64 * 15 * 15
    y2, p2 = 2 * 256 * 15 * 15, 2 * 256 * 7 * 7
    y3, p3 = 2 * 256 * 7 * 7, 2 * 256 * 3 * 3
    assert rows["pool_stats_in_conv1"]["mb"] * 1e6 == pytest.approx(2 * 2 * (y1 + y2 + y3) + 2 * (p1 + p2 + p3))
    assert rows["stats_in_conv2"]["mb"] * 1e6 == pytest.approx(2 * (p1 + p2 + p3))  # conv2 keeps the pooled size
    # every BatchNorm but the last (the final pool reads it) feeds a conv: its apply pass goes
    feeds_conv = [n for n in ("group1.norm1", "group1.norm2", "group2.norm1", "group2.norm2", "group3.norm1")]
    x = sum(by[n].numel(by[n].x_shape) for n in feeds_conv)
    assert rows["bn_act_in_prologue"]["mb"] * 1e6 == pytest.approx(2 * 2 * x)
    assert rows["bn_bwd_sums_in_dgrad"]["mb"] * 1e6 == pytest.approx(2 * x)
    assert rows["bn_act_in_prologue"]["layers"] == feeds_conv
    assert rows["pool_bwd_in_bn_dx"]["mb"] * 1e6 == pytest.approx(2 * 2 * (p1 + p2 + p3))
    # the time is the bytes at the model's effective HBM bandwidth
    from profiling.perfmodel import MEM_EFFICIENCY
    bw = PEAKS["H100-SXM"].hbm_gbps * 1e9 * MEM_EFFICIENCY
    assert rows["stats_in_conv2"]["ms"] == pytest.approx(1e3 * rows["stats_in_conv2"]["mb"] * 1e6 / bw)


def _row(kernel, case, phase, op, impl="triton", arch="sm_90", **bounds):
    from profiling.shapes import case_key
    b = dict(memory=0.0, latency=0.0, l2=0.0, issue=0.0, tensor=0.0, smem=0.0, fixed=0.002)
    b.update(bounds)
    return dict(kernel=kernel, case_key=case_key(case), phase=phase, op=op, impl=impl, arch=arch, default=True,
                bounds_ms=b)


def test_fusion_costs_charge_the_extra_work_to_the_kernels_that_absorb_it():
    """An unbuilt fusion's extra work: the prologue transform once per tap in the next conv's
    forward and weight-grad, the backward sums in its input-grad; overlapped it costs only the growth
    of the kernel's largest bound, serial its own bound in full; rows are found by case (group3.conv1
    has group2.conv2's shape, so the rows hold it once)."""
    from profiling.perfmodel import MEM_EFFICIENCY
    from profiling.shapes import fusion_costs
    peak = PEAKS["H100-SXM"]
    cases = network_ops(2)
    rows = []
    for i, c in enumerate(cases[:-1]):
        nxt = cases[i + 1]
        if c.op == "bn_act" and nxt.op == "conv":
            rows += [_row("_apply_kernel", c, "fwd", "bn_act", issue=0.01, memory=0.02),
                     _row("_bwd_reduce_kernel", c, "bwd", "bn_act", issue=0.03),
                     # the forward is issue-bound: the transform adds in full; the weight-grad has 0.05 of slack
                     _row("_conv_kernel", nxt, "fwd", "conv", issue=0.2, l2=0.1),
                     _row("_wgrad_kernel", nxt, "bwd", "conv", issue=0.1, l2=0.15),
                     _row("_conv_kernel", nxt, "bwd", "conv", issue=0.1, l2=0.5, memory=0.05),
                     # an other implementation's or arch's rows are not read
                     _row("_conv_kernel", nxt, "fwd", "conv", impl="fp8", issue=9.0),
                     _row("_conv_kernel", nxt, "fwd", "conv", arch="sm_80", issue=9.0)]
    out = {r["fusion"]: r for r in fusion_costs(fusion_savings(cases, peak), cases, rows, "sm_90", peak)}
    # rows carry no layer name: each layer finds its kernels by its case (as static's deduplicated rows)
    assert set(out["bn_act_in_prologue"]["by_layer"]) == set(out["bn_act_in_prologue"]["layers"])
    assert len(out["bn_act_in_prologue"]["layers"]) == 5
    # 9 taps x 0.01 = 0.09 per kernel: the forward grows by 0.09, the weight-grad by 0.09 - 0.05 of slack
    pro = out["bn_act_in_prologue"]["by_layer"]["group2.norm2"]
    assert pro["extra_ms"] == pytest.approx(0.09 + 0.04)
    assert pro["extra_serial_ms"] == pytest.approx(0.18)
    assert pro["net_ms"] == pytest.approx(pro["saved_ms"] - 0.13)
    assert out["bn_act_in_prologue"]["extra_ms"] == pytest.approx(5 * 0.13)
    # the input-grad is L2-bound at 0.5: the reduce pass's 0.03 of issue and x's read hide under it
    bw = peak.hbm_gbps * 1e9 * MEM_EFFICIENCY
    c = by_name(cases, "group2.norm2")
    x_ms = 1e3 * 2 * c.numel(c.x_shape) / bw
    sums = out["bn_bwd_sums_in_dgrad"]["by_layer"]["group2.norm2"]
    assert sums["extra_ms"] == 0.0
    assert sums["extra_serial_ms"] == pytest.approx(max(0.03, x_ms))
    assert sums["net_low_ms"] == pytest.approx(sums["saved_ms"] - max(0.03, x_ms))
    assert out["bn_bwd_sums_in_dgrad"]["net_ms"] == pytest.approx(out["bn_bwd_sums_in_dgrad"]["ms"])
    # built fusions carry no extra here (the fused backend's prediction has it), nor do missing kernels
    assert out["pool_stats_in_conv1"]["extra_ms"] is None and out["pool_stats_in_conv1"]["by_layer"] is None
    none = {r["fusion"]: r for r in fusion_costs(fusion_savings(cases, peak), cases, rows[:3], "sm_90", peak)}
    assert none["bn_act_in_prologue"]["net_ms"] is None


def by_name(cases, name):
    return next(c for c in cases if c.name == name)
