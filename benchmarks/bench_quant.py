"""Quantization per backend × scheme on the CPU: quantize time, weight bytes (the plan's prediction against
what the quantized module holds), forward time against bf16, and quality (SNR against bf16; the LM's
next-token agreement).

Usage: python benchmarks/bench_quant.py [--size tiny|real] [--kinds dit lm text_encoder] [--repeats N]
                                         [--no-meta] [--json] [--write]

- Every component is built from its shipped config with random weights (seed 0), in bf16, and quantized
  through ``apply_plan`` (the pipeline's path) on a copy of the same model; inputs are fixed (seeded).
- ``--size tiny`` (default) runs the tiny real-class builds (seconds); ``--size real`` the real shapes (the
  0.6B LM with its 217,204-row vocabulary, Qwen3-Embedding-0.6B, the 2B DiT file's modules: 1.3 / 1.2 / 4.8 GB
  in bf16, twice that while a copy is quantized; one item of 16 tokens or latent frames a forward, so that a
  forward takes seconds on a shared CPU: the weights are read for few tokens, as when an LM decodes).
- Then the bytes of the real-size builds (the 2B and the XL DiT), quantized on the meta device (no memory),
  against the plan.
- ``--write`` stores the tiny builds' quality figures as the table the plan reads
  (``acestep_core/optimize/measurements/quality/quantization-cpu.json``): a DiT scheme under 20 dB is
  marked lossy in every plan that uses it.

Times are medians of ``--repeats`` forwards after one warm-up, in one process, bf16 first: ratios are of
this run only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
QUALITY = ROOT / "acestep_core" / "optimize" / "measurements" / "quality" / "quantization-cpu.json"
META_DIT_VARIANTS = ("turbo", "xl-turbo")
"""The DiTs whose real-size bytes are checked on the meta device (base / sft hold their family's modules)."""


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("torch", "torchao", "optimum-quanto", "transformers", "diffusers"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "missing"
    return found


def match(row: dict[str, Any]) -> str:
    difference = row["held_bytes"] - row["predicted_bytes"]
    return "exact" if difference == 0 else f"{difference:+}"


def render(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'component':<13}{'size':<6}{'backend':<9}{'scheme':<18}{'quantize s':>11}{'predicted B':>15}"
        f"{'held B':>15}{'match':>8}{'forward s':>11}{'×bf16':>7}{'SNR dB':>8}{'next tok':>10}"
    ]
    for row in rows:
        if "skipped" in row:
            name = f"{row['component']:<13}{row['size']:<6}{row['backend']:<9}{row['scheme']:<18}"
            lines.append(f"{name}  skipped: {row['skipped']}")
            continue
        snr = "ref" if math.isinf(row["snr_db"]) else f"{row['snr_db']:.1f}"
        agreement = row.get("next_token_agreement")
        lines.append(
            f"{row['component']:<13}{row['size']:<6}{row['backend']:<9}{row['scheme']:<18}{row['quantize_s']:>11.3f}"
            f"{row['predicted_bytes']:>15,}{row['held_bytes']:>15,}{match(row):>8}{row['forward_s']:>11.4f}"
            f"{row['forward_ratio']:>7.2f}{snr:>8}{'' if agreement is None else f'{agreement:.1%}':>10}"
        )
    return "\n".join(lines)


def render_meta(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'component':<13}{'scheme':<18}{'predicted B':>16}{'held B':>16}{'match':>8}{'of bf16':>9}"]
    base = {row["component"]: row["held_bytes"] for row in rows if row["scheme"] == "none"}
    for row in rows:
        lines.append(
            f"{row['component']:<13}{row['scheme']:<18}{row['predicted_bytes']:>16,}{row['held_bytes']:>16,}{match(row):>8}"
            f"{row['held_bytes'] / base[row['component']]:>9.1%}"
        )
    return "\n".join(lines)


def quality_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The shipped form: component → scheme → SNR (and next-token agreement), with where it came from."""
    components: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["scheme"] == "none" or "skipped" in row:
            continue
        figures = {"snr_db": round(row["snr_db"], 2)}
        if "next_token_agreement" in row:
            figures["next_token_agreement"] = round(row["next_token_agreement"], 4)
        components.setdefault(row["component"], {})[row["scheme"]] = figures
    return {
        "_comment": (
            "Output SNR against bf16 (10·log10 of signal over error power) of each quantization scheme on the tiny "
            "real-class builds (runtime.models, random weights, seed 0) over fixed seeded inputs: the DiT's sample "
            "(batch 2 × 64 latent frames), the LM's logits and next-token agreement (4 × 64 tokens), the text "
            "encoder's last hidden state. The plan reads it (optimize/quantization.py): a DiT scheme under 20 dB "
            "is marked lossy. Rewrite only with benchmarks/bench_quant.py --write."
        ),
        "source": "benchmarks/bench_quant.py --write",
        "date": datetime.date.today().isoformat(),
        "measured_on": "tiny builds, CPU, bf16 reference",
        "versions": versions(),
        "components": components,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "real"), default="tiny", help="the builds measured (default tiny)")
    parser.add_argument("--kinds", nargs="+", default=["dit", "lm", "text_encoder"], help="components to measure")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per scheme (median)")
    parser.add_argument("--no-meta", action="store_true", help="skip the real-size byte check on the meta device")
    parser.add_argument("--json", action="store_true", help="rows as JSON")
    parser.add_argument("--write", action="store_true", help=f"write the quality table ({QUALITY.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    if args.write and args.size != "tiny":
        parser.error("--write stores the tiny builds' figures: run it with --size tiny")
    warnings.filterwarnings("ignore")
    import torch

    from acestep_core.runtime import quantization as measure

    torch.manual_seed(0)
    rows = [row for kind in args.kinds for row in measure.measure(kind, args.size, repeats=args.repeats)]
    meta = []
    if not args.no_meta:
        for kind in args.kinds:
            # the DiT's two families: the 2B, and the XL (its encoders 2048 wide under a 2560-wide decoder)
            for variant in META_DIT_VARIANTS if kind == "dit" else META_DIT_VARIANTS[:1]:  # LMs ignore the variant
                component = kind if variant == META_DIT_VARIANTS[0] else f"{kind}:{variant}"
                for scheme in ("none", *measure.SCHEME_ORDER):
                    predicted, held = measure.meta_bytes(kind, "real", scheme, variant=variant)
                    meta.append(
                        {"component": component, "scheme": scheme, "predicted_bytes": predicted, "held_bytes": held}
                    )
    if args.json:
        data = {"versions": versions(), "threads": torch.get_num_threads(), "rows": rows, "meta": meta}
        print(json.dumps(data, indent=1))
    else:
        print(f"CPU, {torch.get_num_threads()} threads; " + ", ".join(f"{k} {v}" for k, v in versions().items()))
        print(render(rows))
        if meta:
            print("\nreal-size builds on the meta device (bf16): the plan's bytes against the quantized module's")
            print(render_meta(meta))
    if args.write:
        QUALITY.parent.mkdir(parents=True, exist_ok=True)
        QUALITY.write_text(json.dumps(quality_table(rows), indent=1) + "\n", encoding="utf-8")
        print(f"wrote {QUALITY.relative_to(ROOT)}", file=sys.stderr)
    mismatched = [r for r in [*rows, *meta] if "skipped" not in r and r["predicted_bytes"] != r["held_bytes"]]
    return 1 if mismatched else 0


if __name__ == "__main__":
    sys.exit(main())
