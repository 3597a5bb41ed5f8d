"""Small vectorised helpers: categorical draws, uniform draws, weight vectors, string columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------


def _cum_rows(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative probabilities of a weight matrix (rows of zeros stay zero)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    totals = weights.sum(axis=1, keepdims=True)
    cum = np.cumsum(weights / np.where(totals > 0, totals, 1.0), axis=1)
    cum[:, -1] = np.where(totals[:, 0] > 0, 1.0, 0.0)
    return cum


def _draw(rng: np.random.Generator, cum: np.ndarray, group: np.ndarray | int, n: int | None = None) -> np.ndarray:
    """One category per row from the cumulative distribution ``cum[group]``.

    Rows of every group are drawn in one ``searchsorted``: row ``g`` of ``cum`` is shifted to
    ``[g, g + 1]`` so that the flattened matrix stays sorted.
    """
    group = np.full(n, group, dtype=np.int64) if n is not None else np.asarray(group, dtype=np.int64)
    n_groups, k = cum.shape
    flat = (cum + np.arange(n_groups)[:, None]).ravel()
    position = np.searchsorted(flat, group + rng.random(len(group)), side="right") - group * k
    return np.minimum(position, k - 1)


def _uniform(rng: np.random.Generator, bounds: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Uniform draw in ``[bounds[index, 0], bounds[index, 1]]``."""
    low, high = bounds[index, 0], bounds[index, 1]
    return low + rng.random(len(index)) * (high - low)


def _vector(weights: Mapping, names: Sequence[str], where: str) -> np.ndarray:
    """Weights aligned to ``names``; unknown keys and all-zero weights are errors."""
    index = {name: i for i, name in enumerate(names)}
    vector = np.zeros(len(names))
    for key in sorted(weights, key=str):
        if str(key) not in index:
            raise ValueError(f"config '{where}' has an unknown key '{key}'")
        vector[index[str(key)]] = float(weights[key])
    if (vector < 0).any() or vector.sum() <= 0:
        raise ValueError(f"config '{where}' needs non-negative weights with a positive sum")
    return vector


def _position(names: Sequence[str], key: str, where: str) -> int:
    try:
        return list(names).index(str(key))
    except ValueError:
        raise ValueError(f"config '{where}' refers to an unknown value '{key}'") from None


def _pick_active(rng, member_group, member_first, group, day, concentration) -> np.ndarray:
    """Member of each row's group among those active on the row's day (first day <= day).

    Members must be sorted by (group, first day) and every group must have one. The member is
    ``floor(k * u ** concentration)`` among the ``k`` active ones: early members carry most rows.
    """
    n_groups = int(member_group.max()) + 1 if len(member_group) else 0
    offsets = np.searchsorted(member_group, np.arange(n_groups))
    base = int(min(member_first.min(), day.min())) if len(day) else 0
    span = int(max(member_first.max(), day.max()) - base + 2) if len(day) else 1
    flat = member_group * span + (member_first - base)
    active = np.searchsorted(flat, group * span + (day - base), side="right") - offsets[group]
    active = np.maximum(active, 1)
    chosen = np.minimum((active * rng.random(len(day)) ** concentration).astype(np.int64), active - 1)
    return offsets[group] + chosen


def _text(names: Sequence, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """String column ``names[codes]`` built from the few distinct names (None gives a missing value)."""
    return pd.array(np.asarray(names, dtype=object), dtype="str").take(codes)


def _text_or_none(names: Sequence, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Like :func:`_text`, with "none" for negative codes (no commodity, no form)."""
    return _text([*names, "none"], np.where(codes < 0, len(names), codes))


def _labels(prefix: str, numbers: np.ndarray, width: int) -> pd.api.extensions.ExtensionArray:
    """Identifier strings ``prefix + zero-padded number``, each number formatted once."""
    table = [f"{prefix}{number:0{width}d}" for number in range(int(numbers.max()) + 1)]
    return _text(table, numbers)
