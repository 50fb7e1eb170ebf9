"""The pipeline runs a layout (issue #24): each component on the device the resolution places it on,
what one phase hands the next moved once at the boundary, each phase reported on its device, and a
device that is gone since the plan one clear error.

On this CPU machine torch reaches no CUDA device, so a two-card layout runs every component on the CPU:
what is checked is the layout's code path (the device each component is built and run on, the
boundaries, the reports), against the layout; ``benchmarks/gpu_placement.py`` runs one on GPUs."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from acestep_core import COMPONENTS, DetectOptions, GenerationRequest, ResolutionError, resolve  # noqa: E402
from acestep_core.runtime.pipeline import run  # noqa: E402
from acestep_core.runtime.pipeline import session as session_module  # noqa: E402
from acestep_core.runtime.pipeline.session import DeviceGoneError, devices_for  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TWO_CARDS = DetectOptions(vram_gb="8,8", environ={})
LAYOUT = {"lm": "cuda:1", "text_encoder": "cuda:0", "dit": "cuda:0", "vae": "cuda:0"}


def two_card_resolution(**place: Any) -> Any:
    return resolve(
        GenerationRequest(duration_s=10, batch_size=2, lm_model="0.6B", lm="on"),
        detect_options=TWO_CARDS,
        place="lm:1,dit:0,vae:0,text_encoder:0",
        **place,
    )


def test_each_component_runs_on_the_device_the_layout_places_it_on(tmp_path, monkeypatch) -> None:
    resolution = two_card_resolution()
    assert dict(resolution.reading.placement) == LAYOUT
    built: dict[str, str] = {}
    apply_plan = session_module.apply_plan

    def recording_apply(model: Any, name: str, plan: Any, *, device: Any) -> Any:
        built[name] = str(device)
        return apply_plan(model, name, plan, device=device)

    monkeypatch.setattr(session_module, "apply_plan", recording_apply)
    mapped: list[dict[str, str]] = []
    devices_for_ = session_module.devices_for

    def recording_devices_for(resolution: Any) -> Any:
        devices = devices_for_(resolution)
        mapped.append({c: resolution.reading.device_of(c).key for c in COMPONENTS})
        return devices

    monkeypatch.setattr(session_module, "devices_for", recording_devices_for)
    sessions: list[session_module.RunSession] = []
    real_session = session_module.RunSession

    class Kept(real_session):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            sessions.append(self)

    monkeypatch.setattr(sys.modules["acestep_core.runtime.pipeline.run"], "RunSession", Kept)
    result = run(resolution, out_dir=tmp_path, steps=1, progress=False)
    [session] = sessions
    assert mapped == [LAYOUT]  # the session took each component's device from the layout
    phases = {phase.name: phase for phase in result.phases}
    assert {name: phase.details["placed_on"] for name, phase in phases.items()} == LAYOUT
    assert session.placed_on == LAYOUT
    # every component built on, and every phase run and measured on, the torch device of its placement
    assert built == {c: str(session.device_of(c)) for c in COMPONENTS}
    assert {name: phase.device for name, phase in phases.items()} == {c: str(session.device_of(c)) for c in COMPONENTS}
    # the three boundaries: each handed over once, to the consumer's device
    received = {what: hand for phase in result.phases for what, hand in phase.details.get("received", {}).items()}
    assert set(received) == {"conditioning", "codes", "latents"}
    assert {what: hand["placed"] for what, hand in received.items()} == {
        "conditioning": "cuda:0",
        "codes": "cuda:0",
        "latents": "cuda:0",
    }
    assert all(hand["to"] == str(session.device_of("dit")) for hand in received.values())
    assert any("places the components on 2 devices" in note or "running on the CPU" in note for note in result.notes)
    assert len(result.clips) == 2


def fake_torch(names: list[str], uuids: list[str] | None = None) -> SimpleNamespace:
    """A torch that reaches ``len(names)`` CUDA devices; counts what is asked of it (the mock is reached)."""
    asked: list[str] = []

    def count() -> int:
        asked.append("device_count")
        return len(names)

    def properties(index: int) -> SimpleNamespace:
        asked.append(f"properties {index}")
        return SimpleNamespace(uuid=(uuids or [""] * len(names))[index])

    cuda = SimpleNamespace(
        is_available=lambda: True,
        device_count=count,
        get_device_name=lambda index: names[index],
        get_device_properties=properties,
    )
    return SimpleNamespace(
        cuda=cuda, backends=SimpleNamespace(mps=SimpleNamespace(is_available=lambda: False)), asked=asked
    )


def replayed_two_gpus() -> Any:
    return resolve(
        GenerationRequest(duration_s=60, batch_size=1, lm_model="0.6B", lm="on"),
        detect_options=DetectOptions(replay="two-gpu-3060-4090", environ={}),
        place="lm:1,dit:0",
        manager=_with_cuda(),
    )


def _with_cuda() -> Any:
    import acestep_core_cuda
    import acestep_core_simulated
    import acestep_core_tiers_default

    from acestep_core import build_plugin_manager

    plugins = [
        ("tiers_default", acestep_core_tiers_default),
        ("simulated", acestep_core_simulated),
        ("cuda", acestep_core_cuda),
    ]
    return build_plugin_manager(environ={}, entry_points=[], plugins=plugins)


RTX4090 = "7f8e9d0c-aaaa-bbbb-cccc-ddddeeeeffff"
RTX3060 = "1a2b3c4d-1111-2222-3333-444455556666"


def test_the_layout_maps_each_component_to_its_cuda_ordinal() -> None:
    torch_ = fake_torch(["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3060"], [RTX4090, RTX3060])
    devices = devices_for(replayed_two_gpus(), torch_module=torch_)
    assert {c: str(d) for c, d in devices.items()} == {
        "lm": "cuda:1",
        "text_encoder": "cuda:0",
        "dit": "cuda:0",
        "vae": "cuda:0",
    }
    assert "properties 1" in torch_.asked  # each card's UUID was compared


def test_a_device_gone_since_the_plan_is_one_clear_error() -> None:
    resolution = replayed_two_gpus()
    with pytest.raises(DeviceGoneError) as gone:
        devices_for(resolution, torch_module=fake_torch(["NVIDIA GeForce RTX 4090"], [RTX4090]))
    message = str(gone.value)
    assert message.startswith(f"cuda:1 (NVIDIA GeForce RTX 3060, GPU-{RTX3060}), which the plan places the lm on")
    assert "torch sees 1 CUDA device (cuda:0 = NVIDIA GeForce RTX 4090)" in message
    assert isinstance(gone.value, ResolutionError)  # the CLI's one-line failure, exit 1
    other = fake_torch(["NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 3090"], [RTX4090, "0000aaaa-0000"])
    with pytest.raises(DeviceGoneError, match=r"is not the device at cuda:1 now .*GPU-0000aaaa-0000"):
        devices_for(resolution, torch_module=other)


def test_a_run_stops_before_loading_when_the_layout_is_over_a_device(tmp_path) -> None:
    """A user's layout over a card's budget is refused in the plan; the pipeline loads nothing for it."""
    resolution = resolve(
        GenerationRequest(duration_s=600, batch_size=8, lm_model="4B", lm="on"),
        detect_options=DetectOptions(vram_gb="24,4", environ={}),
        place="lm:1,dit:0",
        overrides=__import__("acestep_core").Overrides(lm_models=("4B",)),
    )
    refused = resolution.plan.value("ladder.refused")
    assert refused and refused["device"] == "cuda:1" and refused["phase"] == "lm"
    with pytest.raises(ResolutionError, match="cuda:1"):
        run(resolution, out_dir=tmp_path / "never", steps=1, progress=False)
    assert not (tmp_path / "never").exists()


def test_the_gpu_scripts_dry_run_runs_the_layout_on_the_cpu(tmp_path, monkeypatch) -> None:
    import json
    import runpy
    from pathlib import Path

    monkeypatch.setenv("ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_placement.py"
    module = runpy.run_path(str(script))
    assert module["main"]([str(tmp_path), "--dry-run", "--duration", "10", "--steps", "1"]) == 0
    report = json.loads((tmp_path / "gpu_placement.json").read_text())
    assert report["layout"]["placement"] == LAYOUT
    assert {name: phase["placed_on"] for name, phase in report["layout"]["phases"].items()} == LAYOUT
    assert report["layout"]["devices_match_the_layout"] is True


def test_a_run_over_two_cards_holds_both_cards(monkeypatch: pytest.MonkeyPatch) -> None:
    """The page runs one run at a time per device (``runs.lock_for``): a layout's run names every device
    it uses, in one order, so a run on cuda:0 + cuda:1 waits for a run on either (no GPU here: the
    simulated cards are mapped to the ordinals torch would use)."""
    monkeypatch.setattr(
        session_module,
        "torch_device",
        lambda backend, index=None, *, simulated=False, **_: session_module.torch.device(f"cuda:{index or 0}"),
    )
    resolution = resolve(
        GenerationRequest(duration_s=360, batch_size=4, lm_model="0.6B", lm="on"),
        detect_options=DetectOptions(vram_gb="8,8", environ={}),
        environ={},
    )
    assert resolution.reading.several_devices
    assert [str(d) for d in session_module.run_devices(resolution)] == ["cuda:0", "cuda:1"]
    alone = resolve(detect_options=DetectOptions(vram_gb="8,8", environ={}), environ={})
    assert [str(d) for d in session_module.run_devices(alone)] == ["cuda:0"]


def test_the_pages_run_waits_for_every_card_of_its_layout(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A page run whose layout uses cuda:0 and cuda:1 queues while another run holds cuda:1 (the LM's card),
    and nothing runs; its own locks are all released when it stops."""
    from acestep_core.runtime.ui.runs import RunRequest, Runs, run_generation

    monkeypatch.setattr(
        session_module,
        "torch_device",
        lambda backend, index=None, *, simulated=False, **_: session_module.torch.device(f"cuda:{index or 0}"),
    )
    resolution = resolve(
        GenerationRequest(duration_s=360, batch_size=4, lm_model="0.6B", lm="on"),
        detect_options=DetectOptions(vram_gb="8,8", environ={}),
        environ={},
    )
    assert resolution.reading.device_of("lm").key == "cuda:1" and resolution.reading.device.key == "cuda:0"
    runs = Runs(tmp_path)
    other = runs.lock_for("cuda:1")
    assert other.acquire(blocking=False)
    steps = run_generation(RunRequest(resolution, "tiny", 1, 0, "page", None), runs)
    first = next(steps)[0]
    assert "queued: another run is using cuda:1" in first
    assert runs.cancel("page")
    rest = [shown[0] for shown in steps]
    assert rest and "cancelled while waiting for the device; nothing ran" in rest[-1]
    other.release()
    assert runs.lock_for("cuda:0").acquire(blocking=False), "the DiT's card was released with the run"
