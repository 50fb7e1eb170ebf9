"""The ``acestep-core`` command line.

Each command group lives in its own module with an ``add_parser(subparsers)`` function; this
module builds the parser, holds the options every resolving command shares, and maps errors to
exit codes: 0 ok, 1 failure, 2 bad usage.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from acestep_core.cli.terminal import TerminalWriter, terminal_text, terminal_width
from acestep_core.inputs import env_flag
from acestep_core.plugins import DEBUG_ENV, SettingIgnored
from acestep_core.resolve import TIERS_ENV, ResolutionError, UnknownTableError
from acestep_core.tables import TableError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as a shell reports a command stopped by Ctrl-C."""
EXIT_PIPE_CLOSED = 141
"""128 + SIGPIPE, as a shell reports a writer whose reader closed the pipe (``| head``)."""
EXIT_STATUS = """\
exit status: 0 ok, 1 failure (one message), 2 bad usage (one line naming the flag), 130 interrupted,
141 output closed early (| head). Set ACESTEP_CORE_DEBUG=1 to see a traceback for an internal error."""
EXTRAS = {
    "ml": (
        "the models' libraries",
        frozenset({"torch", "transformers", "diffusers", "optimum", "accelerate", "tokenizers", "numpy", "tqdm"}),
    ),
    "plot": ("matplotlib, to draw the plot", frozenset({"matplotlib"})),
    "ui": ("the page's libraries", frozenset({"gradio"})),
    "fleet": ("Ray", frozenset({"ray"})),
}
"""Each extra of the distribution: what it brings, in words, and its top-level modules. A command that
finds one missing says which extra installs it (exit 1: the installation lacks it, the usage is fine)."""
CPU_TORCH_HINT = "for torch's CPU-only build, first: pip install torch --index-url https://download.pytorch.org/whl/cpu"
"""PyPI's Linux torch is the CUDA build (several GB); the ``ml`` extra accepts whichever is installed first."""

DESCRIPTION = """\
Decide how ACE-Step runs on this machine: detect the device's memory, pick a tier from the tier
table, fit the request to the tier's limits and plan the optimizations — each step answered by a
plugin, and every decision explained.

examples:
  acestep-core info                                   what this machine gets, and why
  MAX_CUDA_VRAM=8 acestep-core info                   the same for a simulated 8 GB card
  acestep-core plan --duration 600 --batch 8 --lm 4B  fit a request (clamps are warned about)
  acestep-core tiers                                  the active tier table, as Markdown
  acestep-core plugins --json                         installed plugins and their status
  acestep-core models --checkpoints DIR               the checkpoints a folder holds, and what this tier allows
"""


class UsageError(Exception):
    """Bad input on the command line: exit 2."""


COMMAND_GROUP = "acestep_core.commands"
"""The entry-point group of the commands outside the deciding core (running, serving): each entry
point names a function ``add_parser(subparsers)`` that adds its command, whose module imports what the
command drives (torch, Ray, Gradio) only when it runs. acestep-core's own (``generate``, ``calibrate``,
``fleet``, ``ui``) are declared in its ``pyproject.toml``: the runtime depends on this module, never
the reverse, and the core names no module of the runtime."""

CORE_COMMAND_MODULES = {
    "info": "acestep_core.cli.resolution",
    "plan": "acestep_core.cli.resolution",
    "tiers": "acestep_core.cli.tiers",
    "plugins": "acestep_core.cli.plugins",
    "models": "acestep_core.cli.models",
}
"""Commands that must start fast and import neither torch nor NVML, and the module that defines each:
when one of them is asked for, only its module builds its parser (the others are not even imported)."""


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (the message, the flag's value escaped and cut short,
    and where the help is) instead of the whole usage block. The help's width is read once here:
    argparse's formatter would import :mod:`shutil` for it (1.5 ms of every start-up)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        formatter = kwargs.get("formatter_class", argparse.HelpFormatter)
        kwargs["formatter_class"] = functools.partial(formatter, width=terminal_width() - 2)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {terminal_text(message)} (see `{self.prog} --help`)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command`` one of :data:`CORE_COMMAND_MODULES`, only its module's commands."""
    parser = Parser(
        prog="acestep-core",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_STATUS,
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command in CORE_COMMAND_MODULES:
        modules = [importlib.import_module(CORE_COMMAND_MODULES[command])]
    else:
        modules = [importlib.import_module(name) for name in dict.fromkeys(CORE_COMMAND_MODULES.values())]
    for module in modules:
        module.add_parser(subparsers)
    if command not in CORE_COMMAND_MODULES:
        for add_parser in registered_commands():
            add_parser(subparsers)
    return parser


def _command_in(argv: Sequence[str]) -> str | None:
    return next((arg for arg in argv if not arg.startswith("-")), None)


def registered_commands() -> list[Callable[[Any], None]]:
    """The ``add_parser`` of every command registered under :data:`COMMAND_GROUP`, by name (the
    entry-point scan is cached: :mod:`acestep_core.discovery`); one whose module is not installed is
    left out."""
    from acestep_core.discovery import discover

    adders = []
    for entry_point in sorted(discover(COMMAND_GROUP), key=lambda entry_point: entry_point.name):
        try:
            adders.append(entry_point.load())
        except ModuleNotFoundError as error:
            if error.name != entry_point.module:
                raise
    return adders


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for tools and UIs)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit status: 0 ok, 1 failure (one message), 2 bad usage (one line), 130
    interrupted (Ctrl-C), 141 output closed early (``| head``: quiet). No traceback reaches the user
    unless ``ACESTEP_CORE_DEBUG=1`` asks for one."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args: argparse.Namespace | None = None
    stdout = sys.stdout
    try:
        parser = build_parser(_command_in(argv))
        args = parser.parse_args(argv)
        sys.stdout = TerminalWriter(stdout, cut_lines=not getattr(args, "json", False))
        handler: Callable[[argparse.Namespace], int] = args.handler
        try:
            code = handler(args)
            sys.stdout.flush()
            return code
        except UsageError as error:
            parser.exit(EXIT_USAGE, f"acestep-core {args.command}: error: {terminal_text(str(error))}\n")
    except UnknownTableError as error:
        flag = _table_flag(args, error.wanted)
        if flag is not None:  # typed by the user: bad usage, naming the flag
            where = f"acestep-core {args.command}" if args else "acestep-core"
            print(
                f"{where}: error: {flag} {terminal_text(repr(error.wanted))}: {terminal_text(str(error))}",
                file=sys.stderr,
            )
            return EXIT_USAGE
        from_env = os.environ.get(TIERS_ENV) == error.wanted
        _fail(args, f"{TIERS_ENV}={error.wanted!r}: {error}" if from_env else str(error))
    except (ResolutionError, TableError, SettingIgnored) as error:
        _fail(args, str(error))
    except ModuleNotFoundError as error:
        message = missing_extra(args.command if args else "this command", error.name or "")
        if message is None:
            return _unexpected(args, error)
        _fail(args, message)
    except KeyboardInterrupt:
        _fail(args, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE_CLOSED
    except OSError as error:
        where = f" {error.filename}" if error.filename else ""
        _fail(args, f"cannot use{where}: {error.strerror or error}")
    except Exception as error:  # noqa: BLE001 - no traceback for users (RecursionError, MemoryError, bugs)
        return _unexpected(args, error)
    finally:
        if isinstance(sys.stdout, TerminalWriter):
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                _silence_stdout()
            sys.stdout = stdout
    return EXIT_FAILURE


TABLE_FLAGS = {"tiers": "--tiers", "compare_with": "--compare-with", "a": "A", "b": "B"}
"""The options and arguments that name a tier table (the argparse ``dest``, and the flag or the metavar
``tiers compare`` shows in its usage)."""


def _table_flag(args: argparse.Namespace | None, wanted: str) -> str | None:
    """The flag through which the user typed the unknown table ``wanted``, if one did."""
    for dest, flag in TABLE_FLAGS.items():
        if getattr(args, dest, None) == wanted:
            return flag
    return None


def missing_extra(command: str, module: str) -> str | None:
    """The one line for ``command`` failing on a missing ``module`` of an extra, or None for a module
    no extra provides (a bug, reported as one)."""
    top = module.partition(".")[0]
    for extra, (brings, modules) in EXTRAS.items():
        if top in modules:
            hint = f"pip install 'acestep-core[{extra}]'"
            if extra == "ml":
                hint += f" ({CPU_TORCH_HINT})"
            return f"`{command}` needs {brings} ({module} is missing): {hint}"
    return None


def _unexpected(args: argparse.Namespace | None, error: BaseException) -> int:
    if env_flag(os.environ.get(DEBUG_ENV)):
        raise error
    _fail(args, f"internal error: {type(error).__name__}: {error} (a bug: {DEBUG_ENV}=1 shows the traceback)")
    return EXIT_FAILURE


def _silence_stdout() -> None:
    """The reader went away (``| head``): send what is left to /dev/null so that Python's own flush at
    exit does not complain about the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())  # type: ignore[union-attr]
    except (OSError, ValueError, AttributeError):
        pass


def _fail(args: argparse.Namespace | None, message: str) -> None:
    try:
        if getattr(args, "json", False):
            print(json.dumps({"error": message}, ensure_ascii=False))
        else:
            print(f"acestep-core: error: {terminal_text(message)}", file=sys.stderr)
    except BrokenPipeError:
        _silence_stdout()


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def environ() -> dict[str, str]:
    return dict(os.environ)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
