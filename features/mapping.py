"""Declarative schema mappings: another source's columns to the canonical manifest columns.

A mapping file (YAML) says, for each canonical column and for each extra column passed through, where
its values come from and how they are converted. Only the conversions listed in :data:`CONVERSIONS`
exist, so a mapping file is data and never names code to run::

    name: kcs
    columns:
      declaration_id: {from: Declaration ID}
      line_no: {constant: 1}
      declared_at: {from: Date, date_format: "%Y-%m-%d"}
      hs_code: {from: HS6 Code, zero_pad: 6}
      declared_value_usd:
        from: Item Price
        fixed_rate: {divide_by: 1180.0, unit: KRW per USD, as_of: "2020", source: "..."}
      transport_mode: {from: Mode of Transport, values: {"10": sea, "40": air}}
    extras:
      office_id: {from: Office ID}
      goods_profile: {concat: [HS6 Code, Item Price], categorical: false, history_entity: true}

Extras are passed through validation unchanged; ``categorical: true`` (the default) marks them as
extra categorical model features and ``history_entity: true`` as keys whose point-in-time history
(earlier lines, label-delayed misdeclaration rate) the pipeline computes like a party's.

:func:`apply_mapping` is a pure function of the raw frame and the mapping. It does not validate: its
output goes through :func:`features.schema.validate_manifest` like any manifest file, so that a value
a conversion could not handle (an unparseable date or number) keeps its original text and ends in the
quarantine with a reason instead of silently becoming missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from features.schema import CANONICAL_COLUMNS, FLOAT_COLUMNS, INT_COLUMNS

MAPPINGS_PACKAGE = "features"
MAPPINGS_FOLDER = ("data", "mappings")
SOURCE_KEYS = ("from", "constant", "concat")
CONVERSIONS = ("zero_pad", "values", "unknown", "fixed_rate", "date_format")
_FLAGS = ("categorical", "history_entity")
_RULE_KEYS = frozenset(SOURCE_KEYS + CONVERSIONS + _FLAGS + ("separator",))
_RATE_KEYS = frozenset(("multiply_by", "divide_by", "unit", "as_of", "source"))
_TOP_KEYS = frozenset(("name", "description", "columns", "extras", "ignore"))


class MappingError(ValueError):
    """A mapping file that cannot be used, or data that does not fit it; the message names both."""


@dataclass(frozen=True)
class FixedRate:
    """A fixed conversion rate, with the date and source that justify it.

    Attributes
    ----------
    operation : str
        ``"multiply_by"`` or ``"divide_by"``, as written in the file (dividing by 1,180 is exact
        where multiplying by its rounded inverse is not).
    rate : float
    unit : str
        E.g. ``"KRW per USD"``.
    as_of, source : str
        When the rate applies and where it comes from.
    """

    operation: str
    rate: float
    unit: str
    as_of: str
    source: str

    @property
    def stated(self) -> str:
        """The rate as a phrase, e.g. ``"divide by 1180.0 (KRW per USD)"``."""
        unit = f" ({self.unit})" if self.unit else ""
        return f"{self.operation.replace('_', ' ')} {self.rate}{unit}"

    def apply(self, numbers: pd.Series) -> pd.Series:
        """``numbers`` converted at the rate."""
        return numbers / self.rate if self.operation == "divide_by" else numbers * self.rate


@dataclass(frozen=True)
class ColumnRule:
    """Where one output column comes from and how it is converted (in this order).

    Attributes
    ----------
    target : str
        Output column name.
    source : str or None
        Source column (None when ``constant`` or ``concat`` is used).
    constant : object
        Value of every row when there is no source column.
    parts : tuple of str or None
        Source columns whose text is joined with ``separator`` (missing when any part is).
    separator : str
    zero_pad : int or None
        Left-pad digit codes with zeros to this width (HS codes lose leading zeros in spreadsheets).
    values : dict or None
        Code → value map; codes not in it become missing, or stay as they are with ``unknown: keep``.
    keep_unknown : bool
    fixed_rate : FixedRate or None
        Multiply the numeric value by a fixed rate (e.g. a currency conversion).
    date_format : str or None
        ``strptime`` format of the source dates; parsed dates are written as ISO dates.
    categorical : bool
        For extras: whether it is meant as an extra categorical model feature.
    history_entity : bool
        For extras: whether the pipeline should keep a point-in-time history per value.
    """

    target: str
    source: str | None = None
    constant: object = None
    parts: tuple[str, ...] | None = None
    separator: str = "|"
    zero_pad: int | None = None
    values: dict[str, str] | None = None
    keep_unknown: bool = False
    fixed_rate: FixedRate | None = None
    date_format: str | None = None
    categorical: bool = True
    history_entity: bool = False


@dataclass(frozen=True)
class SchemaMapping:
    """A loaded mapping file.

    Attributes
    ----------
    name : str
        File name, used in every error message (e.g. ``kcs.yaml``).
    columns : tuple of ColumnRule
        Rules producing canonical columns.
    extras : tuple of ColumnRule
        Rules producing further columns passed through unchanged by validation.
    ignore : tuple of str
        Source columns deliberately left out (e.g. a second label that must never be a feature).
    description : str
    """

    name: str
    columns: tuple[ColumnRule, ...]
    extras: tuple[ColumnRule, ...] = ()
    ignore: tuple[str, ...] = ()
    description: str = ""

    @property
    def rates(self) -> tuple[FixedRate, ...]:
        """Every fixed rate the mapping applies (for reports: the rate, its date and source)."""
        return tuple(rule.fixed_rate for rule in self.columns + self.extras if rule.fixed_rate is not None)

    @property
    def extra_categorical(self) -> tuple[str, ...]:
        """Names of the extra columns meant as categorical model features."""
        return tuple(rule.target for rule in self.extras if rule.categorical)

    @property
    def history_entities(self) -> tuple[str, ...]:
        """Names of the extra columns meant as history keys (like a party identifier)."""
        return tuple(rule.target for rule in self.extras if rule.history_entity)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Source columns the mapping reads, in rule order, without repeats."""
        sources = []
        for rule in self.columns + self.extras:
            sources.extend([rule.source] if rule.source is not None else list(rule.parts or ()))
        return tuple(dict.fromkeys(sources))


def packaged_mapping_path(name: str) -> Path:
    """Path of a mapping shipped with the package (``features/data/mappings/<name>.yaml``)."""
    return Path(str(resources.files(MAPPINGS_PACKAGE).joinpath(*MAPPINGS_FOLDER, f"{name}.yaml")))


def load_mapping(path_or_name: str | Path) -> SchemaMapping:
    """Read and check a mapping file.

    Parameters
    ----------
    path_or_name : str or Path
        A YAML file, or the name of a packaged mapping (``"kcs"``).

    Raises
    ------
    MappingError
        When the file is missing, is not YAML, or a rule is incomplete or unknown; the message
        starts with the file name.
    """
    path = Path(path_or_name)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = packaged_mapping_path(str(path_or_name))
    if not path.is_file():
        raise MappingError(f"{path_or_name}: mapping file not found (a .yaml file or a packaged mapping name such as 'kcs')")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise MappingError(f"{path.name}: not valid YAML ({exc})") from exc
    return parse_mapping(spec, path.name)


def parse_mapping(spec: object, name: str) -> SchemaMapping:
    """Build a :class:`SchemaMapping` from the parsed YAML of file ``name``.

    Raises
    ------
    MappingError
    """
    if not isinstance(spec, dict):
        raise MappingError(f"{name}: expected a mapping with 'columns', got {type(spec).__name__}")
    unknown = sorted(set(spec) - _TOP_KEYS)
    if unknown:
        raise MappingError(f"{name}: unknown key '{unknown[0]}' (known: {', '.join(sorted(_TOP_KEYS))})")
    columns = _parse_rules(spec.get("columns"), name, "columns")
    extras = _parse_rules(spec.get("extras") or {}, name, "extras")
    _check_targets(columns, extras, name)
    ignore = spec.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(c, str) for c in ignore):
        raise MappingError(f"{name}: 'ignore' must be a list of source column names")
    mapping = SchemaMapping(
        name=name, columns=columns, extras=extras, ignore=tuple(ignore), description=str(spec.get("description", "")).strip()
    )
    # An ignored column is one that must not reach the data (e.g. a second label): reading it
    # anyway is a mistake in the file, not a choice.
    read = [column for column in mapping.source_columns if column in mapping.ignore]
    if read:
        raise MappingError(f"{name}: source column '{read[0]}' is listed under 'ignore' but mapped")
    return mapping


def _parse_rules(section: object, name: str, section_name: str) -> tuple[ColumnRule, ...]:
    if not isinstance(section, dict) or (section_name == "columns" and not section):
        raise MappingError(f"{name}: '{section_name}' must map output column names to rules")
    return tuple(_parse_rule(str(target), rule, name) for target, rule in section.items())


def _parse_rule(target: str, rule: object, name: str) -> ColumnRule:
    where = f"{name}: column '{target}'"
    if not isinstance(rule, dict):
        raise MappingError(f"{where}: expected a rule such as {{from: SOURCE}}, got {rule!r}")
    unknown = sorted(set(rule) - _RULE_KEYS)
    if unknown:
        raise MappingError(f"{where}: unknown conversion '{unknown[0]}' (known: {', '.join(SOURCE_KEYS + CONVERSIONS)})")
    if sum(key in rule for key in SOURCE_KEYS) != 1:
        raise MappingError(f"{where}: needs exactly one of 'from' (a source column), 'constant' or 'concat'")
    for key in ("constant", "concat"):
        if key in rule and set(rule) - {key, "separator", *_FLAGS}:
            raise MappingError(f"{where}: '{key}' takes no conversion")
    if "separator" in rule and "concat" not in rule:
        raise MappingError(f"{where}: 'separator' needs 'concat'")
    if "unknown" in rule and rule["unknown"] not in ("empty", "keep"):
        raise MappingError(f"{where}: 'unknown' must be 'empty' or 'keep', got {rule['unknown']!r}")
    if "unknown" in rule and "values" not in rule:
        raise MappingError(f"{where}: 'unknown' needs 'values'")
    return ColumnRule(
        target=target,
        source=str(rule["from"]) if "from" in rule else None,
        constant=rule.get("constant"),
        parts=_parts(rule.get("concat"), where),
        separator=str(rule.get("separator", "|")),
        zero_pad=_zero_pad(rule.get("zero_pad"), where),
        values=_values(rule.get("values"), where),
        keep_unknown=rule.get("unknown") == "keep",
        fixed_rate=_fixed_rate(rule.get("fixed_rate"), where),
        date_format=_date_format(rule.get("date_format"), where),
        categorical=bool(rule.get("categorical", True)),
        history_entity=bool(rule.get("history_entity", False)),
    )


def _parts(value: object, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) and v for v in value):
        raise MappingError(f"{where}: 'concat' must list at least two source columns, got {value!r}")
    return tuple(value)


def _zero_pad(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MappingError(f"{where}: zero_pad must be a positive integer, got {value!r}")
    return value


def _values(value: object, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise MappingError(f"{where}: 'values' must map source codes to values")
    # YAML reads an unquoted 10 as an integer; source data is text, so compare as text.
    return {str(code): str(mapped) for code, mapped in value.items()}


def _fixed_rate(value: object, where: str) -> FixedRate | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise MappingError(f"{where}: 'fixed_rate' must be a mapping with multiply_by or divide_by, as_of, source")
    unknown = sorted(set(value) - _RATE_KEYS)
    if unknown:
        raise MappingError(f"{where}: fixed_rate has an unknown key '{unknown[0]}'")
    if ("multiply_by" in value) == ("divide_by" in value):
        raise MappingError(f"{where}: fixed_rate needs exactly one of 'multiply_by' or 'divide_by'")
    for key in ("as_of", "source"):
        if not str(value.get(key) or "").strip():
            raise MappingError(
                f"{where}: fixed_rate must state its '{key}' (a fixed rate is only meaningful with its date and source)"
            )
    operation = "multiply_by" if "multiply_by" in value else "divide_by"
    rate = value[operation]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not np.isfinite(rate) or rate <= 0:
        raise MappingError(f"{where}: fixed_rate {operation} must be a positive number, got {rate!r}")
    return FixedRate(
        operation=operation,
        rate=float(rate),
        unit=str(value.get("unit") or ""),
        as_of=str(value["as_of"]),
        source=str(value["source"]).strip(),
    )


def _date_format(value: object, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or "%" not in value:
        raise MappingError(f"{where}: date_format must be a strptime format such as '%Y-%m-%d', got {value!r}")
    return value


def _check_targets(columns: tuple[ColumnRule, ...], extras: tuple[ColumnRule, ...], name: str) -> None:
    for rule in columns:
        if rule.target not in CANONICAL_COLUMNS:
            raise MappingError(
                f"{name}: column '{rule.target}' is not a canonical column (put source-specific columns under 'extras')"
            )
        if rule.history_entity:
            raise MappingError(
                f"{name}: column '{rule.target}': history_entity is for extras (the canonical parties already have a history)"
            )
    for rule in extras:
        if rule.target in CANONICAL_COLUMNS:
            raise MappingError(f"{name}: extra column '{rule.target}' has a canonical name; map it under 'columns'")


def apply_mapping(raw: pd.DataFrame, mapping: SchemaMapping, source: str = "<frame>") -> pd.DataFrame:
    """Convert raw source rows to canonical columns plus the mapping's extra columns.

    Parameters
    ----------
    raw : DataFrame
        Source rows as read (text values, e.g. every CSV column read as a string).
    mapping : SchemaMapping
    source : str
        Name of the data file, used in error messages.

    Returns
    -------
    DataFrame
        Same index as ``raw``: the mapped canonical columns (unmapped ones are left for
        :func:`~features.schema.validate_manifest` to add as missing), then the extras. Values a
        conversion could not handle keep their original text, so that validation quarantines the
        row with a reason.

    Raises
    ------
    MappingError
        When a source column the mapping reads is not in ``raw``.
    """
    missing = [column for column in mapping.source_columns if column not in raw.columns]
    if missing:
        raise MappingError(
            f"{mapping.name}: source column '{missing[0]}' not in {source}"
            + (f" (nor {', '.join(repr(m) for m in missing[1:])})" if len(missing) > 1 else "")
        )
    output = {rule.target: _convert(raw, rule) for rule in mapping.columns + mapping.extras}
    return pd.DataFrame(output, index=raw.index)


def _convert(raw: pd.DataFrame, rule: ColumnRule) -> pd.Series:
    """Apply one rule's conversions in a fixed order: pad, map values, rate, date."""
    if rule.parts is not None:
        return _concat([_text(raw[part]) for part in rule.parts], rule.separator)
    if rule.source is None:
        dtype = "float64" if rule.target in FLOAT_COLUMNS + INT_COLUMNS else "string"
        return pd.Series(rule.constant, index=raw.index, dtype=dtype)
    values = _text(raw[rule.source])
    if rule.zero_pad is not None:
        values = _pad(values, rule.zero_pad)
    if rule.values is not None:
        mapped = values.map(rule.values).astype("string")
        values = mapped.fillna(values) if rule.keep_unknown else mapped
    if rule.fixed_rate is not None:
        return _scale(values, rule.fixed_rate)
    if rule.date_format is not None:
        return _parse_dates(values, rule.date_format)
    return values


def _text(values: pd.Series) -> pd.Series:
    """Stripped text with empty strings as missing (CSV readers differ on empty cells)."""
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def _concat(parts: list[pd.Series], separator: str) -> pd.Series:
    """Texts joined by ``separator``; missing when any part is (a partial key would merge unlike rows)."""
    joined = parts[0]
    for part in parts[1:]:
        joined = joined + separator + part
    return joined


def _pad(values: pd.Series, width: int) -> pd.Series:
    """Left-pad all-digit codes; other values are left for validation to report."""
    digits = values.str.fullmatch(r"\d+").fillna(False).astype(bool)
    return values.mask(digits, values.str.zfill(width))


def _scale(values: pd.Series, rate: FixedRate) -> pd.Series:
    """Numbers converted at ``rate``; text that is not a number is kept so that validation reports it."""
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    scaled = rate.apply(numbers)
    failed = values.notna() & numbers.isna()
    if not failed.any():
        return scaled
    return scaled.astype("object").mask(failed, values.astype("object"))


def _parse_dates(values: pd.Series, date_format: str) -> pd.Series:
    """Dates as ISO text; text that does not match the format is kept so that validation reports it."""
    parsed = pd.to_datetime(values, format=date_format, errors="coerce")
    iso = parsed.dt.strftime("%Y-%m-%d").astype("string")
    return iso.fillna(values)
