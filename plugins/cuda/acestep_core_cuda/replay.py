"""Recorded devices: a JSON form of what NVML (and, for the fallbacks, torch and the host) said, and
fakes that replay it through the very code that reads the real driver.

``acestep-core info --replay FILE`` replays a recording; FILE is a path or the name of a bundled
recording (``acestep-core info --replay h100-80gb``). ``python -m acestep_core_cuda.replay record
--out mine.json`` records this machine's GPUs. The form (``format`` = :data:`FORMAT`)::

    {
      "format": "acestep-core-recording/1",
      "description": "what the device is", "source": "where the figures come from",
      "nvml": {
        "error": null,              // or an NVML error class suffix: "LibraryNotFound",
                                    // "DriverNotLoaded", "NoPermission", "Unknown" …, or "NotInstalled"
        "driver_version": "580.159.04",
        "gpus": [{                  // NVML order (PCI order)
          "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-…", "pci_bus_id": "00000000:00:06.0",
          "memory_v1": {"total": 0, "free": 0, "used": 0},
          "memory_v2": {"total": 0, "free": 0, "used": 0, "reserved": 0},   // null: no v2 query
          "compute_capability": [9, 0], "mig_mode": [0, 0],
          "cuda_cores": 16896, "max_sm_clock_mhz": 1980,
          "mig_devices": [{"slot": 0, "name": "… MIG 2g.20gb", "uuid": "MIG-…",
                           "memory_v1": {…}, "memory_v2": null}]
        }]
      },
      "host": {"system": "Linux", "machine": "x86_64", "torch_version": "2.11.0+cu130",
               "nvidia_driver": "580.159.04", "rocm": false, "intel_gpu": false,
               "memory_available": 0},      // bytes the host can allocate (MemAvailable); optional
      "torch": {"version": "2.11.0+cu130", "cuda": "13.0", "hip": null,
                "cuda_devices": [{"name": "…", "total_memory": 0, "major": 9, "minor": 0,
                                  "uuid": "…", "free": 0}],
                "mps": {"recommended_max_memory": 0} or null, "xpu_devices": []}
    }

A figure that is null or absent is one NVML does not give (the fake raises ``NVMLError_NotSupported``).
``host`` and ``torch`` matter only when ``nvml.error`` is set: they drive the fallbacks.

A recording is checked against this form before anything is replayed (:func:`recording_problems`):
each field of the wrong type or range is named with what it accepts (byte counts are integers from 0,
totals from 1, both below 2**64 as NVML's are; a compute capability two integers; MIG mode two of 0
or 1; MIG slots 0-63, each once; at most 256 GPUs). Fields not in the form are ignored. What goes
wrong after that check is a bug in this plugin, reported as one, never blamed on the file.
"""

# ruff: noqa: N802 - method and attribute names mirror pynvml's API
from __future__ import annotations

import argparse
import importlib.resources
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

from acestep_core.plugin_api import MAX_NESTING, RECORDING_SIZE_LIMIT, InputFileError, nesting_depth, read_text_limited
from acestep_core_cuda.fallbacks import HostSigns, probe_host
from acestep_core_cuda.nvml import NvmlLike, classify, load_pynvml, optional, read_memory, text

FORMAT = "acestep-core-recording/1"
RECORDINGS = "recordings"


class RecordingError(ValueError):
    """A recording that cannot be found or read; the message names the file and the problem."""


@dataclass(frozen=True)
class Recording:
    path: str
    data: Mapping[str, Any]

    @property
    def description(self) -> str:
        return str(self.data.get("description", ""))

    def nvml(self) -> NvmlLike:
        error = self.data["nvml"].get("error")
        if error == "NotInstalled":
            raise ModuleNotFoundError("No module named 'pynvml' (recorded)", name="pynvml")
        return RecordedNvml(self.data["nvml"])  # type: ignore[return-value]

    def host(self, environ: Mapping[str, str]) -> HostSigns:
        host = self.data.get("host") or {}
        return HostSigns(
            system=str(host.get("system", "Linux")),
            machine=str(host.get("machine", "x86_64")),
            torch_version=host.get("torch_version"),
            nvidia_driver=host.get("nvidia_driver"),
            rocm=bool(host.get("rocm", False)),
            intel_gpu=bool(host.get("intel_gpu", False)),
            memory_available=host.get("memory_available"),
            origin=f"recording {self.path}",
        )

    def torch(self) -> Any:
        section = self.data.get("torch")
        if section is None:
            raise ModuleNotFoundError("No module named 'torch' (not in the recording)", name="torch")
        return recorded_torch(section)


def bundled_recordings() -> dict[str, Path]:
    """Name → file of every recording shipped in the package."""
    folder = importlib.resources.files("acestep_core_cuda").joinpath(RECORDINGS)
    return {
        entry.name.removesuffix(".json"): Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".json")
    }


def load_recording(name_or_path: str) -> Recording:
    """A recording from a file, or a bundled one by name.

    :raises RecordingError: the file is missing, not JSON, or not in the recording form.
    """
    path = Path(name_or_path)
    if not path.exists():
        bundled = bundled_recordings()
        if name_or_path.removesuffix(".json") not in bundled:
            raise RecordingError(
                f"--replay {name_or_path}: no such file, nor a bundled recording (bundled: "
                f"{', '.join(sorted(bundled))})"
            )
        path = bundled[name_or_path.removesuffix(".json")]
    try:
        data = json.loads(read_text_limited(path, limit=RECORDING_SIZE_LIMIT, what="recording"))
    except InputFileError as error:
        raise RecordingError(f"--replay {name_or_path}: {error}") from None
    except json.JSONDecodeError as error:
        raise RecordingError(f"--replay {name_or_path}: cannot read it: {path} is not JSON ({error})") from None
    except RecursionError:
        raise RecordingError(f"--replay {name_or_path}: {path} nests too deeply to be a recording") from None
    if nesting_depth(data) > MAX_NESTING:
        raise RecordingError(
            f"--replay {name_or_path}: {path} nests more than {MAX_NESTING} levels deep; not a recording"
        )
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("nvml"), dict):
        raise RecordingError(
            f'--replay {name_or_path}: not a recording (expected an object with "format": {FORMAT!r} and an '
            '"nvml" section)'
        )
    problems = recording_problems(data)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise RecordingError(f"--replay {name_or_path}: {path}: {problems[0]}{more}")
    return Recording(str(path), data)


# --------------------------------------------------------------------------------------------- the form
MAX_BYTES = 2**64 - 1
"""NVML's byte counts are unsigned 64-bit integers."""
MAX_GPUS = 256
MIG_SLOTS = 64
_ERROR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class _Form:
    """Checks one recording against the documented form, collecting ``field: problem`` lines."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, where: str, value: Any, accepted: str) -> None:
        self.problems.append(f"{where} is {_shown(value)}; it must be {accepted}")

    def section(self, where: str, value: Any, *, optional: bool = False) -> dict[str, Any] | None:
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            self.bad(where, value, "an object" + (" or null" if optional else ""))
            return None
        return value

    def items(self, where: str, value: Any, *, limit: int | None = None) -> list[Any]:
        if not isinstance(value, list):
            self.bad(where, value, "a list")
            return []
        if limit is not None and len(value) > limit:
            self.problems.append(f"{where} lists {len(value)} entries; it may list at most {limit}")
            return []
        return value

    def text(self, where: str, value: Any, *, optional: bool = False) -> None:
        if not (isinstance(value, str) or (optional and value is None)):
            self.bad(where, value, "a string" + (" or null" if optional else ""))

    def flag(self, where: str, value: Any) -> None:
        if not isinstance(value, bool):
            self.bad(where, value, "true or false")

    def count(self, where: str, value: Any, *, least: int = 0, most: int = MAX_BYTES, optional: bool = False) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
            self.bad(where, value, f"an integer from {least} to {most}" + (" or null" if optional else ""))

    def pair(self, where: str, value: Any, *, most: int) -> None:
        if value is None:
            return
        if not (isinstance(value, list) and len(value) == 2):
            self.bad(where, value, f"two integers from 0 to {most}, or null")
            return
        for position, part in enumerate(value):
            self.count(f"{where}[{position}]", part, most=most)

    def memory(self, where: str, value: Any, *, reserved: bool) -> None:
        memory = self.section(where, value, optional=True)
        if memory is None:
            return
        self.count(f"{where}.total", memory.get("total", MISSING), least=1)
        for figure in ("free", "used"):
            self.count(f"{where}.{figure}", memory.get(figure, MISSING))
        if reserved and "reserved" in memory:
            self.count(f"{where}.reserved", memory["reserved"])


MISSING: Any = object()
"""A required field the recording leaves out (``gpu.get("uuid", MISSING)``)."""


def _shown(value: Any) -> str:
    if value is MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = json.dumps(value) if isinstance(value, (int, float, str)) else type(value).__name__
    return text if len(text) <= 40 else text[:39] + "…"


def recording_problems(data: Mapping[str, Any]) -> list[str]:
    """Every way ``data`` departs from the recording form above, each ``field: what it must be``."""
    form = _Form()
    for key in ("description", "source"):
        if key in data:
            form.text(key, data[key])
    nvml = form.section("nvml", data.get("nvml")) or {}
    error = nvml.get("error")
    if error is not None and not (isinstance(error, str) and _ERROR_NAME.fullmatch(error)):
        form.bad("nvml.error", error, 'null or an NVML error name such as "DriverNotLoaded"')
    form.text("nvml.driver_version", nvml.get("driver_version"), optional=True)
    for position, gpu in enumerate(form.items("nvml.gpus", nvml.get("gpus", []), limit=MAX_GPUS)):
        _check_gpu(form, f"nvml.gpus[{position}]", gpu)
    if "host" in data:
        _check_host(form, data["host"])
    if "torch" in data:
        _check_torch(form, data["torch"])
    return form.problems


def _check_gpu(form: _Form, where: str, value: Any) -> None:
    gpu = form.section(where, value)
    if gpu is None:
        return
    for key in ("name", "uuid"):
        form.text(f"{where}.{key}", gpu.get(key, MISSING))
    form.text(f"{where}.pci_bus_id", gpu.get("pci_bus_id"), optional=True)
    form.memory(f"{where}.memory_v1", gpu.get("memory_v1"), reserved=False)
    form.memory(f"{where}.memory_v2", gpu.get("memory_v2"), reserved=True)
    form.pair(f"{where}.compute_capability", gpu.get("compute_capability"), most=99)
    form.pair(f"{where}.mig_mode", gpu.get("mig_mode"), most=1)
    form.count(f"{where}.cuda_cores", gpu.get("cuda_cores"), optional=True, most=2**31 - 1)
    form.count(f"{where}.max_sm_clock_mhz", gpu.get("max_sm_clock_mhz"), optional=True, most=2**31 - 1)
    if "lost" in gpu:
        form.flag(f"{where}.lost", gpu["lost"])
    slots: set[int] = set()
    for position, mig in enumerate(form.items(f"{where}.mig_devices", gpu.get("mig_devices", []), limit=MIG_SLOTS)):
        inside = f"{where}.mig_devices[{position}]"
        instance = form.section(inside, mig)
        if instance is None:
            continue
        slot = instance.get("slot", MISSING)
        form.count(f"{inside}.slot", slot, most=MIG_SLOTS - 1)
        if slot in slots:
            form.bad(f"{inside}.slot", slot, "a slot no other instance of this GPU has")
        if isinstance(slot, int):
            slots.add(slot)
        for key in ("name", "uuid"):
            form.text(f"{inside}.{key}", instance.get(key, MISSING))
        form.memory(f"{inside}.memory_v1", instance.get("memory_v1"), reserved=False)
        form.memory(f"{inside}.memory_v2", instance.get("memory_v2"), reserved=True)


def _check_host(form: _Form, value: Any) -> None:
    host = form.section("host", value, optional=True)
    if host is None:
        return
    for key in ("system", "machine"):
        if key in host:
            form.text(f"host.{key}", host[key])
    for key in ("torch_version", "nvidia_driver"):
        form.text(f"host.{key}", host.get(key), optional=True)
    for key in ("rocm", "intel_gpu"):
        if key in host:
            form.flag(f"host.{key}", host[key])
    form.count("host.memory_available", host.get("memory_available"), optional=True)


def _check_torch(form: _Form, value: Any) -> None:
    torch = form.section("torch", value, optional=True)
    if torch is None:
        return
    if "version" in torch:
        form.text("torch.version", torch["version"])
    for key in ("cuda", "hip"):
        form.text(f"torch.{key}", torch.get(key), optional=True)
    for key in ("cuda_devices", "xpu_devices"):
        for position, device in enumerate(form.items(f"torch.{key}", torch.get(key, []), limit=MAX_GPUS)):
            where = f"torch.{key}[{position}]"
            props = form.section(where, device)
            if props is None:
                continue
            form.text(f"{where}.name", props.get("name", MISSING))
            form.count(f"{where}.total_memory", props.get("total_memory", MISSING), least=1)
            form.count(f"{where}.free", props.get("free", MISSING))
            if key == "cuda_devices":
                form.count(f"{where}.major", props.get("major", MISSING), most=99)
                form.count(f"{where}.minor", props.get("minor", MISSING), most=99)
                for optional in ("uuid", "pci_bus_id"):
                    if optional in props:
                        form.text(f"{where}.{optional}", props[optional])
    mps = form.section("torch.mps", torch.get("mps"), optional=True)
    if mps is not None:
        form.count("torch.mps.recommended_max_memory", mps.get("recommended_max_memory", MISSING), least=1)


# --------------------------------------------------------------------------------------------- NVML
@dataclass(frozen=True)
class _Handle:
    device: Mapping[str, Any]
    is_mig: bool = False


class RecordedNvml:
    """Answers the :class:`~acestep_core_cuda.nvml.NvmlLike` calls from a recording's ``nvml``
    section, raising pynvml's own error classes where the recording says NVML failed or lacks a figure."""

    def __init__(self, section: Mapping[str, Any]) -> None:
        import pynvml  # only for its error classes and constants; loads no library

        self._pynvml = pynvml
        self.nvmlMemory_v2 = pynvml.nvmlMemory_v2
        self.NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
        self._section = section
        self.initialised = 0

    def _error(self, name: str) -> Exception:
        return getattr(self._pynvml, f"NVMLError_{name}", self._pynvml.NVMLError_Unknown)()

    def _figure(self, handle: _Handle, key: str) -> Any:
        value = handle.device.get(key)
        if value is None:
            raise self._error("NotSupported")
        return value

    def nvmlInit(self) -> None:
        if self._section.get("error"):
            raise self._error(str(self._section["error"]))
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        if self.initialised <= 0:
            raise self._error("Uninitialized")
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        version = self._section.get("driver_version")
        if version is None:
            raise self._error("NotSupported")
        return str(version)

    def nvmlDeviceGetCount(self) -> int:
        return len(self._section.get("gpus", []))

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        gpus = self._section.get("gpus", [])
        if not 0 <= index < len(gpus):
            raise self._error("InvalidArgument")
        if gpus[index].get("lost"):
            raise self._error("GpuIsLost")
        return _Handle(gpus[index])

    def nvmlDeviceGetName(self, handle: _Handle) -> str:
        return str(self._figure(handle, "name"))

    def nvmlDeviceGetUUID(self, handle: _Handle) -> str:
        return str(self._figure(handle, "uuid"))

    def nvmlDeviceGetPciInfo(self, handle: _Handle) -> Any:
        return SimpleNamespace(busId=str(self._figure(handle, "pci_bus_id")))

    def nvmlDeviceGetMemoryInfo(self, handle: _Handle, version: int | None = None) -> Any:
        memory = self._figure(handle, "memory_v2" if version else "memory_v1")
        return SimpleNamespace(reserved=memory.get("reserved", 0), **{k: memory[k] for k in ("total", "free", "used")})

    def nvmlDeviceGetCudaComputeCapability(self, handle: _Handle) -> tuple[int, int]:
        major, minor = self._figure(handle, "compute_capability")
        return int(major), int(minor)

    def nvmlDeviceGetMigMode(self, handle: _Handle) -> list[int]:
        return [int(v) for v in self._figure(handle, "mig_mode")]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: _Handle) -> int:
        slots = [int(m["slot"]) for m in handle.device.get("mig_devices", [])]
        return max([7, *[slot + 1 for slot in slots]])

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: _Handle, index: int) -> _Handle:
        for mig in handle.device.get("mig_devices", []):
            if int(mig["slot"]) == index:
                return _Handle(mig, is_mig=True)
        raise self._error("NotFound")

    def nvmlDeviceGetNumGpuCores(self, handle: _Handle) -> int:
        return int(self._figure(handle, "cuda_cores"))

    def nvmlDeviceGetMaxClockInfo(self, handle: _Handle, clock_type: int) -> int:
        return int(self._figure(handle, "max_sm_clock_mhz"))


# --------------------------------------------------------------------------------------------- torch
def recorded_torch(section: Mapping[str, Any]) -> Any:
    """A stand-in for the torch module, answering the calls the fallbacks make from a ``torch`` section."""
    cuda_devices = list(section.get("cuda_devices", []))
    xpu_devices = list(section.get("xpu_devices", []))
    mps = section.get("mps")

    def properties(devices: list[Mapping[str, Any]]) -> Callable[[int], Any]:
        return lambda index: SimpleNamespace(**{k: v for k, v in devices[index].items() if k != "free"})

    def mem_get_info(devices: list[Mapping[str, Any]]) -> Callable[[int], tuple[int, int]]:
        return lambda index: (int(devices[index]["free"]), int(devices[index]["total_memory"]))

    return SimpleNamespace(
        __version__=section.get("version", "?"),
        version=SimpleNamespace(cuda=section.get("cuda"), hip=section.get("hip")),
        cuda=SimpleNamespace(
            is_available=lambda: bool(cuda_devices),
            device_count=lambda: len(cuda_devices),
            get_device_properties=properties(cuda_devices),
            mem_get_info=mem_get_info(cuda_devices),
        ),
        backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: mps is not None)),
        mps=SimpleNamespace(recommended_max_memory=lambda: int(mps["recommended_max_memory"]) if mps else 0),
        xpu=SimpleNamespace(
            is_available=lambda: bool(xpu_devices),
            device_count=lambda: len(xpu_devices),
            get_device_properties=properties(xpu_devices),
            mem_get_info=mem_get_info(xpu_devices),
        ),
    )


# --------------------------------------------------------------------------------------------- record
def record(nvml: NvmlLike, description: str = "", source: str = "") -> dict[str, Any]:
    """A recording of what ``nvml`` says now (raw figures, in the form above)."""
    nvml.nvmlInit()
    try:
        gpus = [_record_gpu(nvml, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(nvml.nvmlDeviceGetCount())]
        driver = optional(lambda: text(nvml.nvmlSystemGetDriverVersion()))
    finally:
        nvml.nvmlShutdown()
    return {
        "format": FORMAT,
        "description": description,
        "source": source,
        "nvml": {"error": None, "driver_version": driver, "gpus": gpus},
    }


def _record_gpu(nvml: NvmlLike, handle: Any, slot: int | None = None) -> dict[str, Any]:
    v1 = optional(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
    v2 = read_memory(nvml, handle)
    gpu: dict[str, Any] = {"name": text(nvml.nvmlDeviceGetName(handle)), "uuid": text(nvml.nvmlDeviceGetUUID(handle))}
    if slot is not None:
        gpu["slot"] = slot
    gpu["memory_v1"] = None if v1 is None else {"total": int(v1.total), "free": int(v1.free), "used": int(v1.used)}
    gpu["memory_v2"] = (
        None
        if v2 is None or v2.reserved is None
        else {"total": v2.total, "free": v2.free, "used": v2.used, "reserved": v2.reserved}
    )
    if slot is not None:
        return gpu
    pci = optional(lambda: nvml.nvmlDeviceGetPciInfo(handle))
    mig_mode = optional(lambda: [int(v) for v in nvml.nvmlDeviceGetMigMode(handle)])
    gpu |= {
        "pci_bus_id": None if pci is None else text(pci.busId),
        "compute_capability": optional(lambda: [int(v) for v in nvml.nvmlDeviceGetCudaComputeCapability(handle)]),
        "mig_mode": mig_mode,
        "cuda_cores": optional(lambda: int(nvml.nvmlDeviceGetNumGpuCores(handle))),
        "max_sm_clock_mhz": optional(lambda: int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM))),
        "mig_devices": [],
    }
    if mig_mode and mig_mode[0] == 1:
        for index in range(optional(lambda: int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))) or 0):
            mig = optional(lambda index=index: nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index))
            if mig is not None:
                gpu["mig_devices"].append(_record_gpu(nvml, mig, slot=index))
    return gpu


PROG = "python -m acestep_core_cuda.replay"
RECORD_HELP = """\
Record what NVML reports about this machine's NVIDIA GPUs (names, UUIDs, PCI ids, compute capability,
MIG, memory) with the host's signs, as JSON that `acestep-core info --replay FILE` replays through
the same detection code. NVIDIA only: it reads the driver through NVML (nvidia-ml-py), so on a machine
without an NVIDIA driver (a Mac, AMD, Intel, a CPU) nothing is recorded and it exits 1.

examples:
  python -m acestep_core_cuda.replay record "my box" --out my-gpu.json
  acestep-core info --replay my-gpu.json --device 1

exit status: 0 recorded, 1 nothing recorded (one message), 2 bad usage."""


class _Parser(argparse.ArgumentParser):
    """A usage error as one line naming what was wrong, exit 2 (as acestep-core's own commands)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    about, examples = RECORD_HELP.split("\n\n", 1)
    parser = _Parser(
        prog=PROG,
        description="Recorded devices: record this machine's NVIDIA GPUs for `acestep-core info --replay`.",
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)
    record_parser = commands.add_parser(
        "record",
        help="record this machine's NVIDIA GPUs (needs an NVIDIA driver)",
        description=about,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    record_parser.add_argument("description", nargs="*", help="what the machine is (kept in the recording)")
    record_parser.add_argument("--out", metavar="FILE", help="write the recording here (default: print it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m acestep_core_cuda.replay record [DESCRIPTION] [--out FILE]``: this machine's recording,
    printed, or written to FILE only once it is complete (no empty file where NVML cannot be read).
    Exit status: 0 ok, 1 nothing to record (one message), 2 bad usage; ``--help`` exits 0 and records nothing."""
    try:
        args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:  # --help (0) or a usage error (2), already printed
        return stop.code if isinstance(stop.code, int) else 2
    out: str | None = args.out
    try:
        data = record(
            load_pynvml(), description=" ".join(args.description), source="python -m acestep_core_cuda.replay record"
        )
    except Exception as error:  # noqa: BLE001 - NVML missing, no driver, no permission: one message, no file
        reason = classify(error).message
        print(
            f"nothing recorded: NVML cannot be read ({reason}); the recorder reads NVIDIA GPUs through NVML, so "
            "run it on a machine with an NVIDIA driver",
            file=sys.stderr,
        )
        return 1
    signs = probe_host({})
    data["host"] = {k: v for k, v in signs.__dict__.items() if k != "origin"}
    text = json.dumps(data, indent=1)
    if out is None:
        print(text)
        return 0
    target = Path(out)
    temporary = target.with_name(f".{target.name}.partial")
    try:
        temporary.write_text(text + "\n", encoding="utf-8")
        temporary.replace(target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        print(f"nothing recorded: cannot write {out}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"recorded {len(data['nvml']['gpus'])} GPU(s) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
