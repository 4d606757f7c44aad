"""The Flower app bundle (FAB) that `flwr run .` builds: the apps' code, none of docs/."""

import io
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk
from flwr.common.constant import FAB_MAX_SIZE

REPO = Path(__file__).resolve().parents[1]


def test_fab_holds_the_apps_code_and_no_results():
    fab = build_fab_from_disk(REPO)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    assert {n.split("/")[0] for n in names} == {
        ".info",
        "pyproject.toml",
        "fedqdnn",
        "strategies",
        "simulations",
    }
    assert "fedqdnn/federated/server_app.py" in names
    assert "fedqdnn/federated/client_app.py" in names
    assert "simulations/scenarios/fleet-100.toml" in names
    # docs/results grows with every experiment; it once pushed the FAB past Flower's cap
    assert len(fab) < FAB_MAX_SIZE // 4, len(fab)
