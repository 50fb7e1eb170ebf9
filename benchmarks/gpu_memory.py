"""GPU check for issues 11 and 22: each default tier's maximum request under a cap at the tier's size, real-size
models, the allocated and reserved peak of every phase against the plan's figures, and out-of-memory recovery
on the real device.

    python benchmarks/gpu_memory.py OUTDIR            # one GPU, about 8 minutes on an H100
    python benchmarks/gpu_memory.py OUTDIR --dry-run  # a CPU: tiny models, no cap (the flow only)

1. For each default tier (1 … 6 and unlimited, each at its smallest size; tier 1 at 4 GiB), the allocator is
   capped at the tier's size less the CUDA context (``torch.cuda.set_per_process_memory_fraction``) and the
   tier's **maximum** request is resolved (longest clip, largest batch; with the tier's largest LM, and
   without the LM). Each phase then runs the real-shaped components as the pipeline runs them: built on the
   CPU, the plan applied (precision, quantization, offload: ``runtime.apply.apply_plan``), then its workload —
   LM: a prefill of prompt + chain of thought + 5 codes a second less 4, then 4 generated tokens (the KV
   cache the pipeline's LM ends with; one step of prefill bounds the time); text encoder: the caption; DiT:
   the condition encoder and one denoising forward; VAE: ``vae_decode.decode`` (each item to the CPU).
   Recorded per phase: ``max_memory_allocated``, ``max_memory_reserved``, whether it ran, and the model's
   allocated and reserved predictions for the same workload (like for like). A refused plan is not run.
2. Out-of-memory recovery on the device, through the real pipeline (``runtime.pipeline.generate``, real
   sizes) under an 8 GiB cap: (a) an out-of-memory error injected in the DiT phase through the phase
   runner's fault hook; (b) a real one: 240 s with the VAE decoded whole (forced), which needs ≈15 GiB —
   the VAE phase runs out, the run frees it, tiles the decode and retries. Each records its recoveries and
   its measured phases in a correction store of its own (OUTDIR/cache).
3. At an 8 GiB cap, the longest batch-1 duration (LM off) that runs is found by bisection with the plan's
   choices fixed (the VAE decoded whole), against the longest the memory model predicts (time permitting).

Goals (issues 11 and 22): no OOM at any tier's limits; held-out allocated within −5 % … +15 %, reserved within
−5 % … +25 %; both recoveries ran. Writes OUTDIR/gpu_memory.json and OUTDIR/heldout-readings.json: the new
readings (``acestep-core gpu_memory readings, version 1``); ship that file in
``acestep_core/optimize/measurements/`` labelled ``held-out`` and ``benchmarks/memory_heldout.py`` judges it
(``readings.gpu_memory_rows``: every row ``split: heldout``).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

from acestep_core_tiers_default import default_table

from acestep_core import DetectOptions, GenerationRequest, Overrides, resolve
from acestep_core.optimize import choices_from_plan, device_budget, predict
from acestep_core.optimize.memory import (
    CUDA_CONTEXT_BYTES,
    DEFAULT_COT_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    GIB,
    LM_SHAPES,
    RESERVED_GAP_FITTED,
    RESERVED_GAP_QUANTIZED_FITTED,
    RunShape,
    lm_estimate,
    reserved_bytes,
)
from acestep_core.optimize.plan import planned_run
from acestep_core.vocabulary import CODES_PER_SECOND, COMPONENTS, LATENT_RATE_HZ

TIERS_GIB = {t.name: t.min_gb or t.max_gb or 4.0 for t in default_table().tiers}
"""Every default tier at its smallest size (tier 1, ≤4 GB, at 4 GiB), from the shipped table."""
GENERATED = 4
CAPTION_TOKENS = 256
BISECT_GIB = 8
BISECT_STEPS = 6
RECOVERY_GIB = 8
TIME_LIMIT_S = 280
"""The tier runs stop starting new requests after this; the recovery runs follow, then the bisection."""
BISECT_AFTER_S = 420
READINGS_FORMAT = "acestep-core gpu_memory readings, version 1"


class Runner:
    """Builds each real-shaped component once on the CPU and hands out plan-applied copies."""

    def __init__(self, dry_run: bool) -> None:
        import torch

        self.torch = torch
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda", None if dry_run else 0)
        self.size = "tiny" if dry_run else "real"
        self.built: dict[str, Any] = {}
        self.total = 0 if dry_run else torch.cuda.get_device_properties(0).total_memory
        from acestep_core.runtime.models import model_config

        self.text_width = model_config("text_encoder", self.size)["hidden_size"]

    def build(self, kind: str, lm_size: str | None = None) -> Any:
        """A fresh real-shaped component on the CPU in bf16 (weight norm's modules cannot be deep-copied)."""
        from acestep_core.runtime import models

        size = self.size if kind != "lm" else ("tiny" if self.dry_run else lm_size)
        builder = {
            "lm": models.build_lm,
            "text_encoder": models.build_text_encoder,
            "dit": models.build_dit,
            "vae": models.build_vae,
        }[kind]
        return builder(size, dtype="bf16")

    def applied(self, kind: str, lm_size: str | None, plan: dict[str, Any]) -> Any:
        """The component with the plan applied (``apply_plan``: built on the CPU, quantized there, then
        placed), cached per (component, size, quantization, offload): quanto tensors cannot be copied and
        quantizing a 4B LM again for every run would not fit the time budget."""
        from acestep_core.runtime.apply import apply_plan

        quantization = plan.get(f"quantization.{kind}", "none")
        exclude = tuple(plan.get(f"quantization.exclude.{kind}", []))
        offload = plan.get(f"offload.{kind}", "none")
        key = f"applied:{kind}:{lm_size}:{quantization}:{exclude}:{offload}"
        if key not in self.built:
            self.built[key] = apply_plan(self.build(kind, lm_size), kind, plan, device=self.device)
        else:
            applied = self.built[key]
            if offload == "none":
                applied.model.to(self.device)
        return self.built[key]

    def park(self, applied: Any) -> None:
        """Back to the CPU between phases, whatever the plan (the next run caps the device afresh)."""
        if applied.offload_mode == "none":
            applied.model.to("cpu")
        elif applied.offload_mode == "model":
            applied.offload()

    def cap(self, gib: float | None) -> None:
        if self.dry_run:
            return
        fraction = 1.0 if gib is None else max(0.0, min(1.0, (gib * GIB - CUDA_CONTEXT_BYTES) / self.total))
        self.torch.cuda.set_per_process_memory_fraction(fraction, self.device)

    def phase(self, kind: str, plan: dict[str, Any], run: RunShape) -> dict[str, Any]:
        """One phase under the current cap: allocated and reserved peaks, or the OOM."""
        torch = self.torch
        row: dict[str, Any] = {"phase": kind}
        applied = None
        try:
            self._reset()
            applied = self.applied(kind, run.lm_model, plan)
            with torch.inference_mode():
                self._workload(kind, applied.model, plan, run)
            row |= {"ran": True} | self._peaks()
        except torch.OutOfMemoryError as error:
            row |= {"ran": False, "oom": str(error).splitlines()[0][:200]} | self._peaks()
        finally:
            if applied is not None:
                self.park(applied)
            gc.collect()
            if not self.dry_run:
                torch.cuda.empty_cache()
        return row

    def _reset(self) -> None:
        if not self.dry_run:
            gc.collect()
            self.torch.cuda.empty_cache()
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def _peaks(self) -> dict[str, Any]:
        if self.dry_run:
            return {"allocated_bytes": None, "reserved_bytes": None}
        self.torch.cuda.synchronize()
        return {
            "allocated_bytes": self.torch.cuda.max_memory_allocated(),
            "reserved_bytes": self.torch.cuda.max_memory_reserved(),
        }

    def _workload(self, kind: str, model: Any, plan: dict[str, Any], run: RunShape) -> None:
        torch, device = self.torch, self.device
        from acestep_core.runtime.models import LATENT_CHANNELS, latent_frames
        from acestep_core.runtime.pipeline.dit import encode_condition
        from acestep_core.runtime.vae_decode import decode_with_plan

        frames = latent_frames(run.duration_s)
        if kind == "lm":
            tokens = DEFAULT_PROMPT_TOKENS + DEFAULT_COT_TOKENS + math.ceil(run.duration_s * CODES_PER_SECOND)
            tokens = 64 if self.dry_run else tokens
            ids = torch.randint(0, model.config.vocab_size, (run.batch, tokens - GENERATED), device=device)
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=GENERATED,
                min_new_tokens=GENERATED,
                do_sample=False,
                pad_token_id=0,
            )
        elif kind == "text_encoder":
            ids = torch.randint(0, model.config.vocab_size, (run.batch, CAPTION_TOKENS), device=device)
            model(input_ids=ids)
        elif kind == "dit":
            width = self.text_width
            caption = torch.randn(run.batch, CAPTION_TOKENS, width, device=device, dtype=torch.bfloat16)
            condition = encode_condition(model, caption)
            latents = torch.randn(run.batch, frames, LATENT_CHANNELS, device=device, dtype=torch.bfloat16)
            context = torch.randn(
                run.batch, frames, model.config.in_channels - LATENT_CHANNELS, device=device, dtype=torch.bfloat16
            )
            t = torch.full((run.batch,), 0.5, device=device, dtype=torch.bfloat16)
            model(latents, t, t, condition, context)
        else:
            latents = torch.randn(run.batch, LATENT_CHANNELS, frames, device=device, dtype=torch.bfloat16)
            decode_with_plan(model, latents, plan)


def predicted(run: RunShape, plan: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The model's allocated and reserved peak per phase for the script's workloads: one component on the
    device at a time (its resident weights under the plan's offload + its working set; the reserved one with
    the phase's own allocator gap); the LM's prompt is the whole sequence less the 4 generated tokens, as run."""
    choices = choices_from_plan(plan)
    prediction = predict(RunShape(run.duration_s, run.batch, run.lm_model, models=run.models), choices)
    out = {}
    for phase in prediction.phases:
        own = phase.own_model_bytes
        if phase.phase == "lm" and run.lm_model:
            tokens = DEFAULT_PROMPT_TOKENS + DEFAULT_COT_TOKENS + math.ceil(run.duration_s * CODES_PER_SECOND)
            estimate = lm_estimate(
                run.models.lm.get(run.lm_model, LM_SHAPES[run.lm_model]),
                batch=run.batch,
                prompt_tokens=tokens - GENERATED,
                generated_tokens=GENERATED,
                dtype=choices.precision["lm"],
                quantization=choices.quantization["lm"],
                quantize_lm_head=choices.quantize_lm_head,
            )
            own = phase.resident["lm"] + estimate.work_bytes
        out[phase.phase] = {"allocated": own, "reserved": reserved_bytes(own, phase.reserved_gap)}
    return out


def choices_label(plan: dict[str, Any], phase: str) -> str:
    """The plan's memory-relevant choices for a phase, in words (part of a reading's configuration)."""
    keys = [f"precision.{phase}", f"quantization.{phase}", f"offload.{phase}", "attention"]
    if phase == "vae":
        keys += ["vae.decode", "vae.tile_frames", "vae.tile_overlap"]
    names = {"vae.decode": "decode", "vae.tile_frames": "tile", "vae.tile_overlap": "overlap"}
    return ", ".join(f"{names.get(k, k.split('.')[0])}={plan.get(k)}" for k in keys)


def tier_runs(runner: Runner, started: float, tiers: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for tier, gib in TIERS_GIB.items():
        if tiers is not None and tier not in tiers:
            continue
        options = DetectOptions(vram_gb=str(gib), environ={})
        probe = resolve(GenerationRequest(lm="on"), detect_options=options)
        largest = probe.tier.lm_models[-1] if probe.tier.lm_models else None
        for lm in ([largest] if largest else []) + [None]:
            if time.perf_counter() - started > TIME_LIMIT_S:
                rows.append({"tier": tier, "lm": lm, "skipped": "time limit"})
                continue
            request = GenerationRequest(duration_s=600, batch_size=64, lm="on" if lm else "off", lm_model=lm)
            resolution = resolve(request, detect_options=options)
            plan = resolution.plan.as_dict()
            run = planned_run(resolution.plan, resolution.adjusted, resolution.tier)
            if plan.get("ladder.refused"):
                rows.append({"tier": tier, "gib": gib, "lm": lm, "refused": plan["ladder.refused"], "phases": []})
                print(json.dumps(rows[-1]), flush=True)
                continue
            if runner.dry_run:
                run = RunShape(min(run.duration_s, 10), min(run.batch, 2), run.lm_model, models=run.models)
            predictions = predicted(run, plan)
            runner.cap(gib)
            phases = [runner.phase(kind, plan, run) for kind in COMPONENTS if kind != "lm" or run.lm_model]
            runner.cap(None)
            for row in phases:
                guess = predictions[row["phase"]]
                row |= {
                    "predicted_allocated_bytes": guess["allocated"],
                    "predicted_reserved_bytes": guess["reserved"],
                    "choices": choices_label(plan, row["phase"]),
                    "attempt": "plan",
                }
                if row.get("reserved_bytes"):
                    row["reserved_error"] = round(
                        (guess["reserved"] - row["reserved_bytes"]) / row["reserved_bytes"], 4
                    )
                    row["allocated_error"] = round(
                        (guess["allocated"] - row["allocated_bytes"]) / row["allocated_bytes"], 4
                    )
            rows.append(
                {
                    "tier": tier,
                    "gib": gib,
                    "lm": run.lm_model,
                    "duration_s": run.duration_s,
                    "batch": run.batch,
                    "refused": bool(plan.get("ladder.refused")),
                    "rungs": plan.get("ladder.rungs"),
                    "phases": phases,
                    "ran": all(p["ran"] for p in phases),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def bisection(runner: Runner) -> dict[str, Any]:
    """The longest batch-1 duration without the LM that runs under an 8 GiB cap, the plan's choices fixed
    (the tier's plan for 240 s with the VAE decoded whole, so that duration is what runs out: tiled, every
    duration up to 600 s fits), against the memory model's longest."""
    options = DetectOptions(vram_gb=str(BISECT_GIB), environ={})
    resolution = resolve(
        GenerationRequest(duration_s=240, batch_size=1, lm="off"),
        detect_options=options,
        overrides=Overrides(max_duration_s=600, plan={"vae.decode": "full"}, force=True),
    )
    plan = resolution.plan.as_dict()
    choices = choices_from_plan(plan)
    budget = device_budget(BISECT_GIB * GIB).usable_bytes

    def predicted_fits(seconds: int) -> bool:
        return predict(RunShape(seconds, 1, None), choices).peak_bytes <= budget

    def runs(seconds: int) -> bool:
        run = RunShape(min(seconds, 10) if runner.dry_run else seconds, 1, None)
        runner.cap(BISECT_GIB)
        try:
            return all(runner.phase(kind, plan, run)["ran"] for kind in ("text_encoder", "dit", "vae"))
        finally:
            runner.cap(None)

    def longest(fits: Any, steps: int | None) -> int:
        low, high = 10, 600
        if not fits(low):
            return 0
        if fits(high):
            return high
        count = 0
        while high - low > 1 and (steps is None or count < steps):
            middle = (low + high) // 2
            low, high = (middle, high) if fits(middle) else (low, middle)
            count += 1
        return low

    model_max = longest(predicted_fits, None)
    measured_max = longest(runs, 2 if runner.dry_run else BISECT_STEPS)
    error = None if not measured_max or runner.dry_run else round((model_max - measured_max) / measured_max, 4)
    return {
        "gib": BISECT_GIB,
        "choices": {
            k: v for k, v in plan.items() if k.split(".")[0] in ("vae", "offload", "quantization", "attention")
        },
        "predicted_max_s": model_max,
        "bisected_max_s": measured_max,
        "bisection_resolution_s": math.ceil(590 / 2**BISECT_STEPS),
        "error": error,
    }


def recovery_runs(runner: Runner, outdir: Path) -> list[dict[str, Any]]:
    """Out-of-memory recovery through the real pipeline under a cap: an injected error in the DiT phase, and
    a real one (the VAE decoded whole at 240 s on an 8 GiB cap: ≈15 GiB asked). Each run's correction store
    is OUTDIR/cache; the runs' own records say what was tried."""
    import torch

    from acestep_core.runtime.pipeline import GenerationOutOfMemoryError, generate

    environ = {"ACESTEP_CORE_CACHE_DIR": str(outdir / "cache")}
    options = DetectOptions(vram_gb=str(RECOVERY_GIB), environ={})
    size = "tiny" if runner.dry_run else "real"
    injected: list[tuple[str, int]] = []

    def fault(phase: str, attempt: int) -> None:
        injected.append((phase, attempt))
        if phase == "dit" and attempt == 0:
            raise torch.OutOfMemoryError("CUDA out of memory (injected by benchmarks/gpu_memory.py)")

    cases: list[tuple[str, GenerationRequest, Overrides | None, Any]] = [
        ("injected in the dit phase", GenerationRequest(duration_s=60, batch_size=1, lm="off"), None, fault),
        (
            "real: the vae decoded whole",
            GenerationRequest(duration_s=10 if runner.dry_run else 240, batch_size=1, lm="off"),
            Overrides(plan={"vae.decode": "full"}, force=True),
            None if not runner.dry_run else _vae_fault,
        ),
    ]
    results = []
    for name, request, overrides, hook in cases:
        row: dict[str, Any] = {"case": name, "gib": RECOVERY_GIB}
        runner.cap(RECOVERY_GIB)
        started = time.perf_counter()
        try:
            result = generate(
                request,
                out_dir=outdir / "recovery" / name.split(":")[0].replace(" ", "-"),
                detect_options=options,
                overrides=overrides,
                size=size,
                steps=1,
                progress=False,
                fault=hook,
                environ=environ,
                device=None if runner.dry_run else "cuda:0",
            )
            row |= {
                "ran": True,
                "recoveries": [dict(r) for r in result.recoveries],
                "phases": [
                    {"phase": p.name, "allocated_bytes": p.peak_bytes, "reserved_bytes": p.reserved_peak_bytes}
                    for p in result.phases
                ],
                "clips": len(result.clips),
            }
        except GenerationOutOfMemoryError as error:
            row |= {"ran": False, "error": str(error), "recoveries": [dict(r) for r in error.recoveries]}
        finally:
            runner.cap(None)
        row["seconds"] = round(time.perf_counter() - started, 1)
        row["recovered"] = bool(row.get("ran") and row["recoveries"] and row["recoveries"][0]["retry"] == "ran")
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def _vae_fault(phase: str, attempt: int) -> None:
    """The dry run's stand-in for the real VAE out-of-memory error a CPU cannot have."""
    import torch

    if phase == "vae" and attempt == 0:
        raise torch.OutOfMemoryError("CUDA out of memory (dry run: injected in place of the real one)")


def store_rows(outdir: Path) -> list[dict[str, Any]]:
    """The recovery runs' measured phases, as the correction store recorded them (own peaks, like for like)."""
    path = outdir / "cache" / "memory-corrections.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    rows = []
    for device in data["devices"].values():
        for o in device["observations"]:
            if o["out_of_memory"] or o["measured_own_bytes"] is None:
                continue
            quantized = any(token.startswith(("int8", "int4", "fp8")) for token in o["family"].split())
            gap = RESERVED_GAP_QUANTIZED_FITTED if quantized else RESERVED_GAP_FITTED
            rows.append(
                {
                    "tier": f"pipeline under {RECOVERY_GIB} GiB",
                    "phase": o["phase"],
                    "lm": None,
                    "duration_s": _store_duration(o["shape"]),
                    "batch": int(o["bucket"].split()[0].lstrip("×")) if o["bucket"].startswith("×") else 1,
                    "choices": o["family"],
                    "attempt": "pipeline run (own peak: the other components' weights taken away)",
                    "ran": True,
                    "allocated_bytes": o["measured_own_bytes"],
                    "reserved_bytes": o["measured_reserved_own_bytes"],
                    "predicted_allocated_bytes": o["predicted_own_bytes"],
                    "predicted_reserved_bytes": reserved_bytes(o["predicted_own_bytes"], gap),
                }
            )
    return rows


def _store_duration(shape: str) -> float:
    match = re.match(r"(\d+) latent frames", shape)
    return round(int(match.group(1)) / LATENT_RATE_HZ, 2) if match else 0.0


def readings(rows: list[dict[str, Any]], device: str, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The new readings in a shippable form (label them held-out in acestep_core/optimize/measurements/)."""
    flat = [
        {"tier": r["tier"], "lm": r["lm"], "duration_s": r["duration_s"], "batch": r["batch"], **p}
        for r in rows
        if r.get("phases")
        for p in r["phases"]
    ]
    return {"format": READINGS_FORMAT, "device": device, "phases": [*flat, *(extra or [])]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="example: python benchmarks/gpu_memory.py /tmp/out --dry-run"
    )
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: the flow, no measurement")
    parser.add_argument(
        "--tiers", metavar="NAMES", help=f"only these tiers, comma-separated (default: all: {','.join(TIERS_GIB)})"
    )
    parser.add_argument("--no-bisection", action="store_true", help="skip the 8 GiB bisection")
    args = parser.parse_args(argv)
    import torch

    dry_run = args.dry_run or not torch.cuda.is_available()
    if dry_run and not args.dry_run:
        print("no CUDA GPU: running --dry-run")
    torch.set_num_threads(min(4, torch.get_num_threads())) if dry_run else None
    started = time.perf_counter()
    runner = Runner(dry_run)
    args.outdir.mkdir(parents=True, exist_ok=True)
    tiers = None if args.tiers is None else [t.strip() for t in args.tiers.split(",") if t.strip()]
    unknown = sorted(set(tiers or ()) - set(TIERS_GIB))
    if unknown:
        parser.error(f"--tiers: unknown {unknown}; known: {', '.join(TIERS_GIB)}")
    rows = tier_runs(runner, started, tiers)
    recoveries = recovery_runs(runner, args.outdir)
    if args.no_bisection:
        bisected: dict[str, Any] = {"skipped": "--no-bisection"}
    elif time.perf_counter() - started < BISECT_AFTER_S:
        bisected = bisection(runner)
    else:
        bisected = {"skipped": "time limit"}
    device = "CPU (dry run)" if dry_run else torch.cuda.get_device_name(0)
    result = {
        "device": device,
        "dry_run": dry_run,
        "wall_s": round(time.perf_counter() - started, 1),
        "runs": rows,
        "recoveries": recoveries,
        "bisection": bisected,
    }
    (args.outdir / "gpu_memory.json").write_text(json.dumps(result, indent=1))
    (args.outdir / "heldout-readings.json").write_text(
        json.dumps(readings(rows, device, store_rows(args.outdir)), indent=1)
    )
    print(
        f"\n{'tier':<6} {'LM':>5} {'s':>5} {'×':>2} {'phase':<13} {'alloc GiB':>9} {'resv GiB':>9} "
        f"{'plan GiB':>9} {'resv err':>8} {'ran':>4}"
    )
    for row in rows:
        for p in row.get("phases", []):
            alloc = "-" if p["allocated_bytes"] is None else f"{p['allocated_bytes'] / GIB:.3f}"
            resv = "-" if p["reserved_bytes"] is None else f"{p['reserved_bytes'] / GIB:.3f}"
            err = f"{p['reserved_error']:+.1%}" if "reserved_error" in p else "-"
            print(
                f"{row['tier']:<6} {row['lm'] or 'off':>5} {row['duration_s']:>5g} {row['batch']:>2} {p['phase']:<13} "
                f"{alloc:>9} {resv:>9} {p['predicted_reserved_bytes'] / GIB:>9.3f} {err:>8} "
                f"{'yes' if p['ran'] else 'OOM':>4}"
            )
    for row in recoveries:
        rungs = [r["name"] for recovery in row["recoveries"] for r in recovery["rungs"]]
        print(f"recovery ({row['case']}): {'recovered' if row['recovered'] else 'NOT recovered'}; rungs {rungs}")
    print(f"\nbisection at {BISECT_GIB} GiB, batch 1, LM off: {json.dumps(bisected)}")
    print(f"wall {result['wall_s']} s")
    ran = all(r.get("ran", True) for r in rows) and all(r["recovered"] for r in recoveries)
    return 0 if ran else 1


if __name__ == "__main__":
    sys.exit(main())
