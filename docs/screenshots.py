"""Screenshots of the pictures for the README, from the product run on a simulated world (``make screenshots``).

1. ``misdeclare demo`` in a temporary folder: labelled history, the champion trained and registered,
   a later quarter of a held-out world scored with ``--report`` (the batch report file).
2. A fresh triage database: a supervisor and an inspector; the scored quarter loaded one declaration
   week per batch; every queued case of all weeks but the last decided from the simulation's truth
   (what inspectors would have found), so the supervisor view has weeks of hit rates.
3. The service on that database with the champion loaded, and headless Chromium: the case page of
   the riskiest open red case with a party history, the supervisor view, the triage batch report,
   and the report file.

Nothing here is asserted (the browser tests do that); it only draws what the product shows.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import uvicorn
from playwright.sync_api import sync_playwright
from sqlalchemy import select
from sqlalchemy.orm import Session

from features.io import read_manifest
from serve.api import create_app
from serve.cli_common import DEFAULT_MODEL_URI
from serve.triage import accounts, audit
from serve.triage.cases import OutcomeInput, record_outcome
from serve.triage.db import Batch, Case, Outcome, make_engine
from serve.triage.loading import load_scored_frames
from serve.triage.migrate import upgrade
from serve.triage.settings import Settings

PASSWORD = "screenshots-only-2026"
CHROMIUM = "/usr/bin/chromium"


def run_demo(workdir: Path, rows: int) -> None:
    """``misdeclare demo`` in ``workdir`` (its MLflow store and triage file stay there)."""
    command = [str(Path(sys.executable).with_name("misdeclare")), "demo", "--rows", str(rows), "--workdir", "demo"]
    subprocess.run(command, cwd=workdir, check=True, env={**os.environ, "COLUMNS": "120"})


def seed(database: str, scored: Path, truth: Path, inspector_port: str) -> None:
    """Users; the scored quarter as weekly batches; outcomes from the truth for all weeks but the last."""
    engine = make_engine(database)
    upgrade(engine)
    settings = Settings(database_url=database, argon2_time_cost=1, argon2_memory_kib=1024)
    hasher = accounts.make_hasher(settings)
    origin = audit.Origin(actor="screenshots", user_id=None, client="cli", via="cli")
    principals = {}
    with Session(engine) as db, db.begin():
        for name, role, ports in (("sup", "supervisor", []), ("inspector", "inspector", [inspector_port])):
            user, one_time = accounts.create_user(db, hasher, origin, name, role, ports)
            principals[name] = accounts.Principal(user.id, name, role, frozenset(ports), "cli", "cli")
            accounts.change_password(db, hasher, principals[name], one_time, PASSWORD)
    lines = read_manifest(scored)
    found = pd.read_csv(truth, dtype={"declaration_id": "string"}).set_index(["declaration_id", "line_no"])
    weeks = pd.to_datetime(lines["declared_at"]).dt.to_period("W-SUN")
    rng = np.random.default_rng(0)
    last = weeks.max()
    for week in sorted(weeks.unique()):
        queue_day = (week.end_time + timedelta(days=1)).date()  # the Monday after the declaration week
        report = load_scored_frames(
            engine, [lines[weeks == week]], f"{scored.stem}-{week.start_time:%Y-%m-%d}.csv", origin, queue_day, rng
        )
        if week == last:
            continue
        with Session(engine) as db, db.begin():
            for case in db.scalars(select(Case).where(Case.batch_id == report.batch_id, Case.queue_state == "open")):
                truth_row = found.loc[(case.declaration_id, case.line_no)]
                entry = (
                    OutcomeInput("confirmed", found_commodity=str(truth_row["sim_commodity"]))
                    if int(truth_row["sim_fraud"]) == 1
                    else OutcomeInput("clean")
                )
                record_outcome(db, principals["sup"], case.id, entry)
    engine.dispose()


def serve_in_thread(settings: Settings) -> tuple[uvicorn.Server, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def case_to_show(database: str, port: str) -> int:
    """The riskiest open red case of ``port`` whose shipper has a confirmed earlier line (else the riskiest)."""
    engine = make_engine(database)
    with Session(engine) as db:
        cases = list(
            db.scalars(
                select(Case)
                .where(Case.port == port, Case.queue_state == "open", Case.channel == "red")
                .order_by(Case.risk_score.desc())
                .limit(200)
            )
        )
        confirmed = set(
            db.scalars(
                select(Case.shipper_id).join(Outcome, Outcome.id == Case.current_outcome_id).where(Outcome.result == "confirmed")
            )
        )
    engine.dispose()
    return next((c.id for c in cases if c.shipper_id in confirmed), cases[0].id)


def shoot(url: str, database: str, port: str, report_file: Path, out: Path) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()

        def sign_in(name: str) -> None:
            page.goto(f"{url}/login")
            page.fill("input[name=username]", name)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state()

        sign_in("inspector")
        page.goto(f"{url}/cases/{case_to_show(database, port)}")
        page.screenshot(path=str(out / "case.png"), full_page=True)
        page.context.clear_cookies()
        sign_in("sup")
        page.goto(f"{url}/supervision?weeks=26")
        page.screenshot(path=str(out / "supervision.png"), full_page=True)
        engine = make_engine(database)
        with Session(engine) as db:
            last_batch = db.scalar(select(Batch.id).order_by(Batch.id.desc()))
        engine.dispose()
        page.goto(f"{url}/batches/{last_batch}/report")
        page.screenshot(path=str(out / "batch-report-triage.png"), full_page=True)
        page.goto(report_file.as_uri())
        page.screenshot(path=str(out / "batch-report.png"), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--rows", type=int, default=120_000, help="labelled history lines of the demo")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="misdeclare-screenshots-") as folder:
        workdir = Path(folder)
        run_demo(workdir, args.rows)
        os.chdir(workdir)  # the champion is registered in this folder's MLflow store
        scored, truth = workdir / "demo" / "scored.csv", workdir / "demo" / "incoming.truth.csv"
        port = read_manifest(scored).query("channel == 'red'")["port_of_discharge"].value_counts().index[0]
        database = f"sqlite:///{workdir / 'screens.db'}"
        seed(database, scored, truth, port)
        settings = Settings(
            database_url=database,
            model_uri=DEFAULT_MODEL_URI,
            history_dir=str(workdir / "demo" / "history"),
            argon2_time_cost=1,
            argon2_memory_kib=1024,
        )
        server, url = serve_in_thread(settings)
        try:
            shoot(url, database, port, workdir / "demo" / "report.html", out)
        finally:
            server.should_exit = True
    print(f"screenshots -> {out}")


if __name__ == "__main__":
    main()
