"""models/reasons.py: the exact phrases an inspector reads, and contribution grouping."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.reasons import (
    PhraseContext,
    declared_goods_phrase,
    group_contributions,
    price_phrase,
    route_phrase,
    timing_phrase,
    weight_phrase,
    write_reasons,
)

CONTEXT = PhraseContext(
    hubs=frozenset({"MX", "TH"}),
    price_bands={"antimony": [19.0, 62.0], "gallium": [220.0, 1450.0], "rare_earth_light": [20.0, 85.0]},
    measures={"sb_licensing": "2024-09-15", "us_ban": "2024-12-03", "re_licensing": "2025-04-04"},
    measure_labels={"sb_licensing": "Chinese antimony export licensing",
                    "us_ban": "Chinese Ga/Ge/Sb export ban to the US",
                    "re_licensing": "Chinese rare-earth licensing"},
    measure_commodities={"sb_licensing": ["antimony"], "us_ban": ["gallium", "germanium", "antimony"],
                         "re_licensing": ["rare_earth"]},
)
NAN = float("nan")


@pytest.mark.parametrize(("row", "phrase"), [
    pytest.param({"value_per_kg": 52.1, "hs_code": "790111", "hs_typical_usd_per_kg": 2.9, "band_dist_antimony": 0.0,
                  "band_dist_gallium": -0.6, "band_dist_rare_earth_light": 0.0},
                 "declared 52.10 USD/kg; HS 7901 typically 2.90 USD/kg; "
                 "in the price band of antimony 19-62 USD/kg, rare earth light 20-85 USD/kg",
                 id="inside-two-bands"),
    pytest.param({"value_per_kg": 1234.5, "hs_code": "830629", "hs_typical_usd_per_kg": 8.25,
                  "band_dist_antimony": 1.3, "band_dist_gallium": 0.0, "band_dist_rare_earth_light": 1.2},
                 "declared 1,234.50 USD/kg; HS 8306 typically 8.25 USD/kg; in the price band of gallium 220-1450 USD/kg",
                 id="gallium-priced-statuette"),
    pytest.param({"value_per_kg": 3.0, "hs_code": "790111", "hs_typical_usd_per_kg": 3.0, "band_dist_antimony": -0.8,
                  "band_dist_gallium": -1.9, "band_dist_rare_earth_light": -0.8},
                 "declared 3.00 USD/kg; HS 7901 typically 3.00 USD/kg", id="no-band"),
    pytest.param({"value_per_kg": 0.0, "hs_code": "790111"}, "declared value missing or zero", id="zero-value"),
    pytest.param({"value_per_kg": NAN, "hs_code": "790111"}, "declared value missing or zero", id="missing-value"),
])
def test_price_phrase(row, phrase):
    assert price_phrase(row, CONTEXT) == phrase


@pytest.mark.parametrize(("row", "phrase"), [
    pytest.param({"origin_country": "CN", "export_country": "TH", "transshipment_ports": "CNSHA;THLCH",
                  "export_lacks_capacity": 1.0, "port_of_discharge": "USLAX", "transport_mode": "sea"},
                 "origin CN, exported from TH (diversion hub), via CNSHA;THLCH to USLAX by sea, "
                 "TH has no production capacity for the controlled goods", id="via-hub"),
    pytest.param({"origin_country": "CN", "export_country": "MX", "transshipment_ports": None,
                  "export_lacks_capacity": 1.0, "port_of_discharge": "USLRD", "transport_mode": "road"},
                 "origin CN, exported from MX (diversion hub) to USLRD by road, "
                 "MX has no production capacity for the controlled goods", id="land-border"),
    pytest.param({"origin_country": "DE", "export_country": "DE", "transshipment_ports": pd.NA,
                  "export_lacks_capacity": 0.0, "port_of_discharge": "USHOU", "transport_mode": "sea"},
                 "origin DE to USHOU by sea", id="direct"),
    pytest.param({"origin_country": "CN", "export_country": "KR", "transshipment_ports": "KRPUS",
                  "export_lacks_capacity": 1.0, "port_of_discharge": None, "transport_mode": None},
                 "origin CN, exported from KR, via KRPUS", id="not-a-hub-no-tail"),
    pytest.param({}, "origin ?", id="nothing-known"),
])
def test_route_phrase(row, phrase):
    assert route_phrase(row, CONTEXT) == phrase


@pytest.mark.parametrize(("row", "phrase"), [
    pytest.param({"kg_per_package": 1000.0, "kg_per_container": 20000.0, "gross_weight_kg": 20000.0},
                 "1,000 kg per package, 20.0 t per container", id="ingots"),
    pytest.param({"kg_per_package": 22.4, "kg_per_container": NAN, "gross_weight_kg": 448.0},
                 "22 kg per package", id="no-container"),
    pytest.param({"kg_per_package": NAN, "kg_per_container": NAN, "gross_weight_kg": 1234.6},
                 "gross weight 1,235 kg", id="only-gross"),
])
def test_weight_phrase(row, phrase):
    assert weight_phrase(row, CONTEXT) == phrase


@pytest.mark.parametrize(("row", "phrase"), [
    pytest.param({"hs_code": "7901110000", "is_cover_code": 1.0, "is_target_code": 0.0, "cover_family": "metal_ingot"},
                 "declared as HS 790111, a known cover code (metal ingot)", id="cover"),
    pytest.param({"hs_code": "284690", "is_cover_code": 0.0, "is_target_code": 1.0, "declared_target": "rare_earth"},
                 "declared as HS 284690, a controlled rare earth code", id="target"),
    pytest.param({"hs_code": "940360", "is_cover_code": 0.0, "is_target_code": 0.0},
                 "declared as HS 940360", id="other"),
])
def test_declared_goods_phrase(row, phrase):
    assert declared_goods_phrase(row, CONTEXT) == phrase


DAYS = {"days_since_sb_licensing": 122.0, "days_since_us_ban": 43.0, "days_since_re_licensing": -79.0}


@pytest.mark.parametrize(("row", "phrase"), [
    pytest.param({**DAYS, "suspected_commodity": "antimony"},
                 "declared 43 days after the Chinese Ga/Ge/Sb export ban to the US (2024-12-03)", id="antimony"),
    pytest.param({**DAYS, "suspected_commodity": "none"},
                 "declared 43 days after the Chinese Ga/Ge/Sb export ban to the US (2024-12-03)", id="no-suspicion"),
    pytest.param({**DAYS, "suspected_commodity": "rare_earth"}, "declared before the export controls",
                 id="before-the-rare-earth-controls"),
    pytest.param({"days_since_sb_licensing": 1500.0, "days_since_us_ban": 1420.0, "days_since_re_licensing": 1300.0},
                 "declared 1,300 days after the Chinese rare-earth licensing (2025-04-04)", id="latest-measure"),
    pytest.param({"days_since_sb_licensing": NAN, "days_since_us_ban": NAN, "days_since_re_licensing": NAN},
                 "declared before the export controls", id="no-date"),
])
def test_timing_phrase(row, phrase):
    assert timing_phrase(row, CONTEXT) == phrase


def test_group_contributions_sums_features_per_group_and_drops_the_bias():
    features = ["value_per_kg", "via_hub", "band_dist_antimony", "n_transshipments"]
    groups = {"value_per_kg": "price", "via_hub": "route", "band_dist_antimony": "price", "n_transshipments": "route"}
    contributions = np.array([[0.5, 0.25, 1.0, -0.125, 9.0],
                              [-1.0, 0.0, 0.5, 2.0, -9.0]])  # last column: bias

    grouped = group_contributions(contributions, features, groups)

    assert list(grouped.columns) == ["price", "route"]
    assert grouped.to_numpy().tolist() == [[1.5, 0.125], [-0.5, 2.0]]


def test_write_reasons_orders_positive_groups_and_keeps_three():
    derived = pd.DataFrame([{
        "value_per_kg": 52.1, "hs_code": "790111", "hs_typical_usd_per_kg": 2.9, "band_dist_antimony": 0.0,
        "band_dist_gallium": -0.6, "band_dist_rare_earth_light": 0.5, "origin_country": "CN", "export_country": "TH",
        "export_lacks_capacity": 1.0, "port_of_discharge": "USLAX", "transport_mode": "sea",
        "kg_per_package": 1000.0, "kg_per_container": 20000.0, "gross_weight_kg": 20000.0,
        "is_cover_code": 1.0, "is_target_code": 0.0, "cover_family": "metal_ingot", **DAYS,
    }, {
        "value_per_kg": 3.0, "hs_code": "790111", "hs_typical_usd_per_kg": 3.0, "origin_country": "DE",
        "export_country": "DE", "kg_per_package": NAN, "kg_per_container": NAN, "gross_weight_kg": 500.0, **DAYS,
    }])
    grouped = pd.DataFrame({"price": [2.0, -1.0], "route": [1.5, -0.2], "weight": [0.1, 0.3],
                            "declared_goods": [0.7, 0.0], "timing": [-0.4, -0.1]})

    reasons = write_reasons(derived, grouped, CONTEXT)

    assert reasons == [
        "declared 52.10 USD/kg; HS 7901 typically 2.90 USD/kg; in the price band of antimony 19-62 USD/kg"
        " | origin CN, exported from TH (diversion hub) to USLAX by sea, TH has no production capacity for the"
        " controlled goods"
        " | declared as HS 790111, a known cover code (metal ingot)",
        "gross weight 500 kg",
    ]


def test_a_line_with_no_positive_contribution_gets_no_reason():
    derived = pd.DataFrame([{"value_per_kg": 3.0, "hs_code": "790111"}])
    grouped = pd.DataFrame({"price": [-0.5], "route": [0.0]})

    assert write_reasons(derived, grouped, CONTEXT) == [""]
