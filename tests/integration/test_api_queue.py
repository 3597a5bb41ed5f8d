"""Queue, cases, outcomes, reassignment, settings and the audit trail through the JSON API."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serve.triage.db import AuditEvent, Case, Outcome


def _open_cases(engine, **where) -> list[Case]:
    with Session(engine) as db:
        query = select(Case).where(Case.queue_state == "open")
        for column, value in where.items():
            query = query.where(getattr(Case, column) == value)
        return list(db.scalars(query))


def _expected_order(rows: list[Case]) -> list[int]:
    return [c.id for c in sorted(rows, key=lambda c: (-c.priority, -c.risk_score, -c.id))]


def test_inspector_queue_is_own_port_red_first_riskiest_first(client, auth, engine):
    expected = _expected_order(_open_cases(engine, port="USLAX"))
    body = client.get("/api/queue", params={"per_page": 200}, headers=auth("lax")).json()
    assert [c["id"] for c in body["cases"]] == expected
    assert body["total"] == len(expected) > 0
    assert {c["port"] for c in body["cases"]} == {"USLAX"}
    channels = [c["channel"] for c in body["cases"]]
    assert channels == sorted(channels, key=["red", "yellow", "green"].index)


def test_supervisor_queue_spans_every_port(client, auth, engine):
    rows = _open_cases(engine)
    body = client.get("/api/queue", params={"per_page": 200}, headers=auth("sup")).json()
    assert body["total"] == len(rows)
    assert {c["port"] for c in body["cases"]} == {"USLAX", "USHOU", "USSAV"}
    assert body["counts"] == {ch: sum(c.channel == ch for c in rows) for ch in ("red", "yellow", "green")}


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"port": "USHOU"}, {"port": "USHOU"}),
        ({"channel": "red"}, {"channel": "red"}),
        ({"commodity": "gallium"}, {"suspected_commodity": "gallium"}),
        ({"selected_by": "exploration"}, {"selected_by": "exploration"}),
        ({"queue_date": "2025-06-03"}, {}),
    ],
)
def test_queue_filters(client, auth, engine, params, where):
    expected = _expected_order(_open_cases(engine, **where))
    body = client.get("/api/queue", params={**params, "per_page": 200}, headers=auth("sup")).json()
    assert [c["id"] for c in body["cases"]] == expected


def test_queue_date_without_cases_is_empty(client, auth):
    body = client.get("/api/queue", params={"queue_date": "2025-06-04"}, headers=auth("sup")).json()
    assert (body["total"], body["cases"]) == (0, [])


def test_queue_pages_split_the_order(client, auth, engine):
    expected = _expected_order(_open_cases(engine))
    pages = [client.get("/api/queue", params={"per_page": 7, "page": p}, headers=auth("sup")).json() for p in (1, 2, 3)]
    assert [c["id"] for page in pages for c in page["cases"]] == expected[:21]
    assert pages[0]["pages"] == -(-len(expected) // 7)


def test_inspector_filtering_another_port_403(client, auth):
    response = client.get("/api/queue", params={"port": "USHOU"}, headers=auth("lax"))
    assert (response.status_code, response.json()["detail"]) == (403, "you are not assigned to port USHOU")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"channel": "purple"}, "channel"),
        ({"per_page": 0}, "per_page"),
        ({"per_page": 201}, "per_page"),
        ({"port": "los angeles"}, "port"),
        ({"queue_date": "yesterday"}, "queue_date"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_queue_query_422_names_the_field(client, auth, params, field):
    response = client.get("/api/queue", params=params, headers=auth("sup"))
    assert response.status_code == 422
    assert [error["loc"][-1] for error in response.json()["detail"]] == [field]


def test_case_shows_declared_fields_reasons_history_and_is_audited(client, auth, engine):
    case = _open_cases(engine, port="USLAX", channel="red")[0]
    body = client.get(f"/api/cases/{case.id}", headers=auth("lax")).json()
    assert body["case"]["declaration_id"] == case.declaration_id
    assert body["case"]["reasons"] == case.reasons.split(" | ")
    assert body["case"]["route"].endswith("USLAX")
    assert body["case"]["value_per_kg"] == pytest.approx(case.declared_value_usd / case.net_weight_kg)
    with Session(engine) as db:
        earlier = db.scalar(
            select(func.count(Case.id)).where(
                Case.shipper_id == case.shipper_id, Case.id != case.id, Case.declared_at <= case.declared_at
            )
        )
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "case_view")).one()
    assert len(body["shipper_history"]) == min(earlier, 10)
    assert (event.actor, event.target, event.via) == ("lax", f"case:{case.id}", "api")


def test_unknown_case_404(client, auth):
    response = client.get("/api/cases/999999", headers=auth("sup"))
    assert (response.status_code, response.json()) == (404, {"detail": "no case 999999"})


def test_outcome_then_correction_keeps_both_events(client, auth, engine):
    case = _open_cases(engine, port="USLAX")[0]
    path = f"/api/cases/{case.id}/outcomes"
    first = client.post(
        path,
        headers=auth("lax"),
        json={"result": "confirmed", "found_commodity": "antimony", "found_quantity_kg": 440.5, "note": "ingots under zinc"},
    )
    silent = client.post(path, headers=auth("lax"), json={"result": "clean"})
    correction = client.post(
        path, headers=auth("sup"), json={"result": "clean", "note": "lab: zinc", "corrects_outcome_id": first.json()["id"]}
    )
    assert (first.status_code, silent.status_code, correction.status_code) == (201, 409, 201)
    assert silent.json()["detail"] == (
        f"case {case.id} already has outcome {first.json()['id']}; to correct it, send corrects_outcome_id={first.json()['id']}"
    )
    body = client.get(f"/api/cases/{case.id}", headers=auth("sup")).json()
    assert [(o["result"], o["found_commodity"], o["corrects_id"]) for o in body["outcomes"]] == [
        ("confirmed", "antimony", None),
        ("clean", "none", first.json()["id"]),
    ]
    assert body["case"]["current_outcome_id"] == correction.json()["id"]
    assert body["case"]["state"] == "decided"


def test_decided_case_leaves_the_open_queue(client, auth, engine):
    case = _open_cases(engine, port="USLAX")[0]
    client.post(f"/api/cases/{case.id}/outcomes", headers=auth("lax"), json={"result": "not_inspected", "note": "released"})
    open_ids = [c["id"] for c in client.get("/api/queue", params={"per_page": 200}, headers=auth("lax")).json()["cases"]]
    decided = client.get("/api/queue", params={"state": "decided"}, headers=auth("lax")).json()["cases"]
    assert case.id not in open_ids
    assert [c["id"] for c in decided] == [case.id]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"result": "confirmed"},
            "a confirmed misdeclaration needs found_commodity, one of antimony, gallium, germanium, rare_earth",
        ),
        (
            {"result": "confirmed", "found_commodity": "none"},
            "a confirmed misdeclaration needs found_commodity, one of antimony, gallium, germanium, rare_earth",
        ),
        (
            {"result": "clean", "found_commodity": "gallium"},
            "found_commodity and found_quantity_kg belong to confirmed misdeclarations only",
        ),
        (
            {"result": "clean", "found_quantity_kg": 3.0},
            "found_commodity and found_quantity_kg belong to confirmed misdeclarations only",
        ),
    ],
)
def test_inconsistent_outcome_422_with_message(client, auth, engine, body, message):
    case = _open_cases(engine, port="USLAX")[0]
    response = client.post(f"/api/cases/{case.id}/outcomes", headers=auth("lax"), json=body)
    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": ["body"], "msg": message, "type": "value_error"}]}


def test_outcome_on_a_line_never_queued_409(client, auth, engine):
    with Session(engine) as db:
        case_id = db.scalar(select(Case.id).where(Case.queue_state.is_(None), Case.port == "USLAX"))
    response = client.post(f"/api/cases/{case_id}/outcomes", headers=auth("lax"), json={"result": "clean"})
    assert response.status_code == 409


def test_correction_naming_a_stale_outcome_409(client, auth, engine):
    case = _open_cases(engine, port="USLAX")[0]
    response = client.post(
        f"/api/cases/{case.id}/outcomes", headers=auth("lax"), json={"result": "clean", "corrects_outcome_id": 5}
    )
    assert (response.status_code, response.json()["detail"]) == (409, f"case {case.id} has no outcome to correct")


def test_reassign_moves_the_case_between_inspectors(client, auth, engine):
    case = _open_cases(engine, port="USLAX")[0]
    moved = client.post(f"/api/cases/{case.id}/reassign", headers=auth("sup"), json={"port": "USHOU"})
    assert moved.json()["port"] == "USHOU"
    assert client.get(f"/api/cases/{case.id}", headers=auth("lax")).status_code == 403
    assert client.get(f"/api/cases/{case.id}", headers=auth("hou")).status_code == 200


def test_config_change_is_audited_with_old_and_new_value(client, auth, engine):
    before = client.get("/api/config", headers=auth("lax")).json()
    after = client.put("/api/config", headers=auth("sup"), json={"daily_capacity": 60, "exploration_share": 0.2}).json()
    with Session(engine) as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.action == "config_change").order_by(AuditEvent.id)).all()
    assert before == {"daily_capacity": 40, "exploration_share": 0.1, "exploration_slots": 4}
    assert after == {"daily_capacity": 60, "exploration_share": 0.2, "exploration_slots": 12}
    assert [(e.actor, e.target, json.loads(e.detail)) for e in events] == [
        ("sup", "config:daily_capacity", {"from": 40, "to": 60}),
        ("sup", "config:exploration_share", {"from": 0.1, "to": 0.2}),
    ]


@pytest.mark.parametrize(
    "body",
    [{"exploration_share": 1.5}, {"daily_capacity": -1}, {"daily_capacity": "40"}, {"exploration_share": False}, {"capacity": 3}],
)
def test_bad_config_422(client, auth, body):
    assert client.put("/api/config", headers=auth("sup"), json=body).status_code == 422


def test_token_use_is_audited_with_route_and_client(client, auth, engine):
    client.get("/api/queue", headers=auth("lax"))
    client.get("/api/queue", headers={"Authorization": "Bearer mdk_forged"})
    with Session(engine) as db:
        events = db.scalars(select(AuditEvent).where(AuditEvent.action == "token_use").order_by(AuditEvent.id)).all()
    assert [(e.actor, e.target, e.client, e.via) for e in events] == [
        ("lax", "GET /api/queue", "testclient", "api"),
        ("token mdk_forged", "GET /api/queue", "testclient", "api"),
    ]
    assert json.loads(events[1].detail) == {"refused": "invalid or revoked API token"}


def test_refused_access_is_audited(client, auth, engine):
    client.get("/api/users", headers=auth("lax"))
    with Session(engine) as db:
        event = db.scalars(select(AuditEvent).where(AuditEvent.action == "access_denied")).one()
    assert (event.actor, event.target) == ("lax", "GET /api/users")


def test_audit_page_and_export(client, auth, engine):
    client.get("/api/config", headers=auth("lax"))
    page = client.get("/api/audit", params={"action": "token_use", "actor": "lax"}, headers=auth("sup")).json()
    export = client.get("/api/audit/export", params={"actor": "lax"}, headers=auth("sup"))
    assert [(e["actor"], e["target"]) for e in page["events"]] == [("lax", "GET /api/config")]
    lines = export.text.strip().splitlines()
    assert lines[0] == "id,at,actor,action,target,detail,client,via"
    assert [line.split(",")[3] for line in lines[1:]] == ["password_change", "token_use"]  # seeding set the password
    with Session(engine) as db:
        assert db.scalar(select(func.count()).where(AuditEvent.action == "audit_export")) == 1


def test_outcome_rows_are_append_only_in_the_database(client, auth, engine):
    case = _open_cases(engine, port="USLAX")[0]
    client.post(f"/api/cases/{case.id}/outcomes", headers=auth("lax"), json={"result": "clean"})
    with Session(engine) as db, pytest.raises(Exception, match="outcomes is append-only"):
        db.execute(Outcome.__table__.update().values(result="confirmed"))
