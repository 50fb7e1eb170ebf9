"""One vocabulary (issue #10 point 3): every shared constant is defined in acestep_core/vocabulary.py
and nowhere else; the modules that used to define their own copies now use these objects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from acestep_core import vocabulary
from acestep_core.vocabulary import PLAN_KEYS, PlanKey

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    path
    for folder in (ROOT / "acestep_core", ROOT / "plugins")
    for path in folder.rglob("*.py")
    if path.name != "vocabulary.py" and ".venv" not in path.parts
)

DUPLICATES = {
    "GIB": r"^\s*GIB\s*(:[^=]*)?=",
    "MIB": r"^\s*MIB\s*(:[^=]*)?=",
    "CODES_PER_SECOND": r"^\s*CODES_PER_SECOND\s*(:[^=]*)?=",
    "SAMPLE_RATE": r"^\s*SAMPLE_RATE\s*(:[^=]*)?=",
    "VAE_HOP": r"^\s*VAE_HOP\s*(:[^=]*)?=",
    "LATENT_RATE_HZ": r"^\s*LATENT_RATE_HZ\s*(:[^=]*)?=",
    "component tuples": r"^\s*(PHASES|COMPONENTS|COMPONENT_KINDS)\s*(:[^=]*)?=\s*\(",
    "LM sizes": r"^\s*LM_SIZES\s*(:[^=]*)?=",
    "duration bounds": r"^\s*M(IN|AX)_DURATION_S\s*(:[^=]*)?=",
    "CUDA context": r"(808\s*\*\s*MIB|CONTEXT_GB\s*=\s*0\.8)",
    "safety margin": r"(512\s*\*\s*MIB|MARGIN_GB\s*=\s*0\.5)",
    "VAE tile": r"(tile_frames\s*(:\s*int)?\s*=\s*256|tile_overlap\s*(:\s*int)?\s*=\s*32|overlap: int = 32|, "
    r"256\)\)|, 32\)\))",
    "value lists": r"^\s*(QUANTIZATIONS|OFFLOADS|ATTENTIONS|PRECISIONS)\s*(:[^=]*)?=\s*\(",
}


@pytest.mark.parametrize("what", DUPLICATES)
def test_the_old_duplicates_are_gone(what: str) -> None:
    pattern = re.compile(DUPLICATES[what], re.MULTILINE)
    found = [
        f"{path.relative_to(ROOT)}:{text[: match.start()].count(chr(10)) + 1}"
        for path in SOURCES
        for text in [path.read_text(encoding="utf-8")]
        for match in pattern.finditer(text)
    ]
    assert found == [], f"{what} is defined outside acestep_core/vocabulary.py"


def test_the_modules_share_the_vocabularys_objects() -> None:
    import acestep_core
    from acestep_core import tables, types
    from acestep_core.optimize import ladder, memory, plan, readings

    assert acestep_core.GIB is types.GIB is memory.GIB is vocabulary.GIB
    assert acestep_core.COMPONENTS is vocabulary.COMPONENTS and memory.PHASES is vocabulary.PHASES
    assert acestep_core.LM_SIZES is tables.LM_SIZES is vocabulary.LM_SIZES
    assert memory.CUDA_CONTEXT_BYTES == 808 * vocabulary.MIB and memory.SAFETY_MARGIN_BYTES == 512 * vocabulary.MIB
    assert ladder.MIN_DURATION_S == tables.MIN_DURATION_S == vocabulary.MIN_DURATION_S
    assert ladder.VAE_TILES[0] == (vocabulary.VAE_TILE_FRAMES, vocabulary.VAE_TILE_OVERLAP)
    assert readings.TILE_FRAMES_IN_READINGS == vocabulary.VAE_TILE_FRAMES
    assert plan.choices_from_plan({}).tile_frames == vocabulary.VAE_TILE_FRAMES
    assert acestep_core.PLAN_KEYS is vocabulary.PLAN_KEYS


def test_components_and_phases_run_in_one_order() -> None:
    assert vocabulary.COMPONENTS == ("lm", "text_encoder", "dit", "vae") == vocabulary.PHASES
    assert vocabulary.LATENT_RATE_HZ == 25 and vocabulary.CODES_PER_SECOND == 5


def test_literal_types_and_value_tuples_agree() -> None:
    assert get_args(vocabulary.Quantization) == vocabulary.QUANTIZATIONS
    assert get_args(vocabulary.Offload) == vocabulary.OFFLOADS
    assert get_args(vocabulary.Attention) == vocabulary.ATTENTIONS
    assert get_args(vocabulary.LmSize) == vocabulary.LM_SIZES


def test_every_plan_key_has_a_type_and_says_what_it_is() -> None:
    for key, spec in PLAN_KEYS.items():
        assert isinstance(spec, PlanKey) and str(spec) == spec.description and spec.description, key
    for component in vocabulary.COMPONENTS:
        assert PLAN_KEYS[f"offload.{component}"].choices == vocabulary.OFFLOADS
        assert PLAN_KEYS[f"precision.{component}"].choices == vocabulary.PRECISIONS
    assert PLAN_KEYS["compile"].check(True) is None and PLAN_KEYS["compile"].check(1) is not None
    assert PLAN_KEYS["vae.tile_frames"].check(0) is not None and PLAN_KEYS["vae.tile_frames"].check(64) is None
    assert PLAN_KEYS["lm.gpu_memory_ratio"].check(float("nan")) is not None
    assert PLAN_KEYS["ladder.refused"].check(False) is None and PLAN_KEYS["ladder.refused"].check(True) is not None
    assert not PLAN_KEYS["memory.phases"].settable and PLAN_KEYS["offload.vae"].settable


def test_adjustment_and_setting_are_one_kind_of_record() -> None:
    from acestep_core import Adjustment, Setting
    from acestep_core.types import Decided

    change = Adjustment("batch_size", 8, 2, "over the limit")
    setting = Setting("compile", False, "off on this tier")
    for record, subject, outcome in ((change, "batch_size", 2), (setting, "compile", False)):
        assert isinstance(record, Decided)
        assert (record.subject, record.outcome) == (subject, outcome)
        assert record.attributed("tiers_default").plugin == "tiers_default"
        assert record.attributed("x").attributed("y").plugin == "x"  # an author, once named, stays
