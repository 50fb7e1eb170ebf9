"""When NVML cannot answer: torch (CUDA, ROCm, Apple MPS, Intel XPU), else the CPU with a diagnosis.

Importing torch takes seconds and reading memory through it opens a CUDA context (~500 MiB of
VRAM on an H100), so torch is imported only where a sign says an accelerator may be there:

* NVIDIA: ``/proc/driver/nvidia/version`` or ``/dev/nvidiactl`` exists (a driver NVML failed to use);
* ROCm: ``/dev/kfd`` exists, or the installed torch is a ROCm build;
* Apple MPS: macOS on arm64;
* Intel XPU: a DRM device of vendor 0x8086 (``/sys/class/drm/*/device/vendor``) with a render node,
  or the installed torch is an XPU build.

A CPU-only build of torch (version ``+cpu``) is never imported. The build is read from the installed
package's metadata (``importlib.metadata.version("torch")``), which costs no import.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from acestep_core.plugin_api import CPU, DetectOptions, DeviceMemory, MemoryReading, parse_index
from acestep_core_cuda.nvml import NvmlFailure

CUDA_WHEELS = "a CUDA wheel, e.g. cu130, from PyTorch's install selector, matching the driver"


@dataclass(frozen=True)
class HostSigns:
    """What the machine shows of its accelerators, read without importing torch."""

    system: str
    """``platform.system()``: Linux, Darwin, Windows."""
    machine: str
    """``platform.machine()``: x86_64, arm64, aarch64."""
    torch_version: str | None
    """The installed torch's version (``2.13.0+cpu``); None when torch is not installed."""
    nvidia_driver: str | None = None
    """The NVIDIA kernel driver's version line, ``"present"`` where only device files show it, else None."""
    rocm: bool = False
    intel_gpu: bool = False
    memory_available: int | None = None
    """The host's available memory in bytes (Linux ``MemAvailable``); the CPU's budget. None where unread."""
    origin: str = "this machine"


def probe_host(environ: Mapping[str, str]) -> HostSigns:
    """The signs on this machine (files and package metadata; no import of torch)."""
    import importlib.metadata  # only when detection falls back: costly to import at every start-up

    try:
        torch_version: str | None = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return HostSigns(
        system=platform.system(),
        machine=platform.machine(),
        torch_version=torch_version,
        nvidia_driver=_nvidia_driver(),
        rocm=os.path.exists("/dev/kfd"),
        intel_gpu=_intel_gpu(),
        memory_available=host_memory_available(),
    )


def host_memory_available() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo`` in bytes (what can be allocated without swapping); None elsewhere."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version", encoding="utf-8") as file:
            line = file.readline().strip()
        return line.split("  ")[1].split()[0] if "  " in line else (line or "present")
    except (OSError, IndexError):
        return "present" if os.path.exists("/dev/nvidiactl") else None


def _intel_gpu() -> bool:
    for vendor_file in glob.glob("/sys/class/drm/card*/device/vendor"):
        try:
            with open(vendor_file, encoding="utf-8") as file:
                if file.read().strip().lower() == "0x8086" and glob.glob("/dev/dri/renderD*"):
                    return True
        except OSError:
            continue
    return False


def torch_build(signs: HostSigns) -> str:
    """The installed torch's build in words: ``CPU-only``, ``CUDA 13.0``, ``ROCm 6.2``, ``XPU`` …"""
    version = signs.torch_version
    if version is None:
        return "not installed"
    local = version.partition("+")[2]
    if local == "cpu":
        return "CPU-only"
    if local.startswith("cu") and parse_index(local[2:]) is not None:
        digits = local[2:]
        return f"CUDA {digits[:-1]}.{digits[-1]}"
    if local.startswith("rocm"):
        return f"ROCm {local[4:]}"
    if local == "xpu":
        return "XPU"
    if signs.system == "Darwin":
        return "macOS (CPU and MPS)"
    if signs.system == "Linux" and signs.machine == "x86_64":
        return "the PyPI default (CUDA)"
    return "the PyPI default"


def accelerator_signs(signs: HostSigns) -> list[str]:
    """Why torch is worth importing, in words; empty = no sign of any accelerator."""
    build = torch_build(signs)
    if build in ("not installed", "CPU-only"):
        return []
    found = []
    if signs.nvidia_driver:
        found.append(f"an NVIDIA driver is present ({signs.nvidia_driver})")
    if signs.rocm or build.startswith("ROCm"):
        found.append("/dev/kfd exists" if signs.rocm else f"torch is a {build} build")
    if signs.system == "Darwin" and signs.machine == "arm64":
        found.append("macOS on Apple silicon")
    if signs.intel_gpu or build == "XPU":
        found.append("an Intel GPU is present" if signs.intel_gpu else "torch is an XPU build")
    return found


def import_torch() -> Any:
    import torch

    return torch


def fallback_reading(
    failure: NvmlFailure, signs: HostSigns, load_torch: Callable[[], Any], options: DetectOptions, origin: str = ""
) -> MemoryReading:
    """NVML could not answer: try torch where a sign says so, else the CPU with one diagnosis."""
    reasons = accelerator_signs(signs)
    if not reasons:
        return cpu_reading(failure, signs)
    try:
        torch = load_torch()
    except Exception as error:  # noqa: BLE001 - a broken torch install is diagnosed, never fatal
        return cpu_reading(failure, signs, f"torch failed to import ({type(error).__name__}: {error})")
    for read in (read_torch_cuda, read_torch_mps, read_torch_xpu):
        found = read(torch, options.device, origin)
        if found is not None:
            devices, chosen, notes = found
            why = (
                f"NVML unavailable ({failure.message}); read through torch {getattr(torch, '__version__', '?')} "
                f"because {' and '.join(reasons)}"
            )
            return MemoryReading(device=devices[chosen], visible=tuple(devices), notes=(why, *notes))
    return cpu_reading(failure, signs, f"torch {getattr(torch, '__version__', '?')} found no usable device")


def cpu_reading(failure: NvmlFailure, signs: HostSigns, torch_said: str | None = None) -> MemoryReading:
    """The CPU, with one line saying why and what to install; its free memory is the host's available memory."""
    return MemoryReading(device=host_cpu(signs), visible=(), notes=(diagnosis(failure, signs, torch_said),))


def host_cpu(signs: HostSigns) -> DeviceMemory:
    """The CPU as a device: no total (a CPU gets the first tier), the host's available memory as free."""
    if signs.memory_available is None:
        return CPU
    where = "/proc/meminfo MemAvailable" if signs.origin == "this machine" else f"{signs.origin}: host memory available"
    return dataclasses.replace(CPU, free_bytes=signs.memory_available, sources={"free_bytes": where})


def diagnosis(failure: NvmlFailure, signs: HostSigns, torch_said: str | None = None) -> str:
    build = torch_build(signs)
    torch_part = "not installed" if signs.torch_version is None else f"{signs.torch_version} ({build} build)"
    if signs.nvidia_driver:
        driver_part = f"present ({signs.nvidia_driver}), but {failure.message}"
    elif failure.kind in ("library-not-found", "not-installed"):
        driver_part = f"not found ({failure.message})"
    else:
        driver_part = failure.message
    if not signs.nvidia_driver and failure.kind == "library-not-found":
        advice = f"for an NVIDIA GPU, install the NVIDIA driver and a CUDA build of torch ({CUDA_WHEELS})"
    elif failure.kind == "not-installed":
        advice = "install nvidia-ml-py (pip install nvidia-ml-py)"
    elif build in ("not installed", "CPU-only"):
        advice = f"install a CUDA build of torch ({CUDA_WHEELS})"
    else:
        advice = "check `nvidia-smi` (driver loaded, device permissions)"
    said = f"; {torch_said}" if torch_said else ""
    return (
        f"no GPU found, running on the CPU. torch: {torch_part}; NVIDIA driver: {driver_part}{said}. To fix: {advice}"
    )


# --------------------------------------------------------------------------------------------- torch
_TorchFound = tuple[list[DeviceMemory], int, list[str]]


def read_torch_cuda(torch: Any, selector: str | None, origin: str = "") -> _TorchFound | None:
    """CUDA or ROCm devices through torch (torch applies ``CUDA_VISIBLE_DEVICES`` itself).

    Only the chosen device's free memory is read: ``mem_get_info`` opens a context on it."""
    if not torch.cuda.is_available():
        return None
    hip = getattr(torch.version, "hip", None)
    backend = "rocm" if hip else "cuda"
    api = f"{origin}torch.cuda ({'ROCm ' + str(hip) if hip else 'CUDA ' + str(getattr(torch.version, 'cuda', '?'))})"
    properties = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    if not properties:
        return None
    chosen, note = _select_by_uuid([str(getattr(p, "uuid", "")) for p in properties], selector, backend)
    free, _ = torch.cuda.mem_get_info(chosen)
    devices = []
    for index, props in enumerate(properties):
        uuid = str(getattr(props, "uuid", "")) or None
        devices.append(
            DeviceMemory(
                backend=backend,
                name=str(props.name),
                index=index,
                uuid=None if uuid is None else (uuid if uuid.startswith(("GPU-", "MIG-")) or hip else f"GPU-{uuid}"),
                total_bytes=int(props.total_memory),
                free_bytes=int(free) if index == chosen else None,
                sources={
                    "total_bytes": f"{api} get_device_properties().total_memory (excludes the driver's reservation)",
                    **({"free_bytes": f"{api} mem_get_info (opened a context)"} if index == chosen else {}),
                },
                compute_capability=(int(props.major), int(props.minor)),
                pci_bus_id=getattr(props, "pci_bus_id", None),
            )
        )
    return devices, chosen, [note] if note else []


def read_torch_mps(torch: Any, selector: str | None, origin: str = "") -> _TorchFound | None:
    """Apple silicon: memory is shared with the host; Metal's recommended working-set size is the
    figure a tier can rely on."""
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is None or not mps.is_available():
        return None
    total = int(torch.mps.recommended_max_memory())
    device = DeviceMemory(
        backend="mps",
        name="Apple silicon GPU (MPS)",
        index=0,
        total_bytes=total,
        sources={
            "total_bytes": f"{origin}torch.mps.recommended_max_memory() (Metal's recommended "
            "working set of the shared memory)"
        },
        unified_memory=True,
    )
    return [device], 0, ["unified memory: the GPU shares the host's RAM, so other programs' use shrinks what is left"]


def read_torch_xpu(torch: Any, selector: str | None, origin: str = "") -> _TorchFound | None:
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        return None
    count = xpu.device_count()
    if count == 0:
        return None
    chosen, note = _select_by_uuid([""] * count, selector, "xpu")
    free, _ = xpu.mem_get_info(chosen)
    devices = []
    for index in range(count):
        props = xpu.get_device_properties(index)
        devices.append(
            DeviceMemory(
                backend="xpu",
                name=str(props.name),
                index=index,
                total_bytes=int(props.total_memory),
                free_bytes=int(free) if index == chosen else None,
                sources={
                    "total_bytes": f"{origin}torch.xpu.get_device_properties().total_memory",
                    **({"free_bytes": f"{origin}torch.xpu.mem_get_info"} if index == chosen else {}),
                },
            )
        )
    return devices, chosen, [note] if note else []


def _select_by_uuid(uuids: list[str], selector: str | None, backend: str) -> tuple[int, str | None]:
    if selector is None or not selector.strip():
        return 0, None
    wanted = selector.strip().lower()
    index = parse_index(wanted)
    if index is not None and index < len(uuids):
        return index, None
    bare = wanted.removeprefix("gpu-").removeprefix("mig-")
    matches = [i for i, uuid in enumerate(uuids) if uuid and uuid.lower().removeprefix("gpu-").startswith(bare)]
    if len(matches) == 1 and index is None and wanted.isascii():
        return matches[0], None
    return 0, f"device {selector!r} matches no single visible {backend} device; using {backend}:0"
