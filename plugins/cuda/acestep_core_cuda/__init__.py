"""NVIDIA GPU memory through NVML: no torch import, no CUDA context.

A minimal reader for the first GPU; device mapping, MIG and fallbacks grow here.
"""

from __future__ import annotations

from acestep_core import DetectOptions, DeviceMemory, MemoryReading, hookimpl


@hookimpl
def detect_memory(options: DetectOptions) -> MemoryReading | None:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no NVML, no NVIDIA GPU to report
        return None
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        device = DeviceMemory(
            backend="cuda",
            name=str(pynvml.nvmlDeviceGetName(handle)),
            index=0,
            uuid=str(pynvml.nvmlDeviceGetUUID(handle)),
            total_bytes=int(memory.total),
            free_bytes=int(memory.free),
            sources={"total_bytes": "NVML nvmlDeviceGetMemoryInfo", "free_bytes": "NVML nvmlDeviceGetMemoryInfo"},
        )
        return MemoryReading(device=device, visible=(device,))
    finally:
        pynvml.nvmlShutdown()
