"""``POST /score`` outside the web process: a pool of scoring worker processes.

Scoring 100 lines is CPU work (features, LightGBM, TreeSHAP reasons) that in the web process held the
interpreter the page handlers need: under load the pages waited seconds behind it. Here each web
process owns a :class:`ScoringPool` of ``Settings.scoring_workers`` processes (default 1). Each
worker

- is started with the **verified bytes** of the bundle's files (:func:`models.bundle.read_bundle_contents`
  in the web process, once) and builds the models from that text itself
  (:func:`models.bundle.bundle_from_contents`): models are data, no model object crosses a process
  boundary; only manifest lines, file bytes and results do;
- opens the history store of ``Settings.history_dir``, reads the lines' history from it and appends
  the lines it scores, as the in-process scorer did (:func:`serve.triage.scoring.score_lines`), but
  after its answer is sent (:class:`serve.triage.append_behind.AppendBehind`: spooled to disk first,
  appended before the worker's next task), and appends the outcomes recorded on the pages
  (:class:`WorkerStore`), so that the web process spends no CPU on store writes;
- runs at a lower OS priority (``os.nice(Settings.scoring_nice)``), so that a page waiting for the
  CPU gets it first, and with one LightGBM thread.

The request handler awaits the pool's future without blocking the event loop. A worker that dies
(killed, out of memory) fails the requests it held with 503 and the pool is started again for the
next request.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from serve.processes import exit_with_parent
from serve.triage.append_behind import AppendBehind
from serve.triage.errors import ModelUnavailableError
from serve.triage.scoring import DECLARED_COLUMNS, Scorer, ScoreResult, score_lines

# What a scoring worker process builds once in its initializer and every task of it uses. A
# process pool's initializer can hand state to its tasks only through the worker's own globals;
# this dict lives in the worker processes, the web process never fills it.
_WORKER: dict[str, object] = {}
WARM_UP_LINES = 64  # enough lines of one day for red and yellow ones, whose reasons are computed


@dataclass(frozen=True)
class BundleBytes:
    """The verified files of a model bundle as :func:`models.bundle.read_bundle_contents` returns them."""

    contents: dict[str, bytes]
    version: str
    manifest_sha256: str

    @classmethod
    def read(cls, model_uri: str) -> BundleBytes:
        """Read and verify the bundle at ``model_uri`` (folder or ``models:/NAME@ALIAS``) once."""
        from models.bundle import read_bundle_contents

        return cls(*read_bundle_contents(model_uri))

    def build(self):
        """The bundle (``models.bundle.ModelBundle``) built from these bytes."""
        from models.bundle import bundle_from_contents

        return bundle_from_contents(self.contents, self.version, self.manifest_sha256)


def _start_worker(bundle: BundleBytes, history_dir: str, niceness: int, num_threads: int) -> None:
    """Initializer of a scoring worker: lower priority, build the models from text, open the store."""
    from features.history_store import HistoryStore
    from models.predict import score_frame

    # Ctrl-C reaches the whole process group: the web process shuts the pool down, the workers
    # finish or drop their task instead of printing a KeyboardInterrupt each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(os.getppid())
    if niceness:
        os.nice(niceness)
    model = bundle.build()
    scorer: Scorer = partial(score_frame, model, num_threads=num_threads)
    _warm_up(scorer, model)
    # One DuckDB thread: a worker is one of several processes sharing the cores, on small queries.
    store = HistoryStore(history_dir, threads=1)
    _WORKER.update(scorer=scorer, store=store, behind=AppendBehind(store).open())


def _warm_up(scorer: Scorer, model) -> None:
    """Score a few synthetic lines once, without the store, and throw the result away.

    A process's first scoring imports the feature and reason code, builds the booster's TreeSHAP
    tables and loads the compiled kernels: 5-10 s that the first request would otherwise wait for.
    """
    from models.predict import shap_tables
    from serve.triage.synthetic import synthetic_scored_batch

    shap_tables(model.booster)
    lines = synthetic_scored_batch(WARM_UP_LINES, seed=0).reindex(columns=list(DECLARED_COLUMNS))
    score_lines(scorer, lines.to_dict("records"))


def _worker_pid() -> int:
    """The process id of the worker that runs it (start-up check and tests)."""
    return os.getpid()


def _settled_worker_pid() -> int:
    """The process id of the worker that runs it, once it has stored the lines it answered for."""
    _WORKER["behind"].wait()  # type: ignore[attr-defined]
    return os.getpid()


def _score_in_worker(lines: list[dict]) -> ScoreResult:
    """Task of a scoring worker: validate, score with the history of the store, hand the lines over
    to be appended once the answer is sent (after the worker's earlier lines are stored)."""
    behind: AppendBehind = _WORKER["behind"]  # type: ignore[assignment]
    behind.wait()
    return score_lines(_WORKER["scorer"], lines, _WORKER["store"], append=behind.hand_over)  # type: ignore[arg-type]


def _append_in_worker(lines: pd.DataFrame) -> int:
    """Task of a scoring worker: append lines (recorded outcomes) to its history store."""
    _WORKER["behind"].wait()  # type: ignore[attr-defined]
    return _WORKER["store"].append(lines)  # type: ignore[attr-defined]


class ScoringPool:
    """Worker processes that score ``POST /score`` requests for one web process.

    Parameters
    ----------
    bundle : BundleBytes
        The verified bytes of the model bundle (read once by the web process).
    history_dir : str or Path
        Folder of the history store the workers read and feed.
    workers : int
        Worker processes (``Settings.scoring_workers``).
    niceness : int
        Added to the workers' OS niceness (``Settings.scoring_nice``; 0 leaves it).
    num_threads : int
        LightGBM threads per worker.
    """

    def __init__(self, bundle: BundleBytes, history_dir: str | Path, workers: int = 1, niceness: int = 10, num_threads: int = 1):
        if workers < 1:
            raise ValueError(f"a scoring pool needs at least one worker, got {workers}")
        self.bundle = bundle
        self.history_dir = str(history_dir)
        self.workers = workers
        self.niceness = niceness
        self.num_threads = num_threads
        self._executor: ProcessPoolExecutor | None = None

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: the web process holds threads, database connections and DuckDB state
        # that a forked child would inherit half-copied.
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self.bundle, self.history_dir, self.niceness, self.num_threads),
        )

    async def start(self) -> list[int]:
        """Start every worker and wait until each has built its model; returns their process ids.

        A bundle that cannot be built fails here, at start-up, not at the first request.
        """
        self._executor = self._new_executor()
        return sorted(set(await asyncio.gather(*(self._run(_worker_pid) for _ in range(self.workers)))))

    async def pids(self) -> set[int]:
        """Process ids of the workers answering now (one task per worker slot)."""
        return set(await asyncio.gather(*(self._run(_worker_pid) for _ in range(self.workers))))

    async def settled(self) -> set[int]:
        """:meth:`pids`, each once its worker has stored the lines it answered for.

        One task per worker slot: with several workers, one of them may run two of the tasks, so
        that only a pool of one worker is sure to have stored everything (tests use such pools).
        """
        return set(await asyncio.gather(*(self._run(_settled_worker_pid) for _ in range(self.workers))))

    async def score(self, lines: list[dict]) -> ScoreResult:
        """Score ``lines`` in a worker (see :func:`serve.triage.scoring.score_lines`).

        Raises
        ------
        ModelUnavailableError
            The worker died while holding the request (503); the pool is started again.
        """
        return await self._run(partial(_score_in_worker, lines))

    async def _run(self, task) -> object:
        executor = self._executor
        if executor is None:
            raise ModelUnavailableError("the scoring workers are not running")
        try:
            future: Future = executor.submit(task)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as exc:
            if self._executor is executor:  # the first request to see it restarts the pool
                executor.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
            raise ModelUnavailableError("the scoring worker stopped while scoring; send the request again") from exc

    def append(self, lines: pd.DataFrame) -> int:
        """Append ``lines`` to the history store in a worker and wait for it (from a thread, not the loop).

        The workers write the store for scoring already: their writes take turns in the worker
        instead of waiting for each other's file lock, and the web process spends no CPU on them.
        """
        executor = self._executor
        if executor is None:
            raise ModelUnavailableError("the scoring workers are not running")
        return executor.submit(_append_in_worker, lines).result()

    def close(self) -> None:
        """Stop the workers (waits for the tasks they are running; queued ones are dropped)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


class WorkerStore:
    """The history store as the scoring workers write it: what :class:`serve.triage.export.OutcomePusher`
    needs of a store (``append``), done by :meth:`ScoringPool.append`."""

    def __init__(self, pool: ScoringPool):
        self.pool = pool

    def append(self, lines: pd.DataFrame) -> int:
        """Append ``lines`` in a scoring worker; returns the lines added or changed."""
        return self.pool.append(lines)
