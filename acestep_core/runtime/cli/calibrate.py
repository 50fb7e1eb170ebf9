"""``acestep-core calibrate``: measure this device and write a tier table from the measurements."""

from __future__ import annotations

import argparse
from typing import Any

from acestep_core.cli import UsageError, add_json_flag, print_json
from acestep_core.cli.flags import number, number_list
from acestep_core.inputs import MAX_MEMORY_GB, clip, output_dir_problem
from acestep_core.types import to_jsonable
from acestep_core.vocabulary import CUDA_CONTEXT_BYTES, GIB, LM_SIZES, MIB, SAFETY_MARGIN_BYTES

CPU_NOTE = (
    "on a CPU: tiny models against a fake budget of {unit:g} MiB per card 'GB' — this tests calibrate's "
    "mechanics only; the table says nothing about any GPU (run it on the GPU you want a table for)"
)
CPU_CARDS = (20.0, 40.0)
CPU_DURATIONS = (10, 20)
CPU_BATCHES = (1, 2)

EPILOG = """\
examples:
  acestep-core calibrate --out cal/                         8, 12, 16 GB cards, 0.6B and 1.7B LMs (a GPU)
  acestep-core calibrate --out cal/ --cards 6,8,10,12 --lm 0.6B --durations 60,120,240,480,600
  acestep-core tiers validate cal/tiers.toml && acestep-core tiers compare default cal/tiers.toml
  acestep-core info --tiers cal/tiers.toml                  use the measured table

Each card of C GB is emulated by capping the allocator at C - context - margin GB
(torch.cuda.set_per_process_memory_fraction; nvidia-smi and mem_get_info do not show the cap).
Interrupted? Run the same command again: measurements already in OUT/measurements.json are reused.
On a CPU the tiny models run and each trial's footprint is estimated against a fake budget of
C x --cpu-unit-mib MiB (defaults: cards 20,40, durations 10,20, batches 1,2): this tests the
mechanics only; it says nothing about any GPU.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="measure this device (emulating smaller cards) and write a tier table + raw measurements",
        description="Run ACE-Step's real-shaped components across durations x batch sizes x LM sizes on this device, "
        "emulating smaller cards, find the largest duration and batch that run with a safety margin, and "
        "write a validated tier table plus the raw measurements.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="where to write tiers.toml and measurements.json")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a tiers.toml in --out that calibrate did not write"
    )
    parser.add_argument(
        "--cards",
        type=number_list(float, above=0, most=MAX_MEMORY_GB),
        metavar="GB,...",
        help="card sizes to emulate, each larger than context + margin (default 8,12,16 on a GPU)",
    )
    parser.add_argument(
        "--durations",
        type=number_list(int, least=10, most=600),
        metavar="S,...",
        help="durations to try, seconds, 10-600 (default 60,240,600)",
    )
    parser.add_argument(
        "--batches",
        type=number_list(int, least=1, most=1024),
        metavar="N,...",
        help="batch sizes to try, 1-1024 (default 1,2,4,8)",
    )
    parser.add_argument("--lm", metavar="SIZES", default="0.6B,1.7B", help="LM sizes to measure (default 0.6B,1.7B)")
    parser.add_argument(
        "--vae-decode",
        choices=("tiled", "full"),
        default="tiled",
        help="which VAE decode the limits assume (default tiled)",
    )
    parser.add_argument("--no-full-vae", action="store_true", help="do not also measure full (untiled) VAE decode")
    parser.add_argument(
        "--margin-gb",
        type=number(float, least=0, most=1024),
        default=None,
        help=f"safety margin left unused, GB, 0 or more (default {SAFETY_MARGIN_BYTES / GIB:g})",
    )
    parser.add_argument(
        "--context-gb",
        type=number(float, least=0, most=1024),
        default=None,
        help=f"CUDA context outside the allocator, GB, 0 or more (default {CUDA_CONTEXT_BYTES / GIB:.2f})",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="cuda, cuda:N (NVIDIA or AMD ROCm), xpu, xpu:N (Intel), cpu or auto (default: cuda, else xpu, else cpu)",
    )
    parser.add_argument(
        "--sizes", choices=("real", "tiny"), help="component shapes (default: real on a GPU, tiny on a CPU)"
    )
    parser.add_argument(
        "--cpu-unit-mib",
        type=number(float, above=0, most=1024),
        default=1.0,
        help="CPU only: MiB per card 'GB' of fake budget (default 1)",
    )
    parser.add_argument(
        "--time-limit",
        type=number(float, above=0),
        metavar="S",
        help="stop starting trials after S seconds (resume later)",
    )
    parser.add_argument(
        "--tiers", metavar="NAME", help="the table outside the measured cards (default: the active table)"
    )
    parser.add_argument("--name", default="calibrated", help="the written table's name (default: calibrated)")
    parser.add_argument(
        "--compare-with", default="default", metavar="TABLE", help="table to compare the result with (default: default)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(parser)
    parser.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    problem = output_dir_problem(args.out)
    if problem:
        raise UsageError(f"--out {clip(args.out)!r}: {problem}")
    from acestep_core.scaffold import names_for

    try:
        names_for(args.name)
    except ValueError as error:
        raise UsageError(f"--name: {error}") from None
    from acestep_core.cli.tiers import active_choice
    from acestep_core.runtime.calibrate import search as calibrate
    from acestep_core.runtime.calibrate.torch_backend import TorchBackend, auto_device, cuda_available, xpu_available

    device = args.device
    if device == "auto":
        device = auto_device()
    on_cpu = device.startswith("cpu")
    if device.startswith("cuda") and not cuda_available():
        raise UsageError(f"--device {clip(device)}: no CUDA or ROCm device is available")
    if device.startswith("xpu") and not xpu_available():
        raise UsageError(f"--device {clip(device)}: no Intel XPU is available")
    if not on_cpu and not device.startswith(("cuda", "xpu")):
        raise UsageError(
            f"--device {clip(device)}: calibrate measures cuda (NVIDIA or ROCm), xpu or cpu; "
            "MPS has no allocator cap to emulate a card"
        )
    sizes = args.sizes or ("tiny" if on_cpu else "real")
    lm_sizes = tuple(s.strip() for s in args.lm.split(",") if s.strip())
    unknown = [s for s in lm_sizes if s not in LM_SIZES]
    if unknown:
        raise UsageError(f"--lm: unknown size(s) {clip(str(unknown))}; known: {', '.join(LM_SIZES)}")
    context_gb = calibrate.CONTEXT_GB if args.context_gb is None else args.context_gb
    margin_gb = calibrate.SAFETY_MARGIN_GB if args.margin_gb is None else args.margin_gb
    cards = args.cards or (CPU_CARDS if on_cpu else calibrate.DEFAULT_CARDS_GB)
    too_small = [card for card in cards if card <= context_gb + margin_gb]
    if too_small:
        raise UsageError(
            f"--cards {','.join(f'{c:g}' for c in too_small)}: a card must be larger than the CUDA context plus the "
            f"margin ({context_gb:g} + {margin_gb:g} GB), or nothing is left to measure under its cap"
        )
    config = calibrate.CalibrationConfig(
        cards_gb=cards,
        durations_s=args.durations or (CPU_DURATIONS if on_cpu else calibrate.DEFAULT_DURATIONS_S),
        batches=args.batches or (CPU_BATCHES if on_cpu else calibrate.DEFAULT_BATCHES),
        lm_sizes=lm_sizes,
        vae_decode=args.vae_decode,
        measure_full_vae=not args.no_full_vae,
        context_gb=context_gb,
        margin_gb=margin_gb,
        table_name=args.name,
    )
    base, _ = active_choice(args.tiers)
    if args.compare_with:
        from acestep_core.cli.tiers import table_named

        table_named(args.compare_with)  # an unknown table is refused now, not after the measurements
    backend = TorchBackend(
        device,
        sizes=sizes,
        dtype="fp32" if on_cpu else "bf16",
        context_gb=config.context_gb,
        margin_gb=config.margin_gb,
        cpu_unit_bytes=int(args.cpu_unit_mib * MIB),
    )
    try:
        calibrator = calibrate.Calibrator(
            backend,
            config,
            args.out,
            base_table=base.table,
            deadline_s=args.time_limit,
            progress=not args.no_progress and not args.json,
            overwrite=args.overwrite,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    result = calibrator.run()
    report = calibration_report(result, args.compare_with)
    report["device"] = device
    report["note"] = CPU_NOTE.format(unit=args.cpu_unit_mib) if on_cpu else None
    if args.json:
        print_json(report)
    else:
        print(render_report(report))
    return 0 if result.complete else 1


def calibration_report(result: Any, compare_with: str | None) -> dict[str, Any]:
    from acestep_core.runtime.calibrate.search import _card_json

    report: dict[str, Any] = {
        "complete": result.complete,
        "table_file": str(result.table_path) if result.table_path else None,
        "raw_file": str(result.raw_path),
        "trials_run": result.trials_run,
        "trials_reused": result.trials_reused,
        "cards": [_card_json(card) for card in result.cards],
        "table": to_jsonable(result.table) if result.table else None,
    }
    if result.table is not None and compare_with:
        from acestep_core.cli.tiers import table_named
        from acestep_core.compare import compare_tables

        report["comparison"] = compare_tables(table_named(compare_with), result.table).to_dict()
    return report


def render_report(report: dict[str, Any]) -> str:
    note = report.get("note")
    lines = [f"note: {note}"] if note else []
    if not report["complete"]:
        lines.append(
            f"incomplete: stopped at the time limit; {report['trials_run']} trials recorded in "
            f"{report['raw_file']} — run the same command to resume"
        )
        return "\n".join(lines)
    reused = f", {report['trials_reused']} reused from {report['raw_file']}" if report["trials_reused"] else ""
    lines.append(f"{report['trials_run']} trials run{reused}; measurements in {report['raw_file']}")
    for card in report["cards"]:
        without = card["without_lm"]
        with_lm = card["with_lm"]
        lm = f"with LM {with_lm[0]} s x {with_lm[1]} ({', '.join(card['lm_models'])})" if with_lm else "no LM"
        base = f"without LM {without[0]} s x {without[1]}" if without else "nothing runs"
        cap = (
            f"fake budget {card['cap_bytes'] / MIB:.0f} MiB"
            if note
            else f"allocator cap {card['cap_bytes'] / GIB:.2f} GiB"
        )
        lines.append(f"  {card['card_gb']:>5g} GB ({cap}): {base}; {lm}")
        lines.extend(f"         note: {card_note}" for card_note in card["notes"])
    lines.append(f"table written to {report['table_file']} (validated)")
    if "comparison" in report:
        differing = [c for c in report["comparison"]["cards"] if c["differences"]]
        lines.append(
            f"against {report['comparison']['a']['name']!r}: {len(differing)} of "
            f"{len(report['comparison']['cards'])} real card sizes decide differently"
        )
        for card in differing:
            fields = ", ".join(f"{k} {v['a']} → {v['b']}" for k, v in card["differences"].items())
            lines.append(f"  {card['from_gb']:>5g} GB  {card['tier_a']} → {card['tier_b']}: {fields}")
    if note:
        lines.append(f"note: {note}")
    return "\n".join(lines)
