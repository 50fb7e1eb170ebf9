"""The words every part of acestep-core shares, defined once: units, components and phases, LM sizes,
audio rates, the optimization values and the plan's keys with the type and range of each value.

Pure Python and import-free (``typing`` only), so any module, plugin or tool may import it at
start-up. A value that appears here must not be written again elsewhere, under any name
(``tests/test_vocabulary.py`` compares the values of every package and benchmark with these).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, get_args

from acestep_core.record import Record

# --------------------------------------------------------------------------------------------- units
MIB = 1024**2
GIB = 1024**3
"""Tier tables and ``MAX_CUDA_VRAM`` speak "GB"; the upstream document means GiB, and so do we."""

# --------------------------------------------------------------------------------------------- the pipeline
Component = Literal["lm", "text_encoder", "dit", "vae"]
COMPONENTS: tuple[Component, ...] = get_args(Component)
"""The pipeline's components, in the order they run; each is also a memory phase of the same name."""
PHASES: tuple[Component, ...] = COMPONENTS
"""The memory phases (one per component, in the same order)."""

LmSize = Literal["0.6B", "1.7B", "4B"]
LM_SIZES: tuple[LmSize, ...] = get_args(LmSize)
"""The 5Hz LM sizes ACE-Step 1.5 ships, smallest first."""

DitModel = Literal["turbo", "base", "sft", "xl-turbo", "xl-base", "xl-sft"]
DIT_MODELS: tuple[DitModel, ...] = get_args(DitModel)
"""ACE-Step 1.5's DiTs: the 2B (24 layers, hidden 2048) and the XL (32 layers, hidden 2560, upstream's
Gradio default since 2026-04) in turbo (CFG-distilled: one forward a step), base and sft (two: CFG)."""
DEFAULT_DIT: DitModel = "turbo"
"""The DiT a request gets when it names none and the tier allows it (upstream's default 2B turbo)."""
CFG_DITS: tuple[DitModel, ...] = ("base", "sft", "xl-base", "xl-sft")
"""DiTs that run classifier-free guidance: a conditional and an unconditional forward every step."""

# --------------------------------------------------------------------------------------------- checkpoints
CHECKPOINTS_ENV = "ACESTEP_CHECKPOINTS_DIR"
"""Upstream's variable naming the checkpoints folder (``--checkpoints`` wins over it)."""
DIT_PREFIX = "acestep-v15-"
LM_PREFIX = "acestep-5Hz-lm-"
VAE_FOLDER = "vae"
TEXT_ENCODER_FOLDER = "Qwen3-Embedding-0.6B"
DIT_FOLDERS: Mapping[str, str] = {variant: DIT_PREFIX + variant for variant in DIT_MODELS}
"""``--dit`` name → upstream's folder (``turbo`` → ``acestep-v15-turbo``, ``xl-sft`` → ``acestep-v15-xl-sft``)."""
LM_FOLDERS: Mapping[str, str] = {size: LM_PREFIX + size for size in LM_SIZES}
"""LM size → upstream's folder (``1.7B`` → ``acestep-5Hz-lm-1.7B``)."""

QWEN3_VOCAB = 151_936
"""Qwen3's own embedding rows (transformers' ``Qwen3Config`` default)."""
QWEN3_TOKENS = 151_669
"""Tokens of Qwen3's tokenizer: Qwen3-Embedding-0.6B's ``vocab_size`` (the text encoder's rows)."""
AUDIO_CODE_BASE = QWEN3_TOKENS
"""The id of ``<|audio_code_0|>`` in the 5Hz LM's tokenizer: the codes follow Qwen3's own tokens."""
AUDIO_CODE_COUNT = 65_535
"""``<|audio_code_N|>`` tokens the 5Hz LM's tokenizer appends (its FSQ codebook uses the first 64,000)."""
LM_VOCAB = AUDIO_CODE_BASE + AUDIO_CODE_COUNT
LM_VOCAB_SOURCE = (
    "217,204 rows = 151,669 (first audio-code id) + 65,535 <|audio_code_N|> tokens: acestep.cpp src/prompt.h "
    "(AUDIO_CODE_BASE, AUDIO_CODE_COUNT) and src/qwen3-lm.h (vocab_size 217204), commit fa33775"
)
"""The 5Hz LM's vocabulary when no checkpoint says otherwise, and where the figure comes from."""

LmMode = Literal["auto", "on", "off"]
LM_MODES: tuple[LmMode, ...] = get_args(LmMode)

# --------------------------------------------------------------------------------------------- audio
SAMPLE_RATE = 48_000
"""Hz, stereo."""
VAE_HOP = 1920
"""Audio samples per latent frame."""
LATENT_RATE_HZ = SAMPLE_RATE // VAE_HOP
"""Latent frames a second of audio (25)."""
CODES_PER_SECOND = 5
"""Audio codes the 5Hz LM writes per second of audio."""
MIN_DURATION_S = 10
MAX_DURATION_S = 600
"""The durations ACE-Step 1.5 generates: no table limit, override or adjusted request leaves [10, 600]
except that an override may raise the maximum (its purpose)."""

# --------------------------------------------------------------------------------------------- device
CUDA_CONTEXT_BYTES = 808 * MIB
"""Device memory the CUDA context takes outside the allocator (H100, torch 2.x: 527 MiB at init,
808 MiB after the first convolution; ``acestep_core/optimize/measurements/h100-context-2026-11-26.json``)."""
SAFETY_MARGIN_BYTES = 512 * MIB
"""Device memory left unused on purpose (upstream's 0.5 GB margin)."""

SIMULATION_VARIABLES: Mapping[str, str] = {"MAX_CUDA_VRAM": "cuda", "MAX_MPS_VRAM": "mps", "MAX_XPU_VRAM": "xpu"}
"""The variables that simulate a device of a given size (GB), in the order they win, with the backend
each simulates."""

# --------------------------------------------------------------------------------------------- optimization values
Quantization = Literal["none", "int8", "int4", "fp8"]
QUANTIZATIONS: tuple[Quantization, ...] = get_args(Quantization)
"""Weight formats: what tier tables and the ladder speak; ``quantization.scheme.<c>`` says how a backend stores them."""
QuantBackend = Literal["torchao", "quanto"]
QUANT_BACKENDS: tuple[QuantBackend, ...] = get_args(QuantBackend)
"""The quantizers: torchao (what upstream ACE-Step runs) and optimum-quanto (in maintenance mode)."""
QuantScheme = Literal["none", "int8_weight_only", "w8a8_dynamic", "fp8_weight_only", "qint8", "qfloat8", "qint4"]
QUANT_SCHEMES: tuple[QuantScheme, ...] = get_args(QuantScheme)
"""How a component's Linear weights are stored: torchao's ``int8_weight_only``, ``w8a8_dynamic`` (int8 weights
and dynamically quantized int8 activations), ``fp8_weight_only``; quanto's ``qint8``, ``qfloat8``, ``qint4``."""
QUANT_SCHEME_FORMATS: Mapping[str, str] = {
    "none": "none",
    "int8_weight_only": "int8",
    "w8a8_dynamic": "int8",
    "fp8_weight_only": "fp8",
    "qint8": "int8",
    "qfloat8": "fp8",
    "qint4": "int4",
}
"""The weight format each scheme stores (what ``quantization.<c>`` says when ``quantization.scheme.<c>`` is set)."""
QUANTIZED_COMPONENTS: tuple[Component, ...] = ("lm", "text_encoder", "dit")
"""The components whose Linear layers are quantized (the VAE is convolutions: it has none)."""
Offload = Literal["none", "model", "group", "sequential", "release"]
OFFLOADS: tuple[Offload, ...] = get_args(Offload)
Attention = Literal["flash_attention_2", "sdpa", "eager"]
ATTENTIONS: tuple[Attention, ...] = get_args(Attention)
DitAttention = Literal["flash", "native", "_native_math"]
DIT_ATTENTIONS: tuple[DitAttention, ...] = get_args(DitAttention)
Precision = Literal["bf16", "fp16", "fp32"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
LmBackend = Literal["vllm", "pt", "mlx"]
LM_BACKENDS: tuple[LmBackend, ...] = get_args(LmBackend)
"""The LM's inference backends: vLLM (NVIDIA CUDA ≥ 7.0), transformers (pt), MLX (Apple silicon)."""
VaeDecode = Literal["full", "tiled"]
VAE_DECODES: tuple[VaeDecode, ...] = get_args(VaeDecode)
VAE_TILE_FRAMES = 256
"""Latent frames a VAE tile (10.24 s of audio)."""
VAE_TILE_OVERLAP = 32
"""Latent frames of context decoded on each side of a tile and cropped away."""


# --------------------------------------------------------------------------------------------- plan keys
class PlanKey(Record):
    """One optimization-plan key: what it means, the type and range of its value, and whether a user
    may set it (``--set``, ``Overrides.plan``) or only the plan computes it (memory figures, ladder)."""

    description: str
    kind: Literal["choice", "bool", "int", "float", "str-list", "mapping", "false-or-mapping"]
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    nullable: bool = False
    settable: bool = True

    def __str__(self) -> str:
        return self.description

    def check(self, value: Any) -> str | None:
        """None when ``value`` is of this key's type and range, else what is wrong, in words."""
        if value is None:
            return None if self.nullable else f"None is not {self.expected()}"
        if self.kind == "choice":
            return (
                None
                if _hashable(value) and value in self.choices and not isinstance(value, bool)
                else (f"{value!r} is not {self.expected()}")
            )
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"{value!r} is not {self.expected()}"
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                return f"{value!r} is not {self.expected()}"
            return self._range(value)
        if self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return f"{value!r} is not {self.expected()}"
            return self._range(value)
        if self.kind == "str-list":
            ok = isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)
            return None if ok else f"{value!r} is not {self.expected()}"
        if self.kind == "mapping":
            return None if isinstance(value, Mapping) else f"{value!r} is not {self.expected()}"
        ok = value is False or isinstance(value, Mapping)
        return None if ok else f"{value!r} is not {self.expected()}"

    def expected(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        words = {
            "bool": "true or false",
            "int": "an integer",
            "float": "a finite number",
            "str-list": "a list of strings",
            "mapping": "a mapping",
            "false-or-mapping": "false or a mapping",
        }[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return words + (f" {' and '.join(bounds)}" if bounds else "") + (" or None" if self.nullable else "")

    def _range(self, value: float) -> str | None:
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            return f"{value!r} is not {self.expected()}"
        return None


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _per_component(prefix: str, key: PlanKey, components: tuple[str, ...] = COMPONENTS) -> dict[str, PlanKey]:
    return {
        f"{prefix}.{c}": PlanKey(
            key.description.format(c=c.replace("_", " "), key=c),
            key.kind,
            key.choices,
            key.minimum,
            key.maximum,
            key.nullable,
            key.settable,
        )
        for c in components
    }


PLAN_KEYS: Mapping[str, PlanKey] = {
    "attention": PlanKey("attention backend: 'flash_attention_2', 'sdpa' or 'eager'", "choice", ATTENTIONS),
    "attention.dit": PlanKey(
        "the DiT's diffusers attention backend (set_attention_backend): 'flash', 'native' (SDPA) or '_native_math'",
        "choice",
        DIT_ATTENTIONS,
    ),
    "compile": PlanKey("torch.compile the DiT (and LM where it helps): true / false", "bool"),
    "lm.gpu_memory_ratio": PlanKey(
        "fraction of device memory the LM (weights + KV cache) may take, 0-1", "float", minimum=0.01, maximum=1.0
    ),
    "lm.backend": PlanKey(
        "the LM's inference backend: 'vllm' (NVIDIA CUDA ≥ 7.0, installed), 'mlx' (Apple silicon, mlx-lm installed) "
        "or 'pt' (transformers); a choice the device cannot run is refused with the reason",
        "choice",
        LM_BACKENDS,
    ),
    **_per_component("precision", PlanKey("compute dtype of the {c}: 'bf16', 'fp16' or 'fp32'", "choice", PRECISIONS)),
    **_per_component(
        "offload",
        PlanKey(
            "CPU offload of the {c}: 'none', 'model' (between phases), 'group', 'sequential', or 'release' "
            "(freed after its phase, built again for the next run: unified memory, where moving it to the CPU "
            "frees nothing)",
            "choice",
            OFFLOADS,
        ),
    ),
    **_per_component(
        "quantization",
        PlanKey("weight quantization of the {c}: 'none', 'int8', 'int4', 'fp8'", "choice", QUANTIZATIONS),
    ),
    **_per_component(
        "quantization.exclude",
        PlanKey("module-name patterns (fnmatch) left unquantized in the {c}, e.g. ['lm_head']", "str-list"),
        QUANTIZED_COMPONENTS,
    ),
    "quantization.backend": PlanKey(
        "the quantizer: 'torchao' (what upstream ACE-Step runs; the default where installed) or 'quanto' "
        "(optimum-quanto, in maintenance mode; the default where torchao is missing); a backend that is not "
        "installed is refused with the reason",
        "choice",
        QUANT_BACKENDS,
    ),
    **_per_component(
        "quantization.scheme",
        PlanKey(
            "how the {c}'s Linear weights are stored: 'none'; torchao's 'int8_weight_only', 'w8a8_dynamic' (int8 "
            "activations too; the default below compute capability 7.0), 'fp8_weight_only' (sm_89+, only when asked); "
            "quanto's 'qint8', 'qfloat8', 'qint4'. Derived from quantization.{key} and quantization.backend unless "
            "set; setting it sets quantization.{key} to its format",
            "choice",
            QUANT_SCHEMES,
        ),
        QUANTIZED_COMPONENTS,
    ),
    **_per_component(
        "quantization.quality",
        PlanKey(
            "the measured quality of the {c}'s scheme against bf16 (SNR in dB, the LM's next-token agreement, "
            "'lossy' below 20 dB on the DiT, and the measurement's source), or false when not quantized or not "
            "measured",
            "false-or-mapping",
            settable=False,
        ),
        QUANTIZED_COMPONENTS,
    ),
    "vae.decode": PlanKey("VAE decode: 'full' (the whole clip at once) or 'tiled'", "choice", VAE_DECODES),
    "vae.tile_frames": PlanKey(f"latent frames a VAE tile ({LATENT_RATE_HZ} a second of audio)", "int", minimum=1),
    "vae.tile_overlap": PlanKey(
        "latent frames of context decoded on each side of a tile and cropped away", "int", minimum=0
    ),
    "memory.phases": PlanKey(
        "predicted peak device memory per phase (GiB): lm, text_encoder, dit, vae; None on a CPU (not predicted)",
        "mapping",
        nullable=True,
        settable=False,
    ),
    "memory.components": PlanKey(
        "what each component the run loads holds: component → {model, parameters, weight_bytes (parameters and "
        "buffers in its dtype, before quantization), dtype, source} (the LM's also its vocabulary, the DiT's its "
        "forwards a step; over several devices each also its device)",
        "mapping",
        settable=False,
    ),
    "dit.forwards_per_step": PlanKey(
        "DiT forwards a denoising step: 1 (turbo: guidance distilled), 2 (base, sft: classifier-free guidance, "
        "run as one forward of twice the batch)",
        "int",
        minimum=1,
        maximum=2,
        settable=False,
    ),
    "memory.predicted_peak_gib": PlanKey(
        "the largest phase's predicted peak (GiB); None on a CPU (not predicted)",
        "float",
        minimum=0,
        nullable=True,
        settable=False,
    ),
    "memory.budget_gib": PlanKey(
        "memory the run may use (GiB): total − CUDA context − margin on a GPU (below 0 on a device smaller than "
        "those); working set − host reserve − margin on unified memory; the host's available memory on a CPU "
        "(None when unread)",
        "float",
        nullable=True,
        settable=False,
    ),
    "ladder.rungs": PlanKey(
        "the rungs taken to fit the budget, in order (each with its reason)", "str-list", settable=False
    ),
    "ladder.lm_model": PlanKey(
        "present when the ladder changed the LM to fit: the smaller size to run, or None (the LM off)",
        "choice",
        LM_SIZES,
        nullable=True,
        settable=False,
    ),
    "memory.devices": PlanKey(
        "present when the components run on several devices: each device's components, predicted peak per phase, "
        "peak and budget (GiB)",
        "mapping",
        settable=False,
    ),
    "memory.corrections": PlanKey(
        "present when this device's recorded runs corrected the prediction: phase → the runs behind its correction",
        "mapping",
        settable=False,
    ),
    "placement": PlanKey(
        "which device runs each component: component → device (cuda:N), UUID and name; chosen with --place / "
        "resolve(place=...), not --set",
        "mapping",
        settable=False,
    ),
    "memory.forced": PlanKey(
        "present when the user forced a plan predicted over budget (--force / force=True): its numbers",
        "mapping",
        settable=False,
    ),
    "ladder.batch_size": PlanKey(
        "present when the ladder lowered the batch to fit: the batch to run (1 .. the adjusted batch)",
        "int",
        minimum=1,
    ),
    "ladder.duration_s": PlanKey(
        "present when the ladder shortened the clip to fit: the longest duration to run (s, up to the adjusted one)",
        "float",
        minimum=MIN_DURATION_S,
    ),
    "ladder.refused": PlanKey(
        "false, or the numbers of a run that cannot fit: predicted, budget and shortfall (GiB and bytes), phase",
        "false-or-mapping",
    ),
}
"""The optimization plan's keys, each with the type and range of its value. A plugin may add keys of
its own, prefixed with its name (``myplugin.x``); any other unknown key is refused. A user may set
the ladder's keys only to lower the run further (checked against the adjusted request when resolving)
or to force a refusal; the memory figures are the plan's own."""
