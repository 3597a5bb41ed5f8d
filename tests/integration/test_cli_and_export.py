"""``misdeclare triage load / export / add-user`` and ``misdeclare serve``; the export round trip."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from features.schema import LABEL_COLUMNS, validate_manifest
from serve.cli_triage import triage_app
from serve.triage.db import Case
from serve.triage.synthetic import synthetic_scored_batch


@pytest.fixture
def cli(db_path: Path, monkeypatch):
    """``cli(*args)``: run ``misdeclare triage ARGS`` on the test's database."""
    monkeypatch.setenv("MISDECLARE_DATABASE_URL", f"sqlite:///{db_path}")
    monkeypatch.setenv("MISDECLARE_ARGON2_TIME_COST", "1")
    monkeypatch.setenv("MISDECLARE_ARGON2_MEMORY_KIB", "1024")
    runner = CliRunner()
    return lambda *args: runner.invoke(triage_app, [str(a) for a in args])


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_load_twice_inserts_once(cli, tmp_path, suffix):
    frame = synthetic_scored_batch(120, seed=11, id_prefix="CLI")
    path = tmp_path / f"scored{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    first = cli("load", path, "--date", "2025-06-10")
    second = cli("load", path, "--date", "2025-06-10")
    assert first.exit_code == 0, first.output
    assert first.output.splitlines()[0].startswith(
        f"scored{suffix}: read 120, new 120, already loaded 0, rejected 0 (queue day 2025-06-10"
    )
    assert second.output.splitlines()[0].startswith(f"scored{suffix}: read 120, new 0, already loaded 120, rejected 0")


def test_load_reports_rejected_lines(cli, tmp_path):
    frame = synthetic_scored_batch(10, seed=12, id_prefix="BAD")
    frame.loc[3, "risk_score"] = 1.7
    frame.loc[5, "hs_code"] = "zinc"
    path = tmp_path / "scored.csv"
    frame.to_csv(path, index=False)
    result = cli("load", path)
    assert "read 10, new 8, already loaded 0, rejected 2" in result.output
    assert "rejected BAD012-0000005/1: hs_code must be 6-10 digits, got 'zinc'" in result.output
    assert "rejected BAD012-0000003/1: risk_score must be a number in [0, 1]" in result.output


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("scored.txt", "a\n1\n", "unknown format (use .csv, .csv.gz or .parquet)"),
        ("scored.csv", "declaration_id\nX\n", "missing required column 'declared_at'"),
        (
            "scored.csv",
            "declaration_id,declared_at,hs_code,gross_weight_kg,declared_value_usd,origin_country,"
            "export_country\nX,2025-01-01,790111,1,1,CN,TH\n",
            "not a scored batch, missing column 'risk_score'",
        ),
    ],
)
def test_load_refuses_a_bad_file(cli, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    result = cli("load", path)
    assert result.exit_code == 1
    assert message in result.output and path.name in result.output


def _decide(client, auth, case_id: int, body: dict) -> dict:
    response = client.post(f"/api/cases/{case_id}/outcomes", headers=auth("sup"), json=body)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_round_trip_gives_labels_training_accepts(client, auth, cli, tmp_path, suffix):
    queue = client.get("/api/queue", params={"per_page": 10}, headers=auth("sup")).json()["cases"]
    explored = client.get("/api/queue", params={"selected_by": "exploration"}, headers=auth("sup")).json()["cases"][0]
    first = _decide(
        client, auth, queue[0]["id"], {"result": "confirmed", "found_commodity": "gallium", "found_quantity_kg": 12.5}
    )
    _decide(
        client, auth, queue[0]["id"], {"result": "confirmed", "found_commodity": "germanium", "corrects_outcome_id": first["id"]}
    )
    _decide(client, auth, queue[1]["id"], {"result": "clean"})
    _decide(client, auth, queue[2]["id"], {"result": "not_inspected", "note": "container already released"})
    _decide(client, auth, explored["id"], {"result": "clean"})
    out = tmp_path / f"labels{suffix}"
    result = cli("export", "--since", "2020-01-01", "--out", out)
    assert result.output.strip() == f"wrote 3 labelled lines to {out}"
    raw = pd.read_csv(out, dtype=str, keep_default_na=False, na_values=[""]) if suffix == ".csv" else pd.read_parquet(out)
    checked = validate_manifest(raw, out.name)
    assert checked.quarantine.empty, checked.quarantine.to_dict("records")
    labels = checked.valid.set_index("declaration_id")
    expected = {
        queue[0]["declaration_id"]: (1, 1, "germanium", "model", 1.0),
        queue[1]["declaration_id"]: (1, 0, "none", "model", 1.0),
        explored["declaration_id"]: (1, 0, "none", "exploration", explored["selection_probability"]),
    }
    assert {
        index: (
            row.inspected,
            row.misdeclared,
            row.found_commodity,
            row.selected_by,
            pytest.approx(float(row.selection_probability)),
        )
        for index, row in labels.iterrows()
    } == expected
    assert 0 < explored["selection_probability"] < 1
    assert set(LABEL_COLUMNS) <= set(labels.columns)


def test_export_since_leaves_older_outcomes_out(client, auth, cli, tmp_path):
    case = client.get("/api/queue", headers=auth("sup")).json()["cases"][0]
    _decide(client, auth, case["id"], {"result": "clean"})
    result = cli("export", "--since", "2999-01-01", "--out", tmp_path / "labels.csv")
    assert result.output.strip() == f"wrote 0 labelled lines to {tmp_path / 'labels.csv'}"


def test_export_refuses_unknown_format(cli, tmp_path):
    result = cli("export", "--since", "2020-01-01", "--out", tmp_path / "labels.xlsx")
    assert (result.exit_code, result.output.strip()) == (2, "error: --out must end in .csv or .parquet")


def test_add_user_prints_a_one_time_password_that_signs_in(cli, client, sign_in):
    result = cli("add-user", "maria", "--role", "inspector", "--port", "USLAX", "--port", "USLGB")
    password = re.search(r"one-time password \(shown once\): (\S+)", result.output).group(1)
    sign_in(client, "maria", password)
    assert client.get("/", follow_redirects=False).headers["location"] == "/password"
    assert cli("add-user", "maria").output.strip() == "error: user 'maria' already exists"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_serve(tmp_path: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MISDECLARE_DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}"}
    code = "import typer; from serve.cli_triage import serve; typer.run(serve)"
    return subprocess.Popen(
        [sys.executable, "-c", code, "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_until_up(port: int) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _run_once(tmp_path: Path) -> str:
    port = _free_port()
    process = _start_serve(tmp_path, port)
    try:
        assert _wait_until_up(port).status_code == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    return output


@pytest.mark.slow  # starts misdeclare serve twice
def test_serve_creates_an_admin_with_a_one_time_password_on_first_start_only(tmp_path):
    first = _run_once(tmp_path)
    second = _run_once(tmp_path)
    passwords = re.findall(r"created user 'admin' with one-time password (\S+)", first)
    assert len(passwords) == 1 and len(passwords[0]) == 16
    assert "one-time password" not in second
    assert "misdeclare triage on http://127.0.0.1:" in second


def test_a_batch_scored_by_the_real_model_loads_into_the_queue(cli, engine, tmp_path, model_dir, labelled_manifest):
    from models.bundle import load_bundle
    from models.predict import score_frame

    lines = validate_manifest(labelled_manifest(n_rows=300, seed=3), "history").valid
    scored = score_frame(load_bundle(str(model_dir)), lines)
    scored.to_parquet(tmp_path / "scored.parquet")
    result = cli("load", tmp_path / "scored.parquet")
    flagged = int(scored["channel"].isin(["red", "yellow"]).sum())
    green_per_port = scored[scored["channel"] == "green"].groupby("port_of_discharge").size()
    with Session(engine) as db:
        queued = db.scalar(
            select(func.count(Case.id)).where(
                Case.batch_id == db.scalar(select(func.max(Case.batch_id))), Case.queue_state == "open"
            )
        )
    assert result.output.splitlines()[0].startswith("scored.parquet: read 300, new 300, already loaded 0, rejected 0")
    assert queued == flagged + int(green_per_port.clip(upper=4).sum())
