"""models/reasons.py: the exact phrases an inspector reads, and which facts are never reasons.

Each rule is tested both ways: the suspicious fact is stated, the benign fact gives no phrase (the
group is then skipped for the next one, see the write_reasons tests).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.pipeline import build_feature_pipeline, pipeline_from_spec, pipeline_to_spec
from features.reference import load_reference
from models.reasons import (
    NO_STATED_FACT,
    PhraseContext,
    declared_goods_phrase,
    description_phrase,
    flow_phrase,
    group_contributions,
    party_phrase,
    price_phrase,
    route_phrase,
    switch_phrase,
    timing_phrase,
    top_groups,
    weight_phrase,
    write_reasons,
)

CONTEXT = PhraseContext(
    hubs=frozenset({"MX", "TH"}),
    price_bands={"antimony": [19.0, 62.0], "gallium": [220.0, 1450.0], "rare_earth_light": [20.0, 85.0]},
    measures={"sb_licensing": "2024-09-15", "us_ban": "2024-12-03", "re_licensing": "2025-04-04"},
    measure_labels={
        "sb_licensing": "Chinese antimony export licensing",
        "us_ban": "Chinese Ga/Ge/Sb export ban to the US",
        "re_licensing": "Chinese rare-earth licensing",
    },
    measure_commodities={
        "sb_licensing": ["antimony"],
        "us_ban": ["gallium", "germanium", "antimony"],
        "re_licensing": ["rare_earth"],
    },
    hs_bands={"790111": [2.6, 3.3], "830629": [4.0, 15.0], "811010": [21.0, 62.0]},
    light_goods={
        "830629": ["statuettes and ornaments of base metal", 50.0, 10000.0],
        "691310": ["ceramic ornaments (porcelain)", 50.0, 10000.0],
    },
    prior_rate=0.04,
    prior_strength=5.0,
    tenure_unknown_days=180,
)
NAN = float("nan")


# ----------------------------------------------------------------------------- price


def priced(
    value_per_kg: float, hs: str, distance: float, *, ratio: float = NAN, typical: float = NAN, target: float = 0.0, **bands
) -> dict:
    return {
        "value_per_kg": value_per_kg,
        "declared_value_usd": value_per_kg * 1000,
        "hs_code": hs,
        "hs_band_log_distance": distance,
        "value_log_ratio_hs": ratio,
        "hs_typical_usd_per_kg": typical,
        "is_target_code": target,
        **{f"band_dist_{b}": d for b, d in bands.items()},
    }


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        pytest.param(
            priced(48.17, "790111", np.log10(48.17 / 3.3), antimony=0.0, gallium=-0.66, rare_earth_light=0.0),
            "declared 48.17 USD/kg, 14.6x above the 2.6-3.3 USD/kg band of HS 790111; "
            "in the price band of antimony 19-62 USD/kg, rare earth light 20-85 USD/kg",
            id="zinc-at-antimony-price",
        ),
        pytest.param(
            priced(1234.5, "830629", np.log10(1234.5 / 15), antimony=1.3, gallium=0.0, rare_earth_light=1.2),
            "declared 1,234.50 USD/kg, 82.3x above the 4-15 USD/kg band of HS 830629; "
            "in the price band of gallium 220-1450 USD/kg",
            id="gallium-priced-statuette",
        ),
        pytest.param(
            priced(0.5, "790111", np.log10(0.5 / 2.6), antimony=-1.6),
            "declared 0.50 USD/kg, 5.2x below the 2.6-3.3 USD/kg band of HS 790111",
            id="below-the-band",
        ),
        pytest.param(
            priced(52.1, "940360", NAN, ratio=np.log10(52.1 / 14.8), typical=14.8, antimony=0.0),
            "declared 52.10 USD/kg, 3.5x above what HS 9403 typically declares (14.80 USD/kg); "
            "in the price band of antimony 19-62 USD/kg",
            id="no-band-typical-ratio",
        ),
        pytest.param(
            priced(1.0, "940360", NAN, ratio=np.log10(1 / 14.8), typical=14.8),
            "declared 1.00 USD/kg, 14.8x below what HS 9403 typically declares (14.80 USD/kg)",
            id="typical-below",
        ),
        pytest.param(
            priced(130.0, "811010", np.log10(130 / 62), target=1.0, antimony=0.3, rare_earth_light=0.18),
            "declared 130.00 USD/kg, 2.1x above the 21-62 USD/kg band of HS 811010",
            id="controlled-code-no-band-named",
        ),
        pytest.param(
            {"value_per_kg": 0.0, "declared_value_usd": 0.0, "hs_code": "790111"},
            "declared value missing or zero",
            id="zero-value",
        ),
        pytest.param(
            {"value_per_kg": NAN, "declared_value_usd": NAN, "hs_code": "790111"},
            "declared value missing or zero",
            id="missing-value",
        ),
    ],
)
def test_a_price_outside_the_declared_codes_band_is_cited_with_its_direction(row, phrase):
    assert price_phrase(row, CONTEXT) == phrase


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(priced(48.17, "811010", 0.0, target=1.0, antimony=0.0), id="antimony-priced-as-antimony"),
        pytest.param(priced(3.0, "790111", 0.0, antimony=-0.8), id="zinc-priced-as-zinc"),
        pytest.param(priced(32.0, "800110", 0.0, antimony=0.0), id="tin-in-its-band-and-in-antimonys"),
        pytest.param(priced(3.5, "790111", np.log10(3.5 / 3.3), antimony=-0.7), id="just-above-the-band-edge"),
        pytest.param(
            priced(20.0, "940360", NAN, ratio=np.log10(20 / 14.8), typical=14.8, antimony=0.0), id="near-typical-without-band"
        ),
        pytest.param(
            priced(30.0, "940360", NAN, ratio=np.log10(30 / 14.8), typical=14.8, antimony=0.0), id="prints-as-twice-typical"
        ),
        pytest.param({"value_per_kg": NAN, "declared_value_usd": 5000.0, "hs_code": "790111"}, id="no-weight"),
    ],
)
def test_a_price_that_fits_the_declared_code_is_no_reason(row):
    assert price_phrase(row, CONTEXT) == ""


def test_a_band_missing_from_an_old_context_is_described_without_numbers():
    old = PhraseContext(CONTEXT.hubs, CONTEXT.price_bands, CONTEXT.measures, CONTEXT.measure_labels, CONTEXT.measure_commodities)

    assert price_phrase(priced(9.9, "790111", np.log10(9.9 / 3.3)), old) == (
        "declared 9.90 USD/kg, 3.0x above the band of HS 790111"
    )


# ----------------------------------------------------------------------------- route


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        pytest.param(
            {
                "origin_country": "CN",
                "export_country": "TH",
                "transshipment_ports": "CNSHA;THLCH",
                "export_lacks_capacity": 1.0,
                "port_of_discharge": "USLAX",
                "transport_mode": "sea",
            },
            "origin CN, exported from TH (diversion hub), via CNSHA;THLCH to USLAX by sea, "
            "TH has no production capacity for the controlled goods",
            id="via-hub",
        ),
        pytest.param(
            {
                "origin_country": "CN",
                "export_country": "MX",
                "transshipment_ports": None,
                "export_lacks_capacity": 1.0,
                "port_of_discharge": "USLRD",
                "transport_mode": "road",
            },
            "origin CN, exported from MX (diversion hub) to USLRD by road, "
            "MX has no production capacity for the controlled goods",
            id="land-border",
        ),
        pytest.param(
            {
                "origin_country": "TH",
                "export_country": "TH",
                "export_lacks_capacity": 1.0,
                "port_of_discharge": "USLAX",
                "transport_mode": "sea",
            },
            "origin TH (diversion hub) to USLAX by sea, TH has no production capacity for the controlled goods",
            id="declared-hub-origin",
        ),
        pytest.param(
            {
                "origin_country": "CN",
                "export_country": "KR",
                "transshipment_ports": "KRPUS",
                "export_lacks_capacity": 1.0,
                "port_of_discharge": None,
                "transport_mode": None,
            },
            "origin CN, exported from KR, via KRPUS, KR has no production capacity for the controlled goods",
            id="not-a-hub-transit",
        ),
        pytest.param(
            {
                "origin_country": "DE",
                "export_country": "DE",
                "transshipment_ports": "NLRTM",
                "export_lacks_capacity": 0.0,
                "port_of_discharge": "USHOU",
                "transport_mode": "sea",
            },
            "origin DE, via NLRTM to USHOU by sea",
            id="transshipped",
        ),
        pytest.param(
            {
                "origin_country": "VN",
                "export_country": "VN",
                "port_of_loading": "THLCH",
                "export_lacks_capacity": 0.0,
                "port_of_discharge": "USLAX",
                "transport_mode": "sea",
            },
            "origin VN, loaded at THLCH (diversion hub) to USLAX by sea",
            id="loaded-in-a-hub",
        ),
    ],
)
def test_a_hub_transit_or_transshipment_is_cited(row, phrase):
    assert route_phrase(row, CONTEXT) == phrase


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(
            {
                "origin_country": "BO",
                "export_country": "BO",
                "transshipment_ports": pd.NA,
                "export_lacks_capacity": 0.0,
                "port_of_discharge": "USHOU",
                "transport_mode": "sea",
            },
            id="direct-from-a-producer",
        ),
        pytest.param(
            {
                "origin_country": "DE",
                "export_country": "DE",
                "port_of_loading": "DEHAM",
                "export_lacks_capacity": 1.0,
                "port_of_discharge": "USNYC",
                "transport_mode": "sea",
            },
            id="direct-from-a-non-producer-that-is-no-hub",
        ),
        pytest.param({}, id="nothing-known"),
    ],
)
def test_a_plain_direct_route_is_no_reason(row):
    assert route_phrase(row, CONTEXT) == ""


# ----------------------------------------------------------------------------- weight


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        pytest.param(
            {"hs_code": "830629", "kg_per_package": 1000.0, "kg_per_container": 22000.0},
            "1,000 kg per package, 22.0 t per container: heavy for HS 830629, statuettes and ornaments of "
            "base metal, which are light for their volume",
            id="ingot-packed-statuettes",
        ),
        pytest.param(
            {"hs_code": "691310", "kg_per_package": 12.0, "kg_per_container": 18500.0},
            "18.5 t per container: heavy for HS 691310, ceramic ornaments (porcelain), which are light for their volume",
            id="heavy-container-only",
        ),
        pytest.param(
            {"hs_code": "830629", "kg_per_package": 75.0, "kg_per_container": NAN},
            "75 kg per package: heavy for HS 830629, statuettes and ornaments of base metal, which are light for their volume",
            id="repacked-heavier",
        ),
    ],
)
def test_heavy_packing_for_light_goods_is_cited(row, phrase):
    assert weight_phrase(row, CONTEXT) == phrase


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({"hs_code": "830629", "kg_per_package": 15.0, "kg_per_container": 4500.0}, id="ornaments-packed-as-such"),
        pytest.param({"hs_code": "790111", "kg_per_package": 1000.0, "kg_per_container": 24000.0}, id="ingots-are-heavy"),
        pytest.param({"hs_code": "830629", "kg_per_package": NAN, "kg_per_container": NAN}, id="unknown"),
    ],
)
def test_packing_that_fits_the_declared_goods_is_no_reason(row):
    assert weight_phrase(row, CONTEXT) == ""


# ----------------------------------------------------------------------------- declared goods, timing


def test_a_cover_code_is_cited_and_other_codes_are_not():
    assert declared_goods_phrase(
        {"hs_code": "7901110000", "is_cover_code": 1.0, "is_target_code": 0.0, "cover_family": "metal_ingot"}, CONTEXT
    ) == ("declared as HS 790111, a known cover code (metal ingot)")
    assert (
        declared_goods_phrase(
            {"hs_code": "284690", "is_cover_code": 0.0, "is_target_code": 1.0, "declared_target": "rare_earth"}, CONTEXT
        )
        == ""
    )
    assert declared_goods_phrase({"hs_code": "940360", "is_cover_code": 0.0, "is_target_code": 0.0}, CONTEXT) == ""


DAYS = {"days_since_sb_licensing": 122.0, "days_since_us_ban": 43.0, "days_since_re_licensing": -79.0}


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        pytest.param(
            {**DAYS, "suspected_commodity": "antimony"},
            "declared 43 days after the Chinese Ga/Ge/Sb export ban to the US (2024-12-03)",
            id="antimony",
        ),
        pytest.param(
            {
                "days_since_sb_licensing": 1500.0,
                "days_since_us_ban": 1420.0,
                "days_since_re_licensing": 1300.0,
                "suspected_commodity": "rare_earth",
            },
            "declared 1,300 days after the Chinese rare-earth licensing (2025-04-04)",
            id="rare-earth",
        ),
    ],
)
def test_timing_after_the_suspected_goods_controls_is_cited(row, phrase):
    assert timing_phrase(row, CONTEXT) == phrase


@pytest.mark.parametrize(
    "row",
    [
        pytest.param({**DAYS, "suspected_commodity": "rare_earth"}, id="before-the-rare-earth-controls"),
        pytest.param({**DAYS, "suspected_commodity": "none"}, id="no-suspected-commodity"),
        pytest.param(DAYS, id="no-suspicion-column"),
        pytest.param({"days_since_us_ban": NAN, "suspected_commodity": "antimony"}, id="no-date"),
    ],
)
def test_timing_unrelated_to_the_suspected_goods_is_no_reason(row):
    assert timing_phrase(row, CONTEXT) == ""


# ----------------------------------------------------------------------------- party history


def party(**values) -> dict:
    return {"declarant_id": "D77", **{f"declarant_id_{k}": v for k, v in values.items()}}


DECLARANT = party_phrase("declarant")


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        pytest.param(
            party(lines_before=12.0, days_since_first=400.0, outcomes_known=5.0, misdeclared_rate=(3 + 5 * 0.04) / (5 + 5)),
            "declarant D77: 3 of 5 inspected lines misdeclared (all parties: 4.0%)",
            id="rate-above-prior",
        ),
        pytest.param(
            party(lines_before=0.0, days_since_first=NAN, outcomes_known=0.0, misdeclared_rate=0.04),
            "declarant D77: never seen before",
            id="never-seen",
        ),
        pytest.param(
            party(lines_before=6.0, days_since_first=12.0, outcomes_known=1.0, misdeclared_rate=(1 + 5 * 0.04) / (1 + 5)),
            "declarant D77: first seen 12 days ago, 1 of 1 inspected lines misdeclared (all parties: 4.0%)",
            id="new-and-caught",
        ),
        pytest.param({"declarant_id": None}, "declarant not declared", id="missing-party"),
    ],
)
def test_suspicious_party_history_is_cited(row, phrase):
    assert DECLARANT(row, CONTEXT) == phrase


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(
            party(lines_before=5252.0, days_since_first=900.0, outcomes_known=310.0, misdeclared_rate=(9 + 5 * 0.04) / (310 + 5)),
            id="busy-with-a-low-rate",
        ),
        pytest.param(
            party(lines_before=40.0, days_since_first=500.0, outcomes_known=25.0, misdeclared_rate=(1 + 5 * 0.04) / (25 + 5)),
            id="rate-at-the-prior",
        ),
        pytest.param(
            party(lines_before=608.0, days_since_first=103.0, outcomes_known=0.0, misdeclared_rate=0.04),
            id="routine-volume-and-tenure",
        ),
        pytest.param(
            party(lines_before=3.0, days_since_first=NAN, outcomes_known=NAN, misdeclared_rate=NAN), id="tenure-unknown"
        ),
        pytest.param({"declarant_id": "D77"}, id="history-columns-removed"),
    ],
)
def test_benign_party_history_is_no_reason(row):
    assert DECLARANT(row, CONTEXT) == ""


def test_short_tenure_is_no_reason_when_the_store_coverage_is_unknown():
    no_coverage = PhraseContext(
        CONTEXT.hubs,
        CONTEXT.price_bands,
        CONTEXT.measures,
        CONTEXT.measure_labels,
        CONTEXT.measure_commodities,
        prior_rate=0.04,
        tenure_unknown_days=0,
    )
    row = party(lines_before=6.0, days_since_first=12.0, outcomes_known=0.0, misdeclared_rate=0.04)

    assert DECLARANT(row, no_coverage) == ""
    assert DECLARANT(party(lines_before=0.0), no_coverage) == "declarant D77: never seen before"


def test_no_rate_is_cited_without_a_prior():
    no_prior = PhraseContext(
        CONTEXT.hubs, CONTEXT.price_bands, CONTEXT.measures, CONTEXT.measure_labels, CONTEXT.measure_commodities
    )

    assert DECLARANT(party(lines_before=9.0, outcomes_known=5.0, misdeclared_rate=0.9), no_prior) == ""


# ----------------------------------------------------------------------------- switch, flow, description


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        pytest.param(
            {"consignee_id": "C9", "consignee_switched_to_hub": 1.0, "consignee_direct_cn_target_before": 1.0},
            "consignee C9 imported controlled goods directly from China before the controls, now via a hub",
            id="switched",
        ),
        pytest.param(
            {"consignee_id": "C9", "consignee_switched_to_hub": 0.0, "consignee_direct_cn_target_before": 1.0},
            "consignee C9 imported controlled goods directly from China before the controls",
            id="direct-before",
        ),
        pytest.param(
            {"consignee_id": "C9", "consignee_switched_to_hub": 0.0, "consignee_direct_cn_target_before": 0.0}, "", id="no-record"
        ),
        pytest.param({"consignee_id": "C9"}, "", id="unknown"),
    ],
)
def test_switch_phrase(row, phrase):
    assert switch_phrase(row, CONTEXT) == phrase


FLOW = {"export_country": "TH", "port_of_discharge": "USLAX", "hs_code": "790111"}


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        pytest.param(
            {**FLOW, "flow_lines_trailing": 14.0, "flow_surge_ratio": 9.3},
            "14 lines TH -> USLAX of HS 7901 in the last 28 days, 9.3x the rate of the 182 days before",
            id="surge",
        ),
        pytest.param({**FLOW, "flow_lines_trailing": 40.0, "flow_surge_ratio": 1.4}, "", id="steady-flow"),
        pytest.param({**FLOW, "flow_lines_trailing": 1.0, "flow_surge_ratio": 6.5}, "", id="one-line-on-a-new-flow"),
        pytest.param({**FLOW, "flow_lines_trailing": 3.0, "flow_surge_ratio": 2.0}, "", id="at-the-factor"),
        pytest.param({**FLOW, "flow_lines_trailing": 5.0, "flow_surge_ratio": 2.04}, "", id="prints-as-the-factor"),
        pytest.param(
            {**FLOW, "flow_lines_trailing": 3.0, "flow_surge_ratio": 2.06},
            "3 lines TH -> USLAX of HS 7901 in the last 28 days, 2.1x the rate of the 182 days before",
            id="just-beyond",
        ),
        pytest.param(FLOW, "", id="unknown"),
    ],
)
def test_flow_phrase(row, phrase):
    assert flow_phrase(row, CONTEXT) == phrase


@pytest.mark.parametrize(
    ("row", "phrase"),
    [
        pytest.param(
            {"description": "antimony ingots", "desc_mentions_target": 1.0},
            'description "antimony ingots" names a controlled good',
            id="names-a-controlled-good",
        ),
        pytest.param(
            {"description": "ceramic vases", "hs_code": "790111", "desc_mentions_target": 0.0, "desc_hs_mismatch": 1.0},
            'description "ceramic vases" does not match HS 7901',
            id="mismatch",
        ),
        pytest.param(
            {"description": "metal parts", "desc_mentions_target": 0.0, "desc_hs_mismatch": 0.0, "desc_is_vague": 1.0},
            'description "metal parts" is vague',
            id="vague",
        ),
        pytest.param({"description": None}, "no goods description", id="missing"),
        pytest.param(
            {"description": "zinc ingots", "desc_mentions_target": 0.0, "desc_hs_mismatch": 0.0, "desc_is_vague": 0.0},
            "",
            id="plain-and-matching",
        ),
    ],
)
def test_description_phrase(row, phrase):
    assert description_phrase(row, CONTEXT) == phrase


# ----------------------------------------------------------------------------- grouping and choice


def test_group_contributions_sums_features_per_group_and_drops_the_bias():
    features = ["value_per_kg", "via_hub", "band_dist_antimony", "n_transshipments"]
    groups = {"value_per_kg": "price", "via_hub": "route", "band_dist_antimony": "price", "n_transshipments": "route"}
    contributions = np.array([[0.5, 0.25, 1.0, -0.125, 9.0], [-1.0, 0.0, 0.5, 2.0, -9.0]])  # last column: bias

    grouped = group_contributions(contributions, features, groups)

    assert list(grouped.columns) == ["price", "route"]
    assert grouped.to_numpy().tolist() == [[1.5, 0.125], [-0.5, 2.0]]


def test_top_groups_orders_every_positive_speakable_group():
    grouped = pd.DataFrame({"price": [2.0, -1.0], "route": [1.5, 0.2], "other": [5.0, 5.0], "weight": [0.1, 0.0]})

    assert top_groups(grouped) == [["price", "route", "weight"], ["route"]]
    assert top_groups(grouped, 1) == [["price"], ["route"]]


SUSPICIOUS = {
    **priced(48.17, "790111", np.log10(48.17 / 3.3), antimony=0.0, gallium=-0.66, rare_earth_light=0.5),
    "origin_country": "CN",
    "export_country": "TH",
    "export_lacks_capacity": 1.0,
    "port_of_discharge": "USLAX",
    "transport_mode": "sea",
    "kg_per_package": 1000.0,
    "kg_per_container": 20000.0,
    "is_cover_code": 1.0,
    "cover_family": "metal_ingot",
    **DAYS,
    "suspected_commodity": "antimony",
}


def test_write_reasons_orders_positive_groups_and_keeps_three():
    derived = pd.DataFrame([SUSPICIOUS])
    grouped = pd.DataFrame({"price": [2.0], "route": [1.5], "weight": [0.1], "declared_goods": [0.7], "timing": [0.4]})

    assert write_reasons(derived, grouped, CONTEXT) == [
        "declared 48.17 USD/kg, 14.6x above the 2.6-3.3 USD/kg band of HS 790111; in the price band of antimony"
        " 19-62 USD/kg | origin CN, exported from TH (diversion hub) to USLAX by sea, TH has no production capacity"
        " for the controlled goods | declared as HS 790111, a known cover code (metal ingot)"
    ]


def test_a_group_with_no_suspicious_fact_gives_its_place_to_the_next():
    """The observed case: an antimony line under an antimony code, priced as antimony, busy declarant."""
    honest = {
        **priced(48.17, "811010", 0.0, target=1.0, antimony=0.0),
        "origin_country": "BO",
        "export_country": "BO",
        "export_lacks_capacity": 0.0,
        "port_of_discharge": "USHOU",
        "transport_mode": "sea",
        **party(lines_before=5252.0, days_since_first=900.0, outcomes_known=310.0, misdeclared_rate=(12 + 5 * 0.04) / (310 + 5)),
        "description": "antimony ingots",
        "desc_mentions_target": 1.0,
        "suspected_commodity": "antimony",
        **DAYS,
    }
    grouped = pd.DataFrame(
        {"declarant_history": [3.0], "price": [2.0], "route": [1.0], "description": [0.5], "timing": [0.2], "weight": [-0.3]}
    )

    assert write_reasons(pd.DataFrame([honest]), grouped, CONTEXT) == [
        'description "antimony ingots" names a controlled good'
        " | declared 43 days after the Chinese Ga/Ge/Sb export ban to the US (2024-12-03)"
    ]


def test_a_line_with_no_fact_to_state_says_so():
    derived = pd.DataFrame([priced(3.0, "790111", 0.0), priced(3.0, "790111", 0.0)])
    grouped = pd.DataFrame({"price": [1.5, -0.5], "route": [0.2, 0.0]})

    assert write_reasons(derived, grouped, CONTEXT) == [NO_STATED_FACT, NO_STATED_FACT]


# ----------------------------------------------------------------------------- context from a pipeline


def test_the_context_reads_the_fitted_pipeline(valid_labelled):
    pipeline = build_feature_pipeline(tenure_unknown_days=60).fit(valid_labelled.head(2000))

    context = PhraseContext.from_pipeline(pipeline)

    history = pipeline.named_steps["history"]
    assert context.prior_rate == history.global_rate_ and 0 < context.prior_rate < 1
    assert context.prior_strength == history.prior_strength
    assert context.tenure_unknown_days == 60
    assert context.hs_bands["790111"] == [2.6, 3.3]
    # Packing limits of goods light for their volume come from features/data/hs_codes.csv.
    codes = load_reference().hs_codes.dropna(subset=["max_kg_per_package"])
    assert context.light_goods == {
        row.hs_prefix: [row.description, row.max_kg_per_package, row.max_kg_per_container] for row in codes.itertuples()
    }
    assert "830629" in context.light_goods
    assert (context.trailing_days, context.baseline_days) == (history.trailing_days, history.baseline_days)


def test_an_old_spec_without_tenure_censoring_still_gives_a_context(valid_labelled):
    spec = pipeline_to_spec(build_feature_pipeline().fit(valid_labelled.head(2000)))
    for step in spec:
        step["params"].pop("tenure_unknown_days", None)
        step["fitted"].pop("light_goods_", None)

    context = PhraseContext.from_pipeline(pipeline_from_spec(spec))

    assert context.tenure_unknown_days == 0 and context.prior_rate is not None
    assert context.light_goods == {}  # no packing limits in the old state: no weight reason
