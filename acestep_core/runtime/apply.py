"""Apply an optimization plan to real models (imports torch: the pipeline's module, not the resolution's).

One call per component, on a model freshly loaded **on the CPU**::

    lm = apply_plan(build_lm("1.7B"), "lm", resolution.plan, device="cuda")
    ... lm.model.generate(...) ...
    lm.offload()          # between phases: back to the CPU when the plan says so

The order is fixed: precision → attention → quantize (on the CPU) → offload or move → compile.
Quantizing on the GPU first and offloading after is what OOMs (optimum-quanto #376: a quantized
model initialised on the GPU, then offloaded); :class:`PlanOrderError` refuses a model that is not
on the CPU when the plan quantizes or offloads it.

Quantization stores the component's Linear layers (less ``quantization.exclude.<c>``) in the plan's scheme
(``quantization.scheme.<c>``, :func:`acestep_core.optimize.quantization.scheme_for`): torchao's
``int8_weight_only``, ``w8a8_dynamic`` and ``fp8_weight_only`` (``quantize_`` with upstream ACE-Step's
configs), or optimum-quanto's ``qint8``, ``qfloat8`` and ``qint4`` (``quantize`` then ``freeze``). torchao
is imported only when a plan uses it: it is optional (the plan takes quanto where it is missing).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import cpu_offload, cpu_offload_with_hook
from diffusers.hooks import apply_group_offloading
from optimum.quanto import QModuleMixin, freeze, quantize

from acestep_core.optimize.quantization import SCHEMES, excluded, scheme_for, scheme_of
from acestep_core.types import OptimizationPlan

DTYPES: Mapping[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COMPILED_COMPONENTS = ("dit",)
"""torch.compile is applied to the DiT (fixed shapes, many steps); the LM's growing KV cache would
recompile at every length."""
GROUP_OFFLOAD_COMPONENTS = ("dit", "text_encoder", "vae")


class PlanOrderError(RuntimeError):
    """The plan quantizes or offloads a model that is not on the CPU: load on CPU, quantize, then offload."""


@dataclass
class AppliedComponent:
    """A component with its plan applied, and what was done to it (in order)."""

    component: str
    model: Any
    device: torch.device
    offload_mode: str
    steps: list[str] = field(default_factory=list)
    hook: Any = None
    """accelerate's ``UserCpuOffloadHook`` for model offload."""

    def offload(self) -> None:
        """End of this component's phase: under model offload, send its weights back to the CPU."""
        if self.hook is not None:
            self.hook.offload()


def plan_values(plan: OptimizationPlan | Mapping[str, Any]) -> dict[str, Any]:
    return plan.as_dict() if isinstance(plan, OptimizationPlan) else dict(plan)


def apply_plan(
    model: Any,
    component: str,
    plan: OptimizationPlan | Mapping[str, Any],
    *,
    device: str | torch.device = "cuda",
    compile_backend: str | None = None,
    chain_after: AppliedComponent | None = None,
) -> AppliedComponent:
    """Apply ``plan``'s settings for ``component`` (``lm``, ``text_encoder``, ``dit``, ``vae``) to ``model``.

    :param device: where the component computes.
    :param compile_backend: torch.compile's backend (default ``inductor``); tests use lighter ones.
    :param chain_after: under model offload, the component of the previous phase: running this one
        first sends that one back to the CPU (accelerate's hook chaining).
    """
    values = plan_values(plan)
    device = torch.device(device)
    quantization = values.get(f"quantization.{component}", "none")
    scheme = scheme_for(values, component)
    offload = values.get(f"offload.{component}", "none")
    if offload == "sequential" and quantization != "none":
        raise ValueError(
            f"{component}: sequential offload does not combine with quantized weights (accelerate rebuilds each "
            "parameter by its class); use group offload"
        )
    if (quantization != "none" or offload != "none") and _device_of(model).type != "cpu":
        raise PlanOrderError(
            f"{component}: the plan quantizes ({quantization}) or offloads ({offload}) it, but it is on "
            f"{_device_of(model)}; load it on the CPU, then apply the plan (quantize, then offload)"
        )
    applied = AppliedComponent(component, model, device, offload)

    precision = values.get(f"precision.{component}")
    if precision is not None:
        model.to(DTYPES[precision])
        applied.steps.append(f"precision {precision}")
    _set_attention(applied, values)
    if quantization != "none":
        exclude = list(values.get(f"quantization.exclude.{component}", []))
        quantized = quantize_component(model, scheme, exclude)
        backend = SCHEMES[scheme].backend
        applied.steps.append(
            f"quantized {quantized} modules to {scheme} ({backend}, {quantization} weights; "
            f"excluded {exclude or 'none'})"
        )
        if backend == "quanto" and quantized and device.type in INT8PACK_DEVICES:
            contiguous_inputs(model)
            applied.steps.append(f"contiguous inputs for quanto's {device.type} int8 kernel")
    _place(applied, offload, chain_after)
    if values.get("compile") and component in COMPILED_COMPONENTS:
        if offload in ("group", "sequential") and quantization != "none":
            applied.steps.append(
                "compile skipped: compiled graphs keep weak references to quantized weights, which group offload "
                "must swap between devices"
            )
        else:
            backend = compile_backend or "inductor"
            model.forward = torch.compile(model.forward, backend=backend)
            applied.steps.append(f"compiled ({backend})")
    return applied


def quantize_component(model: Any, scheme: str, exclude: list[str]) -> int:
    """Store every Linear of ``model`` not matching ``exclude`` in ``scheme`` (a scheme, or a bare format:
    quanto's). Returns how many modules were quantized."""
    layout = SCHEMES[scheme_of(scheme)]
    include = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not excluded(name, exclude)
    ]
    if not include:
        return 0
    if layout.backend == "quanto":
        quantize(model, weights=layout.name, include=include)
        freeze(model)
    else:
        chosen = set(include)
        torchao = torchao_quantization()
        torchao.quantize_(model, torchao_config(layout.name), filter_fn=lambda _module, name: name in chosen)
    return len(include)


def torchao_quantization() -> Any:
    """``torchao.quantization``, imported when a plan first uses it."""
    return importlib.import_module("torchao.quantization")


def torchao_config(scheme: str) -> Any:
    """The torchao config upstream ACE-Step builds for ``scheme`` (its ``_build_quantization_config``)."""
    torchao = torchao_quantization()
    if scheme == "int8_weight_only":
        return torchao.Int8WeightOnlyConfig()
    if scheme == "w8a8_dynamic":
        return torchao.Int8DynamicActivationInt8WeightConfig(act_mapping_type=torchao.MappingType.ASYMMETRIC)
    if scheme == "fp8_weight_only":
        return torchao.Float8WeightOnlyConfig()
    raise ValueError(f"{scheme!r} is not a torchao scheme (int8_weight_only, w8a8_dynamic, fp8_weight_only)")


INT8PACK_DEVICES = ("cpu", "mps")
"""Where quanto multiplies bf16 activations by int8 weights with ``torch._weight_int8pack_mm``, which refuses
an input that is not contiguous in its last dimension (the DiT's modulated norms hand it such views)."""


def contiguous_inputs(model: Any) -> int:
    """Make every quanto module's tensor inputs contiguous before it runs (a no-op for contiguous ones)."""

    def hook(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)

    modules = [m for m in model.modules() if isinstance(m, QModuleMixin)]
    for module in modules:
        module.register_forward_pre_hook(hook)
    return len(modules)


def quantized_modules(model: Any) -> list[str]:
    """Names of the modules whose weights are held quantized (quanto's modules, torchao's tensors)."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, QModuleMixin) or _is_torchao_tensor(getattr(module, "weight", None))
    ]


def _is_torchao_tensor(tensor: Any) -> bool:
    return isinstance(tensor, torch.Tensor) and type(tensor).__module__.startswith("torchao.")


def weight_bytes(model: Any) -> int:
    """Bytes of every parameter and buffer, quantized ones at their stored size (data, scales, zero points:
    the tensors a quantized tensor flattens to), tied ones once."""
    seen: set[int] = set()
    total = 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += _tensor_bytes(tensor)
    return total


def _tensor_bytes(tensor: torch.Tensor) -> int:
    inner = getattr(tensor, "__tensor_flatten__", None)
    if inner is not None and type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        names, _ = inner()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def _set_attention(applied: AppliedComponent, values: Mapping[str, Any]) -> None:
    model = applied.model
    if applied.component in ("lm", "text_encoder") and hasattr(model, "set_attn_implementation"):
        implementation = values.get("attention", "sdpa")
        model.set_attn_implementation(implementation)
        applied.steps.append(f"attention {implementation}")
    elif applied.component == "dit" and hasattr(model, "set_attention_backend"):
        backend = values.get("attention.dit", "native")
        model.set_attention_backend(backend)
        applied.steps.append(f"attention backend {backend}")


def _place(applied: AppliedComponent, offload: str, chain_after: AppliedComponent | None) -> None:
    model, device = applied.model, applied.device
    if offload in ("none", "release"):
        model.to(device)
        applied.steps.append(f"on {device}" + (", released after its phase" if offload == "release" else ""))
    elif offload == "model":
        previous = chain_after.hook if chain_after is not None else None
        _, applied.hook = cpu_offload_with_hook(model, execution_device=device, prev_module_hook=previous)
        applied.steps.append(f"model offload (on {device} during its phase, CPU otherwise)")
    elif offload == "group":
        if applied.component not in GROUP_OFFLOAD_COMPONENTS:
            raise ValueError(
                f"group offload is not offered for the {applied.component} (autoregressive decoding would stream "
                "every layer at every token)"
            )
        # the DiT's condition encoder and its audio tokenizer / detokenizer run once, before the denoising
        # steps: their layers stream as the decoder's do (without this they would ride, whole, with the
        # decoder's top-level group at every step)
        blocks = (
            ["condition_encoder", "lyric_encoder", "timbre_encoder", "audio_tokenizer", "audio_token_detokenizer"]
            if hasattr(model, "condition_encoder")
            else None
        )
        apply_group_offloading(
            model,
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            block_modules=blocks,
        )
        applied.steps.append(f"group offload (one block at a time on {device})")
    elif offload == "sequential":
        cpu_offload(model, execution_device=device)
        applied.steps.append(f"sequential offload (each module on {device} as it runs)")
    else:
        raise ValueError(f"unknown offload mode {offload!r}")


def _device_of(model: Any) -> torch.device:
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")
