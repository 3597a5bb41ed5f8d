"""Point-in-time entity and flow history: what was known about a line's parties before its date.

Every count here is over lines declared *strictly before* the line's date (same-day lines do not
see each other), and every outcome only once it was known: an inspected line's outcome counts for
a later line when ``outcome date + label_delay_days < line date``. So a line's history features
never change when a later line, or a label that became known later, changes.

The computation is vectorised: events are encoded as sorted integer keys ``group * SPAN + day`` and
"how many events of my group before my day" is a difference of two ``searchsorted`` calls.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from features.reference import load_reference
from features.transformers import JsonStateMixin, as_float, as_text, via_hub_mask

ENTITY_COLUMNS = ("shipper_id", "consignee_id", "importer_id", "declarant_id")
HISTORY_COLUMNS = (
    "declaration_id", "line_no", "declared_at", "hs_code", "origin_country", "export_country",
    "port_of_loading", "port_of_discharge", "transshipment_ports", *ENTITY_COLUMNS, "inspected", "misdeclared",
)
_SPAN = 1 << 20  # more days than any manifest spans, so group * _SPAN + day never collides
_EPOCH = pd.Timestamp("1970-01-01")


def day_numbers(frame: pd.DataFrame) -> np.ndarray:
    """Days since 1970-01-01 of ``declared_at`` (int64)."""
    return ((pd.to_datetime(frame["declared_at"]) - _EPOCH).dt.days).to_numpy(dtype="int64")


def count_before(event_group: np.ndarray, event_day: np.ndarray, query_group: np.ndarray,
                 query_day: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
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


def count_in_window(event_group: np.ndarray, event_day: np.ndarray, query_group: np.ndarray,
                    query_day: np.ndarray, start_offset: int, end_offset: int) -> np.ndarray:
    """Per query, events of the same group with ``query_day - start_offset <= day < query_day - end_offset``."""
    keys = np.sort(event_group.astype("int64") * _SPAN + event_day)
    group = np.maximum(query_group, 0).astype("int64") * _SPAN
    counts = (np.searchsorted(keys, group + query_day - end_offset, "left")
              - np.searchsorted(keys, group + query_day - start_offset, "left")).astype("float64")
    return np.where(query_group >= 0, counts, np.nan)


def switch_dates(reference) -> dict[str, str]:
    """Per target HS6 code, the date from which importing it directly from China stopped.

    That is the commodity's export ban when there is one, else its first licensing measure.
    """
    controls = reference.control_dates[reference.control_dates["kind"].isin(["ban", "licensing"])]
    by_commodity = {}
    for commodity in reference.commodities:
        measures = controls[controls["commodities"].str.split(";").map(lambda c: commodity in c)]
        bans = measures[measures["kind"] == "ban"]
        by_commodity[commodity] = (bans if len(bans) else measures)["date"].min().strftime("%Y-%m-%d")
    codes = reference.hs_codes[(reference.hs_codes["role"] == "target") & (reference.hs_codes["hs_prefix"].str.len() == 6)]
    return {row.hs_prefix: by_commodity[row.commodity] for row in codes.itertuples()}


def flow_key(frame: pd.DataFrame) -> pd.Series:
    """The flow of a line: export country | HS heading | port of discharge."""
    return (as_text(frame, "export_country") + "|" + as_text(frame, "hs_code", "").str.slice(0, 4)
            + "|" + as_text(frame, "port_of_discharge"))


def relevant_past(past: pd.DataFrame, current: pd.DataFrame,
                  entities: tuple[str, ...] = ENTITY_COLUMNS) -> pd.DataFrame:
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


class HistoryFeatures(JsonStateMixin, TransformerMixin, BaseEstimator):
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

    def __init__(self, label_delay_days: int = 30, prior_strength: float = 5.0, trailing_days: int = 28,
                 baseline_days: int = 182, reference_dir: str | None = None,
                 extra_entities: tuple[str, ...] = (), tenure_unknown_days: int = 0):
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

    def fit(self, X: pd.DataFrame, y=None):
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
        self.numeric_features_ = [f"{entity}_{name}" for entity in self.entities for name in (
            "lines_before", "days_since_first", "distinct_hs_before", "distinct_routes_before",
            "outcomes_known", "misdeclared_rate")] + [
            "consignee_direct_cn_target_before", "consignee_switched_to_hub",
            "flow_lines_trailing", "flow_surge_ratio"]
        return self

    def feature_groups(self) -> dict[str, str]:
        """Reasons per party ("shipper_history", ...), the China-to-hub switch, and the flow surge."""
        check_is_fitted(self)
        groups = {}
        for name in self.numeric_features_:
            entity = next((e for e in self.entities if name.startswith(e)), None)
            groups[name] = (f"{entity.removesuffix('_id')}_history" if entity
                            else "switch" if name.startswith("consignee_") else "flow")
        return groups

    def transform(self, X: pd.DataFrame, past: pd.DataFrame | None = None) -> pd.DataFrame:
        check_is_fitted(self)
        combined, is_current = self._combine(X, past)
        days = day_numbers(combined)
        coverage_start = self._coverage_start(days, past)
        new: dict[str, np.ndarray] = {}
        for entity in self.entities:
            new.update(self._entity_features(combined, days, entity, coverage_start))
        new.update(self._switch_features(combined, days))
        new.update(self._flow_features(combined, days))
        current = {name: values[is_current] for name, values in new.items()}
        return X.assign(**current)

    def _combine(self, X: pd.DataFrame, past: pd.DataFrame | None) -> tuple[pd.DataFrame, np.ndarray]:
        columns = list(HISTORY_COLUMNS) + [c for c in self.extra_entities if c not in HISTORY_COLUMNS]
        current = X.reindex(columns=columns)
        if past is None or past.empty:
            return current.reset_index(drop=True), np.ones(len(current), dtype=bool)
        past = relevant_past(past.reindex(columns=columns), current, self.entities)
        past = past[~line_keys(past).isin(line_keys(current))]
        combined = pd.concat([past, current], ignore_index=True)
        return combined, np.r_[np.zeros(len(past), dtype=bool), np.ones(len(current), dtype=bool)]

    @staticmethod
    def _coverage_start(days: np.ndarray, past: pd.DataFrame | None) -> int | None:
        """First day the history holds: of every past line, not only those relevant to the batch.

        ``_combine`` keeps only the past lines sharing a party or flow with the batch, whose first
        day can be much later than the store's; tenure must be censored at the store's start, as in
        training, where the whole history is one frame.
        """
        firsts = [int(days.min())] if len(days) else []
        if past is not None and len(past):
            first_past = pd.to_datetime(past["declared_at"]).min()
            if pd.notna(first_past):
                firsts.append((first_past.normalize() - _EPOCH).days)
        return min(firsts) if firsts else None

    def _entity_features(self, frame: pd.DataFrame, days: np.ndarray, entity: str,
                         coverage_start: int | None) -> dict[str, np.ndarray]:
        group = _codes(frame[entity])
        known = group >= 0
        lines_before = count_before(group[known], days[known], group, days)
        first_day = pd.Series(days[known]).groupby(group[known]).min()
        first = first_day.reindex(group).to_numpy(dtype="float64")
        # Tenure is unknown for parties already there when the history begins (see the class docstring).
        censored = (first < coverage_start + self.tenure_unknown_days if coverage_start is not None
                    else np.zeros(len(days), dtype=bool))
        days_since_first = np.where((first < days) & ~censored, days - first, np.nan)
        outcomes, positives = self._outcomes_before(frame, days, group)
        rate = (positives + self.prior_strength * self.global_rate_) / (outcomes + self.prior_strength)
        return {
            f"{entity}_lines_before": lines_before,
            f"{entity}_days_since_first": days_since_first,
            f"{entity}_distinct_hs_before": self._distinct_before(group, days, as_text(frame, "hs_code", "").str.slice(0, 6)),
            f"{entity}_distinct_routes_before": self._distinct_before(
                group, days, as_text(frame, "export_country") + ">" + as_text(frame, "port_of_discharge")),
            f"{entity}_outcomes_known": outcomes,
            f"{entity}_misdeclared_rate": np.where(group >= 0, rate, np.nan),
        }

    @staticmethod
    def _distinct_before(group: np.ndarray, days: np.ndarray, values: pd.Series) -> np.ndarray:
        """Distinct values an entity used before each day: count of (entity, value) first uses."""
        pairs = pd.DataFrame({"group": group, "value": values.to_numpy(), "day": days})
        firsts = pairs[pairs["group"] >= 0].groupby(["group", "value"], sort=False)["day"].min()
        return count_before(firsts.index.get_level_values("group").to_numpy(), firsts.to_numpy(), group, days)

    def _outcomes_before(self, frame: pd.DataFrame, days: np.ndarray, group: np.ndarray):
        """Outcomes of the entity's inspected lines known before each day (after the label delay)."""
        labelled = (as_float(frame, "inspected") == 1) & np.isfinite(as_float(frame, "misdeclared")) & (group >= 0)
        known_day = days[labelled] + self.label_delay_days
        outcomes = count_before(group[labelled], known_day, group, days)
        positives = count_before(group[labelled], known_day, group, days,
                                 weights=as_float(frame, "misdeclared")[labelled])
        return outcomes, positives

    def _switch_features(self, frame: pd.DataFrame, days: np.ndarray) -> dict[str, np.ndarray]:
        """A consignee that imported a controlled good directly from China before the controls."""
        group = _codes(frame["consignee_id"])
        cutoff = as_text(frame, "hs_code", "").str.slice(0, 6).map(self.switch_dates_)
        cutoff_day = ((pd.to_datetime(cutoff) - _EPOCH).dt.days).to_numpy(dtype="float64", na_value=np.nan)
        switch_day = (pd.Timestamp(min(self.switch_dates_.values())) - _EPOCH).days
        direct = ((days < cutoff_day)
                  & (as_text(frame, "origin_country") == "CN").to_numpy()
                  & (as_text(frame, "export_country") == "CN").to_numpy()
                  & (group >= 0))
        direct_before = count_before(group[direct], days[direct], group, days) > 0
        via_hub = via_hub_mask(frame, set(self.hubs_)).to_numpy()
        return {
            "consignee_direct_cn_target_before": np.where(group >= 0, direct_before, np.nan),
            "consignee_switched_to_hub": np.where(group >= 0, direct_before & via_hub & (days >= switch_day), np.nan),
        }

    def _flow_features(self, frame: pd.DataFrame, days: np.ndarray) -> dict[str, np.ndarray]:
        """Lines on the flow (export country × HS heading × port of discharge): trailing vs. baseline."""
        flow = _codes(flow_key(frame))
        trailing = count_in_window(flow, days, flow, days, self.trailing_days, 0)
        baseline = count_in_window(flow, days, flow, days, self.trailing_days + self.baseline_days, self.trailing_days)
        # +1 smoothing: a flow that is new gets a large but finite ratio.
        ratio = (trailing / self.trailing_days) / ((baseline + 1) / self.baseline_days)
        return {"flow_lines_trailing": trailing, "flow_surge_ratio": ratio}
