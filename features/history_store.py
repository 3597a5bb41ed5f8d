"""The history store: every manifest line the system has seen, for point-in-time history features.

A folder of Parquet parts, one per ingested batch (the training data, each scored file). Reading
concatenates the parts and keeps, for a line scored or labelled more than once, its latest version,
so re-scoring a file never counts its lines twice and a labelled copy supersedes an unlabelled one.
Only the columns the history features read are kept.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.history import HISTORY_COLUMNS

DEFAULT_HISTORY_DIR = "history"
_TEXT = pa.string()
_SCHEMA = pa.schema([
    (c, pa.date32() if c == "declared_at" else pa.float64() if c in ("line_no", "inspected", "misdeclared") else _TEXT)
    for c in HISTORY_COLUMNS
])


def resolve_history_dir(directory: str | Path | None = None) -> Path:
    """The argument, else ``MISDECLARE_HISTORY_DIR``, else ``./history``."""
    return Path(directory or os.environ.get("MISDECLARE_HISTORY_DIR") or DEFAULT_HISTORY_DIR)


def history_table(lines: pd.DataFrame) -> pa.Table:
    """The history columns of validated lines as an Arrow table of the store's schema."""
    frame = lines.reindex(columns=list(HISTORY_COLUMNS)).copy()
    for column in ("line_no", "inspected", "misdeclared"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    frame["declared_at"] = pd.to_datetime(frame["declared_at"]).dt.date
    return pa.Table.from_pandas(frame, schema=_SCHEMA, preserve_index=False)


class HistoryStore:
    """Append-only Parquet parts under ``directory``.

    Parameters
    ----------
    directory : str or Path
        Folder of the parts (created on first append).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def parts(self) -> list[Path]:
        """Part files in the order they were written."""
        return sorted(self.directory.glob("part-*.parquet")) if self.directory.is_dir() else []

    def append(self, lines: pd.DataFrame) -> Path | None:
        """Add lines as a new part (atomically); an identical batch already stored is not written again."""
        if lines.empty:
            return None
        table = history_table(lines)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        payload = sink.getvalue().to_pybytes()
        digest = hashlib.sha256(payload).hexdigest()[:16]
        parts = self.parts()
        if parts and parts[-1].stem.endswith(digest):
            return parts[-1]
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"part-{time.time_ns():020d}-{digest}.parquet"
        temporary = target.with_name(f".{target.name}.partial")
        temporary.write_bytes(payload)
        os.replace(temporary, target)
        return target

    def read(self) -> pd.DataFrame:
        """Every stored line, latest version per (declaration_id, line_no); empty frame if none."""
        parts = self.parts()
        if not parts:
            return history_table(pd.DataFrame(columns=list(HISTORY_COLUMNS))).to_pandas()
        frame = pa.concat_tables([pq.read_table(p, schema=_SCHEMA) for p in parts]).to_pandas()
        frame["declared_at"] = pd.to_datetime(frame["declared_at"])
        return frame.drop_duplicates(subset=["declaration_id", "line_no"], keep="last").reset_index(drop=True)
