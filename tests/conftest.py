import os
import pickle
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(min(2, os.cpu_count() or 1))


def synthetic_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable toy CIFAR: each class has its own colour and stripe direction, plus noise."""
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
    """Write a small data set in the original python layout under root/cifar-10-batches-py."""
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        x, y = synthetic_images(n_per_batch, seed * 100 + k)
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump({b"data": x, b"labels": [int(v) for v in y], b"batch_label": name.encode(),
                         b"filenames": [b"f.png"] * len(y)}, f)
    return d


@pytest.fixture
def cifar_dir(tmp_path):
    write_cifar_dir(str(tmp_path))
    return str(tmp_path)
