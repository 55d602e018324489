import os
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

from model.synthetic import synthetic_images, write_cifar_dir  # noqa: E402,F401  (the tests import them from here)

torch.set_num_threads(min(2, os.cpu_count() or 1))

# Modules that compile kernels for a GPU target in-process: they need Triton in compiled mode, which
# the interpreter chosen above rules out here (profiling/cubin.py require_compiled_mode), so
# tests/profiling/test_compiled_mode.py runs them in a process of their own with TRITON_INTERPRET=0.
COMPILED_MODE_MODULES = ["profiling/test_predict.py", "profiling/test_calibration.py"]
collect_ignore = [] if os.environ.get("SPEEDRUN_COMPILED_MODE_TESTS") == "1" else COMPILED_MODE_MODULES


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 in full precision on a GPU: cuDNN's convs and cuBLAS run fp32 in TF32 by default, and so
    do the Triton convs (they follow torch.backends.cudnn.allow_tf32), which puts an fp32 comparison
    3e-4 to 8e-2 off its 1e-5 tolerance (first GPU run, H200). The tests compare fp32 exactly; the
    TF32 switch itself is tested in tests/kernels/test_conv.py. No effect on a CPU."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


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
