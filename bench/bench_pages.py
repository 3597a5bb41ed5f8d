"""Benchmark: how long the queue, case, supervision and batch-report pages take to answer.

Run ``make bench`` (or ``.venv/bin/python bench/bench_pages.py``). It seeds a SQLite triage database
with ``--weeks`` weekly batches of ``--lines`` synthetic scored lines (parties recur across weeks, so
case pages have party histories), decides every queued case of all weeks but the last, then requests
each page ``--repeat`` times in-process (FastAPI's TestClient, a signed-in session) and prints p50
and p99 per page and their ratio to the sign-in page's p50 measured in the same run (the floor of a
rendered page: session, template, no query).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from serve.api import create_app
from serve.triage import accounts, audit
from serve.triage.cases import OutcomeInput, record_outcome
from serve.triage.db import Batch, Case, make_engine
from serve.triage.loading import load_scored_file
from serve.triage.migrate import upgrade
from serve.triage.settings import Settings
from serve.triage.synthetic import synthetic_scored_batch

PASSWORD = "bench-only-password-2026"


def seed(database: Path, weeks: int, lines: int) -> Settings:
    settings = Settings(
        database_url=f"sqlite:///{database}",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        history_dir=str(database.parent / "history"),
        cookie_secure=False,
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    origin = audit.Origin(actor="bench", user_id=None, client="cli", via="cli")
    with Session(engine) as db, db.begin():
        user, one_time = accounts.create_user(db, accounts.make_hasher(settings), origin, "sup", "supervisor", [])
        supervisor = accounts.Principal(user.id, "sup", "supervisor", frozenset(), "cli", "cli")
        accounts.change_password(db, accounts.make_hasher(settings), supervisor, one_time, PASSWORD)
    rng = np.random.default_rng(0)
    for week in range(weeks):
        queue_day = date.today() - timedelta(weeks=weeks - 1 - week)
        path = database.parent / f"batch-{week}.csv"
        synthetic_scored_batch(
            lines, seed=week, ports=("USLAX", "USHOU", "USNYC"), declared_at=queue_day - timedelta(days=2), id_prefix=f"W{week}-"
        ).to_csv(path, index=False)
        report = load_scored_file(engine, path, origin, queue_day, rng)
        if week < weeks - 1:
            with Session(engine) as db, db.begin():
                for case in db.scalars(select(Case).where(Case.batch_id == report.batch_id, Case.queue_state == "open")):
                    record_outcome(
                        db,
                        supervisor,
                        case.id,
                        OutcomeInput("confirmed", found_commodity="antimony")
                        if rng.uniform() < case.risk_score
                        else OutcomeInput("clean"),
                    )
    engine.dispose()
    return settings


def timings(client: TestClient, paths: list[str]) -> list[float]:
    seconds = []
    for path in paths:
        started = time.perf_counter()
        response = client.get(path)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("bench/out/pages.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="misdeclare-bench-pages-") as folder:
        database = Path(folder) / "triage.db"
        settings = seed(database, args.weeks, args.lines)
        engine = make_engine(settings.database_url)
        with Session(engine) as db:
            open_ids = list(db.scalars(select(Case.id).where(Case.queue_state == "open").order_by(Case.id)))
            last_batch = db.scalar(select(Batch.id).order_by(Batch.id.desc()))
        engine.dispose()
        picks = np.random.default_rng(1).choice(open_ids, size=args.repeat)
        with TestClient(create_app(settings)) as client:
            form = client.get("/login")
            token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
            client.post("/login", data={"username": "sup", "password": PASSWORD, "csrf_token": token})
            pages = {
                "sign-in page (floor)": ["/login"] * args.repeat,
                "queue, first page": ["/"] * args.repeat,
                "case page": [f"/cases/{i}" for i in picks],
                "supervision": ["/supervision"] * max(5, args.repeat // 6),
                "batch report": [f"/batches/{last_batch}/report"] * max(5, args.repeat // 6),
            }
            client.get("/")  # warm the templates
            results = {name: timings(client, paths) for name, paths in pages.items() if _exists(client, paths[0])}
    floor = statistics.median(results["sign-in page (floor)"])
    print(f"| page ({args.weeks} weeks × {args.lines:,} lines, SQLite) | p50 ms | p99 ms | p50 / floor |")
    print("|---|---:|---:|---:|")
    summary = {}
    for name, seconds in results.items():
        p50, p99 = statistics.median(seconds), float(np.quantile(seconds, 0.99))
        summary[name] = {"p50_ms": p50 * 1000, "p99_ms": p99 * 1000, "ratio_to_floor": p50 / floor}
        print(f"| {name} | {p50 * 1000:.0f} | {p99 * 1000:.0f} | {p50 / floor:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))


def _exists(client: TestClient, path: str) -> bool:
    """Pages a tree before the pictures lacks (supervision, batch report) are skipped, not failed."""
    return client.get(path).status_code != 404


if __name__ == "__main__":
    main()
