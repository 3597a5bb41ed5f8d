"""Initial triage schema: users, sessions, tokens, batches, cases, draws, outcomes, config, audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY = ("outcomes", "audit_events", "config_changes")


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=f"pk_{table}")


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=f"fk_{table}_{column}_{target}")


def _create_users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("must_change_password", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _pk("users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "user_ports",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("port", sa.String(5), nullable=False),
        _fk("user_ports", "user_id", "users"),
        sa.PrimaryKeyConstraint("user_id", "port", name="pk_user_ports"),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        _fk("sessions", "user_id", "users"),
        _pk("sessions"),
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        _fk("api_tokens", "user_id", "users"),
        _pk("api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])


def _create_batches_and_draws() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("loaded_at", sa.DateTime(), nullable=False),
        sa.Column("loaded_by", sa.String(64), nullable=False),
        sa.Column("queue_date", sa.Date(), nullable=False),
        sa.Column("n_read", sa.Integer(), nullable=False),
        sa.Column("n_inserted", sa.Integer(), nullable=False),
        sa.Column("n_existing", sa.Integer(), nullable=False),
        sa.Column("n_rejected", sa.Integer(), nullable=False),
        _pk("batches"),
    )
    op.create_table(
        "draws",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue_date", sa.Date(), nullable=False),
        sa.Column("port", sa.String(5), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("pool_size", sa.Integer(), nullable=False),
        sa.Column("picked", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("daily_capacity", sa.Integer(), nullable=False),
        sa.Column("exploration_share", sa.Float(), nullable=False),
        sa.Column("drawn_at", sa.DateTime(), nullable=False),
        _fk("draws", "batch_id", "batches"),
        _pk("draws"),
        sa.UniqueConstraint("batch_id", "port", name="uq_draws_batch_port"),
    )


def _case_columns() -> list[sa.Column]:
    text = {
        "declaration_id": (64, False),
        "hs_code": (10, False),
        "quantity_unit": (16, True),
        "package_type": (32, True),
        "origin_country": (2, False),
        "export_country": (2, False),
        "port_of_loading": (5, True),
        "port_of_discharge": (5, True),
        "transshipment_ports": (128, True),
        "transport_mode": (8, True),
        "shipper_id": (64, True),
        "consignee_id": (64, True),
        "importer_id": (64, True),
        "declarant_id": (64, True),
    }
    columns = [sa.Column("id", sa.Integer(), nullable=False)]
    columns += [sa.Column(name, sa.String(size), nullable=nullable) for name, (size, nullable) in text.items()]
    columns += [
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("declared_at", sa.Date(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("gross_weight_kg", sa.Float(), nullable=False),
        sa.Column("net_weight_kg", sa.Float(), nullable=True),
        sa.Column("quantity", sa.Float(), nullable=True),
        sa.Column("packages", sa.Integer(), nullable=True),
        sa.Column("containers", sa.Integer(), nullable=True),
        sa.Column("declared_value_usd", sa.Float(), nullable=False),
        sa.Column("risk_score", sa.Float(), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=True),
        sa.Column("suspected_commodity", sa.String(16), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("value_per_kg", sa.Float(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("queue_date", sa.Date(), nullable=False),
        sa.Column("port", sa.String(5), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("selected_by", sa.String(16), nullable=True),
        sa.Column("selection_probability", sa.Float(), nullable=True),
        sa.Column("draw_id", sa.Integer(), nullable=True),
        sa.Column("queue_state", sa.String(8), nullable=True),
        sa.Column("current_outcome_id", sa.Integer(), nullable=True),
    ]
    return columns


def _create_cases() -> None:
    op.create_table(
        "cases",
        *_case_columns(),
        _fk("cases", "batch_id", "batches"),
        _fk("cases", "draw_id", "draws"),
        _pk("cases"),
        sa.UniqueConstraint("declaration_id", "line_no", name="uq_cases_declaration_line"),
    )
    op.create_index("ix_cases_shipper_id", "cases", ["shipper_id"])
    op.create_index("ix_cases_consignee_id", "cases", ["consignee_id"])
    op.create_index("ix_cases_pool", "cases", ["batch_id", "port", "flagged"])
    in_queue = sa.text("queue_state IS NOT NULL")
    op.create_index(
        "ix_cases_queue",
        "cases",
        ["queue_state", "priority", "risk_score", "id"],
        sqlite_where=in_queue,
        postgresql_where=in_queue,
    )
    for name, column in (("port", "port"), ("date", "queue_date"), ("commodity", "suspected_commodity")):
        op.create_index(
            f"ix_cases_queue_{name}",
            "cases",
            ["queue_state", column, "priority", "risk_score", "id"],
            sqlite_where=in_queue,
            postgresql_where=in_queue,
        )


def _create_events() -> None:
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("found_commodity", sa.String(16), nullable=False),
        sa.Column("found_quantity_kg", sa.Float(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("corrects_id", sa.Integer(), nullable=True),
        _fk("outcomes", "case_id", "cases"),
        _fk("outcomes", "corrects_id", "outcomes"),
        _fk("outcomes", "user_id", "users"),
        _pk("outcomes"),
    )
    op.create_index("ix_outcomes_case_id", "outcomes", ["case_id"])
    op.create_index("ix_outcomes_recorded_at", "outcomes", ["recorded_at"])
    op.create_table(
        "config_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("value", sa.String(64), nullable=False),
        _pk("config_changes"),
    )
    op.create_index("ix_config_changes_key", "config_changes", ["key"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("via", sa.String(8), nullable=False),
        _pk("audit_events"),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_actor", "audit_events", ["actor"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])


def _protect_append_only() -> None:
    # History must not be rewritten, not even by a stray UPDATE from a console: the database refuses.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION misdeclare_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER trg_{table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION misdeclare_append_only()"
            )
        return
    for table in APPEND_ONLY:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER trg_{table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def upgrade() -> None:
    _create_users()
    _create_batches_and_draws()
    _create_cases()
    _create_events()
    _protect_append_only()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS misdeclare_append_only()")
    for table in (
        "audit_events",
        "config_changes",
        "outcomes",
        "cases",
        "draws",
        "batches",
        "api_tokens",
        "sessions",
        "user_ports",
        "users",
    ):
        op.drop_table(table)
