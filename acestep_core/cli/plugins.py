"""``acestep-core plugins``: every plugin found, its hooks and status."""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any

from acestep_core.cli import add_json_flag, print_json
from acestep_core.plugins import BLOCK_ENV, DISABLE_AUTOLOAD_ENV, PluginManager, get_plugin_manager
from acestep_core.resolve import TIERS_ENV, ResolutionError, TableChoice, available_tables, choose_table


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="installed plugins: name, distribution, version, hooks, status",
        description="List every plugin found in the 'acestep_core' entry-point group, with the distribution that "
        "provided it: loaded, blocked, disabled, refused or failed (with its error).",
        epilog=(
            "examples:\n"
            "  acestep-core plugins                                     every plugin and its status\n"
            "  acestep-core plugins --json                              the same, for tools\n"
            f"  {DISABLE_AUTOLOAD_ENV}=1 acestep-core plugins   built-ins only\n"
            f"  {BLOCK_ENV}=cuda acestep-core info              run without the cuda plugin\n"
            "\n"
            f"{DISABLE_AUTOLOAD_ENV}=1 loads only the built-in plugins (cuda, simulated, tiers_default);\n"
            f"{BLOCK_ENV}=a,b never loads the plugins named (built-ins too). A plugin that fails\n"
            "to load, raises in a hook, returns the wrong type or an answer that breaks its hook's\n"
            "contract is listed here and skipped. A built-in is recognised by its distribution and\n"
            "module; another distribution using a built-in's name is refused.\n"
            "ACESTEP_CORE_TRACE_PLUGINS=1 prints every hook call, its plugin and result to stderr."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run_plugins)


def run_plugins(args: argparse.Namespace) -> int:
    manager = get_plugin_manager()
    infos = list(manager.infos.values())
    tables = tier_tables(manager)
    if args.json:
        print_json([{**dataclasses.asdict(info), "tier_tables": tables.get(info.name, [])} for info in infos])
        return 0
    for info in infos:
        origin = f"{info.distribution} {info.version}" if info.distribution else "registered in code"
        if info.module:
            origin += f", module {info.module}"
        kind = "built-in" if info.builtin else "third-party"
        print(f"{info.name:<16} {info.status:<9} {origin} ({kind})")
        if info.hooks:
            print(f"{'':<16} hooks: {', '.join(info.hooks)}")
        if info.error:
            print(f"{'':<16} {info.error}")
        for table in tables.get(info.name, []):
            if table.get("problem"):
                print(f"{'':<16} tier table skipped: {table['problem']}")
                continue
            state = f"ACTIVE: {table['reason']}" if table["active"] else "installed, not active"
            print(f"{'':<16} tier table {table['name']!r}: {state}")
    if not infos:
        print("no plugins found: install acestep-core-tiers-default (and -cuda, -simulated)")
    if "" in tables:
        print(f"tier table: {tables[''][0]['reason']}")
    return 0


def tier_tables(manager: PluginManager) -> dict[str, list[dict[str, Any]]]:
    """Plugin name → the tables it registered, each with whether it is the active one and why.
    Key ``""`` holds the rule's error when no table can be chosen (two third-party tables, none)."""
    tables, problems = available_tables(manager)
    try:
        choice: TableChoice | None = choose_table(tables, os.environ.get(TIERS_ENV) or None)
        error = None
    except ResolutionError as problem:
        choice, error = None, str(problem)
    found: dict[str, list[dict[str, Any]]] = {}
    for plugin, table in tables:
        active = choice is not None and choice.table is table
        found.setdefault(plugin, []).append(
            {"name": table.name, "active": active, "reason": choice.reason if active and choice else None}
        )
    for load_problem in problems:
        found.setdefault(load_problem.plugin, []).append(
            {"name": None, "active": False, "reason": None, "problem": load_problem.message()}
        )
    if error:
        found[""] = [{"name": None, "active": False, "reason": error}]
    return found
