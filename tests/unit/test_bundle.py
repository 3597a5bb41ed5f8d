"""models/bundle.py: save/load round trip, tamper refusal, and loading without pickle."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from features.pipeline import transform_features
from models.bundle import (
    COMMODITY_MODEL_FILE,
    MANIFEST,
    MODEL_FILE,
    SPEC_FILE,
    BundleError,
    load_bundle,
    load_bundle_folder,
    save_bundle,
    verify_bundle,
)
from models.predict import score_frame


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def lines(small_bundle) -> pd.DataFrame:
    return small_bundle["lines"].iloc[-400:].reset_index(drop=True)


def test_save_writes_data_files_and_a_manifest_pinning_each(bundle_dir, small_bundle):
    manifest = json.loads((bundle_dir / MANIFEST).read_text())

    assert sorted(p.name for p in bundle_dir.iterdir()) == sorted([MANIFEST, MODEL_FILE, COMMODITY_MODEL_FILE, SPEC_FILE])
    assert manifest == {
        "format_version": 1,
        "files": {name: sha256(bundle_dir / name) for name in (COMMODITY_MODEL_FILE, SPEC_FILE, MODEL_FILE)},
    }
    assert json.loads((bundle_dir / SPEC_FILE).read_text()) == json.loads(json.dumps(small_bundle["spec"]))


def test_save_returns_the_manifest_hash(tmp_path, small_bundle):
    sha = save_bundle(tmp_path / "b", small_bundle["booster"], small_bundle["spec"])

    assert sha == sha256(tmp_path / "b" / MANIFEST)
    assert not (tmp_path / "b" / COMMODITY_MODEL_FILE).exists()


def test_round_trip_gives_identical_predictions(bundle_dir, small_bundle, lines):
    bundle = load_bundle(bundle_dir)

    _, X = transform_features(bundle.pipeline, lines)
    np.testing.assert_array_equal(bundle.booster.predict(X, raw_score=True), small_bundle["booster"].predict(X, raw_score=True))
    np.testing.assert_array_equal(bundle.commodity_booster.predict(X), small_bundle["commodity_booster"].predict(X))
    assert bundle.spec == json.loads(json.dumps(small_bundle["spec"]))
    assert bundle.version == f"local:{sha256(bundle_dir / MANIFEST)[:12]}"
    assert bundle.manifest_sha256 == sha256(bundle_dir / MANIFEST)


def test_scoring_with_a_reloaded_bundle_is_reproducible(bundle_dir, lines):
    first = score_frame(load_bundle(bundle_dir), lines, explain="all", num_threads=1)
    second = score_frame(load_bundle_folder(bundle_dir), lines, explain="all", num_threads=1)

    pd.testing.assert_frame_equal(first, second)


def test_bundle_without_commodity_model_loads(tmp_path, small_bundle):
    save_bundle(tmp_path / "b", small_bundle["booster"], small_bundle["spec"])

    assert load_bundle(tmp_path / "b").commodity_booster is None


def _flip_a_threshold(folder):
    spec = json.loads((folder / SPEC_FILE).read_text())
    spec["channel_rates"]["red"] = 1.0
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True))


def _edit_model(folder):
    """A plausible edit: the first leaf of the first tree pushed up, still a valid model file."""
    lines = (folder / MODEL_FILE).read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("leaf_value="))
    values = lines[at].removeprefix("leaf_value=").split()
    values[0] = repr(float(values[0]) + 5.0)
    lines[at] = "leaf_value=" + " ".join(values) + "\n"
    (folder / MODEL_FILE).write_text("".join(lines))


TAMPERING = [
    pytest.param(_edit_model, "model.txt was modified (SHA-256 mismatch); refusing to load", id="modified-model"),
    pytest.param(
        lambda f: (f / MODEL_FILE).write_bytes((f / MODEL_FILE).read_bytes() + b" "),
        "model.txt was modified",
        id="one-byte-appended",
    ),
    pytest.param(_flip_a_threshold, "feature_spec.json was modified", id="modified-spec"),
    pytest.param(
        lambda f: (f / COMMODITY_MODEL_FILE).write_text("tree\n"),
        "commodity_model.txt was modified",
        id="modified-commodity-model",
    ),
    pytest.param(
        lambda f: (f / "model.pkl").write_bytes(pickle.dumps({"x": 1})), "unexpected file(s) ['model.pkl']", id="extra-file"
    ),
    pytest.param(lambda f: (f / MODEL_FILE).unlink(), "missing file model.txt", id="missing-model"),
    pytest.param(lambda f: (f / SPEC_FILE).unlink(), "missing file feature_spec.json", id="missing-spec"),
    pytest.param(lambda f: (f / MANIFEST).unlink(), "not a model bundle (no MANIFEST.json)", id="missing-manifest"),
    pytest.param(
        lambda f: (f / MANIFEST).write_text(json.dumps({"format_version": 2, "files": {}})),
        "unknown bundle format_version 2",
        id="unknown-format",
    ),
]


@pytest.mark.parametrize(("tamper", "message"), TAMPERING)
def test_tampered_bundles_are_refused(bundle_dir, tamper, message):
    tamper(bundle_dir)

    with pytest.raises(BundleError) as error:
        load_bundle(bundle_dir)

    assert str(error.value).startswith(f"{bundle_dir}: ")
    assert message in str(error.value)


def test_manifest_hash_differing_from_the_registered_one_is_refused(bundle_dir):
    registered = sha256(bundle_dir / MANIFEST)
    _flip_a_threshold(bundle_dir)
    # a consistent forgery: every file hash in the manifest updated to match
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["files"][SPEC_FILE] = sha256(bundle_dir / SPEC_FILE)
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))

    verify_bundle(bundle_dir)  # self-consistent, so only the registered hash can tell
    with pytest.raises(BundleError, match="MANIFEST.json does not match the hash registered with the model"):
        load_bundle_folder(bundle_dir, expected_manifest_sha256=registered)


def test_matching_registered_hash_is_accepted(bundle_dir):
    bundle = load_bundle_folder(bundle_dir, version="misdeclare/3", expected_manifest_sha256=sha256(bundle_dir / MANIFEST))

    assert bundle.version == "misdeclare/3"


def test_loading_never_unpickles(bundle_dir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while loading a bundle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)

    bundle = load_bundle(bundle_dir)

    assert bundle.booster.num_trees() > 0
