"""A memory model of the ACE-Step pipeline: predicted peak device memory per phase, from shapes.

Pure Python (no torch): ``acestep-core plan`` runs it on every resolution. Every figure is bytes.
Each component's peak during its phase is its weights plus a *working set* above them; the run's
peak is the largest phase (LM → text encoder → DiT → VAE), counting the weights of components
that stay on the device between phases.

Where the constants come from. Weights are counted from the architectures' shapes (the counts
match ``parameter_count`` of the real-size builds exactly). The working sets follow what the
kernels hold, with a few coefficients fitted to the H100 readings in
``/work/shared/measurements`` and named ``*_FITTED`` below; ``tests/test_optimize_memory.py``
checks every reading within ±10% and prints the table.

- LM (``h100-2026-11-26.json``): KV cache (layers × 2 × KV heads × head_dim × 2 bytes a token, all
  tokens) plus the prefill's activations (≈4.25 intermediate-sized tensors a prompt token) or, with
  quanto weights, the bf16 copy of the weight being multiplied (quanto dequantizes on the fly),
  whichever is larger.
- DiT (``h100-dit-standin-2026-11-26.json``): with efficient attention, the larger of the
  sliding-window mask (T² over latent tokens, batch-independent) and the per-token activations;
  with materialised (math/eager) attention, scores of heads × T² a batch item on top.
- VAE (``h100-vae-2026-11-26.json``): full decode holds ≈5.5 tensors of decoder_channels × samples;
  a tensor over 2³¹ elements costs one extra copy (the 600 s reading); tiled decode holds one tile's
  working set plus the stitched output.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from acestep_core.vocabulary import (
    CODES_PER_SECOND,
    CUDA_CONTEXT_BYTES,
    GIB,
    LATENT_RATE_HZ,
    MIB,
    PHASES,
    SAFETY_MARGIN_BYTES,
    VAE_HOP,
    VAE_TILE_FRAMES,
    VAE_TILE_OVERLAP,
)

KIB = 1024

DTYPE_BYTES: Mapping[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4}
QUANTIZED_BYTES_PER_WEIGHT: Mapping[str, float] = {"int8": 1.0, "fp8": 1.0, "int4": 0.5 + 4 / 128}
"""Bytes a quantized weight takes in optimum-quanto: int4 packs two weights a byte, with a bf16 scale
and shift per group of 128."""

FRAGMENTATION_FRACTION = 0.10
"""Allocator slack: the measured peak reservation exceeds the peak allocation by up to 19% on the
H100 readings (int8, batch 8); a tenth of the usable memory is kept free for it."""

DEFAULT_PROMPT_TOKENS = 1024
"""Caption, lyrics and instructions the LM reads before it writes (lyrics dominate)."""
DEFAULT_COT_TOKENS = 256
"""The chain-of-thought metadata the LM writes before the audio codes."""

LM_PREFILL_TENSORS_FITTED = 4.25
"""Intermediate-sized (MLP) tensors alive per prompt token during prefill: 4.31 / 4.37 / 4.08 on the
0.6B / 1.7B / 4B readings once weights and KV cache are taken away."""
DIT_FIXED_BYTES_FITTED = 45 * 10**6
"""cuBLAS workspace, timestep and condition projections: the 60 s reading less its per-token part."""
DIT_MASK_BYTES_PER_T2_FITTED = 15.86
"""Bytes per (latent token)² of the materialised sliding-window mask (600 s, batch 1 and 2)."""
DIT_MASK_PHASE_BYTES_PER_TOKEN_FITTED = 6 * KIB
"""Per batch item and token, alive while the mask is (the batch 1 → 2 step at 600 s)."""
DIT_BYTES_PER_TOKEN_FITTED = 52.7 * KIB
"""Per batch item and token at the activation peak (600 s, batch 4 and 8)."""
DIT_MATH_SCORE_BYTES_FITTED = 8.9
"""Bytes per head and (latent token)² with materialised attention (bf16 scores, fp32 softmax; 240 s and 600 s)."""
VAE_FIXED_BYTES_FITTED = 167_865_418
"""Full-decode intercept of the 30-240 s readings (convolution workspaces)."""
VAE_TENSORS_FITTED = 5.512
"""decoder_channels × samples tensors alive at the full-decode peak (slope of the 30-240 s readings)."""
INT32_INDEX_LIMIT = 2**31
TEXT_ENCODER_WORK_BYTES = 64 * MIB
"""The caption (≤256 tokens) through the encoder: small beside its weights; not measured."""


# --------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class LMShape:
    """A Qwen3 causal LM (or, with ``lm_head=False``, the Qwen3Model text encoder)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int = 151936
    tied_embeddings: bool = True
    lm_head: bool = True

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def layer_linear_params(self) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attention + 3 * self.hidden * self.intermediate

    @property
    def linear_params(self) -> int:
        """Parameters of the decoder layers' Linear modules (what quanto quantizes besides lm_head)."""
        return self.layers * self.layer_linear_params

    @property
    def norm_params(self) -> int:
        return self.layers * (2 * self.hidden + 2 * self.head_dim) + self.hidden

    @property
    def head_params(self) -> int:
        """lm_head parameters not shared with the embedding."""
        return 0 if not self.lm_head or self.tied_embeddings else self.embedding_params

    @property
    def params(self) -> int:
        return self.embedding_params + self.linear_params + self.norm_params + self.head_params

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache a token costs at 2 bytes a value (the cache stays in the compute dtype)."""
        return self.layers * 2 * self.kv_heads * self.head_dim


LM_SHAPES: Mapping[str, LMShape] = {
    "0.6B": LMShape(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072),
    "1.7B": LMShape(hidden=2048, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=6144),
    "4B": LMShape(hidden=2560, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=9728),
}
"""ACE-Step 1.5's 5Hz LM sizes (``acestep_core/models/configs/lm.json``)."""

TEXT_ENCODER_SHAPE = LMShape(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072, vocab=151669, lm_head=False)
"""Qwen3-Embedding-0.6B."""


@dataclass(frozen=True)
class DiTShape:
    """ACE-Step 1.5's DiT: the decoder's shape drives activations; ``params`` counts the whole model."""

    params: int = 2_350_000_000
    """4.7 GB in bf16 (upstream figure; the measured decoder stand-in alone is 1.51 B)."""
    linear_fraction: float = 0.98
    """Share of parameters in Linear layers (quantizable): int8 gives ≈2.4 GB, upstream's figure."""
    layers: int = 24
    heads: int = 16
    patch: int = 2

    def tokens(self, duration_s: float) -> int:
        return math.ceil(duration_s * LATENT_RATE_HZ / self.patch)


DIT_SHAPE = DiTShape()


@dataclass(frozen=True)
class VAEShape:
    params: int = 168_695_426
    decoder_channels: int = 128
    audio_channels: int = 2
    hop: int = VAE_HOP


VAE_SHAPE = VAEShape()


# --------------------------------------------------------------------------------------------- estimates
@dataclass(frozen=True)
class ComponentEstimate:
    """One component in its own phase: weights on the device and the working set above them."""

    component: str
    weights_bytes: int
    work_bytes: int
    detail: str

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.work_bytes


def weight_bytes(params: int, quantizable_params: int, dtype: str, quantization: str) -> int:
    """Bytes of ``params`` weights of which ``quantizable_params`` are quantized to ``quantization``."""
    full = DTYPE_BYTES[dtype]
    if quantization == "none":
        return params * full
    return round(quantizable_params * QUANTIZED_BYTES_PER_WEIGHT[quantization] + (params - quantizable_params) * full)


def lm_weight_bytes(shape: LMShape, *, dtype: str = "bf16", quantization: str = "none", quantize_lm_head: bool = False) -> int:
    """Weights of an LM. quanto leaves the embedding in ``dtype``; quantizing a tied lm_head gives it
    its own quantized copy (the tie is broken), so it *adds* vocab × hidden quantized bytes."""
    full = DTYPE_BYTES[dtype]
    if quantization == "none":
        return shape.params * full
    per_weight = QUANTIZED_BYTES_PER_WEIGHT[quantization]
    head = shape.embedding_params if shape.lm_head and quantize_lm_head else 0
    unquantized = shape.embedding_params + shape.norm_params + (shape.head_params if not quantize_lm_head else 0)
    return round((shape.linear_params + head) * per_weight + unquantized * full)


def lm_estimate(
    shape: LMShape,
    *,
    batch: int,
    prompt_tokens: int,
    generated_tokens: int,
    dtype: str = "bf16",
    quantization: str = "none",
    quantize_lm_head: bool = False,
    name: str = "lm",
) -> ComponentEstimate:
    """The LM while it reads ``prompt_tokens`` and writes ``generated_tokens``, ``batch`` sequences."""
    act = DTYPE_BYTES[dtype]
    weights = lm_weight_bytes(shape, dtype=dtype, quantization=quantization, quantize_lm_head=quantize_lm_head)
    kv = batch * (prompt_tokens + generated_tokens) * shape.kv_bytes_per_token * act
    prefill = round(batch * prompt_tokens * LM_PREFILL_TENSORS_FITTED * shape.intermediate * act)
    dequantized = 0
    if quantization != "none":
        largest = shape.embedding_params if quantize_lm_head else shape.hidden * shape.intermediate
        dequantized = largest * act
    logits = batch * shape.vocab * 4 if shape.lm_head else 0
    work = kv + max(prefill, dequantized) + logits
    detail = f"KV cache {_gib(kv)} for {batch}×{prompt_tokens + generated_tokens} tokens + {'prefill' if prefill >= dequantized else 'dequantized weight'} {_gib(max(prefill, dequantized))}"
    return ComponentEstimate(name, weights, work, detail)


def dit_activation_bytes(duration_s: float, batch: int, *, attention: str = "sdpa", dtype: str = "bf16", shape: DiTShape = DIT_SHAPE) -> int:
    """Peak activations of one DiT forward over ``duration_s`` seconds, ``batch`` items."""
    tokens = shape.tokens(duration_s)
    scale = DTYPE_BYTES[dtype] / 2
    mask_phase = DIT_MASK_BYTES_PER_T2_FITTED * tokens**2 + DIT_MASK_PHASE_BYTES_PER_TOKEN_FITTED * batch * tokens
    activations = DIT_BYTES_PER_TOKEN_FITTED * batch * tokens
    work = DIT_FIXED_BYTES_FITTED + max(mask_phase, activations)
    if attention == "eager":
        work += DIT_MATH_SCORE_BYTES_FITTED * batch * shape.heads * tokens**2
    return round(work * scale)


def dit_estimate(duration_s: float, batch: int, *, dtype: str = "bf16", quantization: str = "none", attention: str = "sdpa", shape: DiTShape = DIT_SHAPE) -> ComponentEstimate:
    weights = weight_bytes(shape.params, round(shape.params * shape.linear_fraction), dtype, quantization)
    work = dit_activation_bytes(duration_s, batch, attention=attention, dtype=dtype, shape=shape)
    return ComponentEstimate("dit", weights, work, f"activations {_gib(work)} for batch {batch} × {shape.tokens(duration_s)} tokens ({attention})")


def vae_decode_bytes(frames: int, *, dtype: str = "bf16", shape: VAEShape = VAE_SHAPE) -> int:
    """Working set of one ``decode`` call over ``frames`` latent frames (one batch item)."""
    per_tensor = shape.decoder_channels * frames * shape.hop * DTYPE_BYTES[dtype]
    work = VAE_FIXED_BYTES_FITTED + VAE_TENSORS_FITTED * per_tensor
    if shape.decoder_channels * frames * shape.hop >= INT32_INDEX_LIMIT:
        work += per_tensor
    return round(work)


def vae_estimate(duration_s: float, *, dtype: str = "bf16", quantization: str = "none", tiled: bool = False, tile_frames: int = VAE_TILE_FRAMES, tile_overlap: int = VAE_TILE_OVERLAP, shape: VAEShape = VAE_SHAPE) -> ComponentEstimate:
    """The VAE decoding one clip (the pipeline decodes a batch one item at a time)."""
    frames = math.ceil(duration_s * LATENT_RATE_HZ)
    weights = weight_bytes(shape.params, 0, dtype, "none") if quantization == "none" else weight_bytes(shape.params, shape.params, dtype, quantization)
    if not tiled or tile_frames >= frames:
        work = vae_decode_bytes(frames, dtype=dtype, shape=shape)
        return ComponentEstimate("vae", weights, work, f"full decode of {frames} frames {_gib(work)}")
    window = min(frames, tile_frames + 2 * tile_overlap)
    output = shape.audio_channels * frames * shape.hop * DTYPE_BYTES[dtype]
    work = vae_decode_bytes(window, dtype=dtype, shape=shape) + output
    return ComponentEstimate("vae", weights, work, f"tiled decode ({tile_frames}+2×{tile_overlap} frames) {_gib(work)}")


def text_encoder_estimate(*, dtype: str = "bf16", quantization: str = "none", shape: LMShape = TEXT_ENCODER_SHAPE) -> ComponentEstimate:
    weights = lm_weight_bytes(shape, dtype=dtype, quantization=quantization)
    return ComponentEstimate("text_encoder", weights, TEXT_ENCODER_WORK_BYTES, f"caption encoding {_gib(TEXT_ENCODER_WORK_BYTES)}")


# --------------------------------------------------------------------------------------------- a run
@dataclass(frozen=True)
class RunShape:
    """What a run asks of the device: ``duration_s`` of audio, ``batch`` clips, the LM size or None."""

    duration_s: float
    batch: int
    lm_model: str | None
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    cot_tokens: int = DEFAULT_COT_TOKENS


@dataclass(frozen=True)
class Choices:
    """The memory-relevant part of an optimization plan."""

    precision: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PHASES, "bf16"))
    quantization: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PHASES, "none"))
    offload: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PHASES, "none"))
    attention: str = "sdpa"
    """The DiT's attention: ``sdpa`` / ``flash_attention_2`` (memory-efficient) or ``eager`` (materialised)."""
    vae_decode: str = "full"
    tile_frames: int = VAE_TILE_FRAMES
    tile_overlap: int = VAE_TILE_OVERLAP
    quantize_lm_head: bool = False


@dataclass(frozen=True)
class PhasePeak:
    phase: str
    resident: Mapping[str, int]
    """Component → bytes of its weights on the device during this phase."""
    work_bytes: int
    detail: str

    @property
    def peak_bytes(self) -> int:
        return sum(self.resident.values()) + self.work_bytes


@dataclass(frozen=True)
class Prediction:
    phases: tuple[PhasePeak, ...]
    estimates: Mapping[str, ComponentEstimate]

    @property
    def worst(self) -> PhasePeak:
        return max(self.phases, key=lambda p: p.peak_bytes)

    @property
    def peak_bytes(self) -> int:
        return self.worst.peak_bytes


STREAMED_FRACTION = {"group": 2 / 24, "sequential": 1 / 24}
"""Share of a component's weights on the device while it runs under group offload (one block of ~24
plus the one prefetched) or sequential offload (one block)."""


def component_estimates(run: RunShape, choices: Choices) -> dict[str, ComponentEstimate]:
    estimates: dict[str, ComponentEstimate] = {}
    if run.lm_model is not None:
        estimates["lm"] = lm_estimate(
            LM_SHAPES[run.lm_model],
            batch=run.batch,
            prompt_tokens=run.prompt_tokens,
            generated_tokens=run.cot_tokens + math.ceil(run.duration_s * CODES_PER_SECOND),
            dtype=choices.precision["lm"],
            quantization=choices.quantization["lm"],
            quantize_lm_head=choices.quantize_lm_head,
        )
    estimates["text_encoder"] = text_encoder_estimate(dtype=choices.precision["text_encoder"], quantization=choices.quantization["text_encoder"])
    dit_attention = "eager" if choices.attention == "eager" else "sdpa"
    estimates["dit"] = dit_estimate(run.duration_s, run.batch, dtype=choices.precision["dit"], quantization=choices.quantization["dit"], attention=dit_attention)
    estimates["vae"] = vae_estimate(
        run.duration_s,
        dtype=choices.precision["vae"],
        quantization=choices.quantization["vae"],
        tiled=choices.vae_decode == "tiled",
        tile_frames=choices.tile_frames,
        tile_overlap=choices.tile_overlap,
    )
    return estimates


def predict(run: RunShape, choices: Choices) -> Prediction:
    """Peak device memory of each phase of ``run`` under ``choices``."""
    estimates = component_estimates(run, choices)
    phases = []
    for phase in PHASES:
        if phase not in estimates:
            continue
        resident = {}
        for component, estimate in estimates.items():
            offload = choices.offload.get(component, "none")
            if component == phase:
                resident[component] = round(estimate.weights_bytes * STREAMED_FRACTION.get(offload, 1.0))
            elif offload == "none":
                resident[component] = estimate.weights_bytes
        phases.append(PhasePeak(phase, resident, estimates[phase].work_bytes, estimates[phase].detail))
    return Prediction(tuple(phases), estimates)


# --------------------------------------------------------------------------------------------- budget
@dataclass(frozen=True)
class Budget:
    total_bytes: int
    context_bytes: int
    margin_bytes: int
    context_label: str = "CUDA context"
    """What ``context_bytes`` pays for: the CUDA context, or a unified-memory device's host reserve."""
    total_label: str = ""
    """What ``total_bytes`` is, where it is not the device's total (``working set``)."""

    @property
    def usable_bytes(self) -> int:
        return self.total_bytes - self.context_bytes - self.margin_bytes

    def describe(self) -> str:
        total = f"{self.total_label} {_gib(self.total_bytes)}" if self.total_label else _gib(self.total_bytes)
        if not self.context_bytes and not self.margin_bytes:
            return f"{total}"
        context = f"{self.context_label} {_gib(self.context_bytes)}"
        return f"{total} − {context} − margin {_gib(self.margin_bytes)} = {_gib(self.usable_bytes)}"


def device_budget(
    total_bytes: int, *, context_bytes: int = CUDA_CONTEXT_BYTES, context_label: str = "CUDA context"
) -> Budget:
    """What a run may allocate on a device of ``total_bytes``: total − context − margin, the margin
    being the larger of upstream's 0.5 GiB and a tenth of what is left for allocator slack."""
    margin = max(SAFETY_MARGIN_BYTES, round(FRAGMENTATION_FRACTION * max(0, total_bytes - context_bytes)))
    return Budget(total_bytes, context_bytes, margin, context_label)


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


gib = _gib
