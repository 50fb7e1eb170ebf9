"""The rules a tier table keeps beyond its schema, one function each (issue #20), and the real-card
tolerance held to each boundary it widens, as ``class_tolerance_gb`` is (issue #18, class 6)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from acestep_core_tiers_default import default_table

from acestep_core import GIB
from acestep_core.tables import SANITY_RULES, TableShape, check_table_sanity, load_table, table_to_toml
from acestep_core.types import Tier, TierTable

DEFAULT = default_table()


def _edit(position: int, **changes: object) -> Callable[[list[Tier]], list[Tier]]:
    def edit(tiers: list[Tier]) -> list[Tier]:
        tiers[position] = dataclasses.replace(tiers[position], **changes)
        return tiers

    return edit


BROKEN: dict[str, Callable[[list[Tier]], list[Tier]]] = {
    "_unique_names": _edit(1, name="tier1"),
    "_starts_at_zero": _edit(0, min_gb=1.0),
    "_contiguous": _edit(3, min_gb=9.0),
    "_class_tolerance_within_the_tier_below": _edit(4, class_tolerance_gb=5.0),
    "_monotone_limits": _edit(4, max_batch_without_lm=1),
    "_keeps_lm_models": _edit(4, lm_models=()),
    "_last_unbounded": _edit(6, max_gb=80.0),
    "_max_above_min": _edit(2, max_gb=6.0),
    "_inclusive_needs_a_bound": _edit(6, max_inclusive=True),
    "_limits_in_range": _edit(2, max_duration_without_lm_s=5),
    "_lm_memory_for_allowed_models": _edit(3, lm_memory_gb={"0.6B": 3.0, "4B": 3.0}),
    "_lm_memory_fits_the_smallest_card": _edit(3, lm_memory_gb={"0.6B": 9.0}),
    "_first_tier_has_no_class_tolerance": _edit(0, class_tolerance_gb=0.5),
    "_lm_default_needs_an_lm": _edit(1, lm_default_on=True),
}
"""Per rule, a default table broken so that this rule speaks."""
TOLERANCE_RULE = "_real_card_tolerance_within_the_tier_below"


def test_every_rule_is_one_function_of_the_list_and_each_is_reached() -> None:
    assert {rule.__name__ for rule in SANITY_RULES} == set(BROKEN) | {TOLERANCE_RULE}
    assert check_table_sanity(list(DEFAULT.tiers), real_card_tolerance=DEFAULT.real_card_tolerance) == []


@pytest.mark.parametrize("rule", SANITY_RULES, ids=lambda rule: rule.__name__)
def test_each_rule_finds_what_it_is_for(rule) -> None:
    name = rule.__name__
    if name == TOLERANCE_RULE:
        shape = TableShape(DEFAULT.tiers, True, 0.3)
    else:
        shape = TableShape(tuple(BROKEN[name](list(DEFAULT.tiers))))
    found = list(rule(shape))
    assert found, f"{name} said nothing about the table broken for it"
    everything = check_table_sanity(list(shape.tiers), real_card_tolerance=shape.real_card_tolerance)
    assert all(problem in everything for problem in found)


# --------------------------------------------------------------------------------------------- the tolerance
def _table(tmp_path: Path, tolerance: float, table: TierTable = DEFAULT) -> Path:
    text = table_to_toml(table).replace(
        f"real_card_tolerance = {table.real_card_tolerance:g}", f"real_card_tolerance = {tolerance!r}"
    )
    path = tmp_path / "t.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("tolerance", "boundaries"),
    # the default table's widened boundaries and the range below each: 6 (2 GB), 8 (2), 12 (4), 16 (4), 24 (8)
    [
        (0.25, ["8", "16"]),
        (0.3, ["8", "16"]),
        (0.34, ["6", "8", "12", "16", "24"]),
        (0.49, ["6", "8", "12", "16", "24"]),
    ],
)
def test_a_tolerance_that_jumps_a_tier_is_refused_at_each_boundary(
    cli, tmp_path: Path, tolerance: float, boundaries: list[str]
) -> None:
    path = _table(tmp_path, tolerance)
    outcome = cli("tiers", "validate", str(path), "--json")
    report = json.loads(outcome.out)
    assert outcome.code == 1 and not report["valid"]
    named = [p for p in report["problems"] if p["field"] == "real_card_tolerance"]
    assert [p["message"].split("boundary ")[1].split(" GB")[0] for p in named] == boundaries
    assert all(p["fix"] == "use less than 0.25" for p in named)


def test_the_refusal_names_the_card_that_would_jump(cli, tmp_path: Path) -> None:
    outcome = cli("tiers", "validate", str(_table(tmp_path, 0.25)))
    assert "a detected 12 GB card would get tier6" in outcome.out and "fix: use less than 0.25" in outcome.out


def test_a_tolerance_that_jumps_a_tier_is_never_used(cli, tmp_path: Path) -> None:
    """Before: validate passed 0.25 and a detected 12 GiB card got Tier 6. Now the table is refused."""
    outcome = cli("info", "--tiers", str(_table(tmp_path, 0.25)))
    assert outcome.code == 1 and "real_card_tolerance" in outcome.err and "Traceback" not in outcome.text


@pytest.mark.parametrize("tolerance", [0.0, 0.05, 0.2, 0.2499])
def test_a_tolerance_within_every_tier_is_valid(tmp_path: Path, tolerance: float) -> None:
    table = load_table(_table(tmp_path, tolerance))
    assert table.real_card_tolerance == tolerance
    for lower, upper in zip(table.tiers, table.tiers[1:], strict=False):
        if lower.max_inclusive:
            continue
        below = upper.min_gb * (1 - tolerance) + 1e-6
        assert table.tier_for(below, detected=True) is upper, "the tolerance widens the boundary"
        start = lower.min_gb + 1e-6  # (Tier 2 starts just above the 4 GB Tier 1 includes)
        assert table.tier_for(start, detected=True) is lower, "and never reaches the tier below's start"


def test_a_boundary_the_tier_below_includes_is_not_widened(tmp_path: Path) -> None:
    """Tier 1 includes 4 GB: a size just below 4 is Tier 1 whatever the tolerance, so no range applies."""
    two = TierTable(
        name="two",
        tiers=(dataclasses.replace(DEFAULT.tiers[0]), dataclasses.replace(DEFAULT.tiers[1], max_gb=None)),
        real_card_tolerance=0.45,
    )
    assert load_table(_table(tmp_path, 0.45, two)).real_card_tolerance == 0.45


# --------------------------------------------------------------------------------------------- exact sizes
@pytest.mark.parametrize("boundary", [6, 8, 12, 16, 24])
def test_a_simulated_size_one_byte_below_a_boundary_is_the_tier_below(boundary: int) -> None:
    """A 1e-9 GiB slack once put 8 GiB − 1 byte (simulated, no tolerance) in the 8 GB tier."""
    below = (boundary * GIB - 1) / GIB
    exact = DEFAULT.tier_for(boundary, detected=False)
    assert DEFAULT.tier_for(below, detected=False) is not exact
    assert DEFAULT.tier_for(below, detected=True) is exact, "a detected card keeps its 5 %"


def test_the_cli_takes_a_simulated_size_exactly(cli) -> None:
    below = f"{(8 * GIB - 1) / GIB!r}"
    assert json.loads(cli("info", "--json", "--vram", below).out)["tier"]["name"] == "tier3"
    assert json.loads(cli("info", "--json", "--vram", "8").out)["tier"]["name"] == "tier4"


def test_a_table_without_tolerance_takes_detected_sizes_exactly() -> None:
    exact = dataclasses.replace(DEFAULT, real_card_tolerance=0.0)
    assert exact.tier_for((8 * GIB - 1) / GIB, detected=True).name == "tier3"
