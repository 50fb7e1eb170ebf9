"""The DiT phase: denoise latents whose length follows the duration and whose batch is the run's."""

from __future__ import annotations

import math

import torch

from acestep_core.runtime.models import LATENT_CHANNELS, build_dit, latent_frames
from acestep_core.runtime.pipeline.records import PhaseReport
from acestep_core.runtime.pipeline.session import RunSession


def run_dit(
    session: RunSession,
    batch: int,
    durations: list[float],
    codes: list[list[int]] | None,
    conditioning: torch.Tensor,
    generator: torch.Generator,
) -> tuple[PhaseReport, torch.Tensor]:
    """Denoise for ``session.options.steps`` steps; returns latents ``[batch, channels, frames]``."""
    seed, steps, size = session.options.seed, session.options.steps, session.options.size
    frames = latent_frames(max(durations))
    with session.phase("dit") as phase:
        dit = session.component("dit", lambda: build_dit(size))
        device, dtype = session.device_of("dit"), session.dtype_of(dit)
        conditioning = encode_condition(dit, session.hand_over(conditioning, "conditioning", "dit", dtype))
        context_channels = dit.config.in_channels - LATENT_CHANNELS
        context = session.hand_over(
            context_latents(codes, batch, frames, context_channels, seed), "codes", "dit", dtype
        )
        latents = torch.randn(batch, frames, LATENT_CHANNELS, generator=generator).to(device, dtype)
        schedule = torch.linspace(1.0, 0.0, steps + 1)
        bar = session.bar("dit", steps, "steps")
        for step in range(steps):
            session.cancel.check()
            t = torch.full((batch,), float(schedule[step]), device=device, dtype=dtype)
            velocity = dit(latents, t, t, conditioning, context).sample
            latents = latents + (schedule[step + 1] - schedule[step]).item() * velocity
            bar.update(1)
            session.progress("dit", step + 1, steps)
        bar.close()
        phase.details.update(
            {"latent_frames": frames, "batch": batch, "steps": steps, "model": f"AceStepTransformer1DModel {size}"}
        )
        latents = latents.transpose(1, 2).contiguous()
        session.leave("dit")
    return phase.finished(), latents


TIMBRE_FRAMES = 750
"""30 s of the condition encoder's learned silence latent: its timbre input when no reference audio is given."""


def encode_condition(dit: torch.nn.Module, text_hidden: torch.Tensor) -> torch.Tensor:
    """The DiT's condition encoder over the caption's hidden states, through the model's own ``forward``
    (so offload hooks place it). There are no lyrics: the caption stands in for the lyric sequence;
    the timbre input is the encoder's silence latent, as upstream does without reference audio."""
    encoder = getattr(dit, "condition_encoder", None)
    if encoder is None:  # a decoder loaded alone from a checkpoint: widths must already match
        return text_hidden
    batch, tokens = text_hidden.shape[:2]
    device, dtype = text_hidden.device, text_hidden.dtype
    mask = torch.ones(batch, tokens, dtype=torch.long, device=device)
    silence = encoder.silence_latent[:, :TIMBRE_FRAMES].to(device, dtype).expand(batch, -1, -1)
    condition = {
        "text_hidden_states": text_hidden,
        "text_attention_mask": mask,
        "lyric_hidden_states": text_hidden,
        "lyric_attention_mask": mask,
        "refer_audio_acoustic_hidden_states_packed": silence,
        "refer_audio_order_mask": torch.arange(batch, device=device),
    }
    hidden, _ = dit(condition=condition)
    return hidden


def fixed_random(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) / math.sqrt(cols)


def context_latents(codes: list[list[int]] | None, batch: int, frames: int, channels: int, seed: int) -> torch.Tensor:
    """The DiT's context: source latents from the LM's codes (a fixed random code embedding, each 5 Hz
    code held for 5 latent frames) and a chunk mask of ones. Without the LM the source is silence."""
    half = channels // 2
    source = torch.zeros(batch, frames, half)
    if codes:
        table = fixed_random(max(max((max(c) for c in codes if c), default=0) + 1, 1), half, seed + 2)
        for row, row_codes in enumerate(codes):
            if row_codes:
                hints = table[torch.tensor(row_codes)].repeat_interleave(frames // max(len(row_codes), 1) or 1, dim=0)
                source[row, : min(frames, hints.shape[0])] = hints[:frames]
    return torch.cat([source, torch.ones(batch, frames, channels - half)], dim=-1)
