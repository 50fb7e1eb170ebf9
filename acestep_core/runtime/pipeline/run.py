"""Running a resolved request: LM → text encoder → DiT → VAE → WAV files."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from acestep_core.optimize import choices_from_plan, corrections, predict
from acestep_core.optimize.layout import device_shares
from acestep_core.optimize.layout import over_budget as device_over_budget
from acestep_core.optimize.memory import RunShape, gib, over_budget
from acestep_core.optimize.plan import budget_now, check_resolution, planned_run, replan_after_oom
from acestep_core.resolve import ResolutionError, resolve
from acestep_core.runtime.pipeline.dit import run_dit
from acestep_core.runtime.pipeline.lm import run_lm
from acestep_core.runtime.pipeline.output import write_clips
from acestep_core.runtime.pipeline.records import (
    DEFAULT_CAPTION,
    CancelHandle,
    GenerationOutOfMemoryError,
    GenerationResult,
    PhaseReport,
    ProgressCallback,
    RunOptions,
)
from acestep_core.runtime.pipeline.session import FaultHook, PeakMemory, RunSession
from acestep_core.runtime.pipeline.text_encoder import run_text_encoder
from acestep_core.runtime.pipeline.vae import run_vae
from acestep_core.types import DetectOptions, GenerationRequest, Overrides, Resolution
from acestep_core.vocabulary import CODES_PER_SECOND, GIB, LATENT_RATE_HZ

DEFAULT_DURATION_S = 30
"""Duration when the LM is off and the user gave none (clamped to the tier)."""
T = TypeVar("T")


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
    :param environ: the environment the resolution reads and the run records its measurements by (the
        correction store's folder, ``ACESTEP_CORE_CACHE_DIR``); default ``os.environ``.
    :param options: passed to :func:`run` (``size``, ``seed``, ``steps``, ``cancel``, ``progress``,
        ``on_progress``, ``caption``, ``checkpoints``, ``device``, ``devices``).
    :param force: run a plan predicted over the device budget instead of refusing it (recorded, warned).
    """
    if resolution is None:
        resolution = resolve(
            request, overrides=overrides, detect_options=detect_options, tiers=tiers, environ=environ, force=force
        )
    return run(resolution, out_dir=out_dir, environ=environ, **options)


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
    fault: FaultHook | None = None,
    memory_probe: Callable[[torch.device], PeakMemory] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GenerationResult:
    """Run a resolved request through LM → text encoder → DiT → VAE and write one WAV per batch item.

    The keyword arguments are :class:`RunOptions`'. :param cancel: a :class:`CancelHandle`;
    :param on_progress: called as ``(phase, done, total)``.
    :param fault: the phase runner's fault hook (tests: raise an out-of-memory error in a phase).
    :param memory_probe: measures each phase (default :class:`PeakMemory`: the allocator's peaks on a GPU).
    :param environ: where the correction store is (``ACESTEP_CORE_CACHE_DIR``; default ``os.environ``).

    A phase that runs out of device memory is freed, re-planned one rung further down the ladder for what
    the device has now, and retried once (recorded in ``result.recoveries``). The measured peaks of every
    phase on a GPU, and every out-of-memory error, go to the correction store when the run ends.

    :raises GenerationCancelledError: when cancelled; every model is released first.
    :raises GenerationOutOfMemoryError: a phase ran out of memory again after its recovery; nothing written.
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
    session = RunSession(
        resolution,
        options,
        cancel or CancelHandle(),
        on_progress,
        lm=lm_to_run(resolution),
        fault=fault,
        memory_probe=memory_probe,
    )
    try:
        with torch.inference_mode():
            phases, clips = _execute(session, Path(out_dir))
    finally:
        session.release()
        _record(session, environ)
    seconds = time.perf_counter() - started
    return GenerationResult(
        resolution,
        tuple(clips),
        tuple(phases),
        size,
        seconds,
        tuple(session.notes),
        tuple(session.recoveries),
    )


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
        observed = corrections.corrections_for(resolution.reading)
        where = f"the {predict(planned, choices_from_plan(plan), observed).worst.phase} phase"
        if resolution.reading.several_devices:
            over = device_over_budget(device_shares(planned, choices_from_plan(plan), resolution.reading))
            where = f"on {over.key} the {over.prediction.worst.phase} phase" if over else where
        raise ResolutionError(
            f"refused before loading: {where} is predicted at {gib(peak)}, {over_budget(peak, budget)} "
            "(force=True runs it anyway)"
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
    session.batch = batch
    seed = session.options.seed
    phases: list[PhaseReport] = []
    codes: list[list[int]] | None = None
    if lm_to_run(session.resolution) is not None:
        report, durations, codes = _recovering(
            session, "lm", lambda: run_lm(session, session.batch, duration_s, max_duration_s)
        )
        phases.append(report)
    else:
        durations = [_duration_without_lm(session, duration_s, max_duration_s)] * batch
    report, conditioning = _recovering(session, "text_encoder", lambda: run_text_encoder(session, session.batch))
    phases.append(report)
    report, latents = _recovering(
        session,
        "dit",
        lambda: run_dit(
            session,
            session.batch,
            durations[: session.batch],
            None if codes is None else codes[: session.batch],
            conditioning[: session.batch],
            torch.Generator().manual_seed(seed),
        ),
    )
    phases.append(report)
    report, audio = _recovering(session, "vae", lambda: run_vae(session, latents[: session.batch]))
    phases.append(report)
    for report in phases:
        _observe(session, report, durations[: session.batch])
    clips = write_clips(
        out, audio, durations[: session.batch], None if codes is None else codes[: session.batch], cancel=session.cancel
    )
    return phases, clips


# --------------------------------------------------------------------------------------------- recovery
def is_out_of_memory(error: BaseException) -> bool:
    """A device out-of-memory error: ``torch.OutOfMemoryError`` (CUDA, ROCm, XPU), or MPS's RuntimeError."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower() and "MPS" in str(error)


def _recovering(session: RunSession, phase: str, call: Callable[[], T]) -> T:
    """Run one phase; after an out-of-memory error, free it, take the ladder's next rung(s) for it and retry
    once. A second error stops the run (:class:`GenerationOutOfMemoryError`): nothing has been written."""
    session.attempts[phase] = 0
    try:
        return call()
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        message = _first_line(error)
    # outside the except block: the failed attempt's frames (and their tensors) are gone with the exception
    session.free(phase)
    recovery = _recover(session, phase, message)
    session.attempts[phase] = 1
    try:
        result = call()
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        again = _first_line(error)
    else:
        recovery["retry"] = "ran"
        return result
    session.free(phase)
    recovery["retry"] = f"out of device memory again ({again})"
    session.observations.append(_failure(session, phase, again, recovery.get("budget_bytes"), source="recovery"))
    rungs = ", ".join(r["name"] for r in recovery["rungs"]) or "no rung that lowers it"
    raise GenerationOutOfMemoryError(
        f"the {phase} phase ran out of device memory ({message}), and again after {rungs} ({again}); the run "
        f"stopped, its models were released and nothing was written. Lower --batch or --duration, free device "
        f"memory, or see `acestep-core plan --explain-memory`",
        recoveries=tuple(session.recoveries),
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:400]


def _recover(session: RunSession, phase: str, message: str) -> dict[str, Any]:
    """Re-plan ``phase`` for what its device has now; apply the new rungs to the session's plan. Over
    several devices the phase is re-planned against its own device as if the run were there alone: what
    other devices hold is then counted too, which errs towards more rungs, never fewer."""
    resolution = session.resolution
    reading = resolution.reading.reading_of(phase)
    figures = session.allocator_now(phase)
    in_use = None
    if figures is not None:
        free, _total, reserved, allocated = figures
        device = dataclasses.replace(
            reading.device,
            free_bytes=free,
            sources={**reading.device.sources, "free_bytes": f"torch mem_get_info after freeing the {phase} phase"},
        )
        reading = dataclasses.replace(reading, device=device).with_allocator(
            reserved, allocated, f"torch memory_reserved / memory_allocated after freeing the {phase} phase"
        )
        in_use = allocated
    budget, basis = budget_now(reading, in_use)
    failure = _failure(session, phase, message, None if budget is None else budget.usable_bytes)
    changes, recovery = replan_after_oom(
        session.plan,
        dataclasses.replace(resolution, reading=reading),
        phase,
        batch=session.batch,
        failure=failure,
        budget=budget,
    )
    taken = ", ".join(r.name for r in recovery.rungs)
    session.observations.append(dataclasses.replace(failure, note=f"retried with {taken or 'no rung'}"))
    session.plan.update(changes)
    if "ladder.batch_size" in changes:
        session.batch = int(changes["ladder.batch_size"])
    record = {
        "phase": phase,
        "error": message,
        "rungs": [{"name": r.name, "reason": r.reason} for r in recovery.rungs],
        "plan_changes": dict(changes),
        "predicted_before_gib": round(recovery.before_bytes / GIB, 2),
        "predicted_after_gib": round(recovery.after_bytes / GIB, 2),
        "budget_gib": round(recovery.budget_bytes / GIB, 2),
        "budget_bytes": recovery.budget_bytes,
        "budget_basis": basis,
        "retry": "not yet run",
    }
    session.recoveries.append(record)
    session.notes.append(
        f"the {phase} phase ran out of device memory ({message}); retried once with {taken or 'no rung (none helps)'}"
    )
    if "ladder.batch_size" in changes:
        session.notes.append(
            f"batch lowered to {session.batch} to recover from the {phase} phase's out-of-memory error"
        )
    return record


def _failure(
    session: RunSession, phase: str, message: str, budget_bytes: int | None, *, source: str = "recovery"
) -> Any:
    """The correction store's record of an out-of-memory error: the peaks it proved were exceeded (from the
    message; else, the budget the phase was predicted to fit)."""
    bounds = corrections.out_of_memory_bounds(message)
    reserved = bounds.get("reserved")
    if reserved is None and budget_bytes is not None:
        reserved = budget_bytes + 1
    return corrections.observe(
        _planned_shape(session),
        choices_from_plan(session.plan),
        phase,
        allocated_bytes=bounds.get("allocated"),
        reserved_bytes=reserved,
        others_on_device=session.on_device.get(phase, ()),
        source=source,
        out_of_memory=True,
        run_id=session.run_id,
    )


def _planned_shape(session: RunSession) -> RunShape:
    plan, resolution = session.plan, session.resolution
    run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
    lm = plan.get("ladder.lm_model", run.lm_model) if "ladder.lm_model" in plan else run.lm_model
    return dataclasses.replace(run, batch=session.batch, lm_model=lm)


# --------------------------------------------------------------------------------------------- recording
def _observe(session: RunSession, report: PhaseReport, durations: list[float]) -> None:
    """A phase measured by the device's allocator, beside the model's prediction for the workload it ran."""
    if report.peak_bytes is None or report.reserved_peak_bytes is None:
        return  # not an allocator's peaks (a CPU's RSS): nothing the model predicts
    details = report.details
    duration = max(durations) if durations else 1.0
    run = dataclasses.replace(_planned_shape(session), duration_s=float(duration))
    if report.name == "lm":
        generated = int(details.get("generated_tokens", 0))
        run = dataclasses.replace(
            run,
            prompt_tokens=int(details.get("prompt_tokens", run.prompt_tokens)),
            cot_tokens=max(0, generated - math.ceil(duration * CODES_PER_SECOND)),
        )
    elif "latent_frames" in details:
        run = dataclasses.replace(run, duration_s=int(details["latent_frames"]) / LATENT_RATE_HZ)
    session.observations.append(
        corrections.observe(
            run,
            choices_from_plan(session.plan),
            report.name,
            allocated_bytes=report.peak_bytes,
            reserved_bytes=report.reserved_peak_bytes,
            others_on_device=session.on_device.get(report.name, ()),
            run_id=session.run_id,
        )
    )


def _record(session: RunSession, environ: Mapping[str, str] | None) -> None:
    """Write what the run measured to the correction store (a problem becomes a note, never an error)."""
    if not session.observations:
        return
    import os

    problem = corrections.record(session.observations, session.resolution.reading.device, environ or os.environ)
    if problem:
        session.notes.append(f"memory measurements not recorded: {problem}")
    else:
        session.notes.append(
            f"{len(session.observations)} phase measurement(s) recorded for this device's next plans "
            f"({corrections.store_path(environ or os.environ)})"
        )


def _duration_without_lm(session: RunSession, duration_s: float | None, max_duration_s: int) -> float:
    if duration_s is not None:
        return float(duration_s)
    duration = min(DEFAULT_DURATION_S, max_duration_s)
    session.notes.append(f"no duration asked and the LM is off: {duration} s")
    return float(duration)
