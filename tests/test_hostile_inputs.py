"""Hostile input (issue #9): every case ends in one clear message and the right exit status, never a
traceback; a value typed on the command line is held to it (exit 2), the same value from the
environment is a warning and ignored; files are read with limits; terminal output is escaped and cut.

Classes: environment, command-line flags, tier tables, recordings, terminal output. Output paths,
"nothing of the user's lost" and signals are in ``test_hostile_outputs.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest
from conftest import CliOutcome

from acestep_core.cli.terminal import LINE_LIMIT, TerminalWriter, terminal_text

DEFAULT_TABLE = files("acestep_core_tiers_default").joinpath("tiers.toml").read_text(encoding="utf-8")
TWO_GPUS = "two-gpu-3060-4090"


def refused(outcome: CliOutcome, code: int, *needles: str) -> None:
    """Exit ``code`` with one message line on stderr that holds every needle, nothing on stdout and
    no traceback anywhere."""
    assert outcome.code == code, outcome.text
    assert "Traceback" not in outcome.text
    assert outcome.out == "", outcome.out
    lines = outcome.err.strip().splitlines()
    assert len(lines) == 1, outcome.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def warned(outcome: CliOutcome, *needles: str) -> list[str]:
    """Exit 0, no traceback, and exactly one JSON warning holding all needles; returns the warnings."""
    assert outcome.code == 0, outcome.text
    assert "Traceback" not in outcome.text
    warnings = json.loads(outcome.out)["warnings"]
    matching = [w for w in warnings if all(needle in w for needle in needles)]
    assert len(matching) == 1, warnings
    return warnings


# --------------------------------------------------------------------------------------------- environment
@pytest.mark.parametrize("value", ["1e300", "1e-300", "1e400", "nan", "-1", "8GB", "\x1b[31m8"])
def test_a_bad_simulation_variable_is_one_warning_and_ignored(cli, value: str) -> None:
    outcome = cli("info", "--json", env={"MAX_CUDA_VRAM": value})
    warnings = warned(outcome, "MAX_CUDA_VRAM=", "is not a memory size", "real device is detected instead")
    data = json.loads(outcome.out)
    assert not data["reading"]["device"]["simulated"]
    assert not any(("plugin" in w and "raised" in w) or "wrong type" in w for w in warnings)


def test_an_invalid_variable_does_not_hide_a_valid_one(cli) -> None:
    outcome = cli("info", "--json", env={"MAX_CUDA_VRAM": "abc", "MAX_MPS_VRAM": "16"})
    warned(outcome, "MAX_CUDA_VRAM='abc' is not a memory size", "ignored")
    device = json.loads(outcome.out)["reading"]["device"]
    assert device["simulated"] and device["backend"] == "mps" and device["total_bytes"] == 16 * 2**30


def test_two_simulation_variables_say_which_wins(cli) -> None:
    outcome = cli("info", "--json", env={"MAX_CUDA_VRAM": "8", "MAX_MPS_VRAM": "24"})
    warned(outcome, "MAX_MPS_VRAM=24 is ignored", "MAX_CUDA_VRAM comes first")
    assert json.loads(outcome.out)["tier"]["name"] == "tier4"


def test_the_vram_flag_wins_over_the_variable_and_says_so(cli) -> None:
    outcome = cli("info", "--json", "--vram", "8", env={"MAX_CUDA_VRAM": "16"})
    warned(outcome, "MAX_CUDA_VRAM=16 is ignored", "--vram on the command line wins")
    assert json.loads(outcome.out)["tier"]["name"] == "tier4"


def test_a_replay_flag_wins_over_the_variable_and_says_so(cli) -> None:
    outcome = cli("info", "--json", "--replay", "h100-80gb", env={"MAX_CUDA_VRAM": "8"}, cuda=True)
    warned(outcome, "MAX_CUDA_VRAM=8 ignored", "--replay h100-80gb on the command line wins")
    device = json.loads(outcome.out)["reading"]["device"]
    assert device["name"] == "NVIDIA H100 80GB HBM3" and not device["simulated"]


def test_a_device_for_a_simulated_card_is_one_line_not_silence(cli) -> None:
    outcome = cli("info", "--json", "--vram", "8", "--device", "3")
    warned(outcome, "--device 3 is not applied", "the only one")


def test_a_table_file_from_the_environment_that_is_a_device_fails_with_its_name(cli) -> None:
    outcome = cli("info", env={"ACESTEP_CORE_TIERS": "/dev/zero"})
    assert outcome.code == 1 and "Traceback" not in outcome.text and "/dev/zero" in outcome.err


# --------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["plan", "--duration", "nan"], ["--duration", "'nan'", "finite"]),
        (["plan", "--duration", "inf"], ["--duration", "'inf'", "finite"]),
        (["plan", "--duration", "1e400"], ["--duration", "'1e400'", "finite"]),
        (["plan", "--duration", "-5"], ["--duration", "'-5'", "> 0"]),
        (["plan", "--batch", "-3"], ["--batch", "'-3'", ">= 1"]),
        (["plan", "--batch", "1.5"], ["--batch", "'1.5'", "integer"]),
        (["info", "--vram", "abc"], ["--vram", "'abc'", "positive number of GB"]),
        (["info", "--vram", "1e300"], ["--vram", "'1e300'", "out of range"]),
        (["info", "--vram", "-8"], ["--vram", "'-8'", "out of range"]),
        (["info", "--vram", "8", "--replay", "h100-80gb"], ["--vram 8", "--replay h100-80gb", "give one"]),
        (["info", "--device", "1"], ["--device 1", "no accelerator is visible"]),
        (["plan", "--lm", "13B"], ["--lm", "'13B'", "0.6B, 1.7B, 4B"]),
        (["plan", "--attention", "bogus"], ["--attention", "'bogus'", "sdpa"]),
        (["info", "--replay", ""], ["--replay ''", "an empty value"]),
        (["info", "--device", " "], ["--device ''", "an empty value"]),
        (["plan", "--tiers", ""], ["--tiers ''", "an empty value"]),
        (["tiers", "new", "x" * 300], ["not a usable name", "up to 64"]),
    ],
)
def test_a_bad_flag_is_one_usage_line(cli, argv: list[str], needles: list[str]) -> None:
    refused(cli(*argv), 2, *needles)


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["info", "--replay", "no-such-recording"], ["--replay no-such-recording", "no such file", "h100-80gb"]),
        (["info", "--replay", TWO_GPUS, "--device", "5"], ["--device 5", "no such device", "RTX 3060", "RTX 4090"]),
        (["info", "--replay", TWO_GPUS, "--device", "GPU-ffff"], ["--device GPU-ffff", "matches no device"]),
        (["plan", "--replay", TWO_GPUS, "--device", "9", "--json"], ["--device 9", "no such device"]),
    ],
)
def test_a_flag_that_chooses_no_device_is_a_usage_error(cli, argv: list[str], needles: list[str]) -> None:
    refused(cli(*argv, cuda=True), 2, *needles)


def test_a_device_that_exists_in_the_recording_is_used(cli) -> None:
    outcome = cli("info", "--json", "--replay", TWO_GPUS, "--device", "1", cuda=True)
    assert outcome.code == 0 and json.loads(outcome.out)["reading"]["device"]["name"] == "NVIDIA GeForce RTX 3060"


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--cards", "nan", "finite"),
        ("--cards", "0.5", "larger than the CUDA context plus the margin"),
        ("--cards", ",", "no numbers"),
        ("--margin-gb", "-15", ">= 0"),
        ("--context-gb", "inf", "finite"),
        ("--durations", "5", ">= 10"),
        ("--batches", "0", ">= 1"),
        ("--cpu-unit-mib", "0", "> 0"),
        ("--time-limit", "nan", "finite"),
        ("--name", "", "not a usable name"),
    ],
)
def test_calibrate_refuses_bad_numbers_before_measuring(
    cli, tmp_path: Path, flag: str, value: str, needle: str
) -> None:
    out = tmp_path / "cal"
    refused(
        cli("calibrate", "--out", str(out), "--device", "cpu", f"{flag}={value}"), 2, flag.split("=")[0], value, needle
    )
    assert not out.exists(), "nothing is measured or written for a refused command"


@pytest.mark.parametrize(("value", "needle"), [("-3", ">= 1"), ("0", ">= 1"), ("abc", "integer"), ("5000", "<= 1000")])
def test_generate_refuses_bad_steps(cli, tmp_path: Path, value: str, needle: str) -> None:
    refused(cli("generate", "--steps", value, "--out", str(tmp_path / "o")), 2, "--steps", repr(value), needle)


# --------------------------------------------------------------------------------------------- tables
def _table(tmp_path: Path, text: str, name: str = "t.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_nan_lm_memory_is_invalid(cli, tmp_path: Path) -> None:
    path = _table(
        tmp_path, DEFAULT_TABLE.replace('lm_memory_gb = { "0.6B" = 3 }', 'lm_memory_gb = { "0.6B" = nan }', 1)
    )
    outcome = cli("tiers", "validate", path)
    assert outcome.code == 1 and "Traceback" not in outcome.text
    assert "tier3.lm_memory_gb.0.6B: nan is not a positive number of GB" in outcome.out
    outcome = cli("info", "--tiers", path)
    assert outcome.code == 1 and "lm_memory_gb.0.6B" in outcome.err and "Traceback" not in outcome.text


@pytest.mark.parametrize("depth", [40, 5000])
def test_deeply_nested_toml_is_refused(cli, tmp_path: Path, depth: int) -> None:
    path = _table(tmp_path, DEFAULT_TABLE + "\n[extra]\nx = " + "[" * depth + "]" * depth + "\n")
    outcome = cli("tiers", "validate", path)
    assert outcome.code == 1 and "Traceback" not in outcome.text
    assert "nested more than 32 levels deep" in outcome.out and path in outcome.out


def test_a_device_file_is_not_read_as_a_table(cli) -> None:
    outcome = cli("tiers", "validate", "/dev/zero")
    assert outcome.code == 1 and "Traceback" not in outcome.text
    assert "/dev/zero" in outcome.out and "not a regular file" in outcome.out


def test_an_oversized_table_is_refused_without_parsing(cli, tmp_path: Path) -> None:
    path = _table(tmp_path, DEFAULT_TABLE + "#" * (2 << 20))
    outcome = cli("tiers", "validate", path, "--json")
    report = json.loads(outcome.out)
    assert outcome.code == 1 and not report["valid"] and "too large" in report["problems"][0]["message"]


def test_a_binary_table_and_a_folder_are_refused(cli, tmp_path: Path) -> None:
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\x00\xff" * 10)
    outcome = cli("tiers", "validate", str(binary), str(tmp_path))
    assert outcome.code == 1 and "Traceback" not in outcome.text
    assert "not a text file" in outcome.out and "cannot read a folder" in outcome.out


def test_compare_with_a_device_file_fails_with_its_name(cli) -> None:
    """Typed as B, so bad usage (2) naming the argument since ec8c77a, and said as what it is: a file
    that exists but is not a regular one, not a missing one."""
    outcome = cli("tiers", "compare", "default", "/dev/zero")
    assert outcome.code == 2 and "Traceback" not in outcome.text
    assert outcome.err.startswith("acestep-core tiers: error: B '/dev/zero': '/dev/zero' is not a regular file")


# --------------------------------------------------------------------------------------------- recordings
RECORDING = {"format": "acestep-core-recording/1", "nvml": {"error": None, "driver_version": "1", "gpus": []}}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("[]", "not a recording"),
        ("null", "not a recording"),
        (
            '{"format": "acestep-core-recording/1", "nvml": {"gpus": [{"name": "x", "uuid": "GPU-1", '
            '"memory_v1": {}}]}}',
            "nvml.gpus[0].memory_v1.total is missing; it must be an integer from 1 to",
        ),
        ('{"format": "acestep-core-recording/1", "nvml": {"gpus": 5}}', "nvml.gpus is 5; it must be a list"),
        ('{"format": "acestep-core-recording/1", "nvml": {"gpus": [', "not JSON"),
        ("[" * 100_000 + "]" * 100_000, "nests"),
        (json.dumps(RECORDING | {"pad": "x" * (9 << 20)}), "too large"),
    ],
)
def test_a_malformed_recording_is_named_and_refused(cli, tmp_path: Path, content: str, needle: str) -> None:
    path = _table(tmp_path, content, "recording.json")
    refused(cli("info", "--replay", path, cuda=True), 2, f"--replay {path}", needle)


def test_a_device_file_is_not_read_as_a_recording(cli) -> None:
    refused(cli("info", "--replay", "/dev/zero", cuda=True), 2, "/dev/zero", "not a regular file")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize(
    "argv", [["tiers", "validate", "{fifo}"], ["info", "--replay", "{fifo}"], ["info", "--tiers", "{fifo}"]]
)
def test_a_fifo_never_hangs_a_command(tmp_path: Path, argv: list[str]) -> None:
    """A FIFO nobody writes would block ``open`` forever: in a child process, bounded by a timeout."""
    fifo = tmp_path / "table.toml"
    os.mkfifo(fifo)
    script = "import sys; from acestep_core.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    done = subprocess.run(
        [sys.executable, "-c", script, *(a.format(fifo=fifo) for a in argv)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr and str(fifo) in done.stdout + done.stderr


def test_recording_without_nvidia_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from acestep_core_cuda import replay

    monkeypatch.setattr(replay, "load_pynvml", lambda: replay.RecordedNvml({"error": "DriverNotLoaded"}))
    target = tmp_path / "mine.json"
    assert replay.main(["record", "my box", "--out", str(target)]) == 1
    err = capsys.readouterr().err
    assert "nothing recorded" in err and "not loaded" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- terminal output
def test_control_characters_in_a_tier_label_are_escaped_on_the_terminal(cli, tmp_path: Path) -> None:
    evil = DEFAULT_TABLE.replace('label = "Tier 1"', 'label = "\\u001b[2J\\u001b[31mEvil\\u202e\\u009b\\u007f"', 1)
    path = _table(tmp_path, evil)
    for argv in (["info", "--tiers", path], ["tiers", "--tiers", path], ["tiers", "validate", path]):
        outcome = cli(*argv)
        assert outcome.code == 0, outcome.text
        assert not any(c in outcome.text for c in "\x1b\u202e\x9b\x7f")
    outcome = cli("info", "--tiers", path)
    assert "\\x1b[2J\\x1b[31mEvil\\u202e\\x9b\\x7f" in outcome.out
    raw = cli("info", "--tiers", path, "--json").out
    assert not any(c in raw for c in "\x1b\u202e\x9b\x7f"), "escaped in JSON too, by JSON's own escapes"
    assert json.loads(raw)["tier"]["label"] == "\x1b[2J\x1b[31mEvil\u202e\x9b\x7f", "--json keeps the value whole"


def test_a_huge_value_is_cut_on_the_terminal_and_whole_in_json(cli, tmp_path: Path) -> None:
    huge = "L" * 100_000
    path = _table(tmp_path, DEFAULT_TABLE.replace('label = "Tier 1"', f'label = "{huge}"', 1))
    outcome = cli("info", "--tiers", path)
    assert outcome.code == 0
    assert max(len(line) for line in outcome.out.splitlines()) < LINE_LIMIT + 100
    assert "more characters; --json has the full value" in outcome.out
    assert json.loads(cli("info", "--tiers", path, "--json").out)["tier"]["label"] == huge


def test_a_huge_bad_flag_value_is_cut_in_the_usage_line(cli) -> None:
    outcome = cli("plan", "--lm", "\x1b]0;owned\x07" + "x" * 100_000)
    refused(outcome, 2, "--lm")
    assert len(outcome.err) < 2 * LINE_LIMIT and "\x1b" not in outcome.err and "\x07" not in outcome.err


def test_the_terminal_writer_escapes_and_cuts() -> None:
    import io

    sink = io.StringIO()
    writer = TerminalWriter(sink, limit=10)
    writer.write("ok\ttab\n\x1b[1mbold\n" + "y" * 25 + "\n")
    assert sink.getvalue().splitlines() == [
        "ok\ttab",
        "\\x1b[1mbol… [1 more characters; --json has the full value]",
        "yyyyyyyyyy… [15 more characters; --json has the full value]",
    ]
    assert terminal_text("a\u2066b\x9bc") == "a\\u2066b\\x9bc"
