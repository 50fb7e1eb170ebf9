"""One resolution: detect → select → adjust → configure, with the user's overrides on top.

This is the single entry point the CLI, the Python API and any server or UI share, so the same
request on the same hardware always gets the same answer.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

from acestep_core.hookspecs import is_valid_reading, ladder_problem
from acestep_core.inputs import clip
from acestep_core.optimize.corrections import attach as attach_observations
from acestep_core.optimize.layout import device_shares, placement_setting
from acestep_core.optimize.plan import check_plan, choices_from_plan, planned_run, run_shape
from acestep_core.optimize.platforms import checked_override
from acestep_core.optimize.quantization import follow_user
from acestep_core.placement import DEVICE_ENVS, PLACE_ENV, describe_layout, parse_place, single, split_tier
from acestep_core.plugins import BUILTIN_PLUGINS, Hooks, PluginManager, get_plugin_manager
from acestep_core.record import Record
from acestep_core.types import (
    CPU,
    AdjustedRequest,
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
from acestep_core.vocabulary import CHECKPOINTS_ENV, COMPONENTS, GIB, SIMULATION_VARIABLES

__all__ = [
    "OverrideError",
    "ResolutionError",
    "TableChoice",
    "available_tables",
    "choose_table",
    "detect",
    "is_valid_reading",
    "resolve",
]

TIERS_ENV = "ACESTEP_CORE_TIERS"
DEFAULT_TABLE = "default"
CORE = "acestep_core"
"""The name the core's own decisions and problems carry (no plugin made them)."""


class ResolutionError(RuntimeError):
    """The framework cannot decide (no tier table, an unknown table name, no plugin selecting a
    tier). The message says what to install or choose."""


class OverrideError(ResolutionError, ValueError):
    """A user override that cannot apply to this request (``ladder.batch_size`` above the adjusted
    batch): the caller's input, so also a :class:`ValueError`; ``key`` is the plan key and ``value``
    the value asked for. The command line reports it as a usage error naming ``--set KEY=VALUE``."""

    def __init__(self, message: str, *, key: str, value: Any) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


class UnknownTableError(ResolutionError):
    """The table asked for by name (``wanted``) is neither installed nor a table file."""

    def __init__(self, message: str, wanted: str) -> None:
        super().__init__(message)
        self.wanted = wanted


# --------------------------------------------------------------------------------------------- tables
class TableChoice(Record):
    table: TierTable
    plugin: str
    reason: str


def available_tables(
    manager: PluginManager, hooks: Hooks | None = None
) -> tuple[list[tuple[str, TierTable]], tuple[PluginProblem, ...]]:
    """Every valid table the plugins register, with the plugin that registered it (through ``hooks``,
    the resolution's own, when given: its ``select_tier`` then accepts tiers of these tables)."""
    answer = (hooks or Hooks(manager)).register_tier_tables()
    tables = [(plugin, table) for plugin, registered in answer.results for table in registered]
    return tables, answer.problems


def choose_table(tables: list[tuple[str, TierTable]], wanted: str | None) -> TableChoice:
    """Which table is active, deterministically and with the reason.

    1. An explicit choice (``--tiers``, ``ACESTEP_CORE_TIERS``, ``resolve(tiers=...)``) always wins.
       It names a table, or the plugin that registered it (when it registered one), or a table
       file (``*.toml``, validated); a name two tables share is an error that lists them.
    2. Without one, the only table registered by a third-party plugin replaces the built-in default.
    3. Two or more third-party tables and no choice is an error that lists them.
    4. Otherwise the built-in ``default``.
    """
    listing = ", ".join(f"{t.name} (from {p})" for p, t in tables) or "none"
    if wanted:
        named = [(p, t) for p, t in tables if t.name == wanted]
        if not named:
            by_plugin = [(p, t) for p, t in tables if p == wanted]
            named = by_plugin if len(by_plugin) == 1 else []
        if len(named) == 1:
            plugin, table = named[0]
            return TableChoice(table, plugin, f"chosen explicitly ({wanted!r})")
        if len(named) > 1:
            raise ResolutionError(
                f"{len(named)} tier tables are named {wanted!r}: {', '.join(p for p, _ in named)}; block one with "
                "ACESTEP_CORE_BLOCK_PLUGINS"
            )
        if wanted.endswith(".toml") or os.sep in wanted or "/" in wanted:
            from acestep_core.tables import load_table

            if os.path.isfile(wanted):
                return TableChoice(load_table(wanted), "file", f"chosen explicitly (the file {wanted})")
            if os.path.exists(wanted):
                raise UnknownTableError(f"{wanted!r} is not a regular file (a tier table is a .toml file)", wanted)
            raise UnknownTableError(f"no tier table file {wanted!r}", wanted)
        raise UnknownTableError(f"no tier table named {wanted!r}; installed tables: {listing}", wanted)
    third_party = [(p, t) for p, t in tables if p not in BUILTIN_PLUGINS]
    if len(third_party) == 1:
        plugin, table = third_party[0]
        return TableChoice(
            table,
            plugin,
            f"the only third-party table; it replaces {DEFAULT_TABLE!r} (choose another with --tiers NAME or "
            f"{TIERS_ENV}=NAME)",
        )
    if len(third_party) > 1:
        names = ", ".join(f"{t.name} (from {p})" for p, t in third_party)
        raise ResolutionError(
            f"several third-party tier tables are installed: {names}. Choose one with --tiers NAME or {TIERS_ENV}=NAME"
        )
    for plugin, table in tables:
        if table.name == DEFAULT_TABLE:
            return TableChoice(table, plugin, "the built-in default (no third-party table installed)")
    if tables:
        plugin, table = tables[0]
        return TableChoice(table, plugin, "the only table installed")
    raise ResolutionError(
        "no tier table is installed: install acestep-core-tiers-default, or check "
        "`acestep-core plugins` for a blocked or failed tier plugin"
    )


# --------------------------------------------------------------------------------------------- detect
_Detected = tuple[MemoryReading, str, tuple[PluginProblem, ...]]
_detections: weakref.WeakKeyDictionary[PluginManager, dict[tuple[Any, ...], _Detected]] = weakref.WeakKeyDictionary()
_detections_lock = threading.RLock()
"""Held while detecting, so that threads asking at once detect once; re-entrant so that a plugin
which itself resolves cannot deadlock."""


def detect(
    manager: PluginManager, options: DetectOptions, *, redetect: bool = False, hooks: Hooks | None = None
) -> _Detected:
    """The memory reading for ``options``, cached per process and per manager (thread-safe);
    ``redetect`` reads again, through ``hooks`` (the resolution's) when given.

    The cache is keyed by the manager object itself (weakly), never by ``id()``: a new manager that
    happens to reuse a dead one's address must not inherit its reading.
    """
    key = options.cache_key()
    with _detections_lock:
        cache = _detections.setdefault(manager, {})
        if not redetect and key in cache:
            return cache[key]
        answer = (hooks or Hooks(manager)).detect_memory(options=options)
        if answer.first is None:
            reading, plugin = MemoryReading(device=CPU, notes=("no detection plugin answered; assuming a CPU",)), CORE
        else:
            plugin, reading = answer.first
        detected = (reading, plugin, answer.problems + _unapplied_simulation(options, reading, answer.problems))
        cache[key] = detected
        return detected


def _unapplied_simulation(
    options: DetectOptions, reading: MemoryReading, problems: tuple[PluginProblem, ...]
) -> tuple[PluginProblem, ...]:
    """A simulation asked for (``--vram``, ``MAX_CUDA_VRAM``…) that no plugin applied and none
    answered for (the ``simulated`` plugin blocked or not installed): said, never silently dropped."""
    asked = [("--vram", options.vram_gb)] if options.vram_gb is not None else []
    asked += [(name, options.environ[name]) for name in SIMULATION_VARIABLES if name in options.environ]
    if reading.simulated or any(problem.setting in dict(asked) for problem in problems):
        return ()  # a plugin simulated, or said why it did not
    return tuple(
        PluginProblem(
            CORE,
            "detect_memory",
            f"{setting}={clip(value.strip(), 40)} is not applied: no detection plugin simulates a device (is "
            "acestep-core-simulated blocked or not installed? see `acestep-core plugins`); the device "
            f"{'replayed' if options.replay else 'detected'} is used",
            "invalid-setting",
            setting,
        )
        for setting, value in asked
    )


def clear_detection_cache() -> None:
    """Forget every cached reading: the next resolution asks the hardware again."""
    with _detections_lock:
        _detections.clear()


# --------------------------------------------------------------------------------------------- resolve
def resolve(
    request: GenerationRequest | None = None,
    *,
    overrides: Overrides | None = None,
    detect_options: DetectOptions | None = None,
    tiers: str | None = None,
    manager: PluginManager | None = None,
    redetect: bool = False,
    environ: Mapping[str, str] | None = None,
    reading: MemoryReading | None = None,
    force: bool = False,
    place: str | None = None,
) -> Resolution:
    """Resolve a request on this machine's hardware.

    :param request: what to generate (default: the tier's defaults for a plain request).
    :param overrides: user values that win over the tier's.
    :param detect_options: device choice, simulated size, a recording to replay.
    :param tiers: the tier table's name (else ``ACESTEP_CORE_TIERS``, else the rule in :func:`choose_table`).
    :param manager: the plugin manager (default: the process-wide one).
    :param redetect: ignore the cached reading.
    :param reading: decide for this reading instead of detecting (a "what if" for another device:
        the compat API's ``get_gpu_config(gb)``, a UI's tier preview, a fleet's router deciding for a
        replica's card); recorded as given by the caller.
    :param force: keep a plan predicted over the device budget instead of refusing it (the same as
        ``Overrides(force=True)``; recorded in ``memory.forced`` and warned).
    :param place: which device runs each component, over the reading's visible devices: ``auto``,
        ``single:N`` or ``lm:1,dit:0,vae:0,text_encoder:0`` (:mod:`acestep_core.placement`); default: the
        ``place_components`` plugins decide (built in: upstream's variables, else ``auto``).
    :raises ResolutionError: when no decision can be made at all.
    :raises ValueError: ``place`` is not a placement.

    The final plan, the user's overrides applied, is checked before it is returned: its peak is
    predicted again and a plan over budget is refused (``ladder.refused``: phase, predicted, budget,
    shortfall) unless forced. Over several devices every device's share is checked against its own budget.
    """
    environ = os.environ if environ is None else environ
    if place is not None:
        parse_place(place)
    request = request or GenerationRequest()
    overrides = overrides or Overrides()
    if force and not overrides.force:
        overrides = dataclasses.replace(overrides, force=True)
    manager = manager or get_plugin_manager()
    hooks = Hooks(manager)
    trail = _Trail(problems=list(manager.load_problems()))
    request = _with_checkpoints_from(environ, request, trail)
    table = _register_tier_tables(hooks, tiers or environ.get(TIERS_ENV) or None, trail)
    options = detect_options or DetectOptions(environ=dict(environ))
    if reading is None:
        reading = _detect_memory(hooks, options, redetect, environ, trail)
    else:
        options = DetectOptions(environ=dict(environ))
        reading = _given_reading(reading, environ, trail)
    layouts = _Layouts(hooks, table, request, overrides, reading)
    default = single(reading.device.key)
    base = layouts.outcome(default)
    wish = PlaceOptions(place=place, device=options.device, environ=environ, default=reading.device.key)
    placement = _place_components(hooks, request, base, layouts, wish, trail)
    chosen = layouts.outcome(placement.components)
    trail.problems += chosen.trail.problems
    trail.decisions += chosen.trail.decisions
    trail.decided("place_components", placement.plugin, describe_layout(placement.components, layouts.readings))
    plan = OptimizationPlan(
        (*chosen.plan.settings, placement_setting(chosen.reading, chosen.tiers, placement.reason, placement.plugin))
    )
    return Resolution(
        reading=chosen.reading,
        table=table.name,
        tier=chosen.tier,
        request=request,
        adjusted=chosen.adjusted,
        plan=plan,
        overrides=chosen.overridden,
        decisions=tuple(trail.decisions),
        problems=tuple(trail.problems),
        placement=placement,
        tiers=dict(chosen.tiers),
    )


def _with_checkpoints_from(environ: Mapping[str, str], request: GenerationRequest, trail: _Trail) -> GenerationRequest:
    """The request with ``ACESTEP_CHECKPOINTS_DIR``'s folder when it names none itself (a folder that
    is not there is one warning, and ignored)."""
    if request.checkpoints is not None or not environ.get(CHECKPOINTS_ENV, "").strip():
        return request
    from acestep_core.checkpoints import checkpoints_dir  # only when the variable is set: not at start-up

    folder, ignored = checkpoints_dir(None, environ)
    if folder is None:
        trail.problems.append(PluginProblem("acestep_core", None, str(ignored), "invalid-setting", CHECKPOINTS_ENV))
        return request
    return dataclasses.replace(request, checkpoints=folder)


class _Outcome(Record):
    """A request resolved on one layout: the placed reading, the tier (and each device's), the
    adjusted request, the checked plan, and what was recorded on the way."""

    reading: MemoryReading
    tier: Tier
    tiers: Mapping[str, Tier]
    adjusted: AdjustedRequest
    plan: OptimizationPlan
    overridden: tuple[Override, ...]
    trail: _Trail


class _Layouts:
    """Resolves the request on any layout of the reading's devices, once per layout (and once per
    set of equivalent layouts for :meth:`evaluate`: identical cards give identical outcomes)."""

    def __init__(
        self, hooks: Hooks, table: TierTable, request: GenerationRequest, overrides: Overrides, reading: MemoryReading
    ) -> None:
        self.hooks, self.table, self.request, self.overrides, self.reading = hooks, table, request, overrides, reading
        self.readings = device_readings(reading)
        self._outcomes: dict[tuple[str, ...], _Outcome] = {}
        self._evaluated: dict[tuple[Any, ...], LayoutOutcome] = {}

    def outcome(self, layout: Mapping[str, str]) -> _Outcome:
        key = tuple(layout[component] for component in COMPONENTS)
        if key not in self._outcomes:
            self._outcomes[key] = self._resolve_on(dict(layout))
        return self._outcomes[key]

    def evaluate(self, layout: Mapping[str, str]) -> LayoutOutcome:
        """What the request becomes on ``layout``: ``place_components``' ``evaluate``."""
        if not isinstance(layout, Mapping) or any(layout.get(c) not in self.readings for c in COMPONENTS):
            raise ValueError(f"a layout maps each of {', '.join(COMPONENTS)} to one of {', '.join(self.readings)}")
        signature = self._signature(layout)
        known = self._evaluated.get(signature)
        if known is None:
            known = layout_outcome(self.outcome(layout), layout)
            self._evaluated[signature] = known
        return dataclasses.replace(known, components={c: layout[c] for c in COMPONENTS})

    def _signature(self, layout: Mapping[str, str]) -> tuple[Any, ...]:
        keys = [layout[c] for c in COMPONENTS]
        shape = tuple(keys.index(key) for key in keys)
        return shape + tuple(device_identity(self.readings[key].device) for key in keys)

    def _resolve_on(self, layout: dict[str, str]) -> _Outcome:
        """select → adjust → configure → overrides on ``layout``: the tier from the DiT's device, the LM's
        sizes from the LM's device (:func:`~acestep_core.placement.split_tier`)."""
        hooks, overrides = self.hooks, self.overrides
        trail = _Trail(problems=[])
        placed = self.reading.placed(layout)
        several = placed.several_devices
        dit_tier = _select_tier(hooks, placed, self.table, trail, role="dit" if several else None)
        tiers = {placed.device.key: dit_tier}
        table_tier = dit_tier
        lm_device = placed.device_of("lm")
        if lm_device.key != placed.device.key:
            lm_tier = _select_tier(hooks, placed.reading_of("lm"), self.table, trail, role="lm")
            tiers[lm_device.key] = lm_tier
            table_tier = split_tier(dit_tier, lm_tier)
        tier = _with_limit_overrides(table_tier, overrides)
        adjusted = _adjust_request(hooks, self.request, tier, placed, trail)
        plan = _configure_optimizations(hooks, adjusted, tier, placed, trail)
        plan, overridden = _overridden(plan, adjusted, table_tier, tier, placed, overrides, trail)
        return _Outcome(placed, tier, tiers, adjusted, plan, overridden, trail)


def device_identity(device: DeviceMemory) -> tuple[Any, ...]:
    """What a resolution reads of a device: two devices alike in these give the same outcome."""
    return (
        device.backend,
        device.name,
        device.total_bytes,
        device.free_bytes,
        device.reserved_bytes,
        device.compute_capability,
        device.mig,
        device.unified_memory,
        device.simulated,
        device.allocator_reserved_bytes,
        device.allocator_allocated_bytes,
        device.weights_dtype,
    )


def device_readings(reading: MemoryReading) -> dict[str, MemoryReading]:
    """Every device a component may be placed on, by key, in the order torch numbers them: the visible
    accelerators (the reading's own device among them), or the reading's device alone (a CPU)."""
    devices = [device for device in reading.visible if device.is_accelerator]
    if reading.device.key not in {device.key for device in devices}:
        devices.insert(0, reading.device)
    found: dict[str, MemoryReading] = {}
    for device in devices:
        if device.key not in found:
            own = reading.device if device.key == reading.device.key else device
            # a device's recorded runs correct its own predictions only: another device starts without them
            observations = reading.observations if own is reading.device else ()
            found[device.key] = dataclasses.replace(reading, device=own, placement={}, observations=observations)
    return found


def layout_outcome(outcome: _Outcome | Resolution, layout: Mapping[str, str] | None = None) -> LayoutOutcome:
    """What ``place_components`` compares layouts by (:func:`acestep_core.placement.grant`): what runs,
    every way it is less than the request, how full the most loaded device is. ``outcome``: a layout's
    resolution (a :class:`~acestep_core.Resolution` too); ``layout``: default, the one it was resolved on."""
    plan, adjusted, tier = outcome.plan, outcome.adjusted, outcome.tier
    run = planned_run(plan, adjusted, tier)
    clamps = [f"{c.field} {c.asked} → {c.granted}" for c in adjusted.changes if c.warning]
    asked = run_shape(adjusted, tier)
    if run.lm_model != asked.lm_model:
        clamps.append(f"ladder: LM {asked.lm_model} → {run.lm_model or 'off'}")
    if run.batch != asked.batch:
        clamps.append(f"ladder: batch {asked.batch} → {run.batch}")
    if run.duration_s != asked.duration_s:
        clamps.append(f"ladder: duration {asked.duration_s:g} s → {run.duration_s:g} s")
    shares = [s for s in device_shares(run, choices_from_plan(plan), outcome.reading) if s.device.is_accelerator]
    pressures = [s.pressure for s in shares if s.pressure is not None]
    placed = layout or {c: outcome.reading.device_of(c).key for c in COMPONENTS}
    return LayoutOutcome(
        components=dict(placed),
        duration_s=run.duration_s,
        batch=run.batch,
        lm_model=run.lm_model,
        clamps=tuple(clamps),
        refused=bool(plan.value("ladder.refused")),
        pressure=max(pressures) if pressures else None,
    )


def _place_components(
    hooks: Hooks, request: GenerationRequest, base: _Outcome, layouts: _Layouts, options: PlaceOptions, trail: _Trail
) -> Placement:
    """Which device runs each component: the first plugin's answer that keeps the contract, else every
    component on the default device. With one device and no placement asked for (``place``, upstream's
    variables) there is nothing to decide, and no plugin is asked."""
    if len(layouts.readings) == 1 and options.place is None and not _placement_variables(options.environ):
        device = base.reading.device
        return Placement(single(device.key), f"one device: every component on {device.describe()}", "acestep_core")
    answer = hooks.place_components(
        request=request,
        adjusted=base.adjusted,
        readings=layouts.readings,
        plan=base.plan,
        options=options,
        evaluate=layouts.evaluate,
    )
    trail.problems += answer.problems
    if answer.first is None:
        return Placement(
            single(options.default),
            "no plugin placed the components: every component on the default device",
            "acestep_core",
        )
    plugin, placement = answer.first
    return placement.attributed(plugin)


class _Trail:
    """What a resolution records as it goes: each hook's decision, and every plugin's problem."""

    def __init__(self, problems: list[PluginProblem]) -> None:
        self.problems = problems
        self.decisions: list[Decision] = []

    def decided(self, hook: str, plugin: str, summary: str) -> None:
        self.decisions.append(Decision(hook, plugin, summary))


def _register_tier_tables(hooks: Hooks, wanted: str | None, trail: _Trail) -> TierTable:
    """The active table, from the tables the plugins register (:func:`choose_table`)."""
    tables, problems = available_tables(hooks.manager, hooks)
    trail.problems += problems
    choice = choose_table(tables, wanted)
    trail.decided("register_tier_tables", choice.plugin, f"table {choice.table.name!r}: {choice.reason}")
    return choice.table


def _detect_memory(
    hooks: Hooks, options: DetectOptions, redetect: bool, environ: Mapping[str, str], trail: _Trail
) -> MemoryReading:
    """The device's reading (cached per manager: :func:`detect`), with this device's recorded runs."""
    reading, detector, problems = detect(hooks.manager, options, redetect=redetect, hooks=hooks)
    trail.problems += problems
    reading = attach_observations(reading, environ)
    trail.decided("detect_memory", detector, _describe_reading(reading))
    return reading


def _given_reading(reading: MemoryReading, environ: Mapping[str, str], trail: _Trail) -> MemoryReading:
    """A reading the caller gave instead of detection: held to detection's contract (with the recorded
    runs of the device it names)."""
    if not is_valid_reading(reading):
        raise ValueError(
            "reading must be a MemoryReading with a positive integer total_bytes (or None for a CPU), not "
            f"{reading!r:.120}"
        )
    reading = attach_observations(reading, environ)
    trail.decided("detect_memory", "caller", _describe_reading(reading))
    return reading


def _select_tier(
    hooks: Hooks, reading: MemoryReading, table: TierTable, trail: _Trail, role: str | None = None
) -> Tier:
    """The tier for ``reading``'s device; ``role`` (``dit``, ``lm``) says why it is asked over several devices."""
    answer = hooks.select_tier(reading=reading, table=table)
    trail.problems += answer.problems
    if answer.first is None:
        raise ResolutionError(
            "no plugin selected a tier (is acestep-core-tiers-default blocked or failing? see `acestep-core plugins`)"
        )
    selector, tier = answer.first
    summary = f"{tier.label} ({tier.vram_label()}) for {_describe_size(reading)}"
    if role == "dit":
        summary += f" on {reading.device.key}, which runs the DiT: the tier follows it"
    elif role == "lm":
        sizes = ", ".join(tier.lm_models) or "none"
        summary += f" on {reading.device.key}, which runs the LM: the LM's sizes follow it ({sizes})"
    trail.decided("select_tier", selector, summary)
    return tier


def _adjust_request(
    hooks: Hooks, request: GenerationRequest, tier: Tier, reading: MemoryReading, trail: _Trail
) -> AdjustedRequest:
    """The request fitted to the tier, each change attributed to the plugin that made it."""
    answer = hooks.adjust_request(request=request, tier=tier, reading=reading)
    trail.problems += answer.problems
    if answer.first is None:
        raise ResolutionError("no plugin adjusted the request (is acestep-core-tiers-default blocked or failing?)")
    adjuster, adjusted = answer.first
    adjusted = dataclasses.replace(
        adjusted,
        changes=tuple(c.attributed(adjuster) for c in adjusted.changes),
        lm_choice="size" if request.lm_model is not None else ("on" if request.lm == "on" else "auto"),
        checkpoints=request.checkpoints,
    )
    trail.decided("adjust_request", adjuster, f"{len(adjusted.changes)} change(s)")
    return adjusted


def _configure_optimizations(
    hooks: Hooks, adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading, trail: _Trail
) -> OptimizationPlan:
    """Every plugin's settings, merged key by key (the first plugin in call order that proposes a key
    decides it)."""
    answer = hooks.configure_optimizations(adjusted=adjusted, tier=tier, reading=reading)
    trail.problems += answer.problems
    plan = _merge_settings(answer.results)
    for plugin in dict.fromkeys(s.plugin for s in plan):
        trail.decided("configure_optimizations", plugin, _summarise_keys([s.key for s in plan if s.plugin == plugin]))
    return plan


def _overridden(
    plan: OptimizationPlan,
    adjusted: AdjustedRequest,
    table_tier: Tier,
    tier: Tier,
    reading: MemoryReading,
    overrides: Overrides,
    trail: _Trail,
) -> tuple[OptimizationPlan, tuple[Override, ...]]:
    """The user's plan values applied, the final plan checked against the device budget
    (:func:`~acestep_core.optimize.plan.check_plan`), and every override recorded."""
    for key, value in overrides.plan.items():
        if (problem := ladder_problem(key, value, adjusted, tier)) is not None:
            raise OverrideError(f"override {problem}", key=key, value=value)
    plan, plan_overrides = _with_plan_overrides(plan, overrides, reading)
    plan = follow_user(plan, tuple(o.key for o in plan_overrides), reading)
    plan = check_plan(plan, adjusted, tier, reading, user_keys=tuple(overrides.plan), force=overrides.force)
    if overrides.force:
        plan_overrides += (Override("force", True, False),)
    overridden = _limit_overrides(table_tier, adjusted, overrides) + plan_overrides
    if overridden:
        trail.decided("overrides", "user", ", ".join(f"{o.key} = {o.value!r} (was {o.default!r})" for o in overridden))
    return plan, overridden


def _with_limit_overrides(tier: Tier, overrides: Overrides) -> Tier:
    changes: dict[str, Any] = {}
    if overrides.max_duration_s is not None:
        changes |= {
            "max_duration_with_lm_s": overrides.max_duration_s,
            "max_duration_without_lm_s": overrides.max_duration_s,
        }
    if overrides.max_batch is not None:
        changes |= {"max_batch_with_lm": overrides.max_batch, "max_batch_without_lm": overrides.max_batch}
    if overrides.lm_models is not None:
        tier = tier.allowing(tuple(overrides.lm_models))
        changes["lm_memory_gb"] = {}  # the user's sizes have no fixed allotment
    return dataclasses.replace(tier, **changes) if changes else tier


def _limit_overrides(tier: Tier, adjusted: AdjustedRequest, overrides: Overrides) -> tuple[Override, ...]:
    found = []
    if overrides.max_duration_s is not None:
        found.append(Override("max_duration_s", overrides.max_duration_s, tier.max_duration_s(adjusted.lm_on)))
    if overrides.max_batch is not None:
        found.append(Override("max_batch", overrides.max_batch, tier.max_batch(adjusted.lm_on)))
    if overrides.lm_models is not None:
        found.append(Override("lm_models", list(overrides.lm_models), list(tier.lm_models)))
    return tuple(found)


def _merge_settings(results: Iterable[tuple[str, Iterable[Setting]]]) -> OptimizationPlan:
    merged: dict[str, Setting] = {}
    for plugin, settings in results:
        for setting in settings:
            if setting.key not in merged:
                merged[setting.key] = setting.attributed(plugin)
    return OptimizationPlan(tuple(merged.values()))


def _with_plan_overrides(
    plan: OptimizationPlan, overrides: Overrides, reading: MemoryReading
) -> tuple[OptimizationPlan, tuple[Override, ...]]:
    """The user's plan values win, except one the device cannot run (``lm.backend=vllm`` on a Mac):
    that one is refused with the reason, as a warning, and the plan's own value stays."""
    if not overrides.plan:
        return plan, ()
    settings = {s.key: s for s in plan}
    wanted = plan.as_dict() | dict(overrides.plan)
    found = []
    for key, value in overrides.plan.items():
        default = plan.value(key)
        impossible = checked_override(key, value, reading, wanted)
        if impossible is not None:
            why = f"{key}={value!r} refused: {impossible}; using {default!r}"
            settings[key] = Setting(key, default, why, "user", warning=True)
            continue
        found.append(Override(key, value, default))
        settings[key] = Setting(key, value, f"set by the user (the plan would have used {default!r})", "user")
    return OptimizationPlan(tuple(settings.values())), tuple(found)


def _summarise_keys(keys: list[str]) -> str:
    """``attention, offload.* (4), compile, quantization.* (4), quantization.scheme.* (3)``: a component group
    in one word."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        dots = key.count(".")
        group = key if dots == 0 else key.partition(".")[0] if dots == 1 else key.rpartition(".")[0]
        groups.setdefault(group, []).append(key)
    parts = [members[0] if len(members) == 1 else f"{group}.* ({len(members)})" for group, members in groups.items()]
    return ", ".join(parts)


def _describe_reading(reading: MemoryReading) -> str:
    device = reading.device
    if not device.is_accelerator:
        return "no accelerator: CPU"
    parts = [f"{device.name}", f"{_gib(device.total_bytes)} total"]
    if device.free_bytes is not None:
        parts.append(f"{_gib(device.free_bytes)} free")
    source = device.sources.get("total_bytes")
    runs = len({o.run_id for o in reading.observations})
    recorded = f"; {runs} earlier run(s) recorded on this device" if runs else ""
    return ", ".join(parts) + (f" (from {source})" if source else "") + recorded


def _describe_size(reading: MemoryReading) -> str:
    if reading.device.total_bytes is None:
        return "a CPU (no device memory)"
    kind = "simulated" if reading.simulated else "detected"
    return f"{_gib(reading.device.total_bytes)} {kind}"


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / GIB:.2f} GiB"


def _placement_variables(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name, "").strip() for name in (PLACE_ENV, *DEVICE_ENVS.values()))
