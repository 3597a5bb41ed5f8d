"""Declarative schema mapping: the KCS mapping on a few rows, each conversion kind, each error."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from features.mapping import MappingError, apply_mapping, load_mapping, parse_mapping
from features.schema import validate_manifest

KCS_HEADER = [
    "Declaration ID",
    "Date",
    "Office ID",
    "Process Type",
    "Import Type",
    "Import Use",
    "Payment Type",
    "Mode of Transport",
    "Declarant ID",
    "Importer ID",
    "Seller ID",
    "Courier ID",
    "HS6 Code",
    "Country of Departure",
    "Country of Origin",
    "Tax Rate",
    "Tax Type",
    "Country of Origin Indicator",
    "Net Mass",
    "Item Price",
    "Fraud",
    "Critical Fraud",
]
KCS_ROWS = [
    # Values of real KCS rows; the second one's HS code lost its leading zero in a spreadsheet.
    [
        "97061800",
        "2020-01-01",
        "30",
        "B",
        "11",
        "21",
        "11",
        "10",
        "ZZR1LT6",
        "QLRUBN9",
        "0VKY2BR",
        "",
        "440890",
        "BE",
        "BE",
        "0.0",
        "FEU1",
        "G",
        "108.0",
        "354000.0",
        "0",
        "0",
    ],
    [
        "85945189",
        "2021-04-02",
        "40",
        "B",
        "11",
        "21",
        "43",
        "40",
        "SWF9S4X",
        "7JD1S2X",
        "",
        "MWIDNS",
        "71080",
        "CN",
        "VN",
        "8.0",
        "A",
        "Y",
        "20.7",
        "1180",
        "1",
        "1",
    ],
    # Mode 90 (own propulsion / not stated) is outside the canonical modes; net mass 0.0 is invalid.
    [
        "77854751",
        "2021-06-30",
        "20",
        "D",
        "94",
        "23",
        "18",
        "90",
        "X4XT6P8",
        "WI9O3I5",
        "4DT3246",
        "",
        "620822",
        "CN",
        "CN",
        "5.2",
        "FCN1",
        "B",
        "0.0",
        "0.0",
        "1",
        "2",
    ],
]


def kcs_raw(rows=KCS_ROWS) -> pd.DataFrame:
    """KCS rows as a CSV reader gives them: every value text, empty cells missing."""
    raw = pd.DataFrame(rows, columns=KCS_HEADER, dtype="string")
    return raw.mask(raw == "")


def mapping_of(columns: dict, extras: dict | None = None, **top) -> object:
    """A mapping parsed from an in-memory spec named ``test.yaml``."""
    spec = {"name": "test", "columns": columns, **({"extras": extras} if extras else {}), **top}
    return parse_mapping(spec, "test.yaml")


MINIMAL = {
    "declaration_id": {"from": "id"},
    "declared_at": {"from": "date"},
    "hs_code": {"from": "hs"},
    "gross_weight_kg": {"from": "kg"},
    "declared_value_usd": {"from": "value"},
    "origin_country": {"from": "origin"},
    "export_country": {"from": "origin"},
}


def minimal_raw(**overrides) -> pd.DataFrame:
    row = {"id": "D1", "date": "2021-04-01", "hs": "790111", "kg": "100", "value": "300", "origin": "CN"}
    row.update(overrides)
    return pd.DataFrame([row], dtype="string")


# ----------------------------------------------------------------------------- the KCS mapping


def test_kcs_rows_map_to_exact_canonical_values():
    mapped = apply_mapping(kcs_raw(), load_mapping("kcs"), source="data.csv")
    result = validate_manifest(mapped, source="data.csv")

    valid = result.valid.set_index("declaration_id")
    assert list(valid.index) == ["97061800", "85945189"]
    first, second = valid.loc["97061800"], valid.loc["85945189"]
    assert first["declared_at"] == pd.Timestamp("2020-01-01")
    assert (first["hs_code"], second["hs_code"]) == ("440890", "071080")
    assert (first["line_no"], first["inspected"], first["misdeclared"]) == (1, 1, 0)
    assert (second["inspected"], second["misdeclared"]) == (1, 1)
    assert (first["gross_weight_kg"], first["net_weight_kg"]) == (108.0, 108.0)
    # 354,000 KRW and 1,180 KRW at 1,180 KRW per USD.
    assert (first["declared_value_usd"], second["declared_value_usd"]) == (300.0, 1.0)
    assert (second["origin_country"], second["export_country"]) == ("VN", "CN")
    assert (first["transport_mode"], second["transport_mode"]) == ("sea", "air")
    assert (first["shipper_id"], first["consignee_id"], first["importer_id"], first["declarant_id"]) == (
        "0VKY2BR",
        "QLRUBN9",
        "QLRUBN9",
        "ZZR1LT6",
    )
    assert pd.isna(second["shipper_id"]) and pd.isna(first["courier_id"])
    assert pd.isna(first["found_commodity"]) and pd.isna(first["description"])
    assert second[
        [
            "office_id",
            "process_type",
            "import_type",
            "import_use",
            "payment_type",
            "courier_id",
            "tax_type",
            "tax_rate",
            "origin_indicator",
            "transport_code",
        ]
    ].tolist() == ["40", "B", "11", "21", "43", "MWIDNS", "A", "8.0", "Y", "40"]
    assert (first["goods_profile"], second["goods_profile"]) == ("440890|354000.0", "71080|1180")
    assert "Critical Fraud" not in result.valid.columns and "critical_fraud" not in result.valid.columns


def test_kcs_row_with_zero_mass_is_quarantined_with_its_reasons():
    result = validate_manifest(apply_mapping(kcs_raw(), load_mapping("kcs"), source="data.csv"))

    assert result.quarantine["declaration_id"].tolist() == ["77854751"]
    assert result.quarantine["quarantine_reason"].tolist() == [
        "gross_weight_kg must be > 0, got 0.0; net_weight_kg must be > 0, got 0.0"
    ]
    # An unknown transport code becomes empty rather than an invalid canonical mode.
    assert pd.isna(result.quarantine["transport_mode"].iloc[0])
    assert result.quarantine["transport_code"].iloc[0] == "90"


def test_kcs_mapping_declares_features_and_states_its_rate():
    mapping = load_mapping("kcs")

    assert mapping.name == "kcs.yaml"
    assert mapping.extra_categorical == (
        "office_id",
        "process_type",
        "import_type",
        "import_use",
        "payment_type",
        "courier_id",
        "tax_type",
        "tax_rate",
        "origin_indicator",
    )
    assert mapping.history_entities == ("goods_profile",)
    assert mapping.ignore == ("Critical Fraud",)
    (rate,) = mapping.rates
    assert (rate.operation, rate.rate, rate.unit, rate.as_of) == ("divide_by", 1180.0, "KRW per USD", "2020 annual average")
    assert "World Bank" in rate.source
    assert rate.stated == "divide by 1180.0 (KRW per USD)"


def test_kcs_mapping_loads_from_a_path_too(tmp_path):
    from features.mapping import packaged_mapping_path

    copy = tmp_path / "kcs_copy.yaml"
    copy.write_text(packaged_mapping_path("kcs").read_text(encoding="utf-8"), encoding="utf-8")

    assert load_mapping(copy).columns == load_mapping("kcs").columns
    assert load_mapping(str(copy)).name == "kcs_copy.yaml"


# ----------------------------------------------------------------------------- each conversion


def test_rename_and_constant():
    mapping = mapping_of({**MINIMAL, "line_no": {"constant": 1}, "description": {"constant": "tiles"}})
    mapped = apply_mapping(minimal_raw(), mapping)

    assert mapped.loc[0, "declaration_id"] == "D1"
    assert mapped.loc[0, "line_no"] == 1.0 and mapped["line_no"].dtype == "float64"
    assert mapped.loc[0, "description"] == "tiles"


def test_fixed_rate_multiply_and_divide():
    multiply = mapping_of(
        {
            **MINIMAL,
            "declared_value_usd": {
                "from": "value",
                "fixed_rate": {"multiply_by": 0.25, "unit": "USD per unit", "as_of": "2021-01-01", "source": "test"},
            },
        }
    )
    divide = mapping_of(
        {
            **MINIMAL,
            "declared_value_usd": {"from": "value", "fixed_rate": {"divide_by": 4, "as_of": "2021-01-01", "source": "test"}},
        }
    )
    raw = pd.DataFrame({**minimal_raw().iloc[0].to_dict(), "value": ["300", "2", None]}, dtype="string")

    assert apply_mapping(raw, multiply)["declared_value_usd"].tolist()[:2] == [75.0, 0.5]
    assert apply_mapping(raw, divide)["declared_value_usd"].tolist()[:2] == [75.0, 0.5]
    assert math.isnan(apply_mapping(raw, divide)["declared_value_usd"].iloc[2])
    assert multiply.rates[0].stated == "multiply by 0.25 (USD per unit)"


def test_fixed_rate_keeps_text_that_is_not_a_number_for_the_quarantine():
    mapping = mapping_of(
        {**MINIMAL, "declared_value_usd": {"from": "value", "fixed_rate": {"divide_by": 2, "as_of": "2021", "source": "test"}}}
    )
    raw = pd.concat([minimal_raw(), minimal_raw(id="D2", value="12,5")], ignore_index=True)

    result = validate_manifest(apply_mapping(raw, mapping))

    assert result.valid["declared_value_usd"].tolist() == [150.0]
    assert result.quarantine["quarantine_reason"].tolist() == ["declared_value_usd: unparseable number '12,5'"]


def test_value_map_with_unknown_empty_or_kept():
    codes = {"10": "sea", "40": "air"}
    empty = mapping_of({**MINIMAL, "transport_mode": {"from": "mode", "values": codes}})
    keep = mapping_of({**MINIMAL, "transport_mode": {"from": "mode", "values": codes, "unknown": "keep"}})
    raw = pd.DataFrame({**minimal_raw().iloc[0].to_dict(), "mode": ["10", "40", "90", None]}, dtype="string")

    assert apply_mapping(raw, empty)["transport_mode"].tolist() == ["sea", "air", pd.NA, pd.NA]
    assert apply_mapping(raw, keep)["transport_mode"].tolist() == ["sea", "air", "90", pd.NA]


def test_value_map_reads_unquoted_yaml_codes_as_text():
    spec = yaml.safe_load("values: {10: sea, 40: air}")
    mapping = mapping_of({**MINIMAL, "transport_mode": {"from": "mode", **spec}})

    assert apply_mapping(minimal_raw(mode="40"), mapping)["transport_mode"].tolist() == ["air"]


def test_zero_pad_pads_digit_codes_only():
    mapping = mapping_of({**MINIMAL, "hs_code": {"from": "hs", "zero_pad": 6}})
    raw = pd.DataFrame(
        {**minimal_raw().iloc[0].to_dict(), "hs": ["71080", "440890", "8471300000", "7108A", " 9 "]}, dtype="string"
    )

    assert apply_mapping(raw, mapping)["hs_code"].tolist() == ["071080", "440890", "8471300000", "7108A", "000009"]


def test_date_format_parses_to_iso_dates():
    mapping = mapping_of({**MINIMAL, "declared_at": {"from": "date", "date_format": "%d/%m/%Y"}})
    raw = pd.concat([minimal_raw(date="02/04/2021"), minimal_raw(id="D2", date="30/06/2021")], ignore_index=True)

    mapped = apply_mapping(raw, mapping)
    result = validate_manifest(mapped)

    assert mapped["declared_at"].tolist() == ["2021-04-02", "2021-06-30"]
    assert result.valid["declared_at"].tolist() == [pd.Timestamp("2021-04-02"), pd.Timestamp("2021-06-30")]


def test_date_format_that_does_not_match_is_quarantined_with_the_original_text():
    mapping = mapping_of({**MINIMAL, "declared_at": {"from": "date", "date_format": "%d/%m/%Y"}})

    result = validate_manifest(apply_mapping(minimal_raw(date="31/02/2021"), mapping))

    assert result.valid.empty
    assert result.quarantine["quarantine_reason"].tolist() == ["declared_at: unparseable date '31/02/2021'"]


def test_concat_joins_texts_and_is_missing_when_a_part_is():
    mapping = mapping_of(
        MINIMAL,
        extras={
            "profile": {"concat": ["hs", "kg"], "categorical": False, "history_entity": True},
            "profile2": {"concat": ["hs", "kg"], "separator": "/"},
        },
    )
    raw = pd.concat([minimal_raw(), minimal_raw(id="D2", kg=None)], ignore_index=True)

    mapped = apply_mapping(raw, mapping)

    assert mapped["profile"].tolist() == ["790111|100", pd.NA]
    assert mapped["profile2"].tolist() == ["790111/100", pd.NA]
    assert mapping.history_entities == ("profile",) and mapping.extra_categorical == ("profile2",)


def test_labels_map_and_missing_canonical_columns_are_added_by_validation():
    mapping = mapping_of({**MINIMAL, "inspected": {"constant": 1}, "misdeclared": {"from": "fraud"}})

    result = validate_manifest(apply_mapping(minimal_raw(fraud="1"), mapping))

    assert (result.valid.loc[0, "inspected"], result.valid.loc[0, "misdeclared"]) == (1, 1)
    assert pd.isna(result.valid.loc[0, "found_commodity"])


def test_extras_pass_through_validation_unchanged():
    mapping = mapping_of(MINIMAL, extras={"office_id": {"from": "office"}})

    result = validate_manifest(apply_mapping(minimal_raw(office=" 030 "), mapping))

    assert result.valid["office_id"].tolist() == ["030"]


def test_apply_mapping_does_not_change_its_input():
    raw = kcs_raw()
    before = raw.copy()

    apply_mapping(raw, load_mapping("kcs"))

    pd.testing.assert_frame_equal(raw, before)


# ----------------------------------------------------------------------------- each error


def test_missing_source_column_names_the_mapping_file_and_the_data_file():
    raw = kcs_raw().drop(columns=["Item Price"])

    with pytest.raises(MappingError) as error:
        apply_mapping(raw, load_mapping("kcs"), source="data.csv")

    assert str(error.value) == "kcs.yaml: source column 'Item Price' not in data.csv"


def test_several_missing_source_columns_are_all_named():
    raw = kcs_raw().drop(columns=["Item Price", "Fraud"])

    with pytest.raises(
        MappingError,
        match=r"^kcs\.yaml: source column 'Item Price' not in data\.csv "
        r"\(nor 'Fraud'\)$",
    ):
        apply_mapping(raw, load_mapping("kcs"), source="data.csv")


def test_missing_mapping_file(tmp_path):
    with pytest.raises(MappingError, match=r"nowhere\.yaml: mapping file not found"):
        load_mapping(tmp_path / "nowhere.yaml")
    with pytest.raises(MappingError, match=r"^no_such_schema: mapping file not found"):
        load_mapping("no_such_schema")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("columns: {declaration_id: [\n", encoding="utf-8")

    with pytest.raises(MappingError, match=r"^broken\.yaml: not valid YAML"):
        load_mapping(path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([], "test.yaml: expected a mapping with 'columns', got list"),
        (
            {"columns": MINIMAL, "colums": {}},
            "test.yaml: unknown key 'colums' (known: columns, description, extras, ignore, name)",
        ),
        ({"columns": {}}, "test.yaml: 'columns' must map output column names to rules"),
        ({"columns": MINIMAL, "extras": ["a"]}, "test.yaml: 'extras' must map output column names to rules"),
        ({"columns": MINIMAL, "ignore": "Critical Fraud"}, "test.yaml: 'ignore' must be a list of source column names"),
        (
            {"columns": {**MINIMAL, "misdeclared": {"from": "Critical Fraud"}}, "ignore": ["Critical Fraud"]},
            "test.yaml: source column 'Critical Fraud' is listed under 'ignore' but mapped",
        ),
    ],
)
def test_invalid_file_structure(spec, message):
    with pytest.raises(MappingError) as error:
        parse_mapping(spec, "test.yaml")

    assert str(error.value) == message


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("id", "expected a rule such as {from: SOURCE}, got 'id'"),
        (
            {"from": "id", "trim": True},
            "unknown conversion 'trim' (known: from, constant, concat, zero_pad, values, unknown, fixed_rate, date_format)",
        ),
        ({}, "needs exactly one of 'from' (a source column), 'constant' or 'concat'"),
        ({"from": "id", "constant": "x"}, "needs exactly one of 'from' (a source column), 'constant' or 'concat'"),
        ({"constant": "x", "zero_pad": 6}, "'constant' takes no conversion"),
        ({"concat": ["a", "b"], "values": {"1": "x"}}, "'concat' takes no conversion"),
        ({"concat": ["a"]}, "'concat' must list at least two source columns, got ['a']"),
        ({"from": "id", "separator": "|"}, "'separator' needs 'concat'"),
        ({"from": "id", "zero_pad": 0}, "zero_pad must be a positive integer, got 0"),
        ({"from": "id", "zero_pad": "6"}, "zero_pad must be a positive integer, got '6'"),
        ({"from": "id", "values": {}}, "'values' must map source codes to values"),
        ({"from": "id", "values": {"1": "x"}, "unknown": "drop"}, "'unknown' must be 'empty' or 'keep', got 'drop'"),
        ({"from": "id", "unknown": "keep"}, "'unknown' needs 'values'"),
        ({"from": "id", "fixed_rate": 1180}, "'fixed_rate' must be a mapping with multiply_by or divide_by, as_of, source"),
        (
            {"from": "id", "fixed_rate": {"divide_by": 1180, "as_of": "2020", "source": "x", "date": "y"}},
            "fixed_rate has an unknown key 'date'",
        ),
        (
            {"from": "id", "fixed_rate": {"divide_by": 1180, "multiply_by": 2, "as_of": "2020", "source": "x"}},
            "fixed_rate needs exactly one of 'multiply_by' or 'divide_by'",
        ),
        (
            {"from": "id", "fixed_rate": {"divide_by": 1180, "source": "x"}},
            "fixed_rate must state its 'as_of' (a fixed rate is only meaningful with its date and source)",
        ),
        (
            {"from": "id", "fixed_rate": {"divide_by": 1180, "as_of": "2020", "source": " "}},
            "fixed_rate must state its 'source' (a fixed rate is only meaningful with its date and source)",
        ),
        (
            {"from": "id", "fixed_rate": {"divide_by": 0, "as_of": "2020", "source": "x"}},
            "fixed_rate divide_by must be a positive number, got 0",
        ),
        (
            {"from": "id", "fixed_rate": {"multiply_by": "1/1180", "as_of": "2020", "source": "x"}},
            "fixed_rate multiply_by must be a positive number, got '1/1180'",
        ),
        (
            {"from": "id", "date_format": "YYYY-MM-DD"},
            "date_format must be a strptime format such as '%Y-%m-%d', got 'YYYY-MM-DD'",
        ),
    ],
)
def test_invalid_rule_names_the_file_and_the_column(rule, message):
    with pytest.raises(MappingError) as error:
        mapping_of({**MINIMAL, "declaration_id": rule})

    assert str(error.value) == f"test.yaml: column 'declaration_id': {message}"


def test_non_canonical_column_must_be_an_extra():
    with pytest.raises(MappingError) as error:
        mapping_of({**MINIMAL, "office_id": {"from": "office"}})

    assert str(error.value) == (
        "test.yaml: column 'office_id' is not a canonical column (put source-specific columns under 'extras')"
    )


def test_extra_with_a_canonical_name_is_refused():
    with pytest.raises(MappingError) as error:
        mapping_of(MINIMAL, extras={"hs_code": {"from": "hs"}})

    assert str(error.value) == "test.yaml: extra column 'hs_code' has a canonical name; map it under 'columns'"


def test_history_entity_is_for_extras():
    with pytest.raises(MappingError) as error:
        mapping_of({**MINIMAL, "shipper_id": {"from": "id", "history_entity": True}})

    assert str(error.value) == (
        "test.yaml: column 'shipper_id': history_entity is for extras (the canonical parties already have a history)"
    )
