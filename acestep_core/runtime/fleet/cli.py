"""``acestep-core fleet scan|serve``: a GPU fleet on Ray. The parser imports nothing heavy; the handlers
import Ray (the ``fleet`` extra) when they run."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

from acestep_core.cli import EXIT_FAILURE, EXIT_OK, UsageError, add_json_flag, print_json

INSTALL_HINT = "pip install 'acestep-core[fleet]'"

EXAMPLES = """\
examples:
  acestep-core fleet scan                              this machine as a one-node fleet (a local Ray)
  acestep-core fleet scan --address ray://head:10001   every GPU of a running cluster, one task each
  acestep-core fleet scan --simulate 8,16,24 --json    three simulated cards on a CPU-only machine
  acestep-core fleet serve --port 8000                 one deployment per tier class; HTTP on 127.0.0.1
  acestep-core fleet serve --simulate 8,16,24 --plan-only
      try the router on CPUs: replicas plan but run no model

then:
  curl -s localhost:8000/ -d '{"duration_s": 120, "batch_size": 1}'    run a request where it fits
  curl -s localhost:8000/                                              the classes and their replicas

A request goes to the smallest class that runs it unclamped; if none can, to the largest, and the
response lists the clamps. The response carries the decision record (classes considered, replica,
device, tier, every clamp, any retry) and the clips.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="a GPU fleet on Ray: scan every card, serve requests on the card that can run them",
        description="Scan a Ray cluster's GPUs (each detected by a task on the card itself) and serve "
        "ACE-Step with one Ray Serve deployment per tier class and a router that sends each request to "
        "the smallest class that runs it unclamped. Needs the fleet extra: " + INSTALL_HINT,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="fleet_command", metavar="SUBCOMMAND", required=True)
    scan = commands.add_parser(
        "scan",
        help="detect every GPU of the cluster (one Ray task per GPU) and list its tier and limits",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(scan)
    scan.set_defaults(handler=run_scan)
    serve = commands.add_parser(
        "serve",
        help="serve requests: one deployment per tier class, a router that picks the class",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(serve)
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default: 127.0.0.1, this machine only)")
    serve.add_argument(
        "--port",
        type=int,
        default=8000,
        help="HTTP port (default: 8000); a Serve instance already running on the cluster keeps its own",
    )
    serve.add_argument("--plan-only", action="store_true", help="replicas resolve but run no model")
    serve.add_argument("--size", choices=("tiny", "real"), default="tiny", help="the models' size (default: tiny)")
    serve.add_argument("--out", metavar="DIR", default=None, help="where replicas write WAV files on their node")
    serve.add_argument(
        "--for",
        dest="serve_for",
        type=float,
        default=None,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C)",
    )
    serve.set_defaults(handler=run_serve)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        metavar="ADDR",
        default=None,
        help="the Ray cluster to join (default: RAY_ADDRESS, else a local instance on 127.0.0.1)",
    )
    parser.add_argument(
        "--simulate",
        metavar="GB,GB,...",
        default=None,
        help="scan that many GPU slots, each with a simulated size (MAX_CUDA_VRAM per task); on a local "
        "instance also declares that many logical GPUs, so a fleet can be tried on CPUs",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a node's detection may take before it is listed as failed (default: 60)",
    )
    parser.add_argument("--tiers", metavar="NAME", default=None, help="the tier table (as for `plan`)")
    add_json_flag(parser)


def parse_sizes(raw: str | None) -> list[str]:
    if not raw:
        return []
    sizes = [part.strip() for part in raw.split(",")]
    for size in sizes:
        try:
            value = float(size)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise UsageError(
                f"--simulate takes GPU sizes in GB separated by commas, such as 8,16,24; {size!r} is not one"
            )
    return sizes


def _needs_ray() -> None:
    """Ray and Ray Serve, or the ModuleNotFoundError that the CLI turns into the fleet extra's install line."""
    import ray  # noqa: F401
    from ray import serve  # noqa: F401


def run_scan(args: argparse.Namespace) -> int:
    sizes = parse_sizes(args.simulate)
    _needs_ray()
    from acestep_core.runtime.fleet.scan import connect, render, scan

    connect(args.address, simulate=sizes, log_to_driver=not args.json)
    result = scan(args.address, simulate=sizes, timeout_s=args.timeout, tiers=args.tiers)
    if args.json:
        print_json(result.to_dict())
    else:
        print(render(result))
    return EXIT_OK if result.devices and len(result.failed) < len(result.devices) else EXIT_FAILURE


def run_serve(args: argparse.Namespace) -> int:
    sizes = parse_sizes(args.simulate)
    _needs_ray()
    from ray import serve

    from acestep_core.runtime.fleet.scan import connect, render, scan
    from acestep_core.runtime.fleet.serve import ServeOptions, build_app, classes_from_scan

    connect(args.address, simulate=sizes, log_to_driver=not args.json)
    result = scan(args.address, simulate=sizes, timeout_s=args.timeout, tiers=args.tiers)
    specs = classes_from_scan(result)
    if not specs:
        print(render(result), file=sys.stderr)
        raise UsageError("no working GPU in the fleet to serve on (try --simulate 8,16,24 on CPUs)")
    options = ServeOptions(tiers=args.tiers, plan_only=args.plan_only, size=args.size, out_dir=args.out)
    serve.start(http_options={"host": args.host, "port": args.port})
    serve.run(build_app(specs, options), name="acestep-fleet", route_prefix="/")
    url = f"http://{args.host}:{args.port}/"
    summary: dict[str, Any] = {
        "url": url,
        "classes": [
            {"name": s.name, "replicas": s.replicas, "memory_gib": round((s.reading.device.total_gib or 0), 2)}
            for s in specs
        ],
        "unserved": [d.to_dict() for d in result.failed],
    }
    if args.json:
        print_json(summary)
    else:
        print(render(result))
        classes = ", ".join(f"{s.name} × {s.replicas}" for s in specs)
        print(f"\nserving {classes} at {url} (POST a request as JSON; GET for the fleet; Ctrl-C stops)")
    sys.stdout.flush()
    try:
        deadline = None if args.serve_for is None else time.monotonic() + args.serve_for
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
    return EXIT_OK
