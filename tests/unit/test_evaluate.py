"""training/evaluate.py: calibration error, window boundaries, slices, aggregation, fixed-model runs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from training.config import load_train_config
from training.evaluate import (
    ALL,
    MODEL,
    Evaluation,
    EvaluationSettings,
    Window,
    evaluation_to_dict,
    expected_calibration_error,
    fixed_model_windows,
    flat_metrics,
    measure_groups,
    measured_populations,
    metric_name,
    prequential_windows,
    run_evaluation,
    slice_masks,
)

T = pd.Timestamp


# ----------------------------------------------------------------------------- calibration error


@pytest.mark.parametrize(
    ("y", "scores", "bins", "expected"),
    [
        # sorted by score: (0.1, 0), (0.35, 1) | (0.4, 0), (0.8, 1): |0.225 - 0.5| / 2 + |0.6 - 0.5| / 2
        pytest.param([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 2, 0.1875, id="two bins"),
        # one bin: |mean score 0.4125 - rate 0.5|
        pytest.param([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 1, 0.0875, id="one bin"),
        # bins of 3 and 2 lines: (3 * 0.2 + 2 * 0.1) / 5
        pytest.param([0, 0, 0, 1, 1], [0.2, 0.2, 0.2, 0.9, 0.9], 2, 0.16, id="uneven bins"),
        pytest.param([0, 1], [0.0, 1.0], 2, 0.0, id="perfect"),
        # more bins than lines: empty bins are ignored, each line its own bin: (0.3 + 0.2) / 2
        pytest.param([0, 1], [0.3, 0.8], 10, 0.25, id="more bins than lines"),
    ],
)
def test_expected_calibration_error_exact(y, scores, bins, expected):
    assert expected_calibration_error(np.array(y), np.array(scores), bins) == pytest.approx(expected, abs=1e-12)


def test_expected_calibration_error_of_no_lines_is_nan():
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


# ----------------------------------------------------------------------------- windows


def _dates(windows):
    return [(w.index, *(x.strftime("%Y-%m-%d") for x in (w.train_end, w.start, w.end))) for w in windows]


@pytest.mark.parametrize(
    ("n", "fraction", "delay", "expected"),
    [
        # 365 days, windows of floor(365 / 8) = 45 days ending on 2024-01-01 (exclusive), 30 days of delay
        pytest.param(
            4,
            0.125,
            30,
            [
                (0, "2023-06-05", "2023-07-05", "2023-08-19"),
                (1, "2023-07-20", "2023-08-19", "2023-10-03"),
                (2, "2023-09-03", "2023-10-03", "2023-11-17"),
                (3, "2023-10-18", "2023-11-17", "2024-01-01"),
            ],
            id="4 x 1/8",
        ),
        # floor(365 * 0.3) = 109 days; no delay: a window's model learns from every earlier line
        pytest.param(
            2,
            0.3,
            0,
            [(0, "2023-05-28", "2023-05-28", "2023-09-14"), (1, "2023-09-14", "2023-09-14", "2024-01-01")],
            id="2 x 0.3, no delay",
        ),
    ],
)
def test_prequential_windows_exact(n, fraction, delay, expected):
    windows = prequential_windows(T("2023-01-01"), T("2023-12-31 17:00"), n, fraction, delay)
    assert _dates(windows) == expected


def test_prequential_windows_need_lines_before_the_first_cutoff():
    # 73-day windows, the first from 2023-03-15; 73 days of delay put its cut-off on the first day
    with pytest.raises(ValueError, match="no line is declared before its training cut-off 2023-01-01"):
        prequential_windows(T("2023-01-01"), T("2023-12-31"), 4, 0.2, 73)


def test_prequential_windows_need_a_day():
    with pytest.raises(ValueError, match="too short"):
        prequential_windows(T("2023-01-01"), T("2023-01-05"), 2, 0.1, 0)


@pytest.mark.parametrize(
    ("periods", "expected"),
    [
        # 184 days from the test start to 2026-01-01: 4 windows of 46 days; outcomes known to valid_end
        pytest.param(
            {"valid_end": "2025-06-01", "test_start": "2025-07-01"},
            [
                (0, "2025-06-01", "2025-07-01", "2025-08-16"),
                (1, "2025-06-01", "2025-08-16", "2025-10-01"),
                (2, "2025-06-01", "2025-10-01", "2025-11-16"),
                (3, "2025-06-01", "2025-11-16", "2026-01-01"),
            ],
            id="after the test start",
        ),
        # no label delay: the last validation day is left out, 183 days -> 45 each, 3 leftover days dropped
        pytest.param(
            {"valid_end": "2025-07-01", "test_start": "2025-07-01"},
            [
                (0, "2025-07-01", "2025-07-05", "2025-08-19"),
                (1, "2025-07-01", "2025-08-19", "2025-10-03"),
                (2, "2025-07-01", "2025-10-03", "2025-11-17"),
                (3, "2025-07-01", "2025-11-17", "2026-01-01"),
            ],
            id="no gap",
        ),
    ],
)
def test_fixed_model_windows_exact(periods, expected):
    assert _dates(fixed_model_windows(T("2023-01-01"), T("2025-12-31"), periods, 4)) == expected


def test_fixed_model_windows_start_with_the_data_when_it_is_later():
    windows = fixed_model_windows(T("2026-01-01"), T("2026-01-08"), {"valid_end": "2025-06-01", "test_start": "2025-07-01"}, 2)
    assert _dates(windows) == [(0, "2025-06-01", "2026-01-01", "2026-01-05"), (1, "2025-06-01", "2026-01-05", "2026-01-09")]


def test_fixed_model_windows_need_later_data():
    with pytest.raises(ValueError, match="validated on lines up to 2025-06-01; the data hold 0 later day"):
        fixed_model_windows(T("2023-01-01"), T("2025-05-01"), {"valid_end": "2025-06-01", "test_start": "2025-07-01"}, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_windows": 0}, "number of windows"),
        ({"n_windows": 8, "window_fraction": 0.125}, "leaves no earlier lines"),
        ({"min_positives": 0}, "min_positives"),
        ({"calibration_bins": 0}, "calibration_bins"),
    ],
)
def test_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EvaluationSettings(**kwargs)


# ----------------------------------------------------------------------------- slices and groups


def _labelled_lines() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "shipper_id": pd.array(["S1", "S2", None, "S1", "S3"], dtype="string"),
            "export_country": pd.array(["TH", "DE", "TH", "MX", "DE"], dtype="string"),
            "misdeclared": pd.array([1, 0, 1, 0, 1], dtype="Int64"),
            "found_commodity": pd.array(["antimony", "none", "gallium", "none", "antimony"], dtype="string"),
            "sim_commodity": pd.array(["antimony", "none", "gallium", "none", "gallium"], dtype="string"),
            "sim_disguise": pd.array(["undervalued", "none", "true_value", "none", "undervalued"], dtype="string"),
        }
    )


def test_slice_masks_exact():
    lines = _labelled_lines()
    cover = pd.Series(["metal_ingot", "none", "ceramic", "metal_ingot", "none"])
    masks = slice_masks(
        lines,
        lines["misdeclared"].to_numpy() == 1,
        {"S1", "S9"},
        cover,
        np.array([True, False, True, True, False]),
        ["antimony", "gallium"],
    )
    got = {key: mask.tolist() for key, mask in masks.items()}
    assert got == {
        (ALL, ALL): [True] * 5,
        ("shipper", "known"): [True, False, False, True, False],
        ("shipper", "new"): [False, True, True, False, True],
        ("cover_family", "ceramic"): [False, False, True, False, False],
        ("cover_family", "metal_ingot"): [True, False, False, True, False],
        ("cover_family", "none"): [False, True, False, False, True],
        ("route", "via_hub"): [True, False, True, True, False],
        ("route", "no_hub"): [False, True, False, False, True],
        ("export_country", "DE"): [False, True, False, False, True],
        ("export_country", "MX"): [False, False, False, True, False],
        ("export_country", "TH"): [True, False, True, False, False],
        # the synthetic truth (sim_commodity) wins over what inspectors found
        ("commodity", "antimony"): [True, True, False, True, False],
        ("commodity", "gallium"): [False, True, True, True, True],
        ("disguise", "true_value"): [False, True, True, True, False],
        ("disguise", "undervalued"): [True, True, False, True, True],
    }


def test_slice_masks_without_truth_or_shippers_use_found_commodity_and_skip():
    lines = (
        _labelled_lines().drop(columns=["sim_commodity", "sim_disguise"]).assign(shipper_id=pd.array([None] * 5, dtype="string"))
    )
    masks = slice_masks(
        lines,
        lines["misdeclared"].to_numpy() == 1,
        set(),
        pd.Series(["none"] * 5),
        np.zeros(5, dtype=bool),
        ["antimony", "gallium"],
    )
    assert not any(key[0] in ("shipper", "disguise") for key in masks)
    assert masks[("commodity", "antimony")].tolist() == [True, True, False, True, True]


def test_measured_populations_exact():
    lines = pd.DataFrame(
        {
            "inspected": pd.array([1, 0, 1, 1], dtype="Int64"),
            "misdeclared": pd.array([1, None, 0, None], dtype="Int64"),
            "sim_fraud": [1, 1, 0, 0],
        }
    )
    got = {name: (mask.tolist(), y.tolist()) for name, (mask, y) in measured_populations(lines).items()}
    assert got == {"inspected": ([True, False, True, False], [1, 0]), "truth": ([True, True, True, True], [1, 1, 0, 0])}
    assert list(measured_populations(lines.drop(columns="sim_fraud"))) == ["inspected"]


def test_groups_with_too_few_positives_are_not_measured():
    config = load_train_config(inspection_rates=[0.5])
    y = np.array([1, 0, 1, 0, 0, 1])
    scores = {MODEL: np.array([0.9, 0.1, 0.8, 0.2, 0.3, 0.7]), "random": np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])}
    masks = {(ALL, ALL): np.ones(6, dtype=bool), ("route", "via_hub"): np.array([1, 1, 0, 0, 0, 0], dtype=bool)}
    groups, rows = measure_groups(
        Window(0, T("2025-01-01"), T("2025-02-01"), T("2025-03-01")),
        "inspected",
        masks,
        y,
        scores,
        np.ones(6),
        config,
        EvaluationSettings(min_positives=2),
    )
    assert [(g["slice"], g["lines"], g["positives"], g["measured"]) for g in groups] == [
        (ALL, 6, 3, True),
        ("route", 2, 1, False),
    ]
    table = {(r["scorer"], r["metric"]): r["value"] for r in rows}
    assert {r["slice"] for r in rows} == {ALL}
    assert table[(MODEL, "precision_at_50pct")] == 1.0
    assert table[("random", "precision_at_50pct")] == pytest.approx(1 / 3)
    assert table[(MODEL, "ece")] == pytest.approx((abs(0.2 - 0) + abs(0.8 - 1)) / 2)  # bins of 3: (0.1,0.2,0.3),(0.7,0.8,0.9)
    assert (MODEL, "brier") in table and ("random", "brier") not in table and ("random", "ece") not in table
    assert not any(r["metric"] in ("lines", "positives") for r in rows)


def _evaluation(values: list[float]) -> Evaluation:
    rows = [
        {
            "window": k,
            "population": population,
            "slice": ALL,
            "group": ALL,
            "scorer": scorer,
            "metric": "average_precision",
            "value": v + shift,
        }
        for k, v in enumerate(values)
        for scorer in (MODEL, "random")
        for population, shift in (("inspected", 0.0), ("truth", 0.25))
    ]
    groups = [
        {"window": k, "population": population, "slice": s, "group": g, "lines": 10, "positives": p, "measured": p >= 5}
        for k in range(len(values))
        for s, g, p in ((ALL, ALL, 5), ("route", "via_hub", 1))
        for population in ("inspected", "truth")
    ]
    windows = [Window(k, T("2025-01-01"), T("2025-02-01"), T("2025-03-01")) for k in range(len(values))]
    return Evaluation(
        mode="rolling",
        windows=windows,
        window_info=[{**w.as_dict(), "lines": 10} for w in windows],
        groups=pd.DataFrame(groups),
        window_metrics=pd.DataFrame(rows),
        settings=EvaluationSettings(),
        config=load_train_config(),
        scorers=(MODEL, "random"),
    )


def test_aggregation_is_mean_and_sample_sd_over_windows():
    evaluation = _evaluation([0.2, 0.4, float("nan"), 0.9])
    summary = evaluation.summary().set_index("scorer").loc[MODEL]
    assert summary["mean"] == pytest.approx(0.5)
    assert summary["sd"] == pytest.approx(math.sqrt(((0.3**2) + (0.1**2) + (0.4**2)) / 2))
    assert summary["windows"] == 3
    assert evaluation.summary("truth").set_index("scorer").loc[MODEL, "mean"] == pytest.approx(0.75)


def test_document_and_mlflow_names():
    evaluation = _evaluation([0.5])
    document = evaluation_to_dict(evaluation)
    json.dumps(document, allow_nan=False)  # NaN (sd of one window) became null
    assert document["summary"][MODEL]["average_precision"] == {"mean": 0.5, "sd": None, "windows": 1}
    assert document["truth_summary"][MODEL]["average_precision"] == {"mean": 0.75, "sd": None, "windows": 1}
    assert document["windows"][0]["metrics"] == {
        "inspected": {MODEL: {"average_precision": 0.5}, "random": {"average_precision": 0.5}},
        "truth": {MODEL: {"average_precision": 0.75}, "random": {"average_precision": 0.75}},
    }
    via_hub = next(s for s in document["slices"] if s["slice"] == "route")
    assert via_hub == {
        "population": "inspected",
        "slice": "route",
        "group": "via_hub",
        "lines": 10,
        "positives": 1,
        "windows_measured": 0,
        "metrics": None,
    }
    assert flat_metrics(evaluation) == {
        "eval_model_average_precision_mean": 0.5,
        "eval_baseline_random_average_precision_mean": 0.5,
        "eval_truth_model_average_precision_mean": 0.75,
        "eval_truth_baseline_random_average_precision_mean": 0.75,
    }
    assert metric_name("value_rule", "precision_at_5pct", "sd") == "eval_baseline_value_rule_precision_at_5pct_sd"
    assert metric_name(MODEL, "roc_auc", "mean", "truth") == "eval_truth_model_roc_auc_mean"


# ----------------------------------------------------------------------------- a fixed model end to end


@pytest.fixture(scope="module")
def fixed_bundle(valid_labelled, tmp_path_factory):
    """A model trained by train_model (few rounds) on the lines before 2025-07-01, saved and loaded."""
    from models.bundle import load_bundle_folder, save_bundle
    from training.train import train_model

    config = load_train_config(max_rounds=20, early_stopping_rounds=5, commodity_rounds=5)
    early = valid_labelled[pd.to_datetime(valid_labelled["declared_at"]) < T("2025-07-01")]
    result = train_model(early, config)
    folder = tmp_path_factory.mktemp("fixed") / "bundle"
    save_bundle(folder, result.booster, result.spec, result.commodity_booster)
    return load_bundle_folder(folder)


@pytest.mark.slow  # trains a model
def test_fixed_model_is_measured_after_its_validation_only(valid_labelled, fixed_bundle):
    config = load_train_config(max_rounds=20)
    evaluation = run_evaluation(valid_labelled, config, EvaluationSettings(n_windows=2), bundle=fixed_bundle)
    periods = fixed_bundle.spec["training"]["periods"]
    assert evaluation.mode == "fixed" and evaluation.model_version == fixed_bundle.version
    assert evaluation.windows[0].start >= T(periods["test_start"])
    assert evaluation.windows[-1].end == T("2026-07-01")
    info = evaluation.window_info
    dates = pd.to_datetime(valid_labelled["declared_at"])
    for window, entry in zip(evaluation.windows, info):
        inside = (dates >= window.start) & (dates < window.end)
        assert entry["lines"] == int(inside.sum())
    summary = evaluation.summary()
    assert set(summary["scorer"]) == {MODEL, "random", "declared_value", "value_rule", "hub_value_rule"}
    # the learnable pattern (antimony-priced zinc from Thailand) is easy: the model ranks far above random
    ap = summary[summary["metric"] == "average_precision"].set_index("scorer")["mean"]
    assert ap[MODEL] > ap["random"] + 0.3


@pytest.mark.slow  # trains a model
def test_evaluate_command_prints_json_and_logs_to_mlflow(valid_labelled, fixed_bundle, mlflow_workdir):
    import typer
    from mlflow.tracking import MlflowClient
    from typer.testing import CliRunner

    from features.io import write_table
    from serve.cli_evaluate import evaluate

    data = mlflow_workdir / "labelled.csv"
    write_table(valid_labelled, data)
    app = typer.Typer()
    app.command()(evaluate)
    result = CliRunner().invoke(app, [str(data), "--model", str(fixed_bundle.path), "--windows", "2", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["mode"] == "fixed" and len(document["windows"]) == 2
    assert document["data"]["lines_valid"] == len(valid_labelled)

    client = MlflowClient()
    run = client.get_run(document["mlflow_run_id"])
    model_ap = document["summary"][MODEL]["average_precision"]
    assert run.data.metrics["eval_model_average_precision_mean"] == pytest.approx(model_ap["mean"])
    assert run.data.metrics["eval_baseline_value_rule_precision_at_5pct_mean"] == pytest.approx(
        document["summary"]["value_rule"]["precision_at_5pct"]["mean"]
    )
    history = client.get_metric_history(run.info.run_id, "eval_model_average_precision")
    assert sorted(m.step for m in history) == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert artifacts == {"evaluation/evaluation.json", "evaluation/slices.csv", "evaluation/precision_by_scorer.png"}


def test_evaluate_command_reports_a_bad_setting_in_one_line(valid_labelled, mlflow_workdir):
    import typer
    from typer.testing import CliRunner

    from features.io import write_table
    from serve.cli_evaluate import evaluate

    data = mlflow_workdir / "labelled.csv"
    write_table(valid_labelled.head(100), data)
    app = typer.Typer()
    app.command()(evaluate)
    result = CliRunner().invoke(app, [str(data), "--windows", "9"])
    assert result.exit_code == 1
    assert "error:" in result.stderr and "leaves no earlier lines" in result.stderr
    assert "Traceback" not in result.output


def test_stored_history_drops_lines_of_the_data_whatever_the_key_dtypes(valid_labelled, tmp_path):
    from features.history_store import HistoryStore
    from training.evaluate import stored_history

    store = HistoryStore(tmp_path / "history")
    store.append(valid_labelled.head(10))
    stored = store.read()  # line_no comes back as float
    assert stored_history(stored, valid_labelled.iloc[5:8]).shape[0] == 7
    assert stored_history(stored.iloc[:0], valid_labelled) is None


@pytest.mark.slow  # trains a model
def test_a_fixed_model_scores_a_later_file_with_the_history_store_as_with_the_full_data(valid_labelled, fixed_bundle, tmp_path):
    from features.history_store import HistoryStore

    config = load_train_config()
    settings = EvaluationSettings(n_windows=2)
    # the file starts with the model's test period, so the windows are those of the full data
    later = pd.to_datetime(valid_labelled["declared_at"]) >= T(fixed_bundle.spec["training"]["periods"]["test_start"])
    store = HistoryStore(tmp_path / "history")
    store.append(valid_labelled[~later])
    full = run_evaluation(valid_labelled, config, settings, bundle=fixed_bundle)
    with_store = run_evaluation(valid_labelled[later], config, settings, bundle=fixed_bundle, history=store.read())
    without = run_evaluation(valid_labelled[later], config, settings, bundle=fixed_bundle)
    assert [w.as_dict() for w in with_store.windows] == [w.as_dict() for w in full.windows]
    pd.testing.assert_frame_equal(with_store.summary(), full.summary())
    model = without.summary().set_index(["scorer", "metric"]).loc[(MODEL, "roc_auc"), "mean"]
    assert model != full.summary().set_index(["scorer", "metric"]).loc[(MODEL, "roc_auc"), "mean"]


def test_a_model_without_training_periods_is_refused(valid_labelled, bundle_dir):
    from models.bundle import load_bundle_folder

    bundle = load_bundle_folder(bundle_dir)  # the shared test bundle records no periods
    with pytest.raises(ValueError, match="records no training periods"):
        run_evaluation(valid_labelled, load_train_config(), bundle=bundle)
