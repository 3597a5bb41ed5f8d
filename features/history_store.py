"""The history store: what the system has seen of every manifest line, kept as incremental state.

One DuckDB database (``history.duckdb`` in the history folder) holds

- ``lines``: the history columns of each line's current version, one row per
  (declaration_id, line_no), so a line scored again is never counted twice;
- ``party_events``, ``flow_events``: the lines' :class:`~features.history.PastEvents` summed per
  key and day (lines, outcomes and misdeclarations per party and day, lines per flow and day);
- ``value_firsts``: the first day each party used each code or route (one row per party and
  value: a count per day would grow with the store, and the features only need the first use).

Scoring a batch reads only the events of the parties and flows the batch touches (flows only as far
back as the flow windows reach) and takes out the stored copies of the batch's own lines by their
events with weight -1. A first use is a minimum, which a copy identical to the line being scored
cannot change; where a stored copy differs from it (a corrected declaration), the first uses of its
parties are recomputed from their stored lines without it. Storing a batch adds its
events in one transaction; a line already stored is replaced by a new copy unless the stored copy
is labelled and the new one is not (a labelled copy supersedes an unlabelled one, whatever the
order), and the replaced copy's events are added with weight -1. Outcomes recorded later (triage)
are a labelled copy of the stored line.

Several processes (batch jobs, the API, triage) share one store: each operation opens the database,
does its work in a transaction and closes it; an operation that finds the database locked by
another process waits and retries for ``lock_timeout`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from features.history import (
    ENTITY_COLUMNS, EPOCH, FLOW_EVENT_COLUMNS, HISTORY_COLUMNS, PARTY_EVENT_COLUMNS, VALUE_EVENT_COLUMNS,
    PastEvents, day_numbers, flow_key, line_keys, relevant_past,
)

DEFAULT_HISTORY_DIR = "history"
DATABASE_NAME = "history.duckdb"
_NUMERIC = ("line_no", "inspected", "misdeclared")
_TEXT = [c for c in HISTORY_COLUMNS if c not in (*_NUMERIC, "declared_at")]
_SCHEMA = {
    "lines": ", ".join(f"{c} {'DOUBLE' if c in _NUMERIC else 'DATE' if c == 'declared_at' else 'VARCHAR'}"
                       for c in HISTORY_COLUMNS),
    "party_events": "entity VARCHAR, key VARCHAR, day INTEGER, lines BIGINT, outcomes BIGINT, positives BIGINT",
    "value_firsts": "entity VARCHAR, key VARCHAR, kind VARCHAR, value VARCHAR, day INTEGER, "
                    "PRIMARY KEY (entity, key, kind, value)",
    "flow_events": "flow VARCHAR, day INTEGER, lines BIGINT",
}
_EVENT_TABLES = {"parties": ("party_events", PARTY_EVENT_COLUMNS), "flows": ("flow_events", FLOW_EVENT_COLUMNS)}
_LABELS = ("inspected", "misdeclared")
_SUMMED = ("lines", "outcomes", "positives")


def resolve_history_dir(directory: str | Path | None = None) -> Path:
    """The argument, else ``MISDECLARE_HISTORY_DIR``, else ``./history``."""
    return Path(directory or os.environ.get("MISDECLARE_HISTORY_DIR") or DEFAULT_HISTORY_DIR)


def history_frame(lines: pd.DataFrame) -> pd.DataFrame:
    """The history columns of validated lines, typed as the store keeps them."""
    frame = lines.reindex(columns=list(HISTORY_COLUMNS))
    typed = {c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in _NUMERIC}
    typed["declared_at"] = pd.to_datetime(frame["declared_at"]).dt.normalize()
    typed.update({c: frame[c].astype("string") for c in _TEXT})
    return pd.DataFrame(typed, index=frame.index)[list(HISTORY_COLUMNS)].reset_index(drop=True)


def _is_labelled(frame: pd.DataFrame) -> np.ndarray:
    return ((frame["inspected"] == 1) & frame["misdeclared"].notna()).to_numpy(dtype=bool)


def winning_copies(lines: pd.DataFrame) -> pd.DataFrame:
    """One copy per (declaration_id, line_no): the last labelled one, else the last one."""
    order = pd.Series(_is_labelled(lines), index=lines.index).astype("int64")
    ranked = lines.assign(_labelled=order.to_numpy(), _position=np.arange(len(lines)))
    ranked = ranked.sort_values(["_labelled", "_position"], kind="stable")
    keys = pd.DataFrame({"d": ranked["declaration_id"].astype("string"), "n": ranked["line_no"]})
    kept = ranked[~keys.duplicated(keep="last").to_numpy()].sort_values("_position", kind="stable")
    return kept.drop(columns=["_labelled", "_position"]).reset_index(drop=True)


def summed(events: PastEvents) -> PastEvents:
    """Party and flow events summed per key and day (rows summing to zero dropped); values as
    first uses (one row per party and value, its first day)."""
    frames = {}
    for name, (_, columns) in _EVENT_TABLES.items():
        frame = getattr(events, name)
        weights = [c for c in columns if c in _SUMMED]
        keys = [c for c in columns if c not in _SUMMED]
        total = frame.groupby(keys, sort=False, observed=True)[weights].sum().reset_index()
        frames[name] = total[(total[weights] != 0).any(axis=1)].reindex(columns=list(columns))
    return PastEvents(frames["parties"], first_uses(events.values), frames["flows"], events.coverage_start)


def first_uses(values: pd.DataFrame) -> pd.DataFrame:
    """Value events reduced to the first day of each (entity, key, kind, value), weight 1."""
    firsts = (values[values["lines"] > 0].groupby(["entity", "key", "kind", "value"], sort=False, observed=True)
              ["day"].min().reset_index())
    return firsts.assign(lines=1).reindex(columns=list(VALUE_EVENT_COLUMNS))


class HistoryStore:
    """Lines and summed history events in ``directory/history.duckdb``.

    Parameters
    ----------
    directory : str or Path
        Folder of the database (created on first write).
    lock_timeout : float
        Seconds an operation waits for another process's lock before it fails.
    """

    def __init__(self, directory: str | Path, lock_timeout: float = 120.0):
        self.directory = Path(directory)
        self.lock_timeout = lock_timeout

    @property
    def path(self) -> Path:
        return self.directory / DATABASE_NAME

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A connection in a transaction (committed on success); None when reading a missing store."""
        if not write and not self.path.exists() and not any(self.directory.glob("part-*.parquet")):
            yield None
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                connection = duckdb.connect(str(self.path))
                break
            except duckdb.IOException as error:  # another process holds the database
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        try:
            connection.execute("BEGIN TRANSACTION")
            for table, columns in _SCHEMA.items():
                connection.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
            self._import_parquet_parts(connection)
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    def _import_parquet_parts(self, connection) -> None:
        """Stores written before the database (Parquet parts) are imported once, in write order.

        The parts are then moved to ``imported-parts/`` (kept, not deleted).
        """
        parts = sorted(self.directory.glob("part-*.parquet"))
        if not parts:
            return
        for part in parts:
            self._add(connection, pq.read_table(part).to_pandas())
        moved = self.directory / "imported-parts"
        moved.mkdir(exist_ok=True)
        for part in parts:
            part.rename(moved / part.name)

    def append(self, lines: pd.DataFrame) -> int:
        """Store lines (see the module docstring for which copy wins); returns lines added or changed."""
        if lines.empty:
            return 0
        with self._connect(write=True) as connection:
            return self._add(connection, lines)

    def _add(self, connection, lines: pd.DataFrame) -> int:
        batch = winning_copies(history_frame(lines))
        connection.register("batch_lines", batch)
        stored = connection.execute(
            "SELECT s.* FROM lines s JOIN batch_lines b USING (declaration_id, line_no)").df()
        connection.unregister("batch_lines")
        stored = history_frame(stored) if len(stored) else stored
        added, removed = self._changes(batch, stored)
        if added.empty:
            return 0
        delta = summed(PastEvents.concat(PastEvents.from_lines(added, ENTITY_COLUMNS),
                                         PastEvents.from_lines(removed, ENTITY_COLUMNS, weight=-1)))
        for name, (table, columns) in _EVENT_TABLES.items():
            self._insert(connection, table, getattr(delta, name), columns)
        if len(removed):
            connection.register("removed", removed[["declaration_id", "line_no"]])
            connection.execute("DELETE FROM lines USING removed WHERE lines.declaration_id = removed.declaration_id "
                               "AND lines.line_no = removed.line_no")
            connection.unregister("removed")
        connection.register("added", added)
        connection.execute(f"INSERT INTO lines SELECT {', '.join(HISTORY_COLUMNS)} FROM added")
        connection.unregister("added")
        self._upsert_first_uses(connection, delta.values)
        changed = removed[~_same_but_labels(removed, added)] if len(removed) else removed
        if len(changed):  # a corrected copy: its old first uses may be gone
            exact = self._first_uses_without(connection, changed, changed.iloc[0:0])
            keys = _party_keys(changed)
            connection.register("stale", keys)
            connection.execute("DELETE FROM value_firsts USING stale WHERE value_firsts.entity = stale.entity "
                               "AND value_firsts.key = stale.key")
            connection.unregister("stale")
            self._upsert_first_uses(connection, exact)
        return len(added)

    @staticmethod
    def _insert(connection, table: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
        if len(frame):
            connection.register("delta", frame)
            connection.execute(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM delta")
            connection.unregister("delta")

    @staticmethod
    def _upsert_first_uses(connection, values: pd.DataFrame) -> None:
        if len(values):
            connection.register("firsts", values)
            connection.execute("INSERT INTO value_firsts SELECT entity, key, kind, value, day FROM firsts "
                               "ON CONFLICT DO UPDATE SET day = least(value_firsts.day, excluded.day)")
            connection.unregister("firsts")

    def _first_uses_without(self, connection, parties_of: pd.DataFrame, without: pd.DataFrame) -> pd.DataFrame:
        """Exact first uses of the parties of ``parties_of``, from their stored lines minus ``without``."""
        keys = _party_keys(parties_of)
        connection.register("party_keys", keys)
        connection.register("without", without[["declaration_id", "line_no"]])
        condition = " OR ".join(f"(k.entity = '{e}' AND k.key = l.{e})" for e in ENTITY_COLUMNS)
        lines = connection.execute(
            f"SELECT DISTINCT l.* FROM lines l JOIN party_keys k ON {condition} "
            "ANTI JOIN without w ON l.declaration_id = w.declaration_id AND l.line_no = w.line_no").df()
        connection.unregister("party_keys")
        connection.unregister("without")
        values = PastEvents.from_lines(history_frame(lines), ENTITY_COLUMNS).values if len(lines) else \
            PastEvents.empty().values
        wanted = values.merge(keys, on=["entity", "key"])
        return first_uses(wanted)

    @staticmethod
    def _changes(batch: pd.DataFrame, stored: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(copies to add, stored copies they replace): new lines, and changed copies that win."""
        if stored.empty:
            return batch, stored
        stored = stored.set_index(line_keys(stored))
        keys = line_keys(batch)
        in_store = keys.isin(stored.index)
        old = stored.reindex(keys[in_store])
        new = batch[in_store]
        loses = _is_labelled(old) & ~_is_labelled(new)
        same = (old.reset_index(drop=True).astype("string").fillna("\0")
                == new.reset_index(drop=True).astype("string").fillna("\0")).all(axis=1).to_numpy()
        replace = ~loses & ~same
        added = pd.concat([batch[~in_store], new[replace]], ignore_index=True)
        return added, old[replace].reset_index(drop=True)

    def record_outcomes(self, outcomes: pd.DataFrame) -> int:
        """Inspection outcomes of stored lines (``declaration_id, line_no, misdeclared``).

        Each becomes a labelled copy of its stored line (``inspected`` = 1), which supersedes any
        unlabelled copy scored before or after. Returns the lines updated; outcomes of lines the
        store does not hold are not stored (there is nothing to attach them to).
        """
        if outcomes.empty:
            return 0
        wanted = pd.DataFrame({"declaration_id": outcomes["declaration_id"].astype("string"),
                               "line_no": pd.to_numeric(outcomes["line_no"], errors="coerce").astype("float64"),
                               "found": pd.to_numeric(outcomes["misdeclared"], errors="coerce").astype("float64")})
        with self._connect(write=True) as connection:
            connection.register("wanted", wanted)
            copies = connection.execute("SELECT s.* EXCLUDE (inspected, misdeclared), 1.0 AS inspected, "
                                        "w.found AS misdeclared FROM lines s JOIN wanted w "
                                        "USING (declaration_id, line_no)").df()
            connection.unregister("wanted")
            return self._add(connection, copies.reindex(columns=list(HISTORY_COLUMNS))) if len(copies) else 0

    def read(self) -> pd.DataFrame:
        """Every stored line (its current version), by date; an empty frame if none."""
        with self._connect() as connection:
            if connection is None:
                return history_frame(pd.DataFrame(columns=list(HISTORY_COLUMNS)))
            frame = connection.execute("SELECT * FROM lines ORDER BY declared_at, declaration_id, line_no").df()
        return history_frame(frame)

    def __len__(self) -> int:
        with self._connect() as connection:
            return 0 if connection is None else int(connection.execute("SELECT count(*) FROM lines").fetchall()[0][0])

    def events_for(self, lines: pd.DataFrame, entities: tuple[str, ...] = ENTITY_COLUMNS,
                   flow_days: int | None = None, exclude: pd.DataFrame | None = None) -> PastEvents:
        """Stored events of the parties and flows of ``lines``, without the stored copies of ``exclude``.

        Parameters
        ----------
        lines : DataFrame
            The lines about to be scored.
        entities : tuple of str
            Party columns the history features read (columns the store does not keep have no events).
        flow_days : int, optional
            How many days before a line the flow windows reach (all days when None).
        exclude : DataFrame, optional
            Lines whose stored copies must not count (default: ``lines``, which are being scored).
        """
        exclude = lines if exclude is None else exclude
        with self._connect() as connection:
            if connection is None or lines.empty:
                return PastEvents.empty()
            start = connection.execute("SELECT min(declared_at) FROM lines").fetchall()[0][0]
            if start is None:
                return PastEvents.empty()
            keys = _party_keys(lines.reindex(columns=list(ENTITY_COLUMNS)))
            keys = keys[keys["entity"].isin(entities)]
            days = day_numbers(lines)
            flows = pd.DataFrame({"flow": flow_key(lines).unique()})
            connection.register("query_keys", keys)
            connection.register("query_flows", flows)
            connection.register("excluded", history_frame(exclude)[["declaration_id", "line_no"]])
            parties = connection.execute(
                "SELECT entity, key, day, sum(lines) AS lines, sum(outcomes) AS outcomes, "
                "sum(positives) AS positives FROM party_events JOIN query_keys USING (entity, key) "
                "GROUP BY ALL").df()
            values = connection.execute(
                "SELECT entity, key, kind, value, day, 1 AS lines FROM value_firsts "
                "JOIN query_keys USING (entity, key)").df()
            since = int(days.min()) - flow_days if flow_days is not None else np.iinfo("int32").min
            flow_rows = connection.execute(
                "SELECT flow, day, sum(lines) AS lines FROM flow_events JOIN query_flows USING (flow) "
                "WHERE day >= ? AND day < ? GROUP BY ALL", [since, int(days.max())]).df()
            copies = connection.execute(
                "SELECT s.* FROM lines s JOIN excluded USING (declaration_id, line_no)").df()
            copies = history_frame(copies) if len(copies) else copies
            changed = copies[~_same_but_labels(copies, history_frame(exclude))] if len(copies) else copies
            exact = self._first_uses_without(connection, changed, copies) if len(changed) else None
        values = _frame(values, VALUE_EVENT_COLUMNS)
        if exact is not None:  # parties of corrected copies: first uses without the stored copies
            stale = _party_keys(changed)
            keep = ~pd.MultiIndex.from_frame(values[["entity", "key"]].astype("string")).isin(
                pd.MultiIndex.from_frame(stale))
            values = pd.concat([values[keep], _frame(exact, VALUE_EVENT_COLUMNS)], ignore_index=True)
        stored = PastEvents(_frame(parties, PARTY_EVENT_COLUMNS), values,
                            _frame(flow_rows, FLOW_EVENT_COLUMNS), (pd.Timestamp(start) - EPOCH).days)
        if copies.empty:
            return stored
        taken_out = PastEvents.from_lines(copies, ENTITY_COLUMNS, weight=-1)
        return PastEvents.concat(stored, replace(taken_out, values=PastEvents.empty().values))


def _party_keys(lines: pd.DataFrame) -> pd.DataFrame:
    """(entity, key) of every party of ``lines``, as text."""
    frames = [pd.DataFrame({"entity": e, "key": lines[e].dropna().astype("string").unique()}) for e in ENTITY_COLUMNS]
    return pd.concat(frames, ignore_index=True).astype({"entity": "string", "key": "string"})


def _same_but_labels(stored: pd.DataFrame, current: pd.DataFrame) -> np.ndarray:
    """Per stored copy: does the line with its key in ``current`` match it except for the labels?"""
    columns = [c for c in HISTORY_COLUMNS if c not in _LABELS]
    mine = stored[columns].set_axis(line_keys(stored))
    theirs = current[columns].set_axis(line_keys(current))
    theirs = theirs[~theirs.index.duplicated(keep="last")].reindex(mine.index)
    return (_as_text(mine) == _as_text(theirs)).all(axis=1).to_numpy()


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells as text, missing as a sentinel, so that two frames compare cell by cell."""
    return frame.astype("string").fillna("\0").reset_index(drop=True)


def _frame(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    integers = [c for c in columns if c in ("day", *_SUMMED)]
    return frame.reindex(columns=list(columns)).astype(
        {c: "int64" for c in integers} | {c: "category" if c in ("entity", "kind") else "string"
                                           for c in columns if c not in integers})


class StoreAndFile:
    """History of a file being scored in parts: the store, then the file's other lines.

    Lines of the file are history for each other whatever part they are in, and the store's copies
    of any of them (a file scored again) do not count.

    Parameters
    ----------
    store : HistoryStore or None
    file_lines : DataFrame
        History columns of every valid line of the file.
    """

    def __init__(self, store: HistoryStore | None, file_lines: pd.DataFrame):
        self.store = store
        self.file_lines = file_lines

    def events_for(self, lines: pd.DataFrame, entities: tuple[str, ...] = ENTITY_COLUMNS,
                   flow_days: int | None = None) -> PastEvents:
        others = self.file_lines[~line_keys(self.file_lines).isin(line_keys(lines))]
        events = PastEvents.from_lines(relevant_past(others, lines, entities), entities)
        starts = [int(day_numbers(self.file_lines).min())] if len(self.file_lines) else []
        if self.store is not None:
            stored = self.store.events_for(lines, entities, flow_days, exclude=self.file_lines)
            events = PastEvents.concat(stored, events)
            starts += [stored.coverage_start] if stored.coverage_start is not None else []
        return PastEvents(events.parties, events.values, events.flows, min(starts) if starts else None)
