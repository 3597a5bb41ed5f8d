"""The learning-loop simulation's pure parts: settings, the week's measures, the policy summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import typer

from serve.cli_simulate import _shares
from training.simulate import (
    load_simulation_settings,
    new_fraud_masks,
    policy_summary,
    shift_networks,
    simulated_world,
    week_metrics,
)

SHIFT_WEEKS = {"new_cover": 2, "new_hub": 3, "abandoned_route": 4}


@pytest.fixture(scope="module")
def settings():
    return load_simulation_settings(weeks=6, history_weeks=2, lines_per_week=500, shift_weeks=SHIFT_WEEKS)


def _masks(settings, new):
    """The headline shift's new fraud is ``new``; the other shifts have none."""
    return {
        name: np.asarray(new, dtype=bool) if name == settings.headline else np.zeros(len(new), bool) for name in settings.shifts
    }


def test_week_metrics_count_against_the_truth_and_weigh_random_checks_by_their_probability(settings):
    lines = pd.DataFrame({"sim_fraud": [1, 1, 1, 0, 0, 0, 0, 0, 1, 0]})
    new = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    inspected = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 0], dtype=bool)
    explored = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0], dtype=bool)
    probability = np.array([1, np.nan, 1, 1, np.nan, np.nan, np.nan, np.nan, 0.25, np.nan])
    metrics = week_metrics(4, lines, inspected, explored, probability, settings, _masks(settings, new))
    other = {"new_fraud": 0, "new_fraud_found": 0, "new_fraud_recall": None}
    headline = {"new_fraud": 2, "new_fraud_found": 1, "new_fraud_recall": 0.5}
    assert metrics.pop("shifts") == {name: headline if name == settings.headline else other for name in settings.shifts}
    assert metrics == {
        "week": 4,
        "lines": 10,
        "fraud": 4,
        "inspected": 4,
        "random_checks": 1,
        "recall_at_capacity": 0.75,
        "hit_rate": 0.75,
        "new_fraud": 2,
        "new_fraud_found": 1,
        "new_fraud_recall": 0.5,
        "true_prevalence": 0.4,
        # two model hits count once each, the random hit for the 4 lines of its pool: 6 of 10
        "estimated_prevalence": 0.6,
        "estimated_fraud": 6.0,
    }
    without = week_metrics(
        4, lines, inspected & ~explored, np.zeros(10, dtype=bool), probability, settings, _masks(settings, new)
    )
    assert without["estimated_prevalence"] is None and without["random_checks"] == 0


def _week(week, found=0, retrained=True, lines=100, fraud=10, estimated=None, recall=None, new=5):
    shift = {"new_fraud": new, "new_fraud_found": found, "new_fraud_recall": recall}
    return {
        "week": week,
        "retrained": retrained,
        "lines": lines,
        "fraud": fraud,
        "estimated_fraud": estimated,
        "shifts": {name: shift for name in SHIFT_WEEKS},
    }


def test_policy_summary_reads_the_week_after_the_third_retrain_since_the_new_fraud_was_caught(settings):
    weekly = [
        _week(0, estimated=8.0),
        _week(1, found=0, estimated=9.0),
        _week(2, found=1, retrained=False, estimated=10.0),
        _week(3, estimated=11.0, recall=0.4),
        _week(4, retrained=False, estimated=12.0, recall=0.5),
        _week(5, estimated=13.0, recall=0.6),
        _week(6, estimated=14.0, recall=0.9),
    ]
    summary = policy_summary(weekly, settings)
    assert summary["first_caught_week"] == 2
    # retrains in weeks 3, 5, 6 after the catch in week 2: the third is week 6, the next week is missing
    assert summary["new_fraud_recall_after_3_retrains"] is None
    assert summary["recovered_week"] == 6
    # The headline shift starts in week 2: 1 of the 5 + 5 new frauds of weeks 2 and 3 found.
    assert summary["recall_first_2_weeks"] == 0.1
    # The new hub starts in week 3: nothing found in weeks 3 and 4.
    assert summary["shifts"]["new_hub"]["recall_first_2_weeks"] == 0.0
    assert summary["shifts"]["new_hub"]["first_caught_week"] is None
    weekly.append(_week(7, recall=0.85, estimated=15.0))
    summary = policy_summary(weekly, settings)
    assert summary["new_fraud_recall_after_3_retrains"] == 0.85
    # 8 weeks of 100 lines, 10 frauds each; estimates 8..15 -> 92 of 80
    assert summary["prevalence_estimate_error"] == pytest.approx(abs(92 / 800 - 0.1) / 0.1)


def test_policy_summary_without_random_checks_has_no_estimate(settings):
    summary = policy_summary([_week(0), _week(1)], settings)
    assert summary["prevalence_estimate_error"] is None and summary["first_caught_week"] is None


def test_the_world_shifts_in_each_shift_week_and_each_new_fraud_is_counted_once(settings):
    world = simulated_world(settings)
    assert len(world) == 500 * 8
    assert settings.shift_day("new_hub") == pd.Timestamp("2025-01-06") + pd.Timedelta(weeks=2 + 3)
    masks = new_fraud_masks(world, settings, shift_networks(world, settings))
    assert sum(m.astype(int) for m in masks.values()).max() == 1
    for name, mask in masks.items():
        assert (world.loc[mask, "sim_fraud"] == 1).all()
        assert (world.loc[mask, "declared_at"] >= settings.shift_day(name)).all()
    # The new hub's fraud (not under the new cover) is all there is on the route.
    on_route = (world["sim_route"] == "vn_sea") & (world["sim_fraud"] == 1)
    assert (masks["new_hub"] == (on_route & ~masks["new_cover"])).all()
    assert masks["new_cover"].sum() > 0 and masks["new_hub"].sum() > 0
    # The abandoned route carries no network fraud from its week.
    network = world["sim_scenario"] == "fraud_network"
    after = world["declared_at"] >= settings.shift_day("abandoned_route")
    assert not (network & after & (world["sim_route"] == "mx_road") & (world["sim_fraud"] == 1)).any()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"weeks": 0}, "weeks must be >= 1, got 0"),
        ({"shift_weeks": {"new_cover": 60}}, "shifts.new_cover.week must be in [0, weeks=52), got 60"),
        ({"headline": "nothing"}, "headline 'nothing' is not one of the shifts"),
        ({"world": "train-0"}, "world must be 'held-out-<i>', got 'train-0'"),
    ],
)
def test_settings_refuse_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_simulation_settings(**overrides)


def test_exploration_shares_keep_their_spelling():
    assert _shares("0, 0.05,0.1") == [("0", 0.0), ("0.05", 0.05), ("0.1", 0.1)]
    for bad in ("0,x", "1.5", "0.1,0.1"):
        with pytest.raises(typer.BadParameter):
            _shares(bad)


def test_a_held_out_world_brings_its_own_structure_and_seed():
    default = load_simulation_settings()
    held_out = load_simulation_settings(world="held-out-0")
    assert held_out.seed != default.seed
    assert held_out.generator["fraud"]["rate_at_full_intensity"] != default.generator["fraud"]["rate_at_full_intensity"]
    # The scenario's shifts stay.
    assert held_out.generator["fraud"]["new_covers"] == default.generator["fraud"]["new_covers"]
