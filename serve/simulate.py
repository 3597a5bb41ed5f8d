"""The learning loop run as a whole: a generated world, week by week, through the product.

Per exploration share (a *policy*), in a folder of its own:

1. **week 0's champion** is the retrain decision core (:func:`training.retrain.challenge`) run on
   the labelled history before week 0 (the generator's own inspections), without a champion;
2. each week, its arriving lines (no labels, no truth) are scored by the champion with the history
   store (:func:`models.predict.score_frame`), then appended to the store;
3. each day's scored lines are loaded into a triage database (:func:`serve.triage.loading.
   load_scored_frames`), whose exploration draw picks the random checks among the unflagged lines
   (``daily_capacity`` times the share, per port and day) and stores their probability; inspectors
   then take, per port and day, the random checks and the model's lines in queue order (red first,
   by risk) up to the capacity;
4. an inspection's outcome (the truth: confirmed with the hidden good, or clean) is recorded as a
   triage outcome ``outcome_delay_days`` after the line's date, and pushed to the history store;
5. at the end of each week the retrain decision core runs on the lines of the last
   ``retrain.train_weeks`` weeks with the triage labels (exported as ``misdeclare triage export``
   does), and a promoted challenger becomes the champion (the job's MLflow records are left out);
   the week's measures are appended to ``weekly.jsonl`` in the policy's folder.

What each week achieved is measured against the simulation's truth
(:func:`training.simulate.week_metrics`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from features.history import line_keys
from features.history_store import HistoryStore
from features.schema import CANONICAL_COLUMNS, SELECTION_COLUMNS, validate_manifest
from models.predict import score_frame
from serve.triage.accounts import Principal
from serve.triage.cases import OutcomeInput, record_outcome, set_config
from serve.triage.db import Case, make_engine
from serve.triage.export import labels_frame, outcomes_to_store
from serve.triage.loading import load_scored_frames
from serve.triage.migrate import upgrade
from training.config import TrainConfig
from training.retrain import RetrainSettings, challenge
from training.simulate import WEEK, SimulationSettings, new_fraud_masks, policy_summary, shift_networks, week_metrics
from training.synthetic.output import arriving_lines

_SIMULATION = Principal(user_id=None, username="simulation", role="supervisor", ports=frozenset(), client="simulation", via="cli")
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class PolicyRun:
    """One policy's weeks (:func:`training.simulate.week_metrics` plus the retrain) and summary."""

    exploration: float
    weekly: list[dict]
    summary: dict
    seconds: float


def _known(world: pd.DataFrame) -> pd.DataFrame:
    """Lines as customs knows them: canonical columns and the selection of inspected lines."""
    return world[[*CANONICAL_COLUMNS, *SELECTION_COLUMNS]]


def _inspect(db: Session, batch_id: int, capacity: int) -> pd.DataFrame:
    """The batch's inspected cases: every random check, and the model's lines in queue order up to
    the capacity left at each port (the queue's order: priority, then risk, then newest)."""
    rows = db.execute(
        select(
            Case.id,
            Case.declaration_id,
            Case.line_no,
            Case.port,
            Case.selected_by,
            Case.selection_probability,
            Case.priority,
            Case.risk_score,
        ).where(Case.batch_id == batch_id, Case.queue_state == "open")
    ).all()
    cases = pd.DataFrame(
        rows, columns=["case_id", "declaration_id", "line_no", "port", "selected_by", "probability", "priority", "risk_score"]
    )
    explored = cases[cases["selected_by"] == "exploration"]
    model = cases[cases["selected_by"] == "model"].sort_values(
        ["priority", "risk_score", "case_id"], ascending=False, kind="stable"
    )
    left = (capacity - explored.groupby("port").size()).clip(lower=0)
    rank = model.groupby("port").cumcount()
    taken = model[(rank < model["port"].map(left).fillna(capacity)).to_numpy()]
    return pd.concat([explored, taken], ignore_index=True)


def _record_due(engine, pending: pd.DataFrame, today: pd.Timestamp, store: HistoryStore) -> pd.DataFrame:
    """Record the outcomes known by ``today`` as triage outcomes and push them to the store."""
    due = pending[pending["known_on"] <= today]
    if len(due):
        with Session(engine) as db, db.begin():
            for case in due.itertuples(index=False):
                found = case.commodity if case.fraud else None
                record_outcome(
                    db,
                    _SIMULATION,
                    int(case.case_id),
                    OutcomeInput(result="confirmed" if case.fraud else "clean", found_commodity=found),
                )
            outcomes_to_store(db, store, due["case_id"].astype(int).tolist())
    return pending[pending["known_on"] > today]


def _training_lines(
    world: pd.DataFrame, engine, since: pd.Timestamp, until: pd.Timestamp, loop_start: pd.Timestamp
) -> pd.DataFrame:
    """What the weekly retrain reads: the lines declared in [since, until) as customs knows them,
    with the generator's labels before the loop and the triage database's labels in it."""
    declared = world["declared_at"]
    window = world[(declared >= since) & (declared < until)]
    before, loop = window[window["declared_at"] < loop_start], window[window["declared_at"] >= loop_start]
    with Session(engine) as db:
        labels = labels_frame(db, _EPOCH)
    labels = labels[line_keys(labels).isin(line_keys(loop))]
    unlabelled = arriving_lines(loop[~line_keys(loop).isin(line_keys(labels))])
    frames = [_known(before), unlabelled, labels]
    lines = pd.concat([f for f in frames if len(f)], ignore_index=True)
    lines = validate_manifest(lines, "simulation").valid
    return lines.sort_values(["declared_at", "declaration_id", "line_no"], kind="stable", ignore_index=True)


def run_policy(
    world: pd.DataFrame,
    settings: SimulationSettings,
    exploration: float,
    folder: Path,
    config: TrainConfig,
    retrain: RetrainSettings,
) -> PolicyRun:
    """Run the loop for one exploration share (see the module docstring); ``folder`` is its workspace."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(settings.seed)
    train_weeks = int(settings.retrain.get("train_weeks", settings.history_weeks))
    history = world[world["declared_at"] < settings.loop_start]
    known = validate_manifest(_known(history), "simulation").valid
    store = HistoryStore(folder / "history")
    store.append(known)
    champion = challenge(known, None, retrain, config, folder / "models" / "week-000").challenger
    engine = make_engine(f"sqlite:///{folder / 'triage.db'}")
    upgrade(engine)
    with Session(engine) as db, db.begin():
        set_config(db, _SIMULATION, daily_capacity=settings.daily_capacity, exploration_share=exploration)
    pending = pd.DataFrame(columns=["case_id", "known_on", "fraud", "commodity"])
    networks = shift_networks(world, settings)
    weekly = []
    for week in range(settings.weeks):
        begin, end = settings.week_start(week), settings.week_start(week + 1)
        lines = world[(world["declared_at"] >= begin) & (world["declared_at"] < end)].reset_index(drop=True)
        arriving = validate_manifest(arriving_lines(lines), "simulation").valid
        scored = score_frame(champion, arriving, explain="none", num_threads=config.num_threads, past=store)
        store.append(arriving)
        inspected = []
        for day, of_day in scored.groupby(scored["declared_at"].dt.normalize(), sort=True):
            report = load_scored_frames(
                engine, [of_day], f"week-{week:03d}-{day.date()}", _SIMULATION.origin, queue_date=day.date(), rng=rng
            )
            with Session(engine) as db:
                inspected.append(_inspect(db, report.batch_id, settings.daily_capacity).assign(day=day))
        inspected = pd.concat(inspected, ignore_index=True)
        truth = lines.set_index(line_keys(lines))
        keys = line_keys(inspected)
        pending = pd.concat(
            [
                pending,
                pd.DataFrame(
                    {
                        "case_id": inspected["case_id"].to_numpy(),
                        "known_on": inspected["day"] + pd.Timedelta(days=settings.outcome_delay_days),
                        "fraud": truth.loc[keys, "sim_fraud"].to_numpy() == 1,
                        "commodity": truth.loc[keys, "sim_commodity"].to_numpy(),
                    }
                ),
            ],
            ignore_index=True,
        )
        pending = _record_due(engine, pending, end - pd.Timedelta(days=1), store)
        chosen = inspected.set_index(keys).reindex(line_keys(lines))  # one row per line of the week
        metrics = week_metrics(
            week,
            lines,
            chosen["case_id"].notna().to_numpy(),
            (chosen["selected_by"] == "exploration").to_numpy(),
            chosen["probability"].to_numpy("float64"),
            settings,
            new_fraud_masks(lines, settings, networks),
        )
        champion, metrics["retrain"] = _retrain(
            world, engine, champion, settings, end, train_weeks, config, retrain, folder / "models" / f"week-{week + 1:03d}"
        )
        metrics["retrained"] = metrics["retrain"]["action"] in ("promote", "keep")
        weekly.append(metrics)
        # One line per finished week: a long run can be read (and its progress seen) before it ends.
        with (folder / "weekly.jsonl").open("a", encoding="utf-8") as log:
            log.write(json.dumps(metrics) + "\n")
    return PolicyRun(exploration, weekly, policy_summary(weekly, settings), time.perf_counter() - started)


def _retrain(
    world,
    engine,
    champion,
    settings: SimulationSettings,
    end: pd.Timestamp,
    train_weeks: int,
    config: TrainConfig,
    retrain: RetrainSettings,
    folder: Path,
) -> tuple[object, dict]:
    """The week's retrain: the new champion, and what was decided (``skipped`` with the reason when
    the labels do not allow a comparison yet; otherwise also the challenger's last training day,
    ``trained_until``, exclusive, and the first day of the comparison window, ``compared_from``)."""
    lines = _training_lines(world, engine, end - train_weeks * WEEK, end, settings.loop_start)
    try:
        done = challenge(lines, champion, retrain, config, folder)
    except ValueError as error:
        return champion, {"action": "skipped", "reason": str(error)}
    decision = done.decision
    return (done.challenger if decision.promote else champion), {
        "action": decision.action,
        "reason": decision.reason,
        "gain": None if not np.isfinite(decision.gain) else float(decision.gain),
        # How stale a promoted challenger is: it learnt from lines declared before `trained_until`
        # (the comparison window, the label delay and its own validation period come after).
        "trained_until": done.result.split.boundaries["train_end"],
        "compared_from": done.window.start.date().isoformat(),
    }


def policy_job(
    settings: SimulationSettings, exploration: float, folder: Path, config: TrainConfig, retrain: RetrainSettings
) -> PolicyRun:
    """One policy in a worker process: the world is generated again there (same seed, same lines)."""
    from training.simulate import simulated_world

    return run_policy(simulated_world(settings), settings, exploration, folder, config, retrain)


def run_simulation(
    settings: SimulationSettings,
    explorations: list[float],
    folder: Path,
    config: TrainConfig,
    retrain: RetrainSettings,
    jobs: int = 1,
) -> list[PolicyRun]:
    """Every policy on the same world (same seed), each in ``folder/exploration-<share>``.

    With ``jobs`` > 1 the policies run in that many worker processes (joblib's loky backend), each
    training with ``config.num_threads`` threads.
    """
    from joblib import Parallel, delayed

    folders = [folder / f"exploration-{share:g}" for share in explorations]
    return Parallel(n_jobs=jobs, backend="loky")(
        delayed(policy_job)(settings, share, path, config, retrain) for share, path in zip(explorations, folders, strict=True)
    )
