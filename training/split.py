"""Time-based splits with a gap for the label delay."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from features.schema import EXPLORATION, SELECTED_BY


class InsufficientDataError(ValueError):
    """The lines cannot be split or trained on: too short a period, or a period without both labels.

    A problem of the data a user gave, not of the code: jobs report it naming the files.
    """


@dataclass(frozen=True)
class TimeSplit:
    """Three consecutive periods separated by gaps of ``label_delay_days``.

    Attributes
    ----------
    train, valid, test : DataFrame
        All lines (labelled or not) of each period.
    boundaries : dict
        ISO dates: train_end, valid_start, valid_end, test_start, test_end (ends exclusive, but
        test_end which is the last date present).
    """

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    boundaries: dict[str, str]


def time_split(lines: pd.DataFrame, valid_fraction: float, test_fraction: float, label_delay_days: int) -> TimeSplit:
    """Split lines by ``declared_at`` into train | gap | valid | gap | test.

    The test period is the latest ``test_fraction`` of the date range, the validation period the
    ``valid_fraction`` before it; each is preceded by a gap of ``label_delay_days`` whose lines are
    left out, because their outcomes would not yet be known when the later period is scored.

    Raises
    ------
    ValueError
        When a period would be empty.
    """
    dates = pd.to_datetime(lines["declared_at"])
    first, last = dates.min(), dates.max()
    span = last - first
    gap = pd.Timedelta(days=label_delay_days)
    # Boundaries fall on midnight, so that the reported ISO dates are exactly where the periods
    # start (inclusive) and end (exclusive).
    test_start = (last - span * test_fraction).floor("D")
    valid_end = test_start - gap
    valid_start = (valid_end - span * valid_fraction).floor("D")
    train_end = valid_start - gap
    periods = {
        "train": lines[dates < train_end],
        "valid": lines[(dates >= valid_start) & (dates < valid_end)],
        "test": lines[dates >= test_start],
    }
    for name, period in periods.items():
        if period.empty:
            raise InsufficientDataError(
                f"the {name} period is empty: the data spans {first.date()} to {last.date()}, "
                f"too short for valid_fraction={valid_fraction}, test_fraction={test_fraction}, "
                f"label_delay_days={label_delay_days}"
            )
    boundaries = {
        "train_start": first,
        "train_end": train_end,
        "valid_start": valid_start,
        "valid_end": valid_end,
        "test_start": test_start,
        "test_end": last,
    }
    return TimeSplit(**periods, boundaries={k: v.strftime("%Y-%m-%d") for k, v in boundaries.items()})


def labelled(lines: pd.DataFrame) -> pd.DataFrame:
    """The inspected lines with a known outcome: the only lines with labels."""
    known = (lines["inspected"] == 1) & lines["misdeclared"].notna()
    return lines[known.fillna(False).astype(bool)]


def exploration_checks(lines: pd.DataFrame) -> pd.DataFrame:
    """The labelled lines picked at random (``selected_by`` is "exploration"); none without the column."""
    if SELECTED_BY not in lines.columns:
        return lines.iloc[:0]
    picked = (lines[SELECTED_BY].astype("string") == EXPLORATION).fillna(False).to_numpy(dtype=bool)
    return labelled(lines[picked])


def window_split(
    lines: pd.DataFrame, train_end: pd.Timestamp, valid_fraction: float, label_delay_days: int, test: pd.DataFrame | None = None
) -> TimeSplit:
    """Split for a model that must be as recent as possible: train | gap | valid, ending at ``train_end``.

    Used where an outer loop already holds out a later window (rolling evaluation, retraining):
    holding out a test period inside as well would end the model's training months before the
    window and leave it blind to the newest routes. The validation period (early stopping,
    calibration, thresholds) is the last ``valid_fraction`` of the range before ``train_end``.

    Parameters
    ----------
    lines : DataFrame
        Lines declared before ``train_end`` (later lines are ignored).
    train_end : Timestamp
        Outcomes of lines declared before it are known.
    test : DataFrame, optional
        The outer window's lines, measured as the test period; empty by default.

    Raises
    ------
    ValueError
        When the train or validation period is empty.
    """
    dates = pd.to_datetime(lines["declared_at"])
    first = dates.min()
    valid_start = (train_end - (train_end - first) * valid_fraction).floor("D")
    fit_end = valid_start - pd.Timedelta(days=label_delay_days)
    periods = {"train": lines[dates < fit_end], "valid": lines[(dates >= valid_start) & (dates < train_end)]}
    for name, period in periods.items():
        if period.empty:
            raise InsufficientDataError(
                f"the {name} period before {train_end.date()} is empty: the data starts {first.date()}, "
                f"too late for valid_fraction={valid_fraction}, label_delay_days={label_delay_days}"
            )
    test = lines.iloc[0:0] if test is None else test
    test_dates = pd.to_datetime(test["declared_at"])
    boundaries = {
        "train_start": first,
        "train_end": fit_end,
        "valid_start": valid_start,
        "valid_end": train_end,
        "test_start": test_dates.min() if len(test) else train_end,
        "test_end": test_dates.max() if len(test) else train_end,
    }
    return TimeSplit(**periods, test=test, boundaries={k: v.strftime("%Y-%m-%d") for k, v in boundaries.items()})
