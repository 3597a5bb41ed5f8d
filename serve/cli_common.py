"""What every ``misdeclare`` command module shares: consoles, error handling, option types.

A leaf module (it imports no other command module), so that ``serve.cli`` and the modules of its
subcommands can all import it at the top without an import cycle.
"""

from __future__ import annotations

import functools
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


def friendly_errors(command):
    """Turn the errors a user can fix into a one-line message and exit code 1, never a traceback.

    Bad files and settings, a tampered bundle, a model missing from the registry, and an alias move
    that another process made first.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            if not isinstance(exc, user_errors()):
                raise
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from exc

    return wrapper


def user_errors() -> tuple[type[Exception], ...]:
    """The errors a user can fix. Imported when a command fails, not when the CLI starts: the
    modules defining them load pandas and LightGBM, which ``misdeclare --help`` does not need."""
    from features.schema import ManifestFileError
    from models.bundle import BundleError
    from models.promotion import PromotionError

    return ManifestFileError, BundleError, PromotionError, ValueError, LookupError, FileNotFoundError
