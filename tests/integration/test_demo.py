"""`misdeclare demo` end to end at a small size: trains on the training worlds, scores a held-out world."""

from __future__ import annotations

import json
import re
from collections import Counter

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.schema import CANONICAL_COLUMNS, LABEL_COLUMNS
from models.distribution import risk_counts

pytestmark = pytest.mark.slow


def test_the_demo_scores_a_held_out_world_and_says_what_the_channels_caught(mlflow_workdir):
    from serve.cli import app

    result = CliRunner().invoke(app, ["demo", "--rows", "60000", "--workdir", "demo"], env={"COLUMNS": "250"})

    assert result.exit_code == 0, result.output
    incoming = pd.read_csv(mlflow_workdir / "demo" / "incoming.csv", nrows=1)
    assert list(incoming.columns) == [c for c in CANONICAL_COLUMNS if c not in LABEL_COLUMNS]
    scored = pd.read_csv(mlflow_workdir / "demo" / "scored.csv", dtype={"declaration_id": "string"})
    truth = pd.read_csv(mlflow_workdir / "demo" / "incoming.truth.csv", dtype={"declaration_id": "string"})
    assert scored["declaration_id"].str.startswith("held-out-0-").all()
    frame = scored.merge(truth, on=["declaration_id", "line_no"], validate="one_to_one")
    red = frame["channel"] == "red"
    caught = int((red & (frame["sim_fraud"] == 1)).sum())
    printed = re.search(r"red: ([\d,]+) of ([\d,]+) lines .*?they hold ([\d,]+) of the ([\d,]+) disguised", result.output)
    assert printed is not None, result.output
    assert [int(g.replace(",", "")) for g in printed.groups()] == [
        int(red.sum()),
        len(frame),
        caught,
        int(frame["sim_fraud"].sum()),
    ]

    # The batch report counts the scored file, against the champion's validation window.
    html = (mlflow_workdir / "demo" / "report.html").read_text()
    counts = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1))
    by_channel = Counter()
    for key, count in counts["channels"].items():
        by_channel[key.rsplit("|", 1)[1]] += count
    assert by_channel == Counter(scored["channel"]) and counts["lines"] == len(scored)
    assert counts["risk"] == risk_counts(scored["risk_score"].to_numpy()).tolist()
    assert html.count('class="reference"') == len(counts["risk"])  # the champion's spec carries its validation shares
