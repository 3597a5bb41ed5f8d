"""``misdeclare benchmark kcs``: the public KCS benchmark, our numbers beside the paper's.

Registered on the app in :mod:`serve.cli` with ``app.add_typer(benchmark_app, name="benchmark")``.
This module imports :mod:`serve.cli` only when a command runs, so that ``serve.cli`` can import it
at the top.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from serve.cli_common import console, errors, friendly_errors

benchmark_app = typer.Typer(no_args_is_help=True, add_completion=False)

METRIC_LABELS = {
    "precision_at_1pct": "precision at 1 %",
    "precision_at_5pct": "precision at 5 %",
    "precision_at_10pct": "precision at 10 %",
    "average_precision": "average precision",
    "roc_auc": "ROC-AUC",
}
PAPER_MODEL = "LightGBM"


@benchmark_app.callback()
def benchmark() -> None:
    """Public benchmarks on real-schema data, beside published results."""
    # A callback keeps ``kcs`` a subcommand even while it is the only one (Typer would otherwise
    # run a lone command directly).


@benchmark_app.command("kcs")
@friendly_errors
def kcs(
    as_json: Annotated[bool, typer.Option("--json", help="Print every number as one JSON document on stdout.")] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Folder of df_syn_{train,valid,test}_eng.csv (default: $MISDECLARE_KCS_DIR, "
            "else ../shared/data/kcs beside the checkout).",
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML overriding training settings.")] = None,
) -> None:
    """KCS synthetic import declarations: train on 2020 (+ 2021 Q1 for early stopping), report 2021 Q2."""
    from training.benchmark import run_kcs_benchmark
    from training.config import load_train_config

    settings = load_train_config(config)
    # Progress goes to stderr so that --json leaves stdout to the document alone.
    with errors.status("training on KCS 2020, early stopping on 2021 Q1..."):
        result = run_kcs_benchmark(data_dir, settings)
    if as_json:
        typer.echo(json.dumps(_finite(result.as_dict()), indent=1, allow_nan=False))
        return
    print_benchmark(console, result)


def _finite(value):
    """``value`` with NaN and infinities as None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_benchmark(console, result) -> None:
    """What was read and quarantined, the test metrics beside the paper's LightGBM, the run time."""
    from rich.table import Table

    from training.benchmark import PAPER_PRECISION

    paper = PAPER_PRECISION[PAPER_MODEL]
    lines, quarantined = result.lines, result.quarantined
    read = {period: lines[period] + quarantined[period] for period in lines}
    console.print(
        f"read {sum(read.values()):,} KCS lines (" + ", ".join(f"{period} {count:,}" for period, count in read.items()) + ")"
    )
    console.print(
        f"quarantined {sum(quarantined.values()):,} ("
        + ", ".join(f"{period} {count:,}" for period, count in quarantined.items())
        + ")"
        + "".join(f"\n  {count:,}: {reason}" for reason, count in result.quarantine_reasons.items())
    )
    console.print(f"value in USD: {result.rate}")
    table = Table(
        title=f"KCS test period 2021 Q2 ({int(result.metrics['lines']):,} lines, {int(result.metrics['positives']):,} fraud)"
    )
    for column in ("metric", "misdeclare", f"paper {PAPER_MODEL}"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key, label in METRIC_LABELS.items():
        reference = paper.get(key)
        table.add_row(label, f"{result.metrics[key]:.3f}", "n/a" if reference is None else f"{reference:.3f}")
    console.print(table)
    console.print(
        f"quarantined test lines count in the denominator, ranked last; {result.best_iteration} trees; {result.seconds:.0f} s"
    )
