"""``tiers compare --plot`` holds the line generate and calibrate hold (issue #18, class 2): nothing of
the user's is replaced without ``--overwrite`` (a file, a link's target), and the path, its format
included, is checked before the sweep starts (the sweep is a tripwire in the refusing cases)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import acestep_core.compare

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def no_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    def tripwire(*_: object, **__: object) -> None:
        raise AssertionError("the sweep started before the plot path was checked")

    monkeypatch.setattr(acestep_core.compare, "compare_tables", tripwire)


def refused(outcome, *needles: str) -> None:
    assert outcome.code == 2, outcome.text
    assert outcome.out == "" and "Traceback" not in outcome.text
    [line] = outcome.err.strip().splitlines()
    for needle in ("--plot", *needles):
        assert needle in line, (needle, line)


def compare(cli, *extra: str):
    return cli("tiers", "compare", "default", "upstream-2026-02", *extra)


def test_an_existing_file_is_not_replaced(cli, no_sweep, tmp_path: Path) -> None:
    mine = tmp_path / "diff.png"
    mine.write_bytes(b"my own picture")
    refused(compare(cli, "--plot", str(mine)), "exists", "--overwrite")
    assert mine.read_bytes() == b"my own picture"


def test_a_link_is_not_written_through(cli, no_sweep, tmp_path: Path) -> None:
    target = tmp_path / "precious.png"
    target.write_bytes(b"precious")
    link = tmp_path / "diff.png"
    link.symlink_to(target)
    refused(compare(cli, "--plot", str(link)), "symbolic link", "--overwrite")
    assert target.read_bytes() == b"precious" and link.is_symlink()


def test_a_dangling_link_is_not_followed_to_create_its_target(cli, no_sweep, tmp_path: Path) -> None:
    """savefig would have created the missing target, wherever the link points."""
    link = tmp_path / "diff.png"
    link.symlink_to(tmp_path / "elsewhere" / "made.png")
    (tmp_path / "elsewhere").mkdir()
    refused(compare(cli, "--plot", str(link)), "symbolic link")
    assert not (tmp_path / "elsewhere" / "made.png").exists()


@pytest.mark.parametrize("name", ["diff.gif", "diff.txt", "diff", "diff.png.bak", "diff.jpeg"])
def test_a_format_that_cannot_be_written_is_refused_before_the_sweep(cli, no_sweep, tmp_path: Path, name: str) -> None:
    refused(compare(cli, "--plot", str(tmp_path / name)), "names no format", ".png, .svg, .pdf")
    assert list(tmp_path.iterdir()) == []


def test_the_help_names_the_formats_and_the_flag(cli) -> None:
    outcome = cli("tiers", "compare", "--help")
    assert outcome.code == 0 and "--overwrite" in outcome.out and ".svg" in outcome.out


# --------------------------------------------------------------------------------------------- writing
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs the ml extra")


@needs_matplotlib
@pytest.mark.parametrize(("name", "magic"), [("d.png", PNG), ("d.SVG", b"<?xml"), ("d.pdf", b"%PDF")])
def test_each_format_is_written(cli, tmp_path: Path, name: str, magic: bytes) -> None:
    outcome = compare(cli, "--plot", str(tmp_path / name))
    assert outcome.code == 0, outcome.text
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [name], "no temporary file left"


@needs_matplotlib
def test_overwrite_replaces_a_file(cli, tmp_path: Path) -> None:
    mine = tmp_path / "diff.png"
    mine.write_bytes(b"old")
    assert compare(cli, "--plot", str(mine), "--overwrite").code == 0
    assert mine.read_bytes().startswith(PNG)


@needs_matplotlib
def test_overwrite_replaces_a_link_not_its_target(cli, tmp_path: Path) -> None:
    target = tmp_path / "precious.png"
    target.write_bytes(b"precious")
    link = tmp_path / "diff.png"
    link.symlink_to(target)
    assert compare(cli, "--plot", str(link), "--overwrite").code == 0
    assert target.read_bytes() == b"precious"
    assert not link.is_symlink() and link.read_bytes().startswith(PNG)


@needs_matplotlib
def test_a_file_that_appears_during_the_sweep_is_not_replaced(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "diff.png"
    real = acestep_core.compare.compare_tables

    def racing(*args: object, **kwargs: object) -> object:
        mine.write_bytes(b"written meanwhile")
        return real(*args, **kwargs)

    monkeypatch.setattr(acestep_core.compare, "compare_tables", racing)
    refused(compare(cli, "--plot", str(mine)), "appeared", "--overwrite")
    assert mine.read_bytes() == b"written meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["diff.png"]


@needs_matplotlib
def test_a_failed_drawing_leaves_nothing(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    def broken(*_: object, **__: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    outcome = compare(cli, "--plot", str(tmp_path / "diff.png"))
    assert outcome.code == 1 and "Traceback" not in outcome.text and "disk full" in outcome.err
    assert list(tmp_path.iterdir()) == []
