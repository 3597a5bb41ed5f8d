"""Customs selection (targeted by a noisy rule of thumb, or random) and the labels it yields."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.synthetic.codes import _COVER, _TARGET
from training.synthetic.config import _cfg, _number, _share
from training.synthetic.helpers import _cum_rows, _draw, _text, _vector
from training.synthetic.world import _World

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
        "unit_value_outside_band": (unit_value < goods.price[good, 0] / factor) | (unit_value > goods.price[good, 1] * factor),
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
