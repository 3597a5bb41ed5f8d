"""Pydantic models at the edge of the JSON API (requests strict, extra fields forbidden)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Channel = Literal["red", "yellow", "green"]
Commodity = Literal["antimony", "gallium", "germanium", "rare_earth", "none"]
TargetCommodity = Literal["antimony", "gallium", "germanium", "rare_earth"]
Role = Literal["inspector", "supervisor", "admin"]
Result = Literal["confirmed", "clean", "not_inspected"]
SelectedBy = Literal["model", "exploration"]
State = Literal["open", "decided", "all"]
Port = Annotated[str, Field(pattern=r"^[A-Z]{2}[A-Z2-9]{3}$", examples=["USLAX"])]
Text64 = Annotated[str, Field(max_length=64)]
# JSON has no date type: FastAPI validates the decoded JSON in Python mode, where a strict date
# refuses the ISO string. Dates alone are parsed leniently (ISO strings only).
IsoDate = Annotated[date, Field(strict=False)]


def _integral_float_to_int(value: object) -> object:
    # JSON has one number type: 40.0 is an integer in JSON Schema, so it is accepted as 40;
    # 40.5, "40" and true stay refused by the strict int.
    return int(value) if isinstance(value, float) and value.is_integer() else value


def json_int(**constraints: int):
    """A strict integer that also takes integral JSON numbers (40.0), with constraints (ge, le)."""
    # The constraints go before the validator, so that they stay standard JSON Schema keywords.
    return Annotated[int, Field(**constraints), BeforeValidator(_integral_float_to_int)]


class Strict(BaseModel):
    """Base of request models: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    """Base of response models."""

    model_config = ConfigDict(from_attributes=True)


class ErrorOut(Out):
    """An error: ``detail`` says what is wrong in plain words."""

    detail: str


# --- scoring -------------------------------------------------------------------------------------


class ManifestLineIn(Strict):
    """One declared manifest line (canonical columns without the labels)."""

    declaration_id: Annotated[str, Field(min_length=1, max_length=64)]
    line_no: json_int(ge=1, le=100_000) = 1
    declared_at: IsoDate
    hs_code: Annotated[str, Field(pattern=r"^\d{6,10}$", examples=["790111"])]
    description: Annotated[str, Field(max_length=500)] | None = None
    gross_weight_kg: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)]
    net_weight_kg: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)] | None = None
    quantity: Annotated[float, Field(gt=0, le=1e12, allow_inf_nan=False)] | None = None
    quantity_unit: Annotated[str, Field(max_length=16)] | None = None
    packages: json_int(ge=1, le=10_000_000) | None = None
    package_type: Annotated[str, Field(max_length=32)] | None = None
    containers: json_int(ge=0, le=100_000) | None = None
    declared_value_usd: Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]
    origin_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    export_country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    port_of_loading: Port | None = None
    port_of_discharge: Port | None = None
    transshipment_ports: Annotated[str, Field(pattern=r"^[A-Z]{2}[A-Z2-9]{3}(;[A-Z]{2}[A-Z2-9]{3})*$", max_length=128)] | None = (
        None
    )
    transport_mode: Literal["sea", "air", "road", "rail", "post"] | None = None
    shipper_id: Text64 | None = None
    consignee_id: Text64 | None = None
    importer_id: Text64 | None = None
    declarant_id: Text64 | None = None


MAX_SCORE_LINES = 1000


class ScoreRequest(Strict):
    """A small batch of manifest lines to score (at most 1000)."""

    lines: Annotated[list[ManifestLineIn], Field(min_length=1, max_length=MAX_SCORE_LINES)]


class LineScore(Out):
    """Score of one line."""

    declaration_id: str
    line_no: int
    risk_score: float
    channel: Channel
    reasons: list[str]
    suspected_commodity: Commodity
    model_version: str


class RejectedLine(Out):
    """A line that failed the manifest rules, with the reasons."""

    declaration_id: str
    line_no: int
    reason: str


class ScoreResponse(Out):
    """Scores of the valid lines and the reasons of the rejected ones."""

    scores: list[LineScore]
    rejected: list[RejectedLine]


# --- queue and cases -----------------------------------------------------------------------------


class CaseSummary(Out):
    """A row of the queue."""

    id: int
    declaration_id: str
    line_no: int
    queue_date: date
    declared_at: date
    port: str | None
    channel: Channel
    risk_score: float
    reasons: list[str]
    suspected_commodity: Commodity
    selected_by: SelectedBy | None
    selection_probability: float | None
    hs_code: str
    description: str | None
    route: str
    value_per_kg: float
    declared_value_usd: float
    gross_weight_kg: float
    state: Literal["open", "decided"] | None
    model_version: str


class QueuePageOut(Out):
    """One page of the queue: red first, then yellow, then random checks; riskiest first."""

    total: int
    page: int
    per_page: int
    pages: int
    counts: dict[str, int]
    cases: list[CaseSummary]


class CaseFull(CaseSummary):
    """Every declared field of a case with its score and selection."""

    gross_weight_kg: float
    net_weight_kg: float | None
    quantity: float | None
    quantity_unit: str | None
    packages: int | None
    package_type: str | None
    containers: int | None
    origin_country: str
    export_country: str
    port_of_loading: str | None
    port_of_discharge: str | None
    transshipment_ports: str | None
    transport_mode: str | None
    shipper_id: str | None
    consignee_id: str | None
    importer_id: str | None
    declarant_id: str | None
    current_outcome_id: int | None


class OutcomeOut(Out):
    """A recorded outcome event."""

    id: int
    case_id: int
    recorded_at: datetime
    actor: str
    result: Result
    found_commodity: Commodity
    found_quantity_kg: float | None
    note: str
    corrects_id: int | None


class HistoryOut(Out):
    """An earlier line of the same shipper or consignee."""

    case_id: int | None
    declaration_id: str
    line_no: int
    declared_at: date
    hs_code: str
    description: str | None
    port: str | None
    channel: Channel
    risk_score: float
    result: Result | None
    found_commodity: Commodity | None


class CaseOut(Out):
    """A case with its outcome history and the parties' earlier lines."""

    case: CaseFull
    outcomes: list[OutcomeOut]
    shipper_history: list[HistoryOut]
    consignee_history: list[HistoryOut]


class OutcomeIn(Strict):
    """An inspection result. When the case already has an outcome, ``corrects_outcome_id`` must
    name it: the correction is a new event and the old one is kept."""

    result: Result
    found_commodity: TargetCommodity | Literal["none"] | None = None
    found_quantity_kg: Annotated[float, Field(gt=0, le=1e9, allow_inf_nan=False)] | None = None
    note: Annotated[str, Field(max_length=2000)] = ""
    corrects_outcome_id: json_int(ge=1) | None = None


class ReassignIn(Strict):
    """Move a case to another port's queue."""

    port: Port


class ConfigOut(Out):
    """Queue settings in force."""

    daily_capacity: int
    exploration_share: float
    exploration_slots: int


class ConfigIn(Strict):
    """Change of the queue settings (fields left out stay as they are)."""

    daily_capacity: json_int(ge=0, le=100_000) | None = None
    exploration_share: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None


class DrawOut(Out):
    """An exploration draw of one port."""

    port: str
    pool_size: int
    picked: int
    probability: float


class LoadReportOut(Out):
    """What loading a scored batch did."""

    batch_id: int
    source: str
    queue_date: date
    n_read: int
    n_inserted: int
    n_existing: int
    n_rejected: int
    rejections: list[str]
    draws: list[DrawOut]


# --- audit, users, tokens ------------------------------------------------------------------------


class AuditEventOut(Out):
    """One audit event."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: str
    client: str
    via: str


class AuditPageOut(Out):
    """One page of audit events, newest first."""

    total: int
    page: int
    per_page: int
    events: list[AuditEventOut]


class UserOut(Out):
    """A user (never the password)."""

    id: int
    username: str
    role: Role
    ports: list[str]
    active: bool
    must_change_password: bool


class UserCreateIn(Strict):
    """A new user; the answer carries a one-time password."""

    username: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$")]
    role: Role
    ports: Annotated[list[Port], Field(max_length=50)] = []


class UserCreatedOut(Out):
    """The new user and the one-time password (shown once)."""

    user: UserOut
    one_time_password: str


class UserUpdateIn(Strict):
    """Changes to a user (fields left out stay as they are)."""

    role: Role | None = None
    ports: Annotated[list[Port], Field(max_length=50)] | None = None
    active: bool | None = None
    reset_password: bool = False


class UserUpdatedOut(Out):
    """The user after the change, and a new one-time password if it was reset."""

    user: UserOut
    one_time_password: str | None


class TokenOut(Out):
    """An API token (never the secret)."""

    id: int
    name: str
    username: str
    prefix: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class TokenCreateIn(Strict):
    """A new API token acting as ``user_id`` for ``days`` days."""

    user_id: json_int(ge=1)
    name: Annotated[str, Field(min_length=1, max_length=64)]
    days: json_int(ge=1, le=3650) = 90


class TokenCreatedOut(Out):
    """The new token and its secret (shown once; send it as ``Authorization: Bearer ...``)."""

    token: TokenOut
    secret: str


class MeOut(Out):
    """Who the credentials belong to."""

    username: str
    role: Role
    ports: list[str]
    via: str
