"""``acestep-core generate``: resolve a request and run the reference pipeline, writing WAV files."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from acestep_core.cli import EXIT_FAILURE, EXIT_OK, UsageError, print_json
from acestep_core.cli.flags import number
from acestep_core.cli.resolution import add_request_options, add_resolution_options, resolve_from_args
from acestep_core.inputs import clip, output_dir_problem

EXIT_CANCELLED = 130
DEFAULT_OUT = "acestep-out"
STALE_CLIP = re.compile(r"clip_\d{2,}\.wav")

EXAMPLES = """\
examples:
  acestep-core generate --duration 30 --batch 2 --out out/
      the embedded tiny models on this machine's tier (on a CPU: Tier 1, batch clamped to 1, LM off)
  MAX_CUDA_VRAM=16 acestep-core generate --duration 30 --batch 2 --out out/
      plan for a 16 GB card (Tier 6: LM on, the recommended 1.7B, batch 2), run as tiny stand-ins
  acestep-core generate --size real --lm 0.6B --duration 60 --out out/ --json
      the real shapes (random weights) on the GPU: the report's peaks are what the tier budgets

The embedded models have random weights: the WAV files are noise. The run demonstrates and measures
the flow (per phase: device, time, peak memory, and the decisions behind them).

Your files are safe: without --out each run writes into a new folder acestep-out/run-<UTC time>;
--out DIR must be new or empty unless --overwrite is given (then clip_NN.wav files of an earlier run
are replaced or removed, nothing else). Each WAV is written under a temporary name and renamed, and
--out is checked before any work starts. Ctrl-C cancels cleanly: models are released and the clips
this run had written are removed (the message says which).
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="run the reference pipeline (LM → DiT → VAE) under this machine's resolution; write WAV files",
        description="Resolve the request exactly as `plan` does, then run the reference "
        "pipeline with the plan applied: "
        "the LM writes its chain of thought and codes (its duration constrained to the tier), the DiT "
        "denoises latents, the VAE decodes them, and one WAV per batch item is written.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_request_options(parser)
    add_resolution_options(parser)
    run = parser.add_argument_group("run")
    run.add_argument(
        "--out",
        metavar="DIR",
        help=f"folder for the WAV files, new or empty (default: a new {DEFAULT_OUT}/run-<UTC time>)",
    )
    run.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty --out, replacing an earlier run's clips"
    )
    run.add_argument(
        "--size",
        choices=("tiny", "real"),
        default="tiny",
        help="tiny embedded models (default) or the real shapes, random weights either way",
    )
    run.add_argument(
        "--steps",
        type=number(int, least=1, most=1000),
        default=8,
        metavar="N",
        help="denoising steps, 1-1000 (default: 8, the turbo DiT)",
    )
    run.add_argument(
        "--seed", type=number(int, least=0, most=2**63 - 1), default=0, help="random seed, 0 or more (default: 0)"
    )
    run.add_argument("--caption", default=None, help="the caption to encode")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    out = output_folder(args.out, overwrite=args.overwrite)
    created = not out.exists()
    resolution = resolve_from_args(args)
    from acestep_core.runtime.pipeline import (
        DEFAULT_CAPTION,
        CancelHandle,
        GenerationCancelledError,
        generate,
        render_report,
    )

    before = {path.name for path in out.iterdir()} if out.is_dir() else set()
    cancel = CancelHandle()
    try:
        result = generate(
            resolution=resolution,
            out_dir=out,
            size=args.size,
            steps=args.steps,
            seed=args.seed,
            caption=args.caption or DEFAULT_CAPTION,
            cancel=cancel,
            progress=not (args.no_progress or args.json),
        )
    except (KeyboardInterrupt, GenerationCancelledError) as error:
        cancel.cancel()
        removed = getattr(error, "removed", ())
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        kept = "the clips it had written were removed: " + ", ".join(removed) if removed else "it had written no files"
        message = f"generation cancelled; its models were released and {kept}"
        if args.json:
            print_json({"error": message, "cancelled": True, "removed": list(removed)})
        else:
            print(f"acestep-core: {message}", file=sys.stderr)
        return EXIT_CANCELLED
    written = {Path(clip_.path).name for clip_ in result.clips}
    stale = sorted(name for name in before - written if STALE_CLIP.fullmatch(name))
    for name in stale:
        (out / name).unlink(missing_ok=True)
    if args.json:
        print_json({**result.to_dict(), "out": str(out), "removed_stale": stale})
    else:
        print(render_report(result))
        if stale:
            print(f"removed {len(stale)} clip(s) of an earlier run from {out} (--overwrite): {', '.join(stale)}")
    return EXIT_OK if result.clips else EXIT_FAILURE


def output_folder(wanted: str | None, *, overwrite: bool) -> Path:
    """The folder this run writes into, checked before any work: ``--out`` as given (new or empty,
    or anything writable with ``--overwrite``), else a new ``acestep-out/run-<UTC time>``."""
    if wanted is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = Path(DEFAULT_OUT) / f"run-{stamp}"
        for attempt in range(2, 1000):
            if not out.exists():
                break
            out = Path(DEFAULT_OUT) / f"run-{stamp}-{attempt}"
        problem = output_dir_problem(out)
        flag = f"the default folder {str(out)!r}"
    else:
        out = Path(wanted)
        problem = output_dir_problem(wanted, must_be_empty=not overwrite)
        flag = f"--out {clip(wanted)!r}"
    if problem == "is not empty":
        problem += ": give a new folder, or --overwrite to replace an earlier run's clips in it"
    if problem:
        raise UsageError(f"{flag}: {problem}")
    return out
