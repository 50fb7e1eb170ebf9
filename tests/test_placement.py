"""Several GPUs (issue #24): the ``place_components`` hook, its contract, the user's map and upstream's
variables, the tier from the DiT's device and the LM's sizes from the LM's, every layout checked against
each device's budget, ``auto``, and ``acestep-core devices``."""

from __future__ import annotations

import json
from typing import Any

import pytest

import acestep_core
from acestep_core import (
    COMPONENTS,
    GIB,
    DetectOptions,
    GenerationRequest,
    Overrides,
    Placement,
    Resolution,
    hookimpl,
    resolve,
)
from acestep_core.optimize.layout import device_shares, share
from acestep_core.optimize.memory import predict
from acestep_core.optimize.plan import choices_from_plan, planned_run
from acestep_core.placement import PlaceError, device_key, parse_place, split_tier
from acestep_core.resolve import device_readings
from acestep_core.vocabulary import CUDA_CONTEXT_BYTES, SAFETY_MARGIN_BYTES

RTX4090 = "GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff"
RTX3060 = "GPU-1a2b3c4d-1111-2222-3333-444455556666"
SPLIT = {"lm": "cuda:1", "text_encoder": "cuda:0", "dit": "cuda:0", "vae": "cuda:0"}


def cards(sizes: str, **kwargs: Any) -> Resolution:
    """A resolution over simulated cards (``--vram 8,8``)."""
    environ = kwargs.pop("environ", {})
    return resolve(detect_options=DetectOptions(vram_gb=sizes, environ=environ), environ=environ, **kwargs)


def request(duration: float | None, batch: int = 1, lm: str | None = "0.6B") -> GenerationRequest:
    return GenerationRequest(duration_s=duration, batch_size=batch, lm_model=lm, lm="off" if lm is None else "on")


# --------------------------------------------------------------------------------------------- the map
@pytest.mark.parametrize(
    ("text", "mode", "devices"),
    [
        ("auto", "auto", {}),
        (" AUTO ", "auto", {}),
        ("single:1", "single", {"*": "1"}),
        ("single:cuda:1", "single", {"*": "cuda:1"}),
        ("lm:1,dit:0,vae:0,text_encoder:0", "map", {"lm": "1", "dit": "0", "vae": "0", "text_encoder": "0"}),
        ("lm:cuda:1", "map", {"lm": "cuda:1"}),
        ("text-encoder:GPU-1a2b", "map", {"text_encoder": "gpu-1a2b"}),
    ],
)
def test_the_place_syntax(text: str, mode: str, devices: dict[str, str]) -> None:
    spec = parse_place(text)
    assert (spec.mode, dict(spec.devices)) == (mode, devices)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is not a placement"),
        ("lm", "is not a placement"),
        ("unet:0", r"'unet' is not a component \(lm, text_encoder, dit, vae\)"),
        ("lm:1,lm:0", "lm is placed twice"),
        ("lm:cpu", "the CPU is not a device to place a component on"),
        ("lm:gpu one", "is not a device"),
        ("single:", "is not a device"),
    ],
)
def test_a_bad_placement_says_what_is_accepted(text: str, says: str) -> None:
    with pytest.raises(PlaceError, match=says):
        parse_place(text)


def test_a_device_is_an_ordinal_a_key_or_a_unique_uuid_prefix() -> None:
    readings = device_readings(replayed().reading)
    assert [device_key(s, readings) for s in ("1", "cuda:1", "gpu-1a2b", "1A2B3C")] == ["cuda:1"] * 4
    with pytest.raises(PlaceError, match=r"'5' names no visible device; visible: cuda:0 \(NVIDIA GeForce RTX 4090"):
        device_key("5", readings)


# --------------------------------------------------------------------------------------------- the hook
def replayed(**kwargs: Any) -> Resolution:
    import acestep_core_cuda
    import acestep_core_simulated
    import acestep_core_tiers_default

    manager = acestep_core.build_plugin_manager(
        environ={},
        entry_points=[],
        plugins=[
            ("tiers_default", acestep_core_tiers_default),
            ("simulated", acestep_core_simulated),
            ("cuda", acestep_core_cuda),
        ],
    )
    environ = kwargs.pop("environ", {})
    options = DetectOptions(replay="two-gpu-3060-4090", environ=environ)
    return resolve(kwargs.pop("request", None), detect_options=options, manager=manager, environ=environ, **kwargs)


def test_one_device_is_placed_whole_and_keeps_its_one_device_plan() -> None:
    resolution = resolve(request(120, 2), environ={"MAX_CUDA_VRAM": "8"})
    assert dict(resolution.reading.placement) == dict.fromkeys(COMPONENTS, "cuda:0")
    assert not resolution.reading.several_devices and "memory.devices" not in resolution.plan
    assert resolution.placement is not None and resolution.placement.plugin == "acestep_core"  # nothing to ask
    assert resolution.plan.value("placement")["dit"] == {
        "device": "cuda:0",
        "uuid": None,
        "name": "simulated 8 GB cuda device",
    }
    assert resolution.decided_by("place_components") == "acestep_core"
    assert list(resolution.tiers) == ["cuda:0"] and resolution.tiers["cuda:0"] == resolution.tier
    asked = resolve(request(120, 2), environ={"MAX_CUDA_VRAM": "8", "ACESTEP_GPU_MAPPING": "lm:1"})
    assert asked.decided_by("place_components") == "tiers_default"  # a variable set: the plugins are asked
    assert any("ACESTEP_GPU_MAPPING=lm:1: '1' names no visible device" in w for w in asked.warnings)
    code_place = resolve(request(120, 2), environ={"MAX_CUDA_VRAM": "8"}, place="lm:1")
    assert code_place.problems[0].setting == "--place"  # the CLI's usage error


def test_plan_json_maps_each_component_to_its_device_and_uuid(cli) -> None:
    code, out, _ = cli(
        "plan", "--replay", "two-gpu-3060-4090", "--place", "lm:1,dit:0", "--lm", "0.6B", "--json", cuda=True
    )
    assert code == 0
    placement = json.loads(out)["plan"]
    value = next(setting["value"] for setting in placement["settings"] if setting["key"] == "placement")
    assert value["lm"] == {"device": "cuda:1", "uuid": RTX3060, "name": "NVIDIA GeForce RTX 3060"}
    assert {c: value[c]["device"] for c in COMPONENTS} == SPLIT
    assert value["dit"]["uuid"] == RTX4090


def test_the_tier_follows_the_dits_device_and_the_lm_sizes_the_lms() -> None:
    """The RTX 4090 (Unlimited) runs the DiT stack, the RTX 3060 (Tier 5) the LM: Unlimited's limits, Tier
    5's LM sizes; the other way round, Tier 5's limits without the LM (the 3060 holds no LM) and the 4B."""
    resolution = replayed(request=request(600, 8, "4B"), place="lm:1,dit:0")
    tiers = resolution.tiers
    assert (tiers["cuda:0"].name, tiers["cuda:1"].name) == ("unlimited", "tier5")
    assert resolution.tier == split_tier(tiers["cuda:0"], tiers["cuda:1"])
    assert resolution.tier.lm_models == ("0.6B", "1.7B") and resolution.adjusted.lm_model == "0.6B"
    assert any("LM 4B is not allowed on Unlimited (LM sizes of Tier 5)" in w for w in resolution.warnings)
    summaries = [d.summary for d in resolution.decisions if d.hook == "select_tier"]
    assert "on cuda:0, which runs the DiT: the tier follows it" in summaries[0]
    assert "on cuda:1, which runs the LM: the LM's sizes follow it (0.6B, 1.7B)" in summaries[1]

    reverse = replayed(request=request(600, 8, "4B"), place="lm:0,dit:1")
    assert reverse.tier.name == "tier5" and reverse.adjusted.lm_model == "4B"
    tier5 = reverse.tiers["cuda:1"]
    assert (reverse.tier.max_duration_with_lm_s, reverse.tier.max_batch_with_lm) == (
        tier5.max_duration_without_lm_s,
        tier5.max_batch_without_lm,
    )
    assert (reverse.adjusted.duration_s, reverse.adjusted.batch_size) == (360, 4)


def test_each_device_holds_only_its_components_and_pays_its_own_context() -> None:
    resolution = cards("8,8", request=request(360, 4), place="lm:1,dit:0")
    run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
    choices = choices_from_plan(resolution.plan)
    shares = {s.key: s for s in device_shares(run, choices, resolution.reading)}
    assert [p.phase for p in shares["cuda:1"].prediction.phases] == ["lm"]
    assert [p.phase for p in shares["cuda:0"].prediction.phases] == ["text_encoder", "dit", "vae"]
    whole = predict(run, choices)  # as if on one device: the LM (kept resident: offload.lm none) beside the DiT
    assert choices.offload["lm"] == "none" and "lm" in next(p for p in whole.phases if p.phase == "dit").resident
    assert all("lm" not in p.resident for p in shares["cuda:0"].prediction.phases)
    for key in ("cuda:0", "cuda:1"):
        budget = shares[key].budget
        assert budget is not None and budget.usable_bytes == 8 * GIB - CUDA_CONTEXT_BYTES - SAFETY_MARGIN_BYTES
    devices = resolution.plan.value("memory.devices")
    assert devices["cuda:1"]["components"] == ["lm"] and devices["cuda:1"]["phases"].keys() == {"lm"}
    assert resolution.plan.value("offload.lm") == "none"  # alone on its card: offloading frees nothing
    off = cards("8,8", request=request(360, 4, None), place="lm:1,dit:0")
    assert list(off.plan.value("memory.devices")) == ["cuda:0"]  # the LM's card is not used: no context paid


def test_share_keeps_a_devices_phases_and_its_own_resident_weights() -> None:
    resolution = resolve(request(120, 2), environ={"MAX_CUDA_VRAM": "24"})
    run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
    choices = dataclass_none_offload(choices_from_plan(resolution.plan))
    whole = predict(run, choices)
    lm_only = share(whole, ("lm",))
    assert [p.phase for p in lm_only.phases] == ["lm"] and set(lm_only.phases[0].resident) == {"lm"}
    stack = share(whole, ("text_encoder", "dit", "vae"))
    assert all(set(p.resident) <= {"text_encoder", "dit", "vae"} for p in stack.phases)
    # nothing offloaded: during the DiT's phase its card still holds the text encoder and the VAE
    assert set(next(p for p in stack.phases if p.phase == "dit").resident) == {"text_encoder", "dit", "vae"}
    assert stack.peak_bytes < whole.peak_bytes  # the LM's weights are no longer counted beside the DiT


def dataclass_none_offload(choices: Any) -> Any:
    import dataclasses

    return dataclasses.replace(choices, offload=dict.fromkeys(COMPONENTS, "none"))


def test_a_layout_over_a_devices_budget_is_refused_with_the_device_phase_and_shortfall(cli) -> None:
    over = cards("24,4", request=request(600, 8, "4B"), place="lm:1,dit:0", overrides=Overrides(lm_models=("4B",)))
    refused = over.plan.value("ladder.refused")
    assert refused["device"] == "cuda:1" and refused["phase"] == "lm" and refused["shortfall_gib"] > 0
    assert any(w.startswith("cuda:1: refused: even after every rung the lm phase needs") for w in over.warnings)
    forced = cards(
        "24,4", request=request(600, 8, "4B"), place="lm:1,dit:0", overrides=Overrides(lm_models=("4B",), force=True)
    )
    assert forced.plan.value("ladder.refused") is False
    assert forced.plan.value("memory.forced")["device"] == "cuda:1"
    code, _, _ = cli("plan", "--vram", "24,4", "--place", "lm:1,dit:0", "--lm", "4B", "--allow-lm", "4B")
    assert code == 1
    code, _, _ = cli("plan", "--vram", "24,4", "--place", "lm:1,dit:0", "--lm", "4B", "--allow-lm", "4B", "--force")
    assert code == 0


def test_each_device_is_fitted_on_its_own_and_lowers_the_run_for_all() -> None:
    """A 4 GB card holding the 0.6B LM needs a batch of 2 at 600 s; the 24 GB card holding the DiT stack
    needs only its VAE tiled. The batch the LM's card needs is the run's, and says which card needed it.
    (With the real LMs' 217k-row vocabulary the 1.7B needs 254 s at batch 1 there, and the DiT's card then
    needs nothing.)"""
    resolution = cards(
        "24,4", request=request(600, 8, "0.6B"), place="lm:1,dit:0", overrides=Overrides(lm_models=("0.6B",))
    )
    plan = resolution.plan
    assert plan.value("ladder.refused") is False and plan.value("ladder.batch_size") == 2
    assert plan["ladder.batch_size"].reason == "batch lowered from 8 to 2 to fit cuda:1"
    assert "cuda:1: batch=4" in plan["ladder.rungs"].reason and "cuda:0: vae.tiled" in plan["ladder.rungs"].reason
    assert plan.value("vae.decode") == "tiled" and plan.value("quantization.lm") == "int8"
    devices = plan.value("memory.devices")
    assert all(d["predicted_peak_gib"] <= d["budget_gib"] for d in devices.values())


def test_the_users_settings_are_checked_on_every_device() -> None:
    """A user's --set that does not fit a card is refused, naming that card, as on one card."""
    resolution = cards(
        "8,8", request=request(240, 2), place="lm:1,dit:0", overrides=Overrides(plan={"vae.decode": "full"})
    )
    refused = resolution.plan.value("ladder.refused")
    assert refused["device"] == "cuda:0" and refused["phase"] == "vae"
    assert "vae.decode='full'" in resolution.plan["ladder.refused"].reason


# --------------------------------------------------------------------------------------------- auto
def test_auto_keeps_the_default_card_when_it_runs_the_request_unclamped() -> None:
    resolution = cards("8,8", request=request(120, 2))
    assert not resolution.reading.several_devices
    assert "alone runs the request unclamped" in resolution.placement.reason  # type: ignore[union-attr]


def test_auto_puts_the_lm_on_its_own_card_when_that_lifts_a_clamp() -> None:
    alone = cards("8", request=request(360, 4))
    assert (alone.adjusted.duration_s, alone.adjusted.batch_size) == (240, 2)  # Tier 4 with the LM
    split = cards("8,8", request=request(360, 4))
    assert dict(split.reading.placement) == SPLIT
    assert (split.adjusted.duration_s, split.adjusted.batch_size, split.adjusted.lm_model) == (360, 4, "0.6B")
    assert split.plan.value("ladder.refused") is False and not split.adjusted.warnings
    assert "alone would clamp it" in split.placement.reason  # type: ignore[union-attr]


def test_auto_prefers_one_card_that_suffices_to_a_split() -> None:
    resolution = cards("8,24", request=request(600, 8, "4B"))
    assert dict(resolution.reading.placement) == dict.fromkeys(COMPONENTS, "cuda:1")
    assert resolution.tier.name == "unlimited" and not resolution.adjusted.warnings


def test_auto_lifts_an_lm_size_refusal() -> None:
    """On two 12 GB cards the 4B LM is refused everywhere; with a 16 GB card it runs on that card."""
    both = cards("12,16", request=request(240, 2, "4B"))
    assert both.adjusted.lm_model == "4B" and both.reading.device_of("lm").key == "cuda:1"


def test_device_pins_a_single_card_and_auto_is_not_asked(make_manager) -> None:
    resolution = resolve(
        request(360, 4), detect_options=DetectOptions(vram_gb="8,8", device="1", environ={}), manager=make_manager()
    )
    assert dict(resolution.reading.placement) == dict.fromkeys(COMPONENTS, "cuda:1")
    assert "--device 1" in resolution.placement.reason  # type: ignore[union-attr]


# --------------------------------------------------------------------------------------------- upstream's variables
def test_upstreams_mapping_and_pins_are_read_from_the_environment() -> None:
    mapped = cards("8,8", request=request(60), environ={"ACESTEP_GPU_MAPPING": "dit:0,vae:0,text_encoder:0,lm:1"})
    assert dict(mapped.reading.placement) == SPLIT
    assert "ACESTEP_GPU_MAPPING=dit:0,vae:0,text_encoder:0,lm:1" in mapped.placement.reason  # type: ignore[union-attr]
    pinned = cards("8,8", request=request(60), environ={"ACESTEP_LM_DEVICE": "cuda:1", "ACESTEP_DIT_DEVICE": "cuda:0"})
    assert dict(pinned.reading.placement) == SPLIT
    single = cards("8,8", request=request(60), environ={"ACESTEP_GPU_MAPPING": "single:1"})
    assert dict(single.reading.placement) == dict.fromkeys(COMPONENTS, "cuda:1")
    flag_wins = cards("8,8", request=request(60), environ={"ACESTEP_GPU_MAPPING": "single:1"}, place="single:0")
    assert dict(flag_wins.reading.placement) == dict.fromkeys(COMPONENTS, "cuda:0")


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("ACESTEP_GPU_MAPPING", "lm:9", "ACESTEP_GPU_MAPPING=lm:9: '9' names no visible device"),
        ("ACESTEP_GPU_MAPPING", "gpus please", "ACESTEP_GPU_MAPPING=gpus please: 'gpus please' is not a placement"),
        ("ACESTEP_LM_DEVICE", "cpu", "ACESTEP_LM_DEVICE=cpu: the CPU is not a device"),
    ],
)
def test_a_variable_that_is_not_a_placement_is_warned_about_and_ignored(variable: str, value: str, says: str) -> None:
    resolution = cards("8,8", request=request(360, 4), environ={variable: value})
    [warning] = [w for w in resolution.warnings if variable in w]
    assert says in warning and warning.endswith("ignored: the components are placed automatically")
    assert dict(resolution.reading.placement) == SPLIT  # auto decided
    assert not resolution.problems


def test_the_flag_is_strict(cli) -> None:
    code, _, err = cli("plan", "--vram", "8,8", "--place", "lm:5")
    assert code == 2 and err.count("\n") == 1
    assert "--place lm:5: '5' names no visible device; visible: cuda:0 (simulated 8 GB cuda device)" in err
    code, _, err = cli("plan", "--vram", "8,8", "--place", "lm:cpu")
    assert code == 2 and "argument --place: the CPU is not a device" in err
    code, _, err = cli("plan", "--vram", "8,8", "--place", "lm:1", "--device", "1")
    assert code == 2 and "--device 1 and --place lm:1 both choose devices" in err
    with pytest.raises(ValueError, match="is not a placement"):
        resolve(place="everywhere")


# --------------------------------------------------------------------------------------------- the contract
class Answers:
    def __init__(self, placement: object) -> None:
        self.placement = placement

    @hookimpl(tryfirst=True)
    def place_components(self) -> object:
        return self.placement


@pytest.mark.parametrize(
    ("answer", "kind", "says"),
    [
        (Placement({"dit": "cuda:0"}, "half"), "rejected", "components must map each of lm, text_encoder, dit, vae"),
        (Placement(dict.fromkeys(COMPONENTS, "cuda:7"), "ghost"), "rejected", "no visible device 'cuda:7'"),
        (Placement(dict.fromkeys(COMPONENTS, "cuda:0"), "mine"), "rejected", "the user placed the components"),
        (Placement(SPLIT, "by someone", plugin="tiers_default"), "rejected", "claims to be decided by 'tiers_default'"),
        (Placement(SPLIT, "notes", notes=(None,)), "rejected", "notes must be a tuple of str"),  # type: ignore[arg-type]
        ("cuda:1", "wrong-type", "expected a Placement"),
    ],
)
def test_every_placement_rule_refuses_its_lie(make_manager, answer: object, kind: str, says: str) -> None:
    resolution = resolve(
        request(60),
        detect_options=DetectOptions(vram_gb="8,8", environ={}),
        manager=make_manager(("liar", Answers(answer))),
        place="lm:1",
    )
    [problem] = [p for p in resolution.problems if p.plugin == "liar"]
    assert (problem.hook, problem.kind) == ("place_components", kind) and says in problem.error
    assert dict(resolution.reading.placement) == SPLIT and resolution.decided_by("place_components") == "tiers_default"


def test_a_plugin_may_place_when_the_user_did_not_and_evaluate_any_layout(make_manager) -> None:
    seen: list[Any] = []

    class Everything:
        @hookimpl(tryfirst=True)
        def place_components(self, readings: Any, evaluate: Any) -> Placement:
            outcome = evaluate(SPLIT)
            seen.append(outcome)
            return Placement(dict(outcome.components), f"split: {outcome.duration_s:g} s × {outcome.batch}")

    resolution = resolve(
        request(360, 4),
        detect_options=DetectOptions(vram_gb="8,8", environ={}),
        manager=make_manager(("everything", Everything())),
    )
    [outcome] = seen
    assert (outcome.duration_s, outcome.batch, outcome.lm_model, outcome.unclamped) == (360, 4, "0.6B", True)
    assert outcome.devices == ("cuda:1", "cuda:0") and 0 < outcome.pressure < 1
    assert resolution.placement == Placement(SPLIT, "split: 360 s × 4", plugin="everything")


# --------------------------------------------------------------------------------------------- devices
def test_devices_lists_each_card_alone_and_what_a_split_adds(cli) -> None:
    code, out, _ = cli("devices", "--vram", "8,8")
    assert code == 0
    assert out.count("alone: Tier 4 (8-12GB): with the LM ≤ 240 s, batch ≤ 2; without ≤ 360 s, batch ≤ 4; LM 0.6B") == 2
    assert "+ longest clip with the LM: 360 s (lm on cuda:1" in out
    assert "+ largest batch with the LM (30 s): 4 (lm on cuda:1" in out
    code, out, _ = cli("devices", "--vram", "8,8", "--json")
    data = json.loads(out)
    assert [d["device"] for d in data["devices"]] == ["cuda:0", "cuda:1"]
    assert data["best"]["longest_with_lm_s"] == {"value": 360, "layout": SPLIT}
    assert data["devices"][0]["alone"]["longest_with_lm_s"] == 240


def test_devices_on_a_recorded_machine_shows_names_uuids_and_tiers(cli) -> None:
    code, out, _ = cli("devices", "--replay", "two-gpu-3060-4090", "--json", cuda=True)
    data = json.loads(out)
    assert code == 0
    assert [(d["device"], d["uuid"], d["tier"]["name"]) for d in data["devices"]] == [
        ("cuda:0", RTX4090, "unlimited"),
        ("cuda:1", RTX3060, "tier5"),
    ]
    assert data["devices"][1]["alone"]["lm_sizes"] == ["0.6B", "1.7B"]
    assert data["beyond_any_single_device"] == []  # the 4090 alone allows as much as any placement


def test_a_layouts_plan_counts_the_components_it_places_the_xl_included() -> None:
    """Over several devices the plan still lists what each component holds (``memory.components``, the
    real sizes: the XL DiT's 4,987,310,726 parameters, the LM's 217,204-row vocabulary), each with the device
    it runs on, and the DiT card's share is the XL's, not the 2B's."""
    placed = {"lm": "cuda:1", "text_encoder": "cuda:0", "dit": "cuda:0", "vae": "cuda:0"}

    def on_two_cards(dit: str) -> Resolution:
        return cards(
            "24,24",
            request=GenerationRequest(duration_s=120, batch_size=1, lm_model="1.7B", lm="on", dit_model=dit),
            place="lm:1,dit:0",
        )

    xl = on_two_cards("xl-sft")
    table = xl.plan.value("memory.components")
    assert {component: row["device"] for component, row in table.items()} == placed
    assert table["dit"]["parameters"] == 4_987_310_726 and table["lm"]["vocabulary"] == 217_204
    assert xl.plan.value("dit.forwards_per_step") == 2
    two_b = on_two_cards("turbo")
    assert two_b.plan.value("memory.components")["dit"]["parameters"] < table["dit"]["parameters"]
    dit_card = {r.plan.value("memory.devices")["cuda:0"]["phases"]["dit"] for r in (xl, two_b)}
    assert max(dit_card) == xl.plan.value("memory.devices")["cuda:0"]["phases"]["dit"] > min(dit_card)
