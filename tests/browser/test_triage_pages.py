"""An inspector's day in headless Chromium: sign in, the queue by risk, a case, an outcome, the audit
page, the export; and an inspector of another port who cannot see the case.

Screenshots of the queue, case and audit pages go to $MISDECLARE_SCREENSHOT_DIR when set (``make screenshots``).
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from features.schema import validate_manifest
from serve.triage import audit
from serve.triage.db import Case, make_engine
from serve.triage.export import export_labels

pytestmark = pytest.mark.browser


def _queue_ids(live_server, port: str, limit: int = 50) -> list[int]:
    engine = make_engine(f"sqlite:///{live_server.database}")
    with Session(engine) as db:
        ids = list(
            db.scalars(
                select(Case.id)
                .where(Case.port == port, Case.queue_state == "open")
                .order_by(Case.priority.desc(), Case.risk_score.desc(), Case.id.desc())
                .limit(limit)
            )
        )
    engine.dispose()
    return ids


def _rows(page) -> list[int]:
    return [
        int(i) for i in page.locator("#queue-table tbody tr[data-case]").evaluate_all("rows => rows.map(r => r.dataset.case)")
    ]


def _first_open_red_case(page) -> str:
    row = page.locator("#queue-table tbody tr.open", has=page.locator(".chip.red")).first
    return row.get_attribute("data-case")


def test_inspector_sees_own_queue_ordered_by_risk(signed_in, live_server, screenshot):
    page = signed_in("lax")
    assert page.url == f"{live_server.url}/"
    scores = [float(s) for s in page.locator("#queue-table tbody .score").all_inner_texts()]
    chips = page.locator("#queue-table tbody td:nth-child(2) .chip").all_inner_texts()
    assert _rows(page) == _queue_ids(live_server, "USLAX")
    assert chips[0] == "RED" and chips.index("YELLOW") > chips.count("RED") - 1
    assert scores[: chips.count("RED")] == sorted(scores[: chips.count("RED")], reverse=True)
    assert set(page.locator("#queue-table tbody td:nth-child(9)").all_inner_texts()) == {"USLAX"}
    screenshot(page, "queue")


def test_queue_filter_swaps_the_table_in_place(signed_in):
    page = signed_in("lax")
    page.evaluate("window.notReloaded = true")
    page.select_option("select[name=channel]", "yellow")
    page.wait_for_function("() => location.search.includes('channel=yellow')")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#queue-table tbody td:nth-child(2) .chip')]"
        ".every(c => c.textContent.trim() === 'yellow')"
    )
    chips = set(page.locator("#queue-table tbody td:nth-child(2) .chip").all_inner_texts())
    assert chips == {"YELLOW"}
    assert page.evaluate("window.notReloaded") is True  # swapped by htmx, not a full page load


def test_case_outcome_appears_in_the_audit_and_the_export(signed_in, live_server, tmp_path, screenshot):
    page = signed_in("lax")
    case_id = _first_open_red_case(page)
    page.click(f"#queue-table tbody tr[data-case='{case_id}'] td:nth-child(4) a")
    page.wait_for_url(f"**/cases/{case_id}")
    assert page.locator(".reason-box li").count() >= 1
    screenshot(page, "case")
    page.check("input[name=result][value=confirmed]")
    page.select_option("select[name=found_commodity]", "antimony")
    page.fill("input[name=found_quantity_kg]", "480")
    page.fill("textarea[name=note]", "ingots under zinc bars, seal 44817")
    page.click("form.outcome button[type=submit]")
    event = page.locator("#outcome-panel .event.current")
    event.wait_for()
    assert "confirmed" in event.inner_text().lower() and "480.0 kg" in event.inner_text()
    assert page.locator("button", has_text="Record correction").count() == 1
    screenshot(page, "case-decided")

    supervisor = signed_in("sup")
    supervisor.goto(f"{live_server.url}/audit?actor=lax")
    rows = supervisor.locator("#audit-table tbody tr").all_inner_texts()
    assert any("outcome" in row and f"case:{case_id}" in row and "confirmed" in row for row in rows)
    assert any("case_view" in row and f"case:{case_id}" in row for row in rows)
    screenshot(supervisor, "audit")

    out = tmp_path / "labels.csv"
    origin = audit.Origin(actor="test", user_id=None, client="cli", via="cli")
    engine = make_engine(f"sqlite:///{live_server.database}")
    export_labels(engine, date(2020, 1, 1), out, origin)
    engine.dispose()
    checked = validate_manifest(pd.read_csv(out, dtype=str, keep_default_na=False, na_values=[""]), out.name)
    assert checked.quarantine.empty
    row = checked.valid.loc[checked.valid["declaration_id"] == page.locator("h1 .mono").inner_text()].iloc[0]
    assert (row["inspected"], row["misdeclared"], row["found_commodity"]) == (1, 1, "antimony")


def test_inspector_of_another_port_cannot_see_the_case(signed_in, live_server):
    lax_case = _queue_ids(live_server, "USLAX", 1)[0]
    page = signed_in("hou")
    assert lax_case not in _rows(page)
    assert set(page.locator("#queue-table tbody td:nth-child(9)").all_inner_texts()) == {"USHOU"}
    response = page.goto(f"{live_server.url}/cases/{lax_case}")
    assert response.status == 403
    assert "Not allowed" in page.locator("h1").inner_text()
    assert page.locator(".reason-box").count() == 0
