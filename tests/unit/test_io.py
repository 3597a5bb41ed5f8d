"""features/io.py: file-level errors, chunked reading, atomic writing."""

from __future__ import annotations

import gzip
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.io import AtomicTableWriter, file_format, iter_manifest_chunks, read_manifest, write_table
from features.schema import REQUIRED_COLUMNS, ManifestFileError, validate_manifest

HEADER = ",".join(REQUIRED_COLUMNS)
ROW = "D1,2025-01-15,790111,1000,2940,CN,TH"


def write_text(path, text: str, encoding: str = "utf-8"):
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        pytest.param("absent.csv", None, "file not found", id="missing-csv"),
        pytest.param("absent.parquet", None, "file not found", id="missing-parquet"),
        pytest.param("manifest.xlsx", b"PK\x03\x04", "unknown format (use .csv, .csv.gz or .parquet)", id="unknown-extension"),
        pytest.param("manifest", b"x", "unknown format (use .csv, .csv.gz or .parquet)", id="no-extension"),
        pytest.param("corrupt.parquet", b"PAR1 this is not a parquet file", "cannot read parquet:", id="corrupt-parquet"),
        pytest.param("corrupt.csv.gz", b"not gzip at all", "cannot read csv:", id="corrupt-gzip"),
        pytest.param(
            "truncated.csv.gz",
            gzip.compress(f"{HEADER}\n{ROW}\n".encode())[:2],
            "cannot read csv: Compressed file ended before the end-of-stream marker was reached",
            id="truncated-gzip",
        ),  # an EOFError, which the CLI took for "Aborted."
        pytest.param(
            "latin1.csv",
            (HEADER + "\nD1,2025-01-15,790111,1000,2940,CN,TH,\n").encode()[:-1] + b"\xe9\n",
            "cannot read csv:",
            id="invalid-utf8",
        ),
        pytest.param("ragged.csv", f"{HEADER}\n{ROW}\n{ROW},extra\n".encode(), "cannot read csv:", id="ragged-row"),
        pytest.param(
            "no_hs.csv",
            f"{HEADER.replace(',hs_code', '')}\nD1,2025-01-15,1000,2940,CN,TH\n".encode(),
            "missing required column 'hs_code'",
            id="csv-missing-column",
        ),
        pytest.param("header_only.csv", f"{HEADER}\n".encode(), "no rows", id="header-only-csv"),
        pytest.param("header_only.csv.gz", gzip.compress(f"{HEADER}\n".encode()), "no rows", id="header-only-gzip"),
        pytest.param("empty.csv", b"", "missing required column 'declaration_id'", id="zero-byte-csv"),
        pytest.param(
            "twice.csv",
            f"{HEADER},hs_code\n{ROW},790112\n".encode(),
            "the header names column 'hs_code' twice",
            id="csv-column-twice",
        ),
    ],
)
def test_file_level_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(ManifestFileError) as error:
        list(iter_manifest_chunks(path))

    text = str(error.value)
    assert text.startswith(f"{path}: ")
    assert message in text
    assert "\n" not in text


def test_parquet_missing_a_required_column_names_file_and_column(tmp_path):
    path = tmp_path / "no_value.parquet"
    pd.DataFrame({c: ["x"] for c in REQUIRED_COLUMNS if c != "declared_value_usd"}).to_parquet(path)

    with pytest.raises(ManifestFileError, match=r"no_value\.parquet: missing required column 'declared_value_usd'$"):
        list(iter_manifest_chunks(path))


def test_parquet_with_a_nested_column_is_a_file_error_naming_it(tmp_path):
    table = pa.table(
        {
            "declaration_id": ["D1"],
            "declared_at": ["2025-01-15"],
            "hs_code": ["790111"],
            "gross_weight_kg": ["1000"],
            "declared_value_usd": ["2940"],
            "origin_country": ["CN"],
            "export_country": ["TH"],
            "containers_list": pa.array([[1, 2]], type=pa.list_(pa.int64())),
        }
    )
    pq.write_table(table, tmp_path / "nested.parquet")
    with pytest.raises(
        ManifestFileError,
        match=r"nested\.parquet: column 'containers_list' holds nested values "
        r"\(list<element: int64>\); manifest columns are flat$",
    ):
        list(iter_manifest_chunks(tmp_path / "nested.parquet"))


def test_parquet_without_rows_is_a_file_error(tmp_path):
    path = tmp_path / "empty.parquet"
    pd.DataFrame({c: pd.Series(dtype="string") for c in REQUIRED_COLUMNS}).to_parquet(path)

    with pytest.raises(ManifestFileError, match=r"empty\.parquet: no rows$"):
        read_manifest(path)


@pytest.mark.parametrize("chunk_rows", [0, -5])
def test_chunk_rows_must_be_positive(tmp_path, chunk_rows):
    path = write_text(tmp_path / "m.csv", f"{HEADER}\n{ROW}\n")

    with pytest.raises(ValueError, match=f"chunk_rows must be > 0, got {chunk_rows}"):
        list(iter_manifest_chunks(path, chunk_rows))


@pytest.mark.parametrize(
    ("name", "expected"), [("a.csv", "csv"), ("A.CSV", "csv"), ("a.csv.gz", "csv"), ("a.parquet", "parquet"), ("a.pq", "parquet")]
)
def test_file_format_follows_the_extension(name, expected):
    assert file_format(name) == expected


def test_csv_values_are_read_as_text(tmp_path):
    """Leading zeros of HS chapters 01-09 and identifiers survive; the schema parses numbers itself."""
    path = write_text(tmp_path / "m.csv", f"{HEADER},line_no\nD007,2025-01-15,030617,1000.50,0,CN,TH,01\n")

    frame = read_manifest(path)

    assert frame.iloc[0].tolist() == ["D007", "2025-01-15", "030617", "1000.50", "0", "CN", "TH", "01"]
    assert validate_manifest(frame).valid["hs_code"].tolist() == ["030617"]


def test_csv_with_byte_order_mark_is_read(tmp_path):
    path = write_text(tmp_path / "excel.csv", f"{HEADER}\n{ROW}\n", encoding="utf-8-sig")

    frame = read_manifest(path)

    assert list(frame.columns) == list(REQUIRED_COLUMNS)
    assert frame["declaration_id"].tolist() == ["D1"]


def test_gzipped_csv_is_read(tmp_path):
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress(f"{HEADER}\n{ROW}\n{ROW.replace('D1', 'D2')}\n".encode()))

    assert read_manifest(path)["declaration_id"].tolist() == ["D1", "D2"]


def _numbered_frame(n_rows: int, description_width: int = 1) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "declaration_id": [f"D{i:06d}" for i in range(n_rows)],
            "declared_at": "2025-01-15",
            "hs_code": "790111",
            "gross_weight_kg": [float(i + 1) for i in range(n_rows)],
            "declared_value_usd": 10.0,
            "origin_country": "CN",
            "export_country": "TH",
            "description": "x" * description_width,
        }
    )


def test_parquet_is_read_in_chunks_with_a_continuous_index(tmp_path):
    path = tmp_path / "m.parquet"
    _numbered_frame(2_500).to_parquet(path)

    chunks = list(iter_manifest_chunks(path, chunk_rows=1_000))

    assert [len(c) for c in chunks] == [1_000, 1_000, 500]
    assert [(c.index[0], c.index[-1]) for c in chunks] == [(0, 999), (1_000, 1_999), (2_000, 2_499)]
    whole = pd.concat(chunks)
    assert whole.index.equals(pd.RangeIndex(2_500))
    assert whole["declaration_id"].tolist() == [f"D{i:06d}" for i in range(2_500)]


def test_csv_is_read_in_chunks_with_a_continuous_index(tmp_path):
    """CSV blocks are at least 1 MiB: a ~3 MB file arrives in several chunks."""
    path = tmp_path / "m.csv"
    _numbered_frame(6_000, description_width=500).to_csv(path, index=False)

    chunks = list(iter_manifest_chunks(path, chunk_rows=1_000))

    assert len(chunks) >= 2
    whole = pd.concat(chunks)
    assert whole.index.equals(pd.RangeIndex(6_000))
    assert whole["declaration_id"].tolist() == [f"D{i:06d}" for i in range(6_000)]
    assert whole["gross_weight_kg"].iloc[-1] == "6000.0"
    starts = [c.index[0] for c in chunks]
    assert starts == [0] + list(pd.Series([len(c) for c in chunks]).cumsum()[:-1])


# ----------------------------------------------------------------------------- writing


def _dated_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "declaration_id": pd.array(["A", "B"], dtype="string"),
            "declared_at": pd.to_datetime(["2025-01-15", "2025-02-01"]),
            "packages": pd.array([20, None], dtype="Int64"),
            "value": [1.5, 2.0],
        }
    )


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
@pytest.mark.parametrize("writes", [0, 1, 2])
def test_exception_inside_the_block_leaves_no_file(tmp_path, name, writes):
    target = tmp_path / name

    with pytest.raises(RuntimeError, match="disk on fire"):
        with AtomicTableWriter(target) as writer:
            for _ in range(writes):
                writer.write(_dated_frame())
            raise RuntimeError("disk on fire")

    assert list(tmp_path.iterdir()) == []


def test_exception_leaves_an_existing_target_untouched(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("previous run\n")

    with pytest.raises(KeyError):
        with AtomicTableWriter(target) as writer:
            writer.write(_dated_frame())
            raise KeyError("x")

    assert target.read_text() == "previous run\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_csv_output_has_iso_dates_and_no_temporary_file(tmp_path):
    target = tmp_path / "sub" / "out.csv"

    with AtomicTableWriter(target) as writer:
        writer.write(_dated_frame().iloc[:1])
        assert not target.exists()
        writer.write(_dated_frame().iloc[1:])

    assert target.read_text().splitlines() == [
        '"declaration_id","declared_at","packages","value"',
        '"A",2025-01-15,20,1.5',
        '"B",2025-02-01,,2',
    ]
    assert writer.rows_written == 2
    assert [p.name for p in target.parent.iterdir()] == ["out.csv"]


def test_parquet_output_stores_dates_as_dates(tmp_path):
    target = tmp_path / "out.parquet"

    write_table(_dated_frame(), target)

    assert str(pq.read_schema(target).field("declared_at").type) == "date32[day]"
    back = pd.read_parquet(target)
    assert back["declared_at"].astype(str).tolist() == ["2025-01-15", "2025-02-01"]
    assert back["packages"].tolist()[0] == 20


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_timezone_aware_timestamps_are_written_as_their_local_dates_without_a_deprecation(tmp_path, name):
    """A quarantined line of a Parquet file with typed timestamps keeps them timezone-aware: written
    as the date where they were stamped (Arrow's cast), without pyarrow reading them through the
    ``Series.values`` pandas deprecates."""
    stamped = pd.Series(pd.to_datetime(["2025-01-15 23:30:00+00:00", None, "2025-03-01 01:00:00+00:00"], utc=True))
    frame = pd.DataFrame(
        {
            "id": ["A", "B", "C"],
            "declared_at": stamped.dt.tz_convert("Asia/Bangkok"),
            "seen_at": stamped,
            "offset_at": pd.Series(pd.to_datetime(["2025-01-15 01:30:00+07:00", None, "2025-03-01 00:30:00+07:00"])),
        }
    )
    target = tmp_path / name

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_table(frame, target)

    back = pd.read_csv(target, dtype=str) if name.endswith(".csv") else pd.read_parquet(target).astype("string")
    assert back.iloc[:, 1].fillna("-").tolist() == ["2025-01-16", "-", "2025-03-01"]
    assert back.iloc[:, 2].fillna("-").tolist() == ["2025-01-15", "-", "2025-03-01"]
    assert back.iloc[:, 3].fillna("-").tolist() == ["2025-01-15", "-", "2025-03-01"]


def test_later_chunks_are_cast_to_the_first_chunks_schema(tmp_path):
    """A column that is empty in the first chunk becomes text, so later values still fit."""
    target = tmp_path / "out.parquet"
    first = pd.DataFrame({"id": ["A"], "note": [None]})
    second = pd.DataFrame({"id": ["B"], "note": ["checked"]})

    with AtomicTableWriter(target) as writer:
        writer.write(first)
        writer.write(second)

    notes = pd.read_parquet(target)["note"]
    assert notes.isna().tolist() == [True, False]
    assert notes.iloc[1] == "checked"


def test_closing_without_any_write_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="nothing was written"):
        with AtomicTableWriter(tmp_path / "out.csv"):
            pass

    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_an_unknown_extension(tmp_path):
    with pytest.raises(ManifestFileError, match="unknown format"):
        AtomicTableWriter(tmp_path / "out.json")


def test_round_trip_of_validated_lines_through_csv(tmp_path, make_frame):
    valid = validate_manifest(make_frame({}, {"transshipment_ports": None})).valid
    path = tmp_path / "valid.csv"

    write_table(valid, path)
    again = validate_manifest(read_manifest(path))

    assert again.quarantine.empty
    pd.testing.assert_frame_equal(again.valid.reset_index(drop=True), valid.reset_index(drop=True))
