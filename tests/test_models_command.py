"""The DiT as a request dimension, tables' ``dit_models``, ``--checkpoints`` and ``acestep-core models``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from acestep_core import DetectOptions, GenerationRequest, resolve
from acestep_core.tables import TableError, parse_table, table_to_toml
from acestep_core.types import PRE_XL_DIT_MODELS
from tests.conftest import SMALL_TABLE


def _resolve(gb: float, **request: object):
    return resolve(GenerationRequest(**request), detect_options=DetectOptions(vram_gb=str(gb), environ={}), environ={})


def test_the_dit_defaults_to_the_2b_turbo_and_the_plan_knows_its_forwards() -> None:
    resolution = _resolve(16, duration_s=60)
    assert resolution.adjusted.dit_model == "turbo"
    assert resolution.plan.value("dit.forwards_per_step") == 1
    sft = _resolve(16, duration_s=60, dit_model="sft")
    assert sft.plan.value("dit.forwards_per_step") == 2
    dit_phase = lambda r: r.plan.value("memory.phases")["dit"]  # noqa: E731
    assert dit_phase(sft) > dit_phase(resolution)  # CFG: twice the rows through the same weights
    components = sft.plan.value("memory.components")
    assert set(components) == {"lm", "text_encoder", "dit", "vae"}
    assert components["dit"]["parameters"] == 2_393_872_518 and components["dit"]["forwards_per_step"] == 2
    assert components["lm"]["vocabulary"] == 217_204 and "acestep.cpp" in components["lm"]["source"]


def test_an_xl_is_refused_where_the_tier_does_not_allow_it_and_budgeted_where_it_does() -> None:
    small = _resolve(10, dit_model="xl-turbo")
    assert small.adjusted.dit_model == "turbo"
    assert any("DiT xl-turbo is not allowed on Tier 4" in w for w in small.warnings)
    large = _resolve(12, dit_model="xl-turbo")
    assert large.adjusted.dit_model == "xl-turbo" and not large.plan.value("ladder.refused")
    assert large.plan.value("memory.components")["dit"]["parameters"] == 4_987_310_726
    assert "XL" in large.plan.value("memory.components")["dit"]["model"]
    with pytest.raises(ValueError, match="dit_model must be one of"):
        GenerationRequest(dit_model="xl")


def test_a_table_without_dit_models_keeps_loading_with_the_2b_dits() -> None:
    table = parse_table(SMALL_TABLE, source="small")
    assert table.tiers[0].dit_models == PRE_XL_DIT_MODELS == ("turbo", "base", "sft")
    assert "dit_models" not in table_to_toml(table)
    with_xl = SMALL_TABLE + 'dit_models = ["turbo", "xl-turbo"]\n'
    assert parse_table(table_to_toml(parse_table(with_xl))).tiers[0].dit_models == ("turbo", "xl-turbo")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["turbo", "xl-large"]', "unknown DiT 'xl-large'"),
        ("[]", "allows no DiT"),
        ('["xl-turbo", "turbo"]', "not listed in order"),
    ],
)
def test_dit_models_are_validated_like_the_lm_list(value: str, message: str) -> None:
    with pytest.raises(TableError, match=message):
        parse_table(SMALL_TABLE + f"dit_models = {value}\n")


def test_a_larger_tier_must_not_drop_a_dit() -> None:
    tier = """
[[tiers]]
name = "{name}"
min_gb = {low}
{bound}
max_duration_with_lm_s = 30
max_duration_without_lm_s = 60
max_batch_with_lm = 1
max_batch_without_lm = 1
lm_models = ["0.6B"]
lm_default_on = true
dit_models = {dits}
"""
    two = '[table]\nname = "two"\n'
    two += tier.format(name="small", low=0, bound="max_gb = 8", dits='["turbo", "xl-turbo"]')
    two += tier.format(name="large", low=8, bound="", dits='["turbo"]')
    with pytest.raises(TableError, match=r"large.dit_models: drops \['xl-turbo'\] that small allows"):
        parse_table(two)


def test_the_default_table_allows_the_xl_from_12_gb_as_upstreams_guide() -> None:
    from acestep_core_tiers_default import default_table

    allowed = {tier.name: "xl-turbo" in tier.dit_models for tier in default_table().tiers}
    assert allowed == {
        "tier1": False, "tier2": False, "tier3": False, "tier4": False,
        "tier5": True, "tier6": True, "unlimited": True,
    }  # fmt: skip
    # the guide's 12-16 GB condition (offload and int8) is the tier's own default
    tier5 = default_table().tier("tier5").optimizations
    assert tier5["cpu_offload"] and tier5["quantization"] == "int8"


# --------------------------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    from acestep_core.runtime.models.fixtures import write_checkpoints

    root = tmp_path_factory.mktemp("checkpoints")
    write_checkpoints(root, dits=("turbo", "xl-sft"), lms=("0.6B",))
    return root


def _models(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str, bool]:
    """``acestep-core models`` in a fresh process: exit code, stdout, stderr, whether torch was imported."""
    code = (
        "import sys; from acestep_core.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    import os

    environ = {**os.environ, **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", code, "models", *argv], capture_output=True, text=True, timeout=120, env=environ
    )
    return result.returncode, result.stdout, result.stderr, "NO-TORCH" not in result.stderr


def test_models_lists_a_folder_from_its_headers_without_torch(checkpoints: Path) -> None:
    code, out, err, torch_imported = _models("--checkpoints", str(checkpoints), "--vram", "12", "--json")
    assert code == 0, err
    assert not torch_imported
    report = json.loads(out)
    rows = {(r["component"], r["name"]): r for r in report["models"]}
    turbo, xl = rows[("dit", "turbo")], rows[("dit", "xl-sft")]
    assert turbo["found"] and turbo["layout"] == "original" and turbo["dtypes"] == ["bf16"] and turbo["allowed"]
    assert xl["layout"] == "original-sharded" and xl["dtypes"] == ["fp32"] and xl["problem"] is None
    assert turbo["parameters"] == 406_982 and turbo["documented_parameters"] == 2_393_872_518
    assert rows[("lm", "0.6B")]["audio_codes"] == 65_535
    assert not rows[("lm", "4B")]["found"] and not rows[("lm", "4B")]["allowed"]
    assert "allows 0.6B, 1.7B only" in rows[("lm", "4B")]["why"]
    assert report["run"] == {"dit": "turbo", "lm": "0.6B", "missing": []}


def test_models_says_what_a_run_lacks_and_why_a_folder_cannot_load(checkpoints: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "checkpoints"
    shutil.copytree(checkpoints, copy)
    shutil.rmtree(copy / "vae")
    config = json.loads((copy / "acestep-v15-turbo" / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (copy / "acestep-v15-turbo" / "config.json").write_text(json.dumps(config))
    code, out, err, _ = _models("--vram", "16", "--lm", "1.7B", env={"ACESTEP_CHECKPOINTS_DIR": str(copy)})
    assert code == 0, err
    assert "a full run (DiT turbo, LM 1.7B) is missing: vae, acestep-5Hz-lm-1.7B" in out
    assert "cannot load: config.json describes" in out and "the weights hold 406,982" in out


def test_models_refuses_a_flag_and_forgives_the_environment(tmp_path: Path) -> None:
    code, out, err, _ = _models("--checkpoints", str(tmp_path / "none"))
    assert code == 2 and "--checkpoints" in err and "no such folder" in err
    code, out, err, _ = _models("--vram", "8", env={"ACESTEP_CHECKPOINTS_DIR": str(tmp_path / "none")})
    assert code == 0 and "ACESTEP_CHECKPOINTS_DIR=" in out and "is not a folder; ignored" in out


def test_plan_budgets_the_folders_own_vocabulary(checkpoints: Path) -> None:
    resolution = _resolve(16, lm_model="0.6B", checkpoints=str(checkpoints))
    lm = resolution.plan.value("memory.components")["lm"]
    config = json.loads((checkpoints / "acestep-5Hz-lm-0.6B" / "config.json").read_text())
    assert lm["vocabulary"] == config["vocab_size"] and lm["source"].endswith("acestep-5Hz-lm-0.6B/config.json")
    assert resolution.plan.value("memory.components")["dit"]["parameters"] == 406_982


def test_an_adjuster_that_runs_a_dit_the_tier_refuses_is_rejected(make_manager, detected) -> None:
    from acestep_core import AdjustedRequest, hookimpl

    class XLEverywhere:
        @hookimpl(tryfirst=True)
        def adjust_request(self, request, tier, reading):
            return AdjustedRequest(duration_s=30, batch_size=1, lm_model=None, dit_model="xl-sft")

    manager = make_manager(detected(8), ("xl-everywhere", XLEverywhere()))
    resolution = resolve(GenerationRequest(duration_s=30, lm="off"), manager=manager, environ={})
    assert resolution.adjusted.dit_model == "turbo"  # the built-in adjuster decided instead
    problem = next(p for p in resolution.problems if p.plugin == "xl-everywhere")
    assert problem.kind == "rejected" and "DiT 'xl-sft' is not allowed on Tier 4" in problem.error
