"""Upstream ACE-Step's ``acestep/gpu_config.py`` API, every answer decided by acestep-core.

An upstream maintainer points ``acestep.gpu_config`` here (see the README, "Using acestep-core
inside ACE-Step") and upstream's callers run unchanged: the CLI, the Gradio launcher and UI, the
API server, the generation handler, the LM module and the profiler import the 31 names upstream
main exports to them (commit 592c315, 2026-04-07: the module's last change; main was unchanged in it
through 6d467e4, 2026-06-26), with upstream's call shapes and parameter names. Each call runs
:func:`acestep_core.resolve` with the active tier table (``ACESTEP_CORE_TIERS`` / ``--tiers``;
``default`` unless chosen) and reads the environment at that call, as upstream re-reads
``MAX_CUDA_VRAM``. Under simulation (``MAX_CUDA_VRAM``) the calls upstream's start-up makes import no
torch.

Which answers follow which upstream:
    ``ACESTEP_CORE_TIERS=upstream-2026-04``: upstream main, 592c315, value for value at every size
    (``tests/test_upstream_2026_04.py`` checks the answers upstream's own module gave, recorded in
    ``tests/fixtures/upstream_gpu_config_592c315.json``). ``upstream-2026-02``: upstream's February
    2026 code (f30aee4c). ``default``: the GPU guide's decisions, in upstream's shapes.

Sizes are GiB, as upstream's "GB". A size passed in (``get_gpu_config(8)``) is decided as a device of
exactly that size, except that the size this machine's detection returned
(``get_gpu_config(get_gpu_memory_gb())``) is decided as that detected device. Like upstream, any
number is answered, compared as upstream compares it: 0 or less is no GPU (the first tier), NaN
compares false everywhere (the last tier), infinite and huge sizes are the last tier, tiny positive
ones the first; ``gpu_memory_gb`` comes back as given. Where upstream itself raises on a number
(``get_lm_gpu_memory_ratio(path, 0)`` divides by zero, an integer too large for a float overflows its
division or its ``{:.1f}``), the answer is the one upstream gives the sizes beside it.

``GPUConfig``: which field is what.
    The limits, ``init_lm_default``, ``available_lm_models``, ``recommended_lm_model`` and
    ``lm_memory_gb`` are the active table's tier (``init_lm_default`` is the request's LM decision,
    so the default table's "≤6 GB: LM off" holds). ``offload_to_cpu_default``,
    ``offload_dit_to_cpu_default``, ``quantization_default``, ``compile_model_default``,
    ``recommended_backend`` and ``lm_backend_restriction`` are the tier's *defaults*, as upstream's are,
    with upstream's platform rules on the decided device: Apple silicon (MPS) turns compile,
    quantization and both offloads off, restricts the LM to ``pt_mlx_only`` and recommends ``mlx``; a
    pre-Volta NVIDIA card (compute capability < 7.0) restricts it to ``pt_only``. What acestep-core's
    plan truthfully decides on this machine — compile off without triton, the LM on ``pt`` where no
    nano-vllm or vllm is installed, offload or int8 the memory ladder added — is in
    ``decided_by["plan"]`` with each reason, never in those fields. ``save_memory_mode`` is set by
    ``get_global_gpu_config()`` from ``ACESTEP_SAVE_MEMORY`` (``1``/``true``/``yes``), as upstream;
    ``mlx_vae_chunk_size`` is 512, and on Apple silicon upstream's size from unified memory
    (≤16 GB → 256, ≤36 → 512, ≤64 → 1024, else 2048) or ``ACESTEP_MLX_VAE_CHUNK`` (at least 192).

``GPU_TIER_CONFIGS`` is the active table's tiers in upstream's dictionary form (with upstream's
``tier6`` → ``tier6b`` alias where the table has ``tier6a``/``tier6b`` and no ``tier6``): the same
dictionary on every access while that table is active, and an entry a caller edits in place
(upstream's profiler raises a tier's batch limits so) is what every config built afterwards carries.
``VRAM_16GB_MIN_GB`` and ``VRAM_AUTO_OFFLOAD_THRESHOLD_GB`` follow the active table's placement rule
(where a 16 GB device's tier starts for the device this process has — 15.5 under the upstream tables,
15.2 for a detected card under ``default``; where the table stops offloading: 20.0 under
``upstream-2026-04``, infinite where every tier offloads); ``GPU_TIER_LABELS`` / ``GPU_TIER_CHOICES``
are the table's. ``VRAM_SAFETY_MARGIN_GB`` (0.5, acestep-core's own margin) and
``DIT_INFERENCE_VRAM_PER_BATCH`` (upstream's per-batch-item figures, a dictionary callers read) are
upstream's numbers.

Platform probes (``is_cuda_available`` …, ``cuda_supports_bfloat16``, ``get_gpu_device_name``,
``get_effective_free_vram_gb``) answer for the real hardware as acestep-core's detection reads it, the
simulation variables set aside — a simulated size is not a device torch can use, and upstream's probes
ask torch. ``get_effective_free_vram_gb`` is the detected device's free memory (NVML: it already leaves
out every process's usage, this one's included) plus this process's torch allocator cache
(reserved − allocated), read only when this process already runs torch with CUDA initialised: nothing
here imports torch or creates a CUDA context.

Not reproduced: upstream's hard allocator cap under ``MAX_CUDA_VRAM``
(``set_per_process_memory_fraction``: acestep-core's pipeline budgets instead); ``MAX_*_VRAM`` values
that are not a number of GB from 0.001 to 1048576 (``0``, ``-1``, ``nan``, ``1e300``) are ignored with
a warning where upstream took them (``0`` as no GPU); loguru (records go to this module's
:mod:`logging` logger); upstream names no caller imports (``compute_adaptive_config``,
``estimate_inference_vram``, ``MODEL_VRAM``, ``LM_VRAM``, ``resolve_device``).
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from acestep_core.inputs import MAX_MEMORY_GB, parse_memory_gb
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
    Tier,
    TierTable,
)
from acestep_core.vocabulary import LM_BACKENDS, SAFETY_MARGIN_BYTES

if TYPE_CHECKING:
    import logging

__all__ = [  # and, computed from the active table at each access (module __getattr__): VRAM_16GB_MIN_GB,
    # VRAM_AUTO_OFFLOAD_THRESHOLD_GB, GPU_TIER_CONFIGS, GPU_TIER_LABELS, GPU_TIER_CHOICES
    "DIT_INFERENCE_VRAM_PER_BATCH",
    "VRAM_SAFETY_MARGIN_GB",
    "GPUConfig",
    "check_batch_size_limit",
    "check_duration_limit",
    "cuda_supports_bfloat16",
    "find_best_lm_model_on_disk",
    "get_dit_type_from_path",
    "get_effective_free_vram_gb",
    "get_global_gpu_config",
    "get_gpu_config",
    "get_gpu_config_for_tier",
    "get_gpu_device_name",
    "get_gpu_memory_gb",
    "get_gpu_tier",
    "get_lm_gpu_memory_ratio",
    "get_lm_model_size",
    "get_recommended_lm_model",
    "is_cuda_available",
    "is_lm_model_size_allowed",
    "is_lm_model_supported",
    "is_mps_available",
    "is_mps_platform",
    "is_rocm_available",
    "is_xpu_available",
    "print_gpu_config_info",
    "resolve_lm_backend",
    "set_global_gpu_config",
]

LM_PREFIX = "acestep-5Hz-lm-"
"""Upstream's LM model names: ``acestep-5Hz-lm-<size>``."""
DEBUG_MAX_CUDA_VRAM_ENV = "MAX_CUDA_VRAM"
DEBUG_MAX_MPS_VRAM_ENV = "MAX_MPS_VRAM"
DEBUG_MAX_XPU_VRAM_ENV = "MAX_XPU_VRAM"
SIMULATION_VARIABLES = (DEBUG_MAX_CUDA_VRAM_ENV, DEBUG_MAX_MPS_VRAM_ENV, DEBUG_MAX_XPU_VRAM_ENV)
SAVE_MEMORY_ENV = "ACESTEP_SAVE_MEMORY"
MLX_VAE_CHUNK_ENV = "ACESTEP_MLX_VAE_CHUNK"
MLX_VAE_CHUNK_MIN = 192
"""Upstream's floor: a chunk keeps ``stride = chunk - 2 × 64`` positive."""
MLX_VAE_CHUNK_STEPS = ((16.0, 256), (36.0, 512), (64.0, 1024))
"""Upstream's MLX VAE chunk by unified memory: up to 16 GB 256 frames, 36 → 512, 64 → 1024, else 2048."""
MLX_VAE_CHUNK_LARGEST = 2048
MLX_VAE_CHUNK_DEFAULT = 512
VALID_LM_BACKENDS = frozenset(LM_BACKENDS)

VRAM_SAFETY_MARGIN_GB = SAFETY_MARGIN_BYTES / GIB
"""0.5 GB: acestep-core's margin, equal to upstream's."""
DIT_INFERENCE_VRAM_PER_BATCH: dict[str, float] = {"turbo": 0.3, "base": 0.6, "xl_turbo": 0.5, "xl_base": 1.0}
"""Upstream's GB per batch item the DiT's activations take (592c315), which its generation handler's
pre-flight check multiplies by batch and minutes; keyed by :func:`get_dit_type_from_path`."""

UPSTREAM_TABLES = {
    "upstream-2026-02": "f30aee4c186c33b7b8a6ea59a4b7fc36f795b49f",
    "upstream-2026-04": "592c31552c6c16fced2dced3ea6494a6d09426d1",
}
"""The built-in tables that reproduce an upstream commit; under them the calls upstream answers
outside its tier table (the recommended LM, the LM's memory ratio) follow that commit too."""
UPSTREAM_MAIN_TABLE = "upstream-2026-04"
UPSTREAM_MAIN_LM_GB = {"0.6B": (1.2, 0.6), "1.7B": (3.4, 1.0), "4B": (8.0, 1.6)}
"""Upstream main's ``LM_VRAM``: (weights, KV cache for 4k tokens) in GB per LM size, from which its
``get_lm_gpu_memory_ratio`` sizes the LM (weights + cache + 0.3 GB overhead)."""
UPSTREAM_MAIN_LM_OVERHEAD_GB = 0.3
UPSTREAM_RATIO_FLOORS = ((24.0, 0.2), (0.0, 0.1))
"""Upstream's LM ratio floor: 0.2 from a 24 GB device, else 0.1 (both commits)."""
UPSTREAM_RATIO_CEILING = 0.9
HALF = 0.5
"""The LM's share where the tier allots it no fixed memory (the plan's rule)."""
SIMULATED_CONTEXT_GB = 0.5
"""Upstream's reference CUDA context under ``MAX_CUDA_VRAM``: a simulated card's allocator budget is
its size less this (at least 0.5 GB)."""


def _logger() -> logging.Logger:
    """This module's logger; :mod:`logging` is imported on the first message, not at start-up
    (it costs a cold process more than this module's own import)."""
    import logging

    return logging.getLogger(__name__)


@dataclass
class GPUConfig:
    """Upstream main's record, field for field and in its order (see the module's docstring for what
    each field means here). A February-2026 positional call — nine arguments, the ninth
    ``lm_memory_gb`` — is read as such."""

    tier: str
    gpu_memory_gb: float
    max_duration_with_lm: int
    max_duration_without_lm: int
    max_batch_size_with_lm: int
    max_batch_size_without_lm: int
    init_lm_default: bool
    available_lm_models: list[str]
    recommended_lm_model: str = ""
    lm_backend_restriction: str = "all"
    recommended_backend: str = "vllm"
    offload_to_cpu_default: bool = True
    offload_dit_to_cpu_default: bool = True
    quantization_default: bool = True
    compile_model_default: bool = True
    lm_memory_gb: dict[str, float] = field(default_factory=dict)
    save_memory_mode: bool = False
    mlx_vae_chunk_size: int = MLX_VAE_CHUNK_DEFAULT
    decided_by: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """acestep-core's extra: the table, the tier, the plan's own decisions and the warnings behind
    these values."""

    def __post_init__(self) -> None:
        if isinstance(self.recommended_lm_model, Mapping):  # February's shape: the ninth field was lm_memory_gb
            self.lm_memory_gb, self.recommended_lm_model = dict(self.recommended_lm_model), ""


# --------------------------------------------------------------------------------------------- numbers
def _compared(value: object, name: str) -> float:
    """A caller's GB figure as upstream compares it: any real number (an integer too large for a float
    is ±inf); anything else is refused as upstream's comparisons refuse it (TypeError)."""
    if isinstance(value, (str, bytes, bytearray)) or not hasattr(value, "__float__"):
        raise TypeError(f"{name} must be a number of GB, not {type(value).__name__} {value!r:.40}")
    try:
        return float(value)  # type: ignore[arg-type]  # has __float__
    except OverflowError:
        return math.inf if value > 0 else -math.inf  # type: ignore[operator]  # a huge int


def _one_decimal(value: object) -> str:
    """``f"{value:.1f}"``, also for an integer too large for a float (where upstream's message overflows)."""
    try:
        return f"{value:.1f}"
    except OverflowError:
        return "inf" if value > 0 else "-inf"  # type: ignore[operator]


# --------------------------------------------------------------------------------------------- deciding
def _environ() -> dict[str, str]:
    return dict(os.environ)


def _log_reading(reading: MemoryReading, problems: tuple[Any, ...], *, notes: bool) -> None:
    """What upstream logs at a detection: a bad ``MAX_*_VRAM`` ignored, a detection plugin failing (every
    call) and, with ``notes``, what the reading says (simulation on, fallbacks taken). Only
    :func:`get_gpu_memory_gb` logs the notes: :mod:`logging` costs a cold start-up a tenth of its time,
    and upstream's launcher calls it anyway."""
    for problem in problems:
        _logger().warning(problem.message())
    for note in reading.notes if notes else ():
        _logger().warning(note)


def _detected(environ: dict[str, str], *, redetect: bool = False) -> tuple[MemoryReading, tuple[Any, ...]]:
    reading, _plugin, problems = detect(get_plugin_manager(), DetectOptions(environ=environ), redetect=redetect)
    return reading, problems


def _hardware(*, live: bool = False) -> MemoryReading:
    """The real hardware, the simulation variables set aside (what upstream's probes ask torch about).
    ``live`` reads it again (free memory changes)."""
    environ = {k: v for k, v in os.environ.items() if k not in SIMULATION_VARIABLES}
    return _detected(environ, redetect=live)[0]


def _active_table(environ: Mapping[str, str] | None = None) -> TierTable:
    tables, _problems = available_tables(get_plugin_manager())
    wanted = (os.environ if environ is None else environ).get(TIERS_ENV) or None
    return choose_table(tables, wanted).table


def _given_bytes(gb: float, table: TierTable) -> int:
    """Whole bytes for a device of ``gb`` GiB that the table places where it places ``gb`` itself
    (rounding to bytes must not move a size across a boundary; NaN, infinite and huge sizes are the
    largest device modelled, 1 PiB, where that is in the same tier)."""
    target = table.tier_for(gb)
    candidates: list[int] = []
    if math.isfinite(gb) and gb <= MAX_MEMORY_GB:
        exact = gb * GIB
        candidates = [max(1, math.floor(exact)), max(1, math.ceil(exact))]
    else:
        candidates = [round(MAX_MEMORY_GB * GIB)]
    for total in candidates:
        if table.tier_for(total / GIB) is target:
            return total
    return round(_inside(target) * GIB) if target is not None else candidates[0]


def _inside(tier: Tier) -> float:
    """A size inside ``tier``: its upper bound where it includes it, else its middle; 1 GB above an
    unbounded tier's start."""
    if tier.max_gb is None:
        return tier.min_gb + 1
    if tier.max_inclusive:
        return tier.max_gb
    return (tier.min_gb + tier.max_gb) / 2


def _reading_for(gb: float, environ: dict[str, str], table: TierTable, *, live: bool = False) -> MemoryReading:
    """The device a caller's figure stands for (see the module's docstring)."""
    detected, problems = _detected(environ, redetect=live)
    device = detected.device
    if device.is_accelerator and device.total_bytes and _gib(detected) == gb:
        _log_reading(detected, problems, notes=False)
        return _with_this_process_allocator(detected) if live else detected
    if not gb > 0 and not math.isnan(gb):
        return MemoryReading(device=CPU)
    total = _given_bytes(gb, table)
    backend = device.backend if device.is_accelerator else "cuda"
    given = DeviceMemory(
        backend=backend,
        name=f"a {gb:g} GB {backend} device (given to gpu_config)",
        index=0,
        total_bytes=total,
        free_bytes=total,
        reserved_bytes=0,
        sources={"total_bytes": "gpu_memory_gb argument"},
        compute_capability=device.compute_capability,
        unified_memory=device.unified_memory,
        simulated=True,
    )
    return MemoryReading(device=given, visible=(given,))


class _Decided:
    """A resolution for a caller's figure, the figure ``GPUConfig.gpu_memory_gb`` carries (the
    caller's, as given) and the machine's device, whose platform upstream's rules follow (a size of
    0 or less is decided as no GPU, but a Mac is still a Mac)."""

    def __init__(self, resolution: Resolution, gpu_memory_gb: object, platform: DeviceMemory) -> None:
        self.resolution, self.gpu_memory_gb, self.platform = resolution, gpu_memory_gb, platform


def _resolve(gpu_memory_gb: object, request: GenerationRequest | None = None, *, live: bool = False) -> _Decided:
    """Decide for a caller's figure (None: detect, logging what upstream logs)."""
    environ = _environ()
    if gpu_memory_gb is None:
        reading, problems = _detected(environ)
        _log_reading(reading, problems, notes=False)
        resolution = resolve(request, environ=environ)
        return _Decided(resolution, _gib(resolution.reading), resolution.reading.device)
    gb = _compared(gpu_memory_gb, "gpu_memory_gb")
    table = _active_table(environ)
    reading = _reading_for(gb, environ, table, live=live)
    platform = _detected(environ)[0].device
    return _Decided(resolve(request, environ=environ, reading=reading), gpu_memory_gb, platform)


def _gib(reading: MemoryReading) -> float:
    """GiB to a millionth: readings are whole bytes, so ``MAX_CUDA_VRAM=7.99`` reads 7.98999999929;
    upstream callers get back the 7.99 they set."""
    total = reading.device.total_bytes
    return round(total / GIB, 6) if reading.device.is_accelerator and total else 0.0


# --------------------------------------------------------------------------------------------- GPU_TIER_CONFIGS
_tier_configs: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
_tier_configs_lock = threading.Lock()


def _entry(tier: Tier) -> dict[str, Any]:
    """A tier in upstream's ``GPU_TIER_CONFIGS`` form."""
    defaults = tier.optimizations
    offload = bool(defaults.get("cpu_offload", False))
    return {
        "max_duration_with_lm": tier.max_duration_with_lm_s,
        "max_duration_without_lm": tier.max_duration_without_lm_s,
        "max_batch_size_with_lm": tier.max_batch_with_lm,
        "max_batch_size_without_lm": tier.max_batch_without_lm,
        "init_lm_default": tier.lm_default_on,
        "available_lm_models": [LM_PREFIX + size for size in tier.lm_models],
        "recommended_lm_model": LM_PREFIX + tier.recommended_lm if tier.recommended_lm else "",
        "lm_backend_restriction": "all",
        "recommended_backend": "vllm",
        "offload_to_cpu_default": offload,
        "offload_dit_to_cpu_default": bool(defaults.get("dit_cpu_offload", offload)),
        "quantization_default": str(defaults.get("quantization", "none")) != "none",
        "compile_model_default": bool(defaults.get("compile", False)),
        "lm_memory_gb": dict(tier.lm_memory_gb),
    }


def _configs_of(table: TierTable) -> dict[str, dict[str, Any]]:
    """The table's ``GPU_TIER_CONFIGS``: one dictionary per table for the process, so edits stay."""
    key = (table.name, table.source)
    with _tier_configs_lock:
        configs = _tier_configs.get(key)
        if configs is None:
            configs = {tier.name: _entry(tier) for tier in table.tiers}
            if "tier6" not in configs and "tier6b" in configs and "tier6a" in configs:
                configs["tier6"] = configs["tier6b"]  # upstream's backward-compatibility alias, the same dict
            _tier_configs[key] = configs
        return configs


def _edits(table_name: str, tier: Tier) -> dict[str, Any]:
    """What a caller changed in place in this tier's ``GPU_TIER_CONFIGS`` entry (none where no caller
    has asked for that table's dictionary: the usual start-up, which then looks no table up again)."""
    with _tier_configs_lock:
        made = [configs for (name, _source), configs in _tier_configs.items() if name == table_name]
    if not made:
        return {}
    configs = made[0] if len(made) == 1 else _configs_of(_active_table())
    live = configs.get(tier.name)
    if live is None:
        return {}
    pristine = _entry(tier)
    return {key: value for key, value in live.items() if key not in pristine or pristine[key] != value}


# --------------------------------------------------------------------------------------------- GPUConfig
def _is_mps(device: DeviceMemory) -> bool:
    return device.backend == "mps"


def _is_legacy_cuda(device: DeviceMemory) -> bool:
    capability = device.compute_capability
    return device.backend == "cuda" and capability is not None and capability < (7, 0)


def _mlx_vae_chunk_size(gb: float) -> int:
    """Upstream's ``_auto_mlx_vae_chunk_size``: ``ACESTEP_MLX_VAE_CHUNK`` (at least 192) when it is an
    integer, else by unified memory."""
    raw = os.environ.get(MLX_VAE_CHUNK_ENV)
    if raw is not None:
        try:
            return max(MLX_VAE_CHUNK_MIN, int(raw))
        except ValueError:
            pass
    for up_to, size in MLX_VAE_CHUNK_STEPS:
        if gb <= up_to:
            return size
    return MLX_VAE_CHUNK_LARGEST


def _plan_record(resolution: Resolution) -> dict[str, Any]:
    """The plan's own decisions behind the fields upstream gives as per-tier defaults."""
    keys = (
        *("compile", "lm.backend", "lm.gpu_memory_ratio", "quantization.dit"),
        *("offload.lm", "offload.text_encoder", "offload.vae", "offload.dit"),
    )
    plan = resolution.plan
    return {key: {"value": plan[key].value, "reason": plan[key].reason} for key in keys if key in plan}


def _config(decided: _Decided, gpu_memory_gb: object | None = None, *, tier_id: str | None = None) -> GPUConfig:
    """A ``GPUConfig`` for a decision: the tier's values (with a caller's in-place edits), upstream's
    platform rules on this machine's device, and the plan's decisions recorded beside them."""
    resolution, device = decided.resolution, decided.platform
    tier = resolution.tier
    gpu_memory_gb = decided.gpu_memory_gb if gpu_memory_gb is None else gpu_memory_gb
    values = _entry(tier)
    values["init_lm_default"] = resolution.adjusted.lm_on
    edits = _edits(resolution.table, tier)
    values.update(edits)
    gb = _compared(gpu_memory_gb, "gpu_memory_gb")
    chunk = MLX_VAE_CHUNK_DEFAULT
    if _is_mps(device):
        values.update(
            lm_backend_restriction="pt_mlx_only",
            recommended_backend="mlx",
            offload_to_cpu_default=False,
            offload_dit_to_cpu_default=False,
            quantization_default=False,
            compile_model_default=False,
        )
        chunk = _mlx_vae_chunk_size(gb)
    if _is_legacy_cuda(device):
        _logger().info(
            "Legacy CUDA GPU detected (pre-Volta compute capability): forcing 5Hz LM backend recommendation to PyTorch."
        )
        values.update(lm_backend_restriction="pt_only", recommended_backend="pt")
    return GPUConfig(
        tier=tier_id or tier.name,
        gpu_memory_gb=gpu_memory_gb,  # type: ignore[arg-type]  # as given, like upstream
        max_duration_with_lm=values["max_duration_with_lm"],
        max_duration_without_lm=values["max_duration_without_lm"],
        max_batch_size_with_lm=values["max_batch_size_with_lm"],
        max_batch_size_without_lm=values["max_batch_size_without_lm"],
        init_lm_default=values["init_lm_default"],
        available_lm_models=values["available_lm_models"],
        recommended_lm_model=values["recommended_lm_model"],
        lm_backend_restriction=values["lm_backend_restriction"],
        recommended_backend=values["recommended_backend"],
        offload_to_cpu_default=values["offload_to_cpu_default"],
        offload_dit_to_cpu_default=values["offload_dit_to_cpu_default"],
        quantization_default=values["quantization_default"],
        compile_model_default=values["compile_model_default"],
        lm_memory_gb=values["lm_memory_gb"],
        mlx_vae_chunk_size=chunk,
        decided_by={
            "table": resolution.table,
            "upstream_commit": UPSTREAM_TABLES.get(resolution.table),
            "tier": tier.label,
            "edited_in_place": sorted(edits),
            "plan": _plan_record(resolution),
            "warnings": list(resolution.warnings),
        },
    )


# --------------------------------------------------------------------------------------------- the API: configs
def get_gpu_memory_gb() -> float:
    """The device's memory in GB as acestep-core detects it (``MAX_CUDA_VRAM`` / ``MAX_MPS_VRAM`` /
    ``MAX_XPU_VRAM`` simulate one); 0.0 when there is no GPU. Detection is read again whenever the
    environment changes; what it notes (simulation on, a variable ignored) is logged each call."""
    reading, problems = _detected(_environ())
    _log_reading(reading, problems, notes=True)
    return _gib(reading)


def get_gpu_tier(gpu_memory_gb: float) -> str:
    """The active table's tier id for a device of ``gpu_memory_gb`` GB (``tier1`` … ``unlimited``)."""
    _compared(gpu_memory_gb, "gpu_memory_gb")  # None too: upstream compares it, and that raises TypeError
    return _resolve(gpu_memory_gb).resolution.tier.name


def get_gpu_config(gpu_memory_gb: float | None = None) -> GPUConfig:
    """A new :class:`GPUConfig` for this machine (``None``: detect) or for a device of that size."""
    return _config(_resolve(gpu_memory_gb))


def get_gpu_config_for_tier(tier: str) -> GPUConfig:
    """The config of a tier chosen by id (a UI's manual choice; ``tier6`` is ``tier6b`` where the table
    splits tier 6, as upstream aliases it); ``gpu_memory_gb`` stays the detected figure. The tier's
    values are decided for a device inside the tier. An unknown id logs a warning and returns
    :func:`get_gpu_config`, as upstream does."""
    table = _active_table()
    configs = _configs_of(table)
    if tier not in configs:
        _logger().warning(f"Unknown tier '{tier}', falling back to auto-detected config")
        return get_gpu_config()
    chosen = next((t for t in table.tiers if configs[t.name] is configs[tier]), None)
    if chosen is None:
        raise RuntimeError(f"GPU_TIER_CONFIGS[{tier!r}] was replaced by a dictionary no tier of {table.name!r} has")
    decided = _resolve(_inside(chosen))
    if decided.resolution.tier.name != chosen.name:
        raise RuntimeError(
            f"{_inside(chosen):g} GB was placed in {decided.resolution.tier.name}, not {chosen.name}: "
            f"the tier plugin disagrees with table {table.name!r}"
        )
    return _config(decided, get_gpu_memory_gb(), tier_id=tier)


_global_config: GPUConfig | None = None
_global_lock = threading.Lock()


def get_global_gpu_config() -> GPUConfig:
    """The process's config, decided on first use; ``ACESTEP_SAVE_MEMORY`` = ``1`` / ``true`` / ``yes``
    (any case) turns ``save_memory_mode`` on, as upstream."""
    global _global_config
    with _global_lock:
        if _global_config is None:
            _global_config = get_gpu_config()
            value = os.environ.get(SAVE_MEMORY_ENV, "").strip().lower()
            if value in ("1", "true", "yes"):
                _global_config.save_memory_mode = True
                _logger().info(f"[gpu_config] Save-memory mode enabled via {SAVE_MEMORY_ENV}={value}")
        return _global_config


def set_global_gpu_config(config: GPUConfig) -> None:
    """Replace the process's config (upstream's UI does after a manual tier choice)."""
    global _global_config
    with _global_lock:
        _global_config = config


def print_gpu_config_info(gpu_config: GPUConfig) -> None:
    """Log the config (INFO, this module's logger), line for line as upstream, then which table and
    tier decided it."""
    lines = [
        "GPU Configuration:",
        f"  - GPU Memory: {_one_decimal(gpu_config.gpu_memory_gb)} GB",
        f"  - Tier: {gpu_config.tier}",
        f"  - Max Duration (with LM): {gpu_config.max_duration_with_lm}s ({gpu_config.max_duration_with_lm // 60} min)",
        f"  - Max Duration (without LM): {gpu_config.max_duration_without_lm}s "
        f"({gpu_config.max_duration_without_lm // 60} min)",
        f"  - Max Batch Size (with LM): {gpu_config.max_batch_size_with_lm}",
        f"  - Max Batch Size (without LM): {gpu_config.max_batch_size_without_lm}",
        f"  - Init LM by Default: {gpu_config.init_lm_default}",
        f"  - Available LM Models: {gpu_config.available_lm_models or 'None'}",
    ]
    if gpu_config.decided_by:
        lines.append(
            f"  - Decided by: table {gpu_config.decided_by.get('table')!r}, {gpu_config.decided_by.get('tier')}"
        )
    for line in lines:
        _logger().info(line)


# --------------------------------------------------------------------------------------------- the API: limits
def check_duration_limit(duration: float, gpu_config: GPUConfig, lm_initialized: bool) -> tuple[bool, str]:
    """``(True, "")`` within the config's limit, else ``(False, warning)`` in upstream's words."""
    limit = gpu_config.max_duration_with_lm if lm_initialized else gpu_config.max_duration_without_lm
    if not duration > limit:
        return True, ""
    return False, (
        f"⚠️ Requested duration ({duration:.0f}s) exceeds the limit for your GPU "
        f"({_one_decimal(gpu_config.gpu_memory_gb)}GB). Maximum allowed: {limit}s "
        f"({'with' if lm_initialized else 'without'} LM). Duration will be clamped to {limit}s."
    )


def check_batch_size_limit(batch_size: int, gpu_config: GPUConfig, lm_initialized: bool) -> tuple[bool, str]:
    """``(True, "")`` within the config's limit, else ``(False, warning)`` in upstream's words."""
    limit = gpu_config.max_batch_size_with_lm if lm_initialized else gpu_config.max_batch_size_without_lm
    if not batch_size > limit:
        return True, ""
    return False, (
        f"⚠️ Requested batch size ({batch_size}) exceeds the limit for your GPU "
        f"({_one_decimal(gpu_config.gpu_memory_gb)}GB). Maximum allowed: {limit} "
        f"({'with' if lm_initialized else 'without'} LM). Batch size will be clamped to {limit}."
    )


# --------------------------------------------------------------------------------------------- the API: the LM
def get_lm_model_size(model_path: str) -> str:
    """``0.6B`` / ``1.7B`` / ``4B`` by the size written in the name; anything else ``0.6B``."""
    return next((size for size in LM_SIZES if size in model_path), LM_SIZES[0])


def is_lm_model_supported(model_path: str, gpu_config: GPUConfig) -> tuple[bool, str]:
    """Whether the config's tier allows the LM's size, with upstream's warning when it does not."""
    if not gpu_config.available_lm_models:
        return False, (
            f"⚠️ Your GPU ({_one_decimal(gpu_config.gpu_memory_gb)}GB) does not have enough memory "
            "to run any LM model. Please disable LM initialization."
        )
    size = get_lm_model_size(model_path)
    if any(size in name for name in gpu_config.available_lm_models):
        return True, ""
    return False, (
        f"⚠️ LM model {model_path} ({size}) is not supported for your GPU "
        f"({_one_decimal(gpu_config.gpu_memory_gb)}GB). Available models: {', '.join(gpu_config.available_lm_models)}"
    )


def is_lm_model_size_allowed(disk_model_name: str, tier_available_models: list[str]) -> bool:
    """Whether an LM folder on disk (``acestep-5Hz-lm-0.6B-v4-fix``) is of a size the tier allows."""
    size = get_lm_model_size(disk_model_name)
    return any(get_lm_model_size(model) == size for model in tier_available_models)


def find_best_lm_model_on_disk(recommended_model: str, disk_models: list[str]) -> str | None:
    """The folder on disk to load for the tier's recommended LM: the exact name, else the longest name
    of the same size (a versioned one, such as ``-v4-fix``), else the first on disk; None when the disk
    has none."""
    if not recommended_model or not disk_models:
        return disk_models[0] if disk_models else None
    if recommended_model in disk_models:
        return recommended_model
    size = get_lm_model_size(recommended_model)
    same_size = [model for model in disk_models if get_lm_model_size(model) == size]
    return max(same_size, key=len) if same_size else disk_models[0]


def get_recommended_lm_model(gpu_config: GPUConfig) -> str | None:
    """The LM to load: None when the tier allows none. Under the upstream tables, the largest allowed,
    as upstream's call answers (both commits); otherwise the tier's ``recommended_lm_model`` when the
    config lists it, else the largest the config lists — never a model it does not list."""
    models = gpu_config.available_lm_models
    if not models:
        return None
    table = gpu_config.decided_by.get("table") or _active_table().name
    recommended = gpu_config.recommended_lm_model
    if table not in UPSTREAM_TABLES and isinstance(recommended, str) and recommended in models:
        return recommended
    return models[-1]


def _ratio_floor(total: float, steps: tuple[tuple[float, float], ...]) -> float:
    """The floor of the last step whose start ``total`` reaches; a size upstream cannot compare (NaN)
    or below 0 takes the floor of size 0, as upstream's ``if total >= 24 … else`` does."""
    at = total if total >= 0 else 0.0
    reached = [floor for start, floor in steps if at >= start]
    return reached[-1] if reached else 0.0


def _bounded_ratio(target_gb: float, total: float, floor: float, ceiling: float) -> float:
    """``target / total`` within [floor, ceiling]; a device of 0 GB or less (no GPU) gets the floor."""
    if not total > 0 and not math.isnan(total):
        return floor
    return min(ceiling, max(floor, target_gb / total))


def get_lm_gpu_memory_ratio(model_path: str, total_gpu_memory_gb: float) -> tuple[float, float]:
    """``(ratio, target_gb)``: the share of a ``total_gpu_memory_gb`` device the LM's allocator may
    take and the GB that stands for.

    ``upstream-2026-04``: upstream main's formula — (weights + 4k-token KV cache + 0.3 GB) of its
    ``LM_VRAM`` over the device, within [0.1, 0.9] ([0.2, 0.9] from 24 GB), target = the weights —
    which upstream answers wherever torch has no CUDA device; on a live CUDA device upstream sizes from
    free memory instead, so where acestep-core's plan sizes the LM from the effective free memory
    (memory this process and others hold) the smaller share is given. Other tables: the plan's
    ``lm.gpu_memory_ratio`` for a device of that size and the tier's allotment (a size the tier does not
    load gets the first allotment the table gives it, bounded as the plan would)."""
    size = get_lm_model_size(model_path)
    total = _compared(total_gpu_memory_gb, "total_gpu_memory_gb")
    table = _active_table()
    ordinary = 0 < total <= MAX_MEMORY_GB
    if table.name == UPSTREAM_MAIN_TABLE:
        weights, cache = UPSTREAM_MAIN_LM_GB.get(size, UPSTREAM_MAIN_LM_GB["0.6B"])
        floor = _ratio_floor(total, tuple(sorted(UPSTREAM_RATIO_FLOORS)))
        ratio = _bounded_ratio(weights + cache + UPSTREAM_MAIN_LM_OVERHEAD_GB, total, floor, UPSTREAM_RATIO_CEILING)
        if ordinary:
            plan = _resolve(total_gpu_memory_gb, GenerationRequest(lm="on", lm_model=size), live=True).resolution.plan
            by_free = next((setting for setting in plan if setting.key == "lm.gpu_memory_ratio"), None)
            if by_free is not None and by_free.plugin not in ("", "tiers_default") and by_free.value is not None:
                ratio = min(ratio, float(by_free.value))
        return ratio, weights
    if ordinary:
        resolution = _resolve(total_gpu_memory_gb, GenerationRequest(lm="on", lm_model=size), live=True).resolution
        tier = resolution.tier
        planned = resolution.plan.value("lm.gpu_memory_ratio")
        if resolution.adjusted.lm_model == size and planned is not None:
            target = tier.lm_memory_gb.get(size)
            return float(planned), float(target) if target is not None else float(planned) * total
    else:
        placed = table.tier_for(total) if total > 0 or math.isnan(total) else table.tiers[0]
        if placed is None:
            raise RuntimeError(f"table {table.name!r} places no tier at {total!r} GB")
        tier = placed
    allotments = [t.lm_memory_gb[size] for t in table.tiers if size in t.lm_memory_gb]
    allotment = tier.lm_memory_gb.get(size, allotments[0] if allotments else None)
    if allotment is None or (size in tier.lm_models and size not in tier.lm_memory_gb):
        # no fixed allotment: the plan's "half of the device"
        return HALF, HALF * total if total > 0 or math.isnan(total) else 0.0
    floor = _ratio_floor(total, tier.lm_memory_ratio_min)
    return _bounded_ratio(allotment, total, floor, tier.lm_memory_ratio_max), float(allotment)


def resolve_lm_backend(requested_backend: str | None, gpu_config: GPUConfig | None = None) -> str:
    """The LM backend to run, as upstream resolves it against the config: an unknown or empty request
    takes the config's ``recommended_backend`` (``pt`` if that is unknown too); ``pt_only`` → ``pt``;
    ``pt_mlx_only`` turns ``vllm`` into the recommended ``pt``/``mlx``. Without a config, the process's."""
    config = gpu_config or get_global_gpu_config()
    recommended = getattr(config, "recommended_backend", "vllm")
    restriction = getattr(config, "lm_backend_restriction", "all")
    backend = (requested_backend or "").strip().lower()
    if backend not in VALID_LM_BACKENDS:
        backend = recommended if recommended in VALID_LM_BACKENDS else "pt"
    if restriction == "pt_only":
        return "pt"
    if restriction == "pt_mlx_only" and backend == "vllm":
        return recommended if recommended in ("pt", "mlx") else "pt"
    return backend


# --------------------------------------------------------------------------------------------- the API: the DiT
_PATH_DELIMITERS = str.maketrans({"\\": "/", ".": "/", "_": "/", "-": "/"})


def get_dit_type_from_path(config_path: str | None) -> str:
    """The DiT kind a checkpoint path names, for ``DIT_INFERENCE_VRAM_PER_BATCH``: ``turbo`` or ``base``
    (``sft`` and anything else share base's profile), ``xl_`` before it when ``xl`` is a word of the path
    (between ``/ \\ . _ -`` or an end, in any case): ``acestep-v15-xl-sft`` → ``xl_base``."""
    words = (config_path or "").lower().translate(_PATH_DELIMITERS).split("/")
    variant = "turbo" if "turbo" in words else "base"
    return f"xl_{variant}" if "xl" in words else variant


# --------------------------------------------------------------------------------------------- the API: probes
def _devices(reading: MemoryReading) -> tuple[DeviceMemory, ...]:
    return (reading.device, *(d for d in reading.visible if d != reading.device))


def is_mps_platform() -> bool:
    """macOS with Apple silicon's GPU (MPS): where upstream turns compile, quantization and offload off."""
    return sys.platform == "darwin" and is_mps_available()


def is_cuda_available() -> bool:
    """A GPU torch calls ``cuda`` (NVIDIA, or AMD through ROCm) is there."""
    return any(d.backend in ("cuda", "rocm") for d in _devices(_hardware()))


def is_mps_available() -> bool:
    return any(d.backend == "mps" for d in _devices(_hardware()))


def is_xpu_available() -> bool:
    return any(d.backend == "xpu" for d in _devices(_hardware()))


def is_rocm_available() -> bool:
    """The ``cuda`` device is AMD's, through ROCm."""
    return any(d.backend == "rocm" for d in _devices(_hardware()))


def _device_at(reading: MemoryReading, index: int | None) -> DeviceMemory | None:
    if index is None:
        return reading.device
    return next((d for d in _devices(reading) if d.index == index and d.backend != "cpu"), None)


def cuda_supports_bfloat16(device_index: int | None = None) -> bool:
    """The ``cuda`` device (``device_index``, default the one the pipeline uses) has native bf16
    kernels: compute capability 8.0 or newer (for ROCm, the architecture torch reports there)."""
    device = _device_at(_hardware(), device_index)
    capability = device.compute_capability if device is not None else None
    return device is not None and device.backend in ("cuda", "rocm") and capability is not None and capability[0] >= 8


def get_gpu_device_name() -> str:
    """The GPU's name (``NVIDIA GeForce RTX 4060 Ti``), ``<chip> (MPS)`` on Apple silicon, ``CPU only``."""
    device = _hardware().device
    if device.backend == "mps":
        import platform  # only here: a Mac's chip name

        return f"{platform.processor() or 'Apple Silicon'} (MPS)"
    return device.name if device.is_accelerator else "CPU only"


def _with_this_process_allocator(reading: MemoryReading) -> MemoryReading:
    """The reading with this process's torch allocator figures for its device, when this process
    already runs torch with CUDA initialised (never importing torch, never creating a context:
    ``memory_reserved`` / ``memory_allocated`` only read the allocator's statistics)."""
    device = reading.device
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is None or device.backend not in ("cuda", "rocm") or device.index is None:
        return reading
    try:
        if not cuda.is_initialized():
            return reading
        reserved, allocated = int(cuda.memory_reserved(device.index)), int(cuda.memory_allocated(device.index))
        return reading.with_allocator(
            reserved, allocated, f"torch.cuda.memory_reserved/memory_allocated({device.index}), this process"
        )
    except Exception as error:  # noqa: BLE001 - a torch that cannot say leaves the driver's figure
        _logger().debug(f"no allocator figures from this process's torch: {error}")
        return reading


def get_effective_free_vram_gb(device_index: int = 0) -> float:
    """GB a new tensor on ``cuda:device_index`` can get: the device's free memory (read now; NVML's
    figure already leaves out what every process holds, this one's included) plus what this
    process's torch allocator has cached but no tensor uses (upstream #822). 0.0 without such a GPU
    (Apple silicon included, as upstream). Under ``MAX_CUDA_VRAM`` it is at most the simulated card's
    allocator budget (its size less upstream's 0.5 GB reference context) less what is allocated."""
    reading = _hardware(live=True)
    device = _device_at(reading, device_index)
    if device is None or device.backend not in ("cuda", "rocm", "xpu") or device.free_bytes is None:
        return 0.0
    if device != reading.device:
        reading = MemoryReading(device=device, visible=reading.visible)
    reading = _with_this_process_allocator(reading)
    device = reading.device
    _logger().debug(f"[get_effective_free_vram_gb] cuda:{device_index}: {device.free_basis()}")
    free = (device.effective_free_bytes or 0) / GIB
    raw = os.environ.get(DEBUG_MAX_CUDA_VRAM_ENV)
    if raw is not None and device.total_bytes:
        try:
            simulated = parse_memory_gb(raw)
        except ValueError:
            simulated = None
        if simulated is not None and simulated < device.total_bytes / GIB:
            budget = max(SIMULATED_CONTEXT_GB, simulated - SIMULATED_CONTEXT_GB)
            free = min(free, budget - (device.allocator_allocated_bytes or 0) / GIB)
    return max(0.0, free)


# --------------------------------------------------------------------------------------------- constants
def _class_start(table: TierTable, tier: Tier) -> float:
    """The smallest size of this process's device that ``table`` places in ``tier``: its lower bound
    less the tier's class tolerance and, for a detected (not simulated) device, the table's
    real-card tolerance."""
    detected = not _detected(_environ())[0].simulated
    slack = max(tier.class_tolerance_gb, tier.min_gb * table.real_card_tolerance if detected else 0.0)
    return tier.min_gb - slack


def _vram_16gb_min_gb() -> float:
    """Where the active table's 16 GB class starts for this process's device (upstream: 15.5)."""
    table = _active_table()
    tier = table.tier_for(16.0)
    return _class_start(table, tier) if tier is not None else 16.0


def _vram_auto_offload_threshold_gb() -> float:
    """Where the active table stops offloading to the CPU: the start of the first tier from which no
    tier offloads (upstream main: 20.0); infinite where the last tier still offloads."""
    table = _active_table()
    start: Tier | None = None
    for tier in table.tiers:
        offloads = bool(tier.optimizations.get("cpu_offload", False))
        start = None if offloads else (start or tier)
    return _class_start(table, start) if start is not None else math.inf


def _tier_labels() -> dict[str, str]:
    return {tier.name: f"{tier.name} ({tier.vram_label()})" for tier in _active_table().tiers}


def _tier_choices() -> list[tuple[str, str]]:
    return list(_tier_labels().items())


def _gpu_tier_configs() -> dict[str, dict[str, Any]]:
    return _configs_of(_active_table())


_COMPUTED: dict[str, Callable[[], Any]] = {
    "VRAM_16GB_MIN_GB": _vram_16gb_min_gb,
    "VRAM_AUTO_OFFLOAD_THRESHOLD_GB": _vram_auto_offload_threshold_gb,
    "GPU_TIER_LABELS": _tier_labels,
    "GPU_TIER_CHOICES": _tier_choices,
    "GPU_TIER_CONFIGS": _gpu_tier_configs,
}


def __getattr__(name: str) -> Any:
    """Upstream's table-dependent module constants, computed from the active table at each access."""
    if name in _COMPUTED:
        return _COMPUTED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
