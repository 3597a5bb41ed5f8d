"""The pages over HTTP: sign-in, redirects, roles, CSRF, forms and the htmx partials."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serve.triage.db import AuditEvent, Case, ConfigChange, Outcome


def _case_id(engine, port: str) -> int:
    with Session(engine) as db:
        return db.scalar(select(Case.id).where(Case.port == port, Case.queue_state == "open").order_by(Case.id))


def _count(engine, model, *where) -> int:
    with Session(engine) as db:
        return db.scalar(select(func.count()).select_from(model).where(*where))


@pytest.mark.parametrize("path", ["/", "/cases/1", "/audit", "/settings", "/admin", "/password", "/audit.csv"])
def test_pages_without_session_redirect_to_sign_in(client, path):
    response = client.get(path, follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, f"/login?next={path}")


@pytest.mark.parametrize(
    ("user", "path"),
    [
        ("lax", "/audit"),
        ("lax", "/settings"),
        ("lax", "/admin"),
        ("lax", "/audit.csv"),
        ("sup", "/admin"),
        ("admin", "/settings"),
        ("admin", "/cases/1"),
    ],
)
def test_pages_of_another_role_403(client, sign_in, user, path):
    sign_in(client, user)
    response = client.get(path)
    assert response.status_code == 403
    assert "Not allowed" in response.text


def test_admin_home_is_the_user_page(client, sign_in):
    sign_in(client, "admin")
    assert client.get("/", follow_redirects=False).headers["location"] == "/admin"


def test_case_of_another_port_403_and_audited(client, sign_in, engine):
    case_id = _case_id(engine, "USLAX")
    sign_in(client, "hou")
    response = client.get(f"/cases/{case_id}")
    assert response.status_code == 403
    assert f"case {case_id} belongs to port USLAX, which you are not assigned to" in response.text
    assert _count(engine, AuditEvent, AuditEvent.action == "access_denied", AuditEvent.actor == "hou") == 1


def test_wrong_password_401_and_audited(client, engine):
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    response = client.post("/login", data={"username": "lax", "password": "guess", "csrf_token": token})
    assert response.status_code == 401
    assert "Wrong user name or password, or too many failed attempts." in response.text
    assert _count(engine, AuditEvent, AuditEvent.action == "sign_in_failed", AuditEvent.target == "user:lax") == 1


def _try_sign_in(client, password: str):
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    return client.post("/login", data={"username": "lax", "password": password, "csrf_token": token}, follow_redirects=False)


def test_sign_in_locks_after_repeated_failures(client, engine):
    failures = [_try_sign_in(client, "guess").status_code for _ in range(5)]
    locked = _try_sign_in(client, "inspection-day-2025")
    assert failures == [401] * 5
    assert locked.status_code == 401
    assert _count(engine, AuditEvent, AuditEvent.action == "sign_in_locked") == 1


def _sign_in_as(client, username: str, password: str, **headers):
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": token}, headers=headers, follow_redirects=False
    )


def test_guessing_across_user_names_locks_the_client_address(make_client, engine):
    client = make_client(max_failed_sign_ins_per_client=3)
    failures = [_sign_in_as(client, name, "guess").status_code for name in ("nobody", "root", "lax")]
    refused = _sign_in_as(client, "sup", "inspection-day-2025")  # right password, same address
    assert failures == [401] * 3 and refused.status_code == 401
    assert _count(engine, AuditEvent, AuditEvent.action == "sign_in_locked", AuditEvent.target == "user:sup") == 1


def test_the_proxy_header_is_trusted_only_when_configured(make_client, engine):
    untrusted = make_client(max_failed_sign_ins_per_client=2)
    for _ in range(2):
        _sign_in_as(untrusted, "nobody", "guess", **{"X-Forwarded-For": "203.0.113.7"})
    # The header was ignored: the failures count against the connection's address, which is now locked.
    assert _sign_in_as(untrusted, "sup", "inspection-day-2025", **{"X-Forwarded-For": "198.51.100.1"}).status_code == 401

    proxied = make_client(max_failed_sign_ins_per_client=2, trusted_proxy_header="X-Forwarded-For")
    for _ in range(2):
        _sign_in_as(proxied, "nobody", "guess", **{"X-Forwarded-For": "10.9.9.9, 203.0.113.8"})
    assert _sign_in_as(proxied, "sup", "inspection-day-2025", **{"X-Forwarded-For": "203.0.113.8"}).status_code == 401
    assert _sign_in_as(proxied, "sup", "inspection-day-2025", **{"X-Forwarded-For": "198.51.100.2"}).status_code == 303
    clients = {
        c
        for (c,) in Session(engine).execute(
            select(AuditEvent.client).where(AuditEvent.action == "sign_in_failed", AuditEvent.actor == "nobody")
        )
    }
    assert "203.0.113.8" in clients and "10.9.9.9" not in clients


def test_sign_in_without_the_form_token_403(client):
    response = client.post("/login", data={"username": "lax", "password": "inspection-day-2025", "csrf_token": "x"})
    assert response.status_code == 403
    assert "The sign-in form expired" in response.text


@pytest.mark.parametrize(("target", "location"), [("/audit", "/audit"), ("//evil.example/x", "/"), ("https://evil.example", "/")])
def test_sign_in_returns_only_to_local_pages(client, target, location):
    form = client.get("/login", params={"next": target})
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    response = client.post(
        "/login",
        data={"username": "sup", "password": "inspection-day-2025", "csrf_token": token, "next": target},
        follow_redirects=False,
    )
    assert response.headers["location"] == location


def test_session_cookie_is_secure_httponly_lax(client, sign_in):
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    response = client.post(
        "/login", data={"username": "lax", "password": "inspection-day-2025", "csrf_token": token}, follow_redirects=False
    )
    cookie = response.headers["set-cookie"].lower()
    assert "misdeclare_session=" in cookie
    assert all(flag in cookie for flag in ("httponly", "secure", "samesite=lax", "path=/"))


def test_queue_page_and_htmx_partial(client, sign_in):
    sign_in(client, "lax")
    page = client.get("/", params={"channel": "red"})
    partial = client.get("/", params={"channel": "red"}, headers={"HX-Request": "true"})
    assert "<html" in page.text and 'id="queue-table"' in page.text
    assert "<html" not in partial.text and 'id="queue-table"' in partial.text
    assert "USHOU" not in partial.text.split("<tbody>")[1]


def test_outcome_form_needs_the_csrf_token(client, sign_in, engine):
    case_id = _case_id(engine, "USLAX")
    sign_in(client, "lax")
    response = client.post(f"/cases/{case_id}/outcome", data={"result": "clean", "csrf_token": "forged"})
    assert response.status_code == 403
    assert _count(engine, Outcome) == 0


def test_outcome_form_records_and_redirects(client, sign_in, engine):
    case_id = _case_id(engine, "USLAX")
    csrf = sign_in(client, "lax")
    response = client.post(
        f"/cases/{case_id}/outcome",
        follow_redirects=False,
        data={
            "csrf_token": csrf,
            "result": "confirmed",
            "found_commodity": "rare_earth",
            "found_quantity_kg": "1,250.5",
            "note": "magnets in ceramic crates",
        },
    )
    assert (response.status_code, response.headers["location"]) == (303, f"/cases/{case_id}")
    with Session(engine) as db:
        outcome = db.scalars(select(Outcome)).one()
    assert (outcome.result, outcome.found_commodity, outcome.found_quantity_kg, outcome.actor) == (
        "confirmed",
        "rare_earth",
        1250.5,
        "lax",
    )


def test_refused_outcome_shows_the_reason_and_records_nothing(client, sign_in, engine):
    case_id = _case_id(engine, "USLAX")
    csrf = sign_in(client, "lax")
    response = client.post(f"/cases/{case_id}/outcome", data={"csrf_token": csrf, "result": "confirmed"})
    assert response.status_code == 422
    assert "a confirmed misdeclaration needs found_commodity" in response.text
    assert _count(engine, Outcome) == 0


def test_second_outcome_through_the_page_is_a_correction(client, sign_in, engine):
    case_id = _case_id(engine, "USLAX")
    csrf = sign_in(client, "lax")
    client.post(f"/cases/{case_id}/outcome", data={"csrf_token": csrf, "result": "clean"})
    page = client.get(f"/cases/{case_id}")
    current = re.search(r'name="corrects_id" value="(\d+)"', page.text).group(1)
    client.post(f"/cases/{case_id}/outcome", data={"csrf_token": csrf, "result": "not_inspected", "corrects_id": current})
    stale = client.post(f"/cases/{case_id}/outcome", data={"csrf_token": csrf, "result": "clean", "corrects_id": current})
    with Session(engine) as db:
        rows = db.execute(select(Outcome.result, Outcome.corrects_id).order_by(Outcome.id)).all()
    assert rows == [("clean", None), ("not_inspected", int(current))]
    assert stale.status_code == 409


def test_settings_form_changes_the_capacity(client, sign_in, engine):
    csrf = sign_in(client, "sup")
    response = client.post("/settings", data={"csrf_token": csrf, "daily_capacity": "25", "exploration_percent": "20"})
    assert "Settings saved." in response.text
    with Session(engine) as db:
        assert dict(db.execute(select(ConfigChange.key, ConfigChange.value)).all()) == {
            "daily_capacity": "25",
            "exploration_share": "0.2",
        }


def test_admin_creates_a_user_and_a_token_shown_once(client, sign_in, engine):
    csrf = sign_in(client, "admin")
    created = client.post(
        "/admin/users", data={"csrf_token": csrf, "username": "pat", "role": "inspector", "ports": "USLAX, USLGB"}
    )
    secret = re.search(r'id="secret">([^<]+)<', created.text).group(1)
    assert len(secret) == 16
    assert secret not in client.get("/admin").text
    taken = client.post("/admin/users", data={"csrf_token": csrf, "username": "pat", "role": "inspector"})
    assert (taken.status_code, "user &#39;pat&#39; already exists" in taken.text) == (409, True)
    token_page = client.post("/admin/tokens", data={"csrf_token": csrf, "user_id": "2", "name": "loader", "days": "7"})
    assert re.search(r'id="secret">(mdk_[^<]+)<', token_page.text)


def test_audit_page_lists_events_and_downloads_csv(client, sign_in):
    sign_in(client, "sup")
    page = client.get("/audit", params={"action": "sign_in"})
    download = client.get("/audit.csv", params={"action": "sign_in"})
    assert page.status_code == 200 and "user:sup" in page.text
    assert download.headers["content-disposition"] == 'attachment; filename="misdeclare-audit.csv"'
    assert download.text.splitlines()[0] == "id,at,actor,action,target,detail,client,via"


def test_pages_send_security_headers(client, sign_in):
    sign_in(client, "lax")
    headers = client.get("/").headers
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert "script-src 'self'" in headers["content-security-policy"]


def test_htmx_is_served_locally(client):
    response = client.get("/static/htmx.min.js")
    assert response.status_code == 200
    assert 'version:"2.' in response.text


def test_changing_the_password_ends_the_users_other_sessions(client, make_client, sign_in):
    other = make_client()
    sign_in(other, "lax")
    csrf = sign_in(client, "lax")
    response = client.post(
        "/password",
        data={
            "current": "inspection-day-2025",
            "new": "a-new-passphrase-2026",
            "repeat": "a-new-passphrase-2026",
            "csrf_token": csrf,
        },
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 200
    assert other.get("/", follow_redirects=False).status_code in (303, 401)
