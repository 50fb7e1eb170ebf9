"""Quantization measured on the real components: what each scheme leaves a component holding, against the
memory model's prediction, and what it costs in quality against bf16.

Shared by ``benchmarks/bench_quant.py`` (which prints both and writes the quality table the plan reads,
``acestep_core/optimize/measurements/quality/``), the GPU script and ``tests/test_quantization.py``. Every
model is built by :mod:`acestep_core.runtime.models` from its shipped config (random weights: the figures
measure the quantizer on the real architectures, not music) and quantized through
:func:`acestep_core.runtime.apply.apply_plan`, the pipeline's own path.
"""

from __future__ import annotations

import copy
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from acestep_core.optimize.components import dit_shape_from_config, lm_shape_from_config
from acestep_core.optimize.memory import (
    DIT_SHAPES,
    DTYPE_BYTES,
    LM_SHAPES,
    TEXT_ENCODER_SHAPE,
    DiTShape,
    LMShape,
    dit_weight_bytes,
    lm_weight_bytes,
)
from acestep_core.optimize.quantization import DEFAULT_EXCLUDE, SCHEMES
from acestep_core.runtime.apply import apply_plan, quantize_component, weight_bytes
from acestep_core.runtime.models import build_dit, build_lm, build_text_encoder, dit_config, model_config
from acestep_core.vocabulary import DEFAULT_DIT

SCHEME_ORDER: tuple[str, ...] = tuple(SCHEMES)
"""torchao's schemes, then quanto's."""
KINDS: tuple[str, ...] = ("dit", "lm", "text_encoder")
SEED = 0
DEFAULT_REPEATS = 5
"""Timed forwards a scheme (their median)."""


# --------------------------------------------------------------------------------------------- shapes and bytes
def shape_of(kind: str, size: str, *, variant: str = DEFAULT_DIT) -> LMShape | DiTShape:
    """The memory model's shape of component ``kind`` as ``runtime.models`` builds it at ``size`` (``tiny``, or
    ``real``: the 0.6B LM with the audio-code vocabulary, Qwen3-Embedding-0.6B, the DiT ``variant`` with its
    condition encoder, audio tokenizer and detokenizer)."""
    if kind == "dit":
        return DIT_SHAPES[variant] if size == "real" else dit_shape_from_config(dit_config(variant, size), variant)
    if size != "tiny":
        return LM_SHAPES.get(size, LM_SHAPES["0.6B"]) if kind == "lm" else TEXT_ENCODER_SHAPE
    return lm_shape_from_config(model_config(kind, "tiny"), lm_head=kind == "lm")


def predicted_bytes(
    kind: str,
    size: str,
    scheme: str,
    *,
    dtype: str = "bf16",
    exclude: tuple[str, ...] | None = None,
    variant: str = DEFAULT_DIT,
) -> int:
    """The memory model's weight bytes of ``kind`` at ``size`` stored in ``scheme`` (``none``: unquantized)."""
    patterns = DEFAULT_EXCLUDE[kind] if exclude is None else exclude
    shape = shape_of(kind, size, variant=variant)
    if isinstance(shape, DiTShape):
        return dit_weight_bytes(shape, dtype=dtype, quantization=scheme, exclude=patterns)
    head = "lm_head" not in patterns
    rest = tuple(p for p in patterns if p != "lm_head")
    return lm_weight_bytes(shape, dtype=dtype, quantization=scheme, quantize_lm_head=head, exclude=rest)


def build(kind: str, size: str, *, dtype: str = "bf16", device: str = "cpu", variant: str = DEFAULT_DIT) -> Any:
    """Component ``kind`` at ``size`` (``real`` LM = the 0.6B; the DiT ``variant``), random weights, in ``dtype``,
    on ``device``."""
    torch.manual_seed(SEED)
    with torch.device(device):
        if kind == "lm":
            return build_lm("0.6B" if size == "real" else size, dtype=dtype)
        if kind == "text_encoder":
            return build_text_encoder(size, dtype=dtype)
        return build_dit(size, variant=variant, dtype=dtype)


def plan_for(kind: str, scheme: str, *, dtype: str = "bf16", exclude: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The plan values that store ``kind`` in ``scheme`` (and nothing else): what ``apply_plan`` is given."""
    values: dict[str, Any] = {f"precision.{kind}": dtype, f"offload.{kind}": "none"}
    if scheme != "none":
        values |= {
            f"quantization.{kind}": SCHEMES[scheme].format,
            f"quantization.scheme.{kind}": scheme,
            "quantization.backend": SCHEMES[scheme].backend,
            f"quantization.exclude.{kind}": list(DEFAULT_EXCLUDE[kind] if exclude is None else exclude),
        }
    return values


def quantize(model: Any, kind: str, scheme: str, *, device: str = "cpu", **plan: Any) -> tuple[Any, float]:
    """``model`` (on the CPU) with ``scheme`` applied through ``apply_plan``, placed on ``device``, and the
    seconds that took."""
    start = time.perf_counter()
    apply_plan(model, kind, plan_for(kind, scheme, **plan), device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return model, time.perf_counter() - start


# --------------------------------------------------------------------------------------------- quality
def fixed_inputs(kind: str, model: Any, *, small: bool = False) -> tuple[Any, ...]:
    """Seeded inputs for one forward of ``kind``: the same every run. ``small``: one item of 16 tokens or frames
    (a real-size forward on a shared CPU; for an LM, close to what decoding does: weights read for few tokens)."""
    generator = torch.Generator().manual_seed(1)
    if kind == "dit":
        batch, frames = (1, 16) if small else (2, 64)
        return (
            torch.randn(batch, frames, 64, generator=generator),
            torch.rand(batch, generator=generator),
            torch.rand(batch, generator=generator),
            torch.randn(batch, 16, model.config.encoder_hidden_size or model.config.hidden_size, generator=generator),
            torch.randn(batch, frames, 128, generator=generator),
        )
    return (torch.randint(0, model.config.vocab_size, (1, 16) if small else (4, 64), generator=generator),)


def forward(kind: str, model: Any, inputs: tuple[Any, ...]) -> torch.Tensor:
    """One forward in the model's dtype; the output (DiT sample, LM logits, encoder states) in float32."""
    first = next(model.parameters())
    cast = tuple((x.to(first.dtype) if x.is_floating_point() else x).to(first.device) for x in inputs)
    with torch.no_grad():
        if kind == "dit":
            output = model(*cast).sample
        elif kind == "lm":
            output = model(*cast).logits
        else:
            output = model(*cast).last_hidden_state
    if output.is_cuda:
        torch.cuda.synchronize()
    return output.float()


def snr_db(output: torch.Tensor, reference: torch.Tensor) -> float:
    """Signal-to-noise ratio of ``output`` against ``reference``, in dB (10·log10 of the power ratio)."""
    noise = (output - reference).double().pow(2).mean()
    return float("inf") if noise == 0 else float(10 * torch.log10(reference.double().pow(2).mean() / noise))


def next_token_agreement(logits: torch.Tensor, reference: torch.Tensor) -> float:
    """Share of positions where the most likely next token is the reference's."""
    return float((logits.argmax(-1) == reference.argmax(-1)).double().mean())


def timed(call: Callable[[], Any], repeats: int = DEFAULT_REPEATS) -> float:
    """The median seconds of ``repeats`` calls, after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    kind: str,
    size: str = "tiny",
    *,
    schemes: tuple[str, ...] = SCHEME_ORDER,
    repeats: int = DEFAULT_REPEATS,
    device: str = "cpu",
    skip: Callable[[str], str | None] = lambda _scheme: None,
) -> list[dict[str, Any]]:
    """One row per scheme of ``kind``: quantize seconds, bytes predicted and held, forward seconds and its
    ratio to bf16's, SNR against bf16 (and the LM's next-token agreement); bf16 first, as the reference row.
    Each scheme is applied to a copy of one CPU build (the pipeline's path: quantize on the CPU, then place
    on ``device``). On a GPU a row also gives the device memory the placed model allocated. A scheme for
    which ``skip`` gives a reason is listed with it and not run."""
    cpu_model = build(kind, size)
    inputs = fixed_inputs(kind, cpu_model, small=size != "tiny" and device == "cpu")
    rows: list[dict[str, Any]] = []
    reference: torch.Tensor | None = None
    base_seconds = 0.0
    for scheme in ("none", *schemes):
        row: dict[str, Any] = {
            "component": kind,
            "size": size,
            "scheme": scheme,
            "backend": SCHEMES[scheme].backend if scheme != "none" else "-",
            "predicted_bytes": predicted_bytes(kind, size, scheme),
        }
        reason = skip(scheme) if scheme != "none" else None
        if reason is not None:
            rows.append(row | {"skipped": reason})
            continue
        allocated = torch.cuda.memory_allocated() if device.startswith("cuda") else 0
        model, seconds = quantize(copy.deepcopy(cpu_model), kind, scheme, device=device)
        output = forward(kind, model, inputs)
        row |= {"quantize_s": seconds, "held_bytes": weight_bytes(model)}
        if device.startswith("cuda"):
            row["device_allocated_bytes"] = torch.cuda.memory_allocated() - allocated
        seconds = timed(functools.partial(forward, kind, model, inputs), repeats)
        if reference is None:
            reference, base_seconds = output, seconds
        row |= {"forward_s": seconds, "forward_ratio": seconds / base_seconds, "snr_db": snr_db(output, reference)}
        if kind == "lm":
            row["next_token_agreement"] = next_token_agreement(output, reference)
        rows.append(row)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


def meta_bytes(
    kind: str,
    size: str,
    scheme: str,
    *,
    dtype: str = "bf16",
    exclude: tuple[str, ...] | None = None,
    variant: str = DEFAULT_DIT,
) -> tuple[int, int]:
    """(predicted, held) bytes of ``kind`` at ``size`` in ``scheme``, built and quantized on the meta device:
    real sizes without their memory."""
    patterns = DEFAULT_EXCLUDE[kind] if exclude is None else exclude
    model = build(kind, size, dtype=dtype, device="meta", variant=variant)
    if scheme != "none":
        # apply_plan's own quantizer; apply_plan itself refuses a model that is not on the CPU
        quantize_component(model, scheme, list(patterns))
    return predicted_bytes(kind, size, scheme, dtype=dtype, exclude=patterns, variant=variant), weight_bytes(model)


__all__ = [
    "DTYPE_BYTES",
    "KINDS",
    "SCHEME_ORDER",
    "build",
    "fixed_inputs",
    "forward",
    "measure",
    "meta_bytes",
    "next_token_agreement",
    "plan_for",
    "predicted_bytes",
    "quantize",
    "shape_of",
    "snr_db",
]
