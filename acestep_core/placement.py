"""Several devices: which device runs each component (the ``place_components`` hook's vocabulary).

A *layout* maps every component (``lm``, ``text_encoder``, ``dit``, ``vae``) to a device key
(:attr:`acestep_core.DeviceMemory.key`: ``cuda:1``). The user writes one as (``--place``,
``resolve(place=...)``, upstream's ``ACESTEP_GPU_MAPPING``)::

    auto                               the built-in rule (:func:`auto_layout`)
    single:N                           every component on device N
    lm:1,dit:0,vae:0,text_encoder:0    a map: a component left out follows the DiT, the DiT the default device

A device is ``N`` (the ordinal torch uses: ``cuda:N``), ``cuda:N`` / ``xpu:N``, ``mps``, or a unique UUID
prefix (``GPU-ca2e``). Upstream's pins ``ACESTEP_DIT_DEVICE``, ``ACESTEP_VAE_DEVICE`` and
``ACESTEP_LM_DEVICE`` (``cuda:1``) place one component each; the text encoder follows the DiT.

Pure Python, no torch: what a layout makes of a request is worked out by the core
(:func:`acestep_core.resolve`) through every hook, and each device's share of the run is predicted by
:mod:`acestep_core.optimize.layout`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Literal

from acestep_core.record import Record
from acestep_core.types import LayoutOutcome, MemoryReading, PlaceOptions, Tier
from acestep_core.vocabulary import COMPONENTS, LM_SIZES

PLACE_ENV = "ACESTEP_GPU_MAPPING"
"""Upstream's variable (ACE-Step-1.5 pull requests #1262-#1264): ``auto``, ``single:N`` or a map."""
DEVICE_ENVS: Mapping[str, str] = {"dit": "ACESTEP_DIT_DEVICE", "vae": "ACESTEP_VAE_DEVICE", "lm": "ACESTEP_LM_DEVICE"}
"""Upstream's pins (ACE-Step-1.5 pull request #1269), one component each: ``ACESTEP_LM_DEVICE=cuda:1``."""
PLACE_ACCEPTED = (
    "auto, single:N, or COMPONENT:DEVICE pairs such as lm:1,dit:0,vae:0,text_encoder:0 (components: "
    f"{', '.join(COMPONENTS)}; a device is N, cuda:N, xpu:N, mps or a GPU UUID prefix)"
)
FOLLOWS_DIT = ("text_encoder", "vae", "lm")
"""Components a map leaves out run where the DiT runs (the DiT, where the default device is)."""

Layout = Mapping[str, str]
"""Component → device key, every component named."""
Evaluate = Callable[[Layout], LayoutOutcome]
"""What a request becomes under a layout (the core's, handed to ``place_components``)."""


class PlaceError(ValueError):
    """A placement the user wrote that cannot be used (bad syntax, or a device that is not there)."""


class PlaceSpec(Record):
    """A placement as written, its devices not yet looked up among the visible ones."""

    mode: Literal["auto", "single", "map"]
    devices: Mapping[str, str]
    """``single``: ``{"*": selector}``; ``map``: component → selector."""


_SELECTOR = re.compile(r"^(\d+|(cuda|xpu):\d+|mps|(gpu-|mig-)?[0-9a-f][0-9a-f-]*)$")


def parse_place(text: str) -> PlaceSpec:
    """``auto``, ``single:N`` or a map, checked for syntax (devices are looked up later).

    :raises PlaceError: naming the problem and what is accepted."""
    raw = text.strip().lower()
    if raw == "auto":
        return PlaceSpec("auto", {})
    if raw.startswith("single:"):
        return PlaceSpec("single", {"*": _selector(raw.removeprefix("single:"), text)})
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        component, sep, selector = part.partition(":")
        component = component.strip().replace("-", "_")
        if not part or not sep:
            raise PlaceError(f"{text.strip()!r:.80} is not a placement: accepted: {PLACE_ACCEPTED}")
        if component not in COMPONENTS:
            raise PlaceError(
                f"{component!r:.40} is not a component ({', '.join(COMPONENTS)}): accepted: {PLACE_ACCEPTED}"
            )
        if component in pairs:
            raise PlaceError(f"{component} is placed twice in {text.strip()!r:.80}")
        pairs[component] = _selector(selector, text)
    return PlaceSpec("map", pairs)


def _selector(selector: str, text: str) -> str:
    selector = selector.strip()
    if selector == "cpu":
        raise PlaceError(
            "the CPU is not a device to place a component on: offloading keeps it on the CPU between its phases "
            "(--offload, --set offload.lm=model)"
        )
    if not _SELECTOR.match(selector):
        raise PlaceError(f"{selector!r:.40} in {text.strip()!r:.80} is not a device: accepted: {PLACE_ACCEPTED}")
    return selector


def device_key(selector: str, readings: Mapping[str, MemoryReading]) -> str:
    """The key of the one visible device ``selector`` names (an ordinal, a key, a unique UUID prefix).

    :raises PlaceError: no device, or several, with the visible ones listed."""
    devices = [reading.device for reading in readings.values()]
    if selector in readings:
        return selector
    if selector.isdigit():
        found = [d for d in devices if d.index == int(selector)]
    else:
        bare = re.sub(r"^(gpu|mig)-", "", selector.lower())
        found = [d for d in devices if d.uuid and re.sub(r"^(gpu|mig)-", "", d.uuid.lower()).startswith(bare)]
    if len(found) == 1:
        return found[0].key
    listing = "; ".join(device.describe() for device in devices) or "none"
    what = f"names {len(found)} devices" if found else "names no visible device"
    raise PlaceError(f"{selector!r:.60} {what}; visible: {listing}")


def single(key: str) -> dict[str, str]:
    """Every component on one device."""
    return dict.fromkeys(COMPONENTS, key)


def layout_of(spec: PlaceSpec, readings: Mapping[str, MemoryReading], default: str) -> dict[str, str] | None:
    """The layout a spec names over ``readings`` (None for ``auto``); ``default`` is where the DiT runs
    when a map leaves it out.

    :raises PlaceError: a device that is not there."""
    if spec.mode == "auto":
        return None
    if spec.mode == "single":
        return single(device_key(spec.devices["*"], readings))
    keys = {component: device_key(selector, readings) for component, selector in spec.devices.items()}
    dit = keys.get("dit", default)
    return {component: keys.get(component, dit) for component in COMPONENTS}


def environment_spec(environ: Mapping[str, str]) -> tuple[str, PlaceSpec] | None:
    """Upstream's variables as a spec, with the variables as written (``ACESTEP_GPU_MAPPING`` first, else
    the pins); None when none is set.

    :raises PlaceError: naming the variable, for a value that is not a placement."""
    mapping = environ.get(PLACE_ENV, "").strip()
    if mapping:
        written = f"{PLACE_ENV}={mapping[:80]}"
        try:
            return written, parse_place(mapping)
        except PlaceError as error:
            raise PlaceError(f"{written}: {error}") from None
    pins = {c: environ[name].strip() for c, name in DEVICE_ENVS.items() if environ.get(name, "").strip()}
    if not pins:
        return None
    written = ", ".join(f"{DEVICE_ENVS[c]}={v[:40]}" for c, v in pins.items())
    try:
        return written, PlaceSpec("map", {c: _selector(v.lower(), v) for c, v in pins.items()})
    except PlaceError as error:
        raise PlaceError(f"{written}: {error}") from None


def user_layout(
    options: PlaceOptions, readings: Mapping[str, MemoryReading]
) -> tuple[dict[str, str] | None, str, tuple[str, ...]]:
    """The layout the user asked for, how it was given, and the notes of what was ignored: ``--place``
    (a map or ``single:N``; ``auto`` asks for none), else ``--device`` (that device alone), else upstream's
    variables. None: nothing asked (``auto``).

    :raises PlaceError: ``--place`` names a device that is not there (a variable that is not a placement,
        or names no visible device, is a note instead: explicit input is strict, the environment forgiving)."""
    default = options.default or next(iter(readings), "")
    if options.place is not None:
        spec = parse_place(options.place)
        return layout_of(spec, readings, default), f"--place {options.place.strip()}", ()
    if options.device is not None and options.device.strip():
        return single(default), f"--device {options.device.strip()}", ()
    try:
        found = environment_spec(options.environ)
        if found is None:
            return None, "", ()
        written, spec = found
        try:
            return layout_of(spec, readings, default), written, ()
        except PlaceError as error:
            raise PlaceError(f"{written}: {error}") from None
    except PlaceError as error:
        return None, "", (f"{error}; ignored: the components are placed automatically",)


def split_tier(dit: Tier, lm: Tier) -> Tier:
    """The tier a run gets with the LM on another device than the DiT: the DiT's device's tier, whose
    limits with the LM are its limits without it (they leave room for an LM the DiT's card no longer
    holds), with the LM's sizes, recommendation, default, memory allotments and share from the tier of
    the LM's device. Each device's share of the run is still checked against its own budget. The label
    says so: ``Tier 6 (LM sizes of Tier 4)``, or ``Tier 4 (LM on another device)`` where both are alike."""
    return dataclasses.replace(
        dit,
        label=f"{dit.label} (LM on another device)"
        if lm.label == dit.label
        else f"{dit.label} (LM sizes of {lm.label})",
        max_duration_with_lm_s=dit.max_duration_without_lm_s,
        max_batch_with_lm=dit.max_batch_without_lm,
        lm_models=lm.lm_models,
        lm_memory_gb=dict(lm.lm_memory_gb),
        recommended_lm=lm.recommended_lm,
        lm_default_on=lm.lm_default_on,
        lm_memory_ratio_min=lm.lm_memory_ratio_min,
        lm_memory_ratio_max=lm.lm_memory_ratio_max,
    )


# --------------------------------------------------------------------------------------------- auto
def candidate_layouts(readings: Mapping[str, MemoryReading], default: str) -> list[dict[str, str]]:
    """The layouts ``auto`` compares: every device alone (the default first), then the LM on one device
    and the DiT stack (DiT, VAE) on another, the text encoder with either."""
    keys = [default, *(key for key in readings if key != default)]
    layouts = [single(key) for key in keys]
    for stack in keys:
        for lm in keys:
            if lm == stack:
                continue
            for encoder in (stack, lm):
                layouts.append({"lm": lm, "text_encoder": encoder, "dit": stack, "vae": stack})
    return layouts


def grant(outcome: LayoutOutcome) -> tuple[bool, int, int, float, int]:
    """How much of the request a layout runs, comparable: not refused, fewest clamps, then the larger
    LM, the longer clip, the larger batch."""
    lm = LM_SIZES.index(outcome.lm_model) + 1 if outcome.lm_model in LM_SIZES else 0  # type: ignore[arg-type]
    return (not outcome.refused, -len(outcome.clamps), lm, outcome.duration_s, outcome.batch)


def auto_layout(readings: Mapping[str, MemoryReading], default: str, evaluate: Evaluate) -> tuple[dict[str, str], str]:
    """``auto``: the layout to run, and why.

    1. The default device alone (``cuda:0``, or ``--device``) when it runs the request unclamped: one
       device when one suffices, and the answer a single card always gave.
    2. Else, among the layouts that run it unclamped, the one on the fewest devices, then with the least
       predicted peak pressure (peak ÷ budget) on its most loaded device.
    3. Else the layout that grants the most (:func:`grant`), if it grants more than the default device
       alone: the LM on its own card when that lifts a clamp or an LM-size refusal.
    """
    base = single(default)
    first = evaluate(base)
    name = _names(readings)
    if first.unclamped:
        return base, f"auto: {name(default)} alone runs the request unclamped ({_load(first)})"
    layouts = [layout for layout in candidate_layouts(readings, default) if layout != base]
    if not layouts:
        return base, f"auto: {name(default)} is the only device ({'; '.join(first.clamps) or 'refused'})"
    outcomes = [first, *(evaluate(layout) for layout in layouts)]
    order = {id(outcome): position for position, outcome in enumerate(outcomes)}
    unclamped = [outcome for outcome in outcomes if outcome.unclamped]
    if unclamped:
        best = min(unclamped, key=lambda o: (len(o.devices), o.pressure or 0.0, order[id(o)]))
        why = "runs the request unclamped" + (" on the fewest devices" if len(unclamped) > 1 else "")
        return dict(best.components), (
            f"auto: {name(default)} alone would clamp it ({'; '.join(first.clamps) or 'refused'}); "
            f"{describe_layout(best.components, readings)} {why} ({_load(best)})"
        )
    best = max(outcomes, key=lambda o: (grant(o), -len(o.devices), -(o.pressure or 0.0), -order[id(o)]))
    if grant(best) <= grant(first):
        return base, (
            f"auto: no layout over {len(readings)} devices runs more of the request than {name(default)} alone "
            f"({'; '.join(first.clamps) or 'refused'})"
        )
    return dict(best.components), (
        f"auto: no layout runs the request unclamped; {describe_layout(best.components, readings)} runs the most of "
        f"it ({'; '.join(best.clamps) or 'refused'}; {name(default)} alone: {'; '.join(first.clamps) or 'refused'})"
    )


def _load(outcome: LayoutOutcome) -> str:
    if outcome.pressure is None:
        return "memory not predicted here"
    return f"the most loaded device predicted at {outcome.pressure:.0%} of its budget"


def _names(readings: Mapping[str, MemoryReading]) -> Callable[[str], str]:
    return lambda key: readings[key].device.describe() if key in readings else key


def describe_layout(layout: Layout, readings: Mapping[str, MemoryReading] | None = None) -> str:
    """``the LM on cuda:1 (…), text_encoder, dit, vae on cuda:0 (…)``: components grouped by device."""
    groups: dict[str, list[str]] = {}
    for component in COMPONENTS:
        groups.setdefault(layout[component], []).append(component)
    name = _names(readings or {})
    if len(groups) == 1:
        [key] = groups
        return f"every component on {name(key)}"
    return "; ".join(f"{', '.join(components)} on {name(key)}" for key, components in groups.items())
