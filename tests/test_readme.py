"""The README runs as shown (issue #27): every command and code block, in a venv built the README's way.

How blocks are run, and the ``<!-- readme-check ... -->`` markers that adjust them, are described in
the README's own section "This README is tested". In short: the first command builds a fresh venv in
a copy of the repository (the deciding core only) and every later block runs there; a block that
cannot run here carries ``skip: REASON``; a block of a kind this file cannot run, and not marked, fails.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FIRST_COMMAND_PREFIX = "python3 -m venv .venv && "
CI_RUNNER = "bash .ci/run"
SHELL_KINDS = frozenset({"bash", "sh", "shell", ""})
RUNNABLE_KINDS = SHELL_KINDS | {"console", "pycon", "python", "toml"}
NOT_CODE = "text"
DIRECTIVES = frozenset({"skip", "file", "extras", "then"})
MARKER_START = "<!-- readme-check"
COPY_IGNORED = shutil.ignore_patterns(
    ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis",
    "build", "dist", "out", "acestep-out",
)  # fmt: skip
LINE_TIMEOUT_S = 600
"""A bound for one README line on a loaded 2-core machine, not an expectation (most take about a second)."""


@dataclass(frozen=True)
class Block:
    """One code block of the README: where it starts, its kind (the fence's info string; ``""`` for an
    indented block), its text, and the directives of the marker just before it."""

    line: int
    kind: str
    text: str
    directives: tuple[tuple[str, str], ...] = field(default=())

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"

    def values(self, directive: str) -> list[str]:
        return [value for name, value in self.directives if name == directive]


def parse_directives(lines: list[str], where: int) -> tuple[tuple[str, str], ...]:
    found = []
    for offset, raw in enumerate(lines):
        text = raw.strip()
        if not text:
            continue
        head, sep, value = text.partition(":")
        name = head.split()[0] if head.split() else ""
        if not sep or name not in DIRECTIVES:
            raise ValueError(
                f"README.md:{where + offset}: {text!r} is no readme-check directive ({sorted(DIRECTIVES)})"
            )
        found.append((name, (head[len(name) :].strip() + "=" if name == "file" else "") + value.strip()))
    return tuple(found)


def parse_readme(text: str) -> list[Block]:
    """Fenced blocks and indented (four-space) blocks, each with the marker directly before it."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[tuple[str, str], ...] | None = None
    pending_line = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith(MARKER_START):
            end = next(j for j in range(index, len(lines)) if "-->" in lines[j])
            body = "\n".join(lines[index : end + 1]).removeprefix(MARKER_START).split("-->")[0]
            pending, pending_line = parse_directives(body.splitlines(), index + 1), index + 1
            index = end + 1
            continue
        if line.startswith("```"):
            end = next(j for j in range(index + 1, len(lines)) if lines[j].startswith("```"))
            blocks.append(Block(index + 1, line[3:].strip(), "\n".join(lines[index + 1 : end]), pending or ()))
            pending, index = None, end + 1
            continue
        if line.startswith("    ") and index > 0 and not lines[index - 1].strip():
            end = index
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            body = "\n".join(text[4:] for text in lines[index:end]).strip("\n")
            blocks.append(Block(index + 1, "", body, pending or ()))
            pending, index = None, end
            continue
        if pending is not None and line.strip():
            raise ValueError(f"README.md:{pending_line}: a readme-check marker not followed by a block")
        index += 1
    return blocks


BLOCKS = parse_readme(README.read_text(encoding="utf-8"))


def shell_lines(text: str) -> list[str]:
    """The commands of a shell block: blank and comment-only lines dropped, ``\\`` continuations joined."""
    commands: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    return commands


# --------------------------------------------------------------------------------------------- the venvs
@dataclass(frozen=True)
class Reader:
    """Where the README's commands run: a copy of the repository with the venv its first command
    built, an empty HOME, and the environment without this test run's switches."""

    repo: Path
    home: Path
    first_output: str

    def env(self, *, extras: bool) -> dict[str, str]:
        """The environment of a reader who activated the README's venv (``extras``: this test run's
        own venv, which has every extra, in its place)."""
        dropped = ("MAX_", "ACESTEP_CORE_", "CUDA_", "VIRTUAL_ENV", "PYTHONPATH", "XDG_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
        bin_dir = Path(sys.executable).parent if extras else self.repo / ".venv" / "bin"
        env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["HOME"] = str(self.home)
        return env


@pytest.fixture(scope="session")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Reader:
    """The README's first command, run as written in a fresh copy of the repository."""
    first = BLOCKS[0]
    command = shell_lines(first.text)[0]
    assert command.startswith(FIRST_COMMAND_PREFIX), f"{first.name}: the README no longer opens with its venv command"
    where = tmp_path_factory.mktemp("reader")
    repo, home = where / "acestep-core", where / "home"
    shutil.copytree(ROOT, repo, ignore=COPY_IGNORED)
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_", "VIRTUAL_ENV"))}
    env["HOME"] = str(home)
    env.pop("XDG_CACHE_HOME", None)
    done = subprocess.run(
        ["bash", "-c", command], cwd=repo, env=env, capture_output=True, text=True, timeout=LINE_TIMEOUT_S
    )
    assert done.returncode == 0, f"{first.name}: {command}\n{done.stdout}\n{done.stderr}"
    return Reader(repo, home, done.stdout)


def run_line(
    reader: Reader, block: Block, command: str, *, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    extras = bool(block.values("extras"))
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd or reader.repo,
        env=reader.env(extras=extras),
        capture_output=True,
        text=True,
        timeout=LINE_TIMEOUT_S,
    )


def require_ok(block: Block, command: str, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, f"{block.name}: `{command}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"


def place_files(block: Block, where: Path) -> None:
    for spec in block.values("file"):
        name, _, source = spec.partition("=")
        target = where / name.strip()
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / source.strip(), target)


def matches(expected: str, actual: str) -> bool:
    """``expected`` with ``...`` standing for any text (within or across lines), trailing spaces ignored."""

    def tidy(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())

    pattern = ".*?".join(re.escape(part) for part in tidy(expected).split("..."))
    return re.fullmatch(pattern, tidy(actual), flags=re.DOTALL) is not None


# --------------------------------------------------------------------------------------------- one runner a kind
def run_shell(reader: Reader, block: Block) -> None:
    place_files(block, reader.repo)
    for command in shell_lines(block.text):
        require_ok(block, command, run_line(reader, block, command))


def run_console(reader: Reader, block: Block) -> None:
    place_files(block, reader.repo)
    sessions = re.split(r"^\$ ", block.text, flags=re.MULTILINE)[1:]
    assert sessions, f"{block.name}: a console block with no `$ ` command"
    for session in sessions:
        command, _, expected = session.partition("\n")
        done = run_line(reader, block, f"{command} 2>&1")
        require_ok(block, command, done)
        assert matches(expected, done.stdout), f"{block.name}: `{command}` printed\n{done.stdout}\nnot\n{expected}"


def run_pycon(reader: Reader, block: Block) -> None:
    script = reader.home / f"readme-{block.line}.txt"
    script.write_text(block.text + "\n", encoding="utf-8")
    command = f"python -m doctest -o ELLIPSIS -o NORMALIZE_WHITESPACE {shlex.quote(str(script))}"
    require_ok(block, command, run_line(reader, block, command))


def run_python(reader: Reader, block: Block, scratch: Path) -> None:
    """A block whose first line names a file (``# my_tiers/__init__.py``) is written there and imported,
    as the project it belongs to would; any other block runs as a script."""
    first = block.text.splitlines()[0]
    path = re.fullmatch(r"#\s*(\S+\.py)", first.strip())
    place_files(block, scratch)
    if path is None:
        command = f"python -c {shlex.quote(block.text)}"
        require_ok(block, command, run_line(reader, block, command, cwd=scratch))
    else:
        target = scratch / path.group(1)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text + "\n", encoding="utf-8")
        module = ".".join(Path(path.group(1)).with_suffix("").parts).removesuffix(".__init__")
        command = f"python -c {shlex.quote(f'import {module}')}"
        require_ok(block, command, run_line(reader, block, command, cwd=scratch))


def run_block(reader: Reader, block: Block, scratch: Path) -> None:
    if block.kind in SHELL_KINDS:
        run_shell(reader, block)
    elif block.kind == "console":
        run_console(reader, block)
    elif block.kind == "pycon":
        run_pycon(reader, block)
    elif block.kind == "python":
        run_python(reader, block, scratch)
    elif block.kind == "toml":
        tomllib.loads(block.text)
    for command in block.values("then"):
        cwd = scratch if block.kind == "python" else reader.repo
        require_ok(block, command, run_line(reader, block, command, cwd=cwd))


# --------------------------------------------------------------------------------------------- the tests
def test_every_block_is_runnable_or_marked_with_a_reason() -> None:
    """The rule that keeps the README honest as sections are added: a block is run unless a marker
    says why it cannot be, and every marker names real files and extras."""
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    problems = []
    for block in BLOCKS:
        skips = block.values("skip")
        if block.kind not in RUNNABLE_KINDS | {NOT_CODE} and not skips:
            problems.append(f"{block.name}: a {block.kind!r} block this check cannot run and no `skip: REASON`")
        if any(not reason for reason in skips):
            problems.append(f"{block.name}: `skip:` without a reason")
        if block.kind == NOT_CODE and block.directives:
            problems.append(f"{block.name}: a `text` block is not code; its marker means nothing")
        for spec in block.values("file"):
            name, _, source = spec.partition("=")
            if not name.strip() or not (ROOT / source.strip()).is_file():
                problems.append(f"{block.name}: `file {spec}` names no file of the repository")
        for wanted in (e.strip() for value in block.values("extras") for e in value.split(",")):
            if wanted not in extras:
                problems.append(f"{block.name}: `extras: {wanted}` is no extra of pyproject.toml")
    assert not problems, "\n".join(problems)
    assert BLOCKS[0].line < 10 and shell_lines(BLOCKS[0].text)[1:] == [CI_RUNNER], "the README's two commands"


def test_the_readmes_first_command_shows_what_this_machine_gets(reader: Reader) -> None:
    """The first command built the venv every later block runs in; its ``info`` explains the decision.
    (The second, ``bash .ci/run``, is what runs this test.)"""
    for heading in ("device ", "tier ", "limits ", "plan", "decided by"):
        assert heading in reader.first_output


@pytest.mark.parametrize("block", BLOCKS[1:], ids=lambda block: block.name)
def test_the_block_runs_as_shown(reader: Reader, block: Block, tmp_path: Path) -> None:
    if block.values("skip"):
        pytest.skip(f"{block.name} is marked: {block.values('skip')[0]}")
    if block.kind == NOT_CODE:
        pytest.skip(f"{block.name} is `text`: not code")
    if block.kind not in RUNNABLE_KINDS:
        pytest.fail(f"{block.name}: a {block.kind!r} block, which this check cannot run, needs `skip: REASON`")
    run_block(reader, block, tmp_path)


@pytest.mark.parametrize(
    ("argv", "missing", "extra"),
    [
        ("acestep-core generate --duration 30", "torch", "ml"),
        ("acestep-core tiers compare default upstream-2026-02 --plot no-plot.png", "matplotlib", "plot"),
        ("acestep-core fleet scan --simulate 8", "ray", "fleet"),
        ("acestep-core ui", "gradio", "ui"),
    ],
)
def test_the_first_commands_venv_names_the_extra_each_feature_needs(
    reader: Reader, argv: str, missing: str, extra: str
) -> None:
    """What the README's table says, as its reader meets it: each feature's command in the base venv
    exits 1 with the one line that installs its extra (and leaves no file behind)."""
    done = run_line(reader, Block(0, "bash", argv), argv)
    assert done.returncode == 1 and done.stdout == "", done.stderr
    assert f"{missing} is missing" in done.stderr and f"pip install 'acestep-core[{extra}]'" in done.stderr
    assert not (reader.repo / "no-plot.png").exists()


# --------------------------------------------------------------------------------------------- inline commands
def inline_commands() -> list[str]:
    prose = re.sub(r"```.*?```", "", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    return re.findall(r"`([^`\n]+)`", prose)


CLI_COMMAND = re.compile(r"^(?:[A-Z_]+=\S*\s+)*acestep-core\s+(.+)$")
FILE_COMMAND = re.compile(r"^(?:[A-Z_]+=\S*\s+)*(?:python|bash|pytest)\s+(?:-\S+\s+)*((?:benchmarks|tests)/[\w./-]+)")


@contextlib.contextmanager
def parse_only() -> Iterator[None]:
    """argparse exits on a usage error: turn that into an assertion; --help output is discarded."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        try:
            yield
        except SystemExit as stop:
            assert stop.code in (0, None), err.getvalue()


def test_inline_commands_name_real_commands_flags_extras_and_files() -> None:
    from acestep_core.cli import build_parser

    parser = build_parser()
    seen = {"cli": 0, "file": 0, "extra": 0}
    for span in inline_commands():
        cli = CLI_COMMAND.match(span)
        if cli and "..." not in span:
            argv = [arg for arg in shlex.split(cli.group(1)) if not re.fullmatch(r"\[.*\]", arg)]
            with parse_only():
                args = parser.parse_args(argv)
                assert isinstance(args, argparse.Namespace)
            seen["cli"] += 1
        script = FILE_COMMAND.match(span)
        if script:
            assert (ROOT / script.group(1)).exists(), f"`{span}`: {script.group(1)} does not exist"
            seen["file"] += 1
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for named in re.findall(r"(?:acestep-core|\.)\[([\w,]+)\]", README.read_text(encoding="utf-8")):
        assert set(named.split(",")) <= extras, f"[{named}] names an extra pyproject.toml lacks"
        seen["extra"] += 1
    assert min(seen.values()) > 0, seen
