"""A learnable toy CIFAR-10 in the original python-pickle layout, for tests and for the acceptance
script's CPU smoke run (``python -m profiling accept --quick``) where no data set is at hand."""
from __future__ import annotations

import os
import pickle

import numpy as np


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, [n, 3072]) and labels: each class has its own colour and stripe
    direction, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    palette = np.random.default_rng(1234).uniform(40, 215, (10, 3))  # the same for every split
    yy, xx = np.mgrid[0:32, 0:32]
    imgs = np.empty((n, 3, 32, 32), np.float32)
    for i, y in enumerate(labels):
        stripes = np.sin((xx if y % 2 else yy) * (0.3 + 0.1 * (y // 2)) + rng.uniform(0, 6.28)) * 30
        imgs[i] = palette[y][:, None, None] + stripes[None] + rng.normal(0, 20, (3, 32, 32))
    return np.clip(imgs, 0, 255).astype(np.uint8).reshape(n, 3072), labels


def write_cifar_dir(root: str, n_per_batch: int = 40, seed: int = 0) -> str:
    """Write a small data set in the original python layout under root/cifar-10-batches-py
    (five training batches and a test batch of ``n_per_batch`` images each)."""
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        x, y = synthetic_images(n_per_batch, seed * 100 + k)
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump({b"data": x, b"labels": [int(v) for v in y], b"batch_label": name.encode(),
                         b"filenames": [b"f.png"] * len(y)}, f)
    return d
