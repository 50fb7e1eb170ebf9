"""acestep-core: decide how the ACE-Step pipeline runs on the hardware it finds.

The public surface for the pipeline and tools::

    from acestep_core import resolve, GenerationRequest

Plugins import from :mod:`acestep_core.plugin_api`, the stable API for plugin authors (the names
below that plugins use are the same objects there).

``import acestep_core`` imports neither torch nor NVML and opens no CUDA context.
"""

from acestep_core.hookspecs import PLAN_KEYS, hookimpl
from acestep_core.plugins import SettingIgnored, build_plugin_manager, get_plugin_manager, reset_plugin_manager
from acestep_core.resolve import ResolutionError, clear_detection_cache, resolve
from acestep_core.tables import TableError, load_table, parse_table, render_markdown
from acestep_core.types import (
    COMPONENTS,
    CPU,
    GIB,
    LM_SIZES,
    AdjustedRequest,
    Adjustment,
    Decided,
    Decision,
    DetectOptions,
    DeviceMemory,
    GenerationRequest,
    LayoutOutcome,
    MemoryReading,
    OptimizationPlan,
    Override,
    Overrides,
    Placement,
    PlaceOptions,
    PluginProblem,
    Resolution,
    Setting,
    Tier,
    TierTable,
)

__all__ = [
    "COMPONENTS",
    "CPU",
    "GIB",
    "LM_SIZES",
    "PLAN_KEYS",
    "AdjustedRequest",
    "Adjustment",
    "Decided",
    "Decision",
    "DetectOptions",
    "DeviceMemory",
    "GenerationRequest",
    "LayoutOutcome",
    "MemoryReading",
    "OptimizationPlan",
    "Override",
    "Overrides",
    "PlaceOptions",
    "Placement",
    "PluginProblem",
    "Resolution",
    "ResolutionError",
    "Setting",
    "SettingIgnored",
    "TableError",
    "Tier",
    "TierTable",
    "build_plugin_manager",
    "clear_detection_cache",
    "get_plugin_manager",
    "hookimpl",
    "load_table",
    "parse_table",
    "render_markdown",
    "reset_plugin_manager",
    "resolve",
]
