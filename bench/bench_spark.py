"""Benchmark: the Spark engine with one and two cores, and against the default engine.

Run ``make bench-spark`` (or ``.venv/bin/python bench/bench_spark.py`` with the options below). It

1. trains a bundle on generated labelled lines (the one ``bench/bench_scoring.py`` uses, shared);
2. writes ``--rows`` later lines, in date order at the density of a 1M-line half year, as a
   Parquet dataset of ``--parts`` files (the ``--default-rows`` first ones also as one CSV file);
3. scores the dataset with ``--engine spark`` on ``local[1]`` and on ``local[2]``, each in a child
   process of its own (a SparkSession per master), without a history store (the dataset is its own
   history, as a file is for the default engine): wall time, the driver's peak memory (the Python
   process) and the JVM's (which in local mode also runs the executors). Each run is pinned to as
   many CPUs as its master has task slots (``os.sched_setaffinity``, inherited by the JVM and its
   Python workers): ``local[1]`` means one task at a time, not one core, and unpinned on two cores it
   keeps ~1.45 of them busy (the JVM reads and serialises while the Python worker computes), so an
   unpinned ratio measures the machine, not scaling with cores. ``--no-pin`` runs them unpinned;
4. scores the ``--default-rows`` file with the default engine in a child process, without a store.

Figures are ratios of the same run: local[2] / local[1] lines per second (scaling with cores) and
Spark local[2] / default engine lines per second. Printed as Markdown and written to
``<workdir>/spark-results.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scoring import large_manifest, prepare  # noqa: E402  (the bench folder is no package)


def dataset(workdir: Path, rows: int, parts: int) -> Path:
    """The ``rows``-line manifest (CSV, made once) as a folder of ``parts`` Parquet files."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    folder = workdir / f"dataset_{rows}_{parts}"
    if folder.exists():
        return folder
    source = large_manifest(workdir, rows)
    partial = folder.with_name(f".{folder.name}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    per_part = -(-rows // parts)
    with open(source, encoding="utf-8") as handle:
        names = next(csv.reader(handle))
    # Text columns, as a CSV export converted to Parquet has them (the schema parses the values).
    reader = pacsv.open_csv(
        source,
        read_options=pacsv.ReadOptions(block_size=64 << 20),
        convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in names}, strings_can_be_null=True),
    )
    writer, written, index = None, 0, 0
    for batch in reader:
        table = pa.Table.from_batches([batch])
        while table.num_rows:
            if writer is None:
                writer = pq.ParquetWriter(partial / f"part-{index:05d}.parquet", table.schema)
            take = min(per_part - written, table.num_rows)
            writer.write_table(table.slice(0, take))
            table, written = table.slice(take), written + take
            if written == per_part:
                writer.close()
                writer, written, index = None, 0, index + 1
    if writer is not None:
        writer.close()
    partial.rename(folder)
    return folder


def head_csv(workdir: Path, rows: int, total: int) -> Path:
    """The first ``rows`` lines of the ``total``-line manifest, as one CSV file."""
    path = workdir / f"manifest_{total}_first_{rows}.csv"
    if not path.exists():
        source = large_manifest(workdir, total)
        with open(source, encoding="utf-8") as lines, open(path.with_suffix(".partial"), "w", encoding="utf-8") as out:
            for number, line in enumerate(lines):
                if number > rows:
                    break
                out.write(line)
        path.with_suffix(".partial").rename(path)
    return path


def _peak_kib(pid: int) -> int:
    """Peak resident memory of a process since it was started, from ``/proc`` (``VmHWM``).

    Not ``getrusage``'s ``ru_maxrss`` for this process: Linux carries it across ``exec``, so a
    child started by a process that once held 2.4 GiB (this bench after writing the dataset)
    reported 2.4 GiB while itself holding 240 MiB.
    """
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def task_slots(master: str) -> int:
    """Task slots of a ``local[N]`` master (``local`` is one)."""
    match = re.fullmatch(r"local(?:\[(\d+)\])?", master)
    if match is None:
        raise ValueError(f"master must be local or local[N] to be pinned, got {master!r}")
    return int(match.group(1) or 1)


def pin(master: str) -> list[int]:
    """Pin this process (and the JVM and workers it starts) to the first CPUs, one per task slot."""
    cpus = sorted(os.sched_getaffinity(0))
    slots = task_slots(master)
    if slots > len(cpus):
        raise ValueError(f"{master} needs {slots} CPUs, this process may use {len(cpus)}")
    os.sched_setaffinity(0, cpus[:slots])
    return cpus[:slots]


def run_spark(source: str, out: str, bundle: str, master: str, pinned: str = "pinned") -> dict:
    """Child mode: one Spark scoring run; wall time and peak memory of the driver and the JVM."""
    from serve.spark_scoring import score_dataset, spark_session

    cpus = pin(master) if pinned == "pinned" else sorted(os.sched_getaffinity(0))
    spark = spark_session(master, shuffle_partitions=None)
    started = time.perf_counter()
    summary = score_dataset(spark, source, out, bundle, history=None)
    seconds = time.perf_counter() - started
    jvm = spark.sparkContext._gateway.proc.pid
    return {
        "seconds": seconds,
        "lines": summary.lines_read,
        "driver_peak_mib": _peak_kib(os.getpid()) / 1024,
        "jvm_peak_mib": _peak_kib(jvm) / 1024,
        "cpus": cpus,
    }


def run_default(source: str, out: str, bundle: str) -> dict:
    """Child mode: one default-engine scoring run without a history store."""
    from models.bundle import load_bundle
    from serve.batch import score_file

    started = time.perf_counter()
    summary = score_file(source, out, load_bundle(bundle), history=None)
    return {
        "seconds": time.perf_counter() - started,
        "lines": summary.lines_read,
        "driver_peak_mib": _peak_kib(os.getpid()) / 1024,
    }


def child(*arguments: str) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", *arguments], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--parts", type=int, default=40)
    parser.add_argument("--default-rows", type=int, default=1_000_000)
    parser.add_argument("--train-rows", type=int, default=300_000)
    parser.add_argument("--workdir", type=Path, default=Path("bench/out"))
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True, help="one CPU per task slot")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(run_spark(*rest) if kind == "spark" else run_default(*rest)))
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    bundle, _ = prepare(args.workdir, 1_000, args.train_rows)
    folder = dataset(args.workdir, args.rows, args.parts)
    first = head_csv(args.workdir, args.default_rows, args.rows)
    results = {"rows": args.rows, "parts": args.parts, "default_rows": args.default_rows, "pinned": args.pin}
    for master in ("local[1]", "local[2]"):
        out = args.workdir / f"spark-scored-{master[6]}"
        results[master] = child("spark", str(folder), str(out), str(bundle), master, "pinned" if args.pin else "free")
        print(master, results[master], flush=True)
    results["default"] = child("default", str(first), str(args.workdir / "default-scored.parquet"), str(bundle))
    print("default", results["default"], flush=True)
    rate = {k: results[k]["lines"] / results[k]["seconds"] for k in ("local[1]", "local[2]", "default")}
    results["scaling_local2_over_local1"] = rate["local[2]"] / rate["local[1]"]
    results["spark_local2_over_default"] = rate["local[2]"] / rate["default"]
    (args.workdir / "spark-results.json").write_text(json.dumps(results, indent=1))
    print("| run | lines | seconds | lines/s | driver peak MiB | JVM peak MiB |\n|---|---:|---:|---:|---:|---:|")
    for key in ("local[1]", "local[2]", "default"):
        r = results[key]
        jvm = f"{r['jvm_peak_mib']:,.0f}" if "jvm_peak_mib" in r else "-"
        print(f"| {key} | {r['lines']:,} | {r['seconds']:.1f} | {rate[key]:,.0f} | {r['driver_peak_mib']:,.0f} | {jvm} |")
    pinning = "each pinned to one CPU per task slot" if args.pin else "unpinned"
    print(f"\nlocal[2] / local[1] ({pinning}): {results['scaling_local2_over_local1']:.2f}x (target >= 1.6x)")
    print(f"Spark local[2] / default engine (lines/s): {results['spark_local2_over_default']:.2f}x")


if __name__ == "__main__":
    main()
