"""Start-up cost: a whole resolution in a cold process, against importing torch and against an empty
Python process.

Runs, in turn, ``acestep-core info --json`` under ``MAX_CUDA_VRAM=8``, ``python -c "import torch"``
and ``python -c pass``, each in a fresh process, and prints the medians and two ratios: import torch
/ resolution (goal: at least 10x) and resolution / ``python -c pass`` (goal: at most 2.5x). Wall-clock
time of the whole process, interpreter start included, as a user waits for it. The three kinds
alternate, so a machine that slows down mid-run slows all three alike.

    .venv/bin/python benchmarks/bench_startup.py            # 7 runs each
    .venv/bin/python benchmarks/bench_startup.py --runs 11 --json
    .venv/bin/python benchmarks/bench_startup.py --baseline ../old-checkout/.venv/bin/acestep-core

``--baseline`` times another installation's ``acestep-core`` (an older commit in its own virtual
environment) in the same alternation and prints the speed-up, measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
from pathlib import Path

from coldrun import milliseconds, timed

GOAL_RATIO = 10.0
GOAL_OVER_EMPTY = 2.5


def console_script() -> str:
    beside_python = Path(sys.executable).with_name("acestep-core")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("acestep-core")
    if found is None:
        sys.exit("acestep-core is not installed: pip install -e . -e plugins/simulated -e plugins/tiers_default")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="cold processes of each kind (at least 5; default 7)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="keep PYTHONDONTWRITEBYTECODE from the environment: our editable sources are then compiled "
        "in every process, while torch's wheel ships compiled (by default the children may cache "
        "bytecode, as Python does unless told not to)",
    )
    parser.add_argument(
        "--baseline",
        metavar="ACESTEP_CORE",
        help="another installation's acestep-core console script, timed alongside (e.g. an older commit's)",
    )
    args = parser.parse_args()
    if args.baseline and not Path(args.baseline).is_file():
        parser.error(f"--baseline {args.baseline}: no such file")
    if args.runs < 5:
        parser.error("--runs must be 5 or more")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    if not args.no_bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    resolution_command = [console_script(), "info", "--json"]
    torch_command = [sys.executable, "-c", "import torch"]
    empty_command = [sys.executable, "-c", "pass"]
    resolution_env = env | {"MAX_CUDA_VRAM": "8"}

    # one of each first, untimed: the first run after an install pays for .pyc compilation
    baseline_command = [args.baseline, "info", "--json"] if args.baseline else None
    timed(resolution_command, resolution_env)
    timed(torch_command, env)
    if baseline_command:
        timed(baseline_command, resolution_env)
    resolution_s: list[float] = []
    torch_s: list[float] = []
    empty_s: list[float] = []
    baseline_s: list[float] = []
    for _ in range(args.runs):
        resolution_s.append(timed(resolution_command, resolution_env))
        torch_s.append(timed(torch_command, env))
        empty_s.append(timed(empty_command, env))
        if baseline_command:
            baseline_s.append(timed(baseline_command, resolution_env))

    resolution_median = statistics.median(resolution_s)
    torch_median = statistics.median(torch_s)
    ratio = torch_median / resolution_median
    empty_median = statistics.median(empty_s)
    over_empty = resolution_median / empty_median
    figures = {
        "runs": args.runs,
        "resolution_command": "MAX_CUDA_VRAM=8 acestep-core info --json",
        "resolution_s": [round(t, 4) for t in resolution_s],
        "resolution_median_s": round(resolution_median, 4),
        "torch_command": f"{Path(sys.executable).name} -c 'import torch'",
        "torch_s": [round(t, 4) for t in torch_s],
        "torch_median_s": round(torch_median, 4),
        "ratio": round(ratio, 2),
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio >= GOAL_RATIO,
        "empty_command": f"{Path(sys.executable).name} -c pass",
        "empty_s": [round(t, 4) for t in empty_s],
        "empty_median_s": round(empty_median, 4),
        "ratio_over_empty": round(over_empty, 2),
        "goal_over_empty": GOAL_OVER_EMPTY,
        "goal_over_empty_met": over_empty <= GOAL_OVER_EMPTY,
        "baseline_command": None if baseline_command is None else " ".join(baseline_command),
        "baseline_s": [round(t, 4) for t in baseline_s],
        "baseline_median_s": round(statistics.median(baseline_s), 4) if baseline_s else None,
        "speedup_over_baseline": round(statistics.median(baseline_s) / resolution_median, 2) if baseline_s else None,
        "bytecode_cache": not args.no_bytecode_cache,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        cache = "bytecode cache on" if not args.no_bytecode_cache else "no bytecode cache for our sources"
        print(f"cold process, {args.runs} runs each (wall clock, interpreter start included; {cache})")
        print(
            f"  MAX_CUDA_VRAM=8 acestep-core info --json   median {resolution_median * 1000:7.1f} ms   runs "
            f"{milliseconds(resolution_s)}"
        )
        print(
            f"  python -c 'import torch'                   median {torch_median * 1000:7.1f} ms   "
            f"runs {milliseconds(torch_s)}"
        )
        verdict = "goal met" if ratio >= GOAL_RATIO else "goal NOT met"
        print(
            f"  python -c pass                             median {empty_median * 1000:7.1f} ms   "
            f"runs {milliseconds(empty_s)}"
        )
        print(f"  ratio (import torch / resolution)          {ratio:7.1f}x   (goal >= {GOAL_RATIO:g}x: {verdict})")
        verdict = "goal met" if over_empty <= GOAL_OVER_EMPTY else "goal NOT met"
        print(
            f"  ratio (resolution / python -c pass)        {over_empty:7.2f}x   (goal <= {GOAL_OVER_EMPTY:g}x: "
            f"{verdict})"
        )
        if baseline_s:
            baseline_median = statistics.median(baseline_s)
            print(f"  baseline {args.baseline} info --json")
            print(f"  {'':<41}  median {baseline_median * 1000:7.1f} ms   runs {milliseconds(baseline_s)}")
            print(f"  speed-up (baseline / resolution)           {baseline_median / resolution_median:7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
