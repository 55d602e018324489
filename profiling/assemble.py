"""The static model's tables: per launch (``build_rows``: SASS facts + work + perfmodel), per op
and shape (``op_table``), per training step and backend (``step_table``), whole runs
(``run_times``) and the losses that rank the work left (``losses``)."""
from __future__ import annotations

import glob
import json
import math
import os
import re
import shlex
import statistics

import kernels
import kernels._triton as kt
from kernels.spec import kernel_tags
from model.recipes import get_recipe

from .capture import TRAIN_PHASES, config_str
from .cubin import ARCHS, kernel_facts
from .devices import PEAKS, detect
from .drive import OpRecord
from .kernel_work import work_of
from .perfmodel import glue_ms, predict, resident_programs, with_range
from .shapes import FROZEN, case_key, fused_minimum, input_grad_shares, network_ops, step_calls


# --------------------------------------------------------------------------------- the model
def learn_residency(records: list[OpRecord], arch: str, sms: int, cache: dict) -> int:
    """Tell the launchers how many programs of each recorded kernel one SM of ``arch`` holds (from
    the compiled kernel), as kernels/_triton.py learns it after a first launch on a GPU; the next
    recording then sizes its grids in whole waves. Returns how many residencies were new."""
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


def _runs_on(impl: str, arch: str) -> bool:
    return not (impl == "fp8" and arch == "sm_80")  # FP8 tensor cores need sm_89+; conv=fp8 refuses an A100


def build_rows(records: list[OpRecord], archs: list[str], facts_cache: dict | None = None) -> list[dict]:
    """One row per recorded launch x architecture: SASS facts, work, prediction."""
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
                    case_key=case_key(rec.case), tags=list(kernel_tags(ln.fn)),
                    shape=list(rec.case.x_shape), variant=rec.variant, default=rec.default, phase=ln.phase,
                    launch_index=j, arch=arch, config=config_str(ln), num_warps=ln.num_warps,
                    num_stages=ln.num_stages, grid=list(ln.grid),
                    regs=f["regs"], spill_bytes=f["spill_bytes"], shared=f["shared"], shared_limit=f["shared_limit"],
                    occupancy=f["occupancy"], tc=f["tc"], tensor_core_instrs=f["tensor_core_instrs"],
                    ld128=f["ld128"], vector_loads=f["vector_loads"], st128=f["st128"],
                    loops=s["loops"], main_loops=s["main_loops"], drained_loops=s["drained_loops"],
                    loop_instrs=s["loop_sizes"], wait_depth=f["wait_depth"], cp_async_wait=s["cp_async_wait"],
                    wgmma_wait=s["wgmma_wait"], async_copies=body.get("async_copies", 0), tma_in_loop=body.get("tma", 0),
                    async_widths=body.get("async_widths", {}), plain_loads=body.get("ldg", 0),
                    plain_load_widths=body.get("ldg_widths", {}), mma_shapes=body.get("mma_shapes", []),
                    fadd_after_mma=s["fadd_after_mma"], zero_acc_mma=s["zero_acc_mma"], sts_u8=s["sts_u8"],
                    bar_in_loop=body.get("bar", 0), shfl_in_loop=body.get("shfl", 0),
                    **{k: v for k, v in p.items()}))
    return rows


def glue_rows(records: list[OpRecord], archs: list[str]) -> list[dict]:
    """The eager ATen ops around the kernels, with their predicted time (bytes at HBM speed)."""
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


def floor_ms(row: dict) -> float:
    """A launch at its floor in the model: its fixed cost plus the larger of its DRAM and tensor-core bounds
    (at MEM_EFFICIENCY and TC_EFFICIENCY), every other bound (L2, issue, shared memory, latency) out of
    the way. What work on the kernel's code and configuration can gain at most: below it, only less work
    (fewer bytes through fusion, fp8's faster MMAs) or a model with other efficiencies."""
    b = row.get("bounds_ms") or {}
    return b.get("fixed", 0.0) + max(b.get("memory", 0.0), b.get("tensor", 0.0))


def op_table(records: list[OpRecord], rows: list[dict], glue: list[dict], archs: list[str], esize: int) -> list[dict]:
    """Per op x implementation x shape x arch (default configuration, training forward + backward):
    kernels and glue predicted, the op's roofline (profiling/shapes.py) and the fraction reached."""
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
            row = dict(op=rec.op, impl=rec.impl, case=rec.case.label(), key=case_key(rec.case), arch=arch)
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
            # DRAM traffic of one training call (the kernels' work models, the glue's ATen bytes)
            row["dram_bytes"] = (sum(r["dram_bytes"] or 0 for r in mine if r["phase"] in TRAIN_PHASES)
                                 + sum(x["bytes"] or 0 for x in gl if x["phase"] in TRAIN_PHASES))
            row["predicted_ms"] = row["fwd_ms"] + row["bwd_ms"]
            row["floor_ms"] = sum(floor_ms(r) for r in mine if r["phase"] in TRAIN_PHASES) + g_ms
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
    """Per backend x arch: the mean training step of a run (forward + backward of every layer; the
    op after the whitening conv with its input-grad only in the steps where the whitening bias
    trains, ``step_calls``) predicted for the Triton implementations, beside its roofline; the ops a
    backend leaves to eager code (cuDNN, ATen) are not modelled and appear as their roofline only."""
    by_key = {(o["op"], o["impl"], o["key"], o["arch"]): o for o in ops}
    out = []
    shares = input_grad_shares(batch, activation, recipe)
    fused = {arch: fused_minimum(network_ops(batch, activation=activation, recipe=recipe), PEAKS[ARCHS[arch][1]],
                                 esize, input_grad_share=shares) for arch in archs}
    for backend in kernels.backends():
        names = kernels.resolve_names(backend)
        for arch in archs:
            peak = PEAKS[ARCHS[arch][1]]
            row = dict(backend=backend, arch=arch, predicted_ms=0.0, roofline_ms=0.0, eager_roofline_ms=0.0,
                       per_op={}, modelled_ops=0, eager_ops=0, hbm_bytes=0.0, floor_ms=0.0)
            runnable = True
            for case, weight in step_calls(batch, activation=activation, recipe=recipe, backend=backend):
                impl = names[case.op]
                if not _runs_on(impl, arch):
                    runnable = False
                o = by_key.get((case.op, impl, case_key(case), arch))
                if o is None:
                    ms = 1e3 * (case.phase_bound_s(peak, "fwd", esize) + case.phase_bound_s(peak, "bwd", esize))
                    row["eager_roofline_ms"] += weight * ms
                    row["eager_ops"] += weight
                    # an op left to cuDNN / ATen moves at least its must-move bytes
                    row["hbm_bytes"] += weight * sum(case.spec.phase_bytes(case, ph, esize) for ph in ("fwd", "bwd"))
                    continue
                row["predicted_ms"] += weight * o["predicted_ms"]
                row["hbm_bytes"] += weight * (o.get("dram_bytes") or 0.0)
                row["roofline_ms"] += weight * o["roofline_ms"]
                row["floor_ms"] += weight * o.get("floor_ms", o["predicted_ms"])
                for b, ms in (o.get("bound_ms") or {}).items():
                    row.setdefault("_bounds", {})[b] = row.setdefault("_bounds", {}).get(b, 0.0) + weight * ms
                row["per_op"][case.op] = row["per_op"].get(case.op, 0.0) + weight * o["predicted_ms"]
                row["modelled_ops"] += weight
            # calls per step: the split call's two weights add up to one
            row["modelled_ops"], row["eager_ops"] = round(row["modelled_ops"]), round(row["eager_ops"])
            if not runnable:
                row.update(predicted_ms=None, roofline_ms=None, eager_roofline_ms=None, floor_ms=None,
                           note="conv=fp8 needs FP8 tensor cores (sm_89+)")
            elif not row["modelled_ops"]:
                row.update(predicted_ms=None, roofline_ms=None, floor_ms=None)
            row["predicted_fraction"] = (row["roofline_ms"] / row["predicted_ms"]
                                         if row.get("predicted_ms") else None)
            if row.get("predicted_ms") is not None:
                row["predicted_range_ms"] = list(with_range(row["predicted_ms"]))
            row["fused_min_ms"] = fused[arch]["ms"]
            # HBM bytes per step: the modelled kernels' DRAM traffic plus the eager ops' must-move bytes,
            # beside the fused minimum's (what issue 23's fused blocks aim at)
            row["hbm_mb"] = row.pop("hbm_bytes") / 1e6 if runnable else None
            row["fused_min_mb"] = fused[arch]["bytes"] / 1e6
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
    names = kernels.resolve_names(backend)
    totals: dict[str, float] = {}
    for case, weight in step_calls(batch, activation=activation, recipe=recipe, backend=backend):
        impl, key = names[case.op], case_key(case)
        for r in rows:
            if (r["default"] and r["arch"] == arch and r["impl"] == impl and r["case_key"] == key
                    and r["phase"] in TRAIN_PHASES):
                totals[r["kernel"]] = totals.get(r["kernel"], 0.0) + weight * r["predicted_ms"]
    return totals


def on_device(rows: list[dict], arch: str, peak) -> list[dict]:
    """``rows`` with ``arch``'s predictions redone for the measured GPU ``peak`` where its peaks differ
    from the GPU the arch is modelled on (an H200 against the H100 SXM: 4800 against 3350 GB/s of
    HBM, the same SMs, clocks and tensor cores): each bound scaled by the ratio of the peak behind it
    (memory: HBM; tensor: fp16, or fp8 where the row's MMAs are QGMMA), the rest unchanged. Rows
    without bounds (non-default configurations) are kept as they are."""
    model = PEAKS[ARCHS[arch][1]]
    if peak is None or peak.name == model.name:
        return rows
    out = []
    for r in rows:
        b = r.get("bounds_ms")
        if r["arch"] != arch or not b or r.get("predicted_ms") is None:
            out.append(r)
            continue
        fp8 = (r.get("tc") or {}).get("QGMMA", 0) > 0
        scale = dict(memory=model.hbm_gbps / peak.hbm_gbps,
                     tensor=(model.fp8_tflops / peak.fp8_tflops) if fp8 else (model.fp16_tflops / peak.fp16_tflops))
        bounds = {k: v * scale.get(k, 1.0) for k, v in b.items() if k != "fixed"}
        out.append(dict(r, bounds_ms=dict(bounds, fixed=b.get("fixed", 0.0)),
                        predicted_ms=b.get("fixed", 0.0) + max(bounds.values(), default=0.0)))
    return out


def _op_scale(model_rows: list[dict], device_rows: list[dict], op: dict, phases) -> float:
    """How much an op's kernels' predicted time moves from the modelled GPU to the measured one."""
    def total(rows):
        return sum(r["predicted_ms"] for r in rows if r["default"] and r["arch"] == op["arch"] and r["impl"] == op["impl"]
                   and r["case_key"] == op["key"] and r["phase"] in phases)
    base = total(model_rows)
    return total(device_rows) / base if base else 1.0


def measured_runs(base: str, steps: list[dict], arch: str) -> list[dict]:
    """Training records of a GPU report (``runs/*.jsonl``, train.py --json) beside the step table's
    whole-run prediction: per backend run with --cuda-graph and no torch.compile (the model has
    none), the median run time and the median step of epochs 2 on (the first holds the warm-up's
    leftovers), against ``run_graph_s`` and the predicted step of Triton ops."""
    by_backend: dict[str, list[dict]] = {}
    for path in sorted(glob.glob(os.path.join(base, "runs", "*.jsonl"))):
        try:
            recs = [json.loads(line) for line in open(path) if line.strip()]
        except (OSError, ValueError):
            continue
        for r in recs:
            c = r.get("config", {})
            if r.get("failed") or not c.get("cuda_graph") or c.get("compile", "none") != "none":
                continue
            if c.get("recipe", "airbench94_muon") != "airbench94_muon" or not r.get("per_epoch"):
                continue
            if c.get("ops") and c.get("backend") in kernels.backends() and c["ops"] != kernels.resolve_names(c["backend"]):
                continue  # an --op override: not the backend the step table predicts
            by_backend.setdefault(c.get("backend"), []).append(r)
    out = []
    for backend, recs in by_backend.items():
        s = next((s for s in steps if s["backend"] == backend and s["arch"] == arch and s.get("run_graph_s")), None)
        if s is None:
            continue
        step_ms = []
        for r in recs:
            e = r["per_epoch"]
            if len(e) > 1:
                step_ms.append(1e3 * (e[-1]["time_s"] - e[0]["time_s"]) / (r["steps"] * (len(e) - 1) / len(e)))
        t = statistics.median(r["time_s"] for r in recs)
        out.append(dict(backend=backend, runs=len(recs), measured_s=t, predicted_s=s["run_graph_s"],
                        predicted_range=s.get("run_graph_range"), ratio=t / s["run_graph_s"],
                        measured_step_ms=statistics.median(step_ms) if step_ms else None,
                        predicted_step_ms=s.get("predicted_ms")))
    return sorted(out, key=lambda r: r["backend"])


def gpu_reports(reports_dir: str) -> list[tuple[str, dict]]:
    """(folder, its report.json) of every GPU report under ``reports_dir``, newest first: by the date
    in the folder's name, then the name (nvidia-h200-2026-11-30b after nvidia-h200-2026-11-30; a
    clone's file times say nothing)."""
    found = []
    for path in glob.glob(os.path.join(reports_dir, "*", "report.json")):
        try:
            rep = json.load(open(path))
        except (OSError, ValueError):
            continue
        if not rep.get("quick") and rep.get("env", {}).get("device_type") == "cuda":
            found.append((os.path.dirname(path), rep))

    def key(item):
        name = os.path.basename(item[0])
        m = re.search(r"\d{4}-\d{2}-\d{2}", name)
        return (m.group(0) if m else "", name)
    return sorted(found, key=key, reverse=True)


def trace_backend(summary: dict) -> str | None:
    """The backend a profiler trace's configuration ran: the one whose op mapping its ``ops`` are
    (None: a mix of --op overrides no backend names), else the last --backend of its flags."""
    if summary.get("ops"):
        return next((b for b in kernels.backends() if kernels.resolve_names(b) == summary["ops"]), None)
    backend, flags = "eager", shlex.split(summary.get("flags", ""))
    for i, f in enumerate(flags):
        if f == "--backend" and i + 1 < len(flags):
            backend = flags[i + 1]
        elif f.startswith("--backend="):
            backend = f.split("=", 1)[1]
    return backend if backend in kernels.backends() else None


def layer_predictions(rows: list[dict], batch: int, backend: str, arch: str) -> dict:
    """Predicted ms of each conv layer's kernels, {layer: {"fwd": ms, "bwd": ms}}, for ``backend``
    while the whitening bias trains (every input-grad computed, as in a trace's early steps)."""
    out: dict = {}
    for layer, phases in layer_candidates(rows, batch, backend, arch).items():
        for ph, rs in phases.items():
            if any(r["default"] for r in rs):
                out.setdefault(layer, {})[ph] = sum(r["predicted_ms"] for r in rs if r["default"])
    return out


def layer_candidates(rows: list[dict], batch: int, backend: str, arch: str) -> dict:
    """Every configuration's rows of each conv layer's kernels, {layer: {phase: [rows]}}, for
    ``backend`` while the whitening bias trains: what a trace's launches are matched against."""
    impl, out = kernels.resolve_names(backend)["conv"], {}
    for case, _ in step_calls(batch, backend=backend):
        if case.op != "conv" or case.name.endswith(FROZEN):
            continue
        key = case_key(case)
        for r in rows:
            if r["arch"] == arch and r["impl"] == impl and r["case_key"] == key and r["phase"] in TRAIN_PHASES:
                out.setdefault(case.name, {}).setdefault(r["phase"], []).append(r)
    return out


def _dims(g) -> tuple:
    """A recorded grid leaves out trailing 1s; a trace gives all three."""
    return tuple(g) + (1,) * (3 - len(g))


def match_launch(cands: list[dict], ln: dict) -> dict | None:
    """The modelled row a traced launch ran: the row of its kernel with the same grid and threads
    per block (the tile and the warps; among several, those with the same shared memory, then the
    nearest register count, else the default); None where none matches (a configuration the model
    did not compile)."""
    same = [r for r in cands if r["kernel"] == ln["kernel"] and r.get("grid") is not None
            and _dims(r["grid"]) == _dims(ln["grid"]) and r["num_warps"] * 32 == ln["threads"]]
    if not same:
        return None
    if ln.get("shared") is not None and any(r.get("shared") == ln["shared"] for r in same):
        same = [r for r in same if r.get("shared") == ln["shared"]]
    # twins (the L1 twin: the same tile, grid and shared memory) by the nearest register count (the
    # trace's come from the GPU's Triton, so only near), else the default
    return (min(same, key=lambda r: (abs((r.get("regs") or 0) - ln["regs"]), not r["default"]))
            if ln.get("regs") else next((r for r in same if r["default"]), same[0]))


def ran_prediction(cands: list[dict], launches: list[dict]) -> float | None:
    """The predicted ms of the configurations a trace's launches ran (each launch matched by
    ``match_launch``); None where a launch matches no row."""
    names = {r["kernel"] for r in cands}
    total, found = 0.0, False
    for ln in launches:
        if ln["kernel"] not in names:
            continue  # an ATen kernel beside ours (the whitening conv's bias gradient)
        pick = match_launch(cands, ln)
        if pick is None:
            return None
        total += pick["predicted_ms"]
        found = True
    return total if found else None


# A bound is a floor on a launch's time: a measured time below it means the GPU beat the model's
# ceiling (its peak or efficiency constant is too low for this kernel). Trace times are averages of
# a few steps: a bound counts as beaten only beyond this margin.
BEATEN_MARGIN = 1.05


def bound_checks(cands: list[dict], launches: list[dict], layer: str, phase: str, backend: str) -> list[dict]:
    """Each traced launch of our kernels against the bounds of the row it ran: the bounds the
    measured time beat (bound / measured above BEATEN_MARGIN) and the L2 throughput the measured
    time implies (the model's L2 bytes / measured time), a lower limit of what the GPU's L2 did."""
    out = []
    names = {r["kernel"] for r in cands}
    for ln in launches:
        if ln["kernel"] not in names or not ln.get("ms"):
            continue
        r = match_launch(cands, ln)
        if r is None or not r.get("bounds_ms"):
            continue
        b = {k: v for k, v in r["bounds_ms"].items() if k != "fixed"}
        beaten = {k: v / ln["ms"] for k, v in b.items() if v > BEATEN_MARGIN * ln["ms"]}
        out.append(dict(backend=backend, layer=layer, phase=phase, kernel=r["kernel"], config=r["config"],
                        variant=r["variant"], grid=list(_dims(ln["grid"])), measured_ms=ln["ms"],
                        predicted_ms=r["predicted_ms"], bound=r["bound"], bounds_ms=b, beaten=beaten,
                        l2_bytes=r.get("l2_bytes"),
                        l2_tbps=(r["l2_bytes"] / (ln["ms"] * 1e-3) / 1e12) if r.get("l2_bytes") else None))
    return out


def _trace_rows(base: str, drows: list[dict], ops: list[dict], batch: int, arch: str, seen: set) -> tuple[list, list, list]:
    """Kernel rows, conv-layer rows and per-launch bound checks (``bound_checks``) of one report's
    profiler traces, for each backend not in ``seen`` (a newer report had it), which it then adds."""
    kernel_rows, layer_rows, checks = [], [], []
    try:
        traces = json.load(open(os.path.join(base, "trace", "trace.json")))
    except (OSError, ValueError):
        return kernel_rows, layer_rows, checks
    for t in traces:
        backend = trace_backend(t)
        if backend is None or backend in seen:
            continue
        b = t.get("batch", batch)
        predicted = kernel_step_totals(drows, ops, b, backend, arch)
        for k in t.get("top", []):
            name = k["name"].split("(")[0].strip()
            if predicted.get(name):
                kernel_rows.append(dict(kernel=name, backend=backend, measured_ms=k["ms"],
                                        predicted_ms=predicted[name], ratio=k["ms"] / predicted[name]))
        layers = layer_predictions(drows, b, backend, arch) if t.get("conv_layers") else {}
        cands = layer_candidates(drows, b, backend, arch) if t.get("conv_layers") else {}
        for m in t.get("conv_layers") or []:
            for ph in TRAIN_PHASES:
                p = layers.get(m["layer"], {}).get(ph)
                lc, launched = cands.get(m["layer"], {}).get(ph, []), m.get(f"{ph}_launches") or []
                ran = ran_prediction(lc, launched)
                checks += bound_checks(lc, launched, m["layer"], ph, backend)
                if p and m[f"{ph}_ms"]:
                    # the configurations the run chose where the trace says which (autotuning on the GPU
                    # picks its own), else the default configurations the step table predicts
                    q = ran if ran is not None else p
                    layer_rows.append(dict(layer=m["layer"], backend=backend, phase=ph, measured_ms=m[f"{ph}_ms"],
                                           predicted_ms=q, ratio=m[f"{ph}_ms"] / q, default_ms=p,
                                           modelled="as run" if ran is not None else "default"))
        if predicted:
            seen.add(backend)
    return kernel_rows, layer_rows, checks


def _bench_rows(base: str, rows: list[dict], drows: list[dict], ops: list[dict], arch: str) -> list[dict]:
    """One report's op benchmarks beside the op's predicted forward or forward + backward."""
    out = []
    try:
        bench = json.load(open(os.path.join(base, "bench", "bench.json")))
    except (OSError, ValueError):
        return out
    for b in bench.get("records", []):
        if "error" in b or b.get("mode") not in ("fwd", "fwd+bwd"):
            continue
        # the same layer and shape (two layers can share an input shape, not their work)
        o = next((o for o in ops if o["impl"] == b["impl"] and o["arch"] == arch
                  and o["case"] == b["case"] and o["op"] == b["op"]), None)
        predicted = (o or {}).get("fwd_ms" if b["mode"] == "fwd" else "predicted_ms")
        if predicted and drows is not rows:
            predicted *= _op_scale(rows, drows, o, ("fwd",) if b["mode"] == "fwd" else TRAIN_PHASES)
        if predicted:  # the device's time where the bench has it (graph replay), as the model predicts
            ms = b.get("graph_ms") or b["ms"]
            out.append(dict(op=b["op"], case=b["case"], impl=b["impl"], mode=b["mode"], measured_ms=ms,
                            timed="graph" if b.get("graph_ms") else "do_bench",
                            predicted_ms=predicted, ratio=ms / predicted))
    return out


def measured_spread(kernel_rows: list[dict], layer_rows: list[dict], layer_kernels: set) -> dict | None:
    """measured / predicted over the Triton kernels and conv layers timed inside training steps
    (profiler traces: the device's own time, the context the step predictions are for): the count,
    median and 10th-90th percentiles. The range our own kernels' measurements give a prediction,
    beside the calibration suite's (perfmodel RANGE, public kernels timed alone). Each measurement
    once: a kernel name once (the first backend's), and not at all where conv layers of its backend
    cover it (``layer_kernels``: the conv op's kernels)."""
    covered = {r["backend"] for r in layer_rows}
    names: set = set()
    ratios = [r["ratio"] for r in layer_rows if r.get("ratio")]
    for r in kernel_rows:
        if r.get("ratio") and r["kernel"] not in names and not (r["backend"] in covered and r["kernel"] in layer_kernels):
            names.add(r["kernel"])
            ratios.append(r["ratio"])
    ratios.sort()
    if len(ratios) < 3:
        return None
    q = statistics.quantiles(ratios, n=10, method="inclusive")
    return dict(n=len(ratios), median=statistics.median(ratios), p10=q[0], p90=q[-1], lo=ratios[0], hi=ratios[-1],
                slower=sum(1 for x in ratios if x > 1.0))


def _run_rows(reports: list, rows: list[dict], ops: list[dict], batch: int, steps: list[dict], arch: str,
              peak) -> list[dict]:
    """Whole-run rows of every report (same GPU), the newest report's for a backend, predictions
    moved to the measured GPU as its Triton kernels move."""
    drows, out, seen = on_device(rows, arch, peak), [], set()
    for base, _ in reports:
        for r in measured_runs(base, steps or [], arch):
            if r["backend"] not in seen:
                seen.add(r["backend"])
                out.append(dict(r, report=os.path.basename(base)))
    if drows is not rows:  # a whole run moves as its Triton kernels do
        for r in out:
            before = sum(kernel_step_totals(rows, ops, batch, r["backend"], arch).values())
            after = sum(kernel_step_totals(drows, ops, batch, r["backend"], arch).values())
            f = after / before if before else 1.0
            run_s = r["predicted_s"] * f
            r.update(predicted_s=run_s, ratio=r["ratio"] / f, predicted_range="%.2f-%.2f" % with_range(run_s),
                     predicted_step_ms=r["predicted_step_ms"] * f if r["predicted_step_ms"] else None)
    return sorted(out, key=lambda r: r["backend"])


def measured_vs_predicted(rows: list[dict], ops: list[dict], batch: int, reports_dir: str,
                          steps: list[dict] | None = None) -> dict | None:
    """The GPU reports under ``reports_dir`` (those of the newest report's GPU), measured beside
    predicted: per Triton kernel and per conv layer inside a training step (profiler traces, the
    newest per backend), per op (the newest op benchmarks), per whole run (training records, the
    newest per backend; ``steps``: the step table), with ratios and their spread."""
    reports = gpu_reports(reports_dir)
    if not reports:
        return None
    device = reports[0][1]["env"]["device"]
    reports = [(b, r) for b, r in reports if r["env"]["device"] == device]
    peak = detect(device)
    arch = "sm_90" if peak and peak.capability >= (9, 0) else "sm_80"
    drows = on_device(rows, arch, peak)  # the measured GPU's own peaks (an H200 is not the modelled H100)
    import triton
    out = dict(report=", ".join(os.path.relpath(b) for b, _ in reports), device=device, arch=arch, kernels=[],
               gpu_triton=sorted({r["env"]["triton"] for _, r in reports if r["env"].get("triton")}),
               local_triton=triton.__version__,
               layers=[], bound_checks=[], ops=[], predicted_for=(peak.name if peak else ARCHS[arch][1]), modelled=ARCHS[arch][1],
               runs=_run_rows(reports, rows, ops, batch, steps, arch, peak))
    seen: set = set()
    for base, _ in reports:
        k, lay, chk = _trace_rows(base, drows, ops, batch, arch, seen)
        out["kernels"] += k
        out["layers"] += lay
        out["bound_checks"] += chk
        if not out["ops"]:
            out["ops"] = _bench_rows(base, rows, drows, ops, arch)
    out["spread"] = measured_spread(out["kernels"], out["layers"], {r["kernel"] for r in rows if r["op"] == "conv"})
    out["launches"] = measured_launches(reports, arch, peak)
    return out if (out["kernels"] or out["ops"] or out["runs"] or out["launches"]) else None


def launches_file(base: str) -> str | None:
    """A GPU report's ``profiling launches`` file (launches.json, or launches/launches.json), or None."""
    for path in (os.path.join(base, "launches.json"), os.path.join(base, "launches", "launches.json")):
        if os.path.exists(path):
            return path
    return None


def measured_launches(reports: list, arch: str, peak) -> dict | None:
    """The newest report's launches timed alone (profiling launches), each compiled here and modelled
    on the measured GPU as a launch timed alone: the rows, their spread (all, and per kernel) and the
    default configuration against the fastest one measured per launch."""
    from . import launches
    for base, _ in reports:
        path = launches_file(base)
        if path is None:
            continue
        data = json.load(open(path))
        rows = launches.predict_records(data, arch, peak)
        ok = [r for r in rows if r.get("ratio")]
        per_kernel = {k: launches.spread([r for r in ok if r["kernel"] == k]) for k in sorted({r["kernel"] for r in ok})}
        return dict(file=os.path.relpath(path), rows=rows, spread=launches.spread(ok), per_kernel=per_kernel,
                    best=launches.best_configs(ok), complete=data.get("complete", True),
                    errors=sum(1 for r in rows if "error" in r))
    return None


# published, measured records (A100) the whole-run predictions stand beside
PUBLISHED_RUNS = [("airbench94_muon (KellerJordan/cifar10-airbench)", 2.59, "A100"),
                  ("record (hiverge/cifar10-speedrun, Oct 2025)", 1.98, "A100")]


def run_times(steps: list[dict], batch: int, recipe: str | None) -> None:
    """Whole-run predictions per step row: steps x (predicted Triton ops + the eager ops at their
    roofline) + evaluation (the test set's forward passes, 2 with flip TTA, at a third of a training
    step each); with --cuda-graph the host time is hidden, without it a step costs the larger of host
    and device time. Adds steps_per_run, run_graph_s (with its range) and run_eager_s."""
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


def losses(ops: list[dict], rows: list[dict], batch: int, arch: str, backend: str = "triton_all",
           activation: str = "gelu", top: int = 3, recipe=None, against: str = "roofline") -> list[dict]:
    """The kernels (and glue) with the largest predicted loss per training step: predicted minus
    the kernel's own roofline (``against`` "roofline") or its floor (``floor_ms``: "floor", the part that
    tuning the kernel can remove under the model), summed over the layers that launch it."""
    if against not in ("roofline", "floor"):
        raise ValueError(f"losses: against {against!r}: expected 'roofline' or 'floor'")
    names = kernels.resolve_names(backend)
    count: dict = {}
    for case, weight in step_calls(batch, activation=activation, recipe=recipe, backend=backend):
        k = (names[case.op], case_key(case))
        count[k] = count.get(k, 0) + weight
    loss: dict[str, float] = {}
    for r in rows:
        if not r["default"] or r["arch"] != arch or r["phase"] not in TRAIN_PHASES:
            continue
        n = count.get((r["impl"], r["case_key"]), 0)
        if n:
            base = r["roofline_ms"] if against == "roofline" else floor_ms(r)
            loss[r["kernel"]] = loss.get(r["kernel"], 0.0) + n * (r["predicted_ms"] - base)
    return [dict(kernel=k, loss_ms=v) for k, v in sorted(loss.items(), key=lambda kv: -kv[1])[:top]]
