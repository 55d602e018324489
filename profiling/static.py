"""``python -m profiling static``: what a GPU would run, found without a GPU.

Every Triton kernel behind the op registry is compiled for sm_80 (A100) and sm_90 (H100) on
this machine, with exactly the arguments the launchers pass at the network's real shapes: the
launchers run on CPU tensors while each kernel launch is recorded instead of executed, and the
record is compiled the way the JIT would (ints equal to 1 become constants, pointers and ints
divisible by 16 are marked so, as Triton's runtime specialisation does). Each launcher runs
once with its default block configuration and once per entry of each configuration list
(``kernels/<op>.py``: ``*_CONFIGS``), so every configuration is compiled at every real shape.

For each compiled kernel: registers per thread, stack (spill) and local bytes, static shared
memory, tensor-core instructions in the SASS (HMMA on sm_80, HGMMA on sm_90, QGMMA for fp8,
IMMA), 128-bit global loads and stores, and the occupancy the register / shared-memory /
thread limits allow. The tools are the ones that ship in the triton wheel
(triton/backends/nvidia/bin: cuobjdump, nvdisasm).

Runs in a child process with TRITON_INTERPRET=0 when the current one has the interpreter on
(Triton fixes interpreter or compiler per kernel when it is decorated).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

ARCHS = {"sm_80": (80, "A100-SXM4-80GB"), "sm_90": (90, "H100-SXM")}
TC_PATTERNS = {"HMMA": r"\bHMMA\b", "HGMMA": r"\bHGMMA\b", "QGMMA": r"\bQGMMA\b", "IMMA": r"\bIMMA\b"}
# op -> (module, list of config-list attribute names)
CONFIG_LISTS = {"bn_act": ("kernels.bn_act", ("APPLY_CONFIGS", "REDUCE_CONFIGS")),
                "maxpool": ("kernels.maxpool", ("CONFIGS",)),
                "conv": ("kernels.conv", ("FWD_CONFIGS", "WGRAD_CONFIGS"))}


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


@contextlib.contextmanager
def record_launches(out: list):
    """Within the block, ``kernel[grid](...)`` records a Launch instead of running."""
    from triton.runtime.jit import JITFunction
    original = JITFunction.run

    def fake_run(self, *args, grid, warmup, **kwargs):
        sig, ce, attrs = _specialize(self, args, kwargs)
        key = json.dumps([self.__name__, sig, sorted((str(k), str(v)) for k, v in ce.items()),
                          sorted(str(k) for k in attrs), kwargs.get("num_warps", 4), kwargs.get("num_stages", 3)])
        out.append(Launch(self.__name__, self, sig, ce, attrs, kwargs.get("num_warps", 4),
                          kwargs.get("num_stages", 3), key))
        return None

    JITFunction.run = fake_run
    try:
        yield out
    finally:
        JITFunction.run = original


def _drive(case, impl: str, dtype) -> None:
    """Run one op's launchers (forward and backward) on CPU tensors at the case's shapes."""
    import torch

    C = case.x_shape[1]
    x = torch.empty(case.x_shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
    if case.op == "bn_act":
        from kernels import bn_act as m
        rm, rv, b = torch.zeros(C), torch.ones(C), torch.zeros(C)
        act = case.params.get("activation", "gelu")
        for training in (True, False):
            _, mean, var = m.bn_act_fwd(x, rm, rv, None, b, training, 1e-12, act)
            if training:
                m.bn_running_update(rm, rv, mean, var, 0.4, case.numel(case.x_shape) // C)
            m.bn_act_bwd(torch.empty_like(x), x, mean, var, None, b, training, 1e-12, act)
    elif case.op == "maxpool":
        from kernels import maxpool as m
        k = case.params["k"]
        y = m.maxpool_fwd(x, k)
        m.maxpool_bwd(torch.empty_like(y), x, k)
    else:
        from kernels import conv as m
        k, pad = case.params["k"], case.params["padding"]
        w = torch.empty((case.params["cout"], C, k, k), dtype=dtype).contiguous(memory_format=torch.channels_last)
        if impl == "fp8" and C >= m.FP8_MIN_CHANNELS:
            y, x_q, s_x, w_q, s_w = m.conv2d_fp8_fwd(x, w, None, pad)
            dy_q = torch.empty(y.shape, dtype=m.FP8_BWD).contiguous(memory_format=torch.channels_last)
            args = (dy_q, w_q, x_q, s_x, s_w, torch.ones(1))
        else:
            y = m.conv2d_fwd(x, w, None, pad)
            args = (torch.empty_like(y), w, x, None, None, None)
        dy, wq, xq, s_x, s_w, s_dy = args
        if case.params.get("input_grad", True):
            m.conv2d_dgrad(dy, wq, list(x.shape), pad, s_dy, s_w, dtype)
        if case.params.get("weight_grad", True):
            m.conv2d_wgrad(dy, xq, list(w.shape), pad, s_dy, s_x, dtype)


def collect(batch: int, ops: list[str], all_configs: bool = True, dtype_name: str = "fp16") -> list[dict]:
    """Record every distinct launch of the Triton implementations of ``ops`` at real shapes."""
    import importlib

    import torch

    import kernels
    from .shapes import unique_ops
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    found: dict[str, dict] = {}
    for op in ops:
        triton_impls = [i for i in kernels.impls(op) if i not in ("eager", "compile")]
        modname, lists = CONFIG_LISTS.get(op, (None, ()))
        mod = importlib.import_module(modname) if modname else None
        for impl in triton_impls:
            for case in unique_ops(batch, op):
                variants = [("default", None, None)]
                if all_configs and mod is not None:
                    variants += [(f"{ln}[{j}]", ln, cfg) for ln in lists for j, cfg in enumerate(getattr(mod, ln))]
                for label, listname, cfg in variants:
                    launches: list[Launch] = []
                    saved = getattr(mod, listname) if listname else None
                    if listname:
                        setattr(mod, listname, [cfg])
                    # launchers cache their choice per shape (kernels/conv.py): forget it, or the
                    # forced configuration would never be asked for
                    getattr(mod, "_chosen", {}).clear()
                    try:
                        with record_launches(launches):
                            _drive(case, impl, dtype)
                    finally:
                        if listname:
                            setattr(mod, listname, saved)
                    for ln in launches:
                        entry = found.setdefault(ln.key, dict(launch=ln, op=op, impl=impl, uses=[]))
                        entry["uses"].append(f"{case.label()} ({label})")
    return list(found.values())


def _tool(name: str) -> str:
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} not found in the triton wheel ({path})")
    return path


def occupancy(regs: int, shared: int, num_warps: int, arch: str) -> float:
    """Fraction of the SM's 64 warp slots that the limits allow (registers allocated per warp
    in units of 256, shared memory, 32 blocks per SM)."""
    from .devices import PEAKS
    peak = PEAKS[ARCHS[arch][1]]
    warp_regs = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = (peak.regs_per_sm // warp_regs) // num_warps
    smem_sm = {"sm_80": 164, "sm_90": 228}[arch] * 1024
    by_smem = smem_sm // shared if shared else 32
    by_threads = peak.max_threads_per_sm // (32 * num_warps)
    blocks = max(0, min(by_regs, by_smem, by_threads, 32))
    return blocks * num_warps * 32 / peak.max_threads_per_sm


def analyse(entry: dict, arch: str) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    ln: Launch = entry["launch"]
    cap = ARCHS[arch][0]
    src = ASTSource(ln.fn, ln.signature, constexprs=ln.constexprs, attrs=ln.attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", cap, 32),
                              options=dict(num_warps=ln.num_warps, num_stages=ln.num_stages))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", path], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([_tool("nvdisasm"), "-c", path], capture_output=True, text=True).stdout
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage))
    regs, stack, local = int(fields.get("REG", 0)), int(fields.get("STACK", 0)), int(fields.get("LOCAL", 0))
    shared = max(int(fields.get("SHARED", 0)), int(getattr(compiled.metadata, "shared", 0) or 0))
    tc = {k: len(re.findall(p, sass)) for k, p in TC_PATTERNS.items()}
    ce = {ln.fn.arg_names[k[0]]: v for k, v in ln.constexprs.items()
          if ln.fn.arg_names[k[0]].isupper() or ln.fn.arg_names[k[0]].startswith("BLOCK")}
    return dict(kernel=ln.kernel, op=entry["op"], impl=entry["impl"], arch=arch, num_warps=ln.num_warps,
                num_stages=ln.num_stages, constexprs=ce, regs=regs, spill_bytes=stack + local, stack=stack,
                local=local, shared=shared, tensor_core_instrs=sum(tc.values()), tc=tc,
                ld128=len(re.findall(r"LDG\.E\.128|LDG\.E\.ENL2\.256|LDG\.E\.(?:[A-Z0-9]+\.)*128", sass)),
                st128=len(re.findall(r"STG\.E\.(?:[A-Z0-9]+\.)*128", sass)),
                occupancy=occupancy(regs, shared, ln.num_warps, arch),
                shared_limit=(163 if arch == "sm_80" else 227) * 1024, uses=entry["uses"],
                default=any("(default)" in u for u in entry["uses"]))


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
            acc += tl.dot(a, b)
        tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)

    ty = {"fp16": "*fp16", "fp8": "*fp8e4nv"}[dtype]
    names = _probe_gemm_kernel.arg_names
    div16 = [["tt.divisibility", 16]]
    launch = Launch("_probe_gemm_kernel", _probe_gemm_kernel,
                    dict(a_ptr=ty, b_ptr=ty, c_ptr="*fp32", K="i32", BM="constexpr", BN="constexpr", BK="constexpr"),
                    {(names.index("BM"),): 128, (names.index("BN"),): 128, (names.index("BK"),): 64},
                    {(0,): div16, (1,): div16, (2,): div16, (3,): div16}, 4, 3)
    return analyse(dict(launch=launch, op="probe", impl=dtype, uses=["probe (default)"]), arch)


COLUMNS = [("kernel", "kernel"), ("arch", "arch"), ("config", "config"), ("num_warps", "warps"), ("regs", "regs"),
           ("spill_bytes", "spill B"), ("shared", "smem B"), ("tensor_core_instrs", "TC instrs"),
           ("ld128", "128-bit LDG"), ("occupancy", "occupancy"), ("default", "default"), ("where", "used at")]


def run_static(batch: int, ops: list[str], archs: list[str], all_configs: bool, out: str | None,
               dtype: str = "fp16") -> list[dict]:
    import triton

    from .report_io import markdown_table, write_json
    entries = collect(batch, ops, all_configs, dtype)
    rows = []
    for e in entries:
        for arch in archs:
            if e["impl"] == "fp8" and arch == "sm_80":
                continue  # FP8 tensor cores need sm_89+; the fp8 implementation refuses older GPUs
            r = analyse(e, arch)
            r["config"] = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}"
                                   for k, v in sorted(r["constexprs"].items(), key=lambda kv: not kv[0].startswith("BLOCK")))
            r["where"] = "; ".join(sorted(set(u.split(" (")[0] for u in r["uses"])))
            rows.append(r)
    rows.sort(key=lambda r: (r["op"], r["kernel"], r["arch"], not r["default"], r["config"]))
    import datetime
    header = (f"Static analysis of the Triton kernels ({dtype}, batch {batch}), triton {triton.__version__}, "
              f"{datetime.date.today().isoformat()}; compiled on a CPU for {', '.join(archs)}.")
    table = markdown_table(rows, COLUMNS)
    print(header)
    print(table)
    if out:
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, "static.json"), dict(meta=dict(triton=triton.__version__, batch=batch,
                                                                    dtype=dtype, archs=archs), rows=rows))
        with open(os.path.join(out, "static.md"), "w") as f:
            f.write(f"# {header}\n\n{table}\n")
    return rows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=int, default=2000, help="batch size of the real shapes (default 2000)")
    p.add_argument("--ops", default="bn_act,maxpool,conv", help="comma-separated ops")
    p.add_argument("--archs", default="sm_80,sm_90", help="comma-separated: sm_80, sm_90")
    p.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    p.add_argument("--default-only", action="store_true", help="only the configuration each launcher picks")
    p.add_argument("--out", default="reports/static", help="output directory for static.json / static.md")


def main(args) -> int:
    if os.environ.get("TRITON_INTERPRET") == "1" or ("kernels" in sys.modules and
                                                     os.environ.get("TRITON_INTERPRET", "") != "0"):
        # Triton picked the interpreter for already-decorated kernels: compile in a fresh process.
        env = dict(os.environ, TRITON_INTERPRET="0")
        argv = [sys.executable, "-m", "profiling", "static", "--batch", str(args.batch), "--ops", args.ops,
                "--archs", args.archs, "--dtype", args.dtype, "--out", args.out] + (["--default-only"] if args.default_only else [])
        return subprocess.run(argv, env=env).returncode
    import torch  # noqa: F401
    run_static(args.batch, [o for o in args.ops.split(",") if o], args.archs.split(","), not args.default_only,
               args.out, args.dtype)
    return 0
