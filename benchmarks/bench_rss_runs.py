"""Measure how host RSS moves across repeated pipeline runs: the noise that
``tests/test_pipeline.py::test_repeated_runs_do_not_grow_rss`` must tolerate, and the leak it must catch.

    .venv/bin/python benchmarks/bench_rss_runs.py [--repeat 5] [--runs 12] [--warmup 3] [--trim] [--leak-mib 0]

Each repetition is a fresh interpreter that runs the test's request (10 s, batch 2, LM on, a simulated
8 GB card, one step) ``--warmup + --runs`` times and reads RSS after each run (after ``gc.collect()``;
``--trim`` also hands freed heap back to the OS with glibc's ``malloc_trim(0)`` first, as the test does).
Printed per repetition: RSS after every run, the old statistic (last − first reading, warm-up
included), and the test's statistic: the least-squares slope over the warmed-up runs, in MiB per run.
``--leak-mib N`` keeps N MiB alive per run (a deliberate leak) to show what the slope reports for one.

Measured on the shared 2-core machine (2026-12-05): without --trim, 5 × (3 + 12) runs: warmed runs spread
42-178 MiB, last − first -113 … +54 MiB, slope -1.07 … +3.25 MiB/run; with --trim: spread ≤ 0.1 MiB,
last − first +0.2 … +0.3 MiB, slope +0.00 … +0.01 MiB/run; --trim --leak-mib 1 (2 × (2 + 8)): +1.01 MiB/run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import gc, json, sys, tempfile
import torch
torch.set_num_threads(1)
from acestep_core import GenerationRequest
from acestep_core.runtime.pipeline import generate, rss_bytes
from acestep_core.types import DetectOptions
runs, leak_mib, trim = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "trim"
if trim:
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
request = GenerationRequest(duration_s=10, batch_size=2, lm="on")
kept, readings = [], []
with tempfile.TemporaryDirectory() as out:
    for index in range(runs):
        generate(request, detect_options=DetectOptions(vram_gb="8"), out_dir=f"{out}/{index}", steps=1,
                 progress=False, seed=index)
        if leak_mib:
            kept.append(torch.ones(int(leak_mib * 2**20) // 4))
        gc.collect()
        if trim:
            libc.malloc_trim(0)
        readings.append(rss_bytes() / 2**20)
print(json.dumps(readings))
"""


def slope_mib_per_run(readings: list[float]) -> float:
    """Least-squares slope of RSS against the run's number."""
    return statistics.linear_regression(range(len(readings)), readings).slope


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes (default 5)")
    parser.add_argument("--runs", type=int, default=12, help="measured runs per process (default 12)")
    parser.add_argument("--warmup", type=int, default=3, help="runs before the measured ones (default 3)")
    parser.add_argument("--leak-mib", type=float, default=0.0, help="MiB kept alive per run (default 0)")
    parser.add_argument(
        "--trim", action="store_true", help="hand freed heap back to the OS (glibc malloc_trim) before each reading"
    )
    parser.add_argument("--json", action="store_true", help="print every reading as JSON")
    args = parser.parse_args()
    rows = []
    for repetition in range(args.repeat):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(args.warmup + args.runs),
                str(args.leak_mib),
                "trim" if args.trim else "-",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        readings = json.loads(done.stdout.strip().splitlines()[-1])
        warmed = readings[args.warmup :]
        row = {
            "readings_mib": [round(r, 1) for r in readings],
            "last_minus_first_mib": round(readings[-1] - readings[0], 1),
            "slope_mib_per_run": round(slope_mib_per_run(warmed), 2),
            "warmed_spread_mib": round(max(warmed) - min(warmed), 1),
        }
        rows.append(row)
        print(
            f"repetition {repetition + 1}: RSS (MiB) {[round(r) for r in readings]}; last − first "
            f"{row['last_minus_first_mib']:+.1f} MiB; slope over runs {args.warmup + 1}-{len(readings)} "
            f"{row['slope_mib_per_run']:+.2f} MiB/run; spread of the warmed runs {row['warmed_spread_mib']:.1f} MiB",
            flush=True,
        )
    slopes = [row["slope_mib_per_run"] for row in rows]
    print(
        f"slope over {len(rows)} repetitions: min {min(slopes):+.2f}, median {statistics.median(slopes):+.2f}, "
        f"max {max(slopes):+.2f} MiB/run (leak injected: {args.leak_mib:g} MiB/run)"
    )
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
