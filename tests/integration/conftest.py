"""Fixtures of the API and CLI tests: a real SQLite file per test, copied from one seeded template.

The template is migrated and seeded once per session (users, tokens, a scored batch); each test
gets its own copy, so tests are independent and fast. Passwords are hashed with a cheap argon2
setting (a configuration value, the same code path as production).
"""

from __future__ import annotations

import re
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from serve.api import create_app
from serve.triage import accounts, audit
from serve.triage.db import make_engine
from serve.triage.loading import load_scored_file
from serve.triage.migrate import upgrade
from serve.triage.scoring import load_scorer
from serve.triage.settings import Settings
from serve.triage.synthetic import synthetic_scored_batch

PASSWORD = "inspection-day-2025"
QUEUE_DATE = date(2025, 6, 3)
PORTS = ("USLAX", "USHOU", "USSAV")
USERS = {
    "admin": ("admin", ()),
    "sup": ("supervisor", ()),
    "lax": ("inspector", ("USLAX",)),
    "hou": ("inspector", ("USHOU",)),
}
CHEAP_HASHING = {"argon2_time_cost": 1, "argon2_memory_kib": 1024}


@dataclass(frozen=True)
class Seed:
    """The seeded template database: its file and the API token secret of each user."""

    path: Path
    tokens: dict[str, str]


def seed_users(engine, hasher) -> dict[str, str]:
    """Create the test users with their own password and a token each; return the token secrets."""
    origin = audit.Origin(actor="test-setup", user_id=None, client="cli", via="cli")
    tokens = {}
    with Session(engine) as db, db.begin():
        for name, (role, ports) in USERS.items():
            user, one_time = accounts.create_user(db, hasher, origin, name, role, list(ports))
            who = accounts.Principal(user.id, name, role, frozenset(ports), "cli", "cli")
            accounts.change_password(db, hasher, who, one_time, PASSWORD)
            _, tokens[name] = accounts.create_token(db, origin, user.id, f"{name}-token", 30)
    return tokens


def make_settings(path: Path, **overrides) -> Settings:
    """Settings of a test app on the SQLite file ``path``, with its history store in ``path``'s folder.

    The history store is ``history/`` beside the database unless ``history_dir`` is overridden, so
    that no test writes into the repository. Outcomes reach the store as soon as they are recorded
    (``outcome_push_seconds`` 0), so that a test can look for them there at once.
    """
    defaults = {"history_dir": str(path.parent / "history"), "outcome_push_seconds": 0.0, **CHEAP_HASHING}
    return Settings(database_url=f"sqlite:///{path}", **{**defaults, **overrides})


@pytest.fixture(scope="session")
def seed(tmp_path_factory) -> Seed:
    """Migrated template with users, tokens and 400 scored lines over three ports."""
    folder = tmp_path_factory.mktemp("template")
    path = folder / "template.db"
    settings = make_settings(path)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    tokens = seed_users(engine, accounts.make_hasher(settings))
    batch = folder / "batch.csv"
    synthetic_scored_batch(400, seed=7, ports=PORTS, red_share=0.1, yellow_share=0.15).to_csv(batch, index=False)
    origin = audit.Origin(actor="test-setup", user_id=None, client="cli", via="cli")
    load_scored_file(engine, batch, origin, QUEUE_DATE, np.random.default_rng(0))
    engine.dispose()
    return Seed(path=path, tokens=tokens)


@pytest.fixture
def db_path(seed: Seed, tmp_path: Path) -> Path:
    """A private copy of the seeded database."""
    path = tmp_path / "misdeclare.db"
    shutil.copy(seed.path, path)
    return path


@pytest.fixture
def engine(db_path: Path):
    """Engine on the test's database copy."""
    engine = make_engine(f"sqlite:///{db_path}")
    yield engine
    engine.dispose()


@pytest.fixture
def tokens(seed: Seed) -> dict[str, str]:
    """API token secrets by user name."""
    return seed.tokens


@pytest.fixture
def auth(tokens: dict[str, str]):
    """``auth(name)``: the Authorization header with the API token of user ``name``."""
    return lambda name: {"Authorization": f"Bearer {tokens[name]}"}


@pytest.fixture(scope="session")
def model_dir(small_bundle, tmp_path_factory) -> Path:
    """A real model bundle folder (the quickly fitted ``small_bundle`` of tests/conftest.py)."""
    from models.bundle import save_bundle

    folder = tmp_path_factory.mktemp("model") / "bundle"
    save_bundle(folder, small_bundle["booster"], small_bundle["spec"], small_bundle["commodity_booster"])
    return folder


@pytest.fixture(scope="session")
def scorer(model_dir: Path):
    """The real scorer (models.bundle.load_bundle + models.predict.score_frame), loaded once."""
    return load_scorer(str(model_dir))


@pytest.fixture
def app(db_path: Path, scorer):
    """The service on the test's database, with the real scorer loaded once per session."""
    return create_app(make_settings(db_path), scorer=scorer)


@pytest.fixture
def client(app):
    """HTTPS test client (the session cookie is Secure) running the app's lifespan."""
    with TestClient(app, base_url="https://testserver") as test_client:
        yield test_client


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def _sign_in(test_client: TestClient, username: str, password: str = PASSWORD) -> str:
    form = test_client.get("/login")
    token = CSRF_FIELD.search(form.text).group(1)
    response = test_client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token, "next": "/"}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    page = test_client.get("/password")
    return CSRF_FIELD.search(page.text).group(1)


@pytest.fixture
def sign_in():
    """``sign_in(client, username[, password])``: sign in through the page; returns the CSRF token."""
    return _sign_in


@pytest.fixture
def make_client(db_path: Path):
    """``make_client(scorer=..., **settings)``: another HTTPS client of an app on the test's database."""
    with ExitStack() as stack:

        def build(scorer=None, **overrides) -> TestClient:
            app = create_app(make_settings(db_path, **overrides), scorer=scorer)
            return stack.enter_context(TestClient(app, base_url="https://testserver"))

        yield build
