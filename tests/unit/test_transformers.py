"""features/transformers.py: exact feature values on hand-made lines, degenerate values, state."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from features.transformers import (
    CategoryEncoder,
    DeclaredHSFeatures,
    RouteFeatures,
    ValueFeatures,
    WeightFeatures,
)

NAN = float("nan")

# Price bands read from features/data/target_goods.csv: the widest low/high over each band's rows
# (antimony 19 = trioxide 2024 low, 62 = metal 2025 high; gallium 220-1450; germanium 1400-5000;
# NdPr oxide and magnets 20-85; Dy/Tb oxides 230-4000).
BANDS = {
    "antimony": [19.0, 62.0],
    "gallium": [220.0, 1450.0],
    "germanium": [1400.0, 5000.0],
    "rare_earth_heavy": [230.0, 4000.0],
    "rare_earth_light": [20.0, 85.0],
}


def lines(**columns) -> pd.DataFrame:
    """A typed frame as validate_manifest returns it (text columns as string dtype)."""
    frame = pd.DataFrame(columns)
    for name, values in frame.items():
        if name in ("packages", "containers", "line_no", "inspected", "misdeclared"):
            frame[name] = pd.array(values, dtype="Int64")
        elif frame[name].dtype == object:
            frame[name] = frame[name].astype("string")
    return frame


def assert_values(actual, expected):
    """Equal within 1e-6, NaN where NaN is expected, never inf."""
    actual = np.asarray(actual, dtype="float64")
    assert not np.isinf(actual).any(), actual
    np.testing.assert_allclose(actual, np.asarray(expected, dtype="float64"), rtol=0, atol=1e-6, equal_nan=True)


# ----------------------------------------------------------------------------- weight


def test_weight_features_exact_values():
    frame = lines(gross_weight_kg=[1000.0, 100.0], net_weight_kg=[800.0, NAN], packages=[20, None], containers=[2, None])

    out = WeightFeatures().fit(frame).transform(frame)

    assert_values(out["log_gross_weight_kg"], [3.0, 2.0])
    assert_values(out["log_net_weight_kg"], [math.log10(800), NAN])
    assert_values(out["net_gross_ratio"], [0.8, NAN])
    assert_values(out["kg_per_package"], [50.0, NAN])
    assert_values(out["log_kg_per_package"], [math.log10(50), NAN])
    assert_values(out["kg_per_container"], [500.0, NAN])
    assert_values(out["log_kg_per_container"], [math.log10(500), NAN])


WEIGHT_COLUMNS = (
    "log_gross_weight_kg",
    "log_net_weight_kg",
    "net_gross_ratio",
    "kg_per_package",
    "log_kg_per_package",
    "kg_per_container",
    "log_kg_per_container",
)


@pytest.mark.parametrize(
    ("gross", "net", "packages", "containers", "expected"),
    [
        pytest.param(0.0, 0.0, 0, 0, [NAN] * 7, id="all-zero"),
        pytest.param(NAN, NAN, None, None, [NAN] * 7, id="all-missing"),
        pytest.param(0.0, NAN, 5, 1, [NAN, NAN, NAN, 0.0, NAN, 0.0, NAN], id="zero-gross"),
        pytest.param(NAN, 5.0, 0, 0, [NAN, math.log10(5), NAN, NAN, NAN, NAN, NAN], id="missing-gross"),
        pytest.param(100.0, 50.0, 0, 0, [2.0, math.log10(50), 0.5, NAN, NAN, NAN, NAN], id="zero-packages"),
    ],
)
def test_weight_features_degenerate_values_give_nan_never_inf(gross, net, packages, containers, expected):
    frame = lines(gross_weight_kg=[gross], net_weight_kg=[net], packages=[packages], containers=[containers])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # handled, not warned about (no divide-by-zero, no log of zero)
        out = WeightFeatures().fit(frame).transform(frame)

    assert_values(out.loc[0, list(WEIGHT_COLUMNS)].to_numpy(dtype="float64"), expected)


def test_weight_features_tolerate_absent_optional_columns():
    frame = lines(gross_weight_kg=[1000.0])

    out = WeightFeatures().fit(frame).transform(frame)

    assert_values(out["log_gross_weight_kg"], [3.0])
    assert_values(out[["log_net_weight_kg", "kg_per_package", "kg_per_container"]].to_numpy()[0], [NAN] * 3)


# ----------------------------------------------------------------------------- value


def value_training_lines() -> pd.DataFrame:
    """log10 value per kg: 790111 → 1, 1; 790112, 790119 → 5, 5; 790700 → 4; 830629 → 0 and a zero value."""
    return lines(
        hs_code=["790111", "790111", "790112", "790119", "790700", "830629", "830629"],
        net_weight_kg=[100.0] * 7,
        gross_weight_kg=[110.0] * 7,
        declared_value_usd=[1_000.0, 1_000.0, 1e7, 1e7, 1e6, 100.0, 0.0],
    )


def test_typical_value_per_kg_is_learned_per_prefix_with_min_count():
    step = ValueFeatures(min_count=2).fit(value_training_lines())

    # 6 digits: only 790111 has 2 lines; 4 digits: 7901 = median(1, 1, 5, 5); 2 digits: 79 = median(1, 1, 5, 5, 4);
    # 830629's zero-value line has no log value and does not count.
    assert step.typical_log_value_per_kg_ == {"790111": 1.0, "7901": 3.0, "79": 4.0}
    assert step.global_log_value_per_kg_ == 2.5  # median(1, 1, 5, 5, 4, 0)


def test_min_count_one_gives_every_prefix_its_own_value():
    step = ValueFeatures(min_count=1).fit(value_training_lines())

    assert step.typical_log_value_per_kg_["830629"] == 0.0
    assert step.typical_log_value_per_kg_["790700"] == 4.0


@pytest.mark.parametrize(
    ("hs_code", "typical_log"),
    [
        pytest.param("790111", 1.0, id="own-6-digit"),
        pytest.param("790112", 3.0, id="rare-6-falls-back-to-4"),
        pytest.param("7901120000", 3.0, id="10-digit-code"),
        pytest.param("790800", 4.0, id="unseen-6-and-4-falls-back-to-2"),
        pytest.param("830629", 2.5, id="rare-everywhere-global-median"),
        pytest.param("999999", 2.5, id="unseen-global-median"),
    ],
)
def test_value_log_ratio_to_the_typical_value_of_the_declared_code(hs_code, typical_log):
    step = ValueFeatures(min_count=2).fit(value_training_lines())
    frame = lines(hs_code=[hs_code], net_weight_kg=[50.0], gross_weight_kg=[60.0], declared_value_usd=[500.0])

    out = step.transform(frame)

    assert_values(out["value_per_kg"], [10.0])  # net weight, not gross
    assert_values(out["log_value_per_kg"], [1.0])
    assert_values(out["hs_typical_usd_per_kg"], [10**typical_log])
    assert_values(out["value_log_ratio_hs"], [1.0 - typical_log])


def test_value_per_kg_uses_gross_weight_when_net_is_missing_or_zero():
    step = ValueFeatures(min_count=1).fit(value_training_lines())
    frame = lines(
        hs_code=["790111"] * 2, net_weight_kg=[NAN, 0.0], gross_weight_kg=[40.0, 40.0], declared_value_usd=[400.0, 400.0]
    )

    assert_values(step.transform(frame)["value_per_kg"], [10.0, 10.0])


def test_price_bands_come_from_the_target_goods_table():
    step = ValueFeatures().fit(value_training_lines())

    assert step.price_bands_ == BANDS
    assert [f"band_dist_{b}" for b in BANDS] == step.numeric_features_[-5:]


@pytest.mark.parametrize(
    ("usd_per_kg", "distances"),
    [
        pytest.param(
            30.0,
            {
                "antimony": 0.0,
                "rare_earth_light": 0.0,
                "gallium": math.log10(30 / 220),
                "germanium": math.log10(30 / 1400),
                "rare_earth_heavy": math.log10(30 / 230),
            },
            id="inside-antimony-and-light-rare-earth",
        ),
        pytest.param(
            100.0,
            {
                "antimony": math.log10(100 / 62),
                "rare_earth_light": math.log10(100 / 85),
                "gallium": math.log10(100 / 220),
                "germanium": math.log10(100 / 1400),
                "rare_earth_heavy": math.log10(100 / 230),
            },
            id="above-antimony",
        ),
        pytest.param(
            19.0,
            {
                "antimony": 0.0,
                "rare_earth_light": math.log10(19 / 20),
                "gallium": math.log10(19 / 220),
                "germanium": math.log10(19 / 1400),
                "rare_earth_heavy": math.log10(19 / 230),
            },
            id="on-the-lower-edge",
        ),
        pytest.param(
            6000.0,
            {
                "antimony": math.log10(6000 / 62),
                "rare_earth_light": math.log10(6000 / 85),
                "gallium": math.log10(6000 / 1450),
                "germanium": math.log10(6000 / 5000),
                "rare_earth_heavy": math.log10(6000 / 4000),
            },
            id="above-every-band",
        ),
    ],
)
def test_band_distances(usd_per_kg, distances):
    step = ValueFeatures().fit(value_training_lines())
    frame = lines(hs_code=["790111"], net_weight_kg=[10.0], gross_weight_kg=[10.0], declared_value_usd=[usd_per_kg * 10])

    out = step.transform(frame)

    for band, distance in distances.items():
        assert_values(out[f"band_dist_{band}"], [distance])


@pytest.mark.parametrize(
    ("hs_code", "usd_per_kg", "distance"),
    [
        pytest.param("790111", 55.0, math.log10(55 / 3.3), id="zinc-at-antimony-price"),
        pytest.param("790111", 3.0, 0.0, id="zinc-in-band"),
        pytest.param("790111", 1.0, math.log10(1 / 2.6), id="zinc-below-band"),
        pytest.param("732510", 10.0, math.log10(10 / 3), id="4-digit-prefix-7325"),
        pytest.param("811300", 10.0, NAN, id="cover-code-without-band"),
        pytest.param("940360", 10.0, NAN, id="code-not-in-table"),
    ],
)
def test_distance_to_the_declared_codes_band(hs_code, usd_per_kg, distance):
    step = ValueFeatures().fit(value_training_lines())
    frame = lines(hs_code=[hs_code], net_weight_kg=[10.0], gross_weight_kg=[10.0], declared_value_usd=[usd_per_kg * 10])

    assert_values(step.transform(frame)["hs_band_log_distance"], [distance])


@pytest.mark.parametrize(
    ("value", "net", "gross"),
    [
        pytest.param(0.0, 10.0, 10.0, id="zero-value"),
        pytest.param(NAN, 10.0, 10.0, id="missing-value"),
        pytest.param(100.0, NAN, 0.0, id="zero-weight"),
        pytest.param(100.0, NAN, NAN, id="missing-weight"),
    ],
)
def test_value_features_degenerate_values_give_nan(value, net, gross):
    step = ValueFeatures().fit(value_training_lines())
    frame = lines(hs_code=["790111"], net_weight_kg=[net], gross_weight_kg=[gross], declared_value_usd=[value])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = step.transform(frame)

    for column in ["log_value_per_kg", "value_log_ratio_hs", "hs_band_log_distance"] + [f"band_dist_{b}" for b in BANDS]:
        assert math.isnan(out[column].iloc[0]), column
    assert not np.isinf(out["hs_typical_usd_per_kg"]).any()


def test_value_features_fit_on_lines_without_any_value():
    frame = lines(hs_code=["790111"], net_weight_kg=[10.0], gross_weight_kg=[10.0], declared_value_usd=[0.0])

    step = ValueFeatures(min_count=1).fit(frame)

    assert step.typical_log_value_per_kg_ == {}
    assert step.global_log_value_per_kg_ == 0.0


# ----------------------------------------------------------------------------- declared goods


@pytest.mark.parametrize(
    ("hs_code", "cover", "target", "family", "declared"),
    [
        pytest.param("790111", 1.0, 0.0, "metal_ingot", "none", id="zinc-cover"),
        pytest.param("7325100000", 1.0, 0.0, "iron", "none", id="4-digit-prefix-7325"),
        pytest.param("690721", 1.0, 0.0, "ceramic", "none", id="4-digit-prefix-6907"),
        pytest.param("830629", 1.0, 0.0, "craft_metal", "none", id="statuette-cover"),
        pytest.param("811292", 0.0, 1.0, "none", "gallium", id="gallium-target"),
        pytest.param("850511", 0.0, 1.0, "none", "rare_earth", id="magnet-target"),
        pytest.param("282580", 0.0, 1.0, "none", "antimony", id="antimony-oxide-target"),
        pytest.param("940360", 0.0, 0.0, "none", "none", id="furniture-other"),
    ],
)
def test_cover_and_target_flags_from_the_hs_table(hs_code, cover, target, family, declared):
    frame = lines(hs_code=[hs_code])

    out = DeclaredHSFeatures().fit(frame).transform(frame)

    row = out.iloc[0]
    assert (row["is_cover_code"], row["is_target_code"], row["cover_family"], row["declared_target"]) == (
        cover,
        target,
        family,
        declared,
    )
    assert (row["hs_chapter"], row["hs_heading"], row["hs_subheading"]) == (hs_code[:2], hs_code[:4], hs_code[:6])


def test_missing_hs_code_is_neither_cover_nor_target():
    frame = lines(hs_code=pd.array([None], dtype="string"))

    row = DeclaredHSFeatures().fit(frame).transform(frame).iloc[0]

    assert (row["is_cover_code"], row["is_target_code"], row["cover_family"]) == (0.0, 0.0, "none")


# ----------------------------------------------------------------------------- route

ROUTE_CASES = [
    # (origin, export, loading port, transshipment ports, via_hub, n_transshipments)
    pytest.param("CN", "CN", "CNSHA", None, 0.0, 0.0, id="direct-from-china"),
    pytest.param("CN", "TH", "THLCH", None, 1.0, 0.0, id="exported-from-hub"),
    pytest.param("CN", "CN", "CNSHA", "MXZLO", 1.0, 1.0, id="transshipped-in-hub"),
    pytest.param("CN", "CN", "CNSHA", "CNNGB;THLCH", 1.0, 2.0, id="hub-second-transshipment"),
    pytest.param("CN", "CN", "THBKK", None, 1.0, 0.0, id="loaded-in-hub"),
    pytest.param("CN", "CN", "CNSHA", "CNNGB;KRPUS", 0.0, 2.0, id="transshipped-elsewhere"),
    pytest.param("JP", "JP", None, None, 0.0, 0.0, id="no-ports"),
]


@pytest.mark.parametrize(("origin", "export", "loading", "transship", "via_hub", "n_transship"), ROUTE_CASES)
def test_via_hub_and_transshipments(origin, export, loading, transship, via_hub, n_transship):
    frame = lines(
        origin_country=[origin],
        export_country=[export],
        port_of_loading=pd.array([loading], dtype="string"),
        transshipment_ports=pd.array([transship], dtype="string"),
        declared_at=[pd.Timestamp("2025-01-15")],
    )

    row = RouteFeatures().fit(frame).transform(frame).iloc[0]

    assert (row["via_hub"], row["n_transshipments"]) == (via_hub, n_transship)


def test_route_flags_from_the_country_table():
    frame = lines(
        origin_country=["CN", "TH", "DE", "CN"],
        export_country=["TH", "TH", "DE", "KR"],
        declared_at=pd.to_datetime(["2025-01-15"] * 4),
    )

    step = RouteFeatures().fit(frame)
    out = step.transform(frame)

    assert step.hubs_ == ["MX", "TH"]
    assert step.producer_countries_ == ["AU", "BE", "BO", "CA", "CN", "DE", "JP", "MY", "OM", "TJ", "TR", "US"]
    assert out["origin_ne_export"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert out["declared_origin_is_hub"].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert out["export_lacks_capacity"].tolist() == [1.0, 1.0, 0.0, 1.0]


def test_days_since_each_control_measure_but_not_the_suspension():
    frame = lines(
        origin_country=["CN", "CN"], export_country=["CN", "CN"], declared_at=pd.Series(pd.to_datetime(["2025-01-15", None]))
    )

    step = RouteFeatures().fit(frame)
    out = step.transform(frame)

    assert step.measures_ == {
        "ga_ge_licensing": "2023-08-01",
        "sb_licensing": "2024-09-15",
        "us_ban": "2024-12-03",
        "re_licensing": "2025-04-04",
        "re_extension": "2025-10-09",
    }
    expected = {"ga_ge_licensing": 533.0, "sb_licensing": 122.0, "us_ban": 43.0, "re_licensing": -79.0, "re_extension": -267.0}
    for measure, days in expected.items():
        assert_values(out[f"days_since_{measure}"], [days, NAN])
    assert not any("suspension" in column for column in out.columns)
    groups = step.feature_groups()
    assert {groups[f"days_since_{m}"] for m in expected} == {"timing"}
    assert groups["via_hub"] == "route"


# ----------------------------------------------------------------------------- categories


def test_category_codes_follow_frequency_and_unseen_values_get_zero():
    train = lines(port=["USLAX"] * 3 + ["USHOU"] * 2 + ["USSAV"])
    score = lines(port=pd.array(["USLAX", "USHOU", "USSAV", "USNYC", None], dtype="string"))

    step = CategoryEncoder(columns=("port",), min_count=2).fit(train)
    out = step.transform(score)

    assert step.vocabulary_ == {"port": ["USLAX", "USHOU"]}
    assert out["port_code"].tolist() == [1, 2, 0, 0, 0]
    assert out["port_code"].dtype == "int32"
    assert step.code_columns == ["port_code"]


def test_category_ties_are_ordered_by_value_and_capped_by_max_categories():
    train = lines(country=["TH", "MX", "MX", "TH", "CN"])

    assert CategoryEncoder(columns=("country",), min_count=1).fit(train).vocabulary_ == {"country": ["MX", "TH", "CN"]}
    assert CategoryEncoder(columns=("country",), min_count=1, max_categories=1).fit(train).vocabulary_ == {"country": ["MX"]}


def test_missing_is_never_a_category():
    train = lines(country=pd.array([None] * 6 + ["CN"] * 5, dtype="string"))

    assert CategoryEncoder(columns=("country",), min_count=1).fit(train).vocabulary_ == {"country": ["CN"]}


# ----------------------------------------------------------------------------- conventions


@pytest.mark.parametrize(
    ("step", "message"),
    [
        pytest.param(ValueFeatures(min_count=0), "min_count must be >= 1, got 0", id="value-min-count"),
        pytest.param(CategoryEncoder(min_count=-1), "min_count must be >= 1, got -1", id="category-min-count"),
        pytest.param(CategoryEncoder(max_categories=0), "max_categories must be >= 1, got 0", id="max-categories"),
    ],
)
def test_invalid_parameters_are_refused_at_fit_naming_parameter_and_value(step, message):
    with pytest.raises(ValueError) as error:
        step.fit(value_training_lines())

    assert str(error.value) == message


def test_init_only_stores_parameters_so_clone_works():
    step = ValueFeatures(min_count=7, reference_dir=None)

    assert clone(step).get_params() == {"min_count": 7, "reference_dir": None}
    assert CategoryEncoder(columns=("a",), min_count=3).get_params() == {"columns": ("a",), "min_count": 3, "max_categories": 250}


@pytest.mark.parametrize(
    "step",
    [WeightFeatures(), ValueFeatures(), DeclaredHSFeatures(), RouteFeatures(), CategoryEncoder(columns=("hs_code",))],
    ids=lambda s: type(s).__name__,
)
def test_transform_before_fit_is_refused(step):
    with pytest.raises(NotFittedError):
        step.transform(value_training_lines())


@pytest.mark.parametrize(
    "step",
    [
        WeightFeatures(),
        ValueFeatures(min_count=1),
        DeclaredHSFeatures(),
        RouteFeatures(),
        CategoryEncoder(columns=("hs_code",), min_count=1),
    ],
    ids=lambda s: type(s).__name__,
)
def test_state_round_trip_and_input_left_unchanged(step):
    frame = value_training_lines().assign(declared_at=pd.Timestamp("2025-01-15"), origin_country="CN", export_country="TH")
    before = copy.deepcopy(frame)

    fitted = step.fit(frame)
    out = fitted.transform(frame)
    rebuilt = type(step).from_state(fitted.get_state())

    pd.testing.assert_frame_equal(frame, before)
    pd.testing.assert_frame_equal(rebuilt.transform(frame), out)
    assert set(before.columns) < set(out.columns)


def test_state_of_another_class_is_refused():
    state = WeightFeatures().fit(value_training_lines()).get_state()

    with pytest.raises(ValueError, match="state is for 'WeightFeatures', not 'ValueFeatures'"):
        ValueFeatures.from_state(state)
