"""``misdeclare simulate`` end to end, small: four weeks of the loop through the product, two policies,
a new cover code and a new hub opening in week 1."""

from __future__ import annotations

import json
from datetime import date, timedelta

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
headline: new_cover
shifts:
  new_cover: {kind: new_cover, cover: aluminium_ingots, week: 1}
  new_hub: {kind: new_route, route: vn_sea, week: 1}
  abandoned_route: {kind: abandoned_route, route: mx_road, week: 2}
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
        assert {w["retrain"]["action"] for w in policy["weekly"]} <= {"promote", "keep", "skipped"}
        # Every retrain of this world compares (none is skipped), and the challenger learns nothing
        # from the window it is compared on, nor from the label delay and its own validation period
        # before it: at the end of week w the window is the 21 days before the 7 whose outcomes are
        # not known yet, and the challenger's lines end 7 days (the label delay) + 3 days (its
        # validation period: the last 10 % of the 21 days it may use, to whole days) + 7 days (the
        # gap before it) earlier. (On the default world the same adds up to 83 days: README.)
        loop_start = date.fromisoformat(document["settings"]["loop_start"])
        for week in policy["weekly"]:
            end = loop_start + timedelta(weeks=week["week"] + 1)
            assert week["retrain"]["action"] in ("promote", "keep"), week["retrain"]
            assert week["retrain"]["compared_from"] == str(end - timedelta(days=28))
            assert week["retrain"]["trained_until"] == str(end - timedelta(days=45))
        # The new hub's fraud looks like the fraud the champion knows (goods evidence): found in the
        # week the hub opens by the model alone (measured: 0.86 of it in its first 2 weeks).
        assert policy["shifts"]["new_hub"]["first_caught_week"] == 1
        assert policy["shifts"]["new_hub"]["recall_first_2_weeks"] > 0.6
    # The new cover's fraud looks legitimate: the model alone finds none of it (measured 0 of 73
    # lines in weeks 1-3); the random checks find some (measured 8 of 73, 2 of 19 in week 2).
    found = {
        label: sum(w["shifts"]["new_cover"]["new_fraud_found"] for w in p["weekly"]) for label, p in document["policies"].items()
    }
    assert sum(w["shifts"]["new_cover"]["new_fraud"] for w in none["weekly"]) > 50
    assert found["0"] == 0 and none["first_caught_week"] is None
    assert found["0.2"] >= 4 and explored["first_caught_week"] is not None
    # round(20 * 0.2) = 4 random checks per port and day, none without exploration.
    assert [w["random_checks"] for w in explored["weekly"]] == [7 * PORTS * 4] * 4
    assert [w["random_checks"] for w in none["weekly"]] == [0] * 4
    # Random checks hit far less often than the model's picks (measured: 0.15-0.31 against
    # 0.37-0.78, the smallest weekly gap 0.22) ...
    for with_checks, without in zip(explored["weekly"], none["weekly"], strict=True):
        assert with_checks["hit_rate"] < without["hit_rate"] - 0.15
    # ... and estimate the prevalence (measured 2 % off over the 4 weeks); without them, no estimate.
    assert explored["prevalence_estimate_error"] < 0.25
    assert none["prevalence_estimate_error"] is None
    assert (mlflow_workdir / "sim" / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((mlflow_workdir / "sim" / "simulation.json").read_text())["policies"].keys() == {"0", "0.2"}
    client = MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(document["mlflow_run_id"], "simulation")}
    assert artifacts == {"simulation/recall.png", "simulation/simulation.json"}
    metrics = client.get_run(document["mlflow_run_id"]).data.metrics
    assert metrics["exploration_0.2_prevalence_estimate_error"] == pytest.approx(explored["prevalence_estimate_error"])
