"""Tiny checkpoints written in ACE-Step 1.5's real layouts, by code (nothing is downloaded).

Each writer builds the real class from a tiny config with seeded random weights, writes it the way the
real folder is written, and returns the module it wrote, so a test can load the folder back and compare
forwards bit for bit::

    python -m acestep_core.runtime.models.fixtures OUT            # a checkpoints folder as users have it
    python -m acestep_core.runtime.models.fixtures OUT --all      # every DiT variant and layout

Layouts (:mod:`acestep_core.checkpoints` gives the sources): ``acestep-v15-<variant>/`` (``config.json``
with ``model_type: acestep`` and an ``auto_map`` naming remote code that raises if ever imported, one
bf16 ``model.safetensors`` with the original prefixes and attention names, ``silence_latent.pt``
``[1, 64, 15000]`` fp32); ``acestep-v15-xl-<variant>/`` as four fp32 shards with
``model.safetensors.index.json``; ``<name>-diffusers/`` as diffusers' converter writes it; ``vae/``;
``Qwen3-Embedding-0.6B/`` (no ``model.`` prefix); ``acestep-5Hz-lm-<size>/`` (``model.`` prefix, tied head
left out, a ``tokenizer.json`` with the 65,535 ``<|audio_code_N|>`` tokens of the real one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging
from safetensors.torch import save_file

from acestep_core.checkpoints import (
    DIFFUSERS_SUFFIX,
    DIT_FOLDERS,
    DIT_PARTS,
    LM_FOLDERS,
    SILENCE_LATENT_FILE,
    SILENCE_LATENT_KEY,
    TEXT_ENCODER_FOLDER,
    VAE_FOLDER,
    dit_original_name,
    dit_part_configs,
)
from acestep_core.runtime.models import (
    build_lm,
    build_text_encoder,
    build_tokenizer,
    build_vae,
    dit_config,
    dit_from_config,
    model_config,
)
from acestep_core.vocabulary import AUDIO_CODE_COUNT, DIT_MODELS

REMOTE_CODE = 'raise RuntimeError("acestep-core must never run remote code")\n'
XL_SHARDS = 4


def _seeded(seed: int) -> None:
    torch.manual_seed(seed)


def _randomise_buffers(model: torch.nn.Module, seed: int) -> None:
    """Give zero-initialised tensors (the silence latent, Snake's alpha/beta) values, so that a wrong
    transposition or a dropped tensor changes the forward."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if tensor.is_floating_point() and (name.endswith("silence_latent") or not tensor.any()):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)


def write_dit(
    folder: str | Path,
    variant: str = "turbo",
    *,
    layout: str | None = None,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    size: str = "tiny",
    config: Mapping[str, Any] | None = None,
) -> Any:
    """Write DiT ``variant`` in ``layout`` (``original``; ``original-sharded``, the XL default: four fp32
    shards; ``diffusers``), from ``config`` (an original ``config.json``) or the variant's at ``size``.
    Returns the :class:`AceStepDiT` written (in the written dtype)."""
    folder = Path(folder)
    config = dict(config) if config is not None else dit_config(variant, size)
    layout = layout or ("original-sharded" if variant.startswith("xl-") else "original")
    dtype = dtype or (torch.float32 if layout == "original-sharded" else torch.bfloat16)
    _seeded(seed)
    model: Any = dit_from_config(config)
    before = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # diffusers warns at every dtype cast of a model it did not load
    try:
        model = model.to(dtype).eval()
    finally:
        diffusers_logging.set_verbosity(before)
    _randomise_buffers(model, seed)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    silence = state.pop(SILENCE_LATENT_KEY)
    if layout == "diffusers":
        _write_diffusers_dit(folder, config, state, silence)
        return model
    original = {dit_original_name(name): tensor for name, tensor in state.items()}
    stored = dict(config, dtype={torch.float32: "float32", torch.bfloat16: "bfloat16"}.get(dtype, "float16"))
    modeling = f"modeling_acestep_v15_{'turbo' if variant.endswith('turbo') else 'base'}"
    stored["auto_map"] = {
        "AutoConfig": "configuration_acestep_v15.AceStepConfig",
        "AutoModel": f"{modeling}.AceStepConditionGenerationModel",
    }
    _write_json(folder / "config.json", stored)
    for name in ("configuration_acestep_v15.py", f"{modeling}.py"):
        (folder / name).write_text(REMOTE_CODE, encoding="utf-8")
    torch.save(silence.float().transpose(1, 2).contiguous(), folder / SILENCE_LATENT_FILE)
    if layout == "original-sharded":
        _write_shards(folder, original, XL_SHARDS)
    else:
        save_file(original, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return model


def _write_shards(folder: Path, state: Mapping[str, torch.Tensor], shards: int) -> None:
    """``model-0000N-of-0000M.safetensors`` + ``model.safetensors.index.json``, split by bytes in order."""
    total = sum(t.numel() * t.element_size() for t in state.values())
    groups: list[dict[str, torch.Tensor]] = [{} for _ in range(shards)]
    running = 0
    for name, tensor in state.items():
        groups[min(shards - 1, running * shards // max(total, 1))][name] = tensor
        running += tensor.numel() * tensor.element_size()
    weight_map: dict[str, str] = {}
    for index, group in enumerate(groups, 1):
        file = f"model-{index:05d}-of-{shards:05d}.safetensors"
        save_file(group, str(folder / file), metadata={"format": "pt"})
        weight_map |= dict.fromkeys(group, file)
    _write_json(folder / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def _write_diffusers_dit(
    folder: Path, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], silence: torch.Tensor
) -> None:
    parts = dit_part_configs(config)
    classes = {
        "transformer": "AceStepTransformer1DModel",
        "condition_encoder": "AceStepConditionEncoder",
        "audio_tokenizer": "AceStepAudioTokenizer",
        "audio_token_detokenizer": "AceStepAudioTokenDetokenizer",
    }
    index: dict[str, Any] = {"_class_name": "AceStepPipeline", "_diffusers_version": "0.42.1"}
    for _, prefix, part in reversed(DIT_PARTS):
        taken = {n: t for n, t in state.items() if (n.startswith(prefix) if prefix else True)}
        state = {n: t for n, t in state.items() if n not in taken}
        tensors = {n[len(prefix) :]: t for n, t in taken.items()}
        if part == "condition_encoder":
            tensors["silence_latent"] = silence
        (folder / part).mkdir(exist_ok=True)
        _write_json(folder / part / "config.json", {"_class_name": classes[part], **parts[part]})
        save_file(tensors, str(folder / part / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
        index[part] = ["diffusers", classes[part]]
    _write_json(folder / "model_index.json", index)


def write_vae(folder: str | Path, *, seed: int = 1) -> Any:
    """``vae/``: diffusers' ``AutoencoderOobleck`` (config.json + diffusion_pytorch_model.safetensors)."""
    _seeded(seed)
    vae = build_vae("tiny")
    _randomise_buffers(vae, seed)
    vae.save_pretrained(str(folder), safe_serialization=True)
    return vae.eval()


def write_text_encoder(folder: str | Path, *, seed: int = 2, prefixed: bool = False) -> Any:
    """``Qwen3-Embedding-0.6B/``: a ``Qwen3Model`` (no ``model.`` prefix unless ``prefixed``) and its tokenizer."""
    folder = Path(folder)
    _seeded(seed)
    encoder = build_text_encoder("tiny")
    config = {**model_config("text_encoder", "tiny"), "model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"]}
    state = {("model." if prefixed else "") + n: t.contiguous() for n, t in encoder.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "config.json", config)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(0).save(str(folder / "tokenizer.json"))
    return encoder.eval()


def write_lm(folder: str | Path, *, seed: int = 3, prefixed: bool = True, codes: int = AUDIO_CODE_COUNT) -> Any:
    """``acestep-5Hz-lm-<size>/``: a tiny ``Qwen3ForCausalLM`` whose tokenizer holds ``codes``
    ``<|audio_code_N|>`` tokens (65,535 as the real one) and whose embedding has a row for each."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_lm_tokenizer(folder / "tokenizer.json", codes)
    _seeded(seed)
    lm = build_lm("tiny", vocab_size=vocab)
    config = {**model_config("lm", "tiny"), "vocab_size": vocab, "model_type": "qwen3"}
    config["architectures"] = ["Qwen3ForCausalLM"]
    state = {n: t.contiguous() for n, t in lm.state_dict().items() if n != "lm_head.weight"}
    if not prefixed:
        state = {n.removeprefix("model."): t for n, t in state.items()}
    _write_json(folder / "config.json", config)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return lm.eval()


def write_lm_tokenizer(path: Path, codes: int) -> int:
    """The embedded character tokenizer with ``codes`` audio-code tokens appended, written as JSON directly
    (adding 65,535 tokens through the library takes 20 s; reading them back 0.5 s). Returns its size."""
    data = json.loads(build_tokenizer(0).to_str())
    first = max(token["id"] for token in data["added_tokens"]) + 1
    data["added_tokens"] += [
        {
            "id": first + index,
            "content": f"<|audio_code_{index}|>",
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for index in range(codes)
    ]
    path.write_text(json.dumps(data), encoding="utf-8")
    return first + codes


def write_checkpoints(
    root: str | Path, *, dits: tuple[str, ...] = ("turbo",), lms: tuple[str, ...] = ("0.6B",), diffusers: bool = False
) -> dict[str, Any]:
    """A checkpoints folder as upstream's downloader leaves it: each DiT in ``dits``, ``vae/``,
    ``Qwen3-Embedding-0.6B/``, each LM in ``lms`` (the tiny LM under the real size's name); with
    ``diffusers``, also ``acestep-v15-<first DiT>-diffusers/``. Returns folder name → module written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    for index, variant in enumerate(dits):
        written[DIT_FOLDERS[variant]] = write_dit(root / DIT_FOLDERS[variant], variant, seed=10 + index)
    written[VAE_FOLDER] = write_vae(root / VAE_FOLDER)
    written[TEXT_ENCODER_FOLDER] = write_text_encoder(root / TEXT_ENCODER_FOLDER)
    for index, size in enumerate(lms):
        written[LM_FOLDERS[size]] = write_lm(root / LM_FOLDERS[size], seed=20 + index)
    if diffusers and dits:
        name = DIT_FOLDERS[dits[0]] + DIFFUSERS_SUFFIX
        written[name] = write_dit(root / name, dits[0], layout="diffusers", seed=10)
        shutil.copytree(root / VAE_FOLDER, root / name / "vae")
        shutil.copytree(root / TEXT_ENCODER_FOLDER, root / name / "text_encoder")
    return written


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write tiny ACE-Step 1.5 checkpoints in the real layouts")
    parser.add_argument("out", help="the checkpoints folder to write (must not exist)")
    parser.add_argument("--all", action="store_true", help="every DiT variant (XL sharded) and a diffusers copy")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        parser.error(f"{out} exists; give a new folder")
    started = time.perf_counter()
    written = write_checkpoints(
        out,
        dits=DIT_MODELS if args.all else ("turbo",),
        lms=("0.6B", "1.7B") if args.all else ("0.6B",),
        diffusers=args.all,
    )
    print(f"wrote {len(written)} folders into {out} in {time.perf_counter() - started:.1f} s: {', '.join(written)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
