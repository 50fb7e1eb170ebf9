"""Several devices: each device's share of a run, predicted with what that device holds, and the plan
fitted to every device's budget.

A device's share of a run is the memory model's prediction (:func:`~acestep_core.optimize.memory.predict`)
kept to the components placed on it: the phases it runs, and during each only the weights of its own
components that stay on it (offload rules apply per device, as on one). Each device used pays its own
CUDA context (:func:`~acestep_core.optimize.platforms.budget_for`); a device whose components do not run
(the LM's, with the LM off) is not used. The ladder (:func:`~acestep_core.optimize.ladder.fit`) fits each
device in turn, the DiT's first, on that device's share: a rung that cannot lower the share (tiling the
VAE on the LM's card) is never taken there. A rung that lowers the run itself (batch, duration, LM size)
lowers it for every device, so the devices are fitted again from their defaults until the run stops
changing, and the plan is the tier's defaults per device plus the rungs each device needed.

Pure Python (no torch): ``plan_settings`` and ``check_plan`` come here when a reading's placement
spans several devices (:attr:`acestep_core.MemoryReading.several_devices`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from acestep_core.optimize import platforms
from acestep_core.optimize.ladder import LadderResult, Predictor, Refusal, Rung, fit, lowered_settings
from acestep_core.optimize.memory import ALLOCATOR, Budget, Choices, PhasePeak, Prediction, RunShape, gib, predict
from acestep_core.record import Record
from acestep_core.types import DeviceMemory, MemoryReading, Setting, Tier
from acestep_core.vocabulary import COMPONENTS, GIB, PHASES


# --------------------------------------------------------------------------------------------- a device's share
def groups(reading: MemoryReading) -> dict[str, tuple[DeviceMemory, tuple[str, ...]]]:
    """Device key → (the device, the components placed on it), the DiT's device first."""
    found: dict[str, tuple[DeviceMemory, tuple[str, ...]]] = {}
    for component in ("dit", *(c for c in COMPONENTS if c != "dit")):
        device = reading.device_of(component)
        held = found.get(device.key, (device, ()))[1]
        found[device.key] = (device, (*held, component))
    return {key: (device, tuple(c for c in COMPONENTS if c in held)) for key, (device, held) in found.items()}


def share(prediction: Prediction, held: Collection[str]) -> Prediction:
    """``prediction`` kept to one device holding ``held``: the phases it runs, each with only the weights
    of ``held`` components that stay on it. With none of ``held`` running, one empty phase."""
    phases = tuple(
        dataclasses.replace(phase, resident={c: b for c, b in phase.resident.items() if c in held})
        for phase in prediction.phases
        if phase.phase in held
    )
    if not phases:
        idle = next(iter(held), PHASES[0])
        phases = (PhasePeak(phase=idle, resident={}, work_bytes=0, detail="nothing placed on this device runs"),)
    estimates = {c: e for c, e in prediction.estimates.items() if c in held}
    return dataclasses.replace(prediction, phases=phases, estimates=estimates)


def share_predictor(held: Collection[str]) -> Predictor:
    """The ladder's predictor for a device holding ``held``."""
    kept = frozenset(held)

    def predictor(run: RunShape, choices: Choices) -> Prediction:
        return share(predict(run, choices), kept)

    return predictor


def runs_on(held: Collection[str], run: RunShape) -> bool:
    """Whether anything ``held`` runs (a device holding only the LM is not used with the LM off)."""
    return any(component != "lm" or run.lm_model is not None for component in held)


class DeviceShare(Record):
    """One device's part of a run: what it holds, its predicted phases, its budget."""

    key: str
    device: DeviceMemory
    components: tuple[str, ...]
    prediction: Prediction
    budget: Budget | None

    @property
    def pressure(self) -> float | None:
        if self.budget is None or self.budget.usable_bytes <= 0:
            return None if self.budget is None else float("inf")
        return self.prediction.peak_bytes / self.budget.usable_bytes

    @property
    def over(self) -> bool:
        return self.budget is not None and self.prediction.peak_bytes > self.budget.usable_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "device": self.key,
            "name": self.device.name,
            "uuid": self.device.uuid,
            "components": list(self.components),
            "phases": {p.phase: round(p.peak_bytes / GIB, 2) for p in self.prediction.phases},
            "predicted_peak_gib": round(self.prediction.peak_bytes / GIB, 2),
            "budget_gib": None if self.budget is None else round(self.budget.usable_bytes / GIB, 2),
        }


def device_shares(run: RunShape, choices: Choices, reading: MemoryReading) -> list[DeviceShare]:
    """Each device the run uses, with its share of ``run`` under ``choices`` (the DiT's device first)."""
    whole = predict(run, choices)
    return [
        DeviceShare(key, device, held, share(whole, held), platforms.budget_for(device))
        for key, (device, held) in groups(reading).items()
        if runs_on(held, run)
    ]


def most_loaded(shares: list[DeviceShare]) -> DeviceShare:
    """The device nearest (or furthest past) its budget; the largest peak where none has a budget."""
    return max(shares, key=lambda s: (s.pressure if s.pressure is not None else -1.0, s.prediction.peak_bytes))


# --------------------------------------------------------------------------------------------- fitting
class LayoutFit(Record):
    """The ladder's fit on every device: the run all of them can take, the choices, each device's result."""

    run: RunShape
    choices: Choices
    results: Mapping[str, LadderResult | None]
    """Device key → its ladder's result at the final run; None where the device has no budget (not fitted)."""
    lowered: tuple[tuple[str, Rung], ...] = ()
    """The rungs that lowered the run (LM, batch, duration), each with the device that needed it, in order."""

    def rungs(self) -> list[tuple[str, Rung]]:
        """Every rung taken, with its device: those that lowered the run, then each device's at the final run."""
        final = [(key, rung) for key, result in self.results.items() if result is not None for rung in result.rungs]
        return [*self.lowered, *(taken for taken in final if taken not in self.lowered)]


def fit_layout(run: RunShape, start: Choices, reading: MemoryReading, abilities: Mapping[str, Any]) -> LayoutFit:
    """Fit every device's share, the DiT's device first; the run (batch, duration, LM) is the lowest any
    device needed, and every device is fitted again from ``start`` at it until it stops changing."""
    placed = groups(reading)
    lowered: list[tuple[str, Rung]] = []
    for _ in range(4 * len(placed) + 4):
        current = run
        results: dict[str, LadderResult | None] = {}
        for key, (device, held) in placed.items():
            budget = platforms.budget_for(device)
            if budget is None or not runs_on(held, current):
                results[key] = None
                continue
            result = fit(current, start, budget, abilities[key], predictor=share_predictor(held))
            results[key] = result
            lowered += [(key, rung) for rung in result.rungs if rung.name.startswith(RUN_RUNGS)]
            current = result.run
        if current == run:
            break
        run = current
    owner: dict[str, str] = {component: reading.device_of(component).key for component in COMPONENTS}
    return LayoutFit(run, _merged(start, results, owner), results, tuple(dict.fromkeys(lowered)))


RUN_RUNGS = ("lm=", "batch=", "duration=")
"""The rungs that lower the run itself, for every device."""


def _merged(start: Choices, results: Mapping[str, LadderResult | None], owner: Mapping[str, str]) -> Choices:
    """Each component's choices from the fit of the device it runs on; the DiT's attention and the VAE's
    decode from theirs."""

    def of(component: str) -> Choices:
        result = results.get(owner[component])
        return start if result is None else result.choices

    vae = of("vae")
    return dataclasses.replace(
        start,
        precision={c: of(c).precision[c] for c in PHASES},
        quantization={c: of(c).quantization[c] for c in PHASES},
        offload={c: of(c).offload[c] for c in PHASES},
        attention=of("dit").attention,
        vae_decode=vae.vae_decode,
        tile_frames=vae.tile_frames,
        tile_overlap=vae.tile_overlap,
        quantize_lm_head=of("lm").quantize_lm_head,
    )


# --------------------------------------------------------------------------------------------- settings
def layout_memory_settings(asked: RunShape, fitted: LayoutFit, reading: MemoryReading) -> list[Setting]:
    """``memory.*`` and ``ladder.*`` for a run over several devices: every device's figures in
    ``memory.devices``, the most loaded device's in ``memory.predicted_peak_gib`` / ``memory.budget_gib``."""
    run = fitted.run
    shares = device_shares(run, fitted.choices, reading)
    worst = most_loaded(shares)
    phases = {p.phase: round(p.peak_bytes / GIB, 2) for s in shares for p in s.prediction.phases}
    explain = "; ".join(
        f"{p.phase} on {s.key} {gib(p.peak_bytes)} ({', '.join(f'{c} {gib(b)}' for c, b in p.resident.items())} + "
        f"{p.detail})"
        for s in shares
        for p in s.prediction.phases
    )
    lm = f"LM {run.lm_model}, " if run.lm_model else ""
    settings = [
        Setting("memory.phases", phases, f"predicted peak per phase, each on its device: {explain}"),
        Setting(
            "memory.devices",
            {s.key: s.as_dict() for s in shares},
            "each device used, with what it holds: "
            + "; ".join(f"{s.key} {'+'.join(s.components)} {_against(s)}" for s in shares),
        ),
    ]
    if worst.budget is None:
        settings += [
            Setting("memory.predicted_peak_gib", round(worst.prediction.peak_bytes / GIB, 2), "no device budget"),
            Setting("memory.budget_gib", None, f"{worst.key} has no memory figure: not budgeted"),
        ]
    else:
        settings += [
            Setting(
                "memory.predicted_peak_gib",
                round(worst.prediction.peak_bytes / GIB, 2),
                f"{lm}{run.duration_s:g} s × {run.batch}: the most loaded device, {worst.device.describe()}, "
                f"{gib(worst.prediction.peak_bytes)} reserved peak predicted in the {worst.prediction.worst.phase} "
                f"phase ({ALLOCATOR}), of a {gib(worst.budget.usable_bytes)} budget",
            ),
            Setting(
                "memory.budget_gib",
                round(worst.budget.usable_bytes / GIB, 2),
                f"budget of {worst.key}, the most loaded device = {worst.budget.describe()} (each device used pays "
                "its own context)",
            ),
        ]
    rungs = fitted.rungs()
    settings.append(
        Setting(
            "ladder.rungs",
            [rung.name for _, rung in rungs],
            " | ".join(f"{key}: {rung.name}: {rung.reason}" for key, rung in rungs)
            or "every device's share fits its budget: no rung needed",
        )
    )
    settings += _lowered(asked, run, fitted)
    settings.append(_refused(shares))
    return settings


def _against(share_: DeviceShare) -> str:
    if share_.budget is None:
        return f"{gib(share_.prediction.peak_bytes)} (no budget)"
    return f"{gib(share_.prediction.peak_bytes)} of {gib(share_.budget.usable_bytes)}"


def _lowered(asked: RunShape, run: RunShape, fitted: LayoutFit) -> list[Setting]:
    """The run's lowerings, each naming the devices whose ladder took it."""
    lowered_on = {
        kind: ", ".join(dict.fromkeys(key for key, rung in fitted.lowered if rung.name.startswith(prefix)))
        or "a device"
        for kind, prefix in (("lm", "lm="), ("batch", "batch="), ("duration", "duration="))
    }
    settings = []
    settings += lowered_settings(run, asked, lowered_on)
    return settings


def _refused(shares: list[DeviceShare]) -> Setting:
    worst = over_budget(shares)
    if worst is None or worst.budget is None:
        listing = ", ".join(f"{s.key} {_against(s)}" for s in shares)
        return Setting("ladder.refused", False, f"fits every device: {listing}")
    refusal = Refusal(worst.prediction.peak_bytes, worst.budget.usable_bytes, worst.prediction.worst.phase)
    return Setting(
        "ladder.refused", refusal_numbers(refusal, worst.key), f"{worst.key}: {refusal.message()}", warning=True
    )


def refusal_numbers(refusal: Refusal, device: str) -> dict[str, Any]:
    """``ladder.refused``'s value: a one-device refusal's numbers, and the device."""
    return {
        "predicted_gib": round(refusal.predicted_bytes / GIB, 2),
        "budget_gib": round(refusal.budget_bytes / GIB, 2),
        "shortfall_gib": round(refusal.shortfall_bytes / GIB, 2),
        "phase": refusal.phase,
        "device": device,
        "predicted_bytes": refusal.predicted_bytes,
        "budget_bytes": refusal.budget_bytes,
        "shortfall_bytes": refusal.shortfall_bytes,
    }


def over_budget(shares: list[DeviceShare]) -> DeviceShare | None:
    """The device furthest over its budget, or None when every device fits."""
    over = [s for s in shares if s.over]
    if not over:
        return None
    return max(over, key=lambda s: s.prediction.peak_bytes - (s.budget.usable_bytes if s.budget else 0))


def placement_setting(reading: MemoryReading, tiers: Mapping[str, Tier], reason: str, plugin: str) -> Setting:
    """``placement``: component → its device (key, UUID, name), with why and which tier each device gives."""
    value = {
        component: {"device": d.key, "uuid": d.uuid, "name": d.name}
        for component in COMPONENTS
        for d in [reading.device_of(component)]
    }
    tiers_said = "; ".join(f"{key}: {tier.label}" for key, tier in tiers.items())
    return Setting("placement", value, f"{reason}" + (f" (tiers: {tiers_said})" if tiers_said else ""), plugin)


__all__ = [
    "DeviceShare",
    "LayoutFit",
    "device_shares",
    "fit_layout",
    "groups",
    "layout_memory_settings",
    "most_loaded",
    "over_budget",
    "placement_setting",
    "refusal_numbers",
    "runs_on",
    "share",
    "share_predictor",
]
