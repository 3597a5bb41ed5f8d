"""Browser fixtures: one headless Debian Chromium per session, the service under uvicorn in a thread.

The server runs on a free loopback port over a seeded SQLite file (users with their own passwords,
one scored batch). The session cookie keeps its Secure flag: Chromium treats http://127.0.0.1 as
a secure context.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session

from features.io import default_quarantine_path
from features.schema import CANONICAL_COLUMNS, validate_manifest
from serve.api import create_app
from serve.triage import accounts, audit
from serve.triage.cases import OutcomeInput, record_outcome
from serve.triage.db import Case, make_engine
from serve.triage.loading import load_scored_file
from serve.triage.migrate import upgrade
from serve.triage.settings import Settings
from serve.triage.synthetic import synthetic_scored_batch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "inspection-day-2025"
USERS = {"sup": ("supervisor", ()), "lax": ("inspector", ("USLAX",)), "hou": ("inspector", ("USHOU",))}


@dataclass(frozen=True)
class LiveServer:
    """The running service: its base URL and database file."""

    url: str
    database: Path


def _seed(database: Path, settings: Settings) -> None:
    """Users; three earlier weekly batches whose queued cases all have outcomes; today's open batch.

    The earlier weeks give the parties a history to draw and the supervisor view hit rates; today's
    batch has a quarantine file beside it (real validation reasons) for the batch report.
    """
    engine = make_engine(settings.database_url)
    upgrade(engine)
    hasher = accounts.make_hasher(settings)
    origin = audit.Origin(actor="test-setup", user_id=None, client="cli", via="cli")
    with Session(engine) as db, db.begin():
        for name, (role, ports) in USERS.items():
            user, one_time = accounts.create_user(db, hasher, origin, name, role, list(ports))
            principal = accounts.Principal(user.id, name, role, frozenset(ports), "cli", "cli")
            accounts.change_password(db, hasher, principal, one_time, PASSWORD)
            if name == "sup":
                supervisor = principal
    rng = np.random.default_rng(1)
    today = date.today()
    for weeks_ago in (3, 2, 1, 0):
        queue_day = today - timedelta(weeks=weeks_ago)
        batch = database.parent / f"batch-{weeks_ago}.csv"
        lines = synthetic_scored_batch(
            600,
            seed=3 + weeks_ago,
            ports=("USLAX", "USHOU"),
            red_share=0.05,
            yellow_share=0.1,
            declared_at=queue_day - timedelta(days=2),
            id_prefix=f"W{weeks_ago}-",
        )
        lines.to_csv(batch, index=False)
        if weeks_ago == 0:
            _write_quarantine(lines, default_quarantine_path(batch))
        report = load_scored_file(engine, batch, origin, queue_day, rng)
        if weeks_ago:
            _decide_all(engine, supervisor, report.batch_id, rng)
    engine.dispose()


def _write_quarantine(lines, path: Path) -> None:
    """The quarantine a scoring run would have written for a few broken copies of ``lines``."""
    broken = lines.head(6).astype(str).assign(declaration_id=lambda f: "BAD" + f["declaration_id"])
    broken.loc[broken.index[:3], "hs_code"] = "abc"
    broken.loc[broken.index[3:], "gross_weight_kg"] = "-1"
    broken.loc[broken.index[5], "port_of_discharge"] = "LAX"
    quarantine = validate_manifest(broken[list(CANONICAL_COLUMNS)], path.name).quarantine
    assert len(quarantine) == 6
    quarantine.to_csv(path, index=False)


def _decide_all(engine, supervisor, batch_id: int, rng: np.random.Generator) -> None:
    """An outcome for every queued case of a batch: misdeclared with probability = risk score (5 % for random checks)."""
    with Session(engine) as db, db.begin():
        for case in db.scalars(select(Case).where(Case.batch_id == batch_id, Case.queue_state == "open")):
            chance = case.risk_score if case.flagged else 0.05
            entry = OutcomeInput("confirmed", found_commodity="antimony") if rng.uniform() < chance else OutcomeInput("clean")
            record_outcome(db, supervisor, case.id, entry)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> LiveServer:
    """The service under uvicorn in a background thread, stopped at the end of the session."""
    database = tmp_path_factory.mktemp("browser") / "misdeclare.db"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        history_dir=str(database.parent / "history"),
    )
    _seed(database, settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield LiveServer(url=f"http://127.0.0.1:{port}", database=database)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium (Debian package) for the whole session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """``new_page()``: a page in a fresh browser context (its own cookies); closed after the test."""
    contexts = []

    def make():
        context = browser.new_context(viewport={"width": 1500, "height": 950})
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshot(tmp_path_factory):
    """``screenshot(page, name)``: a full-page PNG in $MISDECLARE_SCREENSHOT_DIR (``make screenshots``), else in a temp folder."""
    folder = Path(os.environ.get("MISDECLARE_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def signed_in(live_server, new_page):
    """``signed_in(username)``: a page signed in as ``username`` and showing its home page."""

    def sign_in(username: str):
        page = new_page()
        page.goto(f"{live_server.url}/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state()
        return page

    return sign_in
