"""Behavioural tests of the trained model: directional, invariance, minimum quality on a later period."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.predict import score_frame

pytestmark = pytest.mark.slow


def risk(bundle, lines: pd.DataFrame, past: pd.DataFrame | None = None) -> np.ndarray:
    return score_frame(bundle, lines, explain="none", past=past)["risk_score"].to_numpy()


def honest_zinc_lines(lines: pd.DataFrame, n: int = 25) -> pd.DataFrame:
    """Legitimate zinc lines (declared and true goods agree) of the held-out period."""
    zinc = lines[lines["hs_code"].str.startswith("790111") & (lines["sim_fraud"].astype(int) == 0)]
    return zinc.head(n).reset_index(drop=True)


def with_value_per_kg(lines: pd.DataFrame, usd_per_kg: float) -> pd.DataFrame:
    weight = lines["net_weight_kg"].fillna(lines["gross_weight_kg"])
    return lines.assign(declared_value_usd=weight * usd_per_kg)


def test_raising_zinc_from_3_to_50_usd_per_kg_raises_risk(trained):
    _, bundle, test_lines = trained
    zinc = honest_zinc_lines(test_lines)
    assert len(zinc) >= 10
    low, high = risk(bundle, with_value_per_kg(zinc, 3.0)), risk(bundle, with_value_per_kg(zinc, 50.0))
    assert (high > low).all(), list(zip(low, high))


def test_renaming_ids_consistently_changes_nothing(trained):
    _, bundle, test_lines = trained
    lines = test_lines.head(3000)
    renamed = lines.copy()
    for column in ("declaration_id", "shipper_id", "consignee_id", "importer_id", "declarant_id"):
        renamed[column] = "renamed-" + renamed[column].str[::-1]
    np.testing.assert_allclose(risk(bundle, renamed), risk(bundle, lines), rtol=0, atol=1e-12)


def test_simulation_truth_is_never_read_when_scoring(trained):
    """The generator's sim_* ground truth must not reach any feature.

    (A batch's own labels may: earlier lines' outcomes known before a line's date minus the label
    delay feed its party history, see tests/unit/test_history.py.)
    """
    _, bundle, test_lines = trained
    lines = test_lines.head(3000)
    stripped = lines.drop(columns=[c for c in lines.columns if c.startswith("sim_")])
    np.testing.assert_array_equal(risk(bundle, stripped), risk(bundle, lines))


def test_a_shipper_with_confirmed_misdeclarations_raises_risk(trained):
    _, bundle, test_lines = trained
    zinc = honest_zinc_lines(test_lines, 10)
    when = zinc["declared_at"].min() - pd.Timedelta(days=120)

    def past_of(shipper: str, misdeclared: int) -> pd.DataFrame:
        past = zinc.head(6).assign(shipper_id=shipper, declared_at=when, inspected=1, misdeclared=misdeclared)
        return past.assign(declaration_id=[f"PAST-{shipper}-{i}" for i in range(len(past))])

    def lines_of(shipper: str) -> pd.DataFrame:
        return zinc.assign(shipper_id=shipper)

    caught = risk(bundle, lines_of("SHIP-BAD"), past=past_of("SHIP-BAD", 1))
    clean = risk(bundle, lines_of("SHIP-OK"), past=past_of("SHIP-OK", 0))
    assert (caught > clean).mean() >= 0.9, list(zip(clean, caught))


def test_minimum_quality_on_the_held_out_period(trained):
    result, _, _ = trained
    metrics = result.metrics
    base_rate = metrics["test_positives"] / metrics["test_lines"]
    assert metrics["test_average_precision"] >= 0.80
    assert metrics["test_roc_auc"] >= 0.90
    assert metrics["test_precision_at_5pct"] >= max(0.80, 2 * base_rate)


def test_suspected_commodity_names_the_hidden_good_of_true_value_disguises(trained):
    _, bundle, test_lines = trained
    # Channels are day quotas over the whole flow: score every line, then look at the disguises.
    scored = score_frame(bundle, test_lines, explain="none")
    flagged = scored[(scored["channel"] != "green") & (scored["sim_disguise"] == "true_value")]
    assert len(flagged) >= 20
    assert (flagged["suspected_commodity"] == flagged["sim_commodity"]).mean() >= 0.7
