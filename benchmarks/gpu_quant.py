"""GPU check of quantization: per backend × scheme, on the real-size components, what ``benchmarks/bench_quant.py``
prints on the CPU, plus the device memory each quantized component takes.

Usage: python benchmarks/gpu_quant.py OUTDIR [--dry-run] [--kinds dit lm text_encoder] [--repeats N]

For the 2B DiT, the 0.6B LM and the text encoder (real shapes, random weights, seed 0): build once on the
CPU in bf16; for bf16 and each scheme, quantize a copy on the CPU through ``apply_plan`` and place it on the
GPU (the pipeline's path); report the seconds that took, the bytes the plan predicts against the bytes the
quantized module holds (sum of its tensors' storage) and against ``memory_allocated`` (the allocator rounds
every tensor up to 512 bytes), the forward time on the GPU (median of N after a warm-up) against bf16's, the
output SNR against bf16 on the GPU and the LM's next-token agreement. A scheme this GPU cannot run
(``fp8_weight_only`` below compute capability 8.9) is listed with the plan's reason. ``--dry-run`` runs the
tiny builds on the CPU (the flow; no device memory). Writes OUTDIR/gpu_quant.json. Budgeted at 5 min (gpu_all.sh).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from acestep_core.optimize.quantization import fp8_problem
from acestep_core.types import DeviceMemory


def skip_for(capability: tuple[int, int] | None, dry_run: bool) -> Callable[[str], str | None]:
    """The plan's reason a scheme cannot run on this device (fp8 below compute capability 8.9), else None."""
    device = DeviceMemory(backend="cpu" if dry_run else "cuda", name="", compute_capability=capability)
    return lambda scheme: fp8_problem(device) if scheme == "fp8_weight_only" else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="tiny builds on the CPU: the flow, no measurement")
    parser.add_argument("--kinds", nargs="+", default=["dit", "lm", "text_encoder"])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    from acestep_core.runtime import quantization as measure

    dry_run = args.dry_run or not torch.cuda.is_available()
    if dry_run and not args.dry_run:
        print("no CUDA GPU: running --dry-run")
    device = "cpu" if dry_run else "cuda"
    capability = None if dry_run else torch.cuda.get_device_capability(0)
    size = "tiny" if dry_run else "real"
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for kind in args.kinds:
        found = measure.measure(kind, size, repeats=args.repeats, device=device, skip=skip_for(capability, dry_run))
        rows += found
        for row in found:
            print(json.dumps(row, default=str), flush=True)
    name = "CPU (dry run)" if dry_run else torch.cuda.get_device_name(0)
    args.outdir.mkdir(parents=True, exist_ok=True)
    (args.outdir / "gpu_quant.json").write_text(
        json.dumps(
            {"device": name, "capability": capability, "dry_run": dry_run, "rows": rows},
            indent=1,
            default=lambda v: None if isinstance(v, float) and math.isinf(v) else str(v),
        )
    )
    print(f"\n{name}, {time.perf_counter() - start:.0f} s")
    print(
        f"{'component':<13}{'scheme':<18}{'quantize s':>11}{'predicted B':>16}{'held B':>16}{'allocated B':>16}"
        f"{'forward s':>11}{'×bf16':>7}{'SNR dB':>8}{'next tok':>10}"
    )
    for row in rows:
        if "skipped" in row:
            print(f"{row['component']:<13}{row['scheme']:<18}  skipped: {row['skipped']}")
            continue
        snr = "ref" if math.isinf(row["snr_db"]) else f"{row['snr_db']:.1f}"
        agreement = row.get("next_token_agreement")
        print(
            f"{row['component']:<13}{row['scheme']:<18}{row['quantize_s']:>11.2f}{row['predicted_bytes']:>16,}"
            f"{row['held_bytes']:>16,}{row.get('device_allocated_bytes', 0):>16,}{row['forward_s']:>11.4f}"
            f"{row['forward_ratio']:>7.2f}{snr:>8}{'' if agreement is None else f'{agreement:.1%}':>10}"
        )
    mismatched = [r for r in rows if "skipped" not in r and r["predicted_bytes"] != r["held_bytes"]]
    for row in mismatched:
        print(f"MISMATCH {row['component']} {row['scheme']}: held {row['held_bytes'] - row['predicted_bytes']:+} B")
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
