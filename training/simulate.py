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
    new_route: dict
    seed: int = 0
    generator: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("history_weeks", "weeks", "lines_per_week", "daily_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.outcome_delay_days < 0:
            raise ValueError(f"outcome_delay_days must be >= 0, got {self.outcome_delay_days}")
        if not 0 <= self.new_route["week"] < self.weeks:
            raise ValueError(f"new_route.week must be in [0, weeks={self.weeks}), got {self.new_route['week']}")

    @property
    def loop_start(self) -> pd.Timestamp:
        """First day of week 0 of the loop."""
        return self.start + self.history_weeks * WEEK

    def week_start(self, week: int) -> pd.Timestamp:
        return self.loop_start + week * WEEK

    @property
    def shift_day(self) -> pd.Timestamp:
        """First day the new route carries fraud."""
        return self.week_start(self.new_route["week"])


def load_simulation_settings(path: str | Path | None = None, **overrides) -> SimulationSettings:
    """Read ``training/data/simulate.yaml`` (or ``path``), then keyword overrides (None: ignored)."""
    if path is None:
        text = resources.files("training").joinpath("data", "simulate.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    raw.update({key: value for key, value in overrides.items() if value is not None})
    if "new_route.week" in raw:
        raw["new_route"] = {**raw["new_route"], "week": raw.pop("new_route.week")}
    scenario = resources.files("training").joinpath("data", raw["new_route"]["scenario"])
    generator = load_generator_config(Path(str(scenario)))
    return SimulationSettings(
        start=pd.Timestamp(raw["start"]),
        history_weeks=int(raw["history_weeks"]),
        weeks=int(raw["weeks"]),
        lines_per_week=int(raw["lines_per_week"]),
        daily_capacity=int(raw["daily_capacity"]),
        outcome_delay_days=int(raw["outcome_delay_days"]),
        retrain=dict(raw["retrain"]),
        new_route=dict(raw["new_route"]),
        seed=int(raw.get("seed", 0)),
        generator=generator,
    )


def simulated_world(settings: SimulationSettings) -> pd.DataFrame:
    """The generated lines of the history and of every loop week (with labels and the simulation's truth).

    The new route opens on the first day of week ``new_route.week``.
    """
    config = _with_route_start(settings.generator, settings.new_route["route"], settings.shift_day)
    weeks = settings.history_weeks + settings.weeks
    end = settings.start + weeks * WEEK - pd.Timedelta(days=1)
    return generate_manifest(settings.lines_per_week * weeks, settings.seed, settings.start.date(), end.date(), config)


def _with_route_start(config: dict, route: str, day: pd.Timestamp) -> dict:
    routes = config.get("fraud", {}).get("routes", {})
    if route not in routes:
        raise ValueError(f"new_route.route {route!r} is not a fraud route of the generator configuration")
    changed = {**routes, route: {**routes[route], "start": day.date().isoformat()}}
    return {**config, "fraud": {**config["fraud"], "routes": changed}}


def is_new_fraud(lines: pd.DataFrame, settings: SimulationSettings) -> np.ndarray:
    """Fraud lines on the shift's new route."""
    return ((lines["sim_fraud"] == 1) & (lines["sim_route"] == settings.new_route["route"])).to_numpy()


def week_metrics(
    week: int,
    lines: pd.DataFrame,
    inspected: np.ndarray,
    explored: np.ndarray,
    probability: np.ndarray,
    settings: SimulationSettings,
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

    Returns
    -------
    dict
        ``week``, ``lines``, ``fraud``, ``inspected``, ``random_checks``, ``recall_at_capacity``,
        ``hit_rate``, ``new_fraud``, ``new_fraud_found``, ``new_fraud_recall`` (None before the
        shift's fraud exists), ``true_prevalence`` and ``estimated_prevalence``: each inspected line
        stands for ``1 / probability`` lines (Horvitz-Thompson), so the random checks estimate the
        fraud among the lines the model passed over (None without random checks).
    """
    fraud = (lines["sim_fraud"] == 1).to_numpy()
    new = is_new_fraud(lines, settings)
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
        "new_fraud": int(new.sum()),
        "new_fraud_found": int((inspected & new).sum()),
        "new_fraud_recall": _share(inspected & new, new),
        "true_prevalence": _share(fraud, np.ones(len(lines), dtype=bool)),
        "estimated_prevalence": found / len(lines) if explored.any() else None,
        "estimated_fraud": found if explored.any() else None,
    }


def _share(hits: np.ndarray, of: np.ndarray) -> float | None:
    return float(hits.sum() / of.sum()) if of.sum() else None


def policy_summary(weekly: list[dict], settings: SimulationSettings) -> dict:
    """The headline numbers of one policy's weeks (each a :func:`week_metrics` plus ``retrained``).

    Returns
    -------
    dict
        ``first_caught_week``: first week an inspection found the new fraud (None: never);
        ``new_fraud_recall_after_3_retrains``: new-fraud recall in the week after the third weekly
        retrain that follows it (None when the loop ends first); ``prevalence_estimate_error``: the
        relative error of the prevalence estimated with the random checks over the last 13 weeks
        (None when a week had none).
    """
    caught = next(
        (w["week"] for w in weekly if w["week"] >= settings.new_route["week"] and w.get("new_fraud_found", 0) > 0), None
    )
    after = None
    if caught is not None:
        retrains = [w["week"] for w in weekly if w["week"] >= caught and w.get("retrained")]
        if len(retrains) >= RETRAINS_AFTER_CATCH:
            following = [w for w in weekly if w["week"] == retrains[RETRAINS_AFTER_CATCH - 1] + 1]
            after = following[0]["new_fraud_recall"] if following else None
    last = weekly[-PREVALENCE_WEEKS:]
    lines = sum(w["lines"] for w in last)
    estimated = [w["estimated_fraud"] for w in last]
    estimate = None if any(e is None for e in estimated) else sum(estimated) / lines
    truth = sum(w["fraud"] for w in last) / lines
    return {
        "first_caught_week": caught,
        "new_fraud_recall_after_3_retrains": after,
        "prevalence_estimate_error": None if estimate is None else abs(estimate - truth) / truth,
        "prevalence_estimate": estimate,
        "true_prevalence": truth,
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
            "loop_start": settings.loop_start.date().isoformat(),
            "new_route": {**settings.new_route, "first_day": settings.shift_day.date().isoformat()},
            "retrain": settings.retrain,
        },
        "policies": {
            label: {"exploration": run.exploration, "weekly": run.weekly, **run.summary, "seconds": run.seconds}
            for label, run in zip(labels, runs, strict=True)
        },
    }


def recall_figure(document: dict):
    """Recall at capacity over the weeks, per policy: all fraud (solid) and the new route's (dashed)."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    shift = document["settings"]["new_route"]["week"]
    for index, (label, policy) in enumerate(document["policies"].items()):
        weeks = [w["week"] for w in policy["weekly"]]
        color = f"C{index}"
        axes.plot(
            weeks,
            [_nan(w["recall_at_capacity"]) for w in policy["weekly"]],
            color=color,
            label=f"exploration {float(label):.0%}: all fraud",
        )
        axes.plot(
            weeks,
            [_nan(w["new_fraud_recall"]) for w in policy["weekly"]],
            color=color,
            linestyle="--",
            label=f"exploration {float(label):.0%}: new route",
        )
    axes.axvline(shift, color="grey", linewidth=1)
    axes.annotate("new route opens", (shift, 1.02), ha="center", fontsize=8, color="grey", annotation_clip=False)
    axes.set(xlabel="week of the loop", ylabel="recall at the inspection capacity", ylim=(0, 1))
    axes.legend(fontsize=7, ncols=2, loc="lower right")
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
