"""Simulate a device with a given amount of memory: ``MAX_CUDA_VRAM=8`` is an 8 GiB CUDA card.

Also ``MAX_MPS_VRAM`` and ``MAX_XPU_VRAM``, and ``--vram GB`` on the command line. The simulated size
replaces detection and is taken exactly (no real-card tolerance); the reading says so in a note.

Which source wins, each time said in one line:

* ``--vram`` (the command line) wins over every variable;
* ``--replay`` (the command line) wins over the variables: simulation steps aside for the recording;
* of the variables, the first valid one in the order ``MAX_CUDA_VRAM``, ``MAX_MPS_VRAM``,
  ``MAX_XPU_VRAM`` wins.

A variable whose value is not a memory size (``abc``, ``-1``, ``nan``, ``1e300``) is reported and
ignored (the next valid variable, or the real device, is used): a tier is never chosen from garbage.
A simulated device is the only device, so ``--device`` other than 0 is reported and not applied.
"""

from __future__ import annotations

from acestep_core.plugin_api import (
    GIB,
    SIMULATION_VARIABLES,
    DetectOptions,
    DeviceMemory,
    MemoryReading,
    SettingIgnored,
    hookimpl,
    parse_index,
    parse_memory_gb,
)

VARIABLES = SIMULATION_VARIABLES


@hookimpl(tryfirst=True)
def detect_memory(options: DetectOptions) -> MemoryReading | None:
    notes: list[str] = []
    found = [(name, options.environ[name]) for name in VARIABLES if name in options.environ]
    if options.vram_gb is not None:
        try:
            gb = parse_memory_gb(options.vram_gb)
        except ValueError as error:
            raise SettingIgnored(
                f"--vram={error}. Simulation is off; the real device is detected instead", setting="--vram"
            ) from None
        origin, raw, backend = "--vram", str(options.vram_gb), "cuda"
        if options.replay:
            notes.append(f"--replay {options.replay} is not used: --vram {raw.strip()} simulates the device instead")
        notes.extend(
            f"{name}={value.strip()[:40]} is ignored: --vram on the command line wins" for name, value in found
        )
    else:
        if found and options.replay:
            names = ", ".join(f"{name}={value.strip()[:40]}" for name, value in found)
            raise SettingIgnored(
                f"{names} ignored: --replay {options.replay} on the command line wins over the environment",
                setting=found[0][0],
            )
        valid: list[tuple[str, str, float]] = []
        for name, value in found:
            try:
                valid.append((name, value, parse_memory_gb(value)))
            except ValueError as error:
                notes.append(f"{name}={error}; this variable is ignored")
        if not valid:
            if notes:
                raise SettingIgnored(
                    f"{'; '.join(notes)}. Simulation is off; the real device is detected instead", setting=found[0][0]
                )
            return None
        origin, raw, gb = valid[0]
        backend = VARIABLES[origin]
        notes.extend(
            f"{name}={value.strip()} is ignored: {origin} comes first (order: {', '.join(VARIABLES)})"
            for name, value, _ in valid[1:]
        )
    if options.device is not None and options.device.strip() and parse_index(options.device) != 0:
        notes.append(
            f"--device {options.device.strip()[:40]} is not applied: the simulated device is the only one (index 0)"
        )
    total = max(1, round(gb * GIB))
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
    note = (
        f"GPU memory simulation is on ({origin}={raw.strip()}): tiers are chosen for a simulated {backend} device "
        f"of {gb:g} GB, not the real hardware"
    )
    return MemoryReading(device=device, visible=(device,), notes=(note, *notes))
