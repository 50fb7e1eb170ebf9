"""The memory model against every shipped reading, like with like, kept apart as ``fit`` and ``heldout``.

The readings are copies shipped in ``acestep_core/optimize/measurements/``; ``labels.json`` there labels
each file ``fit`` (a ``*_FITTED`` constant was fitted to it) or ``held-out`` (none was: it judges the
model). Every row compares like with like: the model's **allocated** prediction with an allocated reading
(``max_memory_allocated``), its **reserved** prediction (allocated + the allocator's gap, a term of its
own) with a reserved reading (``max_memory_reserved``). Each row predicts what the reading's own protocol
ran (its prompt, its build, its decode path).

Rows carry a ``config_id``, one per distinct experiment: the same workload measured again (another cap,
another file) shares it. A held-out row whose configuration a fit reading already measured is a
*replica* (``replica_of``): shown, held to the fit bound, and not counted as held-out. A trial that ran
out of memory is a row too (``bound="at_least"``): its peak exceeded what the error message reports, so
only under-prediction can be judged. A row is left unasserted only with a ``reason`` whose claim the
row's ``check`` states in numbers (and the tests verify). Pure Python: no torch.

Bounds: fit rows (and replicas) within ±10 %; held-out rows, per distinct configuration: allocated
within −5 % … +15 %, reserved within −5 % … +25 %. ``tests/test_optimize_memory.py`` asserts them;
``benchmarks/memory_heldout.py`` prints the table.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from functools import cache
from importlib.resources import files
from typing import Any

from acestep_core.optimize.corrections import out_of_memory_bounds
from acestep_core.optimize.memory import (
    DIT_DECODER_SHAPE,
    DIT_SHAPE,
    DIT_STANDIN_SHAPE,
    DTYPE_BYTES,
    LM_SHAPES,
    QWEN3_LM_SHAPES,
    RESERVED_GAP_FITTED,
    RESERVED_GAP_QUANTIZED_FITTED,
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
HELD_OUT_OVER = {"allocated": 0.15, "reserved": 0.25}
LM_READINGS = "h100-2026-11-26.json"
VAE_READINGS = "h100-vae-2026-11-26.json"
DIT_READINGS = "h100-dit-standin-2026-11-26.json"
CALIBRATE_READINGS = "h100-2026-11-27-calibrate.json"
OPTIMIZE_READINGS = "h100-2026-11-27-gpu_optimize.json"
GPU_MEMORY_FORMAT = "acestep-core gpu_memory readings, version 1"
"""What ``benchmarks/gpu_memory.py`` writes (``heldout-readings.json``): shipped here, labelled held-out,
it becomes rows of :func:`gpu_memory_rows`."""
GENERATED_TOKENS_IN_READINGS = 4
"""Every LM reading ``generate()`` s 4 tokens after its prompt."""
TILE_FRAMES_IN_READINGS = VAE_TILE_FRAMES
TILE_OVERLAP_IN_READINGS = VAE_TILE_OVERLAP
"""The VAE readings were taken with the default tile."""
CALIBRATE_PROMPT_OVERHEAD = 500
"""calibrate's LM prompt: 5 codes a second plus 500 tokens (``runtime.calibrate.search``)."""
CALIBRATE_CONDITION_TOKENS = 2304


class Row(Record):
    reading: str
    """What was measured, in words."""
    source: str
    """The reading's file in ``acestep_core/optimize/measurements/``."""
    split: str
    """``fit`` or ``heldout`` (``labels.json``)."""
    kind: str
    """``allocated`` (``max_memory_allocated``; weights rows: the allocated weights) or ``reserved``."""
    config_id: str
    """The experiment's configuration: rows of the same workload share it (replicas, other caps)."""
    measured_bytes: int
    predicted_bytes: int
    bound: str = "peak"
    """``peak``: the measured peak; ``at_least``: a trial that ran out of memory, whose peak exceeded this."""
    asserted: bool = True
    reason: str = ""
    """Why the row is not asserted (its claim in ``check``), or what it is held to."""
    check: Mapping[str, Any] | None = None
    """The numbers behind ``reason``: ``{"claim": ..., ..., "holds": bool}``."""
    replica_of: str | None = None
    """A held-out row repeating a fit experiment: the fit row (``source: reading``)."""

    @property
    def error(self) -> float:
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes

    @property
    def limits(self) -> tuple[float, float | None]:
        """(lowest, highest) error accepted; None: no upper bound (a lower-bound reading)."""
        if self.split == "fit" or self.replica_of is not None:
            low, high = -FIT_TOLERANCE, FIT_TOLERANCE
        else:
            low, high = HELD_OUT_UNDER, HELD_OUT_OVER[self.kind]
        return low, None if self.bound == "at_least" else high

    @property
    def within_bounds(self) -> bool:
        low, high = self.limits
        return self.error >= low and (high is None or self.error <= high)

    @property
    def counts_as_heldout(self) -> bool:
        return self.split == "heldout" and self.replica_of is None and self.asserted

    def as_json(self) -> dict[str, Any]:
        low, high = self.limits
        return {
            "config_id": self.config_id,
            "kind": self.kind,
            "predicted_bytes": self.predicted_bytes,
            "measured_bytes": self.measured_bytes,
            "error_pct": round(100 * self.error, 2),
            "asserted": self.asserted,
            "reason": self.reason,
            "split": self.split,
            "replica_of": self.replica_of,
            "bound": self.bound,
            "limits_pct": [round(100 * low, 1), None if high is None else round(100 * high, 1)],
            "within_bounds": self.within_bounds,
            "check": dict(self.check) if self.check is not None else None,
            "reading": self.reading,
            "source": self.source,
        }


@cache
def readings(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        files("acestep_core.optimize").joinpath("measurements", name).read_text(encoding="utf-8")
    )
    return data


def labels() -> dict[str, dict[str, str]]:
    return {name: entry for name, entry in readings("labels.json").items() if not name.startswith("_")}


def split_of(name: str) -> str:
    return "fit" if labels()[name]["label"] == "fit" else "heldout"


# --------------------------------------------------------------------------------------------- configurations
def lm_config(size: str, quantization: str, head: bool, prompt: int, generated: int, batch: int) -> str:
    weights = "bf16" if quantization == "none" else f"{quantization} (lm_head {'int8' if head else 'bf16'})"
    return f"lm {size} {weights} prompt {prompt}+{generated} ×{batch}"


def vae_config(duration_s: float, batch: int, tiled: bool) -> str:
    mode = f"tiled {TILE_FRAMES_IN_READINGS}+2×{TILE_OVERLAP_IN_READINGS}" if tiled else "full"
    return f"vae {mode} {duration_s:g} s ×{batch}"


def dit_config(variant: str, duration_s: float, batch: int, attention: str) -> str:
    return f"dit {variant} {duration_s:g} s ×{batch} {attention}"


# --------------------------------------------------------------------------------------------- fit
def lm_rows() -> list[Row]:
    """The bf16 LM readings (fit): weights, and allocated and reserved peaks, each against the same quantity."""
    data = readings(LM_READINGS)
    prompt = int(data["lm_prompt_tokens"])
    split = split_of(LM_READINGS)
    rows = []
    for size, measured in data["lm"].items():
        shape = QWEN3_LM_SHAPES[size]  # the builds measured: Qwen3's 151,936 rows
        for quantization, prefix in (("none", ""), ("int8", "int8_")):
            name = "bf16" if quantization == "none" else "int8"
            gap = RESERVED_GAP_FITTED if quantization == "none" else RESERVED_GAP_QUANTIZED_FITTED
            # The readings quantized every Linear, lm_head included (plain quantize(weights=qint8)).
            # quantized on the device: quanto's pass leaves bytes the pipeline (quantizing on the CPU) never holds
            weights = lm_weight_bytes(shape, quantization=quantization, quantize_lm_head=True, quantized_on_device=True)
            rows.append(
                Row(
                    name,
                    LM_READINGS,
                    split,
                    "allocated",
                    f"lm {size} {name} weights",
                    measured[f"{prefix}weights_bytes"],
                    weights,
                )
            )
            for batch in (1, 2, 4, 8):
                estimate = lm_estimate(
                    shape,
                    batch=batch,
                    prompt_tokens=prompt,
                    generated_tokens=GENERATED_TOKENS_IN_READINGS,
                    quantization=quantization,
                    quantize_lm_head=True,
                    quantized_on_device=True,
                )
                config = lm_config(size, quantization, True, prompt, GENERATED_TOKENS_IN_READINGS, batch)
                # The readings' peaks are above the empty baseline, weights included.
                reading = f"LM {size} {name} batch {batch}"
                rows.append(
                    Row(
                        reading,
                        LM_READINGS,
                        split,
                        "allocated",
                        config,
                        measured[f"{prefix}peak_b{batch}"],
                        estimate.peak_bytes,
                    )
                )
                rows.append(
                    Row(
                        reading,
                        LM_READINGS,
                        split,
                        "reserved",
                        config,
                        measured[f"{prefix}reserved_b{batch}"],
                        reserved_bytes(estimate.peak_bytes, gap),
                    )
                )
    return rows


def vae_rows() -> list[Row]:
    data = readings(VAE_READINGS)
    split = split_of(VAE_READINGS)
    rows = [
        Row(
            "VAE weights",
            VAE_READINGS,
            split,
            "allocated",
            "vae bf16 weights",
            data["weights_bytes"],
            VAE_SHAPE.params * DTYPE_BYTES["bf16"],
        )
    ]
    for decode in data["decode"]:
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
                f"VAE {decode['duration_s']} s {'tiled' if tiled else 'full'} (above the weights)",
                VAE_READINGS,
                split,
                "allocated",
                vae_config(decode["duration_s"], 1, tiled),
                decode["peak_bytes"],
                estimate.work_bytes - latents,
            )
        )
    return rows


def dit_rows() -> list[Row]:
    rows = []
    split = split_of(DIT_READINGS)
    for forward in readings(DIT_READINGS)["forward"]:
        if forward["error"]:
            continue
        attention = "eager" if forward["attention"] == "math" else "sdpa"
        predicted = dit_activation_bytes(
            forward["duration_s"], forward["batch"], attention=attention, shape=DIT_STANDIN_SHAPE
        )
        rows.append(
            Row(
                f"DiT stand-in {forward['duration_s']} s batch {forward['batch']} {forward['attention']} (activations)",
                DIT_READINGS,
                split,
                "allocated",
                dit_config("stand-in", forward["duration_s"], forward["batch"], forward["attention"]),
                forward["peak_activation_bytes"],
                predicted,
            )
        )
    return rows


def fit_rows() -> list[Row]:
    return lm_rows() + vae_rows() + dit_rows()


# --------------------------------------------------------------------------------------------- held-out
def oom_bounds(message: str) -> dict[str, int]:
    """Lower bounds on a trial's peaks from its out-of-memory message (:func:`~acestep_core.optimize.
    corrections.out_of_memory_bounds`)."""
    return out_of_memory_bounds(message)


def calibrate_rows(*, real_counts: bool = False) -> list[Row]:
    """calibrate's trials (``max_memory_allocated`` after loading, so weights included), each predicted
    for what the trial ran: the component built on the device in bf16, then the phase's workload. A trial
    that ran out of memory gives lower bounds (allocated and reserved) from its error message.
    ``real_counts``: predict with the real checkpoints' counts instead (the 217,204-row LMs, the whole
    2B DiT file) — not like with like, it shows how far the real counts move each row."""
    lm_shapes = LM_SHAPES if real_counts else QWEN3_LM_SHAPES
    dit_shape = DIT_SHAPE if real_counts else DIT_DECODER_SHAPE
    data = readings(CALIBRATE_READINGS)
    split = split_of(CALIBRATE_READINGS)
    bf16 = DTYPE_BYTES["bf16"]
    rows = []
    for trial in data["measurements"]:
        phase, duration, batch = trial["phase"], trial["duration_s"], trial["batch"]
        frames = math.ceil(duration * LATENT_RATE_HZ)
        cap = f"{trial['card_gb']:g} GB cap"
        gap = RESERVED_GAP_FITTED
        if phase.startswith("lm:"):
            size = phase.split(":")[1]
            prompt = duration * 5 + CALIBRATE_PROMPT_OVERHEAD
            estimate = lm_estimate(
                lm_shapes[size], batch=batch, prompt_tokens=prompt, generated_tokens=GENERATED_TOKENS_IN_READINGS
            )
            predicted = estimate.peak_bytes + batch * prompt * 8
            config = lm_config(size, "none", False, prompt, GENERATED_TOKENS_IN_READINGS, batch)
        elif phase == "dit":
            # the decoder alone (no condition encoder), fed random inputs: latents, context, condition
            inputs = batch * (frames * (64 + 128 + 64) + CALIBRATE_CONDITION_TOKENS * dit_shape.hidden)
            predicted = (
                dit_weight_bytes(dit_shape) + inputs * bf16 + dit_activation_bytes(duration, batch, shape=dit_shape)
            )
            config = dit_config("decoder", duration, batch, "sdpa")
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
            config = vae_config(duration, batch, phase == "vae:tiled")
        name = f"{phase} {duration} s ×{batch} ({cap})"
        if trial["fits"]:
            rows.append(Row(name, CALIBRATE_READINGS, split, "allocated", config, trial["peak_bytes"], predicted))
            continue
        bounds = oom_bounds(trial["error"])
        if isinstance(trial.get("cap_bytes"), int):
            bounds["reserved"] = trial["cap_bytes"]  # the cap itself, exact (the message rounds it)
        oom = f"{name}: out of memory"
        if "allocated" in bounds:
            rows.append(
                Row(
                    oom,
                    CALIBRATE_READINGS,
                    split,
                    "allocated",
                    config,
                    bounds["allocated"],
                    predicted,
                    bound="at_least",
                    reason="ran out of memory: the peak exceeded the live tensors plus the failed request "
                    "(from the error message); only under-prediction is judged",
                )
            )
        if "reserved" in bounds:
            rows.append(
                Row(
                    oom,
                    CALIBRATE_READINGS,
                    split,
                    "reserved",
                    config,
                    bounds["reserved"],
                    reserved_bytes(predicted, gap),
                    bound="at_least",
                    reason="ran out of memory: the reserved peak would have exceeded the cap (from the error "
                    "message); only under-prediction is judged",
                )
            )
    return rows


def optimize_rows(*, real_counts: bool = False) -> list[Row]:
    """gpu_optimize's LM runs under tier caps: a prefill of ``tokens − 4``, then 4 generated tokens, int8
    with lm_head excluded. Figures are GiB rounded to 3 decimals (±0.5 MiB). ``real_counts``: as
    :func:`calibrate_rows`."""
    lm_shapes = LM_SHAPES if real_counts else QWEN3_LM_SHAPES
    data = readings(OPTIMIZE_READINGS)
    split = split_of(OPTIMIZE_READINGS)
    rows = []
    for run in data["runs"]:
        if run.get("oom") or "measured_gib" not in run:
            continue
        quantize_head = "lm_head" not in run["exclude"]
        shape = lm_shapes[run["lm"]]
        prompt = run["tokens"] - GENERATED_TOKENS_IN_READINGS
        estimate = lm_estimate(
            shape,
            batch=run["batch"],
            prompt_tokens=prompt,
            generated_tokens=GENERATED_TOKENS_IN_READINGS,
            quantization=run["quantization"],
            quantize_lm_head=quantize_head,
            quantized_on_device=True,
        )
        config = lm_config(
            run["lm"], run["quantization"], quantize_head, prompt, GENERATED_TOKENS_IN_READINGS, run["batch"]
        )
        name = f"LM {run['lm']} {run['quantization']} {run['duration_s']:g} s ×{run['batch']} ({run['tier']})"
        rows.append(
            Row(
                name,
                OPTIMIZE_READINGS,
                split,
                "allocated",
                config,
                round(run["measured_gib"] * GIB),
                estimate.peak_bytes,
            )
        )
        measured_reserved = round(run["reserved_gib"] * GIB)
        bf16_weights = lm_weight_bytes(shape)
        rows.append(
            Row(
                name,
                OPTIMIZE_READINGS,
                split,
                "reserved",
                config,
                measured_reserved,
                reserved_bytes(estimate.peak_bytes, RESERVED_GAP_QUANTIZED_FITTED),
                asserted=False,
                reason=(
                    f"not the pipeline's path: built on the device in bf16 and quantized there, with no "
                    f"empty_cache before the peak was reset, so the allocator still held the {bf16_weights / GIB:.2f} "
                    f"GiB of bf16 weights quanto replaced and this reserved peak starts at or above them "
                    f"(measured {measured_reserved / GIB:.2f} GiB); the pipeline quantizes on the CPU"
                ),
                check={
                    "claim": "measured_bytes >= bf16_weights_bytes",
                    "bf16_weights_bytes": bf16_weights,
                    "holds": measured_reserved >= bf16_weights,
                },
            )
        )
    return rows


def gpu_memory_rows(name: str) -> list[Row]:
    """Rows from a shipped ``benchmarks/gpu_memory.py`` readings file (:func:`gpu_memory_rows_from`)."""
    return gpu_memory_rows_from(readings(name), name, split_of(name))


def gpu_memory_rows_from(data: Mapping[str, Any], name: str, split: str = "heldout") -> list[Row]:
    """Rows from ``benchmarks/gpu_memory.py``'s readings (``heldout-readings.json``): each phase of a tier's
    maximum request and of the recovery runs, allocated and reserved against the model's prediction for the
    same workload as the script records it; a phase that ran out of memory gives lower bounds."""
    if data.get("format") != GPU_MEMORY_FORMAT:
        raise ValueError(f"{name}: not {GPU_MEMORY_FORMAT!r}")
    rows: list[Row] = []
    for phase in data["phases"]:
        config = (
            f"{phase['phase']} {phase.get('lm') or 'no LM'} {phase['duration_s']:g} s ×{phase['batch']} "
            f"[{phase.get('choices', '')}]"
        )
        reading = f"{phase['tier']} {phase['phase']} ({phase.get('attempt', 'plan')})"
        for kind in ("allocated", "reserved"):
            measured = phase.get(f"{kind}_bytes")
            predicted = phase.get(f"predicted_{kind}_bytes")
            if not isinstance(measured, int) or not isinstance(predicted, int) or measured <= 0:
                continue
            if phase.get("ran", True):
                rows.append(Row(reading, name, split, kind, config, measured, predicted))
            else:
                bound = oom_bounds(phase.get("oom", "")).get(kind)
                if bound:
                    rows.append(
                        Row(
                            f"{reading}: out of memory",
                            name,
                            split,
                            kind,
                            config,
                            bound,
                            predicted,
                            bound="at_least",
                            reason="ran out of memory: only under-prediction is judged",
                        )
                    )
    return rows


def shipped_gpu_memory_readings() -> list[str]:
    return [name for name in labels() if readings(name).get("format") == GPU_MEMORY_FORMAT]


def held_out_rows(*, real_counts: bool = False) -> list[Row]:
    rows = calibrate_rows(real_counts=real_counts) + optimize_rows(real_counts=real_counts)
    for name in shipped_gpu_memory_readings():
        rows += gpu_memory_rows(name)
    return mark_replicas(rows, fit_rows())


def mark_replicas(held: Iterable[Row], fit: Iterable[Row]) -> list[Row]:
    """Held-out rows whose configuration (and kind) a fit reading measured, labelled ``replica_of`` it."""
    fitted = {(r.kind, r.config_id): f"{r.source}: {r.reading}" for r in fit}
    out = []
    for row in held:
        replica = fitted.get((row.kind, row.config_id))
        if replica is not None and row.split == "heldout":
            row = dataclasses.replace(row, replica_of=replica)
        out.append(row)
    return out


def all_rows() -> list[Row]:
    return fit_rows() + held_out_rows()


# --------------------------------------------------------------------------------------------- output
def component(row: Row) -> str:
    return row.config_id.split(" ", 1)[0]


class Configuration(Record):
    """The rows of one distinct configuration and kind, judged together."""

    config_id: str
    kind: str
    split: str
    rows: tuple[Row, ...]

    @property
    def asserted(self) -> bool:
        return any(r.asserted for r in self.rows)

    @property
    def replica_of(self) -> str | None:
        return next((r.replica_of for r in self.rows if r.replica_of), None)

    @property
    def counts_as_heldout(self) -> bool:
        return any(r.counts_as_heldout for r in self.rows)

    @property
    def within_bounds(self) -> bool:
        return all(r.within_bounds for r in self.rows if r.asserted)

    @property
    def worst(self) -> Row:
        """The asserted row furthest outside (or nearest to) its bounds; else the largest error."""
        judged = [r for r in self.rows if r.asserted] or list(self.rows)
        return min(judged, key=_margin)


def _margin(row: Row) -> float:
    low, high = row.limits
    return min(row.error - low, math.inf if high is None else high - row.error)


def configurations(rows: Iterable[Row]) -> list[Configuration]:
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.split, row.kind, row.config_id), []).append(row)
    return [Configuration(config, kind, split, tuple(group)) for (split, kind, config), group in groups.items()]


def summary(rows: list[Row]) -> dict[str, Any]:
    """Per split and kind: rows, distinct configurations (held-out ones: not replicas), the worst under- and
    over-prediction of the asserted rows, and what is out of bounds."""
    result: dict[str, Any] = {
        "rows": len(rows),
        "asserted": sum(r.asserted for r in rows),
        "outside_bounds": [f"{r.source}: {r.reading} ({r.kind})" for r in rows if r.asserted and not r.within_bounds],
    }
    for split in ("fit", "heldout"):
        for kind in ("allocated", "reserved"):
            group = [r for r in rows if r.split == split and r.kind == kind]
            if not group:
                continue
            configs = configurations(group)
            # the worst errors of what this split judges: held-out rows that are not replicas of a fit experiment
            asserted = [
                r for r in group if r.asserted and r.bound == "peak" and (split == "fit" or r.counts_as_heldout)
            ]
            entry: dict[str, Any] = {
                "rows": len(group),
                "configurations": len(configs),
                "replica_configurations": sum(c.replica_of is not None for c in configs),
                "heldout_configurations": sum(c.counts_as_heldout for c in configs),
                "lower_bound_rows": sum(r.bound == "at_least" for r in group),
                "not_asserted_rows": sum(not r.asserted for r in group),
            }
            if asserted:
                under, over = min(asserted, key=lambda r: r.error), max(asserted, key=lambda r: r.error)
                entry |= {
                    "worst_under_pct": round(100 * under.error, 2),
                    "worst_under": under.config_id,
                    "worst_over_pct": round(100 * over.error, 2),
                    "worst_over": over.config_id,
                }
            result[f"{split}_{kind}"] = entry
    result["distinct_heldout_configurations"] = len({c.config_id for c in configurations(rows) if c.counts_as_heldout})
    return result


def render(rows: list[Row], *, title: str = "") -> str:
    """One line per distinct configuration and kind: its rows, errors, bounds and status."""
    lines = [title] if title else []
    lines.append(
        f"{'configuration':<52} {'kind':<9} {'n':>2} {'measured':>9} {'predicted':>9} {'error':>8} "
        f"{'bounds':<12} status"
    )
    for config in configurations(rows):
        worst = config.worst
        low, high = worst.limits
        bounds = f"{low:+.0%}…{'' if high is None else f'{high:+.0%}'}"
        if not config.asserted:
            status = "not asserted (see reason)"
        elif not config.within_bounds:
            status = "OUT OF BOUNDS"
        else:
            status = "ok"
        if config.replica_of:
            status += f"; replica of {config.replica_of}"
        if worst.bound == "at_least":
            status += "; ran out of memory: measured is a lower bound"
        errors = sorted({f"{r.error:+.1%}" for r in config.rows})
        error = errors[0] if len(errors) == 1 else f"{min(r.error for r in config.rows):+.1%}…"
        lines.append(
            f"{config.config_id:<52} {config.kind:<9} {len(config.rows):>2} {worst.measured_bytes / GIB:>9.3f} "
            f"{worst.predicted_bytes / GIB:>9.3f} {error:>8} {bounds:<12} {status}"
        )
    reasons = sorted({r.reason for r in rows if not r.asserted and r.reason})
    lines += [f"not asserted: {reason}" for reason in reasons]
    return "\n".join(lines)
