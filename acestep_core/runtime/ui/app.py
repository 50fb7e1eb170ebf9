"""The Gradio page: the request, the device and the table, the limits, the plan keys, the decision, tables
and generate — one builder per panel, every control generated from the public description of
``acestep-core plan``'s options and the plan-key schema (:mod:`.fields`).

The controls belong to the user: no handler ever writes a value into one. A typed value is decided on after
a short pause in typing, on Enter or when the field is left (:data:`~.client.CLIENT_JS`); a choice at once.
Every decision goes through one event whose pending triggers collapse into the last, so the decision shown is
always for what the controls hold. Everything the decision made of a value is said beside its control. Each
browser tab has its own state; the only shared state is the per-device run lock and what each session
wrote. Handlers never raise into Gradio: bad input becomes a message beside its field, anything else is
logged here and shown as one line.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from acestep_core.cli import UsageError
from acestep_core.cli.flags import number
from acestep_core.compare import compare_tables, plot_comparison, render_comparison
from acestep_core.inputs import clip
from acestep_core.runtime.ui import render
from acestep_core.runtime.ui.client import CLIENT_JS, CSS
from acestep_core.runtime.ui.fields import NOT_GIVEN, PANELS, Field
from acestep_core.runtime.ui.page import FIELDS, Decision, decide, installed_tables, validation_lines
from acestep_core.runtime.ui.runs import BROWSER_COOKIE, BrowserCookie, RunRequest, Runs, clip_route, run_generation
from acestep_core.tables import TableError, load_table
from acestep_core.types import TierTable

log = logging.getLogger("acestep_core.ui")

INTERNAL_ERROR = "something went wrong on the server (the error is logged there); the page is unchanged"
RULE_TABLE = "(the rule's choice)"
PANEL_TITLES = {"pipeline": "whole pipeline", "lm": "LM", "text_encoder": "text encoder", "dit": "DiT", "vae": "VAE"}
STEPS = number(int, least=1, most=1000)
SEED = number(int, least=0, most=2**63 - 1)
"""The Generate tab's steps and seed, checked as ``acestep-core generate --steps / --seed`` checks them."""
MODEL_SIZES = ("tiny", "real")
"""The models a run builds (``acestep-core generate --size``), random weights either way."""


# --------------------------------------------------------------------------------------------- controls
@dataclass
class Control:
    """A field's component(s) on the page and the note beside it."""

    field: Field
    components: list[Any]
    note: Any

    def value(self, held: Sequence[Any]) -> Any:
        """What the control holds, from its components' values (a subset: None unless its box is ticked)."""
        if self.field.widget == "subset":
            given, chosen = held
            return list(chosen or ()) if given else None
        return held[0]


def _control(field: Field, tables: Sequence[str]) -> Control:
    """The component for ``field``, chosen by its widget; the note beside it starts empty."""
    common: dict[str, Any] = {"label": field.label, "elem_id": field.id, "info": field.help}
    components: list[Any]
    if field.widget == "text" and field.dest == "tiers":
        components = [
            gr.Dropdown(
                [(RULE_TABLE, NOT_GIVEN), *((t, t) for t in tables)],
                value=NOT_GIVEN,
                allow_custom_value=True,
                **common,
                elem_classes=["ac-choice"],
            )
        ]
    elif field.widget == "text":
        components = [
            gr.Textbox(
                value=field.default, placeholder=field.placeholder, max_lines=1, elem_classes=["ac-typed"], **common
            )
        ]
    elif field.widget == "switch":
        components = [gr.Checkbox(value=False, **common)]
    elif field.widget == "subset":
        components = [
            gr.Checkbox(value=False, label=f"give {field.flag}", elem_id=f"{field.id}-given", info=field.help),
            gr.CheckboxGroup(
                [label for label, _ in field.choices], value=[], label=field.label, elem_id=field.id, show_label=False
            ),
        ]
    elif field.widget == "on-off" or (len(field.choices) <= 5 and field.panel in ("request", "overrides")):
        components = [gr.Radio(list(field.choices), value=field.default, **common)]
    else:
        components = [gr.Dropdown(list(field.choices), value=field.default, **common)]
    note = gr.HTML(elem_id=f"{field.id}-note", elem_classes=["ac-note-box"])
    return Control(field, components, note)


def _controls_for(fields: Sequence[Field], tables: Sequence[str], columns: int = 1) -> list[Control]:
    controls: list[Control] = []
    for start in range(0, len(fields), columns):
        with gr.Row(equal_height=False) if columns > 1 else contextlib.nullcontext():
            for field in fields[start : start + columns]:
                with gr.Column(min_width=200):
                    controls.append(_control(field, tables))
    return controls


# --------------------------------------------------------------------------------------------- panels
@dataclass
class DecisionPanel:
    headline: Any
    command: Any
    message: Any
    status: Any
    chart: Any
    warnings: Any
    overrides: Any
    plan_table: Any
    hardware: Any
    decision_json: Any

    def outputs(self) -> list[Any]:
        return [
            self.headline,
            self.command,
            self.message,
            self.status,
            self.chart,
            self.warnings,
            self.overrides,
            self.plan_table,
            self.hardware,
            self.decision_json,
        ]


@dataclass
class DecideTab:
    controls: list[Control]
    panel: DecisionPanel
    typing: Any
    commit: Any
    state: Any

    def inputs(self) -> list[Any]:
        return [component for control in self.controls for component in control.components]

    def values(self, flat: Sequence[Any]) -> dict[str, Any]:
        """Field id → what its control holds, from the components' values in :meth:`inputs` order."""
        values, at = {}, 0
        for control in self.controls:
            count = len(control.components)
            values[control.field.id] = control.value(flat[at : at + count])
            at += count
        return values

    def choosers(self) -> list[Any]:
        """The components decided on as soon as they change (everything but typed text)."""
        return [c for control in self.controls for c in control.components if not isinstance(c, gr.Textbox)]


def _request_panel(fields: Sequence[Field], tables: Sequence[str]) -> list[Control]:
    gr.HTML("<h3>Request</h3>")
    return _controls_for([f for f in fields if f.panel == "request"], tables)


def _device_panel(fields: Sequence[Field], tables: Sequence[str]) -> list[Control]:
    gr.HTML("<h3>Device and table</h3>")
    return _controls_for([f for f in fields if f.panel == "hardware"], tables, columns=2)


def _limits_panel(fields: Sequence[Field], tables: Sequence[str]) -> list[Control]:
    """The overrides, and any option of a group the page does not know yet."""
    others = [f for f in fields if f.plan_key is None and f.panel not in ("request", "hardware")]
    with gr.Accordion("Tier limits and force (each wins over the tier)", open=True, elem_id="limits-panel"):
        return _controls_for(others, tables, columns=2)


def _plan_keys_panel(fields: Sequence[Field], tables: Sequence[str]) -> list[Control]:
    """The plan keys a user may set, one tab per component, each a choice or a box from the schema."""
    controls: list[Control] = []
    gr.HTML("<h3>Optimizations (plan keys, as <code>--set KEY=VALUE</code>; each left to the plan by default)</h3>")
    with gr.Tabs(elem_id="plan-keys"):
        for panel in PANELS:
            in_panel = [f for f in fields if f.plan_key is not None and f.panel == panel]
            if in_panel:
                with gr.Tab(PANEL_TITLES.get(panel, panel), elem_id=f"plan-keys-{panel}"):
                    controls += _controls_for(in_panel, tables, columns=3)
    return controls


def _decision_panel(headline: Any) -> DecisionPanel:
    command = gr.HTML(elem_id="command", elem_classes=["ac-note-box"])
    message = gr.HTML(elem_id="page-message", elem_classes=["ac-note-box"])
    status = gr.HTML(elem_id="status", elem_classes=["ac-note-box"])
    gr.HTML("<h3>Plan: predicted peak per phase against the budget</h3>")
    chart = gr.HTML(elem_id="plan")
    gr.HTML("<h3>Warnings</h3>")
    warnings = gr.HTML(elem_id="warnings")
    gr.HTML("<h3>Overrides</h3>")
    overrides = gr.HTML(elem_id="overrides")
    with gr.Accordion("plan settings", open=False):
        plan_table = gr.HTML(elem_id="plan-table")
    with gr.Accordion("hardware and who decided", open=False):
        hardware = gr.HTML(elem_id="hardware")
    with gr.Accordion("decision (acestep-core plan --json)", open=False):
        decision_json = gr.Code(
            language="json",
            label="decision",
            elem_id="decision",
            buttons=["copy", "download"],
            lines=8,
            max_lines=20,
            interactive=False,
        )
    return DecisionPanel(
        headline, command, message, status, chart, warnings, overrides, plan_table, hardware, decision_json
    )


def _decide_tab(headline: Any, tables: Sequence[str]) -> DecideTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=4, min_width=340):
            controls = _request_panel(FIELDS, tables)
            controls += _device_panel(FIELDS, tables)
        with gr.Column(scale=6, min_width=400):
            panel = _decision_panel(headline)
    controls += _limits_panel(FIELDS, tables)
    controls += _plan_keys_panel(FIELDS, tables)
    typing = gr.Button("decide (typing paused)", elem_id="resolve-typing", visible="hidden")
    commit = gr.Button("decide", elem_id="resolve-commit", visible="hidden")
    state = gr.State(PageState())
    return DecideTab(controls, panel, typing, commit, state)


@dataclass
class TablesTab:
    table_a: Any
    table_b: Any
    upload: Any
    compare: Any
    message: Any
    plot: Any
    text: Any


def _tables_tab(tables: Sequence[str]) -> TablesTab:
    with gr.Row():
        table_a = gr.Dropdown(tables, value=tables[0] if tables else None, label="table A", elem_id="table-a")
        table_b = gr.Dropdown(tables, value=tables[-1] if tables else None, label="table B", elem_id="table-b")
        upload = gr.File(label="or upload a TOML table as B", file_types=[".toml"], elem_id="table-upload")
    compare = gr.Button("Compare", elem_id="compare")
    message = gr.HTML(elem_id="table-message")
    plot = gr.HTML(elem_id="compare-plot")
    text = gr.Code(label="where they differ (acestep-core tiers compare)", elem_id="compare-text", interactive=False)
    return TablesTab(table_a, table_b, upload, compare, message, plot, text)


@dataclass
class GenerateTab:
    size: Any
    steps: Any
    seed: Any
    start: Any
    cancel: Any
    cancel_note: Any
    progress: Any
    players: Any
    report: Any


def _generate_tab() -> GenerateTab:
    gr.HTML(
        "<p>Runs the request decided on the Decide tab through the reference pipeline. "
        "Random weights either way: the audio is noise.</p>"
    )
    with gr.Row():
        size = gr.Radio(list(MODEL_SIZES), value="tiny", label="models", elem_id="size")
        steps = gr.Textbox("8", label="denoising steps (1-1000)", elem_id="steps", max_lines=1)
        seed = gr.Textbox("0", label="seed (0 or more)", elem_id="seed", max_lines=1)
    with gr.Row():
        start = gr.Button("Generate", variant="primary", elem_id="generate")
        cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
    cancel_note = gr.HTML(elem_id="cancel-note")
    progress = gr.HTML(elem_id="progress")
    players = gr.HTML(elem_id="players")
    report = gr.Code(label="run report", elem_id="report", interactive=False)
    return GenerateTab(size, steps, seed, start, cancel, cancel_note, progress, players, report)


# --------------------------------------------------------------------------------------------- deciding
@dataclass
class PageState:
    """One browser tab's memory: its last decision, whether the page shows problems instead, the notes
    beside the fields, the warnings it has popped up, and how many times it resolved."""

    resolves: int = 0
    decided: Decision | None = None
    """The last decision that has a resolution (the one the decision panels show)."""
    stale: bool = False
    """True while the page shows problems: the panels still show :attr:`decided`."""
    seen: tuple[str, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def warnings(self) -> tuple[str, ...]:
        resolution = self.decided.resolution if self.decided is not None else None
        return resolution.warnings if resolution is not None else ()


def _decide_outputs(tab: DecideTab) -> list[Any]:
    return [*tab.panel.outputs(), *(control.note for control in tab.controls), tab.state]


def _decided(tab: DecideTab, decision: Decision, state: PageState) -> list[Any]:
    """The page's outputs for ``decision`` (never a control's value), and the tab's state after it."""
    controls = tab.controls
    if decision.resolution is None:
        notes = {**state.notes, **{fid: render.problem_note(p) for fid, p in decision.problems.items()}}
        message = render.stale_line(len(decision.problems)) if decision.problems else ""
        if decision.message:
            message += render.page_problem(decision.message)
        state.notes = {fid: note for fid, note in notes.items() if fid not in decision.problems}
        state.stale = True
        skip = [gr.skip()] * len(tab.panel.outputs())
        skip[2] = message
        return [*skip, *(notes.get(c.field.id, "") for c in controls), state]
    resolution = decision.resolution
    notes = render.field_notes([c.field for c in controls], resolution, decision.given)
    state.notes, state.decided, state.stale = notes, decision, False
    panel = [
        render.headline(resolution),
        render.command_line(decision.argv, state.resolves),
        "",
        render.status_line(resolution),
        render.plan_chart(resolution),
        render.warnings_list(resolution),
        render.overrides_table(resolution),
        render.plan_table(resolution),
        render.hardware_table(resolution),
        resolution.to_json(),
    ]
    return [*panel, *(notes[c.field.id] for c in controls), state]


def _pop_up_new_warnings(state: PageState) -> None:
    for warning in state.warnings:
        if warning not in state.seen:
            gr.Warning(render.esc(warning), title="acestep-core")
    state.seen = tuple(dict.fromkeys((*state.seen, *state.warnings)))


def _wire_decide(app: gr.Blocks, tab: DecideTab) -> None:
    inputs = [*tab.inputs(), tab.state]
    outputs = _decide_outputs(tab)

    def step(values: Sequence[Any], *, typing: bool) -> list[Any]:
        *held, state = values
        state = state if isinstance(state, PageState) else PageState()
        return _guarded(lambda: _decide_step(tab, tab.values(held), state, typing=typing), len(outputs), 2)

    def on_change(evt: gr.EventData, *values: Any) -> list[Any]:
        return step(values, typing=evt.target is tab.typing)

    def on_load(*values: Any) -> list[Any]:
        return step(values, typing=False)

    gr.on(
        [tab.typing.click, tab.commit.click, *(c.input for c in tab.choosers())],
        on_change,
        inputs,
        outputs,
        trigger_mode="always_last",
        show_progress="hidden",
        api_visibility="private",
    )
    app.load(on_load, inputs, outputs, show_progress="hidden")


def _decide_step(tab: DecideTab, values: dict[str, Any], state: PageState, *, typing: bool) -> list[Any]:
    """Decide on what the controls hold; a value already decided is not resolved again. Warnings pop up
    once each, when a value is committed (Enter, leaving the field, a choice), not while typing."""
    from acestep_core.runtime.ui.fields import argv_of, problems_of

    argv = tuple(argv_of(FIELDS, values))
    if state.decided is not None and argv == state.decided.argv and not problems_of(FIELDS, values):
        if not typing:
            _pop_up_new_warnings(state)
        if state.stale:  # back to what was last decided: shown again, not resolved again
            return _decided(tab, state.decided, state)
        return [*([gr.skip()] * (len(_decide_outputs(tab)) - 1)), state]
    decision = decide(values)
    if decision.resolution is not None:
        state.resolves += 1
    updates = _decided(tab, decision, state)
    if decision.resolution is not None and not typing:
        _pop_up_new_warnings(state)
    return updates


def _guarded(build: Callable[[], list[Any]], count: int, error_index: int) -> list[Any]:
    """``build()``; anything unexpected is logged and said in one line, nothing else changed."""
    try:
        return build()
    except Exception:  # nothing may reach the page as a traceback
        log.exception("handler failed")
        updates: list[Any] = [gr.skip()] * count
        updates[error_index] = render.page_problem(INTERNAL_ERROR)
        return updates


# --------------------------------------------------------------------------------------------- tables
def _wire_tables(tab: TablesTab, runs: Runs) -> None:
    def on_upload(file: Any, request: gr.Request) -> str:
        if file:
            runs.keep(_session(request), Path(_path(file)))
        return _table_step(lambda: _validate_upload(file))

    def on_compare(a: str | None, b: str | None, file: Any) -> list[Any]:
        try:
            return _compare(a, b, file)
        except TableError as error:
            message = render.page_problem("\n".join(validation_lines(error.source, error)))
        except (UsageError, ValueError) as error:
            message = render.page_problem(str(error))
        except Exception:  # nothing may reach the page as a traceback
            log.exception("compare failed")
            message = render.page_problem(INTERNAL_ERROR)
        return [message, gr.skip(), gr.skip()]

    tab.upload.change(on_upload, tab.upload, tab.message)
    tab.compare.click(on_compare, [tab.table_a, tab.table_b, tab.upload], [tab.message, tab.plot, tab.text])


def _table_step(build: Callable[[], str]) -> str:
    try:
        return build()
    except TableError as error:
        return render.page_problem("\n".join(validation_lines(error.source, error)))
    except Exception:  # nothing may reach the page as a traceback
        log.exception("table check failed")
        return render.page_problem(INTERNAL_ERROR)


def _validate_upload(file: Any) -> str:
    if not file:
        return ""
    table = _load_upload(file)
    name = Path(_path(file)).name
    title = render.esc(repr(table.name))
    return f"<p><code>{render.esc(name)}</code>: valid — table <b>{title}</b>, {len(table.tiers)} tiers</p>"


def _path(file: Any) -> str:
    return file if isinstance(file, str) else getattr(file, "name", str(file))


def _load_upload(file: Any) -> TierTable:
    path = _path(file)
    try:
        return load_table(path)
    except TableError as error:
        raise TableError(Path(path).name, error.problems) from None


def _compare(a: str | None, b: str | None, file: Any) -> list[Any]:
    """The comparison as text and as an image embedded in the page: no file is left behind."""
    from acestep_core.cli.tiers import table_named

    if not a:
        raise UsageError("choose table A")
    table_b = _load_upload(file) if file else None
    if table_b is None:
        if not b:
            raise UsageError("choose table B or upload one")
        table_b = table_named(b)
    comparison = compare_tables(table_named(a), table_b)
    with tempfile.TemporaryDirectory(prefix="acestep-compare-") as folder:
        png = plot_comparison(comparison, Path(folder) / "compare.png").read_bytes()
    image = (
        f'<img alt="durations and batches of both tables against memory" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
    )
    verdict = "identical" if comparison.identical else f"{len(comparison.ranges)} range(s) differ"
    title = f"{comparison.a.name!r} vs {comparison.b.name!r}: {verdict}"
    return [f"<p>{render.esc(title)}</p>", image, render_comparison(comparison)]


# --------------------------------------------------------------------------------------------- generate
def _session(request: gr.Request | None) -> str:
    return (request.session_hash if request is not None else None) or "anonymous"


def _wire_generate(decide_tab: DecideTab, tab: GenerateTab, runs: Runs) -> None:
    outputs = [tab.progress, tab.players, tab.report]
    count = len(decide_tab.inputs())

    def generate(request: gr.Request, *values: Any) -> Iterator[list[Any]]:
        held, (size, steps, seed) = values[:count], values[count:]
        try:
            yield from _generate(decide_tab.values(held), size, steps, seed, request, runs)
        except Exception:  # nothing may reach the page as a traceback
            log.exception("generation failed")
            yield [render.page_problem(INTERNAL_ERROR), "", gr.skip()]

    def cancel(request: gr.Request) -> str:
        if runs.cancel(_session(request)):
            return render.page_problem("cancelling: the run stops at its next step and releases its models")
        return render.page_problem("nothing of this session is running")

    # The cancel note is its own element: written into the progress, it could land after the run's own
    # last word ("cancelled while waiting", "cancelled: the run stopped") and hide it.
    tab.start.click(generate, [*decide_tab.inputs(), tab.size, tab.steps, tab.seed], outputs, concurrency_limit=None)
    tab.start.click(lambda: "", None, tab.cancel_note, queue=False)
    tab.cancel.click(cancel, None, tab.cancel_note, concurrency_limit=None, queue=False)


def _generate(
    values: dict[str, Any], size: str, steps: str, seed: str, request: gr.Request, runs: Runs
) -> Iterator[list[Any]]:
    problems = [] if size in MODEL_SIZES else [f"models: {clip(str(size))!r} is not one of {', '.join(MODEL_SIZES)}"]
    numbers = {}
    for name, text, check in (("steps", steps, STEPS), ("seed", seed, SEED)):
        try:
            numbers[name] = int(check(str(text).strip()))
        except Exception as error:  # noqa: BLE001 - argparse's type raises ArgumentTypeError in words
            problems.append(f"{name}: {error}")
    decision = decide(values)
    if decision.resolution is None:
        problems.append("the request cannot be decided: fix the marked field(s) on the Decide tab")
    if problems:
        yield [render.page_problem("; ".join(problems)), "", ""]
        return
    resolution = decision.resolution
    assert resolution is not None
    if resolution.plan.value("ladder.refused"):
        yield [render.page_problem(f"not run: {resolution.plan['ladder.refused'].reason}"), "", ""]
        return
    run = RunRequest(
        resolution, size, numbers["steps"], numbers["seed"], _session(request), request.cookies.get(BROWSER_COOKIE)
    )
    for progress, players, report in run_generation(run, runs):
        yield [progress, players, report]


# --------------------------------------------------------------------------------------------- the page
def build_app(out_dir: str | Path | None = None, runs: Runs | None = None) -> gr.Blocks:
    """The page. ``out_dir``: where generated clips are written (each session's removed when it ends)."""
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="acestep-ui-"))
    work.mkdir(parents=True, exist_ok=True)
    runs = runs or Runs(work)
    tables = installed_tables()

    with gr.Blocks(title="acestep-core", analytics_enabled=False) as app:
        gr.HTML('<p class="ac-title">acestep-core — how ACE-Step runs on this hardware</p>')
        headline = gr.HTML(elem_id="tier")
        with gr.Tab("Decide"):
            decide_tab = _decide_tab(headline, tables)
        with gr.Tab("Tables"):
            tables_tab = _tables_tab(tables)
        with gr.Tab("Generate"):
            generate_tab = _generate_tab()
        _wire_decide(app, decide_tab)
        _wire_tables(tables_tab, runs)
        _wire_generate(decide_tab, generate_tab, runs)

        def end_session(request: gr.Request) -> None:
            runs.end_session(_session(request))

        app.unload(end_session)
    return app


def launch(
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: tuple[str, str] | None = None,
    out_dir: str | Path | None = None,
    *,
    block: bool = True,
) -> Any:
    """Serve the page. Blocks until Ctrl-C unless ``block`` is False (then returns the app).

    :raises UsageError: when the port is taken (in words, without Gradio's advice to its own callers).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    temporary = out_dir is None
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="acestep-ui-"))
    runs = Runs(work)
    app = build_app(work, runs)
    app.queue(default_concurrency_limit=8)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            auth=auth,
            show_error=False,
            prevent_thread_lock=True,
            ssr_mode=False,
            css=CSS,
            js=CLIENT_JS,
            footer_links=[],
            quiet=True,
            pwa=False,
            mcp_server=False,
            app_kwargs={"routes": [clip_route(runs)], "middleware": [Middleware(BrowserCookie)]},
        )
    except OSError as error:
        wanted = f"port {port}" if port else "a free port from 7860"
        raise UsageError(f"cannot serve on {host}, {wanted}: {_os_words(error)}; choose another with --port") from None
    print(f"acestep-core ui: serving on {app.local_url} ({_who(host)}); Ctrl-C stops", flush=True)
    if not block:
        return app
    try:
        app.block_thread()
    finally:
        runs.close()
        if temporary:
            with contextlib.suppress(OSError):
                _remove_tree(work)
    return app


def _who(host: str) -> str:
    from acestep_core.runtime.ui.command import is_loopback

    return "this machine only" if is_loopback(host) else "reachable from other machines"


def _os_words(error: OSError) -> str:
    text = str(error)
    return "it is in use" if "empty port" in text or "in use" in text else (error.strerror or text.split(". ")[0])


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
