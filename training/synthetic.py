"""Synthetic US import manifests with disguised antimony, gallium, germanium and rare earths.

No labelled public data exists for this fraud, so the model trains on manifest lines simulated
from the domain facts: legitimate background trade in the cover codes and in unrelated goods,
legitimate imports of the controlled goods from producer countries, fraud networks that route
Chinese goods through diversion hubs under cover codes once the export controls bite, and buyers
who switch from direct Chinese imports to a hub subsidiary. Customs labels exist only for the
minority of inspected lines, chosen by an imperfect rule of thumb plus a random share.

Every number comes from the generator configuration (``training/data/generator.yaml``) or from
the reference tables (``features/data``). One ``numpy`` generator seeded once drives every draw
and all categories are ordered by name, so the same arguments give the same frame.

The output holds the canonical manifest columns followed by ground-truth columns prefixed
``sim_`` (see :data:`SIM_COLUMNS`), which evaluation may use to slice results but features never
read.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from features.reference import ReferenceTables, load_reference
from features.schema import CANONICAL_COLUMNS, TRANSPORT_MODES

SCENARIOS = ("background_cover", "background_other", "legit_target", "switcher", "fraud_network")
DISGUISES = ("none", "true_value", "undervalued")
SELECTIONS = ("none", "random", "targeted")
SIM_COLUMNS = (
    "sim_scenario", "sim_fraud", "sim_commodity", "sim_form", "sim_disguise", "sim_cover_family",
    "sim_route", "sim_network", "sim_selection",
)

_BG_COVER, _BG_OTHER, _LEGIT, _SWITCH, _FRAUD = range(5)
_NO_DISGUISE, _TRUE_VALUE, _UNDERVALUED = range(3)
_COVER, _OTHER, _TARGET = range(3)
_SEA, _AIR, _RAIL, _POST = (TRANSPORT_MODES.index(m) for m in ("sea", "air", "rail", "post"))
# Kinds of entity keys: legitimate pools are sized from the data, the others come from the story.
_POOL, _NETWORK, _ONE_OFF, _SWITCH_CN, _SWITCH_HUB, _FORWARDER, _SWITCH_BUYER = range(7)
_PER_100K = 100_000.0


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def load_generator_config(path: str | Path | None = None) -> dict:
    """Read the generator configuration.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file deep-merged over the default configuration shipped in
        ``training/data/generator.yaml``: mappings merge key by key, other values replace, and a
        key set to ``null`` is removed. The default alone when omitted.

    Returns
    -------
    dict
        The merged configuration.

    Raises
    ------
    ValueError
        When the file does not hold a mapping.
    """
    default = _default_config()
    if path is None:
        return default
    with Path(path).open(encoding="utf-8") as handle:
        override = _parse_yaml(handle.read()) or {}
    if not isinstance(override, Mapping):
        raise ValueError(f"config file {path} must hold a mapping, got {type(override).__name__}")
    return _deep_merge(default, override)


def _default_config() -> dict:
    text = resources.files("training").joinpath("data", "generator.yaml").read_text(encoding="utf-8")
    return _parse_yaml(text)


def _parse_yaml(text: str):
    # libyaml's safe loader when PyYAML was built with it: the pure-Python one takes ~0.5 s here.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loader


def _deep_merge(base: Mapping, override: Mapping) -> dict:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _cfg(config: Mapping, dotted: str):
    """Value at a dotted path, with an error naming the path when it is missing."""
    value = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise ValueError(f"config is missing '{dotted}'")
        value = value[part]
    return value


def _share(config: Mapping, dotted: str) -> float:
    value = _number(config, dotted)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"config '{dotted}' must be a share in [0, 1], got {value}")
    return value


def _number(config: Mapping, dotted: str) -> float:
    try:
        return float(_cfg(config, dotted))
    except (TypeError, ValueError) as error:
        if "missing" in str(error):
            raise
        raise ValueError(f"config '{dotted}' must be a number, got {_cfg(config, dotted)!r}") from None


def _pair(config: Mapping, dotted: str) -> tuple[float, float]:
    value = _cfg(config, dotted)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"config '{dotted}' must be a [low, high] pair, got {value!r}")
    low, high = (float(v) for v in value)
    if not 0 <= low <= high:
        raise ValueError(f"config '{dotted}' must be [low, high] with 0 <= low <= high, got {[low, high]}")
    return low, high


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}" if minimum != 1
                         else f"{name} must be > 0, got {value}")
    return int(value)


def _as_day(value, name: str) -> int:
    """Days since 1970-01-01 of a date, datetime or ISO date string."""
    if isinstance(value, (date, datetime, pd.Timestamp, np.datetime64)):
        stamp = pd.Timestamp(value)
    elif isinstance(value, str):
        try:
            stamp = pd.Timestamp(date.fromisoformat(value.strip()[:10]))
        except ValueError:
            raise ValueError(f"{name} must be an ISO date (YYYY-MM-DD), got {value!r}") from None
    else:
        raise TypeError(f"{name} must be a date or an ISO date string, got {value!r}")
    return int(np.datetime64(stamp.date(), "D").astype(np.int64))


def _check_window(start, end) -> tuple[int, int]:
    start_day, end_day = _as_day(start, "start"), _as_day(end, "end")
    if start_day >= end_day:
        raise ValueError(f"start must be before end, got start={start!s}, end={end!s}")
    return start_day, end_day


# --------------------------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------------------------

def _cum_rows(weights: np.ndarray) -> np.ndarray:
    """Row-wise cumulative probabilities of a weight matrix (rows of zeros stay zero)."""
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    totals = weights.sum(axis=1, keepdims=True)
    cum = np.cumsum(weights / np.where(totals > 0, totals, 1.0), axis=1)
    cum[:, -1] = np.where(totals[:, 0] > 0, 1.0, 0.0)
    return cum


def _draw(rng: np.random.Generator, cum: np.ndarray, group: np.ndarray | int, n: int | None = None) -> np.ndarray:
    """One category per row from the cumulative distribution ``cum[group]``.

    Rows of every group are drawn in one ``searchsorted``: row ``g`` of ``cum`` is shifted to
    ``[g, g + 1]`` so that the flattened matrix stays sorted.
    """
    group = np.full(n, group, dtype=np.int64) if n is not None else np.asarray(group, dtype=np.int64)
    n_groups, k = cum.shape
    flat = (cum + np.arange(n_groups)[:, None]).ravel()
    position = np.searchsorted(flat, group + rng.random(len(group)), side="right") - group * k
    return np.minimum(position, k - 1)


def _uniform(rng: np.random.Generator, bounds: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Uniform draw in ``[bounds[index, 0], bounds[index, 1]]``."""
    low, high = bounds[index, 0], bounds[index, 1]
    return low + rng.random(len(index)) * (high - low)


def _vector(weights: Mapping, names: Sequence[str], where: str) -> np.ndarray:
    """Weights aligned to ``names``; unknown keys and all-zero weights are errors."""
    index = {name: i for i, name in enumerate(names)}
    vector = np.zeros(len(names))
    for key in sorted(weights, key=str):
        if str(key) not in index:
            raise ValueError(f"config '{where}' has an unknown key '{key}'")
        vector[index[str(key)]] = float(weights[key])
    if (vector < 0).any() or vector.sum() <= 0:
        raise ValueError(f"config '{where}' needs non-negative weights with a positive sum")
    return vector


def _position(names: Sequence[str], key: str, where: str) -> int:
    try:
        return list(names).index(str(key))
    except ValueError:
        raise ValueError(f"config '{where}' refers to an unknown value '{key}'") from None


def _pick_active(rng, member_group, member_first, group, day, concentration) -> np.ndarray:
    """Member of each row's group among those active on the row's day (first day <= day).

    Members must be sorted by (group, first day) and every group must have one. The member is
    ``floor(k * u ** concentration)`` among the ``k`` active ones: early members carry most rows.
    """
    n_groups = int(member_group.max()) + 1 if len(member_group) else 0
    offsets = np.searchsorted(member_group, np.arange(n_groups))
    base = int(min(member_first.min(), day.min())) if len(day) else 0
    span = int(max(member_first.max(), day.max()) - base + 2) if len(day) else 1
    flat = member_group * span + (member_first - base)
    active = np.searchsorted(flat, group * span + (day - base), side="right") - offsets[group]
    active = np.maximum(active, 1)
    chosen = np.minimum((active * rng.random(len(day)) ** concentration).astype(np.int64), active - 1)
    return offsets[group] + chosen


def _text(names: Sequence, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """String column ``names[codes]`` built from the few distinct names (None gives a missing value)."""
    return pd.array(np.asarray(names, dtype=object), dtype="str").take(codes)


def _text_or_none(names: Sequence, codes: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Like :func:`_text`, with "none" for negative codes (no commodity, no form)."""
    return _text([*names, "none"], np.where(codes < 0, len(names), codes))


def _labels(prefix: str, numbers: np.ndarray, width: int) -> pd.api.extensions.ExtensionArray:
    """Identifier strings ``prefix + zero-padded number``, each number formatted once."""
    table = [f"{prefix}{number:0{width}d}" for number in range(int(numbers.max()) + 1)]
    return _text(table, numbers)


# --------------------------------------------------------------------------------------------
# Compiled world: the configuration and reference tables as arrays
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Profiles:
    """Packing profiles (rows) with their parameters as arrays."""

    names: list[str]
    line_kg: np.ndarray        # (P, 2) lognormal median, sigma
    package_kg: np.ndarray     # (P, 2) low, high
    tare: np.ndarray           # (P, 2)
    container_kg: np.ndarray   # (P, 2)
    unit_kg: np.ndarray        # (P, 2)
    unit: np.ndarray           # (P,) quantity unit
    package_types: np.ndarray  # (T,) names
    package_cum: np.ndarray    # (P, T)
    mode_factor: np.ndarray    # (P, M)


@dataclass(frozen=True)
class _Goods:
    """Declarable goods (one row per HS6) grouped into families, other goods and target forms."""

    group_names: list[str]
    group_kind: np.ndarray
    group_profile: np.ndarray
    group_start: np.ndarray
    group_len: np.ndarray
    hs6: np.ndarray
    hts10: np.ndarray
    price: np.ndarray          # (N, 2) USD/kg band
    profile: np.ndarray
    family: np.ndarray         # cover family name or "none"
    phrase_start: np.ndarray   # specific descriptions
    phrase_len: np.ndarray
    vague_start: np.ndarray
    vague_len: np.ndarray
    phrases: np.ndarray        # all phrases, then the same in upper case


@dataclass(frozen=True)
class _Forms:
    """Controlled goods (commodity:form) with prices per year."""

    keys: list[str]
    commodity: np.ndarray
    group: np.ndarray
    profile: np.ndarray
    first_year: int
    price: np.ndarray          # (F, Y, 2)
    cum_by_commodity: np.ndarray


@dataclass(frozen=True)
class _Lanes:
    """Trading lanes or diversion routes."""

    ids: list[str]
    origin: np.ndarray
    export: np.ndarray
    loading: np.ndarray        # (L, ports) cumulative
    discharge: np.ndarray
    transship: np.ndarray      # (L, options) cumulative
    mode_cum: np.ndarray       # (L * n_profiles, M) cumulative
    n_profiles: int
    weight: np.ndarray         # (L,) or (L, C) for routes
    start: np.ndarray          # first active day
    capture: np.ndarray


@dataclass(frozen=True)
class _World:
    """Everything the generator draws from, compiled once per call."""

    cfg: dict
    start: int
    end: int
    countries: list[str]
    ports: list[str]
    transship: list[str]
    commodities: list[str]
    china: int
    hubs: np.ndarray
    onset: np.ndarray
    profiles: _Profiles
    goods: _Goods
    forms: _Forms
    lanes: _Lanes
    routes: _Lanes
    lane_by_origin: np.ndarray
    origin_cum: np.ndarray
    producer_cum: np.ndarray
    scenario_cum: np.ndarray
    china_share: np.ndarray
    cover_cum: np.ndarray
    other_cum: np.ndarray
    fraud_cover_cum: np.ndarray
    lines_cum: np.ndarray


def _build_world(cfg: dict, ref: ReferenceTables, start: int, end: int) -> _World:
    countries = sorted(ref.countries["iso2"].tolist())
    ports = sorted(ref.ports["locode"].tolist())
    commodities = ref.commodities
    transship = _transship_options(cfg, ports)
    profiles = _build_profiles(cfg, ref)
    goods, forms = _build_goods(cfg, ref, profiles, commodities)
    names = (countries, ports, transship, commodities)
    lanes = _build_lanes(cfg, "lanes", names, profiles, start)
    routes = _build_lanes(cfg, "fraud.routes", names, None, start)
    days = np.arange(start, end + 1)
    onset = _onset_days(cfg, ref, commodities)
    _require_lanes(cfg, ref, lanes, goods, countries)
    return _World(
        cfg=cfg, start=start, end=end, countries=countries, ports=ports, transship=transship,
        commodities=commodities, china=_position(countries, "CN", "countries"),
        hubs=np.isin(countries, sorted(ref.diversion_hubs)), onset=onset, profiles=profiles,
        goods=goods, forms=forms, lanes=lanes, routes=routes,
        lane_by_origin=_lane_by_origin(lanes, len(countries)),
        origin_cum=_origin_cum(cfg, goods, countries),
        producer_cum=_producer_cum(cfg, ref, countries, commodities),
        scenario_cum=_scenario_cum(cfg, ref, commodities, days, onset),
        china_share=_phase_values(ref, commodities, days, _cfg(cfg, "legit_target.china_share")),
        cover_cum=_group_weight_cum(cfg, goods, _COVER, "cover.families"),
        other_cum=_group_weight_cum(cfg, goods, _OTHER, "other_goods"),
        fraud_cover_cum=_fraud_cover_cum(cfg, goods, commodities),
        lines_cum=_lines_cum(cfg),
    )


def _require_lanes(cfg: dict, ref: ReferenceTables, lanes: _Lanes, goods: _Goods, countries: list[str]) -> None:
    """Every origin the configuration can draw must have a lane to leave by."""
    needed = set(_cfg(cfg, "background.origin_shift.to"))
    for name, kind in zip(goods.group_names, goods.group_kind):
        block = {_COVER: "cover.families", _OTHER: "other_goods"}.get(int(kind))
        if block is not None:
            needed |= {key for key, weight in _cfg(cfg, f"{block}.{name}.origins").items() if weight > 0}
    needed |= {"CN"} | {p for c in ref.commodities for p in ref.producers(c)} - {_cfg(cfg, "destination_country")}
    missing = sorted(needed - {countries[i] for i in lanes.origin})
    if missing:
        raise ValueError(f"config 'lanes' has no lane from {', '.join(missing)}")


def _transship_options(cfg: dict, ports: list[str]) -> list[str]:
    options = {""}
    for block in ("lanes", "fraud.routes"):
        for lane in sorted(_cfg(cfg, block)):
            options.update(str(key) for key in _cfg(cfg, f"{block}.{lane}.transship"))
    for option in sorted(options):
        for port in filter(None, option.split(";")):
            _position(ports, port, "transship port")
    return sorted(options)


def _profile_row(cfg: dict, where: str, package_kg: tuple[float, float] | None = None) -> dict:
    """Packing parameters of the profile at config path ``where``."""
    spec = _cfg(cfg, where)
    return {
        "line_kg": (_number(cfg, f"{where}.line_kg.median"), _number(cfg, f"{where}.line_kg.sigma")),
        "package_kg": package_kg or _pair(cfg, f"{where}.kg_per_package"),
        "tare": _pair(cfg, f"{where}.tare"),
        "container_kg": _pair(cfg, f"{where}.kg_per_container"),
        "unit_kg": _pair(cfg, f"{where}.unit_kg") if "unit_kg" in spec else (1.0, 1.0),
        "unit": str(spec.get("unit", "kg")),
        "package_types": dict(_cfg(cfg, f"{where}.package_types")),
        "mode_factors": dict(spec.get("mode_factors", {})),
        "where": where,
    }


def _build_profiles(cfg: dict, ref: ReferenceTables) -> _Profiles:
    """Packing profiles of the packing block, then one per controlled form ("form:<key>")."""
    rows = {name: _profile_row(cfg, f"packing.{name}") for name in sorted(_cfg(cfg, "packing"))}
    package = ref.target_goods.groupby(["commodity", "form"], sort=True)["package_kg"].first()
    for key in sorted(_cfg(cfg, "target_forms")):
        commodity, _, form = key.partition(":")
        if (commodity, form) not in package.index:
            raise ValueError(f"config 'target_forms' has an unknown form '{key}'")
        # Manifest packages hold several of the reference unit packages (ingots, bags, sleeves).
        units = _pair(cfg, f"target_forms.{key}.units_per_package")
        kg = float(package[(commodity, form)])
        rows[f"form:{key}"] = _profile_row(cfg, f"target_forms.{key}", (kg * units[0], kg * units[1]))
    return _profiles_from_rows(rows)


def _profiles_from_rows(rows: dict[str, dict]) -> _Profiles:
    names = list(rows)
    types = sorted({t for row in rows.values() for t in row["package_types"]})
    modes = {m: 1.0 for m in TRANSPORT_MODES}
    stack = {field: np.array([rows[n][field] for n in names], dtype=float)
             for field in ("line_kg", "package_kg", "tare", "container_kg", "unit_kg")}
    return _Profiles(
        names=names, **stack,
        unit=np.array([rows[n]["unit"] for n in names], dtype=object),
        package_types=np.array(types, dtype=object),
        package_cum=_cum_rows([_vector(rows[n]["package_types"], types, rows[n]["where"]) for n in names]),
        mode_factor=np.array([_vector({**modes, **rows[n]["mode_factors"]}, TRANSPORT_MODES, rows[n]["where"])
                              for n in names]),
    )


def _cover_goods(cfg: dict, ref: ReferenceTables) -> dict[str, list[dict]]:
    """Cover goods per family: one entry per HS6 with band, packing profile and phrases."""
    families: dict[str, list[dict]] = {name: [] for name in sorted(_cfg(cfg, "cover.families"))}
    covers = ref.hs_codes[ref.hs_codes["role"] == "cover"].sort_values("hs_prefix")
    for row in covers.itertuples(index=False):
        family, prefix = str(row.cover_family), str(row.hs_prefix)
        if family not in families:
            raise ValueError(f"config 'cover.families' lacks the reference family '{family}'")
        band = (row.usd_per_kg_low, row.usd_per_kg_high)
        if pd.isna(band[0]) or pd.isna(band[1]):
            band = _pair(cfg, f"cover.price_fill.{prefix}")
        hs6_list = [prefix] if len(prefix) == 6 else list(_cfg(cfg, f"hs_code.hs6_for_prefix.{prefix}"))
        profile = cfg["cover"].get("profile_by_hs", {}).get(prefix, _cfg(cfg, f"cover.families.{family}.profile"))
        phrases = list(_cfg(cfg, f"cover.descriptions.{prefix}"))
        vague = list(_cfg(cfg, f"cover.families.{family}.vague"))
        families[family] += [dict(hs6=h, hts10=None, price=band, profile=f"{profile}", phrases=phrases,
                                  vague=vague, family=family) for h in hs6_list]
    return families


def _other_goods(cfg: dict) -> dict[str, list[dict]]:
    groups = {}
    vague = list(_cfg(cfg, "descriptions.generic_vague"))
    for name in sorted(_cfg(cfg, "other_goods")):
        where = f"other_goods.{name}"
        band = _pair(cfg, f"{where}.usd_per_kg")
        groups[name] = [dict(hs6=str(h), hts10=None, price=band, profile=str(_cfg(cfg, f"{where}.profile")),
                             phrases=list(_cfg(cfg, f"{where}.descriptions")), vague=vague, family="none")
                        for h in _cfg(cfg, f"{where}.hs6")]
    return groups


def _form_goods(cfg: dict, ref: ReferenceTables) -> dict[str, list[dict]]:
    groups = {}
    vague = list(_cfg(cfg, "descriptions.generic_vague"))
    table = ref.target_goods.sort_values(["commodity", "form", "price_year"])
    for (commodity, form), rows in table.groupby(["commodity", "form"], sort=True):
        key = f"{commodity}:{form}"
        if key not in _cfg(cfg, "target_forms"):
            raise ValueError(f"config 'target_forms' lacks the reference form '{key}'")
        band = (float(rows["usd_per_kg_low"].min()), float(rows["usd_per_kg_high"].max()))
        groups[key] = [dict(hs6=str(rows["hs6"].iloc[0]), hts10=_hts(rows["us_hts10"].iloc[0]), price=band,
                            profile=f"form:{key}", phrases=list(_cfg(cfg, f"target_forms.{key}.descriptions")),
                            vague=vague, family="none")]
    return groups


def _hts(value) -> str | None:
    return None if pd.isna(value) else str(value)


def _build_goods(cfg: dict, ref: ReferenceTables, profiles: _Profiles, commodities: list[str]) -> tuple[_Goods, _Forms]:
    kinds = [(_COVER, _cover_goods(cfg, ref)), (_OTHER, _other_goods(cfg)), (_TARGET, _form_goods(cfg, ref))]
    names, kind, rows = [], [], []
    starts, lengths = [], []
    for code, groups in kinds:
        for name, entries in groups.items():
            names.append(name)
            kind.append(code)
            starts.append(len(rows))
            lengths.append(len(entries))
            rows += entries
    goods = _goods_arrays(cfg, names, kind, starts, lengths, rows, profiles)
    return goods, _build_forms(cfg, ref, goods, commodities)


def _goods_arrays(cfg, names, kind, starts, lengths, rows, profiles: _Profiles) -> _Goods:
    suffix = str(_cfg(cfg, "hs_code.hts_suffix"))
    phrases, phrase_at, vague_at = _phrase_table(rows)
    profile = np.array([_position(profiles.names, r["profile"], "packing profile") for r in rows])
    starts = np.array(starts)
    return _Goods(
        group_names=names, group_kind=np.array(kind), group_profile=profile[starts],
        group_start=starts, group_len=np.array(lengths),
        hs6=np.array([r["hs6"] for r in rows], dtype=object),
        hts10=np.array([r["hts10"] or r["hs6"] + suffix for r in rows], dtype=object),
        price=np.array([r["price"] for r in rows], dtype=float), profile=profile,
        family=np.array([r["family"] for r in rows], dtype=object),
        phrase_start=phrase_at[:, 0], phrase_len=phrase_at[:, 1],
        vague_start=vague_at[:, 0], vague_len=vague_at[:, 1], phrases=phrases,
    )


def _phrase_table(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All phrases (then their upper-case forms) and (start, length) of each row's two lists."""
    phrases: list[str] = []
    spans = {}
    for row in rows:
        for field in ("phrases", "vague"):
            key = tuple(row[field])
            if key not in spans:
                spans[key] = (len(phrases), len(key))
                phrases += list(key)
    phrase_at = np.array([spans[tuple(r["phrases"])] for r in rows])
    vague_at = np.array([spans[tuple(r["vague"])] for r in rows])
    return np.array(phrases + [p.upper() for p in phrases], dtype=object), phrase_at, vague_at


def _build_forms(cfg: dict, ref: ReferenceTables, goods: _Goods, commodities: list[str]) -> _Forms:
    keys = [n for n, k in zip(goods.group_names, goods.group_kind) if k == _TARGET]
    commodity = np.array([commodities.index(k.partition(":")[0]) for k in keys])
    years = ref.target_goods["price_year"].astype(int)
    first, last = int(years.min()), int(years.max())
    price = np.array([[_form_band(ref, key, year) for year in range(first, last + 1)] for key in keys])
    weights = np.array([[float(_cfg(cfg, f"target_forms.{k}.weight")) if commodity[i] == c else 0.0
                         for i, k in enumerate(keys)] for c in range(len(commodities))])
    return _Forms(
        keys=keys, commodity=commodity, group=np.array([goods.group_names.index(k) for k in keys]),
        profile=goods.profile[goods.group_start[[goods.group_names.index(k) for k in keys]]],
        first_year=first, price=price, cum_by_commodity=_cum_rows(weights),
    )


def _form_band(ref: ReferenceTables, key: str, year: int) -> tuple[float, float]:
    """USD/kg band of a form in a year: the row of the nearest year with a price."""
    commodity, _, form = key.partition(":")
    table = ref.target_goods
    rows = table[(table["commodity"] == commodity) & (table["form"] == form)]
    nearest = rows.iloc[int(np.argmin(np.abs(rows["price_year"].to_numpy() - year)))]
    return float(nearest["usd_per_kg_low"]), float(nearest["usd_per_kg_high"])


def _lane_row(cfg: dict, where: str, names: tuple, is_route: bool) -> dict:
    """One lane (true origin given) or diversion route (true origin China) as arrays."""
    countries, ports, transship, commodities = names
    spec = _cfg(cfg, where)
    weights = (_vector(_cfg(cfg, f"{where}.weights"), commodities, f"{where}.weights") if is_route
               else _number(cfg, f"{where}.weight"))
    return {
        "origin": -1 if is_route else _position(countries, _cfg(cfg, f"{where}.origin"), f"{where}.origin"),
        "export": _position(countries, _cfg(cfg, f"{where}.export"), f"{where}.export"),
        "loading": _vector(_cfg(cfg, f"{where}.loading"), ports, f"{where}.loading"),
        "discharge": _vector(_cfg(cfg, f"{where}.discharge"), ports, f"{where}.discharge"),
        "transship": _vector(_cfg(cfg, f"{where}.transship"), transship, f"{where}.transship"),
        "modes": _vector(_cfg(cfg, f"{where}.modes"), TRANSPORT_MODES, f"{where}.modes"),
        "weight": weights,
        "start": _as_day(spec["start"], f"config '{where}.start'") if "start" in spec else None,
        "capture": _share(cfg, f"{where}.capture") if "capture" in spec else 0.0,
    }


def _build_lanes(cfg: dict, block: str, names: tuple, profiles: _Profiles | None, start: int) -> _Lanes:
    """Lanes of ``block``; routes (no profiles) draw their mode from the route alone."""
    ids = sorted(_cfg(cfg, block))
    rows = [_lane_row(cfg, f"{block}.{lane}", names, profiles is None) for lane in ids]
    field = {key: np.array([row[key] for row in rows]) for key in ("origin", "export", "modes", "weight", "capture")}
    return _Lanes(
        ids=ids, origin=field["origin"], export=field["export"],
        loading=_cum_rows([row["loading"] for row in rows]),
        discharge=_cum_rows([row["discharge"] for row in rows]),
        transship=_cum_rows([row["transship"] for row in rows]),
        mode_cum=_mode_cum(field["modes"], profiles), n_profiles=1 if profiles is None else len(profiles.names),
        weight=field["weight"], capture=field["capture"],
        # Lanes without a start date exist from before the window.
        start=np.array([start - 1 if row["start"] is None else row["start"] for row in rows]),
    )


def _mode_cum(modes: np.ndarray, profiles: _Profiles | None) -> np.ndarray:
    """Mode distribution per (lane, profile): lane weights times the profile's mode factors."""
    if profiles is None:
        return _cum_rows(modes)
    combined = modes[:, None, :] * profiles.mode_factor[None, :, :]
    empty = combined.sum(axis=2, keepdims=True) == 0
    # A lane whose every mode the profile forbids (metal by post only) keeps the lane's own modes.
    combined = np.where(empty, modes[:, None, :], combined)
    return _cum_rows(combined.reshape(-1, modes.shape[1]))


def _lane_by_origin(lanes: _Lanes, n_countries: int) -> np.ndarray:
    weights = np.zeros((n_countries, len(lanes.ids)))
    weights[lanes.origin, np.arange(len(lanes.ids))] = lanes.weight
    return _cum_rows(weights)


def _origin_cum(cfg: dict, goods: _Goods, countries: list[str]) -> np.ndarray:
    """Origin distribution per goods group (rows of target forms stay empty)."""
    rows = np.zeros((len(goods.group_names), len(countries)))
    for g, (name, kind) in enumerate(zip(goods.group_names, goods.group_kind)):
        if kind == _COVER:
            rows[g] = _vector(_cfg(cfg, f"cover.families.{name}.origins"), countries, f"cover.families.{name}.origins")
        elif kind == _OTHER:
            rows[g] = _vector(_cfg(cfg, f"other_goods.{name}.origins"), countries, f"other_goods.{name}.origins")
    return _cum_rows(rows)


def _producer_cum(cfg: dict, ref: ReferenceTables, countries: list[str], commodities: list[str]) -> np.ndarray:
    """Non-Chinese producer countries per commodity, equally weighted."""
    excluded = {"CN", str(_cfg(cfg, "destination_country"))}
    rows = np.zeros((len(commodities), len(countries)))
    for c, commodity in enumerate(commodities):
        producers = sorted(ref.producers(commodity) - excluded)
        if not producers:
            raise ValueError(f"reference countries list no producer of {commodity} outside China")
        rows[c, [countries.index(p) for p in producers]] = 1.0
    return _cum_rows(rows)


def _measures(ref: ReferenceTables, commodity: str) -> tuple[list[str], np.ndarray]:
    table = ref.control_dates.sort_values(["date", "measure_id"])
    mask = table["commodities"].str.split(";").map(lambda items: commodity in items)
    days = table.loc[mask, "date"].to_numpy().astype("datetime64[D]").astype(np.int64)
    return table.loc[mask, "measure_id"].tolist(), days


def _phase_values(ref: ReferenceTables, commodities: list[str], days: np.ndarray, mapping: Mapping) -> np.ndarray:
    """Per day and commodity, the value of ``mapping`` for the latest measure in force.

    ``mapping`` is keyed by measure_id, with "none" before any measure and "default" for measures
    it does not list.
    """
    out = np.empty((len(days), len(commodities)))
    for c, commodity in enumerate(commodities):
        ids, dates = _measures(ref, commodity)
        values = [mapping["none"]] + [mapping.get(m, mapping["default"]) for m in ids]
        out[:, c] = np.asarray(values, dtype=float)[np.searchsorted(dates, days, side="right")]
    return out


def _onset_days(cfg: dict, ref: ReferenceTables, commodities: list[str]) -> np.ndarray:
    onset = []
    for commodity in commodities:
        measure = str(_cfg(cfg, f"fraud.onset_measure.{commodity}"))
        ids, days = _measures(ref, commodity)
        onset.append(days[_position(ids, measure, f"fraud.onset_measure.{commodity}")])
    return np.array(onset, dtype=np.int64)


def _fraud_intensity(cfg: dict, ref: ReferenceTables, commodities: list[str], days: np.ndarray,
                     onset: np.ndarray) -> np.ndarray:
    """Relative fraud intensity per day and commodity: a small level before the onset."""
    phase = _phase_values(ref, commodities, days, {"none": 0.0, **_cfg(cfg, "fraud.phase_intensity")})
    pre = float(_cfg(cfg, "fraud.pre_onset_intensity"))
    return np.where(days[:, None] < onset[None, :], pre, phase)


def _scenario_cum(cfg: dict, ref: ReferenceTables, commodities: list[str], days: np.ndarray,
                  onset: np.ndarray) -> np.ndarray:
    """Per day: background cover, other, legit target, switcher, then fraud per commodity."""
    weights = _vector(_cfg(cfg, "fraud.commodity_weights"), commodities, "fraud.commodity_weights")
    fraud = float(_cfg(cfg, "fraud.rate_at_full_intensity")) * _fraud_intensity(cfg, ref, commodities, days, onset)
    fraud = fraud * weights / weights.sum()
    switcher = np.full(len(days), _share(cfg, "switcher.declaration_share"))
    rest = 1.0 - fraud.sum(axis=1) - switcher
    if (rest <= 0).any():
        raise ValueError("config 'fraud.rate_at_full_intensity' and 'switcher.declaration_share' "
                         "leave no background trade")
    shares = _vector(_cfg(cfg, "scenarios"), SCENARIOS[:3], "scenarios")
    background = rest[:, None] * (shares / shares.sum())
    return _cum_rows(np.column_stack([background, switcher, fraud]))


def _group_weight_cum(cfg: dict, goods: _Goods, kind: int, block: str) -> np.ndarray:
    weights = np.array([float(_cfg(cfg, f"{block}.{n}.weight")) if k == kind else 0.0
                        for n, k in zip(goods.group_names, goods.group_kind)])
    return _cum_rows(weights)


def _fraud_cover_cum(cfg: dict, goods: _Goods, commodities: list[str]) -> np.ndarray:
    """Cover family (goods group) each commodity is declared as."""
    cover = np.flatnonzero(goods.group_kind == _COVER)
    families = [goods.group_names[g] for g in cover]
    rows = np.zeros((len(commodities), len(goods.group_names)))
    for c, commodity in enumerate(commodities):
        rows[c, cover] = _vector(_cfg(cfg, f"fraud.covers.{commodity}"), families, f"fraud.covers.{commodity}")
    return _cum_rows(rows)


def _lines_cum(cfg: dict) -> np.ndarray:
    rows = [list(map(float, _cfg(cfg, f"lines_per_declaration.{name}"))) for name in SCENARIOS]
    return _cum_rows(rows)


# --------------------------------------------------------------------------------------------
# Declarations per scenario
# --------------------------------------------------------------------------------------------

_DECL_DEFAULTS = {
    "commodity": -1, "form": -1, "hidden": False, "disguise": _NO_DISGUISE, "network": -1,
    "shipper_kind": _POOL, "shipper_key": 0, "consignee_kind": _POOL, "consignee_key": 0,
}


def _frame(scenario: int, day: np.ndarray, **columns) -> pd.DataFrame:
    n = len(day)
    data = {"day": day, "scenario": np.full(n, scenario)}
    data.update({k: np.full(n, v) for k, v in _DECL_DEFAULTS.items()})
    data.update(columns)
    return pd.DataFrame(data)


def _route_fields(rng, lanes: _Lanes, lane: np.ndarray, profile: np.ndarray | None, route_offset: int) -> dict:
    """Export country, ports, transshipment and mode of each row's lane or route."""
    group = lane * lanes.n_profiles + (profile if profile is not None else 0)
    return {
        "export": lanes.export[lane],
        "pol": _draw(rng, lanes.loading, lane),
        "pod": _draw(rng, lanes.discharge, lane),
        "ts": _draw(rng, lanes.transship, lane),
        "mode": _draw(rng, lanes.mode_cum, group),
        "route": route_offset + lane,
    }


def _shift_origin(world: _World, rng, origin: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Move a share of Chinese background trade to other origins after the shift date."""
    cfg, where = world.cfg, "background.origin_shift"
    shift_day = _as_day(_cfg(cfg, f"{where}.date"), f"config '{where}.date'")
    chosen = rng.random(len(origin)) < _share(cfg, f"{where}.share")
    moved = (origin == world.china) & (day >= shift_day) & chosen
    to = _vector(_cfg(cfg, f"{where}.to"), world.countries, f"{where}.to")
    target = _draw(rng, _cum_rows(to), 0, len(origin))
    return np.where(moved, target, origin)


def _background(world: _World, rng, day: np.ndarray, scenario: int) -> pd.DataFrame:
    cum = world.cover_cum if scenario == _BG_COVER else world.other_cum
    group = _draw(rng, cum, 0, len(day))
    origin = _shift_origin(world, rng, _draw(rng, world.origin_cum, group), day)
    lane = _draw(rng, world.lane_by_origin, origin)
    fields = _route_fields(rng, world.lanes, lane, world.goods.group_profile[group], 0)
    return _frame(scenario, day, group=group, origin=origin, **fields)


def _legit_target(world: _World, rng, day: np.ndarray) -> pd.DataFrame:
    cfg = world.cfg
    weights = _vector(_cfg(cfg, "legit_target.commodity_weights"), world.commodities, "legit_target.commodity_weights")
    commodity = _draw(rng, _cum_rows(weights), 0, len(day))
    form = _draw(rng, world.forms.cum_by_commodity, commodity)
    china = rng.random(len(day)) < world.china_share[day - world.start, commodity]
    origin = np.where(china, world.china, _draw(rng, world.producer_cum, commodity))
    lane = _draw(rng, world.lane_by_origin, origin)
    fields = _route_fields(rng, world.lanes, lane, world.forms.profile[form], 0)
    return _frame(_LEGIT, day, group=world.forms.group[form], form=form, origin=origin, **fields)


@dataclass(frozen=True)
class _Networks:
    """Fraud networks sorted by (commodity, start day)."""

    commodity: np.ndarray
    start: np.ndarray
    shippers: np.ndarray
    consignees: np.ndarray
    rotation: np.ndarray
    preferred: np.ndarray
    captured: np.ndarray


def _int_range(rng, cfg: dict, dotted: str, n: int) -> np.ndarray:
    low, high = _pair(cfg, dotted)
    return rng.integers(int(low), int(high) + 1, n)


def _scaled_count(cfg: dict, where: str, n_rows: int) -> int:
    """``where.per_100k_lines`` scaled to the frame size, at least ``where.min_count``."""
    scaled = round(_number(cfg, f"{where}.per_100k_lines") * n_rows / _PER_100K)
    return max(int(_number(cfg, f"{where}.min_count")), scaled)


def _networks(world: _World, rng, n_rows: int) -> _Networks:
    cfg, where = world.cfg, "fraud.networks"
    n_c = len(world.commodities)
    count = max(_scaled_count(cfg, where, n_rows), n_c)
    weights = _vector(_cfg(cfg, "fraud.commodity_weights"), world.commodities, "fraud.commodity_weights")
    # Every commodity gets at least one network; the rest follow the commodity weights.
    commodity = np.concatenate([np.arange(n_c), _draw(rng, _cum_rows(weights), 0, count - n_c)])
    onset = world.onset[commodity]
    late = rng.random(count) >= _share(cfg, f"{where}.established_share")
    later = (rng.random(count) * np.maximum(world.end - onset, 0)).astype(np.int64)
    start = np.where(late, onset + later, onset)
    shippers = _int_range(rng, cfg, f"{where}.shippers", count)
    consignees = _int_range(rng, cfg, f"{where}.consignees", count)
    rotation = _int_range(rng, cfg, f"{where}.rotation_days", count)
    rotation = np.where(rng.random(count) < _share(cfg, f"{where}.no_rotation_share"), 0, rotation)
    # A network's usual route is one that exists from the start of the window.
    always = (world.routes.start < world.start)[:, None]
    preferred = _draw(rng, _cum_rows((world.routes.weight * always).T), commodity)
    captured = _captured(world, rng, commodity)
    order = np.lexsort((start, commodity))
    return _Networks(commodity[order], start[order], shippers[order], consignees[order], rotation[order],
                     preferred[order], captured[order])


def _captured(world: _World, rng, commodity: np.ndarray) -> np.ndarray:
    """Route each network moves to once a route with a start date and a capture share opens."""
    captured = np.full(len(commodity), -1)
    for r in np.flatnonzero(world.routes.capture > 0):
        moves = (rng.random(len(commodity)) < world.routes.capture[r]) & (world.routes.weight[r, commodity] > 0)
        captured = np.where(moves, r, captured)
    return captured


def _route_period_cum(world: _World) -> tuple[np.ndarray, np.ndarray]:
    """Route weights per (commodity, period) where periods split at the routes' start days."""
    bounds = np.unique(world.routes.start[world.routes.start >= world.start])
    period_days = np.concatenate([[world.start - 1], bounds])
    active = world.routes.start[None, :] <= period_days[:, None]          # (periods, R)
    weights = world.routes.weight.T[:, None, :] * active[None, :, :]       # (C, periods, R)
    if (weights.sum(axis=2) == 0).any():
        raise ValueError("config 'fraud.routes' leaves a commodity without an active route")
    return bounds, _cum_rows(weights.reshape(-1, len(world.routes.ids)))


def _pick_routes(world: _World, rng, nets: _Networks, network: np.ndarray, commodity: np.ndarray,
                 day: np.ndarray) -> np.ndarray:
    """Route of each consignment: mostly the network's usual one, the newly opened one once moved."""
    bounds, cum = _route_period_cum(world)
    period = np.searchsorted(bounds, day, side="right")
    free = _draw(rng, cum, commodity * (len(bounds) + 1) + period)
    net = np.maximum(network, 0)
    sticky = (network >= 0) & (rng.random(len(day)) < _share(world.cfg, "fraud.networks.route_stickiness"))
    captured = nets.captured[net]
    moved = sticky & (captured >= 0) & (day >= world.routes.start[np.maximum(captured, 0)])
    return np.where(moved, captured, np.where(sticky, nets.preferred[net], free))


def _pick_networks(world: _World, rng, nets: _Networks, commodity: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Network of each consignment; -1 for one-off consignments and those before the onset."""
    concentration = _number(world.cfg, "fraud.networks.concentration")
    network = _pick_active(rng, nets.commodity, nets.start, commodity, day, concentration)
    one_off = rng.random(len(day)) < _share(world.cfg, "fraud.networks.one_off_share")
    return np.where(one_off | (day < world.onset[commodity]), -1, network)


def _network_parties(world: _World, rng, nets: _Networks, network: np.ndarray, day: np.ndarray) -> dict:
    """Shipper and consignee keys: a few per network, shippers renewed every rotation period."""
    net, n, member = np.maximum(network, 0), len(day), network >= 0
    rotation = nets.rotation[net]
    generation = np.where(rotation > 0, np.maximum(day - nets.start[net], 0) // np.maximum(rotation, 1), 0)
    slot = (rng.random(n) * nets.shippers[net]).astype(np.int64)
    consignee = (rng.random(n) * nets.consignees[net]).astype(np.int64)
    forwarder = rng.random(n) < _share(world.cfg, "fraud.forwarder_consignee_share")
    # One-off consignments get parties of their own (keys unique per consignment).
    return {
        "shipper_kind": np.where(member, _NETWORK, _ONE_OFF),
        "shipper_key": np.where(member, (net * 10_000 + generation) * 16 + slot, np.arange(n)),
        "consignee_kind": np.where(forwarder, _FORWARDER, _NETWORK),
        "consignee_key": np.where(member, net * 16 + consignee, -1 - np.arange(n)),
    }


def _disguise(world: _World, rng, commodity: np.ndarray, export: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disguise (true value or undervalued) and declared origin (CN or the export country)."""
    shares = _vector({**{c: 0.0 for c in world.commodities}, **_cfg(world.cfg, "fraud.undervalued_share")},
                     world.commodities, "fraud.undervalued_share")
    undervalued = rng.random(len(commodity)) < shares[commodity]
    false_origin = rng.random(len(commodity)) < _share(world.cfg, "fraud.false_origin_share")
    return np.where(undervalued, _UNDERVALUED, _TRUE_VALUE), np.where(false_origin, export, world.china)


def _fraud(world: _World, rng, day: np.ndarray, commodity: np.ndarray, n_rows: int) -> pd.DataFrame:
    nets = _networks(world, rng, n_rows)
    network = _pick_networks(world, rng, nets, commodity, day)
    route = _pick_routes(world, rng, nets, network, commodity, day)
    fields = _route_fields(rng, world.routes, route, None, len(world.lanes.ids))
    form = _draw(rng, world.forms.cum_by_commodity, commodity)
    group = _draw(rng, world.fraud_cover_cum, commodity)
    disguise, origin = _disguise(world, rng, commodity, fields["export"])
    parties = _network_parties(world, rng, nets, network, day)
    return _frame(_FRAUD, day, group=group, form=form, commodity=commodity, hidden=np.ones(len(day), bool),
                  disguise=disguise, origin=origin, network=network, **fields, **parties)


def _switch_buyers(world: _World, rng, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Commodity and hub route of each switching buyer."""
    cfg = world.cfg
    n_buyers = _scaled_count(cfg, "switcher", n_rows)
    weights = _vector(_cfg(cfg, "switcher.commodity_weights"), world.commodities, "switcher.commodity_weights")
    routes = _vector(_cfg(cfg, "switcher.routes"), world.routes.ids, "switcher.routes")
    return _draw(rng, _cum_rows(weights), 0, n_buyers), _draw(rng, _cum_rows(routes), 0, n_buyers)


def _switcher(world: _World, rng, day: np.ndarray, n_rows: int) -> pd.DataFrame:
    """Buyers importing directly from China until the onset, then from a hub subsidiary."""
    buyer_commodity, buyer_route = _switch_buyers(world, rng, n_rows)
    n = len(day)
    buyer = rng.integers(0, len(buyer_commodity), n)
    commodity = buyer_commodity[buyer]
    after = day >= world.onset[commodity]
    hub = after | (rng.random(n) < _share(world.cfg, "switcher.pre_hub_share"))
    form = _draw(rng, world.forms.cum_by_commodity, commodity)
    lane = _position(world.lanes.ids, _cfg(world.cfg, "switcher.direct_lane"), "switcher.direct_lane")
    direct = _route_fields(rng, world.lanes, np.full(n, lane), world.forms.profile[form], 0)
    via_hub = _route_fields(rng, world.routes, buyer_route[buyer], None, len(world.lanes.ids))
    fields = {key: np.where(hub, via_hub[key], direct[key]) for key in direct}
    disguise, declared = _disguise(world, rng, commodity, fields["export"])
    # Before the switch the hub subsidiary ships small genuine lots of hub-origin goods.
    origin = np.where(after, declared, np.where(hub, fields["export"], world.china))
    group = np.where(hub, _draw(rng, world.fraud_cover_cum, commodity), world.forms.group[form])
    return _frame(
        _SWITCH, day, group=group, form=np.where(hub & ~after, -1, form), commodity=np.where(after, commodity, -1),
        hidden=after, disguise=np.where(after, disguise, _NO_DISGUISE), origin=origin,
        shipper_kind=np.where(hub, _SWITCH_HUB, _SWITCH_CN), shipper_key=buyer,
        consignee_kind=np.full(n, _SWITCH_BUYER), consignee_key=buyer, **fields,
    )


def _split_parcels(world: _World, rng, decls: pd.DataFrame) -> pd.DataFrame:
    """Split each express fraud consignment into several small parcels a few days apart."""
    low, high = (int(v) for v in _cfg(world.cfg, "fraud.parcel_split"))
    parcel = ((decls["scenario"] == _FRAUD) & (decls["mode"] == _POST)).to_numpy()
    copies = np.where(parcel, rng.integers(low, high + 1, len(decls)), 1)
    out = decls.iloc[np.repeat(np.arange(len(decls)), copies)].reset_index(drop=True)
    spread = rng.integers(0, int(_cfg(world.cfg, "fraud.parcel_spread_days")) + 1, len(out))
    out["day"] = np.minimum(out["day"].to_numpy() + spread * np.repeat(copies > 1, copies), world.end)
    return out


def _draw_declarations(world: _World, rng, n_decls: int, n_rows: int) -> pd.DataFrame:
    """Declarations of every scenario on uniform dates, with their number of lines."""
    day = rng.integers(world.start, world.end + 1, n_decls)
    kind = _draw(rng, world.scenario_cum, day - world.start)
    fraud = kind >= _FRAUD
    parts = [
        _background(world, rng, day[kind == _BG_COVER], _BG_COVER),
        _background(world, rng, day[kind == _BG_OTHER], _BG_OTHER),
        _legit_target(world, rng, day[kind == _LEGIT]),
        _switcher(world, rng, day[kind == _SWITCH], n_rows),
        _fraud(world, rng, day[fraud], kind[fraud] - _FRAUD, n_rows),
    ]
    decls = _split_parcels(world, rng, pd.concat(parts, ignore_index=True))
    lines = 1 + _draw(rng, world.lines_cum, decls["scenario"].to_numpy())
    parcel = (decls["scenario"] == _FRAUD).to_numpy() & (decls["mode"] == _POST).to_numpy()
    decls["n_lines"] = np.where(parcel, 1, lines)
    return decls


def _trim(rng, decls: pd.DataFrame, n_rows: int) -> pd.DataFrame | None:
    """Random declarations holding exactly ``n_rows`` lines (the last one cut short); None if too few."""
    order = rng.permutation(len(decls))
    total = np.cumsum(decls["n_lines"].to_numpy()[order])
    if len(total) == 0 or total[-1] < n_rows:
        return None
    last = int(np.searchsorted(total, n_rows, side="left"))
    kept = decls.iloc[np.sort(order[: last + 1])].copy()
    before = int(total[last - 1]) if last > 0 else 0
    kept.loc[order[last], "n_lines"] = n_rows - before
    return kept.reset_index(drop=True)


def _declarations(world: _World, rng, n_rows: int) -> pd.DataFrame:
    """Declarations holding exactly ``n_rows`` lines, drawn from a slightly larger batch."""
    expected = (np.diff(world.lines_cum, prepend=0.0, axis=1) * np.arange(1, 4)).sum(axis=1)
    shares = _vector(_cfg(world.cfg, "scenarios"), SCENARIOS[:3], "scenarios")
    mean_lines = float(expected[:3] @ shares / shares.sum())
    budget = math.ceil(1.05 * n_rows / mean_lines) + 64
    decls = _trim(rng, _draw_declarations(world, rng, budget, n_rows), n_rows)
    if decls is None:
        # Every declaration has at least one line, so n_rows declarations always suffice.
        decls = _trim(rng, _draw_declarations(world, rng, n_rows, n_rows), n_rows)
    return decls


# --------------------------------------------------------------------------------------------
# Entities
# --------------------------------------------------------------------------------------------

def _pool(world: _World, rng, group_key: np.ndarray, day: np.ndarray, per_entity: float) -> tuple[np.ndarray, int]:
    """Members of legitimate pools sized from the data, with entry dates spread over the window."""
    cfg = world.cfg
    keys, group, counts = np.unique(group_key, return_inverse=True, return_counts=True)
    sizes = np.maximum(1, np.ceil(counts / per_entity)).astype(np.int64)
    owner = np.repeat(np.arange(len(keys)), sizes)
    established = rng.random(len(owner)) < _share(cfg, "entities.established_share")
    first = np.where(established, world.start, rng.integers(world.start, world.end + 1, len(owner)))
    first[np.cumsum(sizes) - sizes] = world.start  # each pool has one member from the start
    order = np.lexsort((first, owner))
    concentration = _number(cfg, "entities.concentration")
    return _pick_active(rng, owner[order], first[order], group, day, concentration), int(sizes.sum())


def _entity_numbers(rng, legit: np.ndarray, legit_member: np.ndarray, legit_total: int, kind: np.ndarray,
                    key: np.ndarray) -> np.ndarray:
    """Shuffled entity numbers: pool members first, then one per distinct (kind, key)."""
    number = np.zeros(len(kind), dtype=np.int64)
    number[legit] = legit_member
    # One integer per (kind, key); keys stay well below 2**40 in magnitude.
    special = kind[~legit].astype(np.int64) * (1 << 42) + key[~legit] + (1 << 41)
    unique, inverse = np.unique(special, return_inverse=True)
    number[~legit] = legit_total + inverse
    # Shuffle so that an id never tells a fraud entity from a legitimate one.
    return rng.permutation(legit_total + len(unique))[number]


def _shippers(world: _World, rng, decls: pd.DataFrame) -> np.ndarray:
    """Shipper numbers: pools per (origin, goods group), network and story shippers."""
    kind = decls["shipper_kind"].to_numpy()
    legit = kind == _POOL
    key = decls["origin"].to_numpy() * len(world.goods.group_names) + decls["group"].to_numpy()
    per = _number(world.cfg, "entities.declarations_per_shipper")
    member, total = _pool(world, rng, key[legit], decls["day"].to_numpy()[legit], per)
    return _entity_numbers(rng, legit, member, total, kind, decls["shipper_key"].to_numpy())


def _parties(world: _World, rng, decls: pd.DataFrame, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Consignee and importer numbers in one party space (consignees, forwarders, story parties)."""
    cfg, n = world.cfg, len(decls)
    kind = decls["consignee_kind"].to_numpy().copy()
    kind[(kind == _POOL) & (rng.random(n) < _share(cfg, "entities.consignee_forwarder_share"))] = _FORWARDER
    n_fwd = max(2, round(_number(cfg, "entities.forwarders_per_100k_lines") * n_rows / _PER_100K))
    forwarder = (n_fwd * rng.random((2, n)) ** _number(cfg, "entities.concentration")).astype(np.int64)
    key = np.where(kind == _FORWARDER, forwarder[0], decls["consignee_key"].to_numpy())
    legit = kind == _POOL
    per = _number(cfg, "entities.declarations_per_consignee")
    member, total = _pool(world, rng, decls["group"].to_numpy()[legit], decls["day"].to_numpy()[legit], per)
    # Consignees and importers of record are numbered together: a forwarder is the same party in both.
    numbers = _entity_numbers(rng, np.concatenate([legit, np.zeros(n, bool)]), member, total,
                              np.concatenate([kind, np.full(n, _FORWARDER)]), np.concatenate([key, forwarder[1]]))
    as_forwarder = rng.random(n) < _share(cfg, "entities.importer_forwarder_share")
    return numbers[:n], np.where(as_forwarder, numbers[n:], numbers[:n])


def _brokers(world: _World, rng, importer: np.ndarray, n_rows: int) -> np.ndarray:
    """Customs broker (declarant) of each declaration."""
    n_brokers = max(3, round(_number(world.cfg, "entities.brokers_per_100k_lines") * n_rows / _PER_100K))
    # An importer's usual broker: a fixed scramble of its number, so it stays the same over time.
    usual = (importer * 2_654_435_761) % n_brokers
    loyal = rng.random(len(importer)) < _share(world.cfg, "entities.broker_loyalty")
    return np.where(loyal, usual, rng.integers(0, n_brokers, len(importer)))


def _add_entities(world: _World, rng, decls: pd.DataFrame, n_rows: int) -> pd.DataFrame:
    decls = decls.copy()
    decls["shipper_num"] = _shippers(world, rng, decls)
    consignee, importer = _parties(world, rng, decls, n_rows)
    decls["consignee_num"], decls["importer_num"] = consignee, importer
    decls["declarant_num"] = _brokers(world, rng, importer, n_rows)
    decls["declaration_num"] = rng.permutation(len(decls))
    # Sorted here so that the lines, expanded in order, come out sorted by date and declaration id.
    order = np.lexsort((decls["declaration_num"].to_numpy(), decls["day"].to_numpy()))
    return decls.iloc[order].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Lines: goods, physics, values, text
# --------------------------------------------------------------------------------------------

def _expand_lines(world: _World, rng, decls: pd.DataFrame) -> pd.DataFrame:
    """One row per line: its declared good and, in fraud declarations, whether it hides the good."""
    counts = decls["n_lines"].to_numpy()
    lines = decls.iloc[np.repeat(np.arange(len(decls)), counts)].reset_index(drop=True)
    line_no = np.arange(len(lines)) - np.repeat(np.cumsum(counts) - counts, counts) + 1
    extra = rng.random(len(lines)) < _share(world.cfg, "fraud.extra_line_fraud_share")
    fraud = lines["hidden"].to_numpy() & ((line_no == 1) | extra)
    group = lines["group"].to_numpy()
    goods = world.goods
    lines["line_no"] = line_no
    lines["good"] = goods.group_start[group] + (rng.random(len(lines)) * goods.group_len[group]).astype(np.int64)
    lines["fraud"] = fraud
    lines["commodity"] = np.where(fraud, lines["commodity"], -1)
    lines["disguise"] = np.where(fraud, lines["disguise"], _NO_DISGUISE)
    lines["form"] = np.where(fraud | (goods.group_kind[group] == _TARGET), lines["form"], -1)
    return lines


def _lognormal(rng, cfg: dict, where: str, n: int) -> np.ndarray:
    return _number(cfg, f"{where}.median") * np.exp(_number(cfg, f"{where}.sigma") * rng.standard_normal(n))


def _line_kg(world: _World, rng, profile: np.ndarray, mode: np.ndarray) -> np.ndarray:
    """Net kg: the good's lot size by sea, road and rail; capped by air; a parcel by post."""
    cfg, n = world.cfg, len(profile)
    line = world.profiles.line_kg[profile]
    net = line[:, 0] * np.exp(line[:, 1] * rng.standard_normal(n))
    air = _lognormal(rng, cfg, "mode_line_kg.air", n)
    post = np.clip(_lognormal(rng, cfg, "mode_line_kg.post", n),
                   _number(cfg, "mode_line_kg.post.min"), _number(cfg, "mode_line_kg.post.max"))
    return np.where(mode == _AIR, np.minimum(net, air), np.where(mode == _POST, post, net))


def _packing(world: _World, rng, lines: pd.DataFrame) -> dict:
    """Profiles that set the physics: the hidden good's for fraud (its density and packing)."""
    goods, forms = world.goods, world.forms
    fraud = lines["fraud"].to_numpy()
    form = np.maximum(lines["form"].to_numpy(), 0)
    declared = goods.profile[lines["good"].to_numpy()]
    physical = np.where(fraud, forms.profile[form], declared)
    repacked = fraud & (rng.random(len(lines)) < _share(world.cfg, "fraud.repack_share"))
    low, high = _pair(world.cfg, "fraud.repack_weight_factor")
    factor = np.where(repacked, low + rng.random(len(lines)) * (high - low), 1.0)
    return {"declared": declared, "physical": physical, "package": np.where(repacked, declared, physical),
            "factor": factor}


def _add_physics(world: _World, rng, lines: pd.DataFrame) -> pd.DataFrame:
    """Weights, packages, containers and quantity from the packing of what is really shipped."""
    prof = world.profiles
    packing = _packing(world, rng, lines)
    mode = lines["mode"].to_numpy()
    net = np.maximum(np.round(_line_kg(world, rng, packing["physical"], mode), 1), 0.1)
    per_package = _uniform(rng, prof.package_kg, packing["package"]) * packing["factor"]
    packages = np.maximum(1, np.rint(net / per_package)).astype(np.int64)
    gross = np.maximum(np.round(net * (1 + _uniform(rng, prof.tare, packing["package"])), 1), net)
    payload = _uniform(rng, prof.container_kg, packing["physical"])
    boxed = np.isin(mode, [_SEA, _RAIL]) & (gross >= float(_cfg(world.cfg, "lcl_fill")) * payload)
    unit_kg = _uniform(rng, prof.unit_kg, packing["declared"])
    unit = prof.unit[packing["declared"]]
    quantity = np.where(unit == "kg", net, np.maximum(np.round(net / unit_kg, 2), 0.01))
    quantity = np.where(unit == "pcs", np.maximum(np.rint(quantity), 1), quantity)
    lines = lines.assign(
        net_weight_kg=net, gross_weight_kg=gross, packages=packages,
        containers=np.where(boxed, np.ceil(gross / payload), 0).astype(np.int64),
        quantity=quantity, quantity_unit=_text(prof.unit, packing["declared"]),
        package_type=_text(prof.package_types, _draw(rng, prof.package_cum, packing["package"])),
    )
    return lines


def _price_band(world: _World, lines: pd.DataFrame) -> np.ndarray:
    """USD/kg band each line is priced in: the target's for its year, else the declared good's."""
    forms = world.forms
    year = lines["day"].to_numpy().astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970
    year_index = np.clip(year - forms.first_year, 0, forms.price.shape[1] - 1)
    form = np.maximum(lines["form"].to_numpy(), 0)
    target_band = forms.price[form, year_index]
    declared_band = world.goods.price[lines["good"].to_numpy()]
    at_target = (lines["disguise"].to_numpy() == _TRUE_VALUE) | (
        (world.goods.group_kind[lines["group"].to_numpy()] == _TARGET) & ~lines["fraud"].to_numpy())
    return np.where(at_target[:, None], target_band, declared_band)


def _add_values(world: _World, rng, lines: pd.DataFrame) -> pd.DataFrame:
    """Declared value: log-uniform unit price in the band, lognormal noise, a few outliers."""
    cfg, n = world.cfg, len(lines)
    band = _price_band(world, lines)
    log_low, log_high = np.log(band[:, 0]), np.log(band[:, 1])
    noise = _number(cfg, "prices.noise_sigma") * rng.standard_normal(n)
    log_price = log_low + rng.random(n) * (log_high - log_low) + noise
    outlier = rng.random(n) < _share(cfg, "prices.outlier_share")
    log_price += np.where(outlier, _number(cfg, "prices.outlier_sigma") * rng.standard_normal(n), 0.0)
    return lines.assign(declared_value_usd=np.round(lines["net_weight_kg"].to_numpy() * np.exp(log_price), 2))


def _add_text(world: _World, rng, lines: pd.DataFrame) -> pd.DataFrame:
    goods, cfg = world.goods, world.cfg
    good = lines["good"].to_numpy()
    n = len(lines)
    six = rng.random(n) < _share(cfg, "hs_code.six_digit_share")
    vague_share = np.where(lines["fraud"].to_numpy(), _share(cfg, "fraud.vague_description_share"),
                           _share(cfg, "descriptions.vague_share"))
    vague = rng.random(n) < vague_share
    start = np.where(vague, goods.vague_start[good], goods.phrase_start[good])
    length = np.where(vague, goods.vague_len[good], goods.phrase_len[good])
    phrase = start + (rng.random(n) * length).astype(np.int64)
    upper = rng.random(n) < _share(cfg, "descriptions.upper_share")
    phrase = phrase + np.where(upper, len(goods.phrases) // 2, 0)
    hs_table = np.concatenate([goods.hts10, goods.hs6])
    return lines.assign(hs_code=_text(hs_table, good + np.where(six, len(goods.hs6), 0)),
                        description=_text(goods.phrases, phrase))


# --------------------------------------------------------------------------------------------
# Inspection and labels
# --------------------------------------------------------------------------------------------

def _first_seen(numbers: np.ndarray, day: np.ndarray) -> np.ndarray:
    first = np.full(int(numbers.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(first, numbers, day)
    return first[numbers]


def _rule_features(world: _World, lines: pd.DataFrame) -> dict[str, np.ndarray]:
    """Observable red flags customs officers use (FACTS: published risk indicators)."""
    cfg, goods = world.cfg, world.goods
    good, day = lines["good"].to_numpy(), lines["day"].to_numpy()
    kind = goods.group_kind[lines["group"].to_numpy()]
    net = lines["net_weight_kg"].to_numpy()
    unit_value = lines["declared_value_usd"].to_numpy() / net
    factor = _number(cfg, "inspection.value_band_factor")
    heavy = world.profiles.package_kg[goods.profile[good], 1] * _number(cfg, "inspection.heavy_package_factor")
    seen = _first_seen(lines["shipper_num"].to_numpy(), day)
    recent = int(_number(cfg, "inspection.new_entity_days"))
    onset = world.onset[world.forms.commodity[np.maximum(lines["form"].to_numpy(), 0)]]
    origin = lines["origin"].to_numpy()
    return {
        "unit_value_outside_band": (unit_value < goods.price[good, 0] / factor)
        | (unit_value > goods.price[good, 1] * factor),
        "hub_export_cover": world.hubs[lines["export"].to_numpy()] & (kind == _COVER),
        "origin_differs_from_export": origin != lines["export"].to_numpy(),
        "transshipped": lines["ts"].to_numpy() > 0,
        "heavy_packages": net / lines["packages"].to_numpy() > heavy,
        # Everyone is "new" at the start of the window: only entities first seen later count.
        "new_shipper": (day - seen < recent) & (seen >= world.start + recent),
        "target_code": kind == _TARGET,
        "china_target_after_onset": (kind == _TARGET) & (origin == world.china) & (day >= onset),
    }


def _select(world: _World, rng, lines: pd.DataFrame) -> np.ndarray:
    """Selection channel per line: 0 none, 1 random, 2 targeted by the noisy rule-of-thumb score."""
    cfg, n = world.cfg, len(lines)
    flags = _rule_features(world, lines)
    score = sum(_number(cfg, f"inspection.rule_weights.{name}") * flags[name] for name in sorted(flags))
    noisy = score + _number(cfg, "inspection.score_noise_sd") * rng.standard_normal(n)
    n_targeted = round(_share(cfg, "inspection.targeted_share") * n)
    targeted = np.zeros(n, dtype=bool)
    if n_targeted > 0:
        targeted[np.argpartition(-noisy, n_targeted - 1)[:n_targeted]] = True
    random = rng.random(n) < _share(cfg, "inspection.random_share")
    return np.where(targeted, 2, np.where(random, 1, 0))


def _add_labels(world: _World, rng, lines: pd.DataFrame) -> pd.DataFrame:
    cfg = world.cfg
    selection = _select(world, rng, lines)
    inspected = selection > 0
    fraud = lines["fraud"].to_numpy()
    n = len(lines)
    caught = fraud & (rng.random(n) >= _share(cfg, "inspection.miss_rate"))
    false_alarm = ~fraud & (rng.random(n) < _share(cfg, "inspection.false_positive_rate"))
    flagged = caught | false_alarm
    # A false alarm names whichever controlled good the officer suspected.
    weights = _vector(_cfg(world.cfg, "fraud.commodity_weights"), world.commodities, "fraud.commodity_weights")
    suspected = _draw(rng, _cum_rows(weights), 0, n)
    found = np.where(caught, lines["commodity"].to_numpy(), np.where(false_alarm, suspected, -1))
    misdeclared = pd.array(flagged.astype(np.int64), dtype="Int64")
    misdeclared[~inspected] = pd.NA
    # Inspected lines read a commodity or "none" (found == -1); the others stay missing.
    found = np.where(inspected, np.where(found < 0, len(world.commodities), found), len(world.commodities) + 1)
    return lines.assign(
        inspected=inspected.astype(np.int64),
        misdeclared=misdeclared,
        found_commodity=_text([*world.commodities, "none", None], found),
        selection=selection,
    )


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def _codes(lines: pd.DataFrame, name: str) -> np.ndarray:
    return lines[name].to_numpy()


def _canonical(world: _World, lines: pd.DataFrame) -> dict:
    return {
        "declaration_id": _labels("E", _codes(lines, "declaration_num"), 9),
        "declared_at": _codes(lines, "day").astype("datetime64[D]").astype("datetime64[ns]"),
        "origin_country": _text(world.countries, _codes(lines, "origin")),
        "export_country": _text(world.countries, _codes(lines, "export")),
        "port_of_loading": _text(world.ports, _codes(lines, "pol")),
        "port_of_discharge": _text(world.ports, _codes(lines, "pod")),
        "transshipment_ports": _text([option or None for option in world.transship], _codes(lines, "ts")),
        "transport_mode": _text(TRANSPORT_MODES, _codes(lines, "mode")),
        "shipper_id": _labels("S", _codes(lines, "shipper_num"), 7),
        "consignee_id": _labels("P", _codes(lines, "consignee_num"), 7),
        "importer_id": _labels("P", _codes(lines, "importer_num"), 7),
        "declarant_id": _labels("B", _codes(lines, "declarant_num"), 4),
    }


def _simulation(world: _World, lines: pd.DataFrame) -> dict:
    return {
        "sim_scenario": _text(SCENARIOS, _codes(lines, "scenario")),
        "sim_fraud": _codes(lines, "fraud").astype(np.int64),
        "sim_commodity": _text_or_none(world.commodities, _codes(lines, "commodity")),
        "sim_form": _text_or_none(world.forms.keys, _codes(lines, "form")),
        "sim_disguise": _text(DISGUISES, _codes(lines, "disguise")),
        "sim_cover_family": _text(world.goods.family, _codes(lines, "good")),
        "sim_route": _text([*world.lanes.ids, *world.routes.ids], _codes(lines, "route")),
        "sim_network": _codes(lines, "network").astype(np.int64),
        "sim_selection": _text(SELECTIONS, _codes(lines, "selection")),
    }


def _assemble(world: _World, lines: pd.DataFrame) -> pd.DataFrame:
    """Canonical columns in schema order, then the ground truth; lines are already sorted."""
    columns = {**_canonical(world, lines), **_simulation(world, lines)}
    for name in set(CANONICAL_COLUMNS) - set(columns):
        columns[name] = lines[name].array
    return pd.DataFrame({name: columns[name] for name in (*CANONICAL_COLUMNS, *SIM_COLUMNS)})


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------

def generate_manifest(
    n_rows: int,
    seed: int,
    start: date | str,
    end: date | str,
    config: Mapping | None = None,
    reference: ReferenceTables | None = None,
) -> pd.DataFrame:
    """Simulate labelled US import manifest lines with disguised controlled goods.

    Parameters
    ----------
    n_rows : int
        Number of manifest lines, > 0.
    seed : int
        Seed of the single random generator, >= 0; the same arguments give the same frame.
    start, end : date or str
        First and last declaration date (ISO ``YYYY-MM-DD`` strings accepted), start < end.
    config : mapping, optional
        Generator configuration deep-merged over the default (see :func:`load_generator_config`),
        so a full configuration or a partial override both work.
    reference : ReferenceTables, optional
        Reference tables; the packaged ones by default.

    Returns
    -------
    DataFrame
        ``n_rows`` lines sorted by ``declared_at`` then ``declaration_id``: the canonical columns
        of :data:`features.schema.CANONICAL_COLUMNS` followed by :data:`SIM_COLUMNS`, the
        simulation's ground truth (``sim_fraud`` 0/1 on every line, ``sim_commodity`` the hidden
        good or "none", ``sim_form`` the controlled good carried, hidden or declared, or "none",
        ``sim_disguise`` none / true_value / undervalued, ``sim_scenario``, ``sim_cover_family``
        of the declared code or "none", ``sim_route`` lane or route id, ``sim_network`` fraud
        network or -1, ``sim_selection`` none / random / targeted).

    Raises
    ------
    TypeError
        When a parameter has the wrong type.
    ValueError
        When a parameter is out of range or the configuration is inconsistent.
    """
    n_rows = _check_int(n_rows, "n_rows", 1)
    seed = _check_int(seed, "seed", 0)
    start_day, end_day = _check_window(start, end)
    if config is not None and not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping or None, got {type(config).__name__}")
    cfg = _deep_merge(_default_config(), config or {})
    world = _build_world(cfg, reference if reference is not None else load_reference(), start_day, end_day)
    rng = np.random.default_rng(seed)
    decls = _add_entities(world, rng, _declarations(world, rng, n_rows), n_rows)
    lines = _expand_lines(world, rng, decls)
    for step in (_add_physics, _add_values, _add_text, _add_labels):
        lines = step(world, rng, lines)
    return _assemble(world, lines)
