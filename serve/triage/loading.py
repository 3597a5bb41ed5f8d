"""Load a scored batch file into the queue: streamed in chunks, validated, bulk-inserted, idempotent.

A scored batch file is the canonical manifest columns plus ``risk_score``, ``channel``,
``reasons``, ``suspected_commodity`` and ``model_version`` (CSV or Parquet, by extension), and, from
files scored since the origin check exists, ``check`` ("disguise" or "origin"; optional, validated
when present, not stored). Lines
are keyed on (declaration_id, line_no): loading the same file twice inserts nothing the second
time. After the insert, the exploration draw picks random checks among the new unflagged lines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from features.io import default_quarantine_path, iter_manifest_chunks
from features.reference import load_reference
from features.schema import CANONICAL_COLUMNS, LABEL_COLUMNS, REASON_COLUMN, KeyHashes, ManifestFileError, validate_manifest
from serve.report import BatchReport
from serve.triage import audit
from serve.triage.cases import get_config
from serve.triage.db import CHANNELS, COMMODITIES, PRIORITY, Batch, Case, utcnow
from serve.triage.exploration import DrawSummary, draw_exploration

SCORE_COLUMNS = ("risk_score", "channel", "reasons", "suspected_commodity", "model_version")
# Optional column of files scored since the origin check; the values of models.scope.CHECKS (not
# imported: the service starts without the model modules).
CHECK_COLUMN, CHECKS = "check", ("disguise", "origin")
DECLARED_COLUMNS = tuple(c for c in CANONICAL_COLUMNS if c not in LABEL_COLUMNS)
CHUNK_ROWS = 50_000
MAX_REPORTED_REJECTIONS = 20
FLAGGED = ("red", "yellow")
# Widths of the text columns in the database; longer values are rejected rather than truncated.
_WIDTHS = {
    "declaration_id": 64,
    "quantity_unit": 16,
    "package_type": 32,
    "transshipment_ports": 128,
    "transport_mode": 8,
    "shipper_id": 64,
    "consignee_id": 64,
    "importer_id": 64,
    "declarant_id": 64,
    "model_version": 64,
}


@dataclass
class LoadReport:
    """What a load did.

    Attributes
    ----------
    batch_id : int
    source : str
    queue_date : date
    n_read, n_inserted, n_existing, n_rejected : int
        Lines read; new cases; lines already in the database (same declaration_id and line_no);
        lines refused by validation.
    rejections : list of str
        The first refused lines with their reasons.
    draws : list of DrawSummary
        Exploration draws made for the new unflagged lines, one per port.
    """

    batch_id: int
    source: str
    queue_date: date
    n_read: int = 0
    n_inserted: int = 0
    n_existing: int = 0
    n_rejected: int = 0
    rejections: list[str] = field(default_factory=list)
    draws: list[DrawSummary] = field(default_factory=list)


def _score_problems(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Parse the five score columns; return them and one reason string per row ('' when fine)."""
    parsed = pd.DataFrame(index=frame.index)
    reasons = pd.Series("", index=frame.index, dtype="object")
    score = pd.to_numeric(frame["risk_score"], errors="coerce").astype("float64")
    reasons = reasons.where(score.between(0, 1), reasons + "risk_score must be a number in [0, 1]; ")
    parsed["risk_score"] = score
    for column, allowed in (("channel", CHANNELS), ("suspected_commodity", COMMODITIES)):
        text = frame[column].astype("string").str.strip().str.lower()
        if column == "suspected_commodity":
            text = text.fillna("none")
        reasons = reasons.where(text.isin(allowed).fillna(False), reasons + f"{column} must be one of {', '.join(allowed)}; ")
        parsed[column] = text
    version = frame["model_version"].astype("string").str.strip()
    reasons = reasons.where(version.notna() & (version != ""), reasons + "model_version is missing; ")
    parsed["model_version"] = version
    parsed["reasons"] = frame["reasons"].astype("string").str.strip() if "reasons" in frame else pd.NA
    if CHECK_COLUMN in frame:
        check = frame[CHECK_COLUMN].astype("string").str.strip().str.lower()
        reasons = reasons.where(check.isin(CHECKS).fillna(False), reasons + f"check must be one of {', '.join(CHECKS)}; ")
    return parsed, reasons


def _width_problems(frame: pd.DataFrame) -> pd.Series:
    reasons = pd.Series("", index=frame.index, dtype="object")
    for column, width in _WIDTHS.items():
        too_long = frame[column].astype("string").str.len().gt(width).fillna(False)
        reasons = reasons.where(~too_long, reasons + f"{column} longer than {width} characters; ")
    return reasons


def _case_columns(frame: pd.DataFrame, batch_id: int, queue_date: date) -> dict[str, pd.Series]:
    flagged = frame["channel"].isin(FLAGGED)
    weight = frame["net_weight_kg"].fillna(frame["gross_weight_kg"])
    columns = {name: frame[name] for name in DECLARED_COLUMNS + SCORE_COLUMNS}
    columns.update(
        {
            "declared_at": frame["declared_at"].dt.date,
            "value_per_kg": frame["declared_value_usd"] / weight,
            "priority": frame["channel"].map(PRIORITY).astype("int64"),
            "port": frame["port_of_discharge"],
            "flagged": flagged,
            "selected_by": pd.Series(np.where(flagged, "model", None), index=frame.index),
            "selection_probability": pd.Series(np.where(flagged, 1.0, np.nan), index=frame.index),
            "queue_state": pd.Series(np.where(flagged, "open", None), index=frame.index),
            "batch_id": pd.Series(batch_id, index=frame.index),
            "queue_date": pd.Series(queue_date, index=frame.index),
        }
    )
    return columns


def _native(values: pd.Series, dialect: str) -> list:
    """Python values for the driver: None for missing, ISO strings for dates on SQLite."""
    out = values.astype(object).where(values.notna(), None).tolist()
    if dialect == "sqlite" and out and any(isinstance(v, date) for v in out[:1]):
        out = [None if v is None else v.isoformat() for v in out]
    return out


def _insert_rows(db: Session, frame: pd.DataFrame, batch_id: int, queue_date: date) -> None:
    """Bulk insert through the driver, skipping keys already present.

    SQLAlchemy's per-parameter processing dominated a 100k-line load, so rows go to the driver as
    plain tuples: SQLite takes one ``executemany`` of ``INSERT ... ON CONFLICT DO NOTHING``;
    PostgreSQL takes a ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON CONFLICT
    DO NOTHING`` (row-by-row inserts were several times slower there).
    """
    dialect = db.get_bind().dialect.name
    columns = _case_columns(frame, batch_id, queue_date)
    names = list(columns)
    rows = list(zip(*(_native(columns[name], dialect) for name in names), strict=True))
    column_list = ", ".join(names)
    if dialect == "postgresql":
        _copy_rows(db, column_list, rows)
        return
    sql = (
        f"INSERT INTO cases ({column_list}) VALUES ({', '.join(['?'] * len(names))}) "
        "ON CONFLICT (declaration_id, line_no) DO NOTHING"
    )
    db.connection().exec_driver_sql(sql, rows)


def _copy_rows(db: Session, column_list: str, rows: list[tuple]) -> None:
    connection = db.connection()
    connection.exec_driver_sql(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS cases_incoming ON COMMIT DROP AS SELECT {column_list} FROM cases WITH NO DATA"
    )
    connection.exec_driver_sql("TRUNCATE cases_incoming")
    with connection.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY cases_incoming ({column_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    connection.exec_driver_sql(
        f"INSERT INTO cases ({column_list}) SELECT {column_list} FROM cases_incoming "
        "ON CONFLICT (declaration_id, line_no) DO NOTHING"
    )


def _rejection_lines(rows: pd.DataFrame, reasons: pd.Series) -> list[str]:
    ids = rows["declaration_id"] if "declaration_id" in rows else pd.Series("?", index=rows.index)
    lines = rows["line_no"] if "line_no" in rows else pd.Series(1, index=rows.index)
    return [f"{d}/{n}: {r}" for d, n, r in zip(ids, lines, reasons, strict=True)]


def _prepare_chunk(raw: pd.DataFrame, source: str, seen: KeyHashes, report: LoadReport, facts: BatchReport) -> pd.DataFrame:
    missing = [column for column in SCORE_COLUMNS if column not in raw.columns and column != "reasons"]
    if missing:
        raise ManifestFileError(f"{source}: not a scored batch, missing column '{missing[0]}'")
    result = validate_manifest(raw, source, seen)
    valid = result.valid
    scores, score_reasons = _score_problems(valid)
    valid = valid.drop(columns=[c for c in SCORE_COLUMNS if c in valid.columns]).join(scores)
    reasons = score_reasons + _width_problems(valid)
    bad = reasons != ""
    report.n_read += len(raw)
    report.n_rejected += len(result.quarantine) + int(bad.sum())
    room = MAX_REPORTED_REJECTIONS - len(report.rejections)
    if room > 0:
        report.rejections += _rejection_lines(result.quarantine.head(room), result.quarantine[REASON_COLUMN].head(room))
        room = MAX_REPORTED_REJECTIONS - len(report.rejections)
        report.rejections += _rejection_lines(valid[bad].head(room), reasons[bad].str.rstrip("; ").head(room))
    facts.add_quarantine(result.quarantine)
    facts.add_quarantine(pd.DataFrame({REASON_COLUMN: reasons[bad].str.rstrip("; ")}))
    facts.add_scored(valid[~bad])
    return valid[~bad]


def load_scored_frames(
    engine: Engine,
    chunks: Iterable[pd.DataFrame],
    source: str,
    origin: audit.Origin,
    queue_date: date | None = None,
    rng: np.random.Generator | None = None,
    quarantine_reasons: Iterable[pd.DataFrame] = (),
) -> LoadReport:
    """Load chunks of a scored batch into the queue in one transaction.

    Parameters
    ----------
    engine : Engine
        Triage database (migrated).
    chunks : iterable of DataFrame
        Raw scored lines, e.g. from :func:`features.io.iter_manifest_chunks`.
    source : str
        File name, for messages and the batch record.
    origin : Origin
        Who loads (audited).
    queue_date : date, optional
        Day the lines enter the queue; today by default.
    rng : numpy Generator, optional
        Randomness of the exploration draw; fresh OS entropy by default.
    quarantine_reasons : iterable of DataFrame, optional
        ``quarantine_reason`` column of the rows the scoring run quarantined, for the batch report
        (kept as counts in ``batches.summary`` with the lines' counts and the load's own rejections).

    Returns
    -------
    LoadReport

    Raises
    ------
    ManifestFileError
        A whole-file problem (unknown format, missing column).
    """
    queue_date = queue_date or date.today()
    rng = rng if rng is not None else np.random.default_rng()
    seen = KeyHashes()
    with Session(engine) as db, db.begin():
        batch = Batch(source=source[:255], loaded_at=utcnow(), loaded_by=origin.actor, queue_date=queue_date)
        db.add(batch)
        db.flush()
        report = LoadReport(batch_id=batch.id, source=source, queue_date=queue_date)
        facts = BatchReport(load_reference().cover_codes)
        for raw in chunks:
            valid = _prepare_chunk(raw, source, seen, report, facts)
            if len(valid):
                _insert_rows(db, valid, batch.id, queue_date)
        report.n_inserted = int(db.scalar(select(func.count(Case.id)).where(Case.batch_id == batch.id)) or 0)
        report.n_existing = report.n_read - report.n_rejected - report.n_inserted
        report.draws = draw_exploration(db, batch.id, queue_date, get_config(db), rng)
        batch.n_read, batch.n_inserted = report.n_read, report.n_inserted
        batch.n_existing, batch.n_rejected = report.n_existing, report.n_rejected
        for reasons in quarantine_reasons:
            facts.add_quarantine(reasons)
        batch.summary = json.dumps(facts.to_dict(), sort_keys=True)
        audit.record(
            db,
            origin,
            "batch_load",
            f"batch:{batch.id}",
            {
                "source": source,
                "read": report.n_read,
                "inserted": report.n_inserted,
                "existing": report.n_existing,
                "rejected": report.n_rejected,
                "random_checks": sum(d.picked for d in report.draws),
            },
        )
    if report.n_inserted:
        refresh_statistics(engine)
    return report


def refresh_statistics(engine: Engine) -> None:
    """Refresh planner statistics (and PostgreSQL's visibility map) after a bulk load.

    Without it, PostgreSQL reads the table instead of the queue index until autovacuum passes,
    and deep queue pages of a fresh 100k-line batch take a second instead of milliseconds.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("VACUUM (ANALYZE) cases")
        else:
            connection.exec_driver_sql("PRAGMA optimize")


def iter_quarantine_reasons(path: Path) -> Iterator[pd.DataFrame]:
    """The ``quarantine_reason`` column of a scoring run's quarantine file, in chunks (nothing when absent)."""
    if not path.exists():
        return
    try:
        for chunk in pd.read_csv(
            path, usecols=lambda c: c == REASON_COLUMN, dtype=str, keep_default_na=False, chunksize=CHUNK_ROWS
        ):
            if REASON_COLUMN in chunk:
                yield chunk
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestFileError(f"{path}: unreadable quarantine file ({exc})") from exc


def load_scored_file(
    engine: Engine,
    path: Path,
    origin: audit.Origin,
    queue_date: date | None = None,
    rng: np.random.Generator | None = None,
    source: str | None = None,
) -> LoadReport:
    """Stream a scored batch file (CSV or Parquet) into the queue; see :func:`load_scored_frames`.

    The scoring run's quarantine file beside it (``<stem>.quarantine.csv``), when there, adds its
    reasons to the batch report.
    """
    path = Path(path)
    source = source or path.name
    chunks = iter_manifest_chunks(path, CHUNK_ROWS, name=source)
    return load_scored_frames(
        engine, chunks, source, origin, queue_date, rng, iter_quarantine_reasons(default_quarantine_path(path))
    )
