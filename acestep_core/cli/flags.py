"""Types for command-line flags: a value typed on the command line is checked as argparse parses it,
so a bad one is a usage error (exit 2) naming the flag, the value and what is accepted."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from acestep_core.inputs import clip, parse_memory_gb


def _number(text: str, kind: type) -> float:
    """``text`` as ``kind``, written in ASCII: ``int`` and ``float`` also read '８' (full-width) and '٨'."""
    try:
        if not text.isascii():
            raise ValueError(text)
        value: float = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{clip(text)!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{clip(text)!r} is not a finite number")
    return value


def number(
    kind: type = float, *, least: float | None = None, above: float | None = None, most: float | None = None
) -> Callable[[str], float]:
    """An argparse ``type``: a finite ``kind`` (int or float) with ``value >= least``, ``> above``, ``<= most``."""

    def shown(bound: float) -> str:
        return str(int(bound)) if kind is int else f"{bound:g}"

    accepted = " and ".join(
        part
        for part in (
            f">= {shown(least)}" if least is not None else "",
            f"> {shown(above)}" if above is not None else "",
            f"<= {shown(most)}" if most is not None else "",
        )
        if part
    )
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> float:
        value = _number(text, kind)
        if (
            (least is not None and value < least)
            or (above is not None and value <= above)
            or (most is not None and value > most)
        ):
            raise argparse.ArgumentTypeError(f"{clip(text)!r} is out of range: give {name} {accepted}")
        return value

    parse.__name__ = name  # what argparse names in its own messages
    return parse


def number_list(
    kind: type = float, *, least: float | None = None, above: float | None = None, most: float | None = None
) -> Callable[[str], tuple[float, ...]]:
    """An argparse ``type``: comma-separated numbers, each checked as :func:`number`; sorted, unique."""
    one = number(kind, least=least, above=above, most=most)

    def parse(text: str) -> tuple[float, ...]:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(
                f"{clip(text)!r} holds no numbers: give them comma-separated, e.g. 8,12,16"
            )
        return tuple(sorted({one(part) for part in parts}))

    parse.__name__ = "list of numbers"
    return parse


def memory_gb(text: str) -> str:
    """An argparse ``type`` for ``--vram``: the text, once it is a memory size (as MAX_CUDA_VRAM takes it),
    or several, comma-separated (one simulated card each)."""
    try:
        for part in text.split(","):
            parse_memory_gb(part)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return ",".join(part.strip() for part in text.split(","))


def placement(text: str) -> str:
    """An argparse ``type`` for ``--place``: the text, once it is a placement (``auto``, ``single:N`` or a
    map); whether its devices are there is known after detection."""
    from acestep_core.placement import PlaceError, parse_place

    try:
        parse_place(text)
    except PlaceError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()
