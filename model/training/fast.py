"""``--fast``: the fastest known configuration for this GPU, chosen from the newest evidence.

Evidence, best first:
  1. a GPU measurement: the newest ``reports/*/fast.json`` written on this GPU's architecture
     (``{"arch": "sm_90", "backend": ..., "compile": ..., "cuda_graph": ..., "basis": ...}``:
     what a GPU A/B run ranked fastest). The first, sm_90, is from the first GPU run (an H200,
     reports/nvidia-h200-2026-11-30): ``--backend triton --compile default --cuda-graph``.
  2. the static model (``python -m profiling static --commit``: reports/static/static.json): the
     backend with the smallest *predicted* training step on this architecture among those it models
     whole (no op left to cuDNN / ATen, whose time it knows only as a roofline) and that run there
     (fp8 needs compute capability 8.9+). A prediction, with its range, not a measurement.
The static model does not model torch.compile, so ``--fast`` keeps ``--compile none`` (the Triton
ops are custom ops either way; what compile could fuse around them is unmeasured) and adds
``--cuda-graph`` (one replay per step: no Python or launch overhead on the host).

``choose(device)`` returns a ``FastChoice``; train.py prints its ``line()`` in full.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATIC = os.path.join(ROOT, "reports", "static", "static.json")


class FastError(ValueError):
    """--fast cannot choose (no GPU, no evidence)."""


@dataclass(frozen=True)
class FastChoice:
    backend: str
    compile: str
    cuda_graph: bool
    basis: str            # where the choice comes from, with the figures

    def flags(self) -> str:
        return f"--backend {self.backend} --compile {self.compile}" + (" --cuda-graph" if self.cuda_graph else "")

    def line(self) -> str:
        return f"--fast: {self.flags()} ({self.basis})"


def arch_of(device: torch.device) -> str:
    """The static model's architecture for ``device``: sm_80 for compute capability 8.x, sm_90 above."""
    major, _ = torch.cuda.get_device_capability(device)
    return "sm_80" if major < 9 else "sm_90"


def from_gpu_reports(arch: str, reports: str = os.path.join(ROOT, "reports")) -> FastChoice | None:
    found = []
    for path in glob.glob(os.path.join(reports, "*", "fast.json")):
        try:
            d = json.load(open(path))
        except (OSError, ValueError):
            continue
        if d.get("arch") == arch and d.get("backend"):
            found.append((os.path.getmtime(path), path, d))
    if not found:
        return None
    _, path, d = max(found, key=lambda t: t[0])
    return FastChoice(d["backend"], d.get("compile", "none"), bool(d.get("cuda_graph", True)),
                      f"measured on a GPU: {os.path.relpath(path, ROOT)}: {d.get('basis', '')}".rstrip(": "))


def from_static(arch: str, path: str = STATIC) -> FastChoice:
    try:
        steps = json.load(open(path))["steps"]
    except (OSError, ValueError, KeyError) as e:
        raise FastError(f"--fast: no static model report to rank the backends ({path}: {e}); run "
                        f"python -m profiling static --commit") from None
    ranked = sorted((s for s in steps if s["arch"] == arch and s.get("predicted_ms") and not s.get("eager_ops")),
                    key=lambda s: s["predicted_ms"])
    if not ranked:
        raise FastError(f"--fast: the static model ({path}) predicts no whole backend for {arch}")
    best = ranked[0]
    lo, hi = best.get("predicted_range_ms") or (best["predicted_ms"], best["predicted_ms"])
    others = ", ".join(f"{s['backend']} {s['predicted_ms']:.2f}" for s in ranked[1:])
    basis = (f"predicted by the static model, {arch}: {best['predicted_ms']:.2f} ms per training step of Triton kernels "
             f"(range {lo:.2f}-{hi:.2f}), fastest of the backends it models whole" + (f"; {others} ms" if others else "")
             + "; a prediction, not a measurement")
    return FastChoice(best["backend"], "none", True, basis)


def choose(device: torch.device) -> FastChoice:
    """The fastest known configuration for ``device`` (a CUDA device); FastError without one."""
    if device.type != "cuda":
        raise FastError(f"--fast picks the fastest configuration of a GPU; this run is on {device.type} "
                        f"(the smoke run on a CPU is the default backend: drop --fast)")
    arch = arch_of(device)
    return from_gpu_reports(arch) or from_static(arch)
