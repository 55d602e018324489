"""A short training run with --backend triton follows eager's losses.

Tolerance: the per-epoch training losses agree within 2e-3 (absolute, on losses ~2.3). The
kernels agree with the reference to ~1e-6 per op in fp32; Muon's bf16 Newton-Schulz step
amplifies such differences a little over a few steps (measured: < 3e-4 after 6 steps).
"""
import torch

import kernels
from model.net import CifarNet
from model.recipes import AIRBENCH94_MUON
from model.training.trainer import train_run

from test_train import small_problem


DEV = "cuda" if torch.cuda.is_available() else "cpu"  # compiled kernels on a GPU, the interpreter on a CPU


def test_triton_backend_training_matches_eager():
    data = small_problem(96, 32, DEV)
    recipe = AIRBENCH94_MUON.replace(batch_size=32, whiten_images=96)
    results = {}
    for backend in ("eager", "triton"):
        net = CifarNet(kernels.resolve(backend), widths=(8, 16, 16), head_scale=recipe.head_scale).to(DEV)
        results[backend] = train_run(net, data, recipe, seed=0, dtype=torch.float32, epochs=2, tta_level=1)
    e, t = results["eager"], results["triton"]
    assert e["steps"] == t["steps"] == 6
    for re, rt in zip(e["per_epoch"], t["per_epoch"]):
        assert abs(re["train_loss"] - rt["train_loss"]) < 2e-3, (e["per_epoch"], t["per_epoch"])
    assert abs(e["accuracy"] - t["accuracy"]) <= 2 / 32  # at most two of 32 test images flip
