"""hf: data sets (no network): local copies, the HF cache, columns, decoding, natural fleets."""

import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from fedqdnn import hf_data
from fedqdnn.config import from_flat
from fedqdnn.data import load_cifar
from fedqdnn.data_splits import DatasetFilesMissing
from fedqdnn.device import device_for
from fedqdnn.fleet import fleet_partitions, resolve_fleet
from fedqdnn.hf_data import Columns, detect_columns, load_hf
from tests.hf_helpers import CLASSES, TEST_PER_CLASS, WRITER_SAMPLES, save_writers, writers_dataset

N_TRAIN = sum(WRITER_SAMPLES.values())


@pytest.fixture(autouse=True)
def _private_caches(tmp_path, monkeypatch):
    """Decoded and Hugging Face caches in the test's folder, never the user's."""
    monkeypatch.setenv("FEDQDNN_CACHE", str(tmp_path / "fedqdnn-cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def _features(**columns):
    return datasets.Features(columns)


IMAGE, CLASS = datasets.Image(), datasets.ClassLabel(names=["a", "b"])
INT, STR = datasets.Value("int64"), datasets.Value("string")


@pytest.mark.parametrize(
    "features, named, expected",
    [
        (  # flwrlabs/femnist
            _features(image=IMAGE, writer_id=STR, hsf_id=INT, character=CLASS),
            {"group_column": "writer_id"},
            Columns("image", "character", "writer_id"),
        ),
        (_features(img=IMAGE, label=CLASS), {}, Columns("img", "label")),  # uoft-cs/cifar10
        (_features(pixels=IMAGE, label=INT, id=INT), {}, Columns("pixels", "label")),
        (  # uoft-cs/cifar100: two ClassLabels, one named
            _features(img=IMAGE, fine_label=CLASS, coarse_label=CLASS),
            {"label_column": "coarse_label"},
            Columns("img", "coarse_label"),
        ),
        (_features(a=IMAGE, b=IMAGE, y=STR), {"image_column": "b", "label_column": "y"}, None),
    ],
)
def test_columns_found_by_their_features(features, named, expected):
    columns = detect_columns(features, "hf:x", **named)
    if expected is None:  # everything named
        expected = Columns("b", "y")
    assert columns == expected


@pytest.mark.parametrize(
    "features, named, needle",
    [
        (
            _features(img=IMAGE, fine_label=CLASS, coarse_label=CLASS),
            {},
            "hf:x has 2 label (ClassLabel feature) columns (fine_label, coarse_label); "
            "set label-column to one of them",
        ),
        (_features(a=IMAGE, b=IMAGE, label=CLASS), {}, "columns (a, b); set image-column"),
        (_features(text=STR, label=CLASS), {}, "no image (Image feature) column among text, label"),
        (_features(img=IMAGE, y=INT), {}, "no label (ClassLabel feature) column among img, y"),
        (
            _features(img=IMAGE, label=CLASS),
            {"label_column": "nope"},
            "label-column = 'nope' is not a column of hf:x; columns: img, label",
        ),
        (
            _features(img=IMAGE, label=CLASS),
            {"group_column": "writer"},
            "partition-by = 'writer' is not a column of hf:x",
        ),
        (
            _features(img=IMAGE, label=CLASS),
            {"image_column": "label"},
            "image-column = 'label' of hf:x holds ClassLabel",
        ),
        (
            _features(img=IMAGE, score=datasets.Value("float32")),
            {"label_column": "score"},
            "allowed: a ClassLabel, integer or string column",
        ),
        (
            _features(img=IMAGE, label=CLASS),
            {"group_column": "img"},
            "partition-by = 'img' is the image column",
        ),
    ],
)
def test_column_errors_are_one_line(features, named, needle):
    with pytest.raises(ValueError) as err:
        detect_columns(features, "hf:x", **named)
    assert needle in str(err.value) and "\n" not in str(err.value)


def _pixels(split, row):
    return np.asarray(split[row]["image"])


def test_saved_dataset_decodes_to_its_pixels_labels_and_writers(tmp_path):
    source = writers_dataset()
    data = load_hf(
        "test/writers", data_root=str(save_writers(tmp_path / "saved")), group_column="writer_id"
    )
    train, test = source["train"], source["test"]
    assert data.name == "hf:test/writers" and data.num_classes == len(CLASSES)
    assert data.class_names == CLASSES  # the ClassLabel's names
    assert data.input_shape == (1, 28, 28) and data.x_train.dtype == torch.uint8
    assert len(data.y_train) == N_TRAIN and len(data.y_test) == TEST_PER_CLASS * len(CLASSES)
    for row in (0, 17, N_TRAIN - 1):  # a test split exists: train keeps its order
        assert np.array_equal(data.x_train[row, 0].numpy(), _pixels(train, row))
    assert data.y_train.tolist() == train["label"]
    # writers numbered in sorted order of their ids (Flower's natural-id order)
    expected_groups = [sorted(WRITER_SAMPLES).index(w) for w in train["writer_id"]]
    assert data.train_groups.tolist() == expected_groups
    pixels = np.stack([_pixels(train, r) for r in range(N_TRAIN)]) / 255.0
    assert data.pixel_mean == pytest.approx((pixels.mean(),), abs=1e-9)
    assert data.pixel_std == pytest.approx((pixels.std(),), abs=1e-6)
    # test inputs are standardized floats: (p / 255 - mean) / std
    expected = (_pixels(test, 5) / 255.0 - pixels.mean()) / pixels.std()
    assert data.x_test.dtype == torch.float32
    assert np.allclose(data.x_test[5, 0].numpy(), expected, atol=1e-4)
    assert data.y_test.tolist() == test["label"]
    some = np.array([3, 40])
    assert torch.allclose(
        data.train_inputs(some)[:, 0],
        torch.as_tensor((pixels[some] - pixels.mean()) / pixels.std(), dtype=torch.float32),
        atol=1e-4,
    )


def test_without_a_test_split_a_seeded_fifth_is_held_out(tmp_path):
    root = str(save_writers(tmp_path / "saved", with_test=False))
    a = load_hf("test/writers", data_root=root, data_seed=0)
    b = load_hf("test/writers", data_root=root, data_seed=0)
    c = load_hf("test/writers", data_root=root, data_seed=1)
    n_test = round(N_TRAIN * hf_data.HOLDOUT_FRACTION)
    assert (len(a.y_train), len(a.y_test)) == (N_TRAIN - n_test, n_test)
    assert torch.equal(a.x_test, b.x_test) and not torch.equal(a.x_test, c.x_test)
    # train and test are disjoint and together every image once (images differ by noise)
    train = writers_dataset(with_test=False)["train"]
    everything = sorted(_pixels(train, r).tobytes() for r in range(N_TRAIN))
    test_pixels = a.x_test * torch.tensor(a.pixel_std) + torch.tensor(a.pixel_mean)
    held = [np.rint(p[0].numpy() * 255).astype(np.uint8).tobytes() for p in test_pixels]
    kept = [p[0].numpy().tobytes() for p in a.x_train]
    assert sorted(held + kept) == everything


def test_parquet_files_and_one_parquet_file_load_like_the_saved_copy(tmp_path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    for split, part in writers_dataset().items():
        part.to_parquet(str(folder / f"{split}.parquet"))  # features kept in parquet metadata
    saved = load_hf("t/w", data_root=str(save_writers(tmp_path / "saved")))
    from_folder = load_hf("t/w", data_root=str(folder))
    assert torch.equal(from_folder.x_train, saved.x_train)
    assert torch.equal(from_folder.y_test, saved.y_test)
    single = load_hf("t/w", data_root=str(folder / "train.parquet"))  # train only: hold-out
    assert len(single.y_train) + len(single.y_test) == N_TRAIN


def test_image_folder_labels_come_from_folder_names(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 5), ("test", 2)):
        for name in ("cat", "dog"):
            (tmp_path / "images" / split / name).mkdir(parents=True)
            for i in range(count):
                rgb = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
                Image.fromarray(rgb).save(tmp_path / "images" / split / name / f"{i}.png")
    data = load_hf("pets", data_root=str(tmp_path / "images"))
    assert data.input_shape == (3, 12, 10) and data.num_classes == 2
    assert sorted(data.y_train.tolist()) == [0] * 5 + [1] * 5
    assert len(data.y_test) == 4


def test_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    root = str(save_writers(tmp_path / "saved"))
    first = load_hf("t/w", data_root=root)
    folders = [f for f in hf_data.cache_root().iterdir() if f.name != "by-files"]
    assert [f.name for f in folders] == [folders[0].name] and (folders[0] / "meta.json").is_file()

    def no_decoding(*args):
        raise AssertionError("decoded again")

    def not_opened(*args):
        raise AssertionError("opened again")

    monkeypatch.setattr(hf_data, "_decode", no_decoding)
    opened = hf_data.open_splits
    # the same local files: found by their listing, without opening them (no datasets import)
    monkeypatch.setattr(hf_data, "open_splits", not_opened)
    again = load_hf("t/w", data_root=root)
    assert torch.equal(again.x_train, first.x_train) and torch.equal(again.x_test, first.x_test)
    with pytest.raises(AssertionError, match="opened again"):  # other columns: other cache
        load_hf("t/w", data_root=root, group_column="writer_id")
    monkeypatch.setattr(hf_data, "open_splits", opened)
    changed = next(p for p in Path(root).rglob("*") if p.is_file())
    os.utime(changed, ns=(1, 1))  # a file changed: opened again, same content, same decoding
    assert torch.equal(load_hf("t/w", data_root=root).x_train, first.x_train)


def test_a_hub_dataset_downloaded_before_loads_offline_from_the_hf_cache(tmp_path):
    """What ``--download`` leaves in the Hugging Face cache, laid out as datasets does
    (``<ns>___<name>/<config>/<version>/<hash>/<name>-<split>.arrow``)."""
    built = writers_dataset()
    staging = tmp_path / "stage"
    staging.mkdir()
    for split, part in built.items():
        part.to_parquet(str(staging / f"{split}.parquet"))
    datasets.load_dataset(str(staging), cache_dir=str(tmp_path / "build"))
    (source,) = [p for p in (tmp_path / "build").glob("stage/*/*/*") if p.is_dir()]
    target = Path(datasets.config.HF_DATASETS_CACHE) / "test___writers" / "default" / "0.0.0"
    shutil.copytree(source, target / source.name)
    for arrow in (target / source.name).glob("stage-*.arrow"):
        arrow.rename(arrow.with_name(arrow.name.replace("stage-", "writers-")))
    info_file = target / source.name / "dataset_info.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "config_name": "default", "dataset_name": "writers"}))
    data = load_hf("test/writers")  # download is off: the cache, never the network
    assert len(data.y_train) == N_TRAIN and data.num_classes == len(CLASSES)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (
            {},
            "hf:nobody/nothing is not in the Hugging Face cache and download is off; run with "
            "--download",
        ),
        ({"data_root": "/nonexistent/copy"}, "data-root '/nonexistent/copy' does not exist"),
    ],
)
def test_missing_data_is_one_line_naming_what_and_how(kwargs, needle):
    offline_before = datasets.config.HF_HUB_OFFLINE
    with pytest.raises(DatasetFilesMissing) as err:
        load_hf("nobody/nothing", **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert "save_to_disk folder, parquet files or an image folder" in str(err.value)
    assert datasets.config.HF_HUB_OFFLINE == offline_before  # offline only while loading


def test_a_folder_without_data_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetFilesMissing) as err:
        load_hf("x", data_root=str(tmp_path / "empty"))
    assert f"no data set with a 'train' split found in {tmp_path / 'empty'}" in str(err.value)
    assert "\n" not in str(err.value)


def _save(folder: Path, features: datasets.Features, **splits: dict) -> str:
    """A DatasetDict of ``splits`` (column -> values) written with save_to_disk."""
    built = {name: datasets.Dataset.from_dict(cols, features) for name, cols in splits.items()}
    datasets.DatasetDict(built).save_to_disk(str(folder))
    return str(folder)


def _grays(count: int, odd: dict[int, tuple[int, int]] | None = None) -> list:
    """``count`` 28x28 grayscale images, except rows in ``odd`` (row -> (width, height))."""
    return [Image.new("L", (odd or {}).get(i, (28, 28)), color=i) for i in range(count)]


def _refused(root: str, needle: str, **kwargs) -> str:
    with pytest.raises(ValueError) as err:
        load_hf("x", data_root=root, **kwargs)
    message = str(err.value)
    assert needle in message and "\n" not in message, message
    assert list(hf_data.cache_root().glob("*")) == []  # nothing half-written left behind
    return message


def test_images_of_different_sizes_are_refused_naming_split_and_row(tmp_path):
    """The row is the data set's own (not the index among the rows kept for training)."""
    features = datasets.Features(image=IMAGE, label=CLASS)
    held_out = _save(
        tmp_path / "held",
        features,
        train={"image": _grays(5, {4: (20, 28)}), "label": [0, 1] * 2 + [0]},
    )
    _refused(held_out, "hf:x train row 4 is a 20x28 image but the first is 28x28; fedqdnn needs")
    with_test = _save(
        tmp_path / "test",
        features,
        train={"image": _grays(4), "label": [0, 1, 0, 1]},
        test={"image": _grays(3, {1: (28, 30)}), "label": [0, 1, 0]},
    )
    _refused(with_test, "hf:x test row 1 is a 28x30 image but the first is 28x28")


@pytest.mark.parametrize(
    "train, test, needle",
    [
        (
            {"image": [*_grays(3), None], "label": [0, 1, 0, 1]},
            None,
            "hf:x train row 3 has no image ('image' is null)",
        ),
        (
            {"image": _grays(4), "label": [0, 1, 0, 1]},
            {"image": _grays(3), "label": [0, None, 1]},
            "hf:x test row 1 has no label ('label' is null)",
        ),
        (
            {"image": _grays(4), "label": [0, -1, 0, 1]},
            {"image": _grays(2), "label": [0, 1]},
            "hf:x train row 1 is labeled -1; allowed: labels >= 0 (a ClassLabel's -1 means "
            "no label",
        ),
    ],
)
def test_missing_images_and_labels_name_split_and_row(tmp_path, train, test, needle):
    splits = {"train": train} if test is None else {"train": train, "test": test}
    _refused(_save(tmp_path / "d", datasets.Features(image=IMAGE, label=CLASS), **splits), needle)


def test_null_string_labels_and_writer_ids_are_refused(tmp_path):
    features = datasets.Features(image=IMAGE, name=STR, writer=STR)
    root = _save(
        tmp_path / "d",
        features,
        train={"image": _grays(4), "name": ["a", "b", None, "a"], "writer": ["u", None, "v", "v"]},
        test={"image": _grays(2), "name": ["a", "b"], "writer": ["u", "v"]},
    )
    _refused(root, "hf:x train row 2 has no label ('name' is null)", label_column="name")
    fixed = _save(
        tmp_path / "e",
        features,
        train={"image": _grays(4), "name": ["a", "b", "b", "a"], "writer": ["u", None, "v", "v"]},
        test={"image": _grays(2), "name": ["a", "b"], "writer": ["u", "v"]},
    )
    _refused(
        fixed,
        "hf:x train row 1 has no partition-by value ('writer' is null)",
        label_column="name",
        group_column="writer",
    )


def test_one_class_is_refused(tmp_path):
    root = _save(
        tmp_path / "d",
        datasets.Features(image=IMAGE, label=INT),
        train={"image": _grays(4), "label": [3, 3, 3, 3]},
        test={"image": _grays(2), "label": [3, 3]},
    )
    _refused(
        root, "hf:x train has one class (label 3): nothing to learn; accuracy would read 100 %"
    )


@pytest.mark.parametrize(
    "labels, num_classes",
    [([0, 999999, 0, 999999], None), ([1, 2, 1, 2], 3), ([0, 3, 0, 3], 4), ([0, 4, 0, 4], None)],
)
def test_sparse_integer_labels_are_refused_beyond_twice_the_distinct_values(
    tmp_path, labels, num_classes
):
    """classes = max + 1 while at most half of them are unused (2 distinct: up to 4 classes)."""
    root = _save(
        tmp_path / "d",
        datasets.Features(image=IMAGE, label=INT),
        train={"image": _grays(4), "label": labels},
        test={"image": _grays(2), "label": labels[:2]},
    )
    if num_classes is None:
        top = max(labels) + 1
        _refused(
            root,
            f"label-column 'label' of hf:x holds 2 distinct integers up to {top - 1}: a "
            f"{top:,}-way output layer (classes = max + 1); allowed: labels 0..K-1 with at most "
            "half of them unused",
        )
    else:
        data = load_hf("x", data_root=root)
        assert data.num_classes == num_classes and data.y_train.tolist() == labels
        assert data.class_names == ()  # integers are their own classes


def test_string_labels_become_classes_in_sorted_order(tmp_path):
    root = _save(
        tmp_path / "d",
        datasets.Features(image=IMAGE, kind=STR),
        train={"image": _grays(4), "kind": ["dog", "cat", "emu", "cat"]},
        test={"image": _grays(2), "kind": ["emu", "dog"]},
    )
    data = load_hf("x", data_root=root, label_column="kind")
    assert data.num_classes == 3
    assert data.y_train.tolist() == [1, 0, 2, 0] and data.y_test.tolist() == [2, 1]
    assert data.class_names == ("cat", "dog", "emu")  # the label of each class, recorded


@pytest.mark.parametrize("name", ["copy.py", "copy.csv", "copy"])
def test_a_file_of_a_type_we_do_not_load_is_one_line(tmp_path, name):
    (tmp_path / name).write_text("print('hi')\n")
    with pytest.raises(ValueError) as err:
        load_hf("x", data_root=str(tmp_path / name))
    kind = name[4:] or "suffix-less"
    assert str(err.value) == (
        f"data-root '{tmp_path / name}' is a {kind} file, not one fedqdnn loads; allowed: a "
        ".parquet or .arrow file, or a folder (a save_to_disk folder, parquet files or an image "
        "folder)"
    )


def test_one_arrow_file_loads_like_the_saved_copy(tmp_path):
    saved = load_hf("t/w", data_root=str(save_writers(tmp_path / "saved")))
    (arrow,) = (tmp_path / "saved" / "train").glob("*.arrow")
    single = load_hf("t/w", data_root=str(arrow))  # train only: a seeded hold-out
    assert len(single.y_train) + len(single.y_test) == N_TRAIN
    assert single.num_classes == saved.num_classes


def test_natural_fleet_has_one_device_per_writer(tmp_path):
    root = str(save_writers(tmp_path / "saved"))
    cfg = from_flat(
        {
            "dataset": "hf:test/writers",
            "data-root": root,
            "partition": "natural",
            "partition-by": "writer_id",
            "num-clients": 0,
            "bits": "2,32",
            "tiers": "cpu-fp32:1.0",
        }
    )
    with pytest.raises(ValueError, match="resolved from the data first"):
        _ = cfg.participant_ids
    fleet = resolve_fleet(cfg)
    assert fleet.num_clients == len(WRITER_SAMPLES)
    sizes = [len(p) for p in fleet_partitions(fleet)]
    assert sizes == [WRITER_SAMPLES[w] for w in sorted(WRITER_SAMPLES)]
    device = device_for(fleet, 2)  # writer w2: 14 samples, round(14 * 0.2) = 3 for testing
    assert (len(device.y_train), len(device.y_test)) == (11, 3)
    assert device.x_train.dtype == torch.float32 and device.x_train.shape[1:] == (1, 28, 28)
    capped = resolve_fleet(fleet.replace(num_clients=4))
    assert len(fleet_partitions(capped)) == 4
    with pytest.raises(ValueError, match="7 natural partitions asked for, but only 6 ids"):
        resolve_fleet(fleet.replace(num_clients=7))


def test_cifar_download_failure_is_one_line(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DatasetFilesMissing) as err:
        load_cifar(tmp_path, 10, download=True)
    message = str(err.value)
    assert message.startswith("cifar10 could not be downloaded from http://127.0.0.1:9/")
    assert str(tmp_path) in message and "\n" not in message
