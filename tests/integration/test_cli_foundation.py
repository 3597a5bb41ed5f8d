"""The ``misdeclare`` CLI end to end: train (real MLflow sqlite store), register, score, errors.

Every command runs in a temporary working directory with its own MLflow store and history store,
so nothing is written into the repository. Training runs once per module (few boosting rounds);
the tests that need it are marked slow.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from features.io import read_manifest, write_table
from features.schema import CANONICAL_COLUMNS, LABEL_COLUMNS, REASON_COLUMN
from models.predict import OUTPUT_COLUMNS
from serve.cli import app

FAST_TRAINING = "max_rounds: 80\nearly_stopping_rounds: 15\ncommodity_rounds: 20\nnum_threads: 1\n"
runner = CliRunner()


def unlabelled(frame: pd.DataFrame) -> pd.DataFrame:
    """A manifest as it arrives for scoring: no labels, no simulation truth."""
    return frame.drop(columns=[c for c in frame.columns if c in LABEL_COLUMNS or c.startswith("sim_")])


def as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every value as text, so single cells can be broken the way a hand-edited CSV breaks them."""
    text = frame.copy()
    text["declared_at"] = pd.to_datetime(text["declared_at"]).dt.strftime("%Y-%m-%d")
    return text.astype("string")


def files_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ----------------------------------------------------------------------------- help


def _command_paths(command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and sub-command of the app (Typer groups carry ``commands``)."""
    paths = [prefix]
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            paths += _command_paths(sub, prefix + (name,))
    return paths


COMMAND_PATHS = _command_paths(typer.main.get_command(app))


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "misdeclare")
def test_help_works_on_every_command(path):
    result = runner.invoke(app, [*path, "--help"])

    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "Traceback" not in result.output


def test_the_foundation_commands_are_registered():
    assert {("generate",), ("train",), ("score",), ("demo",)} <= set(COMMAND_PATHS)


def test_console_script_runs():
    script = Path(sys.executable).parent / "misdeclare"

    result = subprocess.run([str(script), "score", "--help"], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert "--model" in result.stdout and "--out" in result.stdout


# ----------------------------------------------------------------------------- file-level errors


@pytest.fixture
def incoming(labelled_manifest) -> pd.DataFrame:
    """A later, unlabelled manifest of 1,500 lines."""
    return unlabelled(labelled_manifest(1_500, seed=5, start="2026-07-01", end="2026-09-30"))


@pytest.mark.parametrize("column", ["hs_code", "declared_value_usd"])
def test_missing_column_exits_with_one_line_naming_file_and_column_and_writes_nothing(
    mlflow_workdir, bundle_dir, incoming, column
):
    source = mlflow_workdir / "incoming.csv"
    write_table(incoming.drop(columns=[column]), source)
    out = mlflow_workdir / "out" / "scored.csv"

    result = runner.invoke(app, ["score", str(source), "--out", str(out), "--model", str(bundle_dir)])

    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {source}: missing required column '{column}'"]
    assert "Traceback" not in result.output
    assert not out.parent.exists() or files_in(out.parent) == set()
    assert files_in(mlflow_workdir) <= {"incoming.csv", "mlflow.db", "bundle", "out"}


def test_missing_input_file_exits_with_one_line(mlflow_workdir, bundle_dir):
    out = mlflow_workdir / "scored.csv"

    result = runner.invoke(app, ["score", "nowhere.csv", "--out", str(out), "--model", str(bundle_dir)])

    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == ["error: nowhere.csv: file not found"]
    assert not out.exists()


def test_a_plain_value_error_is_one_line_with_its_traceback_in_the_error_log(mlflow_workdir, bundle_dir, incoming):
    source = mlflow_workdir / "incoming.csv"
    write_table(incoming, source)

    result = runner.invoke(app, ["score", str(source), "--out", "scored.csv", "--model", str(bundle_dir), "--explain", "bogus"])

    log = mlflow_workdir / "misdeclare-errors.log"
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: explain must be one of ('flagged', 'red', 'all', 'none'), got 'bogus' (traceback in {log.name})"
    ]
    assert "Traceback (most recent call last)" in log.read_text() and "ValueError: explain must be one of" in log.read_text()


def test_tampered_bundle_folder_exits_with_one_line(mlflow_workdir, bundle_dir, incoming):
    source = mlflow_workdir / "incoming.csv"
    write_table(incoming, source)
    (bundle_dir / "feature_spec.json").write_text("{}")

    result = runner.invoke(app, ["score", str(source), "--out", "scored.csv", "--model", str(bundle_dir)])

    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {bundle_dir}: feature_spec.json was modified (SHA-256 mismatch); refusing to load"
    ]
    assert not (mlflow_workdir / "scored.csv").exists()


# ----------------------------------------------------------------------------- train, register, score


@dataclass
class Trained:
    folder: Path
    data: Path
    tracking_uri: str
    first: object
    second: object


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mlflow_template_db, labelled_manifest) -> Trained:
    """Two ``misdeclare train`` runs on the same 30k-line labelled file, in one MLflow store."""
    folder = tmp_path_factory.mktemp("cli-train")
    shutil.copy(mlflow_template_db, folder / "mlflow.db")
    data = folder / "labelled.csv"
    history = labelled_manifest(30_000, seed=11)
    write_table(history.drop(columns=[c for c in history.columns if c.startswith("sim_")]), data)
    config = folder / "fast.yaml"
    config.write_text(FAST_TRAINING, encoding="utf-8")
    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        patch.setenv("MISDECLARE_HISTORY_DIR", str(folder / "history"))
        first = runner.invoke(app, ["train", str(data), "--config", str(config)])
        second = runner.invoke(app, ["train", str(data), "--config", str(config)])
    return Trained(folder, data, tracking_uri, first, second)


@pytest.fixture
def scoring_dir(trained, tmp_path, monkeypatch) -> Path:
    """A working directory using the trained registry, with its own copy of the history store."""
    shutil.copytree(trained.folder / "history", tmp_path / "history")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained.tracking_uri)
    monkeypatch.setenv("MISDECLARE_HISTORY_DIR", str(tmp_path / "history"))
    return tmp_path


@pytest.mark.slow
def test_first_training_registers_version_1_as_champion_and_second_keeps_it(trained):
    from mlflow.tracking import MlflowClient

    assert trained.first.exit_code == 0, trained.first.output
    assert trained.second.exit_code == 0, trained.second.output
    assert "registered misdeclare version 1 and set as champion" in " ".join(trained.first.output.split())
    assert "registered misdeclare version 2 (champion unchanged)" in " ".join(trained.second.output.split())
    client = MlflowClient(tracking_uri=trained.tracking_uri, registry_uri=trained.tracking_uri)
    assert str(client.get_model_version_by_alias("misdeclare", "champion").version) == "1"
    versions = sorted(int(v.version) for v in client.search_model_versions("name='misdeclare'"))
    assert versions == [1, 2]


@pytest.mark.slow
def test_training_run_records_data_metrics_and_the_bundle_hash(trained):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=trained.tracking_uri, registry_uri=trained.tracking_uri)
    version = client.get_model_version("misdeclare", "1")
    run = client.get_run(version.run_id)

    assert run.data.tags["data_sha256"] == hashlib.sha256(trained.data.read_bytes()).hexdigest()
    assert version.tags["bundle_manifest_sha256"] == run.data.tags["bundle_manifest_sha256"]
    assert 0.0 <= run.data.metrics["test_average_precision"] <= 1.0
    assert (run.data.params["max_rounds"], run.data.params["num_threads"]) == ("80", "1")
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert artifacts == {"bundle/MANIFEST.json", "bundle/model.txt", "bundle/feature_spec.json", "bundle/commodity_model.txt"}
    # the artifact store holds no pickle: the bundle is data files only
    assert not list((trained.folder / "mlruns").rglob("*.pkl"))


@pytest.mark.slow
def test_score_with_the_champion(scoring_dir, incoming):
    raw = as_text(incoming)
    raw.loc[3, "gross_weight_kg"] = "abc"
    raw.loc[10, "origin_country"] = "CHN"
    source = scoring_dir / "incoming.csv"
    raw.to_csv(source, index=False)
    out = scoring_dir / "scored.csv"

    result = runner.invoke(app, ["score", str(source), "--out", str(out), "--model", "models:/misdeclare@champion"])

    assert result.exit_code == 0, result.output
    scored, quarantine = read_manifest(out), pd.read_csv(scoring_dir / "scored.quarantine.csv", dtype=str)
    assert len(scored) + len(quarantine) == len(raw)
    assert len(quarantine) == 2
    assert dict(zip(quarantine["declaration_id"], quarantine[REASON_COLUMN])) == {
        raw.loc[3, "declaration_id"]: "gross_weight_kg: unparseable number 'abc'",
        raw.loc[10, "declaration_id"]: "origin_country must be a two-letter country code, got 'CHN'",
    }
    assert set(raw.columns) <= set(scored.columns)
    assert list(scored.columns)[-len(OUTPUT_COLUMNS) :] == list(OUTPUT_COLUMNS)
    assert list(scored.columns)[: len(CANONICAL_COLUMNS)] == list(CANONICAL_COLUMNS)
    kept = raw.drop(index=[3, 10]).reset_index(drop=True)
    assert scored["declaration_id"].tolist() == kept["declaration_id"].tolist()
    assert scored["description"].fillna("").tolist() == kept["description"].fillna("").tolist()
    assert set(scored["model_version"]) == {"misdeclare/1"}
    risk = scored["risk_score"].astype(float)
    assert risk.between(0, 1).all()
    assert set(scored["channel"]) <= {"red", "yellow", "green"}
    flagged = scored["channel"] != "green"
    assert (scored.loc[flagged, "reasons"].fillna("") != "").all()
    assert (scored.loc[~flagged, "reasons"].fillna("") == "").all()
    assert (scored.loc[~flagged, "suspected_commodity"] == "none").all()
    assert f"scored {len(scored):,} of {len(raw):,} lines with misdeclare/1" in " ".join(result.output.split())


@pytest.mark.slow
def test_score_parquet_in_chunks_quarantines_a_duplicate_from_an_earlier_chunk(scoring_dir, incoming):
    frame = incoming.copy()
    frame.loc[1_200, ["declaration_id", "line_no"]] = frame.loc[5, ["declaration_id", "line_no"]].tolist()
    source = scoring_dir / "incoming.parquet"
    write_table(frame, source)
    out = scoring_dir / "scored.parquet"

    result = runner.invoke(
        app,
        ["score", str(source), "--out", str(out), "--chunk-rows", "500", "--model", "models:/misdeclare/2", "--explain", "none"],
    )

    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(out)
    quarantine = pd.read_csv(scoring_dir / "scored.quarantine.csv", dtype=str)
    assert len(scored) == len(frame) - 1
    assert quarantine[REASON_COLUMN].tolist() == ["duplicate (declaration_id, line_no)"]
    assert set(scored["model_version"]) == {"misdeclare/2"}
    assert (scored["reasons"].fillna("") == "").all()


@pytest.mark.slow
def test_file_level_error_with_a_registry_model_leaves_no_output(scoring_dir, incoming):
    source = scoring_dir / "incoming.csv"
    write_table(incoming.drop(columns=["origin_country"]), source)

    result = runner.invoke(app, ["score", str(source), "--out", "scored.csv"])

    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [f"error: {source}: missing required column 'origin_country'"]
    assert files_in(scoring_dir) == {"incoming.csv", "history"}


def test_score_without_a_registered_champion_is_one_line(mlflow_workdir, make_frame):
    from typer.testing import CliRunner

    make_frame({}).to_csv("in.csv", index=False)
    result = CliRunner().invoke(app, ["score", "in.csv", "--out", "out.csv"])
    assert result.exit_code == 1
    assert "models:/misdeclare@champion: not in the model registry" in result.output
    assert "Traceback" not in result.output and not (mlflow_workdir / "out.csv").exists()
