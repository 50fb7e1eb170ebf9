"""The public description of ``acestep-core plan``'s options (``acestep_core.cli.options``): the parsers are
built from it, and what it says about each option is what the command does."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from acestep_core.cli import UsageError, build_parser
from acestep_core.cli.options import PLAN_OPTIONS, REQUEST_OPTIONS, RESOLUTION_OPTIONS, Option, OptionValueError
from acestep_core.cli.resolution import overrides_from_args, parse_plan_args
from acestep_core.vocabulary import LM_SIZES, PLAN_KEYS

CLI = [sys.executable, "-c", "import sys; from acestep_core.cli import main; sys.exit(main())"]
BY_FLAG = {option.flag: option for option in PLAN_OPTIONS}


def run_cli(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    env |= {"ACESTEP_CORE_CACHE_DIR": str(cache), "COLUMNS": "200"}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, env=env, check=False)


def test_every_option_of_the_table_is_in_the_help_of_plan_and_no_other(tmp_path: Path) -> None:
    text = run_cli(["plan", "--help"], tmp_path).stdout
    listed = {flag for pair in re.findall(r"^ {2}(--[\w-]+)(?:, (--[\w-]+))?", text, re.M) for flag in pair if flag}
    documented = {o.flag for o in PLAN_OPTIONS} | {f"--no-{o.flag[2:]}" for o in PLAN_OPTIONS if o.kind == "on-off"}
    assert listed - {"--help"} == documented
    for option in PLAN_OPTIONS:
        assert " ".join(option.help.split()[:4]) in " ".join(text.split()), option.flag


def test_info_takes_the_resolution_options_and_not_the_request() -> None:
    info = build_parser("info")
    for option in RESOLUTION_OPTIONS:
        given = option.argv("8" if option.takes_value else True) if option.kind != "settings" else ["--set", "a=1"]
        if option.kind == "choice":
            given = option.argv(option.choices[0])
        info.parse_args(["info", *given])
    for option in REQUEST_OPTIONS:
        with pytest.raises(SystemExit):
            info.parse_args(["info", *option.argv("1")])


@pytest.mark.parametrize(
    ("flag", "bad"),
    [
        ("--duration", "abc"),
        ("--duration", "-5"),
        ("--duration", "1e400"),
        ("--batch", "0"),
        ("--batch", "2.5"),
        ("--vram", "8GB"),
        ("--vram", "0"),
        ("--max-duration", "abc"),
        ("--max-batch", "x"),
        ("--attention", "fast"),
        ("--offload", "sideways"),
        ("--lm-backend", "onnx"),
    ],
)
def test_a_value_is_checked_with_the_commands_own_words(flag: str, bad: str, tmp_path: Path) -> None:
    """What ``Option.parse`` says of a bad value is what the command prints after ``argument FLAG:``."""
    with pytest.raises(OptionValueError) as caught:
        BY_FLAG[flag].parse(bad)
    done = run_cli(["plan", f"{flag}={bad}"], tmp_path)
    assert done.returncode == 2
    assert f"argument {flag}: {caught.value}" in done.stderr, done.stderr


def test_a_good_value_is_what_the_command_stores() -> None:
    for flag, text, stored in (
        ("--duration", "45.5", 45.5),
        ("--batch", "3", 3),
        ("--vram", " 8 ", "8"),
        ("--max-duration", "600", 600),
        ("--lm", "4B", "4B"),
        ("--offload", "model", "model"),
    ):
        option = BY_FLAG[flag]
        assert option.parse(text) == stored
        assert getattr(parse_plan_args(option.argv(text)), option.dest) == stored


def test_argv_gives_each_kind_its_words() -> None:
    assert BY_FLAG["--duration"].argv("30") == ["--duration", "30"]
    assert BY_FLAG["--vram"].argv("-1") == ["--vram=-1"], "a value starting with a dash stays a value"
    assert BY_FLAG["--force"].argv(True) == ["--force"] and BY_FLAG["--force"].argv(False) == []
    assert BY_FLAG["--compile"].argv(True) == ["--compile"]
    assert BY_FLAG["--compile"].argv(False) == ["--no-compile"]
    assert BY_FLAG["--compile"].argv(None) == []
    with pytest.raises(UsageError, match="argument --vram: '-1' is not a memory size"):
        parse_plan_args(BY_FLAG["--vram"].argv("-1"))


@pytest.mark.parametrize("option", [o for o in PLAN_OPTIONS if o.sets_plan_keys], ids=lambda o: o.flag)
def test_a_shorthand_sets_exactly_the_plan_keys_it_says(option: Option) -> None:
    value = option.choices[-1] if option.choices else None
    given = option.argv(value) if value is not None else option.argv(False)
    plan = overrides_from_args(parse_plan_args(given)).plan
    assert set(plan) == set(option.sets_plan_keys)
    assert set(option.sets_plan_keys) <= set(PLAN_KEYS)


def test_the_table_speaks_the_vocabulary() -> None:
    assert set(LM_SIZES) <= set(BY_FLAG["--lm"].accepted) and BY_FLAG["--lm"].default in BY_FLAG["--lm"].accepted
    assert BY_FLAG["--allow-lm"].accepted == LM_SIZES and BY_FLAG["--allow-lm"].separator == ","
    for option in PLAN_OPTIONS:
        assert option.flag.startswith("--") and option.dest == option.flag[2:].replace("-", "_")
        assert option.help and (option.kind == "choice") == bool(option.choices)
    assert [o.flag for o in PLAN_OPTIONS if not o.decides] == ["--json", "--redetect"]


def test_a_usage_error_from_parse_plan_args_names_the_flag_as_the_command_does() -> None:
    with pytest.raises(UsageError) as caught:
        parse_plan_args(["--bogus"])
    assert str(caught.value) == "unrecognized arguments: --bogus"
    with pytest.raises(UsageError, match="argument --batch: '0' is out of range: give an integer >= 1"):
        parse_plan_args(["--batch", "0"])
