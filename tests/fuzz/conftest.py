"""Fixtures of the fuzzer: a saved model bundle and a valid reference file for ``drift``."""

from __future__ import annotations

import pytest
from hostile import base_lines


@pytest.fixture(scope="session")
def fuzz_bundle(small_bundle, tmp_path_factory):
    """A saved model bundle for ``score`` and ``drift``."""
    from models.bundle import save_bundle

    folder = tmp_path_factory.mktemp("fuzz") / "bundle"
    save_bundle(folder, small_bundle["booster"], small_bundle["spec"], small_bundle["commodity_booster"])
    return folder


@pytest.fixture(scope="session")
def reference_file(tmp_path_factory):
    """Valid labelled lines, the reference side of ``drift``."""
    path = tmp_path_factory.mktemp("fuzz-reference") / "reference.csv"
    base_lines(300, seed=9).to_csv(path, index=False)
    return path
