"""The ``acestep-core`` command line: output, --json everywhere, exit codes, help, import discipline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import acestep_core_tiers_default
import pytest

from acestep_core import render_markdown

CONSOLE_SCRIPT = Path(sys.executable).with_name("acestep-core")
EXAMPLE = ["plan", "--duration", "600", "--batch", "8", "--lm", "4B"]


def test_the_issue_example_in_text(cli) -> None:
    code, out, _ = cli(*EXAMPLE, env={"MAX_CUDA_VRAM": "8"})
    assert code == 0
    assert "tier       Tier 4 (8-12GB) from table 'default'" in out
    assert "request    duration 240 s, batch 2, LM 0.6B" in out
    warnings = [line for line in out.splitlines() if line.startswith("  ! ")]
    assert len(warnings) >= 4  # the simulation note and the three clamps (a plan may add its own)
    assert "GPU memory simulation is on (MAX_CUDA_VRAM=8)" in warnings[0]
    assert "LM 4B is not allowed on Tier 4" in warnings[1]
    assert (
        "duration 600 s exceeds the 240 s limit" in warnings[2] and "batch size 8 exceeds the limit of 2" in warnings[3]
    )
    assert "select_tier              tiers_default" in out
    assert "detect_memory            simulated" in out


def test_the_issue_example_without_the_lm(cli) -> None:
    code, out, _ = cli(
        "plan", "--duration", "600", "--batch", "8", "--lm", "none", "--json", env={"MAX_CUDA_VRAM": "8"}
    )
    adjusted = json.loads(out)["adjusted"]
    assert code == 0 and (adjusted["duration_s"], adjusted["batch_size"], adjusted["lm_model"]) == (360, 4, None)


@pytest.mark.parametrize(
    "argv",
    [["info"], EXAMPLE, ["tiers"], ["plugins"], ["info", "--vram", "12"], ["plan", "--lm", "auto", "--no-compile"]],
    ids=lambda argv: " ".join(argv),
)
def test_every_command_takes_json(cli, argv: list[str]) -> None:
    code, out, err = cli(*argv, "--json", env={"MAX_CUDA_VRAM": "8"})
    assert code == 0, err
    data = json.loads(out)
    assert data


def test_info_json_holds_the_whole_resolution(cli) -> None:
    _, out, _ = cli("info", "--json", env={"MAX_CUDA_VRAM": "8"})
    data = json.loads(out)
    assert set(data) >= {
        "reading",
        "table",
        "tier",
        "request",
        "adjusted",
        "plan",
        "overrides",
        "decisions",
        "problems",
        "warnings",
    }
    assert data["tier"]["label"] == "Tier 4"
    assert data["reading"]["device"]["sources"]["total_bytes"] == "MAX_CUDA_VRAM=8 (simulated)"


def test_plugins_json_lists_name_distribution_version_hooks_status(cli) -> None:
    _, out, _ = cli("plugins", "--json")
    listed = {entry["name"]: entry for entry in json.loads(out)}
    assert set(listed) == {"tiers_default", "simulated"}
    assert listed["tiers_default"]["status"] == "loaded"
    assert listed["tiers_default"]["hooks"] == [
        "adjust_request",
        "configure_optimizations",
        "register_tier_tables",
        "select_tier",
    ]
    assert set(listed["simulated"]) >= {"name", "distribution", "version", "hooks", "status", "error"}


def test_plugins_lists_the_installed_builtins_with_their_distributions() -> None:
    result = subprocess.run(
        [str(CONSOLE_SCRIPT), "plugins", "--json"], capture_output=True, text=True, env=_env(), check=True
    )
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listed["tiers_default"]["distribution"] == "acestep-core-tiers-default"
    assert listed["simulated"]["distribution"] == "acestep-core-simulated"
    assert listed["cuda"]["distribution"] == "acestep-core-cuda"
    assert all(listed[name]["builtin"] for name in ("cuda", "simulated", "tiers_default"))


def test_tiers_prints_the_table_rendered_from_the_data(cli) -> None:
    code, out, _ = cli("tiers")
    table = render_markdown(acestep_core_tiers_default.default_table())
    assert code == 0 and table in out


def test_vram_simulates_like_the_variable(cli) -> None:
    _, out, _ = cli("info", "--vram", "12", "--json")
    data = json.loads(out)
    assert data["tier"]["name"] == "tier5" and data["reading"]["device"]["simulated"]
    assert "--vram=12" in data["warnings"][0]


def test_a_bad_vram_variable_is_one_warning_and_not_a_failure(cli) -> None:
    code, out, _ = cli("info", env={"MAX_CUDA_VRAM": "8GB"})
    assert code == 0
    assert out.count("'8GB' is not a memory size") == 1
    assert "tier       Tier 1" in out  # this test's manager has no hardware plugin: the CPU


def test_a_bad_vram_flag_is_a_usage_error(cli) -> None:
    """Typed on the command line, the same value is refused (issue #9: explicit input is strict)."""
    code, out, err = cli("info", "--vram", "8GB")
    assert code == 2 and out == ""
    assert "--vram: '8GB' is not a memory size" in err and len(err.strip().splitlines()) == 1


def test_cli_overrides_win_and_are_shown(cli) -> None:
    request = ["plan", "--duration", "600", "--lm", "0.6B"]
    _, out, _ = cli(*request, "--json", env={"MAX_CUDA_VRAM": "8"})
    planned = {setting["key"]: setting["value"] for setting in json.loads(out)["plan"]["settings"]}
    argv = [
        *request,
        "--max-duration",
        "600",
        "--compile" if not planned["compile"] else "--no-compile",
        "--set",
        "quantization.dit=none",
        "--set",
        "lm.gpu_memory_ratio=0.5",
    ]
    code, out, _ = cli(*argv, "--json")
    data = json.loads(out)
    assert code == 0 and data["adjusted"]["duration_s"] == 600
    overrides = {o["key"]: (o["value"], o["default"]) for o in data["overrides"]}
    assert overrides == {
        "max_duration_s": (600, 240),
        "compile": (not planned["compile"], planned["compile"]),
        "quantization.dit": ("none", "int8"),
        "lm.gpu_memory_ratio": (0.5, planned.get("lm.gpu_memory_ratio")),
    }
    _, text, _ = cli(*argv)
    assert "max_duration_s = 600 (the tier would have given 240)" in text


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nosuch"],
        ["plan", "--batch", "0"],
        ["plan", "--batch", "abc"],
        ["plan", "--duration", "-1"],
        ["plan", "--lm", "7B"],
        ["plan", "--allow-lm", "9B"],
        ["plan", "--max-batch", "0"],
        ["info", "--set", "no-equals-sign"],
        ["info", "--attention", "magic"],
    ],
    ids=lambda argv: " ".join(argv) or "no command",
)
def test_bad_usage_exits_2_with_a_message(cli, argv: list[str]) -> None:
    code, out, err = cli(*argv)
    assert code == 2
    assert "error:" in err and out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ("info", "--tiers", "nosuch"),
        ("plan", "--json", "--tiers", "nosuch"),
        ("tiers", "show", "--tiers", "nosuch"),
        ("calibrate", "--out", "{tmp}/cal", "--compare-with", "nosuch"),
    ],
)
def test_an_unknown_table_typed_as_a_flag_is_bad_usage_naming_the_flag(cli, tmp_path, argv: tuple[str, ...]) -> None:
    code, out, err = cli(*(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 2 and out == ""
    assert err.strip().splitlines()[-1] == (
        f"acestep-core {argv[0]}: error: {argv[-2]} 'nosuch': no tier table named 'nosuch'; installed tables: "
        "default (from tiers_default), upstream-2026-02 (from tiers_default), upstream-2026-04 (from tiers_default)"
    )


def test_a_failure_exits_1_with_a_message(cli) -> None:
    code, out, err = cli("info", "--tiers", "missing/my.toml")
    assert code == 2 and out == "" and "--tiers 'missing/my.toml': no tier table file" in err
    code, out, err = cli("info", env={"ACESTEP_CORE_TIERS": "nosuch"})
    assert code == 1 and out == "" and "ACESTEP_CORE_TIERS='nosuch': no tier table named 'nosuch'" in err
    code, out, _ = cli("info", "--json", env={"ACESTEP_CORE_TIERS": "nosuch"})
    assert code == 1 and json.loads(out)["error"].startswith("ACESTEP_CORE_TIERS='nosuch': no tier table named")


@pytest.mark.parametrize(
    ("argv", "missing", "extra"),
    [
        (("generate", "--out", "{tmp}/out", "--no-progress"), "torch", "ml"),
        (("tiers", "compare", "default", "upstream-2026-02", "--plot", "{tmp}/diff.png"), "matplotlib", "plot"),
        (("fleet", "scan", "--simulate", "8"), "ray", "fleet"),
        (("ui",), "gradio", "ui"),
    ],
)
def test_a_missing_extra_exits_1_naming_the_extra_whatever_the_command(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path, argv: tuple[str, ...], missing: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, missing, None)  # as on an install without the extra
    code, out, err = cli(*(arg.format(tmp=tmp_path) for arg in argv))
    assert code == 1 and out == "", err
    assert len(err.strip().splitlines()) == 1
    assert (
        f"`{argv[0]}` needs" in err and f"{missing} is missing" in err and f"pip install 'acestep-core[{extra}]'" in err
    )
    assert ("--index-url https://download.pytorch.org/whl/cpu" in err) == (extra == "ml"), "the CPU torch line"
    assert not (tmp_path / "diff.png").exists()


def test_exit_codes_of_the_installed_command() -> None:
    def code(*argv: str, **env: str) -> int:
        return subprocess.run([str(CONSOLE_SCRIPT), *argv], capture_output=True, env=_env(**env)).returncode

    assert code("info", MAX_CUDA_VRAM="8") == 0
    assert code("plan", "--batch", "0") == 2
    assert code("info", ACESTEP_CORE_BLOCK_PLUGINS="tiers_default") == 1


@pytest.mark.parametrize("command", ["info", "plan", "plugins"])
def test_help_teaches_with_examples(cli, command: str) -> None:
    code, out, _ = cli(command, "--help")
    assert code == 0 and "examples:" in out and "acestep-core" in out.split("examples:")[1]
    _, top, _ = cli("--help")
    assert "examples:" in top and "MAX_CUDA_VRAM=8 acestep-core info" in top


# --------------------------------------------------------------------------------------------- import discipline
PROBE = """
import contextlib, io, json, sys
import acestep_core
after_import = sorted(m for m in ("torch", "pynvml") if m in sys.modules)
from acestep_core.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["info", "--json"])
resolution = json.loads(out.getvalue())
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "pynvml", "transformers", "diffusers", "optimum"))
cuda = sorted(m for m in sys.modules if m.startswith("acestep_core_cuda."))
unneeded = ("acestep_core.cli.tiers", "acestep_core.cli.plugins", "tomllib", "shutil")
others = sorted(m for m in unneeded if m in sys.modules)
print(json.dumps({"after_import": after_import, "after_info": heavy, "cuda": cuda, "others": others, "code": code,
                  "tier": resolution["tier"]["name"]}))
"""


def test_import_and_info_under_simulation_load_neither_torch_nor_nvml(tmp_path) -> None:
    """``import acestep_core`` and ``acestep-core info --json`` under MAX_CUDA_VRAM=8, with every
    installed plugin: no torch (so no CUDA context can exist) and no NVML. The simulation answers
    first, so the ``cuda`` plugin's detection modules are never imported either, nor the other
    commands' modules, nor (start-up time) — once the start-up cache is written — a TOML parser or
    shutil (which the entry-point scan's zipfile imports, as argparse would for the help's width). The
    cache is this test's own and empty at first, as on a new user's first run: the first run (which
    scans and writes the cache) is held to no torch, no NVML and no cuda modules, the second to all."""
    env = _env(MAX_CUDA_VRAM="8", ACESTEP_CORE_CACHE_DIR=str(tmp_path / "cache"))
    expected = {"after_import": [], "after_info": [], "cuda": [], "others": [], "code": 0, "tier": "tier4"}
    for run in ("first, writing the cache", "second, reading it"):
        result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
        probe = json.loads(result.stdout.strip().splitlines()[-1])
        if run.startswith("first"):
            probe["others"] = [module for module in probe["others"] if module not in ("tomllib", "shutil")]
        assert probe == expected, run
    assert any((tmp_path / "cache").iterdir())


def _env(**extra: str) -> dict[str, str]:
    """The test's environment for a child process: no simulation or switch from the shell, and the
    built-in table chosen, so that a third-party table installed in the venv changes nothing."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    return env | {"ACESTEP_CORE_TIERS": "default"} | extra


@pytest.mark.parametrize("columns", ["57", "", "not-a-number", "-3"])
def test_the_help_width_is_what_shutil_would_read(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    import shutil

    from acestep_core.cli.terminal import terminal_width

    monkeypatch.setenv("COLUMNS", columns)
    assert terminal_width() == shutil.get_terminal_size().columns


def test_the_generate_help_examples_say_what_plan_decides_for_them(cli) -> None:
    """generate resolves exactly as plan does, so plan checks what generate's help promises."""
    code, out, _ = cli("generate", "--help")
    assert code == 0
    examples = " ".join(out.split("examples:")[1].split())
    cpu_example = "acestep-core generate --duration 30 --batch 2 --out out/ the embedded tiny models on this"
    assert cpu_example in examples and "(on a CPU: Tier 1, batch clamped to 1, LM off)" in examples
    assert "MAX_CUDA_VRAM=16 acestep-core generate --duration 30 --batch 2 --out out/" in examples
    assert "(Tier 6: LM on, the recommended 1.7B, batch 2)" in examples
    _, on_cpu, _ = cli("plan", "--duration", "30", "--batch", "2", "--json", "--replay", "cpu-only", cuda=True)
    _, on_16, _ = cli("plan", "--duration", "30", "--batch", "2", "--json", env={"MAX_CUDA_VRAM": "16"})
    for data, tier, batch, lm in ((json.loads(on_cpu), "Tier 1", 1, None), (json.loads(on_16), "Tier 6", 2, "1.7B")):
        adjusted = data["adjusted"]
        assert (data["tier"]["label"], adjusted["batch_size"], adjusted["lm_model"]) == (tier, batch, lm)
