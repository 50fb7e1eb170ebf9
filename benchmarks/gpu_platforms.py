"""GPU check for issue #12: the platform decisions on the real card, and the default request at Tier 6
and unlimited run through the real-shaped components.

Usage: python benchmarks/gpu_platforms.py OUTDIR [--dry-run] [--duration S] [--steps N]

1. Decisions on this card (real detection): backend, compute capability, the precision chosen per
   component against ``torch.cuda.is_bf16_supported()``, attention, compile, and ``lm.backend`` with
   its reason; whether vllm is importable (``importlib.util.find_spec``, never imported) and what the
   rule gives with and without it.
2. Runs: the default request resolved at Tier 6 (``MAX_CUDA_VRAM=16``, the allocator capped at
   16 GiB) and on the whole card (unlimited), then run with ``generate --size real`` (random weights)
   at a bounded clip (``--duration``, default 30 s, ``--steps`` 2): per phase, the measured peak
   (``max_memory_allocated``) beside the plan's prediction for the same run shape, and the wall time.

``--dry-run`` does the same on a CPU with the tiny components (the flow only; no measurement of a
card). Writes OUTDIR/gpu_platforms.json and prints the figures. Budget: ≈150 s on one H100.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from acestep_core import COMPONENTS, GIB, DetectOptions, GenerationRequest, resolve
from acestep_core.optimize import platforms


def decisions(environ: dict[str, str]) -> dict[str, Any]:
    import torch

    resolution = resolve(
        GenerationRequest(lm_model="0.6B"), detect_options=DetectOptions(environ=environ), environ=environ
    )
    device, plan = resolution.reading.device, resolution.plan
    vllm_found = platforms.installed("vllm")
    row: dict[str, Any] = {
        "device": device.name,
        "backend": device.backend,
        "compute_capability": device.compute_capability,
        "tier": resolution.tier.label,
        "precision": {c: plan.value(f"precision.{c}") for c in COMPONENTS},
        "precision_reason": plan["precision.dit"].reason,
        "bf16_supported_by_torch": bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        "attention": plan.value("attention"),
        "attention_reason": plan["attention"].reason,
        "compile": plan.value("compile"),
        "lm_backend": plan.value("lm.backend"),
        "lm_backend_reason": plan["lm.backend"].reason if "lm.backend" in plan else "the LM does not run on this tier",
        "vllm_importable": vllm_found,
        "lm_backend_if_vllm_installed": platforms.lm_backend(resolution.reading, find=lambda m: m == "vllm").value,
        "vllm_problem_without_it": platforms.lm_backend_problem("vllm", resolution.reading, find=lambda _: False),
    }
    uses_bf16 = "bf16" in row["precision"].values()
    row["precision_agrees_with_torch"] = uses_bf16 == row["bf16_supported_by_torch"] or device.backend == "cpu"
    return row


def one_run(label: str, environ: dict[str, str], duration: int, steps: int, dry_run: bool) -> dict[str, Any]:
    import torch

    from acestep_core.runtime.pipeline import generate

    default = resolve(GenerationRequest(), detect_options=DetectOptions(environ=environ), environ=environ)
    bounded = resolve(
        GenerationRequest(duration_s=duration, batch_size=1),
        detect_options=DetectOptions(environ=environ),
        environ=environ,
    )
    row: dict[str, Any] = {
        "label": label,
        "tier": default.tier.label,
        "default_request": {
            "duration_s": default.adjusted.duration_s,
            "batch": default.adjusted.batch_size,
            "lm": default.adjusted.lm_model,
        },
        "default_plan": {
            "refused": bool(default.plan.value("ladder.refused")),
            "rungs": default.plan.value("ladder.rungs"),
            "predicted_peak_gib": default.plan.value("memory.predicted_peak_gib"),
            "budget_gib": default.plan.value("memory.budget_gib"),
        },
        "run": {
            "duration_s": duration,
            "steps": steps,
            "lm": bounded.adjusted.lm_model,
            "predicted_phases_gib": bounded.plan.value("memory.phases"),
        },
    }
    cap = environ.get("MAX_CUDA_VRAM")
    if cap and torch.cuda.is_available():
        budget = bounded.plan.value("memory.budget_gib")
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, budget * GIB / total), 0)
        row["allocator_cap_gib"] = budget
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as out:
            result = generate(
                resolution=bounded, out_dir=out, size="tiny" if dry_run else "real", steps=steps, progress=False
            )
        row["measured_phases_gib"] = {
            p.name: None if p.peak_bytes is None else round(p.peak_bytes / GIB, 2) for p in result.phases
        }
        row["measure"] = result.phases[0].peak_measure
        row["phase_seconds"] = {p.name: p.seconds for p in result.phases}
    except Exception as error:  # noqa: BLE001 - an OOM or failure is a result to report
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    finally:
        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(1.0, 0)
            torch.cuda.empty_cache()
    row["wall_s"] = round(time.perf_counter() - started, 1)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny components on the CPU: the flow only")
    parser.add_argument("--duration", type=int, default=30, help="clip length of the bounded runs (s)")
    parser.add_argument("--steps", type=int, default=2, help="DiT steps of the bounded runs")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    # the dry run has no card to detect: it decides for a simulated 24 GiB CUDA device instead
    report: dict[str, Any] = {"decisions": decisions({"MAX_CUDA_VRAM": "24"} if args.dry_run else {}), "runs": []}
    print(json.dumps(report["decisions"], indent=1, default=str))
    for label, environ in (("tier6 (MAX_CUDA_VRAM=16)", {"MAX_CUDA_VRAM": "16"}), ("this card (unlimited)", {})):
        row = one_run(label, environ, args.duration, args.steps, args.dry_run)
        report["runs"].append(row)
        print(f"== {label}: {row['tier']}, default {row['default_request']}, plan {row['default_plan']}")
        predicted = row["run"]["predicted_phases_gib"] or {}
        for phase, measured in (row.get("measured_phases_gib") or {}).items():
            print(
                f"   {phase:<13} measured {measured} GiB ({row['measure']}), predicted {predicted.get(phase)} GiB, "
                f"{row['phase_seconds'][phase]:.1f} s"
            )
        if "error" in row:
            print(f"   failed: {row['error']}")
    (args.outdir / "gpu_platforms.json").write_text(json.dumps(report, indent=1, default=str))
    return 0 if all("error" not in r for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
