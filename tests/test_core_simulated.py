"""The simulated plugin: MAX_CUDA_VRAM / MAX_MPS_VRAM / MAX_XPU_VRAM and --vram."""

from __future__ import annotations

import pytest

from acestep_core import GIB, DetectOptions, resolve

BAD_VALUES = ["", "abc", "8GB", "-1", "0", "nan", "inf", "1e400", " ", "\t\n", "-inf", "0x8", "8,5"]


@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_bad_value_gives_one_message_and_real_detection_continues(make_manager, detected, value: str) -> None:
    real_card = detected(7.8)
    resolution = resolve(manager=make_manager(real_card), environ={"MAX_CUDA_VRAM": value})

    assert not resolution.reading.simulated
    assert resolution.decided_by("detect_memory") == "test_plugin_0"
    assert real_card.calls == 1
    assert resolution.tier.name == "tier4"  # from the real 7.8 GiB card, never from the garbage

    [message] = [warning for warning in resolution.warnings if "MAX_CUDA_VRAM" in warning]  # one message
    assert not any("simulation is on" in warning for warning in resolution.warnings)
    assert repr(value) in message
    assert "positive number of GB" in message and "real device is detected instead" in message
    assert "Traceback" not in message
    [problem] = resolution.problems
    assert (problem.plugin, problem.hook, problem.kind) == ("simulated", "detect_memory", "invalid-setting")


@pytest.mark.parametrize("value", BAD_VALUES)
def test_a_bad_value_on_a_machine_without_accelerator_falls_back_to_the_cpu(make_manager, value: str) -> None:
    resolution = resolve(manager=make_manager(), environ={"MAX_CUDA_VRAM": value})
    assert resolution.reading.device.backend == "cpu"
    assert resolution.tier.name == "tier1"


@pytest.mark.parametrize(("value", "gib"), [("8", 8.0), (" 12 ", 12.0), ("7.5", 7.5), ("1e1", 10.0), ("0.5", 0.5)])
def test_good_values_simulate_that_many_gib(make_manager, detected, value: str, gib: float) -> None:
    real_card = detected(80)
    resolution = resolve(manager=make_manager(real_card), environ={"MAX_CUDA_VRAM": value})
    device = resolution.reading.device
    assert device.simulated and device.backend == "cuda"
    assert device.total_bytes == int(gib * GIB)
    assert real_card.calls == 0  # simulation replaces detection
    assert resolution.decided_by("detect_memory") == "simulated"
    assert resolution.warnings[0].startswith(f"GPU memory simulation is on (MAX_CUDA_VRAM={value.strip()})")


@pytest.mark.parametrize(("variable", "backend"), [("MAX_MPS_VRAM", "mps"), ("MAX_XPU_VRAM", "xpu")])
def test_other_backends_simulate_too(make_manager, variable: str, backend: str) -> None:
    resolution = resolve(manager=make_manager(), environ={variable: "16"})
    assert resolution.reading.device.backend == backend
    assert resolution.tier.name == "tier6"
    assert variable in resolution.warnings[0]


def test_vram_option_wins_over_the_environment(make_manager) -> None:
    options = DetectOptions(vram_gb="12", environ={"MAX_CUDA_VRAM": "8"})
    resolution = resolve(manager=make_manager(), detect_options=options)
    assert resolution.tier.name == "tier5"
    assert "--vram=12" in resolution.warnings[0]


@pytest.mark.parametrize("value", ["abc", "0", "nan"])
def test_a_bad_vram_option_is_ignored_like_a_bad_variable(make_manager, detected, value: str) -> None:
    resolution = resolve(manager=make_manager(detected(15.5)), detect_options=DetectOptions(vram_gb=value))
    assert resolution.tier.name == "tier6" and not resolution.reading.simulated
    assert len([w for w in resolution.warnings if "--vram" in w]) == 1
    assert resolution.problems[0].error.startswith(f"--vram={value!r} is not a memory size")
