"""configure_optimizations: the tier's defaults made concrete for the hardware, with reasons."""

from __future__ import annotations

import dataclasses

from conftest import device_reading

from acestep_core import CPU, PLAN_KEYS, DetectOptions, DeviceMemory, GenerationRequest, MemoryReading, resolve


def _resolve(make_manager, detected, reading: MemoryReading, request: GenerationRequest | None = None):
    return resolve(request or GenerationRequest(duration_s=120), manager=make_manager(detected(reading)))


def _with(reading: MemoryReading, **changes) -> MemoryReading:
    return MemoryReading(device=dataclasses.replace(reading.device, **changes))


def test_every_plan_key_is_declared(make_manager, detected) -> None:
    plan = _resolve(make_manager, detected, device_reading(8)).plan
    assert set(plan.as_dict()) <= set(PLAN_KEYS)
    assert all(setting.reason for setting in plan)


def test_ampere_gets_bf16_and_pre_ampere_keeps_the_dit_and_vae_in_fp32(make_manager, detected) -> None:
    ampere = _resolve(make_manager, detected, _with(device_reading(24), compute_capability=(8, 6))).plan
    assert {ampere.value(f"precision.{c}") for c in ("lm", "dit", "text_encoder", "vae")} == {"bf16"}
    turing = _resolve(make_manager, detected, _with(device_reading(16), compute_capability=(7, 5))).plan
    assert turing.value("precision.dit") == "fp32" and turing.value("precision.vae") == "fp32"
    assert turing.value("precision.lm") == "fp16"
    assert "NaN/Inf" in turing["precision.dit"].reason
    assert turing.value("attention") == "sdpa" and "8.0" in turing["attention"].reason


def test_mps_gets_no_compile_no_quantization_no_offload_to_the_cpu(make_manager, detected) -> None:
    """On unified memory moving a component to the CPU frees nothing, so the plan never does it between
    phases ('model'); it may *release* a component instead (a rung), which the unified-memory tests check."""
    mps = _with(device_reading(16, backend="mps"), unified_memory=True)
    plan = _resolve(make_manager, detected, mps).plan
    assert plan.value("compile") is False and "MPS" in plan["compile"].reason
    assert all(plan.value(f"quantization.{c}") == "none" for c in ("lm", "dit", "text_encoder"))
    assert "int8" in plan["quantization.dit"].reason
    assert all(plan.value(f"offload.{c}") in ("none", "release") for c in ("lm", "dit", "text_encoder", "vae"))


def test_the_cpu_plan_is_not_budgeted_without_a_host_figure_and_says_so(make_manager, detected) -> None:
    plan = _resolve(make_manager, detected, MemoryReading(device=CPU)).plan
    assert plan.value("memory.budget_gib") is None and plan.value("ladder.refused") is False
    assert plan.value("memory.phases") is None and "not predicted on a CPU" in plan["memory.phases"].reason
    assert plan.value("compile") is False


def test_tier_defaults_are_respected_and_the_lm_head_is_excluded(make_manager, detected) -> None:
    plan = _resolve(make_manager, detected, device_reading(12)).plan
    assert plan.value("quantization.lm") == "int8" and plan.value("offload.dit") == "model"
    assert plan.value("quantization.exclude.lm") == ["lm_head"] and "tied" in plan["quantization.exclude.lm"].reason
    assert plan.value("attention.dit") == "native"


def test_small_cards_tile_the_vae_and_big_ones_decode_whole(make_manager, detected) -> None:
    small = resolve(GenerationRequest(duration_s=240), detect_options=DetectOptions(vram_gb="8", environ={})).plan
    assert small.value("vae.decode") == "tiled" and "vae.tiled" in small.value("ladder.rungs")
    h100 = DeviceMemory(backend="cuda", name="H100", index=0, total_bytes=85_520_809_984, compute_capability=(9, 0))
    big = _resolve(make_manager, detected, MemoryReading(device=h100), GenerationRequest(duration_s=60)).plan
    assert big.value("vae.decode") == "full" and big.value("ladder.rungs") == []
    assert "predicted" in big["memory.predicted_peak_gib"].reason
