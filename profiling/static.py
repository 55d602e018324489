"""``python -m profiling static``: a GPU-free performance model of every Triton kernel.

Every op behind the registry is driven forward and backward through the registry, exactly as
the network calls it, at the network's real shapes, on CPU tensors: every Triton kernel launch is
recorded instead of run (with its real arguments, grid, block sizes and warps), and every eager
ATen op the launchers and autograd formulas run around the kernels (copies, casts, reductions:
the "glue") is recorded with its bytes, computing nothing (profiling/glue.py). Each recorded
kernel is compiled for sm_80 (A100) and sm_90 (H100) exactly as Triton's JIT would (ints equal to
1 become constants, pointers and ints divisible by 16 are marked so) and its SASS is read
(profiling/sass.py). The performance model (profiling/perfmodel.py, with the work of each kernel
in profiling/kernel_work.py) turns that into a predicted time per launch, per op and per training
step, beside the roofline minimum.

Outputs (``--out``, default ``runs/static``, an ignored folder; ``--commit`` writes the
committed ``reports/static``):
  static.json   ``rows``: one per kernel launch x configuration x architecture with the SASS facts
                (loops, wait depth, async vs plain loads, tensor-core instructions and whether the
                accumulator stays in them, byte-wide shared stores), the work (bytes, FLOPs,
                instructions per element beside the issue budget), the grid (programs, resident
                programs per SM, waves) and the prediction (every bound, the deciding one, the
                predicted time and fraction of roofline); ``ops`` (per op and shape), ``steps`` (per
                training step, backend and architecture), ``host`` (host time per step), ``rules``
  static.md     the same as tables, default configurations first, findings and rules last
  static.png    predicted vs roofline per op and architecture (matplotlib)
Every configuration of each launcher's configuration lists (``*_CONFIGS`` in kernels/<op>.py) is
compiled and modelled too, unless ``--default-only``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from model.cli import did_you_mean, usage_error

ARCHS = {"sm_80": (80, "A100-SXM4-80GB"), "sm_90": (90, "H100-SXM")}
TC_PATTERNS = {"HMMA": r"\bHMMA\b", "HGMMA": r"\bHGMMA\b", "QGMMA": r"\bQGMMA\b", "IMMA": r"\bIMMA\b"}
# op -> (module, list of config-list attribute names)
CONFIG_LISTS = {"bn_act": ("kernels.bn_act", ("APPLY_CONFIGS", "REDUCE_CONFIGS")),
                "maxpool": ("kernels.maxpool", ("CONFIGS",)),
                "conv": ("kernels.conv", ("FWD_CONFIGS", "WGRAD_CONFIGS"))}
TRAIN_PHASES = ("fwd", "bwd")
_PHASE = ["fwd"]  # the phase the launches being recorded belong to (set by _drive)


@dataclass
class Launch:
    kernel: str
    fn: object = field(repr=False)
    signature: dict
    constexprs: dict
    attrs: dict
    num_warps: int
    num_stages: int
    key: str = ""
    args: dict = field(default_factory=dict, repr=False)  # name -> int / float / TensorInfo
    grid: tuple = (1,)
    phase: str = "fwd"
    meta: dict = field(default_factory=dict, repr=False)  # the launch's keyword options (constexprs, num_warps)

    @property
    def cx(self) -> dict:
        """Constexpr values by name."""
        return {self.fn.arg_names[k[0]]: v for k, v in self.constexprs.items()}


def _dtype_name(dt) -> str:
    import torch
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64",
             torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
             torch.bool: "i1"}
    for attr, name in (("float8_e4m3fn", "fp8e4nv"), ("float8_e5m2", "fp8e5")):
        if hasattr(torch, attr):
            names[getattr(torch, attr)] = name
    return names[dt]


def _specialize(fn, args, kwargs) -> tuple[dict, dict, dict]:
    """signature, constexprs and attrs as Triton's JIT would build them for these arguments."""
    import torch
    names = fn.arg_names
    values = dict(zip(names, args))
    values.update({k: v for k, v in kwargs.items() if k in names})
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(names):
        v = values.get(name)
        is_constexpr = i in getattr(fn, "constexprs", []) or name in kwargs
        div16 = [["tt.divisibility", 16]]
        if is_constexpr or v is None:
            signature[name], constexprs[(i,)] = "constexpr", v
        elif isinstance(v, torch.Tensor):
            signature[name] = "*" + _dtype_name(v.dtype)
            if v.data_ptr() % 16 == 0:
                attrs[(i,)] = div16
        elif isinstance(v, bool):
            signature[name] = "i1"
        elif isinstance(v, int):
            if v == 1:
                signature[name], constexprs[(i,)] = "constexpr", 1
            else:
                signature[name] = "i32" if -2 ** 31 <= v < 2 ** 31 else "i64"
                if v % 16 == 0:
                    attrs[(i,)] = div16
        elif isinstance(v, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}: cannot specialise argument {name}={v!r}")
    return signature, constexprs, attrs


def _arg_values(fn, args, kwargs) -> dict:
    import torch

    from .kernel_work import TensorInfo
    out = {}
    for name, v in list(zip(fn.arg_names, args)) + [(k, v) for k, v in kwargs.items() if k in fn.arg_names]:
        if isinstance(v, torch.Tensor):
            out[name] = TensorInfo(tuple(v.shape), tuple(v.stride()), _dtype_name(v.dtype), v.element_size())
        else:
            out[name] = v
    return out


@contextlib.contextmanager
def record_launches(out: list, light: bool = False):
    """Within the block, ``kernel[grid](...)`` records a Launch instead of running (``light``: only
    the kernel's name and phase, as cheaply as possible, for timing the host code around it)."""
    from triton.runtime.jit import JITFunction
    original = JITFunction.run

    def fake_run(self, *args, grid, warmup, **kwargs):
        if light:
            out.append((self.__name__, _PHASE[0]))
            return None
        sig, ce, attrs = _specialize(self, args, kwargs)
        warps, stages = kwargs.get("num_warps", 4), kwargs.get("num_stages", 3)
        key = json.dumps([self.__name__, sig, sorted((str(k), str(v)) for k, v in ce.items()),
                          sorted(str(k) for k in attrs), warps, stages])
        g = grid(dict(kwargs)) if callable(grid) else grid
        g = tuple(int(v) for v in (g if isinstance(g, (tuple, list)) else (g,)))
        out.append(Launch(self.__name__, self, sig, ce, attrs, warps, stages, key,
                          _arg_values(self, args, kwargs), g, _PHASE[0], dict(kwargs)))
        return None

    JITFunction.run = fake_run
    try:
        yield out
    finally:
        JITFunction.run = original


@contextlib.contextmanager
def _phase(name: str):
    old, _PHASE[0] = _PHASE[0], name
    try:
        yield
    finally:
        _PHASE[0] = old


def _drive(case, impl: str, dtype, glue: list) -> None:
    """Run one op through the registry, forward and backward, as the network calls it (and bn_act
    in eval mode), at the case's shapes on CPU tensors; ATen glue goes to ``glue`` with its phase."""
    import torch

    import kernels
    from kernels import fp8
    from .glue import record_aten
    fn = kernels.get(case.op, impl)
    C = case.x_shape[1]
    x = torch.empty(case.x_shape, dtype=dtype, memory_format=torch.channels_last)
    # fp8 implementations as in a network step past the first (every delayed scale ready): a conv=fp8
    # input comes with its producer's copy, and an input a conv=fp8 produced asks for a gradient copy
    fp8_net = impl == "fp8"

    def ready(st):
        st.ready = True
        return st
    if fp8_net and case.params.get("from_conv_cin", 0) >= 32:
        fp8.want_grad(x, ready(fp8.DelayedScale(x.device)))

    def run(phase, f):
        with _phase(phase), record_aten() as rec:
            f()
        glue.extend((phase, op) for op in rec.ops)

    if case.op == "bn_act":
        act = case.params.get("activation", "gelu")
        rm, rv = torch.zeros(C), torch.ones(C)
        if fp8_net:
            ready(fp8.state(rm, "y"))
        w = torch.ones(C)  # the network's BatchNorm weight: a frozen tensor of ones, passed as is
        b = torch.zeros(C, requires_grad=True)
        x.requires_grad_(True)
        out = {}
        run("fwd", lambda: out.setdefault("y", fn(x, rm, rv, w, b, True, 0.4, 1e-12, act)))
        dy = torch.empty_like(out["y"])
        run("bwd", lambda: out["y"].backward(dy))
        with torch.no_grad():
            run("eval", lambda: fn(x.detach(), rm, rv, w, b, False, 0.4, 1e-12, act))
    elif case.op == "maxpool":
        k = case.params["k"]
        x.requires_grad_(True)
        out = {}
        run("fwd", lambda: out.setdefault("y", fn(x, k, k)))
        dy = torch.empty_like(out["y"])
        run("bwd", lambda: out["y"].backward(dy))
    else:
        k, pad = case.params["k"], case.params["padding"]
        w = torch.empty((case.params["cout"], C, k, k), dtype=dtype, memory_format=torch.channels_last)
        x.requires_grad_(case.params.get("input_grad", True))
        w.requires_grad_(case.params.get("weight_grad", True))
        bias = None
        if case.params.get("bias"):
            bias = torch.zeros(case.params["cout"], dtype=dtype, requires_grad=True)
        out = {}
        if fp8_net and C >= 32:
            for role in ("w", "x", "dy"):
                ready(fp8.state(w, role))
            fp8.attach(x, torch.empty(x.shape, dtype=fp8.E4M3, memory_format=torch.channels_last), torch.ones(1))
        run("fwd", lambda: out.setdefault("y", fn(x, w, bias, pad)))
        if out["y"].requires_grad:
            dy = torch.empty_like(out["y"])
            if fp8_net and C >= 32:
                fp8.attach(dy, torch.empty(dy.shape, dtype=fp8.GRAD, memory_format=torch.channels_last), torch.ones(1))
            run("bwd", lambda: out["y"].backward(dy))


@dataclass
class OpRecord:
    op: str
    impl: str
    case: object
    variant: str                       # "default" or "LIST[i]"
    launches: list = field(default_factory=list)
    glue: list = field(default_factory=list)   # (phase, AtenOp)

    @property
    def default(self) -> bool:
        return self.variant == "default"


def triton_impls(op: str) -> list[str]:
    import kernels
    return [i for i in kernels.impls(op) if i not in ("eager", "compile")]


def collect(batch: int, ops: list[str], all_configs: bool = True, dtype_name: str = "fp16",
            cases: list | None = None, sms: int | None = None) -> list[OpRecord]:
    """Record the launches and glue of the Triton implementations of ``ops`` at the real shapes,
    for the default configuration and (``all_configs``) each entry of each configuration list.
    ``sms``: the SM count of the modelled GPU, from which the launchers size their grids."""
    import importlib

    import torch

    import kernels._triton as kt
    from .shapes import unique_ops
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    records = []
    kt.RECORDING, kt.TARGET_SMS = True, sms
    try:
        for op in ops:
            modname, lists = CONFIG_LISTS.get(op, (None, ()))
            mod = importlib.import_module(modname) if modname else None
            for impl in triton_impls(op):
                for case in (c for c in (cases or unique_ops(batch, op)) if c.op == op):
                    variants = [("default", None, None)]
                    if all_configs and mod is not None:
                        variants += [(f"{ln}[{j}]", ln, cfg) for ln in lists for j, cfg in enumerate(getattr(mod, ln))]
                    for label, listname, cfg in variants:
                        rec = OpRecord(op, impl, case, label)
                        saved = getattr(mod, listname) if listname else None
                        if listname:
                            setattr(mod, listname, [cfg])
                        # launchers cache their choice per shape (kernels/conv.py): forget it, or the
                        # forced configuration would never be asked for
                        getattr(mod, "_chosen", {}).clear()
                        try:
                            with record_launches(rec.launches):
                                _drive(case, impl, dtype, rec.glue)
                        finally:
                            if listname:
                                setattr(mod, listname, saved)
                        getattr(mod, "_chosen", {}).clear()
                        records.append(rec)
    finally:
        kt.RECORDING, kt.TARGET_SMS = False, None
    return records


def _tool(name: str) -> str:
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} not found in the triton wheel ({path})")
    return path


def occupancy(regs: int, shared: int, num_warps: int, arch: str) -> float:
    """Fraction of the SM's warp slots that the limits allow."""
    from .devices import PEAKS
    from .perfmodel import resident_programs
    peak = PEAKS[ARCHS[arch][1]]
    return resident_programs(regs, shared, num_warps, peak) * num_warps * 32 / peak.max_threads_per_sm


def compile_sass(fn, signature, constexprs, attrs, num_warps, num_stages, arch) -> tuple[object, str, str]:
    """(compiled kernel, resource usage text, SASS text) for ``arch``, compiled on this machine."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    src = ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", ARCHS[arch][0], 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", path], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([_tool("nvdisasm"), "-c", "-g", path], capture_output=True, text=True).stdout
        if not sass.strip():  # no line information in the cubin
            sass = subprocess.run([_tool("nvdisasm"), "-c", path], capture_output=True, text=True).stdout
    return compiled, usage, sass


def kernel_facts(ln: Launch, arch: str) -> dict:
    """Resources and SASS facts of one compiled kernel."""
    from .sass import analyse_sass, wait_depth
    compiled, usage, sass = compile_sass(ln.fn, ln.signature, ln.constexprs, ln.attrs, ln.num_warps,
                                         ln.num_stages, arch)
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    regs, stack, local = int(fields.get("REG", 0)), int(fields.get("STACK", 0)), int(fields.get("LOCAL", 0))
    shared = max(int(fields.get("SHARED", 0)), int(getattr(compiled.metadata, "shared", 0) or 0))
    tc = {k: len(re.findall(p, sass)) for k, p in TC_PATTERNS.items()}
    s = analyse_sass(sass)
    ld128 = len(re.findall(r"LDG\.E\.128|LDG\.E\.ENL2\.256|LDG\.E\.(?:[A-Z0-9]+\.)*128", sass))
    return dict(regs=regs, spill_bytes=stack + local, stack=stack, local=local, shared=shared,
                tensor_core_instrs=sum(tc.values()), tc=tc, ld128=ld128,
                vector_loads=ld128 + s["total"]["async_copies"],
                st128=len(re.findall(r"STG\.E\.(?:[A-Z0-9]+\.)*128", sass)),
                occupancy=occupancy(regs, shared, ln.num_warps, arch),
                shared_limit=(163 if arch == "sm_80" else 227) * 1024, wait_depth=wait_depth(s), sass=s)


def analyse(entry: dict, arch: str) -> dict:
    """Compatibility: facts of one launch entry ({launch, op, impl, uses}) as a flat row."""
    ln: Launch = entry["launch"]
    f = kernel_facts(ln, arch)
    ce = {k: v for k, v in ln.cx.items() if k.isupper() or k.startswith("BLOCK")}
    return dict(kernel=ln.kernel, op=entry["op"], impl=entry["impl"], arch=arch, num_warps=ln.num_warps,
                num_stages=ln.num_stages, constexprs=ce, uses=entry["uses"],
                default=any("(default)" in u for u in entry["uses"]),
                **{k: v for k, v in f.items() if k != "sass"}, sass=f["sass"])


def probe_gemm(arch: str, dtype: str = "fp16") -> dict:
    """Compile a plain 128x128x64 ``tl.dot`` loop for ``arch`` through the same analysis: a check
    that the tensor-core detection works (HMMA on sm_80, HGMMA on sm_90, QGMMA for fp8)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _probe_gemm_kernel(a_ptr, b_ptr, c_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
        rm = tl.arange(0, BM)
        rn = tl.arange(0, BN)
        rk = tl.arange(0, BK)
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        for k in range(0, K, BK):
            a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
            b = tl.load(b_ptr + (k + rk)[:, None] * BN + rn[None, :])
            acc = tl.dot(a, b, acc)
        tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)

    ty = {"fp16": "*fp16", "fp8": "*fp8e4nv"}[dtype]
    names = _probe_gemm_kernel.arg_names
    div16 = [["tt.divisibility", 16]]
    launch = Launch("_probe_gemm_kernel", _probe_gemm_kernel,
                    dict(a_ptr=ty, b_ptr=ty, c_ptr="*fp32", K="i32", BM="constexpr", BN="constexpr", BK="constexpr"),
                    {(names.index("BM"),): 128, (names.index("BN"),): 128, (names.index("BK"),): 64},
                    {(0,): div16, (1,): div16, (2,): div16, (3,): div16}, 4, 3)
    return analyse(dict(launch=launch, op="probe", impl=dtype, uses=["probe (default)"]), arch)


# --------------------------------------------------------------------------------- the model
def learn_residency(records: list[OpRecord], arch: str, sms: int, cache: dict) -> int:
    """Tell the launchers how many programs of each recorded kernel one SM of ``arch`` holds (from
    the compiled kernel), as kernels/_triton.py learns it after a first launch on a GPU; the next
    recording then sizes its grids in whole waves. Returns how many residencies were new."""
    import kernels._triton as kt
    from .devices import PEAKS
    from .perfmodel import resident_programs
    peak = PEAKS[ARCHS[arch][1]]
    new = 0
    for rec in records:
        if not _runs_on(rec.impl, arch):
            continue
        for ln in rec.launches:
            if (ln.key, arch) not in cache:
                cache[(ln.key, arch)] = kernel_facts(ln, arch)
            f = cache[(ln.key, arch)]
            key = kt.residency_key(ln.fn, ln.meta, sms)
            res = max(1, resident_programs(f["regs"], f["shared"], ln.num_warps, peak))
            if kt._RESIDENCY.get(key) != res:
                kt._RESIDENCY[key] = res
                new += 1
    return new


def _config_str(ln: Launch) -> str:
    ce = {k: v for k, v in ln.cx.items() if k.isupper() or k.startswith("BLOCK")}
    return ",".join(f"{k}={int(v) if isinstance(v, bool) else v}"
                    for k, v in sorted(ce.items(), key=lambda kv: not kv[0].startswith("BLOCK")))


def _runs_on(impl: str, arch: str) -> bool:
    return not (impl == "fp8" and arch == "sm_80")  # FP8 tensor cores need sm_89+; conv=fp8 refuses an A100


def build_rows(records: list[OpRecord], archs: list[str], facts_cache: dict | None = None) -> list[dict]:
    """One row per recorded launch x architecture: SASS facts, work, prediction."""
    from .devices import PEAKS
    from .kernel_work import work_of
    from .perfmodel import predict, resident_programs
    cache = {} if facts_cache is None else facts_cache
    rows = []
    for rec in records:
        for j, ln in enumerate(rec.launches):
            for arch in archs:
                if not _runs_on(rec.impl, arch):
                    continue
                peak = PEAKS[ARCHS[arch][1]]
                if (ln.key, arch) not in cache:
                    cache[(ln.key, arch)] = kernel_facts(ln, arch)
                f = cache[(ln.key, arch)]
                s = f["sass"]
                fp8 = "QGMMA" in s["total"]["mma_kinds"]
                capacity = peak.sms * max(1, resident_programs(f["regs"], f["shared"], ln.num_warps, peak))
                p = predict(ln, f, work_of(ln, peak, capacity), peak, arch, fp8=fp8)
                body = s["body"] or {}
                rows.append(dict(
                    kernel=ln.kernel, op=rec.op, impl=rec.impl, case=rec.case.label(), layer=rec.case.name,
                    case_key=_case_key_str(rec.case),
                    shape=list(rec.case.x_shape), variant=rec.variant, default=rec.default, phase=ln.phase,
                    launch_index=j, arch=arch, config=_config_str(ln), num_warps=ln.num_warps,
                    num_stages=ln.num_stages, grid=list(ln.grid),
                    regs=f["regs"], spill_bytes=f["spill_bytes"], shared=f["shared"], shared_limit=f["shared_limit"],
                    occupancy=f["occupancy"], tc=f["tc"], tensor_core_instrs=f["tensor_core_instrs"],
                    ld128=f["ld128"], vector_loads=f["vector_loads"], st128=f["st128"],
                    loops=s["loops"], main_loops=s["main_loops"], drained_loops=s["drained_loops"],
                    loop_instrs=s["loop_sizes"], wait_depth=f["wait_depth"], cp_async_wait=s["cp_async_wait"],
                    wgmma_wait=s["wgmma_wait"], async_copies=body.get("async_copies", 0),
                    async_widths=body.get("async_widths", {}), plain_loads=body.get("ldg", 0),
                    plain_load_widths=body.get("ldg_widths", {}), mma_shapes=body.get("mma_shapes", []),
                    fadd_after_mma=s["fadd_after_mma"], zero_acc_mma=s["zero_acc_mma"], sts_u8=s["sts_u8"],
                    bar_in_loop=body.get("bar", 0), shfl_in_loop=body.get("shfl", 0),
                    **{k: v for k, v in p.items()}))
    return rows


def glue_rows(records: list[OpRecord], archs: list[str]) -> list[dict]:
    """The eager ATen ops around the kernels, with their predicted time (bytes at HBM speed)."""
    from .devices import PEAKS
    from .perfmodel import glue_ms
    out = []
    for rec in records:
        for phase, op in rec.glue:
            for arch in archs:
                if not _runs_on(rec.impl, arch):
                    continue
                out.append(dict(op=rec.op, impl=rec.impl, case=rec.case.label(), variant=rec.variant,
                                default=rec.default, phase=phase, arch=arch, aten=op.name, kind=op.kind,
                                bytes=op.bytes, predicted_ms=glue_ms(op.bytes, PEAKS[ARCHS[arch][1]])))
    return out


def _case_key(case) -> tuple:
    return (case.op, tuple(case.x_shape), tuple(sorted(case.params.items())))


def _case_key_str(case) -> str:
    return json.dumps([case.op, list(case.x_shape), sorted(case.params.items())])


def op_table(records: list[OpRecord], rows: list[dict], glue: list[dict], archs: list[str], esize: int) -> list[dict]:
    """Per op x implementation x shape x arch (default configuration, training forward + backward):
    kernels and glue predicted, the op's roofline (profiling/shapes.py) and the fraction reached."""
    from .devices import PEAKS
    from .perfmodel import with_range
    out = []
    for rec in (r for r in records if r.default):
        for arch in archs:
            if not _runs_on(rec.impl, arch):
                continue
            peak = PEAKS[ARCHS[arch][1]]
            mine = [r for r in rows if r["default"] and r["impl"] == rec.impl and r["case"] == rec.case.label()
                    and r["arch"] == arch and r["op"] == rec.op]
            gl = [g for g in glue if g["default"] and g["impl"] == rec.impl and g["case"] == rec.case.label()
                  and g["arch"] == arch and g["op"] == rec.op]
            fp8 = rec.impl == "fp8" and rec.case.x_shape[1] >= 32
            row = dict(op=rec.op, impl=rec.impl, case=rec.case.label(), key=_case_key_str(rec.case), arch=arch)
            for phase in TRAIN_PHASES:
                k = sum(r["predicted_ms"] for r in mine if r["phase"] == phase)
                g = sum(x["predicted_ms"] for x in gl if x["phase"] == phase)
                row[f"{phase}_kernels_ms"], row[f"{phase}_glue_ms"], row[f"{phase}_ms"] = k, g, k + g
            row["kernels"] = len([r for r in mine if r["phase"] in TRAIN_PHASES])
            bound_ms: dict = {}
            for r in mine:
                if r["phase"] in TRAIN_PHASES:
                    bound_ms[r["bound"]] = bound_ms.get(r["bound"], 0.0) + r["predicted_ms"]
            g_ms = sum(x["predicted_ms"] for x in gl if x["phase"] in TRAIN_PHASES)
            if g_ms:
                bound_ms["glue"] = g_ms
            row["bound_ms"] = bound_ms
            row["bound"] = max(bound_ms, key=bound_ms.get) if bound_ms else None
            row["glue_ops"] = len([x for x in gl if x["phase"] in TRAIN_PHASES])
            row["predicted_ms"] = row["fwd_ms"] + row["bwd_ms"]
            row["roofline_fwd_ms"] = 1e3 * rec.case.phase_bound_s(peak, "fwd", esize, fp8=fp8)
            row["roofline_bwd_ms"] = 1e3 * rec.case.phase_bound_s(peak, "bwd", esize, fp8=fp8)
            row["roofline_ms"] = row["roofline_fwd_ms"] + row["roofline_bwd_ms"]
            row["predicted_fraction"] = row["roofline_ms"] / row["predicted_ms"] if row["predicted_ms"] else None
            lo, hi = with_range(row["predicted_ms"])
            row["predicted_range"] = f"{lo:.4f}-{hi:.4f}"
            row["predicted_range_ms"] = [lo, hi]
            for phase in TRAIN_PHASES:
                rl = row[f"roofline_{phase}_ms"]
                row[f"{phase}_fraction"] = rl / row[f"{phase}_ms"] if row[f"{phase}_ms"] and rl else None
            slow = max((r for r in mine if r["phase"] in TRAIN_PHASES), key=lambda r: r["predicted_ms"], default=None)
            row["slowest_kernel"] = f"{slow['kernel']} ({slow['bound']})" if slow else None
            out.append(row)
    return out


def step_table(ops: list[dict], batch: int, archs: list[str], esize: int, activation: str = "gelu",
               recipe=None) -> list[dict]:
    """Per backend x arch: one training step (forward + backward of every layer) predicted for the
    Triton implementations, beside its roofline; the ops a backend leaves to eager code (cuDNN,
    ATen) are not modelled and appear as their roofline only."""
    import kernels
    from .devices import PEAKS
    from .perfmodel import with_range
    from .shapes import fused_minimum, network_ops
    by_key = {(o["op"], o["impl"], o["key"], o["arch"]): o for o in ops}
    out = []
    fused = {arch: fused_minimum(network_ops(batch, activation=activation, recipe=recipe), PEAKS[ARCHS[arch][1]],
                                 esize) for arch in archs}
    for backend in kernels.backends():
        names = kernels.resolve_names(backend)
        for arch in archs:
            peak = PEAKS[ARCHS[arch][1]]
            row = dict(backend=backend, arch=arch, predicted_ms=0.0, roofline_ms=0.0, eager_roofline_ms=0.0,
                       per_op={}, modelled_ops=0, eager_ops=0)
            runnable = True
            for case in network_ops(batch, activation=activation, recipe=recipe):
                impl = names[case.op]
                if not _runs_on(impl, arch):
                    runnable = False
                o = by_key.get((case.op, impl, _case_key_str(case), arch))
                if o is None:
                    ms = 1e3 * (case.phase_bound_s(peak, "fwd", esize) + case.phase_bound_s(peak, "bwd", esize))
                    row["eager_roofline_ms"] += ms
                    row["eager_ops"] += 1
                    continue
                row["predicted_ms"] += o["predicted_ms"]
                row["roofline_ms"] += o["roofline_ms"]
                for b, ms in (o.get("bound_ms") or {}).items():
                    row.setdefault("_bounds", {})[b] = row.setdefault("_bounds", {}).get(b, 0.0) + ms
                row["per_op"][case.op] = row["per_op"].get(case.op, 0.0) + o["predicted_ms"]
                row["modelled_ops"] += 1
            if not runnable:
                row.update(predicted_ms=None, roofline_ms=None, eager_roofline_ms=None,
                           note="conv=fp8 needs FP8 tensor cores (sm_89+)")
            elif not row["modelled_ops"]:
                row.update(predicted_ms=None, roofline_ms=None)
            row["predicted_fraction"] = (row["roofline_ms"] / row["predicted_ms"]
                                         if row.get("predicted_ms") else None)
            if row.get("predicted_ms") is not None:
                row["predicted_range_ms"] = list(with_range(row["predicted_ms"]))
            row["fused_min_ms"] = fused[arch]["ms"]
            device = (row.get("predicted_ms") or 0) + (row.get("eager_roofline_ms") or 0)
            row["of_fused_min"] = fused[arch]["ms"] / device if row.get("predicted_ms") else None
            if o_bounds := row.pop("_bounds", None):
                row["bound"] = max(o_bounds, key=o_bounds.get)
            out.append(row)
    return out


def kernel_step_totals(rows: list[dict], ops: list[dict], batch: int, backend: str, arch: str,
                       activation: str = "gelu", recipe=None) -> dict:
    """Predicted ms per training step per kernel name for ``backend`` (default configurations),
    summed over the layers: what a profiler trace of that backend reports per kernel."""
    import kernels
    from .shapes import network_ops
    names = kernels.resolve_names(backend)
    totals: dict[str, float] = {}
    for case in network_ops(batch, activation=activation, recipe=recipe):
        impl, key = names[case.op], _case_key_str(case)
        for r in rows:
            if (r["default"] and r["arch"] == arch and r["impl"] == impl and r["case_key"] == key
                    and r["phase"] in TRAIN_PHASES):
                totals[r["kernel"]] = totals.get(r["kernel"], 0.0) + r["predicted_ms"]
    return totals


def measured_vs_predicted(rows: list[dict], ops: list[dict], batch: int, reports_dir: str) -> dict | None:
    """The newest GPU report under ``reports_dir`` with a profiler trace of ``--backend triton`` and op
    benchmarks: measured beside predicted per kernel (ms per step) and per op (fwd+bwd), with ratios."""
    found = []
    for path in glob.glob(os.path.join(reports_dir, "*", "report.json")):
        try:
            rep = json.load(open(path))
        except (OSError, ValueError):
            continue
        if rep.get("quick") or rep.get("env", {}).get("device_type") != "cuda":
            continue
        found.append((os.path.getmtime(path), path, rep))
    if not found:
        return None
    _, path, rep = max(found, key=lambda t: t[0])
    base = os.path.dirname(path)
    device = rep["env"]["device"]
    from .devices import detect
    peak = detect(device)
    arch = "sm_90" if peak and peak.capability >= (9, 0) else "sm_80"
    out = dict(report=os.path.relpath(base), device=device, arch=arch, kernels=[], ops=[])
    try:
        traces = json.load(open(os.path.join(base, "trace", "trace.json")))
        tri = next(t for t in traces if "triton" in t.get("flags", ""))
        predicted = kernel_step_totals(rows, ops, tri.get("batch", batch), "triton", arch)
        for t in tri["top"]:
            name = t["name"].split("(")[0].strip()
            if name in predicted:
                out["kernels"].append(dict(kernel=name, measured_ms=t["ms"], predicted_ms=predicted[name],
                                           ratio=t["ms"] / predicted[name] if predicted[name] else None))
    except (OSError, ValueError, StopIteration, KeyError):
        pass
    try:
        bench = json.load(open(os.path.join(base, "bench", "bench.json")))
        for b in bench["records"]:
            if "error" in b or b.get("mode") != "fwd+bwd":
                continue
            o = next((o for o in ops if o["impl"] == b["impl"] and o["arch"] == arch
                      and o["case"].split(" ")[1] == b["case"].split(" ")[1] and o["op"] == b["op"]), None)
            if o:
                out["ops"].append(dict(op=b["op"], case=b["case"], impl=b["impl"], measured_ms=b["ms"],
                                       predicted_ms=o["predicted_ms"], ratio=b["ms"] / o["predicted_ms"]))
    except (OSError, ValueError, KeyError):
        pass
    return out if (out["kernels"] or out["ops"]) else None


# ------------------------------------------------------------------------------ presentation
KERNEL_COLUMNS = [("kernel", "kernel"), ("impl", "impl"), ("case", "used at"), ("phase", "phase"), ("arch", "arch"),
                  ("bound", "bound"), ("predicted_ms", "predicted ms"), ("predicted_range", "range ms"),
                  ("roofline_ms", "roofline ms"), ("predicted_fraction", "of roofline"), ("instr_per_elem", "instr/elem"),
                  ("issue_budget", "budget"),
                  ("instr_per_mma", "instr/MMA"), ("mma_budget", "MMA budget"), ("loops", "loops"),
                  ("drained_loops", "drained"), ("wait_depth", "wait depth"), ("async_copies", "async loads"),
                  ("plain_loads", "plain loads"), ("mma_shapes", "MMA"), ("fadd_after_mma", "FADD after MMA"),
                  ("sts_u8", "STS.U8"), ("programs", "programs"), ("resident", "per SM"), ("waves", "waves"),
                  ("regs", "regs"), ("spill_bytes", "spill B"), ("occupancy", "occupancy")]
CONFIG_COLUMNS = [("kernel", "kernel"), ("impl", "impl"), ("case", "used at"), ("arch", "arch"), ("variant", "variant"),
                  ("config", "config"), ("num_warps", "warps"), ("num_stages", "stages"), ("regs", "regs"),
                  ("spill_bytes", "spill B"), ("shared", "smem B"), ("tensor_core_instrs", "TC instrs"),
                  ("vector_loads", "vector loads"), ("occupancy", "occupancy"), ("bound", "bound"),
                  ("predicted_ms", "predicted ms"), ("predicted_range", "range ms"), ("predicted_fraction", "of roofline")]
OP_COLUMNS = [("op", "op"), ("impl", "impl"), ("case", "shape"), ("arch", "arch"), ("fwd_ms", "fwd ms"),
              ("roofline_fwd_ms", "fwd roofline"), ("fwd_fraction", "fwd of roofline"), ("bwd_ms", "bwd ms"),
              ("roofline_bwd_ms", "bwd roofline"), ("bwd_fraction", "bwd of roofline"),
              ("fwd_glue_ms", "glue fwd ms"), ("bwd_glue_ms", "glue bwd ms"), ("kernels", "kernels"),
              ("glue_ops", "glue ops"), ("predicted_ms", "fwd+bwd ms"), ("predicted_range", "range ms"),
              ("bound", "bound"),
              ("predicted_fraction", "fwd+bwd of roofline"), ("slowest_kernel", "slowest kernel")]
STEP_COLUMNS = [("backend", "backend"), ("arch", "arch"), ("predicted_ms", "Triton ops predicted ms"),
                ("predicted_range", "range ms"), ("bound", "bound (most time)"), ("roofline_ms", "their roofline ms"),
                ("predicted_fraction", "of roofline"), ("fused_min_ms", "fused minimum ms"),
                ("of_fused_min", "of fused minimum"),
                ("eager_roofline_ms", "eager ops (not modelled): roofline ms"), ("host_ms", "host ms / step"),
                ("host_bound", "host-bound?"), ("run_graph_s", "run s, --cuda-graph"),
                ("run_graph_range", "range s"), ("run_eager_s", "run s, no graph")]
# published, measured records (A100) the whole-run predictions stand beside
PUBLISHED_RUNS = [("airbench94_muon (KellerJordan/cifar10-airbench)", 2.59, "A100"),
                  ("record (hiverge/cifar10-speedrun, Oct 2025)", 1.98, "A100")]


def run_times(steps: list[dict], batch: int, recipe: str | None) -> None:
    """Whole-run predictions per step row: steps x (predicted Triton ops + the eager ops at their
    roofline) + evaluation (the test set's forward passes, 2 with flip TTA, at a third of a training
    step each); with --cuda-graph the host time is hidden, without it a step costs the larger of host
    and device time. Adds steps_per_run, run_graph_s (with its range) and run_eager_s."""
    from model.recipes import get_recipe
    from .perfmodel import with_range
    r = get_recipe(recipe or "airbench94_muon")
    n = math.ceil(50000 * r.epochs / batch)
    evals = math.ceil(10000 / batch) * 2
    for s in steps:
        if s.get("note") or s.get("predicted_ms") is None:
            continue
        device = s["predicted_ms"] + s["eager_roofline_ms"]
        s["steps_per_run"] = n
        s["run_graph_s"] = (n * device + evals * device / 3) / 1e3
        lo, hi = with_range(s["run_graph_s"])
        s["run_graph_range"] = f"{lo:.2f}-{hi:.2f}"
        if s.get("host_ms") is not None:
            s["run_eager_s"] = (n * max(device, s["host_ms"]) + evals * max(device / 3, s["host_ms"] / 3)) / 1e3


def _fmt_list(v):
    if isinstance(v, list):
        return " ".join(map(str, v)) or "-"
    if isinstance(v, dict):
        return " ".join(f"{k}:{n}" for k, n in v.items()) or "-"
    return v


NOT_RUNNABLE = "n/a: needs sm_89+"


def _step_display(steps: list[dict]) -> list[dict]:
    """Step rows as the tables show them: a backend that cannot run on an arch says so; a prediction
    carries its range."""
    from .perfmodel import with_range
    out = []
    for r in steps:
        if r.get("note"):
            out.append(dict(r, predicted_ms=NOT_RUNNABLE))
        elif r.get("predicted_ms") is not None:
            lo, hi = with_range(r["predicted_ms"])
            out.append(dict(r, predicted_range=f"{lo:.3f}-{hi:.3f}"))
        else:
            out.append(r)
    return out


def _table(rows, columns):
    from .report_io import markdown_table
    return markdown_table([{k: _fmt_list(v) for k, v in r.items()} for r in rows], columns)


def losses(ops: list[dict], rows: list[dict], batch: int, arch: str, backend: str = "triton_all",
           activation: str = "gelu", top: int = 3, recipe=None) -> list[dict]:
    """The kernels (and glue) with the largest predicted loss per training step: predicted minus
    the kernel's own roofline, summed over the layers that launch it."""
    import kernels
    from .shapes import network_ops
    names = kernels.resolve_names(backend)
    count: dict = {}
    for case in network_ops(batch, activation=activation, recipe=recipe):
        k = (names[case.op], _case_key_str(case))
        count[k] = count.get(k, 0) + 1
    loss: dict[str, float] = {}
    for r in rows:
        if not r["default"] or r["arch"] != arch or r["phase"] not in TRAIN_PHASES:
            continue
        n = count.get((r["impl"], r["case_key"]), 0)
        if n:
            loss[r["kernel"]] = loss.get(r["kernel"], 0.0) + n * (r["predicted_ms"] - r["roofline_ms"])
    return [dict(kernel=k, loss_ms=v) for k, v in sorted(loss.items(), key=lambda kv: -kv[1])[:top]]


def render(meta: dict, rows: list[dict], ops: list[dict], steps: list[dict], findings: list[dict],
           measured: dict | None, host: list[dict] | None, glue: list[dict]) -> str:
    from .perfmodel import RANGE, constants

    def ranged(r):
        lo, hi = r.get("predicted_range_ms") or (None, None)
        return dict(r, predicted_range=f"{lo:.4f}-{hi:.4f}") if lo is not None else r
    rows = [ranged(r) for r in rows]
    d = [r for r in rows if r["default"]]
    parts = [f"# {meta['header']}", "",
             "**Predictions of a static model, not measurements**: no GPU ran any of this. The model "
             "(profiling/perfmodel.py) gives each launch a fixed cost plus the largest of the memory, latency, "
             "L2, issue, tensor-core and shared-memory bounds, with constants fitted to published GPU "
             "measurements of public Triton kernels (`python -m profiling calibrate`); a range is the "
             "prediction times the held-out part's 10th-90th percentile of measured / predicted. Its "
             "constants: " + ", ".join(f"{k} = {v}" for k, v in dict(constants(), RANGE=RANGE).items()) + ".", "",
             "## Per training step (forward + backward of every layer)", "",
             _table(_step_display(steps), STEP_COLUMNS), "",
             "The Triton column covers the ops each backend runs in Triton; the ops it leaves to cuDNN / "
             "ATen are shown by their roofline only (not modelled). Host time: the CPU time of one step's "
             "Python, dispatch and launch preparation with launches recorded (see `host` in static.json). "
             "Run time: steps x (Triton ops + eager ops at their roofline) + evaluation; with --cuda-graph "
             "the host is hidden, without it a step costs the larger of host and device time. Published, "
             "measured: " + "; ".join(f"{n} {t} s on an {g}" for n, t, g in PUBLISHED_RUNS) + ".", ""]
    if host:
        parts += ["### Host time per step", "", _table(host, [("backend", "backend"), ("host_ms", "host ms"),
                                                          ("python_ms", "Python + dispatch ms"),
                                                          ("launches", "kernel launches"),
                                                          ("launch_ms", "launch cost ms (assumed)"),
                                                          ("note", "how")]), ""]
    for arch in meta["archs"]:
        ls = losses(ops, rows, meta["batch"], arch, recipe=meta.get("recipe"))
        if ls:
            parts += [f"Largest predicted losses per step on {arch} (`--backend triton_all`, predicted minus "
                      "roofline, summed over layers): " + ", ".join(f"{x['kernel']} {x['loss_ms']:.3f} ms" for x in ls), ""]
    parts += ["## Per op (default configurations, training forward + backward)", "", _table(ops, OP_COLUMNS), "",
              "## Per kernel launch (default configurations)", "", _table(d, KERNEL_COLUMNS), ""]
    if measured:
        parts += [f"## Measured vs predicted ({measured['device']}, report {measured['report']})", ""]
        if measured["kernels"]:
            parts += [_table(measured["kernels"], [("kernel", "kernel"), ("measured_ms", "measured ms / step"),
                                                   ("predicted_ms", "predicted ms / step"), ("ratio", "measured / predicted")]), ""]
        if measured["ops"]:
            parts += [_table(measured["ops"], [("op", "op"), ("case", "shape"), ("impl", "impl"),
                                               ("measured_ms", "measured fwd+bwd ms"), ("predicted_ms", "predicted ms"),
                                               ("ratio", "measured / predicted")]), ""]
    else:
        parts += ["## Measured vs predicted", "", "No GPU report with a profiler trace exists in reports/ yet: the "
                  "first GPU session's `profiling report` calibrates the model.", ""]
    gl = [g for g in glue if g["default"] and g["phase"] in TRAIN_PHASES and g["bytes"] > 1e6]
    if gl:
        parts += ["## Eager glue around the kernels (ops over 1 MB)", "",
                  _table(gl, [("op", "op"), ("impl", "impl"), ("case", "shape"), ("phase", "phase"), ("arch", "arch"),
                              ("aten", "ATen op"), ("bytes", "bytes"), ("predicted_ms", "predicted ms")]), ""]
    parts += ["## Findings (rules, profiling/rules.py)", "",
              _table(findings, [("rule", "rule"), ("kernel", "kernel"), ("impl", "impl"), ("arch", "arch"),
                                ("case", "used at"), ("value", "value"), ("limit", "limit"), ("status", "status")])
              if findings else "No rule is violated.", ""]
    other = [r for r in rows if not r["default"]]
    if other:
        parts += ["## Every configuration", "", _table(other, CONFIG_COLUMNS), ""]
    return "\n".join(parts)


def plot(ops: list[dict], path: str, title: str) -> str | None:
    """Predicted vs roofline per op (fwd+bwd), one panel per architecture, stacked (each panel as
    wide as the page, as tall as its rows need, labels never clipped)."""
    from .plots import _plt
    plt = _plt()
    if plt is None or not ops:
        return None
    archs = sorted({o["arch"] for o in ops})
    per_arch = {a: [o for o in ops if o["arch"] == a and o.get("predicted_ms")] for a in archs}
    heights = [max(2.0, 0.26 * len(rs) + 1.2) for rs in per_arch.values()]
    fig, axes = plt.subplots(len(archs), 1, figsize=(11, sum(heights)), squeeze=False,
                             gridspec_kw=dict(height_ratios=heights))
    for ax, (arch, rs) in zip(axes[:, 0], per_arch.items()):
        labels = [f"{o['op']}/{o['impl']} {o['case']}" for o in rs]
        ys = list(range(len(rs)))[::-1]  # first row on top, as in static.md
        ax.scatter([o["predicted_ms"] for o in rs], ys, marker="o", label="predicted (static model)")
        ax.scatter([o["roofline_ms"] for o in rs], ys, marker="|", s=200, c="k", label="roofline minimum")
        for y, o in zip(ys, rs):
            ax.plot([o["roofline_ms"], o["predicted_ms"]], [y, y], c="0.7", zorder=0)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_ylim(-0.7, len(rs) - 0.3)
        ax.set_xscale("log")
        ax.grid(True, axis="x", which="both", alpha=0.3)
        ax.set_xlabel("ms per op (forward + backward), log scale")
        ax.set_title(f"{title} - {arch} (predictions, no GPU)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: never over a point
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def run_static(batch: int, ops: list[str], archs: list[str], all_configs: bool, out: str | None,
               dtype: str = "fp16", host: bool = True, reports_dir: str = "reports",
               activation: str = "gelu", recipe: str | None = None, lean_json: bool = False) -> dict:
    import triton

    import kernels  # noqa: F401
    from . import rules as rule_mod
    from .report_io import write_json
    from .shapes import network_ops, unique_ops
    from .devices import PEAKS
    cases = [c for op in ops for c in unique_ops(batch, op, producers=True, activation=activation, recipe=recipe)]
    esize = {"fp16": 2, "bf16": 2, "fp32": 4}[dtype]
    rows, glue, op_rows, cache = [], [], [], {}
    for arch in archs:  # the launchers size their grids from the SM count: record per modelled GPU
        sms = PEAKS[ARCHS[arch][1]].sms
        records = collect(batch, ops, all_configs, dtype, cases=cases, sms=sms)
        for _ in range(3):  # as a GPU learns each kernel's residency after its first launch
            if not learn_residency(records, arch, sms, cache):
                break
            records = collect(batch, ops, all_configs, dtype, cases=cases, sms=sms)
        arch_rows = build_rows(records, [arch], cache)
        arch_glue = glue_rows(records, [arch])
        rows += arch_rows
        glue += arch_glue
        op_rows += op_table(records, arch_rows, arch_glue, [arch], esize)
    rows.sort(key=lambda r: (not r["default"], r["op"], r["impl"], r["case"], r["phase"], r["launch_index"], r["arch"],
                             r["variant"]))
    steps = step_table(op_rows, batch, archs, esize, activation, recipe) if set(ops) == {"bn_act", "maxpool", "conv"} else []
    host_rows = None
    if host and steps:
        from .hosttime import host_times
        host_rows = host_times(batch, recipe)
        by_backend = {h["backend"]: h for h in host_rows}
        for s in steps:
            h = by_backend.get(s["backend"])
            if h and h.get("host_ms") is not None and not s.get("note"):
                s["host_ms"] = h["host_ms"]
                device = (s.get("predicted_ms") or 0) + s["eager_roofline_ms"]
                if h["host_ms"] <= device:
                    s["host_bound"] = "no"
                else:  # with eager ops only their roofline is known: the real device time is longer
                    s["host_bound"] = "yes" if not s["eager_ops"] else "possibly (host > predicted + eager roofline)"
    if steps:
        run_times(steps, batch, recipe)
    findings = rule_mod.check(rows) + rule_mod.check_ops(op_rows)
    measured = measured_vs_predicted(rows, op_rows, batch, reports_dir) if recipe in (None, "airbench94_muon") else None
    header = (f"Static performance model of the Triton kernels ({dtype}, batch {batch}"
              + (f", recipe {recipe}" if recipe else "") + f"), triton {triton.__version__}, "
              f"{datetime.date.today().isoformat()}; compiled on a CPU for {', '.join(archs)}")
    meta = dict(header=header, triton=triton.__version__, batch=batch, dtype=dtype, archs=archs,
                date=datetime.date.today().isoformat(), network_ops=len(network_ops(batch, recipe=recipe)),
                recipe=recipe)
    text = render(meta, rows, op_rows, steps, findings, measured, host_rows, glue)
    _print_summary(meta, steps, op_rows, findings, out)
    result = dict(meta=meta, rows=rows, ops=op_rows, steps=steps, host=host_rows,
                  glue=[g for g in glue if g["default"]], rules=rule_mod.describe(), findings=findings,
                  measured=measured)
    if out:
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, "static.json"), _compact(result, lean=lean_json))
        with open(os.path.join(out, "static.md"), "w") as f:
            f.write(text)
        if plot(op_rows, os.path.join(out, "static.png"), f"batch {batch}") is None:
            print("# no chart: matplotlib is not installed (pip install -e .[plots])")
        print(f"# wrote {out}/static.json, static.md" + (", static.png" if os.path.exists(os.path.join(out, "static.png")) else ""))
    return result


_SLIM = ("notes", "bounds_ms", "loop_instrs", "async_widths", "plain_load_widths", "tc", "grid", "layer",
         "launch_index", "l2_bytes", "mma_flops", "case_key")


def _compact(obj, lean: bool = False):
    """The JSON as written: floats to 4 significant digits; rows of non-default configurations
    without their detail fields (static.md lists them in full), or (``lean``: the committed
    report) without those rows at all."""
    def walk(v):
        if isinstance(v, float):
            return float(f"{v:.4g}")
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v
    out = dict(obj)
    out["rows"] = [r if r["default"] else {k: v for k, v in r.items() if k not in _SLIM} for r in obj["rows"]
                   if r["default"] or not lean]
    if lean:
        out["meta"] = dict(out["meta"], rows_omitted=sum(1 for r in obj["rows"] if not r["default"]),
                           rows_note="non-default configurations: see static.md, or run profiling static")
    return walk(out)


def _print_summary(meta, steps, ops, findings, out: str | None) -> None:
    """What the terminal shows: the per-step predictions and the rules; the per-op and per-kernel
    tables (about 80 lines) are in static.md."""
    print(meta["header"])
    print("PREDICTIONS of a static model (no GPU ran this):")
    if steps:
        print(_table(_step_display(steps), STEP_COLUMNS))
    bad = [f for f in findings if f["status"] == "violated"]
    print(f"\nrules: {len(bad)} violated" + ("" if not bad else ": " + "; ".join(
        f"{f['rule']} {f['kernel']} {f['arch']} ({f['value']} {'<' if f.get('kind') == 'min' else '>'} {f['limit']})"
        for f in bad[:8])))
    if out:
        print(f"per op ({len(ops)} rows), per kernel and per configuration: {os.path.join(out, 'static.md')}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=None,
                   help="batch size of the real shapes (default: the recipe's, 2000 for airbench94_muon)")
    p.add_argument("--recipe", default=None,
                   help="model the network of this recipe (model/recipes.py; default: airbench94_muon)")
    p.add_argument("--ops", default="bn_act,maxpool,conv",
                   help="comma-separated ops to compile (default: bn_act,maxpool,conv, all of them)")
    p.add_argument("--archs", default="sm_80,sm_90",
                   help="comma-separated targets: sm_80 (A100), sm_90 (H100/H200) (default: both)")
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"),
                   help="activation dtype the kernels are compiled for (default: fp16, as trained on a GPU)")
    p.add_argument("--default-only", action="store_true", help="only the configuration each launcher picks")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when a rule of profiling/rules.py is violated (CI; known findings of an older "
                        "Triton are listed, not failed)")
    p.add_argument("--no-host", action="store_true", help="skip the host-time measurement")
    p.add_argument("--out", default=None,
                   help="output directory (default: runs/static, an ignored folder; see --commit)")
    p.add_argument("--commit", action="store_true",
                   help="write the committed report reports/static instead (a deliberate act)")


def _check_args(args) -> None:
    import kernels
    known = set(kernels.ops())
    bad = [o for o in args.ops.split(",") if o and o not in known]
    if bad:
        raise usage_error(f"unknown op(s) {', '.join(bad)} for --ops{did_you_mean(bad[0], known)}; "
                          f"known: {', '.join(sorted(known))}")
    archs = [a for a in args.archs.split(",") if a]
    bad = [a for a in archs if a not in ARCHS]
    if bad or not archs:
        raise usage_error(f"unknown arch(s) {', '.join(bad) or '(none)'} for --archs"
                          f"{did_you_mean(bad[0], ARCHS) if bad else ''}; known: {', '.join(ARCHS)}")
    if args.recipe is not None:
        from model.recipes import RECIPES
        if args.recipe not in RECIPES:
            raise usage_error(f"unknown recipe {args.recipe!r} for --recipe{did_you_mean(args.recipe, RECIPES)}; "
                              f"known: {', '.join(RECIPES)}")
    if args.batch is None:
        from model.recipes import get_recipe
        args.batch = get_recipe(args.recipe or "airbench94_muon").batch_size
    if args.batch < 1:
        raise usage_error(f"--batch must be at least 1, got {args.batch}")


def main(args) -> int:
    if os.environ.get("TRITON_INTERPRET") == "1" or ("kernels" in sys.modules and
                                                     os.environ.get("TRITON_INTERPRET", "") != "0"):
        # Triton picked the interpreter for already-decorated kernels: compile in a fresh process.
        env = dict(os.environ, TRITON_INTERPRET="0")
        argv = [sys.executable, "-m", "profiling", "static", "--ops", args.ops] \
            + (["--batch", str(args.batch)] if args.batch else []) + (["--recipe", args.recipe] if args.recipe else []) + [
                "--archs", args.archs, "--dtype", args.dtype] + (["--out", args.out] if args.out else []) \
            + (["--default-only"] if args.default_only else []) + (["--no-host"] if args.no_host else []) \
            + (["--commit"] if args.commit else []) + (["--check"] if args.check else [])
        return subprocess.run(argv, env=env).returncode
    import torch  # noqa: F401
    _check_args(args)
    out = args.out or ("reports/static" if args.commit else os.path.join("runs", "static"))
    result = run_static(args.batch, [o for o in args.ops.split(",") if o], args.archs.split(","), not args.default_only,
                        out, args.dtype, host=not args.no_host,
                        recipe=None if args.recipe == "airbench94_muon" else args.recipe, lean_json=args.commit)
    return check_findings(result) if args.check else 0


def check_findings(result: dict) -> int:
    """``--check``: 1 when a rule is violated (other than a known finding of an older Triton,
    profiling/rules.py KNOWN, which is listed with its reason), else 0."""
    from .rules import known
    bad, excused = [], []
    for f in result["findings"]:
        why = known(f, result["meta"]["triton"])
        (excused if why else bad).append((f, why))
    seen: dict = {}
    for f, why in excused:
        seen.setdefault((f["rule"], f["kernel"], f["impl"], f["arch"], why), []).append(f["case"])
    for (rule, kernel, impl, arch, why), cases in seen.items():
        print(f"# known under triton {result['meta']['triton']}: {rule} {kernel} ({impl}, {arch}; {len(cases)} "
              f"launches): {why}")
    if bad:
        print(f"error: {len(bad)} rule(s) violated: " + "; ".join(
            f"{f['rule']} {f['kernel']} {f['impl']} {f['arch']} {f['case']} ({f['value']} vs {f['limit']})"
            for f, _ in bad[:10]))
        return 1
    return 0
