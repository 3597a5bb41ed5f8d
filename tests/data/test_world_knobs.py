"""Data tests of the generator's structural world knobs and of its observable selection columns.

Each knob defaults to "off" so that the default world stays byte-identical; each test turns one
on and checks the behaviour it promises, against the default world drawn with the same seed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.reference import load_reference
from features.schema import CANONICAL_COLUMNS, LABEL_COLUMNS, validate_manifest
from training.synthetic import SELECTION_COLUMNS, SIM_COLUMNS, generate_manifest, load_generator_config

START, END = "2023-01-01", "2026-06-30"
N_ROWS = 40_000
SEED = 11
LEGITIMATE = ("background_cover", "background_other", "legit_target")
INSPECTION_COLUMNS = ("inspected", "misdeclared", "found_commodity", *SELECTION_COLUMNS, "sim_selection")
# The knobs' "off" values: the default world must not change under any of them.
OFF = {
    "entities": {"heavy_newcomer_share": 0.0},
    "fraud": {"established_party_share": 0.0, "undervalue_factor": [1.0, 1.0]},
}
# A new diversion route through a country the reference tables do not list as a hub.
VN_ROUTE = {
    "export": "VN",
    "loading": {"VNSGN": 0.6, "VNHPH": 0.4},
    "discharge": {"USLAX": 1.0},
    "transship": {"": 1.0},
    "modes": {"sea": 1.0},
    "weights": {"antimony": 0.5, "gallium": 0.2, "germanium": 0.2, "rare_earth": 0.5},
}


def _generate(**overrides) -> pd.DataFrame:
    return generate_manifest(N_ROWS, SEED, START, END, config=overrides)


@pytest.fixture(scope="module")
def default_frame():
    return _generate()


@pytest.fixture(scope="module")
def config():
    return load_generator_config()


def _onset(reference, measure: str = "us_ban") -> pd.Timestamp:
    return pd.Timestamp(reference.control_dates.set_index("measure_id")["date"][measure])


def _early_lines_of_late_shippers(frame: pd.DataFrame, after_days: int, within_days: int) -> pd.DataFrame:
    """Lines filed in a shipper's first ``within_days`` days, for shippers first seen ``after_days`` in."""
    first = frame.groupby("shipper_id")["declared_at"].transform("min")
    late = first >= pd.Timestamp(START) + pd.Timedelta(days=after_days)
    early = frame["declared_at"] < first + pd.Timedelta(days=within_days)
    return frame[late & early]


# ---------------------------------------------------------------------------------------------
# Defaults reproduce today's world
# ---------------------------------------------------------------------------------------------


def test_structural_knobs_default_to_off(config):
    assert config["entities"]["heavy_newcomer_share"] == OFF["entities"]["heavy_newcomer_share"]
    assert config["fraud"]["established_party_share"] == OFF["fraud"]["established_party_share"]
    assert list(config["fraud"]["undervalue_factor"]) == OFF["fraud"]["undervalue_factor"]


def test_knobs_set_off_explicitly_reproduce_the_default_world(default_frame):
    # The size knobs of an inactive mechanism draw nothing and change nothing either.
    explicit = {
        "entities": {**OFF["entities"], "heavy_newcomer_declarations": 3, "heavy_newcomer_days": 2},
        "fraud": OFF["fraud"],
    }
    pd.testing.assert_frame_equal(_generate(**explicit), default_frame)


# ---------------------------------------------------------------------------------------------
# Observable selection columns
# ---------------------------------------------------------------------------------------------


def test_selection_columns_sit_between_canonical_and_simulation(default_frame):
    assert SELECTION_COLUMNS == ("selection_probability", "selected_by")
    assert list(default_frame.columns) == [*CANONICAL_COLUMNS, *SELECTION_COLUMNS, *SIM_COLUMNS]


def test_selection_columns_follow_the_inspection(default_frame, config):
    frame = default_frame
    inspected = frame["inspected"] == 1
    assert (frame["selected_by"].isna() == ~inspected).all()
    assert (frame["selection_probability"].isna() == ~inspected).all()
    expected = frame["sim_selection"].map({"random": "exploration", "targeted": "targeted"})
    assert frame.loc[inspected, "selected_by"].tolist() == expected[inspected].tolist()
    exploration = frame["selected_by"] == "exploration"
    assert exploration.sum() > 0 and (frame["selected_by"] == "targeted").sum() > 0
    assert (frame.loc[exploration, "selection_probability"] == config["inspection"]["random_share"]).all()
    assert (frame.loc[frame["selected_by"] == "targeted", "selection_probability"] == 1.0).all()


def test_exploration_probability_is_the_configured_random_share():
    frame = generate_manifest(5_000, 3, START, END, config={"inspection": {"random_share": 0.04}})
    exploration = frame["selected_by"] == "exploration"
    assert exploration.sum() > 0
    assert (frame.loc[exploration, "selection_probability"] == 0.04).all()


def test_validation_keeps_the_selection_columns(default_frame):
    frame = default_frame.head(3_000)
    result = validate_manifest(frame.drop(columns=list(SIM_COLUMNS)))
    assert len(result.quarantine) == 0
    pd.testing.assert_series_equal(result.valid["selected_by"], frame["selected_by"], check_dtype=False)
    pd.testing.assert_series_equal(result.valid["selection_probability"], frame["selection_probability"])


def test_generate_command_writes_the_selection_columns(tmp_path):
    from serve.cli import app

    out = tmp_path / "manifest.csv"
    result = CliRunner().invoke(app, ["generate", "--rows", "3000", "--seed", "4", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    assert list(written.columns) == [*CANONICAL_COLUMNS, *SELECTION_COLUMNS, *SIM_COLUMNS]
    assert set(written["selected_by"].dropna()) == {"exploration", "targeted"}
    assert (written["selected_by"].isna() == (written["inspected"] == 0)).all()


def test_an_unlabelled_manifest_carries_no_outcome_selection_or_truth(tmp_path):
    from serve.cli import app

    out = tmp_path / "arriving.csv"
    result = CliRunner().invoke(app, ["generate", "--rows", "3000", "--seed", "4", "--out", str(out), "--unlabelled"])
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out, nrows=1).columns) == [c for c in CANONICAL_COLUMNS if c not in LABEL_COLUMNS]


# ---------------------------------------------------------------------------------------------
# Heavy legitimate newcomers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def newcomer_frame():
    return _generate(entities={"heavy_newcomer_share": 0.2})


def test_heavy_newcomers_appear_late_and_ship_at_once(newcomer_frame, default_frame):
    # Shippers first seen after the first 90 days with >= 30 lines in their first 30 days.
    heavy = _early_lines_of_late_shippers(newcomer_frame, 90, 30).groupby("shipper_id").size()
    assert (heavy >= 30).sum() >= 10
    usual = _early_lines_of_late_shippers(default_frame, 90, 30).groupby("shipper_id").size()
    assert (usual >= 30).sum() == 0


def test_heavy_newcomers_are_legitimate(newcomer_frame):
    heavy = _early_lines_of_late_shippers(newcomer_frame, 90, 30).groupby("shipper_id").size()
    lines = newcomer_frame[newcomer_frame["shipper_id"].isin(heavy[heavy >= 30].index)]
    assert len(lines) > 0
    assert (lines["sim_fraud"] == 0).all()
    assert set(lines["sim_scenario"]) <= set(LEGITIMATE)


def test_heavy_newcomers_only_take_over_declarations(newcomer_frame, default_frame):
    # Declarations are drawn before their parties: lines per day and scenario stay the same.
    def per_day(frame):
        return frame.groupby(["declared_at", "sim_scenario"]).size()

    pd.testing.assert_series_equal(per_day(newcomer_frame), per_day(default_frame))


# ---------------------------------------------------------------------------------------------
# Fraud through long-established firms
# ---------------------------------------------------------------------------------------------


def _share_with_legitimate_lines_before(frame: pd.DataFrame, party: str, onset: pd.Timestamp) -> float:
    """Share of fraud-network lines whose ``party`` filed legitimate lines before ``onset``."""
    legitimate = frame[frame["sim_scenario"].isin(LEGITIMATE) & (frame["declared_at"] < onset)]
    fraud = frame[(frame["sim_fraud"] == 1) & (frame["sim_scenario"] == "fraud_network")]
    return float(fraud[party].isin(set(legitimate[party])).mean())


def test_fraud_through_established_firms_uses_parties_with_a_legitimate_past(default_frame):
    onset = _onset(load_reference())
    borrowed = _generate(fraud={"established_party_share": 1.0})
    assert _share_with_legitimate_lines_before(borrowed, "shipper_id", onset) >= 0.9
    assert _share_with_legitimate_lines_before(borrowed, "consignee_id", onset) >= 0.9
    assert _share_with_legitimate_lines_before(default_frame, "shipper_id", onset) == 0.0


def test_fraud_through_established_firms_keeps_the_fraud_level(default_frame):
    borrowed = _generate(fraud={"established_party_share": 0.5})
    assert borrowed["sim_fraud"].mean() == pytest.approx(default_frame["sim_fraud"].mean(), abs=0.005)
    fraud = borrowed["sim_fraud"] == 1
    # Half of the fraud now shares its shippers with legitimate trade.
    legitimate_shippers = set(borrowed.loc[borrowed["sim_scenario"].isin(LEGITIMATE), "shipper_id"])
    assert 0.3 <= borrowed.loc[fraud, "shipper_id"].isin(legitimate_shippers).mean() <= 0.7


# ---------------------------------------------------------------------------------------------
# Depth of undervaluation
# ---------------------------------------------------------------------------------------------


def test_constant_undervalue_factor_scales_only_undervalued_lines(default_frame):
    scaled = _generate(fraud={"undervalue_factor": [0.4, 0.4]})
    undervalued = default_frame["sim_disguise"] == "undervalued"
    assert undervalued.sum() > 100
    # Nothing else is drawn differently (a single factor draws nothing); only customs' choice of
    # lines to inspect follows the new values.
    declared = [c for c in default_frame.columns if c not in ("declared_value_usd", *INSPECTION_COLUMNS)]
    pd.testing.assert_frame_equal(scaled[declared], default_frame[declared])
    assert scaled.loc[~undervalued, "declared_value_usd"].equals(default_frame.loc[~undervalued, "declared_value_usd"])
    ratio = scaled.loc[undervalued, "declared_value_usd"] / default_frame.loc[undervalued, "declared_value_usd"]
    assert ratio.to_numpy() == pytest.approx(0.4, abs=0.01)


def test_undervalue_factor_range_spreads_within_its_bounds(default_frame):
    scaled = _generate(fraud={"undervalue_factor": [0.2, 0.5]})
    undervalued = default_frame["sim_disguise"] == "undervalued"
    pd.testing.assert_series_equal(scaled["net_weight_kg"], default_frame["net_weight_kg"])
    ratio = (scaled.loc[undervalued, "declared_value_usd"] / default_frame.loc[undervalued, "declared_value_usd"]).to_numpy()
    assert ratio.min() >= 0.2 - 0.01 and ratio.max() <= 0.5 + 0.01
    assert np.quantile(ratio, 0.1) < 0.25 and np.quantile(ratio, 0.9) > 0.45


# ---------------------------------------------------------------------------------------------
# A diversion route through a country that is not a diversion hub
# ---------------------------------------------------------------------------------------------


def test_override_adds_a_route_through_a_non_hub_country(default_frame):
    reference = load_reference()
    assert "VN" not in reference.diversion_hubs
    assert {"VNSGN", "VNHPH"} <= set(reference.ports["locode"])
    frame = _generate(fraud={"routes": {"vn_sea": VN_ROUTE}})
    via_vietnam = frame[(frame["sim_fraud"] == 1) & (frame["export_country"] == "VN")]
    assert len(via_vietnam) >= 50
    assert set(via_vietnam["sim_route"]) <= {"vn_sea"}
    assert set(via_vietnam["port_of_loading"]) <= {"VNSGN", "VNHPH"}
    assert ((default_frame["sim_fraud"] == 1) & (default_frame["export_country"] == "VN")).sum() == 0


# ---------------------------------------------------------------------------------------------
# Bad values name their key
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"entities": {"heavy_newcomer_share": 1.5}}, "'entities.heavy_newcomer_share' must be a share in"),
        (
            {"entities": {"heavy_newcomer_share": 0.1, "heavy_newcomer_declarations": 0}},
            "'entities.heavy_newcomer_declarations' must be >= 1, got 0",
        ),
        (
            {"entities": {"heavy_newcomer_share": 0.1, "heavy_newcomer_days": "soon"}},
            "'entities.heavy_newcomer_days' must be a number, got 'soon'",
        ),
        ({"fraud": {"established_party_share": -0.1}}, "'fraud.established_party_share' must be a share in"),
        ({"fraud": {"undervalue_factor": [0.0, 0.5]}}, "'fraud.undervalue_factor' must be [low, high] with 0 < low"),
        ({"fraud": {"undervalue_factor": 0.5}}, "'fraud.undervalue_factor' must be a [low, high] pair, got 0.5"),
    ],
)
def test_bad_knob_values_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        generate_manifest(2_000, 1, START, END, config=override)
