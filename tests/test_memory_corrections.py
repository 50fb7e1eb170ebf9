"""The plan learns from runs: what runs measured on a device is kept in the cache folder, bounded and
atomic, read with the rules of every input, and the next plan on that device is corrected from it (never
below what was measured for a shape), shown in the plan and by ``plan --explain-memory``. Torch-free."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from acestep_core import DetectOptions, GenerationRequest, Overrides, resolve
from acestep_core.cli import main
from acestep_core.optimize import corrections
from acestep_core.optimize.memory import RunShape, predict
from acestep_core.optimize.plan import check_resolution, choices_from_plan, planned_run
from acestep_core.types import DeviceMemory, MemoryObservation, Resolution

SIXTEEN = "16"
REQUEST = GenerationRequest(duration_s=120, batch_size=2, lm_model="0.6B", lm="on")


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A cache folder of the test's own (the session's is shared by every test)."""
    environ = {"ACESTEP_CORE_CACHE_DIR": str(tmp_path / "cache")}
    monkeypatch.setenv("ACESTEP_CORE_CACHE_DIR", environ["ACESTEP_CORE_CACHE_DIR"])
    return environ


def plan_for(environ: dict[str, str], request: GenerationRequest = REQUEST, **kwargs: object) -> Resolution:
    return resolve(request, detect_options=DetectOptions(vram_gb=SIXTEEN, environ={}), environ=environ, **kwargs)


def measured_runs(resolution: Resolution, factor: float, runs: int, *, ratio: float = 1.15) -> list[MemoryObservation]:
    """``runs`` runs of the resolution's own plan whose phases measured ``factor`` × the model's own peak."""
    run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
    choices = choices_from_plan(resolution.plan)
    observations = []
    for index in range(runs):
        for peak in predict(run, choices).phases:
            measured = round(peak.own_model_bytes * factor)
            observations.append(
                corrections.observe(
                    run,
                    choices,
                    peak.phase,
                    allocated_bytes=measured,
                    reserved_bytes=round(measured * ratio),
                    run_id=f"run-{index}",
                )
            )
    return observations


def test_the_next_plan_on_the_device_is_corrected_from_its_runs(store: dict[str, str]) -> None:
    before = plan_for(store)
    assert "memory.corrections" not in before.plan and not before.reading.observations
    problem = corrections.record(measured_runs(before, 1.10, 3), before.reading.device, store)
    assert problem is None
    after = plan_for(store)
    assert len(after.reading.observations) == 12, "three runs of four phases, attached to the reading"
    setting = after.plan["memory.corrections"]
    assert setting.reason.startswith("corrected from 3 runs on this device")
    assert setting.value == {"lm": 3, "text_encoder": 3, "dit": 3, "vae": 3}
    run = planned_run(after.plan, after.adjusted, after.tier)
    choices = choices_from_plan(after.plan)
    plain = {p.phase: p for p in predict(run, choices).phases}
    corrected = predict(run, choices, corrections.corrections_for(after.reading))
    for peak in corrected.phases:
        model = plain[peak.phase]
        assert peak.correction is not None and peak.correction.factor == pytest.approx(1.10, abs=1e-3)
        assert peak.allocated_bytes == model.others_bytes + round(model.own_model_bytes * peak.correction.factor)
        assert peak.peak_bytes == round(peak.allocated_bytes * 1.15)  # this device's reserved ratio, not the model's
    assert after.plan.value("memory.predicted_peak_gib") > before.plan.value("memory.predicted_peak_gib")
    assert "earlier run(s) recorded on this device" in next(
        d.summary for d in after.decisions if d.hook == "detect_memory"
    )


def test_a_correction_never_shrinks_a_prediction_below_what_was_measured_for_that_shape(
    store: dict[str, str],
) -> None:
    base = plan_for(store)
    run = planned_run(base.plan, base.adjusted, base.tier)
    choices = choices_from_plan(base.plan)
    # two runs of a slightly different shape in the same bucket measured 20 % under the model ...
    other = dataclasses.replace(run, duration_s=run.duration_s - 5)
    low = [
        corrections.observe(
            other, choices, "dit", allocated_bytes=round(p.own_model_bytes * 0.8), reserved_bytes=None, run_id=f"o{i}"
        )
        for i in range(2)
        for p in predict(other, choices).phases
        if p.phase == "dit"
    ]
    # ... and this very shape measured 5 % under it
    dit = next(p for p in predict(run, choices).phases if p.phase == "dit")
    exact = corrections.observe(
        run, choices, "dit", allocated_bytes=round(dit.own_model_bytes * 0.95), reserved_bytes=None, run_id="x"
    )
    corrected = predict(run, choices, corrections.Corrections([*low, exact]))
    peak = next(p for p in corrected.phases if p.phase == "dit")
    assert peak.correction is not None and peak.correction.factor == pytest.approx((0.8 + 0.8 + 0.95) / 3, abs=1e-3)
    assert peak.correction.own_bytes == round(dit.own_model_bytes * 0.95), "raised to what this shape measured"
    assert "measured for this shape" in peak.correction.evidence
    elsewhere = predict(other, choices, corrections.Corrections([*low, exact]))
    assert next(p for p in elsewhere.phases if p.phase == "dit").allocated_bytes < dit.model_allocated_bytes


def test_an_out_of_memory_error_at_a_shape_makes_the_next_plan_step_down(store: dict[str, str]) -> None:
    pinned = Overrides(plan={"vae.decode": "full", "offload.vae": "none"})
    request = GenerationRequest(duration_s=60, batch_size=1, lm="off")
    before = plan_for(store, request)
    assert not before.plan.value("ladder.refused")
    _, usable = check_resolution(before)
    assert usable is not None
    run = planned_run(before.plan, before.adjusted, before.tier)
    choices = choices_from_plan(before.plan)
    failure = corrections.observe(
        run, choices, "vae", allocated_bytes=None, reserved_bytes=usable + 1, out_of_memory=True, run_id="oom"
    )
    corrections.record([failure], before.reading.device, store)
    after = plan_for(store, request)
    assert after.plan.value("ladder.rungs"), "the shape that ran out of memory is no longer predicted to fit"
    assert check_resolution(after)[0] <= usable
    refused = plan_for(store, request, overrides=pinned)
    if before.plan.value("vae.decode") == "full":  # the same plan, pinned by the user: refused now
        assert refused.plan.value("ladder.refused")


def test_ratios_from_another_memory_model_are_not_used_but_measured_floors_are(store: dict[str, str]) -> None:
    base = plan_for(store)
    old = [dataclasses.replace(o, model="an older model") for o in measured_runs(base, 0.5, 2)]
    run = planned_run(base.plan, base.adjusted, base.tier)
    choices = choices_from_plan(base.plan)
    corrected = predict(run, choices, corrections.Corrections(old))
    for peak in corrected.phases:
        assert peak.correction is not None and peak.correction.factor is None
        assert peak.correction.own_bytes == peak.own_model_bytes, "a floor below the model changes nothing"


def test_the_explanation_shows_prediction_correction_and_evidence(
    store: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = plan_for(store)
    corrections.record(measured_runs(base, 1.2, 2), base.reading.device, store)
    argv = ["plan", "--vram", SIXTEEN, "--duration", "120", "--batch", "2", "--lm", "0.6B", "--explain-memory"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {row["phase"]: row for row in data["memory_explanation"]}
    assert set(rows) == {"lm", "text_encoder", "dit", "vae"}
    for row in rows.values():
        assert row["reserved_bytes"] > row["model_reserved_bytes"]
        assert row["correction"]["runs"] == 2 and row["correction"]["factor"] == pytest.approx(1.2, abs=1e-3)
        assert "× 1.200 from 2 run(s) in this bucket" in row["correction"]["evidence"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "memory     per phase" in text and "corrected from 2 run(s) on this device" in text
    assert "corrected from 2 runs on this device" in text  # the plan's memory.corrections line


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"format": "acestep-core memory corrections, version 1", "devices": []}',
        "[" * 50_000 + "]" * 50_000,
        "HOSTILE-BYTES",
        "HOSTILE-NAN",
        "HOSTILE-LONG",
        "HOSTILE-FIELD",
        "TOO-LARGE",
    ],
    ids=["truncated", "list", "devices-list", "deep", "negative-bytes", "nan", "long-text", "unknown-field", "large"],
)
def test_a_corrupt_or_hostile_file_is_ignored_with_one_warning(store: dict[str, str], content: str) -> None:
    base = plan_for(store)
    corrections.record(measured_runs(base, 1.1, 1), base.reading.device, store)
    path = corrections.store_path(store)
    good = json.loads(path.read_text())
    row = good["devices"][next(iter(good["devices"]))]["observations"][0]
    hostile = {
        "HOSTILE-BYTES": {**row, "measured_own_bytes": -5},
        "HOSTILE-NAN": {**row, "reserved_ratio": float("nan")},
        "HOSTILE-LONG": {**row, "family": "x" * 100_000},
        "HOSTILE-FIELD": {**row, "__class__": "os.system"},
    }
    if content in hostile:
        good["devices"][next(iter(good["devices"]))]["observations"][0] = hostile[content]
        content = json.dumps(good)
    elif content == "TOO-LARGE":
        content = json.dumps(good) + " " * corrections.STORE_LIMIT
    path.write_text(content)
    resolution = plan_for(store)
    ignored = [w for w in resolution.warnings if "memory corrections" in w]
    assert len(ignored) == 1 and str(path) in ignored[0] and "ignored" in ignored[0]
    assert not resolution.reading.observations and "memory.corrections" not in resolution.plan
    assert resolution.plan.value("memory.predicted_peak_gib") == base.plan.value("memory.predicted_peak_gib")
    # the next recording replaces the bad file with a good one
    assert corrections.record(measured_runs(base, 1.1, 1), base.reading.device, store) is None
    assert len(plan_for(store).reading.observations) == 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_the_file_never_hangs_a_plan(store: dict[str, str]) -> None:
    path = corrections.store_path(store)
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    code = (
        "from acestep_core import resolve, DetectOptions\n"
        f"r = resolve(detect_options=DetectOptions(vram_gb='16', environ={{}}), environ={store!r})\n"
        "print(sum('memory corrections' in w for w in r.warnings))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "1", result.stderr


def test_the_store_is_bounded_and_written_atomically(store: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    base = plan_for(store)
    device = base.reading.device
    for _ in range(10):
        assert corrections.record(measured_runs(base, 1.05, 10), device, store) is None
    path = corrections.store_path(store)
    data = json.loads(path.read_text())
    observations = data["devices"][corrections.device_key(device)]["observations"]
    per_key: dict[tuple[str, str], int] = {}
    for row in observations:
        per_key[(row["family"], row["bucket"])] = per_key.get((row["family"], row["bucket"]), 0) + 1
    assert max(per_key.values()) == corrections.MAX_OBSERVATIONS_PER_KEY
    assert len(observations) <= corrections.MAX_OBSERVATIONS_PER_DEVICE
    assert path.stat().st_size <= corrections.STORE_LIMIT
    many = [dataclasses.replace(device, uuid=f"GPU-{i}", simulated=False) for i in range(corrections.MAX_DEVICES + 3)]
    for other in many:
        corrections.record(measured_runs(base, 1.0, 1), other, store)
    assert len(json.loads(path.read_text())["devices"]) == corrections.MAX_DEVICES
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")], "no temporary file left behind"
    # a replace that fails (a full disk, a read-only folder): nothing recorded, the file stays whole
    before = path.read_bytes()

    def refuse(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(corrections.os, "replace", refuse)
    problem = corrections.record(measured_runs(base, 2.0, 1), device, store)
    assert problem == f"not recorded in {path}: No space left on device"
    assert path.read_bytes() == before
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_device_keys_are_uuid_and_driver_or_the_simulation() -> None:
    real = DeviceMemory(
        "cuda", "NVIDIA H100", 0, "GPU-ca2e940d", 80 * 2**30, sources={"driver": "NVIDIA driver 580.159.04"}
    )
    assert corrections.device_key(real) == "GPU-ca2e940d driver 580.159.04"
    assert corrections.device_key(dataclasses.replace(real, sources={})) == "GPU-ca2e940d driver unknown"
    simulated = dataclasses.replace(real, uuid=None, simulated=True)
    assert corrections.device_key(simulated) == f"simulated cuda {80 * 2**30}"
    assert corrections.device_key(DeviceMemory("cpu", "CPU")) is None


def test_no_cache_records_and_reads_nothing(store: dict[str, str]) -> None:
    base = plan_for(store)
    off = {**store, "ACESTEP_CORE_NO_CACHE": "1"}
    assert corrections.record(measured_runs(base, 1.1, 1), base.reading.device, off) == (
        "not recorded: ACESTEP_CORE_NO_CACHE is set"
    )
    assert not corrections.store_path(store).exists()


def test_deciding_with_a_store_imports_no_torch(store: dict[str, str]) -> None:
    base = plan_for(store)
    corrections.record(measured_runs(base, 1.1, 2), base.reading.device, store)
    code = (
        "import sys\n"
        "from acestep_core import resolve, DetectOptions, GenerationRequest\n"
        "r = resolve(GenerationRequest(duration_s=120, batch_size=2, lm_model='0.6B', lm='on'), "
        f"detect_options=DetectOptions(vram_gb='16', environ={{}}), environ={store!r})\n"
        "assert 'memory.corrections' in r.plan, r.warnings\n"
        "bad = [m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_nearest_bucket_stands_in_when_the_bucket_has_no_run() -> None:
    run = RunShape(240, 2, "0.6B")
    choices = choices_from_plan({})
    elsewhere = RunShape(480, 4, "0.6B")
    observed = [
        corrections.observe(
            elsewhere,
            choices,
            p.phase,
            allocated_bytes=round(p.own_model_bytes * 1.3),
            reserved_bytes=None,
            run_id="far",
        )
        for p in predict(elsewhere, choices).phases
    ]
    peak = next(p for p in predict(run, choices, corrections.Corrections(observed)).phases if p.phase == "dit")
    assert peak.correction is not None and peak.correction.factor == pytest.approx(1.3, abs=1e-3)
    assert "the nearest bucket (×4 ≤480 s)" in peak.correction.evidence


def test_calibrate_feeds_the_same_store(store: dict[str, str], tmp_path: Path) -> None:
    """calibrate's trials (here the shipped H100 ones, replayed through a backend that returns their peaks)
    reach the store through the Calibrator's observe hook, and the next plan on that device uses them."""
    from acestep_core_tiers_default import default_table

    from acestep_core.optimize.readings import CALIBRATE_READINGS, readings
    from acestep_core.runtime.calibrate import CalibrationConfig, Calibrator, OutOfMemory, Trial
    from acestep_core.runtime.calibrate.search import observation_of

    trials = {
        (t["card_gb"], t["phase"], t["duration_s"], t["batch"]): t
        for t in readings(CALIBRATE_READINGS)["measurements"]
        if t["phase"] == "lm:1.7B"
    }

    class Replayed:
        kind = "replayed-h100"
        unit_bytes = 2**30

        def cap_bytes(self, card_gb: float) -> int:
            return next(t["cap_bytes"] for t in trials.values() if t["card_gb"] == card_gb)

        def run(self, trial: Trial) -> int:
            found = trials[(trial.card_gb, trial.phase, trial.duration_s, trial.batch)]
            if not found["fits"]:
                raise OutOfMemory(found["error"])
            return int(found["peak_bytes"])

        def environment(self) -> dict[str, object]:
            return {}

        def close(self) -> None:
            pass

    observed: list[MemoryObservation] = []
    config = CalibrationConfig(cards_gb=(8.0,), durations_s=(240, 600), batches=(1, 2, 4, 8), lm_sizes=("1.7B",))
    calibrator = Calibrator(
        Replayed(),  # type: ignore[arg-type]
        dataclasses.replace(config, measure_full_vae=False),
        tmp_path / "cal",
        base_table=default_table(),
        progress=False,
        observe=lambda m: observed.append(observation_of(m, None, "cal")),
    )
    for duration, batch in ((600, 1), (600, 2), (600, 4), (600, 8), (240, 8)):
        calibrator.measure(Trial(8.0, "lm:1.7B", duration, batch))
    assert len(observed) == 5 and [o.out_of_memory for o in observed] == [False, False, False, True, False]
    oom = observed[3]
    assert oom.measured_reserved_own_bytes == trials[(8.0, "lm:1.7B", 600, 8)]["cap_bytes"]
    h100 = DeviceMemory(
        "cuda",
        "NVIDIA H100 80GB HBM3",
        0,
        "GPU-ca2e940d",
        85520809984,
        85017493504,
        sources={"driver": "NVIDIA driver 580.159.04", "total_bytes": "test"},
    )
    assert corrections.record(observed, h100, store) is None
    plain = Overrides(plan={"quantization.lm": "none", "offload.lm": "none"})
    request = GenerationRequest(duration_s=600, batch_size=2, lm_model="1.7B", lm="on")
    from acestep_core.types import MemoryReading

    planned = resolve(request, overrides=plain, reading=MemoryReading(h100, (h100,)), environ=store)
    assert planned.plan.value("memory.corrections")["lm"] >= 1
    assert "lm 1.7B bf16 none" in planned.plan["memory.corrections"].reason


def test_a_dits_runs_correct_only_plans_for_the_same_variant(store: dict[str, str]) -> None:
    """base and sft hold turbo's weights but run twice its rows (CFG): a base run's DiT peak must not become
    turbo's floor or factor, nor the other way round. The DiT's family names its variant."""
    turbo = plan_for(store, dataclasses.replace(REQUEST, dit_model="turbo"))
    corrections.record(measured_runs(turbo, 1.30, 2), turbo.reading.device, store)
    again = plan_for(store, dataclasses.replace(REQUEST, dit_model="turbo"))
    base = plan_for(store, dataclasses.replace(REQUEST, dit_model="base"))
    assert again.plan.value("memory.corrections")["dit"] == 2
    assert "dit" not in base.plan.value("memory.corrections"), "turbo's runs say nothing of base's CFG rows"
    assert base.plan.value("memory.corrections")["vae"] == 2, "the components both plans share are corrected"
