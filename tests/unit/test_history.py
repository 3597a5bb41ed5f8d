"""Point-in-time history features: exact values on a hand-made frame, and leakage tests."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.history import HistoryFeatures, _encoded, _stacked_category, as_category, count_before, count_in_window
from features.schema import validate_manifest

# Global rate from the inspected lines: A misdeclared; G, C and H clean: 1/4.
LINES = [
    # id, date, shipper, consignee, hs, origin, export, discharge, inspected, misdeclared
    ("A", "2025-01-01", "S1", "C1", "790111", "CN", "TH", "USLAX", "1", "1"),
    ("B", "2025-01-01", "S1", "C1", "790111", "CN", "TH", "USLAX", "0", ""),
    ("G", "2025-01-05", "S3", "C3", "940360", "DE", "DE", "USNYC", "1", "0"),
    ("C", "2025-01-20", "S1", "C2", "830629", "MX", "MX", "USLRD", "1", "0"),
    ("H", "2025-02-15", "S1", "C1", "790111", "CN", "TH", "USLAX", "1", "0"),
    ("D", "2025-03-01", "S1", "C1", "790111", "CN", "TH", "USLAX", "", ""),
    ("E", "2025-03-01", "S2", "", "790111", "TH", "TH", "USLAX", "", ""),
]


def make_lines(rows=LINES) -> pd.DataFrame:
    columns = [
        "declaration_id",
        "declared_at",
        "shipper_id",
        "consignee_id",
        "hs_code",
        "origin_country",
        "export_country",
        "port_of_discharge",
        "inspected",
        "misdeclared",
    ]
    raw = pd.DataFrame(rows, columns=columns, dtype="string").assign(gross_weight_kg="1000", declared_value_usd="3000")
    result = validate_manifest(raw)
    assert result.quarantine.empty, result.quarantine
    return result.valid.set_index("declaration_id", drop=False)


def fitted(lines: pd.DataFrame) -> HistoryFeatures:
    return HistoryFeatures(label_delay_days=30, prior_strength=5.0, trailing_days=28, baseline_days=182).fit(lines)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    lines = make_lines()
    return fitted(lines).transform(lines)


def test_global_rate_is_the_inspected_misdeclaration_rate():
    assert fitted(make_lines()).global_rate_ == pytest.approx(1 / 4)


@pytest.mark.parametrize(
    "line, column, expected",
    [
        # Same-day lines do not see each other.
        ("A", "shipper_id_lines_before", 0.0),
        ("B", "shipper_id_lines_before", 0.0),
        ("C", "shipper_id_lines_before", 2.0),
        ("D", "shipper_id_lines_before", 4.0),
        ("E", "shipper_id_lines_before", 0.0),
        ("C", "shipper_id_days_since_first", 19.0),
        ("D", "shipper_id_days_since_first", 59.0),
        ("A", "shipper_id_days_since_first", np.nan),
        ("D", "shipper_id_distinct_hs_before", 2.0),
        ("D", "shipper_id_distinct_routes_before", 2.0),
        # Outcomes count once known: A (known 01-31) and C (known 02-19) before D; H (known 03-17) not.
        ("C", "shipper_id_outcomes_known", 0.0),
        ("D", "shipper_id_outcomes_known", 2.0),
        ("D", "shipper_id_misdeclared_rate", (1 + 5 * 0.25) / (2 + 5)),
        ("C", "shipper_id_misdeclared_rate", 0.25),
        ("D", "consignee_id_lines_before", 3.0),
        # E has no consignee: its consignee features are missing, not zero.
        ("E", "consignee_id_lines_before", np.nan),
        ("E", "consignee_id_misdeclared_rate", np.nan),
        # Flow TH|7901|USLAX: H in the 28 days before D; A and B in the 182 days before those.
        ("D", "flow_lines_trailing", 1.0),
        ("D", "flow_surge_ratio", (1 / 28) / ((2 + 1) / 182)),
        ("A", "flow_lines_trailing", 0.0),
    ],
)
def test_history_feature_values(features, line, column, expected):
    value = features.loc[line, column]
    if np.isnan(expected):
        assert np.isnan(value)
    else:
        assert value == pytest.approx(expected)


def test_switch_needs_direct_imports_from_china_before_the_ban():
    rows = [
        ("P", "2024-06-01", "S9", "K1", "811010", "CN", "CN", "USHOU", "0", ""),  # antimony, direct
        ("Q", "2025-02-01", "S8", "K1", "790111", "CN", "TH", "USLAX", "0", ""),  # zinc via hub
        ("R", "2025-02-01", "S8", "K2", "790111", "CN", "TH", "USLAX", "0", ""),  # never imported direct
        ("T", "2025-01-10", "S9", "K3", "811010", "CN", "CN", "USHOU", "0", ""),  # direct, after the ban
        ("U", "2025-02-01", "S8", "K3", "790111", "CN", "TH", "USLAX", "0", ""),
    ]
    lines = make_lines(rows)
    out = fitted(lines).transform(lines)
    assert out["consignee_direct_cn_target_before"].to_dict() == {"P": 0, "Q": 1, "R": 0, "T": 0, "U": 0}
    assert out["consignee_switched_to_hub"].to_dict() == {"P": 0, "Q": 1, "R": 0, "T": 0, "U": 0}


@pytest.mark.parametrize("mutation", ["later_line_changed", "later_line_added", "late_label_flipped"])
def test_features_do_not_see_the_future(mutation):
    lines = make_lines()
    history = fitted(lines)
    before = history.transform(lines).loc[["A", "B", "G", "C", "H", "D"]]
    changed = lines.copy()
    if mutation == "later_line_changed":
        changed.loc["E", ["shipper_id", "hs_code"]] = ["S1", "811010"]
        changed.loc["E", "declared_at"] = pd.Timestamp("2025-04-01")
    elif mutation == "later_line_added":
        extra = make_lines([("Z", "2025-05-01", "S1", "C1", "790111", "CN", "TH", "USLAX", "1", "1")])
        changed = pd.concat([changed, extra])
    else:  # H's outcome becomes known on 03-17, after D's date: flipping it must not change D
        changed.loc["H", "misdeclared"] = 1
    after = history.transform(changed).loc[before.index]
    pd.testing.assert_frame_equal(before[history.numeric_features_], after[history.numeric_features_])


def test_past_store_gives_the_same_features_as_one_batch():
    """Scoring later lines against a history store equals computing everything at once."""
    lines = make_lines()
    history = fitted(lines)
    at_once = history.transform(lines).loc[["D", "E"]]
    past, current = lines.loc[["A", "B", "G", "C", "H"]], lines.loc[["D", "E"]]
    from_store = history.transform(current, past=past)
    pd.testing.assert_frame_equal(at_once[history.numeric_features_], from_store[history.numeric_features_])


def test_rescoring_does_not_count_lines_twice():
    lines = make_lines()
    history = fitted(lines)
    past, current = lines.loc[["A", "B", "G", "C", "H"]], lines.loc[["D", "E"]]
    once = history.transform(current, past=past)
    again = history.transform(current, past=pd.concat([past, current]))
    pd.testing.assert_frame_equal(once[history.numeric_features_], again[history.numeric_features_])


@pytest.mark.parametrize(
    "groups, days, queries, expected",
    [
        ([0, 0, 0, 1], [1, 2, 2, 1], [(0, 2), (0, 3), (1, 1), (1, 5), (2, 9), (-1, 9)], [1, 3, 0, 1, 0, np.nan]),
    ],
)
def test_count_before(groups, days, queries, expected):
    qg, qd = (np.array(v) for v in zip(*queries))
    result = count_before(np.array(groups), np.array(days), qg, qd)
    np.testing.assert_array_equal(result, np.array(expected, dtype=float))


def test_count_in_window():
    result = count_in_window(np.array([0, 0, 0, 0]), np.array([1, 5, 9, 10]), np.array([0]), np.array([10]), 6, 1)
    assert result.tolist() == [1.0]  # the window [10 - 6, 10 - 1) = [4, 9) holds day 5 only


@pytest.fixture(scope="module")
def history_transformer() -> HistoryFeatures:
    return fitted(make_lines())


@settings(max_examples=5 if os.environ.get("MISDECLARE_TEST_FAST") else 15, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(["S1", "S2", "S3"]), st.sampled_from(["0", "1", ""])),
        min_size=2,
        max_size=30,
    ),
    st.integers(10, 50),
)
def test_property_no_feature_depends_on_later_lines_or_late_labels(history_transformer, rows, cutoff):
    """Random histories: features of lines before ``cutoff`` ignore everything after it."""
    base = pd.Timestamp("2025-01-01")
    data = [
        (
            f"L{i}",
            (base + pd.Timedelta(days=d)).strftime("%Y-%m-%d"),
            s,
            "C1",
            "790111",
            "CN",
            "TH",
            "USLAX",
            "1" if label else "0",
            label,
        )
        for i, (d, s, label) in enumerate(rows)
    ]
    lines = make_lines(data)
    history = history_transformer
    early = lines.index[lines["declared_at"] < base + pd.Timedelta(days=cutoff)]
    mutated = lines.copy()
    late = lines["declared_at"] >= base + pd.Timedelta(days=cutoff - history.label_delay_days)
    mutated.loc[late & mutated["misdeclared"].notna(), "misdeclared"] = (
        1 - mutated.loc[late & mutated["misdeclared"].notna(), "misdeclared"]
    )
    after_cutoff = lines["declared_at"] >= base + pd.Timedelta(days=cutoff)
    mutated.loc[after_cutoff, "shipper_id"] = "S1"
    columns = history.numeric_features_
    pd.testing.assert_frame_equal(history.transform(lines).loc[early, columns], history.transform(mutated).loc[early, columns])


def test_rescoring_a_stored_file_does_not_count_it_twice(tmp_path):
    """Through the real store: line_no comes back as a float and must still match."""
    from features.history_store import HistoryStore

    lines = make_lines()
    history = fitted(lines)
    store = HistoryStore(tmp_path / "history")
    past, current = lines.loc[["A", "B", "G", "C", "H"]], lines.loc[["D", "E"]]
    store.append(past)
    first = history.transform(current, past=store.read())
    store.append(current)
    again = history.transform(current, past=store.read())
    pd.testing.assert_frame_equal(first[history.numeric_features_], again[history.numeric_features_])
    assert first.loc["D", "shipper_id_lines_before"] == 4.0


def test_a_party_already_there_when_the_history_begins_has_unknown_tenure_not_a_short_one():
    lines = make_lines()
    history = HistoryFeatures(tenure_unknown_days=10).fit(lines)
    tenure = history.transform(lines)["shipper_id_days_since_first"]
    # S1 is first seen on the history's first day (2025-01-01): unknown on every later line.
    assert tenure[["C", "H", "D"]].isna().all()
    # S3 (2025-01-05) too, within 10 days of the start; S2 first appears on its own line's day.
    assert np.isnan(tenure["G"]) and np.isnan(tenure["E"])
    # Without the setting, tenures are counted from the first line as before.
    assert fitted(lines).transform(lines)["shipper_id_days_since_first"][["C", "H", "D"]].tolist() == [19, 45, 59]


def test_a_party_first_seen_after_the_coverage_window_has_its_tenure():
    lines = make_lines()
    history = HistoryFeatures(tenure_unknown_days=3).fit(lines)
    tenure = history.transform(lines)["shipper_id_days_since_first"]
    # The history begins on 2025-01-01; S1 was there on its first day: unknown.
    assert tenure[["C", "H", "D"]].isna().all()
    # When scored against a later store start (only lines from 2025-01-05 on), S1 counts from 01-20.
    later = lines[lines["declared_at"] >= "2025-01-05"]
    tenure = history.transform(later)["shipper_id_days_since_first"]
    assert tenure[["H", "D"]].tolist() == [26, 40]


def test_tenure_unknown_days_must_not_be_negative():
    with pytest.raises(ValueError, match="tenure_unknown_days must be >= 0, got -1"):
        HistoryFeatures(tenure_unknown_days=-1).fit(make_lines())


def test_tenure_is_censored_at_the_store_start_not_at_the_first_line_relevant_to_the_batch():
    rows = [
        # An unrelated party and flow: the store's first line.
        ("K", "2025-01-01", "S7", "C7", "940360", "DE", "DE", "USNYC", "", ""),
        ("L", "2025-03-01", "S9", "C9", "790111", "CN", "TH", "USLAX", "", ""),
        ("M", "2025-03-20", "S9", "C9", "790111", "CN", "TH", "USLAX", "", ""),
    ]
    lines = make_lines(rows)
    history = HistoryFeatures(tenure_unknown_days=10).fit(lines)
    scored = history.transform(lines.loc[["M"]], past=lines.loc[["K", "L"]])
    # Only L is relevant to M, but the store began on 2025-01-01: S9 is 19 days old, not unknown.
    assert scored["shipper_id_days_since_first"].tolist() == [19]
    # The same as when the whole history is one frame, as in training.
    assert history.transform(lines)["shipper_id_days_since_first"]["M"] == 19


_TEXT = st.one_of(st.none(), st.sampled_from(["a", "b", "S-1", "CN>US", ""]))


@given(st.lists(st.tuples(st.lists(_TEXT, max_size=8), st.lists(st.integers(0, 7), max_size=8)), max_size=5))
@settings(max_examples=200, deadline=None)
def test_events_stacked_from_codes_equal_the_stacked_text(pieces):
    """Event columns built from per-column codes encode exactly as the stacked text would: the same
    categories in the same order (first appearance) and the same codes, missing values as -1."""
    encoded, texts = [], []
    for values, rows in pieces:
        column = pd.Series(values, dtype="string")
        rows = np.array([r for r in rows if r < len(values)], dtype="int64")
        codes, categories = _encoded(column)
        encoded.append((codes[rows], categories))
        texts.append(np.asarray(column.astype(object), dtype=object)[rows])
    got = _stacked_category(encoded)
    expected = as_category(np.concatenate(texts) if texts else [])
    assert list(got.categories) == list(expected.categories)
    assert got.codes.tolist() == expected.codes.tolist()
