"""What the plan budgets is what the files hold: real-size meta-device builds of the classes the loader builds,
to the byte, for every DiT variant and LM size; the pure-Python counts of a config (``acestep-core models``)
equal the builds too; and the real files' tensor names (transcribed from acestep.cpp's loader) are the
names our builds map to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from acestep_core.checkpoints import dit_original_name  # noqa: E402
from acestep_core.optimize.components import (  # noqa: E402
    dit_shape_from_config,
    lm_shape_from_config,
    vae_shape_from_config,
)
from acestep_core.optimize.memory import (  # noqa: E402
    DIT_SHAPES,
    LM_SHAPES,
    TEXT_ENCODER_SHAPE,
    VAE_SHAPE,
    dit_weight_bytes,
    lm_weight_bytes,
)
from acestep_core.runtime.models import (  # noqa: E402
    build_lm,
    build_text_encoder,
    build_vae,
    dit_config,
    dit_from_config,
    model_config,
)
from acestep_core.vocabulary import DIT_MODELS, LM_SIZES, LM_VOCAB  # noqa: E402

NAMES = Path(__file__).parent / "fixtures" / "acestep_dit_tensor_names.json"


def _bytes(model: torch.nn.Module) -> int:
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("variant", DIT_MODELS)
def test_every_dit_variant_is_budgeted_to_the_byte(variant: str) -> None:
    with torch.device("meta"):
        dit = dit_from_config(dit_config(variant, "real")).to(torch.bfloat16)
    shape = DIT_SHAPES[variant]
    assert _bytes(dit) == dit_weight_bytes(shape, dtype="bf16")
    assert sum(p.numel() for p in dit.parameters()) == shape.params
    assert shape.params == (4_987_310_726 if variant.startswith("xl-") else 2_393_872_518)
    assert shape.forwards_per_step == (1 if variant.endswith("turbo") else 2)
    assert dit_shape_from_config(dit_config(variant, "real"), variant) == shape


@pytest.mark.parametrize("size", LM_SIZES)
def test_every_lm_size_is_budgeted_to_the_byte_with_the_audio_code_vocabulary(size: str) -> None:
    with torch.device("meta"):
        lm = build_lm(size).to(torch.bfloat16)
    assert lm.config.vocab_size == LM_VOCAB == 217_204
    assert _bytes(lm) == lm_weight_bytes(LM_SHAPES[size], dtype="bf16")
    assert lm_shape_from_config(lm.config.to_dict()) == LM_SHAPES[size]


def test_text_encoder_and_vae_are_counted_from_their_configs() -> None:
    with torch.device("meta"):
        text = build_text_encoder("real").to(torch.bfloat16)
    assert _bytes(text) == lm_weight_bytes(TEXT_ENCODER_SHAPE, dtype="bf16")
    for size in ("tiny", "real"):
        vae = build_vae(size)
        shape = vae_shape_from_config(model_config("vae", size))
        assert sum(p.numel() for p in vae.parameters()) == shape.params
        normed = [m for m in vae.modules() if hasattr(m, "weight_g")]
        decoder = [m for m in vae.decoder.modules() if hasattr(m, "weight_g")]
        assert sum(m.weight.numel() for m in decoder) == shape.decoder_conv_weights
        assert sum(m.weight.numel() for m in normed) == shape.decoder_conv_weights + shape.encoder_conv_weights
    assert vae_shape_from_config(model_config("vae", "real")) == VAE_SHAPE


@pytest.mark.parametrize("variant", ["turbo", "xl-sft"])
def test_a_tiny_config_is_counted_without_torch_as_the_build_holds_it(variant: str) -> None:
    config = dit_config(variant, "tiny")
    dit = dit_from_config(config)
    assert sum(p.numel() for p in dit.parameters()) == dit_shape_from_config(config).params


def _names_from_fixture(config: dict, xl: bool) -> set[str]:
    data = json.loads(NAMES.read_text(encoding="utf-8"))
    names = set(data["once"]) | (set(data["xl_once"]) if xl else set())
    layer = data["decoder_layer"]
    names |= {f"{layer['prefix'].format(i=i)}.{n}" for i in range(config[layer["count"]]) for n in layer["names"]}
    for group in data["encoder_layers"]:
        count = config[group["count"]]
        names |= {f"{group['prefix'].format(i=i)}.{n}" for i in range(count) for n in data["encoder_layer_names"]}
    return names


@pytest.mark.parametrize("variant", ["turbo", "xl-turbo"])
def test_the_real_files_tensor_names_are_the_builds_names(variant: str) -> None:
    """acestep.cpp reads these names from the real files; our real-size build, mapped to the original names,
    holds exactly them (plus the 2B timbre encoder's special token, which acestep.cpp reads only on XL)."""
    config = dit_config(variant, "real")
    with torch.device("meta"):
        dit = dit_from_config(config)
    ours = {dit_original_name(name) for name in dit.state_dict() if not name.endswith("silence_latent")}
    expected = _names_from_fixture(config, xl=variant.startswith("xl-"))
    assert ours - expected == (set() if variant.startswith("xl-") else {"encoder.timbre_encoder.special_token"})
    assert expected - ours == set()
    assert len(expected) == (829 if variant.startswith("xl-") else 676)


def test_the_plans_components_are_the_meta_builds_to_the_byte() -> None:
    """``plan --dit X --lm S --json``'s memory.components against the loader's classes built on the meta device."""
    from acestep_core import DetectOptions, GenerationRequest, resolve

    builds = {}
    with torch.device("meta"):
        for variant in DIT_MODELS:
            builds[variant] = _bytes(dit_from_config(dit_config(variant, "real")).to(torch.bfloat16))
        for size in LM_SIZES:
            builds[size] = _bytes(build_lm(size).to(torch.bfloat16))
        text, vae = _bytes(build_text_encoder("real").to(torch.bfloat16)), _bytes(build_vae("real").to(torch.bfloat16))
    for variant, size in zip(DIT_MODELS, [*LM_SIZES, *LM_SIZES], strict=True):
        request = GenerationRequest(duration_s=60, dit_model=variant, lm_model=size)
        resolution = resolve(request, detect_options=DetectOptions(vram_gb="80", environ={}), environ={})
        components = resolution.plan.value("memory.components")
        assert {c: row["dtype"] for c, row in components.items()} == dict.fromkeys(components, "bf16")
        assert components["dit"]["weight_bytes"] == builds[variant], variant
        assert components["lm"]["weight_bytes"] == builds[size], size
        assert components["text_encoder"]["weight_bytes"] == text and components["vae"]["weight_bytes"] == vae
