"""Evidence without two GPUs (issue #24): over every bundled multi-GPU recording and simulated 2×8, 2×12,
2×16, 8+24 and 4×24 GB machines × durations 30…600 s × batch 1…8 × the LM off or each size × the 2B turbo,
XL turbo and XL sft DiTs, no layout the resolution accepts (``auto``, or any layout ``auto`` compares given
as the user's ``--place``) is over any device's budget, each device's peak recomposed independently
(``benchmarks/placement_grid.py``). The counts, with how often upstream's rule would overcommit and how
often ``auto`` lifts a clamp, are printed."""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

import pytest

from acestep_core import DetectOptions, GenerationRequest, Overrides, resolve

GRID = Path(__file__).resolve().parents[1] / "benchmarks" / "placement_grid.py"


@pytest.fixture(scope="module")
def grid() -> dict[str, Any]:
    return runpy.run_path(str(GRID))


def test_the_independent_check_sees_a_layout_over_a_devices_budget(grid: dict[str, Any]) -> None:
    """The grid's own check is not vacuous: a layout forced over the LM card's budget is seen as over."""
    over = resolve(
        GenerationRequest(duration_s=600, batch_size=8, lm_model="4B", lm="on"),
        detect_options=DetectOptions(vram_gb="24,4", environ={}),
        place="lm:1,dit:0",
        overrides=Overrides(lm_models=("4B",), force=True),
        manager=grid["manager"](),
        environ={},
    )
    peaks = grid["device_peaks"](over)
    assert peaks["cuda:1"][0] > peaks["cuda:1"][1] and peaks["cuda:0"][0] <= peaks["cuda:0"][1]
    assert grid["over_any_budget"](over) and not grid["accepted"](over)  # forced: not an accepted layout
    fits = resolve(
        GenerationRequest(duration_s=600, batch_size=8, lm_model="0.6B", lm="on"),
        detect_options=DetectOptions(vram_gb="24,4", environ={}),
        place="lm:1,dit:0",
        manager=grid["manager"](),
        environ={},
    )
    assert grid["accepted"](fits) and not grid["over_any_budget"](fits)


def test_upstreams_rule_is_the_dit_stack_on_the_freest_card_and_the_lm_on_the_next(grid: dict[str, Any]) -> None:
    reading = resolve(detect_options=DetectOptions(vram_gb="8,24", environ={}), environ={}).reading
    assert grid["upstream_layout"](reading) == {
        "lm": "cuda:0",
        "text_encoder": "cuda:1",
        "dit": "cuda:1",
        "vae": "cuda:1",
    }


def test_no_accepted_layout_is_over_any_devices_budget(
    grid: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    counts = grid["grid"]()
    assert counts.machines == 7  # the recording in both CUDA orders, five simulated machines
    per_machine = len(grid["DURATIONS"]) * len(grid["BATCHES"]) * len(grid["LMS"]) * len(grid["DITS"])
    assert counts.requests == counts.machines * per_machine
    assert {"turbo", "xl-turbo", "xl-sft"} <= set(grid["DITS"])  # the 2B and the XL (issue #21)
    assert counts.layouts_checked > counts.requests and counts.layouts_accepted > 0
    assert counts.accepted_over_budget == 0, counts.over_examples
    assert counts.auto_lifts_a_clamp_of_every_single_card > 0  # two 8 GB cards run what one cannot
    with capsys.disabled():
        print(
            f"\nplacement grid: {counts.machines} machines × {counts.requests // counts.machines} requests; "
            f"{counts.layouts_checked} layouts resolved, {counts.layouts_accepted} accepted, "
            f"{counts.layouts_refused} refused, {counts.accepted_over_budget} accepted over a device's budget; "
            f"auto split {counts.auto_split}, lifted a clamp of the default card "
            f"{counts.auto_lifts_a_clamp_of_the_default_card} and of every single card "
            f"{counts.auto_lifts_a_clamp_of_every_single_card} times; "
            f"upstream's rule would overcommit {counts.upstream_overcommits} times"
        )
