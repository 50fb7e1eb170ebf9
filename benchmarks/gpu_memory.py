"""GPU check for issue 11: what really runs out of memory at each tier's limits, against the plan's figures.

    python benchmarks/gpu_memory.py OUTDIR            # one GPU, about 6 minutes on an H100
    python benchmarks/gpu_memory.py OUTDIR --dry-run  # a CPU: tiny models, no cap (the flow only)

1. For each default tier from 3 to 6 (6 / 8 / 12 / 16 GiB), the allocator is capped at the tier's size
   less the CUDA context (``torch.cuda.set_per_process_memory_fraction``) and the tier's **maximum**
   request is resolved (longest clip, largest batch; with the tier's largest LM, and without the LM).
   Each phase then runs the real-shaped components as the pipeline runs them: built on the CPU, the
   plan applied (precision, quantization, offload: ``runtime.apply.apply_plan``), then its workload —
   LM: a prefill of prompt + chain of thought + 5 codes a second less 4, then 4 generated tokens (the
   KV cache the pipeline's LM ends with; one step of prefill bounds the time); text encoder: the
   caption; DiT: the condition encoder and one denoising forward; VAE: ``vae_decode.decode`` (each
   item to the CPU). Recorded per phase: ``max_memory_allocated``, ``max_memory_reserved``, whether it
   ran, and the model's allocated and reserved (plan) predictions for the same workload.
2. At an 8 GiB cap, the longest batch-1 duration (LM off) that runs is found by bisection with the plan's
   choices fixed (the VAE decoded whole: tiled, every duration fits), and compared with the longest the
   memory model predicts.

Goals (issue 11): no OOM at any tier's limits; the predicted reserved peak within −5 % … +15 % of the
measured one; the predicted maximum duration within 10 % of the bisected one. Writes
OUTDIR/gpu_memory.json and OUTDIR/heldout-readings.json (the new readings, to ship as held-out).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
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
    RunShape,
    lm_estimate,
    reserved_bytes,
)
from acestep_core.optimize.plan import planned_run
from acestep_core.vocabulary import CODES_PER_SECOND, COMPONENTS

TIERS_GIB = {t.name: t.min_gb for t in default_table().tiers if t.name in ("tier3", "tier4", "tier5", "tier6")}
"""Default tiers 3 to 6, each at its smallest size, from the shipped table."""
GENERATED = 4
CAPTION_TOKENS = 256
BISECT_GIB = 8
BISECT_STEPS = 6
TIME_LIMIT_S = 360


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
    """The model's allocated and reserved (plan) peak per phase for the script's workloads: one component
    on the device at a time (its resident weights under the plan's offload + its working set); the LM's
    prompt is the whole sequence less the 4 generated tokens, as run here."""
    choices = choices_from_plan(plan)
    prediction = predict(RunShape(run.duration_s, run.batch, run.lm_model), choices)
    out = {}
    for phase in prediction.phases:
        own = phase.resident[phase.phase] + phase.work_bytes
        if phase.phase == "lm" and run.lm_model:
            tokens = DEFAULT_PROMPT_TOKENS + DEFAULT_COT_TOKENS + math.ceil(run.duration_s * CODES_PER_SECOND)
            estimate = lm_estimate(
                LM_SHAPES[run.lm_model],
                batch=run.batch,
                prompt_tokens=tokens - GENERATED,
                generated_tokens=GENERATED,
                dtype=choices.precision["lm"],
                quantization=choices.quantization["lm"],
                quantize_lm_head=choices.quantize_lm_head,
            )
            own = phase.resident["lm"] + estimate.work_bytes
        out[phase.phase] = {"allocated": own, "reserved": reserved_bytes(own)}
    return out


def tier_runs(runner: Runner, started: float) -> list[dict[str, Any]]:
    rows = []
    for tier, gib in TIERS_GIB.items():
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
            if runner.dry_run:
                run = RunShape(min(run.duration_s, 10), min(run.batch, 2), run.lm_model)
            predictions = predicted(run, plan)
            runner.cap(gib)
            phases = [runner.phase(kind, plan, run) for kind in COMPONENTS if kind != "lm" or run.lm_model]
            runner.cap(None)
            for row in phases:
                guess = predictions[row["phase"]]
                row |= {"predicted_allocated_bytes": guess["allocated"], "predicted_reserved_bytes": guess["reserved"]}
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


def readings(rows: list[dict[str, Any]], device: str) -> dict[str, Any]:
    """The new readings in a shippable form (label them held-out in acestep_core/optimize/measurements/)."""
    flat = [
        {"tier": r["tier"], "lm": r["lm"], "duration_s": r["duration_s"], "batch": r["batch"], **p}
        for r in rows
        if "phases" in r
        for p in r["phases"]
    ]
    return {"format": "acestep-core gpu_memory readings, version 1", "device": device, "phases": flat}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="example: python benchmarks/gpu_memory.py /tmp/out --dry-run"
    )
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: the flow, no measurement")
    args = parser.parse_args(argv)
    import torch

    dry_run = args.dry_run or not torch.cuda.is_available()
    if dry_run and not args.dry_run:
        print("no CUDA GPU: running --dry-run")
    torch.set_num_threads(min(4, torch.get_num_threads())) if dry_run else None
    started = time.perf_counter()
    runner = Runner(dry_run)
    rows = tier_runs(runner, started)
    bisected = bisection(runner) if time.perf_counter() - started < TIME_LIMIT_S + 60 else {"skipped": "time limit"}
    device = "CPU (dry run)" if dry_run else torch.cuda.get_device_name(0)
    args.outdir.mkdir(parents=True, exist_ok=True)
    result = {
        "device": device,
        "dry_run": dry_run,
        "wall_s": round(time.perf_counter() - started, 1),
        "runs": rows,
        "bisection": bisected,
    }
    (args.outdir / "gpu_memory.json").write_text(json.dumps(result, indent=1))
    (args.outdir / "heldout-readings.json").write_text(json.dumps(readings(rows, device), indent=1))
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
    print(f"\nbisection at {BISECT_GIB} GiB, batch 1, LM off: {json.dumps(bisected)}")
    print(f"wall {result['wall_s']} s")
    return 0 if all(r.get("ran", True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
