"""Entities: shippers, consignees, importers of record and customs brokers of each declaration.

Legitimate declarations draw their parties from pools sized from the data. Two structural knobs
change who files what: heavy newcomers (legitimate shippers that enter inside the window and file
many declarations at once) and fraud that borrows long-established parties from the pools.
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
    _LEGIT,
    _NEWCOMER,
    _PER_100K,
    _POOL,
)
from training.synthetic.config import _at_least, _number, _share
from training.synthetic.helpers import _pick_active
from training.synthetic.world import _World

# Scenarios whose declarations may be filed by heavy newcomers.
_LEGITIMATE = (_BG_COVER, _BG_OTHER, _LEGIT)


# --------------------------------------------------------------------------------------------
# Entities
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pool:
    """Members of legitimate pools, sorted by (pool, first day).

    Attributes
    ----------
    keys : ndarray
        Key of each pool, sorted.
    offsets : ndarray
        Number of the first member of each pool.
    members : ndarray
        Number of members of each pool.
    established : ndarray
        Members of each pool active from the window's start; they come first in the pool.
    total : int
        Number of members of all pools.
    """

    keys: np.ndarray
    offsets: np.ndarray
    members: np.ndarray
    established: np.ndarray
    total: int


def _pool(world: _World, rng, group_key: np.ndarray, day: np.ndarray, per_entity: float) -> tuple[np.ndarray, _Pool]:
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
    pool = _Pool(
        keys=keys,
        offsets=np.cumsum(sizes) - sizes,
        members=sizes,
        established=np.bincount(owner[first == world.start], minlength=len(keys)),
        total=int(sizes.sum()),
    )
    return _pick_active(rng, owner[order], first[order], group, day, concentration), pool


def _stand_in_pools(pool: _Pool, wanted: np.ndarray, related: np.ndarray | None) -> np.ndarray:
    """Pool of each wanted key; when absent, the largest pool of the same ``related`` value, else the largest.

    ``related`` gives, per pool key (first half) and per wanted key (second half), a coarser key
    such as the country of an (origin, goods group) key.
    """
    position = np.minimum(np.searchsorted(pool.keys, wanted), len(pool.keys) - 1)
    found = pool.keys[position] == wanted
    owner = np.where(found, position, int(np.argmax(pool.members)))
    if related is None or found.all():
        return owner
    related_pool, related_wanted = related[: len(pool.keys)], related[len(pool.keys) :]
    for value in np.unique(related_wanted[~found]):
        candidates = np.flatnonzero(related_pool == value)
        if len(candidates):
            owner[~found & (related_wanted == value)] = candidates[np.argmax(pool.members[candidates])]
    return owner


def _borrowed_members(world: _World, rng, pool: _Pool, wanted: np.ndarray, related: np.ndarray | None = None) -> np.ndarray:
    """Established member of the pool each borrowing declaration wants (see :func:`_stand_in_pools`).

    The member is ``floor(k * u ** concentration)`` among the pool's ``k`` established members,
    so the busiest long-standing traders lend their names most often.
    """
    owner = _stand_in_pools(pool, wanted, related)
    count = pool.established[owner]
    concentration = _number(world.cfg, "entities.concentration")
    chosen = np.minimum((count * rng.random(len(owner)) ** concentration).astype(np.int64), count - 1)
    return pool.offsets[owner] + chosen


def _entity_numbers(
    rng, legit: np.ndarray, legit_member: np.ndarray, legit_total: int, kind: np.ndarray, key: np.ndarray
) -> np.ndarray:
    """Shuffled entity numbers: pool members first, then one per distinct (kind, key)."""
    number = np.zeros(len(kind), dtype=np.int64)
    number[legit] = legit_member
    # One integer per (kind, key); keys stay well below 2**40 in magnitude.
    special = kind[~legit].astype(np.int64) * (1 << 42) + key[~legit] + (1 << 41)
    unique, inverse = np.unique(special, return_inverse=True)
    number[~legit] = legit_total + inverse
    # Shuffle so that an id never tells a fraud entity from a legitimate one.
    return rng.permutation(legit_total + len(unique))[number]


def _newcomer_of(rng, origin: np.ndarray, day: np.ndarray, size: float, days: float) -> np.ndarray:
    """Newcomer filing each declaration, numbered from 0.

    Per origin country there is about one newcomer per ``size`` declarations. Each enters on the
    day of one of them (the earliest declaration always opens a newcomer) and the others go to a
    newcomer that entered less than ``days`` days earlier, or to the latest one when none did.
    """
    newcomer = np.zeros(len(day), dtype=np.int64)
    numbered = 0
    for country in np.unique(origin):
        rows = np.flatnonzero(origin == country)
        rows = rows[np.argsort(day[rows], kind="stable")]
        when = day[rows]
        count = max(1, math.ceil(len(rows) / size))
        anchors = np.sort(np.concatenate([[0], 1 + rng.choice(len(rows) - 1, count - 1, replace=False)]))
        entry = when[anchors]
        low = np.searchsorted(entry, when - days + 1, side="left")
        high = np.searchsorted(entry, when, side="right")
        pick = np.where(high > low, low + (rng.random(len(rows)) * (high - low)).astype(np.int64), high - 1)
        pick[anchors] = np.arange(count)
        newcomer[rows] = numbered + pick
        numbered += count
    return newcomer


def _heavy_newcomers(world: _World, rng, decls: pd.DataFrame, kind: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shipper kinds and keys with a share of legitimate declarations moved to heavy newcomers.

    Draws nothing when ``entities.heavy_newcomer_share`` is 0, so the default world is unchanged.
    """
    cfg = world.cfg
    share = _share(cfg, "entities.heavy_newcomer_share")
    if share == 0:
        return kind, key
    size = _at_least(cfg, "entities.heavy_newcomer_declarations", 1)
    days = _at_least(cfg, "entities.heavy_newcomer_days", 1)
    eligible = np.isin(decls["scenario"].to_numpy(), _LEGITIMATE) & (kind == _POOL)
    chosen = np.flatnonzero(eligible & (rng.random(len(kind)) < share))
    if len(chosen) == 0:
        return kind, key
    kind, key = kind.copy(), key.copy()
    kind[chosen] = _NEWCOMER
    key[chosen] = _newcomer_of(rng, decls["origin"].to_numpy()[chosen], decls["day"].to_numpy()[chosen], size, days)
    return kind, key


def _shippers(world: _World, rng, decls: pd.DataFrame) -> np.ndarray:
    """Shipper numbers: pools per (origin, goods group), newcomers, network and story shippers.

    Fraud declarations that borrow an established shipper take one from the pool of their export
    country and declared goods group (else the country's largest pool, else the largest pool).
    """
    n_groups = len(world.goods.group_names)
    kind, key = _heavy_newcomers(world, rng, decls, decls["shipper_kind"].to_numpy(), decls["shipper_key"].to_numpy())
    legit, borrowed = kind == _POOL, kind == _ESTABLISHED
    pool_key = decls["origin"].to_numpy() * n_groups + decls["group"].to_numpy()
    per = _number(world.cfg, "entities.declarations_per_shipper")
    member = np.zeros(len(kind), dtype=np.int64)
    member[legit], pool = _pool(world, rng, pool_key[legit], decls["day"].to_numpy()[legit], per)
    if borrowed.any():
        wanted = (decls["export"].to_numpy() * n_groups + decls["group"].to_numpy())[borrowed]
        country = np.concatenate([pool.keys, wanted]) // n_groups
        member[borrowed] = _borrowed_members(world, rng, pool, wanted, country)
    known = legit | borrowed
    return _entity_numbers(rng, known, member[known], pool.total, kind, key)


def _parties(world: _World, rng, decls: pd.DataFrame, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Consignee and importer numbers in one party space (consignees, forwarders, story parties)."""
    cfg, n = world.cfg, len(decls)
    kind = decls["consignee_kind"].to_numpy().copy()
    kind[(kind == _POOL) & (rng.random(n) < _share(cfg, "entities.consignee_forwarder_share"))] = _FORWARDER
    n_fwd = max(2, round(_number(cfg, "entities.forwarders_per_100k_lines") * n_rows / _PER_100K))
    forwarder = (n_fwd * rng.random((2, n)) ** _number(cfg, "entities.concentration")).astype(np.int64)
    key = np.where(kind == _FORWARDER, forwarder[0], decls["consignee_key"].to_numpy())
    legit, borrowed = kind == _POOL, kind == _ESTABLISHED
    group = decls["group"].to_numpy()
    per = _number(cfg, "entities.declarations_per_consignee")
    member = np.zeros(n, dtype=np.int64)
    member[legit], pool = _pool(world, rng, group[legit], decls["day"].to_numpy()[legit], per)
    if borrowed.any():
        member[borrowed] = _borrowed_members(world, rng, pool, group[borrowed])
    known = legit | borrowed
    # Consignees and importers of record are numbered together: a forwarder is the same party in both.
    numbers = _entity_numbers(
        rng,
        np.concatenate([known, np.zeros(n, bool)]),
        member[known],
        pool.total,
        np.concatenate([kind, np.full(n, _FORWARDER)]),
        np.concatenate([key, forwarder[1]]),
    )
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
