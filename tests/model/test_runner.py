"""The runners of model/training/runner.py: the tensor-only optimizer path and the CUDA-graph path
train exactly like the eager torch.optim baseline."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import kernels
import train
from model.training.compiled import StepFunctions
from model.data import TrainLoader
from model.net import CifarNet
from model.recipes import AIRBENCH94, AIRBENCH94_MUON
from model.training.runner import EagerRunner, FunctionalRunner, GraphedRunner
from model.training.trainer import train_run

from test_train import small_problem

CUDA = torch.cuda.is_available()


def _net(recipe, device="cpu", dtype=torch.float32):
    torch.manual_seed(0)
    return CifarNet(kernels.resolve("eager"), widths=(16, 32, 32), head_scale=recipe.head_scale,
                    head_unit_std=recipe.head_unit_std,
                    zero_whiten_bias=recipe.zero_whiten_bias).to(device).to_training_dtype(dtype)


def _run(recipe, runner_cls, data, epochs=2, device="cpu", dtype=torch.float32, **kw):
    """train_run with the runner ``runner_cls``; returns (result, state_dict, runner)."""
    net = _net(recipe, device, dtype)
    fns = StepFunctions(net)
    runner = runner_cls(net, recipe, fns, **kw)
    fns._runners[recipe] = runner
    res = train_run(net, data, recipe, seed=1, dtype=dtype, epochs=epochs, tta_level=0, fns=fns)
    return res, {k: v.detach().clone() for k, v in net.state_dict().items()}, runner


# 6 steps per epoch; the whitening bias trains for the first 3 (0.5 epoch); the legacy recipe's
# lookahead runs at steps 5 and 10
RECIPES = [AIRBENCH94_MUON.replace(batch_size=100, whiten_images=500, whiten_bias_epochs=0.5),
           AIRBENCH94.replace(batch_size=100, whiten_images=500, whiten_bias_epochs=0.5)]


def _close(a: dict, b: dict, tol: float):
    for k in a:
        x, y = a[k].float(), b[k].float()
        assert (x - y).norm() <= tol * y.norm() + 1e-7, (k, ((x - y).norm() / y.norm()).item())


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_functional_runner_matches_torch_optim(recipe):
    data = small_problem()
    eager, state_e, _ = _run(recipe, EagerRunner, data)
    func, state_f, _ = _run(recipe, FunctionalRunner, data)
    assert func["steps"] == eager["steps"] == 12
    for a, b in zip(func["per_epoch"], eager["per_epoch"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
    assert func["accuracy"] == pytest.approx(eager["accuracy"], abs=0.026)  # at most 5 of 200 test images
    # Given the same gradients the two optimizers agree to ~1e-7 per step (test_optim). Through
    # training that difference grows: each step's weights change the next gradients, and
    # Newton-Schulz lifts every direction of a filter's update to unit scale, the smallest
    # (noise-dominated) ones included. Measured after 12 steps: 2.4% (Muon), less for SGD.
    _close(state_f, state_e, 5e-2)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_graph_body_matches_functional_runner(recipe):
    """The graphed runner's step without capture: device-side batch counter and gather,
    persistent buffers, both whitening-bias variants, the lookahead. Bitwise equal."""
    data = small_problem()
    func, state_f, _ = _run(recipe, FunctionalRunner, data)
    graph, state_g, runner = _run(recipe, GraphedRunner, data, capture=False)
    assert graph["per_epoch"] == func["per_epoch"] or all(
        a["train_loss"] == b["train_loss"] for a, b in zip(graph["per_epoch"], func["per_epoch"]))
    assert graph["accuracy"] == func["accuracy"]
    for k in state_f:
        assert torch.equal(state_g[k], state_f[k]), k
    assert runner.batch_t.item() == 6  # the device counter went through the last epoch


def test_runner_reuse_across_runs_resets_state():
    """A runner (and so a captured graph) serves every run: its optimizer state is reset in
    place, and two runs with the same seed give the same result."""
    recipe = RECIPES[0]
    data = small_problem()
    net = _net(recipe)
    fns = StepFunctions(net)
    fns._runners[recipe] = GraphedRunner(net, recipe, fns, capture=False)
    a = train_run(net, data, recipe, seed=5, dtype=torch.float32, epochs=1, tta_level=0, fns=fns)
    b = train_run(net, data, recipe, seed=5, dtype=torch.float32, epochs=1, tta_level=0, fns=fns)
    assert a["per_epoch"][0]["train_loss"] == b["per_epoch"][0]["train_loss"] and a["accuracy"] == b["accuracy"]


class HostReads(TorchDispatchMode):
    """Records every aten op that reads a device value back to the host (a sync on a GPU:
    .item(), bool(t), data-dependent shapes), and every op seen."""
    SYNC = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2",
            "aten::unique_dim", "aten::unique_consecutive", "aten::is_nonzero", "aten::equal"}

    def __init__(self):
        super().__init__()
        self.reads, self.ops = [], set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        self.ops.add(name)
        if name in self.SYNC:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("backend", ["eager", "triton"])
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_graph_body_reads_nothing_back_to_the_host(recipe, backend):
    """Everything a captured step runs (batch gather, forward, loss, backward, update,
    schedules, lookahead) stays on the device: no op that would sync. The Triton ops are
    opaque custom ops here (their insides run in the interpreter on a CPU); on a GPU the
    capture itself fails on any sync, and test_graph_replay_has_no_host_sync checks replay."""
    torch.manual_seed(0)
    net = CifarNet(kernels.resolve(backend), widths=(8, 16, 16)).to_training_dtype(torch.float32)
    fns = StepFunctions(net)
    runner = GraphedRunner(net, recipe, fns, capture=False)
    data = small_problem(100, 10)
    runner.start_run(10, 1)
    runner.start_epoch(TrainLoader(data.train_images, data.train_labels, 50, torch.float32).next_epoch())
    with HostReads() as mode:
        runner._graph_body(True)
        runner._graph_body(False)
        runner._lookahead_body()
    assert mode.reads == [], mode.reads
    assert "aten::convolution_backward" in mode.ops or "speedrun::conv2d_wgrad" in mode.ops or backend == "triton"
    if backend == "triton":
        assert any(o.startswith("speedrun::bn_act") for o in mode.ops), sorted(mode.ops)
    # the detector works: a .item() is caught
    with HostReads() as mode:
        runner.opt.step_t.item()
    assert mode.reads == ["aten::_local_scalar_dense"]


def test_graphed_runner_needs_steps_in_order():
    recipe = RECIPES[0]
    net = _net(recipe)
    fns = StepFunctions(net)
    runner = GraphedRunner(net, recipe, fns, capture=False)
    runner.start_run(10, 2)
    loader = TrainLoader(small_problem(200, 10).train_images, torch.zeros(200, dtype=torch.long), 100, torch.float32)
    runner.start_epoch(loader.next_epoch())
    with pytest.raises(ValueError, match="expected batch 0, got 1"):
        runner.step(None, 1, 0)


def test_epoch_batches_match_iteration():
    data = small_problem(250, 10)
    a = TrainLoader(data.train_images, data.train_labels, 100, torch.float32, seed=3)
    b = TrainLoader(data.train_images, data.train_labels, 100, torch.float32, seed=3)
    epoch = a.next_epoch()
    assert epoch.order.shape == (2, 100)  # the last partial batch is dropped
    for (x, y), (x2, y2) in zip(list(b), [epoch.batch(i) for i in range(len(epoch))]):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_cuda_graph_errors():
    net = _net(RECIPES[0])
    if not CUDA:
        with pytest.raises(ValueError, match="--cuda-graph needs a CUDA device"):
            StepFunctions(net, "none", cuda_graph=True)
    with pytest.raises(ValueError, match="cannot hold --compile reduce-overhead"):
        StepFunctions(net, "reduce-overhead", cuda_graph=True)


@pytest.mark.skipif(CUDA, reason="checks the CPU machine's error message")
def test_cli_cuda_graph_on_cpu(cifar_dir, capsys):
    with pytest.raises(SystemExit, match="--cuda-graph needs a CUDA device"):
        train.main(["--data", cifar_dir, "--device", "cpu", "--subset", "100", "--cuda-graph"])


# ------------------------------------------------------------------------------------- GPU only

@pytest.mark.skipif(not CUDA, reason="CUDA-graph capture needs a CUDA GPU (the graph body itself is tested above)")
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.name)
def test_captured_graph_matches_uncaptured(recipe, monkeypatch):
    # deterministic cuDNN: then replaying the captured kernels must give what running them does
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    data = small_problem(device="cuda")
    # 5 steps: both whitening-bias variants (switch at step 3) and the lookahead (step 4); few
    # enough that a last-bit difference stays below the tolerance (such differences grow per step)
    plain, state_p, _ = _run(recipe, GraphedRunner, data, epochs=0.8, device="cuda", capture=False)
    graph, state_g, runner = _run(recipe, GraphedRunner, data, epochs=0.8, device="cuda", capture=True)
    assert graph["steps"] == 5
    expected = {("step", True), ("step", False)} | ({("lookahead",)} if recipe.optimizer == "sgd_lookahead" else set())
    assert set(runner.graphs) == expected
    assert graph["accuracy"] == pytest.approx(plain["accuracy"], abs=0.006)  # at most 1 of 200 test images
    for a, b in zip(graph["per_epoch"], plain["per_epoch"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    _close(state_g, state_p, 1e-4)


@pytest.mark.skipif(not CUDA, reason="CUDA-graph capture needs a CUDA GPU")
def test_capture_with_two_batches_per_epoch():
    """The warm-up iterations before a capture restart the batch counter: an epoch of two
    batches, captured at its second step, stays in range."""
    recipe = RECIPES[0]
    data = small_problem(200, 100, device="cuda")
    res, _, runner = _run(recipe, GraphedRunner, data, epochs=2, device="cuda", capture=True)
    assert res["steps"] == 4 and len(runner.graphs) == 2
    torch.cuda.synchronize()


@pytest.mark.skipif(not CUDA, reason="host syncs only exist with a CUDA GPU")
def test_graph_replay_has_no_host_sync():
    recipe = RECIPES[0]
    data = small_problem(device="cuda")
    net = _net(recipe, "cuda", torch.float16)
    fns = StepFunctions(net, "none", cuda_graph=True)
    runner = fns.runner(recipe)
    runner.start_run(12, 3)
    loader = TrainLoader(data.train_images, data.train_labels, 100, torch.float16)
    epoch = loader.next_epoch()
    runner.start_epoch(epoch)
    for i in range(4):  # captures both variants
        runner.step(epoch, i, i)
    runner.start_epoch(loader.next_epoch())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for i in range(6):
            runner.step(epoch, i, 6 + i)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(runner.graphs[("step", False)][2]).all()
