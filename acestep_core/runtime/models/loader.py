"""Load ACE-Step 1.5's checkpoints as users have them into diffusers' and transformers' classes.

One entry point, :func:`load_checkpoint`: it sniffs the folder (:func:`acestep_core.checkpoints.sniff`) and
loads, without remote code,

- a DiT in the **original layout** (``config.json`` with ``model_type: acestep``, ``model.safetensors`` or
  XL's fp32 shards with ``model.safetensors.index.json``, ``silence_latent.pt``) or in the **diffusers
  layout** (``model_index.json``, ``transformer/``, ``condition_encoder/``, optional ``audio_tokenizer/`` and
  ``audio_token_detokenizer/``) into :class:`~acestep_core.runtime.models.AceStepDiT`;
- the VAE (``AutoencoderOobleck``), the text encoder (``Qwen3Model``, with or without the ``model.``
  prefix) and the 5Hz LM (``Qwen3ForCausalLM``, with or without the ``model.`` prefix) with their
  tokenizers (``tokenizer.json``; the LM's holds the ``<|audio_code_N|>`` tokens).

Strict: every tensor the class expects is in the files and every tensor in the files is expected, each of
the shape the config gives, stored as fp32 / bf16 / fp16 — else one :class:`CheckpointError` naming what
is wrong, raised **before a byte of weights is read**, and nothing of the model is left in memory.

Host memory is bounded: the model is built without weights (accelerate's ``init_empty_weights``), then
each tensor is read from the file into its own buffer, cast to ``dtype`` and placed; at most one source
tensor exists beside the cast weights (``python benchmarks/bench_checkpoints.py`` measures an fp32 → bf16
sharded load against its bf16 size).
"""

from __future__ import annotations

import gc
import json
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from io import BufferedReader
from pathlib import Path
from typing import Any

import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderOobleck
from tokenizers import Tokenizer
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model

from acestep_core.checkpoints import (
    AUDIO_CODE,
    DIT_PARTS,
    SILENCE_LATENT_FILE,
    SILENCE_LATENT_KEY,
    CheckpointError,
    SafetensorsFile,
    Sniffed,
    check_weight_dtypes,
    dit_module_name,
    dit_part_configs,
    sniff,
    variant_of,
    weight_files,
)
from acestep_core.runtime.models import AceStepDiT, _torch_dtype

TORCH_DTYPES: Mapping[str, torch.dtype] = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
LISTED = 5
"""Names shown in a message before "and N more"."""

__all__ = ["CheckpointError", "LoadedCheckpoint", "load_checkpoint"]


@dataclass
class LoadedCheckpoint:
    """A loaded component: the model (on the CPU, ``eval()``), its tokenizer where it has one, and what was read."""

    component: str
    """``dit``, ``lm``, ``text_encoder`` or ``vae``."""
    model: Any
    path: str
    layout: str
    name: str
    """The DiT variant, the LM's folder name, ..."""
    tokenizer: Tokenizer | None = None
    config: Mapping[str, Any] = field(default_factory=dict)
    tensors: int = 0
    bytes_read: int = 0
    seconds: float = 0.0


def load_checkpoint(path: str | Path, *, component: str | None = None, dtype: Any = None) -> LoadedCheckpoint:
    """Load the checkpoint folder ``path`` (any layout above) on the CPU.

    :param component: what the caller expects (``dit``, ``lm``, ``text_encoder``, ``vae``): a folder of
        another component is refused by name.
    :param dtype: cast every weight to it while reading (``"bf16"``, ``torch.bfloat16``, ...); None keeps
        each weight's on-disk dtype.
    :raises CheckpointError: with one message; nothing of the model stays in memory.
    """
    started = time.perf_counter()
    try:
        loaded = _load(Path(path), component, _torch_dtype(dtype))
    except CheckpointError as error:
        message = str(error)
    except (OSError, RuntimeError, ValueError) as error:
        message = f"{path}: reading the checkpoint failed: {type(error).__name__}: {error}"
    else:
        loaded.seconds = time.perf_counter() - started
        return loaded
    # raised outside the except clauses: no traceback keeps the half-built model's frames alive
    gc.collect()
    raise CheckpointError(message)


def _load(folder: Path, component: str | None, dtype: torch.dtype | None) -> LoadedCheckpoint:
    sniffed = sniff(folder)
    if component is not None and sniffed.component != component:
        raise CheckpointError(
            f"{folder}: holds a {sniffed.component.replace('_', ' ')} ({sniffed.layout} layout), not a "
            f"{component.replace('_', ' ')}"
        )
    loader = {
        "original": _load_dit_original,
        "original-sharded": _load_dit_original,
        "diffusers": _load_dit_diffusers,
        "vae": _load_vae,
        "text_encoder": _load_qwen3,
        "lm": _load_qwen3,
    }[sniffed.layout]
    return loader(folder, sniffed, dtype)


# --------------------------------------------------------------------------------------------- the DiT
def _load_dit_original(folder: Path, sniffed: Sniffed, dtype: torch.dtype | None) -> LoadedCheckpoint:
    config = dict(sniffed.config)
    parts = dit_part_configs(config)
    files = weight_files(folder, "model")
    check_weight_dtypes(files)
    silence = _silence_latent(folder / SILENCE_LATENT_FILE, parts["condition_encoder"]["timbre_hidden_dim"])
    model = _empty(
        lambda: AceStepDiT(
            condition_encoder=parts["condition_encoder"],
            audio_tokenizer=parts["audio_tokenizer"],
            audio_token_detokenizer=parts["audio_token_detokenizer"],
            **parts["transformer"],
        )
    )
    sources = [(file, dit_module_name) for file in files]
    count, read = _fill(model, sources, dtype, extra={SILENCE_LATENT_KEY: silence}, where=str(folder))
    name = variant_of(folder, parts["transformer"])
    return LoadedCheckpoint("dit", model.eval(), str(folder), sniffed.layout, name, None, config, count, read)


def _load_dit_diffusers(folder: Path, sniffed: Sniffed, dtype: torch.dtype | None) -> LoadedCheckpoint:
    parts: dict[str, dict[str, Any]] = {}
    sources: list[tuple[SafetensorsFile, Callable[[str], str | None]]] = []
    for _, prefix, part in DIT_PARTS:
        sub = folder / part
        if not (sub / "config.json").is_file():
            if part in ("transformer", "condition_encoder"):
                raise CheckpointError(f"{folder}: a diffusers ACE-Step pipeline without {part}/config.json")
            continue
        parts[part] = {k: v for k, v in _json(sub / "config.json").items() if not k.startswith("_")}
        files = weight_files(sub, "diffusion_pytorch_model")
        check_weight_dtypes(files)
        sources += [(file, _prefixed(prefix)) for file in files]
    extra = {}
    if not any(rename(name) == SILENCE_LATENT_KEY for file, rename in sources for name in file.tensors):
        extra[SILENCE_LATENT_KEY] = _silence_latent(
            folder / SILENCE_LATENT_FILE, parts["condition_encoder"].get("timbre_hidden_dim", 64)
        )
    model = _empty(
        lambda: AceStepDiT(
            condition_encoder=parts["condition_encoder"],
            audio_tokenizer=parts.get("audio_tokenizer"),
            audio_token_detokenizer=parts.get("audio_token_detokenizer"),
            **parts["transformer"],
        )
    )
    count, read = _fill(model, sources, dtype, extra=extra, where=str(folder))
    name = variant_of(folder, parts["transformer"])
    return LoadedCheckpoint("dit", model.eval(), str(folder), "diffusers", name, None, parts, count, read)


def _silence_latent(path: Path, channels: int) -> torch.Tensor:
    """upstream's ``silence_latent.pt`` ``[1, channels, T]``, as the condition encoder holds it ``[1, T, channels]``."""
    if not path.is_file():
        raise CheckpointError(
            f"{path.parent}: no {SILENCE_LATENT_FILE} (the VAE-encoded silence the timbre encoder reads when no "
            "reference audio is given; it ships beside model.safetensors)"
        )
    try:
        tensor = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch.load raises anything from a corrupt zip to pickle errors
        raise CheckpointError(f"{path}: not a tensor file torch can read safely ({type(error).__name__})") from None
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 3 or tensor.shape[1] != channels:
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CheckpointError(f"{path}: holds {shape}, expected a tensor [1, {channels}, frames]")
    return tensor.transpose(1, 2).contiguous()


# --------------------------------------------------------------------------------------------- VAE, Qwen3
def _load_vae(folder: Path, sniffed: Sniffed, dtype: torch.dtype | None) -> LoadedCheckpoint:
    config = {k: v for k, v in sniffed.config.items() if not k.startswith("_")}
    files = weight_files(folder, "diffusion_pytorch_model")
    check_weight_dtypes(files)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*is deprecated", category=FutureWarning)
        try:
            model = _empty(lambda: AutoencoderOobleck(**config))
        except TypeError as error:
            raise CheckpointError(f"{folder}/config.json: not an AutoencoderOobleck config ({error})") from None
    count, read = _fill(model, [(file, _same) for file in files], dtype, where=str(folder))
    return LoadedCheckpoint("vae", model.eval(), str(folder), "vae", folder.name, None, config, count, read)


def _load_qwen3(folder: Path, sniffed: Sniffed, dtype: torch.dtype | None) -> LoadedCheckpoint:
    config = dict(sniffed.config)
    lm = sniffed.layout == "lm"
    files = weight_files(folder, "model")
    check_weight_dtypes(files)
    tokenizer = _tokenizer(folder, config, lm=lm)
    qwen_config = Qwen3Config(**{k: v for k, v in config.items() if k not in ("architectures", "torch_dtype", "dtype")})
    qwen_config._attn_implementation = "sdpa"
    model = _empty(lambda: Qwen3ForCausalLM(qwen_config) if lm else Qwen3Model(qwen_config))
    names = {name for file in files for name in file.tensors}
    prefixed = any(name.startswith("model.") for name in names)
    if lm:
        rename = _same if prefixed else (lambda name: name if name == "lm_head.weight" else f"model.{name}")
    else:
        rename = (lambda name: name.removeprefix("model.")) if prefixed else _same
    tied = ["lm_head.weight"] if lm and qwen_config.tie_word_embeddings else []
    count, read = _fill(model, [(file, rename) for file in files], dtype, where=str(folder), tied=tied, after=_tie)
    name = folder.name
    return LoadedCheckpoint(
        sniffed.layout, model.eval(), str(folder), sniffed.layout, name, tokenizer, config, count, read
    )


def _tokenizer(folder: Path, config: Mapping[str, Any], *, lm: bool) -> Tokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no tokenizer.json (the tokenizer ships with the model's weights)")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # noqa: BLE001 - the tokenizers library raises its own exception types
        raise CheckpointError(f"{path}: not a tokenizer the tokenizers library can read ({error})") from None
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    rows = int(config.get("vocab_size", 0))
    largest = max(vocab.values(), default=-1)
    if largest >= rows:
        raise CheckpointError(
            f"{path}: token id {largest} is beyond the embedding's {rows} rows (config.json's vocab_size): "
            "a tokenizer of another model?"
        )
    if lm and not any(AUDIO_CODE.fullmatch(token) for token in vocab):
        raise CheckpointError(f"{path}: no <|audio_code_N|> tokens: not the 5Hz LM's tokenizer")
    return tokenizer


# --------------------------------------------------------------------------------------------- strict filling
def _same(name: str) -> str:
    return name


def _prefixed(prefix: str) -> Callable[[str], str | None]:
    return lambda name: prefix + name


def _tie(model: Any) -> None:
    """A tied LM head is the embedding: one tensor, as transformers ties it."""
    model.lm_head.weight = model.model.embed_tokens.weight


def _empty(build: Callable[[], Any]) -> Any:
    """The model with its parameters on the meta device (no memory) and its buffers real (computed ones,
    such as rotary frequencies and the FSQ's levels, keep their values)."""
    with init_empty_weights(include_buffers=False):
        return build()


def _fill(
    model: torch.nn.Module,
    sources: Iterable[tuple[SafetensorsFile, Callable[[str], str | None]]],
    dtype: torch.dtype | None,
    *,
    where: str,
    extra: Mapping[str, torch.Tensor] | None = None,
    tied: Iterable[str] = (),
    after: Callable[[Any], None] | None = None,
) -> tuple[int, int]:
    """Check the files' tensors against ``model``'s state dict (names, shapes), then read each tensor, cast it
    to ``dtype`` and place it. Returns (tensors, bytes read)."""
    sources = list(sources)
    extra = dict(extra or {})
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items() if name not in tied}
    found: dict[str, tuple[SafetensorsFile, str]] = {}
    unexpected: list[str] = []
    for file, rename in sources:
        for name in file.tensors:
            target = rename(name)
            if target is None or target not in expected or target in extra:
                unexpected.append(name)
            else:
                found[target] = (file, name)
    missing = sorted(set(expected) - set(found) - set(extra))
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: its tensors do not match the model its config describes: "
            + "; ".join(
                part
                for part in (
                    f"{len(missing)} missing ({_listed(missing)})" if missing else "",
                    f"{len(unexpected)} unexpected ({_listed(sorted(unexpected))})" if unexpected else "",
                )
                if part
            )
        )
    wrong = [
        f"{name} is {list(file.tensors[original].shape)}, the config gives {list(expected[name])}"
        for name, (file, original) in found.items()
        if tuple(file.tensors[original].shape) != expected[name]
    ]
    wrong += [
        f"{name} is {list(tensor.shape)}, the config gives {list(expected[name])}"
        for name, tensor in extra.items()
        if name != SILENCE_LATENT_KEY and tuple(tensor.shape) != expected[name]
    ]
    if wrong:
        raise CheckpointError(
            f"{where}: config.json disagrees with the weights: {len(wrong)} tensor(s) of another shape "
            f"({'; '.join(wrong[:3])}{' …' if len(wrong) > 3 else ''})"
        )
    count = read = 0
    for file, _ in sources:
        state = {}
        wanted = sorted(
            ((target, name) for target, (owner, name) in found.items() if owner is file),
            key=lambda item: file.tensors[item[1]].start,
        )
        with open(file.path, "rb") as handle:
            for target, name in wanted:
                state[target] = _read_tensor(handle, file, name, dtype)
                read += file.tensors[name].nbytes
        model.load_state_dict(state, strict=False, assign=True)
        count += len(state)
        del state
    if extra:
        # in the weights' dtype, as diffusers' converter bakes the silence latent
        like = dtype or next((p.dtype for p in model.parameters() if not p.is_meta), None)
        model.load_state_dict({k: v.to(like) for k, v in extra.items()}, strict=False, assign=True)
    if tied and after is not None:
        after(model)
    still_empty = [name for name, p in model.named_parameters() if p.is_meta]
    if still_empty:
        raise CheckpointError(f"{where}: {len(still_empty)} parameter(s) not filled ({_listed(still_empty)})")
    return count + len(extra), read


def _read_tensor(handle: BufferedReader, file: SafetensorsFile, name: str, dtype: torch.dtype | None) -> torch.Tensor:
    """One tensor, read into its own buffer (no memory map: the file's pages never count against this
    process) and cast to ``dtype``: at most one source tensor exists beside the cast weights."""
    info = file.tensors[name]
    buffer = bytearray(info.nbytes)
    handle.seek(file.data_start + info.start)
    if handle.readinto(buffer) != info.nbytes:
        raise CheckpointError(f"{file.path}: truncated while reading {name}")
    source = TORCH_DTYPES[info.dtype]
    tensor = torch.frombuffer(buffer, dtype=source) if info.nbytes else torch.empty(0, dtype=source)
    tensor = tensor.reshape(info.shape)
    if dtype is not None and dtype != source:
        return tensor.to(dtype)
    return tensor


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer (tied ones once)."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += tensor.numel() * tensor.element_size()
    return total
