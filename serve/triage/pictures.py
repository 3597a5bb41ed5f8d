"""The case page's pictures: price against price bands, the route, the parties' earlier lines.

Pure functions from a case (and the reference tables) to chart inputs, then to SVG
(:mod:`serve.charts`); the page template only places them.
"""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from features.reference import ReferenceTables
from models.reasons import typical_price
from serve.charts import Band, Stop, TimelinePoint, price_chart, route_diagram, timeline
from serve.triage.cases import CaseDetail, HistoryLine
from serve.triage.db import Case
from serve.triage.scoring import split_reasons


@dataclass(frozen=True)
class PictureReference:
    """What the pictures read from the reference tables, computed once when the service starts.

    Attributes
    ----------
    tables : ReferenceTables
        The tables (the declared codes' bands are looked up in them per case).
    goods : tuple of Band
        Each controlled good's price band (``target_goods.csv``, widest over forms and years).
    hubs : frozenset of str
        Diversion hubs (``countries.csv``).
    """

    tables: ReferenceTables
    goods: tuple[Band, ...]
    hubs: frozenset[str]

    @classmethod
    def from_tables(cls, tables: ReferenceTables) -> PictureReference:
        goods = tuple(
            Band(str(name).replace("_", " "), float(row["usd_per_kg_low"]), float(row["usd_per_kg_high"]))
            for name, row in tables.price_bands.iterrows()
        )
        return cls(tables=tables, goods=goods, hubs=tables.diversion_hubs)


def price_bands(case: Case, reference: PictureReference) -> list[Band]:
    """The declared code's band first, then each controlled good's band.

    The declared code's band comes from the reference table (``hs_codes.csv``); a code without one
    is drawn at the typical value its price reason quotes (the model's fitted median), or not at all.
    """
    bands = []
    declared = reference.tables.declared_band(case.hs_code)
    if declared is not None:
        prefix, low, high = declared
        bands.append(Band(f"HS {prefix} (declared)", low, high, kind="declared"))
    else:
        typical = typical_price(split_reasons(case.reasons))
        if typical is not None:
            bands.append(Band(f"HS {typical[0]} typical", typical[1], typical[1], kind="declared"))
    return bands + list(reference.goods)


def route_stops(case: Case, reference: PictureReference) -> list[Stop]:
    """Origin country, export country (when another), then the ports in order; hubs marked."""
    hubs = reference.hubs
    stops = [Stop(case.origin_country, "origin", case.origin_country, case.origin_country in hubs)]
    if case.export_country != case.origin_country:
        stops.append(Stop(case.export_country, "export", case.export_country, case.export_country in hubs))
    ports = [(case.port_of_loading, "loading")]
    ports += [(port, "transshipment") for port in (case.transshipment_ports or "").split(";")]
    ports += [(case.port_of_discharge, "discharge")]
    for port, role in ports:
        if port:
            stops.append(Stop(port, role, port[:2], port[:2] in hubs))
    return stops


def history_points(lines: list[HistoryLine]) -> list[TimelinePoint]:
    """A party's earlier lines as timeline points; a link only to cases the viewer may open."""
    return [
        TimelinePoint(
            day=line.case.declared_at,
            risk=float(line.case.risk_score),
            channel=line.case.channel,
            result=line.result or "none",
            label=f"{line.case.declaration_id}/{line.case.line_no} HS {line.case.hs_code}",
            href=f"/cases/{line.case.id}" if line.visible else None,
        )
        for line in lines
    ]


def case_pictures(detail: CaseDetail, reference: PictureReference) -> dict[str, Markup | bool]:
    """The SVG charts of a case page, by name (``price``, ``route``, ``shipper``, ``consignee``), and
    ``declared_band``: whether the price chart has a band for the declared code (for its legend)."""
    case = detail.case
    bands = price_bands(case, reference)
    return {
        "price": price_chart(float(case.value_per_kg), bands, chart_id="price"),
        "declared_band": any(band.kind == "declared" for band in bands),
        "route": route_diagram(route_stops(case, reference), chart_id="route"),
        "shipper": timeline(
            history_points(detail.shipper_history), chart_id="shipper-timeline", party=f"shipper {case.shipper_id or ''}".strip()
        ),
        "consignee": timeline(
            history_points(detail.consignee_history),
            chart_id="consignee-timeline",
            party=f"consignee {case.consignee_id or ''}".strip(),
        ),
    }
