"""``train --engine spark``: the history features of the training table computed on Spark give the
default engine's model, byte for byte."""

from __future__ import annotations

import pytest

from features.schema import validate_manifest
from training.config import load_train_config
from training.spark_train import spark_history_of
from training.train import train_model

pytestmark = pytest.mark.slow


def test_training_with_history_features_from_spark_gives_the_default_engines_model(spark, labelled_manifest):
    lines = validate_manifest(labelled_manifest(20_000, seed=3)).valid.reset_index(drop=True)
    config = load_train_config()
    default = train_model(lines, config)
    on_spark = train_model(lines, config, history_of=spark_history_of(spark, buckets=8))
    assert on_spark.booster.model_to_string() == default.booster.model_to_string()
    assert on_spark.spec == default.spec
    assert on_spark.metrics == default.metrics
