"""Timing whole processes, as a user waits for them: shared by the start-up benchmarks."""

from __future__ import annotations

import subprocess
import sys
import time


def timed(command: list[str], env: dict[str, str], *, timeout_s: float = 300) -> float:
    """Wall-clock seconds of one run of ``command``, interpreter start included; exits on failure."""
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, timeout=timeout_s)
    elapsed = time.perf_counter() - start
    if completed.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr.decode(errors='replace')}")
    return elapsed


def milliseconds(times: list[float]) -> str:
    """``236 319 792``: each run in whole milliseconds."""
    return " ".join(f"{t * 1000:.0f}" for t in times)
