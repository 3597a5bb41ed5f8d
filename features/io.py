"""Reading and writing manifest files: CSV or Parquet, streamed in chunks, written atomically.

Readers raise :class:`~features.schema.ManifestFileError` for file-level problems (missing file,
unknown format, unreadable content, missing required column, no rows) with a one-line message that
names the file. Writers write to a hidden temporary name beside the target and rename it only when
the whole file is complete, so that a failed command never leaves a partial output.
"""

from __future__ import annotations

import csv
import gzip
import os
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.schema import ManifestFileError, check_columns, neutralise_frame

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
# Rows read, validated and scored at a time: a 100k-line chunk peaks near 1.3 GiB in batch scoring
# (200k near 2.2 GiB) at the same lines/s.
DEFAULT_CHUNK_ROWS = 100_000
_BYTES_PER_ROW_ESTIMATE = 160


def file_format(path: str | Path) -> str:
    """Return ``"csv"`` or ``"parquet"`` from the file name, or raise ManifestFileError."""
    name = str(path).lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise ManifestFileError(f"{path}: unknown format (use .csv, .csv.gz or .parquet)")


def default_quarantine_path(output: str | Path) -> Path:
    """``scored.csv`` → ``scored.quarantine.csv`` (always CSV: reasons are for people to read)."""
    output = Path(output)
    stem = output.name.split(".")[0]
    return output.with_name(f"{stem}.quarantine.csv")


def _csv_header(path: Path) -> list[str]:
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    # utf-8-sig: spreadsheet exports start with a byte-order mark, which pyarrow skips too.
    with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), [])


def _iter_csv(path: Path, chunk_rows: int, name: str) -> Iterator[pd.DataFrame]:
    header = _csv_header(path)
    check_columns(header, name)
    # Every column as text: the schema parses values itself, so a bad value becomes a row-level
    # reason instead of a file-level type-inference failure.
    convert = pacsv.ConvertOptions(
        column_types={name: pa.string() for name in header}, strings_can_be_null=True, quoted_strings_can_be_null=True
    )
    read = pacsv.ReadOptions(block_size=max(1 << 20, chunk_rows * _BYTES_PER_ROW_ESTIMATE))
    with pacsv.open_csv(path, read_options=read, convert_options=convert) as reader:
        for batch in reader:
            yield batch.to_pandas()


def _iter_parquet(path: Path, chunk_rows: int, name: str) -> Iterator[pd.DataFrame]:
    parquet = pq.ParquetFile(path)
    check_columns(parquet.schema_arrow.names, name)
    for field in parquet.schema_arrow:
        # A manifest line is flat; a list or struct column could not be written to a CSV output.
        if pa.types.is_nested(field.type):
            raise ManifestFileError(
                f"{name}: column '{field.name}' holds nested values ({field.type}); manifest columns are flat"
            )
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


def iter_manifest_chunks(
    path: str | Path, chunk_rows: int = DEFAULT_CHUNK_ROWS, name: str | None = None
) -> Iterator[pd.DataFrame]:
    """Stream a manifest file as raw DataFrames of about ``chunk_rows`` rows.

    Parameters
    ----------
    path : str or Path
        A ``.csv``, ``.csv.gz`` or ``.parquet`` file.
    chunk_rows : int
        Approximate number of rows per chunk.
    name : str, optional
        What file-level errors call the file (an upload's own name for its temporary copy);
        ``path`` by default.

    Yields
    ------
    DataFrame
        Raw values (CSV: text) with a RangeIndex continuing across chunks.

    Raises
    ------
    ManifestFileError
        File missing, unknown format, unreadable, missing a required column, or without rows.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be > 0, got {chunk_rows}")
    path = Path(path)
    name = name or str(path)
    kind = file_format(name)
    if not path.is_file():
        raise ManifestFileError(f"{name}: file not found")
    reader = _iter_csv if kind == "csv" else _iter_parquet
    offset = 0
    try:
        for chunk in reader(path, chunk_rows, name):
            if chunk.empty:
                continue
            chunk.index = pd.RangeIndex(offset, offset + len(chunk))
            offset += len(chunk)
            yield chunk
    except ManifestFileError:
        raise
    except (pa.ArrowException, OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        # EOFError: a truncated gzip stream (click would report it as "Aborted.").
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ManifestFileError(f"{name}: cannot read {kind}: {reason}") from exc
    if offset == 0:
        raise ManifestFileError(f"{name}: no rows")


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a whole manifest file (raw values); see :func:`iter_manifest_chunks`."""
    return pd.concat(list(iter_manifest_chunks(path)))


def _arrow_field(field: pa.Field) -> pa.Field:
    # All-missing columns become text so that later chunks fit the schema; timestamps are dates
    # in the canonical schema, so they are written as ISO dates.
    if pa.types.is_null(field.type):
        return pa.field(field.name, pa.string())
    if pa.types.is_timestamp(field.type):
        return pa.field(field.name, pa.date32())
    return field


def _arrow_schema(table: pa.Table) -> pa.Schema:
    """Arrow schema of the first chunk, which every later chunk is cast to."""
    return pa.schema([_arrow_field(f) for f in table.schema])


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """``pa.Table.from_pandas`` of ``frame``, its timezone-aware columns given to Arrow as instants.

    pyarrow reads a timezone-aware column through ``Series.values``, which pandas deprecates (a
    Pandas4Warning per file, and another result once pandas 4 changes it): such a column (a
    quarantined line of a Parquet file with typed timestamps) goes to Arrow as its UTC values with
    its timezone in the type, the same timestamps Arrow made of it before.
    """
    aware = {i: dtype for i, dtype in enumerate(frame.dtypes) if isinstance(dtype, pd.DatetimeTZDtype)}
    if not aware:
        return pa.Table.from_pandas(frame, preserve_index=False)
    naive = frame.copy(deep=False)
    for i in aware:
        naive.isetitem(i, frame.iloc[:, i].dt.tz_convert(None))
    table = pa.Table.from_pandas(naive, preserve_index=False)
    for i, dtype in aware.items():
        # The naive column holds the UTC values in the same unit: only its type gains the zone.
        kind = pa.timestamp(dtype.unit, tz=dtype.tz)  # pyarrow names the zone itself ("Asia/Bangkok", "+07:00")
        values = pa.chunked_array([chunk.view(kind) for chunk in table.column(i).chunks], type=kind)
        table = table.set_column(i, pa.field(table.field(i).name, kind), values)
    return table


class AtomicTableWriter:
    """Write DataFrame chunks to CSV or Parquet, appearing under ``path`` only when complete.

    Use as a context manager: on a clean exit the temporary file is renamed to ``path``; on an
    exception it is deleted and ``path`` is left untouched.

    Parameters
    ----------
    path : str or Path
        Target file; the format follows its extension.
    people_facing : bool
        A CSV file meant to be opened by people (the quarantine): text cells that a spreadsheet
        would run as a formula are neutralised (:func:`features.schema.neutralise_cell`; reading
        the file back restores them). Machine-facing output (the scored file) stays exact.
    """

    def __init__(self, path: str | Path, people_facing: bool = False):
        self.path = Path(path)
        self.people_facing = people_facing
        self.kind = file_format(self.path)
        self.temporary = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        self.rows_written = 0
        # pyarrow's ParquetWriter or CSVWriter once the first chunk has set the schema (None before);
        # pyarrow ships no type information, so to mypy either is Any.
        self._writer: Any = None
        self._schema: pa.Schema | None = None

    def write(self, frame: pd.DataFrame) -> None:
        """Append one chunk; its columns must match the first chunk's."""
        if self.people_facing and self.kind == "csv":
            frame = neutralise_frame(frame)
        table = _arrow_table(frame)
        if self._schema is None:
            self._schema = _arrow_schema(table)
            self._writer = self._open(self._schema)
        table = table.cast(self._schema)
        self._writer.write_table(table)
        self.rows_written += len(frame)

    def _open(self, schema: pa.Schema) -> pq.ParquetWriter | pacsv.CSVWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.kind == "parquet":
            return pq.ParquetWriter(self.temporary, schema)
        return pacsv.CSVWriter(self.temporary, schema)

    def __enter__(self) -> AtomicTableWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._writer is not None:
            self._writer.close()
        if exc_type is not None:
            self.temporary.unlink(missing_ok=True)
            return
        if self._writer is None:
            raise ValueError(f"{self.path}: nothing was written (call write at least once)")
        os.replace(self.temporary, self.path)


def write_table(frame: pd.DataFrame, path: str | Path, people_facing: bool = False) -> None:
    """Write one DataFrame to CSV or Parquet atomically (``people_facing``: see :class:`AtomicTableWriter`)."""
    with AtomicTableWriter(path, people_facing) as writer:
        writer.write(frame)
