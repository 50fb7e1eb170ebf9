"""Degrade before refusing: every tier × a grid of requests ends in a plan that fits or a refusal
that names the shortfall; rungs are taken in order, each with its reason."""

from __future__ import annotations

import itertools
import re

import acestep_core_tiers_default
import pytest

from acestep_core import GIB, DetectOptions, GenerationRequest, Overrides, resolve
from acestep_core.optimize import Abilities, Choices, RunShape, device_budget, fit, predict
from acestep_core.optimize.plan import check_resolution

TABLE = acestep_core_tiers_default.default_table()
DURATIONS = (None, 30, 240, 600)
BATCHES = (1, 4, 8)
LMS = ("off", "0.6B", "4B")


def _sizes(tier) -> list[float]:
    low = max(tier.min_gb + 0.25, 2.0)
    return [low, tier.max_gb - 0.5] if tier.max_gb is not None else [low, 80.0]


@pytest.mark.parametrize("tier", TABLE.tiers, ids=lambda t: t.name)
def test_every_tier_and_request_fits_or_is_refused_with_the_shortfall(tier) -> None:
    for gib, duration, batch, lm in itertools.product(_sizes(tier), DURATIONS, BATCHES, LMS):
        request = GenerationRequest(
            duration_s=duration,
            batch_size=batch,
            lm="off" if lm == "off" else "on",
            lm_model=None if lm == "off" else lm,
        )
        resolution = resolve(request, detect_options=DetectOptions(vram_gb=f"{gib:g}", environ={}))
        assert resolution.tier.name == tier.name
        plan = resolution.plan
        predicted, budget = plan.value("memory.predicted_peak_gib"), plan.value("memory.budget_gib")
        refused = plan.value("ladder.refused")
        peak, budget_bytes = check_resolution(resolution)
        assert budget_bytes is not None and abs(budget_bytes / GIB - budget) < 0.01
        if refused:
            assert refused["shortfall_bytes"] == refused["predicted_bytes"] - refused["budget_bytes"] > 0
            assert refused["budget_bytes"] == budget_bytes
            assert any("refused" in w and "budget" in w for w in resolution.warnings)
        else:
            assert predicted <= budget
            assert peak <= budget_bytes, (gib, duration, batch, lm, peak / GIB, budget)


def test_a_tiny_card_is_refused_with_the_numbers() -> None:
    resolution = resolve(GenerationRequest(duration_s=60), detect_options=DetectOptions(vram_gb="2", environ={}))
    refused = resolution.plan.value("ladder.refused")
    assert refused and 0 < refused["budget_gib"] < refused["predicted_gib"]
    assert resolution.plan.value("ladder.duration_s") == 10  # it tried the shortest clip before refusing
    assert any("more than the" in w for w in resolution.warnings)


def test_a_card_with_no_room_says_so_and_climbs_no_rung() -> None:
    """1 GiB less the CUDA context and the margin is below zero: nothing can fit, so no rung is taken (each
    rung's reason would measure against a negative budget) and no sentence prints a negative figure."""
    plan = resolve(GenerationRequest(duration_s=60), detect_options=DetectOptions(vram_gb="1", environ={})).plan
    refused = plan.value("ladder.refused")
    assert refused and refused["budget_bytes"] < 0 and refused["shortfall_bytes"] > refused["predicted_bytes"]
    assert plan.value("ladder.rungs") == [] and "ladder.duration_s" not in plan
    for key in ("memory.budget_gib", "memory.predicted_peak_gib", "ladder.rungs", "ladder.refused", "vae.decode"):
        reason = plan[key].reason
        assert "no room" in reason or key == "vae.decode", (key, reason)
        assert not re.search(r"(?<![\w.])-\d", reason), (key, reason)


def test_rungs_are_taken_in_order_and_only_when_they_help() -> None:
    run = RunShape(duration_s=240, batch=2, lm_model="1.7B")
    bare = Choices()  # bf16, no offload, no quantization, full VAE decode
    budget = device_budget(8 * GIB)
    result = fit(run, bare, budget)
    names = [r.name for r in result.rungs]
    assert names[0] == "vae.tiled"
    assert result.fits and result.prediction.peak_bytes <= budget.usable_bytes
    ranks = [rank(name) for name in names]
    assert ranks == sorted(ranks)
    for rung in result.rungs:
        assert "→" in rung.reason and "budget" in rung.reason
    assert predict(run, bare).peak_bytes > budget.usable_bytes  # there was something to fix


def rank(name: str) -> int:
    """The ladder's order: tile → offload between phases → int8 → stream → smaller LM → LM off → batch → clip."""
    if name.startswith("offload."):
        return 3 if name.endswith(("=group", "=sequential")) else 1
    order = ("vae.", "", "quantization.", "", "lm=", "lm=off", "batch=", "duration=")
    return max(i for i, prefix in enumerate(order) if prefix and name.startswith(prefix))


def test_a_smaller_lm_then_no_lm_before_a_smaller_batch_and_a_shorter_clip() -> None:
    run = RunShape(duration_s=600, batch=8, lm_model="4B", lm_choice="auto")
    tight = Abilities(offload=False, quantize=False)
    result = fit(run, Choices(), device_budget(12 * GIB), tight)
    names = [r.name for r in result.rungs]
    assert names[:1] == ["vae.tiled"] and "lm=1.7B" in names and "lm=0.6B" in names and "lm=off" in names
    assert [rank(n) for n in names] == sorted(rank(n) for n in names)
    assert names.index("lm=off") < min(
        (names.index(n) for n in names if n.startswith(("batch", "duration"))), default=len(names)
    )
    assert result.run.lm_model is None and all("LM" in r.reason for r in result.rungs if r.name.startswith("lm="))


def test_a_users_lm_choice_is_never_dropped() -> None:
    tight = Abilities(offload=False, quantize=False)
    named = fit(
        RunShape(duration_s=600, batch=8, lm_model="4B", lm_choice="size"), Choices(), device_budget(12 * GIB), tight
    )
    assert named.run.lm_model == "4B" and not any(r.name.startswith("lm=") for r in named.rungs)
    wanted = fit(
        RunShape(duration_s=600, batch=8, lm_model="4B", lm_choice="on"), Choices(), device_budget(12 * GIB), tight
    )
    assert wanted.run.lm_model == "0.6B" and "lm=off" not in [r.name for r in wanted.rungs]
    allowed = Abilities(offload=False, quantize=False, lm_models=("0.6B", "4B"))
    skip = fit(
        RunShape(duration_s=600, batch=8, lm_model="4B", lm_choice="on"), Choices(), device_budget(12 * GIB), allowed
    )
    assert "lm=1.7B" not in [r.name for r in skip.rungs]  # only sizes the tier allows


def test_the_plan_runs_the_ladders_lm() -> None:
    options = DetectOptions(vram_gb="12", environ={})
    named = resolve(
        GenerationRequest(duration_s=240, batch_size=2, lm="on", lm_model="1.7B"),
        detect_options=options,
        overrides=Overrides(
            plan={"quantization.lm": "none", "offload.lm": "none", "offload.dit": "none", "quantization.dit": "none"}
        ),
    )
    assert "ladder.lm_model" not in named.plan and named.adjusted.lm_choice == "size"
    auto = resolve(GenerationRequest(duration_s=240, batch_size=2), detect_options=options)
    assert auto.adjusted.lm_choice == "auto"


def test_without_offload_or_quantization_the_ladder_shrinks_the_request() -> None:
    run = RunShape(duration_s=600, batch=8, lm_model="4B", lm_choice="size")  # a named LM stays: shrink the request
    result = fit(run, Choices(), device_budget(16 * GIB), Abilities(offload=False, quantize=False))
    assert not any(r.name.startswith(("offload", "quantization")) for r in result.rungs)
    assert result.run.batch < 8 or result.run.duration_s < 600


def test_a_plan_that_fits_takes_no_rung() -> None:
    result = fit(RunShape(duration_s=30, batch=1, lm_model=None), Choices(), device_budget(80 * GIB))
    assert result.rungs == () and result.fits


def test_user_overrides_are_checked_by_check_resolution() -> None:
    options = DetectOptions(vram_gb="8", environ={})
    planned = resolve(GenerationRequest(duration_s=240), detect_options=options)
    forced = resolve(
        GenerationRequest(duration_s=240),
        detect_options=options,
        overrides=Overrides(plan={"vae.decode": "full", "offload.vae": "none"}),
    )
    assert check_resolution(forced)[0] > check_resolution(planned)[0]
    peak, budget = check_resolution(forced)
    assert peak > budget  # the user's full decode of 240 s does not fit 8 GB, and the check says so
