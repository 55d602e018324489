"""What the lab knows about an op, declared next to its kernels: one ``OpSpec`` per op.

An op's kernels, its launchers, its registered implementations and its spec live in one file
(kernels/<op>.py). The spec is everything profiling needs without knowing the op's name:

- ``out_shape``, ``flops``, ``phase_bytes``, ``bytes_min``: the op's shapes and the must-move bytes
  and FLOPs of a call (the roofline), for an ``OpCase`` (the op at one place in the network);
- ``sample_call(case, device, dtype, grad=...)``: the one place that builds an op's inputs, as the
  network passes them (used by ``profiling bench``, the pytest-benchmark suite and ``profiling static``);
- ``fp8_ready``: the fp8 state a network step past the first has for this op (``profiling static``);
- ``trace``: how one call of the op becomes an ``OpCase`` when a recipe's network is traced;
- ``extra_cases``: cases of an op the network does not call (a new op benchmarked before it is used);
- ``fuse_cases``: for a fused block, the network's op sequence rewritten into its calls (the
  backends that select it; profiling/shapes.py ``network_ops(backend=...)``);
- ``config_lists``: the launchers' configuration lists (named tuples), each of which can be pinned
  to one entry (``ConfigList.pinned``); ``forget_choices`` clears the launchers' per-shape choices;
  ``variants``: other forms of the default launch that only a GPU's autotuner chooses (name ->
  a context manager under which the launchers run that form), compiled and modelled beside the lists;
- ``work``: the static work model of each of its Triton kernels, keyed by the kernel itself
  (``Work``: main-loop iterations, elements per iteration, DRAM / L2 bytes, FLOPs), and ``tags``:
  what the rules of profiling/rules.py need to know about a kernel (``"pipelined_gemm"`` ...).

Adding an op: its kernels, its launcher (launching through ``kernels._triton.launch``, so that
profiling can record it), its implementations (``kernels.register``) and its spec
(``register_spec``) in one file; nothing under profiling/ changes.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

L2_FIT = 0.5  # a re-read tensor stays in L2 when it takes at most this fraction of it


# ------------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class OpCase:
    """One call of an op in the network: where (``name``), on what input (``x_shape``, N C H W),
    with what parameters. Its shapes, bytes and FLOPs are the op's spec's."""
    op: str                 # registry op name
    name: str               # where in the network, e.g. "group2.conv1"
    x_shape: tuple          # N, C, H, W
    params: dict = field(default_factory=dict)

    @property
    def spec(self) -> OpSpec:
        return spec(self.op)

    @property
    def out_shape(self) -> tuple:
        return self.spec.out_shape(self)

    def numel(self, shape) -> int:
        return math.prod(shape)

    def flops(self, mode: str = "fwd") -> float:
        """Floating-point operations (multiply-add = 2) of ``mode``: 'fwd' or 'fwd+bwd'."""
        return self.spec.flops(self, mode)

    def phase_bytes(self, phase: str, esize: int = 2) -> float:
        """Must-move bytes of the training forward ("fwd") or backward ("bwd")."""
        return self.spec.phase_bytes(self, phase, esize)

    def bytes_min(self, mode: str = "fwd", esize: int = 2) -> float:
        """Must-move bytes of an inference forward ("fwd") or a training step ("fwd+bwd")."""
        return self.spec.bytes_min(self, mode, esize)

    def phase_bound_s(self, peak, phase: str, esize: int = 2, fp8: bool = False) -> float:
        """Roofline lower bound in seconds of one training phase ("fwd" or "bwd")."""
        mem = self.phase_bytes(phase, esize) / (peak.hbm_gbps * 1e9)
        gemm = self.flops("fwd")
        flops = gemm if phase == "fwd" else self.flops("fwd+bwd") - gemm
        tflops = (peak.fp8_tflops if fp8 and peak.fp8_tflops else peak.fp16_tflops)
        return max(mem, flops / (tflops * 1e12))

    def bound_s(self, peak, mode: str = "fwd", esize: int = 2, fp8: bool = False) -> float:
        """Roofline lower bound in seconds on ``peak`` (profiling.devices.Peak)."""
        mem = self.bytes_min(mode, esize) / (peak.hbm_gbps * 1e9)
        tflops = (peak.fp8_tflops if fp8 and peak.fp8_tflops else peak.fp16_tflops)
        return max(mem, self.flops(mode) / (tflops * 1e12))

    def label(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.x_shape))}"


@dataclass
class SampleCall:
    """An op's arguments as the network passes them (``args``), the output gradient of its backward
    (``dy``, when built with ``grad``) and, for an op with an eval mode, its eval call's arguments."""
    args: tuple
    dy: object = None
    eval_args: tuple | None = None

    @property
    def x(self):
        return self.args[0]


class Sampler:
    """Tensors for a sample call: ``fill`` "randn" (seeded normal values, for timing and comparing
    implementations) or "empty" (shapes, strides and dtypes only: profiling static records launches
    and runs nothing). 4-D tensors are channels_last, as the network keeps its activations and weights."""

    def __init__(self, device, dtype, fill: str = "randn", seed: int = 0):
        if fill not in ("randn", "empty"):
            raise ValueError(f"fill must be 'randn' or 'empty', got {fill!r}")
        self.device, self.dtype, self.fill = torch.device(device), dtype, fill
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def __call__(self, shape, dtype=None, scale: float = 1.0, requires_grad: bool = False) -> torch.Tensor:
        dtype = dtype or self.dtype
        fmt = torch.channels_last if len(shape) == 4 else torch.contiguous_format
        if self.fill == "empty":
            t = torch.empty(shape, dtype=dtype, device=self.device, memory_format=fmt)
        else:
            t = (torch.randn(shape, generator=self.gen) * scale).to(device=self.device, dtype=dtype)
            t = t.contiguous(memory_format=fmt)
        return t.requires_grad_(requires_grad)


# ------------------------------------------------------------------------------------- work
@dataclass
class Work:
    """What one launch of a kernel does (the static model's input, profiling/perfmodel.py).

    Traffic model (the same for every kernel): every tensor a kernel streams is read (or written)
    once from DRAM per pass it makes; an operand that several output tiles re-read (a GEMM's A
    across the column blocks of the output) comes from L2 when it fits in ``L2_FIT`` of the L2 or
    when the program order is grouped (a ``GROUP_M`` constexpr) so that the tiles sharing it run
    together, otherwise it is re-read from DRAM once per column block; everything the tiles load
    goes through L2 (``l2_bytes``), whatever DRAM serves."""
    kind: str                     # "memory" or "gemm"
    iters: float                  # main-loop iterations per program (mean; 1 for a loop-free kernel)
    elems_per_iter: int           # tensor elements one iteration of one program handles
    dram_bytes: float             # DRAM traffic under the model above
    min_bytes: float              # what the kernel must move at least (each tensor once)
    bytes_per_elem: float         # DRAM bytes per element handled (the issue budget's denominator)
    flops: float = 0.0            # useful FLOPs (GEMMs)
    l2_bytes: float | None = None  # bytes loaded through L2 by all tiles (GEMMs)
    notes: list = field(default_factory=list)
    model: str = "kernel"         # "kernel": a model written for it; "generic": the fallback
    units: int | None = None      # independent tiles of work in the launch (a grid can use at most this many)
    read_bytes: float | None = None  # the part of dram_bytes that is read (loads wait; stores do not); None: all
    tile_iters: int | None = None  # a persistent kernel's main-loop iterations per tile: the loop's guarded
    # blocks (a tile's prologue and epilogue, under a branch) run once per this many iterations


# A work model: (launch, peak, capacity) -> Work. ``launch`` has ``args`` (name -> int, float or a
# tensor's facts: shape, stride, esize, numel, nbytes), ``cx`` (constexprs by name) and ``grid``;
# ``peak`` the modelled GPU (profiling/devices.py); ``capacity`` the programs that fit on it at once.
WorkModel = Callable[..., Work]


def grid_of(launch) -> tuple:
    return tuple(launch.grid) + (1,) * (3 - len(launch.grid))


def programs_of(launch) -> int:
    return math.prod(grid_of(launch))


def rows_iters(M: int, rows: int, block: int, programs_m: int) -> float:
    """Mean iterations of a loop over ``rows`` rows in steps of ``block``, the last program short."""
    full = max(programs_m - 1, 0)
    last = max(M - full * rows, 0)
    return (full * math.ceil(rows / block) + math.ceil(last / block)) / max(programs_m, 1)


def stride_iters(launch) -> float:
    """Mean tiles per program of a grid-stride loop over TILES tiles on grid[0] programs."""
    return launch.args["TILES"] / grid_of(launch)[0]


# ---------------------------------------------------------------------------- configurations
class ConfigList(list):
    """A launcher's configuration list (named tuples, in preference order), readable as a plain
    list, that profiling can enumerate (``name``, iteration) and pin to one entry for a while."""

    def __init__(self, name: str, entries, forget: Callable[[], None] | None = None):
        super().__init__(entries)
        self.name = name
        self._forget = forget

    @contextlib.contextmanager
    def pinned(self, entry) -> Iterator[None]:
        """Within the block the list holds ``entry`` alone and the launchers' cached choices are
        forgotten (before and after), so that every launch asks for, and gets, this entry."""
        saved = list(self)
        self[:] = [entry]
        if self._forget:
            self._forget()
        try:
            yield
        finally:
            self[:] = saved
            if self._forget:
                self._forget()


# -------------------------------------------------------------------------------------- spec
class OpSpec:
    """The base of every op's spec; an op overrides what applies to it."""
    name: str = ""
    config_lists: tuple = ()
    variants: dict = {}
    work: dict = {}
    tags: dict = {}

    def out_shape(self, case: OpCase) -> tuple:
        return case.x_shape

    def variants_for(self, impl: str, case: "OpCase | None" = None) -> dict:
        """The spec's ``variants`` that apply to ``impl`` (a variant's context maker may name the impls
        it changes in an ``impls`` attribute; without one it applies to every impl) and, given ``case``,
        to that shape (an ``applies(case)`` attribute, where a variant changes some shapes only)."""
        return {n: f for n, f in self.variants.items() if impl in getattr(f, "impls", (impl,))
                and (case is None or getattr(f, "applies", lambda c: True)(case))}

    def flops(self, case: OpCase, mode: str = "fwd") -> float:
        return 0.0  # a memory-bound op: its few FLOPs per byte do not bound it

    def phase_bytes(self, case: OpCase, phase: str, esize: int = 2) -> float:
        """Default: an elementwise op, x read and y written once (the backward: dy read, dx written)."""
        return esize * (case.numel(case.x_shape) + case.numel(self.out_shape(case)))

    def bytes_min(self, case: OpCase, mode: str = "fwd", esize: int = 2) -> float:
        if mode == "fwd":
            return self.phase_bytes(case, "fwd", esize)
        return self.phase_bytes(case, "fwd", esize) + self.phase_bytes(case, "bwd", esize)

    def sample_call(self, case: OpCase, device, dtype, *, grad: bool = True, fill: str = "randn",
                    seed: int = 0) -> SampleCall:
        raise NotImplementedError(f"op {self.name}: no sample_call")

    def fp8_ready(self, call: SampleCall, case: OpCase, phase: str, state) -> None:
        """Give ``call``'s tensors, in ``state`` (the kernels.fp8.Fp8State the call is made with),
        the fp8 state a network step past the first has ("fwd": before the forward, "bwd": before
        the backward, with ``call.dy``); nothing by default."""

    def trace(self, x, args: tuple, kwargs: dict) -> tuple[dict, tuple, str, str]:
        """One call of the op with input ``x`` (and the rest of its arguments), as a recipe's network
        makes it: (the case's params, the output's shape, the name of a call made outside any
        module, a suffix to the calling module's path)."""
        return {}, tuple(x.shape), self.name, ""

    # the case records which op produced its input (``from_conv_cin``: a conv's input channels, 0 for
    # any other producer): with conv=fp8 the backward of such an op writes the conv's gradient copy
    tracks_producer: bool = False
    # a case's ``params["input_grad"] = False`` models a call whose input needs no gradient (its
    # backward skips the input-grad): the op after the frozen whitening conv (profiling step_calls)
    optional_input_grad: bool = False

    def produces(self, case: OpCase) -> int:
        """What a consumer of this op's output records as ``from_conv_cin``: 0 but for a conv."""
        return 0

    def fuse_cases(self, cases: list[OpCase]) -> list[OpCase]:
        """A network's op sequence (the composed ops) rewritten into this op's calls, for a backend
        whose implementation of this op is a fused one (it does not ``compose`` the others): a fused
        block replaces the calls it absorbs. Unchanged by default."""
        return cases

    def extra_cases(self, batch: int) -> list[OpCase]:
        """Cases of this op beyond those of the network (an op no network calls yet)."""
        return []

    def forget_choices(self) -> None:
        """Forget the launchers' per-shape configuration choices (nothing by default)."""


_SPECS: dict[str, OpSpec] = {}


def register_spec(s: OpSpec) -> OpSpec:
    if s.name in _SPECS and _SPECS[s.name] is not s:
        raise ValueError(f"op {s.name!r} has a spec already")
    _SPECS[s.name] = s
    return s


def spec(op: str) -> OpSpec:
    """The spec of ``op``; an op registered without one gets the base spec (elementwise bytes)."""
    if op not in _SPECS:
        base = OpSpec()
        base.name = op
        return base
    return _SPECS[op]


def specs() -> list[OpSpec]:
    return [_SPECS[k] for k in sorted(_SPECS)]


def work_model(kernel) -> WorkModel | None:
    """The work model of a Triton kernel (the object its launcher launches), from its op's spec."""
    for s in _SPECS.values():
        if kernel in s.work:
            return s.work[kernel]
    return None


def kernel_tags(kernel) -> tuple:
    """What a kernel's spec says of it for the rules (``pipelined_gemm``, ``implicit_gemm_loop``,
    ``scatter``), or ()."""
    for s in _SPECS.values():
        if kernel in s.tags:
            return tuple(s.tags[kernel])
    return ()
