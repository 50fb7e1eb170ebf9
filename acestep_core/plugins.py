"""The plugin manager: built-in and third-party plugins from entry points, loaded so that none can
stop the pipeline, and hook calls that report and skip a failing plugin.

Environment:

``ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD=1``
    load only the built-in plugins (``cuda``, ``simulated``, ``tiers_default``), none from other
    distributions — as pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.
``ACESTEP_CORE_BLOCK_PLUGINS=name,name``
    never load these plugins (entry-point names), built-ins included — as pytest's ``-p no:NAME``.
``ACESTEP_CORE_TRACE_PLUGINS=1``
    print every hook call, with the plugin called and its result, to stderr (as datasette's
    ``DATASETTE_TRACE_PLUGINS``).
``ACESTEP_CORE_DETECT_TIMEOUT=S``
    seconds each ``detect_memory`` implementation may take (default 10).

A built-in plugin is recognised by its distribution and module together
(:data:`BUILTINS`); an entry point from any other distribution that takes a built-in's name is
refused and reported by name, with or without autoload.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, Literal, TextIO, TypeVar

import pluggy

from acestep_core import hookspecs
from acestep_core.discovery import PluginEntryPoint, discover
from acestep_core.hookspecs import DEFAULT_DETECT_TIMEOUT_S, DETECT_TIMEOUT_ENV, Contract
from acestep_core.inputs import env_flag
from acestep_core.record import Record
from acestep_core.tables import TableError
from acestep_core.types import (
    AdjustedRequest,
    DetectOptions,
    GenerationRequest,
    LayoutOutcome,
    MemoryReading,
    OptimizationPlan,
    Placement,
    PlaceOptions,
    PluginProblem,
    ProblemKind,
    Setting,
    Tier,
    TierTable,
)

ENTRY_POINT_GROUP = "acestep_core"
DISABLE_AUTOLOAD_ENV = "ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "ACESTEP_CORE_BLOCK_PLUGINS"


class BuiltinPlugin(Record):
    """A plugin that ships with acestep-core: recognised by its distribution and module together,
    never by its entry-point name alone (any distribution can declare any name)."""

    name: str
    distribution: str
    module: str


BUILTINS: Mapping[str, BuiltinPlugin] = {
    plugin.name: plugin
    for plugin in (
        BuiltinPlugin("cuda", "acestep-core-cuda", "acestep_core_cuda"),
        BuiltinPlugin("simulated", "acestep-core-simulated", "acestep_core_simulated"),
        BuiltinPlugin("tiers_default", "acestep-core-tiers-default", "acestep_core_tiers_default"),
    )
}
BUILTIN_PLUGINS = tuple(BUILTINS)
"""Entry-point names of the plugins that ship with acestep-core (each its own distribution)."""

Status = Literal["loaded", "blocked", "disabled", "failed", "refused"]


class SettingIgnored(Exception):  # noqa: N818 - it names what happened, as warnings do
    """Raised by a hook implementation to reject a user's setting: the core shows the message as a
    warning (no traceback) and carries on with the next implementation.

    ``setting`` names the input as the user gave it (``"--replay"``, ``"MAX_CUDA_VRAM"``): the command
    line turns a rejected flag (a name starting with ``--``) into a usage error, where an environment
    variable stays a warning."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class PluginInfo(Record):
    """What ``acestep-core plugins`` lists for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    status: Status
    hooks: tuple[str, ...] = ()
    error: str | None = None
    builtin: bool = False
    module: str | None = None


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus a record of every plugin found (loaded, blocked, disabled, refused or
    failed). Hooks are called through :class:`Hooks` (one per resolution), never ``manager.hook``."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def register_plugin(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
        builtin: bool = False,
        module: str | None = None,
    ) -> None:
        """Register ``plugin`` and record it; a plugin whose hooks do not match the specs is recorded
        as failed instead of raising, one that takes a name the core gives its own decisions or wraps a
        hook (:func:`refusal`) as refused."""
        try:
            self.register(plugin, name=name)
            self.check_pending()
        except Exception as error:  # noqa: BLE001 - any bad plugin is reported, never fatal
            if self.is_registered(plugin):
                self.unregister(plugin)
            self.infos[name] = PluginInfo(
                name, distribution, version, "failed", error=_describe(error), builtin=builtin, module=module
            )
            return
        refused = refusal(self, plugin, name)
        if refused is not None:
            self.unregister(plugin)
            self.infos[name] = PluginInfo(
                name, distribution, version, "refused", error=refused, builtin=builtin, module=module
            )
            return
        hooks = tuple(sorted(impl.name for impl in self.get_hookcallers(plugin) or []))
        self.infos[name] = PluginInfo(
            name, distribution, version, "loaded", hooks=hooks, builtin=builtin, module=module
        )

    def load_problems(self) -> tuple[PluginProblem, ...]:
        return tuple(
            PluginProblem(info.name, None, info.error or "", "refused" if info.status == "refused" else "import")
            for info in self.infos.values()
            if info.status in ("failed", "refused")
        )


RESERVED_NAMES = frozenset({"acestep_core", "user", "caller", "file"})
"""Names the core gives its own decisions (``Decision.plugin``, ``Setting.plugin``): the core's checks,
the user's overrides, a reading the caller gave, a table file. A plugin by one of these names could
pass its answers off as theirs, so none may take one."""


def refusal(manager: pluggy.PluginManager, plugin: object, name: str) -> str | None:
    """Why a registered plugin may not stay, or None.

    A hook wrapper (``wrapper=True``, ``hookwrapper=True``) runs around the other plugins'
    implementations and can stop the call or replace its result: it would be one plugin deciding for
    all, which :class:`Hooks` exists to prevent. Rather than be listed as loaded and never run, such a
    plugin is refused, with the hooks it wraps."""
    if name in RESERVED_NAMES:
        return f"the name {name!r} is the core's own (reserved: {', '.join(sorted(RESERVED_NAMES))})"
    wrapped = sorted(
        caller.name
        for caller in manager.get_hookcallers(plugin) or []
        for impl in caller.get_hookimpls()
        if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)
    )
    if wrapped:
        return (
            f"it wraps {', '.join(wrapped)} (wrapper=True or hookwrapper=True): acestep-core calls each plugin's "
            "implementation on its own, checked against the hook's contract, so that no plugin can stop or "
            "change another's answer, and runs no wrappers; implement the hook itself instead"
        )
    return None


def build_plugin_manager(
    environ: Mapping[str, str] | None = None,
    entry_points: Iterable[PluginEntryPoint] | None = None,
    plugins: Iterable[tuple[str, object]] = (),
) -> PluginManager:
    """A manager with every plugin the environment allows.

    :param environ: where to read the switches above (default ``os.environ``).
    :param entry_points: the ``acestep_core`` entry points to load (default: those installed, found
        through :func:`acestep_core.discovery.discover`); :class:`importlib.metadata.EntryPoint` works too.
    :param plugins: extra ``(name, plugin)`` pairs to register first (tests, embedding apps).
    """
    environ = os.environ if environ is None else environ
    blocked = {name.strip() for name in environ.get(BLOCK_ENV, "").split(",") if name.strip()}
    autoload = not env_flag(environ.get(DISABLE_AUTOLOAD_ENV))
    manager = PluginManager()
    if env_flag(environ.get(TRACE_ENV)):
        enable_trace(manager)
    for name, plugin in plugins:
        if name in blocked:
            manager.infos[name] = PluginInfo(name, None, None, "blocked", error=f"listed in {BLOCK_ENV}")
            continue
        manager.register_plugin(plugin, name)
    if entry_points is None:
        entry_points = discover(ENTRY_POINT_GROUP, environ=environ)
    found = [(entry_point, builtin_identity(entry_point)) for entry_point in entry_points]
    for entry_point, builtin in sorted(found, key=lambda pair: (pair[1] is None, pair[0].name)):
        _load_entry_point(manager, entry_point, builtin, blocked=blocked, autoload=autoload)
    return manager


def builtin_identity(entry_point: PluginEntryPoint) -> BuiltinPlugin | None:
    """The built-in plugin this entry point is, judged by distribution and module, or None.

    An entry point without a distribution (built in code, as tests do) is judged by the distribution
    that installed its module."""
    builtin = BUILTINS.get(entry_point.name)
    if builtin is None or entry_point.module != builtin.module:
        return None
    if entry_point.dist is not None:
        return builtin if _normalise(entry_point.dist.name) == builtin.distribution else None
    import importlib.metadata  # only for entry points made in code: the scan itself is cached

    owners = importlib.metadata.packages_distributions().get(builtin.module, [])
    return builtin if builtin.distribution in {_normalise(owner) for owner in owners} else None


def _normalise(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _load_entry_point(
    manager: PluginManager,
    entry_point: PluginEntryPoint,
    builtin: BuiltinPlugin | None,
    *,
    blocked: set[str],
    autoload: bool,
) -> None:
    name = entry_point.name
    distribution = entry_point.dist.name if entry_point.dist else None
    version = entry_point.dist.version if entry_point.dist else None
    module = entry_point.module

    def record(status: Status, error: str) -> PluginInfo:
        return PluginInfo(name, distribution, version, status, error=error, builtin=builtin is not None, module=module)

    impostor = BUILTINS.get(name)
    if impostor is not None and builtin is None:
        manager.infos[f"{name} ({distribution or module})"] = record(
            "refused",
            (
                f"the name {name!r} belongs to the built-in plugin {impostor.module} from {impostor.distribution}; "
                f"{distribution or 'an unknown distribution'} ({module}) may not take it"
            ),
        )
        return
    if name in RESERVED_NAMES:
        manager.infos[f"{name} ({distribution or module})"] = record("refused", f"the name {name!r} is the core's own")
        return
    if name in manager.infos:
        previous = manager.infos[name]
        manager.infos[f"{name} ({distribution})"] = record(
            "failed",
            f"name {name!r} is already taken by {previous.distribution or 'a registered plugin'}",
        )
        return
    if name in blocked:
        manager.infos[name] = record("blocked", f"listed in {BLOCK_ENV}")
        return
    if builtin is None and not autoload:
        manager.infos[name] = record("disabled", f"{DISABLE_AUTOLOAD_ENV} is set")
        return
    try:
        with _SigintWatch() as watch:
            try:
                plugin = entry_point.load()
            except KeyboardInterrupt:
                if watch.arrived:
                    raise
                raise _PluginInterruptError.of(sys.exc_info()[1]) from None
    except _PluginInterruptError as interrupt:
        manager.infos[name] = record("failed", str(interrupt))
        return
    except Exception as error:  # noqa: BLE001 - any bad plugin is reported, never fatal
        manager.infos[name] = record("failed", _describe(error))
        return
    except SystemExit as error:  # even SystemExit from a plugin must not stop us
        manager.infos[name] = record("failed", _describe(error))
        return
    manager.register_plugin(
        plugin, name, distribution=distribution, version=version, builtin=builtin is not None, module=module
    )


# --------------------------------------------------------------------------------------------- calling
T = TypeVar("T")


class Answer(Record, Generic[T]):
    """The outcome of calling one hook: the results that kept the hook's contract, each with the
    plugin that gave it, in call order, and the problems of the rest."""

    results: tuple[tuple[str, T], ...]
    problems: tuple[PluginProblem, ...]

    @property
    def first(self) -> tuple[str, T] | None:
        return self.results[0] if self.results else None


class _DeadlineError(Exception):
    pass


class Hooks:
    """The hooks, called by attribute and checked: ``hooks.select_tier(reading=r, table=t)``.

    One ``Hooks`` serves one resolution: it remembers the tables each plugin registered
    (:meth:`register_tier_tables`), which ``select_tier``'s contract accepts tiers from.

    Each call runs the hook's implementations one plugin at a time, in pluggy's order, each through
    pluggy's public calling (:meth:`pluggy.PluginManager.subset_hook_caller`: the hook as if only that
    plugin implemented it, so spec defaults, argument checks and hook-call monitoring apply). An
    answer that raises, is of the wrong type or breaks a rule of the contract declared beside its spec
    (:data:`acestep_core.hookspecs.CONTRACTS`) is reported by name and skipped; the next one decides.

    Adding a hook takes its spec and contract in :mod:`acestep_core.hookspecs` and one method here,
    which names the contract and the arguments (``self._first(...)`` or ``self._collected(...)``).
    """

    def __init__(self, manager: PluginManager) -> None:
        self._manager = manager
        self.tables: dict[str, tuple[TierTable, ...]] = {}
        """The valid tables each plugin registered at this object's ``register_tier_tables`` call."""

    @property
    def manager(self) -> PluginManager:
        return self._manager

    def register_tier_tables(self) -> Answer[tuple[TierTable, ...]]:
        answer = self._collected(hookspecs.REGISTER_TIER_TABLES)
        self.tables = {}
        for plugin, tables in answer.results:
            self.tables[plugin] = self.tables.get(plugin, ()) + tables
        return answer

    def detect_memory(self, *, options: DetectOptions) -> Answer[MemoryReading]:
        return self._first(hookspecs.DETECT_MEMORY, deadline_s=detect_timeout(options), options=options)

    def select_tier(self, *, reading: MemoryReading, table: TierTable) -> Answer[Tier]:
        return self._first(hookspecs.SELECT_TIER, reading=reading, table=table)

    def adjust_request(
        self, *, request: GenerationRequest, tier: Tier, reading: MemoryReading
    ) -> Answer[AdjustedRequest]:
        return self._first(hookspecs.ADJUST_REQUEST, request=request, tier=tier, reading=reading)

    def configure_optimizations(
        self, *, adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading
    ) -> Answer[tuple[Setting, ...]]:
        return self._collected(hookspecs.CONFIGURE_OPTIMIZATIONS, adjusted=adjusted, tier=tier, reading=reading)

    def place_components(
        self,
        *,
        request: GenerationRequest,
        adjusted: AdjustedRequest,
        readings: Mapping[str, MemoryReading],
        plan: OptimizationPlan,
        options: PlaceOptions,
        evaluate: Callable[[Mapping[str, str]], LayoutOutcome],
    ) -> Answer[Placement]:
        return self._first(
            hookspecs.PLACE_COMPONENTS,
            request=request,
            adjusted=adjusted,
            readings=readings,
            plan=plan,
            options=options,
            evaluate=evaluate,
        )

    # ----------------------------------------------------------------------------------------- the calling
    def _first(self, contract: Contract[T], *, deadline_s: float | None = None, **kwargs: Any) -> Answer[T]:
        """A first-result hook: the first answer that keeps the contract decides."""
        results: list[tuple[str, T]] = []
        problems: list[PluginProblem] = []
        for plugin, kept in self._answers(contract, kwargs, deadline_s, problems):
            if kept:
                results.append((plugin, kept[0]))
                break
        return self._answer(contract, tuple(results), problems)

    def _collected(self, contract: Contract[T], **kwargs: Any) -> Answer[tuple[T, ...]]:
        """A collected hook: every plugin's answer, each item that keeps the contract."""
        problems: list[PluginProblem] = []
        results = tuple((plugin, tuple(kept)) for plugin, kept in self._answers(contract, kwargs, None, problems))
        return self._answer(contract, results, problems)

    def _answers(
        self, contract: Contract[T], kwargs: dict[str, Any], deadline_s: float | None, problems: list[PluginProblem]
    ) -> Iterator[tuple[str, list[T]]]:
        """Each plugin that answered, in call order, with the items of its answer that keep the
        contract; what it got wrong goes to ``problems``."""
        hook = contract.hook
        caller: pluggy.HookCaller = getattr(self._manager.hook, hook)
        implementations = caller.get_hookimpls()
        for plugin, name in dict.fromkeys((impl.plugin, impl.plugin_name) for impl in reversed(implementations)):
            others = [impl.plugin for impl in implementations if impl.plugin is not plugin]
            alone = self._manager.subset_hook_caller(hook, remove_plugins=others)
            try:
                result = _call_isolated(alone, name, kwargs, deadline_s)
            except _NoAnswerError as problem:
                problems.append(problem.of(name, hook, deadline_s))
                continue
            answers = [result] if not contract.collected else result
            for answer in answers:
                if answer is None:
                    continue
                if not contract.accepts(answer):
                    got = f"expected {contract.expected}, got {type(answer).__name__}: {_short(answer)}"
                    problems.append(PluginProblem(name, hook, got, "wrong-type"))
                    continue
                yield name, self._kept(contract, name, answer, kwargs, problems)

    def _kept(
        self, contract: Contract[T], plugin: str, answer: Any, kwargs: dict[str, Any], problems: list[PluginProblem]
    ) -> list[T]:
        call = hookspecs.Call(plugin, kwargs, self.tables)
        kept = []
        for item in contract.items(answer):
            broken = contract.broken(item, call)
            if broken is None:
                kept.append(item)
            else:
                rule, why = broken
                problems.append(PluginProblem(plugin, contract.hook, _short(why, 600), rule.kind))
        return kept

    def _answer(
        self, contract: Contract[Any], results: tuple[tuple[str, T], ...], problems: list[PluginProblem]
    ) -> Answer[T]:
        tracer = getattr(self._manager, "acestep_trace", None)
        if tracer is not None:
            for problem in problems:
                tracer(f"{contract.hook} ✗ {problem.plugin}: {problem.kind}: {_short(problem.error, 200)}")
        return Answer(results, tuple(problems))


class _NoAnswerError(Exception):
    """Why one plugin's call gave no answer: it raised, rejected a setting, or ran past the deadline."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error

    def of(self, plugin: str, hook: str, deadline_s: float | None) -> PluginProblem:
        error = self.error
        if isinstance(error, SettingIgnored):
            return PluginProblem(plugin, hook, str(error), "invalid-setting", error.setting)
        if isinstance(error, _DeadlineError):
            return PluginProblem(plugin, hook, f"no answer within {deadline_s:g} s ({DETECT_TIMEOUT_ENV})", "timeout")
        if isinstance(error, _PluginInterruptError):
            return PluginProblem(plugin, hook, str(error), "raised")
        kind: ProblemKind = "invalid-table" if isinstance(error, TableError) else "raised"
        if kind == "raised":
            _debug_traceback(error, f"{hook} of plugin {plugin!r}")
        return PluginProblem(plugin, hook, _describe(error), kind)


def _call_isolated(alone: pluggy.HookCaller, plugin: str, kwargs: dict[str, Any], deadline_s: float | None) -> Any:
    """``alone(**kwargs)``: one plugin's implementation, through pluggy. Whatever it raises becomes a
    :class:`_NoAnswerError` (SystemExit included), except the user's own Ctrl-C: a KeyboardInterrupt
    when no SIGINT arrived is the plugin's, and is reported like any other exception."""
    try:
        if deadline_s is not None:
            return _with_deadline(lambda: alone(**kwargs), deadline_s, f"{alone.name} of {plugin}")
        with _SigintWatch() as watch:
            try:
                return alone(**kwargs)
            except KeyboardInterrupt:
                if watch.arrived:
                    raise
                raise _PluginInterruptError.of(sys.exc_info()[1]) from None
    except KeyboardInterrupt:  # the user's Ctrl-C (a plugin's own became _PluginInterruptError)
        raise
    except BaseException as error:  # noqa: BLE001 - even SystemExit from a plugin must not stop us
        raise _NoAnswerError(error) from None


class _PluginInterruptError(Exception):
    """A KeyboardInterrupt a plugin raised itself (no Ctrl-C): reported, never allowed to stop us."""

    @classmethod
    def of(cls, error: BaseException | None) -> _PluginInterruptError:
        return cls(f"{_describe(error or KeyboardInterrupt())} (raised by the plugin itself, not by Ctrl-C)")


class _SigintWatch:
    """Notes whether a real SIGINT arrived while a plugin ran (main thread only; elsewhere no signal
    can arrive, so any KeyboardInterrupt is the plugin's)."""

    def __init__(self) -> None:
        self.arrived = False
        self._previous: Any = None

    def __enter__(self) -> _SigintWatch:
        if threading.current_thread() is not threading.main_thread():
            return self
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):  # ignored, or the default action (which kills, never raises)
            return self

        def note(signum: int, frame: Any) -> Any:
            self.arrived = True
            return previous(signum, frame)

        try:
            signal.signal(signal.SIGINT, note)
        except ValueError:
            return self
        self._previous = previous
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _with_deadline(work: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """``work()`` in a daemon thread; raises :class:`_DeadlineError` if it has not returned in time (the
    thread is abandoned: a hung driver call cannot be cancelled, only not waited for)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as error:  # noqa: BLE001 - handed to the caller
            box["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name=f"acestep-core {what}", daemon=True).start()
    if not done.wait(deadline_s):
        raise _DeadlineError
    if "error" in box:
        error = box["error"]
        if isinstance(error, KeyboardInterrupt):  # no signal reaches another thread: the plugin raised it
            raise _PluginInterruptError.of(error) from None
        raise error
    return box["result"]


def detect_timeout(options: DetectOptions) -> float:
    """The deadline for each ``detect_memory`` implementation: ``options.timeout_s``, else
    ``ACESTEP_CORE_DETECT_TIMEOUT`` (a bad value is ignored), else the default."""
    if options.timeout_s is not None:
        return float(options.timeout_s)
    raw = options.environ.get(DETECT_TIMEOUT_ENV, "").strip()
    try:
        value = float(raw) if raw.isascii() else math.nan  # float() reads '１０' (full-width) as 10
    except ValueError:
        return DEFAULT_DETECT_TIMEOUT_S
    return value if math.isfinite(value) and value > 0 else DEFAULT_DETECT_TIMEOUT_S


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------- tracing
TRACE_ENV = "ACESTEP_CORE_TRACE_PLUGINS"


def enable_trace(manager: pluggy.PluginManager, stream: TextIO | None = None) -> None:
    """Print every hook call, the plugin called and its result to ``stream`` (default stderr)."""

    def write(line: str) -> None:
        print(f"acestep-core trace: {line}", file=stream or sys.stderr, flush=True)

    manager.acestep_trace = write  # type: ignore[attr-defined]  # Hooks adds each rejection

    def before(hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        plugins = ", ".join(impl.plugin_name for impl in hook_impls)
        args = ", ".join(f"{k}={_short(v, 60)}" for k, v in kwargs.items())
        write(f"{hook_name} → {plugins}({args})")

    def after(
        outcome: pluggy.Result[Any], hook_name: str, hook_impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]
    ) -> None:
        plugins = ", ".join(impl.plugin_name for impl in hook_impls)
        if outcome.exception is not None:
            write(f"{hook_name} ← {plugins}: raised {_describe(outcome.exception)}")
            return
        result = outcome.get_result()
        contract = hookspecs.CONTRACTS.get(hook_name)
        if contract is not None and not contract.collected:
            write(f"{hook_name} ← {plugins}: {_short(result, 200)}")
        else:
            write(f"{hook_name} ← {plugins}: {_short(result[0] if len(result) == 1 else result or None, 200)}")

    manager.add_hookcall_monitoring(before, after)


DEBUG_ENV = "ACESTEP_CORE_DEBUG"


def _debug_traceback(error: BaseException, where: str) -> None:
    """With ``ACESTEP_CORE_DEBUG`` on, a plugin's exception (a bug, reported and skipped) also prints
    its traceback to stderr, as the command line does for its own bugs."""
    if env_flag(os.environ.get(DEBUG_ENV)):
        import traceback  # only when debugging

        print(f"acestep-core debug: {where} raised:", file=sys.stderr)
        traceback.print_exception(error, file=sys.stderr)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


# --------------------------------------------------------------------------------------------- default
_default: PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, built on first use from the installed entry points."""
    global _default
    with _default_lock:
        if _default is None:
            _default = build_plugin_manager()
        return _default


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (after installing a plugin, or in tests)."""
    global _default
    with _default_lock:
        _default = None
