"""Finding the installed plugins' entry points without paying for it at every start-up.

Scanning entry points means importing :mod:`importlib.metadata` and reading the metadata of every
installed distribution: on a machine with the ``ml`` extra that is most of ``acestep-core info``'s
own time. The result only changes when something is installed or removed, so it is cached with the
environment it was found in (as stevedore does): the interpreter, ``sys.path``, and the modification
time of every ``sys.path`` directory — installing or removing a distribution adds or removes a
``*.dist-info`` directory there, which changes its directory's time. A cache whose environment differs
from the current one is scanned again and replaced.

Environment:

``ACESTEP_CORE_CACHE_DIR``
    where the cache lives, one file per environment and ``sys.path`` layout (``acestep-core`` and
    ``python -m acestep_core`` put different folders first, and must not evict each other); default
    ``$XDG_CACHE_HOME/acestep-core``, else ``~/.cache/acestep-core``.
``ACESTEP_CORE_NO_CACHE=1``
    scan every time; nothing is read or written.

A cache that cannot be read or written (a read-only home, a corrupt file) is ignored: the scan runs.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from acestep_core.record import Record

CACHE_DIR_ENV = "ACESTEP_CORE_CACHE_DIR"
NO_CACHE_ENV = "ACESTEP_CORE_NO_CACHE"
CACHE_FORMAT = 1


class Distribution(Record):
    """The installed distribution an entry point came from."""

    name: str
    version: str


class PluginEntryPoint(Record):
    """An entry point as :class:`importlib.metadata.EntryPoint` has it (``name``, ``value``, ``dist``,
    ``load()``), cheap to build from the cache."""

    name: str
    value: str
    """``module`` or ``module:attribute``."""
    dist: Distribution | None = None

    @property
    def module(self) -> str:
        return self.value.partition(":")[0].strip()

    def load(self) -> Any:
        """Import the module (and look up the attribute) the entry point names."""
        loaded: Any = importlib.import_module(self.module)
        attribute = self.value.partition(":")[2].strip()
        for part in attribute.split(".") if attribute else ():
            loaded = getattr(loaded, part)
        return loaded


def discover(
    group: str, *, environ: Mapping[str, str] | None = None, path: Sequence[str] | None = None
) -> tuple[PluginEntryPoint, ...]:
    """The entry points of ``group`` in this environment, from the cache when it is current."""
    environ = os.environ if environ is None else environ
    path = sys.path if path is None else path
    if environ.get(NO_CACHE_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return scan(group)
    key = environment_key(path)
    cache_file = cache_directory(environ) / f"entry-points-{group}-{layout_hash(key):08x}.json"
    cached = _read(cache_file, key)
    if cached is not None:
        return cached
    found = scan(group)
    _write(cache_file, key, found)
    return found


def scan(group: str) -> tuple[PluginEntryPoint, ...]:
    """Ask :mod:`importlib.metadata` (slow: it reads every installed distribution's metadata)."""
    import importlib.metadata  # only on a cache miss: importing it is a large part of the scan's cost

    return tuple(
        PluginEntryPoint(ep.name, ep.value, Distribution(ep.dist.name, ep.dist.version) if ep.dist else None)
        for ep in importlib.metadata.entry_points(group=group)
    )


def environment_key(path: Iterable[str]) -> list[Any]:
    """What changes whenever a distribution is installed into or removed from ``path``."""
    key: list[Any] = [CACHE_FORMAT, sys.executable, sys.version]
    working_directory = os.getcwd()
    for entry in path:
        if entry in ("", ".", working_directory):
            continue  # `python -m` / `-c` put the working directory first: editing a file there is no install
        try:
            stamp = os.stat(entry or ".").st_mtime_ns
        except OSError:
            stamp = -1
        key.append([entry, stamp])
    return key


def layout_hash(key: list[Any]) -> int:
    """The environment key without the modification times: installing something replaces a layout's
    cache file instead of adding one."""
    layout = [entry[0] if isinstance(entry, list) else entry for entry in key]
    return zlib.crc32(json.dumps(layout).encode())


def cache_directory(environ: Mapping[str, str]) -> Path:
    if environ.get(CACHE_DIR_ENV):
        return Path(environ[CACHE_DIR_ENV])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "acestep-core"


def _read(cache_file: Path, key: list[Any]) -> tuple[PluginEntryPoint, ...] | None:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
        if data["environment"] != key:
            return None
        rows = data["entry_points"]
        return tuple(
            PluginEntryPoint(row["name"], row["value"], Distribution(**row["dist"]) if row["dist"] else None)
            for row in rows
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write(cache_file: Path, key: list[Any], entry_points: Iterable[PluginEntryPoint]) -> None:
    rows = [
        {"name": ep.name, "value": ep.value, "dist": None if ep.dist is None else vars(ep.dist)} for ep in entry_points
    ]
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_file.with_name(f"{cache_file.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps({"environment": key, "entry_points": rows}), encoding="utf-8")
        os.replace(temporary, cache_file)
    except OSError:
        return
