"""What every results file records so a run can be reproduced: versions and platform."""

from __future__ import annotations

import platform
import sys
from importlib import metadata


def versions() -> dict[str, str]:
    """Versions of Python, fedqdnn and the libraries that change numbers."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("fedqdnn", "torch", "flwr", "ray", "numpy", "scikit-learn", "mnist1d"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
