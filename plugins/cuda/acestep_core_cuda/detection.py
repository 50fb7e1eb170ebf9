"""How the ``cuda`` plugin makes a reading: NVML, then the CUDA mapping, then the fallbacks.

Imported by :func:`acestep_core_cuda.detect_memory` when a detection runs, not when the plugin is
registered: a simulated or replayed start-up never pays for NVML, the fallbacks' host probes or
:mod:`platform`.

Tests and contributors replace :data:`nvml_source`, :data:`host_probe` and :data:`torch_loader`,
or replay a recording (``options.replay``, :mod:`acestep_core_cuda.replay`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from acestep_core.plugin_api import CPU, GIB, DetectOptions, DeviceMemory, MemoryReading, SettingIgnored
from acestep_core_cuda import memory_in_use
from acestep_core_cuda.fallbacks import HostSigns, fallback_reading, import_torch, probe_host
from acestep_core_cuda.mapping import CudaView, cuda_view, select
from acestep_core_cuda.nvml import NvmlFailure, NvmlGpu, NvmlLike, NvmlSnapshot, classify, load_pynvml, read_nvml

nvml_source: Callable[[], NvmlLike] = load_pynvml
"""Where NVML comes from: the real ``pynvml`` by default; tests put a fake here."""
host_probe: Callable[[Mapping[str, str]], HostSigns] = probe_host
"""How the machine's accelerator signs are read (files, package metadata; never torch)."""
torch_loader: Callable[[], Any] = import_torch
"""How torch is imported when a fallback needs it."""


def read(options: DetectOptions) -> MemoryReading:
    """The ``detect_memory`` answer: a replayed recording, else this machine."""
    if options.replay:
        from acestep_core_cuda.replay import RecordingError, load_recording

        try:
            recording = load_recording(options.replay)  # checked against the recording form here
        except RecordingError as error:
            raise SettingIgnored(f"{error}; nothing is replayed", setting="--replay") from error
        # past the check, anything raised is this plugin's bug: it propagates as one, the file not blamed
        return detect(
            options,
            nvml=recording.nvml,
            host=recording.host,
            load_torch=recording.torch,
            origin=f"replay of {recording.path}: ",
        )
    return detect(options)


def detect(
    options: DetectOptions,
    *,
    nvml: Callable[[], NvmlLike] | None = None,
    host: Callable[[Mapping[str, str]], HostSigns] | None = None,
    load_torch: Callable[[], Any] | None = None,
    origin: str = "",
) -> MemoryReading:
    """The reading for ``options``: NVML, else torch where a sign says so, else the CPU."""
    try:
        snapshot: NvmlSnapshot | None = read_nvml((nvml or nvml_source)())
        failure = None
    except ImportError as error:
        snapshot, failure = None, classify(error)
    except NvmlFailure as error:
        snapshot, failure = None, error
    if snapshot is not None and snapshot.gpus:
        return nvml_reading(snapshot, options, host or host_probe, origin)
    if failure is None:
        failure = NvmlFailure("no-gpu", "NVML is installed but sees no NVIDIA GPU")
    return fallback_reading(failure, (host or host_probe)(options.environ), load_torch or torch_loader, options, origin)


def nvml_reading(
    snapshot: NvmlSnapshot, options: DetectOptions, host: Callable[[Mapping[str, str]], HostSigns], origin: str
) -> MemoryReading:
    view = cuda_view(snapshot.gpus, options.environ)
    notes = [*snapshot.problems, *view.notes]
    if not view.devices:
        seen = ", ".join(f"{gpu.name} ({gpu.uuid})" for gpu in snapshot.gpus)
        notes.append(
            f"no NVIDIA GPU is visible to CUDA ({view.describe(options.environ)}), though NVML sees "
            f"{len(snapshot.gpus)}: {seen}; running on the CPU"
        )
        return MemoryReading(device=CPU, visible=(), notes=tuple(notes))
    devices = [
        device_memory(gpu, ordinal, snapshot, view, options.environ, origin) for ordinal, gpu in enumerate(view.devices)
    ]
    chosen, selection_note = select(view.devices, options.device)
    if selection_note:
        notes.append(selection_note)
    device = devices[chosen]
    if len(devices) > 1:
        why = (
            "the first visible" if options.device is None or selection_note else f"chosen by device {options.device!r}"
        )
        notes.append(
            f"{len(devices)} devices visible; the default device is cuda:{chosen} ({device.name}, "
            f"{device.uuid}), {why}; the placement decides which runs each component (--place, "
            "`acestep-core devices`)"
        )
    if device.total_bytes is None:
        notes.append(
            f"NVML gives no memory figure for {device.name} (a unified-memory system?): the smallest tier applies; "
            "set MAX_CUDA_VRAM to the memory the GPU may use"
        )
    in_use = memory_in_use(device)
    if in_use:
        notes.append(
            f"{in_use / GIB:.2f} GiB of cuda:{chosen} ({device.name}) is already in use by other processes: "
            f"{(device.free_bytes or 0) / GIB:.2f} GiB free of {(device.total_bytes or 0) / GIB:.2f} GiB. The "
            "tier is chosen from the total; "
            "the LM's memory share is sized from what is free"
        )
    return MemoryReading(device=device, visible=tuple(devices), notes=tuple(notes))


def device_memory(
    gpu: NvmlGpu, ordinal: int, snapshot: NvmlSnapshot, view: CudaView, environ: Mapping[str, str], origin: str
) -> DeviceMemory:
    sources = {
        "index": f"{origin}cuda:{ordinal} from NVML GPU "
        f"{gpu.nvml_index if not gpu.is_mig_instance else gpu.parent_uuid}, matched by UUID "
        f"({view.describe(environ)})",
        "driver": f"NVIDIA driver {snapshot.driver_version or 'version unknown'}",
    }
    memory = gpu.memory
    if memory is None:
        sources["total_bytes"] = f"{origin}NVML gives no memory figure for this GPU"
    else:
        query = f"{origin}NVML {memory.query}" + (
            " on the MIG instance (the slice's own memory)" if gpu.is_mig_instance else ""
        )
        sources["total_bytes"] = query
        sources["free_bytes"] = f"{query}, live"
        if memory.reserved is not None:
            sources["reserved_bytes"] = f"{query}: the driver's reservation (torch's total_memory = total − reserved)"
    return DeviceMemory(
        backend="cuda",
        name=gpu.name,
        index=ordinal,
        uuid=gpu.uuid,
        total_bytes=None if memory is None else memory.total,
        free_bytes=None if memory is None else memory.free,
        reserved_bytes=None if memory is None else memory.reserved,
        sources=sources,
        compute_capability=gpu.compute_capability,
        pci_bus_id=gpu.pci_bus_id,
        mig=gpu.is_mig_instance,
    )
