"""The page's fields, derived from the public description of ``acestep-core plan``'s options and from the
plan-key schema: one field per option that changes the decision, one per plan key a user may set.

No Gradio here. A field turns what its control holds into the command-line words it stands for
(:meth:`Field.argv`) and says, in words and beside the control, why a value cannot be used
(:meth:`Field.problem`): first the CLI's own check of that option (the same argparse type, the same
message without the ``argument --flag:`` prefix), then the page's bounds, so nothing unbounded (a huge
integer, deep nesting, a non-finite number, a very long text) ever reaches the decision. A new option in
:data:`acestep_core.cli.options.PLAN_OPTIONS` or a new key in :data:`acestep_core.vocabulary.PLAN_KEYS`
becomes a field here with no change to this module.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from acestep_core.cli.options import PLAN_OPTIONS, Option, OptionValueError
from acestep_core.inputs import MAX_NESTING, clip
from acestep_core.record import Record
from acestep_core.vocabulary import COMPONENTS, PLAN_KEYS, PlanKey

Widget = Literal["text", "choice", "switch", "on-off", "subset"]
"""How a field is shown: a one-line text box, one of a few values, a checkbox, "not given / on / off",
or a subset of a few values (with a box that says whether the option is given at all)."""

SET_FLAG = "--set"
COMPUTED_PREFIXES = ("memory.", "ladder.")
"""Plan keys the planner computes (predictions, the ladder): shown with the plan, not offered as controls."""
NOT_GIVEN = ""
"""The value of a choice that leaves the option out: the tier, the plan or the LM decides."""
MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a browser holds exactly: no number on the page may be larger."""
MAX_TEXT = 4096
"""The longest text a field takes (a path, a device UUID, a JSON list)."""
PANELS: tuple[str, ...] = ("pipeline", *COMPONENTS)
"""How plan keys are grouped: by the component they are about, else the whole pipeline."""


class Field(Record):
    """One control of the page and the command-line words it stands for."""

    id: str
    """The control's element id (``duration``, ``plan-offload-dit``); its note is ``<id>-note``."""
    label: str
    widget: Widget
    help: str
    panel: str
    """Options: their group (``request``, ``hardware``, ``overrides``); plan keys: one of :data:`PANELS`."""
    choices: tuple[tuple[str, str], ...] = ()
    """``(label, value)`` of each choice; the value :data:`NOT_GIVEN` leaves the option out."""
    default: Any = None
    """What the control holds before it is touched (the option not given)."""
    placeholder: str = ""
    option: Option | None = None
    plan_key: str | None = None
    spec: PlanKey | None = None
    """A plan key's schema entry: its type, range and description."""

    @property
    def flag(self) -> str:
        return self.option.flag if self.option is not None else SET_FLAG

    @property
    def dest(self) -> str:
        """The parsed argument's name for an option, the plan key for a plan key."""
        return self.option.dest if self.option is not None else str(self.plan_key)

    def given(self, raw: Any) -> bool:
        """Whether the control holds anything that reaches the command line."""
        if self.widget == "text":
            return raw is not None and str(raw).strip() != ""
        if self.widget == "switch":
            return bool(raw)
        if self.widget == "subset":
            return raw is not None
        return raw not in (None, NOT_GIVEN) and raw != self.default

    def argv(self, raw: Any) -> list[str]:
        """The command-line words for what the control holds (none when it holds nothing)."""
        if not self.given(raw):
            return []
        if self.plan_key is not None:
            return [SET_FLAG, f"{self.plan_key}={_plan_text(self, raw)}"]
        option = self.option
        assert option is not None
        if self.widget == "switch":
            return option.argv(True)
        if self.widget == "on-off":
            return option.argv(raw == "on")
        if self.widget == "subset":
            return option.argv(option.separator.join(v for v in option.accepted if v in raw))
        return option.argv(str(raw).strip())

    def problem(self, raw: Any) -> str | None:
        """Why what the control holds cannot be used, in words for the note beside it; None when it can."""
        if not self.given(raw):
            return None
        if self.widget == "choice" and raw not in {value for _, value in self.choices}:
            return f"{clip(str(raw))!r} is not one of {', '.join(value for _, value in self.choices if value)}"
        if self.widget in ("switch", "on-off", "subset"):
            return _subset_problem(self, raw) if self.widget == "subset" else None
        text = str(raw).strip()
        if len(text) > MAX_TEXT:
            return f"{len(text):,} characters: give at most {MAX_TEXT:,}"
        if self.spec is not None:
            return _plan_value_problem(self.spec, text)
        assert self.option is not None
        try:
            value = self.option.parse(text)
        except OptionValueError as error:
            return str(error)
        return _size_problem(value)


def _subset_problem(field: Field, raw: Any) -> str | None:
    unknown = [str(v) for v in raw if field.option is None or v not in field.option.accepted]
    return f"not offered: {', '.join(unknown)}" if unknown else None


def _size_problem(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        return f"{clip(str(value), 30)} is too large: give at most {MAX_SAFE_INTEGER:,}"
    return None


def _plan_text(field: Field, raw: Any) -> str:
    if field.widget == "on-off":
        return "true" if raw == "on" else "false"
    text = str(raw).strip()
    if field.widget == "choice":  # a choice that happens to read as JSON is sent as a JSON string
        try:
            json.loads(text)
        except ValueError:
            return text
        return json.dumps(text)
    return text


def _plan_value_problem(key: PlanKey, text: str) -> str | None:
    try:
        value = bounded_json(text.strip())
    except ValueError as error:
        return str(error)
    return _size_problem(value) or key.check(value)


def bounded_json(text: str, *, depth: int = MAX_NESTING) -> Any:
    """``text`` read as ``--set`` reads a value (JSON, else the text itself), refusing before any parser
    recurses what nests deeper than ``depth`` and any non-finite number.

    :raises ValueError: in words for the note beside the field.
    """
    deepest = json_depth(text)
    if deepest > depth:
        raise ValueError(f"nested {deepest} levels deep: a plan value nests at most {depth}")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError:
        return text
    if _non_finite(value):
        raise ValueError(f"{clip(text)!r} holds a number too large to be finite")
    return value


def json_depth(text: str) -> int:
    """How deeply ``[`` and ``{`` nest in ``text`` outside JSON strings (a scan, no recursion)."""
    deepest = depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a finite number")


def _non_finite(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


# --------------------------------------------------------------------------------------------- the fields
def option_fields(options: Iterable[Option] = PLAN_OPTIONS) -> tuple[Field, ...]:
    """A field for each option that changes the decision and is not a shorthand of plan keys (those
    are offered one key at a time) nor ``--set`` itself."""
    return tuple(_option_field(o) for o in options if o.decides and not o.sets_plan_keys and o.kind != "settings")


def _option_field(option: Option) -> Field:
    common: dict[str, Any] = {
        "id": option.flag.removeprefix("--"),
        "label": option.flag.removeprefix("--").replace("-", " "),
        "help": option.help,
        "panel": option.group,
        "option": option,
    }
    if option.kind == "switch":
        return Field(widget="switch", default=False, **common)
    if option.kind == "on-off":
        return Field(widget="on-off", choices=ON_OFF, default=NOT_GIVEN, **common)
    if option.kind == "choice":
        choices = ((f"not given ({_default_words(option)})", NOT_GIVEN), *((c, c) for c in option.choices))
        return Field(widget="choice", choices=choices, default=NOT_GIVEN, **common)
    if option.accepted and option.separator:
        return Field(widget="subset", choices=tuple((v, v) for v in option.accepted), default=None, **common)
    if option.accepted:
        default = option.default if option.default in option.accepted else NOT_GIVEN
        choices = tuple((v, v) for v in option.accepted)
        if default == NOT_GIVEN:
            choices = ((f"not given ({_default_words(option)})", NOT_GIVEN), *choices)
        return Field(widget="choice", choices=choices, default=default, **common)
    return Field(widget="text", default="", placeholder=_placeholder(option), **common)


ON_OFF: tuple[tuple[str, str], ...] = (("not given", NOT_GIVEN), ("on", "on"), ("off", "off"))


def _default_words(option: Option) -> str:
    return "default" if option.default is None else f"default {option.default}"


def _placeholder(option: Option) -> str:
    """What an empty box means, from the option's own help (``(default: ...)``), else "not given"."""
    start = option.help.find("(default")
    if start >= 0:
        return option.help[start + 1 : option.help.find(")", start)].replace("default: ", "empty: ")
    if option.default is not None:
        return f"empty: {option.default}"
    return EMPTY_MEANS[option.group]


EMPTY_MEANS: Mapping[str, str] = {
    "request": "empty: not given",
    "output": "empty: not given",
    "hardware": "empty: this machine's, as detected",
    "overrides": "empty: the tier's",
}


def plan_key_fields(keys: Mapping[str, PlanKey] = PLAN_KEYS) -> tuple[Field, ...]:
    """A field for each plan key a user may set (``--set KEY=VALUE``), grouped by component."""
    return tuple(
        _plan_key_field(name, key)
        for name, key in keys.items()
        if key.settable and not name.startswith(COMPUTED_PREFIXES)
    )


def _plan_key_field(name: str, key: PlanKey) -> Field:
    common: dict[str, Any] = {
        "id": "plan-" + name.replace(".", "-").replace("_", "-"),
        "label": name,
        "help": key.description,
        "panel": component_of(name),
        "plan_key": name,
        "spec": key,
    }
    if key.kind == "choice":
        choices = (("the plan's", NOT_GIVEN), *((str(c), str(c)) for c in key.choices))
        return Field(widget="choice", choices=choices, default=NOT_GIVEN, **common)
    if key.kind == "bool":
        return Field(
            widget="on-off",
            choices=(("the plan's", NOT_GIVEN), ("on", "on"), ("off", "off")),
            default=NOT_GIVEN,
            **common,
        )
    placeholder = "empty: the plan's" + (' — a JSON list, e.g. ["lm_head"]' if key.kind == "str-list" else "")
    return Field(widget="text", default="", placeholder=placeholder, **common)


def component_of(plan_key: str) -> str:
    """The component a plan key is about (``offload.dit`` → ``dit``, ``lm.backend`` → ``lm``), else ``pipeline``."""
    return next((part for part in plan_key.split(".") if part in COMPONENTS), "pipeline")


def page_fields() -> tuple[Field, ...]:
    """Every field of the page that shapes the decision, options first (in ``--help`` order), then plan keys."""
    return option_fields() + plan_key_fields()


def argv_of(fields: Sequence[Field], values: Mapping[str, Any]) -> list[str]:
    """The ``acestep-core plan`` arguments the controls hold (``values`` by field id)."""
    return [word for field in fields for word in field.argv(values.get(field.id, field.default))]


def problems_of(fields: Sequence[Field], values: Mapping[str, Any]) -> dict[str, str]:
    """Field id → why its value cannot be used, for every field whose value cannot be."""
    found = {field.id: field.problem(values.get(field.id, field.default)) for field in fields}
    return {field_id: problem for field_id, problem in found.items() if problem is not None}
