"""The DiT phase: denoise latents whose length follows the duration and whose batch is the run's.

The DiT the request chose (``--dit``): turbo runs one forward a step; base and sft run classifier-free
guidance, the conditional and the unconditional (``null_condition_emb``) rows as one forward of twice the
batch, combined with diffusers' adaptive projected guidance, as diffusers' ``AceStepPipeline`` (and
upstream's base model) do. The LM's codes become source latents through the DiT's audio tokenizer (its
FSQ code book) and detokenizer; without the LM the source is the learned silence latent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers.guiders.adaptive_projected_guidance import MomentumBuffer, normalized_guidance

from acestep_core.runtime.models import LATENT_CHANNELS, build_dit, latent_frames
from acestep_core.runtime.pipeline.records import PhaseReport
from acestep_core.runtime.pipeline.session import RunSession

GUIDANCE_SCALE = 7.0
"""diffusers' ``AceStepPipeline`` default for base / sft (turbo ignores guidance)."""
APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 2.5
"""diffusers' ``AceStepPipeline``: adaptive projected guidance, as upstream's base model runs CFG."""
TIMBRE_FRAMES = 750
"""30 s of the condition encoder's learned silence latent: its timbre input when no reference audio is given."""


def run_dit(
    session: RunSession,
    batch: int,
    durations: list[float],
    codes: list[list[int]] | None,
    conditioning: torch.Tensor,
    generator: torch.Generator,
) -> tuple[PhaseReport, torch.Tensor]:
    """Denoise for ``session.options.steps`` steps; returns latents ``[batch, channels, frames]``."""
    steps, size = session.options.steps, session.options.size
    variant = session.resolution.adjusted.dit_model
    forwards = int(session.resolution.plan.value("dit.forwards_per_step", 1))
    frames = latent_frames(max(durations))
    with session.phase("dit") as phase:
        dit = session.component("dit", lambda: build_dit(size, variant=variant))
        device, dtype = session.device_of("dit"), session.dtype_of(dit)
        if conditioning.shape[-1] != dit.condition_encoder.config.text_hidden_dim:
            raise ValueError(
                f"the text encoder's width ({conditioning.shape[-1]}) is not the DiT's text input "
                f"({dit.condition_encoder.config.text_hidden_dim}): checkpoints of different models?"
            )
        condition = encode_condition(dit, session.hand_over(conditioning, "conditioning", "dit", dtype))
        null = dit.condition_encoder.null_condition_emb.to(device, dtype).expand_as(condition)
        rows = [
            session.hand_over(torch.tensor([row], dtype=torch.long), "codes", "dit") if row else None
            for row in codes or []
        ]
        source = source_latents(dit, rows, batch, frames, device, dtype)
        mask = torch.ones(batch, frames, dit.config.in_channels - 2 * LATENT_CHANNELS, device=device, dtype=dtype)
        context = torch.cat([source, mask], dim=-1)
        latents = torch.randn(batch, frames, LATENT_CHANNELS, generator=generator).to(device, dtype)
        schedule = torch.linspace(1.0, 0.0, steps + 1)
        momentum = MomentumBuffer(momentum=APG_MOMENTUM) if forwards == 2 else None
        bar = session.bar("dit", steps, "steps")
        for step in range(steps):
            session.cancel.check()
            t = torch.full((batch,), float(schedule[step]), device=device, dtype=dtype)
            if forwards == 2:
                both = dit(
                    torch.cat([latents, latents]),
                    torch.cat([t, t]),
                    torch.cat([t, t]),
                    torch.cat([condition, null]),
                    torch.cat([context, context]),
                ).sample
                conditional, unconditional = both.chunk(2)
                velocity = normalized_guidance(
                    conditional,
                    unconditional,
                    GUIDANCE_SCALE - 1.0,
                    momentum,
                    eta=0.0,
                    norm_threshold=APG_NORM_THRESHOLD,
                    use_original_formulation=True,
                    norm_dim=(1,),
                )
            else:
                velocity = dit(latents, t, t, condition, context).sample
            latents = latents + (schedule[step + 1] - schedule[step]).item() * velocity
            bar.update(1)
            session.progress("dit", step + 1, steps)
        bar.close()
        name = session.loaded["dit"].name if "dit" in session.loaded else f"{variant} {size}"
        phase.details.update(
            {
                "latent_frames": frames,
                "batch": batch,
                "steps": steps,
                "forwards_per_step": forwards,
                "rows_per_forward": batch * forwards,
                "source": "the LM's codes through the audio detokenizer" if codes else "the silence latent",
                "model": f"AceStepTransformer1DModel {name}",
            }
        )
        latents = latents.transpose(1, 2).contiguous()
        session.leave("dit")
    return phase.finished(), latents


def encode_condition(dit: Any, text_hidden: torch.Tensor) -> torch.Tensor:
    """The DiT's condition encoder over the caption's hidden states, through the model's own ``forward``
    (so offload hooks place it). There are no lyrics: the caption stands in for the lyric sequence;
    the timbre input is the encoder's silence latent, as upstream does without reference audio."""
    encoder = dit.condition_encoder
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


def source_latents(
    dit: Any,
    codes: Sequence[torch.Tensor | None],
    batch: int,
    frames: int,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``[batch, frames, 64]``: the silence latent, overwritten where the LM wrote codes (each row a
    ``[1, n]`` long tensor on the DiT's device, or None) by what the DiT's detokenizer makes of them (5 latent
    frames a code), as diffusers' ``prepare_src_latents`` does."""
    silence = dit.condition_encoder.silence_latent.to(device, dtype)
    repeats = -(-frames // silence.shape[1])
    source = silence.repeat(1, repeats, 1)[:, :frames].expand(batch, -1, -1).clone()
    for row, indices in enumerate(codes):
        if indices is not None:
            hints = dit(codes=indices).to(dtype)[0]
            source[row, : min(frames, hints.shape[0])] = hints[:frames]
    return source
