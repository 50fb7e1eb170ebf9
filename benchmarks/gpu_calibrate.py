"""GPU check for issue 6: `acestep-core calibrate` for 8, 12 and 16 GB cards emulated on one GPU.

    python benchmarks/gpu_calibrate.py OUTDIR            # on the GPU (about 2 minutes on an H100)
    python benchmarks/gpu_calibrate.py OUTDIR --dry-run  # on a CPU: tiny models, fake budget

Runs the calibration (LMs 0.6B and 1.7B, the real-shaped DiT, tiled and full VAE decode; durations
60/240/600 s x batches 1/2/4/8), with a time limit so it ends inside the budget (an interrupted
run says so and can be resumed), then compares the table it wrote with the default table. Writes
OUTDIR/calibrate/{tiers.toml,measurements.json}, OUTDIR/gpu_calibrate.json and a plot, and prints
the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

from acestep_core.vocabulary import GIB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outdir")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, fake budget (tests the script)")
    parser.add_argument(
        "--time-limit", type=float, default=130.0, help="stop starting trials after S seconds (default 130)"
    )
    args = parser.parse_args()

    from acestep_core.cli import main as cli

    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    cal = out / "calibrate"
    command = ["calibrate", "--out", str(cal), "--json", "--time-limit", str(args.time_limit), "--lm", "0.6B,1.7B"]
    if args.dry_run:
        command += ["--device", "cpu", "--no-full-vae"]
    else:
        command += ["--device", "cuda", "--cards", "8,12,16", "--durations", "60,240,600", "--batches", "1,2,4,8"]
    started = time.perf_counter()
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        code = cli(command)
    seconds = round(time.perf_counter() - started, 1)
    report = json.loads(captured.getvalue())
    raw = json.loads((cal / "measurements.json").read_text())

    peaks: dict[str, dict[str, object]] = {}
    for m in raw["measurements"]:
        peaks.setdefault(f"{m['card_gb']:g} GB", {})[f"{m['phase']} {m['duration_s']}s x{m['batch']}"] = (
            f"{m['peak_bytes'] / GIB:.2f} GiB" if m["fits"] else "OOM"
        )
    summary = {
        "exit_code": code,
        "wall_s": seconds,
        "complete": report.get("complete"),
        "environment": raw["environment"],
        "config": raw["config"],
        "trials": len(raw["measurements"]),
        "cards": [
            {
                k: card[k]
                for k in (
                    "card_gb",
                    "cap_bytes",
                    "without_lm",
                    "with_lm",
                    "lm_models",
                    "lm_memory_gb",
                    "frontiers",
                    "notes",
                )
            }
            for card in report.get("cards", [])
        ],
        "peaks": peaks,
        "comparison_with_default": report.get("comparison"),
        "table_file": report.get("table_file"),
    }
    if report.get("table_file"):
        from acestep_core.cli.tiers import table_named
        from acestep_core.compare import compare_tables, plot_comparison, render_comparison

        comparison = compare_tables(table_named("default"), table_named(report["table_file"]))
        summary["plot"] = str(plot_comparison(comparison, out / "calibrated_vs_default.png"))
        summary["comparison_text"] = render_comparison(comparison)
    (out / "gpu_calibrate.json").write_text(json.dumps(summary, indent=1))

    print(
        f"calibrate: exit {code}, {seconds} s, complete={summary['complete']}, {summary['trials']} trials on "
        f"{raw['environment'].get('device')}"
    )
    print(f"  driver {raw['environment'].get('driver')}, versions {raw['environment'].get('versions')}")
    for card in summary["cards"]:
        print(
            f"  {card['card_gb']:g} GB (cap {card['cap_bytes'] / GIB:.2f}): without LM {card['without_lm']}, "
            f"with LM {card['with_lm']} "
            f"LMs {card['lm_models']} {card['lm_memory_gb']} {card['notes'] or ''}"
        )
        for phase, frontier in card["frontiers"].items():
            print(f"      {phase:<10} largest batch per duration {frontier}")
    for card, rows in peaks.items():
        print(f"  peaks on {card}: " + "; ".join(f"{k} {v}" for k, v in rows.items()))
    if "comparison_text" in summary:
        print(summary["comparison_text"])
    print(f"written: {out / 'gpu_calibrate.json'}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
