"""``misdeclare simulate``: the learning loop run week by week through a shift (see :mod:`serve.simulate`).

Registered on the app in :mod:`serve.cli` with ``app.command()(simulate)``; the domain code is
imported only when the command runs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from serve.cli_common import console, errors, friendly_errors

DEFAULT_EXPLORATION = "0,0.05,0.1,0.2"


def _shares(text: str) -> list[tuple[str, float]]:
    """``"0,0.05"`` -> [("0", 0.0), ("0.05", 0.05)]: each share as written and as a number."""
    shares = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise typer.BadParameter(f"each share must be a number in [0, 1], got {part!r}", param_hint="--exploration") from None
        if not 0 <= value <= 1:
            raise typer.BadParameter(f"each share must be in [0, 1], got {part!r}", param_hint="--exploration")
        shares.append((part, value))
    if len({label for label, _ in shares}) != len(shares):
        raise typer.BadParameter(f"shares must differ, got {text!r}", param_hint="--exploration")
    return shares


@friendly_errors
def simulate(
    weeks: Annotated[int, typer.Option("--weeks", help="Weeks of loop after the labelled history.")] = 52,
    exploration: Annotated[
        str, typer.Option("--exploration", help="Comma-separated exploration shares of the daily capacity, one policy each.")
    ] = DEFAULT_EXPLORATION,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world (the same for every policy).")] = 0,
    world: Annotated[
        str | None,
        typer.Option("--world", help="A held-out world of training/data/worlds.yaml (held-out-<i>) instead of the default."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the document as one JSON object on stdout.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder for simulation.json and recall.png.")] = Path("simulation"),
    lines_per_week: Annotated[
        int | None, typer.Option("--lines-per-week", help="Lines arriving per week (default from training/data/simulate.yaml).")
    ] = None,
    settings_file: Annotated[Path | None, typer.Option("--settings", help="YAML replacing training/data/simulate.yaml.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML overriding training settings.")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Policies run at once, in worker processes.")] = 2,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI.")
    ] = None,
) -> None:
    """Run the learning loop (scoring, triage queue with random checks, outcomes, weekly retrain) on a
    generated world whose fraud shifts (a new cover code, a new hub, an abandoned route), once per
    exploration share."""
    import matplotlib.pyplot as plt

    from serve.simulate import run_simulation
    from training.config import load_train_config
    from training.retrain import load_retrain_settings
    from training.simulate import load_simulation_settings, log_simulation, recall_figure, simulation_document

    if jobs < 1:
        raise typer.BadParameter(f"must be >= 1, got {jobs}", param_hint="--jobs")
    shares = _shares(exploration)
    settings = load_simulation_settings(settings_file, weeks=weeks, seed=seed, lines_per_week=lines_per_week, world=world)
    threads = max(1, 2 // min(jobs, len(shares)))
    train_config = load_train_config(config, label_delay_days=settings.outcome_delay_days, num_threads=threads)
    retrain = load_retrain_settings(**{k: v for k, v in settings.retrain.items() if k != "train_weeks"})
    out.mkdir(parents=True, exist_ok=True)
    workspace = Path(tempfile.mkdtemp(prefix=".simulate-", dir=out))
    try:
        with errors.status(f"simulating {weeks} weeks x {len(shares)} policies..."):
            runs = run_simulation(settings, [v for _, v in shares], workspace, train_config, retrain, jobs)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    document = simulation_document(settings, runs, [label for label, _ in shares])
    figure = recall_figure(document)
    figure.savefig(out / "recall.png", dpi=120)
    plt.close(figure)
    document["mlflow_run_id"] = log_simulation(document, out / "recall.png", tracking_uri)
    (out / "simulation.json").write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(document))
        return
    print_simulation(document, out)


def print_simulation(document: dict, out: Path) -> None:
    """One row per policy: the headline numbers."""
    from rich.table import Table

    settings = document["settings"]
    shifts = ", ".join(f"{name} week {shift['week']}" for name, shift in settings["shifts"].items())
    table = Table(title=f"learning loop on world {settings['world']}: {shifts}; headline {settings['headline']}")
    for column in (
        "exploration",
        "first caught (week)",
        "recall in its first 2 weeks",
        "new-fraud recall after 3 retrains",
        "mean recall at capacity",
        "mean hit rate",
        "prevalence error (13 weeks)",
        "minutes",
    ):
        table.add_column(column, justify="right")
    for label, policy in document["policies"].items():
        weekly = policy["weekly"]
        recall = [w["recall_at_capacity"] for w in weekly if w["recall_at_capacity"] is not None]
        hits = [w["hit_rate"] for w in weekly if w["hit_rate"] is not None]
        table.add_row(
            label,
            _text(policy["first_caught_week"]),
            _text(policy["recall_first_2_weeks"]),
            _text(policy["new_fraud_recall_after_3_retrains"]),
            _text(sum(recall) / len(recall) if recall else None),
            _text(sum(hits) / len(hits) if hits else None),
            _text(policy["prevalence_estimate_error"]),
            f"{policy['seconds'] / 60:.1f}",
        )
    console.print(table)
    console.print(f"wrote {out / 'simulation.json'} and {out / 'recall.png'}; MLflow run {document['mlflow_run_id']}")


def _text(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
