"""Reasons an inspector can read: the facts of a line that raise its risk, as plain phrases.

LightGBM's ``pred_contrib`` (TreeSHAP) gives each feature's contribution to a line's raw score.
Contributions are summed per reason group (price, route, weight, declared goods, timing...). A
reason states a fact that *raises* the risk, in the direction it raises it: each group's phrase
builder returns the suspicious facts of its group on the line, or ``""`` when the line has none (a
price that fits the declared code, a direct route from a producer, a party with a below-average
misdeclaration rate, a long-established or busy party). Per line, the groups are taken in order of
contribution, only those that push the score up, and the first :data:`MAX_REASONS` that have a
fact to state are written. A line with none gets :data:`NO_STATED_FACT`.

Phrases are built to be parsed back (tests check every reason of a scored world):

- price: ``declared 48.17 USD/kg, 14.6x above the 2.6-3.3 USD/kg band of HS 790111`` or
  ``declared 52.10 USD/kg, 18.0x above what HS 7901 typically declares (2.90 USD/kg)``, optionally
  followed by ``; in the price band of antimony 19-62 USD/kg``;
- party history: ``shipper S1: first seen 12 days ago, 3 of 5 inspected lines misdeclared (all
  parties: 2.1%)`` — never a count of earlier lines;
- flow: ``14 lines TH -> USLAX of HS 7901 in the last 28 days, 9.3x the rate of the 182 days before``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pandas as pd

T = TypeVar("T")
Row = Mapping[str, Any]  # one line's declared values and derived features, by column name
PhraseBuilder = Callable[[Row, "PhraseContext"], str]

MAX_REASONS = 3
SEPARATOR = " | "
# Written when no group that raises the score has a fact to state (the score comes from many small
# contributions): an explained line never shows a benign fact as a reason, nor an empty cell.
NO_STATED_FACT = "no single suspicious fact stands out"

# Price. Reference bands are estimates and prices move: a unit value within 10 % of a band edge is
# noise (and rounding), not a different good, so only a value beyond the band by more than this
# factor is cited.
PRICE_BAND_MARGIN = 1.1
# Declared codes without a reference band are compared with the fitted typical value per kg of their
# HS prefix; that median spreads over several goods and grades, so only a factor of 2 either way is
# unusual enough to cite.
PRICE_TYPICAL_FACTOR = 2.0

# Party tenure. A party first seen less than this many days ago is "new" (published indicator: new
# or recently founded shippers and consignees) — but only when the store's coverage is known (the
# history step's ``tenure_unknown_days`` > 0, so a finite tenure means first seen after the store
# began): otherwise a firm trading for decades looks new because the store is.
NEW_PARTY_DAYS = 90

# Flow surge: lines on the flow in the trailing window at more than this multiple of the daily rate
# of the baseline window before it ("a sudden jump in volume on a route", 27x in FACTS.md).
FLOW_SURGE_FACTOR = 2.0
# The surge ratio is +1-smoothed, so a flow that is merely new shows a large ratio after one or two
# lines; below this many trailing lines a ratio is not a surge.
FLOW_MIN_LINES = 3

# Weight: the only packing norm the reference data support in one direction (FACTS.md, Densities and
# packing) is that genuine handicrafts and ornaments are light for their volume; the codes of such
# goods and the heaviest packing that still fits them are in features/data/hs_codes.csv
# (max_kg_per_package, max_kg_per_container), carried by the fitted pipeline (PhraseContext.light_goods).


@dataclass(frozen=True)
class PhraseContext:
    """Fitted reference values the phrases quote (taken from the bundle's pipeline).

    Attributes
    ----------
    hubs, price_bands, measures, measure_labels, measure_commodities
        Diversion hubs, controlled goods' price bands and the export-control measures.
    hs_bands : dict
        Reference USD/kg band ``[low, high]`` per declared HS prefix (6 or 4 digits).
    light_goods : dict
        ``[description, max kg per package, max kg per container]`` per HS prefix of goods light for
        their volume (empty for a bundle fitted before the reference table had them: no weight reason).
    prior_rate : float, optional
        Misdeclaration rate of all inspected training lines (the party rates' prior); None when
        unknown, and then no party rate is cited.
    prior_strength : float
        Pseudo-count of that prior in the smoothed party rates (to recover confirmed hits).
    tenure_unknown_days : int
        The history step's censoring window: > 0 means a finite tenure is relative to the store's
        coverage, so a short one may be cited as new.
    trailing_days, baseline_days : int
        Windows of the flow surge ratio.
    """

    hubs: frozenset[str]
    price_bands: dict[str, list[float]]
    measures: dict[str, str]
    measure_labels: dict[str, str]
    measure_commodities: dict[str, list[str]]
    hs_bands: dict[str, list[float]] = field(default_factory=dict)
    light_goods: dict[str, list[Any]] = field(default_factory=dict)
    prior_rate: float | None = None
    prior_strength: float = 5.0
    tenure_unknown_days: int = 0
    trailing_days: int = 28
    baseline_days: int = 182

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> PhraseContext:
        """Read the fitted steps' attributes; anything an older spec lacks takes its default."""
        steps = pipeline.named_steps
        route, value, history = steps["route"], steps["value"], steps.get("history")
        declared = steps.get("declared_hs")
        low, high = getattr(value, "hs_band_low_", {}) or {}, getattr(value, "hs_band_high_", {}) or {}
        prior = getattr(history, "global_rate_", None)
        return cls(
            frozenset(route.hubs_),
            dict(value.price_bands_),
            dict(route.measures_),
            dict(route.measure_labels_),
            dict(route.measure_commodities_),
            hs_bands={prefix: [float(low[prefix]), float(high[prefix])] for prefix in low if prefix in high},
            light_goods=dict(getattr(declared, "light_goods_", {}) or {}),
            prior_rate=float(prior) if prior is not None else None,
            prior_strength=float(getattr(history, "prior_strength", 5.0)),
            tenure_unknown_days=int(getattr(history, "tenure_unknown_days", 0) or 0),
            trailing_days=int(getattr(history, "trailing_days", 28)),
            baseline_days=int(getattr(history, "baseline_days", 182)),
        )


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _text(value: object, default: str = "") -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return default
    return str(value)


def _printed_factor(ratio: float) -> float:
    """A factor as the phrase prints it ('2.0x'): thresholds compare this, so no '2.0x' reads as a surge."""
    return round(ratio, 1)


def _longest_prefix(hs: str, table: Mapping[str, T]) -> tuple[str, T] | None:
    """(prefix, value) of the declared code's longest prefix listed in ``table`` (6, then 4 digits)."""
    for length in (6, 4):
        if hs[:length] in table:
            return hs[:length], table[hs[:length]]
    return None


def price_phrase(row: Row, context: PhraseContext) -> str:
    """A unit value outside the declared code's band, with its direction and factor.

    'declared 48.17 USD/kg, 14.6x above the 2.6-3.3 USD/kg band of HS 790111; in the price band of
    antimony 19-62 USD/kg'. The controlled good's band is named only for a line not declared under a
    controlled code whose price does not fit its declared code. A price inside the declared code's
    band (a cover good undervalued to the cover's price, or antimony priced as antimony) is no reason.
    """
    declared = _number(row.get("declared_value_usd", row.get("value_per_kg")))
    if not math.isfinite(declared) or declared <= 0:
        return "declared value missing or zero"
    value_per_kg = _number(row.get("value_per_kg"))
    if not math.isfinite(value_per_kg) or value_per_kg <= 0:
        return ""  # no weight to divide by: nothing to say about the price
    hs = _text(row.get("hs_code"))
    distance = _number(row.get("hs_band_log_distance"))
    if math.isfinite(distance):  # the declared code has a reference band
        if abs(distance) <= math.log10(PRICE_BAND_MARGIN):
            return ""
        band = _longest_prefix(hs, context.hs_bands)
        where = f"the {band[1][0]:g}-{band[1][1]:g} USD/kg band of HS {band[0]}" if band else f"the band of HS {hs[:6]}"
    else:
        distance = _number(row.get("value_log_ratio_hs"))
        if not (math.isfinite(distance) and _printed_factor(10 ** abs(distance)) > PRICE_TYPICAL_FACTOR):
            return ""
        where = f"what HS {hs[:4]} typically declares ({_number(row.get('hs_typical_usd_per_kg')):,.2f} USD/kg)"
    phrase = f"declared {value_per_kg:,.2f} USD/kg, {10 ** abs(distance):,.1f}x {'above' if distance > 0 else 'below'} {where}"
    if _number(row.get("is_target_code")) == 0:
        inside = [
            f"{band.replace('_', ' ')} {low:g}-{high:g} USD/kg"
            for band, (low, high) in context.price_bands.items()
            if _number(row.get(f"band_dist_{band}")) == 0
        ]
        if inside:
            phrase += f"; in the price band of {', '.join(inside[:2])}"
    return phrase


def route_phrase(row: Row, context: PhraseContext) -> str:
    """'origin CN, exported from TH (diversion hub), via CNSHA;THLCH to USLAX by sea, ...'.

    Cited only when the route has something to say: a diversion hub as origin, export country or
    loading port, goods exported from another country than their origin, or transshipment. The lack
    of production capacity of the export country is added to such a route; a direct route from one
    country that is not a hub is no reason.
    """
    origin, export = _text(row.get("origin_country"), "?"), _text(row.get("export_country"), "?")
    transship = _text(row.get("transshipment_ports"))
    loading = _text(row.get("port_of_loading"))
    loading_hub = loading[:2] in context.hubs and loading[:2] != export
    if not (origin in context.hubs or export in context.hubs or origin != export or transship or loading_hub):
        return ""

    def label(country: str) -> str:
        return f"{country} (diversion hub)" if country in context.hubs else country

    place = label(origin) if origin == export else f"{label(origin)}, exported from {label(export)}"
    parts = [f"origin {place}"]
    if loading_hub:
        parts.append(f"loaded at {loading} (diversion hub)")
    if transship:
        parts.append(f"via {transship}")
    discharge, mode = _text(row.get("port_of_discharge")), _text(row.get("transport_mode"))
    tail = " ".join(p for p in (f"to {discharge}" if discharge else "", f"by {mode}" if mode else "") if p)
    if tail:
        parts[-1] += f" {tail}"
    if _number(row.get("export_lacks_capacity")) == 1 and export != "?":
        parts.append(f"{export} has no production capacity for the controlled goods")
    return ", ".join(parts)


def weight_phrase(row: Row, context: PhraseContext) -> str:
    """'1,000 kg per package, 20.0 t per container: heavy for HS 830629, statuettes and ornaments of base metal, ...'.

    Only where the reference data say which way is unusual: goods declared under a code of goods
    light for their volume (:attr:`PhraseContext.light_goods`) packed heavier than such goods are.
    """
    listed = _longest_prefix(_text(row.get("hs_code")), context.light_goods)
    if listed is None:
        return ""
    prefix, (description, max_per_package, max_per_container) = listed
    parts = []
    per_package, per_container = _number(row.get("kg_per_package")), _number(row.get("kg_per_container"))
    if math.isfinite(per_package) and per_package > max_per_package:
        parts.append(f"{per_package:,.0f} kg per package")
    if math.isfinite(per_container) and per_container > max_per_container:
        parts.append(f"{per_container / 1000:,.1f} t per container")
    if not parts:
        return ""
    return f"{', '.join(parts)}: heavy for HS {prefix}, {description}, which are light for their volume"


def declared_goods_phrase(row: Row, context: PhraseContext) -> str:
    """'declared as HS 790111, a known cover code (metal ingot)'; nothing for other codes."""
    if _number(row.get("is_cover_code")) != 1:
        return ""
    family = _text(row.get("cover_family")).replace("_", " ")
    return f"declared as HS {_text(row.get('hs_code'))[:6]}, a known cover code" + (f" ({family})" if family else "")


def timing_phrase(row: Row, context: PhraseContext) -> str:
    """'declared 30 days after the Chinese Ga/Ge/Sb export ban to the US (2024-12-03)'.

    The latest control before the line that applies to its suspected commodity; nothing when no
    commodity is suspected or the line precedes that commodity's controls.
    """
    suspected = _text(row.get("suspected_commodity"), "none")
    applicable = [m for m in context.measures if suspected in context.measure_commodities.get(m, [])]
    elapsed = {m: _number(row.get(f"days_since_{m}")) for m in applicable}
    after = {m: d for m, d in elapsed.items() if math.isfinite(d) and d >= 0}
    if not after:
        return ""
    measure = min(after, key=lambda m: after[m])
    return (
        f"declared {after[measure]:,.0f} days after the {context.measure_labels.get(measure, measure)} "
        f"({context.measures[measure]})"
    )


def _confirmed_hits(rate: float, known: float, context: PhraseContext) -> int:
    """Misdeclared inspected lines behind a smoothed rate: (hits + k * prior) / (known + k) = rate."""
    prior = context.prior_rate or 0.0  # only called with a known prior (party_phrase checks it)
    return int(round(rate * (known + context.prior_strength) - context.prior_strength * prior))


def party_phrase(party: str) -> PhraseBuilder:
    """Phrase builder for one party's history ('shipper', 'consignee', 'importer', 'declarant').

    Facts: the party is not declared; it was never seen before (0 earlier lines); it is new relative
    to what the store could know (first seen < :data:`NEW_PARTY_DAYS` days ago, after the store's
    coverage began); its inspected lines were misdeclared more often than all inspected lines
    ('3 of 5 inspected lines misdeclared (all parties: 2.1%)'). Volume and long tenure are never cited.
    """

    def phrase(row: Row, context: PhraseContext) -> str:
        prefix = f"{party}_id"
        name = _text(row.get(prefix)).strip()
        if not name:
            return f"{party} not declared"
        facts = []
        if _number(row.get(f"{prefix}_lines_before")) == 0:
            facts.append("never seen before")
        first = _number(row.get(f"{prefix}_days_since_first"))
        if context.tenure_unknown_days > 0 and math.isfinite(first) and 0 < first < NEW_PARTY_DAYS:
            facts.append(f"first seen {first:,.0f} days ago")
        known, rate = _number(row.get(f"{prefix}_outcomes_known")), _number(row.get(f"{prefix}_misdeclared_rate"))
        if context.prior_rate is not None and known > 0 and math.isfinite(rate) and rate > context.prior_rate:
            hits = _confirmed_hits(rate, known, context)
            if hits >= 1 and hits / known > context.prior_rate:
                facts.append(f"{hits:,} of {known:,.0f} inspected lines misdeclared (all parties: {context.prior_rate:.1%})")
        return f"{party} {name}: {', '.join(facts)}" if facts else ""

    return phrase


def switch_phrase(row: Row, context: PhraseContext) -> str:
    """A consignee that bought the controlled good directly from China before the controls."""
    name = _text(row.get("consignee_id"), "unknown")
    if _number(row.get("consignee_switched_to_hub")) == 1:
        return f"consignee {name} imported controlled goods directly from China before the controls, now via a hub"
    if _number(row.get("consignee_direct_cn_target_before")) == 1:
        return f"consignee {name} imported controlled goods directly from China before the controls"
    return ""


def flow_phrase(row: Row, context: PhraseContext) -> str:
    """'14 lines TH -> USLAX of HS 7901 in the last 28 days, 9.3x the rate of the 182 days before'."""
    trailing, ratio = _number(row.get("flow_lines_trailing")), _number(row.get("flow_surge_ratio"))
    if not (math.isfinite(ratio) and _printed_factor(ratio) > FLOW_SURGE_FACTOR and trailing >= FLOW_MIN_LINES):
        return ""
    flow = (
        f"{_text(row.get('export_country'), '?')} -> {_text(row.get('port_of_discharge'), '?')} "
        f"of HS {_text(row.get('hs_code'))[:4]}"
    )
    return (
        f"{trailing:,.0f} lines {flow} in the last {context.trailing_days} days, "
        f"{ratio:,.1f}x the rate of the {context.baseline_days} days before"
    )


def description_phrase(row: Row, context: PhraseContext) -> str:
    """'description "metal parts" is vague' / '... does not match HS 7901' / '... names a controlled good'."""
    text = _text(row.get("description")).strip()
    if not text:
        return "no goods description"
    if _number(row.get("desc_mentions_target")) == 1:
        return f'description "{text}" names a controlled good'
    if _number(row.get("desc_hs_mismatch")) == 1:
        return f'description "{text}" does not match HS {_text(row.get("hs_code"))[:4]}'
    if _number(row.get("desc_is_vague")) == 1:
        return f'description "{text}" is vague'
    return ""


PHRASES = {
    "price": price_phrase,
    "route": route_phrase,
    "weight": weight_phrase,
    "declared_goods": declared_goods_phrase,
    "timing": timing_phrase,
    "description": description_phrase,
    "switch": switch_phrase,
    "flow": flow_phrase,
    **{f"{party}_history": party_phrase(party) for party in ("shipper", "consignee", "importer", "declarant")},
}


# What each phrase is about, for counting reasons over a batch (the batch report): patterns match the
# phrases written above, first match wins; a party phrase with a misdeclared past counts as that.
REASON_TOPICS = (
    ("declared value missing", re.compile(r"^declared value missing or zero$")),
    ("priced like a controlled good", re.compile(r"^declared [\d,.]+ USD/kg, .*; in the price band of ")),
    ("priced above the declared code", re.compile(r"^declared [\d,.]+ USD/kg, [\d,.]+x above ")),
    ("priced below the declared code", re.compile(r"^declared [\d,.]+ USD/kg, [\d,.]+x below ")),
    ("route through a hub or transit", re.compile(r"^origin ")),
    ("heavy packing for light goods", re.compile(r": heavy for HS \d+, ")),
    ("known cover code", re.compile(r"^declared as HS \d+, a known cover code")),
    ("after the export controls", re.compile(r"^declared [\d,]+ days after ")),
    ("consignee moved from China to a hub", re.compile(r"^consignee \S+ imported controlled goods directly from China")),
    ("party misdeclared before", re.compile(r"^(shipper|consignee|importer|declarant) \S+: .*inspected lines misdeclared")),
    ("new party", re.compile(r"^(shipper|consignee|importer|declarant) \S+: .*(never seen before|first seen)")),
    ("party not declared", re.compile(r"^(shipper|consignee|importer|declarant) not declared$")),
    ("flow surge", re.compile(r"^[\d,]+ lines \S+ -> \S+ of HS \d+ in the last ")),
    ("description names a controlled good", re.compile(r'^description ".*" names a controlled good$')),
    ("description does not match the code", re.compile(r'^description ".*" does not match HS ')),
    ("vague or missing description", re.compile(r'^(description ".*" is vague|no goods description)$')),
    ("no single fact", re.compile(rf"^{re.escape(NO_STATED_FACT)}$")),
)
OTHER_TOPIC = "other"
TYPICAL_PRICE = re.compile(r"what HS (\d{4}) typically declares \(([\d,.]+) USD/kg\)")


def reason_topic(phrase: str) -> str:
    """What a reason phrase is about ('priced like a controlled good', 'new party', ...); 'other' if unknown."""
    return next((topic for topic, pattern in REASON_TOPICS if pattern.search(phrase)), OTHER_TOPIC)


def typical_price(phrases: list[str]) -> tuple[str, float] | None:
    """(HS prefix, USD/kg) of a price reason quoting the declared code's fitted typical value, if any."""
    for phrase in phrases:
        match = TYPICAL_PRICE.search(phrase)
        if match:
            return match.group(1), float(match.group(2).replace(",", ""))
    return None


def group_contributions(contributions: np.ndarray, features: list[str], groups: dict[str, str]) -> pd.DataFrame:
    """Sum per-feature contributions (rows × features, bias column dropped) into reason groups."""
    names = sorted(set(groups[f] for f in features))
    membership = np.zeros((len(features), len(names)))
    for i, feature in enumerate(features):
        membership[i, names.index(groups[feature])] = 1.0
    return pd.DataFrame(contributions[:, : len(features)] @ membership, columns=names)


def top_groups(grouped: pd.DataFrame, top: int | None = None) -> list[list[str]]:
    """Per line, the groups with a phrase builder and a positive contribution, largest first.

    All of them by default (:func:`write_reasons` skips those with no fact to state), the first
    ``top`` when given.
    """
    speakable = [g for g in grouped.columns if g in PHRASES]
    values = grouped[speakable].to_numpy(dtype="float64")
    order = np.argsort(-values, axis=1, kind="stable")[:, :top]
    chosen = np.take_along_axis(values, order, axis=1) > 0
    names = np.asarray(speakable, dtype=object)
    return [names[row_order[row_chosen]].tolist() for row_order, row_chosen in zip(order, chosen)]


def line_reasons(row: Row, groups: list[str], context: PhraseContext, top: int = MAX_REASONS) -> list[str]:
    """The phrases of the first ``top`` of ``groups`` (in order) that have a suspicious fact to state."""
    phrases = []
    for group in groups:
        phrase = PHRASES[group](row, context)
        if phrase:
            phrases.append(phrase)
            if len(phrases) == top:
                break
    return phrases


def write_reasons(derived: pd.DataFrame, grouped: pd.DataFrame, context: PhraseContext) -> list[str]:
    """Per line, up to :data:`MAX_REASONS` stated facts of the groups raising its score, joined by ``' | '``.

    Groups are taken by decreasing positive contribution; a group whose facts on the line are benign
    is skipped for the next one. A line with no such fact gets :data:`NO_STATED_FACT`.
    """
    rows: list[dict[str, Any]] = derived.to_dict("records")  # type: ignore[assignment]  # column names are str
    return [
        SEPARATOR.join(line_reasons(row, groups, context)) or NO_STATED_FACT for row, groups in zip(rows, top_groups(grouped))
    ]
