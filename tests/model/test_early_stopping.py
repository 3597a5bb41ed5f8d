"""Early stopping never keeps fewer trees than ``min_rounds`` (a model of a few trees ties most lines)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.config import load_train_config
from training.train import fit_risk_model

pytestmark = pytest.mark.slow

# Deterministic LightGBM (seed, one thread) on the fixed noise below.
BEST_WITHOUT_FLOOR = 3
BEST_FROM_40 = 46


def _noise(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Labels unrelated to the features: the validation metric peaks by chance, early."""
    random = np.random.default_rng(seed)
    features = pd.DataFrame(random.normal(size=(rows, 5)), columns=[f"x{i}" for i in range(5)])
    return features, (random.random(rows) < 0.1).astype("int64")


def _best_iteration(min_rounds: int, max_rounds: int) -> int:
    X_train, y_train = _noise(2_000, 1)
    X_valid, y_valid = _noise(1_000, 2)
    config = load_train_config(min_rounds=min_rounds, max_rounds=max_rounds, early_stopping_rounds=10, num_threads=1)
    booster = fit_risk_model(X_train, y_train, X_valid, y_valid, [], config)
    assert booster.num_trees() == booster.best_iteration  # the model is cut at its best iteration
    return booster.best_iteration


def test_without_a_floor_noise_stops_after_a_handful_of_trees():
    assert _best_iteration(1, 200) == BEST_WITHOUT_FLOOR


def test_the_best_iteration_is_sought_from_min_rounds_on():
    assert _best_iteration(40, 200) == BEST_FROM_40


def test_max_rounds_caps_min_rounds():
    assert _best_iteration(40, 30) == 30


def test_min_rounds_must_be_positive():
    with pytest.raises(ValueError, match="min_rounds must be >= 1, got 0"):
        load_train_config(min_rounds=0)
