"""``misdeclare --help`` answers without loading the heavy libraries the commands use.

Start-up time is measured by ``make bench``; this test checks its cause, deterministically: which
modules importing the CLI loads.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = (
    "pandas",
    "numpy",
    "lightgbm",
    "sklearn",
    "mlflow",
    "matplotlib",
    "pyarrow",
    "duckdb",
    "sqlalchemy",
    "pandera",
    "fastapi",
    "scipy",
    "pyspark",
)


def test_the_cli_and_its_help_load_none_of_the_heavy_libraries():
    code = (
        "import sys; from typer.testing import CliRunner; from serve.cli import app; "
        "result = CliRunner().invoke(app, ['--help']); assert result.exit_code == 0, result.output; "
        f"import json; print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == []
