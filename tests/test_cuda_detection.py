"""The cuda plugin on recorded devices: memory figures, tiers, CUDA_VISIBLE_DEVICES / CUDA_DEVICE_ORDER
mapping, MIG, several GPUs, the device choice and memory other processes hold."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import acestep_core_cuda
import pytest
from acestep_core_cuda import detection
from acestep_core_cuda.replay import RecordedNvml, bundled_recordings, load_recording

import acestep_core.optimize
from acestep_core import GIB, DetectOptions, GenerationRequest, MemoryReading, resolve

H100_MEASURED = json.loads(
    (Path(acestep_core.optimize.__file__).parent / "measurements" / "h100-2026-11-26.json").read_text()
)

RTX3060 = "GPU-1a2b3c4d-1111-2222-3333-444455556666"
RTX4090 = "GPU-7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff"
MIG_2G = "MIG-3c9f7a1e-52d4-5b8e-a0f2-7e6d4c3b2a19"
MIG_3G = "MIG-8d2e6b4f-91a3-5c7d-b6e0-1f4a9c8d7e25"


def read(name: str, device: str | None = None, **environ: str) -> MemoryReading:
    return acestep_core_cuda.detect_memory(DetectOptions(device=device, replay=name, environ=environ))


def tier(make_manager, name: str, device: str | None = None, **environ: str) -> str:
    options = DetectOptions(device=device, replay=name, environ=environ)
    return resolve(manager=make_manager(("cuda", acestep_core_cuda)), detect_options=options, environ=environ).tier.name


# --------------------------------------------------------------------------------------------- recordings
EXPECTED = [
    # recording, device name, CUDA ordinal, total bytes, reserved bytes, tier
    ("h100-80gb", "NVIDIA H100 80GB HBM3", 0, 85_520_809_984, 503_316_480, "unlimited"),
    ("rtx4060ti-16gb", "NVIDIA GeForce RTX 4060 Ti", 0, 16376 * 2**20, 330 * 2**20, "tier6"),
    ("rtx4060-8gb", "NVIDIA GeForce RTX 4060", 0, 8188 * 2**20, None, "tier4"),
    ("two-gpu-3060-4090", "NVIDIA GeForce RTX 4090", 0, 24564 * 2**20, 418 * 2**20, "unlimited"),
    ("h100-mig-2g20gb", "NVIDIA H100 80GB HBM3 MIG 2g.20gb", 0, 19968 * 2**20, None, "tier6"),
]


@pytest.mark.parametrize(("name", "device_name", "index", "total", "reserved", "tier_name"), EXPECTED)
def test_each_recording_gives_its_device_figures_and_tier(
    make_manager, name, device_name, index, total, reserved, tier_name
) -> None:
    device = read(name).device
    assert (device.backend, device.name, device.index) == ("cuda", device_name, index)
    assert device.total_bytes == total
    assert device.reserved_bytes == reserved
    assert 0 < device.free_bytes <= total
    assert "NVML" in device.sources["total_bytes"] and "replay of" in device.sources["total_bytes"]
    assert tier(make_manager, name) == tier_name


def test_every_bundled_recording_is_covered() -> None:
    from test_platforms import PLATFORM_RECORDINGS  # the Apple, AMD, Intel, older NVIDIA and no-NVML recordings

    covered = {row[0] for row in EXPECTED} | set(PLATFORM_RECORDINGS) | {"apple-m2-pro-mps", "cpu-only"}
    assert set(bundled_recordings()) == covered


def test_h100_recording_matches_the_measurement() -> None:
    device = read("h100-80gb").device
    measured = H100_MEASURED["nvml"]["devices"][0]
    assert device.total_bytes == measured["v2"]["total"] == 85_520_809_984
    assert device.reserved_bytes == measured["v2"]["reserved"] == 503_316_480
    assert device.free_bytes == measured["v2"]["free"]
    # torch's total_memory is NVML's total minus the reservation
    assert device.total_bytes - device.reserved_bytes == H100_MEASURED["torch"]["total_memory"] == 85_017_493_504
    assert device.uuid == measured["uuid"]
    assert device.compute_capability == (9, 0)
    assert device.pci_bus_id == "00000000:00:06.0"
    assert not device.mig and not device.unified_memory and not device.simulated
    assert "580.159.04" in device.sources["driver"]


def test_the_16gb_card_counts_as_16gb_and_the_8gb_card_as_8gb() -> None:
    assert read("rtx4060ti-16gb").device.total_bytes / GIB == pytest.approx(15.99, abs=0.005)
    assert read("rtx4060-8gb").device.total_bytes / GIB == pytest.approx(7.996, abs=0.001)


def test_v1_only_driver_leaves_the_reservation_unknown() -> None:
    device = read("rtx4060-8gb").device
    assert device.reserved_bytes is None
    assert "v1" in device.sources["total_bytes"] and "reserved_bytes" not in device.sources


# --------------------------------------------------------------------------------------------- mapping
def test_default_order_puts_the_faster_card_first_and_says_it_is_an_estimate() -> None:
    reading = read("two-gpu-3060-4090")
    assert [(d.index, d.uuid) for d in reading.visible] == [(0, RTX4090), (1, RTX3060)]
    assert any("estimate" in note and "PCI_BUS_ID" in note for note in reading.notes)
    assert any("2 devices visible" in note and "cuda:0" in note for note in reading.notes)


def test_pci_bus_id_order_follows_nvml_and_is_exact(make_manager) -> None:
    reading = read("two-gpu-3060-4090", CUDA_DEVICE_ORDER="PCI_BUS_ID")
    assert [(d.index, d.uuid) for d in reading.visible] == [(0, RTX3060), (1, RTX4090)]
    assert not any("estimate" in note for note in reading.notes)
    assert tier(make_manager, "two-gpu-3060-4090", CUDA_DEVICE_ORDER="PCI_BUS_ID") == "tier5"


def test_unknown_device_order_is_cuda_default_with_a_note() -> None:
    reading = read("two-gpu-3060-4090", CUDA_DEVICE_ORDER="SLOWEST")
    assert reading.device.uuid == RTX4090
    assert any("'SLOWEST' is neither" in note for note in reading.notes)


VISIBLE_FORMS = [
    # CUDA_VISIBLE_DEVICES, CUDA_DEVICE_ORDER, visible UUIDs in ordinal order, a note that must appear
    ("0", "PCI_BUS_ID", [RTX3060], None),
    ("1", "PCI_BUS_ID", [RTX4090], None),
    ("1,0", "PCI_BUS_ID", [RTX4090, RTX3060], None),
    ("0", "FASTEST_FIRST", [RTX4090], None),  # indices count in CUDA's order, not NVML's
    (" 1 , 0 ", "PCI_BUS_ID", [RTX4090, RTX3060], None),
    ("1gpu", "PCI_BUS_ID", [RTX4090], None),  # read like strtoul, as CUDA does
    (RTX3060, "", [RTX3060], None),
    ("GPU-7f8e", "", [RTX4090], None),  # an unambiguous prefix
    (f"GPU-7f8e,{RTX3060}", "", [RTX4090, RTX3060], None),
    ("0,-1,1", "PCI_BUS_ID", [RTX3060], "entry '-1'"),  # an invalid entry ends the list
    ("0,7,1", "PCI_BUS_ID", [RTX3060], "is index 7, but there are only 2"),
    ("GPU-,0", "", [], "ambiguous UUID prefix"),
    ("GPU-ffff", "", [], "matches no device"),
    ("MIG-1234", "", [], "matches no device"),
    ("abc", "", [], "neither an index nor"),
    ("0,0", "PCI_BUS_ID", [], "twice"),
    (f"1,{RTX4090}", "PCI_BUS_ID", [], "twice"),
    ("", "", [], "is empty"),
    ("  ", "", [], "is empty"),
]


@pytest.mark.parametrize(("visible", "order", "expected", "note"), VISIBLE_FORMS)
def test_every_cuda_visible_devices_form(visible: str, order: str, expected: list[str], note: str | None) -> None:
    environ = {"CUDA_VISIBLE_DEVICES": visible} | ({"CUDA_DEVICE_ORDER": order} if order else {})
    reading = acestep_core_cuda.detect_memory(DetectOptions(replay="two-gpu-3060-4090", environ=environ))
    assert [d.uuid for d in reading.visible] == expected
    assert [d.index for d in reading.visible] == list(range(len(expected)))
    if expected:
        assert reading.device.uuid == expected[0]
    else:
        assert reading.device.backend == "cpu"
        assert any("no NVIDIA GPU is visible to CUDA" in n and "NVML sees 2" in n for n in reading.notes)
    if note:
        assert any(note in n for n in reading.notes), reading.notes


def test_uuids_in_the_list_make_the_mapping_exact_whatever_the_order() -> None:
    reading = read("two-gpu-3060-4090", CUDA_VISIBLE_DEVICES=f"{RTX3060},{RTX4090}")
    assert [d.uuid for d in reading.visible] == [RTX3060, RTX4090]
    assert not any("estimate" in note for note in reading.notes)


@pytest.mark.parametrize(("visible", "chosen"), [("1", RTX3060), ("0", RTX4090), ("1,0", RTX3060)])
def test_an_index_into_an_estimated_order_still_says_the_choice_rests_on_the_estimate(
    visible: str, chosen: str
) -> None:
    """One GPU left visible is still picked by its place in the estimated order (the README's
    ``CUDA_VISIBLE_DEVICES=1`` example): the warning stays, and names the GPU it rests on."""
    reading = read("two-gpu-3060-4090", CUDA_VISIBLE_DEVICES=visible)
    assert reading.device.uuid == chosen
    assert any("estimate" in note and "PCI_BUS_ID" in note for note in reading.notes)
    assert any(f"CUDA_VISIBLE_DEVICES={visible!r} picks GPUs by position" in n and chosen in n for n in reading.notes)
    exact = read("two-gpu-3060-4090", CUDA_VISIBLE_DEVICES=visible, CUDA_DEVICE_ORDER="PCI_BUS_ID")
    assert not any("estimate" in note for note in exact.notes)


def test_index_matches_uuid_not_nvml_index() -> None:
    """NVML index 0 is the 3060; under the default order cuda:0 is the 4090. The reading says which."""
    reading = read("two-gpu-3060-4090", CUDA_VISIBLE_DEVICES="0")
    assert reading.device.uuid == RTX4090
    assert "NVML GPU 1" in reading.device.sources["index"]


# --------------------------------------------------------------------------------------------- MIG
def test_mig_reports_the_slice_not_the_parent() -> None:
    reading = read("h100-mig-2g20gb")
    device = reading.device
    assert device.mig and device.uuid == MIG_2G
    assert device.total_bytes / GIB == pytest.approx(19.5)
    assert device.pci_bus_id == "00000000:00:06.0"
    assert "MIG instance" in device.sources["total_bytes"]
    assert [d.uuid for d in reading.visible] == [MIG_2G]
    assert any("one MIG instance per process" in note for note in reading.notes)


def test_mig_instance_by_uuid_and_prefix(make_manager) -> None:
    assert read("h100-mig-2g20gb", CUDA_VISIBLE_DEVICES=MIG_3G).device.uuid == MIG_3G
    assert read("h100-mig-2g20gb", CUDA_VISIBLE_DEVICES="MIG-8d2e").device.total_bytes / GIB == pytest.approx(39.5)
    assert tier(make_manager, "h100-mig-2g20gb", CUDA_VISIBLE_DEVICES=MIG_3G) == "unlimited"
    assert tier(make_manager, "h100-mig-2g20gb") == "tier6"


def test_mig_parent_by_index_exposes_its_first_instance() -> None:
    reading = read("h100-mig-2g20gb", CUDA_VISIBLE_DEVICES="0")
    assert reading.device.uuid == MIG_2G


def test_legacy_mig_form_is_refused_with_advice() -> None:
    reading = read("h100-mig-2g20gb", CUDA_VISIBLE_DEVICES="MIG-GPU-ca2e940d/1/0")
    assert reading.device.backend == "cpu"
    assert any("legacy MIG-GPU-" in note for note in reading.notes)


def test_mig_on_with_no_instance_shows_nothing(tmp_path) -> None:
    data = json.loads(
        load_recording("h100-mig-2g20gb").path and Path(load_recording("h100-mig-2g20gb").path).read_text()
    )
    data["nvml"]["gpus"][0]["mig_devices"] = []
    path = tmp_path / "empty-mig.json"
    path.write_text(json.dumps(data))
    reading = read(str(path))
    assert reading.device.backend == "cpu"
    assert any("no MIG instance" in note for note in reading.notes)


# --------------------------------------------------------------------------------------------- choice
@pytest.mark.parametrize(
    ("selector", "uuid"),
    [
        (None, RTX4090),
        ("0", RTX4090),
        ("1", RTX3060),
        (RTX3060, RTX3060),
        ("GPU-1a2b", RTX3060),
        ("1a2b", RTX3060),
        ("7F8E9D0C", RTX4090),
    ],
)
def test_device_choice_by_index_or_uuid(selector: str | None, uuid: str) -> None:
    reading = read("two-gpu-3060-4090", device=selector)
    assert reading.device.uuid == uuid
    assert len(reading.visible) == 2
    assert reading.device in reading.visible
    if selector is not None:
        assert any(f"chosen by device {selector!r}" in note for note in reading.notes)


@pytest.mark.parametrize("selector", ["2", "GPU-ffff", "GPU-"])
def test_device_choice_that_matches_nothing_says_so_and_uses_cuda0(selector: str) -> None:
    reading = read("two-gpu-3060-4090", device=selector)
    assert reading.device.index == 0
    assert any(f"device {selector!r} not used" in note for note in reading.notes)


def test_device_choice_changes_the_tier(make_manager) -> None:
    assert tier(make_manager, "two-gpu-3060-4090", device="1") == "tier5"
    assert tier(make_manager, "two-gpu-3060-4090", device=RTX4090) == "unlimited"


# --------------------------------------------------------------------------------------------- in use
def _with_used(used_gib: float, name: str = "rtx4060ti-16gb") -> dict[str, Any]:
    data = copy.deepcopy(dict(load_recording(name).data))
    v2 = data["nvml"]["gpus"][0]["memory_v2"]
    v2["used"] = int(used_gib * GIB)
    v2["free"] = v2["total"] - v2["reserved"] - v2["used"]
    return data


def test_memory_held_by_others_is_reported_and_sizes_the_lm(make_manager, tmp_path) -> None:
    path = tmp_path / "busy.json"
    path.write_text(json.dumps(_with_used(6.0)))
    options = DetectOptions(replay=str(path))
    resolution = resolve(
        GenerationRequest(lm_model="4B"),
        manager=make_manager(("cuda", acestep_core_cuda)),
        detect_options=options,
        environ={},
    )
    device = resolution.reading.device
    assert acestep_core_cuda.memory_in_use(device) == int(6.0 * GIB)
    assert any("6.00 GiB" in note and "already in use" in note for note in resolution.reading.notes)
    assert resolution.tier.name == "tier6"  # the tier follows the total
    assert resolution.adjusted.lm_model == "4B"  # tier 6 allots 12 GB to the 4B LM; 9.67 GiB is free
    setting = resolution.plan["lm.gpu_memory_ratio"]
    assert setting.plugin == "cuda"
    assert setting.value == pytest.approx(0.9 * device.free_bytes / device.total_bytes, abs=1e-3)


def test_a_little_memory_in_use_leaves_the_lm_share_to_the_tier(make_manager, tmp_path) -> None:
    path = tmp_path / "desktop.json"
    path.write_text(json.dumps(_with_used(1.0)))  # 14.67 GiB free: the 12 GB allotment fits in 90% of it
    resolution = resolve(
        GenerationRequest(lm_model="4B"),
        manager=make_manager(("cuda", acestep_core_cuda)),
        detect_options=DetectOptions(replay=str(path)),
        environ={},
    )
    assert any("already in use" in note for note in resolution.reading.notes)
    assert resolution.plan["lm.gpu_memory_ratio"].plugin == "tiers_default"


def test_an_idle_gpu_has_no_in_use_note() -> None:
    reading = read("h100-80gb")
    assert acestep_core_cuda.memory_in_use(reading.device) == 0
    assert reading.notes == ()


# --------------------------------------------------------------------------------------------- NVML object
def test_nvml_is_shut_down_after_reading(monkeypatch) -> None:
    fake = RecordedNvml(load_recording("two-gpu-3060-4090").data["nvml"])
    monkeypatch.setattr(detection, "nvml_source", lambda: fake)
    reading = acestep_core_cuda.detect_memory(DetectOptions(environ={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}))
    assert reading.device.uuid == RTX3060
    assert fake.initialised == 0


def test_a_lost_gpu_is_left_out_and_named(monkeypatch) -> None:
    section = copy.deepcopy(dict(load_recording("two-gpu-3060-4090").data["nvml"]))
    section["gpus"][1]["lost"] = True
    monkeypatch.setattr(detection, "nvml_source", lambda: RecordedNvml(section))
    reading = acestep_core_cuda.detect_memory(DetectOptions())
    assert [d.uuid for d in reading.visible] == [RTX3060]
    assert any("could not read GPU 1" in note and "GpuIsLost" in note for note in reading.notes)


def test_a_gpu_without_memory_figures_gets_the_smallest_tier_and_advice(make_manager, monkeypatch) -> None:
    section = copy.deepcopy(dict(load_recording("rtx4060-8gb").data["nvml"]))
    section["gpus"][0]["memory_v1"] = None
    monkeypatch.setattr(detection, "nvml_source", lambda: RecordedNvml(section))
    resolution = resolve(manager=make_manager(("cuda", acestep_core_cuda)), environ={})
    assert resolution.reading.device.total_bytes is None
    assert resolution.tier.name == "tier1"
    assert any("MAX_CUDA_VRAM" in note for note in resolution.reading.notes)
