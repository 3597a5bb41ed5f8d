"""Configuration of the triage service, read from ``MISDECLARE_*`` environment variables.

Nothing here is read at import time: callers build ``Settings()`` (or pass values explicitly)
and hand the object to :func:`serve.api.create_app` or to the CLI commands.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.history_store import DEFAULT_HISTORY_DIR

DEFAULT_DATABASE_URL = "sqlite:///misdeclare.db"


class Settings(BaseSettings):
    """Triage service settings.

    Attributes
    ----------
    database_url : str
        SQLAlchemy URL; a SQLite file next to MLflow's ``mlflow.db`` by default,
        ``postgresql+psycopg://...`` for PostgreSQL.
    model_uri : str or None
        Model bundle loaded once at start-up for ``POST /score`` (path or ``models:/NAME@ALIAS``).
        Without it, ``POST /score`` answers 503.
    history_dir : str
        Folder of the history store (``MISDECLARE_HISTORY_DIR``, the folder ``misdeclare score
        --history`` uses; ``./history`` by default). ``POST /score`` reads the history features from
        it and appends the lines it scores; outcomes recorded in triage are appended as labelled lines.
    session_hours : float
        Absolute lifetime of a browser session.
    token_days : int
        Default lifetime of a new API token.
    cookie_secure : bool
        Send the session cookie with the ``Secure`` flag (browsers still accept it on
        ``http://127.0.0.1`` and ``http://localhost``, which they treat as secure contexts).
    max_body_bytes : int
        Largest JSON request body; larger bodies get 413.
    max_upload_bytes : int
        Largest scored batch file uploaded to ``POST /api/batches``.
    max_failed_sign_ins : int
        Failed sign-ins for one user name within ``lockout_minutes`` after which sign-in is refused.
    max_failed_sign_ins_per_client : int
        Failed sign-ins from one client address (any user names) within ``lockout_minutes`` after
        which sign-in from that address is refused: guessing across many names is throttled too.
        Higher than the per-name limit, as an office behind one address shares it.
    trusted_proxy_header : str or None
        Header holding the client address set by the one reverse proxy in front of the service
        (e.g. ``X-Forwarded-For``; its last value is the address that proxy saw). Unset by default:
        a header a client sends itself is never trusted, the connection's address is used.
    scoring_workers : int
        Worker processes of each web process that score ``POST /score`` requests
        (:mod:`serve.triage.scoring_pool`), so that scoring never holds the CPU the pages need in
        the web process. 0 scores in the web process's own threads (as before the pool existed).
    scoring_nice : int
        Niceness added to the scoring workers (``os.nice``): pages win the CPU when both wait for it.
    outcome_push_seconds : float
        Least seconds between two pushes of recorded outcomes to the history store
        (:class:`serve.triage.export.OutcomePusher`): the outcomes recorded meanwhile go together.
    argon2_time_cost, argon2_memory_kib : int
        Password hashing cost (argon2id); the defaults follow the RFC 9106 second recommendation.
    """

    model_config = SettingsConfigDict(env_prefix="MISDECLARE_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    model_uri: str | None = None
    history_dir: str = DEFAULT_HISTORY_DIR
    session_hours: float = Field(default=10.0, gt=0)
    token_days: int = Field(default=90, gt=0)
    cookie_secure: bool = True
    max_body_bytes: int = Field(default=1_048_576, gt=0)
    max_upload_bytes: int = Field(default=512 * 1_048_576, gt=0)
    max_failed_sign_ins: int = Field(default=5, gt=0)
    max_failed_sign_ins_per_client: int = Field(default=20, gt=0)
    trusted_proxy_header: str | None = None
    lockout_minutes: int = Field(default=15, gt=0)
    scoring_workers: int = Field(default=1, ge=0, le=64)
    scoring_nice: int = Field(default=10, ge=0, le=19)
    outcome_push_seconds: float = Field(default=30.0, ge=0)
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65_536, ge=8)
