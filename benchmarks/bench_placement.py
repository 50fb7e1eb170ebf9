"""Placement (issue #24): the grid's counts, and what a decision over several devices costs.

    python benchmarks/bench_placement.py                       # the grid, then the timings
    python benchmarks/bench_placement.py --skip-grid --runs 400
    python benchmarks/bench_placement.py --baseline-tree /tmp/base   # also time a one-device resolve() of
                                                                     # another checkout, in the same run

1. The grid (``benchmarks/placement_grid.py``): machines × requests, every layout checked against each
   device's budget; how often an accepted layout is over a budget (0 is the goal), how often upstream's rule
   would overcommit, how often ``auto`` splits and lifts a clamp.
2. Timings, each the median of ``--runs`` (≥ 200) warm ``resolve()`` calls with the reading given (no
   detection), as CPU time of the process (``time.process_time``: on a shared machine, wall time mostly
   measures the other load), in child processes run in turn, the median over ``--rounds``: a one-device
   resolve (8 GB card) — with ``--baseline-tree`` also the same call of that checkout, what placement
   costs a one-device resolve — and ``auto`` on 2×8 GB for a
   request the first card runs unclamped (the hook answers at once) and for one it clamps (every layout
   compared), on 8+24 and 4×24 GB, and on the recorded RTX 4090 + RTX 3060.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = r"""
import json, statistics, sys, time
root, runs, case = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
import acestep_core, acestep_core_simulated, acestep_core_tiers_default
assert acestep_core.__file__.startswith(root), (acestep_core.__file__, root)
from acestep_core import DetectOptions, GenerationRequest, build_plugin_manager, resolve
plugins = [("tiers_default", acestep_core_tiers_default), ("simulated", acestep_core_simulated)]
if case.get("replay"):
    import acestep_core_cuda
    plugins.append(("cuda", acestep_core_cuda))
manager = build_plugin_manager(environ={}, entry_points=[], plugins=plugins)
options = DetectOptions(vram_gb=case.get("vram"), replay=case.get("replay"), environ={})
reading = resolve(detect_options=options, manager=manager, environ={}).reading
reading = type(reading)(device=reading.visible[0], visible=reading.visible, notes=reading.notes)
request = GenerationRequest(**case["request"])
place = {"place": case["place"]} if case.get("place") else {}
for _ in range(20):
    last = resolve(request, reading=reading, manager=manager, environ={}, **place)
times, cpu = [], []
for _ in range(runs):
    started, started_cpu = time.perf_counter(), time.process_time()
    resolve(request, reading=reading, manager=manager, environ={}, **place)
    cpu.append(time.process_time() - started_cpu)
    times.append(time.perf_counter() - started)
split = bool(getattr(last.reading, "several_devices", False))
cpu_ms, wall_ms = statistics.median(cpu) * 1e3, statistics.median(times) * 1e3
print(json.dumps({"median_ms": cpu_ms, "wall_ms": wall_ms, "split": split}))
"""

LM = {"lm_model": "0.6B", "lm": "on"}
CASES = {
    "one device, 8 GB (resolve)": {"vram": "8", "request": {"duration_s": 120, "batch_size": 2, **LM}},
    "auto, 2×8 GB, the first card suffices": {
        "vram": "8,8",
        "place": "auto",
        "request": {"duration_s": 120, "batch_size": 2, **LM},
    },
    "auto, 2×8 GB, 360 s × 4 (clamped alone)": {
        "vram": "8,8",
        "place": "auto",
        "request": {"duration_s": 360, "batch_size": 4, **LM},
    },
    "auto, 8+24 GB, 600 s × 8, 4B": {
        "vram": "8,24",
        "place": "auto",
        "request": {"duration_s": 600, "batch_size": 8, "lm_model": "4B", "lm": "on"},
    },
    "auto, 4×24 GB, 600 s × 8, 4B": {
        "vram": "24,24,24,24",
        "place": "auto",
        "request": {"duration_s": 600, "batch_size": 8, "lm_model": "4B", "lm": "on"},
    },
    "auto, RTX 4090 + RTX 3060 (recorded), 600 s × 8, 4B": {
        "replay": "two-gpu-3060-4090",
        "place": "auto",
        "request": {"duration_s": 600, "batch_size": 8, "lm_model": "4B", "lm": "on"},
    },
}
BASELINE_CASE = "one device, 8 GB (resolve)"


def time_case(root: Path, case: dict, runs: int) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_"))}
    # -S: no site initialisation, so no editable install's finder puts another checkout first; the
    # libraries (pluggy) come from this interpreter's site-packages, named on PYTHONPATH
    libraries = [p for p in sys.path if p.endswith("site-packages") and not p.startswith(str(ROOT))]
    paths = [root, *(root / "plugins" / name for name in ("cuda", "simulated", "tiers_default")), *libraries]
    environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in paths)
    environ["ACESTEP_CORE_NO_CACHE"] = "1"
    result = subprocess.run(
        [sys.executable, "-S", "-c", CHILD, str(root), str(runs), json.dumps(case)],
        env=environ,
        cwd=root,  # ``-c`` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode:
        raise SystemExit(f"timing child failed for {case}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="resolves per timing (median; at least 200)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every timing, run in turn (median)")
    parser.add_argument("--skip-grid", action="store_true", help="timings only")
    parser.add_argument("--baseline-tree", type=Path, help="another checkout: time its one-device resolve() too")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.runs < 200:
        parser.error("--runs: at least 200")
    report: dict = {}
    if not args.skip_grid:
        sys.path.insert(0, str(HERE))
        import placement_grid

        started = time.perf_counter()
        counts = placement_grid.grid()
        report["grid"] = counts.as_dict() | {"seconds": round(time.perf_counter() - started, 1)}
        if not args.json:
            _print_grid(report["grid"])
    trees = {"this tree": ROOT} | ({"baseline tree": args.baseline_tree.resolve()} if args.baseline_tree else {})
    samples: dict[str, list[float]] = {}
    splits: dict[str, bool] = {}
    for _ in range(args.rounds):
        for name, case in CASES.items():
            timed = time_case(ROOT, case, args.runs)
            samples.setdefault(name, []).append(timed["median_ms"])
            splits[name] = timed["split"]
            if name == BASELINE_CASE and args.baseline_tree:
                other = time_case(trees["baseline tree"], case, args.runs)
                samples.setdefault(f"{name}, baseline tree", []).append(other["median_ms"])
    one = statistics.median(samples[BASELINE_CASE])
    report["timings_ms"] = {
        name: {
            "median_ms": round(statistics.median(values), 3),
            "x_one_device": round(statistics.median(values) / one, 2),
        }
        | ({"split": splits[name]} if name in splits else {})
        for name, values in samples.items()
    }
    report["runs"] = args.runs
    report["rounds"] = args.rounds
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(
        f"\nCPU time per decision (median of {args.runs} warm resolve() calls, median of {args.rounds} rounds in turn)"
    )
    for name, row in report["timings_ms"].items():
        split = {True: "  split", False: "  one device"}.get(row.get("split"), "")  # type: ignore[arg-type]
        print(f"  {name:<58} {row['median_ms']:8.2f} ms  {row['x_one_device']:6.2f}× one-device resolve{split}")
    return 0


def _print_grid(grid: dict) -> None:
    per = grid["requests"] // max(grid["machines"], 1)
    print(f"placement grid: {grid['machines']} machines × {per} requests ({grid['seconds']} s)")
    print(
        f"  layouts resolved {grid['layouts_checked']}, accepted {grid['layouts_accepted']}, "
        f"refused {grid['layouts_refused']}"
    )
    print(f"  accepted over a device's budget: {grid['accepted_over_budget']}")
    print(f"  upstream's rule would overcommit: {grid['upstream_overcommits']} of {grid['requests']} requests")
    print(
        f"  auto split {grid['auto_split']}; lifted a clamp the default card imposes alone "
        f"{grid['auto_lifts_a_clamp_of_the_default_card']}, one every single card imposes "
        f"{grid['auto_lifts_a_clamp_of_every_single_card']}"
    )
    print(
        f"  {'machine':<36} {'split':>6} {'lifts (default card)':>21} {'lifts (every card)':>19} {'upstream over':>14}"
    )
    for machine, row in grid["per_machine"].items():
        print(
            f"  {machine:<36} {row['auto_split']:>6} {row['lifts_default']:>21} {row['lifts_every']:>19} "
            f"{row['upstream_over']:>14}"
        )


if __name__ == "__main__":
    sys.exit(main())
