"""Upstream ACE-Step's runtime rules in acestep-core's own decisions (issue #19 item 3, #22 item 5):
nano-vllm counts as vllm, ROCm loads the DiT side in fp32 unless ``ACESTEP_ROCM_DTYPE`` says
otherwise, pre-Volta cards run the LM on pt, and free memory is the *effective* free memory
(device free + this process's allocator cache) wherever a decision is sized from it."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import acestep_core_cuda
import pytest
from acestep_core_cuda.replay import load_recording
from conftest import device_reading

from acestep_core import GIB, DetectOptions, GenerationRequest, MemoryReading, Overrides, resolve
from acestep_core.hookspecs import is_valid_reading
from acestep_core.optimize.platforms import lm_backend, lm_backend_problem, precision


def _replay(make_manager, name: str, environ: dict[str, str] | None = None, overrides=None, **request: Any):
    return resolve(
        GenerationRequest(**request),
        overrides=overrides,
        manager=make_manager(("cuda", acestep_core_cuda)),
        detect_options=DetectOptions(replay=name, environ=environ or {}),
        environ={},
    )


# --------------------------------------------------------------------------------------------- nano-vllm
@pytest.mark.parametrize(
    ("installed", "backend"),
    [({"nanovllm"}, "vllm"), ({"vllm"}, "vllm"), ({"nanovllm", "vllm"}, "vllm"), ({"mlx_lm"}, "pt"), (set(), "pt")],
)
def test_upstreams_vendored_nano_vllm_is_a_vllm_backend(make_manager, installed: set[str], backend: str) -> None:
    h100 = _replay(make_manager, "h100-80gb").reading
    setting = lm_backend(h100, find=lambda module: module in installed)
    assert setting.value == backend
    if backend == "vllm":
        found = "nano-vllm (nanovllm)" if "nanovllm" in installed else "vllm"
        assert setting.reason.startswith(f"{found} is installed")
    else:
        assert "neither nano-vllm" in setting.reason


def test_pre_volta_runs_the_lm_on_pt_even_with_nano_vllm(make_manager) -> None:
    old = _replay(make_manager, "gtx1080ti-11gb").reading
    assert lm_backend(old, find=lambda _: True).value == "pt"
    assert "compute capability 7.0" in lm_backend_problem("vllm", old, find=lambda _: True)


# --------------------------------------------------------------------------------------------- ROCm dtype
@pytest.mark.parametrize("name", ["rx7900xtx-rocm", "mi300x-rocm"])
def test_rocm_loads_the_dit_side_in_fp32_and_the_plan_counts_fp32_bytes(make_manager, name: str) -> None:
    unquantized = Overrides(plan={"quantization.dit": "none", "offload.dit": "none"})
    fp32 = _replay(make_manager, name, None, unquantized, lm="off", duration_s=60)
    bf16 = _replay(make_manager, name, {"ACESTEP_ROCM_DTYPE": "bfloat16"}, unquantized, lm="off", duration_s=60)
    for component in ("dit", "text_encoder", "vae"):
        assert fp32.plan.value(f"precision.{component}") == "fp32"
        assert "ACESTEP_ROCM_DTYPE" in fp32.plan[f"precision.{component}"].reason
        assert bf16.plan.value(f"precision.{component}") == "bf16"
        assert "ACESTEP_ROCM_DTYPE=bfloat16" in bf16.plan[f"precision.{component}"].reason
    assert fp32.plan.value("precision.lm") == bf16.plan.value("precision.lm") == "bf16"  # upstream's LM handler
    # the memory model counts the weights in the dtype they load in: the DiT's 2.4 B parameters take twice the
    # bytes in fp32 (≈ 4.46 GiB more), and the DiT phase's predicted peak shows it
    grown = fp32.plan.value("memory.phases")["dit"] - bf16.plan.value("memory.phases")["dit"]
    assert 4.0 < grown < 6.0, grown


@pytest.mark.parametrize(("raw", "dtype"), [("float16", "fp16"), (" BFloat16 ", "bf16"), ("float32", "fp32")])
def test_acestep_rocm_dtype_is_read_as_upstream_reads_it(make_manager, raw: str, dtype: str) -> None:
    resolution = _replay(make_manager, "rx7900xtx-rocm", {"ACESTEP_ROCM_DTYPE": raw})
    device = resolution.reading.device
    assert device.weights_dtype == dtype and device.sources["weights_dtype"] == f"ACESTEP_ROCM_DTYPE={raw.strip()}"
    assert resolution.plan.value("precision.dit") == dtype


def test_an_unknown_rocm_dtype_is_ignored_with_a_note_and_fp32_stays(make_manager) -> None:
    resolution = _replay(make_manager, "rx7900xtx-rocm", {"ACESTEP_ROCM_DTYPE": "int4"})
    assert resolution.reading.device.weights_dtype is None
    assert any("ACESTEP_ROCM_DTYPE='int4'" in note and "ignored" in note for note in resolution.reading.notes)
    assert resolution.plan.value("precision.dit") == "fp32"


def test_the_rocm_variable_changes_nothing_on_nvidia(make_manager) -> None:
    plain = _replay(make_manager, "h100-80gb")
    asked = _replay(make_manager, "h100-80gb", {"ACESTEP_ROCM_DTYPE": "float32"})
    assert asked.reading == plain.reading and asked.plan.value("precision.dit") == "bf16"


def test_a_reading_with_an_unknown_weights_dtype_breaks_the_contract() -> None:
    reading = device_reading(24)
    assert is_valid_reading(reading)
    odd = dataclasses.replace(reading, device=dataclasses.replace(reading.device, weights_dtype="int4"))
    assert not is_valid_reading(odd)
    rocm = dataclasses.replace(reading.device, backend="rocm", weights_dtype="fp16")
    assert precision(MemoryReading(device=rocm))["dit"][0] == "fp16"


# --------------------------------------------------------------------------------------------- effective free
def test_effective_free_is_device_free_plus_the_allocators_cache() -> None:
    device = device_reading(24).device
    busy = dataclasses.replace(device, free_bytes=GIB // 2, sources={"free_bytes": "NVML v2, live"})
    assert busy.effective_free_bytes == GIB // 2 and "no allocator figures given" in busy.free_basis()
    given = MemoryReading(device=busy, visible=(busy,)).with_allocator(12 * GIB, 9 * GIB, "torch, this process")
    device = given.device
    assert device.allocator_cached_bytes == 3 * GIB
    assert device.effective_free_bytes == GIB // 2 + 3 * GIB
    assert given.visible == (device,)
    words = device.free_basis()
    assert "effective free 3.50 GiB" in words and "device free 0.50 GiB (NVML v2, live)" in words
    assert "allocator cache 3.00 GiB" in words and "torch, this process" in words


@pytest.mark.parametrize(
    ("reserved", "allocated"), [(-1, 0), (GIB, 2 * GIB), (1.5, 0), (True, 0), (GIB, None), ("1", "0")]
)
def test_allocator_figures_that_cannot_be_are_refused(reserved: Any, allocated: Any) -> None:
    with pytest.raises(ValueError, match="bytes"):
        device_reading(8).with_allocator(reserved, allocated, "test")


def test_a_plugin_reading_with_half_the_allocator_figures_breaks_the_contract() -> None:
    device = device_reading(8).device
    for reserved, allocated in ((GIB, None), (None, GIB), (GIB, 2 * GIB), (-1, 0)):
        broken = dataclasses.replace(device, allocator_reserved_bytes=reserved, allocator_allocated_bytes=allocated)
        assert not is_valid_reading(MemoryReading(device=broken))


def _loaded(used_gib: float, name: str = "rtx4060ti-16gb") -> MemoryReading:
    """A replayed card where this process's models hold ``used_gib`` GiB (NVML counts them as used)."""
    data = copy.deepcopy(dict(load_recording(name).data))
    v2 = data["nvml"]["gpus"][0]["memory_v2"]
    v2["used"] = int(used_gib * GIB)
    v2["free"] = v2["total"] - v2["reserved"] - v2["used"]
    return data


def test_the_lm_share_is_sized_from_effective_free_memory(make_manager, tmp_path: Path) -> None:
    """Upstream #822: NVML reads 2.67 GiB free on a 16 GB card whose own allocator holds 13 GiB, 9 of them
    cached. Sized from the device free only, the 1.7B LM would get 0.15 of the card; counting the cache
    (effective free 11.67 GiB, over the 8 GB allotment / 0.9), the tier's allotment stands."""
    path = tmp_path / "loaded.json"
    path.write_text(json.dumps(_loaded(13.0)))
    manager = make_manager(("cuda", acestep_core_cuda))
    options = DetectOptions(replay=str(path))
    request = GenerationRequest(lm_model="1.7B")
    reading = resolve(request, manager=manager, detect_options=options, environ={}).reading
    without = resolve(request, manager=manager, reading=reading, environ={})
    setting = without.plan["lm.gpu_memory_ratio"]
    assert setting.plugin == "cuda" and "no allocator figures given" in setting.reason
    assert setting.value == pytest.approx(0.9 * reading.device.free_bytes / reading.device.total_bytes, abs=1e-3)

    cached = reading.with_allocator(13 * GIB, 4 * GIB, "torch.cuda.memory_reserved/allocated, this process")
    with_cache = resolve(request, manager=manager, reading=cached, environ={})
    assert with_cache.plan["lm.gpu_memory_ratio"].plugin == "tiers_default"  # 8 GB fits in 90% of 11.67 GiB

    little = reading.with_allocator(13 * GIB, 12 * GIB, "torch, this process")  # 1 GiB cached: still short
    short = resolve(request, manager=manager, reading=little, environ={}).plan["lm.gpu_memory_ratio"]
    assert short.plugin == "cuda" and "effective free 3.67 GiB = device free 2.67 GiB" in short.reason
    assert short.value == pytest.approx(0.9 * little.device.effective_free_bytes / little.device.total_bytes, abs=1e-3)
