"""The model bundle: data files only, verified by SHA-256 before use.

A bundle is a folder holding

- ``model.txt``: the risk model, LightGBM's text format;
- ``commodity_model.txt``: the multiclass model naming the suspected commodity (optional);
- ``feature_spec.json``: everything the feature pipeline learned at fit (reference values,
  vocabularies, column order), the calibration, the channel thresholds and the training summary;
- ``MANIFEST.json``: the format version and the SHA-256 of each file above.

Loading reads text and JSON only: it never unpickles, imports or runs anything from the artifact.
A file whose hash differs from the manifest, a missing file or an unexpected file is refused.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
from sklearn.pipeline import Pipeline

from features.pipeline import pipeline_from_spec

FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
MODEL_FILE = "model.txt"
COMMODITY_MODEL_FILE = "commodity_model.txt"
SPEC_FILE = "feature_spec.json"


class BundleError(ValueError):
    """A bundle that is incomplete, tampered with, or of an unknown format."""


@dataclass
class ModelBundle:
    """A loaded, verified bundle.

    Attributes
    ----------
    booster : lightgbm.Booster
        The risk model (raw scores before calibration).
    commodity_booster : lightgbm.Booster or None
        Multiclass model over ``spec["commodities"]``.
    spec : dict
        The parsed ``feature_spec.json``.
    pipeline : Pipeline
        The fitted feature pipeline rebuilt from the spec.
    version : str
        "NAME/VERSION" for a registry model, "local:<sha>" for a folder.
    manifest_sha256 : str
        SHA-256 of ``MANIFEST.json``, which pins every file of the bundle.
    """

    booster: lgb.Booster
    commodity_booster: lgb.Booster | None
    spec: dict[str, Any]
    pipeline: Pipeline
    version: str
    manifest_sha256: str
    path: Path | None = field(default=None)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_bundle(
    directory: str | Path, booster: lgb.Booster, spec: dict[str, Any], commodity_booster: lgb.Booster | None = None
) -> str:
    """Write a bundle folder and return the SHA-256 of its manifest.

    Parameters
    ----------
    directory : str or Path
        Folder to create (must not hold another bundle's files).
    booster : lightgbm.Booster
        The trained risk model.
    spec : dict
        JSON-compatible feature spec (pipeline state, features, calibration, thresholds...).
    commodity_booster : lightgbm.Booster, optional
        The trained commodity model.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    booster.save_model(folder / MODEL_FILE)
    files = [MODEL_FILE, SPEC_FILE]
    if commodity_booster is not None:
        commodity_booster.save_model(folder / COMMODITY_MODEL_FILE)
        files.append(COMMODITY_MODEL_FILE)
    (folder / SPEC_FILE).write_text(json.dumps(spec, indent=1, sort_keys=True), encoding="utf-8")
    manifest = {"format_version": FORMAT_VERSION, "files": {name: sha256_file(folder / name) for name in sorted(files)}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    return sha256_file(folder / MANIFEST)


def read_verified(
    directory: str | Path, expected_manifest_sha256: str | None = None
) -> tuple[dict[str, Any], str, dict[str, bytes]]:
    """Read every file of a bundle once and check it against the manifest.

    The bytes that were hashed are the bytes returned, so a file swapped after the check cannot
    be loaded unchecked.

    Returns
    -------
    manifest : dict
    manifest_sha256 : str
    contents : dict of str to bytes
        Each listed file's verified bytes.

    Raises
    ------
    BundleError
        Missing manifest or file, unexpected file, hash mismatch, unknown format version, or a
        manifest whose own hash differs from ``expected_manifest_sha256`` (from the registry).
    """
    folder = Path(directory)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: not a model bundle (no {MANIFEST})")
    manifest_bytes = manifest_path.read_bytes()
    manifest_sha = hashlib.sha256(manifest_bytes).hexdigest()
    if expected_manifest_sha256 and manifest_sha != expected_manifest_sha256:
        raise BundleError(f"{folder}: {MANIFEST} does not match the hash registered with the model")
    manifest = json.loads(manifest_bytes.decode("utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{folder}: unknown bundle format_version {manifest.get('format_version')!r}")
    listed = manifest.get("files", {})
    present = {p.name for p in folder.iterdir() if p.is_file()} - {MANIFEST}
    if present - set(listed):
        raise BundleError(f"{folder}: unexpected file(s) {sorted(present - set(listed))}")
    contents = {}
    for name, expected in listed.items():
        path = folder / name
        if not path.is_file():
            raise BundleError(f"{folder}: missing file {name}")
        contents[name] = path.read_bytes()
        if hashlib.sha256(contents[name]).hexdigest() != expected:
            raise BundleError(f"{folder}: {name} was modified (SHA-256 mismatch); refusing to load")
    return manifest, manifest_sha, contents


def verify_bundle(directory: str | Path, expected_manifest_sha256: str | None = None) -> dict[str, Any]:
    """Check every file of a bundle against its manifest; return the manifest (see :func:`read_verified`)."""
    return read_verified(directory, expected_manifest_sha256)[0]


def load_bundle_folder(
    directory: str | Path, version: str | None = None, expected_manifest_sha256: str | None = None
) -> ModelBundle:
    """Verify and load a bundle folder (text and JSON only).

    Parameters
    ----------
    directory : str or Path
        The bundle folder.
    version : str, optional
        Version label to report; ``local:<first 12 hex of the manifest hash>`` by default.
    expected_manifest_sha256 : str, optional
        Hash the manifest must have (recorded in the registry at registration).
    """
    folder = Path(directory)
    _, manifest_sha, contents = read_verified(folder, expected_manifest_sha256)
    bundle = bundle_from_contents(contents, version or f"local:{manifest_sha[:12]}", manifest_sha)
    bundle.path = folder
    return bundle


def bundle_from_contents(contents: dict[str, bytes], version: str, manifest_sha256: str) -> ModelBundle:
    """A bundle from the verified bytes of its files (:func:`read_verified`): text and JSON only.

    Where the files were verified elsewhere (the Spark engine verifies once on the driver and ships
    these bytes to its workers), this rebuilds the same bundle without reading a folder.
    """
    spec = json.loads(contents[SPEC_FILE].decode("utf-8"))
    booster = lgb.Booster(model_str=contents[MODEL_FILE].decode("utf-8"))
    commodity = None
    if COMMODITY_MODEL_FILE in contents:
        commodity = lgb.Booster(model_str=contents[COMMODITY_MODEL_FILE].decode("utf-8"))
    return ModelBundle(
        booster=booster,
        commodity_booster=commodity,
        spec=spec,
        pipeline=pipeline_from_spec(spec["pipeline"]),
        version=version,
        manifest_sha256=manifest_sha256,
    )


def load_bundle(uri: str | Path, tracking_uri: str | None = None) -> ModelBundle:
    """Load a bundle from a folder or from the registry (``models:/NAME@ALIAS`` or ``models:/NAME/V``).

    Registry bundles are downloaded as plain files (no MLflow model loader runs) and checked
    against the manifest hash recorded on the model version.
    """
    text = str(uri)
    if text.startswith("models:/"):
        contents, version, manifest_sha = read_bundle_contents(text, tracking_uri)
        return bundle_from_contents(contents, version, manifest_sha)
    return load_bundle_folder(text)


def read_bundle_contents(uri: str | Path, tracking_uri: str | None = None) -> tuple[dict[str, bytes], str, str]:
    """The verified bytes of each file of a bundle (folder or registry URI), its version and manifest hash.

    What :func:`load_bundle` reads before building the models; the Spark engine ships these bytes.
    """
    text = str(uri)
    if not text.startswith("models:/"):
        _, manifest_sha, contents = read_verified(text)
        return contents, f"local:{manifest_sha[:12]}", manifest_sha
    from models.registry import download_registered_bundle

    # The downloaded copy is removed once read, instead of piling up in the temporary folder at
    # each command or service start.
    with tempfile.TemporaryDirectory(prefix="misdeclare-bundle-") as destination:
        folder, version, expected = download_registered_bundle(text, tracking_uri=tracking_uri, destination=destination)
        _, manifest_sha, contents = read_verified(folder, expected)
    return contents, version, manifest_sha
