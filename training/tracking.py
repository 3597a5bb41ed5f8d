"""MLflow tracking of training runs: parameters, metrics, plots, provenance and the bundle.

``mlflow`` and ``matplotlib`` are imported inside the functions so that importing the training
code stays cheap.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from models.bundle import save_bundle
from models.registry import CHAMPION, alias_version, register_bundle, resolve_tracking_uri, set_alias

EXPERIMENT = "misdeclare"
_VERSIONED_LIBRARIES = ("lightgbm", "mlflow", "pandas", "numpy", "scikit-learn", "pyarrow", "pandera")


def data_fingerprint(paths: list[str | Path]) -> str:
    """SHA-256 over the bytes of the input files, in order (identifies the training data)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def git_commit() -> str:
    """The checkout's HEAD commit, or 'unknown' outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the model."""
    versions = {"python": platform.python_version()}
    for library in _VERSIONED_LIBRARIES:
        versions[library] = metadata.version(library)
    return versions


def pr_curve_figure(y_true: np.ndarray, scores: np.ndarray, rates):
    """Precision-recall curve of the test period, with the inspection rates marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    from training.metrics import precision_at_rate, recall_at_rate

    precision, recall, _ = precision_recall_curve(y_true, scores)
    figure, axis = plt.subplots(figsize=(6, 4.5))
    axis.plot(recall, precision, color="#1f4e79")
    for rate in rates:
        axis.scatter(recall_at_rate(y_true, scores, rate), precision_at_rate(y_true, scores, rate), zorder=3)
        axis.annotate(f"{rate:.0%}", (recall_at_rate(y_true, scores, rate), precision_at_rate(y_true, scores, rate)))
    axis.set(
        xlabel="recall",
        ylabel="precision",
        title="Test period: precision-recall (inspected lines)",
        xlim=(0, 1.02),
        ylim=(0, 1.02),
    )
    axis.grid(alpha=0.3)
    return figure


def calibration_figure(y_true: np.ndarray, scores: np.ndarray, bins: int = 10):
    """Reliability diagram: mean predicted risk vs. observed misdeclaration rate per quantile bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(y_true, scores, n_bins=bins, strategy="quantile")
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect")
    axis.plot(predicted, observed, marker="o", color="#1f4e79", label="model")
    axis.set(xlabel="predicted risk", ylabel="observed rate", title="Test period: calibration")
    axis.legend()
    axis.grid(alpha=0.3)
    return figure


def importance_figure(importance: pd.Series, top: int = 20):
    """Horizontal bar chart of the top features by gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = importance.head(top)[::-1]
    figure, axis = plt.subplots(figsize=(7, 0.3 * len(head) + 1.5))
    axis.barh(head.index, head.to_numpy(), color="#1f4e79")
    axis.set(xlabel="total gain", title="Feature importance")
    figure.tight_layout()
    return figure


def log_training_run(
    result, config, data_paths: list[str | Path], model_name: str, tracking_uri: str | None = None, run_name: str | None = None
) -> tuple[str, str, bool]:
    """Log a training run to MLflow and register its bundle.

    Returns
    -------
    run_id : str
    version : str
        The new model version.
    champion : bool
        Whether the alias ``champion`` was set on it (only when the model had none).
    """
    import mlflow

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=run_name) as run:
        mlflow.log_params({k: v for k, v in config.as_dict().items()})
        mlflow.log_params({f"period_{k}": v for k, v in result.split.boundaries.items()})
        mlflow.log_metrics({k: v for k, v in result.metrics.items() if np.isfinite(v)})
        mlflow.set_tags(
            {
                "data_sha256": data_fingerprint(data_paths),
                "data_files": ",".join(map(str, data_paths)),
                "git_commit": git_commit(),
                **{f"version_{k}": v for k, v in library_versions().items()},
            }
        )
        _log_figures(mlflow, result, config)
        with tempfile.TemporaryDirectory() as folder:
            manifest_sha = save_bundle(folder, result.booster, result.spec, result.commodity_booster)
            mlflow.log_artifacts(folder, artifact_path="bundle")
        mlflow.set_tag("bundle_manifest_sha256", manifest_sha)
        version = register_bundle(run.info.run_id, "bundle", model_name, manifest_sha, tracking_uri)
        champion = alias_version(model_name, CHAMPION, tracking_uri) is None
        if champion:
            set_alias(model_name, CHAMPION, version, tracking_uri)
        mlflow.set_tag("registered_version", f"{model_name}/{version}")
    return run.info.run_id, version, champion


def _log_figures(mlflow, result, config) -> None:
    import matplotlib.pyplot as plt

    y = result.test_scores["misdeclared"].to_numpy("int64")
    scores = result.test_scores["risk_score"].to_numpy()
    figures = {
        "pr_curve.png": pr_curve_figure(y, scores, config.inspection_rates),
        "feature_importance.png": importance_figure(result.importance),
    }
    if 0 < y.sum() < len(y):
        figures["calibration.png"] = calibration_figure(y, scores)
    for name, figure in figures.items():
        mlflow.log_figure(figure, f"plots/{name}")
        plt.close(figure)
    mlflow.log_text(result.importance.to_csv(header=["gain"]), "feature_importance.csv")
