"""The published training recipes, each in one place.

Numbers from the airbench repository (KellerJordan/cifar10-airbench: airbench94_muon.py and
legacy/airbench94.py) and its paper (arXiv 2404.00498); see ../shared/RECIPES.md.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    name: str
    optimizer: str               # "muon_sgd" | "sgd_lookahead" (model/optim.py)
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
    whiten_eps: float = 5e-4
    whiten_images: int = 5000
    flip: bool = True
    translate: int = 2
    # muon_sgd
    bias_lr: float = 0.0
    head_lr: float = 0.0
    muon_lr: float = 0.0
    muon_momentum: float = 0.0
    # sgd_lookahead
    lr: float = 0.0              # per 1024 examples, decoupled from momentum
    bias_scaler: float = 1.0

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


AIRBENCH94_MUON = Recipe(
    name="airbench94_muon", optimizer="muon_sgd",
    batch_size=2000, epochs=8, whiten_bias_epochs=3, label_smoothing=0.2,
    head_scale=1 / 256, head_unit_std=True, zero_whiten_bias=False,
    sgd_momentum=0.85, weight_decay=2e-6,
    bias_lr=0.053, head_lr=0.67, muon_lr=0.24, muon_momentum=0.6,
)

AIRBENCH94 = Recipe(
    name="airbench94", optimizer="sgd_lookahead",
    batch_size=1024, epochs=9.9, whiten_bias_epochs=3, label_smoothing=0.2,
    head_scale=1 / 9, head_unit_std=False, zero_whiten_bias=True,
    sgd_momentum=0.85, weight_decay=0.0153, lr=11.5, bias_scaler=64.0,
)

RECIPES = {r.name: r for r in (AIRBENCH94_MUON, AIRBENCH94)}
DEFAULT = AIRBENCH94_MUON.name


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]
