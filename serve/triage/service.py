"""Use cases behind the API routes: domain calls plus conversion to the edge models.

Each function here is what one route does, so that route handlers stay one line and the same
rules apply whichever way a request comes in.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from fastapi import UploadFile
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from features.schema import ManifestFileError, neutralise_frame
from serve.triage import accounts, audit, cases, export, loading, schemas, scoring, views
from serve.triage.accounts import Principal
from serve.triage.db import User
from serve.triage.errors import InvalidInputError
from serve.triage.web import Runtime

UPLOAD_SUFFIXES = (".csv", ".parquet", ".pq")


def me(who: Principal) -> schemas.MeOut:
    """Who the credentials belong to."""
    return schemas.MeOut(username=who.username, role=who.role, ports=sorted(who.ports), via=who.via)


async def score(db: Session, rt: Runtime, who: Principal, request: schemas.ScoreRequest) -> schemas.ScoreResponse:
    """Score the lines of ``request`` with the loaded model; audited with the number of lines.

    The lines' history comes from the service's history store, which then holds the valid lines.
    Scoring runs in the scoring workers (``rt.scoring``), else in a thread of this process; the
    event loop only waits for it, and the audit write and the answer are made in a thread too.
    """
    who.require(*cases.CASE_ROLES)
    lines = [line.model_dump() for line in request.lines]
    if rt.scoring is not None:
        result = await rt.scoring.score(lines)
    else:
        result = await run_in_threadpool(scoring.score_lines, rt.scorer, lines, rt.history)
    return await run_in_threadpool(_scored, db, who, len(lines), result)


def _scored(db: Session, who: Principal, n_lines: int, result: scoring.ScoreResult) -> schemas.ScoreResponse:
    audit.record(db, who.origin, "score", "score", {"lines": n_lines, "rejected": len(result.rejected)})
    return schemas.ScoreResponse.model_validate({"scores": result.scores, "rejected": result.rejected})


def queue(db: Session, who: Principal, filters: cases.QueueFilter) -> schemas.QueuePageOut:
    """One page of the queue."""
    return schemas.QueuePageOut.model_validate(views.queue_page(cases.list_queue(db, who, filters)))


def case(db: Session, who: Principal, case_id: int) -> schemas.CaseOut:
    """One case with its history (audited as a case view)."""
    return schemas.CaseOut.model_validate(views.case_detail(cases.view_case(db, who, case_id)))


def outcome(db: Session, rt: Runtime, who: Principal, case_id: int, body: schemas.OutcomeIn) -> schemas.OutcomeOut:
    """Record an outcome event and push the case's label, if it has one, to the history store.

    The store is written after the outcome is written to the triage database and before the
    request's transaction commits (at the end of the request): a store write that fails fails the
    request, and the outcome is rolled back. Any outcome in force that did not reach the store is
    pushed at the next start-up (:func:`serve.triage.export.outcomes_to_store`).
    """
    entry = cases.OutcomeInput(
        result=body.result,
        found_commodity=body.found_commodity,
        found_quantity_kg=body.found_quantity_kg,
        note=body.note,
        corrects_id=body.corrects_outcome_id,
    )
    recorded = cases.record_outcome(db, who, case_id, entry)
    export.outcomes_to_store(db, rt.history, [case_id])
    return schemas.OutcomeOut.model_validate(recorded)


def reassign(db: Session, who: Principal, case_id: int, body: schemas.ReassignIn) -> schemas.CaseSummary:
    """Move a case to another port."""
    return schemas.CaseSummary.model_validate(views.case_summary(cases.reassign(db, who, case_id, body.port)))


def config(db: Session, who: Principal) -> schemas.ConfigOut:
    """The queue settings in force."""
    who.require(*cases.CASE_ROLES)
    return _config_out(cases.get_config(db))


def set_config(db: Session, who: Principal, body: schemas.ConfigIn) -> schemas.ConfigOut:
    """Change the queue settings."""
    return _config_out(cases.set_config(db, who, body.daily_capacity, body.exploration_share))


def _config_out(current: cases.QueueConfig) -> schemas.ConfigOut:
    return schemas.ConfigOut(
        daily_capacity=current.daily_capacity,
        exploration_share=current.exploration_share,
        exploration_slots=current.exploration_slots,
    )


def load_upload(rt: Runtime, who: Principal, upload: UploadFile, queue_date: date | None) -> schemas.LoadReportOut:
    """Load an uploaded scored batch file (CSV or Parquet) into the queue.

    Raises
    ------
    InvalidInputError
        Unknown extension, missing column or unreadable file.
    """
    who.require("supervisor")
    name = Path(upload.filename or "upload").name
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        raise InvalidInputError(f"{name}: expected a .csv or .parquet file")
    with tempfile.NamedTemporaryFile(suffix=suffix) as copy:
        shutil.copyfileobj(upload.file, copy)
        copy.flush()
        try:
            report = loading.load_scored_file(rt.engine, Path(copy.name), who.origin, queue_date, source=name)
        except ManifestFileError as exc:  # the reader turns every unreadable file into one
            raise InvalidInputError(str(exc)) from exc
    return schemas.LoadReportOut.model_validate(report, from_attributes=True)


def labels_csv(db: Session, who: Principal, since: date) -> str:
    """The labelled lines recorded since ``since`` as CSV text (supervisors); audited."""
    who.require("supervisor")
    frame = export.labels_frame(db, since)
    audit.record(db, who.origin, "labels_export", "api", {"since": since.isoformat(), "rows": len(frame)})
    return neutralise_frame(frame).to_csv(index=False, date_format="%Y-%m-%d")


def audit_page(db: Session, who: Principal, filters: audit.AuditFilter, page: int, per_page: int) -> schemas.AuditPageOut:
    """One page of the audit trail (supervisors and admins)."""
    who.require("supervisor", "admin")
    events, total = audit.list_events(db, filters, per_page, (page - 1) * per_page)
    return schemas.AuditPageOut.model_validate({"total": total, "page": page, "per_page": per_page, "events": events})


def audit_csv(db: Session, who: Principal, filters: audit.AuditFilter) -> Iterator[str]:
    """The audit trail as CSV text (supervisors and admins); the export itself is audited first."""
    who.require("supervisor", "admin")
    audit.record(
        db,
        who.origin,
        "audit_export",
        "audit",
        {"actor": filters.actor, "action": filters.action, "since": filters.since, "until": filters.until},
    )
    db.flush()
    # Read every chunk now: the request's session closes when the handler returns, before a
    # streaming response would pull a lazy generator (which then queried a closed session).
    return iter(list(audit.iter_csv(db, filters)))


def _user_out(db: Session, user: User) -> schemas.UserOut:
    return schemas.UserOut(
        id=user.id,
        username=user.username,
        role=user.role,
        ports=sorted(accounts.user_ports(db, user.id)),
        active=user.active,
        must_change_password=user.must_change_password,
    )


def users(db: Session, who: Principal) -> list[schemas.UserOut]:
    """Every user (admins)."""
    who.require("admin")
    return [_user_out(db, user) for user, _ in accounts.list_users(db)]


def create_user(db: Session, rt: Runtime, who: Principal, body: schemas.UserCreateIn) -> schemas.UserCreatedOut:
    """Create a user with a one-time password (admins)."""
    who.require("admin")
    user, password = accounts.create_user(db, rt.hasher, who.origin, body.username, body.role, body.ports)
    return schemas.UserCreatedOut(user=_user_out(db, user), one_time_password=password)


def update_user(db: Session, rt: Runtime, who: Principal, user_id: int, body: schemas.UserUpdateIn) -> schemas.UserUpdatedOut:
    """Change a user's role, ports or active flag, or reset the password (admins)."""
    who.require("admin")
    password = accounts.update_user(
        db,
        rt.hasher,
        who.origin,
        user_id,
        role=body.role,
        ports=body.ports,
        active=body.active,
        reset_password=body.reset_password,
    )
    return schemas.UserUpdatedOut(user=_user_out(db, db.get(User, user_id)), one_time_password=password)


def _token_out(token, username: str) -> schemas.TokenOut:
    return schemas.TokenOut(
        id=token.id,
        name=token.name,
        username=username,
        prefix=token.prefix,
        created_at=token.created_at,
        expires_at=token.expires_at,
        revoked_at=token.revoked_at,
    )


def tokens(db: Session, who: Principal) -> list[schemas.TokenOut]:
    """Every API token, without secrets (admins)."""
    who.require("admin")
    return [_token_out(token, username) for token, username in accounts.list_tokens(db)]


def create_token(db: Session, who: Principal, body: schemas.TokenCreateIn) -> schemas.TokenCreatedOut:
    """Issue an API token (admins); the secret is in the answer only."""
    who.require("admin")
    token, secret = accounts.create_token(db, who.origin, body.user_id, body.name, body.days)
    return schemas.TokenCreatedOut(token=_token_out(token, db.get(User, body.user_id).username), secret=secret)


def revoke_token(db: Session, who: Principal, token_id: int) -> None:
    """Revoke an API token (admins)."""
    who.require("admin")
    accounts.revoke_token(db, who.origin, token_id)
