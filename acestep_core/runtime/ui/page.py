"""The page's decision without Gradio: what the controls hold → ``acestep-core plan``'s arguments → one resolution.

The page never decides anything itself. What its controls hold becomes the arguments of ``acestep-core
plan`` (:func:`~acestep_core.runtime.ui.fields.argv_of`), exactly as held: nothing is clamped or rewritten
on the way, and no control is ever written back. Each field is checked first (the CLI's own check of its
option, then the page's bounds); a field that cannot be used gets its message beside it and nothing is
resolved. Otherwise the arguments go through the CLI's parser (:func:`parse_plan_args`) and resolution
(:func:`resolve_from_args`), so the page and ``acestep-core plan --json`` with the same arguments print
the same decision, and an error the CLI finds is shown beside the field whose flag it names.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from acestep_core.cli import UsageError
from acestep_core.cli.resolution import parse_plan_args, resolve_from_args
from acestep_core.plugins import SettingIgnored, get_plugin_manager
from acestep_core.resolve import ResolutionError, available_tables
from acestep_core.runtime.ui.fields import SET_FLAG, Field, argv_of, page_fields, problems_of
from acestep_core.tables import TableError
from acestep_core.types import Resolution

FIELDS: tuple[Field, ...] = page_fields()
"""Every control of the page that shapes the decision."""


@dataclass(frozen=True)
class Decision:
    """One decision of the page: the arguments it was made for, and the resolution, or why there is none."""

    argv: tuple[str, ...]
    resolution: Resolution | None = None
    problems: Mapping[str, str] = field(default_factory=dict)
    """Field id → why its value cannot be used (shown beside the field)."""
    message: str = ""
    """A problem that belongs to no one field (shown beside the decision)."""
    given: frozenset[str] = frozenset()
    """The ids of the fields that held a value."""


def decide(values: Mapping[str, Any], fields: Sequence[Field] = FIELDS) -> Decision:
    """The decision ``acestep-core plan`` makes for what the controls hold (``values`` by field id)."""
    argv = tuple(argv_of(fields, values))
    given = frozenset(f.id for f in fields if f.given(values.get(f.id, f.default)))
    problems = problems_of(fields, values)
    if problems:
        return Decision(argv, problems=problems, given=given)
    try:
        return Decision(argv, resolve_from_args(parse_plan_args(argv)), given=given)
    except UsageError as error:
        return Decision(argv, **_placed(str(error), fields, values))
    except TableError as error:
        lines = "; ".join(str(problem) for problem in error.problems)
        return Decision(argv, **_placed(f"{error.source}: {lines}", fields, values, owner="tiers"))
    except (ResolutionError, SettingIgnored) as error:
        return Decision(argv, **_placed(str(error), fields, values, owner="tiers"))


def _placed(message: str, fields: Sequence[Field], values: Mapping[str, Any], owner: str = "") -> dict[str, Any]:
    """A message from the CLI placed beside the field it is about, in words without the flag's prefix."""
    named = [f for f in fields if f.option is not None and re.search(rf"(?<![\w-]){re.escape(f.flag)}\b", message)]
    if len(named) > 1:  # a rule between fields: said beside each, the flags named as the page names them
        words = message
        for f in named:
            words = re.sub(rf"(?<![\w-]){re.escape(f.flag)}\b", f"“{f.label}”", words)
        return {"problems": {f.id: words for f in named}}
    if named:
        return {"problems": {named[0].id: strip_flag(message, named[0].flag)}}
    plan_field = _plan_field_named(message, fields)
    if plan_field is not None:
        text = strip_flag(message, SET_FLAG)
        return {"problems": {plan_field.id: text.split(": ", 1)[-1] if ": " in text else text}}
    owner_field = next((f for f in fields if f.dest == owner and f.given(values.get(f.id, f.default))), None)
    if owner_field is not None:
        return {"problems": {owner_field.id: message}}
    return {"message": message}


def _plan_field_named(message: str, fields: Sequence[Field]) -> Field | None:
    if not message.startswith(SET_FLAG):
        return None
    return next((f for f in fields if f.plan_key and message.startswith(f"{SET_FLAG} {f.plan_key}=")), None)


def strip_flag(message: str, flag: str) -> str:
    """``message`` without the CLI's prefix naming ``flag`` (``argument --vram: ``, ``--replay x: ``, ``--batch ``)."""
    for pattern in (rf"^argument {re.escape(flag)}: ", rf"^{re.escape(flag)} [^:]*?: ", rf"^{re.escape(flag)}:? "):
        stripped, count = re.subn(pattern, "", message, count=1)
        if count:
            return stripped
    return message


def installed_tables() -> list[str]:
    """Every installed tier table's name (valid ones; invalid ones are reported by ``plugins``)."""
    tables, _ = available_tables(get_plugin_manager())
    return list(dict.fromkeys(table.name for _, table in tables))


def validation_lines(name: str, error: TableError) -> list[str]:
    """A failed table as ``acestep-core tiers validate`` prints it."""
    return [f"{name}: {len(error.problems)} problem(s)"] + [f"  - {problem}" for problem in error.problems]
