"""Timing one callable: triton.testing.do_bench on a GPU (CUDA events, L2 flushed between
runs, median), a plain perf_counter loop on a CPU."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def time_ms(fn: Callable[[], None], device: torch.device | str, warmup_ms: float = 25, rep_ms: float = 100,
            cpu_reps: int = 3) -> float:
    """Median time of one call of ``fn`` in milliseconds. ``fn`` must not sync by itself on GPU."""
    device = torch.device(device)
    if device.type == "cuda":
        import triton.testing
        fn()  # compilation / autotuning first: do_bench sizes its repetitions from its first call
        torch.cuda.synchronize(device)
        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(cpu_reps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)
