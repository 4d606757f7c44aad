"""What every results file records so a run can be reproduced: versions and platform, and for
timings the machine's load (a busy machine distorts every ratio)."""

from __future__ import annotations

import os
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


def load_average_1min() -> float:
    """The machine's 1-minute load average, rounded; benchmarks record it before and after."""
    return round(os.getloadavg()[0], 2)
