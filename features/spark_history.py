"""Point-in-time party and flow history on Spark, by the functions of :mod:`features.history`.

A line's party features read only the events of its party; its flow features only those of its
flow (:meth:`HistoryFeatures.features_from_events`). So the lines are sent, once per party column
and once for their flow, to a group of keys (a hash of the key modulo ``buckets``), together with
the stored events of those keys, and each group calls ``features_from_events`` on its lines and
events: the default engine's code on the default engine's events, never a second implementation.

The events of a group are what the default engine assembles for a file scored against a history
store (:class:`features.history_store.FileHistory`):

- the store's party, first-use and flow events (its DuckDB tables exported once to Parquet,
  :func:`export_store`), every day of them (old days are not folded into totals);
- minus the events of the store's copies of the dataset's lines (weight -1), which the lines
  themselves replace;
- for the parties of a copy that differs from its line other than by its labels (a corrected
  declaration), first uses recomputed from the party's stored lines without that copy;
- plus the events of the dataset's own lines (all of them: a dataset is history for itself);

and the coverage start is the earliest day of the store's lines and of the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.history import (
    ENTITY_COLUMNS,
    EPOCH,
    FLOW_EVENT_COLUMNS,
    PARTY_EVENT_COLUMNS,
    VALUE_EVENT_COLUMNS,
    HistoryFeatures,
    PastEvents,
    as_category,
    flow_key,
)
from features.history_store import HistoryStore, _same_but_labels, history_frame
from features.spark_manifest import for_spark

if TYPE_CHECKING:  # PySpark is imported where it is used: the default engine never loads it
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

_COUNTS = ("day", "lines", "outcomes", "positives")
FLOW = "flow"  # the target of a line's flow features (the others are party columns)
# What the history functions read of a line besides its party (``_key``).
LINE_COLUMNS = (
    "declared_at",
    "hs_code",
    "origin_country",
    "export_country",
    "port_of_loading",
    "port_of_discharge",
    "transshipment_ports",
    "inspected",
    "misdeclared",
)
_EVENT_FIELDS = (
    "_target string, _key string, _event string, kind string, value string, day long, lines long, outcomes long, positives long"
)
_STORE_LINE_COLUMNS = (
    "declaration_id",
    "line_no",
    "declared_at",
    "hs_code",
    "origin_country",
    "export_country",
    "port_of_loading",
    "port_of_discharge",
    "transshipment_ports",
    *ENTITY_COLUMNS,
    "inspected",
    "misdeclared",
)


@dataclass(frozen=True)
class StoreExport:
    """A history store's contents as Parquet tables (``lines``, ``parties``, ``values``, ``flows``).

    Attributes
    ----------
    folder : str
        Where the tables are (a path every Spark worker can read).
    coverage_start : int
        First day (days since 1970-01-01) of the store's lines.
    """

    folder: str
    coverage_start: int


def export_store(store: HistoryStore, folder: str | os.PathLike[str]) -> StoreExport | None:
    """Write the store's lines and every event (recent and old days) to Parquet; None when empty.

    Read in one transaction of the store (a consistent state), streamed by DuckDB.
    """
    os.makedirs(folder, exist_ok=True)
    tables = {
        "lines": "SELECT * EXCLUDE (key_hash) FROM lines",
        "parties": "SELECT * FROM party_events UNION ALL SELECT * FROM party_events_old",
        "values": "SELECT entity, key, kind, value, min(day) AS day FROM value_firsts GROUP BY ALL",
        "flows": "SELECT * FROM flow_events UNION ALL SELECT * FROM flow_events_old",
    }
    with store._connect() as connection:  # the store's own read transaction and lock handling
        if connection is None:
            return None
        start = connection.execute("SELECT min(declared_at) FROM lines").fetchall()[0][0]
        if start is None:
            return None
        for name, query in tables.items():
            target = os.path.join(os.fspath(folder), f"{name}.parquet").replace("'", "''")
            connection.execute(f"COPY ({query}) TO '{target}' (FORMAT parquet)")
    return StoreExport(os.fspath(folder), int((pd.Timestamp(start) - EPOCH).days))


def _line_targets(batches: Iterator[pd.DataFrame], entities: tuple[str, ...]) -> Iterator[pd.DataFrame]:
    """Each line once per party column (``_key``: its party) and once for its flow (``_key``: the flow)."""
    for batch in batches:
        base = batch[["_row", *LINE_COLUMNS]]
        flows = flow_key(batch.assign(hs_code=batch["hs_code"].astype("string")))
        parts = [base.assign(_target=entity, _key=batch[entity].astype("string")) for entity in entities]
        parts.append(base.assign(_target=FLOW, _key=flows.astype("string")))
        yield for_spark(pd.concat(parts, ignore_index=True))


def _events_long(events: PastEvents, with_values: bool) -> pd.DataFrame:
    """Party (and value) and flow events as rows of one table (see ``_EVENT_FIELDS``)."""
    frames = [
        pd.DataFrame(
            {
                "_target": events.parties["entity"].astype(object),
                "_key": events.parties["key"].astype(object),
                "_event": "party",
                "day": events.parties["day"],
                "lines": events.parties["lines"],
                "outcomes": events.parties["outcomes"],
                "positives": events.parties["positives"],
            }
        ),
        pd.DataFrame(
            {
                "_target": FLOW,
                "_key": events.flows["flow"].astype(object),
                "_event": FLOW,
                "day": events.flows["day"],
                "lines": events.flows["lines"],
            }
        ),
    ]
    if with_values:
        frames.append(
            pd.DataFrame(
                {
                    "_target": events.values["entity"].astype(object),
                    "_key": events.values["key"].astype(object),
                    "_event": "value",
                    "kind": events.values["kind"].astype(object),
                    "value": events.values["value"].astype(object),
                    "day": events.values["day"],
                    "lines": events.values["lines"],
                }
            )
        )
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.reindex(columns=["_target", "_key", "_event", "kind", "value", "day", "lines", "outcomes", "positives"])
    text = ["_target", "_key", "_event", "kind", "value"]  # missing text as None, not a float NaN column
    return frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), None) for c in text})


def _taken_out(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Party and flow events of the store's copies of the dataset's lines, with weight -1."""
    for batch in batches:
        copies = history_frame(batch)
        yield for_spark(_events_long(PastEvents.from_lines(copies, ENTITY_COLUMNS, weight=-1), with_values=False))


def _value_events(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """First-use events (one per line and value) of stored lines."""
    for batch in batches:
        events = PastEvents.from_lines(history_frame(batch), ENTITY_COLUMNS)
        values = PastEvents(PastEvents.empty().parties, events.values, PastEvents.empty().flows, None)
        yield for_spark(_events_long(values, with_values=True))


def _changed_copies(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Stored copies (``s_`` columns) that differ from the dataset's line other than by the labels."""
    stored_names = [f"s_{c}" for c in _STORE_LINE_COLUMNS]
    for batch in batches:
        stored = history_frame(batch[stored_names].set_axis(list(_STORE_LINE_COLUMNS), axis=1))
        current = history_frame(batch[list(_STORE_LINE_COLUMNS)])
        changed = ~_same_but_labels(stored, current)
        yield for_spark(batch.loc[changed, stored_names].set_axis(list(_STORE_LINE_COLUMNS), axis=1))


def stored_events(
    spark: SparkSession, export: StoreExport, lines: DataFrame, targets: DataFrame, first_day: int, last_day: int, flow_days: int
) -> DataFrame:
    """The store's events for the dataset ``lines`` (whose parties and flows are ``targets``): the
    store's own, the copies of ``lines`` taken out, and first uses recomputed for the parties of
    corrected copies (see the module docstring)."""
    from pyspark.sql import functions as F

    folder = export.folder
    store_lines = spark.read.parquet(f"{folder}/lines.parquet")
    keys = lines.select("declaration_id", F.col("line_no").cast("double").alias("line_no"))
    copies = store_lines.join(keys, ["declaration_id", "line_no"], "left_semi")
    current = lines.select(*[F.col(c).cast("double").alias(c) if c == "line_no" else F.col(c) for c in _STORE_LINE_COLUMNS])
    pairs = copies.select(*[F.col(c).alias(f"s_{c}") for c in _STORE_LINE_COLUMNS]).join(
        current, (F.col("s_declaration_id") == F.col("declaration_id")) & (F.col("s_line_no") == F.col("line_no"))
    )
    store_schema = copies.select(*_STORE_LINE_COLUMNS).schema
    changed = pairs.mapInPandas(_changed_copies, store_schema).cache()

    parties = spark.read.parquet(f"{folder}/parties.parquet").select(
        F.col("entity").alias("_target"),
        F.col("key").alias("_key"),
        F.lit("party").alias("_event"),
        F.lit(None).cast("string").alias("kind"),
        F.lit(None).cast("string").alias("value"),
        F.col("day").cast("long").alias("day"),
        F.col("lines").cast("long").alias("lines"),
        F.col("outcomes").cast("long").alias("outcomes"),
        F.col("positives").cast("long").alias("positives"),
    )
    values = spark.read.parquet(f"{folder}/values.parquet").select(
        F.col("entity").alias("_target"),
        F.col("key").alias("_key"),
        F.lit("value").alias("_event"),
        "kind",
        "value",
        F.col("day").cast("long").alias("day"),
        F.lit(1).cast("long").alias("lines"),
        F.lit(None).cast("long").alias("outcomes"),
        F.lit(None).cast("long").alias("positives"),
    )
    flows = (
        spark.read.parquet(f"{folder}/flows.parquet")
        .filter((F.col("day") >= first_day - flow_days) & (F.col("day") < last_day))
        .select(
            F.lit(FLOW).alias("_target"),
            F.col("flow").alias("_key"),
            F.lit(FLOW).alias("_event"),
            F.lit(None).cast("string").alias("kind"),
            F.lit(None).cast("string").alias("value"),
            F.col("day").cast("long").alias("day"),
            F.col("lines").cast("long").alias("lines"),
            F.lit(None).cast("long").alias("outcomes"),
            F.lit(None).cast("long").alias("positives"),
        )
    )
    taken_out = copies.mapInPandas(_taken_out, _EVENT_FIELDS)
    if changed.limit(1).count():
        # Parties of corrected copies: their first uses again, from their stored lines without the copies.
        stale = changed.select(
            F.explode(F.array(*[F.struct(F.lit(e).alias("_target"), F.col(e).alias("_key")) for e in ENTITY_COLUMNS])).alias(
                "party"
            )
        ).select("party.*")
        stale = stale.filter(F.col("_key").isNotNull()).distinct().cache()
        of_stale = reduce(
            lambda left, right: left.unionByName(right),
            [
                store_lines.join(
                    stale.filter(F.col("_target") == entity).select(F.col("_key").alias(entity)), entity, "left_semi"
                )
                for entity in ENTITY_COLUMNS
            ],
        )
        remaining = of_stale.distinct().join(
            changed.select("declaration_id", "line_no"), ["declaration_id", "line_no"], "left_anti"
        )
        recomputed = remaining.mapInPandas(_value_events, _EVENT_FIELDS).join(stale, ["_target", "_key"], "left_semi")
        values = values.join(stale, ["_target", "_key"], "left_anti").unionByName(recomputed)
    events = parties.unionByName(values).unionByName(flows).unionByName(taken_out)
    wanted = targets.select("_target", "_key")
    return events.join(wanted.filter(F.col("_key").isNotNull()).distinct(), ["_target", "_key"], "left_semi")


def _targets_schema(schema: StructType, entities: tuple[str, ...]) -> StructType:
    from pyspark.sql import types as T

    fields = [schema["_row"], *[schema[c] for c in LINE_COLUMNS]]
    return T.StructType([*fields, T.StructField("_target", T.StringType()), T.StructField("_key", T.StringType())])


def _event_frame(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows of the long event table as an event frame of :class:`PastEvents` (categorical text)."""
    return pd.DataFrame(
        {
            c: frame[c].to_numpy("int64") if c in ("day", "lines", "outcomes", "positives") else as_category(frame[c])
            for c in columns
        }
    )


def feature_names(step: HistoryFeatures, target: str) -> list[str]:
    """The history features a target's group computes (in :attr:`HistoryFeatures.numeric_features_` order)."""
    if target == FLOW:
        return ["flow_lines_trailing", "flow_surge_ratio"]
    names = [n for n in step.numeric_features_ if n.startswith(f"{target}_")]
    if target == "consignee_id":
        names += ["consignee_direct_cn_target_before", "consignee_switched_to_hub"]
    return names


def group_features(step: HistoryFeatures, coverage_start: int, lines: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """History features of the lines of one group of keys, from the group's stored events and the lines.

    Returns one row per line and target: ``_row``, ``_target`` and ``f0, f1, ...`` (the target's
    :func:`feature_names`, in order).
    """
    width = max(len(feature_names(step, t)) for t in (*step.entities, FLOW))
    columns = ["_row", "_target", *[f"f{i}" for i in range(width)]]
    out = [
        pd.DataFrame({c: pd.Series(dtype="int64" if c == "_row" else "object" if c == "_target" else "float64") for c in columns})
    ]
    for key, group in lines.groupby("_target", sort=False):
        target = str(key)
        mine = stored[stored["_target"] == target]
        frame = group[list(LINE_COLUMNS)].reset_index(drop=True)
        if target == FLOW:
            frame = frame.assign(hs_code=frame["hs_code"].astype("string"))
            past = PastEvents(
                PastEvents.empty().parties,
                PastEvents.empty().values,
                _event_frame(mine.rename(columns={"_key": "flow"}), FLOW_EVENT_COLUMNS),
                coverage_start,
            )
            events = PastEvents.concat(past, PastEvents.from_lines(frame, ()))
            features = step.features_from_events(frame, events, entities=(), switch=False, flows=True)
        else:
            frame[target] = group["_key"].astype("string").to_numpy()
            parties = mine[mine["_event"] == "party"].assign(entity=target).rename(columns={"_key": "key"})
            values = mine[mine["_event"] == "value"].assign(entity=target).rename(columns={"_key": "key"})
            past = PastEvents(
                _event_frame(parties, PARTY_EVENT_COLUMNS),
                _event_frame(values, VALUE_EVENT_COLUMNS),
                PastEvents.empty().flows,
                coverage_start,
            )
            events = PastEvents.concat(past, PastEvents.from_lines(frame, (target,)))
            features = step.features_from_events(frame, events, entities=(target,), switch=target == "consignee_id", flows=False)
        names = feature_names(step, target)
        row: dict[str, object] = {"_row": group["_row"].to_numpy("int64"), "_target": target}
        row.update({f"f{i}": np.asarray(features[name], dtype="float64") for i, name in enumerate(names)})
        out.append(pd.DataFrame(row).reindex(columns=columns))
    return for_spark(pd.concat(out, ignore_index=True))


def history_features(
    spark: SparkSession, lines: DataFrame, step: HistoryFeatures, export: StoreExport | None, buckets: int
) -> DataFrame:
    """``_row`` and every history feature of the dataset's valid ``lines`` (a Spark DataFrame with a
    unique ``_row``, the typed canonical columns and any extra party columns)."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    entities = tuple(step.entities)
    bounds = lines.select(F.min("declared_at"), F.max("declared_at")).first()
    if bounds is None:  # an aggregate without GROUP BY always has one row
        raise RuntimeError("no bounds for the dataset's dates")
    first_day, last_day = ((pd.Timestamp(v) - EPOCH).days for v in bounds)
    coverage_start = first_day if export is None else min(first_day, export.coverage_start)
    targets = lines.mapInPandas(lambda batches: _line_targets(batches, entities), _targets_schema(lines.schema, entities))

    def bucket(frame: DataFrame) -> DataFrame:
        key = F.coalesce(F.col("_key"), F.col("_row").cast("string")) if "_row" in frame.columns else F.col("_key")
        return frame.withColumn("_bucket", F.pmod(F.xxhash64(F.col("_target"), key), F.lit(buckets)))

    if export is None:
        events = spark.createDataFrame([], _EVENT_FIELDS)
    else:
        flow_days = step.trailing_days + step.baseline_days
        events = stored_events(spark, export, lines, targets, first_day, last_day + 1, flow_days)
    width = max(len(feature_names(step, t)) for t in (*entities, FLOW))
    schema = T.StructType(
        [T.StructField("_row", T.LongType()), T.StructField("_target", T.StringType())]
        + [T.StructField(f"f{i}", T.DoubleType()) for i in range(width)]
    )
    computed = (
        bucket(targets)
        .groupBy("_bucket")
        .cogroup(bucket(events).groupBy("_bucket"))
        .applyInPandas(lambda mine, stored: group_features(step, coverage_start, mine, stored), schema)
    )
    columns = [
        F.max(F.when(F.col("_target") == target, F.col(f"f{i}"))).alias(name)
        for target in (*entities, FLOW)
        for i, name in enumerate(feature_names(step, target))
    ]
    return computed.groupBy("_row").agg(*columns)
