"""Every rule of profiling/rules.py can fail: a row that breaks it is reported, the same row
without the break is not (no rule passes by construction). A new rule must add its break here."""
import pytest

from profiling.rules import OP_RULES, RULES, check, check_ops

CONV = dict(op="conv", kernel="_conv_kernel", impl="triton", arch="sm_90", case="g2.conv1", config="BLOCK_M=128",
            shape=[2000, 64, 16, 16], default=True, spill_bytes=0, shared=100_000, shared_limit=227 * 1024,
            tensor_core_instrs=8, main_loops=1, drained_loops=1, wait_depth=2, plain_loads=0,
            async_widths={"128": 4}, fadd_after_mma=0, sts_u8=0, waves=2.0, programs=264, units=264,
            sm_balance=1.0, vector_loads=4, issue_budget=None, instr_per_elem=None, instr_per_mma=24.0,
            mma_budget=32.0, tags=["pipelined_gemm", "implicit_gemm_loop"])
MEMORY = dict(CONV, op="bn_act", kernel="_apply_kernel", tags=[], config="BLOCK_M=64,CHANNELS_LAST=1", tensor_core_instrs=0,
              main_loops=1, issue_budget=37.0, instr_per_elem=20.0, vector_loads=2, waves=2.0)

BREAKS = {
    "no_spill": (CONV, dict(spill_bytes=16)),
    "smem_fits": (CONV, dict(shared=227 * 1024 + 1)),
    "conv_tensor_cores": (CONV, dict(tensor_core_instrs=0)),
    "conv_main_loops": (CONV, dict(main_loops=9)),
    "conv_drained_loops": (CONV, dict(drained_loops=9)),
    "conv_wait_depth": (CONV, dict(wait_depth=0)),
    "conv_plain_loads": (CONV, dict(plain_loads=4)),
    "conv_async_16b": (CONV, dict(async_widths={"128": 2, "64": 2})),
    "conv_weight_tma": (dict(CONV, config="BLOCK_M=128,W_TMA=1", tma_in_loop=1), dict(tma_in_loop=0)),
    "fadd_after_mma": (CONV, dict(fadd_after_mma=8)),
    "sts_u8": (CONV, dict(sts_u8=4)),
    "memory_vector_loads": (MEMORY, dict(vector_loads=0)),
    "memory_issue": (MEMORY, dict(instr_per_elem=60.0)),
    "memory_waves": (MEMORY, dict(waves=1.5)),
    "gemm_waves": (CONV, dict(sm_balance=0.5)),
    "conv_issue_budget": (dict(CONV, config="BLOCK_M=128,BLOCK_N=64,BLOCK_K=64"), dict(instr_per_mma=45.0)),
}


def test_the_rules_find_the_kernels_by_their_specs_tags():
    """The rules select kernels by the tags their op's spec gives them, not by name: the tags are there."""
    from kernels import conv, maxpool
    from kernels.spec import kernel_tags
    assert set(kernel_tags(conv._conv_kernel)) == {"pipelined_gemm", "implicit_gemm_loop"}
    assert kernel_tags(conv._wgrad_kernel) == ("pipelined_gemm",)
    assert kernel_tags(maxpool._maxpool_bwd_kernel) == ("scatter",) and kernel_tags(maxpool._maxpool_fwd_kernel) == ()
    assert check([dict(CONV, tensor_core_instrs=0, tags=[])], [r for r in RULES if r.name == "conv_tensor_cores"]) == []


def test_every_rule_has_a_break():
    assert {r.name for r in RULES} == set(BREAKS)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_rule_can_fail(rule):
    base, change = BREAKS[rule.name]
    assert check([dict(base)], [rule]) == []
    found = check([dict(base, **change)], [rule])
    assert len(found) == 1 and found[0]["rule"] == rule.name and found[0]["status"] == "violated"


@pytest.mark.parametrize("op,impl,limit", OP_RULES)
def test_op_fraction_rule_can_fail(op, impl, limit):
    row = dict(op=op, impl=impl, arch="sm_90", case="g1", predicted_fraction=limit + 0.05)
    assert check_ops([row]) == []
    low = check_ops([dict(row, predicted_fraction=limit - 0.05)])
    assert len(low) == 1 and low[0]["kind"] == "min"
    # the model's streaming efficiency leaves room above the limit: it is not met by construction
    from profiling.perfmodel import MEM_EFFICIENCY
    assert limit < MEM_EFFICIENCY


KNOWN_ONE = dict(rule="memory_issue", kernel="_apply_kernel", impl="fp8", triton_below=(3, 7),
                 why="issue 25: a made-up finding of triton 3.6")


def test_known_findings_excuse_only_the_older_triton(monkeypatch):
    from profiling import rules
    from profiling.rules import known
    monkeypatch.setattr(rules, "KNOWN", [KNOWN_ONE])
    f = dict(rule="memory_issue", kernel="_apply_kernel", impl="fp8")
    assert known(f, "3.6.0") and "issue 25" in known(f, "3.6.0")
    assert known(f, "3.8.0") is None  # under the CI's triton the rule holds and is enforced
    assert known(dict(f, impl="triton"), "3.6.0") is None
    assert known(dict(f, rule="no_spill"), "3.6.0") is None


def test_a_known_finding_with_a_case_excuses_that_layer_only(monkeypatch):
    """An entry naming group1.block1 (as issue 23's did): the same finding at another block is enforced."""
    from profiling import rules
    from profiling.rules import known
    monkeypatch.setattr(rules, "KNOWN", [dict(rule="conv_issue_budget", kernel="_conv_kernel", impl="triton_fused",
                                              case="group1.block1", triton_below=(99, 0), why="issue 23: made up")])
    f = dict(rule="conv_issue_budget", kernel="_conv_kernel", impl="triton_fused", case="group1.block1 2000x24x31x31")
    assert "issue 23" in known(f, "3.8.0")
    assert known(dict(f, case="group2.block1 2000x64x15x15"), "3.8.0") is None
    assert known(dict(f, impl="triton", case="group1.conv1 2000x24x31x31"), "3.8.0") is None


def test_static_check_fails_on_a_violation_and_lists_known_ones(capsys, monkeypatch):
    from profiling import rules
    from profiling.static import check_findings
    monkeypatch.setattr(rules, "KNOWN", [KNOWN_ONE])
    finding = dict(rule="no_spill", kernel="_conv_kernel", impl="triton", arch="sm_80", case="g1", value=16, limit=0)
    assert check_findings(dict(findings=[finding], meta=dict(triton="3.6.0"))) == 1
    known_one = dict(finding, rule="memory_issue", kernel="_apply_kernel", impl="fp8")
    assert check_findings(dict(findings=[known_one], meta=dict(triton="3.6.0"))) == 0
    assert "known under triton 3.6.0" in capsys.readouterr().out
    assert check_findings(dict(findings=[known_one], meta=dict(triton="3.8.0"))) == 1
