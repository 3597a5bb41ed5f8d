"""Score validated manifest lines with a bundle: risk, channel, reasons, suspected commodity.

This is the only path from manifest line to score: batch scoring, the API and retraining call
:func:`score_frame` with a loaded bundle, whose fitted pipeline builds the features.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from features.pipeline import transform_features
from models.reasons import PhraseContext, group_contributions, write_reasons

OUTPUT_COLUMNS = ("risk_score", "channel", "reasons", "suspected_commodity", "model_version")
EXPLAIN_CHOICES = ("flagged", "red", "all", "none")
NO_COMMODITY = "none"


def apply_calibration(raw_scores: np.ndarray, calibration: dict) -> np.ndarray:
    """Calibrated probability from LightGBM raw scores (log-odds) with the bundle's calibration."""
    if calibration.get("method") != "platt":
        raise ValueError(f"unknown calibration method {calibration.get('method')!r}")
    logits = calibration["a"] * np.asarray(raw_scores, dtype="float64") + calibration["b"]
    return expit(logits)  # the logistic function without overflow on extreme logits


def channel_for(scores: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """'red' above the red threshold, 'yellow' above the yellow one, else 'green'.

    Strictly above: when many lines tie at a threshold, flagging all of them would exceed the
    inspection capacity the threshold was set for.
    """
    scores = np.asarray(scores)
    return np.where(scores > thresholds["red"], "red",
                    np.where(scores > thresholds["yellow"], "yellow", "green")).astype(object)


def suspected_commodity(bundle, X: pd.DataFrame, flagged: np.ndarray, num_threads: int) -> np.ndarray:
    """Most likely hidden good for flagged lines (from the commodity model), 'none' elsewhere."""
    result = np.full(len(X), NO_COMMODITY, dtype=object)
    if bundle.commodity_booster is None or not flagged.any():
        return result
    features = bundle.spec.get("commodity_features", list(X.columns))
    probabilities = bundle.commodity_booster.predict(X.loc[flagged, features], num_threads=num_threads)
    result[flagged] = np.asarray(bundle.spec["commodities"], dtype=object)[probabilities.argmax(axis=1)]
    return result


def explain_mask(channels: np.ndarray, explain: str) -> np.ndarray:
    """Which lines get reasons: flagged (red+yellow, default), red, all or none."""
    if explain not in EXPLAIN_CHOICES:
        raise ValueError(f"explain must be one of {EXPLAIN_CHOICES}, got {explain!r}")
    if explain == "all":
        return np.ones(len(channels), dtype=bool)
    if explain == "none":
        return np.zeros(len(channels), dtype=bool)
    return np.isin(channels, ["red"] if explain == "red" else ["red", "yellow"])


def reasons_for(bundle, derived: pd.DataFrame, X: pd.DataFrame, mask: np.ndarray, num_threads: int) -> np.ndarray:
    """Reason phrases for the lines in ``mask`` ('' elsewhere); TreeSHAP is costly, so only those."""
    reasons = np.full(len(X), "", dtype=object)
    if not mask.any():
        return reasons
    contributions = bundle.booster.predict(X[mask], pred_contrib=True, num_threads=num_threads)
    features = bundle.spec["model_features"]
    grouped = group_contributions(contributions, features, bundle.spec["feature_groups"])
    reasons[mask] = write_reasons(derived[mask], grouped, PhraseContext.from_pipeline(bundle.pipeline))
    return reasons


def score_frame(bundle, lines: pd.DataFrame, explain: str = "flagged", num_threads: int = 2,
                past: pd.DataFrame | None = None) -> pd.DataFrame:
    """Score validated manifest lines.

    Parameters
    ----------
    bundle : ModelBundle
        A loaded, verified bundle (:func:`models.bundle.load_bundle`).
    lines : DataFrame
        Valid canonical lines (:func:`features.schema.validate_manifest` ``.valid``).
    explain : {"flagged", "red", "all", "none"}
        Which lines get reasons.
    num_threads : int
        LightGBM threads.
    past : DataFrame, optional
        Lines seen before (history store, earlier chunks of the same file) for the entity and flow
        history features; without it, history comes from ``lines`` alone.

    Returns
    -------
    DataFrame
        ``lines`` with ``risk_score``, ``channel``, ``reasons``, ``suspected_commodity`` and
        ``model_version`` appended.
    """
    derived, X = transform_features(bundle.pipeline, lines, past)
    risk = apply_calibration(bundle.booster.predict(X, raw_score=True, num_threads=num_threads),
                             bundle.spec["calibration"])
    channels = channel_for(risk, bundle.spec["channel_thresholds"])
    suspected = suspected_commodity(bundle, X, channels != "green", num_threads)
    derived = derived.assign(suspected_commodity=suspected)
    return lines.assign(
        risk_score=risk,
        channel=channels,
        reasons=reasons_for(bundle, derived, X, explain_mask(channels, explain), num_threads),
        suspected_commodity=suspected,
        model_version=bundle.version,
    )
