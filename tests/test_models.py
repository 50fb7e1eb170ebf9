"""The model builders: real classes from shipped configs, tiny builds that run, real sizes that match."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from acestep_core.optimize.memory import DIT_SHAPE, LM_SHAPES  # noqa: E402
from acestep_core.runtime.models import (  # noqa: E402
    CODES_PER_SECOND,
    LATENT_CHANNELS,
    LATENT_RATE_HZ,
    SAMPLE_RATE,
    VAE_HOP,
    build_dit,
    build_lm,
    build_text_encoder,
    build_vae,
    latent_frames,
    load_component,
    parameter_count,
)


def test_constants_agree() -> None:
    assert SAMPLE_RATE / VAE_HOP == LATENT_RATE_HZ == 25
    assert LATENT_CHANNELS == 64 and CODES_PER_SECOND == 5
    assert latent_frames(30) == 750
    assert latent_frames(10.01) == 251
    with pytest.raises(ValueError):
        latent_frames(0)


@pytest.mark.parametrize(
    ("size", "expected"),
    [("0.6B", 596_049_920), ("1.7B", 1_720_574_976), ("4B", 4_022_468_096)],
)
def test_real_lm_sizes_match_the_measured_models(size: str, expected: int) -> None:
    with torch.device("meta"):
        measured = build_lm(size, vocab_size=151_936)  # the builds the H100 readings measured
        lm = build_lm(size)
    assert parameter_count(measured) == expected
    assert lm.config.tie_word_embeddings and lm.config.num_key_value_heads == 8 and lm.config.head_dim == 128
    # the real LM's vocabulary: Qwen3's ids and 65,535 audio-code tokens
    assert lm.config.vocab_size == 217_204
    assert parameter_count(lm) == expected + (217_204 - 151_936) * lm.config.hidden_size == LM_SHAPES[size].params


def test_real_vae_dit_and_text_encoder_shapes() -> None:
    with torch.device("meta"):
        vae = build_vae("real")
        dit = build_dit("real")
        text = build_text_encoder("real")
    assert parameter_count(vae) == 168_695_426  # measurements/h100-vae-2026-11-26.json: 168.7 M
    assert vae.config.sampling_rate == SAMPLE_RATE and vae.hop_length == VAE_HOP
    assert dit.config.num_hidden_layers == 24 and dit.config.hidden_size == 2048
    # the DiT as its file holds it: decoder, condition encoder, audio tokenizer and detokenizer (the shared
    # reference inferred ≈2,393,874,566; the build holds 2,048 fewer: null_condition_emb counted once)
    assert type(dit).__name__ == "AceStepDiT" and parameter_count(dit) == DIT_SHAPE.params == 2_393_872_518
    assert text.config.hidden_size == 1024 and type(text).__name__ == "Qwen3Model"


def test_tiny_lm_generates_and_takes_a_vocab_size() -> None:
    lm = build_lm("tiny", vocab_size=300)
    assert type(lm).__name__ == "Qwen3ForCausalLM" and lm.config.num_hidden_layers >= 2
    assert lm.config.tie_word_embeddings
    assert parameter_count(lm) * 4 < 5 * 2**20
    out = lm.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 7) and int(out.max()) < 300


def test_tiny_dit_vae_and_text_encoder_run_with_pipeline_shapes() -> None:
    frames = latent_frames(2)
    dit = build_dit("tiny", dtype="fp32")
    context = torch.zeros(1, frames, dit.config.in_channels - LATENT_CHANNELS)
    encoder = torch.zeros(1, 7, dit.config.encoder_hidden_size)
    t = torch.tensor([0.5])
    with torch.no_grad():
        velocity = dit(torch.randn(1, frames, LATENT_CHANNELS), t, t, encoder, context).sample
        audio = build_vae("tiny").decode(velocity.transpose(1, 2)).sample
        hidden = build_text_encoder("tiny")(torch.tensor([[1, 2, 3]])).last_hidden_state
    assert velocity.shape == (1, frames, LATENT_CHANNELS)
    assert audio.shape == (1, 2, frames * VAE_HOP)
    assert hidden.shape == (1, 3, dit.config.encoder_hidden_size)


def test_dtype_names_and_errors() -> None:
    assert next(build_lm("tiny", dtype="bf16").parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown lm size"):
        build_lm("7B")
    with pytest.raises(ValueError, match="unknown dtype"):
        build_vae("tiny", dtype="int3")


def test_load_component_round_trips_a_local_checkpoint(tmp_path) -> None:
    from acestep_core.checkpoints import CheckpointError
    from acestep_core.runtime.models.fixtures import write_lm

    vae = build_vae("tiny")
    vae.save_pretrained(tmp_path / "vae")  # diffusers' own layout is the VAE's real one
    loaded = load_component("vae", tmp_path / "vae")
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), loaded.state_dict().values(), strict=True))
    lm = write_lm(tmp_path / "acestep-5Hz-lm-0.6B")
    assert parameter_count(load_component("lm", tmp_path / "acestep-5Hz-lm-0.6B")) == parameter_count(lm)
    with pytest.raises(CheckpointError, match="not a folder"):
        load_component("dit", tmp_path / "missing")
