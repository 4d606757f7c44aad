"""Scenario presets (TOML files shipped in the package) and user scenario files.

A scenario is a flat table of :class:`~fedqdnn.config.FederatedConfig` keys
(dashes or underscores) plus a ``[tiers]`` table of hardware profile -> proportion.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from fedqdnn.config import FederatedConfig, from_flat

DEFAULT_SCENARIO = "three-tier"


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    folder = resources.files("simulations") / "scenarios"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def _read(name_or_path: str) -> tuple[str, str]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if path.is_dir():
            raise ValueError(f"scenario {name_or_path!r} is a folder; give a .toml file")
        if not path.is_file():
            raise ValueError(f"scenario file {name_or_path!r} does not exist")
        try:
            return str(path), path.read_text(
                encoding="utf-8-sig"
            )  # a BOM (Windows editors) is no TOML
        except UnicodeDecodeError as err:
            raise ValueError(f"scenario {name_or_path}: not UTF-8 text (TOML), {err}") from None
        except OSError as err:
            raise ValueError(f"scenario {name_or_path}: cannot read it ({err.strerror})") from None
    if name_or_path not in preset_names():
        raise ValueError(
            f"unknown scenario {name_or_path!r}; allowed: {', '.join(preset_names())} "
            "or a path to a .toml file"
        )
    source = resources.files("simulations") / "scenarios" / f"{name_or_path}.toml"
    return name_or_path, source.read_text()


def load_scenario(name_or_path: str = DEFAULT_SCENARIO) -> FederatedConfig:
    """Parse and validate a preset name or TOML file; errors are one line naming the value."""
    label, text = _read(name_or_path)
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"scenario {label}: not valid TOML ({err})") from None
    try:
        return from_flat(table)
    except ValueError as err:
        raise ValueError(f"scenario {label}: {err}") from None
