"""Writing a run's audio: one 16-bit stereo WAV per batch item, each written whole or not at all."""

from __future__ import annotations

import os
import wave
from pathlib import Path

import torch

from acestep_core.runtime.models import SAMPLE_RATE
from acestep_core.runtime.pipeline.records import CancelHandle, ClipReport, GenerationCancelledError

CLIP_NAME = "clip_{index:02d}.wav"


def write_clips(
    out: Path,
    audio: torch.Tensor,
    durations: list[float],
    codes: list[list[int]] | None,
    cancel: CancelHandle | None = None,
) -> list[ClipReport]:
    """One 16-bit stereo WAV per batch item, cut to its duration, peak-normalised.

    Each file is written under a temporary name and renamed into place, so no half-written WAV ever
    carries a clip's name. If the run is cancelled (``cancel``, Ctrl-C) or a write fails, the clips
    this call already wrote are removed again and :class:`GenerationCancelledError` (or the write's
    error) says which: a cancelled run leaves nothing of its own behind.
    """
    out.mkdir(parents=True, exist_ok=True)
    clips: list[ClipReport] = []
    written: list[Path] = []
    temporary: Path | None = None
    try:
        for index, duration in enumerate(durations):
            if cancel is not None:
                cancel.check()
            samples = round(duration * SAMPLE_RATE)
            item = audio[index, :, :samples].float()
            peak = float(item.abs().max()) or 1.0
            pcm = (item / peak * 32767 * 0.9).round().clamp(-32768, 32767).to(dtype=torch.int16).T.contiguous()
            path = out / CLIP_NAME.format(index=index)
            temporary = out / f".{path.name}.{os.getpid()}.partial"
            with wave.open(str(temporary), "wb") as wav:
                wav.setnchannels(item.shape[0])
                wav.setsampwidth(2)
                wav.setframerate(SAMPLE_RATE)
                wav.writeframes(pcm.numpy().tobytes())
            os.replace(temporary, path)
            temporary = None
            written.append(path)
            clips.append(ClipReport(str(path), duration, samples, None if codes is None else len(codes[index])))
    except BaseException as error:
        removed = _remove([*written, *([temporary] if temporary else [])])
        if isinstance(error, (KeyboardInterrupt, GenerationCancelledError)):
            raise GenerationCancelledError("generation cancelled while writing", removed=removed) from error
        raise
    return clips


def _remove(paths: list[Path]) -> tuple[str, ...]:
    removed = []
    for path in paths:
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(str(path))
    return tuple(removed)
