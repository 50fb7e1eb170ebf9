"""The memory model against every shipped reading, kept apart as ``fit`` and ``held-out``.

The readings are copies shipped in ``acestep_core/optimize/measurements/``; ``labels.json`` there labels
each file ``fit`` (a ``*_FITTED`` constant was fitted to it) or ``held-out`` (none was: it judges the
model). Each row predicts what the reading's own protocol ran (its prompt, its build, its decode path)
and compares like with like: allocated with allocated, reserved with reserved, weights with weights.
A row whose protocol the pipeline does not run, and that the model does not describe, is shown with
its reason and not asserted (``asserted=False``). Pure Python: no torch.

Bounds: fit rows within ±10 %; held-out rows never below −5 % (under-prediction is what crashes a run)
and never above +25 %. ``tests/test_optimize_memory.py`` asserts them; ``benchmarks/memory_heldout.py``
prints the held-out table.
"""

from __future__ import annotations

import json
import math
from functools import cache
from importlib.resources import files
from typing import Any

from acestep_core.optimize.memory import (
    DIT_DECODER_SHAPE,
    DIT_SHAPE,
    DIT_STANDIN_SHAPE,
    DTYPE_BYTES,
    LM_SHAPES,
    QWEN3_LM_SHAPES,
    VAE_SHAPE,
    dit_activation_bytes,
    dit_weight_bytes,
    lm_estimate,
    lm_weight_bytes,
    reserved_bytes,
    vae_estimate,
)
from acestep_core.record import Record
from acestep_core.vocabulary import GIB, LATENT_RATE_HZ, VAE_TILE_FRAMES, VAE_TILE_OVERLAP

FIT_TOLERANCE = 0.10
HELD_OUT_UNDER = -0.05
HELD_OUT_OVER = 0.25
LM_READINGS = "h100-2026-11-26.json"
VAE_READINGS = "h100-vae-2026-11-26.json"
DIT_READINGS = "h100-dit-standin-2026-11-26.json"
CALIBRATE_READINGS = "h100-2026-11-27-calibrate.json"
OPTIMIZE_READINGS = "h100-2026-11-27-gpu_optimize.json"
GENERATED_TOKENS_IN_READINGS = 4
"""Every LM reading ``generate()`` s 4 tokens after its prompt."""
TILE_FRAMES_IN_READINGS = VAE_TILE_FRAMES
TILE_OVERLAP_IN_READINGS = VAE_TILE_OVERLAP
"""The VAE readings were taken with the default tile."""
CALIBRATE_PROMPT_OVERHEAD = 500
"""calibrate's LM prompt: 5 codes a second plus 500 tokens (``runtime.calibrate.search``)."""
CALIBRATE_CONDITION_TOKENS = 2304
QUANTIZED_ON_DEVICE = (
    "quantized on the device: the freed bf16 weights stay cached (reserved), which the pipeline never does "
    "(it quantizes on the CPU, then moves); the allocator releases cached blocks before it raises an OOM"
)
QUANTIZED_WEIGHTS_ON_DEVICE = (
    "int8 weights read after quantizing on the device: the reading holds what quanto's on-device pass left "
    "allocated beside the tensors (0.6B: 78 MiB); the pipeline quantizes on the CPU, and the bytes it leaves are "
    "checked to the byte on builds (tests/test_quantization.py)"
)
INT8_HELD_OUT = "held-out"
"""The int8 readings of ``h100-2026-11-26.json`` judge the model (``labels.json``): no constant was fitted to
them, int8 bytes being counted from quanto's layout (``optimize/quantization.py``)."""


class Row(Record):
    reading: str
    source: str
    """The reading's file in ``acestep_core/optimize/measurements/``."""
    label: str
    """``fit`` or ``held-out`` (``labels.json``)."""
    quantity: str
    """``allocated`` (peak), ``reserved`` (peak) or ``weights``."""
    measured_bytes: int
    predicted_bytes: int
    asserted: bool = True
    note: str = ""
    predicts: str = ""
    """What ``predicted_bytes`` is: the same quantity (fit rows), or ``plan`` (held-out: the reserved peak)."""
    allocated_bytes: int | None = None
    """Held-out rows: the model's allocated prediction, shown beside the plan's figure."""

    @property
    def allocated_error(self) -> float | None:
        if self.allocated_bytes is None:
            return None
        return (self.allocated_bytes - self.measured_bytes) / self.measured_bytes

    @property
    def error(self) -> float:
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes

    @property
    def within_bounds(self) -> bool:
        if self.label == "fit":
            return abs(self.error) <= FIT_TOLERANCE
        return HELD_OUT_UNDER <= self.error <= HELD_OUT_OVER

    def as_json(self) -> dict[str, Any]:
        return {
            "reading": self.reading,
            "source": self.source,
            "label": self.label,
            "quantity": self.quantity,
            "measured_bytes": self.measured_bytes,
            "predicted_bytes": self.predicted_bytes,
            "error": round(self.error, 4),
            "asserted": self.asserted,
            "within_bounds": self.within_bounds,
            "predicts": self.predicts or self.quantity,
            "allocated_bytes": self.allocated_bytes,
            "allocated_error": None if self.allocated_error is None else round(self.allocated_error, 4),
            "note": self.note,
        }


@cache
def readings(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        files("acestep_core.optimize").joinpath("measurements", name).read_text(encoding="utf-8")
    )
    return data


def labels() -> dict[str, dict[str, str]]:
    return {name: entry for name, entry in readings("labels.json").items() if not name.startswith("_")}


def label_of(name: str) -> str:
    return labels()[name]["label"]


# --------------------------------------------------------------------------------------------- fit
def lm_rows() -> list[Row]:
    """The bf16 LM readings (fit): weights, and allocated and reserved peaks, each against the same quantity."""
    data = readings(LM_READINGS)
    prompt = int(data["lm_prompt_tokens"])
    label = label_of(LM_READINGS)
    rows = []
    for size, measured in data["lm"].items():
        shape = QWEN3_LM_SHAPES[size]
        rows.append(
            Row(
                f"LM {size} bf16 weights",
                LM_READINGS,
                label,
                "weights",
                measured["weights_bytes"],
                lm_weight_bytes(shape),
            )
        )
        for batch in (1, 2, 4, 8):
            estimate = lm_estimate(
                shape, batch=batch, prompt_tokens=prompt, generated_tokens=GENERATED_TOKENS_IN_READINGS
            )
            # The readings' peaks are above the empty baseline, weights included.
            name = f"LM {size} bf16 batch {batch}"
            rows.append(Row(name, LM_READINGS, label, "allocated", measured[f"peak_b{batch}"], estimate.peak_bytes))
            rows.append(
                Row(
                    name,
                    LM_READINGS,
                    label,
                    "reserved",
                    measured[f"reserved_b{batch}"],
                    reserved_bytes(estimate.peak_bytes),
                )
            )
    return rows


def lm_int8_rows(*, real_counts: bool = False) -> list[Row]:
    """The int8 LM readings of the same file (held-out): quanto ``qint8`` on every Linear, lm_head included
    (plain ``quantize(weights=qint8)``), quantized on the device, of LMs with Qwen3's 151,936-row vocabulary
    (like with like). Each peak against the plan's figure (the predicted reserved peak), as the other held-out
    rows; the weights against the exact bytes. ``real_counts``: the 217,204-row LMs instead."""
    data = readings(LM_READINGS)
    prompt = int(data["lm_prompt_tokens"])
    lm_shapes = LM_SHAPES if real_counts else QWEN3_LM_SHAPES
    rows = []
    for size, measured in data["lm"].items():
        shape = lm_shapes[size]
        weights = lm_weight_bytes(shape, quantization="qint8", quantize_lm_head=True)
        rows.append(
            Row(
                f"LM {size} int8 weights",
                LM_READINGS,
                INT8_HELD_OUT,
                "weights",
                measured["int8_weights_bytes"],
                weights,
                asserted=False,
                note=QUANTIZED_WEIGHTS_ON_DEVICE,
            )
        )
        for batch in (1, 2, 4, 8):
            estimate = lm_estimate(
                shape,
                batch=batch,
                prompt_tokens=prompt,
                generated_tokens=GENERATED_TOKENS_IN_READINGS,
                quantization="qint8",
                quantize_lm_head=True,
            )
            plan = reserved_bytes(estimate.peak_bytes)
            name = f"LM {size} int8 batch {batch}"
            for quantity, asserted in (("allocated", True), ("reserved", False)):
                rows.append(
                    Row(
                        name,
                        LM_READINGS,
                        INT8_HELD_OUT,
                        quantity,
                        measured[f"int8_{'peak' if quantity == 'allocated' else 'reserved'}_b{batch}"],
                        plan,
                        asserted=asserted,
                        note="" if asserted else QUANTIZED_ON_DEVICE,
                        predicts="plan",
                        allocated_bytes=estimate.peak_bytes,
                    )
                )
    return rows


def vae_rows() -> list[Row]:
    rows = []
    label = label_of(VAE_READINGS)
    for decode in readings(VAE_READINGS)["decode"]:
        if decode["error"]:
            continue
        tiled = decode["mode"] != "full"
        estimate = vae_estimate(
            decode["duration_s"],
            tiled=tiled,
            tile_frames=TILE_FRAMES_IN_READINGS,
            tile_overlap=TILE_OVERLAP_IN_READINGS,
        )
        latents = VAE_SHAPE.latent_channels * math.ceil(decode["duration_s"] * LATENT_RATE_HZ) * 2
        # These readings are above the weights (and the latents they decode).
        rows.append(
            Row(
                f"VAE {decode['duration_s']} s {'tiled' if tiled else 'full'}",
                VAE_READINGS,
                label,
                "allocated",
                decode["peak_bytes"],
                estimate.work_bytes - latents,
            )
        )
    return rows


def dit_rows() -> list[Row]:
    rows = []
    label = label_of(DIT_READINGS)
    for forward in readings(DIT_READINGS)["forward"]:
        if forward["error"]:
            continue
        attention = "eager" if forward["attention"] == "math" else "sdpa"
        predicted = dit_activation_bytes(
            forward["duration_s"], forward["batch"], attention=attention, shape=DIT_STANDIN_SHAPE
        )
        rows.append(
            Row(
                f"DiT stand-in {forward['duration_s']} s batch {forward['batch']} {forward['attention']}",
                DIT_READINGS,
                label,
                "allocated",
                forward["peak_activation_bytes"],
                predicted,
            )
        )
    return rows


def fit_rows() -> list[Row]:
    return lm_rows() + vae_rows() + dit_rows()


# --------------------------------------------------------------------------------------------- held-out
def calibrate_rows(*, real_counts: bool = False) -> list[Row]:
    """calibrate's trials (``max_memory_allocated`` after loading, so weights included), each predicted
    for what the trial ran: the component built on the device in bf16, then the phase's workload.
    ``real_counts``: predict with the real checkpoints' counts instead (the 217,204-row LMs, the whole
    2B DiT file) — not like with like, it shows how far the real counts move each row."""
    lm_shapes = LM_SHAPES if real_counts else QWEN3_LM_SHAPES
    dit_shape = DIT_SHAPE if real_counts else DIT_DECODER_SHAPE
    data = readings(CALIBRATE_READINGS)
    label = label_of(CALIBRATE_READINGS)
    bf16 = DTYPE_BYTES["bf16"]
    rows = []
    for trial in data["measurements"]:
        if not trial["fits"]:
            continue
        phase, duration, batch = trial["phase"], trial["duration_s"], trial["batch"]
        frames = math.ceil(duration * LATENT_RATE_HZ)
        name = f"{phase} {duration} s ×{batch} ({trial['card_gb']:g} GB cap)"
        if phase.startswith("lm:"):
            estimate = lm_estimate(
                lm_shapes[phase.split(":")[1]],
                batch=batch,
                prompt_tokens=duration * 5 + CALIBRATE_PROMPT_OVERHEAD,
                generated_tokens=GENERATED_TOKENS_IN_READINGS,
            )
            predicted = estimate.peak_bytes + batch * (duration * 5 + CALIBRATE_PROMPT_OVERHEAD) * 8
        elif phase == "dit":
            # the decoder alone (no condition encoder), fed random inputs: latents, context, condition
            inputs = batch * (frames * (64 + 128 + 64) + CALIBRATE_CONDITION_TOKENS * dit_shape.hidden)
            predicted = (
                dit_weight_bytes(dit_shape) + inputs * bf16 + dit_activation_bytes(duration, batch, shape=dit_shape)
            )
        else:
            # built on the device: weight-norm's computed encoder weights stay there in fp32 (.to(bf16)
            # converts parameters only); the decode kept every item on the device, then concatenated
            estimate = vae_estimate(
                duration,
                batch=batch,
                tiled=phase == "vae:tiled",
                tile_frames=TILE_FRAMES_IN_READINGS,
                tile_overlap=TILE_OVERLAP_IN_READINGS,
                items_on_device=True,
            )
            predicted = estimate.peak_bytes + VAE_SHAPE.encoder_conv_weights * DTYPE_BYTES["fp32"]
        rows.append(
            Row(
                name,
                CALIBRATE_READINGS,
                label,
                "allocated",
                trial["peak_bytes"],
                reserved_bytes(predicted),
                predicts="plan",
                allocated_bytes=predicted,
            )
        )
    return rows


def optimize_rows(*, real_counts: bool = False) -> list[Row]:
    """gpu_optimize's LM runs under tier caps: a prefill of ``tokens − 4``, then 4 generated tokens, int8
    with lm_head excluded. Figures are GiB rounded to 3 decimals (±0.5 MiB). ``real_counts``: as
    :func:`calibrate_rows`."""
    lm_shapes = LM_SHAPES if real_counts else QWEN3_LM_SHAPES
    data = readings(OPTIMIZE_READINGS)
    label = label_of(OPTIMIZE_READINGS)
    rows = []
    for run in data["runs"]:
        if run.get("oom") or "measured_gib" not in run:
            continue
        quantize_head = "lm_head" not in run["exclude"]
        estimate = lm_estimate(
            lm_shapes[run["lm"]],
            batch=run["batch"],
            prompt_tokens=run["tokens"] - GENERATED_TOKENS_IN_READINGS,
            generated_tokens=GENERATED_TOKENS_IN_READINGS,
            quantization=run["quantization"],
            quantize_lm_head=quantize_head,
        )
        name = f"LM {run['lm']} {run['quantization']} {run['duration_s']:g} s ×{run['batch']} ({run['tier']})"
        plan = reserved_bytes(estimate.peak_bytes)
        rows.append(
            Row(
                name,
                OPTIMIZE_READINGS,
                label,
                "allocated",
                round(run["measured_gib"] * GIB),
                plan,
                predicts="plan",
                allocated_bytes=estimate.peak_bytes,
            )
        )
        rows.append(
            Row(
                name,
                OPTIMIZE_READINGS,
                label,
                "reserved",
                round(run["reserved_gib"] * GIB),
                plan,
                asserted=False,
                note=QUANTIZED_ON_DEVICE,
                predicts="plan",
                allocated_bytes=estimate.peak_bytes,
            )
        )
    return rows


def held_out_rows(*, real_counts: bool = False) -> list[Row]:
    return (
        calibrate_rows(real_counts=real_counts)
        + optimize_rows(real_counts=real_counts)
        + lm_int8_rows(real_counts=real_counts)
    )


# --------------------------------------------------------------------------------------------- output
def component(row: Row) -> str:
    text = row.reading.lower()
    for name in ("vae", "dit", "lm"):
        if text.startswith(name):
            return name
    return "other"


def summary(rows: list[Row]) -> dict[str, Any]:
    """Worst under- and over-prediction of the asserted rows, overall and per component."""
    asserted = [r for r in rows if r.asserted]
    result: dict[str, Any] = {
        "rows": len(rows),
        "asserted": len(asserted),
        "outside_bounds": [r.reading for r in asserted if not r.within_bounds],
    }
    groups: dict[str, list[Row]] = {"all": asserted}
    for row in asserted:
        groups.setdefault(component(row), []).append(row)
    modelled = [r for r in asserted if r.allocated_error is not None]
    if modelled:
        under = min(modelled, key=lambda r: r.allocated_error or 0.0)
        over = max(modelled, key=lambda r: r.allocated_error or 0.0)
        result["allocated_model"] = {
            "worst_under": round(under.allocated_error or 0.0, 4),
            "worst_under_row": under.reading,
            "worst_over": round(over.allocated_error or 0.0, 4),
            "worst_over_row": over.reading,
        }
    for name, group in groups.items():
        if group:
            under, over = min(group, key=lambda r: r.error), max(group, key=lambda r: r.error)
            result[name] = {
                "worst_under": round(under.error, 4),
                "worst_under_row": under.reading,
                "worst_over": round(over.error, 4),
                "worst_over_row": over.reading,
            }
    return result


def render(rows: list[Row], *, title: str = "") -> str:
    lines = [title] if title else []
    lines.append(
        f"{'reading':<42} {'source':<34} {'measured':<9} {'GiB':>7} {'predicted':<9} {'GiB':>7} "
        f"{'error':>7} {'allocated model':>15}"
    )
    for row in rows:
        flag = "" if row.within_bounds else ("  (not asserted)" if not row.asserted else "  OUT OF BOUNDS")
        model = (
            ""
            if row.allocated_error is None or row.allocated_bytes is None
            else f"{row.allocated_bytes / GIB:.3f} {row.allocated_error:+.1%}"
        )
        lines.append(
            f"{row.reading:<42} {row.source:<34} {row.quantity:<9} {row.measured_bytes / GIB:>7.3f} "
            f"{row.predicts or row.quantity:<9} {row.predicted_bytes / GIB:>7.3f} {row.error:>+7.1%} "
            f"{model:>15}{flag}"
        )
    notes = sorted({row.note for row in rows if row.note})
    lines += [f"not asserted: {note}" for note in notes]
    info = summary(rows)
    if "allocated_model" in info:
        model = info["allocated_model"]
        lines.append(
            f"the model's allocated prediction (not the plan's figure): worst under {model['worst_under']:+.1%} "
            f"({model['worst_under_row']}), worst over {model['worst_over']:+.1%} ({model['worst_over_row']})"
        )
    if "all" in info:
        worst = info["all"]
        lines.append(
            f"{info['asserted']} asserted of {len(rows)} rows; worst under-prediction "
            f"{worst['worst_under']:+.1%} ({worst['worst_under_row']}), worst over-prediction "
            f"{worst['worst_over']:+.1%} ({worst['worst_over_row']})"
        )
    return "\n".join(lines)
