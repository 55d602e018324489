"""profiling trace's per-conv-layer table (conv_layer_times) on a small hand-made Chrome trace: a
kernel belongs to the layer whose forward ``conv`` range or conv autograd node launched it (runtime
or driver launch, matched by correlation id and thread), averaged over whole steps."""
import gzip
import json

import pytest

from profiling.trace import BACKWARD_PREFIX, conv_layer_names, conv_layer_times, layers_side_by_side

LAYERS = ["whiten", "group1.conv1"]


def _trace(tmp_path, steps=2, fwd_us=(10.0, 20.0), bwd_us=(1.0, 30.0), extra_range=False, gz=True):
    ev, corr, t = [], [0], [0.0]

    def launch(tid, dur, cat="cuda_driver"):
        corr[0] += 1
        ev.append(dict(cat=cat, name="cuLaunchKernel", tid=tid, ts=t[0] + 1, dur=1, args=dict(correlation=corr[0])))
        ev.append(dict(cat="kernel", name="k", tid=7, ts=t[0] + 5, dur=dur,
                       args={"correlation": corr[0], "grid": [int(dur), 1, 1], "block": [128, 1, 1],
                             "shared memory": 1024, "registers per thread": 96}))

    for _ in range(steps):
        for d in fwd_us:  # forward: one conv range per layer, in layer order, on the main thread (1)
            ev.append(dict(cat="user_annotation", name="conv", tid=1, ts=t[0], dur=3))
            launch(1, d, cat="cuda_runtime")
            t[0] += 10
        ev.append(dict(cat="user_annotation", name="maxpool", tid=1, ts=t[0], dur=3))
        launch(1, 500.0)  # not a conv: counted nowhere
        t[0] += 10
        for d in reversed(bwd_us):  # backward: one node per layer, last layer first, on the engine's thread (2)
            ev.append(dict(cat="cpu_op", name=BACKWARD_PREFIX + "ConvolutionBackward0", tid=2, ts=t[0], dur=3))
            launch(2, d)
            launch(1, 900.0)  # the same time on another thread: not this node's
            t[0] += 10
    if extra_range:
        ev.append(dict(cat="user_annotation", name="conv", tid=1, ts=t[0], dur=3))
    path = tmp_path / ("t.json.gz" if gz else "t.json")
    data = json.dumps(dict(traceEvents=ev)).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


@pytest.mark.parametrize("gz", [True, False])
def test_each_kernel_goes_to_the_layer_that_launched_it(tmp_path, gz):
    rows = conv_layer_times(_trace(tmp_path, gz=gz), LAYERS)
    assert [r["layer"] for r in rows] == LAYERS
    assert rows[0]["fwd_ms"] == pytest.approx(0.010) and rows[1]["fwd_ms"] == pytest.approx(0.020)
    assert rows[0]["bwd_ms"] == pytest.approx(0.001) and rows[1]["bwd_ms"] == pytest.approx(0.030)
    assert rows[1]["fwd_kernels"] == 1 and rows[1]["bwd_kernels"] == 1
    # each launch with what identifies its configuration: grid, threads, shared memory (and its mean ms)
    assert rows[1]["bwd_launches"] == [dict(kernel="k", grid=[30, 1, 1], threads=128, shared=1024, regs=96,
                                            ms=pytest.approx(0.030))]
    assert [ln["grid"] for ln in rows[0]["fwd_launches"]] == [[10, 1, 1]]


def test_ranges_not_in_whole_steps_give_no_table(tmp_path):
    assert conv_layer_times(_trace(tmp_path, extra_range=True), LAYERS) is None
    assert conv_layer_times(_trace(tmp_path), LAYERS + ["group1.conv2"]) is None


def test_side_by_side_ratios_and_total(tmp_path):
    a = dict(conv_layers=conv_layer_times(_trace(tmp_path), LAYERS))
    b = dict(conv_layers=conv_layer_times(_trace(tmp_path, fwd_us=(5.0, 40.0), bwd_us=(1.0, 60.0)), LAYERS))
    text = layers_side_by_side(a, b)
    assert "| group1.conv1 | 0.02 | 0.04 | 2 | 0.03 | 0.06 | 2 | 0.05 | 0.1 | 2 |" in text
    assert "| all convs |" in text


def test_layer_names_follow_the_network():
    import kernels
    from model.net import build_net
    from model.recipes import get_recipe
    net = build_net(kernels.resolve("eager"), get_recipe("airbench94_muon"))
    assert conv_layer_names(net) == ["whiten", "group1.conv1", "group1.conv2", "group2.conv1", "group2.conv2",
                                     "group3.conv1", "group3.conv2"]
