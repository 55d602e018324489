"""CIFAR-10 loading and the on-device training loader.

Reads the original "CIFAR-10 python version" layout (pickled batches ``data_batch_1..5`` and
``test_batch`` in ``cifar-10-batches-py/``), from a directory or from the
``cifar-10-python.tar.gz`` archive, checks it, and caches the decoded uint8 tensors in
``<root>/cifar10_uint8.pt``. The same code reads the real data set (``download=True`` fetches
it through torchvision) and the JPEG stand-in written by ``../shared/data/make_cifar10.py``.

Everything after loading happens on the training device: one uint8 tensor per split,
normalised and augmented there (random translate by reflect-padding + random crop, and the
"alternating flip" of airbench), shuffled with a seeded generator, no DataLoader workers.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
from dataclasses import dataclass

import torch
import torch.nn.functional as F

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
BATCH_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
CACHE = "cifar10_uint8.pt"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
CACHE_VERSION = 1

HOW_TO_GET = ("Write the stand-in with `python ../shared/data/make_cifar10.py DIR` or, with internet, "
              "pass --download to fetch the original archive.")


class DataError(RuntimeError):
    """The data set is missing, truncated, corrupt or not CIFAR-10-shaped."""


@dataclass
class Cifar10:
    """A decoded image data set: uint8 images [N, C, H, W] and int64 labels [N], on the CPU
    (CIFAR-10, or MNIST from ``load_mnist`` with its own mean and std)."""
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    checksum: str  # sha256 of the decoded arrays: identifies the data in result records
    source: str
    mean: tuple = CIFAR_MEAN
    std: tuple = CIFAR_STD

    def subset(self, n: int | None) -> "Cifar10":
        """The first ``n`` training images and at most ``n`` test images (for smoke runs)."""
        if not n:
            return self
        if n < 1:
            raise ValueError(f"subset must be a positive number of images, got {n}")
        return Cifar10(self.train_images[:n], self.train_labels[:n], self.test_images[:n],
                       self.test_labels[:n], f"{self.checksum}:subset{n}", self.source, self.mean, self.std)


# ----------------------------------------------------------------------------------- reading

def _decode_batch(raw: bytes, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Unpickle one batch and check its layout; returns (uint8 [n,3,32,32], int64 [n])."""
    try:
        obj = pickle.loads(raw, encoding="bytes")
    except Exception as e:  # truncated files raise EOFError / UnpicklingError / ValueError ...
        raise DataError(f"{name}: truncated or corrupt pickle ({type(e).__name__}: {e}). "
                        f"Delete it and write the data again. {HOW_TO_GET}") from e
    if not isinstance(obj, dict):
        raise DataError(f"{name}: expected a pickled dict with b'data' and b'labels', got {type(obj).__name__}")
    data = obj.get(b"data", obj.get("data"))
    labels = obj.get(b"labels", obj.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{name}: missing key b'data' or b'labels' (keys: {sorted(map(str, obj))})")
    try:
        data_t = torch.as_tensor(data)
    except Exception as e:
        raise DataError(f"{name}: b'data' is not an array ({type(data).__name__})") from e
    if data_t.dtype != torch.uint8 or data_t.dim() != 2 or data_t.shape[1] != 3 * 32 * 32:
        raise DataError(f"{name}: b'data' must be uint8 of shape [N, 3072], "
                        f"got {data_t.dtype} {list(data_t.shape)}")
    labels_t = torch.as_tensor(list(labels), dtype=torch.int64)
    if labels_t.shape != (data_t.shape[0],):
        raise DataError(f"{name}: {data_t.shape[0]} images but {labels_t.numel()} labels")
    if labels_t.numel() and (labels_t.min() < 0 or labels_t.max() > 9):
        bad = labels_t[(labels_t < 0) | (labels_t > 9)][:5].tolist()
        raise DataError(f"{name}: labels must lie in 0..9, found {bad}")
    return data_t.reshape(-1, 3, 32, 32).clone(), labels_t


def _read_from_dir(batch_dir: str) -> dict[str, bytes]:
    raw = {}
    for name in TRAIN_FILES + TEST_FILES:
        path = os.path.join(batch_dir, name)
        if not os.path.isfile(path):
            raise DataError(f"missing file {path}. {HOW_TO_GET}")
        with open(path, "rb") as f:
            raw[name] = f.read()
    return raw


def _read_from_archive(path: str) -> dict[str, bytes]:
    raw = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            for name in TRAIN_FILES + TEST_FILES:
                if name not in members:
                    raise DataError(f"archive {path} has no member {BATCH_DIR}/{name}. {HOW_TO_GET}")
                raw[name] = tar.extractfile(members[name]).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"archive {path} is truncated or corrupt ({type(e).__name__}: {e}). {HOW_TO_GET}") from e
    return raw


def _locate(root: str) -> tuple[str, str] | None:
    """('dir' | 'archive', path) of the data under ``root``, or None."""
    if os.path.isfile(root) and root.endswith((".tar.gz", ".tgz")):
        return "archive", root
    for cand in (os.path.join(root, BATCH_DIR), root):
        if os.path.isdir(cand) and any(os.path.exists(os.path.join(cand, f)) for f in TRAIN_FILES + TEST_FILES):
            return "dir", cand
    if os.path.isfile(os.path.join(root, ARCHIVE)):
        return "archive", os.path.join(root, ARCHIVE)
    return None


def _checksum(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def load_cifar10(root: str = "data", download: bool = False, cache: bool = True) -> Cifar10:
    """Load CIFAR-10 from ``root`` (a directory holding ``cifar-10-batches-py/`` or the .tar.gz
    archive, the batch directory itself, or the archive's path).

    The decoded tensors are cached in ``<root>/cifar10_uint8.pt``; the cache is rebuilt when the
    batch files are newer than it. ``download=True`` fetches the original archive with
    torchvision when nothing is found.
    """
    found = _locate(root)
    if found is None and download:
        try:
            import torchvision
        except ImportError as e:
            raise DataError("--download needs torchvision (pip install torchvision)") from e
        os.makedirs(root, exist_ok=True)
        try:
            torchvision.datasets.CIFAR10(root, train=True, download=True)
        except Exception as e:
            raise DataError(f"download of CIFAR-10 into {root} failed ({type(e).__name__}: {e}); "
                            "without internet, write the stand-in with ../shared/data/make_cifar10.py") from e
        found = _locate(root)
    if found is None:
        raise DataError(f"no CIFAR-10 found in {root!r} (looked for {BATCH_DIR}/ and {ARCHIVE}). {HOW_TO_GET}")
    kind, path = found
    cache_dir = root if os.path.isdir(root) else os.path.dirname(os.path.abspath(root))
    cache_path = os.path.join(cache_dir, CACHE)
    src_mtime = os.path.getmtime(path) if kind == "archive" else max(
        (os.path.getmtime(os.path.join(path, f)) for f in TRAIN_FILES + TEST_FILES
         if os.path.exists(os.path.join(path, f))), default=0.0)
    if cache and os.path.isfile(cache_path) and os.path.getmtime(cache_path) >= src_mtime:
        try:
            blob = torch.load(cache_path, weights_only=True)
            if blob.get("version") == CACHE_VERSION and blob.get("source") == os.path.abspath(path):
                return Cifar10(blob["train_images"], blob["train_labels"], blob["test_images"],
                               blob["test_labels"], blob["checksum"], blob["source"])
        except Exception:
            pass  # an unreadable cache is rebuilt below
    raw = _read_from_dir(path) if kind == "dir" else _read_from_archive(path)
    parts = {name: _decode_batch(raw[name], os.path.join(path, name)) for name in raw}
    train_x = torch.cat([parts[n][0] for n in TRAIN_FILES])
    train_y = torch.cat([parts[n][1] for n in TRAIN_FILES])
    test_x, test_y = parts[TEST_FILES[0]]
    data = Cifar10(train_x, train_y, test_x, test_y, _checksum(train_x, train_y, test_x, test_y),
                   os.path.abspath(path))
    if cache:
        tmp = f"{cache_path}.{os.getpid()}.tmp"  # torchrun ranks may write it at once: write, then rename
        try:
            torch.save({"version": CACHE_VERSION, "source": data.source, "checksum": data.checksum,
                        "train_images": train_x, "train_labels": train_y,
                        "test_images": test_x, "test_labels": test_y}, tmp)
            os.replace(tmp, cache_path)
        except OSError:  # read-only data directory: run without a cache
            if os.path.exists(tmp):
                os.remove(tmp)
    return data


# ----------------------------------------------------------------------------------- MNIST

MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
MNIST_HOW_TO_GET = ("Pass --download to fetch it with torchvision (it lands in DIR/MNIST/raw), or put the four "
                    "original IDX files (optionally .gz) in DIR.")


def read_idx(path: str, kind: str) -> torch.Tensor:
    """One IDX file (optionally gzipped): ``kind`` "images" (magic 2051, uint8 [N, rows, cols])
    or "labels" (magic 2049, uint8 [N]). DataError names the file and the problem."""
    import gzip
    import struct
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: unreadable or corrupt ({type(e).__name__}: {e}). {MNIST_HOW_TO_GET}") from e
    want_magic, ndim = (2051, 3) if kind == "images" else (2049, 1)
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, shorter than its header)")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != want_magic:
        raise DataError(f"{path}: not an IDX {kind} file (magic {magic}, expected {want_magic})")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    n = 1
    for d in dims:
        n *= d
    if len(body) != n:
        raise DataError(f"{path}: header says {'x'.join(map(str, dims))} = {n} bytes of data, the file holds "
                        f"{len(body)} ({'truncated' if len(body) < n else 'trailing bytes'})")
    if kind == "images" and dims[1:] != (28, 28):
        raise DataError(f"{path}: MNIST images are 28x28, this file holds {dims[1]}x{dims[2]}")
    t = torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)
    if kind == "labels" and t.numel() and int(t.max()) > 9:
        raise DataError(f"{path}: labels must lie in 0..9, found {int(t.max())}")
    return t


def _find_mnist(root: str) -> dict[str, str] | None:
    for d in (root, os.path.join(root, "MNIST", "raw"), os.path.join(root, "raw")):
        found = {}
        for key, name in MNIST_FILES.items():
            for cand in (os.path.join(d, name), os.path.join(d, name + ".gz")):
                if os.path.isfile(cand):
                    found[key] = cand
                    break
        if found:
            missing = [MNIST_FILES[k] for k in MNIST_FILES if k not in found]
            if missing:
                raise DataError(f"MNIST in {d} is incomplete: missing {', '.join(missing)}. {MNIST_HOW_TO_GET}")
            return found
    return None


def load_mnist(root: str = "data", download: bool = False) -> Cifar10:
    """MNIST from the original IDX files under ``root`` (``root``, ``root/MNIST/raw`` or
    ``root/raw``; plain or .gz); ``download`` fetches them with torchvision. Images come back
    as uint8 [N, 1, 28, 28] with MNIST's mean and std."""
    found = _find_mnist(root)
    if found is None and download:
        try:
            import torchvision
            torchvision.datasets.MNIST(root, train=True, download=True)
            torchvision.datasets.MNIST(root, train=False, download=True)
        except Exception as e:
            raise DataError(f"download of MNIST into {root} failed ({type(e).__name__}: {e})") from e
        found = _find_mnist(root)
    if found is None:
        raise DataError(f"no MNIST found in {root!r} (looked for {MNIST_FILES['train_images']}[.gz] in it, "
                        f"MNIST/raw/ and raw/). {MNIST_HOW_TO_GET}")
    t = {k: read_idx(p, "images" if k.endswith("images") else "labels") for k, p in found.items()}
    for split in ("train", "test"):
        ni, nl = len(t[f"{split}_images"]), len(t[f"{split}_labels"])
        if ni != nl:
            raise DataError(f"MNIST {split}: {ni} images but {nl} labels ({found[f'{split}_labels']})")
    imgs = {k: v.unsqueeze(1).contiguous() for k, v in t.items() if k.endswith("images")}
    labels = {k: v.long() for k, v in t.items() if k.endswith("labels")}
    return Cifar10(imgs["train_images"], labels["train_labels"], imgs["test_images"], labels["test_labels"],
                   _checksum(imgs["train_images"], labels["train_labels"], imgs["test_images"], labels["test_labels"]),
                   os.path.abspath(os.path.dirname(found["train_images"])), MNIST_MEAN, MNIST_STD)


def load_dataset(name: str, root: str, download: bool = False) -> Cifar10:
    if name == "mnist":
        return load_mnist(root, download)
    if name == "cifar10":
        return load_cifar10(root, download=download)
    raise DataError(f"unknown data set {name!r}")


# ------------------------------------------------------------------------------ on the device

def normalize(images_u8: torch.Tensor, dtype: torch.dtype, mean=None, std=None) -> torch.Tensor:
    """uint8 [N,C,H,W] -> ``dtype`` normalised with the per-channel mean/std (default: CIFAR's;
    MNIST's for one channel), channels_last."""
    c = images_u8.shape[1]
    mean = mean or (CIFAR_MEAN if c == 3 else MNIST_MEAN)
    std = std or (CIFAR_STD if c == 3 else MNIST_STD)
    mean = torch.tensor(mean, device=images_u8.device, dtype=dtype).view(1, c, 1, 1)
    std = torch.tensor(std, device=images_u8.device, dtype=dtype).view(1, c, 1, 1)
    x = (images_u8.to(dtype) / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def random_crop(padded: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random ``size`` x ``size`` crop per image of ``padded`` [N,C,H+2r,W+2r].

    ``unfold`` turns the padded batch into a view [N, C, 2r+1, 2r+1, size, size] of every
    crop; indexing it with one (dy, dx) pair per image gathers the crops in a single kernel.
    """
    n, r2 = padded.shape[0], padded.shape[-1] - size
    dy = torch.randint(0, r2 + 1, (n,), device=padded.device, generator=generator)
    dx = torch.randint(0, r2 + 1, (n,), device=padded.device, generator=generator)
    windows = padded.unfold(2, size, 1).unfold(3, size, 1)
    return windows[torch.arange(n, device=padded.device), :, dy, dx]


class TrainLoader:
    """Batches of augmented training images, made on the device.

    Flip: "alternating" (airbench): at epoch 0 each image gets one random horizontal-flip
    decision; on every odd epoch all images are flipped relative to it. "random": a fresh coin
    per image and epoch. Each epoch takes a fresh random translate (reflect-pad ``translate``
    px, random crop), then optionally cutout (a ``cutout`` square set to 0, airbench96), colour
    jitter (per image: + brightness shift in [-b, b], then x contrast in [1-c, 1+c], hiverge)
    and, from epoch ``cutmix_from``, cutmix (a ``cutmix`` square pasted from another image of
    the epoch, hlb). With cutmix the labels are [N, 2]: the image's and its donor's (the same
    before ``cutmix_from``), so the batch shapes never change. A fresh shuffle per epoch; the
    last partial batch is dropped. Deterministic for a given ``seed``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, dtype: torch.dtype,
                 seed: int = 0, flip: bool = True, translate: int = 2, flip_mode: str = "alternating",
                 cutout: int = 0, jitter: tuple = (0.0, 0.0), cutmix: int = 0, cutmix_from: float = float("inf"),
                 mean=None, std=None):
        if batch_size > len(images):
            raise ValueError(f"batch size {batch_size} is larger than the {len(images)} training images; "
                             "use a larger --subset or a smaller --batch-size")
        if flip_mode not in ("alternating", "random"):
            raise ValueError(f"flip_mode must be 'alternating' or 'random', got {flip_mode!r}")
        self.images = normalize(images, dtype, mean, std)
        self.labels = labels
        self.batch_size = batch_size
        self.translate, self.flip, self.flip_mode = translate, flip, flip_mode
        self.cutout, self.jitter, self.cutmix, self.cutmix_from = cutout, jitter, cutmix, cutmix_from
        self.generator = torch.Generator(device=images.device).manual_seed(seed)
        self.epoch = 0
        self.base = self.images
        if flip and flip_mode == "alternating":
            flip_mask = torch.rand(len(images), device=images.device, generator=self.generator) < 0.5
            self.base = torch.where(flip_mask.view(-1, 1, 1, 1), self.images.flip(-1), self.images)
        if translate > 0:
            self.base = F.pad(self.base, (translate,) * 4, mode="reflect")

    def __len__(self) -> int:
        return len(self.images) // self.batch_size

    def _rand(self, n: int) -> torch.Tensor:
        return torch.rand(n, device=self.images.device, generator=self.generator)

    def _squares(self, n: int, h: int, w: int, size: int) -> torch.Tensor:
        """A bool mask [n, 1, h, w] with one random size x size square per image."""
        dev = self.images.device
        y = torch.randint(0, h - size + 1, (n,), device=dev, generator=self.generator).view(-1, 1, 1, 1)
        x = torch.randint(0, w - size + 1, (n,), device=dev, generator=self.generator).view(-1, 1, 1, 1)
        ry = torch.arange(h, device=dev).view(1, 1, h, 1)
        rx = torch.arange(w, device=dev).view(1, 1, 1, w)
        return (ry >= y) & (ry < y + size) & (rx >= x) & (rx < x + size)

    def epoch_images(self) -> torch.Tensor:
        x = self.base
        n, _, h, w = self.images.shape
        if self.translate > 0:
            x = random_crop(x, w, self.generator)
        if self.flip and self.flip_mode == "alternating" and self.epoch % 2 == 1:
            x = x.flip(-1)
        if self.flip and self.flip_mode == "random":
            x = torch.where((self._rand(n) < 0.5).view(-1, 1, 1, 1), x.flip(-1), x)
        if self.cutout:
            x = x.masked_fill(self._squares(n, h, w, self.cutout), 0)
        b, c = self.jitter
        if b or c:
            shift = ((self._rand(n) * 2 - 1) * b).view(-1, 1, 1, 1).to(x.dtype)
            scale = ((self._rand(n) * 2 - 1) * c + 1).view(-1, 1, 1, 1).to(x.dtype)
            x = (x + shift) * scale
        return x.contiguous(memory_format=torch.channels_last)

    def epoch_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.cutmix:
            return images, self.labels
        n, _, h, w = images.shape
        donors = torch.randperm(n, device=images.device, generator=self.generator)
        if self.epoch >= self.cutmix_from:
            images = torch.where(self._squares(n, h, w, self.cutmix), images[donors], images)
            images = images.contiguous(memory_format=torch.channels_last)
            return images, torch.stack([self.labels, self.labels[donors]], 1)
        return images, torch.stack([self.labels, self.labels], 1)

    def next_epoch(self) -> "Epoch":
        """The next epoch's augmented images and its batch order (len(self) full batches)."""
        images, labels = self.epoch_labels(self.epoch_images())
        self.epoch += 1
        order = torch.randperm(len(images), device=images.device, generator=self.generator)
        return Epoch(images, labels, order[:len(self) * self.batch_size].view(len(self), self.batch_size))

    def __iter__(self):
        return iter(self.next_epoch())


@dataclass
class Epoch:
    """One epoch of training data on the device: ``images`` [N,3,H,W] (augmented,
    channels_last), ``labels`` [N] and ``order`` [steps, batch]: batch i is
    images[order[i]], labels[order[i]]."""
    images: torch.Tensor
    labels: torch.Tensor
    order: torch.Tensor

    def __len__(self) -> int:
        return len(self.order)

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.order[i]
        return self.images[idx], self.labels[idx]

    def __iter__(self):
        return (self.batch(i) for i in range(len(self)))
