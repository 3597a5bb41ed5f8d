"""What the case page draws: the declared code's band (or its typical price), the goods' bands, the route."""

from __future__ import annotations

from features.reference import load_reference
from serve.triage.db import Case
from serve.triage.pictures import PictureReference, price_bands, route_stops


def case(**values) -> Case:
    base = {
        "hs_code": "7901110000",
        "reasons": None,
        "origin_country": "CN",
        "export_country": "TH",
        "port_of_loading": "THLCH",
        "transshipment_ports": "SGSIN;HKHKG",
        "port_of_discharge": "USLAX",
    }
    return Case(**{**base, **values})


def pictures() -> PictureReference:
    return PictureReference.from_tables(load_reference())


def test_reference_tables_give_the_declared_band_and_the_cover_codes():
    reference = load_reference()
    assert reference.declared_band("7901110000") == ("790111", 2.6, 3.3)
    assert reference.declared_band("7205100000") == ("7205", 1.0, 3.0)  # only the heading has a band
    assert reference.declared_band("8112990000") is None  # a cover code without a reference price
    covers = reference.cover_codes
    assert covers["830629"] == "statuettes and ornaments of base metal" and "282580" not in covers


def test_price_bands_start_with_the_declared_code_then_every_controlled_good():
    reference = load_reference()
    bands = price_bands(case(), PictureReference.from_tables(reference))
    assert [(b.name, b.low, b.high, b.kind) for b in bands[:2]] == [
        ("HS 790111 (declared)", 2.6, 3.3, "declared"),
        ("antimony", 19.0, 62.0, "good"),
    ]
    assert [b.name for b in bands[1:]] == [name.replace("_", " ") for name in reference.price_bands.index]


def test_a_code_without_a_band_is_drawn_at_the_typical_price_its_reason_quotes():
    reasons = "declared 52.10 USD/kg, 18.0x above what HS 8112 typically declares (1,202.90 USD/kg) | origin CN"
    bands = price_bands(case(hs_code="8112990000", reasons=reasons), pictures())
    assert (bands[0].name, bands[0].low, bands[0].high) == ("HS 8112 typical", 1202.9, 1202.9)
    assert price_bands(case(hs_code="8112990000"), pictures())[0].name == "antimony"  # nothing quoted: no band


def test_route_stops_in_order_with_hubs():
    stops = route_stops(case(), pictures())
    assert [(s.label, s.role, s.hub) for s in stops] == [
        ("CN", "origin", False),
        ("TH", "export", True),
        ("THLCH", "loading", True),
        ("SGSIN", "transshipment", False),
        ("HKHKG", "transshipment", False),
        ("USLAX", "discharge", False),
    ]
    direct = route_stops(case(export_country="CN", port_of_loading="CNSHA", transshipment_ports=None), pictures())
    assert [s.label for s in direct] == ["CN", "CNSHA", "USLAX"]
