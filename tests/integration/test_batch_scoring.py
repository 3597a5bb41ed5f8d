"""serve/batch.py: a file scored in passes gives score_frame's channels whatever its order and chunking.

Channels are day quotas over the whole file, so a day spread over chunks of an unsorted file must
get the same red and yellow lines as the whole frame scored at once; the temporary parts folder
never outlives the call.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

import serve.batch
from features.history_store import HistoryStore
from features.io import read_manifest, write_table
from features.pipeline import pipeline_from_spec
from features.schema import LABEL_COLUMNS, ManifestFileError, validate_manifest
from models.bundle import ModelBundle
from models.predict import OUTPUT_COLUMNS, finish_frame, score_frame
from serve.batch import score_file

KEY = ["declaration_id", "line_no"]
COMPARED = ["risk_score", "channel", "check", "suspected_commodity", "reasons"]


@pytest.fixture(scope="module")
def bundle(small_bundle) -> ModelBundle:
    spec = small_bundle["spec"]  # channel_rates: 2 % red, 5 % yellow
    return ModelBundle(
        booster=small_bundle["booster"],
        commodity_booster=small_bundle["commodity_booster"],
        spec=spec,
        pipeline=pipeline_from_spec(spec["pipeline"]),
        version="misdeclare/7",
        manifest_sha256="0" * 64,
    )


@pytest.fixture(scope="module")
def manifest(labelled_manifest) -> pd.DataFrame:
    """Ten busy days (~400 lines a day) without labels, shuffled: the file is not sorted by date."""
    lines = labelled_manifest(4_000, seed=5, start="2026-07-01", end="2026-07-10")
    lines = lines.drop(columns=[c for c in lines.columns if c.startswith("sim_")] + list(LABEL_COLUMNS))
    return lines.sample(frac=1, random_state=1).reset_index(drop=True)


@pytest.fixture(scope="module")
def whole(bundle, manifest) -> pd.DataFrame:
    """score_frame on the whole file at once, keyed by line."""
    scored = score_frame(bundle, validate_manifest(manifest).valid, explain="flagged", num_threads=1)
    return keyed(scored)


def keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """The compared columns indexed by line key (plain str / int64, whatever the source)."""
    index = pd.MultiIndex.from_arrays(
        [frame["declaration_id"].astype(str).to_numpy(object), frame["line_no"].astype("int64").to_numpy()], names=KEY
    )
    out = frame[COMPARED].set_axis(index).sort_index()
    return out.astype({c: object for c in ("channel", "check", "suspected_commodity", "reasons")})


def scored_file(path: Path) -> pd.DataFrame:
    return keyed(pd.read_parquet(path))


@pytest.fixture(scope="module")
def batch(bundle, manifest, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path_factory.mktemp("batch")
    write_table(manifest.astype("string"), folder / "incoming.parquet")  # Parquet: chunks of exactly chunk_rows
    parts = []
    summary = score_file(
        folder / "incoming.parquet", folder / "scored.parquet", bundle, chunk_rows=500, num_threads=1, on_chunk=parts.append
    )
    assert summary.lines_read == summary.lines_scored == len(manifest)
    assert parts == [500] * 8
    return folder, scored_file(folder / "scored.parquet")


def test_the_file_is_busy_and_unsorted(manifest):
    days = pd.to_datetime(manifest["declared_at"])
    assert not days.is_monotonic_increasing
    assert days.dt.date.value_counts().min() >= 300


def test_batch_output_equals_score_frame_on_the_whole_frame(batch, whole):
    _, scored = batch

    pd.testing.assert_frame_equal(scored, whole, check_dtype=False)


def test_each_day_gets_its_quota_in_the_batch(batch, manifest):
    _, scored = batch
    valid = validate_manifest(manifest).valid
    days = pd.Series(
        valid["declared_at"].dt.date.to_numpy(),
        name="declared_at",
        index=pd.MultiIndex.from_arrays(
            [valid["declaration_id"].astype(str).to_numpy(object), valid["line_no"].astype("int64").to_numpy()], names=KEY
        ),
    )
    disguise = scored[scored["check"] == "disguise"].join(days)

    for day, lines in disguise.groupby("declared_at"):
        n = len(lines)
        counts = lines["channel"].value_counts()
        assert counts.get("red", 0) == int(0.02 * n + 0.5), day
        assert counts.get("red", 0) + counts.get("yellow", 0) == int(0.07 * n + 0.5), day
        green, flagged = (
            lines.loc[lines["channel"] == "green", "risk_score"],
            lines.loc[lines["channel"] != "green", "risk_score"],
        )
        assert green.max() <= flagged.min(), day
        red, yellow = lines.loc[lines["channel"] == "red", "risk_score"], lines.loc[lines["channel"] == "yellow", "risk_score"]
        assert yellow.max() <= red.min(), day


@pytest.mark.parametrize("chunk_rows", [pytest.param(333, marks=pytest.mark.slow), 4_000])  # 333: 24 chunks
def test_chunk_size_and_row_order_do_not_change_the_output(bundle, manifest, batch, tmp_path, chunk_rows):
    _, reference = batch
    write_table(manifest.sample(frac=1, random_state=chunk_rows).astype("string"), tmp_path / "incoming.parquet")

    score_file(tmp_path / "incoming.parquet", tmp_path / "scored.parquet", bundle, chunk_rows=chunk_rows, num_threads=1)

    pd.testing.assert_frame_equal(scored_file(tmp_path / "scored.parquet"), reference)


@pytest.mark.parametrize("group_lines", [1, 450, 900])  # one day at a time (~400 lines a day), two days
def test_days_ranked_a_group_at_a_time_get_the_channels_of_the_whole_file(
    bundle, manifest, batch, tmp_path, monkeypatch, group_lines
):
    _, reference = batch
    write_table(manifest.astype("string"), tmp_path / "incoming.parquet")
    monkeypatch.setattr(serve.batch, "CHANNEL_GROUP_LINES", group_lines)

    score_file(tmp_path / "incoming.parquet", tmp_path / "scored.parquet", bundle, chunk_rows=500, num_threads=1)

    pd.testing.assert_frame_equal(scored_file(tmp_path / "scored.parquet"), reference)


def test_output_columns_and_no_temporary_files_left_after_success(batch):
    folder, _ = batch

    assert sorted(p.name for p in folder.iterdir()) == ["incoming.parquet", "scored.parquet", "scored.quarantine.csv"]
    assert list(pd.read_parquet(folder / "scored.parquet").columns)[-len(OUTPUT_COLUMNS) :] == list(OUTPUT_COLUMNS)


def test_a_failure_in_the_last_pass_leaves_no_output_and_no_temporary_files(bundle, manifest, tmp_path, monkeypatch):
    write_table(manifest.head(1_500).astype("string"), tmp_path / "incoming.parquet")
    calls = []

    def failing_finish(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second part of the last pass: the output is half written
            raise RuntimeError("disk full")
        return finish_frame(*args, **kwargs)

    monkeypatch.setattr(serve.batch, "finish_frame", failing_finish)
    history = HistoryStore(tmp_path / "history")

    with pytest.raises(RuntimeError, match="disk full"):
        score_file(tmp_path / "incoming.parquet", tmp_path / "scored.csv", bundle, chunk_rows=500, history=history, num_threads=1)

    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["incoming.parquet"]
    assert len(history) == 0


def test_a_file_level_error_leaves_nothing(bundle, manifest, tmp_path):
    write_table(manifest.drop(columns="hs_code").head(100), tmp_path / "incoming.csv")

    with pytest.raises(ManifestFileError, match="hs_code"):
        score_file(tmp_path / "incoming.csv", tmp_path / "scored.csv", bundle, num_threads=1)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["incoming.csv"]


def test_a_file_whose_every_row_is_quarantined_gives_an_empty_output_and_its_rows_in_quarantine(bundle, manifest, tmp_path):
    raw = manifest.head(30).astype("string")
    raw["gross_weight_kg"] = "-5"
    write_table(raw, tmp_path / "incoming.csv")

    summary = score_file(tmp_path / "incoming.csv", tmp_path / "scored.csv", bundle, num_threads=1)

    assert (summary.lines_read, summary.lines_scored, summary.lines_quarantined) == (30, 0, 30)
    assert len(pd.read_csv(tmp_path / "scored.csv")) == 0
    assert len(pd.read_csv(tmp_path / "scored.quarantine.csv")) == 30


def test_every_row_is_accounted_for_and_the_history_store_gets_the_scored_lines(bundle, manifest, tmp_path):
    raw = manifest.head(1_200).astype("string")
    raw.loc[[3, 700], "gross_weight_kg"] = "-5"
    raw.loc[900, ["declaration_id", "line_no"]] = raw.loc[10, ["declaration_id", "line_no"]].to_numpy()  # duplicate
    write_table(raw, tmp_path / "incoming.parquet")
    history = HistoryStore(tmp_path / "history")

    summary = score_file(
        tmp_path / "incoming.parquet", tmp_path / "scored.csv", bundle, chunk_rows=500, history=history, num_threads=1
    )

    scored, quarantined = read_manifest(tmp_path / "scored.csv"), pd.read_csv(tmp_path / "scored.quarantine.csv")
    assert (summary.lines_read, summary.lines_scored, summary.lines_quarantined) == (1_200, 1_197, 3)
    assert (len(scored), len(quarantined)) == (1_197, 3)
    assert sum(summary.channels.values()) == sum(summary.checks.values()) == 1_197
    assert len(history.read()) == 1_197
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history", "incoming.parquet", "scored.csv", "scored.quarantine.csv"]


def test_the_quarantine_is_safe_to_open_in_a_spreadsheet_and_the_scored_file_is_exact(bundle, manifest, tmp_path):
    raw = manifest.head(50).astype("string")
    raw.loc[0, "description"] = '=HYPERLINK("http://evil.example","open")'  # valid line: scored as written
    raw.loc[1, ["description", "gross_weight_kg"]] = ["@SUM(A1)", "-5"]  # quarantined: formula neutralised
    write_table(raw, tmp_path / "incoming.csv")

    score_file(tmp_path / "incoming.csv", tmp_path / "scored.csv", bundle, num_threads=1)

    scored = read_manifest(tmp_path / "scored.csv").set_index("declaration_id")
    quarantined = pd.read_csv(tmp_path / "scored.quarantine.csv", dtype=str, keep_default_na=False)
    assert scored.loc[raw.loc[0, "declaration_id"], "description"] == '=HYPERLINK("http://evil.example","open")'
    assert quarantined[["description", "gross_weight_kg"]].values.tolist() == [["'@SUM(A1)", "-5"]]
    corrected = quarantined.drop(columns="quarantine_reason").assign(gross_weight_kg="1000000")
    assert validate_manifest(corrected).valid["description"].tolist() == ["@SUM(A1)"]  # read back as declared


@pytest.mark.slow  # scores the whole file twice
def test_rescoring_with_the_store_gives_the_same_channels(bundle, manifest, tmp_path):
    """The store's copies of the file's own lines are not counted twice on a second run."""
    write_table(manifest.head(2_000).astype("string"), tmp_path / "incoming.parquet")
    history = HistoryStore(tmp_path / "history")

    score_file(tmp_path / "incoming.parquet", tmp_path / "first.parquet", bundle, chunk_rows=700, history=history, num_threads=1)
    score_file(tmp_path / "incoming.parquet", tmp_path / "second.parquet", bundle, chunk_rows=700, history=history, num_threads=1)

    pd.testing.assert_frame_equal(scored_file(tmp_path / "second.parquet"), scored_file(tmp_path / "first.parquet"))


def test_the_queue_loads_scored_files_with_or_without_the_check_column(batch, tmp_path):
    import numpy as np

    from models.scope import CHECKS
    from serve.triage import audit, loading
    from serve.triage.db import make_engine
    from serve.triage.migrate import upgrade

    folder, _ = batch
    scored = pd.read_parquet(folder / "scored.parquet").head(300)
    scored.loc[7, "check"] = "smuggling"
    scored.to_parquet(tmp_path / "with.parquet", index=False)
    scored.drop(columns="check").assign(declaration_id=lambda f: "W" + f["declaration_id"]).to_parquet(
        tmp_path / "without.parquet", index=False
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'triage.db'}")
    upgrade(engine)
    origin = audit.Origin(actor="test", user_id=None, client="cli", via="cli")

    with_check = loading.load_scored_file(engine, tmp_path / "with.parquet", origin, rng=np.random.default_rng(0))
    without = loading.load_scored_file(engine, tmp_path / "without.parquet", origin, rng=np.random.default_rng(0))
    engine.dispose()

    assert loading.CHECKS == CHECKS
    assert (with_check.n_inserted, with_check.n_rejected) == (299, 1)
    assert with_check.rejections[0].endswith("check must be one of disguise, origin")
    assert (without.n_inserted, without.n_rejected) == (300, 0)


@pytest.mark.slow  # starts worker processes
def test_two_worker_processes_write_the_same_bytes_as_one(bundle, manifest, tmp_path):
    """Parts scored in loky workers (bundle from plain files, stores read-only) change nothing."""
    write_table(manifest.astype("string"), tmp_path / "incoming.csv")
    history = HistoryStore(tmp_path / "history")
    score_file(tmp_path / "incoming.csv", tmp_path / "first.csv", bundle, chunk_rows=1_500, history=history, num_threads=1)
    outputs = {}
    for workers in (1, 2):
        # Against the store that now holds the file: stored copies are taken out in every worker.
        scratch = tmp_path / f"history-{workers}"
        shutil.copytree(tmp_path / "history", scratch)
        score_file(
            tmp_path / "incoming.csv",
            tmp_path / f"scored-{workers}.csv",
            bundle,
            chunk_rows=700,
            history=HistoryStore(scratch),
            num_threads=2,
            workers=workers,
        )
        outputs[workers] = (tmp_path / f"scored-{workers}.csv").read_bytes()

    assert outputs[2] == outputs[1]
    assert outputs[1] == (tmp_path / "first.csv").read_bytes()
    assert not list(tmp_path.glob(".scored-2.csv.parts-*"))


def test_workers_must_be_at_least_one(bundle, manifest, tmp_path):
    write_table(manifest.head(10).astype("string"), tmp_path / "incoming.csv")

    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        score_file(tmp_path / "incoming.csv", tmp_path / "scored.csv", bundle, workers=0)
