"""Upstream ACE-Step's ``acestep/gpu_config.py`` API, every answer decided by acestep-core.

An upstream maintainer points ``acestep.gpu_config`` here (see the README, "Using acestep-core
inside ACE-Step") and the CLI, Gradio launcher, REST API server, inference and LM modules and
handlers run unchanged. Nothing here holds a tier value or a boundary: each call runs
:func:`acestep_core.resolve` with the active tier table (``ACESTEP_CORE_TIERS`` /
``--tiers``; ``default`` unless chosen) and reads the environment at that call, as upstream
re-reads ``MAX_CUDA_VRAM``. With ``ACESTEP_CORE_TIERS=upstream-2026-02`` the answers are upstream's
February 2026 ones value for value; with ``default`` they are the GPU guide's decisions.

Sizes are GiB, as upstream's "GB". A size passed in (``get_gpu_config(8)``) is decided as a device
of exactly that size, except that the size this machine's detection returned
(``get_gpu_config(get_gpu_memory_gb())``) is decided as that detected device (so a real card's
tolerance applies as it does for ``get_gpu_config()``); 0 or less is no GPU (the first tier).
Under simulation (``MAX_CUDA_VRAM``) nothing here imports torch.

Covered, with upstream's names and call shapes (February 2026):
    ``GPUConfig`` (same fields, types and order), ``get_gpu_config(gpu_memory_gb=None)``,
    ``get_gpu_memory_gb()`` (0.0 with no GPU), ``get_gpu_tier(gb)``, ``get_global_gpu_config()``,
    ``set_global_gpu_config(config)``, ``get_recommended_lm_model(config)``,
    ``is_lm_model_supported(path, config)``, ``get_lm_gpu_memory_ratio(path, total_gb)``,
    ``get_lm_model_size(path)``, ``check_duration_limit(...)``, ``check_batch_size_limit(...)``
    (upstream's message texts), ``print_gpu_config_info(config)`` (to the ``logging`` logger of this
    module, not loguru), ``VRAM_16GB_MIN_GB`` (the active table's start of the 16 GB class).
Covered, April 2026 names that map onto acestep-core decisions:
    ``GPUConfig.recommended_lm_model`` (the tier's ``recommended_lm``), ``recommended_backend`` (the
    plan's ``lm.backend``: vllm / mlx / pt), ``lm_backend_restriction`` (``all`` where the LM backend
    rule lets this platform run vllm, else ``pt_mlx_only``), ``offload_to_cpu_default``
    (the plan offloads the LM, text encoder or VAE), ``offload_dit_to_cpu_default`` (the plan
    offloads the DiT), ``quantization_default`` (the plan quantizes the DiT), ``compile_model_default``
    (the plan compiles: off where the platform cannot, e.g. no triton), ``get_gpu_config_for_tier(tier)``,
    ``GPU_TIER_LABELS``, ``GPU_TIER_CHOICES``.
Not covered: the MPS overrides as upstream writes them (acestep-core decides compile / quantization /
offload / LM backend per platform in its plan instead); ``is_mps_platform``,
``resolve_device``, ``get_gpu_device_name``, ``get_effective_free_vram_gb``,
``get_available_vram_gb``, ``compute_adaptive_config``, ``estimate_inference_vram``,
``is_lm_model_size_allowed``, ``find_best_lm_model_on_disk``, upstream's ``tier6`` → ``tier6b`` alias,
``MODEL_VRAM`` / ``LM_VRAM`` and the other April constants; upstream's hard VRAM cap under ``MAX_CUDA_VRAM``
(``set_per_process_memory_fraction``: acestep-core's pipeline budgets instead).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from acestep_core.optimize.platforms import lm_backend, lm_backend_problem
from acestep_core.plugins import get_plugin_manager
from acestep_core.resolve import TIERS_ENV, available_tables, choose_table, detect, resolve
from acestep_core.types import (
    CPU,
    GIB,
    LM_SIZES,
    DetectOptions,
    DeviceMemory,
    GenerationRequest,
    MemoryReading,
    Resolution,
    TierTable,
)

if TYPE_CHECKING:
    import logging

__all__ = [
    "GPUConfig",
    "check_batch_size_limit",
    "check_duration_limit",
    "get_global_gpu_config",
    "get_gpu_config",
    "get_gpu_config_for_tier",
    "get_gpu_memory_gb",
    "get_gpu_tier",
    "get_lm_gpu_memory_ratio",
    "get_lm_model_size",
    "get_recommended_lm_model",
    "is_lm_model_supported",
    "print_gpu_config_info",
    "set_global_gpu_config",
]

LM_PREFIX = "acestep-5Hz-lm-"
"""Upstream's LM model names: ``acestep-5Hz-lm-<size>``."""
DEBUG_MAX_CUDA_VRAM_ENV = "MAX_CUDA_VRAM"
DEBUG_MAX_MPS_VRAM_ENV = "MAX_MPS_VRAM"


def _logger() -> logging.Logger:
    """This module's logger; :mod:`logging` is imported on the first message, not at start-up
    (it costs a cold process more than this module's own import)."""
    import logging

    return logging.getLogger(__name__)


@dataclass
class GPUConfig:
    """Upstream's record, field for field (February 2026 order, so positional construction works),
    then the April 2026 additions acestep-core decides, with defaults."""

    tier: str
    gpu_memory_gb: float
    max_duration_with_lm: int
    max_duration_without_lm: int
    max_batch_size_with_lm: int
    max_batch_size_without_lm: int
    init_lm_default: bool
    available_lm_models: list[str]
    lm_memory_gb: dict[str, float]
    recommended_lm_model: str = ""
    lm_backend_restriction: str = "all"
    recommended_backend: str = "vllm"
    offload_to_cpu_default: bool = True
    offload_dit_to_cpu_default: bool = True
    quantization_default: bool = True
    compile_model_default: bool = True
    decided_by: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """acestep-core's extra: table name, tier label and warnings behind these values."""


# --------------------------------------------------------------------------------------------- deciding
def _environ() -> dict[str, str]:
    return dict(os.environ)


def _detected(environ: dict[str, str]) -> MemoryReading:
    reading, _plugin, problems = detect(get_plugin_manager(), DetectOptions(environ=environ))
    for problem in problems:
        _logger().warning(problem.message())
    return reading


def _reading_for(gpu_memory_gb: float, environ: dict[str, str]) -> MemoryReading:
    """The device a caller's figure stands for (see the module's docstring)."""
    detected = _detected(environ)
    device = detected.device
    if device.is_accelerator and device.total_bytes and _gib(detected) == gpu_memory_gb:
        return detected
    if gpu_memory_gb <= 0:
        return MemoryReading(device=CPU)
    total = round(gpu_memory_gb * GIB)
    backend = device.backend if device.is_accelerator else "cuda"
    given = DeviceMemory(
        backend=backend,
        name=f"a {gpu_memory_gb:g} GB {backend} device (given to gpu_config)",
        index=0,
        total_bytes=total,
        free_bytes=total,
        reserved_bytes=0,
        sources={"total_bytes": "gpu_memory_gb argument"},
        unified_memory=device.unified_memory,
        simulated=True,
    )
    return MemoryReading(device=given, visible=(given,))


def _resolve(gpu_memory_gb: float | None, request: GenerationRequest | None = None) -> tuple[Resolution, float]:
    environ = _environ()
    if gpu_memory_gb is None:
        resolution = resolve(request, environ=environ)
        return resolution, _gib(resolution.reading)
    gb = float(gpu_memory_gb)
    return resolve(request, environ=environ, reading=_reading_for(gb, environ)), gb


def _gib(reading: MemoryReading) -> float:
    """GiB to a millionth: readings are whole bytes, so ``MAX_CUDA_VRAM=7.99`` reads 7.98999999929;
    upstream callers get back the 7.99 they set."""
    total = reading.device.total_bytes
    return round(total / GIB, 6) if reading.device.is_accelerator and total else 0.0


def _active_table() -> TierTable:
    tables, _problems = available_tables(get_plugin_manager())
    return choose_table(tables, os.environ.get(TIERS_ENV) or None).table


def vllm_allowed(reading: MemoryReading) -> bool:
    """Upstream's ``lm_backend_restriction``: whether this platform may run vllm at all (whether it is
    installed aside), by acestep-core's LM backend rule."""
    return lm_backend_problem("vllm", reading, find=lambda _module: True) is None


def _config(resolution: Resolution, gpu_memory_gb: float) -> GPUConfig:
    tier, plan = resolution.tier, resolution.plan
    offloaded = {c: plan.value(f"offload.{c}", "none") != "none" for c in ("lm", "text_encoder", "vae", "dit")}
    return GPUConfig(
        tier=tier.name,
        gpu_memory_gb=gpu_memory_gb,
        max_duration_with_lm=tier.max_duration_with_lm_s,
        max_duration_without_lm=tier.max_duration_without_lm_s,
        max_batch_size_with_lm=tier.max_batch_with_lm,
        max_batch_size_without_lm=tier.max_batch_without_lm,
        init_lm_default=resolution.adjusted.lm_on,
        available_lm_models=[LM_PREFIX + size for size in tier.lm_models],
        lm_memory_gb=dict(tier.lm_memory_gb),
        recommended_lm_model=LM_PREFIX + tier.recommended_lm if tier.recommended_lm else "",
        lm_backend_restriction="all" if vllm_allowed(resolution.reading) else "pt_mlx_only",
        recommended_backend=str(plan.value("lm.backend") or lm_backend(resolution.reading).value),
        offload_to_cpu_default=offloaded["lm"] or offloaded["text_encoder"] or offloaded["vae"],
        offload_dit_to_cpu_default=offloaded["dit"],
        quantization_default=plan.value("quantization.dit", "none") != "none",
        compile_model_default=bool(plan.value("compile", False)),
        decided_by={"table": resolution.table, "tier": tier.label, "warnings": list(resolution.warnings)},
    )


# --------------------------------------------------------------------------------------------- the API
def get_gpu_memory_gb() -> float:
    """The device's memory in GB as acestep-core detects it (``MAX_CUDA_VRAM`` / ``MAX_MPS_VRAM`` /
    ``MAX_XPU_VRAM`` simulate one); 0.0 when there is no GPU. Detection is read again whenever the
    environment changes."""
    reading = _detected(_environ())
    for note in reading.notes:
        _logger().warning(note)
    return _gib(reading)


def get_gpu_tier(gpu_memory_gb: float) -> str:
    """The active table's tier id for a device of ``gpu_memory_gb`` GB (``tier1`` … ``unlimited``)."""
    return _resolve(gpu_memory_gb)[0].tier.name


def get_gpu_config(gpu_memory_gb: float | None = None) -> GPUConfig:
    """A new :class:`GPUConfig` for this machine (``None``: detect) or for a device of that size."""
    resolution, gb = _resolve(gpu_memory_gb)
    return _config(resolution, gb)


def get_gpu_config_for_tier(tier: str) -> GPUConfig:
    """The config of a tier chosen by id (a UI's manual choice); ``gpu_memory_gb`` stays the detected
    figure. The tier's values are decided for a device inside the tier (its upper bound where it
    includes it, else its middle; 1 GB above an unbounded tier's start). An unknown id logs a
    warning and returns :func:`get_gpu_config`, as upstream does."""
    table = _active_table()
    try:
        chosen = table.tier(tier)
    except KeyError:
        _logger().warning(f"Unknown tier '{tier}', falling back to auto-detected config")
        return get_gpu_config()
    if chosen.max_gb is None:
        inside = chosen.min_gb + 1
    elif chosen.max_inclusive:
        inside = chosen.max_gb
    else:
        inside = (chosen.min_gb + chosen.max_gb) / 2
    resolution, _gb = _resolve(inside)
    if resolution.tier.name != chosen.name:
        raise RuntimeError(
            f"{inside:g} GB was placed in {resolution.tier.name}, not {chosen.name}: "
            f"the tier plugin disagrees with table {table.name!r}"
        )
    return _config(resolution, get_gpu_memory_gb())


def get_lm_model_size(model_path: str) -> str:
    """``0.6B`` / ``1.7B`` / ``4B`` by the size written in the name; anything else ``0.6B``."""
    return next((size for size in LM_SIZES if size in model_path), LM_SIZES[0])


def get_lm_gpu_memory_ratio(model_path: str, total_gpu_memory_gb: float) -> tuple[float, float]:
    """``(ratio, target_gb)``: the share of a ``total_gpu_memory_gb`` device the LM's allocator may
    take (the plan's ``lm.gpu_memory_ratio``) and the GB that stands for.

    Where the tier for that size loads this LM, both come from the plan. Where it does not (a 1.7B
    LM on an 8 GB device), the allotment the active table gives the size on the first tier that
    allows it is bounded by the tier's ratio floor and ceiling, as the plan would."""
    if total_gpu_memory_gb <= 0:
        raise ValueError(f"total_gpu_memory_gb must be positive, not {total_gpu_memory_gb!r}")
    size = get_lm_model_size(model_path)
    resolution, gb = _resolve(total_gpu_memory_gb, GenerationRequest(lm="on", lm_model=size))
    tier = resolution.tier
    ratio = resolution.plan.value("lm.gpu_memory_ratio")
    if resolution.adjusted.lm_model == size and ratio is not None:
        target = tier.lm_memory_gb.get(size)
        return float(ratio), float(target) if target is not None else float(ratio) * gb
    allotments = [t.lm_memory_gb[size] for t in _active_table().tiers if size in t.lm_memory_gb]
    if not allotments:
        return 0.5, 0.5 * gb
    return tier.lm_memory_ratio(allotments[0], gb), float(allotments[0])


def check_duration_limit(duration: float, gpu_config: GPUConfig, lm_initialized: bool) -> tuple[bool, str]:
    """``(True, "")`` within the config's limit, else ``(False, warning)`` in upstream's words."""
    limit = gpu_config.max_duration_with_lm if lm_initialized else gpu_config.max_duration_without_lm
    if duration <= limit:
        return True, ""
    return False, (
        f"⚠️ Requested duration ({duration:.0f}s) exceeds the limit for your GPU "
        f"({gpu_config.gpu_memory_gb:.1f}GB). Maximum allowed: {limit}s "
        f"({'with' if lm_initialized else 'without'} LM). Duration will be clamped to {limit}s."
    )


def check_batch_size_limit(batch_size: int, gpu_config: GPUConfig, lm_initialized: bool) -> tuple[bool, str]:
    """``(True, "")`` within the config's limit, else ``(False, warning)`` in upstream's words."""
    limit = gpu_config.max_batch_size_with_lm if lm_initialized else gpu_config.max_batch_size_without_lm
    if batch_size <= limit:
        return True, ""
    return False, (
        f"⚠️ Requested batch size ({batch_size}) exceeds the limit for your GPU "
        f"({gpu_config.gpu_memory_gb:.1f}GB). Maximum allowed: {limit} "
        f"({'with' if lm_initialized else 'without'} LM). Batch size will be clamped to {limit}."
    )


def is_lm_model_supported(model_path: str, gpu_config: GPUConfig) -> tuple[bool, str]:
    """Whether the config's tier allows the LM's size, with upstream's warning when it does not."""
    if not gpu_config.available_lm_models:
        return False, (
            f"⚠️ Your GPU ({gpu_config.gpu_memory_gb:.1f}GB) does not have enough memory "
            "to run any LM model. Please disable LM initialization."
        )
    size = get_lm_model_size(model_path)
    if any(get_lm_model_size(name) == size for name in gpu_config.available_lm_models):
        return True, ""
    return False, (
        f"⚠️ LM model {model_path} ({size}) is not supported for your GPU "
        f"({gpu_config.gpu_memory_gb:.1f}GB). Available models: {', '.join(gpu_config.available_lm_models)}"
    )


def get_recommended_lm_model(gpu_config: GPUConfig) -> str | None:
    """The tier's recommended LM (the table's ``recommended_lm``); None when the tier allows none.
    A config built by hand without one gets the largest available, as upstream's did."""
    if not gpu_config.available_lm_models:
        return None
    return gpu_config.recommended_lm_model or gpu_config.available_lm_models[-1]


def print_gpu_config_info(gpu_config: GPUConfig) -> None:
    """Log the config (INFO, this module's logger), line for line as upstream."""
    lines = [
        "GPU Configuration:",
        f"  - GPU Memory: {gpu_config.gpu_memory_gb:.1f} GB",
        f"  - Tier: {gpu_config.tier}",
        f"  - Max Duration (with LM): {gpu_config.max_duration_with_lm}s ({gpu_config.max_duration_with_lm // 60} min)",
        f"  - Max Duration (without LM): {gpu_config.max_duration_without_lm}s "
        f"({gpu_config.max_duration_without_lm // 60} min)",
        f"  - Max Batch Size (with LM): {gpu_config.max_batch_size_with_lm}",
        f"  - Max Batch Size (without LM): {gpu_config.max_batch_size_without_lm}",
        f"  - Init LM by Default: {gpu_config.init_lm_default}",
        f"  - Available LM Models: {gpu_config.available_lm_models or 'None'}",
        f"  - Recommended LM Model: {get_recommended_lm_model(gpu_config) or 'None'}",
    ]
    if gpu_config.decided_by:
        lines.append(
            f"  - Decided by: table {gpu_config.decided_by.get('table')!r}, {gpu_config.decided_by.get('tier')}"
        )
    for line in lines:
        _logger().info(line)


_global_config: GPUConfig | None = None
_global_lock = threading.Lock()


def get_global_gpu_config() -> GPUConfig:
    """The process's config, decided on first use."""
    global _global_config
    with _global_lock:
        if _global_config is None:
            _global_config = get_gpu_config()
        return _global_config


def set_global_gpu_config(config: GPUConfig) -> None:
    """Replace the process's config (upstream's UI does after a manual tier choice)."""
    global _global_config
    with _global_lock:
        _global_config = config


def _vram_16gb_min_gb() -> float:
    """Where the active table's 16 GB class starts: 16 minus that tier's class tolerance."""
    tier = _active_table().tier_for(16.0)
    if tier is not None and tier.min_gb == 16.0:
        return 16.0 - tier.class_tolerance_gb
    return 16.0


def _tier_labels() -> dict[str, str]:
    return {tier.name: f"{tier.name} ({tier.vram_label()})" for tier in _active_table().tiers}


def _tier_choices() -> list[tuple[str, str]]:
    return list(_tier_labels().items())


_COMPUTED: dict[str, Callable[[], Any]] = {
    "VRAM_16GB_MIN_GB": _vram_16gb_min_gb,
    "GPU_TIER_LABELS": _tier_labels,
    "GPU_TIER_CHOICES": _tier_choices,
}


def __getattr__(name: str) -> Any:
    """Upstream's module constants, computed from the active table at each access."""
    if name in _COMPUTED:
        return _COMPUTED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
