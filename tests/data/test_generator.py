"""Data tests of the synthetic manifest generator (training.synthetic).

Expected values are read from the reference tables and the generator configuration, never
repeated here, so that the tests follow the data files.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import training
from features.reference import load_reference
from features.schema import CANONICAL_COLUMNS, validate_manifest
from training.synthetic import SELECTION_COLUMNS, SIM_COLUMNS, generate_manifest, load_generator_config

START, END = "2023-01-01", "2026-06-30"
N_ROWS = 40_000
SCENARIO_FILE = Path(training.__file__).parent / "data" / "scenario_new_route.yaml"
# Noise allowance around a USD/kg band, in standard deviations of the configured price noise.
BAND_SIGMAS = 3.0


@pytest.fixture(scope="module")
def reference():
    return load_reference()


@pytest.fixture(scope="module")
def config():
    return load_generator_config()


@pytest.fixture(scope="module")
def frame():
    return generate_manifest(N_ROWS, 11, START, END)


@pytest.fixture(scope="module")
def scenario_frame():
    return generate_manifest(N_ROWS // 2, 5, START, END, config=load_generator_config(SCENARIO_FILE))


def _day(value: str) -> pd.Timestamp:
    return pd.Timestamp(value)


def _measure_date(reference, measure_id: str) -> pd.Timestamp:
    dates = reference.control_dates.set_index("measure_id")["date"]
    return pd.Timestamp(dates[measure_id])


def _per_day(mask: pd.Series, dates: pd.Series, first: pd.Timestamp, last: pd.Timestamp) -> float:
    """Lines per day of ``mask`` with first <= date < last."""
    inside = mask & (dates >= first) & (dates < last)
    return inside.sum() / max((last - first).days, 1)


# ---------------------------------------------------------------------------------------------
# Schema, shape, determinism
# ---------------------------------------------------------------------------------------------


def test_every_line_passes_the_schema(frame):
    result = validate_manifest(frame)
    assert len(result.quarantine) == 0, result.quarantine["quarantine_reason"].value_counts().head()
    assert len(result.valid) == len(frame)


def test_csv_round_trip_passes_the_schema(frame, tmp_path):
    path = tmp_path / "manifest.csv"
    frame.head(5_000).to_csv(path, index=False)
    result = validate_manifest(pd.read_csv(path, dtype=str, keep_default_na=False))
    assert len(result.quarantine) == 0
    assert result.valid["hs_code"].tolist() == frame["hs_code"].head(5_000).tolist()


def test_columns_are_canonical_then_selection_then_simulation(frame):
    assert list(frame.columns) == [*CANONICAL_COLUMNS, *SELECTION_COLUMNS, *SIM_COLUMNS]
    assert all(column.startswith("sim_") for column in SIM_COLUMNS)


def test_same_seed_gives_the_same_frame():
    first = generate_manifest(3_000, 42, START, END)
    second = generate_manifest(3_000, 42, START, END)
    pd.testing.assert_frame_equal(first, second)


def test_different_seed_gives_a_different_frame():
    first = generate_manifest(3_000, 42, START, END)
    other = generate_manifest(3_000, 43, START, END)
    assert not first["declared_value_usd"].equals(other["declared_value_usd"])
    assert not first["declaration_id"].equals(other["declaration_id"])


@pytest.mark.parametrize("n_rows", [1, 2, 7, 999, 4_321])
def test_row_count_is_exact_and_keys_are_unique(n_rows):
    frame = generate_manifest(n_rows, 3, START, END)
    assert len(frame) == n_rows
    assert not frame.duplicated(["declaration_id", "line_no"]).any()
    # Lines of a declaration are numbered 1..k without gaps.
    sizes = frame.groupby("declaration_id")["line_no"].agg(["max", "count"])
    assert (sizes["max"] == sizes["count"]).all()
    assert frame.groupby("declaration_id").size().max() <= 3


@pytest.mark.parametrize(
    ("start", "end"),
    [("2024-06-01", "2024-06-30"), (date(2025, 1, 1), date(2025, 12, 31)), (START, END)],
)
def test_dates_stay_within_the_window(start, end):
    frame = generate_manifest(5_000, 8, start, end)
    assert frame["declared_at"].min() >= pd.Timestamp(start)
    assert frame["declared_at"].max() <= pd.Timestamp(end)


def test_dates_spread_over_the_window(frame):
    quarters = frame["declared_at"].dt.to_period("Q").value_counts()
    expected = pd.period_range(START, END, freq="Q")
    assert set(quarters.index) == set(expected)
    assert quarters.min() > 0.5 * len(frame) / len(expected)


def test_lines_are_sorted_by_date_then_declaration(frame):
    order = frame.sort_values(["declared_at", "declaration_id", "line_no"], kind="stable").index
    assert (order == frame.index).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"n_rows": -3}, ValueError, "n_rows must be > 0, got -3"),
        ({"n_rows": 0}, ValueError, "n_rows must be > 0, got 0"),
        ({"n_rows": 2.5}, TypeError, "n_rows must be an int, got 2.5"),
        ({"seed": -1}, ValueError, "seed must be >= 0, got -1"),
        ({"start": "2026-01-01", "end": "2025-01-01"}, ValueError, "start must be before end"),
        ({"start": "2025-01-01", "end": "2025-01-01"}, ValueError, "start must be before end"),
        ({"start": "first of May"}, ValueError, "start must be an ISO date"),
        ({"end": 20250101}, TypeError, "end must be a date or an ISO date string, got 20250101"),
        ({"config": ["not", "a", "mapping"]}, TypeError, "config must be a mapping or None, got list"),
        ({"config": {"fraud": {"routes": {"th_sea": {"export": "XX"}}}}}, ValueError, "unknown value 'XX'"),
        ({"config": {"inspection": {"random_share": 1.5}}}, ValueError, "random_share' must be a share"),
    ],
)
def test_bad_parameters_are_rejected_with_their_value(kwargs, error, message):
    arguments = {"n_rows": 10, "seed": 0, "start": START, "end": END, **kwargs}
    with pytest.raises(error, match=message):
        generate_manifest(**arguments)


# ---------------------------------------------------------------------------------------------
# Ground truth and labels
# ---------------------------------------------------------------------------------------------


def test_ground_truth_columns_are_consistent(frame, reference):
    fraud = frame["sim_fraud"] == 1
    assert set(frame["sim_fraud"].unique()) == {0, 1}
    assert set(frame.loc[fraud, "sim_commodity"]) <= set(reference.commodities)
    assert (frame.loc[~fraud, "sim_commodity"] == "none").all()
    assert set(frame.loc[fraud, "sim_disguise"]) == {"true_value", "undervalued"}
    assert (frame.loc[~fraud, "sim_disguise"] == "none").all()
    assert set(frame.loc[fraud, "sim_scenario"]) == {"fraud_network", "switcher"}
    # A disguised good is always declared under a cover code.
    assert (frame.loc[fraud, "sim_cover_family"] != "none").all()


def test_overall_prevalence_is_a_few_percent(frame):
    assert 0.01 <= frame["sim_fraud"].mean() <= 0.06


def test_prevalence_follows_the_configured_rate(config):
    rate = config["fraud"]["rate_at_full_intensity"]
    base = generate_manifest(20_000, 4, START, END)["sim_fraud"].mean()
    doubled = generate_manifest(20_000, 4, START, END, config={"fraud": {"rate_at_full_intensity": 2 * rate}})
    assert doubled["sim_fraud"].mean() > 1.6 * base


def test_labels_exist_only_for_inspected_lines(frame):
    inspected = frame["inspected"] == 1
    assert set(frame["inspected"].unique()) == {0, 1}
    assert frame.loc[~inspected, ["misdeclared", "found_commodity"]].isna().all().all()
    assert frame.loc[inspected, ["misdeclared", "found_commodity"]].notna().all().all()
    labelled = frame[inspected]
    assert ((labelled["misdeclared"] == 0) == (labelled["found_commodity"] == "none")).all()


def test_found_commodity_is_the_hidden_good_when_fraud_is_caught(frame):
    caught = frame[(frame["inspected"] == 1) & (frame["sim_fraud"] == 1) & (frame["misdeclared"] == 1)]
    assert len(caught) > 50
    assert (caught["found_commodity"] == caught["sim_commodity"]).all()


@pytest.mark.parametrize(
    "override",
    [{}, {"inspection": {"random_share": 0.20, "targeted_share": 0.02}}, {"inspection": {"random_share": 0.0}}],
)
def test_inspected_share_matches_the_configured_channels(config, override):
    frame = generate_manifest(20_000, 6, START, END, config=override)
    spec = {**config["inspection"], **override.get("inspection", {})}
    targeted, random = spec["targeted_share"], spec["random_share"]
    expected = targeted + random * (1 - targeted)
    assert frame["inspected"].mean() == pytest.approx(expected, abs=0.006)
    assert (frame["sim_selection"] == "targeted").mean() == pytest.approx(targeted, abs=1e-4)


def test_selection_favours_fraud_lines(frame):
    fraud = frame["sim_fraud"] == 1
    rate_fraud = frame.loc[fraud, "inspected"].mean()
    rate_clean = frame.loc[~fraud, "inspected"].mean()
    assert rate_fraud > 3 * rate_clean
    # Random selection is blind: among lines the rule did not target, fraud and clean alike.
    untargeted = frame[frame["sim_selection"] != "targeted"]
    random = untargeted["sim_selection"] == "random"
    is_fraud = untargeted["sim_fraud"] == 1
    assert random[is_fraud].mean() == pytest.approx(random[~is_fraud].mean(), abs=0.015)


def test_label_noise_follows_the_configured_rates():
    override = {"inspection": {"random_share": 0.5, "miss_rate": 0.2, "false_positive_rate": 0.05}}
    frame = generate_manifest(20_000, 9, START, END, config=override)
    inspected = frame[frame["inspected"] == 1]
    fraud = inspected["sim_fraud"] == 1
    assert (inspected.loc[fraud, "misdeclared"] == 0).mean() == pytest.approx(0.2, abs=0.05)
    assert (inspected.loc[~fraud, "misdeclared"] == 1).mean() == pytest.approx(0.05, abs=0.01)


# ---------------------------------------------------------------------------------------------
# Time: controls, onset, surge
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("commodity", ["antimony", "gallium", "germanium", "rare_earth"])
def test_fraud_takes_off_only_after_the_commodity_controls(frame, reference, config, commodity):
    onset = _measure_date(reference, config["fraud"]["onset_measure"][commodity])
    # Consignments, not lines: a split express consignment is one smuggling event.
    fraud = frame[frame["sim_commodity"] == commodity]
    week = fraud["declared_at"].dt.to_period("W")
    events = fraud.assign(week=week).drop_duplicates(["shipper_id", "consignee_id", "week"])
    every = pd.Series(True, index=events.index)
    dates = events["declared_at"]
    before = _per_day(every, dates, _day(START), onset)
    after = _per_day(every, dates, onset, _day(END) + pd.Timedelta(days=1))
    lowest = min(v for k, v in config["fraud"]["phase_intensity"].items() if k != "default")
    allowed = 3 * config["fraud"]["pre_onset_intensity"] / lowest
    assert after > 0
    assert before <= allowed * after


def test_onset_measures_are_controls_of_their_commodity(reference, config):
    for commodity, measure in config["fraud"]["onset_measure"].items():
        row = reference.control_dates.set_index("measure_id").loc[measure]
        assert commodity in row["commodities"].split(";")


def test_hub_volume_of_cover_codes_surges_after_the_ban(frame, reference):
    ban = _measure_date(reference, "us_ban")
    year = pd.Timedelta(days=365)
    hub_cover = frame["export_country"].isin(reference.diversion_hubs) & (frame["sim_cover_family"] != "none")
    dates = frame["declared_at"]
    surge = _per_day(hub_cover, dates, ban, ban + year) / _per_day(hub_cover, dates, ban - year, ban)
    honest = hub_cover & (frame["sim_fraud"] == 0)
    honest_growth = _per_day(honest, dates, ban, ban + year) / _per_day(honest, dates, ban - year, ban)
    assert surge > 1.3
    assert surge > honest_growth + 0.3


def test_most_hub_trade_is_honest(frame, reference):
    hub = frame[frame["export_country"].isin(reference.diversion_hubs)]
    assert (hub["sim_fraud"] == 0).mean() > 0.6


def test_fraud_routes_run_through_hubs_with_china_as_true_origin(frame, reference):
    fraud = frame[(frame["sim_fraud"] == 1) & (frame["sim_scenario"] == "fraud_network")]
    hubs = reference.diversion_hubs
    assert fraud["export_country"].isin(hubs).mean() > 0.6
    via_hub = fraud[fraud["export_country"].isin(hubs)]
    declared = set(via_hub["origin_country"])
    # Declared origin is China on part of them and the hub itself on the rest.
    assert declared <= {"CN"} | set(hubs)
    assert 0.2 < (via_hub["origin_country"] == "CN").mean() < 0.8
    assert fraud["transshipment_ports"].notna().any()


@pytest.mark.parametrize(("mode", "export", "discharge"), [("road", "MX", "USLRD")])
def test_road_traffic_crosses_from_mexico_at_laredo(frame, mode, export, discharge):
    road = frame[frame["transport_mode"] == mode]
    assert len(road) > 0
    assert (road["export_country"] == export).all()
    assert (road["port_of_discharge"] == discharge).all()


def test_express_parcels_are_small_and_split(frame, config):
    parcels = frame[(frame["transport_mode"] == "post") & (frame["sim_fraud"] == 1)]
    assert len(parcels) > 0
    assert parcels["net_weight_kg"].max() <= config["mode_line_kg"]["post"]["max"]
    assert set(parcels["sim_commodity"]) <= {"gallium", "germanium", "rare_earth"}
    # A split consignment: the same shipper and consignee file several parcels within days.
    per_pair = parcels.groupby(["shipper_id", "consignee_id"]).size()
    assert per_pair.max() >= config["fraud"]["parcel_split"][0]


# ---------------------------------------------------------------------------------------------
# Economics and physics
# ---------------------------------------------------------------------------------------------


def _cover_band(reference, config, hs_code: pd.Series) -> pd.DataFrame:
    """USD/kg band of the cover code each HS code falls under (reference, else est. fill)."""
    covers = reference.hs_codes[reference.hs_codes["role"] == "cover"].set_index("hs_prefix")
    fill = {key: value for key, value in config["cover"]["price_fill"].items()}
    low = covers["usd_per_kg_low"].copy()
    high = covers["usd_per_kg_high"].copy()
    for prefix, (fill_low, fill_high) in fill.items():
        low[prefix], high[prefix] = fill_low, fill_high
    prefix = hs_code.str[:6].where(hs_code.str[:6].isin(covers.index), hs_code.str[:4])
    return pd.DataFrame({"low": low.reindex(prefix).to_numpy(), "high": high.reindex(prefix).to_numpy()}, index=hs_code.index)


def _target_band(reference, lines: pd.DataFrame) -> pd.DataFrame:
    """USD/kg band of each line's controlled good in the nearest priced year."""
    goods = reference.target_goods.assign(key=lambda t: t["commodity"] + ":" + t["form"])
    wanted = pd.DataFrame({"key": lines["sim_form"], "year": lines["declared_at"].dt.year, "line": lines.index})
    pairs = wanted.merge(goods, on="key")
    pairs["distance"] = (pairs["price_year"] - pairs["year"]).abs()
    nearest = pairs.sort_values(["line", "distance", "price_year"]).drop_duplicates("line").set_index("line")
    return nearest.loc[lines.index, ["usd_per_kg_low", "usd_per_kg_high"]].set_axis(["low", "high"], axis=1)


def _within(unit_value: pd.Series, band: pd.DataFrame, sigma: float) -> pd.Series:
    slack = np.exp(BAND_SIGMAS * sigma)
    return (unit_value >= band["low"] / slack) & (unit_value <= band["high"] * slack)


@pytest.mark.parametrize("disguise", ["undervalued", "true_value"])
def test_disguised_value_per_kg_matches_its_disguise(frame, reference, config, disguise):
    lines = frame[frame["sim_disguise"] == disguise]
    unit_value = lines["declared_value_usd"] / lines["net_weight_kg"]
    cover = _cover_band(reference, config, lines["hs_code"])
    target = _target_band(reference, lines)
    sigma = config["prices"]["noise_sigma"]
    expected, other = (cover, target) if disguise == "undervalued" else (target, cover)
    assert len(lines) > 100
    assert _within(unit_value, expected, sigma).mean() >= 0.95
    assert _within(unit_value, other, sigma).mean() <= 0.5


def test_background_value_per_kg_spreads_around_the_cover_band(frame, reference, config):
    lines = frame[(frame["sim_scenario"] == "background_cover")]
    unit_value = lines["declared_value_usd"] / lines["net_weight_kg"]
    band = _cover_band(reference, config, lines["hs_code"])
    inside = (unit_value >= band["low"]) & (unit_value <= band["high"])
    assert 0.5 < inside.mean() < 0.99  # lognormal spread: most inside, some outside
    assert _within(unit_value, band, config["prices"]["noise_sigma"]).mean() >= 0.97


def test_legit_target_imports_are_priced_as_the_target(frame, reference, config):
    lines = frame[frame["sim_scenario"] == "legit_target"]
    unit_value = lines["declared_value_usd"] / lines["net_weight_kg"]
    assert _within(unit_value, _target_band(reference, lines), config["prices"]["noise_sigma"]).mean() >= 0.95


def test_legit_target_imports_come_from_producers(frame, reference):
    lines = frame[frame["sim_scenario"] == "legit_target"]
    commodity = lines["sim_form"].str.split(":").str[0]
    allowed = {name: reference.producers(name) for name in reference.commodities}
    producers = commodity.map(allowed)
    assert len(lines) > 100
    assert all(origin in allowed for origin, allowed in zip(lines["origin_country"], producers))
    assert lines["hs_code"].str[:6].isin(reference.target_goods["hs6"]).all()


def test_no_direct_chinese_imports_under_the_ban(frame, reference):
    ban = reference.control_dates.set_index("measure_id").loc["us_ban"]
    lifted = _measure_date(reference, "suspension")
    lines = frame[(frame["sim_scenario"] == "legit_target") & (frame["sim_form"] != "none")]
    banned = lines["sim_form"].str.split(":").str[0].isin(ban["commodities"].split(";"))
    during = (lines["declared_at"] >= pd.Timestamp(ban["date"])) & (lines["declared_at"] < lifted)
    assert (banned & during).sum() > 20
    assert not (lines.loc[banned & during, "origin_country"] == "CN").any()
    assert (lines.loc[banned & (lines["declared_at"] < pd.Timestamp(ban["date"])), "origin_country"] == "CN").any()


def _kg_per_container(lines: pd.DataFrame) -> pd.Series:
    boxed = lines[lines["containers"] > 0]
    return boxed["gross_weight_kg"] / boxed["containers"]


def test_metal_ingots_fill_containers_far_heavier_than_crafts(frame):
    genuine = frame[frame["sim_fraud"] == 0]
    ingots = _kg_per_container(genuine[genuine["sim_cover_family"] == "metal_ingot"])
    crafts = _kg_per_container(genuine[genuine["hs_code"].str[:4].isin(["8306", "6913"])])
    assert len(ingots) > 100 and len(crafts) > 50
    assert ingots.median() > 3 * crafts.median()


def test_ingots_travel_in_heavy_packages_and_crafts_in_light_ones(frame):
    genuine = frame[frame["sim_fraud"] == 0]
    per_package = genuine["net_weight_kg"] / genuine["packages"]
    ingots = per_package[genuine["sim_cover_family"] == "metal_ingot"]
    crafts = per_package[genuine["hs_code"].str[:4].isin(["8306", "6913"])]
    assert ingots.median() > 20 * crafts.median()


def test_hidden_antimony_keeps_its_weight_under_craft_covers(frame):
    crafts = frame["hs_code"].str[:4].isin(["8306", "6913"])
    hidden = _kg_per_container(frame[crafts & (frame["sim_commodity"] == "antimony")])
    genuine = _kg_per_container(frame[crafts & (frame["sim_fraud"] == 0)])
    assert len(hidden) > 5
    assert hidden.median() > 3 * genuine.median()


def test_net_weight_never_exceeds_gross(frame):
    assert (frame["net_weight_kg"] <= frame["gross_weight_kg"]).all()
    assert (frame["packages"] >= 1).all()


# ---------------------------------------------------------------------------------------------
# Entities and stories
# ---------------------------------------------------------------------------------------------


def test_long_standing_and_new_shippers_coexist(frame):
    clean = frame[frame["sim_fraud"] == 0]
    years = clean.groupby("shipper_id")["declared_at"].agg(["min", "max", "count"])
    long_standing = years[(years["min"].dt.year == 2023) & (years["max"].dt.year == 2026)]
    assert (long_standing["count"] >= 50).any()
    assert (years["min"] >= pd.Timestamp("2025-01-01")).sum() > 10


def test_fraud_networks_reuse_few_shippers(frame):
    networked = frame[(frame["sim_fraud"] == 1) & (frame["sim_network"] >= 0)]
    per_network = networked.groupby("sim_network").agg(lines=("shipper_id", "size"), shippers=("shipper_id", "nunique"))
    busy = per_network[per_network["lines"] >= 30]
    assert len(busy) > 0
    assert (busy["lines"] / busy["shippers"]).median() >= 5


def test_switching_buyer_moves_from_direct_china_to_a_hub(frame, reference, config):
    lines = frame[frame["sim_scenario"] == "switcher"]
    assert len(lines) > 50
    before = lines[lines["sim_fraud"] == 0]
    direct = before[before["export_country"] == "CN"]
    assert (direct["origin_country"] == "CN").all()
    assert direct["hs_code"].str[:6].isin(reference.target_goods["hs6"]).all()
    after = lines[lines["sim_fraud"] == 1]
    assert after["export_country"].isin(reference.diversion_hubs).all()
    # The same buyers appear on both sides of the switch.
    assert set(after["consignee_id"]) & set(direct["consignee_id"])


def test_hub_subsidiary_jumps_many_fold_after_the_switch(frame, reference):
    lines = frame[(frame["sim_scenario"] == "switcher") & frame["export_country"].isin(reference.diversion_hubs)]
    ban = _measure_date(reference, "us_ban")
    dates = lines["declared_at"]
    every = pd.Series(True, index=lines.index)
    before = _per_day(every, dates, _day(START), ban)
    after = _per_day(every, dates, ban, _day(END))
    assert after > 8 * before


# ---------------------------------------------------------------------------------------------
# Configuration and the new-route scenario
# ---------------------------------------------------------------------------------------------


def test_user_config_is_deep_merged_over_the_default(tmp_path, config):
    path = tmp_path / "override.yaml"
    path.write_text("inspection:\n  random_share: 0.2\nfraud:\n  routes:\n    hk_post: null\n", encoding="utf-8")
    merged = load_generator_config(path)
    assert merged["inspection"]["random_share"] == 0.2
    assert merged["inspection"]["targeted_share"] == config["inspection"]["targeted_share"]
    assert "hk_post" not in merged["fraud"]["routes"]
    assert set(merged["fraud"]["routes"]) == set(config["fraud"]["routes"]) - {"hk_post"}


def _new_routes(config) -> dict:
    default = load_generator_config()["fraud"]["routes"]
    return {name: route for name, route in config["fraud"]["routes"].items() if name not in default}


def test_scenario_adds_a_route_the_default_never_uses_for_fraud(config):
    scenario = load_generator_config(SCENARIO_FILE)
    added = _new_routes(scenario)
    assert len(added) == 1
    (route,) = added.values()
    default_exports = {r["export"] for r in config["fraud"]["routes"].values()}
    assert route["export"] not in default_exports
    assert set(scenario["fraud"]["routes"]) > set(config["fraud"]["routes"])


def test_default_data_never_routes_fraud_through_the_new_route(frame):
    scenario = load_generator_config(SCENARIO_FILE)
    (route,) = _new_routes(scenario).values()
    fraud = frame[frame["sim_fraud"] == 1]
    assert not (fraud["export_country"] == route["export"]).any()
    # The country still trades honestly in the default data.
    assert (frame["export_country"] == route["export"]).any()


def test_fraud_moves_onto_the_new_route_from_its_start(scenario_frame):
    scenario = load_generator_config(SCENARIO_FILE)
    ((name, route),) = _new_routes(scenario).items()
    start = pd.Timestamp(route["start"])
    fraud = scenario_frame[scenario_frame["sim_fraud"] == 1]
    on_route = fraud["sim_route"] == name
    assert not on_route[fraud["declared_at"] < start].any()
    assert on_route[fraud["declared_at"] >= start].mean() > 0.25
    assert set(fraud.loc[on_route, "port_of_loading"]) <= set(route["loading"])
    assert len(validate_manifest(scenario_frame).quarantine) == 0


SHIFTS_FILE = Path(training.__file__).parent / "data" / "scenario_shifts.yaml"


@pytest.fixture(scope="module")
def shifts():
    return load_generator_config(SHIFTS_FILE)


@pytest.fixture(scope="module")
def shifts_frame(shifts):
    return generate_manifest(N_ROWS, 7, "2025-01-01", "2026-06-30", config=shifts)


def test_a_new_cover_hides_fraud_in_goods_that_look_legitimate(shifts, shifts_frame):
    ((name, cover),) = shifts["fraud"]["new_covers"].items()
    group = shifts["other_goods"][cover["group"]]
    start = pd.Timestamp(cover["start"])
    frame = shifts_frame
    under = frame["hs_code"].str[:6].isin([str(code) for code in group["hs6"]])
    fraud = frame["sim_fraud"] == 1
    new = fraud & under
    assert not new[frame["declared_at"] < start].any()
    assert set(frame.loc[new, "sim_commodity"]) == set(cover["shares"])
    after = fraud & (frame["declared_at"] >= start) & frame["sim_commodity"].isin(list(cover["shares"]))
    # Line 1 of a declaration always hides the good; further lines only sometimes: the share of
    # hiding lines under the new cover is at least half its declaration share.
    assert new[after].mean() > 0.5 * max(cover["shares"].values())
    new_lines, legit = frame[new], frame[~fraud & under]
    assert (new_lines["sim_disguise"] == "undervalued").all()
    assert (new_lines["origin_country"] == new_lines["export_country"]).all()
    price = new_lines["declared_value_usd"] / new_lines["net_weight_kg"]
    low, high = group["usd_per_kg"]
    sigma = BAND_SIGMAS * shifts["prices"]["noise_sigma"]
    inside = (price >= low * np.exp(-sigma)) & (price <= high * np.exp(sigma))
    assert inside.mean() > 1 - 3 * shifts["prices"]["outlier_share"]
    # Packed and described like the goods' legitimate trade.
    assert set(new_lines["package_type"]) <= set(legit["package_type"])
    words = {*group["descriptions"], *shifts["descriptions"]["generic_vague"]}
    assert set(new_lines["description"].str.lower()) <= {w.lower() for w in words}
    assert name


def test_an_abandoned_route_carries_no_network_fraud_from_its_end(shifts, shifts_frame):
    ((name, route),) = [(n, r) for n, r in shifts["fraud"]["routes"].items() if r.get("end")]
    end = pd.Timestamp(route["end"])
    network = shifts_frame[(shifts_frame["sim_fraud"] == 1) & (shifts_frame["sim_scenario"] == "fraud_network")]
    on_route = network["sim_route"] == name
    assert on_route[network["declared_at"] < end].any()
    assert not on_route[network["declared_at"] >= end].any()
