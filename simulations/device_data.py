"""Write each device's data as its own folder, for a lab deployment (docs/deployment.md).

A real device holds only its own data. This splits a data set as a simulation would (the
same ``num-clients``, ``partition``, ``alpha``, ``seed`` and ``local-test-fraction``) and
writes device K's local train and test examples to ``OUT/device-K`` as a Hugging Face
``save_to_disk`` folder (``image`` + ``label`` columns), which a SuperNode then declares with
``data-root``. Image data sets only (8x8 digits, hf: image sets).

    python -m simulations.device_data --dataset digits --num-clients 3 --out /tmp/devices
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from fedqdnn.config import FederatedConfig, from_flat
from fedqdnn.fleet import fleet_partitions, run_data
from fedqdnn.partition import split_local
from fedqdnn.rng import local_split_seed

DEVICE_FOLDER = "device-{}"


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """Model inputs (N, C, H, W) back to uint8 pixels by one linear map over the whole set: a
    device standardizes its pixels again, so only the shape of the distribution matters."""
    array = x.float().numpy()
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / max(high - low, 1e-12) * 255.0
    return np.rint(scaled).astype(np.uint8)


def write_devices(cfg: FederatedConfig, out: Path) -> list[Path]:
    """Every device's local train/test split as ``out/device-K`` (save_to_disk folders)."""
    import datasets
    from PIL import Image

    data = run_data(cfg)
    if len(data.input_shape) != 3 or data.input_shape[0] not in (1, 3):
        raise ValueError(
            f"dataset = {cfg.data.dataset!r} has inputs of shape {data.input_shape}; allowed: "
            "image data sets (1 or 3 channels)"
        )
    pixels = to_pixels(data.train_inputs())
    names = list(data.class_names) or [str(c) for c in range(data.num_classes)]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=names)}
    )

    def split(rows: np.ndarray) -> datasets.Dataset:
        mode = "L" if pixels.shape[1] == 1 else "RGB"
        images = [
            Image.fromarray(p[0] if mode == "L" else p.transpose(1, 2, 0), mode=mode)
            for p in pixels[rows]
        ]
        labels = data.y_train[torch.as_tensor(rows)].tolist()
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    folders = []
    for pid, shard in enumerate(fleet_partitions(cfg)):
        train, test = split_local(shard, cfg.local_test_fraction, local_split_seed(cfg.seed, pid))
        folder = out / DEVICE_FOLDER.format(pid)
        datasets.DatasetDict({"train": split(train), "test": split(test)}).save_to_disk(folder)
        folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--num-clients", type=int, default=3)
    parser.add_argument("--partition", default="iid")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = from_flat(
        {
            "dataset": args.dataset,
            "num-clients": args.num_clients,
            "partition": args.partition,
            "alpha": args.alpha,
            "seed": args.seed,
        }
    )
    for folder in write_devices(cfg, args.out):
        print(folder)


if __name__ == "__main__":
    main()
