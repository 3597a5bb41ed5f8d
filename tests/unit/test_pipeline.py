"""features/pipeline.py: the fitted pipeline as JSON, feature names and groups, robustness."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from features.pipeline import (
    TRANSFORMERS,
    build_feature_pipeline,
    categorical_features,
    feature_groups,
    model_features,
    pipeline_from_spec,
    pipeline_to_spec,
    transform_features,
)


@pytest.fixture(scope="module")
def fitted(valid_labelled):
    return build_feature_pipeline(min_count=20, min_category_count=5).fit(valid_labelled)


@pytest.fixture(scope="module")
def sample(valid_labelled) -> pd.DataFrame:
    """Later lines than most of the training lines, including some with degenerate values."""
    lines = valid_labelled.iloc[-300:].copy().reset_index(drop=True)
    lines.loc[0, ["net_weight_kg", "packages", "containers"]] = [np.nan, pd.NA, 0]
    lines.loc[1, "declared_value_usd"] = 0.0
    lines.loc[2, ["export_country", "port_of_discharge", "hs_code"]] = ["ZZ", "USZZZ", "999999"]
    return lines


def test_json_round_trip_gives_identical_features(fitted, sample):
    spec = json.loads(json.dumps(pipeline_to_spec(fitted)))

    rebuilt = pipeline_from_spec(spec)

    derived, X = transform_features(fitted, sample)
    derived_again, X_again = transform_features(rebuilt, sample)
    pd.testing.assert_frame_equal(X_again, X)
    pd.testing.assert_frame_equal(derived_again, derived)
    assert pipeline_to_spec(rebuilt) == spec


def test_spec_is_plain_json_in_step_order(fitted):
    spec = pipeline_to_spec(fitted)

    assert [entry["name"] for entry in spec] == [name for name, _ in fitted.steps]
    assert all(entry["class"] in TRANSFORMERS for entry in spec)
    json.dumps(spec, allow_nan=False)  # strict JSON: no NaN/inf, no numpy integers


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "Pipeline", None])
def test_a_spec_naming_an_unknown_class_is_refused(fitted, name):
    spec = pipeline_to_spec(fitted)
    spec[1] = {**spec[1], "class": name}

    with pytest.raises(ValueError, match=f"unknown transformer {name!r}"):
        pipeline_from_spec(spec)


def test_transform_does_not_change_its_input(fitted, sample):
    before = copy.deepcopy(sample)

    transform_features(fitted, sample)

    pd.testing.assert_frame_equal(sample, before)


def test_model_matrix_has_the_declared_columns_and_no_infinity(fitted, sample):
    _, X = transform_features(fitted, sample)

    assert list(X.columns) == model_features(fitted)
    assert len(X) == len(sample)
    values = X.to_numpy(dtype="float64")
    assert not np.isinf(values).any()
    assert np.isnan(X.loc[0, ["kg_per_container", "log_kg_per_container", "kg_per_package"]].to_numpy(float)).all()
    assert np.isnan(X.loc[1, ["log_value_per_kg", "value_log_ratio_hs"]].to_numpy(float)).all()


def test_unseen_categories_get_code_zero(fitted, sample):
    _, X = transform_features(fitted, sample)

    assert X.loc[2, ["export_country_code", "port_of_discharge_code", "hs_subheading_code"]].tolist() == [0, 0, 0]
    assert (X.loc[3:, "export_country_code"] > 0).all()


def test_category_codes_come_last_and_are_integers(fitted, sample):
    features, categorical = model_features(fitted), categorical_features(fitted)
    _, X = transform_features(fitted, sample)

    assert features[-len(categorical) :] == categorical
    assert all(name.endswith("_code") for name in categorical)
    assert {"origin_country_code", "export_country_code", "hs_subheading_code", "cover_family_code"} <= set(categorical)
    assert all(pd.api.types.is_integer_dtype(X[name]) for name in categorical)
    assert len(set(features)) == len(features)


def test_every_feature_has_a_reason_group(fitted):
    groups = feature_groups(fitted)

    assert list(groups) == model_features(fitted)
    assert {groups[name] for name in ("value_per_kg", "value_log_ratio_hs", "band_dist_antimony")} == {"price"}
    assert {groups[name] for name in ("via_hub", "n_transshipments", "export_country_code")} == {"route"}
    assert {groups[name] for name in ("kg_per_package", "log_kg_per_container")} == {"weight"}
    assert {groups[name] for name in ("is_cover_code", "hs_subheading_code")} == {"declared_goods"}
    assert groups["days_since_us_ban"] == "timing"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"min_count": 0}, "min_count must be >= 1, got 0", id="min-count"),
        pytest.param({"min_category_count": 0}, "min_count must be >= 1, got 0", id="min-category-count"),
    ],
)
def test_invalid_pipeline_parameters_are_refused_at_fit(valid_labelled, arguments, message):
    with pytest.raises(ValueError, match=message):
        build_feature_pipeline(**arguments).fit(valid_labelled.iloc[:200])


def test_fit_learns_typical_values_from_the_training_lines_only(fitted, valid_labelled):
    value_step = fitted.named_steps["value"]
    zinc = valid_labelled[valid_labelled["hs_code"].str.startswith("790111")]
    weight = zinc["net_weight_kg"].where(zinc["net_weight_kg"] > 0, zinc["gross_weight_kg"])
    usd_per_kg = zinc["declared_value_usd"] / weight
    zinc_log_vpk = np.log10(usd_per_kg[usd_per_kg > 0])
    assert len(zinc_log_vpk) >= 20  # enough lines for the 6-digit code's own value

    assert value_step.typical_log_value_per_kg_["790111"] == pytest.approx(float(np.median(zinc_log_vpk)), abs=1e-6)
