"""`acestep-core ui` in a real browser: Debian's Chromium driven by Playwright, one server and one browser
for the whole module. Every state is screenshotted to ``out/ui-screenshots/`` for a person to look at.

Without Chromium or Playwright these tests skip, except where ``ACESTEP_UI_BROWSER_REQUIRED=1`` (set by
``.ci/run``): then they fail, so CI can never pass without having run them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parents[1]
SCREENSHOTS = ROOT / "out" / "ui-screenshots"
EIGHT_TIER = ROOT / "examples" / "tiers_8tier" / "acestep_core_tiers_8tier" / "tiers.toml"
CHROMIUM = os.environ.get("ACESTEP_UI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("ACESTEP_UI_BROWSER_REQUIRED") == "1"
WAIT_MS = 30_000
CLI = [sys.executable, "-c", "import sys; from acestep_core.cli import main; sys.exit(main())"]


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"browser tests required (ACESTEP_UI_BROWSER_REQUIRED=1) but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        _unavailable("gradio is not installed (pip install -e '.[ui]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("ui-server") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    env |= {"GRADIO_ANALYTICS_ENABLED": "False", "ACESTEP_CORE_TIERS": "default"}
    out = tmp_path_factory.mktemp("ui-out")
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*CLI, "ui", "--port", str(port), "--out", str(out)], stdout=sink, stderr=sink, env=env
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"the ui server exited:\n{log.read_text()}"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    break
            assert time.monotonic() < deadline, f"the ui server did not answer in 120 s:\n{log.read_text()}"
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    text = log.read_text()
    assert "Traceback" not in text, f"the server logged an error:\n{text[-4000:]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        _unavailable("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        _unavailable("playwright is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def open_session(browser: Any, server: str) -> Any:
    context = browser.new_context(viewport={"width": 1300, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(server)
    page.locator("#tier h2").wait_for()
    return page


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:
    session = open_session(browser, server)
    yield session
    assert "Traceback" not in session.content()
    session.context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def field(page: Any, elem_id: str) -> Any:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input[type=text]").first


def set_vram(page: Any, gb: str) -> None:
    field(page, "vram").fill(gb)
    expect(page.locator("#hardware")).to_contain_text(f"simulated {gb} GB cuda device")


def shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def duration_max(page: Any) -> str:
    return page.locator("#duration input[type=range]").get_attribute("max")


def choose(page: Any, group: str, text: str) -> None:
    page.locator(f"#{group} label").filter(has_text=text).first.click()


# --------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize(
    ("gb", "label"), [("4", "Tier 1"), ("8", "Tier 4"), ("12", "Tier 5"), ("16", "Tier 6"), ("24", "Unlimited")]
)
def test_tier_for_simulated_cards(page: Any, screenshots: Path, gb: str, label: str) -> None:
    set_vram(page, gb)
    expect(page.locator("#tier h2")).to_contain_text(label)
    expect(page.locator("#tier")).to_contain_text("from table default")
    expect(page.locator("#hardware")).to_contain_text("detect_memory")
    shot(page, screenshots, f"tier-{gb}gb")


def test_duration_slider_follows_the_lm(page: Any, screenshots: Path) -> None:
    set_vram(page, "8")
    choose(page, "lm-mode", "on")
    expect(page.locator("#duration input[type=range]")).to_have_attribute("max", "240")
    shot(page, screenshots, "duration-8gb-with-lm")
    choose(page, "lm-mode", "off")
    expect(page.locator("#duration input[type=range]")).to_have_attribute("max", "360")
    shot(page, screenshots, "duration-8gb-without-lm")
    choose(page, "lm-mode", "on")
    expect(page.locator("#duration input[type=range]")).to_have_attribute("max", "240")
    number = page.locator("#duration input[type=number]")
    number.fill("500")
    number.press("Enter")
    expect(page.locator("#warnings")).to_contain_text(
        "duration 500 s exceeds the 240 s limit of Tier 4 (8-12GB, 8.00 GiB simulated) with the LM; using 240 s"
    )
    shot(page, screenshots, "duration-clamped")


def test_a_warning_pops_up_once_when_it_first_occurs(page: Any, screenshots: Path) -> None:
    """Each change's new warnings pop up; one already seen does not. Toasts are closed between steps, and
    a re-popped warning would arrive in the same response as the new one that is waited for."""

    def toasts(text: str) -> Any:
        return page.locator("[data-testid=toast-text]").filter(has_text=text)

    def close_toasts() -> None:
        for close in page.locator("[data-testid=toast-close]").all():
            close.click()
        expect(page.locator("[data-testid=toast-text]")).to_have_count(0)

    simulation, clamp, batch_clamp = "simulation is on (--vram=8)", "duration 500 s exceeds", "batch size 5 exceeds"
    set_vram(page, "8")
    expect(toasts(simulation)).to_have_count(1)
    close_toasts()
    choose(page, "lm-mode", "on")
    number = page.locator("#duration input[type=number]")
    number.fill("500")
    number.press("Enter")
    expect(toasts(clamp)).to_have_count(1)
    shot(page, screenshots, "warning-pop-up")
    expect(toasts(simulation)).to_have_count(0)
    close_toasts()
    batch = page.locator("#batch input")
    batch.fill("5")
    batch.press("Enter")
    expect(toasts(batch_clamp)).to_have_count(1)
    expect(page.locator("#warnings")).to_contain_text(simulation)
    expect(toasts(simulation)).to_have_count(0)


def test_a_refused_lm_shows_the_reason(page: Any, screenshots: Path) -> None:
    set_vram(page, "8")
    expect(page.locator("#lm-size")).to_contain_text("4B ✗ unavailable")
    expect(page.locator("#lm-size")).to_contain_text("0.6B ★ recommended")
    choose(page, "lm-size", "4B")
    reason = "LM 4B is not allowed on Tier 4 (8-12GB, 8.00 GiB simulated) (allowed: 0.6B); using the recommended 0.6B"
    expect(page.locator("#lm-note")).to_contain_text(reason)
    expect(page.locator("#warnings")).to_contain_text(reason)
    expect(page.locator("#lm-note")).to_contain_text("Tier 4 (8-12GB) allows only 0.6B")
    shot(page, screenshots, "lm-refused")


def test_an_override_is_marked_with_what_the_tier_gave(page: Any, screenshots: Path) -> None:
    field(page, "vram").fill("8GB")
    expect(page.locator("#vram-message")).to_contain_text("argument --vram: '8GB' is not a memory size")
    shot(page, screenshots, "override-bad-vram")
    set_vram(page, "8")
    expect(page.locator("#vram-message")).to_have_text("")
    field(page, "max-duration").fill("abc")
    expect(page.locator("#page-error")).to_contain_text("argument --max-duration: invalid int value: 'abc'")
    shot(page, screenshots, "override-bad-value")
    field(page, "max-duration").fill("600")
    expect(page.locator("#overrides")).to_contain_text("max_duration_s")
    expect(page.locator("#overrides")).to_contain_text("240")
    expect(page.locator("#limits")).to_contain_text("(override)")
    expect(page.locator("#duration input[type=range]")).to_have_attribute("max", "600")
    expect(page.locator("#page-error")).to_have_text("")
    page.get_by_text("plan keys (as --set").click()
    field(page, "plan-compile").fill("false")
    expect(page.locator("#overrides")).to_contain_text("compile")
    page.get_by_text("plan settings").click()
    expect(page.locator("#plan-table")).to_contain_text("✎ override")
    shot(page, screenshots, "override-marked")


def test_plan_chart_and_the_decision_download_equal_the_cli(page: Any, screenshots: Path, tmp_path: Path) -> None:
    set_vram(page, "2")
    number = page.locator("#duration input[type=number]")
    number.fill("600")
    number.press("Enter")
    expect(page.locator("#plan #refused")).to_contain_text("plan refused")
    expect(page.locator("#plan #ladder")).to_contain_text("rung(s) taken to fit")
    shot(page, screenshots, "plan-refused")
    set_vram(page, "8")
    number.fill("600")
    number.press("Enter")
    expect(page.locator("#warnings")).to_contain_text("duration 600 s exceeds the 240 s limit")
    # the controls now show what runs (240 s, 0.6B); asking for 4B is refused again, with the reason
    choose(page, "lm-size", "4B")
    expect(page.locator("#warnings")).to_contain_text("LM 4B is not allowed")
    expect(page.locator("#plan [data-phase=dit]")).to_be_visible()
    with page.expect_download() as download:
        page.locator("#decision button[aria-label*='ownload'], #decision a[download]").first.click()
    saved = tmp_path / "decision.json"
    download.value.save_as(saved)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    cli = subprocess.run(
        [
            *CLI,
            "plan",
            "--json",
            "--tiers",
            "default",
            "--vram",
            "8",
            "--duration",
            "240",
            "--batch",
            "1",
            "--lm",
            "4B",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    assert json.loads(saved.read_text()) == json.loads(cli.stdout)
    shot(page, screenshots, "plan-8gb-4b")


def test_a_broken_table_shows_the_validators_message(page: Any, screenshots: Path, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Tables").click()
    broken = tmp_path / "broken.toml"
    broken.write_text(EIGHT_TIER.read_text().replace("max_batch_with_lm = 1", "max_batch_with_lm = 0", 1))
    validate = subprocess.run(
        [*CLI, "tiers", "validate", str(broken)], capture_output=True, text=True, timeout=120, check=False
    )
    assert validate.returncode == 1
    problems = [line.strip() for line in validate.stdout.splitlines() if line.strip().startswith("- ")]
    assert problems
    page.locator("#table-upload input[type=file]").set_input_files(str(broken))
    expect(page.locator("#table-message")).to_contain_text("broken.toml: ")
    for problem in problems:
        expect(page.locator("#table-message")).to_contain_text(problem.removeprefix("- "))
    shot(page, screenshots, "table-broken")
    page.locator("#table-upload button[aria-label*='lear'], #table-upload button[title*='lear']").first.click()
    good = tmp_path / "eight.toml"
    good.write_text(EIGHT_TIER.read_text())
    page.locator("#table-upload input[type=file]").set_input_files(str(good))
    expect(page.locator("#table-message")).to_contain_text("valid — table '8tier'")
    page.locator("#compare").click()
    expect(page.locator("#table-message")).to_contain_text("'default' vs '8tier'")
    expect(page.locator("#compare-plot img")).to_be_visible()
    shot(page, screenshots, "table-compare")


def test_generate_then_cancel_and_one_run_per_device(browser: Any, server: str, screenshots: Path) -> None:
    first = open_session(browser, server)
    first.get_by_role("tab", name="Generate").click()
    number = first.locator("#steps input[type=number]")
    number.fill("2")
    number.press("Enter")
    first.locator("#generate").click()
    expect(first.locator("#gen-status")).to_contain_text("done: 1 clip(s)", timeout=240_000)
    expect(first.locator("#clip-1")).to_be_visible()
    expect(first.locator("#report")).to_contain_text("generated 1 clip(s)")
    shot(first, screenshots, "generate-done")

    number.fill("200")
    number.press("Enter")
    first.locator("#generate").click()
    expect(first.locator("#progress [data-phase=dit] .ac-val")).to_contain_text("/200", timeout=240_000)
    second = open_session(browser, server)
    second.get_by_role("tab", name="Generate").click()
    second.locator("#generate").click()
    expect(second.locator("#gen-status")).to_contain_text("queued: another run is using cpu")
    shot(second, screenshots, "generate-queued")
    second.locator("#cancel").click()
    expect(second.locator("#progress")).to_contain_text("cancelled while waiting for the device")
    first.locator("#cancel").click()
    expect(first.locator("#gen-status")).to_contain_text("cancelled: the run stopped", timeout=120_000)
    expect(first.locator("#clip-1")).to_be_hidden()
    shot(first, screenshots, "generate-cancelled")
    for session in (first, second):
        assert "Traceback" not in session.content()
        session.context.close()


def test_two_sessions_keep_their_own_cards(browser: Any, server: str, screenshots: Path) -> None:
    a, b = open_session(browser, server), open_session(browser, server)
    set_vram(a, "8")
    set_vram(b, "16")
    expect(a.locator("#tier h2")).to_contain_text("Tier 4")
    expect(b.locator("#tier h2")).to_contain_text("Tier 6")
    set_vram(a, "12")
    choose(b, "lm-mode", "off")
    expect(b.locator("#duration input[type=range]")).to_have_attribute("max", "480")
    expect(b.locator("#tier h2")).to_contain_text("Tier 6")
    expect(a.locator("#tier h2")).to_contain_text("Tier 5")
    shot(a, screenshots, "session-a-12gb")
    shot(b, screenshots, "session-b-16gb")
    for session in (a, b):
        session.context.close()
