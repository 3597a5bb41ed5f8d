"""The ``misdeclare`` command line: one subcommand per job.

Each command parses its options, calls the domain code and reports. Errors that the user can fix
(bad files, bad settings, a tampered bundle) end the command with a one-line message and exit code
1, never a traceback.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from serve.cli_benchmark import benchmark_app
from serve.cli_common import (
    DEFAULT_MODEL_NAME,
    DEFAULT_MODEL_URI,
    HistoryOption,
    console,
    friendly_errors,
)
from serve.cli_evaluate import evaluate
from serve.cli_retrain import drift, retrain, rollback
from serve.cli_simulate import simulate
from serve.cli_triage import serve, triage_app

app = typer.Typer(
    help="misdeclare: score import manifest lines for disguised antimony, gallium, germanium and rare earths.",
    no_args_is_help=True,
    add_completion=False,
)


def _parse_date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{option} must be an ISO date (YYYY-MM-DD), got {value!r}") from exc


@app.command()
@friendly_errors
def generate(
    out: Annotated[Path, typer.Option("--out", help="Output file (.csv, .csv.gz or .parquet).")],
    rows: Annotated[int, typer.Option("--rows", help="Number of manifest lines.")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same bytes.")] = 0,
    start: Annotated[str, typer.Option("--start", help="First declaration date.")] = "2023-01-01",
    end: Annotated[str, typer.Option("--end", help="Last declaration date.")] = "2026-06-30",
    config: Annotated[Path | None, typer.Option("--config", help="YAML overriding generator settings.")] = None,
    unlabelled: Annotated[
        bool, typer.Option("--unlabelled", help="Drop labels and simulation truth, as a manifest arrives for scoring.")
    ] = False,
) -> None:
    """Generate synthetic manifest lines grounded in the domain facts."""
    from features.io import write_table
    from training.synthetic import arriving_lines, generate_manifest, load_generator_config

    frame = generate_manifest(
        rows, seed, _parse_date(start, "--start"), _parse_date(end, "--end"), config=load_generator_config(config)
    )
    if unlabelled:
        frame = arriving_lines(frame)
    write_table(frame, out)
    console.print(f"wrote {len(frame):,} lines to {out}")


@app.command()
@friendly_errors
def train(
    data: Annotated[list[Path], typer.Argument(help="Labelled manifest file(s) (CSV or Parquet).")],
    model_name: Annotated[str, typer.Option("--model-name", help="Registered model name.")] = DEFAULT_MODEL_NAME,
    config: Annotated[Path | None, typer.Option("--config", help="YAML overriding training settings.")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI.")
    ] = None,
    quarantine: Annotated[Path | None, typer.Option("--quarantine", help="Where rows failing validation go.")] = None,
    history: HistoryOption = None,
    engine: Annotated[
        str, typer.Option("--engine", help="Where the history features of the training table are computed: default or spark.")
    ] = "default",
    master: Annotated[str | None, typer.Option("--master", help="Spark master (with --engine spark).")] = None,
) -> None:
    """Train the risk model on labelled lines, track it in MLflow and register a version."""
    if engine not in ("default", "spark"):
        raise typer.BadParameter(f"must be default or spark, got '{engine}'", param_hint="--engine")
    if master is not None and engine != "spark":
        raise typer.BadParameter("only with --engine spark", param_hint="--master")
    from features.history_store import HistoryStore, resolve_history_dir
    from training.config import load_train_config
    from training.jobs import train_and_register

    history_of = None
    if engine == "spark":
        from serve.spark_scoring import spark_session
        from training.spark_train import spark_history_of

        history_of = spark_history_of(spark_session(master))
    settings = load_train_config(config)
    with console.status("training..."):
        outcome = train_and_register(
            list(data), settings, model_name, tracking_uri, quarantine, HistoryStore(resolve_history_dir(history)), history_of
        )
    _print_training(outcome, model_name, settings)


def _print_training(outcome, model_name: str, settings) -> None:
    data, metrics = outcome.data, outcome.result.metrics
    console.print(
        f"read {data.lines_read:,} lines: {len(data.lines):,} valid, {len(data.quarantine):,} quarantined"
        + (f" (see {outcome.quarantine_path})" if outcome.quarantine_path else "")
    )
    periods = outcome.result.split.boundaries
    console.print(
        f"train < {periods['train_end']} | valid {periods['valid_start']}..{periods['valid_end']} "
        f"| test {periods['test_start']}..{periods['test_end']}"
    )
    table = Table(title="held-out test period (inspected lines)")
    for column in ("metric", "value"):
        table.add_column(column)
    for key in ["test_average_precision", "test_roc_auc", "test_brier"] + [
        f"test_{kind}_at_{r * 100:g}pct" for r in settings.inspection_rates for kind in ("precision", "recall")
    ]:
        table.add_row(key.removeprefix("test_"), f"{metrics[key]:.3f}")
    console.print(table)
    alias = " and set as champion" if outcome.champion else " (champion unchanged)"
    console.print(f"MLflow run {outcome.run_id}; registered {model_name} version {outcome.version}{alias}")


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} lines"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )


@app.command()
@friendly_errors
def score(
    input: Annotated[Path, typer.Argument(help="Manifest file to score (CSV or Parquet).")],
    out: Annotated[Path, typer.Option("--out", help="Scored output file (.csv or .parquet).")],
    model: Annotated[
        str, typer.Option("--model", help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder.")
    ] = DEFAULT_MODEL_URI,
    quarantine: Annotated[
        Path | None, typer.Option("--quarantine", help="Rows failing validation (default: <out>.quarantine.csv).")
    ] = None,
    explain: Annotated[str, typer.Option("--explain", help="Lines that get reasons: flagged, red, all, none.")] = "flagged",
    chunk_rows: Annotated[
        int | None,
        typer.Option("--chunk-rows", help="Rows per chunk; memory follows it (default: features.io.DEFAULT_CHUNK_ROWS)."),
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking URI.")
    ] = None,
    history: HistoryOption = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Processes scoring parts at once (default: one per core); the output is the same."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write a self-contained HTML report of the batch (channels by port and day, "
            "reasons, risk against the validation window, cover-code cells, quarantine).",
        ),
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="default: this process, in chunks; spark: Apache Spark (a dataset in, a dataset out).")
    ] = "default",
    master: Annotated[
        str | None,
        typer.Option("--master", help="Spark master: local[2], spark://..., yarn, k8s://... (default: spark-submit's)."),
    ] = None,
) -> None:
    """Score a manifest file: risk score, channel (day quotas), reasons, suspected commodity and check per line."""
    if engine not in ("default", "spark"):
        raise typer.BadParameter(f"must be default or spark, got '{engine}'", param_hint="--engine")
    if master is not None and engine != "spark":
        raise typer.BadParameter("only with --engine spark", param_hint="--master")
    from features.history_store import HistoryStore, resolve_history_dir
    from features.io import DEFAULT_CHUNK_ROWS
    from features.reference import load_reference
    from models.bundle import load_bundle
    from serve.batch import score_file
    from serve.report import BatchReport, reference_shares, render_report, write_report

    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise typer.BadParameter(f"must end in .html, got '{report}'", param_hint="--report")
    bundle = load_bundle(model, tracking_uri=tracking_uri)
    facts = BatchReport(load_reference().cover_codes) if report is not None else None
    store = HistoryStore(resolve_history_dir(history))
    if engine == "spark":
        from serve.spark_scoring import score_dataset, spark_session

        with console.status(f"scoring {input} on Spark..."):
            summary = score_dataset(
                spark_session(master), input, out, model, tracking_uri, quarantine, explain, store, report=facts
            )
    else:
        with _progress() as progress:
            task = progress.add_task(f"scoring {input.name}", total=None)
            summary = score_file(
                input,
                out,
                bundle,
                quarantine,
                chunk_rows or DEFAULT_CHUNK_ROWS,
                explain,
                on_chunk=lambda n: progress.advance(task, n),
                history=store,
                report=facts,
                workers=workers or os.cpu_count() or 1,
            )
    channels = ", ".join(f"{summary.channels.get(c, 0):,} {c}" for c in ("red", "yellow", "green"))
    channels += f"; {summary.checks.get('origin', 0):,} declared under a controlled code, origin check"
    console.print(
        f"scored {summary.lines_scored:,} of {summary.lines_read:,} lines with {bundle.version} "
        f"({channels}) in {summary.seconds:.1f} s -> {summary.output}"
    )
    console.print(f"quarantined {summary.lines_quarantined:,} lines -> {summary.quarantine}")
    if facts is not None:
        write_report(report, render_report(facts, reference_shares(bundle.spec), input.name))
        console.print(f"report -> {report}")


def print_riskiest(scored_path: Path, top: int = 10) -> None:
    """Print the ``top`` riskiest lines of a scored file, each with its reasons on its own lines."""
    from features.io import read_manifest

    frame = read_manifest(scored_path)
    frame["risk_score"] = frame["risk_score"].astype(float)
    console.rule(f"the {top} riskiest lines of {scored_path.name}")
    for rank, row in enumerate(frame.nlargest(top, "risk_score").itertuples(), start=1):
        colour = {"red": "red", "yellow": "yellow"}.get(str(row.channel), "green")
        console.print(
            f"[bold]{rank:>2}. {row.declaration_id}/{row.line_no}[/]  HS {row.hs_code}  "
            f"{row.origin_country} -> {row.export_country} -> {row.port_of_discharge}  "
            f"risk {row.risk_score:.3f} [{colour}]{row.channel}[/]  suspected {row.suspected_commodity}",
            highlight=False,
        )
        for reason in str(row.reasons).split(" | "):
            console.print(f"      - {reason}", highlight=False, soft_wrap=True)


DEMO_TRAIN_WORLDS = 3


def write_demo_data(history: Path, incoming: Path, truth: Path, rows: int, incoming_days: int = 92) -> None:
    """Labelled history of simulated training worlds, and a later manifest of a world built differently.

    The history pools :data:`DEMO_TRAIN_WORLDS` worlds drawn from the training ranges of the world
    family (``training/data/worlds.yaml``); the later manifest, without labels, is the last quarter
    of a held-out world whose parameters lie outside those ranges and whose parties the history
    store has never seen: what a new customs office scoring with the shipped champion faces. Its
    simulated truth goes to ``truth`` so that the demo can say what the channels caught.
    """
    import pandas as pd

    from features.io import write_table
    from training.synthetic import SIM_COLUMNS, arriving_lines
    from training.worlds import draw_worlds, generate_world, load_world_spec

    start, end = date(2023, 1, 1), date(2026, 9, 30)
    cut = end - timedelta(days=incoming_days)
    train_worlds, (held_out,) = draw_worlds(load_world_spec(), DEMO_TRAIN_WORLDS, 1, seed=1)
    frames = [generate_world(w, rows // DEMO_TRAIN_WORLDS, start, cut) for w in train_worlds]
    pooled = pd.concat(frames, ignore_index=True).sort_values(["declared_at", "declaration_id"], ignore_index=True)
    write_table(pooled, history)
    later_rows = max(1, rows * incoming_days // (end - start).days)
    later = generate_world(held_out, later_rows, cut + timedelta(days=1), end)
    write_table(arriving_lines(later), incoming)
    write_table(later[["declaration_id", "line_no", *SIM_COLUMNS]], truth)
    console.print(
        f"wrote {len(pooled):,} labelled lines of {DEMO_TRAIN_WORLDS} simulated worlds to {history}, and "
        f"{len(later):,} lines declared after {cut} in a world built differently ({held_out.name}), "
        f"without labels, to {incoming}"
    )


def print_demo_figures(scored_path: Path, truth_path: Path) -> None:
    """What the channels caught on the later manifest, against the simulation's truth."""
    import pandas as pd

    from features.io import read_manifest

    scored = read_manifest(scored_path).astype({"line_no": "int64"})
    # The truth file is no manifest (keys and sim_* columns only): read as a plain table.
    truth = pd.read_csv(truth_path, dtype={"declaration_id": "string"}).astype({"line_no": "int64"})
    frame = scored.merge(truth, on=["declaration_id", "line_no"], how="left", validate="one_to_one")
    disguised = frame["sim_fraud"].astype("int64") == 1
    for channels, label in ((("red",), "red"), (("red", "yellow"), "red or yellow")):
        chosen = frame["channel"].isin(channels)
        console.print(
            f"{label}: {int(chosen.sum()):,} of {len(frame):,} lines ({chosen.mean():.1%}); they hold "
            f"{int((chosen & disguised).sum()):,} of the {int(disguised.sum()):,} disguised lines "
            f"({(chosen & disguised).sum() / max(int(disguised.sum()), 1):.0%})"
        )


@app.command()
@friendly_errors
def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Folder for the demo's files.")] = Path("demo"),
    rows: Annotated[
        int,
        typer.Option("--rows", help="Labelled history lines to generate (2023-01-01..2026-06-30), across the training worlds."),
    ] = 350_000,
) -> None:
    """Generate history, train and register the champion, score a later manifest (with its HTML report), show the riskiest."""
    history, incoming, scored = workdir / "history.csv", workdir / "incoming.csv", workdir / "scored.csv"
    truth, store, report = workdir / "incoming.truth.csv", workdir / "history", workdir / "report.html"
    console.rule("1. simulated worlds: labelled history to 2026-06-30, and a later quarter of a world built differently")
    write_demo_data(history, incoming, truth, rows)
    console.rule("2. train on the history, track in MLflow, register")
    train(
        data=[history],
        model_name=DEFAULT_MODEL_NAME,
        config=None,
        tracking_uri=None,
        quarantine=None,
        history=store,
        engine="default",
        master=None,
    )
    console.rule("3. score the later manifest with the champion")
    score(
        input=incoming,
        out=scored,
        model=DEFAULT_MODEL_URI,
        quarantine=None,
        explain="flagged",
        chunk_rows=None,
        tracking_uri=None,
        history=store,
        report=report,
    )
    print_riskiest(scored)
    console.rule("what the channels caught on this world the champion never saw (simulated truth)")
    print_demo_figures(scored, truth)
    console.rule("4. load the scored batch into the inspectors' queue")
    from serve.cli_triage import load as triage_load

    triage_load(scored)
    console.print(
        "Start the inspectors' page and API:  .venv/bin/misdeclare serve   -> http://127.0.0.1:8000/ "
        "(the first start creates user 'admin' and prints a one-time password)"
    )


# Commands living in their own modules (each imports its domain code only when it runs).
app.command()(evaluate)
app.add_typer(benchmark_app, name="benchmark", help="Public benchmarks (KCS customs declarations).")
app.command()(retrain)
app.command()(rollback)
app.command()(drift)
app.command()(simulate)
app.add_typer(triage_app, name="triage", help="Inspectors' queue: load scored batches, export outcomes, users.")
app.command("serve")(serve)
