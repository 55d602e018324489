"""Reading SASS the way a kernel engineer does: loops, pipelining, tensor cores, memory ops.

``parse(text)`` turns ``nvdisasm -c -g`` output into instructions and labels; ``analyse_sass``
returns the structural facts that decide a kernel's speed:

- loops: every backward branch (``BRA`` to an earlier label) closes a loop; the innermost
  ones are where the time goes. Per loop: instructions in its body, instruction mix, memory
  operations and their widths, tensor-core instructions, waits, barriers and shuffles.
- pipelining: asynchronous copies (``LDGSTS`` = cp.async, ``UTMALDG`` / ``UBLKCP`` = TMA)
  against plain ``LDG``; the depth a loop's waits allow in flight (``DEPBAR.LE SB0, N``:
  N cp.async groups still pending; ``WARPGROUP.DEPBAR.LE gsb0, N``: N wgmma groups still
  running); a loop whose exit is followed by a full drain (a wait with N = 0) is
  "drained": a kernel made of several such loops refills and empties its pipeline each time.
- tensor cores: kind (HMMA, HGMMA, QGMMA, IMMA) and shape; whether the accumulator stays in
  the tensor core: an MMA result that FADD / FFMA instructions fold into another register
  inside the loop (``acc += tl.dot(a, b)`` compiled as a zero-accumulator MMA plus adds) is
  counted as ``fadd_after_mma``; an MMA whose accumulator input is ``RZ`` as ``zero_acc_mma``.
- byte-wide shared-memory stores (``STS.U8``): the mark of an operand transposed in shared
  memory one byte at a time.

Everything here is text processing: it works on any machine, and the tests feed it SASS
compiled on the CPU from small reference kernels (tests/profiling/test_sass.py).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

MMA_KINDS = ("HGMMA", "QGMMA", "HMMA", "IMMA")
ASYNC_COPY = ("LDGSTS", "UTMALDG", "UBLKCP", "UTMAPF")  # cp.async, TMA tensor load, bulk copy
_ADDR = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s*(.*?)\s*;?\s*(?:/\*.*\*/)?\s*$")
_LABEL = re.compile(r"^(\.L_x_\d+|[A-Za-z_.$][\w.$]*):\s*$")
_FILELINE = re.compile(r'//## File "([^"]+)", line (\d+)')
_REG = re.compile(r"(?<![A-Z_])R(\d+)\b")


@dataclass
class Instr:
    index: int
    addr: int
    pred: str            # "" or e.g. "@!P0"
    opcode: str          # with modifiers, e.g. "LDG.E.128"
    operands: str
    line: int | None = None  # source line (nvdisasm -g), when known

    @property
    def base(self) -> str:
        return self.opcode.split(".")[0]

    @property
    def mods(self) -> list[str]:
        return self.opcode.split(".")[1:]

    def regs(self) -> list[int]:
        return [int(r) for r in _REG.findall(self.operands)]


def parse(text: str) -> tuple[list[Instr], dict[str, int]]:
    """Instructions in order and label -> index of the instruction that follows the label."""
    instrs: list[Instr] = []
    labels: dict[str, int] = {}
    line = None
    for raw in text.splitlines():
        m = _FILELINE.search(raw)
        if m:
            line = int(m.group(2))
            continue
        s = raw.strip()
        if not s or s.startswith(("//", ".")) and not _LABEL.match(s):
            continue
        lm = _LABEL.match(s)
        if lm:
            labels[lm.group(1)] = len(instrs)
            continue
        am = _ADDR.match(raw)
        if not am:
            continue
        body = am.group(2).strip().rstrip(";").strip()
        pred = ""
        if body.startswith("@"):
            pred, _, body = body.partition(" ")
        opcode, _, operands = body.partition(" ")
        instrs.append(Instr(len(instrs), int(am.group(1), 16), pred, opcode, operands.strip(), line))
    return instrs, labels


def _branch_target(ins: Instr) -> str | None:
    if ins.base != "BRA":
        return None
    m = re.search(r"`\(([^)]+)\)", ins.operands) or re.search(r"(\.L_x_\d+)", ins.operands)
    return m.group(1) if m else None


def mem_width(ins: Instr) -> int:
    """Bits moved per thread by a load / store instruction (32 unless a width modifier says otherwise)."""
    for m in ins.mods:
        if m in ("128", "64", "256"):
            return int(m)
        if m in ("U8", "S8"):
            return 8
        if m in ("U16", "S16"):
            return 16
    return 32


def mma_shape(ins: Instr) -> str:
    """'64x64x16' for wgmma (HGMMA / QGMMA), '16816' for mma.sync (HMMA / IMMA)."""
    for m in ins.mods:
        if re.fullmatch(r"\d+x\d+x\d+", m) or re.fullmatch(r"\d{4,5}", m):
            return m
    return "?"


def mma_acc_regs(ins: Instr) -> int:
    """Accumulator registers per thread an MMA writes (fp32 accumulators)."""
    shape = mma_shape(ins)
    wide = any(m in ("F32", "S32") for m in ins.mods)
    if "x" in shape:  # wgmma: an m x n accumulator over the 128 threads of a warpgroup
        m, n, _ = (int(v) for v in shape.split("x"))
        regs = m * n // 128
    elif shape in ("16816", "1688", "16832", "8816", "8832"):
        regs = 4 if shape.startswith("168") else 2
    else:
        regs = 4
    return regs if wide else max(1, regs // 2)


def mma_dims(ins: Instr) -> tuple[int, int, int]:
    """(m, n, k) of an MMA instruction."""
    shape = mma_shape(ins)
    if "x" in shape:
        m, n, k = (int(v) for v in shape.split("x"))
        return m, n, k
    table = {"16816": (16, 8, 16), "1688": (16, 8, 8), "16832": (16, 8, 32), "8816": (8, 8, 16), "8832": (8, 8, 32)}
    return table.get(shape, (16, 8, 16))


def mma_is_wgmma(ins: Instr) -> bool:
    return ins.base in ("HGMMA", "QGMMA")


def wgmma_smem_bytes(ins: Instr) -> int:
    """Bytes the tensor core reads from shared memory for one wgmma: B always, A unless it
    comes from registers (a register as the first source operand)."""
    m, n, k = mma_dims(ins)
    esize = max(1, 32 // k)  # k16 -> 16-bit operands, k32 -> 8-bit, k8 -> tf32
    ops = [o.strip() for o in ins.operands.split(",")]
    a_in_regs = len(ops) >= 2 and re.match(r"^R\d+", ops[1]) is not None
    return n * k * esize + (0 if a_in_regs else m * k * esize)


def smem_thread_bytes(ins: Instr) -> int:
    """Bytes one thread moves through shared memory with an LDS / LDSM / STS / LDGSTS."""
    if ins.base == "LDSM":
        return 16 if ins.opcode.endswith(".4") else 8 if ins.opcode.endswith(".2") else 4
    if ins.base in ("LDS", "STS", "LDGSTS"):
        return mem_width(ins) // 8
    return 0


def _wait_depth(ins: Instr) -> tuple[str, int] | None:
    """('cp.async', N) for DEPBAR.LE SB0, N; ('wgmma', N) for WARPGROUP.DEPBAR.LE gsb0, N."""
    if ins.opcode.startswith("WARPGROUP.DEPBAR"):
        m = re.search(r"gsb\d+,\s*0x([0-9a-f]+)", ins.operands)
        return ("wgmma", int(m.group(1), 16)) if m else None
    if ins.base == "DEPBAR":
        m = re.search(r"SB\d+,\s*0x([0-9a-f]+)", ins.operands)
        return ("cp.async", int(m.group(1), 16)) if m else None
    return None


@dataclass
class Loop:
    start: int           # index of the first instruction of the body
    end: int             # index of the closing backward branch
    instrs: list[Instr] = field(repr=False, default_factory=list)
    innermost: bool = True
    drained: bool = False
    guarded: list = field(repr=False, default_factory=list)  # body instructions a predicated forward
    # branch inside the body can skip (a persistent loop's per-tile prologue and epilogue)


    @property
    def size(self) -> int:
        return len(self.instrs)

    def facts(self) -> dict:
        """block_facts of the body, and under ``cond`` the numeric facts of its guarded part."""
        g = block_facts(self.guarded)
        return dict(block_facts(self.instrs), cond={k: g[k] for k in _NUMERIC})


def block_facts(instrs: list[Instr]) -> dict:
    """Instruction counts of a straight run of SASS (a loop body, or a whole kernel)."""
    mix = Counter(i.base for i in instrs)
    mma = [i for i in instrs if i.base in MMA_KINDS]
    loads = [i for i in instrs if i.base in ("LDG",)]
    asyncs = [i for i in instrs if i.base in ASYNC_COPY]
    waits = [w for w in (_wait_depth(i) for i in instrs) if w]
    # FADD / FFMA that read an MMA's accumulator registers after it, inside this block
    fadd = 0
    zero_acc = 0
    live: set[int] = set()
    for i in instrs:
        if i.base in MMA_KINDS:
            regs = i.regs()
            if regs:
                live |= set(range(regs[0], regs[0] + mma_acc_regs(i)))
            ops = [o.strip() for o in i.operands.split(",")]
            if i.base in ("HGMMA", "QGMMA") and len(ops) >= 3 and ops[2] == "RZ":
                zero_acc += 1
            if i.base in ("HMMA", "IMMA") and len(ops) >= 4 and ops[3] == "RZ":
                zero_acc += 1
        elif i.base in ("FADD", "FFMA") and live and set(i.regs()[1:]) & live:
            fadd += 1
    wg = [i for i in mma if mma_is_wgmma(i)]
    sync = [i for i in mma if not mma_is_wgmma(i)]
    return dict(
        instrs=len(instrs),
        mix=dict(mix.most_common()),
        mma_flops_wg=sum(2 * math.prod(mma_dims(i)) for i in wg),      # per warpgroup
        mma_flops_warp=sum(2 * math.prod(mma_dims(i)) for i in sync),  # per warp
        smem_tc_bytes_wg=sum(wgmma_smem_bytes(i) for i in wg),          # wgmma operand reads, per warpgroup
        smem_thread_bytes=sum(smem_thread_bytes(i) for i in instrs),    # LDS/LDSM/STS/LDGSTS, per thread
        ld_thread_bytes=sum(mem_width(i) // 8 for i in loads + [a for a in asyncs if a.base == "LDGSTS"]),
        st_thread_bytes=sum(mem_width(i) // 8 for i in instrs if i.base == "STG"),
        mma=len(mma),
        mma_kinds=dict(Counter(i.base for i in mma)),
        mma_shapes=sorted({f"{i.base}.{mma_shape(i)}" for i in mma}),
        fadd_after_mma=fadd,
        zero_acc_mma=zero_acc,
        ldg=len(loads),
        ldg_widths=dict(Counter(mem_width(i) for i in loads)),
        async_copies=len(asyncs),
        async_widths=dict(Counter(mem_width(i) for i in asyncs if i.base == "LDGSTS")),
        tma=sum(1 for i in asyncs if i.base != "LDGSTS"),
        lds=mix.get("LDS", 0) + mix.get("LDSM", 0),
        sts=mix.get("STS", 0),
        sts_u8=sum(1 for i in instrs if i.base == "STS" and mem_width(i) == 8),
        stg=mix.get("STG", 0),
        stg_widths=dict(Counter(mem_width(i) for i in instrs if i.base == "STG")),
        bar=mix.get("BAR", 0),
        shfl=mix.get("SHFL", 0),
        cp_async_wait=min((n for k, n in waits if k == "cp.async"), default=None),
        wgmma_wait=min((n for k, n in waits if k == "wgmma"), default=None),
        mbarrier_waits=sum(1 for i in instrs if i.base == "SYNCS" and "WAIT" in i.opcode),
        mufu=mix.get("MUFU", 0),
    )


def find_loops(instrs: list[Instr], labels: dict[str, int]) -> list[Loop]:
    """Loops closed by backward branches, in program order; nested ones are kept and marked."""
    loops = []
    for ins in instrs:
        target = _branch_target(ins)
        if target is None or target not in labels:
            continue
        start = labels[target]
        if start > ins.index or start == ins.index:  # forward branch, or the trap loop after EXIT
            continue
        loops.append(Loop(start, ins.index, instrs[start:ins.index + 1]))
    for lp in loops:  # blocks under a predicated forward branch that lands inside the body
        skipped: set = set()
        for b in lp.instrs:
            t = _branch_target(b)
            if b.pred and t in labels and b.index < labels[t] <= lp.end:
                skipped.update(range(b.index + 1, labels[t]))
        lp.guarded = [instrs[k] for k in sorted(skipped) if instrs[k].base != "NOP"]
    for a in loops:
        a.innermost = not any(b is not a and a.start <= b.start and b.end <= a.end for b in loops)
    # a loop is drained when, between its exit and the next loop (or the end), a wait lets nothing stay in flight
    ordered = sorted(loops, key=lambda lp: lp.start)
    for k, lp in enumerate(ordered):
        stop = next((o.start for o in ordered[k + 1:] if o.start > lp.end), len(instrs))
        after = instrs[lp.end + 1:stop]
        lp.drained = any((w := _wait_depth(i)) is not None and w[1] == 0 for i in after)
    return ordered


def analyse_sass(text: str) -> dict:
    """Structural facts of one kernel's SASS (see the module docstring).

    ``main_loops``: the innermost loops that do the kernel's work: those with MMA instructions
    if any loop has them, else those with global or async loads, else every innermost loop.
    ``body``: the facts of one main loop body (the largest, when there are several of
    equal role); ``outside``: instructions not in any loop (run once per program)."""
    instrs, labels = parse(text)
    loops = find_loops(instrs, labels)
    inner = [lp for lp in loops if lp.innermost and lp.size > 1]
    with_mma = [lp for lp in inner if lp.facts()["mma"]]
    with_loads = [lp for lp in inner if lp.facts()["ldg"] + lp.facts()["async_copies"]]
    main = with_mma or with_loads or inner
    in_loop = set()
    for lp in loops:
        in_loop.update(range(lp.start, lp.end + 1))
    outside = [i for i in instrs if i.index not in in_loop and i.base not in ("NOP",)]
    total = block_facts([i for i in instrs if i.base != "NOP" or i.index in in_loop])
    body = max((lp.facts() for lp in main), key=lambda f: f["instrs"], default=None)
    per_iter = _mean_facts([lp.facts() for lp in main]) if main else None
    waits_main = [lp.facts() for lp in main]
    return dict(
        instrs=total["instrs"],
        loops=len(inner),
        main_loops=len(main),
        loop_sizes=[lp.size for lp in main],
        main_loop_instrs=sum(lp.size for lp in main),
        drained_loops=sum(1 for lp in main if lp.drained),
        outside_instrs=len(outside),
        body=body,
        per_iter=per_iter,
        outside=block_facts(outside),
        total=total,
        cp_async_wait=min((f["cp_async_wait"] for f in waits_main if f["cp_async_wait"] is not None), default=None),
        wgmma_wait=min((f["wgmma_wait"] for f in waits_main if f["wgmma_wait"] is not None), default=None),
        # MMA results folded by FADD/FFMA inside a main loop (acc += tl.dot); an epilogue reusing the
        # accumulator's registers after the loop is not that
        fadd_after_mma=sum(lp.facts()["fadd_after_mma"] for lp in main),
        zero_acc_mma=total["zero_acc_mma"],
        sts_u8=total["sts_u8"],
        source_lines=sorted({i.line for lp in main for i in lp.instrs if i.line is not None}),
    )


_NUMERIC = ("instrs", "mma", "mma_flops_wg", "mma_flops_warp", "smem_tc_bytes_wg", "smem_thread_bytes",
            "ld_thread_bytes", "st_thread_bytes", "ldg", "async_copies", "tma", "bar", "shfl", "mufu")


def _mean_facts(facts: list[dict]) -> dict:
    """One iteration of "the" main loop: the mean over the main loops (a kernel with nine
    per-tap loops runs each for a ninth of its iterations)."""
    out = {k: sum(f[k] for f in facts) / len(facts) for k in _NUMERIC}
    out["cond"] = {k: sum(f["cond"][k] for f in facts) / len(facts) for k in _NUMERIC}
    return out


def wait_depth(facts: dict) -> int | None:
    """How many stages a kernel's main loop keeps in flight at its tightest wait: the smaller
    of the cp.async and wgmma wait depths, None when the loop has neither (no async pipeline)."""
    vals = [v for v in (facts.get("cp_async_wait"), facts.get("wgmma_wait")) if v is not None]
    return min(vals) if vals else None
