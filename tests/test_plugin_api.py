"""The plugin API (issue #20): plugins import ``acestep_core.plugin_api`` and nothing else of the core,
so that a third-party author can tell what is stable; the built-ins are held to it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from acestep_core import plugin_api

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PACKAGES = sorted(
    package
    for folder in (ROOT / "plugins", ROOT / "examples")
    for package in folder.glob("*/acestep_core_*")
    if package.is_dir() and (package / "__init__.py").is_file()
)


def core_imports(source: str) -> list[tuple[int, str, tuple[str, ...]]]:
    """Every import of an ``acestep_core`` module in ``source``: (line, module, names imported from it)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, ()) for alias in node.names if _is_core(alias.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _is_core(node.module):
            found.append((node.lineno, node.module, tuple(alias.name for alias in node.names)))
    return found


def _is_core(module: str) -> bool:
    return module == "acestep_core" or module.startswith("acestep_core.")


def reaches_past_the_api(source: str) -> list[str]:
    """What ``source`` imports from the core other than the plugin API's public names."""
    offenders = []
    for line, module, names in core_imports(source):
        if module == "acestep_core" and "plugin_api" in names and len(names) == 1:
            continue
        if module != "acestep_core.plugin_api":
            offenders.append(f"line {line}: {module}")
        offenders += [
            f"line {line}: {module}.{name} (not in __all__)" for name in names if name not in plugin_api.__all__
        ]
    return offenders


def test_the_checker_sees_every_way_past_the_api() -> None:
    assert reaches_past_the_api("from acestep_core.plugin_api import GIB, hookimpl") == []
    assert reaches_past_the_api("import acestep_core.plugin_api as api") == []
    assert reaches_past_the_api("from acestep_core import plugin_api") == []
    assert reaches_past_the_api("from acestep_core import hookimpl") == ["line 1: acestep_core"]
    assert reaches_past_the_api("def f():\n    from acestep_core.vocabulary import MIB") == [
        "line 2: acestep_core.vocabulary"
    ]
    assert reaches_past_the_api("import acestep_core.inputs") == ["line 1: acestep_core.inputs"]
    assert reaches_past_the_api("from acestep_core.plugin_api import _private") == [
        "line 1: acestep_core.plugin_api._private (not in __all__)"
    ]


def test_there_are_built_in_and_example_plugins_to_check() -> None:
    names = {package.name for package in PLUGIN_PACKAGES}
    assert {
        "acestep_core_cuda",
        "acestep_core_simulated",
        "acestep_core_tiers_default",
        "acestep_core_tiers_8tier",
    } <= (names)


@pytest.mark.parametrize("package", PLUGIN_PACKAGES, ids=lambda package: package.name)
def test_a_built_in_plugin_imports_only_the_plugin_api(package: Path) -> None:
    offenders = [
        f"{module.relative_to(ROOT)} {offence}"
        for module in sorted(package.rglob("*.py"))
        for offence in reaches_past_the_api(module.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "a plugin may import only acestep_core.plugin_api's public names"


def test_every_public_name_of_the_plugin_api_exists_and_is_documented() -> None:
    assert len(plugin_api.__all__) == len(set(plugin_api.__all__))
    doc = plugin_api.__doc__ or ""
    for name in plugin_api.__all__:
        assert hasattr(plugin_api, name), name
        assert name in doc, f"{name} is exported but the module's documentation does not say what it is for"
