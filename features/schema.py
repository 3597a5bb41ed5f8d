"""The canonical manifest schema: column names, parsing, row rules and the quarantine.

Every command reads manifest lines through :func:`validate_manifest`. It parses the raw values
(strings from CSV, or typed values from Parquet), checks the row rules with a pandera schema and
splits the lines into valid typed rows and quarantined rows that keep their original values and a
readable reason per failed rule. Every input row ends in exactly one of the two.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from features.pandera_import import import_pandera_pandas

# The same module either way: mypy reads pandera's types through the import (a function returning
# a module is typed ModuleType, whose attributes are Any); at run time it is imported without
# pandas-on-Spark (see features.pandera_import).
if TYPE_CHECKING:
    import pandera.pandas as pa
else:
    pa = import_pandera_pandas()

TEXT_COLUMNS = (
    "declaration_id",
    "hs_code",
    "description",
    "quantity_unit",
    "package_type",
    "origin_country",
    "export_country",
    "port_of_loading",
    "port_of_discharge",
    "transshipment_ports",
    "transport_mode",
    "shipper_id",
    "consignee_id",
    "importer_id",
    "declarant_id",
    "found_commodity",
)
FLOAT_COLUMNS = ("gross_weight_kg", "net_weight_kg", "quantity", "declared_value_usd")
INT_COLUMNS = ("line_no", "packages", "containers", "inspected", "misdeclared")
DATE_COLUMNS = ("declared_at",)

CANONICAL_COLUMNS = (
    "declaration_id",
    "line_no",
    "declared_at",
    "hs_code",
    "description",
    "gross_weight_kg",
    "net_weight_kg",
    "quantity",
    "quantity_unit",
    "packages",
    "package_type",
    "containers",
    "declared_value_usd",
    "origin_country",
    "export_country",
    "port_of_loading",
    "port_of_discharge",
    "transshipment_ports",
    "transport_mode",
    "shipper_id",
    "consignee_id",
    "importer_id",
    "declarant_id",
    "inspected",
    "misdeclared",
    "found_commodity",
)
REQUIRED_COLUMNS = (
    "declaration_id",
    "declared_at",
    "hs_code",
    "gross_weight_kg",
    "declared_value_usd",
    "origin_country",
    "export_country",
)
LABEL_COLUMNS = ("inspected", "misdeclared", "found_commodity")
# Why a labelled line was inspected, as the triage export writes it: how it was picked and with what
# probability. Exploration checks are drawn at random, so their hit rate is the flow's base rate.
SELECTION_PROBABILITY, SELECTED_BY = "selection_probability", "selected_by"
SELECTION_COLUMNS = (SELECTION_PROBABILITY, SELECTED_BY)
EXPLORATION = "exploration"
KEY_COLUMNS = ("declaration_id", "line_no")
TRANSPORT_MODES = ("sea", "air", "road", "rail", "post")
FOUND_COMMODITIES = ("antimony", "gallium", "germanium", "rare_earth", "none")
REASON_COLUMN = "quarantine_reason"

_LOCODE = r"[A-Z]{2}[A-Z2-9]{3}"
_UTC_OFFSET = r"^(.*\d[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_UPPER_COLUMNS = ("origin_country", "export_country", "port_of_loading", "port_of_discharge", "transshipment_ports")


class ManifestFileError(ValueError):
    """A problem with a whole file (unreadable, unknown format, missing column, no rows)."""


@dataclass(frozen=True)
class ValidationResult:
    """Outcome of :func:`validate_manifest`.

    Attributes
    ----------
    valid : DataFrame
        Typed canonical columns (plus any extra input columns) of the rows that passed every rule.
    quarantine : DataFrame
        Original values of the rows that failed, with ``quarantine_reason`` (rules joined by "; ").
    """

    valid: pd.DataFrame
    quarantine: pd.DataFrame


def check_columns(columns: list[str] | pd.Index, source: str) -> None:
    """Raise :class:`ManifestFileError` naming ``source`` and the first column named twice, or the
    first missing required column."""
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise ManifestFileError(f"{source}: the header names column '{column}' twice")
        seen.add(column)
    missing = [column for column in REQUIRED_COLUMNS if column not in set(columns)]
    if missing:
        raise ManifestFileError(
            f"{source}: missing required column '{missing[0]}'" + (f" (and {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )


# CSV injection (OWASP): a spreadsheet runs a cell starting with one of these as a formula. CSV files
# meant for people (quarantine, audit and label exports) are written with such cells prefixed by an
# apostrophe, which spreadsheets show as text; plain numbers ("-3.5") are left as they are. Reading
# removes the prefix again, so a neutralised file reads back to the same values.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_NEUTRALISED = tuple(f"'{c}" for c in (*FORMULA_STARTS, "'"))


def neutralise_cell(value: object) -> object:
    """``value`` as a spreadsheet shows it as text: an apostrophe before a formula start.

    A value already starting with an apostrophe followed by a formula start (or another
    apostrophe) gets one more, so that :func:`restore_cell` gives back exactly ``value``.
    """
    if not isinstance(value, str) or not value:
        return value
    if (value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.match(value)) or value.startswith(_NEUTRALISED):
        return "'" + value
    return value


def restore_cell(value: object) -> object:
    """The value :func:`neutralise_cell` was given."""
    return value[1:] if isinstance(value, str) and value.startswith(_NEUTRALISED) else value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell neutralised (numbers and dates unchanged)."""
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_object_dtype(out[column]) or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(neutralise_cell, na_action="ignore")
    return out


def _as_text(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    # One cheap test on every value; the full prefix test only when some value starts with a quote.
    if text.str.startswith("'").any():
        neutralised = text.str.startswith(_NEUTRALISED).fillna(False)
        text = text.where(~neutralised, text.str.slice(1))
    return text.mask(text == "")


def _replace_where(text: pd.Series, pattern: str, replacement: str, candidates: str) -> pd.Series:
    """``text.str.replace(pattern, replacement, regex=True)``, run only on the values matching the
    regular expression ``candidates`` (cheap, in Arrow), which every value ``pattern`` matches does.

    Python's ``re`` runs value by value; most values hold nothing to replace.
    """
    rows = text.str.contains(candidates, regex=True).fillna(False).to_numpy(dtype=bool)
    if not rows.any():
        return text
    replaced = text.copy()
    replaced[rows] = text[rows].str.replace(pattern, replacement, regex=True)
    return replaced


def _parse_column(raw: pd.Series, column: str, text: pd.Series | None = None) -> pd.Series:
    """The typed values of one raw column; ``text`` is ``_as_text(raw)`` when the caller has it."""
    if column in DATE_COLUMNS:
        if pd.api.types.is_datetime64_any_dtype(raw):
            return pd.to_datetime(raw, errors="coerce").dt.tz_localize(None)
        # Keep the local time written on each line: values with different UTC offsets (or with and
        # without one) cannot share a timezone, and pandas would reject the whole column. An offset
        # follows a time, so only values with a colon can hold one.
        text = _replace_where(_as_text(raw), _UTC_OFFSET, r"\1", ":")
        return pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)
    if column in FLOAT_COLUMNS or column in INT_COLUMNS:
        numbers = raw if pd.api.types.is_numeric_dtype(raw) else _as_text(raw)
        numbers = pd.to_numeric(numbers, errors="coerce").astype("float64")
        return numbers.where(np.isfinite(numbers))  # "inf" is no weight or value: unparseable
    text = _as_text(raw) if text is None else text
    if column == "hs_code":
        return _replace_where(text, r"[.\s]", "", "[^0-9A-Za-z]")
    if column in _UPPER_COLUMNS:
        return _replace_where(text.str.upper(), r"\s", "", "[^0-9A-Za-z;]")
    if column in ("transport_mode", "found_commodity"):
        return text.str.lower()
    return text


def parse_manifest(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series, set[tuple[Hashable, str]]]:
    """Parse raw manifest values into typed canonical columns.

    Parameters
    ----------
    raw : DataFrame
        Manifest lines as read (strings or typed values); must hold the required columns.

    Returns
    -------
    typed : DataFrame
        Every canonical column (absent optional ones as missing, ``line_no`` defaulting to 1),
        followed by the extra input columns unchanged.
    parse_errors : Series of str
        Per row, the values that could not be parsed ("" when none).
    unparsed : set of (index, column)
        Where a present value could not be parsed.
    """
    typed: dict[str, pd.Series] = {}
    errors = pd.Series("", index=raw.index, dtype="object")
    unparsed: set[tuple[Hashable, str]] = set()
    texts = _texts_of(raw, [c for c in CANONICAL_COLUMNS if c in TEXT_COLUMNS and c in raw.columns])
    for column in CANONICAL_COLUMNS:
        if column not in raw.columns:
            typed[column] = _missing_column(column, len(raw), raw.index)
            continue
        parsed = _parse_column(raw[column], column, texts.get(column))
        missing = parsed.isna().to_numpy()
        if column in FLOAT_COLUMNS + INT_COLUMNS + DATE_COLUMNS and missing.any():
            # A value present in the file (not blank) that gave no number or date: only the rows
            # that parsed to missing are looked at (text columns cannot fail to parse).
            candidates = raw[column][missing]
            present = (candidates.notna() & (candidates.astype("string").str.strip() != "")).to_numpy()
            kind = "date" if column in DATE_COLUMNS else "number"
            for index, value in candidates[present].items():
                # The cast: pandas-stubs type `series.loc[label] = value` for str labels only, and
                # items() gives a label as a Hashable; pandas takes any label of the index there.
                errors.loc[cast(str, index)] += f"{column}: unparseable {kind} '{value}'; "
                unparsed.add((index, column))
        typed[column] = parsed
    typed["line_no"] = typed["line_no"].fillna(1.0)
    frame = pd.DataFrame({column: values.array for column, values in typed.items()}, index=raw.index)
    extras = [column for column in raw.columns if column not in CANONICAL_COLUMNS]
    frame = pd.concat([frame, raw[extras]], axis=1) if extras else frame
    return frame, errors, unparsed


def _texts_of(raw: pd.DataFrame, columns: list[str]) -> dict[str, pd.Series]:
    """``_as_text`` of each of ``columns``, computed once over all of them end to end.

    Each text operation has a fixed cost of about a tenth of a millisecond: for a request of 100
    lines, sixteen columns cost more one by one than their values do together.
    """
    if not columns or len(raw) == 0:
        return {}
    stacked = _as_text(pd.concat([raw[column].astype("string") for column in columns], ignore_index=True))
    return {
        column: pd.Series(stacked.array[i * len(raw) : (i + 1) * len(raw)], index=raw.index, name=column)
        for i, column in enumerate(columns)
    }


def _missing_column(column: str, n_rows: int, index: pd.Index) -> pd.Series:
    if column in DATE_COLUMNS:
        return pd.Series(pd.NaT, index=index, dtype="datetime64[ns]")
    if column in FLOAT_COLUMNS or column in INT_COLUMNS:
        return pd.Series(np.nan, index=index, dtype="float64")
    return pd.Series(pd.NA, index=index, dtype="string")


def _whole(series: pd.Series) -> pd.Series:
    return series.isna() | (series == series.round())


# Whole numbers are read as float64, exact up to 2**53; a larger "count" is not one (and would not
# fit the integer column it becomes).
MAX_WHOLE = 2**53


@functools.cache  # built once per process: rebuilding it cost every validated chunk a few ms
def _build_schema() -> pa.DataFrameSchema:
    # No dtypes here: parse_manifest gives every column its type, which _check_parsed_types checks
    # (pandera's dtype check was a third of its time on a 100-line request).
    text = pa.Column(None, nullable=True, required=True)
    columns = {name: text for name in TEXT_COLUMNS}
    columns.update(
        {
            "declaration_id": pa.Column(None, nullable=False, checks=pa.Check.str_length(min_value=1)),
            "declared_at": pa.Column(None, nullable=False),
            "hs_code": pa.Column(None, nullable=False, checks=pa.Check.str_matches(r"^\d{6,10}$")),
            "origin_country": pa.Column(None, nullable=False, checks=pa.Check.str_matches(r"^[A-Z]{2}$")),
            "export_country": pa.Column(None, nullable=False, checks=pa.Check.str_matches(r"^[A-Z]{2}$")),
            "port_of_loading": pa.Column(None, nullable=True, checks=pa.Check.str_matches(f"^{_LOCODE}$")),
            "port_of_discharge": pa.Column(None, nullable=True, checks=pa.Check.str_matches(f"^{_LOCODE}$")),
            "transshipment_ports": pa.Column(None, nullable=True, checks=pa.Check.str_matches(f"^{_LOCODE}(;{_LOCODE})*$")),
            "transport_mode": pa.Column(None, nullable=True, checks=pa.Check.isin(TRANSPORT_MODES)),
            "found_commodity": pa.Column(None, nullable=True, checks=pa.Check.isin(FOUND_COMMODITIES)),
            "gross_weight_kg": pa.Column(None, nullable=False, checks=pa.Check.gt(0)),
            "net_weight_kg": pa.Column(None, nullable=True, checks=pa.Check.gt(0)),
            "quantity": pa.Column(None, nullable=True, checks=pa.Check.gt(0)),
            "declared_value_usd": pa.Column(None, nullable=False, checks=pa.Check.ge(0)),
            "line_no": pa.Column(
                None, nullable=False, checks=[pa.Check.ge(1), pa.Check.le(MAX_WHOLE), pa.Check(_whole, name="whole number")]
            ),
            "packages": pa.Column(
                None, nullable=True, checks=[pa.Check.ge(1), pa.Check.le(MAX_WHOLE), pa.Check(_whole, name="whole number")]
            ),
            "containers": pa.Column(
                None, nullable=True, checks=[pa.Check.ge(0), pa.Check.le(MAX_WHOLE), pa.Check(_whole, name="whole number")]
            ),
            "inspected": pa.Column(None, nullable=True, checks=pa.Check.isin([0, 1])),
            "misdeclared": pa.Column(None, nullable=True, checks=pa.Check.isin([0, 1])),
        }
    )
    row_checks = [
        pa.Check(lambda df: ~(df["net_weight_kg"] > df["gross_weight_kg"]), name="net_weight_kg <= gross_weight_kg"),
        pa.Check(
            lambda df: ~((df["misdeclared"].notna()) & (df["inspected"] != 1)),
            name="misdeclared is known only for inspected lines",
        ),
    ]
    return pa.DataFrameSchema(columns, checks=row_checks, strict=False, coerce=False)


_ROW_CHECK_NAMES = ("net_weight_kg <= gross_weight_kg", "misdeclared is known only for inspected lines")
_RULE_TEXT = {
    "not_nullable": "is missing",
    "greater_than(0)": "must be > 0",
    "greater_than_or_equal_to(0)": "must be >= 0",
    "greater_than_or_equal_to(1)": "must be >= 1",
    "str_length(1, None)": "must not be empty",
    "whole number": "must be a whole number",
    f"less_than_or_equal_to({MAX_WHOLE})": f"must be at most {MAX_WHOLE:,}",
}


def _rule_phrase(column: str | None, check: str, value: object) -> str:
    check = str(check)
    if column is None or (isinstance(column, float) and np.isnan(column)):
        return f"{check} does not hold"
    if check.startswith("str_matches"):
        pattern = {
            "hs_code": "6-10 digits",
            "origin_country": "a two-letter country code",
            "export_country": "a two-letter country code",
        }.get(column, "UN/LOCODEs (5 characters)")
        return f"{column} must be {pattern}, got '{value}'"
    if check.startswith("isin"):
        return f"{column} has an unknown value '{value}'"
    phrase = _RULE_TEXT.get(check, check)
    return f"{column} {phrase}" + ("" if check == "not_nullable" else f", got {value}")


_RULE_VALUE = re.compile(r"(, got .*| '[^']*')$")


def quarantine_rules(reason: str) -> list[str]:
    """The rules a quarantine reason names, without the offending values ('hs_code must be 6-10 digits').

    For counting reasons over a file: the values differ line by line, the rules do not.
    """
    return [_RULE_VALUE.sub("", part.strip()) for part in str(reason).split(";") if part.strip()]


def _check_parsed_types(typed: pd.DataFrame) -> None:
    """The types :func:`parse_manifest` gives: text as pandas strings, numbers as float64 (whole
    numbers too, until :func:`_finalise_types`), dates as naive datetimes.

    Raises
    ------
    TypeError
        A column of another type: a fault of the parser, not of the file.
    """
    for column in CANONICAL_COLUMNS:
        dtype = typed[column].dtype
        if column in DATE_COLUMNS:
            expected = pd.api.types.is_datetime64_dtype(dtype)
        elif column in FLOAT_COLUMNS or column in INT_COLUMNS:
            expected = dtype == np.float64
        else:
            expected = isinstance(dtype, pd.StringDtype)
        if not expected:
            raise TypeError(f"parse_manifest gave column {column!r} the type {dtype}")


def _schema_reasons(typed: pd.DataFrame, schema: pa.DataFrameSchema, unparsed: set[tuple[Hashable, str]]) -> pd.Series:
    """One reason per failed rule and row; a value that did not parse is not reported again as missing."""
    _check_parsed_types(typed)
    reasons = pd.Series("", index=typed.index, dtype="object")
    try:
        schema.validate(typed, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases.dropna(subset=["index"])
        wide = cases["check"].isin(_ROW_CHECK_NAMES)
        cases.loc[wide, "column"] = None
        cases = cases.drop_duplicates(subset=["index", "column", "check"])
        for index, column, check, value in cases[["index", "column", "check", "failure_case"]].itertuples(index=False):
            if check == "not_nullable" and (index, column) in unparsed:
                continue
            reasons.loc[index] += _rule_phrase(column, check, value) + "; "
    return reasons


class KeyHashes:
    """64-bit hashes of line keys met so far in a file: a few sorted arrays, not a set of Python ints.

    A file of 10M lines holds 80 MB of hashes here (a ``set`` of them took about 700 MB). Arrays are
    merged when the newest is at least half the size of the one before, so there are O(log n) of
    them and each hash is re-sorted O(log n) times.
    """

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(block) for block in self.blocks)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """Whether each hash was added before."""
        found = np.zeros(len(hashes), dtype=bool)
        for block in self.blocks:
            position = np.minimum(np.searchsorted(block, hashes), len(block) - 1)
            found |= block[position] == hashes
        return found

    def add(self, hashes: np.ndarray) -> None:
        """Remember ``hashes`` (each once)."""
        hashes = np.unique(np.asarray(hashes, dtype="uint64"))
        hashes = hashes[~self.contains(hashes)]
        if len(hashes) == 0:
            return
        self.blocks.append(hashes)
        while len(self.blocks) > 1 and len(self.blocks[-2]) <= 2 * len(self.blocks[-1]):
            last = self.blocks.pop()
            self.blocks[-1] = np.sort(np.concatenate([self.blocks[-1], last]))


def duplicate_key_mask(typed: pd.DataFrame, seen: KeyHashes | None = None) -> pd.Series:
    """Flag rows whose (declaration_id, line_no) appeared earlier in this frame or in ``seen``.

    ``seen`` holds the hashes of keys met in earlier chunks of the same file and is updated in
    place, so that a streamed file is checked for duplicates across chunks too.
    """
    keys = pd.util.hash_pandas_object(typed[list(KEY_COLUMNS)], index=False).to_numpy()
    duplicated = pd.Series(pd.Series(keys).duplicated().to_numpy(), index=typed.index)
    if seen is not None:
        duplicated |= pd.Series(seen.contains(keys), index=typed.index)
        seen.add(keys)
    return duplicated


def validate_manifest(raw: pd.DataFrame, source: str = "<frame>", seen_keys: KeyHashes | None = None) -> ValidationResult:
    """Split manifest lines into valid typed rows and quarantined rows with reasons.

    Parameters
    ----------
    raw : DataFrame
        Manifest lines as read from a file (any subset of columns holding the required ones).
    source : str
        Name of the file, used in file-level error messages.
    seen_keys : KeyHashes, optional
        Hashes of (declaration_id, line_no) keys from earlier chunks of the same file; updated.

    Returns
    -------
    ValidationResult

    Raises
    ------
    ManifestFileError
        When a required column is missing.
    """
    check_columns(raw.columns, source)
    typed, parse_errors, unparsed = parse_manifest(raw)
    reasons = parse_errors + _schema_reasons(typed, _build_schema(), unparsed)
    clean_keys = reasons == ""
    duplicated = pd.Series(False, index=typed.index)
    duplicated[clean_keys] = duplicate_key_mask(typed[clean_keys], seen_keys)
    reasons = reasons.where(~duplicated, reasons + "duplicate (declaration_id, line_no); ")
    bad = reasons != ""
    valid = _finalise_types(typed[~bad])
    quarantine = raw[bad].copy()
    quarantine[REASON_COLUMN] = reasons[bad].str.rstrip("; ").to_numpy()
    return ValidationResult(valid=valid, quarantine=quarantine)


def _finalise_types(typed: pd.DataFrame) -> pd.DataFrame:
    typed = typed.copy()
    for column in INT_COLUMNS:
        typed[column] = typed[column].astype("Int64")
    return typed
