"""models/scope.py and its use in scoring: lines declared under a controlled code get the origin check."""

from __future__ import annotations

import shutil
from importlib import resources

import numpy as np
import pandas as pd
import pytest

from features.pipeline import build_feature_pipeline, pipeline_from_spec, pipeline_to_spec, transform_features
from features.schema import validate_manifest
from models.bundle import ModelBundle
from models.predict import score_frame
from models.scope import OriginCheck

ANTIMONY = {
    "hs_code": "811010",
    "description": "antimony ingots",
    "gross_weight_kg": "1000",
    "net_weight_kg": "980",
    "declared_value_usd": "55000",
}
ROUTES = {
    "bolivian": {"origin_country": "BO", "export_country": "BO", "port_of_loading": "CLARI", "transshipment_ports": None},
    "thai": {"origin_country": "TH", "export_country": "TH", "port_of_loading": "THLCH", "transshipment_ports": None},
    "bolivian-via-thailand": {
        "origin_country": "BO",
        "export_country": "TH",
        "port_of_loading": "THLCH",
        "transshipment_ports": None,
    },
    "bolivian-transshipped-in-mexico": {
        "origin_country": "BO",
        "export_country": "BO",
        "port_of_loading": "CLARI",
        "transshipment_ports": "PECLL;MXZLO",
    },
    "chinese-via-thailand": {
        "origin_country": "CN",
        "export_country": "TH",
        "port_of_loading": "THLCH",
        "transshipment_ports": "CNSHA",
    },
    "thai-via-mexico": {"origin_country": "TH", "export_country": "MX", "port_of_loading": "MXZLO", "transshipment_ports": None},
}


@pytest.fixture(scope="module")
def bundle(small_bundle) -> ModelBundle:
    spec = small_bundle["spec"]
    return ModelBundle(
        booster=small_bundle["booster"],
        commodity_booster=small_bundle["commodity_booster"],
        spec=spec,
        pipeline=pipeline_from_spec(spec["pipeline"]),
        version="misdeclare/7",
        manifest_sha256="0" * 64,
    )


@pytest.fixture(scope="module")
def routed(bundle, make_frame) -> pd.DataFrame:
    """One antimony line per route (explain=all: every line gets its phrase), indexed by route name."""
    lines = validate_manifest(make_frame(*({**ANTIMONY, **route} for route in ROUTES.values()))).valid
    scored = score_frame(bundle, lines, explain="all", num_threads=1)
    return scored.set_axis(list(ROUTES))


def test_a_correctly_declared_bolivian_antimony_line_is_an_origin_check_at_zero_risk_and_green(routed):
    line = routed.loc["bolivian"]

    assert (line["check"], line["risk_score"], line["channel"]) == ("origin", 0.0, "green")
    assert line["reasons"] == "declared as antimony (HS 811010) with origin BO: no origin check needed"
    assert line["suspected_commodity"] == "none"


@pytest.mark.parametrize(
    ("route", "phrase"),
    [
        (
            "thai",
            "declared as antimony (HS 811010) with origin TH, which does not produce antimony: check the certificate of origin",
        ),
        (
            "bolivian-via-thailand",
            "declared as antimony (HS 811010) with origin BO, routed via TH (diversion hub): check the certificate of origin",
        ),
        (
            "bolivian-transshipped-in-mexico",
            "declared as antimony (HS 811010) with origin BO, routed via MX (diversion hub): check the certificate of origin",
        ),
        (
            "thai-via-mexico",
            "declared as antimony (HS 811010) with origin TH, which does not produce antimony, "
            "routed via MX (diversion hub): check the certificate of origin",
        ),
    ],
)
def test_a_laundered_origin_is_yellow_with_its_phrase(routed, route, phrase):
    line = routed.loc[route]

    assert (line["check"], line["risk_score"], line["channel"]) == ("origin", 0.0, "yellow")
    assert line["reasons"] == phrase
    assert line["suspected_commodity"] == "antimony"


def test_goods_declared_as_chinese_need_no_origin_check(routed):
    line = routed.loc["chinese-via-thailand"]

    assert (line["check"], line["channel"]) == ("origin", "green")


def test_the_phrase_is_only_written_for_explained_lines(bundle, make_frame):
    lines = validate_manifest(make_frame({**ANTIMONY, **ROUTES["thai"]})).valid

    assert score_frame(bundle, lines, explain="red", num_threads=1)["reasons"].tolist() == [""]
    assert score_frame(bundle, lines, explain="none", num_threads=1)["channel"].tolist() == ["yellow"]


def test_a_shared_code_accepts_a_producer_of_either_good(bundle, make_frame):
    canadian_germanium = {
        "hs_code": "8112926000",
        "description": "germanium",
        "gross_weight_kg": "100",
        "net_weight_kg": "100",
        "declared_value_usd": "300000",
        "origin_country": "CA",
        "export_country": "CA",
        "port_of_loading": "CAVAN",
        "transshipment_ports": None,
    }
    lines = validate_manifest(make_frame(canadian_germanium)).valid

    scored = score_frame(bundle, lines, explain="all", num_threads=1)

    assert scored[["check", "channel"]].values.tolist() == [["origin", "green"]]
    assert scored["reasons"].tolist() == ["declared as gallium or germanium (HS 811292) with origin CA: no origin check needed"]


def test_cover_codes_keep_the_disguise_check(bundle, make_frame):
    lines = validate_manifest(make_frame({}, {"hs_code": "830629"})).valid

    scored = score_frame(bundle, lines, explain="none", num_threads=1)

    assert scored["check"].tolist() == ["disguise", "disguise"]
    assert (scored["risk_score"] > 0).all()


def test_producers_come_from_the_reference_tables_the_pipeline_was_fitted_with(tmp_path, bundle, make_frame, valid_labelled):
    folder = tmp_path / "reference"
    shutil.copytree(resources.files("features") / "data", folder)
    countries = pd.read_csv(folder / "countries.csv", dtype=str, keep_default_na=False)
    countries.loc[countries["iso2"] == "BO", "produces"] = ""
    countries.to_csv(folder / "countries.csv", index=False)
    edited_pipeline = build_feature_pipeline(reference_dir=str(folder)).fit(valid_labelled.head(500))
    lines = validate_manifest(make_frame({**ANTIMONY, **ROUTES["bolivian"]})).valid
    derived, _ = transform_features(bundle.pipeline, lines)

    packaged = OriginCheck.from_pipeline(bundle.pipeline).evaluate(derived)
    # The edited tables are copied into the fitted state: removing the folder changes nothing.
    shutil.rmtree(folder)
    edited = OriginCheck.from_pipeline(pipeline_from_spec(pipeline_to_spec(edited_pipeline))).evaluate(derived)

    assert packaged.alert.tolist() == [False]
    assert edited.alert.tolist() == [True] and edited.non_producer.tolist() == [True]


def test_a_pipeline_fitted_before_producers_per_good_were_kept_reads_the_tables(bundle, make_frame):
    spec = pipeline_to_spec(bundle.pipeline)
    for step in spec:
        for name in ("producers_", "controlling_countries_", "code_goods_"):
            step["fitted"].pop(name, None)
    old = OriginCheck.from_pipeline(pipeline_from_spec(spec))

    assert old == OriginCheck.from_pipeline(bundle.pipeline)


def test_origin_lines_take_no_place_in_the_day_quota(bundle, make_frame):
    """100 disguise lines and 60 laundered controlled lines on one day: 2 red and 5 yellow disguise lines."""
    cover = [{"hs_code": "790111", "declared_value_usd": str(2000 + 13 * i)} for i in range(100)]
    controlled = [{**ANTIMONY, **ROUTES["thai"]} for _ in range(60)]
    lines = validate_manifest(make_frame(*cover, *controlled)).valid

    scored = score_frame(bundle, lines, explain="none", num_threads=1)

    disguise = scored[scored["check"] == "disguise"]
    assert disguise["channel"].value_counts().to_dict() == {"green": 93, "yellow": 5, "red": 2}
    assert (scored.loc[scored["check"] == "origin", "channel"] == "yellow").all()
    assert np.isin(scored["check"], ["disguise", "origin"]).all()
