"""``acestep-core fleet scan|serve``: a GPU fleet on Ray. The parser imports nothing heavy; the handlers
import Ray (the ``fleet`` extra) when they run."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from typing import Any

from acestep_core.cli import EXIT_FAILURE, EXIT_OK, UsageError, add_json_flag, print_json
from acestep_core.cli.flags import number
from acestep_core.inputs import parse_memory_gb

HIGHEST_PORT = 65535
"""The largest TCP port number."""

INSTALL_HINT = "pip install 'acestep-core[fleet]'"

EXAMPLES = """\
examples:
  acestep-core fleet scan                              this machine as a one-node fleet (a local Ray)
  acestep-core fleet scan --address ray://head:10001   every GPU of a running cluster, one task each
  acestep-core fleet scan --simulate 8,16,24 --json    three simulated cards on a CPU-only machine
  acestep-core fleet serve --port 8000                 one deployment per tier class; HTTP on 127.0.0.1
  acestep-core fleet serve --simulate 8,16,24 --plan-only
      try the router on CPUs: replicas plan but run no model
  acestep-core fleet serve --simulate 8,16,24 --print-config > fleet.yaml
      the same fleet as a Serve config: `serve run fleet.yaml`, `serve deploy fleet.yaml`
  acestep-core fleet serve --stages --limit max_caption_tokens=128
      an LM deployment and a DiT+VAE deployment per class; a tighter caption limit

then:
  curl -s localhost:8000/ -d '{"duration_s": 120, "batch_size": 1}'    run a request where it fits
  curl -s localhost:8000/                                              the classes and their replicas

A request goes to the smallest class that runs it unclamped and can start it soonest (a larger idle
class rather than a queue); if none runs it unclamped, to the largest, and the response lists the
clamps. The response carries the decision record (classes considered, replica, device, tier, every
clamp, any retry) and the clips. Bodies are bounded (size, caption and lyrics tokens, integers,
nesting): a rejected one gets a 4xx and one message.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="a GPU fleet on Ray: scan every card, serve requests on the card that can run them",
        description="Scan a Ray cluster's GPUs (each detected by a task on the card itself) and serve "
        "ACE-Step with one Ray Serve deployment per tier class and routers that send each request to "
        "the smallest class that runs it unclamped and can start it soonest. Needs the fleet extra: " + INSTALL_HINT,
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
        help="serve requests: the Serve application acestep_core.runtime.fleet.app:app on the scanned classes",
        description="Scan the fleet, then deploy the Serve application acestep_core.runtime.fleet.app:app "
        "for its classes (the same application `serve run` / `serve deploy` deploy from --print-config's "
        "file) and serve until Ctrl-C, SIGTERM or --for; on the way out only this application is deleted.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(serve)
    serve.add_argument("--host", default="127.0.0.1", help="HTTP address (default: 127.0.0.1, this machine only)")
    serve.add_argument(
        "--port",
        type=number(int, least=1, most=HIGHEST_PORT),
        default=8000,
        help="HTTP port (default: 8000); a Serve instance already running on the cluster keeps its own",
    )
    serve.add_argument("--name", default=None, help="the application's name (default: acestep-fleet)")
    serve.add_argument("--route-prefix", default="/", help="the application's HTTP path (default: /)")
    serve.add_argument("--plan-only", action="store_true", help="replicas resolve but run no model")
    serve.add_argument("--size", choices=("tiny", "real"), default="tiny", help="the models' size (default: tiny)")
    serve.add_argument("--out", metavar="DIR", default=None, help="where replicas write WAV files on their node")
    serve.add_argument(
        "--ingress-replicas",
        type=number(int, least=1),
        default=2,
        metavar="N",
        help="router replicas in front of the classes (default: 2)",
    )
    serve.add_argument(
        "--replicas",
        type=number(int, least=1),
        default=None,
        metavar="N",
        help="replicas per class (default: one per card the scan found in the class)",
    )
    serve.add_argument(
        "--autoscale",
        metavar="MIN:MAX",
        default=None,
        help="let Serve scale every class between MIN and MAX replicas (one generation a replica)",
    )
    serve.add_argument(
        "--stages",
        action="store_true",
        help="two deployments per class: the LM, and text encoder + DiT + VAE, each with its own replicas, "
        "sharing the class's cards (--stage-gpus)",
    )
    serve.add_argument(
        "--stage-gpus",
        type=number(float, above=0, most=1),
        default=0.5,
        metavar="F",
        help="with --stages, the share of a card each stage replica takes (default: 0.5, an LM and a render "
        "replica per card; 1: each stage on cards of its own)",
    )
    serve.add_argument(
        "--request-timeout",
        type=number(float, above=0),
        default=900.0,
        metavar="S",
        help="cancel a request's generation and answer 504 after S seconds (default: 900)",
    )
    serve.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="change one request limit (repeatable); names: " + ", ".join(LIMIT_NAMES),
    )
    serve.add_argument(
        "--print-config",
        action="store_true",
        help="print the Serve config file for this fleet (YAML) and exit: `serve run FILE`, `serve deploy FILE`",
    )
    serve.add_argument(
        "--for",
        dest="serve_for",
        type=number(float, above=0),
        default=None,
        metavar="S",
        help="stop after S seconds (default: until Ctrl-C or SIGTERM)",
    )
    serve.set_defaults(handler=run_serve)


LIMIT_NAMES = (
    "max_body_bytes",
    "max_caption_tokens",
    "max_prompt_tokens",
    "max_depth",
    "max_integer",
    "max_seed",
    "max_steps",
    "max_batch_size",
    "max_duration_s",
    "required",
    "tokenizer",
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        metavar="ADDR",
        default=None,
        help="the Ray cluster to join (default: RAY_ADDRESS, else a local instance); see the README for "
        "RAY_AUTH_MODE=token",
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
        type=number(float, above=0),
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
            parse_memory_gb(size)
        except ValueError as error:
            raise UsageError(
                f"--simulate takes GPU sizes in GB separated by commas, such as 8,16,24; {error}"
            ) from None
    return sizes


def parse_limits(items: list[str]) -> dict[str, Any]:
    """``--limit NAME=VALUE`` items as the application's ``limits`` argument (checked as it will be)."""
    limits: dict[str, Any] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or name not in LIMIT_NAMES:
            raise UsageError(f"--limit takes NAME=VALUE with NAME one of {', '.join(LIMIT_NAMES)}; not {item!r}")
        if name == "required":
            limits[name] = [part.strip() for part in value.split(",") if part.strip()]
        elif name == "tokenizer":
            limits[name] = value
        else:
            kind = float if name == "max_duration_s" else int
            try:
                number_value = kind(value)
            except ValueError:
                number_value = -1
            if not number_value > 0:
                raise UsageError(
                    f"--limit {name} takes a positive {'number' if kind is float else 'integer'}; not {value!r}"
                )
            limits[name] = number_value
    from acestep_core.runtime.fleet.limits import RequestLimits

    checked: dict[str, Any] = {k: tuple(v) if k == "required" else v for k, v in limits.items()}
    try:
        RequestLimits(**checked)
    except ValueError as error:
        raise UsageError(f"--limit: {error}") from None
    return limits


def _autoscale(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    low, colon, high = raw.partition(":")
    if colon and low.isdigit() and high.isdigit() and 0 <= int(low) <= int(high) and int(high) >= 1:
        return int(low), int(high)
    raise UsageError(f"--autoscale takes MIN:MAX replicas with 0 <= MIN <= MAX and MAX >= 1, such as 1:4; not {raw!r}")


def _needs_ray() -> None:
    """Ray and Ray Serve, or the ModuleNotFoundError that the CLI turns into the fleet extra's install line."""
    import ray  # noqa: F401
    from ray import serve  # noqa: F401


def cluster_address(args: argparse.Namespace, sizes: list[str]) -> str | None:
    """The cluster to join: ``--address``, else ``RAY_ADDRESS`` (as Ray itself reads it), else None (a
    local instance). With ``--simulate`` on a cluster, its own GPU slots get the simulated sizes."""
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address and sizes and not args.address:
        print(
            f"note: RAY_ADDRESS={address} is set, so --simulate sizes that cluster's own GPU slots (no logical "
            "GPUs are declared there); unset RAY_ADDRESS to try the fleet on a local instance",
            file=sys.stderr,
        )
    return address


def _check_slots(result: Any, sizes: list[str], address: str | None) -> None:
    if sizes and address and len(result.gpus) < len(sizes):
        raise UsageError(
            f"--simulate {','.join(sizes)} needs {len(sizes)} GPU slots, but the cluster at {address} has "
            f"{len(result.gpus)}; start it with `ray start --head --num-gpus {len(sizes)}`, or unset RAY_ADDRESS "
            "(and drop --address) to try the fleet on a local instance"
        )


def run_scan(args: argparse.Namespace) -> int:
    sizes = parse_sizes(args.simulate)
    _needs_ray()
    from acestep_core.runtime.fleet.scan import connect, render, scan

    address = cluster_address(args, sizes)
    connect(address, simulate=sizes, log_to_driver=not args.json)
    result = scan(address, simulate=sizes, timeout_s=args.timeout, tiers=args.tiers)
    _check_slots(result, sizes, address)
    if args.json:
        print_json(result.to_dict())
    else:
        print(render(result))
    return EXIT_OK if result.devices and len(result.failed) < len(result.devices) else EXIT_FAILURE


class StopServing(BaseException):
    """SIGTERM arrived: stop serving and clean up (raised in the main thread by the handler)."""


def app_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The application's arguments from the command line, less the classes (which come from the scan)."""
    arguments: dict[str, Any] = {
        "tiers": args.tiers,
        "plan_only": args.plan_only or None,
        "size": args.size,
        "out_dir": args.out,
        "ingress_replicas": args.ingress_replicas,
        "request_timeout_s": args.request_timeout,
        "stages": args.stages or None,
        "stage_gpus": args.stage_gpus if args.stages else None,
    }
    limits = parse_limits(args.limit)
    if limits:
        arguments["limits"] = limits
    return arguments


def _specs(args: argparse.Namespace, specs: list[Any]) -> list[Any]:
    scale = _autoscale(args.autoscale)
    return [
        dataclasses.replace(s, replicas=args.replicas or s.replicas, autoscaling=scale or s.autoscaling) for s in specs
    ]


def run_serve(args: argparse.Namespace) -> int:
    sizes = parse_sizes(args.simulate)
    arguments = app_arguments(args)
    name = args.name or "acestep-fleet"
    _autoscale(args.autoscale)
    _needs_ray()
    if args.print_config and sizes and not (args.address or os.environ.get("RAY_ADDRESS")):
        # Simulated classes are decided here, as the replicas will decide them: no cluster needed.
        from acestep_core.runtime.fleet.serve import simulated_specs

        return _print_config(args, name, _specs(args, simulated_specs(sizes, tiers=args.tiers)), arguments)
    import ray

    from acestep_core.runtime.fleet.scan import connect, render, scan
    from acestep_core.runtime.fleet.serve import classes_from_scan

    address = cluster_address(args, sizes)
    ours = not ray.is_initialized() and address is None
    connect(address, simulate=sizes, log_to_driver=not args.json)
    stop = _stop_on_sigterm()
    try:
        result = scan(address, simulate=sizes, timeout_s=args.timeout, tiers=args.tiers)
        _check_slots(result, sizes, address)
        specs = _specs(args, classes_from_scan(result))
        if not specs:
            print(render(result), file=sys.stderr)
            raise UsageError("no working GPU in the fleet to serve on (try --simulate 8,16,24 on CPUs)")
        if args.print_config:
            return _print_config(args, name, specs, arguments)
        return _serve(args, name, specs, arguments, result, stop)
    except StopServing:
        print("stopped (SIGTERM)", file=sys.stderr)
        return EXIT_OK
    finally:
        if ours:  # the local instance this command started (and only that)
            ray.shutdown()


def _print_config(args: argparse.Namespace, name: str, specs: list[Any], arguments: dict[str, Any]) -> int:
    import yaml

    from acestep_core.runtime.fleet.app import serve_config

    config = serve_config(specs, arguments, name=name, route_prefix=args.route_prefix, host=args.host, port=args.port)
    if args.json:
        print_json(config)
    else:
        print(yaml.safe_dump(config, sort_keys=False), end="")
    return EXIT_OK


def _serve(
    args: argparse.Namespace,
    name: str,
    specs: list[Any],
    arguments: dict[str, Any],
    result: Any,
    stop: threading.Event,
) -> int:
    from ray import serve
    from ray.serve.exceptions import RayServeException

    from acestep_core.runtime.fleet.app import app, class_args
    from acestep_core.runtime.fleet.scan import render

    serve.start(http_options={"host": args.host, "port": args.port})
    existing = serve.status().applications
    if name in existing:
        raise UsageError(
            f"the cluster already runs a Serve application named {name!r}; choose another with --name "
            "(nothing of it was changed)"
        )
    application = app(
        {"classes": [class_args(s) for s in specs], **{k: v for k, v in arguments.items() if v is not None}}
    )
    deployed = False
    try:
        try:
            serve.run(application, name=name, route_prefix=args.route_prefix)
        except RayServeException as error:
            if "is being used by application" in str(error):
                raise UsageError(f"{error} Choose another path with --route-prefix (nothing was changed).") from None
            raise
        deployed = True
        url = f"http://{args.host}:{args.port}{args.route_prefix}"
        summary: dict[str, Any] = {
            "url": url,
            "app": name,
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
            print(f"\nserving {classes} at {url} (POST a request as JSON; GET for the fleet; Ctrl-C or SIGTERM stops)")
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait(args.serve_for)
    except StopServing:
        pass
    finally:
        if deployed or name in serve.status().applications:
            serve.delete(name)
    if stop.is_set():
        print("stopped (SIGTERM)", file=sys.stderr)
    return EXIT_OK


def _stop_on_sigterm() -> threading.Event:
    """SIGTERM (a service manager, `kill`): stop serving, delete our application, exit 0 — no stack dump.
    Replaces the handler ``ray.init`` installs (which exits from wherever the main thread is)."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            return
        stop.set()
        if not waiting[0]:
            raise StopServing

    waiting = [False]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
    original_wait = stop.wait

    def wait(timeout: float | None = None) -> bool:
        waiting[0] = True
        try:
            return original_wait(timeout)
        finally:
            waiting[0] = False

    stop.wait = wait  # type: ignore[method-assign]
    return stop
