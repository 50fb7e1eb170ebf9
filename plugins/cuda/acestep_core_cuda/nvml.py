"""Read every NVIDIA GPU through NVML — or through anything shaped like it.

NVML answers from the driver without a CUDA context: no VRAM is taken and no torch is imported.
The reader takes an *NVML-like* object (:class:`NvmlLike`): the real ``pynvml`` module, or the
:class:`~acestep_core_cuda.replay.RecordedNvml` that replays a recording. Errors are recognised by
class name (``NVMLError_LibraryNotFound`` …), so a fake raises pynvml's own error classes.
"""

# ruff: noqa: N802, N815 - method and attribute names mirror pynvml's API
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol


class NvmlLike(Protocol):
    """The part of the ``pynvml`` API the plugin uses (the ``pynvml`` module itself satisfies it)."""

    nvmlMemory_v2: int
    NVML_CLOCK_SM: int

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any: ...
    def nvmlDeviceGetMemoryInfo(self, handle: Any, version: int | None = None) -> Any: ...
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...
    def nvmlDeviceGetMigMode(self, handle: Any) -> list[int]: ...
    def nvmlDeviceGetMaxMigDeviceCount(self, handle: Any) -> int: ...
    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: Any, index: int) -> Any: ...
    def nvmlDeviceGetNumGpuCores(self, handle: Any) -> int: ...
    def nvmlDeviceGetMaxClockInfo(self, handle: Any, clock_type: int) -> int: ...


class NvmlFailure(Exception):  # noqa: N818 - it names an outcome, as NVML's own errors do
    """NVML could not be used at all; ``kind`` is one of :data:`FAILURE_KINDS`' values."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


FAILURE_KINDS: dict[str, tuple[str, str]] = {
    "NVMLError_LibraryNotFound": ("library-not-found", "NVML library not found: no NVIDIA driver is installed"),
    "NVMLError_DriverNotLoaded": (
        "driver-not-loaded",
        "the NVIDIA driver is installed but not loaded (see `nvidia-smi`)",
    ),
    "NVMLError_NoPermission": ("no-permission", "no permission to query the GPU (check access to /dev/nvidia*)"),
    "NVMLError_LibRmVersionMismatch": (
        "version-mismatch",
        "the NVML library and the loaded kernel driver differ in version (reboot after a driver update)",
    ),
}
"""NVML error class → (kind, what it means). Any other NVML error is kind ``nvml-error``."""


@dataclass(frozen=True)
class NvmlMemory:
    total: int
    free: int
    used: int
    reserved: int | None
    """The driver's own reservation (v2 only); v1 counts it in ``used``."""
    query: str
    """``nvmlDeviceGetMemoryInfo v2`` or ``... v1``."""


@dataclass(frozen=True)
class NvmlGpu:
    """One GPU, or one MIG instance of a GPU, as NVML sees it."""

    nvml_index: int
    """Position in NVML's own numbering (PCI order); for a MIG instance, its slot on the parent."""
    name: str
    uuid: str
    pci_bus_id: str | None
    memory: NvmlMemory | None
    """None where NVML has no memory figures for the device (unified-memory systems)."""
    compute_capability: tuple[int, int] | None
    mig_enabled: bool = False
    mig_devices: tuple[NvmlGpu, ...] = ()
    parent_uuid: str | None = None
    """Set for a MIG instance: the GPU it is a slice of."""
    cuda_cores: int | None = None
    max_sm_clock_mhz: int | None = None

    @property
    def is_mig_instance(self) -> bool:
        return self.parent_uuid is not None


@dataclass(frozen=True)
class NvmlSnapshot:
    driver_version: str | None
    gpus: tuple[NvmlGpu, ...]
    problems: tuple[str, ...] = ()
    """Devices or figures NVML failed to give, in words."""


def is_nvml_error(error: BaseException) -> bool:
    return any(cls.__name__ == "NVMLError" for cls in type(error).__mro__)


def classify(error: BaseException) -> NvmlFailure:
    """The failure an exception from ``nvmlInit`` (or the import of pynvml) stands for."""
    if isinstance(error, ImportError):
        return NvmlFailure("not-installed", f"nvidia-ml-py is not installed ({error})")
    kind, meaning = FAILURE_KINDS.get(
        type(error).__name__, ("nvml-error", f"NVML failed: {type(error).__name__}: {error}")
    )
    return NvmlFailure(kind, meaning)


def load_pynvml() -> NvmlLike:
    """The real NVML: the ``pynvml`` module (imported here, never at plugin import)."""
    import pynvml

    return pynvml  # type: ignore[return-value]


def read_nvml(nvml: NvmlLike) -> NvmlSnapshot:
    """Every GPU NVML sees, with MIG instances under their parent.

    :raises NvmlFailure: when NVML cannot be initialised.
    """
    try:
        nvml.nvmlInit()
    except Exception as error:
        if not is_nvml_error(error):
            raise
        raise classify(error) from error
    try:
        problems: list[str] = []
        driver = optional(lambda: text(nvml.nvmlSystemGetDriverVersion()))
        gpus: list[NvmlGpu] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                gpus.append(_read_gpu(nvml, nvml.nvmlDeviceGetHandleByIndex(index), index, problems))
            except Exception as error:
                if not is_nvml_error(error):
                    raise
                problems.append(f"NVML could not read GPU {index} ({type(error).__name__}: {error}); it is left out")
        return NvmlSnapshot(driver_version=driver, gpus=tuple(gpus), problems=tuple(problems))
    except Exception as error:
        if is_nvml_error(error):
            raise NvmlFailure(
                "nvml-error", f"NVML failed while listing GPUs: {type(error).__name__}: {error}"
            ) from error
        raise
    finally:
        optional(nvml.nvmlShutdown)


def _read_gpu(nvml: NvmlLike, handle: Any, index: int, problems: list[str], parent: NvmlGpu | None = None) -> NvmlGpu:
    name = text(nvml.nvmlDeviceGetName(handle))
    uuid = text(nvml.nvmlDeviceGetUUID(handle))
    memory = read_memory(nvml, handle)
    if memory is None:
        problems.append(f"NVML reports no memory figures for {name} ({uuid})")
    if parent is not None:
        return NvmlGpu(
            nvml_index=index,
            name=name,
            uuid=uuid,
            pci_bus_id=parent.pci_bus_id,
            memory=memory,
            compute_capability=parent.compute_capability,
            parent_uuid=parent.uuid,
        )
    pci = optional(lambda: nvml.nvmlDeviceGetPciInfo(handle))
    capability = optional(lambda: tuple(int(v) for v in nvml.nvmlDeviceGetCudaComputeCapability(handle)))
    mig_mode = optional(lambda: nvml.nvmlDeviceGetMigMode(handle))
    gpu = NvmlGpu(
        nvml_index=index,
        name=name,
        uuid=uuid,
        pci_bus_id=None if pci is None else text(pci.busId),
        memory=memory,
        compute_capability=capability,  # type: ignore[arg-type]
        mig_enabled=bool(mig_mode and int(mig_mode[0]) == 1),
        cuda_cores=optional(lambda: int(nvml.nvmlDeviceGetNumGpuCores(handle))),
        max_sm_clock_mhz=optional(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM))),
    )
    if not gpu.mig_enabled:
        return gpu
    instances = []
    for slot in range(optional(lambda: int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))) or 0):
        mig_handle = optional(lambda slot=slot: nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot))
        if mig_handle is not None:  # an empty slot raises NotFound
            instances.append(_read_gpu(nvml, mig_handle, slot, problems, parent=gpu))
    return dataclasses.replace(gpu, mig_devices=tuple(instances))


def read_memory(nvml: NvmlLike, handle: Any) -> NvmlMemory | None:
    """The v2 query where the driver has it (the reservation apart from ``used``), else v1."""
    try:
        info = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
        return NvmlMemory(
            int(info.total), int(info.free), int(info.used), int(info.reserved), "nvmlDeviceGetMemoryInfo v2"
        )
    except Exception as error:
        if not is_nvml_error(error):
            raise
    info = optional(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    if info is None:
        return None
    return NvmlMemory(int(info.total), int(info.free), int(info.used), None, "nvmlDeviceGetMemoryInfo v1")


def optional(read: Any) -> Any:
    """``read()``, or None where NVML says the figure is not there (NotSupported, NotFound …)."""
    try:
        return read()
    except Exception as error:
        if is_nvml_error(error):
            return None
        raise


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
