"""Channels by inspection capacity: red and yellow are quotas by rank within each arrival day.

Absolute score thresholds break as soon as the score distribution moves (a day gets 0 % or 17 %
red). Here each arrival day (``declared_at`` date) gets its own quotas, whatever the scores:

- **ranking**: the day's ranked lines are ordered by ``risk_score`` descending; ties are broken by
  a fixed 64-bit hash of the line key (``declaration_id``, ``line_no``), then by the key itself
  (``declaration_id`` ascending, ``line_no`` ascending). The hash spreads tied lines over the day
  instead of always favouring the lowest declaration numbers; the order depends only on the lines'
  values, never on row order or on how a file was cut into chunks.
- **quotas** for a day with ``n`` ranked lines, rounding half up:
  ``red = floor(red_rate * n + 1/2)``, ``flagged = floor((red_rate + yellow_rate) * n + 1/2)``,
  ``yellow = flagged - red``. So at 2 % / 5 %: 100 lines give 2 red and 5 yellow; 10 lines give 0 red
  and 1 yellow; a day needs 25 lines for its first red line and 8 for its first flagged line
  (a single line scored alone is always green).
- the first ``red`` lines of the ranking are red, the next ``yellow`` yellow, the rest green. Within
  a day no green line has a higher risk than a red or yellow one, and no yellow line a higher risk
  than a red one.

Rates come from the bundle spec (``channel_rates``, written at training); a spec without them (a
bundle from before quotas) uses :data:`DEFAULT_CHANNEL_RATES`, the rates its thresholds were set
for by default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

DEFAULT_CHANNEL_RATES = {"red": 0.02, "yellow": 0.05}
TIE_HASH_KEY = "misdeclare.ties1"  # 16 bytes: the SipHash key of the tie-break (changing it reorders ties)
_KEY_SEPARATOR = "\x1f"
_EPSILON = 1e-9  # so that 0.05 * 50 = 2.4999999... still rounds half up


def channel_rates(spec: Mapping[str, Any]) -> dict[str, float]:
    """The red and yellow rates of a bundle spec (``channel_rates``), else the defaults.

    Raises
    ------
    ValueError
        When a rate is negative or red + yellow exceeds 1.
    """
    rates = dict(spec.get("channel_rates") or DEFAULT_CHANNEL_RATES)
    red, yellow = float(rates["red"]), float(rates["yellow"])
    if red < 0 or yellow < 0 or red + yellow > 1:
        raise ValueError(f"channel rates must be >= 0 with red + yellow <= 1, got red={red}, yellow={yellow}")
    return {"red": red, "yellow": yellow}


def quota(rate: float, n: int | np.ndarray) -> int | np.ndarray:
    """``floor(rate * n + 1/2)``: the number of lines out of ``n`` that ``rate`` gives (half rounds up)."""
    if isinstance(n, np.ndarray):
        return np.floor(rate * n + 0.5 + _EPSILON).astype("int64")
    return math.floor(rate * n + 0.5 + _EPSILON)


def day_quotas(n: int | np.ndarray, rates: Mapping[str, float]) -> tuple[int | np.ndarray, int | np.ndarray]:
    """(red, yellow) line counts for a day of ``n`` ranked lines (see the module docstring)."""
    red = quota(rates["red"], n)
    return red, quota(rates["red"] + rates["yellow"], n) - red


def day_numbers(declared_at: ArrayLike) -> np.ndarray:
    """Arrival day of each line as an integer (days since 1970-01-01) from ``declared_at``."""
    days = pd.to_datetime(pd.Series(declared_at)).dt.normalize()
    return ((days - pd.Timestamp("1970-01-01")) // pd.Timedelta(days=1)).to_numpy("int64")


def tie_hash(declaration_id: ArrayLike, line_no: ArrayLike) -> np.ndarray:
    """Stable 64-bit hash of each line key: the first tie-break between equal risk scores."""
    ids = pd.Series(declaration_id).astype("string").fillna("").to_numpy(dtype=object)
    numbers = pd.Series(line_no).astype("Int64").astype("string").fillna("").to_numpy(dtype=object)
    keys = np.array([f"{d}{_KEY_SEPARATOR}{n}" for d, n in zip(ids, numbers, strict=True)], dtype=object)
    return pd.util.hash_array(keys, hash_key=TIE_HASH_KEY, categorize=False)


def ranking_order(
    days: ArrayLike, risk: ArrayLike, declaration_id: ArrayLike, line_no: ArrayLike, tie_hashes: np.ndarray | None = None
) -> np.ndarray:
    """Positions sorting lines by day, risk descending, tie hash, declaration_id, line_no.

    ``tie_hashes`` are :func:`tie_hash` of the keys when already computed (:func:`quota_keys`).
    """
    scores = np.nan_to_num(np.asarray(risk, dtype="float64"), nan=-np.inf)
    ids = pd.Series(declaration_id)
    ids = (ids if isinstance(ids.dtype, pd.StringDtype) else ids.astype("string")).fillna("")
    id_rank = pd.factorize(ids, sort=True)[0]
    numbers = pd.Series(line_no).astype("Int64").fillna(0).to_numpy("int64")
    hashes = tie_hash(declaration_id, line_no) if tie_hashes is None else np.asarray(tie_hashes)
    # np.lexsort sorts by the last key first.
    return np.lexsort((numbers, id_rank, hashes, -scores, np.asarray(days)))


def quota_channels(
    days: ArrayLike,
    risk: ArrayLike,
    declaration_id: ArrayLike,
    line_no: ArrayLike,
    rates: Mapping[str, float],
    ranked: np.ndarray | None = None,
    tie_hashes: np.ndarray | None = None,
) -> np.ndarray:
    """Channel of each line: red / yellow by quota of rank within its day, else green.

    Parameters
    ----------
    days : array of int
        Arrival day of each line (:func:`day_numbers`).
    risk : array of float
        Risk score (NaN ranks last).
    declaration_id, line_no : array-like
        The line key, for the deterministic tie-break.
    rates : mapping
        ``{"red": ..., "yellow": ...}`` (:func:`channel_rates`).
    ranked : array of bool, optional
        Lines that take part in the ranking (and count in their day's ``n``); the others are green
        here. All lines by default.
    tie_hashes : array of uint64, optional
        :func:`tie_hash` of the keys, when already computed.

    Returns
    -------
    ndarray of object
        "red", "yellow" or "green" per line, in input order.
    """
    days = np.asarray(days, dtype="int64")
    channels = np.full(len(days), "green", dtype=object)
    where = np.arange(len(days)) if ranked is None else np.flatnonzero(np.asarray(ranked, dtype=bool))
    if len(where) == 0:
        return channels
    ids, numbers = pd.Series(declaration_id).reset_index(drop=True), pd.Series(line_no).reset_index(drop=True)
    order = ranking_order(
        days[where],
        np.asarray(risk, dtype="float64")[where],
        ids.iloc[where],
        numbers.iloc[where],
        None if tie_hashes is None else np.asarray(tie_hashes)[where],
    )
    sorted_days = days[where][order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_days)) + 1]
    sizes = np.diff(np.r_[starts, len(sorted_days)])
    red, yellow = day_quotas(sizes, rates)
    position = np.arange(len(sorted_days)) - np.repeat(starts, sizes)
    ranked_channels = np.where(
        position < np.repeat(red, sizes), "red", np.where(position < np.repeat(red + yellow, sizes), "yellow", "green")
    )
    channels[where[order]] = ranked_channels
    return channels


def quota_keys(lines: pd.DataFrame) -> pd.DataFrame:
    """What the quotas read of validated lines (``declared_at``, ``declaration_id``, ``line_no``),
    compactly: day, key (text in Arrow memory) and tie hash, so a file's keys fit in memory."""
    line_no = lines["line_no"] if "line_no" in lines else pd.Series(1, index=lines.index)
    return pd.DataFrame(
        {
            "day": day_numbers(lines["declared_at"]).astype("int32"),
            "declaration_id": lines["declaration_id"].astype("string[pyarrow]").array,
            "line_no": line_no.astype("Int64").array,
            "tie_hash": tie_hash(lines["declaration_id"], line_no),
        }
    )


def channels_for_keys(
    keys: pd.DataFrame, risk: ArrayLike, rates: Mapping[str, float], ranked: np.ndarray | None = None
) -> np.ndarray:
    """:func:`quota_channels` for the :func:`quota_keys` of lines."""
    return quota_channels(
        keys["day"].to_numpy("int64"), risk, keys["declaration_id"], keys["line_no"], rates, ranked, keys["tie_hash"].to_numpy()
    )


def channels_for_lines(
    lines: pd.DataFrame, risk: ArrayLike, rates: Mapping[str, float], ranked: np.ndarray | None = None
) -> np.ndarray:
    """:func:`quota_channels` for validated lines (``declared_at``, ``declaration_id``, ``line_no``)."""
    return channels_for_keys(quota_keys(lines), risk, rates, ranked)
