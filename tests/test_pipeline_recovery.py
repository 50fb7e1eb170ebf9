"""Recover instead of crashing: an out-of-memory error inside any phase frees it, takes the ladder's next
rung for it and retries once, recorded in the run's decisions and the correction store; a second one stops
the run with one message and nothing written. On a CPU the error is injected through the phase runner's
fault hook. A run whose phases an allocator measured records them for the device's next plans."""

from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path
from typing import Any, ClassVar

import pytest

torch = pytest.importorskip("torch")

from acestep_core import GenerationRequest, Overrides, resolve  # noqa: E402
from acestep_core.optimize import corrections  # noqa: E402
from acestep_core.runtime.pipeline import GenerationOutOfMemoryError, generate  # noqa: E402
from acestep_core.runtime.pipeline.session import PeakMemory, RunSession  # noqa: E402
from acestep_core.types import DetectOptions  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
EIGHT_GB = DetectOptions(vram_gb="8", environ={})
INJECTED = "CUDA out of memory. Tried to allocate 2.00 GiB (injected by the test's fault hook)"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    environ = {"ACESTEP_CORE_CACHE_DIR": str(tmp_path / "cache")}
    monkeypatch.setenv("ACESTEP_CORE_CACHE_DIR", environ["ACESTEP_CORE_CACHE_DIR"])
    return environ


class Builds:
    """Every component the runner builds, weakly (the pipeline's one building place, wrapped), and whether the
    one built before was still alive when the same component was built again."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, weakref.ref[Any]]] = []
        self.alive_when_rebuilt: list[bool] = []


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Builds:
    builds = Builds()
    real = RunSession.component

    def component(self: RunSession, name: str, build: Any) -> Any:
        def recorded() -> Any:
            earlier = [ref for component, ref in builds.seen if component == name]
            if earlier:
                gc.collect()
                builds.alive_when_rebuilt.append(earlier[-1]() is not None)
            model = build()
            builds.seen.append((name, weakref.ref(model)))
            return model

        return real(self, name, recorded)

    monkeypatch.setattr(RunSession, "component", component)
    return builds


def stored(environ: dict[str, str]) -> list[dict[str, Any]]:
    data = json.loads(corrections.store_path(environ).read_text())
    return [row for device in data["devices"].values() for row in device["observations"]]


@pytest.mark.parametrize("phase", ["lm", "text_encoder", "dit", "vae"])
def test_an_out_of_memory_error_in_any_phase_is_recovered_once(
    phase: str, tmp_path: Path, store: dict[str, str], built: Builds
) -> None:
    calls: list[tuple[str, int]] = []

    def fault(name: str, attempt: int) -> None:
        calls.append((name, attempt))
        if name == phase and attempt == 0:
            raise torch.OutOfMemoryError(INJECTED)

    request = GenerationRequest(duration_s=10, batch_size=2, lm="on" if phase == "lm" else "off")
    result = generate(request, out_dir=tmp_path / "out", detect_options=EIGHT_GB, steps=1, progress=False, fault=fault)
    assert (phase, 0) in calls and (phase, 1) in calls
    assert [name for name, _ in built.seen].count(phase) == 2
    assert built.alive_when_rebuilt == [False], "what the failed attempt built was freed before the retry built"
    assert len(result.recoveries) == 1
    recovery = result.recoveries[0]
    assert recovery["phase"] == phase and recovery["error"] == INJECTED and recovery["retry"] == "ran"
    assert recovery["rungs"] and recovery["plan_changes"]
    assert recovery["predicted_after_gib"] < recovery["predicted_before_gib"]
    assert not any(r["name"].startswith(("lm=off", "duration=")) for r in recovery["rungs"])
    decisions = result.to_dict()["decisions"]
    assert any(line.startswith(f"recovery: the {phase} phase ran out of device memory") for line in decisions)
    report = next(p for p in result.phases if p.name == phase)
    assert report.details["attempt"] == "retried after running out of device memory"
    assert len(result.clips) == int(recovery["plan_changes"].get("ladder.batch_size", 2))
    failures = [row for row in stored(store) if row["out_of_memory"]]
    assert len(failures) == 1 and failures[0]["phase"] == phase and failures[0]["source"] == "recovery"
    assert failures[0]["note"] == "retried with " + ", ".join(r["name"] for r in recovery["rungs"])


def test_a_user_named_lm_is_never_changed_by_a_recovery(tmp_path: Path, store: dict[str, str]) -> None:
    def fault(name: str, attempt: int) -> None:
        if name == "lm" and attempt == 0:
            raise torch.OutOfMemoryError(INJECTED)

    request = GenerationRequest(duration_s=10, batch_size=1, lm_model="0.6B", lm="on")
    given = {"ACESTEP_CORE_CACHE_DIR": str(tmp_path / "given")}  # generate(environ=) is where the run records
    result = generate(
        request, out_dir=tmp_path / "out", detect_options=EIGHT_GB, steps=1, progress=False, fault=fault, environ=given
    )
    assert result.recoveries and not any(r["name"].startswith("lm=") for r in result.recoveries[0]["rungs"])
    assert "ladder.lm_model" not in result.recoveries[0]["plan_changes"]
    assert [row["phase"] for row in stored(given)] == ["lm"] and not corrections.store_path(store).exists()


def test_a_second_out_of_memory_error_stops_with_one_message_and_nothing_written(
    tmp_path: Path, store: dict[str, str]
) -> None:
    attempts: list[int] = []

    def fault(name: str, attempt: int) -> None:
        if name == "dit":
            attempts.append(attempt)
            raise torch.OutOfMemoryError(INJECTED)

    out = tmp_path / "out"
    with pytest.raises(GenerationOutOfMemoryError) as caught:
        generate(
            GenerationRequest(duration_s=10, batch_size=1, lm="off"),
            out_dir=out,
            detect_options=EIGHT_GB,
            steps=1,
            progress=False,
            fault=fault,
        )
    assert attempts == [0, 1], "retried once, not more"
    message = str(caught.value)
    assert message.startswith("the dit phase ran out of device memory") and "nothing was written" in message
    assert "\n" not in message
    assert not out.exists(), "no folder, no WAV: nothing half-written"
    assert len(caught.value.recoveries) == 1 and caught.value.recoveries[0]["retry"].startswith("out of device memory")
    failures = [row for row in stored(store) if row["out_of_memory"]]
    assert [row["phase"] for row in failures] == ["dit", "dit"], "both errors recorded"
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o).__name__ == "AceStepDiT"], "models released"


def test_an_error_that_is_not_out_of_memory_is_not_retried(tmp_path: Path, store: dict[str, str]) -> None:
    attempts: list[int] = []

    def fault(name: str, attempt: int) -> None:
        if name == "vae":
            attempts.append(attempt)
            raise RuntimeError("a bug, not memory")

    with pytest.raises(RuntimeError, match="a bug, not memory"):
        generate(
            GenerationRequest(duration_s=10, batch_size=1, lm="off"),
            out_dir=tmp_path / "out",
            detect_options=EIGHT_GB,
            steps=1,
            progress=False,
            fault=fault,
        )
    assert attempts == [0]


class AllocatorStandIn(PeakMemory):
    """Reports fixed allocator peaks on the CPU, as ``max_memory_allocated`` / ``max_memory_reserved`` would."""

    ALLOCATED: ClassVar[dict[str, int]] = {"text_encoder": 1_400_000_000, "dit": 6_500_000_000, "vae": 7_500_000_000}
    entered: ClassVar[list[str]] = []

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        phase = next(p for p in ("text_encoder", "dit", "vae") if p not in self.entered)
        self.entered.append(phase)
        self.peak = self.ALLOCATED[phase]
        self.reserved_peak = round(self.peak * 1.25)
        self.measure = "torch.cuda.max_memory_allocated (test stand-in)"


def test_a_measured_run_is_recorded_and_corrects_the_next_plan(tmp_path: Path, store: dict[str, str]) -> None:
    AllocatorStandIn.entered = []
    request = GenerationRequest(duration_s=10, batch_size=1, lm="off")
    # a plan with no device-memory savings, so that the CPU runs it as planned (same families as the plan's)
    plain = Overrides(
        plan={
            **{f"offload.{c}": "none" for c in ("lm", "text_encoder", "dit", "vae")},
            **{f"quantization.{c}": "none" for c in ("lm", "text_encoder", "dit")},
        }
    )
    options = DetectOptions(vram_gb="24", environ={})
    before = resolve(request, detect_options=options, overrides=plain, environ=store)
    result = generate(
        resolution=before,
        out_dir=tmp_path / "out",
        steps=1,
        progress=False,
        memory_probe=AllocatorStandIn,
        environ=store,
    )
    assert AllocatorStandIn.entered == ["text_encoder", "dit", "vae"], "the stand-in measured every phase"
    assert [p.reserved_peak_bytes for p in result.phases] == [
        round(v * 1.25) for v in AllocatorStandIn.ALLOCATED.values()
    ]
    rows = stored(store)
    assert [row["phase"] for row in rows] == ["text_encoder", "dit", "vae"]
    assert len({row["run_id"] for row in rows}) == 1 and not any(row["out_of_memory"] for row in rows)
    for row in rows:
        # own peak: the measured one less the weights of what stayed on the device (the earlier phases')
        assert row["reserved_ratio"] == 1.25 and row["measured_own_bytes"] <= AllocatorStandIn.ALLOCATED[row["phase"]]
    assert rows[0]["measured_own_bytes"] == AllocatorStandIn.ALLOCATED["text_encoder"]  # nothing else loaded yet
    after = resolve(request, detect_options=options, overrides=plain, environ=store)
    assert len(after.reading.observations) == 3 and "memory.corrections" not in before.plan
    setting = after.plan["memory.corrections"]
    assert setting.value == {"text_encoder": 1, "dit": 1, "vae": 1}
    assert setting.reason.startswith("corrected from 1 runs on this device")
