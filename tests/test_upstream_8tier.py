"""examples/tiers_8tier is upstream's 8-tier table at commit 14c9d010, number for number.

The fixture is transcribed from ace-step/ACE-Step-1.5, acestep/gpu_config.py at commit
14c9d010162455d2825d625fc0321b49e3139d6a (GPU_TIER_CONFIGS and get_gpu_tier), in upstream's own
names; this test maps each upstream field onto the table's and compares them one by one. That commit
is a branch built on early-March 2026 main, not April main; its table equals main's (592c315, which
the built-in ``upstream-2026-04`` ships and ``tests/test_upstream_2026_04.py`` checks), as the last
test here shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import device_reading

from acestep_core import load_table, resolve
from acestep_core.compat import gpu_config as gc

ROOT = Path(__file__).parents[1]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "upstream_gpu_config_14c9d010.json").read_text(encoding="utf-8"))
MAIN = json.loads((ROOT / "tests" / "fixtures" / "upstream_gpu_config_592c315.json").read_text(encoding="utf-8"))
EIGHT_TIER = ROOT / "examples" / "tiers_8tier" / "acestep_core_tiers_8tier" / "tiers.toml"
TABLE = load_table(EIGHT_TIER)
UPSTREAM = FIXTURE["GPU_TIER_CONFIGS"]
PREFIX = "acestep-5Hz-lm-"


def upstream_tier(gb: float) -> str:
    """The fixture's get_gpu_tier rules, applied in order."""
    for test, limit, tier in FIXTURE["get_gpu_tier"]:
        if test == "else" or (test == "le" and gb <= limit) or (test == "lt" and gb < limit):
            return tier
    raise AssertionError("the fixture's rules end with 'else'")


def test_the_fixture_cites_its_source() -> None:
    source = FIXTURE["source"]
    assert source["repository"] == "ace-step/ACE-Step-1.5" and source["path"] == "acestep/gpu_config.py"
    assert len(source["commit"]) == 40 and source["commit"] in EIGHT_TIER.read_text(encoding="utf-8")


def test_same_tiers_in_the_same_order() -> None:
    assert [tier.name for tier in TABLE.tiers] == list(UPSTREAM)


@pytest.mark.parametrize("name", list(UPSTREAM))
def test_each_tier_field_by_field(name: str) -> None:
    up, tier = UPSTREAM[name], TABLE.tier(name)
    fields = {
        "max_duration_with_lm": tier.max_duration_with_lm_s,
        "max_duration_without_lm": tier.max_duration_without_lm_s,
        "max_batch_size_with_lm": tier.max_batch_with_lm,
        "max_batch_size_without_lm": tier.max_batch_without_lm,
        "init_lm_default": tier.lm_default_on,
        "available_lm_models": [PREFIX + size for size in tier.lm_models],
        "recommended_lm_model": PREFIX + tier.recommended_lm if tier.recommended_lm else "",
        "offload_to_cpu_default": tier.optimizations["cpu_offload"],
        "offload_dit_to_cpu_default": tier.optimizations["dit_cpu_offload"],
        "quantization_default": tier.optimizations["quantization"] != "none",
        "compile_model_default": tier.optimizations["compile"],
        "lm_memory_gb": dict(tier.lm_memory_gb),
    }
    for key, ours in fields.items():
        assert ours == up[key], f"{name}.{key}: table {ours!r}, upstream {up[key]!r}"
    # what the table does not model per tier: upstream's backend keys are the same on every tier
    assert (up["lm_backend_restriction"], up["recommended_backend"]) == ("all", "vllm")
    assert set(up) == set(fields) | {"lm_backend_restriction", "recommended_backend"}


SIZES = [0, 0.5, 4, 4.01, 6, 6.01, 8, 8.01, 12, 12.01, 15.49, 15.5, 15.99, 16, 19.99, 20, 20.01, 24, 24.01, 48]


@pytest.mark.parametrize("gb", SIZES)
def test_tier_placement_matches_upstreams_rule(gb: float) -> None:
    """Through the plugins (resolve with the example's table), simulated sizes as upstream treats them."""
    resolution = resolve(
        tiers=str(EIGHT_TIER), reading=device_reading(gb, simulated=True) if gb > 0 else None, environ={}
    )
    if gb > 0:
        assert resolution.tier.name == upstream_tier(gb)
    assert TABLE.tier_for(gb).name == upstream_tier(gb)


@pytest.mark.parametrize("gb", [8, 15.5, 18, 22])
def test_the_compat_api_on_the_8tier_table_gives_upstreams_config(monkeypatch: pytest.MonkeyPatch, gb: float) -> None:
    monkeypatch.setenv("ACESTEP_CORE_TIERS", str(EIGHT_TIER))
    config = gc.get_gpu_config(gb)
    up = UPSTREAM[upstream_tier(gb)]
    assert config.tier == upstream_tier(gb)
    assert (
        config.max_duration_without_lm == up["max_duration_without_lm"]
        and config.max_batch_size_with_lm == up["max_batch_size_with_lm"]
    )
    assert (
        config.available_lm_models == up["available_lm_models"]
        and config.recommended_lm_model == up["recommended_lm_model"]
    )
    assert config.init_lm_default == up["init_lm_default"]
    assert gc.VRAM_16GB_MIN_GB == 15.5
    assert gc.GPU_TIER_LABELS["tier6a"] == "tier6a (16-20GB)"


def test_the_branchs_table_equals_mains_and_the_built_in_upstream_2026_04() -> None:
    """14c9d010's transcribed GPU_TIER_CONFIGS equals what main's module (592c315) returned when run, and
    the example's table equals the built-in one tier for tier, but for the LM ratio floors (0.1; 0.2 from
    24 GB) the built-in adds from upstream's get_lm_gpu_memory_ratio."""
    import dataclasses

    import acestep_core_tiers_default

    assert MAIN["constants"]["GPU_TIER_CONFIGS"] == UPSTREAM
    built_in = acestep_core_tiers_default.upstream_main_table().tiers
    assert {t.lm_memory_ratio_min for t in built_in} == {((0.0, 0.1), (24.0, 0.2))}
    assert tuple(dataclasses.replace(t, lm_memory_ratio_min=()) for t in built_in) == TABLE.tiers
