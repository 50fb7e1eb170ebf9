"""The example third-party tier package takes effect when installed and leaves when uninstalled,
with no change to the core; a scaffolded package installs and passes its own test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "tiers_8tier"
CLI = "import sys; from acestep_core.cli import main; sys.exit(main())"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment that sees this one's packages (torch, the core) through a .pth
    file, so nothing is downloaded; what is installed into it stays in it."""
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    target = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(target, "outer.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")
    return python


def pip(venv: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv), "-q", *args],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )


def info(venv: Path, vram: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACESTEP_CORE_")} | {"MAX_CUDA_VRAM": vram}
    done = subprocess.run([venv, "-c", CLI, "info", "--json"], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout)


@pytest.mark.slow
def test_install_and_uninstall_the_example(venv: Path) -> None:
    before = info(venv, "18")
    assert before["table"] == "default" and before["tier"]["name"] == "tier6"
    pip(venv, "install", "--no-deps", "--no-build-isolation", "-e", str(EXAMPLE))
    try:
        at18, at22 = info(venv, "18"), info(venv, "22")
        assert at18["table"] == "8tier" and at18["tier"]["name"] == "tier6a"
        assert at18["tier"]["lm_models"] == ["0.6B", "1.7B"] and at18["tier"]["max_batch_with_lm"] == 4
        assert at22["tier"]["name"] == "tier6b" and at22["tier"]["max_batch_with_lm"] == 8
        assert at22["tier"]["optimizations"]["cpu_offload"] is False
        assert any(
            d["hook"] == "register_tier_tables"
            and d["plugin"] == "tiers_8tier"
            and "replaces 'default'" in d["summary"]
            for d in at18["decisions"]
        )
    finally:
        pip(venv, "uninstall", "-y", "acestep-core-tiers-8tier")
    after = info(venv, "18")
    assert after["table"] == "default" and after["tier"]["name"] == "tier6"


@pytest.mark.slow
def test_scaffolded_package_installs_and_passes_its_test(venv: Path, tmp_path: Path) -> None:
    subprocess.run(
        [venv, "-c", CLI, "tiers", "new", "my-card", "--dir", str(tmp_path)], check=True, capture_output=True
    )
    package = tmp_path / "acestep-core-tiers-my-card"
    pip(venv, "install", "--no-deps", "--no-build-isolation", "-e", str(package))
    try:
        tested = subprocess.run(
            [venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests")],
            capture_output=True,
            text=True,
            cwd=package,
        )
        assert tested.returncode == 0, tested.stdout + tested.stderr
        assert "2 passed" in tested.stdout
        listed = subprocess.run([venv, "-c", CLI, "plugins"], capture_output=True, text=True, check=True).stdout
        assert "tier table 'my-card': ACTIVE" in listed
    finally:
        pip(venv, "uninstall", "-y", "acestep-core-tiers-my-card")
