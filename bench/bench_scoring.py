"""Benchmark: end-to-end batch scoring of a large manifest vs. raw ``booster.predict``.

Run ``make bench`` (or ``.venv/bin/python bench/bench_scoring.py --rows 1000000``). It

1. generates labelled history and trains a bundle into a local folder (no MLflow needed),
2. generates an unlabelled manifest of ``--rows`` lines (CSV),
3. runs ``misdeclare score`` on it in a child process and records wall time and peak memory (RSS),
4. times the stages in-process on the same lines: reading + validation, feature pipeline,
   ``booster.predict`` on the feature matrix, and ``pred_contrib`` on the flagged lines.

Results are printed as a Markdown table and written to ``<workdir>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _timed(function, *args, **kwargs):
    started = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - started


def prepare(workdir: Path, rows: int, train_rows: int) -> tuple[Path, Path]:
    """Generate the training history, train a bundle folder, and generate the manifest to score."""
    from features.io import write_table
    from features.schema import validate_manifest
    from models.bundle import save_bundle
    from training.config import load_train_config
    from training.synthetic import arriving_lines, generate_manifest
    from training.train import train_model

    bundle_dir, manifest = workdir / "bundle", workdir / f"manifest_{rows}.csv"
    if not (bundle_dir / "MANIFEST.json").exists():
        history = validate_manifest(generate_manifest(train_rows, 11, "2023-01-01", "2026-06-30")).valid
        result = train_model(history, load_train_config())
        save_bundle(bundle_dir, result.booster, result.spec, result.commodity_booster)
    if not manifest.exists():
        lines = generate_manifest(rows, 12, "2026-07-01", "2026-12-31")
        write_table(arriving_lines(lines), manifest)
    return bundle_dir, manifest


def end_to_end(manifest: Path, bundle_dir: Path, workdir: Path) -> dict:
    """Run the CLI in a child process: wall time and the child's peak RSS."""
    out = workdir / "scored.csv"
    command = [str(Path(sys.executable).with_name("misdeclare")), "score", str(manifest), "--out", str(out),
               "--model", str(bundle_dir), "--history", str(workdir / "history-empty")]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "peak_rss_mib": peak_kib / 1024}


def stages(manifest: Path, bundle_dir: Path) -> dict:
    """Time each stage in-process on the same lines (no history store)."""
    from features.io import read_manifest
    from features.pipeline import transform_features
    from features.schema import validate_manifest
    from models.bundle import load_bundle_folder
    from models.channels import channel_rates, channels_for_lines
    from models.predict import apply_calibration

    bundle = load_bundle_folder(bundle_dir)
    raw, read_s = _timed(read_manifest, manifest)
    valid, validate_s = _timed(lambda: validate_manifest(raw).valid)
    (derived, X), features_s = _timed(transform_features, bundle.pipeline, valid)
    raw_scores, predict_s = _timed(bundle.booster.predict, X, raw_score=True, num_threads=2)
    # Day quotas over the whole file, as `misdeclare score` assigns them (the origin check aside).
    flagged = channels_for_lines(valid, apply_calibration(raw_scores, bundle.spec["calibration"]),
                                 channel_rates(bundle.spec)) != "green"
    sample = X[flagged].head(20_000)
    _, contrib_s = _timed(bundle.booster.predict, sample, pred_contrib=True, num_threads=2)
    return {"read_s": read_s, "validate_s": validate_s, "features_s": features_s, "predict_s": predict_s,
            "flagged_share": float(flagged.mean()), "contrib_lines": len(sample), "contrib_s": contrib_s,
            "lines": len(valid), "model_features": X.shape[1], "trees": bundle.booster.num_trees()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--train-rows", type=int, default=300_000)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle_dir, manifest = prepare(args.workdir, args.rows, args.train_rows)
    e2e = end_to_end(manifest, bundle_dir, args.workdir)
    stage = stages(manifest, bundle_dir)
    n = stage["lines"]
    rows = [
        ("end to end `misdeclare score` (CSV in, CSV out, reasons for flagged)", e2e["seconds"], n),
        ("read CSV (pyarrow, chunked)", stage["read_s"], n),
        ("validate (pandera + parsing)", stage["validate_s"], n),
        ("feature pipeline", stage["features_s"], n),
        ("raw booster.predict on the feature matrix", stage["predict_s"], n),
        ("pred_contrib (reasons) on flagged lines", stage["contrib_s"], stage["contrib_lines"]),
    ]
    print(f"| stage ({n:,} lines, {stage['model_features']} features, {stage['trees']} trees) | seconds | lines/s |")
    print("|---|---:|---:|")
    for name, seconds, lines in rows:
        print(f"| {name} | {seconds:.1f} | {lines / seconds:,.0f} |")
    print(f"\npeak memory of `misdeclare score`: {e2e['peak_rss_mib']:,.0f} MiB; "
          f"flagged share {stage['flagged_share']:.1%}")
    (args.workdir / "results.json").write_text(json.dumps({"end_to_end": e2e, "stages": stage}, indent=1))


if __name__ == "__main__":
    main()
