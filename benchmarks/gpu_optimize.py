"""GPU check of the memory model under the plans of tiers 3-6: predicted vs measured LM peaks.

Usage: python benchmarks/gpu_optimize.py OUTDIR [--dry-run]

For each tier of the default table with an LM (Tier 3-6, simulated at 6 / 8 / 12 / 16 GiB) and each
LM size that tier's plan allows, build the real-shaped Qwen3 LM directly on the GPU in bf16 (random
weights), apply the plan's quantization (and its lm_head exclusion), cap the process at the tier's
memory with ``torch.cuda.set_per_process_memory_fraction``, then run the readings' protocol at the
tier's longest clip and largest batch: a prefill of prompt + CoT + 5 codes a second, then 4 generated
tokens. Reports ``max_memory_allocated`` against the memory model's prediction for the same shapes,
and whether it OOMed. ``--dry-run`` runs the tiny LM on the CPU (no measurement, the flow only).
Writes OUTDIR/gpu_optimize.json and prints a table. Budget: ≈150 s on one H100.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from acestep_core_tiers_default import default_table

from acestep_core import GIB, DetectOptions, GenerationRequest, resolve
from acestep_core.optimize.memory import (
    CODES_PER_SECOND,
    DEFAULT_COT_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    LMShape,
    lm_estimate,
)

TIERS_GIB = {t.name: t.min_gb for t in default_table().tiers if t.name in ("tier3", "tier4", "tier5", "tier6")}
"""Default tiers 3 to 6, each at its smallest size, from the shipped table."""
GENERATED = 4


def shape_of(config) -> LMShape:
    return LMShape(
        hidden=config.hidden_size,
        layers=config.num_hidden_layers,
        heads=config.num_attention_heads,
        kv_heads=config.num_key_value_heads,
        head_dim=config.head_dim,
        intermediate=config.intermediate_size,
        vocab=config.vocab_size,
        tied_embeddings=config.tie_word_embeddings,
    )


def run_one(tier: str, gib: float, size: str, dry_run: bool) -> dict:
    import torch

    from acestep_core.runtime.apply import quantize_component
    from acestep_core.runtime.models import build_lm

    resolution = resolve(
        GenerationRequest(duration_s=10_000, batch_size=64, lm="on", lm_model=size),
        detect_options=DetectOptions(vram_gb=str(gib), environ={}),
    )
    plan = resolution.plan
    duration = float(plan.value("ladder.duration_s", resolution.adjusted.duration_s))
    batch = int(plan.value("ladder.batch_size", resolution.adjusted.batch_size))
    quantization = plan.value("quantization.lm")
    exclude = list(plan.value("quantization.exclude.lm", []))
    tokens = DEFAULT_PROMPT_TOKENS + DEFAULT_COT_TOKENS + math.ceil(duration * CODES_PER_SECOND)
    row = {
        "tier": tier,
        "simulated_gib": gib,
        "lm": size,
        "duration_s": duration,
        "batch": batch,
        "quantization": quantization,
        "exclude": exclude,
        "plan_lm_phase_gib": plan.value("memory.phases").get("lm"),
        "budget_gib": plan.value("memory.budget_gib"),
    }
    device = "cpu" if dry_run else "cuda"
    build_size = "tiny" if dry_run else size
    start = time.perf_counter()
    if not dry_run:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, gib * GIB / total))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = build_lm(build_size, dtype="bf16")
    finally:
        torch.set_default_dtype(previous)
    if quantization != "none":
        quantize_component(model, quantization, exclude)
    shape = shape_of(model.config)
    if dry_run:
        tokens, batch = 64, min(batch, 2)
    predicted = lm_estimate(
        shape,
        batch=batch,
        prompt_tokens=tokens - GENERATED,
        generated_tokens=GENERATED,
        quantization=quantization,
        quantize_lm_head="lm_head" not in exclude,
    )
    row |= {"tokens": tokens, "predicted_gib": round(predicted.peak_bytes / GIB, 3)}
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens - GENERATED), device=device)
    try:
        if not dry_run:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=GENERATED,
                min_new_tokens=GENERATED,
                do_sample=False,
            )
        row["oom"] = False
        if not dry_run:
            torch.cuda.synchronize()
            row["measured_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
            row["reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
            row["error"] = round((predicted.peak_bytes / GIB - row["measured_gib"]) / row["measured_gib"], 4)
    except torch.OutOfMemoryError as error:
        row |= {"oom": True, "message": str(error).splitlines()[0]}
    finally:
        del model
        if not dry_run:
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0)
    row["time_s"] = round(time.perf_counter() - start, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny LM on the CPU: the flow, no measurement")
    args = parser.parse_args(argv)
    import torch

    dry_run = args.dry_run or not torch.cuda.is_available()
    if dry_run and not args.dry_run:
        print("no CUDA GPU: running --dry-run")
    rows = []
    for tier, gib in TIERS_GIB.items():
        probe = resolve(GenerationRequest(lm="on"), detect_options=DetectOptions(vram_gb=str(gib), environ={}))
        for size in probe.tier.lm_models:
            rows.append(run_one(tier, gib, size, dry_run))
            print(json.dumps(rows[-1]), flush=True)
    args.outdir.mkdir(parents=True, exist_ok=True)
    device = "CPU (dry run)" if dry_run else torch.cuda.get_device_name(0)
    (args.outdir / "gpu_optimize.json").write_text(
        json.dumps({"device": device, "dry_run": dry_run, "runs": rows}, indent=1)
    )
    print(
        f"\n{'tier':<6} {'GiB':>4} {'LM':>5} {'quant':>5} {'s':>5} {'batch':>5} {'tokens':>6} "
        f"{'predicted':>9} {'measured':>9} {'error':>7} {'OOM':>4}"
    )
    for row in rows:
        measured = row.get("measured_gib")
        error = f"{row['error']:+.1%}" if "error" in row else "-"
        print(
            f"{row['tier']:<6} {row['simulated_gib']:>4} {row['lm']:>5} {row['quantization']:>5} "
            f"{row['duration_s']:>5g} {row['batch']:>5} {row['tokens']:>6} "
            f"{row['predicted_gib']:>9.3f} {measured if measured is not None else '-':>9} {error:>7} "
            f"{'yes' if row['oom'] else 'no':>4}"
        )
    return 1 if any(row["oom"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
