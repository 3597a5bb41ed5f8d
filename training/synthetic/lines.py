"""Lines of each declaration: declared goods, physics (weights, packages, containers),
declared values and text (HS code, description).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.synthetic.codes import _AIR, _NO_DISGUISE, _POST, _RAIL, _SEA, _TARGET, _TRUE_VALUE, _UNDERVALUED
from training.synthetic.config import _cfg, _number, _pair, _share
from training.synthetic.helpers import _draw, _text, _uniform
from training.synthetic.world import _World

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
    post = np.clip(
        _lognormal(rng, cfg, "mode_line_kg.post", n), _number(cfg, "mode_line_kg.post.min"), _number(cfg, "mode_line_kg.post.max")
    )
    return np.where(mode == _AIR, np.minimum(net, air), np.where(mode == _POST, post, net))


def _packing(world: _World, rng, lines: pd.DataFrame) -> dict:
    """Profiles that set the physics: the hidden good's for fraud (its density and packing)."""
    goods, forms = world.goods, world.forms
    fraud = lines["fraud"].to_numpy()
    # A line that mimics its declared good's trade is packed like it (a new cover, fraud.new_covers).
    mimic = lines["mimic"].to_numpy()
    form = np.maximum(lines["form"].to_numpy(), 0)
    declared = goods.profile[lines["good"].to_numpy()]
    physical = np.where(fraud & ~mimic, forms.profile[form], declared)
    repacked = fraud & ~mimic & (rng.random(len(lines)) < _share(world.cfg, "fraud.repack_share"))
    low, high = _pair(world.cfg, "fraud.repack_weight_factor")
    factor = np.where(repacked, low + rng.random(len(lines)) * (high - low), 1.0)
    return {"declared": declared, "physical": physical, "package": np.where(repacked, declared, physical), "factor": factor}


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
        net_weight_kg=net,
        gross_weight_kg=gross,
        packages=packages,
        containers=np.where(boxed, np.ceil(gross / payload), 0).astype(np.int64),
        quantity=quantity,
        quantity_unit=_text(prof.unit, packing["declared"]),
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
        (world.goods.group_kind[lines["group"].to_numpy()] == _TARGET) & ~lines["fraud"].to_numpy()
    )
    return np.where(at_target[:, None], target_band, declared_band)


def _undervaluation(world: _World, rng, undervalued: np.ndarray) -> np.ndarray:
    """Log of the factor on the cover price of undervalued lines, 0 on the others.

    The factor is log-uniform in ``fraud.undervalue_factor`` = [low, high]; a single value
    (low == high, 1 by default) draws nothing.
    """
    where = "fraud.undervalue_factor"
    low, high = _pair(world.cfg, where)
    if low <= 0:
        raise ValueError(f"config '{where}' must be [low, high] with 0 < low <= high, got {[low, high]}")
    if low == high:
        return np.where(undervalued, np.log(low), 0.0)
    log_factor = np.log(low) + rng.random(len(undervalued)) * (np.log(high) - np.log(low))
    return np.where(undervalued, log_factor, 0.0)


def _add_values(world: _World, rng, lines: pd.DataFrame) -> pd.DataFrame:
    """Declared value: log-uniform unit price in the band, lognormal noise, a few outliers.

    Undervalued lines are priced in the cover good's band, times the undervaluation factor.
    """
    cfg, n = world.cfg, len(lines)
    band = _price_band(world, lines)
    log_low, log_high = np.log(band[:, 0]), np.log(band[:, 1])
    noise = _number(cfg, "prices.noise_sigma") * rng.standard_normal(n)
    log_price = log_low + rng.random(n) * (log_high - log_low) + noise
    outlier = rng.random(n) < _share(cfg, "prices.outlier_share")
    log_price += np.where(outlier, _number(cfg, "prices.outlier_sigma") * rng.standard_normal(n), 0.0)
    log_price += _undervaluation(world, rng, lines["disguise"].to_numpy() == _UNDERVALUED)
    return lines.assign(declared_value_usd=np.round(lines["net_weight_kg"].to_numpy() * np.exp(log_price), 2))


def _add_text(world: _World, rng, lines: pd.DataFrame) -> pd.DataFrame:
    goods, cfg = world.goods, world.cfg
    good = lines["good"].to_numpy()
    n = len(lines)
    six = rng.random(n) < _share(cfg, "hs_code.six_digit_share")
    vague_share = np.where(
        lines["fraud"].to_numpy() & ~lines["mimic"].to_numpy(),
        _share(cfg, "fraud.vague_description_share"),
        _share(cfg, "descriptions.vague_share"),
    )
    vague = rng.random(n) < vague_share
    start = np.where(vague, goods.vague_start[good], goods.phrase_start[good])
    length = np.where(vague, goods.vague_len[good], goods.phrase_len[good])
    phrase = start + (rng.random(n) * length).astype(np.int64)
    upper = rng.random(n) < _share(cfg, "descriptions.upper_share")
    phrase = phrase + np.where(upper, len(goods.phrases) // 2, 0)
    hs_table = np.concatenate([goods.hts10, goods.hs6])
    return lines.assign(
        hs_code=_text(hs_table, good + np.where(six, len(goods.hs6), 0)), description=_text(goods.phrases, phrase)
    )
