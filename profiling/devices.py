"""Peak numbers of the GPUs the lab targets, for roofline bounds and "fraction of peak".

Dense (no sparsity) tensor-core throughput and HBM bandwidth from NVIDIA's data sheets.
Detected from torch.cuda.get_device_name(); ``--peak NAME`` overrides the detection.

The static performance model (profiling/perfmodel.py) also needs per-SM rates: the clock is
the one at which the data-sheet tensor-core peak holds (peak = SMs x 4 tensor cores x dense
FMAs per clock x 2 x clock: 1.41 GHz on A100, 1.83 GHz on H100 SXM), every SM issues at most
4 warp-instructions per clock (one per scheduler) and reads 128 bytes of shared memory per
clock. The L2 figures bound how much re-reading across output tiles costs: the size from the
data sheets, the bandwidth from published microbenchmarks and our own measurements. A100: about
4-5 TB/s (the middle is used). H100 SXM: 9 TB/s. The microbenchmarks' 5.5-7 TB/s were measured
on the PCIe card (114 SMs at 1.755 GHz); scaled to the SXM's 132 SMs at 1.98 GHz they are
7.2-9.1 TB/s. Our conv launches on an H200 (the same L2 and clocks; second H200 session's traces)
moved their L2 bytes at up to 10.3 TB/s, which the model's ceiling (this figure times
perfmodel.L2_EFFICIENCY) must not be below. Until 2026-12-01 the figure was 6 TB/s, a ceiling
that measured launch beat by 1.44x.
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
    clock_ghz: float = 1.83        # the clock of the data-sheet tensor-core peak
    l2_mb: float = 50.0            # L2 cache size (MB)
    l2_gbps: float = 9000.0        # L2 read bandwidth (GB/s): see the module docstring (H100 SXM)
    smem_per_sm_kib: int = 228     # shared memory per SM (KiB)
    smem_bytes_per_clk: int = 128  # shared-memory bandwidth per SM
    issue_per_clk: int = 4         # warp-instructions issued per SM per clock (4 schedulers)

    def tc_flops_per_clk(self, fp8: bool = False) -> float:
        """Dense tensor-core FLOPs per SM per clock (fp16/bf16, or fp8)."""
        tflops = self.fp8_tflops if fp8 and self.fp8_tflops else self.fp16_tflops
        return tflops * 1e12 / (self.sms * self.clock_ghz * 1e9)


_A100 = dict(capability=(8, 0), clock_ghz=1.41, l2_mb=40.0, l2_gbps=4500.0, smem_per_sm_kib=164)
PEAKS = {
    "A100-SXM4-80GB": Peak("A100-SXM4-80GB", 2039, 312, None, 108, 163, **_A100),
    "A100-SXM4-40GB": Peak("A100-SXM4-40GB", 1555, 312, None, 108, 163, **_A100),
    "A100-PCIE-80GB": Peak("A100-PCIE-80GB", 1935, 312, None, 108, 163, **_A100),
    "A100-PCIE-40GB": Peak("A100-PCIE-40GB", 1555, 312, None, 108, 163, **_A100),
    "H100-SXM": Peak("H100-SXM", 3350, 989.4, 1978.9, 132, 227),
    "H100-PCIe": Peak("H100-PCIe", 2000, 756.5, 1513, 114, 227, clock_ghz=1.62),
    "H100-NVL": Peak("H100-NVL", 3900, 835, 1670, 132, 227, clock_ghz=1.544),
    "H200": Peak("H200", 4800, 989.4, 1978.9, 132, 227),
}
# the short names accepted by --peak
ALIASES = {"A100": "A100-SXM4-80GB", "H100": "H100-SXM", "H200": "H200"}


def lookup(name: str) -> Peak:
    """A peak table entry by name or alias, in any case (``h100`` = ``H100`` = ``H100-SXM``)."""
    by_lower = {k.lower(): v for k, v in {**{k: k for k in PEAKS}, **ALIASES}.items()}
    key = by_lower.get(name.strip().lower())
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
