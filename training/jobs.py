"""Job entry points of training: read labelled files, train, log and register."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.history_store import HistoryStore
from features.io import default_quarantine_path, iter_manifest_chunks, write_table
from features.schema import KeyHashes, ManifestFileError, validate_manifest
from training.config import TrainConfig
from training.split import InsufficientDataError
from training.train import TrainResult, train_model

LABEL_REQUIRED = ("inspected", "misdeclared")


@dataclass
class LabelledData:
    """Validated lines of one or more labelled files, and the rows that failed validation."""

    lines: pd.DataFrame
    quarantine: pd.DataFrame
    lines_read: int


def read_labelled(paths: list[str | Path]) -> LabelledData:
    """Read and validate labelled manifest files; keys must be unique across all of them.

    Raises
    ------
    ManifestFileError
        A file-level problem, including a missing label column.
    """
    seen = KeyHashes()
    valid, quarantined, read = [], [], 0
    for path in paths:
        for chunk in iter_manifest_chunks(path):
            missing = [c for c in LABEL_REQUIRED if c not in chunk.columns]
            if missing:
                raise ManifestFileError(f"{path}: missing label column '{missing[0]}' (training needs labels)")
            result = validate_manifest(chunk, str(path), seen)
            valid.append(result.valid)
            quarantined.append(result.quarantine.assign(source_file=str(path)))
            read += len(chunk)
    lines = pd.concat(valid, ignore_index=True).sort_values(
        ["declared_at", "declaration_id", "line_no"], kind="stable", ignore_index=True
    )
    return LabelledData(lines, pd.concat(quarantined, ignore_index=True), read)


@dataclass
class TrainingOutcome:
    """What ``misdeclare train`` reports."""

    result: TrainResult
    data: LabelledData
    run_id: str
    version: str
    champion: bool
    quarantine_path: Path | None


def train_and_register(
    paths: list[str | Path],
    config: TrainConfig,
    model_name: str,
    tracking_uri: str | None = None,
    quarantine_path: str | Path | None = None,
    history: HistoryStore | None = None,
    history_of=None,
) -> TrainingOutcome:
    """Read, validate, train, log to MLflow and register a model version.

    Rows that fail validation are written to ``quarantine_path`` (default
    ``<first file stem>.quarantine.csv``) when there are any. The valid lines are added to the
    ``history`` store, so that scoring later files sees the parties met in training.
    ``history_of`` computes the training lines' history features elsewhere (see
    :func:`training.train.train_model`; ``train --engine spark``).
    """
    from training.tracking import log_training_run

    data = read_labelled(paths)
    written = None
    if len(data.quarantine):
        written = Path(quarantine_path or default_quarantine_path(paths[0]))
        write_table(data.quarantine, written, people_facing=True)
    files = ", ".join(str(p) for p in paths)
    if data.lines.empty:
        raise ManifestFileError(f"{files}: no valid line to train on ({len(data.quarantine):,} quarantined -> {written})")
    try:
        result = train_model(data.lines, config, history_of=history_of)
    except InsufficientDataError as exc:
        raise ManifestFileError(f"{files}: {exc}") from exc
    run_id, version, champion = log_training_run(result, config, paths, model_name, tracking_uri)
    if history is not None:
        history.append(data.lines)
    return TrainingOutcome(result, data, run_id, version, champion, written)
