"""Recorded devices end to end: ``acestep-core info --replay``, the recording form, recording a
device, and a clean interpreter showing no torch and no CUDA library on the NVML path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import acestep_core_cuda
import pytest
from acestep_core_cuda import replay
from acestep_core_cuda.replay import RecordedNvml, load_recording, record
from conftest import folders_of_this_run

from acestep_core import DetectOptions, SettingIgnored
from acestep_core.cli import main

PLUGINS_ONLY_BUILTIN = {"ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD": "1"}

CLI_CASES = [
    ("h100-80gb", "NVIDIA H100 80GB HBM3", "unlimited", "79.65 GiB"),
    ("rtx4060ti-16gb", "NVIDIA GeForce RTX 4060 Ti", "tier6", "15.99 GiB"),
    ("rtx4060-8gb", "NVIDIA GeForce RTX 4060", "tier4", "8.00 GiB"),
    ("two-gpu-3060-4090", "NVIDIA GeForce RTX 4090", "unlimited", "23.99 GiB"),
    ("h100-mig-2g20gb", "NVIDIA H100 80GB HBM3 MIG 2g.20gb", "tier6", "19.50 GiB"),
    ("apple-m2-pro-mps", "Apple silicon GPU (MPS)", "tier6", "21.33 GiB"),
    ("cpu-only", "CPU", "tier1", "CPU (no accelerator)"),
]


@pytest.mark.parametrize(("name", "device", "tier", "shown"), CLI_CASES)
def test_info_replays_each_bundled_recording(
    monkeypatch, capsys, name: str, device: str, tier: str, shown: str
) -> None:
    monkeypatch.setenv("ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    assert main(["info", "--replay", name, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reading"]["device"]["name"] == device
    assert data["tier"]["name"] == tier
    assert next(d for d in data["decisions"] if d["hook"] == "detect_memory")["plugin"] == "cuda"
    assert main(["info", "--replay", name]) == 0
    text = capsys.readouterr().out
    assert shown in text.splitlines()[0]


def test_info_replay_by_path_with_device_flag_and_environment(monkeypatch, capsys) -> None:
    path = load_recording("two-gpu-3060-4090").path
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert main(["info", "--replay", path, "--device", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reading"]["device"]["name"] == "NVIDIA GeForce RTX 4090"
    assert data["reading"]["device"]["index"] == 1
    assert [d["name"] for d in data["reading"]["visible"]] == ["NVIDIA GeForce RTX 3060", "NVIDIA GeForce RTX 4090"]
    assert data["tier"]["name"] == "unlimited"


def test_info_replay_in_a_subprocess() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from acestep_core.cli import main; sys.exit(main())",
            "info",
            "--replay",
            "rtx4060ti-16gb",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **folders_of_this_run(), **PLUGINS_ONLY_BUILTIN},
    )
    assert result.returncode == 0, result.stderr
    assert "Tier 6" in result.stdout and "15.99 GiB" in result.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "no such file, nor a bundled recording"),
        ("{not json", "cannot read it"),
        ('{"format": "something-else", "nvml": {}}', "not a recording"),
        (
            '{"format": "acestep-core-recording/1", "nvml": {"gpus": [{"name": "x"}]}}',
            "nvml.gpus[0].uuid is missing; it must be a string",
        ),
    ],
)
def test_a_bad_recording_is_refused_with_its_name(tmp_path, content: str | None, problem: str) -> None:
    path = tmp_path / "recording.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingIgnored, match="nothing is replayed") as caught:
        acestep_core_cuda.detect_memory(DetectOptions(replay=str(path)))
    assert problem in str(caught.value) and str(path) in str(caught.value)


def test_a_bad_recording_on_the_command_line_is_a_usage_error(monkeypatch, capsys) -> None:
    """A recording typed on the command line that cannot be replayed stops the command (issue #9),
    where it once fell back to the CPU with a warning."""
    monkeypatch.setenv("ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    with pytest.raises(SystemExit) as caught:
        main(["info", "--replay", "no-such-recording"])
    assert caught.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no such file, nor a bundled recording (bundled: apple-m2-pro-mps" in captured.err


@pytest.mark.parametrize("name", ["h100-80gb", "rtx4060-8gb", "two-gpu-3060-4090", "h100-mig-2g20gb"])
def test_recording_a_device_gives_back_its_recording(name: str) -> None:
    """``record`` walks the NVML API; run on the fake it must reproduce the recording it replays."""
    original = load_recording(name).data
    recorded = record(RecordedNvml(original["nvml"]))
    assert recorded["nvml"] == {**original["nvml"], "error": None}


@pytest.mark.parametrize("argv", [["--help"], ["record", "--help"], ["-h"], ["record", "-h"]])
def test_the_recorders_help_exits_0_and_records_nothing(
    argv: list[str], tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def must_not_record() -> None:
        raise AssertionError("--help started recording")

    monkeypatch.setattr(replay, "load_pynvml", must_not_record)
    monkeypatch.chdir(tmp_path)
    assert replay.main(argv) == 0
    out = capsys.readouterr().out
    assert "record" in out and "NVIDIA" in out and "examples:" in out
    if argv[0] == "record":
        assert "--out FILE" in out and "NVIDIA only" in out and "NVML" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "named"),
    [([], "COMMAND"), (["recrd"], "'recrd'"), (["record", "--out"], "--out"), (["record", "--bogus"], "--bogus")],
)
def test_the_recorders_bad_usage_is_one_line_and_exit_2(
    argv: list[str], named: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(replay, "load_pynvml", lambda: pytest.fail("a usage error started recording"))
    assert replay.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "--help" in err[0]


NVML_PATH_PROBE = textwrap.dedent("""
    import json, sys
    from acestep_core import DetectOptions, resolve
    resolution = resolve(detect_options=DetectOptions(replay=sys.argv[1], environ={}), environ={})
    maps = open("/proc/self/maps").read()
    print(json.dumps({
        "tier": resolution.tier.name,
        "plugin": resolution.decided_by("detect_memory"),
        "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
        "libcuda": "libcuda" in maps or "libcudart" in maps,
    }))
""")


@pytest.mark.parametrize(
    ("name", "tier"), [("h100-80gb", "unlimited"), ("h100-mig-2g20gb", "tier6"), ("cpu-only", "tier1")]
)
def test_nvml_path_imports_no_torch_and_loads_no_cuda_library(name: str, tier: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", NVML_PATH_PROBE, name],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **folders_of_this_run(), **PLUGINS_ONLY_BUILTIN},
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"tier": tier, "plugin": "cuda", "torch": [], "libcuda": False}


REAL_GPU_PROBE = textwrap.dedent("""
    import json, os, sys
    from acestep_core import DetectOptions, resolve
    resolution = resolve(detect_options=DetectOptions(environ=dict(os.environ)), environ=dict(os.environ))
    import pynvml
    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    pids = [p.pid for h in handles for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)]
    print(json.dumps({
        "plugin": resolution.decided_by("detect_memory"),
        "torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
        "context": os.getpid() in pids,
    }))
""")


@pytest.mark.gpu
def test_real_gpu_detection_opens_no_context() -> None:
    """On a real driver NVML maps libcuda into the process, so the check is the one that matters:
    the process holds no CUDA context (it is not among the GPU's compute processes)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    result = subprocess.run([sys.executable, "-c", REAL_GPU_PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"plugin": "cuda", "torch": [], "context": False}
