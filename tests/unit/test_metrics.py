"""training/metrics.py: precision and recall at the inspection rate, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    precision_at_rate,
    ranking_metrics,
    recall_at_rate,
    top_k_mask,
    value_recall_at_rate,
)

# ten lines, four misdeclared; scores rank lines 0, 2, (3 and 4 tie), 1, 5...
Y = np.array([1, 0, 1, 0, 1, 0, 0, 1, 0, 0])
SCORES = np.array([0.95, 0.40, 0.90, 0.70, 0.70, 0.30, 0.20, 0.10, 0.05, 0.01])
VALUES = np.array([100.0, 5.0, 50.0, 1.0, 30.0, 1.0, 1.0, 20.0, 1.0, 1.0])  # fraud value 200


@pytest.mark.parametrize(
    ("scores", "rate", "mask"),
    [
        pytest.param([0.9, 0.5, 0.5, 0.1], 0.5, [1, 1, 0, 0], id="tie-earlier-position-wins"),
        pytest.param([0.1, 0.5, 0.5, 0.9], 0.5, [0, 1, 0, 1], id="tie-earlier-position-wins-2"),
        pytest.param([0.9, 0.5, 0.5, 0.1], 0.26, [1, 1, 0, 0], id="ceil-1.04-is-2"),
        pytest.param([0.9, 0.5, 0.5, 0.1], 0.25, [1, 0, 0, 0], id="exactly-1"),
        pytest.param([0.9, 0.5, 0.5, 0.1], 1.0, [1, 1, 1, 1], id="everything"),
        pytest.param([0.2], 0.01, [1], id="at-least-one-line"),
        pytest.param([0.3, np.nan, 0.1], 0.5, [1, 0, 1], id="missing-score-ranks-last"),
    ],
)
def test_top_k_mask(scores, rate, mask):
    assert top_k_mask(np.array(scores), rate).astype(int).tolist() == mask


@pytest.mark.parametrize(("rate", "k"), [(0.07, 7), (0.03, 3), (0.1, 10), (0.15, 15), (0.29, 29), (0.57, 57)])
def test_top_k_is_ceil_of_rate_times_n_without_floating_point_excess(rate, k):
    """0.07 * 100 is 7.000000000000001 in binary floating point: still 7 lines, not 8."""
    assert top_k_mask(np.linspace(1, 0, 100), rate).sum() == k


@pytest.mark.parametrize(
    ("rate", "precision", "recall", "value_recall"),
    [
        pytest.param(0.1, 1.0, 1 / 4, 100 / 200, id="top-1"),
        pytest.param(0.2, 1.0, 2 / 4, 150 / 200, id="top-2"),
        pytest.param(0.3, 2 / 3, 2 / 4, 150 / 200, id="top-3-tie-takes-line-3"),
        pytest.param(0.4, 3 / 4, 3 / 4, 180 / 200, id="top-4-both-tied-lines"),
        pytest.param(0.35, 3 / 4, 3 / 4, 180 / 200, id="ceil-3.5-is-4"),
        pytest.param(1.0, 4 / 10, 1.0, 1.0, id="all"),
    ],
)
def test_precision_and_recall_at_rate(rate, precision, recall, value_recall):
    assert precision_at_rate(Y, SCORES, rate) == pytest.approx(precision)
    assert recall_at_rate(Y, SCORES, rate) == pytest.approx(recall)
    assert value_recall_at_rate(Y, SCORES, VALUES, rate) == pytest.approx(value_recall)


def test_without_positives_recall_is_undefined():
    assert math.isnan(recall_at_rate(np.zeros(5), np.arange(5.0), 0.4))
    assert math.isnan(value_recall_at_rate(np.zeros(5), np.arange(5.0), np.ones(5), 0.4))
    assert precision_at_rate(np.zeros(5), np.arange(5.0), 0.4) == 0.0


def test_value_recall_ignores_missing_values():
    values = np.array([np.nan, 10.0, 30.0])

    assert value_recall_at_rate(np.array([1, 1, 1]), np.array([0.9, 0.8, 0.1]), values, 0.5) == pytest.approx(0.25)


@pytest.mark.parametrize("rate", [0, -0.1, 1.01, 2, float("nan")])
def test_invalid_rate_is_refused(rate):
    with pytest.raises(ValueError, match=r"rate must be in \(0, 1\], got"):
        top_k_mask(SCORES, rate)
    with pytest.raises(ValueError, match="rate must be in"):
        precision_at_rate(Y, SCORES, rate)


def test_ranking_metrics_keys_and_values():
    metrics = ranking_metrics(Y, SCORES, rates=(0.1, 0.4), values=VALUES)

    assert set(metrics) == {
        "lines",
        "positives",
        "average_precision",
        "roc_auc",
        "brier",
        "precision_at_10pct",
        "recall_at_10pct",
        "value_recall_at_10pct",
        "precision_at_40pct",
        "recall_at_40pct",
        "value_recall_at_40pct",
    }
    assert (metrics["lines"], metrics["positives"]) == (10.0, 4.0)
    assert metrics["precision_at_40pct"] == pytest.approx(0.75)
    assert metrics["value_recall_at_10pct"] == pytest.approx(0.5)
    # 24 positive-negative pairs; the positive scores higher in 6 + 6 + 5 + 2 of them and ties in one (0.5)
    assert metrics["roc_auc"] == pytest.approx(19.5 / 24)
    assert metrics["brier"] == pytest.approx(float(np.mean((SCORES - Y) ** 2)))


def test_ranking_metrics_with_one_class_are_nan_where_undefined():
    metrics = ranking_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), rates=(0.5,))

    assert math.isnan(metrics["average_precision"]) and math.isnan(metrics["roc_auc"])
    assert math.isnan(metrics["recall_at_50pct"])
    assert metrics["precision_at_50pct"] == 0.0
    assert "value_recall_at_50pct" not in metrics
