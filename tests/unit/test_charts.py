"""SVG charts: scales, intervals, and that each drawn element carries and places the number it draws."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serve.charts import (
    Band,
    LogScale,
    Rate,
    Stop,
    TimelinePoint,
    capacity_chart,
    hbar_chart,
    heatmap,
    histogram_compare,
    log_ticks,
    nice_step,
    price_chart,
    rate_chart,
    route_diagram,
    stacked_columns,
    timeline,
    wilson_interval,
)

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup) -> ET.Element:
    """The chart as XML (it must be well-formed to be inline SVG)."""
    return ET.fromstring(str(markup))


def find(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{SVG}{tag}") if cls in e.get("class", "").split()]


def test_wilson_interval_matches_the_textbook_value():
    # 8 of 10 at z = 1.96: 0.4902 to 0.9433 (Wilson 1927; e.g. Agresti & Coull 1998, table 1).
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 0) is None
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    # Rounding put these bounds past the rate (2.8e-17 and 0.9999999999999999) before they were clamped.
    assert wilson_interval(0, 11)[0] == 0.0 and wilson_interval(6, 6)[1] == 1.0


@given(st.integers(0, 500), st.integers(1, 500))
def test_wilson_interval_holds_the_rate_inside_0_1(hits, extra):
    trials = hits + extra
    low, high = wilson_interval(hits, trials)
    assert 0.0 <= low <= hits / trials <= high <= 1.0


def test_log_ticks_and_nice_steps():
    assert log_ticks(0.5, 60) == [0.5, 1, 2, 5, 10, 20, 50]
    assert log_ticks(0.01, 10_000) == [0.01, 0.1, 1, 10, 100, 1000, 10000]  # many decades: decades only
    assert [nice_step(span) for span in (7, 45, 1000, 0.3)] == [2, 10, 200, 0.1]
    scale = LogScale(1, 100, 0, 200)
    assert (scale(1), scale(10), scale(100)) == (0, 100, 200)


def test_price_chart_places_the_value_inside_exactly_the_bands_that_hold_it():
    bands = [Band("HS 790111 (declared)", 2.6, 3.3, "declared"), Band("antimony", 19, 62), Band("gallium", 220, 1450)]
    root = parse(price_chart(48.17, bands))
    assert root.get("data-value-per-kg") == "48.17" and root.get("role") == "img"
    rects = find(root, "rect", "band")
    assert [(r.get("data-name"), r.get("data-low"), r.get("data-high")) for r in rects] == [
        ("HS 790111 (declared)", "2.6", "3.3"),
        ("antimony", "19", "62"),
        ("gallium", "220", "1450"),
    ]
    line = float(find(root, "line", "declared-value")[0].get("x1"))
    inside = [float(r.get("x")) <= line <= float(r.get("x")) + float(r.get("width")) for r in rects]
    assert inside == [False, True, False]
    desc = root.find(f"{SVG}desc").text
    assert desc.startswith("Declared 48.17 USD/kg.") and desc.endswith("The declared value lies within: antimony.")


def test_route_diagram_marks_hubs_in_order():
    stops = [
        Stop("CN", "origin", "CN"),
        Stop("TH", "export", "TH", hub=True),
        Stop("THLCH", "loading", "TH", hub=True),
        Stop("USLAX", "discharge", "US"),
    ]
    root = parse(route_diagram(stops))
    groups = find(root, "g", "route-stop")
    assert [(g.get("data-label"), g.get("data-hub")) for g in groups] == [
        ("CN", "false"),
        ("TH", "true"),
        ("THLCH", "true"),
        ("USLAX", "false"),
    ]
    assert len(find(root, "circle", "hub")) == 2 and len(find(root, "line", "leg")) == 3
    xs = [float(g.find(f"{SVG}circle").get("cx")) for g in groups]
    assert xs == sorted(xs)
    assert root.find(f"{SVG}desc").text.endswith("2 diversion hubs on the route.")


def test_timeline_draws_outcomes_as_shapes_and_risk_as_height():
    points = [
        TimelinePoint(date(2026, 1, 5), 0.9, "red", "confirmed", "A/1", "/cases/1"),
        TimelinePoint(date(2026, 2, 5), 0.5, "yellow", "clean", "B/1"),
        TimelinePoint(date(2026, 3, 5), 0.1, "green", "none", "C/1"),
    ]
    root = parse(timeline(points, party="shipper S1"))
    marks = find(root, "g", "point")
    assert [(m.get("data-day"), m.get("data-result")) for m in marks] == [
        ("2026-01-05", "confirmed"),
        ("2026-02-05", "clean"),
        ("2026-03-05", "none"),
    ]
    assert marks[0].find(f"{SVG}path") is not None  # confirmed: a diamond
    assert [m.find(f"{SVG}circle").get("r") for m in marks[1:]] == ["4.5", "2.5"]
    heights = [float(marks[1].find(f"{SVG}circle").get("cy")), float(marks[2].find(f"{SVG}circle").get("cy"))]
    assert heights[0] < heights[1]  # riskier is higher on the page
    assert root.find(f"{SVG}a").get("href") == "/cases/1"
    assert root.find(f"{SVG}desc").text == (
        "3 earlier lines of shipper S1 from 2026-01-05 to 2026-03-05: "
        "1 confirmed misdeclared, 1 clean, 0 not inspected, 1 without outcome."
    )


def test_a_timeline_of_one_day_sits_mid_axis():
    root = parse(timeline([TimelinePoint(date(2026, 1, 5), 0.4, "green", "none", "A/1")]))
    x = float(find(root, "g", "point")[0].find(f"{SVG}circle").get("cx"))
    assert x == pytest.approx((34 + 8 + 560 - 12) / 2)


def test_bars_columns_histogram_and_heatmap_carry_their_numbers():
    bars = parse(hbar_chart(["new party", "flow surge"], [12, 3], "t", "topics"))
    assert [(r.get("data-label"), r.get("data-value")) for r in find(bars, "rect", "bar")] == [
        ("new party", "12"),
        ("flow surge", "3"),
    ]
    widths = [float(r.get("width")) for r in find(bars, "rect", "bar")]
    assert widths[0] / widths[1] == pytest.approx(4.0)

    columns = parse(stacked_columns(["d1", "d2"], {"red": [2, 0], "yellow": [3, 1]}, "c", "days"))
    drawn = [(r.get("data-category"), r.get("data-series"), r.get("data-value")) for r in columns.iter(f"{SVG}rect")]
    assert drawn == [("d1", "red", "2"), ("d1", "yellow", "3"), ("d2", "yellow", "1")]  # zero counts are not drawn

    histogram = parse(histogram_compare([0, 0.5, 1], [0.75, 0.25], [0.5, 0.5], "h", "risk"))
    assert [r.get("data-share") for r in find(histogram, "rect", "bar")] == ["0.750000", "0.250000"]
    assert [r.get("data-share") for r in find(histogram, "line", "reference")] == ["0.500000", "0.500000"]

    cells = parse(
        heatmap(["TH", "MX"], ["790111"], {("TH", "790111"): 4}, {("TH", "790111"): 10, ("MX", "790111"): 5}, "m", "cells")
    )
    heat = find(cells, "g", "heat")
    assert [(g.get("data-row"), g.get("data-hits"), g.get("data-total")) for g in heat] == [("TH", "4", "10"), ("MX", "0", "5")]
    assert [g.find(f"{SVG}rect").get("fill-opacity") for g in heat] == ["1.000", "0.080"]


def test_rate_and_capacity_charts():
    rates = {"red": [Rate("2026-W01", 8, 10), Rate("2026-W02", 0, 0)], "random checks": [Rate("2026-W01", 1, 20)]}
    root = parse(rate_chart(rates, "r", "hit rates"))
    drawn = [
        (g.get("data-series"), g.get("data-period"), g.get("data-low"), g.get("data-high"))
        for g in root.iter(f"{SVG}g")
        if g.get("data-series")
    ]
    assert drawn == [
        ("red", "2026-W01", "0.4902", "0.9433"),
        ("random checks", "2026-W01", f"{wilson_interval(1, 20)[0]:.4f}", f"{wilson_interval(1, 20)[1]:.4f}"),
    ]
    capacity = parse(capacity_chart(["USLAX", "USHOU"], [30.0, 44.0], 40.0, "k", "capacity"))
    bars = find(capacity, "rect", "bar")
    assert [(b.get("data-port"), b.get("data-share")) for b in bars] == [("USLAX", "0.7500"), ("USHOU", "1.1000")]
    assert "over" in bars[1].get("class") and "over" not in bars[0].get("class")


def test_text_is_escaped_and_every_chart_is_well_formed():
    root = parse(hbar_chart(['<script>alert("x")</script> & more'], [1], "x", "a <b> title"))
    assert root.find(f"{SVG}title").text == "a <b> title"
    assert not list(root.iter(f"{SVG}script"))
    assert math.isfinite(float(find(root, "rect", "bar")[0].get("width")))
