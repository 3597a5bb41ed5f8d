"""A scoring worker's lines reach the history store after its answer, and survive its death.

Real DuckDB stores in the test's folder; the dying worker is a real process killed with SIGKILL
while its append waits for the store (held by this test's own DuckDB connection).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from features.history_store import HistoryStore
from features.schema import validate_manifest
from serve.triage.append_behind import AppendBehind, append_orphans, spool_dir
from training.synthetic import generate_manifest

# A worker as the scoring pool has one: hands the lines of a Parquet file over, says so, and waits.
WORKER = """
import sys, time
import pandas as pd
from features.history_store import HistoryStore
from serve.triage.append_behind import AppendBehind
behind = AppendBehind(HistoryStore(sys.argv[1], lock_timeout=600)).open()
behind.hand_over(pd.read_parquet(sys.argv[2]))
print(behind.folder_.name, flush=True)
time.sleep(600)
"""


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    return validate_manifest(generate_manifest(600, 5, "2026-03-01", "2026-03-31")).valid


def test_lines_handed_over_are_stored_as_a_direct_append_stores_them(lines, tmp_path):
    direct, behind_store = HistoryStore(tmp_path / "direct"), HistoryStore(tmp_path / "behind")
    direct.append(lines.iloc[:300])
    direct.append(lines.iloc[200:])
    behind = AppendBehind(behind_store).open()

    behind.hand_over(lines.iloc[:300])
    behind.hand_over(lines.iloc[200:])  # waits for the first: the worker reads what it answered for
    behind.wait()

    assert len(behind_store) == 600
    pd.testing.assert_frame_equal(behind_store.read(), direct.read())
    assert behind.folder_ is not None and [p.name for p in behind.folder_.iterdir()] == ["owner"]


def test_a_worker_killed_before_its_append_loses_no_line(lines, tmp_path):
    store = HistoryStore(tmp_path / "history", lock_timeout=5)
    store.append(lines.iloc[:300])
    lines.iloc[300:].to_parquet(tmp_path / "request.parquet")

    held = duckdb.connect(str(store.path))  # the store is busy: the worker's append waits
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(store.directory), str(tmp_path / "request.parquet")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert worker.stdout is not None
    folder = spool_dir(store) / worker.stdout.readline().strip()  # handed over: it would answer now
    taken_while_alive = append_orphans(HistoryStore(store.directory, lock_timeout=0.1))
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    held.close()
    before = len(store)

    assert taken_while_alive == 0 and len(list(folder.glob("*.arrow"))) == 1
    assert before == 300
    assert append_orphans(store) == 300
    assert len(store) == 600 and not folder.exists()
    assert append_orphans(store) == 0  # taken once
