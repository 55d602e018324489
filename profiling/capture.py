"""Recording Triton launches instead of running them (profiling static, predict, hosttime).

``record_launches(out)`` makes every ``kernels._triton`` launch append a ``Launch`` (the kernel,
its specialised signature and constexprs as Triton's JIT would see them, the grid, warps and
stages, and each argument's value or tensor facts) to ``out`` and run nothing. ``recording_phase`` tags
the launches with the training phase they belong to."""
from __future__ import annotations

import contextlib
import inspect
import json
from dataclasses import dataclass, field

from .kernel_work import TensorInfo

TRAIN_PHASES = ("fwd", "bwd")
_PHASE = ["fwd"]  # the phase the launches being recorded belong to (set by recording_phase)


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


def config_str(ln: Launch) -> str:
    """A launch's configuration in one line: its block sizes first, then its other upper-case constexprs."""
    ce = {k: v for k, v in ln.cx.items() if k.isupper() or k.startswith("BLOCK")}
    return ",".join(f"{k}={int(v) if isinstance(v, bool) else v}"
                    for k, v in sorted(ce.items(), key=lambda kv: not kv[0].startswith("BLOCK")))


def _dtype_name(dt) -> str:
    import torch
    names = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64",
             torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8",
             torch.bool: "i1"}
    for attr, name in (("float8_e4m3fn", "fp8e4nv"), ("float8_e5m2", "fp8e5")):
        if hasattr(torch, attr):
            names[getattr(torch, attr)] = name
    return names[dt]


def specialize(fn, args, kwargs) -> tuple[dict, dict, dict]:
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


def arg_values(fn, args, kwargs) -> dict:
    import torch

    out = {}
    for name, v in list(zip(fn.arg_names, args)) + [(k, v) for k, v in kwargs.items() if k in fn.arg_names]:
        if isinstance(v, torch.Tensor):
            out[name] = TensorInfo(tuple(v.shape), tuple(v.stride()), _dtype_name(v.dtype), v.element_size())
        else:
            out[name] = v
    return out


@contextlib.contextmanager
def record_launches(out: list, light: bool = False, sms: int | None = None):
    """Within the block every kernel launch of the lab (``kernels._triton.launch``) records a Launch
    in ``out`` instead of running (``light``: only the kernel's name and phase, as cheaply as
    possible, for timing the host code around it). ``sms``: the SM count of the GPU modelled, for
    which the launchers size their grids (None: an H100's)."""
    from kernels._triton import recording

    def hook(kernel, grid, args, kwargs):
        if light:
            out.append((kernel_name(kernel), _PHASE[0]))
            return
        out.append(make_launch(kernel, grid, args, kwargs))

    with recording(hook, sms):
        yield out


def kernel_name(kernel) -> str:
    return getattr(kernel, "__name__", None) or kernel.fn.__name__


def make_launch(kernel, grid, args, kwargs) -> Launch:
    """The Launch of ``kernel[grid](*args, **kwargs)``, in the phase being recorded."""
    name = kernel_name(kernel)
    sig, ce, attrs = specialize(kernel, args, kwargs)
    warps, stages = kwargs.get("num_warps", 4), kwargs.get("num_stages", 3)
    key = json.dumps([name, sig, sorted((str(k), str(v)) for k, v in ce.items()),
                      sorted(str(k) for k in attrs), warps, stages])
    g = grid(dict(kwargs)) if callable(grid) else grid
    g = tuple(int(v) for v in (g if isinstance(g, (tuple, list)) else (g,)))
    return Launch(name, kernel, sig, ce, attrs, warps, stages, key, arg_values(kernel, args, kwargs), g, _PHASE[0],
                  dict(kwargs))


def current_phase() -> str:
    return _PHASE[0]


@contextlib.contextmanager
def recording_phase(name: str):
    old, _PHASE[0] = _PHASE[0], name
    try:
        yield
    finally:
        _PHASE[0] = old


def launch_to_json(ln: Launch) -> dict:
    """A recorded launch as plain JSON (``launch_from_json`` rebuilds it): what a GPU run of
    ``profiling launches`` writes, so that a CPU can compile and model the very launch it timed."""
    def value(v):
        if isinstance(v, TensorInfo):
            return {"tensor": [list(v.shape), list(v.stride), v.dtype, v.esize]}
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        return {"repr": repr(v)}
    return dict(kernel=ln.kernel, signature=ln.signature,
                constexprs=[[list(k), value(v)] for k, v in ln.constexprs.items()],
                attrs=[[list(k), v] for k, v in ln.attrs.items()], num_warps=ln.num_warps,
                num_stages=ln.num_stages, key=ln.key, args={k: value(v) for k, v in ln.args.items()},
                grid=list(ln.grid), phase=ln.phase, meta={k: value(v) for k, v in ln.meta.items()})


def find_kernel(name: str):
    """The @triton.jit kernel of the lab called ``name`` (kernels/*.py), or a clear error."""
    import importlib
    import pkgutil

    import kernels
    for mod in pkgutil.iter_modules(kernels.__path__):
        m = importlib.import_module(f"kernels.{mod.name}")
        obj = getattr(m, name, None)
        if obj is not None and hasattr(obj, "arg_names"):
            return obj
    raise KeyError(f"no Triton kernel named {name!r} in kernels/ (a launch recorded by another version of the lab?)")


def launch_from_json(d: dict) -> Launch:
    """The Launch ``launch_to_json`` wrote; its kernel looked up by name in this checkout."""
    def value(v):
        if isinstance(v, dict) and "tensor" in v:
            shape, stride, dtype, esize = v["tensor"]
            return TensorInfo(tuple(shape), tuple(stride), dtype, esize)
        if isinstance(v, dict) and "repr" in v:
            raise ValueError(f"launch of {d['kernel']}: an argument recorded only as {v['repr']} cannot be rebuilt")
        return v
    fn = find_kernel(d["kernel"])
    signature = dict(d["signature"])
    constexprs = {tuple(k): value(v) for k, v in d["constexprs"]}
    names = list(fn.arg_names)
    if list(signature) != names[:len(signature)]:
        raise ValueError(f"launch of {d['kernel']}: recorded with arguments {', '.join(signature)}, which this "
                         f"checkout's kernel ({', '.join(names)}) does not start with: another version of the lab")
    # a kernel that gained trailing arguments with defaults since (a constexpr switch): their defaults
    params = list(inspect.signature(getattr(fn, "fn", fn)).parameters.values())  # jit or interpreted
    for i, p in enumerate(params[len(signature):], start=len(signature)):
        if p.default is inspect.Parameter.empty:
            raise ValueError(f"launch of {d['kernel']}: argument {p.name} is new in this checkout and has no default")
        signature[p.name] = "constexpr"
        constexprs[(i,)] = p.default
    return Launch(d["kernel"], fn, signature, constexprs, {tuple(k): v for k, v in d["attrs"]}, d["num_warps"],
                  d["num_stages"], d.get("key", ""), {k: value(v) for k, v in d["args"].items()}, tuple(d["grid"]),
                  d.get("phase", "fwd"), {k: value(v) for k, v in d.get("meta", {}).items()})
