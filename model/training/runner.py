"""How a training run executes its steps: three runners with one interface.

    EagerRunner       forward + loss, ``loss.backward()``, torch.optim (fused SGD + Muon) with
                      Python-float schedules: the eager baseline, as airbench runs it.
    FunctionalRunner  forward + loss (compiled under --compile), ``torch.autograd.grad``, and
                      the tensor-only optimizer (model/optim.py ``TensorOptimizer``: schedules
                      computed on the device from a step counter) compiled as one more graph.
    GraphedRunner     the FunctionalRunner's step, batch selection included, captured in a
                      CUDA graph (--cuda-graph) and replayed: per step the host only calls
                      ``replay()``. No host sync, no allocation, no Python per op.

Interface: ``start_run(total_steps, whiten_steps, steps_per_epoch)`` once per run (the tensor optimizers reset
their state in place, so a captured graph serves every run of the process);
``start_epoch(epoch)``; ``step(epoch, i, step) -> (outputs, summed loss, targets)``;
``finish()``. The whitening bias trains for the first ``whiten_steps`` steps only; after that
its gradient is not computed at all, so each non-eager runner has two step variants (two
compiled graphs, two CUDA graphs), both built during the warm-up run.
"""
from __future__ import annotations

import contextlib
import functools

import torch

from ..data import Epoch
from ..optim import TENSOR_OPTIMIZERS, MuonSGD, SGDLookahead, SGDOneCycle

OPTIMIZERS = {"muon_sgd": MuonSGD, "sgd_lookahead": SGDLookahead, "sgd_onecycle": SGDOneCycle}


def loss_args(recipe) -> tuple:
    """The recipe's constants of ``forward_loss``: label smoothing, cutmix's area share, loss scale."""
    return recipe.label_smoothing, recipe.cutmix ** 2 / 1024 if recipe.cutmix else 0.0, recipe.loss_scale


def _ranges(on: bool):
    return torch.profiler.record_function if on else (lambda name: contextlib.nullcontext())


class EagerRunner:
    """torch.optim and ``loss.backward()``: the baseline."""


    def __init__(self, net, recipe, fns):
        self.net, self.recipe, self.fns = net, recipe, fns
        self.opt = None

    def start_run(self, total_steps: int, whiten_steps: int, steps_per_epoch: int = 1) -> None:
        self.whiten_steps = whiten_steps
        self.opt = OPTIMIZERS[self.recipe.optimizer](self.net, self.recipe, total_steps, whiten_steps, steps_per_epoch)

    def start_epoch(self, epoch: Epoch) -> None:
        pass

    def step(self, epoch: Epoch, i: int, step: int, ranges: bool = False):
        inputs, targets = epoch.batch(i)
        rf = _ranges(ranges)
        with rf("forward"):
            outputs, loss = self.fns.forward_loss(inputs, targets, step < self.whiten_steps, *loss_args(self.recipe))
        with rf("backward"):
            loss.backward()
        with rf("optimizer"):
            self.opt.step(step)
        return outputs, loss, targets

    def finish(self) -> None:
        self.opt.finish()


class FunctionalRunner:
    """``torch.autograd.grad`` + the tensor-only optimizer; ``compile_update`` compiles the
    update (and the lookahead) as fullgraph graphs."""


    def __init__(self, net, recipe, fns, compile_update: bool = False):
        self.net, self.recipe, self.fns = net, recipe, fns
        self.opt = TENSOR_OPTIMIZERS[recipe.optimizer](net, recipe)
        self.update, self.lookahead = self.opt.update, self.opt.lookahead
        if compile_update:
            self.update = torch.compile(self.opt.update, fullgraph=True, dynamic=False)
            self.lookahead = torch.compile(self.opt.lookahead, fullgraph=True, dynamic=False)
        self.whiten_steps = 0

    def start_run(self, total_steps: int, whiten_steps: int, steps_per_epoch: int = 1) -> None:
        self.whiten_steps = whiten_steps
        self.opt.reset(total_steps, whiten_steps, steps_per_epoch)

    def start_epoch(self, epoch: Epoch) -> None:
        pass

    def _trained(self, bias_grad: bool) -> list[bool]:
        """Which of the optimizer's parameters get a gradient in this variant."""
        return [bias_grad or p is not self.net.whiten_bias for p in self.opt.params]

    def _body(self, inputs, targets, bias_grad: bool, ranges: bool = False):
        rf = _ranges(ranges)
        with rf("forward"):
            outputs, loss = self.fns.forward_loss(inputs, targets, bias_grad, *loss_args(self.recipe))
        with rf("backward"):
            trained = self._trained(bias_grad)
            grads = iter(torch.autograd.grad(loss, [p for p, t in zip(self.opt.params, trained) if t]))
            grads = [next(grads) if t else None for t in trained]
        with rf("optimizer"):
            self.update(grads)
        return outputs, loss

    def step(self, epoch: Epoch, i: int, step: int, ranges: bool = False):
        inputs, targets = epoch.batch(i)
        outputs, loss = self._body(inputs, targets, step < self.whiten_steps, ranges)
        if self.opt.lookahead_due(step):
            self.lookahead()
        return outputs, loss, targets

    def finish(self) -> None:
        self.opt.finish()


class GraphedRunner(FunctionalRunner):
    """The functional step with the batch gather moved onto the device: the epoch's images,
    labels and batch order are copied once per epoch into persistent buffers, and the step
    picks its batch with a device-side counter. With ``capture`` (a CUDA device) each step
    variant is captured in a CUDA graph on first use, after three warm-up iterations on a side
    stream (cuDNN and Triton autotuning, compilation, lazy initialisation), with every tensor
    those iterations change restored afterwards. Without ``capture`` the same body runs
    eagerly: that is how the CPU tests check it."""


    def __init__(self, net, recipe, fns, compile_update: bool = False, capture: bool = True):
        super().__init__(net, recipe, fns, compile_update)
        if capture and not torch.cuda.is_available():
            raise RuntimeError("--cuda-graph needs a CUDA GPU; without one, leave it out")
        self.capture = capture
        self.device = self.opt.params[0].device
        self.buffers: tuple[torch.Tensor, ...] | None = None  # images, labels, order
        self.batch_t = torch.zeros(1, dtype=torch.long, device=self.device)
        self.graphs: dict = {}  # variant -> (CUDAGraph, outputs, loss, targets)
        self.warmup_iters = 3
        self._next = 0
        self._bodies = {b: functools.partial(self._graph_body, b) for b in (True, False)}  # no closure per step

    def start_epoch(self, epoch: Epoch) -> None:
        shapes = tuple((t.shape, t.dtype, t.stride()) for t in (epoch.images, epoch.labels, epoch.order))
        if self.buffers is None or shapes != self._shapes:
            if self.graphs:  # a new data size: the graphs point at the old buffers
                self.graphs.clear()
            self.buffers = tuple(torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
                                 for t in (epoch.images, epoch.labels, epoch.order))
            self._shapes = shapes
        for buf, t in zip(self.buffers, (epoch.images, epoch.labels, epoch.order)):
            buf.copy_(t)
        self.batch_t.zero_()
        self._next = 0

    def _graph_body(self, bias_grad: bool):
        images, labels, order = self.buffers
        idx = order.index_select(0, self.batch_t).view(-1)
        inputs, targets = images[idx], labels[idx]  # advanced indexing keeps channels_last
        self.batch_t.add_(1)
        outputs, loss = self._body(inputs, targets, bias_grad)
        return outputs, loss, targets

    def _lookahead_body(self):
        self.lookahead()
        return None, None, None

    def _state(self) -> list[torch.Tensor]:
        return list(self.net.state_dict().values()) + self.opt.state_tensors() + [self.batch_t]

    def _capture(self, key, fn):
        state = self._state()
        saved = [t.detach().clone() for t in state]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup_iters):
                self.batch_t.zero_()  # stay inside the epoch's batches however few there are
                fn()
        torch.cuda.current_stream(self.device).wait_stream(side)
        with torch.no_grad():
            for t, s in zip(state, saved):
                t.copy_(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn()
        self.graphs[key] = (graph,) + out
        return self.graphs[key]

    def _run(self, key, fn):
        if not self.capture:
            return fn()
        entry = self.graphs.get(key) or self._capture(key, fn)
        entry[0].replay()
        return entry[1:]

    def step(self, epoch: Epoch, i: int, step: int, ranges: bool = False):
        """Batch ``i`` of the epoch given to ``start_epoch``: the batch counter lives on the
        device, so the steps of an epoch must come in order."""
        if i != self._next:
            raise ValueError(f"GraphedRunner steps through an epoch in order: expected batch {self._next}, got {i}")
        self._next += 1
        bias_grad = step < self.whiten_steps
        outputs, loss, targets = self._run(("step", bias_grad), self._bodies[bias_grad])
        if self.opt.lookahead_due(step):
            self._run(("lookahead",), self._lookahead_body)
        return outputs, loss, targets


def make_runner(net, recipe, fns):
    """The runner ``fns`` (model/training/compiled.py StepFunctions) asks for: eager baseline without
    --compile and --cuda-graph; functional (compiled update) with --compile; graphed with
    --cuda-graph."""
    compiled = fns.mode != "none"
    if fns.cuda_graph:
        return GraphedRunner(net, recipe, fns, compile_update=compiled, capture=True)
    if compiled:
        return FunctionalRunner(net, recipe, fns, compile_update=True)
    return EagerRunner(net, recipe, fns)
