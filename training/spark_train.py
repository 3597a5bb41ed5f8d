"""``misdeclare train --engine spark``: the training table's history features computed on Spark.

The history features (every party's and flow's counts over the training lines, the costly part of
the feature table) are computed by :func:`features.spark_history.history_features`, which calls the
default engine's own ``HistoryFeatures.features_from_events`` per group of keys; the pipeline's
other steps, the time split, the fit and LightGBM run on the driver as in the default engine, on the
same lines: the model is the default engine's (tested byte for byte).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.history import HISTORY_COLUMNS, HistoryColumns, HistoryFeatures
from features.schema import CANONICAL_COLUMNS
from features.spark_history import history_features
from features.spark_manifest import canonical_type, for_spark

DEFAULT_BUCKETS = 64


def spark_history_of(spark, buckets: int = DEFAULT_BUCKETS):
    """A ``history_of`` for :func:`training.train.train_model` computing the features on ``spark``."""
    from pyspark.sql import types as T

    def history_of(step: HistoryFeatures, lines: pd.DataFrame) -> HistoryColumns:
        columns = list(dict.fromkeys([*HISTORY_COLUMNS, *step.extra_entities]))
        frame = lines.reindex(columns=columns).assign(_row=np.arange(len(lines), dtype="int64"))
        schema = T.StructType(
            [T.StructField(c, canonical_type(c) if c in CANONICAL_COLUMNS else T.StringType()) for c in columns]
            + [T.StructField("_row", T.LongType())]
        )
        typed = frame.astype({c: "string" for c in columns if c not in CANONICAL_COLUMNS})
        table = spark.createDataFrame(for_spark(typed), schema)
        computed = history_features(spark, table, step, None, buckets).toPandas().set_index("_row").sort_index()
        if len(computed) != len(lines):
            raise RuntimeError(f"Spark returned history features for {len(computed):,} of {len(lines):,} lines")
        return HistoryColumns(computed[list(step.numeric_features_)].set_axis(lines.index))

    return history_of
