"""Running a resolved request: LM → text encoder → DiT → VAE → WAV files."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from acestep_core.optimize import choices_from_plan, predict
from acestep_core.optimize.layout import device_shares, over_budget
from acestep_core.optimize.memory import gib
from acestep_core.optimize.plan import check_resolution, planned_run
from acestep_core.resolve import ResolutionError, resolve
from acestep_core.runtime.pipeline.dit import run_dit
from acestep_core.runtime.pipeline.lm import run_lm
from acestep_core.runtime.pipeline.output import write_clips
from acestep_core.runtime.pipeline.records import (
    DEFAULT_CAPTION,
    CancelHandle,
    GenerationResult,
    PhaseReport,
    ProgressCallback,
    RunOptions,
)
from acestep_core.runtime.pipeline.session import RunSession
from acestep_core.runtime.pipeline.text_encoder import run_text_encoder
from acestep_core.runtime.pipeline.vae import run_vae
from acestep_core.types import DetectOptions, GenerationRequest, Overrides, Resolution

DEFAULT_DURATION_S = 30
"""Duration when the LM is off and the user gave none (clamped to the tier)."""


def generate(
    request: GenerationRequest | None = None,
    *,
    out_dir: str | Path,
    overrides: Overrides | None = None,
    detect_options: DetectOptions | None = None,
    tiers: str | None = None,
    environ: Mapping[str, str] | None = None,
    resolution: Resolution | None = None,
    force: bool = False,
    **options: Any,
) -> GenerationResult:
    """Resolve ``request`` on this machine (exactly as ``acestep-core plan`` does) and run it.

    :param resolution: an already-made resolution (the CLI passes its own); else one is made here
        with :func:`acestep_core.resolve` from the other arguments.
    :param options: passed to :func:`run` (``size``, ``seed``, ``steps``, ``cancel``, ``progress``,
        ``on_progress``, ``caption``, ``checkpoints``, ``device``, ``devices``).
    :param force: run a plan predicted over the device budget instead of refusing it (recorded, warned).
    """
    if resolution is None:
        resolution = resolve(
            request, overrides=overrides, detect_options=detect_options, tiers=tiers, environ=environ, force=force
        )
    return run(resolution, out_dir=out_dir, **options)


def run(
    resolution: Resolution,
    *,
    out_dir: str | Path,
    size: str = "tiny",
    seed: int = 0,
    steps: int = 8,
    caption: str = DEFAULT_CAPTION,
    cancel: CancelHandle | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    checkpoints: str | Path | Mapping[str, str | Path] | None = None,
    device: str | None = None,
    devices: Mapping[str, str] | None = None,
) -> GenerationResult:
    """Run a resolved request through LM → text encoder → DiT → VAE and write one WAV per batch item.

    The keyword arguments are :class:`RunOptions`'. :param cancel: a :class:`CancelHandle`;
    :param on_progress: called as ``(phase, done, total)``.
    :raises GenerationCancelledError: when cancelled; every model is released first.
    """
    options = RunOptions(
        size=size,
        seed=seed,
        steps=steps,
        caption=caption,
        checkpoints=checkpoints,
        device=device,
        devices=dict(devices or {}),
        progress=progress,
    )
    check_before_loading(resolution)
    started = time.perf_counter()
    session = RunSession(resolution, options, cancel or CancelHandle(), on_progress, lm=lm_to_run(resolution))
    try:
        with torch.inference_mode():
            phases, clips = _execute(session, Path(out_dir))
    finally:
        session.release()
    seconds = time.perf_counter() - started
    return GenerationResult(resolution, tuple(clips), tuple(phases), size, seconds, tuple(session.notes))


def check_before_loading(resolution: Resolution) -> None:
    """Refuse, before any model loads, a plan that was refused or whose final settings (the user's included)
    are predicted over the device budget, unless the user forced it (``memory.forced``).

    :raises ResolutionError: with the phase, predicted peak, budget and shortfall."""
    plan = resolution.plan
    if plan.value("ladder.refused"):
        raise ResolutionError(plan["ladder.refused"].reason)
    peak, budget = check_resolution(resolution)
    if budget is not None and peak > budget and not plan.value("memory.forced"):
        planned = planned_run(plan, resolution.adjusted, resolution.tier)
        where = f"the {predict(planned, choices_from_plan(plan)).worst.phase} phase"
        if resolution.reading.several_devices:
            over = over_budget(device_shares(planned, choices_from_plan(plan), resolution.reading))
            where = f"on {over.key} the {over.prediction.worst.phase} phase" if over else where
        raise ResolutionError(
            f"refused before loading: {where} is predicted at {gib(peak)}, "
            f"{gib(peak - budget)} more than the {gib(budget)} budget (force=True runs it anyway)"
        )


def lm_to_run(resolution: Resolution) -> str | None:
    """The LM the run loads: the adjusted request's, or the smaller one (None: off) the plan's ladder chose."""
    plan = resolution.plan
    return plan.value("ladder.lm_model") if "ladder.lm_model" in plan else resolution.adjusted.lm_model


def run_limits(resolution: Resolution) -> tuple[int, float | None, int]:
    """The batch, the asked duration (None: the LM chooses) and the duration ceiling a run uses: the
    adjusted request's, lowered further where the plan's ladder had to (``ladder.batch_size``,
    ``ladder.duration_s``) so that the predicted peak fits the device."""
    adjusted, tier, plan = resolution.adjusted, resolution.tier, resolution.plan
    ceiling = tier.max_duration_s(lm_to_run(resolution) is not None)
    duration = adjusted.duration_s
    if "ladder.duration_s" in plan:
        ceiling = min(ceiling, int(plan.value("ladder.duration_s")))
        duration = None if duration is None else min(duration, ceiling)
    return int(plan.value("ladder.batch_size", adjusted.batch_size)), duration, ceiling


def _execute(session: RunSession, out: Path) -> tuple[list[PhaseReport], list]:
    batch, duration_s, max_duration_s = run_limits(session.resolution)
    generator = torch.Generator().manual_seed(session.options.seed)
    phases: list[PhaseReport] = []
    codes: list[list[int]] | None = None
    if lm_to_run(session.resolution) is not None:
        report, durations, codes = run_lm(session, batch, duration_s, max_duration_s)
        phases.append(report)
    else:
        durations = [_duration_without_lm(session, duration_s, max_duration_s)] * batch
    report, conditioning = run_text_encoder(session, batch)
    phases.append(report)
    report, latents = run_dit(session, batch, durations, codes, conditioning, generator)
    phases.append(report)
    report, audio = run_vae(session, latents)
    phases.append(report)
    return phases, write_clips(out, audio, durations, codes, cancel=session.cancel)


def _duration_without_lm(session: RunSession, duration_s: float | None, max_duration_s: int) -> float:
    if duration_s is not None:
        return float(duration_s)
    duration = min(DEFAULT_DURATION_S, max_duration_s)
    session.notes.append(f"no duration asked and the LM is off: {duration} s")
    return float(duration)
