"""Parsed TOML tables are kept in the start-up cache: the same text is never parsed twice, a changed
text is parsed again, and a bad cache file changes nothing but the time taken."""

from __future__ import annotations

import json
from pathlib import Path

import acestep_core_tiers_default
import pytest
from conftest import SMALL_TABLE

from acestep_core import tables
from acestep_core.tables import TableError, parse_table

SHIPPED = Path(acestep_core_tiers_default.__file__).parent


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the TOML parses (the cache's misses)."""
    calls: list[str] = []
    real = tables._parse_toml

    def counted(text: str, source: str) -> dict:
        calls.append(source)
        return real(text, source)

    monkeypatch.setattr(tables, "_parse_toml", counted)
    return calls


def _environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"ACESTEP_CORE_CACHE_DIR": str(tmp_path / "cache"), **extra}


@pytest.mark.parametrize("file", ["tiers.toml", "upstream-2026-02.toml"])
def test_a_shipped_table_from_the_cache_equals_the_parsed_one(tmp_path: Path, parses: list[str], file: str) -> None:
    text = (SHIPPED / file).read_text(encoding="utf-8")
    first = parse_table(text, source=file, environ=_environ(tmp_path))
    second = parse_table(text, source=file, environ=_environ(tmp_path))
    assert parses == [file], "the second start-up parses no TOML"
    assert second == first and second.tiers == first.tiers


def test_an_edited_table_is_parsed_again_and_replaces_its_file(tmp_path: Path, parses: list[str]) -> None:
    parse_table(SMALL_TABLE, source="mine.toml", environ=_environ(tmp_path))
    edited = SMALL_TABLE.replace('name = "small"', 'name = "small-edited"', 1)
    assert parse_table(edited, source="mine.toml", environ=_environ(tmp_path)).name == "small-edited"
    assert parse_table(edited, source="mine.toml", environ=_environ(tmp_path)).name == "small-edited"
    assert parses == ["mine.toml", "mine.toml"]
    assert len(list((tmp_path / "cache").iterdir())) == 1


@pytest.mark.parametrize(
    "content",
    ["{not json", "[]", "null", '{"origin": 1}', "[" * 100_000, None],
    ids=["truncated", "list", "null", "wrong-origin", "deep", "hostile-value"],
)
def test_a_bad_cache_file_is_parsed_around(tmp_path: Path, parses: list[str], content: str | None) -> None:
    parse_table(SMALL_TABLE, source="mine.toml", environ=_environ(tmp_path))
    [file] = (tmp_path / "cache").iterdir()
    if content is None:  # the right origin, but a value that is not a table: nested past the limit
        deep: object = {}
        for _ in range(50):
            deep = {"x": deep}
        content = json.dumps({"origin": SMALL_TABLE, "value": deep})
    file.write_text(content)
    assert parse_table(SMALL_TABLE, source="mine.toml", environ=_environ(tmp_path)).name == "small"
    assert parses == ["mine.toml", "mine.toml"]


def test_a_cached_value_is_still_validated(tmp_path: Path) -> None:
    parse_table(SMALL_TABLE, source="mine.toml", environ=_environ(tmp_path))
    [file] = (tmp_path / "cache").iterdir()
    data = json.loads(file.read_text())
    data["value"]["tiers"][0]["max_batch_with_lm"] = -1
    file.write_text(json.dumps(data))
    with pytest.raises(TableError, match="max_batch_with_lm"):
        parse_table(SMALL_TABLE, source="mine.toml", environ=_environ(tmp_path))


def test_the_switch_turns_the_cache_off(tmp_path: Path, parses: list[str]) -> None:
    environ = _environ(tmp_path, ACESTEP_CORE_NO_CACHE="1")
    for _ in range(2):
        parse_table(SMALL_TABLE, source="mine.toml", environ=environ)
    assert parses == ["mine.toml", "mine.toml"]
    assert not (tmp_path / "cache").exists()


def test_invalid_toml_is_reported_and_not_cached(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="not valid TOML"):
        parse_table("[table\nname = 1", source="broken.toml", environ=_environ(tmp_path))
    assert not (tmp_path / "cache").exists()
