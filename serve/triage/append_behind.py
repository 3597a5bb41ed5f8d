"""A scoring worker's lines reach the history store after its answer is sent, and are never lost.

Appending a ``POST /score`` request's lines to the history store is about a fifth of the request's
CPU (the stored copies, the lines' events, the inserts), which the client need not wait for. An
:class:`AppendBehind` writes the lines to a **spool** file first (Arrow IPC, written under a
temporary name, flushed to disk and renamed into place: a few milliseconds), lets the worker answer,
and appends them in a background thread. The worker's next task waits for that append (:meth:`wait`),
so a worker always reads what it has answered for; requests answered by two workers at once never
saw each other's lines either way.

Nothing is lost when a worker dies between its answer and its append: each worker's spool is a
folder ``<history_dir>/spool/<pid>-<random>/`` with an ``owner`` file that the worker holds an
exclusive ``flock`` on while it lives (the system releases it when the process ends, whatever
ends it). A starting worker, and the service at start-up (:func:`append_orphans`), append the spool
files of every folder whose owner is gone, in the order they were written, and remove them.
Appending a file twice (its worker killed after the append, before it removed the file) changes
nothing: the store keeps one copy per line.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather

from features.history_store import HistoryStore

SPOOL_FOLDER = "spool"
OWNER_FILE = "owner"
LOGGER = logging.getLogger(__name__)


def spool_dir(store: HistoryStore) -> Path:
    """The folder of the scoring workers' spools of ``store``."""
    return store.directory / SPOOL_FOLDER


def _spooled(folder: Path) -> list[Path]:
    """The spool files of ``folder`` in the order they were written (numbered)."""
    return sorted(folder.glob("*.arrow"))


def _append_files(store: HistoryStore, files: list[Path]) -> int:
    """Append each spool file to ``store`` in order, removing it once its lines are stored."""
    changed = 0
    for path in files:
        changed += store.append(feather.read_table(path).to_pandas())
        path.unlink()
    return changed


@contextlib.contextmanager
def _orphan(folder: Path) -> Iterator[bool]:
    """Whether ``folder`` is the spool of a worker that is gone, holding its owner lock if so.

    False while its worker lives, while another process takes it over, and once it is removed.
    """
    try:
        owner = open(folder / OWNER_FILE, "rb")
    except FileNotFoundError:
        yield False
        return
    with owner:
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield (folder / OWNER_FILE).exists()  # not removed by the process that held it before us


def append_orphans(store: HistoryStore) -> int:
    """Append the spooled lines of every scoring worker that is gone; returns lines added or changed."""
    folder = spool_dir(store)
    if not folder.is_dir():
        return 0
    changed = 0
    for spool in sorted(path for path in folder.iterdir() if path.is_dir() and not path.name.startswith(".")):
        with _orphan(spool) as orphan:
            if orphan:
                changed += _append_files(store, _spooled(spool))
                shutil.rmtree(spool)  # under the lock: no other process appends these files again
    return changed


class AppendBehind:
    """The store writes of one scoring worker, done after its answers (see the module docstring).

    Parameters
    ----------
    store : HistoryStore
        The store the lines go to.

    Attributes
    ----------
    folder_ : Path
        This worker's spool folder, once :meth:`open` has created it.
    """

    def __init__(self, store: HistoryStore):
        self.store = store
        self.folder_: Path | None = None
        self._owner: IO[bytes] | None = None  # kept open: closing it would release the owner lock
        self._written = 0
        self._thread: threading.Thread | None = None

    def open(self) -> AppendBehind:
        """Create this worker's spool folder, hold its owner lock, and append the orphans' lines."""
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # Made under a hidden name and renamed once locked: a folder without a held lock is an orphan.
        staging, folder = spool_dir(self.store) / f".{name}", spool_dir(self.store) / name
        staging.mkdir(parents=True)
        owner = open(staging / OWNER_FILE, "ab")
        fcntl.flock(owner, fcntl.LOCK_EX)  # held until this process ends
        staging.rename(folder)
        self.folder_, self._owner = folder, owner
        append_orphans(self.store)
        return self

    def hand_over(self, lines: pd.DataFrame) -> None:
        """Spool ``lines`` (durably, before the caller answers) and append them in the background."""
        if self.folder_ is None:
            raise RuntimeError("AppendBehind.open() must be called before hand_over()")
        self.wait()
        self._written += 1
        path = self.folder_ / f"{self._written:012d}.arrow"
        temporary = path.with_suffix(".tmp")
        # Not features.io.write_table: that writes manifests for people and tools (timestamps as
        # dates, no fsync); a spool file must give back exactly the frame and survive a crash.
        with open(temporary, "wb") as out:
            feather.write_feather(pa.Table.from_pandas(lines, preserve_index=False), out, compression="uncompressed")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        self._thread = threading.Thread(target=self._append_spooled, name="append-behind")
        self._thread.start()

    def wait(self) -> None:
        """Return once the lines handed over so far are appended (or their append has failed)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _append_spooled(self) -> None:
        assert self.folder_ is not None
        try:
            _append_files(self.store, _spooled(self.folder_))
        except Exception:  # the files stay: the next hand-over, or the next worker, appends them
            LOGGER.exception("appending spooled lines to the history store %s failed", self.store.directory)
