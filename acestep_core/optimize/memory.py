"""A memory model of the ACE-Step pipeline: predicted peak device memory per phase, from shapes.

Pure Python (no torch): ``acestep-core plan`` runs it on every resolution. Every figure is bytes.
Each component's peak during its phase is its weights plus a *working set* above them; the run's
peak is the largest phase (LM → text encoder → DiT → VAE), counting the weights of components
that stay on the device between phases.

The model predicts **allocated** peaks (``max_memory_allocated``: weights + working set). What is compared
with the budget is the allocator's **reserved** peak, what an out-of-memory error is about: the allocated
peak plus the caching allocator's gap, its own term (:func:`reserved_bytes`: ``RESERVED_GAP_FITTED`` for
plain weights, ``RESERVED_GAP_QUANTIZED_FITTED`` while a quanto-quantized component runs), fitted on reserved
readings and judged on reserved readings only (``expandable_segments`` is not assumed). A device's own
runs correct both terms (:mod:`acestep_core.optimize.corrections`): each phase's prediction may carry a
:class:`PhaseCorrection`.

Where the constants come from. Weights are counted from the architectures' shapes (the counts
match the real-size builds exactly: ``tests/test_optimize_memory.py`` builds them on the meta device);
quantized weights layer by layer from how each scheme stores a Linear (:mod:`acestep_core.optimize.quantization`:
data, scales, zero points; exact against the quantized builds, ``tests/test_quantization.py``).
The working sets follow what the kernels hold, with a few coefficients fitted to the H100 readings
labelled ``fit`` in ``acestep_core/optimize/measurements/`` and named ``*_FITTED`` below. Readings
labelled ``held-out`` were not used for any constant: :mod:`acestep_core.optimize.readings` compares the
model with both (``python benchmarks/memory_heldout.py``).

- LM (``h100-2026-11-26.json``): KV cache (layers × 2 × KV heads × head_dim × 2 bytes a token, all
  tokens) plus the prefill's activations (≈4.25 intermediate-sized tensors a prompt token) or, with
  quanto weights, the bf16 copy of the weight being multiplied (quanto dequantizes on the fly),
  whichever is larger.
- DiT (``h100-dit-standin-2026-11-26.json``): with efficient attention, the larger of the
  sliding-window mask while it is built (T² over latent tokens, batch-independent; diffusers builds it
  from int64 index differences: 18 bytes a T² entry, read from its code) and the per-token activations
  beside the kept additive mask; with materialised (math/eager) attention, scores of heads × T² a batch
  item on top. With the flash backend no mask is built.
- VAE (``h100-vae-2026-11-26.json``): full decode holds ≈5.5 tensors of decoder_channels × samples
  plus a fixed part, which is the decoder's weight-norm weights computed at the first forward (the
  readings' baseline was taken before it; counted here once, in the working set, never again beside the
  weights); a tensor over 2³¹ elements costs one extra copy (the 600 s reading); tiled decode holds one
  tile's working set plus the stitched output. A batch is decoded one item at a time and each decoded item
  moves to the CPU (:func:`acestep_core.runtime.vae_decode.decode`): the batch term is the latents.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import field, replace
from typing import Protocol

from acestep_core.optimize.quantization import DEFAULT_EXCLUDE, dit_bytes_change, lm_bytes_change, scheme_of
from acestep_core.record import Record
from acestep_core.vocabulary import (
    CFG_DITS,
    CODES_PER_SECOND,
    CUDA_CONTEXT_BYTES,
    DIT_MODELS,
    GIB,
    LATENT_RATE_HZ,
    LM_VOCAB,
    MIB,
    PHASES,
    QUANT_SCHEME_FORMATS,
    QWEN3_TOKENS,
    QWEN3_VOCAB,
    SAFETY_MARGIN_BYTES,
    VAE_HOP,
    VAE_TILE_FRAMES,
    VAE_TILE_OVERLAP,
)

KIB = 1024

DTYPE_BYTES: Mapping[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4}

RESERVED_GAP_FITTED = 0.10
"""Reserved peak ÷ allocated peak − 1 of the caching allocator with plain (bf16) weights: 3.8 … 15.5 % on
the twelve bf16 LM readings of ``h100-2026-11-26.json`` (the only reserved readings taken the pipeline's
way); 0.10 keeps each of their reserved rows within ±6 %."""
RESERVED_GAP_QUANTIZED_FITTED = 0.20
"""The same gap while a quanto-quantized component runs (quanto dequantizes each weight as it multiplies:
many short-lived weight-sized blocks): 11.6 … 28.3 % on the twelve int8 LM readings of
``h100-2026-11-26.json``; 0.20 keeps each of their reserved rows within ±7 %."""
ALLOCATOR = (
    "default caching allocator (expandable_segments not assumed): reserved = allocated × 1.10 "
    "(× 1.20 while a quantized component runs)"
)
"""What the plan assumes about the allocator, stated in every plan."""

DEFAULT_PROMPT_TOKENS = 1024
"""Caption, lyrics and instructions the LM reads before it writes (lyrics dominate)."""
DEFAULT_COT_TOKENS = 256
"""The chain-of-thought metadata the LM writes before the audio codes."""

LM_PREFILL_TENSORS_FITTED = 4.25
"""Intermediate-sized (MLP) tensors alive per prompt token during prefill: 4.31 / 4.37 / 4.08 on the
0.6B / 1.7B / 4B readings once weights and KV cache are taken away."""
DIT_FIXED_BYTES_FITTED = 45 * 10**6
"""cuBLAS workspace, timestep and condition projections: the 60 s reading less its per-token part."""
DIT_MASK_PHASE_BYTES_PER_TOKEN_FITTED = 6 * KIB
"""Per batch item and token, alive while the mask is (the batch 1 → 2 step at 600 s)."""
DIT_BYTES_PER_TOKEN_FITTED = 52.7 * KIB
"""Per batch item and token at the activation peak (600 s, batch 4 and 8)."""
DIT_MATH_SCORE_BYTES_FITTED = 8.9
"""Bytes per head and (latent token)² with materialised attention (bf16 scores, fp32 softmax; 240 s and 600 s)."""
VAE_FIXED_BYTES_FITTED = 167_865_418
"""Full-decode intercept of the 30-240 s readings: the decoder's weight-norm weights computed at the first
forward (``VAEShape.decoder_conv_weights`` × 2 bytes = 168,693,248 in bf16; within 0.5 %), which the
readings' baseline did not hold. Counted here, so not again beside the weights."""
VAE_TENSORS_FITTED = 5.512
"""decoder_channels × samples tensors alive at the full-decode peak (slope of the 30-240 s readings)."""
INT32_INDEX_LIMIT = 2**31
QUANTO_ON_DEVICE_LEFTOVER_FITTED: Mapping[tuple[int, int, int], int] = {
    (1024, 28, 3072): 82_005_228,
    (2048, 28, 6144): 216_300,
    (2560, 36, 9728): 19_151_884,
}
"""Bytes optimum-quanto's int8 pass leaves allocated beyond the quantized tensors when it quantizes an LM
already on the device, per LM shape (hidden, layers, intermediate): the ``int8_weights_bytes`` readings of
``h100-2026-11-26.json`` less the exact count of :mod:`acestep_core.optimize.quantization` (78.2 / 0.2 /
18.3 MiB for 0.6B / 1.7B / 4B). Measured, not explained. The pipeline quantizes on the CPU and never holds
it: only a prediction of such a reading (``quantized_on_device=True``) adds it; 0 for a shape not measured."""
TEXT_ENCODER_WORK_BYTES = 64 * MIB
"""The caption (≤256 tokens) through the encoder: small beside its weights; not measured."""


# --------------------------------------------------------------------------------------------- shapes
class LMShape(Record):
    """A Qwen3 causal LM (or, with ``lm_head=False``, the Qwen3Model text encoder)."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int = LM_VOCAB
    """Embedding (and, tied, logits) rows: the 5Hz LM's 217,204 (:data:`acestep_core.vocabulary.LM_VOCAB_SOURCE`)
    unless a checkpoint's config says otherwise."""
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
    def buffer_values(self) -> int:
        """transformers' rotary ``inv_freq`` and ``original_inv_freq`` buffers (head_dim / 2 values each),
        converted with the weights by ``.to(dtype)``: the loader leaves them float32, ``apply_plan``'s precision
        step converts them (``tests/test_quantization.py`` measures both paths)."""
        return self.head_dim

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache a token costs at 2 bytes a value (the cache stays in the compute dtype)."""
        return self.layers * 2 * self.kv_heads * self.head_dim


LM_SHAPES: Mapping[str, LMShape] = {
    "0.6B": LMShape(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072),
    "1.7B": LMShape(hidden=2048, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=6144),
    "4B": LMShape(hidden=2560, layers=36, heads=32, kv_heads=8, head_dim=128, intermediate=9728),
}
"""ACE-Step 1.5's 5Hz LM sizes (Qwen3 shapes, ``acestep_core/runtime/models/configs/lm.json``) with the
audio-code vocabulary of 217,204 rows."""
QWEN3_LM_SHAPES: Mapping[str, LMShape] = {size: replace(shape, vocab=QWEN3_VOCAB) for size, shape in LM_SHAPES.items()}
"""The same with Qwen3's own 151,936 rows: the builds the H100 readings measured (like with like)."""

TEXT_ENCODER_SHAPE = LMShape(
    hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, intermediate=3072, vocab=QWEN3_TOKENS, lm_head=False
)
"""Qwen3-Embedding-0.6B."""


class DiTShape(Record):
    """ACE-Step 1.5's DiT as its checkpoint holds it, counted from its shape: diffusers'
    ``AceStepTransformer1DModel`` (the decoder, whose shape drives activations), its
    ``AceStepConditionEncoder`` (text projector, lyric and timbre encoders, ``null_condition_emb``, the
    ``silence_latent`` buffer), and the audio tokenizer and detokenizer that carry the LM's codes to the DiT.
    The defaults are the 2B; :data:`DIT_SHAPES` has every variant (``tests/test_checkpoints_counts.py``
    builds each on the meta device and compares, to the byte)."""

    name: str = "turbo"
    hidden: int = 2048
    intermediate: int = 6144
    layers: int = 24
    heads: int = 16
    kv_heads: int = 8
    head_dim: int = 128
    in_channels: int = 192
    acoustic_channels: int = 64
    patch: int = 2
    time_freq: int = 256
    encoder_hidden: int | None = None
    """Width of the condition encoder, tokenizer and detokenizer (XL: 2048 under a 2560-wide DiT); None: ``hidden``."""
    encoder_intermediate: int | None = None
    encoder_heads: int | None = None
    encoder_kv_heads: int | None = None
    text_hidden: int = 1024
    lyric_layers: int = 8
    timbre_layers: int = 4
    timbre_channels: int = 64
    silence_frames: int = 15000
    pooler_layers: int = 2
    pool_window: int = 5
    fsq_levels: int = 6
    fsq_quantizers: int = 1
    condition_encoder: bool = True
    """False: the decoder alone (what calibrate's ``dit`` trials of 2026-11-27 built)."""
    audio_codec: bool = True
    """The audio tokenizer and detokenizer (the checkpoint's ``tokenizer.`` / ``detokenizer.`` parts)."""
    cfg: bool = False
    """Classifier-free guidance (base, sft): the conditional and unconditional passes run as one forward of
    twice the batch each step, as upstream and diffusers batch them."""
    mask_build_bytes_per_t2: float = 18.0
    """diffusers' ``_create_4d_mask``: int64 index differences, their int64 ``abs`` and two bool masks."""
    mask_kept: bool = True
    """The additive dtype mask stays alive through the layers (diffusers); the stand-in kept none."""

    def tokens(self, duration_s: float) -> int:
        return math.ceil(duration_s * LATENT_RATE_HZ / self.patch)

    @property
    def forwards_per_step(self) -> int:
        return 2 if self.cfg else 1

    @property
    def activation_scale(self) -> float:
        """Per-token activations relative to the fitted 2B: the MLP's width (XL 9728 / 6144 = 1.58; upstream's
        batch guard allows ×1.7 for XL). Not measured on an XL."""
        return self.intermediate / DIT_FITTED_INTERMEDIATE

    # the condition encoder, tokenizer and detokenizer: encoder widths
    @property
    def encoder_width(self) -> int:
        """Hidden size of the condition encoder, tokenizer and detokenizer (XL: 2048 under its 2560 DiT)."""
        return self.encoder_hidden or self.hidden

    @property
    def encoder_mlp(self) -> int:
        return self.encoder_intermediate or self.intermediate

    @property
    def encoder_attention_heads(self) -> tuple[int, int]:
        """(query heads, KV heads) of an encoder layer's attention."""
        return self.encoder_heads or self.heads, self.encoder_kv_heads or self.kv_heads

    def _attention_params(self, width: int, heads: int, kv_heads: int) -> int:
        return width * self.head_dim * (2 * heads + 2 * kv_heads) + 2 * self.head_dim

    def _encoder_layer(self) -> int:
        """Parameters of one ``AceStepEncoderLayer`` at the encoder widths."""
        e, inter = self.encoder_width, self.encoder_mlp
        return self._attention_params(e, *self.encoder_attention_heads) + 2 * e + 3 * e * inter

    @property
    def decoder_params(self) -> int:
        h = self.hidden
        attention = self._attention_params(h, self.heads, self.kv_heads)
        layer = 9 * h + 2 * attention + 3 * h * self.intermediate
        time_embed = 2 * (h * self.time_freq + h + h * h + h + 6 * h * h + 6 * h)
        proj = h * self.in_channels * self.patch + h + h * self.acoustic_channels * self.patch + self.acoustic_channels
        condition_embedder = self.encoder_width * h + h
        return self.layers * layer + 2 * h + proj + time_embed + condition_embedder + h

    @property
    def condition_encoder_params(self) -> int:
        if not self.condition_encoder:
            return 0
        e, layer = self.encoder_width, self._encoder_layer()
        lyric = self.text_hidden * e + e + e + self.lyric_layers * layer
        timbre = e + self.timbre_channels * e + e + e + self.timbre_layers * layer
        return e + self.text_hidden * e + lyric + timbre

    @property
    def codec_params(self) -> int:
        """The audio tokenizer (projection, attention pooler, FSQ projections) and detokenizer."""
        if not self.audio_codec:
            return 0
        e, a, levels = self.encoder_width, self.acoustic_channels, self.fsq_levels
        layer = self._encoder_layer()
        pooler = e * e + e + e + e + self.pooler_layers * layer
        fsq = e * levels + levels + levels * e + e
        tokenizer = a * e + e + pooler + fsq
        detokenizer = e * e + e + e + self.pool_window * e + e * a + a + self.pooler_layers * layer
        return tokenizer + detokenizer

    @property
    def buffer_values(self) -> int:
        """Floating-point buffers (converted to the compute dtype): the condition encoder's ``silence_latent``
        and the FSQ's ``scales``."""
        silence = self.silence_frames * self.timbre_channels if self.condition_encoder else 0
        return silence + (self.fsq_quantizers * self.fsq_levels if self.audio_codec else 0)

    @property
    def int_buffer_bytes(self) -> int:
        """The FSQ's int64 ``_levels`` and ``_basis`` (never converted)."""
        return 2 * 8 * self.fsq_levels if self.audio_codec else 0

    @property
    def params(self) -> int:
        return self.decoder_params + self.condition_encoder_params + self.codec_params


DIT_FITTED_INTERMEDIATE = 6144
"""The MLP width of the DiT whose activations were fitted (the 2B stand-in of ``h100-dit-standin``)."""
XL_SHAPE = DiTShape(
    name="xl-turbo",
    hidden=2560,
    intermediate=9728,
    layers=32,
    heads=32,
    kv_heads=8,
    encoder_hidden=2048,
    encoder_intermediate=6144,
    encoder_heads=16,
)
"""XL's shape (upstream's ``acestep-v15-xl-*`` config; acestep.cpp docs/ARCHITECTURE.md "32L, H=2560"):
its condition encoder, tokenizer and detokenizer keep the 2B's 2048 width, 6144 MLP and 16 heads
(``encoder_*`` keys; the KV heads, 8, are the DiT's)."""
DIT_SHAPES: Mapping[str, DiTShape] = {
    name: replace(XL_SHAPE if name.startswith("xl-") else DiTShape(), name=name, cfg=name in CFG_DITS)
    for name in DIT_MODELS
}
"""Every DiT ACE-Step 1.5 ships, at its real size."""
DIT_SHAPE = DIT_SHAPES["turbo"]
DIT_DECODER_SHAPE = DiTShape(condition_encoder=False, audio_codec=False)
DIT_STANDIN_SHAPE = DiTShape(condition_encoder=False, audio_codec=False, mask_build_bytes_per_t2=15.86, mask_kept=False)
"""The hand-built decoder stand-in of ``h100-dit-standin-2026-11-26.json`` (its own mask: 15.86 bytes a
T² entry, fitted on its 600 s batch 1 and 2 readings)."""


class VAEShape(Record):
    params: int = 168_695_426
    decoder_channels: int = 128
    latent_channels: int = 64
    decoder_conv_weights: int = 84_346_624
    encoder_conv_weights: int = 84_215_552
    """Weights of the weight-normed convolutions (diffusers' Oobleck uses ``torch.nn.utils.weight_norm``:
    each keeps its computed weight as a plain attribute beside ``weight_g`` / ``weight_v``, recomputed on
    the device at every forward and never converted by ``.to(dtype)``). Counted on the real build."""
    audio_channels: int = 2
    hop: int = VAE_HOP


VAE_SHAPE = VAEShape()


# --------------------------------------------------------------------------------------------- estimates
class ComponentEstimate(Record):
    """One component in its own phase: weights on the device and the working set above them."""

    component: str
    weights_bytes: int
    work_bytes: int
    detail: str

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + self.work_bytes


def lm_weight_bytes(
    shape: LMShape,
    *,
    dtype: str = "bf16",
    quantization: str = "none",
    quantize_lm_head: bool = False,
    exclude: tuple[str, ...] = (),
    quantized_on_device: bool = False,
) -> int:
    """Weights of an LM (or the text encoder), exactly: every parameter in ``dtype`` and the rotary buffer, then
    the Linear layers
    ``quantization`` (a scheme, or a format meaning quanto's scheme) stores, less those ``exclude`` matches.
    The embedding stays in ``dtype``; quantizing a tied lm_head gives it its own quantized copy (the tie is
    broken), so it *adds* vocab × hidden quantized bytes."""
    full = DTYPE_BYTES[dtype]
    patterns = exclude + (() if quantize_lm_head else ("lm_head",))
    quantized = lm_bytes_change(shape, quantization, full, patterns)
    leftover = 0
    if quantized_on_device and quantization != "none":
        leftover = QUANTO_ON_DEVICE_LEFTOVER_FITTED.get((shape.hidden, shape.layers, shape.intermediate), 0)
    return (shape.params + shape.buffer_values) * full + quantized + leftover


def lm_estimate(
    shape: LMShape,
    *,
    batch: int,
    prompt_tokens: int,
    generated_tokens: int,
    dtype: str = "bf16",
    quantization: str = "none",
    quantize_lm_head: bool = False,
    exclude: tuple[str, ...] = (),
    name: str = "lm",
    quantized_on_device: bool = False,
) -> ComponentEstimate:
    """The LM while it reads ``prompt_tokens`` and writes ``generated_tokens``, ``batch`` sequences
    (``quantized_on_device``: as :func:`lm_weight_bytes`, for readings that quantized on the device)."""
    act = DTYPE_BYTES[dtype]
    weights = lm_weight_bytes(
        shape,
        dtype=dtype,
        quantization=quantization,
        quantize_lm_head=quantize_lm_head,
        exclude=exclude,
        quantized_on_device=quantized_on_device,
    )
    kv = batch * (prompt_tokens + generated_tokens) * shape.kv_bytes_per_token * act
    prefill = round(batch * prompt_tokens * LM_PREFILL_TENSORS_FITTED * shape.intermediate * act)
    dequantized = 0
    if quantization != "none":
        largest = shape.embedding_params if quantize_lm_head else shape.hidden * shape.intermediate
        dequantized = largest * act
    logits = batch * shape.vocab * 4 if shape.lm_head else 0
    work = kv + max(prefill, dequantized) + logits
    detail = (
        f"KV cache {_gib(kv)} for {batch}×{prompt_tokens + generated_tokens} tokens + "
        f"{'prefill' if prefill >= dequantized else 'dequantized weight'} {_gib(max(prefill, dequantized))}"
    )
    return ComponentEstimate(name, weights, work, detail)


def dit_activation_bytes(
    duration_s: float, batch: int, *, attention: str = "sdpa", dtype: str = "bf16", shape: DiTShape = DIT_SHAPE
) -> int:
    """Peak activations of one DiT forward over ``duration_s`` seconds, ``batch`` items (twice as many rows
    under CFG: base and sft run the conditional and unconditional passes as one batch).

    ``attention``: ``sdpa`` (efficient kernels, a dense banded mask), ``flash`` (no mask) or ``eager``
    (materialised scores). A wider DiT (XL) scales the per-token terms by :attr:`DiTShape.activation_scale`."""
    tokens = shape.tokens(duration_s)
    scale = DTYPE_BYTES[dtype] / 2
    rows = batch * shape.forwards_per_step
    width = shape.activation_scale
    masked = attention != "flash"
    build = shape.mask_build_bytes_per_t2 * tokens**2 / scale if masked else 0.0
    kept = 2 * tokens**2 if masked and shape.mask_kept else 0.0
    mask_phase = build + DIT_MASK_PHASE_BYTES_PER_TOKEN_FITTED * width * rows * tokens
    activations = kept + DIT_BYTES_PER_TOKEN_FITTED * width * rows * tokens
    work = DIT_FIXED_BYTES_FITTED + max(mask_phase, activations)
    if attention == "eager":
        work += DIT_MATH_SCORE_BYTES_FITTED * rows * shape.heads * tokens**2
    return round(work * scale)


def dit_weight_bytes(
    shape: DiTShape = DIT_SHAPE,
    *,
    dtype: str = "bf16",
    quantization: str = "none",
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE["dit"],
) -> int:
    """The DiT's parameters and floating-point buffers in ``dtype`` and its integer buffers, then the Linear
    layers ``quantization`` stores (less those ``exclude`` matches; by default the decoder's layers, as upstream
    quantizes them)."""
    full = DTYPE_BYTES[dtype]
    unquantized = (shape.params + shape.buffer_values) * full + shape.int_buffer_bytes
    return unquantized + dit_bytes_change(shape, quantization, full, tuple(exclude))


def dit_estimate(
    duration_s: float,
    batch: int,
    *,
    dtype: str = "bf16",
    quantization: str = "none",
    attention: str = "sdpa",
    shape: DiTShape = DIT_SHAPE,
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE["dit"],
) -> ComponentEstimate:
    weights = dit_weight_bytes(shape, dtype=dtype, quantization=quantization, exclude=exclude)
    work = dit_activation_bytes(duration_s, batch, attention=attention, dtype=dtype, shape=shape)
    cfg = f" ×2 (CFG: {shape.name})" if shape.cfg else ""
    detail = f"activations {_gib(work)} for batch {batch}{cfg} × {shape.tokens(duration_s)} tokens ({attention})"
    return ComponentEstimate("dit", weights, work, detail)


def vae_decode_bytes(frames: int, *, dtype: str = "bf16", shape: VAEShape = VAE_SHAPE) -> int:
    """Working set of one ``decode`` call over ``frames`` latent frames (one batch item)."""
    per_tensor = shape.decoder_channels * frames * shape.hop * DTYPE_BYTES[dtype]
    work = VAE_FIXED_BYTES_FITTED + VAE_TENSORS_FITTED * per_tensor
    if shape.decoder_channels * frames * shape.hop >= INT32_INDEX_LIMIT:
        work += per_tensor
    return round(work)


def vae_estimate(
    duration_s: float,
    *,
    batch: int = 1,
    dtype: str = "bf16",
    quantization: str = "none",
    tiled: bool = False,
    tile_frames: int = VAE_TILE_FRAMES,
    tile_overlap: int = VAE_TILE_OVERLAP,
    items_on_device: bool = False,
    shape: VAEShape = VAE_SHAPE,
) -> ComponentEstimate:
    """The VAE decoding ``batch`` clips one item at a time (``quantization`` changes nothing: the VAE has no
    Linear layer to quantize).

    The pipeline's path (:func:`acestep_core.runtime.vae_decode.decode`) moves each decoded item to the
    CPU, so the batch adds only its latents. ``items_on_device`` is the path calibrate ran before 2026-11-28:
    every decoded item kept on the device, then concatenated there (a second copy of the batch)."""
    frames = math.ceil(duration_s * LATENT_RATE_HZ)
    act = DTYPE_BYTES[dtype]
    # the VAE is convolutions: it has no Linear layer to quantize, whatever ``quantization`` says; the
    # decoder's weight-norm weights, computed at its first forward, are part of the fitted work (#22)
    weights = shape.params * act
    latents = batch * shape.latent_channels * frames * act
    item = shape.audio_channels * frames * shape.hop * act
    if not tiled or tile_frames >= frames:
        one = vae_decode_bytes(frames, dtype=dtype, shape=shape)
        how = f"full decode of {frames} frames {_gib(one)}"
        output_in_work = True
    else:
        window = min(frames, tile_frames + 2 * tile_overlap)
        one = vae_decode_bytes(window, dtype=dtype, shape=shape) + item
        how = f"tiled decode ({tile_frames}+2×{tile_overlap} frames) {_gib(one)}"
        output_in_work = True
    work = latents + one
    if items_on_device and output_in_work:
        work = latents + max((batch - 1) * item + one, 2 * batch * item)
    return ComponentEstimate("vae", weights, work, f"{how} an item, {batch} item(s), latents {_gib(latents)}")


def text_encoder_estimate(
    *,
    dtype: str = "bf16",
    quantization: str = "none",
    shape: LMShape = TEXT_ENCODER_SHAPE,
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE["text_encoder"],
) -> ComponentEstimate:
    weights = lm_weight_bytes(shape, dtype=dtype, quantization=quantization, exclude=exclude)
    return ComponentEstimate(
        "text_encoder", weights, TEXT_ENCODER_WORK_BYTES, f"caption encoding {_gib(TEXT_ENCODER_WORK_BYTES)}"
    )


# --------------------------------------------------------------------------------------------- a run
class ModelSet(Record):
    """The shapes a run's components have: the documented real sizes, or what a checkpoints folder holds
    (:func:`acestep_core.optimize.components.model_set`)."""

    dit: DiTShape = DIT_SHAPE
    lm: Mapping[str, LMShape] = field(default_factory=lambda: dict(LM_SHAPES))
    """LM size → shape (every size, so that the ladder can step down)."""
    text_encoder: LMShape = TEXT_ENCODER_SHAPE
    vae: VAEShape = VAE_SHAPE
    models: Mapping[str, str] = field(default_factory=dict)
    """Component (``lm:<size>`` for LMs) → what it is, e.g. ``acestep-v15-turbo (documented shape)``."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Component → where its shape comes from (a config file, or the documented default and its source)."""


class RunShape(Record):
    """What a run asks of the device: ``duration_s`` of audio, ``batch`` clips, the LM size or None."""

    duration_s: float
    batch: int
    lm_model: str | None
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS
    cot_tokens: int = DEFAULT_COT_TOKENS
    lm_choice: str = "auto"
    """``size``: the user named this LM (the ladder keeps it); ``on``: any size; ``auto``: it may go off."""
    models: ModelSet = field(default_factory=ModelSet)
    """The components' shapes (the DiT variant the request chose; a checkpoint's where one was given)."""


class Choices(Record):
    """The memory-relevant part of an optimization plan."""

    precision: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PHASES, "bf16"))
    quantization: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PHASES, "none"))
    """Weight format per component (``none``, ``int8``, ``fp8``, ``int4``): what the ladder steps through."""
    schemes: Mapping[str, str] = field(default_factory=dict)
    """Scheme per quantized component (``int8_weight_only``, ``qint8``, ...); a component missing here, or
    whose scheme stores another format, gets quanto's scheme for its format (:meth:`scheme`)."""
    exclude: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_EXCLUDE))
    """Module-name patterns each component leaves unquantized (``quantization.exclude.<c>``)."""
    offload: Mapping[str, str] = field(default_factory=lambda: dict.fromkeys(PHASES, "none"))
    attention: str = "sdpa"
    """The DiT's attention: ``sdpa`` / ``flash_attention_2`` (memory-efficient) or ``eager`` (materialised)."""
    vae_decode: str = "full"
    tile_frames: int = VAE_TILE_FRAMES
    tile_overlap: int = VAE_TILE_OVERLAP
    quantize_lm_head: bool = False

    def scheme(self, component: str) -> str:
        """The scheme ``component``'s weights are stored in (``none`` when not quantized)."""
        quantization = self.quantization.get(component, "none")
        chosen = self.schemes.get(component)
        if chosen is not None and QUANT_SCHEME_FORMATS.get(chosen) == quantization:
            return chosen
        return scheme_of(quantization)


class PhaseCorrection(Record):
    """What this device's recorded runs change in one phase's prediction
    (:mod:`acestep_core.optimize.corrections` builds it; the model's figures stay beside it)."""

    own_bytes: int
    """The phase's own allocated peak (its component's weights on the device + its working set), corrected:
    the model's × ``factor``, never below what was measured for this very shape."""
    runs: int
    """Recorded runs this correction rests on."""
    run_ids: tuple[str, ...] = ()
    factor: float | None = None
    """Measured ÷ predicted own peak on this device (mean of the runs used); None: no such runs."""
    reserved_ratio: float | None = None
    """Measured reserved ÷ allocated peak on this device; None: the model's gap."""
    floor_own_bytes: int | None = None
    """The largest own allocated peak measured (or, after an out-of-memory error, known to be exceeded) for
    this exact shape."""
    floor_reserved_bytes: int | None = None
    """The same for the reserved peak, above the weights of the other components."""
    evidence: str = ""


class PhasePeak(Record):
    phase: str
    resident: Mapping[str, int]
    """Component → bytes of its weights on the device during this phase."""
    work_bytes: int
    detail: str
    reserved_gap: float = RESERVED_GAP_FITTED
    """The allocator's gap for this phase (:data:`RESERVED_GAP_QUANTIZED_FITTED` where its component is
    quantized)."""
    correction: PhaseCorrection | None = None

    @property
    def own_model_bytes(self) -> int:
        """The model's allocated peak of this phase's own component: its weights on the device + working set."""
        return self.resident.get(self.phase, 0) + self.work_bytes

    @property
    def others_bytes(self) -> int:
        """Weights of the other components left on the device during this phase (counted exactly)."""
        return sum(self.resident.values()) - self.resident.get(self.phase, 0)

    @property
    def model_allocated_bytes(self) -> int:
        """The model's allocated peak, before any correction: resident weights + the phase's working set."""
        return sum(self.resident.values()) + self.work_bytes

    @property
    def model_reserved_bytes(self) -> int:
        return reserved_bytes(self.model_allocated_bytes, self.reserved_gap)

    @property
    def allocated_bytes(self) -> int:
        """The predicted allocated peak: the model's, or corrected by this device's runs."""
        if self.correction is None:
            return self.model_allocated_bytes
        return self.others_bytes + self.correction.own_bytes

    @property
    def peak_bytes(self) -> int:
        """The predicted **reserved** peak, what is compared with the budget: the allocated peak plus the
        allocator's gap (this device's measured ratio where its runs give one), never below a reserved
        peak measured for this shape."""
        correction = self.correction
        allocated = self.allocated_bytes
        if correction is None:
            return reserved_bytes(allocated, self.reserved_gap)
        ratio = correction.reserved_ratio if correction.reserved_ratio is not None else 1 + self.reserved_gap
        reserved = max(allocated, round(allocated * ratio))
        if correction.floor_reserved_bytes is not None:
            reserved = max(reserved, self.others_bytes + correction.floor_reserved_bytes)
        return reserved


def reserved_bytes(allocated: int, gap: float = RESERVED_GAP_FITTED) -> int:
    """The caching allocator's reserved peak for an allocated peak (:data:`RESERVED_GAP_FITTED`)."""
    return round(allocated * (1 + gap))


class Prediction(Record):
    phases: tuple[PhasePeak, ...]
    estimates: Mapping[str, ComponentEstimate]

    @property
    def worst(self) -> PhasePeak:
        return max(self.phases, key=lambda p: p.peak_bytes)

    @property
    def peak_bytes(self) -> int:
        return self.worst.peak_bytes

    @property
    def corrected(self) -> bool:
        return any(p.correction is not None for p in self.phases)


class Corrector(Protocol):
    """Corrects one phase's prediction from a device's recorded runs (:class:`~acestep_core.optimize.
    corrections.Corrections`); None leaves the model's figures."""

    def __call__(
        self, run: RunShape, choices: Choices, peak: PhasePeak, estimate: ComponentEstimate
    ) -> PhaseCorrection | None: ...


STREAMED_FRACTION = {"group": 2 / 24, "sequential": 1 / 24}
"""Share of a component's weights on the device while it runs under group offload (one block of ~24
plus the one prefetched) or sequential offload (one block). The DiT's condition encoder streams its lyric
and timbre encoders' layers too (``runtime.apply``), each smaller than a decoder block."""


def component_estimates(run: RunShape, choices: Choices) -> dict[str, ComponentEstimate]:
    estimates: dict[str, ComponentEstimate] = {}
    models = run.models
    if run.lm_model is not None:
        estimates["lm"] = lm_estimate(
            models.lm.get(run.lm_model, LM_SHAPES[run.lm_model]),
            batch=run.batch,
            prompt_tokens=run.prompt_tokens,
            generated_tokens=run.cot_tokens + math.ceil(run.duration_s * CODES_PER_SECOND),
            dtype=choices.precision["lm"],
            quantization=choices.scheme("lm"),
            quantize_lm_head=choices.quantize_lm_head,
            exclude=tuple(p for p in choices.exclude.get("lm", ()) if p != "lm_head"),
        )
    estimates["text_encoder"] = text_encoder_estimate(
        dtype=choices.precision["text_encoder"],
        quantization=choices.scheme("text_encoder"),
        shape=models.text_encoder,
        exclude=tuple(choices.exclude.get("text_encoder", ())),
    )
    dit_attention = {"eager": "eager", "flash_attention_2": "flash"}.get(choices.attention, "sdpa")
    estimates["dit"] = dit_estimate(
        run.duration_s,
        run.batch,
        dtype=choices.precision["dit"],
        quantization=choices.scheme("dit"),
        attention=dit_attention,
        shape=models.dit,
        exclude=tuple(choices.exclude.get("dit", DEFAULT_EXCLUDE["dit"])),
    )
    estimates["vae"] = vae_estimate(
        run.duration_s,
        batch=run.batch,
        dtype=choices.precision["vae"],
        tiled=choices.vae_decode == "tiled",
        tile_frames=choices.tile_frames,
        tile_overlap=choices.tile_overlap,
        shape=models.vae,
    )
    return estimates


def predict(run: RunShape, choices: Choices, corrections: Corrector | None = None) -> Prediction:
    """Peak device memory of each phase of ``run`` under ``choices``; ``corrections`` (a device's recorded
    runs) may correct each phase."""
    estimates = component_estimates(run, choices)
    phases = []
    for phase in PHASES:
        if phase not in estimates:
            continue
        resident: dict[str, int] = {}
        for component, estimate in estimates.items():
            offload = choices.offload.get(component, "none")
            if component == phase:
                resident[component] = round(estimate.weights_bytes * STREAMED_FRACTION.get(offload, 1.0))
            elif offload == "none":
                resident[component] = estimate.weights_bytes
        gap = (
            RESERVED_GAP_QUANTIZED_FITTED if choices.quantization.get(phase, "none") != "none" else RESERVED_GAP_FITTED
        )
        peak = PhasePeak(phase, resident, estimates[phase].work_bytes, estimates[phase].detail, gap)
        if corrections is not None:
            correction = corrections(run, choices, peak, estimates[phase])
            if correction is not None:
                peak = dataclasses.replace(peak, correction=correction)
        phases.append(peak)
    return Prediction(tuple(phases), estimates)


# --------------------------------------------------------------------------------------------- budget
class Budget(Record):
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

    @property
    def has_room(self) -> bool:
        """False when the context and the margin take the whole device: nothing can fit, whatever the plan."""
        return self.usable_bytes > 0

    def describe(self) -> str:
        total = f"{self.total_label} {_gib(self.total_bytes)}" if self.total_label else _gib(self.total_bytes)
        if not self.context_bytes and not self.margin_bytes:
            return f"{total}"
        context = f"{self.context_label} {_gib(self.context_bytes)}"
        if not self.has_room:
            return f"{total} − {context} − margin {_gib(self.margin_bytes)}: {NO_ROOM}"
        return f"{total} − {context} − margin {_gib(self.margin_bytes)} = {_gib(self.usable_bytes)}"


NO_ROOM = "no room (the runtime's context and the safety margin take all its memory)"
"""What a plan says instead of a budget of zero or less (never a negative figure in words)."""


def over_budget(peak_bytes: int, usable_bytes: int) -> str:
    """How far ``peak_bytes`` misses a budget, in words: "1.08 GiB more than the 6.71 GiB budget", or, where
    the budget is zero or less, that there is no room at all."""
    if usable_bytes <= 0:
        return f"and the device has {NO_ROOM}"
    return f"{_gib(peak_bytes - usable_bytes)} more than the {_gib(usable_bytes)} budget"


def budget_words(usable_bytes: int) -> str:
    """ "the 6.71 GiB budget", or :data:`NO_ROOM` where the budget is zero or less."""
    return f"the {_gib(usable_bytes)} budget" if usable_bytes > 0 else NO_ROOM


def device_budget(
    total_bytes: int, *, context_bytes: int = CUDA_CONTEXT_BYTES, context_label: str = "CUDA context"
) -> Budget:
    """What a run may reserve on a device of ``total_bytes``: total − context − upstream's 0.5 GiB margin.
    Allocator slack is not a margin here: the predicted peak is the reserved one."""
    return Budget(total_bytes, context_bytes, SAFETY_MARGIN_BYTES, context_label)


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


gib = _gib
