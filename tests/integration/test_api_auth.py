"""Every API route: missing, wrong, expired or revoked credentials give 401; a wrong role gives 403;
the right role succeeds. Session-authenticated writes need the CSRF header."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from serve.triage.db import ApiToken, Case, SessionRow, User
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
ROLES = ("admin", "sup", "lax")
ROLE_OF = {"admin": "admin", "sup": "supervisor", "lax": "inspector"}

# method, path, body kind, roles allowed, status of success
ROUTES = [
    ("GET", "/api/me", None, ("admin", "supervisor", "inspector"), 200),
    ("POST", "/score", "score", ("supervisor", "inspector"), 200),
    ("GET", "/api/queue", None, ("supervisor", "inspector"), 200),
    ("GET", "/api/cases/{case_id}", None, ("supervisor", "inspector"), 200),
    ("POST", "/api/cases/{case_id}/outcomes", "outcome", ("supervisor", "inspector"), 201),
    ("POST", "/api/cases/{case_id}/reassign", "reassign", ("supervisor",), 200),
    ("GET", "/api/config", None, ("supervisor", "inspector"), 200),
    ("PUT", "/api/config", "config", ("supervisor",), 200),
    ("POST", "/api/batches", "upload", ("supervisor",), 201),
    ("GET", "/api/exports/labels?since=2020-01-01", None, ("supervisor",), 200),
    ("GET", "/api/audit", None, ("supervisor", "admin"), 200),
    ("GET", "/api/audit/export", None, ("supervisor", "admin"), 200),
    ("GET", "/api/users", None, ("admin",), 200),
    ("POST", "/api/users", "user", ("admin",), 201),
    ("PATCH", "/api/users/{user_id}", "user_update", ("admin",), 200),
    ("GET", "/api/tokens", None, ("admin",), 200),
    ("POST", "/api/tokens", "token", ("admin",), 201),
    ("DELETE", "/api/tokens/{token_id}", None, ("admin",), 204),
]
ROUTE_IDS = [f"{method} {path.split('?')[0]}" for method, path, *_ in ROUTES]


@pytest.fixture
def ids(engine) -> dict[str, int]:
    """Ids used in paths: an open USLAX case, the user 'hou', the token of 'hou'."""
    with Session(engine) as db:
        case_id = db.scalar(select(Case.id).where(Case.port == "USLAX", Case.queue_state == "open").order_by(Case.id))
        user_id = db.scalar(select(User.id).where(User.username == "hou"))
        token_id = db.scalar(select(ApiToken.id).where(ApiToken.name == "hou-token"))
    return {"case_id": case_id, "user_id": user_id, "token_id": token_id}


def _body(kind: str | None, tmp_path) -> dict:
    if kind is None:
        return {}
    if kind == "upload":
        path = tmp_path / "extra.csv"
        synthetic_scored_batch(5, seed=99, id_prefix="UP").to_csv(path, index=False)
        return {"files": {"file": ("extra.csv", path.read_bytes(), "text/csv")}}
    payload = {
        "score": {"lines": [LINE]},
        "outcome": {"result": "clean", "note": "opened, zinc as declared"},
        "reassign": {"port": "USLGB"},
        "config": {"daily_capacity": 30},
        "user": {"username": "newbie", "role": "inspector", "ports": ["USLAX"]},
        "user_update": {"active": True},
        "token": {"user_id": 1, "name": "nightly"},
    }[kind]
    return {"json": payload}


def _call(client, method, path, kind, ids, tmp_path, headers=None):
    return client.request(method, path.format(**ids), headers=headers or {}, **_body(kind, tmp_path))


def test_table_covers_every_api_route(app):
    routes = {(method.upper(), path) for path, item in app.openapi()["paths"].items() for method in item}
    assert routes == {(method, path.split("?")[0]) for method, path, *_ in ROUTES}


@pytest.mark.parametrize(("method", "path", "kind", "allowed", "status"), ROUTES, ids=ROUTE_IDS)
def test_missing_credentials_401(client, ids, tmp_path, method, path, kind, allowed, status):
    response = _call(client, method, path, kind, ids, tmp_path)
    assert response.status_code == 401
    assert response.json() == {"detail": "missing credentials: send 'Authorization: Bearer <token>' or sign in"}
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "kind", "allowed", "status"), ROUTES, ids=ROUTE_IDS)
def test_unknown_token_401(client, ids, tmp_path, method, path, kind, allowed, status):
    response = _call(client, method, path, kind, ids, tmp_path, {"Authorization": "Bearer mdk_not-a-real-token"})
    assert (response.status_code, response.json()["detail"]) == (401, "invalid or revoked API token")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expires_at": datetime.now(UTC) - timedelta(seconds=1)}, "API token expired"),
        ({"revoked_at": datetime.now(UTC) - timedelta(hours=1)}, "invalid or revoked API token"),
    ],
    ids=["expired", "revoked"],
)
@pytest.mark.parametrize(("method", "path", "kind", "allowed", "status"), ROUTES[:4], ids=ROUTE_IDS[:4])
def test_expired_or_revoked_token_401(client, engine, auth, ids, tmp_path, change, message, method, path, kind, allowed, status):
    with Session(engine) as db, db.begin():
        db.execute(update(ApiToken).where(ApiToken.name == "sup-token").values(**change))
    response = _call(client, method, path, kind, ids, tmp_path, auth("sup"))
    assert (response.status_code, response.json()["detail"]) == (401, message)


def test_deactivated_user_token_401(client, engine, auth):
    with Session(engine) as db, db.begin():
        db.execute(update(User).where(User.username == "sup").values(active=False))
    response = client.get("/api/queue", headers=auth("sup"))
    assert (response.status_code, response.json()["detail"]) == (401, "the token's user is deactivated")


WRONG_ROLE = [(route, name) for route in ROUTES for name in ROLES if ROLE_OF[name] not in route[3]]


@pytest.mark.parametrize(("route", "name"), WRONG_ROLE, ids=[f"{r[0]} {r[1].split('?')[0]} as {n}" for r, n in WRONG_ROLE])
def test_wrong_role_403(client, auth, ids, tmp_path, route, name):
    method, path, kind, allowed, _ = route
    response = _call(client, method, path, kind, ids, tmp_path, auth(name))
    assert response.status_code == 403
    assert response.json()["detail"].startswith(f"role '{ROLE_OF[name]}' may not do this")


RIGHT_ROLE = [(route, next(n for n in ROLES if ROLE_OF[n] in route[3])) for route in ROUTES]


@pytest.mark.parametrize(("route", "name"), RIGHT_ROLE, ids=[f"{r[0]} {r[1].split('?')[0]} as {n}" for r, n in RIGHT_ROLE])
def test_allowed_role_succeeds(client, auth, ids, tmp_path, route, name):
    method, path, kind, allowed, status = route
    response = _call(client, method, path, kind, ids, tmp_path, auth(name))
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        ("GET", "/api/cases/{case_id}", None),
        ("POST", "/api/cases/{case_id}/outcomes", "outcome"),
    ],
)
def test_inspector_of_another_port_403(client, auth, ids, tmp_path, method, path, kind):
    response = _call(client, method, path, kind, ids, tmp_path, auth("hou"))
    assert response.status_code == 403
    assert response.json()["detail"] == f"case {ids['case_id']} belongs to port USLAX, which you are not assigned to"


def test_session_write_needs_csrf_header(client, sign_in, ids):
    csrf = sign_in(client, "lax")
    path = f"/api/cases/{ids['case_id']}/outcomes"
    refused = client.post(path, json={"result": "clean"})
    wrong = client.post(path, json={"result": "clean"}, headers={"X-CSRF-Token": "forged"})
    accepted = client.post(path, json={"result": "clean"}, headers={"X-CSRF-Token": csrf})
    assert [refused.status_code, wrong.status_code, accepted.status_code] == [403, 403, 201]
    assert refused.json()["detail"] == "missing or wrong X-CSRF-Token header"


def test_session_read_works_without_csrf(client, sign_in):
    sign_in(client, "lax")
    response = client.get("/api/me")
    assert response.json() == {"username": "lax", "role": "inspector", "ports": ["USLAX"], "via": "web"}


def test_expired_session_401(client, engine, sign_in):
    sign_in(client, "lax")
    with Session(engine) as db, db.begin():
        db.execute(update(SessionRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    response = client.get("/api/queue")
    assert (response.status_code, response.json()["detail"]) == (401, "session expired; sign in again")


def test_signed_out_session_401(client, sign_in):
    csrf = sign_in(client, "lax")
    cookie = client.cookies.get("misdeclare_session")
    client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    client.cookies.set("misdeclare_session", cookie, domain="testserver.local")
    response = client.get("/api/queue")
    assert (response.status_code, response.json()["detail"]) == (401, "not signed in")


def test_one_time_password_blocks_the_api_until_changed(client, auth, sign_in):
    created = client.post(
        "/api/users", headers=auth("admin"), json={"username": "fresh", "role": "inspector", "ports": ["USLAX"]}
    ).json()
    csrf = sign_in(client, "fresh", created["one_time_password"])
    blocked = client.get("/api/queue")
    me = client.get("/api/me")
    client.post(
        "/password",
        data={
            "csrf_token": csrf,
            "current": created["one_time_password"],
            "new": "a-long-new-password",
            "repeat": "a-long-new-password",
        },
    )
    assert (blocked.status_code, me.status_code, client.get("/api/queue").status_code) == (403, 200, 200)
