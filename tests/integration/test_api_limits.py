"""Request bodies: 422 with a message for bad ones, 413 for oversize ones; scoring; batch uploads."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from serve.triage.db import AuditEvent
from serve.triage.schemas import MAX_SCORE_LINES
from serve.triage.synthetic import synthetic_scored_batch

LINE = {
    "declaration_id": "D-1",
    "line_no": 1,
    "declared_at": "2025-06-01",
    "hs_code": "790111",
    "description": "zinc ingots",
    "gross_weight_kg": 1000.0,
    "declared_value_usd": 2900.0,
    "origin_country": "CN",
    "export_country": "TH",
    "port_of_discharge": "USLAX",
}


def _direct(bundle_dir, lines: list[dict]):
    """What models.predict.score_frame says for the lines, bypassing the service."""
    from features.schema import validate_manifest
    from models.bundle import load_bundle
    from models.predict import score_frame

    return score_frame(load_bundle(str(bundle_dir)), validate_manifest(pd.DataFrame(lines), "direct").valid)


def test_score_answers_what_the_model_says(client, auth, model_dir):
    lines = [LINE, {**LINE, "declaration_id": "D-2", "declared_value_usd": 52_000.0, "shipper_id": "S-TH-9"}]
    response = client.post("/score", headers=auth("lax"), json={"lines": lines})
    expected = _direct(model_dir, lines)
    assert response.status_code == 200
    assert response.json()["rejected"] == []
    assert response.json()["scores"] == [
        {
            "declaration_id": row.declaration_id,
            "line_no": 1,
            "risk_score": pytest.approx(row.risk_score),
            "channel": row.channel,
            "reasons": [p for p in (row.reasons or "").split(" | ") if p],
            "suspected_commodity": row.suspected_commodity,
            "model_version": row.model_version,
        }
        for row in expected.itertuples()
    ]


def test_score_rejects_lines_failing_manifest_rules_and_scores_the_rest(client, auth):
    heavier_net = {**LINE, "declaration_id": "D-2", "net_weight_kg": 1200.0}
    response = client.post("/score", headers=auth("lax"), json={"lines": [LINE, heavier_net, LINE]})
    body = response.json()
    assert [s["declaration_id"] for s in body["scores"]] == ["D-1"]
    assert body["rejected"] == [
        {"declaration_id": "D-2", "line_no": 1, "reason": "net_weight_kg <= gross_weight_kg does not hold"},
        {"declaration_id": "D-1", "line_no": 1, "reason": "duplicate (declaration_id, line_no)"},
    ]


def test_score_is_audited(client, auth, engine):
    client.post("/score", headers=auth("lax"), json={"lines": [LINE]})
    with Session(engine) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "score")).one()
    assert (event.actor, json.loads(event.detail)) == ("lax", {"lines": 1, "rejected": 0})


@pytest.mark.parametrize(
    ("change", "loc", "error_type"),
    [
        ({"gross_weight_kg": "1000"}, ["body", "lines", 0, "gross_weight_kg"], "float_type"),
        ({"gross_weight_kg": False}, ["body", "lines", 0, "gross_weight_kg"], "float_type"),
        ({"gross_weight_kg": -5.0}, ["body", "lines", 0, "gross_weight_kg"], "greater_than"),
        ({"line_no": 1.5}, ["body", "lines", 0, "line_no"], "int_type"),
        ({"hs_code": "79.01"}, ["body", "lines", 0, "hs_code"], "string_pattern_mismatch"),
        ({"declared_at": "01/06/2025"}, ["body", "lines", 0, "declared_at"], "date_from_datetime_parsing"),
        ({"transport_mode": "ship"}, ["body", "lines", 0, "transport_mode"], "literal_error"),
        ({"colour": "grey"}, ["body", "lines", 0, "colour"], "extra_forbidden"),
        ({"declaration_id": None}, ["body", "lines", 0, "declaration_id"], "string_type"),
    ],
)
def test_bad_score_body_422_says_where_and_what(client, auth, change, loc, error_type):
    response = client.post("/score", headers=auth("lax"), json={"lines": [{**LINE, **change}]})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, error_type)]
    assert errors[0]["msg"]


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        ({"lines": []}, "too_short"),
        ({"lines": [LINE] * (MAX_SCORE_LINES + 1)}, "too_long"),
        ({}, "missing"),
    ],
)
def test_score_batch_size_422(client, auth, body, error_type):
    response = client.post("/score", headers=auth("lax"), json=body)
    assert [e["type"] for e in response.json()["detail"]] == [error_type]


def test_oversize_body_413_before_auth_or_parsing(client):
    response = client.post("/score", content=b"{" + b" " * 1_048_576 + b"}", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (413, {"detail": "request body larger than 1048576 bytes"})


def test_oversize_chunked_body_413(client, auth):
    chunks = (b" " * 65_536 for _ in range(20))
    response = client.post("/score", content=chunks, headers={**auth("lax"), "Content-Type": "application/json"})
    assert response.status_code == 413


def test_small_chunked_body_passes(client, auth):
    payload = b'{"lines": [' + json.dumps(LINE).encode() + b"]}"
    response = client.post(
        "/score", content=iter([payload[:10], payload[10:]]), headers={**auth("lax"), "Content-Type": "application/json"}
    )
    assert response.status_code == 200


def test_score_without_model_503(make_client, auth):
    response = make_client(scorer=None).post("/score", headers=auth("lax"), json={"lines": [LINE]})
    assert (response.status_code, response.json()) == (503, {"detail": "no scoring model is loaded (set MISDECLARE_MODEL_URI)"})


@pytest.mark.slow  # starts a scoring worker process
def test_model_uri_setting_loads_the_bundle_at_start_up(make_client, auth, model_dir):
    response = make_client(model_uri=str(model_dir)).post("/score", headers=auth("lax"), json={"lines": [LINE]})
    assert response.status_code == 200
    assert response.json()["scores"][0]["model_version"] == _direct(model_dir, [LINE])["model_version"].iloc[0]


def _upload(client, auth, name: str, content: bytes, **data):
    return client.post("/api/batches", headers=auth("sup"), files={"file": (name, content, "text/csv")}, data=data)


def test_upload_loads_a_batch_once(client, auth, tmp_path):
    path = tmp_path / "b.csv"
    synthetic_scored_batch(50, seed=5, id_prefix="UP").to_csv(path, index=False)
    first = _upload(client, auth, "b.csv", path.read_bytes(), queue_date="2025-06-09").json()
    again = _upload(client, auth, "b.csv", path.read_bytes(), queue_date="2025-06-09").json()
    assert (first["n_read"], first["n_inserted"], first["n_existing"], first["n_rejected"]) == (50, 50, 0, 0)
    assert (again["n_inserted"], again["n_existing"]) == (0, 50)
    assert first["queue_date"] == "2025-06-09"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("b.txt", b"a,b\n", "b.txt: expected a .csv or .parquet file"),
        (
            "b.csv",
            b"declaration_id,declared_at,hs_code,gross_weight_kg,declared_value_usd,origin_country,export_country\n"
            b"X,2025-01-01,790111,1,1,CN,TH\n",
            "b.csv: not a scored batch, missing column 'risk_score'",
        ),
        (
            "b.csv",
            b"declaration_id,declared_at,risk_score,channel,suspected_commodity,model_version\nX,2025-01-01,0.5,red,none,m/1\n",
            "b.csv: missing required column 'hs_code' (and gross_weight_kg, declared_value_usd, origin_country, export_country)",
        ),
        ("b.csv", b"", None),
        ("b.parquet", b"not parquet at all", None),
    ],
)
def test_bad_upload_422(client, auth, name, content, message):
    response = _upload(client, auth, name, content)
    assert response.status_code == 422
    if message:
        assert response.json()["detail"][0]["msg"] == message


def test_upload_over_the_limit_413(make_client, auth, tmp_path):
    path = tmp_path / "b.csv"
    synthetic_scored_batch(50, seed=5).to_csv(path, index=False)
    small = make_client(max_upload_bytes=2_000)
    response = small.post("/api/batches", headers=auth("sup"), files={"file": ("b.csv", path.read_bytes(), "text/csv")})
    assert (response.status_code, response.json()) == (413, {"detail": "request body larger than 2000 bytes"})


def test_chunked_upload_411(client, auth):
    body = iter([b"--x\r\n", b"--x--\r\n"])
    response = client.post(
        "/api/batches", content=body, headers={**auth("sup"), "Content-Type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 411
