"""A run's closing report: the decisions behind it and what each phase did."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from acestep_core.types import COMPONENTS, Resolution
from acestep_core.vocabulary import MIB

if TYPE_CHECKING:
    from acestep_core.runtime.pipeline.records import GenerationResult

_PLAN_LINES = (
    "attention",
    "compile",
    *(f"precision.{c}" for c in COMPONENTS),
    *(f"offload.{c}" for c in COMPONENTS),
    *(f"quantization.{c}" for c in COMPONENTS),
    "vae.decode",
    "memory.predicted_peak_gib",
)


def decision_lines(resolution: Resolution, recoveries: Iterable[Mapping[str, Any]] = ()) -> list[str]:
    """The decisions that shaped a run, one line each: tier, clamps, overrides, the plan, and each recovery
    from an out-of-memory error."""
    tier = resolution.tier
    lines = [
        f"tier: {tier.label} ({tier.vram_label()}) from table {resolution.table!r} "
        f"[{resolution.decided_by('select_tier')}]"
    ]
    # a quiet default (the tier's recommended LM) is not a clamp: only warnings are
    lines += [
        f"{'clamp' if change.warning else 'default'}: {change.reason} [{change.plugin}]"
        for change in resolution.adjusted.changes
    ]
    lines += [f"override: {o.key} = {o.value!r} (the tier gave {o.default!r})" for o in resolution.overrides]
    for key in _PLAN_LINES:
        if key in resolution.plan:
            setting = resolution.plan[key]
            lines.append(f"plan: {key} = {setting.value!r}: {setting.reason} [{setting.plugin}]")
    for recovery in recoveries:
        taken = "; ".join(f"{r['name']}: {r['reason']}" for r in recovery["rungs"]) or "no rung helped"
        lines.append(
            f"recovery: the {recovery['phase']} phase ran out of device memory ({recovery['error']}); took {taken}; "
            f"budget {recovery['budget_basis']}; retry: {recovery['retry']} [acestep_core.runtime]"
        )
    return lines


def render_report(result: GenerationResult) -> str:
    """The closing report, as text."""
    adjusted = result.resolution.adjusted
    lines = [
        f"generated {len(result.clips)} clip(s) in {result.seconds:.2f} s "
        f"({result.size} models; LM {adjusted.lm_model or 'off'}, batch {adjusted.batch_size})"
    ]
    lines.append(f"{'phase':<13}{'device':<9}{'time':>9}  peak memory")
    for phase in result.phases:
        peak = "?" if phase.peak_bytes is None else f"{phase.peak_bytes / MIB:,.0f} MiB"
        lines.append(f"{phase.name:<13}{phase.device:<9}{phase.seconds:>8.2f}s  {peak} ({phase.peak_measure})")
        for key, value in phase.details.items():
            lines.append(f"{'':<13}{key}: {value}")
    lines.append("clips")
    for clip in result.clips:
        codes = "" if clip.codes is None else f", {clip.codes} codes"
        lines.append(f"  {clip.path}  {clip.duration_s:g} s, {clip.samples} samples{codes}")
    lines.append("decisions")
    lines += [f"  {line}" for line in decision_lines(result.resolution, result.recoveries)]
    if result.resolution.warnings:
        lines.append("warnings")
        lines += [f"  ! {w}" for w in result.resolution.warnings]
    lines.append("notes")
    lines += [f"  * {note}" for note in result.notes]
    return "\n".join(lines)
