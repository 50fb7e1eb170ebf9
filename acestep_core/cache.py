"""What start-up would otherwise recompute in every process, kept in one folder of JSON files.

Two things are kept: the entry-point scan (:mod:`acestep_core.discovery`: importing
:mod:`importlib.metadata` and reading every distribution's metadata) and parsed TOML tier tables
(:mod:`acestep_core.tables`: importing :mod:`tomllib` and parsing). Each file holds the value and what
it was computed from (its *origin*: the environment, the TOML text); a file whose origin differs from
the current one is recomputed and replaced. A file that cannot be read or written (a read-only home,
a corrupt or hostile file) is ignored: the value is computed as if there were no cache.

Environment:

``ACESTEP_CORE_CACHE_DIR``
    the folder; default ``$XDG_CACHE_HOME/acestep-core``, else ``~/.cache/acestep-core``.
``ACESTEP_CORE_NO_CACHE=1``
    compute everything every time; nothing is read or written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CACHE_DIR_ENV = "ACESTEP_CORE_CACHE_DIR"
NO_CACHE_ENV = "ACESTEP_CORE_NO_CACHE"


def enabled(environ: Mapping[str, str]) -> bool:
    return environ.get(NO_CACHE_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


def directory(environ: Mapping[str, str]) -> Path:
    if environ.get(CACHE_DIR_ENV):
        return Path(environ[CACHE_DIR_ENV])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "acestep-core"


def read(name: str, origin: Any, environ: Mapping[str, str]) -> Any | None:
    """The value kept under ``name`` if it was computed from ``origin``; else None."""
    if not enabled(environ):
        return None
    try:
        data = json.loads((directory(environ) / name).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("origin") != origin:
            return None
        return data.get("value")
    except (OSError, ValueError, RecursionError):
        return None


def write(name: str, origin: Any, value: Any, environ: Mapping[str, str]) -> None:
    """Keep ``value`` under ``name`` (replaced atomically, so a reader never sees half a file)."""
    if not enabled(environ):
        return
    file = directory(environ) / name
    try:
        text = json.dumps({"origin": origin, "value": value})
        file.parent.mkdir(parents=True, exist_ok=True)
        temporary = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, file)
    except (OSError, TypeError, ValueError):
        return
