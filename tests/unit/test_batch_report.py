"""The batch report's counts: exact on a hand-made batch, the same whatever the parts, and kept as JSON."""

from __future__ import annotations

import re
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from features.reference import load_reference
from features.schema import REASON_COLUMN, quarantine_rules
from models.distribution import RISK_BIN_EDGES, risk_counts, shares
from models.reasons import NO_STATED_FACT, OTHER_TOPIC, reason_topic
from serve.report import BatchReport, reference_shares, render_report
from serve.triage.synthetic import synthetic_scored_batch

PRICE = "declared 48.17 USD/kg, 14.6x above the 2.6-3.3 USD/kg band of HS 790111; in the price band of antimony 19-62 USD/kg"
ROUTE = "origin CN, exported from TH (diversion hub) to USLAX by sea"


def lines() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "declared_at": pd.to_datetime(["2026-03-02", "2026-03-02", "2026-03-03", "2026-03-03", "2026-03-03"]).date,
            "port_of_discharge": ["USLAX", "USLAX", "USLAX", "USHOU", None],
            "channel": ["red", "yellow", "green", "red", "green"],
            "risk_score": [0.95, 0.5, 0.0005, 0.9, 1.0],
            "reasons": [f"{PRICE} | {ROUTE}", ROUTE, "", "", None],
            "export_country": ["TH", "TH", "TH", "MX", "CN"],
            "hs_code": ["7901110000", "790111", "830629", "2825800000", "810100"],
            "model_version": ["m1"] * 5,
        }
    )


def test_counts_of_a_hand_made_batch():
    report = BatchReport(load_reference().cover_codes)
    report.add_scored(lines())
    assert report.lines == 5
    assert report.channels == {
        "USLAX|2026-03-02|red": 1,
        "USLAX|2026-03-02|yellow": 1,
        "USLAX|2026-03-03|green": 1,
        "USHOU|2026-03-03|red": 1,
        "none|2026-03-03|green": 1,
    }
    assert report.channel_totals() == {"red": 2, "yellow": 1, "green": 2}
    # Flagged lines only, each topic once per line; a flagged line without reasons has no single fact.
    assert report.topics == {"priced like a controlled good": 1, "route through a hub or transit": 2, "no single fact": 1}
    # 790111 and 830629 are cover codes; 282580 (antimony oxide) and 8101 are not.
    assert report.cells == {"TH|790111": 2, "TH|830629": 1}
    assert report.cells_flagged == {"TH|790111": 2}
    assert report.risk.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3]  # 0.5 opens its bin; 0.9-1.0 holds 1.0
    assert report.port_table()[0] == {"port": "USLAX", "red": 1, "yellow": 1, "green": 1, "lines": 3, "days": 2}
    assert report.flagged_by_day("USHOU") == (["2026-03-02", "2026-03-03"], {"red": [0, 1], "yellow": [0, 0]})


def test_parts_add_up_to_the_whole_and_survive_json():
    batch = synthetic_scored_batch(900, seed=4)
    whole, parts = BatchReport(load_reference().cover_codes), BatchReport(load_reference().cover_codes)
    whole.add_scored(batch)
    for start in range(0, 900, 250):
        parts.add_scored(batch.iloc[start : start + 250])
    assert parts.to_dict() == whole.to_dict()
    assert BatchReport.from_dict(whole.to_dict()).to_dict() == whole.to_dict()
    with pytest.raises(ValueError, match="batch report version must be 1, got 7"):
        BatchReport.from_dict({**whole.to_dict(), "version": 7})


def test_quarantine_counts_rules_not_values():
    report = BatchReport({})
    report.add_quarantine(
        pd.DataFrame(
            {
                REASON_COLUMN: [
                    "hs_code must be 6-10 digits, got 'ab'; gross_weight_kg must be > 0, got -1",
                    "hs_code must be 6-10 digits, got 'x1'",
                    "gross_weight_kg: unparseable number '1e'",
                ]
            }
        )
    )
    assert report.quarantined == 3
    assert report.rules == {
        "hs_code must be 6-10 digits": 2,
        "gross_weight_kg must be > 0": 1,
        "gross_weight_kg: unparseable number": 1,
    }
    assert quarantine_rules("port_of_discharge has an unknown value 'XXX'") == ["port_of_discharge has an unknown value"]


@pytest.mark.parametrize(
    ("phrase", "topic"),
    [
        (PRICE, "priced like a controlled good"),
        ("declared 52.10 USD/kg, 18.0x above what HS 7901 typically declares (2.90 USD/kg)", "priced above the declared code"),
        ("declared 0.40 USD/kg, 7.0x below the 2.6-3.3 USD/kg band of HS 790111", "priced below the declared code"),
        ("declared value missing or zero", "declared value missing"),
        (ROUTE, "route through a hub or transit"),
        (
            "1,000 kg per package: heavy for HS 830629, statuettes and ornaments of base metal, which are light for their volume",
            "heavy packing for light goods",
        ),
        ("declared as HS 790111, a known cover code (metal ingot)", "known cover code"),
        ("declared 30 days after the Chinese Ga/Ge/Sb export ban to the US (2024-12-03)", "after the export controls"),
        (
            "consignee C1 imported controlled goods directly from China before the controls, now via a hub",
            "consignee moved from China to a hub",
        ),
        (
            "shipper S1: first seen 12 days ago, 3 of 5 inspected lines misdeclared (all parties: 2.1%)",
            "party misdeclared before",
        ),
        ("consignee C9: never seen before", "new party"),
        ("importer not declared", "party not declared"),
        ("14 lines TH -> USLAX of HS 7901 in the last 28 days, 9.3x the rate of the 182 days before", "flow surge"),
        ('description "antimony ingots" names a controlled good', "description names a controlled good"),
        ('description "ceramic vase" does not match HS 7901', "description does not match the code"),
        ('description "metal parts" is vague', "vague or missing description"),
        (NO_STATED_FACT, "no single fact"),
        ("something the phrase builders never write", OTHER_TOPIC),
    ],
)
def test_reason_topics(phrase, topic):
    assert reason_topic(phrase) == topic


def test_risk_bins_and_reference_shares():
    assert risk_counts(np.array([0.0, 0.0009, 0.001, 0.5, 1.0, np.nan])).tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert shares(np.array([1, 3])) == [0.25, 0.75] and shares(np.zeros(2)) == [0.0, 0.0]
    spec = {"valid_risk_histogram": {"edges": list(RISK_BIN_EDGES), "shares": [1 / 14] * 14}}
    assert reference_shares(spec) == [1 / 14] * 14
    assert reference_shares({}) is None  # a bundle trained before the report
    assert reference_shares({"valid_risk_histogram": {"edges": [0, 1], "shares": [1.0]}}) is None  # other bins


def test_rendered_report_embeds_its_counts_and_nothing_external():
    report = BatchReport(load_reference().cover_codes)
    report.add_scored(lines())
    html = render_report(report, None, "m</script>.csv", generated=datetime(2026, 3, 4, 5, 6))
    assert "Written by misdeclare score on 2026-03-04 05:06 UTC." in html
    assert "m&lt;/script&gt;.csv" in html and "m</script>.csv" not in html
    assert not re.search(r"""(src|href)=["']?https?:""", html)
    assert "this model's bundle carries no validation distribution" in html
