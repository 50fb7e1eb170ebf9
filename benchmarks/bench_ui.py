"""How fast the ui page answers, beside the same resolution through the CLI (printed, not asserted).

1. Re-resolve after a control changes: the server-side handler the page calls (the CLI's parser +
   resolution + rendering the page's view), median over N changes cycling the simulated size and the
   duration; beside it the CLI's own ``resolve_from_args`` in-process for the same arguments, and a cold
   ``acestep-core plan --json`` process.
2. Launch to tier shown: ``acestep-core ui`` started as a process until a headless Chromium (started
   beforehand) shows the tier on the page, median of M launches; beside it a cold
   ``acestep-core info --json``.

    python benchmarks/bench_ui.py [--changes 60] [--launches 5]

Needs the ui extra, playwright and Debian's chromium.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from coldrun import timed

CLI = [sys.executable, "-c", "import sys; from acestep_core.cli import main; sys.exit(main())"]
SIZES = ("4", "8", "12", "16", "24")
DURATIONS = (30, 120, 240, 600)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    return env | {"GRADIO_ANALYTICS_ENABLED": "False"}


def bench_reresolve(changes: int, cold_runs: int) -> None:
    from acestep_core.cli.resolution import resolve_from_args
    from acestep_core.runtime.ui.app import _view_updates
    from acestep_core.runtime.ui.page import PageInputs, cli_argv, parse_cli

    inputs = [
        PageInputs(vram=SIZES[i % len(SIZES)], duration=DURATIONS[i % len(DURATIONS)], lm_mode="on", lm_size="0.6B")
        for i in range(changes)
    ]
    for page_inputs in inputs[: len(SIZES)]:  # warm: detection of each size is cached per process, for both sides
        _view_updates(page_inputs)
    page, cli = [], []
    for page_inputs in inputs:
        started = time.perf_counter()
        _view_updates(page_inputs)
        page.append(time.perf_counter() - started)
        started = time.perf_counter()
        resolve_from_args(parse_cli(cli_argv(page_inputs)))
        cli.append(time.perf_counter() - started)
    env = clean_env()
    cold = [timed([*CLI, "plan", "--json", *cli_argv(inputs[i % len(inputs)])], env) for i in range(cold_runs)]
    print(f"re-resolve after a control change (median of {changes} changes: size {'/'.join(SIZES)} GB x duration)")
    print(f"  page handler (parse + resolve + render the view)  {statistics.median(page) * 1e3:8.2f} ms")
    print(f"  CLI resolve_from_args in-process (same argv)      {statistics.median(cli) * 1e3:8.2f} ms")
    print(
        f"  cold `acestep-core plan --json` process           {statistics.median(cold) * 1e3:8.2f} ms"
        f" (median of {cold_runs})"
    )
    print(f"  page / CLI in-process: {statistics.median(page) / statistics.median(cli):.2f}x")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bench_launch(launches: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("bench_ui: Debian's chromium is needed (apt-get install chromium)")
    env = clean_env() | {"ACESTEP_CORE_TIERS": "default"}
    times = []
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as out:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for _ in range(launches):
            port = free_port()
            url = f"http://127.0.0.1:{port}/"
            started = time.perf_counter()
            server = subprocess.Popen(
                [*CLI, "ui", "--port", str(port), "--out", out],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = started + 180
                while True:
                    try:
                        with urllib.request.urlopen(url, timeout=2):
                            break
                    except OSError:
                        if time.perf_counter() > deadline or server.poll() is not None:
                            raise SystemExit("bench_ui: the ui server did not start") from None
                        time.sleep(0.05)
                page = browser.new_page()
                page.goto(url)
                page.locator("#tier h2").wait_for(timeout=120_000)
                times.append(time.perf_counter() - started)
                page.close()
            finally:
                server.terminate()
                server.wait(timeout=30)
        browser.close()
    cold = [timed([*CLI, "info", "--json", "--tiers", "default"], env) for _ in range(launches)]
    print(f"launch to tier shown (median of {launches} launches; Chromium started beforehand)")
    print(f"  `acestep-core ui` until the page shows the tier   {statistics.median(times):8.2f} s")
    print(
        f"  cold `acestep-core info --json`                   {statistics.median(cold):8.2f} s (median of {launches})"
    )
    print(f"  ratio: {statistics.median(times) / statistics.median(cold):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=60, help="control changes to time (>= 50)")
    parser.add_argument("--launches", type=int, default=5, help="launches to time (>= 5)")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold CLI processes to time")
    args = parser.parse_args()
    bench_reresolve(max(args.changes, 50), args.cold_runs)
    bench_launch(max(args.launches, 5))


if __name__ == "__main__":
    main()
