"""The static performance model: a predicted time per kernel launch, from its SASS and its work.

Inputs (no GPU involved): the kernel's SASS facts (profiling/sass.py: instructions per main-loop
iteration and outside the loops, tensor-core instructions, load widths, waits), its resources
(registers, shared memory, warps -> resident programs per SM), the launch (grid, arguments) and
the kernel's work model (its op's spec in kernels/<op>.py via profiling/kernel_work.py, or profiling/predict.py's helpers for any
kernel), and the GPU's peaks (profiling/devices.py).

Time of one launch = a fixed cost + the largest of the throughput bounds:

  fixed     FIXED_US[context]: what a launch costs whatever its work (the launch itself, the
            ramp-up of the first wave, the drain of the last, the timing events around it).
            "isolated": one launch timed alone (triton.testing.do_bench, CUDA events);
            "in_step": one launch among others in a training step or a CUDA graph
  memory    DRAM bytes (the traffic model) / (HBM bandwidth x MEM_EFFICIENCY)
  latency   DRAM bytes read / (bytes in flight / LATENCY_NS): Little's law; the bytes in flight
            are what the resident warps of the active SMs have loaded and not yet used (one main-loop
            iteration's loads per thread, times the pipeline depth for async copies); stores do not
            wait
  l2        bytes all tiles load / (L2 bandwidth x L2_EFFICIENCY) (GEMMs)
  issue     warp-instructions of the busiest SM / (4 schedulers x ISSUE_EFFICIENCY x clock), with
            fewer than 4 resident warps issuing at most one instruction per warp per clock
  tensor    MMA FLOPs the instructions issue (masked waste included) of the busiest SM / (the SM's
            tensor-core rate x TC_EFFICIENCY) (HMMA on sm_90 at HMMA_ON_HOPPER of the wgmma rate)
  smem      shared-memory bytes of the busiest SM / (128 B x SMEM_EFFICIENCY x clock)

The per-SM bounds are computed for the busiest SM, so that a grid of 1.05 waves costs what it
costs (the tail). ``bound`` names the largest throughput bound, or "launch" when the fixed cost
is larger than all of them. ``roofline_ms`` of a launch is its own must-move bytes at full HBM
bandwidth or its useful FLOPs at the tensor-core peak, whichever is larger;
``predicted_fraction`` = roofline / predicted.

Every prediction carries a range (``predicted_range_ms``): the prediction times the 10th and 90th
percentiles of measured / predicted over the calibration suite's held-out cases
(profiling/calibration: published GPU measurements of public Triton kernels, never fitted to).

Where the constants come from: FIXED_US["isolated"], MEM_EFFICIENCY, TC_EFFICIENCY,
ISSUE_EFFICIENCY, L2_EFFICIENCY and LATENCY_NS were fitted by ``python -m profiling calibrate --fit`` on the
suite's fit part (the values below; the fit part's cases and sources are in
profiling/calibration/cases.py). The others are estimates with their source beside them.
"""
from __future__ import annotations

import math

# ---- fitted on the calibration suite's fit part (python -m profiling calibrate --fit) ----------
MEM_EFFICIENCY = 0.75     # fraction of the data-sheet HBM bandwidth a streaming kernel reaches
TC_EFFICIENCY = 0.75      # fraction of the data-sheet tensor-core peak a Triton main loop sustains
ISSUE_EFFICIENCY = 0.60   # fraction of 4 warp-instructions per clock per SM that a kernel issues
LATENCY_NS = 700.0        # DRAM load latency under load (Little's law)
FIXED_US = {
    "isolated": 8.0,      # one launch timed alone with CUDA events (do_bench): launch, ramp, drain, events
    # a launch among others in a stream or CUDA graph: kernel-to-kernel gap plus ramp-up and drain.
    # An estimate, not fitted: no published in-graph measurement of a Triton kernel is in the suite;
    # back-to-back kernels in a CUDA graph start about 1-2 us apart on A100/H100 (NVIDIA's CUDA
    # graphs material), and a grid ramps up and drains in about a microsecond
    "in_step": 2.0,
}
# ---- estimates, each with its source --------------------------------------------------------------
# shared memory: 128 B/clk/SM is the data-sheet rate; wgmma operand reads reach most of it
# (CUTLASS's Hopper GEMMs at ~80% of the tensor-core peak are not shared-memory bound)
SMEM_EFFICIENCY = 0.90
# L2: a factor on the L2 bandwidths of profiling/devices.py (H100 SXM 9 TB/s: the PCIe card's
# microbenchmark figure scaled to the SXM's SMs and clock, and above what our own conv launches were
# measured doing on an H200, 10.3 TB/s; A100 ~4-5 TB/s), fitted (1.2). Until 2026-12-01 the H100 figure
# was 6 TB/s: the tutorial's fp8 GEMM was then L2-bound and set this factor, and a measured conv
# input-grad beat that ceiling by 1.44x (static.md: the bounds beaten by measured launches); with the
# ceiling raised the same fit has the fp8 GEMMs tensor-bound at TC_EFFICIENCY 0.75 (was 0.90)
L2_EFFICIENCY = 1.20
HMMA_ON_HOPPER = 0.6      # mma.sync (HMMA) throughput on sm_90 relative to wgmma (CUTLASS sm_80 kernels on H100)
# the range of a prediction: measured / predicted on the held-out part, 10th and 90th percentiles
# (python -m profiling calibrate prints them; tests/profiling/test_calibration.py keeps them in step)
RANGE = (0.84, 1.11)
def constants() -> dict:
    """The model's tunable constants by name (the calibration's fit reads and overrides these)."""
    return dict(MEM_EFFICIENCY=MEM_EFFICIENCY, TC_EFFICIENCY=TC_EFFICIENCY, ISSUE_EFFICIENCY=ISSUE_EFFICIENCY,
                LATENCY_NS=LATENCY_NS, FIXED_ISOLATED_US=FIXED_US["isolated"], FIXED_IN_STEP_US=FIXED_US["in_step"],
                SMEM_EFFICIENCY=SMEM_EFFICIENCY, L2_EFFICIENCY=L2_EFFICIENCY, HMMA_ON_HOPPER=HMMA_ON_HOPPER)


def with_range(ms: float | None) -> tuple[float, float] | None:
    """(low, high) of a predicted time: the held-out calibration error around it."""
    return None if ms is None else (ms * RANGE[0], ms * RANGE[1])


def resident_programs(regs: int, shared: int, num_warps: int, peak) -> int:
    """Programs (thread blocks) that fit on one SM: registers (allocated per warp in units of
    256), shared memory, threads, and the limit of 32 blocks."""
    warp_regs = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = (peak.regs_per_sm // warp_regs) // num_warps
    by_smem = (peak.smem_per_sm_kib * 1024) // shared if shared else 32
    by_threads = peak.max_threads_per_sm // (32 * num_warps)
    return max(0, min(by_regs, by_smem, by_threads, 32))


def issue_budget(peak, bytes_per_elem: float) -> float:
    """Thread-instructions per element the SMs can issue in the time HBM moves that element's
    bytes: above it, a memory-bound kernel is issue-bound."""
    issue = peak.sms * peak.issue_per_clk * 32 * peak.clock_ghz * 1e9
    return issue * bytes_per_elem / (peak.hbm_gbps * 1e9)


def mma_budget(peak, arch: str, per_iter: dict, num_warps: int, fp8: bool = False) -> float | None:
    """Thread-instructions per MMA instruction the SM can issue in the time its tensor cores take
    for that MMA: above it, a GEMM loop is issue-bound."""
    if not per_iter or not per_iter["mma"]:
        return None
    wg = per_iter["mma_flops_wg"] * (num_warps / 4)
    sync = per_iter["mma_flops_warp"] * num_warps * (HMMA_ON_HOPPER if arch == "sm_90" else 1)
    rate = peak.tc_flops_per_clk(fp8=fp8)
    tc_clk = (wg + sync) / rate
    issue_clk = num_warps * per_iter["instrs"] / peak.issue_per_clk
    return per_iter["instrs"] * tc_clk / issue_clk / per_iter["mma"] if issue_clk else None


def predict(launch, facts: dict, work, peak, arch: str, fp8: bool = False, context: str = "in_step") -> dict:
    """Every bound of one launch, the prediction and the structural numbers behind it.
    ``context``: "isolated" (one launch timed alone, as do_bench does) or "in_step" (one launch
    among the others of a training step or a CUDA graph)."""
    if context not in FIXED_US:
        raise ValueError(f"context {context!r}: expected one of {', '.join(FIXED_US)}")
    grid = tuple(launch.grid) + (1,) * (3 - len(launch.grid))
    programs = math.prod(grid)
    warps = launch.num_warps
    resident = max(1, resident_programs(facts["regs"], facts["shared"], warps, peak))
    per_sm = math.ceil(programs / peak.sms)           # programs the busiest SM runs
    waves = programs / (peak.sms * resident)
    sass = facts["sass"]
    it = per_iteration(sass["per_iter"], work)
    # instructions per program (per thread): outside the loops once, the main loop per iteration
    if sass["main_loops"] and it:
        per_prog = sass["outside_instrs"] + work.iters * it["instrs"]
    else:
        per_prog = sass["instrs"]
    elems_per_prog = work.iters * work.elems_per_iter
    threads = warps * 32
    instr_per_elem = per_prog / (elems_per_prog / threads) if elems_per_prog else None

    t_issue = _issue_time(per_sm, resident, warps, per_prog, peak)
    t_tc, t_smem, mma_flops_prog, instr_per_mma = _tensor_times(it, warps, work, peak, arch, fp8, per_sm)
    t_mem = work.dram_bytes / (peak.hbm_gbps * 1e9 * MEM_EFFICIENCY)
    t_l2 = (work.l2_bytes or 0.0) / (peak.l2_gbps * 1e9 * L2_EFFICIENCY)
    t_latency = _latency_time(facts, work, peak, programs, resident, per_sm, threads)
    t_fixed = FIXED_US[context] * 1e-6

    bounds = dict(memory=t_mem, latency=t_latency, l2=t_l2, issue=t_issue, tensor=t_tc, smem=t_smem)
    bound = max(bounds, key=bounds.get)
    throughput = bounds[bound]
    predicted = t_fixed + throughput
    if t_fixed > throughput:
        bound = "launch"
    bounds["fixed"] = t_fixed
    tflops = peak.fp8_tflops if fp8 and peak.fp8_tflops else peak.fp16_tflops
    roofline = max(work.min_bytes / (peak.hbm_gbps * 1e9), work.flops / (tflops * 1e12), 0.0)
    lo, hi = with_range(1e3 * predicted)
    return dict(
        programs=programs, resident=resident, waves=waves, per_sm=per_sm,
        sm_balance=programs / (peak.sms * per_sm) if per_sm else 1.0,
        tail=waves - math.floor(waves) if waves > 1 else waves,
        instr_per_elem=instr_per_elem, issue_budget=issue_budget(peak, work.bytes_per_elem)
        if work.kind == "memory" else None,
        instr_per_mma=instr_per_mma, mma_budget=mma_budget(peak, arch, it, warps, fp8) if work.kind == "gemm" else None,
        mma_flops=mma_flops_prog * programs, mma_waste=(1 - work.flops / (mma_flops_prog * programs))
        if mma_flops_prog and work.flops else None,
        dram_bytes=work.dram_bytes, min_bytes=work.min_bytes, l2_bytes=work.l2_bytes, flops=work.flops,
        bounds_ms={k: 1e3 * v for k, v in bounds.items()}, bound=bound, context=context,
        predicted_ms=1e3 * predicted, predicted_range_ms=[lo, hi],
        roofline_ms=1e3 * roofline, predicted_fraction=roofline / predicted if predicted else None,
        work_model=work.model, notes=work.notes, units=work.units)


def per_iteration(it: dict | None, work) -> dict | None:
    """What one main-loop iteration does: the whole body, but for a persistent kernel
    (``work.tile_iters``) the blocks a branch in the body skips (a tile's prologue and epilogue:
    their instructions, shared-memory bytes, stores) count once per tile's iterations."""
    cond = (it or {}).get("cond")
    if not (cond and cond.get("instrs") and getattr(work, "tile_iters", None)):
        return it
    f = 1.0 - 1.0 / work.tile_iters
    return dict(it, **{k: it[k] - f * cond[k] for k in cond})


def _issue_time(per_sm: int, resident: int, warps: int, per_prog: float, peak) -> float:
    """Issue: the busiest SM runs ``per_sm`` programs in rounds of at most ``resident``."""
    clk = peak.clock_ghz * 1e9
    t_issue, left = 0.0, per_sm
    while left > 0:
        r = min(resident, left)
        t_issue += r * warps * per_prog / (min(peak.issue_per_clk * ISSUE_EFFICIENCY, r * warps) * clk)
        left -= r
    return t_issue


def _tensor_times(it: dict | None, warps: int, work, peak, arch: str, fp8: bool, per_sm: int) -> tuple:
    """Tensor cores and shared memory on the busiest SM: (t_tc, t_smem, MMA FLOPs per program,
    main-loop instructions per MMA); zeros and None without MMAs in the main loop."""
    if not (it and it["mma"]):
        return 0.0, 0.0, 0.0, None
    clk = peak.clock_ghz * 1e9
    wg_flops = it["mma_flops_wg"] * (warps / 4) * work.iters
    sync_flops = it["mma_flops_warp"] * warps * work.iters
    rate = peak.tc_flops_per_clk(fp8=fp8) * clk * TC_EFFICIENCY
    hmma_rate = rate * (HMMA_ON_HOPPER if arch == "sm_90" else 1.0)
    t_tc = per_sm * (wg_flops / rate + sync_flops / hmma_rate)
    smem_prog = work.iters * (it["smem_tc_bytes_wg"] * (warps / 4) + it["smem_thread_bytes"] * warps * 32)
    t_smem = per_sm * smem_prog / (peak.smem_bytes_per_clk * SMEM_EFFICIENCY * clk)
    return t_tc, t_smem, wg_flops + sync_flops, it["instrs"] / it["mma"]


def _latency_time(facts: dict, work, peak, programs: int, resident: int, per_sm: int, threads: int) -> float:
    """Latency: the reads divided by the bytes in flight (every resident thread's loads, times the
    pipeline depth of an async main loop) per LATENCY_NS."""
    sass = facts["sass"]
    it = per_iteration(sass["per_iter"], work)
    if sass["main_loops"] and it:
        depth = 1 + (facts.get("wait_depth") or 0) if it["async_copies"] else 1
        inflight_thread = it["ld_thread_bytes"] * depth
    else:
        inflight_thread = sass["total"]["ld_thread_bytes"]
    inflight = min(peak.sms, programs) * min(resident, per_sm) * threads * inflight_thread
    reads = work.dram_bytes if work.read_bytes is None else work.read_bytes
    return reads / (inflight / (LATENCY_NS * 1e-9)) if inflight else 0.0


def glue_ms(op_bytes: float, peak, context: str = "in_step") -> float:
    """An eager ATen op around the kernels (a copy, a cast, a reduction): the fixed cost of a
    launch plus its bytes at the streaming bandwidth."""
    return 1e3 * (FIXED_US[context] * 1e-6 + op_bytes / (peak.hbm_gbps * 1e9 * MEM_EFFICIENCY))
