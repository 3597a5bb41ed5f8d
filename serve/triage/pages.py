"""The inspector's pages: sign-in, queue, case, outcome, audit, queue settings, users and tokens.

Server-rendered HTML (Jinja2) enhanced with htmx: filters and pagination swap the queue table,
the outcome form swaps the outcome panel. Every form carries the session's CSRF token; every
page checks the session and the role through the same domain functions as the API.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import date
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from serve import charts as charts_module
from serve import report
from serve.triage import accounts, audit, cases, service, supervision, views
from serve.triage.accounts import Principal
from serve.triage.api_routes import AuditQuery, QueueQuery
from serve.triage.db import ROLES, Case, ConfigChange, User
from serve.triage.errors import ForbiddenError, NotFoundError, TriageError
from serve.triage.pictures import case_pictures
from serve.triage.web import DB, LOGIN_CSRF_COOKIE, SESSION_COOKIE, Runtime, client_of, page_principal, runtime

RT = Annotated[Runtime, Depends(runtime)]
Who = Annotated[Principal, Depends(page_principal)]
router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


class PageForm(BaseModel):
    """Base of page forms: form fields are text, so types are parsed leniently; unknown fields refused."""

    model_config = ConfigDict(extra="forbid")

    csrf_token: str = ""


class LoginForm(BaseModel):
    """Sign-in form."""

    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, Field(max_length=64)]
    password: Annotated[str, Field(max_length=256)]
    csrf_token: str = ""
    next: Annotated[str, Field(max_length=512)] = "/"


class PasswordForm(PageForm):
    """Password change form."""

    current: Annotated[str, Field(max_length=256)]
    new: Annotated[str, Field(max_length=256)]
    repeat: Annotated[str, Field(max_length=256)]


class OutcomeForm(PageForm):
    """Outcome form of the case page."""

    result: str
    found_commodity: str = ""
    found_quantity_kg: Annotated[str, Field(max_length=32)] = ""
    note: Annotated[str, Field(max_length=2000)] = ""
    corrects_id: str = ""


class ReassignForm(PageForm):
    """Reassignment form (supervisors)."""

    port: Annotated[str, Field(max_length=8)]


class ConfigForm(PageForm):
    """Queue settings form (supervisors); the share is entered in percent."""

    daily_capacity: Annotated[int, Field(ge=0, le=100_000)]
    exploration_percent: Annotated[float, Field(ge=0, le=100)]


class UserForm(PageForm):
    """New user form (admins)."""

    username: Annotated[str, Field(max_length=64)]
    role: str
    ports: Annotated[str, Field(max_length=400)] = ""


class UserUpdateForm(PageForm):
    """User change form (admins)."""

    role: str
    ports: Annotated[str, Field(max_length=400)] = ""
    active: str = ""
    reset_password: str = ""


class TokenForm(PageForm):
    """New API token form (admins)."""

    user_id: int
    name: Annotated[str, Field(max_length=64)]
    days: Annotated[int, Field(ge=1, le=3650)] = 90


# --- helpers -------------------------------------------------------------------------------------


class PasswordChangeRequired(TriageError):
    """The user must replace a one-time password first (the pages redirect to /password)."""

    status = 303


def require_password_changed(who: Principal) -> None:
    """Users with a one-time password go to the password page before anything else."""
    if who.must_change_password:
        raise PasswordChangeRequired("change your one-time password first")


def attempt(rt: Runtime, action) -> tuple[object, TriageError | None]:
    """Run ``action(db)`` in a transaction of its own; a refused action is rolled back and returned.

    Pages show a refused form again with the reason; running the action apart keeps a
    half-done write (e.g. an outcome refused by the compare-and-set) out of the page's transaction.
    Refusals of access (403, 404) are raised, not shown in the form.
    """
    try:
        with Session(rt.engine, expire_on_commit=False) as db, db.begin():
            return action(db), None
    except (ForbiddenError, NotFoundError):
        raise
    except TriageError as exc:
        return None, exc


def render(rt: Runtime, request: Request, template: str, status: int = 200, **context: object) -> HTMLResponse:
    """Render ``template`` with the request, the principal and ``context``."""
    who = getattr(request.state, "principal", None)
    return rt.templates.TemplateResponse(request, template, {"who": who, **context}, status_code=status)


def check_csrf(who: Principal, form: PageForm) -> None:
    """Refuse a page write whose form does not carry the session's CSRF token."""
    if not accounts.csrf_ok(who, form.csrf_token):
        raise ForbiddenError("the form expired or did not come from this site; reload the page")


def _safe_next(target: str) -> str:
    # Only same-site paths, so that the sign-in page cannot be used to redirect elsewhere.
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _home(who: Principal) -> str:
    if who.must_change_password:
        return "/password"
    return "/admin" if who.role == "admin" else "/"


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def _seconds(rt: Runtime) -> int:
    return int(rt.settings.session_hours * 3600)


# --- sign-in -------------------------------------------------------------------------------------


def login_page(rt: Runtime, request: Request, next_path: str, error: str = "", status: int = 200) -> HTMLResponse:
    """The sign-in form, with a fresh double-submit CSRF cookie."""
    token = secrets.token_urlsafe(32)
    response = render(rt, request, "login.html", status, csrf_token=token, next=_safe_next(next_path), error=error)
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, max_age=1800, httponly=True, samesite="strict", secure=rt.settings.cookie_secure
    )
    return response


def do_login(rt: Runtime, request: Request, form: LoginForm) -> Response:
    """Check the sign-in form and start a session; errors show the form again."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not (cookie and form.csrf_token and hmac.compare_digest(cookie, form.csrf_token)):
        return login_page(rt, request, form.next, "The sign-in form expired; please try again.", 403)
    try:
        started = accounts.sign_in(rt.engine, rt.hasher, rt.settings, form.username.strip(), form.password, client_of(request))
    except TriageError as exc:
        return login_page(rt, request, form.next, str(exc).capitalize() + ".", 401)
    with Session(rt.engine) as db:
        who = accounts.session_principal(db, started.token, client_of(request))
    target = _home(who) if form.next in ("", "/") or who.must_change_password else _safe_next(form.next)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        started.token,
        max_age=_seconds(rt),
        httponly=True,
        samesite="lax",
        secure=rt.settings.cookie_secure,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.get("/login")
def get_login(request: Request, rt: RT, next: Annotated[str, Query(max_length=512)] = "/") -> HTMLResponse:
    """Sign-in page."""
    return login_page(rt, request, next)


@router.post("/login")
def post_login(request: Request, rt: RT, form: Annotated[LoginForm, Form()]) -> Response:
    """Sign in."""
    return do_login(rt, request, form)


def do_logout(db: Session, who: Principal, request: Request, form: PageForm) -> Response:
    """End the session."""
    check_csrf(who, form)
    accounts.sign_out(db, who, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/logout")
def post_logout(request: Request, db: DB, who: Who, form: Annotated[PageForm, Form()]) -> Response:
    """Sign out."""
    return do_logout(db, who, request, form)


def do_password(rt: Runtime, db: Session, who: Principal, request: Request, form: PasswordForm) -> Response:
    """Change the password; errors show the form again."""
    check_csrf(who, form)
    if form.new != form.repeat:
        return render(rt, request, "password.html", 422, error="The two new passwords differ.")
    try:
        accounts.change_password(db, rt.hasher, who, form.current, form.new)
    except TriageError as exc:
        return render(rt, request, "password.html", exc.status, error=str(exc).capitalize() + ".")
    return RedirectResponse("/admin" if who.role == "admin" else "/", status_code=303)


@router.get("/password")
def get_password(request: Request, rt: RT, who: Who) -> HTMLResponse:
    """Password change page."""
    return render(rt, request, "password.html")


@router.post("/password")
def post_password(request: Request, rt: RT, db: DB, who: Who, form: Annotated[PasswordForm, Form()]) -> Response:
    """Change the password."""
    return do_password(rt, db, who, request, form)


# --- queue and cases -----------------------------------------------------------------------------


def queue_view(rt: Runtime, db: Session, who: Principal, request: Request, query: QueueQuery) -> Response:
    """The queue page, or only its table for htmx requests."""
    require_password_changed(who)
    if who.role == "admin":
        return RedirectResponse("/admin", status_code=303)
    page = cases.list_queue(db, who, query.to_filter())
    params = {k: v for k, v in query.model_dump(exclude_defaults=True).items() if k not in ("page",)}
    context = {
        "page": page,
        "rows": [views.case_summary(c) for c in page.rows],
        "query": query,
        "params": params,
        "config": cases.get_config(db),
        "ports": _port_choices(db, who),
        "today": date.today(),
        "urlencode": urlencode,
    }
    return render(rt, request, "_queue_table.html" if _is_htmx(request) else "queue.html", **context)


def _port_choices(db: Session, who: Principal) -> list[str]:
    if who.role != "supervisor":
        return sorted(who.ports)
    return [p for p in db.scalars(select(Case.port).where(Case.queue_state.is_not(None)).distinct().order_by(Case.port)) if p]


@router.get("/")
def get_queue(request: Request, rt: RT, db: DB, who: Who, query: Annotated[QueueQuery, Query()]) -> Response:
    """The queue."""
    return queue_view(rt, db, who, request, query)


def case_view(
    rt: Runtime, db: Session, who: Principal, request: Request, case_id: int, error: str = "", status: int = 200
) -> HTMLResponse:
    """The case page (the view is audited)."""
    require_password_changed(who)
    detail = cases.view_case(db, who, case_id)
    return render(
        rt,
        request,
        "case.html",
        status,
        d=detail,
        c=views.case_full(detail.case),
        pictures=case_pictures(detail, rt.pictures),
        shipper=views.history_rows(detail.shipper_history),
        consignee=views.history_rows(detail.consignee_history),
        error=error,
        commodities=cases.TARGET_COMMODITIES,
        history_limit=cases.HISTORY_LIMIT,
    )


@router.get("/cases/{case_id}")
def get_case(request: Request, rt: RT, db: DB, who: Who, case_id: int) -> HTMLResponse:
    """A case."""
    return case_view(rt, db, who, request, case_id)


def _outcome_input(form: OutcomeForm) -> cases.OutcomeInput:
    quantity = form.found_quantity_kg.strip().replace(",", "")
    try:
        quantity_kg = float(quantity) if quantity else None
    except ValueError:
        quantity_kg = -1.0  # refused by the domain check with a readable message
    commodity = form.found_commodity or None
    return cases.OutcomeInput(
        result=form.result,
        found_commodity=commodity,
        found_quantity_kg=quantity_kg,
        note=form.note,
        corrects_id=int(form.corrects_id) if form.corrects_id.isdigit() else None,
    )


def push_outcome(rt: Runtime, case_id: int) -> int:
    """Push the committed outcome in force of a case to the history store (if it is a label).

    Runs after the outcome's own transaction (:func:`attempt`) has committed, in a new session that
    sees it, through the service's :class:`serve.triage.export.OutcomePusher` (several outcomes in one
    store write under load; in the scoring workers when they run, which write the store anyway); a
    store write that fails here leaves the outcome recorded, and the next start-up of the service
    pushes it (:func:`serve.triage.export.outcomes_to_store`).
    """
    return rt.outcomes.push(case_id)


def record_outcome(
    rt: Runtime, db: Session, who: Principal, request: Request, case_id: int, form: OutcomeForm, later: BackgroundTasks
) -> Response:
    """Record an outcome from the case page; a refused entry shows the page again with the reason.

    A recorded label then goes to the history store (:func:`push_outcome`) after the answer is sent:
    the outcome is committed already, and the inspector does not wait for a store that scoring may
    be writing to (a push that fails is made at the next start-up).
    """
    require_password_changed(who)
    check_csrf(who, form)
    _, error = attempt(rt, lambda tx: cases.record_outcome(tx, who, case_id, _outcome_input(form)))
    if error is not None:
        return case_view(rt, db, who, request, case_id, error=str(error), status=error.status)
    later.add_task(push_outcome, rt, case_id)
    if _is_htmx(request):
        return case_view(rt, db, who, request, case_id)
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


@router.post("/cases/{case_id}/outcome")
def post_outcome(
    request: Request, rt: RT, db: DB, who: Who, case_id: int, form: Annotated[OutcomeForm, Form()], later: BackgroundTasks
) -> Response:
    """Record an outcome."""
    return record_outcome(rt, db, who, request, case_id, form, later)


def do_reassign(db: Session, who: Principal, case_id: int, form: ReassignForm) -> Response:
    """Move a case to another port (supervisors)."""
    require_password_changed(who)
    check_csrf(who, form)
    cases.reassign(db, who, case_id, form.port)
    return RedirectResponse(f"/cases/{case_id}", status_code=303)


@router.post("/cases/{case_id}/reassign")
def post_reassign(db: DB, who: Who, case_id: int, form: Annotated[ReassignForm, Form()]) -> Response:
    """Reassign a case."""
    return do_reassign(db, who, case_id, form)


# --- audit, settings, admin ----------------------------------------------------------------------


def audit_view(rt: Runtime, db: Session, who: Principal, request: Request, query: AuditQuery) -> HTMLResponse:
    """The audit page (supervisors and admins)."""
    require_password_changed(who)
    page = service.audit_page(db, who, query.to_filter(), query.page, query.per_page)
    params = {k: v for k, v in query.model_dump(exclude_defaults=True).items() if k != "page"}
    return render(
        rt,
        request,
        "audit.html",
        page=page,
        query=query,
        params=params,
        actions=audit.ACTIONS,
        pages=max(1, -(-page.total // page.per_page)),
        urlencode=urlencode,
    )


@router.get("/audit")
def get_audit(request: Request, rt: RT, db: DB, who: Who, query: Annotated[AuditQuery, Query()]) -> HTMLResponse:
    """The audit trail."""
    return audit_view(rt, db, who, request, query)


def audit_download(db: Session, who: Principal, query: AuditQuery) -> StreamingResponse:
    """The audit trail as a CSV download (supervisors and admins)."""
    require_password_changed(who)
    rows = service.audit_csv(db, who, query.to_filter())
    return StreamingResponse(
        rows, media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="misdeclare-audit.csv"'}
    )


@router.get("/audit.csv")
def get_audit_csv(db: DB, who: Who, query: Annotated[AuditQuery, Query()]) -> StreamingResponse:
    """Download the audit trail."""
    return audit_download(db, who, query)


def supervision_view(rt: Runtime, db: Session, who: Principal, request: Request, weeks: int) -> HTMLResponse:
    """The supervisor view: hit rates over weeks, capacity used per port, the loaded batches."""
    require_password_changed(who)
    view = supervision.supervision(db, who, date.today(), weeks)
    capacity = [(p.port, p.inspected_per_day) for p in view.ports]
    charts = {
        "rates": charts_module.rate_chart(view.rates, "hit-rates", "Hit rate of inspections by week"),
        "capacity": charts_module.capacity_chart(
            [p for p, _ in capacity],
            [v for _, v in capacity],
            float(view.daily_capacity),
            "capacity",
            "Inspections recorded per port and queue day",
        ),
    }
    return render(rt, request, "supervision.html", v=view, charts=charts, weeks=weeks)


@router.get("/supervision")
def get_supervision(
    request: Request, rt: RT, db: DB, who: Who, weeks: Annotated[int, Query(ge=1, le=104)] = supervision.DEFAULT_WEEKS
) -> HTMLResponse:
    """Supervisor view."""
    return supervision_view(rt, db, who, request, weeks)


def batch_report_view(rt: Runtime, db: Session, who: Principal, request: Request, batch_id: int) -> HTMLResponse:
    """The report of a loaded batch (what ``misdeclare score --report`` writes, from the counts kept at load)."""
    require_password_changed(who)
    batch, facts = supervision.batch_report(db, who, batch_id)
    # The validation window is the loaded model's; it is drawn only for a batch that model scored.
    own = rt.model is not None and set(facts.models) == {rt.model.version}
    return render(
        rt,
        request,
        "batch_report.html",
        batch=batch,
        r=facts,
        charts=report.report_charts(facts, report.reference_shares(rt.model.spec) if own else None),
    )


@router.get("/batches/{batch_id}/report")
def get_batch_report(request: Request, rt: RT, db: DB, who: Who, batch_id: int) -> HTMLResponse:
    """Report of a loaded batch."""
    return batch_report_view(rt, db, who, request, batch_id)


def settings_view(
    rt: Runtime, db: Session, who: Principal, request: Request, message: str = "", status: int = 200
) -> HTMLResponse:
    """The queue settings page (supervisors)."""
    require_password_changed(who)
    who.require("supervisor")
    history = db.scalars(select(ConfigChange).order_by(ConfigChange.id.desc()).limit(20)).all()
    return render(rt, request, "settings.html", status, config=cases.get_config(db), history=history, message=message)


@router.get("/settings")
def get_settings(request: Request, rt: RT, db: DB, who: Who) -> HTMLResponse:
    """Queue settings."""
    return settings_view(rt, db, who, request)


def save_settings(rt: Runtime, db: Session, who: Principal, request: Request, form: ConfigForm) -> HTMLResponse:
    """Change the queue settings (audited)."""
    require_password_changed(who)
    check_csrf(who, form)
    cases.set_config(db, who, form.daily_capacity, round(form.exploration_percent / 100, 4))
    return settings_view(rt, db, who, request, message="Settings saved.")


@router.post("/settings")
def post_settings(request: Request, rt: RT, db: DB, who: Who, form: Annotated[ConfigForm, Form()]) -> HTMLResponse:
    """Save queue settings."""
    return save_settings(rt, db, who, request, form)


def admin_view(rt: Runtime, db: Session, who: Principal, request: Request, status: int = 200, **shown: object) -> HTMLResponse:
    """Users and tokens (admins); ``shown`` carries a one-time secret to display once, or an error."""
    require_password_changed(who)
    who.require("admin")
    return render(
        rt, request, "admin.html", status, users=accounts.list_users(db), tokens=accounts.list_tokens(db), roles=ROLES, **shown
    )


@router.get("/admin")
def get_admin(request: Request, rt: RT, db: DB, who: Who) -> HTMLResponse:
    """Users and tokens."""
    return admin_view(rt, db, who, request)


def _admin_action(rt: Runtime, db: Session, who: Principal, request: Request, form: PageForm, action) -> HTMLResponse:
    require_password_changed(who)
    who.require("admin")
    check_csrf(who, form)
    shown, error = attempt(rt, action)
    if error is not None:
        return admin_view(rt, db, who, request, error.status, error=str(error))
    return admin_view(rt, db, who, request, **shown)


def _split_ports(text: str) -> list[str]:
    return [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]


@router.post("/admin/users")
def post_user(request: Request, rt: RT, db: DB, who: Who, form: Annotated[UserForm, Form()]) -> HTMLResponse:
    """Create a user and show the one-time password once."""
    return _admin_action(rt, db, who, request, form, lambda tx: _create_user(rt, tx, who, form))


def _create_user(rt: Runtime, db: Session, who: Principal, form: UserForm) -> dict:
    user, password = accounts.create_user(db, rt.hasher, who.origin, form.username.strip(), form.role, _split_ports(form.ports))
    return {"secret_label": f"One-time password of {user.username}", "secret": password}


@router.post("/admin/users/{user_id}")
def post_user_update(
    request: Request, rt: RT, db: DB, who: Who, user_id: int, form: Annotated[UserUpdateForm, Form()]
) -> HTMLResponse:
    """Change a user."""
    return _admin_action(rt, db, who, request, form, lambda tx: _update_user(rt, tx, who, user_id, form))


def _update_user(rt: Runtime, db: Session, who: Principal, user_id: int, form: UserUpdateForm) -> dict:
    password = accounts.update_user(
        db,
        rt.hasher,
        who.origin,
        user_id,
        role=form.role,
        ports=_split_ports(form.ports),
        active=form.active == "on",
        reset_password=form.reset_password == "on",
    )
    user = db.get(User, user_id)
    return {"secret_label": f"New one-time password of {user.username}", "secret": password} if password else {}


@router.post("/admin/tokens")
def post_token(request: Request, rt: RT, db: DB, who: Who, form: Annotated[TokenForm, Form()]) -> HTMLResponse:
    """Issue an API token and show the secret once."""
    return _admin_action(rt, db, who, request, form, lambda tx: _create_token(tx, who, form))


def _create_token(db: Session, who: Principal, form: TokenForm) -> dict:
    token, secret = accounts.create_token(db, who.origin, form.user_id, form.name, form.days)
    return {"secret_label": f"API token '{token.name}' (send as Authorization: Bearer ...)", "secret": secret}


@router.post("/admin/tokens/{token_id}/revoke")
def post_revoke(request: Request, rt: RT, db: DB, who: Who, token_id: int, form: Annotated[PageForm, Form()]) -> HTMLResponse:
    """Revoke an API token."""
    return _admin_action(rt, db, who, request, form, lambda tx: accounts.revoke_token(tx, who.origin, token_id) or {})
