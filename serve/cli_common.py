"""What every ``misdeclare`` command module shares: consoles, error handling, option types.

A leaf module (it imports no other command module), so that ``serve.cli`` and the modules of its
subcommands can all import it at the top without an import cycle.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
errors = Console(stderr=True)

DEFAULT_MODEL_NAME = "misdeclare"
DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@champion"
HistoryOption = Annotated[
    Path | None,
    typer.Option(
        "--history",
        envvar="MISDECLARE_HISTORY_DIR",
        help="History store folder (lines seen so far, for party and flow history; default ./history).",
    ),
]


ERROR_LOG_ENV = "MISDECLARE_ERROR_LOG"
DEFAULT_ERROR_LOG = "misdeclare-errors.log"


def friendly_errors(command):
    """Turn the errors a user can fix into a one-line message and exit code 1, never a traceback.

    Bad files and settings, a tampered bundle, a model missing from the registry, and an alias move
    that another process made first. A plain ``ValueError`` or ``LookupError`` is most often a bad
    setting too, but may be a bug: its traceback is appended to the error log
    (``$MISDECLARE_ERROR_LOG``, default ``./misdeclare-errors.log``) and the message says where.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, user_errors()):
                raise
            message = f"[bold red]error:[/] {exc}"
            if not isinstance(exc, domain_errors()):
                message += f" (traceback in {log_traceback(exc)})"
            errors.print(message, highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from exc

    return wrapper


def log_traceback(exc: BaseException) -> Path:
    """Append ``exc``'s traceback, with the time and the command line, to the error log; return its path."""
    path = Path(os.environ.get(ERROR_LOG_ENV) or DEFAULT_ERROR_LOG)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    with path.open("a", encoding="utf-8") as log:
        log.write(f"--- {stamp} {' '.join(sys.argv)}\n")
        log.write("".join(traceback.format_exception(exc)))
    return path


def domain_errors() -> tuple[type[Exception], ...]:
    """Errors the product raises for a user to fix (a bad file, bundle, registry state): a message suffices."""
    from features.schema import ManifestFileError
    from models.bundle import BundleError
    from models.promotion import PromotionError

    return ManifestFileError, BundleError, PromotionError, FileNotFoundError


def user_errors() -> tuple[type[Exception], ...]:
    """The errors a user can fix: the domain errors, and ``ValueError`` / ``LookupError`` (bad settings,
    values and names), whose traceback is logged. Imported when a command fails, not when the CLI
    starts: the modules defining them load pandas and LightGBM, which ``misdeclare --help`` does not need."""
    return (*domain_errors(), ValueError, LookupError)
