"""Properties over every memory size and every request (Hypothesis)."""

from __future__ import annotations

import acestep_core_simulated
import acestep_core_tiers_default
from hypothesis import given, settings
from hypothesis import strategies as st

from acestep_core import (
    CPU,
    GIB,
    LM_SIZES,
    DeviceMemory,
    GenerationRequest,
    MemoryReading,
    Resolution,
    Tier,
    build_plugin_manager,
    hookimpl,
    resolve,
)
from acestep_core.vocabulary import MIN_DURATION_S


class Device:
    """Reports whatever reading the test sets; resolved with ``redetect=True``."""

    reading: MemoryReading = MemoryReading(device=CPU)

    @hookimpl
    def detect_memory(self) -> MemoryReading:
        return self.reading


DEVICE = Device()
MANAGER = build_plugin_manager(
    environ={},
    entry_points=[],
    plugins=[("tiers_default", acestep_core_tiers_default), ("simulated", acestep_core_simulated), ("device", DEVICE)],
)

memory_gib = st.floats(min_value=0.001, max_value=4096, allow_nan=False, allow_infinity=False)
readings = st.one_of(
    st.just(MemoryReading(device=CPU)),
    st.builds(
        lambda gib, simulated: MemoryReading(
            device=DeviceMemory(backend="cuda", name="any", total_bytes=max(1, int(gib * GIB)), simulated=simulated)
        ),
        memory_gib,
        st.booleans(),
    ),
)
requests = st.builds(
    GenerationRequest,
    duration_s=st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e6, allow_nan=False), st.integers(1, 10**6)),
    batch_size=st.integers(1, 10_000),
    lm_model=st.one_of(st.none(), st.sampled_from([*LM_SIZES, "8B"])),
    lm=st.sampled_from(["auto", "on", "off"]),
)


TIER_NAMES = [tier.name for tier in acestep_core_tiers_default.default_table().tiers]


def resolve_on(reading: MemoryReading, request: GenerationRequest | None = None) -> Resolution:
    DEVICE.reading = reading
    return resolve(request, manager=MANAGER, redetect=True, environ={})


def simulated(gib: float) -> MemoryReading:
    return MemoryReading(device=DeviceMemory(backend="cuda", name="s", total_bytes=int(gib * GIB), simulated=True))


def real(gib: float) -> MemoryReading:
    return MemoryReading(device=DeviceMemory(backend="cuda", name="r", total_bytes=int(gib * GIB)))


@settings(max_examples=300, deadline=None)
@given(readings, requests)
def test_the_adjusted_request_never_exceeds_the_selected_tiers_limits(
    reading: MemoryReading, request: GenerationRequest
) -> None:
    resolution = resolve_on(reading, request)
    tier, adjusted = resolution.tier, resolution.adjusted
    assert resolution.problems == ()
    if adjusted.duration_s is not None:
        assert MIN_DURATION_S <= adjusted.duration_s <= tier.max_duration_s(adjusted.lm_on)
        assert adjusted.duration_s <= max(request.duration_s, MIN_DURATION_S)
    else:
        assert request.duration_s is None
    assert 1 <= adjusted.batch_size <= tier.max_batch(adjusted.lm_on)
    assert adjusted.batch_size <= request.batch_size
    assert adjusted.lm_model is None or adjusted.lm_model in tier.lm_models
    if request.lm == "off":
        assert adjusted.lm_model is None
    # every change is explained, and every reduction the user asked beyond is a warning
    for change in adjusted.changes:
        assert change.reason and change.plugin == "tiers_default"
        if change.field in ("duration_s", "batch_size"):
            assert change.warning and tier.label in change.reason


def limits(tier: Tier) -> tuple[int, ...]:
    return (
        tier.max_duration_with_lm_s,
        tier.max_duration_without_lm_s,
        tier.max_batch_with_lm,
        tier.max_batch_without_lm,
    )


@settings(max_examples=300, deadline=None)
@given(memory_gib, memory_gib, st.sampled_from([simulated, real]))
def test_more_memory_never_gives_a_smaller_limit(a: float, b: float, kind) -> None:
    small, large = sorted((a, b))
    low, high = resolve_on(kind(small)).tier, resolve_on(kind(large)).tier
    # with-LM limits mean nothing on a tier without an LM (Tier 2's 360 s vs Tier 3's 240 s), so they are
    # compared only between LM tiers: the rule tables.check_table_sanity applies
    compared = limits(low) if low.lm_models else limits(low)[1::2]
    against = limits(high) if low.lm_models else limits(high)[1::2]
    assert all(lo <= hi for lo, hi in zip(compared, against, strict=True)), (small, large, low.name, high.name)
    assert set(low.lm_models) <= set(high.lm_models)
    assert TIER_NAMES.index(low.name) <= TIER_NAMES.index(high.name)


@settings(max_examples=200, deadline=None)
@given(memory_gib, memory_gib, st.integers(1, 1000), st.floats(min_value=1, max_value=10_000))
def test_more_memory_never_grants_less_without_the_lm(a: float, b: float, batch: int, duration: float) -> None:
    small, large = sorted((a, b))
    request = GenerationRequest(duration_s=duration, batch_size=batch, lm="off")
    low, high = resolve_on(simulated(small), request).adjusted, resolve_on(simulated(large), request).adjusted
    assert low.duration_s <= high.duration_s and low.batch_size <= high.batch_size


@settings(max_examples=200, deadline=None)
@given(memory_gib)
def test_a_real_card_is_never_placed_below_the_same_simulated_size(gib: float) -> None:
    """The real-card tolerance only ever lifts a reading to its class, by at most one boundary."""
    simulated_tier, real_tier = resolve_on(simulated(gib)).tier, resolve_on(real(gib)).tier
    assert 0 <= TIER_NAMES.index(real_tier.name) - TIER_NAMES.index(simulated_tier.name) <= 1
    if TIER_NAMES.index(real_tier.name) > TIER_NAMES.index(simulated_tier.name):
        assert real_tier.min_gb * 0.95 <= gib + 1e-9 < real_tier.min_gb  # only just below a boundary
