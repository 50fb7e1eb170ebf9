"""The ACE-Step 1.5 components as real architectures, built from shipped configs with random weights.

Nothing is downloaded: each builder instantiates the real class (``transformers.Qwen3ForCausalLM``,
``diffusers.AceStepTransformer1DModel``, ``diffusers.AutoencoderOobleck``, ``transformers.Qwen3Model``)
from a JSON config in ``acestep_core/runtime/models/configs/``. Memory depends on shapes, not on values, so the
real-size builds measure what the tiers budget; the ``tiny`` builds run the whole flow on a CPU in
seconds. **Random weights make noise**: the audio of a run built here demonstrates and measures the
flow, it is not music. Checkpoints load with :func:`acestep_core.runtime.models.loader.load_checkpoint`.
"""

from __future__ import annotations

import json
import math
import warnings
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from diffusers import AceStepTransformer1DModel, AutoencoderOobleck
from diffusers.pipelines.ace_step.modeling_ace_step import (
    AceStepAudioTokenDetokenizer,
    AceStepAudioTokenizer,
    AceStepConditionEncoder,
)
from tokenizers import Tokenizer
from tokenizers.models import BPE
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

from acestep_core.checkpoints import dit_part_configs
from acestep_core.vocabulary import (
    CODES_PER_SECOND,
    COMPONENTS,
    DEFAULT_DIT,
    DIT_MODELS,
    LATENT_RATE_HZ,
    SAMPLE_RATE,
    VAE_HOP,
)

LATENT_CHANNELS = 64

LM_BUILD_SIZES: tuple[str, ...] = ("tiny", "0.6B", "1.7B", "4B")
COMPONENT_BUILD_SIZES: tuple[str, ...] = ("tiny", "real")
COMPONENT_KINDS: tuple[str, ...] = COMPONENTS


def latent_frames(duration_s: float) -> int:
    """Latent frames for ``duration_s`` seconds of audio (25 per second, rounded up)."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, not {duration_s!r}")
    return math.ceil(round(duration_s * LATENT_RATE_HZ, 6))


@cache
def _configs(kind: str) -> dict[str, Any]:
    return json.loads(files(__name__).joinpath("configs", f"{kind}.json").read_text(encoding="utf-8"))


def model_config(kind: str, size: str) -> dict[str, Any]:
    """The constructor arguments for component ``kind`` (``lm``, ``dit``, ``vae``, ``text_encoder``) at ``size``."""
    if kind not in COMPONENT_KINDS:
        raise ValueError(f"unknown component {kind!r}; known: {', '.join(COMPONENT_KINDS)}")
    data = _configs(kind)
    sizes = data["sizes"]
    if size not in sizes:
        raise ValueError(f"unknown {kind} size {size!r}; known: {', '.join(sizes)}")
    return {**data.get("common", {}), **sizes[size]}


def _torch_dtype(dtype: Any) -> Any:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use a torch.dtype or one of {', '.join(names)}")
    return names[dtype]


def _finish(model: Any, dtype: Any) -> Any:
    dtype = _torch_dtype(dtype)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()


def build_lm(
    size: str = "tiny", *, dtype: Any = None, attn_implementation: str = "sdpa", vocab_size: int | None = None
) -> Any:
    """A ``transformers.Qwen3ForCausalLM`` shaped like ACE-Step 1.5's 5Hz LM, with random weights.

    :param size: ``tiny`` (2 layers, a few MB), ``0.6B``, ``1.7B`` or ``4B`` (the real shapes:
        596,049,920 / 1,720,574,976 / 4,022,468,096 parameters).
    :param dtype: a ``torch.dtype`` or ``"bf16"`` / ``"fp16"`` / ``"fp32"``; None keeps float32.
    :param attn_implementation: transformers' attention implementation.
    :param vocab_size: replace the config's vocabulary size (to match a tokenizer).
    """
    config = model_config("lm", size)
    if vocab_size is not None:
        config["vocab_size"] = vocab_size
    qwen_config = Qwen3Config(**{k: v for k, v in config.items() if not k.startswith("_")})
    qwen_config._attn_implementation = attn_implementation
    return _finish(Qwen3ForCausalLM(qwen_config), dtype)


def dit_config(variant: str = DEFAULT_DIT, size: str = "tiny") -> dict[str, Any]:
    """An original-layout ``config.json`` (``model_type: acestep``) for DiT ``variant`` at ``size``: ``tiny`` or
    ``real`` (the XL variants take the XL family's widths: ``tiny-xl`` / ``real-xl`` in ``configs/dit.json``)."""
    if variant not in DIT_MODELS:
        raise ValueError(f"unknown DiT {variant!r}; known: {', '.join(DIT_MODELS)}")
    if size not in COMPONENT_BUILD_SIZES:
        raise ValueError(f"unknown dit size {size!r}; known: {', '.join(COMPONENT_BUILD_SIZES)}")
    config = model_config("dit", f"{size}-xl" if variant.startswith("xl-") else size)
    layers = config["num_hidden_layers"]
    config["layer_types"] = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)]
    config["is_turbo"] = variant.endswith("turbo")
    config["model_version"] = variant
    return config


class AceStepAudioCodes(AceStepAudioTokenizer):
    """diffusers' ``AceStepAudioTokenizer`` (the same weights), whose ``forward(indices=...)`` also turns 5 Hz
    code indices into the quantized vectors the detokenizer reads (``quantizer.get_output_from_indices``):
    called as a forward so that offload hooks place it."""

    def forward(self, hidden_states: Any = None, *, indices: Any = None) -> Any:
        if indices is not None:
            return self.quantizer.get_output_from_indices(indices)
        return super().forward(hidden_states)


class AceStepDiT(AceStepTransformer1DModel):
    """ACE-Step 1.5's DiT as its checkpoint holds it: the decoder (diffusers' ``AceStepTransformer1DModel``)
    with its ``condition_encoder`` (``AceStepConditionEncoder``: text projector, lyric and timbre encoders,
    ``null_condition_emb``, ``silence_latent``) and, where the checkpoint has them, the ``audio_tokenizer``
    and ``audio_token_detokenizer`` that turn the LM's 5 Hz codes into 25 Hz source latents.

    ``model(condition={...})`` runs the condition encoder and ``model(codes=indices)`` the codes' path through
    the model's own ``forward``, so that offload hooks (which wrap ``forward``) place them; every other call
    is the decoder's forward.
    """

    def __init__(
        self,
        condition_encoder: dict[str, Any] | None = None,
        audio_tokenizer: dict[str, Any] | None = None,
        audio_token_detokenizer: dict[str, Any] | None = None,
        **config: Any,
    ) -> None:
        super().__init__(**config)
        self.condition_encoder = AceStepConditionEncoder(**(condition_encoder or {}))
        self.audio_tokenizer = None if audio_tokenizer is None else AceStepAudioCodes(**audio_tokenizer)
        self.audio_token_detokenizer = (
            None if audio_token_detokenizer is None else AceStepAudioTokenDetokenizer(**audio_token_detokenizer)
        )

    def forward(self, *args: Any, condition: dict[str, Any] | None = None, codes: Any = None, **kwargs: Any) -> Any:
        if condition is not None:
            return self.condition_encoder(**condition)
        if codes is not None:
            return self.decode_codes(codes)
        return super().forward(*args, **kwargs)  # type: ignore[misc]  # diffusers' forward, untyped

    def decode_codes(self, codes: Any) -> Any:
        """5 Hz code indices ``[batch, n]`` → source latents ``[batch, 5 n, 64]`` (FSQ code book, then the
        detokenizer), as diffusers' ``AceStepPipeline.prepare_src_latents`` does."""
        if self.audio_tokenizer is None or self.audio_token_detokenizer is None:
            raise ValueError("this DiT has no audio tokenizer / detokenizer: the LM's codes cannot reach it")
        dtype = self.audio_token_detokenizer.proj_out.weight.dtype
        quantized = self.audio_tokenizer(indices=codes.unsqueeze(-1)).to(dtype)
        return self.audio_token_detokenizer(quantized)

    @property
    def codebook_size(self) -> int | None:
        return None if self.audio_tokenizer is None else self.audio_tokenizer.quantizer.codebook_size


def dit_from_config(config: dict[str, Any], *, audio_codec: bool = True) -> AceStepDiT:
    """:class:`AceStepDiT` from an original ``config.json`` (diffusers' converter rules for its parts)."""
    parts = dit_part_configs(config)
    return AceStepDiT(
        condition_encoder=parts["condition_encoder"],
        audio_tokenizer=parts["audio_tokenizer"] if audio_codec else None,
        audio_token_detokenizer=parts["audio_token_detokenizer"] if audio_codec else None,
        **parts["transformer"],
    )


def build_dit(
    size: str = "tiny",
    *,
    variant: str = DEFAULT_DIT,
    dtype: Any = None,
    condition_encoder: bool = True,
    audio_codec: bool = True,
) -> Any:
    """ACE-Step 1.5's DiT with random weights: :class:`AceStepDiT` (``tiny``, or ``real``: the 2B is
    2,393,872,518 parameters, the XL 4,987,310,726 — decoder, condition encoder, audio tokenizer and
    detokenizer). ``condition_encoder=False`` builds diffusers' ``AceStepTransformer1DModel`` alone;
    ``audio_codec=False`` leaves out the tokenizer and detokenizer."""
    config = dit_config(variant, size)
    if not condition_encoder:
        return _finish(AceStepTransformer1DModel(**dit_part_configs(config)["transformer"]), dtype)
    return _finish(dit_from_config(config, audio_codec=audio_codec), dtype)


def build_vae(size: str = "tiny", *, dtype: Any = None) -> Any:
    """A ``diffusers.AutoencoderOobleck`` (``tiny`` or ``real``: ACE-Step's 168.7M-parameter VAE), random weights.

    Both sizes keep the hop (1920 samples a latent frame), 64 latent channels, stereo and 48 kHz.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated", category=FutureWarning)
        vae = AutoencoderOobleck(**model_config("vae", size))
    return _finish(vae, dtype)


def build_text_encoder(size: str = "tiny", *, dtype: Any = None) -> Any:
    """A ``transformers.Qwen3Model`` (``real`` = Qwen3-Embedding-0.6B's shape, hidden 1024), random weights."""
    return _finish(Qwen3Model(Qwen3Config(**model_config("text_encoder", size))), dtype)


def load_component(kind: str, path: str | Path, *, dtype: Any = None) -> Any:
    """The model of component ``kind`` (``lm``, ``text_encoder``, ``dit``, ``vae``) loaded from the checkpoint
    folder ``path`` in any of the layouts :func:`acestep_core.runtime.models.loader.load_checkpoint` reads
    (which also gives the tokenizer and what was read)."""
    from acestep_core.runtime.models.loader import load_checkpoint

    return load_checkpoint(path, component=kind, dtype=dtype).model


def parameter_count(model: Any) -> int:
    """Parameters of ``model``, counting tied weights once."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "CODES_PER_SECOND",
    "COMPONENT_BUILD_SIZES",
    "COMPONENT_KINDS",
    "LATENT_CHANNELS",
    "LATENT_RATE_HZ",
    "LM_BUILD_SIZES",
    "SAMPLE_RATE",
    "VAE_HOP",
    "AceStepAudioCodes",
    "AceStepDiT",
    "build_dit",
    "build_lm",
    "build_text_encoder",
    "build_tokenizer",
    "build_vae",
    "dit_config",
    "dit_from_config",
    "latent_frames",
    "load_component",
    "model_config",
    "parameter_count",
]


TOKENIZER_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n:.,;!?'\"-()/#&+"
SPECIAL_TOKENS = ("<|endoftext|>", "<think>", "</think>")


def build_tokenizer(n_codes: int = 1024) -> Any:
    """A small ``tokenizers.Tokenizer`` in the 5Hz LM's format: one token per character (so one per
    digit, as Qwen3's tokenizer does with numbers), then ``<|endoftext|>``, ``<think>``,
    ``</think>`` and ``<|audio_code_0|>`` … ``<|audio_code_{n_codes-1}|>`` as added tokens.

    The real LM's tokenizer has 64,000 code tokens; the embedded default keeps ``n_codes`` small so
    the tiny LM's vocabulary stays a few thousand ids.
    """
    vocab = {char: index for index, char in enumerate(TOKENIZER_CHARS)}
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=None))
    tokenizer.add_special_tokens([*SPECIAL_TOKENS, *(f"<|audio_code_{i}|>" for i in range(n_codes))])
    return tokenizer
