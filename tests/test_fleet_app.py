"""The fleet's Serve application and command line without a Ray instance: the builder's typed arguments,
the config ``fleet serve --print-config`` writes, and the command line's strict flags."""

from __future__ import annotations

import argparse
import json
from typing import Any

import pytest
from conftest import device_reading

pytest.importorskip("ray.serve")
yaml = pytest.importorskip("yaml")

from acestep_core.cli import main  # noqa: E402
from acestep_core.runtime.fleet.app import (  # noqa: E402
    IMPORT_PATH,
    FleetArgs,
    options_of,
    reading_from_dict,
    specs_of,
)
from acestep_core.runtime.fleet.cli import UsageError, _check_slots, cluster_address  # noqa: E402
from acestep_core.types import to_jsonable  # noqa: E402


def print_config(capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    code = main(["fleet", "serve", "--simulate", "8,16,24", "--print-config", *flags])
    out = capsys.readouterr()
    assert code == 0, out.err
    return yaml.safe_load(out.out)


def test_print_config_writes_a_serve_config_for_the_builder(capsys: pytest.CaptureFixture[str]) -> None:
    config = print_config(capsys, "--port", "8123", "--limit", "max_caption_tokens=128", "--stages")
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8123}
    [application] = config["applications"]
    assert application["import_path"] == IMPORT_PATH == "acestep_core.runtime.fleet.app:app"
    assert application["name"] == "acestep-fleet" and application["route_prefix"] == "/"
    args = FleetArgs.model_validate(application["args"])
    assert [(c.name, c.simulate_gb, c.replicas) for c in args.classes] == [
        ("tier4", "8", 1),
        ("tier6", "16", 1),
        ("unlimited", "24", 1),
    ]
    assert args.stages and args.stage_gpus == 0.5 and args.ingress_replicas == 2
    options = options_of(args)
    assert options.limits.max_caption_tokens == 128 and options.limits.max_prompt_tokens == 1000


def test_the_printed_config_builds_the_same_classes_the_command_serves(capsys: pytest.CaptureFixture[str]) -> None:
    config = print_config(capsys, "--replicas", "2", "--autoscale", "1:3")
    specs = specs_of(FleetArgs.model_validate(config["applications"][0]["args"]))
    assert [(s.name, s.tier, s.replicas, s.autoscaling, dict(s.env)) for s in specs] == [
        ("tier4", "tier4", 2, (1, 3), {"MAX_CUDA_VRAM": "8"}),
        ("tier6", "tier6", 2, (1, 3), {"MAX_CUDA_VRAM": "16"}),
        ("unlimited", "unlimited", 2, (1, 3), {"MAX_CUDA_VRAM": "24"}),
    ]
    assert [s.reading.device.total_bytes for s in specs] == [8 * 2**30, 16 * 2**30, 24 * 2**30]


def test_a_class_of_real_cards_is_given_by_its_reading() -> None:
    reading = device_reading(16)
    data = json.loads(json.dumps(to_jsonable(reading)))
    assert reading_from_dict(data) == reading
    args = FleetArgs.model_validate(
        {"classes": [{"name": "a10g", "reading": data, "accelerator_type": "A10G", "replicas": 3}]}
    )
    [spec] = specs_of(args)
    assert (spec.tier, spec.replicas, dict(spec.resources)) == ("tier6", 3, {"accelerator_type:A10G": 0.001})
    with pytest.raises(ValueError, match="says tier 'tier4', but its card is 'tier6'"):
        specs_of(FleetArgs.model_validate({"classes": [{"name": "x", "tier": "tier4", "reading": data}]}))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "give the fleet's classes"),
        ({"simulate": ["8"], "classes": [{"name": "a", "simulate_gb": "8"}]}, "give the fleet's classes"),
        ({"simulate": ["8"], "replicas_per_class": 2}, "Extra inputs are not permitted"),
        ({"classes": [{"name": "a"}]}, "exactly one of simulate_gb or reading"),
        ({"classes": [{"name": "a", "simulate_gb": "8", "min_replicas": 3, "max_replicas": 1}]}, "min_replicas 3 >"),
        ({"simulate": ["8"], "limits": {"max_steps": 0}}, "greater than 0"),
        ({"simulate": ["8"], "stage_gpus": 2}, "less than or equal to 1"),
    ],
)
def test_the_builders_arguments_are_typed_and_checked(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetArgs.model_validate(args)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--limit", "nope=1"], "--limit takes NAME=VALUE"),
        (["--limit", "max_steps=0"], "--limit max_steps takes a positive integer"),
        (["--limit", "required=duration_s,colour"], "unknown field(s) colour"),
        (["--autoscale", "3:1"], "--autoscale takes MIN:MAX"),
        (["--stage-gpus", "1.5"], "--stage-gpus"),
        (["--port", "0"], "--port"),
    ],
)
def test_bad_serve_flags_exit_2_naming_the_flag(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["fleet", "serve", "--simulate", "8", "--print-config", *flags])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("sizes", ["８,16", "8,١٦", "8,nan", "8,0", "8,1e400", "8,"])
def test_simulated_sizes_are_read_as_vram_reads_them(sizes: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Full-width and Arabic-Indic digits, NaN, zero and overflow: float() takes several of these, a
    memory size does not (issue #18, class 5)."""
    with pytest.raises(SystemExit) as exited:
        main(["fleet", "serve", "--simulate", sizes, "--print-config"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--simulate takes GPU sizes" in err and "is not a memory size" in err and len(err.strip().splitlines()) == 1


def test_ray_address_is_the_cluster_and_too_few_slots_for_simulate_is_a_clear_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    args = argparse.Namespace(address=None)
    assert cluster_address(args, ["8", "16"]) == "10.0.0.1:6379"
    assert "RAY_ADDRESS=10.0.0.1:6379 is set" in capsys.readouterr().err

    class Scanned:
        gpus = ()

    with pytest.raises(UsageError, match=r"needs 2 GPU slots, but the cluster at 10\.0\.0\.1:6379 has 0"):
        _check_slots(Scanned(), ["8", "16"], "10.0.0.1:6379")
    _check_slots(Scanned(), ["8", "16"], None)  # a local instance declares the slots itself
