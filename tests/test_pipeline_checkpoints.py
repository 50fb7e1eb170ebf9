"""``generate --checkpoints DIR``: the real components loaded from a tiny folder in the real layouts, through
the same plan, int8, offload and decode paths; turbo one DiT forward a step, sft two (CFG)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from acestep_core.cli import main  # noqa: E402
from acestep_core.runtime.models import SAMPLE_RATE, AceStepDiT  # noqa: E402
from acestep_core.runtime.models.fixtures import write_checkpoints  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    write_checkpoints(root, dits=("turbo", "sft"), lms=("0.6B",))
    return root


def _generate(capsys: pytest.CaptureFixture[str], out: Path, *argv: str) -> tuple[int, dict, list[tuple[str, int]]]:
    """Run ``generate`` in process; also record every DiT decoder forward (class, rows) through a global hook."""
    calls: list[tuple[str, int]] = []

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict, output: object) -> None:
        if type(module) is AceStepDiT and args:
            calls.append(("decoder", args[0].shape[0]))

    handle = torch.nn.modules.module.register_module_forward_hook(hook, with_kwargs=True)
    try:
        code = main(["generate", "--out", str(out), "--json", "--steps", "3", *argv])
    finally:
        handle.remove()
    captured = capsys.readouterr().out
    return code, json.loads(captured), calls


def test_generate_loads_every_component_from_the_folder(checkpoints, tmp_path, capsys) -> None:
    code, report, calls = _generate(
        capsys,
        tmp_path / "sft",
        "--checkpoints", str(checkpoints),
        "--dit", "sft",
        "--lm", "0.6B", "--allow-lm", "0.6B",
        "--duration", "10", "--batch", "2", "--max-batch", "2",
        "--set", "quantization.dit=int8",
        "--set", "offload.vae=model",
    )  # fmt: skip
    assert code == 0, report
    phases = {p["name"]: p["details"] for p in report["phases"]}
    for component in ("lm", "text_encoder", "dit", "vae"):
        assert phases[component]["checkpoint"]["path"].startswith(str(checkpoints)), component
    assert any("checkpoints loaded for every component" in note for note in report["notes"])
    dit = phases["dit"]
    assert dit["forwards_per_step"] == 2 and dit["rows_per_forward"] == 4
    assert dit["source"] == "the LM's codes through the audio detokenizer"
    assert any(step.startswith("quantized") and "int8" in step for step in dit["applied"])
    assert any("model offload" in step for step in phases["vae"]["applied"])
    assert phases["lm"]["vocabulary"] == 65_617 and phases["lm"]["audio_codes"].startswith(
        "64000 of the tokenizer's 65535"
    )
    # CFG: one decoder forward a step, each of twice the batch (conditional and unconditional rows)
    assert calls == [("decoder", 4)] * 3
    for clip in report["clips"]:
        with wave.open(clip["path"]) as wav:
            assert wav.getnchannels() == 2 and wav.getframerate() == SAMPLE_RATE
            assert abs(wav.getnframes() - clip["duration_s"] * SAMPLE_RATE) < 1920
        assert clip["codes"] == 50


def test_turbo_runs_one_forward_a_step_without_the_lm(checkpoints, tmp_path, capsys) -> None:
    code, report, calls = _generate(
        capsys, tmp_path / "turbo", "--checkpoints", str(checkpoints), "--lm", "none", "--duration", "10"
    )
    assert code == 0, report
    dit = {p["name"]: p["details"] for p in report["phases"]}["dit"]
    assert dit["forwards_per_step"] == 1 and dit["source"] == "the silence latent"
    assert calls == [("decoder", 1)] * 3
    assert report["resolution"]["plan"]["settings"]
    components = {s["key"]: s["value"] for s in report["resolution"]["plan"]["settings"]}["memory.components"]
    assert components["dit"]["parameters"] == sum(p.numel() for p in _loaded_turbo(checkpoints).parameters())


def _loaded_turbo(checkpoints: Path) -> torch.nn.Module:
    from acestep_core.runtime.models.loader import load_checkpoint

    return load_checkpoint(checkpoints / "acestep-v15-turbo").model


def test_a_folder_without_what_the_run_needs_is_refused_by_name(checkpoints, tmp_path, capsys) -> None:
    code = main(
        ["generate", "--checkpoints", str(checkpoints), "--lm", "1.7B", "--allow-lm", "1.7B", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "a run of DiT turbo, LM 1.7B needs acestep-5Hz-lm-1.7B, which the folder lacks" in err
    assert "acestep-core models --checkpoints" in err and "Traceback" not in err


def test_the_gpu_check_runs_dry_on_a_cpu(tmp_path) -> None:
    import runpy

    module = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "gpu_checkpoints.py"))
    assert module["main"]([str(tmp_path), "--dry-run"]) == 0
    report = json.loads((tmp_path / "gpu_checkpoints.json").read_text())
    assert report["dry_run"] and report["lm"]["vocabulary"] == 217_204
    assert report["xl"]["weights_planned_bytes"] == 9_976_541_560
    assert {row["variant"]: row["rows"] for row in report["xl"]["forwards"]} == {"xl-turbo": 1, "xl-sft": 2}
