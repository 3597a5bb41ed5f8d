"""Load test of ``misdeclare serve``: fifty users at once (48 inspectors, 2 scoring clients), on loopback only.

Run ``make loadtest`` (both databases; ``DB=sqlite`` or ``DB=postgresql`` for one), or
``.venv/bin/python bench/loadtest.py --database sqlite postgresql --users 50 --seconds 60``. It

1. runs ``misdeclare demo`` once in a temporary folder (champion registered, a later quarter scored);
2. for each ``--database``: a fresh triage database (a SQLite file, or a new PostgreSQL database
   created next to ``--postgres-url`` and dropped afterwards), the demo's scored quarter loaded into
   it (``misdeclare triage load``), a copy of the demo's history store, ``--users`` minus ``--scorers`` inspectors spread
   over the ports and a supervisor with an API token;
3. starts ``misdeclare serve --workers W`` on a free loopback port (separate processes, as in
   production; each web worker runs ``MISDECLARE_SCORING_WORKERS`` scoring processes);
4. lets every simulated user loop until ``--seconds`` have passed (it stops by itself):

   - an **inspector** opens the queue page, thinks, opens a case of its port, thinks (reads it), records
     an outcome on it (the form posts and the browser follows the redirect to the case page), thinks;
     the think time is drawn uniformly from ``--think`` (default 1–3 s, like locust's
     ``between(1, 3)``); ``--think 0 0`` makes every user a closed loop (saturation);
   - a **scoring client** (``--scorers`` of the ``--users``, a machine sending declarations as they
     arrive) sends ``POST /score`` with 100 lines of the demo's manifest, waits the same think time,
     again;

5. prints p50 / p99 per route, the count of 5xx answers, and the outcomes the clients saw recorded
   against the outcomes counted in the database afterwards (lost outcomes), with the load average of
   the machine before and after (``os.getloadavg``: the figures depend on what else runs).

Every request goes to 127.0.0.1 with a 60 s timeout; the run ends after ``--seconds`` plus the
requests in flight. The script only measures, it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from serve.triage import accounts, audit
from serve.triage.db import Case, Outcome, make_engine
from serve.triage.settings import Settings

PASSWORD = "loadtest-only-password-2026"
SCORE_LINES = 100
REQUEST_TIMEOUT = 60.0
DEMO_ROWS = 120_000
SIGN_IN_AT_ONCE = 4
MISDECLARE = str(Path(sys.executable).with_name("misdeclare"))
ROUTES = ("GET / (queue)", "GET /cases/{id}", "POST /cases/{id}/outcome", "POST /score (100 lines)")


def run_demo(folder: Path) -> None:
    """``misdeclare demo`` in ``folder``: its files in ``folder/demo``, its MLflow store ``folder/mlflow.db``."""
    subprocess.run(
        [MISDECLARE, "demo", "--rows", str(DEMO_ROWS), "--workdir", "demo"],
        cwd=folder,
        env={**os.environ, "MISDECLARE_DATABASE_URL": f"sqlite:///{folder / 'demo.db'}", **mlflow_env(folder)},
        check=True,
        stdout=subprocess.DEVNULL,
    )


def mlflow_env(folder: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}


@contextmanager
def triage_database(kind: str, folder: Path, postgres_url: str | None):
    """A new, empty triage database URL of ``kind``; a PostgreSQL one is dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'triage.db'}"
        return
    if not postgres_url:
        raise SystemExit(
            '--database postgresql needs --postgres-url (or MISDECLARE_TEST_POSTGRES_URL): eval "$(bash .ci/postgres.sh)"'
        )
    name = f"misdeclare_load_{secrets.token_hex(4)}"
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def prepare(folder: Path, demo: Path, database: str, users: int) -> tuple[dict[str, list[str]], str, Path]:
    """Queue, history store and users of one run: ``{port: [inspector names]}``, the supervisor's
    API token and the run's history folder."""
    env = {**os.environ, "MISDECLARE_DATABASE_URL": database}
    subprocess.run([MISDECLARE, "triage", "load", str(demo / "scored.csv")], env=env, check=True, stdout=subprocess.DEVNULL)
    history = folder / "history"
    shutil.copytree(demo / "history", history)
    engine = make_engine(database)
    hasher = accounts.make_hasher(Settings(database_url=database))
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
            who = accounts.Principal(user.id, name, "inspector", frozenset([port]), "cli", "cli")
            accounts.change_password(db, hasher, who, one_time, PASSWORD)
            inspectors[port].append(name)
        user, _ = accounts.create_user(db, hasher, origin, "scorer", "supervisor", [])
        _, token = accounts.create_token(db, origin, user.id, "loadtest", 1)
    engine.dispose()
    return dict(inspectors), token, history


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    folder: Path, demo_root: Path, database: str, history: Path, workers: int, scoring_workers: int, scoring_nice: int
) -> tuple[subprocess.Popen, str]:
    """``misdeclare serve`` on a free loopback port; returns once its sign-in page answers."""
    port = free_port()
    env = {
        **os.environ,
        **mlflow_env(demo_root),
        "MISDECLARE_DATABASE_URL": database,
        "MISDECLARE_COOKIE_SECURE": "false",
        "MISDECLARE_HISTORY_DIR": str(history),
        "MISDECLARE_SCORING_WORKERS": str(scoring_workers),
        "MISDECLARE_SCORING_NICE": str(scoring_nice),
    }
    log = (folder / "serve.log").open("wb")
    server = subprocess.Popen(
        [MISDECLARE, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=folder,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and server.poll() is None:
        # Every worker has started (uvicorn logs it once per worker) and the sign-in page answers.
        if (folder / "serve.log").read_text().count("Application startup complete") >= workers:
            try:
                if httpx.get(f"{url}/login", timeout=2).status_code == 200:
                    return server, url
            except httpx.TransportError:
                pass
        time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"misdeclare serve did not start: {(folder / 'serve.log').read_text()[-2000:]}")


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM: uvicorn stops its workers, each stops its scoring pool."""
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


class Recorder:
    """Latencies and status codes per route."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, list[int]] = defaultdict(list)
        self.failures: dict[str, int] = defaultdict(int)  # no answer (timeout, connection reset)
        self.outcomes_seen = 0
        self.cpu_seconds: dict[str, float] = {}

    async def timed(self, route: str, request) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await request
        except httpx.TransportError:
            self.failures[route] += 1
            return None
        self.seconds[route].append(time.perf_counter() - started)
        self.statuses[route].append(response.status_code)
        return response


class Thinking:
    """Think time of one simulated inspector: uniform in ``[low, high]`` seconds, never past the end."""

    def __init__(self, low: float, high: float, until: float, seed: int):
        self.low, self.high, self.until = low, high, until
        self.rng = np.random.default_rng(seed)

    async def pause(self) -> None:
        if self.high > 0:
            await asyncio.sleep(min(float(self.rng.uniform(self.low, self.high)), max(0.0, self.until - time.monotonic())))


async def sign_in(url: str, name: str, gate: asyncio.Semaphore) -> httpx.AsyncClient:
    """A client signed in as ``name`` (before the timed window: argon2 at its production cost makes
    fifty sign-ins at one instant a storm no office sees, not the steady state measured here)."""
    client = httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, follow_redirects=True)
    async with gate:
        form = await client.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
        signed = await client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": token})
        signed.raise_for_status()
    return client


async def inspector(client: httpx.AsyncClient, case_ids: list[int], thinking: Thinking, record: Recorder) -> None:
    """Queue page, think, case page, think, outcome (and the case page it redirects to), think; again."""
    async with contextlib.aclosing(client):
        csrf = None
        await thinking.pause()  # inspectors do not all start at the same instant
        while time.monotonic() < thinking.until:
            page = await record.timed(ROUTES[0], client.get("/"))
            if page is not None and page.status_code == 200:
                csrf = csrf or re.search(r'"X-CSRF-Token": "([^"]+)"', page.text).group(1)
            await thinking.pause()
            if not case_ids or csrf is None or time.monotonic() >= thinking.until:
                continue
            case_id = case_ids.pop()
            await record.timed(ROUTES[1], client.get(f"/cases/{case_id}"))
            await thinking.pause()
            if time.monotonic() >= thinking.until:
                break
            decided = await record.timed(
                ROUTES[2],
                client.post(f"/cases/{case_id}/outcome", data={"csrf_token": csrf, "result": "clean", "note": "load test"}),
            )
            if decided is not None and decided.status_code == 200 and "Record correction" in decided.text:
                record.outcomes_seen += 1
            await thinking.pause()


async def scorer(url: str, token: str, lines: list[dict], thinking: Thinking, record: Recorder) -> None:
    """``POST /score`` with 100 consecutive lines of the manifest, think, again (a machine client that
    sends declarations as they arrive)."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, headers=headers) as client:
        await thinking.pause()
        while time.monotonic() < thinking.until:
            start = int(thinking.rng.integers(0, len(lines) - SCORE_LINES))
            await record.timed(ROUTES[3], client.post("/score", json={"lines": lines[start : start + SCORE_LINES]}))
            await thinking.pause()


def score_lines(demo: Path) -> list[dict]:
    """The demo's later manifest as ``POST /score`` lines (ids prefixed so that they are new lines)."""
    frame = pd.read_csv(demo / "incoming.csv", dtype=str, keep_default_na=False)
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


async def drive(
    url: str,
    inspectors: dict[str, list[str]],
    token: str,
    database: str,
    lines: list[dict],
    args: argparse.Namespace,
    record: Recorder,
    server: int,
) -> None:
    engine = make_engine(database)
    with Session(engine) as db:
        open_cases = pd.read_sql(select(Case.id, Case.port).where(Case.queue_state == "open"), db.connection())
    engine.dispose()
    gate = asyncio.Semaphore(SIGN_IN_AT_ONCE)
    names = [name for port_names in inspectors.values() for name in port_names]
    clients = dict(zip(names, await asyncio.gather(*(sign_in(url, name, gate) for name in names)), strict=True))
    until = time.monotonic() + args.seconds
    tasks = []
    for port, port_names in inspectors.items():
        ids = open_cases.loc[open_cases["port"] == port, "id"].tolist()
        for k, name in enumerate(port_names):
            thinking = Thinking(args.think[0], args.think[1], until, seed=len(tasks))
            tasks.append(inspector(clients[name], ids[k :: len(port_names)], thinking, record))
    tasks += [
        scorer(url, token, lines, Thinking(args.think[0], args.think[1], until, seed=1_000 + i), record)
        for i in range(args.scorers)
    ]
    cpu_before = {**server_cpu_seconds(server, args.workers), **machine_cpu_seconds(), "load generator": time.process_time()}
    await asyncio.gather(*tasks)
    cpu_after = {**server_cpu_seconds(server, args.workers), **machine_cpu_seconds(), "load generator": time.process_time()}
    record.cpu_seconds = {kind: cpu_after[kind] - cpu_before[kind] for kind in cpu_before}


def count_outcomes(database: str) -> int:
    engine = make_engine(database)
    with Session(engine) as db:
        stored = db.scalar(select(func.count(Outcome.id)).where(Outcome.note == "load test"))
    engine.dispose()
    return int(stored or 0)


def server_cpu_seconds(root: int, workers: int) -> dict[str, float]:
    """CPU seconds (user + system) the server's processes have used so far, from ``/proc``.

    ``web``: the uvicorn process and its web workers; ``scoring``: the scoring workers (children of
    the web workers, or of the one web process when ``workers == 1``). On a machine shared with
    other work, CPU per request says what the server costs whatever the queueing for the CPU.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, ..., utime (12th), stime (13th)
        processes[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks)
    web = [root] + ([pid for pid, (ppid, _) in processes.items() if ppid == root] if workers > 1 else [])
    scoring = [pid for pid, (ppid, _) in processes.items() if ppid in web and pid not in web]
    return {"web": sum(processes[p][1] for p in web if p in processes), "scoring": sum(processes[p][1] for p in scoring)}


def machine_cpu_seconds() -> dict[str, float]:
    """CPU seconds of the whole machine so far (``/proc/stat``): ``machine busy`` (every core, any
    process) and ``steal`` (taken by other virtual machines on the same host)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    ticks = os.sysconf("SC_CLK_TCK")
    return {"machine busy": (user + nice + system + irq + softirq) / ticks, "steal": steal / ticks}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def one_run(kind: str, root: Path, demo_root: Path, lines: list[dict], args: argparse.Namespace) -> dict:
    """Prepare, serve and drive one database; the run's summary."""
    folder = root / kind
    folder.mkdir()
    with triage_database(kind, folder, args.postgres_url) as database:
        inspectors, token, history = prepare(folder, demo_root / "demo", database, args.users - args.scorers)
        server, url = start_server(folder, demo_root, database, history, args.workers, args.scoring_workers, args.scoring_nice)
        record = Recorder()
        load_before = load_average()
        try:
            asyncio.run(drive(url, inspectors, token, database, lines, args, record, server.pid))
        finally:
            load_after = load_average()
            stop_server(server)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(folder / "serve.log", args.out.with_name(f"{args.out.stem}-serve-{kind}.log"))
        stored = count_outcomes(database)
    summary = {
        "database": kind,
        "users": args.users,
        "inspectors": args.users - args.scorers,
        "scorers": args.scorers,
        "seconds": args.seconds,
        "think_seconds": list(args.think),
        "web_workers": args.workers,
        "scoring_workers_per_web_worker": args.scoring_workers,
        "scoring_nice": args.scoring_nice,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "routes": {},
        "server_errors": sum(s >= 500 for codes in record.statuses.values() for s in codes),
        "no_answer": sum(record.failures.values()),
        "outcomes_seen": record.outcomes_seen,
        "outcomes_stored": stored,
        "cpu_seconds": record.cpu_seconds,
    }
    for route in ROUTES:
        seconds = np.asarray(record.seconds.get(route, []))
        codes = record.statuses.get(route, [])
        summary["routes"][route] = {
            "requests": len(seconds),
            "p50_ms": float(np.quantile(seconds, 0.5)) * 1000 if len(seconds) else None,
            "p90_ms": float(np.quantile(seconds, 0.9)) * 1000 if len(seconds) else None,
            "p99_ms": float(np.quantile(seconds, 0.99)) * 1000 if len(seconds) else None,
            "server_errors": sum(s >= 500 for s in codes),
            "client_errors": sum(400 <= s < 500 for s in codes),
            "no_answer": record.failures.get(route, 0),
        }
    return summary


def print_summary(summary: dict) -> None:
    think = summary["think_seconds"]
    print(
        f"\n{summary['database']}: {summary['users']} users, {summary['inspectors']} inspectors and "
        f"{summary['scorers']} scoring clients (think {think[0]:g}-{think[1]:g} s), {summary['seconds']:.0f} s; "
        f"serve --workers {summary['web_workers']}, "
        f"{summary['scoring_workers_per_web_worker']} scoring worker(s) each (nice {summary['scoring_nice']}); "
        "load average (1, 5, 15 min) "
        f"before {summary['load_average_before']}, after {summary['load_average_after']}"
    )
    print("| route | requests | p50 ms | p90 ms | p99 ms | 5xx | 4xx | no answer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for route, r in summary["routes"].items():
        p50, p90, p99 = ("" if r[k] is None else f"{r[k]:,.0f}" for k in ("p50_ms", "p90_ms", "p99_ms"))
        errors = f"{r['server_errors']} | {r['client_errors']} | {r['no_answer']}"
        print(f"| {route} | {r['requests']:,} | {p50} | {p90} | {p99} | {errors} |")
    pages = sum(summary["routes"][route]["requests"] for route in ROUTES[:3])
    scored = summary["routes"][ROUTES[3]]["requests"]
    cpu = summary["cpu_seconds"]
    print(
        f"server CPU in the window: web processes {cpu['web']:.1f} s ({1000 * cpu['web'] / max(pages, 1):.0f} ms per page "
        f"request), scoring workers {cpu['scoring']:.1f} s ({1000 * cpu['scoring'] / max(scored, 1):.0f} ms per POST /score)"
    )
    print(
        f"the machine in the window: {cpu['machine busy']:.1f} CPU seconds busy of {os.cpu_count() * summary['seconds']:.0f} "
        f"({os.cpu_count()} cores; the load generator {cpu['load generator']:.1f} s of them), "
        f"{cpu['steal']:.1f} s stolen by other virtual machines"
    )
    print(
        f"server errors: {summary['server_errors']}; outcomes recorded as seen by the clients: "
        f"{summary['outcomes_seen']:,}; in the database: {summary['outcomes_stored']:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite"])
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("MISDECLARE_TEST_POSTGRES_URL"),
        help="a PostgreSQL server URL whose user may create databases (the run creates and drops its own)",
    )
    parser.add_argument("--users", type=int, default=50, help="users at once: inspectors and scoring clients")
    parser.add_argument("--scorers", type=int, default=2, help="of the users, API clients sending POST /score with 100 lines")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--think", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"))
    parser.add_argument("--workers", type=int, default=2, help="misdeclare serve --workers")
    parser.add_argument("--scoring-workers", type=int, default=2, help="MISDECLARE_SCORING_WORKERS (per web worker)")
    parser.add_argument("--scoring-nice", type=int, default=10, help="MISDECLARE_SCORING_NICE")
    parser.add_argument("--out", type=Path, default=Path("bench/out/loadtest.json"))
    parser.add_argument(
        "--demo",
        type=Path,
        help="a folder where 'misdeclare demo --workdir demo' ran already (MLFLOW_TRACKING_URI=sqlite:///FOLDER/mlflow.db), "
        "to skip the demo; it is only read",
    )
    args = parser.parse_args()
    summaries = []
    with tempfile.TemporaryDirectory(prefix="misdeclare-loadtest-") as name:
        root = Path(name)
        demo_root = args.demo.resolve() if args.demo else root
        if args.demo is None:
            run_demo(root)
        lines = score_lines(demo_root / "demo")
        for kind in args.database:
            summaries.append(one_run(kind, root, demo_root, lines, args))
            print_summary(summaries[-1])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summaries, indent=1))


if __name__ == "__main__":
    main()
