"""Which tier table is active: every case of the rule, and what `plugins` and `info` say about it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import MakeManager

from acestep_core import ResolutionError, TierTable, hookimpl, resolve
from acestep_core.cli import main
from acestep_core.resolve import available_tables, choose_table
from acestep_core.tables import load_table, parse_table

EIGHT_TIER = Path(__file__).parents[1] / "examples" / "tiers_8tier" / "acestep_core_tiers_8tier" / "tiers.toml"


def table_plugin(name: str) -> object:
    table = dataclasses.replace(load_table(EIGHT_TIER), name=name)

    class Plugin:
        @hookimpl
        def register_tier_tables(self) -> TierTable:
            return table

    return Plugin()


class BrokenTablePlugin:
    @hookimpl
    def register_tier_tables(self) -> TierTable:
        return parse_table("[table]\nname = 'broken'\n[[tiers]]\nname = 'x'\nmin_gb = 3\n")


def chosen(manager: object, wanted: str | None = None) -> tuple[str, str, str]:
    tables, _ = available_tables(manager)
    choice = choose_table(tables, wanted)
    return choice.table.name, choice.plugin, choice.reason


def test_default_alone_is_active(make_manager: MakeManager) -> None:
    name, plugin, reason = chosen(make_manager())
    assert (name, plugin) == ("default", "tiers_default")
    assert "built-in default" in reason


def test_one_third_party_table_replaces_the_default(make_manager: MakeManager) -> None:
    name, plugin, reason = chosen(make_manager(("tiers_8tier", table_plugin("8tier"))))
    assert (name, plugin) == ("8tier", "tiers_8tier")
    assert "replaces 'default'" in reason


def test_explicit_choice_wins_over_a_third_party_table(make_manager: MakeManager) -> None:
    manager = make_manager(("tiers_8tier", table_plugin("8tier")))
    assert chosen(manager, "default")[:2] == ("default", "tiers_default")
    assert chosen(manager, "tiers_8tier")[:2] == ("8tier", "tiers_8tier")  # by plugin name


def test_two_third_party_tables_without_a_choice_is_an_error_listing_both(make_manager: MakeManager) -> None:
    manager = make_manager(("one", table_plugin("alpha")), ("two", table_plugin("beta")))
    with pytest.raises(ResolutionError) as caught:
        chosen(manager)
    assert "alpha (from one)" in str(caught.value) and "beta (from two)" in str(caught.value)
    assert chosen(manager, "beta")[:2] == ("beta", "two")


def test_the_environment_variable_and_the_api_choose(make_manager: MakeManager) -> None:
    manager = make_manager(("one", table_plugin("alpha")), ("two", table_plugin("beta")))
    assert resolve(manager=manager, environ={"ACESTEP_CORE_TIERS": "alpha"}).table == "alpha"
    assert resolve(manager=manager, tiers="beta", environ={"ACESTEP_CORE_TIERS": "alpha"}).table == "beta"


def test_a_table_file_can_be_chosen(make_manager: MakeManager) -> None:
    name, plugin, reason = chosen(make_manager(), str(EIGHT_TIER))
    assert (name, plugin) == ("8tier", "file") and str(EIGHT_TIER) in reason


def test_two_tables_with_one_name_is_an_error(make_manager: MakeManager) -> None:
    manager = make_manager(("one", table_plugin("same")), ("two", table_plugin("same")))
    with pytest.raises(ResolutionError, match="2 tier tables are named 'same'"):
        chosen(manager, "same")


def test_unknown_name_lists_installed_tables(make_manager: MakeManager) -> None:
    with pytest.raises(ResolutionError, match=r"installed tables: default \(from tiers_default\)"):
        chosen(make_manager(), "nosuch")


def test_an_invalid_table_is_reported_and_skipped(make_manager: MakeManager) -> None:
    manager = make_manager(("broken", BrokenTablePlugin()))
    resolution = resolve(manager=manager, environ={})
    assert resolution.table == "default"
    kinds = [(p.plugin, p.kind) for p in resolution.problems]
    assert ("broken", "invalid-table") in kinds
    assert any("registered an invalid tier table" in w and "x.lm_models: missing" in w for w in resolution.warnings)


def test_info_and_plugins_show_the_active_table_and_why(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manager = make_manager(("tiers_8tier", table_plugin("8tier")), ("broken", BrokenTablePlugin()))
    monkeypatch.setattr("acestep_core.plugins._default", manager)
    assert main(["info", "--vram", "18"]) == 0
    out = capsys.readouterr().out
    assert "register_tier_tables" in out and "tiers_8tier" in out and "replaces 'default'" in out
    assert "Tier 6a" in out
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "tier table '8tier': ACTIVE: the only third-party table" in out
    assert "tier table 'default': installed, not active" in out
    assert "tier table skipped: plugin 'broken' registered an invalid tier table" in out
    assert main(["plugins", "--json"]) == 0
    listing = {entry["name"]: entry["tier_tables"] for entry in json.loads(capsys.readouterr().out)}
    assert listing["tiers_8tier"][0]["active"] is True
    assert listing["tiers_default"][0]["active"] is False


def test_plugins_reports_the_rule_error_without_failing(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        "acestep_core.plugins._default", make_manager(("one", table_plugin("alpha")), ("two", table_plugin("beta")))
    )
    assert main(["plugins"]) == 0
    assert "several third-party tier tables are installed" in capsys.readouterr().out
