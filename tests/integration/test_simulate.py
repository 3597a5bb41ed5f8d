"""``misdeclare simulate`` end to end, small: four weeks of the loop through the product, two policies."""

from __future__ import annotations

import json

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from serve.cli import app

SMALL = """
start: "2025-01-06"
history_weeks: 8
weeks: 4
lines_per_week: 1500
daily_capacity: 20
outcome_delay_days: 7
retrain:
  comparison_window_days: 21
  slice_min_positives: 10
  train_weeks: 8
scenario: scenario_shifts.yaml
headline: new_hub
shifts:
  new_hub: {kind: new_route, route: vn_sea, week: 1}
  new_cover: {kind: new_cover, cover: aluminium_ingots, week: 2}
  abandoned_route: {kind: abandoned_route, route: mx_road, week: 3}
"""
PORTS = 6  # ports of discharge of the generated world, all busy every day


@pytest.mark.slow
def test_simulate_runs_the_loop_and_reports_every_policy(mlflow_workdir):
    settings = mlflow_workdir / "small.yaml"
    settings.write_text(SMALL, encoding="utf-8")
    result = CliRunner().invoke(
        app, ["simulate", "--weeks", "4", "--exploration", "0,0.2", "--settings", str(settings), "--out", "sim", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(document["policies"]) == ["0", "0.2"]
    none, explored = document["policies"]["0"], document["policies"]["0.2"]
    for policy in (none, explored):
        assert [w["week"] for w in policy["weekly"]] == [0, 1, 2, 3]
        assert policy["new_fraud_recall_after_3_retrains"] is None  # the loop ends before a third retrain
        assert policy["first_caught_week"] == 1  # the new route's fraud is found in the week it opens
        assert {w["retrain"]["action"] for w in policy["weekly"]} <= {"promote", "keep", "skipped"}
    # round(20 * 0.2) = 4 random checks per port and day, none without exploration.
    assert [w["random_checks"] for w in explored["weekly"]] == [7 * PORTS * 4] * 4
    assert [w["random_checks"] for w in none["weekly"]] == [0] * 4
    # Random checks hit far less often than the model's picks (measured: 0.21-0.33 against
    # 0.53-0.83, the smallest weekly gap 0.32) ...
    for with_checks, without in zip(explored["weekly"], none["weekly"], strict=True):
        assert with_checks["hit_rate"] < without["hit_rate"] - 0.2
    # ... and estimate the prevalence (measured 5 % off over the 4 weeks); without them, no estimate.
    assert explored["prevalence_estimate_error"] < 0.25
    assert none["prevalence_estimate_error"] is None
    assert (mlflow_workdir / "sim" / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((mlflow_workdir / "sim" / "simulation.json").read_text())["policies"].keys() == {"0", "0.2"}
    client = MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(document["mlflow_run_id"], "simulation")}
    assert artifacts == {"simulation/recall.png", "simulation/simulation.json"}
    metrics = client.get_run(document["mlflow_run_id"]).data.metrics
    assert metrics["exploration_0.2_prevalence_estimate_error"] == pytest.approx(explored["prevalence_estimate_error"])
