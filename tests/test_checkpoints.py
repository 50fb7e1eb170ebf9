"""Loading ACE-Step 1.5's checkpoints in the layouts users have: tiny folders written by our generator
(``acestep_core.runtime.models.fixtures``), loaded back strictly, compared bit for bit with the modules
that were written; and one clear error for each way a folder can be wrong, with nothing left in memory."""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file, save_file  # noqa: E402

from acestep_core.checkpoints import (  # noqa: E402
    CheckpointError,
    dit_module_name,
    dit_original_name,
    read_safetensors_header,
    sniff,
)
from acestep_core.runtime.models import AceStepDiT, latent_frames  # noqa: E402
from acestep_core.runtime.models.fixtures import (  # noqa: E402
    write_checkpoints,
    write_dit,
    write_lm,
    write_text_encoder,
    write_vae,
)
from acestep_core.runtime.models.loader import load_checkpoint  # noqa: E402
from acestep_core.vocabulary import AUDIO_CODE_COUNT  # noqa: E402


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    left, right = a.state_dict(), b.state_dict()
    assert set(left) == set(right)
    for name, tensor in left.items():
        assert right[name].dtype == tensor.dtype, name
        assert torch.equal(right[name], tensor), name


def _dit_outputs(dit: torch.nn.Module) -> list[torch.Tensor]:
    """The decoder, the condition encoder and the codes' path on fixed inputs."""
    generator = torch.Generator().manual_seed(7)
    dtype = next(dit.parameters()).dtype
    frames, width = latent_frames(2), dit.config.in_channels - 64
    text = dit.condition_encoder.config.text_hidden_dim
    tokens = torch.randn(1, 5, text, generator=generator).to(dtype)
    mask = torch.ones(1, 5, dtype=torch.long)
    silence = dit.condition_encoder.silence_latent[:, :30].to(dtype)
    with torch.no_grad():
        encoded, _ = dit(
            condition={
                "text_hidden_states": tokens,
                "text_attention_mask": mask,
                "lyric_hidden_states": tokens,
                "lyric_attention_mask": mask,
                "refer_audio_acoustic_hidden_states_packed": silence,
                "refer_audio_order_mask": torch.zeros(1, dtype=torch.long),
            }
        )
        t = torch.tensor([0.5], dtype=dtype)
        latents = torch.randn(1, frames, 64, generator=generator).to(dtype)
        context = torch.randn(1, frames, width, generator=generator).to(dtype)
        velocity = dit(latents, t, t, encoded, context).sample
        hints = dit(codes=torch.tensor([[0, 17, 63999, 5]]))
    return [encoded, velocity, hints]


@pytest.mark.parametrize(
    ("variant", "layout"),
    [("turbo", "original"), ("sft", "original"), ("xl-turbo", "original-sharded"), ("base", "diffusers")],
)
def test_a_dit_loads_back_bit_for_bit(tmp_path: Path, variant: str, layout: str) -> None:
    written = write_dit(tmp_path / f"acestep-v15-{variant}", variant, layout=layout)
    loaded = load_checkpoint(tmp_path / f"acestep-v15-{variant}", component="dit")
    assert loaded.layout == layout and loaded.name == variant and isinstance(loaded.model, AceStepDiT)
    _same_state(written, loaded.model)
    for ours, theirs in zip(_dit_outputs(written), _dit_outputs(loaded.model), strict=True):
        assert torch.equal(ours, theirs)
    assert not any("modeling_acestep" in name or "configuration_acestep" in name for name in sys.modules)


def test_xl_fp32_shards_are_cast_while_reading(tmp_path: Path) -> None:
    written = write_dit(tmp_path / "acestep-v15-xl-sft", "xl-sft")
    assert len(list((tmp_path / "acestep-v15-xl-sft").glob("model-*-of-00004.safetensors"))) == 4
    assert {
        i.dtype
        for i in read_safetensors_header(next((tmp_path / "acestep-v15-xl-sft").glob("model-0*"))).tensors.values()
    } == {"F32"}
    loaded = load_checkpoint(tmp_path / "acestep-v15-xl-sft", dtype="bf16").model
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    _same_state(written.to(torch.bfloat16), loaded)
    assert loaded.config.hidden_size != loaded.condition_encoder.config.hidden_size  # XL's narrower encoder


def test_the_original_names_map_both_ways_as_diffusers_converter_does() -> None:
    assert dit_module_name("decoder.proj_in.1.weight") == "proj_in_conv.weight"
    assert dit_module_name("decoder.layers.3.cross_attn.o_proj.weight") == "layers.3.cross_attn.to_out.0.weight"
    assert dit_module_name("encoder.lyric_encoder.layers.0.self_attn.q_norm.weight") == (
        "condition_encoder.lyric_encoder.layers.0.self_attn.norm_q.weight"
    )
    assert dit_module_name("tokenizer.attention_pooler.layers.1.self_attn.k_proj.weight") == (
        "audio_tokenizer.attention_pooler.layers.1.self_attn.to_k.weight"
    )
    assert dit_module_name("detokenizer.special_tokens") == "audio_token_detokenizer.special_tokens"
    assert dit_module_name("null_condition_emb") == "condition_encoder.null_condition_emb"
    assert dit_module_name("something.else") is None
    dit = write_dit.__globals__["dit_from_config"](write_dit.__globals__["dit_config"]("xl-turbo", "tiny"))
    for name in dit.state_dict():
        assert dit_module_name(dit_original_name(name)) == name


def test_vae_text_encoder_and_lm_load_back_bit_for_bit(tmp_path: Path) -> None:
    vae = write_vae(tmp_path / "vae")
    loaded_vae = load_checkpoint(tmp_path / "vae", component="vae").model
    latents = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(vae.decode(latents).sample, loaded_vae.decode(latents).sample)

    for prefixed in (False, True):
        folder = tmp_path / f"Qwen3-Embedding-0.6B-{prefixed}"
        encoder = write_text_encoder(folder, prefixed=prefixed)
        loaded = load_checkpoint(folder, component="text_encoder")
        ids = torch.tensor([loaded.tokenizer.encode("a calm piano").ids])
        with torch.no_grad():
            assert torch.equal(encoder(ids).last_hidden_state, loaded.model(ids).last_hidden_state)

    for prefixed in (True, False):
        folder = tmp_path / f"acestep-5Hz-lm-0.6B-{prefixed}"
        lm = write_lm(folder, prefixed=prefixed)
        loaded = load_checkpoint(folder, component="lm")
        vocab = loaded.tokenizer.get_vocab()
        assert sum(1 for token in vocab if token.startswith("<|audio_code_")) == AUDIO_CODE_COUNT == 65_535
        assert loaded.model.config.vocab_size == len(vocab) and loaded.model.lm_head.weight is (
            loaded.model.model.embed_tokens.weight
        )
        ids = torch.tensor([[1, 2, 3, vocab["<|audio_code_64000|>"]]])
        with torch.no_grad():
            assert torch.equal(lm(ids).logits, loaded.model(ids).logits)


def test_a_checkpoints_folder_is_written_in_a_few_seconds_and_every_folder_sniffed(tmp_path: Path) -> None:
    write_checkpoints(tmp_path, dits=("turbo", "xl-base"), lms=("1.7B",), diffusers=True)
    layouts = {p.name: sniff(p).layout for p in tmp_path.iterdir()}
    assert layouts == {
        "acestep-v15-turbo": "original",
        "acestep-v15-xl-base": "original-sharded",
        "acestep-v15-turbo-diffusers": "diffusers",
        "vae": "vae",
        "Qwen3-Embedding-0.6B": "text_encoder",
        "acestep-5Hz-lm-1.7B": "lm",
    }


# --------------------------------------------------------------------------------------------- errors
def _live_models() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is AceStepDiT)


def _expect_error(folder: Path, *fragments: str, **kwargs: object) -> str:
    before = _live_models()
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(folder, **kwargs)
    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, message
    assert raised.value.__context__ is None and raised.value.__cause__ is None
    assert _live_models() == before  # nothing half-loaded kept alive
    return message


@pytest.fixture
def turbo(tmp_path: Path) -> Path:
    write_dit(tmp_path / "acestep-v15-turbo", "turbo")
    return tmp_path / "acestep-v15-turbo"


def test_a_truncated_file_is_named(turbo: Path) -> None:
    weights = turbo / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    _expect_error(turbo, "model.safetensors: truncated", "interrupted download")


def test_a_weight_of_the_wrong_dtype_is_named(turbo: Path) -> None:
    weights = turbo / "model.safetensors"
    state = load_file(str(weights))
    state["decoder.norm_out.weight"] = state["decoder.norm_out.weight"].to(torch.int32)
    save_file(state, str(weights))
    _expect_error(turbo, "decoder.norm_out.weight is stored as I32", "F32, BF16, F16")


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    write_dit(tmp_path / "acestep-v15-xl-turbo", "xl-turbo")
    (tmp_path / "acestep-v15-xl-turbo" / "model-00003-of-00004.safetensors").unlink()
    _expect_error(tmp_path / "acestep-v15-xl-turbo", "missing shard model-00003-of-00004.safetensors", "of the 4")


def test_a_config_that_disagrees_with_the_tensors_is_named(turbo: Path) -> None:
    config = json.loads((turbo / "config.json").read_text())
    config["intermediate_size"] = 96
    (turbo / "config.json").write_text(json.dumps(config))
    _expect_error(turbo, "config.json disagrees with the weights", "layers.0.mlp.gate_proj.weight is [128, 64]")


def test_missing_and_unexpected_tensors_are_named(turbo: Path) -> None:
    weights = turbo / "model.safetensors"
    state = load_file(str(weights))
    state.pop("detokenizer.proj_out.bias")
    state["decoder.extra_head.weight"] = torch.zeros(2)
    save_file(state, str(weights))
    _expect_error(
        turbo, "1 missing (audio_token_detokenizer.proj_out.bias)", "1 unexpected (decoder.extra_head.weight)"
    )


def test_a_missing_silence_latent_is_named(turbo: Path) -> None:
    (turbo / "silence_latent.pt").unlink()
    _expect_error(turbo, "no silence_latent.pt")


def test_a_folder_of_something_else_is_named(tmp_path: Path, turbo: Path) -> None:
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _expect_error(other, "not an ACE-Step 1.5 component", "bert")
    empty = tmp_path / "photos"
    empty.mkdir()
    (empty / "cat.jpg").write_bytes(b"\xff\xd8")
    _expect_error(empty, "not an ACE-Step checkpoint folder", "cat.jpg")
    _expect_error(turbo, "holds a dit (original layout), not a vae", component="vae")
    garbage = turbo / "model.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    _expect_error(turbo, "not a safetensors file")


def test_a_tokenizer_beyond_the_embedding_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "acestep-5Hz-lm-0.6B"
    write_lm(folder)
    config = json.loads((folder / "config.json").read_text())
    config["vocab_size"] = 1000
    (folder / "config.json").write_text(json.dumps(config))
    message = _expect_error(folder)
    assert "beyond the embedding" in message
