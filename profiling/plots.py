"""PNG charts (matplotlib, optional: ``pip install -e .[plots]``)."""
from __future__ import annotations

import os


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def plt_missing() -> bool:
    return _plt() is None


MARKERS = "osD^v<>ph*"


def time_per_op(records: list[dict], path: str, title: str) -> str | None:
    """Time of each op case per implementation, one panel per mode: points on a log axis (the
    times span orders of magnitude; a bar's length would mean nothing there), the roofline
    bound as a black dash."""
    plt = _plt()
    if plt is None:
        return None
    modes = sorted({r["mode"] for r in records})
    fig, axes = plt.subplots(len(modes), 1, figsize=(12, 3.5 * len(modes)), squeeze=False)
    for ax, mode in zip(axes[:, 0], modes):
        rs = [r for r in records if r["mode"] == mode]
        labels = list(dict.fromkeys(r["case"] for r in rs))
        impls = list(dict.fromkeys(r["impl"] for r in rs))
        for i, impl in enumerate(impls):
            pts = [(j, r["ms"]) for j, lab in enumerate(labels) for r in rs if r["case"] == lab and r["impl"] == impl]
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=MARKERS[i % len(MARKERS)], s=40,
                       label=impl, zorder=2)
        shaky = [(labels.index(r["case"]), r["ms"]) for r in rs if r.get("unreliable")]
        if shaky:  # repetitions spread > 50%: drawn, but ringed so nobody reads them as firm
            ax.scatter([p[0] for p in shaky], [p[1] for p in shaky], marker="o", s=160, facecolors="none",
                       edgecolors="red", linewidths=1.2, label="unreliable (repetitions disagree)", zorder=4)
        bounds = [(j, next((r.get("bound_ms") for r in rs if r["case"] == lab), None)) for j, lab in enumerate(labels)]
        bounds = [b for b in bounds if b[1] is not None]
        if bounds:
            ax.scatter([b[0] for b in bounds], [b[1] for b in bounds], marker="_", s=400, c="k",
                       label="roofline bound", zorder=3)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)
        ax.set_xlabel("op case (layer, shape N x C x H x W)")
        ax.set_ylabel("ms per call, log scale")
        ax.set_yscale("log")
        ax.set_title(f"{title} [{mode}]")
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def roofline(records: list[dict], path: str, peak, title: str) -> str | None:
    """Achieved TFLOP/s vs arithmetic intensity (FLOP per must-move byte), with the device's roofs.
    Memory-bound ops (no FLOPs counted) are drawn on the bandwidth roof at their achieved GB/s."""
    plt = _plt()
    if plt is None or peak is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.5))
    xs = [10 ** (i / 20) for i in range(-40, 81)]
    ax.plot(xs, [min(peak.fp16_tflops, peak.hbm_gbps * x / 1e3) for x in xs], "k-", label="fp16 roof")
    if peak.fp8_tflops:
        ax.plot(xs, [min(peak.fp8_tflops, peak.hbm_gbps * x / 1e3) for x in xs], "k--", label="fp8 roof")
    for impl in dict.fromkeys(r["impl"] for r in records):
        pts = [(r["flops"] / r["bytes_min"], r["tflops"]) if r["flops"] else (0.1, r["gbps"] * 0.1 / 1e3)
               for r in records if r["impl"] == impl]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=impl, s=18)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FLOP / byte (must-move bytes; memory-bound ops placed at 0.1)")
    ax.set_ylabel("TFLOP/s")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
