"""Degrade before refusing: step down an ordered ladder until the predicted peak fits the budget.

Pure Python over :mod:`acestep_core.optimize.memory`. The rungs, in order:

1. tile the VAE decode (256 latent frames, 32 of overlap), then smaller tiles;
2. offload components between phases (VAE, text encoder, LM, DiT), one at a time; on unified
   memory, where moving to the CPU frees nothing, *release* them instead (freed after their phase,
   built again for the next run);
3. quantize weights to int8 (LM, DiT, text encoder, among those the tier quantizes), one at a time;
4. group offload (stream blocks) of the DiT, then the text encoder;
5. a smaller LM (4B → 1.7B → 0.6B, among the sizes the tier allows), unless the user named the LM;
6. the LM off, only when the user left the LM to the tier (a user's LM choice is never dropped);
7. a smaller batch (halved until 1);
8. a shorter duration (the longest that fits, not under 10 s);

and refuse, with the numbers, only when nothing fits. A rung is taken only when it lowers the
predicted peak, so a rung that cannot help (tiling a VAE that is not the largest phase) is skipped.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from acestep_core.optimize.memory import (
    Budget,
    Choices,
    Corrector,
    Prediction,
    RunShape,
    gib,
    over_budget,
    predict,
)
from acestep_core.record import Record
from acestep_core.types import Setting
from acestep_core.vocabulary import LM_SIZES, MIN_DURATION_S, VAE_TILE_FRAMES, VAE_TILE_OVERLAP

VAE_TILES: tuple[tuple[int, int], ...] = ((VAE_TILE_FRAMES, VAE_TILE_OVERLAP), (128, 32), (64, 16))
"""(tile frames, overlap frames): the first is the measured setting (≈1 GiB at any length in bf16)."""
OFFLOAD_ORDER = ("vae", "text_encoder", "lm", "dit")
LM_SIZES_DOWN: tuple[str, ...] = tuple(reversed(LM_SIZES))
QUANTIZE_ORDER = ("lm", "dit", "text_encoder")
STREAM_ORDER = ("dit", "text_encoder")


class Rung(Record):
    """One step down the ladder."""

    name: str
    """e.g. ``vae.tiled``, ``offload.lm=model``, ``quantization.dit=int8``, ``batch=2``, ``duration=120``."""
    reason: str


class Refusal(Record):
    """Nothing fits: the smallest plan the ladder reached, and by how much it misses."""

    predicted_bytes: int
    budget_bytes: int
    phase: str

    @property
    def shortfall_bytes(self) -> int:
        return self.predicted_bytes - self.budget_bytes

    def message(self) -> str:
        if self.budget_bytes <= 0:
            return (
                f"refused: the {self.phase} phase needs {gib(self.predicted_bytes)} "
                f"{over_budget(self.predicted_bytes, self.budget_bytes)}; no rung can make anything fit"
            )
        return (
            f"refused: even after every rung the {self.phase} phase needs {gib(self.predicted_bytes)}, "
            f"{over_budget(self.predicted_bytes, self.budget_bytes)}"
        )


class LadderResult(Record):
    run: RunShape
    choices: Choices
    prediction: Prediction
    budget: Budget
    rungs: tuple[Rung, ...]
    refusal: Refusal | None

    @property
    def fits(self) -> bool:
        return self.refusal is None


class Abilities(Record):
    """What the device allows the ladder to do."""

    offload: bool = True
    """False on unified memory (MPS): offloading moves nothing."""
    quantize: bool = True
    release: bool = False
    """Free a component after its phase (``offload.<c>=release``): where offloading moves nothing."""
    stream: bool | None = None
    """Group offload (stream blocks); None = as ``offload``. On unified memory it keeps the weights in
    host pages outside the GPU's working set, only the running block inside it."""
    stream_note: str = ""
    """Appended to a streaming rung's reason (what streaming means on this device)."""
    max_vae_window: int | None = None
    """Most latent frames one VAE decode may hold (tile + 2 × overlap): MPS's conv1d output limit."""
    lm_models: tuple[str, ...] = LM_SIZES_DOWN
    """LM sizes the ladder may step down to (the tier's)."""
    int8_scheme: str = "qint8"
    """The scheme the int8 rung stores (``plan`` gives the backend's: torchao ``int8_weight_only``, or
    ``w8a8_dynamic`` below compute capability 7.0, or quanto ``qint8``)."""
    quantize_components: tuple[str, ...] = QUANTIZE_ORDER
    """Components the int8 rung may quantize (the tier's: ``upstream-2026-04`` quantizes the DiT only)."""


DISCRETE_GPU = Abilities()
"""A discrete GPU: every rung is open."""

Predictor = Callable[[RunShape, Choices], Prediction]
"""What the ladder predicts a plan with: the whole run on one device (:func:`predict`), or one device's
share of it where several run it (:mod:`acestep_core.optimize.layout`)."""


def _corrected(predictor: Predictor, corrections: Corrector | None) -> Predictor:
    """``predictor`` with a device's recorded runs applied (only :func:`predict` takes them: a device's
    share over several devices is predicted without corrections)."""
    if corrections is None:
        return predictor
    if predictor is not predict:
        raise ValueError("corrections apply to a whole run on one device (predict), not to a share")
    return functools.partial(predict, corrections=corrections)


def fit(
    run: RunShape,
    choices: Choices,
    budget: Budget,
    abilities: Abilities = DISCRETE_GPU,
    corrections: Corrector | None = None,
    *,
    predictor: Predictor = predict,
) -> LadderResult:
    """Step down the ladder until ``run`` under ``choices`` is predicted to fit ``budget``: by ``predictor``
    (the whole run on one device, or one device's share of it), each prediction corrected by
    ``corrections`` (this device's recorded runs) where given. A budget of zero or less (the context and
    the margin take the whole device) is refused at once: no rung makes a phase need nothing."""
    predictor = _corrected(predictor, corrections)
    walked = list(steps(run, choices, budget, abilities, predictor=predictor)) if budget.has_room else []
    rungs = [rung for _, _, rung, _ in walked]
    if walked:
        run, choices, _, prediction = walked[-1]
    else:
        prediction = predictor(run, choices)
    if prediction.peak_bytes > budget.usable_bytes:
        worst = prediction.worst
        refusal = Refusal(worst.peak_bytes, budget.usable_bytes, worst.phase)
        return LadderResult(run, choices, prediction, budget, tuple(rungs), refusal)
    return LadderResult(run, choices, prediction, budget, tuple(rungs), None)


def steps(
    run: RunShape,
    choices: Choices,
    budget: Budget,
    abilities: Abilities = DISCRETE_GPU,
    corrections: Corrector | None = None,
    *,
    predictor: Predictor = predict,
) -> Iterator[tuple[RunShape, Choices, Rung, Prediction]]:
    """Each rung the ladder takes, with the run and choices after it, until the plan fits or no rung helps."""
    predictor = _corrected(predictor, corrections)
    prediction = predictor(run, choices)
    while prediction.peak_bytes > budget.usable_bytes:
        step = _first_helpful(run, choices, prediction, budget, abilities, predictor)
        if step is None:
            return
        run, choices, _, prediction = step
        yield step


_Step = tuple[RunShape, Choices, Rung, Prediction]


def _first_helpful(
    run: RunShape, choices: Choices, before: Prediction, budget: Budget, abilities: Abilities, predictor: Predictor
) -> _Step | None:
    for candidate_run, candidate, name, why in _candidates(run, choices, budget, abilities, predictor):
        after = predictor(candidate_run, candidate)
        if after.peak_bytes < before.peak_bytes:
            reason = (
                f"{why}: predicted peak {gib(before.peak_bytes)} ({before.worst.phase}) → {gib(after.peak_bytes)} "
                f"({after.worst.phase}), budget {gib(budget.usable_bytes)}"
            )
            return candidate_run, candidate, Rung(name, reason), after
    return None


def _candidates(
    run: RunShape, choices: Choices, budget: Budget, abilities: Abilities, predictor: Predictor
) -> Iterator[tuple[RunShape, Choices, str, str]]:
    for tile, overlap in VAE_TILES:
        if abilities.max_vae_window is not None and tile + 2 * overlap > abilities.max_vae_window:
            continue
        if choices.vae_decode == "full" or tile < choices.tile_frames:
            tiled = dataclasses.replace(choices, vae_decode="tiled", tile_frames=tile, tile_overlap=overlap)
            yield run, tiled, "vae.tiled", f"decode the VAE in tiles of {tile} latent frames with {overlap} of overlap"
    if abilities.offload:
        for component in OFFLOAD_ORDER:
            if choices.offload.get(component) == "none" and _runs(component, run):
                changed = _with(choices, "offload", component, "model")
                yield run, changed, f"offload.{component}=model", f"keep the {component} on the CPU outside its phase"
    elif abilities.release:
        for component in OFFLOAD_ORDER:
            if choices.offload.get(component) == "none" and _runs(component, run):
                changed = _with(choices, "offload", component, "release")
                yield (
                    run,
                    changed,
                    f"offload.{component}=release",
                    (
                        f"release the {component} after its phase (unified memory: moving it to the CPU frees nothing, "
                        "freeing it does; it is built again for the next run)"
                    ),
                )
    if abilities.quantize:
        scheme = abilities.int8_scheme
        for component in QUANTIZE_ORDER:
            if component not in abilities.quantize_components:
                continue
            if choices.quantization.get(component) == "none" and _runs(component, run):
                changed = _with(_with(choices, "quantization", component, "int8"), "schemes", component, scheme)
                yield run, changed, f"quantization.{component}=int8", f"int8 weights for the {component} ({scheme})"
    if abilities.offload if abilities.stream is None else abilities.stream:
        for component in STREAM_ORDER:
            if choices.offload.get(component) in ("none", "model", "release"):
                changed = _with(choices, "offload", component, "group")
                why = f"stream the {component}'s blocks from the CPU (group offload){abilities.stream_note}"
                yield run, changed, f"offload.{component}=group", why
    if run.lm_model is not None and run.lm_choice != "size" and run.lm_model in LM_SIZES_DOWN:
        for size in LM_SIZES_DOWN[LM_SIZES_DOWN.index(run.lm_model) + 1 :]:
            if size in abilities.lm_models:
                why = f"the {size} LM instead of the {run.lm_model} (the user did not name an LM size)"
                yield dataclasses.replace(run, lm_model=size), choices, f"lm={size}", why
                break
    if run.lm_model is not None and run.lm_choice == "auto":
        why = f"no LM (the {run.lm_model} does not fit; the user left the LM to the tier)"
        yield dataclasses.replace(run, lm_model=None), choices, "lm=off", why
    if run.batch > 1:
        smaller = dataclasses.replace(run, batch=max(1, run.batch // 2))
        yield smaller, choices, f"batch={smaller.batch}", f"a batch of {smaller.batch} instead of {run.batch}"
    shortest = _longest_fitting_duration(run, choices, budget, predictor)
    if shortest is not None and shortest < run.duration_s:
        yield (
            dataclasses.replace(run, duration_s=shortest),
            choices,
            f"duration={shortest:g}",
            f"{shortest:g} s instead of {run.duration_s:g} s",
        )


def _longest_fitting_duration(run: RunShape, choices: Choices, budget: Budget, predictor: Predictor) -> int | None:
    """The longest whole-second duration in [MIN_DURATION_S, run's] that fits, else the minimum
    (so the ladder still takes the rung if it lowers the peak, and refuses with its numbers)."""

    def fits(seconds: int) -> bool:
        return predictor(dataclasses.replace(run, duration_s=seconds), choices).peak_bytes <= budget.usable_bytes

    low, high = MIN_DURATION_S, int(run.duration_s)
    if high <= low:
        return None
    if not fits(low):
        return low
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def _runs(component: str, run: RunShape) -> bool:
    return component != "lm" or run.lm_model is not None


def _with(choices: Choices, field: str, component: str, value: str) -> Choices:
    mapping = dict(getattr(choices, field))
    mapping[component] = value
    changes: dict[str, Any] = {field: mapping}
    return dataclasses.replace(choices, **changes)


# --------------------------------------------------------------------------------------------- mid-run
class Recovery(Record):
    """The rungs a run takes after an out-of-memory error in one phase, to retry that phase once."""

    phase: str
    run: RunShape
    choices: Choices
    rungs: tuple[Rung, ...]
    before_bytes: int
    """The phase's predicted reserved peak before (this device's corrections, the error included)."""
    after_bytes: int
    budget_bytes: int

    @property
    def fits(self) -> bool:
        return self.after_bytes <= self.budget_bytes


RECOVERY_SKIPS = ("lm=off", "duration=")
"""Rungs a running request does not take: dropping the LM or shortening the clip would change what was
asked mid-run (the plan's ladder may take them before anything runs)."""


def recover(
    run: RunShape,
    choices: Choices,
    phase: str,
    budget: Budget,
    abilities: Abilities = DISCRETE_GPU,
    corrections: Corrector | None = None,
) -> Recovery:
    """The next rungs of the ladder for ``phase``, which ran out of memory: the first rung that lowers that
    phase's predicted peak, then the next ones until it is predicted to fit ``budget`` (what the device has
    now) or no rung helps. A smaller LM only for the LM phase and never one the user named; never the LM
    off nor a shorter clip (:data:`RECOVERY_SKIPS`)."""

    corrected = _corrected(predict, corrections)

    def peak(candidate_run: RunShape, candidate: Choices) -> int | None:
        for phase_peak in corrected(candidate_run, candidate).phases:
            if phase_peak.phase == phase:
                return phase_peak.peak_bytes
        return None

    before = current = peak(run, choices) or 0
    rungs: list[Rung] = []
    while not rungs or current > budget.usable_bytes:
        taken = None
        for candidate_run, candidate, name, why in _candidates(run, choices, budget, abilities, corrected):
            if name.startswith(RECOVERY_SKIPS) or (name.startswith("lm=") and phase != "lm"):
                continue
            after = peak(candidate_run, candidate)
            if after is not None and after < current:
                reason = (
                    f"{why}: the {phase} phase ran out of memory; its predicted peak {gib(current)} → {gib(after)}, "
                    f"{gib(budget.usable_bytes)} available"
                )
                taken = (candidate_run, candidate, Rung(name, reason), after)
                break
        if taken is None:
            break
        run, choices, rung, current = taken
        rungs.append(rung)
    return Recovery(phase, run, choices, tuple(rungs), before, current, budget.usable_bytes)


def lowered_settings(run: RunShape, asked: RunShape, fitted_to: Mapping[str, str]) -> list[Setting]:
    """``ladder.lm_model``, ``ladder.batch_size`` and ``ladder.duration_s`` where the ladder lowered ``asked``
    to ``run``: each a warning that says what it fitted (``fitted_to``: ``lm``, ``batch``, ``duration`` → a
    budget, or the device whose budget it was)."""
    settings = []
    if run.lm_model != asked.lm_model:
        now = f"the {run.lm_model} LM" if run.lm_model else "no LM"
        why = f"{now} instead of the {asked.lm_model} to fit {fitted_to['lm']}"
        settings.append(Setting("ladder.lm_model", run.lm_model, why, warning=True))
    if run.batch != asked.batch:
        why = f"batch lowered from {asked.batch} to {run.batch} to fit {fitted_to['batch']}"
        settings.append(Setting("ladder.batch_size", run.batch, why, warning=True))
    if run.duration_s != asked.duration_s:
        why = f"duration lowered from {asked.duration_s:g} s to {run.duration_s:g} s to fit {fitted_to['duration']}"
        settings.append(Setting("ladder.duration_s", run.duration_s, why, warning=True))
    return settings
