"""ACE-Step 1.5's checkpoint folders as users have them: what each holds, read without torch.

Pure Python (``json`` only): ``acestep-core models`` and ``plan --checkpoints DIR`` read a folder
here, and the loader (:mod:`acestep_core.runtime.models.loader`) reads the same headers before it reads a
byte of weights. Sources of the facts below:

- **safetensors**: an 8-byte little-endian header length, a JSON header (``name → {dtype, shape,
  data_offsets}`` and an optional ``__metadata__``), then the tensors' bytes (huggingface/safetensors'
  format description).
- **Folder names**: upstream's downloader unpacks into ``checkpoints/`` as ``acestep-v15-<variant>/``,
  ``vae/``, ``Qwen3-Embedding-0.6B/``, ``acestep-5Hz-lm-<size>/`` (``ACESTEP_CHECKPOINTS_DIR`` names the
  folder; diffusers' ``scripts/convert_ace_step_to_diffusers.py`` reads the same names).
- **The DiT's original layout** (``config.json`` with ``model_type: acestep``; one ``model.safetensors``,
  or for XL four fp32 shards with ``model.safetensors.index.json``; ``silence_latent.pt``) and its mapping
  onto diffusers' classes: diffusers' ``scripts/convert_ace_step_to_diffusers.py`` at commit ``58eb52c``
  (2026-08): ``decoder.`` → the transformer (``proj_in.1.`` → ``proj_in_conv.``, ``proj_out.1.`` →
  ``proj_out_conv.``), ``encoder.`` and ``null_condition_emb`` → the condition encoder, ``tokenizer.`` →
  the audio tokenizer, ``detokenizer.`` → the audio-token detokenizer, and in all four the attention
  renames of :data:`ATTENTION_RENAMES`; XL's condition encoder, tokenizer and detokenizer take the
  ``encoder_*`` widths.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from acestep_core.record import Record
from acestep_core.vocabulary import (
    CHECKPOINTS_ENV,
    DIT_FOLDERS,
    DIT_MODELS,
    DIT_PREFIX,
    LM_FOLDERS,
    LM_PREFIX,
    MIB,
    QWEN3_VOCAB,
    TEXT_ENCODER_FOLDER,
    VAE_FOLDER,
)

__all__ = [
    "CHECKPOINTS_ENV",
    "DIT_FOLDERS",
    "LM_FOLDERS",
    "TEXT_ENCODER_FOLDER",
    "VAE_FOLDER",
    "Catalogue",
    "CheckpointError",
    "FoundModel",
    "SafetensorsFile",
    "Sniffed",
    "TensorInfo",
    "catalogue",
    "checkpoints_dir",
    "describe_folder",
    "dit_module_name",
    "dit_original_name",
    "dit_part_configs",
    "read_safetensors_header",
    "scan",
    "sniff",
    "weight_files",
]

# --------------------------------------------------------------------------------------------- names
DIFFUSERS_SUFFIX = "-diffusers"
TURBO_FAMILY = ("turbo-shift1", "turbo-shift3", "turbo-continuous")
"""Upstream's other turbo DiTs: the 2B turbo's architecture and one forward a step (budgeted as ``turbo``)."""

SAFETENSORS_ITEM_BYTES: Mapping[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}  # fmt: skip
WEIGHT_DTYPES = ("F32", "BF16", "F16")
"""What a checkpoint's weights may be stored as (ACE-Step ships bf16, XL fp32); anything else is refused."""
DTYPE_NAMES: Mapping[str, str] = {"F32": "fp32", "BF16": "bf16", "F16": "fp16"}
MAX_HEADER_BYTES = 100 * MIB
"""A safetensors header larger than this is not one (the real 2B DiT's is about 100 KB)."""

ATTENTION_RENAMES: tuple[tuple[str, str], ...] = (
    (".q_proj.", ".to_q."),
    (".k_proj.", ".to_k."),
    (".v_proj.", ".to_v."),
    (".o_proj.", ".to_out.0."),
    (".q_norm.", ".norm_q."),
    (".k_norm.", ".norm_k."),
)
"""Original → diffusers attention tensor names, in every part of the DiT (diffusers' converter)."""
DIT_PARTS: tuple[tuple[str, str, str], ...] = (
    ("decoder.", "", "transformer"),
    ("encoder.", "condition_encoder.", "condition_encoder"),
    ("tokenizer.", "audio_tokenizer.", "audio_tokenizer"),
    ("detokenizer.", "audio_token_detokenizer.", "audio_token_detokenizer"),
)
"""(prefix in the original file, prefix in :class:`AceStepDiT`'s state dict, diffusers' subfolder)."""
NULL_CONDITION = "null_condition_emb"
SILENCE_LATENT_FILE = "silence_latent.pt"
SILENCE_LATENT_KEY = "condition_encoder.silence_latent"


class CheckpointError(ValueError):
    """A folder or file that cannot be loaded as it is: one message naming the file and what is wrong."""


# --------------------------------------------------------------------------------------------- safetensors
class TensorInfo(Record):
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int
    """Byte offsets in the data region (after the header)."""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start


class SafetensorsFile(Record):
    path: str
    header_bytes: int
    tensors: Mapping[str, TensorInfo]
    file_bytes: int

    @property
    def data_start(self) -> int:
        return 8 + self.header_bytes


def read_safetensors_header(path: str | Path) -> SafetensorsFile:
    """The header of a ``.safetensors`` file, checked against the file: a missing, truncated, or malformed
    file, or a header whose offsets disagree with its shapes, raises :class:`CheckpointError` naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: {size} bytes is too short for a safetensors file (truncated?)")
            length = int.from_bytes(prefix, "little")
            if length > MAX_HEADER_BYTES or 8 + length > size:
                raise CheckpointError(
                    f"{path}: not a safetensors file, or truncated (its header claims {length:,} bytes of "
                    f"{size:,} in the file)"
                )
            raw = handle.read(length)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a safetensors file") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON: {error})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    tensors: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        tensors[name] = _tensor_info(path, name, entry)
    spans = sorted((info.start, info.end) for info in tensors.values())
    cursor = 0
    for start, end in spans:
        if start != cursor:
            raise CheckpointError(f"{path}: corrupt header (tensor data overlaps or leaves a gap at byte {start:,})")
        cursor = end
    data_bytes = size - 8 - length
    if cursor > data_bytes:
        raise CheckpointError(
            f"{path}: truncated: it holds {data_bytes:,} bytes of tensor data of the {cursor:,} its header lists "
            "(an interrupted download? fetch the file again)"
        )
    return SafetensorsFile(str(path), length, tensors, size)


def _tensor_info(path: Path, name: str, entry: Any) -> TensorInfo:
    problem = f"{path}: corrupt header entry {name!r}"
    if not isinstance(entry, dict):
        raise CheckpointError(problem)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_ITEM_BYTES:
        raise CheckpointError(f"{problem}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise CheckpointError(f"{problem}: shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise CheckpointError(f"{problem}: data_offsets {offsets!r}")
    info = TensorInfo(str(dtype), tuple(shape), offsets[0], offsets[1])
    if info.numel * SAFETENSORS_ITEM_BYTES[info.dtype] != info.nbytes:
        raise CheckpointError(f"{problem}: {info.nbytes} bytes for a {info.dtype} tensor of shape {list(shape)}")
    return info


def weight_files(folder: str | Path, stem: str = "model") -> list[SafetensorsFile]:
    """The weights of one model folder: ``<stem>.safetensors``, or the shards ``<stem>.safetensors.index.json``
    lists (each checked to hold exactly the tensors the index gives it). ``stem`` is ``model``
    (transformers, ACE-Step's DiT) or ``diffusion_pytorch_model`` (diffusers)."""
    folder = Path(folder)
    single = folder / f"{stem}.safetensors"
    index = folder / f"{stem}.safetensors.index.json"
    if single.is_file():
        return [read_safetensors_header(single)]
    if not index.is_file():
        raise CheckpointError(f"{folder}: no {single.name} and no {index.name} (no weights in this folder)")
    weight_map = _read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no weight_map")
    by_shard: dict[str, set[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(str(shard), set()).add(str(name))
    missing = [shard for shard in sorted(by_shard) if not (folder / shard).is_file()]
    if missing:
        raise CheckpointError(
            f"{folder}: missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} of the "
            f"{len(by_shard)} {index.name} lists (an interrupted download? fetch the folder again)"
        )
    files = []
    for shard in sorted(by_shard):
        header = read_safetensors_header(folder / shard)
        listed, held = by_shard[shard], set(header.tensors)
        if listed != held:
            extra, absent = sorted(held - listed), sorted(listed - held)
            raise CheckpointError(
                f"{folder / shard}: disagrees with {index.name}: "
                + "; ".join(
                    part
                    for part in (
                        f"holds {_names(extra)} it does not list" if extra else "",
                        f"lacks {_names(absent)} it lists" if absent else "",
                    )
                    if part
                )
            )
        files.append(header)
    return files


def check_weight_dtypes(files: list[SafetensorsFile]) -> None:
    """Refuse a weight stored as anything but fp32 / bf16 / fp16 (an integer or fp8 file is not a checkpoint
    this loader casts: it would be silently wrong)."""
    for file in files:
        wrong = {name: info.dtype for name, info in file.tensors.items() if info.dtype not in WEIGHT_DTYPES}
        if wrong:
            name, dtype = next(iter(wrong.items()))
            raise CheckpointError(
                f"{file.path}: {name} is stored as {dtype}"
                + (f" (and {len(wrong) - 1} more tensors are not floating point)" if len(wrong) > 1 else "")
                + f"; weights must be {', '.join(WEIGHT_DTYPES)} (a quantized or corrupt file?)"
            )


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


# --------------------------------------------------------------------------------------------- the DiT's names
def dit_module_name(original: str) -> str | None:
    """The name in :class:`AceStepDiT`'s state dict of a tensor of the original DiT file, or None when the
    name belongs to no part (diffusers' converter mapping, module docstring)."""
    if original == NULL_CONDITION:
        return f"condition_encoder.{NULL_CONDITION}"
    for prefix, target, _ in DIT_PARTS:
        if original.startswith(prefix):
            name = original[len(prefix) :]
            if not target:
                name = name.replace("proj_in.1.", "proj_in_conv.").replace("proj_out.1.", "proj_out_conv.")
            for old, new in ATTENTION_RENAMES:
                name = name.replace(old, new)
            return target + name
    return None


def dit_original_name(module: str) -> str:
    """The original file's name of a tensor of :class:`AceStepDiT`'s state dict (the inverse of
    :func:`dit_module_name`)."""
    if module == f"condition_encoder.{NULL_CONDITION}":
        return NULL_CONDITION
    for prefix, target, _ in reversed(DIT_PARTS):
        if target and module.startswith(target):
            name, original_prefix = module[len(target) :], prefix
            break
    else:
        name, original_prefix = module, "decoder."
        name = name.replace("proj_in_conv.", "proj_in.1.").replace("proj_out_conv.", "proj_out.1.")
    for old, new in ATTENTION_RENAMES:
        name = name.replace(new, old)
    return original_prefix + name


def dit_part_configs(original: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """diffusers' constructor arguments for each part of an original DiT ``config.json`` (the converter's
    rules: XL's ``encoder_*`` widths for the condition encoder, tokenizer and detokenizer)."""
    try:
        hidden = original["hidden_size"]
        encoder_hidden = original.get("encoder_hidden_size") or hidden
        encoder_intermediate = original.get("encoder_intermediate_size") or original["intermediate_size"]
        encoder_heads = original.get("encoder_num_attention_heads") or original["num_attention_heads"]
        encoder_kv_heads = original.get("encoder_num_key_value_heads") or original["num_key_value_heads"]
        shared = {
            "head_dim": original["head_dim"],
            "rope_theta": original.get("rope_theta", 1000000.0),
            "attention_bias": original.get("attention_bias", False),
            "attention_dropout": original.get("attention_dropout", 0.0),
            "rms_norm_eps": original.get("rms_norm_eps", 1e-6),
            "sliding_window": original.get("sliding_window", 128),
        }
        layers = original["num_hidden_layers"]
        layer_types = original.get("layer_types") or [
            "sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)
        ]
        pooler_layers = original.get("num_attention_pooler_hidden_layers", 2)
        encoder_widths = {
            "hidden_size": encoder_hidden,
            "intermediate_size": encoder_intermediate,
            "num_attention_heads": encoder_heads,
            "num_key_value_heads": encoder_kv_heads,
        }
        codec = {
            **encoder_widths,
            "audio_acoustic_hidden_dim": original["audio_acoustic_hidden_dim"],
            "pool_window_size": original.get("pool_window_size", 5),
            "num_attention_pooler_hidden_layers": pooler_layers,
            **shared,
            "layer_types": list(layer_types[:pooler_layers]),
        }
        return {
            "transformer": {
                "hidden_size": hidden,
                "intermediate_size": original["intermediate_size"],
                "num_hidden_layers": layers,
                "num_attention_heads": original["num_attention_heads"],
                "num_key_value_heads": original["num_key_value_heads"],
                "in_channels": original["in_channels"],
                "audio_acoustic_hidden_dim": original["audio_acoustic_hidden_dim"],
                "patch_size": original["patch_size"],
                **shared,
                "layer_types": list(layer_types),
                "encoder_hidden_size": encoder_hidden,
                "is_turbo": bool(original.get("is_turbo", False)),
                "model_version": original.get("model_version"),
            },
            "condition_encoder": {
                **encoder_widths,
                "text_hidden_dim": original["text_hidden_dim"],
                "timbre_hidden_dim": original["timbre_hidden_dim"],
                "num_lyric_encoder_hidden_layers": original["num_lyric_encoder_hidden_layers"],
                "num_timbre_encoder_hidden_layers": original["num_timbre_encoder_hidden_layers"],
                **shared,
            },
            "audio_tokenizer": {
                **codec,
                "fsq_dim": original.get("fsq_dim") or encoder_hidden,
                "fsq_input_levels": list(original.get("fsq_input_levels") or [8, 8, 8, 5, 5, 5]),
                "fsq_input_num_quantizers": original.get("fsq_input_num_quantizers", 1),
            },
            "audio_token_detokenizer": codec,
        }
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"the DiT's config.json lacks {error} (not an ACE-Step 1.5 DiT config?)") from None


# --------------------------------------------------------------------------------------------- folders
COMPONENT_OF_LAYOUT: Mapping[str, str] = {
    "original": "dit",
    "original-sharded": "dit",
    "diffusers": "dit",
    "vae": "vae",
    "text_encoder": "text_encoder",
    "lm": "lm",
}


class Sniffed(Record):
    """What a folder is, from its files alone: ``layout`` (``original``, ``original-sharded``, ``diffusers``,
    ``vae``, ``text_encoder`` or ``lm``) and the component it provides."""

    path: str
    layout: str
    config: Mapping[str, Any]

    @property
    def component(self) -> str:
        return COMPONENT_OF_LAYOUT[self.layout]


def sniff(folder: str | Path) -> Sniffed:
    """Which kind of checkpoint ``folder`` holds; :class:`CheckpointError` for a folder of something else."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder")
    if (folder / "model_index.json").is_file():
        index = _read_json(folder / "model_index.json")
        if "transformer" not in index or not (folder / "transformer" / "config.json").is_file():
            raise CheckpointError(
                f"{folder}: a diffusers pipeline without a transformer/ (model_index.json: "
                f"{index.get('_class_name', '?')}); expected ACE-Step's AceStepPipeline"
            )
        return Sniffed(str(folder), "diffusers", _read_json(folder / "transformer" / "config.json"))
    config_path = folder / "config.json"
    if not config_path.is_file():
        held = ", ".join(sorted(p.name for p in folder.iterdir())[:6]) or "nothing"
        raise CheckpointError(
            f"{folder}: not an ACE-Step checkpoint folder (no config.json or model_index.json; it holds {held})"
        )
    config = _read_json(config_path)
    model_type = config.get("model_type")
    class_name = config.get("_class_name")
    if model_type == "acestep":
        sharded = not (folder / "model.safetensors").is_file() and (folder / "model.safetensors.index.json").is_file()
        return Sniffed(str(folder), "original-sharded" if sharded else "original", config)
    if class_name == "AutoencoderOobleck":
        return Sniffed(str(folder), "vae", config)
    if model_type == "qwen3":
        return Sniffed(str(folder), "lm" if _is_lm(folder, config) else "text_encoder", config)
    what = class_name or model_type or "no model_type"
    raise CheckpointError(
        f"{folder}: not an ACE-Step 1.5 component (config.json describes {what}; expected model_type 'acestep' "
        "or 'qwen3', or diffusers' AutoencoderOobleck)"
    )


def _is_lm(folder: Path, config: Mapping[str, Any]) -> bool:
    """The 5Hz LM or the text encoder (both ``model_type: qwen3``): by upstream's folder name, else by the
    vocabulary (the LM's holds the audio-code tokens beyond Qwen3's 151,936 rows)."""
    if folder.name.startswith(LM_PREFIX):
        return True
    if folder.name.startswith("Qwen3-Embedding"):
        return False
    return int(config.get("vocab_size", 0)) > QWEN3_VOCAB


AUDIO_CODE = re.compile(r"<\|audio_code_(\d+)\|>")


def variant_of(folder: str | Path, transformer_config: Mapping[str, Any]) -> str:
    """The DiT variant a folder holds: upstream's folder name (``acestep-v15-xl-sft`` → ``xl-sft``, also with
    ``-diffusers``), else the config (``is_turbo``; XL when the condition encoder is narrower than the DiT)."""
    name = Path(folder).name.removesuffix(DIFFUSERS_SUFFIX)
    if name.startswith(DIT_PREFIX):
        variant = name[len(DIT_PREFIX) :]
        if variant in DIT_MODELS or variant in TURBO_FAMILY:
            return variant
    hidden = transformer_config.get("hidden_size")
    encoder = transformer_config.get("encoder_hidden_size") or hidden
    xl = "xl-" if encoder != hidden else ""
    return f"{xl}turbo" if transformer_config.get("is_turbo") else f"{xl}base"


def budgeted_as(variant: str) -> str:
    """The ``--dit`` name a variant is budgeted as (``turbo-shift3`` → ``turbo``)."""
    return "turbo" if variant in TURBO_FAMILY else variant


# --------------------------------------------------------------------------------------------- a checkpoints folder
class FoundModel(Record):
    """One component folder of a checkpoints folder, as ``acestep-core models`` lists it."""

    component: str
    """``dit``, ``lm``, ``text_encoder`` or ``vae``."""
    name: str
    """The DiT variant (``turbo``, ``xl-sft``), the LM size (``1.7B``), or the folder's name."""
    path: str
    layout: str
    parameters: int
    """Elements of every tensor the weight files hold (the baked silence latent excluded)."""
    dtypes: tuple[str, ...]
    """On-disk dtypes of the weights (``bf16``, ``fp32``)."""
    bytes: int
    """Bytes of tensor data in the weight files."""
    files: tuple[str, ...]
    config: Mapping[str, Any]
    problem: str | None = None
    """Why the folder cannot load (a truncated file, a missing shard, a config that disagrees), or None."""
    audio_codes: int | None = None
    """LM only: the ``<|audio_code_N|>`` tokens its tokenizer holds."""


def describe_folder(folder: str | Path) -> FoundModel:
    """What one component folder holds (:class:`CheckpointError` for a folder that is no component)."""
    sniffed = sniff(folder)
    folder = Path(sniffed.path)
    config = dict(sniffed.config)
    try:
        files = _component_files(folder, sniffed.layout)
        check_weight_dtypes(files)
        problem = None
    except CheckpointError as error:
        files, problem = [], str(error)
    tensors = [(name, info) for file in files for name, info in file.tensors.items()]
    parameters = sum(info.numel for name, info in tensors if not name.endswith("silence_latent"))
    if sniffed.layout == "diffusers":
        config = {"transformer": config, **_diffusers_part_configs(folder)}
    name = _component_name(folder, sniffed.layout, sniffed.config)
    if problem is None:
        problem = _count_problem(sniffed.layout, config, parameters)
    codes = _audio_code_count(folder) if sniffed.layout == "lm" else None
    return FoundModel(
        component=sniffed.component,
        name=name,
        path=str(folder),
        layout=sniffed.layout,
        parameters=parameters,
        dtypes=tuple(sorted({DTYPE_NAMES.get(info.dtype, info.dtype) for _, info in tensors})),
        bytes=sum(info.nbytes for _, info in tensors),
        files=tuple(file.path for file in files),
        config=config,
        problem=problem,
        audio_codes=codes,
    )


def _component_files(folder: Path, layout: str) -> list[SafetensorsFile]:
    if layout == "diffusers":
        files = []
        for _, _, part in DIT_PARTS:
            if part == "transformer" or (folder / part).is_dir():
                files += weight_files(folder / part, "diffusion_pytorch_model")
        return files
    return weight_files(folder, "diffusion_pytorch_model" if layout == "vae" else "model")


def _diffusers_part_configs(folder: Path) -> dict[str, Any]:
    return {
        part: _read_json(folder / part / "config.json")
        for _, _, part in DIT_PARTS[1:]
        if (folder / part / "config.json").is_file()
    }


def _component_name(folder: Path, layout: str, config: Mapping[str, Any]) -> str:
    if COMPONENT_OF_LAYOUT[layout] == "dit":
        return variant_of(folder, config if layout == "diffusers" else dit_part_configs(config)["transformer"])
    if layout == "lm" and folder.name.startswith(LM_PREFIX):
        return folder.name[len(LM_PREFIX) :]
    return folder.name


def _count_problem(layout: str, config: Mapping[str, Any], parameters: int) -> str | None:
    """A config whose shapes do not add up to the weights' element count (counted without torch)."""
    from acestep_core.optimize.components import expected_parameters

    expected = expected_parameters(layout, config)
    if expected is None or expected == parameters:
        return None
    return (
        f"config.json describes {expected:,} parameters, the weights hold {parameters:,} "
        "(a config from another model, or edited weights?)"
    )


def _audio_code_count(folder: Path) -> int | None:
    for name in ("added_tokens.json", "tokenizer.json"):
        path = folder / name
        if path.is_file():
            return len(set(AUDIO_CODE.findall(path.read_text(encoding="utf-8", errors="replace"))))
    return None


class Catalogue(Record):
    """Every component folder found under a checkpoints folder, and the folders that are none."""

    root: str
    models: tuple[FoundModel, ...]
    skipped: tuple[tuple[str, str], ...] = ()
    """(folder, why) for folders that hold no ACE-Step component."""

    def find(self, component: str, name: str | None = None) -> FoundModel | None:
        """The folder for ``component`` (a DiT variant, an LM size), preferring upstream's original layout and
        top-level folders (a diffusers pipeline's own ``vae/`` last)."""
        found = [m for m in self.models if m.component == component and (name is None or m.name == name)]
        found.sort(key=lambda m: (m.layout == "diffusers", len(Path(m.path).parts)))
        return found[0] if found else None

    def missing(self, dit: str, lm: str | None) -> list[str]:
        """Upstream's folder names a run of ``dit`` (and the LM ``lm``, if any) needs and this folder lacks."""
        wanted = [("dit", dit, DIT_FOLDERS.get(dit, DIT_PREFIX + dit)), ("vae", None, VAE_FOLDER)]
        wanted.append(("text_encoder", None, TEXT_ENCODER_FOLDER))
        if lm is not None:
            wanted.append(("lm", lm, LM_FOLDERS.get(lm, LM_PREFIX + lm)))
        return [folder for component, name, folder in wanted if self.find(component, name) is None]


def scan(root: str | Path) -> Catalogue:
    """Every ACE-Step component under ``root``: upstream's folders (``acestep-v15-*``, ``vae``,
    ``Qwen3-Embedding-0.6B``, ``acestep-5Hz-lm-*``), diffusers pipelines (their ``vae/`` and
    ``text_encoder/`` too), or ``root`` itself when it is one component folder."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a folder")
    models: list[FoundModel] = []
    skipped: list[tuple[str, str]] = []
    candidates = [root] if _looks_like_component(root) else sorted(p for p in root.iterdir() if p.is_dir())
    for folder in candidates:
        try:
            found = describe_folder(folder)
        except CheckpointError as error:
            skipped.append((str(folder), str(error)))
            continue
        models.append(found)
        if found.layout == "diffusers":
            models += _pipeline_extras(folder)
    return Catalogue(str(root), tuple(models), tuple(skipped))


def _looks_like_component(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "model_index.json").is_file()


def _pipeline_extras(folder: Path) -> Iterator[FoundModel]:
    for part in ("vae", "text_encoder"):
        if (folder / part / "config.json").is_file():
            try:
                yield describe_folder(folder / part)
            except CheckpointError:
                continue


@cache
def _scan_cached(root: str, stamp: tuple[tuple[str, float], ...]) -> Catalogue:
    return scan(root)


def catalogue(root: str | Path) -> Catalogue:
    """:func:`scan`, remembered for the process until a component folder's ``config.json`` changes."""
    root = Path(root)
    stamp = tuple(
        (str(p), p.stat().st_mtime) for p in sorted(root.glob("*/config.json")) + sorted(root.glob("config.json"))
    )
    return _scan_cached(str(root), stamp)


def checkpoints_dir(flag: str | None, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The checkpoints folder and, where the environment named a bad one, the warning: ``--checkpoints``
    wins (checked by the caller: a usage error), ``ACESTEP_CHECKPOINTS_DIR`` is forgiven (one warning)."""
    if flag:
        return flag, None
    value = environ.get(CHECKPOINTS_ENV, "").strip()
    if not value:
        return None, None
    if not os.path.isdir(value):
        return None, f"{CHECKPOINTS_ENV}={value!r} is not a folder; ignored"
    return value, None


def folder_problem(path: str) -> str | None:
    """Why ``--checkpoints PATH`` cannot be used, or None."""
    if not os.path.exists(path):
        return "no such folder"
    if not os.path.isdir(path):
        return "is not a folder"
    if not os.access(path, os.R_OK | os.X_OK):
        return "cannot be read"
    return None
