"""Everything a plugin may import from acestep-core, in one module: the stable plugin API.

A plugin (the built-ins included: ``acestep_core_cuda``, ``acestep_core_simulated``,
``acestep_core_tiers_default``, and the example ``acestep_core_tiers_8tier``) imports from here and
from nowhere else in ``acestep_core``; ``tests/test_plugin_api.py`` fails when a built-in reaches past
it. What is named in ``__all__`` keeps its name and meaning within a major version; every other
module of ``acestep_core`` is the core's own and may change shape from one release to the next.

What is here, by use:

- **Implementing hooks**: :data:`hookimpl` (the marker; the specs and their contracts are documented
  in :mod:`acestep_core.hookspecs`) and :class:`SettingIgnored` (reject a user's setting as a warning).
- **The records between hooks**: :class:`DetectOptions`, :class:`DeviceMemory`, :class:`MemoryReading`
  (detect), :class:`Tier`, :class:`TierTable` (select), :class:`GenerationRequest`,
  :class:`AdjustedRequest`, :class:`Adjustment` (adjust), :class:`Setting` (configure); :data:`CPU`, the
  reading of a machine without an accelerator.
- **Words and units**: :data:`GIB`, :data:`MIB`, :data:`LM_SIZES`, :data:`COMPONENTS`,
  :data:`MIN_DURATION_S`, :data:`MAX_DURATION_S`, :data:`SIMULATION_VARIABLES` (the ``MAX_*_VRAM``
  variables and the platform each simulates).
- **Placing components on several devices** (``place_components``): :class:`PlaceOptions`,
  :class:`Placement`, :class:`LayoutOutcome` and :data:`Evaluate` (the hook's records), :func:`user_layout`
  (the user's placement: ``--place``, ``--device``, upstream's variables), :func:`auto_layout` (the built-in
  rule), :func:`describe_layout`, :func:`single`, :class:`PlaceError`.
- **Plan keys**: :data:`PLAN_KEYS` (key → :class:`PlanKey`, whose ``check(value)`` says whether a
  value is of the key's type and range) and :func:`plan_settings` (the built-in plan for a tier and a
  device, for a plugin that adjusts it rather than writing its own).
- **Tier tables as data**: :func:`parse_table` (TOML text), :func:`load_table` (a file),
  :func:`validate_table` (a table built in code), :class:`TableError`.
- **Reading what users hand in**: :func:`parse_memory_gb` (a size in GB, as ``--vram`` and
  ``MAX_CUDA_VRAM`` take it), :func:`parse_index` (a device index in ASCII digits, as CUDA reads
  one), :func:`read_text_limited` with :class:`InputFileError` (a file, only if it is a regular file
  of sane size), :func:`nesting_depth` with :data:`MAX_NESTING`, and :data:`RECORDING_SIZE_LIMIT`.

Importing this module imports neither torch nor NVML.
"""

from __future__ import annotations

from acestep_core.hookspecs import hookimpl
from acestep_core.inputs import (
    MAX_NESTING,
    RECORDING_SIZE_LIMIT,
    InputFileError,
    nesting_depth,
    parse_index,
    parse_memory_gb,
    read_text_limited,
)
from acestep_core.optimize.plan import plan_settings
from acestep_core.placement import Evaluate, PlaceError, auto_layout, describe_layout, single, user_layout
from acestep_core.plugins import SettingIgnored
from acestep_core.tables import TableError, load_table, parse_table, validate_table
from acestep_core.types import (
    CPU,
    AdjustedRequest,
    Adjustment,
    DetectOptions,
    DeviceMemory,
    GenerationRequest,
    LayoutOutcome,
    MemoryReading,
    Placement,
    PlaceOptions,
    Setting,
    Tier,
    TierTable,
)
from acestep_core.vocabulary import (
    COMPONENTS,
    GIB,
    LM_SIZES,
    MAX_DURATION_S,
    MIB,
    MIN_DURATION_S,
    PLAN_KEYS,
    SIMULATION_VARIABLES,
    PlanKey,
)

__all__ = [
    "COMPONENTS",
    "CPU",
    "GIB",
    "LM_SIZES",
    "MAX_DURATION_S",
    "MAX_NESTING",
    "MIB",
    "MIN_DURATION_S",
    "PLAN_KEYS",
    "RECORDING_SIZE_LIMIT",
    "SIMULATION_VARIABLES",
    "AdjustedRequest",
    "Adjustment",
    "DetectOptions",
    "DeviceMemory",
    "Evaluate",
    "GenerationRequest",
    "InputFileError",
    "LayoutOutcome",
    "MemoryReading",
    "PlaceError",
    "PlaceOptions",
    "Placement",
    "PlanKey",
    "Setting",
    "SettingIgnored",
    "TableError",
    "Tier",
    "TierTable",
    "auto_layout",
    "describe_layout",
    "hookimpl",
    "load_table",
    "nesting_depth",
    "parse_index",
    "parse_memory_gb",
    "parse_table",
    "plan_settings",
    "read_text_limited",
    "single",
    "user_layout",
    "validate_table",
]
