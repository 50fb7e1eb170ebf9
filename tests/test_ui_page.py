"""The ui page's logic (no browser): its decision is `acestep-core plan --json`'s, bad input gets the CLI's
words, the command never drags gradio into the core commands, and no handler lets an error escape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from acestep_core.cli import UsageError
from acestep_core.runtime.ui.command import is_loopback, parse_auth
from acestep_core.runtime.ui.page import (
    PLAN_OVERRIDE_KEYS,
    PageInputs,
    cli_argv,
    render,
    resolve_inputs,
)

CASES: dict[str, PageInputs] = {
    "8 GB, too long, too many, refused 4B": PageInputs(vram="8", duration=600, batch=8, lm_mode="on", lm_size="4B"),
    "4 GB, LM off": PageInputs(vram="4", duration=120, lm_mode="off"),
    "12 GB, the LM chooses the duration": PageInputs(vram="12", duration_auto=True),
    "16 GB, every kind of override": PageInputs(
        vram="16",
        duration=500,
        batch=3,
        max_duration="600",
        max_batch="8",
        allow_lm=("0.6B", "4B"),
        lm_mode="on",
        lm_size="4B",
        plan={"compile": "false", "offload.dit": "model", "vae.tile_frames": "128"},
    ),
    "24 GB, 1.7B, a list-valued plan key": PageInputs(
        vram="24", lm_mode="on", lm_size="1.7B", plan={"quantization.exclude.lm": '["lm_head"]'}
    ),
    "2 GB: the ladder lowers, then refuses": PageInputs(vram="2", duration=600, batch=4),
    "a replayed H100, 45.5 s": PageInputs(replay="h100-80gb", duration=45.5),
    "a replayed RTX 4060, LM off": PageInputs(replay="rtx4060-8gb", lm_mode="off", batch=4),
}


def cli_plan_json(argv: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from acestep_core.cli import main; sys.exit(main())",
            "plan",
            "--json",
            *argv,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    # `plan` exits 1 for a refused plan (issue 11), 0 otherwise: the JSON is printed either way
    refused = bool(
        next(s["value"] for s in json.loads(done.stdout)["plan"]["settings"] if s["key"] == "ladder.refused")
    )
    assert done.returncode == (1 if refused else 0), done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", list(CASES))
def test_the_pages_decision_is_the_clis(name: str) -> None:
    """Simulated and replayed devices only: this machine's live free memory differs between two readings."""
    inputs = CASES[name]
    inputs = PageInputs(**{**inputs.__dict__, "table": "default"})
    argv = cli_argv(inputs)
    page = json.loads(render(resolve_inputs(inputs), inputs).decision_json)
    assert page == cli_plan_json(argv)


def test_controls_become_plans_own_arguments() -> None:
    argv = cli_argv(CASES["16 GB, every kind of override"])
    assert argv[:2] == ["--vram", "16"]
    assert argv[argv.index("--lm") : argv.index("--lm") + 2] == ["--lm", "4B"]
    assert "--allow-lm" in argv and "0.6B,4B" in argv
    assert "compile=false" in argv and "offload.dit=model" in argv
    assert cli_argv(PageInputs(lm_mode="off"))[-2:] == ["--lm", "none"]
    assert "--duration" not in cli_argv(PageInputs(duration_auto=True))


@pytest.mark.parametrize(
    ("inputs", "flag"),
    [
        (PageInputs(vram="abc"), ["--vram", "abc"]),
        (PageInputs(vram="-1"), ["--vram", "-1"]),
        (PageInputs(max_duration="abc"), ["--max-duration", "abc"]),
        (PageInputs(max_batch="0"), ["--max-batch", "0"]),
        (PageInputs(batch=0), ["--batch", "0"]),
        (PageInputs(allow_lm=("2B",)), ["--allow-lm", "2B"]),
        (PageInputs(plan={"offload.dit": "sideways"}), ["--set", "offload.dit=sideways"]),
    ],
)
def test_bad_input_gets_the_clis_words(inputs: PageInputs, flag: list[str]) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_inputs(inputs)
    message = str(caught.value)
    assert flag[0] in message
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from acestep_core.cli import main; sys.exit(main())", "plan", *flag],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2 and message in done.stderr


def test_lm_sizes_the_tier_refuses_are_marked_with_the_reason() -> None:
    inputs = PageInputs(vram="8", lm_mode="on", lm_size="4B")
    view = render(resolve_inputs(inputs), inputs)
    by_size = {choice.size: choice for choice in view.lm_choices}
    assert by_size["0.6B"].available and by_size["0.6B"].recommended and "recommended" in by_size["0.6B"].label
    assert not by_size["4B"].available and "unavailable" in by_size["4B"].label
    assert "allows only 0.6B" in by_size["4B"].reason
    assert "LM 4B is not allowed on Tier 4" in view.lm_note
    assert view.lm_size == "0.6B" and view.duration_max == 240 and view.batch_max == 2


def test_overrides_are_marked_with_what_the_tier_gave() -> None:
    inputs = PageInputs(vram="8", max_duration="600", plan={"compile": "false"})
    view = render(resolve_inputs(inputs), inputs)
    assert "max_duration_s" in view.overrides and "600" in view.overrides and "240" in view.overrides
    assert "compile" in view.overrides and "(override)" in view.limits
    assert "✎ override" in view.plan_table
    assert view.duration_max == 600


def test_plan_chart_shows_every_phase_the_budget_and_a_refusal() -> None:
    inputs = PageInputs(vram="2", duration=600, batch=4)
    view = render(resolve_inputs(inputs), inputs)
    for phase in ("text_encoder", "dit", "vae"):
        assert f'data-phase="{phase}"' in view.plan_chart
    assert "ac-budget" in view.plan_chart and 'id="ladder"' in view.plan_chart
    assert 'id="refused"' in view.plan_chart and "refused" in view.plan_chart


def test_override_keys_come_from_the_plan_schema() -> None:
    from acestep_core.hookspecs import PLAN_KEYS

    assert set(PLAN_OVERRIDE_KEYS) <= set(PLAN_KEYS)
    assert {"attention", "compile", "offload.dit", "quantization.lm", "vae.decode"} <= set(PLAN_OVERRIDE_KEYS)
    assert not any(k.startswith(("memory.", "ladder.")) for k in PLAN_OVERRIDE_KEYS)
    # a key the plan computes is shown, not offered (the measured quality of a quantization scheme)
    assert {"quantization.backend", "quantization.scheme.dit"} <= set(PLAN_OVERRIDE_KEYS)
    assert (
        all(PLAN_KEYS[k].settable for k in PLAN_OVERRIDE_KEYS) and "quantization.quality.dit" not in PLAN_OVERRIDE_KEYS
    )


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


def test_no_handler_lets_an_error_reach_the_page(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("gradio")
    from acestep_core.runtime.ui import app

    def broken(inputs: PageInputs) -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app, "_view_updates", broken)
    updates = app._guarded(lambda: app._view_updates(PageInputs()), 5, error_index=1)
    assert app.INTERNAL_ERROR in updates[1] and "a bug" not in updates[1] and "Traceback" not in updates[1]
    assert "a bug" in caplog.text
    table_error = app._guarded(lambda: app._validate_upload("/nonexistent/broken.toml"), 1, error_index=0)
    assert "broken.toml: 1 problem(s)" in table_error and "cannot read" in table_error
