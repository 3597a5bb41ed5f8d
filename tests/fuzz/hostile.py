"""Hostile manifest files for the fuzzer (``test_hostile_files.py``): a few valid lines, then what messy exports do to them.

:func:`hostile_files` is a hypothesis strategy of :class:`HostileFile`: the bytes of a CSV (plain or
gzip) or Parquet file, its name, and how many data rows were written into it (the rows every
command must account for). Mutations, one to three per file, cover what issue 12 lists: encodings
(latin-1, UTF-16, byte-order mark), quoted newlines and delimiters, NUL bytes, duplicate, missing and
unknown headers, very long fields, numbers with thousands separators or exponents, NaN / inf /
empty strings, dates in other formats, mixed line endings, ragged rows, truncated gzip, and Parquet
with other physical types or nested columns.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from features.schema import CANONICAL_COLUMNS, LABEL_COLUMNS

FUZZ_EXAMPLES = int(os.environ.get("MISDECLARE_FUZZ_N", "12"))  # make fuzz N=1000 sets it
DECLARED = [c for c in CANONICAL_COLUMNS if c not in LABEL_COLUMNS]
NUMERIC = ["gross_weight_kg", "net_weight_kg", "quantity", "declared_value_usd", "packages", "containers", "line_no"]
ODD_NUMBERS = [
    "1,234.5",
    "1.234,5",
    "1e3",
    "2E-2",
    "NaN",
    "nan",
    "inf",
    "-inf",
    "",
    " ",
    "12345678901234567890123",
    "0x1F",
    "1_000",
    "€12",
    "12kg",
    "−5",
    "+7",
    "1e400",
]
ODD_DATES = [
    "15/01/2025",
    "01/15/2025",
    "2025-01-15T10:00:00+05:00",
    "2025-01-15 10:00",
    "Jan 15 2025",
    "20250115",
    "2025-13-40",
    "",
    "0000-00-00",
    "2025-01-15Z",
    "1/2/25",
]
ODD_TEXT = [
    '=HYPERLINK("http://x","open")',
    "a,b",
    "line\nbreak",
    'quote"inside',
    "tab\there",
    "x\x00y",
    "é ü ß 中文",
    "\ufeffbom",
    "   ",
    "NULL",
    "None",
    "-",
    "@SUM(A1)",
]


ROW_MARKER = "fuzz_row"


@dataclass(frozen=True)
class HostileFile:
    """A file to feed the commands: its name, its bytes, and the data rows written into it."""

    name: str
    content: bytes
    rows: int
    mutations: tuple[str, ...]


def base_lines(n: int, seed: int) -> pd.DataFrame:
    """``n`` valid declared lines as text, from the generator (labelled, so ``train`` can read them)."""
    from training.synthetic import generate_manifest

    lines = generate_manifest(n_rows=max(n, 40), seed=seed, start="2025-01-01", end="2025-03-31").head(n)
    return lines[list(CANONICAL_COLUMNS)].astype("string").fillna("")


SCORE_VALUES = {
    "risk_score": ["0.5", "NaN", "2", "-1", "", "1e-300", "high"],
    "channel": ["red", "purple", "", "RED"],
    "reasons": ["", "a | b", "=cmd|' /C calc'!A0"],
    "suspected_commodity": ["antimony", "gold", ""],
    "model_version": ["m1", "", "x" * 100],
}


@st.composite
def hostile_files(draw, scored: bool = False) -> HostileFile:
    """A hostile manifest file; ``scored=True``: a hostile scored batch (what ``triage load`` reads)."""
    n = draw(st.integers(1, 25))
    frame = base_lines(n, draw(st.integers(0, 3)))
    frame = frame.assign(declaration_id=[f"F{i:05d}" for i in range(n)])  # one key per row written
    if scored:
        frame = frame.assign(risk_score="0.1", channel="green", reasons="", suspected_commodity="none", model_version="m1")
    kind = draw(st.sampled_from(["csv", "csv", "csv", "gz", "parquet"]))
    choices = _CELL_MUTATIONS + _FRAME_MUTATIONS + (["odd-score"] if scored else [])
    mutations = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3))
    for mutation in mutations:
        frame = _mutate(draw, mutation, frame)
    frame[ROW_MARKER] = [str(i) for i in range(len(frame))]  # an extra column: carried to output and quarantine
    if kind == "parquet":
        extra = draw(st.sampled_from(["none", "typed", "nested", "categorical"]))
        return HostileFile("hostile.parquet", _parquet(frame, extra), len(frame), (*mutations, f"parquet:{extra}"))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16", "cp1252"]))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    content = _csv_bytes(frame, encoding, ending, draw(st.booleans()))
    steps = (*mutations, f"encoding:{encoding}", f"ending:{ending!r}")
    if kind == "gz":
        content = gzip.compress(content)
        if draw(st.booleans()):
            content = content[: draw(st.integers(1, max(1, len(content) - 1)))]
            steps = (*steps, "truncated-gzip")
        return HostileFile("hostile.csv.gz", content, len(frame), steps)
    if draw(st.integers(0, 9)) == 0:
        content = content + b"\n" + b",".join([b"extra"] * (len(frame.columns) + 2))  # a ragged row
        return HostileFile("hostile.csv", content, len(frame) + 1, (*steps, "ragged-row"))
    return HostileFile("hostile.csv", content, len(frame), steps)


_CELL_MUTATIONS = ["odd-number", "odd-date", "odd-text", "long-field", "empty-cell"]
_FRAME_MUTATIONS = [
    "duplicate-header",
    "missing-header",
    "unknown-column",
    "shuffled-columns",
    "duplicate-row",
    "renamed-header-case",
]


def _set(frame: pd.DataFrame, row: int, column: str, value: str) -> None:
    """One cell, in place; nothing when an earlier mutation dropped or renamed the column."""
    if column in frame.columns:
        frame.iloc[row, frame.columns.get_loc(column)] = value


def _mutate(draw, mutation: str, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    row = draw(st.integers(0, len(frame) - 1))
    if mutation == "odd-number":
        column = draw(st.sampled_from(NUMERIC))
        _set(frame, row, column, draw(st.sampled_from(ODD_NUMBERS)))
    elif mutation == "odd-date":
        _set(frame, row, "declared_at", draw(st.sampled_from(ODD_DATES)))
    elif mutation == "odd-text":
        column = draw(
            st.sampled_from(
                [
                    "description",
                    "shipper_id",
                    "hs_code",
                    "port_of_discharge",
                    "declaration_id",
                    "origin_country",
                    "transport_mode",
                ]
            )
        )
        _set(frame, row, column, draw(st.sampled_from(ODD_TEXT)))
    elif mutation == "long-field":
        column = draw(st.sampled_from(["description", "shipper_id", "declaration_id", "gross_weight_kg"]))
        _set(frame, row, column, "9" * draw(st.sampled_from([300, 5_000, 200_000])))
    elif mutation == "empty-cell":
        column = draw(st.sampled_from(list(frame.columns)))
        _set(frame, row, column, "")
    elif mutation == "duplicate-header":
        column = draw(st.sampled_from(list(frame.columns)))
        frame = pd.concat([frame, frame[[column]]], axis=1)
    elif mutation == "missing-header":
        frame = frame.drop(columns=[draw(st.sampled_from(list(frame.columns)))])
    elif mutation == "unknown-column":
        frame["remarks"] = draw(st.sampled_from(ODD_TEXT))
    elif mutation == "shuffled-columns":
        frame = frame[draw(st.permutations(list(frame.columns)))]
    elif mutation == "duplicate-row":
        frame = pd.concat([frame, frame.iloc[[row]]], ignore_index=True)
    elif mutation == "odd-score":
        column = draw(st.sampled_from(sorted(SCORE_VALUES)))
        _set(frame, row, column, draw(st.sampled_from(SCORE_VALUES[column])))
    elif mutation == "renamed-header-case":
        column = draw(st.sampled_from(list(frame.columns)))
        frame = frame.rename(columns={column: column.upper()})
    return frame


def _csv_bytes(frame: pd.DataFrame, encoding: str, ending: str, quote_all: bool) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL)
    writer.writerow(list(frame.columns))
    writer.writerows(frame.itertuples(index=False))
    text = buffer.getvalue()
    if ending == "mixed":
        records = text.split("\n")
        text = "".join(r + ("\r\n" if i % 2 else "\n") for i, r in enumerate(records[:-1]))
    elif ending != "\n":
        text = text.replace("\n", ending)  # also inside quoted fields: what some exporters do
    return text.encode(encoding, errors="replace")


def _parquet(frame: pd.DataFrame, extra: str) -> bytes:
    columns = {}
    for name in dict.fromkeys(frame.columns):  # a duplicated name is written once (Arrow keeps the first)
        values = frame[name]
        values = values.iloc[:, 0] if isinstance(values, pd.DataFrame) else values
        if extra == "typed" and name in NUMERIC:
            columns[name] = pa.array(pd.to_numeric(values, errors="coerce"), type=pa.float64())
        elif extra == "typed" and name == "declared_at":
            # Hostile text dates come in many formats (format="mixed" parses each as it is); the
            # UTC instants go to Arrow as numpy values: pyarrow reads a tz-aware Series through its
            # deprecated ``.values`` (a Pandas4Warning per file).
            instants = pd.to_datetime(values, errors="coerce", utc=True, format="mixed").dt.tz_convert(None)
            columns[name] = pa.array(instants.to_numpy(), type=pa.timestamp("us", tz="UTC"), from_pandas=True)
        elif extra == "categorical" and name in ("origin_country", "hs_code"):
            columns[name] = pa.array(values.tolist()).dictionary_encode()
        else:
            columns[name] = pa.array(values.tolist(), type=pa.string())
    if extra == "nested":
        columns["containers_list"] = pa.array([[1, 2]] * len(frame), type=pa.list_(pa.int64()))
        columns["parties"] = pa.array([{"shipper": "S", "n": 1}] * len(frame))
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()
