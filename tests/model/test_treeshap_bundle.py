"""TreeSHAP tables on a model trained by the real training path: equal to pred_contrib (1e-9).

The unit tests (tests/unit/test_treeshap.py) cover each missing-value rule on small models; this
one is the shipped kind of model, with categorical splits and missing values in its features.
"""

from __future__ import annotations

import numpy as np
import pytest

from features.pipeline import transform_features
from models.treeshap import TreeShapTables


@pytest.mark.slow
def test_the_trained_model_with_categorical_splits(trained):
    _, bundle, lines = trained
    _, X = transform_features(bundle.pipeline, lines.head(5_000))
    tables = TreeShapTables(bundle.booster)
    assert tables.categorical.any() and not tables.fallback_trees
    assert np.isnan(tables.feature_matrix(X)).any()

    expected = np.asarray(bundle.booster.predict(X, pred_contrib=True, num_threads=1))
    actual = tables.contributions(X)

    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-9
