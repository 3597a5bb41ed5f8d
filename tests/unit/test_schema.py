"""features/schema.py: parsing, row rules with readable reasons, the valid/quarantine split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.schema import (
    CANONICAL_COLUMNS,
    INT_COLUMNS,
    REASON_COLUMN,
    REQUIRED_COLUMNS,
    KeyHashes,
    ManifestFileError,
    _check_parsed_types,
    duplicate_key_mask,
    neutralise_cell,
    neutralise_frame,
    parse_manifest,
    restore_cell,
    validate_manifest,
)

# (overrides of one valid line, the exact quarantine reason)
RULES = [
    pytest.param({"gross_weight_kg": "abc"}, "gross_weight_kg: unparseable number 'abc'", id="unparseable-number"),
    pytest.param({"declared_value_usd": "1,000"}, "declared_value_usd: unparseable number '1,000'", id="thousands-separator"),
    pytest.param(
        {"gross_weight_kg": "inf", "net_weight_kg": None}, "gross_weight_kg: unparseable number 'inf'", id="infinite-number"
    ),
    pytest.param({"packages": "NaN"}, "packages: unparseable number 'NaN'", id="nan-text"),
    pytest.param({"declared_at": "2025-13-40"}, "declared_at: unparseable date '2025-13-40'", id="unparseable-date"),
    pytest.param({"declared_at": "15/01/2025"}, "declared_at: unparseable date '15/01/2025'", id="non-iso-date"),
    pytest.param({"gross_weight_kg": "0", "net_weight_kg": None}, "gross_weight_kg must be > 0, got 0.0", id="zero-gross"),
    pytest.param({"gross_weight_kg": "-5", "net_weight_kg": None}, "gross_weight_kg must be > 0, got -5.0", id="negative-gross"),
    pytest.param({"net_weight_kg": "0"}, "net_weight_kg must be > 0, got 0.0", id="zero-net"),
    pytest.param({"net_weight_kg": "1000.5"}, "net_weight_kg <= gross_weight_kg does not hold", id="net-above-gross"),
    pytest.param({"quantity": "0"}, "quantity must be > 0, got 0.0", id="zero-quantity"),
    pytest.param({"declared_value_usd": "-1"}, "declared_value_usd must be >= 0, got -1.0", id="negative-value"),
    pytest.param({"origin_country": "CHN"}, "origin_country must be a two-letter country code, got 'CHN'", id="origin-alpha3"),
    pytest.param({"export_country": "T1"}, "export_country must be a two-letter country code, got 'T1'", id="export-digit"),
    pytest.param({"hs_code": "7901"}, "hs_code must be 6-10 digits, got '7901'", id="hs-too-short"),
    pytest.param({"hs_code": "79011A"}, "hs_code must be 6-10 digits, got '79011A'", id="hs-letter"),
    pytest.param({"hs_code": "79011100001"}, "hs_code must be 6-10 digits, got '79011100001'", id="hs-too-long"),
    pytest.param(
        {"port_of_loading": "TH-LCH"}, "port_of_loading must be UN/LOCODEs (5 characters), got 'TH-LCH'", id="bad-loading-port"
    ),
    pytest.param(
        {"port_of_discharge": "USLA"}, "port_of_discharge must be UN/LOCODEs (5 characters), got 'USLA'", id="bad-discharge-port"
    ),
    pytest.param(
        {"transshipment_ports": "CNSHA,THLCH"},
        "transshipment_ports must be UN/LOCODEs (5 characters), got 'CNSHA,THLCH'",
        id="comma-list",
    ),
    pytest.param(
        {"transshipment_ports": "CNSHA;"},
        "transshipment_ports must be UN/LOCODEs (5 characters), got 'CNSHA;'",
        id="trailing-semicolon",
    ),
    pytest.param({"transport_mode": "boat"}, "transport_mode has an unknown value 'boat'", id="unknown-mode"),
    pytest.param({"found_commodity": "gold"}, "found_commodity has an unknown value 'gold'", id="unknown-commodity"),
    pytest.param({"packages": "0"}, "packages must be >= 1, got 0.0", id="zero-packages"),
    pytest.param({"packages": "2.5"}, "packages must be a whole number, got 2.5", id="fractional-packages"),
    pytest.param({"containers": "-1"}, "containers must be >= 0, got -1.0", id="negative-containers"),
    pytest.param({"containers": "1.5"}, "containers must be a whole number, got 1.5", id="fractional-containers"),
    pytest.param({"line_no": "0"}, "line_no must be >= 1, got 0.0", id="zero-line-no"),
    # A "count" beyond float64's exact integers: quarantined, not a failed cast to int64 (a traceback before).
    pytest.param(
        {"packages": "123456789012345678901234567890"},
        "packages must be at most 9,007,199,254,740,992, got 1.2345678901234568e+29",
        id="huge-packages",
    ),
    pytest.param({"line_no": "1e300"}, "line_no must be at most 9,007,199,254,740,992, got 1e+300", id="huge-line-no"),
    pytest.param({"inspected": "2", "misdeclared": None}, "inspected has an unknown value '2.0'", id="inspected-2"),
    pytest.param(
        {"inspected": "0", "misdeclared": "1"},
        "misdeclared is known only for inspected lines does not hold",
        id="misdeclared-not-inspected",
    ),
    pytest.param(
        {"inspected": None, "misdeclared": "0"},
        "misdeclared is known only for inspected lines does not hold",
        id="misdeclared-inspection-unknown",
    ),
    pytest.param({"declaration_id": "  "}, "declaration_id is missing", id="blank-declaration-id"),
    pytest.param({"hs_code": None}, "hs_code is missing", id="missing-hs"),
    pytest.param({"declared_at": None}, "declared_at is missing", id="missing-date"),
    pytest.param({"gross_weight_kg": ""}, "gross_weight_kg is missing", id="empty-gross"),
    pytest.param({"origin_country": None}, "origin_country is missing", id="missing-origin"),
]


@pytest.fixture(scope="module")
def rule_results(make_frame):
    """One frame holding a valid line, then one line per rule, validated in a single call (pandera has
    a fixed cost per call); the line of rule ``i`` has index ``i + 1``."""
    raw = make_frame({}, *(param.values[0] for param in RULES), {})
    return raw, validate_manifest(raw, source="in.csv")


@pytest.mark.parametrize(
    ("position", "reason"), [pytest.param(i + 1, param.values[1], id=param.id) for i, param in enumerate(RULES)]
)
def test_each_rule_quarantines_the_row_with_a_readable_reason(rule_results, position, reason):
    raw, result = rule_results

    assert position in result.quarantine.index
    assert position not in result.valid.index
    assert result.quarantine.loc[position, REASON_COLUMN] == reason


def test_rule_frame_keeps_its_valid_lines(rule_results):
    raw, result = rule_results

    assert result.valid.index.tolist() == [0, len(raw) - 1]
    assert len(result.quarantine) == len(RULES)


def test_every_failed_rule_of_a_row_is_reported(make_frame):
    raw = make_frame({"gross_weight_kg": "heavy", "origin_country": "China", "transport_mode": "camel"})

    reason = validate_manifest(raw).quarantine[REASON_COLUMN].iloc[0]

    assert sorted(reason.split("; ")) == [
        "gross_weight_kg: unparseable number 'heavy'",
        "origin_country must be a two-letter country code, got 'CHINA'",
        "transport_mode has an unknown value 'camel'",
    ]


def test_unparseable_value_is_not_reported_again_as_missing(make_frame):
    reason = validate_manifest(make_frame({"declared_at": "yesterday"})).quarantine[REASON_COLUMN].iloc[0]

    assert reason == "declared_at: unparseable date 'yesterday'"


def test_quarantine_keeps_the_original_values_and_extra_columns(make_frame):
    raw = make_frame({"hs_code": " 7901.11 ", "origin_country": " cn", "gross_weight_kg": "12 kg"})
    raw["office"] = "LAX-2"

    quarantine = validate_manifest(raw).quarantine

    row = quarantine.iloc[0]
    assert (row["hs_code"], row["origin_country"], row["gross_weight_kg"], row["office"]) == (
        " 7901.11 ",
        " cn",
        "12 kg",
        "LAX-2",
    )
    assert list(quarantine.columns) == list(raw.columns) + [REASON_COLUMN]


def test_valid_rows_are_normalised_and_typed(make_frame):
    raw = make_frame(
        {
            "hs_code": "7901.11",
            "origin_country": " cn ",
            "export_country": "th",
            "port_of_loading": "th lch",
            "transshipment_ports": " cnsha; mxzlo ",
            "transport_mode": "Sea",
            "found_commodity": "NONE",
            "description": "  zinc  ",
        }
    )
    raw["office"] = "LAX-2"

    valid = validate_manifest(raw).valid

    row = valid.iloc[0]
    assert (
        row["hs_code"],
        row["origin_country"],
        row["export_country"],
        row["port_of_loading"],
        row["transshipment_ports"],
        row["transport_mode"],
        row["found_commodity"],
        row["description"],
    ) == ("790111", "CN", "TH", "THLCH", "CNSHA;MXZLO", "sea", "none", "zinc")
    assert row["declared_at"] == pd.Timestamp("2025-01-15")
    assert (row["gross_weight_kg"], row["net_weight_kg"], row["declared_value_usd"]) == (1000.0, 980.0, 2940.0)
    assert (row["line_no"], row["packages"], row["containers"], row["inspected"], row["misdeclared"]) == (1, 20, 1, 1, 0)
    assert row["office"] == "LAX-2"
    assert list(valid.columns) == list(CANONICAL_COLUMNS) + ["office"]
    for column in INT_COLUMNS:
        assert valid[column].dtype == "Int64", column
    for column in ("gross_weight_kg", "net_weight_kg", "quantity", "declared_value_usd"):
        assert valid[column].dtype == "float64", column
    assert pd.api.types.is_datetime64_dtype(valid["declared_at"])
    for column in ("declaration_id", "hs_code", "origin_country", "transshipment_ports"):
        assert pd.api.types.is_string_dtype(valid[column]), column


@pytest.mark.parametrize(("column", "wrong"), [("hs_code", object), ("gross_weight_kg", "Int64"), ("declared_at", "string")])
def test_a_column_the_parser_typed_otherwise_is_a_type_error_naming_it(make_frame, column, wrong):
    # The row rules are checked without dtypes (the parser types every column): a parser fault
    # must stop here, not pass as rule failures.
    typed, _, _ = parse_manifest(make_frame({}))
    _check_parsed_types(typed)
    typed[column] = typed[column].astype(wrong)

    with pytest.raises(TypeError, match=f"column '{column}'"):
        _check_parsed_types(typed)


def test_optional_columns_may_be_absent(make_frame):
    raw = make_frame({})[list(REQUIRED_COLUMNS)]

    valid = validate_manifest(raw).valid

    assert list(valid.columns) == list(CANONICAL_COLUMNS)
    row = valid.iloc[0]
    assert row["line_no"] == 1
    assert pd.isna(row["packages"]) and pd.isna(row["inspected"]) and pd.isna(row["transport_mode"])


def test_typed_input_as_from_parquet_is_accepted(make_frame):
    typed = pd.DataFrame(
        {
            "declaration_id": ["A", "B"],
            "line_no": [1, 2],
            "declared_at": pd.to_datetime(["2025-01-15", "2025-02-01"]),
            "hs_code": ["790111", "811292"],
            "gross_weight_kg": [1000, 20],
            "net_weight_kg": [980.0, np.nan],
            "declared_value_usd": [2940.0, 0.0],
            "origin_country": ["CN", "JP"],
            "export_country": ["TH", "JP"],
            "packages": pd.array([20, None], dtype="Int64"),
            "inspected": pd.array([1, 0], dtype="Int64"),
            "misdeclared": pd.array([1, None], dtype="Int64"),
        }
    )

    result = validate_manifest(typed)

    assert result.quarantine.empty
    assert result.valid["declared_at"].tolist() == [pd.Timestamp("2025-01-15"), pd.Timestamp("2025-02-01")]
    assert result.valid["gross_weight_kg"].tolist() == [1000.0, 20.0]
    assert result.valid["misdeclared"].tolist() == [1, pd.NA]


def test_dates_with_different_utc_offsets_keep_their_local_date_and_time(make_frame):
    raw = make_frame(
        {"declared_at": "2025-01-15T23:30:00+07:00"},
        {"declared_at": "2025-01-15T01:00-05:00"},
        {"declared_at": "2025-01-16"},
        {"declared_at": "2025-01-16T08:00:00Z"},
    )

    result = validate_manifest(raw)

    assert result.valid["declared_at"].tolist() == [
        pd.Timestamp("2025-01-15 23:30"),
        pd.Timestamp("2025-01-15 01:00"),
        pd.Timestamp("2025-01-16"),
        pd.Timestamp("2025-01-16 08:00"),
    ]


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_missing_required_column_is_a_file_error_naming_it(make_frame, column):
    raw = make_frame({}).drop(columns=[column])

    with pytest.raises(ManifestFileError) as error:
        validate_manifest(raw, source="manifest_2025.csv")

    assert str(error.value) == f"manifest_2025.csv: missing required column '{column}'"


def test_several_missing_columns_are_all_named(make_frame):
    raw = make_frame({}).drop(columns=["hs_code", "export_country"])

    with pytest.raises(ManifestFileError, match=r"^in\.csv: missing required column 'hs_code' \(and export_country\)$"):
        validate_manifest(raw, source="in.csv")


def test_duplicate_key_within_a_frame_quarantines_the_later_line(make_frame):
    raw = make_frame(
        {"declaration_id": "A", "line_no": "1"},
        {"declaration_id": "A", "line_no": "2"},
        {"declaration_id": "A", "line_no": "1.0"},
        {"declaration_id": "B", "line_no": "1"},
    )

    result = validate_manifest(raw)

    assert result.valid[["declaration_id", "line_no"]].values.tolist() == [["A", 1], ["A", 2], ["B", 1]]
    assert result.quarantine.index.tolist() == [2]
    assert result.quarantine[REASON_COLUMN].tolist() == ["duplicate (declaration_id, line_no)"]


def test_a_line_that_fails_a_rule_does_not_claim_its_key(make_frame):
    raw = make_frame({"declaration_id": "A", "hs_code": "x"}, {"declaration_id": "A"})

    result = validate_manifest(raw)

    assert result.valid.index.tolist() == [1]
    assert result.quarantine[REASON_COLUMN].tolist() == ["hs_code must be 6-10 digits, got 'x'"]


def test_duplicate_key_across_chunks_is_found_through_seen_keys(make_frame):
    seen = KeyHashes()
    first = make_frame({"declaration_id": "A"}, {"declaration_id": "B"})
    second = make_frame({"declaration_id": "C"}, {"declaration_id": "A"})
    second.index = pd.RangeIndex(2, 4)

    one = validate_manifest(first, seen_keys=seen)
    two = validate_manifest(second, seen_keys=seen)

    assert len(one.valid) == 2 and one.quarantine.empty
    assert two.valid["declaration_id"].tolist() == ["C"]
    assert two.quarantine.index.tolist() == [3]
    assert two.quarantine[REASON_COLUMN].tolist() == ["duplicate (declaration_id, line_no)"]
    assert len(seen) == 3


def test_without_seen_keys_chunks_are_checked_alone(make_frame):
    first = make_frame({"declaration_id": "A"})

    assert validate_manifest(first).quarantine.empty
    assert validate_manifest(first).quarantine.empty


def test_duplicate_key_mask_flags_later_occurrences_and_updates_seen():
    frame = pd.DataFrame({"declaration_id": pd.array(["A", "B", "A", "C"], dtype="string"), "line_no": [1.0, 1.0, 1.0, 2.0]})
    seen = KeyHashes()

    assert duplicate_key_mask(frame, seen).tolist() == [False, False, True, False]
    assert duplicate_key_mask(frame.iloc[[3]], seen).tolist() == [True]


def test_empty_frame_gives_two_empty_results(make_frame):
    result = validate_manifest(make_frame({}).iloc[:0])

    assert result.valid.empty and result.quarantine.empty
    assert REASON_COLUMN in result.quarantine.columns


# ----------------------------------------------------------------------------- property

BAD_CHANGES = [
    {"gross_weight_kg": "?"},
    {"declared_at": "2025-02-30"},
    {"gross_weight_kg": "0", "net_weight_kg": None},
    {"net_weight_kg": "5000"},
    {"origin_country": "XXX"},
    {"hs_code": "12"},
    {"port_of_loading": "TH"},
    {"transshipment_ports": "A;B"},
    {"transport_mode": "ship"},
    {"packages": "0"},
    {"packages": "1.5"},
    {"inspected": "0", "misdeclared": "1"},
    {"declared_value_usd": "-3"},
    {"hs_code": None},
]
GOOD_CHANGES = [
    {},
    {"net_weight_kg": None},
    {"transshipment_ports": None},
    {"hs_code": "8112.92.1000"},
    {"inspected": "0", "misdeclared": None, "found_commodity": None},
    {"packages": "3.0"},
    {"declared_value_usd": "0"},
    {"origin_country": "de", "export_country": "de", "port_of_loading": "DEHAM"},
    {"declared_at": "2024-02-29"},
]
KINDS = st.one_of(
    st.tuples(st.just("good"), st.integers(0, len(GOOD_CHANGES) - 1)),
    st.tuples(st.just("bad"), st.integers(0, len(BAD_CHANGES) - 1)),
    st.tuples(st.just("duplicate"), st.integers(0, 10_000)),
)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(KINDS, min_size=1, max_size=30))
def test_every_row_ends_in_exactly_one_output(make_line, kinds):
    lines, expected_bad, good_ids = [], [], []
    for i, (kind, which) in enumerate(kinds):
        if kind == "duplicate" and good_ids:
            lines.append(make_line(declaration_id=good_ids[which % len(good_ids)]))
            expected_bad.append(i)
            continue
        if kind == "bad":
            lines.append(make_line(declaration_id=f"L{i}", **BAD_CHANGES[which]))
            expected_bad.append(i)
        else:
            lines.append(make_line(declaration_id=f"L{i}", **(GOOD_CHANGES[which] if kind == "good" else {})))
            good_ids.append(f"L{i}")
    raw = pd.DataFrame(lines).astype("string")

    result = validate_manifest(raw)

    valid_rows, quarantined = set(result.valid.index), set(result.quarantine.index)
    assert valid_rows.isdisjoint(quarantined)
    assert valid_rows | quarantined == set(raw.index)
    assert sorted(quarantined) == expected_bad
    assert (result.quarantine[REASON_COLUMN].str.len() > 0).all()
    pd.testing.assert_frame_equal(result.quarantine.drop(columns=REASON_COLUMN), raw.loc[sorted(quarantined)])


def test_key_hashes_remember_every_hash_through_merges():
    seen = KeyHashes()
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, 2**63, size, dtype="uint64") for size in (5, 3, 8, 1, 20, 2)]
    for batch in batches:
        seen.add(batch)
    assert len(seen) == 39 and len(seen.blocks) < len(batches)
    every = np.concatenate(batches)
    assert seen.contains(every).all()
    assert not seen.contains(np.array([1, 2, 3], dtype="uint64")).any()
    assert KeyHashes().contains(every).sum() == 0


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ('=HYPERLINK("http://x","open")', '\'=HYPERLINK("http://x","open")'),
        ("+cmd", "'+cmd"),
        ("-abc", "'-abc"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("-3.5", "-3.5"),
        ("+7", "+7"),
        ("1e-3", "1e-3"),  # plain numbers stay numbers
        ("'=x", "''=x"),
        ("'abc", "'abc"),
        ("zinc ingots", "zinc ingots"),
        ("", ""),
    ],
)
def test_formula_cells_are_neutralised_and_read_back_exactly(value, written):
    assert neutralise_cell(value) == written
    assert restore_cell(written) == value


def test_a_neutralised_manifest_validates_to_the_same_lines(make_frame):
    raw = make_frame({"description": '=HYPERLINK("http://x")', "shipper_id": "@S1"}, {"description": "-"})
    written = neutralise_frame(raw)
    assert written.loc[0, "description"].startswith("'=") and written.loc[1, "description"] == "'-"
    before, after = validate_manifest(raw), validate_manifest(written)
    pd.testing.assert_frame_equal(before.valid, after.valid)


def test_codes_and_ports_lose_any_whitespace_python_calls_whitespace(make_frame):
    """Values are cleaned by Python's regular expressions where Arrow finds something to clean:
    Unicode spaces and vertical tabs count (Arrow's own regular expressions would miss them)."""
    raw = make_frame(
        {"hs_code": "7901.11", "port_of_loading": "th lch"},
        {"hs_code": "7901\u00a011", "port_of_loading": "TH\u2003LCH", "transshipment_ports": "cnsha ;\vsgsin"},
        {"hs_code": "790111", "port_of_loading": "THLCH"},
    )

    result = validate_manifest(raw)

    assert result.quarantine.empty
    assert result.valid["hs_code"].tolist() == ["790111"] * 3
    assert result.valid["port_of_loading"].tolist() == ["THLCH"] * 3
    assert result.valid["transshipment_ports"].tolist() == ["CNSHA", "CNSHA;SGSIN", "CNSHA"]
