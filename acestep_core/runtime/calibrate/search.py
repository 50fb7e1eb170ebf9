"""Measure what a device runs and write a tier table from the measurements.

How it works

* **Phases, one at a time.** The pipeline with CPU offload between phases holds one component on
  the device at a time, so a request fits when each phase fits alone: ``lm:<size>`` (``generate``
  of a few tokens after a prompt whose length follows the duration: 5 codes a second plus 500
  tokens of caption and chain-of-thought), ``dit`` (one denoising forward over the duration's
  latents), ``vae:tiled`` / ``vae:full`` (decoding them). The limits use ``vae:tiled`` unless asked.
  VAE decode runs as the pipeline runs it: one batch item at a time (``acestep_core.runtime.vae_decode.decode``).
* **Smaller cards on a big one.** Each card of ``C`` GB is emulated by capping the allocator at
  ``C − context − margin`` GB (``torch.cuda.set_per_process_memory_fraction``, enforced on a real
  GPU; ``mem_get_info`` does not show the cap). ``context`` (default 808 MiB, 0.79 GB: the memory
  model's ``CUDA_CONTEXT_BYTES``) is what the CUDA context takes outside the allocator on an H100
  (cuBLAS + cuDNN loaded); ``margin`` (default 512 MiB, 0.5 GB, the upstream safety margin) is what
  is left unused on purpose.
* **Bounded search.** Memory grows with duration and batch, so for each card and phase a staircase
  walk over the grid (longest duration first, batch up from 1) finds, for every duration, the
  largest batch that runs, in at most ``len(durations) + len(batches)`` trials.
* **From measurements to a tier.** For each card the limits are a corner (duration, batch) that
  every phase runs, chosen to maximise duration × batch (ties: the longer duration), never below the
  smaller card's corner so that limits never fall as memory grows. LM sizes are allowed where they
  run at the with-LM corner; ``lm_memory_gb`` is the LM phase's measured peak there.
* **Resumable.** Every measurement is appended to the raw file as it is taken; a rerun with the
  same settings skips what is there.

On a CPU there is no allocator to cap: the tiny models run for real, and each trial's footprint
is *estimated* (parameters + the KV cache, latents and audio the trial holds) against a fake budget
of ``C × cpu_unit`` bytes, so that the mechanics (search, resume, table) are exercised.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from acestep_core.inputs import RESULTS_SIZE_LIMIT, InputFileError, read_text_limited
from acestep_core.tables import parse_table, table_to_toml
from acestep_core.types import Tier, TierTable
from acestep_core.vocabulary import (
    CUDA_CONTEXT_BYTES,
    DIT_MODELS,
    GIB,
    LM_SIZES,
    SAFETY_MARGIN_BYTES,
)

DEFAULT_DURATIONS_S: tuple[int, ...] = (60, 240, 600)
DEFAULT_BATCHES: tuple[int, ...] = (1, 2, 4, 8)
DEFAULT_CARDS_GB: tuple[float, ...] = (8, 12, 16)
DEFAULT_LM_SIZES: tuple[str, ...] = ("0.6B", "1.7B")
CONTEXT_GB = CUDA_CONTEXT_BYTES / GIB
"""The CUDA context the emulated card loses outside the allocator (808 MiB, as the memory model)."""
SAFETY_MARGIN_GB = SAFETY_MARGIN_BYTES / GIB
PROMPT_OVERHEAD_TOKENS = 500
NEW_TOKENS = 4
CONDITION_TOKENS = 2304
"""Caption (≤256) + lyrics (≤2,048) tokens the DiT cross-attends to."""
RAW_FILE = "measurements.json"
WRITTEN_BY = "# Written by `acestep-core calibrate`"
"""How the tier table this command writes begins: a tiers.toml that does not is the user's own."""
TABLE_FILE = "tiers.toml"
MEASURED_OPTIMIZATIONS = {"flash_attention": True, "cpu_offload": True, "compile": False, "quantization": "none"}
"""What the measurements ran with: efficient attention, one component on the device at a time,
no compile, bf16 weights (no quantization)."""


class OutOfMemory(Exception):  # noqa: N818 - named after what the device says
    """A trial did not fit under the card's cap."""


@dataclasses.dataclass(frozen=True)
class Trial:
    card_gb: float
    phase: str
    duration_s: int
    batch: int

    @property
    def key(self) -> str:
        return f"{self.card_gb:g}|{self.phase}|{self.duration_s}|{self.batch}"


@dataclasses.dataclass(frozen=True)
class Measurement:
    card_gb: float
    phase: str
    duration_s: int
    batch: int
    fits: bool
    peak_bytes: int | None
    """Peak allocator memory of the trial, weights included (estimated on a CPU); None after an OOM."""
    cap_bytes: int
    seconds: float
    error: str = ""

    @property
    def key(self) -> str:
        return Trial(self.card_gb, self.phase, self.duration_s, self.batch).key


_MEASUREMENT_TYPES: dict[str, tuple[type, ...]] = {
    "card_gb": (int, float),
    "phase": (str,),
    "duration_s": (int,),
    "batch": (int,),
    "fits": (bool,),
    "peak_bytes": (int, type(None)),
    "cap_bytes": (int,),
    "seconds": (int, float),
    "error": (str,),
}


def measurement_problem(row: Any) -> str | None:
    """Why ``row`` (from a raw file) is not a :class:`Measurement`, or None."""
    if not isinstance(row, dict):
        return f"is {type(row).__name__}, not an object"
    unknown = sorted(set(row) - set(_MEASUREMENT_TYPES))
    missing = sorted(set(_MEASUREMENT_TYPES) - set(row) - {"error"})
    if unknown or missing:
        return f"has unknown keys {unknown} / lacks {missing}"
    for key, value in row.items():
        kinds = _MEASUREMENT_TYPES[key]
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if wrong_bool or not isinstance(value, kinds) or (isinstance(value, float) and not math.isfinite(value)):
            return f"{key} = {str(value)[:40]!r} is not {' or '.join(k.__name__ for k in kinds)}"
    return None


class Backend(Protocol):
    """Runs one trial under a card's cap: returns the peak bytes, or raises :class:`OutOfMemory`."""

    kind: str

    def cap_bytes(self, card_gb: float) -> int: ...

    def run(self, trial: Trial) -> int: ...

    def environment(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------------------------- search
def staircase(durations: Sequence[int], batches: Sequence[int], fits: Callable[[int, int], bool]) -> dict[int, int]:
    """For every duration, the largest batch that fits (0: none), assuming that what fits at
    (d, b) also fits at any smaller d or b. At most ``len(durations) + len(batches)`` calls."""
    durations, batches = sorted(durations), sorted(batches)
    result: dict[int, int] = {}
    best, next_batch = 0, 0
    for duration in reversed(durations):
        while next_batch < len(batches) and fits(duration, batches[next_batch]):
            best = batches[next_batch]
            next_batch += 1
        result[duration] = best
    return result


def combine(*frontiers: dict[int, int]) -> dict[int, int]:
    """What every phase runs: the smallest of their batches at each duration."""
    return {d: min(f[d] for f in frontiers) for d in frontiers[0]}


def choose_corner(frontier: dict[int, int], floor: tuple[int, int] = (0, 0)) -> tuple[int, int] | None:
    """The (duration, batch) limits: a point every phase runs, at least ``floor``, maximising
    duration × batch (ties: the longer duration). None when nothing qualifies."""
    candidates = [(d, b) for d, b in frontier.items() if b >= 1 and d >= floor[0] and b >= floor[1]]
    return max(candidates, key=lambda point: (point[0] * point[1], point[0]), default=None)


# --------------------------------------------------------------------------------------------- runner
@dataclasses.dataclass(frozen=True)
class CalibrationConfig:
    cards_gb: tuple[float, ...] = DEFAULT_CARDS_GB
    durations_s: tuple[int, ...] = DEFAULT_DURATIONS_S
    batches: tuple[int, ...] = DEFAULT_BATCHES
    lm_sizes: tuple[str, ...] = DEFAULT_LM_SIZES
    vae_decode: str = "tiled"
    measure_full_vae: bool = True
    context_gb: float = CONTEXT_GB
    margin_gb: float = SAFETY_MARGIN_GB
    backend: str = ""
    table_name: str = "calibrated"

    def phases(self) -> list[str]:
        phases = [f"lm:{size}" for size in self.lm_sizes] + ["dit", f"vae:{self.vae_decode}"]
        if self.measure_full_vae and self.vae_decode != "full":
            phases.append("vae:full")
        return phases

    def comparable(self) -> dict[str, Any]:
        """What a resumed run must share with the raw file (the grid may grow)."""
        return {"context_gb": self.context_gb, "margin_gb": self.margin_gb, "backend": self.backend}


@dataclasses.dataclass(frozen=True)
class CardResult:
    card_gb: float
    cap_bytes: int
    frontiers: dict[str, dict[int, int]]
    without_lm: tuple[int, int] | None
    with_lm: tuple[int, int] | None
    lm_models: tuple[str, ...]
    lm_memory_gb: dict[str, float]
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    table: TierTable | None
    cards: tuple[CardResult, ...]
    measurements: tuple[Measurement, ...]
    complete: bool
    table_path: Path | None
    raw_path: Path
    trials_run: int
    trials_reused: int


class Calibrator:
    """Runs the search against a backend, recording every trial in the raw file as it goes."""

    def __init__(
        self,
        backend: Backend,
        config: CalibrationConfig,
        out_dir: str | Path,
        *,
        base_table: TierTable,
        deadline_s: float | None = None,
        progress: bool = True,
        overwrite: bool = False,
    ) -> None:
        """:raises ValueError: before any trial, when ``out_dir`` holds a tiers.toml this command did not
        write (unless ``overwrite``) or a raw file it cannot resume from."""
        self.backend = backend
        self.base_table = base_table
        """The active table: tiers outside the measured cards come from it."""
        self.config = dataclasses.replace(config, backend=backend.kind)
        self.out_dir = Path(out_dir)
        self.raw_path = self.out_dir / RAW_FILE
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self.progress = progress
        self.measurements: dict[str, Measurement] = {}
        self.trials_run = 0
        self.trials_reused = 0
        self._resumed: set[str] = set()
        """Keys of measurements read from an earlier run's raw file, not yet asked for again."""
        self.environment: dict[str, Any] = {}
        self.backend_unit = getattr(backend, "unit_bytes", GIB)
        """Bytes per "GB" of a card: a GiB on a device, the fake unit on a CPU."""
        table = self.out_dir / TABLE_FILE
        if table.exists() and not overwrite and not written_by_calibrate(table):
            raise ValueError(
                f"{table} exists and was not written by acestep-core calibrate: "
                "give another --out, or --overwrite to replace it"
            )
        self._load_raw()

    # ----- raw file
    def _load_raw(self) -> None:
        """Resume from the raw file, if there is one. A file that is not what this command writes
        (truncated, ``[]``, ``null``, rows of the wrong shape) is refused with its name, never half-used.

        :raises ValueError: naming the file and the problem."""
        if not self.raw_path.exists():
            return

        def refuse(problem: str) -> ValueError:
            return ValueError(f"{self.raw_path}: cannot resume from it: {problem}; delete it or use another --out")

        try:
            data = json.loads(read_text_limited(self.raw_path, limit=RESULTS_SIZE_LIMIT, what="measurements"))
        except InputFileError as error:
            raise refuse(str(error).removeprefix(f"{self.raw_path}: ")) from None
        except (json.JSONDecodeError, RecursionError) as error:
            raise refuse(f"not JSON (truncated?): {str(error)[:120]}") from None
        if not isinstance(data, dict) or not isinstance(data.get("measurements", []), list):
            raise refuse('not a calibrate measurements file (an object with a "measurements" list)')
        previous = data.get("config", {})
        if not isinstance(previous, dict):
            raise refuse('its "config" is not an object')
        mismatched = {k: (previous.get(k), v) for k, v in self.config.comparable().items() if previous.get(k) != v}
        if mismatched:
            raise ValueError(
                f"{self.raw_path} was measured with other settings {mismatched}: use another --out or delete it"
            )
        for position, row in enumerate(data.get("measurements", [])):
            problem = measurement_problem(row)
            if problem:
                raise refuse(f"measurements[{position}] {problem}")
            measurement = Measurement(**row)
            self.measurements[measurement.key] = measurement
            self._resumed.add(measurement.key)

    def _write_raw(self, *, complete: bool, cards: Iterable[CardResult] = ()) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        data = {
            "format": "acestep-core calibrate raw measurements, version 1",
            "config": dataclasses.asdict(self.config),
            "method": __doc__.split("How it works")[1].split("On a CPU")[0].strip() if __doc__ else "",
            "environment": self.environment,
            "complete": complete,
            "measurements": [dataclasses.asdict(m) for m in self.measurements.values()],
            "cards": [_card_json(card) for card in cards],
        }
        temporary = self.raw_path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(temporary, self.raw_path)

    # ----- trials
    def measure(self, trial: Trial) -> Measurement:
        if trial.key in self.measurements:
            if trial.key in self._resumed:  # an earlier run's row, counted once (not this run's own repeats)
                self._resumed.discard(trial.key)
                self.trials_reused += 1
            return self.measurements[trial.key]
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError("the time limit was reached; rerun the same command to resume")
        started = time.perf_counter()
        try:
            peak, fits, error = self.backend.run(trial), True, ""
        except OutOfMemory as oom:
            peak, fits, error = None, False, str(oom)[:300]
        measurement = Measurement(
            trial.card_gb,
            trial.phase,
            trial.duration_s,
            trial.batch,
            fits,
            peak,
            self.backend.cap_bytes(trial.card_gb),
            round(time.perf_counter() - started, 4),
            error,
        )
        self.measurements[trial.key] = measurement
        self.trials_run += 1
        self._write_raw(complete=False)
        return measurement

    def run(self) -> CalibrationResult:
        config = self.config
        self.environment = self.backend.environment()
        frontiers: dict[float, dict[str, dict[int, int]]] = {card: {} for card in config.cards_gb}
        complete = True
        bar = _progress(total=len(config.phases()) * len(config.cards_gb), enabled=self.progress)
        try:
            for phase in config.phases():  # phase-major: each model loads once
                for card in config.cards_gb:
                    bar.set_postfix_str(f"{phase} on {card:g} GB")

                    def fits(duration: int, batch: int, phase: str = phase, card: float = card) -> bool:
                        return self.measure(Trial(card, phase, duration, batch)).fits

                    frontiers[card][phase] = staircase(config.durations_s, config.batches, fits)
                    bar.update(1)
        except TimeoutError:
            complete = False
        finally:
            bar.close()
        cards: list[CardResult] = []
        table = None
        table_path = None
        if complete:
            try:
                cards = self._decide(frontiers)
            except TimeoutError:
                complete = False
        if complete:
            table = build_table(cards, config, self.environment, self.base_table)
            table_path = self.out_dir / TABLE_FILE
            temporary = table_path.with_suffix(".toml.tmp")
            temporary.write_text(
                table_to_toml(table, header_comment=_table_comment(config, self.environment)), encoding="utf-8"
            )
            os.replace(temporary, table_path)
        self._write_raw(complete=complete, cards=cards)
        self.backend.close()
        return CalibrationResult(
            table,
            tuple(cards),
            tuple(self.measurements.values()),
            complete,
            table_path,
            self.raw_path,
            self.trials_run,
            self.trials_reused,
        )

    def _decide(self, frontiers: dict[float, dict[str, dict[int, int]]]) -> list[CardResult]:
        config = self.config
        vae = f"vae:{config.vae_decode}"
        results: list[CardResult] = []
        floor_without, floor_with = (0, 0), (0, 0)
        allowed: tuple[str, ...] = ()
        for card in config.cards_gb:
            phases = frontiers[card]
            notes: list[str] = []
            base = combine(phases["dit"], phases[vae])
            without = choose_corner(base, floor_without)
            if without is None:
                notes.append(
                    "the DiT and VAE do not run at the smallest duration and batch on this card"
                    if floor_without == (0, 0)
                    else "measured less than a smaller card; keeping the smaller card's limits"
                )
                without = None if floor_without == (0, 0) else floor_without
            with_lm: tuple[int, int] | None = None
            models: tuple[str, ...] = ()
            memory: dict[str, float] = {}
            if without is not None:
                with_lm, models = self._with_lm(phases, base, allowed, floor_with, notes)
                for size in models:
                    memory[size] = self._lm_allocation(card, size, with_lm, notes)
                floor_without = without
                if with_lm is not None:
                    floor_with, allowed = with_lm, models
            results.append(
                CardResult(card, self.backend.cap_bytes(card), phases, without, with_lm, models, memory, tuple(notes))
            )
        return results

    def _lm_allocation(self, card: float, size: str, with_lm: tuple[int, int] | None, notes: list[str]) -> float:
        """GB the ``size`` LM takes at the with-LM limits (its measured peak, rounded up to 0.1 GB)."""
        if with_lm is None:
            raise ValueError(f"lm:{size} is allowed on the {card:g} GB card without with-LM limits")
        measurement = self.measure(Trial(card, f"lm:{size}", *with_lm))
        if not measurement.fits:
            notes.append(f"lm:{size} did not run at the with-LM limits {with_lm}; its allocation is the card's cap")
        peak = measurement.peak_bytes or measurement.cap_bytes
        return float(min(math.ceil(peak / self.backend_unit * 10) / 10, card))

    def _with_lm(
        self,
        phases: dict[str, dict[int, int]],
        base: dict[int, int],
        allowed: tuple[str, ...],
        floor: tuple[int, int],
        notes: list[str],
    ) -> tuple[tuple[int, int] | None, tuple[str, ...]]:
        sizes = list(self.config.lm_sizes)
        anchor = allowed[:1] or [s for s in sizes if choose_corner(combine(base, phases[f"lm:{s}"]), floor)][:1]
        if not anchor:
            if allowed:
                notes.append("no LM measured to run at the smaller card's limits; keeping them")
                return floor, allowed
            return None, ()
        must = list(dict.fromkeys([*allowed, *anchor]))
        corner = choose_corner(combine(base, *(phases[f"lm:{s}"] for s in must)), floor)
        if corner is None:
            notes.append("the LMs a smaller card allows did not run at its limits here; keeping them")
            return floor, allowed
        models = tuple(s for s in LM_SIZES if s in must or (s in sizes and phases[f"lm:{s}"][corner[0]] >= corner[1]))
        return corner, models


# --------------------------------------------------------------------------------------------- table
def build_table(
    cards: Sequence[CardResult], config: CalibrationConfig, environment: dict[str, Any], base: TierTable
) -> TierTable:
    """One tier per measured card ([card, next card)); below the smallest and above the largest
    card the base table's tiers are kept, clamped so that limits never fall as memory grows. ``base`` is
    the active table, chosen by the same rule as every resolution (``--tiers``, third-party tables)."""
    measured = [card for card in cards if card.without_lm is not None]
    if not measured:
        raise ValueError(
            "no card ran even the shortest duration at batch 1: nothing to write (larger --cards, or shorter "
            "--durations)"
        )
    first, last = measured[0], measured[-1]
    # calibrate measures the 2B DiT: which DiTs a measured tier allows is the base table's at that size
    measured_tiers = [
        _measured_tier(
            card,
            measured[i + 1].card_gb if i + 1 < len(measured) else None,
            _base_dits(base, card.card_gb),
        )
        for i, card in enumerate(measured)
    ]
    below = [_clamped_below(t, first.card_gb, measured_tiers[0]) for t in base.tiers if t.min_gb < first.card_gb]
    above_bases = [t for t in base.tiers if t.min_gb > last.card_gb]
    if above_bases:
        measured_tiers[-1] = dataclasses.replace(measured_tiers[-1], max_gb=above_bases[0].min_gb)
    above = [_raised_above(t, measured_tiers[-1]) for t in above_bases]
    device = environment.get("device", "?")
    table = TierTable(
        name=config.table_name,
        description=f"measured by acestep-core calibrate on {device}: tiers from "
        f"{first.card_gb:g} to {last.card_gb:g} GB "
        f"measured, the rest from {base.name!r}",
        real_card_tolerance=base.real_card_tolerance,
        tiers=tuple(below + measured_tiers + above),
    )
    text = table_to_toml(table)
    return parse_table(text, source="calibrate")  # raises TableError if what we built breaks a rule


def _base_dits(base: TierTable, card_gb: float) -> tuple[str, ...]:
    tier = base.tier_for(card_gb)
    return tier.dit_models if tier is not None else base.tiers[0].dit_models


def _measured_tier(card: CardResult, next_gb: float | None, dit_models: tuple[str, ...]) -> Tier:
    assert card.without_lm is not None
    with_lm = card.with_lm or card.without_lm
    return Tier(
        name=f"cal{card.card_gb:g}".replace(".", "_"),
        label=f"Calibrated {card.card_gb:g}GB",
        min_gb=card.card_gb,
        max_gb=next_gb,
        max_inclusive=False,
        max_duration_with_lm_s=with_lm[0],
        max_duration_without_lm_s=card.without_lm[0],
        max_batch_with_lm=with_lm[1],
        max_batch_without_lm=card.without_lm[1],
        lm_models=card.lm_models,
        lm_memory_gb=dict(card.lm_memory_gb),
        lm_default_on=bool(card.lm_models),
        optimizations=dict(MEASURED_OPTIMIZATIONS),
        dit_models=dit_models,
    )


def _clamped_below(tier: Tier, first_gb: float, first: Tier) -> Tier:
    models = tuple(m for m in tier.lm_models if m in first.lm_models)
    limits = {f: min(getattr(tier, f), getattr(first, f)) for f in _LIMITS}
    if not first.lm_models:
        limits |= {
            "max_duration_with_lm_s": limits["max_duration_without_lm_s"],
            "max_batch_with_lm": limits["max_batch_without_lm"],
        }
    return dataclasses.replace(
        tier.allowing(models),
        max_gb=min(tier.max_gb, first_gb) if tier.max_gb is not None else first_gb,
        lm_default_on=tier.lm_default_on and bool(models),
        dit_models=tuple(d for d in tier.dit_models if d in first.dit_models) or first.dit_models[:1],
        **limits,
    )


def _raised_above(tier: Tier, last: Tier) -> Tier:
    models = tuple(m for m in LM_SIZES if m in tier.lm_models or m in last.lm_models)
    limits = {f: max(getattr(tier, f), getattr(last, f)) for f in _LIMITS}
    dits = tuple(d for d in DIT_MODELS if d in tier.dit_models or d in last.dit_models)
    return dataclasses.replace(
        tier.allowing(models), lm_default_on=tier.lm_default_on or bool(models), dit_models=dits, **limits
    )


_LIMITS = ("max_duration_with_lm_s", "max_duration_without_lm_s", "max_batch_with_lm", "max_batch_without_lm")


def written_by_calibrate(path: Path) -> bool:
    """Whether the table file ``path`` begins as this command writes its tables."""
    if not path.is_file():  # a folder or a FIFO named tiers.toml is not ours (and is never opened)
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(len(WRITTEN_BY)) == WRITTEN_BY
    except OSError:
        return False


def _table_comment(config: CalibrationConfig, environment: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in environment.get("versions", {}).items())
    return (
        f"Written by `acestep-core calibrate` ({config.backend}) on {environment.get('device', '?')}"
        f" (driver {environment.get('driver', '?')}; {versions}).\n"
        f"Cards emulated: {', '.join(f'{c:g}' for c in config.cards_gb)} GB, each capped at card - "
        f"{config.context_gb:g} GB CUDA context"
        f" - {config.margin_gb:g} GB safety margin.\n"
        f"Grid: durations {list(config.durations_s)} s x batches {list(config.batches)}; LMs "
        f"{list(config.lm_sizes)}; VAE decode {config.vae_decode}.\n"
        f"Tiers named cal<N> were measured; the others come from the base table. Raw figures: {RAW_FILE}."
    )


def _card_json(card: CardResult) -> dict[str, Any]:
    data = dataclasses.asdict(card)
    data["frontiers"] = {phase: {str(d): b for d, b in f.items()} for phase, f in card.frontiers.items()}
    return data


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm  # the ml extra's; calibrate runs with it

    return tqdm(total=total, desc="calibrate", unit="search", disable=not enabled, leave=True)


# --------------------------------------------------------------------------------------------- backends
class FootprintBackend:
    """A device whose every trial needs ``footprint(trial)`` bytes and fails above its cap: the
    search logic's test double, and the CPU mode's budget."""

    kind = "footprint"

    def __init__(
        self,
        footprint: Callable[[Trial], int],
        *,
        unit_bytes: int = GIB,
        context_gb: float = CONTEXT_GB,
        margin_gb: float = SAFETY_MARGIN_GB,
    ) -> None:
        self.footprint = footprint
        self.unit_bytes = unit_bytes
        self.context_gb = context_gb
        self.margin_gb = margin_gb
        self.calls: list[Trial] = []

    def cap_bytes(self, card_gb: float) -> int:
        return int((card_gb - self.context_gb - self.margin_gb) * self.unit_bytes)

    def run(self, trial: Trial) -> int:
        self.calls.append(trial)
        needed = self.footprint(trial)
        if needed > self.cap_bytes(trial.card_gb):
            raise OutOfMemory(f"needs {needed} bytes, cap {self.cap_bytes(trial.card_gb)}")
        return needed

    def environment(self) -> dict[str, Any]:
        return {"device": "fake device", "driver": None, "versions": {}}

    def close(self) -> None:
        pass
