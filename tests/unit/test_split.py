"""training/split.py (and the own-history split of cross-world evaluation) on hand-made date ranges."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import pytest

from training.config import load_train_config
from training.crossworld import own_history
from training.split import labelled, time_split


@pytest.fixture(scope="module")
def year() -> pd.DataFrame:
    """One line per day of 2024 (366 days, a span of 365 days)."""
    return pd.DataFrame({"declared_at": pd.date_range("2024-01-01", "2024-12-31"), "n": range(366)})


def test_boundaries_and_gaps(year):
    # 20 % of 365 days is 73 days: test from 12-31 minus 73 days; 10-day gaps before valid and test
    split = time_split(year, valid_fraction=0.2, test_fraction=0.2, label_delay_days=10)

    assert split.boundaries == {
        "train_start": "2024-01-01",
        "train_end": "2024-07-18",
        "valid_start": "2024-07-28",
        "valid_end": "2024-10-09",
        "test_start": "2024-10-19",
        "test_end": "2024-12-31",
    }
    periods = {name: getattr(split, name)["declared_at"] for name in ("train", "valid", "test")}
    assert (periods["train"].min(), periods["train"].max()) == (pd.Timestamp("2024-01-01"), pd.Timestamp("2024-07-17"))
    assert (periods["valid"].min(), periods["valid"].max()) == (pd.Timestamp("2024-07-28"), pd.Timestamp("2024-10-08"))
    assert (periods["test"].min(), periods["test"].max()) == (pd.Timestamp("2024-10-19"), pd.Timestamp("2024-12-31"))
    assert [len(p) for p in periods.values()] == [199, 73, 74]  # 366 - 2 gaps of 10 days


def test_lines_in_the_gaps_are_left_out(year):
    split = time_split(year, 0.2, 0.2, 10)

    used = set(split.train["n"]) | set(split.valid["n"]) | set(split.test["n"])
    left_out = year.loc[~year["n"].isin(used), "declared_at"].dt.strftime("%m-%d").tolist()
    assert left_out == [f"07-{d}" for d in range(18, 28)] + [f"10-{d:02d}" for d in range(9, 19)]


def test_without_label_delay_every_line_is_in_exactly_one_period(year):
    split = time_split(year, 0.2, 0.2, 0)

    assert split.boundaries["train_end"] == split.boundaries["valid_start"] == "2024-08-07"
    assert split.boundaries["valid_end"] == split.boundaries["test_start"] == "2024-10-19"
    ids = list(split.train["n"]) + list(split.valid["n"]) + list(split.test["n"])
    assert sorted(ids) == list(range(366))


def test_reported_boundaries_match_the_periods_when_fractions_cut_inside_a_day():
    # 15 % of 364 days is 54.6 days: the cut falls at 09:36, the periods must start on the dates reported
    lines = pd.DataFrame({"declared_at": pd.date_range("2024-01-01", "2024-12-30")})

    split = time_split(lines, 0.15, 0.15, 30)

    b = split.boundaries
    assert split.test["declared_at"].min() == pd.Timestamp(b["test_start"])
    assert split.valid["declared_at"].min() == pd.Timestamp(b["valid_start"])
    assert split.valid["declared_at"].max() == pd.Timestamp(b["valid_end"]) - pd.Timedelta(days=1)
    assert split.train["declared_at"].max() == pd.Timestamp(b["train_end"]) - pd.Timedelta(days=1)


@pytest.mark.parametrize(
    ("dates", "delay", "empty"),
    [
        pytest.param(["2024-01-01"] * 3, 0, "train", id="single-day"),
        pytest.param(pd.date_range("2024-01-01", "2024-01-31"), 30, "train", id="gap-longer-than-data"),
    ],
)
def test_an_empty_period_is_an_error_naming_it(dates, delay, empty):
    lines = pd.DataFrame({"declared_at": pd.to_datetime(dates)})

    with pytest.raises(ValueError, match=f"the {empty} period is empty: the data spans"):
        time_split(lines, 0.2, 0.2, delay)


def test_labelled_keeps_inspected_lines_with_a_known_outcome():
    lines = pd.DataFrame(
        {
            "inspected": pd.array([1, 1, 0, None, 1], dtype="Int64"),
            "misdeclared": pd.array([1, 0, None, None, None], dtype="Int64"),
        }
    )

    assert labelled(lines).index.tolist() == [0, 1]


def test_own_history_puts_the_whole_prior_in_the_training_period_and_validates_on_the_office_alone():

    days = pd.date_range("2024-01-01", "2024-12-31", freq="D")
    office = pd.DataFrame({"declared_at": days.strftime("%Y-%m-%d"), "source": "office"}, index=days.day_of_year + 1000)
    later = pd.date_range("2024-06-01", "2025-06-30", freq="D")  # the prior reaches past the cutoff
    prior = pd.DataFrame({"declared_at": later.strftime("%Y-%m-%d"), "source": "prior"})
    config = replace(load_train_config(), valid_fraction=0.25, label_delay_days=10)
    cutoff = pd.Timestamp("2025-01-01")

    lines, split = own_history(office, prior, cutoff, config)

    assert lines.index.is_unique and len(lines) == len(office) + len(prior)
    assert split.train["source"].value_counts().to_dict() == {"prior": len(prior), "office": 264}
    assert set(split.valid["source"]) == {"office"}
    assert split.valid["declared_at"].min() == "2024-10-01" and split.valid["declared_at"].max() == "2024-12-31"
    assert (split.train.loc[split.train["source"] == "office", "declared_at"] < "2024-09-21").all()
    alone, alone_split = own_history(office, None, cutoff, config)
    assert len(alone) == len(office) and set(alone_split.train["source"]) == {"office"}
