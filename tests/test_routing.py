"""The fleet's routing rule without Ray: smallest class that runs a request unclamped, else the largest
with the clamps reported; down classes skipped; the router's answer is the replica's own."""

from __future__ import annotations

import itertools

import pytest
from conftest import device_reading

from acestep_core import DetectOptions, GenerationRequest, Setting, hookimpl, resolve
from acestep_core.routing import (
    FleetClass,
    NoReplicaError,
    UnrunnableError,
    clamps_of,
    expected_work,
    route,
    route_soonest,
)


def fleet(*sizes: float, replicas: int = 1) -> list[FleetClass]:
    return [FleetClass(f"gb{size:g}", device_reading(size, simulated=True), replicas=replicas) for size in sizes]


@pytest.fixture
def manager(make_manager):
    return make_manager()


def test_a_long_large_batch_goes_to_the_24_gb_class_unclamped(manager) -> None:
    decision = route(GenerationRequest(duration_s=600, batch_size=8), fleet(8, 16, 24), manager=manager)
    assert decision.target == "gb24" and not decision.clamped and decision.clamps == ()
    assert decision.resolution.adjusted.duration_s == 600 and decision.resolution.adjusted.batch_size == 8
    verdicts = {v.name: v for v in decision.verdicts}
    assert verdicts["gb8"].duration_s == 240 and verdicts["gb16"].duration_s == 480, "smaller classes would clamp"
    assert not verdicts["gb8"].unclamped and not verdicts["gb16"].unclamped


def test_a_short_single_clip_goes_to_the_smallest_class(manager) -> None:
    decision = route(GenerationRequest(duration_s=120, batch_size=1), fleet(24, 16, 8), manager=manager)
    assert decision.target == "gb8" and not decision.clamped
    assert "smallest class" in decision.reason


def test_with_only_small_cards_the_largest_runs_it_and_the_clamp_is_reported(manager) -> None:
    decision = route(GenerationRequest(duration_s=600, batch_size=1), fleet(8), manager=manager)
    assert decision.target == "gb8" and decision.clamped
    assert decision.resolution.adjusted.duration_s == 240
    assert any("600 s exceeds the 240 s limit" in clamp for clamp in decision.clamps)
    two = route(GenerationRequest(duration_s=600, batch_size=8), fleet(8, 16), manager=manager)
    assert two.target == "gb16" and two.resolution.adjusted.duration_s == 480 and "the largest" in two.reason


def test_the_order_classes_are_given_in_changes_nothing(manager) -> None:
    request = GenerationRequest(duration_s=300, batch_size=2)
    targets = {
        route(request, list(order), manager=manager).target for order in itertools.permutations(fleet(8, 16, 24))
    }
    assert targets == {"gb16"}


def test_equally_small_classes_are_chosen_by_load_per_replica(manager) -> None:
    busy = FleetClass("busy", device_reading(16, simulated=True), replicas=2, in_flight=4)
    idle = FleetClass("idle", device_reading(16, simulated=True), replicas=1, in_flight=1)
    big = FleetClass("big", device_reading(24, simulated=True), replicas=4, in_flight=0)
    assert route(GenerationRequest(duration_s=300), [busy, idle, big], manager=manager).target == "idle"
    assert route(GenerationRequest(duration_s=300), [idle, busy, big], manager=manager).target == "idle"
    idle_now = FleetClass("busy", busy.reading, replicas=2, in_flight=0)
    assert route(GenerationRequest(duration_s=300), [idle_now, idle, big], manager=manager).target == "busy"


def test_a_down_class_is_skipped_and_an_all_down_fleet_is_an_error(manager) -> None:
    classes = fleet(8, 16, 24)
    classes[0] = FleetClass("gb8", classes[0].reading, replicas=0)
    decision = route(GenerationRequest(duration_s=120), classes, manager=manager)
    assert decision.target == "gb16"
    assert next(v for v in decision.verdicts if v.name == "gb8").down
    with pytest.raises(NoReplicaError, match="no replica is running"):
        route(GenerationRequest(duration_s=120), fleet(8, 16, replicas=0), manager=manager)
    with pytest.raises(NoReplicaError):
        route(GenerationRequest(duration_s=120), [], manager=manager)


def test_a_class_whose_plan_refuses_cannot_take_the_request(make_manager) -> None:
    class RefuseSmall:
        @hookimpl(tryfirst=True)
        def configure_optimizations(self, adjusted, tier, reading):
            if reading.device.total_bytes < 20 * 2**30:
                return [Setting("ladder.refused", {"shortfall_gib": 1.0}, "nothing fits on this card", warning=True)]
            return []

    manager = make_manager(RefuseSmall())
    decision = route(GenerationRequest(duration_s=60), fleet(8, 16, 24), manager=manager)
    assert decision.target == "gb24"
    assert {v.name: v.refused for v in decision.verdicts}["gb8"] == "nothing fits on this card"
    with pytest.raises(UnrunnableError, match="nothing fits"):
        route(GenerationRequest(duration_s=60), fleet(8, 16), manager=manager)


@pytest.mark.parametrize("size", [4, 8, 12, 16, 24, 48])
@pytest.mark.parametrize(
    ("duration", "batch", "lm"), [(30, 1, "auto"), (240, 2, "on"), (600, 8, "off"), (None, 4, "auto")]
)
def test_the_routers_answer_is_what_the_replica_itself_resolves(manager, size, duration, batch, lm) -> None:
    request = GenerationRequest(duration_s=duration, batch_size=batch, lm=lm)
    decision = route(request, fleet(size), manager=manager)
    own = resolve(request, manager=manager, detect_options=DetectOptions(environ={"MAX_CUDA_VRAM": str(size)}))
    assert decision.resolution.tier == own.tier
    assert decision.resolution.adjusted.changes == own.adjusted.changes
    assert decision.clamps == clamps_of(own)


def test_resolve_with_a_given_reading_records_the_caller_and_refuses_garbage(manager) -> None:
    resolution = resolve(GenerationRequest(duration_s=30), manager=manager, reading=device_reading(16))
    assert resolution.decided_by("detect_memory") == "caller" and resolution.tier.name == "tier6"
    with pytest.raises(ValueError, match="reading must be a MemoryReading"):
        resolve(manager=manager, reading="16 GB")  # type: ignore[arg-type]


def test_the_decision_record_is_json(manager) -> None:
    import json

    record = route(GenerationRequest(duration_s=600, batch_size=8), fleet(8, 24), manager=manager).to_dict()
    assert json.loads(json.dumps(record)) == record
    assert [c["name"] for c in record["classes"]] == ["gb8", "gb24"] and record["classes"][1]["unclamped"]


def test_when_every_class_clamps_the_largest_runs_it_and_ties_go_to_the_less_loaded(manager) -> None:
    """The all-clamped branch: no class runs 600 s × 8 as asked; the largest does, its clamps reported."""
    request = GenerationRequest(duration_s=600, batch_size=8)
    decision = route(request, fleet(8, 12, 16), manager=manager)
    assert all(not v.unclamped for v in decision.verdicts), "every class clamps"
    assert decision.target == "gb16" and decision.clamped
    assert decision.reason.startswith("no class runs 600 s × 8 unclamped; gb16") and "the largest" in decision.reason
    assert decision.clamps == clamps_of(decision.resolution) and decision.clamps
    busy = FleetClass("busy16", device_reading(16, simulated=True), replicas=1, in_flight=3)
    idle = FleetClass("idle16", device_reading(16, simulated=True), replicas=1, in_flight=0)
    for order in ([busy, idle], [idle, busy]):
        assert route(request, [*fleet(8), *order], manager=manager).target == "idle16"


# --------------------------------------------------------------------------------------------- queue-aware
def queued(name: str, size: float, *, replicas: int = 1, in_flight: int = 0, queued_s: float = 0.0) -> FleetClass:
    return FleetClass(name, device_reading(size, simulated=True), replicas, in_flight, queued_s)


def test_a_busy_smallest_class_spills_over_to_the_idle_larger_one(manager) -> None:
    """A 20 s job behind a long one on the 8 GB class goes to the idle 16 GB class instead of waiting."""
    request = GenerationRequest(duration_s=20)
    classes = [queued("gb8", 8, in_flight=1, queued_s=117), queued("gb16", 16), queued("gb24", 24)]
    decision = route_soonest(request, classes, manager=manager)
    assert decision.target == "gb16" and not decision.clamped
    assert "the smaller gb8 would start it in ≈117 s" in decision.reason
    assert {v.name: v.wait_s for v in decision.verdicts} == {"gb8": 117.0, "gb16": 0.0, "gb24": 0.0}
    assert route(request, classes, manager=manager).target == "gb8", "route() alone ignores queues"


def test_an_idle_replica_in_the_smallest_class_still_wins(manager) -> None:
    request = GenerationRequest(duration_s=20)
    classes = [queued("gb8", 8, replicas=2, in_flight=1, queued_s=300), queued("gb16", 16)]
    decision = route_soonest(request, classes, manager=manager)
    assert decision.target == "gb8" and "smallest class" in decision.reason and "idle replica" in decision.reason


def test_when_every_capable_class_is_busy_the_one_whose_queue_clears_first_wins(manager) -> None:
    request = GenerationRequest(duration_s=20)
    classes = [
        queued("gb8", 8, in_flight=3, queued_s=90),
        queued("gb16", 16, replicas=2, in_flight=2, queued_s=100),
        queued("gb24", 24, in_flight=1, queued_s=80),
    ]
    assert route_soonest(request, classes, manager=manager).target == "gb16", "100 s over 2 replicas: 50 s"
    equal = [queued("gb8", 8, in_flight=1, queued_s=50), queued("gb16", 16, in_flight=1, queued_s=50)]
    assert route_soonest(request, equal, manager=manager).target == "gb8", "equal waits: the smallest"


def test_queues_never_send_a_request_where_it_would_be_clamped(manager) -> None:
    """600 s × 8 runs unclamped only on 24 GB: it waits there rather than run clamped on an idle 8 GB card."""
    request = GenerationRequest(duration_s=600, batch_size=8)
    classes = [queued("gb8", 8), queued("gb24", 24, in_flight=1, queued_s=500)]
    decision = route_soonest(request, classes, manager=manager)
    assert decision.target == "gb24" and not decision.clamped
    assert route_soonest(request, [queued("gb8", 8), queued("gb16", 16)], manager=manager).target == "gb16"


def test_expected_work_is_the_audio_the_plan_will_produce(manager) -> None:
    reading = device_reading(24, simulated=True)
    assert (
        expected_work(resolve(GenerationRequest(duration_s=120, batch_size=2), manager=manager, reading=reading)) == 240
    )
    chosen_by_lm = resolve(GenerationRequest(duration_s=None, lm="on"), manager=manager, reading=reading)
    assert expected_work(chosen_by_lm) == chosen_by_lm.tier.max_duration_with_lm_s, "the LM may choose the ceiling"
    clamped = resolve(GenerationRequest(duration_s=600, batch_size=8), manager=manager, reading=device_reading(8))
    assert expected_work(clamped) == 240 * clamped.adjusted.batch_size


def test_a_routers_cache_of_resolutions_is_used_and_filled_per_request_and_class(manager) -> None:
    classes = [queued("gb8", 8), queued("gb24", 24)]
    cache: dict = {}
    request = GenerationRequest(duration_s=120)
    first = route_soonest(request, classes, manager=manager, cache=cache)
    assert set(cache) == {(request, "gb8"), (request, "gb24")} and first.target == "gb8"
    clamped = resolve(GenerationRequest(duration_s=600), manager=manager, reading=classes[0].reading)
    cache[(request, "gb8")] = clamped  # what the class made of the request, as the router remembers it
    assert route_soonest(request, classes, manager=manager, cache=cache).target == "gb24", "the cached answer is used"
    assert route_soonest(request, classes, manager=manager).target == "gb8", "without the cache, resolved afresh"
