"""The placement grid of issue #24: machines × requests, every layout checked against every device's budget.

Machines: every bundled recording with several GPUs (``two-gpu-3060-4090``, in CUDA's default
fastest-first order and in PCI order) and simulated 2×8, 2×12, 2×16, 8+24 and 4×24 GB cards. Requests:
durations 30…600 s × batch 1…8 × the LM off or each size × the DiT (:data:`DITS`: the 2B turbo, upstream's
default, and the XL in turbo and sft — the XL's 4,987,310,726 parameters as the memory model counts them
(issue #21), and sft's classifier-free guidance, which budgets the DiT's activations at twice the batch).
The components' sizes are the plan's own (``memory.components``: the real LMs' 217,204-row vocabulary).

For each machine and request the grid resolves ``auto`` and every layout ``auto`` compares (each device
alone, the LM on one device and the DiT stack on another, the text encoder with either; of identical
cards, one of each kind) as the user's ``--place``, and ``auto`` again with the user's ``--offload none``
(the default table offloads every component between phases, so without it a device rarely holds two
components' weights at once), and checks every layout the resolution accepts (not
refused, not forced) against each device's budget **independently of** :mod:`acestep_core.optimize.layout`:
each device's peak is recomposed here from the memory model's per-phase prediction of the final plan
(the phases the device runs, the weights of its own components that stay on it).

It also rebuilds upstream's rule (ACE-Step-1.5 pull requests #1149 and #1263, neither merged): the DiT stack
on the card with the most free memory, the LM on the next; the request as upstream's own table
(``upstream-2026-04``) allows it on the DiT's card (upstream's ``gpu_config`` is one card's: that card's
with-LM limits and LM sizes), that tier's default offload and quantization, upstream's VAE decode chunk for
the card's free memory (≥24 GB → 512 frames, ≥16 → 384, ≥12 → 256, else 128), the LM kept resident on its
own card (#1269); no per-device check and no ladder. It counts how often that would overcommit a device
(its predicted share over its budget), by the same memory model.

"Lifts a clamp": the layout ``auto`` chose grants more of the request (:func:`acestep_core.placement.grant`:
not refused, fewer clamps, then the larger LM, longer clip, larger batch) than the default card alone, and
than the best single card alone.

Used by ``tests/test_placement_grid.py`` and ``benchmarks/bench_placement.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import acestep_core_cuda
import acestep_core_simulated
import acestep_core_tiers_default
from acestep_core_cuda.replay import bundled_recordings

from acestep_core import (
    COMPONENTS,
    DetectOptions,
    GenerationRequest,
    MemoryReading,
    Overrides,
    Resolution,
    build_plugin_manager,
    resolve,
)
from acestep_core.optimize import platforms
from acestep_core.optimize.layout import device_shares
from acestep_core.optimize.memory import Choices, RunShape, predict
from acestep_core.optimize.plan import choices_from_plan, planned_run, run_shape
from acestep_core.placement import candidate_layouts, grant
from acestep_core.plugins import PluginManager
from acestep_core.resolve import device_identity, device_readings, layout_outcome
from acestep_core.vocabulary import GIB, LM_SIZES

SYNTHETIC = {"2×8 GB": "8,8", "2×12 GB": "12,12", "2×16 GB": "16,16", "8+24 GB": "8,24", "4×24 GB": "24,24,24,24"}
DURATIONS = (30, 60, 120, 240, 360, 480, 600)
BATCHES = (1, 2, 4, 8)
LMS: tuple[str | None, ...] = (None, *LM_SIZES)
DITS: tuple[str, ...] = ("turbo", "xl-turbo", "xl-sft")
"""The DiTs the grid covers: the 2B turbo (the default), the XL turbo (upstream's Gradio default) and the XL
sft (the XL's weights with CFG's doubled activations). The 2B base / sft and the XL base add no new shape:
the 2B's weights with CFG, and the XL sft's figures."""
NO_OFFLOAD = Overrides(plan={f"offload.{component}": "none" for component in COMPONENTS})
"""``--offload none``: every component stays on its device between phases."""
UPSTREAM_TABLE = "upstream-2026-04"
UPSTREAM_VAE_CHUNKS = ((24, 512), (16, 384), (12, 256), (0, 128))
"""Upstream's VAE decode chunk (latent frames) by the card's effective free memory in GB
(``/work/shared/reference/acestep-1.5-checkpoints.md``, "How upstream runs them")."""


def manager() -> PluginManager:
    """The built-ins, the cuda plugin among them (to replay recordings), nothing from entry points."""
    plugins = [
        ("tiers_default", acestep_core_tiers_default),
        ("simulated", acestep_core_simulated),
        ("cuda", acestep_core_cuda),
    ]
    return build_plugin_manager(environ={}, entry_points=[], plugins=plugins)


def machines(plugins: PluginManager) -> dict[str, MemoryReading]:
    """Every bundled recording with several GPUs (both CUDA orders), then the simulated machines."""
    found: dict[str, MemoryReading] = {}
    for name in sorted(bundled_recordings()):
        for order in ("FASTEST_FIRST", "PCI_BUS_ID"):
            environ = {"CUDA_DEVICE_ORDER": order}
            reading = resolve(detect_options=DetectOptions(replay=name, environ=environ), manager=plugins).reading
            if len([d for d in reading.visible if d.is_accelerator]) > 1:
                found[f"{name} ({order})"] = without_placement(reading)
    for name, sizes in SYNTHETIC.items():
        reading = resolve(detect_options=DetectOptions(vram_gb=sizes, environ={}), manager=plugins).reading
        found[name] = without_placement(reading)
    return found


def without_placement(reading: MemoryReading) -> MemoryReading:
    return MemoryReading(device=reading.visible[0], visible=reading.visible, notes=reading.notes)


def requests() -> Iterator[GenerationRequest]:
    for dit in DITS:
        for duration in DURATIONS:
            for batch in BATCHES:
                for lm in LMS:
                    yield GenerationRequest(
                        duration_s=duration,
                        batch_size=batch,
                        lm_model=lm,
                        lm="off" if lm is None else "on",
                        dit_model=dit,
                    )


def layouts(reading: MemoryReading) -> list[dict[str, str]]:
    """The layouts ``auto`` compares, one of each set that identical cards make alike."""
    readings = device_readings(reading)
    kept: dict[tuple[Any, ...], dict[str, str]] = {}
    for layout in candidate_layouts(readings, reading.device.key):
        keys = [layout[c] for c in COMPONENTS]
        signature = tuple(keys.index(k) for k in keys) + tuple(device_identity(readings[k].device) for k in keys)
        kept.setdefault(signature, layout)
    return list(kept.values())


def place_text(layout: Mapping[str, str]) -> str:
    return ",".join(f"{component}:{layout[component]}" for component in COMPONENTS)


# --------------------------------------------------------------------------------------------- the checks
def device_peaks(resolution: Resolution) -> dict[str, tuple[int, int | None]]:
    """Device key → (predicted reserved peak, budget), recomposed from the memory model's phases of the
    final plan: each device runs the phases of the components placed on it, and holds during each the
    weights of its own components that stay resident."""
    run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
    prediction = predict(run, choices_from_plan(resolution.plan))
    reading = resolution.reading
    found: dict[str, tuple[int, int | None]] = {}
    for phase in prediction.phases:
        device = reading.device_of(phase.phase)
        own = {c: b for c, b in phase.resident.items() if reading.device_of(c).key == device.key}
        peak = dataclasses.replace(phase, resident=own).peak_bytes
        budget = platforms.budget_for(device)
        usable = None if budget is None else budget.usable_bytes
        found[device.key] = (max(peak, found.get(device.key, (0, None))[0]), usable)
    return found


def over_any_budget(resolution: Resolution) -> bool:
    return any(budget is not None and peak > budget for peak, budget in device_peaks(resolution).values())


def accepted(resolution: Resolution) -> bool:
    plan = resolution.plan
    return not plan.value("ladder.refused") and not plan.value("memory.forced")


def upstream_layout(reading: MemoryReading) -> dict[str, str]:
    """The DiT stack on the card with the most free memory, the LM on the next."""
    cards = sorted((d for d in reading.visible if d.is_accelerator), key=lambda d: (-(d.free_bytes or 0), d.index or 0))
    stack, lm = cards[0].key, cards[1].key
    return {"lm": lm, "text_encoder": stack, "dit": stack, "vae": stack}


def upstream_overcommits(reading: MemoryReading, request: GenerationRequest, plugins: PluginManager) -> bool:
    """Whether upstream's rule (see the module) puts a device over its budget for ``request``."""
    layout = upstream_layout(reading)
    alone = resolve(
        request, reading=reading, place=f"single:{layout['dit']}", manager=plugins, environ={}, tiers=UPSTREAM_TABLE
    )
    tier, adjusted = alone.tier, alone.adjusted
    run = run_shape(adjusted, tier)
    placed = reading.placed(layout)
    vae_card = placed.device_of("vae")
    free_gb = (vae_card.free_bytes or vae_card.total_bytes or 0) / GIB
    chunk = next(frames for least, frames in UPSTREAM_VAE_CHUNKS if free_gb >= least)
    defaults = tier.optimizations
    offload = "model" if defaults.get("cpu_offload") else "none"
    quantization = str(defaults.get("quantization", "none"))
    choices = Choices(
        precision={c: platforms.precision(placed.reading_of(c))[c][0] for c in COMPONENTS},
        quantization={c: "none" if c == "vae" else quantization for c in COMPONENTS},
        offload={c: "none" if c == "lm" else offload for c in COMPONENTS},
        vae_decode="tiled",
        tile_frames=chunk,
    )
    return any(share.over for share in device_shares(RunShape(**_shape(run)), choices, placed))


def _shape(run: RunShape) -> dict[str, Any]:
    return {f.name: getattr(run, f.name) for f in dataclasses.fields(run)}


# --------------------------------------------------------------------------------------------- the grid
@dataclasses.dataclass
class Counts:
    machines: int = 0
    requests: int = 0
    layouts_checked: int = 0
    layouts_accepted: int = 0
    layouts_refused: int = 0
    accepted_over_budget: int = 0
    auto_split: int = 0
    auto_lifts_a_clamp_of_the_default_card: int = 0
    auto_lifts_a_clamp_of_every_single_card: int = 0
    upstream_overcommits: int = 0
    over_examples: list[str] = dataclasses.field(default_factory=list)
    per_machine: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def grid(*, limit: int | None = None) -> Counts:
    """Run the grid; ``limit`` keeps the first requests of each machine (a quick look)."""
    plugins = manager()
    counts = Counts()
    for name, reading in machines(plugins).items():
        counts.machines += 1
        mine = counts.per_machine.setdefault(
            name, {"requests": 0, "auto_split": 0, "lifts_default": 0, "lifts_every": 0, "upstream_over": 0}
        )
        candidates = layouts(reading)
        for position, request in enumerate(requests()):
            if limit is not None and position >= limit:
                break
            counts.requests += 1
            mine["requests"] += 1
            automatic = resolve(request, reading=reading, place="auto", manager=plugins, environ={})
            singles: list[Resolution] = []
            for layout in candidates:
                resolution = resolve(request, reading=reading, place=place_text(layout), manager=plugins, environ={})
                _tally(counts, resolution, f"{name}: {request} on {place_text(layout)}")
                if len(set(layout.values())) == 1:
                    singles.append(resolution)
            _tally(counts, automatic, f"{name}: {request} on auto")
            resident = resolve(
                request, reading=reading, place="auto", manager=plugins, environ={}, overrides=NO_OFFLOAD
            )
            _tally(counts, resident, f"{name}: {request} on auto with --offload none")
            if automatic.reading.several_devices:
                counts.auto_split += 1
                mine["auto_split"] += 1
            granted = grant(layout_outcome(automatic))
            if granted > grant(layout_outcome(singles[0])):  # the default card is the first layout
                counts.auto_lifts_a_clamp_of_the_default_card += 1
                mine["lifts_default"] += 1
            if granted > max(grant(layout_outcome(single)) for single in singles):
                counts.auto_lifts_a_clamp_of_every_single_card += 1
                mine["lifts_every"] += 1
            if upstream_overcommits(reading, request, plugins):
                counts.upstream_overcommits += 1
                mine["upstream_over"] += 1
    return counts


def _tally(counts: Counts, resolution: Resolution, where: str) -> None:
    counts.layouts_checked += 1
    if not accepted(resolution):
        counts.layouts_refused += 1
        return
    counts.layouts_accepted += 1
    if over_any_budget(resolution):
        counts.accepted_over_budget += 1
        if len(counts.over_examples) < 5:
            counts.over_examples.append(where)
