"""Hostile files (``hostile.py``) through the commands that read files: one clear error or every row accounted for.

For every generated file (``conftest.hostile_files``) and command, in-process through the CLI:

- either the command stops with exit code 1, one ``error:`` line naming the file, and no output;
- or it succeeds and every row written into the file is in exactly one of the output and the
  quarantine (``score``), or counted as new, already loaded or rejected (``triage load``);
- never a traceback.

``make test`` runs a few examples per command; ``make fuzz N=1000`` a thousand (``MISDECLARE_FUZZ_N``).
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hostile import FUZZ_EXAMPLES, ROW_MARKER, HostileFile, hostile_files
from hypothesis import HealthCheck, given, note, settings
from typer.testing import CliRunner

from serve.cli import app

pytestmark = pytest.mark.fuzz
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=FUZZ_EXAMPLES <= 50,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
csv.field_size_limit(10**9)  # the long-field mutation writes 200,000 characters


def _run(args: list[str]):
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"traceback from misdeclare {' '.join(args[:1])}") from result.exception
    return result


def _one_error_line(result, path: Path) -> None:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1, result.output
    assert len(errors) == 1 and path.name in errors[0], result.output


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, engine="python")


def _write(folder: Path, file: HostileFile) -> Path:
    """The file on disk; its mutations are noted for the report of a failing example (and the bytes
    kept in $MISDECLARE_FUZZ_FAILURES, when set, to replay it by hand)."""
    path = folder / file.name
    path.write_bytes(file.content)
    note(f"{file.name}, {file.rows} rows, mutations {file.mutations}")
    keep = os.environ.get("MISDECLARE_FUZZ_FAILURES")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / f"last-{file.name}").write_bytes(file.content)
    return path


@FUZZ
@given(file=hostile_files())
def test_score_accounts_for_every_row_or_stops_with_one_line(file, fuzz_bundle, mlflow_workdir):
    with tempfile.TemporaryDirectory(dir=mlflow_workdir) as folder:
        path = _write(Path(folder), file)
        out, quarantine = Path(folder) / "scored.csv", Path(folder) / "scored.quarantine.csv"
        result = _run(
            ["score", str(path), "--out", str(out), "--model", str(fuzz_bundle), "--history", str(Path(folder) / "history")]
        )
        if result.exit_code != 0:
            _one_error_line(result, path)
            assert not out.exists() and not quarantine.exists(), file.mutations
            return
        scored, held = _rows(out), _rows(quarantine)
        rows = sorted(int(r) for r in [*scored.get(ROW_MARKER, []), *held.get(ROW_MARKER, [])])
        assert rows == list(range(file.rows)), (file.mutations, len(scored), len(held))


@FUZZ
@given(file=hostile_files(scored=True))
def test_triage_load_counts_every_row_or_stops_with_one_line(file, mlflow_workdir, monkeypatch):
    with tempfile.TemporaryDirectory(dir=mlflow_workdir) as folder:
        database = Path(folder) / "triage.db"
        monkeypatch.setenv("MISDECLARE_DATABASE_URL", f"sqlite:///{database}")
        path = _write(Path(folder), file)
        result = _run(["triage", "load", str(path)])
        if result.exit_code != 0:
            _one_error_line(result, path)
            return
        counts = re.search(r"read (\d+), new (\d+), already loaded (\d+), rejected (\d+)", result.output)
        read, new, existing, rejected = (int(g) for g in counts.groups())
        assert read == file.rows and new + existing + rejected == read, (file.mutations, result.output)


@FUZZ
@given(file=hostile_files())
def test_drift_and_train_read_hostile_files_without_a_traceback(file, fuzz_bundle, mlflow_workdir, reference_file):
    with tempfile.TemporaryDirectory(dir=mlflow_workdir) as folder:
        path = _write(Path(folder), file)
        result = _run(["drift", str(reference_file), str(path), "--model", str(fuzz_bundle), "--json"])
        if result.exit_code != 0:
            _one_error_line(result, path)
        result = _run(["train", str(path), "--model-name", "fuzz", "--quarantine", str(Path(folder) / "q.csv")])
        if result.exit_code != 0:
            _one_error_line(result, path)
