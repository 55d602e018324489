"""The network's ops at their real shapes (the cases), and the step's fused minimum.

``network_ops(batch)`` lists every op call of one forward pass of the airbench94 network
(widths 64/256/256, 32x32 inputs) with its shapes; ``recipe_ops`` traces any recipe's network.
Each call is an ``OpCase`` (kernels/spec.py), whose output shape, must-move bytes and FLOPs
(``bytes_min``, ``phase_bytes``, ``flops``: the roofline) are its op's spec's, written next to the
op's kernels (kernels/<op>.py, each spec's docstring says its traffic model). ``mode`` "fwd" is an
inference forward; "fwd+bwd" a training step, split into ``phase_bytes`` "fwd" and "bwd".
"""
from __future__ import annotations

import json
import re

import torch

import kernels
from kernels.spec import OpCase, OpSpec, spec, specs

__all__ = ["WIDTHS", "OpCase", "case_key", "dtype_size", "fusion_costs", "fusion_savings", "fused_minimum", "input_grad_shares",
           "network_ops", "recipe_ops", "step_calls", "unique_ops", "whiten_fraction"]

WIDTHS = (64, 256, 256)


def fused_minimum(cases: list[OpCase], peak, esize: int = 2, fp8: bool = False,
                  input_grad_share: dict | None = None) -> dict:
    """The step's physical limit if every op were fused where the data allows: each conv reads its
    input, weights and output gradient and writes its output, input gradient and weight gradient
    once; the max-pool, the BatchNorm statistics and the activation live in the convs' epilogues and
    prologues (a conv followed by a max-pool writes the pooled tensor and its 1-byte index instead
    of its full output); the BatchNorm backward's sums in the input-grad epilogue. Per conv and
    phase, the larger of its bytes at full HBM bandwidth and its FLOPs at the tensor-core peak.
    ``input_grad_share``: case name -> the fraction of steps in which its input-grad runs (1 when not
    named; ``input_grad_shares``). Returns bytes, FLOPs and ms per training step (forward + backward)."""
    tflops = peak.fp8_tflops if fp8 and peak.fp8_tflops else peak.fp16_tflops
    total_bytes = total_flops = seconds = 0.0
    for i, c in enumerate(cases):
        if c.op != "conv":
            continue
        nxt = cases[i + 1] if i + 1 < len(cases) else None
        x, y = c.numel(c.x_shape), c.numel(c.out_shape)
        w = c.params["cout"] * c.x_shape[1] * c.params["k"] ** 2
        if nxt is not None and nxt.op == "maxpool" and nxt.name != "final_pool":
            pooled = nxt.numel(nxt.out_shape)  # floor mode: 31x31 pools to 15x15
            out = esize * pooled + pooled  # the pooled tensor and its 1-byte window index
        else:
            out = esize * y
        share = (input_grad_share or {}).get(c.name, 1.0) if c.params.get("input_grad", True) else 0.0
        fwd_f = c.flops("fwd")
        wgrad_b = (esize * x + out + esize * w) if c.params.get("weight_grad", True) else 0
        wgrad_f = fwd_f if c.params.get("weight_grad", True) else 0.0
        phases = [(esize * (x + w) + out, fwd_f, 1.0)]  # (bytes, FLOPs, share of the steps)
        if share:  # a backward with the input-grad (one more GEMM of the forward's size)
            phases.append((out + esize * (w + x) + wgrad_b, fwd_f + wgrad_f, share))
        if share < 1:
            phases.append((wgrad_b, wgrad_f, 1.0 - share))
        for b, f, part in phases:
            total_bytes += part * b
            total_flops += part * f
            seconds += part * max(b / (peak.hbm_gbps * 1e9), f / (tflops * 1e12))
    return dict(bytes=total_bytes, flops=total_flops, ms=1e3 * seconds)


def input_grad_shares(batch: int, activation: str = "gelu", recipe=None) -> dict:
    """Case name -> the fraction of a run's steps in which that call's input-grad runs, for the calls
    ``step_calls`` splits (the op after the whitening conv); fused_minimum's ``input_grad_share``."""
    return {c.name[:-len(FROZEN)]: 1.0 - w for c, w in step_calls(batch, activation=activation, recipe=recipe)
            if c.name.endswith(FROZEN)}


# the fusions of issue 23, in the order a session would build them: name -> what moves where
FUSIONS = {
    "pool_stats_in_conv1": "forward: conv1's epilogue max-pools its tile (writing the pooled tensor and the 1-byte "
                           "index) and adds the pooled tile's BatchNorm sums: the full-size output is never written "
                           "nor read back, and the statistics pass is gone",
    "stats_in_conv2": "forward: conv2's epilogue adds its output's BatchNorm sums: the statistics pass is gone",
    "bn_act_in_prologue": "forward: the next conv applies BatchNorm + activation to its operand as it loads it (its "
                          "weight-grad recomputes it the same way): the activated tensor is never written nor read",
    "bn_bwd_sums_in_dgrad": "backward: the input-grad producing a BatchNorm's output gradient adds the backward's "
                            "two per-channel sums in its epilogue (reading x there): the reduction pass, which read "
                            "the gradient and x, is gone",
    "pool_bwd_in_bn_dx": "backward: the BatchNorm backward's dx pass scatters into the pool's input gradient through "
                         "the 1-byte index: the pooled gradient is never written nor read back",
}


# the fusions built so far, and where (the rest are predictions of what building them would save)
BUILT = {"pool_stats_in_conv1": "conv_block=triton_fused", "stats_in_conv2": "conv_block=triton_fused",
         "pool_bwd_in_bn_dx": "conv_block=triton_fused"}


def case_key(case: OpCase) -> str:
    """A case's identity in profiling static's rows (op, input shape, parameters; not its name)."""
    return json.dumps([case.op, list(case.x_shape), sorted(case.params.items())])


def fusion_savings(cases: list[OpCase], peak, esize: int = 2) -> list[dict]:
    """HBM bytes per training step each fusion of issue 23 removes (``FUSIONS``), from the network's
    op sequence (conv -> pool -> BatchNorm -> conv ...), and the time they take at the model's
    effective HBM bandwidth (peak x MEM_EFFICIENCY): a prediction of the saving before building it.
    Only traffic changes are counted: the fused kernels' extra instructions are not."""
    from .perfmodel import MEM_EFFICIENCY
    saved = dict.fromkeys(FUSIONS, 0.0)
    layers = {k: [] for k in FUSIONS}
    for i, c in enumerate(cases):
        nxt = cases[i + 1] if i + 1 < len(cases) else None
        after = cases[i + 2] if i + 2 < len(cases) else None
        if c.op == "conv" and nxt is not None and nxt.op == "maxpool" and nxt.name != "final_pool":
            y, p = c.numel(c.out_shape), nxt.numel(nxt.out_shape)  # floor mode: 31x31 pools to 15x15
            saved["pool_stats_in_conv1"] += 2 * esize * y + esize * p  # write + read of y; the stats pass
            layers["pool_stats_in_conv1"].append(c.name)
            if after is not None and after.op == "bn_act":
                saved["pool_bwd_in_bn_dx"] += 2 * esize * p
                layers["pool_bwd_in_bn_dx"].append(nxt.name)
        elif c.op == "conv" and nxt is not None and nxt.op == "bn_act":
            saved["stats_in_conv2"] += esize * c.numel(c.out_shape)
            layers["stats_in_conv2"].append(c.name)
        if c.op == "bn_act" and nxt is not None and nxt.op == "conv":
            x = c.numel(c.x_shape)
            saved["bn_act_in_prologue"] += 2 * esize * x      # the apply pass's read and write
            saved["bn_bwd_sums_in_dgrad"] += esize * x        # the gradient's read (x is read in the epilogue)
            for k in ("bn_act_in_prologue", "bn_bwd_sums_in_dgrad"):
                layers[k].append(c.name)
    bw = peak.hbm_gbps * 1e9 * MEM_EFFICIENCY
    return [dict(fusion=k, what=FUSIONS[k], layers=layers[k], mb=saved[k] / 1e6, ms=1e3 * saved[k] / bw,
                 built=BUILT.get(k)) for k in FUSIONS]


def fusion_costs(savings: list[dict], cases: list[OpCase], rows: list[dict], arch: str, peak,
                 esize: int = 2) -> list[dict]:
    """``savings`` (fusion_savings) with the predicted extra work of each fusion not built yet, from
    the compiled kernels of ``rows`` (profiling static's rows: the unfused ``triton`` kernels of
    ``arch``), so that a fusion is judged by its net time, not by its bytes alone:

    - bn_act_in_prologue: the next conv transforms its operand (scale, shift, activation, the padding
      zeroed after it) as it loads it, once per tap (implicit GEMM loads each input element KxK
      times), in its forward and again in its weight-grad. Each transform is charged the issue time
      of BatchNorm's apply pass over the tensor (its SASS instructions per element, its own loads
      and stores included: an upper estimate of the transform alone).
    - bn_bwd_sums_in_dgrad: the input-grad's epilogue does the reduce pass's work (read x, x-hat,
      the activation's derivative, two sums), charged its issue time, and reads x.

    The added time is a range. Overlapped (``extra_ms``): the model's own rule, a kernel's time is
    its fixed cost plus its largest bound (profiling/perfmodel.py), so extra work costs only the
    growth of the largest bound. Serial (``extra_serial_ms``): the extra work adds its own largest
    bound in full, as an epilogue does when one program per SM is resident and nothing overlaps it.
    Each fusion gains those two, ``net_ms`` (ms - extra_ms, the best case) and ``net_low_ms``
    (ms - extra_serial_ms), all None
    when it is built (its work is in the fused backend's prediction) or a kernel is missing from
    ``rows``, and ``by_layer`` (layer -> the same per layer)."""
    from .perfmodel import MEM_EFFICIENCY
    bw = peak.hbm_gbps * 1e9 * MEM_EFFICIENCY
    # rows hold each distinct case once (group3.conv1 is group2.conv2's): found by case_key
    index = {(r["kernel"], r["case_key"], r["phase"]): r for r in rows
             if r["arch"] == arch and r.get("default") and r["impl"] == "triton" and r["op"] in ("bn_act", "conv")}

    def grows(row: dict, **extra: float) -> tuple[float, float]:
        b = {k: v for k, v in row["bounds_ms"].items() if k != "fixed"}
        return max(v + extra.get(k, 0.0) for k, v in b.items()) - max(b.values()), max(extra.values())

    layer_costs = {"bn_act_in_prologue": {}, "bn_bwd_sums_in_dgrad": {}}
    for i, c in enumerate(cases[:-1]):
        nxt = cases[i + 1]
        if c.op != "bn_act" or nxt.op != "conv":
            continue
        x_ms = 1e3 * esize * c.numel(c.x_shape) / bw
        taps = nxt.params["k"] ** 2
        apply = index.get(("_apply_kernel", case_key(c), "fwd"))
        reduce = index.get(("_bwd_reduce_kernel", case_key(c), "bwd"))
        fwd = index.get(("_conv_kernel", case_key(nxt), "fwd"))
        wgrad = index.get(("_wgrad_kernel", case_key(nxt), "bwd"))
        dgrad = index.get(("_conv_kernel", case_key(nxt), "bwd"))
        if apply and fwd and wgrad:
            t = taps * apply["bounds_ms"]["issue"]
            (f0, f1), (w0, w1) = grows(fwd, issue=t), grows(wgrad, issue=t)
            layer_costs["bn_act_in_prologue"][c.name] = (2 * x_ms, f0 + w0, f1 + w1)
        if reduce and dgrad:
            layer_costs["bn_bwd_sums_in_dgrad"][c.name] = (
                x_ms, *grows(dgrad, issue=reduce["bounds_ms"]["issue"], memory=x_ms))
    out = []
    for s in savings:
        s = dict(s, extra_ms=None, extra_serial_ms=None, net_ms=None, net_low_ms=None, by_layer=None)
        per = layer_costs.get(s["fusion"])
        if not s.get("built") and per and set(per) == set(s["layers"]):
            s["by_layer"] = {n: dict(saved_ms=a, extra_ms=e, extra_serial_ms=e1, net_ms=a - e, net_low_ms=a - e1)
                             for n, (a, e, e1) in per.items()}
            s["extra_ms"] = sum(v[1] for v in per.values())
            s["extra_serial_ms"] = sum(v[2] for v in per.values())
            s["net_ms"] = s["ms"] - s["extra_ms"]
            s["net_low_ms"] = s["ms"] - s["extra_serial_ms"]
        out.append(s)
    return out


def network_ops(batch: int, widths=WIDTHS, size: int = 32, activation: str = "gelu", recipe=None,
                backend: str | None = None) -> list[OpCase]:
    """Every op call of one forward pass, in order, at batch size ``batch``: of the airbench94
    network, or with ``recipe`` (a model/recipes.py Recipe or its name) of that recipe's network.
    ``backend``: as that backend's network calls them: an op whose implementation there is a fused
    one (it does not ``compose`` the others, kernels/conv_block.py) rewrites the sequence into its
    calls (its spec's ``fuse_cases``); None: the composed ops."""
    cases = _composed_ops(batch, widths, size, activation, recipe)
    for s in _fusing(backend):
        cases = s.fuse_cases(cases)
    return cases


def _fusing(backend: str | None) -> list:
    """The specs of the fused blocks ``backend`` selects: ops whose spec rewrites the sequence
    (``fuse_cases``) and whose implementation there does not compose the ops it absorbs."""
    if backend is None:
        return []
    names = kernels.resolve_names(backend)
    return [s for s in specs() if type(s).fuse_cases is not OpSpec.fuse_cases
            and not getattr(kernels.get(s.name, names[s.name]), "composes", False)]


def _composed_ops(batch: int, widths, size: int, activation: str, recipe) -> list[OpCase]:
    if recipe is not None:
        return recipe_ops(recipe, batch)
    cases = []
    h = size
    # the whitening conv is frozen and sees the images: neither input- nor weight-grad, only its bias's
    cases.append(OpCase("conv", "whiten", (batch, 3, h, h),
                        dict(cout=24, k=2, padding=0, input_grad=False, weight_grad=False, bias=True)))
    h -= 1
    cin = 24
    # ``from_conv_cin`` (pools, bn_act): the input channels of the conv that produced the op's input
    # (0: not a conv): with conv=fp8 such a conv (>= 32 channels) wants an fp8 copy of its output gradient
    for g, cout in enumerate(widths, 1):
        cases.append(OpCase("conv", f"group{g}.conv1", (batch, cin, h, h), dict(cout=cout, k=3, padding=1)))
        cases.append(OpCase("maxpool", f"group{g}.pool", (batch, cout, h, h), dict(k=2, from_conv_cin=cin)))
        h //= 2
        cases.append(OpCase("bn_act", f"group{g}.norm1", (batch, cout, h, h),
                            dict(activation=activation, from_conv_cin=0)))
        cases.append(OpCase("conv", f"group{g}.conv2", (batch, cout, h, h), dict(cout=cout, k=3, padding=1)))
        cases.append(OpCase("bn_act", f"group{g}.norm2", (batch, cout, h, h),
                            dict(activation=activation, from_conv_cin=cout)))
        cin = cout
    cases.append(OpCase("maxpool", "final_pool", (batch, cin, h, h), dict(k=3, from_conv_cin=0)))
    return cases


def recipe_ops(recipe, batch: int, compose: bool = True) -> list[OpCase]:
    """Every op call of one forward pass of ``recipe``'s network, traced: the network is built
    with recording ops that only compute output shapes (nothing is allocated), named after the
    module that calls them; each op's spec says what a call of it is (``OpSpec.trace``). Producers
    are tracked as in ``network_ops``: ``from_conv_cin`` is the input channels of the conv whose
    output an op reads (0: not a conv). ``compose`` false: the network calls its fused blocks
    (kernels/conv_block.py), as under a backend that selects them."""
    from model.net import build_net
    from model.recipes import get_recipe
    if isinstance(recipe, str):
        recipe = get_recipe(recipe)
    cases, made_by, stack, inputs = [], {}, [""], set()

    def name(default: str, suffix: str = "") -> str:
        path = re.sub(r"groups\.(\d+)", lambda m: f"group{int(m.group(1)) + 1}", stack[-1])
        return path + suffix if path else default

    def recorder(op: str):
        s = spec(op)

        def call(x, *args, **kwargs):
            params, out_shape, default, suffix = s.trace(x, args, kwargs)
            if id(x) in inputs:  # the images: no input gradient
                params["input_grad"] = False
            if s.tracks_producer:
                params["from_conv_cin"] = made_by.get(id(x), 0)
            case = OpCase(op, name(default, suffix), tuple(x.shape), params)
            cases.append(case)
            out = torch.empty(out_shape, device="meta")
            made_by[id(out)] = s.produces(case)
            return out
        call.composes = compose  # a block op's recorder: the network composes the other ops, or calls it
        return call

    net = build_net({op: recorder(op) for op in kernels.ops()}, recipe)
    names = {m: n for n, m in net.named_modules()}
    for m in net.modules():
        if m is not net:
            m.register_forward_pre_hook(lambda mod, args: stack.append(names[mod]))
            m.register_forward_hook(lambda mod, args, out: None if stack.pop() else None)
    net = net.to("meta")
    channels, size = (1, 28) if recipe.dataset == "mnist" else (3, 32)
    x = torch.empty((batch, channels, size, size), device="meta")
    inputs.add(id(x))
    with torch.no_grad():
        net.train()
        net(x)
    top = [i for i, c in enumerate(cases) if c.name == "final_pool"]
    for j, i in enumerate(top):  # a pool the network itself calls is "final" only when nothing follows it
        if i != len(cases) - 1:
            cases[i] = OpCase("maxpool", f"pool{j + 1}", cases[i].x_shape, cases[i].params)
    return cases


FROZEN = " (whitening bias frozen)"  # the name suffix of a call's variant without its input-grad (step_calls)


def whiten_fraction(recipe=None) -> float:
    """The fraction of a run's steps in which the whitening bias trains (``whiten_bias_epochs`` of the
    recipe's epochs; airbench94_muon when None, the recipe the run predictions use)."""
    from model.recipes import get_recipe
    r = get_recipe(recipe or "airbench94_muon") if recipe is None or isinstance(recipe, str) else recipe
    return min(1.0, max(0.0, r.whiten_bias_epochs / r.epochs))


def step_calls(batch: int, activation: str = "gelu", recipe=None, backend: str | None = None
               ) -> list[tuple[OpCase, float]]:
    """Every op call of the mean training step of a run, with its weight (calls per step).

    The whitening conv is frozen and its bias trains only for the recipe's first
    ``whiten_bias_epochs``; after that nothing before the op that reads the whitening output needs a
    gradient, so that op's input-grad is skipped (autograd: the bias is detached, model/net.py). That
    op appears twice: as is, weighted by the fraction of steps the bias trains (``whiten_fraction``),
    and without its input-grad (named with ``FROZEN``), weighted by the rest. Every other call has
    weight 1."""
    f = whiten_fraction(recipe)
    out, after_whiten = [], False
    for c in network_ops(batch, activation=activation, recipe=recipe, backend=backend):
        if after_whiten and c.params.get("input_grad", True) and c.spec.optional_input_grad:
            frozen = OpCase(c.op, c.name + FROZEN, c.x_shape, dict(c.params, input_grad=False))
            out += [(x, w) for x, w in ((c, f), (frozen, 1.0 - f)) if w > 0]
        else:
            out.append((c, 1.0))
        after_whiten = c.op == "conv" and c.name == "whiten"
    return out


def unique_ops(batch: int, op: str | None = None, producers: bool = False, frozen: bool = False,
               **kw) -> list[OpCase]:
    """network_ops without repeats of the same (op, shape, params), optionally for one op (with the
    op's ``extra_cases``, the cases of an op the network does not call).
    ``producers``: also tell apart calls whose input comes from different producers
    (``from_conv_cin``: what an fp8 backend does differs; profiling static models both).
    ``frozen``: also the calls of the mean step (``step_calls``) that run without their input-grad
    once the whitening bias is frozen (profiling static weighs both)."""
    seen, out = set(), []
    # every backend's calls: a fused backend's network calls its blocks instead of the ops they absorb
    backends = [None] + [b for b in kernels.backends() if _fusing(b)]
    if frozen:
        calls = [c for b in backends for c, _ in step_calls(batch, **kw, backend=b)]
    else:
        calls = [c for b in backends for c in network_ops(batch, **kw, backend=b)]
    for c in calls:
        params = {k: v for k, v in c.params.items() if producers or k != "from_conv_cin"}
        key = (c.op, c.x_shape, tuple(sorted(params.items())))
        if key in seen or (op and c.op != op):
            continue
        seen.add(key)
        out.append(c)
    if op:  # an op the network does not call (yet) brings its own cases
        out += [c for c in spec(op).extra_cases(batch) if c.op == op]
    return out


def dtype_size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()
