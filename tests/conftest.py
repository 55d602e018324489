import os
import pickle
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# Decide the Triton interpreter (kernels/_triton.py) before any test module imports triton: triton
# builds triton.language's own @jit helpers (tl.zeros...) for the mode in force at its import, so a
# test module that imports triton first would leave them compiled-mode under a later interpreter.
import kernels  # noqa: E402,F401

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


def write_idx(path: str, array: np.ndarray, magic: int) -> str:
    """An IDX file (big-endian header: magic, then each dimension) as MNIST ships them."""
    import struct
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(">" + "I" * array.ndim, *array.shape))
        f.write(array.astype(np.uint8).tobytes())
    return path


def synthetic_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable toy MNIST: class k is a bright bar at a class-specific position and angle."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    yy, xx = np.mgrid[0:28, 0:28]
    imgs = np.zeros((n, 28, 28), np.float32)
    for i, y in enumerate(labels):
        d = (xx * np.cos(y * 0.31) + yy * np.sin(y * 0.31)) - (6 + y)
        imgs[i] = 230 * (np.abs(d) < 1.5) + rng.normal(0, 25, (28, 28))
    return np.clip(imgs, 0, 255).astype(np.uint8), labels


def write_mnist_dir(root: str, n_train: int = 300, n_test: int = 100) -> str:
    x, y = synthetic_digits(n_train, 0)
    xt, yt = synthetic_digits(n_test, 1)
    write_idx(os.path.join(root, "train-images-idx3-ubyte"), x, 2051)
    write_idx(os.path.join(root, "train-labels-idx1-ubyte"), y, 2049)
    write_idx(os.path.join(root, "t10k-images-idx3-ubyte"), xt, 2051)
    write_idx(os.path.join(root, "t10k-labels-idx1-ubyte"), yt, 2049)
    return root


@pytest.fixture
def mnist_dir(tmp_path):
    d = tmp_path / "mnist"
    d.mkdir()
    return write_mnist_dir(str(d))
