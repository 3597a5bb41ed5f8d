"""Declarations per scenario: background trade, legitimate target imports, fraud networks
and their routes, switching buyers, parcel splitting and trimming to the requested size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.synthetic.codes import (
    _BG_COVER,
    _BG_OTHER,
    _ESTABLISHED,
    _FORWARDER,
    _FRAUD,
    _LEGIT,
    _NETWORK,
    _NO_DISGUISE,
    _ONE_OFF,
    _PER_100K,
    _POOL,
    _POST,
    _SWITCH,
    _SWITCH_BUYER,
    _SWITCH_CN,
    _SWITCH_HUB,
    _TRUE_VALUE,
    _UNDERVALUED,
    SCENARIOS,
)
from training.synthetic.config import _as_day, _cfg, _number, _pair, _share
from training.synthetic.helpers import _cum_rows, _draw, _pick_active, _position, _vector
from training.synthetic.world import _Lanes, _World

# --------------------------------------------------------------------------------------------
# Declarations per scenario
# --------------------------------------------------------------------------------------------

_DECL_DEFAULTS = {
    "commodity": -1,
    "form": -1,
    "hidden": False,
    "disguise": _NO_DISGUISE,
    "network": -1,
    "shipper_kind": _POOL,
    "shipper_key": 0,
    "consignee_kind": _POOL,
    "consignee_key": 0,
    "mimic": False,
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
    return _Networks(
        commodity[order], start[order], shippers[order], consignees[order], rotation[order], preferred[order], captured[order]
    )


def _captured(world: _World, rng, commodity: np.ndarray) -> np.ndarray:
    """Route each network moves to once a route with a start date and a capture share opens."""
    captured = np.full(len(commodity), -1)
    for r in np.flatnonzero(world.routes.capture > 0):
        moves = (rng.random(len(commodity)) < world.routes.capture[r]) & (world.routes.weight[r, commodity] > 0)
        captured = np.where(moves, r, captured)
    return captured


def _route_period_cum(world: _World) -> tuple[np.ndarray, np.ndarray]:
    """Route weights per (commodity, period) where periods split at the routes' start and end days."""
    routes = world.routes
    days = np.concatenate([routes.start, routes.end[routes.end <= world.end]])
    bounds = np.unique(days[days >= world.start])
    period_days = np.concatenate([[world.start - 1], bounds])
    active = (routes.start[None, :] <= period_days[:, None]) & (period_days[:, None] < routes.end[None, :])  # (periods, R)
    weights = world.routes.weight.T[:, None, :] * active[None, :, :]  # (C, periods, R)
    if (weights.sum(axis=2) == 0).any():
        raise ValueError("config 'fraud.routes' leaves a commodity without an active route")
    return bounds, _cum_rows(weights.reshape(-1, len(world.routes.ids)))


def _pick_routes(world: _World, rng, nets: _Networks, network: np.ndarray, commodity: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Route of each consignment: mostly the network's usual one, the newly opened one once moved."""
    bounds, cum = _route_period_cum(world)
    period = np.searchsorted(bounds, day, side="right")
    free = _draw(rng, cum, commodity * (len(bounds) + 1) + period)
    net = np.maximum(network, 0)
    sticky = (network >= 0) & (rng.random(len(day)) < _share(world.cfg, "fraud.networks.route_stickiness"))
    captured = nets.captured[net]
    moved = sticky & (captured >= 0) & (day >= world.routes.start[np.maximum(captured, 0)])
    route = np.where(moved, captured, np.where(sticky, nets.preferred[net], free))
    # A network whose usual route was abandoned goes where the free draw sends it.
    return np.where(day >= world.routes.end[route], free, route)


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


def _borrow_established(world: _World, rng, parties: dict) -> dict:
    """Parties with a share of fraud declarations filed through long-established legitimate firms.

    Draws nothing when ``fraud.established_party_share`` is 0, so the default world is unchanged.
    The borrowed firms themselves are picked with the entities (see ``entities._shippers``).
    """
    share = _share(world.cfg, "fraud.established_party_share")
    if share == 0:
        return parties
    return _through_established(parties, rng.random(len(parties["shipper_kind"])) < share)


def _through_established(parties: dict, through: np.ndarray) -> dict:
    """Parties with the ``through`` declarations filed through long-established legitimate firms."""
    return {
        **parties,
        "shipper_kind": np.where(through, _ESTABLISHED, parties["shipper_kind"]),
        "consignee_kind": np.where(through, _ESTABLISHED, parties["consignee_kind"]),
    }


def _disguise(world: _World, rng, commodity: np.ndarray, export: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disguise (true value or undervalued) and declared origin (CN or the export country)."""
    shares = _vector(
        {**{c: 0.0 for c in world.commodities}, **_cfg(world.cfg, "fraud.undervalued_share")},
        world.commodities,
        "fraud.undervalued_share",
    )
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
    group, mimic, established = _new_covers(world, rng, day, commodity, group)
    disguise = np.where(mimic, _UNDERVALUED, disguise)
    origin = np.where(mimic, fields["export"], origin)
    parties = _borrow_established(world, rng, _network_parties(world, rng, nets, network, day))
    if mimic.any():
        parties = _through_established(parties, mimic & (rng.random(len(day)) < established))
    return _frame(
        _FRAUD,
        day,
        group=group,
        form=form,
        commodity=commodity,
        hidden=np.ones(len(day), bool),
        disguise=disguise,
        origin=origin,
        network=network,
        mimic=mimic,
        **fields,
        **parties,
    )


def _new_covers(
    world: _World, rng, day: np.ndarray, commodity: np.ndarray, group: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Goods group each fraud declaration is declared as once ``fraud.new_covers`` open, whether it
    mimics that group's legitimate trade (its price band, packing, plain words, the export country
    as origin), and the share of such declarations filed through long-established legitimate firms.
    Draws nothing when no new cover is configured."""
    mimic = np.zeros(len(day), bool)
    established = np.zeros(len(day))
    for name in sorted(world.cfg.get("fraud", {}).get("new_covers") or {}):
        where = f"fraud.new_covers.{name}"
        to = _position(world.goods.group_names, _cfg(world.cfg, f"{where}.group"), f"{where}.group")
        shares = _vector(
            {**{c: 0.0 for c in world.commodities}, **_cfg(world.cfg, f"{where}.shares")}, world.commodities, f"{where}.shares"
        )
        moves = ~mimic & (day >= _as_day(_cfg(world.cfg, f"{where}.start"), f"config '{where}.start'"))
        moves &= rng.random(len(day)) < shares[commodity]
        group, mimic = np.where(moves, to, group), mimic | moves
        established = np.where(moves, _share(world.cfg, f"{where}.established_party_share"), established)
    return group, mimic, established


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
        _SWITCH,
        day,
        group=group,
        form=np.where(hub & ~after, -1, form),
        commodity=np.where(after, commodity, -1),
        hidden=after,
        disguise=np.where(after, disguise, _NO_DISGUISE),
        origin=origin,
        shipper_kind=np.where(hub, _SWITCH_HUB, _SWITCH_CN),
        shipper_key=buyer,
        consignee_kind=np.full(n, _SWITCH_BUYER),
        consignee_key=buyer,
        **fields,
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
