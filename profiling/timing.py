"""Timing one callable: triton.testing.do_bench on a GPU (CUDA events, L2 flushed between
runs, median), a perf_counter loop on a CPU (the minimum of enough repetitions: another
process can only make a call slower, so the minimum is the stable statistic there).

Every measurement says how many repetitions it took and how far they spread; a spread over
UNRELIABLE_SPREAD marks it unreliable (on a CPU: the machine was busy), and the outputs say so.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

CPU_NOTE = "CPU timings say nothing about GPU speed (Triton kernels run in the interpreter there)."
UNRELIABLE_SPREAD = 0.5   # (typical - best) / best above this: the repetitions disagree
TIMING_NOTE_GPU = ("Times: median of triton.testing.do_bench repetitions (CUDA events, L2 flushed), the host-side "
                   "launch included; `graph ms`: the same calls replayed from a CUDA graph (device time alone, "
                   "as in a --cuda-graph training step; L2 not flushed).")
TIMING_NOTE_CPU = ("Times: minimum of at least 5 perf_counter repetitions (at least 0.2 s in all); "
                   "CPU timings move with other load, which the load average records.")


@dataclass
class Timing:
    ms: float           # the reported statistic
    reps: int
    spread: float       # (median - min) / min on a CPU, (p80 - p20) / median on a GPU
    statistic: str

    @property
    def unreliable(self) -> bool:
        return self.spread > UNRELIABLE_SPREAD


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def measure(fn: Callable[[], None], device: torch.device | str, warmup_ms: float = 25, rep_ms: float = 100,
            cpu_min_reps: int = 5, cpu_min_s: float = 0.2, cpu_max_reps: int = 50) -> Timing:
    """Time one call of ``fn``. ``fn`` must not sync by itself on a GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        import triton.testing
        fn()  # compilation / autotuning first: do_bench sizes its repetitions from its first call
        torch.cuda.synchronize(device)
        times = sorted(float(t) for t in triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="all"))
        med = statistics.median(times)
        q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
        return Timing(med, len(times), (q(0.8) - q(0.2)) / med if med > 0 else 0.0, "median")
    fn()  # warm-up (and compilation)
    times, t_all = [], time.perf_counter()
    while len(times) < cpu_min_reps or (time.perf_counter() - t_all < cpu_min_s and len(times) < cpu_max_reps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    best = min(times)
    return Timing(best, len(times), (statistics.median(times) - best) / best if best > 0 else 0.0, "min")


def measure_graph(fn: Callable[[], None], device: torch.device | str, calls: int = 20, replays: int = 10
                  ) -> Timing | None:
    """Time one call of ``fn`` replayed from a CUDA graph of ``calls`` calls: the device's time with
    no host in the way. The first GPU run (H200) timed every Triton conv's forward at 0.2-0.24 ms
    with do_bench whatever its size (cuDNN: 0.06 ms for group3.conv2, whose kernel the model puts
    at 0.05): the Python launch path, not the kernels. None on a CPU. ``fn`` must have run once
    (compilation, autotuning) and must not sync."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture wants
        fn()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    times.sort()
    med = statistics.median(times)
    del graph
    return Timing(med, replays * calls, (times[-1] - times[0]) / med if med > 0 else 0.0, "median")
