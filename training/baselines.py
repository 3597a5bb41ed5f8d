"""Baseline targeting rules the risk model has to beat, scored like the model.

Each baseline is a function ``(lines, state) -> scores`` returning one float per line, higher
meaning more suspicious, so that the model and the baselines go through the same metrics at the
same inspection rates. ``state`` is a :class:`BaselineState` fitted on the lines a window's model
was trained on (the rules themselves read only the reference tables, but the value features are
fitted transformers, and fitting on the same lines keeps the comparison fair).

- ``random``: random selection, the floor any targeting must clear (and what customs keeps as an
  exploration share).
- ``declared_value``: inspect the most valuable declarations first.
- ``value_rule``: an ASYCUDA-style value-control rule: red when the unit value is outside the USD/kg
  band of the declared HS code (``features/data/hs_codes.csv``).
- ``hub_value_rule``: the same, but only for lines routed through a diversion hub
  (``features/data/countries.csv``).

The rules flag a line (score >= 1) or not (score 0); among flagged lines the one further outside
the band ranks first, by adding the log10 distance to the band. Lines with equal scores keep their
order (the metrics break ties by position), as a customs system fills the rest of its capacity
without a ranking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.transformers import RouteFeatures, ValueFeatures


@dataclass(frozen=True)
class BaselineState:
    """What the baselines learned from a window's training lines.

    Attributes
    ----------
    value : ValueFeatures
        Fitted value-per-kg transformer (declared HS code bands from the reference tables).
    route : RouteFeatures
        Fitted route transformer (diversion hubs from the reference tables).
    seed : int
        Seed of the random baseline.
    """

    value: ValueFeatures
    route: RouteFeatures
    seed: int


def fit_baselines(
    train_lines: pd.DataFrame, seed: int, reference_dir: str | None = None, min_hs_count: int = 20
) -> BaselineState:
    """Fit the transformers the rule baselines read.

    Parameters
    ----------
    train_lines : DataFrame
        Validated canonical lines the window's model is trained on.
    seed : int
        Seed of the random baseline (the window index is added per window by the caller).
    reference_dir : str, optional
        Folder of the reference tables; the packaged tables by default.
    min_hs_count : int
        Passed to :class:`~features.transformers.ValueFeatures` (as in training).

    Returns
    -------
    BaselineState
    """
    value = ValueFeatures(min_count=min_hs_count, reference_dir=reference_dir).fit(train_lines)
    route = RouteFeatures(reference_dir=reference_dir).fit(train_lines)
    return BaselineState(value=value, route=route, seed=seed)


def random_scores(lines: pd.DataFrame, state: BaselineState) -> np.ndarray:
    """Uniform random scores from ``state.seed``: random selection."""
    return np.random.default_rng(state.seed).random(len(lines))


def declared_value_scores(lines: pd.DataFrame, state: BaselineState) -> np.ndarray:
    """Declared value in USD: the most valuable lines first (missing values last)."""
    values = pd.to_numeric(lines["declared_value_usd"], errors="coerce").to_numpy("float64", na_value=np.nan)
    return np.where(np.isfinite(values), values, -np.inf)


def band_distance(lines: pd.DataFrame, state: BaselineState) -> np.ndarray:
    """Absolute log10 distance of the value per kg to the declared HS code's band (0 inside).

    Lines whose code has no band in the reference tables, or whose value per kg is unknown, get 0:
    the rule cannot fire on them.
    """
    distance = state.value.transform(lines)["hs_band_log_distance"].to_numpy("float64")
    return np.where(np.isfinite(distance), np.abs(distance), 0.0)


def via_hub(lines: pd.DataFrame, state: BaselineState) -> np.ndarray:
    """Boolean per line: exported from, loaded in or transshipped through a diversion hub."""
    return state.route.transform(lines)["via_hub"].to_numpy("float64") == 1.0


def _rule_scores(fires: np.ndarray, distance: np.ndarray) -> np.ndarray:
    # 1 + distance keeps every flagged line above every unflagged one, ordered by distance.
    return np.where(fires, 1.0 + distance, 0.0)


def value_rule_scores(lines: pd.DataFrame, state: BaselineState) -> np.ndarray:
    """ASYCUDA-style value control: ``1 + distance`` when outside the HS band, else 0."""
    distance = band_distance(lines, state)
    return _rule_scores(distance > 0, distance)


def hub_value_rule_scores(lines: pd.DataFrame, state: BaselineState) -> np.ndarray:
    """Via a diversion hub and outside the HS band: ``1 + distance``, else 0."""
    distance = band_distance(lines, state)
    return _rule_scores(via_hub(lines, state) & (distance > 0), distance)


BASELINES: dict[str, Callable[[pd.DataFrame, BaselineState], np.ndarray]] = {
    "random": random_scores,
    "declared_value": declared_value_scores,
    "value_rule": value_rule_scores,
    "hub_value_rule": hub_value_rule_scores,
}
"""Baselines by name, in the order reports show them."""
