"""Command-line side of the triage queue: ``misdeclare triage ...`` and ``misdeclare serve``.

``triage_app`` is a Typer sub-app (load, export, add-user); ``serve`` is a plain command function.
The main CLI registers them::

    app.add_typer(triage_app, name="triage")
    app.command("serve")(serve)

Settings come from ``MISDECLARE_*`` environment variables when a command runs, never at import.
"""

from __future__ import annotations

import getpass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # the triage modules load SQLAlchemy and argon2: imported when a command runs
    from serve.triage import audit
    from serve.triage.settings import Settings


LOOPBACK = ("127.0.0.1", "localhost", "::1")
APP_FACTORY = "serve.api:app_from_environment"
# uvicorn kills a worker that does not answer its health check in time (5 s by default): a worker
# starting its scoring pool (model built, warm-up scoring) on a busy machine can take longer.
WORKER_HEALTHCHECK_SECONDS = 60
triage_app = typer.Typer(
    help="Inspector triage queue: load scored batches, export labels, add users.", no_args_is_help=True, add_completion=False
)


class RoleChoice(StrEnum):
    """Roles a user can have."""

    inspector = "inspector"
    supervisor = "supervisor"
    admin = "admin"


def _cli_origin() -> audit.Origin:
    from serve.triage import audit

    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return audit.Origin(actor=f"cli:{name}", user_id=None, client="cli", via="cli")


def _settings(**values) -> Settings:
    from serve.triage.settings import Settings

    return Settings(**values)


def _engine(settings: Settings):
    from serve.triage.db import make_engine
    from serve.triage.migrate import upgrade

    engine = make_engine(settings.database_url)
    upgrade(engine)
    return engine


@triage_app.command("load")
def load(
    scored_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="Scored batch file (.csv or .parquet)")
    ],
    queue_date: Annotated[
        datetime | None, typer.Option("--date", formats=["%Y-%m-%d"], help="Queue day of the lines (default: today)")
    ] = None,
) -> None:
    """Load a scored batch file into the queue (idempotent: lines already there are skipped)."""
    # Imported here so that other commands start without pandas and pandera.
    from features.schema import ManifestFileError
    from serve.triage.loading import load_scored_file

    settings = _settings()
    try:
        report = load_scored_file(_engine(settings), scored_file, _cli_origin(), queue_date.date() if queue_date else None)
    except ManifestFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(
        f"{report.source}: read {report.n_read}, new {report.n_inserted}, already loaded {report.n_existing}, "
        f"rejected {report.n_rejected} (queue day {report.queue_date}, batch {report.batch_id})"
    )
    for draw in report.draws:
        typer.echo(f"  random checks {draw.port}: {draw.picked} of {draw.pool_size} unflagged lines (p = {draw.probability:.6f})")
    for line in report.rejections:
        typer.echo(f"  rejected {line}", err=True)


@triage_app.command("export")
def export(
    since: Annotated[
        datetime, typer.Option("--since", formats=["%Y-%m-%d"], help="Outcomes recorded on or after this day (UTC)")
    ],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="Output file (.csv or .parquet)")],
) -> None:
    """Export recorded inspections as labelled manifest lines (canonical schema) for retraining."""
    from serve.triage.export import export_labels

    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        typer.echo("error: --out must end in .csv or .parquet", err=True)
        raise typer.Exit(code=2)
    rows = export_labels(_engine(_settings()), since.date(), out, _cli_origin())
    typer.echo(f"wrote {rows} labelled lines to {out}")


@triage_app.command("add-user")
def add_user(
    username: Annotated[str, typer.Argument(help="User name (a-z, 0-9, '.', '_', '-')")],
    role: Annotated[RoleChoice, typer.Option("--role", help="inspector, supervisor or admin")] = RoleChoice.inspector,
    ports: Annotated[list[str] | None, typer.Option("--port", help="Port (UN/LOCODE) of an inspector; repeat")] = None,
) -> None:
    """Create a user and print a one-time password (to be changed at the first sign-in)."""
    from sqlalchemy.orm import Session

    from serve.triage import accounts
    from serve.triage.errors import TriageError

    settings = _settings()
    engine = _engine(settings)
    try:
        with Session(engine) as db, db.begin():
            _, password = accounts.create_user(
                db, accounts.make_hasher(settings), _cli_origin(), username, role.value, ports or []
            )
    except TriageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(f"created {role.value} '{username}'; one-time password (shown once): {password}")


def prepare_serve(settings: Settings) -> str | None:
    """Migrate the database and, when it has no users, create ``admin`` with a one-time password.

    Returns
    -------
    str or None
        The one-time password to print, or None when users exist.
    """
    from serve.triage import accounts

    return accounts.ensure_first_admin(_engine(settings), accounts.make_hasher(settings))


def champion_uri(model_name: str = "misdeclare") -> str | None:
    """``models:/NAME@champion`` when that alias exists in the tracking store, else None."""
    from models.registry import CHAMPION, alias_version

    return f"models:/{model_name}@{CHAMPION}" if alias_version(model_name, CHAMPION) else None


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on")] = 8000,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            envvar="MISDECLARE_MODEL_URI",
            help="Model for POST /score (models:/NAME@ALIAS or a bundle folder); default: the registered "
            "champion of 'misdeclare' when there is one.",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            envvar="MISDECLARE_WEB_WORKERS",
            help="Web worker processes serving pages and API (uvicorn workers). Each starts "
            "MISDECLARE_SCORING_WORKERS scoring processes of its own for POST /score (default 1).",
        ),
    ] = 1,
) -> None:
    """Start the inspectors' pages and the JSON API (spec at /openapi.json)."""
    import os

    import uvicorn

    from serve.api import create_app

    settings = _settings(model_uri=model or champion_uri())
    if settings.model_uri is None:
        typer.echo("No champion model registered yet: POST /score answers 503 until one is (misdeclare train).")
    password = prepare_serve(settings)
    if password is not None:
        typer.echo(
            f"First start: created user 'admin' with one-time password {password}\n"
            "Sign in and choose a new password; this one is not shown again."
        )
    typer.echo(f"misdeclare triage on http://{host}:{port}/  (database {settings.database_url})")
    if settings.cookie_secure and host not in LOOPBACK:
        typer.echo(
            "Note: the session cookie is Secure, so browsers send it only over HTTPS (or to localhost): "
            "serve this address behind TLS, or set MISDECLARE_COOKIE_SECURE=false on a trusted network."
        )
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
        return
    # Several workers: uvicorn starts each from the app factory, which reads the settings from the
    # environment; the model chosen here is handed on through it.
    if settings.model_uri is not None:
        os.environ["MISDECLARE_MODEL_URI"] = settings.model_uri
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="info",
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )
