"""Cost of the gpu_config compat API in a cold process, against a cold ``python -c pass``.

Runs, alternately and each in a fresh process, under ``MAX_CUDA_VRAM=8``:

* the February path: ``from acestep_core.compat.gpu_config import get_gpu_config;
  print(get_gpu_config())``;
* upstream main's start-up path (what its Gradio launcher and API server call before any model
  loads): the cold import, ``get_gpu_config()``, ``resolve_lm_backend()`` and
  ``get_dit_type_from_path()``;
* ``python -c pass``;

and prints the medians and each path's ratio to ``python -c pass`` (goal: ≤ 2.5×). Upstream's own
``acestep/gpu_config.py`` costs about 3.7x ``python -c pass`` (issue #13: it imports loguru).

    .venv/bin/python benchmarks/bench_compat.py              # 7 runs each
    .venv/bin/python benchmarks/bench_compat.py --runs 11 --json
    .venv/bin/python benchmarks/bench_compat.py --tiers upstream-2026-04
    .venv/bin/python benchmarks/bench_compat.py --breakdown  # where a cold call spends its time
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from coldrun import milliseconds, timed

UPSTREAM_RATIO = 3.7
GOAL_RATIO = 2.5
COMPAT_CODE = "from acestep_core.compat.gpu_config import get_gpu_config; print(get_gpu_config())"
MAIN_CODE = (
    "from acestep_core.compat.gpu_config import get_gpu_config, set_global_gpu_config, resolve_lm_backend, "
    "get_dit_type_from_path; config = get_gpu_config(); set_global_gpu_config(config); "
    "print(config.tier, resolve_lm_backend(None, config), resolve_lm_backend('vllm'), "
    "get_dit_type_from_path('acestep-v15-xl-turbo'))"
)
"""As upstream's launcher (acestep/acestep_v15_pipeline.py) and API server start: the config is made once,
set as the process's, and the LM backend resolved against it."""
BREAKDOWN_CODE = """
import json, time
t0 = time.perf_counter()
import acestep_core
t1 = time.perf_counter()
from acestep_core.compat.gpu_config import get_gpu_config
t2 = time.perf_counter()
from acestep_core.plugins import get_plugin_manager
get_plugin_manager()
t3 = time.perf_counter()
get_gpu_config()
t4 = time.perf_counter()
print(json.dumps({"import acestep_core": t1 - t0, "import compat": t2 - t1,
                  "load plugins": t3 - t2, "first get_gpu_config()": t4 - t3}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="cold processes of each kind (at least 7; default 7)")
    parser.add_argument("--tiers", default=None, help="the tier table to use (ACESTEP_CORE_TIERS); default: default")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--breakdown", action="store_true", help="also time each step inside the cold process")
    args = parser.parse_args()
    if args.runs < 7:
        parser.error("--runs must be 7 or more")

    # PYTHONDONTWRITEBYTECODE would make every cold run compile the modules again: an installed package
    # has its bytecode, which the untimed first run below writes
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAX_", "ACESTEP_CORE_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    compat_env = env | {"MAX_CUDA_VRAM": "8"} | ({"ACESTEP_CORE_TIERS": args.tiers} if args.tiers else {})
    compat_command = [sys.executable, "-c", COMPAT_CODE]
    main_command = [sys.executable, "-c", MAIN_CODE]
    pass_command = [sys.executable, "-c", "pass"]

    # one of each first, untimed: the first run after an install pays for .pyc compilation
    timed(compat_command, compat_env)
    timed(main_command, compat_env)
    timed(pass_command, env)
    compat_s: list[float] = []
    main_s: list[float] = []
    pass_s: list[float] = []
    for _ in range(args.runs):
        compat_s.append(timed(compat_command, compat_env))
        main_s.append(timed(main_command, compat_env))
        pass_s.append(timed(pass_command, env))

    steps: dict[str, list[float]] = {}
    if args.breakdown:
        for _ in range(args.runs):
            out = subprocess.run(
                [sys.executable, "-c", BREAKDOWN_CODE], env=compat_env, capture_output=True, check=True
            )
            for step, seconds in json.loads(out.stdout).items():
                steps.setdefault(step, []).append(seconds)
    compat_median = statistics.median(compat_s)
    main_median = statistics.median(main_s)
    pass_median = statistics.median(pass_s)
    ratio = compat_median / pass_median
    main_ratio = main_median / pass_median
    figures = {
        "runs": args.runs,
        "tiers": args.tiers or "default",
        "compat_command": f'MAX_CUDA_VRAM=8 python -c "{COMPAT_CODE}"',
        "compat_s": [round(t, 4) for t in compat_s],
        "compat_median_s": round(compat_median, 4),
        "main_command": f'MAX_CUDA_VRAM=8 python -c "{MAIN_CODE}"',
        "main_s": [round(t, 4) for t in main_s],
        "main_median_s": round(main_median, 4),
        "main_ratio": round(main_ratio, 2),
        "main_within_goal": main_ratio <= GOAL_RATIO,
        "goal_ratio": GOAL_RATIO,
        "pass_s": [round(t, 4) for t in pass_s],
        "pass_median_s": round(pass_median, 4),
        "ratio": round(ratio, 2),
        "upstream_ratio": UPSTREAM_RATIO,
        "cheaper_than_upstream": ratio < UPSTREAM_RATIO,
        "breakdown_median_s": {step: round(statistics.median(times), 4) for step, times in steps.items()},
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"cold process, {args.runs} runs each (wall clock, interpreter start included), table {figures['tiers']}")
        print(
            f"  compat get_gpu_config() under MAX_CUDA_VRAM=8   median {compat_median * 1000:7.1f} ms   runs "
            f"{milliseconds(compat_s)}"
        )
        print(
            f"  main's start-up: import + get_gpu_config() +    median {main_median * 1000:7.1f} ms   runs "
            f"{milliseconds(main_s)}"
        )
        print("    resolve_lm_backend() + get_dit_type_from_path()")
        print(
            f"  python -c pass                                  median {pass_median * 1000:7.1f} ms   runs "
            f"{milliseconds(pass_s)}"
        )
        verdict = "cheaper" if ratio < UPSTREAM_RATIO else "NOT cheaper"
        print(
            f"  ratio (compat / pass)                           {ratio:7.2f}x  (upstream's module "
            f"~{UPSTREAM_RATIO:g}x: {verdict})"
        )
        within = "within" if main_ratio <= GOAL_RATIO else "OVER"
        print(
            f"  ratio (main's start-up / pass)                  {main_ratio:7.2f}x  (goal ≤ {GOAL_RATIO:g}x: {within})"
        )
        for step, times in steps.items():
            print(f"    {step:<45} median {statistics.median(times) * 1000:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
