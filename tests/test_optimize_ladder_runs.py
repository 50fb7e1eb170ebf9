"""Every plan the ladder can produce runs: its rungs are walked one by one and each plan is run on the CPU
with the tiny models (bounded: 10 s clips, batch ≤ 2, two denoising steps)."""

from __future__ import annotations

import dataclasses

import pytest

from acestep_core import CPU, GIB, GenerationRequest, MemoryReading, Overrides
from acestep_core.optimize import Abilities, Choices, RunShape, device_budget
from acestep_core.optimize.ladder import steps
from acestep_core.optimize.memory import PHASES

torch = pytest.importorskip("torch")

from acestep_core.runtime.pipeline import generate  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ladder_walk() -> list[tuple[str, RunShape, Choices]]:
    """Each rung of a ladder asked to fit 240 s × 4 with the 4B LM into 1.5 GiB: every kind of rung is taken
    (tiles, offload, int8, streaming, smaller LMs, no LM, batch, duration) before it gives up."""
    run = RunShape(duration_s=240, batch=4, lm_model="4B", lm_choice="auto")
    walked = [
        (rung.name, after_run, after)
        for after_run, after, rung, _ in steps(run, Choices(), device_budget(int(1.5 * GIB)), Abilities())
    ]
    return walked


def test_the_walk_takes_every_kind_of_rung() -> None:
    # at each step the ladder takes the first rung, in its order, that lowers the peak (test_optimize_ladder
    # checks that order); as the peak moves between phases an earlier kind can become useful again
    names = [name for name, _, _ in ladder_walk()]
    kinds = [
        "vae.tiled",
        "offload.vae=model",
        "offload.lm=model",
        "quantization.lm=int8",
        "quantization.dit=int8",
        "quantization.text_encoder=int8",
        "offload.dit=group",
        "lm=1.7B",
        "lm=0.6B",
        "lm=off",
        "batch=2",
        "batch=1",
        "duration=",
    ]
    assert all(any(name.startswith(kind) for name in names) for kind in kinds), names
    assert names.index("lm=off") > names.index("lm=0.6B") > names.index("lm=1.7B") > names.index("vae.tiled")
    assert names.index("lm=off") < names.index("batch=2") < names.index("duration=10")


@pytest.mark.parametrize("step", range(len(ladder_walk())), ids=[name for name, _, _ in ladder_walk()])
def test_each_plan_on_the_ladder_runs_on_the_cpu(step: int, tmp_path, make_manager, detected) -> None:
    name, run, choices = ladder_walk()[step]
    plan = {
        "vae.decode": choices.vae_decode,
        "vae.tile_frames": choices.tile_frames,
        "vae.tile_overlap": choices.tile_overlap,
    }
    for component in PHASES:
        plan[f"precision.{component}"] = choices.precision[component]
        plan[f"quantization.{component}"] = choices.quantization[component]
        plan[f"offload.{component}"] = choices.offload[component]
    lm = {"lm": "off"} if run.lm_model is None else {"lm": "on", "lm_model": "0.6B"}  # the tiny LM runs either way
    request = GenerationRequest(duration_s=min(run.duration_s, 10), batch_size=min(run.batch, 2), **lm)
    # the CPU's own reading: the plan's savings are applied as they are (not dropped for a missing device)
    from acestep_core import resolve

    overrides = Overrides(plan=plan, max_batch=2, max_duration_s=10, lm_models=("0.6B",))
    resolution = resolve(request, overrides=overrides, manager=make_manager(detected(MemoryReading(device=CPU))))
    assert resolution.adjusted.batch_size == request.batch_size and resolution.adjusted.lm_on == (
        run.lm_model is not None
    )
    result = generate(resolution=resolution, out_dir=tmp_path, progress=False, steps=2)
    assert len(result.clips) == request.batch_size, name
    dit = next(p for p in result.phases if p.name == "dit")
    applied = " ".join(dit.details.get("applied", []))
    if choices.quantization["dit"] == "int8":
        # the plan's backend stores it (torchao where installed); quanto's CPU kernel needs contiguous inputs
        assert "quantized" in applied and f"({resolution.plan.value('quantization.backend')}," in applied
        assert ("contiguous inputs" in applied) == ("(quanto," in applied)
    if choices.offload["dit"] == "group":
        assert "group offload" in applied
    assert dataclasses.asdict(run)  # the walked run shaped the request above
