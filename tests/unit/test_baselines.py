"""Baseline targeting rules: exact scores on hand-built lines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.schema import validate_manifest
from training.baselines import (
    BASELINES,
    band_distance,
    declared_value_scores,
    fit_baselines,
    hub_value_rule_scores,
    random_scores,
    value_rule_scores,
    via_hub,
)

# (hs_code, net kg, declared USD, export country, port of loading, transshipment) -> value rule, hub rule.
# Zinc 790111 has the band 2.6-3.3 USD/kg; tin 800110 30-36; cermets 811300 no band; 940360 is not listed.
CASES = [
    pytest.param("790111", "1000", "3000", "DE", "DEHAM", None, 0.0, 0.0, id="zinc inside band"),
    pytest.param("790111", "1000", "33000", "DE", "DEHAM", None, 2.0, 0.0, id="zinc 10x above, no hub"),
    pytest.param("790111", "1000", "33000", "TH", "THLCH", None, 2.0, 2.0, id="zinc 10x above, from hub"),
    pytest.param("790111", "1000", "260", "MX", "MXZLO", None, 2.0, 2.0, id="zinc 10x below, from hub"),
    pytest.param("790111", "1000", "330000", "DE", "DEHAM", "THLCH", 3.0, 3.0, id="100x above, hub transshipment"),
    pytest.param("800110", "100", "3600", "TH", "THLCH", None, 0.0, 0.0, id="tin at band top"),
    pytest.param("811300", "1000", "99000", "TH", "THLCH", None, 0.0, 0.0, id="no band for cermets"),
    pytest.param("940360", "1000", "99000", "TH", "THLCH", None, 0.0, 0.0, id="code not in table"),
]


@pytest.fixture(scope="module")
def state(valid_labelled):
    return fit_baselines(valid_labelled, seed=7)


def _lines(make_frame, *rows):
    frame = make_frame(
        *[
            {
                "hs_code": hs,
                "net_weight_kg": net,
                "gross_weight_kg": str(float(net) * 1.02),
                "declared_value_usd": value,
                "export_country": export,
                "port_of_loading": loading,
                "transshipment_ports": transship,
                "origin_country": "CN",
            }
            for hs, net, value, export, loading, transship in rows
        ]
    )
    result = validate_manifest(frame)
    assert result.quarantine.empty
    return result.valid


@pytest.mark.parametrize(("hs", "net", "value", "export", "loading", "transship", "value_rule", "hub_rule"), CASES)
def test_rule_scores_exact(make_frame, state, hs, net, value, export, loading, transship, value_rule, hub_rule):
    lines = _lines(make_frame, (hs, net, value, export, loading, transship))
    assert value_rule_scores(lines, state)[0] == pytest.approx(value_rule, abs=1e-12)
    assert hub_value_rule_scores(lines, state)[0] == pytest.approx(hub_rule, abs=1e-12)


def test_band_distance_is_absolute_log10_distance(make_frame, state):
    # 66 USD/kg is 20x the band top 3.3; 0.52 USD/kg is a fifth of the band bottom 2.6.
    lines = _lines(make_frame, ("790111", "1000", "66000", "DE", "DEHAM", None), ("790111", "1000", "520", "DE", "DEHAM", None))
    np.testing.assert_allclose(band_distance(lines, state), [math.log10(20), math.log10(5)], rtol=1e-12)


def test_rule_ranks_further_outside_first(make_frame, state):
    lines = _lines(
        make_frame,
        ("790111", "1000", "6600", "TH", "THLCH", None),
        ("790111", "1000", "66000", "TH", "THLCH", None),
        ("790111", "1000", "3000", "TH", "THLCH", None),
    )
    scores = value_rule_scores(lines, state)
    assert scores[1] > scores[0] > scores[2] == 0.0
    assert scores[0] == pytest.approx(1 + math.log10(2))


def test_via_hub(make_frame, state):
    lines = _lines(
        make_frame,
        ("790111", "1000", "3000", "TH", "DEHAM", None),
        ("790111", "1000", "3000", "DE", "MXZLO", None),
        ("790111", "1000", "3000", "DE", "DEHAM", "SGSIN;THLCH"),
        ("790111", "1000", "3000", "DE", "DEHAM", "SGSIN"),
    )
    assert via_hub(lines, state).tolist() == [True, True, True, False]


def test_declared_value_scores(make_frame, state):
    lines = _lines(make_frame, ("790111", "1000", "3000", "DE", "DEHAM", None), ("790111", "1000", "0", "DE", "DEHAM", None))
    lines.loc[lines.index[1], "declared_value_usd"] = np.nan
    assert declared_value_scores(lines, state).tolist() == [3000.0, -np.inf]


def test_random_scores_follow_the_seed(valid_labelled, state):
    lines = valid_labelled.head(5)
    np.testing.assert_array_equal(random_scores(lines, state), np.random.default_rng(7).random(5))
    other = fit_baselines(valid_labelled, seed=8)
    assert not np.array_equal(random_scores(lines, state), random_scores(lines, other))


def test_every_baseline_gives_one_finite_or_ordered_score_per_line(valid_labelled, state):
    for name, baseline in BASELINES.items():
        scores = baseline(valid_labelled, state)
        assert scores.shape == (len(valid_labelled),), name
        assert not np.isnan(scores).any(), name


def test_fit_on_no_lines_still_scores(make_frame, valid_labelled):
    # A fixed model evaluated on a file that starts after its training has no earlier lines.
    state = fit_baselines(valid_labelled.head(0), seed=0)
    lines = _lines(make_frame, ("790111", "1000", "33000", "TH", "THLCH", None))
    assert hub_value_rule_scores(lines, state).tolist() == [2.0]
