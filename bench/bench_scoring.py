"""Benchmark: end-to-end batch scoring against the limit, file size and history-store size.

Run ``make bench`` (or ``.venv/bin/python bench/bench_scoring.py`` with the options below). It

1. generates labelled history and trains a bundle into a local folder (no MLflow needed),
2. generates an unlabelled manifest of ``--rows`` lines (CSV),
3. runs ``misdeclare score`` on it in a child process (one worker process per core) and records
   wall time and peak memory (resident memory of the command and its workers together),
4. times the stages in-process on the same lines: reading + validation, feature pipeline,
   ``booster.predict`` on the feature matrix, and the reasons' TreeSHAP on the flagged lines
   (``pred_contrib`` and the per-leaf tables of :mod:`models.treeshap`); the limit is reading plus
   a bare ``predict`` of the same lines;
5. scores a manifest of ``--large-rows`` lines the same way (memory and lines/s against step 3);
6. scores a batch of ``--batch-rows`` lines against an empty history store and against a store of
   ``--store-lines`` lines over the five years before (filled through the store's own ``append``
   from generated lines stored again and again with their parties partly renamed).

Every figure is a ratio of two measurements of the same run (the limit of the large file is the
first file's read + predict time per line times its lines). Results are printed as Markdown, with
a table of the issue's goals, and written to ``<workdir>/results.json``; generated files and the
filled store are reused by later runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


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


def _tree_rss_kib(root: int) -> int:
    """Resident memory (KiB) of process ``root`` and all its descendants (workers), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        pid = int(entry.name)
        children.setdefault(int(fields.get("PPid", "0").strip()), []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) if "VmRSS" in fields else 0
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measured_run(command: list[str], interval: float = 0.2) -> dict:
    """Run ``command``: wall seconds and peak resident memory of it and its worker processes together.

    Memory is the largest sum of the resident sets of the process tree over samples every
    ``interval`` seconds (a worker's memory counts while it runs beside the others).
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kib(process.pid))
        time.sleep(interval)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, stderr=process.stderr.read())
    return {"seconds": seconds, "peak_rss_mib": peak / 1024}


def end_to_end(manifest: Path, bundle_dir: Path, workdir: Path, history: Path | None = None) -> dict:
    """Run ``misdeclare score`` in a child process: wall time and peak RSS (with its workers).

    ``history`` None: a fresh, empty store (removed first, so every run starts alike).
    """
    out = workdir / "scored.csv"
    if history is None:
        history = workdir / "history-empty"
        shutil.rmtree(history, ignore_errors=True)
    command = [
        str(Path(sys.executable).with_name("misdeclare")),
        "score",
        str(manifest),
        "--out",
        str(out),
        "--model",
        str(bundle_dir),
        "--history",
        str(history),
    ]
    return measured_run(command)


def large_manifest(workdir: Path, rows: int, chunk_rows: int = 1_000_000) -> Path:
    """A manifest of ``rows`` later lines in date order, as dense per day as the ``--rows`` one.

    Each ``chunk_rows`` block covers its own half year after the one before (other seeds, distinct
    declaration ids): 10M lines are five years of a 1M-line half year, not ten times as many lines
    per day (which would make every day's history ten times larger too).
    """
    from training.synthetic import arriving_lines, generate_manifest

    path = workdir / f"manifest_{rows}_dated.csv"
    if path.exists():
        return path
    partial = path.with_name(f".{path.name}.partial")
    for index, start in enumerate(range(0, rows, chunk_rows)):
        first = pd.Timestamp("2026-07-01") + pd.DateOffset(months=6 * index)
        last = first + pd.DateOffset(months=6) - pd.Timedelta(days=1)
        lines = arriving_lines(generate_manifest(min(chunk_rows, rows - start), 100 + index, first.date(), last.date()))
        lines["declaration_id"] = lines["declaration_id"] + f"-{index}"
        lines.to_csv(partial, mode="a" if index else "w", header=not index, index=False)
    partial.rename(path)
    return path


def filled_store(workdir: Path, store_lines: int, base_rows: int = 300_000, renamed_variants: int = 8) -> Path:
    """A history store of about ``store_lines`` lines over five years, filled through ``append``.

    ``base_rows`` generated lines (five years before the scored manifest) are stored again and
    again, each copy with its own declaration ids and, in all but one copy in ``renamed_variants``,
    its parties renamed: the later batch's parties have long histories, the store holds many more
    parties than a batch touches, and a year holds a fifth of the lines (10M a year for 50M).
    """
    from features.history_store import HistoryStore
    from features.schema import validate_manifest
    from training.synthetic import generate_manifest

    folder = workdir / f"store-{store_lines}"
    done = folder / "FILLED"
    if done.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    base = validate_manifest(generate_manifest(base_rows, 21, "2021-07-01", "2026-06-30")).valid
    store = HistoryStore(folder)
    for k in range(max(1, round(store_lines / len(base)))):
        lines = base.copy()
        lines["declaration_id"] = lines["declaration_id"] + f"-{k}"
        if k % renamed_variants:
            for party in ("shipper_id", "consignee_id", "importer_id", "declarant_id"):
                lines[party] = lines[party] + f"~{k % renamed_variants}"
        store.append(lines)
    done.write_text(f"{len(store)}\n")
    return folder


def store_batch(workdir: Path, bundle_dir: Path, manifest: Path, batch_rows: int, store_lines: int) -> dict:
    """A batch scored against an empty store and against a copy of the filled store."""
    batch = workdir / f"batch_{batch_rows}.csv"
    if not batch.exists():
        pd.read_csv(manifest, nrows=batch_rows, dtype=str).to_csv(batch, index=False)
    filled = filled_store(workdir, store_lines)
    scratch = workdir / "store-scratch"  # scoring appends the batch: measure on a copy
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(filled, scratch)
    empty = end_to_end(batch, bundle_dir, workdir)
    full = end_to_end(batch, bundle_dir, workdir, history=scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "batch_rows": batch_rows,
        "store_lines": int((filled / "FILLED").read_text()),
        "empty_store": empty,
        "filled_store": full,
    }


def stages(manifest: Path, bundle_dir: Path) -> dict:
    """Time each stage in-process on the same lines (no history store), and the attributions."""
    from features.io import read_manifest
    from features.pipeline import transform_features
    from features.schema import validate_manifest
    from models.bundle import load_bundle_folder
    from models.channels import channel_rates, channels_for_lines
    from models.predict import apply_calibration
    from models.treeshap import TreeShapTables

    bundle = load_bundle_folder(bundle_dir)
    raw, read_s = _timed(read_manifest, manifest)
    valid, validate_s = _timed(validate_manifest, raw)
    valid = valid.valid
    del raw
    (derived, X), features_s = _timed(transform_features, bundle.pipeline, valid)
    raw_scores, predict_s = _timed(bundle.booster.predict, X, raw_score=True, num_threads=2)
    # Day quotas over the whole file, as `misdeclare score` assigns them (the origin check aside).
    flagged = (
        channels_for_lines(valid, apply_calibration(raw_scores, bundle.spec["calibration"]), channel_rates(bundle.spec))
        != "green"
    )
    sample = X[flagged].head(20_000)
    contributions, contrib_s = _timed(bundle.booster.predict, sample, pred_contrib=True, num_threads=2)
    tables, build_s = _timed(TreeShapTables, bundle.booster)
    tables.contributions(sample.head(10))  # compiles (or loads) the kernel
    from_tables, tables_s = _timed(tables.contributions, sample)
    return {
        "read_s": read_s,
        "validate_s": validate_s,
        "features_s": features_s,
        "predict_s": predict_s,
        "flagged_share": float(flagged.mean()),
        "contrib_lines": len(sample),
        "contrib_s": contrib_s,
        "tables_build_s": build_s,
        "tables_s": tables_s,
        "tables_max_difference": float(abs(from_tables - contributions).max()),
        "lines": len(valid),
        "model_features": X.shape[1],
        "trees": bundle.booster.num_trees(),
    }


def help_seconds() -> float:
    """Wall time of ``misdeclare --help`` (start-up cost of every command)."""
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("misdeclare")), "--help"], check=True, capture_output=True)
    return time.perf_counter() - started


def _goal(name: str, measured: str, target: str, met: bool) -> str:
    return f"| {name} | {measured} | {target} | {'yes' if met else '**no**'} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--large-rows", type=int, default=10_000_000, help="0 skips the large manifest")
    parser.add_argument("--batch-rows", type=int, default=50_000)
    parser.add_argument("--store-lines", type=int, default=50_000_000, help="0 skips the store comparison")
    parser.add_argument("--train-rows", type=int, default=300_000)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle_dir, manifest = prepare(args.workdir, args.rows, args.train_rows)
    e2e = end_to_end(manifest, bundle_dir, args.workdir)
    stage = stages(manifest, bundle_dir)
    n = stage["lines"]
    limit = stage["read_s"] + stage["predict_s"]
    rows = [
        ("end to end `misdeclare score` (CSV in, CSV out, reasons for flagged)", e2e["seconds"], n),
        ("read CSV (pyarrow, chunked)", stage["read_s"], n),
        ("validate (pandera + parsing)", stage["validate_s"], n),
        ("feature pipeline", stage["features_s"], n),
        ("raw booster.predict on the feature matrix (2 threads)", stage["predict_s"], n),
        ("reasons' TreeSHAP: `pred_contrib` on flagged lines (2 threads)", stage["contrib_s"], stage["contrib_lines"]),
        ("reasons' TreeSHAP: per-leaf tables on the same lines (1 thread)", stage["tables_s"], stage["contrib_lines"]),
    ]
    print(f"| stage ({n:,} lines, {stage['model_features']} features, {stage['trees']} trees) | seconds | lines/s |")
    print("|---|---:|---:|")
    for name, seconds, lines in rows:
        print(f"| {name} | {seconds:.1f} | {lines / seconds:,.0f} |")
    print(
        f"\nlimit (read + bare predict) {limit:.1f} s; end to end = {limit / e2e['seconds']:.3f} x the limit; "
        f"peak memory {e2e['peak_rss_mib']:,.0f} MiB; flagged share {stage['flagged_share']:.1%}; tables built in "
        f"{stage['tables_build_s']:.1f} s, largest difference to pred_contrib {stage['tables_max_difference']:.1e}"
    )
    results = {"end_to_end": e2e, "stages": stage, "limit_s": limit, "ratio_to_limit": limit / e2e["seconds"]}
    results["help_s"] = help_seconds()
    goals = [
        _goal(
            f"end to end against the limit ({n:,} lines)",
            f"{results['ratio_to_limit']:.3f}x",
            ">= 0.25x",
            results["ratio_to_limit"] >= 0.25,
        ),
        _goal(f"peak memory, {n:,} lines", f"{e2e['peak_rss_mib']:,.0f} MiB", "<= 2 GiB", e2e["peak_rss_mib"] <= 2048),
        _goal("`misdeclare --help`", f"{results['help_s']:.2f} s", "< 1 s", results["help_s"] < 1),
    ]
    if args.store_lines:
        store = store_batch(args.workdir, bundle_dir, manifest, args.batch_rows, args.store_lines)
        store["time_ratio"] = store["filled_store"]["seconds"] / store["empty_store"]["seconds"]
        print(
            f"batch of {args.batch_rows:,} lines: {store['empty_store']['seconds']:.1f} s against an empty store, "
            f"{store['filled_store']['seconds']:.1f} s against {store['store_lines']:,} stored lines "
            f"({store['time_ratio']:.2f} x; peak {store['empty_store']['peak_rss_mib']:,.0f} vs "
            f"{store['filled_store']['peak_rss_mib']:,.0f} MiB)"
        )
        results["store"] = store
        goals.append(
            _goal(
                f"{args.batch_rows:,}-line batch, {store['store_lines']:,}-line store against an empty one",
                f"{store['time_ratio']:.2f}x",
                "<= 1.5x",
                store["time_ratio"] <= 1.5,
            )
        )
        (args.workdir / "results.json").write_text(json.dumps(results, indent=1))
    if args.large_rows:
        large = end_to_end(large_manifest(args.workdir, args.large_rows), bundle_dir, args.workdir)
        scale = {
            "rows": args.large_rows,
            **large,
            "lines_per_s_ratio": (args.large_rows / large["seconds"]) / (n / e2e["seconds"]),
            "peak_memory_ratio": large["peak_rss_mib"] / e2e["peak_rss_mib"],
            # The limit scales with the lines: read + predict per line as measured on the first file.
            "ratio_to_limit": limit * args.large_rows / n / large["seconds"],
        }
        print(
            f"{args.large_rows:,} lines: {large['seconds']:.1f} s ({args.large_rows / large['seconds']:,.0f} lines/s, "
            f"{scale['lines_per_s_ratio']:.2f} x the rate on {n:,}), peak {large['peak_rss_mib']:,.0f} MiB "
            f"({scale['peak_memory_ratio']:.2f} x)"
        )
        results["large"] = scale
        goals += [
            _goal(
                f"end to end against the limit ({args.large_rows:,} lines)",
                f"{scale['ratio_to_limit']:.3f}x",
                ">= 0.25x",
                scale["ratio_to_limit"] >= 0.25,
            ),
            _goal(
                f"peak memory, {args.large_rows:,} lines",
                f"{large['peak_rss_mib']:,.0f} MiB",
                "<= 2 GiB",
                large["peak_rss_mib"] <= 2048,
            ),
            _goal(
                f"peak memory, {args.large_rows:,} against {n:,} lines",
                f"{scale['peak_memory_ratio']:.2f}x",
                "<= 1.2x",
                scale["peak_memory_ratio"] <= 1.2,
            ),
            _goal(f"lines/s, {args.large_rows:,} against {n:,} lines", f"{scale['lines_per_s_ratio']:.2f}x", "(flat)", True),
        ]
    print("\n| goal (issue 9) | measured | target | met |\n|---|---|---|---|\n" + "\n".join(goals))
    (args.workdir / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
