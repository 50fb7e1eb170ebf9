"""The records that flow between hooks: detect → select → adjust → configure.

Every record is a frozen dataclass built from JSON-friendly values, so a resolution can be printed,
cached, compared and sent to a UI as it is (see :func:`to_jsonable`). Memory sizes are bytes in
readings and GiB (2**30 bytes) in tier tables: the upstream document's "GB" are GiB —
``MAX_CUDA_VRAM=8`` means 8 GiB.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import field
from typing import Any, Literal, TypeVar

from acestep_core.inputs import MAX_NESTING, nesting_depth
from acestep_core.record import Record
from acestep_core.vocabulary import (
    COMPONENTS,
    DEFAULT_DIT,
    DIT_MODELS,
    GIB,
    LM_MODES,
    LM_SIZES,
    MIN_DURATION_S,
    PLAN_KEYS,
    QUANT_SCHEME_FORMATS,
    QUANTIZED_COMPONENTS,
    LmMode,
)

__all__ = ["COMPONENTS", "GIB", "LM_SIZES", "LmMode"]  # re-exported: defined in acestep_core.vocabulary


# --------------------------------------------------------------------------------------------- detect
class DetectOptions(Record):
    """What the caller asks of detection; handed unchanged to every ``detect_memory`` implementation.

    ``environ`` is a snapshot of the process environment (or a test's own mapping), so plugins never
    read ``os.environ`` behind the caller's back.
    """

    device: str | None = None
    """The device the pipeline will use: an ordinal (``"1"``), a UUID or UUID prefix; None = first."""
    vram_gb: str | None = None
    """Simulated memory from the command line (``--vram``), unparsed: the plugin validates it."""
    replay: str | None = None
    """Path of a recorded device (JSON) to replay instead of asking the driver."""
    environ: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float | None = None
    """Seconds each ``detect_memory`` implementation may take before the next one decides; None =
    ``ACESTEP_CORE_DETECT_TIMEOUT`` from ``environ``, else 10."""

    def __post_init__(self) -> None:
        """Refuse, at construction, options no detection could read, each with the field named (as
        :class:`GenerationRequest` and :class:`Overrides` do)."""
        problems = []
        for name, what in (
            ("device", "an index such as '1' or a UUID prefix"),
            ("vram_gb", "a size such as '8'"),
            ("replay", "a recording's path or name"),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                problems.append(f"{name} must be a string ({what}) or None, not {value!r:.80}")
        environ = self.environ
        if not isinstance(environ, Mapping):
            problems.append(f"environ must be a mapping of variable name to value, not {environ!r:.80}")
        else:
            wrong = [(k, v) for k, v in environ.items() if not (isinstance(k, str) and isinstance(v, str))]
            if wrong:
                key, value = wrong[0]
                problems.append(f"environ must map strings to strings, not {key!r:.40} to {value!r:.40}")
        timeout = self.timeout_s
        if timeout is not None and not (_is_real(timeout) and math.isfinite(timeout) and timeout > 0):
            problems.append(f"timeout_s must be a positive, finite number of seconds or None, not {timeout!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def cache_key(self) -> tuple[Any, ...]:
        return (self.device, self.vram_gb, self.replay, self.timeout_s, tuple(sorted(self.environ.items())))


class DeviceMemory(Record):
    """One device's memory, and where each figure came from."""

    backend: str
    """``cuda``, ``rocm``, ``mps``, ``xpu`` or ``cpu``."""
    name: str
    index: int | None = None
    """The ordinal the framework (torch) will use: ``cuda:<index>``. None for the CPU."""
    uuid: str | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    reserved_bytes: int | None = None
    """Memory the driver keeps for itself (NVML v2 ``reserved``); None where unknown."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Figure name → how it was read, e.g. ``{"total_bytes": "NVML nvmlDeviceGetMemoryInfo v2"}``."""
    compute_capability: tuple[int, int] | None = None
    pci_bus_id: str | None = None
    mig: bool = False
    """True for a MIG instance: the figures are the slice's, not the parent GPU's."""
    unified_memory: bool = False
    """True where host and device share memory (Apple MPS): figures are a recommended ceiling."""
    simulated: bool = False
    allocator_reserved_bytes: int | None = None
    """Bytes this process's torch caching allocator holds on the device (``memory_reserved``), given by
    a process that already runs torch (:meth:`MemoryReading.with_allocator`); None = not given.
    Detection never reads it: that needs torch, and on a device torch has not touched, a CUDA context."""
    allocator_allocated_bytes: int | None = None
    """Of those, bytes live tensors use (``memory_allocated``); given with ``allocator_reserved_bytes``."""
    weights_dtype: str | None = None
    """The dtype the caller's environment asks this platform to load the DiT, text encoder and VAE in
    (``ACESTEP_ROCM_DTYPE`` on ROCm, read by the detection plugin; ``sources`` says from where):
    ``fp32``, ``fp16`` or ``bf16``. None = the platform's own rule."""

    @property
    def total_gib(self) -> float | None:
        return None if self.total_bytes is None else self.total_bytes / GIB

    @property
    def free_gib(self) -> float | None:
        return None if self.free_bytes is None else self.free_bytes / GIB

    @property
    def allocator_cached_bytes(self) -> int:
        """What this process's allocator holds but no tensor uses (reserved − allocated): memory a
        new tensor of this process gets without asking the driver. 0 where not given."""
        if self.allocator_reserved_bytes is None or self.allocator_allocated_bytes is None:
            return 0
        return max(0, self.allocator_reserved_bytes - self.allocator_allocated_bytes)

    @property
    def effective_free_bytes(self) -> int | None:
        """Device free + this process's allocator cache (upstream ACE-Step #822: after models load,
        the driver's free memory reads near 0 on a card whose allocator can still serve gigabytes).
        The driver's figure (NVML) already leaves out every process's usage, this one's included,
        so the cache is added back, never counted twice. None where free memory is unknown."""
        if self.free_bytes is None:
            return None
        return self.free_bytes + self.allocator_cached_bytes

    def free_basis(self) -> str:
        """Which free-memory figure a decision uses, in words, with where each part came from."""
        free = self.free_bytes
        if free is None:
            return "free memory unknown"
        where = self.sources.get("free_bytes", "the detection plugin")
        if self.allocator_reserved_bytes is None or self.allocator_allocated_bytes is None:
            return f"free {free / GIB:.2f} GiB ({where}; no allocator figures given)"
        cached = self.allocator_cached_bytes
        given = self.sources.get("allocator", "given by the caller")
        return (
            f"effective free {(free + cached) / GIB:.2f} GiB = device free {free / GIB:.2f} GiB ({where}) + this "
            f"process's allocator cache {cached / GIB:.2f} GiB (reserved − allocated, {given})"
        )

    @property
    def is_accelerator(self) -> bool:
        return self.backend != "cpu"

    @property
    def key(self) -> str:
        """The device as torch names it: ``cuda:1`` (ROCm too: torch calls it ``cuda``), ``xpu:0``,
        ``mps``, ``cpu``. What a placement maps components to."""
        if self.backend in ("cpu", "mps"):
            return self.backend
        kind = "cuda" if self.backend == "rocm" else self.backend
        return kind if self.index is None else f"{kind}:{self.index}"

    def describe(self) -> str:
        """``cuda:1 (NVIDIA GeForce RTX 3060, GPU-1a2b3c4d-…)``: the key, the name and the UUID where known."""
        return f"{self.key} ({self.name}{', ' + self.uuid if self.uuid else ''})"


CPU = DeviceMemory(backend="cpu", name="CPU")


class MemoryObservation(Record):
    """One phase of a real run (or a calibrate trial) measured on a device, beside what the memory model
    predicted for it: the correction store's entry (:mod:`acestep_core.optimize.corrections`). Bytes are the
    phase's *own*: its component's weights on the device and working set, the other components' weights
    (counted exactly) taken away."""

    phase: str
    """``lm``, ``text_encoder``, ``dit`` or ``vae``."""
    family: str
    """Component, dtype, quantization, attention and placement, e.g. ``lm 0.6B bf16 none sdpa on-device``."""
    bucket: str
    """The shape bucket: batch and a duration band, e.g. ``×2 ≤240 s``."""
    shape: str
    """The exact workload (durations, tokens, what else was on the device)."""
    model: str
    """Fingerprint of the memory model that made ``predicted_own_bytes`` (a ratio is only meaningful against
    the same model)."""
    predicted_own_bytes: int
    measured_own_bytes: int | None = None
    """Measured allocated peak less the other components' weights; with ``out_of_memory``, a lower bound."""
    measured_reserved_own_bytes: int | None = None
    """The same for the reserved peak."""
    reserved_ratio: float | None = None
    """Measured reserved ÷ allocated peak of the phase."""
    out_of_memory: bool = False
    source: str = "run"
    """``run`` (the pipeline), ``calibrate`` or ``recovery`` (an out-of-memory error a run recovered from)."""
    recorded_at: str = ""
    run_id: str = ""
    """The run (or calibrate trial) it came from: a run records one observation a phase."""
    note: str = ""
    """What followed, for an out-of-memory error: the rung(s) the run retried with."""


class MemoryReading(Record):
    """What ``detect_memory`` returns: the device the pipeline will use, and every visible one."""

    device: DeviceMemory
    visible: tuple[DeviceMemory, ...] = ()
    notes: tuple[str, ...] = ()
    """Things the user should know about this reading (simulation on, fallbacks taken, diagnosis)."""
    placement: Mapping[str, str] = field(default_factory=dict)
    """Which device runs each component: component → :attr:`DeviceMemory.key` of one of ``visible``
    (``{"lm": "cuda:1", "dit": "cuda:0", ...}``). Empty: every component runs on ``device``. Detection
    leaves it empty; the core sets it from ``place_components``' answer, and ``device`` is then the
    device that runs the DiT (the one the tier follows)."""
    observations: tuple[MemoryObservation, ...] = ()
    """What earlier runs on this device measured (the correction store's entries for it; the resolution
    attaches them from the cache folder, detection never reads them): the plan corrects its memory
    predictions with them."""

    @property
    def simulated(self) -> bool:
        return self.device.simulated

    def device_of(self, component: str) -> DeviceMemory:
        """The device that runs ``component``."""
        key = self.placement.get(component)
        if key is None or key == self.device.key:
            return self.device
        return next((device for device in self.visible if device.key == key), self.device)

    def reading_of(self, component: str) -> MemoryReading:
        """This reading as ``component``'s device sees it (its ``device`` is the one running it; the
        recorded runs of another device do not come with it)."""
        device = self.device_of(component)
        return self if device == self.device else dataclasses.replace(self, device=device, observations=())

    @property
    def several_devices(self) -> bool:
        """Whether the components run on more than one device."""
        keys = set(self.placement.values())
        if len(self.placement) < len(COMPONENTS):
            keys.add(self.device.key)
        return len(keys) > 1

    def placed(self, placement: Mapping[str, str]) -> MemoryReading:
        """This reading with ``placement`` (component → device key, every component named): its
        ``device`` becomes the one that runs the DiT."""
        devices = {device.key: device for device in self.visible} | {self.device.key: self.device}
        return dataclasses.replace(self, device=devices[placement["dit"]], placement=dict(placement))

    def with_allocator(self, reserved_bytes: int, allocated_bytes: int, source: str) -> MemoryReading:
        """This reading with the chosen device's allocator figures (a process that runs torch reads
        them: ``torch.cuda.memory_reserved`` / ``memory_allocated``), so that every decision sized
        from free memory uses the effective free memory. ``source`` says who read them, and how."""
        for name, value in (("reserved_bytes", reserved_bytes), ("allocated_bytes", allocated_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number of bytes, 0 or more, not {value!r}")
        if allocated_bytes > reserved_bytes:
            raise ValueError(f"allocated_bytes ({allocated_bytes}) cannot exceed reserved_bytes ({reserved_bytes})")
        old = self.device
        new = dataclasses.replace(
            old,
            allocator_reserved_bytes=reserved_bytes,
            allocator_allocated_bytes=allocated_bytes,
            sources={**old.sources, "allocator": source},
        )
        visible = tuple(new if device == old else device for device in self.visible)
        return dataclasses.replace(self, device=new, visible=visible)


# --------------------------------------------------------------------------------------------- select
PRE_XL_DIT_MODELS: tuple[str, ...] = ("turbo", "base", "sft")
"""The DiTs a tier allows when its table does not say: the 2B ones, all that shipped before the XL."""


class Tier(Record):
    """One row of a tier table: the limits and defaults for a range of device memory (GiB).

    ``name`` is the tier's stable id (``tier1`` … ``tier6``, ``tier6a``, ``unlimited``): what tools,
    the compat API (``GPUConfig.tier``) and overrides refer to; ``label`` is for people.
    """

    name: str
    label: str
    min_gb: float
    max_gb: float | None
    """Upper bound; None = unbounded."""
    max_inclusive: bool
    """Whether ``max_gb`` itself belongs to this tier (the seed's "≤4GB"); otherwise [min, max).
    The next tier then starts just above ``max_gb``."""
    max_duration_with_lm_s: int
    max_duration_without_lm_s: int
    max_batch_with_lm: int
    max_batch_without_lm: int
    lm_models: tuple[str, ...]
    """LM sizes this tier may load, smallest first. Empty: no LM."""
    lm_memory_gb: Mapping[str, float]
    """GPU memory set aside for each allowed LM size; a size missing here has no fixed bound."""
    lm_default_on: bool
    optimizations: Mapping[str, Any] = field(default_factory=dict)
    """Per-tier optimization defaults (``flash_attention``, ``cpu_offload``, ``dit_cpu_offload``,
    ``compile``, ``quantization``), as the table states them; ``configure_optimizations`` turns them
    into a plan."""
    recommended_lm: str | None = None
    """The LM size ``auto`` loads when the LM runs (the table's advice for this tier); None means the
    largest allowed. A size this tier does not allow is kept as given, and refused by validation
    (:func:`acestep_core.tables.validate_table`), exactly as in a TOML table."""
    class_tolerance_gb: float = 0.0
    """A size up to this many GB below ``min_gb`` counts as ``min_gb`` (simulated or detected):
    upstream's "15.5 GB is a 16 GB card". Added to the table's fractional real-card tolerance."""
    lm_memory_ratio_min: tuple[tuple[float, float], ...] = ()
    """Floor of ``lm.gpu_memory_ratio`` as steps ``(from_gb, floor)``, ascending: from a device of
    ``from_gb`` on, the LM's share is at least ``floor`` (the last step reached applies). Empty: none."""
    lm_memory_ratio_max: float = 0.9
    """Ceiling of ``lm.gpu_memory_ratio``."""
    dit_models: tuple[str, ...] = PRE_XL_DIT_MODELS
    """DiTs this tier may run (:data:`acestep_core.vocabulary.DIT_MODELS` order). A table written before the
    field existed allows the 2B DiTs, the only ones there were."""

    def __post_init__(self) -> None:
        if self.recommended_lm is None and self.lm_models:
            object.__setattr__(self, "recommended_lm", self.lm_models[-1])

    def allowing(self, lm_models: tuple[str, ...]) -> Tier:
        """This tier with other LM sizes allowed: the allotments of sizes no longer allowed are dropped,
        and the recommendation is kept where still allowed, else the largest allowed."""
        recommended = self.recommended_lm if self.recommended_lm in lm_models else None
        memory = {size: gb for size, gb in self.lm_memory_gb.items() if size in lm_models}
        return dataclasses.replace(self, lm_models=lm_models, lm_memory_gb=memory, recommended_lm=recommended)

    @property
    def id(self) -> str:
        """The stable id (``name``)."""
        return self.name

    def lm_memory_ratio(self, allocation_gb: float, total_gb: float) -> float:
        """The LM's share of a ``total_gb`` device for an ``allocation_gb`` allotment, within the
        tier's floor and ceiling."""
        reached = [value for from_gb, value in self.lm_memory_ratio_min if total_gb >= from_gb]
        floor = reached[-1] if reached else 0.0
        return min(self.lm_memory_ratio_max, max(floor, allocation_gb / total_gb))

    def contains(self, gib: float) -> bool:
        if gib < self.min_gb:
            return False
        if self.max_gb is None:
            return True
        return gib <= self.max_gb if self.max_inclusive else gib < self.max_gb

    def max_duration_s(self, lm_on: bool) -> int:
        return self.max_duration_with_lm_s if lm_on else self.max_duration_without_lm_s

    def max_batch(self, lm_on: bool) -> int:
        return self.max_batch_with_lm if lm_on else self.max_batch_without_lm

    @property
    def default_dit(self) -> str:
        """The DiT a request that names none gets: upstream's default (the 2B turbo) where allowed, else the
        first this tier allows."""
        return DEFAULT_DIT if DEFAULT_DIT in self.dit_models else (self.dit_models or (DEFAULT_DIT,))[0]

    def vram_label(self) -> str:
        """The range as the seed's table writes it: ``≤4GB``, ``4-6GB``, ``≥24GB``."""
        if self.max_gb is None:
            return f"≥{_num(self.min_gb)}GB"
        if self.min_gb == 0 and self.max_inclusive:
            return f"≤{_num(self.max_gb)}GB"
        return f"{_num(self.min_gb)}-{_num(self.max_gb)}GB"


class TierTable(Record):
    """A whole tier table: tiers ordered by memory, covering 0 GiB to unbounded."""

    name: str
    tiers: tuple[Tier, ...]
    description: str = ""
    real_card_tolerance: float = 0.05
    """A detected (not simulated) total within this fraction below a tier boundary counts as the
    boundary: cards are sold by class but report less (an "8 GB" card reads 7.6-7.9 GiB)."""
    source: str = ""
    """Where the table was loaded from (a file path or a package resource)."""
    monotone_limits: bool = True
    """Whether limits must not fall as memory grows (validated). False only for tables that
    reproduce another implementation whose limits do fall (upstream main's 8-tier table)."""

    def tier(self, name: str) -> Tier:
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(f"table {self.name!r} has no tier {name!r}; it has {[t.name for t in self.tiers]}")

    def nominal_size(self, gib: float, *, detected: bool) -> float:
        """The class a device of ``gib`` belongs to: a size just below a tier's lower boundary counts
        as the boundary, within that tier's ``class_tolerance_gb`` (any size) or, for a detected
        total, the table's fractional ``real_card_tolerance``."""
        for tier in self.tiers[1:]:
            boundary = tier.min_gb
            slack = max(tier.class_tolerance_gb, boundary * self.real_card_tolerance if detected else 0.0)
            # 1e-9 GiB absorbs float rounding of a tolerance's edge; with no tolerance a size is exact
            if slack > 0 and boundary - slack - 1e-9 <= gib < boundary:
                return boundary
        return gib

    def tier_for(self, gib: float, *, detected: bool = False) -> Tier | None:
        """The tier for a device of ``gib`` GiB (0 or less: no device, the first tier): the first
        whose range holds its nominal size. The one placement rule; the table supplies its parameters."""
        if gib <= 0:
            return self.tiers[0] if self.tiers else None
        size = self.nominal_size(gib, detected=detected)
        return next((tier for tier in self.tiers if tier.contains(size)), None)


# --------------------------------------------------------------------------------------------- adjust
class GenerationRequest(Record):
    """What the user asked for, before any tier limit is applied."""

    duration_s: float | None = None
    """Seconds of audio; None lets the LM choose (constrained to the tier's maximum)."""
    batch_size: int = 1
    lm_model: str | None = None
    """An LM size (``"1.7B"``); None = the tier's recommended size when the LM runs."""
    lm: LmMode = "auto"
    """``on`` / ``off``, or ``auto`` = the tier's default."""
    dit_model: str | None = None
    """The DiT (``turbo``, ``base``, ``sft``, ``xl-turbo``, ``xl-base``, ``xl-sft``); None = the tier's default
    (the 2B turbo where allowed, as upstream)."""
    checkpoints: str | None = None
    """A checkpoints folder as upstream lays it out: the plan budgets what its files hold."""

    def __post_init__(self) -> None:
        """Refuse a request no tier could be fitted to, at the API boundary, with the value named."""
        duration = self.duration_s
        if duration is not None and (
            isinstance(duration, bool)
            or not isinstance(duration, (int, float))
            or not math.isfinite(duration)
            or duration <= 0
        ):
            raise ValueError(f"duration_s must be a positive, finite number of seconds or None, not {duration!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer of 1 or more, not {self.batch_size!r}")
        if self.lm not in LM_MODES:
            raise ValueError(f"lm must be 'auto', 'on' or 'off', not {self.lm!r}")
        if self.dit_model is not None and self.dit_model not in DIT_MODELS:
            raise ValueError(f"dit_model must be one of {', '.join(DIT_MODELS)} or None, not {self.dit_model!r}")
        if self.checkpoints is not None and not isinstance(self.checkpoints, str):
            raise ValueError(f"checkpoints must be a folder path (str) or None, not {self.checkpoints!r}")


_D = TypeVar("_D", bound="Decided")


class Decided:
    """What :class:`Adjustment` and :class:`Setting` share: a value decided, the reason in words, the
    plugin that decided it (``""`` until the core attributes it) and whether the user must be told.

    ``subject`` is what was decided (a request field, a plan key), ``outcome`` the value it got.
    """

    reason: str
    plugin: str
    warning: bool

    @property
    def subject(self) -> str:
        raise NotImplementedError

    @property
    def outcome(self) -> Any:
        raise NotImplementedError

    def attributed(self: _D, plugin: str) -> _D:
        """This record with ``plugin`` named as its author, unless it already names one."""
        return self if self.plugin else dataclasses.replace(self, plugin=plugin)  # type: ignore[type-var]


class Adjustment(Decided, Record):
    """One change ``adjust_request`` made to a request, and why."""

    field: str
    asked: Any
    granted: Any
    reason: str
    plugin: str = ""
    warning: bool = True
    """False for a quiet default (the LM left off on a small tier when the user said nothing)."""

    @property
    def subject(self) -> str:
        return self.field

    @property
    def outcome(self) -> Any:
        return self.granted


class AdjustedRequest(Record):
    """The request as it will run."""

    duration_s: float | None
    batch_size: int
    lm_model: str | None
    """The LM that will load; None = the LM is off."""
    changes: tuple[Adjustment, ...] = ()
    lm_choice: str = "auto"
    """What the user asked of the LM: ``size`` (a specific size: never changed by the memory ladder),
    ``on`` (the LM, any size: the ladder may pick a smaller one) or ``auto`` (it may also turn it off).
    Set by :func:`acestep_core.resolve` from the request."""
    dit_model: str = DEFAULT_DIT
    """The DiT that will run (the adjuster refuses one the tier does not allow)."""
    checkpoints: str | None = None
    """The request's checkpoints folder (set by :func:`acestep_core.resolve` from the request)."""

    @property
    def lm_on(self) -> bool:
        return self.lm_model is not None

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(change.reason for change in self.changes if change.warning)


class Override(Record):
    """A user-set value that won over the tier's (or the plan's) own."""

    key: str
    value: Any
    default: Any
    """What the tier or plan would have given."""


class Overrides(Record):
    """Explicit user values (CLI flags, API arguments). Each wins over the tier's default."""

    max_duration_s: int | None = None
    max_batch: int | None = None
    lm_models: tuple[str, ...] | None = None
    """LM sizes to allow whatever the tier says."""
    plan: Mapping[str, Any] = field(default_factory=dict)
    """Optimization plan key → value, e.g. ``{"compile": False, "quantization.dit": "none"}``."""
    force: bool = False
    """Run a plan predicted over the device budget instead of refusing it (recorded and warned)."""

    def __post_init__(self) -> None:
        """Refuse, at construction, what no run could use: the rules the CLI applies at parse time.

        An override may raise a tier's limit (that is what it is for), but never to a non-positive
        or non-finite value, and never allow an LM size that does not exist; plan values must be of
        their key's type and range (:data:`acestep_core.vocabulary.PLAN_KEYS`).
        """
        problems = []
        duration = self.max_duration_s
        if duration is not None and not (_is_real(duration) and math.isfinite(duration) and duration >= MIN_DURATION_S):
            problems.append(
                f"max_duration_s must be a finite number of seconds of at least {MIN_DURATION_S}, not {duration!r}"
            )
        batch = self.max_batch
        if batch is not None and not (_is_real(batch) and isinstance(batch, int) and batch >= 1):
            problems.append(f"max_batch must be an integer of 1 or more, not {batch!r}")
        models = self.lm_models
        if models is not None:
            if isinstance(models, str) or not isinstance(models, (list, tuple)):
                problems.append(f"lm_models must be a tuple of LM sizes ({', '.join(LM_SIZES)}), not {models!r}")
            else:
                unknown = [m for m in models if m not in LM_SIZES]
                if unknown:
                    problems.append(
                        f"lm_models: no LM of size {', '.join(map(repr, unknown))}; sizes: {', '.join(LM_SIZES)}"
                    )
                else:
                    object.__setattr__(self, "lm_models", tuple(m for m in LM_SIZES if m in models))
        if not isinstance(self.plan, Mapping):
            problems.append(f"plan must be a mapping of plan key to value, not {self.plan!r}")
        else:
            problems += [f"plan: {p}" for key, value in self.plan.items() if (p := plan_override_problem(key, value))]
            problems += _quantization_disagreements(self.plan)
            object.__setattr__(self, "plan", dict(self.plan))
        if problems:
            raise ValueError("; ".join(problems))


def plan_override_problem(key: Any, value: Any) -> str | None:
    """None when a user may set plan ``key`` to ``value``, else why not (one rule for the API and ``--set``)."""
    spec = PLAN_KEYS.get(key) if isinstance(key, str) else None
    if spec is None:
        return f"unknown plan key {key!r} (known: {', '.join(k for k, s in PLAN_KEYS.items() if s.settable)})"
    if not spec.settable:
        return f"{key} is computed by the memory plan and cannot be set (set the request or the limits instead)"
    if nesting_depth(value) > MAX_NESTING:
        return f"{key}: the value nests more than {MAX_NESTING} levels deep"
    problem = spec.check(value)
    return None if problem is None else f"{key}: {problem}"


def _quantization_disagreements(plan: Mapping[str, Any]) -> list[str]:
    """A weight format and a scheme set together must agree (``int8`` with ``int8_weight_only``, not ``fp8``)."""
    problems = []
    for component in QUANTIZED_COMPONENTS:
        quantization, scheme = plan.get(f"quantization.{component}"), plan.get(f"quantization.scheme.{component}")
        stored = QUANT_SCHEME_FORMATS.get(scheme) if isinstance(scheme, str) else None
        if quantization is not None and stored is not None and stored != quantization:
            problems.append(
                f"plan: quantization.{component}={quantization!r} and quantization.scheme.{component}={scheme!r} "
                f"disagree ({scheme} stores {stored} weights); set one of them"
            )
    return problems


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------- configure
class Setting(Decided, Record):
    """One optimization decision. Keys are listed in :data:`acestep_core.vocabulary.PLAN_KEYS`."""

    key: str
    value: Any
    reason: str
    plugin: str = ""
    warning: bool = False
    """True when the user must be told (the plan lowered the request or refused it): the reason is
    then one of :attr:`Resolution.warnings`."""

    @property
    def subject(self) -> str:
        return self.key

    @property
    def outcome(self) -> Any:
        return self.value


class OptimizationPlan(Record):
    """Every optimization decision for a run, one :class:`Setting` per key."""

    settings: tuple[Setting, ...] = ()

    def __iter__(self) -> Iterator[Setting]:
        return iter(self.settings)

    def __contains__(self, key: object) -> bool:
        return any(s.key == key for s in self.settings)

    def __getitem__(self, key: str) -> Setting:
        for setting in self.settings:
            if setting.key == key:
                return setting
        raise KeyError(key)

    def value(self, key: str, default: Any = None) -> Any:
        return self[key].value if key in self else default

    def as_dict(self) -> dict[str, Any]:
        return {s.key: s.value for s in self.settings}


# --------------------------------------------------------------------------------------------- place
class PlaceOptions(Record):
    """What the caller asks of placement; handed unchanged to every ``place_components`` implementation.

    ``place`` is the user's map as typed (``--place``, ``resolve(place=...)``): ``auto``, ``single:N``
    or ``lm:1,dit:0,vae:0,text_encoder:0``, syntax already checked (:func:`acestep_core.placement.parse_place`);
    ``device`` the ``--device`` choice as typed; ``environ`` where upstream's variables are read."""

    place: str | None = None
    device: str | None = None
    environ: Mapping[str, str] = field(default_factory=dict)
    default: str = ""
    """The key of the device detection chose (``--device``, else the first visible): where the run goes
    when nothing else is asked, and what the other layouts are compared with."""


class Placement(Decided, Record):
    """``place_components``' answer: which device runs each component, and why."""

    components: Mapping[str, str]
    """Component → device key (:attr:`DeviceMemory.key`), every component named."""
    reason: str
    plugin: str = ""
    notes: tuple[str, ...] = ()
    """What the user must be told (a variable ignored, and why): shown among the warnings."""
    warning: bool = False

    @property
    def subject(self) -> str:
        return "placement"

    @property
    def outcome(self) -> Any:
        return dict(self.components)


class LayoutOutcome(Record):
    """What a request becomes under one layout: what ``place_components`` compares layouts by (the
    core works it out, through every hook, for each layout a plugin asks about)."""

    components: Mapping[str, str]
    """Component → device key."""
    duration_s: float
    """The audio the run covers: the granted duration, or the ceiling when the LM chooses."""
    batch: int
    lm_model: str | None
    clamps: tuple[str, ...] = ()
    """Every way the run is less than the request (a limit, an LM size refused, a ladder rung that
    lowered the batch, duration or LM), in words."""
    refused: bool = False
    """Predicted over some device's budget even after the ladder (and not forced)."""
    pressure: float | None = None
    """The most loaded device's predicted peak ÷ its budget; None where nothing is predicted (a CPU)."""

    @property
    def devices(self) -> tuple[str, ...]:
        """The devices the run uses (the LM's only when the LM runs), in component order."""
        running = [c for c in COMPONENTS if c != "lm" or self.lm_model is not None]
        return tuple(dict.fromkeys(self.components[c] for c in running))

    @property
    def unclamped(self) -> bool:
        return not self.clamps and not self.refused


# --------------------------------------------------------------------------------------------- result
class Decision(Record):
    """Which plugin answered a hook, and what it said."""

    hook: str
    plugin: str
    summary: str


ProblemKind = Literal[
    "import", "raised", "wrong-type", "invalid-setting", "invalid-table", "rejected", "timeout", "refused"
]


class PluginProblem(Record):
    """A plugin that failed to load, raised inside a hook, or returned the wrong type, and was skipped."""

    plugin: str
    hook: str | None
    error: str
    kind: ProblemKind = "raised"
    setting: str | None = None
    """For ``invalid-setting``: the input rejected, as the user gave it (``--replay``, ``MAX_CUDA_VRAM``)."""

    def message(self) -> str:
        where = f" in {self.hook}" if self.hook else ""
        if self.kind == "invalid-setting":
            return f"{self.plugin}: {self.error}"
        return f"plugin {self.plugin!r} {_PROBLEM_VERBS[self.kind]}{where}: {self.error} (skipped)"


_PROBLEM_VERBS = {
    "import": "failed to load",
    "raised": "raised",
    "wrong-type": "returned the wrong type",
    "invalid-table": "registered an invalid tier table",
    "rejected": "gave an answer that breaks the contract",
    "timeout": "did not answer in time",
    "refused": "was refused",
}


class Resolution(Record):
    """hardware → tier → adjusted request → plan, and who decided each."""

    reading: MemoryReading
    table: str
    tier: Tier
    request: GenerationRequest
    adjusted: AdjustedRequest
    plan: OptimizationPlan
    overrides: tuple[Override, ...] = ()
    decisions: tuple[Decision, ...] = ()
    problems: tuple[PluginProblem, ...] = ()
    placement: Placement | None = None
    """Which device runs each component, who decided and why (``reading.placement`` holds the map)."""
    tiers: Mapping[str, Tier] = field(default_factory=dict)
    """The tier each device the decision read gives, as selected: the DiT's device's, and the LM's where
    the LM runs on another (``tier`` is then the DiT's with the LM's sizes: see ``acestep_core.placement``)."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """Everything the user must be told: reading notes, clamps and refusals, plugin problems."""
        return (
            self.reading.notes
            + (self.placement.notes if self.placement is not None else ())
            + self.adjusted.warnings
            + tuple(setting.reason for setting in self.plan if setting.warning)
            + tuple(problem.message() for problem in self.problems)
        )

    def decided_by(self, hook: str) -> str | None:
        return next((d.plugin for d in self.decisions if d.hook == hook), None)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = to_jsonable(self)
        data["warnings"] = list(self.warnings)
        data["tier"]["recommended_lm"] = self.tier.recommended_lm
        data["adjusted"]["lm_on"] = self.adjusted.lm_on
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def to_jsonable(value: Any) -> Any:
    """Dataclasses → dicts, tuples → lists, non-finite floats → strings; JSON-safe all the way down."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _num(gb: float) -> str:
    return f"{gb:g}"
