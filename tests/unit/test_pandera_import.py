"""Validation does not import PySpark: pandera would load pandas-on-Spark whenever PySpark is installed."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pyspark") is None, reason="PySpark is not installed")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=True)


def test_the_schema_loads_pandera_without_pyspark_or_its_pandas_3_warning():
    code = (
        "import sys, json; import features.schema; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'pyspark')))"
    )
    result = _run(code)
    assert json.loads(result.stdout) == []
    assert result.stderr == ""


def test_pyspark_stays_importable_after_the_schema_and_before_it():
    after = _run("import features.schema; import pyspark.sql; print(pyspark.sql.SparkSession.__name__)")
    assert after.stdout.strip() == "SparkSession"
    before = _run(
        "import pyspark.sql, sys; import features.schema; "
        "print(features.schema.pa.DataFrameSchema.__name__, 'pyspark.pandas' in sys.modules)"
    )
    assert before.stdout.split() == ["DataFrameSchema", "False"]
