"""Recordings are checked at the door against their documented form (issue #18, class 4; issue #20):
every wrong-typed or out-of-range field, deep in the memory, compute capability, MIG, host, MPS, XPU or
ROCm sections, is a usage error naming the file, the field and what it accepts (never Python's own
exception text, never a silent fall to the CPU); once a recording passed, what goes wrong while
replaying it is our bug, reported as one and never blamed on the file."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import acestep_core_cuda
import pytest
from acestep_core_cuda import detection
from acestep_core_cuda.replay import load_recording

from acestep_core import DetectOptions
from acestep_core.cli import main

H100 = load_recording("h100-80gb").data
MIG = load_recording("h100-mig-2g20gb").data
MAC = load_recording("apple-m2-pro-mps").data
XPU = load_recording("arc-a770-xpu").data
ROCM = load_recording("rx7900xtx-rocm").data

Edit = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Edit:
    """An edit that sets ``path`` (``nvml.gpus.0.memory_v1.total``) to ``value``, or removes it for ``...``."""

    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is ...:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


CASES: list[tuple[str, dict[str, Any], Edit, str]] = [
    # id, recording, edit, the field and what it accepts, as the message must say them
    (
        "memory-a-string",
        H100,
        _set("nvml.gpus.0.memory_v1", "abc"),
        'nvml.gpus[0].memory_v1 is "abc"; it must be an object',
    ),
    (
        "total-a-string",
        H100,
        _set("nvml.gpus.0.memory_v2.total", "80"),
        'nvml.gpus[0].memory_v2.total is "80"; it must be an integer from 1',
    ),
    (
        "total-zero",
        H100,
        _set("nvml.gpus.0.memory_v2.total", 0),
        "nvml.gpus[0].memory_v2.total is 0; it must be an integer from 1",
    ),
    ("total-negative", H100, _set("nvml.gpus.0.memory_v1.total", -1), "nvml.gpus[0].memory_v1.total is -1"),
    ("total-over-64-bits", H100, _set("nvml.gpus.0.memory_v2.total", 2**64), "to 18446744073709551615"),
    ("total-fractional", H100, _set("nvml.gpus.0.memory_v2.total", 1.5), "nvml.gpus[0].memory_v2.total is 1.5"),
    ("total-a-bool", H100, _set("nvml.gpus.0.memory_v2.total", True), "nvml.gpus[0].memory_v2.total is true"),
    ("free-missing", H100, _set("nvml.gpus.0.memory_v2.free", ...), "nvml.gpus[0].memory_v2.free is missing"),
    ("reserved-a-string", H100, _set("nvml.gpus.0.memory_v2.reserved", "x"), 'nvml.gpus[0].memory_v2.reserved is "x"'),
    (
        "memory-a-list",
        H100,
        _set("nvml.gpus.0.memory_v2", []),
        "nvml.gpus[0].memory_v2 is list; it must be an object or null",
    ),
    (
        "capability-a-string",
        H100,
        _set("nvml.gpus.0.compute_capability", "9.0"),
        'compute_capability is "9.0"; it must be two integers',
    ),
    (
        "capability-one-number",
        H100,
        _set("nvml.gpus.0.compute_capability", [9]),
        "nvml.gpus[0].compute_capability is list",
    ),
    (
        "capability-part-a-string",
        H100,
        _set("nvml.gpus.0.compute_capability", [9, "0"]),
        'compute_capability[1] is "0"',
    ),
    ("capability-negative", H100, _set("nvml.gpus.0.compute_capability", [-9, 0]), "compute_capability[0] is -9"),
    (
        "mig-mode-a-word",
        H100,
        _set("nvml.gpus.0.mig_mode", "on"),
        'nvml.gpus[0].mig_mode is "on"; it must be two integers from 0 to 1',
    ),
    ("mig-mode-two", H100, _set("nvml.gpus.0.mig_mode", [2, 0]), "mig_mode[0] is 2; it must be an integer from 0 to 1"),
    (
        "mig-devices-a-string",
        MIG,
        _set("nvml.gpus.0.mig_devices", "x"),
        'nvml.gpus[0].mig_devices is "x"; it must be a list',
    ),
    ("mig-slot-a-string", MIG, _set("nvml.gpus.0.mig_devices.0.slot", "0"), 'mig_devices[0].slot is "0"'),
    (
        "mig-slot-huge",
        MIG,
        _set("nvml.gpus.0.mig_devices.0.slot", 10**9),
        "mig_devices[0].slot is 1000000000; it must be an integer from 0 to 63",
    ),
    (
        "mig-slot-twice",
        MIG,
        _set("nvml.gpus.0.mig_devices.1.slot", 0),
        "mig_devices[1].slot is 0; it must be a slot no other instance",
    ),
    (
        "mig-uuid-missing",
        MIG,
        _set("nvml.gpus.0.mig_devices.0.uuid", ...),
        "mig_devices[0].uuid is missing; it must be a string",
    ),
    (
        "mig-total-zero",
        MIG,
        _set("nvml.gpus.0.mig_devices.0.memory_v1.total", 0),
        "mig_devices[0].memory_v1.total is 0",
    ),
    ("gpu-name-a-number", H100, _set("nvml.gpus.0.name", 5), "nvml.gpus[0].name is 5; it must be a string"),
    ("gpu-not-an-object", H100, _set("nvml.gpus.0", "H100"), 'nvml.gpus[0] is "H100"; it must be an object'),
    ("cores-a-word", H100, _set("nvml.gpus.0.cuda_cores", "many"), 'nvml.gpus[0].cuda_cores is "many"'),
    ("lost-a-word", H100, _set("nvml.gpus.0.lost", "yes"), 'nvml.gpus[0].lost is "yes"; it must be true or false'),
    ("error-a-number", MAC, _set("nvml.error", 5), "nvml.error is 5; it must be null or an NVML error name"),
    ("error-with-spaces", MAC, _set("nvml.error", "Driver Not Loaded"), 'nvml.error is "Driver Not Loaded"'),
    (
        "driver-a-number",
        H100,
        _set("nvml.driver_version", 580),
        "nvml.driver_version is 580; it must be a string or null",
    ),
    ("host-a-string", MAC, _set("host", "linux"), 'host is "linux"; it must be an object or null'),
    ("host-rocm-a-word", ROCM, _set("host.rocm", "yes"), 'host.rocm is "yes"; it must be true or false'),
    ("host-memory-negative", MAC, _set("host.memory_available", -5), "host.memory_available is -5"),
    ("host-system-a-number", MAC, _set("host.system", 3), "host.system is 3; it must be a string"),
    ("mps-a-string", MAC, _set("torch.mps", "x"), 'torch.mps is "x"; it must be an object or null'),
    ("mps-zero", MAC, _set("torch.mps.recommended_max_memory", 0), "torch.mps.recommended_max_memory is 0"),
    ("mps-missing", MAC, _set("torch.mps.recommended_max_memory", ...), "torch.mps.recommended_max_memory is missing"),
    (
        "xpu-total-a-string",
        XPU,
        _set("torch.xpu_devices.0.total_memory", "16"),
        'torch.xpu_devices[0].total_memory is "16"',
    ),
    ("xpu-free-missing", XPU, _set("torch.xpu_devices.0.free", ...), "torch.xpu_devices[0].free is missing"),
    ("xpu-devices-an-object", XPU, _set("torch.xpu_devices", {}), "torch.xpu_devices is dict; it must be a list"),
    ("rocm-hip-a-number", ROCM, _set("torch.hip", 6.2), "torch.hip is 6.2; it must be a string or null"),
    ("rocm-major-a-word", ROCM, _set("torch.cuda_devices.0.major", "gfx11"), 'torch.cuda_devices[0].major is "gfx11"'),
    ("rocm-total-zero", ROCM, _set("torch.cuda_devices.0.total_memory", 0), "torch.cuda_devices[0].total_memory is 0"),
    ("torch-a-list", ROCM, _set("torch", []), "torch is list; it must be an object or null"),
    ("too-many-gpus", H100, lambda d: d["nvml"].update(gpus=d["nvml"]["gpus"] * 300), "nvml.gpus lists 300 entries"),
]


def _write(tmp_path: Path, data: dict[str, Any], edit: Edit) -> Path:
    data = copy.deepcopy(data)
    edit(data)
    path = tmp_path / "recording.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("recording", "edit", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_field_outside_the_form_is_a_usage_error_naming_the_file_and_field(
    cli, tmp_path: Path, recording: dict[str, Any], edit: Edit, needle: str
) -> None:
    path = _write(tmp_path, recording, edit)
    outcome = cli("info", "--replay", str(path), cuda=True)
    assert outcome.code == 2, outcome.text
    assert outcome.out == "" and "Traceback" not in outcome.text
    [line] = outcome.err.strip().splitlines()
    assert f"--replay {path}" in line and needle in line, line
    assert "malformed" not in line and "Error:" not in line, "Python's exception text is not the message"


def test_every_bundled_recording_keeps_the_form() -> None:
    from acestep_core_cuda.replay import bundled_recordings, recording_problems

    assert {name: recording_problems(load_recording(name).data) for name in bundled_recordings()} == {
        name: [] for name in bundled_recordings()
    }


def test_every_problem_is_counted(tmp_path: Path) -> None:
    from acestep_core_cuda.replay import recording_problems

    data = copy.deepcopy(H100)
    data["nvml"]["gpus"][0]["name"] = 1
    data["nvml"]["gpus"][0]["memory_v2"]["total"] = 0
    problems = recording_problems(data)
    assert len(problems) == 2
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match=r"nvml.gpus\[0\].name is 1.*\(and 1 more problem\(s\)\)"):
        acestep_core_cuda.detect_memory(DetectOptions(replay=str(path)))


def test_figures_the_contract_refuses_never_become_the_cpu(cli, tmp_path: Path) -> None:
    """A zero total once broke detect_memory's contract: the plugin's answer was refused and the command
    ran on the CPU with exit 0, blaming the built-in plugin. Now the file is refused, by name."""
    for recording, edit in (
        (H100, _set("nvml.gpus.0.memory_v2.total", 0)),
        (ROCM, _set("torch.cuda_devices.0.total_memory", 0)),
        (MAC, _set("torch.mps.recommended_max_memory", 0)),
    ):
        path = _write(tmp_path, recording, edit)
        outcome = cli("info", "--json", "--replay", str(path), cuda=True)
        assert outcome.code == 2 and str(path) in outcome.err and "breaks the contract" not in outcome.text


# --------------------------------------------------------------------------------------------- our own bugs
@pytest.fixture
def buggy_replay(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The replay's reading code raising as a bug would (after the recording passed its check)."""
    reached: list[str] = []

    def broken(*args: object, **kwargs: object) -> None:
        reached.append("nvml_reading")
        raise KeyError("a bug in our own code")

    monkeypatch.setattr(detection, "nvml_reading", broken)
    return reached


def test_a_bug_while_replaying_is_raised_as_itself_not_blamed_on_the_file(buggy_replay: list[str]) -> None:
    with pytest.raises(KeyError, match="a bug in our own code"):
        acestep_core_cuda.detect_memory(DetectOptions(replay="h100-80gb"))
    assert buggy_replay == ["nvml_reading"]


def test_the_cli_reports_a_replay_bug_as_an_internal_error(cli, buggy_replay: list[str]) -> None:
    outcome = cli("info", "--replay", "h100-80gb", cuda=True)
    assert outcome.code == 1 and buggy_replay and "Traceback" not in outcome.text
    [line] = outcome.err.strip().splitlines()
    assert "internal error" in line and "a bug" in line and "ACESTEP_CORE_DEBUG=1" in line
    assert "KeyError" in line and "malformed" not in line and "h100-80gb" in line


def test_debug_shows_the_bugs_traceback(
    buggy_replay: list[str], make_manager, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import acestep_core.plugins
    from acestep_core.cli.resolution import ReplayFailedError

    monkeypatch.setattr(acestep_core.plugins, "_default", make_manager(("cuda", acestep_core_cuda)))
    monkeypatch.setenv("ACESTEP_CORE_DEBUG", "on")
    with pytest.raises(ReplayFailedError, match="KeyError"):
        main(["info", "--replay", "h100-80gb"])
    err = capsys.readouterr().err
    assert "Traceback" in err and "raise KeyError" in err and "nvml_reading" in err
