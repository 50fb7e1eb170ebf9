"""Right answers off a modern NVIDIA card: Apple silicon (unified memory), AMD (ROCm), Intel (XPU),
older NVIDIA cards and the CPU. Every recording is replayed through the whole decision (the cuda
plugin's real NVML / torch code paths → tier → request → plan)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import acestep_core_cuda
import pytest
from acestep_core_cuda.fallbacks import HostSigns, fallback_reading, host_memory_available, import_torch
from acestep_core_cuda.nvml import NvmlFailure
from acestep_core_cuda.replay import bundled_recordings, load_recording

from acestep_core import GIB, DetectOptions, GenerationRequest, MemoryReading, Overrides, Resolution, resolve
from acestep_core.optimize import platforms
from acestep_core.optimize.platforms import lm_backend, lm_backend_problem

MIB = 2**20


def replay(
    make_manager, name: str, request: GenerationRequest | None = None, overrides: Overrides | None = None
) -> Resolution:
    options = DetectOptions(replay=name, environ={})
    return resolve(
        request,
        overrides=overrides,
        manager=make_manager(("cuda", acestep_core_cuda)),
        detect_options=options,
        environ={},
    )


@dataclass(frozen=True)
class Expected:
    backend: str
    total_bytes: int
    tier: str
    precision: dict[str, str]
    budget_words: str
    """Words the budget's reason must hold (what was subtracted)."""


FP16_FP32 = {"lm": "fp16", "text_encoder": "fp16", "dit": "fp32", "vae": "fp32"}
BF16 = dict.fromkeys(("lm", "text_encoder", "dit", "vae"), "bf16")
MPS = {"lm": "fp16", "text_encoder": "fp16", "dit": "fp16", "vae": "fp32"}
ROCM = {"lm": "bf16", "text_encoder": "fp32", "dit": "fp32", "vae": "fp32"}
"""Upstream ACE-Step loads its DiT handler's models in fp32 on ROCm unless ACESTEP_ROCM_DTYPE says
otherwise (its #771); its LM handler keeps bf16 there (issue #19)."""

PLATFORM_RECORDINGS: dict[str, Expected] = {
    # Apple silicon: Metal's recommendedMaxWorkingSetSize (each recording's "source" says where it comes from)
    "macbook-air-m2-8gb": Expected("mps", 5_726_623_744, "tier2", MPS, "working set"),
    "macbook-pro-m1pro-16gb": Expected("mps", 11_453_251_584, "tier4", MPS, "working set"),
    "macbook-pro-m3pro-36gb": Expected("mps", 28_991_029_248, "unlimited", MPS, "working set"),
    "mac-studio-m1max-64gb": Expected("mps", 51_539_607_552, "unlimited", MPS, "working set"),
    # AMD through ROCm (torch's cuda), Intel through XPU
    "rx7900xtx-rocm": Expected("rocm", 24560 * MIB, "unlimited", ROCM, "HIP context"),
    "mi300x-rocm": Expected("rocm", 196592 * MIB, "unlimited", ROCM, "HIP context"),
    "arc-a770-xpu": Expected("xpu", 15473 * MIB, "tier5", BF16, "Level Zero context"),
    # older NVIDIA cards through NVML
    "gtx1080ti-11gb": Expected("cuda", 11264 * MIB, "tier4", FP16_FP32, "CUDA context"),
    "v100-16gb": Expected("cuda", 16160 * MIB, "tier6", FP16_FP32, "CUDA context"),
    "t4-16gb": Expected("cuda", 15360 * MIB, "tier5", FP16_FP32, "CUDA context"),
    # NVIDIA without NVML: torch's answers replayed through the code that asks torch
    "rtx3090-no-nvml": Expected("cuda", 25_438_126_080, "unlimited", BF16, "CUDA context"),
}


@pytest.mark.parametrize("name", sorted(PLATFORM_RECORDINGS))
def test_each_recording_through_the_whole_decision(make_manager, name: str) -> None:
    expected = PLATFORM_RECORDINGS[name]
    resolution = replay(make_manager, name)
    device, plan = resolution.reading.device, resolution.plan
    assert (device.backend, device.total_bytes) == (expected.backend, expected.total_bytes)
    assert resolution.decided_by("detect_memory") == "cuda"
    assert resolution.tier.name == expected.tier
    assert {c: plan.value(f"precision.{c}") for c in expected.precision} == expected.precision
    assert all(plan[f"precision.{c}"].reason for c in expected.precision)
    assert plan.value("ladder.refused") is False, plan["ladder.refused"].reason
    assert plan.value("memory.predicted_peak_gib") <= plan.value("memory.budget_gib")
    assert expected.budget_words in plan["memory.budget_gib"].reason
    if expected.backend != "cuda":
        assert plan.value("attention") == "sdpa" and expected.backend in plan["attention"].reason
    if resolution.adjusted.lm_on:
        assert plan.value("lm.backend") in ("pt", "vllm", "mlx") and plan["lm.backend"].reason
    assert load_recording(name).data["source"], "every recording says where its figures come from"


def test_every_bundled_recording_is_replayed_by_a_test() -> None:
    from test_cuda_detection import EXPECTED

    covered = set(PLATFORM_RECORDINGS) | {row[0] for row in EXPECTED} | {"apple-m2-pro-mps", "cpu-only"}
    assert set(bundled_recordings()) == covered


# --------------------------------------------------------------------------------------------- unified memory
MPS_SIZES = (8, 12, 16, 18, 24, 32, 64)


def _at_limits(resolution: Resolution) -> GenerationRequest:
    """The request at the tier's own limits (its longest clip, its largest batch, the LM on where allowed)."""
    tier = resolution.tier
    lm_on = bool(tier.lm_models)
    return GenerationRequest(
        duration_s=tier.max_duration_s(lm_on), batch_size=tier.max_batch(lm_on), lm="on" if lm_on else "off"
    )


@pytest.mark.parametrize("gb", MPS_SIZES)
def test_no_simulated_mac_is_refused_at_the_tiers_limits(gb: int) -> None:
    options = DetectOptions(environ={"MAX_MPS_VRAM": str(gb)})
    default = resolve(detect_options=options, environ={})
    for resolution in (default, resolve(_at_limits(default), detect_options=options, environ={})):
        plan = resolution.plan
        assert resolution.reading.device.unified_memory
        assert plan.value("ladder.refused") is False, (gb, plan["ladder.refused"].reason)
        assert plan.value("memory.predicted_peak_gib") <= plan.value("memory.budget_gib")
        assert (
            "CUDA context" not in plan["memory.budget_gib"].reason
            and "host reserve" in plan["memory.budget_gib"].reason
        )
        assert not any(
            plan.value(f"offload.{c}") in ("model", "sequential") for c in ("lm", "text_encoder", "dit", "vae")
        )


def test_the_unified_budget_is_the_working_set_less_a_host_reserve_and_margin() -> None:
    budget = platforms.unified_budget(16 * GIB)
    assert budget.context_bytes == platforms.UNIFIED_HOST_RESERVE_BYTES
    assert budget.usable_bytes == 16 * GIB - budget.context_bytes - budget.margin_bytes
    assert budget.usable_bytes > platforms.device_budget(16 * GIB).usable_bytes - GIB  # no 808 MiB CUDA context on top


def test_the_bundled_mac_fits_and_releases_only_what_it_must(make_manager) -> None:
    resolution = replay(
        make_manager, "apple-m2-pro-mps", GenerationRequest(duration_s=480, batch_size=4, lm_model="4B")
    )
    plan = resolution.plan
    assert plan.value("ladder.refused") is False
    assert plan.value("compile") is False and "MPS" in plan["compile"].reason
    assert plan.value("quantization.dit") == "none" and "int8" in plan["quantization.dit"].reason


def test_a_small_mac_releases_components_between_phases_and_records_each_rung(make_manager) -> None:
    resolution = replay(make_manager, "macbook-air-m2-8gb")
    plan = resolution.plan
    rungs = plan.value("ladder.rungs")
    released = [r for r in rungs if r.endswith("=release")]
    assert released, rungs
    for rung in released:
        component = rung.split("=")[0].split(".")[1]
        assert plan.value(f"offload.{component}") in ("release", "group")
        assert "frees nothing" in plan["ladder.rungs"].reason
    assert "offload.dit=group" in rungs and "working set only" in plan["ladder.rungs"].reason
    assert plan.value("ladder.refused") is False


@pytest.mark.parametrize("name", ["apple-m2-pro-mps", "macbook-air-m2-8gb", "mac-studio-m1max-64gb"])
def test_mps_decodes_in_tiles_under_the_conv1d_output_limit(make_manager, name: str) -> None:
    plan = replay(make_manager, name, GenerationRequest(duration_s=240)).plan
    window = plan.value("vae.tile_frames") + 2 * plan.value("vae.tile_overlap")
    assert plan.value("vae.decode") == "tiled"
    assert window * 1920 <= platforms.MPS_CONV_OUTPUT_LIMIT
    assert "65,536" in plan["vae.decode"].reason


def test_the_plans_mps_tiles_decode_like_the_whole_clip_with_every_window_under_the_limit(one_torch_thread) -> None:
    torch = pytest.importorskip("torch")
    from acestep_core.runtime.models import build_vae
    from acestep_core.runtime.vae_decode import TILED_TOLERANCE_FP32, decode

    torch.manual_seed(0)
    vae = build_vae("tiny")
    windows: list[int] = []
    original = vae.decode

    def spy(latents, *args, **kwargs):
        windows.append(latents.shape[-1])
        return original(latents, *args, **kwargs)

    latents = torch.randn(1, 64, 70)
    whole = decode(vae, latents)
    vae.decode = spy
    tile, overlap = platforms.MPS_VAE_TILE
    tiled = decode(vae, latents, tiled=True, tile_frames=tile, overlap=overlap)
    assert max(windows) <= tile + 2 * overlap <= platforms.MPS_CONV_OUTPUT_LIMIT // 1920
    assert ((tiled - whole).abs().max() / whole.abs().max()).item() < TILED_TOLERANCE_FP32


# --------------------------------------------------------------------------------------------- older NVIDIA
@pytest.mark.parametrize(
    ("name", "capability"), [("gtx1080ti-11gb", (6, 1)), ("v100-16gb", (7, 0)), ("t4-16gb", (7, 5))]
)
def test_older_nvidia_cards(make_manager, name: str, capability: tuple[int, int]) -> None:
    resolution = replay(make_manager, name, GenerationRequest(lm_model="0.6B"))
    device, plan = resolution.reading.device, resolution.plan
    assert device.compute_capability == capability and "NVML" in device.sources["total_bytes"]
    assert plan.value("precision.lm") == "fp16" and plan.value("precision.dit") == plan.value("precision.vae") == "fp32"
    assert "overflows" in plan["precision.dit"].reason
    assert (
        plan.value("attention") == "sdpa"
        and "Flash Attention 2 needs compute capability 8.0" in plan["attention"].reason
    )
    reading = resolution.reading
    if capability < (7, 0):
        assert plan.value("lm.backend") == "pt"
        assert lm_backend(reading, find=lambda _: True).value == "pt"  # even with vllm installed
        assert "7.0" in lm_backend_problem("vllm", reading, find=lambda _: True)
    else:
        assert lm_backend(reading, find=lambda module: module == "vllm").value == "vllm"
        assert lm_backend(reading, find=lambda module: module == "nanovllm").value == "vllm"
        assert "neither nano-vllm" in lm_backend_problem("vllm", reading, find=lambda _: False)


# --------------------------------------------------------------------------------------------- LM backend
def test_lm_backend_rules(make_manager) -> None:
    everything = lambda _: True  # noqa: E731 - every package "installed"
    mac = replay(make_manager, "apple-m2-pro-mps").reading
    amd = replay(make_manager, "rx7900xtx-rocm").reading
    h100 = replay(make_manager, "h100-80gb").reading
    assert lm_backend(h100, find=everything).value == "vllm"
    assert lm_backend(mac, find=everything).value == "mlx"
    assert lm_backend(mac, find=lambda module: module == "vllm").value == "pt"
    assert "mlx-lm is not installed" in lm_backend(mac, find=lambda _: False).reason
    assert lm_backend(amd, find=everything).value == "pt"
    assert "NVIDIA CUDA only" in lm_backend_problem("vllm", amd, find=everything)
    assert "Apple silicon only" in lm_backend_problem("mlx", h100, find=everything)
    assert lm_backend_problem("tensorrt", h100) is not None
    assert all(lm_backend_problem("pt", r) is None for r in (mac, amd, h100))


def test_vllm_and_mlx_are_looked_up_without_being_imported() -> None:
    before = set(sys.modules)
    platforms.installed("vllm"), platforms.installed("nanovllm"), platforms.installed("mlx_lm")
    assert not {"vllm", "nanovllm", "mlx_lm", "mlx"} & (set(sys.modules) - before)


def test_a_users_impossible_backend_is_refused_with_the_reason(make_manager) -> None:
    refused = replay(
        make_manager, "apple-m2-pro-mps", GenerationRequest(lm_model="0.6B"), Overrides(plan={"lm.backend": "vllm"})
    )
    setting = refused.plan["lm.backend"]
    assert (
        setting.value == "pt"
        and setting.warning
        and "refused" in setting.reason
        and "NVIDIA CUDA only" in setting.reason
    )
    assert any("lm.backend='vllm' refused" in w for w in refused.warnings)
    accepted = replay(
        make_manager, "h100-80gb", GenerationRequest(lm_model="0.6B"), Overrides(plan={"lm.backend": "pt"})
    )
    assert accepted.plan.value("lm.backend") == "pt" and any(o.key == "lm.backend" for o in accepted.overrides)


# --------------------------------------------------------------------------------------------- no default plan refused
SIMULATED_GB = (3, 4, 6, 8, 12, 16, 20, 24, 32, 48, 80, 192)


@pytest.mark.parametrize("variable", ["MAX_CUDA_VRAM", "MAX_MPS_VRAM", "MAX_XPU_VRAM"])
def test_no_default_plan_is_refused_for_a_simulated_size(variable: str) -> None:
    for gb in SIMULATED_GB:
        resolution = resolve(detect_options=DetectOptions(environ={variable: str(gb)}), environ={})
        assert resolution.plan.value("ladder.refused") is False, (
            variable,
            gb,
            resolution.plan["ladder.refused"].reason,
        )


def test_no_default_plan_is_refused_for_a_bundled_recording(make_manager) -> None:
    for name in bundled_recordings():
        plan = replay(make_manager, name).plan
        assert plan.value("ladder.refused") is False, (name, plan["ladder.refused"].reason)


# --------------------------------------------------------------------------------------------- the CPU, for real
def test_the_cpu_fallback_asks_the_real_torch_and_finds_no_device() -> None:
    """A sign (an Intel GPU file, say) makes the plugin import torch; this machine's real CPU torch answers
    every question (CUDA/ROCm, MPS, XPU). The version is given without ``+cpu``, as a PyPI-default build
    reads, because the plugin never imports a build it knows is CPU-only."""
    import torch

    version = torch.__version__.split("+")[0]
    signs = HostSigns(
        system="Linux",
        machine="x86_64",
        torch_version=version,
        intel_gpu=True,
        memory_available=host_memory_available(),
    )
    reading = fallback_reading(
        NvmlFailure("library-not-found", "NVML library not found"), signs, import_torch, DetectOptions()
    )
    assert reading.device.backend == "cpu"
    assert f"torch {torch.__version__} found no usable device" in reading.notes[0]  # the real module's version
    assert reading.device.free_bytes == signs.memory_available


def test_the_cpu_plan_budgets_host_memory_and_predicts_no_gpu_figure(make_manager) -> None:
    resolution = resolve(manager=make_manager(("cuda", acestep_core_cuda)), environ={})
    if resolution.reading.device.backend != "cpu":
        pytest.skip("this machine has an accelerator")
    plan = resolution.plan
    available = host_memory_available()
    assert available is not None
    assert abs(plan.value("memory.budget_gib") - available / GIB) < 1.0  # read a moment apart
    assert "available memory" in plan["memory.budget_gib"].reason
    assert plan.value("memory.phases") is None and plan.value("memory.predicted_peak_gib") is None
    assert "not predicted on a CPU" in plan["memory.phases"].reason


def test_the_recorded_cpu_plan_uses_the_recorded_host_memory(make_manager) -> None:
    plan = replay(make_manager, "cpu-only").plan
    assert plan.value("memory.budget_gib") == 12.0 and plan.value("memory.phases") is None


# --------------------------------------------------------------------------------------------- device choice
@pytest.mark.parametrize(
    ("name", "expected"), [("arc-a770-xpu", "xpu:0"), ("rx7900xtx-rocm", "cuda:0"), ("rtx3090-no-nvml", "cuda:0")]
)
def test_the_pipeline_picks_the_torch_device_the_recording_answers(name: str, expected: str) -> None:
    pytest.importorskip("torch")
    from acestep_core.runtime.pipeline.session import torch_device

    recording = load_recording(name)
    reading: MemoryReading = acestep_core_cuda.detect_memory(DetectOptions(replay=name, environ={}))
    assert str(torch_device(reading.device.backend, reading.device.index, torch_module=recording.torch())) == expected


@pytest.mark.parametrize("backend", ["cuda", "rocm", "xpu", "mps", "cpu"])
def test_on_this_cpu_every_backend_falls_back_to_the_cpu_with_the_real_torch(backend: str) -> None:
    pytest.importorskip("torch")
    from acestep_core.runtime.pipeline.session import torch_device

    assert str(torch_device(backend, 0)) == "cpu"


def test_calibrate_picks_cuda_then_xpu_then_cpu() -> None:
    pytest.importorskip("torch")
    from acestep_core.runtime.calibrate.torch_backend import auto_device, cuda_available, xpu_available

    assert auto_device() == ("cuda" if cuda_available() else "xpu" if xpu_available() else "cpu")


def test_a_released_component_is_freed_after_its_phase(one_torch_thread) -> None:
    torch = pytest.importorskip("torch")
    from acestep_core.runtime.pipeline.records import CancelHandle, RunOptions
    from acestep_core.runtime.pipeline.session import RunSession

    resolution = resolve(
        GenerationRequest(duration_s=10), overrides=Overrides(plan={"offload.vae": "release"}), environ={}
    )
    session = RunSession(resolution, RunOptions(progress=False), CancelHandle())
    with session.phase("vae") as phase:
        model = session.component("vae", lambda: torch.nn.Linear(2, 2))
        assert "released after its phase" in " ".join(phase.details["applied"])
        session.leave("vae")
    assert "vae" not in session.models and "vae" not in session.applied
    assert "freed" in phase.finished().details["released"]
    del model


def test_generate_runs_for_the_bundled_mac_it_used_to_refuse(tmp_path, one_torch_thread) -> None:
    """The Mac's plan is no longer refused, so ``generate`` runs it (here on the CPU, which torch reaches:
    the plan's unified-memory savings are dropped there and the run says so)."""
    pytest.importorskip("torch")
    from acestep_core.runtime.pipeline import generate

    request = GenerationRequest(duration_s=10, batch_size=1, lm="off")
    result = generate(
        request,
        detect_options=DetectOptions(replay="apple-m2-pro-mps", environ={}),
        environ={},
        out_dir=tmp_path,
        steps=1,
        progress=False,
    )
    assert result.resolution.reading.device.backend == "mps"
    assert result.resolution.plan.value("ladder.refused") is False
    assert len(result.clips) == 1 and any("torch cannot reach it" in note for note in result.notes)


SEED_TIPS = {
    "tier1": None,
    "tier2": None,
    "tier3": None,
    "tier4": "0.6B",
    "tier5": "0.6B",
    "tier6": "1.7B",
    "unlimited": "4B",
}
"""The seed's memory tips: < 8 GB the DiT alone, 8-16 GB the 0.6B LM, > 16 GB 1.7B / 4B (the table's recommended_lm)."""


@pytest.mark.parametrize("name", [*sorted(PLATFORM_RECORDINGS), "apple-m2-pro-mps"])
def test_auto_loads_the_seeds_recommended_lm_on_every_platform(make_manager, name: str) -> None:
    resolution = replay(make_manager, name)
    assert resolution.adjusted.lm_model == SEED_TIPS[resolution.tier.name], (name, resolution.tier.name)
    assert not any(change.field == "lm_model" and change.warning for change in resolution.adjusted.changes)
    if resolution.adjusted.lm_on:
        assert "lm.backend" in resolution.plan
