"""The JSON API: scoring, queue, cases, outcomes, settings, batches, exports, audit, users, tokens.

Every route authenticates (bearer token or session cookie with CSRF header on writes) and checks
the role in its dependency and again in the domain function it calls.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from serve.triage import audit, cases, service
from serve.triage.accounts import Principal
from serve.triage.schemas import (
    AuditPageOut,
    CaseOut,
    CaseSummary,
    Channel,
    Commodity,
    ConfigIn,
    ConfigOut,
    ErrorOut,
    LoadReportOut,
    MeOut,
    OutcomeIn,
    OutcomeOut,
    Port,
    QueuePageOut,
    ReassignIn,
    ScoreRequest,
    ScoreResponse,
    SelectedBy,
    State,
    TokenCreatedOut,
    TokenCreateIn,
    TokenOut,
    UserCreatedOut,
    UserCreateIn,
    UserOut,
    UserUpdatedOut,
    UserUpdateIn,
)
from serve.triage.web import DB, Runtime, api_principal, require, runtime

RT = Annotated[Runtime, Depends(runtime)]
Anyone = Annotated[Principal, Depends(api_principal)]
CaseWorker = Annotated[Principal, Depends(require("inspector", "supervisor"))]
Supervisor = Annotated[Principal, Depends(require("supervisor"))]
Auditor = Annotated[Principal, Depends(require("supervisor", "admin"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Id = Annotated[int, Field(ge=1, le=2**62)]

AUTH_RESPONSES = {
    401: {"model": ErrorOut, "description": "Missing, unknown, expired or revoked credentials"},
    403: {"model": ErrorOut, "description": "Role or port not allowed, missing CSRF header, or password change pending"},
}
WRITE_RESPONSES = {
    **AUTH_RESPONSES,
    400: {"model": ErrorOut, "description": "Body that cannot be decoded (not UTF-8 JSON or form data)"},
    413: {"model": ErrorOut, "description": "Request body too large"},
}
CASE_RESPONSES = {404: {"model": ErrorOut, "description": "No such case"}}
CONFLICT = {409: {"model": ErrorOut, "description": "Would overwrite recorded history; send corrects_outcome_id"}}
CSV = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV file"}}

router = APIRouter(responses=AUTH_RESPONSES)


class QueryModel(BaseModel):
    """Query-string filters: text by nature, so parsed leniently; unknown names are refused and an
    empty value (an untouched filter of the page's form) means no filter."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_absent(cls, data: object) -> object:
        return {k: v for k, v in data.items() if v != ""} if isinstance(data, dict) else data


class QueueQuery(QueryModel):
    """Queue filters."""

    port: Port | None = None
    queue_date: date | None = None
    channel: Channel | None = None
    commodity: Commodity | None = None
    selected_by: SelectedBy | None = None
    state: State = "open"
    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    per_page: Annotated[int, Field(ge=1, le=cases.MAX_PER_PAGE)] = 50

    def to_filter(self) -> cases.QueueFilter:
        """The domain filter."""
        return cases.QueueFilter(
            port=self.port,
            queue_date=self.queue_date,
            channel=self.channel,
            commodity=self.commodity,
            selected_by=self.selected_by,
            state=self.state,
            page=self.page,
            per_page=self.per_page,
        )


class AuditQuery(QueryModel):
    """Audit filters."""

    actor: Annotated[str, Field(max_length=64)] | None = None
    action: Annotated[str, Field(max_length=32)] | None = None
    since: date | None = None
    until: date | None = None
    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    per_page: Annotated[int, Field(ge=1, le=500)] = 100

    def to_filter(self) -> audit.AuditFilter:
        """The domain filter."""
        return audit.AuditFilter(actor=self.actor, action=self.action, since=self.since, until=self.until)


@router.get("/api/me", tags=["session"])
def get_me(who: Anyone) -> MeOut:
    """Who the credentials belong to."""
    return service.me(who)


@router.post(
    "/score", tags=["scoring"], responses={**WRITE_RESPONSES, 503: {"model": ErrorOut, "description": "No model loaded"}}
)
async def post_score(body: ScoreRequest, db: DB, rt: RT, who: CaseWorker) -> ScoreResponse:
    """Score a small batch of manifest lines (at most 1000): risk score, channel, reasons, suspected commodity."""
    # async: the scoring runs in the scoring workers; this handler only awaits it (service.score).
    return await service.score(db, rt, who, body)


@router.get("/api/queue", tags=["queue"])
def get_queue(query: Annotated[QueueQuery, Query()], db: DB, who: CaseWorker) -> QueuePageOut:
    """The queue of the caller's ports (all ports for supervisors): red first, riskiest first."""
    return service.queue(db, who, query.to_filter())


@router.get("/api/cases/{case_id}", tags=["queue"], responses=CASE_RESPONSES)
def get_case(case_id: Id, db: DB, who: CaseWorker) -> CaseOut:
    """A case with its outcomes and the shipper's and consignee's earlier lines (the view is audited)."""
    return service.case(db, who, case_id)


@router.post(
    "/api/cases/{case_id}/outcomes", status_code=201, tags=["queue"], responses={**WRITE_RESPONSES, **CASE_RESPONSES, **CONFLICT}
)
def post_outcome(case_id: Id, body: OutcomeIn, db: DB, rt: RT, who: CaseWorker) -> OutcomeOut:
    """Record an outcome; a correction names the outcome it corrects and keeps it."""
    return service.outcome(db, rt, who, case_id, body)


@router.post("/api/cases/{case_id}/reassign", tags=["queue"], responses={**WRITE_RESPONSES, **CASE_RESPONSES})
def post_reassign(case_id: Id, body: ReassignIn, db: DB, who: Supervisor) -> CaseSummary:
    """Move a case to another port's queue (supervisors)."""
    return service.reassign(db, who, case_id, body)


@router.get("/api/config", tags=["settings"])
def get_config(db: DB, who: CaseWorker) -> ConfigOut:
    """The daily inspection capacity per port and the exploration share."""
    return service.config(db, who)


@router.put("/api/config", tags=["settings"], responses=WRITE_RESPONSES)
def put_config(body: ConfigIn, db: DB, who: Supervisor) -> ConfigOut:
    """Change the daily capacity and/or the exploration share (supervisors)."""
    return service.set_config(db, who, body)


@router.post(
    "/api/batches",
    status_code=201,
    tags=["batches"],
    responses={**WRITE_RESPONSES, 411: {"model": ErrorOut, "description": "Upload without Content-Length"}},
)
def post_batch(
    file: Annotated[UploadFile, File(description="Scored batch file (.csv or .parquet)")],
    rt: RT,
    who: Supervisor,
    queue_date: Annotated[date | None, Form()] = None,
) -> LoadReportOut:
    """Load a scored batch file into the queue (idempotent per declaration_id and line_no)."""
    return service.load_upload(rt, who, file, queue_date)


@router.get("/api/exports/labels", tags=["exports"], response_class=PlainTextResponse, responses=CSV)
def get_labels(
    since: Annotated[date, Query(description="Outcomes recorded on or after this day (UTC)")], db: DB, who: Supervisor
) -> PlainTextResponse:
    """Labelled manifest lines (canonical schema plus selection_probability, selected_by) for retraining."""
    return PlainTextResponse(service.labels_csv(db, who, since), media_type="text/csv")


@router.get("/api/audit", tags=["audit"])
def get_audit(query: Annotated[AuditQuery, Query()], db: DB, who: Auditor) -> AuditPageOut:
    """The audit trail, newest first (supervisors and admins)."""
    return service.audit_page(db, who, query.to_filter(), query.page, query.per_page)


@router.get("/api/audit/export", tags=["audit"], response_class=StreamingResponse, responses=CSV)
def get_audit_export(query: Annotated[AuditQuery, Query()], db: DB, who: Auditor) -> StreamingResponse:
    """The audit trail as CSV, oldest first (supervisors and admins)."""
    return StreamingResponse(service.audit_csv(db, who, query.to_filter()), media_type="text/csv")


@router.get("/api/users", tags=["admin"])
def get_users(db: DB, who: Admin) -> list[UserOut]:
    """Every user (admins)."""
    return service.users(db, who)


@router.post(
    "/api/users",
    status_code=201,
    tags=["admin"],
    responses={**WRITE_RESPONSES, 409: {"model": ErrorOut, "description": "User name taken"}},
)
def post_user(body: UserCreateIn, db: DB, rt: RT, who: Admin) -> UserCreatedOut:
    """Create a user; the answer holds a one-time password to hand over (admins)."""
    return service.create_user(db, rt, who, body)


@router.patch(
    "/api/users/{user_id}", tags=["admin"], responses={**WRITE_RESPONSES, 404: {"model": ErrorOut, "description": "No such user"}}
)
def patch_user(user_id: Id, body: UserUpdateIn, db: DB, rt: RT, who: Admin) -> UserUpdatedOut:
    """Change a user's role, ports or active flag, or reset the password (admins)."""
    return service.update_user(db, rt, who, user_id, body)


@router.get("/api/tokens", tags=["admin"])
def get_tokens(db: DB, who: Admin) -> list[TokenOut]:
    """Every API token, without secrets (admins)."""
    return service.tokens(db, who)


@router.post(
    "/api/tokens",
    status_code=201,
    tags=["admin"],
    responses={**WRITE_RESPONSES, 404: {"model": ErrorOut, "description": "No such user"}},
)
def post_token(body: TokenCreateIn, db: DB, who: Admin) -> TokenCreatedOut:
    """Issue an API token acting as a user (admins); the secret is shown once."""
    return service.create_token(db, who, body)


@router.delete(
    "/api/tokens/{token_id}",
    status_code=204,
    tags=["admin"],
    responses={404: {"model": ErrorOut, "description": "No such token"}},
)
def delete_token(token_id: Id, db: DB, who: Admin) -> None:
    """Revoke an API token (admins)."""
    service.revoke_token(db, who, token_id)
