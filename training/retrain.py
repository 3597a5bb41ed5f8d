"""Retraining: gather labels, train a challenger, compare it with the champion, decide, record.

The job behind ``misdeclare retrain``:

1. **Labels.** Labelled lines from files in the canonical schema and, when the caller passes them,
   from the triage database's outcomes (a line in both counts once, with the database's outcome).
2. **Comparison window.** The latest ``comparison_window_days`` days up to the last labelled day.
   The challenger is trained with :func:`training.train.train_model` (the settings of
   ``misdeclare train``) on the lines declared before ``window start - label_delay_days`` only, so
   neither model has trained on the window; the champion must have been validated before the
   window starts. The registered challenger is that very model (what is promoted is what was
   measured), not a refit including the window.
3. **Selection bias.** Labels exist only for inspected lines, and the model picks most of them.
   Lines carry ``selection_probability`` (1.0 when the model flagged them, ``picked / pool`` for
   random exploration checks, see :mod:`serve.triage.exploration`); each labelled training line
   is weighted by ``1 / max(p, min_selection_probability)`` (weight 1 without a probability), so
   that the few random checks stand for the unflagged lines they were drawn from. The hit rate of
   the exploration checks is reported as an unbiased estimate of the base rate.
4. **Comparison.** Both models score every line of the window through
   :func:`models.predict.score_frame` with every earlier line as history, outcomes visible only
   for lines declared before the challenger's training cut-off (as
   :func:`training.train.hide_labels_outside` does for held-out periods). Two metrics, overall and
   per slice of :func:`training.evaluate.slice_masks` (shipper, cover family, route, export
   country, commodity, disguise) plus ``selected_by`` when known: the average precision of the
   ranking of the window's labelled lines (as ``misdeclare evaluate`` measures it), and the recall
   at the inspection rate: the share of the known misdeclared lines that fall within the top
   ``inspection_rate`` of *all* the window's lines, i.e. what each model would have caught with the
   same inspection capacity. Both count each labelled line with the same weight as in training
   (its inverse selection probability): measured on the labelled lines alone, the champion is
   judged on the lines it chose to inspect, where it shines, and a challenger that learned what
   the random checks found among the lines the champion passed over could never win.
5. **Decision** (:func:`decide`): promote only when the challenger's average precision beats the
   champion's by at least ``min_gain`` and no measured slice loses more than ``slice_tolerance``
   in average precision or recall at ``inspection_rate``.
6. **Record and apply.** One MLflow run ("retrain") holds the numbers side by side, the decision
   and its reason (tags and ``retrain/report.json``), the drift report and the challenger's bundle.
   Unless dry-running, the bundle is then registered, promoted when so decided with
   :func:`models.promotion.promote` (lock + compare-and-set on ``champion``, which aborts when
   another retrain or a rollback moved it meanwhile), and given the alias ``challenger``. Aliases
   move last: a retrain that fails or is interrupted before leaves them as they were.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from features.history import line_keys
from features.schema import KEY_COLUMNS, SELECTED_BY, SELECTION_PROBABILITY, validate_manifest
from training.asof import Window, declared_between, iso, scoring_view
from training.config import TrainConfig, layered_settings
from training.drift import DriftReport, DriftSettings, drift_report
from training.evaluate import ALL, is_labelled, slice_masks
from training.split import exploration_checks, window_split
from training.train import TrainResult, train_model

WEIGHT_COLUMN = "selection_weight"
AVERAGE_PRECISION = "average_precision"
PROMOTE, KEEP = "promote", "keep"
PROMOTED, KEPT, DRY_RUN, ABORTED = "promoted", "kept", "dry-run", "aborted"
DATABASE_SOURCE = "triage database"
_DAY = pd.Timedelta(days=1)


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class RetrainSettings:
    """Settings of a retrain (see ``training/data/retrain.yaml`` for what each one means)."""

    comparison_window_days: int
    min_gain: float
    slice_tolerance: float
    inspection_rate: float
    slice_min_positives: int
    min_selection_probability: float
    lock_timeout_seconds: float
    drift: DriftSettings

    def __post_init__(self):
        if self.comparison_window_days < 1:
            raise ValueError(f"comparison_window_days must be >= 1, got {self.comparison_window_days}")
        if self.slice_tolerance < 0:
            raise ValueError(f"slice_tolerance must be >= 0, got {self.slice_tolerance}")
        if not 0 < self.inspection_rate <= 1:
            raise ValueError(f"inspection_rate must be in (0, 1], got {self.inspection_rate}")
        if self.slice_min_positives < 1:
            raise ValueError(f"slice_min_positives must be >= 1, got {self.slice_min_positives}")
        if not 0 < self.min_selection_probability <= 1:
            raise ValueError(f"min_selection_probability must be in (0, 1], got {self.min_selection_probability}")
        if self.lock_timeout_seconds < 0:
            raise ValueError(f"lock_timeout_seconds must be >= 0, got {self.lock_timeout_seconds}")

    @property
    def recall_metric(self) -> str:
        """Name of the recall metric at the inspection rate, e.g. ``recall_at_5pct``."""
        return f"recall_at_{self.inspection_rate * 100:g}pct"

    @property
    def checked_metrics(self) -> tuple[str, str]:
        """The metrics no slice may lose more than the tolerance in."""
        return AVERAGE_PRECISION, self.recall_metric


def load_retrain_settings(path: str | Path | None = None, **overrides) -> RetrainSettings:
    """Read the default settings, then a user YAML (if given), then keyword overrides (None: ignored).

    Raises
    ------
    ValueError
        On an unknown setting name or an out-of-range value.
    """
    values = layered_settings(
        "retrain.yaml", path, overrides, {f.name for f in fields(RetrainSettings)}, "retrain", nested=("drift",)
    )
    unknown = sorted(set(values["drift"]) - {f.name for f in fields(DriftSettings)})
    if unknown:
        raise ValueError(f"unknown retrain setting(s) {[f'drift.{k}' for k in unknown]}")
    return RetrainSettings(**{**values, "drift": DriftSettings(**values["drift"])})


# ----------------------------------------------------------------------------- labels


@dataclass
class LabelSet:
    """Lines gathered for retraining.

    Attributes
    ----------
    lines : DataFrame
        Validated lines from every source, sorted by declaration date (files' unlabelled lines
        included: the pipeline's typical values and the history features use them).
    quarantine : DataFrame
        Rows that failed validation, with ``source_file``.
    lines_read : int
    files : list of str
    database_lines : int
        Lines taken from the triage database (0 when not configured or empty).
    database_note : str
        What happened with the triage database (for the report).
    """

    lines: pd.DataFrame
    quarantine: pd.DataFrame
    lines_read: int
    files: list[str]
    database_lines: int
    database_note: str


def gather_labels(paths: list[str | Path], database: pd.DataFrame | None = None, database_note: str = "") -> LabelSet:
    """Read and validate labelled files and the triage database's labelled lines; merge them.

    Parameters
    ----------
    paths : list of path
        Labelled files in the canonical schema (may be empty when ``database`` has lines).
    database : DataFrame, optional
        Labelled lines exported from the triage database (:func:`serve.triage.export.labels_frame`);
        a line also present in a file is taken from here (the outcome in force).
    database_note : str
        Passed through to the report.

    Raises
    ------
    ValueError
        When no source gives any line.
    """
    from training.jobs import read_labelled

    parts, quarantined, read = [], [], 0
    if paths:
        data = read_labelled(list(paths))
        parts.append(data.lines)
        quarantined.append(data.quarantine)
        read += data.lines_read
    db_count = 0
    if database is not None and len(database):
        checked = validate_manifest(database, DATABASE_SOURCE)
        quarantined.append(checked.quarantine.assign(source_file=DATABASE_SOURCE))
        read += len(database)
        db_count = len(checked.valid)
        parts = [p[~line_keys(p).isin(line_keys(checked.valid))] for p in parts] + [checked.valid]
    if not parts or sum(len(p) for p in parts) == 0:
        raise ValueError(
            "no labelled lines: pass --labels files or configure the triage database "
            f"(MISDECLARE_DATABASE_URL){'; ' + database_note if database_note else ''}"
        )
    lines = pd.concat(parts, ignore_index=True).sort_values(["declared_at", *KEY_COLUMNS], kind="stable", ignore_index=True)
    quarantine = pd.concat(quarantined, ignore_index=True) if quarantined else pd.DataFrame()
    return LabelSet(lines, quarantine, read, [str(p) for p in paths], db_count, database_note)


def selection_probabilities(lines: pd.DataFrame) -> np.ndarray:
    """Each line's ``selection_probability`` as floats (NaN where unknown).

    Raises
    ------
    ValueError
        When a given probability is not a number in (0, 1].
    """
    if SELECTION_PROBABILITY not in lines.columns:
        return np.full(len(lines), np.nan)
    raw = lines[SELECTION_PROBABILITY]
    text = raw.astype("string").str.strip()
    given = text.notna() & (text != "")
    values = pd.to_numeric(raw.where(given.to_numpy()), errors="coerce").to_numpy("float64", na_value=np.nan)
    bad = given.to_numpy() & ~((values > 0) & (values <= 1))
    if bad.any():
        first = lines.loc[bad, [*KEY_COLUMNS, SELECTION_PROBABILITY]].iloc[0].tolist()
        raise ValueError(
            f"{int(bad.sum())} line(s) have a selection_probability outside (0, 1], e.g. {first[0]}/{first[1]}: {first[2]!r}"
        )
    return values


def inverse_probability_weights(lines: pd.DataFrame, min_probability: float) -> np.ndarray:
    """Training weight of each line: ``1 / max(p, min_probability)``, 1 where ``p`` is unknown.

    A line drawn at random with probability ``p`` stands for ``1/p`` lines like it, most of which
    were never inspected; the floor bounds the weight of any single line.
    """
    p = selection_probabilities(lines)
    return np.where(np.isnan(p), 1.0, 1.0 / np.maximum(p, min_probability))


@dataclass(frozen=True)
class HitRate:
    """Misdeclared share of the labelled exploration checks, with a 95 % Wilson interval."""

    lines: int
    positives: int
    rate: float
    low: float
    high: float


def wilson_interval(positives: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a proportion (stays inside [0, 1] and is usable at 0 positives)."""
    if n == 0:
        return float("nan"), float("nan")
    share = positives / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def exploration_hit_rate(lines: pd.DataFrame) -> HitRate | None:
    """Hit rate of the labelled lines picked by the exploration share; None when there are none.

    Random checks are drawn uniformly among the lines the model did not flag, so their hit rate
    estimates the base rate of misdeclaration among those lines without the model's selection bias.
    """
    picked = exploration_checks(lines)
    if picked.empty:
        return None
    n, k = len(picked), int(picked["misdeclared"].astype("int64").sum())
    low, high = wilson_interval(k, n)
    return HitRate(n, k, k / n, low, high)


# ----------------------------------------------------------------------------- window


def comparison_window(lines: pd.DataFrame, days: int, label_delay_days: int) -> Window:
    """The last ``days`` whole days up to the last labelled day; training cut-off ``label_delay_days`` earlier.

    Raises
    ------
    ValueError
        When no line is labelled.
    """
    labelled_dates = pd.to_datetime(lines.loc[is_labelled(lines), "declared_at"])
    if labelled_dates.empty:
        raise ValueError("no labelled (inspected, with an outcome) line to compare the models on")
    end = labelled_dates.max().normalize() + _DAY
    start = end - days * _DAY
    return Window(0, start - label_delay_days * _DAY, start, end)


def check_window(lines: pd.DataFrame, window: Window, min_positives: int) -> None:
    """Refuse a window without enough labelled lines of both classes, or without earlier lines.

    Raises
    ------
    ValueError
    """
    inside = lines[declared_between(lines, window.start, window.end)]
    target = inside[is_labelled(inside)]
    positives = int(target["misdeclared"].astype("int64").sum())
    if positives < min_positives or positives == len(target):
        raise ValueError(
            f"the comparison window {iso(window.start)}..{iso(window.end - _DAY)} holds "
            f"{len(target)} labelled line(s), {positives} misdeclared: at least {min_positives} "
            f"misdeclared and one clean line are needed to compare the models"
        )
    if not declared_between(lines, None, window.train_end).any():
        raise ValueError(
            f"no line is declared before {iso(window.train_end)} (the comparison window minus the "
            f"label delay): nothing to train the challenger on"
        )


def check_champion_before(spec: dict, window: Window) -> dict | None:
    """The champion's training periods; refuse a champion validated inside the window.

    Raises
    ------
    ValueError
        When the champion was fitted or validated on lines of the window.
    """
    periods = (spec.get("training") or {}).get("periods")
    if not periods:
        return None
    if pd.Timestamp(periods["valid_end"]) > window.start:
        raise ValueError(
            f"the champion was trained and validated on lines up to {periods['valid_end']}, inside "
            f"the comparison window from {iso(window.start)}: the comparison would favour it; "
            f"retrain when labels newer than its training have arrived"
        )
    return periods


def train_challenger(lines: pd.DataFrame, window: Window, config: TrainConfig, reference_dir: str | None = None) -> TrainResult:
    """Train on the lines declared before the window's training cut-off, weighted by ``WEIGHT_COLUMN``."""
    # Fit as close to the window as the label delay allows; the window itself is the test period.
    upto = lines[declared_between(lines, None, window.end)]
    before, measured = (
        upto[declared_between(upto, None, window.train_end)],
        upto[declared_between(upto, window.start, window.end)],
    )
    try:
        split = window_split(before, window.train_end, config.valid_fraction, config.label_delay_days, test=measured)
        return train_model(upto, config, reference_dir, split=split, weight_column=WEIGHT_COLUMN)
    except ValueError as exc:
        raise ValueError(f"cannot train the challenger on the lines declared before {iso(window.train_end)}: {exc}") from exc


def slice_groups(target: pd.DataFrame, past: pd.DataFrame, reference_dir: str | None = None) -> dict[tuple[str, str], np.ndarray]:
    """Masks of the evaluation's slices over the window's labelled lines, plus ``selected_by``."""
    from features.reference import load_reference
    from features.transformers import DeclaredHSFeatures, RouteFeatures

    cover = DeclaredHSFeatures(reference_dir=reference_dir).fit(target.head(0)).transform(target)["cover_family"]
    route = RouteFeatures(reference_dir=reference_dir).fit(target.head(0)).transform(target)
    earlier_shippers = set(past["shipper_id"].dropna()) if "shipper_id" in past.columns else set()
    positive = target["misdeclared"].to_numpy("int64") == 1
    masks = slice_masks(
        target, positive, earlier_shippers, cover, route["via_hub"].to_numpy() == 1.0, load_reference(reference_dir).commodities
    )
    if SELECTED_BY in target.columns:
        selected = target[SELECTED_BY].astype("string").fillna("unknown").to_numpy(dtype=object)
        for group in sorted(set(selected)):
            masks[(SELECTED_BY, str(group))] = selected == group
    return masks


@dataclass(frozen=True)
class ModelScores:
    """One model's view of the window's labelled lines.

    Attributes
    ----------
    scores : ndarray
        Risk score of each labelled line.
    flagged : ndarray of bool
        Whether each labelled line is among the top ``inspection_rate`` of *all* the window's lines
        (labelled or not): the lines the model would send to inspection at that capacity.
    """

    scores: np.ndarray
    flagged: np.ndarray


def model_scores(all_scores: np.ndarray, labelled: np.ndarray, rate: float) -> ModelScores:
    """Scores and capacity flags (:func:`training.metrics.top_k_mask` over every line) of the labelled lines."""
    from training.metrics import top_k_mask

    return ModelScores(np.asarray(all_scores)[labelled], top_k_mask(all_scores, rate)[labelled])


def slice_metrics(
    y: np.ndarray, model: ModelScores, mask: np.ndarray, recall_metric: str, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Average precision among the slice's labelled lines, and recall at the inspection rate.

    The recall is the share of the slice's known misdeclared lines that the model flags within
    its capacity over the whole window: how much of, say, one route's known fraud it would catch.
    With ``weights`` (inverse selection probabilities) each labelled line counts for the lines it
    was drawn from: a random check among unflagged lines stands for its whole pool, so a model is
    not judged only on the lines the champion chose to inspect.
    """
    from sklearn.metrics import average_precision_score

    weights = np.ones(len(y)) if weights is None else np.asarray(weights, dtype="float64")
    positives = mask & (y == 1)
    both = 0 < positives.sum() < mask.sum()
    average_precision = (
        float(average_precision_score(y[mask], model.scores[mask], sample_weight=weights[mask])) if both else float("nan")
    )
    recall = float(np.average(model.flagged[positives], weights=weights[positives])) if positives.any() else float("nan")
    return {AVERAGE_PRECISION: average_precision, recall_metric: recall}


def compare_scores(
    y: np.ndarray,
    champion: ModelScores | None,
    challenger: ModelScores,
    masks: dict[tuple[str, str], np.ndarray],
    settings: RetrainSettings,
    weights: np.ndarray | None = None,
) -> pd.DataFrame:
    """Metrics of both models per slice, side by side (:func:`slice_metrics`, weighted by ``weights``).

    Returns
    -------
    DataFrame
        One row per slice, group and metric: ``slice, group, lines, positives, measured, metric,
        champion, challenger, change`` (challenger minus champion; champion NaN without a
        champion). A group is ``measured`` with at least ``slice_min_positives`` misdeclared and
        one clean labelled line.
    """
    rows = []
    for (slice_name, group), mask in masks.items():
        positives = int(y[mask].sum())
        measured = positives >= settings.slice_min_positives and positives < int(mask.sum())
        challenger_values = slice_metrics(y, challenger, mask, settings.recall_metric, weights)
        champion_values = {} if champion is None else slice_metrics(y, champion, mask, settings.recall_metric, weights)
        for metric, chall in challenger_values.items():
            champ = champion_values.get(metric, float("nan"))
            rows.append(
                {
                    "slice": slice_name,
                    "group": group,
                    "lines": int(mask.sum()),
                    "positives": positives,
                    "measured": measured,
                    "metric": metric,
                    "champion": champ,
                    "challenger": chall,
                    "change": chall - champ,
                }
            )
    return pd.DataFrame(
        rows, columns=["slice", "group", "lines", "positives", "measured", "metric", "champion", "challenger", "change"]
    )


@dataclass(frozen=True)
class Decision:
    """Promote or keep, and why.

    Attributes
    ----------
    action : str
        "promote" or "keep".
    reason : str
        One sentence with the numbers that decided.
    gain : float
        Challenger minus champion average precision on the whole window (NaN without a champion).
    drops : list of dict
        Measured slice metrics that dropped by more than the tolerance, largest drop first.
    same_as_champion : bool
        The challenger's bundle is the champion's, file for file (same manifest SHA-256): the same
        labels and settings trained the same model again.
    """

    action: str
    reason: str
    gain: float
    drops: list[dict]
    same_as_champion: bool = False

    @property
    def promote(self) -> bool:
        """Whether the challenger is to become champion."""
        return self.action == PROMOTE


def _slice_drops(table: pd.DataFrame, metrics: tuple[str, ...], tolerance: float) -> list[dict]:
    checked = table[table["measured"] & table["metric"].isin(metrics)]
    drop = checked["champion"] - checked["challenger"]
    dropped = checked[(drop > tolerance).to_numpy()].assign(drop=drop[drop > tolerance])
    dropped = dropped.sort_values(["drop", "slice", "group"], ascending=[False, True, True], kind="stable")
    return dropped[["slice", "group", "metric", "champion", "challenger", "drop"]].to_dict("records")


def decide(
    table: pd.DataFrame,
    min_gain: float,
    tolerance: float,
    metrics: tuple[str, ...],
    has_champion: bool = True,
    same_as_champion: bool = False,
) -> Decision:
    """The decision rule.

    1. Without a champion, the challenger is promoted.
    2. A challenger that is the champion's own bundle is not promoted again: ``previous`` would then
       name the same model, and a rollback would lose the version it is there to go back to (a
       retrain run again on unchanged labels, or after one killed once the champion had moved).
    3. Keep the champion unless the challenger's average precision on the whole window is at
       least ``min_gain`` above the champion's (``>=``: with 0.0 a challenger as good as the
       champion is promoted, the fresher model winning at equal measured quality).
    4. Keep the champion when any measured slice (including all lines) loses more than
       ``tolerance`` (strictly) in one of ``metrics``.
    5. Otherwise promote.

    Parameters
    ----------
    table : DataFrame
        :func:`compare_scores` output.
    min_gain, tolerance : float
    metrics : tuple of str
        Metrics checked per slice.
    has_champion : bool
    same_as_champion : bool
        The challenger's bundle has the champion's manifest SHA-256.
    """
    if not has_champion:
        return Decision(PROMOTE, "no champion is registered: the challenger becomes champion", float("nan"), [])
    if same_as_champion:
        return Decision(
            KEEP, "the challenger is the champion's model (same bundle SHA-256): nothing new to promote", 0.0, [], True
        )
    head = table[(table["slice"] == ALL) & (table["group"] == ALL) & (table["metric"] == AVERAGE_PRECISION)]
    if head.empty or not bool(head["measured"].iloc[0]) or not np.isfinite(head["change"].iloc[0]):
        return Decision(KEEP, "the comparison window has too few labelled lines of both classes to compare", float("nan"), [])
    champion, challenger = float(head["champion"].iloc[0]), float(head["challenger"].iloc[0])
    gain = challenger - champion
    if not gain >= min_gain:
        return Decision(
            KEEP,
            f"average precision {challenger:.3f} vs champion {champion:.3f}: gain {gain:+.3f} is "
            f"below the minimum gain {min_gain:.3f}",
            gain,
            [],
        )
    drops = _slice_drops(table, metrics, tolerance)
    if drops:
        worst = drops[0]
        return Decision(
            KEEP,
            f"{len(drops)} slice metric(s) drop by more than {tolerance:.3f}; worst: "
            f"{worst['slice']}={worst['group']} {worst['metric']} {worst['champion']:.3f} -> "
            f"{worst['challenger']:.3f}",
            gain,
            drops,
        )
    return Decision(
        PROMOTE,
        f"average precision {challenger:.3f} vs champion {champion:.3f} (gain {gain:+.3f} >= "
        f"{min_gain:.3f}) and no slice drops by more than {tolerance:.3f}",
        gain,
        [],
    )


# ----------------------------------------------------------------------------- the job


@dataclass
class RetrainOutcome:
    """Everything ``misdeclare retrain`` reports.

    Attributes
    ----------
    labels : LabelSet
    window : Window
    window_counts : dict
        Lines, labelled lines and misdeclared lines in the window.
    champion_version, challenger_version : str or None
        Registered versions ("N"); the challenger has none on a dry run.
    challenger : TrainResult
    comparison : DataFrame
        :func:`compare_scores` output.
    decision : Decision
    outcome : str
        "promoted", "kept", "dry-run" or "aborted" (the decision could not be applied).
    outcome_note : str
    exploration, exploration_window : HitRate or None
        Over every labelled line, and over the window.
    drift : DriftReport
    run_id : str
    document : dict
        Every number, as written to the run's ``retrain/report.json``.
    """

    labels: LabelSet
    window: Window
    window_counts: dict
    champion_version: str | None
    challenger_version: str | None
    challenger: TrainResult
    comparison: pd.DataFrame
    decision: Decision
    outcome: str
    outcome_note: str
    exploration: HitRate | None
    exploration_window: HitRate | None
    drift: DriftReport
    run_id: str
    document: dict


@dataclass(frozen=True)
class RetrainRequest:
    """What to retrain and where to record it."""

    paths: list[str | Path]
    config: TrainConfig
    settings: RetrainSettings
    model_name: str
    tracking_uri: str | None = None
    dry_run: bool = False
    database: pd.DataFrame | None = None
    database_note: str = ""
    history: pd.DataFrame | None = None
    reference_dir: str | None = None


def _load_champion(model_name: str, version: str, tracking_uri: str | None, folder: Path):
    from models.bundle import load_bundle_folder
    from models.registry import download_registered_bundle

    path, label, expected = download_registered_bundle(f"models:/{model_name}/{version}", tracking_uri, folder)
    return load_bundle_folder(path, version=label, expected_manifest_sha256=expected)


def _window_counts(lines: pd.DataFrame, window: Window) -> dict:
    inside = lines[declared_between(lines, window.start, window.end)]
    target = inside[is_labelled(inside)]
    positives = int(target["misdeclared"].astype("int64").sum())
    return {"lines": len(inside), "labelled": len(target), "positives": positives}


def compare_on_window(
    champion,
    challenger,
    lines: pd.DataFrame,
    current: pd.DataFrame,
    past: pd.DataFrame,
    settings: RetrainSettings,
    num_threads: int,
    reference_dir: str | None = None,
) -> pd.DataFrame:
    """Score the window's lines with both bundles (the champion may be None) and compare them per slice,
    each labelled line weighted by its ``WEIGHT_COLUMN`` (inverse selection probability) if present."""
    from models.predict import score_frame

    known = is_labelled(lines.loc[current.index])
    target = lines.loc[current.index][known]
    scored = {}
    for name, bundle in (("champion", champion), ("challenger", challenger)):
        if bundle is not None:
            risk = score_frame(bundle, current, explain="none", num_threads=num_threads, past=past)
            scored[name] = model_scores(risk["risk_score"].to_numpy(), known, settings.inspection_rate)
    weights = target[WEIGHT_COLUMN].to_numpy("float64") if WEIGHT_COLUMN in target else None
    return compare_scores(
        target["misdeclared"].to_numpy("int64"),
        scored.get("champion"),
        scored["challenger"],
        slice_groups(target, past, reference_dir),
        settings,
        weights,
    )


@dataclass
class Challenge:
    """A challenger trained and compared with the champion on the latest labels (see :func:`challenge`).

    Attributes
    ----------
    lines : DataFrame
        The lines, with their training weight (``WEIGHT_COLUMN``).
    window : Window
    result : TrainResult
    challenger : ModelBundle
        Loaded from ``folder``, where its files are.
    manifest_sha256 : str
    current, past : DataFrame
        The window's lines and their history (:func:`training.asof.scoring_view`).
    table : DataFrame
        :func:`compare_scores` output.
    decision : Decision
    """

    lines: pd.DataFrame
    window: Window
    result: TrainResult
    challenger: object
    manifest_sha256: str
    current: pd.DataFrame
    past: pd.DataFrame
    table: pd.DataFrame
    decision: Decision


def challenge(
    lines: pd.DataFrame,
    champion,
    settings: RetrainSettings,
    config: TrainConfig,
    folder: Path,
    history: pd.DataFrame | None = None,
    reference_dir: str | None = None,
) -> Challenge:
    """The retrain decision, without side effects but the challenger's files in ``folder``.

    Weighs ``lines`` by inverse selection probability, takes the comparison window (the last
    ``comparison_window_days`` of labels), trains the challenger on the lines before it, scores
    the window with both models and decides (:func:`decide`).

    Raises
    ------
    ValueError
        Unusable labels or window, or a champion validated inside the window.
    """
    from models.bundle import load_bundle_folder, save_bundle

    weights = inverse_probability_weights(lines, settings.min_selection_probability)
    lines = lines.assign(**{WEIGHT_COLUMN: weights})
    window = comparison_window(lines, settings.comparison_window_days, config.label_delay_days)
    check_window(lines, window, settings.slice_min_positives)
    if champion is not None:
        check_champion_before(champion.spec, window)
    result = train_challenger(lines, window, config, reference_dir)
    manifest_sha = save_bundle(folder, result.booster, result.spec, result.commodity_booster)
    challenger = load_bundle_folder(folder, version="challenger")
    current, past = scoring_view(lines, window, history)
    table = compare_on_window(champion, challenger, lines, current, past, settings, config.num_threads, reference_dir)
    same = champion is not None and champion.manifest_sha256 == manifest_sha
    decision = decide(table, settings.min_gain, settings.slice_tolerance, settings.checked_metrics, champion is not None, same)
    return Challenge(lines, window, result, challenger, manifest_sha, current, past, table, decision)


def run_retrain(request: RetrainRequest) -> RetrainOutcome:
    """Gather labels, run :func:`challenge`, log to MLflow and apply the decision.

    Raises
    ------
    ValueError
        Unusable labels, window or champion (nothing is registered or moved).

    A promotion that cannot happen (the champion moved meanwhile, the lock stayed busy) is not
    raised: it is the outcome "aborted".
    """
    from models.registry import CHAMPION, alias_version

    settings, config = request.settings, request.config
    labels = gather_labels(request.paths, request.database, request.database_note)
    # The decision is made against this version; the promotion re-checks it under the lock.
    champion_version = alias_version(request.model_name, CHAMPION, request.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="misdeclare-retrain-") as scratch:
        folder = Path(scratch)
        champion = None
        if champion_version is not None:
            champion = _load_champion(request.model_name, champion_version, request.tracking_uri, folder / "champion")
        done = challenge(labels.lines, champion, settings, config, folder / "bundle", request.history, request.reference_dir)
        lines, window = done.lines, done.window
        drift = drift_report(
            champion or done.challenger,
            lines[declared_between(lines, None, window.train_end)],
            done.current,
            settings.drift,
            current_past=done.past,
            num_threads=config.num_threads,
        )
        pending = RetrainOutcome(
            labels=labels,
            window=window,
            window_counts=_window_counts(lines, window),
            champion_version=champion_version,
            challenger_version=None,
            challenger=done.result,
            comparison=done.table,
            decision=done.decision,
            outcome="pending",
            outcome_note="",
            exploration=exploration_hit_rate(lines),
            exploration_window=exploration_hit_rate(lines[declared_between(lines, window.start, window.end)]),
            drift=drift,
            run_id="",
            document={},
        )
        return record_and_apply(pending, request, folder / "bundle", done.manifest_sha256)


# ----------------------------------------------------------------------------- record


def _number(value):
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _hit_rate_dict(rate: HitRate | None) -> dict | None:
    return None if rate is None else {k: _number(v) for k, v in asdict(rate).items()}


def retrain_document(outcome: RetrainOutcome, request: RetrainRequest) -> dict:
    """Every number of a retrain as one JSON-compatible document (NaN as null)."""
    window = outcome.window
    return {
        "model_name": request.model_name,
        "dry_run": request.dry_run,
        "decision": {
            "action": outcome.decision.action,
            "reason": outcome.decision.reason,
            "gain": _number(outcome.decision.gain),
            "drops": [{k: _number(v) for k, v in d.items()} for d in outcome.decision.drops],
            "same_as_champion": outcome.decision.same_as_champion,
        },
        "outcome": outcome.outcome,
        "outcome_note": outcome.outcome_note,
        "champion": {"version": outcome.champion_version},
        "challenger": {
            "version": outcome.challenger_version,
            "periods": outcome.challenger.split.boundaries,
            "train_labelled_lines": outcome.challenger.spec["training"]["train_labelled_lines"],
            "metrics": {k: _number(v) for k, v in outcome.challenger.metrics.items()},
        },
        "window": {
            "start": iso(window.start),
            "end": iso(window.end - _DAY),
            "train_end": iso(window.train_end),
            **outcome.window_counts,
        },
        "settings": {
            **{k: _number(v) for k, v in asdict(request.settings).items() if k != "drift"},
            "label_delay_days": request.config.label_delay_days,
        },
        "labels": {
            "files": outcome.labels.files,
            "lines_read": outcome.labels.lines_read,
            "lines_valid": len(outcome.labels.lines),
            "lines_quarantined": len(outcome.labels.quarantine),
            "labelled": int(is_labelled(outcome.labels.lines).sum()),
            "database_lines": outcome.labels.database_lines,
            "database_note": outcome.labels.database_note,
        },
        "exploration": {"all": _hit_rate_dict(outcome.exploration), "window": _hit_rate_dict(outcome.exploration_window)},
        "comparison": [{k: _number(v) for k, v in row.items()} for row in outcome.comparison.to_dict("records")],
        "drift": outcome.drift.to_dict(),
    }


def _headline_metrics(table: pd.DataFrame) -> dict[str, float]:
    head = table[(table["slice"] == ALL) & (table["group"] == ALL)]
    metrics = {}
    for row in head.itertuples(index=False):
        metrics.update(
            {
                f"champion_{row.metric}": row.champion,
                f"challenger_{row.metric}": row.challenger,
                f"change_{row.metric}": row.change,
            }
        )
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def _decision_tags(outcome: RetrainOutcome) -> dict[str, str]:
    return {
        "job": "retrain",
        "retrain_decision": outcome.decision.action,
        "retrain_reason": outcome.decision.reason[:4900],
        "retrain_champion_version": str(outcome.champion_version),
        "retrain_window": f"{iso(outcome.window.start)}..{iso(outcome.window.end - _DAY)}",
    }


def _log_inputs(mlflow, outcome: RetrainOutcome, request: RetrainRequest) -> None:
    from training.tracking import data_fingerprint, git_commit, library_versions

    mlflow.log_params(request.config.as_dict())
    mlflow.log_params({f"retrain_{k}": v for k, v in asdict(request.settings).items() if k != "drift"})
    mlflow.log_params({f"period_{k}": v for k, v in outcome.challenger.split.boundaries.items()})
    mlflow.log_params(
        {
            "retrain_window_start": iso(outcome.window.start),
            "retrain_window_end": iso(outcome.window.end - _DAY),
            "retrain_dry_run": request.dry_run,
        }
    )
    rates = {f"exploration_{k}": v for k, v in asdict(outcome.exploration).items()} if outcome.exploration else {}
    mlflow.log_metrics(
        {
            **{f"challenger_{k}": v for k, v in outcome.challenger.metrics.items() if np.isfinite(v)},
            **_headline_metrics(outcome.comparison),
            **{k: float(v) for k, v in rates.items() if np.isfinite(v)},
        }
    )
    tags = {
        "git_commit": git_commit(),
        "database_labels": str(outcome.labels.database_lines),
        **{f"version_{k}": v for k, v in library_versions().items()},
        **_decision_tags(outcome),
    }
    if request.paths:
        tags.update({"data_sha256": data_fingerprint(request.paths), "data_files": ",".join(map(str, request.paths))})
    mlflow.set_tags(tags)


def _apply(outcome: RetrainOutcome, request: RetrainRequest, run_id: str, manifest_sha: str) -> tuple[str | None, str, str]:
    """Register the challenger, promote it when decided, then alias it; (version, outcome, note).

    ``challenger`` moves last, so that a failed promotion leaves every alias as it was (a new
    version without an alias is harmless). A challenger that is the champion's own bundle is not
    registered again: ``challenger`` names the champion's version.
    """
    from models.promotion import ChampionMoved, PromotionError, promote
    from models.registry import CHALLENGER, register_bundle, set_alias, version_manifest_sha256

    name, uri = request.model_name, request.tracking_uri
    if request.dry_run:
        return None, DRY_RUN, "dry run: nothing registered, aliases unchanged"
    if outcome.decision.same_as_champion and outcome.champion_version is not None:
        set_alias(name, CHALLENGER, outcome.champion_version, uri)
        return (
            outcome.champion_version,
            KEPT,
            f"champion stays version {outcome.champion_version}, which is this challenger's model: nothing registered",
        )
    version = register_bundle(run_id, "bundle", name, manifest_sha, uri)
    if not outcome.decision.promote:
        set_alias(name, CHALLENGER, version, uri)
        return version, KEPT, f"champion stays version {outcome.champion_version}; challenger is version {version}"
    try:
        move = promote(name, version, outcome.champion_version, uri, request.settings.lock_timeout_seconds)
    except ChampionMoved as exc:
        if exc.champion is not None and version_manifest_sha256(name, exc.champion, uri) == manifest_sha:
            # Another retrain of the same labels and settings promoted the same model first.
            return (
                version,
                KEPT,
                f"champion moved meanwhile from version {outcome.champion_version} to version {exc.champion}, "
                f"this challenger's model (same bundle SHA-256), promoted by another retrain; version "
                f"{version} registered without an alias",
            )
        return version, ABORTED, f"{exc} (version {version} registered without an alias)"
    except PromotionError as exc:
        return version, ABORTED, f"{exc} (version {version} registered without an alias)"
    set_alias(name, CHALLENGER, version, uri)
    previous = f" (previous: version {move.previous_after})" if move.previous_after else ""
    return version, PROMOTED, f"champion moved from version {move.champion_before} to {version}{previous}"


def record_and_apply(outcome: RetrainOutcome, request: RetrainRequest, bundle: Path, manifest_sha: str) -> RetrainOutcome:
    """Log the retrain run (inputs, numbers, decision, drift, bundle), then apply the decision.

    The aliases move last, after everything is recorded: a crash before leaves them as they were.

    Returns
    -------
    RetrainOutcome
        ``outcome`` with the registered version, what was applied, the run id and the document.
    """
    import mlflow

    from models.registry import resolve_tracking_uri
    from training.drift import log_drift
    from training.tracking import EXPERIMENT

    mlflow.set_tracking_uri(resolve_tracking_uri(request.tracking_uri))
    mlflow.set_experiment(EXPERIMENT)
    with mlflow.start_run(run_name="retrain") as run:
        _log_inputs(mlflow, outcome, request)
        log_drift(mlflow, outcome.drift)
        mlflow.log_text(outcome.comparison.to_csv(index=False), "retrain/comparison.csv")
        mlflow.log_artifacts(str(bundle), artifact_path="bundle")
        mlflow.set_tag("bundle_manifest_sha256", manifest_sha)
        version, applied, note = _apply(outcome, request, run.info.run_id, manifest_sha)
        outcome = replace(outcome, challenger_version=version, outcome=applied, outcome_note=note, run_id=run.info.run_id)
        outcome = replace(outcome, document={**retrain_document(outcome, request), "mlflow_run_id": run.info.run_id})
        mlflow.set_tags(
            {"retrain_outcome": applied, "retrain_outcome_note": note[:4900], "retrain_challenger_version": str(version)}
        )
        mlflow.log_text(json.dumps(outcome.document, indent=1), "retrain/report.json")
    return outcome
