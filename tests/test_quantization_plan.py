"""Quantization as the plan decides it, torch-free (issue #23): the backend (torchao where installed, quanto
otherwise), the scheme per component and why, what a user sets, the memory the schemes leave, and the measured
quality the plan reports (a DiT scheme under 20 dB is lossy)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import acestep_core_tiers_default
import pytest
from conftest import device_reading

from acestep_core import CPU, PLAN_KEYS, GenerationRequest, MemoryReading, Overrides, resolve
from acestep_core.optimize import Abilities, Choices, RunShape, device_budget, platforms
from acestep_core.optimize import quantization as quant
from acestep_core.optimize.ladder import steps
from acestep_core.optimize.memory import DIT_SHAPE, GIB, dit_weight_bytes, predict
from acestep_core.optimize.plan import choices_from_plan, plan_settings
from acestep_core.tables import TableError, parse_table
from acestep_core.types import AdjustedRequest, Tier, plan_override_problem
from acestep_core.vocabulary import QUANT_BACKENDS, QUANT_SCHEME_FORMATS, QUANT_SCHEMES, QUANTIZED_COMPONENTS


def _card(gib: float, capability: tuple[int, int] | None, backend: str = "cuda") -> MemoryReading:
    reading = device_reading(gib, backend=backend)
    return MemoryReading(device=dataclasses.replace(reading.device, compute_capability=capability))


def _resolve(make_manager, detected, reading: MemoryReading, plan: dict | None = None):
    request = GenerationRequest(duration_s=60, lm="on", lm_model="0.6B")
    return resolve(request, overrides=Overrides(plan=plan or {}), manager=make_manager(detected(reading)))


def _without(monkeypatch: pytest.MonkeyPatch, *missing: str) -> list[str]:
    """Packages in ``missing`` look uninstalled to the plan; returns every package the plan looked for."""
    asked: list[str] = []

    def find(module: str) -> bool:
        asked.append(module)
        return module not in missing

    monkeypatch.setattr(platforms, "installed", find)
    return asked


# --------------------------------------------------------------------------------------------- the keys
def test_every_new_key_has_a_type_its_values_and_a_description() -> None:
    backend = PLAN_KEYS["quantization.backend"]
    assert backend.kind == "choice" and backend.choices == QUANT_BACKENDS == ("torchao", "quanto")
    for component in QUANTIZED_COMPONENTS:
        scheme = PLAN_KEYS[f"quantization.scheme.{component}"]
        assert scheme.kind == "choice" and scheme.choices == QUANT_SCHEMES and scheme.settable
        assert f"quantization.{component} " in scheme.description and "{" not in scheme.description
        quality = PLAN_KEYS[f"quantization.quality.{component}"]
        assert quality.kind == "false-or-mapping" and not quality.settable and "20 dB" in quality.description
    assert "quantization.scheme.vae" not in PLAN_KEYS  # the VAE has no Linear layer to quantize
    assert set(quant.SCHEMES) | {"none"} == set(QUANT_SCHEMES) == set(QUANT_SCHEME_FORMATS)
    assert "is computed" in (plan_override_problem("quantization.quality.dit", False) or "")
    assert "'int8_weight_only'" in (plan_override_problem("quantization.scheme.dit", "int9") or "")


# --------------------------------------------------------------------------------------------- defaults
def test_torchao_is_the_default_backend_found_without_importing_it() -> None:
    code = (
        "import sys; from acestep_core import resolve; plan = resolve().plan; "
        "print(plan.value('quantization.backend'), plan.value('quantization.scheme.dit'), "
        "'torchao' in sys.modules, 'torch' in sys.modules)"
    )
    env = {"MAX_CUDA_VRAM": "8", "PATH": "/usr/bin:/bin", "ACESTEP_CORE_NO_CACHE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["torchao", "int8_weight_only", "False", "False"]


def test_quanto_where_torchao_is_missing(make_manager, detected, monkeypatch) -> None:
    asked = _without(monkeypatch, "torchao")
    plan = _resolve(make_manager, detected, _card(8, (8, 6))).plan
    assert "torchao" in asked
    assert (
        plan.value("quantization.backend") == "quanto"
        and "torchao is not installed" in plan["quantization.backend"].reason
    )
    assert [plan.value(f"quantization.scheme.{c}") for c in QUANTIZED_COMPONENTS] == ["qint8"] * 3


@pytest.mark.parametrize(
    ("capability", "scheme"),
    [
        ((6, 1), "w8a8_dynamic"),
        ((7, 0), "int8_weight_only"),
        ((8, 6), "int8_weight_only"),
        ((9, 0), "int8_weight_only"),
        (None, "int8_weight_only"),
    ],
)
def test_the_int8_scheme_follows_compute_capability(make_manager, detected, capability, scheme) -> None:
    """Upstream's rule: w8a8_dynamic below 7.0, int8_weight_only elsewhere; fp8 is never a default."""
    plan = _resolve(make_manager, detected, _card(8, capability)).plan
    assert plan.value("quantization.dit") == "int8"  # Tier 4 quantizes
    assert {plan.value(f"quantization.scheme.{c}") for c in QUANTIZED_COMPONENTS} == {scheme}
    if scheme == "w8a8_dynamic":
        assert "below 7.0" in plan["quantization.scheme.dit"].reason


def test_fp8_a_table_asks_for_needs_sm_89_else_int8_holds_the_same_bytes() -> None:
    for capability, expected in (((8, 9), "fp8_weight_only"), ((8, 6), "int8_weight_only"), (None, "int8_weight_only")):
        scheme, why = quant.default_scheme("fp8", "torchao", _card(16, capability).device)
        assert scheme == expected, (capability, why)
    assert "8.9" in quant.default_scheme("fp8", "torchao", _card(16, (8, 6)).device)[1]
    assert quant.default_scheme("int4", "torchao", _card(16, (9, 0)).device)[0] == "qint4"
    assert [quant.default_scheme(f, "quanto", CPU)[0] for f in ("int8", "fp8", "int4")] == ["qint8", "qfloat8", "qint4"]


def test_the_cpu_plan_does_not_quantize_but_names_the_backend(make_manager, detected) -> None:
    plan = _resolve(make_manager, detected, MemoryReading(device=CPU)).plan
    assert plan.value("quantization.backend") == "torchao"
    assert all(plan.value(f"quantization.scheme.{c}") == "none" for c in QUANTIZED_COMPONENTS)
    assert plan.value("quantization.quality.dit") is False


# --------------------------------------------------------------------------------------------- what a user sets
def test_fp8_when_asked_on_sm_89_sets_the_format_too(make_manager, detected) -> None:
    plan = _resolve(make_manager, detected, _card(80, (9, 0)), {"quantization.scheme.dit": "fp8_weight_only"}).plan
    assert plan.value("quantization.scheme.dit") == "fp8_weight_only" and plan.value("quantization.dit") == "fp8"
    assert "follows the user's quantization.scheme.dit='fp8_weight_only'" in plan["quantization.dit"].reason
    assert plan.value("quantization.quality.dit")["snr_db"] == quant.quality("dit", "fp8_weight_only")["snr_db"]


def test_fp8_on_a_gpu_below_sm_89_is_refused_with_the_reason(make_manager, detected) -> None:
    resolution = _resolve(make_manager, detected, _card(16, (8, 6)), {"quantization.scheme.dit": "fp8_weight_only"})
    plan = resolution.plan
    assert plan.value("quantization.scheme.dit") == "int8_weight_only" and plan.value("quantization.dit") == "int8"
    assert any("fp8_weight_only" in w and "8.9" in w and "this GPU is 8.6" in w for w in resolution.warnings)


@pytest.mark.parametrize(("capability", "stored"), [((9, 0), "fp8"), (None, "fp8"), ((8, 6), "int8")])
def test_a_users_fp8_format_is_stored_as_fp8_where_the_card_can(make_manager, detected, capability, stored) -> None:
    resolution = _resolve(make_manager, detected, _card(16, capability), {"quantization.dit": "fp8"})
    plan = resolution.plan
    assert plan.value("quantization.dit") == stored
    assert plan.value("quantization.scheme.dit") == ("fp8_weight_only" if stored == "fp8" else "int8_weight_only")
    if stored == "int8":  # the format follows what the card stores, and the user is told
        assert any("quantization.dit='fp8' cannot run here" in w and "8.9" in w for w in resolution.warnings)


def test_a_users_format_on_the_cpu_runs_the_backends_scheme(make_manager, detected) -> None:
    plan = _resolve(make_manager, detected, MemoryReading(device=CPU), {"quantization.dit": "int8"}).plan
    assert plan.value("quantization.scheme.dit") == "int8_weight_only"
    assert "follows the user's quantization.dit='int8'" in plan["quantization.scheme.dit"].reason
    assert plan.value("quantization.quality.dit")["lossy"] is False
    assert plan.value("quantization.scheme.lm") == "none"  # only what the user asked for


def test_a_users_backend_rederives_every_scheme(make_manager, detected) -> None:
    plan = _resolve(make_manager, detected, _card(8, (8, 6)), {"quantization.backend": "quanto"}).plan
    assert [plan.value(f"quantization.scheme.{c}") for c in QUANTIZED_COMPONENTS] == ["qint8"] * 3
    assert "quantization.backend='quanto'" in plan["quantization.scheme.lm"].reason
    none = _resolve(make_manager, detected, _card(8, (8, 6)), {"quantization.scheme.lm": "none"}).plan
    assert none.value("quantization.lm") == "none" and none.value("quantization.quality.lm") is False


def test_a_backend_that_is_not_installed_is_refused(make_manager, detected, monkeypatch) -> None:
    _without(monkeypatch, "optimum.quanto")
    resolution = _resolve(make_manager, detected, _card(8, (8, 6)), {"quantization.scheme.dit": "qint4"})
    assert resolution.plan.value("quantization.scheme.dit") == "int8_weight_only"
    assert any("qint4 is quanto's, which is not installed" in w for w in resolution.warnings)


def test_a_format_and_a_scheme_that_disagree_are_a_usage_error(cli) -> None:
    with pytest.raises(ValueError, match=r"quantization.dit='fp8' and quantization.scheme.dit='int8_weight_only'"):
        Overrides(plan={"quantization.dit": "fp8", "quantization.scheme.dit": "int8_weight_only"})
    Overrides(plan={"quantization.dit": "int8", "quantization.scheme.dit": "w8a8_dynamic"})  # they agree
    outcome = cli("plan", "--vram", "8", "--set", "quantization.dit=fp8", "--set", "quantization.scheme.dit=qint8")
    assert outcome.code == 2 and "disagree" in outcome.err and "Traceback" not in outcome.text


# --------------------------------------------------------------------------------------------- memory
def test_the_memory_model_counts_the_plans_scheme_and_exclusions(make_manager, detected) -> None:
    plan = _resolve(make_manager, detected, _card(8, (8, 6))).plan
    choices = choices_from_plan(plan)
    assert choices.scheme("dit") == "int8_weight_only" and choices.exclude["dit"] == quant.DEFAULT_EXCLUDE["dit"]
    run = RunShape(duration_s=60, batch=1, lm_model="0.6B")
    dit = predict(run, choices).estimates["dit"].weights_bytes
    assert dit == dit_weight_bytes(DIT_SHAPE, quantization="int8_weight_only")
    # quanto keeps a bf16 scale a row and two scalar buffers a module; torchao a float32 scale and an int8 zero point
    quanto = predict(run, dataclasses.replace(choices, schemes={"dit": "qint8"})).estimates["dit"].weights_bytes
    rows = sum(
        layer.out_features for layer in quant.quantized_linears(quant.dit_linears(DIT_SHAPE), choices.exclude["dit"])
    )
    modules = len(quant.quantized_linears(quant.dit_linears(DIT_SHAPE), choices.exclude["dit"]))
    assert dit - quanto == rows * (4 + 1 - 2) - modules * 2 * 2
    # upstream's exact set (the decoder's embedders quantized too; not the condition encoder nor the codec) holds less
    upstream = dataclasses.replace(choices, exclude={**choices.exclude, "dit": quant.UPSTREAM_DIT_EXCLUDE})
    assert predict(run, upstream).estimates["dit"].weights_bytes < dit


def test_the_ladders_int8_rung_stores_the_backends_scheme() -> None:
    run = RunShape(duration_s=240, batch=4, lm_model="4B", lm_choice="auto")
    walked = list(steps(run, Choices(), device_budget(int(1.5 * GIB)), Abilities(int8_scheme="w8a8_dynamic")))
    rung = next((after, r) for _, after, r, _ in walked if r.name == "quantization.lm=int8")
    choices, taken = rung
    assert choices.quantization["lm"] == "int8" and choices.scheme("lm") == "w8a8_dynamic"
    assert "(w8a8_dynamic)" in taken.reason


# --------------------------------------------------------------------------------------------- upstream's table
UPSTREAM_TABLE = {"ACESTEP_CORE_TIERS": "upstream-2026-04"}


@pytest.mark.parametrize(
    ("gib", "capability", "scheme"),
    [(4, (8, 6), "int8_weight_only"), (8, (6, 1), "w8a8_dynamic"), (8, (8, 6), "int8_weight_only"), (16, None, None)],
)
def test_upstreams_table_quantizes_the_dit_only_in_torchaos_scheme(
    make_manager, detected, gib: float, capability: tuple[int, int] | None, scheme: str | None
) -> None:
    """upstream-2026-04's ``quantization = "int8"`` tiers: torchao's int8_weight_only (w8a8_dynamic below compute
    capability 7.0) on the DiT, and never the LM or the text encoder, which upstream does not quantize."""
    reading = _card(gib, capability)
    resolution = resolve(
        GenerationRequest(duration_s=60), manager=make_manager(detected(reading)), environ=UPSTREAM_TABLE
    )
    plan = resolution.plan
    assert resolution.tier.optimizations["quantization"] == "int8"
    assert resolution.tier.optimizations["quantize_components"] == ["dit"]
    assert plan.value("quantization.dit") == "int8"
    assert plan.value("quantization.scheme.dit") == (scheme or "int8_weight_only")
    for component in ("lm", "text_encoder"):
        assert plan.value(f"quantization.{component}") == "none"
        assert plan.value(f"quantization.scheme.{component}") == "none"
        assert "on the dit only (the table's quantize_components)" in plan[f"quantization.{component}"].reason
    default = _resolve(make_manager, detected, reading).plan  # the default table quantizes all three
    assert {default.value(f"quantization.{c}") for c in QUANTIZED_COMPONENTS} == {"int8"}


def test_the_ladder_keeps_to_the_components_upstreams_table_quantizes() -> None:
    """Tier 6b (no quantization) squeezed onto small cards: the ladder's int8 rung takes the DiT, never the LM or
    text encoder; the same tier without ``quantize_components`` quantizes the 4B LM where upstream's table steps
    down to a smaller LM instead."""
    tier = next(t for t in acestep_core_tiers_default.upstream_main_table().tiers if t.name == "tier6b")
    anything = dataclasses.replace(
        tier, optimizations={k: v for k, v in tier.optimizations.items() if k != "quantize_components"}
    )

    def plan(adjusted: AdjustedRequest, gib: float, on: Tier) -> dict:
        return {s.key: s.value for s in plan_settings(adjusted, on, _card(gib, (8, 6)))}

    squeezed = plan(AdjustedRequest(duration_s=240, batch_size=2, lm_model="1.7B", lm_choice="size"), 6, tier)
    assert "quantization.dit=int8" in squeezed["ladder.rungs"]
    assert [squeezed[f"quantization.{c}"] for c in ("lm", "text_encoder", "dit")] == ["none", "none", "int8"]
    big_lm = AdjustedRequest(duration_s=60, batch_size=1, lm_model="4B", lm_choice="on")
    upstream, unrestricted = plan(big_lm, 8, tier), plan(big_lm, 8, anything)
    assert not any(
        rung.startswith(("quantization.lm", "quantization.text_encoder")) for rung in upstream["ladder.rungs"]
    )
    assert "lm=1.7B" in upstream["ladder.rungs"] and upstream["quantization.lm"] == "none"
    assert "quantization.lm=int8" in unrestricted["ladder.rungs"] and unrestricted["quantization.lm"] == "int8"


@pytest.mark.parametrize(
    ("components", "problem"),
    [('["vae"]', "is not a list of distinct components"), ('["dit", "dit"]', "distinct"), ('"dit"', "is not a list")],
)
def test_a_tables_quantize_components_are_validated(components: str, problem: str) -> None:
    text = f"""
[table]
name = "t"
[[tiers]]
name = "one"
min_gb = 0
max_duration_with_lm_s = 60
max_duration_without_lm_s = 60
max_batch_with_lm = 1
max_batch_without_lm = 1
lm_models = []
lm_default_on = false
optimizations = {{ quantization = "int8", quantize_components = {components} }}
"""
    with pytest.raises(TableError, match=problem) as raised:
        parse_table(text, environ={"ACESTEP_CORE_NO_CACHE": "1"})
    assert "optimizations.quantize_components" in str(raised.value)
    good = parse_table(text.replace(components, '["dit", "lm"]'), environ={"ACESTEP_CORE_NO_CACHE": "1"})
    assert good.tiers[0].optimizations["quantize_components"] == ["dit", "lm"]


# --------------------------------------------------------------------------------------------- quality
def test_the_shipped_quality_table_says_where_it_came_from_and_covers_every_scheme() -> None:
    table = quant.quality_table()
    assert table["source"].startswith("benchmarks/bench_quant.py") and table["versions"]["torchao"].startswith("0.18")
    for component in QUANTIZED_COMPONENTS:
        assert set(table["components"][component]) == set(quant.SCHEMES)
    assert all("next_token_agreement" in figures for figures in table["components"]["lm"].values())
    for scheme, figures in table["components"]["dit"].items():
        assert quant.quality("dit", scheme)["lossy"] is (figures["snr_db"] < quant.LOSSY_BELOW_DB)


def test_a_dit_scheme_under_20_db_is_marked_lossy_with_its_figure(make_manager, detected, monkeypatch) -> None:
    shipped = quant.quality_table()
    worse = {**shipped, "components": {**shipped["components"], "dit": {"qint4": {"snr_db": 14.2}}}}
    monkeypatch.setattr(quant, "quality_table", lambda: worse)
    resolution = _resolve(make_manager, detected, _card(8, (8, 6)), {"quantization.scheme.dit": "qint4"})
    quality = resolution.plan["quantization.quality.dit"]
    assert quality.value["lossy"] is True and quality.value["snr_db"] == 14.2 and quality.warning
    assert any("lossy: qint4: 14.2 dB SNR against bf16, under 20 dB" in w for w in resolution.warnings)
    fine = quant.quality_setting("dit", "int8_weight_only")  # not in the patched table: not measured
    assert fine.value is False and "not been measured" in fine.reason


def test_the_lm_is_reported_not_judged() -> None:
    setting = quant.quality_setting("lm", "qint4")
    assert "lossy" not in setting.value and not setting.warning
    assert "next-token agreement" in setting.reason


def test_quanto_int4_groups() -> None:
    """quanto's rule: 128, lowered by 32 (not below 32) until it divides the inputs; one scale a row otherwise."""
    assert [quant.quanto_group_size(n) for n in (64, 128, 160, 192, 200, 256, 6144)] == [
        None,
        None,
        32,
        96,
        None,
        128,
        128,
    ]
