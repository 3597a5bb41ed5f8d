"""Score validated manifest lines with a bundle: risk, check, channel, reasons, suspected commodity.

This is the only path from manifest line to score: batch scoring, the API and retraining call
:func:`score_frame` with a loaded bundle, whose fitted pipeline builds the features. Scoring is
three steps, each defined once here:

1. :func:`score_risk`: features, calibrated risk, and the scope (:mod:`models.scope`): lines declared
   under a controlled code get ``check`` "origin" and risk 0, the others ``check`` "disguise";
2. :func:`assign_channels`: red / yellow by quota of rank within each arrival day among the
   disguise lines (:mod:`models.channels`), yellow for origin lines whose origin check fires;
3. :func:`finish_frame`: suspected commodity and reasons of the flagged (or explained) lines.

:func:`score_frame` runs the three on one frame (quotas within that frame's days); batch scoring
(``serve.batch``) runs step 1 per chunk, step 2 once over the whole file, step 3 per chunk.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import expit

from features.pipeline import transform_features
from models.channels import channel_rates, channels_for_keys, quota_keys
from models.reasons import PhraseContext, group_contributions, write_reasons
from models.scope import DISGUISE, ORIGIN, OriginCheck

if TYPE_CHECKING:  # the bundle module imports this one's callers; annotations only
    from features.history import Past
    from models.bundle import ModelBundle
    from models.treeshap import TreeShapTables

OUTPUT_COLUMNS = ("risk_score", "channel", "reasons", "suspected_commodity", "model_version", "check")
EXPLAIN_CHOICES = ("flagged", "red", "all", "none")
NO_COMMODITY = "none"


def apply_calibration(raw_scores: np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
    """Calibrated probability from LightGBM raw scores (log-odds) with the bundle's calibration."""
    if calibration.get("method") != "platt":
        raise ValueError(f"unknown calibration method {calibration.get('method')!r}")
    logits = calibration["a"] * np.asarray(raw_scores, dtype="float64") + calibration["b"]
    return np.asarray(expit(logits))  # the logistic function without overflow on extreme logits


def suspected_commodity(bundle: ModelBundle, X: pd.DataFrame, flagged: np.ndarray, num_threads: int) -> np.ndarray:
    """Most likely hidden good for flagged lines (from the commodity model), 'none' elsewhere."""
    result = np.full(len(X), NO_COMMODITY, dtype=object)
    if bundle.commodity_booster is None or not flagged.any():
        return result
    features = bundle.spec.get("commodity_features", list(X.columns))
    probabilities = np.asarray(bundle.commodity_booster.predict(X.loc[flagged, features], num_threads=num_threads))
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


@functools.lru_cache(maxsize=4)
def shap_tables(booster: Any) -> TreeShapTables:
    """The booster's TreeSHAP tables (:mod:`models.treeshap`), built once per process and model."""
    from models.treeshap import TreeShapTables  # compiled kernels: imported when reasons are needed

    return TreeShapTables(booster)


def reasons_for(bundle: ModelBundle, derived: pd.DataFrame, X: pd.DataFrame, mask: np.ndarray, num_threads: int) -> np.ndarray:
    """Reason phrases for the lines in ``mask`` ('' elsewhere).

    The contributions are LightGBM's TreeSHAP (``pred_contrib``), computed from per-leaf tables
    (:class:`models.treeshap.TreeShapTables`: the same values within 1e-9, about ten times faster
    per core); still the costliest step per line, so only for these lines.
    """
    reasons = np.full(len(X), "", dtype=object)
    if not mask.any():
        return reasons
    contributions = shap_tables(bundle.booster).contributions(X[mask], num_threads=num_threads)
    features = bundle.spec["model_features"]
    grouped = group_contributions(contributions, features, bundle.spec["feature_groups"])
    reasons[mask] = write_reasons(derived[mask], grouped, PhraseContext.from_pipeline(bundle.pipeline))
    return reasons


@dataclass
class RiskScores:
    """Step 1 of scoring: per-line risk and scope, with the features when they are kept.

    Attributes
    ----------
    risk : ndarray of float
        Calibrated risk of a disguise; 0.0 on origin-check lines.
    check : ndarray of object
        "disguise" or "origin" (:mod:`models.scope`).
    origin_alert : ndarray of bool
        Origin-check lines whose origin rule fires (they go to yellow).
    derived, X : DataFrame, optional
        The lines' derived features and model matrix (:func:`features.pipeline.transform_features`);
        :func:`finish_frame` needs them; batch scoring parks them on disk between passes.
    """

    risk: np.ndarray
    check: np.ndarray
    origin_alert: np.ndarray
    derived: pd.DataFrame | None = None
    X: pd.DataFrame | None = None

    def without_features(self) -> RiskScores:
        """The same scores without ``derived`` and ``X``."""
        return RiskScores(self.risk, self.check, self.origin_alert)

    def take(self, mask: np.ndarray) -> RiskScores:
        """The scores of the lines in ``mask`` (boolean, one per line)."""
        return RiskScores(
            self.risk[mask],
            self.check[mask],
            self.origin_alert[mask],
            None if self.derived is None else self.derived[mask],
            None if self.X is None else self.X[mask],
        )


def disguise_risk(raw_scores: np.ndarray, calibration: dict[str, Any], controlled: np.ndarray) -> np.ndarray:
    """The risk score of each line as scoring gives it: calibrated, and 0 for lines declared under a
    controlled code (they are not disguise candidates; their own origin check decides)."""
    return np.asarray(np.where(controlled, 0.0, apply_calibration(raw_scores, calibration)))


def score_risk(bundle: ModelBundle, lines: pd.DataFrame, past: Past = None, num_threads: int = 2) -> RiskScores:
    """Step 1: features, calibrated risk and scope of validated lines (see :func:`score_frame`)."""
    derived, X = transform_features(bundle.pipeline, lines, past)
    raw = np.asarray(bundle.booster.predict(X, raw_score=True, num_threads=num_threads))
    scope = OriginCheck.from_pipeline(bundle.pipeline).evaluate(derived)
    risk = disguise_risk(raw, bundle.spec["calibration"], scope.controlled)
    return RiskScores(risk=risk, check=scope.check, origin_alert=scope.alert, derived=derived, X=X)


def assign_channels(keys: pd.DataFrame, scores: RiskScores, rates: dict[str, float]) -> np.ndarray:
    """Step 2: channel of each line, from the :func:`models.channels.quota_keys` of all the lines
    whose quotas are shared.

    Disguise lines are ranked within their arrival day and get red / yellow by quota
    (:func:`models.channels.quota_channels`); origin lines are never ranked nor counted: yellow when
    their origin check fires, else green.
    """
    channels = channels_for_keys(keys, scores.risk, rates, ranked=scores.check == DISGUISE)
    channels[scores.origin_alert] = "yellow"
    return channels


def needs_features(channels: np.ndarray, explain: str) -> np.ndarray:
    """Lines whose features :func:`finish_frame` reads: the flagged ones and those ``explain`` selects."""
    channels = np.asarray(channels, dtype=object)
    return np.asarray((channels != "green") | explain_mask(channels, explain))


def finish_frame(
    bundle: ModelBundle,
    lines: pd.DataFrame,
    scores: RiskScores,
    channels: np.ndarray,
    explain: str = "flagged",
    num_threads: int = 2,
) -> pd.DataFrame:
    """Step 3: ``lines`` with the output columns (:data:`OUTPUT_COLUMNS`).

    Suspected commodity for flagged lines (the commodity model on disguise lines, the declared good
    on origin lines); reasons for the lines ``explain`` selects (TreeSHAP phrases on disguise lines,
    the origin check's phrase on origin lines). ``scores`` must carry the features of the lines
    :func:`needs_features` selects (it may carry none when there are none).
    """
    channels = np.asarray(channels, dtype=object)
    flagged = channels != "green"
    explained = explain_mask(channels, explain)
    needed = flagged | explained
    origin = scores.check == ORIGIN
    suspected = np.full(len(lines), NO_COMMODITY, dtype=object)
    reasons = np.full(len(lines), "", dtype=object)
    if needed.any():
        if scores.derived is None or scores.X is None:
            raise ValueError("finish_frame needs the lines' features (RiskScores.derived and X)")
        derived, X = scores.derived[needed], scores.X[needed]
        sub_flagged, sub_explained, sub_origin = flagged[needed], explained[needed], origin[needed]
        sub_suspected = suspected_commodity(bundle, X, sub_flagged & ~sub_origin, num_threads)
        sub_suspected[sub_flagged & sub_origin] = derived.loc[sub_flagged & sub_origin, "declared_target"].to_numpy(object)
        derived = derived.assign(suspected_commodity=sub_suspected)
        sub_reasons = reasons_for(bundle, derived, X, sub_explained & ~sub_origin, num_threads)
        if (sub_explained & sub_origin).any():
            check = OriginCheck.from_pipeline(bundle.pipeline)
            rows = derived[sub_explained & sub_origin]
            sub_reasons[sub_explained & sub_origin] = check.phrases(rows, check.evaluate(rows))
        suspected[needed], reasons[needed] = sub_suspected, sub_reasons
    return lines.assign(
        risk_score=scores.risk,
        channel=channels,
        reasons=reasons,
        suspected_commodity=suspected,
        model_version=bundle.version,
        check=scores.check,
    )


def score_frame(
    bundle: ModelBundle, lines: pd.DataFrame, explain: str = "flagged", num_threads: int = 2, past: Past = None
) -> pd.DataFrame:
    """Score validated manifest lines: risk, check, channel by day quota, reasons, suspected commodity.

    Channel quotas are shared by the lines of ``lines`` declared on the same day: a frame holding
    part of a day gets that part's quotas (a single line is always green: see
    :mod:`models.channels`). Batch scoring applies them to whole files.

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
    past : DataFrame or history store, optional
        Lines seen before (history store, earlier chunks of the same file) for the entity and flow
        history features, in any form :meth:`features.history.HistoryFeatures.transform` takes;
        without it, history comes from ``lines`` alone.

    Returns
    -------
    DataFrame
        ``lines`` with ``risk_score``, ``channel``, ``reasons``, ``suspected_commodity``,
        ``model_version`` and ``check`` appended.
    """
    scores = score_risk(bundle, lines, past, num_threads)
    channels = assign_channels(quota_keys(lines), scores, channel_rates(bundle.spec))
    return finish_frame(bundle, lines, scores, channels, explain, num_threads)
