"""What a supervisor watches: hit rates of inspections by channel and of random checks over weeks,
capacity used per port, and the loaded batches with their reports.

Counts are grouped in the database (one row per queue day, priority and result); weeks, rates
and intervals are computed here, so that SQLite and PostgreSQL give the same numbers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from serve.charts import Rate
from serve.report import BatchReport
from serve.triage.accounts import Principal
from serve.triage.cases import get_config
from serve.triage.db import PRIORITY, Batch, Case, Outcome
from serve.triage.errors import NotFoundError

# Series of the hit-rate chart, by queue priority: the model's red and yellow picks, and the random checks.
SERIES = {"red": PRIORITY["red"], "yellow": PRIORITY["yellow"], "random checks": PRIORITY["green"]}
INSPECTED = ("confirmed", "clean")  # "not_inspected" says nothing about the hit rate
DEFAULT_WEEKS = 12
BATCHES_SHOWN = 20


@dataclass(frozen=True)
class PortUse:
    """One port over the window: queue days, queued cases and inspections recorded per queue day."""

    port: str
    days: int
    queued: int
    inspected: int

    @property
    def queued_per_day(self) -> float:
        return self.queued / self.days if self.days else 0.0

    @property
    def inspected_per_day(self) -> float:
        return self.inspected / self.days if self.days else 0.0


@dataclass(frozen=True)
class Supervision:
    """The supervisor view's numbers."""

    since: date
    until: date
    rates: dict[str, list[Rate]]
    ports: list[PortUse]
    daily_capacity: int
    exploration_share: float
    batches: list[Batch]


def week_of(day: date) -> str:
    """ISO week label, e.g. ``2026-W05`` (sorts in time order)."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def hit_rates(db: Session, since: date) -> dict[str, list[Rate]]:
    """Per series and ISO week of the queue date: confirmed misdeclarations of the inspected cases."""
    rows = db.execute(
        select(Case.queue_date, Case.priority, Outcome.result, func.count(Case.id))
        .join(Outcome, Outcome.id == Case.current_outcome_id)
        .where(Case.queue_state.is_not(None), Case.queue_date >= since, Outcome.result.in_(INSPECTED))
        .group_by(Case.queue_date, Case.priority, Outcome.result)
    ).all()
    hits: dict[tuple[int, str], int] = defaultdict(int)
    trials: dict[tuple[int, str], int] = defaultdict(int)
    for day, priority, result, count in rows:
        key = (int(priority), week_of(day))
        trials[key] += int(count)
        hits[key] += int(count) if result == "confirmed" else 0
    weeks = sorted({week for _, week in trials})
    return {
        name: [Rate(week, hits[(priority, week)], trials[(priority, week)]) for week in weeks if trials[(priority, week)]]
        for name, priority in SERIES.items()
    }


def port_use(db: Session, since: date, until: date) -> list[PortUse]:
    """Per port: days with a queue, queued cases and inspected cases (confirmed or clean), queue days
    from ``since`` to the day before ``until`` (today's queue is still being worked)."""
    window = (Case.queue_state.is_not(None), Case.queue_date >= since, Case.queue_date < until, Case.port.is_not(None))
    queued = db.execute(
        select(Case.port, func.count(func.distinct(Case.queue_date)), func.count(Case.id)).where(*window).group_by(Case.port)
    ).all()
    inspected = dict(
        db.execute(
            select(Case.port, func.count(Case.id))
            .join(Outcome, Outcome.id == Case.current_outcome_id)
            .where(*window, Outcome.result.in_(INSPECTED))
            .group_by(Case.port)
        ).all()
    )
    return sorted(
        (PortUse(port, int(days), int(count), int(inspected.get(port, 0))) for port, days, count in queued), key=lambda p: p.port
    )


def supervision(db: Session, who: Principal, today: date, weeks: int = DEFAULT_WEEKS) -> Supervision:
    """The supervisor view over the last ``weeks`` weeks up to ``today`` (supervisors only)."""
    who.require("supervisor")
    since = today - timedelta(weeks=weeks)
    config = get_config(db)
    batches = list(db.scalars(select(Batch).order_by(Batch.id.desc()).limit(BATCHES_SHOWN)))
    return Supervision(
        since=since,
        until=today,
        rates=hit_rates(db, since),
        ports=port_use(db, since, today),
        daily_capacity=config.daily_capacity,
        exploration_share=config.exploration_share,
        batches=batches,
    )


def batch_report(db: Session, who: Principal, batch_id: int) -> tuple[Batch, BatchReport]:
    """A loaded batch and the counts its report draws (supervisors).

    Raises
    ------
    NotFoundError
        No such batch, or one loaded before batches kept their counts.
    """
    who.require("supervisor")
    batch = db.get(Batch, batch_id)
    if batch is None:
        raise NotFoundError(f"no batch {batch_id}")
    if batch.summary is None:
        raise NotFoundError(
            f"batch {batch_id} was loaded before batches kept a report; load the file again "
            "into a new database, or run misdeclare score --report on it"
        )
    return batch, BatchReport.from_dict(json.loads(batch.summary))
