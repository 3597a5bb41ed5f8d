"""Alias moves on a real MLflow sqlite registry: compare-and-set, lock, crash and concurrency safety."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from models import registry
from models.promotion import (
    AliasMove,
    ChampionMoved,
    LockTimeout,
    PromotionError,
    advisory_key,
    lock_file,
    promote,
    registry_lock,
    rollback,
)
from models.registry import CHALLENGER, CHAMPION, PREVIOUS, alias_version

NAME = "misdeclare-test"


@pytest.fixture
def versions(mlflow_workdir, bundle_dir):
    """Factory ``versions(n)``: register the small bundle ``n`` times; returns the version strings."""
    import mlflow

    from models.bundle import sha256_file

    def register(n: int) -> list[str]:
        registered = []
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        # Not the template's Default experiment: its artifact root was fixed where the template was made.
        mlflow.set_experiment("promotion-test")
        for _ in range(n):
            with mlflow.start_run() as run:
                mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
            registered.append(
                registry.register_bundle(run.info.run_id, "bundle", NAME, sha256_file(bundle_dir / "MANIFEST.json"))
            )
        return registered

    return register


def aliases() -> dict[str, str | None]:
    return {alias: alias_version(NAME, alias) for alias in (CHAMPION, PREVIOUS, CHALLENGER)}


def test_first_promotion_sets_champion_only(versions):
    (v1,) = versions(1)
    move = promote(NAME, v1, expected_champion=None)
    assert move == AliasMove(champion_before=None, champion_after=v1, previous_before=None, previous_after=None)
    assert aliases() == {CHAMPION: v1, PREVIOUS: None, CHALLENGER: None}


def test_promotion_keeps_the_old_champion_as_previous(versions):
    v1, v2, v3 = versions(3)
    promote(NAME, v1, None)
    assert promote(NAME, v2, v1) == AliasMove(v1, v2, None, v1)
    assert promote(NAME, v3, v2) == AliasMove(v2, v3, v1, v2)
    assert aliases() == {CHAMPION: v3, PREVIOUS: v2, CHALLENGER: None}


def test_promotion_against_a_stale_champion_moves_nothing(versions):
    v1, v2, v3 = versions(3)
    promote(NAME, v1, None)
    promote(NAME, v2, v1)
    with pytest.raises(ChampionMoved, match=f"champion is version {v2}, not {v1}") as moved:
        promote(NAME, v3, expected_champion=v1)
    assert moved.value.champion == v2
    assert aliases() == {CHAMPION: v2, PREVIOUS: v1, CHALLENGER: None}


def test_rollback_swaps_champion_and_previous_and_a_second_one_undoes_it(versions):
    v1, v2 = versions(2)
    promote(NAME, v1, None)
    promote(NAME, v2, v1)
    assert rollback(NAME) == AliasMove(v2, v1, v1, v2)
    assert aliases()[CHAMPION] == v1 and aliases()[PREVIOUS] == v2
    rollback(NAME)
    assert aliases()[CHAMPION] == v2 and aliases()[PREVIOUS] == v1


@pytest.mark.parametrize("setup", ["no champion", "no previous"])
def test_rollback_without_a_previous_version_is_refused(versions, setup):
    (v1,) = versions(1)
    if setup == "no previous":
        promote(NAME, v1, None)
    with pytest.raises(PromotionError, match="nothing to roll back to"):
        rollback(NAME)
    assert aliases()[CHAMPION] == (v1 if setup == "no previous" else None)


def _failing_on(alias: str, monkeypatch) -> list[tuple[str, str]]:
    """Make ``models.registry.set_alias`` raise when it moves ``alias``; returns the calls made.

    Pass a ``monkeypatch.context()``: undoing the test's own ``monkeypatch`` would also undo the
    working directory and tracking URI set by ``mlflow_workdir``.
    """
    real = registry.set_alias
    calls = []

    def set_alias(name, which, version, tracking_uri=None):
        calls.append((which, version))
        if which == alias:
            raise ConnectionError(f"registry unreachable while moving {which}")
        real(name, which, version, tracking_uri)

    monkeypatch.setattr(registry, "set_alias", set_alias)
    return calls


@pytest.mark.parametrize("with_previous", [False, True])
def test_a_failure_between_the_two_moves_leaves_every_alias_as_it_was(versions, monkeypatch, with_previous):
    v1, v2, v3 = versions(3)
    promote(NAME, v1, None)
    if with_previous:
        promote(NAME, v2, v1)
    before = aliases()
    with monkeypatch.context() as patch, pytest.raises(ConnectionError):
        calls = _failing_on(CHAMPION, patch)
        promote(NAME, v3, before[CHAMPION])
    # previous was moved first, then put back after champion's move failed.
    assert calls[0] == (PREVIOUS, before[CHAMPION])
    assert aliases() == before


def test_a_rollback_interrupted_after_its_first_move_has_fully_moved_champion(versions, monkeypatch):
    v1, v2 = versions(2)
    promote(NAME, v1, None)
    promote(NAME, v2, v1)
    with monkeypatch.context() as patch, pytest.raises(ConnectionError):
        _failing_on(PREVIOUS, patch)
        rollback(NAME)
    assert aliases()[CHAMPION] == v1


SCRIPT_HEADER = """
import os, sys, time
from pathlib import Path
from models import promotion, registry
"""


def _python(code: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT_HEADER + textwrap.dedent(code)],
        cwd=cwd,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow  # starts and kills a process
def test_a_process_killed_between_the_two_moves_leaves_champion_unchanged(versions, mlflow_workdir):
    v1, v2, v3 = versions(3)
    promote(NAME, v1, None)
    promote(NAME, v2, v1)
    # The child dies (no exception handler, no cleanup) right before moving champion.
    child = _python(
        f"""
        real = registry.set_alias
        def set_alias(name, alias, version, tracking_uri=None):
            if alias == registry.CHAMPION:
                os._exit(9)
            real(name, alias, version, tracking_uri)
        registry.set_alias = set_alias
        promotion.promote({NAME!r}, {v3!r}, {v2!r})
    """,
        mlflow_workdir,
    )
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 9, stderr
    # champion unchanged; previous already names it, so the state is consistent and usable.
    assert aliases() == {CHAMPION: v2, PREVIOUS: v2, CHALLENGER: None}
    # The lock died with the process: a new promotion goes through and keeps v2 as previous.
    assert promote(NAME, v3, v2, timeout_seconds=5) == AliasMove(v2, v3, v2, v2)


@pytest.mark.slow  # starts processes
def test_two_concurrent_promotions_from_the_same_champion_promote_once(versions, mlflow_workdir):
    v1, v2, v3 = versions(3)
    promote(NAME, v1, None)
    go = mlflow_workdir / "go"
    children = {
        version: _python(
            f"""
        Path("ready-{version}").touch()
        while not Path({str(go)!r}).exists():
            time.sleep(0.01)
        try:
            move = promotion.promote({NAME!r}, {version!r}, {v1!r})
            print("promoted", move.champion_after)
        except promotion.ChampionMoved as exc:
            print("refused", exc)
    """,
            mlflow_workdir,
        )
        for version in (v2, v3)
    }
    deadline = time.monotonic() + 120
    while not all((mlflow_workdir / f"ready-{v}").exists() for v in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    results = {version: child.communicate(timeout=120) for version, child in children.items()}
    outputs = {version: out.strip() for version, (out, _) in results.items()}
    assert all(child.returncode == 0 for child in children.values()), results
    promoted = [v for v, out in outputs.items() if out.startswith("promoted")]
    refused = [v for v, out in outputs.items() if out.startswith("refused")]
    assert len(promoted) == 1 and len(refused) == 1, outputs
    assert f"champion is version {promoted[0]}, not {v1}" in outputs[refused[0]]
    assert aliases() == {CHAMPION: promoted[0], PREVIOUS: v1, CHALLENGER: None}


def test_a_held_lock_times_out_without_moving_anything(versions):
    v1, v2 = versions(2)
    promote(NAME, v1, None)
    with registry_lock(timeout_seconds=1):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="aliases unchanged"):
            promote(NAME, v2, v1, timeout_seconds=0.3)
        assert 0.3 <= time.monotonic() - started < 5
    assert aliases()[CHAMPION] == v1


def test_the_lock_file_lives_next_to_a_sqlite_database(tmp_path):
    assert lock_file(f"sqlite:///{tmp_path}/mlflow.db") == tmp_path / "mlflow.db.alias.lock"
    assert lock_file("sqlite:///mlflow.db") == Path("mlflow.db.alias.lock")
    other = lock_file("http://mlflow.example:5000")
    assert other.parent == Path(__import__("tempfile").gettempdir()) and other.name.endswith(".alias.lock")
    assert other == lock_file("http://mlflow.example:5000") != lock_file("http://other:5000")


def test_the_advisory_key_is_pinned_per_tracking_store():
    # Pinned: every process must derive the same key, across Python versions and releases, or two
    # retrains would take different locks.
    assert advisory_key("postgresql://u@h/mlflow") == -3898139130901062290
    assert advisory_key("postgresql://u@h/other") != advisory_key("postgresql://u@h/mlflow")


def test_a_loaded_scorer_keeps_its_champion_until_it_reloads(versions, small_bundle):
    from models.bundle import load_bundle
    from models.predict import score_frame

    v1, v2 = versions(2)
    promote(NAME, v1, None)
    loaded = load_bundle(f"models:/{NAME}@champion")
    promote(NAME, v2, v1)
    lines = small_bundle["lines"].head(50)
    scored = score_frame(loaded, lines, explain="none", num_threads=1)
    assert set(scored["model_version"]) == {f"{NAME}/{v1}"}
    assert load_bundle(f"models:/{NAME}@champion").version == f"{NAME}/{v2}"


@pytest.mark.postgres
def test_the_postgres_advisory_lock_excludes_a_second_holder():
    url = os.environ.get("MISDECLARE_TEST_POSTGRES_URL")
    if not url:
        pytest.skip('MISDECLARE_TEST_POSTGRES_URL is not set (eval "$(bash .ci/postgres.sh)")')
    with registry_lock(url, timeout_seconds=1):
        with pytest.raises(LockTimeout, match="advisory lock is held by another process"):
            with registry_lock(url, timeout_seconds=0.2):
                pass  # pragma: no cover - never reached
    with registry_lock(url, timeout_seconds=1):
        pass  # released when the first holder left
