"""Web plumbing shared by the JSON API and the pages: runtime state, credentials, errors, size limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from argon2 import PasswordHasher
from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.history_store import HistoryStore
from serve.triage import accounts, audit
from serve.triage.accounts import Principal
from serve.triage.errors import ForbiddenError, InvalidInputError, NotAuthenticatedError, TriageError
from serve.triage.export import OutcomePusher
from serve.triage.pictures import PictureReference
from serve.triage.scoring import Scorer
from serve.triage.scoring_pool import ScoringPool
from serve.triage.settings import Settings

SESSION_COOKIE = "misdeclare_session"
LOGIN_CSRF_COOKIE = "misdeclare_login_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
UPLOAD_PATHS = ("/api/batches",)


@dataclass
class Runtime:
    """What the service creates once at start-up and every request uses.

    ``history`` is the history store ``POST /score`` reads and feeds, and recorded outcomes reach;
    ``pictures`` what the case page's pictures read from the reference tables (price bands, hubs);
    ``model`` the bundle loaded from ``settings.model_uri`` (None when the scorer was injected or
    there is none), whose validation window batch reports of its own batches are drawn against;
    ``scoring`` the worker processes that score ``POST /score`` with that bundle (None: ``scorer``
    scores in this process's threads, as for an injected scorer or ``scoring_workers=0``);
    ``outcomes`` pushes the outcomes recorded on the pages to the history store (through the
    scoring workers when they run).
    """

    settings: Settings
    engine: Engine
    hasher: PasswordHasher
    scorer: Scorer | None
    templates: Jinja2Templates
    history: HistoryStore
    pictures: PictureReference
    model: object | None = None
    scoring: ScoringPool | None = None
    outcomes: OutcomePusher | None = None


def runtime(request: Request) -> Runtime:
    """The runtime of the running app (set by the lifespan)."""
    return request.app.state.runtime


def client_of(request: Request) -> str:
    """The client address of a request: the trusted proxy's header when one is configured
    (``Settings.trusted_proxy_header``, its last value), else the connection's (``unknown`` when
    the server does not tell)."""
    header = runtime(request).settings.trusted_proxy_header
    forwarded = request.headers.get(header, "") if header else ""
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if hops:
        return hops[-1][:64]
    return request.client.host if request.client else "unknown"


def db_session(request: Request) -> Iterator[Session]:
    """A session in a transaction that commits when the handler succeeds and rolls back otherwise."""
    with Session(runtime(request).engine, expire_on_commit=False) as db, db.begin():
        yield db


DB = Annotated[Session, Depends(db_session, scope="function")]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _token_principal(rt: Runtime, secret: str, request: Request) -> Principal:
    client = client_of(request)
    target = f"{request.method} {request.url.path}"
    try:
        with Session(rt.engine) as db, db.begin():
            who = accounts.token_principal(db, secret, client)
            audit.record(db, who.origin, "token_use", target, {"token": who.token_id})
            return who
    except NotAuthenticatedError as exc:
        origin = audit.Origin(actor=f"token {secret[:12]}", user_id=None, client=client, via="api")
        audit.record_now(rt.engine, origin, "token_use", target, {"refused": str(exc)})
        raise


def _session_principal(rt: Runtime, cookie: str, request: Request) -> Principal:
    with Session(rt.engine) as db:
        return accounts.session_principal(db, cookie, client_of(request))


def api_principal(request: Request) -> Principal:
    """Authenticate an API request by bearer token or by session cookie (with CSRF on writes).

    Raises
    ------
    NotAuthenticatedError
        No credentials, or unknown, expired or revoked ones (401).
    ForbiddenError
        Session write without the CSRF header, or a one-time password still to be changed (403).
    """
    rt = runtime(request)
    secret = _bearer(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if secret is not None:
        who = _token_principal(rt, secret, request)
    elif cookie:
        who = _session_principal(rt, cookie, request)
        if request.method not in SAFE_METHODS and not accounts.csrf_ok(who, request.headers.get(CSRF_HEADER)):
            request.state.principal = who
            raise ForbiddenError("missing or wrong X-CSRF-Token header")
        if who.must_change_password and request.url.path != "/api/me":
            request.state.principal = who
            raise ForbiddenError("change your one-time password on /password first")
    else:
        raise NotAuthenticatedError("missing credentials: send 'Authorization: Bearer <token>' or sign in")
    request.state.principal = who
    return who


def page_principal(request: Request) -> Principal:
    """Authenticate a page request by session cookie; writes need the form or header CSRF token.

    Raises
    ------
    NotAuthenticatedError
        Not signed in, or the session expired (the pages redirect to the sign-in page).
    """
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise NotAuthenticatedError("not signed in")
    who = _session_principal(runtime(request), cookie, request)
    request.state.principal = who
    return who


def require(*roles: str):
    """Dependency factory: the API principal, refused with 403 unless it has one of ``roles``."""

    def dependency(who: Annotated[Principal, Depends(api_principal)]) -> Principal:
        who.require(*roles)
        return who

    dependency.__name__ = f"require_{'_or_'.join(roles)}"
    return dependency


def error_body(exc: TriageError, request: Request) -> tuple[int, dict]:
    """The JSON body of a domain error; 422 uses FastAPI's validation shape so clients parse one form."""
    if isinstance(exc, InvalidInputError):
        return 422, {"detail": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}
    return exc.status, {"detail": str(exc)}


def audit_refusal(request: Request, exc: TriageError) -> None:
    """Record a refused access (403) of an identified principal in its own transaction."""
    who: Principal | None = getattr(request.state, "principal", None)
    if isinstance(exc, ForbiddenError) and who is not None:
        audit.record_now(
            runtime(request).engine,
            who.origin,
            "access_denied",
            f"{request.method} {request.url.path}"[:128],
            {"reason": str(exc)},
        )


def api_error_response(request: Request, exc: TriageError) -> JSONResponse:
    """Turn a domain error into its JSON response, auditing refusals."""
    audit_refusal(request, exc)
    status, body = error_body(exc, request)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


class BodyLimitMiddleware:
    """Refuse request bodies over the limit with 413 before the application reads them.

    A declared ``Content-Length`` over the limit is refused at once. Bodies without one (chunked)
    are buffered up to the limit; uploads must declare their length (411 otherwise), so that a
    large file is never held in memory.
    """

    def __init__(self, app: ASGIApp, body_limit: int, upload_limit: int) -> None:
        self.app = app
        self.body_limit = body_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        upload = scope["path"] in UPLOAD_PATHS
        limit = self.upload_limit if upload else self.body_limit
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                await _refuse(send, 413, f"request body larger than {limit} bytes")
                return
            await self.app(scope, receive, send)
            return
        if upload:
            await _refuse(send, 411, "uploads must declare Content-Length")
            return
        body, more = await _buffer(receive, limit)
        if more:
            await _refuse(send, 413, f"request body larger than {limit} bytes")
            return
        await self.app(scope, _replay(body, receive), send)


async def _buffer(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return b"", True
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, original: Receive) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await original()  # later calls wait for the client's disconnect, as usual
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
