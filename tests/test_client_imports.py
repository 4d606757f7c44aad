"""A device's process under Flower's Deployment Engine (a fresh process per message) imports
only what it uses: no plotting, no Ray, no table or sklearn stack once the data cache holds
the data."""

import json
import os
import subprocess
import sys

DEVICE_PROCESS = """
import json, sys
from fedqdnn.accelerator import select_device
from fedqdnn.config import from_flat
from fedqdnn.device import device_for
from fedqdnn.federated.client_app import ray_gpu_share
cfg = from_flat({"dataset": sys.argv[1]})
device_for(cfg, 0, select_device(cfg.device, gpu_share=ray_gpu_share()))
heavy = ("matplotlib", "ray", "sklearn", "scipy", "datasets", "pyarrow", "pandas")
print(json.dumps([m for m in heavy if m in sys.modules]))
"""


def _heavy_modules(dataset: str, cache) -> list[str]:
    env = {**os.environ, "FEDQDNN_CACHE": str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", DEVICE_PROCESS, dataset],
        env=env, capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_device_process_loads_digits_from_the_cache_without_sklearn_or_ray(tmp_path):
    assert "sklearn" in _heavy_modules("digits", tmp_path)  # first message: makes the split
    assert _heavy_modules("digits", tmp_path) == []  # every further message: the cache
