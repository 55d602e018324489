import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from model.data import CACHE, DataError, TrainLoader, load_cifar10, normalize, random_crop

from conftest import write_cifar_dir


def test_load_dir_shapes_and_cache(cifar_dir):
    d = load_cifar10(cifar_dir)
    assert d.train_images.shape == (200, 3, 32, 32) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (40, 3, 32, 32)
    assert d.train_labels.dtype == torch.int64 and 0 <= int(d.train_labels.min()) and int(d.train_labels.max()) <= 9
    assert os.path.isfile(os.path.join(cifar_dir, CACHE))
    again = load_cifar10(cifar_dir)  # from the cache
    assert again.checksum == d.checksum and torch.equal(again.train_images, d.train_images)


def test_pixel_layout_is_rgb_planes(tmp_path):
    bdir = write_cifar_dir(str(tmp_path))
    with open(os.path.join(bdir, "data_batch_1"), "rb") as f:
        raw = pickle.load(f)[b"data"]
    d = load_cifar10(str(tmp_path), cache=False)
    # row 0, plane G (1024..2047), pixel (y=3, x=5)
    assert int(d.train_images[0, 1, 3, 5]) == int(raw[0, 1024 + 3 * 32 + 5])


def test_load_archive(tmp_path):
    write_cifar_dir(str(tmp_path / "src"))
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        t.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    by_dir = load_cifar10(str(tmp_path / "src"), cache=False)
    os.makedirs(tmp_path / "only_archive")
    os.replace(path, tmp_path / "only_archive" / "cifar-10-python.tar.gz")
    by_archive = load_cifar10(str(tmp_path / "only_archive"))
    assert by_archive.checksum == by_dir.checksum


def test_missing_data_says_how_to_fix(tmp_path):
    with pytest.raises(DataError, match="make_cifar10.py"):
        load_cifar10(str(tmp_path))


def test_missing_batch_file(cifar_dir):
    os.remove(os.path.join(cifar_dir, "cifar-10-batches-py", "data_batch_3"))
    with pytest.raises(DataError, match="missing file .*data_batch_3"):
        load_cifar10(cifar_dir)


def test_truncated_pickle(cifar_dir):
    p = os.path.join(cifar_dir, "cifar-10-batches-py", "test_batch")
    blob = open(p, "rb").read()
    open(p, "wb").write(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="test_batch: truncated or corrupt"):
        load_cifar10(cifar_dir)


def _rewrite(cifar_dir, name, changes):
    p = os.path.join(cifar_dir, "cifar-10-batches-py", name)
    with open(p, "rb") as f:
        obj = pickle.load(f)
    obj.update(changes)
    with open(p, "wb") as f:
        pickle.dump(obj, f)


def test_wrong_shape(cifar_dir):
    _rewrite(cifar_dir, "data_batch_2", {b"data": np.zeros((40, 1000), np.uint8)})
    with pytest.raises(DataError, match=r"data_batch_2: b'data' must be uint8 of shape \[N, 3072\]"):
        load_cifar10(cifar_dir)


def test_wrong_dtype(cifar_dir):
    _rewrite(cifar_dir, "data_batch_2", {b"data": np.zeros((40, 3072), np.float32)})
    with pytest.raises(DataError, match="uint8"):
        load_cifar10(cifar_dir)


def test_label_out_of_range(cifar_dir):
    _rewrite(cifar_dir, "data_batch_4", {b"labels": [11] + [0] * 39})
    with pytest.raises(DataError, match=r"labels must lie in 0..9, found \[11\]"):
        load_cifar10(cifar_dir)


def test_label_count_mismatch(cifar_dir):
    _rewrite(cifar_dir, "data_batch_1", {b"labels": [0] * 39})
    with pytest.raises(DataError, match="40 images but 39 labels"):
        load_cifar10(cifar_dir)


def test_corrupt_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_cifar10(str(tmp_path))


def test_stale_cache_is_rebuilt(cifar_dir):
    first = load_cifar10(cifar_dir)
    _rewrite(cifar_dir, "test_batch", {b"labels": [3] * 40})
    cache = os.path.join(cifar_dir, CACHE)
    os.utime(cache, (1, 1))  # older than the batches
    second = load_cifar10(cifar_dir)
    assert second.checksum != first.checksum and bool((second.test_labels == 3).all())


def test_subset(cifar_dir):
    d = load_cifar10(cifar_dir).subset(30)
    assert len(d.train_labels) == 30 and len(d.test_labels) == 30
    with pytest.raises(ValueError):
        load_cifar10(cifar_dir).subset(-1)


def test_random_crop_matches_slicing():
    x = torch.randn(6, 3, 36, 36)
    g = torch.Generator().manual_seed(3)
    out = random_crop(x, 32, g)
    g = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 5, (6,), generator=g)
    dx = torch.randint(0, 5, (6,), generator=g)
    for i in range(6):
        assert torch.equal(out[i], x[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32])


def _loader(seed, **kw):
    imgs = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(64) % 10
    return TrainLoader(imgs, labels, 16, torch.float32, seed=seed, **kw)


def test_loader_deterministic_per_seed():
    torch.manual_seed(0)
    a = [b[0] for b in _loader(1)]
    torch.manual_seed(0)
    b = [b[0] for b in _loader(1)]
    torch.manual_seed(0)
    c = [b[0] for b in _loader(2)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_loader_batches_and_labels():
    ld = _loader(0)
    batches = list(ld)
    assert len(batches) == 4 and all(x.shape == (16, 3, 32, 32) for x, _ in batches)
    assert batches[0][0].is_contiguous(memory_format=torch.channels_last)
    # every example appears once per epoch
    assert sorted(torch.cat([y for _, y in batches]).tolist()) == sorted((torch.arange(64) % 10).tolist())


def test_alternating_flip():
    ld = _loader(0, translate=0)
    e0 = ld.epoch_images()
    ld.epoch = 1
    e1 = ld.epoch_images()
    assert torch.equal(e1, e0.flip(-1))
    base = normalize(ld.images.new_zeros(0, 3, 32, 32, dtype=torch.uint8), torch.float32)
    assert base.shape == (0, 3, 32, 32)
    # about half of the images are flipped at epoch 0
    flipped = [(not torch.equal(e0[i], ld.images[i])) for i in range(64)]
    assert 16 < sum(flipped) < 48


def test_batch_larger_than_data():
    with pytest.raises(ValueError, match="batch size"):
        TrainLoader(torch.zeros(8, 3, 32, 32, dtype=torch.uint8), torch.zeros(8, dtype=torch.long), 16,
                    torch.float32)
