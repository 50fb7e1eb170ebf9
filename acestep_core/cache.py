"""What start-up would otherwise recompute in every process, kept in one folder of JSON files.

Two things are kept: the entry-point scan (:mod:`acestep_core.discovery`: importing
:mod:`importlib.metadata` and reading every distribution's metadata) and parsed TOML tier tables
(:mod:`acestep_core.tables`: importing :mod:`tomllib` and parsing).

A cache is an optimisation: what it returns must be what recomputing gives, and anything else is a
miss (the value is recomputed and the file replaced). So each file holds the value with

* its **origin**, what it was computed from: a content hash of a table's TOML text (:func:`content_hash`),
  the environment an entry-point scan was made in. A file whose origin differs from the current one is
  a miss;
* a **check**, the hash of origin and the value's text together: a value changed after it was
  written (a truncated, edited or mixed-up file) is a miss;

and the caller validates every value it is given exactly as it validates one it computed (a table
by the table rules, a scan's rows by their form), so wrong-typed or junk values are misses too.
Files are read under the rules of every other input (:func:`acestep_core.inputs.read_text_limited`:
regular files only, of bounded size), so a FIFO or a link to ``/dev/zero`` in the folder is a miss,
never a hang. A file is replaced atomically, and a write that fails leaves no temporary file behind.
One file per value: a bad file costs its own value a recomputation and nothing else.

What the cache cannot tell apart is a forgery made by someone who reads this module and recomputes
both hashes: like Python's own ``__pycache__`` (PEP 552 hash-based ``.pyc`` files are keyed by the
source's hash and trusted once it matches), the folder is the user's own and trusted that far.
``ACESTEP_CORE_NO_CACHE=1`` turns the cache off.

Environment:

``ACESTEP_CORE_CACHE_DIR``
    the folder; default ``$XDG_CACHE_HOME/acestep-core``, else ``~/.cache/acestep-core``.
``ACESTEP_CORE_NO_CACHE=1``
    compute everything every time; nothing is read or written (any of
    :data:`acestep_core.inputs.TRUE_SPELLINGS` turns it on).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from acestep_core.inputs import InputFileError, env_flag, read_text_limited, write_file

try:  # the C implementation behind hashlib.blake2b, without hashlib's OpenSSL import (3 ms a start-up)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter without it
    from hashlib import blake2b

CACHE_DIR_ENV = "ACESTEP_CORE_CACHE_DIR"
NO_CACHE_ENV = "ACESTEP_CORE_NO_CACHE"
CACHE_FORMAT = 3
"""The file layout: a header line (``format``, ``origin``, ``check``) and the value's JSON after it;
a file of another layout is a miss."""
CACHE_SIZE_LIMIT = 4 << 20
"""The largest cache file read: a parsed 1 MiB table (the table limit) with room for JSON's quoting."""


def enabled(environ: Mapping[str, str]) -> bool:
    return not env_flag(environ.get(NO_CACHE_ENV))


def directory(environ: Mapping[str, str]) -> Path:
    if environ.get(CACHE_DIR_ENV):
        return Path(environ[CACHE_DIR_ENV])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "acestep-core"


def _file(name: str, environ: Mapping[str, str]) -> Path:
    """Where ``name`` is kept: its name carries the layout, so installations of other versions that
    share the folder keep their own files instead of replacing each other's at every start-up."""
    return directory(environ) / f"v{CACHE_FORMAT}-{name}"


def content_hash(text: str) -> str:
    """A hash of ``text``'s content (BLAKE2b, 128 bits, hex): what a cached value computed from it is keyed by."""
    return blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _check(origin: Any, value_text: str) -> str:
    """The hash of an origin and the value's JSON text as written (hashing the text as read costs no
    second serialisation of the value)."""
    return content_hash(json.dumps(origin) + "\n" + value_text)


def read(
    name: str, origin: Any, environ: Mapping[str, str], *, valid: Callable[[Any], bool] | None = None
) -> Any | None:
    """The value kept under ``name`` if it was computed from ``origin``, is intact, and passes ``valid``
    (when given); else None (a miss)."""
    if not enabled(environ):
        return None
    try:
        text = read_text_limited(_file(name, environ), limit=CACHE_SIZE_LIMIT, what="cache")
        header_text, _, value_text = text.partition("\n")
        header = json.loads(header_text)
        if not isinstance(header, dict) or header.get("format") != CACHE_FORMAT or header.get("origin") != origin:
            return None
        if header.get("check") != _check(origin, value_text):
            return None
        value = json.loads(value_text)
    except (InputFileError, ValueError, TypeError, RecursionError):
        return None
    if valid is not None:
        try:
            if not valid(value):
                return None
        except Exception:  # noqa: BLE001 - a value the validator cannot even read is a miss
            return None
    return value


def write(name: str, origin: Any, value: Any, environ: Mapping[str, str]) -> None:
    """Keep ``value`` under ``name``, replaced atomically (a reader never sees half a file, and a write
    that fails leaves nothing behind); a folder that cannot be written is ignored."""
    if not enabled(environ):
        return
    file = _file(name, environ)
    try:
        value_text = json.dumps(value)  # one line: JSON escapes every newline inside strings
        header = json.dumps({"format": CACHE_FORMAT, "origin": origin, "check": _check(origin, value_text)})
        file.parent.mkdir(parents=True, exist_ok=True)
        write_file(file, f"{header}\n{value_text}".encode(), overwrite=True)
    except (OSError, TypeError, ValueError, RecursionError):
        return
