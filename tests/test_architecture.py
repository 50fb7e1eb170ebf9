"""The layout is the architecture: deciding (``acestep_core``) is pure Python and never reaches into
running (``acestep_core.runtime``), torch or a plugin; running imports what it needs at module top."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import acestep_core

PACKAGE = Path(acestep_core.__file__).parent
RUNTIME = PACKAGE / "runtime"
HEAVY = ("torch", "transformers", "diffusers", "optimum", "accelerate", "tokenizers", "pynvml", "numpy", "torchao")
"""torchao is not in the runtime's top-of-module list below: it is an optional backend (the plan takes quanto
where it is missing), imported where a plan first uses it."""
PLUGIN_PREFIX = "acestep_core_"


def _modules(root: Path, *, exclude: Path | None = None) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if exclude is None or exclude not in p.parents)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Every module ``path`` imports, and whether the import sits inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, in_function))
            visit(child, inside)

    visit(tree, False)
    return found


def _core_modules() -> list[Path]:
    return _modules(PACKAGE, exclude=RUNTIME)


def test_the_core_never_imports_torch_the_runtime_or_a_plugin() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in _core_modules()
        for name, _ in _imports(path)
        if name.split(".")[0] in HEAVY or name.startswith("acestep_core.runtime") or name.startswith(PLUGIN_PREFIX)
    ]
    assert offenders == []


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """The string constants of ``path`` that are code (docstrings left out): import strings hide here."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    prose = {
        id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
    ]


def test_the_core_names_no_runtime_module_even_in_a_string() -> None:
    """``importlib.import_module("acestep_core.runtime...")`` is an import the test above cannot see:
    the runtime's commands reach the CLI through the ``acestep_core.commands`` entry points instead.
    (The built-in plugins' module names are data there: ``plugins.BUILTINS`` recognises them, never
    imports them.)"""
    hidden = re.compile(r"\bacestep_core\.runtime\b")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{line}: {text[:60]!r}"
        for path in _core_modules()
        for line, text in _code_strings(path)
        if hidden.search(text)
    ]
    assert offenders == []


def test_the_runtime_commands_are_entry_points_whose_modules_depend_on_the_core_cli() -> None:
    import tomllib

    from acestep_core.cli import COMMAND_GROUP

    project = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    commands = project["entry-points"][COMMAND_GROUP]
    assert set(commands) == {"generate", "calibrate", "fleet", "ui"}
    for name, target in commands.items():
        module, _, function = target.partition(":")
        assert module.startswith("acestep_core.runtime.") and function == "add_parser", (name, target)
        path = PACKAGE.parent.joinpath(*module.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert any(isinstance(node, ast.FunctionDef) and node.name == function for node in tree.body), target
        assert any(imported.startswith("acestep_core.cli") for imported, _ in _imports(path)), target


def test_runtime_imports_torch_at_module_top_only() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in _modules(RUNTIME)
        for name, in_function in _imports(path)
        if in_function and name.split(".")[0] in ("torch", "transformers", "diffusers", "optimum", "accelerate")
    ]
    assert offenders == []


def test_every_core_module_imports_with_torch_unimportable() -> None:
    """Import each core module in a process where torch, NVML and the model libraries cannot load."""
    names = [
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in _core_modules()
    ]
    code = f"""
import importlib, importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {HEAVY!r}:
            raise ImportError('blocked for this test: ' + name)
sys.meta_path.insert(0, Refuse())
for name in {names!r}:
    importlib.import_module(name)
print(len({names!r}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(names) > 10


def test_no_test_or_ci_script_reads_outside_the_repository() -> None:
    """A clone with nothing beside it must run every test: no path to a sibling ``shared`` folder."""
    repository = PACKAGE.parent
    outside = re.compile(r"\.\./shared|parents\[\d+\]\s*/\s*[\"']shared[\"']")
    scripts = [*(repository / "tests").rglob("*.py"), *(repository / ".ci").iterdir()]
    offenders = [
        str(path.relative_to(repository))
        for path in scripts
        if path.is_file()
        and outside.search(path.read_text(encoding="utf-8", errors="replace"))
        and path.name != "test_architecture.py"
    ]
    assert len(scripts) > 20
    assert offenders == []
