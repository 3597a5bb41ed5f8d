"""Presentation of domain objects, shared by the JSON API and the pages."""

from __future__ import annotations

from serve.triage.cases import HISTORY_ROWS, CaseDetail, HistoryLine, QueuePage
from serve.triage.db import Case
from serve.triage.scoring import split_reasons

_SUMMARY_FIELDS = (
    "id",
    "declaration_id",
    "line_no",
    "queue_date",
    "declared_at",
    "port",
    "channel",
    "risk_score",
    "suspected_commodity",
    "selected_by",
    "selection_probability",
    "hs_code",
    "description",
    "value_per_kg",
    "declared_value_usd",
    "gross_weight_kg",
    "model_version",
)
_FULL_FIELDS = _SUMMARY_FIELDS + (
    "net_weight_kg",
    "quantity",
    "quantity_unit",
    "packages",
    "package_type",
    "containers",
    "origin_country",
    "export_country",
    "port_of_loading",
    "port_of_discharge",
    "transshipment_ports",
    "transport_mode",
    "shipper_id",
    "consignee_id",
    "importer_id",
    "declarant_id",
    "current_outcome_id",
)


def route_text(case: Case) -> str:
    """The route in one line: countries, then the ports in order, e.g. ``CN → TH · THLCH → HKHKG → USLAX``."""
    ports = [case.port_of_loading, *(case.transshipment_ports or "").split(";"), case.port_of_discharge]
    countries = (
        case.origin_country if case.origin_country == case.export_country else f"{case.origin_country} → {case.export_country}"
    )
    legs = " → ".join(port for port in ports if port)
    return f"{countries} · {legs}" if legs else countries


def case_summary(case: Case) -> dict:
    """A queue row as a dict of :class:`~serve.triage.schemas.CaseSummary` fields."""
    row = {name: getattr(case, name) for name in _SUMMARY_FIELDS}
    row.update(reasons=split_reasons(case.reasons), route=route_text(case), state=case.queue_state)
    return row


def case_full(case: Case) -> dict:
    """Every field of a case as a dict of :class:`~serve.triage.schemas.CaseFull` fields."""
    row = {name: getattr(case, name) for name in _FULL_FIELDS}
    row.update(reasons=split_reasons(case.reasons), route=route_text(case), state=case.queue_state)
    return row


def history_line(line: HistoryLine) -> dict:
    """An earlier line of a party; the case id only when the viewer may open it."""
    case = line.case
    return {
        "case_id": case.id if line.visible else None,
        "declaration_id": case.declaration_id,
        "line_no": case.line_no,
        "declared_at": case.declared_at,
        "hs_code": case.hs_code,
        "description": case.description,
        "port": case.port,
        "channel": case.channel,
        "risk_score": case.risk_score,
        "result": line.result,
        "found_commodity": line.found_commodity,
    }


def history_rows(lines: list[HistoryLine]) -> list[dict]:
    """The latest :data:`~serve.triage.cases.HISTORY_ROWS` earlier lines of a party, as dicts (tables, API)."""
    return [history_line(line) for line in lines[:HISTORY_ROWS]]


def queue_page(page: QueuePage) -> dict:
    """A queue page as a dict of :class:`~serve.triage.schemas.QueuePageOut` fields."""
    return {
        "total": page.total,
        "page": page.page,
        "per_page": page.per_page,
        "pages": page.pages,
        "counts": page.counts,
        "cases": [case_summary(case) for case in page.rows],
    }


def case_detail(detail: CaseDetail) -> dict:
    """A case page as a dict of :class:`~serve.triage.schemas.CaseOut` fields."""
    return {
        "case": case_full(detail.case),
        "outcomes": detail.outcomes,
        "shipper_history": history_rows(detail.shipper_history),
        "consignee_history": history_rows(detail.consignee_history),
    }
