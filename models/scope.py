"""Scope of the disguise score, and the origin check of lines declared under a controlled code.

The disguise score asks whether a consignment declared as *something else* (another metal, crafts,
ceramics...) hides antimony, gallium, germanium or rare earths. A line declared under a controlled
code (``DeclaredHSFeatures.is_target_code``: the antimony, gallium, germanium and rare-earth
headings of ``features/data/hs_codes.csv``) declares the good openly, so it is not a disguise
candidate: its ``check`` is ``"origin"`` instead of ``"disguise"``, its ``risk_score`` is 0 (the
probability that it is a *disguised* controlled good is 0 by definition) and it never takes a place
in the day's red / yellow quotas.

What can be wrong with such a line is its declared origin (origin laundering: Chinese material
relabelled in a transit country). The origin check fires, and the line goes to **yellow** (check the
certificate of origin), when its declared origin is not a country whose export controls are evaded
(``countries.csv``, ``controls_exports``: China) and

- the declared origin country does not produce the declared good (``features/data/countries.csv``,
  column ``produces``; for a code shared by several goods, e.g. HS 811292 gallium / germanium, it
  must produce one of them), or
- the line was exported from, loaded in or transshipped through a diversion hub
  (``countries.csv``, ``diversion_hub``; the hubs the model was trained with) other than its
  origin country.

Otherwise the line is green. Countries, goods and hubs come from the reference tables as the fitted
pipeline copied them (a pipeline fitted before it copied producers per good reads the installed
tables), never from code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.reference import load_reference
from features.transformers import as_text, via_hub_mask

DISGUISE, ORIGIN = "disguise", "origin"
CHECKS = (DISGUISE, ORIGIN)


@dataclass(frozen=True)
class ScopeResult:
    """Per-line outcome of the scope and origin check.

    Attributes
    ----------
    controlled : ndarray of bool
        Declared under a controlled code: check "origin", not a disguise candidate.
    non_producer : ndarray of bool
        Controlled line whose origin does not produce the declared good (and is not the
        controlling country).
    hub : ndarray of object
        Controlled line routed via a diversion hub other than its origin: that hub's country code
        (the first one in alphabetical order if several), '' otherwise.
    """

    controlled: np.ndarray
    non_producer: np.ndarray
    hub: np.ndarray

    @property
    def check(self) -> np.ndarray:
        """'origin' for controlled-code lines, 'disguise' for the others."""
        return np.where(self.controlled, ORIGIN, DISGUISE).astype(object)

    @property
    def alert(self) -> np.ndarray:
        """Controlled lines whose certificate of origin should be checked (yellow)."""
        return np.asarray(self.controlled & (self.non_producer | (self.hub != "")))


@dataclass(frozen=True)
class OriginCheck:
    """The origin-laundering rule with its reference data.

    Attributes
    ----------
    producers : dict
        Commodity -> countries producing it.
    code_commodities : dict
        Six-digit HS code -> the goods it covers (``target_goods.csv``; e.g. 811292 -> gallium,
        germanium); codes not listed there cover their ``declared_target`` alone.
    hubs : tuple of str
        Diversion-hub countries.
    controlling : frozenset of str
        Countries whose export controls are evaded: goods declared as coming from them say where
        they come from, so their origin is not in question.
    """

    producers: dict[str, frozenset[str]]
    code_commodities: dict[str, tuple[str, ...]]
    hubs: tuple[str, ...]
    controlling: frozenset[str]

    @classmethod
    def from_pipeline(cls, pipeline: Any) -> OriginCheck:
        """The rule with the reference values a fitted pipeline copied (its route and declared-HS steps).

        A pipeline fitted before those steps kept producers per good reads them from its tables.
        """
        route, declared = pipeline.named_steps["route"], pipeline.named_steps["declared_hs"]
        producers, code_goods = route.producers_, declared.code_goods_
        controlling = route.controlling_countries_
        if producers is None or code_goods is None or controlling is None:
            reference = load_reference(declared.reference_dir)
            producers = {c: sorted(reference.producers(c)) for c in reference.commodities}
            code_goods, controlling = reference.code_goods(), sorted(reference.controlling_countries)
        return cls(
            producers={c: frozenset(countries) for c, countries in producers.items()},
            code_commodities={code: tuple(goods) for code, goods in code_goods.items()},
            hubs=tuple(route.hubs_),
            controlling=frozenset(controlling),
        )

    def evaluate(self, derived: pd.DataFrame) -> ScopeResult:
        """Scope and origin check of lines with their derived features (``transform_features``)."""
        controlled = (pd.to_numeric(derived["is_target_code"], errors="coerce").fillna(0) == 1).to_numpy(dtype=bool)
        non_producer = np.zeros(len(derived), dtype=bool)
        hub = np.full(len(derived), "", dtype=object)
        rows = derived[controlled]
        if len(rows):
            origin = as_text(rows, "origin_country").to_numpy(dtype=object)
            outside = ~np.isin(origin, list(self.controlling))
            produces = np.array(
                [
                    o in frozenset().union(*(self.producers.get(g, frozenset()) for g in goods))
                    for o, goods in zip(origin, self.goods(rows), strict=True)
                ],
                dtype=bool,
            )
            non_producer[controlled] = outside & ~produces
            hub[controlled] = np.where(outside, self.hub_other_than_origin(rows), "")
        return ScopeResult(controlled=controlled, non_producer=non_producer, hub=hub)

    def goods(self, derived: pd.DataFrame) -> list[tuple[str, ...]]:
        """The goods each line's declared code covers."""
        codes = as_text(derived, "hs_code", "").str.slice(0, 6)
        target = as_text(derived, "declared_target", "none")
        return [self.code_commodities.get(c) or (t,) for c, t in zip(codes, target, strict=True)]

    def hub_other_than_origin(self, derived: pd.DataFrame) -> np.ndarray:
        """Country code of a diversion hub the line passed through other than its origin, else ''."""
        origin = as_text(derived, "origin_country")
        found = np.full(len(derived), "", dtype=object)
        for hub in reversed(sorted(self.hubs)):  # reversed: the first hub alphabetically wins
            found[(via_hub_mask(derived, {hub}) & (origin != hub)).to_numpy()] = hub
        return found

    def phrases(self, derived: pd.DataFrame, result: ScopeResult) -> np.ndarray:
        """Plain-text reason of each controlled line ('' for the others)."""
        out = np.full(len(derived), "", dtype=object)
        origin = as_text(derived, "origin_country").to_numpy(dtype=object)
        codes = as_text(derived, "hs_code", "").str.slice(0, 6).to_numpy(dtype=object)
        goods = self.goods(derived)
        for i in np.flatnonzero(result.controlled):
            names = " or ".join(g.replace("_", " ") for g in goods[i])
            facts = [f"declared as {names} (HS {codes[i]}) with origin {origin[i]}"]
            if result.non_producer[i]:
                facts.append(f"which does not produce {names}")
            if result.hub[i]:
                facts.append(f"routed via {result.hub[i]} (diversion hub)")
            if result.non_producer[i] or result.hub[i]:
                out[i] = ", ".join(facts) + ": check the certificate of origin"
            else:
                out[i] = facts[0] + ": no origin check needed"
        return out
