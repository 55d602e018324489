"""The SASS analyser and the performance model, on reference kernels written for the test
(tests/fixtures/sass_reference.py, compiled for sm_90 and sm_80 on this CPU) and on hand-written SASS."""
import json
import math
import os
import subprocess
import sys

import pytest

from profiling.devices import PEAKS
from profiling.sass import analyse_sass, mma_acc_regs, parse, wait_depth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_FACTS: dict = {}


def _reference(arch: str) -> dict:
    if arch not in _FACTS:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "fixtures", "sass_reference.py"), arch], cwd=ROOT,
                           env=dict(os.environ, TRITON_INTERPRET="0"), capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        _FACTS[arch] = {d["name"]: d for d in map(json.loads, r.stdout.splitlines())}
    return _FACTS[arch]


@pytest.fixture(params=["sm_90", "sm_80"])
def ref(request):
    return request.param, _reference(request.param)


@pytest.fixture
def ref90():
    return _reference("sm_90")  # FP8 tensor cores are sm_89+: the fp8 reference kernels exist for sm_90 only


def test_pipelined_gemm_is_one_loop_with_stages_in_flight(ref):
    arch, f = ref
    g = f["gemm_pipelined"]
    assert g["main_loops"] == 1 and g["loops"] == 1
    assert g["wait_depth"] >= 1, g  # the next stage's loads (and on sm_90 the previous wgmma) stay in flight
    if arch == "sm_90":
        assert g["mma_shapes"] == ["HGMMA.64x128x16"] and g["wgmma_wait"] >= 1
    else:
        assert g["mma_shapes"] == ["HMMA.16816"] and g["cp_async_wait"] >= 1


def test_per_tap_gemm_is_flagged_as_nine_drained_loops(ref):
    _, f = ref
    t = f["gemm_per_tap"]
    assert t["main_loops"] == 9 and t["drained_loops"] == 9, t
    assert f["gemm_pipelined"]["drained_loops"] <= 1


def test_fp8_accumulator_outside_the_tensor_core_is_flagged(ref90):
    f = ref90
    bad, good = f["fp8_acc_add"], f["fp8_acc_inplace"]
    assert bad["fadd_after_mma"] > 0 and bad["zero_acc_mma"] > 0, bad
    assert good["fadd_after_mma"] == 0 and good["zero_acc_mma"] == 0, good
    assert bad["mma_shapes"] == good["mma_shapes"] == ["QGMMA.64x128x32"]


def test_byte_wise_shared_memory_transpose_is_flagged(ref90):
    f = ref90
    assert f["fp8_mn_major"]["sts_u8"] > 0
    assert f["fp8_k_major"]["sts_u8"] == 0


def test_cross_warp_reduction_inside_the_loop_costs_instructions_per_element(ref):
    _, f = ref
    inside, after = f["reduce_in_loop"], f["reduce_after_loop"]
    per_in = inside["body_instrs"] / inside["elems_per_iter_per_thread"]
    per_after = after["body_instrs"] / after["elems_per_iter_per_thread"]
    assert per_in > 1.5 * per_after, (per_in, per_after)
    assert inside["body_bar"] > 0 and inside["body_shfl"] > 0
    assert after["body_bar"] == 0 and after["body_shfl"] == 0


# ------------------------------------------------------------------- the parser on hand-written SASS
SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64] ;
        /*0020*/                   LDGDEPBAR ;
.L_x_1:
        /*0030*/                   DEPBAR.LE SB0, 0x1 ;
        /*0040*/                   WARPGROUP.ARRIVE ;
        /*0050*/                   QGMMA.64x64x32.F32.E4M3.E4M3 R24, gdesc[UR8], RZ, !UPT, gsb0 ;
        /*0060*/                   WARPGROUP.DEPBAR.LE gsb0, 0x0 ;
        /*0070*/                   FADD R60, R24, R60 ;
        /*0080*/                   FADD R61, R55, R61 ;
        /*0090*/                   FADD R62, R90, R62 ;
        /*00a0*/                   STS.U8 [R3], R7 ;
        /*00b0*/                   LDG.E.64 R8, desc[UR4][R6.64] ;
        /*00c0*/              @!P0 BRA `(.L_x_1) ;
        /*00d0*/                   DEPBAR.LE SB0, 0x0 ;
        /*00e0*/                   EXIT ;
.L_x_2:
        /*00f0*/                   BRA `(.L_x_2);
"""


def test_parser_finds_loop_drain_waits_and_flags():
    instrs, labels = parse(SASS)
    assert [i.opcode for i in instrs][:3] == ["LDC", "LDGSTS.E.BYPASS.128", "LDGDEPBAR"]
    f = analyse_sass(SASS)
    assert f["loops"] == 1 and f["main_loops"] == 1 and f["loop_sizes"] == [10]  # the trap loop after EXIT is not one
    assert f["drained_loops"] == 1
    assert f["cp_async_wait"] == 1 and f["wgmma_wait"] == 0 and wait_depth(f) == 0
    assert f["zero_acc_mma"] == 1
    assert f["fadd_after_mma"] == 2  # R24 and R55 are accumulator registers (R24..R55), R90 is not
    assert f["sts_u8"] == 1
    body = f["body"]
    assert body["ldg_widths"] == {64: 1} and body["mma_shapes"] == ["QGMMA.64x64x32"]
    assert body["mma_flops_wg"] == 2 * 64 * 64 * 32


PERSISTENT_SASS = """
.L_x_1:
        /*0000*/              @P1 BRA `(.L_x_5) ;
        /*0010*/                   IMAD R1, R2, R3, RZ ;
        /*0020*/                   IMAD R4, R2, R3, RZ ;
        /*0030*/                   LOP3.LUT R5, R1, 0x1, RZ, 0xc0, !PT ;
.L_x_5:
        /*0040*/                   DEPBAR.LE SB0, 0x2 ;
        /*0050*/                   HGMMA.64x64x16.F32 R24, gdesc[UR8], R24, gsb0 ;
        /*0060*/                   LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64] ;
        /*0070*/              @P2 BRA `(.L_x_6) ;
        /*0080*/                   STG.E.128 desc[UR4][R6.64], R24 ;
        /*0090*/                   STG.E.128 desc[UR4][R8.64], R28 ;
.L_x_6:
        /*00a0*/              @P0 BRA `(.L_x_1) ;
        /*00b0*/                   EXIT ;
"""


def test_a_persistent_loops_per_tile_blocks_count_once_per_tile():
    """A flattened persistent loop holds each tile's prologue and epilogue under branches inside its
    body: the parser counts them (cond_instrs), and the model issues them once per tile's iterations."""
    from kernels.spec import Work
    from profiling.perfmodel import per_iteration
    f = analyse_sass(PERSISTENT_SASS)
    it = f["per_iter"]
    assert f["loop_sizes"] == [11] and it["instrs"] == 11 and it["cond"]["instrs"] == 5  # 3 prologue + 2 epilogue
    assert it["cond"]["mma"] == 0 and it["cond"]["ld_thread_bytes"] == 0  # the MMA and the load run every time
    eff = per_iteration(it, Work("gemm", 18, 1, 0, 0, 2, tile_iters=9))
    assert eff["instrs"] == pytest.approx(11 - 5 + 5 / 9) and eff["mma"] == 1 and eff["async_copies"] == 1
    assert per_iteration(it, Work("gemm", 18, 1, 0, 0, 2)) is it  # not persistent: every instruction, every time


def test_accumulator_register_counts():
    instrs, _ = parse("""
        /*0000*/                   HGMMA.64x128x16.F32 R24, gdesc[UR16], R24 ;
        /*0010*/                   HMMA.16816.F32 R4, R8, R12, R4 ;
        /*0020*/                   HMMA.16816.F16 R4, R8, R12, R4 ;
    """)
    assert [mma_acc_regs(i) for i in instrs] == [64, 4, 2]


# ------------------------------------------------------------------- the performance model
class _L:  # a minimal launch
    def __init__(self, grid, warps=4):
        self.grid, self.num_warps, self.kernel, self.args, self.cx = grid, warps, "k", {}, {}


def _facts(instrs=100, loop=None, mma=None, regs=32, shared=0):
    it = None
    if loop:
        it = dict(instrs=loop, mma=0, mma_flops_wg=0, mma_flops_warp=0, smem_tc_bytes_wg=0, smem_thread_bytes=0,
                  ld_thread_bytes=32, st_thread_bytes=0, ldg=2, async_copies=0, tma=0, bar=0, shfl=0, mufu=0)
        if mma:
            it.update(mma=1, mma_flops_wg=mma, smem_tc_bytes_wg=0, async_copies=2, ldg=0)
    total = dict(ld_thread_bytes=32, mma_kinds={})
    return dict(regs=regs, shared=shared, wait_depth=1 if mma else None,
                sass=dict(per_iter=it, main_loops=1 if loop else 0, outside_instrs=20, instrs=instrs, total=total))


def test_issue_budget_matches_the_h100_figure():
    from profiling.perfmodel import issue_budget
    # a backward reduction reads x and dy in fp16: 4 bytes per element; H100 allows about 37 instructions
    assert 34 < issue_budget(PEAKS["H100-SXM"], 4) < 40


def test_prediction_is_a_fixed_cost_plus_the_largest_bound_and_quantises_waves():
    from profiling import perfmodel as pm
    from profiling.kernel_work import Work
    from profiling.perfmodel import predict
    peak = PEAKS["H100-SXM"]
    mem = Work("memory", 1, 4096, 1e9, 1e9, 4)  # 1 GB streamed, few instructions: memory-bound
    p = predict(_L((10000,)), _facts(instrs=60), mem, peak, "sm_90", context="isolated")
    stream = 1e3 * 1e9 / (peak.hbm_gbps * 1e9 * pm.MEM_EFFICIENCY)
    assert p["bound"] == "memory" and math.isclose(p["predicted_ms"], stream + pm.FIXED_US["isolated"] * 1e-3)
    # the fraction of roofline is the fitted streaming efficiency less the fixed cost, not a constant
    assert p["predicted_fraction"] < pm.MEM_EFFICIENCY
    lo, hi = p["predicted_range_ms"]
    assert math.isclose(lo, p["predicted_ms"] * pm.RANGE[0]) and math.isclose(hi, p["predicted_ms"] * pm.RANGE[1])
    # inside a step the fixed cost is smaller than in an isolated launch
    step = predict(_L((10000,)), _facts(instrs=60), mem, peak, "sm_90", context="in_step")
    assert step["predicted_ms"] < p["predicted_ms"]
    tiny = Work("memory", 1, 256, 1e3, 1e3, 4)
    t = predict(_L((1,)), _facts(), tiny, peak, "sm_90")
    assert t["bound"] == "launch" and t["predicted_ms"] >= pm.FIXED_US["in_step"] * 1e-3
    # tensor-core bound GEMM: one more program than SMs doubles the busiest SM's work
    gemm = Work("gemm", 1000, 128 * 128 * 64, 1e6, 1e6, 2, flops=1.0)
    f = _facts(loop=10, mma=2 * 64 * 128 * 16 * 4, regs=128, shared=200 * 1024)
    whole = predict(_L((peak.sms,)), f, gemm, peak, "sm_90")
    extra = predict(_L((peak.sms + 1,)), f, gemm, peak, "sm_90")
    assert whole["bound"] == "tensor" and extra["bound"] == "tensor"
    fixed = pm.FIXED_US["in_step"] * 1e-3
    assert math.isclose(extra["predicted_ms"] - fixed, 2 * (whole["predicted_ms"] - fixed), rel_tol=1e-6)
    assert extra["per_sm"] == 2 and extra["sm_balance"] < 0.51


def test_low_occupancy_makes_a_memory_kernel_latency_bound():
    from profiling.kernel_work import Work
    from profiling.perfmodel import predict
    peak = PEAKS["H100-SXM"]
    w = Work("memory", 1, 4096, 1e9, 1e9, 4)
    many = predict(_L((100000,)), _facts(regs=32), w, peak, "sm_90")
    few = predict(_L((20,)), _facts(regs=255), w, peak, "sm_90")  # 20 programs: most SMs idle
    assert many["bound"] == "memory" and few["bound"] == "latency"
    assert few["predicted_ms"] > 3 * many["predicted_ms"]
