"""From a tier and a device to an optimization plan that is predicted to fit, with every reason.

Pure Python (no torch): the ``configure_optimizations`` hook of ``tiers_default`` calls
:func:`plan_settings` at every resolution. The plan is the tier's defaults (the table's
``optimizations``), made concrete for the hardware (attention kernel, precision, compile backend),
then checked against the device budget with the memory model and stepped down the ladder where it
does not fit (:mod:`acestep_core.optimize.ladder`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from acestep_core.optimize import layout, platforms
from acestep_core.optimize import quantization as quant
from acestep_core.optimize.components import components_table, model_set
from acestep_core.optimize.corrections import Corrections, corrections_for
from acestep_core.optimize.ladder import Abilities, LadderResult, Recovery, fit, lowered_settings, recover
from acestep_core.optimize.ladder import Refusal as LadderRefusal
from acestep_core.optimize.memory import (
    ALLOCATOR,
    NO_ROOM,
    Budget,
    Choices,
    Prediction,
    RunShape,
    gib,
    over_budget,
    predict,
)
from acestep_core.record import Record
from acestep_core.types import (
    AdjustedRequest,
    DeviceMemory,
    MemoryObservation,
    MemoryReading,
    OptimizationPlan,
    Resolution,
    Setting,
    Tier,
)
from acestep_core.vocabulary import (
    GIB,
    LATENT_RATE_HZ,
    PHASES,
    QUANT_SCHEME_FORMATS,
    QUANTIZED_COMPONENTS,
    SAFETY_MARGIN_BYTES,
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
    concrete for the hardware, then fitted to the budget (to each device's, where the reading's
    placement spans several: :func:`layout_settings`)."""
    if reading.several_devices:
        return layout_settings(adjusted, tier, reading)
    device = reading.device
    source = f"{tier.label} default"
    defaults = tier.optimizations
    attention = platforms.attention(bool(defaults.get("flash_attention", True)), reading, source)
    precision = platforms.precision(reading)
    settings = [
        attention,
        _dit_attention(attention),
        *(Setting(f"precision.{component}", value, why) for component, (value, why) in precision.items()),
        platforms.compile_setting(bool(defaults.get("compile", False)), reading, source),
    ]
    able = platforms.abilities(device)
    start = _tier_choices(tier, reading, able, attention.value, {c: v for c, (v, _) in precision.items()})
    run = run_shape(adjusted, tier)
    corrections = corrections_for(reading)
    result = _fitted(run, start.choices, _abilities(able, tier, device), device, corrections)
    final, final_run = (result.choices, result.run) if result else (start.choices, run)
    taken = {rung.name.split("=")[0]: rung.reason for rung in (result.rungs if result else ())}
    settings += _offload_settings(final, taken, start)
    settings += _quantization_settings(final, taken, start)
    settings += _quantization_exclude_settings()
    settings += _vae_settings(final, taken, start, result)
    settings += _model_settings(final_run, final)
    settings += _lm_settings(adjusted, tier, reading)
    if not device.is_accelerator:
        return settings + _host_settings(device)
    settings += _memory_settings(run, final_run, final, result)
    if corrections is not None and result is not None:
        settings.append(corrections_setting(result.prediction, corrections))
    return settings


class _Start(Record):
    """The tier's defaults made concrete for a device, before the ladder, with the reason for each."""

    choices: Choices
    offload_why: Mapping[str, str]
    quantization: str
    """The tier's weight format (``optimizations.quantization``)."""
    quantization_why: str
    quantized: tuple[str, ...]
    """The components the tier's format applies to (``optimizations.quantize_components``; every one by default)."""
    backend: str
    backend_why: str
    schemes: Mapping[str, tuple[str, str]]
    """Component → (the scheme the tier's format is stored in on this device, why)."""
    int8_scheme: str
    int8_why: str
    vae_why: str | None


def _dit_attention(attention: Setting) -> Setting:
    backend = DIFFUSERS_BACKENDS[attention.value]
    return Setting(
        "attention.dit", backend, f"diffusers backend {backend!r} for {attention.value!r} (set_attention_backend)"
    )


def quantized_components(tier: Tier) -> tuple[str, ...]:
    """The components the tier's ``quantization`` applies to, and that the ladder's int8 rung may take:
    ``optimizations.quantize_components`` where the table says (``upstream-2026-04``: the DiT only, as upstream
    quantizes), else every component with Linear layers."""
    listed = tier.optimizations.get("quantize_components")
    if not isinstance(listed, (list, tuple)):
        return QUANTIZED_COMPONENTS
    return tuple(c for c in QUANTIZED_COMPONENTS if c in listed)


def _tier_choices(
    tier: Tier, reading: MemoryReading, able: platforms.DeviceAbilities, attention: str, precision: Mapping[str, str]
) -> _Start:
    """What the tier's defaults ask for on this device: offload, quantization (format, backend, scheme) and VAE
    decode."""
    defaults, device = tier.optimizations, reading.device
    source = f"{tier.label} default"
    quantization = str(defaults.get("quantization", "none"))
    quantized = quantized_components(tier)
    backend, backend_why = quant.default_backend(platforms.installed)
    schemes: dict[str, tuple[str, str]] = {
        c: quant.default_scheme(quantization, backend, device) for c in QUANTIZED_COMPONENTS
    }
    int8_scheme, int8_why = quant.default_scheme("int8", backend, device)
    offload = bool(defaults.get("cpu_offload", False))
    offload_dit = bool(defaults.get("dit_cpu_offload", offload))
    vae_decode, tile_frames, tile_overlap, vae_why = "full", VAE_TILE_FRAMES, VAE_TILE_OVERLAP, None
    if able.max_vae_window is not None:
        tile_frames, tile_overlap = platforms.MPS_VAE_TILE
        vae_decode = "tiled"
        vae_why = (
            f"{device.backend}: every decode is tiled, {tile_frames}+2×{tile_overlap} latent frames "
            f"({(tile_frames + 2 * tile_overlap) * VAE_HOP:,} samples), under MPS's conv1d output limit of "
            f"{platforms.MPS_CONV_OUTPUT_LIMIT:,} ({able.max_vae_window} frames)"
        )
    choices = Choices(
        precision=dict(precision),
        # a format follows its scheme: fp8 the device cannot store falls back to int8 (the same byte a weight)
        quantization={
            c: (QUANT_SCHEME_FORMATS[schemes[c][0]] if able.quantize and c in quantized else "none") for c in PHASES
        },
        schemes={c: scheme for c, (scheme, _) in schemes.items()},
        offload={c: ("model" if (offload_dit if c == "dit" else offload) and able.offload else "none") for c in PHASES},
        attention=attention,
        vae_decode=vae_decode,
        tile_frames=tile_frames,
        tile_overlap=tile_overlap,
    )
    quantization_why = able.quantize_why or f"{source}: weight quantization {quantization}"
    if not able.quantize and device.is_accelerator:
        quantization_why += f" — the tier says {quantization}"
    offload_why: dict[str, str] = {
        c: _offload_reason(reading, offload_dit if c == "dit" else offload, source) for c in PHASES
    }
    return _Start(
        choices,
        offload_why,
        quantization,
        quantization_why,
        quantized,
        backend,
        backend_why,
        schemes,
        int8_scheme,
        int8_why,
        vae_why,
    )


def _abilities(able: platforms.DeviceAbilities, tier: Tier, device: DeviceMemory) -> Abilities:
    """What the ladder may do on ``device`` (which LMs it may step down to, which components it may quantize
    and in which scheme: the int8 scheme of the default backend there, the tier's components)."""
    int8_scheme, _ = quant.default_scheme("int8", quant.default_backend(platforms.installed)[0], device)
    return Abilities(
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
        quantize_components=quantized_components(tier),
    )


def ladder_abilities(device: DeviceMemory, tier: Tier) -> Abilities:
    """What the ladder may do on ``device`` (:func:`platforms.abilities`) within ``tier``'s LM sizes."""
    return _abilities(platforms.abilities(device), tier, device)


def _fitted(
    run: RunShape, choices: Choices, abilities: Abilities, device: DeviceMemory, corrections: Corrections | None
) -> LadderResult | None:
    """The ladder's fit to the device budget (this device's recorded runs correcting the model); None off an
    accelerator (no budget to fit)."""
    budget = platforms.budget_for(device) if device.is_accelerator else None
    return fit(run, choices, budget, abilities, corrections) if budget is not None else None


def _offload_settings(final: Choices, taken: Mapping[str, str], start: _Start) -> list[Setting]:
    return [
        Setting(
            f"offload.{component}",
            final.offload[component],
            f"ladder: {taken[f'offload.{component}']}"
            if f"offload.{component}" in taken
            else start.offload_why[component],
        )
        for component in PHASES
    ]


def _quantization_settings(final: Choices, taken: Mapping[str, str], start: _Start) -> list[Setting]:
    """``quantization.<c>`` (the format), ``quantization.backend``, and per component its scheme and the scheme's
    measured quality."""
    settings = []
    for component in PHASES:
        value = final.quantization[component]
        why = taken.get(f"quantization.{component}")
        if why is not None:
            why = f"ladder: {why}"
        elif component == "vae":
            why = "the VAE is not quantized: it is convolutions, and quantization here stores Linear layers"
        elif component not in start.quantized and start.quantization != "none":
            listed = ", ".join(start.quantized) or "no component"
            why = f"{start.quantization_why} on the {listed} only (the table's quantize_components)"
        elif value not in ("none", start.quantization):  # the tier's fp8 on a card without fp8
            why = f"{start.quantization_why}, stored as {value}: {start.schemes[component][1]}"
        else:
            why = start.quantization_why
        settings.append(Setting(f"quantization.{component}", value, why))
    settings.append(Setting("quantization.backend", start.backend, start.backend_why))
    for component in QUANTIZED_COMPONENTS:
        scheme = final.scheme(component)
        if f"quantization.{component}" in taken:
            why = f"ladder: the int8 rung stores {start.int8_why}"
        elif scheme == "none":
            why = f"quantization.{component} is none"
        else:
            why = start.schemes[component][1]
        settings.append(Setting(f"quantization.scheme.{component}", scheme, why))
        settings.append(quant.quality_setting(component, scheme))
    return settings


def _quantization_exclude_settings() -> list[Setting]:
    upstream = ", ".join(f'"{pattern}"' for pattern in quant.UPSTREAM_DIT_EXCLUDE)
    return [
        Setting(
            "quantization.exclude.lm",
            list(LM_QUANTIZATION_EXCLUDE),
            "the LM's lm_head is tied to its embedding: quantizing it unties it (+vocab × hidden bytes) and the "
            "int8 kernels dequantize it at every step (+vocab × hidden × 2 bytes), so it stays in the compute dtype",
        ),
        Setting(
            "quantization.exclude.dit",
            list(DIT_QUANTIZATION_EXCLUDE),
            "upstream quantizes the decoder's Linear layers: not the condition encoder, nor the audio tokenizer and "
            "detokenizer (each runs once a generation; the FSQ's projections read its code book); the timestep and "
            "condition embedders are small and feed AdaLN modulation, so they stay in the compute dtype too "
            f"(set [{upstream}] for upstream's exact set)",
        ),
    ]


def _vae_settings(
    final: Choices, taken: Mapping[str, str], start: _Start, result: LadderResult | None
) -> list[Setting]:
    tiled = final.vae_decode == "tiled"
    if result is None:
        whole = "no device budget to check: one decode"
    elif result.refusal is None:
        whole = "the whole clip fits the budget in one decode"
    else:
        whole = "the tier's one decode (the plan is refused: see ladder.refused)"
    why = taken.get("vae.tiled", start.vae_why or whole)
    return [
        Setting("vae.decode", final.vae_decode, f"ladder: {why}" if "vae.tiled" in taken else why),
        Setting(
            "vae.tile_frames",
            final.tile_frames,
            f"latent frames a tile ({final.tile_frames / LATENT_RATE_HZ:g} s of audio)"
            + ("" if tiled else "; used only when decode is tiled"),
        ),
        Setting(
            "vae.tile_overlap",
            final.tile_overlap,
            "latent frames of context decoded on each side of a tile and cropped away, wider than the decoder's "
            "receptive field",
        ),
    ]


def _lm_settings(adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading) -> list[Setting]:
    """The LM's memory share and backend, when the LM runs."""
    if adjusted.lm_model is None:
        return []
    settings = [_lm_memory_ratio(adjusted.lm_model, tier, reading)] if reading.device.total_bytes else []
    return [*settings, platforms.lm_backend(reading)]


def run_shape(adjusted: AdjustedRequest, tier: Tier) -> RunShape:
    """The run to budget for: the adjusted request, or the tier's longest clip when the LM chooses."""
    duration = adjusted.duration_s if adjusted.duration_s is not None else tier.max_duration_s(adjusted.lm_on)
    return RunShape(
        duration_s=float(duration),
        batch=adjusted.batch_size,
        lm_model=adjusted.lm_model,
        lm_choice=adjusted.lm_choice,
        models=model_set(adjusted.dit_model, adjusted.checkpoints),
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
        models=run.models,
    )


def check_resolution(resolution: Resolution) -> tuple[int, int | None]:
    """(predicted peak, budget) in bytes for a resolution's *final* plan, user overrides included;
    the budget is None off an accelerator. :func:`acestep_core.resolve` checks every plan with
    :func:`check_plan`; the pipeline checks again with this before it loads anything."""
    run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
    if resolution.reading.several_devices:
        shares = layout.device_shares(run, choices_from_plan(resolution.plan), resolution.reading)
        worst = layout.over_budget(shares) or layout.most_loaded(shares)
        return worst.prediction.peak_bytes, None if worst.budget is None else worst.budget.usable_bytes
    peak = predict(run, choices_from_plan(resolution.plan), corrections_for(resolution.reading)).peak_bytes
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
    A refusal the user or another plugin made stands, said as a warning with what the plan itself
    predicts. Off an accelerator there is no device budget and the plan is returned as it is. Over several
    devices each device's share is checked against its own budget (:func:`check_layout_plan`)."""
    if reading.several_devices:
        return check_layout_plan(plan, adjusted, tier, reading, user_keys=user_keys, force=force)
    device = reading.device
    budget = platforms.budget_for(device) if device.is_accelerator else None
    if budget is None:
        return plan
    check = PlanCheck.of(plan, adjusted, tier, budget, corrections_for(reading), user_keys=user_keys, force=force)
    settings = {s.key: s for s in plan} | check.repredicted(plan) | check.verdict(plan)
    return OptimizationPlan(tuple(settings.values()))


Refusal = Literal["none", "ladder", "user", "plugin"]
"""Who refused the plan :func:`check_plan` is given: nobody; the ladder (its own numbers, re-judged when
the user changed the plan or forces it); the user (``--set ladder.refused=…``); another plugin."""


class PlanCheck(Record):
    """What :func:`check_plan` knows of a plan: its prediction against the budget, who set what."""

    prediction: Prediction
    budget: Budget
    user: str
    """The user's settings as ``key=value, …``; empty when the user set none."""
    refusal: Refusal
    force: bool
    corrections: Corrections | None = None
    """This device's recorded runs, which corrected :attr:`prediction` (None: none recorded)."""

    @classmethod
    def of(
        cls,
        plan: OptimizationPlan,
        adjusted: AdjustedRequest,
        tier: Tier,
        budget: Budget,
        corrections: Corrections | None,
        *,
        user_keys: tuple[str, ...],
        force: bool,
    ) -> PlanCheck:
        prediction = predict(planned_run(plan, adjusted, tier), choices_from_plan(plan), corrections)
        user = ", ".join(f"{key}={plan.value(key)!r}" for key in user_keys)
        existing = plan.value("ladder.refused")
        refusal: Refusal
        if not existing:
            refusal = "none"
        elif "ladder.refused" in user_keys:
            refusal = "user"
        elif isinstance(existing, Mapping) and "predicted_bytes" in existing:
            refusal = "ladder"
        else:
            refusal = "plugin"
        return cls(prediction, budget, user, refusal, force, corrections)

    @property
    def fits(self) -> bool:
        return self.prediction.worst.peak_bytes <= self.budget.usable_bytes

    def repredicted(self, plan: OptimizationPlan) -> dict[str, Setting]:
        """The memory figures again, for a plan the user changed (the plan's own are for the plan before)."""
        if not self.user:
            return {}
        worst, usable = self.prediction.worst, self.budget.usable_bytes
        again = f"re-predicted with the user's settings ({self.user})"
        found = {
            "memory.phases": Setting(
                "memory.phases",
                {p.phase: round(p.peak_bytes / GIB, 2) for p in self.prediction.phases},
                f"{again}: " + "; ".join(f"{p.phase} {gib(p.peak_bytes)}" for p in self.prediction.phases),
                CHECK_PLUGIN,
            ),
            "memory.predicted_peak_gib": Setting(
                "memory.predicted_peak_gib",
                round(worst.peak_bytes / GIB, 2),
                f"{again}: {gib(worst.peak_bytes)} reserved peak in the {worst.phase} phase ({ALLOCATOR}), "
                + (f"of a {gib(usable)} budget" if self.budget.has_room else f"and the device has {NO_ROOM}"),
                CHECK_PLUGIN,
            ),
        }
        if "memory.budget_gib" not in plan:
            found["memory.budget_gib"] = Setting(
                "memory.budget_gib", round(usable / GIB, 2), f"budget = {self.budget.describe()}", CHECK_PLUGIN
            )
        if self.corrections is not None:
            found["memory.corrections"] = dataclasses.replace(
                corrections_setting(self.prediction, self.corrections), plugin=CHECK_PLUGIN
            )
        return found

    def verdict(self, plan: OptimizationPlan) -> dict[str, Setting]:
        """``ladder.refused`` (and ``memory.forced``) as the check decides them; empty = the plan's stand."""
        if self.refusal == "user":
            return {"ladder.refused": self._users_refusal(plan["ladder.refused"])}
        if self.refusal == "plugin" or (self.refusal == "ladder" and not (self.user or self.force)):
            return {}  # another plugin's refusal stands; so does the ladder's own, which says it with these numbers
        if self.fits:
            if self.refusal == "none" and "ladder.refused" in plan and not self.user:
                return {}
            return {"ladder.refused": Setting("ladder.refused", False, self._fits(), CHECK_PLUGIN)}
        if self.force:
            return self._forced()
        return {
            "ladder.refused": Setting(
                "ladder.refused",
                self._numbers(),
                f"refused: {self._over()} (--force / force=True runs it anyway)",
                CHECK_PLUGIN,
                warning=True,
            )
        }

    def _users_refusal(self, setting: Setting) -> Setting:
        itself = self._fits() if self.fits else f"is over budget: {self._over()}"
        return Setting(
            "ladder.refused",
            setting.value,
            f"refused because ladder.refused was set by the user (the plan itself {itself}); leave it out to run",
            setting.plugin,
            warning=True,
        )

    def _fits(self) -> str:
        user = f" with the user's {self.user}" if self.user else ""
        return f"fits: {gib(self.prediction.worst.peak_bytes)} ≤ {gib(self.budget.usable_bytes)}{user}"

    def _over(self) -> str:
        worst, usable = self.prediction.worst, self.budget.usable_bytes
        return (
            f"the {worst.phase} phase is predicted at {gib(worst.peak_bytes)}, {over_budget(worst.peak_bytes, usable)}"
            + (f" with the user's {self.user}" if self.user else "")
        )

    def _numbers(self) -> dict[str, Any]:
        worst, usable = self.prediction.worst, self.budget.usable_bytes
        shortfall = worst.peak_bytes - usable
        return {
            "predicted_gib": round(worst.peak_bytes / GIB, 2),
            "budget_gib": round(usable / GIB, 2),
            "shortfall_gib": round(shortfall / GIB, 2),
            "phase": worst.phase,
            "predicted_bytes": worst.peak_bytes,
            "budget_bytes": usable,
            "shortfall_bytes": shortfall,
        }

    def _forced(self) -> dict[str, Setting]:
        over = self._over()
        return {
            "ladder.refused": Setting(
                "ladder.refused", False, f"not refused: forced by the user ({over})", CHECK_PLUGIN
            ),
            "memory.forced": Setting(
                "memory.forced",
                self._numbers(),
                f"forced by the user: {over}; the run may run out of device memory",
                CHECK_PLUGIN,
                warning=True,
            ),
        }


# --------------------------------------------------------------------------------------------- pieces
def _model_settings(run: RunShape, choices: Choices) -> list[Setting]:
    """What the run loads, counted from its files or the documented shapes, and how the DiT steps."""
    table = components_table(run, choices.precision)
    listed = "; ".join(
        f"{component} {row['model']}: {row['parameters']:,} parameters, {gib(row['weight_bytes'])} in {row['dtype']}"
        for component, row in table.items()
    )
    dit = run.models.dit
    steps = (
        f"{dit.name}: classifier-free guidance, the conditional and unconditional passes as one forward of twice "
        "the batch each step (as upstream and diffusers run base / sft); the DiT's activations are budgeted at "
        "twice the batch"
        if dit.cfg
        else f"{dit.name}: guidance distilled into the weights, one forward a step"
    )
    return [
        Setting("memory.components", table, f"weights before quantization: {listed}"),
        Setting("dit.forwards_per_step", dit.forwards_per_step, steps),
    ]


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
            + (f"of a {gib(budget.usable_bytes)} budget" if budget.has_room else f"and the device has {NO_ROOM}"),
        )
    )
    settings.append(Setting("memory.budget_gib", round(budget.usable_bytes / GIB, 2), f"budget = {budget.describe()}"))
    rung_reasons = " | ".join(f"{r.name}: {r.reason}" for r in result.rungs)
    if not rung_reasons:
        if result.refusal is None:
            rung_reasons = "the tier's plan fits: no rung needed"
        elif not budget.has_room:
            rung_reasons = f"none taken: the device has {NO_ROOM}, so no rung can make anything fit"
        else:
            rung_reasons = "none taken: no rung lowers the predicted peak"
    settings.append(Setting("ladder.rungs", [r.name for r in result.rungs], rung_reasons))
    settings += lowered_settings(run, asked, dict.fromkeys(("lm", "batch", "duration"), gib(budget.usable_bytes)))
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


# --------------------------------------------------------------------------------------------- several devices
def layout_settings(adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading) -> list[Setting]:
    """The plan over several devices: each component's precision, offload and quantization from the
    device it runs on (the tier's defaults there), the DiT's attention and compile from the DiT's device,
    the LM's memory share and backend from the LM's; then every device's share fitted to its budget
    (:func:`acestep_core.optimize.layout.fit_layout`)."""
    placed = layout.groups(reading)
    owner: dict[str, str] = {component: reading.device_of(component).key for component in PHASES}
    source = f"{tier.label} default"
    defaults = tier.optimizations
    attention = platforms.attention(bool(defaults.get("flash_attention", True)), reading, source)
    precision = {c: platforms.precision(reading.reading_of(c))[c] for c in PHASES}
    settings = [
        attention,
        _dit_attention(attention),
        *(Setting(f"precision.{component}", value, why) for component, (value, why) in precision.items()),
        platforms.compile_setting(bool(defaults.get("compile", False)), reading, source),
    ]
    values: dict[str, str] = {c: v for c, (v, _) in precision.items()}
    able = {key: platforms.abilities(device) for key, (device, _) in placed.items()}
    starts = {
        key: _alone(
            _tier_choices(tier, dataclasses.replace(reading, device=device), able[key], attention.value, values),
            held,
            key,
        )
        for key, (device, held) in placed.items()
    }
    fitted = layout.fit_layout(
        run_shape(adjusted, tier),
        _owned_choices(starts, owner),
        reading,
        {key: _abilities(able[key], tier, device) for key, (device, _) in placed.items()},
    )
    final = fitted.choices
    per_device: dict[str, list[Setting]] = {}
    for key in placed:
        result = fitted.results.get(key)
        taken = {rung.name.split("=")[0]: rung.reason for rung in (result.rungs if result else ())}
        per_device[key] = [
            *_offload_settings(final, taken, starts[key]),
            *_quantization_settings(final, taken, starts[key]),
            *_vae_settings(final, taken, starts[key], result),
        ]
    for prefix in ("offload", "quantization"):
        settings += [_of(per_device[owner[c]], f"{prefix}.{c}", owner[c]) for c in PHASES]
    settings += _quantization_exclude_settings()
    settings += [
        _of(per_device[owner["vae"]], key, owner["vae"])
        for key in ("vae.decode", "vae.tile_frames", "vae.tile_overlap")
    ]
    lm_key = owner["lm"]
    settings += [
        dataclasses.replace(s, reason=f"on {lm_key}: {s.reason}")
        for s in _lm_settings(adjusted, tier, reading.reading_of("lm"))
    ]
    settings += _placed_model_settings(fitted.run, final, owner)
    return settings + layout.layout_memory_settings(run_shape(adjusted, tier), fitted, reading)


def _placed_model_settings(run: RunShape, choices: Choices, owner: Mapping[str, str]) -> list[Setting]:
    """:func:`_model_settings` over several devices: each component's row also names the device it runs on."""
    components, forwards = _model_settings(run, choices)
    table = {component: {**row, "device": owner[component]} for component, row in components.value.items()}
    where = ", ".join(f"{component} on {row['device']}" for component, row in table.items())
    return [dataclasses.replace(components, value=table, reason=f"{components.reason} ({where})"), forwards]


def _alone(start: _Start, held: tuple[str, ...], key: str) -> _Start:
    """A device holding one component keeps it resident: offloading it between phases frees nothing
    another phase there could use (upstream's #1269 keeps a dedicated LM card's LM resident too)."""
    if len(held) != 1 or start.choices.offload[held[0]] == "none":
        return start
    [component] = held
    offload = {**start.choices.offload, component: "none"}
    why = {
        **start.offload_why,
        component: f"alone on {key}: offloading it between phases would free memory no other phase there uses",
    }
    return dataclasses.replace(start, choices=dataclasses.replace(start.choices, offload=offload), offload_why=why)


def _owned_choices(starts: Mapping[str, _Start], owner: Mapping[str, str]) -> Choices:
    """One set of choices from the tier's defaults on each component's own device."""
    vae = starts[owner["vae"]].choices
    return dataclasses.replace(
        starts[owner["dit"]].choices,
        precision={c: starts[owner[c]].choices.precision[c] for c in PHASES},
        quantization={c: starts[owner[c]].choices.quantization[c] for c in PHASES},
        offload={c: starts[owner[c]].choices.offload[c] for c in PHASES},
        vae_decode=vae.vae_decode,
        tile_frames=vae.tile_frames,
        tile_overlap=vae.tile_overlap,
    )


def _of(settings: list[Setting], key: str, device: str) -> Setting:
    """The setting ``key`` of a device's own settings, its reason naming the device."""
    setting = next(s for s in settings if s.key == key)
    return dataclasses.replace(setting, reason=f"on {device}: {setting.reason}")


def check_layout_plan(
    plan: OptimizationPlan,
    adjusted: AdjustedRequest,
    tier: Tier,
    reading: MemoryReading,
    *,
    user_keys: tuple[str, ...] = (),
    force: bool = False,
) -> OptimizationPlan:
    """:func:`check_plan` over several devices: each device's share re-predicted with the final plan (the
    user's settings included) and checked against that device's budget; a layout over any device's
    budget is refused with the device, phase and shortfall unless ``force``."""
    shares = layout.device_shares(planned_run(plan, adjusted, tier), choices_from_plan(plan), reading)
    settings = {s.key: s for s in plan}
    user = ", ".join(f"{key}={plan.value(key)!r}" for key in user_keys)
    if user_keys:
        worst = layout.most_loaded(shares)
        again = f"re-predicted with the user's settings ({user})"
        settings["memory.phases"] = Setting(
            "memory.phases",
            {p.phase: round(p.peak_bytes / GIB, 2) for s in shares for p in s.prediction.phases},
            f"{again}: "
            + "; ".join(f"{p.phase} on {s.key} {gib(p.peak_bytes)}" for s in shares for p in s.prediction.phases),
            CHECK_PLUGIN,
        )
        settings["memory.devices"] = Setting(
            "memory.devices", {s.key: s.as_dict() for s in shares}, again, CHECK_PLUGIN
        )
        settings["memory.predicted_peak_gib"] = Setting(
            "memory.predicted_peak_gib",
            round(worst.prediction.peak_bytes / GIB, 2),
            f"{again}: the most loaded device, {worst.key}, {gib(worst.prediction.peak_bytes)} reserved peak in the "
            f"{worst.prediction.worst.phase} phase ({ALLOCATOR})",
            CHECK_PLUGIN,
        )
        if worst.budget is not None:
            settings["memory.budget_gib"] = Setting(
                "memory.budget_gib",
                round(worst.budget.usable_bytes / GIB, 2),
                f"budget of {worst.key} = {worst.budget.describe()}",
                CHECK_PLUGIN,
            )
    existing = plan.value("ladder.refused")
    ours = isinstance(existing, Mapping) and "predicted_bytes" in existing and "ladder.refused" not in user_keys
    if existing and not (ours and (user_keys or force)):
        return OptimizationPlan(tuple(settings.values()))
    over = layout.over_budget(shares)
    if over is None or over.budget is None:
        if existing or "ladder.refused" not in plan or user_keys:
            fits = "fits every device: " + ", ".join(
                f"{s.key} {gib(s.prediction.peak_bytes)}" + (f" ≤ {gib(s.budget.usable_bytes)}" if s.budget else "")
                for s in shares
            )
            settings["ladder.refused"] = Setting(
                "ladder.refused", False, fits + (f" with the user's {user}" if user else ""), CHECK_PLUGIN
            )
        return OptimizationPlan(tuple(settings.values()))
    phase = over.prediction.worst.phase
    refusal = LadderRefusal(over.prediction.peak_bytes, over.budget.usable_bytes, phase)
    numbers = layout.refusal_numbers(refusal, over.key)
    words = (
        f"on {over.device.describe()} the {phase} phase is predicted at {gib(refusal.predicted_bytes)}, "
        f"{gib(refusal.shortfall_bytes)} more than its {gib(refusal.budget_bytes)} budget"
        + (f" with the user's {user}" if user else "")
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
    elif existing and not user_keys:
        return plan
    else:
        settings["ladder.refused"] = Setting(
            "ladder.refused",
            numbers,
            f"refused: {words} (--force / force=True runs it anyway)",
            CHECK_PLUGIN,
            warning=True,
        )
    return OptimizationPlan(tuple(settings.values()))


# --------------------------------------------------------------------------------------------- corrections
def corrections_setting(prediction: Prediction, corrections: Corrections) -> Setting:
    """``memory.corrections``: which phases this device's recorded runs corrected, and from how many runs."""
    corrected = [p for p in prediction.phases if p.correction is not None]
    runs = {run_id for p in corrected if p.correction for run_id in p.correction.run_ids}
    if not corrected:
        return Setting(
            "memory.corrections",
            {},
            f"{len({o.run_id for o in corrections.observations})} run(s) recorded on this device, none of this "
            "plan's shapes or families: the model's figures stand",
        )
    value = {p.phase: p.correction.runs for p in corrected if p.correction}
    parts = "; ".join(
        f"{p.phase} {gib(p.model_reserved_bytes)} → {gib(p.peak_bytes)} ({p.correction.evidence})"
        for p in corrected
        if p.correction
    )
    return Setting("memory.corrections", value, f"corrected from {len(runs)} runs on this device: {parts}")


def explain_memory(resolution: Resolution) -> list[dict[str, Any]]:
    """Per phase of the resolution's final plan: the model's prediction, this device's correction and the
    evidence behind it (``acestep-core plan --explain-memory``)."""
    device = resolution.reading.device
    if not device.is_accelerator:
        return []
    run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
    choices = choices_from_plan(resolution.plan)
    corrections = corrections_for(resolution.reading)
    model = {p.phase: p for p in predict(run, choices).phases}
    budget = platforms.budget_for(device)
    rows = []
    for phase in predict(run, choices, corrections).phases:
        plain = model[phase.phase]
        correction = phase.correction
        rows.append(
            {
                "phase": phase.phase,
                "model_allocated_bytes": plain.model_allocated_bytes,
                "model_reserved_bytes": plain.peak_bytes,
                "others_on_device_bytes": phase.others_bytes,
                "allocated_bytes": phase.allocated_bytes,
                "reserved_bytes": phase.peak_bytes,
                "budget_bytes": None if budget is None else budget.usable_bytes,
                "detail": phase.detail,
                "correction": None
                if correction is None
                else {
                    "runs": correction.runs,
                    "factor": None if correction.factor is None else round(correction.factor, 4),
                    "reserved_ratio": None
                    if correction.reserved_ratio is None
                    else round(correction.reserved_ratio, 4),
                    "floor_own_bytes": correction.floor_own_bytes,
                    "floor_reserved_bytes": correction.floor_reserved_bytes,
                    "evidence": correction.evidence,
                },
            }
        )
    return rows


# --------------------------------------------------------------------------------------------- mid-run
def budget_now(reading: MemoryReading, in_use_bytes: int | None) -> tuple[Budget | None, str]:
    """The budget a phase retried after an out-of-memory error may use, and what it rests on: the plan's
    budget, lowered to what this run holds plus the device's *effective* free memory (device free + this
    process's allocator cache, :attr:`~acestep_core.DeviceMemory.effective_free_bytes`) less the margin, where
    the reading carries the allocator's figures (a running process reads them)."""
    device = reading.device
    planned = platforms.budget_for(device) if device.is_accelerator else None
    effective = device.effective_free_bytes
    if in_use_bytes is None or effective is None or device.allocator_reserved_bytes is None:
        return planned, "the plan's" + ("" if planned is None else f" {gib(planned.usable_bytes)}") + (
            " (no allocator figures here)"
        )
    now = Budget(
        in_use_bytes + effective,
        0,
        SAFETY_MARGIN_BYTES,
        context_label="nothing",
        total_label="held by this run + effective free",
    )
    basis = f"{gib(now.usable_bytes)} = held by this run {gib(in_use_bytes)} + {device.free_basis()} − margin"
    if planned is not None and planned.usable_bytes <= now.usable_bytes:
        return planned, f"the plan's {gib(planned.usable_bytes)} (the device has more: {basis})"
    return now, basis


def replan_after_oom(
    plan: Mapping[str, Any],
    resolution: Resolution,
    phase: str,
    *,
    batch: int,
    failure: MemoryObservation | None,
    budget: Budget | None,
) -> tuple[dict[str, Any], Recovery]:
    """The plan keys a run changes to retry ``phase`` after it ran out of memory (:func:`ladder.recover`):
    the run's current ``plan`` values and ``batch``, this device's recorded runs plus ``failure`` (so the
    failed configuration is predicted at least as large as it proved), and the ``budget`` available now."""
    adjusted, tier, reading = resolution.adjusted, resolution.tier, resolution.reading
    asked = run_shape(adjusted, tier)
    run = RunShape(
        duration_s=float(plan.get("ladder.duration_s", asked.duration_s)),
        batch=batch,
        lm_model=plan.get("ladder.lm_model", asked.lm_model) if "ladder.lm_model" in plan else asked.lm_model,
        lm_choice=asked.lm_choice,
        models=asked.models,
    )
    choices = choices_from_plan(plan)
    observations = (*reading.observations, *(() if failure is None else (failure,)))
    corrections = Corrections(observations) if observations else None
    budget = budget or platforms.budget_for(reading.device) or Budget(2**62, 0, 0)
    recovery = recover(run, choices, phase, budget, ladder_abilities(reading.device, tier), corrections)
    changes: dict[str, Any] = {}
    after = recovery.choices
    for component in PHASES:
        for key, before_value, after_value in (
            (f"offload.{component}", choices.offload.get(component), after.offload.get(component)),
            (f"quantization.{component}", choices.quantization.get(component), after.quantization.get(component)),
        ):
            if before_value != after_value:
                changes[key] = after_value
    vae: tuple[tuple[str, object, object], ...] = (
        ("vae.decode", choices.vae_decode, after.vae_decode),
        ("vae.tile_frames", choices.tile_frames, after.tile_frames),
        ("vae.tile_overlap", choices.tile_overlap, after.tile_overlap),
    )
    for key, before, now in vae:
        if before != now:
            changes[key] = now
    if recovery.run.batch != run.batch:
        changes["ladder.batch_size"] = recovery.run.batch
    if recovery.run.lm_model != run.lm_model:
        changes["ladder.lm_model"] = recovery.run.lm_model
    return changes, recovery
