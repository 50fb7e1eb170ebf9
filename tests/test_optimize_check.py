"""Every plan is checked before anything loads: the user's settings re-predicted, refused over budget with
the numbers unless forced, on every entry point (API, CLI plan/generate, pipeline)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from acestep_core import (
    DetectOptions,
    DeviceMemory,
    GenerationRequest,
    MemoryReading,
    Overrides,
    ResolutionError,
    resolve,
)
from acestep_core.cli import main
from acestep_core.optimize.plan import check_resolution
from acestep_core.types import OptimizationPlan, Setting

EIGHT_GB = DetectOptions(vram_gb="8", environ={})
FULL_DECODE = Overrides(plan={"vae.decode": "full"})


def test_the_users_full_decode_on_an_8_gb_card_is_refused_with_the_numbers() -> None:
    resolution = resolve(GenerationRequest(duration_s=240), detect_options=EIGHT_GB, overrides=FULL_DECODE)
    refused = resolution.plan.value("ladder.refused")
    assert refused, "an 8 GB card decoding 240 s whole must not run"
    assert refused["phase"] == "vae" and refused["budget_gib"] == pytest.approx(6.71, abs=0.01)
    assert (
        refused["predicted_gib"] > 15
        and refused["shortfall_bytes"] == refused["predicted_bytes"] - refused["budget_bytes"]
    )
    peak, budget = check_resolution(resolution)
    assert (peak, budget) == (refused["predicted_bytes"], refused["budget_bytes"])
    assert resolution.plan.value("memory.predicted_peak_gib") == refused["predicted_gib"]  # re-predicted
    assert any("refused" in w and "vae.decode='full'" in w and "budget" in w for w in resolution.warnings)
    assert "memory.forced" not in resolution.plan


def test_a_forced_plan_is_kept_recorded_and_warned() -> None:
    resolution = resolve(GenerationRequest(duration_s=240), detect_options=EIGHT_GB, overrides=FULL_DECODE, force=True)
    assert resolution.plan.value("ladder.refused") is False
    forced = resolution.plan.value("memory.forced")
    assert forced["phase"] == "vae" and forced["shortfall_gib"] > 8
    assert any("forced by the user" in w for w in resolution.warnings)
    assert any(o.key == "force" and o.value is True for o in resolution.overrides)
    same = resolve(
        GenerationRequest(duration_s=240),
        detect_options=EIGHT_GB,
        overrides=dataclasses.replace(FULL_DECODE, force=True),
    )
    assert same.plan.value("memory.forced") == forced


def test_user_settings_that_fit_are_re_predicted_and_pass() -> None:
    planned = resolve(GenerationRequest(duration_s=60), detect_options=EIGHT_GB)
    user = resolve(
        GenerationRequest(duration_s=60), detect_options=EIGHT_GB, overrides=Overrides(plan={"offload.dit": "group"})
    )
    assert (
        user.plan.value("ladder.refused") is False
        and "user's settings" in user.plan["memory.predicted_peak_gib"].reason
    )
    assert user.plan.value("memory.predicted_peak_gib") <= planned.plan.value("memory.budget_gib")


@pytest.mark.parametrize(("extra", "code"), [((), 1), (("--force",), 0)])
def test_plan_exits_1_for_a_refused_plan_and_0_when_forced(capsys: pytest.CaptureFixture[str], extra, code) -> None:
    argv = ["plan", "--vram", "8", "--duration", "240", "--set", "vae.decode=full", "--json", *extra]
    assert main(argv) == code
    data = json.loads(capsys.readouterr().out)
    plan = {s["key"]: s["value"] for s in data["plan"]["settings"]}
    assert bool(plan["ladder.refused"]) == (code == 1) and ("memory.forced" in plan) == (code == 0)
    assert main(["plan", "--vram", "8", "--duration", "240"]) == 0  # the tier's own plan fits
    capsys.readouterr()


torch = pytest.importorskip("torch")


class ModelBuilt(Exception):  # noqa: N818 - the event the guard must prevent
    """Raised by the stand-in for the one place the pipeline builds or loads a component."""


def test_the_pipeline_loads_nothing_for_a_refused_plan(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Every phase builds its component through ``RunSession.component``: the stand-in raises the moment
    anything would be built, so a guard that lets a refused plan through fails here in seconds."""
    from acestep_core.runtime.pipeline import generate, run
    from acestep_core.runtime.pipeline.session import RunSession

    built: list[str] = []

    def no_building(self: RunSession, name: str, build: object) -> None:
        built.append(name)
        raise ModelBuilt(name)

    monkeypatch.setattr(RunSession, "component", no_building)
    fine = resolve(GenerationRequest(duration_s=240, lm="off"), detect_options=EIGHT_GB)
    with pytest.raises(ModelBuilt):  # the stand-in is reached: a plan that fits builds its first component
        run(fine, out_dir=tmp_path / "fits", progress=False)
    assert built == ["text_encoder"]
    built.clear()
    with pytest.raises(ResolutionError, match="refused"):
        generate(
            GenerationRequest(duration_s=240, lm="off"),
            out_dir=tmp_path / "refused",
            detect_options=EIGHT_GB,
            overrides=FULL_DECODE,
            progress=False,
        )
    # a plan edited after resolve() is checked again before anything loads
    settings = {s.key: s for s in fine.plan}
    settings["vae.decode"] = Setting("vae.decode", "full", "edited by a caller")
    edited = dataclasses.replace(fine, plan=OptimizationPlan(tuple(settings.values())))
    with pytest.raises(ResolutionError, match="refused before loading: the vae phase"):
        run(edited, out_dir=tmp_path / "edited", progress=False)
    assert built == [] and not (tmp_path / "refused").exists() and not (tmp_path / "edited").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_forced_plan_runs(tmp_path) -> None:
    from acestep_core.runtime.pipeline import generate

    # a 2 GB card cannot hold the DiT's weights: refused whatever the ladder does, run when forced
    two = DetectOptions(vram_gb="2", environ={})
    request = GenerationRequest(duration_s=10, lm="off")
    assert resolve(request, detect_options=two).plan.value("ladder.refused")
    result = generate(request, out_dir=tmp_path, detect_options=two, force=True, progress=False, steps=2)
    assert len(result.clips) == 1 and result.resolution.plan.value("memory.forced")["budget_gib"] < 1


PINNED = Overrides(
    plan={
        "vae.decode": "full",
        **{f"offload.{c}": "none" for c in ("lm", "text_encoder", "dit", "vae")},
        **{f"quantization.{c}": "none" for c in ("lm", "text_encoder", "dit")},
    }
)
"""A plan the user fixed: nothing left for the ladder to change, so the final check decides alone."""


def _device_with_budget(usable: int) -> MemoryReading:
    from acestep_core.vocabulary import CUDA_CONTEXT_BYTES, SAFETY_MARGIN_BYTES

    total = usable + CUDA_CONTEXT_BYTES + SAFETY_MARGIN_BYTES
    device = DeviceMemory("cuda", "test card", 0, "GPU-test", total, total, sources={"total_bytes": "test"})
    return MemoryReading(device=device, visible=(device,))


@pytest.mark.parametrize("over", [0.01, 0.05, 0.10])
def test_a_plan_1_5_or_10_percent_over_budget_is_refused_and_the_same_plan_under_budget_is_not(over: float) -> None:
    request = GenerationRequest(duration_s=60, batch_size=1, lm="off")
    peak, _ = check_resolution(resolve(request, overrides=PINNED, reading=_device_with_budget(12 * 2**30)))
    peak, _ = check_resolution(resolve(request, overrides=PINNED, reading=_device_with_budget(peak)))  # its tier's
    over_budget = resolve(request, overrides=PINNED, reading=_device_with_budget(round(peak / (1 + over))))
    under_budget = resolve(request, overrides=PINNED, reading=_device_with_budget(round(peak * 1.001)))
    assert over_budget.adjusted == under_budget.adjusted  # (the tier may differ: the plan is the user's)
    for resolution in (over_budget, under_budget):
        assert check_resolution(resolution)[0] == peak, "the same plan, predicted the same"
    refused = over_budget.plan.value("ladder.refused")
    assert refused and refused["predicted_bytes"] == peak
    assert refused["shortfall_bytes"] == peak - round(peak / (1 + over))
    assert under_budget.plan.value("ladder.refused") is False
    from acestep_core.runtime.pipeline.run import check_before_loading

    with pytest.raises(ResolutionError, match="refused"):
        check_before_loading(over_budget)
    check_before_loading(under_budget)
