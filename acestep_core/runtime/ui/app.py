"""The Gradio page: hardware, request, overrides, plan, tables and generate, on one resolution.

Every control change re-resolves through :func:`acestep_core.runtime.ui.page.resolve_inputs` (the
CLI's parser and resolution). State lives in the controls of each browser session, so two tabs never
share a decision; the only shared state is the per-device generation lock and each session's cancel
handle. Handlers never raise into Gradio: bad input becomes an inline message, anything else is logged
here and shown as one line.
"""

from __future__ import annotations

import html
import logging
import queue
import tempfile
import threading
import time
from abc import ABCMeta
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import gradio as gr

from acestep_core.cli import UsageError
from acestep_core.compare import compare_tables, plot_comparison, render_comparison
from acestep_core.plugins import SettingIgnored
from acestep_core.resolve import ResolutionError
from acestep_core.runtime.ui.page import (
    CSS,
    DURATION_MIN_S,
    LM_MODES,
    PHASE_NAMES,
    PLAN_OVERRIDE_KEYS,
    PageInputs,
    installed_tables,
    render,
    resolve_inputs,
    validation_lines,
)
from acestep_core.tables import TableError, load_table
from acestep_core.types import LM_SIZES, Resolution, TierTable

log = logging.getLogger("acestep_core.ui")

EXPECTED_ERRORS = (UsageError, ResolutionError, TableError, SettingIgnored, ValueError)
"""Bad input: shown inline in the CLI's words. Anything else is a bug: logged, one line on the page."""
INTERNAL_ERROR = "something went wrong on the server (the error is logged there); the page is unchanged"
AUDIO_PLAYERS = 4
RULE_TABLE = "(the rule's choice)"


def _inline(message: str) -> str:
    return f'<div class="ac-inline-error">⚠ {_escape(message)}</div>'


def _escape(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


class _NoStubMeta(type(gr.Slider)):  # type: ignore[misc]
    """Gradio's component metaclass writes a ``.pyi`` stub beside any module defining a component subclass;
    a subclass that adds no events or ``__init__`` needs nothing else from it."""

    def __new__(mcs, name: str, bases: tuple[type, ...], attrs: dict[str, Any]) -> type:
        return ABCMeta.__new__(mcs, name, bases, attrs)


class RequestSlider(gr.Slider, metaclass=_NoStubMeta):
    """A slider whose typed value may exceed its maximum: the value then reaches the CLI's rules and is
    clamped there, with the CLI's warning, instead of being refused by Gradio in Gradio's words."""

    is_template = True

    def preprocess(self, payload: float | None) -> float | None:  # type: ignore[override]
        return payload


class Generations:
    """One run at a time per device; each session's running run can be cancelled from that session."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._handles: dict[str, Any] = {}
        self._guard = threading.Lock()

    def lock_for(self, device: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(device, threading.Lock())

    def register(self, session: str, handle: Any) -> None:
        with self._guard:
            self._handles[session] = handle

    def forget(self, session: str, handle: Any) -> None:
        with self._guard:
            if self._handles.get(session) is handle:
                del self._handles[session]

    def cancel(self, session: str) -> bool:
        with self._guard:
            handle = self._handles.get(session)
        if handle is None:
            return False
        handle.cancel()
        return True


def build_app(out_dir: str | Path | None = None) -> gr.Blocks:
    """The page. ``out_dir``: where generated clips and comparison plots are written."""
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="acestep-ui-"))
    work.mkdir(parents=True, exist_ok=True)
    generations = Generations()
    tables = installed_tables()

    with gr.Blocks(title="acestep-core", analytics_enabled=False) as app:
        gr.Markdown("# acestep-core — how ACE-Step runs on this hardware")
        tier_md = gr.Markdown(elem_id="tier")
        error_html = gr.HTML(elem_id="page-error")
        with gr.Tab("Decide"):
            with gr.Row():
                with gr.Column(scale=1):
                    gr.Markdown("### Request")
                    duration = RequestSlider(
                        DURATION_MIN_S, 600, value=30, step=1, label="duration (s)", elem_id="duration"
                    )
                    duration_auto = gr.Checkbox(False, label="let the LM choose the duration", elem_id="duration-auto")
                    batch = gr.Number(1, label="batch", precision=0, elem_id="batch")
                    lm_mode = gr.Radio(
                        list(LM_MODES),
                        value="auto",
                        label="LM",
                        elem_id="lm-mode",
                        info="auto: the tier's default; choosing a size turns it on",
                    )
                    lm_size = gr.Radio(list(LM_SIZES), value=None, label="LM size", elem_id="lm-size")
                    lm_note = gr.Markdown(elem_id="lm-note")
                    limits_md = gr.Markdown(elem_id="limits")
                with gr.Column(scale=1):
                    gr.Markdown("### Overrides (each wins over the tier)")
                    vram = gr.Textbox(
                        label="simulated memory (GB, as --vram; empty: this machine's device)",
                        elem_id="vram",
                        placeholder="e.g. 8",
                    )
                    vram_msg = gr.HTML(elem_id="vram-message")
                    device = gr.Textbox(
                        label="device (as --device: index or UUID; empty: the first visible)", elem_id="device"
                    )
                    replay = gr.Textbox(
                        label="replay a recorded device (as --replay: a bundled name such as h100-80gb, or a file)",
                        elem_id="replay",
                        max_lines=1,
                    )
                    table = gr.Dropdown(
                        [RULE_TABLE, *tables], value=RULE_TABLE, label="tier table (as --tiers)", elem_id="table"
                    )
                    with gr.Accordion("tier limits", open=True):
                        max_duration = gr.Textbox(
                            label="max duration (s) (as --max-duration; empty: the tier's)",
                            elem_id="max-duration",
                            max_lines=1,
                        )
                        max_batch = gr.Textbox(
                            label="max batch (as --max-batch; empty: the tier's)", elem_id="max-batch", max_lines=1
                        )
                        allow_lm_on = gr.Checkbox(
                            False, label="override the allowed LM sizes (as --allow-lm)", elem_id="allow-lm-on"
                        )
                        allow_lm = gr.CheckboxGroup(list(LM_SIZES), label="allowed LM sizes", elem_id="allow-lm")
                    with gr.Accordion(
                        "plan keys (as --set KEY=VALUE; JSON, else a string; empty: the plan's own)", open=False
                    ):
                        plan_boxes = [
                            gr.Textbox(label=key, elem_id=f"plan-{key.replace('.', '-')}", max_lines=1)
                            for key in PLAN_OVERRIDE_KEYS
                        ]
                    overrides_md = gr.Markdown(elem_id="overrides")
            gr.Markdown("### Warnings")
            warnings_md = gr.Markdown(elem_id="warnings")
            gr.Markdown("### Plan: predicted peak per phase against the budget")
            plan_chart = gr.HTML(elem_id="plan")
            with gr.Accordion("plan settings", open=False):
                plan_table = gr.Markdown(elem_id="plan-table")
            with gr.Accordion("hardware and who decided", open=True):
                hardware_md = gr.Markdown(elem_id="hardware")
            decision = gr.Code(
                language="json",
                label="decision (acestep-core plan --json)",
                elem_id="decision",
                buttons=["copy", "download"],
                lines=8,
                max_lines=20,
                interactive=False,
            )
        with gr.Tab("Tables"):
            with gr.Row():
                table_a = gr.Dropdown(tables, value=tables[0] if tables else None, label="table A", elem_id="table-a")
                table_b = gr.Dropdown(tables, value=tables[-1] if tables else None, label="table B", elem_id="table-b")
                upload = gr.File(label="or upload a TOML table as B", file_types=[".toml"], elem_id="table-upload")
            compare_button = gr.Button("Compare", elem_id="compare")
            table_msg = gr.Markdown(elem_id="table-message")
            compare_plot = gr.Image(label="comparison", type="filepath", elem_id="compare-plot", interactive=False)
            compare_text = gr.Code(
                label="where they differ (acestep-core tiers compare)", elem_id="compare-text", interactive=False
            )
        with gr.Tab("Generate"):
            with gr.Row():
                size = gr.Radio(
                    ["tiny", "real"],
                    value="tiny",
                    label="models",
                    elem_id="size",
                    info="random weights either way: the audio is noise",
                )
                steps = gr.Slider(1, 200, value=8, step=1, label="denoising steps", elem_id="steps")
                seed = gr.Number(0, label="seed", precision=0, elem_id="seed")
            with gr.Row():
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
            progress_html = gr.HTML(elem_id="progress")
            players = [
                gr.Audio(label=f"clip {i + 1}", visible=False, elem_id=f"clip-{i + 1}", interactive=False)
                for i in range(AUDIO_PLAYERS)
            ]
            report = gr.Code(label="run report", elem_id="report", interactive=False)

        controls = {
            "vram": vram,
            "device": device,
            "replay": replay,
            "table": table,
            "duration": duration,
            "duration_auto": duration_auto,
            "batch": batch,
            "lm_mode": lm_mode,
            "lm_size": lm_size,
            "max_duration": max_duration,
            "max_batch": max_batch,
            "allow_lm_on": allow_lm_on,
            "allow_lm": allow_lm,
        }
        """The controls that shape the decision, by name: their values reach ``_inputs`` in this order,
        followed by the plan boxes'."""
        request_inputs = [*controls.values(), *plan_boxes]

        def page_inputs(values: Sequence[Any]) -> PageInputs:
            return _inputs(dict(zip(controls, values, strict=False)), values[len(controls) :])

        view_outputs = [
            tier_md,
            error_html,
            vram_msg,
            hardware_md,
            warnings_md,
            limits_md,
            duration,
            batch,
            lm_mode,
            lm_size,
            lm_note,
            overrides_md,
            plan_chart,
            plan_table,
            decision,
        ]

        toasted = gr.State(())
        """The warnings this session has seen pop up: a warning pops up once, when it first occurs."""

        def refresh(*values: Any) -> list[Any]:
            *request_values, seen = values
            found: dict[str, tuple[str, ...]] = {}

            def build() -> list[Any]:
                updates, found["warnings"] = _view_updates(page_inputs(request_values))
                return updates

            updates = _guarded(build, len(view_outputs), error_index=1)
            if "--vram" in str(updates[1]):  # a bad simulated size: said beside its field
                updates[1], updates[2] = "", updates[1]
            if "warnings" not in found:  # bad input, said inline: what was seen stays seen
                return [*updates, seen]
            for warning in found["warnings"]:
                if warning not in seen:
                    gr.Warning(html.escape(warning), title="acestep-core")
            return [*updates, found["warnings"]]

        def choose_size(*values: Any) -> list[Any]:
            chosen = list(values)
            chosen[request_inputs.index(lm_mode)] = "on"
            return refresh(*chosen)

        refresh_inputs = [*request_inputs, toasted]
        refresh_outputs = [*view_outputs, toasted]
        for control in (vram, device, replay, max_duration, max_batch, *plan_boxes):  # never set by a handler
            control.change(refresh, refresh_inputs, refresh_outputs, trigger_mode="always_last")
        for choice in (table, duration_auto, lm_mode, allow_lm_on, allow_lm):
            choice.input(refresh, refresh_inputs, refresh_outputs, trigger_mode="always_last")
        duration.input(refresh, refresh_inputs, refresh_outputs, trigger_mode="always_last")
        batch.input(refresh, refresh_inputs, refresh_outputs, trigger_mode="always_last")
        lm_size.input(choose_size, refresh_inputs, refresh_outputs, trigger_mode="always_last")
        app.load(refresh, refresh_inputs, refresh_outputs)

        upload.change(lambda f: _guarded(lambda: _validate_upload(f), 1, error_index=0), upload, table_msg)
        compare_button.click(
            lambda a, b, f: _guarded(lambda: _compare(a, b, f, work), 3, error_index=0),
            [table_a, table_b, upload],
            [table_msg, compare_plot, compare_text],
        )

        gen_outputs = [progress_html, report, *players]

        def generate(request: gr.Request, *values: Any) -> Iterator[list[Any]]:
            inputs = page_inputs(values[: len(request_inputs)])
            size_value, steps_value, seed_value = values[len(request_inputs) :]
            session = request.session_hash or "anonymous"
            try:
                yield from _generate(
                    inputs, size_value, int(steps_value), int(seed_value or 0), session, work, generations
                )
            except Exception:  # nothing may reach the page as a traceback
                log.exception("generation failed")
                yield [_inline(INTERNAL_ERROR), gr.update(), *[gr.update(visible=False)] * AUDIO_PLAYERS]

        def cancel(request: gr.Request) -> str:
            if generations.cancel(request.session_hash or "anonymous"):
                return _inline("cancelling: the run stops at its next step and releases its models")
            return _inline("nothing of this session is running")

        generate_button.click(generate, [*request_inputs, size, steps, seed], gen_outputs, concurrency_limit=None)
        cancel_button.click(cancel, None, progress_html, concurrency_limit=None, queue=False)
    return app


# --------------------------------------------------------------------------------------------- resolve
def _inputs(given: Mapping[str, Any], plan: Sequence[Any]) -> PageInputs:
    """The page's controls (``given`` by name, ``plan`` in the order of the plan keys) as one record."""
    batch = given["batch"]
    return PageInputs(
        vram=given["vram"] or "",
        device=given["device"] or "",
        replay=given["replay"] or "",
        table="" if not given["table"] or given["table"] == RULE_TABLE else given["table"],
        duration=given["duration"],
        duration_auto=bool(given["duration_auto"]),
        batch=int(batch) if batch is not None else 1,
        lm_mode=given["lm_mode"] or "auto",
        lm_size=given["lm_size"] or None,
        max_duration=(given["max_duration"] or "").strip(),
        max_batch=(given["max_batch"] or "").strip(),
        allow_lm=tuple(given["allow_lm"] or ()) if given["allow_lm_on"] else None,
        plan=dict(zip(PLAN_OVERRIDE_KEYS, plan, strict=True)),
    )


def _view_updates(inputs: PageInputs) -> tuple[list[Any], tuple[str, ...]]:
    """The page's outputs for ``inputs``, and the resolution's warnings (each pops up once)."""
    resolution = resolve_inputs(inputs)
    view = render(resolution, inputs)
    choices = [(choice.label, choice.size) for choice in view.lm_choices]
    top = view.duration_max
    bottom = min(DURATION_MIN_S, top - 1)
    with_lm = "with the LM" if resolution.adjusted.lm_on else "without the LM"
    duration_update = gr.update(
        minimum=bottom,
        maximum=top,
        interactive=not inputs.duration_auto,
        label=f"duration (s): ≤ {top} s on {resolution.tier.label} {with_lm}",
    )
    if view.duration_value is not None:
        duration_update["value"] = view.duration_value
    batch_update = gr.update(
        value=view.batch_value, label=f"batch: ≤ {view.batch_max} on {resolution.tier.label} {with_lm}"
    )
    updates = [
        view.tier,
        "",
        "",
        view.hardware,
        view.warnings,
        view.limits,
        duration_update,
        batch_update,
        gr.update(value=view.lm_mode),
        gr.update(choices=choices, value=view.lm_size),
        view.lm_note,
        view.overrides,
        view.plan_chart,
        view.plan_table,
        view.decision_json,
    ]
    return updates, tuple(resolution.warnings)


def _guarded(build: Callable[[], list[Any] | Any], count: int, *, error_index: int) -> Any:
    """``build()``; on bad input the CLI's message in the error slot and nothing else changed."""
    try:
        return build()
    except TableError as error:
        message = _inline("\n".join(validation_lines(error.source, error)))
    except EXPECTED_ERRORS as error:
        message = _inline(str(error))
    except Exception:  # nothing may reach the page as a traceback
        log.exception("handler failed")
        message = _inline(INTERNAL_ERROR)
    updates: list[Any] = [gr.update()] * count
    updates[error_index] = message
    return updates if count > 1 else updates[0]


# --------------------------------------------------------------------------------------------- tables
def _validate_upload(file: Any) -> str:
    if not file:
        return ""
    table = _load_upload(file)
    return f"`{Path(_path(file)).name}`: valid — table {table.name!r}, {len(table.tiers)} tiers"


def _path(file: Any) -> str:
    return file if isinstance(file, str) else getattr(file, "name", str(file))


def _load_upload(file: Any) -> TierTable:
    path = _path(file)
    try:
        return load_table(path)
    except TableError as error:
        raise TableError(Path(path).name, error.problems) from None


def _compare(a: str | None, b: str | None, file: Any, work: Path) -> list[Any]:
    from acestep_core.cli.tiers import table_named

    if not a:
        raise UsageError("choose table A")
    table_b = _load_upload(file) if file else None
    if table_b is None:
        if not b:
            raise UsageError("choose table B or upload one")
        table_b = table_named(b)
    comparison = compare_tables(table_named(a), table_b)
    plots = work / "plots"
    plots.mkdir(exist_ok=True)
    plot = plot_comparison(comparison, plots / f"compare-{time.monotonic_ns()}.png")
    verdict = "identical" if comparison.identical else f"{len(comparison.ranges)} range(s) differ"
    return [f"{comparison.a.name!r} vs {comparison.b.name!r}: {verdict}", str(plot), render_comparison(comparison)]


# --------------------------------------------------------------------------------------------- generate
def _progress(done: dict[str, tuple[int, int]], skipped: set[str], status: str) -> str:
    rows = []
    for name in PHASE_NAMES:
        if name in skipped:
            rows.append(
                f'<div class="ac-row"><span class="ac-name">{name}</span><span class="ac-skip">skipped</span></div>'
            )
            continue
        count, total = done.get(name, (0, 0))
        share = 0 if not total else 100 * count / total
        label = f"{count}/{total}" if total else "waiting"
        rows.append(
            f'<div class="ac-row" data-phase="{name}"><span class="ac-name">{name}</span><div class="ac-track">'
            f'<div class="ac-bar" style="width:{share:.0f}%"></div></div><span class="ac-val">{label}</span></div>'
        )
    return f'<div class="ac-chart ac-progress"><p id="gen-status">{_escape(status)}</p>{"".join(rows)}</div>'


def _generate(
    inputs: PageInputs, size: str, steps: int, seed: int, session: str, work: Path, generations: Generations
) -> Iterator[list[Any]]:
    from acestep_core.runtime.pipeline import CancelHandle, GenerationCancelledError, render_report, run
    from acestep_core.runtime.pipeline.session import device_for

    hidden = [gr.update(visible=False, value=None)] * AUDIO_PLAYERS
    try:
        resolution: Resolution = resolve_inputs(inputs)
    except EXPECTED_ERRORS as error:
        yield [_inline(str(error)), "", *hidden]
        return
    refused = resolution.plan.value("ladder.refused")
    if refused:
        yield [_inline(f"not run: {resolution.plan['ladder.refused'].reason}"), "", *hidden]
        return
    cancel = CancelHandle()
    generations.register(session, cancel)
    skipped = set() if resolution.adjusted.lm_on else {"lm"}
    done: dict[str, tuple[int, int]] = {}
    try:
        device = str(device_for(resolution))
        lock = generations.lock_for(device)
        while not lock.acquire(timeout=0.5):
            if cancel.cancelled:
                yield [_inline("cancelled while waiting for the device; nothing ran"), "", *hidden]
                return
            yield [_progress(done, skipped, f"queued: another run is using {device}"), "", *hidden]
        try:
            events: queue.Queue[tuple[str, int, int]] = queue.Queue()
            outcome: dict[str, Any] = {}
            out = work / "clips" / session[:12] / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}"

            def worker() -> None:
                try:
                    outcome["result"] = run(
                        resolution,
                        out_dir=out,
                        size=size,
                        steps=steps,
                        seed=seed,
                        cancel=cancel,
                        progress=False,
                        on_progress=lambda p, d, t: events.put((p, d, t)),
                    )
                except BaseException as error:  # noqa: BLE001 - handed to the page's thread
                    outcome["error"] = error

            thread = threading.Thread(target=worker, name=f"acestep-ui-generate-{session[:8]}", daemon=True)
            thread.start()
            yield [_progress(done, skipped, f"running on {device}"), "", *hidden]
            while thread.is_alive() or not events.empty():
                changed = False
                try:
                    phase, count, total = events.get(timeout=0.25)
                    done[phase] = (count, total)
                    changed = True
                    while True:
                        phase, count, total = events.get_nowait()
                        done[phase] = (count, total)
                except queue.Empty:
                    pass
                if changed:
                    current = next((p for p in reversed(PHASE_NAMES) if p in done), "")
                    yield [_progress(done, skipped, f"running on {device}: {current}"), "", *hidden]
            thread.join()
        finally:
            lock.release()
    finally:
        generations.forget(session, cancel)
    failure = outcome.get("error")
    if isinstance(failure, GenerationCancelledError):
        yield [
            _progress(done, skipped, "cancelled: the run stopped, its models were released, no files were written"),
            "",
            *hidden,
        ]
        return
    if isinstance(failure, EXPECTED_ERRORS):
        yield [_inline(str(failure)), "", *hidden]
        return
    if failure is not None:
        log.error("generation failed", exc_info=failure)
        yield [_inline(INTERNAL_ERROR), "", *hidden]
        return
    result = outcome["result"]
    for phase in result.phases:
        done[phase.name] = done.get(phase.name, (1, 1))
    clips = list(result.clips)
    players = [
        gr.update(visible=True, value=clip.path, label=f"clip {i + 1}: {clip.duration_s:g} s")
        for i, clip in enumerate(clips[:AUDIO_PLAYERS])
    ]
    players += [gr.update(visible=False, value=None)] * (AUDIO_PLAYERS - len(players))
    status = f"done: {len(clips)} clip(s) in {result.seconds:.1f} s"
    yield [_progress({p: (1, 1) for p in PHASE_NAMES}, skipped, status), render_report(result), *players]


# --------------------------------------------------------------------------------------------- serve
def launch(
    host: str = "127.0.0.1",
    port: int | None = None,
    auth: tuple[str, str] | None = None,
    out_dir: str | Path | None = None,
    *,
    block: bool = True,
) -> Any:
    """Serve the page. Blocks until Ctrl-C unless ``block`` is False (then returns the app)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    work = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="acestep-ui-"))
    app = build_app(work)
    app.queue(default_concurrency_limit=8)
    app.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        show_error=False,
        prevent_thread_lock=not block,
        ssr_mode=False,
        allowed_paths=[str(work.resolve())],
        css=CSS,
        footer_links=[],
        quiet=False,
        pwa=False,
        mcp_server=False,
    )
    return app
