"""The hook facade (issue #20): one ``Hooks`` per resolution, typed answers, implementations run through
pluggy's public API one plugin at a time, and hook wrappers refused at registration rather than
listed as loaded and never run."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pluggy
import pytest
from conftest import SMALL_TABLE

import acestep_core
from acestep_core import (
    AdjustedRequest,
    GenerationRequest,
    MemoryReading,
    Tier,
    TierTable,
    hookimpl,
    parse_table,
    resolve,
)
from acestep_core.hookspecs import CONTRACTS
from acestep_core.plugins import RESERVED_NAMES, Answer, Hooks

SIM8 = {"MAX_CUDA_VRAM": "8"}
RESOLVE_MODULE = importlib.import_module("acestep_core.resolve")  # the package's ``resolve`` is the function
PACKAGE = Path(acestep_core.__file__).parent


# --------------------------------------------------------------------------------------------- wrappers
class NewStyleWrapper:
    ran = False

    @hookimpl(wrapper=True)
    def select_tier(self) -> Generator[None, Tier, Tier]:
        NewStyleWrapper.ran = True
        return (yield)


class OldStyleWrapper:
    ran = False

    @hookimpl(hookwrapper=True)
    def adjust_request(self) -> Generator[None, Any, None]:
        OldStyleWrapper.ran = True
        yield

    @hookimpl
    def configure_optimizations(self) -> list[object]:
        OldStyleWrapper.ran = True
        return []


@pytest.mark.parametrize(
    ("plugin", "hook", "marker"),
    [(NewStyleWrapper(), "select_tier", "wrapper=True"), (OldStyleWrapper(), "adjust_request", "hookwrapper=True")],
    ids=["wrapper", "hookwrapper"],
)
def test_a_plugin_with_a_hook_wrapper_is_refused_by_name_and_never_runs(
    make_manager, plugin: object, hook: str, marker: str
) -> None:
    manager = make_manager(("wrapping", plugin))
    info = manager.infos["wrapping"]
    assert info.status == "refused"
    assert f"it wraps {hook}" in (info.error or "") and marker in (info.error or "")
    assert manager.get_plugin("wrapping") is None  # its plain implementations do not run either
    resolution = resolve(manager=manager, environ=SIM8)
    assert not type(plugin).ran  # type: ignore[attr-defined]
    [problem] = resolution.problems
    assert (problem.plugin, problem.kind) == ("wrapping", "refused")
    assert any(w.startswith("plugin 'wrapping' was refused: it wraps") for w in resolution.warnings)
    honest = resolve(manager=make_manager(), environ=SIM8)
    assert (resolution.tier, resolution.adjusted, resolution.plan) == (honest.tier, honest.adjusted, honest.plan)


@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_a_plugin_may_not_take_a_name_the_core_gives_its_own_decisions(make_manager, name: str) -> None:
    class PassesItselfOff:
        @hookimpl(tryfirst=True)
        def configure_optimizations(self) -> list[object]:
            raise AssertionError("a refused plugin must not run")

    manager = make_manager((name, PassesItselfOff()))
    assert manager.infos[name].status == "refused" and "the core's own" in (manager.infos[name].error or "")
    resolution = resolve(manager=manager, environ=SIM8)
    assert [(p.plugin, p.kind) for p in resolution.problems] == [(name, "refused")]


# --------------------------------------------------------------------------------------------- one per resolution
def test_one_hooks_object_serves_the_whole_resolution(make_manager, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Hooks] = []

    class Counted(Hooks):
        def __init__(self, manager: Any) -> None:
            super().__init__(manager)
            made.append(self)

    class OwnTable:
        table = parse_table(SMALL_TABLE, source="own")

        @hookimpl
        def register_tier_tables(self) -> TierTable:
            return self.table

        @hookimpl
        def select_tier(self) -> Tier:
            return self.table.tiers[0]

    monkeypatch.setattr(RESOLVE_MODULE, "Hooks", Counted)
    resolution = resolve(manager=make_manager(("own", OwnTable())), tiers="default", environ=SIM8, redetect=True)
    assert len(made) == 1  # tables, detection, selection, adjustment and the plan: one object
    assert made[0].tables["own"] == (OwnTable.table,)
    assert resolution.tier == OwnTable.table.tiers[0] and resolution.decided_by("select_tier") == "own"


def test_the_manager_no_longer_hands_out_a_new_facade_on_every_access(make_manager) -> None:
    assert not hasattr(make_manager(), "hooks")


# --------------------------------------------------------------------------------------------- typed answers
def test_each_hook_answer_carries_the_plugin_and_a_value_of_the_contracts_type(make_manager) -> None:
    hooks = Hooks(make_manager())
    tables = hooks.register_tier_tables()
    assert isinstance(tables, Answer) and [plugin for plugin, _ in tables.results] == ["tiers_default"]
    assert all(isinstance(table, TierTable) for _, registered in tables.results for table in registered)
    detected = hooks.detect_memory(options=acestep_core.DetectOptions(environ=SIM8))
    assert detected.first is not None and detected.first[0] == "simulated"
    reading = detected.first[1]
    assert isinstance(reading, MemoryReading)
    table = dict(tables.results)["tiers_default"][0]
    selected = hooks.select_tier(reading=reading, table=table)
    assert selected.first is not None and selected.first[1] is table.tier("tier4")
    adjusted = hooks.adjust_request(request=GenerationRequest(), tier=selected.first[1], reading=reading)
    assert adjusted.first is not None and isinstance(adjusted.first[1], AdjustedRequest)
    settings = hooks.configure_optimizations(adjusted=adjusted.first[1], tier=selected.first[1], reading=reading)
    assert [plugin for plugin, _ in settings.results] == ["tiers_default"]
    assert all(isinstance(s, acestep_core.Setting) for _, proposed in settings.results for s in proposed)


def test_every_hook_has_one_typed_method_on_the_facade_and_its_contract_matches_the_spec() -> None:
    manager = pluggy.PluginManager("acestep_core")
    from acestep_core import hookspecs

    manager.add_hookspecs(hookspecs)
    for hook, contract in CONTRACTS.items():
        assert callable(getattr(Hooks, hook)), hook
        spec = getattr(manager.hook, hook).spec
        assert contract.hook == hook and contract.collected == (not spec.opts["firstresult"])
        assert contract.rules, f"{hook} has no rule"


def test_the_fifth_hook_is_a_spec_a_contract_and_one_typed_method(make_manager) -> None:
    """``place_components`` (issue #24) was added as the facade says a hook is added: its spec and
    contract in ``hookspecs`` and one typed method here; a lying answer is refused by its contract and
    the next plugin's answer is used."""
    from acestep_core import Placement
    from acestep_core.hookspecs import PLACE_COMPONENTS, place_components

    assert CONTRACTS["place_components"] is PLACE_COMPONENTS and PLACE_COMPONENTS.collected is False
    assert place_components.acestep_core_spec["firstresult"]  # type: ignore[attr-defined]

    class Liar:
        @hookimpl(tryfirst=True)
        def place_components(self) -> Placement:
            return Placement(dict.fromkeys(acestep_core.COMPONENTS, "cuda:7"), "there is no cuda:7")

    manager = make_manager(("liar", Liar()))
    resolution = resolve(manager=manager, detect_options=acestep_core.DetectOptions(vram_gb="8,8", environ={}))
    assert resolution.decided_by("place_components") == "tiers_default"
    [problem] = resolution.problems
    assert (problem.plugin, problem.hook, problem.kind) == ("liar", "place_components", "rejected")
    assert "no visible device 'cuda:7' (visible: cuda:0, cuda:1)" in problem.error


# --------------------------------------------------------------------------------------------- public pluggy
def test_each_implementation_is_called_through_pluggy_and_seen_by_hook_call_monitoring(make_manager) -> None:
    manager = make_manager()
    seen: list[tuple[str, tuple[str, ...]]] = []

    def before(hook: str, impls: Sequence[pluggy.HookImpl], kwargs: Mapping[str, Any]) -> None:
        seen.append((hook, tuple(impl.plugin_name for impl in impls)))

    manager.add_hookcall_monitoring(before, lambda *args: None)
    resolve(manager=manager, environ=SIM8, redetect=True)
    assert ("detect_memory", ("simulated",)) in seen
    assert ("select_tier", ("tiers_default",)) in seen
    assert all(len(plugins) == 1 for _, plugins in seen)  # one plugin at a time: isolation


def _pluggy_private_names() -> set[str]:
    private: set[str] = set()
    for cls in (pluggy.PluginManager, pluggy.HookCaller, pluggy.HookImpl, pluggy.HookRelay, pluggy.Result):
        private |= {name for name in dir(cls) if name.startswith("_") and not name.startswith("__")}
        private |= set(getattr(cls, "__slots__", ()))
    private |= set(vars(pluggy.PluginManager("x")))
    return {name for name in private if name.startswith("_") and not name.startswith("__")} - {"_is_protocol"}


def private_pluggy_uses(source: str) -> list[str]:
    private = _pluggy_private_names()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in private:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pluggy._"):
            found.append(f"line {node.lineno}: from {node.module}")
    return found


def test_the_core_drives_pluggy_through_its_public_api_only() -> None:
    assert private_pluggy_uses("manager._hookexec(name, [impl], kwargs, False)") == ["line 1: ._hookexec"]
    assert private_pluggy_uses("from pluggy._callers import _multicall") == ["line 1: from pluggy._callers"]
    offenders = [
        f"{path.relative_to(PACKAGE)} {use}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for use in private_pluggy_uses(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
