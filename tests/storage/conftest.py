"""Storage tests run against SQLite always and PostgreSQL when MISDECLARE_TEST_POSTGRES_URL is set
(``eval "$(bash .ci/postgres.sh)"`` starts one).

SQLite: each test gets a copy of a template file migrated once. PostgreSQL: the session works in a
schema of its own (dropped at the end), migrated once; each test starts from emptied tables.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from serve.triage import accounts, audit
from serve.triage.db import Base, make_engine
from serve.triage.migrate import upgrade

POSTGRES_ENV = "MISDECLARE_TEST_POSTGRES_URL"
BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)]
ORIGIN = audit.Origin(actor="storage-test", user_id=None, client="cli", via="cli")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file to copy."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a fresh, migrated schema on the test PostgreSQL; skipped only when the variable is unset."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f'{POSTGRES_ENV} is not set (eval "$(bash .ci/postgres.sh)")')
    schema = f"misdeclare_storage_{secrets.token_hex(4)}"
    admin = create_engine(url)
    with admin.begin() as connection:
        connection.execute(text(f"CREATE SCHEMA {schema}"))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    engine = make_engine(scoped)
    upgrade(engine)
    engine.dispose()
    yield scoped
    with admin.begin() as connection:
        connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def _empty_postgres(engine) -> None:
    tables = ", ".join(table.name for table in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        # TRUNCATE is a statement, not a row change: the append-only triggers do not fire on it.
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=BACKENDS)
def engine(request, tmp_path):
    """A migrated, empty triage database on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "triage.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        engine = make_engine(f"sqlite:///{path}")
    else:
        engine = make_engine(request.getfixturevalue("postgres_url"))
        _empty_postgres(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def principal():
    """``principal(role, *ports)``: an acting user (no row needed for queue reads)."""
    return lambda role, *ports: accounts.Principal(
        user_id=None, username=f"{role}-test", role=role, ports=frozenset(ports), client="test", via="cli"
    )


@pytest.fixture
def origin() -> audit.Origin:
    """Audit origin of the storage tests."""
    return ORIGIN
