"""With ``ACESTEP_CORE_TIERS=upstream-2026-04``, the compat module answers as upstream main does.

The oracle is ``tests/fixtures/upstream_gpu_config_592c315.json``: upstream's own
``acestep/gpu_config.py`` at commit 592c315 (main's version through 6d467e4), run by
``tests/fixtures/record_upstream_gpu_config.py`` with torch and loguru stubbed, on a CPU-only Linux
machine, on Apple silicon and on a pre-Volta card. Each answer it recorded is asked of
``acestep_core.compat.gpu_config`` on the same machine (a detection plugin reporting that device) and
compared. Where upstream raises on a number (a division by zero, an integer too large for a float),
the compat module answers as upstream answers the sizes beside it; those cases are named below.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FixedDevice, device_reading

import acestep_core.plugins
from acestep_core import GIB
from acestep_core.compat import gpu_config as gc

ROOT = Path(__file__).parents[1]
FIXTURE = json.loads((ROOT / "tests" / "fixtures" / "upstream_gpu_config_592c315.json").read_text(encoding="utf-8"))
TABLE = "upstream-2026-04"
COMMIT = "592c31552c6c16fced2dced3ea6494a6d09426d1"
SIZES = {json.dumps(entry["gb"]): entry for entry in FIXTURE["sizes"]}
RAISES_UPSTREAM_ANSWERS_AS = {"0.0": "-1.0", str(10**400): '"inf"', str(-(10**400)): '"-inf"'}
"""Sizes where upstream's get_lm_gpu_memory_ratio raises (ZeroDivisionError, OverflowError), and the
size whose answer the compat module gives instead: no GPU's, an infinite device's."""


def number(value: Any) -> Any:
    """A size as the fixture writes it: the strings nan/inf/-inf are those floats."""
    return float(value) if value in ("nan", "inf", "-inf") else value


def same(ours: Any, theirs: Any) -> bool:
    """Equal, NaN equal to NaN (the fixture writes it "nan")."""
    if isinstance(theirs, str) and theirs in ("nan", "inf", "-inf"):
        return isinstance(ours, float) and (math.isnan(ours) if theirs == "nan" else ours == float(theirs))
    if isinstance(theirs, dict) and isinstance(ours, dict):
        return ours.keys() == theirs.keys() and all(same(ours[k], theirs[k]) for k in theirs)
    if isinstance(theirs, list) and isinstance(ours, (list, tuple)):
        return len(ours) == len(theirs) and all(same(a, b) for a, b in zip(ours, theirs, strict=True))
    if isinstance(theirs, bool) or isinstance(ours, bool):
        return ours is theirs  # True is not 1 here
    return ours == theirs


def as_upstream(config: gc.GPUConfig) -> dict[str, Any]:
    """The config as upstream's ``dataclasses.asdict`` gives it (acestep-core's ``decided_by`` aside)."""
    fields = dataclasses.asdict(config)
    fields.pop("decided_by")
    return fields


def answer(call) -> Any:
    try:
        return call()
    except Exception as error:  # noqa: BLE001 - compared with what upstream raised
        return {"raises": type(error).__name__}


@pytest.fixture(autouse=True)
def upstream_main(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    """Upstream main's table; a CPU-only machine (no detection plugin but the simulation) unless a test
    gives a device; no global config or edited GPU_TIER_CONFIGS left over from another test."""
    monkeypatch.setenv("ACESTEP_CORE_TIERS", TABLE)
    monkeypatch.setattr(acestep_core.plugins, "_default", make_manager())
    monkeypatch.setattr(gc, "_global_config", None)
    monkeypatch.setattr(gc, "_tier_configs", {})
    monkeypatch.setattr(sys, "platform", "linux")


def on_device(monkeypatch: pytest.MonkeyPatch, make_manager, reading) -> None:
    monkeypatch.setattr(acestep_core.plugins, "_default", make_manager(FixedDevice(reading)))


# --------------------------------------------------------------------------------------------- the fixture
def test_the_fixture_is_upstream_mains_module_run_not_transcribed() -> None:
    source = FIXTURE["source"]
    assert (source["repository"], source["path"], source["commit"]) == (
        "ace-step/ACE-Step-1.5",
        "acestep/gpu_config.py",
        COMMIT,
    )
    assert len(source["sha256"]) == 64 and "stubbed" in source["recorded_by"]
    assert gc.UPSTREAM_TABLES[TABLE] == COMMIT


def test_at_least_25_sizes_with_every_boundary_and_a_tenth_of_a_gb_either_side() -> None:
    recorded = {number(entry["gb"]) for entry in FIXTURE["sizes"] if isinstance(number(entry["gb"]), float)}
    for boundary in (4, 6, 8, 12, 15.5, 16, 20, 24):
        assert {round(boundary - 0.1, 10), float(boundary), round(boundary + 0.1, 10)} <= recorded, boundary
    assert len(FIXTURE["sizes"]) >= 25


# --------------------------------------------------------------------------------------------- constants
def test_constants_and_the_tier_table_are_upstreams() -> None:
    constants = FIXTURE["constants"]
    for name in ("VRAM_16GB_MIN_GB", "VRAM_AUTO_OFFLOAD_THRESHOLD_GB", "VRAM_SAFETY_MARGIN_GB"):
        assert getattr(gc, name) == constants[name], name
    assert constants["DIT_INFERENCE_VRAM_PER_BATCH"] == gc.DIT_INFERENCE_VRAM_PER_BATCH
    assert constants["GPU_TIER_LABELS"] == gc.GPU_TIER_LABELS
    assert [list(choice) for choice in gc.GPU_TIER_CHOICES] == constants["GPU_TIER_CHOICES"]
    configs = gc.GPU_TIER_CONFIGS
    assert {name: value for name, value in configs.items() if name != "tier6"} == constants["GPU_TIER_CONFIGS"]
    assert list(configs) == [*constants["GPU_TIER_CONFIGS"], "tier6"]
    for alias, target in constants["GPU_TIER_CONFIGS_aliases"].items():
        assert configs[alias] is configs[target]
    assert gc.GPU_TIER_CONFIGS is configs, "the same dictionary on every access, as upstream's module global"


def test_gpu_config_has_upstreams_fields_in_upstreams_order() -> None:
    ours = [(f.name, f.default) for f in dataclasses.fields(gc.GPUConfig) if f.name != "decided_by"]
    theirs = [(f["name"], f["default"]) for f in FIXTURE["GPUConfig_fields"]]
    assert [name for name, _ in ours] == [name for name, _ in theirs]
    assert [d for n, d in ours if n in ("save_memory_mode", "mlx_vae_chunk_size")] == [False, 512]
    positional = gc.GPUConfig(*(f"v{i}" for i in range(16)))  # upstream main's positional shape: 16 fields
    assert positional.lm_memory_gb == "v15" and positional.recommended_lm_model == "v8"


# --------------------------------------------------------------------------------------------- every size
@pytest.mark.parametrize("key", list(SIZES))
def test_every_answer_at_every_size(key: str) -> None:
    entry = SIZES[key]
    gb = number(entry["gb"])
    assert same(gc.get_gpu_tier(gb), entry["get_gpu_tier"])
    config = gc.get_gpu_config(gb)
    assert same(as_upstream(config), entry["get_gpu_config"]), (as_upstream(config), entry["get_gpu_config"])
    assert same(gc.get_recommended_lm_model(config), entry["get_recommended_lm_model"])
    substitute = SIZES[RAISES_UPSTREAM_ANSWERS_AS.get(key, key)]
    for path, theirs in entry["get_lm_gpu_memory_ratio"].items():
        if "raises" in theirs:  # upstream: ZeroDivisionError at 0, OverflowError for huge ints
            assert key in RAISES_UPSTREAM_ANSWERS_AS
            theirs = substitute["get_lm_gpu_memory_ratio"][path]
        assert same(gc.get_lm_gpu_memory_ratio(path, gb), theirs), (path, gb)
    calls = [
        (lambda p=path: gc.is_lm_model_supported(p, config), theirs)
        for path, theirs in entry["is_lm_model_supported"].items()
    ]
    for check, recorded in (
        (gc.check_duration_limit, entry["check_duration_limit"]),
        (gc.check_batch_size_limit, entry["check_batch_size_limit"]),
    ):
        for call, theirs in recorded.items():
            value, lm = call.split("/")
            calls.append((lambda c=check, v=value, lm=lm: c(int(v), config, lm == "True"), theirs))
    for call, theirs in calls:
        ours = answer(call)
        if isinstance(theirs, dict):  # upstream's message overflows formatting a huge int with {:.1f}
            assert theirs == {"raises": "OverflowError"} and isinstance(gb, int)
            assert ours[0] is False and ("(infGB)" in ours[1] or "(-infGB)" in ours[1])
        else:
            assert same(ours, theirs), (ours, theirs)


# --------------------------------------------------------------------------------------------- environment
@pytest.mark.parametrize("variable", ["MAX_CUDA_VRAM", "MAX_MPS_VRAM", "MAX_XPU_VRAM"])
@pytest.mark.parametrize("value", list(FIXTURE["environment"]["MAX_CUDA_VRAM"]))
def test_simulation_variables(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, variable: str, value: str
) -> None:
    """Values acestep-core accepts (a number of GB from 0.001 to 1048576) simulate what upstream
    simulates; the rest are ignored with a WARNING naming the variable — upstream ignores the
    unparsable ones so, and takes 0, -1, nan, inf and 1e300 as sizes (the README says why not)."""
    theirs = FIXTURE["environment"][variable][value]
    monkeypatch.setenv(variable, value)
    accepted = value.strip() in ("8", "7.99", "15.5", "12", "24.01")
    with caplog.at_level(logging.WARNING, logger=gc.__name__):
        memory = gc.get_gpu_memory_gb()
        config = gc.get_gpu_config()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # upstream logs at each call; acestep-core at each call where the variable is ignored, and where it
    # simulates, from get_gpu_memory_gb() (get_gpu_config() keeps logging out of a cold start-up)
    assert sum(variable in w for w in warnings) >= (1 if accepted else 2)
    assert all(level == "WARNING" for level, _ in theirs["get_gpu_config"]["log"])
    if accepted or value in ("abc", "", "8GB"):
        assert memory == theirs["get_gpu_memory_gb"]["answer"]
        upstream_config = dict(theirs["get_gpu_config"]["answer"])
        ours = as_upstream(config)
        if variable == "MAX_MPS_VRAM" and accepted:  # ours is an Apple-silicon device: upstream's Mac rules apply
            mac = {"lm_backend_restriction", "recommended_backend", "offload_to_cpu_default"}
            mac |= {"offload_dit_to_cpu_default", "quantization_default", "compile_model_default", "mlx_vae_chunk_size"}
            assert (ours["recommended_backend"], ours["compile_model_default"]) == ("mlx", False)
            ours = {k: v for k, v in ours.items() if k not in mac}
            upstream_config = {k: v for k, v in upstream_config.items() if k not in mac}
        assert same(ours, upstream_config)
    else:
        assert memory == 0.0 and config.tier == "tier1"  # ignored: the real machine (a CPU here)


# --------------------------------------------------------------------------------------------- pure helpers
def test_pure_helpers() -> None:
    pure = FIXTURE["pure"]
    for path, theirs in pure["get_dit_type_from_path"]:
        assert gc.get_dit_type_from_path(path) == theirs, path
    for path, theirs in pure["get_lm_model_size"]:
        assert gc.get_lm_model_size(path) == theirs
    for name, models, theirs in pure["is_lm_model_size_allowed"]:
        assert gc.is_lm_model_size_allowed(name, models) is theirs, (name, models)
    for recommended, disk, theirs in pure["find_best_lm_model_on_disk"]:
        assert gc.find_best_lm_model_on_disk(recommended, disk) == theirs, (recommended, disk)


def test_resolve_lm_backend_for_every_request_and_restriction() -> None:
    base = gc.get_gpu_config(24.0)
    for requested, restriction, recommended, theirs in FIXTURE["resolve_lm_backend"]:
        config = dataclasses.replace(base, lm_backend_restriction=restriction, recommended_backend=recommended)
        assert gc.resolve_lm_backend(requested, config) == theirs, (requested, restriction, recommended)


def test_resolve_lm_backend_without_a_config_uses_the_processs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    for requested, theirs in FIXTURE["resolve_lm_backend_global_8gb"].items():
        assert gc.resolve_lm_backend(None if requested == "None" else requested) == theirs


# --------------------------------------------------------------------------------------------- probes
@pytest.mark.parametrize("simulated", [False, True])
def test_probes_on_a_cpu_machine_answer_for_the_real_hardware(monkeypatch: pytest.MonkeyPatch, simulated) -> None:
    if simulated:
        monkeypatch.setenv("MAX_CUDA_VRAM", "8")
        expected = FIXTURE["probes_cpu_MAX_CUDA_VRAM_8"]
    else:
        expected = FIXTURE["probes_cpu"]
    for name, theirs in expected.items():
        assert getattr(gc, name)() == theirs, name


def test_probes_on_a_cuda_card(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    h100 = dataclasses.replace(device_reading(80).device, name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))
    on_device(monkeypatch, make_manager, type(device_reading(80))(device=h100, visible=(h100,)))
    assert gc.is_cuda_available() and gc.cuda_supports_bfloat16() and gc.cuda_supports_bfloat16(0)
    assert not (gc.is_mps_platform() or gc.is_mps_available() or gc.is_xpu_available() or gc.is_rocm_available())
    assert not gc.cuda_supports_bfloat16(1)  # no such device
    assert gc.get_gpu_device_name() == "NVIDIA H100 80GB HBM3"
    assert gc.get_effective_free_vram_gb() == 80.0
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")  # upstream's cap: the simulated card's budget, 8 − 0.5 GB
    assert gc.get_effective_free_vram_gb() == 7.5 and gc.is_cuda_available()


# --------------------------------------------------------------------------------------------- the rest
def test_an_entry_edited_in_place_is_what_later_configs_carry() -> None:
    recorded = FIXTURE["GPU_TIER_CONFIGS_in_place"]
    tier, key, value = recorded["edit"]
    configs = gc.GPU_TIER_CONFIGS
    before = configs[tier][key]
    configs[tier][key] = value
    config = gc.get_gpu_config(18.0)
    assert same(as_upstream(config), recorded["get_gpu_config(18)"])
    assert config.decided_by["edited_in_place"] == [key]
    configs[tier][key] = before
    assert gc.get_gpu_config(18.0).max_batch_size_with_lm == before


def test_a_tier_chosen_by_id_including_upstreams_tier6_alias(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    for tier, theirs in FIXTURE["get_gpu_config_for_tier_MAX_CUDA_VRAM_8"].items():
        with caplog.at_level(logging.WARNING, logger=gc.__name__):
            caplog.clear()
            config = gc.get_gpu_config_for_tier(tier)
        assert same(as_upstream(config), theirs["answer"]), tier
        if tier == "tier9":
            assert "Unknown tier 'tier9', falling back to auto-detected config" in caplog.messages


def test_print_gpu_config_info_logs_upstreams_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=gc.__name__):
        gc.print_gpu_config_info(gc.get_gpu_config(8.0))
    theirs = [message for _level, message in FIXTURE["print_gpu_config_info_8gb"]["log"]]
    assert caplog.messages[: len(theirs)] == theirs
    assert caplog.messages[len(theirs) :] == ["  - Decided by: table 'upstream-2026-04', Tier 3"]


@pytest.mark.parametrize(("value", "theirs"), list(FIXTURE["save_memory_mode"].items()))
def test_acestep_save_memory(monkeypatch: pytest.MonkeyPatch, value: str, theirs: bool) -> None:
    monkeypatch.setenv("MAX_CUDA_VRAM", "8")
    if value != "None":
        monkeypatch.setenv("ACESTEP_SAVE_MEMORY", value)
    assert gc.get_global_gpu_config().save_memory_mode is theirs
    assert gc.get_gpu_config().save_memory_mode is False  # only the process's config, as upstream


# --------------------------------------------------------------------------------------------- other machines
def _mac(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    mps = dataclasses.replace(device_reading(16, backend="mps").device, unified_memory=True)
    on_device(monkeypatch, make_manager, type(device_reading(16))(device=mps, visible=(mps,)))
    monkeypatch.setattr(sys, "platform", "darwin")


@pytest.mark.parametrize("entry", FIXTURE["mps"]["sizes"], ids=lambda e: json.dumps(e["gb"]))
def test_apple_silicon_at_every_size(monkeypatch: pytest.MonkeyPatch, make_manager, entry: dict[str, Any]) -> None:
    _mac(monkeypatch, make_manager)
    config = gc.get_gpu_config(number(entry["gb"]))
    assert same(as_upstream(config), entry["get_gpu_config"])


def test_apple_silicon_probes_and_the_mlx_vae_chunk(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    _mac(monkeypatch, make_manager)
    assert {name: getattr(gc, name)() for name in FIXTURE["mps"]["probes"]} == FIXTURE["mps"]["probes"]
    assert gc.get_effective_free_vram_gb() == 0.0  # upstream: no CUDA or XPU device
    for value, theirs in FIXTURE["mps"]["mlx_vae_chunk_size_at_8_and_48"].items():
        if value == "None":
            monkeypatch.delenv("ACESTEP_MLX_VAE_CHUNK", raising=False)
        else:
            monkeypatch.setenv("ACESTEP_MLX_VAE_CHUNK", value)
        assert [gc.get_gpu_config(gb).mlx_vae_chunk_size for gb in (8.0, 48.0)] == theirs, value


def test_the_mlx_vae_chunk_is_512_off_a_mac(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACESTEP_MLX_VAE_CHUNK", "1024")
    assert gc.get_gpu_config(48.0).mlx_vae_chunk_size == FIXTURE["mlx_vae_chunk_size_off_mac_with_env_1024"]


def test_a_pre_volta_card(monkeypatch: pytest.MonkeyPatch, make_manager) -> None:
    reading = device_reading(11)
    card = dataclasses.replace(reading.device, name="NVIDIA GeForce GTX 1080 Ti", compute_capability=(6, 1))
    on_device(monkeypatch, make_manager, type(reading)(device=card, visible=(card,)))
    theirs = FIXTURE["cuda_legacy_11gb_cc61"]
    assert same(as_upstream(gc.get_gpu_config()), theirs["get_gpu_config()"])
    assert same(as_upstream(gc.get_gpu_config(24.0)), theirs["get_gpu_config(24)"])
    assert (
        gc.resolve_lm_backend("vllm", gc.get_gpu_config(24.0))
        == theirs["resolve_lm_backend('vllm', get_gpu_config(24))"]
    )
    assert gc.cuda_supports_bfloat16() is theirs["cuda_supports_bfloat16"]
    assert card.total_bytes == 11 * GIB


# --------------------------------------------------------------------------------------------- names and call shapes
def test_every_name_upstreams_callers_import_is_here_with_upstreams_parameters() -> None:
    """The fixture lists, per upstream file (26 at 6c1b2ef), the names it takes from gpu_config: 32 in all."""
    names = FIXTURE["names_imported"]
    assert len(names) == 32 and len(FIXTURE["callers"]) == 26
    assert [name for name in names if not hasattr(gc, name)] == []
    import inspect

    for name, theirs in FIXTURE["signatures"].items():
        ours = [
            [p.name, p.kind.name, None if p.default is inspect.Parameter.empty else repr(p.default)]
            for p in inspect.signature(getattr(gc, name)).parameters.values()
        ]
        assert ours == theirs, name


def test_each_upstream_callers_imports_run_through_the_two_line_alias(tmp_path: Path) -> None:
    """Each of upstream's calling files' imports, as it writes them, against the README's alias module,
    in a fresh process under MAX_CUDA_VRAM with upstream-2026-04: every name resolves, and neither the
    launcher's start-up calls nor the platform probes load torch (the probes ask detection, whose NVML
    and host signs need none; this machine has no GPU)."""
    import os
    import subprocess

    package = tmp_path / "acestep"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "gpu_config.py").write_text(
        "import sys, acestep_core.compat.gpu_config as _compat\nsys.modules[__name__] = _compat\n"
    )
    lines = ["import json, sys"]
    for path, names in FIXTURE["callers"].items():
        lines.append(f"from acestep.gpu_config import ({', '.join(names)})  # {path}")
    lines += [
        "from acestep import gpu_config",
        f"missing = [n for n in {FIXTURE['names_imported']!r} if not hasattr(gpu_config, n)]",
        "config = get_gpu_config(); backend = resolve_lm_backend(None, config)",
        "probes = [is_mps_platform(), is_cuda_available(), is_mps_available(), is_xpu_available(),"
        " is_rocm_available(), cuda_supports_bfloat16(), get_gpu_device_name(), get_effective_free_vram_gb()]",
        "print(json.dumps({'missing': missing, 'tier': config.tier, 'backend': backend,"
        " 'dit': get_dit_type_from_path('acestep-v15-xl-sft'), 'torch': 'torch' in sys.modules}))",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACESTEP_CORE", "MAX_"))}
    env |= {"MAX_CUDA_VRAM": "18", "ACESTEP_CORE_TIERS": TABLE, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", "\n".join(lines)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result == {"missing": [], "tier": "tier6a", "backend": "vllm", "dit": "xl_base", "torch": False}
