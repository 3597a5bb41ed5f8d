"""MLflow model registry access: register bundles, move aliases, download bundles as files.

``mlflow`` is imported inside the functions: importing it costs seconds, and the scorer should
only pay that when it actually reads the registry.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # mlflow is imported when a client is made, not with this module
    from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
BUNDLE_SHA_TAG = "bundle_manifest_sha256"
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI to use: the argument, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def client(tracking_uri: str | None = None) -> MlflowClient:
    """An ``MlflowClient`` on the resolved tracking and registry URI."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` into (name, alias, version)."""
    match = _MODEL_URI.match(uri)
    if match is None:
        raise ValueError(f"model URI must look like models:/NAME@ALIAS or models:/NAME/VERSION, got {uri!r}")
    return match["name"], match["alias"], match["version"]


def register_bundle(run_id: str, artifact_path: str, name: str, manifest_sha256: str, tracking_uri: str | None = None) -> str:
    """Register a logged bundle folder as a new version of model ``name``; return the version.

    The manifest hash is stored as a tag of the version so that loading can tell a bundle that was
    altered in the artifact store after registration.
    """
    mlflow_client = client(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(name, description="misdeclare risk model bundles")
        except MlflowException as exc:
            # Two first registrations at once (two retrains without a champion): the other one made it.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    source = f"{mlflow_client.get_run(run_id).info.artifact_uri}/{artifact_path}"
    version = mlflow_client.create_model_version(name, source=source, run_id=run_id, tags={BUNDLE_SHA_TAG: manifest_sha256})
    return str(version.version)


def alias_version(name: str, alias: str, tracking_uri: str | None = None) -> str | None:
    """The version an alias points to, or None when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def version_manifest_sha256(name: str, version: str, tracking_uri: str | None = None) -> str | None:
    """The bundle manifest hash recorded when ``version`` of model ``name`` was registered."""
    tags: dict[str, str] = client(tracking_uri).get_model_version(name, version).tags
    return tags.get(BUNDLE_SHA_TAG)


def set_alias(name: str, alias: str, version: str, tracking_uri: str | None = None) -> None:
    """Point ``alias`` of model ``name`` at ``version``."""
    client(tracking_uri).set_registered_model_alias(name, alias, version)


def download_registered_bundle(
    uri: str, tracking_uri: str | None = None, destination: str | Path | None = None
) -> tuple[Path, str, str | None]:
    """Download the bundle files of a registered version.

    The alias is resolved to a version first, so a concurrent alias move cannot mix two versions.

    Returns
    -------
    folder : Path
        Local folder holding the bundle files.
    version : str
        "NAME/VERSION".
    manifest_sha256 : str or None
        Hash recorded at registration.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    mlflow_client = client(tracking_uri)
    try:
        model_version = (
            mlflow_client.get_model_version_by_alias(name, alias)
            if alias
            else mlflow_client.get_model_version(name, str(version))
        )
    except MlflowException as exc:
        # A user-fixable situation (nothing trained yet, a typo), not a crash: one line, no traceback.
        raise LookupError(
            f"{uri}: not in the model registry at {resolve_tracking_uri(tracking_uri)} "
            f"({exc.message}); train a model first or check the name"
        ) from exc
    target = Path(destination or tempfile.mkdtemp(prefix="misdeclare-bundle-"))
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri=model_version.source, dst_path=str(target), tracking_uri=resolve_tracking_uri(tracking_uri)
    )
    return Path(folder), f"{name}/{model_version.version}", model_version.tags.get(BUNDLE_SHA_TAG)
