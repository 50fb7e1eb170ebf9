"""NVIDIA GPU memory through NVML: no torch import, no CUDA context. Fallbacks say why they were taken.

How a reading is made (``detect_memory``):

1. **NVML** (nvidia-ml-py) lists every GPU: name, UUID, PCI bus id, memory (the v2 query where the
   driver has it, so the driver's reservation is apart from ``used``), compute capability, MIG mode
   and instances. ``total_bytes`` is NVML's total (what tiers compare), ``reserved_bytes`` the
   driver's reservation (torch's ``total_memory`` is total − reserved), ``free_bytes`` live.
2. **Mapping** (:mod:`acestep_core_cuda.mapping`): ``CUDA_DEVICE_ORDER`` and ``CUDA_VISIBLE_DEVICES``
   (read from ``options.environ``) turn NVML's PCI numbering into CUDA's ordinals, matched by UUID;
   a MIG-enabled GPU is replaced by its MIG instance, whose own memory is reported.
3. **Choice**: the device the pipeline uses is ``options.device`` (an ordinal or a UUID prefix;
   ``--device``), else cuda:0; every visible device is in ``reading.visible``.
4. **Fallbacks** (:mod:`acestep_core_cuda.fallbacks`): NVML missing or failing → torch, where a
   sign says an accelerator may exist → the CPU with one diagnosis line.

Memory someone else holds. The tier is chosen from the total — the card's class, stable from run
to run. When memory is already in use (total − reserved − free > 0, so v2 figures are needed) the
reading says so, and where the tier's LM allotment exceeds 90% of the free memory the plugin sizes
``lm.gpu_memory_ratio`` from the free memory instead (``configure_optimizations``, ``tryfirst``).

The reading itself is :mod:`acestep_core_cuda.detection`, imported when a detection runs. Tests and
contributors replace its ``nvml_source``, ``host_probe`` and ``torch_loader``, or replay a recording
(``options.replay``, :mod:`acestep_core_cuda.replay`).
"""

from __future__ import annotations

from acestep_core.plugin_api import (
    GIB,
    AdjustedRequest,
    DetectOptions,
    DeviceMemory,
    MemoryReading,
    Setting,
    Tier,
    hookimpl,
)

LM_SHARE_OF_FREE = 0.9


@hookimpl
def detect_memory(options: DetectOptions) -> MemoryReading:
    from acestep_core_cuda import detection

    return detection.read(options)


def memory_in_use(device: DeviceMemory) -> int | None:
    """Bytes held by processes (total − reserved − free); None where the reservation is unknown."""
    if device.total_bytes is None or device.free_bytes is None or device.reserved_bytes is None:
        return None
    return max(0, device.total_bytes - device.reserved_bytes - device.free_bytes)


@hookimpl(tryfirst=True)
def configure_optimizations(adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading) -> list[Setting] | None:
    """Size the LM's share from free memory when other processes leave less than its allotment."""
    device = reading.device
    in_use = memory_in_use(device)
    allotment = tier.lm_memory_gb.get(adjusted.lm_model or "")
    if not in_use or device.simulated or allotment is None or not device.total_bytes or device.free_bytes is None:
        return None
    usable = LM_SHARE_OF_FREE * device.free_bytes
    if allotment * GIB <= usable:
        return None
    ratio = round(usable / device.total_bytes, 3)
    return [
        Setting(
            "lm.gpu_memory_ratio",
            ratio,
            f"other processes hold {in_use / GIB:.2f} GiB: {device.free_bytes / GIB:.2f} GiB is free, less than "
            f"the {allotment:g} GB "
            f"{tier.label} allots to the {adjusted.lm_model} LM; the LM gets {LM_SHARE_OF_FREE:.0%} of the free memory",
        )
    ]
