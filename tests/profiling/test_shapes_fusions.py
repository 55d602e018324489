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
