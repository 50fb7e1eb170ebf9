"""``acestep-core tiers``: the active tier table, rendered from its data."""

from __future__ import annotations

import argparse
import os

from acestep_core.cli import add_json_flag, print_json
from acestep_core.plugins import get_plugin_manager
from acestep_core.resolve import TIERS_ENV, available_tables, choose_table
from acestep_core.tables import render_markdown
from acestep_core.types import to_jsonable

RULE = f"""\
which table is active: --tiers NAME (or {TIERS_ENV}=NAME) always wins; without a choice, the one
table installed by a third-party plugin replaces the built-in 'default'; two or more third-party
tables and no choice is an error that lists them."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tiers",
        help="the active tier table as Markdown (the document is generated from the data)",
        description="Print the active tier table in the upstream document's Markdown form, or as data with --json.",
        epilog=RULE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_flag(parser)
    parser.add_argument("--tiers", metavar="NAME", help="the table to show (default: the active one)")
    parser.set_defaults(handler=run_show)
    parser.set_defaults(tiers_parser=parser)


def run_show(args: argparse.Namespace) -> int:
    manager = get_plugin_manager()
    tables, problems = available_tables(manager)
    choice = choose_table(tables, args.tiers or os.environ.get(TIERS_ENV) or None)
    if args.json:
        print_json({"table": to_jsonable(choice.table), "plugin": choice.plugin, "reason": choice.reason, "problems": [p.message() for p in problems]})
        return 0
    print(f"<!-- table {choice.table.name!r} from {choice.plugin} ({choice.reason}) -->")
    print(render_markdown(choice.table), end="")
    for problem in problems:
        print(f"! {problem.message()}")
    return 0
