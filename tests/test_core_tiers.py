"""Tier selection with the default table: every boundary, the real-card tolerance, the CPU, and the
table itself against the seed document."""

from __future__ import annotations

import json
import re
from pathlib import Path

import acestep_core_tiers_default
import pytest

import acestep_core.optimize
from acestep_core import CPU, DeviceMemory, MemoryReading, render_markdown, resolve

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SEED = FIXTURES / "GPU_COMPATIBILITY.ja.md"
"""ACE-Step 1.5's GPU_COMPATIBILITY document (Japanese), copied as the project received it."""
H100 = Path(acestep_core.optimize.__file__).parent / "measurements" / "h100-2026-11-26.json"


def tier_for(make_manager, plugin) -> str:
    return resolve(manager=make_manager(plugin)).tier.name


# Simulated sizes are taken exactly: a range includes its lower bound and excludes its upper one,
# except "≤4GB" (tier 1 includes 4) and "≥24GB" (unbounded).
SIMULATED_BOUNDARIES = [
    (3.99, "tier1"),
    (4.0, "tier1"),
    (4.01, "tier2"),
    (5.99, "tier2"),
    (6.0, "tier3"),
    (6.01, "tier3"),
    (7.99, "tier3"),
    (8.0, "tier4"),
    (8.01, "tier4"),
    (11.99, "tier4"),
    (12.0, "tier5"),
    (12.01, "tier5"),
    (15.99, "tier5"),
    (16.0, "tier6"),
    (16.01, "tier6"),
    (23.99, "tier6"),
    (24.0, "unlimited"),
    (24.01, "unlimited"),
    (7.6, "tier3"),
    (15.5, "tier5"),  # no real-card tolerance for simulated sizes
    (0.5, "tier1"),
    (1000.0, "unlimited"),
]


@pytest.mark.parametrize(("gib", "tier"), SIMULATED_BOUNDARIES)
def test_simulated_sizes_are_taken_exactly(make_manager, gib: float, tier: str) -> None:
    resolution = resolve(manager=make_manager(), environ={"MAX_CUDA_VRAM": f"{gib}"})
    assert resolution.reading.simulated
    assert resolution.tier.name == tier


@pytest.mark.parametrize(
    ("gib", "tier"),
    [
        # real cards read below their class: up to 5% below a boundary counts as the boundary
        (3.79, "tier1"),
        (3.9, "tier1"),
        (4.0, "tier1"),
        (4.01, "tier2"),
        (5.69, "tier2"),
        (5.7, "tier3"),
        (6.0, "tier3"),
        (7.59, "tier3"),
        (7.6, "tier4"),
        (7.79, "tier4"),
        (7.9, "tier4"),
        (8.0, "tier4"),
        (11.39, "tier4"),
        (11.4, "tier5"),
        (11.9, "tier5"),
        (15.19, "tier5"),
        (15.2, "tier6"),
        (15.5, "tier6"),
        (15.9, "tier6"),
        (16.0, "tier6"),
        (22.79, "tier6"),
        (22.8, "unlimited"),
        (23.6, "unlimited"),
        (79.2, "unlimited"),
        (79.65, "unlimited"),
    ],
)
def test_detected_cards_land_in_their_class(make_manager, detected, gib: float, tier: str) -> None:
    assert tier_for(make_manager, detected(gib)) == tier


def test_the_seed_rule_15_5_gb_is_a_16_gb_card(make_manager, detected) -> None:
    resolution = resolve(manager=make_manager(detected(15.5)))
    assert resolution.tier.label == "Tier 6"
    assert "detected" in resolution.decisions[2].summary
    assert resolve(manager=make_manager(detected(15.5, simulated=True))).tier.label == "Tier 5"


def test_the_measured_h100_is_unlimited_through_nvml_and_torch(make_manager, detected) -> None:
    recorded = json.loads(H100.read_text())
    for total in (recorded["nvml"]["devices"][0]["v2"]["total"], recorded["torch"]["total_memory"]):
        device = DeviceMemory(backend="cuda", name="H100", index=0, total_bytes=total)
        manager = make_manager(detected(MemoryReading(device=device)))
        assert resolve(manager=manager).tier.name == "unlimited"


def test_no_accelerator_gets_tier_1(make_manager, detected) -> None:
    resolution = resolve(manager=make_manager(detected(MemoryReading(device=CPU))))
    assert resolution.tier.name == "tier1"
    assert resolution.adjusted.lm_model is None
    assert resolution.plan.value("offload.dit") == "none"


def test_nothing_detected_means_a_cpu_and_says_so(make_manager) -> None:
    resolution = resolve(manager=make_manager())
    assert resolution.reading.device == CPU
    assert resolution.tier.name == "tier1"
    assert resolution.decided_by("detect_memory") == "acestep_core"
    assert "assuming a CPU" in " ".join(resolution.warnings)


# --------------------------------------------------------------------------------------------- table
def test_default_table_is_the_seed_table_row_for_row() -> None:
    """The Markdown the data renders says what the seed document's table says (in English)."""
    table = acestep_core_tiers_default.default_table()
    rendered = _markdown_rows(render_markdown(table))
    assert [_normalise_row(row) for row in _seed_rows()] == [_normalise_row(row[:6]) for row in rendered]
    # the extra column: the LM `auto` loads, from the document's memory tips
    assert [row[6] for row in rendered] == ["-", "-", "0.6B (LM off by default)", "0.6B", "0.6B", "1.7B", "4B"]
    # and the DiTs each tier allows (XL from Tier 5, per upstream's guide column)
    two_b, xl = "turbo, base, sft", "turbo, base, sft, xl-turbo, xl-base, xl-sft"
    assert [row[7] for row in rendered] == [two_b, two_b, two_b, two_b, xl, xl, xl]


def test_default_table_values() -> None:
    table = acestep_core_tiers_default.default_table()
    rows = {
        tier.name: (
            tier.min_gb,
            tier.max_gb,
            tier.max_duration_with_lm_s,
            tier.max_duration_without_lm_s,
            tier.max_batch_with_lm,
            tier.max_batch_without_lm,
            tier.lm_models,
            dict(tier.lm_memory_gb),
            tier.lm_default_on,
        )
        for tier in table.tiers
    }
    assert rows == {
        "tier1": (0, 4, 180, 180, 1, 1, (), {}, False),
        "tier2": (4, 6, 360, 360, 1, 1, (), {}, False),
        "tier3": (6, 8, 240, 360, 1, 2, ("0.6B",), {"0.6B": 3}, False),
        "tier4": (8, 12, 240, 360, 2, 4, ("0.6B",), {"0.6B": 3}, True),
        "tier5": (12, 16, 240, 360, 2, 4, ("0.6B", "1.7B"), {"0.6B": 3, "1.7B": 8}, True),
        "tier6": (16, 24, 480, 480, 4, 8, ("0.6B", "1.7B", "4B"), {"0.6B": 3, "1.7B": 8, "4B": 12}, True),
        "unlimited": (24, None, 600, 600, 8, 8, ("0.6B", "1.7B", "4B"), {}, True),
    }
    assert table.real_card_tolerance == 0.05
    assert {t.name: t.recommended_lm for t in table.tiers} == {
        "tier1": None,
        "tier2": None,
        "tier3": "0.6B",
        "tier4": "0.6B",
        "tier5": "0.6B",
        "tier6": "1.7B",
        "unlimited": "4B",
    }
    assert all(
        tier.optimizations == {"flash_attention": True, "cpu_offload": True, "compile": True, "quantization": "int8"}
        for tier in table.tiers
    )


SEED_WORDS = {
    "LM あり": "with LM",
    "LM なし": "without LM",
    "利用不可": "unavailable",
    "オプション": "optional",
    "全モデル": "all models",
    "無制限": "unlimited",
    " 分": " min",
}


def _seed_rows() -> list[list[str]]:
    text = SEED.read_text(encoding="utf-8")
    table = text[text.index("| VRAM |") :]
    return _markdown_rows(table[: table.index("\n\n")])


def _markdown_rows(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _normalise_row(row: list[str]) -> list[str]:
    cells = []
    for cell in row:
        for japanese, english in SEED_WORDS.items():
            cell = cell.replace(japanese, english)
        cells.append(re.sub(r"\s+", " ", cell).lower())
    return cells
