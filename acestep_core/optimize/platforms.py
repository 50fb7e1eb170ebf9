"""What each kind of device allows, and why: precision, attention, compile, the LM backend, what
saves memory there, and the memory budget a run may use.

Pure Python (no torch, no vllm, no mlx import): packages are looked up with
``importlib.util.find_spec``, which finds a package without importing it. One function per decision,
each returning the value with its reason, so the plan says why a Mac, an AMD or Intel GPU, an older
NVIDIA card or a CPU gets what it gets.

Backends are the reading's ``DeviceMemory.backend``: ``cuda`` (NVIDIA), ``rocm`` (AMD; torch calls it
``cuda``, ``torch.version.hip`` is set; ``compute_capability`` holds the gfx architecture, 11.0 for
gfx1100, 9.4 for gfx942), ``mps`` (Apple silicon, unified memory), ``xpu`` (Intel) and ``cpu``.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from typing import Any

from acestep_core.optimize import quantization
from acestep_core.optimize.memory import Budget, device_budget
from acestep_core.record import Record
from acestep_core.types import DeviceMemory, MemoryReading, Setting
from acestep_core.vocabulary import (
    GIB,
    LM_BACKENDS,
    MIN_DURATION_S,
    PHASES,
    SAFETY_MARGIN_BYTES,
    SAMPLE_RATE,
    VAE_HOP,
)

PRECISE_COMPONENTS = ("dit", "vae")
"""Where fp16 overflows on pre-Ampere cards (NaN/Inf reported on Titan X, T4, Quadro RTX 6000)."""

VLLM_MIN_CAPABILITY = (7, 0)
"""vLLM's minimum NVIDIA compute capability (Volta); upstream ACE-Step applies the same rule."""

MPS_CONV_OUTPUT_LIMIT = 2**16
"""MPS refuses a convolution with any output dimension over 65,536 ("Output channels > 65536 not
supported at the MPS device"; pytorch/pytorch PR #129484, the guard checks every output dimension:
issue #142515). The VAE's last convolution outputs ``frames × 1920`` samples, so a decoded window
may hold at most 34 latent frames there."""
MPS_VAE_TILE = (16, 8)
"""(tile, overlap) latent frames on MPS: a 32-frame window = 61,440 samples, under the limit
(upstream ACE-Step decodes MPS in 32-frame chunks with 8 of overlap for the same reason)."""

UNIFIED_HOST_RESERVE_BYTES = GIB
"""Kept back from a unified-memory working set: the Python process, torch, the tokenizers and the
Metal driver's own buffers live in the same memory the GPU's working set counts."""


# --------------------------------------------------------------------------------------------- abilities
class DeviceAbilities(Record):
    """What saves memory on a device, and why not where it does not."""

    offload: bool
    """Moving a component to the CPU frees device memory (discrete memory only)."""
    release: bool
    """Freeing a component after its phase (and building it again for the next run) frees memory."""
    stream: bool
    """Group offload (streaming blocks) lowers the peak. On unified memory it lowers the GPU's working
    set only: the weights stay in the same RAM, in host pages macOS can compress or page out."""
    quantize: bool
    quantize_why: str
    max_vae_window: int | None
    """Most latent frames one VAE decode call may hold (tile + 2 × overlap); None = no limit."""


def abilities(device: DeviceMemory) -> DeviceAbilities:
    backend = device.backend
    if backend == "cpu":
        return DeviceAbilities(
            False,
            False,
            False,
            False,
            "running on the CPU: no device memory to save, and int8 weights run slower than plain ones there "
            "(benchmarks/bench_quant.py)",
            None,
        )
    if device.unified_memory or backend == "mps":
        window = MPS_CONV_OUTPUT_LIMIT // VAE_HOP if backend == "mps" else None
        why = (
            "MPS: no int8 (optimum-quanto's int8 kernels target CUDA; on MPS they dequantize "
            "and save nothing on unified memory)"
            if backend == "mps"
            else "unified memory: no quantization assumed"
        )
        return DeviceAbilities(False, True, True, False, why, window)
    return DeviceAbilities(True, True, True, True, "", None)


# --------------------------------------------------------------------------------------------- budget
def budget_for(device: DeviceMemory) -> Budget | None:
    """What a run may allocate on ``device``; None where nothing is budgeted (a CPU without a figure)."""
    if device.backend == "cpu":
        return host_budget(device)
    if not device.total_bytes:
        return None
    if device.unified_memory:
        return unified_budget(device.total_bytes)
    label = {"rocm": "HIP context (assumed as CUDA's)", "xpu": "Level Zero context (assumed as CUDA's)"}.get(
        device.backend, "CUDA context"
    )
    return device_budget(device.total_bytes, context_label=label)


def unified_budget(working_set_bytes: int) -> Budget:
    """A unified-memory device: its working-set figure (Metal's ``recommendedMaxWorkingSetSize``)
    less a host reserve and the margin; there is no CUDA context to pay for. Allocator slack is not a
    margin here: every predicted peak already carries it (``memory.RESERVED_GAP_FITTED``)."""
    return Budget(
        working_set_bytes,
        UNIFIED_HOST_RESERVE_BYTES,
        SAFETY_MARGIN_BYTES,
        context_label="host reserve",
        total_label="working set",
    )


def host_budget(device: DeviceMemory) -> Budget | None:
    """The CPU: the host's available memory (``free_bytes``, as the detection plugin read it), else None."""
    if not device.free_bytes:
        return None
    return Budget(device.free_bytes, 0, 0, context_label="nothing", total_label="host available memory")


# --------------------------------------------------------------------------------------------- precision
def precision(reading: MemoryReading) -> dict[str, tuple[str, str]]:
    """Component → (dtype, why)."""
    device = reading.device
    everywhere = dict.fromkeys(PHASES)
    capability = device.compute_capability
    if device.backend == "cuda":
        if capability is None:
            return dict.fromkeys(
                everywhere, ("bf16", "CUDA, compute capability unknown (simulated or not reported): bf16 assumed")
            )
        if capability >= (8, 0):
            return dict.fromkeys(everywhere, ("bf16", f"compute capability {_cc(capability)} supports bf16"))
        return _fp16_with_fp32_where_it_overflows(
            f"compute capability {_cc(capability)} has no bf16",
            "(NaN/Inf reported on T4, Titan X, Quadro RTX 6000 before Ampere)",
        )
    if device.backend == "rocm":
        if capability is None or capability >= (11, 0) or (9, 4) <= capability < (10, 0):
            arch = (
                "architecture unknown: bf16 assumed"
                if capability is None
                else f"gfx{capability[0]}{capability[1]:x}x: bf16 matrix cores (CDNA2/3, RDNA3 and newer)"
            )
            by_arch: dict[str, tuple[str, str]] = dict.fromkeys(everywhere, ("bf16", f"ROCm, {arch}"))
        else:
            by_arch = _fp16_with_fp32_where_it_overflows(
                f"ROCm gfx{capability[0]}{capability[1]:x}x has no bf16 matrix cores", "(as on pre-Ampere NVIDIA cards)"
            )
        return {c: by_arch[c] if c == "lm" else _rocm_weights_dtype(device) for c in everywhere}
    if device.backend == "mps":
        return {
            c: (
                "fp32",
                "MPS: the VAE decodes in small tiles here (the conv1d limit), so fp32 costs little "
                "and avoids fp16 overflow in its upsampling",
            )
            if c == "vae"
            else (
                "fp16",
                "MPS: fp16 (bf16 on MPS needs macOS 14 and is missing from some Metal kernels, so it is not "
                "assumed; fp16 halves unified memory against fp32)",
            )
            for c in everywhere
        }
    if device.backend == "xpu":
        return dict.fromkeys(
            everywhere,
            (
                "bf16",
                "Intel XPU: bf16 (Arc and Data Center GPU Max have bf16 XMX engines; torch's XPU backend supports it)",
            ),
        )
    return dict.fromkeys(everywhere, ("bf16", "CPU: bf16 (supported; halves memory against fp32)"))


ROCM_DTYPE_ENV = "ACESTEP_ROCM_DTYPE"
"""Upstream ACE-Step's variable for the dtype its DiT handler loads in on ROCm (float32, float16 or
bfloat16; float32 when unset)."""


def _rocm_weights_dtype(device: DeviceMemory) -> tuple[str, str]:
    """The DiT, text encoder and VAE on ROCm: fp32 unless ``ACESTEP_ROCM_DTYPE`` says otherwise, as
    upstream loads them (its #771: bf16 segfaults at load on some ROCm GPUs, e.g. Strix Halo iGPUs).
    The LM is upstream's other handler, which keeps bf16 on ROCm."""
    if device.weights_dtype is not None:
        where = device.sources.get("weights_dtype", ROCM_DTYPE_ENV)
        return device.weights_dtype, f"ROCm: {device.weights_dtype} as {where} asks"
    return (
        "fp32",
        f"ROCm: fp32 unless {ROCM_DTYPE_ENV} says otherwise, as upstream ACE-Step loads the DiT handler's models "
        "there (its #771: bf16 segfaults at load on some ROCm GPUs); the memory plan counts fp32 bytes",
    )


def _fp16_with_fp32_where_it_overflows(no_bf16: str, evidence: str) -> dict[str, tuple[str, str]]:
    return {
        c: ("fp32", f"{no_bf16} and fp16 overflows in the {c} {evidence}: fp32")
        if c in PRECISE_COMPONENTS
        else ("fp16", f"{no_bf16}: fp16 (the LMs run in fp16 without overflow)")
        for c in PHASES
    }


# --------------------------------------------------------------------------------------------- attention, compile
def attention(flash: bool, reading: MemoryReading, source: str) -> Setting:
    if not flash:
        return Setting("attention", "sdpa", f"{source}: flash attention off; SDPA")
    device = reading.device
    capability = device.compute_capability
    if device.backend != "cuda":
        kernel = {
            "rocm": "SDPA (torch's ROCm SDPA has its own flash kernels, AOTriton); "
            "flash-attn's ROCm build is not assumed",
            "mps": "SDPA (Metal's fused attention); flash-attn is CUDA-only",
            "xpu": "SDPA (oneDNN's fused attention on XPU); flash-attn is CUDA-only",
        }.get(device.backend, "SDPA; flash-attn is CUDA-only")
        return Setting("attention", "sdpa", f"{source}: flash attention on, but this is {device.backend}: {kernel}")
    if capability is None or capability < (8, 0):
        where = "no compute capability known" if capability is None else f"compute capability {_cc(capability)}"
        return Setting(
            "attention",
            "sdpa",
            f"{source}: flash attention on, but Flash Attention 2 needs compute capability 8.0 or newer "
            f"({where}); SDPA",
        )
    if not installed("flash_attn"):
        return Setting(
            "attention",
            "sdpa",
            f"{source}: flash attention on, but flash-attn is not installed; SDPA (its memory-efficient kernels)",
        )
    return Setting(
        "attention",
        "flash_attention_2",
        f"{source}: flash attention on; flash-attn installed, compute capability {_cc(capability)}",
    )


def compile_setting(wanted: bool, reading: MemoryReading, source: str) -> Setting:
    backend = reading.device.backend
    if not wanted:
        return Setting("compile", False, f"{source}: compile off")
    if backend == "mps":
        return Setting(
            "compile",
            False,
            f"{source}: compile on, but MPS has no stable torch.compile backend "
            "(inductor's Metal backend is experimental)",
        )
    if backend not in ("cuda", "rocm"):
        return Setting(
            "compile",
            False,
            f"{source}: compile on, but {backend} has no default compile backend (ask for it to force it)",
        )
    if not installed("triton"):
        return Setting(
            "compile",
            False,
            f"{source}: compile on, but triton is not installed: inductor cannot generate {backend} kernels",
        )
    return Setting("compile", True, f"{source}: compile on (inductor with triton on {backend})")


# --------------------------------------------------------------------------------------------- LM backend
Finder = Callable[[str], bool]


@functools.cache
def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it. Remembered for the process (a resolve
    asks several times): a package installed while a server runs counts from its restart, as its
    imports would."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def lm_backend(reading: MemoryReading, *, find: Finder = installed) -> Setting:
    """The LM's inference backend: vllm on CUDA ≥ 7.0 when nano-vllm or vllm is installed, mlx on Apple silicon when
    mlx-lm is installed, else pt (transformers), with the rule that decided."""
    for candidate in ("vllm", "mlx"):
        if lm_backend_problem(candidate, reading, find=find) is None:
            why = (
                f"{_vllm_found(find)} is installed and the GPU has compute capability ≥ 7.0"
                if candidate == "vllm"
                else "Apple silicon with mlx-lm installed: MLX runs the LM natively on the GPU"
            )
            return Setting(
                "lm.backend",
                candidate,
                f"{why} (rule: vllm on CUDA ≥ 7.0 when nano-vllm or vllm is installed; mlx on Apple silicon when "
                "mlx-lm is installed; else pt)",
            )
    reasons = "; ".join(f"not {name}: {lm_backend_problem(name, reading, find=find)}" for name in ("vllm", "mlx"))
    return Setting("lm.backend", "pt", f"pt (transformers): {reasons}")


def lm_backend_problem(value: object, reading: MemoryReading, *, find: Finder = installed) -> str | None:
    """Why ``value`` cannot run the LM on this reading's device; None when it can."""
    device = reading.device
    if value not in LM_BACKENDS:
        return f"{value!r} is not an LM backend (choose {', '.join(LM_BACKENDS)})"
    if value == "pt":
        return None
    if value == "vllm":
        if device.backend != "cuda":
            return f"vllm is used on NVIDIA CUDA only, and this is {device.backend}"
        capability = device.compute_capability
        if capability is not None and capability < VLLM_MIN_CAPABILITY:
            return f"vllm needs compute capability {_cc(VLLM_MIN_CAPABILITY)} or newer; this GPU is {_cc(capability)}"
        if _vllm_found(find) is None:
            return (
                "neither nano-vllm (module nanovllm, which upstream ACE-Step vendors as its vllm backend) nor vllm "
                "is installed"
            )
        return None
    if device.backend != "mps":
        return f"mlx runs on Apple silicon only, and this is {device.backend}"
    if not find("mlx_lm"):
        return "mlx-lm is not installed (pip install mlx-lm)"
    return None


VLLM_MODULES = ("nanovllm", "vllm")
"""What runs ``lm.backend = vllm``: upstream ACE-Step's "vllm" is the nano-vllm it vendors (module
``nanovllm``); the ``vllm`` package serves the same role. Found with ``find_spec``, never imported."""


def _vllm_found(find: Finder) -> str | None:
    """The first of :data:`VLLM_MODULES` installed, in words; None when neither is."""
    names = {"nanovllm": "nano-vllm (nanovllm)", "vllm": "vllm"}
    return next((names[module] for module in VLLM_MODULES if find(module)), None)


def checked_override(
    key: str, value: object, reading: MemoryReading, plan: Mapping[str, Any] | None = None
) -> str | None:
    """Why a user's value for ``key`` is impossible on this device; None when it is acceptable.

    ``plan`` is the plan as it would be with every user value applied: a tile size is judged with
    the overlap it would run with."""
    if key == "lm.backend":
        return lm_backend_problem(value, reading)
    if key.startswith("quantization."):
        return quantization.override_problem(key, value, reading, find=installed)
    if key in ("attention", "attention.dit") and value in ("flash_attention_2", "flash"):
        return flash_attention_problem(reading)
    window = abilities(reading.device).max_vae_window
    if window is None:
        return None
    if key == "vae.decode" and value == "full":
        return (
            f"{reading.device.backend}: a convolution's output may hold at most {MPS_CONV_OUTPUT_LIMIT:,} samples "
            f"({window} latent frames), and a clip of {MIN_DURATION_S} s is already "
            f"{MIN_DURATION_S * SAMPLE_RATE:,}: every decode is tiled"
        )
    if key in ("vae.tile_frames", "vae.tile_overlap") and isinstance(value, int):
        wanted = dict(plan or {}) | {key: value}
        tile, overlap = wanted.get("vae.tile_frames", MPS_VAE_TILE[0]), wanted.get("vae.tile_overlap", MPS_VAE_TILE[1])
        if isinstance(tile, int) and isinstance(overlap, int) and tile + 2 * overlap > window:
            return (
                f"{reading.device.backend}: a tile of {tile} + 2×{overlap} latent frames decodes "
                f"{(tile + 2 * overlap) * VAE_HOP:,} samples at once, over the {MPS_CONV_OUTPUT_LIMIT:,} a "
                f"convolution's output may hold (at most {window} frames a window)"
            )
    return None


FLASH_ATTENTION_MIN_CAPABILITY = (8, 0)
"""Flash Attention 2's minimum NVIDIA compute capability (Ampere)."""


def flash_attention_problem(reading: MemoryReading) -> str | None:
    """Why Flash Attention 2 cannot run on this reading's device; None where it may (CUDA of a known
    capability ≥ 8.0, or unknown: a simulated card; ROCm, which has a flash-attn build)."""
    device = reading.device
    if device.backend in ("mps", "xpu", "cpu"):
        return f"flash-attn has kernels for CUDA and ROCm only, and this is {device.backend}"
    capability = device.compute_capability
    if device.backend == "cuda" and capability is not None and capability < FLASH_ATTENTION_MIN_CAPABILITY:
        return (
            f"Flash Attention 2 needs compute capability {_cc(FLASH_ATTENTION_MIN_CAPABILITY)} or newer; "
            f"this GPU is {_cc(capability)}"
        )
    return None


def _cc(capability: tuple[int, int]) -> str:
    return f"{capability[0]}.{capability[1]}"


__all__ = [
    "LM_BACKENDS",
    "MPS_VAE_TILE",
    "DeviceAbilities",
    "abilities",
    "attention",
    "budget_for",
    "checked_override",
    "compile_setting",
    "flash_attention_problem",
    "host_budget",
    "lm_backend",
    "lm_backend_problem",
    "precision",
    "unified_budget",
]
