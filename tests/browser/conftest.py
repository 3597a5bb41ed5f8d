"""Browser fixtures: one headless Debian Chromium per session, the service under uvicorn in a thread.

The server runs on a free loopback port over a seeded SQLite file (users with their own passwords,
one scored batch). The session cookie keeps its Secure flag: Chromium treats http://127.0.0.1 as
a secure context.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from sqlalchemy.orm import Session

from serve.api import create_app
from serve.triage import accounts, audit
from serve.triage.db import make_engine
from serve.triage.loading import load_scored_file
from serve.triage.migrate import upgrade
from serve.triage.settings import Settings
from serve.triage.synthetic import synthetic_scored_batch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
PASSWORD = "inspection-day-2025"
USERS = {"sup": ("supervisor", ()), "lax": ("inspector", ("USLAX",)), "hou": ("inspector", ("USHOU",))}


@dataclass(frozen=True)
class LiveServer:
    """The running service: its base URL and database file."""

    url: str
    database: Path


def _seed(database: Path, settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    hasher = accounts.make_hasher(settings)
    origin = audit.Origin(actor="test-setup", user_id=None, client="cli", via="cli")
    with Session(engine) as db, db.begin():
        for name, (role, ports) in USERS.items():
            user, one_time = accounts.create_user(db, hasher, origin, name, role, list(ports))
            accounts.change_password(db, hasher, accounts.Principal(user.id, name, role, frozenset(ports), "cli", "cli"),
                                     one_time, PASSWORD)
    batch = database.parent / "batch.csv"
    synthetic_scored_batch(600, seed=3, ports=("USLAX", "USHOU"), red_share=0.05, yellow_share=0.1).to_csv(batch, index=False)
    load_scored_file(engine, batch, origin, date.today(), np.random.default_rng(1))
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory) -> LiveServer:
    """The service under uvicorn in a background thread, stopped at the end of the session."""
    database = tmp_path_factory.mktemp("browser") / "misdeclare.db"
    settings = Settings(database_url=f"sqlite:///{database}", argon2_time_cost=1, argon2_memory_kib=1024,
                        history_dir=str(database.parent / "history"))
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
