"""Export recorded outcomes as labelled manifest lines in the canonical schema, for retraining.

Only inspections count as labels: ``confirmed`` gives inspected=1, misdeclared=1 and the
commodity found; ``clean`` gives inspected=1, misdeclared=0, found_commodity=none. Lines that
could not be inspected carry no label and are left out. The outcome in force (the latest event)
is exported. Two extra columns, ``selection_probability`` and ``selected_by``, let training weight
each line by the inverse of the probability it had of being inspected.

The same labelled lines reach the history store (:func:`outcomes_to_store`), so that the history
features of batch scoring and ``POST /score`` count them.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from datetime import UTC, date, datetime, time
from pathlib import Path
from time import monotonic, sleep

import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from features.history_store import HistoryStore
from features.schema import CANONICAL_COLUMNS, SELECTION_COLUMNS, neutralise_frame
from serve.triage import audit
from serve.triage.db import Case, Outcome

EXTRA_COLUMNS = SELECTION_COLUMNS
LABELLED_RESULTS = ("confirmed", "clean")
_DECLARED = tuple(c for c in CANONICAL_COLUMNS if c not in ("inspected", "misdeclared", "found_commodity"))


def _labelled_lines(db: Session, *conditions) -> pd.DataFrame:
    """The labelled lines of the cases whose outcome in force meets ``conditions``.

    Returns
    -------
    DataFrame
        Canonical columns (in canonical order) plus ``selection_probability`` and ``selected_by``,
        ordered by declaration_id and line_no.
    """
    columns = [getattr(Case, name) for name in _DECLARED + EXTRA_COLUMNS]
    rows = db.execute(
        select(*columns, Outcome.result, Outcome.found_commodity)
        .join(Outcome, Outcome.id == Case.current_outcome_id)
        .where(Outcome.result.in_(LABELLED_RESULTS), *conditions)
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


def labels_frame(db: Session, since: date) -> pd.DataFrame:
    """Return the labelled lines whose outcome in force was recorded on or after ``since`` (UTC).

    Returns
    -------
    DataFrame
        Canonical columns (in canonical order) plus ``selection_probability`` and ``selected_by``,
        ordered by declaration_id and line_no.
    """
    return _labelled_lines(db, Outcome.recorded_at >= datetime.combine(since, time(), UTC))


def outcomes_to_store(db: Session, store: HistoryStore, case_ids: list[int] | None = None) -> int:
    """Append the labelled lines of the cases ``case_ids`` (every case when None) to the history store.

    The lines are those :func:`labels_frame` exports: a case whose outcome in force is ``confirmed``
    or ``clean`` becomes a labelled copy of its line, which supersedes the store's unlabelled copy;
    ``not_inspected`` is no label and adds nothing. Appending a copy the store already holds changes
    nothing, so calling this again (at every start-up, for every case) is harmless.

    Callers push a case once its outcome is written to the triage database: the pages after their
    transaction commits, the API before the request's transaction commits (a failing store write
    then fails the request, which rolls the outcome back). A store write that fails after the
    outcome is committed is reconciled at the next start-up of the service, which calls this for
    every case. The store only gains labels: a correction to ``not_inspected`` does not take back
    a label the store already holds, nor does an API request whose commit fails after the store
    write.

    Parameters
    ----------
    db : Session
        Session on the triage database (it sees the outcomes to push).
    store : HistoryStore
        The history store batch scoring and ``POST /score`` read.
    case_ids : list of int, optional
        Cases whose outcome to push; every case when None.

    Returns
    -------
    int
        Lines the store added or changed.
    """
    if case_ids is not None and not case_ids:
        return 0
    conditions = () if case_ids is None else (Case.id.in_(case_ids),)
    return store.append(_labelled_lines(db, *conditions))


class OutcomePusher:
    """Push recorded outcomes to the history store after their answer is sent, several at a time.

    A store write has a fixed cost (open the store, look the lines up, write, close: about 0.3 s of
    CPU for six lines on the demo's store, hardly more for fifty). Under load the outcomes recorded while one push runs wait
    in a set and go together in the next push, made by the thread that ran the previous one; the
    others return at once. A push starts at least ``min_interval`` seconds after the previous one
    started (the pushing thread waits, gathering the outcomes recorded meanwhile): fifty inspectors
    deciding a case every few seconds cost a write per interval, not one per outcome. An outcome
    counts in the features from the day after it is known, so seconds of delay change no score.
    Outcomes left pending by a push that fails go with the next push, and in any case at the next
    start-up (:func:`outcomes_to_store` for every case).

    Parameters
    ----------
    engine : Engine
        The triage database (the pushes read the committed outcomes from it).
    store : HistoryStore
        Where the labelled lines go: the store itself, or anything with its ``append`` (the scoring
        workers' writer, :class:`serve.triage.scoring_pool.WorkerStore`).
    min_interval : float
        Seconds between the starts of two pushes (``Settings.outcome_push_seconds``; 0: push at once).
    """

    def __init__(self, engine: Engine, store: HistoryStore, min_interval: float = 0.0):
        if min_interval < 0:
            raise ValueError(f"min_interval must be >= 0 seconds, got {min_interval}")
        self.engine = engine
        self.store = store
        self.min_interval = min_interval
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        self._pushing = False
        self._last_start = -math.inf  # monotonic() when the last push started

    def push(self, case_id: int) -> int:
        """Push ``case_id``'s outcome (with any pending ones), or leave it to the push running now.

        Returns
        -------
        int
            Lines the store added or changed in the pushes this call made (0 when it left them).
        """
        with self._lock:
            self._pending.add(case_id)
            if self._pushing:
                return 0
            self._pushing = True
        changed = 0
        try:
            while True:
                sleep(max(0.0, self._last_start + self.min_interval - monotonic()))
                with self._lock:
                    self._last_start = monotonic()
                    batch = sorted(self._pending)
                    self._pending.clear()
                    if not batch:
                        self._pushing = False
                        return changed
                try:
                    with Session(self.engine) as db:
                        changed += outcomes_to_store(db, self.store, batch)
                except BaseException:
                    with self._lock:
                        self._pending.update(batch)
                    raise
        except BaseException:
            with self._lock:
                self._pushing = False
            raise


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
        if suffix == ".csv":  # for people too: formula-like text neutralised, read back unchanged
            neutralise_frame(frame).to_csv(temporary, index=False, date_format="%Y-%m-%d")
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
