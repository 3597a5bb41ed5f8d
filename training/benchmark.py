"""Public benchmark: the KCS synthetic import declarations, official split, the same pipeline.

The Korea Customs Service dataset (Jeong et al. 2022) comes as three files: train (2020), valid
(2021 Q1) and test (2021 Q2), every line inspected and labelled with ``Fraud``. This module reads
them through the declarative KCS mapping (:mod:`features.mapping`) and the canonical schema, trains
with :func:`training.train.train_model` on train (valid for early stopping and calibration) and
measures the test period.

No test outcome reaches a feature: :func:`~training.train.train_model` builds features with the
outcomes of every line outside the training period hidden, so validation and test lines enter the
party and goods-profile history as lines that were declared (their presence counts) but whose outcome
is unknown. Test labels are used only to measure (the leakage test flips them all and checks that no
test score changes).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.mapping import SchemaMapping, apply_mapping, load_mapping
from features.schema import REASON_COLUMN, validate_manifest
from training.config import TrainConfig
from training.metrics import ranking_metrics
from training.split import TimeSplit

KCS_FILES = {"train": "df_syn_train_eng.csv", "valid": "df_syn_valid_eng.csv", "test": "df_syn_test_eng.csv"}
KCS_DIR_ENV = "MISDECLARE_KCS_DIR"
KCS_MAPPING = "kcs"
BENCHMARK_RATES = (0.01, 0.05, 0.10)
# Jeong et al. 2022 (arXiv:2208.02484), test set, precision at 5 % and 10 % of lines inspected.
PAPER_PRECISION = {
    "LightGBM": {"precision_at_5pct": 0.762, "precision_at_10pct": 0.641},
    "XGBoost": {"precision_at_5pct": 0.675, "precision_at_10pct": 0.579},
    "CatBoost": {"precision_at_5pct": 0.621, "precision_at_10pct": 0.520},
    "Random forest": {"precision_at_5pct": 0.364, "precision_at_10pct": 0.339},
    "Logistic regression": {"precision_at_5pct": 0.258, "precision_at_10pct": 0.248},
}


@dataclass(frozen=True)
class KcsData:
    """The three KCS files mapped and validated.

    Attributes
    ----------
    lines : DataFrame
        Valid canonical lines of all periods (unique index), labels as published.
    periods : dict of str to Index
        Index of ``lines`` per period (train, valid, test).
    quarantine : dict of str to DataFrame
        Per period, the mapped rows that failed validation, with ``quarantine_reason``.
    rows_read : dict of str to int
    """

    lines: pd.DataFrame
    periods: dict[str, pd.Index]
    quarantine: dict[str, pd.DataFrame]
    rows_read: dict[str, int]


@dataclass
class BenchmarkResult:
    """Outcome of :func:`run_kcs_benchmark`.

    Attributes
    ----------
    metrics : dict
        Test metrics over every test line (quarantined ones ranked last): ``precision_at_{1,5,10}pct``,
        ``average_precision``, ``roc_auc``, ``recall_at_*``, ``lines``, ``positives``.
    valid_metrics : dict
        :func:`~training.train.train_model`'s metrics on the validation period's scored lines: what
        every choice was made on.
    lines : dict of str to int
        Valid lines per period.
    quarantined : dict of str to int
        Quarantined lines per period.
    quarantine_reasons : dict of str to int
        Count per quarantine reason, all periods.
    best_iteration : int
    settings : dict
        The training settings used.
    mapping : str
    rate : str
        The currency conversion the mapping states.
    seconds : float
    importance : dict
        Top features by gain.
    test_scores : DataFrame
        Per scored test line (index of the mapped lines): ``declaration_id``, ``risk_score`` and the
        label ``misdeclared``; not part of :meth:`as_dict`.
    """

    metrics: dict[str, float]
    valid_metrics: dict[str, float]
    lines: dict[str, int]
    quarantined: dict[str, int]
    quarantine_reasons: dict[str, int]
    best_iteration: int
    settings: dict
    mapping: str
    rate: str
    seconds: float
    importance: dict[str, float] = field(default_factory=dict)
    test_scores: pd.DataFrame | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        """JSON-compatible form, with the paper's numbers for comparison."""
        return {
            "dataset": "KCS synthetic import declarations (Jeong et al. 2022)",
            "metrics": self.metrics,
            "valid_metrics": self.valid_metrics,
            "lines": self.lines,
            "quarantined": self.quarantined,
            "quarantine_reasons": self.quarantine_reasons,
            "best_iteration": self.best_iteration,
            "settings": self.settings,
            "mapping": self.mapping,
            "rate": self.rate,
            "seconds": round(self.seconds, 1),
            "importance": self.importance,
            "paper": PAPER_PRECISION,
        }


def resolve_kcs_dir(data_dir: str | Path | None = None) -> Path:
    """The folder of the KCS files: the argument, else ``$MISDECLARE_KCS_DIR``, else ``../shared/data/kcs``.

    The default is looked up relative to the current directory and to the checkout holding this
    package (the data sits beside the repository, not inside it).

    Raises
    ------
    FileNotFoundError
        When no candidate folder holds the three files; the message lists where it looked.
    """
    if data_dir is None and os.environ.get(KCS_DIR_ENV):
        data_dir = os.environ[KCS_DIR_ENV]
    if data_dir is not None:
        candidates = [Path(data_dir)]
    else:
        relative = Path("..", "shared", "data", "kcs")
        found = [(Path.cwd() / relative).resolve(), (Path(__file__).resolve().parents[1] / relative).resolve()]
        candidates = list(dict.fromkeys(found))
    for candidate in candidates:
        if all((candidate / name).is_file() for name in KCS_FILES.values()):
            return candidate
    wanted = ", ".join(KCS_FILES.values())
    raise FileNotFoundError(
        f"KCS data not found: no folder among {', '.join(str(c) for c in candidates)} "
        f"holds {wanted} (set --data-dir or {KCS_DIR_ENV})"
    )


def read_kcs(data_dir: str | Path, mapping: SchemaMapping | None = None) -> KcsData:
    """Read, map and validate the three KCS files.

    Every column is read as text (HS codes and office codes have leading zeros).
    """
    mapping = mapping or load_mapping(KCS_MAPPING)
    frames, quarantine, rows_read = [], {}, {}
    offset = 0
    for period, name in KCS_FILES.items():
        raw = pd.read_csv(Path(data_dir) / name, dtype=str, keep_default_na=False, na_values=[""])
        raw.index = pd.RangeIndex(offset, offset + len(raw))
        offset += len(raw)
        result = validate_manifest(apply_mapping(raw, mapping, source=name), source=name)
        frames.append(result.valid.assign(period=period))
        quarantine[period], rows_read[period] = result.quarantine, len(raw)
    lines = pd.concat(frames)
    periods = {period: lines.index[lines["period"] == period] for period in KCS_FILES}
    return KcsData(lines=lines, periods=periods, quarantine=quarantine, rows_read=rows_read)


def official_split(lines: pd.DataFrame, periods: dict[str, pd.Index]) -> TimeSplit:
    """The dataset's own periods as a :class:`~training.split.TimeSplit` (no gaps: they are given)."""
    frames = {period: lines.loc[periods[period]] for period in ("train", "valid", "test")}
    dates = {period: pd.to_datetime(frame["declared_at"]) for period, frame in frames.items()}
    boundaries = {
        "train_start": dates["train"].min(),
        "train_end": dates["valid"].min(),
        "valid_start": dates["valid"].min(),
        "valid_end": dates["test"].min(),
        "test_start": dates["test"].min(),
        "test_end": dates["test"].max(),
    }
    return TimeSplit(**frames, boundaries={k: v.strftime("%Y-%m-%d") for k, v in boundaries.items()})


def period_metrics(y: np.ndarray, scores: np.ndarray, y_unscored: np.ndarray) -> dict[str, float]:
    """Ranking metrics over scored lines plus unscored (quarantined) lines ranked last.

    A quarantined line cannot be scored, so it is never chosen for inspection; it still counts in
    the number of lines (the inspection budget is a share of all lines) and among the positives.
    """
    floor = float(np.min(scores)) - 1.0 if len(scores) else 0.0
    all_y = np.concatenate([np.asarray(y, dtype="int64"), np.asarray(y_unscored, dtype="int64")])
    all_scores = np.concatenate([np.asarray(scores, dtype="float64"), np.full(len(y_unscored), floor)])
    return ranking_metrics(all_y, all_scores, BENCHMARK_RATES)


def run_kcs_benchmark(
    data_dir: str | Path | None = None, settings: TrainConfig | None = None, mapping: SchemaMapping | None = None
) -> BenchmarkResult:
    """Train on KCS train (+ valid for early stopping) and measure the test period.

    Parameters
    ----------
    data_dir : str or Path, optional
        Folder of the three KCS files (see :func:`resolve_kcs_dir`).
    settings : TrainConfig, optional
        Training settings; the defaults (``training/data/train.yaml``) when not given.
    mapping : SchemaMapping, optional
        The packaged KCS mapping by default.
    """
    from training.config import load_train_config
    from training.train import train_model

    started = time.perf_counter()
    mapping = mapping or load_mapping(KCS_MAPPING)
    settings = settings or load_train_config()
    data = read_kcs(resolve_kcs_dir(data_dir), mapping)
    # train_model computes features with every outcome outside the training period hidden (as a
    # history store would hold them when the model is trained), so test labels only measure.
    result = train_model(
        data.lines,
        settings,
        split=official_split(data.lines, data.periods),
        extra_categorical=mapping.extra_categorical,
        history_entities=mapping.history_entities,
    )
    scored = result.test_scores
    if len(scored) != len(data.periods["test"]):
        raise ValueError(f"{len(data.periods['test']) - len(scored)} valid test lines were not scored")
    unscored = data.quarantine["test"]["misdeclared"].astype("int64").to_numpy()
    metrics = period_metrics(scored["misdeclared"].to_numpy("int64"), scored["risk_score"].to_numpy(), unscored)
    valid_metrics = {k.removeprefix("valid_"): v for k, v in result.metrics.items() if k.startswith("valid_")}
    reasons = pd.concat(list(data.quarantine.values()))[REASON_COLUMN].value_counts()
    rate = "; ".join(f"{r.stated}, {r.as_of} ({r.source})" for r in mapping.rates)
    return BenchmarkResult(
        metrics=metrics,
        valid_metrics=valid_metrics,
        lines={period: len(index) for period, index in data.periods.items()},
        quarantined={period: len(frame) for period, frame in data.quarantine.items()},
        quarantine_reasons={str(k): int(v) for k, v in reasons.items()},
        best_iteration=int(result.booster.best_iteration),
        settings=settings.as_dict(),
        mapping=mapping.name,
        rate=rate,
        seconds=time.perf_counter() - started,
        importance={k: round(float(v), 1) for k, v in result.importance.head(15).items()},
        test_scores=scored[["declaration_id", "risk_score", "misdeclared"]],
    )
