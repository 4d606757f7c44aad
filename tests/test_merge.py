"""Merging comparisons run apart: the merged tables are the parts' rows, and a merge that would
mix scenarios, count a run twice or leave an arm without a seed is refused in one line."""

import json

import pytest

from fedqdnn.cli import main
from fedqdnn.schema import COMPARISON_CSV, COMPARISON_FILE, COMPARISON_PLOTS, Comparison, run_key
from simulations import sweeps
from simulations.compare import summary_table
from simulations.margins import margins_table
from simulations.merge import merge_comparisons, select_arms
from simulations.scenarios import load_scenario
from tests.plot_data import comparison_at

FIELDS = ("accuracy", "accuracy_window_average_best_mode")


def _made(arms: int, seeds: int) -> Comparison:
    full = comparison_at(arms, 9, seeds=seeds, rounds=4)
    return full.model_copy(update={"config": {**full.config, "bits": "2,4,32"}})


def _part(full: Comparison, arms: list[str], seeds: list[int]) -> Comparison:
    """The runs of ``arms`` at ``seeds`` of ``full``, as if compared on their own."""
    keys = {run_key(a, s) for a in arms for s in seeds}
    return full.model_copy(
        update={
            "rows": [r for r in full.rows if r.arm in arms and r.seed in seeds],
            "curves": {k: v for k, v in full.curves.items() if k in keys},
            "per_device": {k: v for k, v in full.per_device.items() if k in keys},
            "arms": {a: full.arms[a] for a in arms},
            "seeds": seeds,
            "wall_seconds": 2.5,
        }
    )


@pytest.mark.parametrize(
    "split",
    [
        [(["s0", "s1", "s2"], [0, 1]), (["s0", "s1", "s2"], [2])],  # seeds run apart
        [(["s0", "s1"], [0, 1, 2]), (["s2"], [0, 1, 2])],  # an arm added later
    ],
    ids=["by-seed", "by-arm"],
)
def test_merged_parts_give_the_tables_of_the_comparison_run_as_one(split):
    full = _made(3, 3)
    parts = [_part(full, arms, seeds) for arms, seeds in split]
    merged = merge_comparisons(parts, ["a", "b"])
    for field in FIELDS:
        assert summary_table(merged, field) == summary_table(full, field)
    assert sorted(merged.rows, key=repr) == sorted(full.rows, key=repr)
    assert merged.curves == full.curves and merged.per_device == full.per_device
    assert merged.seeds == [0, 1, 2] and merged.distinct_seeds == 3
    assert [(p.folder, p.arms, p.seeds) for p in merged.parts] == [
        ("a", *split[0]),
        ("b", *split[1]),
    ]
    assert merged.wall_seconds == 5.0


def test_a_merge_that_would_mislead_is_refused_in_one_line():
    full = _made(2, 2)
    seed0, seed1 = _part(full, ["s0", "s1"], [0]), _part(full, ["s0", "s1"], [1])
    other = seed1.model_copy(update={"config": {**seed1.config, "alpha": 0.1}})
    with pytest.raises(ValueError, match=r"^b is another scenario than a \(alpha: 0.5 vs 0.1\)"):
        merge_comparisons([seed0, other], ["a", "b"])
    # a key one part lacks (written before it existed) is its default: the same scenario
    older = seed1.model_copy(update={"config": {**seed1.config, "global-kd-weight": 0.0}})
    assert merge_comparisons([seed0, older], ["a", "b"]).seeds == [0, 1]
    with pytest.raises(ValueError, match="^arm s0 seed 0 is in both a and b$"):
        merge_comparisons([seed0, seed0], ["a", "b"])
    lone = _part(full, ["s1"], [1])
    with pytest.raises(ValueError, match="every arm needs every seed .0, 1.; missing: s0 seed 1$"):
        merge_comparisons([seed0, lone], ["a", "b"])
    with pytest.raises(ValueError, match="at least two"):
        merge_comparisons([seed0], ["a"])


def test_select_arms_keeps_only_those_runs():
    full = _made(3, 2)
    picked = select_arms(full, ["s2", "s0"])
    assert list(picked.arms) == ["s2", "s0"]
    assert {r.arm for r in picked.rows} == {"s0", "s2"}
    assert set(picked.curves) == {run_key(a, s) for a in ("s0", "s2") for s in (0, 1)}
    with pytest.raises(ValueError, match=r"no arm s9 in it \(it has s0, s1, s2\)"):
        select_arms(full, ["s9"])


def _write(folder, comparison: Comparison):
    folder.mkdir(parents=True)
    (folder / COMPARISON_FILE).write_text(json.dumps(comparison.to_json()))
    return folder


def test_fedqdnn_merge_writes_the_merged_comparison_and_keeps_a_finished_one(tmp_path, capsys):
    full = _made(2, 2)
    a = _write(tmp_path / "a", _part(full, ["s0", "s1"], [0]))
    b = _write(tmp_path / "b", _part(full, ["s0", "s1"], [1]))
    out = tmp_path / "merged"
    assert main(["merge", str(a), str(b), "--out", str(out)]) == 0
    written = Comparison.model_validate(json.loads((out / COMPARISON_FILE).read_text()))
    assert summary_table(written) == summary_table(full)
    assert len((out / COMPARISON_CSV).read_text().splitlines()) == 1 + len(full.rows)
    assert all((out / name).is_file() for name in COMPARISON_PLOTS)
    before = (out / COMPARISON_FILE).read_text()
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--overwrite" in err, err
    assert main(["merge", str(a), str(tmp_path / "nowhere"), "--out", str(tmp_path / "m2")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere" in err, err
    assert (out / COMPARISON_FILE).read_text() == before
    assert not (tmp_path / "m2").exists()


def test_fedqdnn_merge_arms_merges_what_parts_share_at_other_seeds(tmp_path, capsys):
    # a full comparison at seed 0 and one arm re-run alone at seed 1: only that arm merges
    full = _made(2, 2)
    a = _write(tmp_path / "a", _part(full, ["s0", "s1"], [0]))
    b = _write(tmp_path / "b", _part(full, ["s1"], [1]))
    out = tmp_path / "merged"
    assert main(["merge", str(a), str(b), "--out", str(out)]) == 2  # s0 lacks seed 1
    assert "missing: s0 seed 1" in capsys.readouterr().err
    assert main(["merge", str(a), str(b), "--out", str(out), "--arms", "s1"]) == 0
    written = Comparison.model_validate(json.loads((out / COMPARISON_FILE).read_text()))
    assert list(written.arms) == ["s1"] and written.seeds == [0, 1]
    assert summary_table(written) == summary_table(select_arms(full, ["s1"]))
    capsys.readouterr()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m2"), "--arms", "s0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(b) in err and "no arm s0" in err, err
    assert not (tmp_path / "m2").exists()


def test_a_sweep_reads_a_point_already_compared_and_refuses_one_of_other_seeds(
    tmp_path, monkeypatch, capsys
):
    cfg = load_scenario("three-tier").replace(partition="dirichlet", alpha=0.3)
    made = comparison_at(3, 9, seeds=2, rounds=4)
    made = made.model_copy(update={"arms": {"fedqdnn": "", "lowest-common": "", "per-tier": ""}})
    renamed = dict(zip(["s0", "s1", "s2"], made.arms, strict=True))
    made = made.model_copy(
        update={
            "config": cfg.to_flat(),
            "rows": [r.model_copy(update={"arm": renamed[r.arm]}) for r in made.rows],
            "curves": {},
            "per_device": {},
        }
    )
    _write(tmp_path / "alpha-0.3", made)

    def no_run(*args, **kwargs):
        raise AssertionError("a finished point was run again")

    monkeypatch.setattr(sweeps, "run_comparison", no_run)
    got = sweeps.sweep({"alpha-0.3": cfg}, ["lowest-common", "fedqdnn"], [0, 1], tmp_path)
    assert list(got["alpha-0.3"].arms) == ["lowest-common", "fedqdnn"]
    assert {r.arm for r in got["alpha-0.3"].rows} == {"lowest-common", "fedqdnn"}
    with pytest.raises(ValueError, match=r"alpha-0.3: .* holds seeds 0,1, not 0,1,2; --overwrite"):
        sweeps.sweep({"alpha-0.3": cfg}, ["fedqdnn"], [0, 1, 2], tmp_path)
    other = cfg.replace(alpha=0.5)
    with pytest.raises(ValueError, match=r"holds another scenario \(alpha: 0.5 vs 0.3\)"):
        sweeps.sweep({"alpha-0.3": other}, ["fedqdnn"], [0, 1], tmp_path)
    # the command prints, per point, the paired margins table `fedqdnn tables` prints
    argv = ["sweeps", "alpha", "--scenario", "three-tier", "--values", "0.3", "--seeds", "0,1"]
    argv += ["--arms", "lowest-common,fedqdnn", "--out", str(tmp_path)]
    monkeypatch.setattr("sys.argv", argv)
    capsys.readouterr()
    sweeps.main()
    printed = capsys.readouterr().out
    expected = margins_table(got["alpha-0.3"])
    assert f"margins at alpha-0.3 (0.3):\n{expected}" in printed
    assert "lowest-common" in expected.splitlines()[2]
