"""Host time of one training step, per backend, without a GPU.

What the CPU spends per step before the GPU has anything to do: Python, the dispatcher, autograd,
the optimizer's bookkeeping, our launchers' Python and the kernel launches themselves. Measured
here by running the same step (forward, loss, backward, optimizer: ``EagerRunner``'s step) on the
CPU at a size where the arithmetic is negligible: batch 1, every conv group 32 channels wide (32,
not fewer, so that ``conv=fp8`` takes the same fp8 / fp16 route per layer as the real network), one
thread, with every Triton kernel launch recorded instead of executed; median of ``STEPS`` steps.
The op sequence, the Python and the dispatch are those of the real step; what the CPU does not
show is the cost of launching each kernel on a GPU, added as an assumption per launch:
ATEN_LAUNCH_US per ATen kernel (the driver launch and the caching allocator) and TRITON_LAUNCH_US
per Triton launch (Triton's launcher: argument binding, cache lookup, driver launch). The kernels
are counted with a dispatch mode (views and allocations are not kernels). The tiny-size CPU
arithmetic that remains (about 1 ms per step on this project's CPU machine) makes the figure an
upper bound. A step whose host time exceeds its device time is host-bound: the GPU waits for the
CPU (``--cuda-graph`` removes all of it).
"""
from __future__ import annotations

import statistics
import time

ATEN_LAUNCH_US = 4.0
TRITON_LAUNCH_US = 8.0
STEPS = 15
WIDTHS = (32, 32, 32)


def _measure(backend: str, recipe_name: str | None = None) -> dict:
    import torch

    import kernels
    from model.training.compiled import forward_loss
    from model.net import build_net
    from model.training.runner import OPTIMIZERS, loss_args
    from model.recipes import get_recipe
    from .glue import record_aten
    from .capture import record_launches
    recipe = get_recipe(recipe_name or "airbench94_muon")
    # the recipe's network at widths of 32 (hlb's and airbench96's structure kept)
    recipe = recipe.replace(widths=WIDTHS, batch_size=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = build_net(kernels.resolve(backend), recipe)
        net.to(memory_format=torch.channels_last)
        opt = OPTIMIZERS[recipe.optimizer](net, recipe, 200, 75, 25)
        g = torch.Generator().manual_seed(0)
        shape = (1, 1, 28, 28) if recipe.dataset == "mnist" else (1, 3, 32, 32)
        x = torch.randn(shape, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.zeros(1, dtype=torch.long)
        if recipe.cutmix:
            y = torch.zeros((1, 2), dtype=torch.long)

        def step(i):
            _, loss = forward_loss(net, x, y, i < 75, *loss_args(recipe))
            loss.backward()
            opt.step(i)
        launches: list = []
        with record_launches(launches, light=True):
            step(0)  # lazy initialisation
            times = []
            for i in range(STEPS):
                launches.clear()
                t0 = time.perf_counter()
                step(i + 1)
                times.append(time.perf_counter() - t0)
            n_triton = len(launches)
            with record_aten(compute=True, into_custom=False) as rec:
                step(STEPS + 1)
    finally:
        torch.set_num_threads(threads)
    aten = sum(1 for o in rec.ops if o.kind != "custom")
    return dict(python_ms=1e3 * statistics.median(times), aten_kernels=aten, triton_launches=n_triton)


def host_times(batch: int | None = None, recipe: str | None = None) -> list[dict]:
    """Host milliseconds per training step for each backend (see the module docstring; the
    batch does not change the host's work)."""
    import kernels
    rows = []
    for backend in kernels.backends():
        if backend == "compile":
            rows.append(dict(backend=backend, host_ms=None,
                             note="torch.compile op by op: not measured here (compiled code runs on a GPU)"))
            continue
        m = _measure(backend, recipe)
        launch_ms = 1e-3 * (m["aten_kernels"] * ATEN_LAUNCH_US + m["triton_launches"] * TRITON_LAUNCH_US)
        rows.append(dict(backend=backend, host_ms=m["python_ms"] + launch_ms, launch_ms=launch_ms,
                         launches=m["aten_kernels"] + m["triton_launches"], **m,
                         note=f"CPU step at batch 1, widths {WIDTHS}, launches recorded; + {ATEN_LAUNCH_US:g} us per "
                              f"ATen and {TRITON_LAUNCH_US:g} us per Triton launch (assumed)"))
    return rows
