"""Shared fixtures: a clean environment for every test, and plugin managers that do not depend on
the machine the tests run on (no cuda plugin, no third-party entry points)."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import IO, NamedTuple

import acestep_core_simulated
import acestep_core_tiers_default
import pytest

import acestep_core.plugins
from acestep_core import (
    GIB,
    DeviceMemory,
    MemoryReading,
    build_plugin_manager,
    clear_detection_cache,
    hookimpl,
    reset_plugin_manager,
)
from acestep_core.plugins import PluginManager

SETTINGS_FROM_ENVIRONMENT = (
    "MAX_CUDA_VRAM",
    "MAX_MPS_VRAM",
    "MAX_XPU_VRAM",
    "ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD",
    "ACESTEP_CORE_BLOCK_PLUGINS",
    "ACESTEP_CORE_TIERS",
    "ACESTEP_CHECKPOINTS_DIR",
)


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("acestep-core-cache"))


@pytest.fixture(scope="session")
def session_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("home"))


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, session_cache_dir: str, session_home: str) -> Iterator[None]:
    """No simulation or plugin switch leaks in from the shell, no manager or reading from another
    test, and the start-up cache (entry points, parsed tables) is the session's, not the user's.

    HOME and XDG_CACHE_HOME are the session's too: a child process whose environment drops
    ``ACESTEP_CORE_CACHE_DIR`` (to test the defaults) still finds its cache, and every library's
    (matplotlib's, Gradio's, pip's), under the test run's folder, never in the user's ``~/.cache``."""
    for name in SETTINGS_FROM_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ACESTEP_CORE_NO_CACHE", raising=False)
    monkeypatch.setenv("ACESTEP_CORE_CACHE_DIR", session_cache_dir)
    monkeypatch.setenv("HOME", session_home)
    monkeypatch.setenv("XDG_CACHE_HOME", os.path.join(session_home, ".cache"))
    reset_plugin_manager()
    clear_detection_cache()
    yield
    reset_plugin_manager()
    clear_detection_cache()


RUN_FOLDERS = ("HOME", "XDG_CACHE_HOME", "ACESTEP_CORE_CACHE_DIR")


def folders_of_this_run() -> dict[str, str]:
    """The test run's own HOME and caches (see :func:`clean_environment`), for a child process whose
    environment is built from scratch: without them it would find the user's home through the
    password database and write to the user's ``~/.cache``."""
    return {name: os.environ[name] for name in RUN_FOLDERS}


class FixedDevice:
    """A detection plugin that reports one device, as a hardware plugin would."""

    def __init__(self, reading: MemoryReading) -> None:
        self.reading = reading
        self.calls = 0

    @hookimpl
    def detect_memory(self) -> MemoryReading:
        self.calls += 1
        return self.reading


def device_reading(gib: float, *, simulated: bool = False, backend: str = "cuda") -> MemoryReading:
    """A reading of ``gib`` GiB total, all free."""
    total = round(gib * GIB)
    device = DeviceMemory(
        backend=backend,
        name=f"test {gib:g} GiB {backend} device",
        index=0,
        total_bytes=total,
        free_bytes=total,
        sources={"total_bytes": "test fixture"},
        simulated=simulated,
    )
    return MemoryReading(device=device, visible=(device,))


MakeManager = Callable[..., PluginManager]


@pytest.fixture
def make_manager() -> MakeManager:
    """``make_manager(*plugins, environ={})``: the built-in ``tiers_default`` and ``simulated``
    plugins plus ``plugins`` (objects, or ``(name, object)`` pairs), nothing from entry points.

    Later plugins are called first (pluggy's order), so a plugin given here runs before the
    built-ins' ``trylast`` implementations."""

    def make(*plugins: object, environ: Mapping[str, str] | None = None) -> PluginManager:
        named: list[tuple[str, object]] = [
            ("tiers_default", acestep_core_tiers_default),
            ("simulated", acestep_core_simulated),
        ]
        for position, plugin in enumerate(plugins):
            named.append(plugin if isinstance(plugin, tuple) else (f"test_plugin_{position}", plugin))
        return build_plugin_manager(environ=environ or {}, entry_points=[], plugins=named)

    return make


@pytest.fixture
def detected() -> Callable[..., FixedDevice]:
    """``detected(7.6)``: a detection plugin reporting a real (not simulated) 7.6 GiB card;
    ``detected(reading)`` reports that :class:`MemoryReading` as it is."""

    def make(gib: float | MemoryReading, *, simulated: bool = False, backend: str = "cuda") -> FixedDevice:
        if isinstance(gib, MemoryReading):
            return FixedDevice(gib)
        return FixedDevice(device_reading(gib, simulated=simulated, backend=backend))

    return make


@pytest.fixture
def one_torch_thread():
    """Tiny matrices on a shared 2-core machine: one torch thread avoids the pool's contention
    (a small matmul measured 560 µs with two threads, 8 µs with one)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class CliOutcome(NamedTuple):
    """What one in-process ``acestep-core`` command gave: exit code, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def cli(make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """``cli(*argv, env={}, cuda=False)`` → :class:`CliOutcome`: the command run in process on the
    machine-independent built-ins (and the cuda plugin, for replayed recordings, when ``cuda``)."""

    def run(*argv: str, env: dict[str, str] | None = None, cuda: bool = False) -> CliOutcome:
        import acestep_core_cuda

        from acestep_core.cli import main

        plugins = [("cuda", acestep_core_cuda)] if cuda else []
        monkeypatch.setattr(acestep_core.plugins, "_default", make_manager(*plugins))
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        out, err = capsys.readouterr()
        return CliOutcome(code, out, err)

    return run


SMALL_TABLE = """
[table]
name = "small"

[[tiers]]
name = "everything"
min_gb = 0
max_duration_with_lm_s = 30
max_duration_without_lm_s = 60
max_batch_with_lm = 1
max_batch_without_lm = 1
lm_models = ["0.6B"]
lm_default_on = true
"""
"""A one-tier table covering every size: the smallest valid table, for tests that register their own."""


# --------------------------------------------------------------------------------------------- Ctrl-C
CTRL_C_AS_IN_A_TERMINAL = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
"""The first line of a child that a test sends Ctrl-C to. A suite started in the background (``nohup … &``,
a non-interactive shell's ``&``, a CI runner without a terminal) hands its children SIGINT *ignored*;
Python then installs no KeyboardInterrupt handler and the signal does nothing. An interactive shell
gives a command SIGINT's default disposition: the child restores Python's default handler first."""


def interruptible_python(code: str, *args: str) -> list[str]:
    """argv of a Python child running ``code`` with ``args`` that Ctrl-C reaches as in a terminal."""
    return [sys.executable, "-c", CTRL_C_AS_IN_A_TERMINAL + code, *args]


def wait_until_said(process: subprocess.Popen[bytes], stream: IO[bytes], said: str, *, timeout_s: float = 600) -> bytes:
    """What ``process`` wrote to ``stream`` up to and including the first match of the regular
    expression ``said``: the child's word that it has reached the point under test. The test fails,
    showing what was written, if the child exits first or says nothing within ``timeout_s`` (a bound
    for a stuck child on a loaded machine, never a guess at when it is ready: no signal is sent then)."""
    pattern = re.compile(said.encode())
    seen = b""
    deadline = time.monotonic() + timeout_s
    while not pattern.search(seen):
        left = deadline - time.monotonic()
        if left <= 0:
            process.kill()
            raise AssertionError(f"the child did not say {said!r} in {timeout_s:g} s; it wrote:\n{_tail(seen)}")
        ready, _, _ = select.select([stream], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            process.wait()
            raise AssertionError(
                f"the child exited ({process.returncode}) before saying {said!r}; it wrote:\n{_tail(seen)}"
            )
        seen += chunk
    return seen


def _tail(output: bytes) -> str:
    return output.decode(errors="replace")[-3000:]
