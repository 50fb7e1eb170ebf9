"""What a replica runs: the reference pipeline on a resolved request, whole or as one of two stages.
Imported by a replica only when it generates, so that plan-only replicas and the router never load torch.

Every runner takes a :class:`~acestep_core.runtime.pipeline.CancelHandle` and runs in a worker thread
of the replica: cancelling stops the pipeline at its next token, denoising step or written clip (the
pipeline's own phase loops check it) and the runner raises
:class:`~acestep_core.runtime.pipeline.GenerationCancelledError` once the work has stopped.

- :func:`run_request`: all four phases, through the pipeline's public :func:`generate`.
- :func:`run_lm_stage` / :func:`run_render_stage`: the LM, then text encoder + DiT + VAE + WAV files,
  for a two-stage fleet (each stage a deployment of its own). They drive the pipeline's phase functions
  exactly as :func:`acestep_core.runtime.pipeline.run` does, split where the LM's codes are handed on.
- :func:`stand_in`: a stage that only waits (``stand_in_s``): for measuring what the fleet's
  scheduling does with stages of known length, labelled as such wherever it is reported.
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from acestep_core.runtime.pipeline import (
    DEFAULT_CAPTION,
    DEFAULT_DURATION_S,
    CancelHandle,
    GenerationCancelledError,
    GenerationResult,
    RunOptions,
    generate,
)
from acestep_core.runtime.pipeline.dit import run_dit
from acestep_core.runtime.pipeline.lm import run_lm
from acestep_core.runtime.pipeline.output import write_clips
from acestep_core.runtime.pipeline.run import check_before_loading, lm_to_run, run_limits
from acestep_core.runtime.pipeline.session import RunSession
from acestep_core.runtime.pipeline.text_encoder import run_text_encoder
from acestep_core.runtime.pipeline.vae import run_vae
from acestep_core.types import Resolution, to_jsonable

STAND_IN_TICK_S = 0.01
"""How often a stand-in stage checks its cancel handle."""


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def run_request(
    resolution: Resolution, run: Mapping[str, Any], *, out_dir: str, size: str, cancel: CancelHandle
) -> dict[str, Any]:
    """Run ``resolution`` and return the pipeline's report; with ``run["audio"]`` each clip's WAV bytes
    in base64 too."""
    result = generate(
        resolution=resolution,
        out_dir=out_dir,
        size=size,
        steps=run.get("steps", 8),
        seed=run.get("seed", 0),
        caption=run.get("caption") or DEFAULT_CAPTION,
        progress=False,
        cancel=cancel,
    )
    return _with_audio(result.to_dict(), run)


def run_lm_stage(resolution: Resolution, run: Mapping[str, Any], *, size: str, cancel: CancelHandle) -> dict[str, Any]:
    """The first stage: the LM's codes and the durations they cover (or, with the LM off, the durations
    the run will render). JSON-friendly: it travels to the render stage through a deployment handle."""
    check_before_loading(resolution)
    batch, duration_s, max_duration_s = run_limits(resolution)
    session = RunSession(resolution, _options(run, size), cancel)
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            if lm_to_run(resolution) is None:
                duration = float(duration_s if duration_s is not None else min(DEFAULT_DURATION_S, max_duration_s))
                if duration_s is None:
                    session.notes.append(f"no duration asked and the LM is off: {duration:g} s")
                return {"durations": [duration] * batch, "codes": None, "phases": [], "notes": session.notes}
            report, durations, codes = run_lm(session, batch, duration_s, max_duration_s)
    finally:
        session.release()
    return {
        "durations": durations,
        "codes": codes,
        "phases": [to_jsonable(report)],
        "notes": session.notes,
        "seconds": time.perf_counter() - started,
    }


def run_render_stage(
    resolution: Resolution,
    run: Mapping[str, Any],
    lm: Mapping[str, Any],
    *,
    out_dir: str,
    size: str,
    cancel: CancelHandle,
) -> dict[str, Any]:
    """The second stage: text encoder, DiT and VAE over the LM stage's output, then the WAV files."""
    check_before_loading(resolution)
    batch = len(lm["durations"])
    options = _options(run, size)
    session = RunSession(resolution, options, cancel)
    started = time.perf_counter()
    try:
        with torch.inference_mode():
            generator = torch.Generator().manual_seed(options.seed)
            te_report, conditioning = run_text_encoder(session, batch)
            dit_report, latents = run_dit(session, batch, list(lm["durations"]), lm["codes"], conditioning, generator)
            vae_report, audio = run_vae(session, latents)
            clips = write_clips(Path(out_dir), audio, list(lm["durations"]), lm["codes"], cancel=session.cancel)
    finally:
        session.release()
    notes = [*lm.get("notes", ()), *(n for n in session.notes if n not in lm.get("notes", ()))]
    result = GenerationResult(
        resolution, tuple(clips), (te_report, dit_report, vae_report), size, time.perf_counter() - started, tuple(notes)
    )
    data = result.to_dict()
    data["phases"] = [*lm.get("phases", ()), *data["phases"]]
    return _with_audio(data, run)


def stand_in(seconds: float, cancel: CancelHandle) -> float:
    """Wait ``seconds`` (a stage of known length that uses no CPU), checking ``cancel``; returns the time
    it actually took."""
    started = time.perf_counter()
    deadline = started + seconds
    while (left := deadline - time.perf_counter()) > 0:
        cancel.check()
        time.sleep(min(left, STAND_IN_TICK_S))
    return time.perf_counter() - started


def remove_output(out_dir: str) -> bool:
    """Remove a request's own output folder (what a cancelled run leaves is never kept)."""
    path = Path(out_dir)
    if not path.exists():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


__all__ = [
    "CancelHandle",
    "GenerationCancelledError",
    "remove_output",
    "run_lm_stage",
    "run_render_stage",
    "run_request",
    "set_threads",
    "stand_in",
]


def _options(run: Mapping[str, Any], size: str) -> RunOptions:
    return RunOptions(
        size=size,
        seed=run.get("seed", 0),
        steps=run.get("steps", 8),
        caption=run.get("caption") or DEFAULT_CAPTION,
        progress=False,
    )


def _with_audio(data: dict[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    if run.get("audio"):
        for clip in data["clips"]:
            clip["wav_base64"] = base64.b64encode(Path(clip["path"]).read_bytes()).decode("ascii")
    return data
