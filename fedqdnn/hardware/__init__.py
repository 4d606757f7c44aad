"""Simulated hardware: device profiles, the preset device classes and fleet composition.

``profile`` (what one device class can do), ``presets`` (the shipped classes and custom
profiles from TOML), ``fleet`` (which tier each device of a scenario has).
"""

from fedqdnn.hardware.fleet import (
    PROPORTION_TOLERANCE,
    assign_profiles,
    fleet_lowest_top_mode,
    fleet_lowest_top_mode_of,
)
from fedqdnn.hardware.presets import PRESETS, get_profile, profile_from_dict
from fedqdnn.hardware.profile import HardwareProfile

__all__ = [
    "PRESETS",
    "PROPORTION_TOLERANCE",
    "HardwareProfile",
    "assign_profiles",
    "fleet_lowest_top_mode",
    "fleet_lowest_top_mode_of",
    "get_profile",
    "profile_from_dict",
]
