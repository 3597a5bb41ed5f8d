"""The exploration draw: random checks among unflagged lines, with a known selection probability.

The model only ever sees outcomes of the lines it flagged; its hit rate and any retraining on
those outcomes are biased by that selection. A share of each port's daily capacity therefore
goes to lines drawn uniformly at random among the unflagged lines of the day. Each pool (the new
unflagged lines of one batch at one port) is recorded in ``draws`` with its size and the
probability every line of it had of being picked (``picked / pool_size``); picked lines carry
that probability in ``selection_probability`` (flagged lines carry 1.0), so that estimates can
weight inspected lines by its inverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from serve.triage.db import Case, Draw, utcnow


@dataclass(frozen=True)
class DrawSummary:
    """One port's draw: ``picked`` random checks among ``pool_size`` unflagged lines."""

    port: str
    pool_size: int
    picked: int
    probability: float


def _pool(batch_id: int, port: str) -> list:
    return [Case.batch_id == batch_id, Case.port == port, Case.flagged.is_(False)]


def _explored_today(db: Session, queue_date: date, port: str) -> int:
    return int(db.scalar(select(func.sum(Draw.picked)).where(Draw.queue_date == queue_date, Draw.port == port)) or 0)


def draw_port(db: Session, batch_id: int, queue_date: date, port: str, config, rng: np.random.Generator) -> DrawSummary:
    """Draw the random checks of one port among the new unflagged lines of a batch.

    The day's slots (``config.exploration_slots``) not yet used by an earlier batch of the same
    day are filled by simple random sampling without replacement, so every line of the pool had
    the same probability ``picked / pool_size`` of being picked.
    """
    pool_ids = [row[0] for row in db.connection().execute(select(Case.id).where(*_pool(batch_id, port)).order_by(Case.id))]
    slots = max(config.exploration_slots - _explored_today(db, queue_date, port), 0)
    picked = min(slots, len(pool_ids))
    probability = picked / len(pool_ids) if pool_ids else 0.0
    draw = Draw(
        queue_date=queue_date,
        port=port,
        batch_id=batch_id,
        pool_size=len(pool_ids),
        picked=picked,
        probability=probability,
        daily_capacity=config.daily_capacity,
        exploration_share=config.exploration_share,
        drawn_at=utcnow(),
    )
    db.add(draw)
    db.flush()
    # Only the picked lines are updated (rewriting the whole pool doubled the load time); the
    # pool's probability is on the draw, which the unpicked lines reach by (batch_id, port).
    chosen = [pool_ids[i] for i in rng.choice(len(pool_ids), size=picked, replace=False)] if picked else []
    if chosen:
        db.execute(
            update(Case)
            .where(Case.id.in_(chosen))
            .values(selected_by="exploration", queue_state="open", draw_id=draw.id, selection_probability=probability)
            .execution_options(synchronize_session=False)
        )
    return DrawSummary(port=port, pool_size=len(pool_ids), picked=picked, probability=probability)


def draw_exploration(db: Session, batch_id: int, queue_date: date, config, rng: np.random.Generator) -> list[DrawSummary]:
    """Run :func:`draw_port` for every port with new unflagged lines in the batch.

    Parameters
    ----------
    db : Session
        Transaction of the load.
    batch_id : int
        Batch whose new lines form the pools.
    queue_date : date
        Day of the queue the random checks count against.
    config : QueueConfig
        Daily capacity and exploration share in force.
    rng : numpy Generator
        Source of randomness.

    Returns
    -------
    list of DrawSummary
        One per port, in port order.
    """
    if db.get_bind().dialect.name == "postgresql":
        # Two loads of the same day must not both spend the day's remaining slots: draws take turns
        # (SQLite needs nothing, its writers already do).
        db.execute(text("SELECT pg_advisory_xact_lock(hashtext('misdeclare-exploration-draw'))"))
    ports = db.scalars(
        select(Case.port).distinct().where(Case.batch_id == batch_id, Case.flagged.is_(False), Case.port.is_not(None))
    )
    return [draw_port(db, batch_id, queue_date, port, config, rng) for port in sorted(ports)]
