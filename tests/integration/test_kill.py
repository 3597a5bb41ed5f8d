"""Crash safety: ``misdeclare score``, ``misdeclare triage load`` and ``misdeclare train`` killed (SIGKILL)
at moments spread over their run, then run again.

After each kill, no output file is visible unless it is complete; running the same command again
clears what the killed run left (its work folder, partial files), gives exactly the output of an
uninterrupted run, and a history store holding each scored line once with the same contents.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features.history_store import HistoryStore
from features.io import write_table
from features.schema import LABEL_COLUMNS

pytestmark = pytest.mark.slow
MISDECLARE = str(Path(sys.executable).with_name("misdeclare"))
KILL_POINTS = (0.05, 0.25, 0.45, 0.65, 0.85, 0.97)  # shares of an uninterrupted run's duration
KEY = ["declaration_id", "line_no"]


@pytest.fixture(scope="module")
def job(small_bundle, labelled_manifest, tmp_path_factory):
    """A model bundle folder, a 6,000-line manifest and the outcome of an uninterrupted run."""
    from models.bundle import save_bundle

    folder = tmp_path_factory.mktemp("kill")
    save_bundle(folder / "bundle", small_bundle["booster"], small_bundle["spec"], small_bundle["commodity_booster"])
    lines = labelled_manifest(6_000, seed=8, start="2026-07-01", end="2026-07-20")
    lines = lines.drop(columns=[c for c in lines.columns if c.startswith("sim_")] + list(LABEL_COLUMNS))
    write_table(lines.astype("string"), folder / "incoming.csv")
    started = time.monotonic()
    run = _score(folder, "reference")
    assert run.wait(timeout=300) == 0
    return folder, time.monotonic() - started


def _score(folder: Path, name: str, history: Path | None = None) -> subprocess.Popen:
    """``misdeclare score`` of the job's manifest into ``folder/name``, with its own history store or ``history``."""
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    command = [
        MISDECLARE,
        "score",
        str(folder / "incoming.csv"),
        "--out",
        str(out / "scored.csv"),
        "--model",
        str(folder / "bundle"),
        "--history",
        str(history or out / "history"),
        "--chunk-rows",
        "1000",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})


def _stored(folder: Path) -> pd.DataFrame:
    """The history store in ``folder``, sorted by line key."""
    lines = HistoryStore(folder / "history").read()
    return lines.sort_values(KEY, ignore_index=True)


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_killed_score_leaves_no_partial_output_and_its_rerun_equals_an_uninterrupted_run(job, point):
    folder, seconds = job
    name = f"killed-{point}"
    run = _score(folder, name)
    time.sleep(seconds * point)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    out = folder / name
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible in ([], ["history"], ["history", "scored.csv", "scored.quarantine.csv"]), visible
    if "scored.csv" in visible:  # the kill came after the output was complete: it must be whole
        assert (out / "scored.csv").read_bytes() == (folder / "reference" / "scored.csv").read_bytes()

    rerun = _score(folder, name)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # the killed run's work is cleared
    assert (out / "scored.csv").read_bytes() == (folder / "reference" / "scored.csv").read_bytes()
    assert (out / "scored.quarantine.csv").read_bytes() == (folder / "reference" / "scored.quarantine.csv").read_bytes()
    stored, reference = _stored(out), _stored(folder / "reference")
    assert not stored.duplicated(KEY).any()
    pd.testing.assert_frame_equal(stored, reference)


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from ``/proc``)."""
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while being read
            continue
        if int(fields[1]) == pid:
            children.add(int(stat.parent.name))
    return children


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:  # the process ended
        return ""


def _alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` still running (an ended process that nobody reaped yet is a zombie: not running)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def test_the_workers_of_a_killed_score_end_with_it(job):
    """A command killed outright cannot stop its worker processes: they watch it and end when it is
    gone (before, they lived on idle, a model and a few hundred MB each, until the machine restarted)."""
    folder, _ = job
    run = _score(folder, "killed-with-workers")
    workers: set[int] = set()
    while run.poll() is None and len(workers) < 2:  # two parts at least: one worker per core
        workers |= {pid for pid in _children(run.pid) if "loky" in _command_line(pid)}
        time.sleep(0.05)
    assert workers, "the run ended before it started worker processes"
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    deadline = time.monotonic() + 15
    while _alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(workers)


def test_only_the_work_of_processes_that_no_longer_run_is_removed(tmp_path):
    from serve.batch import remove_stale_work

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    output = tmp_path / "scored.csv"
    stale_dir, stale_file = tmp_path / f".scored.csv.parts-{dead.pid}-abc", tmp_path / f".scored.csv.partial-{dead.pid}"
    live_file, other = tmp_path / f".scored.csv.partial-{os.getpid()}", tmp_path / f".other.csv.partial-{dead.pid}"
    stale_dir.mkdir()
    (stale_dir / "part-000000.parquet").write_bytes(b"x")
    for path in (stale_file, live_file, other):
        path.write_bytes(b"x")
    assert sorted(remove_stale_work(output)) == sorted([stale_dir, stale_file])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live_file.name, other.name])


@pytest.fixture(scope="module")
def scored_batch(tmp_path_factory):
    """A scored batch of 40,000 lines and the time an uninterrupted load takes."""
    from serve.triage.synthetic import synthetic_scored_batch

    folder = tmp_path_factory.mktemp("kill-load")
    synthetic_scored_batch(40_000, seed=11).to_csv(folder / "batch.csv", index=False)
    started = time.monotonic()
    assert _load(folder, "reference").wait(timeout=300) == 0
    return folder, time.monotonic() - started


def _load(folder: Path, name: str) -> subprocess.Popen:
    database = folder / f"{name}.db"
    env = {**os.environ, "MISDECLARE_DATABASE_URL": f"sqlite:///{database}", "MISDECLARE_HISTORY_DIR": str(folder / name)}
    command = [MISDECLARE, "triage", "load", str(folder / "batch.csv"), "--date", "2026-07-01"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _queue(database: Path) -> tuple[list, pd.DataFrame]:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from serve.triage.db import Batch, Case, make_engine

    engine = make_engine(f"sqlite:///{database}")
    with Session(engine) as db:
        batches = [(b.source, b.n_read, b.n_inserted, b.n_rejected) for b in db.scalars(select(Batch))]
        cases = pd.read_sql(
            select(Case.declaration_id, Case.line_no, Case.channel, Case.risk_score, Case.queue_state).order_by(
                Case.declaration_id, Case.line_no
            ),
            db.connection(),
        )
    engine.dispose()
    return batches, cases


@pytest.mark.parametrize("point", KILL_POINTS[:4])
def test_a_killed_triage_load_leaves_nothing_and_its_rerun_equals_an_uninterrupted_load(scored_batch, point):
    folder, seconds = scored_batch
    name = f"killed-{point}"
    run = _load(folder, name)
    time.sleep(seconds * point)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    if (folder / f"{name}.db").exists():  # one transaction: all of the batch or none of it
        batches, cases = _queue(folder / f"{name}.db")
        assert (batches, len(cases)) in (([], 0), (_queue(folder / "reference.db")[0], 40_000))
    assert _load(folder, name).wait(timeout=300) == 0
    batches, cases = _queue(folder / f"{name}.db")
    reference_batches, reference_cases = _queue(folder / "reference.db")
    if len(batches) == 1:  # killed before its commit: the rerun did the whole load
        assert batches == reference_batches
    else:  # killed after its commit: the rerun found every line already there
        assert batches == [reference_batches[0], (*reference_batches[0][:2], 0, 0)]
    pd.testing.assert_frame_equal(cases.drop(columns="queue_state"), reference_cases.drop(columns="queue_state"))


def test_two_scorers_on_one_history_store_at_once_both_finish_and_store_each_line_once(job):
    folder, _ = job
    shared = folder / "shared"
    runs = [_score(folder, f"shared/{name}", history=shared / "history") for name in ("first", "second")]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    reference = (folder / "reference" / "scored.csv").read_bytes()
    # Each saw the store before or after the other's lines joined it; the lines are the same, so are the scores.
    assert [(shared / name / "scored.csv").read_bytes() == reference for name in ("first", "second")] == [True, True]
    pd.testing.assert_frame_equal(_stored(shared), _stored(folder / "reference"))


TRAIN_SETTINGS = "max_rounds: 80\nearly_stopping_rounds: 15\ncommodity_rounds: 20\nnum_threads: 1\n"


@pytest.fixture(scope="module")
def training_job(labelled_manifest, mlflow_template_db, tmp_path_factory):
    """A labelled file, fast training settings, and how long an uninterrupted ``misdeclare train`` takes."""
    import shutil

    folder = tmp_path_factory.mktemp("kill-train")
    lines = labelled_manifest(20_000, seed=12)
    write_table(lines.drop(columns=[c for c in lines.columns if c.startswith("sim_")]), folder / "labelled.csv")
    (folder / "fast.yaml").write_text(TRAIN_SETTINGS, encoding="utf-8")
    shutil.copy(mlflow_template_db, folder / "template.db")
    started = time.monotonic()
    assert _train(folder, "reference").wait(timeout=600) == 0
    return folder, time.monotonic() - started


def _train(folder: Path, name: str) -> subprocess.Popen:
    """``misdeclare train`` into the MLflow store ``folder/name/mlflow.db`` (a copy of the migrated template)."""
    import shutil

    out = folder / name
    if not out.exists():
        out.mkdir()
        shutil.copy(folder / "template.db", out / "mlflow.db")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}", "MISDECLARE_HISTORY_DIR": str(out / "history")}
    command = [MISDECLARE, "train", str(folder / "labelled.csv"), "--config", str(folder / "fast.yaml")]
    return subprocess.Popen(command, cwd=out, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


@pytest.mark.parametrize("point", (0.3, 0.6, 0.9, 0.98))
def test_a_killed_train_leaves_the_champion_unset_or_whole_and_its_rerun_registers_one(training_job, point):
    from models.bundle import load_bundle
    from models.registry import CHAMPION, alias_version

    folder, seconds = training_job
    name = f"killed-{point}"
    run = _train(folder, name)
    time.sleep(seconds * point)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    uri = f"sqlite:///{folder / name / 'mlflow.db'}"
    champion = alias_version("misdeclare", CHAMPION, uri)
    if champion is not None:  # set only once its version was whole: it loads and verifies
        assert load_bundle("models:/misdeclare@champion", tracking_uri=uri).version.endswith(f"/{champion}")
    rerun = _train(folder, name)
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read().decode()
    champion = alias_version("misdeclare", CHAMPION, uri)
    assert champion is not None
    bundle = load_bundle("models:/misdeclare@champion", tracking_uri=uri)
    reference = load_bundle("models:/misdeclare@champion", tracking_uri=f"sqlite:///{folder / 'reference' / 'mlflow.db'}")
    assert bundle.booster.model_to_string() == reference.booster.model_to_string()  # the same model as uninterrupted
