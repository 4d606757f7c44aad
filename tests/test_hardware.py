"""Hardware profiles: validation messages, per-mode costs, presets, exact tier assignment."""

from collections import Counter

import pytest

from fedqdnn.hardware import (
    PRESETS,
    HardwareProfile,
    assign_profiles,
    get_profile,
    profile_from_dict,
)


def _profile(**overrides) -> HardwareProfile:
    fields = dict(
        name="dev",
        bit_modes=(8, 4),
        ms_per_sample_fp32=6.0,
        speedup_by_bits={4: 3.0, 8: 2.0},
        memory_mb=100,
        uplink_mbps=1.0,
        downlink_mbps=10.0,
        availability=0.5,
    )
    fields.update(overrides)
    return HardwareProfile(**fields)


def test_profile_normalises_modes_and_numbers():
    p = _profile()
    assert p.bit_modes == (4, 8)
    assert p.memory_mb == 100.0 and isinstance(p.memory_mb, float)
    assert p.speedup_by_bits == {4: 3.0, 8: 2.0}
    assert hash(p) == hash(_profile())  # frozen profiles can key caches and sets


def test_ms_per_sample_and_modes():
    p = _profile()
    assert p.native_ms_per_sample(4) == pytest.approx(2.0)  # 6 / 3
    assert p.native_ms_per_sample(8) == pytest.approx(3.0)  # 6 / 2
    assert p.native_ms_per_sample(2) == pytest.approx(2.0)  # emulated on the 4-bit path
    with pytest.raises(ValueError, match=r"'dev' cannot run bit mode 32; allowed: modes up to 8"):
        p.native_ms_per_sample(32)
    assert p.affordable_modes([2, 4, 8, 32]) == (2, 4, 8)
    assert p.top_mode((32, 8, 2, 4)) == 8
    assert p.top_mode([4]) == 4
    with pytest.raises(ValueError, match=r"'dev' runs at most 8-bit but the model has \(16|32"):
        p.affordable_modes([32])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"bit_modes": (0, 8), "speedup_by_bits": {0: 1.0, 8: 2.0}},
            r"bit mode 0 .*allowed: 1-8 or 32",
        ),
        ({"bit_modes": (33,), "speedup_by_bits": {33: 1.0}}, r"bit mode 33 .*allowed: 1-8 or 32"),
        (
            {"bit_modes": (), "speedup_by_bits": {}},
            r"bit_modes \(\) is invalid; allowed: non-empty",
        ),
        ({"bit_modes": (8, 8)}, r"repeat a mode"),
        ({"availability": 0}, r"availability 0 is invalid; allowed: 0 < a <= 1"),
        ({"availability": 1.5}, r"availability 1.5 is invalid"),
        (
            {"ms_per_sample_fp32": -1.0},
            r"ms_per_sample_fp32 -1.0 is invalid; allowed: a number > 0",
        ),
        ({"memory_mb": 0}, r"memory_mb 0 is invalid"),
        ({"uplink_mbps": float("inf")}, r"uplink_mbps inf is invalid"),
        ({"downlink_mbps": True}, r"downlink_mbps True is invalid"),
        (
            {"speedup_by_bits": {4: 3.0}},
            r"speedup_by_bits lacks modes \(8,\); allowed: exactly \(4, 8\)",
        ),
        ({"speedup_by_bits": {4: 3.0, 8: 2.0, 2: 9.0}}, r"key 2 is not one of its bit_modes"),
        ({"speedup_by_bits": {4: 0.0, 8: 2.0}}, r"speedup_by_bits\[4\] 0.0 is invalid"),
        (
            {"bit_modes": (8, 32), "speedup_by_bits": {8: 2.0, 32: 1.5}},
            r"speedup_by_bits\[32\] 1.5 is invalid; allowed: 1.0",
        ),
        ({"hypothetical": "yes"}, r"hypothetical 'yes' is invalid"),
    ],
)
def test_profile_validation_messages(overrides, message):
    with pytest.raises(ValueError, match=message) as info:
        _profile(**overrides)
    text = str(info.value)
    assert "\n" not in text
    assert "'dev'" in text  # names the profile


def test_profile_needs_a_name():
    with pytest.raises(ValueError, match="name '' is invalid"):
        _profile(name="")


def test_presets_match_device_classes():
    modes = {name: p.bit_modes for name, p in PRESETS.items()}
    assert modes["mcu-int2"] == (2,)
    assert modes["edge-tpu-int8"] == (8,)
    assert modes["phone-npu-int4"] == (4, 8)
    assert modes["phone-int8"] == (8, 32)
    assert modes["cpu-fp32"] == (32,)
    assert modes["jetson"] == (4, 8, 32)
    assert modes["universal"] == (1, 2, 3, 4, 5, 6, 7, 8, 32)
    assert [n for n, p in PRESETS.items() if p.hypothetical] == ["mcu-int2"]
    for p in PRESETS.values():
        assert "relative" in p.description and "not measurements" in p.description
        if 32 in p.bit_modes:
            assert p.native_ms_per_sample(32) == p.ms_per_sample_fp32
        # fewer bits never cost more on the same device
        costs = [p.native_ms_per_sample(b) for b in p.bit_modes]
        assert costs == sorted(costs)
    assert get_profile("jetson") is PRESETS["jetson"]
    with pytest.raises(ValueError, match=r"unknown hardware profile 'tpu'; allowed: mcu-int2, "):
        get_profile("tpu")


def test_profile_from_dict_toml_style():
    p = profile_from_dict(
        {
            "name": "watch",
            "bit_modes": [8, 4],
            "ms_per_sample_fp32": 20,
            "speedup_by_bits": {"4": 4, "8": 2.0},
            "memory_mb": 64,
            "uplink_mbps": 0.5,
            "downlink_mbps": 2,
            "availability": 0.3,
        }
    )
    assert p.bit_modes == (4, 8) and p.speedup_by_bits == {4: 4.0, 8: 2.0}
    assert p.native_ms_per_sample(4) == pytest.approx(5.0)
    assert p.description == "" and not p.hypothetical


def test_profile_from_dict_base_and_errors():
    slow = profile_from_dict({"base": "jetson", "name": "slow-jetson", "availability": 0.2})
    assert slow.bit_modes == (4, 8, 32) and slow.availability == 0.2
    assert "based on 'jetson'" in slow.description
    with pytest.raises(
        ValueError, match=r"keys \['color', 'speed'\] are unknown; allowed: base, name"
    ):
        profile_from_dict({"name": "x", "speed": 1, "color": "red"})
    with pytest.raises(ValueError, match=r"lacks keys \['name'\]"):
        profile_from_dict({"base": "jetson"})
    with pytest.raises(ValueError, match=r"'x' lacks keys \['bit_modes', "):
        profile_from_dict({"name": "x"})
    with pytest.raises(ValueError, match=r"speedup_by_bits key 'four' is not one of"):
        profile_from_dict({"base": "phone-npu-int4", "name": "x", "speedup_by_bits": {"four": 2}})


def _counts(tiers: list[str]) -> dict[str, int]:
    return dict(Counter(tiers))


def test_assign_profiles_exact_counts():
    assert _counts(assign_profiles(10, {"a": 0.5, "b": 0.3, "c": 0.2}, seed=0)) == {
        "a": 5,
        "b": 3,
        "c": 2,
    }
    # 7/3 each: floors 2/2/2, the one leftover goes to the first-listed tier on a tie
    third = 1 / 3
    assert _counts(assign_profiles(7, {"a": third, "b": third, "c": third}, seed=0)) == {
        "a": 3,
        "b": 2,
        "c": 2,
    }
    # quotas 2.4 / 1.8 / 0.6 / 1.2 -> floors 2/1/0/1, leftover 2 to b (.8) and c (.6)
    props = {"a": 0.4, "b": 0.3, "c": 0.1, "d": 0.2}
    assert _counts(assign_profiles(6, props, seed=3)) == {"a": 2, "b": 2, "c": 1, "d": 1}
    # quotas 3.8 / 0.1 / 0.1: floors 3/0/0, leftover to a -> 4/0/0; then b and c each take one
    # client from a (the only tier with two or more) so every tier is present
    props = {"a": 0.95, "b": 0.025, "c": 0.025}
    assert _counts(assign_profiles(4, props, seed=0)) == {"a": 2, "b": 1, "c": 1}
    # quotas 3.0 / 1.8 / 0.2 -> 3/2/0; c takes from b (0.2 above quota), not the larger a (0.0)
    props = {"a": 0.6, "b": 0.36, "c": 0.04}
    assert _counts(assign_profiles(5, props, seed=0)) == {"a": 3, "b": 1, "c": 1}
    # fewer clients than tiers: plain largest remainder, some tiers absent
    assert _counts(assign_profiles(2, {"a": 0.5, "b": 0.3, "c": 0.2}, seed=0)) == {"a": 1, "b": 1}
    assert assign_profiles(1, {"only": 1.0}, seed=9) == ["only"]


def test_assign_profiles_is_seeded_shuffle():
    props = {"a": 0.5, "b": 0.3, "c": 0.2}
    first = assign_profiles(20, props, seed=1)
    assert first == assign_profiles(20, props, seed=1)
    other = assign_profiles(20, props, seed=2)
    assert other != first and sorted(other) == sorted(first)
    assert first != sorted(first)  # shuffled, not grouped by tier


@pytest.mark.parametrize(
    ("num", "props", "message"),
    [
        (10, {"a": 0.5, "b": 0.4}, r"sum to 0.9; allowed: a sum of 1"),
        (10, {"a": 0.5, "b": 0.6}, r"sum to 1.1"),
        (10, {"a": 1.0, "b": 0.0}, r"proportion 'b'=0.0 is invalid; allowed: 0 < p <= 1"),
        (10, {"a": 1.5, "b": -0.5}, r"proportion 'a'=1.5 is invalid"),
        (10, {"a": "half", "b": 0.5}, r"proportion 'a'='half' is invalid"),
        (10, {}, r"no hardware proportions given"),
        (0, {"a": 1.0}, r"num_clients 0 is invalid; allowed: an integer >= 1"),
        (2.0, {"a": 1.0}, r"num_clients 2.0 is invalid"),
    ],
)
def test_assign_profiles_errors(num, props, message):
    with pytest.raises(ValueError, match=message):
        assign_profiles(num, props, seed=0)


def test_assign_profiles_tolerates_rounding_in_sum():
    props = {"a": 0.1, "b": 0.2, "c": 0.7 + 5e-7}
    assert len(assign_profiles(100, props, seed=0)) == 100
