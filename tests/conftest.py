"""Shared fixtures.

- ``make_line`` / ``make_frame``: raw manifest lines as they come out of a CSV (text values), one
  valid line by default, any field overridable.
- ``labelled_manifest``: synthetic labelled lines from the generator (factory, cached per session
  by its arguments); ``valid_labelled``: the default one, validated.
- ``small_bundle`` / ``bundle_dir``: a real, quickly fitted model bundle (no MLflow).
- ``mlflow_workdir``: a temporary working directory with its own MLflow sqlite store, copied from a
  template migrated once per session, and its own history store.

Keep this file to fixtures several test modules share; module-specific helpers stay in the module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

# ----------------------------------------------------------------------------- manifest lines

VALID_LINE = {
    "declaration_id": "D000001",
    "line_no": "1",
    "declared_at": "2025-01-15",
    "hs_code": "790111",
    "description": "zinc ingots",
    "gross_weight_kg": "1000",
    "net_weight_kg": "980",
    "quantity": "980",
    "quantity_unit": "kg",
    "packages": "20",
    "package_type": "case",
    "containers": "1",
    "declared_value_usd": "2940",
    "origin_country": "CN",
    "export_country": "TH",
    "port_of_loading": "THLCH",
    "port_of_discharge": "USLAX",
    "transshipment_ports": "CNSHA",
    "transport_mode": "sea",
    "shipper_id": "S1",
    "consignee_id": "C1",
    "importer_id": "I1",
    "declarant_id": "X1",
    "inspected": "1",
    "misdeclared": "0",
    "found_commodity": "none",
}


@pytest.fixture(scope="session")
def make_line():
    """Factory: one valid raw line (dict of text values); keyword overrides, None for an empty cell."""

    def make(**overrides) -> dict:
        line = dict(VALID_LINE)
        line.update(overrides)
        return line

    return make


@pytest.fixture(scope="session")
def make_frame(make_line):
    """Factory: a raw frame (string dtype, as read from CSV) from per-line overrides.

    Lines get distinct declaration ids ``D000000``, ``D000001``... unless an override sets one.
    """

    def make(*overrides: dict) -> pd.DataFrame:
        lines = [make_line(**{"declaration_id": f"D{i:06d}", **changes}) for i, changes in enumerate(overrides)]
        return pd.DataFrame(lines, columns=list(VALID_LINE)).astype("string")

    return make


# ----------------------------------------------------------------------------- labelled data


@pytest.fixture(scope="session")
def labelled_manifest():
    """Factory ``(n_rows=8000, seed=0, start="2023-01-01", end="2026-06-30") -> DataFrame``, cached.

    Synthetic labelled lines from :func:`training.synthetic.generate_manifest` (canonical columns
    plus ``sim_*`` ground truth; 30k rows take well under a second).
    """
    from training.synthetic import generate_manifest

    cache: dict[tuple, pd.DataFrame] = {}

    def make(n_rows: int = 8_000, seed: int = 0, start: str = "2023-01-01", end: str = "2026-06-30") -> pd.DataFrame:
        key = (n_rows, seed, start, end)
        if key not in cache:
            cache[key] = generate_manifest(n_rows, seed, start, end)
        return cache[key].copy()

    return make


@pytest.fixture(scope="session")
def valid_labelled(labelled_manifest) -> pd.DataFrame:
    """The default labelled manifest, validated (typed canonical columns)."""
    from features.schema import validate_manifest

    result = validate_manifest(labelled_manifest())
    assert result.quarantine.empty, result.quarantine["quarantine_reason"].head().tolist()
    return result.valid.reset_index(drop=True)


# ----------------------------------------------------------------------------- model bundle


@pytest.fixture(scope="session")
def small_bundle(valid_labelled):
    """A fitted pipeline, risk and commodity boosters and their spec, as ``train_model`` lays it out.

    Fitted directly with few rounds (well under a second); the end-to-end training path is covered
    by the slow CLI tests.
    """
    import lightgbm as lgb

    from features.pipeline import (
        build_feature_pipeline,
        categorical_features,
        feature_groups,
        model_features,
        pipeline_to_spec,
        transform_features,
    )

    lines = valid_labelled
    pipeline = build_feature_pipeline(min_count=20, min_category_count=5).fit(lines)
    _, X = transform_features(pipeline, lines)
    known = (lines["inspected"] == 1).fillna(False).to_numpy(dtype=bool)
    y = lines.loc[known, "misdeclared"].to_numpy("int64")
    categorical = categorical_features(pipeline)
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "learning_rate": 0.2,
        "seed": 1,
        "num_threads": 1,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        "min_child_samples": 5,
    }
    booster = lgb.train(params, lgb.Dataset(X[known], y, categorical_feature=categorical), num_boost_round=15)
    commodities = ["antimony", "gallium", "germanium", "rare_earth"]
    found = lines.loc[known, "found_commodity"]
    fraud = found.isin(commodities).to_numpy()
    commodity_booster = lgb.train(
        {**params, "objective": "multiclass", "num_class": len(commodities)},
        lgb.Dataset(X[known][fraud], found[fraud].map(commodities.index).to_numpy(), categorical_feature=categorical),
        num_boost_round=5,
    )
    spec = {
        "spec_version": 1,
        "pipeline": pipeline_to_spec(pipeline),
        "model_features": model_features(pipeline),
        "categorical_features": categorical,
        "feature_groups": feature_groups(pipeline),
        "calibration": {"method": "platt", "a": 1.0, "b": 0.0},
        "channel_rates": {"red": 0.02, "yellow": 0.05},
        "commodities": commodities,
        "training": {},
    }
    return {"booster": booster, "commodity_booster": commodity_booster, "spec": spec, "lines": lines}


@pytest.fixture
def bundle_dir(small_bundle, tmp_path) -> Path:
    """A freshly saved bundle folder (tests may tamper with it)."""
    from models.bundle import save_bundle

    folder = tmp_path / "bundle"
    save_bundle(folder, small_bundle["booster"], small_bundle["spec"], small_bundle["commodity_booster"])
    return folder


# ----------------------------------------------------------------------------- MLflow


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory) -> Path:
    """An MLflow sqlite database with every migration applied (about 2-3 s, once per session)."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("mlflow-template")
    database = folder / "mlflow.db"
    # The Default experiment's artifact folder is resolved against the working directory when the
    # store is created: create it from the template folder, never from the repository.
    previous = os.getcwd()
    os.chdir(folder)
    try:
        MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()
    finally:
        os.chdir(previous)
    return database


@pytest.fixture
def mlflow_workdir(tmp_path, monkeypatch, mlflow_template_db) -> Path:
    """``tmp_path`` as working directory with its own MLflow store, artifacts and history store.

    ``MLFLOW_TRACKING_URI`` and ``MISDECLARE_HISTORY_DIR`` point inside it, so nothing is written
    into the repository.
    """
    shutil.copy(mlflow_template_db, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MISDECLARE_HISTORY_DIR", str(tmp_path / "history"))
    return tmp_path
