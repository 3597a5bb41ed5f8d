"""Apply the triage database migrations (Alembic, configured in code so it works from an installed package)."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine


def alembic_config() -> Config:
    """Return an Alembic ``Config`` pointing at the migrations shipped inside this package."""
    config = Config()
    config.set_main_option("script_location", str(resources.files("serve.triage") / "migrations"))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database behind ``engine`` to ``revision`` (idempotent).

    Parameters
    ----------
    engine : Engine
        Engine of the triage database (SQLite or PostgreSQL).
    revision : str
        Target revision, ``head`` by default.
    """
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def is_current(engine: Engine) -> bool:
    """Tell whether the database is at the newest migration."""
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads()) == heads
