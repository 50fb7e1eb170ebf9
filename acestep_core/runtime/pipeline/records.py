"""The records a run produces, and the handle that cancels it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acestep_core.runtime.pipeline.report import decision_lines
from acestep_core.types import Resolution, to_jsonable

DEFAULT_CAPTION = "An upbeat synth-pop track with bright pads"
SIZES = ("tiny", "real")

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``(phase, done, total)``: ``(phase, 0, 0)`` when a phase starts, its tokens, steps or clips as
they are done, and ``(phase, n, n)`` when it has finished (``n``: its last count, 1 for a phase that counts
none; an LM that stops early at its EOS finishes below the token budget it counted against)."""


class GenerationCancelledError(RuntimeError):
    """A run was cancelled through its :class:`CancelHandle` (or Ctrl-C); its memory is released.
    ``removed``: the clips it had already written and removed again (a cancelled run keeps nothing)."""

    def __init__(self, message: str = "generation cancelled", *, removed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.removed = removed


class CancelHandle:
    """Cancel a running generation from another thread: ``handle.cancel()``; the run stops at the next
    token, denoising step or decoded item, releases its models and raises :class:`GenerationCancelledError`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise GenerationCancelledError("generation cancelled")


@dataclass(frozen=True)
class RunOptions:
    """How to run a resolved request (what the resolution does not decide)."""

    size: str = "tiny"
    """``tiny`` (the embedded CPU-sized models) or ``real`` (the real shapes), random weights either way."""
    seed: int = 0
    steps: int = 8
    """Denoising steps (8: the turbo DiT)."""
    caption: str = DEFAULT_CAPTION
    checkpoints: str | Path | Mapping[str, str | Path] | None = None
    """A checkpoints folder as upstream lays it out (every component the run loads comes from it), or a
    mapping component → its own folder; None: the resolution's request's folder, if any, else random
    weights at ``size``."""
    device: str | None = None
    """``cpu`` / ``cuda:0``; None: the resolution's device when torch can reach it."""
    progress: bool = True
    """Show progress bars (tqdm)."""

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, not {self.size!r}")


@dataclass(frozen=True)
class PhaseReport:
    """One phase of a run: where it ran, how long, how much memory, and what shaped it."""

    name: str
    device: str
    seconds: float
    peak_bytes: int | None
    peak_measure: str
    """``torch.cuda.max_memory_allocated`` (device) or ``peak host RSS during the phase``."""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipReport:
    path: str
    duration_s: float
    samples: int
    codes: int | None


@dataclass(frozen=True)
class GenerationResult:
    """What a run produced and why: the resolution, the WAV files, each phase, the notes to read."""

    resolution: Resolution
    clips: tuple[ClipReport, ...]
    phases: tuple[PhaseReport, ...]
    size: str
    seconds: float
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution.to_dict(),
            "size": self.size,
            "seconds": self.seconds,
            "clips": to_jsonable(self.clips),
            "phases": to_jsonable(self.phases),
            "notes": list(self.notes),
            "decisions": decision_lines(self.resolution),
        }
