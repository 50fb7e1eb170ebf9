"""``acestep-core info`` and ``acestep-core plan``: resolve a request and explain every decision."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from acestep_core.cli import Parser, UsageError, environ, print_json
from acestep_core.cli.options import REQUEST_OPTIONS, RESOLUTION_OPTIONS, add_options
from acestep_core.cli.terminal import terminal_text
from acestep_core.inputs import MAX_NESTING, clip, nesting_depth, parse_index
from acestep_core.resolve import OverrideError, resolve
from acestep_core.types import (
    DetectOptions,
    GenerationRequest,
    MemoryReading,
    Overrides,
    Resolution,
    plan_override_problem,
)
from acestep_core.vocabulary import (
    COMPONENTS,
    GIB,
    LM_SIZES,
    MIN_DURATION_S,
    LmMode,
)

INFO_EXAMPLES = """\
examples:
  acestep-core info                        this machine's device, tier, limits and plan
  MAX_CUDA_VRAM=8 acestep-core info        the same for a simulated 8 GB CUDA card
  acestep-core info --vram 16 --json       a simulated 16 GB card, as JSON for a tool or UI
  acestep-core info --no-compile           a user value wins; the output says what the tier gave

memory figures are GiB: MAX_CUDA_VRAM=8 is 8 GiB. A real card is compared by its NVML total (torch's
where NVML is missing), and a reading up to 5% below a tier boundary counts as the boundary, so an
"8 GB" card reading 7.6-7.9 GiB gets the 8 GB tier. Simulated sizes are taken exactly.
"""

PLAN_EXAMPLES = """\
examples:
  MAX_CUDA_VRAM=8 acestep-core plan --duration 600 --batch 8 --lm 4B
      Tier 4: 4B is refused and 0.6B offered; with the LM 240 s and batch 2, three warnings
  MAX_CUDA_VRAM=8 acestep-core plan --duration 600 --batch 8 --lm none
      without the LM the same tier gives 360 s and batch 4
  MAX_CUDA_VRAM=8 acestep-core plan --duration 600 --max-duration 600
      override the tier's limit; the output records what the tier would have given
  MAX_CUDA_VRAM=8 acestep-core plan --duration 240 --set vae.decode=full
      the user's settings are re-predicted: refused (the VAE needs 17.3 GiB of a 6.7 GiB budget), exit 1
  MAX_CUDA_VRAM=8 acestep-core plan --duration 240 --set vae.decode=full --force
      kept anyway: recorded in memory.forced and warned, exit 0
  MAX_CUDA_VRAM=16 acestep-core plan --dit xl-sft --json
      the XL sft DiT: memory.components counts its 4,987,310,726 parameters; dit.forwards_per_step is 2 (CFG)
  acestep-core plan --checkpoints ~/ACE-Step-1.5/checkpoints --lm 1.7B
      budget what the folder's files hold (the LM's vocabulary from its config.json)

exit status: 0 ok, 1 failure (no tier table, no plugin could decide) or a refused plan (predicted over the
device budget and not forced, or refused by --set ladder.refused; one line on stderr says why), 2 bad usage.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    info = subparsers.add_parser(
        "info",
        help="hardware → tier → defaults → plan, and which plugin decided each",
        description="Show what this machine gets: the device detected, the tier chosen, "
        "its limits, the default request "
        "and the optimization plan, with the plugin behind each decision.",
        epilog=INFO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_resolution_options(info)
    info.set_defaults(handler=run_info)

    plan = subparsers.add_parser(
        "plan",
        help="fit a request to the tier's limits; print the adjusted request and every warning",
        description="Fit a generation request to this machine's tier. Requests over a "
        "limit are clamped with a warning; "
        "an LM size the tier does not allow is refused and the recommended one offered.",
        epilog=PLAN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_request_options(plan)
    add_resolution_options(plan)
    plan.set_defaults(handler=run_plan)


def add_request_options(parser: argparse.ArgumentParser) -> None:
    add_options(parser, REQUEST_OPTIONS)


def add_resolution_options(parser: argparse.ArgumentParser) -> None:
    add_options(parser, RESOLUTION_OPTIONS)


class _RaisingParser(Parser):
    """``plan``'s parser for callers other than the command line: a usage error raises instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@functools.cache
def _plan_parser() -> argparse.ArgumentParser:
    parser = _RaisingParser(prog="acestep-core plan", add_help=False)
    add_request_options(parser)
    add_resolution_options(parser)
    return parser


def parse_plan_args(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed as ``acestep-core plan ARGV`` parses it (the same options, types and checks).

    :raises UsageError: with the message the command prints after ``error:`` (``argument --vram: ...``).
    """
    return _plan_parser().parse_args(list(argv))


def request_from_args(args: argparse.Namespace) -> GenerationRequest:
    lm = getattr(args, "lm", "auto")
    if getattr(args, "duration", None) is not None and args.duration <= 0:
        raise UsageError(f"--duration must be positive, not {args.duration:g}")
    if getattr(args, "batch", 1) < 1:
        raise UsageError(f"--batch must be 1 or more, not {args.batch}")
    mode: LmMode
    model: str | None
    if lm == "auto":
        mode, model = "auto", None
    elif lm == "none":
        mode, model = "off", None
    elif lm in LM_SIZES:
        mode, model = "on", lm
    else:
        raise UsageError(f"--lm must be one of {', '.join(LM_SIZES)}, 'none' or 'auto', not {lm!r}")
    checkpoints = getattr(args, "checkpoints", None)
    if checkpoints is not None and (problem := _folder_problem(checkpoints)):
        raise UsageError(f"--checkpoints {clip(checkpoints)!r}: {problem}")
    return GenerationRequest(
        duration_s=getattr(args, "duration", None),
        batch_size=getattr(args, "batch", 1),
        lm_model=model,
        lm=mode,
        dit_model=getattr(args, "dit", None),
        checkpoints=checkpoints,
    )


def _folder_problem(path: str) -> str | None:
    from acestep_core.checkpoints import folder_problem  # only when --checkpoints is given: not at start-up

    return folder_problem(path)


def overrides_from_args(args: argparse.Namespace) -> Overrides:
    plan: dict[str, Any] = {}
    if args.attention:
        plan["attention"] = args.attention
    if args.compile is not None:
        plan["compile"] = args.compile
    if getattr(args, "lm_backend", None):
        plan["lm.backend"] = args.lm_backend
    for component in COMPONENTS:
        if args.offload:
            plan[f"offload.{component}"] = args.offload
        if args.quantization and component != "vae":
            plan[f"quantization.{component}"] = args.quantization
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, not {clip(item)!r}")
        value = set_value(raw)
        if nesting_depth(value) > MAX_NESTING:
            raise UsageError(f"--set {clip(item)}: the value nests more than {MAX_NESTING} levels deep")
        problem = plan_override_problem(key, value)
        if problem is not None:
            raise UsageError(f"--set {clip(item)}: {problem}")
        plan[key] = value
    lm_models = None
    if args.allow_lm is not None:
        lm_models = tuple(size.strip() for size in args.allow_lm.split(",") if size.strip())
        unknown = [size for size in lm_models if size not in LM_SIZES]
        if unknown:
            raise UsageError(f"--allow-lm: unknown LM size(s) {unknown}; known: {', '.join(LM_SIZES)}")
    for flag, value, least in (
        ("--max-duration", args.max_duration, MIN_DURATION_S),
        ("--max-batch", args.max_batch, 1),
    ):
        if value is not None and value < least:
            raise UsageError(f"{flag} must be {least} or more, not {value}")
    try:
        return Overrides(
            max_duration_s=args.max_duration,
            max_batch=args.max_batch,
            lm_models=lm_models,
            plan=plan,
            force=bool(getattr(args, "force", False)),
        )
    except ValueError as error:  # the API's rules, should a flag above have missed one
        raise UsageError(str(error)) from None


def set_value(raw: str) -> Any:
    """``--set KEY=VALUE``'s value: JSON where it parses (``false``, ``128``, ``["lm_head"]``), else the
    text itself. JSON nested too deeply for the parser is not JSON a plan key takes: a usage error."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw
    except RecursionError:
        raise UsageError(
            f"--set {clip(raw)}: the value nests more than {MAX_NESTING} levels deep (no plan key takes that)"
        ) from None


def resolve_from_args(args: argparse.Namespace) -> Resolution:
    """Resolve as the flags say. What the user typed is held to it: a flag that chose nothing (a
    recording that cannot be replayed, a device that is not there) is a :class:`UsageError`, where the
    same problem from the environment stays a warning."""
    for flag, value in (("--replay", args.replay), ("--device", args.device), ("--tiers", args.tiers)):
        if value is not None and not value.strip():
            raise UsageError(f"{flag} '': an empty value; leave {flag} out for the default")
    if args.vram is not None and args.replay is not None:
        raise UsageError(f"--vram {clip(args.vram)} and --replay {clip(args.replay)} both choose the device: give one")
    env = environ()
    options = DetectOptions(device=args.device, vram_gb=args.vram, replay=args.replay, environ=env)
    try:
        resolution = resolve(
            request_from_args(args),
            overrides=overrides_from_args(args),
            detect_options=options,
            tiers=args.tiers,
            redetect=args.redetect,
            environ=env,
        )
    except OverrideError as error:
        raise UsageError(f"--set {error.key}={clip(json.dumps(error.value))}: {error}") from None
    for problem in resolution.problems:
        if problem.kind == "invalid-setting" and (problem.setting or "").startswith("--"):
            raise UsageError(problem.error)
        if args.replay is not None and problem.hook == "detect_memory" and problem.kind == "raised":
            raise ReplayFailedError(f"while replaying {args.replay}, {problem.message()}")
    if args.device is not None and not resolution.reading.simulated:
        missing = device_problem(args.device, resolution.reading)
        if missing:
            raise UsageError(f"--device {clip(args.device)}: {missing}")
    return resolution


class ReplayFailedError(RuntimeError):
    """Replaying a recording that passed validation raised: a bug in the code that replays it, not the
    file's fault (reported as an internal error; ``ACESTEP_CORE_DEBUG=1`` shows the traceback)."""


def device_problem(selector: str, reading: MemoryReading) -> str | None:
    """Why ``--device selector`` names none of the reading's visible devices (an ordinal in ASCII
    digits, or a unique UUID prefix with or without ``GPU-``/``MIG-``), or None when it names one."""
    devices = [d for d in reading.visible if d.is_accelerator]
    listing = "; ".join(f"{d.index} = {d.name} ({d.uuid or 'no UUID'})" for d in devices)
    wanted = selector.strip().lower()
    if not devices:
        return "no accelerator is visible (the CPU runs); leave --device out"
    index = parse_index(wanted)
    if index is not None:
        return None if any(d.index == index for d in devices) else f"no such device; visible: {listing}"
    if not wanted.isascii():
        return f"not an index (digits 0-9) nor a UUID prefix (hex digits and '-'); visible: {listing}"

    def bare(text: str) -> str:
        return re.sub(r"^(gpu|mig)-", "", text.lower())

    matches = [d for d in devices if d.uuid and bare(d.uuid).startswith(bare(wanted))]
    if len(matches) == 1 and wanted:
        return None
    found = f"matches {len(matches)} devices" if matches else "matches no device"
    return f"{found}: give an index or a unique UUID prefix; visible: {listing}"


def run_info(args: argparse.Namespace) -> int:
    resolution = resolve_from_args(args)
    if args.json:
        print_json(resolution.to_dict())
    else:
        print(render_resolution(resolution, show_request=False))
    return 0


def run_plan(args: argparse.Namespace) -> int:
    """Exit 1 for a refused plan (predicted over the device budget and not forced, or refused by the
    user's ``--set ladder.refused``), with one line on stderr saying why."""
    resolution = resolve_from_args(args)
    if args.json:
        print_json(resolution.to_dict())
    else:
        print(render_resolution(resolution, show_request=True))
    if not resolution.plan.value("ladder.refused"):
        return 0
    reason = resolution.plan["ladder.refused"].reason
    why = reason if reason.startswith("refused") else f"refused: {reason}"
    sys.stdout.flush()
    print(f"acestep-core: error: plan {terminal_text(why)}", file=sys.stderr)
    return 1


# --------------------------------------------------------------------------------------------- text
def render_resolution(resolution: Resolution, *, show_request: bool) -> str:
    lines: list[str] = []
    device = resolution.reading.device
    tier = resolution.tier
    lines.append(f"device     {_device_line(device)}")
    for other in resolution.reading.visible:
        if other != device:
            lines.append(f"           also visible: {_device_line(other)}")
    lines.append(f"tier       {tier.label} ({tier.vram_label()}) from table {resolution.table!r}")
    lines.append(f"limits     {_limits_line(tier)}")
    adjusted = resolution.adjusted
    duration = "chosen by the LM" if adjusted.duration_s is None else f"{adjusted.duration_s:g} s"
    lm = adjusted.lm_model or "off"
    label = "request  " if show_request else "defaults "
    lines.append(f"{label}  duration {duration}, batch {adjusted.batch_size}, LM {lm}, DiT {adjusted.dit_model}")
    lines.append("plan")
    width = max((len(s.key) for s in resolution.plan), default=0)
    for setting in resolution.plan:
        lines.append(f"  {setting.key:<{width}}  {json.dumps(setting.value):<20} {setting.reason} [{setting.plugin}]")
    if resolution.overrides:
        lines.append("overrides")
        for override in resolution.overrides:
            lines.append(f"  {override.key} = {override.value!r} (the tier would have given {override.default!r})")
    lines.append("decided by")
    for decision in resolution.decisions:
        lines.append(f"  {decision.hook:<24} {decision.plugin:<16} {decision.summary}")
    if resolution.warnings:
        lines.append("warnings")
        lines.extend(f"  ! {warning}" for warning in resolution.warnings)
    return "\n".join(lines)


def _device_line(device: Any) -> str:
    if not device.is_accelerator:
        return "CPU (no accelerator)"
    total = "?" if device.total_bytes is None else f"{device.total_bytes / GIB:.2f} GiB"
    free = "" if device.free_bytes is None else f", {device.free_bytes / GIB:.2f} GiB free"
    where = f"{device.backend}:{device.index}" if device.index is not None else device.backend
    tags = [
        tag
        for tag, on in (("simulated", device.simulated), ("MIG", device.mig), ("unified memory", device.unified_memory))
        if on
    ]
    return f"{device.name} [{where}] {total} total{free}" + (f" ({', '.join(tags)})" if tags else "")


def _limits_line(tier: Any) -> str:
    dits = f"; DiT {', '.join(tier.dit_models)}"
    if not tier.lm_models:
        return f"duration ≤ {tier.max_duration_without_lm_s} s, batch ≤ {tier.max_batch_without_lm}; no LM{dits}"
    memory = ", ".join(f"{m} {tier.lm_memory_gb[m]:g} GB" if m in tier.lm_memory_gb else m for m in tier.lm_models)
    return (
        f"duration ≤ {tier.max_duration_with_lm_s} s with LM / {tier.max_duration_without_lm_s} s without; "
        f"batch ≤ {tier.max_batch_with_lm} / {tier.max_batch_without_lm}; LM {memory} "
        f"({'on' if tier.lm_default_on else 'off'} by default){dits}"
    )
