"""CPU of one ``POST /score`` request as a scoring worker runs it, and a hash of what it answers.

A scoring worker validates the request's lines, scores them with their history read from the store
(features, LightGBM, reasons) and appends them to the store (:func:`serve.triage.scoring.score_lines`).
This script does the same in one process, request after request, on a copy of the demo's history
store (the demo's own store is never written), and prints the CPU milliseconds per request (mean and
median) and a SHA-256 of every answer: two versions of the code that print the same hash answered the
same requests identically (the store grows the same way in both).

Usage::

    (cd FOLDER && MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db misdeclare demo --rows 120000 --workdir demo)  # once
    .venv/bin/python bench/bench_request.py --demo FOLDER [--requests 40] [--profile]
    PYTHONPATH=/tmp/before .venv/bin/python bench/bench_request.py --demo FOLDER   # another version's code

``FOLDER`` is a folder where the demo ran with its MLflow store in ``FOLDER/mlflow.db`` (as
``bench/loadtest.py --demo`` takes it). ``--profile`` prints the functions of this code base that
took the most time (cProfile, cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from loadtest import SCORE_LINES
from loadtest import score_lines as request_lines

from features.history_store import HistoryStore
from models.predict import score_frame
from serve.triage.scoring import score_lines
from serve.triage.scoring_pool import BundleBytes

MODEL_URI = "models:/misdeclare@champion"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="folder where the demo ran (FOLDER/mlflow.db, FOLDER/demo)")
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.demo.resolve() / 'mlflow.db'}"
    bundle = BundleBytes.read(MODEL_URI).build()
    scorer = partial(score_frame, bundle, num_threads=1)  # as a scoring worker holds it
    lines = request_lines(args.demo / "demo")
    if len(lines) < (args.requests + 1) * SCORE_LINES:
        sys.exit(f"--requests {args.requests}: the demo's manifest holds lines for {len(lines) // SCORE_LINES - 1}")
    with tempfile.TemporaryDirectory(prefix="misdeclare-request-") as scratch:
        try:
            store = HistoryStore(Path(scratch) / "history", threads=1)  # as a scoring worker opens it
        except TypeError:  # a version of the code from before that setting
            store = HistoryStore(Path(scratch) / "history")
        shutil.copytree(args.demo / "demo" / "history", store.directory)
        score_lines(scorer, lines[:SCORE_LINES], store)  # the first call loads kernels and tables
        batches = [lines[k * SCORE_LINES : (k + 1) * SCORE_LINES] for k in range(1, args.requests + 1)]
        profile = cProfile.Profile() if args.profile else None
        digest, seconds = hashlib.sha256(), []
        for batch in batches:
            started = time.process_time()
            result = score_lines(scorer, batch, store) if profile is None else profile.runcall(score_lines, scorer, batch, store)
            seconds.append(time.process_time() - started)
            digest.update(json.dumps([result.scores, result.rejected], sort_keys=True).encode())
    print(
        f"{args.requests} requests of {SCORE_LINES} lines: CPU per request mean {1000 * statistics.mean(seconds):.0f} ms, "
        f"median {1000 * statistics.median(seconds):.0f} ms; answers sha256 {digest.hexdigest()[:16]}"
    )
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(r"(features|models|serve)/", 30)


if __name__ == "__main__":
    main()
