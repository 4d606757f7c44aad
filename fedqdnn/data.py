"""Data sets as in-memory tensors with fixed, seeded train/test splits.

``digits`` and ``mnist1d`` are real data that need no download; ``cifar10``/``cifar100``
read torchvision's on-disk format from a local root (downloaded by torchvision on request);
``synthetic`` is for fast tests. ``hf:<name>`` data sets (Hugging Face / Flower Datasets) are
loaded by :mod:`fedqdnn.hf_data`.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from fedqdnn.data_splits import DatasetFilesMissing, DatasetSplits, default_cache_dir
from fedqdnn.files import write_bytes_atomic
from fedqdnn.hf_data import load_hf

DATASET_NAMES = ("digits", "mnist1d", "cifar10", "cifar100", "synthetic")
HF_PREFIX = "hf:"  # "hf:<Hugging Face dataset>", e.g. "hf:flwrlabs/femnist"
MNIST1D_DEFAULT_SAMPLES = 10_000


def is_hf_name(name: str) -> bool:
    """Whether ``name`` names a Hugging Face data set (``hf:<name>``)."""
    return name.startswith(HF_PREFIX)


def check_dataset_name(name: object) -> str:
    """``name`` if it is a built-in data set or ``hf:<name>``; else a ValueError saying so."""
    if isinstance(name, str) and (
        name in DATASET_NAMES
        or (is_hf_name(name) and name[len(HF_PREFIX) :].strip() and " " not in name)
    ):
        return name
    raise ValueError(f"allowed: {', '.join(DATASET_NAMES)} or hf:<Hugging Face dataset>")


def _standardize(x_train: np.ndarray, x_test: np.ndarray, axis: tuple[int, ...]) -> tuple:
    mean = x_train.mean(axis=axis, keepdims=True)
    std = x_train.std(axis=axis, keepdims=True) + 1e-8
    return (x_train - mean) / std, (x_test - mean) / std


def _splits(name: str, xtr, ytr, xte, yte, num_classes: int) -> DatasetSplits:
    return DatasetSplits(
        name,
        torch.as_tensor(np.ascontiguousarray(xtr), dtype=torch.float32),
        torch.as_tensor(np.asarray(ytr), dtype=torch.int64),
        torch.as_tensor(np.ascontiguousarray(xte), dtype=torch.float32),
        torch.as_tensor(np.asarray(yte), dtype=torch.int64),
        num_classes,
    )


def load_digits(
    data_seed: int = 0, test_fraction: float = 0.2, cache_dir: Path | None = None
) -> DatasetSplits:
    """sklearn's 1,797 8x8 digits, stratified split seeded by ``data_seed``.

    Importing sklearn (and scipy) takes longer than everything else a device does to load its
    data, and under Flower's Deployment Engine every message is a fresh process, so the split
    arrays are cached in ``cache_dir`` (default :func:`default_cache_dir`) keyed by seed, test
    fraction and sklearn version; a cached file holds exactly what the split returns.
    """
    sklearn = metadata.version("scikit-learn")
    name = f"digits-seed{data_seed}-test{test_fraction}-sklearn{sklearn}.npz"
    data = _cached_arrays(
        Path(cache_dir or default_cache_dir()) / name,
        lambda: _split_digits(data_seed, test_fraction),
    )
    return _splits("digits", data["x"], data["y"], data["x_test"], data["y_test"], 10)


def _split_digits(data_seed: int, test_fraction: float) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(
        x, bunch.target, test_size=test_fraction, random_state=data_seed, stratify=bunch.target
    )
    xtr, xte = _standardize(xtr, xte, axis=(0, 1, 2, 3))
    return {"x": xtr, "y": ytr, "x_test": xte, "y_test": yte}


def load_mnist1d(
    num_samples: int = MNIST1D_DEFAULT_SAMPLES, data_seed: int = 0, cache_dir: Path | None = None
) -> DatasetSplits:
    """Procedural MNIST-1D (Greydanus 2020); generator seed 42 + ``data_seed``, 80/20 split.

    Generating is slow (about 40 s for 62,500 samples on a busy core) and every Ray worker
    needs the data, so the arrays are cached in ``cache_dir`` (default
    :func:`default_cache_dir`) keyed by sample count and seed; a cached file holds exactly
    what the generator returns. The generator seeds numpy's global RNG; we restore the
    caller's state afterwards.
    """
    if num_samples < 100:
        raise ValueError(f"mnist1d num_samples {num_samples} is too small; allowed: >= 100")
    path = (
        Path(cache_dir or default_cache_dir()) / f"mnist1d-{num_samples}-seed{42 + data_seed}.npz"
    )
    data = _cached_arrays(path, lambda: _generate_mnist1d(num_samples, 42 + data_seed))
    return _splits(
        "mnist1d", data["x"][:, None], data["y"], data["x_test"][:, None], data["y_test"], 10
    )


def _generate_mnist1d(num_samples: int, seed: int) -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = seed
    np_state = np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
    return {k: np.asarray(data[k]) for k in ("x", "y", "x_test", "y_test")}


def _cached_arrays(path: Path, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays ``x``, ``y``, ``x_test``, ``y_test`` kept in ``path``; made by ``make`` and
    saved there when the file is missing or broken."""
    try:
        with np.load(path) as cached:
            return {k: cached[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, KeyError, ValueError):
        data = make()
        _save_npz_atomic(path, data)
        return data


def _save_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Best effort: a cache that cannot be written only costs the next run the generation."""
    try:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomic(path, buffer.getvalue())
    except OSError:
        pass


def _cifar_class(num_classes: int):
    from torchvision.datasets import CIFAR10, CIFAR100

    base = CIFAR10 if num_classes == 10 else CIFAR100

    class LocalCIFAR(base):  # type: ignore[misc, valid-type]
        """torchvision's reader; files must exist locally (never downloads).

        Integrity is checked by presence, not md5, so re-packed copies load too.
        """

        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            names = [n for n, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all((folder / name).is_file() for name in names)

        def _load_meta(self) -> None:
            self.meta = {**self.meta, "md5": None}  # check_integrity(path, None) = exists
            super()._load_meta()

    return LocalCIFAR


def load_cifar(root: str | Path, num_classes: int = 10, download: bool = False) -> DatasetSplits:
    """CIFAR-10/100 from ``root`` in the standard python-pickle layout, per-channel standardized.

    With ``download``, torchvision fetches and extracts the archive into ``root`` first when
    it is not there (md5-checked). The CIFAR pickle files are read by torchvision; only load
    files you trust.
    """
    cls = _cifar_class(num_classes)
    folder = Path(root) / cls.base_folder
    name = f"cifar{num_classes}"
    try:
        train = cls(root=str(root), train=True, download=download)
        test = cls(root=str(root), train=False, download=False)
    except RuntimeError:
        raise DatasetFilesMissing(
            f"{name} files not found in {folder}; run with --download (network), or download "
            f"{cls.filename} from {cls.url} and extract it into {Path(root)}"
        ) from None
    except OSError as err:  # urllib's URLError and socket errors: no network, no server
        reason = getattr(err, "reason", None) or err
        raise DatasetFilesMissing(
            f"{name} could not be downloaded from {cls.url} ({reason}); download it by hand and "
            f"extract it into {Path(root)}, or use hf:uoft-cs/{name} with --data-root"
        ) from None
    xtr = train.data.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    xte = test.data.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    xtr, xte = _standardize(xtr, xte, axis=(0, 2, 3))
    return _splits(name, xtr, train.targets, xte, test.targets, num_classes)


def load_synthetic(
    data_seed: int = 0,
    shape: tuple[int, ...] = (1, 8, 8),
    num_classes: int = 10,
    train_per_class: int = 60,
    test_per_class: int = 20,
    noise: float = 1.0,
) -> DatasetSplits:
    """Gaussian class clusters: fast, learnable, and reproducible from ``data_seed``."""
    rng = np.random.default_rng(data_seed)
    means = rng.normal(size=(num_classes, *shape))

    def draw(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(num_classes), per_class)
        x = means[y] + noise * rng.normal(size=(len(y), *shape))
        order = rng.permutation(len(y))
        return x[order], y[order]

    xtr, ytr = draw(train_per_class)
    xte, yte = draw(test_per_class)
    return _splits("synthetic", xtr, ytr, xte, yte, num_classes)


@functools.lru_cache(maxsize=8)
def load_dataset(
    name: str,
    *,
    data_root: str | None = None,
    num_samples: int | None = None,
    data_seed: int = 0,
    download: bool = False,
    image_column: str = "",
    label_column: str = "",
    group_column: str = "",
) -> DatasetSplits:
    """Load data set ``name`` (cached per process: callers must not modify the tensors).

    ``download`` lets cifar10/100 and ``hf:`` data sets be fetched when not found locally;
    the column arguments apply to ``hf:`` data sets (see :func:`fedqdnn.hf_data.load_hf`).
    """
    if is_hf_name(name):
        return load_hf(
            name[len(HF_PREFIX) :],
            data_root=data_root,
            download=download,
            data_seed=data_seed,
            image_column=image_column,
            label_column=label_column,
            group_column=group_column,
        )
    if name == "digits":
        return load_digits(data_seed)
    if name == "mnist1d":
        return load_mnist1d(num_samples or MNIST1D_DEFAULT_SAMPLES, data_seed)
    if name in ("cifar10", "cifar100"):
        return load_cifar(data_root or "data", 10 if name == "cifar10" else 100, download)
    if name == "synthetic":
        return load_synthetic(data_seed)
    raise ValueError(
        f"unknown dataset {name!r}; allowed: {', '.join(DATASET_NAMES)} or hf:<Hugging Face "
        "dataset>"
    )
