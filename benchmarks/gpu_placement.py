"""GPU check for issue #24: a two-device layout run on real devices.

Usage: python benchmarks/gpu_placement.py OUTDIR [--dry-run] [--duration S] [--steps N]

1. With two or more CUDA devices: the request (``--duration`` s, batch 1, LM 0.6B) resolved with
   ``--place lm:1,dit:0,vae:0,text_encoder:0`` on the real detection, and run with the real-shaped
   components (random weights, ``--steps`` DiT steps): each phase's device and its measured peak
   (``max_memory_allocated`` on that device) beside the plan's per-device prediction, and every hand-over
   (conditioning, codes, latents) with the devices it went between. With one CUDA device the layout cannot
   have two GPUs: the one-card resolution runs with the LM moved to the CPU (``run(devices={"lm": "cpu"})``),
   which exercises the same cross-device hand-overs (CPU → GPU codes), the DiT stack's phases on the card.
2. A device gone since the plan: the bundled ``two-gpu-3060-4090`` recording's two-card plan run on this
   machine; torch finds other cards (or fewer), and the run must stop with one ``DeviceGoneError`` before
   loading anything.
3. No CUDA context on a device the run does not use: with two CUDA devices, after the LM phase on
   cuda:1, torch reports no memory reserved on a third device (when there is one).

``--dry-run`` does the same on a CPU with the tiny components: the layout of two simulated 8 GB cards
(``--vram 8,8``), every component on the CPU (the flow and the bookkeeping only). Writes
OUTDIR/gpu_placement.json and prints the figures. Budget: ≈90 s on one H100.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from acestep_core import DetectOptions, GenerationRequest, Overrides, ResolutionError, resolve
from acestep_core.vocabulary import GIB

LAYOUT = "lm:1,dit:0,vae:0,text_encoder:0"


def layout_run(duration: int, steps: int, dry_run: bool) -> dict[str, Any]:
    import torch

    from acestep_core.runtime.pipeline import run

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    request = GenerationRequest(duration_s=duration, batch_size=1, lm_model="0.6B", lm="on")
    moved: dict[str, str] = {}
    if dry_run:
        options = DetectOptions(vram_gb="8,8", environ={})
        resolution = resolve(request, detect_options=options, environ={}, place=LAYOUT)
        how = "dry run: two simulated 8 GB cards, every component on the CPU"
    elif count >= 2:
        resolution = resolve(request, place=LAYOUT)
        how = f"{count} CUDA devices: {LAYOUT}"
    else:
        # one card: its own resolution, the LM moved to the CPU (int8 on a CPU is slow: the LM stays bf16)
        resolution = resolve(request, place="single:0", overrides=Overrides(plan={"quantization.lm": "none"}))
        moved = {"lm": "cpu"}
        how = "one CUDA device: the DiT stack on cuda:0, the LM moved to the CPU (run option)"
    row: dict[str, Any] = {
        "how": how,
        "placement": {c: v["device"] for c, v in resolution.plan.value("placement").items()},
        "tiers": {key: tier.label for key, tier in resolution.tiers.items()},
        "predicted_devices_gib": resolution.plan.value("memory.devices"),
        "predicted_phases_gib": resolution.plan.value("memory.phases"),
        "refused": resolution.plan.value("ladder.refused"),
    }
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as out:
            result = run(
                resolution, out_dir=out, size="tiny" if dry_run else "real", steps=steps, progress=False, devices=moved
            )
        row["phases"] = {
            p.name: {
                "device": p.device,
                "placed_on": p.details.get("placed_on"),
                "peak_gib": None if p.peak_bytes is None else round(p.peak_bytes / GIB, 2),
                "measure": p.peak_measure,
                "seconds": p.seconds,
                "received": p.details.get("received", {}),
            }
            for p in result.phases
        }
        row["notes"] = list(result.notes)
        if not dry_run and count >= 3:
            row["reserved_on_an_unused_device_bytes"] = torch.cuda.memory_reserved(2)
        expected = {
            name: "cpu" if dry_run else moved.get(name, phase["placed_on"] if count >= 2 else "cuda:0")
            for name, phase in row["phases"].items()
        }
        row["devices_match_the_layout"] = all(phase["device"] == expected[n] for n, phase in row["phases"].items())
    except Exception as error:  # noqa: BLE001 - an OOM or failure is a result to report
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    row["wall_s"] = round(time.perf_counter() - started, 1)
    return row


def gone_device(dry_run: bool) -> dict[str, Any]:
    """The recorded RTX 4090 + RTX 3060 plan, run here: refused before loading, one error."""
    import torch

    from acestep_core.runtime.pipeline import run

    if dry_run or not torch.cuda.is_available():
        return {"skipped": "no CUDA device: a replayed plan falls back to the CPU here"}
    resolution = resolve(
        GenerationRequest(duration_s=10, batch_size=1, lm_model="0.6B", lm="on"),
        detect_options=DetectOptions(replay="two-gpu-3060-4090", environ={}),
        environ={},
        place=LAYOUT,
    )
    try:
        with tempfile.TemporaryDirectory() as out:
            run(resolution, out_dir=out, size="tiny", steps=1, progress=False)
    except ResolutionError as error:
        return {"error_class": type(error).__name__, "message": str(error)}
    return {"error_class": None, "message": "the recorded plan ran: no device was found missing"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny components on the CPU: the flow only")
    parser.add_argument("--duration", type=int, default=30, help="clip length (s)")
    parser.add_argument("--steps", type=int, default=2, help="DiT steps")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    report = {"layout": layout_run(args.duration, args.steps, args.dry_run), "gone": gone_device(args.dry_run)}
    layout = report["layout"]
    print(f"== {layout['how']}: placement {layout['placement']}, tiers {layout['tiers']}")
    for name, phase in (layout.get("phases") or {}).items():
        received = ", ".join(f"{what} {h['from']}→{h['to']}" for what, h in phase["received"].items())
        print(
            f"   {name:<13} on {phase['device']} (placed on {phase['placed_on']}): {phase['peak_gib']} GiB "
            f"({phase['measure']}), {phase['seconds']:.1f} s" + (f"; received {received}" if received else "")
        )
    if "error" in layout:
        print(f"   failed: {layout['error']}")
    print(f"== a device gone since the plan: {report['gone']}")
    (args.outdir / "gpu_placement.json").write_text(json.dumps(report, indent=1, default=str))
    ok = "error" not in layout and layout.get("devices_match_the_layout") is True
    gone = report["gone"]
    return 0 if ok and ("skipped" in gone or gone.get("error_class") == "DeviceGoneError") else 1


if __name__ == "__main__":
    sys.exit(main())
