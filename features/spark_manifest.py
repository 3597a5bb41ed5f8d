"""Manifest datasets on Spark: read, validated by :func:`features.schema.validate_manifest`, deduplicated.

The default engine reads one file in chunks and validates each chunk; a key met in an earlier chunk
is a duplicate. Here a dataset (a file, a folder of part files, hive-partitioned or not, or a glob)
is read by Spark and every batch of every partition goes through the same ``validate_manifest``
(``mapInPandas``), so the parsing, the row rules and the reasons are the default engine's own. What
a batch cannot see is a key met in another batch: a global step then finds, among the rows that
passed every rule, those whose key a valid row met earlier already holds, and gives them the reason
``validate_manifest`` gives a duplicate (by running it on the rows twice).

"Earlier" is the dataset's row order: files in the lexicographic order of their paths, rows in file
order (``_metadata.file_path``, ``file_block_start`` and a position that increases along each
split). The default engine scoring the concatenation of the files in that order keeps the same
first occurrences.

Every row ends in exactly one of the valid lines and the quarantine, which keeps the row's original
values (as Spark read them) and the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from features.io import CSV_SUFFIXES, PARQUET_SUFFIXES
from features.schema import (
    CANONICAL_COLUMNS,
    DATE_COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    KEY_COLUMNS,
    REASON_COLUMN,
    TEXT_COLUMNS,
    ManifestFileError,
    check_columns,
    validate_manifest,
)

if TYPE_CHECKING:  # PySpark is imported where it is used: the default engine never loads it
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

# Where a row came from: the dataset's row order (file, split, position along the split).
ORDER_COLUMNS = ("_file", "_block", "_row")
RAW_PREFIX = "_raw_"  # the original value of a canonical column, kept for the quarantine
_REASON = "_reason"


def canonical_type(column: str) -> DataType:
    """The Spark type of a validated canonical column (as ``validate_manifest`` types it)."""
    from pyspark.sql import types as T

    if column in DATE_COLUMNS:
        return T.TimestampNTZType()
    if column in FLOAT_COLUMNS:
        return T.DoubleType()
    if column in INT_COLUMNS:
        return T.LongType()
    return T.StringType()


def typed_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Validated lines as Spark hands them to Python, with the dtypes ``validate_manifest`` gives."""
    typed: dict[str, pd.Series] = {}
    for column in frame.columns:
        values = frame[column]
        if column in TEXT_COLUMNS:
            typed[column] = values.astype("string")
        elif column in INT_COLUMNS:
            typed[column] = values.astype("Int64")
        elif column in FLOAT_COLUMNS:
            typed[column] = values.astype("float64")
        elif column in DATE_COLUMNS:
            typed[column] = pd.to_datetime(values).astype("datetime64[ns]")
        else:
            typed[column] = values
    return pd.DataFrame(typed, index=frame.index)


def for_spark(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as a Python function hands it back to Spark: text columns as Python objects.

    Arrow-backed text (pandas 3's default) converts to chunked arrays, which Spark's conversion
    refuses.
    """
    text = [c for c in frame.columns if isinstance(frame[c].dtype, pd.StringDtype)]
    if not text:
        return frame
    return frame.assign(**{c: frame[c].astype(object).where(frame[c].notna(), None) for c in text})


@dataclass(frozen=True)
class ValidatedDataset:
    """A dataset split into valid lines and quarantined rows (Spark DataFrames).

    Attributes
    ----------
    lines : DataFrame
        :data:`ORDER_COLUMNS` (``_row`` is unique), then the typed canonical columns and the extra
        input columns, as ``validate_manifest(...).valid`` has them.
    quarantine : DataFrame
        :data:`ORDER_COLUMNS`, the input columns with their original values, and
        ``quarantine_reason``.
    input_columns : list of str
        The dataset's columns in order (partition columns of a hive layout last).
    """

    lines: DataFrame
    quarantine: DataFrame
    input_columns: list[str]


def dataset_format(spark: SparkSession, path: str) -> str:
    """``"csv"`` or ``"parquet"``: from the path's name, else from the data files under it.

    Raises
    ------
    ManifestFileError
        Nothing at ``path``, no data file under it, or files of both formats.
    """
    jvm = spark.sparkContext._jvm
    if jvm is None:  # only a stopped session has none
        raise RuntimeError("the Spark session is stopped")
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    statuses = fs.globStatus(hadoop_path)
    if statuses is None or len(statuses) == 0:
        raise ManifestFileError(f"{path}: file not found")
    names = []
    for status in statuses:
        if status.isFile():
            names.append(status.getPath().getName())
            continue
        files = fs.listFiles(status.getPath(), True)
        while files.hasNext():
            file_path = files.next().getPath()
            hidden = any(part.startswith(("_", ".")) for part in file_path.toUri().getPath().split("/")[-1:])
            if not hidden:
                names.append(file_path.getName())
    kinds = {
        "csv" if name.lower().endswith(CSV_SUFFIXES) else "parquet" if name.lower().endswith(PARQUET_SUFFIXES) else None
        for name in names
    }
    found = {kind for kind in kinds if kind is not None}
    if not found:
        raise ManifestFileError(f"{path}: no .csv, .csv.gz or .parquet file found")
    if len(found) > 1:
        raise ManifestFileError(f"{path}: holds both CSV and Parquet files; score one format at a time")
    return found.pop()


def read_dataset(spark: SparkSession, path: str) -> tuple[DataFrame, list[str]]:
    """The dataset's rows with their :data:`ORDER_COLUMNS`, and its columns (file-level checks done).

    CSV is read as text (the schema parses values itself, as the default engine's reader leaves
    them), with RFC 4180 quoting and quoted line breaks; Parquet with its own types.

    Raises
    ------
    ManifestFileError
        As the default engine's reader: a missing file, a column named twice, a missing required
        column, a nested column; or no rows (raised by :func:`validate_dataset`).
    """
    from pyspark.sql import functions as F

    kind = dataset_format(spark, path)
    if kind == "csv":
        frame = spark.read.options(header=True, multiLine=True, escape='"', enforceSchema=False, encoding="UTF-8").csv(path)
    else:
        frame = spark.read.parquet(path)
    columns = list(frame.columns)
    check_columns(columns, path)
    from pyspark.sql import types as T

    for field in frame.schema.fields:
        if isinstance(field.dataType, T.ArrayType | T.MapType | T.StructType):
            raise ManifestFileError(
                f"{path}: column '{field.name}' holds nested values ({field.dataType.simpleString()}); manifest columns are flat"
            )
    ordered = frame.select(
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_row"),
        *[F.col(f"`{c}`") for c in columns],
    )
    # Spark packs several files into a partition, largest first: sorted within each partition, a
    # batch's duplicates are flagged in dataset order (no shuffle: the positions increase per split).
    return ordered.sortWithinPartitions(*ORDER_COLUMNS), columns


def _validated_schema(raw_schema: StructType, input_columns: list[str]) -> StructType:
    from pyspark.sql import types as T

    by_name = {f.name: f.dataType for f in raw_schema.fields}
    extras = [c for c in input_columns if c not in CANONICAL_COLUMNS]
    fields = [
        T.StructField("_file", T.StringType()),
        T.StructField("_block", T.LongType()),
        T.StructField("_row", T.LongType()),
        T.StructField(_REASON, T.StringType()),
    ]
    fields += [T.StructField(c, canonical_type(c)) for c in CANONICAL_COLUMNS]
    fields += [T.StructField(c, by_name[c]) for c in extras]
    fields += [T.StructField(RAW_PREFIX + c, by_name[c]) for c in input_columns if c in CANONICAL_COLUMNS]
    return T.StructType(fields)


def _validate_batches(batches: Iterator[pd.DataFrame], input_columns: list[str], source: str) -> Iterator[pd.DataFrame]:
    """Per batch: the typed values of valid rows, the original values of all, the reasons of the bad ones."""
    extras = [c for c in input_columns if c not in CANONICAL_COLUMNS]
    for batch in batches:
        batch = batch.reset_index(drop=True)
        raw = batch[input_columns]
        result = validate_manifest(raw, source)
        typed = result.valid.reindex(raw.index)
        reasons = pd.Series(pd.NA, index=raw.index, dtype="string")
        reasons[result.quarantine.index] = result.quarantine[REASON_COLUMN].astype("string")
        out = {c: batch[c] for c in ORDER_COLUMNS}
        out[_REASON] = reasons
        out.update({c: typed[c] for c in CANONICAL_COLUMNS})
        out.update({c: raw[c] for c in extras})
        out.update({RAW_PREFIX + c: raw[c] for c in input_columns if c in CANONICAL_COLUMNS})
        yield for_spark(pd.DataFrame(out))


def _duplicate_reasons(batches: Iterator[pd.DataFrame], input_columns: list[str], source: str) -> Iterator[pd.DataFrame]:
    """The reason ``validate_manifest`` gives rows whose key a valid row met before: each row is
    validated after itself (they passed every rule, so that is their only reason)."""
    for batch in batches:
        batch = batch.reset_index(drop=True)
        raw = batch[[RAW_PREFIX + c if c in CANONICAL_COLUMNS else c for c in input_columns]]
        raw.columns = input_columns
        twice = pd.concat([raw, raw], ignore_index=True)
        quarantined = validate_manifest(twice, source).quarantine
        second = quarantined.loc[quarantined.index >= len(raw), REASON_COLUMN]
        if len(second) != len(raw):
            raise RuntimeError("a duplicate row failed another rule the second time it was validated")
        reasons = pd.Series(second.to_numpy(), index=second.index - len(raw)).sort_index()
        yield for_spark(
            pd.DataFrame({**{c: batch[c] for c in ORDER_COLUMNS}, **{c: raw[c] for c in input_columns}, REASON_COLUMN: reasons})
        )


def validate_dataset(spark: SparkSession, path: str, workdir: str) -> ValidatedDataset:
    """Read and validate a dataset; the validated rows are written once under ``workdir``.

    Raises
    ------
    ManifestFileError
        File-level problems (see :func:`read_dataset`), or a dataset without rows.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    raw, input_columns = read_dataset(spark, path)
    schema = _validated_schema(raw.schema, input_columns)
    checked = raw.mapInPandas(lambda batches: _validate_batches(batches, input_columns, path), schema)
    checked.write.parquet(f"{workdir}/validated")
    checked = spark.read.parquet(f"{workdir}/validated")
    if checked.limit(1).count() == 0:
        raise ManifestFileError(f"{path}: no rows")

    extras = [c for c in input_columns if c not in CANONICAL_COLUMNS]
    raw_columns = [RAW_PREFIX + c if c in CANONICAL_COLUMNS else c for c in input_columns]
    order = [F.col(c) for c in ORDER_COLUMNS]
    first = Window.partitionBy(*KEY_COLUMNS).orderBy(*order)
    clean = checked.filter(F.col(_REASON).isNull()).withColumn("_nth", F.row_number().over(first))
    lines = clean.filter(F.col("_nth") == 1).select(*ORDER_COLUMNS, *CANONICAL_COLUMNS, *extras)

    from pyspark.sql import types as T

    duplicate_schema = T.StructType(
        [f for f in schema.fields if f.name in ORDER_COLUMNS]
        + [T.StructField(c, schema[RAW_PREFIX + c if c in CANONICAL_COLUMNS else c].dataType) for c in input_columns]
        + [T.StructField(REASON_COLUMN, T.StringType())]
    )
    duplicates = (
        clean.filter(F.col("_nth") > 1)
        .select(*ORDER_COLUMNS, *raw_columns)
        .mapInPandas(lambda batches: _duplicate_reasons(batches, input_columns, path), duplicate_schema)
    )
    failed = checked.filter(F.col(_REASON).isNotNull()).select(
        *ORDER_COLUMNS, *[F.col(r).alias(c) for r, c in zip(raw_columns, input_columns)], F.col(_REASON).alias(REASON_COLUMN)
    )
    return ValidatedDataset(lines, failed.unionByName(duplicates), input_columns)
