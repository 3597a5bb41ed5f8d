"""``misdeclare evaluate``: the model against baseline rules on rolling (prequential) windows.

Registered on the app in :mod:`serve.cli` with ``app.command()(evaluate)``. This module imports
:mod:`serve.cli` only when the command runs, so that ``serve.cli`` can import it at the top.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from serve.cli_common import console, errors, friendly_errors

METRIC_LABELS = {
    "average_precision": "average precision",
    "roc_auc": "ROC-AUC",
    "brier": "Brier score",
    "ece": "calibration error (ECE)",
}
CALIBRATION_METRICS = ("brier", "ece")


@friendly_errors
def evaluate(
    data: Annotated[
        list[Path] | None, typer.Argument(help="Labelled manifest file(s) (CSV or Parquet); not with --worlds.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Evaluate this fixed model (models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder) "
            "on the data after its validation period; by default a model is trained per window.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print every number as one JSON document on stdout.")] = False,
    windows: Annotated[int, typer.Option("--windows", help="Number of consecutive test windows.")] = 4,
    window_fraction: Annotated[
        float, typer.Option("--window-fraction", help="Length of each window as a share of the data's date range (rolling mode).")
    ] = 0.125,
    min_positives: Annotated[
        int, typer.Option("--min-positives", help="Misdeclared lines a window or slice needs to be measured (else n/a).")
    ] = 5,
    config: Annotated[Path | None, typer.Option("--config", help="YAML overriding training settings.")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI.")
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            envvar="MISDECLARE_HISTORY_DIR",
            help="History store of the fixed model's scorer (default ./history); unused when training per window.",
        ),
    ] = None,
    worlds: Annotated[
        int | None,
        typer.Option(
            "--worlds",
            help="Cross-world evaluation on simulated worlds instead of DATA: this many held-out worlds "
            "whose structural parameters lie outside the training worlds' ranges.",
        ),
    ] = None,
    train_worlds: Annotated[int, typer.Option("--train-worlds", help="Training worlds pooled (with --worlds).")] = 4,
    world_rows: Annotated[int, typer.Option("--world-rows", help="Lines simulated per world (with --worlds).")] = 120_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the world family (with --worlds).")] = 0,
    modes: Annotated[
        str,
        typer.Option(
            "--modes",
            help="Comma-separated: cold (empty store), warm (the world's history in the store), "
            "own (a model trained on the world's own labels beside the simulated worlds').",
        ),
    ] = "cold,warm,own",
) -> None:
    """Measure the model and baseline rules on later time windows, by inspection rate and slice.

    With --worlds N: train on simulated worlds and measure on N held-out worlds built differently
    (cold start, warm store, and a model trained on each world's own history).
    """
    if worlds is not None:
        if data:
            raise typer.BadParameter("give either DATA files or --worlds, not both", param_hint="--worlds")
        evaluate_worlds(
            worlds, train_worlds, world_rows, seed, tuple(m.strip() for m in modes.split(",")), config, tracking_uri, as_json
        )
        return
    if not data:
        raise typer.BadParameter("give labelled DATA files, or --worlds N", param_hint="DATA")
    from features.history_store import resolve_history_dir
    from training.config import load_train_config
    from training.evaluate import EvaluationSettings, evaluate_files

    settings = load_train_config(config)
    evaluation_settings = EvaluationSettings(n_windows=windows, window_fraction=window_fraction, min_positives=min_positives)
    # Progress goes to stderr so that --json leaves stdout to the document alone.
    with errors.status("evaluating...") as status:
        outcome = evaluate_files(
            list(data),
            settings,
            evaluation_settings,
            model,
            tracking_uri,
            history_dir=resolve_history_dir(history),
            on_window=lambda w: status.update(
                f"window {w.index + 1}/{windows}: {w.start:%Y-%m-%d}..{w.end:%Y-%m-%d}" + ("" if model else ", training...")
            ),
        )
    if as_json:
        typer.echo(json.dumps(outcome.document, allow_nan=False))
        return
    print_evaluation(console, outcome.document)


def evaluate_worlds(
    n_held_out: int,
    n_train: int,
    rows: int,
    seed: int,
    modes: tuple[str, ...],
    config: Path | None,
    tracking_uri: str | None,
    as_json: bool,
) -> None:
    """``misdeclare evaluate --worlds N``: the cross-world evaluation job (see training.crossworld)."""
    from training.config import load_train_config
    from training.crossworld import CrossWorldSettings, log_crossworld, run_crossworld
    from training.worlds import load_world_spec

    settings = CrossWorldSettings(
        n_train=n_train, n_held_out=n_held_out, train_rows=rows, held_out_rows=rows, seed=seed, modes=modes
    )
    with errors.status("simulating worlds...") as status:
        document = run_crossworld(
            settings,
            load_train_config(config),
            load_world_spec(),
            on_world=lambda name: status.update(f"cross-world evaluation: {name}..."),
        )
        document["mlflow_run_id"] = log_crossworld(document, tracking_uri)
    if as_json:
        typer.echo(json.dumps(document, allow_nan=True))
        return
    print_worlds(console, document)


def print_worlds(console, document: dict) -> None:
    """One table per mode: each held-out world's figures beside the hub + value rule's."""
    from rich.table import Table

    from training.crossworld import HEADLINE_RULE, MODEL

    rates = document["settings"]["rates"]
    for mode, summary in document["summary"].items():
        table = Table(title=f"{mode} start: held-out worlds (parameters outside the training ranges)")
        for column in (
            "world",
            "prevalence",
            *[f"recall @ {r:.0%}" for r in rates],
            f"rule recall @ {rates[min(1, len(rates) - 1)]:.0%}",
            "AP",
            "rule AP",
            "red",
            "yellow",
        ):
            table.add_column(column, justify="left" if column == "world" else "right")
        for world in document["worlds"]:
            figures = world["modes"][mode]
            model, rule = figures["scorers"][MODEL], figures["scorers"][HEADLINE_RULE]
            table.add_row(
                world["world"],
                f"{figures['prevalence']:.2%}",
                *[f"{model[f'recall_at_{r * 100:g}pct']:.2f}" for r in rates],
                f"{rule[f'recall_at_{rates[min(1, len(rates) - 1)] * 100:g}pct']:.2f}",
                f"{model['average_precision']:.2f}",
                f"{rule['average_precision']:.2f}",
                f"{figures['red_share']:.1%}",
                f"{figures['yellow_share']:.1%}",
            )
        table.caption = ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in summary.items())
        console.print(table)
    console.print(f"MLflow run {document['mlflow_run_id']}")


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("mean") is None:
        return "n/a"
    sd = entry.get("sd")
    return f"{entry['mean']:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _metric_rows(rates: list[float]) -> list[str]:
    keys = ["average_precision", "roc_auc"]
    for kind in ("precision", "recall", "value_recall"):
        keys += [f"{kind}_at_{r * 100:g}pct" for r in rates]
    return keys + ["brier", "ece"]


def _label(key: str) -> str:
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    kind, rate = key.split("_at_")
    return f"{kind.replace('_', ' ')} @ {rate.removesuffix('pct')} %"


def print_evaluation(console, document: dict) -> None:
    """Print an evaluation document: windows, the model beside each baseline, and the slices."""
    from rich.table import Table

    data, scorers, summary = document["data"], document["scorers"], document["summary"]
    console.print(
        f"read {data['lines_read']:,} lines: {data['lines_valid']:,} valid, {data['lines_quarantined']:,} left out by validation"
    )
    scored_by = f"model {document['model']}" if document["model"] else "a model trained per window"
    window_table = Table(title=f"{document['mode']} windows ({scored_by})")
    for column in ("window", "outcomes known before", "lines declared", "labelled", "misdeclared"):
        window_table.add_column(column)
    for window in document["windows"]:
        window_table.add_row(
            str(window["index"]),
            window["train_end"],
            f"{window['start']} .. {window['end']} (excl.)",
            f"{window['labelled']:,}",
            f"{window['positives']:,}",
        )
    console.print(window_table)

    rates = document["settings"]["inspection_rates"]
    console.print(_summary_table(summary, scorers, rates, "inspected lines, mean ± sd over windows"))
    if document["truth_summary"]:
        console.print(
            _summary_table(
                document["truth_summary"],
                scorers,
                rates,
                "every line, synthetic truth (what inspecting that share of all lines finds)",
            )
        )
    for population in document["populations"]:
        console.print(_slice_table(document, population, rates))
    console.print(f"MLflow run {document['mlflow_run_id']}")


def _summary_table(summary: dict, scorers: list[str], rates: list[float], title: str):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    for scorer in scorers:
        table.add_column(scorer, justify="right", style="bold" if scorer == "model" else None)
    for key in _metric_rows(rates):
        # Calibration only applies to the model's probabilities.
        table.add_row(
            _label(key),
            *["-" if s != "model" and key in CALIBRATION_METRICS else _cell(summary.get(s, {}).get(key)) for s in scorers],
        )
    return table


def _slice_table(document: dict, population: str, rates: list[float]):
    from rich.table import Table

    from training.evaluate import headline_rate

    rate = headline_rate(rates)
    precision = f"precision_at_{rate * 100:g}pct"
    baselines = [s for s in document["scorers"] if s != "model"]
    what = "inspected lines" if population == "inspected" else "every line, synthetic truth"
    table = Table(title=f"slices of {what} (n/a: fewer than {document['settings']['min_positives']} misdeclared)")
    for column in ("slice", "group", "lines", "misdeclared", "model AP", f"model P@{rate:.0%}", f"best baseline P@{rate:.0%}"):
        table.add_column(column, justify="left" if column in ("slice", "group") else "right")
    unmeasured = []
    for entry in (e for e in document["slices"] if e["population"] == population):
        if entry["slice"] == "export_country" and entry["metrics"] is None:
            unmeasured.append(entry["group"])  # dozens of small countries: listed once in the caption
            continue
        metrics = entry["metrics"] or {}
        model = metrics.get("model", {})
        means = [((metrics.get(b, {}).get(precision) or {}).get("mean"), b) for b in baselines]
        best = max(((m, b) for m, b in means if m is not None), default=None)
        table.add_row(
            entry["slice"],
            entry["group"],
            f"{entry['lines']:,}",
            f"{entry['positives']:,}",
            _cell(model.get("average_precision")),
            _cell(model.get(precision)),
            f"{best[0]:.3f} ({best[1]})" if best else "n/a",
        )
    if unmeasured:
        table.caption = f"export countries n/a: {', '.join(unmeasured)}"
    return table
