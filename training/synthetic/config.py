"""Generator configuration: loading, deep merge, typed access with errors naming the key,
and checks of the call's parameters.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def load_generator_config(path: str | Path | None = None) -> dict:
    """Read the generator configuration.

    Parameters
    ----------
    path : str or Path, optional
        A YAML file deep-merged over the default configuration shipped in
        ``training/data/generator.yaml``: mappings merge key by key, other values replace, and a
        key set to ``null`` is removed. The default alone when omitted.

    Returns
    -------
    dict
        The merged configuration.

    Raises
    ------
    ValueError
        When the file does not hold a mapping.
    """
    default = _default_config()
    if path is None:
        return default
    with Path(path).open(encoding="utf-8") as handle:
        override = _parse_yaml(handle.read()) or {}
    if not isinstance(override, Mapping):
        raise ValueError(f"config file {path} must hold a mapping, got {type(override).__name__}")
    return _deep_merge(default, override)


def _default_config() -> dict:
    text = resources.files("training").joinpath("data", "generator.yaml").read_text(encoding="utf-8")
    return _parse_yaml(text)


def _parse_yaml(text: str):
    # libyaml's safe loader when PyYAML was built with it: the pure-Python one takes ~0.5 s here.
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - safe loader


def _deep_merge(base: Mapping, override: Mapping) -> dict:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _cfg(config: Mapping, dotted: str):
    """Value at a dotted path, with an error naming the path when it is missing."""
    value = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise ValueError(f"config is missing '{dotted}'")
        value = value[part]
    return value


def _share(config: Mapping, dotted: str) -> float:
    value = _number(config, dotted)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"config '{dotted}' must be a share in [0, 1], got {value}")
    return value


def _number(config: Mapping, dotted: str) -> float:
    try:
        return float(_cfg(config, dotted))
    except (TypeError, ValueError) as error:
        if "missing" in str(error):
            raise
        raise ValueError(f"config '{dotted}' must be a number, got {_cfg(config, dotted)!r}") from None


def _at_least(config: Mapping, dotted: str, minimum: float) -> float:
    """Number at ``dotted``, with an error naming the key when it is below ``minimum``."""
    value = _number(config, dotted)
    if not value >= minimum:
        raise ValueError(f"config '{dotted}' must be >= {minimum:g}, got {value}")
    return value


def _pair(config: Mapping, dotted: str) -> tuple[float, float]:
    value = _cfg(config, dotted)
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"config '{dotted}' must be a [low, high] pair, got {value!r}")
    low, high = (float(v) for v in value)
    if not 0 <= low <= high:
        raise ValueError(f"config '{dotted}' must be [low, high] with 0 <= low <= high, got {[low, high]}")
    return low, high


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}" if minimum != 1 else f"{name} must be > 0, got {value}")
    return int(value)


def _as_day(value, name: str) -> int:
    """Days since 1970-01-01 of a date, datetime or ISO date string."""
    if isinstance(value, (date, datetime, pd.Timestamp, np.datetime64)):
        stamp = pd.Timestamp(value)
    elif isinstance(value, str):
        try:
            stamp = pd.Timestamp(date.fromisoformat(value.strip()[:10]))
        except ValueError:
            raise ValueError(f"{name} must be an ISO date (YYYY-MM-DD), got {value!r}") from None
    else:
        raise TypeError(f"{name} must be a date or an ISO date string, got {value!r}")
    return int(np.datetime64(stamp.date(), "D").astype(np.int64))


def _check_window(start, end) -> tuple[int, int]:
    start_day, end_day = _as_day(start, "start"), _as_day(end, "end")
    if start_day >= end_day:
        raise ValueError(f"start must be before end, got start={start!s}, end={end!s}")
    return start_day, end_day
