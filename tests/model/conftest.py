"""A model trained by the real training path on generated data, shared by the behavioural tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """``(result, bundle, lines)``: ``train_model`` on 60k generated lines, saved and reloaded as a bundle."""
    from features.schema import validate_manifest
    from models.bundle import load_bundle_folder, save_bundle
    from training.config import load_train_config
    from training.synthetic import generate_manifest
    from training.train import train_model

    lines = validate_manifest(generate_manifest(60_000, 7, "2023-01-01", "2026-06-30")).valid
    config = load_train_config(max_rounds=300, early_stopping_rounds=30)
    result = train_model(lines, config)
    folder = tmp_path_factory.mktemp("trained") / "bundle"
    save_bundle(folder, result.booster, result.spec, result.commodity_booster)
    return result, load_bundle_folder(folder), result.split.test.reset_index(drop=True)
