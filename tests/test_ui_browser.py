"""`acestep-core ui` in a real browser, used as a person uses it: Debian's Chromium driven by Playwright, one
server and one browser for the whole module.

Values are typed one key at a time with a person's rhythm (70-220 ms between keys, seeded), with mistakes
backspaced, fields cleared and left with Tab, Enter or a pause. After each change the test waits for the
page to show the decision for what was typed (page state, never a sleep), checks that every control still
holds what was typed, and compares the decision with ``acestep-core plan --json`` run in a subprocess with
the arguments the test itself built from what it typed. Every state is screenshotted to
``out/ui-screenshots/`` for a person to look at.

Without Chromium or Playwright these tests skip, except where ``ACESTEP_UI_BROWSER_REQUIRED=1`` (set by
``.ci/run``): then they fail, so CI can never pass without having run them.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from acestep_core.runtime.ui.fields import component_of
from acestep_core.vocabulary import OFFLOADS, PLAN_KEYS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parents[1]
SCREENSHOTS = ROOT / "out" / "ui-screenshots"
EIGHT_TIER = ROOT / "examples" / "tiers_8tier" / "acestep_core_tiers_8tier" / "tiers.toml"
CHROMIUM = os.environ.get("ACESTEP_UI_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("ACESTEP_UI_BROWSER_REQUIRED") == "1"
WAIT_MS = 60_000
"""How long a page state may take to appear on a busy machine (a decision takes ~0.1 s on an idle one)."""
PAUSE_MS = 600
"""The page's pause in typing before it decides (``acestep_core.runtime.ui.client.PAUSE_MS``)."""
CLI = [sys.executable, "-c", "import sys; from acestep_core.cli import main; sys.exit(main())"]


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"browser tests required (ACESTEP_UI_BROWSER_REQUIRED=1) but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    url: str
    out: Path
    env: dict[str, str]
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        _unavailable("gradio is not installed (pip install -e '.[ui]')")
    from acestep_core.runtime.ui import client

    assert client.PAUSE_MS == PAUSE_MS
    port = _free_port()
    log = tmp_path_factory.mktemp("ui-server") / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    env |= {
        "GRADIO_ANALYTICS_ENABLED": "False",
        "ACESTEP_CORE_TIERS": "default",
        "ACESTEP_CORE_CACHE_DIR": str(tmp_path_factory.mktemp("cache")),
    }
    out = tmp_path_factory.mktemp("ui-out")
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*CLI, "ui", "--port", str(port), "--out", str(out)], stdout=sink, stderr=sink, env=env
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"the ui server exited:\n{log.read_text()}"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    break
            assert time.monotonic() < deadline, f"the ui server did not answer in 180 s:\n{log.read_text()}"
            time.sleep(0.5)
        yield Server(url, out, env, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    text = log.read_text()
    for bad in ("Traceback", "Integer exceeds", "share=True", "server_port"):
        assert bad not in text, f"the server logged {bad!r}:\n{text[-4000:]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        _unavailable("Debian's chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        _unavailable("playwright is not installed (pip install playwright)")
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


def open_session(browser: Any, server: Server, width: int = 1280, height: int = 800, query: str = "") -> Any:
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(server.url + query)
    page.locator("#tier h2").wait_for()
    expect(page.locator("#command .ac-command")).to_have_attribute("data-argv", "[]")
    return page


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    session = open_session(browser, server)
    yield session
    assert "Traceback" not in session.content()
    session.context.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


# --------------------------------------------------------------------------------------------- a person
class Person:
    """Types one key at a time, 70-220 ms apart; ``\\b`` in the text is a Backspace."""

    def __init__(self, page: Any, seed: int = 26) -> None:
        self.page = page
        self.rng = random.Random(seed)

    def box(self, field_id: str) -> Any:
        return self.page.locator(f"#{field_id} input, #{field_id} textarea").first

    def clear(self, field_id: str) -> None:
        box = self.box(field_id)
        box.click()
        box.press("Control+a")
        box.press("Backspace")

    def type(self, field_id: str, text: str, *, then: str = "pause", clear: bool = False) -> None:
        """Type ``text`` into the field, then leave it (``tab``), press ``enter``, or just stop (``pause``)."""
        if clear:
            self.clear(field_id)
        box = self.box(field_id)
        box.click()
        for key in text:
            box.press("Backspace" if key == "\b" else key)
            self.page.wait_for_timeout(self.rng.randint(70, 220))  # the rhythm of the keys, not a wait for state
        if then == "tab":
            box.press("Tab")
        elif then == "enter":
            box.press("Enter")

    def choose(self, field_id: str, label: str) -> None:
        """A radio button or a checkbox option by its label, or a dropdown entry."""
        control = self.page.locator(f"#{field_id}")
        if control.locator("input[role=combobox]").count():
            control.locator("input[role=combobox]").click()
            self.page.get_by_role("option", name=label, exact=True).click()
        else:
            control.locator("label").filter(has_text=label).first.click()

    def plan_tab(self, title: str) -> None:
        self.page.locator("#plan-keys").get_by_role("tab", name=title).click()


def close_toasts(page: Any) -> None:
    """Close every pop-up (one may close itself meanwhile: its time is up)."""
    from playwright.sync_api import Error as PlaywrightError

    toasts = page.locator("[data-testid=toast-close]")
    while toasts.count():
        with contextlib.suppress(PlaywrightError):
            toasts.first.click(timeout=2000)
    expect(page.locator("[data-testid=toast-text]")).to_have_count(0)


def typed_value(page: Any, field_id: str) -> str:
    return page.locator(f"#{field_id} input, #{field_id} textarea").first.input_value()


def wait_for_argv(page: Any, argv: list[str]) -> None:
    """Wait until the page shows the decision for ``argv`` (compared as options, in any order); say what
    it shows instead if it never does."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        _wait_for_argv(page, argv)
    except PlaywrightTimeout:
        shown = page.locator("#command .ac-command").get_attribute("data-argv")
        held = {f: typed_value(page, f) for f in ("vram", "duration", "batch")}
        raise AssertionError(f"the page never decided {argv}: it shows {shown}; the boxes hold {held}") from None


def _wait_for_argv(page: Any, argv: list[str]) -> None:
    page.wait_for_function(
        """(want) => {
            const el = document.querySelector('#command .ac-command');
            if (!el) return false;
            const pairs = (argv) => {
                const out = [];
                for (let i = 0; i < argv.length; i++) {
                    const next = argv[i + 1];
                    if (next !== undefined && !next.startsWith('--')) { out.push(argv[i] + ' ' + next); i++; }
                    else out.push(argv[i]);
                }
                return JSON.stringify(out.sort());
            };
            return pairs(JSON.parse(el.dataset.argv)) === pairs(want);
        }""",
        arg=argv,
        timeout=WAIT_MS,
    )


def resolves(page: Any) -> int:
    return int(page.locator("#command .ac-command").get_attribute("data-resolves"))


def page_decision(page: Any, folder: Path) -> dict:
    """The decision as the page's download button saves it."""
    if not page.locator("#decision").is_visible():
        page.get_by_text("decision (acestep-core plan --json)").click()
    with page.expect_download() as download:
        page.locator("#decision button[aria-label*='ownload'], #decision a[download]").first.click()
    saved = folder / f"decision-{time.monotonic_ns()}.json"
    download.value.save_as(saved)
    return json.loads(saved.read_text())


CLI_RUNS = """
import contextlib, io, json, sys
from acestep_core.cli import main
answers = []
for argv in json.load(sys.stdin):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["plan", "--json", *argv])
    answers.append([status, printed.getvalue()])
json.dump(answers, sys.__stdout__)
"""
"""``acestep-core plan --json ARGV`` for each ARGV, through the command's own ``main`` in one fresh process
(one interpreter start for a test's comparisons instead of one per comparison)."""


class Decisions:
    """What the page decided after each step of a test, checked against ``acestep-core plan --json`` run in
    a subprocess with the arguments the test built from what it typed."""

    def __init__(self, page: Any, server: Server, folder: Path) -> None:
        self.page, self.server, self.folder = page, server, folder
        self.seen: list[tuple[list[str], dict]] = []

    def after(self, argv: list[str]) -> dict:
        """Wait for the page to show the decision for ``argv``; return it (checked against the CLI later)."""
        wait_for_argv(self.page, argv)
        decision = page_decision(self.page, self.folder)
        self.seen.append((list(argv), decision))
        return decision

    def check(self) -> None:
        argvs = [argv for argv, _ in self.seen]
        done = subprocess.run(
            [sys.executable, "-c", CLI_RUNS],
            input=json.dumps(argvs),
            capture_output=True,
            text=True,
            timeout=300,
            env=self.server.env,
            check=True,
        )
        for (argv, on_page), (status, printed) in zip(self.seen, json.loads(done.stdout), strict=True):
            from_cli = json.loads(printed)
            refused = next(s["value"] for s in from_cli["plan"]["settings"] if s["key"] == "ladder.refused")
            assert status == (1 if refused else 0), (argv, status)
            assert on_page == from_cli, f"the page and `acestep-core plan --json {' '.join(argv)}` differ"
        assert self.seen, "nothing was compared"


# --------------------------------------------------------------------------------------------- typing
def test_every_numeric_control_holds_what_was_typed_and_decides_like_the_cli(
    page: Any, server: Server, screenshots: Path, tmp_path: Path
) -> None:
    """One value per numeric control, typed with a mistake backspaced or a field cleared, left by a pause,
    Tab or Enter; after each, every control holds what was typed and the decision is `plan --json`'s."""
    person = Person(page)
    decided = Decisions(page, server, tmp_path)
    held: dict[str, str] = {}
    argv: list[str] = []
    steps = [
        ("vram", "3\b24", "pause", ["--vram", "24"]),
        ("duration", "5\b240", "tab", ["--duration", "240"]),
        ("batch", "3", "enter", ["--batch", "3"]),
        ("max-duration", "6o\b00", "tab", ["--max-duration", "600"]),
        ("max-batch", "16", "pause", ["--max-batch", "16"]),
        ("device", "0", "enter", ["--device", "0"]),
        ("plan-lm-gpu-memory-ratio", "0.35", "tab", ["--set", "lm.gpu_memory_ratio=0.35"]),
        ("plan-vae-tile-frames", "1288\b", "enter", ["--set", "vae.tile_frames=128"]),
        ("plan-vae-tile-overlap", "16", "pause", ["--set", "vae.tile_overlap=16"]),
    ]
    for field_id, keys, then, words in steps:
        if field_id.startswith("plan-"):
            person.plan_tab("LM" if "-lm-" in field_id else "VAE")
        person.type(field_id, keys, then=then)
        held[field_id] = words[1].split("=")[-1]
        argv += words
        decision = decided.after(argv)
        for other, value in held.items():
            assert typed_value(page, other) == value, f"{other} was rewritten"
    assert decision["request"] == {
            "duration_s": 240, "batch_size": 3, "lm_model": None, "lm": "auto", "dit_model": None, "checkpoints": None
        }  # fmt: skip
    person.type("duration", "", then="tab", clear=True)
    argv = [word for word in argv if word not in ("--duration", "240")]
    decided.after(argv)
    assert typed_value(page, "duration") == ""
    shot(page, screenshots, "typed-every-numeric-control")
    decided.check()


def test_a_typed_duration_is_never_overwritten_nor_decided_half_typed(
    browser: Any, server: Server, screenshots: Path, tmp_path: Path
) -> None:
    """Typing 240 at a person's pace used to end as 10: each keystroke was resolved and the clamp written
    back. The page is opened with a 4 s pause (``?pause=4000``) so that even a busy machine delivers the
    three keys well inside it: a decision of ``2`` or ``24`` is then a defect, never a slow machine."""
    page = open_session(browser, server, query="?pause=4000")
    person = Person(page, seed=240)
    decided = Decisions(page, server, tmp_path)
    person.type("vram", "8", then="enter")
    person.choose("lm", "0.6B")
    wait_for_argv(page, ["--vram", "8", "--lm", "0.6B"])
    page.evaluate(
        """() => {
            window.acSeen = []; window.acKeys = [];
            const el = document.querySelector('#command');
            new MutationObserver(() => {
                const argv = el.querySelector('.ac-command');
                if (argv) window.acSeen.push(argv.dataset.argv);
            }).observe(el, {subtree: true, childList: true, attributes: true});
            document.addEventListener('keydown', () => window.acKeys.push(performance.now()), true);
        }"""
    )
    before = resolves(page)
    person.type("duration", "240")
    decided.after(["--vram", "8", "--lm", "0.6B", "--duration", "240"])
    assert typed_value(page, "duration") == "240"
    expect(page.locator("#duration-note")).to_contain_text("runs 240 s")
    keys = page.evaluate("window.acKeys")
    assert max(later - earlier for earlier, later in itertools.pairwise(keys)) < 4000
    seen = page.evaluate("window.acSeen")
    assert not [s for s in seen if '"2"' in s or '"24"' in s], f"a half-typed value was decided: {seen}"
    assert resolves(page) == before + 1, "three keys, one decision"
    person.type("duration", "500", then="tab", clear=True)
    argv = ["--vram", "8", "--lm", "0.6B", "--duration", "500"]
    decision = decided.after(argv)
    assert typed_value(page, "duration") == "500" and decision["adjusted"]["duration_s"] == 240
    expect(page.locator("#duration-note")).to_contain_text(
        "duration 500 s exceeds the 240 s limit of Tier 4 (8-12GB, 8.00 GiB simulated) with the LM; using 240 s"
    )
    shot(page, screenshots, "duration-typed-not-overwritten")
    decided.check()
    page.context.close()


def test_the_request_survives_a_sequence_of_changes(
    page: Any, server: Server, screenshots: Path, tmp_path: Path
) -> None:
    """500 s x 6 on 24 GB, then 16 typed as the memory (a 1 GB card on the way): the request stays 500 x 6
    and the decision is plan's for 16 GB (480 s x 4, the 1.7B); the LM changed after a clamp keeps it too."""
    person = Person(page, seed=16)
    decided = Decisions(page, server, tmp_path)
    person.type("vram", "24", then="tab")
    person.type("duration", "500", then="tab")
    person.type("batch", "6", then="tab")
    decided.after(["--vram", "24", "--duration", "500", "--batch", "6"])
    person.clear("vram")
    person.type("vram", "16", then="tab")
    argv = ["--vram", "16", "--duration", "500", "--batch", "6"]
    decision = decided.after(argv)
    assert (decision["adjusted"]["duration_s"], decision["adjusted"]["batch_size"]) == (480, 4)
    assert decision["adjusted"]["lm_model"] == "1.7B"
    for lm, words in (("none", ["--lm", "none"]), ("4B", ["--lm", "4B"]), ("auto", [])):
        person.choose("lm", lm)
        decided.after(argv + words)
        assert (typed_value(page, "duration"), typed_value(page, "batch"), typed_value(page, "vram")) == (
            "500",
            "6",
            "16",
        )
    for memory in ("8", "12"):
        person.type("vram", memory, then="enter", clear=True)
        argv[1] = memory
        decided.after(argv)
        assert (typed_value(page, "duration"), typed_value(page, "batch")) == ("500", "6")
    person.clear("vram")
    person.type("replay", "h100-80gb", then="tab")
    argv = ["--replay", "h100-80gb", "--duration", "500", "--batch", "6"]
    decided.after(argv)
    expect(page.locator("#tier h2")).to_contain_text("NVIDIA H100 80GB HBM3")
    shot(page, screenshots, "sequence-replayed-h100")

    # --------------------------------------------------------------------------------------------- bad input
    decided.check()


def test_values_the_server_cannot_take_are_stopped_beside_their_field(
    page: Any, server: Server, screenshots: Path, tmp_path: Path
) -> None:
    """Huge integers, deep nesting, non-finite numbers: a message beside the field, nothing decided, the
    session answering; the field cleared, the page decides again."""
    person = Person(page, seed=3)
    decided = Decisions(page, server, tmp_path)
    person.type("vram", "8", then="tab")
    wait_for_argv(page, ["--vram", "8"])
    cases = [
        ("max-duration", "99999999999999999999999", None, "is too large: give at most 9,007,199,254,740,991"),
        ("max-batch", "1" + "0" * 40, None, "is too large"),
        ("duration", "1e400", None, "'1e400' is not a finite number"),
        ("plan-lm-gpu-memory-ratio", "nan", "LM", "is not a finite number"),
        ("plan-quantization-exclude-lm", "[" * 2000 + "]" * 2000, "LM", "nested 2000 levels deep"),
        ("vram", "8GB", None, "'8GB' is not a memory size (not a number)"),
    ]
    for field_id, text, tab, says in cases:
        if tab:
            person.plan_tab(tab)
        if len(text) > 30:  # pasted, as a person would paste it
            person.clear(field_id)
            person.box(field_id).fill(text)
            person.box(field_id).press("Tab")
        else:
            person.type(field_id, text, then="tab", clear=True)
        note = page.locator(f"#{field_id}-note")
        expect(note).to_contain_text(says)
        expect(note).not_to_contain_text("argument --")
        expect(page.locator("#page-message")).to_contain_text("not decided")
        shot(page, screenshots, f"stopped-{field_id}")
        person.clear(field_id)
        if field_id == "vram":
            person.type("vram", "8", then="tab")
        else:
            person.box(field_id).press("Tab")
        wait_for_argv(page, ["--vram", "8"])
        expect(page.locator("#page-message")).to_have_text("")
        expect(note).not_to_contain_text(says)
    person.type("batch", "2", then="enter")
    decided.after(["--vram", "8", "--batch", "2"])
    decided.check()


def test_a_message_sits_beside_its_field_in_words(page: Any, screenshots: Path) -> None:
    """Errors used to appear at the top of the page, ~2,000 px from their field, with the CLI's prefix."""
    person = Person(page, seed=5)
    person.type("vram", "8", then="tab")
    person.type("max-duration", "5", then="tab")
    note, box = page.locator("#max-duration-note"), page.locator("#max-duration")
    expect(note).to_have_text("⚠ must be 10 or more, not 5")
    note_box, field_box = note.bounding_box(), box.bounding_box()
    assert 0 <= note_box["y"] - (field_box["y"] + field_box["height"]) < 60, (note_box, field_box)
    assert abs(note_box["x"] - field_box["x"]) < 40
    shot(page, screenshots, "message-beside-field")


# --------------------------------------------------------------------------------------------- controls
def test_force_marks_the_plan_forced(page: Any, server: Server, screenshots: Path, tmp_path: Path) -> None:
    """A refusal said "--force runs it anyway" and the page had no force."""
    person = Person(page, seed=7)
    decided = Decisions(page, server, tmp_path)
    person.type("vram", "8", then="tab")
    person.type("duration", "240", then="tab")
    person.plan_tab("VAE")
    person.choose("plan-vae-decode", "full")
    argv = ["--vram", "8", "--duration", "240", "--set", "vae.decode=full"]
    decided.after(argv)
    expect(page.locator("#status")).to_contain_text("refused")
    expect(page.locator("#plan #refused")).to_contain_text("Tick force to keep it anyway")
    shot(page, screenshots, "plan-refused")
    page.locator("#force input").check()
    decision = decided.after([*argv, "--force"])
    assert any(s["key"] == "memory.forced" for s in decision["plan"]["settings"])
    expect(page.locator("#status")).to_contain_text("forced")
    expect(page.locator("#plan #forced")).to_be_visible()
    expect(page.locator("#force-note")).to_contain_text("the plan is forced")
    shot(page, screenshots, "plan-forced")
    decided.check()


def test_the_lm_is_one_control_that_cannot_contradict_itself(
    page: Any, server: Server, screenshots: Path, tmp_path: Path
) -> None:
    person = Person(page, seed=11)
    decided = Decisions(page, server, tmp_path)
    person.type("vram", "8", then="tab")
    wait_for_argv(page, ["--vram", "8"])
    expect(page.locator("#lm-note")).to_contain_text("0.6B ✓ allowed on Tier 4 · auto picks it")
    person.choose("lm", "0.6B")  # the size auto shows: clicking it asks for it by name
    decided.after(["--vram", "8", "--lm", "0.6B"])
    person.choose("lm", "none")
    decided.after(["--vram", "8", "--lm", "none"])
    expect(page.locator("#lm input:checked")).to_have_count(1)
    expect(page.locator("#lm-note")).to_contain_text("runs no LM")
    person.choose("lm", "4B")
    decided.after(["--vram", "8", "--lm", "4B"])
    expect(page.locator("#lm-note")).to_contain_text("LM 4B is not allowed on Tier 4")
    expect(page.locator("#lm-note")).to_contain_text("4B ✗ Tier 4 allows only 0.6B")
    page.locator("#allow-lm-given input").check()
    person.choose("allow-lm", "4B")
    decided.after(["--vram", "8", "--lm", "4B", "--allow-lm", "4B"])
    expect(page.locator("#lm-note")).to_contain_text("4B ✓ allowed by your override")
    expect(page.locator("#lm-note")).not_to_contain_text("the tier's recommended")
    shot(page, screenshots, "lm-one-control")
    decided.check()


def test_plan_keys_are_choices_with_their_descriptions_grouped_by_component(page: Any, screenshots: Path) -> None:
    person = Person(page, seed=13)
    expect(page.locator("#plan-compile input[type=radio]")).to_have_count(3)
    expect(page.locator("#plan-compile")).to_contain_text(PLAN_KEYS["compile"].description)
    person.plan_tab("DiT")
    page.locator("#plan-offload-dit input[role=combobox]").click()
    for offload in OFFLOADS:
        expect(page.get_by_role("option", name=offload, exact=True)).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#plan-offload-dit")).to_contain_text(PLAN_KEYS["offload.dit"].description)
    expect(page.locator("#plan-offload-dit-note")).to_contain_text("plan:")
    tabs = {"pipeline": "whole pipeline", "lm": "LM", "text_encoder": "text encoder", "dit": "DiT", "vae": "VAE"}
    for panel, title in tabs.items():
        person.plan_tab(title)
        for key, spec in PLAN_KEYS.items():
            if spec.settable and not key.startswith(("memory.", "ladder.")) and component_of(key) == panel:
                control = page.locator(f"#plan-{key.replace('.', '-').replace('_', '-')}")
                expect(control).to_be_visible()
                expect(control).to_contain_text(spec.description)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 2600, f"the page is {height} px long at 1280 px wide"
    shot(page, screenshots, "plan-keys-dit")


# --------------------------------------------------------------------------------------------- tables
def test_an_uploaded_table_is_checked_escaped_and_compared_without_leaving_files(
    page: Any, server: Server, screenshots: Path, tmp_path: Path
) -> None:
    page.get_by_role("tab", name="Tables").click()
    broken = tmp_path / "broken.toml"
    broken.write_text(EIGHT_TIER.read_text().replace("max_batch_with_lm = 1", "max_batch_with_lm = 0", 1))
    validate = subprocess.run(
        [*CLI, "tiers", "validate", str(broken)], capture_output=True, text=True, timeout=120, env=server.env
    )
    assert validate.returncode == 1
    problems = [line.strip() for line in validate.stdout.splitlines() if line.strip().startswith("- ")]
    assert problems
    page.locator("#table-upload input[type=file]").set_input_files(str(broken))
    for problem in problems:
        expect(page.locator("#table-message")).to_contain_text(problem.removeprefix("- "))
    page.locator("#table-upload button[aria-label*='lear'], #table-upload button[title*='lear']").first.click()
    evil = tmp_path / "evil.toml"
    evil.write_text(EIGHT_TIER.read_text().replace('name = "8tier"', 'name = "<b id=\\"injected\\">x</b>"', 1))
    page.locator("#table-upload input[type=file]").set_input_files(str(evil))
    expect(page.locator("#table-message")).to_contain_text("valid — table '<b id=\"injected\">x</b>'")
    expect(page.locator("#injected")).to_have_count(0)
    for _ in range(2):
        page.locator("#compare").click()
        expect(page.locator("#table-message")).to_contain_text("'default' vs '<b id=\"injected\">x</b>'")
        expect(page.locator("#compare-plot img")).to_be_visible()
    expect(page.locator("#injected")).to_have_count(0)
    assert not [p for p in server.out.rglob("*") if p.suffix == ".png"], "a Compare click left a file"
    shot(page, screenshots, "table-compare-escaped")
    evil.write_text(evil.read_text().replace('label = "Tier 1"', 'label = "<i id=\\"label-injected\\">T1</i>"', 1))
    page.get_by_role("tab", name="Decide").click()
    Person(page).type("vram", "2", then="tab")
    tiers = page.locator("#tiers input[role=combobox]")
    tiers.click()
    tiers.press("Control+a")
    tiers.press_sequentially(str(evil), delay=20)
    tiers.press("Enter")
    wait_for_argv(page, ["--vram", "2", "--tiers", str(evil)])
    expect(page.locator("#tier h2")).to_contain_text('<i id="label-injected">T1</i> (≤4GB)')
    expect(page.locator("#tier")).to_contain_text('table <b id="injected">x</b>')
    expect(page.locator("#label-injected, #injected")).to_have_count(0)


# --------------------------------------------------------------------------------------------- generate
def test_a_run_shows_each_phase_in_turn_one_player_per_clip_for_its_session_only(
    browser: Any, server: Server, screenshots: Path
) -> None:
    """Six clips used to show four players and no word of the other two; progress rows were wrong; a clip
    was served to any session that knew its path; generated files stayed after the session."""
    page = open_session(browser, server)
    person = Person(page, seed=6)
    person.type("vram", "24", then="tab")
    person.choose("lm", "none")
    person.type("duration", "10", then="tab")
    person.type("batch", "6", then="enter")
    wait_for_argv(page, ["--vram", "24", "--lm", "none", "--duration", "10", "--batch", "6"])
    page.get_by_role("tab", name="Generate").click()
    person.type("steps", "2\b1", clear=True)
    person.type("seed", "7", clear=True)
    page.evaluate(
        """() => {
            window.acRows = [];
            const el = document.querySelector('#progress');
            new MutationObserver(() => {
                const rows = [...el.querySelectorAll('.ac-row')].map((r) => r.dataset.state);
                if (rows.length) window.acRows.push(rows.join(' '));
            }).observe(el, {subtree: true, childList: true, attributes: true});
        }"""
    )
    page.locator("#generate").click()
    expect(page.locator("#gen-status")).to_contain_text("done: 6 clip(s)", timeout=300_000)
    expect(page.locator("#gen-status")).to_contain_text("(tiny models, 1 step, seed 7)")
    order = ("skipped", "done", "running", "waiting")
    for rows in page.evaluate("window.acRows"):
        ranks = [order.index(state) for state in rows.split()]
        assert ranks == sorted(ranks), f"the rows do not follow the phases: {rows}"
        assert rows.split().count("running") <= 1, rows
    expect(page.locator("#progress [data-phase=lm]")).to_contain_text("skipped (no LM)")
    for phase, count in (("dit", "1 step"), ("vae", "6 clips")):
        expect(page.locator(f"#progress [data-phase={phase}]")).to_contain_text(f"done · {count}, ")
    expect(page.locator("#progress")).not_to_contain_text("1/1")
    expect(page.locator("#players audio")).to_have_count(6)
    expect(page.locator("#report")).to_contain_text("steps: 1")
    shot(page, screenshots, "generate-six-clips")

    sources = [audio.get_attribute("src") for audio in page.locator("#players audio").all()]
    own = page.context.request.get(server.url.rstrip("/") + sources[5])
    assert own.status == 200 and own.headers["content-type"] == "audio/wav" and own.body()[:4] == b"RIFF"
    other = browser.new_context()
    try:
        for source in sources:
            assert other.request.get(server.url.rstrip("/") + source).status == 404
    finally:
        other.close()
    assert len(list(server.out.rglob("*.wav"))) == 6
    page.context.close()
    deadline = time.monotonic() + 60
    while list(server.out.rglob("*.wav")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(server.out.rglob("*.wav")), "the session ended and its clips stayed"


def test_cancel_and_one_run_per_device(browser: Any, server: Server, screenshots: Path) -> None:
    first, second = open_session(browser, server), open_session(browser, server)
    for session in (first, second):
        session.get_by_role("tab", name="Generate").click()
    Person(first).type("steps", "1000", clear=True)
    first.locator("#generate").click()
    expect(first.locator("#progress [data-phase=dit] .ac-val")).to_contain_text("/1000 steps", timeout=240_000)
    Person(second).type("steps", "0", clear=True)
    second.locator("#generate").click()
    expect(second.locator("#progress")).to_contain_text("steps: '0' is out of range: give an integer >= 1")
    Person(second).type("steps", "8", clear=True)
    second.locator("#generate").click()
    expect(second.locator("#gen-status")).to_contain_text("queued: another run is using cpu")
    shot(second, screenshots, "generate-queued")
    second.locator("#cancel").click()
    expect(second.locator("#progress")).to_contain_text("cancelled while waiting for the device")
    first.locator("#cancel").click()
    expect(first.locator("#cancel-note")).to_contain_text("cancelling: the run stops at its next step")
    expect(first.locator("#gen-status")).to_contain_text("cancelled: the run stopped", timeout=120_000)
    expect(first.locator("#players audio")).to_have_count(0)
    shot(first, screenshots, "generate-cancelled")
    for session in (first, second):
        assert "Traceback" not in session.content()
        session.context.close()


# --------------------------------------------------------------------------------------------- the page
def test_warnings_pop_up_once_when_a_value_is_committed(page: Any, screenshots: Path) -> None:
    def toasts(text: str) -> Any:
        return page.locator("[data-testid=toast-text]").filter(has_text=text)

    person = Person(page, seed=9)
    person.type("vram", "8", then="enter")
    expect(toasts("simulation is on (--vram=8)")).to_have_count(1)
    close_toasts(page)
    person.type("duration", "500", then="tab")
    expect(toasts("duration 500 s exceeds")).to_have_count(1)
    expect(toasts("simulation is on")).to_have_count(0)
    shot(page, screenshots, "warning-pop-up")


def test_two_sessions_keep_their_own_cards(browser: Any, server: Server) -> None:
    a, b = open_session(browser, server), open_session(browser, server)
    Person(a).type("vram", "8", then="tab")
    Person(b).type("vram", "16", then="tab")
    expect(a.locator("#tier h2")).to_contain_text("Tier 4")
    expect(b.locator("#tier h2")).to_contain_text("Tier 6")
    Person(a).type("vram", "12", then="tab", clear=True)
    Person(b).choose("lm", "none")
    wait_for_argv(b, ["--vram", "16", "--lm", "none"])
    expect(b.locator("#duration-note")).to_contain_text("≤ 480 s on Tier 6 without the LM")
    expect(a.locator("#tier h2")).to_contain_text("Tier 5")
    for session in (a, b):
        session.context.close()


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (1024, 768)])
def test_the_page_at_a_desktop_and_a_laptop_size(browser: Any, server: Server, width: int, height: int) -> None:
    """Screenshots for the README (``docs/ui.png`` is the 1280 x 800 one): nothing wider than the window;
    the device, the decision and the first controls in the first screen."""
    page = open_session(browser, server, width, height)
    if "CPU" in page.locator("#tier h2").inner_text():  # the CPU plan's red line is drawn
        expect(page.locator("#plan [data-phase=budget] .ac-budget")).to_be_visible()
    person = Person(page, seed=8)
    person.type("vram", "8", then="tab")
    person.type("duration", "600", then="tab")
    person.type("batch", "3", then="tab")
    person.plan_tab("VAE")
    person.choose("plan-vae-decode", "tiled")
    wait_for_argv(page, ["--vram", "8", "--duration", "600", "--batch", "3", "--set", "vae.decode=tiled"])
    close_toasts(page)
    page.evaluate("window.scrollTo(0, 0)")
    page.mouse.move(0, 0)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    for element in ("#tier h2", "#duration", "#status"):
        box = page.locator(element).bounding_box()
        assert box is not None and box["y"] + box["height"] <= height, f"{element} is below the first screen"
    page.screenshot(path=str(SCREENSHOTS / f"page-{width}x{height}.png"))
    shot(page, SCREENSHOTS, f"page-{width}x{height}-full")
    page.context.close()
