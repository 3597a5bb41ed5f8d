"""Score a small batch of manifest lines in-process for ``POST /score``.

The scorer is any callable DataFrame -> DataFrame that appends ``risk_score``, ``channel``,
``reasons``, ``suspected_commodity`` and ``model_version`` to valid canonical lines. The service
loads it once at start-up with :func:`load_scorer`, or the caller injects one. With a history
store, the scorer reads the lines' history from it (``past=store``) and the scored lines are then
appended to it, as batch scoring does, so the API and batch files read and feed one history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import pandas as pd

from features.history_store import HistoryStore
from features.schema import CANONICAL_COLUMNS, LABEL_COLUMNS, REASON_COLUMN, validate_manifest
from serve.triage.errors import ModelUnavailableError

Scorer = Callable[..., pd.DataFrame]  # scorer(lines) or scorer(lines, past=store) -> scored lines
DECLARED_COLUMNS = tuple(c for c in CANONICAL_COLUMNS if c not in LABEL_COLUMNS)
REASON_SEPARATOR = " | "


def load_model_bundle(model_uri: str):
    """Load the model bundle at ``model_uri`` (a ``models.bundle.ModelBundle``).

    The model modules are imported here and in :func:`scorer_for`, not at module import, so that
    the service starts without them when no model is configured.
    """
    from models.bundle import load_bundle

    return load_bundle(model_uri)


def scorer_for(bundle) -> Scorer:
    """A scorer bound to a loaded bundle."""
    from models.predict import score_frame

    return partial(score_frame, bundle)


def load_scorer(model_uri: str) -> Scorer:
    """Load the model bundle at ``model_uri`` once and return a scorer bound to it."""
    return scorer_for(load_model_bundle(model_uri))


@dataclass(frozen=True)
class ScoreResult:
    """Per-line scores of the valid lines and reasons of the rejected ones (as plain dicts)."""

    scores: list[dict]
    rejected: list[dict]


def split_reasons(text: object) -> list[str]:
    """Split a ``reasons`` string ("a | b | c") into its phrases; missing or empty gives []."""
    if text is None or (isinstance(text, float) and pd.isna(text)) or text is pd.NA:
        return []
    return [phrase.strip() for phrase in str(text).split("|") if phrase.strip()]


def _rejected(quarantine: pd.DataFrame) -> list[dict]:
    return [
        {"declaration_id": str(row["declaration_id"]), "line_no": int(row["line_no"]), "reason": str(row[REASON_COLUMN])}
        for _, row in quarantine.iterrows()
    ]


def score_lines(
    scorer: Scorer | None,
    lines: list[dict],
    store: HistoryStore | None = None,
    append: Callable[[pd.DataFrame], object] | None = None,
) -> ScoreResult:
    """Validate lines with the manifest rules and score the valid ones.

    Parameters
    ----------
    scorer : Scorer or None
        The loaded model; None when the service has none. Called as ``scorer(valid_lines)``, or
        ``scorer(valid_lines, past=store)`` with a store.
    lines : list of dict
        Declared canonical columns per line (dates as ``date`` or ISO strings).
    store : HistoryStore, optional
        History store: the history features read the events of the lines' parties and flows from it
        (not its copies of the lines themselves), and the valid lines are appended to it once scored.
        Without it, the lines are their own history.
    append : callable, optional
        What takes the valid lines once scored, with a store (default ``store.append``); a scoring
        worker hands them to :class:`serve.triage.append_behind.AppendBehind`, which appends them
        after the answer is sent.

    Returns
    -------
    ScoreResult

    Raises
    ------
    ModelUnavailableError
        When no model is loaded.
    """
    if scorer is None:
        raise ModelUnavailableError("no scoring model is loaded (set MISDECLARE_MODEL_URI)")
    raw = pd.DataFrame(lines, columns=list(DECLARED_COLUMNS))
    raw["declared_at"] = raw["declared_at"].map(lambda value: value.isoformat() if hasattr(value, "isoformat") else value)
    result = validate_manifest(raw, "request")
    rejected = _rejected(result.quarantine)
    if result.valid.empty:
        return ScoreResult(scores=[], rejected=rejected)
    scored = scorer(result.valid) if store is None else scorer(result.valid, past=store)
    answered = ["declaration_id", "line_no", "risk_score", "channel", "reasons", "suspected_commodity", "model_version"]
    scores = [
        {
            "declaration_id": str(row.declaration_id),
            "line_no": int(row.line_no),
            "risk_score": float(row.risk_score),
            "channel": str(row.channel),
            "reasons": split_reasons(row.reasons),
            "suspected_commodity": str(row.suspected_commodity),
            "model_version": str(row.model_version),
        }
        for row in scored[answered].itertuples(index=False)  # not the other columns, which cost time
    ]
    if store is not None:  # once the answer is built: an append behind it does not compete with it
        (append or store.append)(result.valid)
    return ScoreResult(scores=scores, rejected=rejected)
