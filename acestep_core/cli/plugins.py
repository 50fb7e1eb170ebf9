"""``acestep-core plugins``: every plugin found, its hooks and status."""

from __future__ import annotations

import argparse
import dataclasses

from acestep_core.cli import add_json_flag, print_json
from acestep_core.plugins import BLOCK_ENV, DISABLE_AUTOLOAD_ENV, get_plugin_manager


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plugins",
        help="installed plugins: name, distribution, version, hooks, status",
        description="List every plugin found in the 'acestep_core' entry-point group: loaded, blocked, disabled or failed (with its error).",
        epilog=(
            "examples:\n"
            "  acestep-core plugins                                     every plugin and its status\n"
            "  acestep-core plugins --json                              the same, for tools\n"
            f"  {DISABLE_AUTOLOAD_ENV}=1 acestep-core plugins   built-ins only\n"
            f"  {BLOCK_ENV}=cuda acestep-core info              run without the cuda plugin\n"
            "\n"
            f"{DISABLE_AUTOLOAD_ENV}=1 loads only the built-in plugins (cuda, simulated, tiers_default);\n"
            f"{BLOCK_ENV}=a,b never loads the plugins named (built-ins too). A plugin that fails\n"
            "to load, raises in a hook or returns the wrong type is listed here and skipped."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_flag(parser)
    parser.set_defaults(handler=run_plugins)


def run_plugins(args: argparse.Namespace) -> int:
    infos = list(get_plugin_manager().infos.values())
    if args.json:
        print_json([dataclasses.asdict(info) for info in infos])
        return 0
    for info in infos:
        origin = f"{info.distribution} {info.version}" if info.distribution else "registered in code"
        kind = "built-in" if info.builtin else "third-party"
        print(f"{info.name:<16} {info.status:<9} {origin} ({kind})")
        if info.hooks:
            print(f"{'':<16} hooks: {', '.join(info.hooks)}")
        if info.error:
            print(f"{'':<16} {info.error}")
    if not infos:
        print("no plugins found: install acestep-core-tiers-default (and -cuda, -simulated)")
    return 0
