"""KCS public benchmark: the targets on the official test period, and no test label in any feature.

The slow tests need the KCS files (``../shared/data/kcs`` beside the checkout, or
``$MISDECLARE_KCS_DIR``) and are skipped only when that folder is missing.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from training.benchmark import (
    KCS_DIR_ENV,
    KCS_FILES,
    BenchmarkResult,
    official_split,
    period_metrics,
    resolve_kcs_dir,
    run_kcs_benchmark,
)


@pytest.fixture(scope="module")
def kcs_dir():
    try:
        return resolve_kcs_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def kcs_result(kcs_dir):
    """The benchmark exactly as ``misdeclare benchmark kcs`` runs it (default settings)."""
    return run_kcs_benchmark(kcs_dir)


# ----------------------------------------------------------------------------- fast: the helpers


def test_quarantined_lines_count_in_the_denominator_ranked_last():
    # 3 scored lines and 1 unscored positive; at 1 % of 4 lines, one line is inspected.
    metrics = period_metrics(np.array([1, 0, 1]), np.array([0.9, 0.1, 0.8]), np.array([1]))

    assert (metrics["lines"], metrics["positives"]) == (4.0, 3.0)
    assert metrics["precision_at_1pct"] == 1.0
    assert metrics["recall_at_1pct"] == pytest.approx(1 / 3)
    # Ranking 1, 1, 0, 1: the unscored positive comes after the negative.
    assert metrics["average_precision"] == pytest.approx((1 + 1 + 3 / 4) / 3)
    assert metrics["roc_auc"] == pytest.approx(2 / 3)


def test_official_split_keeps_the_published_periods():
    lines = pd.DataFrame(
        {"declared_at": pd.to_datetime(["2020-01-01", "2020-12-31", "2021-01-01", "2021-03-31", "2021-04-01", "2021-06-30"])},
        index=[10, 11, 12, 13, 14, 15],
    )
    periods = {"train": pd.Index([10, 11]), "valid": pd.Index([12, 13]), "test": pd.Index([14, 15])}

    split = official_split(lines, periods)

    assert (list(split.train.index), list(split.valid.index), list(split.test.index)) == ([10, 11], [12, 13], [14, 15])
    assert split.boundaries == {
        "train_start": "2020-01-01",
        "train_end": "2021-01-01",
        "valid_start": "2021-01-01",
        "valid_end": "2021-04-01",
        "test_start": "2021-04-01",
        "test_end": "2021-06-30",
    }


def test_data_dir_comes_from_the_argument_then_the_environment(tmp_path, monkeypatch):
    for name in KCS_FILES.values():
        (tmp_path / name).write_text("x\n", encoding="utf-8")
    monkeypatch.setenv(KCS_DIR_ENV, str(tmp_path))

    assert resolve_kcs_dir() == tmp_path
    with pytest.raises(FileNotFoundError) as error:
        resolve_kcs_dir(tmp_path / "missing")
    assert str(error.value) == (
        f"KCS data not found: no folder among {tmp_path / 'missing'} holds "
        "df_syn_train_eng.csv, df_syn_valid_eng.csv, df_syn_test_eng.csv "
        f"(set --data-dir or {KCS_DIR_ENV})"
    )


CANNED = BenchmarkResult(
    metrics={
        "lines": 8481.0,
        "positives": 1835.0,
        "precision_at_1pct": 1.0,
        "precision_at_5pct": 0.99,
        "precision_at_10pct": 0.98,
        "average_precision": 0.9,
        "roc_auc": 0.95,
        "brier": float("nan"),
    },
    valid_metrics={"precision_at_5pct": 0.99},
    lines={"train": 37100, "valid": 8079, "test": 8425},
    quarantined={"train": 285, "valid": 55, "test": 56},
    quarantine_reasons={"gross_weight_kg must be > 0, got 0.0": 396},
    best_iteration=93,
    settings={"seed": 42},
    mapping="kcs.yaml",
    rate="divide by 1180.0 (KRW per USD)",
    seconds=12.34,
)


def test_cli_prints_ours_beside_the_paper(monkeypatch):
    from serve.cli_benchmark import benchmark_app

    monkeypatch.setattr("training.benchmark.run_kcs_benchmark", lambda data_dir, settings: CANNED)
    result = CliRunner().invoke(benchmark_app, ["kcs"], env={"COLUMNS": "120"})

    assert result.exit_code == 0, result.output
    assert "read 54,000 KCS lines (train 37,385, valid 8,134, test 8,481)" in result.output
    assert "quarantined 396 (train 285, valid 55, test 56)" in result.output
    assert "│ precision at 5 %  │      0.990 │          0.762 │" in result.output
    assert "│ precision at 10 % │      0.980 │          0.641 │" in result.output
    assert "│ ROC-AUC           │      0.950 │            n/a │" in result.output


def test_cli_json_is_one_document_without_nan(monkeypatch):
    from serve.cli_benchmark import benchmark_app

    monkeypatch.setattr("training.benchmark.run_kcs_benchmark", lambda data_dir, settings: CANNED)
    result = CliRunner().invoke(benchmark_app, ["kcs", "--json"])

    document = json.loads(result.stdout)
    assert document["metrics"]["precision_at_5pct"] == 0.99 and document["metrics"]["brier"] is None
    assert document["paper"]["LightGBM"] == {"precision_at_5pct": 0.762, "precision_at_10pct": 0.641}
    assert document["seconds"] == 12.3 and document["quarantined"]["test"] == 56


def test_cli_missing_data_is_a_one_line_error(tmp_path):
    from serve.cli_benchmark import benchmark_app

    result = CliRunner().invoke(benchmark_app, ["kcs", "--data-dir", str(tmp_path)])

    assert result.exit_code == 1
    assert "error: KCS data not found" in result.stderr and "Traceback" not in result.output


# ----------------------------------------------------------------------------- slow: real data


@pytest.mark.slow
def test_kcs_benchmark_reaches_the_targets(kcs_result):
    metrics = kcs_result.metrics

    assert kcs_result.lines == {"train": 37100, "valid": 8079, "test": 8425}
    assert kcs_result.quarantined == {"train": 285, "valid": 55, "test": 56}
    assert (metrics["lines"], metrics["positives"]) == (8481.0, 1835.0)
    assert metrics["precision_at_5pct"] >= 0.95
    assert metrics["precision_at_10pct"] >= 0.92


def _flipped_copy(kcs_dir, folder):
    """The KCS files with every test label flipped (train and valid unchanged, byte for byte)."""
    folder.mkdir()
    for period, name in KCS_FILES.items():
        if period != "test":
            shutil.copyfile(kcs_dir / name, folder / name)
    test = pd.read_csv(kcs_dir / KCS_FILES["test"], dtype=str, keep_default_na=False)
    test["Fraud"] = test["Fraud"].map({"0": "1", "1": "0"})
    test["Critical Fraud"] = test["Critical Fraud"].map({"0": "2", "1": "0", "2": "1"})
    test.to_csv(folder / KCS_FILES["test"], index=False)
    return folder


@pytest.mark.slow
def test_flipping_every_test_label_changes_no_test_feature_and_no_score(kcs_dir, tmp_path, monkeypatch):
    import training.train
    from training.config import load_train_config

    captured = []
    real_transform = training.train.transform_features

    def spy(pipeline, lines, past=None):
        derived, X = real_transform(pipeline, lines, past)
        captured.append(X)
        return derived, X

    monkeypatch.setattr(training.train, "transform_features", spy)
    # Few rounds: what is compared is the features and the scores, not the quality.
    settings = load_train_config(max_rounds=20, early_stopping_rounds=10)
    original = run_kcs_benchmark(kcs_dir, settings)
    flipped_dir = _flipped_copy(kcs_dir, tmp_path / "flipped")
    flipped = run_kcs_benchmark(flipped_dir, settings)

    assert len(captured) == 2
    # Every feature of every line (test lines included) is the same whatever the test labels.
    pd.testing.assert_frame_equal(captured[0], captured[1])
    pd.testing.assert_series_equal(original.test_scores["risk_score"], flipped.test_scores["risk_score"])
    assert (original.test_scores["misdeclared"] != flipped.test_scores["misdeclared"]).all()
    assert original.best_iteration == flipped.best_iteration
