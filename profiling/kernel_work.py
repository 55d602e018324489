"""What each Triton kernel of the project does per launch: its work and its memory traffic.

The static model (profiling/perfmodel.py) combines this with the compiled SASS. One function
per kernel name reads the launch's real arguments (shapes, block sizes, grid) and returns a
``Work``: how many main-loop iterations each program runs, how many tensor elements one
iteration handles, the bytes the kernel moves through DRAM under a stated traffic model, the
bytes it must move at least, and its useful FLOPs.

Traffic model (the same for every kernel):
- every tensor a kernel streams is read (or written) once from DRAM per pass it makes;
- an operand that several output tiles re-read (a GEMM's A across the column blocks of the
  output) comes from L2 when it fits in ``L2_FIT`` of the L2 or when the program order is
  grouped (a ``GROUP_M`` constexpr) so that the tiles sharing it run together; otherwise it is
  re-read from DRAM once per column block;
- everything the tiles load goes through L2 (``l2_bytes``), whatever DRAM serves.

Adding a kernel: write a function here and list it in ``WORK``; a kernel without one gets a
generic elementwise model and is marked so (``model="generic"``) in the report.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

L2_FIT = 0.5  # a re-read tensor stays in L2 when it takes at most this fraction of it


@dataclass
class TensorInfo:
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


@dataclass
class Work:
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


def _grid(launch) -> tuple:
    g = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
    return g


def _programs(launch) -> int:
    return math.prod(_grid(launch))


def _cx(launch, name, default=None):
    return launch.cx.get(name, default)


def _rows_iters(M: int, rows: int, block: int, programs_m: int) -> float:
    """Mean iterations of a loop over ``rows`` rows in steps of ``block``, the last program short."""
    full = max(programs_m - 1, 0)
    last = max(M - full * rows, 0)
    return (full * math.ceil(rows / block) + math.ceil(last / block)) / max(programs_m, 1)


# ------------------------------------------------------------------------------ bn_act
def _stride_iters(launch) -> float:
    """Mean tiles per program of a grid-stride loop over TILES tiles on grid[0] programs."""
    return launch.args["TILES"] / _grid(launch)[0]


def _stats(launch, peak, capacity: int) -> Work:
    a = launch.args
    x = a["x_ptr"]
    M, C, rows = a["M"], a["C"], a["ROWS"]
    bm, bc = _cx(launch, "BLOCK_M"), _cx(launch, "BLOCK_C")
    P = _grid(launch)[0]
    return Work("memory", _rows_iters(M, rows, bm, P), bm * bc, x.nbytes + 6 * C * 4, x.nbytes, x.esize,
                notes=[f"reads x once; {P} programs per channel block merge their sums with atomics, the last "
                       "one finalises (mean, var, running statistics)"],
                units=math.ceil(M / bm) * _grid(launch)[1])


def _streaming(launch, passes: int, note: str) -> Work:
    """An elementwise pass over [M, C]: ``passes`` activation-sized tensors moved (the last one
    written), plus the 1-byte fp8 copy when FP8_OUT; a grid-stride loop when TILES is given."""
    a = launch.args
    x, M, C = a["x_ptr"], a["M"], a["C"]
    bm, bc = _cx(launch, "BLOCK_M"), _cx(launch, "BLOCK_C")
    nbytes = passes * M * C * x.esize + (M * C if _cx(launch, "FP8_OUT") else 0)
    iters = _stride_iters(launch) if "TILES" in a else 1
    return Work("memory", iters, bm * bc, nbytes, nbytes, passes * x.esize, notes=[note],
                units=a.get("TILES", 1) * _grid(launch)[1], read_bytes=nbytes * (passes - 1) / passes)


def _apply(launch, peak, capacity: int) -> Work:
    return _streaming(launch, 2, "reads x, writes y")


def _bwd_reduce(launch, peak, capacity: int) -> Work:
    a = launch.args
    x = a["x_ptr"]
    M, C, rows = a["M"], a["C"], a["ROWS"]
    bm, bc = _cx(launch, "BLOCK_M"), _cx(launch, "BLOCK_C")
    P = _grid(launch)[0]
    main = 2 * M * C * x.esize
    return Work("memory", _rows_iters(M, rows, bm, P), bm * bc, main + 4 * C * 4, main, 2 * x.esize,
                notes=[f"reads x and dy once; {P} programs per channel block merge with atomics"],
                units=math.ceil(M / bm) * _grid(launch)[1])


def _bwd_dx(launch, peak, capacity: int) -> Work:
    return _streaming(launch, 3, "reads x and dy, writes dx")


def _finalize(launch, peak, capacity: int) -> Work:  # the former separate finalize (kept for old reports)
    a = launch.args
    P, C = a["P"], a["C"]
    bp, bc = _cx(launch, "BLOCK_P"), _cx(launch, "BLOCK_C")
    nbytes = 2 * P * C * 4 + 2 * C * 4
    return Work("memory", math.ceil(P / bp), bp * bc, nbytes, nbytes, 8, notes=[f"merges {P} partial rows"])


def _running(launch, peak, capacity: int) -> Work:
    C = launch.args["C"]
    bc = _cx(launch, "BLOCK_C")
    return Work("memory", 1, bc, 6 * C * 4, 6 * C * 4, 24, notes=["C running statistics"])


# ------------------------------------------------------------------------------ maxpool
def _pool_fwd(launch, peak, capacity: int) -> Work:
    a = launch.args
    x, P, C = a["x_ptr"], a["P"], a["C"]
    K, bp, bc = _cx(launch, "K"), _cx(launch, "BLOCK_P"), _cx(launch, "BLOCK_C")
    es = x.esize
    index = bool(_cx(launch, "SAVE_INDEX"))
    read = P * C * K * K * es
    write = P * C * (es + (1 if index else 0))
    iters = _stride_iters(launch) if "TILES" in a else 1
    return Work("memory", iters, bp * bc, read + write, read + write, K * K * es + es + (1 if index else 0),
                notes=["reads the pooled windows of x, writes y" + (" and a 1-byte window index" if index else "")
                       + " (elements = outputs)"], units=a.get("TILES", 1) * _grid(launch)[1], read_bytes=read)


def _pool_bwd(launch, peak, capacity: int) -> Work:
    a = launch.args
    C = a["C"]
    P = a.get("PE", a.get("P"))
    K, bp, bc = _cx(launch, "K"), _cx(launch, "BLOCK_P"), _cx(launch, "BLOCK_C")
    dy = a["dy_ptr"]
    dx = a["dx_ptr"] if "dx_ptr" in a else a["x_ptr"]
    es = dy.esize
    from_index = bool(_cx(launch, "FROM_INDEX", 0))
    out = P * C  # windows of the ceil-mode grid x channels (~ outputs)
    read = dy.nbytes + (out if from_index else dx.nbytes)
    nbytes = read + dx.nbytes + (dx.nbytes // dx.esize if _cx(launch, "FP8_OUT") else 0)
    iters = _stride_iters(launch) if "TILES" in a else 1
    per = es + (1 if from_index else K * K * es) + K * K * es
    return Work("memory", iters, bp * bc, nbytes, nbytes, per,
                notes=["reads dy and " + ("the window index" if from_index else "x (winner recomputed)")
                       + ", writes dx (elements = windows)"], units=a.get("TILES", 1) * _grid(launch)[1],
                read_bytes=read)


# ------------------------------------------------------------------------------ conv
def _conv(launch, peak, capacity: int) -> Work:
    a = launch.args
    x, w, y = a["x_ptr"], a["w_ptr"], a["y_ptr"]
    M = a["M"]
    CI, CO = _cx(launch, "CRED"), _cx(launch, "COUT")
    KH, KW = _cx(launch, "KH"), _cx(launch, "KW")
    bm, bn, bk = _cx(launch, "BLOCK_M"), _cx(launch, "BLOCK_N"), _cx(launch, "BLOCK_K")
    programs = _programs(launch)
    col_blocks = math.ceil(CO / bn)
    grouped = (_cx(launch, "GROUP_M") or 1) > 1
    fits = x.nbytes <= L2_FIT * peak.l2_mb * 1e6
    reread = 1 if (col_blocks == 1 or grouped or fits) else col_blocks
    iters = KH * KW * math.ceil(CI / bk)
    flops = 2.0 * M * CO * CI * KH * KW
    dram = x.nbytes * reread + w.nbytes + M * CO * y.esize
    l2 = programs * iters * (bm * bk * x.esize + bk * bn * w.esize)
    notes = [f"A (activation, {x.nbytes / 1e6:.1f} MB) read {reread}x from DRAM"
             + ("" if reread == 1 else f" (once per column block: {col_blocks} blocks, too big for L2, no grouped order)"),
             f"{programs} programs" + (", grouped by %d row tiles" % _cx(launch, "GROUP_M") if grouped else "")]
    if _cx(launch, "HAS_SCALE"):
        notes.append("fp8 operands written by their producers (or one quantisation pass)")
    return Work("gemm", iters, bm * bn * bk, dram, x.nbytes + w.nbytes + M * CO * y.esize, x.esize,
                flops=flops, l2_bytes=l2, notes=notes, units=programs, read_bytes=x.nbytes * reread + w.nbytes)


def _conv_small(launch, peak, capacity: int) -> Work:
    a = launch.args
    x, y = a["x_ptr"], a["y_ptr"]
    M = a["M"]
    CI, CO, KH, KW = _cx(launch, "CI"), _cx(launch, "COUT"), _cx(launch, "KH"), _cx(launch, "KW")
    bm, bn, bk = _cx(launch, "BLOCK_M"), _cx(launch, "BLOCK_N"), _cx(launch, "BLOCK_K")
    out = M * CO * y.esize
    return Work("gemm", 1, bm * bn * bk, x.nbytes + out, x.nbytes + out, x.esize, flops=2.0 * M * CO * CI * KH * KW,
                l2_bytes=_programs(launch) * bm * bk * x.esize, notes=["the whole reduction in one MMA step"],
                units=_programs(launch), read_bytes=x.nbytes)


def _wgrad(launch, peak, capacity: int) -> Work:
    a = launch.args
    x, dy = a["x_ptr"], a["dy_ptr"]
    P, rows = a["P"], a["ROWS"]
    CI, CO = _cx(launch, "CI"), _cx(launch, "CO")
    bn_ = _cx(launch, "BLOCK_N")
    cip = math.ceil(CI / bn_) * bn_
    KH, KW = _cx(launch, "KH"), _cx(launch, "KW")
    bm, bn, bk = _cx(launch, "BLOCK_M"), _cx(launch, "BLOCK_N"), _cx(launch, "BLOCK_K")
    g = _grid(launch)
    tiles, split = g[0], g[1]
    iters = _rows_iters(P, rows, bk, split)
    flops = 2.0 * CO * CI * KH * KW * P
    ncol = KH * KW * CI
    dw = CO * ncol * 2
    part = split * CO * ncol * 4 * 2 if split > 1 else 0  # fp32 partials written, then read by the last program
    # the programs of one split chunk (every tile of it) are neighbours in the launch order: when they
    # fit on the GPU at once they stream the chunk together and DRAM serves it once
    reread = 1 if tiles <= capacity else math.ceil(tiles / capacity)
    dram = (dy.nbytes + x.nbytes) * reread + part + dw
    l2 = _programs(launch) * iters * (bm * bk + bk * bn) * x.esize
    return Work("gemm", iters, bm * bn * bk, dram, dy.nbytes + x.nbytes + dw, x.esize,
                flops=flops, l2_bytes=l2,
                notes=[f"one GEMM {CO}x{ncol}x{P}" + (f" (each tap's {CI} channels padded to {cip})" if cip != CI else "")
                       + f", split-K {split}" + (
                    f": fp32 partials {part / 2e6:.1f} MB, summed by the last program of each tile" if split > 1 else ""),
                    f"grid {tiles}x{split}"], units=tiles * split, read_bytes=(dy.nbytes + x.nbytes) * reread + part / 2)


def _quantize(launch, peak, capacity: int) -> Work:
    a = launch.args
    x = a["x_ptr"]
    n = a["N"]
    copies = 2 if _cx(launch, "TRANSPOSED") else 1
    nbytes = n * x.esize + copies * n
    return Work("memory", 1, _cx(launch, "BLOCK"), nbytes, nbytes, x.esize + copies,
                notes=[f"{n} elements to fp8 ({copies} layout(s)), delayed scale, amax for the next call"],
                read_bytes=n * x.esize, units=_programs(launch))


def _generic(launch, peak, capacity: int) -> Work:
    elems = math.prod(v for k, v in launch.cx.items() if k.startswith("BLOCK") and isinstance(v, int)) or 1
    tensors = [v for v in launch.args.values() if isinstance(v, TensorInfo)]
    nbytes = sum(t.nbytes for t in tensors)
    es = max((t.esize for t in tensors), default=4)
    return Work("memory", 1, elems, nbytes, nbytes, es * max(len(tensors), 1),
                notes=["no kernel model: every tensor argument counted once"], model="generic")


WORK = {
    "_stats_kernel": _stats, "_finalize_kernel": _finalize, "_apply_kernel": _apply,
    "_running_kernel": _running, "_bwd_reduce_kernel": _bwd_reduce, "_bwd_dx_kernel": _bwd_dx,
    "_maxpool_fwd_kernel": _pool_fwd, "_maxpool_bwd_kernel": _pool_bwd,
    "_conv_kernel": _conv, "_conv_small_kernel": _conv_small, "_wgrad_kernel": _wgrad, "_quantize_kernel": _quantize,
}


def work_of(launch, peak, capacity: int | None = None) -> Work:
    """``capacity``: programs of this launch that fit on the GPU at once (SMs x resident per SM)."""
    return WORK.get(launch.kernel, _generic)(launch, peak, capacity or peak.sms)
