"""``misdeclare score --engine spark``: the same scoring as :mod:`serve.batch`, on Apache Spark.

Each step calls the default engine's own functions on Spark partitions or groups; nothing about
a line's validity, features, risk, channel or reasons is written a second time:

1. **validate** (:mod:`features.spark_manifest`): ``validate_manifest`` on every batch, then the
   keys met twice across batches, in the dataset's row order;
2. **history** (:mod:`features.spark_history`): ``HistoryFeatures.features_from_events`` per group
   of party keys and of flows, on the group's lines and the history store's events;
3. **per arrival day**: the lines of a day with their history features go through
   ``score_risk`` (the bundle's pipeline, with the history step taking the precomputed columns),
   ``assign_channels`` (the day quotas need the whole day, and only it) and ``finish_frame``
   (suspected commodity and reasons);
4. **write**: in the dataset's row order, Parquet part files in a temporary folder beside the
   output, renamed to the output when complete (a failed or killed job leaves nothing there);
   the quarantine likewise; then the lines join the history store, as after the default engine.

The bundle is verified once on the driver (:func:`models.bundle.read_bundle_contents`); its files'
bytes are broadcast and each Python worker builds its models from that text once
(:func:`models.bundle.bundle_from_contents`): no model object is ever pickled.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from features.history import HISTORY_COLUMNS, HistoryColumns, HistoryFeatures
from features.history_store import HistoryStore
from features.io import default_quarantine_path
from features.schema import CANONICAL_COLUMNS, REASON_COLUMN, neutralise_frame
from features.spark_history import export_store, history_features
from features.spark_manifest import ORDER_COLUMNS, canonical_type, for_spark, typed_frame, validate_dataset
from models.bundle import bundle_from_contents, read_bundle_contents
from models.channels import channel_rates, quota_keys
from models.predict import OUTPUT_COLUMNS, assign_channels, finish_frame, score_risk
from serve.batch import ScoreSummary, remove_stale_work
from serve.report import BatchReport

ENGINES = ("default", "spark")
DEFAULT_BUCKETS = 64  # groups of party keys (and of flows) whose history one Python call computes

_WORKER_BUNDLES: dict[str, object] = {}  # per Python worker: the bundle built once from its text


def spark_session(master: str | None = None, app_name: str = "misdeclare", shuffle_partitions: int | None = None):
    """The active SparkSession, or a new one on ``master`` (None: what ``spark-submit`` set, else local).

    The workers run this process's Python (``PYSPARK_PYTHON``), so they import the same packages.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    settings = {
        "spark.ui.enabled": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.adaptive.enabled": "true",
    }
    if shuffle_partitions:
        settings["spark.sql.shuffle.partitions"] = str(shuffle_partitions)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class _FileSystem:
    """The Hadoop file system of a path (local, HDFS, S3...), for the work folder and the rename."""

    def __init__(self, spark, path: str):
        jvm = spark.sparkContext._jvm
        self._path = jvm.org.apache.hadoop.fs.Path
        self.fs = self._path(path).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
        self.local = self.fs.getUri().getScheme() == "file"

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._path(path)))

    def delete(self, path: str) -> None:
        self.fs.delete(self._path(path), True)

    def rename(self, source: str, target: str) -> None:
        if not self.fs.rename(self._path(source), self._path(target)):
            raise OSError(f"could not rename {source} to {target}")

    def upload(self, local: str, target: str) -> None:
        self.fs.copyFromLocalFile(False, True, self._path(local), self._path(target))

    def replace(self, source: str, target: str) -> None:
        """Put ``source`` at ``target``: the old target is moved aside first, removed after."""
        aside = None
        if self.exists(target):
            aside = f"{target}.replaced-{uuid.uuid4().hex[:8]}"
            self.rename(target, aside)
        self.rename(source, target)
        if aside is not None:
            self.delete(aside)


def _worker_bundle(contents: dict[str, bytes], version: str, manifest_sha: str):
    if manifest_sha not in _WORKER_BUNDLES:
        _WORKER_BUNDLES[manifest_sha] = bundle_from_contents(contents, version, manifest_sha)
    return _WORKER_BUNDLES[manifest_sha]


def _score_day(day: pd.DataFrame, shipped, line_columns: list[str], history_names: list[str], explain: str) -> pd.DataFrame:
    """One arrival day: risk, channel by the day's quotas, suspected commodity and reasons."""
    contents, version, manifest_sha = shipped.value
    bundle = _worker_bundle(contents, version, manifest_sha)
    day = day.reset_index(drop=True)
    lines = typed_frame(day[line_columns])
    scores = score_risk(bundle, lines, HistoryColumns(day[history_names]), num_threads=1)
    channels = assign_channels(quota_keys(lines), scores, channel_rates(bundle.spec))
    frame = finish_frame(bundle, lines, scores, channels, explain, num_threads=1)
    return for_spark(pd.concat([day[list(ORDER_COLUMNS)], frame], axis=1))


def _neutralised(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for batch in batches:
        yield for_spark(neutralise_frame(batch))


def _absolute(path: str | Path) -> str:
    text = str(path)
    return text if "://" in text or text.startswith("file:") else os.path.abspath(text)


def _write(frame, path: str, kind: str) -> None:
    writer = frame.write.mode("overwrite")
    if kind == "csv":
        writer.options(header=True, escape='"', quoteAll=False, emptyValue="").csv(path)
    else:
        writer.parquet(path)


def score_dataset(
    spark,
    input_path: str | Path,
    output_path: str | Path,
    model: str,
    tracking_uri: str | None = None,
    quarantine_path: str | Path | None = None,
    explain: str = "flagged",
    history: HistoryStore | None = None,
    buckets: int = DEFAULT_BUCKETS,
    report: BatchReport | None = None,
) -> ScoreSummary:
    """Score a manifest dataset into a Parquet dataset at ``output_path`` (see the module docstring).

    Parameters
    ----------
    spark : SparkSession
    input_path : str or Path
        A CSV or Parquet file, a folder of them (hive partitions allowed) or a glob.
    output_path : str or Path
        The scored dataset (a folder of Parquet parts; its columns are the default engine's output).
    model : str
        ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or a bundle folder.
    quarantine_path : str or Path, optional
        Where the rows failing validation go: a folder of CSV parts (``.csv``) or of Parquet parts;
        ``<output stem>.quarantine.csv`` beside the output by default.
    explain : str
        Which lines get reasons (:func:`models.predict.explain_mask`).
    history : HistoryStore, optional
        Lines seen before; the dataset's lines join it once the output is complete.
    buckets : int
        Groups of party keys (and of flows) whose history features one Python call computes.
    report : BatchReport, optional
        Counts the scored lines and the quarantine (``--report``), read back from what was written
        (the output must be on the driver's file system).
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    started = time.perf_counter()
    if buckets < 1:
        raise ValueError(f"buckets must be >= 1, got {buckets}")
    output = _absolute(output_path)
    quarantine = _absolute(quarantine_path or default_quarantine_path(str(output_path).rstrip("/")))
    summary = ScoreSummary(Path(output_path), Path(quarantine))
    contents, version, manifest_sha = read_bundle_contents(model, tracking_uri)
    bundle = bundle_from_contents(contents, version, manifest_sha)
    step = next(s for _, s in bundle.pipeline.steps if isinstance(s, HistoryFeatures))

    fs = _FileSystem(spark, output)
    parent = output.rstrip("/").rsplit("/", 1)[0]
    name = output.rstrip("/").rsplit("/", 1)[1]
    if fs.local:
        Path(parent).mkdir(parents=True, exist_ok=True)
        for target in (Path(output), Path(quarantine)):
            remove_stale_work(target)
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    workdir = f"{parent}/.{name}.parts-{token}"
    scratch = Path(tempfile.mkdtemp(prefix="misdeclare-spark-"))
    try:
        dataset = validate_dataset(spark, str(input_path), workdir)
        lines = dataset.lines
        lines.write.parquet(f"{workdir}/lines")
        lines = spark.read.parquet(f"{workdir}/lines")
        export = None
        if history is not None:
            export = export_store(history, scratch / "store")
            if export is not None and not fs.local:
                fs.upload(export.folder, f"{workdir}/store")
                export = type(export)(f"{workdir}/store", export.coverage_start)
        features = history_features(spark, lines, step, export, buckets)
        history_names = list(step.numeric_features_)
        line_columns = [c for c in lines.columns if c not in ORDER_COLUMNS]
        extras = [c for c in line_columns if c not in CANONICAL_COLUMNS]
        out_fields = [lines.schema[c] for c in ORDER_COLUMNS]
        out_fields += [T.StructField(c, canonical_type(c)) for c in CANONICAL_COLUMNS]
        out_fields += [lines.schema[c] for c in extras]
        out_fields += [T.StructField(c, T.DoubleType() if c == "risk_score" else T.StringType()) for c in OUTPUT_COLUMNS]
        shipped = spark.sparkContext.broadcast((contents, version, manifest_sha))
        scored = (
            lines.join(features, "_row", "left")
            .groupBy(F.to_date("declared_at").alias("_day"))
            .applyInPandas(
                lambda day: _score_day(day, shipped, line_columns, history_names, explain),
                T.StructType(out_fields),
            )
        )
        ordered = scored.orderBy(*ORDER_COLUMNS).drop(*ORDER_COLUMNS).withColumn("declared_at", F.to_date("declared_at"))
        ordered.write.parquet(f"{workdir}/scored")
        kind = "csv" if quarantine.lower().rstrip("/").endswith(".csv") else "parquet"
        bad = dataset.quarantine.orderBy(*ORDER_COLUMNS).drop(*ORDER_COLUMNS)
        if kind == "csv":
            bad = bad.mapInPandas(_neutralised, bad.schema)
        _write(bad, f"{workdir}/quarantine", kind)

        written = spark.read.parquet(f"{workdir}/scored")
        counts = written.groupBy("channel", "check").count().collect()
        summary.lines_scored = sum(int(r["count"]) for r in counts)
        summary.channels = Counter()
        summary.checks = Counter()
        for row in counts:
            summary.channels[row["channel"]] += int(row["count"])
            summary.checks[row["check"]] += int(row["count"])
        summary.lines_quarantined = int(spark.read.parquet(f"{workdir}/validated").count()) - summary.lines_scored
        summary.lines_read = summary.lines_scored + summary.lines_quarantined
        if report is not None:
            _add_to_report(report, spark, f"{workdir}/scored", f"{workdir}/quarantine", kind, fs.local)
        fs.replace(f"{workdir}/quarantine", quarantine)
        fs.replace(f"{workdir}/scored", output)
        if history is not None:
            _append_to_store(history, spark, f"{workdir}/lines", fs.local)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if fs.exists(workdir):
            fs.delete(workdir)
    summary.seconds = time.perf_counter() - started
    return summary


def _add_to_report(report: BatchReport, spark, scored: str, quarantine: str, kind: str, local: bool) -> None:
    """Feed the batch report from the written output (read in batches) and the quarantine's reasons."""
    if not local:
        raise ValueError("--report with --engine spark needs the output on the driver's file system")
    import pyarrow.dataset as ds

    for batch in ds.dataset(scored.removeprefix("file:"), format="parquet").to_batches(batch_size=100_000):
        report.add_scored(batch.to_pandas())
    reader = spark.read.options(header=True, multiLine=True, escape='"').csv if kind == "csv" else spark.read.parquet
    reasons = [row[0] for row in reader(quarantine).select(REASON_COLUMN).toLocalIterator()] if _has_parts(quarantine) else []
    report.add_quarantine(pd.DataFrame({REASON_COLUMN: reasons}))


def _has_parts(folder: str) -> bool:
    return any(not p.name.startswith(("_", ".")) for p in Path(folder.removeprefix("file:")).iterdir())


def _append_to_store(history: HistoryStore, spark, lines_path: str, local: bool, rows: int = 100_000) -> None:
    """The scored lines join the history store, ``rows`` at a time (as the default engine's parts do)."""
    columns = list(HISTORY_COLUMNS)
    if local:
        import pyarrow.dataset as ds

        for batch in ds.dataset(lines_path.removeprefix("file:"), format="parquet").to_batches(columns=columns, batch_size=rows):
            if batch.num_rows:
                history.append(batch.to_pandas())
        return
    chunk: list = []
    for row in spark.read.parquet(lines_path).select(*columns).toLocalIterator():
        chunk.append(row.asDict())
        if len(chunk) == rows:
            history.append(pd.DataFrame(chunk))
            chunk = []
    if chunk:
        history.append(pd.DataFrame(chunk))
