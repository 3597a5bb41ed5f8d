"""Risk score bins shared by the bundle (its validation window's distribution) and the batch report.

Calibrated risk scores crowd near 0 (most lines are clean), so the bins are finer there; one
definition serves the spec written at training and every report that compares a batch with it.
"""

from __future__ import annotations

import numpy as np

RISK_BIN_EDGES = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def risk_counts(scores: np.ndarray) -> np.ndarray:
    """Lines per bin of :data:`RISK_BIN_EDGES` (the last bin includes 1.0; NaN scores are not counted)."""
    scores = np.asarray(scores, dtype="float64")
    counts, _ = np.histogram(scores[np.isfinite(scores)], bins=np.asarray(RISK_BIN_EDGES))
    return counts.astype("int64")


def shares(counts: np.ndarray) -> list[float]:
    """Counts as shares of their total (all zeros when the total is 0)."""
    counts = np.asarray(counts, dtype="float64")
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * len(counts)
