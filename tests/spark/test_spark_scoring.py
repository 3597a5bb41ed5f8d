"""The Spark engine through the CLI: a partitioned Parquet dataset in, the default engine's output
out, file-level errors as one line, and a killed job that leaves nothing under its target."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.history import HistoryColumns
from features.history_store import HistoryStore
from features.io import write_table
from models.bundle import load_bundle
from serve.batch import score_file
from serve.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def arriving(labelled_manifest) -> pd.DataFrame:
    from training.synthetic import arriving_lines

    return arriving_lines(labelled_manifest(6_000, seed=21, start="2026-03-01", end="2026-06-30"))


def test_a_hive_partitioned_parquet_dataset_scores_as_the_default_engine_scores_its_lines(
    spark, bundle_dir, arriving, tmp_path, monkeypatch
):
    monkeypatch.setenv("MISDECLARE_HISTORY_DIR", str(tmp_path / "history-spark"))
    month = pd.to_datetime(arriving["declared_at"]).dt.strftime("%Y-%m")
    dataset = tmp_path / "manifest"
    for value in sorted(month.unique()):
        folder = dataset / f"month={value}"
        folder.mkdir(parents=True)
        write_table(arriving[month == value], folder / "part-0.parquet")
    result = CliRunner().invoke(
        app, ["score", str(dataset), "--out", str(tmp_path / "scored"), "--model", str(bundle_dir), "--engine", "spark"]
    )
    assert result.exit_code == 0, result.output
    assert f"scored {len(arriving):,} of {len(arriving):,} lines" in result.output
    assert "quarantined 0 lines" in result.output

    # The default engine on the same lines, in the dataset's order (partitions sorted by path).
    ordered = pd.concat([arriving[month == value].assign(month=value) for value in sorted(month.unique())], ignore_index=True)
    write_table(ordered, tmp_path / "ordered.parquet")

    score_file(
        tmp_path / "ordered.parquet", tmp_path / "default.parquet", load_bundle(bundle_dir), history=HistoryStore(tmp_path / "h")
    )
    ours, theirs = pd.read_parquet(tmp_path / "default.parquet"), pd.read_parquet(tmp_path / "scored")
    assert list(theirs.columns) == list(ours.columns)  # the partition column is an input column
    np.testing.assert_allclose(theirs["risk_score"], ours["risk_score"], rtol=0, atol=1e-9)
    pd.testing.assert_frame_equal(theirs.drop(columns="risk_score"), ours.drop(columns="risk_score"), check_dtype=False)


def test_a_missing_required_column_stops_with_one_line_and_no_output(spark, bundle_dir, arriving, tmp_path):
    folder = tmp_path / "manifest"
    folder.mkdir()
    write_table(arriving.drop(columns=["hs_code"]).head(50), folder / "part-0.csv")
    result = CliRunner().invoke(
        app,
        ["score", str(folder), "--out", str(tmp_path / "scored"), "--model", str(bundle_dir), "--engine", "spark"],
    )
    assert result.exit_code == 1
    assert f"error: {folder}: missing required column 'hs_code'" in " ".join(result.output.split())
    assert not (tmp_path / "scored").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".scored")] == []


def test_the_master_option_needs_the_spark_engine(bundle_dir, tmp_path):
    result = CliRunner().invoke(app, ["score", "x.csv", "--out", str(tmp_path / "o.csv"), "--master", "local[2]"])
    assert result.exit_code != 0 and "only with --engine spark" in " ".join(result.output.split())


def test_history_columns_must_have_the_lines_index():
    columns = HistoryColumns(pd.DataFrame({"a": [1.0]}, index=[5]))
    with pytest.raises(ValueError, match="index of the lines"):
        columns.of(pd.DataFrame({"x": [1]}), ["a"])


def test_a_killed_job_leaves_nothing_under_its_target_and_the_next_run_cleans_up(spark, bundle_dir, arriving, tmp_path):
    folder = tmp_path / "manifest"
    folder.mkdir()
    for index in range(3):
        write_table(arriving.iloc[index::3], folder / f"part-{index}.parquet")
    out = tmp_path / "scored"
    command = [str(Path(sys.executable).with_name("misdeclare")), "score", str(folder), "--out", str(out)]
    command += ["--model", str(bundle_dir), "--engine", "spark", "--master", "local[1]"]
    env = {**os.environ, "MISDECLARE_HISTORY_DIR": str(tmp_path / "history")}
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any((tmp_path / p).exists() for p in os.listdir(tmp_path) if ".scored.parts-" in p):
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before it wrote anything"
        time.sleep(0.2)
    time.sleep(3)  # into the job: the validated rows are being written
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not out.exists() and not (tmp_path / "scored.quarantine.csv").exists()
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".scored.parts-")]
    assert left  # the killed run's work folder, named with its process id

    result = CliRunner().invoke(
        app,
        ["score", str(folder), "--out", str(out), "--model", str(bundle_dir), "--engine", "spark"],
        env={"MISDECLARE_HISTORY_DIR": str(tmp_path / "history-2")},
    )
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in left)
    assert len(pd.read_parquet(out)) == len(arriving)
