"""Metrics as customs measures them: precision and recall at the inspection capacity.

An agency inspects a fixed share of lines; what matters is how many of the lines it can open are
misdeclared (precision at that rate) and how much of the fraud they catch (recall, by count and by
value). Ranking ties are broken by position (stable sort), so results are reproducible.
"""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

DEFAULT_RATES = (0.01, 0.02, 0.05, 0.10)


def top_k_mask(scores: np.ndarray, rate: float) -> np.ndarray:
    """Boolean mask of the ``ceil(rate * n)`` highest scores (earlier position wins ties)."""
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    scores = np.asarray(scores, dtype="float64")
    # Decimal: in binary floating point 0.07 * 100 is 7.000000000000001, whose ceiling is 8.
    k = math.ceil(Decimal(repr(float(rate))) * len(scores))
    order = np.argsort(-scores, kind="stable")
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:k]] = True
    return mask


def precision_at_rate(y_true: np.ndarray, scores: np.ndarray, rate: float) -> float:
    """Share of misdeclared lines among the top ``rate`` of lines by score."""
    mask = top_k_mask(scores, rate)
    return float(np.asarray(y_true)[mask].mean()) if mask.any() else float("nan")


def recall_at_rate(y_true: np.ndarray, scores: np.ndarray, rate: float) -> float:
    """Share of all misdeclared lines found in the top ``rate`` of lines by score."""
    y_true = np.asarray(y_true)
    positives = y_true.sum()
    return float(y_true[top_k_mask(scores, rate)].sum() / positives) if positives else float("nan")


def value_recall_at_rate(y_true: np.ndarray, scores: np.ndarray, values: np.ndarray, rate: float) -> float:
    """Share of the misdeclared lines' declared value found in the top ``rate`` of lines."""
    y_true, values = np.asarray(y_true), np.asarray(values, dtype="float64")
    fraud_value = np.nansum(values * y_true)
    caught = np.nansum((values * y_true)[top_k_mask(scores, rate)])
    return float(caught / fraud_value) if fraud_value > 0 else float("nan")


def _rate_label(rate: float) -> str:
    return f"{rate * 100:g}pct"


def ranking_metrics(
    y_true: np.ndarray, scores: np.ndarray, rates=DEFAULT_RATES, values: np.ndarray | None = None
) -> dict[str, float]:
    """Average precision, ROC-AUC, Brier score, precision and recall at each inspection rate.

    Returns
    -------
    dict
        Keys ``average_precision``, ``roc_auc``, ``brier``, ``positives``, ``lines``,
        ``precision_at_{r}pct``, ``recall_at_{r}pct`` (and ``value_recall_at_{r}pct`` with values).
    """
    y_true = np.asarray(y_true, dtype="int64")
    scores = np.asarray(scores, dtype="float64")
    both_classes = 0 < y_true.sum() < len(y_true)
    metrics = {
        "lines": float(len(y_true)),
        "positives": float(y_true.sum()),
        "average_precision": float(average_precision_score(y_true, scores)) if both_classes else float("nan"),
        "roc_auc": float(roc_auc_score(y_true, scores)) if both_classes else float("nan"),
        "brier": float(brier_score_loss(y_true, np.clip(scores, 0, 1))) if len(y_true) else float("nan"),
    }
    for rate in rates:
        metrics[f"precision_at_{_rate_label(rate)}"] = precision_at_rate(y_true, scores, rate)
        metrics[f"recall_at_{_rate_label(rate)}"] = recall_at_rate(y_true, scores, rate)
        if values is not None:
            metrics[f"value_recall_at_{_rate_label(rate)}"] = value_recall_at_rate(y_true, scores, values, rate)
    return metrics
