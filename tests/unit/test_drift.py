"""Population stability index: hand-computed bins and values, thresholds, the report on a real bundle."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.drift import (
    ALERT,
    STABLE,
    WATCH,
    DriftSettings,
    categorical_psi,
    drift_report,
    feature_psi,
    numeric_edges,
    numeric_psi,
    numeric_shares,
    psi_from_shares,
)

SETTINGS = DriftSettings(bins=2)


def test_psi_of_two_bins_by_hand():
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5) = 0.3 ln 1.6 + 0.3 ln 2.5 = 0.3 ln 4
    assert psi_from_shares([0.5, 0.5], [0.8, 0.2]) == pytest.approx(0.3 * math.log(4), abs=1e-12)


def test_an_empty_bin_counts_as_the_floor():
    # (0.5 - 1) ln 0.5 + (0.5 - 1e-4) ln(0.5 / 1e-4) = 0.5 ln 2 + 0.4999 ln 5000
    expected = 0.5 * math.log(2) + 0.4999 * math.log(5000)
    assert psi_from_shares([1.0, 0.0], [0.5, 0.5], floor=1e-4) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(4.604318, abs=1e-6)


def test_identical_shares_have_zero_psi():
    assert psi_from_shares([0.2, 0.3, 0.5, 0.0], [0.2, 0.3, 0.5, 0.0]) == 0.0


@pytest.mark.parametrize(
    ("bins", "edges"),
    [
        (2, [5.5]),
        (4, [3.25, 5.5, 7.75]),  # numpy's linear quantiles of 1..10 at 0.25, 0.5, 0.75
    ],
)
def test_edges_are_reference_quantiles(bins, edges):
    reference = np.r_[np.arange(1.0, 11.0), np.nan]  # missing values do not move the edges
    assert numeric_edges(reference, bins).tolist() == edges


def test_tied_quantiles_merge_and_no_values_give_no_edges():
    # quantiles at positions 2.25, 4.5 (both 0) and 6.75 (between 1 and 2)
    assert numeric_edges(np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 4.0]), 4).tolist() == [0.0, 1.75]
    assert numeric_edges(np.array([np.nan, np.nan]), 4).tolist() == []


def test_shares_put_edge_values_in_the_lower_bin_and_missing_values_last():
    values = np.array([1.0, 5.5, 5.6, 10.0, np.nan, -np.inf, np.inf, 2.0])
    # (-inf, 5.5]: 1, 5.5, -inf, 2 | (5.5, inf): 5.6, 10, inf | missing: nan
    assert numeric_shares(values, np.array([5.5])).tolist() == [4 / 8, 3 / 8, 1 / 8]


def test_numeric_psi_bins_on_the_reference():
    reference = np.arange(1.0, 11.0)  # shares 0.5 / 0.5 around the median 5.5
    current = np.array([1, 1, 1, 1, 1, 1, 1, 1, 9, 10.0])  # shares 0.8 / 0.2, no missing on either side
    assert numeric_psi(reference, current, SETTINGS) == pytest.approx(0.3 * math.log(4), abs=1e-12)


def test_categorical_psi_by_hand():
    reference = pd.Series(["a", "a", "b", None])  # missing .25, a .5, b .25, c 0
    current = pd.Series(["a", "b", "b", "c"])  # missing 0, a .25, b .5, c .25
    # missing and c: 2 x (0.25 - 1e-4) ln(0.25 / 1e-4); a and b: 2 x 0.25 ln 2
    expected = 2 * 0.2499 * math.log(2500) + 0.5 * math.log(2)
    assert categorical_psi(reference, current, SETTINGS) == pytest.approx(expected, abs=1e-12)


def test_categorical_psi_reads_pandas_categories_as_labels():
    reference = pd.Series(pd.Categorical(["x", "y", "x", "y"]))
    assert categorical_psi(reference, pd.Series(["x", "y", "y", "x"]), SETTINGS) == 0.0


@pytest.mark.parametrize(
    ("psi", "status"),
    [
        (0.0, STABLE),
        (0.0999, STABLE),
        (0.1, WATCH),
        (0.2499, WATCH),
        (0.25, ALERT),
        (3.0, ALERT),
    ],
)
def test_status_thresholds(psi, status):
    assert DriftSettings().status(psi) == status


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"bins": 1}, "bins must be >= 2"),
        ({"watch": 0.3, "alert": 0.25}, "0 < watch < alert"),
        ({"floor": 0.0}, "floor must be in"),
        ({"top_movers": 0}, "top_movers must be >= 1"),
    ],
)
def test_settings_are_checked(values, message):
    with pytest.raises(ValueError, match=message):
        DriftSettings(**values)


def test_feature_table_is_sorted_by_psi_with_kinds_and_statuses():
    reference = pd.DataFrame({"n": np.arange(1.0, 11.0), "c": ["a"] * 5 + ["b"] * 5, "same": np.ones(10)})
    current = pd.DataFrame({"n": [1.0] * 8 + [9.0, 10.0], "c": ["a"] * 5 + ["b"] * 5, "same": np.ones(10)})
    table = feature_psi(reference, current, ["c"], SETTINGS)
    assert table[["feature", "kind", "status"]].to_dict("records") == [
        {"feature": "n", "kind": "numeric", "status": ALERT},
        {"feature": "c", "kind": "categorical", "status": STABLE},
        {"feature": "same", "kind": "numeric", "status": STABLE},
    ]
    assert table["psi"].tolist() == pytest.approx([0.3 * math.log(4), 0.0, 0.0], abs=1e-12)


@pytest.fixture
def loaded_bundle(bundle_dir):
    from models.bundle import load_bundle_folder

    return load_bundle_folder(bundle_dir)


def test_report_of_a_batch_against_itself_is_all_zero(loaded_bundle, small_bundle):
    lines = small_bundle["lines"].head(2000)
    report = drift_report(loaded_bundle, lines, lines, DriftSettings(), num_threads=1)
    assert report.score_psi == 0.0 and report.status == STABLE
    assert (report.features["psi"] == 0.0).all()
    groups = small_bundle["spec"]["feature_groups"]
    assert report.excluded == [f for f in small_bundle["spec"]["model_features"] if groups[f] == "timing"]
    assert len(report.excluded) > 0 and not set(report.excluded) & set(report.features["feature"])


def test_report_finds_the_feature_that_moved(loaded_bundle, small_bundle):
    reference = small_bundle["lines"].head(2000)
    current = reference.assign(declared_value_usd=reference["declared_value_usd"] * 50)
    report = drift_report(loaded_bundle, reference, current, DriftSettings(top_movers=3), num_threads=1)
    movers = report.top_movers()
    assert len(movers) == 3 and set(movers["status"]) == {ALERT} and report.status == ALERT
    groups = small_bundle["spec"]["feature_groups"]
    moved = report.features[report.features["psi"] > 0]
    # Only the value changed: exactly the price features moved, every other one is identical.
    assert set(moved["feature"].map(groups)) == {"price"} and "value_per_kg" in set(moved["feature"])
    document = report.to_dict()
    assert document["top_movers"] == movers["feature"].tolist()
    assert document["settings"]["exclude_groups"] == ["timing"]
    assert report.mlflow_metrics()["drift_psi_score"] == pytest.approx(report.score_psi)


def test_report_needs_lines_on_both_sides(loaded_bundle, small_bundle):
    with pytest.raises(ValueError, match="both sides"):
        drift_report(loaded_bundle, small_bundle["lines"].head(10), small_bundle["lines"].head(0), DriftSettings())
