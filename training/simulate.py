"""The learning loop, simulated: the world, the inspections' truth, and what is measured each week.

This module holds the pure parts of ``misdeclare simulate`` (the loop itself drives the product's
scoring, triage and retraining, and lives in :mod:`serve.simulate`):

- :class:`SimulationSettings` (``training/data/simulate.yaml``) and :func:`simulated_world`, a
  generated world of labelled history before week 0 and the loop's weeks, with a shift at a known
  week (fraud networks move to a new diversion route);
- :func:`week_metrics`: per week, against the simulation's truth, recall among all lines at the
  inspection capacity, the hit rate of inspections, recall on the shift's new fraud, and the
  prevalence estimated from the exploration checks (each random check stands for ``1/p`` lines);
- :func:`policy_summary`: new-fraud recall after the third weekly retrain that follows the week the
  new fraud is first caught, and the relative error of the prevalence estimate over 13 weeks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from training.synthetic import generate_manifest, load_generator_config

WEEK = pd.Timedelta(days=7)
PREVALENCE_WEEKS = 13  # the window of the prevalence estimate (a quarter)
RETRAINS_AFTER_CATCH = 3
RECOVERED_RECALL = 0.8  # the "back to >= 0.8"


SHIFT_KINDS = ("new_route", "new_cover", "abandoned_route")
# A line that more than one shift could claim counts for the first kind here (new goods first).
_MASK_ORDER = ("new_cover", "new_route", "abandoned_route")


@dataclass(frozen=True)
class SimulationSettings:
    """What ``training/data/simulate.yaml`` sets (see its comments)."""

    start: pd.Timestamp
    history_weeks: int
    weeks: int
    lines_per_week: int
    daily_capacity: int
    outcome_delay_days: int
    retrain: dict
    shifts: dict
    headline: str
    scenario: str
    seed: int = 0
    world: str | None = None
    generator: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("history_weeks", "weeks", "lines_per_week", "daily_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.outcome_delay_days < 0:
            raise ValueError(f"outcome_delay_days must be >= 0, got {self.outcome_delay_days}")
        if self.headline not in self.shifts:
            raise ValueError(f"headline {self.headline!r} is not one of the shifts {sorted(self.shifts)}")
        for name, shift in self.shifts.items():
            if shift.get("kind") not in SHIFT_KINDS:
                raise ValueError(f"shifts.{name}.kind must be one of {SHIFT_KINDS}, got {shift.get('kind')!r}")
            if not 0 <= shift["week"] < self.weeks:
                raise ValueError(f"shifts.{name}.week must be in [0, weeks={self.weeks}), got {shift['week']}")

    @property
    def loop_start(self) -> pd.Timestamp:
        """First day of week 0 of the loop."""
        return self.start + self.history_weeks * WEEK

    def week_start(self, week: int) -> pd.Timestamp:
        return self.loop_start + week * WEEK

    def shift_day(self, name: str | None = None) -> pd.Timestamp:
        """First day of a shift (the headline shift by default)."""
        return self.week_start(self.shifts[name or self.headline]["week"])


def load_simulation_settings(path: str | Path | None = None, **overrides) -> SimulationSettings:
    """Read ``training/data/simulate.yaml`` (or ``path``), then keyword overrides (None: ignored).

    ``shift_weeks`` ({shift: week}) moves shifts; ``world`` names a held-out world of
    ``training/data/worlds.yaml`` (``held-out-<i>``) whose structural parameters and generator seed
    replace the default world's.
    """
    if path is None:
        text = resources.files("training").joinpath("data", "simulate.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    raw.update({key: value for key, value in overrides.items() if value is not None})
    shifts = {name: dict(shift) for name, shift in raw["shifts"].items()}
    for name, week in (raw.pop("shift_weeks", None) or {}).items():
        if name not in shifts:
            raise ValueError(f"shift_weeks names an unknown shift {name!r}")
        shifts[name]["week"] = week
    scenario = resources.files("training").joinpath("data", raw["scenario"])
    generator = load_generator_config(Path(str(scenario)))
    seed, world = int(raw.get("seed", 0)), raw.get("world")
    if world is not None:
        generator, seed = _held_out_world(generator, world, seed)
    return SimulationSettings(
        start=pd.Timestamp(raw["start"]),
        history_weeks=int(raw["history_weeks"]),
        weeks=int(raw["weeks"]),
        lines_per_week=int(raw["lines_per_week"]),
        daily_capacity=int(raw["daily_capacity"]),
        outcome_delay_days=int(raw["outcome_delay_days"]),
        retrain=dict(raw["retrain"]),
        shifts=shifts,
        headline=str(raw["headline"]),
        scenario=str(raw["scenario"]),
        seed=seed,
        world=world,
        generator=generator,
    )


def _held_out_world(generator: dict, name: str, seed: int) -> tuple[dict, int]:
    """The generator configuration and seed of held-out world ``name`` (``held-out-<i>``) of the
    world family drawn with ``seed``: its structural parameters over the scenario's configuration."""
    from training.worlds import HELD_OUT, _merge, draw_world, load_world_spec

    prefix = "held-out-"
    if not name.startswith(prefix) or not name[len(prefix) :].isdigit():
        raise ValueError(f"world must be 'held-out-<i>', got {name!r}")
    world = draw_world(load_world_spec(), HELD_OUT, int(name[len(prefix) :]), seed)
    return _merge(generator, world.config), world.seed


def simulated_world(settings: SimulationSettings) -> pd.DataFrame:
    """The generated lines of the history and of every loop week (with labels and the simulation's truth).

    Each shift starts on the first day of its week.
    """
    config = settings.generator
    for name, shift in settings.shifts.items():
        config = _with_shift_day(config, name, shift, settings.shift_day(name))
    weeks = settings.history_weeks + settings.weeks
    end = settings.start + weeks * WEEK - pd.Timedelta(days=1)
    return generate_manifest(settings.lines_per_week * weeks, settings.seed, settings.start.date(), end.date(), config)


def _with_shift_day(config: dict, name: str, shift: dict, day: pd.Timestamp) -> dict:
    """The generator configuration with the shift's date set: a route's start or end, a new cover's start."""
    fraud = config.get("fraud", {})
    if shift["kind"] == "new_cover":
        block, key, field_name = "new_covers", shift["cover"], "start"
    else:
        block, key, field_name = "routes", shift["route"], "start" if shift["kind"] == "new_route" else "end"
    entries = fraud.get(block) or {}
    if key not in entries:
        raise ValueError(f"shifts.{name} names {key!r}, which is not in fraud.{block} of the scenario")
    changed = {**entries, key: {**entries[key], field_name: day.date().isoformat()}}
    return {**config, "fraud": {**fraud, block: changed}}


def shift_networks(world: pd.DataFrame, settings: SimulationSettings) -> dict[str, np.ndarray]:
    """Per abandoned-route shift, the fraud networks that used the route: most of their fraud lines
    before the shift took it (their later fraud is that shift's new fraud)."""
    networks = {}
    for name, shift in settings.shifts.items():
        if shift["kind"] != "abandoned_route":
            continue
        before = world[
            (world["sim_fraud"] == 1) & (world["sim_network"] >= 0) & (world["declared_at"] < settings.shift_day(name))
        ]
        share = (before["sim_route"] == shift["route"]).groupby(before["sim_network"]).mean()
        networks[name] = share.index[share > 0.5].to_numpy()
    return networks


def new_fraud_masks(lines: pd.DataFrame, settings: SimulationSettings, networks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each shift's new fraud among ``lines``: fraud declared under a new cover's goods, then fraud on
    a new route, then fraud of the networks that left an abandoned route (a line counts once)."""
    fraud = (lines["sim_fraud"] == 1).to_numpy()
    taken = np.zeros(len(lines), dtype=bool)
    masks = {}
    for name in sorted(settings.shifts, key=lambda n: _MASK_ORDER.index(settings.shifts[n]["kind"])):
        shift = settings.shifts[name]
        after = (lines["declared_at"] >= settings.shift_day(name)).to_numpy()
        if shift["kind"] == "new_cover":
            group = settings.generator["fraud"]["new_covers"][shift["cover"]]["group"]
            codes = [str(code) for code in settings.generator["other_goods"][group]["hs6"]]
            hit = lines["hs_code"].astype(str).str[:6].isin(codes).to_numpy()
        elif shift["kind"] == "new_route":
            hit = (lines["sim_route"] == shift["route"]).to_numpy()
        else:
            hit = lines["sim_network"].isin(networks.get(name, [])).to_numpy()
        masks[name] = fraud & after & hit & ~taken
        taken |= masks[name]
    return {name: masks[name] for name in settings.shifts}


def week_metrics(
    week: int,
    lines: pd.DataFrame,
    inspected: np.ndarray,
    explored: np.ndarray,
    probability: np.ndarray,
    settings: SimulationSettings,
    new_fraud: dict[str, np.ndarray],
) -> dict:
    """What one week of the loop achieved, against the truth.

    Parameters
    ----------
    week : int
    lines : DataFrame
        The week's lines with the simulation's truth (``sim_fraud``, ``sim_route``).
    inspected : array of bool
        Lines inspected (model-selected within the capacity, and random checks).
    explored : array of bool
        Lines inspected as random checks.
    probability : array of float
        Selection probability of each inspected line as the queue stored it (1 for the model's
        lines, ``picked / pool`` for random checks); ignored elsewhere.
    settings : SimulationSettings
    new_fraud : dict of str to array of bool
        Each shift's new fraud (:func:`new_fraud_masks`).

    Returns
    -------
    dict
        ``week``, ``lines``, ``fraud``, ``inspected``, ``random_checks``, ``recall_at_capacity``,
        ``hit_rate``, ``new_fraud``, ``new_fraud_found``, ``new_fraud_recall`` (the headline shift's;
        recall None before its fraud exists), ``shifts`` (the same three per shift),
        ``true_prevalence`` and ``estimated_prevalence``: each inspected line
        stands for ``1 / probability`` lines (Horvitz-Thompson), so the random checks estimate the
        fraud among the lines the model passed over (None without random checks).
    """
    fraud = (lines["sim_fraud"] == 1).to_numpy()
    shifts = {name: _found(inspected, mask) for name, mask in new_fraud.items()}
    weights = np.where(inspected, 1.0 / np.where(inspected, probability, 1.0), 0.0)
    found = float((weights * fraud).sum())
    return {
        "week": week,
        "lines": int(len(lines)),
        "fraud": int(fraud.sum()),
        "inspected": int(inspected.sum()),
        "random_checks": int(explored.sum()),
        "recall_at_capacity": _share(inspected & fraud, fraud),
        "hit_rate": _share(inspected & fraud, inspected),
        **shifts[settings.headline],
        "shifts": shifts,
        "true_prevalence": _share(fraud, np.ones(len(lines), dtype=bool)),
        "estimated_prevalence": found / len(lines) if explored.any() else None,
        "estimated_fraud": found if explored.any() else None,
    }


def _found(inspected: np.ndarray, new: np.ndarray) -> dict:
    return {
        "new_fraud": int(new.sum()),
        "new_fraud_found": int((inspected & new).sum()),
        "new_fraud_recall": _share(inspected & new, new),
    }


def _share(hits: np.ndarray, of: np.ndarray) -> float | None:
    return float(hits.sum() / of.sum()) if of.sum() else None


def policy_summary(weekly: list[dict], settings: SimulationSettings) -> dict:
    """The headline numbers of one policy's weeks (each a :func:`week_metrics` plus ``retrained``).

    Returns
    -------
    dict
        The headline shift's :func:`shift_summary` (``first_caught_week``,
        ``new_fraud_recall_after_3_retrains``, ...), ``shifts`` (each shift's), and
        ``prevalence_estimate_error``: the relative error of the prevalence estimated with the
        random checks over the last 13 weeks (None when a week had none).
    """
    shifts = {name: shift_summary(weekly, name, settings.shifts[name]["week"]) for name in settings.shifts}
    last = weekly[-PREVALENCE_WEEKS:]
    lines = sum(w["lines"] for w in last)
    estimated = [w["estimated_fraud"] for w in last]
    estimate = None if any(e is None for e in estimated) else sum(estimated) / lines
    truth = sum(w["fraud"] for w in last) / lines
    return {
        **shifts[settings.headline],
        "shifts": shifts,
        "prevalence_estimate_error": None if estimate is None else abs(estimate - truth) / truth,
        "prevalence_estimate": estimate,
        "true_prevalence": truth,
    }


def shift_summary(weekly: list[dict], name: str, week: int) -> dict:
    """One shift's recovery in one policy's weeks.

    Returns
    -------
    dict
        ``first_caught_week``: first week from the shift's ``week`` an inspection found its new
        fraud (None: never); ``new_fraud_recall_after_3_retrains``: its recall in the week after the
        third weekly retrain that follows (None when the loop ends first); ``recall_first_2_weeks``:
        its recall over the shift's first two weeks pooled, before any of its labels can have been
        learned (the premise: low when only labels can teach it); ``recovered_week``: first week from
        the catch with recall >= 0.8 (None: never).
    """
    rows = {w["week"]: w["shifts"][name] for w in weekly}
    caught = next((w for w in sorted(rows) if w >= week and rows[w]["new_fraud_found"] > 0), None)
    after = recovered = None
    if caught is not None:
        retrains = [w["week"] for w in weekly if w["week"] >= caught and w.get("retrained")]
        if len(retrains) >= RETRAINS_AFTER_CATCH and retrains[RETRAINS_AFTER_CATCH - 1] + 1 in rows:
            after = rows[retrains[RETRAINS_AFTER_CATCH - 1] + 1]["new_fraud_recall"]
        recovered = next(
            (w for w in sorted(rows) if w >= caught and (rows[w]["new_fraud_recall"] or 0) >= RECOVERED_RECALL), None
        )
    first = [rows[w] for w in (week, week + 1) if w in rows]
    new = sum(r["new_fraud"] for r in first)
    return {
        "first_caught_week": caught,
        "new_fraud_recall_after_3_retrains": after,
        "recall_first_2_weeks": sum(r["new_fraud_found"] for r in first) / new if new else None,
        "recovered_week": recovered,
    }


def is_finite(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def simulation_document(settings: SimulationSettings, runs: list, labels: list[str]) -> dict:
    """The ``--json`` document: settings, then per policy (keyed by the share as written) its weeks and summary."""
    return {
        "settings": {
            "weeks": settings.weeks,
            "history_weeks": settings.history_weeks,
            "lines_per_week": settings.lines_per_week,
            "daily_capacity": settings.daily_capacity,
            "outcome_delay_days": settings.outcome_delay_days,
            "seed": settings.seed,
            "world": settings.world or "default",
            "scenario": settings.scenario,
            "loop_start": settings.loop_start.date().isoformat(),
            "headline": settings.headline,
            "shifts": {
                name: {**shift, "first_day": settings.shift_day(name).date().isoformat()}
                for name, shift in settings.shifts.items()
            },
            "retrain": settings.retrain,
        },
        "policies": {
            label: {"exploration": run.exploration, "weekly": run.weekly, **run.summary, "seconds": run.seconds}
            for label, run in zip(labels, runs, strict=True)
        },
    }


_SHIFT_STYLES = ("--", ":", "-.")


def recall_figure(document: dict):
    """Recall at capacity over the weeks, per policy: all fraud (top, solid) and each shift's new
    fraud (bottom, one line style per shift); grey lines mark the shifts' first weeks."""
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    shifts = document["settings"]["shifts"]
    for index, (label, policy) in enumerate(document["policies"].items()):
        weeks = [w["week"] for w in policy["weekly"]]
        color, name = f"C{index}", f"exploration {float(label):.0%}"
        top.plot(weeks, [_nan(w["recall_at_capacity"]) for w in policy["weekly"]], color=color, label=f"{name}: all fraud")
        for style, shift in zip(_SHIFT_STYLES, shifts, strict=False):
            recall = [_nan(w["shifts"][shift]["new_fraud_recall"]) for w in policy["weekly"]]
            bottom.plot(weeks, recall, color=color, linestyle=style, label=f"{name}: {shift}")
    # Before the first shift the bottom panel is empty: its legend goes there.
    for axes, corner in ((top, "lower right"), (bottom, "center left")):
        for shift, spec in shifts.items():
            axes.axvline(spec["week"], color="grey", linewidth=1)
            axes.annotate(shift, (spec["week"], 1.02), ha="center", fontsize=7, color="grey", annotation_clip=False)
        axes.set(ylabel="recall at the inspection capacity", ylim=(0, 1))
        axes.legend(fontsize=6, ncols=2, loc=corner)
    bottom.set(xlabel="week of the loop")
    figure.tight_layout()
    return figure


def _nan(value) -> float:
    return float("nan") if value is None else float(value)


def log_simulation(document: dict, figure_path: Path, tracking_uri: str | None = None) -> str:
    """Log a simulation to one MLflow run of experiment "misdeclare" (document, plot, headline metrics)."""
    import json

    import mlflow

    from models.registry import resolve_tracking_uri
    from training.tracking import EXPERIMENT, git_commit

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="simulate") as run:
        mlflow.log_params({f"simulate_{k}": v for k, v in document["settings"].items() if not isinstance(v, dict)})
        for label, policy in document["policies"].items():
            for key in ("new_fraud_recall_after_3_retrains", "prevalence_estimate_error"):
                if is_finite(policy[key]):
                    mlflow.log_metric(f"exploration_{label}_{key}", float(policy[key]))
            for week in policy["weekly"]:
                if is_finite(week["recall_at_capacity"]):
                    mlflow.log_metric(f"exploration_{label}_recall_at_capacity", week["recall_at_capacity"], step=week["week"])
        mlflow.set_tags({"git_commit": git_commit(), "job": "simulate"})
        mlflow.log_text(json.dumps(document, indent=1), "simulation/simulation.json")
        mlflow.log_artifact(str(figure_path), "simulation")
    return run.info.run_id
