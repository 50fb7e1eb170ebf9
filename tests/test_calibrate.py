"""calibrate's search and table logic against a fake device that runs out of memory above a known
size; and one real (tiny-model, CPU) run of the whole command."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from acestep_core_tiers_default import default_table
from hypothesis import given, settings
from hypothesis import strategies as st

from acestep_core.runtime.calibrate import (
    RAW_FILE,
    TABLE_FILE,
    CalibrationConfig,
    Calibrator,
    FootprintBackend,
    Trial,
    choose_corner,
    staircase,
)
from acestep_core.tables import load_table
from acestep_core.types import GIB

DURATIONS = (60, 240, 600)
BATCHES = (1, 2, 4, 8)
WEIGHTS_GB = {"lm:0.6B": 1.2, "lm:1.7B": 3.4, "dit": 4.7, "vae:tiled": 0.4, "vae:full": 0.4}
PER_ITEM_MINUTE_GB = {"lm:0.6B": 0.05, "lm:1.7B": 0.08, "dit": 0.2, "vae:tiled": 0.0, "vae:full": 1.0}
PER_ITEM_GB = {"vae:tiled": 0.3}


def footprint(trial: Trial) -> int:
    gb = WEIGHTS_GB[trial.phase] + trial.batch * (
        PER_ITEM_MINUTE_GB[trial.phase] * trial.duration_s / 60 + PER_ITEM_GB.get(trial.phase, 0)
    )
    return int(gb * GIB)


def fits_by_hand(card: float, phase: str, duration: int, batch: int) -> bool:
    return footprint(Trial(card, phase, duration, batch)) <= int((card - 0.8 - 0.5) * GIB)


def test_staircase_finds_every_largest_batch_in_few_trials() -> None:
    calls = []

    def fits(duration: int, batch: int) -> bool:
        calls.append((duration, batch))
        return duration * batch <= 1000

    assert staircase(DURATIONS, BATCHES, fits) == {600: 1, 240: 4, 60: 8}
    assert len(calls) <= len(DURATIONS) + len(BATCHES)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(10, 600), min_size=1, max_size=6, unique=True),
    st.lists(st.integers(1, 16), min_size=1, max_size=6, unique=True),
    st.floats(0, 20_000),
)
def test_staircase_agrees_with_trying_everything(durations: list[int], batches: list[int], budget: float) -> None:
    def fits(duration: int, batch: int) -> bool:
        return duration * (batch + 3) <= budget

    expected = {d: max([b for b in batches if fits(d, b)], default=0) for d in durations}
    assert staircase(durations, batches, fits) == expected


def test_choose_corner_maximises_audio_and_respects_the_floor() -> None:
    frontier = {60: 8, 240: 2, 600: 1}
    assert choose_corner(frontier) == (600, 1)  # 600 > 480 > 480
    assert choose_corner(frontier, floor=(60, 4)) == (60, 8)
    assert choose_corner({60: 0, 240: 0}) is None


def calibrate(tmp_path: Path, **config: object) -> tuple[Calibrator, object]:
    backend = FootprintBackend(footprint)
    calibrator = Calibrator(
        backend,
        CalibrationConfig(durations_s=DURATIONS, batches=BATCHES, **config),
        tmp_path,
        base_table=default_table(),
        progress=False,
    )
    return calibrator, calibrator.run()


def test_fake_device_limits_match_the_known_sizes(tmp_path: Path) -> None:
    _, result = calibrate(tmp_path)
    assert result.complete
    for card in result.cards:
        for phase, frontier in card.frontiers.items():
            for duration, batch in frontier.items():
                assert batch == max(
                    [b for b in BATCHES if fits_by_hand(card.card_gb, phase, duration, b)], default=0
                ), (card.card_gb, phase, duration)
        duration, batch = card.without_lm
        assert fits_by_hand(card.card_gb, "dit", duration, batch) and fits_by_hand(
            card.card_gb, "vae:tiled", duration, batch
        )
        if card.with_lm:
            for size in card.lm_models:
                assert fits_by_hand(card.card_gb, f"lm:{size}", *card.with_lm)
    by_card = {c.card_gb: c for c in result.cards}
    # 8 GB: cap 6.7; the DiT (4.7 + 0.2·min·b) runs 10 min × 1 (6.7) but not 10 min × 2
    assert by_card[8].without_lm == (600, 1)
    # 16 GB: cap 14.7: the DiT runs 10 min × 4 (12.7), the tiled VAE batch 8 (2.8)
    assert by_card[16].without_lm == (600, 4)
    assert by_card[16].lm_models == ("0.6B", "1.7B")
    assert by_card[16].lm_memory_gb["1.7B"] == pytest.approx(3.4 + 4 * 0.8, abs=0.11)
    table = load_table(tmp_path / TABLE_FILE)
    assert table.tier("cal8").max_duration_without_lm_s == 600 and table.tier("cal16").max_batch_without_lm == 4
    assert table.tier("cal16").max_gb == 24 and table.tiers[-1].name == "unlimited"
    raw = json.loads((tmp_path / RAW_FILE).read_text())
    assert raw["complete"] and raw["environment"]["device"] == "fake device"
    assert {m["phase"] for m in raw["measurements"]} == {"lm:0.6B", "lm:1.7B", "dit", "vae:tiled", "vae:full"}
    assert all(m["fits"] == (m["peak_bytes"] is not None) for m in raw["measurements"])


def test_bounded_trial_count(tmp_path: Path) -> None:
    _, result = calibrate(tmp_path)
    searches = len(result.cards) * 5
    assert result.trials_run <= searches * (len(DURATIONS) + len(BATCHES)) + 2 * len(result.cards)
    assert result.trials_run < len(result.cards) * 5 * len(DURATIONS) * len(BATCHES)


def test_limits_never_fall_as_memory_grows(tmp_path: Path) -> None:
    _, result = calibrate(tmp_path, cards_gb=(6, 8, 10, 12, 16, 20))
    for lower, upper in itertools.pairwise(c for c in result.cards if c.without_lm):
        assert upper.without_lm[0] >= lower.without_lm[0] and upper.without_lm[1] >= lower.without_lm[1]
        assert set(lower.lm_models) <= set(upper.lm_models)
    load_table(tmp_path / TABLE_FILE)  # valid: coverage, monotone limits, LM allocations that fit


def test_resume_skips_what_was_measured(tmp_path: Path) -> None:
    backend = FootprintBackend(footprint)
    config = CalibrationConfig(durations_s=DURATIONS, batches=BATCHES)
    interrupted = Calibrator(
        backend, config, tmp_path, deadline_s=0.0, base_table=default_table(), progress=False
    ).run()
    assert not interrupted.complete and interrupted.table is None and not (tmp_path / TABLE_FILE).exists()
    first = Calibrator(backend, config, tmp_path, base_table=default_table(), progress=False).run()
    assert first.complete and first.trials_run > 0
    assert first.trials_reused == len(interrupted.measurements), "only the interrupted run's rows are reused"
    calls = len(backend.calls)
    again = Calibrator(backend, config, tmp_path, base_table=default_table(), progress=False).run()
    assert again.trials_run == 0 and again.trials_reused > 0 and len(backend.calls) == calls
    assert again.table == first.table


def test_a_fresh_run_reuses_nothing_even_when_it_asks_for_a_trial_twice(tmp_path: Path) -> None:
    backend = FootprintBackend(footprint)
    calibrator = Calibrator(backend, CalibrationConfig(), tmp_path, base_table=default_table(), progress=False)
    trial = Trial(8, "dit", 60, 1)
    assert calibrator.measure(trial) == calibrator.measure(trial)
    assert (calibrator.trials_run, calibrator.trials_reused, len(backend.calls)) == (1, 0, 1)
    result = Calibrator(backend, CalibrationConfig(), tmp_path / "fresh", base_table=default_table(), progress=False)
    assert result.run().trials_reused == 0


def test_the_cpu_report_says_it_tests_the_mechanics_only_and_reports_no_reuse_on_a_fresh_run() -> None:
    from acestep_core.runtime.cli.calibrate import CPU_NOTE, render_report

    report = {
        "complete": True,
        "table_file": "cal/tiers.toml",
        "raw_file": "cal/measurements.json",
        "trials_run": 24,
        "trials_reused": 0,
        "cards": [
            {
                "card_gb": 20.0,
                "cap_bytes": 20 * 2**20,
                "without_lm": [10, 2],
                "with_lm": None,
                "lm_models": [],
                "notes": [],
            }
        ],
        "note": CPU_NOTE.format(unit=1.0),
    }
    text = render_report(report)
    lines = text.splitlines()
    assert "reused" not in text and lines[1] == "24 trials run; measurements in cal/measurements.json"
    assert lines[0] == lines[-1] == f"note: {CPU_NOTE.format(unit=1)}" and "mechanics only" in lines[0]
    assert "fake budget 20 MiB" in text
    assert "3 reused from" in render_report(report | {"trials_reused": 3})


def test_resume_refuses_other_settings(tmp_path: Path) -> None:
    calibrate(tmp_path)
    with pytest.raises(ValueError, match="margin_gb"):
        Calibrator(
            FootprintBackend(footprint),
            CalibrationConfig(margin_gb=1.0),
            tmp_path,
            base_table=default_table(),
            progress=False,
        )


def test_a_card_too_small_for_anything_keeps_the_base_table(tmp_path: Path) -> None:
    _, result = calibrate(tmp_path, cards_gb=(4, 8))
    assert result.cards[0].without_lm is None and result.cards[0].notes
    table = load_table(tmp_path / TABLE_FILE)
    assert [t.name for t in table.tiers][:3] == ["tier1", "tier2", "tier3"] and table.tier("cal8").min_gb == 8


@pytest.mark.slow
def test_cpu_calibrate_command_runs_tiny_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from acestep_core.cli import main

    out = tmp_path / "cal"
    assert main(["calibrate", "--out", str(out), "--device", "cpu", "--no-full-vae", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["complete"] and report["comparison"]["a"]["name"] == "default"
    assert report["trials_reused"] == 0 and "mechanics only" in report["note"] and report["device"] == "cpu"
    assert load_table(out / TABLE_FILE).name == "calibrated"
    cards = {c["card_gb"]: c for c in report["cards"]}
    assert cards[40.0]["without_lm"][0] >= cards[20.0]["without_lm"][0]
    raw = json.loads((out / RAW_FILE).read_text())
    assert raw["environment"]["versions"]["torch"] and any(not m["fits"] for m in raw["measurements"])
    assert main(["calibrate", "--out", str(out), "--device", "cpu", "--no-full-vae", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["trials_run"] == 0 and again["trials_reused"] == report["trials_run"]
