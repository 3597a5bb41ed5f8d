"""Before/after on a shared machine: ``misdeclare score`` with two versions of the code at the same time.

On a machine whose load comes and goes, two runs one after the other meet different loads; two
runs at the same time meet the same. This script scores one manifest with the code of each folder
given (a ``git worktree`` of the reference commit, and this one), all at once, each into its own
output folder with a fresh, empty history store, and prints per version the wall seconds, the peak
resident memory of the command and its workers together (as ``bench_scoring.py`` measures it) and
the load averages at start and end; then the ratios to the first version. With ``--limit``, the
limit of ``bench_scoring.py`` (reading the CSV plus a bare ``predict`` of the same lines, here with
the first folder's code) is measured in the same window, and each version's end to end against it.

Usage::

    git worktree add --detach /tmp/before <commit>
    .venv/bin/python bench/compare_code.py /tmp/before . --manifest bench/out/manifest_1000000.csv --limit
    .venv/bin/python bench/compare_code.py /tmp/before . -- --workers 1   # options after -- go to score
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench_scoring import _tree_rss_kib

_LIMIT = """
import json, sys, time
from pathlib import Path
import pandas as pd
from features.io import iter_manifest_chunks, read_manifest
from features.pipeline import transform_features
from features.schema import validate_manifest
from models.bundle import load_bundle_folder
path, bundle = sys.argv[1], load_bundle_folder(Path(sys.argv[2]))
started = time.perf_counter(); lines = len(read_manifest(path)); read_s = time.perf_counter() - started
X = pd.concat([transform_features(bundle.pipeline, validate_manifest(c).valid)[1] for c in iter_manifest_chunks(path, 100_000)])
started = time.perf_counter(); bundle.booster.predict(X, raw_score=True, num_threads=2); predict_s = time.perf_counter() - started
print(json.dumps({"lines": lines, "read_s": read_s, "predict_s": predict_s}))
"""


def _score(code: Path, manifest: Path, bundle: Path, out: Path, extra: list[str], result: dict) -> None:
    """Score ``manifest`` with the code in ``code``; wall seconds and peak memory into ``result``."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    command = [str(Path(sys.executable).with_name("misdeclare")), "score", str(manifest), "--out", str(out / "scored.csv")]
    command += ["--model", str(bundle), "--history", str(out / "history"), *extra]
    env = {**os.environ, "PYTHONPATH": str(code)}
    result["load_start"] = os.getloadavg()
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_kib(process.pid))
        time.sleep(0.2)
    result.update(seconds=time.perf_counter() - started, peak_rss_mib=peak / 1024, load_end=os.getloadavg())
    if process.returncode:
        result["error"] = process.stderr.read().decode()[-2000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("code", nargs="+", type=Path, help="folders of the code versions (the first is the reference)")
    parser.add_argument("--manifest", type=Path, default=Path("bench/out/manifest_1000000.csv"))
    parser.add_argument("--bundle", type=Path, default=Path("bench/out/bundle"))
    parser.add_argument("--workdir", type=Path, default=Path("bench/out/compare"))
    parser.add_argument("--limit", action="store_true", help="also measure the limit (read + bare predict) meanwhile")
    args, extra = parser.parse_known_args()  # the others are options of misdeclare score (after --)
    extra = [a for a in extra if a != "--"]
    results = [{"code": str(code.resolve())} for code in args.code]
    manifest, bundle = args.manifest.resolve(), args.bundle.resolve()
    threads = [
        threading.Thread(target=_score, args=(code.resolve(), manifest, bundle, args.workdir.resolve() / f"v{i}", extra, result))
        for i, (code, result) in enumerate(zip(args.code, results, strict=True))
    ]
    for thread in threads:
        thread.start()
    limit = None
    if args.limit:
        env = {**os.environ, "PYTHONPATH": str(args.code[0].resolve())}
        command = [sys.executable, "-c", _LIMIT, str(manifest), str(bundle)]
        measured = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        limit = json.loads(measured.stdout.strip().splitlines()[-1])
    for thread in threads:
        thread.join()
    first = results[0]
    for result in results:
        result["time_ratio_to_first"] = result.get("seconds", float("nan")) / first.get("seconds", float("nan"))
        if limit is not None:
            result["ratio_to_limit"] = (limit["read_s"] + limit["predict_s"]) / result.get("seconds", float("nan"))
    print(json.dumps({"limit": limit, "versions": results}, indent=1))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
