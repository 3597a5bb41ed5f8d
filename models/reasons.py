"""Reasons an inspector can read: the top contributions of a line's score, as plain phrases.

LightGBM's ``pred_contrib`` (TreeSHAP) gives each feature's contribution to a line's raw score.
Contributions are summed per reason group (price, route, weight, declared goods, timing...) and the
three groups that push the score up most are written as phrases with the line's own numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_REASONS = 3
SEPARATOR = " | "


@dataclass(frozen=True)
class PhraseContext:
    """Fitted reference values the phrases quote (taken from the bundle's pipeline)."""

    hubs: frozenset[str]
    price_bands: dict[str, list[float]]
    measures: dict[str, str]
    measure_labels: dict[str, str]
    measure_commodities: dict[str, list[str]]

    @classmethod
    def from_pipeline(cls, pipeline) -> "PhraseContext":
        route, value = pipeline.named_steps["route"], pipeline.named_steps["value"]
        return cls(frozenset(route.hubs_), dict(value.price_bands_), dict(route.measures_),
                   dict(route.measure_labels_), dict(route.measure_commodities_))


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def _text(value, default: str = "") -> str:
    return default if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)) else str(value)


def price_phrase(row: dict, context: PhraseContext) -> str:
    """'declared 52.10 USD/kg; HS 7901 typically 2.90 USD/kg; in the price band of antimony 19-62 USD/kg'."""
    value_per_kg = _number(row.get("value_per_kg"))
    if not math.isfinite(value_per_kg) or value_per_kg <= 0:
        return "declared value missing or zero"
    phrase = (f"declared {value_per_kg:,.2f} USD/kg; HS {_text(row.get('hs_code'))[:4]} typically "
              f"{_number(row.get('hs_typical_usd_per_kg')):,.2f} USD/kg")
    inside = [f"{band.replace('_', ' ')} {low:g}-{high:g} USD/kg"
              for band, (low, high) in context.price_bands.items()
              if _number(row.get(f"band_dist_{band}")) == 0]
    return phrase + (f"; in the price band of {', '.join(inside[:2])}" if inside else "")


def route_phrase(row: dict, context: PhraseContext) -> str:
    """'origin CN, exported from TH (diversion hub) via CNSHA;THLCH to USLAX by sea'."""
    origin, export = _text(row.get("origin_country"), "?"), _text(row.get("export_country"), "?")
    parts = [f"origin {origin}" if origin == export else f"origin {origin}, exported from {export}"]
    if export in context.hubs:
        parts[-1] += " (diversion hub)"
    transship = _text(row.get("transshipment_ports"))
    if transship:
        parts.append(f"via {transship}")
    discharge, mode = _text(row.get("port_of_discharge")), _text(row.get("transport_mode"))
    tail = " ".join(p for p in (f"to {discharge}" if discharge else "", f"by {mode}" if mode else "") if p)
    if tail:
        parts[-1] += f" {tail}"
    if _number(row.get("export_lacks_capacity")) == 1 and export in context.hubs:
        parts.append(f"{export} has no production capacity for the controlled goods")
    return ", ".join(parts)


def weight_phrase(row: dict, context: PhraseContext) -> str:
    """'1,000 kg per package, 20.0 t per container' (a density proxy)."""
    parts = []
    per_package, per_container = _number(row.get("kg_per_package")), _number(row.get("kg_per_container"))
    if math.isfinite(per_package):
        parts.append(f"{per_package:,.0f} kg per package")
    if math.isfinite(per_container):
        parts.append(f"{per_container / 1000:,.1f} t per container")
    gross = _number(row.get("gross_weight_kg"))
    return ", ".join(parts) if parts else f"gross weight {gross:,.0f} kg"


def declared_goods_phrase(row: dict, context: PhraseContext) -> str:
    """'declared as HS 790111 (metal ingot cover code)'."""
    hs = _text(row.get("hs_code"))[:6]
    if _number(row.get("is_cover_code")) == 1:
        return f"declared as HS {hs}, a known cover code ({_text(row.get('cover_family')).replace('_', ' ')})"
    if _number(row.get("is_target_code")) == 1:
        return f"declared as HS {hs}, a controlled {_text(row.get('declared_target')).replace('_', ' ')} code"
    return f"declared as HS {hs}"


def timing_phrase(row: dict, context: PhraseContext) -> str:
    """'declared 30 days after the Chinese Ga/Ge/Sb export ban to the US (2024-12-03)'.

    The latest control before the line that applies to its suspected commodity (any control when
    no commodity is suspected).
    """
    suspected = _text(row.get("suspected_commodity"), "none")
    applicable = [m for m in context.measures if suspected in context.measure_commodities.get(m, [])]
    elapsed = {m: _number(row.get(f"days_since_{m}")) for m in (applicable or context.measures)}
    after = {m: d for m, d in elapsed.items() if math.isfinite(d) and d >= 0}
    if not after:
        return "declared before the export controls"
    measure = min(after, key=after.get)
    return (f"declared {after[measure]:,.0f} days after the {context.measure_labels.get(measure, measure)} "
            f"({context.measures[measure]})")


def party_phrase(party: str):
    """Phrase builder for one party's history ('shipper', 'consignee', 'importer', 'declarant')."""

    def phrase(row: dict, context: PhraseContext) -> str:
        prefix = f"{party}_id"
        name = _text(row.get(prefix), "unknown")
        before = _number(row.get(f"{prefix}_lines_before"))
        if not math.isfinite(before):
            return f"{party} not declared"
        if before == 0:
            return f"{party} {name} never seen before"
        parts = [f"{party} {name}: {before:,.0f} earlier lines"]
        first = _number(row.get(f"{prefix}_days_since_first"))
        if math.isfinite(first):
            parts.append(f"first seen {first:,.0f} days ago")
        known = _number(row.get(f"{prefix}_outcomes_known"))
        if known > 0:
            parts.append(f"{known:,.0f} inspected, smoothed misdeclaration rate "
                         f"{_number(row.get(f'{prefix}_misdeclared_rate')):.0%}")
        return ", ".join(parts)

    return phrase


def switch_phrase(row: dict, context: PhraseContext) -> str:
    """A consignee that bought the controlled good directly from China before the controls."""
    name = _text(row.get("consignee_id"), "unknown")
    if _number(row.get("consignee_switched_to_hub")) == 1:
        return f"consignee {name} imported controlled goods directly from China before the controls, now via a hub"
    if _number(row.get("consignee_direct_cn_target_before")) == 1:
        return f"consignee {name} imported controlled goods directly from China before the controls"
    return f"consignee {name} has no record of direct controlled imports from China"


def flow_phrase(row: dict, context: PhraseContext) -> str:
    """'14 lines TH → USLAX of HS 7901 in the last 4 weeks, 9.3x the earlier weekly rate'."""
    trailing, ratio = _number(row.get("flow_lines_trailing")), _number(row.get("flow_surge_ratio"))
    flow = (f"{_text(row.get('export_country'), '?')} -> {_text(row.get('port_of_discharge'), '?')} "
            f"of HS {_text(row.get('hs_code'))[:4]}")
    return f"{trailing:,.0f} earlier lines {flow} in the last 4 weeks, {ratio:,.1f}x the earlier weekly rate"


def description_phrase(row: dict, context: PhraseContext) -> str:
    """'description "metal parts" is vague' / '... does not match the declared code'."""
    text = _text(row.get("description")).strip()
    if not text:
        return "no goods description"
    if _number(row.get("desc_mentions_target")) == 1:
        return f'description "{text}" names a controlled good'
    if _number(row.get("desc_hs_mismatch")) == 1:
        return f'description "{text}" does not match HS {_text(row.get("hs_code"))[:4]}'
    if _number(row.get("desc_is_vague")) == 1:
        return f'description "{text}" is vague'
    return f'description "{text}"'


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


def group_contributions(contributions: np.ndarray, features: list[str], groups: dict[str, str]) -> pd.DataFrame:
    """Sum per-feature contributions (rows × features, bias column dropped) into reason groups."""
    names = sorted(set(groups[f] for f in features))
    membership = np.zeros((len(features), len(names)))
    for i, feature in enumerate(features):
        membership[i, names.index(groups[feature])] = 1.0
    return pd.DataFrame(contributions[:, : len(features)] @ membership, columns=names)


def top_groups(grouped: pd.DataFrame, top: int = MAX_REASONS) -> list[list[str]]:
    """Per line, the (up to ``top``) groups with a phrase and a positive contribution, largest first."""
    speakable = [g for g in grouped.columns if g in PHRASES]
    values = grouped[speakable].to_numpy(dtype="float64")
    order = np.argsort(-values, axis=1, kind="stable")[:, :top]
    chosen = np.take_along_axis(values, order, axis=1) > 0
    names = np.asarray(speakable, dtype=object)
    return [names[row_order[row_chosen]].tolist() for row_order, row_chosen in zip(order, chosen)]


def write_reasons(derived: pd.DataFrame, grouped: pd.DataFrame, context: PhraseContext) -> list[str]:
    """The top positive reason groups of each line as phrases joined by ``' | '``."""
    rows = derived.to_dict("records")
    return [SEPARATOR.join(PHRASES[g](row, context) for g in groups)
            for row, groups in zip(rows, top_groups(grouped))]
