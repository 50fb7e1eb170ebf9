"""What each component of a run holds: its shape from a checkpoint's ``config.json``, or the documented
real size, and the plan's ``memory.components`` table (model, parameters, weight bytes, dtype, source).

Pure Python; :mod:`acestep_core.checkpoints` is imported only where a folder is read (not at start-up).
The counts are the memory model's (:mod:`acestep_core.optimize.memory`), which
``tests/test_checkpoints_counts.py`` compares, to the byte, with meta-device builds of the classes the
loader builds (every DiT variant, every LM size with the audio-code vocabulary).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from acestep_core.optimize.memory import (
    DIT_SHAPES,
    DTYPE_BYTES,
    LM_SHAPES,
    TEXT_ENCODER_SHAPE,
    VAE_SHAPE,
    DiTShape,
    LMShape,
    ModelSet,
    RunShape,
    VAEShape,
    dit_weight_bytes,
    lm_weight_bytes,
)
from acestep_core.vocabulary import (
    CFG_DITS,
    DEFAULT_DIT,
    DIT_FOLDERS,
    LM_FOLDERS,
    LM_VOCAB_SOURCE,
    QWEN3_VOCAB,
    TEXT_ENCODER_FOLDER,
    VAE_FOLDER,
)

if TYPE_CHECKING:
    from acestep_core.checkpoints import Catalogue, FoundModel

DOCUMENTED = {
    "dit": "documented shape (acestep_core/optimize/memory.py DIT_SHAPES: upstream's configs)",
    "lm": f"documented Qwen3 shape, vocabulary {LM_VOCAB_SOURCE}",
    "text_encoder": "documented shape of Qwen3-Embedding-0.6B (hidden 1024, 28 layers, 151,669 rows)",
    "vae": "documented shape of ACE-Step's AutoencoderOobleck (168,695,426 parameters)",
}


# --------------------------------------------------------------------------------------------- from configs
def dit_shape_from_parts(parts: Mapping[str, Mapping[str, Any]], name: str = DEFAULT_DIT) -> DiTShape:
    """The :class:`DiTShape` of a DiT whose parts have these diffusers constructor arguments
    (:func:`acestep_core.checkpoints.dit_part_configs`, or a diffusers folder's ``config.json`` files)."""
    transformer = parts["transformer"]
    encoder = parts.get("condition_encoder") or {}
    tokenizer = parts.get("audio_tokenizer")
    detokenizer = parts.get("audio_token_detokenizer")
    codec = tokenizer or detokenizer or {}
    hidden = int(transformer.get("hidden_size", 2048))
    intermediate = int(transformer.get("intermediate_size", 6144))
    heads = int(transformer.get("num_attention_heads", 16))
    kv_heads = int(transformer.get("num_key_value_heads", 8))

    def narrower(value: int, same: int) -> int | None:
        return None if value == same else value

    return DiTShape(
        name=name,
        hidden=hidden,
        intermediate=intermediate,
        layers=int(transformer.get("num_hidden_layers", 24)),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=int(transformer.get("head_dim", 128)),
        in_channels=int(transformer.get("in_channels", 192)),
        acoustic_channels=int(transformer.get("audio_acoustic_hidden_dim", 64)),
        patch=int(transformer.get("patch_size", 2)),
        encoder_hidden=narrower(int(transformer.get("encoder_hidden_size") or hidden), hidden),
        encoder_intermediate=narrower(int(encoder.get("intermediate_size", intermediate)), intermediate),
        encoder_heads=narrower(int(encoder.get("num_attention_heads", heads)), heads),
        encoder_kv_heads=narrower(int(encoder.get("num_key_value_heads", kv_heads)), kv_heads),
        text_hidden=int(encoder.get("text_hidden_dim", 1024)),
        lyric_layers=int(encoder.get("num_lyric_encoder_hidden_layers", 8)),
        timbre_layers=int(encoder.get("num_timbre_encoder_hidden_layers", 4)),
        timbre_channels=int(encoder.get("timbre_hidden_dim", 64)),
        pooler_layers=int(codec.get("num_attention_pooler_hidden_layers", 2)),
        pool_window=int(codec.get("pool_window_size", 5)),
        fsq_levels=len((tokenizer or {}).get("fsq_input_levels") or [8, 8, 8, 5, 5, 5]),
        fsq_quantizers=int((tokenizer or {}).get("fsq_input_num_quantizers", 1)),
        condition_encoder=bool(encoder),
        audio_codec=tokenizer is not None and detokenizer is not None,
        cfg=name in CFG_DITS,
    )


def dit_shape_from_config(config: Mapping[str, Any], name: str = DEFAULT_DIT) -> DiTShape:
    """The shape of an original DiT ``config.json`` (``model_type: acestep``)."""
    from acestep_core.checkpoints import dit_part_configs

    return dit_shape_from_parts(dit_part_configs(config), name)


def lm_shape_from_config(config: Mapping[str, Any], *, lm_head: bool = True) -> LMShape:
    """A Qwen3 ``config.json`` as an :class:`LMShape` (``lm_head=False``: the text encoder, a ``Qwen3Model``)."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    return LMShape(
        hidden=hidden,
        layers=int(config["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads", heads)),
        head_dim=int(config.get("head_dim") or hidden // heads),
        intermediate=int(config["intermediate_size"]),
        vocab=int(config.get("vocab_size", QWEN3_VOCAB)),
        tied_embeddings=bool(config.get("tie_word_embeddings", True)),
        lm_head=lm_head,
    )


def vae_shape_from_config(config: Mapping[str, Any]) -> VAEShape:
    """diffusers' ``AutoencoderOobleck`` counted from its config: every convolution is weight-normed
    (``weight_v`` as the weight, ``weight_g`` one per output channel, or per input channel for the transposed
    ones), every Snake activation holds ``alpha`` and ``beta`` per channel."""
    audio = int(config.get("audio_channels", 2))
    ratios = [int(r) for r in config.get("downsampling_ratios", [2, 4, 4, 8, 8])]
    multiples = [1] + [int(m) for m in config.get("channel_multiples", [1, 2, 4, 8, 16])]
    encoder_hidden = int(config.get("encoder_hidden_size", 128))
    decoder = int(config.get("decoder_channels", 128))
    latent = int(config.get("decoder_input_channels", 64))

    def conv(c_in: int, c_out: int, kernel: int, *, bias: bool = True, transposed: bool = False) -> tuple[int, int]:
        weight = c_in * c_out * kernel
        return weight + (c_in if transposed else c_out) + (c_out if bias else 0), weight

    def residual(channels: int) -> tuple[int, int]:
        first, second = conv(channels, channels, 7), conv(channels, channels, 1)
        return 4 * channels + first[0] + second[0], first[1] + second[1]

    def total(parts: list[tuple[int, int]]) -> tuple[int, int]:
        return sum(p for p, _ in parts), sum(w for _, w in parts)

    encoder = [conv(audio, encoder_hidden, 7)]
    for index, stride in enumerate(ratios):
        c_in, c_out = encoder_hidden * multiples[index], encoder_hidden * multiples[index + 1]
        encoder += [residual(c_in)] * 3 + [(2 * c_in, 0), conv(c_in, c_out, 2 * stride)]
    widest = encoder_hidden * multiples[-1]
    encoder += [(2 * widest, 0), conv(widest, encoder_hidden, 3)]
    decoder_parts = [conv(latent, decoder * multiples[-1], 7)]
    for index, stride in enumerate(reversed(ratios)):
        level = len(ratios) - index
        c_in, c_out = decoder * multiples[level], decoder * multiples[level - 1]
        decoder_parts += [(2 * c_in, 0), conv(c_in, c_out, 2 * stride, transposed=True)] + [residual(c_out)] * 3
    decoder_parts += [(2 * decoder, 0), conv(decoder, audio, 7, bias=False)]
    encoder_params, encoder_weights = total(encoder)
    decoder_params, decoder_weights = total(decoder_parts)
    return VAEShape(
        params=encoder_params + decoder_params,
        decoder_channels=decoder,
        latent_channels=latent,
        decoder_conv_weights=decoder_weights,
        encoder_conv_weights=encoder_weights,
        audio_channels=audio,
        hop=math.prod(ratios),
    )


def expected_parameters(layout: str, config: Mapping[str, Any]) -> int | None:
    """The parameters a folder's config describes, counted without torch (None where a config cannot say)."""
    from acestep_core.checkpoints import CheckpointError

    try:
        if layout in ("original", "original-sharded"):
            return dit_shape_from_config(config).params
        if layout == "diffusers":
            return dit_shape_from_parts(config).params
        if layout == "lm":
            shape = lm_shape_from_config(config)
            return shape.params
        if layout == "text_encoder":
            return lm_shape_from_config(config, lm_head=False).params
        if layout == "vae":
            return vae_shape_from_config(config).params
    except (KeyError, TypeError, ValueError, CheckpointError):
        return None
    return None


# --------------------------------------------------------------------------------------------- a run's models
def model_set(dit: str = DEFAULT_DIT, checkpoints: str | None = None) -> ModelSet:
    """The shapes a run budgets: the documented real sizes, replaced by what ``checkpoints`` holds for
    each component it has (the LM's vocabulary from its config, the DiT variant's own config)."""
    shapes: dict[str, Any] = {"dit": DIT_SHAPES.get(dit, DIT_SHAPES[DEFAULT_DIT]), "lm": dict(LM_SHAPES)}
    shapes |= {"text_encoder": TEXT_ENCODER_SHAPE, "vae": VAE_SHAPE}
    models = {"dit": f"{DIT_FOLDERS.get(dit, dit)} ({_family(dit)})", "text_encoder": TEXT_ENCODER_FOLDER}
    models |= {"vae": f"{VAE_FOLDER} (AutoencoderOobleck)"} | {f"lm:{s}": LM_FOLDERS[s] for s in LM_SHAPES}
    sources = dict(DOCUMENTED)
    found = _catalogue(checkpoints)
    if found is not None:
        _from_folder(found, dit, shapes, models, sources)
    return ModelSet(
        dit=shapes["dit"],
        lm=shapes["lm"],
        text_encoder=shapes["text_encoder"],
        vae=shapes["vae"],
        models=models,
        sources=sources,
    )


def _catalogue(checkpoints: str | None) -> Catalogue | None:
    if not checkpoints:
        return None
    from acestep_core.checkpoints import CheckpointError, catalogue

    try:
        return catalogue(checkpoints)
    except (CheckpointError, OSError):
        return None


def _from_folder(
    found: Catalogue, dit: str, shapes: dict[str, Any], models: dict[str, str], sources: dict[str, str]
) -> None:
    from acestep_core.checkpoints import CheckpointError

    def use(key: str, model: FoundModel, build: Any) -> None:
        try:
            shapes_value = build(model)
        except (KeyError, TypeError, ValueError, CheckpointError):
            return
        if key.startswith("lm:"):
            shapes["lm"][key[3:]] = shapes_value
        else:
            shapes[key] = shapes_value
        models[key] = f"{model.path} ({model.layout})"
        sources[key] = f"{model.path}/config.json"

    from acestep_core.checkpoints import budgeted_as

    if (model := found.find("dit", dit)) is not None and model.problem is None:
        use("dit", model, lambda m: _dit_shape_of(m, budgeted_as(m.name)))
    if (model := found.find("text_encoder")) is not None and model.problem is None:
        use("text_encoder", model, lambda m: lm_shape_from_config(m.config, lm_head=False))
    if (model := found.find("vae")) is not None and model.problem is None:
        use("vae", model, lambda m: vae_shape_from_config(m.config))
    for size in LM_SHAPES:
        if (model := found.find("lm", size)) is not None and model.problem is None:
            use(f"lm:{size}", model, lambda m: lm_shape_from_config(m.config))


def _dit_shape_of(model: FoundModel, name: str) -> DiTShape:
    if model.layout == "diffusers":
        return dit_shape_from_parts(model.config, name)
    return dit_shape_from_config(model.config, name)


def _family(dit: str) -> str:
    return "XL, 4B" if dit.startswith("xl-") else "2B"


# --------------------------------------------------------------------------------------------- the plan's table
def components_table(run: RunShape, precision: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``memory.components``: for each component the run loads, what it is, its parameters, and its weight
    bytes (parameters and buffers) in the plan's dtype, before any quantization; and where the shape is from."""
    models = run.models
    table: dict[str, dict[str, Any]] = {}
    if run.lm_model is not None:
        lm = models.lm.get(run.lm_model, LM_SHAPES[run.lm_model])
        key = f"lm:{run.lm_model}"
        table["lm"] = _row(
            models.models.get(key, run.lm_model), lm.params, lm_weight_bytes(lm, dtype=precision["lm"]), precision["lm"]
        )
        table["lm"]["vocabulary"] = lm.vocab
        table["lm"]["source"] = models.sources.get(key, DOCUMENTED["lm"])
    text = models.text_encoder
    table["text_encoder"] = _row(
        models.models.get("text_encoder", TEXT_ENCODER_FOLDER),
        text.params,
        lm_weight_bytes(text, dtype=precision["text_encoder"]),
        precision["text_encoder"],
    )
    dit = models.dit
    table["dit"] = _row(
        models.models.get("dit", dit.name), dit.params, dit_weight_bytes(dit, dtype=precision["dit"]), precision["dit"]
    )
    table["dit"]["forwards_per_step"] = dit.forwards_per_step
    vae = models.vae
    table["vae"] = _row(
        models.models.get("vae", VAE_FOLDER), vae.params, vae.params * DTYPE_BYTES[precision["vae"]], precision["vae"]
    )
    for component in ("text_encoder", "dit", "vae"):
        table[component]["source"] = models.sources.get(component, DOCUMENTED[component])
    return table


def _row(model: str, parameters: int, weight_bytes: int, dtype: str) -> dict[str, Any]:
    return {"model": model, "parameters": parameters, "weight_bytes": weight_bytes, "dtype": dtype}
