"""Entities: shippers, consignees, importers of record and customs brokers of each declaration.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.synthetic.codes import _FORWARDER, _PER_100K, _POOL
from training.synthetic.config import _number, _share
from training.synthetic.helpers import _pick_active
from training.synthetic.world import _World


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
