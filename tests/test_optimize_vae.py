"""Tiled VAE decode matches the whole decode within a stated tolerance, seams included."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from acestep_core.runtime.models import build_vae  # noqa: E402
from acestep_core.runtime.vae_decode import TILED_TOLERANCE_FP32, decode, decode_with_plan, hop_length  # noqa: E402

FRAMES, TILE = 40, 12


@pytest.fixture(scope="module")
def decoded():
    torch.manual_seed(0)
    vae = build_vae("tiny")
    latents = torch.randn(2, 64, FRAMES)
    return vae, latents, decode(vae, latents)


def _seam_error(vae, full, tiled) -> float:
    hop = hop_length(vae)
    seams = [s * hop for s in range(TILE, FRAMES, TILE)]
    windows = torch.cat([(tiled - full)[..., max(0, s - hop) : s + hop].flatten() for s in seams])
    return (windows.abs().max() / full.abs().max()).item()


def test_tiled_decode_matches_the_whole_decode_at_every_seam(decoded) -> None:
    vae, latents, full = decoded
    tiled = decode_with_plan(vae, latents, {"vae.decode": "tiled", "vae.tile_frames": TILE, "vae.tile_overlap": 8})
    assert tiled.shape == full.shape == (2, 2, FRAMES * hop_length(vae))
    assert ((tiled - full).abs().max() / full.abs().max()).item() < TILED_TOLERANCE_FP32
    assert _seam_error(vae, full, tiled) < TILED_TOLERANCE_FP32


def test_without_overlap_the_seams_show(decoded) -> None:
    """The check above can fail: tiles decoded without context differ at the seams."""
    vae, latents, full = decoded
    tiled = decode(vae, latents[:1], tiled=True, tile_frames=TILE, overlap=0)
    assert _seam_error(vae, full[:1], tiled) > 100 * TILED_TOLERANCE_FP32
