"""Plots of a run and of a comparison at 9 and at 1,000 devices: fixed figure sizes, legends
whose colours are the colours of the marks they name (read from the matplotlib objects), only
evaluated rounds drawn, and ``fedqdnn plot`` redrawing from the files."""

import json
import math
import statistics

import numpy as np
import pytest
from matplotlib.collections import Collection
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fedqdnn.cli import main
from fedqdnn.config import FederatedConfig
from fedqdnn.federated.checkpoint import RunHistory
from fedqdnn.federated.report import build_results
from fedqdnn.federated.report_plots import (
    draw_accuracy,
    draw_device_accuracy,
    draw_sim_time,
    plot_results,
)
from fedqdnn.plotting import percent_text, pyplot, time_unit
from fedqdnn.schema import (
    COMPARISON_PLOTS,
    DEPLOYED_TIER_PLOT,
    DEVICE_PLOT,
    ROUND_PLOT,
    RUN_PLOTS,
    SIM_TIME_PLOT,
    SIZE_PLOT,
    SWEEP_FILE,
    SWEEP_PLOT,
    TIER_PLOT,
    TIME_PLOT,
    Curve,
    Sweep,
)
from simulations.compare_plots import (
    Band,
    draw_curves,
    draw_per_tier,
    draw_size,
    same_curves,
    seed_band,
)
from simulations.sweep_plots import draw_sweep
from simulations.sweeps import write_sweep
from tests.plot_data import TIERS, comparison_at, results_at
from tests.png_checks import assert_plot

EXPLANATORY = ("target", "deadline", "round duration")  # legend entries naming no series


def _rgb(color) -> tuple:
    return tuple(round(c, 4) for c in to_rgb(color))


def _colours(artist) -> set[tuple]:
    """The colours an artist is drawn in (alpha ignored: bands and box fills are translucent)."""
    if isinstance(artist, Line2D):
        colours = {artist.get_color()}
        if artist.get_marker() not in (None, "None", "none", ""):
            colours.add(artist.get_markerfacecolor())
        return {_rgb(c) for c in colours}
    if isinstance(artist, Patch):
        return {_rgb(artist.get_facecolor()), _rgb(artist.get_edgecolor())}
    if isinstance(artist, Collection):
        faces = artist.get_facecolors()
        return {_rgb(c) for c in (faces if len(faces) else artist.get_edgecolors())}
    raise AssertionError(f"unexpected mark {artist!r}")


def _legends(fig) -> list:
    return list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]


def _marks(fig) -> dict[str, list]:
    """Every artist drawn in an axes, by its gid (the series it belongs to); legend handles
    excluded."""
    in_legends = {id(h) for leg in _legends(fig) for h in leg.legend_handles}
    marks: dict[str, list] = {}
    for ax in fig.axes:
        for artist in ax.get_children():
            if artist.get_gid() and id(artist) not in in_legends:
                marks.setdefault(artist.get_gid(), []).append(artist)
    return marks


def _series_of(label: str) -> str:
    """``"mcu-int2 (2-bit): target at round 18"`` -> ``"mcu-int2"``."""
    return label.split(":")[0].split(" (")[0]


def assert_legends_match_marks(fig, skip_legend=lambda leg: False) -> dict[str, tuple]:
    """Every legend entry is drawn in exactly the colour of the marks of its series, and every
    series with marks is named in a legend; returns each series' colour."""
    marks = _marks(fig)
    named, colour_of = set(), {}
    for leg in _legends(fig):
        if skip_legend(leg):
            continue
        for handle, text in zip(leg.legend_handles, leg.get_texts(), strict=True):
            label = text.get_text()
            if label.startswith(EXPLANATORY):
                assert _series_of(label) not in marks, label
                continue
            series = _series_of(label)
            assert series in marks, (label, sorted(marks))
            (handle_colour,) = _colours(handle)
            for mark in marks[series]:
                assert _colours(mark) == {handle_colour}, (label, mark)
            named.add(series)
            colour_of[series] = handle_colour
    assert named == set(marks), set(marks) ^ named
    return colour_of


# ---------------------------------------------------------------- one run


@pytest.fixture(scope="module", params=[9, 1000], ids=["9-devices", "1000-devices"])
def run(request):
    return results_at(request.param, rounds=20)


def test_device_distribution_fixed_size_one_dot_per_device_legend_colours(run):
    fig = draw_device_accuracy(run)
    assert tuple(fig.get_size_inches()) == (9, 4.2)  # the same at 9 and at 1,000 devices
    colours = assert_legends_match_marks(fig)
    assert set(colours) == set(TIERS) and len(set(colours.values())) == len(TIERS)
    devices = run.per_device
    ax = fig.axes[0]
    dots = [c for c in ax.collections if c.get_gid()]
    assert sum(len(c.get_offsets()) for c in dots) == len(devices)
    for dot in dots:  # each tier's dots are exactly its devices' accuracies
        expected = sorted(d.accuracy for d in devices if d.tier == dot.get_gid())
        assert sorted(dot.get_offsets()[:, 1]) == pytest.approx(expected)
    counts = {t: sum(d.tier == t for d in devices) for t in TIERS}
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    for tier, (bits, *_) in TIERS.items():
        plural = "s" if counts[tier] != 1 else ""
        assert f"{tier} ({bits}-bit, {counts[tier]} device{plural})" in labels
    assert labels[-1] == "target 80%"
    pyplot().close(fig)


@pytest.mark.parametrize("by_time", [False, True], ids=["per-round", "vs-sim-time"])
def test_accuracy_curves_only_evaluated_rounds_and_convergence_stars(run, by_time):
    fig = draw_accuracy(run, by_time=by_time)
    assert tuple(fig.get_size_inches()) == (11, 4.2)
    assert_legends_match_marks(fig)
    history = run.history
    evaluated = [h for h in history if h.accuracy_by_tier]
    assert [h.round for h in evaluated] == [*range(2, 21, 2)]  # every 2 rounds and the last
    scale, unit = time_unit(history[-1].sim_elapsed_seconds) if by_time else (1.0, "")
    central_ax, tier_ax = fig.axes
    expected_x = [(h.sim_elapsed_seconds if by_time else h.round) / scale for h in evaluated]
    conv = run.convergence
    for ax, key_of, reached in (
        (central_ax, lambda g: g.removesuffix("-bit"), conv.by_bits),
        (tier_ax, lambda g: g, conv.by_tier),
    ):
        curves = [ln for ln in ax.get_lines() if ln.get_gid() and ln.get_marker() != "*"]
        stars = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_marker() == "*"}
        assert len(curves) == 3
        for line in curves:
            xs = list(line.get_xdata())
            xs = xs[1:] if ax is central_ax else xs  # central curve starts at round / time 0
            assert xs == pytest.approx(expected_x)
            assert np.isfinite(line.get_ydata()).all()  # no None / NaN points
            first = getattr(reached[key_of(line.get_gid())], "sim_seconds" if by_time else "round")
            star = stars[line.get_gid()]
            assert star.get_xdata()[0] == pytest.approx(first / scale)
            assert star.get_ydata()[0] >= conv.target_accuracy
    assert central_ax.get_xlabel() == (f"simulated time ({unit})" if by_time else "round")
    pyplot().close(fig)


def test_sim_time_plot_means_per_tier_and_round_duration(run):
    fig = draw_sim_time(run)
    assert tuple(fig.get_size_inches()) == (11, 4.2)
    assert_legends_match_marks(fig)
    history, ax = run.history, fig.axes[0]
    scale, _ = time_unit(max(h.sim_round_seconds for h in history))
    lines = {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}
    cpu = [[c.sim_seconds for c in h.clients if c.tier == "cpu-fp32"] for h in history]
    assert list(lines["cpu-fp32"].get_ydata()) == pytest.approx(
        [statistics.fmean(c) / scale for c in cpu]
    )
    duration = [ln for ln in ax.get_lines() if ln.get_label().startswith("round duration")][0]
    assert list(duration.get_ydata()) == pytest.approx(
        [h.sim_round_seconds / scale for h in history]
    )
    pyplot().close(fig)


def test_run_without_client_records_draws_accuracy_per_round_only(tmp_path):
    cfg = FederatedConfig(num_clients=2, rounds=2, bits=(2, 32), tiers={"cpu-fp32": 1.0})
    history = RunHistory()
    history.evaluate_metrics_serverapp = {
        r: {"accuracy-bits2": 0.3 + 0.2 * r, "accuracy-bits32": 0.4 + 0.2 * r} for r in (1, 2)
    }
    results = build_results(cfg, {}, history, 1.0)  # Flower's FedAvg records no clients
    assert plot_results(tmp_path, results) == [tmp_path / ROUND_PLOT]
    fig = draw_accuracy(results, by_time=False)
    assert len(fig.axes) == 1  # no device accuracy: the central panel alone
    assert_legends_match_marks(fig)
    pyplot().close(fig)


# ---------------------------------------------------------------- a comparison


@pytest.fixture(scope="module", params=[(9, 9), (15, 1000)], ids=["9-strategies", "15-strategies"])
def drawn(request):
    """A hand-built comparison and its four figures, drawn once per size."""
    strategies, devices = request.param
    comparison = comparison_at(strategies, devices, rounds=20)
    figures = {
        "bars": draw_per_tier(comparison),
        "rounds": draw_curves(comparison, by_time=False),
        "time": draw_curves(comparison, by_time=True),
        "size": draw_size(comparison),
    }
    yield comparison, figures
    for fig in figures.values():
        pyplot().close(fig)


def test_comparison_one_colour_per_strategy_in_every_plot_bounded_size(drawn):
    comparison, figures = drawn
    names = list(comparison.arms)
    per_figure = []
    for fig in figures.values():
        width, height = fig.get_size_inches()
        assert width <= 16 and height <= 7.5, (width, height)  # bounded at 15 strategies
        per_figure.append(_strategy_colours(fig, names))
    assert all(colours == per_figure[0] for colours in per_figure)  # same colour everywhere
    assert len(set(per_figure[0].values())) == len(names)  # no two strategies alike


def _strategy_colours(fig, names) -> dict[str, tuple]:
    """Each strategy's colour in one figure: its legend entry (checked against its marks), or
    for the bars (named on the axis, no legend) the colour of its bars in every panel."""
    if _legends(fig):
        tier_legend = lambda leg: leg.get_title().get_text().startswith("tier")  # noqa: E731
        colours = assert_legends_match_marks(fig, skip_legend=tier_legend)
    else:
        marks = _marks(fig)
        colours = {}
        for name in names:
            (colours[name],) = {c for bar in marks[name] for c in _colours(bar)}
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == names
    assert set(colours) - {"target"} == set(names), colours.keys()
    return {n: colours[n] for n in names}


def test_comparison_values_bars_bands_and_tier_markers(drawn):
    comparison, figures = drawn
    rows = comparison.rows
    for ax, tier in zip(figures["bars"].axes, TIERS, strict=True):
        bar = next(p for p in ax.patches if p.get_gid() == "s1")
        accs = [r.accuracy for r in rows if r.arm == "s1" and r.tier == tier]
        assert bar.get_width() == pytest.approx(statistics.fmean(accs))
    for i, (ax, tier) in enumerate(zip(figures["rounds"].axes, TIERS, strict=True)):
        line = next(ln for ln in ax.get_lines() if ln.get_gid() == "s0")
        assert list(line.get_xdata()) == [*range(2, 21, 2)]  # evaluated rounds only
        round2 = [  # s0 trains one model per tier: run i is this tier's
            comparison.curves[f"s0/seed{s}"][i].accuracy_by_tier[1][tier] for s in comparison.seeds
        ]
        assert line.get_ydata()[0] == pytest.approx(statistics.fmean(round2))
    legend = next(g for g in figures["size"].legends if g.get_title().get_text().startswith("tier"))
    entries = zip(legend.legend_handles, legend.get_texts(), strict=True)
    markers = {text.get_text(): handle.get_marker() for handle, text in entries}
    assert list(markers) == list(TIERS)
    used = {ln.get_marker() for ln in figures["size"].axes[0].get_lines() if ln.get_gid()}
    assert used - {"_"} == set(markers.values())  # "_": the error bars' caps


def _curve(accs, seconds, tier="t"):
    return Curve(participants="", rounds=[1, 2, 3, 4], sim_elapsed_seconds=seconds,
                 central_accuracy_by_bits=[{}] * 4,
                 accuracy_by_tier=[{tier: a} if a is not None else {} for a in accs])  # fmt: skip


def test_seed_band_hand_computed():
    result = comparison_at(1, 3, seeds=2, rounds=4)
    result.curves.clear()
    result.curves.update(
        {
            "a/seed0": [
                _curve([0.1, 0.2, 0.3, 0.4], [1, 2, 3, 4], tier="u"),  # another tier's run
                _curve([None, 0.5, None, 0.8], [1, 2, 3, 4]),
            ],
            "a/seed1": [_curve([None, 0.7, None, None], [2, 4, 6, 8])],  # t not sampled in 4
        }
    )
    band = seed_band(result, "a", "t")
    assert band.rounds == [2]  # only rounds every seed evaluated
    assert band.mean == pytest.approx([0.6]) and band.seconds == pytest.approx([3.0])
    assert band.std == pytest.approx([math.sqrt((0.1**2 + 0.1**2) / 1)])  # sample std
    result.curves["a/seed1"] = [_curve([None, 0.7, None, 1.0], [2, 4, 6, 8])]
    band = seed_band(result, "a", "t")
    assert band.rounds == [2, 4] and band.mean == pytest.approx([0.6, 0.9])
    assert band.seconds == pytest.approx([3.0, 6.0])
    assert seed_band(result, "a", "v") is None
    assert seed_band(result.model_copy(update={"seeds": [0]}), "a", "t").std == [0.0, 0.0]


def test_strategies_sharing_a_run_are_named_where_one_line_hides_the_other():
    band = Band(rounds=[2, 4], seconds=[1.0, 2.0], mean=[0.5, 0.7], std=[0.0, 0.1])
    other = Band(rounds=[2, 4], seconds=[1.0, 2.0], mean=[0.5, 0.8], std=[0.0, 0.1])
    bands = {"per-tier": band, "fedqdnn": other, "fp32-exclusive": band, "top-only": None}
    assert same_curves(bands) == ["per-tier = fp32-exclusive"]
    assert same_curves({"per-tier": band, "fedqdnn": other}) == []


# ---------------------------------------------------------------- fedqdnn plot


PNGS = {"results": [*RUN_PLOTS], "comparison": [*COMPARISON_PLOTS]}
# Pixel size (figure inches x 120 dpi) where the figure size is fixed, and the colours drawn:
# 3 tiers (+ 2 more bit modes per round), or the 2 arms of the comparison.
EXPECTED_PNG = {
    "results": {DEVICE_PLOT: ((1080, 504), 3), ROUND_PLOT: ((1320, 504), 5),
                TIME_PLOT: ((1320, 504), 5), SIM_TIME_PLOT: ((1320, 504), 3)},
    "comparison": {TIER_PLOT: (None, 2), DEPLOYED_TIER_PLOT: (None, 2), ROUND_PLOT: (None, 2),
                   TIME_PLOT: (None, 2),
                   SIZE_PLOT: ((1140, 576), 2)},
}  # fmt: skip


@pytest.mark.parametrize("kind", ["results", "comparison"])
def test_fedqdnn_plot_redraws_every_png_from_the_file(kind, tmp_path, capsys):
    data = results_at(9, rounds=4) if kind == "results" else comparison_at(2, 9, seeds=2, rounds=4)
    (tmp_path / f"{kind}.json").write_text(json.dumps(data.to_json()))
    assert main(["plot", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / name) for name in PNGS[kind]]
    for name, (size, hues) in EXPECTED_PNG[kind].items():
        assert_plot(tmp_path / name, size, hues)


def test_percent_text():
    assert [percent_text(v) for v in (0.8, 0.825, 1.0, 0.0)] == ["80%", "82.5%", "100%", "0%"]
    assert time_unit(119) == (1.0, "s") and time_unit(120) == (60.0, "min")
    assert time_unit(7200) == (3600.0, "h")


def test_the_png_check_refuses_a_figure_with_nothing_drawn(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.plot([0, 1], [0, 1], color="black")  # axes and ink, no coloured series
    fig.savefig(tmp_path / "empty.png", dpi=120)
    ax.plot([0, 1], [1, 0], color="tab:blue", lw=3)
    ax.plot([0, 1], [0.5, 0.5], color="tab:orange", lw=3)
    fig.savefig(tmp_path / "two.png", dpi=120)
    plt.close(fig)
    with pytest.raises(AssertionError):
        assert_plot(tmp_path / "empty.png", (1320, 504), hues=1)
    assert_plot(tmp_path / "two.png", (1320, 504), hues=2)
    with pytest.raises(AssertionError):
        assert_plot(tmp_path / "two.png", (1320, 504), hues=3)
    with pytest.raises(AssertionError):
        assert_plot(tmp_path / "two.png", (1080, 504), hues=2)


# ---------------------------------------------------------------- a sweep of comparisons


@pytest.mark.parametrize("arms", [4, 15])
def test_sweep_plot_one_line_per_arm_through_the_points_means_and_file(arms, tmp_path):
    strong, mild = comparison_at(arms, 9, rounds=4), comparison_at(arms, 1000, seeds=2, rounds=4)
    last = f"s{arms - 1}"
    for row in strong.rows:  # far below the rest at alpha 0.1: written out, not drawn to scale
        if row.arm == last:
            row.accuracy_window_average_best_mode = 0.1
    for comparison in (strong, mild):  # s1 the same as s0 (one model): one line hides the other
        s0 = {(r.seed, r.tier): r.accuracy_window_average_best_mode
              for r in comparison.rows if r.arm == "s0"}  # fmt: skip
        for row in comparison.rows:
            if row.arm == "s1":
                row.accuracy_window_average_best_mode = s0[row.seed, row.tier]
    points = {"alpha-0.1": "0.1", "alpha-0.5": "0.5"}
    result = write_sweep(tmp_path, "alpha", points, {"alpha-0.1": strong, "alpha-0.5": mild})
    assert Sweep.model_validate(json.loads((tmp_path / SWEEP_FILE).read_text())) == result
    assert_plot(tmp_path / SWEEP_PLOT, hues=2)
    fig = draw_sweep(result)
    assert len(fig.axes) == len(TIERS)
    assert fig.get_size_inches()[0] <= 16
    colours = assert_legends_match_marks(fig)
    assert len(set(colours.values())) == arms  # one colour per arm
    for ax, tier in zip(fig.axes, TIERS, strict=True):  # lowest mode first
        assert ax.get_title().startswith(tier)
        for name in ("s0", last):
            lines = ax.get_lines()  # the data line (round markers), not the error bars' caps
            (line,) = [ln for ln in lines if ln.get_gid() == name and ln.get_marker() == "o"]
            expected = [
                statistics.fmean(
                    r.accuracy_window_average_best_mode
                    for r in comparison.rows
                    if r.arm == name and r.tier == tier
                )
                for comparison in (strong, mild)
            ]
            assert list(line.get_ydata()) == pytest.approx(expected)
            assert list(line.get_xdata()) == [0, 1]
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "0.5"]
        assert ax.get_ylim()[0] > 0.1
        notes = [t.get_text() for t in ax.texts]
        assert notes == ["identical:\ns0 = s1", f"below the axis:\n{last} 10% at 0.1"], notes
    pyplot().close(fig)
