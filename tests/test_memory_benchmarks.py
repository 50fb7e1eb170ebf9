"""The memory benchmarks and the GPU script: ``bench_feedback`` replays shipped readings through the correction
store's rule, ``gpu_memory.py --dry-run`` runs its whole flow on a CPU and writes readings that
``memory_heldout`` can judge, and on a GPU a run records its measured phases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acestep_core.optimize.readings import GPU_MEMORY_FORMAT, calibrate_rows, gpu_memory_rows_from, optimize_rows

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def test_the_feedback_benchmark_replays_shipped_readings() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_feedback.py"), "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"same request", "next shape", "reserved"}
    shipped = [r for r in [*calibrate_rows(), *optimize_rows()] if r.kind == "allocated"]
    for sequence in data["same request"]["detail"] + data["next shape"]["detail"]:
        first = sequence["runs"][0]
        row = next(r for r in shipped if r.reading == first["reading"])
        # run 1 is the memory model alone: its error is the reading's held-out error
        assert first["error_pct"] == round(100 * row.error, 2)
    for sequence in data["same request"]["detail"]:
        repeats = [r for r in shipped if r.config_id == sequence["runs"][0]["shape"] and r.bound == "peak"]
        if len({r.measured_bytes for r in repeats}) == 1:  # the same peak to the byte: learnt exactly
            assert [r["error_pct"] for r in sequence["runs"][1:]] == [0.0, 0.0]
    text = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_feedback.py")], capture_output=True, text=True, timeout=120
    ).stdout
    assert "goal: within 5% by the third run:" in text


def test_gpu_memory_readings_parse_into_held_out_rows() -> None:
    """The parser on a hand-written file (figures invented to exercise it, not readings)."""
    phase = {
        "tier": "tier4",
        "lm": None,
        "duration_s": 240,
        "batch": 2,
        "phase": "vae",
        "choices": "decode=tiled",
        "attempt": "plan",
        "predicted_allocated_bytes": 1000,
        "predicted_reserved_bytes": 1100,
    }
    data = {
        "format": GPU_MEMORY_FORMAT,
        "phases": [
            {**phase, "ran": True, "allocated_bytes": 1010, "reserved_bytes": 1200},
            {
                **phase,
                "batch": 4,
                "ran": False,
                "allocated_bytes": 900,
                "reserved_bytes": 950,
                "oom": (
                    "CUDA out of memory. Tried to allocate 1.00 GiB. Of the allocated memory 5.00 GiB is allocated by "
                    "PyTorch, and 0.50 GiB is reserved by PyTorch but unallocated"
                ),
            },
            {**phase, "allocated_bytes": None, "reserved_bytes": None},  # a dry run's: not a reading
        ],
    }
    rows = gpu_memory_rows_from(data, "gpu_memory.json")
    assert [(r.kind, r.bound, r.split) for r in rows] == [
        ("allocated", "peak", "heldout"),
        ("reserved", "peak", "heldout"),
        ("allocated", "at_least", "heldout"),
        ("reserved", "at_least", "heldout"),
    ]
    assert rows[0].error == pytest.approx(1000 / 1010 - 1) and rows[0].config_id.startswith("vae no LM 240 s ×2")
    with pytest.raises(ValueError, match="not 'acestep-core gpu_memory readings"):
        gpu_memory_rows_from({"format": "something else"}, "x.json")


@pytest.mark.usefixtures("one_torch_thread")
def test_the_gpu_memory_script_dry_run_passes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "gpu_memory.py"),
            str(out),
            "--dry-run",
            "--tiers",
            "tier4",
            "--no-bisection",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "gpu_memory.json").read_text())
    assert report["dry_run"] and [r["tier"] for r in report["runs"]] == ["tier4", "tier4"]
    for row in report["runs"]:
        assert {p["phase"] for p in row["phases"]} >= {"text_encoder", "dit", "vae"}
        for phase in row["phases"]:
            assert phase["predicted_reserved_bytes"] >= phase["predicted_allocated_bytes"] > 0
    cases = {r["case"]: r for r in report["recoveries"]}
    assert set(cases) == {"injected in the dit phase", "real: the vae decoded whole"}
    assert all(r["recovered"] for r in cases.values())
    assert cases["injected in the dit phase"]["recoveries"][0]["phase"] == "dit"
    assert cases["real: the vae decoded whole"]["recoveries"][0]["rungs"][0]["name"] == "vae.tiled"
    readings = json.loads((out / "heldout-readings.json").read_text())
    assert readings["format"] == GPU_MEMORY_FORMAT and readings["phases"]
    assert gpu_memory_rows_from(readings, "heldout-readings.json") == [], "a dry run measures nothing"
    assert "recovery (real: the vae decoded whole): recovered" in result.stdout


@pytest.mark.gpu
def test_a_run_on_the_gpu_records_its_allocator_peaks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from acestep_core import GenerationRequest
    from acestep_core.optimize import corrections
    from acestep_core.runtime.pipeline import generate

    environ = {"ACESTEP_CORE_CACHE_DIR": str(tmp_path / "cache")}
    result = generate(
        GenerationRequest(duration_s=10, batch_size=1, lm="on"),
        out_dir=tmp_path / "out",
        steps=1,
        progress=False,
        environ=environ,
    )
    assert all(p.reserved_peak_bytes and p.reserved_peak_bytes >= (p.peak_bytes or 0) for p in result.phases)
    data = json.loads(corrections.store_path(environ).read_text())
    rows = [o for device in data["devices"].values() for o in device["observations"]]
    assert [o["phase"] for o in rows] == [p.name for p in result.phases]
    assert all(o["reserved_ratio"] and o["reserved_ratio"] >= 1 for o in rows)
