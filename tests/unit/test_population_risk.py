"""Unit tests of the risk's anchoring to the whole flow and of party-history dropout (training.train)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.predict import apply_calibration
from training.train import (
    MIN_EXPLORATION_POSITIVES,
    anchor_to_population,
    drop_party_history,
    exploration_prevalence,
    population_calibration,
)


def checks(selected_by: list, misdeclared: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "selected_by": pd.array(selected_by, dtype="string"),
            "inspected": [0 if s is None else 1 for s in selected_by],
            "misdeclared": pd.array(misdeclared, dtype="Int64"),
        }
    )


def test_the_exploration_hit_rate_counts_only_random_checks():
    hits = MIN_EXPLORATION_POSITIVES
    frame = checks(["exploration"] * 20 + ["targeted"] * 10 + [None] * 5, [1] * hits + [0] * (20 - hits) + [1] * 10 + [None] * 5)
    assert exploration_prevalence(frame) == (hits / 20, 20, hits)


def test_too_few_exploration_hits_give_no_estimate():
    hits = MIN_EXPLORATION_POSITIVES - 1
    frame = checks(["exploration"] * 20, [1] * hits + [0] * (20 - hits))
    assert exploration_prevalence(frame) is None
    assert exploration_prevalence(frame.drop(columns="selected_by")) is None


def test_anchoring_makes_the_mean_risk_the_population_rate_and_keeps_the_order():
    raw = np.random.default_rng(0).normal(-2, 2, 5_000)
    platt = {"method": "platt", "a": 1.3, "b": 0.8}
    anchored = anchor_to_population(platt, raw, 0.012)
    risk = apply_calibration(raw, anchored)
    assert risk.mean() == pytest.approx(0.012, abs=1e-9)
    assert anchored["a"] == 1.3
    assert (np.argsort(risk, kind="stable") == np.argsort(apply_calibration(raw, platt), kind="stable")).all()


def test_the_calibration_says_on_what_basis_it_was_fitted():
    platt = {"method": "platt", "a": 1.0, "b": 0.0}
    raw = np.zeros(4)
    none = checks(["targeted"] * 4, [1, 0, 1, 0])
    assert population_calibration(platt, raw, none, none)["basis"] == "inspected"
    explored = checks(["exploration"] * 50, [1] * 5 + [0] * 45)
    calibration = population_calibration(platt, raw, explored, none)
    assert (calibration["basis"], calibration["exploration_checks"], calibration["exploration_hits"]) == ("exploration", 50, 5)
    assert apply_calibration(raw, calibration) == pytest.approx(np.full(4, 0.1))


def test_history_dropout_hides_party_history_on_the_drawn_rows_only():
    X = pd.DataFrame(
        {"shipper_id_lines_before": np.arange(10.0), "flow_surge_ratio": np.ones(10), "value_per_kg": np.arange(10.0)}
    )
    groups = {"shipper_id_lines_before": "shipper_history", "flow_surge_ratio": "flow", "value_per_kg": "price"}
    dropped = drop_party_history(X, groups, 0.5, seed=1)
    expected = np.random.default_rng(1).random(10) < 0.5
    assert dropped["shipper_id_lines_before"].isna().to_numpy().tolist() == expected.tolist()
    assert dropped[["flow_surge_ratio", "value_per_kg"]].equals(X[["flow_surge_ratio", "value_per_kg"]])
    assert X["shipper_id_lines_before"].notna().all()  # the input is not changed
    assert drop_party_history(X, groups, 0.0, seed=1) is X
    with pytest.raises(ValueError, match="history_dropout must be in \\[0, 1\\), got 1.0"):
        drop_party_history(X, groups, 1.0, seed=1)
