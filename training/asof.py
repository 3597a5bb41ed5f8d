"""What a scorer knew on a given date: the one "as of" view of evaluation, retraining and simulation.

A window's lines are scored as a scorer at the window's start would have scored them: without
their own outcomes, with the history declared before the window, and with only the outcomes known
by the window's training cut-off (``train_end``: label delay already taken into account by the
caller's choice of cut-off). :func:`store_at` builds a history store as it stood on a date.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.history import HISTORY_COLUMNS, line_keys
from training.train import hide_labels_outside


@dataclass(frozen=True)
class Window:
    """One test window: lines declared in ``[start, end)``, outcomes known before ``train_end``."""

    index: int
    train_end: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp

    def as_dict(self) -> dict[str, object]:
        """Index and ISO dates (``end`` exclusive)."""
        return {"index": self.index, "train_end": iso(self.train_end), "start": iso(self.start), "end": iso(self.end)}


def iso(timestamp: pd.Timestamp) -> str:
    """``YYYY-MM-DD``."""
    return pd.Timestamp(timestamp).strftime("%Y-%m-%d")


def declared_between(lines: pd.DataFrame, begin: pd.Timestamp | None, end: pd.Timestamp | None) -> np.ndarray:
    """Mask of lines declared in ``[begin, end)`` (an open side when None)."""
    dates = pd.to_datetime(lines["declared_at"])
    mask = np.ones(len(lines), dtype=bool)
    if begin is not None:
        mask &= (dates >= begin).to_numpy()
    if end is not None:
        mask &= (dates < end).to_numpy()
    return mask


def scoring_view(lines: pd.DataFrame, window: Window, store: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The window's lines and their history as a scorer at the window's start would see them.

    Outcomes are kept only for lines declared before the training cut-off (``window.train_end``);
    history lines are every line declared before the window, plus the history store's lines
    (``store``) declared before it and not among ``lines``.

    Returns
    -------
    current : DataFrame
        The window's lines, without outcomes.
    past : DataFrame
        The history at the window's start (history columns).
    """
    visible = hide_labels_outside(lines, lines.index[declared_between(lines, None, window.train_end)])
    current = visible[declared_between(lines, window.start, window.end)]
    past = visible[declared_between(lines, None, window.start)].reindex(columns=list(HISTORY_COLUMNS))
    if store is not None and len(store):
        store = store[declared_between(store, None, window.start) & ~line_keys(store).isin(line_keys(lines))]
        store = hide_labels_outside(store, store.index[declared_between(store, None, window.train_end)])
        past = pd.concat([store.reindex(columns=list(HISTORY_COLUMNS)), past], ignore_index=True)
    return current, past


def store_at(lines: pd.DataFrame, date: pd.Timestamp, label_delay_days: int) -> pd.DataFrame:
    """The history store on ``date``: earlier lines, outcomes only of lines old enough to be known."""
    earlier = lines[declared_between(lines, None, date)]
    known = earlier.index[declared_between(earlier, None, date - pd.Timedelta(days=label_delay_days))]
    return hide_labels_outside(earlier, known).reindex(columns=list(HISTORY_COLUMNS))
