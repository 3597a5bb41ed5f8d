"""models/channels.py: red / yellow quotas by rank within each arrival day, deterministic tie-break."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.channels import (
    DEFAULT_CHANNEL_RATES,
    channel_rates,
    channels_for_lines,
    day_quotas,
    quota_channels,
)

RATES = {"red": 0.02, "yellow": 0.05}


def day_frame(sizes: dict[str, int], seed: int = 0) -> pd.DataFrame:
    """Validated-like lines: ``sizes`` maps an ISO day to its number of lines; random distinct risks."""
    days = [day for day, n in sizes.items() for _ in range(n)]
    frame = pd.DataFrame(
        {
            "declaration_id": [f"D{i:06d}" for i in range(len(days))],
            "line_no": np.ones(len(days), dtype="int64"),
            "declared_at": pd.to_datetime(days),
        }
    )
    frame["risk"] = np.random.default_rng(seed).permutation(len(days)) / len(days)
    return frame


def counts(frame: pd.DataFrame, channels: np.ndarray) -> dict[str, dict[str, int]]:
    table = pd.crosstab(frame["declared_at"].dt.strftime("%Y-%m-%d"), pd.Series(channels, index=frame.index))
    return {day: {c: int(row.get(c, 0)) for c in ("red", "yellow", "green")} for day, row in table.iterrows()}


@pytest.mark.parametrize(
    ("n", "red", "yellow"),
    [
        (0, 0, 0),
        (1, 0, 0),
        (7, 0, 0),
        (8, 0, 1),
        (10, 0, 1),
        (24, 0, 2),
        (25, 1, 1),
        (40, 1, 2),
        (50, 1, 3),
        (100, 2, 5),
        (1000, 20, 50),
        (1010, 20, 51),
    ],
)
def test_day_quotas_round_half_up(n, red, yellow):
    assert day_quotas(n, RATES) == (red, yellow)


def test_each_day_gets_its_own_quota():
    frame = day_frame({"2026-07-01": 100, "2026-07-02": 10, "2026-07-03": 40, "2026-07-04": 1})

    channels = channels_for_lines(frame, frame["risk"].to_numpy(), RATES)

    assert counts(frame, channels) == {
        "2026-07-01": {"red": 2, "yellow": 5, "green": 93},
        "2026-07-02": {"red": 0, "yellow": 1, "green": 9},
        "2026-07-03": {"red": 1, "yellow": 2, "green": 37},
        "2026-07-04": {"red": 0, "yellow": 0, "green": 1},
    }


def test_the_riskiest_lines_of_the_day_take_the_quota():
    frame = day_frame({"2026-07-01": 100})

    channels = channels_for_lines(frame, frame["risk"].to_numpy(), RATES)

    order = frame["risk"].rank(ascending=False, method="first").astype(int).to_numpy()
    assert (channels[order <= 2] == "red").all()
    assert (channels[(order > 2) & (order <= 7)] == "yellow").all()
    assert (channels[order > 7] == "green").all()


def test_a_time_of_day_does_not_make_another_day():
    frame = day_frame({"2026-07-01": 100})
    frame["declared_at"] = frame["declared_at"] + pd.to_timedelta(np.arange(100) * 10, unit="min")

    channels = channels_for_lines(frame, frame["risk"].to_numpy(), RATES)

    assert (channels == "red").sum() == 2 and (channels == "yellow").sum() == 5


def test_ties_fill_the_quota_and_the_choice_ignores_row_order():
    frame = day_frame({"2026-07-01": 100})
    frame["risk"] = np.r_[np.full(90, 0.3), np.linspace(0.01, 0.1, 10)]  # 90 % of the lines share the top score

    channels = pd.Series(channels_for_lines(frame, frame["risk"].to_numpy(), RATES), index=frame["declaration_id"])

    assert (channels == "red").sum() == 2 and (channels == "yellow").sum() == 5
    assert set(channels[channels != "green"].index) <= set(frame["declaration_id"].head(90))
    for seed in range(5):
        shuffled = frame.sample(frac=1, random_state=seed)
        again = pd.Series(channels_for_lines(shuffled, shuffled["risk"].to_numpy(), RATES), index=shuffled["declaration_id"])
        pd.testing.assert_series_equal(again.loc[channels.index], channels)


def test_tied_lines_are_spread_over_the_day_not_taken_in_key_order():
    frame = day_frame({"2026-07-01": 1000})
    frame["risk"] = 0.5

    channels = channels_for_lines(frame, frame["risk"].to_numpy(), RATES)

    flagged = np.flatnonzero(channels != "green")
    assert len(flagged) == 70
    assert flagged.min() < 100 and flagged.max() > 900  # a hash of the key, not the first 70 declarations


def test_lines_outside_the_ranking_are_green_and_do_not_count():
    frame = day_frame({"2026-07-01": 150})
    ranked = np.r_[np.ones(100, dtype=bool), np.zeros(50, dtype=bool)]
    frame.loc[~ranked, "risk"] = 2.0  # higher than every ranked line

    channels = channels_for_lines(frame, frame["risk"].to_numpy(), RATES, ranked=ranked)

    assert (channels[~ranked] == "green").all()
    assert (channels == "red").sum() == 2 and (channels == "yellow").sum() == 5


def test_missing_risk_ranks_last():
    frame = day_frame({"2026-07-01": 10})
    risk = np.full(10, np.nan)
    risk[3] = 0.01

    channels = channels_for_lines(frame, risk, RATES)

    assert channels.tolist() == ["green"] * 3 + ["yellow"] + ["green"] * 6


def test_line_no_defaults_to_one_when_absent():
    frame = day_frame({"2026-07-01": 100})

    with_column = channels_for_lines(frame, frame["risk"].to_numpy(), RATES)
    without = channels_for_lines(frame.drop(columns="line_no"), frame["risk"].to_numpy(), RATES)

    np.testing.assert_array_equal(with_column, without)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(1, 3)), min_size=1, max_size=300, unique_by=lambda t: t),
    st.sampled_from([RATES, {"red": 0.1, "yellow": 0.2}, {"red": 0.0, "yellow": 0.5}]),
)
def test_no_green_line_outranks_a_flagged_one_of_its_day(rows, rates):
    """Property: within a day, green <= yellow <= red in risk, and the counts are the day's quotas."""
    day, risk_level, line_no = (np.array(v) for v in zip(*rows))
    ids = [f"D{d}-{r}" for d, r in zip(day, risk_level)]
    channels = quota_channels(day, risk_level / 6, ids, line_no, rates)
    for d in np.unique(day):
        here = day == d
        by = {c: risk_level[here & (channels == c)] for c in ("red", "yellow", "green")}
        red, yellow = day_quotas(int(here.sum()), rates)
        assert (len(by["red"]), len(by["yellow"])) == (red, yellow)
        if len(by["green"]) and len(by["red"]) + len(by["yellow"]):
            assert by["green"].max() <= np.r_[by["red"], by["yellow"]].min()
        if len(by["yellow"]) and len(by["red"]):
            assert by["yellow"].max() <= by["red"].min()
    shuffled = np.random.default_rng(0).permutation(len(day))
    again = quota_channels(day[shuffled], (risk_level / 6)[shuffled], [ids[i] for i in shuffled], line_no[shuffled], rates)
    np.testing.assert_array_equal(again, channels[shuffled])


def test_rates_come_from_the_spec_else_the_defaults():
    assert channel_rates({"channel_rates": {"red": 0.01, "yellow": 0.03}}) == {"red": 0.01, "yellow": 0.03}
    assert channel_rates({"channel_thresholds": {"red": 0.9, "yellow": 0.5}}) == DEFAULT_CHANNEL_RATES


@pytest.mark.parametrize("rates", [{"red": -0.01, "yellow": 0.05}, {"red": 0.6, "yellow": 0.5}])
def test_impossible_rates_are_refused(rates):
    with pytest.raises(ValueError, match="channel rates must be"):
        channel_rates({"channel_rates": rates})
