"""Quantization, decided without torch: which backend and scheme each component gets and why, the exact
bytes a scheme leaves a component holding, and the measured quality of each scheme.

Pure Python: packages are found with ``importlib.util.find_spec`` (the caller's ``find``), never imported.

**Backends.** torchao is what upstream ACE-Step runs (``Int8WeightOnlyConfig`` by default,
``Int8DynamicActivationInt8WeightConfig(act_mapping_type=ASYMMETRIC)`` below compute capability 7.0,
``Float8WeightOnlyConfig`` when asked, on the DiT's decoder Linear layers); optimum-quanto (``qint8``,
``qfloat8``, ``qint4`` weights) is in maintenance mode. The plan takes torchao where it is installed and
quanto where it is not; ``quantization.backend`` chooses, ``quantization.scheme.<c>`` names the scheme.

**Bytes.** A quantized ``Linear(out, in)`` holds its weight's data (1 byte a weight, ½ for int4) and, per
output row (or per group of a row), its scales and zero points or shifts; quanto's modules also keep two
scalar buffers (``input_scale``, ``output_scale``). The layouts below were read off the tensors each
backend builds (``tests/test_quantization.py`` compares every scheme with what a quantized module holds,
on tiny and real-size builds, in bf16, fp16 and fp32):

=================  ========================================================================================
int8_weight_only   torchao 0.18 ``Int8Tensor``: int8 data, a float32 scale and an int8 zero point a row
w8a8_dynamic       the same weight tensor (activations are quantized at every call, not stored)
fp8_weight_only    torchao ``Float8Tensor``: float8_e4m3fn data, a float32 scale a row
qint8, qfloat8     quanto ``WeightQBytesTensor``: int8 / float8 data, a scale a row in the weight's dtype
qint4              quanto ``WeightQBitsTensor``: two weights a byte, a scale and a shift in the weight's
                   dtype per group of 128 inputs (smaller groups by 32 down to 32 when 128 does not
                   divide the inputs; one per row when nothing does, or the row has ≤ 128 inputs)
=================  ========================================================================================

torchao 0.16 (upstream's pin, built for torch 2.10) stores int8 weight-only differently: a scale a row in
the weight's dtype and an int64 zero point (measured here on torch 2.13: 10 bytes a row in bf16 against
0.18's 5); the data bytes, which are > 99 % of the total, are the same.

**Quality.** Each scheme's output SNR against bf16 on the tiny real-class DiT, LM and text encoder over
fixed inputs (and the LM's next-token agreement) is a measurement shipped as data:
``acestep_core/optimize/measurements/quality/`` (written by ``benchmarks/bench_quant.py --write``). A DiT
scheme under :data:`LOSSY_BELOW_DB` is marked lossy in the plan, with its figure.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acestep_core.record import Record
from acestep_core.types import DeviceMemory, MemoryReading, OptimizationPlan, Setting
from acestep_core.vocabulary import QUANT_SCHEME_FORMATS, QUANTIZED_COMPONENTS

if TYPE_CHECKING:
    from acestep_core.optimize.memory import DiTShape, LMShape

Finder = Callable[[str], bool]

TORCHAO_REQUIREMENT = "torchao>=0.18,<0.19"
"""The torchao acestep-core installs (the ``ml`` extra): 0.18 is the release built for torch ≥ 2.11 (its
extensions are ABI-stable); upstream pins ``torchao>=0.16,<0.17``, built for torch 2.10, which on torch
2.13 skips its C++ extensions (the three schemes here do not need them)."""
FP8_MIN_CAPABILITY = (8, 9)
"""fp8 tensor cores: Ada (8.9) and Hopper (9.0) onwards."""
W8A8_BELOW_CAPABILITY = (7, 0)
"""Upstream quantizes activations too (``w8a8_dynamic``) below compute capability 7.0."""
QUANTO_INT4_GROUP = 128
LOSSY_BELOW_DB = 20.0
"""A DiT scheme whose output SNR against bf16 is below this is marked lossy in the plan."""
QUALITY_FILE = "quantization-cpu.json"
QUALITY_DIR = Path(__file__).parent / "measurements" / "quality"
CORE = "acestep_core"
"""The ``plugin`` of the settings that follow a user's quantization keys."""

DEFAULT_EXCLUDE: Mapping[str, tuple[str, ...]] = {
    "lm": ("lm_head",),
    "text_encoder": (),
    "dit": (
        "time_embed*",
        "time_embed_r*",
        "condition_embedder",
        "condition_encoder.*",
        "audio_tokenizer.*",
        "audio_token_detokenizer.*",
    ),
}
"""Module-name patterns left in the compute dtype (``quantization.exclude.<c>``). The LM's lm_head is tied to
its embedding. In the DiT, upstream quantizes the decoder's Linear layers only (its ``_apply_dit_quantization``
keeps names under ``decoder.`` and none with a ``tokenizer`` / ``detokenizer`` part): not the condition encoder
(it runs once a generation) nor the audio tokenizer and detokenizer (the codes' path, once a generation; the
FSQ's projections read its code book). acestep-core keeps the timestep and condition embedders (AdaLN's inputs)
in the compute dtype as well."""
UPSTREAM_DIT_EXCLUDE: tuple[str, ...] = ("condition_encoder.*", "audio_tokenizer.*", "audio_token_detokenizer.*")
"""Upstream's exact DiT set, in our module names (``--set 'quantization.exclude.dit=[...]'``)."""


# --------------------------------------------------------------------------------------------- schemes
class Scheme(Record):
    """How a backend stores a quantized Linear weight."""

    name: str
    backend: str
    format: str
    """The weight format: ``int8``, ``fp8`` or ``int4`` (``quantization.<c>``)."""
    activations: str
    data_bits: int
    scale_bytes: int | None
    """Bytes of a scale; None: the weight's dtype."""
    zero_point_bytes: int = 0
    shift: bool = False
    """A shift per group in the weight's dtype (quanto's int4)."""
    grouped: bool = False
    """Scales per group of inputs (quanto's int4 group rule) rather than one per output row."""
    module_buffers: int = 0
    """Scalar buffers each quantized module adds, in the weight's dtype."""

    def linear_bytes(self, out_features: int, in_features: int, dtype_bytes: int) -> int:
        """Bytes a quantized ``Linear(in_features, out_features)`` weight holds: data, scales, zero points or
        shifts, and the module's own buffers (a bias stays in the compute dtype and is not included)."""
        data = out_features * in_features * self.data_bits // 8
        group = quanto_group_size(in_features) if self.grouped else None
        scales = out_features * (in_features // group) if group else out_features
        per_scale = (self.scale_bytes or dtype_bytes) + self.zero_point_bytes + (dtype_bytes if self.shift else 0)
        return data + scales * per_scale + self.module_buffers * dtype_bytes


SCHEMES: Mapping[str, Scheme] = {
    "int8_weight_only": Scheme("int8_weight_only", "torchao", "int8", "the compute dtype", 8, 4, zero_point_bytes=1),
    "w8a8_dynamic": Scheme(
        "w8a8_dynamic", "torchao", "int8", "int8, quantized per token at every call", 8, 4, zero_point_bytes=1
    ),
    "fp8_weight_only": Scheme("fp8_weight_only", "torchao", "fp8", "the compute dtype", 8, 4),
    "qint8": Scheme("qint8", "quanto", "int8", "the compute dtype", 8, None, module_buffers=2),
    "qfloat8": Scheme("qfloat8", "quanto", "fp8", "the compute dtype", 8, None, module_buffers=2),
    "qint4": Scheme(
        "qint4", "quanto", "int4", "the compute dtype", 4, None, shift=True, grouped=True, module_buffers=2
    ),
}
"""Every quantization scheme, by its ``quantization.scheme.<c>`` name."""
assert set(SCHEMES) | {"none"} == set(QUANT_SCHEME_FORMATS)
assert all(SCHEMES[n].format == QUANT_SCHEME_FORMATS[n] for n in SCHEMES)

QUANTO_SCHEMES: Mapping[str, str] = {"int8": "qint8", "fp8": "qfloat8", "int4": "qint4"}
"""A weight format under quanto (and what a bare format meant before torchao: the memory readings' quanto)."""
PACKAGES: Mapping[str, str] = {"torchao": "torchao", "quanto": "optimum.quanto"}
INSTALL: Mapping[str, str] = {"torchao": f"pip install '{TORCHAO_REQUIREMENT}'", "quanto": "pip install optimum-quanto"}


def quanto_group_size(in_features: int) -> int | None:
    """quanto's int4 group size for a Linear with ``in_features`` inputs (``optimum.quanto.nn.QModuleMixin``):
    128, lowered by 32 (not below 32) until it divides the inputs; None (one scale a row) when nothing does
    or the row has no more than 128 inputs."""
    group = QUANTO_INT4_GROUP
    if in_features <= group:
        return None
    while in_features % group and group > 32:
        group -= 32
    return group if in_features % group == 0 else None


def scheme_of(value: str) -> str:
    """A scheme name for ``value``: a scheme is itself; a bare format (``int8``) is quanto's scheme, what the
    memory model and its readings meant by it before torchao."""
    if value in SCHEMES or value == "none":
        return value
    return QUANTO_SCHEMES[value]


# --------------------------------------------------------------------------------------------- layers
class Linear(Record):
    """One ``torch.nn.Linear`` of a component, named as its module is."""

    name: str
    out_features: int
    in_features: int
    tied: bool = False
    """Its weight is another module's (the LM's lm_head is its embedding): quantizing it adds a quantized
    copy and frees nothing."""


class Family(Record):
    """Linear layers of one shape named ``{head}{i}{tail}`` for ``i`` in ``range(count)`` (or one layer named
    ``head`` when ``count`` is None): the hot path counts a family without naming its members unless an
    exclusion pattern could match one (the ladder predicts at every start-up, before anything is cached)."""

    head: str
    count: int | None
    tail: str
    out_features: int
    in_features: int
    tied: bool = False

    def names(self) -> list[str]:
        return [self.head] if self.count is None else [f"{self.head}{i}{self.tail}" for i in range(self.count)]


def lm_linears(shape: LMShape) -> tuple[Linear, ...]:
    """The Linear layers of a Qwen3 causal LM (names under ``model.``, and ``lm_head``) or, for a shape
    without ``lm_head``, of a ``Qwen3Model`` (the text encoder, names from the root)."""
    return _linears(_lm_families(shape))


def dit_linears(shape: DiTShape) -> tuple[Linear, ...]:
    """The Linear layers of the DiT as the builders and the loader build it (``runtime.models.AceStepDiT``): the
    decoder's (diffusers' ``AceStepTransformer1DModel``), the condition encoder's (with
    ``shape.condition_encoder``) and the audio tokenizer's and detokenizer's (with ``shape.audio_codec``), these
    two families at the encoder widths (XL: 2048 wide under its 2560-wide decoder)."""
    return _linears(_dit_families(shape))


def _linears(families: Iterable[Family]) -> tuple[Linear, ...]:
    return tuple(
        Linear(name, family.out_features, family.in_features, family.tied)
        for family in families
        for name in family.names()
    )


def _lm_families(shape: LMShape) -> list[Family]:
    head = f"{'model.' if shape.lm_head else ''}layers."
    h, q, kv, mlp = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim, shape.intermediate
    block = (
        (".self_attn.q_proj", q, h),
        (".self_attn.k_proj", kv, h),
        (".self_attn.v_proj", kv, h),
        (".self_attn.o_proj", h, q),
        (".mlp.gate_proj", mlp, h),
        (".mlp.up_proj", mlp, h),
        (".mlp.down_proj", h, mlp),
    )
    families = [Family(head, shape.layers, tail, out, inp) for tail, out, inp in block]
    if shape.lm_head:
        families.append(Family("lm_head", None, "", shape.vocab, h, shape.tied_embeddings))
    return families


def _dit_families(shape: DiTShape) -> list[Family]:
    h, mlp = shape.hidden, shape.intermediate
    e, e_mlp, a = shape.encoder_width, shape.encoder_mlp, shape.acoustic_channels
    heads, kv_heads = shape.encoder_attention_heads

    def attention(width: int, q: int, kv: int) -> tuple[tuple[str, int, int], ...]:
        return ((".to_q", q, width), (".to_k", kv, width), (".to_v", kv, width), (".to_out.0", width, q))

    def feed_forward(width: int, inner: int) -> tuple[tuple[str, int, int], ...]:
        return ((".gate_proj", inner, width), (".up_proj", inner, width), (".down_proj", width, inner))

    def blocks(head: str, count: int, parts: tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...]) -> list[Family]:
        return [Family(head, count, f".{part}{tail}", out, inp) for part, shapes in parts for tail, out, inp in shapes]

    def one(name: str, out: int, inp: int) -> Family:
        return Family(name, None, "", out, inp)

    decoder_attention = attention(h, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim)
    encoder_layer = (
        ("self_attn", attention(e, heads * shape.head_dim, kv_heads * shape.head_dim)),
        ("mlp", feed_forward(e, e_mlp)),
    )
    families = blocks(
        "layers.",
        shape.layers,
        (("self_attn", decoder_attention), ("cross_attn", decoder_attention), ("mlp", feed_forward(h, mlp))),
    )
    for embed in ("time_embed", "time_embed_r"):
        families += [
            one(f"{embed}.linear_1", h, shape.time_freq),
            one(f"{embed}.linear_2", h, h),
            one(f"{embed}.time_proj", 6 * h, h),
        ]
    families.append(one("condition_embedder", h, e))
    if shape.condition_encoder:
        families.append(one("condition_encoder.text_projector", e, shape.text_hidden))
        for encoder, count, inputs in (
            ("lyric_encoder", shape.lyric_layers, shape.text_hidden),
            ("timbre_encoder", shape.timbre_layers, shape.timbre_channels),
        ):
            families.append(one(f"condition_encoder.{encoder}.embed_tokens", e, inputs))
            families += blocks(f"condition_encoder.{encoder}.layers.", count, encoder_layer)
    if shape.audio_codec:
        families += [
            one("audio_tokenizer.audio_acoustic_proj", e, a),
            one("audio_tokenizer.attention_pooler.embed_tokens", e, e),
            *blocks("audio_tokenizer.attention_pooler.layers.", shape.pooler_layers, encoder_layer),
            one("audio_tokenizer.quantizer.project_in", shape.fsq_levels, e),
            one("audio_tokenizer.quantizer.project_out", e, shape.fsq_levels),
            one("audio_token_detokenizer.embed_tokens", e, e),
            *blocks("audio_token_detokenizer.layers.", shape.pooler_layers, encoder_layer),
            one("audio_token_detokenizer.proj_out", a, e),
        ]
    return families


def excluded(name: str, exclude: Iterable[str]) -> bool:
    """Whether module ``name`` matches one of the ``exclude`` patterns (fnmatch, as the runtime applies them)."""
    return _matcher(tuple(exclude))(name) is not None


@cache
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], object]:
    """One compiled expression for ``patterns`` (fnmatch's own translation, case-sensitive as module names are)."""
    if not patterns:
        return lambda _name: None
    return re.compile("|".join(f"(?:{fnmatch.translate(pattern)})" for pattern in patterns)).match


@cache
def _literal_heads(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """What a name must start with to match each pattern: its text before the first wildcard."""
    return tuple(re.split(r"[*?\[]", pattern, maxsplit=1)[0] for pattern in patterns)


def quantized_linears(linears: Iterable[Linear], exclude: Iterable[str]) -> list[Linear]:
    match = _matcher(tuple(exclude))
    return [layer for layer in linears if match(layer.name) is None]


def bytes_change(linears: Iterable[Linear], scheme: str, dtype_bytes: int, exclude: Iterable[str]) -> int:
    """How many bytes quantizing ``linears`` (less those ``exclude`` matches) with ``scheme`` adds to a
    component whose weights are all in a ``dtype_bytes`` dtype (negative: what it saves)."""
    families = [Family(layer.name, None, "", layer.out_features, layer.in_features, layer.tied) for layer in linears]
    return _change(families, scheme, dtype_bytes, tuple(exclude))


@cache
def lm_bytes_change(shape: LMShape, scheme: str, dtype_bytes: int, exclude: tuple[str, ...]) -> int:
    """:func:`bytes_change` for an LM's (or the text encoder's) Linear layers, remembered per shape and scheme
    (the ladder predicts the same components many times a resolution)."""
    return 0 if scheme_of(scheme) == "none" else _change(_lm_families(shape), scheme, dtype_bytes, exclude)


@cache
def dit_bytes_change(shape: DiTShape, scheme: str, dtype_bytes: int, exclude: tuple[str, ...]) -> int:
    """:func:`bytes_change` for the DiT's Linear layers, remembered per shape and scheme."""
    return 0 if scheme_of(scheme) == "none" else _change(_dit_families(shape), scheme, dtype_bytes, exclude)


def _change(families: Iterable[Family], scheme: str, dtype_bytes: int, exclude: tuple[str, ...]) -> int:
    if scheme_of(scheme) == "none":
        return 0
    layout = SCHEMES[scheme_of(scheme)]
    match, heads = _matcher(exclude), _literal_heads(exclude)
    change = 0
    for family in families:
        if family.count is not None and not any(h.startswith(family.head) or family.head.startswith(h) for h in heads):
            kept = family.count  # no pattern can match a name that starts with this family's head
        else:
            kept = sum(1 for name in family.names() if match(name) is None)
        one = layout.linear_bytes(family.out_features, family.in_features, dtype_bytes)
        change += kept * (one - (0 if family.tied else family.out_features * family.in_features * dtype_bytes))
    return change


# --------------------------------------------------------------------------------------------- defaults
def default_backend(find: Finder) -> tuple[str, str]:
    """The backend a plan uses, with why: torchao where installed, else quanto."""
    if find(PACKAGES["torchao"]):
        return "torchao", "torchao is installed: the quantizer upstream ACE-Step runs, and maintained"
    if find(PACKAGES["quanto"]):
        return "quanto", f"torchao is not installed ({INSTALL['torchao']}): optimum-quanto"
    return "torchao", "neither torchao nor optimum-quanto is installed (pip install 'acestep-core[ml]'): torchao"


def fp8_problem(device: DeviceMemory, *, asked: bool = True) -> str | None:
    """Why torchao's fp8 weights cannot run on ``device``; None when they can. A CUDA device of unknown
    compute capability (a simulated card) is given fp8 only when the user asks for it (``asked``)."""
    capability = device.compute_capability
    if device.backend == "cpu":
        return None
    if device.backend != "cuda":
        return f"torchao's fp8 weights are for NVIDIA sm_89+ (and the CPU); not assumed on {device.backend}"
    if capability is None:
        return None if asked else "compute capability unknown (simulated or not reported): fp8 not assumed"
    if capability < FP8_MIN_CAPABILITY:
        return f"fp8 weights need compute capability 8.9 or newer (Ada, Hopper); this GPU is {_cc(capability)}"
    return None


def default_scheme(quantization: str, backend: str, device: DeviceMemory, *, asked: bool = False) -> tuple[str, str]:
    """The scheme for weight format ``quantization`` under ``backend`` on ``device``, with why; ``asked``: the user
    named the format (fp8 is then given to a CUDA card of unknown compute capability)."""
    if quantization == "none":
        return "none", "not quantized"
    if backend == "quanto":
        scheme = QUANTO_SCHEMES[quantization]
        return scheme, f"quanto {scheme}: {quantization} weights, activations in the compute dtype"
    if quantization == "int4":
        return "qint4", "torchao's int4 weights need its CUDA int4 kernels (tinygemm / mslk): quanto's qint4"
    capability = device.compute_capability
    if quantization == "int8":
        if device.backend == "cuda" and capability is not None and capability < W8A8_BELOW_CAPABILITY:
            return (
                "w8a8_dynamic",
                f"torchao w8a8_dynamic: compute capability {_cc(capability)} is below 7.0, where upstream quantizes "
                "activations too (int8 × int8)",
            )
        return "int8_weight_only", "torchao int8_weight_only: int8 weights, compute-dtype activations (upstream's)"
    problem = fp8_problem(device, asked=asked)
    if problem is None:
        return (
            "fp8_weight_only",
            f"torchao fp8_weight_only: fp8 (e4m3) weights, as {'asked' if asked else 'the table asks'}",
        )
    return "int8_weight_only", f"{problem}: torchao int8_weight_only instead (the same byte a weight)"


def scheme_for(values: Mapping[str, Any], component: str) -> str:
    """The scheme a plan's values give ``component``: ``quantization.scheme.<c>`` where the plan has it, else
    derived from ``quantization.<c>`` and ``quantization.backend`` (quanto where a plan names no backend: what
    acestep-core ran before the key existed). One rule for the memory model and the runtime."""
    quantization = values.get(f"quantization.{component}", "none")
    if quantization == "none":
        return "none"
    scheme = values.get(f"quantization.scheme.{component}")
    if isinstance(scheme, str) and QUANT_SCHEME_FORMATS.get(scheme) == quantization:
        return scheme
    if values.get("quantization.backend", "quanto") == "quanto" or quantization == "int4":
        return QUANTO_SCHEMES[quantization]
    return "fp8_weight_only" if quantization == "fp8" else "int8_weight_only"


def override_problem(key: str, value: object, reading: MemoryReading, *, find: Finder) -> str | None:
    """Why a user's ``quantization.backend`` or ``quantization.scheme.<c>`` cannot run here; None when it can."""
    if key == "quantization.backend":
        if value in PACKAGES and not find(PACKAGES[str(value)]):
            return f"{value} is not installed ({INSTALL[str(value)]})"
        return None
    if not key.startswith("quantization.scheme.") or value not in SCHEMES:
        return None
    scheme = SCHEMES[str(value)]
    if not find(PACKAGES[scheme.backend]):
        return f"{scheme.name} is {scheme.backend}'s, which is not installed ({INSTALL[scheme.backend]})"
    if scheme.name == "fp8_weight_only":
        return fp8_problem(reading.device)
    return None


# --------------------------------------------------------------------------------------------- quality
@cache
def quality_table() -> Mapping[str, Any]:
    """The shipped quality measurement (component → scheme → figures), with its source."""
    data: dict[str, Any] = json.loads((QUALITY_DIR / QUALITY_FILE).read_text(encoding="utf-8"))
    return data


def quality(component: str, scheme: str) -> dict[str, Any] | None:
    """The measured quality of ``scheme`` on ``component`` (tiny real-class builds, CPU), or None."""
    table = quality_table()
    figures = table.get("components", {}).get(component, {}).get(scheme)
    if figures is None:
        return None
    result: dict[str, Any] = {"scheme": scheme, **figures}
    if component == "dit":
        result["lossy"] = figures["snr_db"] < LOSSY_BELOW_DB
        result["threshold_db"] = LOSSY_BELOW_DB
    result["measured_on"] = table["measured_on"]
    result["source"] = f"acestep_core/optimize/measurements/quality/{QUALITY_FILE} ({table['source']})"
    return result


def quality_setting(component: str, scheme: str, plugin: str = "") -> Setting:
    """``quantization.quality.<c>``: the scheme's measured figures, and lossy (a warning) under 20 dB on the DiT."""
    key = f"quantization.quality.{component}"
    if scheme == "none":
        return Setting(key, False, f"the {component} is not quantized", plugin)
    figures = quality(component, scheme)
    if figures is None:
        return Setting(key, False, f"{scheme} on the {component} has not been measured", plugin)
    agreement = figures.get("next_token_agreement")
    words = f"{scheme}: {figures['snr_db']:.1f} dB SNR against bf16" + (
        f", next-token agreement {agreement:.1%}" if agreement is not None else ""
    )
    where = f"on the tiny {component.replace('_', ' ')} ({figures['measured_on']}; {figures['source']})"
    if figures.get("lossy"):
        why = f"lossy: {words}, under {LOSSY_BELOW_DB:g} dB {where}"
        return Setting(key, figures, why, plugin, warning=True)
    judged = f", at least {LOSSY_BELOW_DB:g} dB: not lossy" if component == "dit" else ""
    return Setting(key, figures, f"{words}{judged} {where}", plugin)


# --------------------------------------------------------------------------------------------- user keys
def follow_user(plan: OptimizationPlan, user_keys: tuple[str, ...], reading: MemoryReading) -> OptimizationPlan:
    """The plan's quantization keys made to agree with what the user set: a scheme the user set gives its
    format; a format or backend the user set gives the scheme the rule derives (:func:`default_scheme`);
    ``quantization.quality.<c>`` follows the scheme. (``Overrides`` refuses a format and a scheme that disagree.)"""
    if not any(key.startswith("quantization.") and ".exclude." not in key for key in user_keys):
        return plan
    settings = {s.key: s for s in plan}
    backend = str(plan.value("quantization.backend", "quanto"))
    for component in QUANTIZED_COMPONENTS:
        format_key, scheme_key = f"quantization.{component}", f"quantization.scheme.{component}"
        if scheme_key in user_keys:
            scheme = str(plan.value(scheme_key))
            quantization = QUANT_SCHEME_FORMATS[scheme]
            if plan.value(format_key) != quantization:
                why = f"follows the user's {scheme_key}={scheme!r} ({quantization} weights)"
                settings[format_key] = Setting(format_key, quantization, why, CORE)
        elif format_key in user_keys or "quantization.backend" in user_keys:
            asked = [key for key in (format_key, "quantization.backend") if key in user_keys]
            quantization = str(plan.value(format_key, "none"))
            scheme, why = default_scheme(quantization, backend, reading.device, asked=format_key in user_keys)
            user = ", ".join(f"{key}={plan.value(key)!r}" for key in asked)
            settings[scheme_key] = Setting(scheme_key, scheme, f"follows the user's {user}: {why}", CORE)
            stored = QUANT_SCHEME_FORMATS[scheme]
            if stored != quantization:  # fp8 this device cannot store: int8, the same byte a weight
                why = f"the user's {format_key}={quantization!r} cannot run here: {why}"
                settings[format_key] = Setting(format_key, stored, why, CORE, warning=True)
        else:
            continue
        settings[f"quantization.quality.{component}"] = quality_setting(
            component, str(settings[scheme_key].value if scheme_key in settings else "none"), CORE
        )
    return OptimizationPlan(tuple(settings.values()))


def _cc(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


__all__ = [
    "DEFAULT_EXCLUDE",
    "LOSSY_BELOW_DB",
    "SCHEMES",
    "TORCHAO_REQUIREMENT",
    "UPSTREAM_DIT_EXCLUDE",
    "Linear",
    "Scheme",
    "bytes_change",
    "default_backend",
    "default_scheme",
    "dit_linears",
    "follow_user",
    "fp8_problem",
    "lm_linears",
    "override_problem",
    "quality",
    "quality_setting",
    "quanto_group_size",
    "scheme_for",
    "scheme_of",
]
