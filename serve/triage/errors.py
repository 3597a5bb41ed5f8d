"""Domain errors of the triage service; the web layer maps each to one HTTP status."""

from __future__ import annotations


class TriageError(Exception):
    """Base class; ``status`` is the HTTP status the API answers with."""

    status = 400


class NotAuthenticatedError(TriageError):
    """No credentials, or credentials that are unknown, expired or revoked (401)."""

    status = 401


class ForbiddenError(TriageError):
    """Authenticated, but the role, the port or the CSRF token does not allow the action (403)."""

    status = 403


class NotFoundError(TriageError):
    """The case, user or token does not exist (404)."""

    status = 404


class ConflictError(TriageError):
    """The action would silently overwrite recorded history or duplicate a unique name (409)."""

    status = 409


class InvalidInputError(TriageError):
    """A value the request models could not rule out is invalid for the domain (422)."""

    status = 422


class ModelUnavailableError(TriageError):
    """No scoring model is configured or loaded (503)."""

    status = 503
