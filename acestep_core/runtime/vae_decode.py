"""VAE decode, whole or in overlapping tiles (imports torch: the pipeline's module, not the resolution's).

Tiled decode runs the decoder over ``tile_frames`` latent frames at a time with ``overlap`` frames of
context on each side, keeps each tile's centre and writes it into the output. The Oobleck decoder is
convolutional with a receptive field of a few latent frames, so once the overlap covers it the tiles
agree with the whole-clip decode to float rounding (``tests/test_optimize_vae.py`` checks the seams).
Memory: one tile's working set plus the output, ≈1 GiB at any length for ACE-Step's VAE in bf16,
against ≈75 MiB per second of audio for a whole decode (``h100-vae-2026-11-26.json``).

A batch is decoded one item at a time and each decoded item moves to the CPU before the next starts:
the device holds one item's working set whatever the batch (the memory model's batch term is the
latents). The pipeline, calibrate and the GPU scripts all decode through :func:`decode`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from acestep_core.types import OptimizationPlan
from acestep_core.vocabulary import VAE_TILE_FRAMES, VAE_TILE_OVERLAP

TILED_TOLERANCE_FP32 = 1e-4
"""Largest absolute difference between tiled and whole decode (fp32, overlap ≥ the receptive field),
relative to the whole decode's peak amplitude."""


def hop_length(vae: Any) -> int:
    """Audio samples per latent frame: the product of the VAE's downsampling ratios."""
    return math.prod(vae.config.downsampling_ratios)


def decode(
    vae: Any,
    latents: torch.Tensor,
    *,
    tiled: bool = False,
    tile_frames: int = VAE_TILE_FRAMES,
    overlap: int = VAE_TILE_OVERLAP,
    on_item: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Decode ``latents`` ``[batch, channels, frames]`` to audio ``[batch, audio_channels, frames × hop]``
    **on the CPU**: one item at a time, each moved to the CPU as soon as it is decoded.

    :param on_item: called with the number of items done after each one (progress, cancellation).
    """
    if latents.dim() != 3:
        raise ValueError(f"latents must be [batch, channels, frames], not {tuple(latents.shape)}")
    if tile_frames < 1 or overlap < 0:
        raise ValueError(f"tile_frames must be ≥ 1 and overlap ≥ 0, not {tile_frames} and {overlap}")
    items = []
    for index in range(latents.shape[0]):
        one = _decode_one(vae, latents[index : index + 1], tiled=tiled, tile_frames=tile_frames, overlap=overlap)
        items.append(one.to("cpu"))
        del one
        if on_item is not None:
            on_item(index + 1)
    return torch.cat(items, dim=0)


def decode_with_plan(
    vae: Any,
    latents: torch.Tensor,
    plan: OptimizationPlan | Mapping[str, Any],
    on_item: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Decode as the plan's ``vae.decode`` / ``vae.tile_frames`` / ``vae.tile_overlap`` say (see :func:`decode`)."""
    values = plan.as_dict() if isinstance(plan, OptimizationPlan) else plan
    return decode(
        vae,
        latents,
        tiled=values.get("vae.decode", "full") == "tiled",
        tile_frames=int(values.get("vae.tile_frames", VAE_TILE_FRAMES)),
        overlap=int(values.get("vae.tile_overlap", VAE_TILE_OVERLAP)),
        on_item=on_item,
    )


@torch.no_grad()
def _decode_one(vae: Any, latents: torch.Tensor, *, tiled: bool, tile_frames: int, overlap: int) -> torch.Tensor:
    frames = latents.shape[-1]
    if not tiled or frames <= tile_frames:
        return vae.decode(latents).sample
    hop = hop_length(vae)
    output: torch.Tensor | None = None
    for start in range(0, frames, tile_frames):
        stop = min(frames, start + tile_frames)
        low, high = max(0, start - overlap), min(frames, stop + overlap)
        audio = vae.decode(latents[..., low:high]).sample
        if output is None:
            output = audio.new_empty((1, audio.shape[1], frames * hop))
        keep = audio[..., (start - low) * hop : (stop - low) * hop]
        output[..., start * hop : stop * hop] = keep
        del audio, keep
    assert output is not None
    return output
