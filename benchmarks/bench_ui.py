"""How fast the ui page answers, beside the same resolution through the CLI (printed, not asserted).

1. Decide after a change, on the server: the page's handler (its fields' checks, the CLI's parser and
   resolution, the notes and panels rendered), median over N changes cycling the simulated size and the
   duration; beside it what ``plan --json`` does in-process on the same arguments (``parse_plan_args``,
   ``resolve_from_args``, the JSON), and a cold ``acestep-core plan --json`` process.
2. Typing in a real browser (headless Chromium, a page served by ``acestep-core ui``): a 3-character
   duration typed at a person's pace (70-220 ms between keys), M values in a row —
   - the time from the last keystroke to the decision shown for the value (median; it includes the page's
     pause in typing, ``PAUSE_MS``), and the same when the value is committed with Enter (no pause);
   - how many resolves each 3-character value triggered (goal: 1), read from the page's resolve counter.
3. Launch to tier shown: ``acestep-core ui`` started as a process until a headless Chromium (started
   beforehand) shows the tier on the page, median of L launches; beside it a cold ``acestep-core info --json``.

    python benchmarks/bench_ui.py [--changes 60] [--typed 30] [--launches 5]

Needs the ui extra, playwright and Debian's chromium.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

from coldrun import timed

CLI = [sys.executable, "-c", "import sys; from acestep_core.cli import main; sys.exit(main())"]
SIZES = ("4", "8", "12", "16", "24")
DURATIONS = ("30", "120", "240", "600")
TYPED = ("240", "180", "360", "120", "300", "150", "480", "210", "270", "330")
"""3-character durations typed one after another (each differs from the one before)."""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    return env | {"GRADIO_ANALYTICS_ENABLED": "False", "ACESTEP_CORE_CACHE_DIR": tempfile.mkdtemp(prefix="bench-ui-")}


def bench_decide(changes: int, cold_runs: int) -> None:
    from acestep_core.cli.resolution import parse_plan_args, resolve_from_args
    from acestep_core.runtime.ui import render
    from acestep_core.runtime.ui.fields import argv_of
    from acestep_core.runtime.ui.page import FIELDS, decide

    values = [
        {"vram": SIZES[i % len(SIZES)], "duration": DURATIONS[i % len(DURATIONS)], "lm": "0.6B"} for i in range(changes)
    ]

    def page_handler(held: dict[str, str]) -> None:
        decision = decide(held)
        assert decision.resolution is not None
        resolution = decision.resolution
        render.field_notes(FIELDS, resolution, decision.given)
        for panel in (render.headline, render.status_line, render.plan_chart, render.warnings_list):
            panel(resolution)
        render.overrides_table(resolution)
        render.plan_table(resolution)
        render.hardware_table(resolution)
        resolution.to_json()

    for held in values[: len(SIZES)]:  # warm: detection of each size is cached per process, for both sides
        page_handler(held)
    page, cli = [], []
    for held in values:
        started = time.perf_counter()
        page_handler(held)
        page.append(time.perf_counter() - started)
        started = time.perf_counter()
        json.dumps(resolve_from_args(parse_plan_args(argv_of(FIELDS, held))).to_dict(), indent=2, ensure_ascii=False)
        cli.append(time.perf_counter() - started)
    env = clean_env()
    cold = [timed([*CLI, "plan", "--json", *argv_of(FIELDS, values[i % len(values)])], env) for i in range(cold_runs)]
    print(f"decide after a change, on the server (median of {changes} changes: size {'/'.join(SIZES)} GB x duration)")
    print(f"  page handler (check + parse + resolve + render)   {statistics.median(page) * 1e3:8.2f} ms")
    print(f"  `plan --json`'s own work in-process (same argv)   {statistics.median(cli) * 1e3:8.2f} ms")
    print(
        f"  cold `acestep-core plan --json` process           {statistics.median(cold) * 1e3:8.2f} ms"
        f" (median of {cold_runs})"
    )
    print(f"  page / CLI in-process: {statistics.median(page) / statistics.median(cli):.2f}x")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chromium_path() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("bench_ui: Debian's chromium is needed (apt-get install chromium)")
    return chromium


@contextlib.contextmanager
def served(env: dict[str, str], out: str) -> Iterator[tuple[str, float]]:
    """``acestep-core ui`` on a free port until it answers; yields its URL and when it was started."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    server = subprocess.Popen(
        [*CLI, "ui", "--port", str(port), "--out", out], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
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
        yield url, started
    finally:
        server.terminate()
        server.wait(timeout=30)


WATCH = """() => {
    window.acKeys = [];
    window.acDecided = [];
    document.addEventListener('keydown', (e) => window.acKeys.push([e.key, performance.now()]), true);
    const command = document.querySelector('#command');
    let last = null;
    new MutationObserver(() => {
        const el = command.querySelector('.ac-command');
        if (el && el.dataset.argv !== last) {
            last = el.dataset.argv;
            window.acDecided.push([last, Number(el.dataset.resolves), performance.now()]);
        }
    }).observe(command, {subtree: true, childList: true, attributes: true});
}"""


def bench_typing(typed: int) -> None:
    """Type ``typed`` 3-character durations at a person's pace, half decided by the pause, half by Enter."""
    from playwright.sync_api import sync_playwright

    from acestep_core.runtime.ui.client import PAUSE_MS

    rng = random.Random(26)
    env = clean_env() | {"ACESTEP_CORE_TIERS": "default"}
    latency: dict[str, list[float]] = {"pause": [], "enter": []}
    counts: collections.Counter[int] = collections.Counter()
    gaps: list[float] = []
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as out, served(env, out) as (url, _):
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.locator("#tier h2").wait_for()
        page.locator("#command .ac-command").wait_for()
        page.evaluate(WATCH)
        box = page.locator("#duration input").first
        box.click()
        previous = None
        for index in range(typed):
            value = TYPED[index % len(TYPED)]
            if value == previous:
                value = TYPED[(index + 1) % len(TYPED)]
            way = "pause" if index % 2 == 0 else "enter"
            box.press("Control+a")  # the old value selected: the first key types over it
            before = int(page.locator("#command .ac-command").get_attribute("data-resolves"))
            keys_before = page.evaluate("window.acKeys.length")
            for key in value:
                box.press(key)
                page.wait_for_timeout(rng.randint(70, 220))
            if way == "enter":
                box.press("Enter")
            want = f'["--duration", "{value}"]'
            page.wait_for_function(
                "(want) => window.acDecided.length && window.acDecided[window.acDecided.length - 1][0] === want",
                arg=want,
            )
            keys = page.evaluate("window.acKeys")[keys_before:]
            digits = [t for k, t in keys if k not in ("Control", "a", "Enter")]
            last_key = keys[-1][1] if way == "enter" else digits[-1]
            decided_at = page.evaluate("window.acDecided[window.acDecided.length - 1][2]")
            latency[way].append(decided_at - last_key)
            gaps += [b - a for a, b in itertools.pairwise(digits)]
            counts[int(page.locator("#command .ac-command").get_attribute("data-resolves")) - before] += 1
            previous = value
        browser.close()
    print(f"typing a 3-character duration at a person's pace ({typed} values; page pause {PAUSE_MS} ms)")
    print(
        f"  last keystroke -> decision shown, typing paused     {statistics.median(latency['pause']):8.1f} ms"
        f" (median of {len(latency['pause'])}; {PAUSE_MS} ms of it the pause)"
    )
    print(
        f"  Enter -> decision shown                            {statistics.median(latency['enter']):8.1f} ms"
        f" (median of {len(latency['enter'])})"
    )
    print(
        f"  resolves per 3-character value: {dict(sorted(counts.items()))} (goal: 1 each); "
        f"keystroke gaps in the browser: median {statistics.median(gaps):.0f} ms, max {max(gaps):.0f} ms"
    )


def bench_launch(launches: int) -> None:
    from playwright.sync_api import sync_playwright

    env = clean_env() | {"ACESTEP_CORE_TIERS": "default"}
    times = []
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as out:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        for _ in range(launches):
            with served(env, out) as (url, started):
                page = browser.new_page()
                page.goto(url)
                page.locator("#tier h2").wait_for(timeout=120_000)
                times.append(time.perf_counter() - started)
                page.close()
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
    parser.add_argument("--changes", type=int, default=60, help="server-side changes to time (>= 50)")
    parser.add_argument("--typed", type=int, default=30, help="3-character values to type in the browser (>= 30)")
    parser.add_argument("--launches", type=int, default=5, help="launches to time (>= 5)")
    parser.add_argument("--cold-runs", type=int, default=5, help="cold CLI processes to time")
    args = parser.parse_args()
    bench_decide(max(args.changes, 50), args.cold_runs)
    bench_typing(max(args.typed, 30))
    bench_launch(max(args.launches, 5))


if __name__ == "__main__":
    main()
