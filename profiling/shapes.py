"""The network's ops at their real shapes, and what each must move and compute (roofline).

``network_ops(batch)`` lists every op call of one forward pass of the airbench94 network
(widths 64/256/256, 32x32 inputs) with its shapes. ``OpCase.bytes_min`` / ``OpCase.flops``
give the analytic lower bound used for roofline plots and "fraction of peak":

- conv: FLOPs = 2 * N * Ho * Wo * Cout * Cin * k * k per GEMM (forward, input-grad and
  weight-grad each); bytes = the GEMM's two operands and its result, once each.
- bn_act (training, standalone): the batch statistics need one pass over x before y can be
  written, so forward = read x twice + write y (3 passes), backward = read x and dy for the
  gradient sums, then read x and dy and write dx (5 passes); eval forward = 2 passes.
- maxpool: forward = read x + write y. Training must also tell the backward which window
  element won: the cheapest way is one byte per output (uint8 index), written by the forward
  and read by the backward, which then reads dy and writes dx; so forward + backward = x + y +
  idx (forward) + idx + dy + dx (backward). (Recomputing the winner instead reads x again, 4x
  the index's bytes; the eager reference reads an int64 index.)
``mode`` "fwd" is an inference forward; "fwd+bwd" a training step, split into ``phase_bytes``
"fwd" and "bwd". Element sizes come from the dtype; BatchNorm parameters and statistics (C
floats) are ignored.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

WIDTHS = (64, 256, 256)


@dataclass(frozen=True)
class OpCase:
    op: str                 # registry op name
    name: str               # where in the network, e.g. "group2.conv1"
    x_shape: tuple          # N, C, H, W
    params: dict = field(default_factory=dict)

    @property
    def out_shape(self) -> tuple:
        n, c, h, w = self.x_shape
        if self.op == "conv":
            cout, k, pad = self.params["cout"], self.params["k"], self.params["padding"]
            return (n, cout, h + 2 * pad - k + 1, w + 2 * pad - k + 1)
        if self.op == "maxpool":
            k = self.params["k"]
            return (n, c, h // k, w // k)
        return self.x_shape

    def numel(self, shape) -> int:
        out = 1
        for s in shape:
            out *= s
        return out

    def flops(self, mode: str = "fwd") -> float:
        """Floating-point operations (multiply-add = 2) of ``mode``: 'fwd' or 'fwd+bwd'."""
        if self.op != "conv":
            return 0.0  # memory-bound ops: their few FLOPs per byte do not bound them
        n, cin, _, _ = self.x_shape
        _, cout, ho, wo = self.out_shape
        gemm = 2.0 * n * ho * wo * cout * cin * self.params["k"] ** 2
        if mode == "fwd":
            return gemm
        return gemm * (1 + self.params.get("input_grad", True) + self.params.get("weight_grad", True))

    def phase_bytes(self, phase: str, esize: int = 2) -> float:
        """Must-move bytes of the training forward ("fwd") or backward ("bwd")."""
        x, y = self.numel(self.x_shape), self.numel(self.out_shape)
        if self.op == "conv":
            n, cin, _, _ = self.x_shape
            w = self.params["cout"] * cin * self.params["k"] ** 2
            if phase == "fwd":
                return esize * (x + w + y)
            return esize * ((y + w + x if self.params.get("input_grad", True) else 0)
                            + (x + y + w if self.params.get("weight_grad", True) else 0))
        if self.op == "bn_act":
            return esize * (3 * x if phase == "fwd" else 5 * x)
        if self.op == "maxpool":
            k = self.params["k"]
            read = y * k * k  # floor mode: the forward reads only the pooled windows
            idx = y  # one byte per output
            return esize * (read + y) + idx if phase == "fwd" else idx + esize * (y + x)
        raise ValueError(self.op)

    def bytes_min(self, mode: str = "fwd", esize: int = 2) -> float:
        if mode == "fwd":
            x, y = self.numel(self.x_shape), self.numel(self.out_shape)
            if self.op == "bn_act" and not self.params.get("training", True):
                return esize * 2 * x
            if self.op == "maxpool":
                return esize * (y * self.params["k"] ** 2 + y)
            return self.phase_bytes("fwd", esize)
        return self.phase_bytes("fwd", esize) + self.phase_bytes("bwd", esize)

    def phase_bound_s(self, peak, phase: str, esize: int = 2, fp8: bool = False) -> float:
        """Roofline lower bound in seconds of one training phase ("fwd" or "bwd")."""
        mem = self.phase_bytes(phase, esize) / (peak.hbm_gbps * 1e9)
        gemm = self.flops("fwd")
        flops = gemm if phase == "fwd" else self.flops("fwd+bwd") - gemm
        tflops = (peak.fp8_tflops if fp8 and peak.fp8_tflops else peak.fp16_tflops)
        return max(mem, flops / (tflops * 1e12))

    def bound_s(self, peak, mode: str = "fwd", esize: int = 2, fp8: bool = False) -> float:
        """Roofline lower bound in seconds on ``peak`` (profiling.devices.Peak)."""
        mem = self.bytes_min(mode, esize) / (peak.hbm_gbps * 1e9)
        tflops = (peak.fp8_tflops if fp8 and peak.fp8_tflops else peak.fp16_tflops)
        return max(mem, self.flops(mode) / (tflops * 1e12))

    def label(self) -> str:
        return f"{self.name} {'x'.join(map(str, self.x_shape))}"


def fused_minimum(cases: list[OpCase], peak, esize: int = 2, fp8: bool = False) -> dict:
    """The step's physical limit if every op were fused where the data allows: each conv reads its
    input, weights and output gradient and writes its output, input gradient and weight gradient
    once; the max-pool, the BatchNorm statistics and the activation live in the convs' epilogues and
    prologues (a conv followed by a max-pool writes the pooled tensor and its 1-byte index instead
    of its full output); the BatchNorm backward's sums in the input-grad epilogue. Per conv and
    phase, the larger of its bytes at full HBM bandwidth and its FLOPs at the tensor-core peak.
    Returns bytes, FLOPs and ms per training step (forward + backward)."""
    tflops = peak.fp8_tflops if fp8 and peak.fp8_tflops else peak.fp16_tflops
    total_bytes = total_flops = seconds = 0.0
    for i, c in enumerate(cases):
        if c.op != "conv":
            continue
        nxt = cases[i + 1] if i + 1 < len(cases) else None
        x, y = c.numel(c.x_shape), c.numel(c.out_shape)
        w = c.params["cout"] * c.x_shape[1] * c.params["k"] ** 2
        if nxt is not None and nxt.op == "maxpool" and nxt.name != "final_pool":
            pooled = y / nxt.params["k"] ** 2
            out = esize * pooled + pooled  # the pooled tensor and its 1-byte window index
        else:
            out = esize * y
        fwd_b = esize * (x + w) + out
        bwd_b = ((out + esize * (w + x)) if c.params.get("input_grad", True) else 0) + \
            ((esize * x + out + esize * w) if c.params.get("weight_grad", True) else 0)
        fwd_f = c.flops("fwd")
        bwd_f = c.flops("fwd+bwd") - fwd_f
        for b, f in ((fwd_b, fwd_f), (bwd_b, bwd_f)):
            total_bytes += b
            total_flops += f
            seconds += max(b / (peak.hbm_gbps * 1e9), f / (tflops * 1e12))
    return dict(bytes=total_bytes, flops=total_flops, ms=1e3 * seconds)


def network_ops(batch: int, widths=WIDTHS, size: int = 32, activation: str = "gelu", recipe=None) -> list[OpCase]:
    """Every op call of one forward pass, in order, at batch size ``batch``: of the airbench94
    network, or with ``recipe`` (a model/recipes.py Recipe or its name) of that recipe's network."""
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


def recipe_ops(recipe, batch: int) -> list[OpCase]:
    """Every op call of one forward pass of ``recipe``'s network, traced: the network is built
    with recording ops that only compute output shapes (nothing is allocated), named after the
    module that calls them. Producers are tracked as in ``network_ops``: ``from_conv_cin`` is
    the input channels of the conv whose output an op reads (0: not a conv)."""
    from model.net import build_net
    from model.recipes import get_recipe
    if isinstance(recipe, str):
        recipe = get_recipe(recipe)
    cases, made_by, stack, inputs = [], {}, [""], set()

    def name(default: str, suffix: str = "") -> str:
        path = re.sub(r"groups\.(\d+)", lambda m: f"group{int(m.group(1)) + 1}", stack[-1])
        return path + suffix if path else default

    def conv(x, w, b=None, padding=0):
        n, cin, h, wd = x.shape
        k = w.shape[-1]
        params = dict(cout=w.shape[0], k=k, padding=padding)
        if b is not None:
            params["bias"] = True
        if id(x) in inputs:  # the images: no input gradient
            params["input_grad"] = False
        if not w.requires_grad:
            params["weight_grad"] = False
        cases.append(OpCase("conv", name("whiten") if k == 2 else name("conv"), tuple(x.shape), params))
        out = torch.empty((n, w.shape[0], h + 2 * padding - k + 1, wd + 2 * padding - k + 1), device="meta")
        made_by[id(out)] = cin
        return out

    def maxpool(x, k, stride=None):
        n, c, h, w = x.shape
        cases.append(OpCase("maxpool", name("final_pool", ".pool"), tuple(x.shape),
                            dict(k=k, from_conv_cin=made_by.get(id(x), 0))))
        out = torch.empty((n, c, h // k, w // k), device="meta")
        made_by[id(out)] = 0
        return out

    def bn_act(x, rm, rv, w, b, training, momentum, eps, activation="gelu"):
        cases.append(OpCase("bn_act", name("norm"), tuple(x.shape),
                            dict(activation=activation, from_conv_cin=made_by.get(id(x), 0))))
        out = torch.empty(x.shape, device="meta")
        made_by[id(out)] = 0
        return out

    net = build_net(dict(conv=conv, maxpool=maxpool, bn_act=bn_act), recipe)
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


def unique_ops(batch: int, op: str | None = None, producers: bool = False, **kw) -> list[OpCase]:
    """network_ops without repeats of the same (op, shape, params), optionally for one op.
    ``producers``: also tell apart calls whose input comes from different producers
    (``from_conv_cin``: what an fp8 backend does differs; profiling static models both)."""
    seen, out = set(), []
    for c in network_ops(batch, **kw):
        params = {k: v for k, v in c.params.items() if producers or k != "from_conv_cin"}
        key = (c.op, c.x_shape, tuple(sorted(params.items())))
        if key in seen or (op and c.op != op):
            continue
        seen.add(key)
        out.append(c)
    return out


def dtype_size(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()
