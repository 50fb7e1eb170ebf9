"""Text for a terminal: control characters escaped, over-long lines cut (``--json`` keeps every value whole).

A tier label, a plugin's message or a file name can hold anything; printed raw, an escape sequence
(``\\x1b[2J``) would clear the screen or rewrite what the user reads, and a 100 KB value would bury
the output. :class:`TerminalWriter` wraps stdout for a command's whole run, so no renderer can forget.
"""

from __future__ import annotations

import io
import os
import re
import sys
from typing import TextIO

LINE_LIMIT = 600
"""Characters of one printed line; the rest is replaced by a note of how much was cut."""

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0/C1 controls except tab and newline, and the bidirectional overrides ("Trojan Source")."""


def terminal_width(fallback: int = 80) -> int:
    """The columns :func:`shutil.get_terminal_size` reports (``COLUMNS``, else the terminal's width,
    else ``fallback``), without importing :mod:`shutil`, which brings bz2 and lzma with it."""
    try:
        columns = int(os.environ.get("COLUMNS", 0))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else fallback


def escape_controls(text: str, *, json_escapes: bool = False) -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``, ``\\u202e``); with
    ``json_escapes`` always as ``\\u001b``, which is still valid inside a JSON string (json.dumps leaves
    DEL, the C1 controls and the bidi overrides raw)."""
    if json_escapes:
        return _CONTROL.sub(lambda match: f"\\u{ord(match.group()):04x}", text)
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def terminal_text(text: str, limit: int = LINE_LIMIT) -> str:
    """One message for a terminal: controls escaped, each line cut to ``limit`` characters."""
    return "\n".join(_cut(line, limit) for line in escape_controls(text).split("\n"))


def _cut(line: str, limit: int) -> str:
    if len(line) <= limit:
        return line
    return f"{line[:limit]}… [{len(line) - limit} more characters; --json has the full value]"


class TerminalWriter(io.TextIOBase):
    """A text stream that escapes control characters and (``cut_lines``) cuts lines longer than
    :data:`LINE_LIMIT`, writing through to ``stream``. Without ``cut_lines`` (``--json``) nothing is
    cut and the escapes are JSON's own, so the output still parses to the very same values."""

    def __init__(self, stream: TextIO, *, cut_lines: bool = True, limit: int = LINE_LIMIT) -> None:
        super().__init__()
        self.stream = stream
        self.cut_lines = cut_lines
        self.limit = limit
        self._column = 0
        self._dropped = 0

    def write(self, text: str) -> int:
        escaped = escape_controls(text, json_escapes=not self.cut_lines)
        if not self.cut_lines:
            self.stream.write(escaped)
            return len(text)
        out: list[str] = []
        for piece in re.split("(\n)", escaped):
            if piece == "\n":
                out.append(self._end_note() + "\n")
                self._column = self._dropped = 0
                continue
            room = max(0, self.limit - self._column)
            out.append(piece[:room])
            self._column += min(len(piece), room)
            self._dropped += max(0, len(piece) - room)
        self.stream.write("".join(out))
        return len(text)

    def _end_note(self) -> str:
        return f"… [{self._dropped} more characters; --json has the full value]" if self._dropped else ""

    def flush(self) -> None:
        if self._dropped:
            self.stream.write(self._end_note())
            self._dropped = 0
            self._column = self.limit
        self.stream.flush()

    def close(self) -> None:
        """The wrapped stream belongs to the caller: closing (or collecting) the writer leaves it open."""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")
