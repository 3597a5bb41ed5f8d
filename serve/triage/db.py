"""Tables of the triage database (SQLAlchemy 2 declarative models) and engine creation.

The schema itself is created and evolved by the Alembic migrations in
``serve/triage/migrations``; these models mirror it (a storage test checks that they agree).
Append-only tables (``outcomes``, ``audit_events``, ``config_changes``) are protected by
database triggers created in the migrations, so even a stray UPDATE cannot rewrite history.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ROLES = ("inspector", "supervisor", "admin")
CHANNELS = ("red", "yellow", "green")
# Queue order is priority DESC, risk_score DESC, id DESC: red, then yellow, then random checks.
PRIORITY = {"red": 2, "yellow": 1, "green": 0}
COMMODITIES = ("antimony", "gallium", "germanium", "rare_earth", "none")
RESULTS = ("confirmed", "clean", "not_inspected")
SELECTED_BY = ("model", "exploration")

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator):
    """Timestamps stored as naive UTC and returned timezone-aware, the same on SQLite and PostgreSQL."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention so that migrations name constraints stably."""

    metadata = MetaData(naming_convention=_NAMING)


class User(Base):
    """A person (or a machine client's service account) who signs in or owns API tokens."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UserPort(Base):
    """A port (UN/LOCODE) an inspector is assigned to."""

    __tablename__ = "user_ports"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    port: Mapped[str] = mapped_column(String(5), primary_key=True)


class SessionRow(Base):
    """A browser session; the cookie carries a random token whose SHA-256 is stored here."""

    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    client_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


class ApiToken(Base):
    """A bearer token for machine clients; acts with the role and ports of its user."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(64))


class Batch(Base):
    """One load of a scored batch file into the queue."""

    __tablename__ = "batches"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(255))
    loaded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    loaded_by: Mapped[str] = mapped_column(String(64))
    queue_date: Mapped[date] = mapped_column(Date)
    n_read: Mapped[int] = mapped_column(Integer, default=0)
    n_inserted: Mapped[int] = mapped_column(Integer, default=0)
    n_existing: Mapped[int] = mapped_column(Integer, default=0)
    n_rejected: Mapped[int] = mapped_column(Integer, default=0)
    # Counts the batch report draws (serve.report.BatchReport as JSON); NULL for batches loaded before.
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)


class Case(Base):
    """A scored manifest line in the triage database.

    Flagged lines (red, yellow) are in the queue with ``selected_by='model'``; green lines are
    stored too so that the daily exploration draw can pick among them with a known
    ``selection_probability``. ``queue_state`` is ``open`` or ``decided`` for lines in the queue
    and NULL for lines that were not selected.
    """

    __tablename__ = "cases"
    __table_args__ = (
        UniqueConstraint("declaration_id", "line_no", name="uq_cases_declaration_line"),
        # All-descending order so that one ascending index serves the queue by a backward scan;
        # partial, because most lines (green, not drawn) never enter the queue.
        Index(
            "ix_cases_queue",
            "queue_state",
            "priority",
            "risk_score",
            "id",
            sqlite_where=text("queue_state IS NOT NULL"),
            postgresql_where=text("queue_state IS NOT NULL"),
        ),
        Index(
            "ix_cases_queue_port",
            "queue_state",
            "port",
            "priority",
            "risk_score",
            "id",
            sqlite_where=text("queue_state IS NOT NULL"),
            postgresql_where=text("queue_state IS NOT NULL"),
        ),
        Index(
            "ix_cases_queue_date",
            "queue_state",
            "queue_date",
            "priority",
            "risk_score",
            "id",
            sqlite_where=text("queue_state IS NOT NULL"),
            postgresql_where=text("queue_state IS NOT NULL"),
        ),
        Index(
            "ix_cases_queue_commodity",
            "queue_state",
            "suspected_commodity",
            "priority",
            "risk_score",
            "id",
            sqlite_where=text("queue_state IS NOT NULL"),
            postgresql_where=text("queue_state IS NOT NULL"),
        ),
        Index("ix_cases_pool", "batch_id", "port", "flagged"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    declaration_id: Mapped[str] = mapped_column(String(64))
    line_no: Mapped[int] = mapped_column(Integer)
    declared_at: Mapped[date] = mapped_column(Date)
    hs_code: Mapped[str] = mapped_column(String(10))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    gross_weight_kg: Mapped[float] = mapped_column(Float)
    net_weight_kg: Mapped[float | None] = mapped_column(Float, nullable=True)
    quantity: Mapped[float | None] = mapped_column(Float, nullable=True)
    quantity_unit: Mapped[str | None] = mapped_column(String(16), nullable=True)
    packages: Mapped[int | None] = mapped_column(Integer, nullable=True)
    package_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    containers: Mapped[int | None] = mapped_column(Integer, nullable=True)
    declared_value_usd: Mapped[float] = mapped_column(Float)
    origin_country: Mapped[str] = mapped_column(String(2))
    export_country: Mapped[str] = mapped_column(String(2))
    port_of_loading: Mapped[str | None] = mapped_column(String(5), nullable=True)
    port_of_discharge: Mapped[str | None] = mapped_column(String(5), nullable=True)
    transshipment_ports: Mapped[str | None] = mapped_column(String(128), nullable=True)
    transport_mode: Mapped[str | None] = mapped_column(String(8), nullable=True)
    shipper_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    consignee_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    importer_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    declarant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    risk_score: Mapped[float] = mapped_column(Float)
    channel: Mapped[str] = mapped_column(String(8))
    priority: Mapped[int] = mapped_column(Integer)
    reasons: Mapped[str | None] = mapped_column(Text, nullable=True)
    suspected_commodity: Mapped[str] = mapped_column(String(16))
    model_version: Mapped[str] = mapped_column(String(64))
    value_per_kg: Mapped[float] = mapped_column(Float)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    queue_date: Mapped[date] = mapped_column(Date)
    port: Mapped[str | None] = mapped_column(String(5), nullable=True)
    flagged: Mapped[bool] = mapped_column(Boolean)
    selected_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    selection_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    draw_id: Mapped[int | None] = mapped_column(ForeignKey("draws.id"), nullable=True)  # picked lines only
    queue_state: Mapped[str | None] = mapped_column(String(8), nullable=True)
    current_outcome_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Draw(Base):
    """One exploration draw: ``picked`` lines chosen uniformly among ``pool_size`` unflagged lines."""

    __tablename__ = "draws"
    __table_args__ = (UniqueConstraint("batch_id", "port", name="uq_draws_batch_port"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_date: Mapped[date] = mapped_column(Date)
    port: Mapped[str] = mapped_column(String(5))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    pool_size: Mapped[int] = mapped_column(Integer)
    picked: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)
    daily_capacity: Mapped[int] = mapped_column(Integer)
    exploration_share: Mapped[float] = mapped_column(Float)
    drawn_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Outcome(Base):
    """An inspection outcome event; append-only, a correction is a new row pointing at the old one."""

    __tablename__ = "outcomes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    actor: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(16))
    found_commodity: Mapped[str] = mapped_column(String(16))
    found_quantity_kg: Mapped[float | None] = mapped_column(Float, nullable=True)
    note: Mapped[str] = mapped_column(Text, default="")
    corrects_id: Mapped[int | None] = mapped_column(ForeignKey("outcomes.id"), nullable=True)


class ConfigChange(Base):
    """A change of a queue setting (daily capacity, exploration share); the latest row wins."""

    __tablename__ = "config_changes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(32), index=True)
    value: Mapped[str] = mapped_column(String(64))


class AuditEvent(Base):
    """Who did what, when and from where; append-only."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    client: Mapped[str] = mapped_column(String(64), default="")
    via: Mapped[str] = mapped_column(String(8))


def _sqlite_pragmas(dbapi_connection: object, connection_record: object) -> None:
    # Foreign keys are off by default in SQLite; WAL lets the page read while a load writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(database_url: str) -> Engine:
    """Create the engine for ``database_url`` (SQLite file or PostgreSQL).

    Parameters
    ----------
    database_url : str
        SQLAlchemy URL, e.g. ``sqlite:///misdeclare.db`` or ``postgresql+psycopg://u:p@host/db``.

    Returns
    -------
    Engine
        With foreign keys, WAL and a busy timeout switched on for SQLite.
    """
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(database_url, pool_pre_ping=True)


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)
