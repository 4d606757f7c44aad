"""The dependency contract (pyproject.toml [tool.importlinter]) holds: core <- strategies <-
Flower apps <- simulations / benchmarks <- CLI, and only the runner imports the ClientApp."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e_helpers import REPO


def test_import_contracts_are_kept():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    proc = subprocess.run(
        [lint, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout
