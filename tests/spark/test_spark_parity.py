"""Parity: the Spark engine gives the default engine's features, scores, channels and quarantine.

120,000 generated lines in four CSV files (the default engine scores their concatenation), against a
history store holding 30,000 earlier lines and copies of 1,500 of the lines scored (identical,
labelled and corrected ones), with bad rows and keys repeated within and across files. Features are
compared exactly (counts) or within 1e-9 (rates, ratios), scores within 1e-9; channels, reasons,
suspected commodities, every other output column and the quarantine (rows and reasons) exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.history import HistoryFeatures
from features.history_store import FileHistory, HistoryStore
from features.io import iter_manifest_chunks, write_table
from features.schema import KeyHashes, validate_manifest
from features.spark_history import export_store, history_features
from features.spark_manifest import validate_dataset
from models.bundle import load_bundle, save_bundle
from serve.batch import score_file
from serve.spark_scoring import score_dataset

pytestmark = pytest.mark.slow

KEY = ["declaration_id", "line_no"]
FILES = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_bundle, labelled_manifest):
    """(folder, bundle folder, input folder of CSV parts, their concatenation, store folder)."""
    from training.synthetic import arriving_lines

    folder = tmp_path_factory.mktemp("parity")
    bundle = folder / "bundle"
    save_bundle(bundle, small_bundle["booster"], small_bundle["spec"], small_bundle["commodity_booster"])
    earlier = validate_manifest(labelled_manifest(30_000, seed=5, start="2023-01-01", end="2026-03-31")).valid
    later = labelled_manifest(120_000, seed=6, start="2026-01-01", end="2026-06-30")
    incoming = arriving_lines(later).astype("string")
    rng = np.random.default_rng(7)
    # Bad rows: unparseable and impossible values; repeated keys within and across files.
    bad = rng.choice(len(incoming), 60, replace=False)
    incoming.loc[bad[:20], "gross_weight_kg"] = "-5"
    incoming.loc[bad[20:40], "declared_at"] = "2026-02-30"
    incoming.loc[bad[40:], "origin_country"] = "China"
    repeats = incoming.iloc[rng.choice(len(incoming), 40, replace=False)]
    incoming = pd.concat([incoming, repeats], ignore_index=True)
    # The store: earlier lines, and copies of lines scored now (identical, labelled, corrected).
    copies = validate_manifest(later.iloc[:1_500]).valid.copy()
    copies.loc[copies.index[500:1_000], "hs_code"] = "811292"
    copies.loc[copies.index[1_000:], "consignee_id"] = "C-CORRECTED"
    store = folder / "store"
    HistoryStore(store).append(pd.concat([earlier, copies], ignore_index=True))
    parts = folder / "incoming"
    parts.mkdir()
    bounds = np.linspace(0, len(incoming), FILES + 1).astype(int)
    for index in range(FILES):
        write_table(incoming.iloc[bounds[index] : bounds[index + 1]], parts / f"part-{index}.csv")
    whole = folder / "incoming.csv"
    write_table(incoming, whole)
    return folder, bundle, parts, whole, store


def default_features(bundle, whole: Path, store: Path, workdir: Path) -> pd.DataFrame:
    """History features of the valid lines as the default engine computes them (a file in parts)."""
    step = next(s for _, s in bundle.pipeline.steps if isinstance(s, HistoryFeatures))
    seen, valid = KeyHashes(), []
    for chunk in iter_manifest_chunks(whole):
        valid.append(validate_manifest(chunk, str(whole), seen).valid)
    lines = pd.concat(valid, ignore_index=True)
    past = FileHistory(HistoryStore(store), workdir)
    past.add(lines)
    features = step.transform(lines, past)
    return features[KEY + list(step.numeric_features_)].astype({"declaration_id": str, "line_no": "int64"})


def test_spark_features_scores_channels_and_quarantine_are_the_default_engines(world, spark, tmp_path):
    folder, bundle_dir, parts, whole, store = world
    bundle = load_bundle(bundle_dir)
    step = next(s for _, s in bundle.pipeline.steps if isinstance(s, HistoryFeatures))

    # Features: the same lines, the same store, computed by each engine.
    expected = default_features(bundle, whole, store, tmp_path / "file-history")
    dataset = validate_dataset(spark, str(parts), str(tmp_path / "work"))
    export = export_store(HistoryStore(store), tmp_path / "export")
    computed = history_features(spark, dataset.lines, step, export, buckets=16)
    keyed = dataset.lines.select("_row", *KEY).join(computed, "_row").drop("_row").toPandas()
    keyed = keyed.astype({"declaration_id": str, "line_no": "int64"})
    merged = expected.merge(keyed, on=KEY, suffixes=("", "_spark"), validate="one_to_one")
    assert len(merged) == len(expected) == len(keyed) > 119_000
    counts = [n for n in step.numeric_features_ if not n.endswith(("_rate", "_ratio"))]
    for name in step.numeric_features_:
        mine, theirs = merged[name].to_numpy("float64"), merged[f"{name}_spark"].to_numpy("float64")
        if name in counts:
            np.testing.assert_array_equal(theirs, mine, err_msg=name)
        else:
            np.testing.assert_allclose(theirs, mine, rtol=0, atol=1e-9, err_msg=name)
    assert np.nanmax(merged["shipper_id_lines_before"]) > 10  # the store's history reaches the lines
    assert np.nansum(merged["consignee_id_outcomes_known"]) > 0

    # Scores, channels, reasons: whole runs of each engine, each on its own copy of the store.
    for name in ("store-default", "store-spark"):
        shutil.copytree(store, tmp_path / name)
    default = score_file(whole, tmp_path / "default.parquet", bundle, history=HistoryStore(tmp_path / "store-default"))
    summary = score_dataset(
        spark, str(parts), str(tmp_path / "spark-out"), str(bundle_dir), history=HistoryStore(tmp_path / "store-spark")
    )
    assert (summary.lines_read, summary.lines_scored, summary.lines_quarantined) == (
        default.lines_read,
        default.lines_scored,
        default.lines_quarantined,
    )
    assert summary.channels == default.channels and summary.checks == default.checks
    ours, theirs = pd.read_parquet(tmp_path / "default.parquet"), pd.read_parquet(tmp_path / "spark-out")
    assert list(theirs.columns) == list(ours.columns)
    assert theirs.dtypes.astype(str).tolist() == ours.dtypes.astype(str).tolist()
    np.testing.assert_allclose(theirs["risk_score"], ours["risk_score"], rtol=0, atol=1e-9)
    pd.testing.assert_frame_equal(theirs.drop(columns="risk_score"), ours.drop(columns="risk_score"))
    assert set(ours["channel"]) == {"red", "yellow", "green"}

    # The quarantine: the same rows, in the same order, with the same reasons.
    quarantined = pd.read_csv(tmp_path / "default.quarantine.csv", dtype=str, keep_default_na=False)
    spark_parts = sorted((tmp_path / "spark-out.quarantine.csv").glob("part-*.csv"))
    spark_quarantined = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in spark_parts], ignore_index=True)
    pd.testing.assert_frame_equal(spark_quarantined, quarantined)
    assert len(quarantined) == 100 and quarantined["quarantine_reason"].str.contains("duplicate").sum() == 40

    # Both runs leave the store with the same lines.
    pd.testing.assert_frame_equal(HistoryStore(tmp_path / "store-spark").read(), HistoryStore(tmp_path / "store-default").read())
