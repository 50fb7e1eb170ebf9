"""``acestep-core generate``: resolve a request and run the reference pipeline, writing WAV files."""

from __future__ import annotations

import argparse
import sys

from acestep_core.cli import EXIT_FAILURE, EXIT_OK, print_json
from acestep_core.cli.resolution import add_request_options, add_resolution_options, resolve_from_args

EXIT_CANCELLED = 130

EXAMPLES = """\
examples:
  acestep-core generate --duration 30 --batch 2 --out out/
      the embedded tiny models on this machine's tier (on a CPU: Tier 1, batch clamped to 1, LM off)
  MAX_CUDA_VRAM=16 acestep-core generate --duration 30 --batch 2 --out out/
      plan for a 16 GB card (LM on, 4B requested → tiny stand-in), run wherever torch can
  acestep-core generate --size real --lm 0.6B --duration 60 --out out/ --json
      the real shapes (random weights) on the GPU: the report's peaks are what the tier budgets

The embedded models have random weights: the WAV files are noise. The run demonstrates and measures
the flow (per phase: device, time, peak memory, and the decisions behind them). Ctrl-C cancels
cleanly: models are released and no partial files are written.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="run the reference pipeline (LM → DiT → VAE) under this machine's resolution; write WAV files",
        description="Resolve the request exactly as `plan` does, then run the reference pipeline with the plan applied: the LM writes its chain of thought and codes (its duration constrained to the tier), the DiT denoises latents, the VAE decodes them, and one WAV per batch item is written.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_request_options(parser)
    add_resolution_options(parser)
    run = parser.add_argument_group("run")
    run.add_argument("--out", metavar="DIR", default="acestep-out", help="directory for the WAV files (default: acestep-out)")
    run.add_argument("--size", choices=("tiny", "real"), default="tiny", help="tiny embedded models (default) or the real shapes, random weights either way")
    run.add_argument("--steps", type=int, default=8, metavar="N", help="denoising steps (default: 8, the turbo DiT)")
    run.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    run.add_argument("--caption", default=None, help="the caption to encode")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from acestep_core.runtime.pipeline import (
        DEFAULT_CAPTION,
        CancelHandle,
        GenerationCancelledError,
        generate,
        render_report,
    )

    resolution = resolve_from_args(args)
    cancel = CancelHandle()
    try:
        result = generate(
            resolution=resolution, out_dir=args.out, size=args.size, steps=args.steps, seed=args.seed,
            caption=args.caption or DEFAULT_CAPTION, cancel=cancel, progress=not (args.no_progress or args.json),
        )
    except (KeyboardInterrupt, GenerationCancelledError):
        cancel.cancel()
        message = "generation cancelled; its models were released and no files were written"
        if args.json:
            print_json({"error": message, "cancelled": True})
        else:
            print(f"acestep-core: {message}", file=sys.stderr)
        return EXIT_CANCELLED
    if args.json:
        print_json(result.to_dict())
    else:
        print(render_report(result))
    return EXIT_OK if result.clips else EXIT_FAILURE
