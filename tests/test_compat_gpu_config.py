"""acestep_core.compat.gpu_config: upstream ACE-Step's gpu_config API, answered by the plugins.

FEB_2026 below is upstream's February 2026 behaviour (ace-step/ACE-Step-1.5 commit f30aee4c186c,
acestep/gpu_config.py), transcribed value for value; ``feb_tier`` is its tier rule written out, as
an oracle for the table ``upstream-2026-02`` (the module under test has no such rule).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FixedDevice, device_reading

import acestep_core.plugins
from acestep_core import GIB, resolve
from acestep_core.compat import gpu_config as gc
from acestep_core.compat.gpu_config import GPUConfig

UPSTREAM = "upstream-2026-02"
LM = "acestep-5Hz-lm-"
ALL = [f"{LM}0.6B", f"{LM}1.7B", f"{LM}4B"]
MEMORY = {"0.6B": 3, "1.7B": 8, "4B": 12}
# tier: (with-LM s, without-LM s, batch with, batch without, init_lm_default, models, LM memory)
FEB_2026: dict[str, tuple[int, int, int, int, bool, list[str], dict[str, int]]] = {
    "tier1": (180, 180, 1, 1, False, [], {}),
    "tier2": (360, 360, 1, 1, False, [], {}),
    "tier3": (240, 360, 1, 2, False, ALL[:1], {"0.6B": 3}),
    "tier4": (240, 360, 2, 4, False, ALL[:1], {"0.6B": 3}),
    "tier5": (240, 360, 2, 4, True, ALL[:2], {"0.6B": 3, "1.7B": 8}),
    "tier6": (480, 480, 4, 8, True, ALL, MEMORY),
    "unlimited": (600, 600, 8, 8, True, ALL, MEMORY),
}
SIZES = [
    -1,
    0,
    0.5,
    3.99,
    4,
    4.01,
    5.99,
    6,
    6.01,
    7.99,
    8,
    8.01,
    11.99,
    12,
    12.01,
    15.0,
    15.49,
    15.5,
    15.7,
    15.99,
    16,
    16.01,
    20,
    23.99,
    24,
    24.01,
    32,
    48,
    80,
]


def feb_tier(gb: float) -> str:
    """Upstream's Feb-2026 get_gpu_tier, written out (the oracle)."""
    for limit, tier in ((4, "tier1"), (6, "tier2"), (8, "tier3"), (12, "tier4")):
        if gb <= limit:
            return tier
    if gb < 16 - 0.5:
        return "tier5"
    return "tier6" if gb <= 24 else "unlimited"


def feb_ratio(path: str, total: float) -> tuple[float, float]:
    """Upstream's Feb-2026 get_lm_gpu_memory_ratio, written out (the oracle)."""
    size = "0.6B" if "0.6B" in path else "1.7B" if "1.7B" in path else "4B" if "4B" in path else "0.6B"
    target = float(MEMORY[size])
    floor = 0.2 if total >= 24 else 0.1
    return min(0.9, max(floor, target / total)), target


@pytest.fixture(autouse=True)
def machine(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    """The process-wide manager the compat module uses: built-ins only, no GPU (a CPU) unless a
    test says otherwise; no global config left over."""
    monkeypatch.setattr(acestep_core.plugins, "_default", make_manager())
    monkeypatch.setattr(gc, "_global_config", None)


def as_tuple(config: GPUConfig) -> tuple:
    return (
        config.max_duration_with_lm,
        config.max_duration_without_lm,
        config.max_batch_size_with_lm,
        config.max_batch_size_without_lm,
        config.init_lm_default,
        config.available_lm_models,
        config.lm_memory_gb,
    )


# --------------------------------------------------------------------------------------------- Feb 2026
@pytest.mark.parametrize("gb", SIZES)
def test_upstream_table_gives_every_feb_2026_value_at_every_boundary(
    monkeypatch: pytest.MonkeyPatch, gb: float
) -> None:
    monkeypatch.setenv("ACESTEP_CORE_TIERS", UPSTREAM)
    config = gc.get_gpu_config(gb)
    expected = feb_tier(gb)
    assert config.tier == gc.get_gpu_tier(gb) == expected
    assert config.gpu_memory_gb == gb
    assert as_tuple(config) == FEB_2026[expected]
    models = FEB_2026[expected][5]
    assert gc.get_recommended_lm_model(config) == (models[-1] if models else None)  # Feb: the largest
    for path in (*ALL, "some-other-lm"):
        if gb > 0:
            # the device is whole bytes: a size like 6.01 GB moves by under half a byte (< 1e-10 relative)
            assert gc.get_lm_gpu_memory_ratio(path, gb) == pytest.approx(feb_ratio(path, gb), rel=1e-9)
        supported, message = gc.is_lm_model_supported(path, config)
        assert supported == any(gc.get_lm_model_size(path) in m for m in models)
        assert (message == "") == supported


@pytest.mark.parametrize("gb", ["7.99", "8", "12", "15.49", "15.5", "15.7", "16", "24", "24.01"])
def test_upstream_table_applies_its_rules_to_simulated_sizes_too(monkeypatch: pytest.MonkeyPatch, gb: str) -> None:
    """MAX_CUDA_VRAM, as upstream callers set it: the 15.5 GB rule and inclusive bounds hold."""
    monkeypatch.setenv("ACESTEP_CORE_TIERS", UPSTREAM)
    monkeypatch.setenv("MAX_CUDA_VRAM", gb)
    assert gc.get_gpu_memory_gb() == float(gb)
    config = gc.get_gpu_config()
    assert config.tier == feb_tier(float(gb)) and as_tuple(config) == FEB_2026[config.tier]


def test_upstream_constants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACESTEP_CORE_TIERS", UPSTREAM)
    assert gc.VRAM_16GB_MIN_GB == 15.5
    assert gc.GPU_TIER_LABELS["tier1"] == "tier1 (≤4GB)" and gc.GPU_TIER_LABELS["unlimited"] == "unlimited (≥24GB)"
    assert list(gc.GPU_TIER_LABELS) == list(FEB_2026)
    assert gc.GPU_TIER_CHOICES[0] == ("tier1", "tier1 (≤4GB)")
    assert [gc.get_lm_model_size(p) for p in ("acestep-5Hz-lm-1.7B-v2", "x-4B", "mystery")] == ["1.7B", "4B", "0.6B"]


# --------------------------------------------------------------------------------------------- default
@pytest.mark.parametrize(
    ("gb", "tier", "init_lm", "recommended"),
    [
        (4, "tier1", False, None),
        (6, "tier3", False, "0.6B"),
        (7, "tier3", False, "0.6B"),
        (8, "tier4", True, "0.6B"),
        (12, "tier5", True, "0.6B"),
        (15.5, "tier5", True, "0.6B"),
        (16, "tier6", True, "1.7B"),
        (24, "unlimited", True, "4B"),
    ],
)
def test_default_table_gives_the_guides_decisions(
    monkeypatch: pytest.MonkeyPatch, gb, tier, init_lm, recommended
) -> None:
    """The guide places 8 / 12 / 16 / 24 GB in Tier 4 / 5 / 6 / unlimited and recommends by its tips."""
    monkeypatch.setenv("MAX_CUDA_VRAM", str(gb))
    config = gc.get_gpu_config()
    assert config.tier == tier and config.init_lm_default is init_lm
    assert gc.get_recommended_lm_model(config) == (f"{LM}{recommended}" if recommended else None)
    assert config.decided_by["table"] == "default"
    assert gc.VRAM_16GB_MIN_GB == 16.0


def test_default_unlimited_has_no_fixed_lm_allotment_so_the_ratio_is_the_plans() -> None:
    ratio, target = gc.get_lm_gpu_memory_ratio(f"{LM}4B", 80)
    plan = resolve(reading=device_reading(80, simulated=True), request=None).tier
    assert plan.name == "unlimited" and not plan.lm_memory_gb
    assert (ratio, target) == (0.5, 40.0)  # the plan's "no fixed allocation: half of the device"


def test_the_built_in_default_stays_active_with_the_built_in_upstream_tables() -> None:
    names = [t.name for t in acestep_core.plugins.get_plugin_manager().hook.register_tier_tables()[0]]
    assert names == ["default", UPSTREAM, "upstream-2026-04"]
    assert gc.get_gpu_config(8).decided_by["table"] == "default"


# --------------------------------------------------------------------------------------------- environment
def test_the_environment_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    assert gc.get_gpu_config().tier == "tier4"
    monkeypatch.setenv("MAX_CUDA_VRAM", "16")
    assert gc.get_gpu_config().tier == "tier6" and gc.get_gpu_memory_gb() == 16.0
    monkeypatch.setenv("ACESTEP_CORE_TIERS", UPSTREAM)
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    assert gc.get_gpu_config().tier == "tier3"
    monkeypatch.delenv("MAX_CUDA_VRAM")
    assert gc.get_gpu_memory_gb() == 0.0 and gc.get_gpu_config().tier == "tier1"  # no GPU here


def test_a_real_cards_own_figure_is_decided_as_that_card(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    """A 16 GB card reading 15.6 GiB: get_gpu_config(get_gpu_memory_gb()) is Tier 6 like
    get_gpu_config(), while the same figure typed in is a 15.6 GB device."""
    monkeypatch.setattr(acestep_core.plugins, "_default", make_manager(FixedDevice(device_reading(15.6))))
    gb = gc.get_gpu_memory_gb()
    assert gb == pytest.approx(15.6)
    assert gc.get_gpu_config().tier == gc.get_gpu_config(gb).tier == "tier6"
    assert gc.get_gpu_config(15.61).tier == "tier5"


# --------------------------------------------------------------------------------------------- callers
def test_cli_and_launcher_auto_offload_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Callers: ``auto_offload = 0 < gpu_memory_gb < VRAM_16GB_MIN_GB``."""
    monkeypatch.setenv("ACESTEP_CORE_TIERS", UPSTREAM)
    decisions = {}
    for gb in ("8", "15.4", "15.5", "24"):
        monkeypatch.setenv("MAX_CUDA_VRAM", gb)
        memory = gc.get_gpu_memory_gb()
        decisions[gb] = 0 < memory < gc.VRAM_16GB_MIN_GB
    assert decisions == {"8": True, "15.4": True, "15.5": False, "24": False}
    monkeypatch.delenv("MAX_CUDA_VRAM")
    assert not 0 < gc.get_gpu_memory_gb() < gc.VRAM_16GB_MIN_GB  # no GPU: no offload


@pytest.mark.parametrize(
    ("table", "gb", "thinking"),
    [(UPSTREAM, 12, False), ("default", 12, True), (UPSTREAM, 12.5, True), ("default", 7, False)],
)
def test_init_lm_default_turns_thinking_on(
    monkeypatch: pytest.MonkeyPatch, table: str, gb: float, thinking: bool
) -> None:
    monkeypatch.setenv("ACESTEP_CORE_TIERS", table)
    config = gc.get_gpu_config(gb)
    think = bool(config.init_lm_default)  # the Gradio handler's default for "thinking"
    assert think is thinking


def test_duration_and_batch_checks_warn_in_upstreams_words_and_the_caller_clamps(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ACESTEP_CORE_TIERS", UPSTREAM)
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    config = gc.get_global_gpu_config()
    ok, message = gc.check_duration_limit(300, config, lm_initialized=True)
    assert not ok and message == (
        "⚠️ Requested duration (300s) exceeds the limit for your GPU (8.0GB). Maximum allowed: 240s (with LM). "
        "Duration will be clamped to 240s."
    )
    duration = 300 if ok else config.max_duration_with_lm  # the caller clamps
    assert duration == 240
    assert gc.check_duration_limit(300, config, lm_initialized=False) == (True, "")
    assert gc.check_duration_limit(360, config, lm_initialized=False) == (True, "")
    ok, message = gc.check_batch_size_limit(3, config, lm_initialized=False)
    assert not ok and message == (
        "⚠️ Requested batch size (3) exceeds the limit for your GPU (8.0GB). Maximum allowed: 2 (without LM). "
        "Batch size will be clamped to 2."
    )
    assert gc.check_batch_size_limit(1, config, lm_initialized=True) == (True, "")


@pytest.mark.parametrize("table", [UPSTREAM, "default"])
def test_lm_support_and_the_fallback_when_nothing_is_recommended(monkeypatch: pytest.MonkeyPatch, table: str) -> None:
    """The launcher: an unsupported LM falls back to the recommended one; none recommended → LM off."""
    monkeypatch.setenv("ACESTEP_CORE_TIERS", table)
    config = gc.get_gpu_config(10)
    ok, message = gc.is_lm_model_supported(f"{LM}4B", config)
    assert (
        not ok
        and message == f"⚠️ LM model {LM}4B (4B) is not supported for your GPU (10.0GB). Available models: {LM}0.6B"
    )
    assert gc.is_lm_model_supported(f"{LM}0.6B-v4-fix", config) == (True, "")
    assert gc.get_recommended_lm_model(config) == f"{LM}0.6B"
    small = gc.get_gpu_config(3)
    ok, message = gc.is_lm_model_supported(f"{LM}0.6B", small)
    assert not ok and "does not have enough memory to run any LM model" in message
    init_lm = gc.get_recommended_lm_model(small) is not None
    assert init_lm is False


def test_a_hand_built_config_without_a_recommendation_gets_the_largest() -> None:
    config = GPUConfig("tier5", 14.0, 240, 360, 2, 4, True, ALL[:2], {"0.6B": 3, "1.7B": 8})  # Feb's positional shape
    assert gc.get_recommended_lm_model(config) == f"{LM}1.7B"


def test_lm_module_memory_ratio_for_its_allocator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The LM module: ``ratio, target = get_lm_gpu_memory_ratio(path, get_gpu_memory_gb())``."""
    monkeypatch.setenv("MAX_CUDA_VRAM", "16")
    ratio, target = gc.get_lm_gpu_memory_ratio(f"{LM}1.7B", gc.get_gpu_memory_gb())
    plan = resolve(reading=device_reading(16, simulated=True), request=None)
    assert target == 8 and ratio == pytest.approx(8 / 16)
    assert plan.tier.lm_memory_ratio(target, 16) == ratio
    # no GPU (0 GB, where upstream divides by zero): the LM gets no share of a GPU, and no exception
    assert gc.get_lm_gpu_memory_ratio(f"{LM}1.7B", 0) == (0.0, 8.0)


@pytest.mark.parametrize(("gb", "warned"), [("3", True), ("8", True), ("12", True), ("12.5", False), ("24", False)])
def test_training_handler_warns_by_tier_name(monkeypatch: pytest.MonkeyPatch, gb: str, warned: bool) -> None:
    monkeypatch.setenv("ACESTEP_CORE_TIERS", UPSTREAM)
    monkeypatch.setenv("MAX_CUDA_VRAM", gb)
    config = gc.get_global_gpu_config()
    assert (config.tier in {"tier1", "tier2", "tier3", "tier4"} or config.gpu_memory_gb <= 0) is warned


def test_global_config_round_trip_and_manual_tier(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    first = gc.get_global_gpu_config()
    assert gc.get_global_gpu_config() is first
    chosen = gc.get_gpu_config_for_tier("tier5")
    assert chosen.tier == "tier5" and chosen.gpu_memory_gb == 8.0 and chosen.max_batch_size_without_lm == 4
    gc.set_global_gpu_config(chosen)
    assert gc.get_global_gpu_config() is chosen
    with caplog.at_level(logging.INFO, logger=gc.__name__):
        gc.print_gpu_config_info(chosen)
        assert gc.get_gpu_config_for_tier("tier9").tier == "tier4"
    assert (
        "  - Tier: tier5" in caplog.messages
        and "Unknown tier 'tier9', falling back to auto-detected config" in caplog.messages
    )
    for tier in gc.GPU_TIER_LABELS:
        assert gc.get_gpu_config_for_tier(tier).tier == tier


def test_april_fields_are_the_tiers_defaults_and_the_plans_decisions_are_recorded(monkeypatch) -> None:
    """Issue #19: the GPUConfig fields give the tier's per-tier defaults (upstream's meaning); where the
    plan differs on this machine (no triton: no compile; no nano-vllm or vllm: pt), its decision and
    reason are in decided_by["plan"]."""
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    config = gc.get_gpu_config()
    resolution = resolve()
    defaults = resolution.tier.optimizations
    assert config.offload_to_cpu_default is defaults["cpu_offload"]
    assert config.offload_dit_to_cpu_default is defaults.get("dit_cpu_offload", defaults["cpu_offload"])
    assert config.quantization_default is (defaults["quantization"] != "none")
    assert config.compile_model_default is defaults["compile"] is True
    plan = config.decided_by["plan"]
    for key in ("compile", "lm.backend", "offload.dit", "quantization.dit"):
        assert plan[key] == {"value": resolution.plan.value(key), "reason": resolution.plan[key].reason}
    assert plan["compile"]["value"] is False and "triton" in plan["compile"]["reason"]  # this machine has no triton
    assert config.recommended_lm_model == f"{LM}0.6B"


# --------------------------------------------------------------------------------------------- imports
def test_no_torch_under_simulation() -> None:
    code = (
        "import sys, json\n"
        "from acestep_core.compat.gpu_config import get_gpu_config, get_lm_gpu_memory_ratio, VRAM_16GB_MIN_GB\n"
        "c = get_gpu_config(); get_lm_gpu_memory_ratio('acestep-5Hz-lm-0.6B', 8)\n"
        "print(json.dumps({'tier': c.tier, 'torch': 'torch' in sys.modules, 'pynvml': 'pynvml' in sys.modules}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACESTEP_CORE", "MAX_"))} | {"MAX_CUDA_VRAM": "8"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout.splitlines()[-1]) == {"tier": "tier4", "torch": False, "pynvml": False}
    assert "GPU memory simulation is on" not in out.stdout  # warnings go to the log, not stdout


def test_gib_means_upstreams_gb() -> None:
    assert gc.get_gpu_config(8).gpu_memory_gb * GIB == 8 * 1024**3
    assert Path(gc.__file__).parent.name == "compat"


def test_the_two_line_alias_serves_upstream_imports(tmp_path: Path) -> None:
    """The README's alias module, imported the ways upstream's callers import it."""
    package = tmp_path / "acestep"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "gpu_config.py").write_text(
        "import sys, acestep_core.compat.gpu_config as _compat\nsys.modules[__name__] = _compat\n"
    )
    caller = (
        "import json\n"
        "from acestep.gpu_config import get_gpu_config, get_gpu_memory_gb, VRAM_16GB_MIN_GB, GPUConfig\n"
        "import acestep.gpu_config as gpu_config\n"
        "from acestep import gpu_config as again\n"
        "gb = get_gpu_memory_gb(); config = get_gpu_config(gb)\n"
        "print(json.dumps({'tier': config.tier, 'offload': 0 < gb < VRAM_16GB_MIN_GB, 'same': gpu_config is again,"
        " 'record': isinstance(config, GPUConfig), 'ok': gpu_config.check_duration_limit(300, config, True)[0]}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACESTEP_CORE", "MAX_"))}
    env |= {"MAX_CUDA_VRAM": "12", "ACESTEP_CORE_TIERS": UPSTREAM, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", caller], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(out.stdout.splitlines()[-1])
    assert result == {"tier": "tier4", "offload": True, "same": True, "record": True, "ok": False}


def test_resolve_refuses_a_given_reading_no_tier_could_come_from() -> None:
    broken = device_reading(8, simulated=True)
    broken = type(broken)(device=type(broken.device)(backend="cuda", name="bad", total_bytes=-1))
    with pytest.raises(ValueError, match="positive integer total_bytes"):
        resolve(reading=broken)
    decided = resolve(reading=device_reading(8, simulated=True))
    assert decided.decided_by("detect_memory") == "caller" and decided.tier.name == "tier4"


@pytest.mark.parametrize(
    ("variable", "gb", "backend", "restriction", "recommended"),
    [
        ("MAX_CUDA_VRAM", "8", "cuda", "all", "vllm"),
        ("MAX_CUDA_VRAM", "6", "cuda", "all", "vllm"),
        ("MAX_MPS_VRAM", "16", "mps", "pt_mlx_only", "mlx"),
    ],
)
def test_lm_backend_fields_follow_upstreams_platform_rule(
    monkeypatch: pytest.MonkeyPatch, variable, gb, backend, restriction, recommended
) -> None:
    """Upstream recommends vllm (its vendored nano-vllm) on every tier and mlx on Apple silicon, as a
    default: what this machine can run (pt here, with neither installed) is the plan's, recorded."""
    monkeypatch.setenv(variable, gb)
    config = gc.get_gpu_config()
    resolution = resolve()
    assert resolution.reading.device.backend == backend
    assert (config.recommended_backend, config.lm_backend_restriction) == (recommended, restriction)
    assert gc.resolve_lm_backend(None, config) == recommended
    if "lm.backend" in resolution.plan:
        assert config.decided_by["plan"]["lm.backend"]["value"] == resolution.plan.value("lm.backend")
    if backend == "mps":
        assert not (config.compile_model_default or config.quantization_default or config.offload_to_cpu_default)
        assert config.mlx_vae_chunk_size == 256  # upstream's size for 16 GB of unified memory


def test_an_old_card_is_restricted_to_pt(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    """Upstream main (eddb621, #932): below compute capability 7.0 the LM runs on pt only."""
    import dataclasses

    reading = device_reading(11)
    old = dataclasses.replace(reading, device=dataclasses.replace(reading.device, compute_capability=(6, 1)))
    monkeypatch.setattr(acestep_core.plugins, "_default", make_manager(FixedDevice(old)))
    config = gc.get_gpu_config()
    assert (config.recommended_backend, config.lm_backend_restriction) == ("pt", "pt_only")
    assert gc.resolve_lm_backend("vllm", config) == "pt"
    assert gc.get_gpu_config(24).lm_backend_restriction == "pt_only"  # a size given on that card: still that card


# ------------------------------------------------------------------------------------ constants that follow the table
def _detected_card(monkeypatch: pytest.MonkeyPatch, make_manager, gib: float, **fields) -> None:
    import dataclasses

    reading = device_reading(gib)
    card = dataclasses.replace(reading.device, **fields)
    monkeypatch.setattr(acestep_core.plugins, "_default", make_manager(FixedDevice(type(reading)(card, (card,)))))


@pytest.mark.parametrize(
    ("table", "simulated", "start", "offload_threshold"),
    [
        ("default", False, 15.2, float("inf")),
        ("default", True, 16.0, float("inf")),
        (UPSTREAM, False, 15.5, float("inf")),
        ("upstream-2026-04", False, 15.5, 20.0),
        ("upstream-2026-04", True, 15.5, 20.0),
    ],
)
def test_the_16gb_class_constant_follows_the_active_tables_placement(
    monkeypatch: pytest.MonkeyPatch, make_manager, table, simulated, start, offload_threshold
) -> None:
    """Issue #19 item 4: a caller's ``gb < VRAM_16GB_MIN_GB`` must draw the line where the table puts the
    16 GB class for this process's device: the default table counts a detected card from 5 % below
    (16 × 0.95 = 15.2), a simulated size exactly; upstream's tables from 15.5 either way."""
    monkeypatch.setenv("ACESTEP_CORE_TIERS", table)
    if simulated:
        monkeypatch.setenv("MAX_CUDA_VRAM", "15.3")
    else:
        _detected_card(monkeypatch, make_manager, 15.3)
    assert pytest.approx(start) == gc.VRAM_16GB_MIN_GB
    assert offload_threshold == gc.VRAM_AUTO_OFFLOAD_THRESHOLD_GB
    # a 15.3 GiB device: where the constant says "16 GB class", the tier says so too
    sixteen_class = not gc.get_gpu_memory_gb() < gc.VRAM_16GB_MIN_GB
    tier = gc.get_gpu_config().tier
    assert sixteen_class is (tier in ("tier6", "tier6a"))


# --------------------------------------------------------------------------------------------- effective free
class FakeCuda:
    """torch.cuda as a process that already runs models sees it (initialised; 12 GiB reserved, 9 allocated)."""

    def __init__(self, initialised: bool) -> None:
        self.initialised = initialised
        self.asked: list[str] = []

    def is_initialized(self) -> bool:
        self.asked.append("is_initialized")
        return self.initialised

    def memory_reserved(self, index: int) -> int:
        self.asked.append(f"memory_reserved({index})")
        return 12 * GIB

    def memory_allocated(self, index: int) -> int:
        self.asked.append(f"memory_allocated({index})")
        return 9 * GIB


@pytest.mark.parametrize("initialised", [True, False])
def test_effective_free_counts_this_processs_allocator_cache_only_from_a_running_torch(
    monkeypatch: pytest.MonkeyPatch, make_manager, initialised: bool
) -> None:
    """Upstream #822: NVML says 2 GiB free on a 24 GB card whose own allocator caches 3 GiB: 5 GiB can be
    used. The figures come from a torch this process already runs; an uninitialised CUDA is not asked
    for them (that would create a context), and torch is never imported here."""
    import types

    _detected_card(monkeypatch, make_manager, 24, free_bytes=2 * GIB, sources={"free_bytes": "NVML v2, live"})
    cuda = FakeCuda(initialised)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    free = gc.get_effective_free_vram_gb()
    assert cuda.asked[0] == "is_initialized"
    if initialised:
        assert free == 5.0 and cuda.asked[1:] == ["memory_reserved(0)", "memory_allocated(0)"]
    else:
        assert free == 2.0 and cuda.asked == ["is_initialized"]
    assert gc.get_effective_free_vram_gb(3) == 0.0  # no cuda:3


def test_effective_free_without_torch_imports_nothing(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    _detected_card(monkeypatch, make_manager, 24, free_bytes=2 * GIB)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert gc.get_effective_free_vram_gb() == 2.0
    assert "torch" not in sys.modules
