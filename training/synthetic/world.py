"""Compiled world: the configuration and reference tables as arrays, built once per call."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.reference import ReferenceTables
from features.schema import TRANSPORT_MODES
from training.synthetic.codes import _COVER, _OTHER, _TARGET, SCENARIOS
from training.synthetic.config import _as_day, _cfg, _number, _pair, _share
from training.synthetic.helpers import _cum_rows, _position, _vector

# End day of a lane that is never abandoned: beyond any day a window can hold.
_NEVER = np.iinfo(np.int64).max

# --------------------------------------------------------------------------------------------
# Compiled world: the configuration and reference tables as arrays
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Profiles:
    """Packing profiles (rows) with their parameters as arrays."""

    names: list[str]
    line_kg: np.ndarray  # (P, 2) lognormal median, sigma
    package_kg: np.ndarray  # (P, 2) low, high
    tare: np.ndarray  # (P, 2)
    container_kg: np.ndarray  # (P, 2)
    unit_kg: np.ndarray  # (P, 2)
    unit: np.ndarray  # (P,) quantity unit
    package_types: np.ndarray  # (T,) names
    package_cum: np.ndarray  # (P, T)
    mode_factor: np.ndarray  # (P, M)


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
    price: np.ndarray  # (N, 2) USD/kg band
    profile: np.ndarray
    family: np.ndarray  # cover family name or "none"
    phrase_start: np.ndarray  # specific descriptions
    phrase_len: np.ndarray
    vague_start: np.ndarray
    vague_len: np.ndarray
    phrases: np.ndarray  # all phrases, then the same in upper case


@dataclass(frozen=True)
class _Forms:
    """Controlled goods (commodity:form) with prices per year."""

    keys: list[str]
    commodity: np.ndarray
    group: np.ndarray
    profile: np.ndarray
    first_year: int
    price: np.ndarray  # (F, Y, 2)
    cum_by_commodity: np.ndarray


@dataclass(frozen=True)
class _Lanes:
    """Trading lanes or diversion routes."""

    ids: list[str]
    origin: np.ndarray
    export: np.ndarray
    loading: np.ndarray  # (L, ports) cumulative
    discharge: np.ndarray
    transship: np.ndarray  # (L, options) cumulative
    mode_cum: np.ndarray  # (L * n_profiles, M) cumulative
    n_profiles: int
    weight: np.ndarray  # (L,) or (L, C) for routes
    start: np.ndarray  # first active day
    capture: np.ndarray
    end: np.ndarray  # first day without fraud (routes abandoned in the window), else past the window


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
        cfg=cfg,
        start=start,
        end=end,
        countries=countries,
        ports=ports,
        transship=transship,
        commodities=commodities,
        china=_position(countries, "CN", "countries"),
        hubs=np.isin(countries, sorted(ref.diversion_hubs)),
        onset=onset,
        profiles=profiles,
        goods=goods,
        forms=forms,
        lanes=lanes,
        routes=routes,
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
    stack = {
        field: np.array([rows[n][field] for n in names], dtype=float)
        for field in ("line_kg", "package_kg", "tare", "container_kg", "unit_kg")
    }
    return _Profiles(
        names=names,
        **stack,
        unit=np.array([rows[n]["unit"] for n in names], dtype=object),
        package_types=np.array(types, dtype=object),
        package_cum=_cum_rows([_vector(rows[n]["package_types"], types, rows[n]["where"]) for n in names]),
        mode_factor=np.array([_vector({**modes, **rows[n]["mode_factors"]}, TRANSPORT_MODES, rows[n]["where"]) for n in names]),
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
        families[family] += [
            dict(hs6=h, hts10=None, price=band, profile=f"{profile}", phrases=phrases, vague=vague, family=family)
            for h in hs6_list
        ]
    return families


def _other_goods(cfg: dict) -> dict[str, list[dict]]:
    groups = {}
    vague = list(_cfg(cfg, "descriptions.generic_vague"))
    for name in sorted(_cfg(cfg, "other_goods")):
        where = f"other_goods.{name}"
        band = _pair(cfg, f"{where}.usd_per_kg")
        groups[name] = [
            dict(
                hs6=str(h),
                hts10=None,
                price=band,
                profile=str(_cfg(cfg, f"{where}.profile")),
                phrases=list(_cfg(cfg, f"{where}.descriptions")),
                vague=vague,
                family="none",
            )
            for h in _cfg(cfg, f"{where}.hs6")
        ]
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
        groups[key] = [
            dict(
                hs6=str(rows["hs6"].iloc[0]),
                hts10=_hts(rows["us_hts10"].iloc[0]),
                price=band,
                profile=f"form:{key}",
                phrases=list(_cfg(cfg, f"target_forms.{key}.descriptions")),
                vague=vague,
                family="none",
            )
        ]
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
        group_names=names,
        group_kind=np.array(kind),
        group_profile=profile[starts],
        group_start=starts,
        group_len=np.array(lengths),
        hs6=np.array([r["hs6"] for r in rows], dtype=object),
        hts10=np.array([r["hts10"] or r["hs6"] + suffix for r in rows], dtype=object),
        price=np.array([r["price"] for r in rows], dtype=float),
        profile=profile,
        family=np.array([r["family"] for r in rows], dtype=object),
        phrase_start=phrase_at[:, 0],
        phrase_len=phrase_at[:, 1],
        vague_start=vague_at[:, 0],
        vague_len=vague_at[:, 1],
        phrases=phrases,
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
    weights = np.array(
        [
            [float(_cfg(cfg, f"target_forms.{k}.weight")) if commodity[i] == c else 0.0 for i, k in enumerate(keys)]
            for c in range(len(commodities))
        ]
    )
    return _Forms(
        keys=keys,
        commodity=commodity,
        group=np.array([goods.group_names.index(k) for k in keys]),
        profile=goods.profile[goods.group_start[[goods.group_names.index(k) for k in keys]]],
        first_year=first,
        price=price,
        cum_by_commodity=_cum_rows(weights),
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
    weights = (
        _vector(_cfg(cfg, f"{where}.weights"), commodities, f"{where}.weights") if is_route else _number(cfg, f"{where}.weight")
    )
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
        "end": _as_day(spec["end"], f"config '{where}.end'") if spec.get("end") is not None else None,
    }


def _build_lanes(cfg: dict, block: str, names: tuple, profiles: _Profiles | None, start: int) -> _Lanes:
    """Lanes of ``block``; routes (no profiles) draw their mode from the route alone."""
    ids = sorted(_cfg(cfg, block))
    rows = [_lane_row(cfg, f"{block}.{lane}", names, profiles is None) for lane in ids]
    field = {key: np.array([row[key] for row in rows]) for key in ("origin", "export", "modes", "weight", "capture")}
    return _Lanes(
        ids=ids,
        origin=field["origin"],
        export=field["export"],
        loading=_cum_rows([row["loading"] for row in rows]),
        discharge=_cum_rows([row["discharge"] for row in rows]),
        transship=_cum_rows([row["transship"] for row in rows]),
        mode_cum=_mode_cum(field["modes"], profiles),
        n_profiles=1 if profiles is None else len(profiles.names),
        weight=field["weight"],
        capture=field["capture"],
        # Lanes without a start date exist from before the window.
        start=np.array([start - 1 if row["start"] is None else row["start"] for row in rows]),
        # Lanes without an end date run past any window.
        end=np.array([_NEVER if row["end"] is None else row["end"] for row in rows]),
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


def _fraud_intensity(cfg: dict, ref: ReferenceTables, commodities: list[str], days: np.ndarray, onset: np.ndarray) -> np.ndarray:
    """Relative fraud intensity per day and commodity: a small level before the onset."""
    phase = _phase_values(ref, commodities, days, {"none": 0.0, **_cfg(cfg, "fraud.phase_intensity")})
    pre = float(_cfg(cfg, "fraud.pre_onset_intensity"))
    return np.where(days[:, None] < onset[None, :], pre, phase)


def _scenario_cum(cfg: dict, ref: ReferenceTables, commodities: list[str], days: np.ndarray, onset: np.ndarray) -> np.ndarray:
    """Per day: background cover, other, legit target, switcher, then fraud per commodity."""
    weights = _vector(_cfg(cfg, "fraud.commodity_weights"), commodities, "fraud.commodity_weights")
    fraud = float(_cfg(cfg, "fraud.rate_at_full_intensity")) * _fraud_intensity(cfg, ref, commodities, days, onset)
    fraud = fraud * weights / weights.sum()
    switcher = np.full(len(days), _share(cfg, "switcher.declaration_share"))
    rest = 1.0 - fraud.sum(axis=1) - switcher
    if (rest <= 0).any():
        raise ValueError("config 'fraud.rate_at_full_intensity' and 'switcher.declaration_share' leave no background trade")
    shares = _vector(_cfg(cfg, "scenarios"), SCENARIOS[:3], "scenarios")
    background = rest[:, None] * (shares / shares.sum())
    return _cum_rows(np.column_stack([background, switcher, fraud]))


def _group_weight_cum(cfg: dict, goods: _Goods, kind: int, block: str) -> np.ndarray:
    weights = np.array(
        [float(_cfg(cfg, f"{block}.{n}.weight")) if k == kind else 0.0 for n, k in zip(goods.group_names, goods.group_kind)]
    )
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
