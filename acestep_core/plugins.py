"""The plugin manager: built-in and third-party plugins from entry points, loaded so that none can
stop the pipeline, and hook calls that report and skip a failing plugin.

Environment:

``ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD=1``
    load only the built-in plugins (``cuda``, ``simulated``, ``tiers_default``), none from other
    distributions — as pytest's ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.
``ACESTEP_CORE_BLOCK_PLUGINS=name,name``
    never load these plugins (entry-point names), built-ins included — as pytest's ``-p no:NAME``.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy

from acestep_core import hookspecs
from acestep_core.tables import TableError
from acestep_core.types import PluginProblem

ENTRY_POINT_GROUP = "acestep_core"
DISABLE_AUTOLOAD_ENV = "ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "ACESTEP_CORE_BLOCK_PLUGINS"
BUILTIN_PLUGINS = ("cuda", "simulated", "tiers_default")
"""Entry-point names of the plugins that ship with acestep-core (each its own distribution)."""

Status = Literal["loaded", "blocked", "disabled", "failed"]


class SettingIgnored(Exception):  # noqa: N818 - it names what happened, as warnings do
    """Raised by a hook implementation to reject a user's setting: the core shows the message as a
    warning (no traceback) and carries on with the next implementation."""


@dataclass
class PluginInfo:
    """What ``acestep-core plugins`` lists for one plugin."""

    name: str
    distribution: str | None
    version: str | None
    status: Status
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    builtin: bool = False


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus a record of every plugin found (loaded, blocked, disabled or failed)."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def register_plugin(self, plugin: object, name: str, *, distribution: str | None = None, version: str | None = None, builtin: bool = False) -> None:
        """Register ``plugin`` and record it; a plugin whose hooks do not match the specs is recorded
        as failed instead of raising."""
        try:
            self.register(plugin, name=name)
            self.check_pending()
        except Exception as error:  # noqa: BLE001 - any bad plugin is reported, never fatal
            if self.is_registered(plugin):
                self.unregister(plugin)
            self.infos[name] = PluginInfo(name, distribution, version, "failed", error=_describe(error), builtin=builtin)
            return
        hooks = sorted(impl.name for impl in self.get_hookcallers(plugin) or [])
        self.infos[name] = PluginInfo(name, distribution, version, "loaded", hooks=hooks, builtin=builtin)

    def load_problems(self) -> tuple[PluginProblem, ...]:
        return tuple(
            PluginProblem(info.name, None, info.error or "", "import")
            for info in self.infos.values()
            if info.status == "failed"
        )


def build_plugin_manager(
    environ: Mapping[str, str] | None = None,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    plugins: Iterable[tuple[str, object]] = (),
) -> PluginManager:
    """A manager with every plugin the environment allows.

    :param environ: where to read the switches above (default ``os.environ``).
    :param entry_points: the ``acestep_core`` entry points to load (default: those installed).
    :param plugins: extra ``(name, plugin)`` pairs to register first (tests, embedding apps).
    """
    environ = os.environ if environ is None else environ
    blocked = {name.strip() for name in environ.get(BLOCK_ENV, "").split(",") if name.strip()}
    autoload = environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() not in ("1", "true", "yes", "on")
    manager = PluginManager()
    for name, plugin in plugins:
        if name in blocked:
            manager.infos[name] = PluginInfo(name, None, None, "blocked", error=f"listed in {BLOCK_ENV}")
            continue
        manager.register_plugin(plugin, name)
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for entry_point in sorted(entry_points, key=lambda ep: (ep.name not in BUILTIN_PLUGINS, ep.name)):
        _load_entry_point(manager, entry_point, blocked=blocked, autoload=autoload)
    return manager


def _load_entry_point(manager: PluginManager, entry_point: importlib.metadata.EntryPoint, *, blocked: set[str], autoload: bool) -> None:
    name = entry_point.name
    distribution = entry_point.dist.name if entry_point.dist else None
    version = entry_point.dist.version if entry_point.dist else None
    builtin = name in BUILTIN_PLUGINS
    if name in manager.infos:
        previous = manager.infos[name]
        manager.infos[f"{name} ({distribution})"] = PluginInfo(
            name, distribution, version, "failed", builtin=builtin,
            error=f"name {name!r} is already taken by {previous.distribution or 'a registered plugin'}",
        )
        return
    if name in blocked:
        manager.infos[name] = PluginInfo(name, distribution, version, "blocked", builtin=builtin, error=f"listed in {BLOCK_ENV}")
        return
    if not builtin and not autoload:
        manager.infos[name] = PluginInfo(name, distribution, version, "disabled", builtin=builtin, error=f"{DISABLE_AUTOLOAD_ENV} is set")
        return
    try:
        plugin = entry_point.load()
    except BaseException as error:  # even SystemExit from a plugin must not stop us
        if isinstance(error, KeyboardInterrupt):
            raise
        manager.infos[name] = PluginInfo(name, distribution, version, "failed", builtin=builtin, error=_describe(error))
        return
    manager.register_plugin(plugin, name, distribution=distribution, version=version, builtin=builtin)


# --------------------------------------------------------------------------------------------- calling
@dataclass(frozen=True)
class Answer:
    """The outcome of calling one hook: results with the plugin that gave each, and problems."""

    results: tuple[tuple[str, Any], ...]
    problems: tuple[PluginProblem, ...]

    @property
    def first(self) -> tuple[str, Any] | None:
        return self.results[0] if self.results else None


def call_hook(
    manager: pluggy.PluginManager,
    hook_name: str,
    accepts: Callable[[Any], bool],
    expected: str,
    *,
    first_only: bool,
    **kwargs: Any,
) -> Answer:
    """Call a hook's implementations one at a time, in pluggy's order, so that one that raises or
    returns the wrong type is reported and skipped instead of stopping the call.

    :param accepts: whether a non-None result is of the right type.
    :param expected: the right type, in words, for the problem report.
    :param first_only: stop at the first accepted result (a ``firstresult`` hook).
    """
    caller = getattr(manager.hook, hook_name)
    results: list[tuple[str, Any]] = []
    problems: list[PluginProblem] = []
    for impl in reversed(caller.get_hookimpls()):
        if impl.hookwrapper or impl.wrapper:
            continue
        args = {name: kwargs[name] for name in impl.argnames}
        try:
            result = impl.function(**args)
        except SettingIgnored as ignored:
            problems.append(PluginProblem(impl.plugin_name, hook_name, str(ignored), "invalid-setting"))
            continue
        except BaseException as error:  # even SystemExit from a plugin must not stop us
            if isinstance(error, KeyboardInterrupt):
                raise
            kind = "invalid-table" if isinstance(error, TableError) else "raised"
            problems.append(PluginProblem(impl.plugin_name, hook_name, _describe(error), kind))
            continue
        if result is None:
            continue
        if not accepts(result):
            problems.append(PluginProblem(impl.plugin_name, hook_name, f"expected {expected}, got {type(result).__name__}: {result!r:.80}", "wrong-type"))
            continue
        results.append((impl.plugin_name, result))
        if first_only:
            break
    return Answer(tuple(results), tuple(problems))


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
