"""Trust boundaries (issue #9 points 2-4 and 8, issue #10 point 2): every hook answer is checked against
the contract declared beside its spec, a lying plugin is reported by name and the next one decides;
overrides are validated where they are made; a built-in's name cannot be taken; detection has a
deadline; a plugin's own KeyboardInterrupt or SystemExit is contained."""

from __future__ import annotations

import dataclasses
import math
import signal
import subprocess
import threading
import time
from importlib.metadata import EntryPoint, PathDistribution
from pathlib import Path

import pytest
from conftest import SMALL_TABLE, interruptible_python, wait_until_said
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acestep_core import (
    GIB,
    AdjustedRequest,
    Adjustment,
    DetectOptions,
    DeviceMemory,
    GenerationRequest,
    MemoryReading,
    Overrides,
    Resolution,
    Setting,
    Tier,
    TierTable,
    build_plugin_manager,
    hookimpl,
    parse_table,
    resolve,
)
from acestep_core.cli import main
from acestep_core.hookspecs import CONTRACTS
from acestep_core.plugins import BUILTINS
from acestep_core.tables import TableError, validate_table
from acestep_core.vocabulary import DIT_MODELS, LM_SIZES, MIN_DURATION_S, PLAN_KEYS

GROUP = "acestep_core"
SIM8 = {"MAX_CUDA_VRAM": "8"}


def _problems(resolution: Resolution, plugin: str) -> list[tuple[str | None, str]]:
    return [(p.hook, p.kind) for p in resolution.problems if p.plugin == plugin]


def assert_within_active_table(resolution: Resolution, table: TierTable) -> None:
    """What no plugin may break: the tier is the table's, the request fits it, the plan keeps its schema."""
    assert resolution.tier in table.tiers
    tier, adjusted = resolution.tier, resolution.adjusted
    lm_on = adjusted.lm_model is not None
    assert adjusted.lm_model is None or adjusted.lm_model in tier.lm_models
    if adjusted.duration_s is not None:
        assert math.isfinite(adjusted.duration_s) and MIN_DURATION_S <= adjusted.duration_s <= tier.max_duration_s(
            lm_on
        )
    assert 1 <= adjusted.batch_size <= tier.max_batch(lm_on)
    for setting in resolution.plan:
        if setting.key not in PLAN_KEYS:
            assert setting.key.startswith(f"{setting.plugin}."), setting  # a plugin's own key
            continue
        assert PLAN_KEYS[setting.key].check(setting.value) is None, setting
    assert resolution.plan.value("ladder.batch_size", 1) <= adjusted.batch_size


def default_table() -> TierTable:
    import acestep_core_tiers_default

    return acestep_core_tiers_default.default_table()


# --------------------------------------------------------------------------------------------- select_tier
class Selects:
    def __init__(self, tier: object) -> None:
        self.tier = tier

    @hookimpl
    def select_tier(self) -> object:
        return self.tier


@pytest.mark.parametrize(
    "lie",
    [
        pytest.param(
            lambda t: dataclasses.replace(t.tier("tier1"), max_batch_with_lm=1000, max_batch_without_lm=1000),
            id="doctored-limits",
        ),
        pytest.param(
            lambda t: dataclasses.replace(t.tier("tier4"), lm_models=("0.6B", "1.7B", "4B")), id="doctored-lms"
        ),
        pytest.param(lambda t: dataclasses.replace(t.tier("tier2"), name="tier99"), id="invented-tier"),
        pytest.param(lambda t: parse_table(SMALL_TABLE).tiers[0], id="tier-of-an-unregistered-table"),
    ],
)
def test_a_tier_from_outside_the_active_table_is_refused_and_the_next_plugin_decides(make_manager, lie) -> None:
    resolution = resolve(manager=make_manager(("liar", Selects(lie(default_table())))), environ=SIM8)
    assert resolution.tier.name == "tier4"
    assert resolution.decided_by("select_tier") == "tiers_default"
    assert _problems(resolution, "liar") == [("select_tier", "rejected")]
    [warning] = [w for w in resolution.warnings if "'liar'" in w]
    assert "breaks the contract in select_tier" in warning and "not one of table 'default'" in warning
    assert_within_active_table(resolution, default_table())


class OwnTable:
    """Registers a valid table and selects from it even when another table is active."""

    table = parse_table(SMALL_TABLE, source="own")

    @hookimpl
    def register_tier_tables(self) -> TierTable:
        return self.table

    @hookimpl
    def select_tier(self) -> Tier:
        return self.table.tiers[0]


def test_a_tier_of_a_valid_table_the_same_plugin_registered_is_accepted(make_manager) -> None:
    resolution = resolve(manager=make_manager(("own", OwnTable())), tiers="default", environ=SIM8)
    assert resolution.table == "default"
    assert resolution.tier.name == "everything" and resolution.decided_by("select_tier") == "own"
    assert resolution.problems == ()


# --------------------------------------------------------------------------------------------- adjust_request
class Adjusts:
    def __init__(self, adjusted: object) -> None:
        self.adjusted = adjusted

    @hookimpl
    def adjust_request(self) -> object:
        return self.adjusted


@pytest.mark.parametrize(
    ("lie", "why"),
    [
        (AdjustedRequest(duration_s=60, batch_size=1_000_000, lm_model=None), "batch 1000000 is outside [1, 4]"),
        (AdjustedRequest(duration_s=-5, batch_size=1, lm_model=None), "duration -5 is outside [10, 360]"),
        (AdjustedRequest(duration_s=float("nan"), batch_size=1, lm_model=None), "duration nan"),
        (AdjustedRequest(duration_s=5, batch_size=1, lm_model=None), "duration 5 is outside"),
        (AdjustedRequest(duration_s=60, batch_size=0, lm_model=None), "batch 0"),
        (AdjustedRequest(duration_s=60, batch_size=True, lm_model=None), "batch True"),
        (AdjustedRequest(duration_s=60, batch_size=1, lm_model="4B"), "LM '4B' is not allowed on Tier 4"),
        (AdjustedRequest(duration_s=60, batch_size=1, lm_model="13B"), "LM '13B' is not allowed"),
        (AdjustedRequest(duration_s=300, batch_size=1, lm_model="0.6B"), "duration 300 is outside [10, 240]"),
        (
            AdjustedRequest(60, 1, None, changes=(Adjustment("batch_size", 8, 1, "lowered", plugin="tiers_default"),)),
            "claims to be decided by 'tiers_default'",
        ),
    ],
)
def test_an_adjusted_request_outside_the_tier_is_refused_and_the_next_plugin_decides(make_manager, lie, why) -> None:
    request = GenerationRequest(duration_s=60, batch_size=2, lm="off")
    resolution = resolve(request, manager=make_manager(("liar", Adjusts(lie))), environ=SIM8)
    honest = resolve(request, manager=make_manager(), environ=SIM8)
    assert resolution.adjusted == honest.adjusted
    assert resolution.decided_by("adjust_request") == "tiers_default"
    [problem] = [p for p in resolution.problems if p.plugin == "liar"]
    assert (problem.hook, problem.kind) == ("adjust_request", "rejected")
    assert why in problem.error
    assert_within_active_table(resolution, default_table())


def test_the_built_in_raises_a_duration_under_ten_seconds_to_ten_with_a_warning(make_manager) -> None:
    resolution = resolve(GenerationRequest(duration_s=3, lm="off"), manager=make_manager(), environ=SIM8)
    assert resolution.adjusted.duration_s == MIN_DURATION_S
    assert any("below the 10 s" in w and "Tier 4" in w for w in resolution.warnings)


# --------------------------------------------------------------------------------------------- configure_optimizations
class Configures:
    def __init__(self, *settings_: Setting) -> None:
        self.settings = list(settings_)

    @hookimpl(tryfirst=True)
    def configure_optimizations(self) -> list[Setting]:
        return self.settings


@pytest.mark.parametrize(
    ("lie", "why"),
    [
        (Setting("ladder.batch_size", 1000, "more!"), "ladder.batch_size 1000 is above the adjusted batch 2"),
        (Setting("ladder.duration_s", 10_000, "longer!"), "ladder.duration_s 10000 is above"),
        (Setting("offload.vae", "bogus", "?"), "offload.vae: 'bogus' is not one of"),
        (Setting("compile", "yes", "?"), "compile: 'yes' is not true or false"),
        (Setting("lm.gpu_memory_ratio", 5.0, "?"), "lm.gpu_memory_ratio: 5.0 is not"),
        (Setting("vae.tile_frames", -3, "?"), "vae.tile_frames: -3 is not"),
        (Setting("turbo", True, "?"), "unknown plan key 'turbo'"),
        (Setting("attention", "sdpa", "?", plugin="tiers_default"), "claims to be decided by 'tiers_default'"),
    ],
)
def test_a_plan_setting_out_of_its_schema_is_dropped_and_the_next_plugin_decides(make_manager, lie, why) -> None:
    request = GenerationRequest(duration_s=60, batch_size=2, lm="off")
    good = Setting("liar.own_key", 1, "a key of its own is fine")
    resolution = resolve(request, manager=make_manager(("liar", Configures(lie, good))), environ=SIM8)
    honest = resolve(request, manager=make_manager(), environ=SIM8)
    assert _problems(resolution, "liar") == [("configure_optimizations", "rejected")]
    assert why in next(p.error for p in resolution.problems if p.plugin == "liar")
    assert resolution.plan["liar.own_key"].plugin == "liar"
    if lie.key in honest.plan:
        assert resolution.plan[lie.key] == honest.plan[lie.key]  # the built-in decided it
    else:
        assert lie.key not in resolution.plan


# --------------------------------------------------------------------------------------------- register_tier_tables
def _doctored(**changes: object) -> TierTable:
    table = parse_table(SMALL_TABLE.replace('name = "small"', 'name = "doctored"'))
    return dataclasses.replace(table, tiers=(dataclasses.replace(table.tiers[0], **changes),))


@pytest.mark.parametrize(
    ("table", "why"),
    [
        (_doctored(max_batch_with_lm=-3), "batch -3 is below 1"),
        (_doctored(min_gb=4.0), "leaving a gap from 0"),
        (_doctored(lm_memory_gb={"0.6B": float("nan")}), "lm_memory_gb.0.6B"),
        (_doctored(lm_models=("13B",)), "unknown LM size '13B'"),
        (_doctored(max_duration_without_lm_s=100_000), "outside 10-600 s"),
        (_doctored(recommended_lm="4B"), "'4B' is not among this tier's lm_models"),
        (TierTable(name="empty", tiers=()), "not a non-empty tuple of Tier"),
    ],
)
def test_a_table_built_in_code_is_validated_like_a_toml_one(make_manager, table: TierTable, why: str) -> None:
    class Registers:
        @hookimpl
        def register_tier_tables(self) -> list[TierTable]:
            return [table, parse_table(SMALL_TABLE.replace('name = "small"', 'name = "kept"'))]

    manager = make_manager(("maker", Registers()))
    resolution = resolve(manager=manager, environ=SIM8)
    assert resolution.table == "kept"  # the plugin's valid table is kept, the invalid one dropped
    [problem] = resolution.problems
    assert (problem.plugin, problem.hook, problem.kind) == ("maker", "register_tier_tables", "invalid-table")
    assert why in problem.error


def test_a_tier_keeps_the_recommended_lm_it_is_given_and_validation_refuses_it_as_in_toml() -> None:
    """Tier used to rewrite a recommendation its tier does not allow to the largest allowed size, so a
    table built in code passed validation where the same TOML was refused (issue #20)."""
    toml = SMALL_TABLE.replace("lm_default_on = true", 'lm_default_on = true\nrecommended_lm = "4B"')
    with pytest.raises(TableError) as from_toml:
        parse_table(toml)
    built = _doctored(recommended_lm="4B")
    assert built.tiers[0].recommended_lm == "4B"  # kept as given, not rewritten
    with pytest.raises(TableError) as from_code:
        validate_table(dataclasses.replace(built, name="small"))
    assert [str(p) for p in from_code.value.problems] == [str(p) for p in from_toml.value.problems]
    assert "recommended_lm: '4B' is not among this tier's lm_models" in str(from_code.value)
    # None still means the largest allowed, in code as in TOML
    assert _doctored(recommended_lm=None).tiers[0].recommended_lm == parse_table(SMALL_TABLE).tiers[0].recommended_lm


def test_every_hook_has_a_contract_declared_beside_its_spec() -> None:
    import acestep_core.hookspecs as specs

    hooks = {name for name in dir(specs) if hasattr(getattr(specs, name), "acestep_core_spec")}
    assert (
        hooks
        == set(CONTRACTS)
        == {"register_tier_tables", "detect_memory", "select_tier", "adjust_request", "configure_optimizations"}
    )
    for name in hooks:
        doc = getattr(specs, name).__doc__
        assert ":return:" in doc and "**Contract**" in doc and ("**First result**" in doc or "**Collected**" in doc)


# --------------------------------------------------------------------------------------------- overrides
@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"max_batch": -3}, "max_batch must be an integer of 1 or more, not -3"),
        ({"max_batch": 2.5}, "max_batch"),
        ({"max_batch": True}, "max_batch"),
        ({"max_duration_s": -5}, "max_duration_s must be a finite number of seconds of at least 10, not -5"),
        ({"max_duration_s": float("nan")}, "not nan"),
        ({"max_duration_s": float("inf")}, "not inf"),
        ({"max_duration_s": 5}, "at least 10"),
        ({"lm_models": ("13B",)}, "no LM of size '13B'"),
        ({"lm_models": "4B"}, "lm_models must be a tuple"),
        ({"plan": {"offload.vae": "bogus"}}, "offload.vae: 'bogus' is not one of"),
        ({"plan": {"ladder.batch_size": 0}}, "ladder.batch_size: 0 is not an integer >= 1"),
        ({"plan": {"ladder.rungs": []}}, "ladder.rungs is computed by the memory plan"),
        ({"plan": {"memory.budget_gib": 100}}, "is computed by the memory plan"),
        ({"plan": {"compile": "false"}}, "compile: 'false' is not true or false"),
        ({"plan": {"no.such.key": 1}}, "unknown plan key 'no.such.key'"),
        ({"plan": ["compile"]}, "plan must be a mapping"),
    ],
)
def test_overrides_are_validated_at_construction(kwargs: dict, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        Overrides(**kwargs)
    assert why in str(caught.value)


def test_an_override_raises_a_limit_and_the_record_says_so(make_manager) -> None:
    overrides = Overrides(max_duration_s=600, max_batch=8, lm_models=["4B", "0.6B"], plan={"compile": False})
    assert overrides.lm_models == ("0.6B", "4B")  # normalised, smallest first
    request = GenerationRequest(duration_s=600, batch_size=8, lm_model="4B")
    resolution = resolve(request, overrides=overrides, manager=make_manager(), environ=SIM8)
    assert (resolution.adjusted.duration_s, resolution.adjusted.batch_size, resolution.adjusted.lm_model) == (
        600,
        8,
        "4B",
    )
    assert {o.key for o in resolution.overrides} == {"max_duration_s", "max_batch", "lm_models", "compile"}
    [decision] = [d for d in resolution.decisions if d.hook == "overrides"]
    assert decision.plugin == "user" and "max_batch = 8 (was 2)" in decision.summary


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["--set", "memory.phases={}"], "memory.phases is computed by the memory plan"),
        (["--set", "offload.vae=bogus"], "offload.vae: 'bogus' is not one of"),
        (["--set", "compile=maybe"], "compile: 'maybe' is not true or false"),
        (["--set", "lm.gpu_memory_ratio=-1"], "lm.gpu_memory_ratio: -1 is not"),
        (["--set", "nonsense=1"], "unknown plan key 'nonsense'"),
        (["--max-batch", "-3"], "--max-batch must be 1 or more"),
        (["--max-duration", "5"], "--max-duration must be 10 or more"),
        (["--allow-lm", "13B"], "unknown LM size"),
    ],
)
def test_cli_overrides_follow_the_api_rules(cli, argv: list[str], why: str) -> None:
    code, out, err = cli("plan", "--vram", "8", *argv)
    assert code == 2
    assert why in err and "Traceback" not in err + out


def test_a_ladder_override_may_only_lower_the_run(cli) -> None:
    """A usage error (exit 2), as the README says for a bad --set; it once exited 1 (issue #18)."""
    code, _, err = cli("plan", "--vram", "2", "--set", "ladder.batch_size=3")  # Tier 1: batch 1
    assert code == 2 and "Traceback" not in err
    assert "--set ladder.batch_size=3" in err
    assert "ladder.batch_size 3 is above the adjusted batch 1 (the ladder may only lower it)" in err
    code, _, _ = cli("plan", "--vram", "8", "--batch", "2", "--lm", "none", "--json", "--set", "ladder.batch_size=1")
    assert code == 0


def test_cli_set_takes_values_of_the_keys_type(cli) -> None:
    code, out, _ = cli(
        "plan",
        "--vram",
        "8",
        "--json",
        "--set",
        "offload.vae=none",
        "--set",
        "compile=false",
        "--set",
        "vae.tile_frames=128",
        "--set",
        'quantization.exclude.lm=["lm_head"]',
    )
    assert code == 0
    import json

    plan = {s["key"]: s["value"] for s in json.loads(out)["plan"]["settings"]}
    assert (plan["offload.vae"], plan["compile"], plan["vae.tile_frames"]) == ("none", False, 128)


# --------------------------------------------------------------------------------------------- identity
def _distribution(tmp_path: Path, name: str) -> PathDistribution:
    info = tmp_path / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    return PathDistribution(info)


@pytest.mark.parametrize("autoload", [True, False])
@pytest.mark.parametrize(("name", "module"), [("cuda", "evil_cuda"), ("tiers_default", "acestep_core_tiers_default")])
def test_a_third_party_entry_point_with_a_builtins_name_is_refused(
    tmp_path: Path, autoload: bool, name: str, module: str
) -> None:
    evil = EntryPoint(name=name, value=module, group=GROUP)._for(_distribution(tmp_path, "evil-dist"))
    genuine = [EntryPoint(name="simulated", value="acestep_core_simulated", group=GROUP)]
    if name != "tiers_default":
        genuine.append(EntryPoint(name="tiers_default", value="acestep_core_tiers_default", group=GROUP))
    environ = {} if autoload else {"ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    manager = build_plugin_manager(environ=environ, entry_points=[evil, *genuine])
    [refused] = [info for info in manager.infos.values() if info.status == "refused"]
    assert (refused.name, refused.distribution, refused.builtin) == (name, "evil-dist", False)
    assert f"belongs to the built-in plugin {BUILTINS[name].module} from {BUILTINS[name].distribution}" in refused.error
    assert "evil_cuda" not in __import__("sys").modules
    assert manager.infos["simulated"].builtin and manager.infos["simulated"].status == "loaded"
    resolution = resolve(manager=manager, tiers=None, environ=SIM8) if name == "cuda" else None
    if resolution is not None:
        assert [(p.plugin, p.kind) for p in resolution.problems] == [(name, "refused")]
        assert any(w.startswith(f"plugin '{name}' was refused") for w in resolution.warnings)


def test_the_installed_builtins_are_recognised_by_distribution() -> None:
    manager = build_plugin_manager(environ={"ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    for name, builtin in BUILTINS.items():
        info = manager.infos[name]
        assert info.builtin and info.status == "loaded", info
        assert (info.distribution, info.module) == (builtin.distribution, builtin.module)


def test_plugins_command_names_the_distribution_and_module(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "acestep-core-cuda" in out and "module acestep_core_cuda" in out and "(built-in)" in out


# --------------------------------------------------------------------------------------------- deadline, interrupts
class Hangs:
    def __init__(self) -> None:
        self.release = threading.Event()

    @hookimpl(tryfirst=True)
    def detect_memory(self) -> MemoryReading:
        self.release.wait(30)
        return MemoryReading(device=DeviceMemory(backend="cuda", name="late", total_bytes=80 * GIB))


@pytest.mark.parametrize("how", ["options", "environment"])
def test_a_detector_that_does_not_answer_in_time_is_named_and_the_next_decides(
    make_manager, detected, how: str
) -> None:
    hung = Hangs()
    manager = make_manager(detected(10), ("hung", hung))
    if how == "options":
        options = DetectOptions(environ={}, timeout_s=0.2)
    else:
        options = DetectOptions(environ={"ACESTEP_CORE_DETECT_TIMEOUT": "0.2"})
    started = time.monotonic()
    try:
        resolution = resolve(manager=manager, detect_options=options)
    finally:
        hung.release.set()
    assert time.monotonic() - started < 5
    assert resolution.tier.name == "tier4" and resolution.decided_by("detect_memory") == "test_plugin_0"
    [problem] = resolution.problems
    assert (problem.plugin, problem.hook, problem.kind) == ("hung", "detect_memory", "timeout")
    assert "plugin 'hung' did not answer in time in detect_memory: no answer within 0.2 s" in resolution.warnings[-1]


def test_a_detect_timeout_must_be_positive() -> None:
    for bad in (0, -1, float("nan"), float("inf"), "5"):
        with pytest.raises(ValueError, match="timeout_s"):
            DetectOptions(timeout_s=bad)  # type: ignore[arg-type]


class Interrupts:
    @hookimpl(tryfirst=True)
    def detect_memory(self) -> None:
        raise KeyboardInterrupt("from detect")

    @hookimpl
    def select_tier(self) -> None:
        raise KeyboardInterrupt("from select")

    @hookimpl
    def adjust_request(self) -> None:
        raise SystemExit(4)

    @hookimpl
    def configure_optimizations(self) -> None:
        raise KeyboardInterrupt


def test_a_plugins_own_keyboard_interrupt_or_exit_is_contained_and_named(make_manager) -> None:
    resolution = resolve(manager=make_manager(("rude", Interrupts())), environ=SIM8)
    assert resolution.tier.name == "tier4"
    errors = {p.hook: p.error for p in resolution.problems if p.plugin == "rude"}
    assert errors["detect_memory"].startswith("KeyboardInterrupt: from detect (raised by the plugin itself")
    assert errors["select_tier"].startswith("KeyboardInterrupt: from select (raised by the plugin itself")
    assert errors["adjust_request"] == "SystemExit: 4"
    assert "KeyboardInterrupt" in errors["configure_optimizations"]


PRESSES_CTRL_C = """
import signal, sys, time
import acestep_core_simulated, acestep_core_tiers_default
from acestep_core import build_plugin_manager, hookimpl, resolve

class WaitsForCtrlC:
    @hookimpl
    def select_tier(self):
        print("in select_tier", flush=True)
        time.sleep(600)  # Ctrl-C interrupts this
        print("slept through", flush=True)

builtins = [("tiers_default", acestep_core_tiers_default), ("simulated", acestep_core_simulated)]
manager = build_plugin_manager(environ={}, entry_points=[], plugins=[*builtins, ("ctrl_c", WaitsForCtrlC())])
try:
    resolve(manager=manager, environ={"MAX_CUDA_VRAM": "8"})
except KeyboardInterrupt:
    restored = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    print(f"stopped by KeyboardInterrupt; SIGINT handler restored: {restored}", flush=True)
    sys.exit(130)
print("resolved: the Ctrl-C was swallowed", flush=True)
"""


def test_a_real_ctrl_c_during_a_plugin_still_stops_the_command() -> None:
    """Ctrl-C from outside, as a terminal sends it, while a plugin runs: it stops the resolution (not
    reported as the plugin's problem), and the core's own SIGINT watch is taken down again."""
    process = subprocess.Popen(interruptible_python(PRESSES_CTRL_C), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    said = wait_until_said(process, process.stdout, "in select_tier")
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=120)
    output = (said + rest).decode(errors="replace")
    assert process.returncode == 130, output
    assert "stopped by KeyboardInterrupt; SIGINT handler restored: True" in output


# --------------------------------------------------------------------------------------------- trace
def test_trace_prints_every_hook_call_with_its_plugin_and_result(
    make_manager, capsys: pytest.CaptureFixture[str]
) -> None:
    resolve(manager=make_manager(environ={"ACESTEP_CORE_TRACE_PLUGINS": "1"}), environ=SIM8)
    err = capsys.readouterr().err
    assert "acestep-core trace: select_tier → tiers_default(reading=" in err
    assert "acestep-core trace: select_tier ← tiers_default: Tier(name='tier4'" in err
    assert "acestep-core trace: detect_memory ← simulated: MemoryReading(" in err
    for hook in CONTRACTS:
        assert f"trace: {hook} → " in err
    liar = Selects(dataclasses.replace(default_table().tier("tier1"), name="tier99"))
    resolve(manager=make_manager(("liar", liar), environ={"ACESTEP_CORE_TRACE_PLUGINS": "1"}), environ=SIM8)
    err = capsys.readouterr().err
    assert "acestep-core trace: select_tier ✗ liar: rejected: tier 'tier99' is not one of table 'default'" in err
    resolve(manager=make_manager(), environ=SIM8)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------- property
TABLE = default_table()
LIE = "lying"
"""The reason every setting a liar proposes gives, and the ``asked`` of every change it makes: how the
property tells the liar's records from the built-ins' when it checks who they name as their author."""
CLAIMS = ("tiers_default", "simulated", "user", "acestep_core", "someone")
"""Authors a liar may claim besides itself and "" (the core then names the plugin that answered)."""


def _doctored_copy(name: str, position: int = 0, **changes: object) -> TierTable:
    table = parse_table(SMALL_TABLE.replace('name = "small"', f'name = "{name}"'))
    tiers = list(table.tiers)
    tiers[position] = dataclasses.replace(tiers[position], **changes)
    return dataclasses.replace(table, tiers=tuple(tiers))


OWN_TABLE = parse_table(SMALL_TABLE.replace('name = "small"', 'name = "liar-own"'), source="liar")
"""A valid table a liar may register: its tiers are then the liar's to select."""
LYING_TABLES = (
    _doctored_copy("liar-batch", max_batch_with_lm=-3),
    _doctored_copy("liar-gap", min_gb=4.0),
    _doctored_copy("liar-lm", lm_models=("13B",)),
    _doctored_copy("liar-recommends", recommended_lm="4B"),
    _doctored_copy("liar-long", max_duration_without_lm_s=100_000),
    dataclasses.replace(TABLE, tiers=TABLE.tiers[1:]),  # "default", from 4 GB up: a gap from 0
)
"""Tables built in code that TOML validation refuses (checked below, so the strategy is what it says)."""


def is_valid(table: TierTable) -> bool:
    try:
        validate_table(table)
    except TableError:
        return False
    return True


assert not any(is_valid(table) for table in LYING_TABLES) and is_valid(OWN_TABLE)

plugin_names = st.one_of(
    st.sampled_from(["liar", "cuda", "ladder", "attention", "vae", *CLAIMS]),
    st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
)
numbers = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**7))
readings_anything = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.builds(
        lambda total, free: MemoryReading(
            device=DeviceMemory(backend="cuda", name="liar", total_bytes=total, free_bytes=free)
        ),
        st.one_of(st.none(), st.integers(-(2**40), 2**46), st.floats(), st.text(max_size=3)),
        st.one_of(st.none(), st.integers(-(2**40), 2**46)),
    ),
)


def tiers_anywhere(tables: list[TierTable]) -> st.SearchStrategy[object]:
    """The active table's tiers, the liar's own tables' tiers (valid or not), doctored tiers, junk."""
    return st.one_of(
        st.sampled_from(TABLE.tiers),
        st.sampled_from([tier for table in [OWN_TABLE, *tables] for tier in table.tiers]),
        st.builds(
            lambda tier, batch, duration, lms: dataclasses.replace(
                tier,
                max_batch_with_lm=batch,
                max_batch_without_lm=batch,
                max_duration_with_lm_s=duration,
                lm_models=lms,
            ),
            st.sampled_from(TABLE.tiers),
            st.integers(-5, 10_000),
            st.integers(-5, 10_000),
            st.lists(st.sampled_from([*LM_SIZES, "13B"]), max_size=4).map(tuple),
        ),
        st.just("tier4"),
        st.none(),
    )


def adjusted_anything(name: str) -> st.SearchStrategy[object]:
    claims = st.sampled_from(["", name, *CLAIMS])
    changes = st.lists(
        st.builds(
            Adjustment,
            field=st.sampled_from(["duration_s", "batch_size", "lm_model"]),
            asked=st.just(LIE),
            granted=st.none(),
            reason=st.sampled_from([LIE, LIE, None]),
            plugin=claims,
        ),
        max_size=2,
    ).map(tuple)
    lies = {
        "duration_s": st.one_of(numbers, st.integers(10, 60)),
        "batch_size": st.one_of(st.integers(-5, 10**7), st.integers(1, 2), st.booleans()),
        "lm_model": st.sampled_from(["13B", "", None, *LM_SIZES]),
        "dit_model": st.sampled_from(["xl-sft", "sd3", *DIT_MODELS]),
    }
    honest = AdjustedRequest(duration_s=30, batch_size=1, lm_model=None)
    one_lie = st.sampled_from(sorted(lies)).flatmap(
        lambda field: lies[field].map(lambda value: dataclasses.replace(honest, **{field: value}))
    )
    return st.one_of(st.none(), st.builds(AdjustedRequest, changes=changes, **lies), one_lie)


def settings_anything(name: str) -> st.SearchStrategy[list[Setting]]:
    claims = st.sampled_from(["", name, *CLAIMS])
    anything = st.builds(
        Setting,
        key=st.one_of(
            st.sampled_from(list(PLAN_KEYS)),
            st.sampled_from([f"{name}.own", "tiers_default.x", "someone.x"]),
            st.text(max_size=8),
        ),
        value=st.one_of(
            numbers, st.booleans(), st.text(max_size=6), st.sampled_from(["none", "int8", "tiled", "sdpa"])
        ),
        reason=st.just(LIE),
        plugin=claims,
    )
    ladder = st.builds(
        Setting,
        key=st.sampled_from(["ladder.batch_size", "ladder.duration_s"]),
        value=st.integers(1, 10_000),
        reason=st.just(LIE),
        plugin=claims,
    )
    in_schema = st.builds(
        lambda key_value, plugin: Setting(*key_value, LIE, plugin=plugin),
        st.sampled_from([("compile", False), ("attention", "sdpa"), ("vae.decode", "tiled"), ("offload.vae", "model")]),
        claims,
    )
    return st.lists(st.one_of(anything, ladder, in_schema), max_size=6)


class Liar:
    """Lies in every hook at once: what it answers is drawn anew for each example."""

    def __init__(self) -> None:
        self.tables: list[TierTable] = []
        self.reading: object = None
        self.tier: object = None
        self.adjusted: object = None
        self.settings: list[Setting] = []

    @hookimpl
    def register_tier_tables(self) -> list[TierTable]:
        return self.tables

    @hookimpl(tryfirst=True)
    def detect_memory(self) -> object:
        return self.reading

    @hookimpl
    def select_tier(self) -> object:
        return self.tier

    @hookimpl
    def adjust_request(self) -> object:
        return self.adjusted

    @hookimpl(tryfirst=True)
    def configure_optimizations(self) -> list[Setting]:
        return self.settings


def assert_every_contract_kept(resolution: Resolution, liar: str, tables: list[TierTable]) -> None:
    """What the contract rules guarantee, read off the resolution alone."""
    device = resolution.reading.device  # reading-byte-counts
    for figure, least in ((device.total_bytes, 1), (device.free_bytes, 0), (device.reserved_bytes, 0)):
        assert figure is None or (type(figure) is int and figure >= least), device
    valid = [table for table in tables if is_valid(table)]  # table-valid
    active = {table.name: table for table in [TABLE, *valid]}[resolution.table]
    own = [tier for table in valid for tier in table.tiers] if resolution.decided_by("select_tier") == liar else []
    assert resolution.tier in active.tiers or resolution.tier in own  # tier-of-the-table
    tier, adjusted = resolution.tier, resolution.adjusted
    lm_on = adjusted.lm_model is not None
    assert adjusted.lm_model is None or adjusted.lm_model in tier.lm_models  # lm-allowed
    assert adjusted.dit_model in tier.dit_models  # dit-allowed
    if adjusted.duration_s is not None:  # duration-in-range
        assert math.isfinite(adjusted.duration_s) and MIN_DURATION_S <= adjusted.duration_s <= tier.max_duration_s(
            lm_on
        )
    assert type(adjusted.batch_size) is int and 1 <= adjusted.batch_size <= tier.max_batch(lm_on)  # batch-in-range
    for setting in resolution.plan:  # plan-key-in-schema
        if setting.key not in PLAN_KEYS:
            assert setting.key.startswith(f"{setting.plugin}."), setting  # a plugin's own key
            continue
        assert PLAN_KEYS[setting.key].check(setting.value) is None, setting
    assert resolution.plan.value("ladder.batch_size", 1) <= adjusted.batch_size  # ladder-batch-only-lowers
    longest = adjusted.duration_s if adjusted.duration_s is not None else tier.max_duration_s(lm_on)
    assert resolution.plan.value("ladder.duration_s", MIN_DURATION_S) <= longest  # ladder-duration-only-lowers
    for change in adjusted.changes:  # authorship: what the liar wrote names the liar, reasoned
        assert isinstance(change.reason, str)
        assert change.asked != LIE or change.plugin == liar, change
    for setting in resolution.plan:
        assert setting.reason != LIE or setting.plugin == liar, setting


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.data(),
    plugin_names,
    st.sampled_from(["2", "4", "8", "12", "16", "24", "80", "abc"]),
    st.sampled_from([None, "default"]),
    st.builds(
        GenerationRequest,
        duration_s=st.one_of(st.none(), st.integers(1, 1000)),
        batch_size=st.integers(1, 64),
        lm=st.sampled_from(["auto", "on", "off"]),
    ),
)
def test_whatever_a_plugin_answers_the_resolution_keeps_every_contract(
    data: st.DataObject, name: str, vram: str, tiers: str | None, request: GenerationRequest
) -> None:
    """A plugin of any name lies in every hook at once (tables, reading, tier, request, plan, authors);
    the resolution still keeps every rule. ``benchmarks/mutate_contracts.py`` switches each of the
    rules off in turn and shows that this property then fails."""
    liar = Liar()
    liar.tables = data.draw(
        st.builds(
            lambda lying, own: lying + ([OWN_TABLE] if own else []),
            st.lists(st.sampled_from(LYING_TABLES), max_size=2),
            st.booleans(),
        ),
        label="tables",
    )
    liar.reading = data.draw(readings_anything, label="reading")
    liar.tier = data.draw(tiers_anywhere(liar.tables), label="tier")
    liar.adjusted = data.draw(adjusted_anything(name), label="adjusted")
    liar.settings = data.draw(settings_anything(name), label="settings")
    manager = build_plugin_manager(
        environ={},
        entry_points=[],
        plugins=[
            ("tiers_default", __import__("acestep_core_tiers_default")),
            ("simulated", __import__("acestep_core_simulated")),
            (name, liar),
        ],
    )
    resolution = resolve(request, manager=manager, tiers=tiers, environ={"MAX_CUDA_VRAM": vram}, redetect=True)
    assert_every_contract_kept(resolution, name, liar.tables if manager.is_registered(liar) else [])
    assert resolution.decided_by("select_tier") in (name, "tiers_default")


def test_validating_a_table_from_code_rebuilds_every_field_of_every_shipped_table() -> None:
    """validate_table checks a table through its TOML form: if a Tier field were missing from that
    form, it would go unchecked; every shipped table must come back equal, field for field."""
    import acestep_core_tiers_default as shipped

    from acestep_core.tables import load_table, validate_table

    examples = Path(__file__).resolve().parents[1] / "examples"
    tables = [
        shipped.default_table(),
        shipped.upstream_table(),
        shipped.upstream_main_table(),
        *map(load_table, sorted(examples.rglob("tiers.toml"))),
    ]
    assert len(tables) >= 4
    for table in tables:
        rebuilt = validate_table(table)
        assert dataclasses.replace(rebuilt, source=table.source) == table, table.name
