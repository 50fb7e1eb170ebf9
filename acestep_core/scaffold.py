"""``acestep-core tiers new NAME``: a ready-to-install tier plugin package, started from a table.

The package holds the table as data (``tiers.toml``), the one hook that hands it to the core, a
pyproject naming the entry point, a test that validates the table, and a README saying how to
tune, check, compare and share it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from acestep_core.record import Record
from acestep_core.tables import parse_table, table_to_toml
from acestep_core.types import TierTable

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
"""At most 64 characters: the name becomes folder and module names, which file systems bound."""


class ScaffoldNames(Record):
    table: str
    distribution: str
    module: str
    entry_point: str


def names_for(name: str) -> ScaffoldNames:
    """``my-card`` → table ``my-card``, distribution ``acestep-core-tiers-my-card``, module
    ``acestep_core_tiers_my_card``, entry point ``tiers_my_card``."""
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} is not a usable name: use up to 64 lowercase letters, digits, '-' or '_', starting with a letter"
        )
    snake = name.replace("-", "_")
    return ScaffoldNames(
        name, f"acestep-core-tiers-{name.replace('_', '-')}", f"acestep_core_tiers_{snake}", f"tiers_{snake}"
    )


def scaffold_package(name: str, table: TierTable, directory: str | Path) -> Path:
    """Write the package for table ``name`` (a copy of ``table``) under ``directory``; return its root.

    :raises FileExistsError: when the package folder exists already (nothing is overwritten).
    """
    names = names_for(name)
    root = Path(directory) / names.distribution
    if root.exists():
        raise FileExistsError(f"{root} exists already: choose another name or --dir")
    renamed = dataclasses.replace(
        table, name=name, description=f"{name}: started from {table.name!r} ({table.description})"
    )
    text = table_to_toml(
        renamed,
        header_comment=(
            f"Tier table {name!r}, started from {table.name!r}. Sizes are GiB.\n"
            "Check it with `acestep-core tiers validate` on this file, and compare it with\n"
            f"`acestep-core tiers compare {table.name} <this file> --plot diff.png`."
        ),
    )
    parse_table(text, source=f"{names.module}/tiers.toml")  # what we write must read back valid
    module = root / names.module
    (root / "tests").mkdir(parents=True)
    module.mkdir()
    (module / "tiers.toml").write_text(text, encoding="utf-8")
    (module / "__init__.py").write_text(_MODULE.format(name=name), encoding="utf-8")
    (root / "pyproject.toml").write_text(_PYPROJECT.format(**dataclasses.asdict(names)), encoding="utf-8")
    (root / "tests" / "test_table.py").write_text(_TEST.format(**dataclasses.asdict(names)), encoding="utf-8")
    (root / "README.md").write_text(_README.format(base=table.name, **dataclasses.asdict(names)), encoding="utf-8")
    return root


_PYPROJECT = """\
[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "{distribution}"
version = "0.1.0"
description = "Tier table {table!r} for acestep-core"
requires-python = ">=3.11"
dependencies = ["acestep-core"]

[project.entry-points.acestep_core]
{entry_point} = "{module}"

[tool.setuptools]
packages = ["{module}"]

[tool.setuptools.package-data]
{module} = ["*.toml"]
"""

_MODULE = '''\
"""Tier table {name!r} for acestep-core: the table is data (``tiers.toml``); this hook hands it in."""

from __future__ import annotations

from importlib.resources import files

from acestep_core import TierTable, hookimpl, parse_table

TABLE_FILE = "tiers.toml"


@hookimpl
def register_tier_tables() -> TierTable:
    text = files(__name__).joinpath(TABLE_FILE).read_text(encoding="utf-8")
    return parse_table(text, source=f"{{__name__}}/{{TABLE_FILE}}")
'''

_TEST = '''\
"""The table must pass the same validation the core applies when it loads it."""

from importlib.resources import files

from acestep_core import parse_table
from acestep_core.tables import check_table_sanity

import {module}


def test_table_is_valid() -> None:
    table = parse_table(files("{module}").joinpath("tiers.toml").read_text(encoding="utf-8"))
    assert table.name == "{table}"
    assert check_table_sanity(list(table.tiers)) == []


def test_hook_returns_the_table() -> None:
    assert {module}.register_tier_tables().name == "{table}"
'''

_README = """\
# {distribution}

Tier table `{table}` for [acestep-core](https://github.com/), started from the `{base}` table.

```bash
pip install -e .                                   # the core finds the `{entry_point}` entry point
acestep-core plugins                               # lists it, and which table is active and why
acestep-core info --tiers {table}                  # use it (one third-party table is used without asking)
acestep-core tiers validate {module}/tiers.toml    # every problem, with its tier, field and a fix
acestep-core tiers compare {base} {module}/tiers.toml --plot diff.png
python -m pytest tests                             # the table passes the core's validation
```

Edit `{module}/tiers.toml`: one `[[tiers]]` block per memory range (GiB), covering 0 GB to unbounded
with no gaps or overlaps; limits must not fall as memory grows; each LM's `lm_memory_gb` must fit the
smallest device of its tier; durations 10-600 s; batches 1 or more. State on which cards, drivers and
library versions you measured new values (`acestep-core calibrate` writes such a record).
"""
