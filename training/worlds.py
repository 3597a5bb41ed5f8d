"""A family of simulated worlds: structural parameters drawn per world, not only the seed.

``training/data/worlds.yaml`` lists each structural parameter of the generator (party sizes and
tenure, fraud prevalence and networks, undervaluation, price noise, inspection policy, label
delay), the range training worlds draw it from and the ranges *outside* it that held-out worlds
draw from. :func:`draw_worlds` turns those ranges into :class:`World` objects whose ``config`` is a
generator override (see :func:`training.synthetic.generate_manifest`) and :func:`generate_world`
simulates one, with identifiers prefixed by the world's name so that worlds can be pooled.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from training.synthetic import generate_manifest, load_generator_config

TRAIN, HELD_OUT = "train", "held_out"
ID_COLUMNS = ("declaration_id", "shipper_id", "consignee_id", "importer_id", "declarant_id")


@dataclass(frozen=True)
class World:
    """One simulated world.

    Attributes
    ----------
    name : str
        ``train-<i>`` or ``held-out-<i>``; also the prefix of its identifiers.
    kind : {"train", "held_out"}
    seed : int
        Seed of the generator.
    params : dict
        Drawn value of every structural parameter (by parameter name), and ``label_delay_days``.
    config : dict
        Generator configuration override.
    """

    name: str
    kind: str
    seed: int
    params: dict[str, float] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def label_delay_days(self) -> int:
        """Days before an inspection outcome of this world reaches the history store."""
        return int(self.params["label_delay_days"])


def load_world_spec(path: str | Path | None = None) -> dict:
    """Read the world family (``training/data/worlds.yaml`` by default) and check its ranges.

    Raises
    ------
    ValueError
        When a parameter lacks paths or ranges, or a held-out range overlaps its training range.
    """
    if path is None:
        text = resources.files("training").joinpath("data", "worlds.yaml").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    spec = yaml.safe_load(text)
    if not isinstance(spec, Mapping) or "parameters" not in spec:
        raise ValueError(f"world spec {path or 'worlds.yaml'} must be a mapping with 'parameters'")
    for name, entry in {**spec["parameters"], "label_delay_days": spec["label_delay_days"]}.items():
        _check_ranges(name, entry)
        if name != "label_delay_days" and not entry.get("paths"):
            raise ValueError(f"world parameter '{name}' needs 'paths'")
    return spec


def _check_ranges(name: str, entry: Mapping) -> None:
    low, high = _range(name, entry.get(TRAIN), TRAIN)
    for outside in entry.get(HELD_OUT) or []:
        out_low, out_high = _range(name, outside, HELD_OUT)
        # Touching at an end is allowed; sharing an interior point (or a one-point training range) is not.
        overlaps = out_low < high and out_high > low
        if overlaps or (low == high and out_low <= low <= out_high):
            raise ValueError(
                f"world parameter '{name}': held-out range {[out_low, out_high]} overlaps the training range {[low, high]}"
            )
    if not entry.get(HELD_OUT):
        raise ValueError(f"world parameter '{name}' needs at least one held-out range")


def _range(name: str, value, kind: str) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2 or not value[0] <= value[1]:
        raise ValueError(f"world parameter '{name}': {kind} range must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


def _set_path(config: dict, defaults: Mapping, dotted: str, value) -> None:
    """Set ``config[dotted]``; a mapping default (a share per commodity) gets ``value`` for every key."""
    parts = dotted.split(".")
    node, default = config, defaults
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        default = default.get(part, {}) if isinstance(default, Mapping) else {}
    current = default.get(parts[-1]) if isinstance(default, Mapping) else None
    node[parts[-1]] = {key: value for key in current} if isinstance(current, Mapping) else value


def _merge(base: dict, override: Mapping) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _draw_value(rng: np.random.Generator, entry: Mapping, kind: str) -> float:
    if kind == TRAIN:
        low, high = entry[TRAIN]
    else:
        options = entry[HELD_OUT]
        low, high = options[int(rng.integers(len(options)))]
    value = float(low) + rng.random() * (float(high) - float(low))
    return float(round(value)) if entry.get("integer") else round(value, 4)


def draw_world(spec: Mapping, kind: str, index: int, seed: int, defaults: Mapping | None = None) -> World:
    """Draw one world's parameters from the ``kind`` ranges of ``spec``.

    Parameters
    ----------
    spec : mapping
        The world family (:func:`load_world_spec`).
    kind : {"train", "held_out"}
    index : int
        Number of the world within its kind (names it).
    seed : int
        Seed of the whole family; each world's draws and generator seed derive from it and the
        world's kind and index, so adding worlds never changes the earlier ones.
    defaults : mapping, optional
        Generator defaults (to expand per-commodity shares); loaded when omitted.
    """
    if kind not in (TRAIN, HELD_OUT):
        raise ValueError(f"kind must be '{TRAIN}' or '{HELD_OUT}', got {kind!r}")
    defaults = load_generator_config() if defaults is None else defaults
    rng = np.random.default_rng([seed, 0 if kind == TRAIN else 1, index])
    params, config = {}, {}
    for name in sorted(spec["parameters"]):
        entry = spec["parameters"][name]
        params[name] = _draw_value(rng, entry, kind)
        for path in entry["paths"]:
            _set_path(config, defaults, path, params[name])
    params["label_delay_days"] = float(round(_draw_value(rng, spec["label_delay_days"], kind)))
    if kind == HELD_OUT:
        config = _merge(config, spec.get("held_out_config") or {})
    name = f"{'train' if kind == TRAIN else 'held-out'}-{index}"
    return World(name=name, kind=kind, seed=int(rng.integers(2**31 - 1)), params=params, config=config)


def draw_worlds(spec: Mapping, n_train: int, n_held_out: int, seed: int) -> tuple[list[World], list[World]]:
    """``n_train`` training worlds and ``n_held_out`` held-out worlds of the family."""
    for name, value in (("n_train", n_train), ("n_held_out", n_held_out)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    defaults = load_generator_config()
    return (
        [draw_world(spec, TRAIN, i, seed, defaults) for i in range(n_train)],
        [draw_world(spec, HELD_OUT, i, seed, defaults) for i in range(n_held_out)],
    )


def generate_world(world: World, n_rows: int, start: str, end: str) -> pd.DataFrame:
    """Simulate ``world``; identifiers carry the world's name so that worlds can be pooled."""
    frame = generate_manifest(n_rows, world.seed, start, end, config=world.config)
    prefixed = {column: world.name + "-" + frame[column].astype("string") for column in ID_COLUMNS}
    return frame.assign(**prefixed)
