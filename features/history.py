"""Point-in-time entity and flow history: what was known about a line's parties before its date.

Every count here is over lines declared *strictly before* the line's date (same-day lines do not
see each other), and every outcome only once it was known: an inspected line's outcome counts for
a later line when ``outcome date + label_delay_days < line date``. So a line's history features
never change when a later line, or a label that became known later, changes.

Features are computed from :class:`PastEvents`, weighted events of earlier lines (lines per party
and day, outcomes per party and day, first uses of a code or route, lines per flow and day). The
events of a frame of lines carry weight 1 per line; a history store keeps them summed per key and
day and hands a batch only the events of the keys it touches; a line scored again is taken out by
its events with weight -1. Both give the same features, by the same code.

The computation is vectorised: events are encoded as sorted integer keys ``group * SPAN + day`` and
"how many events of my group before my day" is a difference of two ``searchsorted`` calls.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, Self, TypeAlias

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals
from sklearn.utils.validation import check_is_fitted

from features.reference import ReferenceTables, load_reference
from features.transformers import FeatureTransformer, as_float, as_text, via_hub_mask, with_columns

if TYPE_CHECKING:  # annotations only: no run-time dependency on typing_extensions
    from typing_extensions import TypeIs

ENTITY_COLUMNS = ("shipper_id", "consignee_id", "importer_id", "declarant_id")
HISTORY_COLUMNS = (
    "declaration_id",
    "line_no",
    "declared_at",
    "hs_code",
    "origin_country",
    "export_country",
    "port_of_loading",
    "port_of_discharge",
    "transshipment_ports",
    *ENTITY_COLUMNS,
    "inspected",
    "misdeclared",
)
_SPAN = 1 << 20  # more days than any manifest spans, so group * _SPAN + day never collides
EPOCH = pd.Timestamp("1970-01-01")  # day numbers count from it


def day_numbers(frame: pd.DataFrame) -> np.ndarray:
    """Days since 1970-01-01 of ``declared_at`` (int64)."""
    return ((pd.to_datetime(frame["declared_at"]) - EPOCH).dt.days).to_numpy(dtype="int64")


def count_before(
    event_group: np.ndarray,
    event_day: np.ndarray,
    query_group: np.ndarray,
    query_day: np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per query, the number (or weight sum) of events of the same group on a day < the query's day.

    Groups are non-negative integers; a query with group < 0 (unknown entity) gets NaN.
    """
    keys = event_group.astype("int64") * _SPAN + event_day
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order] if weights is not None else np.ones(len(keys)))])
    group = np.maximum(query_group, 0).astype("int64") * _SPAN
    counts = cumulative[np.searchsorted(keys, group + query_day, "left")] - cumulative[np.searchsorted(keys, group, "left")]
    return np.where(query_group >= 0, counts, np.nan)


def first_net_day(event_group: np.ndarray, event_day: np.ndarray, lines: np.ndarray, query_group: np.ndarray) -> np.ndarray:
    """Per query, the first day on which its group's events sum to more than zero lines.

    Events are summed per group and day first, so that a day whose lines were all taken out (weight
    -1) is not a first day. NaN for a query with group < 0 or whose group has no such day.
    """
    keys, inverse = np.unique(event_group.astype("int64") * _SPAN + event_day, return_inverse=True)
    kept = keys[np.bincount(inverse, weights=lines, minlength=len(keys)) > 0]  # by group, then day
    groups, first = np.unique(kept // _SPAN, return_index=True)
    by_group = np.full(int(max(query_group.max(initial=-1), groups.max(initial=-1))) + 1, np.nan)
    by_group[groups] = (kept % _SPAN)[first]
    return np.where(query_group >= 0, by_group[np.maximum(query_group, 0)] if len(by_group) else np.nan, np.nan)


def count_in_window(
    event_group: np.ndarray,
    event_day: np.ndarray,
    query_group: np.ndarray,
    query_day: np.ndarray,
    start_offset: int,
    end_offset: int,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Per query, events (or their weight sum) of the same group with
    ``query_day - start_offset <= day < query_day - end_offset``."""
    keys = event_group.astype("int64") * _SPAN + event_day
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order] if weights is not None else np.ones(len(keys)))])
    group = np.maximum(query_group, 0).astype("int64") * _SPAN
    counts = (
        cumulative[np.searchsorted(keys, group + query_day - end_offset, "left")]
        - cumulative[np.searchsorted(keys, group + query_day - start_offset, "left")]
    )
    return np.where(query_group >= 0, counts, np.nan)


def switch_dates(reference: ReferenceTables) -> dict[str, str]:
    """Per target HS6 code, the date from which importing it directly from China stopped.

    That is the commodity's export ban when there is one, else its first licensing measure.
    """
    controls = reference.control_dates[reference.control_dates["kind"].isin(["ban", "licensing"])]
    by_commodity: dict[str, str] = {}
    for commodity in reference.commodities:
        measures = controls[controls["commodities"].str.split(";").map(lambda c, wanted=commodity: wanted in c)]
        bans = measures[measures["kind"] == "ban"]
        by_commodity[commodity] = (bans if len(bans) else measures)["date"].min().strftime("%Y-%m-%d")
    codes = reference.hs_codes[(reference.hs_codes["role"] == "target") & (reference.hs_codes["hs_prefix"].str.len() == 6)]
    return {prefix: by_commodity[commodity] for prefix, commodity in zip(codes["hs_prefix"], codes["commodity"])}


def flow_key(frame: pd.DataFrame) -> pd.Series:
    """The flow of a line: export country | HS heading | port of discharge."""
    return (
        as_text(frame, "export_country")
        + "|"
        + as_text(frame, "hs_code", "").str.slice(0, 4)
        + "|"
        + as_text(frame, "port_of_discharge")
    )


def relevant_past(past: pd.DataFrame, current: pd.DataFrame, entities: tuple[str, ...] = ENTITY_COLUMNS) -> pd.DataFrame:
    """Past lines sharing an entity (party or extra key) or a flow with a current line.

    These are the only past lines any feature reads; filtering first keeps scoring a small batch
    against a large history store cheap.
    """
    keep = flow_key(past).isin(set(flow_key(current)))
    for entity in entities:
        keep |= past[entity].isin(set(current[entity].dropna()))
    return past[keep.fillna(False).to_numpy(dtype=bool)]


def line_keys(frame: pd.DataFrame) -> pd.MultiIndex:
    """(declaration_id, line_no) as text, with line_no normalised: the store keeps it as a float."""
    line_no = pd.to_numeric(frame["line_no"], errors="coerce").astype("Int64").astype("string")
    return pd.MultiIndex.from_arrays([frame["declaration_id"].astype("string"), line_no])


def _codes(values: pd.Series) -> np.ndarray:
    codes, _ = pd.factorize(values, use_na_sentinel=True)
    return codes.astype("int64")


def hs6(frame: pd.DataFrame) -> pd.Series:
    """The declared HS subheading (first six digits; empty when missing)."""
    return as_text(frame, "hs_code", "").str.slice(0, 6)


def route_key(frame: pd.DataFrame) -> pd.Series:
    """The route a party used: export country > port of discharge."""
    return as_text(frame, "export_country") + ">" + as_text(frame, "port_of_discharge")


PARTY_EVENT_COLUMNS = ("entity", "key", "day", "lines", "outcomes", "positives")
VALUE_EVENT_COLUMNS = ("entity", "key", "kind", "value", "day", "lines")
FLOW_EVENT_COLUMNS = ("flow", "day", "lines")


_COUNTS = ("day", "lines", "outcomes", "positives")


def as_category(values: pd.Series | np.ndarray | list[str]) -> pd.Categorical:
    """Text values as a categorical with object categories (missing: code -1).

    Event keys are categoricals so that matching them to a batch's keys hashes each distinct key
    once, not every event; one category dtype everywhere lets event frames be concatenated.
    """
    text: np.ndarray | pd.Series = values  # type: ignore[assignment]  # narrowed just below
    if not (
        isinstance(values, np.ndarray)
        and values.dtype == object
        and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty")
    ):
        text = pd.Series(values, dtype="string")  # text already needs no conversion (a tenth of PastEvents.from_lines)
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    return pd.Categorical.from_codes(codes, categories=pd.Index(np.asarray(uniques, dtype=object), dtype=object))


def _event_frame(columns: tuple[str, ...]) -> pd.DataFrame:
    """An empty frame of events: integer counts, categorical text."""
    return pd.DataFrame({c: np.zeros(0, dtype="int64") if c in _COUNTS else as_category([]) for c in columns})


def concat_events(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Event frames stacked; categorical columns get the union of their categories."""
    frames = [f for f in frames if len(f)] or frames[:1]
    if len(frames) == 1:
        return frames[0].reset_index(drop=True)
    columns: dict[Hashable, pd.Categorical | np.ndarray] = {}
    for column in frames[0].columns:
        parts = [f[column] for f in frames]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            union = union_categoricals([p.array for p in parts])  # infers text categories: keep object
            columns[column] = pd.Categorical.from_codes(
                union.codes, categories=pd.Index(np.asarray(union.categories, dtype=object), dtype=object)
            )
        else:
            columns[column] = np.concatenate([p.to_numpy() for p in parts])
    return pd.DataFrame(columns)


@dataclass(frozen=True)
class PastEvents:
    """Weighted events of earlier lines: everything the history features read from them.

    Attributes
    ----------
    parties : DataFrame
        ``entity, key, day, lines, outcomes, positives``: lines of a party (``entity`` is the column,
        ``key`` its value) declared on ``day`` (days since 1970-01-01), and how many of them were
        inspected and found misdeclared (counted when ``day + label_delay_days`` has passed).
    values : DataFrame
        ``entity, key, kind, value, day, lines``: lines of a party with a given HS subheading
        (``hs6``), route (``route``) or, for consignees, direct imports from China by code
        (``cn_direct``).
    flows : DataFrame
        ``flow, day, lines``: lines per flow (:func:`flow_key`) and day.
    coverage_start : int or None
        First day the history holds (of all its lines, not only of these events); None if empty.

    Weights may be negative (a line taken out) and rows need not be unique per key and day: every
    feature sums them.
    """

    parties: pd.DataFrame
    values: pd.DataFrame
    flows: pd.DataFrame
    coverage_start: int | None

    @classmethod
    def empty(cls) -> PastEvents:
        return cls(_event_frame(PARTY_EVENT_COLUMNS), _event_frame(VALUE_EVENT_COLUMNS), _event_frame(FLOW_EVENT_COLUMNS), None)

    @classmethod
    def from_lines(cls, lines: pd.DataFrame, entities: tuple[str, ...] = ENTITY_COLUMNS, weight: int = 1) -> PastEvents:
        """One event per line and key, of weight ``weight`` (-1 takes the lines out of a sum).

        Rows come party column by party column (for each: its party events; its HS subheading, route
        and, for consignees, direct-from-China events), in line order within each. Each column is
        built once for all of them, not per party column and then concatenated (for a 100-line
        request that concatenation was a tenth of the scoring time), and from each text column's
        codes: its text is hashed once per line, not once per event.
        """
        if lines.empty:
            return cls.empty()
        days = day_numbers(lines)
        labelled = ((as_float(lines, "inspected") == 1) & np.isfinite(as_float(lines, "misdeclared"))).astype("int64")
        found = np.where(labelled == 1, as_float(lines, "misdeclared"), 0).astype("int64")
        codes, routes = _encoded(hs6(lines)), _encoded(route_key(lines))
        direct = ((as_text(lines, "origin_country") == "CN") & (as_text(lines, "export_country") == "CN")).to_numpy()
        parties: dict[str, list[_Piece]] = {"entity": [], "key": []}
        values: dict[str, list[_Piece]] = {"entity": [], "key": [], "kind": [], "value": []}
        party_rows: list[np.ndarray] = []  # the line of each event, piece by piece
        value_rows: list[np.ndarray] = []
        for entity in entities:
            if entity not in lines:
                continue
            key = _encoded(lines[entity])
            known = key[0] >= 0
            if not known.any():
                continue
            _extend(parties, party_rows, np.flatnonzero(known), entity=entity, key=key)
            for kind, value, rows in (("hs6", codes, known), ("route", routes, known), ("cn_direct", codes, known & direct)):
                if kind != "cn_direct" or entity == "consignee_id":
                    _extend(values, value_rows, np.flatnonzero(rows), entity=entity, key=key, kind=kind, value=value)
        flows = pd.DataFrame({"flow": as_category(flow_key(lines)), "day": days, "lines": weight})
        party_row = np.concatenate(party_rows) if party_rows else np.zeros(0, dtype="int64")
        value_row = np.concatenate(value_rows) if value_rows else np.zeros(0, dtype="int64")
        return cls(
            pd.DataFrame(
                {
                    **{c: _stacked_category(pieces) for c, pieces in parties.items()},
                    "day": days[party_row],
                    "lines": np.full(len(party_row), weight, dtype="int64"),
                    "outcomes": weight * labelled[party_row],
                    "positives": weight * found[party_row],
                }
            ),
            pd.DataFrame(
                {
                    **{c: _stacked_category(pieces) for c, pieces in values.items()},
                    "day": days[value_row],
                    "lines": np.full(len(value_row), weight, dtype="int64"),
                }
            ),
            flows.astype({"lines": "int64"}),
            int(days.min()),
        )

    def relevant_to(self, lines: pd.DataFrame, entities: tuple[str, ...] = ENTITY_COLUMNS) -> PastEvents:
        """The events of the parties and flows of ``lines`` (the only ones their features read)."""

        def of_parties(frame: pd.DataFrame) -> pd.DataFrame:
            keep = np.zeros(len(frame), dtype=bool)
            for entity in entities:
                if entity in lines:
                    keys = pd.Index(np.asarray(lines[entity].dropna().astype("string").unique(), dtype=object))
                    keep |= (frame["entity"] == entity).to_numpy() & (_category_positions(keys, frame["key"]) >= 0)
            return frame[keep].reset_index(drop=True)

        flows = pd.Index(np.asarray(flow_key(lines).unique(), dtype=object))
        return PastEvents(
            of_parties(self.parties),
            of_parties(self.values),
            self.flows[_category_positions(flows, self.flows["flow"]) >= 0].reset_index(drop=True),
            self.coverage_start,
        )

    @staticmethod
    def concat(*events: PastEvents) -> PastEvents:
        """All events together; the coverage starts at the earliest start."""
        starts = [e.coverage_start for e in events if e.coverage_start is not None]
        return PastEvents(
            concat_events([e.parties for e in events]),
            concat_events([e.values for e in events]),
            concat_events([e.flows for e in events]),
            min(starts) if starts else None,
        )


# A column of events in pieces: per piece, codes (-1: missing) into that piece's own categories.
_Piece: TypeAlias = tuple[np.ndarray, np.ndarray]


def _encoded(values: pd.Series) -> _Piece:
    """Per-line text as codes into its distinct values (missing: -1), each distinct value hashed once."""
    codes, uniques = pd.factorize(values.astype("string"), use_na_sentinel=True)
    return codes.astype("int64"), np.asarray(uniques, dtype=object)


def _extend(columns: dict[str, list[_Piece]], rows: list[np.ndarray], row: np.ndarray, **by_column: str | _Piece) -> None:
    """Add the events of the lines at positions ``row``: per column a text (the same for all) or
    per-line codes and their categories, as pieces that :func:`_stacked_category` puts together."""
    rows.append(row)
    for column, value in by_column.items():
        if isinstance(value, str):
            columns[column].append((np.zeros(len(row), dtype="int64"), np.array([value], dtype=object)))
        else:
            columns[column].append((value[0][row], value[1]))


def _stacked_category(pieces: list[_Piece]) -> pd.Categorical:
    """The pieces' text stacked, as :func:`as_category` of that text would encode it (categories in
    order of first appearance), without turning the codes back into text: a text value is hashed
    once per piece, not once per event (the value events of a line are a dozen)."""
    if not pieces:
        return as_category([])
    merged, categories = pd.factorize(np.concatenate([c for _, c in pieces]))
    offsets = np.cumsum([0] + [len(c) for _, c in pieces])
    # Each piece's codes into the merged categories (a missing value, code -1, takes the -1 appended).
    lookups = [np.append(merged[start:end], -1) for start, end in zip(offsets[:-1], offsets[1:], strict=True)]
    stacked = np.concatenate([lookup[codes] for (codes, _), lookup in zip(pieces, lookups, strict=True)])
    present = stacked >= 0
    order, first_seen = pd.factorize(stacked[present])  # integers, numbered in order of first appearance
    codes = np.full(len(stacked), -1, dtype="int64")
    codes[present] = order
    return pd.Categorical.from_codes(codes, categories=pd.Index(np.asarray(categories, dtype=object)[first_seen], dtype=object))


def _category_positions(keys: pd.Index, values: pd.Series) -> np.ndarray:
    """Position of each categorical value in ``keys`` (-1: absent or missing); each category hashed once."""
    by_category = np.append(keys.get_indexer(values.cat.categories), -1)  # code -1 (missing) -> -1
    return by_category[values.cat.codes.to_numpy()]


def first_uses_by_party(values: pd.DataFrame) -> pd.DataFrame:
    """The first day each party used each value of each kind (``entity, kind, key, value, day``).

    A day counts when the party's lines with that value on it, summed with their weights, are more
    than zero (a line taken out cancels its copy). One pass over all the value events: the
    features of every party column then read their rows from it.
    """
    net = _net(values, ["entity", "kind", "key", "value"])
    return net.groupby(["entity", "kind", "key", "value"], sort=False, observed=True)["day"].min().reset_index()


def _net(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows of ``frame`` summed over ``keys`` (and ``day``), keeping those with lines left."""
    summed = frame.groupby(keys + ["day"], sort=False, observed=True)["lines"].sum().reset_index()
    return summed[summed["lines"] > 0]


@dataclass(frozen=True)
class HistoryColumns:
    """History features already computed by :meth:`HistoryFeatures.features_from_events`.

    The Spark engine computes them per group of parties and flows, then scores a day's lines with
    the usual pipeline; passed as ``past``, they stand for the events they were computed from.

    Attributes
    ----------
    frame : DataFrame
        One row per line, same index as the lines, a column per history feature.
    """

    frame: pd.DataFrame

    def of(self, X: pd.DataFrame, names: list[str]) -> dict[str, np.ndarray]:
        """The columns ``names`` for the lines ``X`` (same index), as float arrays."""
        if not self.frame.index.equals(X.index):
            raise ValueError("HistoryColumns.frame must have the index of the lines it is passed with")
        missing = [name for name in names if name not in self.frame.columns]
        if missing:
            raise ValueError(f"HistoryColumns.frame lacks the history feature(s) {missing}")
        return {name: self.frame[name].to_numpy(dtype="float64", na_value=np.nan) for name in names}


class EventSource(Protocol):
    """What :meth:`HistoryFeatures.transform` reads from a history store: the events of the parties
    and flows of the lines it is given (:class:`features.history_store.HistoryStore`,
    :class:`features.history_store.FileHistory`)."""

    def events_for(
        self, lines: pd.DataFrame, entities: tuple[str, ...], flow_days: int | None, *, label_delay_days: int | None
    ) -> PastEvents: ...


Past: TypeAlias = pd.DataFrame | PastEvents | HistoryColumns | EventSource | None
"""What the history features of a batch are computed from (see :meth:`HistoryFeatures.transform`)."""


class LineHolder(Protocol):
    """A history that already holds the lines it is asked about (a file being scored,
    :class:`features.history_store.FileHistory`): their own events come from it too."""

    def events_with(
        self, lines: pd.DataFrame, entities: tuple[str, ...], flow_days: int | None, *, label_delay_days: int | None
    ) -> PastEvents: ...


def _holds_lines(past: object) -> TypeIs[LineHolder]:
    """Whether ``past`` holds the lines it is asked about (see :class:`LineHolder`)."""
    return hasattr(past, "events_with")


def _is_event_source(past: object) -> TypeIs[EventSource]:
    """Whether ``past`` reads events itself (a history store, or a store seen from a file being scored)."""
    return hasattr(past, "events_for")


class HistoryFeatures(FeatureTransformer):
    """Entity history, label-delayed misdeclaration rates, China-to-hub switches and flow surges.

    ``transform(X, past)`` computes features of the lines ``X`` from ``past`` (every line seen
    before: the training data and earlier scored batches) together with ``X`` itself. Lines of
    ``past`` with the same (declaration_id, line_no) as a line of ``X`` are the same line scored
    again and are dropped, so re-scoring a file never counts its lines twice.

    Parameters
    ----------
    label_delay_days : int
        Days between a line's date and its outcome being known.
    prior_strength : float
        Pseudo-count pulling an entity's misdeclaration rate toward the global rate.
    trailing_days, baseline_days : int
        Flow surge: volume in the last ``trailing_days`` vs. the ``baseline_days`` before them.
    reference_dir : str, optional
        Folder of the reference tables.
    extra_entities : tuple of str
        Further input columns whose values get the same history as a party (e.g. a source schema's
        goods profile); missing values have no history.
    tenure_unknown_days : int
        A party first seen within this many days of the first line the history holds (the store's
        coverage start) has an *unknown* tenure (NaN), not a short one: a deployment starts with an
        empty or partial store, and a firm trading for decades is not new because the store is.
    """

    _fitted_attributes = ("global_rate_", "hubs_", "switch_dates_", "numeric_features_")
    reason_group = "history"

    def __init__(
        self,
        label_delay_days: int = 30,
        prior_strength: float = 5.0,
        trailing_days: int = 28,
        baseline_days: int = 182,
        reference_dir: str | None = None,
        extra_entities: tuple[str, ...] = (),
        tenure_unknown_days: int = 0,
    ):
        self.label_delay_days = label_delay_days
        self.prior_strength = prior_strength
        self.trailing_days = trailing_days
        self.baseline_days = baseline_days
        self.reference_dir = reference_dir
        self.extra_entities = extra_entities
        self.tenure_unknown_days = tenure_unknown_days

    @property
    def entities(self) -> tuple[str, ...]:
        """The parties, then the extra entities (derived from params: saved specs need no new field)."""
        return ENTITY_COLUMNS + tuple(self.extra_entities)

    def fit(self, X: pd.DataFrame, y: object = None) -> Self:
        for name in ("label_delay_days", "trailing_days", "baseline_days", "tenure_unknown_days"):
            strictly = name in ("trailing_days", "baseline_days")
            if getattr(self, name) < 0 or (strictly and getattr(self, name) == 0):
                raise ValueError(f"{name} must be {'>' if strictly else '>='} 0, got {getattr(self, name)}")
        if self.prior_strength <= 0:
            raise ValueError(f"prior_strength must be > 0, got {self.prior_strength}")
        known = X[(as_float(X, "inspected") == 1) & np.isfinite(as_float(X, "misdeclared"))]
        self.global_rate_ = float(as_float(known, "misdeclared").mean()) if len(known) else 0.0
        reference = load_reference(self.reference_dir)
        self.hubs_ = sorted(reference.diversion_hubs)
        self.switch_dates_ = switch_dates(reference)
        self.numeric_features_ = [
            f"{entity}_{name}"
            for entity in self.entities
            for name in (
                "lines_before",
                "days_since_first",
                "distinct_hs_before",
                "distinct_routes_before",
                "outcomes_known",
                "misdeclared_rate",
            )
        ] + ["consignee_direct_cn_target_before", "consignee_switched_to_hub", "flow_lines_trailing", "flow_surge_ratio"]
        return self

    def feature_groups(self) -> dict[str, str]:
        """Reasons per party ("shipper_history", ...), the China-to-hub switch, and the flow surge."""
        check_is_fitted(self)
        groups = {}
        for name in self.numeric_features_:
            entity = next((e for e in self.entities if name.startswith(e)), None)
            groups[name] = (
                f"{entity.removesuffix('_id')}_history" if entity else "switch" if name.startswith("consignee_") else "flow"
            )
        return groups

    def transform(self, X: pd.DataFrame, past: Past = None) -> pd.DataFrame:
        """History features of the lines ``X``.

        Parameters
        ----------
        X : DataFrame
            Validated lines; they are history for each other (a line sees the earlier days' lines).
        past : DataFrame, PastEvents, HistoryColumns or history store, optional
            Earlier lines (copies of lines of ``X`` are dropped); or their events (without those of
            the lines of ``X``); or the features already computed from them (:class:`HistoryColumns`);
            or an object whose ``events_for(X, entities, flow_days,
            label_delay_days=...)`` returns
            them, as :class:`features.history_store.HistoryStore` does, reading only the events of
            the parties and flows of ``X``; or one whose ``events_with`` (same arguments) returns
            them with those of ``X`` included, as :class:`features.history_store.FileHistory`
            does for a part of the file it holds.
        """
        check_is_fitted(self)
        if isinstance(past, HistoryColumns):
            return with_columns(X, past.of(X, self.numeric_features_))
        return with_columns(X, self.features_from_events(X, self._events(X, past)))

    def features_from_events(
        self,
        X: pd.DataFrame,
        events: PastEvents,
        entities: tuple[str, ...] | None = None,
        switch: bool = True,
        flows: bool = True,
    ) -> dict[str, np.ndarray]:
        """The history features of the lines ``X`` from ``events`` (which include those of ``X``).

        Each line's party features read only the events of its party, its switch features those of
        its consignee, its flow features those of its flow (and every line the coverage start). So
        the features of a subset of parties or flows, computed from their events alone, are theirs
        in the whole: the Spark engine calls this per group of party (or flow) keys.

        Parameters
        ----------
        X : DataFrame
            The lines.
        events : PastEvents
            Events of earlier lines and of ``X`` (:meth:`transform` builds them).
        entities : tuple of str, optional
            Parties whose features to compute (all of :attr:`entities` by default).
        switch, flows : bool
            Whether to compute the China-to-hub switch features and the flow features.
        """
        check_is_fitted(self)
        days = day_numbers(X)
        firsts = first_uses_by_party(events.values)
        new: dict[str, np.ndarray] = {}
        for entity in self.entities if entities is None else entities:
            new.update(self._entity_features(X, days, entity, events, firsts))
        if switch:
            new.update(self._switch_features(X, days, firsts))
        if flows:
            new.update(self._flow_features(X, days, events))
        return new

    def _events(self, X: pd.DataFrame, past: pd.DataFrame | PastEvents | EventSource | None) -> PastEvents:
        """Events of ``past`` (the lines relevant to ``X``, without copies of them) and of ``X``."""
        flow_days = self.trailing_days + self.baseline_days
        if _holds_lines(past):  # a file being scored, which holds X: X's events are there
            return past.events_with(X, self.entities, flow_days, label_delay_days=self.label_delay_days)
        current = PastEvents.from_lines(X, self.entities)
        if isinstance(past, PastEvents):
            return PastEvents.concat(past, current)
        if _is_event_source(past):
            return PastEvents.concat(
                past.events_for(X, self.entities, flow_days, label_delay_days=self.label_delay_days),
                current,
            )
        if past is None or past.empty:
            return current
        columns = list(HISTORY_COLUMNS) + [c for c in self.extra_entities if c not in HISTORY_COLUMNS]
        relevant = relevant_past(past.reindex(columns=columns), X.reindex(columns=columns), self.entities)
        relevant = relevant[~line_keys(relevant).isin(line_keys(X))]
        events = PastEvents.from_lines(relevant, self.entities)
        # Tenure is censored at the start of the whole history, not of the lines relevant to X.
        first = pd.to_datetime(past["declared_at"]).min()
        start = None if pd.isna(first) else int((first.normalize() - EPOCH).days)
        return PastEvents.concat(replace(events, coverage_start=start), current)

    @staticmethod
    def _query_keys(query: pd.Series) -> tuple[pd.Index, np.ndarray]:
        """The distinct keys of the lines scored, and each line's group among them (-1: missing)."""
        keys = pd.Index(np.asarray(query.dropna().unique(), dtype=object), dtype=object)
        return keys, keys.get_indexer(np.asarray(query.astype(object)))

    @staticmethod
    def _event_groups(keys: pd.Index, event_keys: pd.Series) -> np.ndarray:
        """Each event's group among ``keys`` (-1: a key no scored line has)."""
        return _category_positions(keys, event_keys)

    def _entity_features(
        self, X: pd.DataFrame, days: np.ndarray, entity: str, events: PastEvents, firsts: pd.DataFrame
    ) -> dict[str, np.ndarray]:
        query = X[entity].astype("string") if entity in X else pd.Series(pd.NA, index=X.index, dtype="string")
        of_entity = (events.parties["entity"] == entity).to_numpy()
        keys, group = self._query_keys(query)
        event_group = self._event_groups(keys, events.parties["key"][of_entity])
        touched = event_group >= 0
        event_group = event_group[touched]
        event_day, lines, outcome_weights, positive_weights = (
            events.parties[column].to_numpy("int64")[of_entity][touched] for column in ("day", "lines", "outcomes", "positives")
        )
        lines_before = count_before(event_group, event_day, group, days, weights=lines.astype("float64"))
        first = first_net_day(event_group, event_day, lines.astype("float64"), group)
        # Tenure is unknown for parties already there when the history begins (see the class docstring).
        start = events.coverage_start
        censored = first < start + self.tenure_unknown_days if start is not None else np.zeros(len(days), dtype=bool)
        days_since_first = np.where((first < days) & ~censored, days - first, np.nan)
        known_day = event_day + self.label_delay_days
        outcomes = count_before(event_group, known_day, group, days, weights=outcome_weights.astype("float64"))
        positives = count_before(event_group, known_day, group, days, weights=positive_weights.astype("float64"))
        rate = (positives + self.prior_strength * self.global_rate_) / (outcomes + self.prior_strength)
        return {
            f"{entity}_lines_before": lines_before,
            f"{entity}_days_since_first": days_since_first,
            f"{entity}_distinct_hs_before": self._distinct_before(keys, group, days, firsts, entity, "hs6"),
            f"{entity}_distinct_routes_before": self._distinct_before(keys, group, days, firsts, entity, "route"),
            f"{entity}_outcomes_known": outcomes,
            f"{entity}_misdeclared_rate": np.where(group >= 0, rate, np.nan),
        }

    def _first_uses(
        self, keys: pd.Index, firsts: pd.DataFrame, entity: str, kind: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per queried party and value of ``kind``: the first day it was used, from
        :func:`first_uses_by_party`, as arrays (the party's group among ``keys``, the day, the value)."""
        of_kind = ((firsts["entity"] == entity) & (firsts["kind"] == kind)).to_numpy()
        group = self._event_groups(keys, firsts["key"][of_kind])
        queried = group >= 0
        return (
            group[queried],
            firsts["day"].to_numpy("int64")[of_kind][queried],
            firsts["value"].to_numpy(object)[of_kind][queried],
        )

    def _distinct_before(
        self, keys: pd.Index, group: np.ndarray, days: np.ndarray, firsts: pd.DataFrame, entity: str, kind: str
    ) -> np.ndarray:
        """Distinct values a party used before each day: count of (party, value) first uses."""
        used_group, used_day, _ = self._first_uses(keys, firsts, entity, kind)
        return count_before(used_group.astype("int64"), used_day, group, days)

    def _switch_features(self, X: pd.DataFrame, days: np.ndarray, firsts: pd.DataFrame) -> dict[str, np.ndarray]:
        """A consignee that imported a controlled good directly from China before the controls."""
        query = X["consignee_id"].astype("string") if "consignee_id" in X else pd.Series(pd.NA, index=X.index, dtype="string")
        keys, group = self._query_keys(query)
        direct_group, direct_day, code = self._first_uses(keys, firsts, "consignee_id", "cn_direct")
        cutoff = pd.to_datetime(pd.Series(code, dtype=object).map(self.switch_dates_))
        cutoff_day = ((cutoff - EPOCH).dt.days).to_numpy(dtype="float64", na_value=np.nan)
        before_controls = direct_day < cutoff_day  # False where the code has no controls (NaN)
        first_direct = np.full(len(keys), np.inf)  # per party: its first direct import before the controls
        np.minimum.at(first_direct, direct_group[before_controls], direct_day[before_controls])
        direct_before = np.where(group >= 0, first_direct[np.maximum(group, 0)] if len(keys) else np.inf, np.inf) < days
        switch_day = (pd.Timestamp(min(self.switch_dates_.values())) - EPOCH).days
        via_hub = via_hub_mask(X, set(self.hubs_)).to_numpy()
        return {
            "consignee_direct_cn_target_before": np.where(group >= 0, direct_before, np.nan),
            "consignee_switched_to_hub": np.where(group >= 0, direct_before & via_hub & (days >= switch_day), np.nan),
        }

    def _flow_features(self, X: pd.DataFrame, days: np.ndarray, events: PastEvents) -> dict[str, np.ndarray]:
        """Lines on the flow (export country × HS heading × port of discharge): trailing vs. baseline."""
        keys, group = self._query_keys(flow_key(X))
        event_group = self._event_groups(keys, events.flows["flow"])
        flows = events.flows[event_group >= 0]
        event_group, day = event_group[event_group >= 0], flows["day"].to_numpy("int64")
        weights = flows["lines"].to_numpy("float64")
        trailing = count_in_window(event_group, day, group, days, self.trailing_days, 0, weights)
        baseline = count_in_window(
            event_group, day, group, days, self.trailing_days + self.baseline_days, self.trailing_days, weights
        )
        # +1 smoothing: a flow that is new gets a large but finite ratio.
        ratio = (trailing / self.trailing_days) / ((baseline + 1) / self.baseline_days)
        return {"flow_lines_trailing": trailing, "flow_surge_ratio": ratio}
