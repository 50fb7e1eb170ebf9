"""Hostile input to the compat module (issue #18, item 3): it answers wherever upstream answers.

Upstream's ``gpu_config`` compares numbers, so every real number gets a tier and a config there:
infinite, huge (1e299 GB and beyond, integers too large for a float), NaN, tiny positive, negative and
zero sizes. The compat module must give those answers, not an ``OverflowError`` or ``ValueError`` in
Python's words; a bad ``MAX_*_VRAM`` must leave a log record when ``get_gpu_config()`` ignores it, as
upstream logs it; and no config a caller builds can make ``get_recommended_lm_model`` name a model the
config does not list.
"""

from __future__ import annotations

import logging
import math
import sys

import pytest

import acestep_core.plugins
from acestep_core.compat import gpu_config as gc
from acestep_core.compat.gpu_config import GPUConfig

TABLES = ["default", "upstream-2026-02", "upstream-2026-04"]
LM = "acestep-5Hz-lm-"
LAST = object()
FIRST = object()
# size → where upstream's comparisons put it: the last tier (every "<=" false, or above all), or the first
EXTREMES: list[tuple[object, object]] = [
    (math.inf, LAST),
    (math.nan, LAST),
    (1e299, LAST),
    (1e300, LAST),
    (sys.float_info.max, LAST),
    (10**400, LAST),
    (2**1024, LAST),
    (1048577, LAST),
    (-math.inf, FIRST),
    (-(10**400), FIRST),
    (-1e-300, FIRST),
    (-0.0, FIRST),
    (0, FIRST),
    (1e-300, FIRST),
    (5e-324, FIRST),
    (1e-9, FIRST),
    (True, FIRST),
]


@pytest.fixture(autouse=True)
def machine(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    monkeypatch.setattr(acestep_core.plugins, "_default", make_manager())
    monkeypatch.setattr(gc, "_global_config", None)
    monkeypatch.setattr(gc, "_tier_configs", {})


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize(("size", "where"), EXTREMES, ids=[repr(size)[:20] for size, _ in EXTREMES])
def test_every_number_gets_a_tier_a_config_and_a_ratio(monkeypatch: pytest.MonkeyPatch, table, size, where) -> None:
    monkeypatch.setenv("ACESTEP_CORE_TIERS", table)
    tiers = list(gc.GPU_TIER_LABELS)
    expected = tiers[-1] if where is LAST else tiers[0]
    assert gc.get_gpu_tier(size) == expected
    config = gc.get_gpu_config(size)
    assert config.tier == expected
    nan = isinstance(size, float) and math.isnan(size)
    assert config.gpu_memory_gb is size or (nan and math.isnan(config.gpu_memory_gb))  # as given, as upstream
    for path in (f"{LM}0.6B", f"{LM}1.7B", f"{LM}4B", "other"):
        ratio, target = gc.get_lm_gpu_memory_ratio(path, size)
        assert isinstance(ratio, float) and 0 <= ratio <= 0.9, (path, ratio)
        assert isinstance(target, float) and (math.isnan(target) or target >= 0), (path, target)
    ok, message = gc.check_duration_limit(10**6, config, True)
    assert ok is False and "GB)" in message
    assert gc.check_batch_size_limit(10**6, config, False)[0] is False
    supported, message = gc.is_lm_model_supported(f"{LM}0.6B", config)
    assert supported is bool(config.available_lm_models) and (message == "") is supported
    gc.print_gpu_config_info(config)


@pytest.mark.parametrize("table", TABLES)
def test_upstreams_own_figures_at_the_extremes(monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    """The values upstream computes there: its floors 0.1 (below 24 GB, NaN, no GPU) and 0.2 (from 24 GB)."""
    monkeypatch.setenv("ACESTEP_CORE_TIERS", table)
    if table == "default":  # the guide's table has no floor: no GPU, no share; unlimited: half of the device
        assert gc.get_lm_gpu_memory_ratio(f"{LM}4B", 0) == (0.0, 12.0)
        assert gc.get_lm_gpu_memory_ratio(f"{LM}4B", math.inf) == (0.5, math.inf)
        return
    target = 12.0 if table == "upstream-2026-02" else 8.0
    assert gc.get_lm_gpu_memory_ratio(f"{LM}4B", math.inf) == (0.2, target)
    assert gc.get_lm_gpu_memory_ratio(f"{LM}4B", 10**400) == (0.2, target)
    assert gc.get_lm_gpu_memory_ratio(f"{LM}4B", math.nan) == (0.1, target)
    assert gc.get_lm_gpu_memory_ratio(f"{LM}4B", -1) == (0.1, target)
    assert gc.get_lm_gpu_memory_ratio(f"{LM}4B", 0) == (0.1, target)  # upstream divides by zero here
    assert gc.get_lm_gpu_memory_ratio(f"{LM}4B", 1e-300) == (0.9, target)


@pytest.mark.parametrize("not_a_number", ["8", b"8", None, [8], {"gb": 8}, 8j, object()])
def test_what_is_not_a_number_is_refused_as_upstreams_comparisons_refuse_it(not_a_number: object) -> None:
    with pytest.raises(TypeError, match="must be a number of GB"):
        gc.get_gpu_tier(not_a_number)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a number of GB"):
        gc.get_lm_gpu_memory_ratio(f"{LM}0.6B", not_a_number)  # type: ignore[arg-type]
    if not_a_number is not None:  # None is get_gpu_config's "detect"
        with pytest.raises(TypeError, match="must be a number of GB"):
            gc.get_gpu_config(not_a_number)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------- bad variables
@pytest.mark.parametrize("variable", ["MAX_CUDA_VRAM", "MAX_MPS_VRAM", "MAX_XPU_VRAM"])
@pytest.mark.parametrize("value", ["abc", "", "8GB", "-1", "0", "nan", "inf", "1e300", "1e-300", "0x8", " "])
def test_a_bad_variable_ignored_by_get_gpu_config_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    for call in (gc.get_gpu_config, gc.get_global_gpu_config, gc.get_gpu_memory_gb):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=gc.__name__):
            call()
        records = [r for r in caplog.records if r.levelno == logging.WARNING and variable in r.getMessage()]
        assert records, f"{call.__name__} ignored {variable}={value!r} without a word"
        assert "ignored" in records[0].getMessage()


def test_a_good_variable_is_logged_as_a_simulation_by_get_gpu_memory_gb(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Upstream logs "DEBUG MODE: Simulating …" from its get_gpu_memory_gb(); get_gpu_config() stays silent
    about a simulation that works (logging costs its cold start-up), never about one that is ignored."""
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    with caplog.at_level(logging.WARNING, logger=gc.__name__):
        gc.get_gpu_memory_gb()
        gc.get_gpu_memory_gb()
        gc.get_gpu_config()
    assert sum("GPU memory simulation is on (MAX_CUDA_VRAM=8)" in m for m in caplog.messages) == 2


# --------------------------------------------------------------------------------------------- built by hand
def _built(models: list[str], recommended: object) -> GPUConfig:
    return GPUConfig(
        "tier5",
        14.0,
        240,
        360,
        2,
        4,
        True,
        models,
        recommended_lm_model=recommended,
        lm_memory_gb={},  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize(
    "recommended",
    [f"{LM}4B", f"{LM}4B-v9", "acestep-5Hz-lm-1.7", "", None, 42, f" {LM}0.6B", f"{LM}0.6B".upper(), "1.7B"],
)
def test_a_hand_built_config_cannot_recommend_a_model_it_does_not_list(
    monkeypatch: pytest.MonkeyPatch, table: str, recommended: object
) -> None:
    monkeypatch.setenv("ACESTEP_CORE_TIERS", table)
    models = [f"{LM}0.6B", f"{LM}1.7B"]
    assert gc.get_recommended_lm_model(_built(models, recommended)) == f"{LM}1.7B"  # the largest listed
    assert gc.get_recommended_lm_model(_built([], recommended)) is None


def test_a_listed_recommendation_is_kept_by_the_guides_table_and_upstreams_gives_the_largest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    models = [f"{LM}0.6B", f"{LM}1.7B"]
    assert gc.get_recommended_lm_model(_built(models, f"{LM}0.6B")) == f"{LM}0.6B"  # default table
    for table in ("upstream-2026-02", "upstream-2026-04"):
        monkeypatch.setenv("ACESTEP_CORE_TIERS", table)
        assert gc.get_recommended_lm_model(_built(models, f"{LM}0.6B")) == f"{LM}1.7B"  # upstream's call
    config = gc.get_gpu_config(22.0)  # tier6b: upstream recommends 1.7B in the field, the call answers 4B
    assert (config.recommended_lm_model, gc.get_recommended_lm_model(config)) == (f"{LM}1.7B", f"{LM}4B")


def test_februarys_positional_shape_still_builds_a_config() -> None:
    config = GPUConfig("tier5", 14.0, 240, 360, 2, 4, True, [f"{LM}0.6B"], {"0.6B": 3})  # type: ignore[arg-type]
    assert config.lm_memory_gb == {"0.6B": 3} and config.recommended_lm_model == ""
    assert gc.get_recommended_lm_model(config) == f"{LM}0.6B"
