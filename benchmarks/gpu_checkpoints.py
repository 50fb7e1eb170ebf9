"""GPU check for issue 21: the real-size XL DiT and the 217,204-row LM against what the plan budgets.

    python benchmarks/gpu_checkpoints.py OUTDIR            # one GPU, about 3 minutes on an H100
    python benchmarks/gpu_checkpoints.py OUTDIR --dry-run  # a CPU: tiny models, the flow only

1. Weights: the XL DiT (``xl-turbo``, 4,987,310,726 parameters) and the 1.7B LM with the audio-code
   vocabulary (217,204 rows), built on the CPU in bf16 and moved to the GPU: ``memory_allocated`` against
   the plan's ``memory.components`` weight bytes (the caching allocator rounds each tensor up to 512 bytes:
   the difference should be under 512 bytes a tensor).
2. XL activations, which the memory model scales from the 2B's fit by the MLP width (9728 / 6144) and has
   never measured: one denoising forward of ``xl-turbo`` (batch 1) and of ``xl-sft`` (CFG: 2 rows) at
   60 / 240 / 600 s, SDPA, ``max_memory_allocated`` above the weights against ``dit_activation_bytes``.
3. The LM's logits at 217,204 rows: a prefill of 1,276 tokens and 4 generated, batch 2, against
   ``lm_estimate``.

Writes OUTDIR/gpu_checkpoints.json (every figure, the errors, the device). Goal: every predicted figure
within −5 % … +25 % of the measured one; an XL activation error outside it says to fit the XL's scale.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

from acestep_core import DetectOptions, GenerationRequest, resolve
from acestep_core.optimize.memory import DIT_SHAPES, LM_SHAPES, dit_activation_bytes, lm_estimate
from acestep_core.vocabulary import LM_VOCAB

DURATIONS_S = (60, 240, 600)
PROMPT_TOKENS = 1276
GENERATED = 4
LM_BATCH = 2
TENSOR_ROUNDING = 512
"""The caching allocator's smallest block: every tensor's allocation is rounded up to a multiple of it."""


def planned_components(dit: str, lm: str) -> dict[str, Any]:
    request = GenerationRequest(duration_s=60, dit_model=dit, lm_model=lm)
    resolution = resolve(request, detect_options=DetectOptions(vram_gb="80", environ={}), environ={})
    components: dict[str, Any] = resolution.plan.value("memory.components")
    return components


class Device:
    def __init__(self, dry_run: bool) -> None:
        import torch

        self.torch = torch
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda:0")

    def reset(self) -> None:
        gc.collect()
        if not self.dry_run:
            self.torch.cuda.empty_cache()
            self.torch.cuda.synchronize()
            self.torch.cuda.reset_peak_memory_stats()

    def allocated(self) -> int | None:
        if self.dry_run:
            return None
        self.torch.cuda.synchronize()
        return int(self.torch.cuda.memory_allocated())

    def peak(self) -> int | None:
        if self.dry_run:
            return None
        self.torch.cuda.synchronize()
        return int(self.torch.cuda.max_memory_allocated())


def _error(predicted: int, measured: int | None) -> float | None:
    return None if not measured else round((predicted - measured) / measured, 4)


def xl_checks(device: Device) -> dict[str, Any]:
    torch = device.torch
    from acestep_core.runtime.models import LATENT_CHANNELS, build_dit, latent_frames
    from acestep_core.runtime.pipeline.dit import encode_condition

    size = "tiny" if device.dry_run else "real"
    started = time.perf_counter()
    dit = build_dit(size, variant="xl-turbo", dtype="bf16")
    build_s = time.perf_counter() - started
    tensors = len({id(t) for t in [*dit.parameters(), *dit.buffers()]})
    device.reset()
    dit.to(device.device)
    dit.set_attention_backend("native")
    weights = device.allocated()
    planned = planned_components("xl-turbo", "1.7B")["dit"]["weight_bytes"]
    result: dict[str, Any] = {
        "build_seconds": round(build_s, 1),
        "tensors": tensors,
        "weights_allocated_bytes": weights,
        "weights_planned_bytes": planned,
        "weights_difference_bytes": None if weights is None else weights - planned,
        "within_rounding": None if weights is None else 0 <= weights - planned < tensors * TENSOR_ROUNDING,
        "forwards": [],
    }
    text_width = dit.condition_encoder.config.text_hidden_dim
    for variant in ("xl-turbo", "xl-sft"):
        shape = DIT_SHAPES[variant]
        rows = shape.forwards_per_step
        for seconds in (10,) if device.dry_run else DURATIONS_S:
            frames = latent_frames(seconds)
            device.reset()
            base = device.allocated()
            try:
                with torch.inference_mode():
                    caption = torch.randn(rows, 256, text_width, device=device.device, dtype=torch.bfloat16)
                    condition = encode_condition(dit, caption)
                    latents = torch.randn(rows, frames, LATENT_CHANNELS, device=device.device, dtype=torch.bfloat16)
                    context = torch.randn(rows, frames, 128, device=device.device, dtype=torch.bfloat16)
                    t = torch.full((rows,), 0.5, device=device.device, dtype=torch.bfloat16)
                    dit(latents, t, t, condition, context)
                peak = device.peak()
                measured = None if peak is None or base is None else peak - base
                predicted = dit_activation_bytes(seconds, 1, attention="sdpa", shape=shape)
                result["forwards"].append(
                    {
                        "variant": variant,
                        "duration_s": seconds,
                        "rows": rows,
                        "activations_measured_bytes": measured,
                        "activations_predicted_bytes": predicted,
                        "error": _error(predicted, measured),
                    }
                )
            except torch.OutOfMemoryError as error:
                result["forwards"].append({"variant": variant, "duration_s": seconds, "oom": str(error)[:200]})
    del dit
    device.reset()
    return result


def lm_checks(device: Device) -> dict[str, Any]:
    torch = device.torch
    from acestep_core.runtime.models import build_lm

    size = "tiny" if device.dry_run else "1.7B"
    lm = build_lm(size, dtype="bf16", vocab_size=LM_VOCAB)
    device.reset()
    lm.to(device.device)
    weights = device.allocated()
    planned = planned_components("turbo", "1.7B")["lm"]
    tokens = 64 if device.dry_run else PROMPT_TOKENS
    ids = torch.randint(0, LM_VOCAB, (LM_BATCH, tokens), device=device.device)
    device.reset()
    with torch.inference_mode():
        lm.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=GENERATED,
            min_new_tokens=GENERATED,
            do_sample=False,
            pad_token_id=0,
        )
    peak = device.peak()
    estimate = lm_estimate(LM_SHAPES["1.7B"], batch=LM_BATCH, prompt_tokens=PROMPT_TOKENS, generated_tokens=GENERATED)
    del lm
    device.reset()
    return {
        "vocabulary": LM_VOCAB,
        "weights_allocated_bytes": weights,
        "weights_planned_bytes": planned["weight_bytes"],
        "weights_difference_bytes": None if weights is None else weights - planned["weight_bytes"],
        "peak_measured_bytes": peak,
        "peak_predicted_bytes": estimate.peak_bytes,
        "error": _error(estimate.peak_bytes, peak),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: the flow, no measurement")
    args = parser.parse_args(argv)
    import torch

    dry_run = args.dry_run or not torch.cuda.is_available()
    if dry_run and not args.dry_run:
        print("no CUDA device: dry run (tiny models on the CPU, nothing measured)")
    device = Device(dry_run)
    started = time.perf_counter()
    report = {
        "device": "CPU (dry run)" if dry_run else torch.cuda.get_device_name(0),
        "dry_run": dry_run,
        "xl": xl_checks(device),
        "lm": lm_checks(device),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.outdir.mkdir(parents=True, exist_ok=True)
    (args.outdir / "gpu_checkpoints.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    xl, lm = report["xl"], report["lm"]
    print(f"{report['device']}: {report['seconds']} s")
    print(
        f"XL weights: allocated {xl['weights_allocated_bytes']} planned {xl['weights_planned_bytes']} "
        f"(difference {xl['weights_difference_bytes']}, {xl['tensors']} tensors)"
    )
    for row in xl["forwards"]:
        print(f"XL {row['variant']} {row['duration_s']} s: {row}")
    print(f"LM 1.7B, vocabulary {lm['vocabulary']:,}: {lm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
