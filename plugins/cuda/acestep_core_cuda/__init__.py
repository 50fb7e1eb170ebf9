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
"Free" there is the *effective* free memory (upstream ACE-Step #822): NVML's free, which already
leaves out what every process holds, plus what this process's torch allocator has cached but no
tensor uses — figures only a process running torch has, so they are never read here: such a process
passes them in (:meth:`acestep_core.MemoryReading.with_allocator`), and the setting's reason says
which figure it used.

ROCm. The reading carries ``ACESTEP_ROCM_DTYPE`` (upstream's variable, read from the caller's
environment) as ``weights_dtype``; without it the plan loads the DiT, text encoder and VAE in fp32
there, as upstream does.

The reading itself is :mod:`acestep_core_cuda.detection`, imported when a detection runs. Tests and
contributors replace its ``nvml_source``, ``host_probe`` and ``torch_loader``, or replay a recording
(``options.replay``, :mod:`acestep_core_cuda.replay`).
"""

from __future__ import annotations

import dataclasses

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
ROCM_DTYPE_ENV = "ACESTEP_ROCM_DTYPE"
ROCM_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
"""``ACESTEP_ROCM_DTYPE``'s values, as upstream reads them (stripped, any case), and the plan's names."""


@hookimpl
def detect_memory(options: DetectOptions) -> MemoryReading:
    from acestep_core_cuda import detection

    return with_rocm_dtype(detection.read(options), options)


def with_rocm_dtype(reading: MemoryReading, options: DetectOptions) -> MemoryReading:
    """A ROCm reading with ``ACESTEP_ROCM_DTYPE`` from the caller's environment as its ``weights_dtype``
    (a value upstream does not accept is ignored with a note, and fp32 stays, as upstream does)."""
    raw = options.environ.get(ROCM_DTYPE_ENV)
    if reading.device.backend != "rocm" or raw is None:
        return reading
    dtype = ROCM_DTYPES.get(raw.strip().lower())
    if dtype is None:
        note = (
            f"{ROCM_DTYPE_ENV}={raw.strip()[:40]!r} is not one of {', '.join(ROCM_DTYPES)}; ignored: "
            "the DiT, text encoder and VAE load in fp32 on ROCm"
        )
        return dataclasses.replace(reading, notes=(*reading.notes, note))
    old = reading.device
    device = dataclasses.replace(
        old, weights_dtype=dtype, sources={**old.sources, "weights_dtype": f"{ROCM_DTYPE_ENV}={raw.strip()}"}
    )
    visible = tuple(device if d == old else d for d in reading.visible)
    return dataclasses.replace(reading, device=device, visible=visible)


def memory_in_use(device: DeviceMemory) -> int | None:
    """Bytes held by processes and not reusable by this one: total − reserved − effective free (see
    :attr:`acestep_core.DeviceMemory.effective_free_bytes`); None where the reservation is unknown."""
    free = device.effective_free_bytes
    if device.total_bytes is None or free is None or device.reserved_bytes is None:
        return None
    return max(0, device.total_bytes - device.reserved_bytes - free)


@hookimpl(tryfirst=True)
def configure_optimizations(adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading) -> list[Setting] | None:
    """Size the LM's share from the effective free memory of the LM's device when processes (this one's
    loaded models included) leave less than its allotment."""
    device = reading.device_of("lm")
    in_use = memory_in_use(device)
    free = device.effective_free_bytes
    allotment = tier.lm_memory_gb.get(adjusted.lm_model or "")
    if not in_use or device.simulated or allotment is None or not device.total_bytes or free is None:
        return None
    usable = LM_SHARE_OF_FREE * free
    if allotment * GIB <= usable:
        return None
    ratio = round(usable / device.total_bytes, 3)
    return [
        Setting(
            "lm.gpu_memory_ratio",
            ratio,
            f"processes hold {in_use / GIB:.2f} GiB: {device.free_basis()}, less than the {allotment:g} GB "
            f"{tier.label} allots to the {adjusted.lm_model} LM; the LM gets {LM_SHARE_OF_FREE:.0%} of that",
        )
    ]
