"""``acestep-core ui``: registered with the CLI without importing Gradio (the ``ui`` extra)."""

from __future__ import annotations

import argparse
import ipaddress
import sys

from acestep_core.cli import UsageError

LOOPBACK = "127.0.0.1"

EXAMPLES = """\
examples:
  acestep-core ui                               serve the page on http://127.0.0.1:7860 (this machine only)
  acestep-core ui --port 8080 --out runs/       another port; clips written under runs/
  acestep-core ui --host 0.0.0.0 --auth me:secret
      reachable from other machines (a warning is printed); a user name and password are asked

The page resolves exactly as `acestep-core plan` does: every control is one of plan's options, and
the decision it shows is what `acestep-core plan --json` prints for them. Needs the ui extra:
pip install 'acestep-core[ui]' (and the ml extra to generate).
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="a local web page: hardware, request limits, overrides, plan, tables and generate (Gradio)",
        description="Serve a page onto the same resolution as the CLI: the device and tier, request controls "
        "whose limits follow the tier, overrides marked as such, the memory plan and its ladder, tier-table "
        "comparison, and the reference pipeline with per-phase progress and Cancel.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=LOOPBACK, help=f"address to bind (default: {LOOPBACK}, this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860, or the next free one)")
    parser.add_argument("--auth", metavar="USER:PASSWORD", help="ask for this user name and password")
    parser.add_argument("--out", metavar="DIR", help="where clips and plots are written (default: a temporary folder)")
    parser.set_defaults(handler=run_ui, json=False)


def parse_auth(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    user, sep, password = raw.partition(":")
    if not sep or not user or not password:
        raise UsageError(f"--auth takes USER:PASSWORD (both non-empty), not {raw!r}")
    return user, password


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_ui(args: argparse.Namespace) -> int:
    auth = parse_auth(args.auth)
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1-65535, not {args.port}")
    if not is_loopback(args.host):
        print(
            f"acestep-core: warning: serving on {args.host}: anyone who can reach this machine can use the page "
            "and run generations on its device" + ("" if auth else "; consider --auth USER:PASSWORD"),
            file=sys.stderr,
        )
    from acestep_core.runtime.ui.app import launch

    launch(host=args.host, port=args.port, auth=auth, out_dir=args.out)
    return 0
