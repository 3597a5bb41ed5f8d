"""Alias moves that are safe under concurrency and failure: promote a challenger, roll back.

MLflow has no compare-and-set on aliases, so every move here

1. takes an exclusive registry lock: an ``fcntl.flock`` on a file next to a SQLite tracking
   database (``mlflow.db.alias.lock``), a PostgreSQL advisory lock for a PostgreSQL tracking store,
   otherwise a lock file in the temporary folder (which only covers processes on this machine);
2. re-reads ``champion`` under the lock and aborts with :class:`ChampionMoved` when it no longer
   points at the version the caller decided against, so two retrains started at once cannot both
   promote;
3. moves the aliases one registry call each, in an order where an interruption leaves ``champion``
   either where it was or fully moved: a promotion sets ``previous`` first and ``champion`` last
   (and puts ``previous`` back when the second call raises), a rollback moves ``champion`` first.

A scorer that loaded the champion keeps its in-memory bundle (the alias was resolved to a version
when it loaded) until it reloads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from models import registry
from models.registry import CHAMPION, PREVIOUS

LOCK_SUFFIX = ".alias.lock"
_POLL_SECONDS = 0.05


class PromotionError(RuntimeError):
    """An alias move that did not happen (the aliases are as they were)."""


class ChampionMoved(PromotionError):
    """``champion`` changed between the decision and the move.

    Attributes
    ----------
    champion : str or None
        The version ``champion`` points at now.
    """

    def __init__(self, message: str, champion: str | None) -> None:
        super().__init__(message)
        self.champion = champion


class LockTimeout(PromotionError):
    """Another process held the registry lock for longer than the timeout."""


@dataclass(frozen=True)
class AliasMove:
    """The result of a move: ``champion`` and ``previous`` before and after."""

    champion_before: str | None
    champion_after: str
    previous_before: str | None
    previous_after: str | None


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI, None for other stores."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///"))


def lock_file(tracking_uri: str) -> Path:
    """The lock file of a registry: next to a SQLite database, else in the temporary folder."""
    database = sqlite_database(tracking_uri)
    if database is not None:
        return database.with_name(database.name + LOCK_SUFFIX)
    digest = hashlib.sha256(tracking_uri.encode("utf-8")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"misdeclare-registry-{digest}{LOCK_SUFFIX}"


@contextmanager
def _file_lock(path: Path, timeout_seconds: float) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"the registry lock {path} is held by another process (waited {timeout_seconds:g} s); aliases unchanged"
                    ) from None
                time.sleep(_POLL_SECONDS)
        yield
    finally:
        # Closing the descriptor releases the lock, also when the process dies.
        os.close(handle)


def advisory_key(tracking_uri: str) -> int:
    """A signed 64-bit PostgreSQL advisory-lock key for the registry's alias moves."""
    digest = hashlib.sha256(f"misdeclare-aliases:{tracking_uri}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _postgres_lock(tracking_uri: str, timeout_seconds: float) -> Iterator[None]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    # The lock needs a driver, not MLflow's: psycopg (3) is the one this project installs.
    url = make_url(tracking_uri).set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    key = advisory_key(tracking_uri)
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + timeout_seconds
            while not connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
                if time.monotonic() >= deadline:
                    raise LockTimeout(
                        f"the registry's advisory lock is held by another process "
                        f"(waited {timeout_seconds:g} s); aliases unchanged"
                    )
                time.sleep(_POLL_SECONDS)
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
    finally:
        engine.dispose()


@contextmanager
def registry_lock(tracking_uri: str | None = None, timeout_seconds: float = 60.0) -> Iterator[None]:
    """Hold the registry's exclusive alias lock (see the module docstring for which lock).

    Raises
    ------
    LockTimeout
        When the lock is not free within ``timeout_seconds``.
    """
    uri = registry.resolve_tracking_uri(tracking_uri)
    if uri.startswith("postgresql"):
        with _postgres_lock(uri, timeout_seconds):
            yield
    else:
        with _file_lock(lock_file(uri), timeout_seconds):
            yield


def _restore(name: str, alias: str, version: str | None, tracking_uri: str | None) -> None:
    if version is None:
        registry.client(tracking_uri).delete_registered_model_alias(name, alias)
    else:
        registry.set_alias(name, alias, version, tracking_uri)


def _move_to(name: str, version: str, champion: str | None, previous: str | None, tracking_uri: str | None) -> None:
    """Set ``previous`` to the current champion, then ``champion`` to ``version``.

    In this order an interruption leaves ``champion`` where it was (``previous`` already names
    it) or fully moved. On an exception from the second call ``previous`` is put back.
    """
    if champion is None or champion == previous:
        registry.set_alias(name, CHAMPION, version, tracking_uri)
        return
    registry.set_alias(name, PREVIOUS, champion, tracking_uri)
    try:
        registry.set_alias(name, CHAMPION, version, tracking_uri)
    except BaseException:
        _restore(name, PREVIOUS, previous, tracking_uri)
        raise


def promote(
    name: str, version: str, expected_champion: str | None, tracking_uri: str | None = None, timeout_seconds: float = 60.0
) -> AliasMove:
    """Move ``champion`` to ``version`` and keep the old champion as ``previous``.

    Parameters
    ----------
    name : str
        Registered model name.
    version : str
        The version to promote.
    expected_champion : str or None
        The champion version the decision was made against (None: there was no champion).
    tracking_uri : str, optional
    timeout_seconds : float
        How long to wait for the registry lock.

    Raises
    ------
    ChampionMoved
        ``champion`` no longer points at ``expected_champion``; nothing was moved.
    LockTimeout
        The lock stayed busy; nothing was moved.
    """
    with registry_lock(tracking_uri, timeout_seconds):
        champion = registry.alias_version(name, CHAMPION, tracking_uri)
        if champion != (None if expected_champion is None else str(expected_champion)):
            raise ChampionMoved(
                f"{name}: champion is version {champion}, not {expected_champion} as when the "
                f"decision was made (another retrain or rollback moved it); not promoted",
                champion,
            )
        previous = registry.alias_version(name, PREVIOUS, tracking_uri)
        _move_to(name, str(version), champion, previous, tracking_uri)
        return AliasMove(champion, str(version), previous, champion if champion is not None else previous)


def rollback(name: str, tracking_uri: str | None = None, timeout_seconds: float = 60.0) -> AliasMove:
    """Move ``champion`` back to ``previous``; ``previous`` then names the version rolled back from.

    So a second rollback undoes the first.

    Raises
    ------
    PromotionError
        There is no ``champion`` or no ``previous`` (or both point at the same version).
    LockTimeout
        The lock stayed busy; nothing was moved.
    """
    with registry_lock(tracking_uri, timeout_seconds):
        champion = registry.alias_version(name, CHAMPION, tracking_uri)
        previous = registry.alias_version(name, PREVIOUS, tracking_uri)
        if champion is None or previous is None:
            raise PromotionError(f"{name}: nothing to roll back to (champion: {champion}, previous: {previous})")
        if champion == previous:
            raise PromotionError(f"{name}: champion and previous are both version {champion}; nothing to roll back")
        # Champion first: an interruption then leaves the rollback done and ``previous`` unchanged
        # (moving ``previous`` first would lose the version to roll back to).
        registry.set_alias(name, CHAMPION, previous, tracking_uri)
        registry.set_alias(name, PREVIOUS, champion, tracking_uri)
        return AliasMove(champion, previous, previous, champion)
