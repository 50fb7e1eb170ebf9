"""The page's logic without Gradio: controls → the CLI's own arguments → one resolution → what to show.

The page never decides anything itself. Its controls are written as the arguments of
``acestep-core plan`` (:func:`cli_argv`), parsed by the CLI's own parser and resolved by the CLI's
own :func:`~acestep_core.cli.resolution.resolve_from_args`, so a page and a command line given the
same inputs print the same decision, and a bad value gets the CLI's own message.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from acestep_core.cli import UsageError
from acestep_core.hookspecs import PLAN_KEYS
from acestep_core.plugins import get_plugin_manager
from acestep_core.resolve import available_tables
from acestep_core.tables import TableError
from acestep_core.types import GIB, LM_SIZES, DeviceMemory, Resolution
from acestep_core.vocabulary import COMPONENTS, LM_MODES, MIN_DURATION_S

COMPUTED_PREFIXES = ("memory.", "ladder.")
"""Plan keys the planner computes from the others (predictions, ladder): shown, not offered as overrides."""
PLAN_OVERRIDE_KEYS: tuple[str, ...] = tuple(
    k for k, spec in PLAN_KEYS.items() if spec.settable and not k.startswith(COMPUTED_PREFIXES)
)
"""The optimization keys of the plan's schema a user may set (the CLI's ``--set KEY=VALUE``)."""
DURATION_MIN_S = MIN_DURATION_S
PHASE_NAMES = COMPONENTS


@dataclass(frozen=True)
class PageInputs:
    """Every control that shapes the decision. Empty text / None means "not set" (the tier decides)."""

    vram: str = ""
    """Simulated memory in GB (``--vram``); empty: detect the real device (or MAX_CUDA_VRAM)."""
    device: str = ""
    replay: str = ""
    """A recorded device to replay (``--replay``: a bundled name or a JSON file)."""
    table: str = ""
    duration: float | None = 30
    duration_auto: bool = False
    """Let the LM choose the duration (no ``--duration``)."""
    batch: int = 1
    lm_mode: str = "auto"
    lm_size: str | None = None
    max_duration: str = ""
    max_batch: str = ""
    allow_lm: tuple[str, ...] | None = None
    plan: Mapping[str, str] = field(default_factory=dict)
    """Plan key → its value as typed (JSON, else a string), as ``--set KEY=VALUE``."""


def cli_argv(inputs: PageInputs) -> list[str]:
    """The ``acestep-core plan`` arguments that say what the page's controls say."""
    argv: list[str] = []
    if inputs.vram.strip():
        argv += ["--vram", inputs.vram.strip()]
    if inputs.replay.strip():
        argv += ["--replay", inputs.replay.strip()]
    if inputs.device.strip():
        argv += ["--device", inputs.device.strip()]
    if inputs.table.strip():
        argv += ["--tiers", inputs.table.strip()]
    if not inputs.duration_auto and inputs.duration is not None:
        argv += ["--duration", _number(inputs.duration)]
    argv += ["--batch", _number(inputs.batch)]
    if inputs.lm_mode not in LM_MODES:
        raise UsageError(f"LM must be one of {', '.join(LM_MODES)}, not {inputs.lm_mode!r}")
    if inputs.lm_mode == "on":
        if not inputs.lm_size:
            raise UsageError(f"choose an LM size ({', '.join(LM_SIZES)}) or set the LM to auto")
        argv += ["--lm", inputs.lm_size]
    else:
        argv += ["--lm", "none" if inputs.lm_mode == "off" else "auto"]
    if inputs.max_duration.strip():
        argv += ["--max-duration", inputs.max_duration.strip()]
    if inputs.max_batch.strip():
        argv += ["--max-batch", inputs.max_batch.strip()]
    if inputs.allow_lm is not None:
        argv += ["--allow-lm", ",".join(inputs.allow_lm)]
    for key, raw in inputs.plan.items():
        if raw is not None and str(raw).strip():
            argv += ["--set", f"{key}={str(raw).strip()}"]
    return argv


def _number(value: float | int) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


@functools.cache
def _plan_parser() -> argparse.ArgumentParser:
    from acestep_core.cli import build_parser

    parser = build_parser("plan")
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    plan = subparsers.choices["plan"]
    plan.exit_on_error = False
    return plan


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """``argv`` through the CLI's own ``plan`` parser; a bad value raises :class:`UsageError` in its words."""
    try:
        return _plan_parser().parse_args(argv)
    except argparse.ArgumentError as error:
        raise UsageError(str(error)) from None
    except SystemExit:
        raise UsageError(f"the command line could not be parsed: acestep-core plan {' '.join(argv)}") from None


def resolve_inputs(inputs: PageInputs) -> Resolution:
    """The resolution ``acestep-core plan`` makes for these inputs (raises what the CLI would report)."""
    from acestep_core.cli.resolution import resolve_from_args

    return resolve_from_args(parse_cli(cli_argv(inputs)))


def installed_tables() -> list[str]:
    """Every installed tier table's name (valid ones; invalid ones are reported by ``plugins``)."""
    tables, _ = available_tables(get_plugin_manager())
    return list(dict.fromkeys(table.name for _, table in tables))


def validation_lines(name: str, error: TableError) -> list[str]:
    """A failed table as ``acestep-core tiers validate`` prints it."""
    return [f"{name}: {len(error.problems)} problem(s)"] + [f"  - {problem}" for problem in error.problems]


# --------------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class LmChoice:
    size: str
    available: bool
    recommended: bool
    reason: str

    @property
    def label(self) -> str:
        if self.recommended:
            return f"{self.size} ★ recommended"
        return self.size if self.available else f"{self.size} ✗ unavailable"


@dataclass(frozen=True)
class PageView:
    """What the page shows for one resolution."""

    tier: str
    hardware: str
    warnings: str
    limits: str
    duration_max: int
    duration_value: float | None
    batch_max: int
    batch_value: int
    lm_mode: str
    lm_size: str | None
    lm_choices: tuple[LmChoice, ...]
    lm_note: str
    overrides: str
    plan_chart: str
    plan_table: str
    decision_json: str


def lm_choices(resolution: Resolution) -> tuple[LmChoice, ...]:
    tier = resolution.tier
    choices = []
    for size in LM_SIZES:
        available = size in tier.lm_models
        if available:
            memory = tier.lm_memory_gb.get(size)
            reason = f"allowed on {tier.label}" + (f" ({memory:g} GB set aside)" if memory is not None else "")
        elif not tier.lm_models:
            reason = f"{tier.label} ({tier.vram_label()}) allows no LM"
        else:
            reason = f"{tier.label} ({tier.vram_label()}) allows only {', '.join(tier.lm_models)}"
        choices.append(LmChoice(size, available, size == tier.recommended_lm, reason))
    return tuple(choices)


def render(resolution: Resolution, inputs: PageInputs) -> PageView:
    tier, adjusted = resolution.tier, resolution.adjusted
    lm_on = adjusted.lm_on
    choices = lm_choices(resolution)
    lm_note = "\n".join(
        f"- **{c.size}**: {'✓' if c.available else '✗'} {c.reason}"
        + (" — the tier's recommended size" if c.recommended else "")
        for c in choices
    )
    lm_changes = [c for c in adjusted.changes if c.field in ("lm_model", "lm")]
    if lm_changes:
        lm_note += "\n\n" + "\n".join(f"> {'⚠' if c.warning else 'ℹ'} {c.reason}" for c in lm_changes)
    size_shown = adjusted.lm_model or inputs.lm_size or tier.recommended_lm
    return PageView(
        tier=render_tier(resolution),
        hardware=render_hardware(resolution),
        warnings=render_warnings(resolution),
        limits=render_limits(resolution),
        duration_max=int(tier.max_duration_s(lm_on)),
        duration_value=adjusted.duration_s,
        batch_max=int(tier.max_batch(lm_on)),
        batch_value=adjusted.batch_size,
        lm_mode=inputs.lm_mode,
        lm_size=size_shown,
        lm_choices=choices,
        lm_note=lm_note,
        overrides=render_overrides(resolution),
        plan_chart=render_plan_chart(resolution),
        plan_table=render_plan_table(resolution),
        decision_json=resolution.to_json(),
    )


def render_tier(resolution: Resolution) -> str:
    tier = resolution.tier
    device = resolution.reading.device
    size = "a CPU" if device.total_bytes is None else f"{device.total_bytes / GIB:.2f} GiB"
    kind = "simulated" if device.simulated else "detected"
    return (
        f"## {tier.label} ({tier.vram_label()})\n"
        f"from table **{resolution.table}** for {size} {kind if device.total_bytes is not None else ''} "
        f"— selected by `{resolution.decided_by('select_tier')}`"
    )


def _device_row(device: DeviceMemory, chosen: bool) -> str:
    total = "—" if device.total_bytes is None else f"{device.total_bytes / GIB:.2f} GiB"
    free = "—" if device.free_bytes is None else f"{device.free_bytes / GIB:.2f} GiB"
    where = f"{device.backend}:{device.index}" if device.index is not None else device.backend
    source = "; ".join(f"{name.removesuffix('_bytes')}: {how}" for name, how in device.sources.items()) or "—"
    unified = "yes" if device.unified_memory else "no"
    tags = ", ".join(t for t, on in (("simulated", device.simulated), ("MIG", device.mig)) if on)
    mark = " ◀ used" if chosen else ""
    return f"| {_md(device.name)}{mark} | {where} | {total} | {free} | {unified} | {_md(source)} | {tags} |"


def render_hardware(resolution: Resolution) -> str:
    reading = resolution.reading
    devices = reading.visible or (reading.device,)
    if reading.device not in devices:
        devices = (reading.device, *devices)
    lines = [
        "| device | where | total | free | unified memory | source of the figures | |",
        "|---|---|---|---|---|---|---|",
        *(_device_row(device, device == reading.device) for device in devices),
        "",
        "| step | plugin | decision |",
        "|---|---|---|",
        *(f"| `{d.hook}` | `{d.plugin}` | {_md(d.summary)} |" for d in resolution.decisions),
    ]
    return "\n".join(lines)


def render_warnings(resolution: Resolution) -> str:
    if not resolution.warnings:
        return "no warnings"
    return "\n".join(f"- ⚠ {_md(w)}" for w in resolution.warnings)


def render_limits(resolution: Resolution) -> str:
    tier = resolution.tier
    lm = ", ".join(tier.lm_models) or "none"
    overridden = {o.key for o in resolution.overrides}
    mark = {key: " *(override)*" if key in overridden else "" for key in ("max_duration_s", "max_batch", "lm_models")}
    return (
        f"limits of {tier.label}: duration ≤ **{tier.max_duration_with_lm_s} s** with the LM / "
        f"**{tier.max_duration_without_lm_s} s** without{mark['max_duration_s']}; "
        f"batch ≤ **{tier.max_batch_with_lm}** / "
        f"**{tier.max_batch_without_lm}**{mark['max_batch']}; LM sizes: {lm}{mark['lm_models']} "
        f"(LM {'on' if tier.lm_default_on else 'off'} by default)"
    )


def render_overrides(resolution: Resolution) -> str:
    if not resolution.overrides:
        return "no overrides: every value is the tier's or the plan's own"
    lines = ["| override | value | the tier / plan would have given |", "|---|---|---|"]
    lines += [f"| ✎ `{o.key}` | `{json.dumps(o.value)}` | `{json.dumps(o.default)}` |" for o in resolution.overrides]
    return "\n".join(lines)


def render_plan_table(resolution: Resolution) -> str:
    overridden = {o.key for o in resolution.overrides}
    lines = ["| key | value | why | plugin |", "|---|---|---|---|"]
    for setting in resolution.plan:
        if setting.key.startswith(COMPUTED_PREFIXES):
            continue
        mark = "✎ override: " if setting.key in overridden else ""
        value = json.dumps(setting.value, ensure_ascii=False)
        lines.append(f"| `{setting.key}` | `{_md(value)}` | {mark}{_md(setting.reason)} | `{setting.plugin}` |")
    return "\n".join(lines)


def render_plan_chart(resolution: Resolution) -> str:
    """Predicted peak per phase against the budget (HTML bars), the ladder's rungs and any refusal."""
    plan = resolution.plan
    phases: Mapping[str, float] = plan.value("memory.phases") or {}
    budget = plan.value("memory.budget_gib")
    scale = max([*phases.values(), budget or 0.0, 1e-9]) * 1.1
    rows = []
    for name in PHASE_NAMES:
        if name not in phases:
            rows.append(
                f'<div class="ac-row"><span class="ac-name">{name}</span><span class="ac-skip">not run</span></div>'
            )
            continue
        gib = phases[name]
        over = budget is not None and gib > budget
        budget_mark = (
            "" if budget is None else f'<div class="ac-budget" style="left:{100 * budget / scale:.1f}%"></div>'
        )
        rows.append(
            f'<div class="ac-row" data-phase="{name}"><span class="ac-name">{name}</span>'
            f'<div class="ac-track"><div class="ac-bar{" ac-over" if over else ""}" '
            f'style="width:{100 * gib / scale:.1f}%">'
            f'</div>{budget_mark}</div><span class="ac-val">{gib:.2f} GiB</span></div>'
        )
    budget_line = (
        "no device budget (a CPU)"
        if budget is None
        else f"budget {budget:.2f} GiB (the red line): {html.escape(plan['memory.budget_gib'].reason)}"
    )
    parts = [f'<div class="ac-chart" id="plan-chart">{"".join(rows)}<div class="ac-legend">{budget_line}</div></div>']
    if "memory.predicted_peak_gib" in plan:
        parts.append(f'<p class="ac-peak">{html.escape(plan["memory.predicted_peak_gib"].reason)}</p>')
    rungs = plan.value("ladder.rungs") or []
    if rungs:
        reasons = plan["ladder.rungs"].reason.split(" | ")
        items = "".join(f"<li>{html.escape(reason)}</li>" for reason in reasons)
        parts.append(f'<div id="ladder"><b>ladder: {len(rungs)} rung(s) taken to fit</b><ol>{items}</ol></div>')
    else:
        parts.append('<div id="ladder"><b>ladder:</b> no rung needed — the plan fits as the tier gives it</div>')
    for key in ("ladder.batch_size", "ladder.duration_s"):
        if key in plan:
            parts.append(f'<p class="ac-lowered">⚠ {html.escape(plan[key].reason)}</p>')
    refused = plan.value("ladder.refused")
    if refused:
        parts.append(
            f'<div id="refused" class="ac-refused">✗ plan refused: {html.escape(plan["ladder.refused"].reason)}; '
            "nothing will be loaded</div>"
        )
    return "\n".join(parts)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


CSS = """
.ac-chart { font-family: monospace; font-size: 13px; }
.ac-row { display: flex; align-items: center; gap: 8px; margin: 3px 0; }
.ac-name { width: 100px; }
.ac-track { position: relative; flex: 1; height: 16px; background: #eee; border-radius: 3px; }
.ac-bar { height: 100%; background: #3b82f6; border-radius: 3px; }
.ac-bar.ac-over { background: #dc2626; }
.ac-budget { position: absolute; top: -3px; bottom: -3px; width: 2px; background: #dc2626; }
.ac-val { width: 80px; text-align: right; }
.ac-skip { color: #888; }
.ac-legend { color: #555; margin-top: 4px; }
.ac-refused { color: #b91c1c; font-weight: bold; border: 1px solid #b91c1c; padding: 6px; border-radius: 4px; }
.ac-inline-error { color: #b91c1c; }
.ac-progress .ac-row .ac-bar { background: #16a34a; }
"""
