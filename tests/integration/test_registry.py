"""models/registry.py and models/bundle.py through a real MLflow sqlite store (no training).

A quickly fitted bundle is logged and registered as the training job does; loading it back by alias
or version must verify it against the hash recorded at registration.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import pytest

from models.bundle import MANIFEST, MODEL_FILE, SPEC_FILE, BundleError, load_bundle, save_bundle
from models.registry import (
    CHAMPION,
    alias_version,
    client,
    download_registered_bundle,
    parse_model_uri,
    register_bundle,
    set_alias,
    version_manifest_sha256,
)

MODEL = "misdeclare-test"


@pytest.fixture
def registered(mlflow_workdir, small_bundle):
    """Version 1 of ``misdeclare-test`` (alias champion); returns its artifact folder and manifest hash."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{mlflow_workdir / 'mlflow.db'}")
    mlflow.set_experiment("registry-test")
    folder = mlflow_workdir / "to-log"
    sha = save_bundle(folder, small_bundle["booster"], small_bundle["spec"], small_bundle["commodity_booster"])
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(folder), artifact_path="bundle")
    version = register_bundle(run.info.run_id, "bundle", MODEL, sha)
    set_alias(MODEL, CHAMPION, version)
    artifacts = Path(run.info.artifact_uri.removeprefix("file://")) / "bundle"
    return {"version": version, "sha": sha, "artifacts": artifacts}


def test_a_version_gives_back_the_manifest_hash_it_was_registered_with(registered):
    assert version_manifest_sha256(MODEL, registered["version"]) == registered["sha"]


def test_a_first_registration_that_another_process_made_meanwhile_is_not_an_error(registered, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    run_id = client().get_model_version(MODEL, registered["version"]).run_id

    def not_yet(self, name):  # the model did not exist when this process looked; another one created it since
        raise MlflowException(f"Registered Model with name={name} not found", "RESOURCE_DOES_NOT_EXIST")

    monkeypatch.setattr(MlflowClient, "get_registered_model", not_yet)
    assert register_bundle(run_id, "bundle", MODEL, registered["sha"]) == "2"


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("models:/misdeclare@champion", ("misdeclare", "champion", None)),
        ("models:/misdeclare/12", ("misdeclare", None, "12")),
        ("models:/misdeclare/12/", ("misdeclare", None, "12")),
    ],
)
def test_parse_model_uri(uri, parts):
    assert parse_model_uri(uri) == parts


@pytest.mark.parametrize("uri", ["models:/misdeclare", "models:/misdeclare/latest", "runs:/abc/bundle", "misdeclare@1"])
def test_malformed_model_uri_is_refused(uri):
    with pytest.raises(ValueError, match="model URI must look like models:/NAME@ALIAS or models:/NAME/VERSION"):
        parse_model_uri(uri)


def test_registration_records_the_manifest_hash_and_alias(registered):
    assert registered["version"] == "1"
    assert alias_version(MODEL, CHAMPION) == "1"
    assert alias_version(MODEL, "challenger") is None
    assert alias_version("no-such-model", CHAMPION) is None


@pytest.mark.parametrize("uri", [f"models:/{MODEL}@champion", f"models:/{MODEL}/1"])
def test_load_by_alias_or_version(registered, uri, small_bundle):
    bundle = load_bundle(uri)

    assert bundle.version == f"{MODEL}/1"
    assert bundle.manifest_sha256 == registered["sha"]
    assert bundle.booster.model_to_string() == small_bundle["booster"].model_to_string()


def test_download_returns_the_files_and_the_registered_hash(registered, tmp_path):
    folder, version, expected = download_registered_bundle(f"models:/{MODEL}@champion", destination=tmp_path / "d")

    assert version == f"{MODEL}/1"
    assert expected == registered["sha"]
    assert hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest() == expected


def test_loading_from_the_registry_leaves_no_temporary_copy(registered, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    bundle = load_bundle(f"models:/{MODEL}@champion")

    assert bundle.booster.num_trees() > 0
    assert list(scratch.iterdir()) == []


def test_model_modified_in_the_artifact_store_is_refused(registered):
    model = registered["artifacts"] / MODEL_FILE
    model.write_text(model.read_text().replace("leaf_value=", "leaf_value=1", 1))

    with pytest.raises(BundleError, match="model.txt was modified"):
        load_bundle(f"models:/{MODEL}@champion")


def test_consistently_forged_bundle_is_refused_by_the_registered_hash(registered):
    spec_path, manifest_path = registered["artifacts"] / SPEC_FILE, registered["artifacts"] / MANIFEST
    spec = json.loads(spec_path.read_text())
    spec["channel_rates"] = {"red": 0.0, "yellow": 0.0}  # nothing would ever be flagged
    spec_path.write_text(json.dumps(spec))
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][SPEC_FILE] = hashlib.sha256(spec_path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))

    with pytest.raises(BundleError, match="MANIFEST.json does not match the hash registered with the model"):
        load_bundle(f"models:/{MODEL}/1")


def test_extra_file_in_the_artifact_store_is_refused(registered):
    (registered["artifacts"] / "loader.py").write_text("import os\n")

    with pytest.raises(BundleError, match=r"unexpected file\(s\) \['loader.py'\]"):
        load_bundle(f"models:/{MODEL}@champion")


@pytest.mark.parametrize("uri", ["models:/nothing-here@champion", "models:/nothing-here/3"])
def test_a_model_missing_from_the_registry_is_a_lookup_error_naming_it(mlflow_workdir, uri):
    from models.bundle import load_bundle

    with pytest.raises(LookupError, match=f"{uri}: not in the model registry"):
        load_bundle(uri)
