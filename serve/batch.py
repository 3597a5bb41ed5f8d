"""Batch scoring of manifest files: streamed in chunks, every row accounted for, atomic output."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from features.history import HISTORY_COLUMNS
from features.history_store import HistoryStore
from features.io import DEFAULT_CHUNK_ROWS, AtomicTableWriter, file_format, iter_manifest_chunks
from features.schema import CANONICAL_COLUMNS, REASON_COLUMN, validate_manifest
from models.predict import OUTPUT_COLUMNS, score_frame


@dataclass
class ScoreSummary:
    """Counts of a batch-scoring run: lines read = lines scored + lines quarantined."""

    output: Path
    quarantine: Path
    lines_read: int = 0
    lines_scored: int = 0
    lines_quarantined: int = 0
    channels: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def default_quarantine_path(output: str | Path) -> Path:
    """``scored.csv`` → ``scored.quarantine.csv`` (always CSV: reasons are for people to read)."""
    output = Path(output)
    stem = output.name.split(".")[0]
    return output.with_name(f"{stem}.quarantine.csv")


def _empty_like(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="string") for column in columns})


def score_file(input_path: str | Path, output_path: str | Path, bundle, quarantine_path: str | Path | None = None,
               chunk_rows: int = DEFAULT_CHUNK_ROWS, explain: str = "flagged",
               on_chunk: Callable[[int], None] | None = None, history: HistoryStore | None = None) -> ScoreSummary:
    """Score a manifest file into ``output_path``; invalid rows go to the quarantine file.

    Both files appear only when the whole input has been processed; a file-level error raises
    :class:`~features.schema.ManifestFileError` and leaves neither.

    Parameters
    ----------
    input_path, output_path : str or Path
        CSV or Parquet, by extension.
    bundle : ModelBundle
        The loaded model bundle.
    quarantine_path : str or Path, optional
        Defaults to ``<output stem>.quarantine.csv`` beside the output.
    chunk_rows : int
        Rows per chunk (memory stays bounded by the chunk, not the file).
    explain : str
        Which lines get reasons (see :func:`models.predict.score_frame`).
    on_chunk : callable, optional
        Called with the number of rows of each processed chunk (progress bars).
    history : HistoryStore, optional
        Lines seen before, for the history features; the scored lines are appended to it once
        the output is complete. Without it, history comes from the file's own earlier lines.
    """
    started = time.perf_counter()
    file_format(output_path)
    summary = ScoreSummary(Path(output_path), Path(quarantine_path or default_quarantine_path(output_path)))
    seen_keys: set[int] = set()
    input_columns: list[str] = []
    # Lines of this file already scored count as history for its later chunks.
    past = [history.read()] if history is not None else []
    with AtomicTableWriter(summary.output) as scored, AtomicTableWriter(summary.quarantine) as quarantined:
        for chunk in iter_manifest_chunks(input_path, chunk_rows):
            input_columns = list(chunk.columns)
            result = validate_manifest(chunk, str(input_path), seen_keys)
            if len(result.valid):
                frame = score_frame(bundle, result.valid, explain=explain,
                                    past=pd.concat(past, ignore_index=True) if past else None)
                past.append(result.valid[list(HISTORY_COLUMNS)])
                scored.write(frame)
                summary.channels.update(frame["channel"].tolist())
            if len(result.quarantine):
                quarantined.write(result.quarantine)
            summary.lines_read += len(chunk)
            summary.lines_scored += len(result.valid)
            summary.lines_quarantined += len(result.quarantine)
            if on_chunk is not None:
                on_chunk(len(chunk))
        if scored.rows_written == 0:
            extras = [c for c in input_columns if c not in CANONICAL_COLUMNS]
            scored.write(_empty_like(list(CANONICAL_COLUMNS) + extras + list(OUTPUT_COLUMNS)))
        if quarantined.rows_written == 0:
            quarantined.write(_empty_like(input_columns + [REASON_COLUMN]))
    if history is not None and len(past) > 1:
        history.append(pd.concat(past[1:], ignore_index=True))
    summary.seconds = time.perf_counter() - started
    return summary
