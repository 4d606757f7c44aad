"""A full disk mid-run end to end: the write fails naming its file, leaves no temporary, the
round-1 checkpoint survives, and a resume from it finishes identical to an uninterrupted run."""

import json
import os

import pytest

from fedqdnn import files
from fedqdnn.federated.run_folder import checkpoint_round
from fedqdnn.federated.simulation import simulate
from simulations.scenarios import load_scenario
from tests.full_disk import FullDisk
from tests.test_e2e_resume import _comparable

pytestmark = pytest.mark.e2e
FULL_AT = "model-round2.safetensors.tmp"  # round 2's checkpoint meets a full disk


def test_a_full_disk_keeps_the_checkpoint_and_a_resume_finishes_identically(tmp_path, monkeypatch):
    cfg = load_scenario().replace(num_clients=3, rounds=3, local_epochs=1)
    full = json.loads(json.dumps(simulate(cfg, tmp_path / "full").to_json()))

    out = tmp_path / "broken"
    real_open = open

    def open_on_a_full_disk(path, mode):
        raw = real_open(path, mode)
        return FullDisk(raw) if os.path.basename(path) == FULL_AT else raw

    monkeypatch.setattr(files, "open", open_on_a_full_disk, raising=False)
    with pytest.raises(OSError) as caught:
        simulate(cfg, out)
    monkeypatch.undo()
    target = out / "checkpoint" / "model-round2.safetensors"
    assert f"cannot write {target}: No space left on device" in str(caught.value)
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))
    assert checkpoint_round(out) == 1 and not (out / "results.json").exists()

    resumed = json.loads(json.dumps(simulate(cfg, out, resume=True).to_json()))
    assert _comparable(resumed) == _comparable(full)
