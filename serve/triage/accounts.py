"""Users, roles, passwords (argon2id), browser sessions and API tokens.

Secrets are never stored: sessions and tokens are random values of which only the SHA-256 is
kept, passwords are argon2id hashes. New users get a one-time password that must be changed at
the first sign-in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from serve.triage import audit
from serve.triage.db import ROLES, ApiToken, AuditEvent, SessionRow, User, UserPort, utcnow
from serve.triage.errors import ConflictError, ForbiddenError, InvalidInputError, NotAuthenticatedError, NotFoundError
from serve.triage.settings import Settings

USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
PORT_PATTERN = re.compile(r"^[A-Z]{2}[A-Z2-9]{3}$")
MIN_PASSWORD_LENGTH = 12
TOKEN_PREFIX = "mdk_"
FIRST_ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """An authenticated user acting through the page (``web``), the API (``api``) or the CLI (``cli``).

    Attributes
    ----------
    user_id : int or None
        None for the command line, which acts as the operating-system user.
    username, role : str
        ``role`` is one of :data:`serve.triage.db.ROLES`.
    ports : frozenset of str
        UN/LOCODEs of the ports an inspector works at (supervisors see every port).
    client : str
        Client address (or ``cli``).
    via : str
        ``web``, ``api`` or ``cli``.
    csrf_token : str or None
        Synchronizer token of the browser session; None for tokens and the CLI.
    token_id : int or None
        The API token used, if any.
    must_change_password : bool
        True until a user who got a one-time password chose their own.
    """

    user_id: int | None
    username: str
    role: str
    ports: frozenset[str]
    client: str
    via: str
    csrf_token: str | None = None
    token_id: int | None = None
    must_change_password: bool = False

    @property
    def origin(self) -> audit.Origin:
        """The audit origin of this principal."""
        return audit.Origin(actor=self.username, user_id=self.user_id, client=self.client, via=self.via)

    def sees_port(self, port: str | None) -> bool:
        """Tell whether this principal may see and decide cases of ``port``."""
        return self.role == "supervisor" or (self.role == "inspector" and port in self.ports)

    def require(self, *roles: str) -> None:
        """Raise :class:`ForbiddenError` unless the principal has one of ``roles``."""
        if self.role not in roles:
            raise ForbiddenError(f"role '{self.role}' may not do this (needs {' or '.join(roles)})")


def make_hasher(settings: Settings) -> PasswordHasher:
    """Return the argon2id hasher configured by ``settings``."""
    return PasswordHasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_password() -> str:
    """Return a random one-time password (16 URL-safe characters, 96 bits)."""
    return secrets.token_urlsafe(12)


def check_username(username: str) -> str:
    """Return ``username`` if it is 2-64 lower-case letters, digits, '.', '_' or '-'."""
    if not USERNAME_PATTERN.match(username):
        raise InvalidInputError("username must be 2-64 characters: a-z, 0-9, '.', '_' or '-'")
    return username


def check_ports(ports: list[str] | tuple[str, ...] | frozenset[str]) -> list[str]:
    """Return the ports upper-cased and sorted, if each is a UN/LOCODE."""
    cleaned = sorted({port.strip().upper() for port in ports if port.strip()})
    bad = [port for port in cleaned if not PORT_PATTERN.match(port)]
    if bad:
        raise InvalidInputError(f"not a UN/LOCODE: {', '.join(bad)}")
    return cleaned


def check_role(role: str) -> str:
    """Return ``role`` if it is one of :data:`serve.triage.db.ROLES`."""
    if role not in ROLES:
        raise InvalidInputError(f"role must be one of {', '.join(ROLES)}")
    return role


def user_ports(db: Session, user_id: int) -> frozenset[str]:
    """Return the ports a user is assigned to."""
    return frozenset(db.scalars(select(UserPort.port).where(UserPort.user_id == user_id)))


def _principal(db: Session, user: User, client: str, via: str, **extra: object) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        role=user.role,
        ports=user_ports(db, user.id),
        client=client,
        via=via,
        must_change_password=user.must_change_password,
        **extra,
    )


# --- users ---------------------------------------------------------------------------------------


def create_user(
    db: Session, hasher: PasswordHasher, origin: audit.Origin, username: str, role: str, ports: list[str]
) -> tuple[User, str]:
    """Create a user with a one-time password.

    Parameters
    ----------
    db : Session
        Open transaction.
    hasher : PasswordHasher
        Password hasher.
    origin : Origin
        Who creates the user (audited).
    username, role : str
        New user's name and role.
    ports : list of str
        Ports of an inspector (ignored for other roles).

    Returns
    -------
    user : User
    password : str
        The one-time password, shown once and never stored in clear.
    """
    check_username(username)
    check_role(role)
    ports = check_ports(ports) if role == "inspector" else []
    if db.scalar(select(User.id).where(User.username == username)) is not None:
        raise ConflictError(f"user '{username}' already exists")
    password = new_password()
    user = User(
        username=username,
        password_hash=hasher.hash(password),
        role=role,
        active=True,
        must_change_password=True,
        created_at=utcnow(),
    )
    db.add(user)
    db.flush()
    db.add_all(UserPort(user_id=user.id, port=port) for port in ports)
    audit.record(db, origin, "user_create", f"user:{username}", {"role": role, "ports": ports})
    return user, password


def update_user(
    db: Session,
    hasher: PasswordHasher,
    origin: audit.Origin,
    user_id: int,
    *,
    role: str | None = None,
    ports: list[str] | None = None,
    active: bool | None = None,
    reset_password: bool = False,
) -> str | None:
    """Change a user's role, ports or active flag, or reset their password.

    Returns
    -------
    str or None
        The new one-time password when ``reset_password`` is true.
    """
    user = db.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user {user_id}")
    changes: dict[str, object] = {}
    if role is not None:
        user.role = changes["role"] = check_role(role)
    if ports is not None:
        cleaned = check_ports(ports)
        db.execute(delete(UserPort).where(UserPort.user_id == user.id))
        db.add_all(UserPort(user_id=user.id, port=port) for port in cleaned)
        changes["ports"] = cleaned
    if active is not None:
        user.active = changes["active"] = active
    password = None
    if reset_password:
        password = new_password()
        user.password_hash = hasher.hash(password)
        user.must_change_password = True
        changes["password"] = "reset"
    if active is False or reset_password:
        _revoke_sessions(db, user.id)
    audit.record(db, origin, "user_update", f"user:{user.username}", changes)
    return password


def list_users(db: Session) -> list[tuple[User, list[str]]]:
    """Return every user with their ports, by name."""
    users = db.scalars(select(User).order_by(User.username)).all()
    return [(user, sorted(user_ports(db, user.id))) for user in users]


def ensure_first_admin(engine: Engine, hasher: PasswordHasher) -> str | None:
    """On a database without users, create ``admin`` with a one-time password and return it.

    Returns
    -------
    str or None
        The password to print once, or None when users already exist.
    """
    with Session(engine) as db, db.begin():
        if db.scalar(select(func.count(User.id))):
            return None
        origin = audit.Origin(actor="system", user_id=None, client="cli", via="cli")
        _, password = create_user(db, hasher, origin, FIRST_ADMIN, "admin", [])
        return password


def change_password(db: Session, hasher: PasswordHasher, who: Principal, current: str, new: str) -> None:
    """Replace the password of ``who`` after checking the current one."""
    user = db.get(User, who.user_id)
    if user is None or not _verify(hasher, user.password_hash, current):
        raise ForbiddenError("current password is wrong")
    if len(new) < MIN_PASSWORD_LENGTH:
        raise InvalidInputError(f"new password must have at least {MIN_PASSWORD_LENGTH} characters")
    if new == current:
        raise InvalidInputError("new password must differ from the current one")
    user.password_hash = hasher.hash(new)
    user.must_change_password = False
    # A stolen session must not outlive the password: end every other session of the user
    # (the one making the change is kept, recognised by its own CSRF token).
    _revoke_sessions(db, user.id, keep_csrf=who.csrf_token)
    audit.record(db, who.origin, "password_change", f"user:{user.username}")


def _verify(hasher: PasswordHasher, password_hash: str, password: str) -> bool:
    try:
        return hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# --- sessions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewSession:
    """A started browser session: the cookie value and its CSRF token."""

    token: str
    csrf_token: str
    expires_at: datetime


def _recent_failures(db: Session, settings: Settings, *where) -> int:
    since = utcnow() - timedelta(minutes=settings.lockout_minutes)
    return int(
        db.scalar(select(func.count(AuditEvent.id)).where(AuditEvent.action == "sign_in_failed", AuditEvent.at >= since, *where))
        or 0
    )


def _locked(db: Session, username: str, client: str, settings: Settings) -> bool:
    """Too many recent failures for this user name, or from this client address (any names)."""
    return (
        _recent_failures(db, settings, AuditEvent.target == f"user:{username}") >= settings.max_failed_sign_ins
        or _recent_failures(db, settings, AuditEvent.client == client[:64]) >= settings.max_failed_sign_ins_per_client
    )


def sign_in(engine: Engine, hasher: PasswordHasher, settings: Settings, username: str, password: str, client: str) -> NewSession:
    """Check a user name and password and start a session; every attempt is audited.

    Raises
    ------
    NotAuthenticatedError
        Unknown user, wrong password, inactive user or too many recent failures (for the user name
        or from the client address).
    """
    origin = audit.Origin(actor=username[:64], user_id=None, client=client, via="web")
    with Session(engine) as db, db.begin():
        accepted = _check_credentials(db, hasher, settings, username, password, origin)
    if not accepted:
        # One message for every refusal, so that the answer does not tell which user names exist.
        raise NotAuthenticatedError("wrong user name or password, or too many failed attempts")
    return _start_session(engine, hasher, settings, username, password, client)


def _check_credentials(
    db: Session, hasher: PasswordHasher, settings: Settings, username: str, password: str, origin: audit.Origin
) -> bool:
    if _locked(db, username, origin.client, settings):
        audit.record(db, origin, "sign_in_locked", f"user:{username}")
        return False
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        hasher.hash(password)  # same work as a verification, so timing does not reveal unknown names
        valid = False
    else:
        valid = _verify(hasher, user.password_hash, password)
    if user is None or not user.active or not valid:
        audit.record(db, origin, "sign_in_failed", f"user:{username}")
        return False
    return True


def _start_session(
    engine: Engine, hasher: PasswordHasher, settings: Settings, username: str, password: str, client: str
) -> NewSession:
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + timedelta(hours=settings.session_hours)
    with Session(engine) as db, db.begin():
        user = db.scalar(select(User).where(User.username == username))
        if hasher.check_needs_rehash(user.password_hash):
            user.password_hash = hasher.hash(password)
        db.add(
            SessionRow(
                token_hash=_digest(token),
                csrf_token=csrf,
                user_id=user.id,
                created_at=now,
                expires_at=expires,
                client_ip=client[:64],
            )
        )
        origin = audit.Origin(actor=user.username, user_id=user.id, client=client, via="web")
        audit.record(db, origin, "sign_in", f"user:{user.username}")
    return NewSession(token=token, csrf_token=csrf, expires_at=expires)


def session_principal(db: Session, token: str, client: str) -> Principal:
    """Return the principal of a session cookie value.

    Raises
    ------
    NotAuthenticatedError
        Unknown, expired or revoked session, or inactive user.
    """
    row = db.scalar(select(SessionRow).where(SessionRow.token_hash == _digest(token)))
    if row is None or row.revoked_at is not None:
        raise NotAuthenticatedError("not signed in")
    if row.expires_at <= utcnow():
        raise NotAuthenticatedError("session expired; sign in again")
    user = db.get(User, row.user_id)
    if user is None or not user.active:
        raise NotAuthenticatedError("user is deactivated")
    return _principal(db, user, client, "web", csrf_token=row.csrf_token)


def sign_out(db: Session, who: Principal, token: str) -> None:
    """Revoke the session behind ``token``."""
    row = db.scalar(select(SessionRow).where(SessionRow.token_hash == _digest(token)))
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(db, who.origin, "sign_out", f"user:{who.username}")


def _revoke_sessions(db: Session, user_id: int, keep_csrf: str | None = None) -> None:
    query = select(SessionRow).where(SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None))
    if keep_csrf:
        query = query.where(SessionRow.csrf_token != keep_csrf)
    for row in db.scalars(query):
        row.revoked_at = utcnow()


def csrf_ok(who: Principal, presented: str | None) -> bool:
    """Tell whether ``presented`` matches the session's CSRF token (constant-time comparison)."""
    return bool(who.csrf_token and presented and hmac.compare_digest(who.csrf_token, presented))


# --- API tokens ----------------------------------------------------------------------------------


def create_token(db: Session, origin: audit.Origin, user_id: int, name: str, days: int) -> tuple[ApiToken, str]:
    """Issue an API token acting as user ``user_id``; returns the row and the secret (shown once)."""
    user = db.get(User, user_id)
    if user is None:
        raise NotFoundError(f"no user {user_id}")
    if not name.strip() or len(name) > 64:
        raise InvalidInputError("token name must have 1-64 characters")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ApiToken(
        name=name.strip(),
        user_id=user.id,
        token_hash=_digest(secret),
        prefix=secret[:12],
        created_at=now,
        expires_at=now + timedelta(days=days),
        created_by=origin.actor,
    )
    db.add(row)
    db.flush()
    audit.record(db, origin, "token_create", f"token:{row.id}", {"name": row.name, "user": user.username, "days": days})
    return row, secret


def revoke_token(db: Session, origin: audit.Origin, token_id: int) -> None:
    """Revoke an API token (idempotent)."""
    row = db.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record(db, origin, "token_revoke", f"token:{row.id}", {"name": row.name})


def list_tokens(db: Session) -> list[tuple[ApiToken, str]]:
    """Return every token (never the secret) with the name of its user, newest first."""
    rows = db.execute(select(ApiToken, User.username).join(User, User.id == ApiToken.user_id).order_by(ApiToken.id.desc())).all()
    return [(token, username) for token, username in rows]


def token_principal(db: Session, secret: str, client: str) -> Principal:
    """Return the principal of a bearer token.

    Raises
    ------
    NotAuthenticatedError
        Unknown, expired or revoked token, or inactive user.
    """
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == _digest(secret)))
    if row is None or row.revoked_at is not None:
        raise NotAuthenticatedError("invalid or revoked API token")
    if row.expires_at <= utcnow():
        raise NotAuthenticatedError("API token expired")
    user = db.get(User, row.user_id)
    if user is None or not user.active:
        raise NotAuthenticatedError("the token's user is deactivated")
    return _principal(db, user, client, "api", token_id=row.id)
