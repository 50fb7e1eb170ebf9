"""`tiers validate`: every broken table is a clear error (tier, field, fix), never a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acestep_core.cli import main
from acestep_core.tables import TableError, load_table, parse_table, table_to_toml

DEFAULT = Path(__file__).parents[1] / "plugins" / "tiers_default" / "acestep_core_tiers_default" / "tiers.toml"
EIGHT_TIER = Path(__file__).parents[1] / "examples" / "tiers_8tier" / "acestep_core_tiers_8tier" / "tiers.toml"
GOOD = DEFAULT.read_text(encoding="utf-8")


def edit(old: str, new: str, count: int = 1) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, count)


BROKEN: dict[str, tuple[str, str, str]] = {
    # name: (text, the tier.field the problem must name, words in the message)
    "gap": (edit("min_gb = 8\n", "min_gb = 9\n"), "tier4.min_gb", "gap"),
    "overlap": (edit("min_gb = 8\n", "min_gb = 7\n"), "tier4.min_gb", "overlap"),
    "decreasing limit": (
        edit('max_batch_without_lm = 4\nlm_models = ["0.6B"]', 'max_batch_without_lm = 1\nlm_models = ["0.6B"]'),
        "tier4.max_batch_without_lm",
        "must not fall",
    ),
    "oversize LM allocation": (
        edit('lm_memory_gb = { "0.6B" = 3 }', 'lm_memory_gb = { "0.6B" = 7 }'),
        "tier3.lm_memory_gb",
        "smallest device",
    ),
    "bad type": (
        edit("max_batch_with_lm = 2", 'max_batch_with_lm = "two"'),
        "tier4.max_batch_with_lm",
        "is not an integer",
    ),
    "unknown key": (edit('label = "Tier 4"', 'label = "Tier 4"\nvram = 8'), "tier4.vram", "unknown key"),
    "unknown optimization": (edit("compile = true", "compyle = true"), "tier1.optimizations.compyle", "unknown key"),
    "duration out of range": (
        edit("max_duration_with_lm_s = 180", "max_duration_with_lm_s = 5"),
        "tier1.max_duration_with_lm_s",
        "outside 10-600",
    ),
    "batch zero": (edit("max_batch_with_lm = 1", "max_batch_with_lm = 0"), "tier1.max_batch_with_lm", "below 1"),
    "duplicate name": (edit('name = "tier2"', 'name = "tier1"'), "tier1.name", "more than one tier"),
    "bounded last tier": (
        GOOD.rstrip().replace(
            'name = "unlimited"\nlabel = "Unlimited"\nmin_gb = 24',
            'name = "unlimited"\nlabel = "Unlimited"\nmin_gb = 24\nmax_gb = 80',
        ),
        "unlimited.max_gb",
        "larger devices",
    ),
    "empty file": ("", "table", "empty"),
    "not TOML": ("this is = = not toml [", "table", "not valid TOML"),
    "no tiers": ('[table]\nname = "x"\n', "tiers", "no [[tiers]]"),
    "tiers not tables": ('tiers = [1, 2]\n[table]\nname = "x"\n', "tiers[0]", "is not a table"),
    "nan size": (edit("min_gb = 8\n", "min_gb = nan\n"), "tier4.min_gb", "finite"),
    "recommended LM not allowed": (
        edit(
            'max_batch_without_lm = 4\nlm_models = ["0.6B"]\nlm_default_on = true\nlm_memory_gb = { "0.6B" = 3 '
            '}\nrecommended_lm = "0.6B"',
            'max_batch_without_lm = 4\nlm_models = ["0.6B"]\nlm_default_on = true\nlm_memory_gb = { "0.6B" = 3 '
            '}\nrecommended_lm = "1.7B"',
        ),
        "tier4.recommended_lm",
        "not among this tier's lm_models",
    ),
    "recommended LM on a tier with none": (
        edit('name = "tier2"\nlabel = "Tier 2"', 'name = "tier2"\nlabel = "Tier 2"\nrecommended_lm = "0.6B"'),
        "tier2.recommended_lm",
        "not among",
    ),
    "tier id with a space": (edit('name = "tier2"', 'name = "tier 2"'), "tier 2.name", "not a stable id"),
    "class tolerance on the first tier": (
        edit('name = "tier1"\nlabel = "Tier 1"', 'name = "tier1"\nlabel = "Tier 1"\nclass_tolerance_gb = 0.5'),
        "tier1.class_tolerance_gb",
        "no lower boundary",
    ),
    "class tolerance past the tier below": (
        edit('name = "tier6"\nlabel = "Tier 6"', 'name = "tier6"\nlabel = "Tier 6"\nclass_tolerance_gb = 4'),
        "tier6.class_tolerance_gb",
        "whole range",
    ),
    "class tolerance below an included bound": (
        edit('name = "tier2"\nlabel = "Tier 2"', 'name = "tier2"\nlabel = "Tier 2"\nclass_tolerance_gb = 0.5'),
        "tier2.class_tolerance_gb",
        "includes 4",
    ),
    "ratio steps out of order": (
        edit(
            'name = "tier6"\nlabel = "Tier 6"',
            'name = "tier6"\nlabel = "Tier 6"\nlm_memory_ratio_min = [[24, 0.2], [0, 0.1]]',
        ),
        "tier6.lm_memory_ratio_min",
        "ascend",
    ),
    "ratio floor above ceiling": (
        edit(
            'name = "tier6"\nlabel = "Tier 6"',
            'name = "tier6"\nlabel = "Tier 6"\nlm_memory_ratio_min = 0.5\nlm_memory_ratio_max = 0.4',
        ),
        "tier6.lm_memory_ratio_min",
        "above the ceiling",
    ),
    "inclusive unbounded tier": (
        edit(
            'name = "unlimited"\nlabel = "Unlimited"', 'name = "unlimited"\nlabel = "Unlimited"\nmax_inclusive = true'
        ),
        "unlimited.max_inclusive",
        "no upper bound",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_table_is_a_clear_error(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, where, words = BROKEN[case]
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TableError) as caught:
        load_table(path)
    named = [p for p in caught.value.problems if str(p).startswith(where + ":")]
    assert named, f"no problem at {where}: {caught.value}"
    assert any(words in p.message for p in named)
    assert all(p.fix for p in caught.value.problems)
    assert main(["tiers", "validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{where}: " in out and "fix:" in out
    assert main(["tiers", "validate", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False and {"tier", "field", "message", "fix"} <= set(report["problems"][0])


def test_binary_and_missing_files_are_errors(tmp_path: Path) -> None:
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(TableError, match="not a text file"):
        load_table(binary)
    with pytest.raises(TableError, match="cannot read"):
        load_table(tmp_path / "missing.toml")
    with pytest.raises(TableError, match="cannot read"):
        load_table(tmp_path)


def test_shipped_tables_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tiers", "validate", str(DEFAULT), str(EIGHT_TIER)]) == 0
    out = capsys.readouterr().out
    assert "table 'default', 7 tiers" in out and "table '8tier', 8 tiers" in out


def test_written_tables_read_back_equal() -> None:
    table = load_table(EIGHT_TIER)
    again = parse_table(table_to_toml(table), source=table.source)
    assert again == table


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_no_mutation_of_a_table_crashes_the_validator(data: st.DataObject) -> None:
    """Replace one value anywhere with anything TOML can hold: a table or a TableError, nothing else."""
    lines = GOOD.splitlines()
    candidates = [i for i, line in enumerate(lines) if " = " in line and not line.startswith("#")]
    index = data.draw(st.sampled_from(candidates))
    key = lines[index].split(" = ")[0]
    value = data.draw(
        st.sampled_from(
            [
                "-1",
                "0",
                "1e9",
                "inf",
                "nan",
                "true",
                '"x"',
                "[]",
                '[1, "0.6B"]',
                "{}",
                '{ "0.6B" = -2 }',
                "{ a = 1 }",
                "2.5",
                '"4B"',
            ]
        )
    )
    lines[index] = f"{key} = {value}"
    try:
        parse_table("\n".join(lines))
    except TableError as error:
        assert error.problems and all(p.message and p.fix for p in error.problems)


@pytest.mark.parametrize(
    "path",
    [DEFAULT, DEFAULT.with_name("upstream-2026-02.toml"), DEFAULT.with_name("upstream-2026-04.toml"), EIGHT_TIER],
)
def test_shipped_tables_round_trip_with_their_new_fields(path: Path) -> None:
    """recommended_lm, class_tolerance_gb, the LM ratio bounds and monotone_limits survive writing
    and re-reading, and validation of a table built in code."""
    from dataclasses import replace

    from acestep_core.tables import validate_table

    table = load_table(path)
    again = parse_table(table_to_toml(table), source=table.source)
    assert again == table
    assert replace(validate_table(table), source=table.source) == table
