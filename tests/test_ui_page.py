"""The ui page's logic without a browser: fields from the option table and the plan-key schema, what a
control's value becomes on the command line, the checks before anything is decided, where a message is
shown, the escaped rendering, progress, players and what a session leaves behind.

What the page decides is compared with ``acestep-core plan --json`` in a real browser, in
``tests/test_ui_browser.py``; here the page's own pieces are checked one by one.
"""

from __future__ import annotations

import dataclasses
import html
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import folders_of_this_run

from acestep_core.cli import UsageError
from acestep_core.cli.options import PLAN_OPTIONS, Option
from acestep_core.runtime.ui import render
from acestep_core.runtime.ui.command import is_loopback, parse_auth
from acestep_core.runtime.ui.fields import (
    MAX_SAFE_INTEGER,
    NOT_GIVEN,
    Field,
    argv_of,
    bounded_json,
    json_depth,
    option_fields,
    plan_key_fields,
)
from acestep_core.runtime.ui.page import FIELDS, decide, strip_flag
from acestep_core.runtime.ui.runs import Progress, Runs, players_html
from acestep_core.vocabulary import COMPONENTS, OFFLOADS, PLAN_KEYS, PlanKey

BY_ID = {f.id: f for f in FIELDS}
ROOT = Path(__file__).parents[1]
CLI = [sys.executable, "-c", "import sys; from acestep_core.cli import main; sys.exit(main())"]


def decided(**values: object) -> render.Resolution:
    decision = decide({k.replace("_", "-"): v for k, v in values.items()})
    assert decision.resolution is not None, (decision.problems, decision.message)
    return decision.resolution


# --------------------------------------------------------------------------------------------- fields
def test_every_option_that_decides_and_every_settable_plan_key_is_a_field() -> None:
    options = {f.option.flag for f in FIELDS if f.option is not None}
    assert options == {o.flag for o in PLAN_OPTIONS if o.decides and not o.sets_plan_keys and o.kind != "settings"}, (
        "a shorthand (--offload) is offered key by key; --json and --redetect do not change the decision"
    )
    keys = {f.plan_key for f in FIELDS if f.plan_key is not None}
    assert keys == {k for k, spec in PLAN_KEYS.items() if spec.settable and not k.startswith(("memory.", "ladder."))}


def test_plan_keys_are_choices_and_boxes_of_their_schema_grouped_by_component() -> None:
    offload = BY_ID["plan-offload-dit"]
    assert (
        offload.widget == "choice" and offload.panel == "dit" and offload.help == PLAN_KEYS["offload.dit"].description
    )
    assert [value for _, value in offload.choices] == [NOT_GIVEN, *OFFLOADS]
    assert BY_ID["plan-compile"].widget == "on-off" and BY_ID["plan-compile"].panel == "pipeline"
    assert BY_ID["plan-vae-tile-frames"].widget == "text" and BY_ID["plan-vae-tile-frames"].panel == "vae"
    assert BY_ID["plan-lm-backend"].panel == "lm" and BY_ID["plan-quantization-exclude-lm"].panel == "lm"
    assert {f.panel for f in FIELDS if f.plan_key} <= {"pipeline", *COMPONENTS}
    # #23's keys: the backend and each component's scheme are offered; the measured quality is computed, not offered
    assert BY_ID["plan-quantization-backend"].panel == "pipeline"
    scheme = BY_ID["plan-quantization-scheme-dit"]
    assert (scheme.widget, scheme.panel) == ("choice", "dit") and "int8_weight_only" in [v for _, v in scheme.choices]
    assert not any(f.plan_key and f.plan_key.startswith("quantization.quality.") for f in FIELDS)


def test_a_new_plan_key_or_option_becomes_a_field_without_a_change_to_the_page() -> None:
    """What other issues add (``quantization.backend``, ``quantization.scheme.*``, ``--dit``, ``--checkpoints``)."""
    keys = {
        "quantization.backend": PlanKey("the quantization library", "choice", ("quanto", "torchao")),
        "quantization.scheme.dit": PlanKey("the DiT's scheme", "choice", ("w8a8", "w4a16")),
        "quantization.group_size": PlanKey("group size", "int", minimum=16),
    }
    backend, scheme, group = plan_key_fields(keys)
    assert (backend.widget, backend.panel, backend.label) == ("choice", "pipeline", "quantization.backend")
    assert (scheme.panel, group.widget) == ("dit", "text")
    assert argv_of([scheme], {scheme.id: "w8a8"}) == ["--set", "quantization.scheme.dit=w8a8"]
    assert group.problem("8") == "8 is not an integer >= 16"
    options = (
        Option("--dit", "dit", "request", "choice", "the DiT variant", choices=("turbo", "base")),
        Option("--checkpoints", "checkpoints", "hardware", "text", "local checkpoint folder", metavar="DIR"),
    )
    dit, checkpoints = option_fields(options)
    assert (dit.widget, dit.panel, checkpoints.widget, checkpoints.panel) == ("choice", "request", "text", "hardware")
    assert argv_of([dit, checkpoints], {"dit": "base", "checkpoints": "/x y"}) == [
        "--dit",
        "base",
        "--checkpoints",
        "/x y",
    ]


# --------------------------------------------------------------------------------------------- argv
def test_the_arguments_are_exactly_what_the_controls_hold() -> None:
    values = {
        "duration": "240",
        "batch": "3",
        "lm": "4B",
        "vram": "8",
        "max-duration": "600",
        "allow-lm": ["4B", "0.6B"],
        "force": True,
        "plan-offload-dit": "model",
        "plan-compile": "off",
        "plan-vae-tile-frames": "128",
    }
    assert argv_of(FIELDS, values) == [
        "--duration", "240", "--batch", "3", "--lm", "4B", "--vram", "8", "--max-duration", "600",
        "--allow-lm", "0.6B,4B", "--force", "--set", "compile=false", "--set", "offload.dit=model",
        "--set", "vae.tile_frames=128",
    ]  # fmt: skip
    assert argv_of(FIELDS, {}) == [], "untouched controls: `acestep-core plan` with no arguments"
    assert argv_of(FIELDS, {"duration": "  ", "lm": "auto", "allow-lm": None, "plan-offload-dit": NOT_GIVEN}) == []
    assert argv_of(FIELDS, {"allow-lm": []}) == ["--allow-lm", ""], "a ticked empty set allows no LM"
    assert argv_of(FIELDS, {"vram": "-1"}) == ["--vram=-1"]


def test_a_typed_value_is_sent_as_typed_not_clamped() -> None:
    resolution = decided(vram="8", duration="2", lm="0.6B")
    assert resolution.request.duration_s == 2 and resolution.adjusted.duration_s == 10
    resolution = decided(vram="8", duration="500", batch="6", lm="0.6B")
    assert (resolution.request.duration_s, resolution.request.batch_size) == (500, 6)
    assert (resolution.adjusted.duration_s, resolution.adjusted.batch_size) == (240, 2)


# --------------------------------------------------------------------------------------------- checks
@pytest.mark.parametrize(
    ("field_id", "typed", "says"),
    [
        ("max-duration", "99999999999999999999999", f"too large: give at most {MAX_SAFE_INTEGER:,}"),
        ("max-batch", str(2**64), "too large"),
        ("batch", "1" + "0" * 30, "too large"),
        ("duration", "1e400", "'1e400' is not a finite number"),
        ("duration", "nan", "'nan' is not a finite number"),
        ("vram", "8GB", "'8GB' is not a memory size (not a number)"),
        ("batch", "0", "'0' is out of range: give an integer >= 1"),
        ("plan-quantization-exclude-lm", "[" * 4000, "nested 4000 levels deep"),
        ("plan-quantization-exclude-lm", "[" * 100_000, "100,000 characters: give at most 4,096"),
        ("plan-quantization-exclude-lm", '{"a": ' * 50 + "1" + "}" * 50, "nested 50 levels deep"),
        ("plan-quantization-exclude-lm", "lm_head", "'lm_head' is not a list of strings"),
        ("plan-lm-gpu-memory-ratio", "NaN", "NaN is not a finite number"),
        ("plan-lm-gpu-memory-ratio", "1e999", "too large to be finite"),
        ("plan-lm-gpu-memory-ratio", "1.5", "1.5 is not a finite number >= 0.01 and <= 1"),
        ("plan-vae-tile-frames", "9" * 40, "too large"),
        ("device", "x" * 5000, "5,000 characters: give at most 4,096"),
    ],
)
def test_a_value_the_decision_cannot_take_is_stopped_beside_its_field(field_id: str, typed: str, says: str) -> None:
    decision = decide({field_id: typed})
    assert decision.resolution is None and set(decision.problems) == {field_id}
    assert says in decision.problems[field_id]
    assert "argument --" not in decision.problems[field_id]


def test_json_depth_is_read_without_recursion_and_strings_do_not_count() -> None:
    assert json_depth("[" * 1_000_000) == 1_000_000
    assert json_depth('["[[[[", {"a": [1]}]') == 3
    assert bounded_json('["lm_head"]') == ["lm_head"] and bounded_json("model") == "model"
    with pytest.raises(ValueError, match="Infinity is not a finite number"):
        bounded_json("[Infinity]")


@pytest.mark.parametrize(
    ("values", "field_id", "says"),
    [
        ({"max-duration": "5"}, "max-duration", "must be 10 or more, not 5"),
        ({"replay": "nope"}, "replay", "no such file, nor a bundled recording"),
        ({"tiers": "nope"}, "tiers", "no tier table named 'nope'"),
        ({"vram": "8", "device": "7"}, "device", None),
    ],
)
def test_an_error_the_cli_finds_is_placed_beside_the_field_it_names(
    values: dict[str, str], field_id: str, says: str | None
) -> None:
    decision = decide(values)
    if says is None:  # --device under a simulation is a warning, not an error
        assert decision.resolution is not None
        return
    assert decision.resolution is None and set(decision.problems) == {field_id}, decision
    assert decision.problems[field_id].startswith(says) or says in decision.problems[field_id]
    assert not decision.problems[field_id].startswith(("argument", "--"))


def test_a_rule_between_two_fields_is_said_beside_both_in_the_pages_words() -> None:
    decision = decide({"vram": "8", "replay": "h100-80gb"})
    assert set(decision.problems) == {"vram", "replay"}
    assert decision.problems["vram"] == "“vram” 8 and “replay” h100-80gb both choose the device: give one"


def test_strip_flag_removes_each_form_of_the_clis_prefix() -> None:
    assert strip_flag("argument --vram: 'x' is not a memory size", "--vram") == "'x' is not a memory size"
    assert strip_flag("--replay nope: no such file", "--replay") == "no such file"
    assert strip_flag("--max-duration must be 10 or more, not 5", "--max-duration") == "must be 10 or more, not 5"
    assert strip_flag("--allow-lm: unknown LM size(s)", "--allow-lm") == "unknown LM size(s)"


# --------------------------------------------------------------------------------------------- notes
def test_a_clamped_value_is_said_beside_its_control() -> None:
    resolution = decided(vram="8", duration="500", batch="6", lm="0.6B")
    notes = render.field_notes(FIELDS, resolution, frozenset({"vram"}))
    assert "runs <b>240 s</b>" in notes["duration"] and "duration 500 s exceeds the 240 s limit" in notes["duration"]
    assert "runs <b>2</b>" in notes["batch"] and "batch size 6 exceeds the limit of 2" in notes["batch"]
    assert "simulated 8 GB cuda device" in notes["vram"] and notes["replay"] == ""


def test_an_allowed_lm_override_is_worded_as_the_users_not_the_tiers() -> None:
    resolution = decided(vram="8", allow_lm=["4B"])
    note = render.field_notes(FIELDS, resolution)["lm"]
    assert "4B ✓</span> allowed by your override" in note and "the tier's recommended" not in note
    assert "your override allows only 4B" in note
    plain = render.field_notes(FIELDS, decided(vram="8"))["lm"]
    assert "0.6B ✓</span> allowed on Tier 4 · auto picks it" in plain and "Tier 4 allows only 0.6B" in plain


def test_force_marks_the_plan_forced() -> None:
    refused = decided(vram="8", duration="240", plan_vae_decode="full")
    assert "✗ refused" in render.status_line(refused) and 'id="refused"' in render.plan_chart(refused)
    assert "tick to keep it anyway" in render.field_notes(FIELDS, refused)["force"]
    forced = decided(vram="8", duration="240", plan_vae_decode="full", force=True)
    assert "⚑ forced" in render.status_line(forced) and 'id="forced"' in render.plan_chart(forced)
    assert "the plan is forced" in render.field_notes(FIELDS, forced)["force"]
    assert "memory.forced" in forced.plan


def test_a_one_gb_card_shows_no_negative_budget() -> None:
    resolution = decided(vram="1")
    assert resolution.plan.value("memory.budget_gib") < 0, "the core's figure: what the page must not show"
    chart = render.plan_chart(resolution)
    assert "no room" in chart and not re.search(r"(?<![\w.])-\d", re.sub(r"<[^>]+>", "", chart))
    assert "left:0.0%" in chart


def test_the_cpu_plans_red_line_is_drawn() -> None:
    resolution = decided(replay="cpu-only")
    assert resolution.plan.value("memory.phases") is None and resolution.plan.value("memory.budget_gib")
    chart = render.plan_chart(resolution)
    assert 'data-phase="budget"' in chart and 'class="ac-budget"' in chart and "the red line" in chart


def test_the_headline_names_the_device() -> None:
    assert "NVIDIA H100 80GB HBM3" in render.headline(decided(replay="h100-80gb"))
    assert "simulated 8 GB cuda device" in render.headline(decided(vram="8"))


def test_every_text_from_outside_is_escaped() -> None:
    hostile = '<img src=x onerror="alert(1)">**bold**'
    resolution = decided(vram="8", duration="600")
    device = dataclasses.replace(resolution.reading.device, name=hostile)
    tier = dataclasses.replace(resolution.tier, label=hostile)
    resolution = dataclasses.replace(
        resolution, table=hostile, tier=tier, reading=dataclasses.replace(resolution.reading, device=device)
    )
    outputs = [
        render.headline(resolution),
        render.hardware_table(resolution),
        render.status_line(resolution),
        render.warnings_list(resolution),
        render.plan_chart(resolution),
        render.plan_table(resolution),
        render.overrides_table(resolution),
        render.command_line([hostile], 1),
        *render.field_notes(FIELDS, resolution, frozenset({"vram"})).values(),
        render.problem_note(hostile),
        players_html([(f"/x?{hostile}", 1.0, hostile)]),
        Progress(set()).html(hostile),
    ]
    for output in outputs:
        assert "<img" not in output
    assert any("&lt;img src=x onerror=&quot;alert(1)&quot;&gt;**bold**" in output for output in outputs)


# --------------------------------------------------------------------------------------------- runs
def test_progress_follows_the_phases() -> None:
    progress = Progress(skipped={"lm"})
    states = []

    def seen() -> list[str]:
        html = progress.html("")
        return re.findall(r'data-phase="(\w+)" data-state="(\w+)"', html)

    events = [("text_encoder", 0, 0), ("text_encoder", 1, 1), ("dit", 0, 0), ("dit", 1, 3), ("dit", 3, 3)]
    events += [("vae", 0, 0), ("vae", 1, 2), ("vae", 2, 2)]
    for event in events:
        progress.update(*event)
        states.append(dict(seen()))
    assert states[0] == {"lm": "skipped", "text_encoder": "running", "dit": "waiting", "vae": "waiting"}
    assert states[3] == {"lm": "skipped", "text_encoder": "done", "dit": "running", "vae": "waiting"}
    progress.finish({"text_encoder": 0.1, "dit": 1.25, "vae": 2.5})
    html = progress.html("done")
    assert "done · 3 steps, 1.25 s" in html and "done · 2 clips, 2.50 s" in html and "1/1" not in html
    assert "skipped (no LM)" in html


def test_one_player_per_clip() -> None:
    clips = [(f"/acestep-clip/{n}", 10.0, f"clip_{n:02d}.wav") for n in range(1, 7)]
    html = players_html(clips)
    assert html.count("<audio ") == 6 and 'data-clips="6"' in html and "clip 6: 10 s" in html


def test_a_clip_is_served_to_its_browser_only_and_removed_with_its_session(tmp_path: Path) -> None:
    runs = Runs(tmp_path)
    folder = runs.run_folder("session-a")
    folder.mkdir(parents=True)
    clip = folder / "clip_01.wav"
    clip.write_bytes(b"RIFF")
    url = runs.publish("session-a", "browser-a", clip)
    assert url is not None and url.startswith("/acestep-clip/") and len(url) > 40
    token = url.rsplit("/", 1)[1]
    assert runs.clip_for(token, "browser-a") == clip
    assert runs.clip_for(token, "browser-b") is None and runs.clip_for(token, None) is None
    assert runs.publish("session-a", None, clip) is None, "a client without the page's cookie is served nothing"
    runs.end_session("session-a")
    assert not folder.exists() and runs.clip_for(token, "browser-a") is None


# --------------------------------------------------------------------------------------------- the app
def test_compare_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gradio")
    import tempfile

    from acestep_core.runtime.ui import app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    for _ in range(3):
        message, image, _ = app._compare("default", "upstream-2026-02", None)
        assert "data:image/png;base64," in image and "'default' vs 'upstream-2026-02'" in html.unescape(message)
    assert list(tmp_path.rglob("*")) == []


def test_an_uploaded_tables_name_is_shown_as_text(tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    from acestep_core.runtime.ui import app

    source = (ROOT / "examples" / "tiers_8tier" / "acestep_core_tiers_8tier" / "tiers.toml").read_text()
    evil = tmp_path / "evil.toml"
    evil.write_text(source.replace('name = "8tier"', 'name = "<b id=\\"injected\\">x</b>"', 1))
    message = app._validate_upload(str(evil))
    assert "<b id" not in message and "&lt;b id=&quot;injected&quot;&gt;x&lt;/b&gt;" in message
    title, _, _ = app._compare("default", None, str(evil))
    assert "<b id" not in title


def test_a_taken_port_is_said_without_gradios_advice(tmp_path: Path) -> None:
    pytest.importorskip("gradio")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
        # the run's HOME and cache folder (conftest), not a folder of this test's: the child's start-up cache
        # and Gradio's files go where every other child of this run puts them
        env |= folders_of_this_run() | {"GRADIO_ANALYTICS_ENABLED": "False"}
        done = subprocess.run(
            [*CLI, "ui", "--port", str(port), "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert f"port {port}: it is in use; choose another with --port" in done.stderr
    for advice in ("server_port", "share=True", "GRADIO_SERVER_PORT", "launch()", "Traceback"):
        assert advice not in done.stdout + done.stderr


def test_auth_and_host_rules() -> None:
    assert parse_auth(None) is None
    assert parse_auth("me:pa:ss") == ("me", "pa:ss")
    for bad in ("me", ":pw", "me:"):
        with pytest.raises(UsageError):
            parse_auth(bad)
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_another_host_only_when_asked_and_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("gradio")
    from acestep_core.cli import main
    from acestep_core.runtime.ui import app

    calls: list[dict] = []
    monkeypatch.setattr(app, "launch", lambda **kwargs: calls.append(kwargs))
    assert main(["ui"]) == 0
    assert calls[-1]["host"] == "127.0.0.1" and calls[-1]["auth"] is None
    assert "warning" not in capsys.readouterr().err
    assert main(["ui", "--host", "0.0.0.0", "--auth", "me:secret"]) == 0
    assert calls[-1]["host"] == "0.0.0.0" and calls[-1]["auth"] == ("me", "secret")
    assert "warning: serving on 0.0.0.0" in capsys.readouterr().err


def test_core_commands_never_import_gradio_and_a_missing_gradio_says_what_to_install() -> None:
    script = textwrap.dedent(
        """
        import sys
        from acestep_core.cli import build_parser, main
        build_parser(None)
        assert main(["info", "--json", "--vram", "8"]) == 0
        assert "gradio" not in sys.modules, "a core command imported gradio"

        class NoGradio:
            def find_spec(self, name, path=None, target=None):
                if name == "gradio" or name.startswith("gradio."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, NoGradio())
        sys.exit(main(["ui"]))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "pip install 'acestep-core[ui]'" in done.stderr
    assert "Traceback" not in done.stderr


def test_no_handler_lets_an_error_reach_the_page(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("gradio")
    from acestep_core.runtime.ui import app

    def broken() -> list:
        raise RuntimeError("a bug")

    updates = app._guarded(broken, 5, 2)
    assert app.INTERNAL_ERROR in updates[2] and "a bug" not in updates[2] and "Traceback" not in updates[2]
    assert "a bug" in caplog.text
    table_error = app._table_step(lambda: app._validate_upload("/nonexistent/broken.toml"))
    assert "broken.toml: 1 problem(s)" in table_error and "cannot read" in table_error


def test_fields_are_records_of_the_public_description() -> None:
    for field in FIELDS:
        assert isinstance(field, Field) and (field.option is None) != (field.plan_key is None)
        assert field.problem(field.default) is None and field.argv(field.default) == []


def test_the_pipeline_reports_each_phase_from_its_start_to_its_end(tmp_path: Path) -> None:
    """What the page's progress rows follow: (phase, 0, 0) at the start, its count as it goes (the LM's own
    token count, also with progress bars off), (phase, n, n) at the end; phases in their order."""
    pytest.importorskip("torch")
    from acestep_core import DetectOptions, GenerationRequest
    from acestep_core.runtime.pipeline import generate

    events: list[tuple[str, int, int]] = []
    request = GenerationRequest(duration_s=10, batch_size=1, lm="on")
    generate(
        request,
        out_dir=tmp_path / "run",
        detect_options=DetectOptions(vram_gb="8"),
        steps=2,
        progress=False,
        on_progress=lambda *event: events.append(event),
    )
    phases = list(dict.fromkeys(phase for phase, _, _ in events))
    assert phases == list(COMPONENTS)
    for phase in phases:
        mine = [(done, total) for name, done, total in events if name == phase]
        assert mine[0] == (0, 0), (phase, mine[:3])
        assert mine[-1][0] == mine[-1][1] > 0, (phase, mine[-3:])
    tokens = [done for name, done, total in events if name == "lm" and total]
    assert tokens[:3] == [1, 2, 3] and tokens == sorted(tokens), "the LM counts its own tokens"
    assert [done for name, done, _ in events if name == "dit"] == [0, 1, 2, 2]
