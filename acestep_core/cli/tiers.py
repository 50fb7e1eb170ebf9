"""``acestep-core tiers``: show, validate, compare and start tier tables.

``tiers`` alone (or ``tiers show``) prints the active table rendered from its data.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from acestep_core.cli import UsageError, add_json_flag, print_json
from acestep_core.compare import PLOT_FORMATS
from acestep_core.inputs import clip, output_dir_problem, output_file_problem
from acestep_core.plugins import get_plugin_manager
from acestep_core.resolve import TIERS_ENV, TableChoice, available_tables, choose_table
from acestep_core.tables import TableError, TableProblem, load_table, render_markdown
from acestep_core.types import TierTable, to_jsonable

EXIT_INVALID = 1

RULE = f"""\
which table is active:
  1. --tiers NAME (or {TIERS_ENV}=NAME, or resolve(tiers=NAME)) always wins; NAME is a table's
     name, the plugin that registered it, or a table file (*.toml)
  2. without a choice, the one table installed by a third-party plugin replaces 'default'
  3. two or more third-party tables and no choice is an error that lists them
  4. otherwise the built-in 'default'
every plugin's table is validated when loaded; an invalid one is reported (`acestep-core plugins`)
and skipped."""

EXAMPLES = """\
examples:
  acestep-core tiers                              the active table, as Markdown
  acestep-core tiers show --tiers 8tier --json    another installed table, as data
  acestep-core tiers validate my_tiers.toml       every problem, with tier, field and a fix
  acestep-core tiers compare default 8tier        where two tables decide differently
  acestep-core tiers compare default my.toml --plot diff.png
  acestep-core tiers new my-card --dir ~/src      a plugin package started from the active table
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "tiers",
        help="show, validate, compare or start tier tables (default: show the active one)",
        description="Tier tables are data: show the active one, validate a file, compare two, or scaffold a plugin "
        "package that ships one.",
        epilog=EXAMPLES + "\n" + RULE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_show_options(parser)
    parser.set_defaults(handler=run_show, tiers_parser=parser)
    commands = parser.add_subparsers(dest="tiers_command", metavar="SUBCOMMAND")

    show = commands.add_parser(
        "show",
        help="the active table as Markdown (or --json)",
        epilog=RULE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_show_options(show)
    show.set_defaults(handler=run_show)

    validate = commands.add_parser(
        "validate",
        help="check a table file: schema and sanity, every problem with its tier, field and fix",
        description=(
            "Check tier table files: the schema (known keys, types), and the rules a table must keep: tiers cover "
            "0 GB to unbounded with no gaps or overlaps, limits never fall as memory grows, each LM's memory "
            "allocation fits inside its tier, names unique, durations 10-600 s, batches 1 or more."
        ),
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="TOML tier table file(s)")
    add_json_flag(validate)
    validate.set_defaults(handler=run_validate)

    compare = commands.add_parser(
        "compare",
        help="where two tables decide differently, swept over 0-80 GB and real card sizes",
        description="Sweep memory sizes 0-80 GB (every 0.25 GB, plus 4, 6, 8, 10, 11, 12, "
        "16, 20, 24, 32, 40, 48, 80 GB) "
        "through tables A and B and show where the tier, durations, batches, LMs or optimizations differ. "
        "Sizes are placed as simulated sizes (no real-card tolerance).",
    )
    compare.add_argument("a", metavar="A", help="a table name (installed), a plugin name, or a table file")
    compare.add_argument("b", metavar="B", help="the same, for the other table")
    compare.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw max duration and max batch against memory for both (matplotlib; "
        f"{', '.join(PLOT_FORMATS)}); an existing file is not replaced without --overwrite",
    )
    compare.add_argument(
        "--overwrite", action="store_true", help="replace an existing --plot file (a link is replaced, not its target)"
    )
    add_json_flag(compare)
    compare.set_defaults(handler=run_compare)

    new = commands.add_parser(
        "new",
        help="scaffold a tier plugin package (pyproject, table as data, a test, a README)",
        description="Write a ready-to-install plugin package whose table starts as a copy of the active table (or "
        "--tiers NAME).",
    )
    new.add_argument("name", metavar="NAME", help="the new table's name: lowercase letters, digits, '-', '_'")
    new.add_argument("--dir", default=".", metavar="DIR", help="where to create the package folder (default: here)")
    new.add_argument("--tiers", metavar="NAME", help="start from this table instead of the active one")
    add_json_flag(new)
    new.set_defaults(handler=run_new)


def _add_show_options(parser: argparse.ArgumentParser) -> None:
    add_json_flag(parser)
    parser.add_argument("--tiers", metavar="NAME", help="the table to show (default: the active one)")


def active_choice(wanted: str | None) -> tuple[TableChoice, list[str]]:
    """The table the rule picks (or ``wanted``), and the load problems of tier plugins, in words."""
    tables, problems = available_tables(get_plugin_manager())
    choice = choose_table(tables, wanted or os.environ.get(TIERS_ENV) or None)
    return choice, [p.message() for p in problems]


def run_show(args: argparse.Namespace) -> int:
    choice, problems = active_choice(args.tiers)
    if args.json:
        print_json(
            {"table": to_jsonable(choice.table), "plugin": choice.plugin, "reason": choice.reason, "problems": problems}
        )
        return 0
    print(f"<!-- table {choice.table.name!r} from {choice.plugin} ({choice.reason}) -->")
    print(render_markdown(choice.table), end="")
    for problem in problems:
        print(f"! {problem}")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    reports = []
    for file in args.files:
        try:
            table = load_table(file)
        except TableError as error:
            reports.append({"file": file, "valid": False, "problems": [dataclasses.asdict(p) for p in error.problems]})
        else:
            reports.append(
                {"file": file, "valid": True, "table": table.name, "tiers": len(table.tiers), "problems": []}
            )
    if args.json:
        print_json(reports if len(reports) > 1 else reports[0])
    else:
        for report in reports:
            if report["valid"]:
                print(f"{report['file']}: valid — table {report['table']!r}, {report['tiers']} tiers")
                continue
            print(f"{report['file']}: {len(report['problems'])} problem(s)")
            for problem in report["problems"]:
                print(f"  - {TableProblem(**problem)}")
    return 0 if all(r["valid"] for r in reports) else EXIT_INVALID


def table_named(reference: str) -> TierTable:
    """An installed table (by table or plugin name) or a table file."""
    if Path(reference).is_file():
        return load_table(reference)
    tables, _ = available_tables(get_plugin_manager())
    return choose_table(tables, reference).table


def run_compare(args: argparse.Namespace) -> int:
    from acestep_core.compare import compare_tables, plot_comparison, render_comparison

    if args.plot is not None:
        problem = output_file_problem(args.plot, overwrite=args.overwrite, suffixes=PLOT_FORMATS)
        if problem:
            raise UsageError(f"--plot {clip(args.plot)!r}: {problem}")
    comparison = compare_tables(table_named(args.a), table_named(args.b))
    try:
        plot = str(plot_comparison(comparison, args.plot, overwrite=args.overwrite)) if args.plot else None
    except FileExistsError:
        raise UsageError(f"--plot {clip(args.plot)!r}: appeared while comparing; --overwrite to replace it") from None
    if args.json:
        print_json({**comparison.to_dict(), "plot": plot})
    else:
        print(render_comparison(comparison))
        if plot:
            print(f"\nplot written to {plot}")
    return 0


def run_new(args: argparse.Namespace) -> int:
    from acestep_core.scaffold import names_for, scaffold_package

    try:
        names_for(args.name)
    except ValueError as error:
        raise UsageError(str(error)) from None
    problem = output_dir_problem(args.dir)
    if problem:
        raise UsageError(f"--dir {clip(args.dir)!r}: {problem}")
    choice, _ = active_choice(args.tiers)
    try:
        root = scaffold_package(args.name, choice.table, args.dir)
    except FileExistsError as error:
        raise UsageError(str(error)) from None
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    if args.json:
        print_json({"package": str(root), "from_table": choice.table.name, "files": files})
    else:
        print(f"created {root} (table {args.name!r}, started from {choice.table.name!r})")
        for file in files:
            print(f"  {file}")
        print(f"next: pip install -e {root} && python -m pytest {root / 'tests'} && acestep-core plugins")
    return 0
