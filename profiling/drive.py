"""Driving every op behind the registry forward and backward at the network's real shapes on CPU
tensors, with its launches recorded (profiling.capture) and its eager glue counted
(profiling.glue): the ``OpRecord`` list that ``profiling static`` models."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import kernels
from kernels import fp8
from kernels.spec import spec

from .capture import record_launches, recording_phase
from .glue import record_aten
from .shapes import unique_ops


def _drive(case, impl: str, dtype, glue: list | None, device="cpu", fill: str = "empty") -> None:
    """Run one op through the registry, forward and backward, as the network calls it (and in eval
    mode, for an op that has one), at the case's shapes (the op's spec's ``sample_call``: on CPU
    tensors, unfilled, for a recording; on a GPU with ``fill="randn"`` to run it); ATen glue goes to
    ``glue`` with its phase (None: not recorded, the op computes)."""
    import torch

    fn = kernels.get(case.op, impl)
    s = case.spec
    call = s.sample_call(case, device, dtype, grad=True, fill=fill)
    # fp8 implementations as in a network step past the first, with a network's state (every delayed
    # scale ready): an input a conv=fp8 produced asks for a gradient copy, and the op's own fp8 state
    # is ready (its spec says which)
    state = fp8.Fp8State() if fp8.takes_state(fn) else None
    kw = {} if state is None else dict(fp8_state=state)
    if state is not None and case.params.get("from_conv_cin", 0) >= 32:
        st = fp8.DelayedScale(call.x.device)
        st.ready = True
        state.want_grad(call.x, st)
    if state is not None:
        s.fp8_ready(call, case, "fwd", state)

    def run(phase, f):
        if glue is None:
            with recording_phase(phase):
                f()
            return
        with recording_phase(phase), record_aten() as rec:
            f()
        glue.extend((phase, op) for op in rec.ops)

    out = {}
    run("fwd", lambda: out.setdefault("y", fn(*call.args, **kw)))
    if out["y"].requires_grad:
        if state is not None:
            s.fp8_ready(call, case, "bwd", state)
        run("bwd", lambda: out["y"].backward(call.dy))
    if call.eval_args is not None:
        with torch.no_grad():
            run("eval", lambda: fn(*call.eval_args))


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
    return [i for i in kernels.impls(op) if i not in ("eager", "compile") and not kernels.composite(op, i)]


def collect(batch: int, ops: list[str], all_configs: bool = True, dtype_name: str = "fp16",
            cases: list | None = None, sms: int | None = None) -> list[OpRecord]:
    """Record the launches and glue of the Triton implementations of ``ops`` at the real shapes,
    for the default configuration and (``all_configs``) each entry of each of the op's spec's
    configuration lists, pinned in turn, and of each of its spec's ``variants``. ``sms``: the SM
    count of the modelled GPU, from which the launchers size their grids."""
    import torch

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    records = []
    for op in ops:
        s = spec(op)
        for impl in triton_impls(op):
            for case in (c for c in (cases or unique_ops(batch, op)) if c.op == op):
                variants = [("default", contextlib.nullcontext)]
                if all_configs:
                    variants += [(f"{cl.name}[{j}]", lambda cl=cl, cfg=cfg: cl.pinned(cfg))
                                 for cl in s.config_lists for j, cfg in enumerate(cl)]
                    variants += list(s.variants_for(impl, case).items())
                for label, form in variants:
                    rec = OpRecord(op, impl, case, label)
                    # the launchers remember their choice per shape: the default asks afresh, and a
                    # pinned list forgets it before and after (ConfigList.pinned)
                    s.forget_choices()
                    with form(), record_launches(rec.launches, sms=sms):
                        _drive(case, impl, dtype, rec.glue)
                    s.forget_choices()
                    records.append(rec)
    return records
