"""The reference pipeline: how a generation drives the framework, end to end.

::

    resolve(request)            tier, clamps and plan (the same call the CLI, the API and any UI make)
      → LM                      chain of thought + audio codes, under DurationConstraint   (lm.py)
      → text encoder            the caption's embedding                                   (text_encoder.py)
      → DiT                     denoise latents: length from the duration, batch from the run (dit.py)
      → VAE                     latents → 48 kHz stereo audio                              (vae.py)
      → WAV files               int16, written with the standard library                  (output.py)

:mod:`.session` holds a run's device, components and measurements; :mod:`.report` renders the result.

**Without checkpoints the models have random weights: the audio is noise.** The run shows and measures the
flow; with a checkpoints folder (``--checkpoints DIR``, ``checkpoints=DIR``) the same code loads trained
models (:func:`acestep_core.runtime.models.loader.load_checkpoint`). The LM's codes reach the DiT through
its audio tokenizer (FSQ code book) and detokenizer, as upstream's; one stand-in is stated in every
report: the prompt is written up to ``duration:`` and ``</think>`` forced (a trained LM writes the whole
chain of thought itself).
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
