"""models/predict.py: calibration, channels, which lines get reasons, and score_frame's output."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from features.pipeline import pipeline_from_spec, transform_features
from models.bundle import ModelBundle
from models.predict import OUTPUT_COLUMNS, apply_calibration, channel_for, explain_mask, score_frame


@pytest.mark.parametrize(("raw", "a", "b", "expected"), [
    pytest.param([0.0], 1.0, 0.0, [0.5], id="identity-at-zero"),
    pytest.param([0.0, 0.5, -1.0], 2.0, -1.0, [1 / (1 + np.e), 0.5, 1 / (1 + np.e ** 3)], id="scaled-and-shifted"),
    pytest.param([3.0], -1.0, 0.0, [1 / (1 + np.e ** 3)], id="negative-slope"),
    pytest.param([800.0, -800.0], 1.0, 0.0, [1.0, 0.0], id="extreme-scores-saturate"),
])
def test_apply_calibration(raw, a, b, expected):
    with np.errstate(over="ignore"):
        result = apply_calibration(np.array(raw), {"method": "platt", "a": a, "b": b})

    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("calibration", [{"method": "isotonic"}, {}])
def test_unknown_calibration_method_is_refused(calibration):
    with pytest.raises(ValueError, match="unknown calibration method"):
        apply_calibration(np.zeros(2), calibration)


@pytest.mark.parametrize(("score", "channel"), [
    (0.95, "red"), (0.8000001, "red"), (0.8, "yellow"), (0.6, "yellow"), (0.5000001, "yellow"), (0.5, "green"),
    (0.0, "green"),
])
def test_channel_is_strictly_above_the_threshold(score, channel):
    assert channel_for(np.array([score]), {"red": 0.8, "yellow": 0.5}).tolist() == [channel]


def test_channels_when_many_lines_tie_at_the_red_threshold():
    scores = np.array([0.7, 0.7, 0.7, 0.9])

    assert channel_for(scores, {"red": 0.7, "yellow": 0.7}).tolist() == ["green", "green", "green", "red"]


CHANNELS = np.array(["red", "yellow", "green", "yellow", "red"], dtype=object)


@pytest.mark.parametrize(("explain", "mask"), [
    ("flagged", [1, 1, 0, 1, 1]), ("red", [1, 0, 0, 0, 1]), ("all", [1, 1, 1, 1, 1]), ("none", [0, 0, 0, 0, 0]),
])
def test_explain_mask(explain, mask):
    assert explain_mask(CHANNELS, explain).astype(int).tolist() == mask


@pytest.mark.parametrize("explain", ["yellow", "ALL", ""])
def test_unknown_explain_choice_is_refused(explain):
    with pytest.raises(ValueError, match=f"explain must be one of .*got {explain!r}"):
        explain_mask(CHANNELS, explain)


# ----------------------------------------------------------------------------- score_frame


@pytest.fixture(scope="module")
def lines(small_bundle) -> pd.DataFrame:
    recent = small_bundle["lines"]
    return recent[recent["declared_at"] >= "2025-06-01"].head(600).reset_index(drop=True)


@pytest.fixture(scope="module")
def bundle(small_bundle, lines) -> ModelBundle:
    """The small bundle with thresholds sending 10 % of ``lines`` to red and the next 20 % to yellow."""
    spec = copy.deepcopy(small_bundle["spec"])
    pipeline = pipeline_from_spec(spec["pipeline"])
    _, X = transform_features(pipeline, lines)
    probability = small_bundle["booster"].predict(X)
    spec["channel_thresholds"] = {"red": float(np.quantile(probability, 0.9)),
                                  "yellow": float(np.quantile(probability, 0.7))}
    return ModelBundle(booster=small_bundle["booster"], commodity_booster=small_bundle["commodity_booster"],
                       spec=spec, pipeline=pipeline, version="misdeclare/7", manifest_sha256="0" * 64)


@pytest.fixture(scope="module")
def scored(bundle, lines) -> pd.DataFrame:
    return score_frame(bundle, lines, explain="flagged", num_threads=1)


def test_score_frame_appends_the_output_columns_and_keeps_the_input(scored, lines):
    assert list(scored.columns) == list(lines.columns) + list(OUTPUT_COLUMNS)
    pd.testing.assert_frame_equal(scored[list(lines.columns)], lines)
    assert set(scored["model_version"]) == {"misdeclare/7"}


def test_risk_is_the_calibrated_model_score(scored, bundle, lines):
    _, X = transform_features(bundle.pipeline, lines)

    # calibration a=1, b=0: the logistic of the raw score, i.e. the booster's own probability
    np.testing.assert_allclose(scored["risk_score"], bundle.booster.predict(X), rtol=1e-9)


def test_channels_follow_the_bundle_thresholds(scored, bundle):
    risk, channel = scored["risk_score"], scored["channel"]
    red, yellow = bundle.spec["channel_thresholds"]["red"], bundle.spec["channel_thresholds"]["yellow"]

    assert ((channel == "red") == (risk > red)).all()
    assert ((channel == "yellow") == ((risk > yellow) & (risk <= red))).all()
    assert set(channel) == {"red", "yellow", "green"}


def test_reasons_and_suspected_commodity_only_for_flagged_lines(scored):
    flagged = scored["channel"] != "green"

    assert (scored.loc[~flagged, "reasons"] == "").all()
    assert (scored.loc[flagged, "reasons"] != "").all()
    assert (scored.loc[~flagged, "suspected_commodity"] == "none").all()
    assert set(scored.loc[flagged, "suspected_commodity"]) <= {"antimony", "gallium", "germanium", "rare_earth"}


def test_explain_red_leaves_yellow_lines_without_reasons(bundle, lines):
    scored = score_frame(bundle, lines, explain="red", num_threads=1)

    assert (scored.loc[scored["channel"] != "red", "reasons"] == "").all()
    assert (scored.loc[scored["channel"] == "red", "reasons"] != "").all()


def test_score_frame_does_not_change_its_input(bundle, lines):
    before = copy.deepcopy(lines)

    score_frame(bundle, lines, explain="none", num_threads=1)

    pd.testing.assert_frame_equal(lines, before)
