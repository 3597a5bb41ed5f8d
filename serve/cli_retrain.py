"""``misdeclare retrain``, ``misdeclare rollback`` and ``misdeclare drift``.

Registered on the app in :mod:`serve.cli` with ``app.command()(retrain)``, ``app.command()(rollback)``
and ``app.command()(drift)``. This module imports :mod:`serve.cli` only when a command runs, so
that ``serve.cli`` can import it at the top.
"""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from serve.cli_common import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_URI,
    HistoryOption,
    console,
    errors,
    friendly_errors,
)

_EPOCH = date(1970, 1, 1)

TrackingOption = Annotated[str | None, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI.")]
RetrainConfigOption = Annotated[
    Path | None, typer.Option("--retrain-config", help="YAML overriding retrain and drift settings (training/data/retrain.yaml).")
]


# ----------------------------------------------------------------------------- triage database


def _safe_url(database_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(database_url).render_as_string(hide_password=True)


def triage_labels(database_url: str | None):
    """Labelled lines of the triage database's outcomes, or None with a note saying why not.

    Reads only: the database is neither created nor migrated here.

    Returns
    -------
    frame : DataFrame or None
        Canonical columns plus ``selection_probability`` and ``selected_by``
        (:func:`serve.triage.export.labels_frame`), None when not configured or without outcomes.
    note : str
    """
    if not database_url:
        return None, "triage database not configured (MISDECLARE_DATABASE_URL)"
    from sqlalchemy import inspect
    from sqlalchemy.orm import Session

    from serve.triage.db import make_engine
    from serve.triage.export import labels_frame

    shown = _safe_url(database_url)
    if database_url.startswith("sqlite:///") and not Path(database_url.removeprefix("sqlite:///")).is_file():
        return None, f"triage database {shown} does not exist: no outcomes used"
    engine = make_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        if not {"cases", "outcomes"} <= tables:
            return None, f"triage database {shown} has no outcome tables (not migrated): no outcomes used"
        with Session(engine) as db:
            frame = labels_frame(db, _EPOCH)
    finally:
        engine.dispose()
    if frame.empty:
        return None, f"triage database {shown} has no recorded outcomes yet: none used"
    return frame, f"{len(frame):,} labelled lines from the triage database {shown}"


# ----------------------------------------------------------------------------- retrain


@friendly_errors
def retrain(
    labels: Annotated[
        list[Path] | None,
        typer.Option("--labels", help="Labelled file in the canonical schema (CSV or Parquet); repeat for several."),
    ] = None,
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name.")] = DEFAULT_MODEL_NAME,
    min_gain: Annotated[
        float | None,
        typer.Option(
            "--min-gain", help="Average-precision gain the challenger needs over the champion (default from retrain.yaml: 0.0)."
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and report; register nothing, move no alias.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="YAML overriding training settings.")] = None,
    retrain_config: RetrainConfigOption = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="MISDECLARE_DATABASE_URL",
            help="Triage database whose recorded outcomes are added to the labels.",
        ),
    ] = None,
    tracking_uri: TrackingOption = None,
    history: HistoryOption = None,
) -> None:
    """Train a challenger on the latest labels, compare it with the champion, promote it or not."""
    from features.history_store import HistoryStore, resolve_history_dir
    from training.config import load_train_config
    from training.retrain import RetrainRequest, load_retrain_settings, run_retrain

    settings = load_retrain_settings(retrain_config, min_gain=min_gain)
    train_settings = load_train_config(config)
    database, note = triage_labels(database_url)
    request = RetrainRequest(
        paths=list(labels or []),
        config=train_settings,
        settings=settings,
        model_name=model_name,
        tracking_uri=tracking_uri,
        dry_run=dry_run,
        database=database,
        database_note=note,
        history=HistoryStore(resolve_history_dir(history)).read(),
    )
    with errors.status("retraining: training the challenger and scoring the comparison window..."):
        outcome = run_retrain(request)
    print_retrain(console, outcome.document)
    if outcome.outcome == "aborted":
        raise typer.Exit(code=1)


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.3f}"


def _change(value) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _print_inputs(console, document: dict) -> None:
    labels, window = document["labels"], document["window"]
    console.print(
        f"labels: {len(labels['files'])} file(s), {labels['database_lines']:,} triage outcome(s): "
        f"{labels['lines_read']:,} lines read, {labels['lines_valid']:,} valid "
        f"({labels['lines_quarantined']:,} quarantined), {labels['labelled']:,} labelled",
        highlight=False,
    )
    console.print(f"triage database: {labels['database_note']}", highlight=False)
    exploration = document["exploration"]
    if exploration["all"] is None:
        console.print("exploration checks: none labelled (no selected_by = exploration lines)", highlight=False)
    else:
        rate, in_window = exploration["all"], exploration["window"]
        console.print(
            f"exploration checks (drawn at random among unflagged lines: an unbiased estimate of their "
            f"base rate): {rate['positives']:,} misdeclared of "
            f"{rate['lines']:,} = {_pct(rate['rate'])} (95 % CI {_pct(rate['low'])}-{_pct(rate['high'])})"
            + (
                f"; in the window {in_window['positives']} of {in_window['lines']} = {_pct(in_window['rate'])}"
                if in_window
                else ""
            ),
            highlight=False,
        )
    console.print(
        f"comparison window {window['start']}..{window['end']}: {window['lines']:,} lines, "
        f"{window['labelled']:,} labelled, {window['positives']:,} misdeclared; challenger trained on "
        f"lines declared before {window['train_end']}",
        highlight=False,
    )


def _headline_table(document: dict):
    from rich.table import Table

    champion, challenger = document["champion"]["version"], document["challenger"]["version"]
    table = Table(
        title="comparison window: AP of the labelled lines, recall of the known misdeclared lines "
        f"at {document['settings']['inspection_rate']:.0%} of all lines"
    )
    for column in (
        "metric",
        f"champion v{champion}" if champion else "champion (none)",
        f"challenger v{challenger}" if challenger else "challenger (not registered)",
        "change",
    ):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for row in document["comparison"]:
        if row["slice"] == "all" and row["group"] == "all":
            table.add_row(row["metric"], _num(row["champion"]), _num(row["challenger"]), _change(row["change"]))
    return table


def _slice_table(document: dict):
    from rich.table import Table

    settings = document["settings"]
    recall = f"recall_at_{settings['inspection_rate'] * 100:g}pct"
    by_group: dict[tuple[str, str], dict] = {}
    for row in document["comparison"]:
        if row["measured"] and row["slice"] != "all":
            by_group.setdefault((row["slice"], row["group"]), {"lines": row["lines"], "positives": row["positives"]})[
                row["metric"]
            ] = row
    dropped = {(d["slice"], d["group"]) for d in document["decision"]["drops"]}
    rate = f"{settings['inspection_rate']:.0%}"
    table = Table(
        title=f"slices with >= {settings['slice_min_positives']} misdeclared lines (tolerance {settings['slice_tolerance']:.3f})"
    )
    for column in (
        "slice",
        "group",
        "lines",
        "misdecl.",
        "AP champ.",
        "AP chall.",
        f"recall@{rate} champ.",
        f"recall@{rate} chall.",
        "check",
    ):
        table.add_column(column, justify="left" if column in ("slice", "group", "check") else "right")
    for (slice_name, group), entry in by_group.items():
        ap, rec = entry["average_precision"], entry[recall]
        table.add_row(
            slice_name,
            group,
            f"{entry['lines']:,}",
            f"{entry['positives']:,}",
            _num(ap["champion"]),
            _num(ap["challenger"]),
            _num(rec["champion"]),
            _num(rec["challenger"]),
            "[red]drop[/]" if (slice_name, group) in dropped else "ok",
        )
    return table


def _drift_table(drift: dict, sides: str):
    from rich.table import Table

    table = Table(title=f"drift ({drift['model']} features): {sides}, top movers")
    for column in ("feature", "PSI", "status"):
        table.add_column(column, justify="right" if column == "PSI" else "left")
    features = {f["feature"]: f for f in drift["features"]}
    table.add_row("[bold]risk score[/]", _num(drift["score"]["psi"]), drift["score"]["status"])
    for name in drift["top_movers"]:
        table.add_row(name, _num(features[name]["psi"]), features[name]["status"])
    return table


def print_retrain(console, document: dict) -> None:
    """Print a retrain report: inputs, numbers side by side, slices, drift, decision and outcome."""
    _print_inputs(console, document)
    console.print(_headline_table(document))
    console.print(_slice_table(document))
    console.print(_drift_table(document["drift"], "challenger's training lines -> comparison window"))
    decision = document["decision"]
    colour = "green" if decision["action"] == "promote" else "yellow"
    console.print(f"decision: [bold {colour}]{decision['action'].upper()}[/] - {decision['reason']}", highlight=False)
    console.print(f"outcome: [bold]{document['outcome']}[/] - {document['outcome_note']}", highlight=False)
    console.print(
        f"MLflow run {document['mlflow_run_id']} (tags retrain_*, artifacts retrain/report.json, "
        f"retrain/comparison.csv, drift/drift.json)",
        highlight=False,
    )


# ----------------------------------------------------------------------------- rollback


@friendly_errors
def rollback(
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name.")] = DEFAULT_MODEL_NAME,
    retrain_config: RetrainConfigOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Move the champion back to the previous version (a second rollback undoes the first)."""
    from models.promotion import rollback as move_back
    from training.retrain import load_retrain_settings

    settings = load_retrain_settings(retrain_config)
    move = move_back(model_name, tracking_uri, settings.lock_timeout_seconds)
    console.print(
        f"{model_name}: champion moved back from version {move.champion_before} to {move.champion_after}; "
        f"previous is now version {move.previous_after}. Scorers keep the model they loaded until they "
        f"reload.",
        highlight=False,
    )


# ----------------------------------------------------------------------------- drift


@friendly_errors
def drift(
    reference: Annotated[Path, typer.Argument(help="Reference lines: the model's training data (CSV or Parquet).")],
    current: Annotated[Path, typer.Argument(help="Current lines: a recent (scored) batch (CSV or Parquet).")],
    model: Annotated[
        str,
        typer.Option(
            "--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder: its features and score are compared."
        ),
    ] = DEFAULT_MODEL_URI,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON document on stdout.")] = False,
    retrain_config: RetrainConfigOption = None,
    tracking_uri: TrackingOption = None,
    history: HistoryOption = None,
) -> None:
    """Population stability index of every model feature and of the score; logged to MLflow."""
    from features.history_store import HistoryStore, resolve_history_dir
    from training.drift import drift_files
    from training.retrain import load_retrain_settings

    settings = load_retrain_settings(retrain_config).drift
    with errors.status("measuring drift..."):
        outcome = drift_files(
            reference, current, model, settings, tracking_uri, current_past=HistoryStore(resolve_history_dir(history)).read()
        )
    if as_json:
        typer.echo(json.dumps(outcome.document, indent=1, allow_nan=False))
        return
    print_drift(console, outcome.document)


def print_drift(console, document: dict) -> None:
    """Print a drift report: counts, the score's PSI, the top movers and the overall status."""
    settings = document["settings"]
    console.print(
        f"drift of {document['model']}: {document['reference_lines']:,} reference lines "
        f"({document['reference_file']}) -> {document['current_lines']:,} current lines "
        f"({document['current_file']})",
        highlight=False,
    )
    console.print(_drift_table(document, "reference -> current"))
    console.print(
        f"status: [bold]{document['status']}[/] (PSI watch >= {settings['watch']:g}, alert >= "
        f"{settings['alert']:g}); MLflow run {document['mlflow_run_id']}",
        highlight=False,
    )
