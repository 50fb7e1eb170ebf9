"""Hook specifications: the contract between acestep-core and its plugins.

A resolution runs the hooks in one direction::

    register_tier_tables ─┐
    detect_memory ────────┴─▶ select_tier ─▶ adjust_request ─▶ configure_optimizations ─▶ place_components ─▶ apply

``place_components`` chooses which device runs each component; where it answers a layout over several
devices, the core resolves the request again for that layout (the tier from the DiT's device, the LM's
sizes from the LM's, every device's share of the run fitted and checked against its own budget).

Implement a hook by writing a function of the same name (any subset of its arguments) decorated with
:data:`acestep_core.plugin_api.hookimpl`, in a module your distribution names under the
``acestep_core`` entry-point group; import what you need from :mod:`acestep_core.plugin_api` only.

Each spec below says, as pytest's ``hookspec.py`` does: its arguments, what it returns, whether the
first result wins or all results are collected, and its **contract** — the rule every answer must
keep. The contract is code, declared beside the spec with :func:`contract`, and the core checks every
answer against it before using it (:class:`acestep_core.plugins.Hooks`, one per resolution, called as
``hooks.select_tier(reading=..., table=...)``).

A new hook is three things: its spec here, its contract beside it (``NAME = contract(spec, expected,
accepts, *rules)``, whose first-result or collected kind follows the spec's ``firstresult``), and one
typed method on :class:`~acestep_core.plugins.Hooks` that names the contract and the arguments.

How the core calls hooks differs from plain pluggy in one way: **one plugin can never stop or
mislead the pipeline.** The implementations of a hook are called one plugin at a time, in pluggy's
order (last registered first; ``tryfirst`` / ``trylast`` reorder), each through pluggy's public
calling (:meth:`pluggy.PluginManager.subset_hook_caller`), so ``ACESTEP_CORE_TRACE_PLUGINS=1`` and
pluggy's hook-call monitoring see each call. An implementation
that raises (``KeyboardInterrupt`` and ``SystemExit`` included, unless the user pressed Ctrl-C),
returns a value of the wrong type, breaks its hook's contract, or — for ``detect_memory`` — does not
answer within the deadline, is reported by name (``acestep-core plugins``, ``Resolution.problems``)
and skipped, and the next implementation decides. Wrappers (``wrapper=True``, ``hookwrapper=True``)
would run around other plugins' answers and could stop or change them, so a plugin that declares one
is refused when it is registered, with a problem naming it and the hook.

Each contract is a list of named rules (:class:`Rule`); :data:`CONTRACTS` holds them by hook, and
:data:`RULES` names them all. ``benchmarks/mutate_contracts.py`` switches each rule off in turn and
runs the property that lets every plugin lie at once, to show that every rule is needed.

An implementation may raise :class:`acestep_core.SettingIgnored` to reject a user's setting (a bad
``MAX_CUDA_VRAM``, say): the core shows its message as a warning, with no traceback, and goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, Generic, Literal, TypeVar

import pluggy

from acestep_core.placement import PlaceError, user_layout
from acestep_core.record import Record
from acestep_core.tables import TableError, validate_table
from acestep_core.types import (
    AdjustedRequest,
    Adjustment,
    DetectOptions,
    DeviceMemory,
    GenerationRequest,
    LayoutOutcome,
    MemoryReading,
    OptimizationPlan,
    Placement,
    PlaceOptions,
    Setting,
    Tier,
    TierTable,
)
from acestep_core.vocabulary import COMPONENTS, MIN_DURATION_S, PLAN_KEYS, PRECISIONS

__all__ = [
    "CONTRACTS",
    "PLAN_KEYS",
    "PROJECT",
    "RULES",
    "Call",
    "Contract",
    "Rule",
    "contract",
    "hookimpl",
    "hookspec",
]

PROJECT = "acestep_core"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------- contracts
class Call(Record):
    """What a contract sees besides the answer: who answered, and the hook's arguments."""

    plugin: str
    kwargs: Mapping[str, Any]
    tables: Mapping[str, tuple[TierTable, ...]] = field(default_factory=dict)
    """The valid tables each plugin registered in this resolution (plugin name → tables)."""


ItemT = TypeVar("ItemT")


class Rule(Record, Generic[ItemT]):
    """One rule of a contract: ``check(item, call)`` is None when the answer (or one item of a
    collected answer) keeps it, else why not, in words; a broken rule is reported as ``kind``."""

    name: str
    check: Callable[[ItemT, Call], str | None]
    kind: Literal["rejected", "invalid-table", "wrong-type"] = "rejected"


class Contract(Record, Generic[ItemT]):
    """What an answer to one hook must be: of the expected type (``accepts``; a failure is reported as
    ``wrong-type``) and keeping every rule. With ``collected`` the answer is a list whose items are
    checked one by one: a bad item is reported and dropped, the rest are kept."""

    hook: str
    expected: str
    accepts: Callable[[Any], bool]
    rules: tuple[Rule[ItemT], ...] = ()
    collected: bool = False

    def items(self, result: Any) -> list[ItemT]:
        if not self.collected:
            return [result]
        return list(result) if isinstance(result, (list, tuple)) else [result]

    def broken(self, item: ItemT, call: Call) -> tuple[Rule[ItemT], str] | None:
        """The first rule ``item`` breaks and why, or None; a value no rule can read breaks it too."""
        for rule in self.rules:
            try:
                why = rule.check(item, call)
            except Exception as error:  # noqa: BLE001 - a plugin's value must not crash the check
                why = f"unreadable answer ({type(error).__name__}: {error})"
            if why is not None:
                return rule, why
        return None


CONTRACTS: dict[str, Contract[Any]] = {}
"""Hook name → its contract, filled by :func:`contract` beside each spec."""


def contract(
    spec: Callable[..., Any], expected: str, accepts: Callable[[Any], bool], *rules: Rule[ItemT]
) -> Contract[ItemT]:
    """Declare the contract of the hookspec ``spec``: whether it is collected follows from the spec
    (``firstresult``), so a contract and its spec cannot disagree."""
    options = getattr(spec, f"{PROJECT}_spec", None)
    if options is None:
        raise TypeError(f"{spec.__name__} is not a hookspec of {PROJECT}")
    declared: Contract[ItemT] = Contract(
        spec.__name__, expected, accepts, rules, collected=not options.get("firstresult", False)
    )
    CONTRACTS[spec.__name__] = declared
    return declared


# --------------------------------------------------------------------------------------------- register_tier_tables
def _is_tables(result: Any) -> bool:
    return isinstance(result, TierTable) or (
        isinstance(result, (list, tuple)) and all(isinstance(t, TierTable) for t in result)
    )


_VALID_TABLES: dict[int, tuple[TierTable, tuple[Any, ...]]] = {}
"""Tables already validated (kept alive here, so an id is never reused), with a snapshot of their
mutable parts: a plugin that hands back the same unchanged object is not validated again."""


def _table_is_valid(table: TierTable, call: Call) -> str | None:
    snapshot = (
        tuple((dict(t.lm_memory_gb), dict(t.optimizations)) if isinstance(t, Tier) else t for t in table.tiers)
        if isinstance(table.tiers, tuple)
        else ()
    )
    known = _VALID_TABLES.get(id(table))
    if known is not None and known[0] is table and known[1] == snapshot:
        return None
    try:
        validate_table(table, source=f"a table from {call.plugin}")
    except TableError as error:
        return str(error)
    if len(_VALID_TABLES) < 64:
        _VALID_TABLES[id(table)] = (table, snapshot)
    return None


@hookspec
def register_tier_tables() -> TierTable | list[TierTable] | None:
    """Offer tier tables: the data a tier plugin ships.

    Tier tables are data, not code, so that a community tuning is a TOML file in a package and
    never needs to re-implement the rules; this hook is how such packages hand their tables in.

    :return: a :class:`~acestep_core.TierTable`, a list of them, or None. A table file that
        fails validation should be loaded with :func:`acestep_core.load_table`, whose
        :class:`~acestep_core.TableError` the core reports (naming the plugin) and skips.

    **Collected**: every plugin's tables are gathered. The core picks one active table: the one the
    caller names (``--tiers NAME``, ``ACESTEP_CORE_TIERS``, the API), else the only table from
    outside the built-in ``default``, else ``default``; two third-party tables with no choice made
    is an error that lists them.

    **Contract**: every table passes exactly the validation a TOML table passes
    (:func:`acestep_core.tables.validate_table`), however it was built; an invalid one is reported
    (``invalid-table``) and dropped, the plugin's other tables are kept.
    """


REGISTER_TIER_TABLES: Contract[TierTable] = contract(
    register_tier_tables,
    "a TierTable or a list of them",
    _is_tables,
    Rule("table-valid", _table_is_valid, kind="invalid-table"),
)


# --------------------------------------------------------------------------------------------- detect_memory
def is_valid_reading(result: Any) -> bool:
    """A reading a tier may be chosen from: garbage (a negative, zero, fractional or non-numeric
    total) is refused here, so that no plugin can put a device in a tier by accident."""
    return _is_reading(result) and _byte_counts(result, None) is None


def _is_reading(result: Any) -> bool:
    return isinstance(result, MemoryReading) and isinstance(result.device, DeviceMemory)


def _byte_counts(reading: MemoryReading, call: Call | None) -> str | None:
    device = reading.device
    for name, minimum in (("total_bytes", 1), ("free_bytes", 0), ("reserved_bytes", 0)):
        figure = getattr(device, name)
        if figure is not None and not _is_byte_count(figure, minimum=minimum):
            least = "positive" if minimum else "non-negative"
            return f"{name} {figure!r:.40} is not a {least} integer byte count (or None)"
    reserved, allocated = device.allocator_reserved_bytes, device.allocator_allocated_bytes
    if reserved is not None or allocated is not None:
        if reserved is None or allocated is None:
            return "allocator_reserved_bytes and allocator_allocated_bytes come together (or both None)"
        if not (_is_byte_count(reserved, minimum=0) and _is_byte_count(allocated, minimum=0)):
            return f"allocator figures {reserved!r:.40} / {allocated!r:.40} are not non-negative integer byte counts"
        if allocated > reserved:
            return f"the allocator's allocated bytes ({allocated}) exceed its reserved bytes ({reserved})"
    if device.weights_dtype is not None and device.weights_dtype not in PRECISIONS:
        return f"weights_dtype {device.weights_dtype!r:.40} is not one of {', '.join(PRECISIONS)}"
    return None


def _is_byte_count(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


DETECT_TIMEOUT_ENV = "ACESTEP_CORE_DETECT_TIMEOUT"
DEFAULT_DETECT_TIMEOUT_S = 10.0
"""Seconds each ``detect_memory`` implementation may take. NVML answers in 0.25 s on an H100, the
torch fallback in 3.9 s there (``benchmarks/results/h100-2026-11-27/``); 10 s leaves a cold import
on a slow disk room, and stops a hung driver from holding the command forever."""


@hookspec(firstresult=True)
def detect_memory(options: DetectOptions) -> MemoryReading | None:
    """Read the memory of the device the pipeline will use.

    :param options: the caller's wishes: which device, a simulated size, a recording to replay,
        the deadline, and the environment to read (never ``os.environ`` directly).
    :return: a :class:`~acestep_core.MemoryReading`, or None to let the next plugin try.

    **First result** wins. The ``simulated`` plugin runs first (``tryfirst``) and answers only when
    simulation is asked for; hardware plugins answer otherwise. When no plugin answers the core
    assumes a CPU. Implementations must not import torch or open a CUDA context unless nothing
    cheaper can answer: detection runs at every start-up.

    **Contract**: a reading of integer byte counts, the total positive (or None: no device memory);
    the allocator figures (``allocator_reserved_bytes`` / ``allocator_allocated_bytes``) both or neither,
    allocated at most reserved — detection leaves them None: only a process that runs torch has them,
    and passes them in with :meth:`~acestep_core.MemoryReading.with_allocator`; ``weights_dtype`` None or
    one of the plan's precisions. Each implementation runs with a deadline (``DetectOptions.timeout_s``, else
    ``ACESTEP_CORE_DETECT_TIMEOUT``, else 10 s); one that does not answer in time is reported
    (``timeout``) and the next decides.
    """


DETECT_MEMORY: Contract[MemoryReading] = contract(
    detect_memory,
    "a MemoryReading whose device has a positive integer total_bytes (or None for a CPU), consistent "
    "allocator figures and a known weights_dtype",
    _is_reading,
    Rule("reading-byte-counts", _byte_counts, kind="wrong-type"),
)


# --------------------------------------------------------------------------------------------- select_tier
def _tier_of_the_table(tier: Tier, call: Call) -> str | None:
    table: TierTable = call.kwargs["table"]
    if tier in table.tiers or any(tier in own.tiers for own in call.tables.get(call.plugin, ())):
        return None
    return (
        f"tier {tier.name!r} is not one of table {table.name!r}'s ({', '.join(t.name for t in table.tiers)}) "
        "nor of a valid table this plugin registered"
    )


@hookspec(firstresult=True)
def select_tier(reading: MemoryReading, table: TierTable) -> Tier | None:
    """Choose the tier for a reading from the active table.

    :param reading: what ``detect_memory`` returned (or the core's CPU default).
    :param table: the active tier table.
    :return: one of ``table.tiers`` (or a tier of a table the same plugin registered), or None to pass.

    **First result** wins. The default rule (``tiers_default``) is documented in that plugin.

    **Contract**: the tier is one of the active table's, or of a valid table the answering plugin
    registered itself; anything else is reported (``rejected``) and the next implementation decides.
    """


SELECT_TIER: Contract[Tier] = contract(
    select_tier, "a Tier", lambda result: isinstance(result, Tier), Rule("tier-of-the-table", _tier_of_the_table)
)


# --------------------------------------------------------------------------------------------- adjust_request
def _lm_allowed(adjusted: AdjustedRequest, call: Call) -> str | None:
    tier: Tier = call.kwargs["tier"]
    lm = adjusted.lm_model
    if lm is not None and lm not in tier.lm_models:
        allowed = ", ".join(tier.lm_models) or "none"
        return f"LM {lm!r} is not allowed on {tier.label} (allowed: {allowed}, or off)"
    return None


def _dit_allowed(adjusted: AdjustedRequest, call: Call) -> str | None:
    tier: Tier = call.kwargs["tier"]
    if adjusted.dit_model not in tier.dit_models:
        return f"DiT {adjusted.dit_model!r} is not allowed on {tier.label} (allowed: {', '.join(tier.dit_models)})"
    return None


def _duration_in_range(adjusted: AdjustedRequest, call: Call) -> str | None:
    tier: Tier = call.kwargs["tier"]
    duration, limit = adjusted.duration_s, tier.max_duration_s(adjusted.lm_model is not None)
    if duration is not None and not (
        _is_real(duration) and math.isfinite(duration) and MIN_DURATION_S <= duration <= limit
    ):
        return f"duration {duration!r} is outside [{MIN_DURATION_S}, {limit}] s of {tier.label}"
    return None


def _batch_in_range(adjusted: AdjustedRequest, call: Call) -> str | None:
    tier: Tier = call.kwargs["tier"]
    batch, most = adjusted.batch_size, tier.max_batch(adjusted.lm_model is not None)
    if not (isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= most):
        return f"batch {batch!r} is outside [1, {most}] of {tier.label}"
    return None


def _changes_authored(adjusted: AdjustedRequest, call: Call) -> str | None:
    changes = adjusted.changes
    if not isinstance(changes, tuple) or not all(isinstance(c, Adjustment) for c in changes):
        return f"changes must be a tuple of Adjustment, not {changes!r:.80}"
    return _authors(changes, call)


def _setting_authored(setting: Setting, call: Call) -> str | None:
    return _authors([setting], call)


def _authors(records: Any, call: Call) -> str | None:
    """Each record reasoned and naming no plugin but the one answering (the core names it after)."""
    for record in records:
        if not isinstance(record.reason, str) or record.plugin not in ("", call.plugin):
            return f"{record.subject!r} claims to be decided by {record.plugin!r}"
    return None


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@hookspec(firstresult=True)
def adjust_request(request: GenerationRequest, tier: Tier, reading: MemoryReading) -> AdjustedRequest | None:
    """Fit a request to a tier: clamp durations and batch sizes, choose or refuse the LM and the DiT.

    :param request: what the user asked for.
    :param tier: the selected tier, with the user's overrides already applied to its limits.
    :param reading: the memory reading the tier came from (for messages).
    :return: an :class:`~acestep_core.AdjustedRequest` with one :class:`~acestep_core.Adjustment`
        per change, or None to pass.

    **First result** wins.

    **Contract**: the request as it will run fits ``tier``: duration None (the LM chooses) or in
    [10, the tier's maximum for the LM state], batch in [1, the tier's maximum], the LM off or one the
    tier allows, a DiT the tier allows (``dit_models``; an ``AdjustedRequest`` that does not say runs the
    2B turbo); each change a reasoned :class:`~acestep_core.Adjustment` naming no other plugin.
    """


ADJUST_REQUEST: Contract[AdjustedRequest] = contract(
    adjust_request,
    "an AdjustedRequest",
    lambda result: isinstance(result, AdjustedRequest),
    Rule("lm-allowed", _lm_allowed),
    Rule("dit-allowed", _dit_allowed),
    Rule("duration-in-range", _duration_in_range),
    Rule("batch-in-range", _batch_in_range),
    Rule("authorship", _changes_authored),
)


# --------------------------------------------------------------------------------------------- configure_optimizations
def _is_settings(result: Any) -> bool:
    return isinstance(result, (list, tuple)) and all(isinstance(s, Setting) for s in result)


def _plan_key_in_schema(setting: Setting, call: Call) -> str | None:
    spec = PLAN_KEYS.get(setting.key) if isinstance(setting.key, str) else None
    if spec is None:
        own = isinstance(setting.key, str) and setting.key.startswith(f"{call.plugin}.")
        return None if own else f"unknown plan key {setting.key!r} (a plugin's own keys start with its name)"
    problem = spec.check(setting.value)
    return None if problem is None else f"{setting.key}: {problem}"


def _ladder_batch_lowers(setting: Setting, call: Call) -> str | None:
    return _ladder_batch_problem(setting.key, setting.value, call.kwargs["adjusted"])


def _ladder_duration_lowers(setting: Setting, call: Call) -> str | None:
    return _ladder_duration_problem(setting.key, setting.value, call.kwargs["adjusted"], call.kwargs["tier"])


def ladder_problem(key: str, value: Any, adjusted: AdjustedRequest, tier: Tier) -> str | None:
    """The ladder only ever lowers the run: None when ``key = value`` keeps to that, else why not
    (the same rule for a plugin's setting and a user's override)."""
    return _ladder_batch_problem(key, value, adjusted) or _ladder_duration_problem(key, value, adjusted, tier)


def _ladder_batch_problem(key: Any, value: Any, adjusted: AdjustedRequest) -> str | None:
    if key == "ladder.batch_size" and value > adjusted.batch_size:
        return (
            f"ladder.batch_size {value} is above the adjusted batch {adjusted.batch_size} (the ladder may only "
            "lower it)"
        )
    return None


def _ladder_duration_problem(key: Any, value: Any, adjusted: AdjustedRequest, tier: Tier) -> str | None:
    if key == "ladder.duration_s":
        longest = adjusted.duration_s if adjusted.duration_s is not None else tier.max_duration_s(adjusted.lm_on)
        if value > longest:
            return f"ladder.duration_s {value} is above the adjusted duration {longest} (the ladder may only lower it)"
    return None


@hookspec
def configure_optimizations(adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading) -> list[Setting] | None:
    """Propose optimization settings for the run.

    :param adjusted: the request as it will run.
    :param tier: the selected tier (its ``optimizations`` hold the table's defaults).
    :param reading: the device the run will use.
    :return: a list of :class:`~acestep_core.Setting` records (keys in :data:`PLAN_KEYS`), or None.

    **Collected**, then merged key by key: for each key the first plugin in call order that proposes
    it decides, so a hardware-aware plugin marked ``tryfirst`` can settle ``attention`` while the
    tier plugin settles the rest. The user's overrides are applied after the merge and always win.

    **Contract**, per setting: a key of :data:`PLAN_KEYS` with a value of its type and range (the
    ladder may only lower: ``ladder.batch_size`` ≤ the adjusted batch, ``ladder.duration_s`` ≤ the
    adjusted duration), or a key of the plugin's own (``<plugin>.<name>``). A setting that breaks it
    is reported (``rejected``) and dropped, so the next plugin proposing that key decides.
    """


CONFIGURE_OPTIMIZATIONS: Contract[Setting] = contract(
    configure_optimizations,
    "a list of Setting",
    _is_settings,
    Rule("plan-key-in-schema", _plan_key_in_schema),
    Rule("ladder-batch-only-lowers", _ladder_batch_lowers),
    Rule("ladder-duration-only-lowers", _ladder_duration_lowers),
    Rule("authorship", _setting_authored),
)


# --------------------------------------------------------------------------------------------- place_components
def _every_component(placement: Placement, call: Call) -> str | None:
    components = placement.components
    if (
        not isinstance(components, Mapping)
        or set(components) != set(COMPONENTS)
        or not all(isinstance(key, str) for key in components.values())
    ):
        return f"components must map each of {', '.join(COMPONENTS)} to a device key, not {components!r:.80}"
    return None


def _visible_devices(placement: Placement, call: Call) -> str | None:
    readings: Mapping[str, MemoryReading] = call.kwargs["readings"]
    unknown = sorted(set(placement.components.values()) - set(readings))
    if unknown:
        return f"no visible device {', '.join(map(repr, unknown))} (visible: {', '.join(readings)})"
    return None


def _user_map_kept(placement: Placement, call: Call) -> str | None:
    try:
        wanted, given, _ = user_layout(call.kwargs["options"], call.kwargs["readings"])
    except PlaceError:  # the user's map names no visible device: there is nothing to keep to
        return None
    if wanted is not None and dict(placement.components) != wanted:
        return f"the user placed the components ({given}: {wanted}); the answer places them otherwise"
    return None


def _placement_authored(placement: Placement, call: Call) -> str | None:
    notes = placement.notes
    if not isinstance(notes, tuple) or not all(isinstance(note, str) for note in notes):
        return f"notes must be a tuple of str, not {notes!r:.80}"
    return _authors([placement], call)


@hookspec(firstresult=True)
def place_components(
    request: GenerationRequest,
    adjusted: AdjustedRequest,
    readings: Mapping[str, MemoryReading],
    plan: OptimizationPlan,
    options: PlaceOptions,
    evaluate: Callable[[Mapping[str, str]], LayoutOutcome],
) -> Placement | None:
    """Choose which device runs each component (``lm``, ``text_encoder``, ``dit``, ``vae``).

    :param request: what the user asked for.
    :param adjusted: the request as it runs on the default device alone (``options.default``).
    :param readings: every visible device's reading, by device key (``cuda:0`` …), in the order torch
        numbers them; each reading's ``device`` is that device.
    :param plan: the plan on the default device alone.
    :param options: the user's placement (``--place``, ``resolve(place=...)``; its syntax already
        checked), ``--device``, the default device's key, and the environment to read upstream's
        ``ACESTEP_GPU_MAPPING`` / ``ACESTEP_{DIT,VAE,LM}_DEVICE`` from.
    :param evaluate: ``evaluate(layout)`` → :class:`~acestep_core.LayoutOutcome`: what the request
        becomes under a layout (component → device key), worked out by the core through every hook.
    :return: a :class:`~acestep_core.Placement`, or None to pass.

    **First result** wins; with no answer every component runs on the default device. The built-in
    answer (``tiers_default``): the user's map wins, then ``--device``, then upstream's variables (a
    variable that is not a placement is warned about and ignored), else ``auto``
    (:func:`acestep_core.placement.auto_layout`).

    The core resolves the request again for the layout answered (the tier from the device that runs the
    DiT, the LM's allowed sizes from the LM's device, every device's share of the run planned and
    checked against its own budget: a layout over any device's budget is refused with the device, the
    phase and the shortfall unless forced), exactly as it checks a one-device plan.

    **Contract**: a device for every component, each one of ``readings``; where the user placed the
    components (``--place`` as a map or ``single:N``, else ``--device``, else upstream's variables), that
    placement; the reason and notes in words, naming no other plugin. A placement that breaks it is
    reported (``rejected``) and the next implementation decides.
    """


PLACE_COMPONENTS: Contract[Placement] = contract(
    place_components,
    "a Placement",
    lambda result: isinstance(result, Placement),
    Rule("placement-every-component", _every_component),
    Rule("placement-visible-devices", _visible_devices),
    Rule("placement-keeps-user-map", _user_map_kept),
    Rule("placement-authorship", _placement_authored),
)


RULES: tuple[str, ...] = tuple(dict.fromkeys(rule.name for declared in CONTRACTS.values() for rule in declared.rules))
"""The contracts' rules by name, in hook order: ``table-valid`` (register_tier_tables),
``reading-byte-counts`` (detect_memory), ``tier-of-the-table`` (select_tier), ``lm-allowed``,
``dit-allowed``, ``duration-in-range``, ``batch-in-range``, ``authorship`` (adjust_request and
configure_optimizations), ``plan-key-in-schema``, ``ladder-batch-only-lowers``, ``ladder-duration-only-lowers``
(configure_optimizations), ``placement-every-component``, ``placement-visible-devices``,
``placement-keeps-user-map``, ``placement-authorship`` (place_components)."""
