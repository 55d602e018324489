"""Silence what native libraries print that is expected and says nothing: kineto's USDT probe
lines around every profiler start and stop, and, on a machine without a GPU, its failed GPU
count. Everything else written to the process's stderr meanwhile is passed on."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

NOISE = [re.compile(r"^USDT:.*(profiler_start|profiler_stop)")]
NOISE_WITHOUT_GPU = [re.compile(r"gpuGetDeviceCount failed with code"),
                     re.compile(r"No CUDA runtime is found")]


def _noise(line: str, gpu: bool) -> bool:
    return any(p.search(line) for p in NOISE + ([] if gpu else NOISE_WITHOUT_GPU))


@contextlib.contextmanager
def native_stderr_filtered(gpu: bool):
    """Capture file descriptor 2 (what C++ code writes) for the block; replay the lines that are not noise."""
    fd = 2  # native code writes to the descriptor, whatever sys.stderr is
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            kept = [ln for ln in tmp.read().decode(errors="replace").splitlines(keepends=True) if not _noise(ln, gpu)]
            if kept:
                os.write(fd, "".join(kept).encode())
