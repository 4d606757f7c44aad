"""Data sets: fixed seeded splits, offline loaders, CIFAR on-disk format, clear errors."""

import pickle

import numpy as np
import pytest
import torch

from fedqdnn.data import load_cifar, load_dataset, load_digits, load_mnist1d
from fedqdnn.data_splits import DatasetFilesMissing


def test_digits_split_is_fixed_and_stratified():
    a, b = load_digits(0), load_digits(0)
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.y_test, load_digits(1).y_test)
    counts = torch.bincount(a.y_test, minlength=10)
    assert counts.min() >= 35  # stratified: every class about 36 times


def test_digits_cache_returns_exactly_the_split(tmp_path):
    fresh = load_digits(1, cache_dir=tmp_path)
    (path,) = tmp_path.glob("digits-seed1-test0.2-sklearn*.npz")
    cached = load_digits(1, cache_dir=tmp_path)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(fresh, name), getattr(cached, name))
    assert cached.x_train.dtype == torch.float32 and cached.y_train.dtype == torch.int64
    path.write_bytes(b"truncated")  # a broken cache file is made again
    assert torch.equal(load_digits(1, cache_dir=tmp_path).x_test, fresh.x_test)


def test_mnist1d_sample_count_and_rng_restored(tmp_path):
    np.random.seed(123)
    expected_next = np.random.rand()
    np.random.seed(123)
    data = load_mnist1d(num_samples=500, cache_dir=tmp_path)
    assert np.random.rand() == expected_next  # generator did not disturb the caller's RNG
    assert data.x_train.shape == (400, 1, 40) and data.x_test.shape == (100, 1, 40)
    assert set(data.y_train.tolist()) == set(range(10))


def test_mnist1d_cache_returns_exactly_the_generated_data(tmp_path):
    fresh = load_mnist1d(num_samples=300, data_seed=2, cache_dir=tmp_path)
    assert (tmp_path / "mnist1d-300-seed44.npz").is_file()
    cached = load_mnist1d(num_samples=300, data_seed=2, cache_dir=tmp_path)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(fresh, name), getattr(cached, name))
    (tmp_path / "mnist1d-300-seed44.npz").write_bytes(b"truncated")  # a broken cache file
    assert torch.equal(load_mnist1d(300, 2, tmp_path).x_train, fresh.x_train)


def _write_cifar(root, num_classes, n_train=6, n_test=4):
    """Write tiny files in CIFAR's python layout (protocol-2 pickles of dicts, as shipped)."""
    rng = np.random.default_rng(0)
    label_key = "labels" if num_classes == 10 else "fine_labels"
    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_file, meta, meta_key = "test_batch", "batches.meta", "label_names"
    else:
        folder = root / "cifar-100-python"
        train_files, test_file, meta, meta_key = ["train"], "test", "meta", "fine_label_names"
    folder.mkdir(parents=True)

    def batch(n, offset):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [(offset + i) % num_classes for i in range(n)]
        return {"data": data, label_key: labels}

    train = []
    for i, name in enumerate(train_files):
        b = batch(n_train, i)
        train.append(b)
        (folder / name).write_bytes(pickle.dumps(b, protocol=2))
    test = batch(n_test, 0)
    (folder / test_file).write_bytes(pickle.dumps(test, protocol=2))
    names = [f"c{i}" for i in range(num_classes)]
    (folder / meta).write_bytes(pickle.dumps({meta_key: names}, protocol=2))
    return train, test


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_reads_on_disk_format(tmp_path, num_classes):
    train, test = _write_cifar(tmp_path, num_classes)
    data = load_cifar(tmp_path, num_classes)
    n_train = sum(len(b["data"]) for b in train)
    assert data.x_train.shape == (n_train, 3, 32, 32)
    assert data.x_test.shape == (len(test["data"]), 3, 32, 32)
    label_key = "labels" if num_classes == 10 else "fine_labels"
    assert data.y_test.tolist() == test[label_key]
    # channel-major layout: the first 1024 bytes are the red plane of image 0
    raw = train[0]["data"][0, :1024].reshape(32, 32).astype(np.float32) / 255
    red = data.x_train[0, 0].numpy()
    assert np.corrcoef(raw.ravel(), red.ravel())[0, 1] > 0.999
    assert data.num_classes == num_classes


def test_cifar_missing_files_names_path(tmp_path):
    with pytest.raises(DatasetFilesMissing, match=str(tmp_path / "cifar-10-batches-py")):
        load_cifar(tmp_path, 10)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="allowed: digits, mnist1d"):
        load_dataset("imagenet")


def _splits(y_train, y_test, num_classes):
    from fedqdnn.data_splits import DatasetSplits

    y_train, y_test = torch.tensor(y_train), torch.tensor(y_test)
    x_train, x_test = torch.zeros(len(y_train), 1, 2), torch.zeros(len(y_test), 1, 2)
    return DatasetSplits("toy", x_train, y_train, x_test, y_test, num_classes)


@pytest.mark.parametrize(
    "y_train, y_test, num_classes, needle",
    [
        (
            [2, 2, 2],
            [2, 0],
            3,
            "toy train has one class (label 2): nothing to learn; accuracy would read 100 %",
        ),
        ([0, 1], [0, 1], 1, "toy train has labels 0..1; allowed: 0..0 (num_classes = 1)"),
        ([0, 1, 2], [0, 3], 3, "toy test has labels 0..3; allowed: 0..2 (num_classes = 3)"),
        ([-1, 1], [0], 2, "toy train has labels -1..1; allowed: 0..1"),
        ([], [0], 2, "toy has no training samples"),
    ],
)
def test_every_loaders_labels_are_checked(y_train, y_test, num_classes, needle):
    """Every DatasetSplits (built-in or hf:) is checked when built, before any training."""
    with pytest.raises(ValueError) as err:
        _splits(y_train, y_test, num_classes)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert _splits([0, 1, 1], [1], 2).num_classes == 2  # two classes: fine


def test_standardize_pixels_equals_torchvision_bit_for_bit():
    """Our standardization (no torchvision import in a device process) is torchvision's."""
    from torchvision.transforms.v2 import functional as tvf

    from fedqdnn.data_splits import standardize_pixels

    pixels = torch.randint(0, 256, (20, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    pixels = pixels.to(torch.uint8)
    mean, std = (0.3, 0.45, 0.5), (0.2, 0.25, 0.31)
    expected = tvf.normalize(tvf.to_dtype(pixels, torch.float32, scale=True), list(mean), list(std))
    assert torch.equal(standardize_pixels(pixels, mean, std), expected)
