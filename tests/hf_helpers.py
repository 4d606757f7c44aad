"""A small Hugging Face image data set made on the spot: FEMNIST's layout, a few writers.

Like ``flwrlabs/femnist``: 28x28 grayscale ``image``, a ``ClassLabel`` (here ``label``) and a
string ``writer_id``. Class k lights one quadrant of the image, so a few rounds learn it; every
writer has its own stroke intensity and a distinct number of training samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("north-west", "north-east", "south-west", "south-east")
WRITER_SAMPLES = {"w0": 10, "w1": 12, "w2": 14, "w3": 16, "w4": 18, "w5": 20}
TEST_PER_CLASS = 8


def draw(label: int, intensity: int, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 uint8 image of class ``label``: a bright quadrant over noise."""
    pixels = rng.integers(0, 60, size=(28, 28))
    row, col = divmod(label, 2)
    pixels[2 + 14 * row : 12 + 14 * row, 2 + 14 * col : 12 + 14 * col] = intensity
    return pixels.astype(np.uint8)


def rows(writers: dict[str, int], seed: int) -> dict[str, list]:
    """Columns (PIL images, labels, writer ids); labels cycle through the classes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"image": [], "label": [], "writer_id": []}
    for w, (writer, count) in enumerate(writers.items()):
        for i in range(count):
            label = (i + w) % len(CLASSES)
            out["image"].append(Image.fromarray(draw(label, 150 + 20 * w, rng), mode="L"))
            out["label"].append(label)
            out["writer_id"].append(writer)
    return out


def features():
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(CLASSES)),
            "writer_id": datasets.Value("string"),
        }
    )


def writers_dataset(with_test: bool = True):
    """A DatasetDict (train, and test unless ``with_test`` is false) of the writers."""
    import datasets

    train = datasets.Dataset.from_dict(rows(WRITER_SAMPLES, seed=0), features=features())
    splits = {"train": train}
    if with_test:
        test_writers = {f"t{k}": TEST_PER_CLASS for k in range(len(CLASSES))}
        splits["test"] = datasets.Dataset.from_dict(rows(test_writers, seed=1), features())
    return datasets.DatasetDict(splits)


def save_writers(folder: Path, with_test: bool = True) -> Path:
    """The data set written with save_to_disk into ``folder`` (no progress bars)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        writers_dataset(with_test).save_to_disk(str(folder))
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    return folder
