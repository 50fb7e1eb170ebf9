"""The options of ``acestep-core plan``, described once as data: the parsers and the page are built from them.

Each :class:`Option` says what one flag means: the group it belongs to, the kind of value it takes and
the range or values accepted, its help, the plan keys it is a shorthand for, and whether it changes the
decision at all. ``plan``, ``info`` and ``generate`` build their argparse options from
:data:`REQUEST_OPTIONS` and :data:`RESOLUTION_OPTIONS` (:func:`add_options`), and anything else that
offers plan's arguments — the ``ui`` page makes one control per option — reads the same table, so an
option added here appears everywhere with the same checks and the same messages.

To add an option: append an :class:`Option` to the right tuple, then read its value where the command
uses it (:func:`acestep_core.cli.resolution.request_from_args` or ``overrides_from_args``).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from acestep_core.cli.flags import memory_gb, number
from acestep_core.record import Record
from acestep_core.vocabulary import (
    ATTENTIONS,
    CHECKPOINTS_ENV,
    COMPONENTS,
    DIT_MODELS,
    LM_BACKENDS,
    LM_SIZES,
    OFFLOADS,
    QUANTIZATIONS,
)

OptionGroup = Literal["request", "output", "hardware", "overrides"]
"""What an option is about: the request itself, the output's form, the device and table, or a value
that wins over the tier's."""
OptionKind = Literal["number", "integer", "memory", "text", "choice", "switch", "on-off", "settings"]
"""The value an option takes: a finite number or an integer (with ``least`` / ``above`` / ``most``), a
memory size in GB (as ``MAX_CUDA_VRAM``), free text (``accepted`` lists what the command takes when it
checks the text itself), one of ``choices`` (argparse refuses others), a switch (present or not),
``--X`` / ``--no-X`` (or neither), or repeated ``KEY=VALUE`` plan settings."""

GROUP_TITLES: Mapping[OptionGroup, str | None] = {
    "request": "request",
    "output": None,
    "hardware": "hardware",
    "overrides": "overrides (each wins over the tier's default)",
}
"""Each group's title in ``--help`` (None: the parser's own "options")."""


class _AddsArguments(Protocol):
    """An argparse parser or argument group."""

    def add_argument(self, *names: str, **kwargs: Any) -> Any: ...


class OptionValueError(ValueError):
    """A value an option does not take; the message is argparse's, without the ``argument --flag:`` prefix."""

    def __init__(self, option: Option, message: str) -> None:
        super().__init__(message)
        self.option = option


class Option(Record):
    """One flag of ``acestep-core plan``: what it takes and what it means."""

    flag: str
    dest: str
    """The attribute of the parsed arguments that holds its value."""
    group: OptionGroup
    kind: OptionKind
    help: str
    metavar: str | None = None
    default: Any = None
    """The value when the flag is not given (None: the tier, the plan or the LM decides)."""
    least: float | None = None
    above: float | None = None
    most: float | None = None
    """Kinds ``number`` and ``integer``: the value must be ``>= least``, ``> above`` and ``<= most``."""
    choices: tuple[str, ...] = ()
    """Kind ``choice``: the values accepted (argparse refuses any other)."""
    accepted: tuple[str, ...] = ()
    """Kind ``text``: the values the command accepts, when it checks them itself after parsing."""
    separator: str = ""
    """Kind ``text``: the separator of a list of ``accepted`` values (``--allow-lm 0.6B,4B``)."""
    sets_plan_keys: tuple[str, ...] = ()
    """A shorthand: the option sets these plan keys to its value, as ``--set KEY=VALUE`` would."""
    decides: bool = True
    """False for an option that changes how the command works or prints, not what it decides."""

    @property
    def takes_value(self) -> bool:
        """True when the flag is followed by a value (``--duration 30``), False for switches."""
        return self.kind not in ("switch", "on-off")

    def value_type(self) -> Callable[[str], Any] | None:
        """The argparse ``type`` that checks and converts the value (None: kept as text)."""
        if self.kind == "memory":
            return memory_gb
        if self.kind in ("number", "integer"):
            return number(int if self.kind == "integer" else float, least=self.least, above=self.above, most=self.most)
        return None

    def add_to(self, parser: _AddsArguments) -> None:
        """Add this option to an argparse parser or argument group."""
        kwargs: dict[str, Any] = {"help": self.help}
        if self.kind == "switch":
            kwargs["action"] = "store_true"
        elif self.kind == "on-off":
            kwargs |= {"action": argparse.BooleanOptionalAction, "default": self.default}
        elif self.kind == "settings":
            kwargs |= {"action": "append", "default": [], "metavar": self.metavar}
        else:
            value_type = self.value_type()
            if value_type is not None:
                kwargs["type"] = value_type
            if self.kind == "choice":
                kwargs["choices"] = self.choices
            if self.default is not None:
                kwargs["default"] = self.default
            if self.metavar is not None:
                kwargs["metavar"] = self.metavar
        parser.add_argument(self.flag, **kwargs)

    def parse(self, text: str) -> Any:
        """The value the command's parser stores for ``text`` given after this flag.

        :raises OptionValueError: with the message argparse prints after ``argument FLAG:``.
        """
        if not self.takes_value:
            raise TypeError(f"{self.flag} takes no value")
        try:
            namespace = _single_option_parser(self).parse_args([f"{self.flag}={text}"])
        except argparse.ArgumentError as error:
            raise OptionValueError(self, error.message) from None
        value = getattr(namespace, self.dest)
        return value[-1] if self.kind == "settings" else value

    def argv(self, value: str | bool | None) -> list[str]:
        """The command-line words that give this option ``value``: text for options that take one,
        True / False for switches (``--X`` / ``--no-X``), None for "not given"."""
        if value is None or (value is False and self.kind == "switch"):
            return []
        if not self.takes_value:
            return [self.flag if value else f"--no-{self.flag.removeprefix('--')}"]
        text = str(value)
        return [f"{self.flag}={text}"] if text.startswith("-") else [self.flag, text]


class _OneOptionParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's usage errors other than a bad value
        raise argparse.ArgumentError(None, message)


@functools.cache
def _single_option_parser(option: Option) -> argparse.ArgumentParser:
    parser = _OneOptionParser(prog="check", add_help=False, exit_on_error=False)
    option.add_to(parser)
    return parser


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Add ``options`` to ``parser``, each in its group (groups created in the order first met)."""
    groups: dict[str, _AddsArguments] = {}
    for option in options:
        title = GROUP_TITLES[option.group]
        if title is None:
            option.add_to(parser)
            continue
        if title not in groups:
            groups[title] = parser.add_argument_group(title)
        option.add_to(groups[title])


REQUEST_OPTIONS: tuple[Option, ...] = (
    Option(
        "--duration",
        "duration",
        "request",
        "number",
        "seconds of audio (default: let the LM decide)",
        metavar="S",
        above=0,
    ),
    Option("--batch", "batch", "request", "integer", "number of clips (default: 1)", metavar="N", default=1, least=1),
    Option(
        "--lm",
        "lm",
        "request",
        "text",
        f"LM size ({', '.join(LM_SIZES)}), 'none' to run without the LM, or 'auto' for the tier's default (default)",
        metavar="SIZE|none|auto",
        default="auto",
        accepted=("auto", "none", *LM_SIZES),
    ),
    Option(
        "--dit",
        "dit",
        "request",
        "choice",
        "the DiT: the 2B or XL (4B) turbo (one forward a step), base or sft (two: CFG); default the tier's "
        "(the 2B turbo where allowed, as upstream)",
        choices=DIT_MODELS,
    ),
    Option(
        "--checkpoints",
        "checkpoints",
        "request",
        "text",
        f"a checkpoints folder as upstream lays it out (acestep-v15-*, vae, Qwen3-Embedding-0.6B, "
        f"acestep-5Hz-lm-*): the plan budgets what its files hold (default: {CHECKPOINTS_ENV})",
        metavar="DIR",
    ),
)
"""What is asked for: ``plan`` and ``generate`` take these; ``info`` shows the tier's defaults instead."""

RESOLUTION_OPTIONS: tuple[Option, ...] = (
    Option("--json", "json", "output", "switch", "print the result as JSON (for tools and UIs)", decides=False),
    Option(
        "--vram",
        "vram",
        "hardware",
        "memory",
        "simulate a device with this much memory (as MAX_CUDA_VRAM; wins over it)",
        metavar="GB",
    ),
    Option(
        "--device",
        "device",
        "hardware",
        "text",
        "the device the pipeline will use (default: the first visible)",
        metavar="INDEX|UUID",
    ),
    Option(
        "--replay",
        "replay",
        "hardware",
        "text",
        "replay a recorded device (JSON) instead of asking the driver (wins over MAX_CUDA_VRAM)",
        metavar="FILE",
    ),
    Option("--redetect", "redetect", "hardware", "switch", "ignore any cached reading", decides=False),
    Option(
        "--tiers",
        "tiers",
        "hardware",
        "text",
        "use this tier table (default: ACESTEP_CORE_TIERS, or the rule in `tiers --help`)",
        metavar="NAME",
    ),
    Option("--max-duration", "max_duration", "overrides", "integer", "allow durations up to S seconds", metavar="S"),
    Option("--max-batch", "max_batch", "overrides", "integer", "allow batches up to N", metavar="N"),
    Option(
        "--allow-lm",
        "allow_lm",
        "overrides",
        "text",
        f"allow these LM sizes, comma-separated ({','.join(LM_SIZES)})",
        metavar="SIZES",
        accepted=LM_SIZES,
        separator=",",
    ),
    Option(
        "--attention",
        "attention",
        "overrides",
        "choice",
        "attention backend",
        choices=ATTENTIONS,
        sets_plan_keys=("attention",),
    ),
    Option(
        "--offload",
        "offload",
        "overrides",
        "choice",
        "CPU offload for every component",
        choices=OFFLOADS,
        sets_plan_keys=tuple(f"offload.{c}" for c in COMPONENTS),
    ),
    Option(
        "--quantization",
        "quantization",
        "overrides",
        "choice",
        "weight quantization for the LM, DiT and text encoder",
        choices=QUANTIZATIONS,
        sets_plan_keys=tuple(f"quantization.{c}" for c in COMPONENTS if c != "vae"),
    ),
    Option(
        "--lm-backend",
        "lm_backend",
        "overrides",
        "choice",
        "the LM's inference backend; refused with the reason where this device cannot run it",
        choices=LM_BACKENDS,
        sets_plan_keys=("lm.backend",),
    ),
    Option("--compile", "compile", "overrides", "on-off", "torch.compile on or off", sets_plan_keys=("compile",)),
    Option(
        "--set",
        "set",
        "overrides",
        "settings",
        "set any settable plan key, e.g. --set offload.vae=none (value as JSON, else a string); "
        "ladder.batch_size and ladder.duration_s may only lower the request, ladder.refused refuses the plan",
        metavar="KEY=VALUE",
    ),
    Option(
        "--force",
        "force",
        "overrides",
        "switch",
        "keep a plan predicted over the device budget instead of refusing it (recorded and warned)",
    ),
)
"""How the decision is made: the device, the table and the user's overrides (``info``, ``plan``, ``generate``)."""

PLAN_OPTIONS: tuple[Option, ...] = REQUEST_OPTIONS + RESOLUTION_OPTIONS
"""Every option of ``acestep-core plan``, in the order ``--help`` lists them."""
