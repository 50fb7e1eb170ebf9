"""The reference pipeline: how a generation drives the framework, end to end.

::

    resolve(request)            tier, clamps and plan (the same call the CLI, the API and any UI make)
      → LM                      chain of thought + audio codes, under DurationConstraint   (lm.py)
      → text encoder            the caption's embedding                                   (text_encoder.py)
      → DiT                     denoise latents: length from the duration, batch from the run (dit.py)
      → VAE                     latents → 48 kHz stereo audio                              (vae.py)
      → WAV files               int16, written with the standard library                  (output.py)

:mod:`.session` holds a run's device, components and measurements; :mod:`.report` renders the result.

**The embedded models have random weights: the audio is noise.** The run shows and measures the flow;
with checkpoints (``checkpoints={"vae": DIR, ...}``) the same code runs trained models. Two stand-ins
are stated in every report: the random-weight LM gets its prompt up to ``duration:`` (a trained LM
writes the whole chain of thought itself), and the LM's codes reach the DiT through a fixed random
code embedding rather than ACE-Step's trained detokenizer.
"""

from acestep_core.runtime.pipeline.records import (
    DEFAULT_CAPTION,
    CancelHandle,
    ClipReport,
    GenerationCancelledError,
    GenerationOutOfMemoryError,
    GenerationResult,
    PhaseReport,
    RunOptions,
)
from acestep_core.runtime.pipeline.report import decision_lines, render_report
from acestep_core.runtime.pipeline.run import DEFAULT_DURATION_S, generate, is_out_of_memory, run, run_limits
from acestep_core.runtime.pipeline.session import rss_bytes

__all__ = [
    "DEFAULT_CAPTION",
    "DEFAULT_DURATION_S",
    "CancelHandle",
    "ClipReport",
    "GenerationCancelledError",
    "GenerationOutOfMemoryError",
    "GenerationResult",
    "PhaseReport",
    "RunOptions",
    "decision_lines",
    "generate",
    "is_out_of_memory",
    "render_report",
    "rss_bytes",
    "run",
    "run_limits",
]
