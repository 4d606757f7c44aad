"""Hugging Face image data sets (``hf:<name>``) through Flower Datasets, online or from files.

Where the data comes from, first match wins:

1. ``data-root`` set: a folder written by ``datasets``' ``save_to_disk``, or parquet files / an
   image folder (one file or a folder; splits named by the files, as ``datasets`` infers
   them), the latter read through Flower Datasets' ``FederatedDataset``;
2. the Hugging Face cache, offline (what an earlier ``--download`` stored);
3. with ``download``: the Hub, through ``FederatedDataset`` as Flower baselines load it.

The ``train`` split is federated; the central test set is the ``test`` split when there is one,
else a seeded hold-out of ``HOLDOUT_FRACTION`` of ``train``; either is capped at
``CENTRAL_TEST_MAX`` samples (seeded subsample) so per-round evaluation stays affordable.
Image and label columns are found by their features (one ``Image``, one ``ClassLabel``) unless
named. Images are converted with torchvision (8-bit grayscale or RGB, one size for all) and
decoded once into a cache (``$FEDQDNN_CACHE``, default ``~/.cache/fedqdnn``) as uint8 ``.npy``
files that every process memory-maps: FEMNIST's ~805k training images take ~630 MB once, shared
by the driver and all Ray workers, instead of 2.5 GB of float32 per process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from fedqdnn.data_splits import (
    DatasetFilesMissing,
    DatasetSplits,
    check_labels,
    default_cache_dir,
    standardize_pixels,
)

HOLDOUT_FRACTION = 0.2  # share of train held out as central test set when there is no test split
CENTRAL_TEST_MAX = 10_000  # most central test samples (CIFAR's test split is exactly this)
CACHE_FORMAT = 1  # bump when the decoded layout changes
GRAYSCALE_MODES = ("1", "L", "LA")  # PIL modes decoded to one channel; all others to RGB
LABEL_NAMES = ("label", "labels")  # integer columns taken as labels when there is no ClassLabel
_DECODE_BATCH = 1024
LOCAL_COPY_HINT = "a save_to_disk folder, parquet files or an image folder"
FILE_KINDS = {".parquet": "parquet", ".arrow": "arrow"}  # one-file copies: suffix -> builder


@dataclass(frozen=True)
class Columns:
    """The columns fedqdnn reads: images, class labels, natural ids ('' = not used)."""

    image: str
    label: str
    group: str = ""


# ---------------------------------------------------------------- columns


def _kind(feature: object) -> str:
    """A short description of a feature, for messages."""
    dtype = getattr(feature, "dtype", None)
    return f"{type(feature).__name__}({dtype})" if dtype else type(feature).__name__


def _is_integer(feature: object) -> bool:
    return str(getattr(feature, "dtype", "")).startswith(("int", "uint"))


def _is_string(feature: object) -> bool:
    return str(getattr(feature, "dtype", "")) in ("string", "large_string")


def _named(features, dataset: str, key: str, column: str) -> str:
    if column not in features:
        raise ValueError(
            f"{key} = {column!r} is not a column of {dataset}; columns: {', '.join(features)}"
        )
    return column


def _the_one(dataset: str, what: str, key: str, candidates: list[str], names) -> str:
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise ValueError(
            f"{dataset} has {len(candidates)} {what} columns ({', '.join(candidates)}); "
            f"set {key} to one of them"
        )
    raise ValueError(f"{dataset} has no {what} column among {', '.join(names)}; set {key}")


def detect_columns(
    features, dataset: str, image_column: str = "", label_column: str = "", group_column: str = ""
) -> Columns:
    """The image, label and group columns of a data set with ``features`` (a ``Features``).

    Unnamed, the image column is the one ``Image`` feature and the label column the one
    ``ClassLabel`` (else an integer column named ``label``). Errors are one line naming the
    columns there are.
    """
    from datasets import ClassLabel, Image

    names = list(features)
    if image_column:
        image = _named(features, dataset, "image-column", image_column)
        if not isinstance(features[image], Image):
            raise ValueError(
                f"image-column = {image!r} of {dataset} holds {_kind(features[image])}, not "
                "images; fedqdnn federates image data sets"
            )
    else:
        images = [c for c in names if isinstance(features[c], Image)]
        image = _the_one(dataset, "image (Image feature)", "image-column", images, names)
    if label_column:
        label = _named(features, dataset, "label-column", label_column)
        feature = features[label]
        if not (isinstance(feature, ClassLabel) or _is_integer(feature) or _is_string(feature)):
            raise ValueError(
                f"label-column = {label!r} of {dataset} holds {_kind(feature)}; allowed: a "
                "ClassLabel, integer or string column"
            )
    else:
        labels = [c for c in names if isinstance(features[c], ClassLabel)] or [
            c for c in names if c in LABEL_NAMES and _is_integer(features[c])
        ]
        label = _the_one(dataset, "label (ClassLabel feature)", "label-column", labels, names)
    group = _named(features, dataset, "partition-by", group_column) if group_column else ""
    for key, column in (("label-column", label), ("partition-by", group)):
        if column == image:
            raise ValueError(f"{key} = {column!r} is the image column of {dataset}")
    return Columns(image, label, group)


# ---------------------------------------------------------------- finding the data


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Keep ``datasets`` off the network (it reads HF_HUB_OFFLINE once, at import)."""
    import datasets

    previous = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = previous or offline
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = previous


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _is_saved_dataset(root: Path) -> bool:
    """Whether ``root`` was written by ``save_to_disk`` (a DatasetDict or a Dataset)."""
    return (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()


def _federated_splits(dataset: str, **load_kwargs: object):
    """(train, test or None) through Flower Datasets (no shuffle: we split with our own seed)."""
    from flwr_datasets import FederatedDataset

    fds = FederatedDataset(dataset=dataset, partitioners={"train": 1}, shuffle=False, **load_kwargs)
    train = fds.load_split("train")
    try:
        test = fds.load_split("test")
    except ValueError:  # Flower Datasets: "The given split: 'test' is not present ..."
        test = None
    return train, test


def _local_splits(dataset: str, root: Path):
    """(train, test or None) from files under ``root``."""
    import datasets

    if not root.exists():
        raise DatasetFilesMissing(
            f"data-root {str(root)!r} does not exist; point it at a local copy of {dataset} "
            f"({LOCAL_COPY_HINT})"
        )
    kind = root.suffix.lower()
    if root.is_file() and kind not in FILE_KINDS:
        raise ValueError(
            f"data-root {str(root)!r} is a {kind or 'suffix-less'} file, not one fedqdnn loads; "
            f"allowed: a {' or '.join(FILE_KINDS)} file, or a folder ({LOCAL_COPY_HINT})"
        )
    try:
        if _is_saved_dataset(root):
            saved = datasets.load_from_disk(str(root))
            if isinstance(saved, datasets.Dataset):
                return saved, None
            if "train" not in saved:
                raise ValueError
            return saved["train"], saved.get("test")
        if root.is_file():
            return _federated_splits(FILE_KINDS[kind], data_files={"train": str(root)})
        return _federated_splits(str(root))
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetsError) as err:
        raise DatasetFilesMissing(
            f"no data set with a 'train' split found in {root} for {dataset} "
            f"({_first_line(err)}); expected {LOCAL_COPY_HINT}"
        ) from None


def open_splits(name: str, data_root: str | None, download: bool):
    """The ``train`` and ``test`` (or None) splits of ``hf:<name>``, not yet decoded."""
    dataset = f"hf:{name}"
    with _hub_offline(offline=True):
        if data_root:
            return _local_splits(dataset, Path(data_root))
        try:
            return _federated_splits(name)  # the Hugging Face cache
        except (ConnectionError, FileNotFoundError):
            if not download:
                raise DatasetFilesMissing(
                    f"{dataset} is not in the Hugging Face cache and download is off; run with "
                    f"--download (network) to fetch it through Flower Datasets, or point "
                    f"--data-root DIR at a local copy ({LOCAL_COPY_HINT})"
                ) from None
        except ValueError as err:
            raise DatasetFilesMissing(f"{dataset}: {_first_line(err)}") from None
    try:
        return _federated_splits(name)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        raise DatasetFilesMissing(
            f"{dataset} could not be downloaded from the Hugging Face Hub ({_first_line(err)}); "
            f"check the name and the network, or point --data-root DIR at a local copy"
        ) from None


# ---------------------------------------------------------------- decoding


def _column(split, column: str) -> np.ndarray:
    return np.asarray(split.select_columns([column]).with_format("numpy")[column])


def _first_null(split, column: str, rows: np.ndarray) -> int | None:
    """The first of ``rows`` (the split's own row numbers) whose ``column`` is null, or None."""
    if split.data.column(column).null_count == 0:  # the whole underlying table: no nulls
        return None
    table = split.select_columns([column]).with_format("arrow")[:]
    nulls = table.column(column).is_null().to_numpy(zero_copy_only=False)[rows]
    return int(rows[np.argmax(nulls)]) if nulls.any() else None


def _refuse_nulls(split, split_name: str, columns: Columns, rows: np.ndarray, dataset: str):
    """One line naming the split, the row and the column of the first missing value."""
    for what, column in (("image", columns.image), ("label", columns.label)):
        row = _first_null(split, column, rows)
        if row is not None:
            raise ValueError(
                f"{dataset} {split_name} row {row} has no {what} ({column!r} is null); "
                f"fedqdnn needs an image and a label in every row: drop or fill such rows"
            )
    if columns.group and split_name == "train":
        row = _first_null(split, columns.group, rows)
        if row is not None:
            raise ValueError(
                f"{dataset} train row {row} has no partition-by value ({columns.group!r} is "
                "null); drop or fill such rows"
            )


def _encode_labels(feature, train: np.ndarray, test: np.ndarray, dataset: str, column: str):
    """(train codes, test codes, number of classes, class names) of a label column; the names
    are a ClassLabel's or the strings in sorted order, none for integers.

    Integer labels are their own classes (classes = max + 1) unless more than half of those
    would never occur (e.g. labels {0, 999999}): refused, as a sparse output layer would be
    mostly dead weight. Strings become classes in sorted order.
    """
    from datasets import ClassLabel

    both = np.concatenate([train, test])
    if isinstance(feature, ClassLabel) or _is_integer(feature):  # labels >= 0: checked before
        if isinstance(feature, ClassLabel):
            names = [str(n) for n in feature.names]
            return train.astype(np.int64), test.astype(np.int64), int(feature.num_classes), names
        num_classes, distinct = int(both.max()) + 1, len(np.unique(both))
        if distinct > 1 and num_classes > 2 * distinct:  # one class: check_labels says so
            raise ValueError(
                f"label-column {column!r} of {dataset} holds {distinct} distinct integers up to "
                f"{num_classes - 1}: a {num_classes:,}-way output layer (classes = max + 1); "
                f"allowed: labels 0..K-1 with at most half of them unused; renumber them or "
                f"make the column a ClassLabel"
            )
        return train.astype(np.int64), test.astype(np.int64), num_classes, []
    if not _is_string(feature):
        raise ValueError(
            f"label-column {column!r} of {dataset} holds {_kind(feature)}; allowed: a "
            "ClassLabel, integer or string column"
        )
    classes, codes = np.unique(both, return_inverse=True)  # classes in sorted order
    names = [str(c) for c in classes]
    return (
        codes[: len(train)].astype(np.int64),
        codes[len(train) :].astype(np.int64),
        len(names),
        names,
    )


def _images_into(split, rows: np.ndarray, column: str, out: np.ndarray, where: str) -> None:
    """Decode the images of ``split`` at ``rows`` into ``out`` (N, C, H, W) uint8 with
    torchvision; ``where`` names the split in messages (e.g. 'hf:x test')."""
    from torchvision.transforms.v2 import functional as tvf

    mode = "L" if out.shape[1] == 1 else "RGB"
    size = (out.shape[3], out.shape[2])  # PIL: (width, height)
    i = 0
    for batch in split.select(rows).select_columns([column]).iter(batch_size=_DECODE_BATCH):
        for image in batch[column]:
            if image.size != size:
                raise ValueError(
                    f"{where} row {rows[i]} is a {image.size[0]}x{image.size[1]} image but the "
                    f"first is {size[0]}x{size[1]}; fedqdnn needs images of one size"
                )
            out[i] = tvf.pil_to_tensor(image.convert(mode)).numpy()
            i += 1


def _pixel_stats(pixels: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (chunked, float64)."""
    total = np.zeros(pixels.shape[1])
    squares = np.zeros(pixels.shape[1])
    for start in range(0, len(pixels), 8 * _DECODE_BATCH):
        chunk = pixels[start : start + 8 * _DECODE_BATCH].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 2, 3))
        squares += (chunk**2).sum(axis=(0, 2, 3))
    count = len(pixels) * pixels.shape[2] * pixels.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0)) + 1e-8
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _rows(train, test, data_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, central test rows): rows of ``train``, and of ``test`` when it exists."""
    rng = np.random.default_rng(data_seed)
    if test is None:
        n = len(train)
        n_test = min(max(1, round(n * HOLDOUT_FRACTION)), CENTRAL_TEST_MAX, n - 1)
        order = rng.permutation(n)
        return np.sort(order[n_test:]), np.sort(order[:n_test])
    test_rows = np.arange(len(test))
    if len(test) > CENTRAL_TEST_MAX:
        test_rows = np.sort(rng.choice(len(test), CENTRAL_TEST_MAX, replace=False))
    return np.arange(len(train)), test_rows


def _decode(train, test, columns: Columns, data_seed: int, folder: Path, dataset: str) -> None:
    """Write the decoded splits of one data set into ``folder`` (.npy files + meta.json);
    missing values and unusable labels are refused in one line before any decoding."""
    if len(train) < 2:
        raise ValueError(f"{dataset} has {len(train)} training samples; allowed: >= 2")
    train_rows, test_rows = _rows(train, test, data_seed)
    test_source, test_name = (train, "train") if test is None else (test, "test")
    parts = (("train", train, train_rows), (test_name, test_source, test_rows))
    for name, split, rows in parts:
        _refuse_nulls(split, name, columns, rows, dataset)
    first = train[0][columns.image]
    channels = 1 if first.mode in GRAYSCALE_MODES else 3
    shape = (channels, first.size[1], first.size[0])
    labels = [_column(split, columns.label)[rows] for _, split, rows in parts]
    for (name, _, rows), values in zip(parts, labels, strict=True):
        if values.dtype.kind in "iuf" and len(values) and values.min() < 0:
            i = int(np.argmin(values))
            raise ValueError(
                f"{dataset} {name} row {rows[i]} is labeled {values[i]}; allowed: labels >= 0 "
                "(a ClassLabel's -1 means no label: drop such rows)"
            )
    y_train, y_test, num_classes, class_names = _encode_labels(
        train.features[columns.label], *labels, dataset, columns.label
    )
    check_labels(dataset, torch.from_numpy(y_train), torch.from_numpy(y_test), num_classes)
    arrays = {"y_train.npy": y_train, "y_test.npy": y_test}
    if columns.group:
        values = _column(train, columns.group)[train_rows]
        arrays["groups.npy"] = np.unique(values, return_inverse=True)[1].astype(np.int64)
    for file, array in arrays.items():
        np.save(folder / file, array)
    print(f"fedqdnn: decoding {dataset} once into {folder.parent}", file=sys.stderr, flush=True)
    for (name, split, rows), file in zip(parts, ("x_train.npy", "x_test.npy"), strict=True):
        pixels = np.lib.format.open_memmap(
            folder / file, mode="w+", dtype=np.uint8, shape=(len(rows), *shape)
        )
        _images_into(split, rows, columns.image, pixels, f"{dataset} {name}")
        pixels.flush()
    mean, std = _pixel_stats(np.load(folder / "x_train.npy", mmap_mode="r"))
    meta = {
        "num_classes": num_classes,
        "classes": class_names,
        "pixel_mean": mean,
        "pixel_std": std,
    }
    (folder / "meta.json").write_text(json.dumps({**meta, "columns": asdict(columns)}))


def cache_root() -> Path:
    """Folder of decoded hf: data sets (``hf/`` in the data cache, :func:`default_cache_dir`)."""
    return default_cache_dir() / "hf"


def _cache_key(train, test, columns: Columns, data_seed: int) -> str:
    """Content key: the splits' fingerprints (they change when the data do) and our choices."""
    key = {
        "format": CACHE_FORMAT,
        "train": train._fingerprint,
        "test": None if test is None else test._fingerprint,
        "columns": asdict(columns),
        "data_seed": data_seed,
        "holdout": HOLDOUT_FRACTION,
        "test_max": CENTRAL_TEST_MAX,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _decoded_folder(train, test, columns: Columns, data_seed: int, dataset: str) -> Path:
    """The cache folder of these splits, decoding them first if no process has yet."""
    folder = cache_root() / _cache_key(train, test, columns, data_seed)
    if (folder / "meta.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        _decode(train, test, columns, data_seed, staging, dataset)
        os.replace(staging, folder)  # atomic; fails if another process finished first
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _files_index(data_root: str, choices: dict, data_seed: int) -> Path | None:
    """Where the decoded cache of local files is remembered: keyed by every file's path, size
    and modification time under ``data_root`` and our choices, so that a process that finds
    it (a SuperNode starts one per message) skips opening the files with ``datasets``, whose
    import alone costs seconds. None when ``data_root`` does not exist."""
    root = Path(data_root).resolve()
    if not root.exists():
        return None
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    listing = [
        (str(p.relative_to(root.parent)), p.stat().st_size, p.stat().st_mtime_ns) for p in files
    ]
    key = {
        "format": CACHE_FORMAT,
        "root": str(root),
        "files": listing,
        "choices": choices,
        "data_seed": data_seed,
        "holdout": HOLDOUT_FRACTION,
        "test_max": CENTRAL_TEST_MAX,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "by-files" / f"{digest}.json"


def _indexed_folder(index: Path) -> tuple[Path, bool] | None:
    """(decoded folder, has natural ids) that ``index`` remembers, if it is still there."""
    try:
        entry = json.loads(index.read_text())
    except (OSError, ValueError):
        return None
    folder = cache_root() / str(entry.get("folder", ""))
    if not (folder / "meta.json").is_file():
        return None
    return folder, bool(entry.get("groups"))


def _write_index(index: Path, folder: Path, has_groups: bool) -> None:
    """Remember ``folder`` for these local files (atomic: a reader sees all or nothing)."""
    index.parent.mkdir(parents=True, exist_ok=True)
    staging = index.with_name(f"{index.name}.tmp-{os.getpid()}")
    staging.write_text(json.dumps({"folder": folder.name, "groups": has_groups}))
    os.replace(staging, index)


def load_hf(
    name: str,
    *,
    data_root: str | None = None,
    download: bool = False,
    data_seed: int = 0,
    image_column: str = "",
    label_column: str = "",
    group_column: str = "",
) -> DatasetSplits:
    """``hf:<name>`` as :class:`~fedqdnn.data_splits.DatasetSplits` (uint8 training images).

    ``group_column`` (e.g. FEMNIST's ``writer_id``) gives every training sample its natural
    partition id (``train_groups``: ids numbered in sorted order of the column's values).
    """
    dataset = f"hf:{name}"
    choices = {"image": image_column, "label": label_column, "group": group_column}
    index = _files_index(data_root, choices, data_seed) if data_root else None
    known = _indexed_folder(index) if index is not None else None
    if known is not None:  # local files seen before: no need to open them with datasets
        folder, has_groups = known
    else:
        train, test = open_splits(name, data_root, download)
        columns = detect_columns(train.features, dataset, image_column, label_column, group_column)
        if test is not None and not {columns.image, columns.label} <= set(test.features):
            test = None  # a test split without our columns (e.g. unlabeled): hold out instead
        folder = _decoded_folder(train, test, columns, data_seed, dataset)
        has_groups = bool(columns.group)
        if index is not None:
            _write_index(index, folder, has_groups)
    meta = json.loads((folder / "meta.json").read_text())
    mean, std = tuple(meta["pixel_mean"]), tuple(meta["pixel_std"])

    def array(file: str) -> torch.Tensor:  # copy-on-write map: shared pages, writable for torch
        return torch.from_numpy(np.load(folder / file, mmap_mode="c"))

    groups = np.load(folder / "groups.npy") if has_groups else None
    return DatasetSplits(
        dataset,
        array("x_train.npy"),
        torch.from_numpy(np.load(folder / "y_train.npy")),
        standardize_pixels(array("x_test.npy"), mean, std),
        torch.from_numpy(np.load(folder / "y_test.npy")),
        int(meta["num_classes"]),
        train_groups=groups,
        class_names=tuple(meta.get("classes", ())),  # caches from before names were kept: none
        pixel_mean=mean,
        pixel_std=std,
    )
