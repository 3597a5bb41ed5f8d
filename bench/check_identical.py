"""Check that ``misdeclare score`` writes exactly the same bytes as a recorded reference run.

Speed work on batch scoring must not change what it writes. This script scores one generated file
in a few set-ups and compares the scored CSV and the quarantine byte for byte (SHA-256 and, on a
difference, the first differing line) with a reference recorded by an earlier commit:

- ``empty``: a file of ``--rows`` lines (about 1 % of them broken in ways the quarantine names:
  bad codes, dates, numbers, duplicates, rules across columns, formula-like cells) in chunks of
  ``--chunk-rows`` against an empty history store;
- ``stored``: the same file against a store already holding labelled history of its parties and
  copies of some of its lines (identical, corrected and labelled ones), so that the taken-out
  copies and the recomputed first uses are exercised;
- ``explain-all``: the first fifth of the file with ``--explain all`` (reasons for every line);
- ``workers``: the ``empty`` set-up again with ``--workers 2`` when ``score`` has that option.

Usage::

    .venv/bin/python bench/check_identical.py --record   # with the code whose output is the reference
    .venv/bin/python bench/check_identical.py            # after a change: exit 1 on any difference

Files live in ``bench/out/identity`` (``--workdir``); the bundle is ``bench/out/bundle`` (made by
``bench/bench_scoring.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd


def _broken(lines: pd.DataFrame, seed: int) -> pd.DataFrame:
    """``lines`` (text) with about 1 % of rows broken, each in one of the ways validation names."""
    rng = np.random.default_rng(seed)
    lines = lines.astype("string").copy()
    n = len(lines)
    edits = {
        "hs_code": ["12AB", "7901", ""],
        "declared_at": ["2026-13-45", "yesterday", ""],
        "gross_weight_kg": ["-5", "heavy", "0", "inf"],
        "net_weight_kg": ["1e12"],  # above gross
        "declared_value_usd": ["-1", "n/a"],
        "origin_country": ["Thailand", "t"],
        "port_of_loading": ["THL", "=cmd|' /C calc'!A0"],
        "transshipment_ports": ["CNSHA;XX"],
        "transport_mode": ["teleport"],
        "line_no": ["0", "1.5", "123456789012345678901234567890"],
        "packages": ["2.5", "0"],
        "containers": ["-1"],
        "declaration_id": [""],
        "description": ["@SUM(A1)", "+1-2", "-3.5"],  # formula-like cells (valid rows) and plain numbers
    }
    rows = rng.choice(n, size=max(1, n // 100), replace=False)
    columns = list(edits)
    for row in rows:
        column = columns[rng.integers(len(columns))]
        lines.iat[row, lines.columns.get_loc(column)] = rng.choice(edits[column])
    # Duplicates of earlier keys (the later copy is quarantined), across chunks too.
    copies = rng.choice(n, size=max(1, n // 500), replace=False)
    targets = rng.choice(n, size=len(copies), replace=False)
    for source, target in zip(copies, targets, strict=True):
        lines.iat[target, lines.columns.get_loc("declaration_id")] = lines.iat[source, lines.columns.get_loc("declaration_id")]
        lines.iat[target, lines.columns.get_loc("line_no")] = lines.iat[source, lines.columns.get_loc("line_no")]
    return lines


def prepare(workdir: Path, rows: int) -> dict[str, Path]:
    """The input file, its first fifth, and the store of the ``stored`` set-up (reused when present)."""
    from features.history_store import HistoryStore
    from features.schema import validate_manifest
    from training.synthetic import arriving_lines, generate_manifest

    workdir.mkdir(parents=True, exist_ok=True)
    paths = {"input": workdir / f"input_{rows}.csv", "head": workdir / f"input_{rows}_head.csv", "store": workdir / "store"}
    if not paths["input"].exists():
        lines = _broken(arriving_lines(generate_manifest(rows, 31, "2026-07-01", "2026-09-30")), seed=32)
        lines.to_csv(paths["input"], index=False)
        lines.head(rows // 5).to_csv(paths["head"], index=False)
        shutil.rmtree(paths["store"], ignore_errors=True)
    if not (paths["store"] / "FILLED").exists():
        shutil.rmtree(paths["store"], ignore_errors=True)
        store = HistoryStore(paths["store"])
        # Labelled history of the same generated world before the file (parties overlap).
        store.append(validate_manifest(generate_manifest(rows, 31, "2025-07-01", "2026-06-30")).valid)
        scored = validate_manifest(pd.read_csv(paths["input"], dtype=str, keep_default_na=False).replace("", pd.NA)).valid
        copies = scored.sample(n=min(len(scored), rows // 20), random_state=33).copy()
        third = len(copies) // 3
        copies.iloc[:third, copies.columns.get_loc("hs_code")] = "790111"  # corrected declarations
        copies.iloc[third : 2 * third, copies.columns.get_loc("inspected")] = 1  # labelled copies
        copies.iloc[third : 2 * third, copies.columns.get_loc("misdeclared")] = 1
        store.append(copies)  # the last third: identical copies
        (paths["store"] / "FILLED").write_text(f"{len(store)}\n")
    return paths


def _score(input_path: Path, out: Path, bundle: Path, history: Path, extra: list[str]) -> float:
    command = [
        str(Path(sys.executable).with_name("misdeclare")),
        "score",
        str(input_path),
        "--out",
        str(out),
        "--model",
        str(bundle),
        "--history",
        str(history),
        *extra,
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def _supports_workers() -> bool:
    help_text = subprocess.run(
        [str(Path(sys.executable).with_name("misdeclare")), "score", "--help"], capture_output=True, text=True
    ).stdout
    return "--workers" in help_text


def run_setups(workdir: Path, bundle: Path, rows: int, chunk_rows: int, into: Path) -> dict[str, dict]:
    """Score every set-up into ``into``; per set-up the seconds and the SHA-256 of each written file."""
    paths = prepare(workdir, rows)
    chunk = ["--chunk-rows", str(chunk_rows)]
    if _supports_workers():  # the reference set-ups in one process, as before workers existed
        chunk += ["--workers", "1"]
    setups = {
        "empty": (paths["input"], None, chunk),
        "stored": (paths["input"], paths["store"], chunk),
        "explain-all": (paths["head"], None, [*chunk, "--explain", "all"]),
    }
    if _supports_workers():
        setups["workers"] = (paths["input"], None, [*chunk[:2], "--workers", "2"])
    into.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, (input_path, store, extra) in setups.items():
        history = workdir / "history-scratch"
        shutil.rmtree(history, ignore_errors=True)
        if store is not None:
            shutil.copytree(store, history)
        out = into / f"{name}.scored.csv"
        seconds = _score(input_path, out, bundle, history, extra)
        shutil.rmtree(history, ignore_errors=True)
        files = {"scored": out, "quarantine": into / f"{name}.quarantine.csv"}
        results[name] = {
            "seconds": round(seconds, 1),
            **{kind: hashlib.sha256(path.read_bytes()).hexdigest() for kind, path in files.items()},
        }
    return results


def _first_difference(reference: Path, current: Path) -> str:
    with reference.open("rb") as a, current.open("rb") as b:
        for number, (left, right) in enumerate(zip(a, b, strict=False), start=1):
            if left != right:
                return f"line {number}:\n  reference {left[:300]!r}\n  now       {right[:300]!r}"
    return "one file is a prefix of the other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="record the reference (run with the reference code)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk-rows", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/identity"))
    parser.add_argument("--bundle", type=Path, default=Path("bench/out/bundle"))
    args = parser.parse_args()
    reference_dir = args.workdir / "reference"
    into = reference_dir if args.record else args.workdir / "current"
    results = run_setups(args.workdir, args.bundle, args.rows, args.chunk_rows, into)
    if args.record:
        (reference_dir / "sha256.json").write_text(json.dumps(results, indent=1))
        print(json.dumps(results, indent=1))
        return 0
    reference = json.loads((reference_dir / "sha256.json").read_text())
    failed = False
    for name, result in results.items():
        expected = reference["empty" if name == "workers" else name]  # workers must equal one process
        for kind in ("scored", "quarantine"):
            same = result[kind] == expected[kind]
            print(f"{name:12s} {kind:10s} {'identical' if same else 'DIFFERENT'}  ({result['seconds']} s)")
            if not same:
                failed = True
                base = "empty" if name == "workers" else name
                print(
                    "  "
                    + _first_difference(reference_dir / f"{base}.{kind}.csv", into / f"{name}.{kind}.csv").replace("\n", "\n  ")
                )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
