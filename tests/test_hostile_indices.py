"""Indices and numbers are read in ASCII digits everywhere (issue #18, class 5).

``str.isdigit`` accepts ``'²'`` and ``'١'``, ``int('١')`` is 1 and ``float('８')`` is 8.0: a device
index, a CUDA_VISIBLE_DEVICES entry, a memory size or a flag's number written in other digits is no
index or number, and where an entry is read only in part (CUDA reads ``0abc`` as 0, like C's strtoul)
or not at all, the reading says so."""

from __future__ import annotations

import json

import acestep_core_cuda
import pytest
from acestep_core_cuda.fallbacks import read_torch_cuda
from acestep_core_cuda.replay import load_recording, recorded_torch

from acestep_core import DetectOptions, MemoryReading
from acestep_core.inputs import parse_memory_gb

TWO_GPUS = "two-gpu-3060-4090"
RTX3060 = "GPU-1a2b3c4d-1111-2222-3333-444455556666"
RTX4090 = "GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff"
NOT_ASCII = ["１", "²", "١", "٣", "߁", "𝟏", "0１"]
"""Full-width 1, superscript 2 (isdigit but not int), Arabic-Indic 1 and 3, N'Ko 1, mathematical bold 1, mixed."""


def read(device: str | None = None, **environ: str) -> MemoryReading:
    return acestep_core_cuda.detect_memory(DetectOptions(device=device, replay=TWO_GPUS, environ=environ))


# --------------------------------------------------------------------------------------------- the parser
@pytest.mark.parametrize(("text", "index"), [("0", 0), ("1", 1), (" 12 ", 12), ("007", 7)])
def test_ascii_digits_are_an_index(text: str, index: int) -> None:
    from acestep_core.inputs import parse_index

    assert parse_index(text) == index


@pytest.mark.parametrize("text", [*NOT_ASCII, "", " ", "-1", "+1", "1.0", "0x1", "1e2", "1_0"])
def test_anything_else_is_no_index(text: str) -> None:
    from acestep_core.inputs import parse_index

    assert parse_index(text) is None


# --------------------------------------------------------------------------------------------- --device
@pytest.mark.parametrize("selector", NOT_ASCII)
def test_a_device_in_other_digits_is_a_usage_error(cli, selector: str) -> None:
    """'١' once chose cuda:1 (int reads it), '²' crashed with ValueError (isdigit accepts it)."""
    outcome = cli("info", "--replay", TWO_GPUS, "--device", selector, cuda=True)
    assert outcome.code == 2 and "Traceback" not in outcome.text and outcome.out == ""
    [line] = outcome.err.strip().splitlines()
    assert "--device" in line and "not an index (digits 0-9)" in line and "RTX 4090" in line


@pytest.mark.parametrize(("selector", "uuid"), [("0", RTX4090), ("00", RTX4090), (" 1 ", RTX3060)])
def test_a_device_in_ascii_digits_is_chosen(cli, selector: str, uuid: str) -> None:
    outcome = cli("info", "--json", "--replay", TWO_GPUS, "--device", selector, cuda=True)
    assert outcome.code == 0, outcome.text
    assert json.loads(outcome.out)["reading"]["device"]["uuid"] == uuid


@pytest.mark.parametrize("selector", NOT_ASCII)
def test_the_plugin_says_a_device_in_other_digits_is_not_used(selector: str) -> None:
    reading = read(device=selector)
    assert reading.device.uuid == RTX4090, "cuda:0, never the device int() would read"
    assert any(f"device {selector!r} not used" in n and "neither an index" in n for n in reading.notes)


@pytest.mark.parametrize("selector", ["١", "１"])
def test_the_torch_fallback_does_not_read_other_digits(selector: str) -> None:
    section = load_recording("rtx3090-no-nvml").data["torch"]
    two = dict(section, cuda_devices=section["cuda_devices"] * 2)
    found = read_torch_cuda(recorded_torch(two), selector)
    assert found is not None
    _, chosen, notes = found
    assert chosen == 0 and any("matches no single visible" in n for n in notes)


def test_a_simulated_device_zero_in_any_ascii_spelling_is_applied(cli) -> None:
    for selector in ("0", "00", " 0"):
        outcome = cli("info", "--json", "--vram", "8", "--device", selector)
        assert not any("--device" in w for w in json.loads(outcome.out)["warnings"]), selector
    outcome = cli("info", "--json", "--vram", "8", "--device", "０")
    assert any("--device ０ is not applied" in w for w in json.loads(outcome.out)["warnings"])


# --------------------------------------------------------------------------------------------- CUDA_VISIBLE_DEVICES
@pytest.mark.parametrize(
    ("visible", "expected", "note"),
    [
        ("１", [], "entry '１' is neither an index nor"),
        ("²", [], "entry '²' is neither an index nor"),
        ("0,١", [RTX3060], "entry '١' is neither an index nor"),
        ("1,𝟏,0", [RTX4090], "entry '𝟏'"),
        ("\u00a00", [], "is neither an index nor"),  # strtoul skips only C's spaces
        ("0abc", [RTX3060], "entry '0abc' is read as index 0"),
        ("1gpu2,0", [RTX4090, RTX3060], "entry '1gpu2' is read as index 1"),
        ("0١", [RTX3060], "ignores '١'"),
        ("+1", [RTX4090], None),
        (" 1 ,\t0", [RTX4090, RTX3060], None),
    ],
)
def test_visible_devices_are_read_in_ascii_digits_as_cuda_reads_them(visible: str, expected: list[str], note) -> None:
    reading = read(CUDA_VISIBLE_DEVICES=visible, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    assert [d.uuid for d in reading.visible] == expected
    if note is not None:
        assert any(note in n for n in reading.notes), reading.notes


def test_a_whole_index_says_nothing_more() -> None:
    reading = read(CUDA_VISIBLE_DEVICES="1,0", CUDA_DEVICE_ORDER="PCI_BUS_ID")
    assert not any("is read as index" in n for n in reading.notes)


# --------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("text", ["８", "１６", "٨", "8\u0660"])
def test_a_memory_size_in_other_digits_is_no_size(text: str) -> None:
    """float('８') is 8.0: MAX_CUDA_VRAM=８ once simulated an 8 GB card."""
    with pytest.raises(ValueError, match="not a number"):
        parse_memory_gb(text)


def test_a_simulation_variable_in_other_digits_is_one_warning(cli) -> None:
    outcome = cli("info", "--json", env={"MAX_CUDA_VRAM": "８"})
    data = json.loads(outcome.out)
    assert outcome.code == 0 and not data["reading"]["device"]["simulated"]
    assert [w for w in data["warnings"] if "MAX_CUDA_VRAM='８' is not a memory size (not a number)" in w]


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["plan", "--batch", "２"], "--batch"),
        (["plan", "--duration", "６０"], "--duration"),
        (["info", "--vram", "８"], "--vram"),
        (["plan", "--max-batch", "٢"], "--max-batch"),
    ],
)
def test_a_flags_number_in_other_digits_is_a_usage_error(cli, argv: list[str], flag: str) -> None:
    outcome = cli(*argv)
    assert outcome.code == 2 and flag in outcome.err and "Traceback" not in outcome.text


def test_a_detect_timeout_in_other_digits_is_the_default() -> None:
    from acestep_core.plugins import detect_timeout

    assert detect_timeout(DetectOptions(environ={"ACESTEP_CORE_DETECT_TIMEOUT": "１"})) == 10.0
    assert detect_timeout(DetectOptions(environ={"ACESTEP_CORE_DETECT_TIMEOUT": "1"})) == 1.0
