"""The memory model against every H100 reading: one row per reading, predicted vs measured.

The readings are copies of ``/work/shared/measurements/*.json`` shipped in
``acestep_core/optimize/measurements/`` (see the README there for what each holds). Pure Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from acestep_core.optimize.memory import (
    LATENT_RATE_HZ,
    LM_SHAPES,
    dit_activation_bytes,
    lm_estimate,
    lm_weight_bytes,
    vae_estimate,
)
from acestep_core.vocabulary import VAE_TILE_FRAMES, VAE_TILE_OVERLAP

TOLERANCE = 0.10
LM_READINGS = "h100-2026-11-26.json"
VAE_READINGS = "h100-vae-2026-11-26.json"
DIT_READINGS = "h100-dit-standin-2026-11-26.json"
GENERATED_TOKENS_IN_READINGS = 4
"""The LM readings ``generate()`` 4 tokens after the prompt."""
TILE_FRAMES_IN_READINGS = VAE_TILE_FRAMES
TILE_OVERLAP_IN_READINGS = VAE_TILE_OVERLAP
"""The VAE readings were taken with the default tile."""


@dataclass(frozen=True)
class Row:
    reading: str
    what: str
    """``peak`` (asserted within the tolerance) or ``weights`` (shown)."""
    measured_bytes: int
    predicted_bytes: int

    @property
    def error(self) -> float:
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes


@cache
def readings(name: str) -> dict[str, Any]:
    return json.loads(files("acestep_core.optimize").joinpath("measurements", name).read_text(encoding="utf-8"))


def lm_rows() -> list[Row]:
    data = readings(LM_READINGS)
    prompt = int(data["lm_prompt_tokens"])
    rows = []
    for size, measured in data["lm"].items():
        shape = LM_SHAPES[size]
        for quantization, prefix in (("none", ""), ("int8", "int8_")):
            label = "bf16" if quantization == "none" else "int8"
            # The readings quantized every Linear, lm_head included (plain quantize(weights=qint8)).
            rows.append(Row(f"LM {size} {label}", "weights", measured[f"{prefix}weights_bytes"], lm_weight_bytes(shape, quantization=quantization, quantize_lm_head=True)))
            for batch in (1, 2, 4, 8):
                estimate = lm_estimate(shape, batch=batch, prompt_tokens=prompt, generated_tokens=GENERATED_TOKENS_IN_READINGS, quantization=quantization, quantize_lm_head=True)
                # The readings' peaks are above the empty baseline, weights included.
                rows.append(Row(f"LM {size} {label} batch {batch}", "peak", measured[f"{prefix}peak_b{batch}"], estimate.peak_bytes))
    return rows


def vae_rows() -> list[Row]:
    rows = []
    for decode in readings(VAE_READINGS)["decode"]:
        if decode["error"]:
            continue
        tiled = decode["mode"] != "full"
        estimate = vae_estimate(decode["duration_s"], tiled=tiled, tile_frames=TILE_FRAMES_IN_READINGS, tile_overlap=TILE_OVERLAP_IN_READINGS)
        # The VAE readings are above the weights.
        rows.append(Row(f"VAE {decode['duration_s']} s {'tiled' if tiled else 'full'}", "peak", decode["peak_bytes"], estimate.work_bytes))
    return rows


def dit_rows() -> list[Row]:
    rows = []
    for forward in readings(DIT_READINGS)["forward"]:
        if forward["error"]:
            continue
        attention = "eager" if forward["attention"] == "math" else "sdpa"
        predicted = dit_activation_bytes(forward["duration_s"], forward["batch"], attention=attention)
        rows.append(Row(f"DiT {forward['duration_s']} s batch {forward['batch']} {forward['attention']}", "peak", forward["peak_activation_bytes"], predicted))
    return rows


def all_rows() -> list[Row]:
    return lm_rows() + vae_rows() + dit_rows()


def render(rows: list[Row]) -> str:
    lines = [f"{'reading':<34} {'kind':<8} {'measured GiB':>12} {'predicted GiB':>13} {'error':>7}"]
    for row in rows:
        flag = "" if abs(row.error) <= TOLERANCE else "  OVER"
        lines.append(f"{row.reading:<34} {row.what:<8} {row.measured_bytes / 2**30:>12.3f} {row.predicted_bytes / 2**30:>13.3f} {row.error:>+7.1%}{flag}")
    peaks = [abs(r.error) for r in rows if r.what == "peak"]
    lines.append(f"{len(peaks)} peaks, worst |error| {max(peaks):.1%} (bound {TOLERANCE:.0%}); frames at {LATENT_RATE_HZ} Hz")
    return "\n".join(lines)
