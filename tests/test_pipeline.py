"""The reference pipeline end to end on the CPU: WAV files, clamps reported, one resolution for CLI and
API, cancellation that releases memory, and no growth across runs."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import statistics
import subprocess
import wave
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import interruptible_python, wait_until_said  # noqa: E402

from acestep_core import GenerationRequest, Overrides, ResolutionError  # noqa: E402
from acestep_core.cli import main  # noqa: E402
from acestep_core.runtime.models import SAMPLE_RATE, VAE_HOP  # noqa: E402
from acestep_core.runtime.pipeline import CancelHandle, GenerationCancelledError, generate, rss_bytes  # noqa: E402
from acestep_core.types import DetectOptions  # noqa: E402

LENGTH_TOLERANCE = VAE_HOP
"""A clip may differ from duration × 48 kHz by less than one latent frame (1,920 samples, 40 ms)."""
RSS_MARGIN = 64 * 2**20
"""A cancelled run may leave host RSS at most 64 MiB above a finished run's (allocator caches, not models)."""
RSS_WARMUP_RUNS, RSS_MEASURED_RUNS = 2, 8
RSS_SLOPE_LIMIT_MIB = 0.5
"""Repeated runs may grow host RSS by at most 0.5 MiB per run (least-squares slope over the warmed-up runs).

Measured with ``benchmarks/bench_rss_runs.py`` (5 fresh processes × 3 warm-up + 12 runs, the test's
request): raw RSS after ``gc.collect()`` swings by 42-178 MiB between runs (glibc keeps freed heap
mapped; the old last-minus-first statistic read -113 … +54 MiB with no leak, so a 64 MiB margin went
red by chance), and its slope by -1.1 … +3.3 MiB/run. After ``malloc_trim(0)`` hands freed heap back,
the warmed runs spread by at most 0.1 MiB and the slope reads 0.00 … +0.01 MiB/run: the limit is 50×
the largest measured, and a leak of 1 MiB a run (``--leak-mib 1``) reads +1.01 MiB/run, twice the
limit; one run's output audio (7.3 MiB) or its tiny models kept alive would read far more."""
LM_PHASE_STARTED = r"(^|[\r\n])lm\s*:"
"""The LM phase's progress bar as the CLI draws it on stderr (``lm          :   0%|``): the run is under way."""
MODEL_CLASSES = ("Qwen3ForCausalLM", "Qwen3Model", "AceStepTransformer1DModel", "AutoencoderOobleck")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_CUDA_VRAM", "MAX_MPS_VRAM", "MAX_XPU_VRAM", "ACESTEP_CORE_TIERS"):
        monkeypatch.delenv(name, raising=False)


def wav_files(directory: Path) -> list[tuple[int, int, int]]:
    """(channels, sample rate, frames) of every WAV in ``directory``."""
    found = []
    for path in sorted(directory.glob("*.wav")):
        with wave.open(str(path)) as wav:
            assert wav.getsampwidth() == 2
            found.append((wav.getnchannels(), wav.getframerate(), wav.getnframes()))
    return found


def live_models() -> list[str]:
    gc.collect()
    return [type(o).__name__ for o in gc.get_objects() if type(o).__name__ in MODEL_CLASSES]


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_generate_on_cpu_writes_the_adjusted_clips_and_reports_the_clamps(tmp_path, capsys, no_simulation) -> None:
    code, report = cli_json(
        capsys,
        "generate",
        "--duration",
        "30",
        "--max-duration",
        "12",
        "--batch",
        "3",
        "--vram",
        "8",
        "--steps",
        "2",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert code == 0
    adjusted = report["resolution"]["adjusted"]
    assert adjusted["duration_s"] == 12 and adjusted["batch_size"] == 2 and adjusted["lm_on"]
    files = wav_files(tmp_path)
    assert len(files) == adjusted["batch_size"] == len(report["clips"])
    for channels, rate, frames in files:
        assert channels == 2 and rate == SAMPLE_RATE
        assert abs(frames - 12 * SAMPLE_RATE) < LENGTH_TOLERANCE
    assert [c["codes"] for c in report["clips"]] == [12 * 5, 12 * 5], "the LM wrote exactly duration × 5 codes"
    warnings = " ".join(report["resolution"]["warnings"])
    assert "30 s exceeds the 12 s limit" in warnings and "batch size 3 exceeds" in warnings
    assert any(line.startswith("clamp:") and "12 s" in line for line in report["decisions"])
    phases = {p["name"]: p for p in report["phases"]}
    assert list(phases) == ["lm", "text_encoder", "dit", "vae"]
    for phase in phases.values():
        assert phase["device"] == "cpu" and phase["seconds"] > 0 and phase["peak_bytes"] > 0
    assert phases["dit"]["details"]["latent_frames"] == 12 * 25 and phases["dit"]["details"]["batch"] == 2
    assert phases["lm"]["details"]["codes"] == [60, 60]
    assert any("noise" in note for note in report["notes"])


def test_the_embedded_default_on_a_cpu_tier(tmp_path, capsys, no_simulation) -> None:
    code = main(
        ["generate", "--duration", "30", "--batch", "2", "--steps", "1", "--out", str(tmp_path), "--no-progress"]
    )
    text = capsys.readouterr().out
    assert code == 0
    resolution_lines = [line for line in text.splitlines() if line.startswith("  clamp:")]
    assert any("batch size 2 exceeds the limit of 1" in line for line in resolution_lines), text
    files = wav_files(tmp_path)
    assert len(files) == 1 and abs(files[0][2] - 30 * SAMPLE_RATE) < LENGTH_TOLERANCE
    assert "the audio is noise" in text


def test_cli_and_api_reach_the_same_resolution(tmp_path, capsys, no_simulation) -> None:
    code, report = cli_json(
        capsys,
        "generate",
        "--duration",
        "40",
        "--max-duration",
        "10",
        "--batch",
        "4",
        "--lm",
        "4B",
        "--vram",
        "8",
        "--steps",
        "1",
        "--out",
        str(tmp_path / "cli"),
        "--json",
    )
    assert code == 0
    result = generate(
        GenerationRequest(duration_s=40, batch_size=4, lm_model="4B", lm="on"),
        overrides=Overrides(max_duration_s=10),
        detect_options=DetectOptions(vram_gb="8", environ=dict(os.environ)),
        out_dir=tmp_path / "api",
        steps=1,
        progress=False,
    )
    assert result.resolution.to_dict() == report["resolution"]
    assert result.resolution.adjusted.lm_model == "0.6B", "the 4B the tier refuses is refused on both paths"
    assert [c.samples for c in result.clips] == [c["samples"] for c in report["clips"]]


def test_the_run_honours_the_plans_ladder(tmp_path) -> None:
    """A batch or duration the ladder lowered is the one that runs; a refused plan never loads a model."""
    request = GenerationRequest(duration_s=20, batch_size=2, lm="off")
    lowered = Overrides(plan={"ladder.batch_size": 1, "ladder.duration_s": 12})
    result = generate(
        request,
        overrides=lowered,
        detect_options=DetectOptions(vram_gb="16"),
        out_dir=tmp_path / "lowered",
        steps=1,
        progress=False,
    )
    assert len(result.clips) == 1
    assert abs(result.clips[0].samples - 12 * SAMPLE_RATE) <= VAE_HOP

    refused = Overrides(plan={"ladder.refused": {"shortfall_gib": 1.0}})
    with pytest.raises(ResolutionError, match="set by the user"):
        generate(
            request,
            overrides=refused,
            detect_options=DetectOptions(vram_gb="16"),
            out_dir=tmp_path / "refused",
            steps=1,
            progress=False,
        )
    assert not (tmp_path / "refused").exists()


def test_a_cancelled_run_releases_its_memory(tmp_path) -> None:
    request = GenerationRequest(duration_s=10, batch_size=1, lm="on")
    options = {"detect_options": DetectOptions(vram_gb="8"), "steps": 4, "progress": False}
    generate(request, out_dir=tmp_path / "warm", **options)
    baseline = live_rss_mib()
    handle = CancelHandle()
    seen: list[tuple[str, int]] = []

    def cancel_in_the_dit(phase: str, done: int, total: int) -> None:
        seen.append((phase, done))
        if phase == "dit" and done == 2:
            handle.cancel()

    with pytest.raises(GenerationCancelledError):
        generate(request, out_dir=tmp_path / "cancelled", cancel=handle, on_progress=cancel_in_the_dit, **options)
    assert ("dit", 2) in seen and ("dit", 3) not in seen, "the run stopped at the next step"
    assert not (tmp_path / "cancelled").exists() or not list((tmp_path / "cancelled").glob("*.wav"))
    assert live_models() == [], "no model survives a cancelled run"
    assert live_rss_mib() - baseline < RSS_MARGIN / 2**20


def live_rss_mib() -> float:
    """RSS once the garbage is collected and glibc has handed freed heap back to the OS (``malloc_trim``):
    what is alive, without the allocator's cache, whose size swings by a hundred MiB from run to run."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is None:
        pytest.skip("needs glibc's malloc_trim to read RSS without the allocator's cache")
    trim(0)
    rss = rss_bytes()
    if rss is None:
        pytest.skip("needs Linux's /proc/self/statm")
    return rss / 2**20


def test_repeated_runs_do_not_grow_rss(tmp_path) -> None:
    request = GenerationRequest(duration_s=10, batch_size=2, lm="on")
    readings = []
    for index in range(RSS_WARMUP_RUNS + RSS_MEASURED_RUNS):
        generate(
            request,
            detect_options=DetectOptions(vram_gb="8"),
            out_dir=tmp_path / str(index),
            steps=1,
            progress=False,
            seed=index,
        )
        readings.append(live_rss_mib())
        assert live_models() == []
    warmed = readings[RSS_WARMUP_RUNS:]
    slope = statistics.linear_regression(range(len(warmed)), warmed).slope
    print(
        f"live RSS after each run (MiB): {[round(r, 1) for r in readings]}; over the {len(warmed)} warmed-up runs: "
        f"spread {max(warmed) - min(warmed):.2f} MiB, slope {slope:+.3f} MiB/run (limit {RSS_SLOPE_LIMIT_MIB} MiB/run)"
    )
    assert slope < RSS_SLOPE_LIMIT_MIB


def test_ctrl_c_cancels_the_cli_cleanly(tmp_path) -> None:
    """Ctrl-C in the middle of the LM phase, sent once the child's progress shows that phase running."""
    env = {k: v for k, v in os.environ.items() if k != "MAX_CUDA_VRAM"} | {"OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        interruptible_python(
            "import sys; from acestep_core.cli import main; sys.exit(main())",
            *("generate", "--duration", "600", "--max-duration", "600", "--vram", "24", "--steps", "50"),
            *("--out", str(tmp_path)),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stderr is not None
    said = wait_until_said(process, process.stderr, LM_PHASE_STARTED)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, (said + stderr).decode(errors="replace")[-2000:]
    assert b"generation cancelled" in stderr
    assert list(tmp_path.glob("*.wav")) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_memory_returns_to_baseline_on_the_gpu(tmp_path) -> None:
    request = GenerationRequest(duration_s=10, batch_size=1, lm="on")
    generate(request, out_dir=tmp_path / "warm", steps=1, progress=False)
    baseline = torch.cuda.memory_allocated()
    for index in range(3):
        generate(request, out_dir=tmp_path / str(index), steps=1, progress=False)
    assert torch.cuda.memory_allocated() - baseline < 16 * 2**20
