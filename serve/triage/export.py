"""Export recorded outcomes as labelled manifest lines in the canonical schema, for retraining.

Only inspections count as labels: ``confirmed`` gives inspected=1, misdeclared=1 and the
commodity found; ``clean`` gives inspected=1, misdeclared=0, found_commodity=none. Lines that
could not be inspected carry no label and are left out. The outcome in force (the latest event)
is exported. Two extra columns, ``selection_probability`` and ``selected_by``, let training weight
each line by the inverse of the probability it had of being inspected.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, date, datetime, time
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from features.schema import CANONICAL_COLUMNS, SELECTION_COLUMNS
from serve.triage import audit
from serve.triage.db import Case, Outcome

EXTRA_COLUMNS = SELECTION_COLUMNS
LABELLED_RESULTS = ("confirmed", "clean")
_DECLARED = tuple(c for c in CANONICAL_COLUMNS if c not in ("inspected", "misdeclared", "found_commodity"))


def labels_frame(db: Session, since: date) -> pd.DataFrame:
    """Return the labelled lines whose outcome in force was recorded on or after ``since`` (UTC).

    Returns
    -------
    DataFrame
        Canonical columns (in canonical order) plus ``selection_probability`` and ``selected_by``,
        ordered by declaration_id and line_no.
    """
    start = datetime.combine(since, time(), UTC)
    columns = [getattr(Case, name) for name in _DECLARED + EXTRA_COLUMNS]
    rows = db.execute(
        select(*columns, Outcome.result, Outcome.found_commodity)
        .join(Outcome, Outcome.id == Case.current_outcome_id)
        .where(Outcome.result.in_(LABELLED_RESULTS), Outcome.recorded_at >= start)
        .order_by(Case.declaration_id, Case.line_no)
    ).all()
    frame = pd.DataFrame(rows, columns=[*_DECLARED, *EXTRA_COLUMNS, "result", "found"])
    frame["inspected"] = 1
    frame["misdeclared"] = (frame["result"] == "confirmed").astype("int64")
    frame["found_commodity"] = frame["found"].astype("object")
    frame["declared_at"] = pd.to_datetime(frame["declared_at"])
    for column in ("line_no", "packages", "containers", "inspected", "misdeclared"):
        frame[column] = frame[column].astype("Int64")
    return frame[list(CANONICAL_COLUMNS) + list(EXTRA_COLUMNS)]


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as CSV or Parquet (by extension), atomically (temporary file, then rename)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise ValueError(f"{path.name}: unknown format '{suffix}' (expected .csv or .parquet)")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        if suffix == ".csv":
            frame.to_csv(temporary, index=False, date_format="%Y-%m-%d")
        else:
            frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def export_labels(engine: Engine, since: date, path: Path, origin: audit.Origin) -> int:
    """Write the labels recorded since ``since`` to ``path`` and audit the export.

    Returns
    -------
    int
        Number of labelled lines written.
    """
    with Session(engine) as db, db.begin():
        frame = labels_frame(db, since)
        write_frame(frame, path)
        audit.record(db, origin, "labels_export", str(path)[-128:], {"since": since.isoformat(), "rows": len(frame)})
    return len(frame)
