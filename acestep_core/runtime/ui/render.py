"""What the page shows for a resolution, as HTML in which every text that came from outside is escaped.

No Gradio here. Device names, table names, plugin names, reasons and values come from plugins, tables and
recordings a user installed or uploaded: all of it passes through :func:`esc`, and nothing is rendered as
Markdown, so a ``<b>`` or a ``**`` in a table's name is shown as typed.
"""

from __future__ import annotations

import html
import json
import shlex
from collections.abc import Mapping, Sequence, Set
from typing import Any

from acestep_core.inputs import clip
from acestep_core.runtime.ui.fields import Field
from acestep_core.types import DeviceMemory, Resolution
from acestep_core.vocabulary import GIB, LM_SIZES, PHASES

NOTE_LIMIT = 200
"""Characters of a reason shown in a note (the whole reason is in its tooltip and the plan settings)."""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _gib(value: float) -> str:
    return f"{value:.2f} GiB"


def _short(text: str) -> str:
    return f'<span title="{esc(text)}">{esc(clip(text, NOTE_LIMIT))}</span>'


# --------------------------------------------------------------------------------------------- headline
def device_words(device: DeviceMemory) -> str:
    if not device.is_accelerator:
        return "the CPU (no accelerator)"
    size = "" if device.total_bytes is None else f", {device.total_bytes / GIB:.2f} GiB"
    return f"{device.name}{size}"


def headline(resolution: Resolution) -> str:
    tier, device = resolution.tier, resolution.reading.device
    chooser = resolution.decided_by("select_tier") or "?"
    return (
        f'<h2 class="ac-headline">{esc(tier.label)} ({esc(tier.vram_label())}) — {esc(device_words(device))}</h2>'
        f'<p class="ac-sub">table <b>{esc(resolution.table)}</b> · tier chosen by <code>{esc(chooser)}</code>'
        f"{' · simulated' if device.simulated else ''}</p>"
    )


def command_line(argv: Sequence[str], resolves: int) -> str:
    """The command that prints this decision, with the number of resolves this session made (``data-``
    attributes: the arguments as JSON and the count, for tools and tests)."""
    words = shlex.join(["acestep-core", "plan", *argv])
    return (
        f'<div class="ac-command" data-resolves="{resolves}" data-argv="{esc(_json(list(argv)))}">'
        f"the same decision in a terminal: <code>{esc(words)}</code></div>"
    )


def stale_line(count: int) -> str:
    fields = "field" if count == 1 else f"{count} fields"
    return (
        f'<div class="ac-stale" role="status">not decided: the marked {fields} cannot be used as typed; '
        "the decision below is still the last one</div>"
    )


def page_problem(message: str) -> str:
    return f'<div class="ac-problem" role="alert">⚠ {esc(message)}</div>'


# --------------------------------------------------------------------------------------------- panels
def status_line(resolution: Resolution) -> str:
    plan = resolution.plan
    adjusted = resolution.adjusted
    duration = "the LM chooses the duration" if adjusted.duration_s is None else f"{adjusted.duration_s:g} s"
    lm = adjusted.lm_model or "no LM"
    runs = f"runs {duration} × {adjusted.batch_size}, {lm}"
    if plan.value("ladder.refused"):
        verdict = '<span class="ac-bad">✗ refused: nothing will be loaded (tick force to run it anyway)</span>'
    elif "memory.forced" in plan:
        verdict = '<span class="ac-forced">⚑ forced: kept although predicted over the budget</span>'
    else:
        verdict = '<span class="ac-ok">✓ fits</span>'
    return f'<p class="ac-status">{verdict} — {esc(runs)}</p>'


def warnings_list(resolution: Resolution) -> str:
    if not resolution.warnings:
        return '<p class="ac-none">no warnings</p>'
    return "<ul>" + "".join(f"<li>⚠ {esc(w)}</li>" for w in resolution.warnings) + "</ul>"


def overrides_table(resolution: Resolution) -> str:
    if not resolution.overrides:
        return "<p class=\"ac-none\">no overrides: every value is the tier's or the plan's own</p>"
    rows = "".join(
        f"<tr><td>✎ <code>{esc(o.key)}</code></td><td><code>{esc(_json(o.value))}</code></td>"
        f"<td><code>{esc(_json(o.default))}</code></td></tr>"
        for o in resolution.overrides
    )
    return f"<table><tr><th>override</th><th>yours</th><th>the tier / plan gave</th></tr>{rows}</table>"


def plan_table(resolution: Resolution) -> str:
    overridden = {o.key for o in resolution.overrides}
    rows = "".join(
        f"<tr><td><code>{esc(s.key)}</code></td><td><code>{esc(_json(s.value))}</code></td>"
        f"<td>{'✎ yours: ' if s.key in overridden else ''}{esc(s.reason)}</td>"
        f"<td><code>{esc(s.plugin)}</code></td></tr>"
        for s in resolution.plan
    )
    return f"<table><tr><th>key</th><th>value</th><th>why</th><th>plugin</th></tr>{rows}</table>"


def _device_row(device: DeviceMemory, chosen: bool) -> str:
    total = "—" if device.total_bytes is None else _gib(device.total_bytes / GIB)
    free = "—" if device.free_bytes is None else _gib(device.free_bytes / GIB)
    where = f"{device.backend}:{device.index}" if device.index is not None else device.backend
    source = "; ".join(f"{name.removesuffix('_bytes')}: {how}" for name, how in device.sources.items()) or "—"
    tags = ", ".join(t for t, on in (("simulated", device.simulated), ("MIG", device.mig)) if on)
    cells = (device.name + (" ◀ used" if chosen else ""), where, total, free, tags, source)
    return "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"


def hardware_table(resolution: Resolution) -> str:
    reading = resolution.reading
    devices = reading.visible or (reading.device,)
    if reading.device not in devices:
        devices = (reading.device, *devices)
    device_rows = "".join(_device_row(d, d == reading.device) for d in devices)
    decision_rows = "".join(
        f"<tr><td><code>{esc(d.hook)}</code></td><td><code>{esc(d.plugin)}</code></td><td>{esc(d.summary)}</td></tr>"
        for d in resolution.decisions
    )
    return (
        "<table><tr><th>device</th><th>where</th><th>total</th><th>free</th><th></th><th>source of the figures</th>"
        f"</tr>{device_rows}</table>"
        f"<table><tr><th>step</th><th>plugin</th><th>decision</th></tr>{decision_rows}</table>"
    )


# --------------------------------------------------------------------------------------------- the plan chart
def budget_words(resolution: Resolution) -> tuple[float | None, str]:
    """The budget the bars are drawn against (never below zero) and what it is, in words."""
    plan = resolution.plan
    budget = plan.value("memory.budget_gib")
    if budget is None:
        return None, "no budget: the device's memory could not be read"
    if budget <= 0:
        device = resolution.reading.device
        size = "" if device.total_bytes is None else f"{device.total_bytes / GIB:.2f} GiB "
        return 0.0, (
            f"no room: the device's {size}does not cover what the runtime and the safety margin take "
            f"({plan['memory.budget_gib'].reason.split(' = ')[0].removeprefix('budget = ')}), so nothing fits"
        )
    return budget, f"budget {_gib(budget)} (the red line): {plan['memory.budget_gib'].reason}"


def plan_chart(resolution: Resolution) -> str:
    """Predicted peak per phase against the budget (the red line), the ladder's rungs, a refusal or a force."""
    plan = resolution.plan
    phases: Mapping[str, float] = plan.value("memory.phases") or {}
    budget, legend = budget_words(resolution)
    scale = max([*phases.values(), budget or 0.0, 1e-9]) * 1.1
    line = "" if budget is None else f'<div class="ac-budget" style="left:{100 * budget / scale:.1f}%"></div>'
    rows = []
    if not phases:
        why = plan["memory.phases"].reason if "memory.phases" in plan else "memory is not predicted here"
        rows.append(f'<p class="ac-none">{esc(why)}</p>')
        if budget is not None:
            rows.append(
                '<div class="ac-row" data-phase="budget"><span class="ac-name">budget</span>'
                f'<div class="ac-track">{line}</div><span class="ac-val">{_gib(budget)}</span></div>'
            )
    for name in PHASES if phases else ():
        if name not in phases:
            rows.append(
                f'<div class="ac-row"><span class="ac-name">{name}</span><span class="ac-skip">not run</span></div>'
            )
            continue
        gib = phases[name]
        over = " ac-over" if budget is not None and gib > budget else ""
        rows.append(
            f'<div class="ac-row" data-phase="{name}"><span class="ac-name">{name}</span><div class="ac-track">'
            f'<div class="ac-bar{over}" style="width:{100 * gib / scale:.1f}%"></div>{line}</div>'
            f'<span class="ac-val">{_gib(gib)}</span></div>'
        )
    parts = [f'<div class="ac-chart" id="plan-chart">{"".join(rows)}<div class="ac-legend">{esc(legend)}</div></div>']
    room = budget is None or budget > 0
    if "memory.predicted_peak_gib" in plan and phases:
        peak = plan.value("memory.predicted_peak_gib")
        said = plan["memory.predicted_peak_gib"].reason if room else f"predicted peak {_gib(peak)}: more than no room"
        parts.append(f'<p class="ac-peak">{esc(said)}</p>')
    parts.append(_ladder(resolution, room=room))
    return "\n".join(parts)


def _ladder(resolution: Resolution, *, room: bool) -> str:
    """The rungs taken, each with its reason (named only, when the device has no room: their reasons
    measure against the negative budget the core computed)."""
    plan = resolution.plan
    rungs = plan.value("ladder.rungs") or []
    parts = []
    if rungs:
        reasons = plan["ladder.rungs"].reason.split(" | ") if room else [str(rung) for rung in rungs]
        items = "".join(f"<li>{esc(reason)}</li>" for reason in reasons)
        parts.append(f'<div id="ladder"><b>ladder: {len(rungs)} rung(s) taken to fit</b><ol>{items}</ol></div>')
    else:
        parts.append('<div id="ladder"><b>ladder:</b> no rung needed — the plan fits as the tier gives it</div>')
    for key in ("ladder.lm_model", "ladder.batch_size", "ladder.duration_s"):
        if key in plan and room:
            parts.append(f'<p class="ac-lowered">⚠ {esc(plan[key].reason)}</p>')
    if plan.value("ladder.refused"):
        refused = plan.value("ladder.refused")
        phase = refused.get("phase", "?") if isinstance(refused, Mapping) else "?"
        needs = refused.get("predicted_gib") if isinstance(refused, Mapping) else None
        budget, _ = budget_words(resolution)
        of = f"of {_gib(budget)}" if room and budget is not None else "and the device leaves none"
        short = "" if needs is None or budget is None else f": the {phase} phase needs {needs:.2f} GiB {of}"
        parts.append(
            f'<div id="refused" class="ac-refused">✗ plan refused{esc(short)}; nothing will be loaded. '
            "Tick <b>force</b> to keep it anyway.</div>"
        )
    if "memory.forced" in plan:
        parts.append(f'<div id="forced" class="ac-forced-box">⚑ forced: {esc(plan["memory.forced"].reason)}</div>')
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- notes
def problem_note(message: str) -> str:
    return f'<div class="ac-note ac-problem" role="alert">⚠ {esc(message)}</div>'


def _note(text: str) -> str:
    return f'<div class="ac-note">{text}</div>' if text else ""


def field_notes(fields: Sequence[Field], resolution: Resolution, given: Set[str] = frozenset()) -> dict[str, str]:
    """Field id → what the decision made of that control's value, shown beside it (``given``: the ids
    of the fields that hold a value; a field about the device speaks only when it chose it)."""
    notes = {}
    for field in fields:
        if field.plan_key is not None:
            notes[field.id] = _note(_plan_key_note(field.plan_key, resolution))
        elif field.dest in DEVICE_CHOOSERS and field.id not in given:
            notes[field.id] = ""
        else:
            note = OPTION_NOTES.get(field.dest)
            notes[field.id] = _note(note(resolution) if note else "")
    return notes


def _changes(resolution: Resolution, *names: str) -> str:
    return "".join(
        f'<br><span class="{"ac-warn" if c.warning else "ac-info"}">{"⚠" if c.warning else "ℹ"} {esc(c.reason)}</span>'
        for c in resolution.adjusted.changes
        if c.field in names
    )


def _with_lm(resolution: Resolution) -> str:
    return "with the LM" if resolution.adjusted.lm_on else "without the LM"


def _duration_note(resolution: Resolution) -> str:
    adjusted, tier, plan = resolution.adjusted, resolution.tier, resolution.plan
    limit = f"≤ {tier.max_duration_s(adjusted.lm_on)} s on {tier.label} {_with_lm(resolution)}"
    if adjusted.duration_s is None:
        runs = "the LM chooses" if adjusted.lm_on else "no duration asked: the pipeline's default"
    else:
        runs = f"runs <b>{adjusted.duration_s:g} s</b>"
    lowered = f"; the plan shortens it to {plan.value('ladder.duration_s'):g} s" if "ladder.duration_s" in plan else ""
    return f"{runs} ({esc(limit)}){esc(lowered)}" + _changes(resolution, "duration_s")


def _batch_note(resolution: Resolution) -> str:
    adjusted, tier, plan = resolution.adjusted, resolution.tier, resolution.plan
    limit = f"≤ {tier.max_batch(adjusted.lm_on)} on {tier.label} {_with_lm(resolution)}"
    lowered = f"; the plan lowers it to {plan.value('ladder.batch_size')}" if "ladder.batch_size" in plan else ""
    return f"runs <b>{adjusted.batch_size}</b> ({esc(limit)}){esc(lowered)}" + _changes(resolution, "batch_size")


def _lm_note(resolution: Resolution) -> str:
    tier, adjusted = resolution.tier, resolution.adjusted
    overridden = any(o.key == "lm_models" for o in resolution.overrides)
    running = adjusted.lm_model or "no LM"
    if "ladder.lm_model" in resolution.plan:
        running += f", then {resolution.plan.value('ladder.lm_model') or 'no LM'} to fit"
    sizes = []
    for size in LM_SIZES:
        if size in tier.lm_models:
            where = "allowed by your override" if overridden else f"allowed on {tier.label}"
            mark = " · auto picks it" if size == tier.recommended_lm else ""
            sizes.append(f'<span class="ac-ok">{size} ✓</span> {esc(where)}{mark}')
        else:
            whose = "your override allows" if overridden else f"{esc(tier.label)} allows"
            only = f"only {esc(', '.join(tier.lm_models))}" if tier.lm_models else "no LM"
            sizes.append(f'<span class="ac-bad">{size} ✗</span> {whose} {only}')
    default = "on" if tier.lm_default_on else "off"
    return (
        f"runs <b>{esc(running)}</b> (auto: the LM is {default} by default on {esc(tier.label)})<br>"
        + "<br>".join(sizes)
        + _changes(resolution, "lm_model", "lm")
    )


def _device_note(resolution: Resolution) -> str:
    device = resolution.reading.device
    where = f"{device.backend}:{device.index}" if device.index is not None else device.backend
    return f"decided for {esc(device_words(device))} ({esc(where)})"


DEVICE_CHOOSERS = frozenset({"vram", "replay", "device"})
"""Options that choose the device: their note names the device only when they are given."""


def _tiers_note(resolution: Resolution) -> str:
    decision = next((d for d in resolution.decisions if d.hook == "register_tier_tables"), None)
    why = f" — {esc(decision.summary)}" if decision else ""
    return f"table <b>{esc(resolution.table)}</b>{why}"


def _override_mark(resolution: Resolution, key: str) -> str:
    override = next((o for o in resolution.overrides if o.key == key), None)
    return "" if override is None else f" · ✎ yours (the tier gives {esc(_json(override.default))})"


def _max_duration_note(resolution: Resolution) -> str:
    tier = resolution.tier
    return (
        f"{esc(tier.label)}: ≤ {tier.max_duration_with_lm_s} s with the LM, {tier.max_duration_without_lm_s} s "
        f"without{_override_mark(resolution, 'max_duration_s')}"
    )


def _max_batch_note(resolution: Resolution) -> str:
    tier = resolution.tier
    return (
        f"{esc(tier.label)}: ≤ {tier.max_batch_with_lm} with the LM, {tier.max_batch_without_lm} "
        f"without{_override_mark(resolution, 'max_batch')}"
    )


def _allow_lm_note(resolution: Resolution) -> str:
    tier = resolution.tier
    allowed = ", ".join(tier.lm_models) or "none"
    return f"{esc(tier.label)} allows: {esc(allowed)}{_override_mark(resolution, 'lm_models')}"


def _force_note(resolution: Resolution) -> str:
    plan = resolution.plan
    if "memory.forced" in plan:
        return '<span class="ac-forced">⚑ the plan is forced: kept although predicted over the budget</span>'
    if plan.value("ladder.refused"):
        return '<span class="ac-bad">the plan is refused: tick to keep it anyway (recorded and warned)</span>'
    return "the plan fits: nothing to force"


OPTION_NOTES = {
    "duration": _duration_note,
    "batch": _batch_note,
    "lm": _lm_note,
    "vram": _device_note,
    "replay": _device_note,
    "device": _device_note,
    "tiers": _tiers_note,
    "max_duration": _max_duration_note,
    "max_batch": _max_batch_note,
    "allow_lm": _allow_lm_note,
    "force": _force_note,
}
"""What the decision made of each option's value (an option not listed here gets no note)."""


def _plan_key_note(key: str, resolution: Resolution) -> str:
    plan = resolution.plan
    override = next((o for o in resolution.overrides if o.key == key), None)
    if key not in plan:
        return "not in this plan"
    setting = plan[key]
    value = f"<code>{esc(_json(setting.value))}</code>"
    if override is not None:
        return f"✎ yours: {value} — the plan alone gives <code>{esc(_json(override.default))}</code>"
    return f"plan: {value} — {_short(setting.reason)} <span class='ac-plugin'>[{esc(setting.plugin)}]</span>"
