"""The work of one recorded kernel launch, for the static model (profiling/perfmodel.py).

Each kernel's work model is written next to it, in its op's spec (kernels/<op>.py, keyed by the
kernel function itself; kernels/spec.py says what a ``Work`` holds and the traffic model every
model follows). ``work_of`` finds it for a launch; a kernel without one (a new kernel nobody has
modelled yet) gets the generic model here, every tensor argument counted once, and is marked so
(``model="generic"``) in the report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from kernels.spec import Work, work_model

__all__ = ["TensorInfo", "Work", "work_model", "work_of"]


@dataclass
class TensorInfo:
    """What a work model sees of a tensor argument of a recorded launch."""
    shape: tuple
    stride: tuple
    dtype: str
    esize: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * self.esize


def _generic(launch, peak, capacity: int) -> Work:
    elems = math.prod(v for k, v in launch.cx.items() if k.startswith("BLOCK") and isinstance(v, int)) or 1
    tensors = [v for v in launch.args.values() if isinstance(v, TensorInfo)]
    nbytes = sum(t.nbytes for t in tensors)
    es = max((t.esize for t in tensors), default=4)
    return Work("memory", 1, elems, nbytes, nbytes, es * max(len(tensors), 1),
                notes=["no kernel model: every tensor argument counted once"], model="generic")


def work_of(launch, peak, capacity: int | None = None) -> Work:
    """``capacity``: programs of this launch that fit on the GPU at once (SMs x resident per SM)."""
    return (work_model(launch.fn) or _generic)(launch, peak, capacity or peak.sms)
