"""The memory model against every H100 reading (±10%), and the plan it explains, torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from acestep_core.optimize.calibration import TOLERANCE, all_rows, dit_rows, lm_rows, render, vae_rows
from acestep_core.optimize.memory import (
    GIB,
    LM_SHAPES,
    TEXT_ENCODER_SHAPE,
    device_budget,
    lm_weight_bytes,
    vae_estimate,
)


def test_every_measured_peak_is_predicted_within_ten_percent() -> None:
    rows = all_rows()
    print("\n" + render(rows))
    peaks = [row for row in rows if row.what == "peak"]
    assert len(lm_rows()) == 3 * 2 * 5 and len(vae_rows()) == 10 and len(dit_rows()) == 8
    worst = max(peaks, key=lambda row: abs(row.error))
    assert abs(worst.error) <= TOLERANCE, f"{worst.reading}: {worst.error:+.1%}"


def test_weights_are_counted_from_shapes_exactly() -> None:
    from acestep_core.optimize.calibration import LM_READINGS, readings

    for size, measured in readings(LM_READINGS)["lm"].items():
        assert LM_SHAPES[size].params == measured["params"]
    import torch
    from transformers import Qwen3Config, Qwen3Model

    from acestep_core.runtime.models import model_config

    with torch.device("meta"):
        encoder = Qwen3Model(Qwen3Config(**model_config("text_encoder", "real")))
    assert TEXT_ENCODER_SHAPE.params == sum(p.numel() for p in encoder.parameters())


def test_a_tied_lm_head_left_unquantized_saves_memory() -> None:
    shape = LM_SHAPES["0.6B"]
    assert lm_weight_bytes(shape, quantization="int8") < lm_weight_bytes(shape, quantization="int8", quantize_lm_head=True)
    assert lm_weight_bytes(shape, quantization="int4") < lm_weight_bytes(shape, quantization="int8") < lm_weight_bytes(shape)


def test_tiled_vae_decode_is_flat_in_duration_and_full_decode_is_not() -> None:
    tiled = [vae_estimate(s, tiled=True).work_bytes for s in (30, 600)]
    full = [vae_estimate(s).work_bytes for s in (30, 600)]
    assert tiled[1] < 1.2 * tiled[0]
    assert full[1] > 15 * full[0]


@pytest.mark.parametrize(("gib", "expected"), [(6, 4.69), (8, 6.49), (16, 13.69), (80, 71.29)])
def test_budget_is_total_minus_context_minus_margin(gib: float, expected: float) -> None:
    budget = device_budget(int(gib * GIB))
    assert budget.usable_bytes / GIB == pytest.approx(expected, abs=0.01)
    assert budget.context_bytes == 808 * 2**20


def test_planning_imports_no_torch() -> None:
    code = (
        "import sys, acestep_core, acestep_core_tiers_default\n"
        "from acestep_core import GenerationRequest, DetectOptions, resolve\n"
        "r = resolve(GenerationRequest(duration_s=240, batch_size=2), detect_options=DetectOptions(vram_gb='8', environ={}))\n"
        "assert r.plan.value('memory.budget_gib') is not None\n"
        "bad = [m for m in ('torch', 'transformers', 'diffusers', 'optimum') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
