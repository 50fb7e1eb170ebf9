"""ACE-Step 1.5's tier table (``tiers.toml``) and the rules that apply any tier table.

Tier selection. The figure compared is the device's total memory in GiB as the detection plugin
reports it: NVML's total where NVML answered (the card's full memory, closest to the class it is
sold as: an H100 80GB reads 79.65 GiB there, 79.2 GiB through torch), else torch's total. Cards
report less than their class, so a *detected* total within ``real_card_tolerance`` (5%) below a
tier boundary counts as the boundary: an "8 GB" card reading 7.6-7.9 GiB is an 8 GB card, a 16 GB
card reading 15.2-16.0 GiB a 16 GB card (the upstream implementation's "≥15.5 GB is 16 GB",
generalised). Simulated sizes are taken exactly. With no accelerator (CPU) the first tier applies.

Requests. Over a limit → clamped to it, with a warning naming the limit, the tier and the memory
figure. With the LM on, the tier's with-LM limits apply. An LM size the tier does not allow is
refused and the recommended (largest allowed) size offered; with no LM allowed the LM is turned
off. The LM stays off unless asked for on tiers whose table says ``lm_default_on = false``, and on
any device of 6 GB or less (the seed's "≤6GB" note; a 6 GB device is Tier 3 by range, so this is a
rule on the memory figure, not on the tier).
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util

from acestep_core import (
    GIB,
    AdjustedRequest,
    Adjustment,
    GenerationRequest,
    MemoryReading,
    Setting,
    Tier,
    TierTable,
    hookimpl,
    parse_table,
)

TABLE_FILE = "tiers.toml"
TEXT_COMPONENTS = ("lm", "dit", "text_encoder")
LM_OFF_BY_DEFAULT_UP_TO_GB = 6.0
"""The seed: "VRAM ≤6GB: the LM is not initialised by default, to keep memory for the DiT". This
holds on any tier (a 6 GB device is in Tier 3 by range), so it is a rule here, not a table field."""


@hookimpl
def register_tier_tables() -> TierTable:
    return default_table()


@functools.cache
def default_table() -> TierTable:
    """``tiers.toml``, parsed and validated once per process (the record is frozen, so sharing is safe)."""
    resource = importlib.resources.files(__name__).joinpath(TABLE_FILE)
    return parse_table(resource.read_text(encoding="utf-8"), source=f"{__name__}/{TABLE_FILE}")


@hookimpl(trylast=True)
def select_tier(reading: MemoryReading, table: TierTable) -> Tier | None:
    device = reading.device
    if device.total_bytes is None or device.total_bytes <= 0:
        return table.tiers[0]
    gib = device.total_bytes / GIB
    if not device.simulated:
        gib = nominal_size(gib, table)
    return next((tier for tier in table.tiers if tier.contains(gib)), None)


def nominal_size(gib: float, table: TierTable) -> float:
    """The class a real card belongs to: a total just below a boundary counts as the boundary."""
    for boundary in table.boundaries():
        if boundary * (1 - table.real_card_tolerance) - 1e-9 <= gib < boundary:
            return boundary
    return gib


@hookimpl(trylast=True)
def adjust_request(request: GenerationRequest, tier: Tier, reading: MemoryReading) -> AdjustedRequest:
    where = f"{tier.label} ({tier.vram_label()}, {_memory(reading)})"
    changes: list[Adjustment] = []
    lm_model = _choose_lm(request, tier, reading, where, changes)
    lm_on = lm_model is not None
    with_lm = "with the LM" if lm_on else "without the LM"

    duration = request.duration_s
    limit = tier.max_duration_s(lm_on)
    if duration is not None and duration > limit:
        changes.append(Adjustment("duration_s", duration, limit, f"duration {duration:g} s exceeds the {limit} s limit of {where} {with_lm}; using {limit} s"))
        duration = limit

    batch = request.batch_size
    limit = tier.max_batch(lm_on)
    if batch > limit:
        changes.append(Adjustment("batch_size", batch, limit, f"batch size {batch} exceeds the limit of {limit} for {where} {with_lm}; using {limit}"))
        batch = limit
    return AdjustedRequest(duration_s=duration, batch_size=batch, lm_model=lm_model, changes=tuple(changes))


def _small_device(reading: MemoryReading) -> bool:
    """≤6 GB, compared as read: a real card reads at or below its class, so no tolerance is needed."""
    total = reading.device.total_bytes
    return total is not None and total / GIB <= LM_OFF_BY_DEFAULT_UP_TO_GB + 1e-9


def _choose_lm(request: GenerationRequest, tier: Tier, reading: MemoryReading, where: str, changes: list[Adjustment]) -> str | None:
    if request.lm == "off":
        return None
    wanted = request.lm == "on" or request.lm_model is not None
    if not wanted and not tier.lm_default_on:
        if tier.lm_models:
            changes.append(Adjustment("lm_model", None, None, f"the LM is not initialised by default on {where}, to leave memory to the DiT; ask for it to load it", warning=False))
        return None
    if not wanted and _small_device(reading):
        changes.append(Adjustment("lm_model", None, None, f"the LM is not initialised by default on devices of {LM_OFF_BY_DEFAULT_UP_TO_GB:g} GB or less ({where}), to leave memory to the DiT; ask for it to load it", warning=False))
        return None
    if not tier.lm_models:
        if wanted:
            changes.append(Adjustment("lm_model", request.lm_model or "on", None, f"{where} allows no LM; the LM is turned off"))
        return None
    if request.lm_model is None:
        changes.append(Adjustment("lm_model", None, tier.recommended_lm, f"no LM size given: using {tier.recommended_lm}, the largest {where} allows", warning=False))
        return tier.recommended_lm
    if request.lm_model not in tier.lm_models:
        allowed = ", ".join(tier.lm_models)
        changes.append(Adjustment("lm_model", request.lm_model, tier.recommended_lm, f"LM {request.lm_model} is not allowed on {where} (allowed: {allowed}); using the recommended {tier.recommended_lm}"))
        return tier.recommended_lm
    return request.lm_model


@hookimpl(trylast=True)
def configure_optimizations(adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading) -> list[Setting]:
    defaults = tier.optimizations
    on_gpu = reading.device.is_accelerator
    source = f"{tier.label} default"
    settings = [_attention(defaults.get("flash_attention", True), reading, source)]

    offload = defaults.get("cpu_offload", False)
    for component in ("lm", "dit", "text_encoder", "vae"):
        if not on_gpu:
            settings.append(Setting(f"offload.{component}", "none", "running on the CPU: nothing to offload"))
        elif reading.device.unified_memory:
            settings.append(Setting(f"offload.{component}", "none", "unified memory: offloading moves nothing"))
        else:
            settings.append(Setting(f"offload.{component}", "model" if offload else "none", f"{source}: CPU offload {'on' if offload else 'off'}"))

    compile_on = bool(defaults.get("compile", False)) and reading.device.backend in ("cuda", "rocm")
    why = f"{source}: compile {'on' if defaults.get('compile') else 'off'}"
    if defaults.get("compile") and not compile_on:
        why = f"{source} is on, but {reading.device.backend} has no default compile backend (ask for it to force it)"
    settings.append(Setting("compile", compile_on, why))

    quantization = defaults.get("quantization", "none")
    for component in TEXT_COMPONENTS:
        settings.append(Setting(f"quantization.{component}", quantization, f"{source}: weight quantization {quantization}"))
    settings.append(Setting("quantization.vae", "none", "the VAE is not quantized unless asked"))

    if adjusted.lm_model is not None and reading.device.total_bytes:
        settings.append(_lm_memory_ratio(adjusted.lm_model, tier, reading))
    return settings


def _attention(flash: bool, reading: MemoryReading, source: str) -> Setting:
    if not flash:
        return Setting("attention", "sdpa", f"{source}: flash attention off; SDPA")
    capability = reading.device.compute_capability
    if reading.device.backend != "cuda" or capability is None or capability < (8, 0):
        return Setting("attention", "sdpa", f"{source}: flash attention on, but flash-attn needs an NVIDIA GPU of compute capability 8.0 or newer; SDPA")
    if importlib.util.find_spec("flash_attn") is None:
        return Setting("attention", "sdpa", f"{source}: flash attention on, but flash-attn is not installed; SDPA")
    return Setting("attention", "flash_attention_2", f"{source}: flash attention on; flash-attn installed, compute capability {capability[0]}.{capability[1]}")


def _lm_memory_ratio(model: str, tier: Tier, reading: MemoryReading) -> Setting:
    total_gb = reading.device.total_bytes / GIB
    allocation = tier.lm_memory_gb.get(model)
    if allocation is None:
        return Setting("lm.gpu_memory_ratio", 0.5, f"{tier.label} sets no fixed allocation for the {model} LM: half of the device")
    ratio = round(min(0.9, allocation / total_gb), 3)
    return Setting("lm.gpu_memory_ratio", ratio, f"{tier.label} allots {allocation:g} GB to the {model} LM, of {total_gb:.2f} GiB")


def _memory(reading: MemoryReading) -> str:
    device = reading.device
    if device.total_bytes is None:
        return "no GPU"
    return f"{device.total_bytes / GIB:.2f} GiB {'simulated' if device.simulated else 'detected'}"
