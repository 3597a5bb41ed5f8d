"""Batch scoring of manifest files: streamed in chunks, every row accounted for, atomic output.

A line's channel is a quota of rank within its arrival day (:mod:`models.channels`), and a day may
span chunks of an unsorted file, so a file is scored in passes over a temporary folder beside the
output (removed on success and on failure):

1. **read**: each chunk is validated; invalid rows go to the quarantine file, valid lines to a
   Parquet part in the temporary folder and to the file's own history store there
   (:class:`features.history_store.FileHistory`); of each line only its day and key are kept, on
   disk beside the part (read back in pass 3);
2. **risk**: each part is scored (:func:`models.predict.score_risk`) with the history store plus
   every other line of the file as history, both read for the part's parties and flows only, so a
   line's features do not depend on how the file is sorted or cut into chunks; its derived features
   go to a second part file (writing and reading them back costs far less than recomputing the
   history features), and only risk, check and origin alert stay in memory (a few bytes a line);
3. **channels**: quotas per arrival day over the whole file, from day, risk and line key only
   (:func:`models.predict.assign_channels`), a group of whole days at a time;
4. **write**: each part again, with channel, suspected commodity and reasons
   (:func:`models.predict.finish_frame`), into the output file, which appears only when complete;
   then the file's lines join the history store, a part at a time (one transaction each: a
   transaction holding a whole file grew with it; a crash between parts leaves the store with the
   parts already added, and scoring the file again adds the rest without counting any line twice).

Passes 2 and 4 are per part, so with ``workers`` > 1 the parts are scored in that many worker
processes (joblib's loky backend), each with ``num_threads / workers`` LightGBM threads. A worker
loads the bundle from plain files written to the temporary folder (models are data: nothing is
pickled but parts' paths and small arrays) and reads the stores read-only; results come back in
part order, a few parts ahead at most, so the output does not depend on the number of workers.

Memory holds one chunk per process plus a few small arrays per line (risk, then channel; the days,
and one group of days' keys, only in pass 3, when no worker is alive); neither the store nor the
file is ever read whole.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from joblib import Parallel, delayed, parallel_config
from joblib.externals.loky import get_reusable_executor

from features.history import HISTORY_COLUMNS, HistoryFeatures
from features.history_store import FileHistory, HistoryStore, limit_engine_memory
from features.io import DEFAULT_CHUNK_ROWS, AtomicTableWriter, default_quarantine_path, file_format, iter_manifest_chunks
from features.pipeline import model_features
from features.schema import CANONICAL_COLUMNS, REASON_COLUMN, KeyHashes, validate_manifest
from models.bundle import ModelBundle, load_bundle_folder, save_bundle
from models.channels import channel_rates, quota_keys
from models.predict import OUTPUT_COLUMNS, RiskScores, assign_channels, finish_frame, needs_features, score_risk
from models.scope import DISGUISE, ORIGIN
from serve.processes import exit_with_parent, give_back_memory
from serve.report import BatchReport


@dataclass
class ScoreSummary:
    """Counts of a batch-scoring run: lines read = lines scored + lines quarantined."""

    output: Path
    quarantine: Path
    lines_read: int = 0
    lines_scored: int = 0
    lines_quarantined: int = 0
    channels: Counter = field(default_factory=Counter)
    checks: Counter = field(default_factory=Counter)
    seconds: float = 0.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_work(output: Path) -> list[Path]:
    """Remove what a killed run for ``output`` left beside it: its work folder and partial file.

    Both carry the writing process's id (``.scored.csv.parts-<pid>-*``, ``.scored.csv.partial-<pid>``);
    those of a process that no longer runs are removed, a running one's are left alone.

    Returns
    -------
    list of Path
        What was removed.
    """
    removed = []
    for path in output.parent.glob(f".{output.name}.part*-*"):
        match = re.match(rf"^\.{re.escape(output.name)}\.(?:parts|partial)-(\d+)", path.name)
        if match and not _pid_alive(int(match.group(1))):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _empty_like(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="string") for column in columns})


def extra_history_entities(bundle) -> tuple[str, ...]:
    """Party columns the bundle's history features read beyond those the store keeps."""
    return tuple(
        c
        for _, step in bundle.pipeline.steps
        if isinstance(step, HistoryFeatures)
        for c in step.extra_entities
        if c not in HISTORY_COLUMNS
    )


def _beside(part: Path, kind: str) -> Path:
    """The file of ``kind`` (``features``, ``keys``) kept beside a part: ``part-N`` -> ``kind-N``."""
    return part.with_name(part.name.replace("part-", f"{kind}-"))


def _read_rows(path: Path, mask: np.ndarray, batch_rows: int = 16_384) -> pd.DataFrame | None:
    """The rows of a Parquet file selected by ``mask``, read batch by batch (None when none are)."""
    if not mask.any():
        return None
    batches, start = [], 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        keep = mask[start : start + batch.num_rows]
        start += batch.num_rows
        if keep.any():
            batches.append(batch.filter(pa.array(keep)))
    return pa.Table.from_batches(batches).to_pandas()


@dataclass(frozen=True)
class _BundleFiles:
    """Where a worker finds the bundle: plain files written by :func:`save_bundle`, and its label."""

    directory: Path
    manifest_sha256: str
    version: str


@functools.lru_cache(maxsize=2)
def _worker_bundle(files: _BundleFiles) -> ModelBundle:
    """The bundle of ``files``, loaded (and verified) once per worker process."""
    return load_bundle_folder(files.directory, version=files.version, expected_manifest_sha256=files.manifest_sha256)


@dataclass(frozen=True)
class _PartRisk:
    """What the file keeps of a part between passes: 10 bytes a line."""

    risk: np.ndarray  # float64
    origin: np.ndarray  # bool: check "origin" (else "disguise")
    origin_alert: np.ndarray  # bool

    @classmethod
    def of(cls, scores: RiskScores) -> _PartRisk:
        return cls(scores.risk, np.asarray(scores.check == ORIGIN), scores.origin_alert)

    def scores(self) -> RiskScores:
        return RiskScores(self.risk, np.where(self.origin, ORIGIN, DISGUISE).astype(object), self.origin_alert)


# Lines ranked at once in pass 3 (a day is never split): ranking the keys of a 10M-line file at
# once took the command to 4.2 GiB.
CHANNEL_GROUP_LINES = 1_000_000
# DuckDB's memory in a worker, which only reads the stores: DuckDB keeps what its queries took, up
# to its limit (DUCKDB_MEMORY_LIMIT otherwise), from one part to the next.
WORKER_DUCKDB_MEMORY_LIMIT = "128MB"
# Channels of the whole file as one byte a line between passes 3 and 4.
_CHANNELS = np.array(["green", "yellow", "red"], dtype=object)


def day_groups(days: np.ndarray, group_lines: int) -> list[tuple[int, int]]:
    """Consecutive ranges of days, ``(first, last)`` inclusive, of at most ``group_lines`` lines each.

    A day is never split: a day of more lines than ``group_lines`` is a range of its own.
    """
    if group_lines < 1:
        raise ValueError(f"group_lines must be >= 1, got {group_lines}")
    unique, counts = np.unique(days, return_counts=True)
    groups: list[tuple[int, int]] = []
    start, size = 0, 0
    for index, count in enumerate(counts.tolist()):
        if size and size + count > group_lines:
            groups.append((int(unique[start]), int(unique[index - 1])))
            start, size = index, 0
        size += count
    if len(unique):
        groups.append((int(unique[start]), int(unique[-1])))
    return groups


def _channel_codes(parts: list[Path], risks: list[_PartRisk], rates: dict[str, float], group_lines: int) -> np.ndarray:
    """Pass 3: the channel of every line of the file (0 green, 1 yellow, 2 red), in part order.

    Quotas are per arrival day over the whole file (:func:`models.predict.assign_channels`), and a
    day's lines may be in any part, so the days are ranked a group at a time (:func:`day_groups`),
    each group's keys read from the parts that hold its lines: memory follows the group, not the
    file.
    """
    if not parts:  # every row quarantined
        return np.zeros(0, dtype="int8")
    days = [pq.read_table(_beside(part, "keys"), columns=["day"]).column("day").to_numpy() for part in parts]
    starts = np.cumsum([0] + [len(part_days) for part_days in days])
    risk, origin, alert = (np.concatenate([getattr(r, name) for r in risks]) for name in ("risk", "origin", "origin_alert"))
    codes = np.zeros(int(starts[-1]), dtype="int8")
    for first, last in day_groups(np.concatenate(days), group_lines):
        keys, positions = [], []
        for part, part_days, start in zip(parts, days, starts, strict=False):
            inside = (part_days >= first) & (part_days <= last)
            if inside.any():
                keys.append(pq.read_table(_beside(part, "keys")).filter(pa.array(inside)))
                positions.append(start + np.flatnonzero(inside))
        where = np.concatenate(positions)
        scores = _PartRisk(risk[where], origin[where], alert[where]).scores()
        channels = assign_channels(pa.concat_tables(keys).to_pandas(), scores, rates)
        codes[where] = np.select([channels == "red", channels == "yellow"], [2, 1], 0)
    return codes


def _start_worker(parent: int) -> None:
    """Set up a worker process: it ends with ``parent`` and its DuckDB keeps little between reads."""
    exit_with_parent(parent)
    limit_engine_memory(WORKER_DUCKDB_MEMORY_LIMIT)


def _risk_part(model: ModelBundle | _BundleFiles, part: Path, past: FileHistory, num_threads: int) -> _PartRisk:
    """Pass 2 for one part: risk and scope; derived features to disk beside the part."""
    bundle = _worker_bundle(model) if isinstance(model, _BundleFiles) else model
    risk = score_risk(bundle, pd.read_parquet(part), past, num_threads)
    risk.derived.to_parquet(_beside(part, "features"), index=False)
    kept = _PartRisk.of(risk)
    del risk
    give_back_memory()
    return kept


def _finish_part(
    model: ModelBundle | _BundleFiles, part: Path, kept: _PartRisk, channel_codes: np.ndarray, explain: str, num_threads: int
) -> pd.DataFrame:
    """Pass 4 for one part: the output rows, in input order; only the needed lines' features are read."""
    bundle = _worker_bundle(model) if isinstance(model, _BundleFiles) else model
    risk, channels = kept.scores(), _CHANNELS[channel_codes]
    lines = pd.read_parquet(part)
    needed = needs_features(channels, explain)
    derived = _read_rows(_beside(part, "features"), needed)
    with_features = RiskScores(
        risk.risk[needed],
        risk.check[needed],
        risk.origin_alert[needed],
        derived,
        None if derived is None else derived[model_features(bundle.pipeline)],
    )
    finished = pd.concat(
        [
            finish_frame(bundle, lines[needed], with_features, channels[needed], explain, num_threads),
            finish_frame(bundle, lines[~needed], risk.take(~needed), channels[~needed], explain, num_threads),
        ]
    ).loc[lines.index]
    del lines, derived, with_features
    give_back_memory()
    return finished


def _stop_idle_workers(jobs: int) -> None:
    """Stop the loky workers once a pass is done, so that they free their memory (loky keeps idle
    workers for minutes; the next pass starts new ones)."""
    if jobs > 1:
        get_reusable_executor().shutdown(wait=True)


def _in_process(tasks):
    """Run ``delayed`` tasks here, one after the other (as ``Parallel(return_as="generator")`` would)."""
    return (function(*args, **kwargs) for function, args, kwargs in tasks)


def score_file(
    input_path: str | Path,
    output_path: str | Path,
    bundle,
    quarantine_path: str | Path | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    explain: str = "flagged",
    on_chunk: Callable[[int], None] | None = None,
    history: HistoryStore | None = None,
    num_threads: int = 2,
    report: BatchReport | None = None,
    workers: int = 1,
) -> ScoreSummary:
    """Score a manifest file into ``output_path``; invalid rows go to the quarantine file.

    Both files appear only when the whole input has been processed; a file-level error raises
    :class:`~features.schema.ManifestFileError` and leaves neither. The passes are described in the
    module docstring; channel quotas are per arrival day over the whole file.

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
        Called with the number of rows of each chunk read (progress bars).
    history : HistoryStore, optional
        Lines seen before, for the history features; the scored lines are appended to it once
        the output is complete. Without it, history comes from the file's own lines.
    num_threads : int
        LightGBM threads in all (shared by the workers).
    report : BatchReport, optional
        Counts every scored part and quarantined chunk (``--report``); the caller renders it.
    workers : int
        Processes scoring parts at once (passes 2 and 4); 1 scores in this process. The output is
        the same whatever the number.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    started = time.perf_counter()
    file_format(output_path)
    summary = ScoreSummary(Path(output_path), Path(quarantine_path or default_quarantine_path(output_path)))
    rates = channel_rates(bundle.spec)
    summary.output.parent.mkdir(parents=True, exist_ok=True)
    for target in (summary.output, summary.quarantine):
        remove_stale_work(target)
    workdir = Path(tempfile.mkdtemp(prefix=f".{summary.output.name}.parts-{os.getpid()}-", dir=summary.output.parent))
    try:
        with (
            AtomicTableWriter(summary.output) as scored,
            AtomicTableWriter(summary.quarantine, people_facing=True) as quarantined,
        ):
            # Pass 1: validate; quarantine the invalid rows, park the valid lines in parts and add
            # them to the file's own history store; park what the day quotas need beside each part
            # (read back in pass 3, when no worker is alive: held through pass 2, the keys of a
            # 10M-line file took 0.45 GiB of the command's memory while the workers took theirs).
            seen_keys = KeyHashes()
            input_columns: list[str] = []
            parts: list[Path] = []
            past = FileHistory(history, workdir / "file-history", extra_history_entities(bundle))
            for chunk in iter_manifest_chunks(input_path, chunk_rows):
                input_columns = list(chunk.columns)
                result = validate_manifest(chunk, str(input_path), seen_keys)
                if len(result.valid):
                    parts.append(workdir / f"part-{len(parts):06d}.parquet")
                    result.valid.to_parquet(parts[-1], index=False)
                    past.add(result.valid)
                    quota_keys(result.valid).to_parquet(_beside(parts[-1], "keys"), index=False)
                if len(result.quarantine):
                    quarantined.write(result.quarantine)
                    if report is not None:
                        report.add_quarantine(result.quarantine)
                summary.lines_read += len(chunk)
                summary.lines_scored += len(result.valid)
                summary.lines_quarantined += len(result.quarantine)
                if on_chunk is not None:
                    on_chunk(len(chunk))
            del seen_keys  # duplicates are found in pass 1 only (80 MB for 10M lines)
            give_back_memory()

            # Passes 2 and 4 run per part, in worker processes when there are several parts.
            jobs = max(1, min(workers, len(parts)))
            threads = max(1, num_threads // jobs)
            if jobs > 1:
                files = _BundleFiles(
                    workdir / "bundle",
                    save_bundle(workdir / "bundle", bundle.booster, bundle.spec, bundle.commodity_booster),
                    bundle.version,
                )
                # Each worker, from its start, ends when this process is gone: the workers of a command
                # killed outright lived on, idle, a model and a few hundred MB each, for good.
                with parallel_config(backend="loky", initializer=_start_worker, initargs=(os.getpid(),)):
                    run = Parallel(n_jobs=jobs, return_as="generator", max_nbytes=None)
                model, past = files, past.for_workers()
            else:
                run, model = _in_process, bundle

            # Pass 2: risk and scope per part; derived features to disk, small arrays in memory.
            risks = list(run(delayed(_risk_part)(model, part, past, threads) for part in parts))

            _stop_idle_workers(jobs)  # their memory is not needed while the quotas are assigned

            # Pass 3: quotas per arrival day over the whole file, a group of days at a time.
            codes = _channel_codes(parts, risks, rates, CHANNEL_GROUP_LINES)
            give_back_memory()  # what the ranking took is free heap, which pass 4's workers need
            starts = np.cumsum([0] + [len(r.risk) for r in risks])

            # Pass 4: channel, suspected commodity and reasons, written in input order; only the
            # features of the flagged (or explained) lines are read back.
            frames = run(
                delayed(_finish_part)(model, part, risk, codes[start : start + len(risk.risk)], explain, threads)
                for part, risk, start in zip(parts, risks, starts, strict=False)
            )
            for frame in frames:
                scored.write(frame)
                if report is not None:
                    report.add_scored(frame)
                summary.channels.update(frame["channel"].tolist())
                summary.checks.update(frame["check"].tolist())
            _stop_idle_workers(jobs)
            if scored.rows_written == 0:
                extras = [c for c in input_columns if c not in CANONICAL_COLUMNS]
                scored.write(_empty_like(list(CANONICAL_COLUMNS) + extras + list(OUTPUT_COLUMNS)))
            if quarantined.rows_written == 0:
                quarantined.write(_empty_like(input_columns + [REASON_COLUMN]))
        # The output is complete: the file's lines join the store (see the module docstring).
        if history is not None:
            for part in parts:
                history.append(pd.read_parquet(part, columns=list(HISTORY_COLUMNS)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary.seconds = time.perf_counter() - started
    return summary
