"""serve/batch.py: pass 3 ranks whole days a group at a time (the groups, exactly); workers hold DuckDB small."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from features.history_store import limit_engine_memory
from serve.batch import WORKER_DUCKDB_MEMORY_LIMIT, day_groups


def test_days_are_grouped_in_order_up_to_the_line_budget():
    days = np.array([5, 3, 3, 4, 9, 5, 5, 3, 10, 10])  # 3: 3 lines, 4: 1, 5: 3, 9: 1, 10: 2

    assert day_groups(days, 4) == [(3, 4), (5, 9), (10, 10)]
    assert day_groups(days, 10) == [(3, 10)]


def test_a_day_larger_than_the_budget_is_a_group_of_its_own():
    days = np.array([1, 2, 2, 2, 2, 3])

    assert day_groups(days, 2) == [(1, 1), (2, 2), (3, 3)]
    assert day_groups(days, 1) == [(1, 1), (2, 2), (3, 3)]


def test_no_days_no_groups_and_the_budget_is_checked():
    assert day_groups(np.array([], dtype="int32"), 5) == []
    with pytest.raises(ValueError, match="group_lines must be >= 1, got 0"):
        day_groups(np.array([1]), 0)


def test_a_batch_worker_starts_with_duckdb_held_to_the_worker_limit():
    # In a process of its own: the DuckDB instance and its limit belong to the process.
    script = (
        "import os; from features.history_store import _Engine; from serve.batch import _start_worker; "
        "_start_worker(os.getppid()); "
        "print(_Engine.of_this_process().database.sql(\"SELECT current_setting('memory_limit')\").fetchall()[0][0])"
    )

    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()

    assert WORKER_DUCKDB_MEMORY_LIMIT == "128MB"
    assert shown == "122.0 MiB"  # DuckDB shows 128 MB (10^6 bytes) in MiB


def test_a_limit_duckdb_does_not_read_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"limit must be a memory size such as '128MB', got 'lots'"):
        limit_engine_memory("lots")
