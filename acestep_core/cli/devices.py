"""``acestep-core devices`` (upstream's ``--list-gpus``): every visible device, the tier it gets alone,
and what the best layout over all of them allows that no single one does."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from acestep_core.cli import UsageError, add_json_flag, environ, print_json
from acestep_core.cli.flags import memory_gb
from acestep_core.inputs import clip
from acestep_core.optimize.plan import planned_run
from acestep_core.placement import candidate_layouts, describe_layout
from acestep_core.resolve import device_identity, device_readings, resolve
from acestep_core.types import DetectOptions, GenerationRequest, MemoryReading, Resolution
from acestep_core.vocabulary import COMPONENTS, GIB, LM_SIZES, MAX_DURATION_S

EXAMPLES = """\
examples:
  acestep-core devices                                 this machine's devices, and what they allow together
  acestep-core devices --vram 8,8                      two simulated 8 GB cards
  acestep-core devices --replay two-gpu-3060-4090      a recorded RTX 4090 + RTX 3060 machine
  acestep-core devices --json                          the same, for tools

Each device's tier is the one it gets alone. "Allows" is what a request is granted once every device's
share of it is checked against that device's budget: the longest clip (batch 1), the largest batch
(a 30 s clip), each with the LM (any size) and without, and the LM sizes that run (a 30 s clip). The
layouts compared are each device alone and the LM on one device with the DiT stack on another (the text
encoder with either), as `plan --place auto` compares them.
"""

SHORT_CLIP_S = 30
"""The clip the batch and LM-size probes ask for."""
LARGEST_BATCH = 64
"""The batch the batch probes ask for: more than any table allows, so the tier's limit (and then the
memory check) decides."""
PROBES: Mapping[str, GenerationRequest] = {
    "longest_with_lm_s": GenerationRequest(duration_s=MAX_DURATION_S, batch_size=1, lm="on"),
    "largest_batch_with_lm": GenerationRequest(duration_s=SHORT_CLIP_S, batch_size=LARGEST_BATCH, lm="on"),
    "longest_without_lm_s": GenerationRequest(duration_s=MAX_DURATION_S, batch_size=1, lm="off"),
    "largest_batch_without_lm": GenerationRequest(duration_s=SHORT_CLIP_S, batch_size=LARGEST_BATCH, lm="off"),
}
WORDS = {
    "longest_with_lm_s": "longest clip with the LM",
    "largest_batch_with_lm": f"largest batch with the LM ({SHORT_CLIP_S} s)",
    "longest_without_lm_s": "longest clip without the LM",
    "largest_batch_without_lm": f"largest batch without the LM ({SHORT_CLIP_S} s)",
    "lm_sizes": "LM sizes",
}


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "devices",
        help="every visible device, its tier alone, and what they allow together (upstream's --list-gpus)",
        description="List every visible device with the tier it gets alone and what it allows alone, then what "
        "the best placement over all of them allows that no single device does (longest clip, largest batch, "
        "LM sizes).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_json_flag(parser)
    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--vram", type=memory_gb, metavar="GB[,GB...]", help="simulate cards of these sizes")
    hardware.add_argument("--replay", metavar="FILE", help="replay a recorded machine (JSON)")
    hardware.add_argument("--tiers", metavar="NAME", help="use this tier table")
    hardware.add_argument("--redetect", action="store_true", help="ignore any cached reading")
    parser.set_defaults(handler=run_devices)


def run_devices(args: argparse.Namespace) -> int:
    for flag, value in (("--replay", args.replay), ("--tiers", args.tiers)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} '': an empty value; leave {flag} out for the default")
    if args.vram is not None and args.replay is not None:
        raise UsageError(f"--vram {clip(args.vram)} and --replay {clip(args.replay)} both choose the devices: give one")
    env = environ()
    first = resolve(
        detect_options=DetectOptions(vram_gb=args.vram, replay=args.replay, environ=env),
        tiers=args.tiers,
        redetect=args.redetect,
        environ=env,
        place="auto",
    )
    for problem in first.problems:
        if problem.kind == "invalid-setting" and (problem.setting or "").startswith("--"):
            raise UsageError(problem.error)
    found = survey(detected(first.reading), tiers=args.tiers, environ=env)
    found["warnings"] = [*first.reading.notes, *(p.message() for p in first.problems)]
    if args.json:
        print_json(found)
    else:
        print(render(found))
    return 0


def detected(reading: MemoryReading) -> MemoryReading:
    """The reading as detected: no placement."""
    return MemoryReading(device=reading.device, visible=reading.visible, notes=reading.notes)


def survey(
    reading: MemoryReading, *, tiers: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Every device alone (its tier, what it allows) and the best layout over all of them, per measure."""
    readings = device_readings(reading)
    default = reading.device.key
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    layouts: list[dict[str, Any]] = []
    for layout in candidate_layouts(readings, default):
        keys = [layout[c] for c in COMPONENTS]
        signature = tuple(keys.index(k) for k in keys) + tuple(device_identity(readings[k].device) for k in keys)
        if signature not in seen:
            seen[signature] = allows(reading, layout, tiers=tiers, environ=environ)
        layouts.append({"layout": dict(layout), "allows": dict(seen[signature])})
    alone = {entry["layout"]["dit"]: entry for entry in layouts if len(set(entry["layout"].values())) == 1}
    devices = []
    for key, device_reading in readings.items():
        device = device_reading.device
        tier = alone[key]["allows"].pop("tier")
        devices.append(
            {
                "device": key,
                "name": device.name,
                "uuid": device.uuid,
                "total_gib": None if device.total_bytes is None else round(device.total_bytes / GIB, 2),
                "free_gib": None if device.free_bytes is None else round(device.free_bytes / GIB, 2),
                "tier": tier,
                "alone": alone[key]["allows"],
            }
        )
    for entry in layouts:
        entry["allows"].pop("tier", None)
    best, beyond = _best(layouts, [entry["alone"] for entry in devices], readings)
    return {"devices": devices, "best": best, "beyond_any_single_device": beyond}


def allows(
    reading: MemoryReading, layout: Mapping[str, str], *, tiers: str | None, environ: Mapping[str, str] | None
) -> dict[str, Any]:
    """What a layout grants each probe once every device's share is checked; 0 (None for the LM) where
    refused. ``tier``: the tier of the layout's DiT device alone."""
    place = ",".join(f"{component}:{layout[component]}" for component in COMPONENTS)

    def run(request: GenerationRequest) -> Resolution:
        return resolve(request, reading=reading, place=place, tiers=tiers, environ=environ or {})

    found: dict[str, Any] = {}
    for name, request in PROBES.items():
        resolution = run(request)
        shape = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
        refused = bool(resolution.plan.value("ladder.refused"))
        if name == "longest_with_lm_s" and "tier" not in found:
            dit = resolution.tiers.get(layout["dit"], resolution.tier)
            found["tier"] = {"name": dit.name, "label": dit.label, "memory": dit.vram_label()}
        wants_lm = request.lm == "on"
        if refused or (wants_lm and shape.lm_model is None):
            found[name] = 0
        else:
            found[name] = shape.duration_s if name.startswith("longest") else shape.batch
    sizes = []
    for size in LM_SIZES:
        resolution = run(GenerationRequest(duration_s=SHORT_CLIP_S, batch_size=1, lm_model=size, lm="on"))
        shape = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
        if shape.lm_model == size and not resolution.plan.value("ladder.refused"):
            sizes.append(size)
    found["lm_sizes"] = sizes
    return found


def _best(
    layouts: list[dict[str, Any]], singles: list[dict[str, Any]], readings: Mapping[str, MemoryReading]
) -> tuple[dict[str, Any], list[str]]:
    best: dict[str, Any] = {}
    beyond: list[str] = []
    for measure in (*PROBES, "lm_sizes"):
        if measure == "lm_sizes":
            value: Any = [s for s in LM_SIZES if any(s in entry["allows"]["lm_sizes"] for entry in layouts)]
            winner = max(layouts, key=lambda entry: len(entry["allows"]["lm_sizes"]))
            most_alone = max((len(single["lm_sizes"]) for single in singles), default=0)
            better = len(value) > most_alone
        else:
            winner = max(layouts, key=lambda entry: entry["allows"][measure])
            value = winner["allows"][measure]
            better = value > max((single[measure] for single in singles), default=0)
        if measure == "lm_sizes":
            holders = [entry for entry in layouts if set(entry["allows"]["lm_sizes"]) == set(value)]
            winner = holders[0] if holders else winner
        best[measure] = {"value": value, "layout": winner["layout"]}
        if better:
            shown = (
                ", ".join(value) if measure == "lm_sizes" else f"{value:g}" + (" s" if measure.endswith("_s") else "")
            )
            beyond.append(f"{WORDS[measure]}: {shown} ({describe_layout(winner['layout'], readings)})")
    return best, beyond


def render(found: Mapping[str, Any]) -> str:
    lines: list[str] = []
    for device in found["devices"]:
        memory = "memory unknown" if device["total_gib"] is None else f"{device['total_gib']:.2f} GiB"
        if device["free_gib"] is not None:
            memory += f", {device['free_gib']:.2f} GiB free"
        uuid = f", {device['uuid']}" if device["uuid"] else ""
        lines.append(f"{device['device']:<7} {device['name']}{uuid}: {memory}")
        tier = device["tier"]
        lines.append(f"{'':<7} alone: {tier['label']} ({tier['memory']}): {_allowance(device['alone'])}")
    best = found["best"]
    lines.append("together (the best placement for each):")
    lines.append(f"{'':<7} {_allowance({measure: entry['value'] for measure, entry in best.items()})}")
    if found["beyond_any_single_device"]:
        lines.append("beyond any single device:")
        lines.extend(f"  + {line}" for line in found["beyond_any_single_device"])
    else:
        lines.append("beyond any single device: nothing (one device alone allows as much as any placement)")
    if found.get("warnings"):
        lines.append("warnings")
        lines.extend(f"  ! {warning}" for warning in found["warnings"])
    return "\n".join(lines)


def _allowance(allows: Mapping[str, Any]) -> str:
    def seconds(value: float) -> str:
        return f"≤ {value:g} s" if value else "refused"

    def batch(value: int) -> str:
        return f"batch ≤ {value}" if value else "refused"

    sizes = ", ".join(allows["lm_sizes"]) or "none"
    return (
        f"with the LM {seconds(allows['longest_with_lm_s'])}, {batch(allows['largest_batch_with_lm'])}; "
        f"without {seconds(allows['longest_without_lm_s'])}, {batch(allows['largest_batch_without_lm'])}; "
        f"LM {sizes}"
    )
