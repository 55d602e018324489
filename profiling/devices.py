"""Peak numbers of the GPUs the lab targets, for roofline bounds and "fraction of peak".

Dense (no sparsity) tensor-core throughput and HBM bandwidth from NVIDIA's data sheets.
Detected from torch.cuda.get_device_name(); ``--peak NAME`` overrides the detection.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    name: str
    hbm_gbps: float            # GB/s (1e9 bytes)
    fp16_tflops: float         # dense fp16/bf16 tensor-core TFLOP/s, fp32 accumulate
    fp8_tflops: float | None   # dense fp8 TFLOP/s; None: no fp8 tensor cores
    sms: int
    smem_per_block_kib: int    # max opt-in shared memory per block
    regs_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    capability: tuple[int, int] = (9, 0)


PEAKS = {
    "A100-SXM4-80GB": Peak("A100-SXM4-80GB", 2039, 312, None, 108, 163, capability=(8, 0)),
    "A100-SXM4-40GB": Peak("A100-SXM4-40GB", 1555, 312, None, 108, 163, capability=(8, 0)),
    "A100-PCIE-80GB": Peak("A100-PCIE-80GB", 1935, 312, None, 108, 163, capability=(8, 0)),
    "A100-PCIE-40GB": Peak("A100-PCIE-40GB", 1555, 312, None, 108, 163, capability=(8, 0)),
    "H100-SXM": Peak("H100-SXM", 3350, 989.4, 1978.9, 132, 227),
    "H100-PCIe": Peak("H100-PCIe", 2000, 756.5, 1513, 114, 227),
    "H100-NVL": Peak("H100-NVL", 3900, 835, 1670, 132, 227),
    "H200": Peak("H200", 4800, 989.4, 1978.9, 132, 227),
}
# the short names accepted by --peak
ALIASES = {"A100": "A100-SXM4-80GB", "H100": "H100-SXM", "H200": "H200"}


def lookup(name: str) -> Peak:
    key = ALIASES.get(name, name)
    if key not in PEAKS:
        raise ValueError(f"unknown device {name!r}; known: {', '.join(sorted(set(PEAKS) | set(ALIASES)))}")
    return PEAKS[key]


def detect(device_name: str) -> Peak | None:
    """Map a CUDA device name (e.g. 'NVIDIA H100 80GB HBM3') to its peak numbers, or None."""
    n = device_name.upper().replace(" ", "-")
    if "H200" in n:
        return PEAKS["H200"]
    if "H100" in n:
        if "PCIE" in n:
            return PEAKS["H100-PCIe"]
        if "NVL" in n:
            return PEAKS["H100-NVL"]
        return PEAKS["H100-SXM"]
    if "A100" in n:
        pcie = "PCIE" in n
        big = "80GB" in n
        return PEAKS[f"A100-{'PCIE' if pcie else 'SXM4'}-{'80GB' if big else '40GB'}"]
    return None
