"""Weight bytes and peak memory before / after each optimization, on the tiny models (CPU).

Usage: python benchmarks/bench_optimize.py

Each case runs in its own process so that its peak resident memory (``ru_maxrss``) is its own: the
peak is reported above the process's resident size once the model is built and the plan applied.
Then the memory model's figures for the real shapes (what the same optimizations are worth on a GPU).
"""

from __future__ import annotations

import json
import subprocess
import sys

CASES = (
    "lm fp32",
    "lm bf16",
    "lm int8",
    "dit fp32",
    "dit bf16",
    "dit int8",
    "vae-30s full",
    "vae-30s tiled",
    "vae-120s full",
    "vae-120s tiled",
)


def run_case(case: str) -> dict:
    import resource
    import warnings

    import torch

    from acestep_core.runtime.apply import apply_plan, weight_bytes
    from acestep_core.runtime.models import build_dit, build_lm, build_vae
    from acestep_core.runtime.vae_decode import decode

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    kind, mode = case.split()
    if kind == "lm":
        model = build_lm("tiny")
        plan = {
            "precision.lm": "bf16" if mode == "bf16" else "fp32",
            "quantization.lm": "int8" if mode == "int8" else "none",
            "quantization.exclude.lm": ["lm_head"],
        }
        apply_plan(model, "lm", plan, device="cpu")
        ids = torch.randint(0, model.config.vocab_size, (4, 512))

        def work() -> None:
            with torch.no_grad():
                model(ids)
    elif kind == "dit":
        model = build_dit("tiny")
        plan = {
            "precision.dit": "bf16" if mode == "bf16" else "fp32",
            "quantization.dit": "int8" if mode == "int8" else "none",
            "quantization.exclude.dit": ["time_embed*"],
        }
        apply_plan(model, "dit", plan, device="cpu")
        dtype = torch.bfloat16 if mode == "bf16" else torch.float32
        frames = 1500
        inputs = (
            torch.randn(2, frames, 64, dtype=dtype),
            torch.rand(2, dtype=dtype),
            torch.rand(2, dtype=dtype),
            torch.randn(2, 64, 64, dtype=dtype),
            torch.randn(2, frames, 128, dtype=dtype),
        )

        def work() -> None:
            with torch.no_grad():
                model(*inputs)
    else:
        model = build_vae("tiny")
        seconds = int(kind.split("-")[1].rstrip("s"))
        latents = torch.randn(1, 64, seconds * 25)

        def work() -> None:
            decode(model, latents, tiled=mode == "tiled", tile_frames=256, overlap=32)

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    work()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": case,
        "weights_bytes": weight_bytes(model),
        "peak_above_baseline_mib": round((peak - baseline) / 1024, 1),
    }


def model_figures() -> list[str]:
    from acestep_core.optimize.memory import GIB, LM_SHAPES, lm_estimate, lm_weight_bytes, vae_estimate

    lines = [
        "memory model, real shapes (GiB): LM weights bf16 / int8 (lm_head quantized) / int8 (lm_head kept) / "
        "int4, and the LM phase at 240 s, batch 2"
    ]
    for size, shape in LM_SHAPES.items():
        weights = [
            lm_weight_bytes(shape),
            lm_weight_bytes(shape, quantization="int8", quantize_lm_head=True),
            lm_weight_bytes(shape, quantization="int8"),
            lm_weight_bytes(shape, quantization="int4"),
        ]
        phase = [
            lm_estimate(shape, batch=2, prompt_tokens=1024, generated_tokens=256 + 1200, quantization=q).peak_bytes
            for q in ("none", "int8")
        ]
        lines.append(
            f"  {size:>4}: "
            + " / ".join(f"{w / GIB:.2f}" for w in weights)
            + f"   phase bf16 {phase[0] / GIB:.2f}, int8 {phase[1] / GIB:.2f}"
        )
    for seconds in (30, 240, 600):
        full, tiled = vae_estimate(seconds).peak_bytes, vae_estimate(seconds, tiled=True).peak_bytes
        lines.append(f"  VAE {seconds:>3} s: full {full / GIB:.2f}, tiled {tiled / GIB:.2f}")
    return lines


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--case":
        print(json.dumps(run_case(" ".join(sys.argv[2:]))))
        return 0
    print(f"{'case':<16} {'weights (bytes)':>16} {'peak above baseline (MiB)':>26}")
    for case in CASES:
        result = subprocess.run(
            [sys.executable, __file__, "--case", *case.split()], capture_output=True, text=True, check=True
        )
        row = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"{row['case']:<16} {row['weights_bytes']:>16,} {row['peak_above_baseline_mib']:>26}")
    print()
    print("\n".join(model_figures()))
    from acestep_core.optimize.readings import fit_rows, held_out_rows, render

    print()
    print(render(fit_rows(), title="FIT") + "\n\n" + render(held_out_rows(), title="HELD-OUT"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
