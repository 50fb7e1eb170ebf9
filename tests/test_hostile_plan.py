"""Issue #18, class 7 (the smaller ones) and the switches of issue #20, each with cases of its own:
``--set`` values nested without bound, ``ladder.*`` overrides and user-made refusals, plan values a
Mac cannot run, ``DetectOptions`` checked like the other records, a simulation asked for that nothing
applies, and one reader of every ``ACESTEP_CORE_*`` switch."""

from __future__ import annotations

import json
from typing import Any

import acestep_core_cuda
import acestep_core_simulated
import acestep_core_tiers_default
import pytest

import acestep_core.plugins
from acestep_core import DetectOptions, GenerationRequest, Overrides, ResolutionError, build_plugin_manager, resolve
from acestep_core.discovery import PluginEntryPoint


def one_error_line(outcome, code: int, *needles: str) -> str:
    assert outcome.code == code, outcome.text
    assert "Traceback" not in outcome.text
    [line] = outcome.err.strip().splitlines()
    for needle in needles:
        assert needle in line, (needle, line)
    return line


# --------------------------------------------------------------------------------------------- --set nesting
@pytest.mark.parametrize(
    "value",
    [
        "[" * 100_000 + "]" * 100_000,  # past the JSON parser's recursion limit: once RecursionError
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        "[" * 40 + "]" * 40,  # parses, but deeper than any plan value
        '{"phase": ' + "[" * 33 + "]" * 33 + "}",
    ],
    ids=["lists-100k", "objects-50k", "lists-40", "inside-a-mapping"],
)
@pytest.mark.parametrize("key", ["ladder.refused", "quantization.exclude.lm"])
def test_deeply_nested_set_values_are_a_usage_error(cli, key: str, value: str) -> None:
    line = one_error_line(cli("plan", "--vram", "8", "--set", f"{key}={value}"), 2, "--set", "nests more than 32")
    assert len(line) < 400, "the value is cut in the message"


def test_nesting_is_refused_by_the_api_too() -> None:
    deep: Any = {}
    for _ in range(40):
        deep = {"x": deep}
    with pytest.raises(ValueError, match="nests more than 32"):
        Overrides(plan={"ladder.refused": deep})


# --------------------------------------------------------------------------------------------- ladder.*
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--set", "ladder.batch_size=3"], "ladder.batch_size 3 is above the adjusted batch 1"),
        (["--batch", "2", "--lm", "none", "--set", "ladder.batch_size=3"], "above the adjusted batch 2"),
        (
            ["--duration", "30", "--set", "ladder.duration_s=60"],
            "ladder.duration_s 60 is above the adjusted duration 30",
        ),
        (["--set", "ladder.duration_s=601"], "is above the adjusted duration"),
    ],
)
def test_a_ladder_override_above_the_request_is_a_usage_error(cli, argv: list[str], needle: str) -> None:
    """Issue #18: it exited 1 where the README promised a usage error."""
    one_error_line(cli("plan", "--vram", "8", *argv), 2, "--set ladder.", needle, "may only lower it")


def test_a_ladder_override_within_the_request_lowers_the_run(cli) -> None:
    outcome = cli("plan", "--vram", "16", "--json", "--batch", "2", "--lm", "none", "--duration", "60",
                  "--set", "ladder.batch_size=1", "--set", "ladder.duration_s=30")  # fmt: skip
    assert outcome.code == 0, outcome.text
    plan = {s["key"]: s["value"] for s in json.loads(outcome.out)["plan"]["settings"]}
    assert (plan["ladder.batch_size"], plan["ladder.duration_s"]) == (1, 30)


def test_the_api_raises_a_value_error_that_is_also_a_resolution_error() -> None:
    from acestep_core.resolve import OverrideError

    options = DetectOptions(vram_gb="8", environ={})
    with pytest.raises(OverrideError) as caught:
        resolve(detect_options=options, overrides=Overrides(plan={"ladder.batch_size": 5}), environ={})
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ResolutionError)
    assert (caught.value.key, caught.value.value) == ("ladder.batch_size", 5)


@pytest.mark.parametrize("key", ["ladder.rungs", "ladder.lm_model", "memory.forced", "memory.phases"])
def test_keys_the_plan_computes_are_not_settable(cli, key: str) -> None:
    one_error_line(cli("plan", "--vram", "8", "--set", f"{key}=null"), 2, key, "cannot be set")


@pytest.mark.parametrize("json_flag", [False, True])
def test_a_user_made_refusal_on_a_plan_that_fits_says_why(cli, json_flag: bool) -> None:
    """It exited 1 with no line at all."""
    argv = ["plan", "--vram", "24", "--duration", "30", "--set", 'ladder.refused={"why": "testing"}']
    outcome = cli(*argv, *(["--json"] if json_flag else []))
    line = one_error_line(outcome, 1, "plan refused", "set by the user", "fits:")
    assert "leave it out" in line
    if json_flag:
        data = json.loads(outcome.out)
        assert any("set by the user" in w for w in data["warnings"])


def test_a_user_made_refusal_on_a_plan_over_budget_says_both() -> None:
    resolution = resolve(
        GenerationRequest(duration_s=240),
        detect_options=DetectOptions(vram_gb="8", environ={}),
        overrides=Overrides(plan={"vae.decode": "full", "ladder.refused": {"why": "mine"}}),
        environ={},
    )
    refusal = resolution.plan["ladder.refused"]
    assert refusal.value == {"why": "mine"} and refusal.warning
    assert "set by the user" in refusal.reason and "is over budget" in refusal.reason


def test_the_ladders_refusal_is_one_line_too(cli) -> None:
    one_error_line(cli("plan", "--vram", "8", "--duration", "240", "--set", "vae.decode=full"), 1, "plan refused:")


def test_a_forced_plan_prints_no_error(cli) -> None:
    outcome = cli("plan", "--vram", "8", "--duration", "240", "--set", "vae.decode=full", "--force")
    assert outcome.code == 0 and outcome.err == ""


# --------------------------------------------------------------------------------------------- what a Mac cannot run
MAC = "apple-m2-pro-mps"


def _mac_plan(cli, *argv: str, env: dict[str, str] | None = None, replay: str | None = MAC) -> dict[str, Any]:
    where = ["--replay", replay] if replay else []
    outcome = cli("plan", "--json", "--duration", "60", *where, *argv, env=env, cuda=True)
    assert outcome.code == 0, outcome.text
    return json.loads(outcome.out)


@pytest.mark.parametrize(
    ("argv", "key", "kept", "needle"),
    [
        (["--set", "vae.decode=full"], "vae.decode", "tiled", "every decode is tiled"),
        (["--set", "vae.tile_frames=30"], "vae.tile_frames", 16, "30 + 2×8 latent frames decodes 88,320 samples"),
        (["--set", "vae.tile_overlap=10"], "vae.tile_overlap", 8, "16 + 2×10"),
        (["--set", "vae.tile_frames=512", "--set", "vae.tile_overlap=64"], "vae.tile_frames", 16, "65,536"),
        (["--attention", "flash_attention_2"], "attention", "sdpa", "flash-attn has kernels for CUDA and ROCm only"),
        (["--set", "attention.dit=flash"], "attention.dit", "native", "this is mps"),
    ],
)
def test_plan_values_a_mac_cannot_run_are_refused_with_the_reason(cli, argv, key: str, kept, needle: str) -> None:
    """They were accepted without a word, though lm.backend already refused impossible choices."""
    for how in ({"replay": MAC}, {"replay": None, "env": {"MAX_MPS_VRAM": "16"}}):
        data = _mac_plan(cli, *argv, **how)
        setting = next(s for s in data["plan"]["settings"] if s["key"] == key)
        assert setting["value"] == kept and setting["warning"] and needle in setting["reason"], setting
        assert any(f"{key}=" in w and "refused" in w for w in data["warnings"])
        assert not any(o["key"] == key for o in data["overrides"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--set", "vae.tile_frames=18"], {"vae.tile_frames": 18}),  # 18 + 2×8 = 34 frames: the limit
        (
            ["--set", "vae.tile_frames=30", "--set", "vae.tile_overlap=2"],
            {"vae.tile_frames": 30, "vae.tile_overlap": 2},
        ),
        (["--set", "vae.tile_overlap=0"], {"vae.tile_overlap": 0}),
        (["--attention", "eager"], {"attention": "eager"}),
    ],
)
def test_what_a_mac_can_run_is_kept(cli, argv: list[str], expected: dict[str, Any]) -> None:
    data = _mac_plan(cli, *argv)
    plan = {s["key"]: s["value"] for s in data["plan"]["settings"]}
    assert {key: plan[key] for key in expected} == expected
    assert {o["key"] for o in data["overrides"]} == set(expected)


@pytest.mark.parametrize(
    ("replay", "refused"),
    [("arc-a770-xpu", True), ("v100-16gb", True), ("h100-80gb", False), ("rx7900xtx-rocm", False), (None, False)],
)
def test_flash_attention_elsewhere(cli, replay: str | None, refused: bool) -> None:
    """XPU has no flash-attn; a V100 (7.0) is below Flash Attention 2's 8.0; H100, ROCm and a
    simulated CUDA card (capability unknown) keep the user's choice."""
    env = None if replay else {"MAX_CUDA_VRAM": "24"}
    data = _mac_plan(cli, "--attention", "flash_attention_2", replay=replay, env=env)
    value = next(s["value"] for s in data["plan"]["settings"] if s["key"] == "attention")
    assert (value != "flash_attention_2") == refused


# --------------------------------------------------------------------------------------------- DetectOptions
@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"environ": None}, "environ must be a mapping"),
        ({"environ": ["MAX_CUDA_VRAM=8"]}, "environ must be a mapping"),
        ({"environ": {"MAX_CUDA_VRAM": 8}}, "environ must map strings to strings"),
        ({"environ": {8: "x"}}, "environ must map strings to strings"),
        ({"device": 1}, "device must be a string"),
        ({"device": b"0"}, "device must be a string"),
        ({"vram_gb": 8}, "vram_gb must be a string"),
        ({"replay": ["h100-80gb"]}, "replay must be a string"),
        ({"timeout_s": "5"}, "timeout_s must be a positive"),
    ],
)
def test_detect_options_refuse_what_no_detection_could_read(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        DetectOptions(**options)


def test_every_problem_of_detect_options_is_named_at_once() -> None:
    with pytest.raises(ValueError, match=r"device must.*vram_gb must.*environ must"):
        DetectOptions(device=1, vram_gb=8.0, environ=None)  # type: ignore[arg-type]


def test_valid_detect_options_still_build() -> None:
    assert DetectOptions(device="GPU-ca2e", vram_gb="8", replay="h100-80gb", environ={"A": "b"}, timeout_s=2).device


# --------------------------------------------------------------------------------------------- simulation not applied
def _blocked(**environ: str):
    plugins = [("tiers_default", acestep_core_tiers_default), ("simulated", acestep_core_simulated)]
    return build_plugin_manager(
        environ={"ACESTEP_CORE_BLOCK_PLUGINS": "simulated", **environ}, entry_points=[], plugins=plugins
    )


@pytest.mark.parametrize("variable", ["MAX_CUDA_VRAM", "MAX_MPS_VRAM", "MAX_XPU_VRAM"])
def test_a_variable_nothing_simulates_is_said(variable: str) -> None:
    """With the simulated plugin blocked, MAX_CUDA_VRAM was ignored without a word."""
    resolution = resolve(manager=_blocked(), detect_options=DetectOptions(environ={variable: "8"}), environ={})
    assert not resolution.reading.simulated
    [warning] = [w for w in resolution.warnings if variable in w]
    assert f"{variable}=8 is not applied: no detection plugin simulates a device" in warning
    assert "acestep-core-simulated blocked" in warning


def test_vram_that_nothing_simulates_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from acestep_core.cli import main

    monkeypatch.setattr(acestep_core.plugins, "_default", _blocked())
    with pytest.raises(SystemExit) as caught:
        main(["info", "--vram", "8"])
    captured = capsys.readouterr()
    assert caught.value.code == 2 and captured.out == ""
    [line] = captured.err.strip().splitlines()
    assert "--vram=8 is not applied: no detection plugin simulates a device" in line


def test_a_simulation_the_plugin_answered_for_is_not_said_twice() -> None:
    manager = build_plugin_manager(
        environ={},
        entry_points=[],
        plugins=[("tiers_default", acestep_core_tiers_default), ("simulated", acestep_core_simulated)],
    )
    bad = DetectOptions(environ={"MAX_CUDA_VRAM": "abc", "MAX_MPS_VRAM": "x"})
    resolution = resolve(manager=manager, detect_options=bad, environ={})
    assert not any("is not applied" in w for w in resolution.warnings)
    replayed = DetectOptions(replay="h100-80gb", environ={"MAX_CUDA_VRAM": "8"})
    manager.register_plugin(acestep_core_cuda, "cuda")
    resolution = resolve(manager=manager, detect_options=replayed, environ={})
    assert [w for w in resolution.warnings if "MAX_CUDA_VRAM" in w] == [
        "simulated: MAX_CUDA_VRAM=8 ignored: --replay h100-80gb on the command line wins over the environment"
    ]


# --------------------------------------------------------------------------------------------- one switch reader
@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "ON", " Yes ", "True"])
def test_every_on_spelling_is_on(value: str) -> None:
    from acestep_core.inputs import TRUE_SPELLINGS, env_flag

    assert env_flag(value) and value.strip().lower() in TRUE_SPELLINGS


@pytest.mark.parametrize("value", [None, "", "0", "off", "no", "false", "maybe", "2", "y", "enable"])
def test_anything_else_is_off(value: str | None) -> None:
    from acestep_core.inputs import env_flag

    assert not env_flag(value)


@pytest.mark.parametrize("value", ["on", "yes", "1", "TRUE"])
def test_every_switch_reads_the_same_spellings(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``on`` was true for two of the three readers, not for ACESTEP_CORE_DEBUG."""
    third_party = PluginEntryPoint("someone_elses", "json")
    manager = build_plugin_manager(environ={"ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD": value}, entry_points=[third_party])
    assert manager.infos["someone_elses"].status == "disabled"
    traced = build_plugin_manager(environ={"ACESTEP_CORE_TRACE_PLUGINS": value}, entry_points=[])
    assert hasattr(traced, "acestep_trace")
    from acestep_core import cache

    assert not cache.enabled({"ACESTEP_CORE_NO_CACHE": value})
    from acestep_core.cli import _unexpected

    monkeypatch.setenv("ACESTEP_CORE_DEBUG", value)
    with pytest.raises(KeyError):
        _unexpected(None, KeyError("a bug"))
