"""models/predict.py: calibration, which lines get reasons, and score_frame's output (risk, check, channels)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from features.pipeline import pipeline_from_spec, transform_features
from models.bundle import ModelBundle
from models.channels import channels_for_lines, quota_keys
from models.predict import (
    OUTPUT_COLUMNS,
    apply_calibration,
    assign_channels,
    disguise_risk,
    explain_mask,
    finish_frame,
    score_frame,
    score_risk,
)


@pytest.mark.parametrize(
    ("raw", "a", "b", "expected"),
    [
        pytest.param([0.0], 1.0, 0.0, [0.5], id="identity-at-zero"),
        pytest.param([0.0, 0.5, -1.0], 2.0, -1.0, [1 / (1 + np.e), 0.5, 1 / (1 + np.e**3)], id="scaled-and-shifted"),
        pytest.param([3.0], -1.0, 0.0, [1 / (1 + np.e**3)], id="negative-slope"),
        pytest.param([800.0, -800.0], 1.0, 0.0, [1.0, 0.0], id="extreme-scores-saturate"),
    ],
)
def test_apply_calibration(raw, a, b, expected):
    with np.errstate(over="ignore"):
        result = apply_calibration(np.array(raw), {"method": "platt", "a": a, "b": b})

    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("calibration", [{"method": "isotonic"}, {}])
def test_unknown_calibration_method_is_refused(calibration):
    with pytest.raises(ValueError, match="unknown calibration method"):
        apply_calibration(np.zeros(2), calibration)


CHANNELS = np.array(["red", "yellow", "green", "yellow", "red"], dtype=object)


@pytest.mark.parametrize(
    ("explain", "mask"),
    [
        ("flagged", [1, 1, 0, 1, 1]),
        ("red", [1, 0, 0, 0, 1]),
        ("all", [1, 1, 1, 1, 1]),
        ("none", [0, 0, 0, 0, 0]),
    ],
)
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
    """The small bundle with quotas of 10 % red and a further 20 % yellow (``lines`` has ~6 a day)."""
    spec = copy.deepcopy(small_bundle["spec"])
    pipeline = pipeline_from_spec(spec["pipeline"])
    spec["channel_rates"] = {"red": 0.1, "yellow": 0.2}
    return ModelBundle(
        booster=small_bundle["booster"],
        commodity_booster=small_bundle["commodity_booster"],
        spec=spec,
        pipeline=pipeline,
        version="misdeclare/7",
        manifest_sha256="0" * 64,
    )


@pytest.fixture(scope="module")
def scored(bundle, lines) -> pd.DataFrame:
    return score_frame(bundle, lines, explain="flagged", num_threads=1)


def test_score_frame_appends_the_output_columns_and_keeps_the_input(scored, lines):
    assert list(scored.columns) == list(lines.columns) + list(OUTPUT_COLUMNS)
    pd.testing.assert_frame_equal(scored[list(lines.columns)], lines)
    assert set(scored["model_version"]) == {"misdeclare/7"}


def test_risk_is_the_calibrated_model_score_on_disguise_lines_and_zero_on_origin_lines(scored, bundle, lines):
    _, X = transform_features(bundle.pipeline, lines)
    disguise = (scored["check"] == "disguise").to_numpy()

    # calibration a=1, b=0: the logistic of the raw score, i.e. the booster's own probability
    np.testing.assert_allclose(scored.loc[disguise, "risk_score"], bundle.booster.predict(X[disguise]), rtol=1e-9)
    assert (scored.loc[~disguise, "risk_score"] == 0.0).all()
    assert set(scored["check"]) == {"disguise", "origin"}  # the generated lines include controlled codes


def test_disguise_channels_are_the_day_quotas_of_the_disguise_lines(scored, bundle, lines):
    disguise = (scored["check"] == "disguise").to_numpy()

    expected = channels_for_lines(lines, scored["risk_score"].to_numpy(), bundle.spec["channel_rates"], ranked=disguise)

    np.testing.assert_array_equal(scored.loc[disguise, "channel"].to_numpy(), expected[disguise])
    assert set(scored["channel"]) == {"red", "yellow", "green"}


def test_no_green_disguise_line_has_a_higher_risk_than_a_flagged_one_of_its_day(scored):
    disguise = scored[scored["check"] == "disguise"]
    for _, day in disguise.groupby(disguise["declared_at"].dt.date):
        risk = {c: day.loc[day["channel"] == c, "risk_score"] for c in ("red", "yellow", "green")}
        flagged = pd.concat([risk["red"], risk["yellow"]])
        if len(flagged) and len(risk["green"]):
            assert risk["green"].max() <= flagged.min()
        if len(risk["red"]) and len(risk["yellow"]):
            assert risk["yellow"].max() <= risk["red"].min()


def test_the_steps_give_score_frame(bundle, lines, scored):
    scores = score_risk(bundle, lines, num_threads=1)
    channels = assign_channels(quota_keys(lines), scores, bundle.spec["channel_rates"])

    pd.testing.assert_frame_equal(finish_frame(bundle, lines, scores, channels, "flagged", num_threads=1), scored)
    with pytest.raises(ValueError, match="needs the lines' features"):
        finish_frame(bundle, lines, scores.without_features(), channels, "flagged", num_threads=1)


def test_reasons_and_suspected_commodity_only_for_flagged_lines(scored):
    flagged = scored["channel"] != "green"

    assert (scored.loc[~flagged, "reasons"] == "").all()
    assert (scored.loc[flagged, "reasons"] != "").all()
    assert (scored.loc[~flagged, "suspected_commodity"] == "none").all()
    assert set(scored.loc[flagged, "suspected_commodity"]) <= {"antimony", "gallium", "germanium", "rare_earth"}


def test_laundered_origin_lines_are_yellow_with_the_origin_phrase_and_their_declared_good(bundle, lines, scored):
    controlled = (scored["check"] == "origin").to_numpy()
    laundered = lines.copy()
    laundered.loc[controlled, ["origin_country", "export_country"]] = "TH"  # no production, a diversion hub

    rescored = score_frame(bundle, laundered, explain="flagged", num_threads=1)

    origin = rescored[controlled]
    assert (origin["channel"] == "yellow").all() and (origin["risk_score"] == 0.0).all()
    assert (
        origin["reasons"]
        .str.match(
            r"declared as [a-z ]+ \(HS \d{6}\) with origin TH, which does not produce "
            r"[a-z ]+: check the certificate of origin$"
        )
        .all()
    )
    assert (origin["suspected_commodity"] != "none").all()
    # origin lines take no place in the quotas: the disguise lines' channels are unchanged
    pd.testing.assert_series_equal(rescored.loc[~controlled, "channel"], scored.loc[~controlled, "channel"])


def test_explain_red_leaves_yellow_lines_without_reasons(bundle, lines):
    scored = score_frame(bundle, lines, explain="red", num_threads=1)

    assert (scored.loc[scored["channel"] != "red", "reasons"] == "").all()
    assert (scored.loc[scored["channel"] == "red", "reasons"] != "").all()


def test_score_frame_does_not_change_its_input(bundle, lines):
    before = copy.deepcopy(lines)

    score_frame(bundle, lines, explain="none", num_threads=1)

    pd.testing.assert_frame_equal(lines, before)


def test_disguise_risk_is_the_calibrated_score_and_zero_under_a_controlled_code():
    calibration = {"method": "platt", "a": 1.0, "b": 0.0}
    raw = np.array([-2.0, 0.0, 3.0])
    risk = disguise_risk(raw, calibration, np.array([False, True, False]))
    np.testing.assert_allclose(risk, [1 / (1 + np.exp(2.0)), 0.0, 1 / (1 + np.exp(-3.0))])
