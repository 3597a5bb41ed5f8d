"""Population stability index (PSI) of the model's features and score between two sets of lines.

The reference is the data a model learned from, the current set a recent batch. Each feature is
binned on the reference: numeric features into ``bins`` equal-count bins (edges at the reference
quantiles, ties merged) plus a bin for missing values, categorical features one bin per category
seen on either side plus missing. With ``r`` and ``c`` the reference and current shares of a bin,

    PSI = sum over bins of (c - r) * ln(c / r),

where an empty bin counts as ``floor`` (the log of 0 is undefined). Below ``watch`` a feature is
stable, from ``watch`` it is to be watched, from ``alert`` it has moved enough to question the
model (the customary 0.1 / 0.25, set in ``training/data/retrain.yaml``).

Features are computed by the model's own fitted pipeline and the score by
:func:`models.predict.score_frame`, so the report measures what the scorer sees. Feature groups in
``exclude_groups`` (by default ``timing``: days since an export-control date, which grow with the
calendar) are left out, as they drift by construction.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

STABLE, WATCH, ALERT = "stable", "watch", "alert"
SCORE = "risk_score"
MISSING = "<missing>"


@dataclass(frozen=True)
class DriftSettings:
    """PSI settings (see ``training/data/retrain.yaml``)."""

    bins: int = 10
    watch: float = 0.1
    alert: float = 0.25
    floor: float = 1e-4
    top_movers: int = 10
    exclude_groups: tuple[str, ...] = ("timing",)

    def __post_init__(self):
        object.__setattr__(self, "exclude_groups", tuple(self.exclude_groups))
        if self.bins < 2:
            raise ValueError(f"drift bins must be >= 2, got {self.bins}")
        if not 0 < self.watch < self.alert:
            raise ValueError(f"drift thresholds need 0 < watch < alert, got watch={self.watch}, alert={self.alert}")
        if not 0 < self.floor < 1:
            raise ValueError(f"drift floor must be in (0, 1), got {self.floor}")
        if self.top_movers < 1:
            raise ValueError(f"drift top_movers must be >= 1, got {self.top_movers}")

    def status(self, psi: float) -> str:
        """'alert', 'watch' or 'stable' for a PSI value."""
        if psi >= self.alert:
            return ALERT
        return WATCH if psi >= self.watch else STABLE


def psi_from_shares(reference: np.ndarray, current: np.ndarray, floor: float = 1e-4) -> float:
    """PSI of two share vectors over the same bins; shares below ``floor`` count as ``floor``."""
    r = np.maximum(np.asarray(reference, dtype="float64"), floor)
    c = np.maximum(np.asarray(current, dtype="float64"), floor)
    return float(np.sum((c - r) * np.log(c / r)))


def numeric_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges: the reference quantiles at 1/bins ... (bins-1)/bins, duplicates merged.

    Missing values are left out; a constant feature has one edge (two bins) and no reference
    values none (every finite value in one bin).
    """
    values = np.asarray(reference, dtype="float64")
    values = values[~np.isnan(values)]
    if values.size == 0:
        return np.array([], dtype="float64")
    return np.unique(np.quantile(values, np.arange(1, bins) / bins))


def numeric_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of the bins ``(-inf, e1], (e1, e2], ..., (ek, inf)`` and, last, of missing values."""
    values = np.asarray(values, dtype="float64")
    missing = np.isnan(values)
    counts = np.bincount(np.searchsorted(edges, values[~missing], side="left"), minlength=len(edges) + 1)
    counts = np.append(counts, missing.sum()).astype("float64")
    return counts / max(len(values), 1)


def numeric_psi(reference: np.ndarray, current: np.ndarray, settings: DriftSettings) -> float:
    """PSI of a numeric feature, binned on the reference."""
    edges = numeric_edges(reference, settings.bins)
    return psi_from_shares(numeric_shares(reference, edges), numeric_shares(current, edges), settings.floor)


def _as_labels(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), MISSING).astype(str)


def categorical_psi(reference: pd.Series, current: pd.Series, settings: DriftSettings) -> float:
    """PSI of a categorical feature: one bin per category on either side, missing as its own bin."""
    ref, cur = _as_labels(reference), _as_labels(current)
    categories = sorted(set(ref) | set(cur))
    ref_shares = ref.value_counts(normalize=True).reindex(categories, fill_value=0.0).to_numpy()
    cur_shares = cur.value_counts(normalize=True).reindex(categories, fill_value=0.0).to_numpy()
    return psi_from_shares(ref_shares, cur_shares, settings.floor)


def feature_psi(reference: pd.DataFrame, current: pd.DataFrame, categorical: list[str], settings: DriftSettings) -> pd.DataFrame:
    """PSI per column of two feature matrices, largest first.

    Returns
    -------
    DataFrame
        Columns ``feature``, ``kind`` (numeric / categorical), ``psi``, ``status``.
    """
    rows = []
    for column in reference.columns:
        if column in categorical:
            value, kind = categorical_psi(reference[column], current[column], settings), "categorical"
        else:
            value = numeric_psi(
                pd.to_numeric(reference[column], errors="coerce").to_numpy("float64", na_value=np.nan),
                pd.to_numeric(current[column], errors="coerce").to_numpy("float64", na_value=np.nan),
                settings,
            )
            kind = "numeric"
        rows.append({"feature": column, "kind": kind, "psi": value, "status": settings.status(value)})
    table = pd.DataFrame(rows, columns=["feature", "kind", "psi", "status"])
    return table.sort_values(["psi", "feature"], ascending=[False, True], kind="stable", ignore_index=True)


@dataclass
class DriftReport:
    """PSI of every model feature and of the score.

    Attributes
    ----------
    features : DataFrame
        ``feature, kind, psi, status``, largest PSI first.
    excluded : list of str
        Features of the excluded groups (not measured).
    score_psi : float
    settings : DriftSettings
    reference_lines, current_lines : int
    model_version : str
    """

    features: pd.DataFrame
    excluded: list[str]
    score_psi: float
    settings: DriftSettings
    reference_lines: int
    current_lines: int
    model_version: str

    @property
    def score_status(self) -> str:
        """Status of the score's PSI."""
        return self.settings.status(self.score_psi)

    @property
    def status(self) -> str:
        """The worst status of the score and every feature."""
        statuses = {self.score_status, *self.features["status"]}
        return ALERT if ALERT in statuses else WATCH if WATCH in statuses else STABLE

    def top_movers(self) -> pd.DataFrame:
        """The ``settings.top_movers`` features with the largest PSI."""
        return self.features.head(self.settings.top_movers)

    def to_dict(self) -> dict:
        """JSON-compatible document: settings, counts, the score's and every feature's PSI."""
        return {
            "model": self.model_version,
            "settings": {**asdict(self.settings), "exclude_groups": list(self.settings.exclude_groups)},
            "reference_lines": self.reference_lines,
            "current_lines": self.current_lines,
            "status": self.status,
            "score": {"psi": _finite(self.score_psi), "status": self.score_status},
            "top_movers": [row["feature"] for row in self.top_movers().to_dict("records")],
            "features": [{**row, "psi": _finite(row["psi"])} for row in self.features.to_dict("records")],
            "excluded": list(self.excluded),
        }

    def mlflow_metrics(self) -> dict[str, float]:
        """``drift_psi_score`` and ``drift_psi_<feature>`` (finite values only)."""
        metrics = {"drift_psi_score": self.score_psi}
        metrics.update({f"drift_psi_{row.feature}": row.psi for row in self.features.itertuples(index=False)})
        return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def drift_report(
    bundle,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    settings: DriftSettings,
    reference_past: pd.DataFrame | None = None,
    current_past: pd.DataFrame | None = None,
    num_threads: int = 2,
) -> DriftReport:
    """PSI of the bundle's model features and score between two sets of validated lines.

    Parameters
    ----------
    bundle : ModelBundle
        Its fitted pipeline builds the features, :func:`models.predict.score_frame` the score.
    reference, current : DataFrame
        Validated canonical lines (e.g. the training data and a recent batch).
    settings : DriftSettings
    reference_past, current_past : DataFrame, optional
        Lines seen before each set, for the history features.
    num_threads : int
        LightGBM threads.
    """
    from features.pipeline import transform_features
    from models.predict import score_frame

    if reference.empty or current.empty:
        raise ValueError("drift needs lines on both sides: the reference or the current set is empty")
    _, ref_X = transform_features(bundle.pipeline, reference, reference_past)
    _, cur_X = transform_features(bundle.pipeline, current, current_past)
    ref_score = score_frame(bundle, reference, explain="none", num_threads=num_threads, past=reference_past)
    cur_score = score_frame(bundle, current, explain="none", num_threads=num_threads, past=current_past)
    groups = bundle.spec.get("feature_groups", {})
    kept = [f for f in ref_X.columns if groups.get(f) not in settings.exclude_groups]
    return DriftReport(
        features=feature_psi(ref_X[kept], cur_X[kept], list(bundle.spec["categorical_features"]), settings),
        excluded=[f for f in ref_X.columns if f not in kept],
        score_psi=numeric_psi(ref_score[SCORE].to_numpy("float64"), cur_score[SCORE].to_numpy("float64"), settings),
        settings=settings,
        reference_lines=len(reference),
        current_lines=len(current),
        model_version=bundle.version,
    )


def log_drift(mlflow, report: DriftReport) -> None:
    """Log a report into the active MLflow run: metrics, ``drift_status`` tag, ``drift/drift.json``."""
    mlflow.log_metrics(report.mlflow_metrics())
    mlflow.set_tags({"drift_status": report.status, "drift_score_status": report.score_status})
    mlflow.log_text(json.dumps(report.to_dict(), indent=1), "drift/drift.json")


@dataclass
class DriftOutcome:
    """What ``misdeclare drift`` reports: the report, the data counts and the MLflow run."""

    report: DriftReport
    document: dict
    run_id: str


def read_valid_lines(path: str | Path) -> tuple[pd.DataFrame, int]:
    """Validated lines of a manifest file (labelled or not, scored or not) and the rows read."""
    from features.io import iter_manifest_chunks
    from features.schema import KeyHashes, validate_manifest

    seen = KeyHashes()
    valid, read = [], 0
    for chunk in iter_manifest_chunks(path):
        valid.append(validate_manifest(chunk, str(path), seen).valid)
        read += len(chunk)
    lines = pd.concat(valid, ignore_index=True)
    if lines.empty:
        raise ValueError(f"{path}: no valid lines to measure drift on")
    return lines, read


def drift_files(
    reference_path: str | Path,
    current_path: str | Path,
    model_uri: str,
    settings: DriftSettings,
    tracking_uri: str | None = None,
    current_past: pd.DataFrame | None = None,
    num_threads: int = 2,
) -> DriftOutcome:
    """Read both files, measure drift with the model at ``model_uri`` and log an MLflow run ("drift").

    The reference (training data) gets its history features from itself, as in training; the
    current batch from ``current_past`` (the history store), as when it was scored.
    """
    import mlflow

    from models.bundle import load_bundle
    from models.registry import resolve_tracking_uri
    from training.tracking import EXPERIMENT, data_fingerprint, git_commit

    bundle = load_bundle(model_uri, tracking_uri=tracking_uri)
    reference, reference_read = read_valid_lines(reference_path)
    current, current_read = read_valid_lines(current_path)
    report = drift_report(bundle, reference, current, settings, current_past=current_past, num_threads=num_threads)
    document = {
        **report.to_dict(),
        "reference_file": str(reference_path),
        "current_file": str(current_path),
        "reference_rows_read": reference_read,
        "current_rows_read": current_read,
    }
    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="drift") as run:
        mlflow.log_params({f"drift_{k}": v for k, v in asdict(settings).items() if k != "exclude_groups"})
        mlflow.log_param("drift_exclude_groups", ",".join(settings.exclude_groups))
        mlflow.set_tags(
            {
                "job": "drift",
                "model": bundle.version,
                "git_commit": git_commit(),
                "data_sha256": data_fingerprint([reference_path, current_path]),
                "data_files": f"{reference_path},{current_path}",
            }
        )
        log_drift(mlflow, report)
    document["mlflow_run_id"] = run.info.run_id
    return DriftOutcome(report, document, run.info.run_id)
