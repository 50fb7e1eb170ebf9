"""`tiers compare` on two known tables, and `tiers new` writing a package that validates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acestep_core.cli import main
from acestep_core.compare import compare_tables
from acestep_core.scaffold import names_for
from acestep_core.tables import load_table

ROOT = Path(__file__).parents[1]
DEFAULT = ROOT / "plugins" / "tiers_default" / "acestep_core_tiers_default" / "tiers.toml"
EIGHT_TIER = ROOT / "examples" / "tiers_8tier" / "acestep_core_tiers_8tier" / "tiers.toml"


def test_default_vs_8tier_shows_upstreams_8_tier_changes() -> None:
    """The guide's table against upstream's 8-tier table (14c9d010, equal to main's): longer clips everywhere,
    upper-inclusive bounds (8 GB is Tier 3 there), 15.5 GB counted as 16 GB, and the 16-24 GB tier split at 20 GB."""
    comparison = compare_tables(load_table(DEFAULT), load_table(EIGHT_TIER))
    ranges = {(r.from_gb, r.to_gb): r for r in comparison.ranges}
    first = comparison.ranges[0]
    assert (first.from_gb, first.to_gb, first.tier_a, first.tier_b) == (0.0, 4.0, "tier1", "tier1")
    assert first.fields["max_duration_without_lm_s"] == (180, 360)
    assert ranges[(8.0, 8.0)].tier_b == "tier3"  # upstream's bounds include their upper end
    class_16 = ranges[(15.5, 15.75)]
    assert (class_16.tier_a, class_16.tier_b) == ("tier5", "tier6a")  # 15.5 GB is a 16 GB card upstream
    split = ranges[(16.0, 19.75)]
    assert split.tier_b == "tier6a" and split.fields["lm_models"] == (["0.6B", "1.7B", "4B"], ["0.6B", "1.7B"])
    upper = ranges[(20.0, 23.75)]
    assert upper.tier_b == "tier6b" and upper.fields["max_batch_with_lm"] == (4, 8)
    assert upper.fields["optimizations"][1]["cpu_offload"] is False
    cards = {c.from_gb: c for c in comparison.cards}
    assert cards[16].tier_b == "tier6a" and cards[20].tier_b == "tier6b" and cards[24].tier_b == "tier6b"
    assert cards[12].fields["lm_models"] == (["0.6B", "1.7B"], ["0.6B"])  # 12 GB: Tier 5 vs upstream's Tier 4
    assert cards[24].fields["recommended_lm"] == ("4B", "1.7B")


def test_a_table_compared_with_itself_is_identical(capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_tables(load_table(DEFAULT), load_table(DEFAULT)).identical
    assert main(["tiers", "compare", "default", str(DEFAULT)]) == 0
    assert "decide the same at every size" in capsys.readouterr().out


def test_compare_cli_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = tmp_path / "diff.png"
    assert main(["tiers", "compare", "default", str(EIGHT_TIER), "--json", "--plot", str(plot)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identical"] is False and report["b"]["name"] == "8tier"
    assert report["ranges"][0]["differences"]["max_duration_with_lm_s"] == {"a": 180, "b": 240}
    assert [c["from_gb"] for c in report["cards"]] == [4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 80]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000


@pytest.mark.parametrize(("argv", "named"), [(["default", "nosuch"], "B"), (["nosuch", "default"], "A")])
def test_an_unknown_table_typed_as_an_argument_is_bad_usage_naming_it(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Like a wrong ``--tiers`` (#27): the name was typed, so it is bad usage (2), and the line says which."""
    assert main(["tiers", "compare", *argv]) == 2
    expected = f"acestep-core tiers: error: {named} 'nosuch': no tier table named 'nosuch'"
    assert capsys.readouterr().err.startswith(expected)


def test_new_scaffolds_a_valid_package(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tiers", "new", "my-card", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "acestep-core-tiers-my-card"
    assert "started from 'default'" in capsys.readouterr().out
    pyproject = (root / "pyproject.toml").read_text()
    assert 'tiers_my_card = "acestep_core_tiers_my_card"' in pyproject
    table = load_table(root / "acestep_core_tiers_my_card" / "tiers.toml")
    assert table.name == "my-card" and compare_tables(load_table(DEFAULT), table).identical
    assert (root / "tests" / "test_table.py").exists() and "pip install -e ." in (root / "README.md").read_text()
    for again in (["my-card"], ["Bad Name!"]):  # never overwrites; refuses unusable names
        with pytest.raises(SystemExit) as caught:
            main(["tiers", "new", *again, "--dir", str(tmp_path)])
        assert caught.value.code == 2


def test_names_for() -> None:
    names = names_for("my-card")
    assert (names.distribution, names.module, names.entry_point) == (
        "acestep-core-tiers-my-card",
        "acestep_core_tiers_my_card",
        "tiers_my_card",
    )
