"""Simulate a device with a given amount of memory: ``MAX_CUDA_VRAM=8`` is an 8 GiB CUDA card.

Also ``MAX_MPS_VRAM`` and ``MAX_XPU_VRAM``, and ``--vram GB`` on the command line. The simulated size
replaces detection and is taken exactly (no real-card tolerance); the reading says so in a note.
``--vram 8,24`` simulates several CUDA cards (``cuda:0`` of 8 GB, ``cuda:1`` of 24 GB), to see what a
placement over them gives (``acestep-core devices --vram 8,24``); the variables take one size, as
upstream reads them.

Which source wins, each time said in one line:

* ``--vram`` (the command line) wins over every variable;
* ``--replay`` (the command line) wins over the variables: simulation steps aside for the recording;
* of the variables, the first valid one in the order ``MAX_CUDA_VRAM``, ``MAX_MPS_VRAM``,
  ``MAX_XPU_VRAM`` wins.

A variable whose value is not a memory size (``abc``, ``-1``, ``nan``, ``1e300``) is reported and
ignored (the next valid variable, or the real device, is used): a tier is never chosen from garbage.
``--device`` picks one of the simulated cards; one that is not among them is reported and not applied.
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
    sizes: list[float] = []
    if options.vram_gb is not None:
        try:
            sizes = [parse_memory_gb(part) for part in str(options.vram_gb).split(",")]
        except ValueError as error:
            raise SettingIgnored(
                f"--vram={error}. Simulation is off; the real device is detected instead", setting="--vram"
            ) from None
        gb = sizes[0]
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
        sizes = [gb]
        backend = VARIABLES[origin]
        notes.extend(
            f"{name}={value.strip()} is ignored: {origin} comes first (order: {', '.join(VARIABLES)})"
            for name, value, _ in valid[1:]
        )
    devices = tuple(_simulated(index, size, backend, f"{origin}={raw.strip()}") for index, size in enumerate(sizes))
    chosen = 0
    wanted = (options.device or "").strip()
    index = parse_index(wanted)
    if index is not None and index < len(devices):
        chosen = index
    elif wanted and index != 0:
        only = (
            "the simulated device is the only one (index 0)"
            if len(devices) == 1
            else f"simulated: 0-{len(devices) - 1}"
        )
        notes.append(f"--device {wanted[:40]} is not applied: {only}")
    what = (
        f"a simulated {backend} device of {gb:g} GB"
        if len(devices) == 1
        else f"{len(devices)} simulated {backend} devices ({', '.join(f'{size:g}' for size in sizes)} GB)"
    )
    note = f"GPU memory simulation is on ({origin}={raw.strip()}): tiers are chosen for {what}, not the real hardware"
    return MemoryReading(device=devices[chosen], visible=devices, notes=(note, *notes))


def _simulated(index: int, gb: float, backend: str, origin: str) -> DeviceMemory:
    total = max(1, round(gb * GIB))
    return DeviceMemory(
        backend=backend,
        name=f"simulated {gb:g} GB {backend} device",
        index=index,
        total_bytes=total,
        free_bytes=total,
        reserved_bytes=0,
        sources={"total_bytes": f"{origin} (simulated)", "free_bytes": "simulated: all free"},
        unified_memory=backend == "mps",
        simulated=True,
    )
