"""Compiling a recorded launch for sm_80 / sm_90 here, on a CPU, and reading its SASS
(profiling.sass): registers, spills, shared memory, occupancy, the main loop's facts."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile

from .capture import Launch
from .devices import PEAKS
from .perfmodel import resident_programs
from .sass import analyse_sass, wait_depth

ARCHS = {"sm_80": (80, "A100-SXM4-80GB"), "sm_90": (90, "H100-SXM")}
TC_PATTERNS = {"HMMA": r"\bHMMA\b", "HGMMA": r"\bHGMMA\b", "QGMMA": r"\bQGMMA\b", "IMMA": r"\bIMMA\b"}


def _tool(name: str) -> str:
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} not found in the triton wheel ({path})")
    return path


def occupancy(regs: int, shared: int, num_warps: int, arch: str) -> float:
    """Fraction of the SM's warp slots that the limits allow."""
    peak = PEAKS[ARCHS[arch][1]]
    return resident_programs(regs, shared, num_warps, peak) * num_warps * 32 / peak.max_threads_per_sm


def require_compiled_mode() -> None:
    """Compiling for a GPU needs Triton imported in compiled mode. Where it was imported with
    TRITON_INTERPRET=1 (kernels sets it on a machine without a GPU, as do the tests), triton.language's
    own @jit helpers (tl.sum, tl.cdiv, x.sum()) are the interpreter's, and every interpreted kernel run
    leaves parts of triton.language patched for the interpreter: the compiler then fails inside the
    kernel, or not, depending on what Triton's cache already holds (a warm cache hid it from CI). A
    clear error instead, whatever the cache."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
        import triton.language.standard as std
    except ImportError:  # pragma: no cover
        return
    if isinstance(getattr(std, "sum", None), InterpretedFunction):
        raise RuntimeError(
            "profiling: compiling a Triton kernel for sm_80 / sm_90 needs Triton in compiled mode, but this process "
            "imported it with TRITON_INTERPRET=1 (kernels turns the interpreter on when no GPU is present). Use "
            "`python -m profiling predict` / `static` / `calibrate` (they set TRITON_INTERPRET=0), or set "
            "TRITON_INTERPRET=0 before anything imports triton or kernels.")


def compile_sass(fn, signature, constexprs, attrs, num_warps, num_stages, arch) -> tuple[object, str, str]:
    """(compiled kernel, resource usage text, SASS text) for ``arch``, compiled on this machine."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    require_compiled_mode()
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
