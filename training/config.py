"""Training settings: defaults in ``training/data/train.yaml``, overridable by a user YAML file."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

import yaml


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run (see ``training/data/train.yaml`` for what each one means)."""

    label_delay_days: int
    valid_fraction: float
    test_fraction: float
    seed: int
    num_threads: int
    learning_rate: float
    num_leaves: int
    min_child_samples: int
    max_rounds: int
    min_rounds: int
    early_stopping_rounds: int
    feature_fraction: float
    lambda_l2: float
    min_hs_count: int
    min_category_count: int
    tenure_unknown_days: int
    history_dropout: float
    red_rate: float
    yellow_rate: float
    inspection_rates: tuple[float, ...]
    commodity_rounds: int
    commodity_feature_groups: tuple[str, ...]

    def __post_init__(self):
        for name in ("valid_fraction", "test_fraction", "red_rate", "yellow_rate"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if self.valid_fraction + self.test_fraction >= 0.8:
            raise ValueError(f"valid_fraction + test_fraction must be < 0.8, got {self.valid_fraction + self.test_fraction}")
        if self.label_delay_days < 0:
            raise ValueError(f"label_delay_days must be >= 0, got {self.label_delay_days}")
        for name in (
            "num_threads",
            "max_rounds",
            "min_rounds",
            "early_stopping_rounds",
            "commodity_rounds",
            "min_hs_count",
            "min_category_count",
            "num_leaves",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def as_dict(self) -> dict:
        """Plain dict of the settings (for logging as MLflow parameters)."""
        return asdict(self)


def layered_settings(
    default_file: str, path: str | Path | None, overrides: dict, known: set[str], what: str, nested: tuple[str, ...] = ()
) -> dict:
    """Settings from ``training/data/<default_file>``, then a user YAML, then keyword overrides.

    Parameters
    ----------
    default_file : str
        Packaged YAML with every setting's default.
    path : str or Path, optional
        User YAML overriding any of them; for ``nested`` sections only the keys it names change.
    overrides : dict
        Keyword overrides; ``None`` values are ignored.
    known : set of str
        Allowed top-level names.
    what : str
        What the settings are, for the error message ("training", "retrain").

    Raises
    ------
    ValueError
        On an unknown setting name.
    """
    values = yaml.safe_load(resources.files("training").joinpath("data", default_file).read_text(encoding="utf-8"))
    if path is not None:
        user = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        for section in nested:
            values[section] = {**values[section], **(user.pop(section, None) or {})}
        values.update(user)
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {unknown}; known: {sorted(known)}")
    return values


def load_train_config(path: str | Path | None = None, **overrides) -> TrainConfig:
    """Read the default settings, then a user YAML (if given), then keyword overrides.

    Raises
    ------
    ValueError
        On an unknown setting name or an out-of-range value.
    """
    values = layered_settings("train.yaml", path, overrides, {f.name for f in fields(TrainConfig)}, "training")
    values["inspection_rates"] = tuple(float(r) for r in values["inspection_rates"])
    values["commodity_feature_groups"] = tuple(values["commodity_feature_groups"])
    return TrainConfig(**values)
