"""The published training recipes of the speedrun lineage, each in one place.

    airbench94_muon  94.01% in 2.59 s (A100)   KellerJordan/cifar10-airbench airbench94_muon.py
    airbench94       94.01% in 3.83 s (A100)   KellerJordan/cifar10-airbench legacy/airbench94.py
    hiverge          94.02% in 1.98 s (A100)   hiverge/cifar10-speedrun cifar10_speedrun.py (the record)
    airbench95       95.01% in 10.4 s (A100)   KellerJordan/cifar10-airbench legacy/airbench95.py
    airbench96       96.03% in 34.7 s (A100)   KellerJordan/cifar10-airbench legacy/airbench96.py
    hlb              94% in 6.3 s (A100)       tysam-code/hlb-CIFAR10 main.py
    mnist            99% in 0.76 s (GTX 1660 Ti)  the fast-MNIST steps (see README)

Numbers from the repositories' scripts and the airbench paper (arXiv 2404.00498); see
../shared/RECIPES.md and README "Recipes" for what differs and why. Every recipe runs through
the same op registry, so each kernel, --compile mode and --cuda-graph applies to all of them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Published:
    """What a recipe's authors report: the figure to print beside ours."""
    accuracy: float          # % on the original test set (mean)
    time_s: float
    device: str
    runs: int | None
    source: str

    def line(self) -> str:
        n = f", mean of {self.runs} runs" if self.runs else ""
        return f"published: {self.accuracy:.2f}% in {self.time_s:g} s on {self.device}{n} ({self.source})"


@dataclass(frozen=True)
class Recipe:
    name: str
    optimizer: str               # "muon_sgd" | "sgd_lookahead" | "sgd_onecycle" (model/optim.py)
    batch_size: int
    epochs: float
    whiten_bias_epochs: float    # the whitening bias trains for this many epochs, then freezes
    label_smoothing: float
    head_scale: float            # logits = head(x) * head_scale
    head_unit_std: bool          # rescale the head weight to unit std at init
    zero_whiten_bias: bool       # whitening bias initialised at 0 (else nn.Conv2d's default)
    sgd_momentum: float
    weight_decay: float          # muon_sgd: per example (x batch = PyTorch wd * lr); sgd_lookahead: decoupled, per 1024 examples
    tta_level: int = 2
    activation: str = "gelu"
    bn_momentum: float = 0.4     # PyTorch convention: new = 0.6 * old + 0.4 * batch
    bn_eps: float = 1e-12
    bn_half: bool = False        # BatchNorm parameters and statistics in the network dtype (hiverge) instead of fp32
    whiten_eps: float = 5e-4
    whiten_images: int = 5000
    flip: bool = True
    flip_mode: str = "alternating"   # "alternating" (airbench) or "random" (a fresh coin per image and epoch)
    translate: int = 2
    cutout: int = 0              # a random square of this size set to 0 per image and epoch (airbench96)
    jitter_brightness: float = 0.0   # per-image brightness shift in [-b, b] per epoch (hiverge)
    jitter_contrast: float = 0.0     # per-image contrast scale in [1-c, 1+c] per epoch (hiverge)
    cutmix: int = 0              # hlb: a square of this size from another image, labels mixed by area
    cutmix_epochs: float = 0.0   # ... during the last this many epochs
    loss_scale: float = 1.0      # the summed loss is multiplied by this (hlb: 512 / batch)
    # network
    network: str = "airbench"    # "airbench", "airbench96" (3 convs per group, residual), "hlb", "mnist"
    widths: tuple = (64, 256, 256)
    dropout: float = 0.0
    # muon_sgd
    bias_lr: float = 0.0
    head_lr: float = 0.0
    muon_lr: float = 0.0
    muon_momentum: float = 0.0
    muon_weight_decay: float = 0.0   # decoupled, per example: p *= 1 - lr * wd * batch after each step (hiverge)
    ns_coeffs: tuple = (3.4445, -4.7750, 2.0315)
    ns_batched: bool = False     # all conv filters orthogonalised as one zero-padded batch (hiverge)
    renorm: str = "every"        # "every" step, or "adaptive": every 2 + int(15 * progress) steps (hiverge)
    # sgd_lookahead / sgd_onecycle
    lr: float = 0.0              # sgd_lookahead: per 1024 examples, decoupled from momentum; sgd_onecycle: PyTorch lr
    bias_scaler: float = 1.0
    lr_start: float = 0.2        # sgd_lookahead: lr factor at step 0
    lr_peak_frac: float = 0.23   # fraction of the steps to the peak
    lr_end: float = 0.07         # lr factor at the last step
    lookahead_every: int = 5
    lookahead_from_epoch: float = 0.0   # hlb: the EMA starts here (its first call takes a snapshot)
    # reporting
    tta_gate: float = 0.0        # > 0: level-2 TTA only for this fraction of least confident test images (hiverge)
    dataset: str = "cifar10"     # "cifar10" or "mnist"
    target: float = 0.94         # the accuracy the recipe is built to reach (original data)
    published: Published | None = field(default=None, compare=False)

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


AIRBENCH_SOURCE = "KellerJordan/cifar10-airbench"

AIRBENCH94_MUON = Recipe(
    name="airbench94_muon", optimizer="muon_sgd",
    batch_size=2000, epochs=8, whiten_bias_epochs=3, label_smoothing=0.2,
    head_scale=1 / 256, head_unit_std=True, zero_whiten_bias=False,
    sgd_momentum=0.85, weight_decay=2e-6,
    bias_lr=0.053, head_lr=0.67, muon_lr=0.24, muon_momentum=0.6,
    published=Published(94.01, 2.59, "A100", 200, f"{AIRBENCH_SOURCE} airbench94_muon.py"),
)

AIRBENCH94 = Recipe(
    name="airbench94", optimizer="sgd_lookahead",
    batch_size=1024, epochs=9.9, whiten_bias_epochs=3, label_smoothing=0.2,
    head_scale=1 / 9, head_unit_std=False, zero_whiten_bias=True,
    sgd_momentum=0.85, weight_decay=0.0153, lr=11.5, bias_scaler=64.0,
    published=Published(94.01, 3.83, "A100", None, f"{AIRBENCH_SOURCE} legacy/airbench94.py"),
)

# the record (hiverge/cifar10-speedrun, Oct 2025): airbench94_muon's network and loader with
# SiLU in the groups, everything fp16 (BatchNorm too), colour jitter, batched Newton-Schulz,
# decoupled Muon weight decay, sparse renormalisation and confidence-gated TTA
HIVERGE = AIRBENCH94_MUON.replace(
    name="hiverge", batch_size=1536, epochs=7.65, whiten_bias_epochs=0.2, label_smoothing=0.09,
    activation="silu", bn_momentum=1 - 0.5566, bn_half=True, whiten_images=960,
    jitter_brightness=0.1399, jitter_contrast=0.1308,
    sgd_momentum=0.825, weight_decay=1.0418e-6, bias_lr=0.0573, head_lr=0.5415,
    muon_lr=0.205, muon_momentum=0.655, muon_weight_decay=1.0418e-6,
    ns_coeffs=(3.4576, -4.7391, 2.0843), ns_batched=True, renorm="adaptive", tta_gate=0.25,
    published=Published(94.02, 1.98, "A100-SXM4-80GB", 2000, "hiverge/cifar10-speedrun cifar10_speedrun.py"),
)

AIRBENCH95 = AIRBENCH94.replace(
    name="airbench95", epochs=15, lr=10.0, widths=(128, 384, 384), target=0.95,
    published=Published(95.01, 10.4, "A100", 200, f"{AIRBENCH_SOURCE} legacy/airbench95.py"),
)

AIRBENCH96 = AIRBENCH94.replace(
    name="airbench96", epochs=37, lr=9.0, weight_decay=0.012, widths=(128, 384, 512), network="airbench96",
    bn_momentum=0.1, translate=4, cutout=12, lr_peak_frac=0.1, lr_end=0.0, target=0.96,
    published=Published(96.03, 34.7, "A100", 400, f"{AIRBENCH_SOURCE} legacy/airbench96.py"),
)

HLB = Recipe(
    name="hlb", optimizer="sgd_onecycle", network="hlb", widths=(64, 256, 512),
    batch_size=1024, epochs=12.6, whiten_bias_epochs=0, label_smoothing=0.2,
    head_scale=1 / 9, head_unit_std=False, zero_whiten_bias=True,
    sgd_momentum=0.85, weight_decay=1.05 * 6.45e-4,  # PyTorch weight_decay = this x batch (coupled)
    lr=1.64 / 512, bias_scaler=48.0, lr_start=0.0, lr_peak_frac=0.23, lr_end=0.05,
    bn_momentum=0.5, whiten_eps=1e-2, whiten_images=50000, flip_mode="random", translate=2,
    cutmix=3, cutmix_epochs=5, loss_scale=0.5, lookahead_every=5, lookahead_from_epoch=2, tta_level=1,
    published=Published(94.0, 6.3, "A100", None, "tysam-code/hlb-CIFAR10 main.py"),
)

MNIST = Recipe(
    name="mnist", optimizer="sgd_onecycle", network="mnist", dataset="mnist", widths=(32, 64, 64), dropout=0.2,
    batch_size=2048, epochs=8, whiten_bias_epochs=0, label_smoothing=0.1,
    head_scale=1.0, head_unit_std=False, zero_whiten_bias=True,
    sgd_momentum=0.9, weight_decay=5e-4 / 2048, lr=0.4 / 2048, bias_scaler=1.0, lr_start=0.0, lr_peak_frac=0.25,
    lr_end=0.0, bn_momentum=0.2, flip=False, translate=0, tta_level=0, whiten_images=0, target=0.99,
    published=Published(99.0, 0.76, "GTX 1660 Ti", None, "fast-MNIST steps (early stop at the target)"),
)

RECIPES = {r.name: r for r in (AIRBENCH94_MUON, AIRBENCH94, HIVERGE, AIRBENCH95, AIRBENCH96, HLB, MNIST)}
DEFAULT = AIRBENCH94_MUON.name
NETWORKS = ("airbench", "airbench96", "hlb", "mnist")
OPTIMIZERS = ("muon_sgd", "sgd_lookahead", "sgd_onecycle")


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def recipes_help() -> str:
    return "recipes (--recipe):\n" + "\n".join(
        f"  {r.name:<16} {r.published.line().replace('published: ', '')}" for r in RECIPES.values())
