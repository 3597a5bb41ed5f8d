"""Feature transformers: validated manifest lines in, model features out.

Each transformer follows scikit-learn conventions: ``__init__`` only stores its arguments, ``fit``
learns state into attributes ending in ``_`` (reference values are copied into that state, so that a
fitted pipeline does not depend on the tables installed at scoring time), ``transform`` checks that it
is fitted and returns a new frame with its columns added, never changing its input.

Fitted state is plain JSON (:meth:`JsonStateMixin.get_state`), so a pipeline is saved and loaded as
data, without pickle: see :mod:`features.pipeline`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self, TypedDict, cast

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from features.reference import ReferenceTables, load_reference

UNKNOWN = "unknown"
MISSING = "missing"

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# "class" is a keyword, hence the functional form.
TransformerState = TypedDict("TransformerState", {"class": str, "params": dict[str, Any], "fitted": dict[str, Any]})
"""A fitted transformer as JSON-compatible data (:meth:`JsonStateMixin.get_state`)."""


class JsonStateMixin:
    """Save and restore a fitted transformer as JSON-compatible data.

    Subclasses list their fitted attributes in ``_fitted_attributes``; their values must be JSON
    types (numbers, strings, lists, dicts with string keys).
    """

    _fitted_attributes: tuple[str, ...] = ()
    # Fitted attributes added after bundles were shipped, with the value an older state stands for.
    _fitted_defaults: dict[str, object] = {}
    categorical_outputs: tuple[str, ...] = ()
    reason_group: str = "other"
    # Set by every transformer's fit: the numeric model features it adds.
    numeric_features_: list[str]

    if TYPE_CHECKING:  # scikit-learn ships no type information: BaseEstimator's method, as the mixins use it

        def get_params(self, deep: bool = True) -> dict[str, Any]: ...

    def get_state(self) -> TransformerState:
        """Return ``{"class", "params", "fitted"}`` for a fitted transformer."""
        check_is_fitted(self)
        return {
            "class": type(self).__name__,
            "params": self.get_params(deep=False),
            "fitted": {name: getattr(self, name) for name in self._fitted_attributes},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild a fitted transformer from :meth:`get_state` output."""
        if state.get("class") != cls.__name__:
            raise ValueError(f"state is for {state.get('class')!r}, not {cls.__name__!r}")
        transformer = cls(**state["params"])
        for name in cls._fitted_attributes:
            if name not in state["fitted"] and name in cls._fitted_defaults:
                setattr(transformer, name, copy.deepcopy(cls._fitted_defaults[name]))
                continue
            setattr(transformer, name, state["fitted"][name])
        return transformer

    def feature_groups(self) -> dict[str, str]:
        """Reason group of each numeric model feature this step adds."""
        check_is_fitted(self)
        return {name: self.reason_group for name in self.numeric_features_}


class FeatureTransformer(JsonStateMixin, TransformerMixin, BaseEstimator):  # type: ignore[misc]
    """Base of the feature transformers: JSON state, and scikit-learn's ``get_params``, ``fit_transform``
    and ``repr``. The ignore: scikit-learn ships no type information, so its two bases are ``Any`` to
    mypy; subclassing them here, once, keeps that out of every transformer below."""


class FeatureStep(Protocol):
    """What the feature pipeline needs of a step (every :class:`FeatureTransformer`, among them
    :class:`features.history.HistoryFeatures`, whose ``transform`` also takes ``past``)."""

    categorical_outputs: tuple[str, ...]
    reason_group: str
    numeric_features_: list[str]

    def fit(self, X: pd.DataFrame, y: object = None) -> FeatureStep: ...

    def transform(self, X: pd.DataFrame) -> pd.DataFrame: ...

    def feature_groups(self) -> dict[str, str]: ...

    def get_state(self) -> TransformerState: ...

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self: ...


def with_columns(X: pd.DataFrame, new: Mapping[str, Any]) -> pd.DataFrame:
    """``X.assign(**new)``, new columns joined in one step.

    ``assign`` inserts the columns one at a time (about 4 ms for 15 columns of a 100-line request, in
    every step of the pipeline); a frame of the new columns joined to ``X`` gives the same frame at a
    fifth of that. Replaced columns, or an index with repeated labels, go through ``assign`` itself.
    """
    if not new or any(column in X.columns for column in new) or not X.index.is_unique:
        return X.assign(**new)
    return pd.concat([X, pd.DataFrame(dict(new), index=X.index)], axis=1)


def as_float(frame: pd.DataFrame, column: str) -> FloatArray:
    """Column as float64 with missing values as NaN (NaN for every row if the column is absent)."""
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    values: FloatArray = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    return values


def as_floats(values: pd.Series[Any]) -> FloatArray:
    """Flags or counts as float64 model features (1.0 / 0.0 for flags)."""
    # The cast: pandas-stubs type to_numpy(dtype=...) of a bool or int Series by the Series' own
    # type, not by the dtype asked for (a float64 array here).
    return cast(FloatArray, values.to_numpy(dtype=np.float64))


def as_text(frame: pd.DataFrame, column: str, fill: str = MISSING) -> pd.Series[str]:
    """Column as strings with missing values replaced by ``fill``."""
    if column not in frame.columns:
        return pd.Series(fill, index=frame.index, dtype="string")
    return frame[column].astype("string").fillna(fill)


def safe_ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """``numerator / denominator``, NaN where the denominator is not > 0 or either is missing."""
    valid = (denominator > 0) & np.isfinite(numerator) & np.isfinite(denominator)
    # Extreme but valid inputs (1e12 USD over 1e-176 kg) overflow to inf: report NaN, not inf.
    with np.errstate(over="ignore"):
        ratio = np.divide(numerator, denominator, out=np.full(len(numerator), np.nan), where=valid)
    finite: FloatArray = np.where(np.isfinite(ratio), ratio, np.nan)
    return finite


def safe_log10(values: FloatArray) -> FloatArray:
    """log10 of positive values, NaN elsewhere (no -inf for zero)."""
    valid = np.isfinite(values) & (values > 0)
    logs: FloatArray = np.log10(values, out=np.full(len(values), np.nan), where=valid)
    return logs


def band_log_distance(log_values: FloatArray, low: float | FloatArray, high: float | FloatArray) -> FloatArray:
    """Signed log10 distance to the band [low, high] (numbers, or one band per value): 0 inside,
    negative below, positive above."""
    below = np.minimum(log_values - np.log10(low), 0.0)
    above = np.maximum(log_values - np.log10(high), 0.0)
    return below + above


def via_hub_mask(frame: pd.DataFrame, hubs: set[str]) -> pd.Series[bool]:
    """Lines exported from, loaded in, or transshipped through a diversion hub country.

    The first two letters of a UN/LOCODE are the country, so ports need no lookup table.
    """
    if not hubs:
        return pd.Series(False, index=frame.index)
    hub_port = f"(?:^|;)(?:{'|'.join(sorted(hubs))})"
    return (
        as_text(frame, "export_country").isin(hubs)
        | as_text(frame, "transshipment_ports", "").str.contains(hub_port, regex=True)
        | as_text(frame, "port_of_loading", "").str.slice(0, 2).isin(hubs)
    )


def _reference(reference_dir: str | None) -> ReferenceTables:
    return load_reference(reference_dir)


class WeightFeatures(FeatureTransformer):
    """Weights and packing density: log weights, net/gross ratio, kg per package and per container.

    Metal ingots fill a container's weight limit long before its volume while genuine crafts are
    light for their volume, so kilograms per package and per container are a density proxy.
    """

    _fitted_attributes = ("numeric_features_",)
    reason_group = "weight"

    def fit(self, X: pd.DataFrame, y: object = None) -> Self:
        self.numeric_features_ = [
            "log_gross_weight_kg",
            "log_net_weight_kg",
            "net_gross_ratio",
            "kg_per_package",
            "log_kg_per_package",
            "kg_per_container",
            "log_kg_per_container",
        ]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self)
        gross, net = as_float(X, "gross_weight_kg"), as_float(X, "net_weight_kg")
        per_package = safe_ratio(gross, as_float(X, "packages"))
        per_container = safe_ratio(gross, as_float(X, "containers"))
        return X.assign(
            log_gross_weight_kg=safe_log10(gross),
            log_net_weight_kg=safe_log10(net),
            net_gross_ratio=safe_ratio(net, gross),
            kg_per_package=per_package,
            log_kg_per_package=safe_log10(per_package),
            kg_per_container=per_container,
            log_kg_per_container=safe_log10(per_container),
        )


def net_or_gross(X: pd.DataFrame) -> np.ndarray:
    """Net weight where declared, else gross weight: the weight that value per kg refers to."""
    net = as_float(X, "net_weight_kg")
    return np.where(np.isfinite(net) & (net > 0), net, as_float(X, "gross_weight_kg"))


def lookup_by_prefix(
    hs_codes: pd.Series[str], table: Mapping[str, object], lengths: tuple[int, ...] = (6, 4, 2)
) -> pd.Series[Any]:
    """Value of the longest HS prefix of each code found in ``table`` (missing where none is).

    Each distinct prefix is looked up once in the dict (``Series.map`` with a dict turned the whole
    table into an index at every call: most of the cost of a 100-line request).
    """
    result = pd.Series(pd.NA, index=hs_codes.index, dtype="object")
    for length in lengths:
        codes, prefixes = pd.factorize(hs_codes.str.slice(0, length))
        found = np.array([table.get(prefix, np.nan) for prefix in prefixes] + [np.nan], dtype=object)
        hits = pd.Series(found[codes], index=hs_codes.index)  # code -1 (no code) takes the last: missing
        result = result.where(result.notna(), hits)
    return result


class ValueFeatures(FeatureTransformer):
    """Value per kg, its log-ratio to the declared code's typical value, distance to price bands.

    Parameters
    ----------
    min_count : int
        Lines an HS prefix needs at fit time for its own typical value per kg; rarer prefixes fall
        back to the shorter prefix (6 → 4 → 2 digits) and then to the global median.
    reference_dir : str, optional
        Folder of the reference tables; the packaged tables by default.
    """

    _fitted_attributes = (
        "typical_log_value_per_kg_",
        "global_log_value_per_kg_",
        "hs_band_low_",
        "hs_band_high_",
        "price_bands_",
        "numeric_features_",
    )
    reason_group = "price"

    def __init__(self, min_count: int = 20, reference_dir: str | None = None):
        self.min_count = min_count
        self.reference_dir = reference_dir

    def fit(self, X: pd.DataFrame, y: object = None) -> Self:
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        log_vpk = pd.Series(safe_log10(safe_ratio(as_float(X, "declared_value_usd"), net_or_gross(X))), index=X.index)
        hs = as_text(X, "hs_code", "")
        self.typical_log_value_per_kg_: dict[str, float] = {}
        for length in (6, 4, 2):
            stats = log_vpk.groupby(hs.str.slice(0, length)).agg(["median", "count"])
            medians = stats.loc[stats["count"] >= self.min_count, "median"]
            self.typical_log_value_per_kg_.update(
                {str(k): round(v, 6) for k, v in zip(medians.index, medians.to_numpy(np.float64).tolist(), strict=True)}
            )
        self.global_log_value_per_kg_ = round(float(np.nanmedian(log_vpk)), 6) if log_vpk.notna().any() else 0.0
        reference = _reference(self.reference_dir)
        bands = reference.code_bands
        self.hs_band_low_ = {prefix: low for prefix, (low, _) in bands.items()}
        self.hs_band_high_ = {prefix: high for prefix, (_, high) in bands.items()}
        price = reference.price_bands
        self.price_bands_ = {
            str(band): [low, high]
            for band, low, high in zip(
                price.index,
                price["usd_per_kg_low"].to_numpy(np.float64).tolist(),
                price["usd_per_kg_high"].to_numpy(np.float64).tolist(),
                strict=True,
            )
        }
        self.numeric_features_ = [
            "value_per_kg",
            "log_value_per_kg",
            "hs_typical_usd_per_kg",
            "value_log_ratio_hs",
            "hs_band_log_distance",
        ] + [f"band_dist_{band}" for band in self.price_bands_]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self)
        value_per_kg = safe_ratio(as_float(X, "declared_value_usd"), net_or_gross(X))
        log_vpk = safe_log10(value_per_kg)
        hs = as_text(X, "hs_code", "")
        typical_or_missing = lookup_by_prefix(hs, self.typical_log_value_per_kg_)
        typical: FloatArray = typical_or_missing.fillna(self.global_log_value_per_kg_).to_numpy(dtype=np.float64)
        new = {
            "value_per_kg": value_per_kg,
            "log_value_per_kg": log_vpk,
            "hs_typical_usd_per_kg": np.power(10.0, typical),
            "value_log_ratio_hs": log_vpk - typical,
            "hs_band_log_distance": self._declared_band_distance(hs, log_vpk),
        }
        for band, (low, high) in self.price_bands_.items():
            new[f"band_dist_{band}"] = band_log_distance(log_vpk, low, high)
        return with_columns(X, new)

    def _declared_band_distance(self, hs: pd.Series[str], log_vpk: FloatArray) -> FloatArray:
        low: FloatArray = lookup_by_prefix(hs, self.hs_band_low_, lengths=(6, 4)).to_numpy(dtype=np.float64, na_value=np.nan)
        high: FloatArray = lookup_by_prefix(hs, self.hs_band_high_, lengths=(6, 4)).to_numpy(dtype=np.float64, na_value=np.nan)
        return band_log_distance(log_vpk, low, high)


class DeclaredHSFeatures(FeatureTransformer):
    """Declared HS code: chapter, heading, subheading, cover-code flags and the declared target good.

    Parameters
    ----------
    reference_dir : str, optional
        Folder of the reference tables; the packaged tables by default.
    """

    _fitted_attributes = ("role_", "commodity_", "cover_family_", "code_goods_", "light_goods_", "numeric_features_")
    _fitted_defaults = {"code_goods_": None, "light_goods_": {}}
    categorical_outputs = ("hs_chapter", "hs_heading", "hs_subheading", "cover_family", "declared_target")
    reason_group = "declared_goods"

    def __init__(self, reference_dir: str | None = None):
        self.reference_dir = reference_dir

    def fit(self, X: pd.DataFrame, y: object = None) -> Self:
        reference = _reference(self.reference_dir)
        codes = reference.hs_codes.fillna({"commodity": "none", "cover_family": "none"})
        self.role_ = dict(zip(codes["hs_prefix"], codes["role"]))
        self.commodity_ = dict(zip(codes["hs_prefix"], codes["commodity"]))
        self.cover_family_ = dict(zip(codes["hs_prefix"], codes["cover_family"]))
        self.code_goods_ = reference.code_goods()
        # Goods light for their volume, with the heaviest packing that still fits them: the one
        # packing norm whose unusual direction the reference data state (reasons cite it).
        light = codes.dropna(subset=["max_kg_per_package", "max_kg_per_container"])
        self.light_goods_: dict[str, list[str | float]] = {
            str(prefix): [str(description), per_package, per_container]
            for prefix, description, per_package, per_container in zip(
                light["hs_prefix"],
                light["description"],
                light["max_kg_per_package"].to_numpy(np.float64).tolist(),
                light["max_kg_per_container"].to_numpy(np.float64).tolist(),
                strict=True,
            )
        }
        self.numeric_features_ = ["is_cover_code", "is_target_code"]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self)
        hs = as_text(X, "hs_code", "")
        role = lookup_by_prefix(hs, self.role_, lengths=(6, 4)).fillna("other")
        return X.assign(
            hs_chapter=hs.str.slice(0, 2),
            hs_heading=hs.str.slice(0, 4),
            hs_subheading=hs.str.slice(0, 6),
            is_cover_code=as_floats(role == "cover"),
            is_target_code=as_floats(role == "target"),
            cover_family=lookup_by_prefix(hs, self.cover_family_, lengths=(6, 4)).fillna("none").astype("string"),
            declared_target=lookup_by_prefix(hs, self.commodity_, lengths=(6, 4)).fillna("none").astype("string"),
        )


class RouteFeatures(FeatureTransformer):
    """Route: countries, diversion hubs, transshipments, ports, mode, capacity, days since controls.

    Parameters
    ----------
    reference_dir : str, optional
        Folder of the reference tables; the packaged tables by default.
    """

    _fitted_attributes = (
        "hubs_",
        "producer_countries_",
        "producers_",
        "controlling_countries_",
        "measures_",
        "measure_labels_",
        "measure_commodities_",
        "numeric_features_",
    )
    # States saved before the origin check had no per-good producers: None (read from the tables).
    _fitted_defaults = {"producers_": None, "controlling_countries_": None}
    categorical_outputs = ("origin_country", "export_country", "port_of_loading", "port_of_discharge", "transport_mode")
    reason_group = "route"

    def __init__(self, reference_dir: str | None = None):
        self.reference_dir = reference_dir

    def fit(self, X: pd.DataFrame, y: object = None) -> Self:
        reference = _reference(self.reference_dir)
        self.hubs_ = sorted(reference.diversion_hubs)
        self.producers_ = {c: sorted(reference.producers(c)) for c in reference.commodities}
        self.producer_countries_ = sorted(set().union(*self.producers_.values()))
        self.controlling_countries_ = sorted(reference.controlling_countries)
        measures = reference.control_dates[reference.control_dates["kind"] != "suspension"]
        ids = [str(measure) for measure in measures["measure_id"]]
        self.measures_ = dict(zip(ids, measures["date"].dt.strftime("%Y-%m-%d").tolist(), strict=True))
        self.measure_labels_ = dict(zip(ids, measures["label"].tolist(), strict=True))
        self.measure_commodities_ = dict(zip(ids, measures["commodities"].str.split(";").tolist(), strict=True))
        self.numeric_features_ = [
            "origin_ne_export",
            "via_hub",
            "declared_origin_is_hub",
            "n_transshipments",
            "export_lacks_capacity",
        ] + [f"days_since_{measure}" for measure in self.measures_]
        return self

    def feature_groups(self) -> dict[str, str]:
        groups = super().feature_groups()
        groups.update({f"days_since_{m}": "timing" for m in self.measures_})
        return groups

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self)
        origin, export = as_text(X, "origin_country"), as_text(X, "export_country")
        transship = as_text(X, "transshipment_ports", "")
        hubs = set(self.hubs_)
        via_hub = via_hub_mask(X, hubs)
        new: dict[str, FloatArray | pd.Series[str]] = {
            "origin_ne_export": as_floats(origin != export),
            "via_hub": as_floats(via_hub),
            "declared_origin_is_hub": as_floats(origin.isin(hubs)),
            "n_transshipments": np.where(transship == "", 0, transship.str.count(";") + 1).astype(np.float64),
            "export_lacks_capacity": as_floats(~export.isin(set(self.producer_countries_))),
        }
        declared = pd.to_datetime(X["declared_at"]) if "declared_at" in X else pd.Series(pd.NaT, index=X.index)
        for measure, date in self.measures_.items():
            new[f"days_since_{measure}"] = as_floats((declared - pd.Timestamp(date)).dt.days)
        for column in self.categorical_outputs:
            new[column] = as_text(X, column)
        return with_columns(X, new)


class CategoryEncoder(FeatureTransformer):
    """Map categorical columns to integer codes learned at fit; unseen or rare values become 0.

    Code 0 is "unknown" (a value not seen at least ``min_count`` times at fit, or missing), so a new
    port or country at scoring time is never an error. Codes ``1..n`` follow descending frequency.

    Parameters
    ----------
    columns : tuple of str
        Columns to encode; each becomes ``<column>_code``.
    min_count : int
        Occurrences a value needs at fit to get its own code.
    max_categories : int
        Most codes per column (the most frequent values).
    """

    _fitted_attributes = ("vocabulary_", "numeric_features_")
    reason_group = "categorical"

    def __init__(self, columns: tuple[str, ...] = (), min_count: int = 5, max_categories: int = 250):
        self.columns = columns
        self.min_count = min_count
        self.max_categories = max_categories

    def fit(self, X: pd.DataFrame, y: object = None) -> Self:
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        if self.max_categories < 1:
            raise ValueError(f"max_categories must be >= 1, got {self.max_categories}")
        self.vocabulary_ = {column: self._vocabulary(as_text(X, column)) for column in self.columns}
        self.numeric_features_ = []
        return self

    def _vocabulary(self, values: pd.Series[str]) -> list[str]:
        counts = values[values != MISSING].value_counts()
        counts = counts[counts >= self.min_count]
        ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return [str(value) for value, _ in ordered[: self.max_categories]]

    @property
    def code_columns(self) -> list[str]:
        """Names of the integer code columns this encoder adds."""
        return [f"{column}_code" for column in self.columns]

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self)
        new = {}
        for column, categories in self.vocabulary_.items():
            # get_indexer gives -1 for unseen values, which becomes code 0 ("unknown").
            # (pandas turns the values into an Index itself; its stubs accept only an Index.)
            codes = pd.Index(categories, dtype="object").get_indexer(pd.Index(as_text(X, column).astype("object")))
            new[f"{column}_code"] = (codes + 1).astype("int32")
        return with_columns(X, new)

    def feature_groups(self) -> dict[str, str]:
        return {}
