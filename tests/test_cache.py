"""Parsed TOML tables are kept in the start-up cache: the same text is never parsed twice, a changed
text is parsed again, and a bad cache file changes nothing but the time taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import acestep_core_tiers_default
import pytest
from conftest import SMALL_TABLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acestep_core import cache, discovery, tables
from acestep_core.discovery import Distribution, PluginEntryPoint, discover
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


@pytest.mark.parametrize("file", ["tiers.toml", "upstream-2026-02.toml", "upstream-2026-04.toml"])
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


def test_a_cached_value_that_fails_validation_is_a_miss(tmp_path: Path, parses: list[str]) -> None:
    """Issue #18: a cache returns what recomputing gives. An invalid cached value (the text is valid)
    used to raise TableError for a valid table; it is now a miss, parsed again from the text."""
    parse_table(SMALL_TABLE, source="mine.toml", environ=_environ(tmp_path))
    [file] = (tmp_path / "cache").iterdir()
    data = _load(file)
    data["value"]["tiers"][0]["max_batch_with_lm"] = -1
    _rewrite(file, data)  # the check recomputed: the value itself is what validation refuses
    table = parse_table(SMALL_TABLE, source="mine.toml", environ=_environ(tmp_path))
    assert table.tiers[0].max_batch_with_lm == 1 and parses == ["mine.toml", "mine.toml"]


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


# --------------------------------------------------------------------------------------------- hostile folders
# Issue #18, class 1: anything that can write the cache folder must not decide the limits, hang a
# command or cost another value its entry. Each case: what parse_table returns with the file as the
# case leaves it is exactly what parsing the text gives, and no exception escapes.


def _load(file: Path) -> dict:
    """A cache file as one mapping: its header (format, origin, check) and its value."""
    header, _, value = file.read_text().partition("\n")
    return json.loads(header) | {"value": json.loads(value)}


def _dump(file: Path, data: dict) -> None:
    """``data`` written in the file layout as it is, its check left as it was (stale if the value changed)."""
    header = {key: value for key, value in data.items() if key != "value"}
    file.write_text(json.dumps(header) + "\n" + (json.dumps(data["value"]) if "value" in data else ""))


def _rewrite(file: Path, data: dict) -> None:
    """``data`` written back as the cache writes it, check recomputed: only the value's content differs."""
    value_text = json.dumps(data["value"])
    header = {key: value for key, value in data.items() if key != "value"}
    file.write_text(json.dumps(header | {"check": cache._check(data["origin"], value_text)}) + "\n" + value_text)


def _shipped(file: str) -> str:
    return (SHIPPED / file).read_text(encoding="utf-8")


def _fresh(text: str, source: str) -> object:
    return parse_table(text, source=source, environ={"ACESTEP_CORE_NO_CACHE": "1"})


def _cache_file(tmp_path: Path, text: str, source: str) -> Path:
    parse_table(text, source=source, environ=_environ(tmp_path))
    [file] = [
        f for f in (tmp_path / "cache").iterdir() if f.name.endswith(f"toml-{zlib.crc32(source.encode()):08x}.json")
    ]
    return file


def _other_table_value(tmp_path: Path) -> dict:
    upstream = _cache_file(tmp_path / "other", _shipped("upstream-2026-02.toml"), "upstream")
    return _load(upstream)["value"]


MUTATIONS = {
    "another-valid-table-same-origin": lambda data, other: data | {"value": other},
    "one-limit-changed": lambda data, other: (
        data | {"value": data["value"] | {"tiers": [dict(t, max_batch_with_lm=64) for t in data["value"]["tiers"]]}}
    ),
    "wrong-typed-rows": lambda data, other: data | {"value": data["value"] | {"tiers": [1, "x", None]}},
    "junk-value": lambda data, other: data | {"value": "junk"},
    "null-value": lambda data, other: data | {"value": None},
    "value-missing": lambda data, other: {k: v for k, v in data.items() if k != "value"},
    "origin-of-other-text": lambda data, other: data | {"origin": [1, cache.content_hash("[table]\n")]},
    "old-layout": lambda data, other: {"origin": "text", "value": data["value"]},
    "format-from-the-future": lambda data, other: data | {"format": 99},
    "huge-int": lambda data, other: (
        data | {"value": data["value"] | {"tiers": [dict(data["value"]["tiers"][0], min_gb=10**400)]}}
    ),
}


VALID_FORGERIES = ("another-valid-table-same-origin", "one-limit-changed")
"""Valid tables: refused through their stale check. With the check recomputed by someone who read
acestep_core/cache.py they would be trusted, as PEP 552's checked .pyc files are (the module says so)."""


@pytest.mark.parametrize(
    ("case", "recheck"),
    [(case, False) for case in MUTATIONS] + [(case, True) for case in MUTATIONS if case not in VALID_FORGERIES],
)
def test_a_tampered_entry_gives_what_parsing_gives(tmp_path: Path, case: str, recheck: bool) -> None:
    """A changed value with its old check, and a value validation refuses (check recomputed or not),
    are misses: the text is parsed again."""
    text = _shipped("tiers.toml")
    file = _cache_file(tmp_path, text, "default")
    data = MUTATIONS[case](_load(file), _other_table_value(tmp_path))
    if recheck and "value" in data and "origin" in data:
        _rewrite(file, data)
    else:
        _dump(file, data)
    assert parse_table(text, source="default", environ=_environ(tmp_path)) == _fresh(text, "default")


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe\x00", b"{", b"[" * 100_000, b'{"format": 2' + b" " * (5 << 20) + b"}"])
def test_unreadable_entries_are_misses(tmp_path: Path, raw: bytes) -> None:
    text = _shipped("tiers.toml")
    _cache_file(tmp_path, text, "default").write_bytes(raw)
    assert parse_table(text, source="default", environ=_environ(tmp_path)) == _fresh(text, "default")


def test_a_link_to_dev_zero_is_not_read(tmp_path: Path, parses: list[str]) -> None:
    text = _shipped("tiers.toml")
    file = _cache_file(tmp_path, text, "default")
    file.unlink()
    file.symlink_to("/dev/zero")
    assert parse_table(text, source="default", environ=_environ(tmp_path)) == _fresh(text, "default")
    assert parses.count("default") == 3, "a miss: parsed again (and the link replaced by a real entry)"
    assert not file.is_symlink()


def test_a_cache_folder_that_is_a_file_or_a_link_elsewhere_changes_nothing(tmp_path: Path) -> None:
    text = _shipped("tiers.toml")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert parse_table(text, source="default", environ={"ACESTEP_CORE_CACHE_DIR": str(blocked)}) == _fresh(
        text, "default"
    )
    assert blocked.read_text() == "not a folder"


_CHILD = """
import sys
from acestep_core.tables import parse_table
text = open(sys.argv[1], encoding="utf-8").read()
print(parse_table(text, source="default").name)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_an_entry_never_hangs(tmp_path: Path) -> None:
    """In a child process bounded by a timeout: the old reader opened the FIFO and waited forever."""
    text = _shipped("tiers.toml")
    file = _cache_file(tmp_path, text, "default")
    file.unlink()
    os.mkfifo(file)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(SHIPPED / "tiers.toml")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**_clean_env(), "ACESTEP_CORE_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert done.returncode == 0 and done.stdout.strip() == "default", done.stderr


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}


def test_a_failed_replace_leaves_no_temporary_file(tmp_path: Path) -> None:
    text = _shipped("tiers.toml")
    file = _cache_file(tmp_path, text, "default")
    file.unlink()
    file.mkdir()  # a folder where the entry belongs: the rename onto it fails
    (file / "keep").write_text("x")
    assert parse_table(text, source="default", environ=_environ(tmp_path)) == _fresh(text, "default")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [file.name]
    assert (file / "keep").read_text() == "x"


def test_one_corrupt_entry_never_costs_another_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the plugin that registers every shipped table: a junk entry for one (junk validation
    refuses, check recomputed) used to raise TableError in register_tier_tables and lose them all."""
    monkeypatch.setenv("ACESTEP_CORE_CACHE_DIR", str(tmp_path / "cache"))
    shipped = ("tiers.toml", "upstream-2026-02.toml", "upstream-2026-04.toml")
    fresh = [_fresh(_shipped(f), f) for f in shipped]
    acestep_core_tiers_default._table.cache_clear()
    acestep_core_tiers_default.register_tier_tables()
    entries = {f.name: f for f in (tmp_path / "cache").iterdir()}
    default_entry = entries[
        f"v{cache.CACHE_FORMAT}-toml-{zlib.crc32(f'{acestep_core_tiers_default.__name__}/tiers.toml'.encode()):08x}.json"
    ]
    others = [f for f in entries.values() if f != default_entry]
    assert len(others) == len(shipped) - 1
    before = [f.read_bytes() for f in others]
    _rewrite(default_entry, _load(default_entry) | {"value": {"table": {"name": "junk"}, "tiers": []}})
    acestep_core_tiers_default._table.cache_clear()
    try:
        registered = acestep_core_tiers_default.register_tier_tables()
    finally:
        acestep_core_tiers_default._table.cache_clear()
    assert [t.name for t in registered] == ["default", "upstream-2026-02", "upstream-2026-04"]
    assert [t.tiers for t in registered] == [t.tiers for t in fresh]
    assert [f.read_bytes() for f in others] == before, "the other tables' entries are untouched"


def test_the_cli_with_a_tampered_table_entry_shows_the_shipped_limits(cli, tmp_path: Path) -> None:
    """End to end: an entry holding another valid table under the shipped text's origin (stale check)
    no longer changes the limits printed as table 'default'."""
    environ = {"ACESTEP_CORE_CACHE_DIR": str(tmp_path / "cache")}
    acestep_core_tiers_default._table.cache_clear()  # parsed in this folder, not remembered from another test
    honest = json.loads(cli("info", "--vram", "8", "--json", env=environ).out)["tier"]
    entries = list((tmp_path / "cache").glob("*toml-*.json"))
    assert entries, "the shipped tables were cached"
    other = _other_table_value(tmp_path)
    for entry in entries:
        _dump(entry, _load(entry) | {"value": other})
    acestep_core_tiers_default._table.cache_clear()
    try:
        again = json.loads(cli("info", "--vram", "8", "--json", env=environ).out)["tier"]
    finally:
        acestep_core_tiers_default._table.cache_clear()
    assert again == honest


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10_000), byte=st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_or_truncation_gives_what_parsing_gives(tmp_path: Path, cut: int, byte: int) -> None:
    text = SMALL_TABLE
    folder = tmp_path / f"c{cut}-{byte}"
    environ = {"ACESTEP_CORE_CACHE_DIR": str(folder)}
    parse_table(text, source="mine.toml", environ=environ)
    [file] = folder.iterdir()
    raw = bytearray(file.read_bytes())
    position = cut % len(raw)
    changed = raw[:position] + bytes([byte]) + raw[position + 1 :] if cut < len(raw) else raw[: cut % len(raw)]
    file.write_bytes(bytes(changed))
    assert parse_table(text, source="mine.toml", environ=environ) == _fresh(text, "mine.toml")


@pytest.mark.parametrize(
    ("value", "off"),
    [
        ("1", True),
        ("on", True),
        (" YES ", True),
        ("true", True),
        ("0", False),
        ("off", False),
        ("", False),
        ("maybe", False),
    ],
)
def test_the_no_cache_switch_reads_the_one_spelling_list(
    tmp_path: Path, parses: list[str], value: str, off: bool
) -> None:
    environ = _environ(tmp_path, ACESTEP_CORE_NO_CACHE=value)
    for _ in range(2):
        parse_table(SMALL_TABLE, source="mine.toml", environ=environ)
    assert len(parses) == (2 if off else 1)
    assert (tmp_path / "cache").exists() is not off


# --------------------------------------------------------------------------------------------- the entry-point scan
def _scan_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[str]]:
    calls: list[str] = []

    def scan(group: str) -> tuple[PluginEntryPoint, ...]:
        calls.append(group)
        return (PluginEntryPoint("simulated", "acestep_core_simulated", Distribution("acestep-core-simulated", "0.1")),)

    monkeypatch.setattr(discovery, "scan", scan)
    discover("acestep_core", environ=_environ(tmp_path), path=[])
    [file] = (tmp_path / "cache").iterdir()
    return file, calls


ROWS = {
    "name-not-a-string": [{"name": 3, "value": "acestep_core_simulated", "dist": None}],
    "value-not-a-string": [{"name": "x", "value": ["os"], "dist": None}],
    "dist-wrong-fields": [{"name": "x", "value": "m", "dist": {"name": "d", "version": "1", "evil": 1}}],
    "dist-version-int": [{"name": "x", "value": "m", "dist": {"name": "d", "version": 1}}],
    "row-not-an-object": ["simulated"],
    "rows-not-a-list": {"name": "simulated"},
    "empty-name": [{"name": " ", "value": "m", "dist": None}],
}


@pytest.mark.parametrize("case", list(ROWS))
def test_wrong_typed_scan_rows_are_scanned_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Rows of the wrong form, even with a recomputed check, used to crash every later command."""
    file, calls = _scan_file(tmp_path, monkeypatch)
    _rewrite(file, _load(file) | {"value": ROWS[case]})
    [found] = discover("acestep_core", environ=_environ(tmp_path), path=[])
    assert found.name == "simulated" and calls == ["acestep_core", "acestep_core"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_for_the_scan_never_hangs_a_command(tmp_path: Path) -> None:
    """`acestep-core info` in a child process, every cache entry replaced by a FIFO nobody writes."""
    environ = {**_clean_env(), "ACESTEP_CORE_CACHE_DIR": str(tmp_path / "cache"), "MAX_CUDA_VRAM": "8"}
    script = "import sys; from acestep_core.cli import main; sys.exit(main(sys.argv[1:]))"
    first = subprocess.run(
        [sys.executable, "-c", script, "info", "--json"], capture_output=True, text=True, timeout=120, env=environ
    )
    assert first.returncode == 0, first.stderr
    entries = list((tmp_path / "cache").iterdir())
    assert any("entry-points-" in e.name for e in entries)
    for entry in entries:
        entry.unlink()
        os.mkfifo(entry)
    again = subprocess.run(
        [sys.executable, "-c", script, "info", "--json"], capture_output=True, text=True, timeout=120, env=environ
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["tier"] == json.loads(first.stdout)["tier"]
