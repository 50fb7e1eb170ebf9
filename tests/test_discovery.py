"""Entry points are found once per environment and found again when anything is installed or removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acestep_core import discovery
from acestep_core.discovery import Distribution, PluginEntryPoint, discover

GROUP = "acestep_core"


@pytest.fixture
def counted_scan(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the slow scan by one that returns a fixed plugin and counts its calls."""
    calls: list[str] = []

    def scan(group: str) -> tuple[PluginEntryPoint, ...]:
        calls.append(group)
        return (PluginEntryPoint("simulated", "acestep_core_simulated", Distribution("acestep-core-simulated", "0.1")),)

    monkeypatch.setattr(discovery, "scan", scan)
    return calls


def _environ(tmp_path: Path) -> dict[str, str]:
    return {"ACESTEP_CORE_CACHE_DIR": str(tmp_path / "cache")}


def test_a_second_discovery_reads_the_cache(tmp_path: Path, counted_scan: list[str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    first = discover(GROUP, environ=_environ(tmp_path), path=[str(site)])
    second = discover(GROUP, environ=_environ(tmp_path), path=[str(site)])
    assert first == second
    assert counted_scan == [GROUP]
    assert second[0].load().__name__ == "acestep_core_simulated"
    assert second[0].dist == Distribution("acestep-core-simulated", "0.1")


def test_installing_or_removing_a_distribution_scans_again(tmp_path: Path, counted_scan: list[str]) -> None:
    site = tmp_path / "site"
    site.mkdir()
    discover(GROUP, environ=_environ(tmp_path), path=[str(site)])
    installed = site / "some_tier_plugin-1.0.dist-info"
    installed.mkdir()
    os.utime(site, ns=(1, 1))  # as if installed at another time than the first scan saw
    discover(GROUP, environ=_environ(tmp_path), path=[str(site)])
    installed.rmdir()
    os.utime(site, ns=(2, 2))
    discover(GROUP, environ=_environ(tmp_path), path=[str(site)])
    assert counted_scan == [GROUP] * 3


def test_a_corrupt_or_unwritable_cache_is_ignored(tmp_path: Path, counted_scan: list[str]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    for _ in range(2):
        discover(GROUP, environ=_environ(tmp_path), path=[])
        for written in cache.iterdir():
            written.write_text("{not json")
    assert discover(GROUP, environ=_environ(tmp_path), path=[])[0].name == "simulated"
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache directory should be")
    assert discover(GROUP, environ={"ACESTEP_CORE_CACHE_DIR": str(blocked)}, path=[])[0].name == "simulated"
    assert len(counted_scan) == 4


def test_the_switch_turns_the_cache_off(tmp_path: Path, counted_scan: list[str]) -> None:
    environ = _environ(tmp_path) | {"ACESTEP_CORE_NO_CACHE": "1"}
    discover(GROUP, environ=environ, path=[])
    discover(GROUP, environ=environ, path=[])
    assert counted_scan == [GROUP, GROUP]
    assert not (tmp_path / "cache").exists()


def test_the_real_scan_finds_the_built_in_plugins() -> None:
    names = {ep.name: ep for ep in discovery.scan(GROUP)}
    assert {"cuda", "simulated", "tiers_default"} <= set(names)
    assert names["tiers_default"].dist is not None
    assert names["tiers_default"].dist.name == "acestep-core-tiers-default"


def test_editing_files_in_the_working_directory_keeps_the_cache(
    tmp_path: Path, counted_scan: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.chdir(tmp_path)
    discover(GROUP, environ=_environ(tmp_path), path=["", str(site)])
    (tmp_path / "notes.txt").write_text("a file saved in the project directory")
    os.utime(tmp_path, ns=(3, 3))
    discover(GROUP, environ=_environ(tmp_path), path=["", str(site)])
    assert counted_scan == [GROUP]


def test_two_sys_path_layouts_keep_a_cache_each(tmp_path: Path, counted_scan: list[str]) -> None:
    """The console script and ``python -m`` see different first folders: alternating must not rescan."""
    site, scripts, project = (tmp_path / name for name in ("site", "bin", "project"))
    for folder in (site, scripts, project):
        folder.mkdir()
    for _ in range(3):
        discover(GROUP, environ=_environ(tmp_path), path=[str(scripts), str(site)])
        discover(GROUP, environ=_environ(tmp_path), path=[str(project), str(site)])
    assert counted_scan == [GROUP, GROUP]
    os.utime(site, ns=(4, 4))
    discover(GROUP, environ=_environ(tmp_path), path=[str(scripts), str(site)])
    assert counted_scan == [GROUP] * 3
    assert len(list((tmp_path / "cache").iterdir())) == 2, "an install replaces its layout's file"
