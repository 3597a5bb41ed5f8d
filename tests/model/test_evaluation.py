"""Model test: on generated manifests the model beats the baseline rules on rolling windows.

Runs ``misdeclare evaluate --json`` end to end on synthetic data (a model trained per window, few
boosting rounds to stay fast) and checks the document it prints and the MLflow run it logs.

Two populations are measured. On the inspected lines (all that real data offer) and on every line
with the simulation's truth (what inspecting the top share of *all* lines would find), the model
must beat each baseline on average precision over the windows.

Precision at 5 % against the value rules is asserted on every line (simulation truth) and marked
as a strict expected failure on the inspected lines: the simulated inspections were targeted by a
rule of thumb led by "unit value outside the band" (generator.yaml, inspection), so those lines
over-represent exactly what the value rules flag, and the rules reach about 0.97-0.99 precision at
5 % there. (Before the model kept the goods evidence — history dropout, tenure unknown at the
history's start — the all-lines comparison did not hold either: over generator seeds 3-6 and
80k-150k rows the model's mean precision at 5 % on all lines ranged from 0.31 to 0.69 against the
best rule's 0.33 to 0.40; it now holds on this test's data, 2026-11-29.)
"""

from __future__ import annotations

import json
import shutil

import pytest

from training.baselines import BASELINES

N_ROWS = 80_000
SEED = 3
START, END = "2023-01-01", "2026-06-30"
# Few rounds keep four trainings fast; the comparison is about the approach, not the last point.
TRAIN_OVERRIDES = "max_rounds: 150\nearly_stopping_rounds: 20\ncommodity_rounds: 20\n"


@pytest.fixture(scope="module")
def document(tmp_path_factory, mlflow_template_db):
    """The ``--json`` document of one evaluation, shared by the tests (training four models is the cost)."""
    import typer
    from typer.testing import CliRunner

    from features.io import write_table
    from serve.cli_evaluate import evaluate
    from training.synthetic import generate_manifest

    folder = tmp_path_factory.mktemp("evaluate")
    shutil.copy(mlflow_template_db, folder / "mlflow.db")
    data = folder / "history.csv"
    write_table(generate_manifest(N_ROWS, SEED, START, END), data)
    (folder / "train.yaml").write_text(TRAIN_OVERRIDES, encoding="utf-8")
    app = typer.Typer()
    app.command()(evaluate)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        result = CliRunner().invoke(app, [str(data), "--config", str(folder / "train.yaml"), "--json"])
    assert result.exit_code == 0, result.output
    return {**json.loads(result.stdout), "tracking_uri": f"sqlite:///{folder / 'mlflow.db'}"}


_INSPECTED_FAVOUR_RULES = pytest.mark.xfail(
    strict=True,
    reason=(
        "on inspected lines the value rules are more precise at 5 %: the generator selects inspections by a "
        "unit-value rule, so the inspected lines favour those rules (see the module docstring)"
    ),
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("summary", "metric", "baselines"),
    [
        ("summary", "average_precision", tuple(BASELINES)),
        ("truth_summary", "average_precision", tuple(BASELINES)),
        ("truth_summary", "precision_at_5pct", ("random", "declared_value")),
        ("truth_summary", "precision_at_5pct", ("value_rule", "hub_value_rule")),
        ("summary", "precision_at_5pct", ("random", "declared_value")),
        pytest.param("summary", "precision_at_5pct", ("value_rule", "hub_value_rule"), marks=_INSPECTED_FAVOUR_RULES),
    ],
)
def test_model_beats_the_baselines_on_rolling_windows(document, summary, metric, baselines):
    assert document["mode"] == "rolling" and len(document["windows"]) == 4
    model = document[summary]["model"][metric]
    assert model["windows"] == 4, "a window had too few misdeclared lines to be measured"
    for baseline in baselines:
        other = document[summary][baseline][metric]
        assert model["mean"] > other["mean"], (baseline, model, other)


@pytest.mark.slow
def test_windows_train_only_on_earlier_outcomes(document):
    delay = document["settings"]["label_delay_days"]
    for window in document["windows"]:
        periods = window["model"]["periods"]
        # The model fits and stops on lines declared before the cut-off only (valid_end is exclusive);
        # it holds back no test period of its own: the window is its test.
        assert periods["train_end"] < periods["valid_start"] < periods["valid_end"] == window["train_end"]
        assert window["train_end"] < window["start"]
        gap = (_day(window["start"]) - _day(window["train_end"])).days
        assert gap == delay


@pytest.mark.slow
def test_synthetic_truth_slices_are_reported(document):
    assert document["populations"] == ["inspected", "truth"]
    slices = {(s["slice"], s["group"]): s for s in document["slices"] if s["population"] == "inspected"}
    assert {("disguise", "true_value"), ("disguise", "undervalued")} <= set(slices)
    assert {("shipper", "new"), ("shipper", "known"), ("route", "via_hub"), ("route", "no_hub")} <= set(slices)
    assert any(key[0] == "commodity" for key in slices) and any(key[0] == "cover_family" for key in slices)
    for entry in slices.values():
        if entry["metrics"] is None:
            assert entry["windows_measured"] == 0
        else:
            assert entry["windows_measured"] >= 1


@pytest.mark.slow
def test_run_holds_the_same_numbers(document):
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=document["tracking_uri"]).get_run(document["mlflow_run_id"])
    for scorer, who in (("model", "model"), *((b, f"baseline_{b}") for b in BASELINES)):
        for summary, prefix in (("summary", "eval_"), ("truth_summary", "eval_truth_")):
            value = document[summary][scorer]["precision_at_5pct"]
            assert run.data.metrics[f"{prefix}{who}_precision_at_5pct_mean"] == pytest.approx(value["mean"])
            assert run.data.metrics[f"{prefix}{who}_precision_at_5pct_sd"] == pytest.approx(value["sd"])


def _day(text: str):
    from datetime import date

    return date.fromisoformat(text)
