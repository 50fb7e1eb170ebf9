"""Finding the installed plugins' entry points without paying for it at every start-up.

Scanning entry points means importing :mod:`importlib.metadata` and reading the metadata of every
installed distribution: on a machine with the ``ml`` extra that is most of ``acestep-core info``'s
own time. The result only changes when something is installed or removed, so it is cached with the
environment it was found in (as stevedore does): the interpreter, ``sys.path``, and the modification
time of every ``sys.path`` directory — installing or removing a distribution adds or removes a
``*.dist-info`` directory there, which changes its directory's time. A cache whose environment differs
from the current one is scanned again and replaced.

The cache is a file of :mod:`acestep_core.cache` (``ACESTEP_CORE_CACHE_DIR``,
``ACESTEP_CORE_NO_CACHE=1``), one per environment and ``sys.path`` layout: ``acestep-core`` and
``python -m acestep_core`` put different folders first, and must not evict each other.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from acestep_core import cache
from acestep_core.record import Record

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
    key = environment_key(path)
    name = f"entry-points-{group}-{layout_hash(key):08x}.json"
    rows = cache.read(name, key, environ, valid=valid_rows)
    if rows is not None:
        return tuple(
            PluginEntryPoint(row["name"], row["value"], Distribution(**row["dist"]) if row["dist"] else None)
            for row in rows
        )
    found = scan(group)
    rows = [{"name": ep.name, "value": ep.value, "dist": None if ep.dist is None else vars(ep.dist)} for ep in found]
    cache.write(name, key, rows, environ)
    return found


def valid_rows(rows: Any) -> bool:
    """Whether cached ``rows`` have the form :func:`discover` writes (strings where strings belong);
    any other value is a miss, scanned again, never a crash in every later command."""

    def text(value: Any) -> bool:
        return isinstance(value, str) and bool(value.strip())

    def valid(row: Any) -> bool:
        if not isinstance(row, dict) or set(row) != {"name", "value", "dist"}:
            return False
        dist = row["dist"]
        dist_ok = dist is None or (
            isinstance(dist, dict)
            and set(dist) == {"name", "version"}
            and all(isinstance(v, str) for v in dist.values())
        )
        return text(row["name"]) and text(row["value"]) and dist_ok

    return isinstance(rows, list) and all(valid(row) for row in rows)


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
