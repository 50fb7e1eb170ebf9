"""Every plan is checked before anything loads: the user's settings re-predicted, refused over budget with
the numbers unless forced, on every entry point (API, CLI plan/generate, pipeline)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from acestep_core import DetectOptions, GenerationRequest, Overrides, resolve
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


def test_the_pipeline_loads_nothing_for_a_refused_plan(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from acestep_core import ResolutionError
    from acestep_core.runtime.pipeline import generate, run

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was built for a refused plan")

    for name in ("build_lm", "build_dit", "build_vae", "build_text_encoder"):
        monkeypatch.setattr(f"acestep_core.runtime.models.{name}", no_loading)
    with pytest.raises(ResolutionError, match="refused"):
        generate(
            GenerationRequest(duration_s=240, lm="off"),
            out_dir=tmp_path,
            detect_options=EIGHT_GB,
            overrides=FULL_DECODE,
            progress=False,
        )
    # a plan edited after resolve() is checked again before anything loads
    fine = resolve(GenerationRequest(duration_s=240, lm="off"), detect_options=EIGHT_GB)
    settings = {s.key: s for s in fine.plan}
    settings["vae.decode"] = Setting("vae.decode", "full", "edited by a caller")
    edited = dataclasses.replace(fine, plan=OptimizationPlan(tuple(settings.values())))
    with pytest.raises(ResolutionError, match="refused before loading: the vae phase"):
        run(edited, out_dir=tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.usefixtures("one_torch_thread")
def test_a_forced_plan_runs(tmp_path) -> None:
    from acestep_core.runtime.pipeline import generate

    # a 2 GB card cannot hold the DiT's weights: refused whatever the ladder does, run when forced
    two = DetectOptions(vram_gb="2", environ={})
    request = GenerationRequest(duration_s=10, lm="off")
    assert resolve(request, detect_options=two).plan.value("ladder.refused")
    result = generate(request, out_dir=tmp_path, detect_options=two, force=True, progress=False, steps=2)
    assert len(result.clips) == 1 and result.resolution.plan.value("memory.forced")["budget_gib"] < 1
