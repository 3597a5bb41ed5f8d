"""The history store: what the system has seen of every manifest line, kept as incremental state.

One DuckDB database (``history.duckdb`` in the history folder) holds

- ``lines``: the history columns of each line's current version, one row per
  (declaration_id, line_no), so a line scored again is never counted twice;
- ``party_events``, ``flow_events``: the lines' :class:`~features.history.PastEvents` summed per
  key and day (lines, outcomes and misdeclarations per party and day, lines per flow and day);
- ``value_firsts``: the first day each party used each code or route (one row per party and
  value: a count per day would grow with the store, and the features only need the first use);
- a **checkpoint** day: events of earlier days move to ``party_events_old`` and ``flow_events_old``
  and, per party, into one row of totals (``party_totals_old``: first day, lines, outcomes,
  misdeclarations). It trails the latest stored day by ``recent_days`` to ``2 * recent_days``.

A batch whose lines are all dated at least the label delay after the checkpoint (the daily case)
reads the totals and the recent events only, so its cost follows the batch and the recent period,
not the years of history; the totals stand for the old events exactly for such lines (every old
line is before them, every old outcome known). Other batches (backfills) read the old events too.

Scoring a batch reads only the events of the parties and flows the batch touches (flows only as far
back as the flow windows reach) and takes out the stored copies of the batch's own lines by their
events with weight -1. A first use is a minimum, which a copy identical to the line being scored
cannot change; where a stored copy differs from it (a corrected declaration), the first uses of its
parties are recomputed from their stored lines without it. Storing a batch adds its
events in one transaction; a line already stored is replaced by a new copy unless the stored copy
is labelled and the new one is not (a labelled copy supersedes an unlabelled one, whatever the
order), and the replaced copy's events are added with weight -1. Outcomes recorded later (triage)
are appended as labelled copies of their lines.

Several processes (batch jobs, the API, triage) share one store: each operation attaches the
database, does its work in a transaction and detaches it (which releases DuckDB's file lock); an
operation that finds the database locked by another process waits and retries for ``lock_timeout``
seconds. Reads attach it read-only, which several processes may do at once; a write waits until no
other process has it attached, and the others wait while it writes. Within a process, operations
on one database take turns (the API serves requests from a thread pool). The database is attached
to one in-memory DuckDB instance per process (:class:`_Engine`): creating an instance costs about
20 ms of CPU (DuckDB registers its built-in functions), attaching a file about 2 ms, and a scoring
request of the API opens the store twice.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.history import (
    ENTITY_COLUMNS,
    EPOCH,
    FLOW_EVENT_COLUMNS,
    HISTORY_COLUMNS,
    PARTY_EVENT_COLUMNS,
    VALUE_EVENT_COLUMNS,
    PastEvents,
    as_category,
    concat_events,
    day_numbers,
    flow_key,
    line_keys,
)

DEFAULT_HISTORY_DIR = "history"
DATABASE_NAME = "history.duckdb"
KEY_FILTER_NAME = "line-keys-v2.bloom.npz"  # v2: lines carry key_hash (stores without it are upgraded)
_NUMERIC = ("line_no", "inspected", "misdeclared")
_TEXT = [c for c in HISTORY_COLUMNS if c not in (*_NUMERIC, "declared_at")]
_SCHEMA = {
    "lines": ", ".join(
        f"{c} {'DOUBLE' if c in _NUMERIC else 'DATE' if c == 'declared_at' else 'VARCHAR'}" for c in HISTORY_COLUMNS
    )
    + ", key_hash BIGINT",
    "party_events": "entity VARCHAR, key VARCHAR, day INTEGER, lines BIGINT, outcomes BIGINT, positives BIGINT",
    "value_firsts": "entity VARCHAR, key VARCHAR, kind VARCHAR, value VARCHAR, day INTEGER, "
    "PRIMARY KEY (entity, key, kind, value)",
    "flow_events": "flow VARCHAR, day INTEGER, lines BIGINT",
    "party_events_old": "entity VARCHAR, key VARCHAR, day INTEGER, lines BIGINT, outcomes BIGINT, positives BIGINT",
    "flow_events_old": "flow VARCHAR, day INTEGER, lines BIGINT",
    "party_totals_old": "entity VARCHAR, key VARCHAR, first_day INTEGER, lines BIGINT, outcomes BIGINT, "
    "positives BIGINT, PRIMARY KEY (entity, key)",
    "checkpoint": "day INTEGER",
}
_EVENT_TABLES = {"parties": ("party_events", PARTY_EVENT_COLUMNS), "flows": ("flow_events", FLOW_EVENT_COLUMNS)}
_LABELS = ("inspected", "misdeclared")
# How often a process waiting for another's lock on the database tries again: writes by the API's
# scoring workers hold it for about a tenth of a second, so a coarser wait would double their latency.
LOCK_RETRY_SECONDS = 0.02
# DuckDB's own memory (buffer pool, joins, sorts) per database: by default it may take 80 % of the
# machine, and a process's resident memory keeps what it took. Beyond this it spills to disk.
DUCKDB_MEMORY_LIMIT = "512MB"
# Party events moved to the old tables per transaction when the checkpoint advances: DuckDB holds a
# transaction's changes in its memory (DUCKDB_MEMORY_LIMIT): the 3M of a year of a 6M-line store,
# moved in one transaction with the lines that set it off, ran out of it.
CHECKPOINT_SLICE_ROWS = 1_000_000
_SUMMED = ("lines", "outcomes", "positives")
# A file's own store never folds events into totals: it is read event by event.
_NEVER_FOLDED = 1 << 30


def resolve_history_dir(directory: str | Path | None = None) -> Path:
    """The argument, else ``MISDECLARE_HISTORY_DIR``, else ``./history``."""
    return Path(directory or os.environ.get("MISDECLARE_HISTORY_DIR") or DEFAULT_HISTORY_DIR)


def history_frame(lines: pd.DataFrame, columns: tuple[str, ...] = HISTORY_COLUMNS) -> pd.DataFrame:
    """The history columns of validated lines (or only ``columns`` of them), typed as the store keeps them."""
    frame = lines.reindex(columns=list(columns))
    numeric = [c for c in _NUMERIC if c in columns]
    typed: dict[str, pd.Series] = {c: pd.to_numeric(frame[c], errors="coerce").astype("float64") for c in numeric}
    if "declared_at" in columns:
        typed["declared_at"] = pd.to_datetime(frame["declared_at"]).dt.normalize()
    typed.update({c: frame[c].astype("string") for c in _TEXT if c in columns})
    return pd.DataFrame(typed, index=frame.index)[list(columns)].reset_index(drop=True)


def no_lines() -> pd.DataFrame:
    """An empty frame of the history columns, typed as :func:`history_frame` types them."""
    return _typed_empty_lines().copy()


@functools.cache
def _typed_empty_lines() -> pd.DataFrame:
    # Built once per process: typing even an empty frame costs milliseconds, paid by every store
    # read that finds nothing. Callers get a copy (no_lines), never this frame.
    return history_frame(pd.DataFrame(columns=list(HISTORY_COLUMNS)))


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
        groups = _groups(frame, keys)
        if groups is None:  # too many distinct keys to number them in one integer: pandas' way
            total = frame.groupby(keys, sort=False, observed=True)[weights].sum().reset_index()
            frames[name] = total[(total[weights] != 0).any(axis=1)].reindex(columns=list(columns))
            continue
        group, first_rows = groups
        sums = {c: _group_sums(group, frame[c].to_numpy("int64"), len(first_rows)) for c in weights}
        nonzero = np.any([sums[c] != 0 for c in weights], axis=0)
        kept = first_rows[nonzero]
        frames[name] = pd.DataFrame(
            {c: sums[c][nonzero] if c in sums else frame[c].array.take(kept) for c in columns}, index=np.flatnonzero(nonzero)
        )
    return PastEvents(frames["parties"], first_uses(events.values), frames["flows"], events.coverage_start)


def first_uses(values: pd.DataFrame) -> pd.DataFrame:
    """Value events reduced to the first day of each (entity, key, kind, value), weight 1."""
    used = values[values["lines"] > 0]
    keys = ["entity", "key", "kind", "value"]
    groups = _groups(used, keys)
    if groups is None:  # too many distinct keys to number them in one integer: pandas' way
        firsts = used.groupby(keys, sort=False, observed=True)["day"].min().reset_index()
        return firsts.assign(lines=1).reindex(columns=list(VALUE_EVENT_COLUMNS))
    group, first_rows = groups
    day = np.full(len(first_rows), np.iinfo("int64").max)
    np.minimum.at(day, group[group >= 0], used["day"].to_numpy("int64")[group >= 0])
    columns = {c: used[c].array.take(first_rows) for c in keys} | {"day": day, "lines": np.ones(len(first_rows), dtype="int64")}
    return pd.DataFrame({c: columns[c] for c in VALUE_EVENT_COLUMNS})


def _groups(frame: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """Each row's group by its values of ``keys``, numbered in order of first appearance (-1 when a
    key is missing, as a group-by drops it), and the first row of each group.

    What ``frame.groupby(keys, sort=False, observed=True)`` finds, in numpy: for the small frames
    of a request its fixed cost was most of a store write. None when the keys' distinct values are
    too many to number a combination in one int64.
    """
    combined = np.zeros(len(frame), dtype="int64")
    missing = np.zeros(len(frame), dtype=bool)
    radix = 1
    for key in keys:
        column = frame[key]
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes, size = column.cat.codes.to_numpy("int64"), len(column.cat.categories)
        else:
            codes = pd.factorize(column)[0].astype("int64")
            size = int(codes.max(initial=-1)) + 1
        radix *= max(size, 1)
        if radix >= 1 << 62:
            return None
        missing |= codes < 0
        combined = combined * max(size, 1) + np.maximum(codes, 0)
    _, first, inverse = np.unique(combined[~missing], return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype="int64")
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    group = np.full(len(frame), -1, dtype="int64")
    group[~missing] = rank[inverse.ravel()]
    rows = np.flatnonzero(~missing)
    return group, rows[np.sort(first)]


def _group_sums(group: np.ndarray, weights: np.ndarray, groups: int) -> np.ndarray:
    """Sums of integer ``weights`` per group (rows of group -1 left out), exactly in int64."""
    sums = np.zeros(groups, dtype="int64")
    np.add.at(sums, group[group >= 0], weights[group >= 0])
    return sums


# Party totals from per-day events: each (party, day) is netted first, so that a day whose lines
# were all taken out is not a first day.
_TOTALS_UPSERT = """
    INSERT INTO party_totals_old
    SELECT entity, key, min(day) FILTER (WHERE lines > 0), sum(lines), sum(outcomes), sum(positives)
    FROM (SELECT entity, key, day, sum(lines) AS lines, sum(outcomes) AS outcomes, sum(positives) AS positives
          FROM {source} {where} GROUP BY entity, key, day)
    GROUP BY entity, key
    ON CONFLICT DO UPDATE SET
        first_day = least(party_totals_old.first_day, coalesce(excluded.first_day, party_totals_old.first_day)),
        lines = party_totals_old.lines + excluded.lines,
        outcomes = party_totals_old.outcomes + excluded.outcomes,
        positives = party_totals_old.positives + excluded.positives
"""


def _slice_ends(connection: duckdb.DuckDBPyConnection, target: int, rows: int) -> list[int]:
    """Days ending the slices in which the recent events before ``target`` move to the old tables:
    whole days, at most ``rows`` party events a slice (more only for a single day that holds more)."""
    ends, held = [], 0
    for day, count in connection.execute(
        "SELECT day, count(*) FROM party_events WHERE day < ? GROUP BY day ORDER BY day", [target]
    ).fetchall():
        if held and held + count > rows:
            ends.append(int(day))
            held = 0
        held += count
    return [*ends, target]


def _checkpoint(connection: duckdb.DuckDBPyConnection) -> int | None:
    """Day before which events live in the old tables (None: no checkpoint yet)."""
    rows = connection.execute("SELECT max(day) FROM checkpoint").fetchall()
    return None if rows[0][0] is None else int(rows[0][0])


def key_hashes(keys: pd.DataFrame) -> np.ndarray:
    """Signed 64-bit hashes of (declaration_id, line_no) as the store types them (``key_hash``)."""
    hashes: np.ndarray = KeyFilter.hashes_of(keys).view("int64")
    return hashes


class KeyFilter:
    """A Bloom filter of the stored line keys: says for sure which lines the store does not hold.

    Looking a batch's keys up in the ``lines`` table scans every stored key (1.7 s for 50M lines);
    a new batch, the daily case, holds none of them, and the filter says so from a few bits per key.
    It is written (atomically) before the transaction that adds the keys commits, so it always
    holds at least the committed keys: a crash in between only leaves false positives, which a
    lookup resolves. A missing or unreadable filter is rebuilt from the table.

    Parameters
    ----------
    path : Path
        The filter's file (``.npz``: packed bits, hash count, keys added).
    bits_per_key, hashes : int
        About 1 % false positives with 10 and 7.
    rebuild_rows : int
        Most stored keys read at a time when the filter is rebuilt from the table (memory of a rebuild).
    """

    def __init__(self, path: Path, bits_per_key: int = 10, hashes: int = 7, rebuild_rows: int = 500_000):
        self.path = path
        self.bits_per_key = bits_per_key
        self.hashes = hashes
        if rebuild_rows < 1:
            raise ValueError(f"rebuild_rows must be >= 1, got {rebuild_rows}")
        self.rebuild_rows = rebuild_rows
        # (file identity, bits, keys): a file is replaced, never rewritten, so a new identity is a new filter
        self._loaded: tuple[tuple[int, int, int], np.ndarray, int] | None = None

    def __getstate__(self) -> dict[str, object]:
        # A copy sent to a worker process reads the filter itself (it may be large).
        return {**self.__dict__, "_loaded": None}

    @staticmethod
    def hashes_of(keys: pd.DataFrame) -> np.ndarray:
        """64-bit hashes of (declaration_id, line_no) as the store types them."""
        frame = pd.DataFrame(
            {
                "declaration_id": keys["declaration_id"].astype("string"),
                "line_no": pd.to_numeric(keys["line_no"], errors="coerce").astype("float64"),
            }
        )
        return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype="uint64")

    def _positions(self, hashes: np.ndarray, size: int) -> np.ndarray:
        low, high = hashes & np.uint64(0xFFFFFFFF), hashes >> np.uint64(32)
        steps = np.arange(self.hashes, dtype="uint64")[:, None]
        positions: np.ndarray = ((low[None, :] + steps * high[None, :]) % np.uint64(size)).astype("int64")
        return positions

    def load(self, connection: duckdb.DuckDBPyConnection) -> tuple[np.ndarray, int]:
        """(bits, keys added); read once per version of the file (every part of a batch reads it);
        rebuilt from the ``lines`` table when missing or unreadable."""
        try:
            status = os.stat(self.path)
            identity = (status.st_ino, status.st_mtime_ns, status.st_size)
            if self._loaded is not None and self._loaded[0] == identity:
                return self._loaded[1], self._loaded[2]
            with np.load(self.path) as saved:
                if int(saved["hashes"]) == self.hashes:
                    self._loaded = (identity, saved["bits"], int(saved["keys"]))
                    return self._loaded[1], self._loaded[2]
        except (OSError, ValueError, KeyError):
            pass
        return self._rebuilt(connection)

    def _rebuilt(self, connection: duckdb.DuckDBPyConnection, more: int = 0) -> tuple[np.ndarray, int]:
        """(bits, stored keys): a filter sized for the stored keys and ``more``, holding the stored ones.

        The stored keys are read at most ``rebuild_rows`` at a time (DuckDB hands them over in
        batches of about 100k). All at once, the keys of a 6M-line store as pandas text and their
        ``hashes`` x keys bit positions took the batch command from 1.0 to 2.5 GiB for the seconds
        of the rebuild (10M lines, 2026-12-08); in slices the same bits are set (an OR does not
        depend on order).
        """
        stored = int(connection.execute("SELECT count(*) FROM lines").fetchall()[0][0])
        bits = self._empty(stored + more)
        reader = connection.sql("SELECT declaration_id, line_no FROM lines").to_arrow_reader(self.rebuild_rows)
        for batch in reader:
            bits = self._set(bits, self.hashes_of(batch.to_pandas()))
        return bits, stored

    def ensure(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Write the filter rebuilt from the table when it is missing (under the store's write lock)."""
        if not self.path.exists():
            bits, count = self.load(connection)
            self.save(bits, count)

    def save(self, bits: np.ndarray, count: int) -> None:
        """Replace the filter's file atomically."""
        temporary = self.path.with_name(f".{self.path.name}.partial.npz")
        np.savez(temporary, bits=bits, hashes=np.int64(self.hashes), keys=np.int64(count))
        os.replace(temporary, self.path)

    def may_hold(self, bits: np.ndarray, keys: pd.DataFrame) -> np.ndarray:
        """Per key: False when the store surely does not hold it."""
        if len(keys) == 0:
            return np.zeros(0, dtype=bool)
        positions = self._positions(self.hashes_of(keys), 8 * len(bits))
        held: np.ndarray = ((bits[positions >> 3] >> (7 - (positions & 7))) & 1).astype(bool).all(axis=0)
        return held

    def _set(self, bits: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Set the bits of ``hashes`` in ``bits`` (packed, eight to a byte, first bit highest)."""
        positions = self._positions(hashes, 8 * len(bits)).ravel()
        np.bitwise_or.at(bits, positions >> 3, (1 << (7 - (positions & 7))).astype("uint8"))
        return bits

    def _empty(self, keys: int) -> np.ndarray:
        """Packed bits for ``keys`` keys and as many more (the filter is rebuilt past that)."""
        return np.zeros(max(1024, self.bits_per_key * 2 * keys // 8 + 1), dtype="uint8")

    def add(self, connection: duckdb.DuckDBPyConnection, bits: np.ndarray, count: int, keys: pd.DataFrame) -> None:
        """Add keys and save; past twice its capacity the filter is rebuilt larger from the table."""
        count += len(keys)
        if count * self.bits_per_key > 8 * len(bits):
            bits, _ = self._rebuilt(connection, more=len(keys))
        bits = self._set(bits, self.hashes_of(keys))
        self.save(bits, count)


class HistoryStore:
    """Lines and summed history events in ``directory/history.duckdb``.

    Parameters
    ----------
    directory : str or Path
        Folder of the database (created on first write).
    lock_timeout : float
        Seconds an operation waits for another process's lock before it fails.
    recent_days : int
        Days of events kept per day after the checkpoint (see the module docstring).
    unique_first_uses : bool
        Keep one first use per party and value (a primary key, upserted). Without it each batch
        appends its own first uses, which the features reduce to the earliest: for a store written
        once and read soon (:class:`FileHistory`), whose key index would grow with the file and be
        loaded by every write.
    new_keys_only : bool
        Every line appended is new to the store (a file's own store: keys are unique within a
        file), so no stored copy is looked for and no key filter is kept (rebuilding it read every
        stored key at each doubling: half a GiB at 6M lines).
    threads : int, optional
        DuckDB threads for this store's operations (``SET threads``: the setting of the process's
        one DuckDB instance, so for a process that uses one store, such as an API scoring worker,
        where one thread spends ~8 % less CPU on a 100-line request than two). None leaves
        DuckDB's default (one per core).
    """

    def __init__(
        self,
        directory: str | Path,
        lock_timeout: float = 120.0,
        recent_days: int = 365,
        unique_first_uses: bool = True,
        new_keys_only: bool = False,
        threads: int | None = None,
    ):
        if recent_days < 1:
            raise ValueError(f"recent_days must be >= 1, got {recent_days}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        self.directory = Path(directory)
        self.lock_timeout = lock_timeout
        self.recent_days = recent_days
        self.unique_first_uses = unique_first_uses
        self.new_keys_only = new_keys_only
        self.threads = threads
        self.key_filter = KeyFilter(self.directory / KEY_FILTER_NAME)
        self.read_only = False
        self._prepared: tuple[int, int] | None = None  # the database file the last write prepared

    def reader(self) -> HistoryStore:
        """The same store for a process that only reads it: any write, even the one-time upgrade of
        an old store (Parquet parts, a lost key filter), raises instead of taking the write lock.

        Every store reads with the database attached read-only (several processes read at once).
        """
        copy = HistoryStore(
            self.directory, self.lock_timeout, self.recent_days, self.unique_first_uses, self.new_keys_only, self.threads
        )
        copy.read_only = True
        return copy

    @property
    def path(self) -> Path:
        return self.directory / DATABASE_NAME

    def _stored_copies(
        self, connection: duckdb.DuckDBPyConnection, keys: pd.DataFrame, bits: np.ndarray | None = None
    ) -> pd.DataFrame:
        """The stored versions of the lines ``keys`` names.

        Only keys the key filter may hold are looked up, by their hash (an integer column is
        scanned far faster than the text keys), and only the matching rows are read.
        """
        if keys.empty:
            return no_lines()
        bits = self.key_filter.load(connection)[0] if bits is None else bits
        candidates = history_frame(keys[self.key_filter.may_hold(bits, keys)], ("declaration_id", "line_no"))
        if candidates.empty:
            return no_lines()
        connection.register("candidates", candidates.assign(key_hash=key_hashes(candidates)))
        stored = connection.execute(
            "SELECT s.* EXCLUDE (key_hash) FROM lines s WHERE s.rowid IN (SELECT l.rowid FROM lines l "
            "SEMI JOIN candidates c ON l.key_hash = c.key_hash)"
        ).df()
        connection.unregister("candidates")
        if stored.empty:
            return history_frame(stored)
        stored = history_frame(stored)
        return stored[line_keys(stored).isin(line_keys(candidates))].reset_index(drop=True)  # hash collisions

    def _ensure_key_hashes(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Stores written before ``key_hash`` existed get the column (once, under the write lock)."""
        columns = connection.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'lines' AND database_name = current_database()"
        ).df()
        if "key_hash" not in set(columns["column_name"]):
            connection.execute("ALTER TABLE lines ADD COLUMN key_hash BIGINT")
        if not connection.execute("SELECT count(*) FROM lines WHERE key_hash IS NULL").fetchall()[0][0]:
            return
        keys = connection.execute("SELECT declaration_id, line_no FROM lines WHERE key_hash IS NULL").df()
        connection.register("hashed", keys.assign(key_hash=key_hashes(keys)))
        connection.execute(
            "UPDATE lines SET key_hash = h.key_hash FROM hashed h WHERE lines.declaration_id = "
            "h.declaration_id AND lines.line_no = h.line_no AND lines.key_hash IS NULL"
        )
        connection.unregister("hashed")

    @contextlib.contextmanager
    def _connect(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A connection in a transaction (committed on success); None when reading a missing store.

        The database is attached for the operation and detached after it (:class:`_Engine`), so
        that other processes may open it in between.
        """
        legacy = any(self.directory.glob("part-*.parquet"))
        if not write and not legacy and (not self.path.exists() or self.path.stat().st_size == 0):
            yield None  # no store yet, or one whose creation was cut before DuckDB wrote its header
            return
        # The one-time import of Parquet parts and a lost key filter are written under the lock.
        write = write or legacy or (not self.new_keys_only and not self.key_filter.path.exists())
        if write and self.read_only:
            raise ValueError(f"{self.directory}: a read-only copy of the store cannot write (or upgrade) it")
        if write:
            self.directory.mkdir(parents=True, exist_ok=True)
        engine = _Engine.of_this_process()
        with engine.attached(self.path, read_only=not write, timeout=self.lock_timeout) as connection:
            try:
                if self.threads is not None:
                    connection.execute(f"SET threads = {int(self.threads)}")
                connection.execute("BEGIN TRANSACTION")
                identity = _file_identity(self.path) if write else None
                if write:
                    # A new file can take a deleted one's inode: its missing tables say it is new.
                    if legacy or self._prepared != identity or not _has_lines_table(connection):
                        self._prepare(connection)
                    if not self.new_keys_only:
                        self.key_filter.ensure(connection)
                elif not _has_lines_table(connection):
                    connection.execute("COMMIT")
                    yield None  # a database whose first write never committed
                    return
                yield connection
                connection.execute("COMMIT")
                if write:
                    self._prepared = identity
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    connection.execute("ROLLBACK")
                raise

    def _prepare(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Tables, key hashes and the one-time import of Parquet parts, before a write.

        Done once per database file and store object (:meth:`_connect` remembers the file it
        prepared): every later write of the same file skips these statements, which cost more than
        a small write itself (the key-hash check scans the whole ``lines`` table).
        """
        for table, columns in _SCHEMA.items():
            if table == "value_firsts" and not self.unique_first_uses:
                columns = columns[: columns.index(", PRIMARY KEY")]
            connection.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        self._ensure_key_hashes(connection)
        self._import_parquet_parts(connection)

    def _import_parquet_parts(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Stores written before the database (Parquet parts) are imported once, in write order.

        The parts are then moved to ``imported-parts/`` (kept, not deleted).
        """
        parts = sorted(self.directory.glob("part-*.parquet"))
        if not parts:
            return
        for part in parts:
            if self._add(connection, pq.read_table(part).to_pandas()):
                self._advance_checkpoint(connection)
        moved = self.directory / "imported-parts"
        moved.mkdir(exist_ok=True)
        for part in parts:
            part.rename(moved / part.name)

    def append(self, lines: pd.DataFrame) -> int:
        """Store lines (see the module docstring for which copy wins); returns lines added or changed."""
        if lines.empty:
            return 0
        with self._connect(write=True) as connection:
            assert connection is not None  # a write opens the database, creating it if need be
            added = self._add(connection, lines)
            if added:
                self._advance_checkpoint(connection)
            return added

    def stored_copies(self, lines: pd.DataFrame) -> pd.DataFrame:
        """The stored versions of ``lines`` (by key; none when the store is missing)."""
        with self._connect() as connection:
            if connection is None or lines.empty:
                return no_lines()
            return self._stored_copies(connection, lines)

    def first_uses_without(self, lines: pd.DataFrame) -> pd.DataFrame:
        """Exact first uses of the parties of ``lines`` from their stored lines other than ``lines``."""
        with self._connect() as connection:
            if connection is None or lines.empty:
                return PastEvents.empty().values
            return _frame(self._first_uses_without(connection, lines, lines), VALUE_EVENT_COLUMNS)

    def take_out(self, lines: pd.DataFrame) -> None:
        """Add the party and flow events of ``lines`` with weight -1 (not their first uses).

        For a store of a file's lines (:class:`FileHistory`): the copies of those lines that another
        store holds are counted there, and taken out here.
        """
        if lines.empty:
            return
        with self._connect(write=True) as connection:
            assert connection is not None  # a write opens the database, creating it if need be
            delta = summed(PastEvents.from_lines(history_frame(lines), ENTITY_COLUMNS, weight=-1))
            self._insert_events(connection, delta, _checkpoint(connection))

    def _add(self, connection: duckdb.DuckDBPyConnection, lines: pd.DataFrame) -> int:
        """Store lines within the open transaction; returns lines added or changed.

        The checkpoint is not advanced here: :meth:`_advance_checkpoint`, which commits this
        transaction and moves events in transactions of their own, is the caller's next step.
        """
        batch = winning_copies(history_frame(lines))
        if self.new_keys_only:
            added, removed = batch, batch.iloc[0:0]
        else:
            bits, count = self.key_filter.load(connection)
            stored = self._stored_copies(connection, batch, bits)
            added, removed = self._changes(batch, stored)
        if added.empty:
            return 0
        if not self.new_keys_only:
            new_keys = added[~line_keys(added).isin(line_keys(removed))] if len(removed) else added
            self.key_filter.add(connection, bits, count, new_keys)  # before the commit: a superset
        delta = summed(
            PastEvents.concat(
                PastEvents.from_lines(added, ENTITY_COLUMNS), PastEvents.from_lines(removed, ENTITY_COLUMNS, weight=-1)
            )
        )
        self._insert_events(connection, delta, _checkpoint(connection))
        if len(removed):
            connection.register("removed", removed[["declaration_id", "line_no"]])
            connection.execute(
                "DELETE FROM lines USING removed WHERE lines.declaration_id = removed.declaration_id "
                "AND lines.line_no = removed.line_no"
            )
            connection.unregister("removed")
        connection.register("added", added.assign(key_hash=key_hashes(added)))
        connection.execute(f"INSERT INTO lines SELECT {', '.join(HISTORY_COLUMNS)}, key_hash FROM added")
        connection.unregister("added")
        self._add_first_uses(connection, delta.values)
        changed = removed[~_same_but_labels(removed, added)] if len(removed) else removed
        if len(changed):  # a corrected copy: its old first uses may be gone
            exact = self._first_uses_without(connection, changed, changed.iloc[0:0])
            keys = _party_keys(changed)
            connection.register("stale", keys)
            connection.execute(
                "DELETE FROM value_firsts USING stale WHERE value_firsts.entity = stale.entity AND value_firsts.key = stale.key"
            )
            connection.unregister("stale")
            self._add_first_uses(connection, exact)
        return len(added)

    def _insert_events(self, connection: duckdb.DuckDBPyConnection, delta: PastEvents, checkpoint: int | None) -> None:
        """Party and flow events to the recent tables, or (before the checkpoint) to the old ones."""
        for name, (table, columns) in _EVENT_TABLES.items():
            frame = getattr(delta, name)
            old = frame["day"].to_numpy() < checkpoint if checkpoint is not None else np.zeros(len(frame), bool)
            self._insert(connection, table, frame[~old], columns)
            self._insert(connection, f"{table}_old", frame[old], columns)
            if name == "parties" and old.any():
                self._add_to_totals(connection, frame[old])

    def _add_to_totals(self, connection: duckdb.DuckDBPyConnection, events: pd.DataFrame) -> None:
        """Fold old-day events into the party totals (recomputed from the old events if any is negative)."""
        keys = events[["entity", "key"]].drop_duplicates().astype("string")
        connection.register("touched", keys)
        if (events[list(_SUMMED)] < 0).any(axis=None):
            connection.execute(
                "DELETE FROM party_totals_old USING touched WHERE party_totals_old.entity = "
                "touched.entity AND party_totals_old.key = touched.key"
            )
            source = "party_events_old JOIN touched USING (entity, key)"
        else:
            connection.register("new_events", events)
            source = "new_events"
        connection.execute(_TOTALS_UPSERT.format(source=source, where=""))
        for name in ("touched", "new_events"):
            with contextlib.suppress(duckdb.Error):
                connection.unregister(name)

    def _advance_checkpoint(self, connection: duckdb.DuckDBPyConnection) -> None:
        """Move events older than ``recent_days`` before the latest day into the old tables and totals,
        once the recent tables hold more than twice that.

        The write under way is committed first, and the events move in slices of whole days, each
        in its own transaction with the checkpoint it reaches (:func:`_slice_ends`): a year of the
        events of a 6M-line store, moved in the transaction of the lines that set it off, ran out of
        DuckDB's memory. A crash between slices leaves an earlier checkpoint, from which the next
        write goes on; the totals sum the slices exactly (a day is never split).
        """
        checkpoint = _checkpoint(connection)
        first, last = connection.execute("SELECT min(day), max(day) FROM party_events").fetchall()[0]
        if last is None or last - (first if checkpoint is None else checkpoint) <= 2 * self.recent_days:
            return
        connection.execute("COMMIT")
        for end in _slice_ends(connection, int(last) - self.recent_days, CHECKPOINT_SLICE_ROWS):
            connection.execute("BEGIN TRANSACTION")
            connection.execute("INSERT INTO party_events_old SELECT * FROM party_events WHERE day < ?", [end])
            connection.execute(_TOTALS_UPSERT.format(source="party_events", where=f"WHERE day < {end}"))
            connection.execute("DELETE FROM party_events WHERE day < ?", [end])
            connection.execute("INSERT INTO flow_events_old SELECT * FROM flow_events WHERE day < ?", [end])
            connection.execute("DELETE FROM flow_events WHERE day < ?", [end])
            connection.execute("DELETE FROM checkpoint")
            connection.execute("INSERT INTO checkpoint VALUES (?)", [end])
            connection.execute("COMMIT")
        connection.execute("BEGIN TRANSACTION")  # the caller's transaction, which it commits

    @staticmethod
    def _insert(connection: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
        if len(frame):
            connection.register("delta", frame)
            connection.execute(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM delta")
            connection.unregister("delta")

    def _add_first_uses(self, connection: duckdb.DuckDBPyConnection, values: pd.DataFrame) -> None:
        if len(values):
            connection.register("firsts", values)
            connection.execute(
                "INSERT INTO value_firsts SELECT entity, key, kind, value, day FROM firsts"
                + (" ON CONFLICT DO UPDATE SET day = least(value_firsts.day, excluded.day)" if self.unique_first_uses else "")
            )
            connection.unregister("firsts")

    def _first_uses_without(
        self, connection: duckdb.DuckDBPyConnection, parties_of: pd.DataFrame, without: pd.DataFrame
    ) -> pd.DataFrame:
        """Exact first uses of the parties of ``parties_of``, from their stored lines minus ``without``."""
        keys = _party_keys(parties_of)
        connection.register("party_keys", keys)
        connection.register("without", without[["declaration_id", "line_no"]])
        condition = " OR ".join(f"(k.entity = '{e}' AND k.key = l.{e})" for e in ENTITY_COLUMNS)
        lines = connection.execute(
            f"SELECT DISTINCT l.* EXCLUDE (key_hash) FROM lines l JOIN party_keys k ON {condition} "
            "ANTI JOIN without w ON l.declaration_id = w.declaration_id AND l.line_no = w.line_no"
        ).df()
        connection.unregister("party_keys")
        connection.unregister("without")
        values = PastEvents.from_lines(history_frame(lines), ENTITY_COLUMNS).values if len(lines) else PastEvents.empty().values
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
        same = (
            (old.reset_index(drop=True).astype("string").fillna("\0") == new.reset_index(drop=True).astype("string").fillna("\0"))
            .all(axis=1)
            .to_numpy()
        )
        replace = ~loses & ~same
        added = pd.concat([batch[~in_store], new[replace]], ignore_index=True)
        return added, old[replace].reset_index(drop=True)

    def read(self) -> pd.DataFrame:
        """Every stored line (its current version), by date; an empty frame if none."""
        with self._connect() as connection:
            if connection is None:
                return no_lines()
            frame = connection.execute(
                "SELECT * EXCLUDE (key_hash) FROM lines ORDER BY declared_at, declaration_id, line_no"
            ).df()
        return history_frame(frame)

    @property
    def checkpoint(self) -> pd.Timestamp | None:
        """The day before which events are kept as old events and per-party totals (None: not yet)."""
        with self._connect() as connection:
            day = None if connection is None else _checkpoint(connection)
        return None if day is None else EPOCH + pd.Timedelta(days=day)

    def __len__(self) -> int:
        with self._connect() as connection:
            return 0 if connection is None else int(connection.execute("SELECT count(*) FROM lines").fetchall()[0][0])

    def events_for(
        self,
        lines: pd.DataFrame,
        entities: tuple[str, ...] = ENTITY_COLUMNS,
        flow_days: int | None = None,
        exclude: pd.DataFrame | None = None,
        label_delay_days: int | None = None,
        taken_out_since: int | None = None,
        fold_before: int | None = None,
    ) -> PastEvents:
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
        label_delay_days : int, optional
            Days before an outcome is known; with it, lines dated that long after the checkpoint
            read the old events as per-party totals (without it, always event by event).
        taken_out_since : int, optional
            First day of stored lines whose events the caller takes out itself (with
            :meth:`take_out` in another store): if before the checkpoint, old events are read event
            by event (the totals cannot lose a line).
        fold_before : int, optional
            Day before which each party's events are read as two: its first day (one line) and
            the rest, on the day before ``fold_before`` (see :func:`_folded`). Exact for lines dated
            at least the label delay after it, whose features count those events whole; only for a
            store whose per-day events are never negative (no :meth:`take_out`), as a first day is
            netted per store.
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
            # Arrow tables: DuckDB scans them faster than pandas' text columns. Party events come back
            # by the number of their key here (qid): grouping and returning integers, not text.
            keys = keys.reset_index(drop=True)
            query_keys = {c: pa.array(keys[c], pa.string()) for c in ("entity", "key")}
            connection.register("query_keys", pa.table({**query_keys, "qid": pa.array(np.arange(len(keys), dtype="int32"))}))
            connection.register("query_flows", pa.table({"flow": pa.array(flows["flow"], pa.string())}))
            copies = self._stored_copies(connection, exclude)
            checkpoint, first = _checkpoint(connection), int(days.min())
            totals = (
                checkpoint is not None
                and label_delay_days is not None
                and first >= checkpoint + label_delay_days
                and (copies.empty or int(day_numbers(copies).min()) >= checkpoint)
                and (taken_out_since is None or taken_out_since >= checkpoint)
            )
            # Events on or after the batch's last day count for none of its lines (counts are of
            # earlier days, outcomes once known, first uses before the line's day): a file's early
            # part does not read its parties' years to come.
            last = int(days.max())
            per_day = (
                "SELECT qid, day, sum(lines) AS lines, sum(outcomes) AS outcomes, "
                "sum(positives) AS positives "
                f"FROM ({_events_union('party_events', checkpoint is not None and not totals)}) "
                f"JOIN query_keys USING (entity, key) WHERE day < {last} GROUP BY qid, day"
            )
            parties = _arrow_frame(
                connection.sql(per_day if fold_before is None else _folded(per_day, fold_before)), PARTY_EVENT_COLUMNS, keys
            )
            if totals and checkpoint is not None:  # totals implies a checkpoint (said again for mypy)
                parties = concat_events([parties, _frame(_totals_as_events(connection, checkpoint), PARTY_EVENT_COLUMNS)])
            values = _arrow_frame(  # one row per party and value (stores without the key append)
                connection.sql(
                    "SELECT qid, kind, value, min(day) AS day, 1 AS lines FROM value_firsts "
                    f"JOIN query_keys USING (entity, key) WHERE day < {last} GROUP BY qid, kind, value"
                ),
                VALUE_EVENT_COLUMNS,
                keys,
            )
            since = first - flow_days if flow_days is not None else np.iinfo("int32").min
            old_flows = checkpoint is not None and since < checkpoint
            flow_rows = _arrow_frame(
                connection.sql(
                    f"SELECT flow, day, sum(lines) AS lines FROM ({_events_union('flow_events', old_flows)}) "
                    "JOIN query_flows USING (flow) WHERE day >= $since AND day < $last GROUP BY ALL",
                    params={"since": since, "last": int(days.max())},
                ),
                FLOW_EVENT_COLUMNS,
            )
            changed = copies[~_same_but_labels(copies, history_frame(exclude))] if len(copies) else copies
            exact = self._first_uses_without(connection, changed, copies) if len(changed) else None
        if exact is not None:  # parties of corrected copies: first uses without the stored copies
            stale = _party_keys(changed)
            keep = ~pd.MultiIndex.from_frame(values[["entity", "key"]].astype("string")).isin(pd.MultiIndex.from_frame(stale))
            values = concat_events([values[keep], _frame(exact, VALUE_EVENT_COLUMNS)])
        stored = PastEvents(parties, values, flow_rows, (pd.Timestamp(start) - EPOCH).days)
        if copies.empty:
            return stored
        taken_out = PastEvents.from_lines(copies, ENTITY_COLUMNS, weight=-1)
        return PastEvents.concat(stored, replace(taken_out, values=PastEvents.empty().values))


def _has_lines_table(connection: duckdb.DuckDBPyConnection) -> bool:
    query = "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'lines' AND database_name = current_database()"
    return bool(connection.execute(query).fetchall()[0][0])


class _Engine:
    """One in-memory DuckDB instance per process, to which store databases are attached in turn.

    Creating a DuckDB instance costs about 20 ms of CPU whatever the database; attaching a file to
    a running one about 2 ms. A database is attached for one operation and detached after it:
    detaching releases DuckDB's lock on the file, which other processes wait for. Operations of
    this process on one file take turns (a lock per file): DuckDB refuses a file attached twice.

    Use :meth:`of_this_process`: the instance belongs to the process that created it (a forked
    child must not use its parent's instance and gets its own).
    """

    _current: _Engine | None = None
    _creating = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.database = duckdb.connect(":memory:", config={"memory_limit": DUCKDB_MEMORY_LIMIT})
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @classmethod
    def of_this_process(cls) -> _Engine:
        """The engine of the running process (created at its first use)."""
        with cls._creating:
            if cls._current is None or cls._current.pid != os.getpid():
                cls._current = cls()
            return cls._current

    def _lock_of(self, path: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(path, threading.Lock())

    @contextlib.contextmanager
    def attached(self, path: Path, read_only: bool, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection whose default database is ``path``, attached until the block ends.

        Waits up to ``timeout`` seconds while another process holds the file.
        """
        name = str(path.resolve())
        alias = "store_" + hashlib.sha256(name.encode()).hexdigest()[:16]
        with self._lock_of(name):
            connection = self.database.cursor()
            try:
                self._attach(connection, name, alias, read_only, timeout)
                try:
                    connection.execute(f"USE {alias}")
                    yield connection
                finally:
                    connection.execute("USE memory")
                    connection.execute(f"DETACH {alias}")
            finally:
                connection.close()

    @staticmethod
    def _attach(connection: duckdb.DuckDBPyConnection, path: str, alias: str, read_only: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        options = " (READ_ONLY)" if read_only else ""
        while True:
            try:
                connection.execute(f"ATTACH '{_sql_text(path)}' AS {alias}{options}")
                return
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(LOCK_RETRY_SECONDS)


def limit_engine_memory(limit: str) -> None:
    """Set how much memory this process's DuckDB instance may keep (``DUCKDB_MEMORY_LIMIT`` by default).

    For processes that only read stores (batch scoring's workers): DuckDB keeps what a query took
    up to its limit, and lowering the limit gives it back (measured: 1,023 -> 541 MiB of resident
    memory after reading a 10M-line store's events for five parts of 100k lines).

    Raises
    ------
    ValueError
        When ``limit`` is not a size DuckDB reads (e.g. ``"128MB"``); the limit is then unchanged.
    """
    try:
        _Engine.of_this_process().database.execute(f"SET memory_limit = '{_sql_text(limit)}'")
    except duckdb.ParserException as error:
        raise ValueError(f"limit must be a memory size such as '128MB', got {limit!r} ({error})") from error


def _sql_text(text: str) -> str:
    """``text`` inside a single-quoted SQL string literal."""
    return text.replace("'", "''")


def _file_identity(path: Path) -> tuple[int, int]:
    """Device and inode of an open database file: a store removed and written anew is another file."""
    status = path.stat()
    return status.st_dev, status.st_ino


def _events_union(table: str, with_old: bool) -> str:
    """The recent events of ``table``, and its old ones when ``with_old``."""
    return f"SELECT * FROM {table}" + (f" UNION ALL SELECT * FROM {table}_old" if with_old else "")


def _folded(per_day: str, cut: int) -> str:
    """Party events of the query ``per_day`` with those before day ``cut`` folded, per party, into
    its first day (one line) and the rest on day ``cut - 1`` (as the checkpoint totals are)."""
    cut = int(cut)
    return f"""
        WITH ev AS ({per_day})
        SELECT qid, day, lines, outcomes, positives FROM ev WHERE day >= {cut}
        UNION ALL
        SELECT qid, min(day) FILTER (WHERE lines > 0), 1, 0, 0 FROM ev WHERE day < {cut}
        GROUP BY qid HAVING count(*) FILTER (WHERE lines > 0) > 0
        UNION ALL
        SELECT qid, {cut - 1}, sum(lines) - CASE WHEN count(*) FILTER (WHERE lines > 0) > 0 THEN 1 ELSE 0 END,
               sum(outcomes), sum(positives)
        FROM ev WHERE day < {cut} GROUP BY qid"""


def _totals_as_events(connection: duckdb.DuckDBPyConnection, checkpoint: int) -> pd.DataFrame:
    """Per queried party with old lines: its first day (one line), and the rest of its old lines and
    outcomes on the day before the checkpoint, which count for every line the totals are used for."""
    totals = connection.execute("SELECT t.* FROM party_totals_old t JOIN query_keys USING (entity, key) WHERE t.lines > 0").df()
    first = totals.assign(day=totals["first_day"], lines=1, outcomes=0, positives=0)
    rest = totals.assign(day=checkpoint - 1, lines=totals["lines"] - 1)
    return pd.concat([first, rest], ignore_index=True).reindex(columns=list(PARTY_EVENT_COLUMNS))


def _party_keys(lines: pd.DataFrame) -> pd.DataFrame:
    """(entity, key) of every party of ``lines``, as text."""
    keys = [np.asarray(lines[e].dropna().astype("string").unique(), dtype=object) for e in ENTITY_COLUMNS]
    return pd.DataFrame(
        {
            "entity": pd.array(np.repeat(np.array(ENTITY_COLUMNS, dtype=object), [len(k) for k in keys]), dtype="string"),
            "key": pd.array(np.concatenate(keys), dtype="string"),
        }
    )


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


def _arrow_frame(relation: duckdb.DuckDBPyRelation, columns: tuple[str, ...], keys: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of a query as an event frame (integer counts, categorical text), as :func:`_frame`
    makes it from ``.df()``.

    Through Arrow: text is dictionary-encoded there, not converted to Python strings and back. With
    ``keys`` (the registered ``query_keys``), rows name their party by its row there (``qid``).
    """
    table = relation.to_arrow_table().combine_chunks()
    frame = {}
    if keys is not None:
        qid = table.column("qid").to_numpy().astype("int64")
        for column in ("entity", "key"):
            codes, uniques = pd.factorize(keys[column])
            frame[column] = pd.Categorical.from_codes(
                codes[qid], categories=pd.Index(np.asarray(uniques, dtype=object), dtype=object)
            )
    for column in columns:
        if column in frame:
            continue
        values = table.column(column)
        if column in ("day", *_SUMMED):
            frame[column] = pc.cast(values, pa.int64()).to_numpy()
        else:
            encoded = pc.dictionary_encode(values.cast(pa.string())).combine_chunks()
            categories = pd.Index(np.asarray(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object), dtype=object)
            codes = encoded.indices.fill_null(-1).to_numpy().astype("int64")
            frame[column] = pd.Categorical.from_codes(codes, categories=categories)
    return pd.DataFrame(frame)[list(columns)]


def _frame(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows read from the store as an event frame: integer counts, categorical text."""
    frame = frame.reindex(columns=list(columns))
    return pd.DataFrame({c: frame[c].to_numpy("int64") if c in ("day", *_SUMMED) else as_category(frame[c]) for c in columns})


class FileHistory:
    """History of a file being scored in parts: the store, then every other line of the file.

    Lines of a file are history for each other whatever part they are in. They are added chunk by
    chunk (:meth:`add`) to a store of their own in ``directory`` (a temporary folder), so memory
    holds a part, not the file; a part then reads the events of its parties and flows from both
    stores. The store's copies of lines of the file (a file scored again) do not count: their
    party and flow events are taken out in the file's store (:meth:`HistoryStore.take_out`), and
    where a copy differs from the file's line (a corrected declaration) the first uses of its
    parties are recomputed without it. A copy identical to the file's line cannot change a first
    use (a minimum over the same days and values).

    Parameters
    ----------
    store : HistoryStore or None
        Lines scored before (None: the file is its own history).
    directory : str or Path
        Folder of the file's own store (created; the caller removes it).
    extra_entities : tuple of str
        Party columns the history features read that stores do not keep (a source schema's
        goods profile): their events are kept in memory, from the file's lines only.
    """

    def __init__(self, store: HistoryStore | None, directory: str | Path, extra_entities: tuple[str, ...] = ()):
        self.store = store
        self.file = HistoryStore(directory, recent_days=_NEVER_FOLDED, unique_first_uses=False, new_keys_only=True)
        self.extra_entities = tuple(e for e in extra_entities if e not in ENTITY_COLUMNS)
        self._extra = PastEvents.empty()
        self._changed: list[pd.DataFrame] = []
        self._first_copy_day: int | None = None
        self._overrides: pd.DataFrame | None = None
        self._stale: pd.DataFrame | None = None

    def add(self, lines: pd.DataFrame) -> None:
        """Add a chunk of the file's lines (validated, keys unique within the file)."""
        if lines.empty:
            return
        self.file.append(lines)
        if self.extra_entities:
            events = PastEvents.from_lines(lines, self.extra_entities)
            self._extra = PastEvents.concat(self._extra, replace(events, flows=PastEvents.empty().flows))
        copies = self.store.stored_copies(lines) if self.store is not None else pd.DataFrame()
        if len(copies):
            self.file.take_out(copies)
            day = int(day_numbers(copies).min())
            self._first_copy_day = day if self._first_copy_day is None else min(day, self._first_copy_day)
            self._changed.append(copies[~_same_but_labels(copies, history_frame(lines))])
            self._overrides = None

    def for_workers(self) -> FileHistory:
        """A copy for worker processes: first-use overrides computed once here, stores read-only.

        Only for reading (:meth:`events_for`) once every line of the file was added.
        """
        self._first_use_overrides()
        reading = copy.copy(self)
        reading.store = None if self.store is None else self.store.reader()
        reading.file = self.file.reader()
        return reading

    def _first_use_overrides(self) -> pd.DataFrame:
        """First uses of the parties of corrected copies, from the store without those copies."""
        if self._overrides is None:
            changed = pd.concat(self._changed, ignore_index=True) if self._changed else pd.DataFrame()
            # Changed copies come from the store (none without one): the test of it is for mypy.
            self._overrides = (
                self.store.first_uses_without(changed) if self.store is not None and len(changed) else PastEvents.empty().values
            )
            self._stale = _party_keys(changed) if len(changed) else None
        return self._overrides

    def events_for(
        self,
        lines: pd.DataFrame,
        entities: tuple[str, ...] = ENTITY_COLUMNS,
        flow_days: int | None = None,
        label_delay_days: int | None = None,
    ) -> PastEvents:
        """Events of the parties and flows of ``lines`` (a part of the file), without the lines themselves."""
        events = self.events_with(lines, entities, flow_days, label_delay_days)
        part = PastEvents.from_lines(lines, ENTITY_COLUMNS, weight=-1)
        taken_out = [replace(part, values=PastEvents.empty().values)]
        others = tuple(entity for entity in entities if entity not in ENTITY_COLUMNS)
        if others:
            taken_out.append(replace(PastEvents.from_lines(lines, others, weight=-1), flows=PastEvents.empty().flows))
        return PastEvents.concat(events, *taken_out)

    def events_with(
        self,
        lines: pd.DataFrame,
        entities: tuple[str, ...] = ENTITY_COLUMNS,
        flow_days: int | None = None,
        label_delay_days: int | None = None,
    ) -> PastEvents:
        """Events of the parties and flows of ``lines`` (a part of the file), the lines' own included.

        What :class:`~features.history.HistoryFeatures` reads for a part: :meth:`events_for` plus
        the part's own events, without taking the part out of the file's store only to add it
        back. The file's store holds each line of the part exactly as it is (keys are unique within
        the file), so its events there are the part's own; those of the part's last day are not
        read, and count for none of its lines (counts are of earlier days, first uses before the
        line's day).
        """
        stored = [entity for entity in entities if entity in ENTITY_COLUMNS]
        # A file in date order would read, for every part, the events of its parties since the
        # file began: those before the part (and its label delay) are folded per party, so memory
        # follows the part, not the file (exact: see HistoryStore.events_for).
        fold = (
            None
            if label_delay_days is None or self._first_copy_day is not None
            else int(day_numbers(lines).min()) - label_delay_days
        )
        events = self.file.events_for(lines, tuple(stored), flow_days, exclude=lines.iloc[0:0], fold_before=fold)
        extra = [entity for entity in entities if entity in self.extra_entities]
        if extra:
            events = PastEvents.concat(events, self._extra.relevant_to(lines, tuple(extra)))
        unheld = tuple(entity for entity in entities if entity not in ENTITY_COLUMNS and entity not in self.extra_entities)
        if unheld:  # parties this history was not told to keep: the part's own lines only
            events = PastEvents.concat(events, replace(PastEvents.from_lines(lines, unheld), flows=PastEvents.empty().flows))
        if self.store is None:
            return events
        overrides = self._first_use_overrides()
        past = self.store.events_for(
            lines,
            tuple(stored),
            flow_days,
            exclude=lines.iloc[0:0],
            label_delay_days=label_delay_days,
            taken_out_since=self._first_copy_day,
        )
        if self._stale is not None:
            values = past.values
            keep = ~pd.MultiIndex.from_frame(values[["entity", "key"]].astype("string")).isin(
                pd.MultiIndex.from_frame(self._stale)
            )
            relevant = PastEvents(PastEvents.empty().parties, overrides, PastEvents.empty().flows, None)
            overridden = relevant.relevant_to(lines, tuple(stored)).values
            past = replace(past, values=concat_events([values[keep], overridden]))
        return PastEvents.concat(past, events)
