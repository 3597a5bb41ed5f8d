"""Cross-world evaluation: train on some simulated worlds, measure on worlds built differently.

A figure measured on the generator the team tuned says little about manifests nobody here
generated. So the model is trained on the pooled labelled history of worlds whose structural
parameters come from the training ranges of ``training/data/worlds.yaml``, and measured on held-out
worlds whose every parameter lies outside those ranges (and whose fraud also moves through a
country no training world used), against the simulation's truth:

- ``cold``: a new customs office: empty history store at the test start (history builds up from
  the scored lines themselves, without outcomes);
- ``warm``: the office's history store holds the world's earlier lines, outcomes known after the
  world's own label delay;
- ``own``: a model trained on the held-out world's own labelled history before the test start
  (its own inspection policy), scoring its later lines with the warm store.

Measured among the lines in the disguise scope (lines declared under a controlled good's own code
are the origin check's, not the disguise score's): recall and precision at each inspection rate and
average precision of the model and of every baseline rule, recall per fraud scenario, the shares of
red and yellow, the largest share of lines sharing one score, and the share of correctly declared
controlled goods that went red. Pure computation: MLflow logging lives in the job
(:func:`log_crossworld`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from features.schema import validate_manifest
from training.asof import store_at
from training.baselines import BASELINES, BaselineState, fit_baselines
from training.config import TrainConfig
from training.metrics import precision_at_rate, recall_at_rate, top_k_mask
from training.split import TimeSplit, window_split
from training.synthetic import SIM_COLUMNS
from training.train import hide_labels_outside, train_model
from training.worlds import World, draw_worlds, generate_world

MODEL = "model"
MODES = ("cold", "warm", "own")
HEADLINE_RULE = "hub_value_rule"
LEGIT_CONTROLLED = "legit_target"  # sim_scenario of correctly declared controlled goods


@dataclass(frozen=True)
class CrossWorldSettings:
    """Sizes and dates of a cross-world evaluation.

    Attributes
    ----------
    n_train, n_held_out : int
        Training worlds pooled into one model; held-out worlds measured.
    train_rows, held_out_rows : int
        Lines simulated per world.
    start, end : str
        Simulated period of every world (ISO dates).
    test_start : str
        First day of each held-out world's measured period (its lines before are its history).
    rates : tuple of float
        Inspection rates reported.
    seed : int
        Seed of the world family (worlds, generators and models derive from it).
    modes : tuple of str
        Which of ``cold``, ``warm``, ``own`` to measure.
    own_with_prior : bool
        ``own`` trains on the world's labelled history together with the training worlds' lines,
        the simulated prior the shipped champion was trained on (False: on the world's own history
        alone). The prior joins the training period only: early stopping and calibration use the
        world's own validation window.
    """

    n_train: int = 4
    n_held_out: int = 8
    train_rows: int = 150_000
    held_out_rows: int = 120_000
    start: str = "2023-01-01"
    end: str = "2026-06-30"
    test_start: str = "2025-07-01"
    rates: tuple[float, ...] = (0.01, 0.02, 0.05)
    seed: int = 0
    modes: tuple[str, ...] = MODES
    own_with_prior: bool = True

    def __post_init__(self):
        if self.n_train < 1 or self.n_held_out < 1:
            raise ValueError(
                f"cross-world evaluation needs >= 1 training and >= 1 held-out world, got "
                f"n_train={self.n_train}, n_held_out={self.n_held_out}"
            )
        unknown = set(self.modes) - set(MODES)
        if unknown or not self.modes:
            raise ValueError(f"modes must be a non-empty subset of {MODES}, got {self.modes}")
        if not pd.Timestamp(self.start) < pd.Timestamp(self.test_start) < pd.Timestamp(self.end):
            raise ValueError(f"test_start must lie inside ({self.start}, {self.end}), got {self.test_start}")


def canonical_lines(frame: pd.DataFrame, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validated lines without the simulation's truth, and that truth aligned to them."""
    result = validate_manifest(frame.drop(columns=list(SIM_COLUMNS)), source)
    if len(result.quarantine):
        raise ValueError(f"{source}: {len(result.quarantine)} simulated lines failed validation")
    return result.valid.reset_index(drop=True), frame[list(SIM_COLUMNS)].reset_index(drop=True)


def _bundle(result, folder: str, version: str):
    from models.bundle import load_bundle_folder, save_bundle

    save_bundle(folder, result.booster, result.spec, result.commodity_booster)
    return load_bundle_folder(folder, version=version)


def train_pooled(worlds: list[World], settings: CrossWorldSettings, config: TrainConfig):
    """Train one model on the pooled labelled history of ``worlds``; return it and the pooled lines."""
    frames = [canonical_lines(generate_world(w, settings.train_rows, settings.start, settings.end), w.name)[0] for w in worlds]
    pooled = pd.concat(frames, ignore_index=True).sort_values("declared_at", kind="stable", ignore_index=True)
    return train_model(pooled, config), pooled


def max_tie_share(scores: np.ndarray) -> float:
    """Largest share of lines that share one score value (1.0: the ranking ties every line)."""
    if len(scores) == 0:
        return float("nan")
    _, counts = np.unique(np.asarray(scores, dtype="float64"), return_counts=True)
    return float(counts.max() / len(scores))


def scorer_figures(y: np.ndarray, scores: np.ndarray, rates) -> dict[str, float]:
    """Recall and precision at each rate and average precision of one scorer."""
    figures = {}
    for rate in rates:
        figures[f"recall_at_{rate * 100:g}pct"] = recall_at_rate(y, scores, rate)
        figures[f"precision_at_{rate * 100:g}pct"] = precision_at_rate(y, scores, rate)
    figures["average_precision"] = float(average_precision_score(y, scores)) if 0 < y.sum() < len(y) else float("nan")
    return figures


def scenario_recall(truth: pd.DataFrame, flagged: np.ndarray) -> dict[str, float]:
    """Recall among the disguised lines of each scenario, disguise and diversion route."""
    fraud = truth["sim_fraud"].to_numpy() == 1
    recall = {}
    for column in ("sim_scenario", "sim_disguise", "sim_route"):
        values = truth[column].astype("string").to_numpy(dtype=object)
        for value in sorted(set(values[fraud])):
            group = fraud & (values == value)
            recall[f"{column.removeprefix('sim_')}={value}"] = float(flagged[group].mean())
    return recall


def measure(
    lines: pd.DataFrame, truth: pd.DataFrame, scored: pd.DataFrame, baselines: dict[str, np.ndarray], in_scope: np.ndarray, rates
) -> dict:
    """Every figure of one scored world (see the module docstring)."""
    headline = rates[min(1, len(rates) - 1)]
    y = truth["sim_fraud"].to_numpy(dtype="int64")[in_scope]
    risk = scored["risk_score"].to_numpy(dtype="float64")
    scorers = {MODEL: risk, **baselines}
    channels = scored["channel"].astype("string").to_numpy(dtype=object)
    legit_controlled = (truth["sim_scenario"] == LEGIT_CONTROLLED).to_numpy()
    return {
        "lines": int(len(lines)),
        "in_scope_lines": int(in_scope.sum()),
        "disguised_lines": int(y.sum()),
        "prevalence": float(y.mean()) if len(y) else float("nan"),
        "scorers": {name: scorer_figures(y, score[in_scope], rates) for name, score in scorers.items()},
        "scenario_recall": scenario_recall(truth[in_scope].reset_index(drop=True), top_k_mask(risk[in_scope], headline)),
        "red_share": float((channels == "red").mean()),
        "yellow_share": float((channels == "yellow").mean()),
        "max_tie_share": max_tie_share(risk[in_scope]),
        "mean_risk": float(risk[in_scope].mean()) if in_scope.any() else float("nan"),
        "controlled_legit_lines": int(legit_controlled.sum()),
        "controlled_legit_red_share": (
            float((channels[legit_controlled] == "red").mean()) if legit_controlled.any() else float("nan")
        ),
    }


def disguise_scope(bundle, lines: pd.DataFrame) -> np.ndarray:
    """Lines the disguise score is for: not declared under a controlled good's own code."""
    declared = bundle.pipeline.named_steps["declared_hs"].transform(lines)
    return declared["is_target_code"].to_numpy(dtype="float64") != 1.0


def score_world(
    bundle, test: pd.DataFrame, truth: pd.DataFrame, past: pd.DataFrame | None, state: BaselineState, num_threads: int, rates
) -> dict:
    """Score a world's test lines (outcomes hidden) with the model and the baselines; measure."""
    from models.predict import score_frame

    hidden = hide_labels_outside(test, test.index[:0])
    scored = score_frame(bundle, hidden, explain="none", num_threads=num_threads, past=past)
    baselines = {name: rule(hidden, state) for name, rule in BASELINES.items()}
    return measure(test, truth, scored, baselines, disguise_scope(bundle, test), rates)


def own_history(
    history: pd.DataFrame, prior: pd.DataFrame | None, cutoff: pd.Timestamp, config: TrainConfig
) -> tuple[pd.DataFrame, TimeSplit]:
    """Lines and split of a model trained on an office's own labelled history (and a prior).

    The office's lines before ``cutoff`` are split train | gap | valid as any retraining is. The
    prior (simulated worlds, as the shipped champion was trained on) joins the training period
    whole: the office's labels stop at ``cutoff`` and a fraud that began shortly before (a new
    control, a new route) has few of them, while the simulation covers every period the domain
    facts describe (the README gives the figures with the prior cut at ``cutoff`` and whole).
    """
    history = history.reset_index(drop=True)
    split = window_split(history, cutoff, config.valid_fraction, config.label_delay_days)
    if prior is None or prior.empty:
        return history, split
    prior = prior.set_axis(np.arange(len(history), len(history) + len(prior)))
    return pd.concat([history, prior]), replace(split, train=pd.concat([split.train, prior]))


def evaluate_world(
    world: World,
    bundle,
    train_lines: pd.DataFrame,
    state: BaselineState,
    settings: CrossWorldSettings,
    config: TrainConfig,
    folder: str,
) -> dict:
    """Figures of one held-out world in every requested mode.

    The baseline rules read only the reference tables (bands, hubs), so one ``state`` fitted on the
    training worlds serves every world and mode.
    """
    lines, truth = canonical_lines(generate_world(world, settings.held_out_rows, settings.start, settings.end), world.name)
    cutoff = pd.Timestamp(settings.test_start)
    dates = pd.to_datetime(lines["declared_at"])
    inside = (dates >= cutoff).to_numpy()
    test, test_truth = lines[inside], truth[inside].reset_index(drop=True)
    store = store_at(lines, cutoff, world.label_delay_days)
    figures = {"world": world.name, "params": world.params, "modes": {}}
    if "cold" in settings.modes:
        figures["modes"]["cold"] = score_world(bundle, test, test_truth, None, state, config.num_threads, settings.rates)
    if "warm" in settings.modes:
        figures["modes"]["warm"] = score_world(bundle, test, test_truth, store, state, config.num_threads, settings.rates)
    if "own" in settings.modes:
        own = replace(config, label_delay_days=world.label_delay_days)
        history, split = own_history(lines[~inside], train_lines if settings.own_with_prior else None, cutoff, own)
        result = train_model(history, own, split=split)
        own_bundle = _bundle(result, f"{folder}/{world.name}", f"own-{world.name}")
        figures["modes"]["own"] = score_world(own_bundle, test, test_truth, store, state, config.num_threads, settings.rates)
    return figures


def summarise(worlds: list[dict], rates) -> dict:
    """Medians and worst cases over the held-out worlds, per mode."""
    headline = f"recall_at_{rates[min(1, len(rates) - 1)] * 100:g}pct"
    summary = {}
    for mode in MODES:
        rows = [w["modes"][mode] for w in worlds if mode in w["modes"]]
        if not rows:
            continue
        model = np.array([r["scorers"][MODEL][headline] for r in rows])
        rule = np.array([r["scorers"][HEADLINE_RULE][headline] for r in rows])
        ap = np.array([r["scorers"][MODEL]["average_precision"] for r in rows])
        summary[mode] = {
            f"median_{headline}": float(np.median(model)),
            f"median_rule_{headline}": float(np.median(rule)),
            "median_ratio_to_rule": float(np.median(model / np.maximum(rule, 1e-9))),
            "worlds_at_least_rule": int((model >= rule).sum()),
            "worlds": len(rows),
            "median_average_precision": float(np.median(ap)),
            "min_" + headline: float(model.min()),
            "median_red_share": float(np.median([r["red_share"] for r in rows])),
            "median_yellow_share": float(np.median([r["yellow_share"] for r in rows])),
            "max_tie_share": float(np.max([r["max_tie_share"] for r in rows])),
            "max_controlled_legit_red_share": float(np.nanmax([r["controlled_legit_red_share"] for r in rows])),
        }
    return summary


def run_crossworld(
    settings: CrossWorldSettings, config: TrainConfig, spec: dict, on_world: Callable[[str], None] | None = None
) -> dict:
    """Train on the training worlds, measure on the held-out worlds; return one JSON-able document."""
    train_worlds, held_out = draw_worlds(spec, settings.n_train, settings.n_held_out, settings.seed)
    notify = on_world or (lambda _: None)
    notify("training on " + ", ".join(w.name for w in train_worlds))
    result, pooled = train_pooled(train_worlds, settings, config)
    state = fit_baselines(pooled, config.seed, min_hs_count=config.min_hs_count)
    with tempfile.TemporaryDirectory(prefix="misdeclare-worlds-") as folder:
        bundle = _bundle(result, f"{folder}/pooled", "cross-world")
        worlds = []
        for world in held_out:
            notify(world.name)
            worlds.append(evaluate_world(world, bundle, pooled, state, settings, config, folder))
    return {
        "settings": asdict(settings),
        "train_worlds": [{"world": w.name, "params": w.params} for w in train_worlds],
        "pooled_model": {
            "best_iteration": int(result.booster.best_iteration),
            "train_labelled_lines": int(result.spec["training"]["train_labelled_lines"]),
            "top_features": result.importance.head(15).round(1).to_dict(),
        },
        "worlds": worlds,
        "summary": summarise(worlds, settings.rates),
    }


def recall_figure(document: dict):
    """Bar chart: recall at the headline rate per held-out world and mode, model beside the rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = document["settings"]["rates"]
    headline = f"recall_at_{rates[min(1, len(rates) - 1)] * 100:g}pct"
    modes = [m for m in MODES if any(m in w["modes"] for w in document["worlds"])]
    figure, axes = plt.subplots(1, len(modes), figsize=(4.5 * len(modes), 3.6), sharey=True, squeeze=False)
    names = [w["world"] for w in document["worlds"]]
    x = np.arange(len(names))
    for axis, mode in zip(axes[0], modes):
        for offset, scorer, label in ((-0.2, MODEL, "model"), (0.2, HEADLINE_RULE, "hub + value rule")):
            values = [w["modes"][mode]["scorers"][scorer][headline] if mode in w["modes"] else np.nan for w in document["worlds"]]
            axis.bar(x + offset, values, width=0.4, label=label)
        axis.set(title=f"{mode} start", xticks=x, ylim=(0, 1))
        axis.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    axes[0][0].set_ylabel(headline.replace("_", " "))
    axes[0][-1].legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    return figure


def flat_summary(document: dict) -> dict[str, float]:
    """The summary as MLflow metric names (``<mode>_<figure>``), finite values only."""
    return {
        f"{mode}_{key}": float(value)
        for mode, figures in document["summary"].items()
        for key, value in figures.items()
        if np.isfinite(value)
    }


def log_crossworld(document: dict, tracking_uri: str | None = None) -> str:
    """Log a cross-world evaluation to one MLflow run of experiment "misdeclare"; return its id."""
    import json

    import matplotlib.pyplot as plt
    import mlflow

    from models.registry import resolve_tracking_uri
    from training.tracking import EXPERIMENT, git_commit

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="evaluate-worlds") as run:
        mlflow.log_params({f"worlds_{k}": v for k, v in document["settings"].items()})
        mlflow.log_metrics(flat_summary(document))
        mlflow.set_tags({"git_commit": git_commit(), "job": "evaluate-worlds"})
        mlflow.log_text(json.dumps(document, indent=1), "evaluation/worlds.json")
        figure = recall_figure(document)
        mlflow.log_figure(figure, "evaluation/recall_by_world.png")
        plt.close(figure)
    return run.info.run_id
