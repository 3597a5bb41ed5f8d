"""The web service: JSON API (``/score``, ``/api/...``) and the inspector's pages, in one FastAPI app.

``create_app(settings, scorer=None)`` builds the app; the database engine, the password hasher,
the scoring model and the history store are created once at start-up (lifespan), never at import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from features.history_store import HistoryStore, resolve_history_dir
from features.reference import load_reference
from serve.charts import wilson_interval
from serve.triage import accounts
from serve.triage.api_routes import router as api_router
from serve.triage.append_behind import append_orphans
from serve.triage.db import make_engine
from serve.triage.errors import TriageError
from serve.triage.export import OutcomePusher, outcomes_to_store
from serve.triage.migrate import upgrade
from serve.triage.pages import router as page_router
from serve.triage.pictures import PictureReference
from serve.triage.scoring import Scorer, scorer_for
from serve.triage.scoring_pool import BundleBytes, ScoringPool, WorkerStore
from serve.triage.settings import Settings
from serve.triage.web import (
    SESSION_COOKIE,
    BodyLimitMiddleware,
    Runtime,
    api_error_response,
    audit_refusal,
)

API_PREFIXES = ("/api/", "/score", "/openapi.json")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'self'",
    ),
]


def _is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIXES)


def _number(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def make_templates() -> Jinja2Templates:
    """The page templates shipped in ``serve/templates`` with the number filters they use."""
    templates = Jinja2Templates(directory=str(resources.files("serve") / "templates"))
    templates.env.filters["num"] = _number
    templates.env.globals["interval"] = wilson_interval
    templates.env.filters["pct"] = lambda value, digits=1: "" if value is None else f"{100 * value:.{digits}f}%"
    return templates


def triage_error(request: Request, exc: TriageError) -> Response:
    """JSON errors for the API; for pages, sign-in redirects and an error page.

    A plain function, so that Starlette runs it in a worker thread: a refusal is audited with a
    database write, which must not hold up the event loop (and the requests it serves).
    """
    if _is_api(request):
        return api_error_response(request, exc)
    if exc.status == 401:
        response = RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
    if exc.status == 303:
        return RedirectResponse("/password", status_code=303)
    audit_refusal(request, exc)
    runtime: Runtime = request.app.state.runtime
    return runtime.templates.TemplateResponse(
        request,
        "error.html",
        {"who": getattr(request.state, "principal", None), "status": exc.status, "message": str(exc)},
        status_code=exc.status,
    )


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    """FastAPI's 422 body for the API; a readable error page for forms."""
    if _is_api(request):
        return await request_validation_exception_handler(request, exc)
    message = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
    runtime: Runtime = request.app.state.runtime
    return runtime.templates.TemplateResponse(
        request,
        "error.html",
        {"who": getattr(request.state, "principal", None), "status": 422, "message": message},
        status_code=422,
    )


class SecurityHeadersMiddleware:
    """Add the security headers to every response, and ``no-store`` to pages that show cases."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _blank_query_filters(schema: dict) -> None:
    """Say in the spec what the query models do: an empty optional parameter means its default.

    The pages' filter forms send untouched fields as ``channel=``; the API accepts that
    (``QueryModel``), so the spec must not call it invalid.
    """
    blank = {"type": "string", "maxLength": 0}
    for item in schema["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("in") != "query" or parameter.get("required"):
                    continue
                declared = parameter.get("schema", {})
                if "anyOf" in declared:
                    declared["anyOf"].append(blank)
                else:
                    default = {"default": declared.pop("default")} if "default" in declared else {}
                    title = {"title": declared.pop("title")} if "title" in declared else {}
                    parameter["schema"] = {"anyOf": [declared, blank], **default, **title}


def _openapi(app: FastAPI) -> dict:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "API token issued by an admin"},
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": SESSION_COOKIE,
                "description": "Browser session; writes also need the X-CSRF-Token header",
            },
        }
        schema["security"] = [{"bearer": []}, {"session": []}]
        _blank_query_filters(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def open_history(settings: Settings, engine: Engine) -> HistoryStore:
    """The history store of ``settings.history_dir``, holding every outcome in force of the triage
    database and the lines scoring workers that are gone answered for but had not stored.

    Pushing every labelled outcome at start-up is idempotent (copies the store holds change
    nothing) and catches up outcomes whose store write failed, or that were recorded while the
    store was elsewhere or absent; the spooled lines (:mod:`serve.triage.append_behind`) likewise.
    """
    store = HistoryStore(resolve_history_dir(settings.history_dir))
    append_orphans(store)
    with Session(engine) as db:
        outcomes_to_store(db, store)
    return store


def create_app(settings: Settings | None = None, scorer: Scorer | None = None) -> FastAPI:
    """Build the triage service.

    Parameters
    ----------
    settings : Settings, optional
        Configuration; read from ``MISDECLARE_*`` environment variables when omitted.
    scorer : callable, optional
        DataFrame -> DataFrame scorer for ``POST /score``, called as ``scorer(lines, past=store)``
        in the web process's threads. When omitted, the lifespan reads the bundle of
        ``settings.model_uri`` once and starts ``settings.scoring_workers`` scoring processes that
        build ``functools.partial(models.predict.score_frame, bundle)`` from its verified bytes
        (:mod:`serve.triage.scoring_pool`; with ``scoring_workers=0`` it scores in this process);
        with neither, ``POST /score`` answers 503. Channels are day quotas (``models.channels``)
        among the request's own lines of each day: a request of fewer than 8 lines of a day gets
        no red or yellow disguise line (origin checks still go to yellow); score whole days in
        one request, or a file with ``misdeclare score``, for channels that mean inspection capacity.
        The history features read the history store of ``settings.history_dir``
        (``MISDECLARE_HISTORY_DIR``, the store batch scoring reads and feeds), and the lines a
        request scores are appended to it.

    Returns
    -------
    FastAPI
        The app; its lifespan migrates the database, opens the history store and pushes to it every
        outcome in force of the triage database (outcomes recorded later are pushed as they are
        recorded), and loads the model once (and once in each scoring worker).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        upgrade(engine)
        history = open_history(settings, engine)
        files = BundleBytes.read(settings.model_uri) if scorer is None and settings.model_uri else None
        bundle = files.build() if files is not None else None
        pool = None
        if files is not None and settings.scoring_workers:
            pool = ScoringPool(files, history.directory, settings.scoring_workers, settings.scoring_nice)
            await pool.start()
        model = scorer if scorer is not None else (scorer_for(bundle) if bundle is not None and pool is None else None)
        app.state.runtime = Runtime(
            settings=settings,
            engine=engine,
            hasher=accounts.make_hasher(settings),
            scorer=model,
            templates=make_templates(),
            history=history,
            pictures=PictureReference.from_tables(load_reference()),
            model=bundle,
            scoring=pool,
            outcomes=OutcomePusher(engine, history if pool is None else WorkerStore(pool), settings.outcome_push_seconds),
        )
        try:
            yield
        finally:
            if pool is not None:
                pool.close()
            engine.dispose()

    # No /docs or /redoc: their pages load scripts from a CDN, which neither the network nor the
    # content security policy allows; the spec itself is at /openapi.json.
    app = FastAPI(
        title="misdeclare triage",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Scores manifest lines for disguised antimony, gallium, germanium and rare earths, "
        "and runs the inspectors' queue, outcomes and audit trail. POST /score sets red and "
        "yellow by quota of rank among the request's own lines of each arrival day.",
    )
    app.include_router(api_router)
    app.include_router(page_router)
    app.mount("/static", StaticFiles(directory=str(resources.files("serve") / "static")), name="static")
    app.add_exception_handler(TriageError, triage_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(BodyLimitMiddleware, body_limit=settings.max_body_bytes, upload_limit=settings.max_upload_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    app.openapi = lambda: _openapi(app)
    return app


def app_from_environment() -> FastAPI:
    """The app with settings from the ``MISDECLARE_*`` environment: the factory of ``misdeclare serve --workers N``."""
    return create_app(Settings())
