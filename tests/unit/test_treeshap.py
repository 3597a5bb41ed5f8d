"""models/treeshap.py: per-leaf tables give LightGBM's pred_contrib, value for value (within 1e-9).

Reasons are defined on LightGBM's TreeSHAP, so the tables are checked against ``pred_contrib``
itself: on the test bundle's model (categorical splits, missing values), on models trained to hit
each missing-value rule (NaN, zero as missing, default left/right, categorical NaN / negative /
unseen / fractional values), on trees left to ``pred_contrib`` because their tables would be too
big, and on a multiclass model. One stump is checked against values worked out by hand.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from features.pipeline import pipeline_from_spec, transform_features
from models.treeshap import TreeShapTables

TOLERANCE = 1e-9


def _assert_equal_to_pred_contrib(booster: lgb.Booster, X, **kwargs) -> np.ndarray:
    expected = np.asarray(booster.predict(X, pred_contrib=True, num_threads=1))
    actual = TreeShapTables(booster, **kwargs).contributions(X)
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= TOLERANCE
    return actual


def assert_bundle_model_explained(booster: lgb.Booster, X: pd.DataFrame, categorical: bool = True) -> None:
    """The tables equal pred_contrib on a bundle's model, whose splits include the kinds named."""
    kinds = {(s["decision_type"], s["missing_type"]) for s in _splits(booster)}
    assert ("<=", "NaN") in kinds  # splits with a NaN rule, on features with missing values
    assert np.isnan(TreeShapTables(booster).feature_matrix(X)).any()
    if categorical:
        assert any(kind[0] == "==" for kind in kinds)

    contributions = _assert_equal_to_pred_contrib(booster, X)

    raw = booster.predict(X, raw_score=True, num_threads=1)
    assert np.abs(contributions.sum(axis=1) - raw).max() <= TOLERANCE  # additive, bias included


def test_the_test_bundle_model(small_bundle):
    """A few small trees (no categorical split: see tests/model/test_treeshap_bundle.py for those)."""
    _, X = transform_features(pipeline_from_spec(small_bundle["spec"]["pipeline"]), small_bundle["lines"])

    assert_bundle_model_explained(small_bundle["booster"], X, categorical=False)


def _edge_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Numbers with NaN and exact zeros, a category code with NaN, and a second numeric feature."""
    x = rng.normal(size=n)
    x[rng.random(n) < 0.15] = np.nan
    x[rng.random(n) < 0.15] = 0.0
    category = rng.integers(0, 12, size=n).astype("float64")
    category[rng.random(n) < 0.1] = np.nan
    return pd.DataFrame({"x": x, "category": category, "y": rng.normal(size=n)})


@pytest.mark.slow
@pytest.mark.parametrize("zero_as_missing", [False, True])
def test_missing_value_rules_and_categorical_edge_values(zero_as_missing):
    rng = np.random.default_rng(3)
    train = _edge_frame(rng, 3_000)
    signal = np.nan_to_num(train["x"], nan=2.0) + np.isin(train["category"], [1, 4, 7]) * 1.5 + 0.3 * train["y"]
    label = (signal + rng.normal(scale=0.5, size=len(train)) > 0.8).astype(int)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "min_data_in_leaf": 5,
        "zero_as_missing": zero_as_missing,
        "verbose": -1,
        "seed": 1,
        "num_threads": 1,
        "deterministic": True,
    }
    booster = lgb.train(params, lgb.Dataset(train, label, categorical_feature=["category"]), num_boost_round=30)
    types = {(s["decision_type"], s["missing_type"], s["default_left"]) for s in _splits(booster)}
    assert ("==", "NaN", False) in types or ("==", "None", False) in types
    assert any(t[1] == ("Zero" if zero_as_missing else "NaN") for t in types if t[0] == "<=")

    test = _edge_frame(np.random.default_rng(4), 2_000)
    # Values the rules treat specially: exact and tiny zeros, negative / unseen / fractional categories.
    test.loc[:9, "x"] = [0.0, -0.0, 1e-36, -1e-36, 1e-30, np.nan, np.inf, -np.inf, 5.0, -5.0]
    test.loc[:9, "category"] = [-1.0, -0.5, 2.7, 11.0, 12.0, 999.0, 3e9, np.nan, 0.0, 1.0]
    _assert_equal_to_pred_contrib(booster, test)


def _splits(booster: lgb.Booster) -> list[dict]:
    found = []

    def visit(node):
        if "split_index" in node:
            found.append(node)
            visit(node["left_child"])
            visit(node["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        visit(tree["tree_structure"])
    return found


@pytest.mark.slow
def test_trees_with_too_big_tables_are_left_to_pred_contrib():
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(2_000, 12)), columns=[f"f{i}" for i in range(12)])
    y = (X.sum(axis=1) + rng.normal(size=len(X)) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 63, "min_data_in_leaf": 3, "verbose": -1, "seed": 1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, y), num_boost_round=8)

    tables = TreeShapTables(booster, max_table_values=4096)  # paths of more than 9 features: pred_contrib
    assert 0 < len(tables.fallback_trees) < booster.num_trees()
    _assert_equal_to_pred_contrib(booster, X, max_table_values=4096)
    _assert_equal_to_pred_contrib(booster, X)


def test_a_multiclass_model_is_explained_by_pred_contrib_whole(small_bundle):
    booster = small_bundle["commodity_booster"]
    _, X = transform_features(pipeline_from_spec(small_bundle["spec"]["pipeline"]), small_bundle["lines"].head(300))
    X = X[booster.feature_name()]

    assert TreeShapTables(booster).whole_model
    _assert_equal_to_pred_contrib(booster, X)


@pytest.mark.slow
def test_a_stump_by_hand():
    """One split on x <= 0.5 with 3 lines left (value a) and 1 right (value b): phi = own value - mean."""
    X = pd.DataFrame({"x": [0.0, 0.0, 0.0, 1.0], "y": [0.0, 1.0, 2.0, 3.0]})
    params = {"objective": "regression", "num_leaves": 2, "min_data_in_leaf": 1, "min_data_in_bin": 1, "verbose": -1}
    booster = lgb.train({**params, "learning_rate": 1.0}, lgb.Dataset(X, [1.0, 1.0, 1.0, 5.0]), num_boost_round=1)
    leaves = booster.predict(pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 0.0]}))
    mean = (3 * leaves[0] + leaves[1]) / 4

    contributions = TreeShapTables(booster).contributions(pd.DataFrame({"x": [0.0, 1.0], "y": [9.0, 9.0]}))

    np.testing.assert_allclose(contributions, [[leaves[0] - mean, 0.0, mean], [leaves[1] - mean, 0.0, mean]], atol=1e-12)
