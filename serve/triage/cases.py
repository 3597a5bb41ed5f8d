"""The queue, the case view, outcomes, reassignment and the queue settings.

Every function takes the acting :class:`~serve.triage.accounts.Principal` and checks its role and
ports itself, so that the page, the API and the CLI share one set of rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from serve.triage import audit
from serve.triage.accounts import PORT_PATTERN, Principal
from serve.triage.db import CHANNELS, COMMODITIES, PRIORITY, RESULTS, SELECTED_BY, Case, ConfigChange, Draw, Outcome, utcnow
from serve.triage.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError

CASE_ROLES = ("inspector", "supervisor")
STATES = ("open", "decided", "all")
TARGET_COMMODITIES = tuple(c for c in COMMODITIES if c != "none")
# Earlier lines of a party read for the case page's timeline; tables and the API list the latest HISTORY_ROWS.
HISTORY_LIMIT = 50
HISTORY_ROWS = 10
MAX_PER_PAGE = 200
DEFAULT_CONFIG = {"daily_capacity": 40, "exploration_share": 0.1}


# --- queue settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueConfig:
    """Inspections per port and day, and the share of them given to random checks of unflagged lines."""

    daily_capacity: int
    exploration_share: float

    @property
    def exploration_slots(self) -> int:
        """Random checks per port and day."""
        return round(self.daily_capacity * self.exploration_share)


def get_config(db: Session) -> QueueConfig:
    """Return the current queue settings (the latest change of each key, or the defaults)."""
    values: dict[str, object] = dict(DEFAULT_CONFIG)
    latest = select(ConfigChange.key, func.max(ConfigChange.id).label("id")).group_by(ConfigChange.key).subquery()
    for key, value in db.execute(select(ConfigChange.key, ConfigChange.value).join(latest, latest.c.id == ConfigChange.id)):
        values[key] = value
    return QueueConfig(daily_capacity=int(values["daily_capacity"]), exploration_share=float(values["exploration_share"]))


def set_config(
    db: Session, who: Principal, daily_capacity: int | None = None, exploration_share: float | None = None
) -> QueueConfig:
    """Change the daily capacity and/or the exploration share (supervisors); each change is audited.

    Raises
    ------
    ForbiddenError
        For roles other than supervisor.
    InvalidInputError
        Capacity outside 0-100000 or share outside 0-1.
    """
    who.require("supervisor")
    if daily_capacity is not None and not 0 <= daily_capacity <= 100_000:
        raise InvalidInputError("daily_capacity must be between 0 and 100000")
    if exploration_share is not None and not 0.0 <= exploration_share <= 1.0:
        raise InvalidInputError("exploration_share must be between 0 and 1")
    before = get_config(db)
    for key, value in (("daily_capacity", daily_capacity), ("exploration_share", exploration_share)):
        if value is None or value == getattr(before, key):
            continue
        db.add(ConfigChange(at=utcnow(), actor=who.username, key=key, value=str(value)))
        audit.record(db, who.origin, "config_change", f"config:{key}", {"from": getattr(before, key), "to": value})
    db.flush()
    return get_config(db)


# --- queue ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueFilter:
    """Filters and page of the queue; ``None`` means no restriction."""

    port: str | None = None
    queue_date: date | None = None
    channel: str | None = None
    commodity: str | None = None
    selected_by: str | None = None
    state: str = "open"
    page: int = 1
    per_page: int = 50


@dataclass(frozen=True)
class QueuePage:
    """One page of the queue."""

    rows: list[Case]
    total: int
    page: int
    per_page: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        """Number of pages (at least 1)."""
        return max(1, -(-self.total // self.per_page))


def _check_filter(who: Principal, filters: QueueFilter) -> None:
    checks = (
        (filters.channel is None or filters.channel in CHANNELS, f"channel must be one of {', '.join(CHANNELS)}"),
        (filters.commodity is None or filters.commodity in COMMODITIES, f"commodity must be one of {', '.join(COMMODITIES)}"),
        (filters.selected_by is None or filters.selected_by in SELECTED_BY, "selected_by must be model or exploration"),
        (filters.state in STATES, f"state must be one of {', '.join(STATES)}"),
        (filters.port is None or bool(PORT_PATTERN.match(filters.port)), "port must be a UN/LOCODE"),
        (filters.page >= 1 and 1 <= filters.per_page <= MAX_PER_PAGE, f"page >= 1 and 1 <= per_page <= {MAX_PER_PAGE}"),
    )
    for ok, message in checks:
        if not ok:
            raise InvalidInputError(message)
    if filters.port is not None and not who.sees_port(filters.port):
        raise ForbiddenError(f"you are not assigned to port {filters.port}")


def _queue_conditions(who: Principal, filters: QueueFilter) -> list:
    state = Case.queue_state.is_not(None) if filters.state == "all" else Case.queue_state == filters.state
    conditions = [state]
    if who.role != "supervisor":
        conditions.append(Case.port.in_(sorted(who.ports)))
    # Channel and selection are filtered through the priority, which every queue index holds: in
    # the queue, red and yellow lines are the model's picks and green ones the random checks.
    if filters.channel is not None:
        conditions.append(Case.priority == PRIORITY[filters.channel])
    if filters.selected_by is not None:
        conditions.append(Case.priority == 0 if filters.selected_by == "exploration" else Case.priority > 0)
    for column, value in (
        (Case.port, filters.port),
        (Case.queue_date, filters.queue_date),
        (Case.suspected_commodity, filters.commodity),
    ):
        if value is not None:
            conditions.append(column == value)
    return conditions


def list_queue(db: Session, who: Principal, filters: QueueFilter) -> QueuePage:
    """Return a page of the queue visible to ``who``: red first, then yellow, then random checks,
    riskiest first within each.

    Parameters
    ----------
    db : Session
        Open session.
    who : Principal
        Inspector (own ports only) or supervisor (every port).
    filters : QueueFilter
        Port, queue date, channel, suspected commodity, selection, state and page.

    Returns
    -------
    QueuePage
        The rows, the number of matching cases and the open cases per channel.
    """
    who.require(*CASE_ROLES)
    _check_filter(who, filters)
    conditions = _queue_conditions(who, filters)
    # Deferred join: the page's ids come from the queue index alone (cheap even deep in a long
    # queue), then only those rows are read.
    ids = list(
        db.scalars(
            select(Case.id)
            .where(*conditions)
            .order_by(Case.priority.desc(), Case.risk_score.desc(), Case.id.desc())
            .limit(filters.per_page)
            .offset((filters.page - 1) * filters.per_page)
        )
    )
    by_id = {case.id: case for case in db.scalars(select(Case).where(Case.id.in_(ids)))} if ids else {}
    rows = [by_id[case_id] for case_id in ids]
    # Counted by priority (in the index, so no table reads) and named by channel.
    by_priority = dict(db.execute(select(Case.priority, func.count(Case.id)).where(*conditions).group_by(Case.priority)).all())
    return QueuePage(
        rows=list(rows),
        total=int(sum(by_priority.values())),
        page=filters.page,
        per_page=filters.per_page,
        counts={channel: int(by_priority.get(PRIORITY[channel], 0)) for channel in CHANNELS},
    )


# --- one case ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryLine:
    """An earlier line of the same shipper or consignee, with its outcome if one was recorded.

    ``case`` holds the columns of ``_HISTORY_COLUMNS`` (id, declaration_id, line_no, declared_at,
    hs_code, description, port, channel, risk_score) as attributes.
    """

    case: Row
    result: str | None
    found_commodity: str | None
    visible: bool


@dataclass(frozen=True)
class CaseDetail:
    """Everything the case page shows."""

    case: Case
    outcomes: list[Outcome]
    shipper_history: list[HistoryLine]
    consignee_history: list[HistoryLine]
    draw: Draw | None

    @property
    def current(self) -> Outcome | None:
        """The outcome in force (the latest event), if any."""
        return next((o for o in self.outcomes if o.id == self.case.current_outcome_id), None)


def _visible_case(db: Session, who: Principal, case_id: int) -> Case:
    who.require(*CASE_ROLES)
    case = db.get(Case, case_id)
    if case is None:
        raise NotFoundError(f"no case {case_id}")
    if not who.sees_port(case.port):
        raise ForbiddenError(f"case {case_id} belongs to port {case.port}, which you are not assigned to")
    return case


# What a party's earlier line shows (tables, API, timeline): read as plain rows, not ORM objects,
# because a case page reads up to 2 x HISTORY_LIMIT of them.
_HISTORY_COLUMNS = (
    Case.id,
    Case.declaration_id,
    Case.line_no,
    Case.declared_at,
    Case.hs_code,
    Case.description,
    Case.port,
    Case.channel,
    Case.risk_score,
)


def _history(db: Session, who: Principal, case: Case, column) -> list[HistoryLine]:
    party = getattr(case, column.key)
    if party is None:
        return []
    rows = db.execute(
        select(*_HISTORY_COLUMNS, Outcome.result, Outcome.found_commodity)
        .outerjoin(Outcome, Outcome.id == Case.current_outcome_id)
        .where(column == party, Case.id != case.id, Case.declared_at <= case.declared_at)
        .order_by(Case.declared_at.desc(), Case.id.desc())
        .limit(HISTORY_LIMIT)
    ).all()
    return [
        HistoryLine(case=row, result=row.result, found_commodity=row.found_commodity, visible=who.sees_port(row.port))
        for row in rows
    ]


def _draw_of(db: Session, case: Case) -> Draw | None:
    """The exploration draw whose pool held an unflagged line (picked or not)."""
    if case.draw_id is not None:
        return db.get(Draw, case.draw_id)
    if case.flagged or case.port_of_discharge is None:
        return None
    return db.scalar(select(Draw).where(Draw.batch_id == case.batch_id, Draw.port == case.port_of_discharge))


def view_case(db: Session, who: Principal, case_id: int) -> CaseDetail:
    """Return a case with its outcome history and the parties' earlier lines; the view is audited.

    Raises
    ------
    NotFoundError
        No such case.
    ForbiddenError
        Wrong role, or an inspector not assigned to the case's port.
    """
    case = _visible_case(db, who, case_id)
    outcomes = db.scalars(select(Outcome).where(Outcome.case_id == case.id).order_by(Outcome.id)).all()
    draw = _draw_of(db, case)
    detail = CaseDetail(
        case=case,
        outcomes=list(outcomes),
        draw=draw,
        shipper_history=_history(db, who, case, Case.shipper_id),
        consignee_history=_history(db, who, case, Case.consignee_id),
    )
    audit.record(db, who.origin, "case_view", f"case:{case.id}", {"declaration_id": case.declaration_id, "line_no": case.line_no})
    return detail


# --- outcomes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutcomeInput:
    """An inspection result as entered by an inspector.

    ``corrects_id`` must name the outcome in force when the case already has one: corrections are
    explicit, never silent.
    """

    result: str
    found_commodity: str | None = None
    found_quantity_kg: float | None = None
    note: str = ""
    corrects_id: int | None = None


def _check_outcome(entry: OutcomeInput) -> str:
    if entry.result not in RESULTS:
        raise InvalidInputError(f"result must be one of {', '.join(RESULTS)}")
    if len(entry.note) > 2000:
        raise InvalidInputError("note must have at most 2000 characters")
    if entry.result == "confirmed":
        if entry.found_commodity not in TARGET_COMMODITIES:
            raise InvalidInputError(f"a confirmed misdeclaration needs found_commodity, one of {', '.join(TARGET_COMMODITIES)}")
        if entry.found_quantity_kg is not None and not entry.found_quantity_kg > 0:
            raise InvalidInputError("found_quantity_kg must be > 0")
        return entry.found_commodity
    if entry.found_commodity not in (None, "none") or entry.found_quantity_kg is not None:
        raise InvalidInputError("found_commodity and found_quantity_kg belong to confirmed misdeclarations only")
    return "none"


def record_outcome(db: Session, who: Principal, case_id: int, entry: OutcomeInput) -> Outcome:
    """Append an outcome event to a case in the queue.

    Raises
    ------
    ConflictError
        The case is not in the queue, or it has an outcome and ``corrects_id`` does not name the
        outcome in force (also when someone else recorded one meanwhile).
    """
    case = _visible_case(db, who, case_id)
    found = _check_outcome(entry)
    if case.queue_state is None:
        raise ConflictError(f"case {case_id} was not selected for inspection; outcomes are recorded for queued cases")
    expected = case.current_outcome_id
    if entry.corrects_id != expected:
        raise ConflictError(
            f"case {case_id} has no outcome to correct"
            if expected is None
            else f"case {case_id} already has outcome {expected}; to correct it, send corrects_outcome_id={expected}"
        )
    outcome = Outcome(
        case_id=case.id,
        recorded_at=utcnow(),
        user_id=who.user_id,
        actor=who.username,
        result=entry.result,
        found_commodity=found,
        found_quantity_kg=entry.found_quantity_kg,
        note=entry.note.strip(),
        corrects_id=expected,
    )
    db.add(outcome)
    db.flush()
    # Compare-and-set: of two inspectors deciding at once, the second gets a conflict, not a silent overwrite.
    guard = Case.current_outcome_id.is_(None) if expected is None else Case.current_outcome_id == expected
    changed = db.execute(
        update(Case)
        .where(Case.id == case.id, guard)
        .values(current_outcome_id=outcome.id, queue_state="decided")
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        raise ConflictError(f"case {case_id} was decided by someone else meanwhile; reload it")
    db.refresh(case)
    audit.record(
        db,
        who.origin,
        "outcome",
        f"case:{case.id}",
        {
            "outcome": outcome.id,
            "result": outcome.result,
            "found_commodity": found,
            "found_quantity_kg": entry.found_quantity_kg,
            "corrects": expected,
        },
    )
    return outcome


def reassign(db: Session, who: Principal, case_id: int, port: str) -> Case:
    """Move a case to another port's queue (supervisors); audited."""
    who.require("supervisor")
    port = port.strip().upper()
    if not PORT_PATTERN.match(port):
        raise InvalidInputError("port must be a UN/LOCODE")
    case = _visible_case(db, who, case_id)
    before = case.port
    case.port = port
    audit.record(db, who.origin, "reassign", f"case:{case.id}", {"from": before, "to": port})
    db.flush()
    return case
