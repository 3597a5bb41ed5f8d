"""Load test of ``misdeclare serve``: many inspectors and a scoring client at once, on loopback only.

Run ``make loadtest`` (or ``.venv/bin/python bench/loadtest.py --users 50 --seconds 60``). It

1. runs ``misdeclare demo`` in a temporary folder (champion registered, a scored quarter loaded into
   the triage database), adds ``--users`` inspectors spread over the ports plus a supervisor with an
   API token;
2. starts ``misdeclare serve`` on a free loopback port (a separate process, as in production);
3. lets every user loop until ``--seconds`` have passed (it stops by itself): the queue page, a case
   page of its port, recording an outcome on one of its own cases, and — for the scoring users —
   ``POST /score`` with 100 lines of the demo's manifest;
4. prints p50 / p99 per route, the count of 5xx answers, and the outcomes the clients saw recorded
   against the outcomes counted in the database afterwards (lost outcomes).

Figures depend on the machine: the script only measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serve.triage import accounts, audit
from serve.triage.db import Case, Outcome, make_engine
from serve.triage.settings import Settings

PASSWORD = "loadtest-only-password-2026"
SCORE_LINES = 100


def prepare(folder: Path, users: int) -> tuple[dict[str, list[str]], str, str]:
    """Demo data and users: ``{port: [inspector names]}``, the supervisor's API token, the database URL."""
    misdeclare = str(Path(sys.executable).with_name("misdeclare"))
    subprocess.run(
        [misdeclare, "demo", "--rows", "120000", "--workdir", "demo"], cwd=folder, check=True, stdout=subprocess.DEVNULL
    )
    database = f"sqlite:///{folder / 'misdeclare.db'}"
    settings = Settings(database_url=database)
    engine = make_engine(database)
    hasher = accounts.make_hasher(settings)
    origin = audit.Origin(actor="loadtest", user_id=None, client="cli", via="cli")
    with Session(engine) as db:
        ports = [
            p
            for (p,) in db.execute(
                select(Case.port).where(Case.queue_state == "open").group_by(Case.port).order_by(func.count().desc())
            )
        ]
    inspectors: dict[str, list[str]] = defaultdict(list)
    with Session(engine) as db, db.begin():
        for i in range(users):
            port = ports[i % len(ports)]
            name = f"inspector{i:02d}"
            user, one_time = accounts.create_user(db, hasher, origin, name, "inspector", [port])
            accounts.change_password(
                db, hasher, accounts.Principal(user.id, name, "inspector", frozenset([port]), "cli", "cli"), one_time, PASSWORD
            )
            inspectors[port].append(name)
        user, _ = accounts.create_user(db, hasher, origin, "scorer", "supervisor", [])
        _, token = accounts.create_token(db, origin, user.id, "loadtest", 1)
    engine.dispose()
    return dict(inspectors), token, database


def start_server(folder: Path, database: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "MISDECLARE_DATABASE_URL": database,
        "MISDECLARE_COOKIE_SECURE": "false",
        "MISDECLARE_HISTORY_DIR": str(folder / "demo" / "history"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
    }
    misdeclare = str(Path(sys.executable).with_name("misdeclare"))
    server = subprocess.Popen(
        [misdeclare, "serve", "--port", str(port)], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/login", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"misdeclare serve did not start: {server.stderr.read().decode()[-2000:]}")


class Recorder:
    """Latencies and status codes per route."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, list[int]] = defaultdict(list)
        self.outcomes_seen = 0

    async def timed(self, route: str, request):
        started = time.perf_counter()
        response = await request
        self.seconds[route].append(time.perf_counter() - started)
        self.statuses[route].append(response.status_code)
        return response


async def inspector(url: str, name: str, case_ids: list[int], until: float, record: Recorder) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=60, follow_redirects=True) as client:
        form = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        await client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token})
        csrf = None
        while time.monotonic() < until:
            page = await record.timed("GET / (queue)", client.get("/"))
            csrf = csrf or re.search(r'"X-CSRF-Token": "([^"]+)"', page.text).group(1)
            if not case_ids:
                continue
            case_id = case_ids.pop()
            await record.timed("GET /cases/{id}", client.get(f"/cases/{case_id}"))
            decided = await record.timed(
                "POST /cases/{id}/outcome",
                client.post(f"/cases/{case_id}/outcome", data={"csrf_token": csrf, "result": "clean", "note": "load test"}),
            )
            if decided.status_code == 200 and "Record correction" in decided.text:
                record.outcomes_seen += 1


async def scorer(url: str, token: str, lines: list[dict], until: float, record: Recorder) -> None:
    rng = np.random.default_rng(abs(hash(token)) % 2**32)
    async with httpx.AsyncClient(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
        while time.monotonic() < until:
            start = int(rng.integers(0, len(lines) - SCORE_LINES))
            await record.timed(
                "POST /score (100 lines)", client.post("/score", json={"lines": lines[start : start + SCORE_LINES]})
            )


def score_lines(folder: Path) -> list[dict]:
    frame = pd.read_csv(folder / "demo" / "incoming.csv", dtype=str, keep_default_na=False)
    frame = frame.assign(declaration_id="LOAD-" + frame["declaration_id"])
    lines = []
    for row in frame.to_dict("records"):
        line = {k: v for k, v in row.items() if v != ""}
        for key in ("gross_weight_kg", "net_weight_kg", "quantity", "declared_value_usd"):
            if key in line:
                line[key] = float(line[key])
        for key in ("line_no", "packages", "containers"):
            if key in line:
                line[key] = int(float(line[key]))
        lines.append(line)
    return lines


async def run(
    url: str, inspectors: dict[str, list[str]], token: str, database: str, seconds: float, scorers: int, record: Recorder
) -> None:
    engine = make_engine(database)
    with Session(engine) as db:
        open_cases = pd.read_sql(select(Case.id, Case.port).where(Case.queue_state == "open"), db.connection())
    engine.dispose()
    until = time.monotonic() + seconds
    tasks = []
    for port, names in inspectors.items():
        ids = open_cases.loc[open_cases["port"] == port, "id"].tolist()
        for k, name in enumerate(names):
            tasks.append(inspector(url, name, ids[k :: len(names)], until, record))
    lines = score_lines(Path(database.removeprefix("sqlite:///")).parent)
    tasks += [scorer(url, token, lines, until, record) for _ in range(scorers)]
    await asyncio.gather(*tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50, help="inspectors browsing and deciding")
    parser.add_argument("--scorers", type=int, default=2, help="API clients sending POST /score with 100 lines")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, default=Path("bench/out/loadtest.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="misdeclare-loadtest-") as name:
        folder = Path(name)
        inspectors, token, database = prepare(folder, args.users)
        server, url = start_server(folder, database)
        record = Recorder()
        try:
            asyncio.run(run(url, inspectors, token, database, args.seconds, args.scorers, record))
        finally:
            server.terminate()
            server.wait(timeout=30)
        engine = make_engine(database)
        with Session(engine) as db:
            stored = db.scalar(select(func.count(Outcome.id)).where(Outcome.note == "load test"))
        engine.dispose()
    summary = {
        "users": args.users,
        "scorers": args.scorers,
        "seconds": args.seconds,
        "routes": {},
        "server_errors": sum(s >= 500 for codes in record.statuses.values() for s in codes),
        "outcomes_seen": record.outcomes_seen,
        "outcomes_stored": int(stored or 0),
    }
    print(
        f"| route ({args.users} inspectors, {args.scorers} scoring clients, {args.seconds:.0f} s, SQLite) "
        "| requests | p50 ms | p99 ms | 5xx |"
    )
    print("|---|---:|---:|---:|---:|")
    for route, seconds in sorted(record.seconds.items()):
        p50, p99 = statistics.median(seconds) * 1000, float(np.quantile(seconds, 0.99)) * 1000
        errors = sum(s >= 500 for s in record.statuses[route])
        summary["routes"][route] = {"requests": len(seconds), "p50_ms": p50, "p99_ms": p99, "server_errors": errors}
        print(f"| {route} | {len(seconds):,} | {p50:,.0f} | {p99:,.0f} | {errors} |")
    print(f"outcomes recorded as seen by the clients: {record.outcomes_seen:,}; in the database: {summary['outcomes_stored']:,}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
