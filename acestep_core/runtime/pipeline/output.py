"""Writing a run's audio: one 16-bit stereo WAV per batch item."""

from __future__ import annotations

import wave
from pathlib import Path

import torch

from acestep_core.runtime.models import SAMPLE_RATE
from acestep_core.runtime.pipeline.records import ClipReport


def write_clips(
    out: Path, audio: torch.Tensor, durations: list[float], codes: list[list[int]] | None
) -> list[ClipReport]:
    """One 16-bit stereo WAV per batch item, cut to its duration, peak-normalised."""
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    for index, duration in enumerate(durations):
        samples = round(duration * SAMPLE_RATE)
        item = audio[index, :, :samples].float()
        peak = float(item.abs().max()) or 1.0
        pcm = (item / peak * 32767 * 0.9).round().clamp(-32768, 32767).to(dtype=torch.int16).T.contiguous()
        path = out / f"clip_{index:02d}.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(item.shape[0])
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(pcm.numpy().tobytes())
        clips.append(ClipReport(str(path), duration, samples, None if codes is None else len(codes[index])))
    return clips
