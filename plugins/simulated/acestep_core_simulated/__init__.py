"""Simulate a device with a given amount of memory: ``MAX_CUDA_VRAM=8`` is an 8 GiB CUDA card.

Also ``MAX_MPS_VRAM`` and ``MAX_XPU_VRAM``, and ``--vram GB`` on the command line (which wins).
The simulated size replaces detection and is taken exactly (no real-card tolerance); the reading
says so in a note. A value that is not a positive, finite number of GB is rejected with one message
and detection carries on with the real hardware: a tier is never chosen from garbage.
"""

from __future__ import annotations

import math

from acestep_core import GIB, DetectOptions, DeviceMemory, MemoryReading, SettingIgnored, hookimpl

VARIABLES = {"MAX_CUDA_VRAM": "cuda", "MAX_MPS_VRAM": "mps", "MAX_XPU_VRAM": "xpu"}


@hookimpl(tryfirst=True)
def detect_memory(options: DetectOptions) -> MemoryReading | None:
    if options.vram_gb is not None:
        origin, raw, backend = "--vram", options.vram_gb, "cuda"
    else:
        found = next(((name, options.environ[name]) for name in VARIABLES if name in options.environ), None)
        if found is None:
            return None
        origin, raw = found
        backend = VARIABLES[origin]
    gb = parse_gb(raw)
    if gb is None:
        raise SettingIgnored(
            f"{origin}={raw!r} is not a memory size: give a positive number of GB, such as 8. "
            "Simulation is off; the real device is detected instead"
        )
    total = int(gb * GIB)
    device = DeviceMemory(
        backend=backend,
        name=f"simulated {gb:g} GB {backend} device",
        index=0,
        total_bytes=total,
        free_bytes=total,
        reserved_bytes=0,
        sources={"total_bytes": f"{origin}={raw.strip()} (simulated)", "free_bytes": "simulated: all free"},
        unified_memory=backend == "mps",
        simulated=True,
    )
    note = f"GPU memory simulation is on ({origin}={raw.strip()}): tiers are chosen for a simulated {backend} device of {gb:g} GB, not the real hardware"
    return MemoryReading(device=device, visible=(device,), notes=(note,))


def parse_gb(raw: str) -> float | None:
    """A positive, finite number of GB, or None for anything else ('', 'abc', '8GB', '-1', 'nan', '1e400')."""
    try:
        gb = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(gb) or gb <= 0:
        return None
    return gb
