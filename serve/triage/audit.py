"""The append-only audit trail: who did what, when and from where.

Rows are only ever inserted (the database refuses UPDATE and DELETE on ``audit_events``).
Events that must survive a failed request (sign-in failures, token use, refused access) are
written by :func:`record_now` in a transaction of their own.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from features.schema import neutralise_cell
from serve.triage.db import AuditEvent, utcnow

ACTIONS = (
    "sign_in",
    "sign_in_failed",
    "sign_in_locked",
    "sign_out",
    "password_change",
    "case_view",
    "outcome",
    "reassign",
    "config_change",
    "token_use",
    "token_create",
    "token_revoke",
    "user_create",
    "user_update",
    "batch_load",
    "labels_export",
    "audit_export",
    "score",
    "access_denied",
)
EXPORT_COLUMNS = ("id", "at", "actor", "action", "target", "detail", "client", "via")


@dataclass(frozen=True)
class Origin:
    """Where an event comes from: the acting name, its user id, the client address and the channel."""

    actor: str
    user_id: int | None
    client: str
    via: str


@dataclass(frozen=True)
class AuditFilter:
    """Filters of the audit page; ``None`` means no restriction."""

    actor: str | None = None
    action: str | None = None
    since: date | None = None
    until: date | None = None


def record(db: Session, origin: Origin, action: str, target: str = "", detail: dict | None = None) -> None:
    """Add an audit event to the current transaction (it commits or rolls back with the action).

    Parameters
    ----------
    db : Session
        Session of the transaction that performs the audited action.
    origin : Origin
        Who acts and from where.
    action : str
        One of :data:`ACTIONS`.
    target : str
        What the action is about, e.g. ``case:17`` or ``user:maria``.
    detail : dict, optional
        Extra facts, stored as JSON.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    db.add(
        AuditEvent(
            at=utcnow(),
            actor=origin.actor[:64],
            user_id=origin.user_id,
            action=action,
            target=target[:128],
            detail=json.dumps(detail or {}, sort_keys=True, default=str),
            client=origin.client[:64],
            via=origin.via,
        )
    )


def record_now(engine: Engine, origin: Origin, action: str, target: str = "", detail: dict | None = None) -> None:
    """Write an audit event in its own committed transaction (survives the failure of the request)."""
    with Session(engine) as db, db.begin():
        record(db, origin, action, target, detail)


def _filtered(query, filters: AuditFilter):
    if filters.actor:
        query = query.where(AuditEvent.actor == filters.actor)
    if filters.action:
        query = query.where(AuditEvent.action == filters.action)
    if filters.since:
        query = query.where(AuditEvent.at >= datetime.combine(filters.since, time(), UTC))
    if filters.until:
        query = query.where(AuditEvent.at < datetime.combine(filters.until + timedelta(days=1), time(), UTC))
    return query


def list_events(db: Session, filters: AuditFilter, limit: int, offset: int) -> tuple[list[AuditEvent], int]:
    """Return one page of audit events, newest first, and the number of matching events."""
    total = db.scalar(_filtered(select(func.count(AuditEvent.id)), filters))
    rows = db.scalars(_filtered(select(AuditEvent), filters).order_by(AuditEvent.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), int(total or 0)


def iter_csv(db: Session, filters: AuditFilter, chunk: int = 5000) -> Iterator[str]:
    """Yield the matching audit events as CSV text (header first), oldest first, in chunks."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    last_id = 0
    while True:
        rows = db.scalars(
            _filtered(select(AuditEvent), filters).where(AuditEvent.id > last_id).order_by(AuditEvent.id).limit(chunk)
        ).all()
        for row in rows:
            writer.writerow(
                [
                    row.id,
                    row.at.isoformat(),
                    *(neutralise_cell(value) for value in (row.actor, row.action, row.target, row.detail, row.client, row.via)),
                ]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(rows) < chunk:
            return
        last_id = rows[-1].id
