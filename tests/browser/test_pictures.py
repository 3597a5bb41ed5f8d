"""The pictures in headless Chromium: what each chart draws equals the data it comes from.

Assertions read the SVG's data attributes and geometry (never pixels) and compare them with the
triage database, the reference tables and the files, computed here independently of the chart
code. Every page is also written as a screenshot (``make screenshots`` keeps them for the README).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import date

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from features.reference import load_reference
from serve.report import BatchReport, render_report, write_report
from serve.triage.cases import DEFAULT_CONFIG, HISTORY_LIMIT
from serve.triage.db import Batch, Case, Outcome, make_engine
from serve.triage.synthetic import synthetic_scored_batch

pytestmark = pytest.mark.browser


def _db(live_server):
    return make_engine(f"sqlite:///{live_server.database}")


def _attrs(page, selector: str, *names: str) -> list[dict]:
    return page.locator(selector).evaluate_all(
        "(nodes, names) => nodes.map(n => Object.fromEntries(names.map(k => [k, n.getAttribute(k)])))", list(names)
    )


def _open_red_cases(live_server) -> list[Case]:
    engine = _db(live_server)
    with Session(engine, expire_on_commit=False) as db:
        cases = list(
            db.scalars(
                select(Case)
                .where(Case.port == "USLAX", Case.queue_state == "open", Case.channel == "red")
                .order_by(Case.risk_score.desc())
            )
        )
    engine.dispose()
    return cases


def _earlier_lines(live_server, case: Case, column: str) -> list[tuple]:
    engine = _db(live_server)
    with Session(engine) as db:
        party = getattr(Case, column)
        rows = db.execute(
            select(Case.declared_at, Case.channel, Case.risk_score, Outcome.result)
            .outerjoin(Outcome, Outcome.id == Case.current_outcome_id)
            .where(party == getattr(case, column), Case.id != case.id, Case.declared_at <= case.declared_at)
            .order_by(Case.declared_at.desc(), Case.id.desc())
            .limit(HISTORY_LIMIT)
        ).all()
    engine.dispose()
    return sorted((d.isoformat(), ch, f"{r:.4f}", res or "none") for d, ch, r, res in rows)


def test_case_page_draws_price_bands_route_and_party_history(signed_in, live_server, screenshot):
    # A case whose shipper has a confirmed misdeclaration among its earlier lines, so every mark is drawn.
    case = next(
        c
        for c in _open_red_cases(live_server)
        if any(line[3] == "confirmed" for line in _earlier_lines(live_server, c, "shipper_id"))
    )
    page = signed_in("lax")
    page.goto(f"{live_server.url}/cases/{case.id}")
    reference = load_reference()

    # Price: the line's value and every band, as in the case and the reference tables.
    price = page.locator("svg[data-chart=price]")
    assert float(price.get_attribute("data-value-per-kg")) == float(f"{case.value_per_kg:.6g}")
    bands = _attrs(page, "svg[data-chart=price] rect.band", "data-name", "data-low", "data-high", "x", "width")
    hs = reference.hs_codes.dropna(subset=["usd_per_kg_low"]).set_index("hs_prefix")
    prefix = next(p for p in (case.hs_code[:6], case.hs_code[:4]) if p in hs.index)
    goods = reference.target_goods.groupby("band").agg(low=("usd_per_kg_low", "min"), high=("usd_per_kg_high", "max"))
    expected = [(f"HS {prefix} (declared)", hs.loc[prefix, "usd_per_kg_low"], hs.loc[prefix, "usd_per_kg_high"])]
    expected += [(band.replace("_", " "), row.low, row.high) for band, row in goods.iterrows()]
    assert [(b["data-name"], float(b["data-low"]), float(b["data-high"])) for b in bands] == expected
    # The value line crosses exactly the bands whose range holds the value (the log scale is right).
    line_x = float(page.locator("svg[data-chart=price] line.declared-value").get_attribute("x1"))
    for band, (_, low, high) in zip(bands, expected, strict=True):
        drawn = float(band["x"]) <= line_x <= float(band["x"]) + float(band["width"])
        assert drawn == (low <= case.value_per_kg <= high), band["data-name"]

    # Route: the places in order, hubs as the reference data name them.
    stops = _attrs(page, "svg[data-chart=route] g.route-stop", "data-label", "data-role", "data-hub")
    places = [case.origin_country] + ([case.export_country] if case.export_country != case.origin_country else [])
    places += [p for p in [case.port_of_loading, *(case.transshipment_ports or "").split(";"), case.port_of_discharge] if p]
    hubs = set(reference.countries.loc[reference.countries["diversion_hub"] == 1, "iso2"])
    assert [s["data-label"] for s in stops] == places
    assert [s["data-hub"] == "true" for s in stops] == [p[:2] in hubs for p in places]
    assert stops[0]["data-role"] == "origin" and stops[-1]["data-role"] == "discharge"

    # Parties: one mark per earlier line, with its day, channel, risk and outcome; riskier is higher.
    for column, chart in (("shipper_id", "shipper-timeline"), ("consignee_id", "consignee-timeline")):
        points = _attrs(page, f"#{chart} g.point", "data-day", "data-channel", "data-risk", "data-result")
        assert sorted((p["data-day"], p["data-channel"], p["data-risk"], p["data-result"]) for p in points) == _earlier_lines(
            live_server, case, column
        )
        marks = page.locator(f"#{chart} g.point > *").evaluate_all(
            "nodes => nodes.map(n => [Number(n.parentNode.dataset.risk), n.getBBox().y + n.getBBox().height / 2])"
        )
        by_risk = sorted(marks)
        assert all(a[1] >= b[1] - 1e-6 for a, b in zip(by_risk, by_risk[1:]))
    assert any(p["data-result"] == "confirmed" for p in _attrs(page, "g.point", "data-result"))

    # Text alternatives: every chart is an image with a title and a description.
    for chart in page.locator("svg.chart").all():
        assert chart.get_attribute("role") == "img"
        assert chart.locator("title").first.inner_html() and chart.locator("desc").inner_html()
    assert f"Declared {case.value_per_kg:,.2f} USD/kg" in price.locator("desc").inner_html()
    screenshot(page, "case-pictures")


def _week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def test_supervision_draws_weekly_hit_rates_and_capacity(signed_in, live_server, screenshot):
    engine = _db(live_server)
    with Session(engine) as db:
        decided = db.execute(
            select(Case.queue_date, Case.priority, Case.port, Outcome.result).join(Outcome, Outcome.id == Case.current_outcome_id)
        ).all()
        queued = db.execute(
            select(Case.port, Case.queue_date).where(Case.queue_state.is_not(None), Case.queue_date < date.today())
        ).all()
    engine.dispose()
    series = {2: "red", 1: "yellow", 0: "random checks"}
    expected = Counter()
    for day, priority, _, result in decided:
        expected[(series[priority], _week(day), "trials")] += 1
        expected[(series[priority], _week(day), "hits")] += result == "confirmed"
    page = signed_in("sup")
    page.click("nav a[href='/supervision']")
    page.wait_for_url("**/supervision")
    rates = _attrs(
        page,
        "svg[data-chart=rates] g.rate[data-series]",
        "data-series",
        "data-period",
        "data-hits",
        "data-trials",
        "data-low",
        "data-high",
    )
    drawn = Counter()
    for rate in rates:
        drawn[(rate["data-series"], rate["data-period"], "trials")] += int(rate["data-trials"])
        drawn[(rate["data-series"], rate["data-period"], "hits")] += int(rate["data-hits"])
        assert float(rate["data-low"]) <= int(rate["data-hits"]) / int(rate["data-trials"]) <= float(rate["data-high"])
    assert drawn == +expected and len(rates) == 9  # three earlier weeks × three series

    days, inspected = defaultdict(set), Counter(port for _, _, port, _ in decided)
    for port, day in queued:
        days[port].add(day)
    bars = _attrs(page, "svg[data-chart=capacity] rect.bar", "data-port", "data-value")
    assert {b["data-port"]: round(float(b["data-value"]), 4) for b in bars} == {
        port: round(inspected[port] / len(days[port]), 4) for port in days
    }
    capacity = page.locator("svg[data-chart=capacity] line.capacity").get_attribute("data-value")
    assert float(capacity) == DEFAULT_CONFIG["daily_capacity"]  # the seeded database never changed it
    screenshot(page, "supervision")


def test_batch_report_page_counts_the_loaded_batch(signed_in, live_server, screenshot):
    engine = _db(live_server)
    with Session(engine) as db:
        batch = db.scalars(select(Batch).order_by(Batch.id.desc())).first()
        lines = pd.read_sql(
            select(Case.port_of_discharge, Case.channel, Case.hs_code, Case.export_country).where(Case.batch_id == batch.id),
            db.connection(),
        )
    engine.dispose()
    page = signed_in("sup")
    page.goto(f"{live_server.url}/supervision")
    page.click(f"a[href='/batches/{batch.id}/report']")
    page.wait_for_url(f"**/batches/{batch.id}/report")

    totals = lines["channel"].value_counts()
    for channel in ("red", "yellow", "green"):
        shown = page.locator(f"#report-totals [data-channel={channel}] b").inner_text()
        assert int(shown.replace(",", "")) == totals.get(channel, 0)
    table = {row["data-port"]: row for row in _attrs(page, "#port-table tbody tr", "data-port")}
    assert set(table) == set(lines["port_of_discharge"])
    columns = _attrs(page, "svg[data-chart=columns] rect", "data-series", "data-value")
    for channel in ("red", "yellow"):
        assert sum(int(c["data-value"]) for c in columns if c["data-series"] == channel) == totals.get(channel, 0)

    covers = load_reference().cover_codes
    under_cover = lines["hs_code"].str[:6].isin(covers) | lines["hs_code"].str[:4].isin(covers)
    cells = _attrs(page, "svg[data-chart=heatmap] g.heat", "data-hits", "data-total")
    flagged = lines["channel"].isin(["red", "yellow"])
    assert sum(int(c["data-total"]) for c in cells) == under_cover.sum()  # every cell of this small batch is drawn
    assert sum(int(c["data-hits"]) for c in cells) == (under_cover & flagged).sum()

    rules = {
        r["data-label"]: int(r["data-value"]) for r in _attrs(page, "svg[data-chart=hbar]#rules rect", "data-label", "data-value")
    }
    assert rules == {
        "hs_code must be 6-10 digits": 3,
        "gross_weight_kg must be > 0": 3,
        "net_weight_kg <= gross_weight_kg does not hold": 3,  # the net weight is now above the gross
        "port_of_discharge must be UN/LOCODEs (5 characters)": 1,
    }
    screenshot(page, "batch-report")


def test_report_file_is_self_contained_and_draws_its_counts(new_page, tmp_path, screenshot):
    lines = pd.concat(
        [synthetic_scored_batch(400, seed=s, declared_at=date(2026, 3, d), id_prefix=f"D{d}-") for s, d in ((1, 2), (2, 3))],
        ignore_index=True,
    )
    report = BatchReport(load_reference().cover_codes)
    report.add_scored(lines)
    reference = [1 / 14] * 14
    path = write_report(tmp_path / "report.html", render_report(report, reference, "manifest.csv"))
    page = new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(path.as_uri())
    assert requested == [path.as_uri()]  # nothing fetched: styles and charts are inline

    assert json.loads(page.locator("#report-data").inner_text()) == report.to_dict()
    bins = _attrs(page, "svg[data-chart=histogram] rect.bar", "data-share")
    edges = [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    counts = np.array(pd.cut(lines["risk_score"], edges, right=False).value_counts(sort=False).tolist())
    counts[-1] += (lines["risk_score"] == 1.0).sum()  # the last bin holds 1.0
    np.testing.assert_allclose([float(b["data-share"]) for b in bins], counts / len(lines), atol=1e-6)
    assert [
        float(r)
        for r in page.locator("svg[data-chart=histogram] line.reference").evaluate_all("nodes => nodes.map(n => n.dataset.share)")
    ] == pytest.approx(reference, abs=1e-6)
    days = sorted(_attrs(page, "svg[data-chart=columns] rect", "data-category"), key=str)
    assert {d["data-category"] for d in days} == {"2026-03-02", "2026-03-03"}
    screenshot(page, "report-file")
