"""When NVML cannot answer: every NVML error class → the right fallback and message; torch absent,
CPU-only, CUDA, ROCm, MPS and XPU builds; torch imported only where a sign says so."""

from __future__ import annotations

from typing import Any

import acestep_core_cuda
import pytest
from acestep_core_cuda import detection
from acestep_core_cuda.fallbacks import HostSigns, accelerator_signs, torch_build
from acestep_core_cuda.replay import RecordedNvml, recorded_torch

from acestep_core import DetectOptions, MemoryReading

NO_SIGNS = HostSigns(system="Linux", machine="x86_64", torch_version="2.13.0+cpu")
CUDA_TORCH = {
    "version": "2.11.0+cu130",
    "cuda": "13.0",
    "cuda_devices": [
        {
            "name": "NVIDIA H100 80GB HBM3",
            "total_memory": 85_017_493_504,
            "major": 9,
            "minor": 0,
            "uuid": "ca2e940d-eca6-3135-2782-dabd4713068e",
            "free": 84_465_090_560,
        },
        {
            "name": "NVIDIA A10",
            "total_memory": 23_836_098_560,
            "major": 8,
            "minor": 6,
            "uuid": "0b1c2d3e-0000-1111-2222-333344445555",
            "free": 23_000_000_000,
        },
    ],
}


class TorchLoader:
    """Counts imports, so a test can show torch was (not) imported."""

    def __init__(self, section: dict[str, Any] | None) -> None:
        self.section = section
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.section is None:
            raise ModuleNotFoundError("No module named 'torch'", name="torch")
        return recorded_torch(self.section)


def detect(error: str | None, signs: HostSigns, torch: TorchLoader, device: str | None = None) -> MemoryReading:
    def nvml() -> Any:
        if error == "NotInstalled":
            raise ModuleNotFoundError("No module named 'pynvml'", name="pynvml")
        return RecordedNvml({"error": error, "gpus": []})

    return detection.detect(DetectOptions(device=device), nvml=nvml, host=lambda environ: signs, load_torch=torch)


NVML_ERRORS = [
    ("LibraryNotFound", "NVML library not found"),
    ("DriverNotLoaded", "installed but not loaded"),
    ("NoPermission", "no permission"),
    ("LibRmVersionMismatch", "differ in version"),
    ("Unknown", "NVML failed: NVMLError_Unknown"),
    ("GpuIsLost", "NVML failed: NVMLError_GpuIsLost"),
    ("NotInstalled", "nvidia-ml-py is not installed"),
    (None, "sees no NVIDIA GPU"),
]


@pytest.mark.parametrize(("error", "meaning"), NVML_ERRORS)
def test_each_nvml_failure_falls_back_to_torch_with_the_reason(error: str | None, meaning: str) -> None:
    torch = TorchLoader(CUDA_TORCH)
    signs = HostSigns(system="Linux", machine="x86_64", torch_version="2.11.0+cu130", nvidia_driver="580.159.04")
    reading = detect(error, signs, torch)
    assert torch.calls == 1
    device = reading.device
    assert (device.backend, device.name, device.index) == ("cuda", "NVIDIA H100 80GB HBM3", 0)
    assert device.total_bytes == 85_017_493_504  # torch's figure: without the driver's reservation
    assert device.free_bytes == 84_465_090_560
    assert device.uuid == "GPU-ca2e940d-eca6-3135-2782-dabd4713068e"
    assert "opened a context" in device.sources["free_bytes"]
    assert reading.visible[1].free_bytes is None  # no context opened on the other GPU
    assert meaning in reading.notes[0] and "read through torch 2.11.0+cu130" in reading.notes[0]
    assert "NVIDIA driver is present" in reading.notes[0]


@pytest.mark.parametrize(("error", "meaning"), NVML_ERRORS)
def test_each_nvml_failure_without_any_sign_gives_the_cpu_and_one_diagnosis(error: str | None, meaning: str) -> None:
    torch = TorchLoader(CUDA_TORCH)
    reading = detect(error, NO_SIGNS, torch)
    assert torch.calls == 0
    assert reading.device.backend == "cpu"
    assert len(reading.notes) == 1
    note = reading.notes[0]
    assert meaning in note
    assert "2.13.0+cpu (CPU-only build)" in note and "To fix:" in note


def test_diagnosis_without_a_driver_says_install_driver_and_cuda_torch() -> None:
    note = detect("LibraryNotFound", NO_SIGNS, TorchLoader(None)).notes[0]
    assert "install the NVIDIA driver and a CUDA build of torch" in note
    assert "PyTorch's install selector" in note


def test_diagnosis_with_a_driver_and_cpu_torch_says_install_cuda_torch() -> None:
    signs = HostSigns(system="Linux", machine="x86_64", torch_version="2.13.0+cpu", nvidia_driver="550.120")
    torch = TorchLoader(CUDA_TORCH)
    note = detect("NoPermission", signs, torch).notes[0]
    assert torch.calls == 0  # a CPU-only build is never imported
    assert "present (550.120), but no permission" in note
    assert "install a CUDA build of torch" in note


def test_torch_absent_is_diagnosed() -> None:
    signs = HostSigns(system="Linux", machine="x86_64", torch_version=None, nvidia_driver="550.120")
    torch = TorchLoader(None)
    reading = detect("DriverNotLoaded", signs, torch)
    assert torch.calls == 0
    assert reading.device.backend == "cpu"
    assert "torch: not installed" in reading.notes[0]


def test_torch_that_fails_to_import_is_diagnosed() -> None:
    signs = HostSigns(system="Linux", machine="x86_64", torch_version="2.11.0+cu130", nvidia_driver="550.120")
    reading = detect("DriverNotLoaded", signs, TorchLoader(None))
    assert reading.device.backend == "cpu"
    assert "torch failed to import (ModuleNotFoundError" in reading.notes[0]


def test_cuda_torch_that_sees_no_device_is_diagnosed() -> None:
    signs = HostSigns(system="Linux", machine="x86_64", torch_version="2.11.0+cu130", nvidia_driver="550.120")
    torch = TorchLoader({"version": "2.11.0+cu130", "cuda": "13.0"})
    reading = detect("DriverNotLoaded", signs, torch)
    assert torch.calls == 1 and reading.device.backend == "cpu"
    assert "found no usable device" in reading.notes[0] and "check `nvidia-smi`" in reading.notes[0]


def test_rocm_build_reports_rocm() -> None:
    signs = HostSigns(system="Linux", machine="x86_64", torch_version="2.6.0+rocm6.2", rocm=True)
    torch = TorchLoader(
        {
            "version": "2.6.0+rocm6.2",
            "hip": "6.2.41133",
            "cuda_devices": [
                {
                    "name": "AMD Instinct MI300X",
                    "total_memory": 205_822_885_888,
                    "major": 9,
                    "minor": 4,
                    "uuid": "",
                    "free": 205_000_000_000,
                }
            ],
        }
    )
    reading = detect("LibraryNotFound", signs, torch)
    assert (reading.device.backend, reading.device.name) == ("rocm", "AMD Instinct MI300X")
    assert "ROCm 6.2.41133" in reading.device.sources["total_bytes"]
    assert "/dev/kfd exists" in reading.notes[0]


def test_mps_reports_unified_memory() -> None:
    signs = HostSigns(system="Darwin", machine="arm64", torch_version="2.5.1")
    reading = detect(
        "LibraryNotFound", signs, TorchLoader({"version": "2.5.1", "mps": {"recommended_max_memory": 22_906_503_168}})
    )
    device = reading.device
    assert (device.backend, device.total_bytes, device.unified_memory) == ("mps", 22_906_503_168, True)
    assert "recommended_max_memory" in device.sources["total_bytes"]
    assert "macOS on Apple silicon" in reading.notes[0]


def test_xpu_is_read_through_torch() -> None:
    signs = HostSigns(system="Linux", machine="x86_64", torch_version="2.7.0+xpu", intel_gpu=True)
    torch = TorchLoader(
        {
            "version": "2.7.0+xpu",
            "xpu_devices": [{"name": "Intel Arc A770", "total_memory": 16_225_243_136, "free": 16_000_000_000}],
        }
    )
    reading = detect("LibraryNotFound", signs, torch)
    assert (reading.device.backend, reading.device.name, reading.device.free_bytes) == (
        "xpu",
        "Intel Arc A770",
        16_000_000_000,
    )
    assert "an Intel GPU is present" in reading.notes[0]


def test_torch_fallback_honours_the_device_choice() -> None:
    signs = HostSigns(system="Linux", machine="x86_64", torch_version="2.11.0+cu130", nvidia_driver="580.159.04")
    reading = detect("NoPermission", signs, TorchLoader(CUDA_TORCH), device="GPU-0b1c")
    assert reading.device.name == "NVIDIA A10" and reading.device.index == 1
    assert reading.visible[0].free_bytes is None


@pytest.mark.parametrize(
    ("version", "system", "build"),
    [
        ("2.13.0+cpu", "Linux", "CPU-only"),
        ("2.11.0+cu130", "Linux", "CUDA 13.0"),
        ("2.4.0+cu118", "Windows", "CUDA 11.8"),
        ("2.6.0+rocm6.2", "Linux", "ROCm 6.2"),
        ("2.7.0+xpu", "Linux", "XPU"),
        ("2.5.1", "Darwin", "macOS (CPU and MPS)"),
        ("2.5.1", "Linux", "the PyPI default (CUDA)"),
        (None, "Linux", "not installed"),
    ],
)
def test_torch_build_from_the_version_string(version: str | None, system: str, build: str) -> None:
    assert torch_build(HostSigns(system=system, machine="x86_64", torch_version=version)) == build


def test_no_sign_on_a_plain_linux_box_even_with_a_cuda_torch() -> None:
    assert accelerator_signs(HostSigns(system="Linux", machine="x86_64", torch_version="2.11.0+cu130")) == []


def test_the_real_machine_without_nvidia(monkeypatch) -> None:
    """This CI machine: NVML's library is missing, so the plugin answers with the CPU and one note."""
    from acestep_core_cuda.fallbacks import probe_host

    signs = probe_host({})
    if signs.nvidia_driver or signs.rocm or signs.intel_gpu:
        pytest.skip("this machine has an accelerator")
    monkeypatch.setattr(detection, "torch_loader", lambda: pytest.fail("torch must not be imported"))
    reading = acestep_core_cuda.detect_memory(DetectOptions())
    assert reading.device.backend == "cpu" and len(reading.notes) == 1
    assert reading.notes[0].startswith("no GPU found")
