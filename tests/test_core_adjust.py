"""Fitting requests to tiers: clamps and their warnings, the LM rules, overrides, the plan."""

from __future__ import annotations

import json

import pytest

from acestep_core import GenerationRequest, Overrides, Resolution, resolve

SIMULATED_8 = {"MAX_CUDA_VRAM": "8"}


def plan(make_manager, gib: float, request: GenerationRequest, overrides: Overrides | None = None) -> Resolution:
    return resolve(request, overrides=overrides, manager=make_manager(), environ={"MAX_CUDA_VRAM": f"{gib:g}"})


def test_the_issue_example_with_the_lm(make_manager) -> None:
    """MAX_CUDA_VRAM=8 plan --duration 600 --batch 8 --lm 4B → tier 4; 4B refused, 0.6B offered;
    240 s and batch 2 (with-LM limits); three warnings."""
    resolution = plan(make_manager, 8, GenerationRequest(duration_s=600, batch_size=8, lm_model="4B", lm="on"))
    assert resolution.tier.label == "Tier 4"
    adjusted = resolution.adjusted
    assert (adjusted.lm_model, adjusted.duration_s, adjusted.batch_size) == ("0.6B", 240, 2)
    assert [(c.field, c.asked, c.granted, c.plugin) for c in adjusted.changes] == [
        ("lm_model", "4B", "0.6B", "tiers_default"),
        ("duration_s", 600, 240, "tiers_default"),
        ("batch_size", 8, 2, "tiers_default"),
    ]
    assert len(adjusted.warnings) == 3
    refusal, duration, batch = adjusted.warnings
    assert "4B is not allowed on Tier 4" in refusal and "allowed: 0.6B" in refusal and "recommended 0.6B" in refusal
    for warning in (duration, batch):
        assert "Tier 4" in warning and "8.00 GiB simulated" in warning and "with the LM" in warning
    assert "240 s limit" in duration and "limit of 2" in batch
    assert resolution.warnings[0].startswith("GPU memory simulation is on (MAX_CUDA_VRAM=8)")
    assert resolution.warnings[1:] == adjusted.warnings


def test_the_issue_example_without_the_lm(make_manager) -> None:
    resolution = plan(make_manager, 8, GenerationRequest(duration_s=600, batch_size=8, lm="off"))
    adjusted = resolution.adjusted
    assert (adjusted.lm_model, adjusted.duration_s, adjusted.batch_size) == (None, 360, 4)
    assert len(adjusted.warnings) == 2
    assert all("without the LM" in warning for warning in adjusted.warnings)


@pytest.mark.parametrize(
    ("gib", "lm", "model", "duration_limit", "batch_limit", "tier_label"),
    [
        (2, "off", None, 180, 1, "Tier 1"),
        (5, "off", None, 360, 1, "Tier 2"),
        (7, "on", "0.6B", 240, 1, "Tier 3"),
        (7, "off", None, 360, 2, "Tier 3"),
        (10, "on", "0.6B", 240, 2, "Tier 4"),
        (10, "off", None, 360, 4, "Tier 4"),
        (14, "on", "1.7B", 240, 2, "Tier 5"),
        (14, "off", None, 360, 4, "Tier 5"),
        (20, "on", "4B", 480, 4, "Tier 6"),
        (20, "off", None, 480, 8, "Tier 6"),
        (48, "on", "4B", 600, 8, "Unlimited"),
        (48, "off", None, 600, 8, "Unlimited"),
    ],
)
def test_every_clamp_names_limit_tier_and_memory(
    make_manager, gib: float, lm: str, model: str | None, duration_limit: int, batch_limit: int, tier_label: str
) -> None:
    over = GenerationRequest(duration_s=duration_limit + 1, batch_size=batch_limit + 1, lm_model=model, lm=lm)
    adjusted = plan(make_manager, gib, over).adjusted
    assert (adjusted.duration_s, adjusted.batch_size, adjusted.lm_model) == (duration_limit, batch_limit, model)
    duration, batch = (c for c in adjusted.changes if c.field in ("duration_s", "batch_size"))
    memory = f"{gib:.2f} GiB simulated"
    assert f"the {duration_limit} s limit of {tier_label}" in duration.reason and memory in duration.reason
    assert f"limit of {batch_limit} for {tier_label}" in batch.reason and memory in batch.reason
    assert (duration.asked, duration.granted, batch.asked, batch.granted) == (
        duration_limit + 1,
        duration_limit,
        batch_limit + 1,
        batch_limit,
    )

    at_limit = GenerationRequest(duration_s=duration_limit, batch_size=batch_limit, lm_model=model, lm=lm)
    assert plan(make_manager, gib, at_limit).adjusted.warnings == ()


def test_the_clamp_names_the_detected_figure_for_a_real_card(make_manager, detected) -> None:
    resolution = resolve(GenerationRequest(duration_s=600), manager=make_manager(detected(7.8)))
    assert resolution.tier.label == "Tier 4"
    assert "7.80 GiB detected" in resolution.adjusted.warnings[0]


@pytest.mark.parametrize(
    ("gib", "asked", "allowed", "recommended"),
    [(7, "1.7B", "0.6B", "0.6B"), (14, "4B", "0.6B, 1.7B", "0.6B"), (20, "4B", "0.6B, 1.7B, 4B", None)],
)
def test_an_lm_the_tier_does_not_allow_is_refused_with_the_allowed_list(
    make_manager, gib, asked, allowed, recommended
) -> None:
    adjusted = plan(make_manager, gib, GenerationRequest(lm_model=asked, lm="on")).adjusted
    if recommended is None:  # allowed: granted as asked, nothing to warn about
        assert adjusted.lm_model == asked and adjusted.warnings == ()
        return
    assert adjusted.lm_model == recommended
    assert f"LM {asked} is not allowed" in adjusted.warnings[0]
    assert f"(allowed: {allowed})" in adjusted.warnings[0]
    assert f"using the recommended {recommended}" in adjusted.warnings[0]


@pytest.mark.parametrize("gib", [3, 5])
def test_with_no_lm_allowed_an_asked_for_lm_is_turned_off_with_a_warning(make_manager, gib) -> None:
    resolution = plan(make_manager, gib, GenerationRequest(duration_s=360, lm_model="0.6B", lm="on"))
    assert resolution.adjusted.lm_model is None
    assert "allows no LM; the LM is turned off" in resolution.adjusted.warnings[0]
    # once the LM is off, the without-LM limits apply
    assert resolution.adjusted.duration_s == resolution.tier.max_duration_without_lm_s


@pytest.mark.parametrize(
    ("gib", "default_lm"),
    [
        (3, None),
        (5, None),
        (6, None),
        (6.01, None),
        (7.99, None),
        (8, "0.6B"),
        (14, "0.6B"),
        (16, "1.7B"),
        (20, "1.7B"),
        (24, "4B"),
        (80, "4B"),
    ],
)
def test_the_default_lm_follows_the_guides_memory_tips(make_manager, gib, default_lm) -> None:
    """The guide: < 8 GB DiT only, 8-16 GB the 0.6B LM, > 16 GB the larger ones (1.7B, then 4B)."""
    resolution = plan(make_manager, gib, GenerationRequest())
    adjusted = resolution.adjusted
    assert adjusted.lm_model == default_lm
    assert adjusted.warnings == ()  # a default is not a warning
    if default_lm is not None:
        chosen = next(c for c in adjusted.changes if c.field == "lm_model")
        assert f"recommended for {resolution.tier.label}" in chosen.reason and "largest" not in chosen.reason


def test_tier_3_loads_the_recommended_lm_when_asked(make_manager) -> None:
    adjusted = plan(make_manager, 7, GenerationRequest(lm="on")).adjusted
    assert adjusted.lm_model == "0.6B" and adjusted.warnings == ()


def test_a_6_gb_device_gets_the_lm_when_asked(make_manager) -> None:
    resolution = plan(make_manager, 6, GenerationRequest(lm="on"))
    assert resolution.tier.name == "tier3"
    assert resolution.adjusted.lm_model == "0.6B"


def test_a_real_6_gb_card_keeps_the_lm_off_by_default(make_manager, detected) -> None:
    resolution = resolve(manager=make_manager(detected(5.8)))
    assert resolution.tier.name == "tier3"  # 5.8 GiB read is a 6 GB card
    assert resolution.adjusted.lm_model is None


def test_an_unset_duration_stays_for_the_lm_to_choose(make_manager) -> None:
    adjusted = plan(make_manager, 8, GenerationRequest()).adjusted
    assert adjusted.duration_s is None


# --------------------------------------------------------------------------------------------- overrides
def test_limit_overrides_win_and_record_the_tier_value(make_manager) -> None:
    resolution = plan(
        make_manager,
        8,
        GenerationRequest(duration_s=600, batch_size=8, lm_model="4B", lm="on"),
        Overrides(max_duration_s=600, max_batch=8, lm_models=("0.6B", "1.7B", "4B")),
    )
    adjusted = resolution.adjusted
    assert (adjusted.duration_s, adjusted.batch_size, adjusted.lm_model) == (600, 8, "4B")
    assert adjusted.warnings == ()
    recorded = {o.key: (o.value, o.default) for o in resolution.overrides}
    assert recorded == {
        "max_duration_s": (600, 240),
        "max_batch": (8, 2),
        "lm_models": (["0.6B", "1.7B", "4B"], ["0.6B"]),
    }


def test_a_lower_limit_override_clamps_and_the_warning_says_so(make_manager) -> None:
    resolution = plan(make_manager, 80, GenerationRequest(duration_s=300), Overrides(max_duration_s=120))
    assert resolution.adjusted.duration_s == 120
    assert "120 s limit" in resolution.adjusted.warnings[0]
    assert {o.key: o.default for o in resolution.overrides} == {"max_duration_s": 600}


def test_plan_overrides_win_and_record_the_plan_value(make_manager) -> None:
    planned = plan(make_manager, 8, GenerationRequest()).plan
    wanted = {"compile": not planned.value("compile"), "quantization.dit": "none", "offload.vae": "sequential"}
    resolution = plan(make_manager, 8, GenerationRequest(), Overrides(plan=wanted))
    assert {key: resolution.plan.value(key) for key in wanted} == wanted
    assert all(resolution.plan[key].plugin == "user" for key in wanted)
    assert "would have used" in resolution.plan["compile"].reason
    recorded = {o.key: (o.value, o.default) for o in resolution.overrides}
    assert recorded == {key: (value, planned.value(key)) for key, value in wanted.items()}
    assert planned.value("quantization.dit") == "int8" and planned.value("offload.vae") == "model"


# --------------------------------------------------------------------------------------------- plan
def test_the_plan_has_the_seeds_defaults_and_says_who_decided(make_manager) -> None:
    """Flash attention, CPU offload, compile and quantization on by default (the seed's note): the
    table says so for every tier, and the plan turns that into settings, each with its reason."""
    resolution = plan(make_manager, 8, GenerationRequest())
    values = resolution.plan.as_dict()
    assert {"attention", "compile", "offload.dit", "quantization.dit"} <= set(values)
    assert all(values[f"offload.{c}"] == "model" for c in ("lm", "dit", "text_encoder", "vae"))
    assert values["quantization.dit"] == "int8"
    planned = [setting for setting in resolution.plan if setting.key != "placement"]  # one device: the core's
    assert all(setting.reason and setting.plugin == "tiers_default" for setting in planned)
    assert resolution.plan["placement"].plugin == "acestep_core"
    assert [d.hook for d in resolution.decisions] == [
        "register_tier_tables",
        "detect_memory",
        "select_tier",
        "adjust_request",
        "configure_optimizations",
        "place_components",
    ]
    assert {d.hook: d.plugin for d in resolution.decisions}["detect_memory"] == "simulated"


def test_to_json_is_the_whole_decision(make_manager) -> None:
    resolution = plan(make_manager, 8, GenerationRequest(duration_s=600, batch_size=8, lm_model="4B", lm="on"))
    data = json.loads(resolution.to_json())
    assert data["tier"]["name"] == "tier4" and data["tier"]["recommended_lm"] == "0.6B"
    assert data["adjusted"]["duration_s"] == 240 and data["adjusted"]["lm_on"] is True
    assert data["reading"]["device"]["simulated"] is True
    assert len(data["warnings"]) == 4
    assert data["plan"]["settings"][0]["key"] == "attention"
    assert {d["hook"] for d in data["decisions"]} >= {"select_tier", "adjust_request"}


@pytest.mark.parametrize(
    "bad",
    [
        dict(duration_s=0),
        dict(duration_s=-5),
        dict(duration_s=float("nan")),
        dict(duration_s=float("inf")),
        dict(batch_size=0),
        dict(batch_size=2.5),
        dict(lm="maybe"),
    ],
)
def test_a_request_no_tier_could_fit_is_refused_at_the_api(bad) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        GenerationRequest(**bad)
