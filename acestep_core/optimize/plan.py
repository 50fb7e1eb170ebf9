"""From a tier and a device to an optimization plan that is predicted to fit, with every reason.

Pure Python (no torch): the ``configure_optimizations`` hook of ``tiers_default`` calls
:func:`plan_settings` at every resolution. The plan is the tier's defaults (the table's
``optimizations``), made concrete for the hardware (attention kernel, precision, compile backend),
then checked against the device budget with the memory model and stepped down the ladder where it
does not fit (:mod:`acestep_core.optimize.ladder`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from acestep_core.optimize import platforms
from acestep_core.optimize import quantization as quant
from acestep_core.optimize.ladder import Abilities, LadderResult, fit
from acestep_core.optimize.memory import ALLOCATOR, Choices, RunShape, gib, predict
from acestep_core.types import AdjustedRequest, DeviceMemory, MemoryReading, OptimizationPlan, Resolution, Setting, Tier
from acestep_core.vocabulary import (
    GIB,
    LATENT_RATE_HZ,
    PHASES,
    QUANT_SCHEME_FORMATS,
    QUANTIZED_COMPONENTS,
    VAE_HOP,
    VAE_TILE_FRAMES,
    VAE_TILE_OVERLAP,
)

DIFFUSERS_BACKENDS: Mapping[str, str] = {"flash_attention_2": "flash", "sdpa": "native", "eager": "_native_math"}
"""The diffusers ``set_attention_backend`` name for each transformers attention implementation."""
LM_QUANTIZATION_EXCLUDE = quant.DEFAULT_EXCLUDE["lm"]
DIT_QUANTIZATION_EXCLUDE = quant.DEFAULT_EXCLUDE["dit"]


def plan_settings(adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading) -> list[Setting]:
    """The plan for ``adjusted`` on ``tier`` and ``reading``'s device: the tier's defaults made
    concrete for the hardware, then fitted to the budget."""
    defaults = tier.optimizations
    device = reading.device
    source = f"{tier.label} default"
    settings: list[Setting] = []

    attention = platforms.attention(bool(defaults.get("flash_attention", True)), reading, source)
    settings.append(attention)
    backend = DIFFUSERS_BACKENDS[attention.value]
    settings.append(
        Setting(
            "attention.dit", backend, f"diffusers backend {backend!r} for {attention.value!r} (set_attention_backend)"
        )
    )
    precision = platforms.precision(reading)
    settings += [Setting(f"precision.{component}", value, why) for component, (value, why) in precision.items()]
    settings.append(platforms.compile_setting(bool(defaults.get("compile", False)), reading, source))

    quantization = str(defaults.get("quantization", "none"))
    backend, backend_why = quant.default_backend(platforms.installed)
    schemes = {c: quant.default_scheme(quantization, backend, device) for c in QUANTIZED_COMPONENTS}
    int8_scheme, int8_why = quant.default_scheme("int8", backend, device)
    offload = bool(defaults.get("cpu_offload", False))
    offload_dit = bool(defaults.get("dit_cpu_offload", offload))
    able = platforms.abilities(device)
    abilities = Abilities(
        offload=able.offload,
        quantize=able.quantize,
        release=able.release,
        stream=able.stream,
        stream_note=""
        if able.offload
        else (
            "; on unified memory this lowers the GPU's working set only: the weights stay"
            " in the same RAM, in host pages macOS may compress"
        ),
        max_vae_window=able.max_vae_window,
        lm_models=tuple(tier.lm_models),
        int8_scheme=int8_scheme,
    )
    vae_decode, tile_frames, tile_overlap, vae_why = "full", VAE_TILE_FRAMES, VAE_TILE_OVERLAP, None
    if able.max_vae_window is not None:
        tile_frames, tile_overlap = platforms.MPS_VAE_TILE
        vae_decode = "tiled"
        vae_why = (
            f"{device.backend}: every decode is tiled, {tile_frames}+2×{tile_overlap} latent frames "
            f"({(tile_frames + 2 * tile_overlap) * VAE_HOP:,} samples), under MPS's conv1d output limit of "
            f"{platforms.MPS_CONV_OUTPUT_LIMIT:,} ({able.max_vae_window} frames)"
        )
    initial = Choices(
        precision={c: v for c, (v, _) in precision.items()},
        # a format follows its scheme: fp8 the device cannot store falls back to int8 (the same byte a weight)
        quantization={
            c: (QUANT_SCHEME_FORMATS[schemes[c][0]] if abilities.quantize and c in schemes else "none") for c in PHASES
        },
        schemes={c: scheme for c, (scheme, _) in schemes.items()},
        offload={
            c: ("model" if (offload_dit if c == "dit" else offload) and abilities.offload else "none") for c in PHASES
        },
        attention=attention.value,
        vae_decode=vae_decode,
        tile_frames=tile_frames,
        tile_overlap=tile_overlap,
    )
    offload_why = {c: _offload_reason(reading, offload_dit if c == "dit" else offload, source) for c in PHASES}
    quantization_why = able.quantize_why or f"{source}: weight quantization {quantization}"
    if not able.quantize and device.is_accelerator:
        quantization_why += f" — the tier says {quantization}"

    run = run_shape(adjusted, tier)
    budget = platforms.budget_for(device) if device.is_accelerator else None
    if budget is not None:
        fitted = fit(run, initial, budget, abilities)
        result: LadderResult | None = fitted
        final, final_run = fitted.choices, fitted.run
    else:
        result, final, final_run = None, initial, run
    taken = {rung.name.split("=")[0]: rung.reason for rung in (result.rungs if result else ())}

    for component in PHASES:
        value = final.offload[component]
        settings.append(
            Setting(
                f"offload.{component}",
                value,
                f"ladder: {taken[f'offload.{component}']}"
                if f"offload.{component}" in taken
                else offload_why[component],
            )
        )
    for component in PHASES:
        value = final.quantization[component]
        why = taken.get(f"quantization.{component}")
        if why is not None:
            why = f"ladder: {why}"
        elif component == "vae":
            why = "the VAE is not quantized: it is convolutions, and quantization here stores Linear layers"
        elif value not in ("none", quantization):  # the tier's fp8 on a card without fp8
            why = f"{quantization_why}, stored as {value}: {schemes[component][1]}"
        else:
            why = quantization_why
        settings.append(Setting(f"quantization.{component}", value, why))
    settings.append(Setting("quantization.backend", backend, backend_why))
    for component in QUANTIZED_COMPONENTS:
        scheme = final.scheme(component)
        if f"quantization.{component}" in taken:
            why = f"ladder: the int8 rung stores {int8_why}"
        elif scheme == "none":
            why = f"quantization.{component} is none"
        else:
            why = schemes[component][1]
        settings.append(Setting(f"quantization.scheme.{component}", scheme, why))
        settings.append(quant.quality_setting(component, scheme))
    settings.append(
        Setting(
            "quantization.exclude.lm",
            list(LM_QUANTIZATION_EXCLUDE),
            "the LM's lm_head is tied to its embedding: quantizing it unties it (+vocab × hidden bytes) and the "
            "int8 kernels dequantize it at every step (+vocab × hidden × 2 bytes), so it stays in the compute dtype",
        )
    )
    settings.append(
        Setting(
            "quantization.exclude.dit",
            list(DIT_QUANTIZATION_EXCLUDE),
            "upstream quantizes the decoder's Linear layers, not the condition encoder (it runs once a generation); "
            "the timestep and condition embedders are small and feed AdaLN modulation, so they stay in the compute "
            'dtype too (set ["condition_encoder.*"] for upstream\'s exact set)',
        )
    )

    tiled = final.vae_decode == "tiled"
    whole = "the whole clip fits the budget in one decode" if result else "no device budget to check: one decode"
    why = taken.get("vae.tiled", vae_why or whole)
    settings.append(Setting("vae.decode", final.vae_decode, f"ladder: {why}" if "vae.tiled" in taken else why))
    settings.append(
        Setting(
            "vae.tile_frames",
            final.tile_frames,
            f"latent frames a tile ({final.tile_frames / LATENT_RATE_HZ:g} s of audio)"
            + ("" if tiled else "; used only when decode is tiled"),
        )
    )
    settings.append(
        Setting(
            "vae.tile_overlap",
            final.tile_overlap,
            "latent frames of context decoded on each side of a tile and cropped away, wider than the decoder's "
            "receptive field",
        )
    )

    if adjusted.lm_model is not None and device.total_bytes:
        settings.append(_lm_memory_ratio(adjusted.lm_model, tier, reading))
    if adjusted.lm_model is not None:
        settings.append(platforms.lm_backend(reading))
    if not device.is_accelerator:
        return settings + _host_settings(device)
    settings += _memory_settings(run, final_run, final, result)
    return settings


def run_shape(adjusted: AdjustedRequest, tier: Tier) -> RunShape:
    """The run to budget for: the adjusted request, or the tier's longest clip when the LM chooses."""
    duration = adjusted.duration_s if adjusted.duration_s is not None else tier.max_duration_s(adjusted.lm_on)
    return RunShape(
        duration_s=float(duration), batch=adjusted.batch_size, lm_model=adjusted.lm_model, lm_choice=adjusted.lm_choice
    )


def choices_from_plan(plan: OptimizationPlan | Mapping[str, Any]) -> Choices:
    """The memory-relevant choices of a (possibly user-overridden) plan."""
    values = plan.as_dict() if isinstance(plan, OptimizationPlan) else dict(plan)
    exclude = values.get("quantization.exclude.lm", list(LM_QUANTIZATION_EXCLUDE))
    return Choices(
        precision={c: values.get(f"precision.{c}", "bf16") for c in PHASES},
        quantization={c: values.get(f"quantization.{c}", "none") for c in PHASES},
        schemes={c: quant.scheme_for(values, c) for c in QUANTIZED_COMPONENTS},
        exclude={
            c: tuple(values.get(f"quantization.exclude.{c}", quant.DEFAULT_EXCLUDE[c])) for c in QUANTIZED_COMPONENTS
        },
        offload={c: values.get(f"offload.{c}", "none") for c in PHASES},
        attention=values.get("attention", "sdpa"),
        vae_decode=values.get("vae.decode", "full"),
        tile_frames=int(values.get("vae.tile_frames", VAE_TILE_FRAMES)),
        tile_overlap=int(values.get("vae.tile_overlap", VAE_TILE_OVERLAP)),
        quantize_lm_head="lm_head" not in exclude,
    )


def planned_run(plan: OptimizationPlan, adjusted: AdjustedRequest, tier: Tier) -> RunShape:
    """The run a plan is for: the adjusted request, with the ladder's lower batch or duration if it took one."""
    run = run_shape(adjusted, tier)
    return RunShape(
        duration_s=float(plan.value("ladder.duration_s", run.duration_s)),
        batch=int(plan.value("ladder.batch_size", run.batch)),
        lm_model=plan.value("ladder.lm_model", run.lm_model) if "ladder.lm_model" in plan else run.lm_model,
        lm_choice=run.lm_choice,
    )


def check_resolution(resolution: Resolution) -> tuple[int, int | None]:
    """(predicted peak, budget) in bytes for a resolution's *final* plan, user overrides included;
    the budget is None off an accelerator. :func:`acestep_core.resolve` checks every plan with
    :func:`check_plan`; the pipeline checks again with this before it loads anything."""
    run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
    peak = predict(run, choices_from_plan(resolution.plan)).peak_bytes
    device = resolution.reading.device
    # on a CPU the model's figures are GPU-shaped (not predicted there), so nothing is checked
    budget = platforms.budget_for(device) if device.is_accelerator else None
    return peak, None if budget is None else budget.usable_bytes


CHECK_PLUGIN = "acestep_core"
"""The ``plugin`` of the settings the final check writes (the core, after every plugin and override)."""


def check_plan(
    plan: OptimizationPlan,
    adjusted: AdjustedRequest,
    tier: Tier,
    reading: MemoryReading,
    *,
    user_keys: tuple[str, ...] = (),
    force: bool = False,
) -> OptimizationPlan:
    """The final plan checked against the device budget: re-predicted with the user's settings (``user_keys``
    were set by the user) and refused when over budget (``ladder.refused`` with the phase, predicted,
    budget and shortfall) unless ``force``, which keeps it and records ``memory.forced`` (warned).
    Off an accelerator there is no device budget and the plan is returned as it is."""
    device = reading.device
    budget = platforms.budget_for(device) if device.is_accelerator else None
    if budget is None:
        return plan
    run = planned_run(plan, adjusted, tier)
    prediction = predict(run, choices_from_plan(plan))
    worst = prediction.worst
    settings = {s.key: s for s in plan}
    user = ", ".join(f"{key}={plan.value(key)!r}" for key in user_keys)
    if user_keys:
        settings["memory.phases"] = Setting(
            "memory.phases",
            {p.phase: round(p.peak_bytes / GIB, 2) for p in prediction.phases},
            f"re-predicted with the user's settings ({user}): "
            + "; ".join(f"{p.phase} {gib(p.peak_bytes)}" for p in prediction.phases),
            CHECK_PLUGIN,
        )
        settings["memory.predicted_peak_gib"] = Setting(
            "memory.predicted_peak_gib",
            round(worst.peak_bytes / GIB, 2),
            f"re-predicted with the user's settings ({user}): {gib(worst.peak_bytes)} reserved peak in the "
            f"{worst.phase} phase ({ALLOCATOR}), of a {gib(budget.usable_bytes)} budget",
            CHECK_PLUGIN,
        )
        settings.setdefault(
            "memory.budget_gib",
            Setting(
                "memory.budget_gib", round(budget.usable_bytes / GIB, 2), f"budget = {budget.describe()}", CHECK_PLUGIN
            ),
        )
    existing = plan.value("ladder.refused")
    ours = isinstance(existing, Mapping) and "predicted_bytes" in existing and "ladder.refused" not in user_keys
    if existing and not (ours and (user_keys or force)):
        # a refusal the user or another plugin made stands; the ladder's own is re-judged after user settings
        return OptimizationPlan(tuple(settings.values()))
    if worst.peak_bytes <= budget.usable_bytes:
        if existing or "ladder.refused" not in plan or user_keys:
            fits = f"fits: {gib(worst.peak_bytes)} ≤ {gib(budget.usable_bytes)}"
            settings["ladder.refused"] = Setting(
                "ladder.refused", False, fits + (f" with the user's {user}" if user else ""), CHECK_PLUGIN
            )
        return OptimizationPlan(tuple(settings.values()))
    shortfall = worst.peak_bytes - budget.usable_bytes
    numbers = {
        "predicted_gib": round(worst.peak_bytes / GIB, 2),
        "budget_gib": round(budget.usable_bytes / GIB, 2),
        "shortfall_gib": round(shortfall / GIB, 2),
        "phase": worst.phase,
        "predicted_bytes": worst.peak_bytes,
        "budget_bytes": budget.usable_bytes,
        "shortfall_bytes": shortfall,
    }
    words = (
        f"the {worst.phase} phase is predicted at {gib(worst.peak_bytes)}, {gib(shortfall)} more than the "
        f"{gib(budget.usable_bytes)} budget" + (f" with the user's {user}" if user else "")
    )
    if force:
        settings["ladder.refused"] = Setting(
            "ladder.refused", False, f"not refused: forced by the user ({words})", CHECK_PLUGIN
        )
        settings["memory.forced"] = Setting(
            "memory.forced",
            numbers,
            f"forced by the user: {words}; the run may run out of device memory",
            CHECK_PLUGIN,
            warning=True,
        )
    elif plan.value("ladder.refused") and not user_keys:
        return plan  # the ladder's own refusal already says it, with these numbers
    else:
        settings["ladder.refused"] = Setting(
            "ladder.refused",
            numbers,
            f"refused: {words} (--force / force=True runs it anyway)",
            CHECK_PLUGIN,
            warning=True,
        )
    return OptimizationPlan(tuple(settings.values()))


# --------------------------------------------------------------------------------------------- pieces
def _memory_settings(asked: RunShape, run: RunShape, choices: Choices, result: LadderResult | None) -> list[Setting]:
    prediction = result.prediction if result else predict(run, choices)
    phases = {p.phase: round(p.peak_bytes / GIB, 2) for p in prediction.phases}
    worst = prediction.worst
    explain = "; ".join(
        f"{p.phase} {gib(p.peak_bytes)} ({', '.join(f'{c} {gib(b)}' for c, b in p.resident.items())} + {p.detail})"
        for p in prediction.phases
    )
    lm = f"LM {run.lm_model}, " if run.lm_model else ""
    settings = [Setting("memory.phases", phases, f"predicted peak per phase: {explain}")]
    if result is None:
        settings.append(
            Setting(
                "memory.predicted_peak_gib",
                round(worst.peak_bytes / GIB, 2),
                f"{lm}{run.duration_s:g} s × {run.batch}: {gib(worst.peak_bytes)} in the {worst.phase} phase; no "
                "device budget (CPU): not checked",
            )
        )
        settings.append(Setting("memory.budget_gib", None, "running on the CPU: host memory is not budgeted"))
        settings.append(Setting("ladder.rungs", [], "no device budget: the ladder is not run"))
        settings.append(Setting("ladder.refused", False, "no device budget: nothing to refuse"))
        return settings
    budget = result.budget
    settings.append(
        Setting(
            "memory.predicted_peak_gib",
            round(worst.peak_bytes / GIB, 2),
            f"{lm}{run.duration_s:g} s × {run.batch}: {gib(worst.peak_bytes)} reserved peak predicted "
            f"in the {worst.phase} phase ({gib(worst.allocated_bytes)} allocated; {ALLOCATOR}), "
            f"of a {gib(budget.usable_bytes)} budget",
        )
    )
    settings.append(Setting("memory.budget_gib", round(budget.usable_bytes / GIB, 2), f"budget = {budget.describe()}"))
    rung_reasons = " | ".join(f"{r.name}: {r.reason}" for r in result.rungs)
    settings.append(
        Setting("ladder.rungs", [r.name for r in result.rungs], rung_reasons or "the tier's plan fits: no rung needed")
    )
    if run.lm_model != asked.lm_model:
        now = f"the {run.lm_model} LM" if run.lm_model else "no LM"
        settings.append(
            Setting(
                "ladder.lm_model",
                run.lm_model,
                f"{now} instead of the {asked.lm_model} to fit {gib(budget.usable_bytes)}",
                warning=True,
            )
        )
    if run.batch != asked.batch:
        settings.append(
            Setting(
                "ladder.batch_size",
                run.batch,
                f"batch lowered from {asked.batch} to {run.batch} to fit {gib(budget.usable_bytes)}",
                warning=True,
            )
        )
    if run.duration_s != asked.duration_s:
        settings.append(
            Setting(
                "ladder.duration_s",
                run.duration_s,
                f"duration lowered from {asked.duration_s:g} s to {run.duration_s:g} s to fit "
                f"{gib(budget.usable_bytes)}",
                warning=True,
            )
        )
    if result.refusal is None:
        settings.append(Setting("ladder.refused", False, f"fits: {gib(worst.peak_bytes)} ≤ {gib(budget.usable_bytes)}"))
    else:
        refusal = result.refusal
        numbers = {
            "predicted_gib": round(refusal.predicted_bytes / GIB, 2),
            "budget_gib": round(refusal.budget_bytes / GIB, 2),
            "shortfall_gib": round(refusal.shortfall_bytes / GIB, 2),
            "phase": refusal.phase,
            "predicted_bytes": refusal.predicted_bytes,
            "budget_bytes": refusal.budget_bytes,
            "shortfall_bytes": refusal.shortfall_bytes,
        }
        settings.append(Setting("ladder.refused", numbers, refusal.message(), warning=True))
    return settings


CPU_NOT_PREDICTED = (
    "not predicted on a CPU: the memory model predicts what the real-size components allocate on a GPU "
    "(weights, KV cache, activations), fitted to H100 readings; on a CPU a run's memory is the process's RSS "
    "— the interpreter and torch's libraries before any model, then whichever components are built "
    "(generate --size tiny builds stand-ins of a few MB, --size real the full ones) — which it does not model"
)


def _host_settings(device: DeviceMemory) -> list[Setting]:
    """The CPU's memory lines: the host's available memory as the budget, and no GPU-shaped prediction."""
    budget = platforms.host_budget(device)
    where = device.sources.get("free_bytes", "the detection plugin")
    if budget is None:
        why = "running on the CPU, and the host's available memory was not read: not budgeted"
        budget_setting = Setting("memory.budget_gib", None, why)
    else:
        why = f"running on the CPU: the host's available memory ({where})"
        budget_setting = Setting("memory.budget_gib", round(budget.usable_bytes / GIB, 2), why)
    return [
        Setting("memory.phases", None, CPU_NOT_PREDICTED),
        Setting("memory.predicted_peak_gib", None, CPU_NOT_PREDICTED),
        budget_setting,
        Setting("ladder.rungs", [], "no prediction on a CPU: the ladder is not run"),
        Setting("ladder.refused", False, "no prediction on a CPU: nothing to refuse"),
    ]


def _offload_reason(reading: MemoryReading, offload: bool, source: str) -> str:
    device = reading.device
    if not device.is_accelerator:
        return "running on the CPU: nothing to offload"
    if device.unified_memory:
        return "unified memory: offloading moves nothing"
    return f"{source}: CPU offload {'on (between phases)' if offload else 'off'}"


def _lm_memory_ratio(model: str, tier: Tier, reading: MemoryReading) -> Setting:
    total_gb = (reading.device.total_bytes or 0) / GIB
    allocation = tier.lm_memory_gb.get(model)
    if allocation is None:
        return Setting(
            "lm.gpu_memory_ratio", 0.5, f"{tier.label} sets no fixed allocation for the {model} LM: half of the device"
        )
    ratio = tier.lm_memory_ratio(allocation, total_gb)
    return Setting(
        "lm.gpu_memory_ratio",
        ratio,
        f"{tier.label} allots {allocation:g} GB to the {model} LM, of {total_gb:.2f} GiB (ratio within the "
        "tier's bounds)",
    )
