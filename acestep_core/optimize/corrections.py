"""What real runs measured, kept per device, and the corrections the next plan takes from them.

Every real run (``acestep_core.runtime.pipeline``) and every ``calibrate`` trial records, per phase, the
measured allocated and reserved peaks beside the memory model's prediction for the same workload, in one
JSON file in the cache folder (:data:`STORE_FILE`; ``ACESTEP_CORE_CACHE_DIR``, see :mod:`acestep_core.cache`).
Entries are keyed by:

* **device**: its UUID and driver version (a simulated device: its backend and size);
* **family**: the phase's component (the DiT by its variant), dtype, quantization, attention, placement and
  weights size;
* **bucket**: the batch and a duration band (``×2 ≤240 s``); and the exact **shape** (durations, tokens).

Bytes are each phase's *own* (its component's weights on the device and its working set): the other
components' weights are counted exactly and taken away, so a correction moves with the component, not
with what else happened to be loaded.

The next plan on that device corrects each phase (:class:`Corrections`, handed to
:func:`~acestep_core.optimize.memory.predict`): the model's own peak × the mean measured ÷ predicted ratio
of the runs in the same bucket (else the nearest bucket of the family), and the reserved peak × the
measured reserved ÷ allocated ratio. A prediction never goes below what was measured for that very shape,
nor below a peak an out-of-memory error showed was exceeded. Ratios count only against the memory model
that made them (:func:`model_fingerprint`); measured floors count whatever model made them.

The file is bounded (:data:`MAX_OBSERVATIONS_PER_KEY` a key, :data:`MAX_OBSERVATIONS_PER_DEVICE` a device,
:data:`MAX_DEVICES`, :data:`STORE_LIMIT` bytes), replaced atomically, and read with the same rules as every
input (a regular file of sane size, JSON of bounded depth, each value checked): a corrupt or hostile file
is ignored with one warning, and the next recording replaces it. Pure Python: the deciding side reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from acestep_core import cache
from acestep_core.inputs import InputFileError, nesting_depth, read_text_limited
from acestep_core.optimize.memory import (
    Choices,
    ComponentEstimate,
    PhaseCorrection,
    PhasePeak,
    Prediction,
    RunShape,
    gib,
    predict,
)
from acestep_core.types import DeviceMemory, MemoryObservation, MemoryReading
from acestep_core.vocabulary import CODES_PER_SECOND, GIB, LATENT_RATE_HZ, MIB, PHASES

STORE_FILE = "memory-corrections.json"
STORE_FORMAT = "acestep-core memory corrections, version 1"
STORE_LIMIT = MIB
"""Largest corrections file read or written (bytes)."""
MAX_DEVICES = 8
MAX_OBSERVATIONS_PER_DEVICE = 256
MAX_OBSERVATIONS_PER_KEY = 8
"""Per (family, bucket): the latest runs are kept."""
MAX_TEXT = 300
"""Longest string accepted in the file."""
MAX_BYTES = 1 << 50
"""Largest byte figure accepted (1 PiB)."""
DURATION_BANDS_S = (15, 30, 60, 120, 240, 480, 960)
FACTOR_LIMITS = (0.5, 2.0)
"""A measured ÷ predicted ratio outside this is clamped (and said): a model that far off needs fixing, not a
correction."""
RATIO_LIMITS = (1.0, 2.0)
"""The same for the measured reserved ÷ allocated ratio."""
RUNS_USED = 4
"""The latest runs of a bucket the factor averages."""
_BUCKET = re.compile(r"^×(\d+) ≤(\d+|∞) s$")


# --------------------------------------------------------------------------------------------- keys
def device_key(device: DeviceMemory) -> str | None:
    """The store's key for a device: UUID and driver version; a simulated device by backend and size; None
    for the CPU (nothing is predicted there)."""
    if not device.is_accelerator:
        return None
    if device.simulated:
        return f"simulated {device.backend} {device.total_bytes}"
    driver = device.sources.get("driver", "")
    version = driver.rsplit(" ", 1)[-1] if driver else "unknown"
    who = device.uuid or f"{device.name} {device.pci_bus_id or device.index}"
    return f"{who} driver {version}"


def duration_band(duration_s: float) -> str:
    return next((str(band) for band in DURATION_BANDS_S if duration_s <= band), "∞")


def phase_identity(run: RunShape, choices: Choices, phase: str, estimate: ComponentEstimate) -> tuple[str, str, str]:
    """(family, bucket, shape) of ``phase`` of ``run`` under ``choices``: what a recorded run and a plan match on."""
    precision = choices.precision.get(phase, "bf16")
    quantization = choices.quantization.get(phase, "none")
    offload = choices.offload.get(phase, "none")
    placement = f"streamed ({offload})" if offload in ("group", "sequential") else "on-device"
    weights = f"{round(estimate.weights_bytes / MIB)} MiB"
    frames = math.ceil(run.duration_s * LATENT_RATE_HZ)
    bucket = f"×{run.batch} ≤{duration_band(run.duration_s)} s"
    if phase == "lm":
        head = "+lm_head" if choices.quantize_lm_head and quantization != "none" else ""
        family = f"lm {run.lm_model} {precision} {quantization}{head} {choices.attention} {placement} {weights}"
        generated = run.cot_tokens + math.ceil(run.duration_s * CODES_PER_SECOND)
        shape = f"prompt {run.prompt_tokens} + {generated} tokens ×{run.batch}"
    elif phase == "text_encoder":
        family = f"text_encoder {precision} {quantization} {choices.attention} {placement} {weights}"
        bucket = shape = "caption"
    elif phase == "dit":
        # the variant: base and sft share turbo's weights but run twice its rows (CFG)
        family = f"dit {run.models.dit.name} {precision} {quantization} {choices.attention} {placement} {weights}"
        shape = f"{frames} latent frames ×{run.batch}"
    else:
        decode = "full" if choices.vae_decode != "tiled" else f"tiled {choices.tile_frames}+2×{choices.tile_overlap}"
        family = f"vae {precision} {quantization} {decode} {placement} {weights}"
        shape = f"{frames} latent frames ×{run.batch}"
    return family, bucket, shape


_FINGERPRINT: list[str] = []


def model_fingerprint() -> str:
    """A fingerprint of the memory model: its predictions for a few fixed runs (any change to a count or a
    fitted constant changes it). A ratio recorded under another model is not used."""
    if not _FINGERPRINT:
        runs = (
            (RunShape(60, 1, "0.6B"), Choices()),
            (RunShape(240, 2, "1.7B"), Choices(quantization=dict.fromkeys(PHASES, "int8"), vae_decode="tiled")),
            (RunShape(600, 4, "4B"), Choices(attention="eager")),
        )
        figures = [
            (p.phase, p.model_allocated_bytes, p.reserved_gap)
            for run, choices in runs
            for p in predict(run, choices).phases
        ]
        _FINGERPRINT.append(_fnv1a(repr(figures)))
    return _FINGERPRINT[0]


# --------------------------------------------------------------------------------------------- observing
def observe(
    run: RunShape,
    choices: Choices,
    phase: str,
    *,
    allocated_bytes: int | None,
    reserved_bytes: int | None,
    others_on_device: Iterable[str] = (),
    source: str = "run",
    out_of_memory: bool = False,
    run_id: str = "",
) -> MemoryObservation:
    """What a measured phase records: the model's prediction of its own peak for this workload beside the
    measured peaks less the weights of ``others_on_device`` (components left on the device meanwhile).
    With ``out_of_memory`` the figures are lower bounds (the peak exceeded them)."""
    prediction = predict(run, choices)
    peak = _phase(prediction, phase)
    estimate = prediction.estimates[phase]
    family, bucket, shape = phase_identity(run, choices, phase, estimate)
    others = sum(
        prediction.estimates[c].weights_bytes for c in set(others_on_device) - {phase} if c in prediction.estimates
    )
    # a peak below the others' weights means they were not all on the device: not comparable, not recorded
    own = None if allocated_bytes is None or allocated_bytes <= others else allocated_bytes - others
    reserved_own = None if reserved_bytes is None or reserved_bytes <= others else reserved_bytes - others
    ratio = None
    if allocated_bytes and reserved_bytes and not out_of_memory:
        ratio = round(reserved_bytes / allocated_bytes, 4)
    return MemoryObservation(
        phase=phase,
        family=family,
        bucket=bucket,
        shape=shape,
        model=model_fingerprint(),
        predicted_own_bytes=peak.own_model_bytes,
        measured_own_bytes=own,
        measured_reserved_own_bytes=reserved_own,
        reserved_ratio=ratio,
        out_of_memory=out_of_memory,
        source=source,
        recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        run_id=run_id,
    )


def new_run_id() -> str:
    """An id for one run's observations (UTC time, process, counter)."""
    _RUNS.append(0)
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-{len(_RUNS)}"


_RUNS: list[int] = []


def _fnv1a(text: str) -> str:
    """FNV-1a, 64 bits, as 16 hex digits (hashlib would cost start-up time for a fingerprint)."""
    value = 0xCBF29CE484222325
    for byte in text.encode():
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def _phase(prediction: Prediction, phase: str) -> PhasePeak:
    for peak in prediction.phases:
        if peak.phase == phase:
            return peak
    raise ValueError(f"the run has no {phase!r} phase")


_OOM_FIGURES = {
    "tried": re.compile(r"Tried to allocate ([\d.]+) (GiB|MiB|KiB)"),
    "allocated": re.compile(r"([\d.]+) (GiB|MiB|KiB) is allocated by PyTorch"),
    "cached": re.compile(r"([\d.]+) (GiB|MiB|KiB) is reserved by PyTorch but unallocated"),
    "allowed": re.compile(r"([\d.]+) (GiB|MiB|KiB) allowed"),
}
_UNITS = {"GiB": GIB, "MiB": MIB, "KiB": 1024}
MESSAGE_ROUNDING = round(0.005 * GIB)
"""torch's out-of-memory message rounds to 0.01 GiB (or MiB): a bound read from it is lowered by this."""


def out_of_memory_figures(message: str) -> dict[str, int]:
    """The figures torch's CUDA out-of-memory message gives (bytes, as printed): ``tried`` (the allocation
    that failed), ``allocated`` (live tensors then), ``cached`` (reserved but unallocated), ``allowed`` (the
    per-process cap, where one is set). Missing ones are left out."""
    found = {}
    for name, pattern in _OOM_FIGURES.items():
        match = pattern.search(message)
        if match:
            found[name] = round(float(match.group(1)) * _UNITS[match.group(2)])
    return found


def out_of_memory_bounds(message: str) -> dict[str, int]:
    """Lower bounds on the peaks of a phase that ran out of memory, from the message: allocated > live + the
    failed request; reserved > the cap (where one was set), and ≥ what was reserved then. Each is lowered by
    the message's rounding."""
    figures = out_of_memory_figures(message)
    bounds = {}
    if "tried" in figures and "allocated" in figures:
        bounds["allocated"] = max(1, figures["allocated"] + figures["tried"] - 2 * MESSAGE_ROUNDING)
    reserved = []
    if "allowed" in figures:
        reserved.append(figures["allowed"] - MESSAGE_ROUNDING)
    if "allocated" in figures and "cached" in figures:
        reserved.append(figures["allocated"] + figures["cached"] - 2 * MESSAGE_ROUNDING)
    if reserved and max(reserved) > 0:
        bounds["reserved"] = max(reserved)
    return bounds


# --------------------------------------------------------------------------------------------- correcting
class Corrections:
    """Corrects a phase's prediction from one device's observations (a
    :class:`~acestep_core.optimize.memory.Corrector`)."""

    def __init__(self, observations: Iterable[MemoryObservation]) -> None:
        self.observations = tuple(observations)
        self.model = model_fingerprint() if self.observations else ""
        self._by_family: dict[str, list[MemoryObservation]] = {}
        for observation in self.observations:
            self._by_family.setdefault(observation.family, []).append(observation)

    def __bool__(self) -> bool:
        return bool(self.observations)

    def __call__(
        self, run: RunShape, choices: Choices, peak: PhasePeak, estimate: ComponentEstimate
    ) -> PhaseCorrection | None:
        family, bucket, shape = phase_identity(run, choices, peak.phase, estimate)
        return self.correct(family, bucket, shape, peak.own_model_bytes)

    def correct(self, family: str, bucket: str, shape: str, own_model_bytes: int) -> PhaseCorrection | None:
        """The correction of a phase's own peak (``own_model_bytes``, the model's) of ``family``, ``bucket``
        and ``shape``, from the runs recorded; None where none applies."""
        seen = self._by_family.get(family)
        if not seen:
            return None
        points = [
            o
            for o in seen
            if not o.out_of_memory and o.measured_own_bytes and o.model == self.model and o.predicted_own_bytes > 0
        ]
        used = [o for o in points if o.bucket == bucket][-RUNS_USED:] or _nearest(points, bucket)
        exact = [o for o in seen if o.shape == shape]
        if not used and not exact:
            return None
        own = own_model_bytes
        factor = None
        notes = []
        if used:
            raw = sum((o.measured_own_bytes or 0) / o.predicted_own_bytes for o in used) / len(used)
            factor = min(max(raw, FACTOR_LIMITS[0]), FACTOR_LIMITS[1])
            own = round(own * factor)
            where = "this bucket" if used[0].bucket == bucket else f"the nearest bucket ({used[0].bucket})"
            notes.append(f"× {factor:.3f} from {len(used)} run(s) in {where}" + (" (clamped)" if factor != raw else ""))
        floor = max((_at_least(o, o.measured_own_bytes) for o in exact if o.measured_own_bytes), default=None)
        if floor is not None and floor > own:
            notes.append(f"raised to the {gib(floor)} measured for this shape")
            own = floor
        ratios = [o.reserved_ratio for o in used if o.reserved_ratio]
        reserved_ratio = None
        if ratios:
            reserved_ratio = min(max(sum(ratios) / len(ratios), RATIO_LIMITS[0]), RATIO_LIMITS[1])
            notes.append(f"reserved ÷ allocated {reserved_ratio:.3f} measured")
        floor_reserved = max(
            (_at_least(o, o.measured_reserved_own_bytes) for o in exact if o.measured_reserved_own_bytes), default=None
        )
        ooms = sum(o.out_of_memory for o in exact)
        if ooms:
            notes.append(f"{ooms} out-of-memory error(s) at this shape")
        run_ids = tuple(dict.fromkeys(o.run_id or f"{o.recorded_at} {o.shape}" for o in (*used, *exact)))
        return PhaseCorrection(
            own_bytes=own,
            runs=len(run_ids),
            run_ids=run_ids,
            factor=factor,
            reserved_ratio=reserved_ratio,
            floor_own_bytes=floor,
            floor_reserved_bytes=floor_reserved,
            evidence=f"{family}, {bucket}: " + "; ".join(notes),
        )


def _at_least(observation: MemoryObservation, value: int | None) -> int:
    """A measured peak, or one byte above a peak an out-of-memory error showed was exceeded."""
    return (value or 0) + (1 if observation.out_of_memory else 0)


def _scale(bucket: str) -> float | None:
    match = _BUCKET.match(bucket)
    if not match:
        return None
    band = DURATION_BANDS_S[-1] * 2 if match.group(2) == "∞" else int(match.group(2))
    return math.log2(int(match.group(1)) * band)


def _nearest(points: Sequence[MemoryObservation], bucket: str) -> list[MemoryObservation]:
    """The latest runs of the bucket nearest to ``bucket`` (batch × duration band, on a log scale)."""
    wanted = _scale(bucket)
    if wanted is None or not points:
        return []
    distances = {o.bucket: abs(s - wanted) for o in points if (s := _scale(o.bucket)) is not None}
    if not distances:
        return []
    closest = min(distances, key=lambda b: (distances[b], b))
    return [o for o in points if o.bucket == closest][-RUNS_USED:]


def corrections_for(reading: MemoryReading) -> Corrections | None:
    """The corrections a reading's observations give; None where it has none."""
    return Corrections(reading.observations) if reading.observations else None


# --------------------------------------------------------------------------------------------- the file
def store_path(environ: Mapping[str, str]) -> Path:
    return cache.directory(environ) / STORE_FILE


_parsed: dict[tuple[str, int, int, int], dict[str, Any]] = {}


def _read_store(path: Path) -> dict[str, Any]:
    """The store's devices, validated; ``{}`` when there is no file. :raises ValueError: naming the problem."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ValueError(f"cannot read it: {error.strerror or error}") from None
    key = (str(path), info.st_mtime_ns, info.st_size, info.st_ino)
    if key in _parsed:
        return _parsed[key]
    try:
        text = read_text_limited(path, limit=STORE_LIMIT, what="memory corrections")
        data = json.loads(text, parse_constant=_no_constant)
    except InputFileError as error:
        raise ValueError(str(error).removeprefix(f"{path}: ")) from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"not JSON ({str(error)[:80]})") from None
    if nesting_depth(data) > 6:
        raise ValueError("nested too deeply")
    devices = _validated(data)
    _parsed.clear()
    _parsed[key] = devices
    return devices


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _validated(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != STORE_FORMAT:
        raise ValueError(f'not a corrections file (an object with "format": {STORE_FORMAT!r})')
    devices = data.get("devices")
    if not isinstance(devices, dict) or len(devices) > MAX_DEVICES:
        raise ValueError(f'"devices" must be an object of at most {MAX_DEVICES} devices')
    out: dict[str, Any] = {}
    for key, entry in devices.items():
        if not _text(key) or not isinstance(entry, dict):
            raise ValueError("a device entry is not an object under a short name")
        observations = entry.get("observations")
        if not isinstance(observations, list) or len(observations) > MAX_OBSERVATIONS_PER_DEVICE:
            raise ValueError(
                f"device {key[:40]!r}: observations must be a list of at most {MAX_OBSERVATIONS_PER_DEVICE}"
            )
        out[key] = {
            "updated": entry.get("updated") if _seconds(entry.get("updated")) is not None else "",
            "observations": tuple(_observation(row, key) for row in observations),
        }
    return out


_TEXT_FIELDS = ("phase", "family", "bucket", "shape", "model", "source", "recorded_at", "run_id", "note")
_BYTE_FIELDS = ("measured_own_bytes", "measured_reserved_own_bytes")


def _observation(row: Any, device: str) -> MemoryObservation:
    where = f"device {device[:40]!r}"
    if not isinstance(row, dict) or set(row) - {
        *_TEXT_FIELDS,
        *_BYTE_FIELDS,
        "predicted_own_bytes",
        "reserved_ratio",
        "out_of_memory",
    }:
        raise ValueError(f"{where}: an observation is not an object of the known fields")
    for name in _TEXT_FIELDS:
        if not _text(row.get(name, "")):
            raise ValueError(f"{where}: {name} must be a string of at most {MAX_TEXT} characters")
    if row.get("phase") not in PHASES:
        raise ValueError(f"{where}: unknown phase {str(row.get('phase'))[:20]!r}")
    if not _byte_count(row.get("predicted_own_bytes")):
        raise ValueError(f"{where}: predicted_own_bytes must be a whole number of bytes")
    for name in _BYTE_FIELDS:
        if row.get(name) is not None and not _byte_count(row[name]):
            raise ValueError(f"{where}: {name} must be a whole number of bytes or null")
    ratio = row.get("reserved_ratio")
    if ratio is not None and not (
        isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0.5 <= ratio <= 100
    ):
        raise ValueError(f"{where}: reserved_ratio must be a number from 0.5 to 100 or null")
    if not isinstance(row.get("out_of_memory", False), bool):
        raise ValueError(f"{where}: out_of_memory must be true or false")
    return MemoryObservation(**row)


def _seconds(value: Any) -> float | None:
    """A device entry's ``updated`` (seconds since the epoch, as text), or None."""
    try:
        seconds = float(value) if isinstance(value, str) and len(value) < 32 else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


def _text(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT


def _byte_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_BYTES


def load(device: DeviceMemory, environ: Mapping[str, str]) -> tuple[tuple[MemoryObservation, ...], str | None]:
    """This device's observations, and why the file was ignored (None when it was read or absent)."""
    key = device_key(device)
    if key is None or not cache.enabled(environ):
        return (), None
    path = store_path(environ)
    try:
        devices = _read_store(path)
    except ValueError as error:
        return (
            (),
            f"memory corrections {path} ignored: {error}; predictions use the model alone "
            "(the next run replaces the file)",
        )
    entry = devices.get(key)
    return (entry["observations"] if entry else ()), None


def attach(reading: MemoryReading, environ: Mapping[str, str]) -> MemoryReading:
    """``reading`` with what earlier runs on its device measured (a reading that already carries
    observations keeps them); a corrupt or hostile file adds one note (a warning) and nothing else."""
    if reading.observations or not reading.device.is_accelerator:
        return reading
    observations, problem = load(reading.device, environ)
    if problem is not None:
        return dataclasses.replace(reading, notes=(*reading.notes, problem))
    if not observations:
        return reading
    return dataclasses.replace(reading, observations=observations)


def record(observations: Sequence[MemoryObservation], device: DeviceMemory, environ: Mapping[str, str]) -> str | None:
    """Add ``observations`` to ``device``'s entry (the oldest dropped past the bounds) and replace the file
    atomically. Returns why nothing was written, or None. A corrupt file is replaced."""
    key = device_key(device)
    if key is None or not observations:
        return None if observations else "nothing to record"
    if not cache.enabled(environ):
        return f"not recorded: {cache.NO_CACHE_ENV} is set"
    path = store_path(environ)
    try:
        devices = dict(_read_store(path))
    except ValueError:
        devices = {}
    kept = list(devices.get(key, {}).get("observations", ())) + list(observations)
    kept = _bounded(kept)
    devices[key] = {"updated": f"{time.time():.6f}", "observations": tuple(kept)}
    if len(devices) > MAX_DEVICES:
        for old in sorted(devices, key=lambda k: _seconds(devices[k]["updated"]) or 0.0)[: len(devices) - MAX_DEVICES]:
            devices.pop(old)
    written: dict[str, dict[str, Any]] = {
        name: {"updated": entry["updated"], "observations": [_as_json(o) for o in entry["observations"]]}
        for name, entry in devices.items()
    }

    def serialised() -> str:
        return json.dumps({"format": STORE_FORMAT, "devices": written}, ensure_ascii=False, separators=(",", ":"))

    text = serialised()
    while len(text.encode()) > STORE_LIMIT and any(d["observations"] for d in written.values()):
        longest = max(written.values(), key=lambda d: len(d["observations"]))
        del longest["observations"][: max(1, len(longest["observations"]) // 4)]
        text = serialised()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)  # readers see the old file or the new one, never a part
    except OSError as error:
        temporary.unlink(missing_ok=True)
        return f"not recorded in {path}: {error.strerror or error}"
    return None


def _bounded(observations: list[MemoryObservation]) -> list[MemoryObservation]:
    """The latest :data:`MAX_OBSERVATIONS_PER_KEY` of each (family, bucket), and the latest
    :data:`MAX_OBSERVATIONS_PER_DEVICE` in all, in recording order."""
    counts: dict[tuple[str, str], int] = {}
    kept: list[MemoryObservation] = []
    for observation in reversed(observations):
        key = (observation.family, observation.bucket)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] <= MAX_OBSERVATIONS_PER_KEY:
            kept.append(observation)
    return list(reversed(kept[:MAX_OBSERVATIONS_PER_DEVICE]))


def _as_json(observation: MemoryObservation) -> dict[str, Any]:
    return dataclasses.asdict(observation)
