"""Hook specifications: the contract between acestep-core and its plugins.

A resolution runs the hooks in one direction::

    register_tier_tables ─┐
    detect_memory ────────┴─▶ select_tier ─▶ adjust_request ─▶ configure_optimizations ─▶ apply

Implement a hook by writing a function of the same name (any subset of its arguments) decorated with
:data:`acestep_core.hookimpl`, in a module your distribution names under the ``acestep_core``
entry-point group.

Each spec below says, as pytest's ``hookspec.py`` does: its arguments, what it returns, whether the
first result wins or all results are collected, and its **contract** — the rule every answer must
keep. The contract is code, declared beside the spec with :func:`contract`, and the core checks every
answer against it before using it (:class:`acestep_core.plugins.Hooks`, called as
``hooks.select_tier(reading=..., table=...)``).

How the core calls hooks differs from plain pluggy in one way: **one plugin can never stop or
mislead the pipeline.** The implementations of a hook are called one at a time, in pluggy's order
(last registered first; ``tryfirst`` / ``trylast`` reorder), through pluggy's own hook execution (so
``ACESTEP_CORE_TRACE_PLUGINS=1`` and pluggy's hook-call monitoring see each call). An implementation
that raises (``KeyboardInterrupt`` and ``SystemExit`` included, unless the user pressed Ctrl-C),
returns a value of the wrong type, breaks its hook's contract, or — for ``detect_memory`` — does not
answer within the deadline, is reported by name (``acestep-core plugins``, ``Resolution.problems``)
and skipped, and the next implementation decides. Wrappers (``wrapper=True``) are not supported.

An implementation may raise :class:`acestep_core.SettingIgnored` to reject a user's setting (a bad
``MAX_CUDA_VRAM``, say): the core shows its message as a warning, with no traceback, and goes on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Any, Literal

import pluggy

from acestep_core.record import Record
from acestep_core.tables import TableError, validate_table
from acestep_core.types import (
    AdjustedRequest,
    Adjustment,
    DetectOptions,
    DeviceMemory,
    GenerationRequest,
    MemoryReading,
    Setting,
    Tier,
    TierTable,
)
from acestep_core.vocabulary import MIN_DURATION_S, PLAN_KEYS

__all__ = ["CONTRACTS", "PLAN_KEYS", "PROJECT", "Call", "Contract", "contract", "hookimpl", "hookspec"]

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


Rule = Callable[[Any, Call], str | None]
"""A contract's rule: None when the answer (or one item of a collected answer) keeps it, else why not."""


class Contract(Record):
    """What an answer to one hook must be.

    ``accepts`` is the type check (a failure is reported as ``wrong-type``); ``rule`` the meaning
    (a failure is reported as ``kind``). With ``per_item`` the answer is a list whose items are checked
    one by one: a bad item is reported and dropped, the rest are kept.
    """

    expected: str
    accepts: Callable[[Any], bool]
    rule: Rule | None = None
    per_item: bool = False
    kind: Literal["rejected", "invalid-table"] = "rejected"

    def items(self, result: Any) -> list[Any]:
        if not self.per_item:
            return [result]
        return list(result) if isinstance(result, (list, tuple)) else [result]


CONTRACTS: dict[str, Contract] = {}
"""Hook name → its contract, filled by :func:`contract` beside each spec."""


def contract(declared: Contract) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare the contract of the hookspec it decorates."""

    def attach(spec: Callable[..., Any]) -> Callable[..., Any]:
        CONTRACTS[spec.__name__] = declared
        return spec

    return attach


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


@contract(Contract("a TierTable or a list of them", _is_tables, _table_is_valid, per_item=True, kind="invalid-table"))
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


# --------------------------------------------------------------------------------------------- detect_memory
def is_valid_reading(result: Any) -> bool:
    """A reading a tier may be chosen from: garbage (a negative, zero, fractional or non-numeric
    total) is refused here, so that no plugin can put a device in a tier by accident."""
    if not isinstance(result, MemoryReading) or not isinstance(result.device, DeviceMemory):
        return False
    device = result.device
    for figure in (device.free_bytes, device.reserved_bytes):
        if figure is not None and not _is_byte_count(figure, minimum=0):
            return False
    return device.total_bytes is None or _is_byte_count(device.total_bytes, minimum=1)


def _is_byte_count(value: Any, *, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


DETECT_TIMEOUT_ENV = "ACESTEP_CORE_DETECT_TIMEOUT"
DEFAULT_DETECT_TIMEOUT_S = 10.0
"""Seconds each ``detect_memory`` implementation may take. NVML answers in 0.25 s on an H100, the
torch fallback in 3.9 s there (``benchmarks/results/h100-2026-11-27/``); 10 s leaves a cold import
on a slow disk room, and stops a hung driver from holding the command forever."""


@contract(
    Contract("a MemoryReading whose device has a positive integer total_bytes (or None for a CPU)", is_valid_reading)
)
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

    **Contract**: a reading of integer byte counts, the total positive (or None: no device memory).
    Each implementation runs with a deadline (``DetectOptions.timeout_s``, else
    ``ACESTEP_CORE_DETECT_TIMEOUT``, else 10 s); one that does not answer in time is reported
    (``timeout``) and the next decides.
    """


# --------------------------------------------------------------------------------------------- select_tier
def _tier_of_the_table(tier: Tier, call: Call) -> str | None:
    table: TierTable = call.kwargs["table"]
    if tier in table.tiers or any(tier in own.tiers for own in call.tables.get(call.plugin, ())):
        return None
    return (
        f"tier {tier.name!r} is not one of table {table.name!r}'s ({', '.join(t.name for t in table.tiers)}) "
        "nor of a valid table this plugin registered"
    )


@contract(Contract("a Tier", lambda result: isinstance(result, Tier), _tier_of_the_table))
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


# --------------------------------------------------------------------------------------------- adjust_request
def _within_the_tier(adjusted: AdjustedRequest, call: Call) -> str | None:
    tier: Tier = call.kwargs["tier"]
    lm = adjusted.lm_model
    if lm is not None and lm not in tier.lm_models:
        allowed = ", ".join(tier.lm_models) or "none"
        return f"LM {lm!r} is not allowed on {tier.label} (allowed: {allowed}, or off)"
    if adjusted.dit_model not in tier.dit_models:
        return f"DiT {adjusted.dit_model!r} is not allowed on {tier.label} (allowed: {', '.join(tier.dit_models)})"
    lm_on = lm is not None
    duration, limit = adjusted.duration_s, tier.max_duration_s(lm_on)
    if duration is not None and not (
        _is_real(duration) and math.isfinite(duration) and MIN_DURATION_S <= duration <= limit
    ):
        return f"duration {duration!r} is outside [{MIN_DURATION_S}, {limit}] s of {tier.label}"
    batch, most = adjusted.batch_size, tier.max_batch(lm_on)
    if not (isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= most):
        return f"batch {batch!r} is outside [1, {most}] of {tier.label}"
    changes = adjusted.changes
    if not isinstance(changes, tuple) or not all(isinstance(c, Adjustment) for c in changes):
        return f"changes must be a tuple of Adjustment, not {changes!r:.80}"
    return _authors(changes, call)


def _authors(records: Any, call: Call) -> str | None:
    for record in records:
        if not isinstance(record.reason, str) or record.plugin not in ("", call.plugin):
            return f"{record.subject!r} claims to be decided by {record.plugin!r}"
    return None


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contract(Contract("an AdjustedRequest", lambda result: isinstance(result, AdjustedRequest), _within_the_tier))
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


# --------------------------------------------------------------------------------------------- configure_optimizations
def _is_settings(result: Any) -> bool:
    return isinstance(result, (list, tuple)) and all(isinstance(s, Setting) for s in result)


def _setting_in_range(setting: Setting, call: Call) -> str | None:
    spec = PLAN_KEYS.get(setting.key) if isinstance(setting.key, str) else None
    if spec is None:
        own = isinstance(setting.key, str) and setting.key.startswith(f"{call.plugin}.")
        return None if own else f"unknown plan key {setting.key!r} (a plugin's own keys start with its name)"
    problem = spec.check(setting.value)
    if problem is not None:
        return f"{setting.key}: {problem}"
    problem = ladder_problem(setting.key, setting.value, call.kwargs["adjusted"], call.kwargs["tier"])
    if problem is not None:
        return problem
    return _authors([setting], call)


def ladder_problem(key: str, value: Any, adjusted: AdjustedRequest, tier: Tier) -> str | None:
    """The ladder only ever lowers the run: None when ``key = value`` keeps to that, else why not
    (the same rule for a plugin's setting and a user's override)."""
    if key == "ladder.batch_size" and value > adjusted.batch_size:
        return (
            f"ladder.batch_size {value} is above the adjusted batch {adjusted.batch_size} (the ladder may only "
            "lower it)"
        )
    if key == "ladder.duration_s":
        longest = adjusted.duration_s if adjusted.duration_s is not None else tier.max_duration_s(adjusted.lm_on)
        if value > longest:
            return f"ladder.duration_s {value} is above the adjusted duration {longest} (the ladder may only lower it)"
    return None


@contract(Contract("a list of Setting", _is_settings, _setting_in_range, per_item=True))
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
