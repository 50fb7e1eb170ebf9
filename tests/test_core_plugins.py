"""The plugin manager and hook calls: throwaway plugins, bad plugins reported by name and skipped,
the autoload and block switches, tables from third parties, and the detection cache."""

from __future__ import annotations

import gc
import sys
import textwrap
import threading
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from conftest import SMALL_TABLE

from acestep_core import (
    GIB,
    DeviceMemory,
    MemoryReading,
    ResolutionError,
    Tier,
    TierTable,
    build_plugin_manager,
    clear_detection_cache,
    hookimpl,
    parse_table,
    resolve,
)
from acestep_core.tables import TableError

GROUP = "acestep_core"
BUILTIN_ENTRY_POINTS = [
    EntryPoint(name="tiers_default", value="acestep_core_tiers_default", group=GROUP),
    EntryPoint(name="simulated", value="acestep_core_simulated", group=GROUP),
]


# --------------------------------------------------------------------------------------------- throwaway plugins
class AlwaysUnlimited:
    @hookimpl
    def select_tier(self, table: TierTable) -> Tier:
        return table.tier("unlimited")


def test_a_throwaway_plugin_overrides_select_tier(make_manager) -> None:
    manager = make_manager(("always_unlimited", AlwaysUnlimited()))
    resolution = resolve(manager=manager, environ={"MAX_CUDA_VRAM": "4"})
    assert resolution.tier.name == "unlimited"
    assert resolution.decided_by("select_tier") == "always_unlimited"
    assert resolution.problems == ()
    # and unregistering it gives the default rule back
    manager.unregister(name="always_unlimited")
    assert resolve(manager=manager, environ={"MAX_CUDA_VRAM": "4"}).tier.name == "tier1"


class RaisesEverywhere:
    @hookimpl
    def register_tier_tables(self) -> None:
        raise RuntimeError("tables exploded")

    @hookimpl(tryfirst=True)
    def detect_memory(self) -> None:
        raise OSError("driver exploded")

    @hookimpl
    def select_tier(self) -> None:
        raise ZeroDivisionError("select exploded")

    @hookimpl
    def adjust_request(self) -> None:
        raise KeyError("adjust exploded")

    @hookimpl
    def configure_optimizations(self) -> None:
        raise SystemExit("configure tried to exit")


class ReturnsJunk:
    @hookimpl
    def register_tier_tables(self) -> list[object]:
        return ["not a table"]

    @hookimpl(tryfirst=True)
    def detect_memory(self) -> dict[str, int]:
        return {"total": 8}

    @hookimpl
    def select_tier(self) -> str:
        return "tier9"

    @hookimpl
    def adjust_request(self) -> int:
        return 42

    @hookimpl
    def configure_optimizations(self) -> list[object]:
        return [("compile", True)]


HOOKS = ("register_tier_tables", "detect_memory", "select_tier", "adjust_request", "configure_optimizations")


@pytest.mark.parametrize(("plugin", "kind"), [(RaisesEverywhere(), "raised"), (ReturnsJunk(), "wrong-type")])
def test_a_bad_plugin_is_reported_by_name_in_every_hook_and_skipped(make_manager, plugin: object, kind: str) -> None:
    resolution = resolve(manager=make_manager(("bad", plugin)), environ={"MAX_CUDA_VRAM": "8"})
    # the resolution completes from the remaining plugins, exactly as without the bad one
    without = resolve(manager=make_manager(), environ={"MAX_CUDA_VRAM": "8"})
    assert resolution.tier.name == "tier4"
    assert (resolution.tier, resolution.adjusted, resolution.plan) == (without.tier, without.adjusted, without.plan)
    assert [(p.plugin, p.hook, p.kind) for p in resolution.problems] == [("bad", hook, kind) for hook in HOOKS]
    messages = [w for w in resolution.warnings if "'bad'" in w]
    assert len(messages) == len(HOOKS)
    assert all(m.startswith("plugin 'bad' ") and m.endswith("(skipped)") for m in messages)


def test_the_problem_message_carries_the_error(make_manager) -> None:
    resolution = resolve(manager=make_manager(("bad", RaisesEverywhere())))
    assert "plugin 'bad' raised in detect_memory: OSError: driver exploded (skipped)" in resolution.warnings
    assert any("SystemExit: configure tried to exit" in w for w in resolution.warnings)
    junk = resolve(manager=make_manager(("junk", ReturnsJunk())))
    assert any(
        w.startswith("plugin 'junk' returned the wrong type in select_tier: expected a Tier, got str")
        for w in junk.warnings
    )


@pytest.mark.parametrize(
    "device",
    [
        DeviceMemory(backend="cuda", name="negative", total_bytes=-8 * GIB),
        DeviceMemory(backend="cuda", name="zero", total_bytes=0),
        DeviceMemory(backend="cuda", name="float", total_bytes=8.5 * GIB),  # type: ignore[arg-type]
        DeviceMemory(backend="cuda", name="text", total_bytes="8GB"),  # type: ignore[arg-type]
        DeviceMemory(backend="cuda", name="bool", total_bytes=True),  # type: ignore[arg-type]
        DeviceMemory(backend="cuda", name="bad free", total_bytes=8 * GIB, free_bytes=-1),
    ],
)
def test_a_garbage_reading_never_chooses_a_tier(make_manager, detected, device: DeviceMemory) -> None:
    manager = make_manager(detected(20), ("garbage", _Reports(MemoryReading(device=device))))
    resolution = resolve(manager=manager)
    assert resolution.tier.name == "tier6"  # from the next detector's 20 GiB
    assert [(p.plugin, p.kind) for p in resolution.problems] == [("garbage", "wrong-type")]


class _Reports:
    def __init__(self, reading: MemoryReading) -> None:
        self.reading = reading

    @hookimpl(tryfirst=True)
    def detect_memory(self) -> MemoryReading:
        return self.reading


# --------------------------------------------------------------------------------------------- loading
@pytest.fixture
def plugin_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Importable throwaway plugin modules, one per kind of failure (and one good table plugin)."""
    modules = {
        "acestep_test_raises_on_import": "raise RuntimeError('cannot start')",
        "acestep_test_exits_on_import": "import sys\nsys.exit(3)",
        "acestep_test_bad_signature": """
            from acestep_core import hookimpl

            @hookimpl
            def select_tier(no_such_argument):
                return None
            """,
        "acestep_test_unknown_hook": """
            from acestep_core import hookimpl

            @hookimpl
            def detect_gpus():
                return None
            """,
        "acestep_test_small_table": f"""
            from acestep_core import hookimpl, parse_table

            @hookimpl
            def register_tier_tables():
                return parse_table({SMALL_TABLE!r}, source="small")
            """,
        "acestep_test_invalid_table": """
            from acestep_core import hookimpl, parse_table

            @hookimpl
            def register_tier_tables():
                return parse_table("[table]\\nname = 'broken'\\n", source="broken.toml")
            """,
    }
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in modules:
        sys.modules.pop(name, None)


FAILING = {
    "missing": ("acestep_test_no_such_module", "ModuleNotFoundError"),
    "raises": ("acestep_test_raises_on_import", "RuntimeError: cannot start"),
    "exits": ("acestep_test_exits_on_import", "SystemExit: 3"),
    "signature": ("acestep_test_bad_signature", "no_such_argument"),
    "unknown_hook": ("acestep_test_unknown_hook", "detect_gpus"),
}


def test_plugins_that_fail_to_load_are_reported_by_name_and_skipped(plugin_modules: Path) -> None:
    entry_points = BUILTIN_ENTRY_POINTS + [EntryPoint(name=n, value=v, group=GROUP) for n, (v, _) in FAILING.items()]
    manager = build_plugin_manager(environ={}, entry_points=entry_points)
    for name, (_, error) in FAILING.items():
        info = manager.infos[name]
        assert info.status == "failed", name
        assert error in (info.error or ""), (name, info.error)
    assert manager.infos["tiers_default"].status == "loaded"

    resolution = resolve(manager=manager, environ={"MAX_CUDA_VRAM": "8"})
    assert resolution.tier.name == "tier4"
    assert sorted(p.plugin for p in resolution.problems) == sorted(FAILING)
    assert all(p.kind == "import" for p in resolution.problems)
    assert any(w.startswith("plugin 'raises' failed to load: RuntimeError: cannot start") for w in resolution.warnings)


def test_a_third_party_table_replaces_the_default(plugin_modules: Path) -> None:
    small = EntryPoint(name="small_table", value="acestep_test_small_table", group=GROUP)
    manager = build_plugin_manager(environ={}, entry_points=[*BUILTIN_ENTRY_POINTS, small])
    resolution = resolve(manager=manager, environ={"MAX_CUDA_VRAM": "80"})
    assert resolution.table == "small"
    assert resolution.decided_by("register_tier_tables") == "small_table"
    assert resolution.tier.name == "everything"
    assert resolve(manager=manager, tiers="default", environ={"MAX_CUDA_VRAM": "80"}).tier.name == "unlimited"
    assert resolve(manager=manager, environ={"MAX_CUDA_VRAM": "80", "ACESTEP_CORE_TIERS": "default"}).table == "default"
    with pytest.raises(ResolutionError, match=r"no tier table named 'nope'.*small \(from small_table\)"):
        resolve(manager=manager, tiers="nope")


def test_two_third_party_tables_and_no_choice_is_an_error_that_lists_them(make_manager) -> None:
    class Table:
        def __init__(self, name: str) -> None:
            self.table = parse_table(SMALL_TABLE.replace('name = "small"', f'name = "{name}"'))

        @hookimpl
        def register_tier_tables(self) -> TierTable:
            return self.table

    manager = make_manager(("first", Table("one")), ("second", Table("two")))
    with pytest.raises(ResolutionError, match="several third-party tier tables") as caught:
        resolve(manager=manager)
    assert "one (from first)" in str(caught.value) and "two (from second)" in str(caught.value)
    assert "--tiers NAME" in str(caught.value)
    assert resolve(manager=manager, tiers="two").table == "two"


def test_an_invalid_table_is_reported_and_the_default_used(plugin_modules: Path) -> None:
    broken = EntryPoint(name="broken_table", value="acestep_test_invalid_table", group=GROUP)
    manager = build_plugin_manager(environ={}, entry_points=[*BUILTIN_ENTRY_POINTS, broken])
    resolution = resolve(manager=manager)
    assert resolution.table == "default"
    [problem] = resolution.problems
    assert (problem.plugin, problem.kind) == ("broken_table", "invalid-table")
    assert "broken.toml" in problem.error and "no [[tiers]] rows" in problem.error


def test_disable_autoload_keeps_only_the_builtins(plugin_modules: Path) -> None:
    small = EntryPoint(name="small_table", value="acestep_test_small_table", group=GROUP)
    manager = build_plugin_manager(
        environ={"ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD": "1"}, entry_points=[*BUILTIN_ENTRY_POINTS, small]
    )
    assert manager.infos["small_table"].status == "disabled"
    assert "acestep_test_small_table" not in sys.modules
    assert {manager.infos[n].status for n in ("tiers_default", "simulated")} == {"loaded"}
    assert resolve(manager=manager).table == "default"


def test_block_names_plugins_builtins_included(make_manager) -> None:
    entry_points = [*BUILTIN_ENTRY_POINTS, EntryPoint(name="missing", value="acestep_test_no_such_module", group=GROUP)]
    manager = build_plugin_manager(
        environ={"ACESTEP_CORE_BLOCK_PLUGINS": " simulated , missing"}, entry_points=entry_points
    )
    assert manager.infos["simulated"].status == "blocked"
    assert manager.infos["missing"].status == "blocked"  # never imported, so never failed
    resolution = resolve(manager=manager, environ={"MAX_CUDA_VRAM": "8"})
    assert not resolution.reading.simulated and resolution.tier.name == "tier1"
    # the variable nothing applied is said, once (issue #18: it was ignored without a word)
    [problem] = resolution.problems
    assert (problem.setting, problem.kind) == ("MAX_CUDA_VRAM", "invalid-setting")
    assert "MAX_CUDA_VRAM=8 is not applied" in problem.error

    blocked_in_code = make_manager(
        ("always_unlimited", AlwaysUnlimited()), environ={"ACESTEP_CORE_BLOCK_PLUGINS": "always_unlimited"}
    )
    assert blocked_in_code.infos["always_unlimited"].status == "blocked"


def test_without_a_tier_plugin_the_resolution_fails_with_advice() -> None:
    manager = build_plugin_manager(
        environ={"ACESTEP_CORE_BLOCK_PLUGINS": "tiers_default"}, entry_points=BUILTIN_ENTRY_POINTS
    )
    with pytest.raises(ResolutionError, match="install acestep-core-tiers-default"):
        resolve(manager=manager)


def test_a_second_plugin_with_a_taken_name_is_reported(plugin_modules: Path) -> None:
    # a built-in's name taken by another module is refused outright (tests/test_core_boundaries.py);
    # two third-party entry points sharing a name still meet this rule
    first = EntryPoint(name="small_table", value="acestep_test_small_table", group=GROUP)
    twin = EntryPoint(name="small_table", value="acestep_test_invalid_table", group=GROUP)
    manager = build_plugin_manager(environ={}, entry_points=[*BUILTIN_ENTRY_POINTS, first, twin])
    duplicates = [info for info in manager.infos.values() if info.status == "failed"]
    assert len(duplicates) == 1 and "already taken" in (duplicates[0].error or "")


def test_table_errors_list_every_problem() -> None:
    with pytest.raises(TableError) as caught:
        parse_table(
            SMALL_TABLE.replace("min_gb = 0", "min_gb = 2").replace("max_batch_with_lm = 1", "max_batch_with_lm = 0")
        )
    text = str(caught.value)
    assert "leaving a gap from 0" in text and "batch 0 is below 1" in text


# --------------------------------------------------------------------------------------------- detection cache
class CountingDetector:
    """Reports a card and counts the calls; slow enough that racing threads would all get in."""

    def __init__(self, gib: float) -> None:
        self.calls = 0
        self.gib = gib

    @hookimpl
    def detect_memory(self) -> MemoryReading:
        self.calls += 1
        time.sleep(0.02)
        total = int(self.gib * GIB)
        return MemoryReading(device=DeviceMemory(backend="cuda", name="counted", total_bytes=total))


def test_detection_is_cached_per_process_and_redetect_reads_again(make_manager) -> None:
    counter = CountingDetector(10)
    manager = make_manager(counter)
    for _ in range(3):
        assert resolve(manager=manager).tier.name == "tier4"
    assert counter.calls == 1
    counter.gib = 20
    assert resolve(manager=manager).tier.name == "tier4"  # still the cached reading
    assert resolve(manager=manager, redetect=True).tier.name == "tier6"
    assert counter.calls == 2
    clear_detection_cache()
    resolve(manager=manager)
    assert counter.calls == 3
    resolve(manager=manager, environ={"MAX_CUDA_VRAM": "abc"})  # different options, own reading
    assert counter.calls == 4


def test_threads_asking_at_once_detect_once(make_manager) -> None:
    counter = CountingDetector(16)
    manager = make_manager(counter)
    start = threading.Barrier(16)
    tiers: list[str] = []

    def ask() -> None:
        start.wait()
        tiers.append(resolve(manager=manager).tier.name)

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tiers == ["tier6"] * 16
    assert counter.calls == 1


def test_threads_redetecting_each_read_again(make_manager) -> None:
    counter = CountingDetector(16)
    manager = make_manager(counter)
    threads = [threading.Thread(target=resolve, kwargs={"manager": manager, "redetect": True}) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.calls == 4


def test_a_new_manager_never_inherits_another_managers_reading(make_manager) -> None:
    """The cache is keyed by the manager object: a new manager at a dead one's address detects anew."""
    for round_ in range(30):
        gib = 10 if round_ % 2 else 20
        manager = make_manager(CountingDetector(gib))
        assert resolve(manager=manager).tier.name == ("tier4" if gib == 10 else "tier6")
        del manager
        gc.collect()
