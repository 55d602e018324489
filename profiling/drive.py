"""Driving every op behind the registry forward and backward at the network's real shapes on CPU
tensors, with its launches recorded (profiling.capture) and its eager glue counted
(profiling.glue): the ``OpRecord`` list that ``profiling static`` models."""
from __future__ import annotations

from dataclasses import dataclass, field

import kernels
import kernels._triton as kt
from kernels import fp8

from .capture import record_launches, recording_phase
from .glue import record_aten
from .shapes import unique_ops

# op -> (module, list of config-list attribute names)
CONFIG_LISTS = {"bn_act": ("kernels.bn_act", ("APPLY_CONFIGS", "REDUCE_CONFIGS")),
                "maxpool": ("kernels.maxpool", ("CONFIGS",)),
                "conv": ("kernels.conv", ("FWD_CONFIGS", "WGRAD_CONFIGS"))}


def _drive(case, impl: str, dtype, glue: list) -> None:
    """Run one op through the registry, forward and backward, as the network calls it (and bn_act
    in eval mode), at the case's shapes on CPU tensors; ATen glue goes to ``glue`` with its phase."""
    import torch

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
        with recording_phase(phase), record_aten() as rec:
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
    return [i for i in kernels.impls(op) if i not in ("eager", "compile")]


def collect(batch: int, ops: list[str], all_configs: bool = True, dtype_name: str = "fp16",
            cases: list | None = None, sms: int | None = None) -> list[OpRecord]:
    """Record the launches and glue of the Triton implementations of ``ops`` at the real shapes,
    for the default configuration and (``all_configs``) each entry of each configuration list.
    ``sms``: the SM count of the modelled GPU, from which the launchers size their grids."""
    import importlib

    import torch

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
