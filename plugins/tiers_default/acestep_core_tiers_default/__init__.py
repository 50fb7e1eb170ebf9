"""ACE-Step 1.5's tier tables and the rules that apply any tier table.

Three tables ship here: ``default`` (``tiers.toml``: the GPU guide, the seed), ``upstream-2026-02``
(``upstream-2026-02.toml``: what upstream's ``acestep/gpu_config.py`` of February 2026, commit
f30aee4c, actually did) and ``upstream-2026-04`` (``upstream-2026-04.toml``: upstream main's 8-tier
table, commit 592c315, unchanged on main since), value for value, for callers moving onto
acestep-core. ``default`` is active unless another is chosen by name (``--tiers upstream-2026-04``,
``ACESTEP_CORE_TIERS``).

Tier selection is one rule with the table's parameters. The figure compared is the device's total
memory in GiB as the detection plugin reports it: NVML's total where NVML answered (the card's full
memory, closest to the class it is sold as: an H100 80GB reads 79.65 GiB there, 79.2 GiB through
torch), else torch's total. A size just below a tier's lower boundary counts as the boundary when
it is within the tier's ``class_tolerance_gb`` (any size, simulated too: upstream's "15.5 GB is a
16 GB card") or, for a *detected* total, within the table's ``real_card_tolerance`` (5% in
``default``: an "8 GB" card reading 7.6-7.9 GiB is an 8 GB card). The tier is then the first whose
range holds the size, each tier's ``max_inclusive`` saying whether its upper bound belongs to it.
With no accelerator (CPU) the first tier applies.

Requests. Over a limit → clamped to it, with a warning naming the limit, the tier and the memory
figure. With the LM on, the tier's with-LM limits apply. An LM size the tier does not allow is
refused and the tier's recommended size (``recommended_lm``) offered; with no LM allowed the LM is turned
off. The LM stays off unless asked for on tiers whose table says ``lm_default_on = false``, and on
any device of 6 GB or less (the seed's "≤6GB" note; a 6 GB device is Tier 3 by range, so this is a
rule on the memory figure, not on the tier). A DiT the tier does not allow (``dit_models``) is refused
and the tier's default DiT (the 2B turbo where allowed) runs instead.
"""

from __future__ import annotations

import functools
from pathlib import Path

from acestep_core.plugin_api import (
    GIB,
    MIN_DURATION_S,
    AdjustedRequest,
    Adjustment,
    GenerationRequest,
    MemoryReading,
    Setting,
    Tier,
    TierTable,
    hookimpl,
    parse_table,
    plan_settings,
)
from acestep_core_tiers_default.placement import place_components

__all__ = ["adjust_request", "configure_optimizations", "place_components", "register_tier_tables", "select_tier"]

TABLE_FILE = "tiers.toml"
UPSTREAM_TABLE_FILE = "upstream-2026-02.toml"
UPSTREAM_MAIN_TABLE_FILE = "upstream-2026-04.toml"
LM_OFF_BY_DEFAULT_UP_TO_GB = 6.0
"""The seed: "VRAM ≤6GB: the LM is not initialised by default, to keep memory for the DiT". This
holds on any tier (a 6 GB device is in Tier 3 by range), so it is a rule here, not a table field."""


@hookimpl
def register_tier_tables() -> list[TierTable]:
    return [default_table(), upstream_table(), upstream_main_table()]


@functools.cache
def _table(file: str) -> TierTable:
    """A shipped table, parsed and validated once per process (the record is frozen, so sharing is safe).

    Read beside this module rather than through :mod:`importlib.resources`, whose import (tempfile,
    zipfile) would cost every start-up more than reading the table does; pip installs packages unzipped."""
    text = (Path(__file__).parent / file).read_text(encoding="utf-8")
    return parse_table(text, source=f"{__name__}/{file}")


def default_table() -> TierTable:
    """``default``: the GPU guide's table."""
    return _table(TABLE_FILE)


def upstream_table() -> TierTable:
    """``upstream-2026-02``: upstream's February 2026 code, value for value."""
    return _table(UPSTREAM_TABLE_FILE)


def upstream_main_table() -> TierTable:
    """``upstream-2026-04``: upstream main's 8-tier table (commit 592c315), value for value."""
    return _table(UPSTREAM_MAIN_TABLE_FILE)


@hookimpl(trylast=True)
def select_tier(reading: MemoryReading, table: TierTable) -> Tier | None:
    """:meth:`TierTable.tier_for` (the rule above): a simulated size is taken as given."""
    device = reading.device
    if device.total_bytes is None or device.total_bytes <= 0:
        return table.tiers[0]
    return table.tier_for(device.total_bytes / GIB, detected=not device.simulated)


@hookimpl(trylast=True)
def adjust_request(request: GenerationRequest, tier: Tier, reading: MemoryReading) -> AdjustedRequest:
    where = f"{tier.label} ({tier.vram_label()}, {_memory(reading)})"
    changes: list[Adjustment] = []
    lm_model = _choose_lm(request, tier, reading, where, changes)
    lm_on = lm_model is not None
    with_lm = "with the LM" if lm_on else "without the LM"

    duration = request.duration_s
    limit = tier.max_duration_s(lm_on)
    if duration is not None and duration < MIN_DURATION_S:
        changes.append(
            Adjustment(
                "duration_s",
                duration,
                MIN_DURATION_S,
                f"duration {duration:g} s is below the {MIN_DURATION_S} s ACE-Step generates at least ({where}); "
                f"using {MIN_DURATION_S} s",
            )
        )
        duration = MIN_DURATION_S
    if duration is not None and duration > limit:
        changes.append(
            Adjustment(
                "duration_s",
                duration,
                limit,
                f"duration {duration:g} s exceeds the {limit} s limit of {where} {with_lm}; using {limit} s",
            )
        )
        duration = limit

    batch = request.batch_size
    limit = tier.max_batch(lm_on)
    if batch > limit:
        changes.append(
            Adjustment(
                "batch_size",
                batch,
                limit,
                f"batch size {batch} exceeds the limit of {limit} for {where} {with_lm}; using {limit}",
            )
        )
        batch = limit
    dit = _choose_dit(request, tier, where, changes)
    return AdjustedRequest(
        duration_s=duration, batch_size=batch, lm_model=lm_model, changes=tuple(changes), dit_model=dit
    )


def _choose_dit(request: GenerationRequest, tier: Tier, where: str, changes: list[Adjustment]) -> str:
    default = tier.default_dit
    if request.dit_model is None or request.dit_model == default:
        return default
    if request.dit_model not in tier.dit_models:
        allowed = ", ".join(tier.dit_models)
        changes.append(
            Adjustment(
                "dit_model",
                request.dit_model,
                default,
                f"DiT {request.dit_model} is not allowed on {where} (allowed: {allowed}); using {default}",
            )
        )
        return default
    return request.dit_model


def _small_device(reading: MemoryReading) -> bool:
    """≤6 GB, compared as read: a real card reads at or below its class, so no tolerance is needed."""
    total = reading.device.total_bytes
    return total is not None and total / GIB <= LM_OFF_BY_DEFAULT_UP_TO_GB + 1e-9


def _choose_lm(
    request: GenerationRequest, tier: Tier, reading: MemoryReading, where: str, changes: list[Adjustment]
) -> str | None:
    if request.lm == "off":
        return None
    wanted = request.lm == "on" or request.lm_model is not None
    if not wanted and not tier.lm_default_on:
        if tier.lm_models:
            changes.append(
                Adjustment(
                    "lm_model",
                    None,
                    None,
                    f"the LM is not initialised by default on {where}, to leave memory to "
                    "the DiT; ask for it to load it",
                    warning=False,
                )
            )
        return None
    if not wanted and _small_device(reading):
        changes.append(
            Adjustment(
                "lm_model",
                None,
                None,
                f"the LM is not initialised by default on devices of {LM_OFF_BY_DEFAULT_UP_TO_GB:g} GB or less "
                f"({where}), to leave memory to the DiT; ask for it to load it",
                warning=False,
            )
        )
        return None
    if not tier.lm_models:
        if wanted:
            changes.append(
                Adjustment("lm_model", request.lm_model or "on", None, f"{where} allows no LM; the LM is turned off")
            )
        return None
    if request.lm_model is None:
        changes.append(
            Adjustment(
                "lm_model",
                None,
                tier.recommended_lm,
                f"no LM size given: using {tier.recommended_lm}, recommended for {tier.label}",
                warning=False,
            )
        )
        return tier.recommended_lm
    if request.lm_model not in tier.lm_models:
        allowed = ", ".join(tier.lm_models)
        changes.append(
            Adjustment(
                "lm_model",
                request.lm_model,
                tier.recommended_lm,
                f"LM {request.lm_model} is not allowed on {where} (allowed: {allowed}); using the recommended "
                f"{tier.recommended_lm}",
            )
        )
        return tier.recommended_lm
    return request.lm_model


@hookimpl(trylast=True)
def configure_optimizations(adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading) -> list[Setting]:
    """The tier's optimization defaults made concrete for the device, checked against its memory
    budget by the memory model and stepped down the ladder where they do not fit
    (:func:`acestep_core.optimize.plan_settings`; pure Python, no torch)."""
    return plan_settings(adjusted, tier, reading)


def _memory(reading: MemoryReading) -> str:
    device = reading.device
    if device.total_bytes is None:
        return "no GPU"
    return f"{device.total_bytes / GIB:.2f} GiB {'simulated' if device.simulated else 'detected'}"
