"""Prequential (rolling) evaluation of the risk model against baseline targeting rules.

One train/test split says little about a model whose data drift with every new export control, so
the model is measured on ``K`` consecutive later windows, each scored by a model that only saw
outcomes known before it:

- without a fixed model, window ``k`` is scored by a model trained (with
  :func:`training.train.train_model`, the same settings as ``misdeclare train``) on the lines declared
  before ``window_start - label_delay_days``, because later outcomes would not yet be known;
- with a fixed model (``--model``), the windows split the data declared after the model's
  validation period (from its test period on), so that no window holds a line the model was fitted,
  stopped or calibrated on.

Every window is scored through :func:`models.predict.score_frame`, the one path from line to
score, with every earlier line as its history (the history store at the window's start) and only
the outcomes of lines declared before the window's training cut-off, as a model trained then would
have them (the rule :func:`training.train.train_model` applies to its own held-out periods). The
baselines of :mod:`training.baselines` are scored on the same windows and lines. Metrics
are computed on the inspected lines (the only labelled ones) of each window, then reported as the
mean and sample standard deviation over the windows; slices of the lines (new shippers, cover
family, route, hidden commodity, disguise) are measured the same way. A group with fewer than
``min_positives`` misdeclared lines in a window gets no metrics for that window rather than noise.

Inspected lines were chosen by past targeting, so they over-represent what earlier rules flagged
and flatter rules like them. Synthetic data carry the truth of every line (``sim_fraud``): there the
same metrics are also computed over all lines (population "truth"), which is what inspecting the
top share of all lines would find.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.history import line_keys
from features.reference import load_reference
from features.transformers import DeclaredHSFeatures, as_text
from training.asof import Window, iso, scoring_view
from training.baselines import BASELINES, BaselineState, fit_baselines
from training.config import TrainConfig
from training.metrics import ranking_metrics
from training.split import labelled, window_split
from training.train import train_model

MODEL = "model"
ALL = "all"
INSPECTED = "inspected"
TRUTH = "truth"
ROLLING = "rolling"
FIXED = "fixed"
NOT_PROBABILITY_METRICS = ("brier",)
COUNT_METRICS = ("lines", "positives")
_DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class EvaluationSettings:
    """Settings of a prequential evaluation.

    Attributes
    ----------
    n_windows : int
        Number of consecutive test windows at the end of the data.
    window_fraction : float
        Length of each window as a share of the data's date range (rolling mode only; with a
        fixed model the windows split the period after its training).
    min_positives : int
        Misdeclared lines a window's group needs to be measured at all.
    calibration_bins : int
        Equal-count bins of the expected calibration error.
    """

    n_windows: int = 4
    window_fraction: float = 0.125
    min_positives: int = 5
    calibration_bins: int = 10

    def __post_init__(self):
        if self.n_windows < 1:
            raise ValueError(f"the number of windows must be >= 1, got {self.n_windows}")
        if not 0 < self.window_fraction * self.n_windows < 1:
            raise ValueError(
                f"windows x window fraction must be in (0, 1): {self.n_windows} x "
                f"{self.window_fraction} leaves no earlier lines to train on"
            )
        if self.min_positives < 1:
            raise ValueError(f"min_positives must be >= 1, got {self.min_positives}")
        if self.calibration_bins < 1:
            raise ValueError(f"calibration_bins must be >= 1, got {self.calibration_bins}")


def _windows_ending_at(
    end: pd.Timestamp, n_windows: int, length_days: int, train_end: Callable[[pd.Timestamp], pd.Timestamp]
) -> list[Window]:
    starts = [end - (n_windows - k) * length_days * _DAY for k in range(n_windows)]
    return [Window(k, train_end(start), start, start + length_days * _DAY) for k, start in enumerate(starts)]


def prequential_windows(
    first: pd.Timestamp, last: pd.Timestamp, n_windows: int, window_fraction: float, label_delay_days: int
) -> list[Window]:
    """Consecutive test windows of whole days at the end of the data.

    The data's days run from ``first`` to ``last`` inclusive; each window lasts
    ``floor(days * window_fraction)`` days, the last window ending with the last day. Window ``k``'s
    model may learn from lines declared before ``start - label_delay_days``.

    Raises
    ------
    ValueError
        When a window would be shorter than a day or no line precedes the first training cut-off.
    """
    first_day, end = pd.Timestamp(first).normalize(), pd.Timestamp(last).normalize() + _DAY
    length_days = math.floor((end - first_day).days * window_fraction)
    if length_days < 1:
        raise ValueError(f"the data spans {(end - first_day).days} day(s): too short for windows of {window_fraction:g} of it")
    delay = pd.Timedelta(days=label_delay_days)
    windows = _windows_ending_at(end, n_windows, length_days, lambda start: start - delay)
    if windows[0].train_end <= first_day:
        raise ValueError(
            f"the first window starts {iso(windows[0].start)}: no line is declared before its "
            f"training cut-off {iso(windows[0].train_end)} (label delay {label_delay_days} days); "
            f"use fewer windows or a smaller window fraction"
        )
    return windows


def fixed_model_windows(first: pd.Timestamp, last: pd.Timestamp, periods: dict[str, str], n_windows: int) -> list[Window]:
    """Windows of whole days splitting the data declared after a fixed model's validation period.

    The evaluable days start at the model's test period (``periods["test_start"]``) and after the last
    validation day, whichever is later, so that no line the model was fitted, early-stopped or
    calibrated on is measured; leftover days (fewer than ``n_windows``) at the start are dropped.

    Raises
    ------
    ValueError
        When the data hold fewer days than windows after the model's validation period.
    """
    valid_end = pd.Timestamp(periods["valid_end"]).normalize()
    range_start = max(pd.Timestamp(first).normalize(), pd.Timestamp(periods["test_start"]).normalize(), valid_end + _DAY)
    end = pd.Timestamp(last).normalize() + _DAY
    days = (end - range_start).days
    if days < n_windows:
        raise ValueError(
            f"the model was validated on lines up to {periods['valid_end']}; the data hold "
            f"{max(days, 0)} later day(s), fewer than the {n_windows} window(s) asked for"
        )
    return _windows_ending_at(end, n_windows, days // n_windows, lambda start: valid_end)


def expected_calibration_error(y_true: np.ndarray, scores: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-count (quantile) bins of the score.

    Lines are sorted by score (stable) and split into ``bins`` groups of equal size (the first groups
    one line larger when ``n`` is not a multiple); the error is the line-weighted mean of
    ``|mean score - observed rate|`` over the groups.

    Returns
    -------
    float
        NaN for no lines.
    """
    y_true = np.asarray(y_true, dtype="float64")
    scores = np.asarray(scores, dtype="float64")
    if len(y_true) == 0:
        return float("nan")
    groups = [g for g in np.array_split(np.argsort(scores, kind="stable"), bins) if len(g)]
    gaps = [len(g) * abs(scores[g].mean() - y_true[g].mean()) for g in groups]
    return float(sum(gaps) / len(y_true))


def scorer_metrics(name: str, y_true: np.ndarray, scores: np.ndarray, values: np.ndarray, rates, bins: int) -> dict[str, float]:
    """Ranking metrics of one scorer; calibration (Brier, ECE) only for the model's probabilities."""
    metrics = ranking_metrics(y_true, scores, rates, values)
    for key in COUNT_METRICS:
        metrics.pop(key)
    if name == MODEL:
        metrics["ece"] = expected_calibration_error(y_true, scores, bins)
    else:
        for key in NOT_PROBABILITY_METRICS:
            metrics.pop(key)
    return metrics


def is_labelled(lines: pd.DataFrame) -> np.ndarray:
    """Boolean mask of the inspected lines with a known outcome (see :func:`training.split.labelled`)."""
    return lines.index.isin(labelled(lines).index)


def hidden_commodity(lines: pd.DataFrame) -> pd.Series:
    """Commodity really shipped: ``sim_commodity`` (synthetic truth) when present, else ``found_commodity``."""
    column = "sim_commodity" if "sim_commodity" in lines.columns else "found_commodity"
    return as_text(lines, column, "none")


def slice_masks(
    lines: pd.DataFrame,
    positive: np.ndarray,
    earlier_shippers: set[str],
    cover_family: pd.Series,
    via_hub: np.ndarray,
    commodities: list[str],
) -> dict[tuple[str, str], np.ndarray]:
    """Boolean masks of the groups that metrics are reported for, over the measured ``lines``.

    Partitions: ``shipper`` new/known (seen on a line declared before the window; a missing id counts as
    new; skipped when no line has an id), ``cover_family`` of the declared code ("none" for codes that
    are not cover codes), ``route`` via a diversion hub or not, ``export_country``. Positive-side
    slices (the ``positive`` lines of one kind and every negative line): ``commodity`` hidden, and
    ``disguise`` (``sim_disguise``, synthetic truth only) true value or undervalued.
    """
    masks: dict[tuple[str, str], np.ndarray] = {(ALL, ALL): np.ones(len(lines), dtype=bool)}
    shipper = lines["shipper_id"] if "shipper_id" in lines.columns else pd.Series(pd.NA, index=lines.index)
    if shipper.notna().any():
        known = shipper.isin(earlier_shippers).fillna(False).to_numpy(dtype=bool)
        masks[("shipper", "known")], masks[("shipper", "new")] = known, ~known
    families = cover_family.to_numpy(dtype=object)
    for family in sorted(set(families)):
        masks[("cover_family", str(family))] = families == family
    masks[("route", "via_hub")], masks[("route", "no_hub")] = via_hub, ~via_hub
    export = as_text(lines, "export_country").to_numpy(dtype=object)
    for country in sorted(set(export)):
        masks[("export_country", str(country))] = export == country
    positive = np.asarray(positive, dtype=bool)
    commodity = hidden_commodity(lines).to_numpy(dtype=object)
    for name in commodities:
        masks[("commodity", name)] = ~positive | (commodity == name)
    if "sim_disguise" in lines.columns:
        disguise = as_text(lines, "sim_disguise", "none").to_numpy(dtype=object)
        for kind in sorted(set(disguise[positive]) - {"none"}):
            masks[("disguise", str(kind))] = ~positive | (disguise == kind)
    return masks


def measured_populations(lines: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The line sets measured, each as (mask over ``lines``, 0/1 label of the masked lines).

    ``inspected``: the inspected lines and their outcome, all that real data offer. Their selection
    was targeted, so they over-represent what past rules flagged and favour rules like them.
    ``truth`` (synthetic data only, when ``sim_fraud`` is present): every line with the simulation's
    ground truth, i.e. what inspecting the top share of all lines would really find.
    """
    known = is_labelled(lines)
    result = {INSPECTED: (known, lines.loc[known, "misdeclared"].to_numpy(dtype="int64"))}
    if "sim_fraud" in lines.columns:
        truth = pd.to_numeric(lines["sim_fraud"], errors="coerce").fillna(0).to_numpy(dtype="int64")
        result[TRUTH] = (np.ones(len(lines), dtype=bool), truth)
    return result


_KEYS = ["population", "slice", "group"]


@dataclass
class Evaluation:
    """Outcome of :func:`run_evaluation`.

    Attributes
    ----------
    mode : str
        "rolling" (a model trained per window) or "fixed" (one given model).
    windows : list of Window
    window_info : list of dict
        Per window: lines, labelled lines, positives and the scoring model's summary.
    groups : DataFrame
        Per window, population and group (``window, population, slice, group``): ``lines``,
        ``positives``, ``measured`` (enough positives and negatives).
    window_metrics : DataFrame
        Long table ``window, population, slice, group, scorer, metric, value`` of the measured groups.
    settings : EvaluationSettings
    config : TrainConfig
    model_version : str or None
        The fixed model's version (fixed mode).
    scorers : tuple of str
        The model then the baselines, in report order.
    """

    mode: str
    windows: list[Window]
    window_info: list[dict]
    groups: pd.DataFrame
    window_metrics: pd.DataFrame
    settings: EvaluationSettings
    config: TrainConfig
    model_version: str | None = None
    scorers: tuple[str, ...] = field(default=(MODEL, *BASELINES))

    @property
    def populations(self) -> list[str]:
        """Populations measured, "inspected" first."""
        return [p for p in (INSPECTED, TRUTH) if p in set(self.groups["population"])]

    def aggregated(self) -> pd.DataFrame:
        """Mean, sample sd (ddof=1) and number of windows per population, slice, group, scorer, metric."""
        grouped = self.window_metrics.groupby([*_KEYS, "scorer", "metric"], sort=False)["value"]
        return grouped.agg(mean="mean", sd=lambda v: v.std(ddof=1), windows="count").reset_index()

    def summary(self, population: str = INSPECTED) -> pd.DataFrame:
        """:meth:`aggregated` over all lines of a population (the headline): scorer, metric, mean, sd, windows."""
        table = self.aggregated()
        chosen = (table["population"] == population) & (table["slice"] == ALL) & (table["group"] == ALL)
        return table[chosen].drop(columns=_KEYS).reset_index(drop=True)

    def slice_table(self) -> pd.DataFrame:
        """One row per population, slice, group, scorer and metric; never-measured groups get one n/a row.

        Columns: population, slice, group, lines and positives (summed over windows), windows_measured,
        scorer, metric, mean, sd, windows.
        """
        counts = (
            self.groups.groupby(_KEYS, sort=False)
            .agg(lines=("lines", "sum"), positives=("positives", "sum"), windows_measured=("measured", "sum"))
            .reset_index()
        )
        # Slices in the order they are defined, groups alphabetically (export countries differ by window).
        order = {name: rank for rank, name in enumerate([INSPECTED, TRUTH, *dict.fromkeys(counts["slice"])])}
        counts = counts.sort_values(_KEYS, key=lambda c: c if c.name == "group" else c.map(order), kind="stable")
        return counts.merge(self.aggregated(), on=_KEYS, how="left")


def _train_window_bundle(train_lines: pd.DataFrame, window: Window, config: TrainConfig, reference_dir: str | None, folder: str):
    from models.bundle import load_bundle_folder, save_bundle

    try:
        # Fit as close to the window as the label delay allows (the window is the test).
        split = window_split(train_lines, window.train_end, config.valid_fraction, config.label_delay_days)
        result = train_model(train_lines, config, reference_dir, split=split)
    except ValueError as exc:
        raise ValueError(
            f"window {window.index} (from {iso(window.start)}): cannot train on the lines declared "
            f"before {iso(window.train_end)}: {exc}; use fewer windows or a smaller window "
            f"fraction"
        ) from exc
    save_bundle(folder, result.booster, result.spec, result.commodity_booster)
    info = {
        "best_iteration": int(result.booster.best_iteration),
        "train_labelled_lines": int(result.spec["training"]["train_labelled_lines"]),
        "train_positives": int(result.spec["training"]["train_positives"]),
        "periods": result.spec["training"]["periods"],
    }
    return load_bundle_folder(folder, version=f"window-{window.index}"), info


def window_scores(
    bundle, lines: pd.DataFrame, past: pd.DataFrame, state: BaselineState, num_threads: int
) -> dict[str, np.ndarray]:
    """Scores of the model (through :func:`models.predict.score_frame`) and of every baseline.

    Parameters
    ----------
    bundle : ModelBundle
    lines : DataFrame
        The window's lines, with the outcomes the scorer may not know removed.
    past : DataFrame
        Every line declared before the window (the history store at the window's start).
    state : BaselineState
    num_threads : int
    """
    from models.predict import score_frame

    scored = score_frame(bundle, lines, explain="none", num_threads=num_threads, past=past)
    scores = {MODEL: scored["risk_score"].to_numpy(dtype="float64")}
    scores.update({name: baseline(lines, state) for name, baseline in BASELINES.items()})
    return scores


def measure_groups(
    window: Window,
    population: str,
    masks: dict[tuple[str, str], np.ndarray],
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    values: np.ndarray,
    config: TrainConfig,
    settings: EvaluationSettings,
) -> tuple[list[dict], list[dict]]:
    """Group counts and long metric rows of one window and population.

    A group is measured only with at least ``min_positives`` positive and one negative line.
    """
    groups, rows = [], []
    for (slice_name, group), mask in masks.items():
        positives, lines = int(y[mask].sum()), int(mask.sum())
        measured = settings.min_positives <= positives < lines
        key = {"window": window.index, "population": population, "slice": slice_name, "group": group}
        groups.append({**key, "lines": lines, "positives": positives, "measured": measured})
        if not measured:
            continue
        for scorer, score in scores.items():
            metrics = scorer_metrics(
                scorer, y[mask], score[mask], values[mask], config.inspection_rates, settings.calibration_bins
            )
            rows.extend({**key, "scorer": scorer, "metric": metric, "value": value} for metric, value in metrics.items())
    return groups, rows


def _measure_window(
    window: Window,
    window_lines: pd.DataFrame,
    scores: dict[str, np.ndarray],
    shippers: set[str],
    state: BaselineState,
    cover: DeclaredHSFeatures,
    commodities: list[str],
    config: TrainConfig,
    settings: EvaluationSettings,
) -> tuple[list[dict], list[dict], dict]:
    """Groups, metric rows and per-population counts of one scored window."""
    groups, rows, counts = [], [], {}
    for population, (mask, y) in measured_populations(window_lines).items():
        target = window_lines[mask]
        masks = slice_masks(
            target,
            y == 1,
            shippers,
            cover.transform(target)["cover_family"],
            state.route.transform(target)["via_hub"].to_numpy() == 1.0,
            commodities,
        )
        population_groups, population_rows = measure_groups(
            window,
            population,
            masks,
            y,
            {name: score[mask] for name, score in scores.items()},
            target["declared_value_usd"].to_numpy(dtype="float64"),
            config,
            settings,
        )
        groups += population_groups
        rows += population_rows
        counts[population] = {"lines": int(mask.sum()), "positives": int(y.sum())}
    return groups, rows, counts


def stored_history(history: pd.DataFrame | None, lines: pd.DataFrame) -> pd.DataFrame | None:
    """The history-store lines that are not lines of the evaluated data (those are taken from the data)."""
    if history is None or history.empty:
        return None
    return history[~line_keys(history).isin(line_keys(lines))].reset_index(drop=True)


def _score_window(
    lines: pd.DataFrame,
    dates: pd.Series,
    window: Window,
    state: BaselineState,
    bundle,
    config: TrainConfig,
    reference_dir: str | None,
    history: pd.DataFrame | None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Scores of the window's lines by its model (trained here without ``bundle``) and the baselines."""
    before = (dates < window.train_end).to_numpy()
    # Outcomes after the training cut-off would not be in the history store yet (the rule
    # train_model applies to its own validation and test periods).
    current, past = scoring_view(lines, window, history)
    with tempfile.TemporaryDirectory(prefix="misdeclare-eval-") as folder:
        scorer, info = (
            (bundle, {"version": bundle.version})
            if bundle is not None
            else _train_window_bundle(lines[before], window, config, reference_dir, folder)
        )
        scores = window_scores(scorer, current, past, state, config.num_threads)
    return scores, info


def run_evaluation(
    lines: pd.DataFrame,
    config: TrainConfig,
    settings: EvaluationSettings | None = None,
    bundle=None,
    reference_dir: str | None = None,
    on_window: Callable[[Window], None] | None = None,
    history: pd.DataFrame | None = None,
) -> Evaluation:
    """Evaluate the model and the baselines on prequential windows.

    Parameters
    ----------
    lines : DataFrame
        Validated canonical lines with labels (``inspected``, ``misdeclared``), optionally with the
        synthetic truth columns ``sim_fraud``, ``sim_commodity`` and ``sim_disguise``.
    config : TrainConfig
        Training settings: the label delay, the inspection rates, the seed, and (rolling mode) how each
        window's model is trained.
    settings : EvaluationSettings, optional
    bundle : ModelBundle, optional
        A fixed model to evaluate; without it a model is trained per window.
    reference_dir : str, optional
        Folder of the reference tables.
    on_window : callable, optional
        Called with each window before it is evaluated (progress).
    history : DataFrame, optional
        Lines of a history store (:meth:`features.history_store.HistoryStore.read`): with a fixed
        model, the earlier lines its scorer would see besides those of ``lines``. Lines also in
        ``lines`` are taken from ``lines``; outcomes after the cut-off are hidden as for ``lines``.

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        When the data are too short for the windows, or a window's model cannot be trained.
    """
    settings = settings or EvaluationSettings()
    history = stored_history(history, lines)
    lines = lines.sort_values("declared_at", kind="stable", ignore_index=True)
    dates = pd.to_datetime(lines["declared_at"])
    if bundle is None:
        windows = prequential_windows(
            dates.min(), dates.max(), settings.n_windows, settings.window_fraction, config.label_delay_days
        )
    else:
        periods = bundle.spec.get("training", {}).get("periods")
        if not periods:
            raise ValueError(f"model {bundle.version} records no training periods: cannot tell which lines it has seen")
        windows = fixed_model_windows(dates.min(), dates.max(), periods, settings.n_windows)
    cover = DeclaredHSFeatures(reference_dir=reference_dir).fit(lines.head(0))
    commodities = load_reference(reference_dir).commodities
    has_shippers = "shipper_id" in lines.columns
    groups, rows, infos = [], [], []
    for window in windows:
        if on_window is not None:
            on_window(window)
        state = fit_baselines(
            lines[(dates < window.train_end).to_numpy()], config.seed + window.index, reference_dir, config.min_hs_count
        )
        scores, info = _score_window(lines, dates, window, state, bundle, config, reference_dir, history)
        earlier = (dates < window.start).to_numpy()
        shippers = set(lines.loc[earlier, "shipper_id"].dropna()) if has_shippers else set()
        inside = ((dates >= window.start) & (dates < window.end)).to_numpy()
        window_groups, window_rows, counts = _measure_window(
            window, lines[inside], scores, shippers, state, cover, commodities, config, settings
        )
        groups += window_groups
        rows += window_rows
        infos.append(
            {
                **window.as_dict(),
                "lines": int(inside.sum()),
                "labelled": counts[INSPECTED]["lines"],
                "positives": counts[INSPECTED]["positives"],
                **({"truth_positives": counts[TRUTH]["positives"]} if TRUTH in counts else {}),
                "model": info,
            }
        )
    return Evaluation(
        mode=ROLLING if bundle is None else FIXED,
        windows=windows,
        window_info=infos,
        groups=pd.DataFrame(groups, columns=["window", *_KEYS, "lines", "positives", "measured"]),
        window_metrics=pd.DataFrame(rows, columns=["window", *_KEYS, "scorer", "metric", "value"]),
        settings=settings,
        config=config,
        model_version=None if bundle is None else bundle.version,
    )


def _number(value) -> float | int | None:
    """JSON number, or None for NaN/inf (JSON has no NaN)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if isinstance(value, (np.integer, int)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def _nested(table: pd.DataFrame) -> dict[str, dict[str, dict]]:
    nested: dict[str, dict[str, dict]] = {}
    for row in table.itertuples(index=False):
        nested.setdefault(row.scorer, {})[row.metric] = {
            "mean": _number(row.mean),
            "sd": _number(row.sd),
            "windows": int(row.windows),
        }
    return nested


def _window_metrics(evaluation: Evaluation, index: int) -> dict[str, dict[str, dict[str, float | None]]] | None:
    frame = evaluation.window_metrics
    rows = frame[(frame["window"] == index) & (frame["slice"] == ALL) & (frame["group"] == ALL)]
    metrics: dict[str, dict[str, dict]] = {}
    for row in rows.itertuples(index=False):
        metrics.setdefault(row.population, {}).setdefault(row.scorer, {})[row.metric] = _number(row.value)
    return metrics or None


def evaluation_to_dict(evaluation: Evaluation) -> dict:
    """Every number of an evaluation as one JSON-compatible document (NaN as null).

    Keys: ``mode``, ``model``, ``settings``, ``scorers``, ``populations``; ``windows`` (boundaries,
    counts, the model's summary, and ``metrics``: population -> scorer -> metric -> value);
    ``summary`` (inspected lines: scorer -> metric -> mean, sd, windows); ``truth_summary`` (the same
    over every line with the synthetic truth, ``null`` for real data); ``slices`` (population, slice,
    group, counts and the same nested metrics, ``null`` when n/a).
    """
    windows = [{**info, "metrics": _window_metrics(evaluation, info["index"])} for info in evaluation.window_info]
    slices = []
    for (population, slice_name, group), rows in evaluation.slice_table().groupby(_KEYS, sort=False):
        first = rows.iloc[0]
        measured = rows.dropna(subset=["metric"])
        slices.append(
            {
                "population": population,
                "slice": slice_name,
                "group": group,
                "lines": int(first["lines"]),
                "positives": int(first["positives"]),
                "windows_measured": int(first["windows_measured"]),
                "metrics": _nested(measured) if len(measured) else None,
            }
        )
    return {
        "mode": evaluation.mode,
        "model": evaluation.model_version,
        "settings": {
            **asdict(evaluation.settings),
            "label_delay_days": evaluation.config.label_delay_days,
            "inspection_rates": list(evaluation.config.inspection_rates),
            "seed": evaluation.config.seed,
        },
        "scorers": list(evaluation.scorers),
        "populations": evaluation.populations,
        "windows": windows,
        "summary": _nested(evaluation.summary(INSPECTED)),
        "truth_summary": _nested(evaluation.summary(TRUTH)) if TRUTH in evaluation.populations else None,
        "slices": slices,
    }


def metric_name(scorer: str, metric: str, statistic: str | None = None, population: str = INSPECTED) -> str:
    """MLflow metric name, e.g. ``eval_model_average_precision_mean``, ``eval_baseline_random_roc_auc_sd``.

    Metrics over the synthetic truth of every line are prefixed ``eval_truth_``.
    """
    who = MODEL if scorer == MODEL else f"baseline_{scorer}"
    prefix = "eval_truth_" if population == TRUTH else "eval_"
    return f"{prefix}{who}_{metric}" + (f"_{statistic}" if statistic else "")


def flat_metrics(evaluation: Evaluation) -> dict[str, float]:
    """Finite headline means and sds of every population, keyed by :func:`metric_name` (for MLflow)."""
    flat = {}
    for population in evaluation.populations:
        for row in evaluation.summary(population).itertuples(index=False):
            for statistic in ("mean", "sd"):
                value = getattr(row, statistic)
                if math.isfinite(value):
                    flat[metric_name(row.scorer, row.metric, statistic, population)] = float(value)
    return flat


def headline_rate(rates) -> float:
    """The inspection rate plots and tables lead with: 5 % when reported, else the middle rate."""
    rates = list(rates)
    return 0.05 if 0.05 in rates else rates[len(rates) // 2]


def precision_figure(evaluation: Evaluation, rate: float):
    """Bar chart of precision at ``rate``: the model beside each baseline, mean ± sd over windows.

    One bar per scorer and population (inspected lines; every line with the synthetic truth).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = f"precision_at_{rate * 100:g}pct"
    names = list(evaluation.scorers)
    width = 0.8 / len(evaluation.populations)
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for offset, (population, colour) in enumerate(zip(evaluation.populations, ("#1f4e79", "#c55a11"))):
        summary = evaluation.summary(population)
        rows = summary[summary["metric"] == metric].set_index("scorer").reindex(names)
        positions = np.arange(len(names)) + (offset - (len(evaluation.populations) - 1) / 2) * width
        axis.bar(
            positions,
            rows["mean"].fillna(0),
            width,
            yerr=rows["sd"].fillna(0),
            color=colour,
            capsize=3,
            label="inspected lines" if population == INSPECTED else "all lines, synthetic truth",
        )
    axis.set_xticks(np.arange(len(names)), names)
    axis.set(
        ylabel=f"precision at {rate:.0%}",
        ylim=(0, 1.2),
        yticks=np.linspace(0, 1, 6),
        title=f"Precision at {rate:.0%} inspection, mean ± sd over {len(evaluation.windows)} windows",
    )
    axis.legend(loc="upper center", ncols=2)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def log_evaluation(
    evaluation: Evaluation,
    document: dict,
    data_paths: list[str | Path],
    tracking_uri: str | None = None,
    run_name: str | None = None,
) -> str:
    """Log an evaluation to one MLflow run of experiment "misdeclare"; return the run id.

    Headline means and sds of each population become metrics (:func:`metric_name`), each window's
    headline values the same names without the suffix at ``step`` = window index; the whole document,
    the slice table (CSV) and a precision bar plot become artifacts under ``evaluation/``.
    """
    import matplotlib.pyplot as plt
    import mlflow

    from models.registry import resolve_tracking_uri
    from training.tracking import EXPERIMENT, data_fingerprint, git_commit

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name=run_name or f"evaluate-{evaluation.mode}") as run:
        mlflow.log_params(
            {
                "eval_mode": evaluation.mode,
                "eval_model": evaluation.model_version or "trained per window",
                **{f"eval_{k}": v for k, v in document["settings"].items()},
            }
        )
        mlflow.log_params(
            {f"eval_window_{w.index}": f"{iso(w.train_end)}|{iso(w.start)}..{iso(w.end)}" for w in evaluation.windows}
        )
        mlflow.log_metrics(flat_metrics(evaluation))
        _log_window_metrics(mlflow, evaluation)
        mlflow.set_tags(
            {
                "data_sha256": data_fingerprint(data_paths),
                "data_files": ",".join(map(str, data_paths)),
                "git_commit": git_commit(),
                "job": "evaluate",
            }
        )
        mlflow.log_text(json.dumps(document, indent=1), "evaluation/evaluation.json")
        mlflow.log_text(evaluation.slice_table().to_csv(index=False), "evaluation/slices.csv")
        figure = precision_figure(evaluation, headline_rate(evaluation.config.inspection_rates))
        mlflow.log_figure(figure, "evaluation/precision_by_scorer.png")
        plt.close(figure)
    return run.info.run_id


def _log_window_metrics(mlflow, evaluation: Evaluation) -> None:
    frame = evaluation.window_metrics
    headline = frame[(frame["slice"] == ALL) & (frame["group"] == ALL)]
    # One call per window: each call is a database transaction.
    for window, rows in headline.groupby("window"):
        mlflow.log_metrics(
            {
                metric_name(row.scorer, row.metric, population=row.population): float(row.value)
                for row in rows.itertuples(index=False)
                if math.isfinite(row.value)
            },
            step=int(window),
        )


@dataclass
class EvaluationOutcome:
    """What ``misdeclare evaluate`` reports: the evaluation, its document, the data and the run."""

    evaluation: Evaluation
    document: dict
    lines_read: int
    lines_valid: int
    run_id: str


def evaluate_files(
    paths: list[str | Path],
    config: TrainConfig,
    settings: EvaluationSettings,
    model_uri: str | None = None,
    tracking_uri: str | None = None,
    on_window: Callable[[Window], None] | None = None,
    history_dir: str | Path | None = None,
) -> EvaluationOutcome:
    """Read and validate labelled files, evaluate, log to MLflow.

    Rows failing validation are left out (``misdeclare train`` writes them to a quarantine file; here
    they are only counted in the document's ``data`` section). With a fixed model, the history store
    in ``history_dir`` (when it exists) supplies the earlier lines its scorer would see; a model
    trained per window sees only the data, as it was trained on them alone.
    """
    from training.jobs import read_labelled

    data = read_labelled(paths)
    bundle, history = None, None
    if model_uri is not None:
        from features.history_store import HistoryStore
        from models.bundle import load_bundle

        bundle = load_bundle(model_uri, tracking_uri=tracking_uri)
        history = HistoryStore(history_dir).read() if history_dir is not None else None
    evaluation = run_evaluation(data.lines, config, settings, bundle=bundle, on_window=on_window, history=history)
    document = evaluation_to_dict(evaluation)
    document["data"] = {
        "files": [str(p) for p in paths],
        "lines_read": data.lines_read,
        "lines_valid": len(data.lines),
        "lines_quarantined": len(data.quarantine),
    }
    run_id = log_evaluation(evaluation, document, paths, tracking_uri)
    document["mlflow_run_id"] = run_id
    return EvaluationOutcome(evaluation, document, data.lines_read, len(data.lines), run_id)
