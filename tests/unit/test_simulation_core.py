"""The learning-loop simulation's pure parts: settings, the week's measures, the policy summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import typer

from serve.cli_simulate import _shares
from training.simulate import load_simulation_settings, policy_summary, simulated_world, week_metrics


@pytest.fixture(scope="module")
def settings():
    return load_simulation_settings(weeks=6, history_weeks=2, lines_per_week=500, **{"new_route.week": 2})


def _lines(fraud, route):
    return pd.DataFrame({"sim_fraud": fraud, "sim_route": route})


def test_week_metrics_count_against_the_truth_and_weigh_random_checks_by_their_probability(settings):
    lines = _lines(
        [1, 1, 1, 0, 0, 0, 0, 0, 1, 0], ["vn_sea", "vn_sea", "th_sea", "lane", "lane", "lane", "lane", "lane", "th_sea", "lane"]
    )
    inspected = np.array([1, 0, 1, 1, 0, 0, 0, 0, 1, 0], dtype=bool)
    explored = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 0], dtype=bool)
    probability = np.array([1, np.nan, 1, 1, np.nan, np.nan, np.nan, np.nan, 0.25, np.nan])
    metrics = week_metrics(4, lines, inspected, explored, probability, settings)
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
    without = week_metrics(4, lines, inspected & ~explored, np.zeros(10, dtype=bool), probability, settings)
    assert without["estimated_prevalence"] is None and without["random_checks"] == 0


def _week(week, found=0, retrained=True, lines=100, fraud=10, estimated=None, recall=None):
    return {
        "week": week,
        "new_fraud_found": found,
        "retrained": retrained,
        "lines": lines,
        "fraud": fraud,
        "estimated_fraud": estimated,
        "new_fraud_recall": recall,
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
    weekly.append(_week(7, recall=0.85, estimated=15.0))
    summary = policy_summary(weekly, settings)
    assert summary["new_fraud_recall_after_3_retrains"] == 0.85
    # 8 weeks of 100 lines, 10 frauds each; estimates 8..15 -> 92 of 80
    assert summary["prevalence_estimate_error"] == pytest.approx(abs(92 / 800 - 0.1) / 0.1)


def test_policy_summary_without_random_checks_has_no_estimate(settings):
    summary = policy_summary([_week(0), _week(1)], settings)
    assert summary["prevalence_estimate_error"] is None and summary["first_caught_week"] is None


def test_the_world_opens_the_new_route_in_the_shift_week(settings):
    world = simulated_world(settings)
    assert len(world) == 500 * 8
    on_route = world[(world["sim_route"] == "vn_sea") & (world["sim_fraud"] == 1)]
    assert len(on_route) > 0
    assert on_route["declared_at"].min() >= settings.shift_day
    assert settings.shift_day == pd.Timestamp("2025-01-06") + pd.Timedelta(weeks=4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"weeks": 0}, "weeks must be >= 1, got 0"),
        ({"new_route.week": 60}, "new_route.week must be in [0, weeks=52), got 60"),
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
