"""What one run holds while it runs: its devices, its components, the phase being measured.

Each component is built (or loaded from a checkpoint folder, :func:`load_checkpoint`) on the CPU, has the
plan applied, runs its phase on the device the resolution places it on (``reading.placement``: the LM on one
card, the DiT stack on another) and leaves it as the plan's ``offload.<component>`` says. What one phase
hands the next (the conditioning, the codes, the latents) moves to the next component's device once, at
the boundary (:meth:`RunSession.hand_over`). Every phase is measured on its own device (:class:`PeakMemory`)
and reported as a :class:`PhaseReport` naming that device.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging as diffusers_logging
from tqdm import tqdm

from acestep_core.checkpoints import CheckpointError, dit_part_configs, scan, sniff
from acestep_core.optimize.corrections import new_run_id
from acestep_core.resolve import ResolutionError
from acestep_core.runtime.apply import apply_plan
from acestep_core.runtime.models import TOKENIZER_CHARS, dit_config
from acestep_core.runtime.models.loader import LoadedCheckpoint, load_checkpoint
from acestep_core.runtime.pipeline.records import CancelHandle, PhaseReport, ProgressCallback, RunOptions
from acestep_core.types import COMPONENTS, DeviceMemory, MemoryObservation, Resolution

MEMORY_SAVINGS = ("quantization", "offload")
"""Plan key groups that only save device memory: dropped when the run falls back to the CPU."""

FaultHook = Callable[[str, int], None]
"""Called as ``(phase, attempt)`` once a phase's component is built and placed on the device (attempt 0,
then 1 for the retry after an out-of-memory error): a test raises ``torch.OutOfMemoryError`` there to run
the recovery on a CPU. The runner's one fault point."""


class RunSession:
    """The state of one run. Phases (``lm``, ``text_encoder``, ``dit``, ``vae``) use it to build their
    component, measure themselves and report progress; :meth:`release` frees everything."""

    def __init__(
        self,
        resolution: Resolution,
        options: RunOptions,
        cancel: CancelHandle,
        on_progress: ProgressCallback | None = None,
        *,
        lm: str | None = None,
        fault: FaultHook | None = None,
        memory_probe: Callable[[torch.device], PeakMemory] | None = None,
    ) -> None:
        self.resolution = resolution
        self.options = options
        self.cancel = cancel
        self.on_progress = on_progress
        self.devices: dict[str, torch.device] = (
            dict.fromkeys(COMPONENTS, torch.device(options.device)) if options.device else devices_for(resolution)
        )
        for component, device in options.devices.items():
            self.devices[component] = torch.device(device)
        self.device = self.devices["dit"]
        """The DiT's device (the one the tier follows); each component's is :meth:`device_of`."""
        self.placed_on: dict[str, str] = {c: resolution.reading.device_of(c).key for c in COMPONENTS}
        """Component → the device the resolution placed it on (``cuda:1``), whatever torch reaches here."""
        self.plan: dict[str, Any] = resolution.plan.as_dict()
        self.models: dict[str, Any] = {}
        self.applied: dict[str, Any] = {}
        self.loaded: dict[str, LoadedCheckpoint] = {}
        self.sources = checkpoint_sources(resolution, options, lm)
        """Component → the folder it is loaded from (the others are built with random weights)."""
        self.fault = fault
        self.memory_probe = memory_probe or PeakMemory
        self.attempts: dict[str, int] = {}
        """Phase → the attempt running (0, or 1 for the retry after an out-of-memory error)."""
        self.batch = 1
        """The batch the phases run (the plan's; lowered by a recovery's ``batch`` rung)."""
        self.on_device: dict[str, tuple[str, ...]] = {}
        """Phase → the other components left on the device while it ran."""
        self.observations: list[MemoryObservation] = []
        """What this run measured, for the correction store (written when the run ends)."""
        self.recoveries: list[dict[str, Any]] = []
        self.run_id = new_run_id()
        needed = 4 if lm is not None else 3
        self.notes: list[str] = [
            f"checkpoints loaded for every component: {', '.join(sorted(self.sources))}"
            if len(self.sources) >= needed
            else "random weights: the audio is noise; this run demonstrates and measures the flow"
            + (f" (loaded from checkpoints: {', '.join(sorted(self.sources))})" if self.sources else "")
        ]
        self._current: Phase | None = None
        self._counted: dict[str, int] = {}
        """Each phase's last progress count (the end of a phase reports it as done of done)."""
        if options.devices:
            moved = ", ".join(f"the {c} on {d} (placed on {self.placed_on[c]})" for c, d in options.devices.items())
            self.notes.append(f"run options move {moved}")
        if resolution.reading.device.is_accelerator and all(d.type == "cpu" for d in self.devices.values()):
            self._drop_device_savings()
        elif len(set(self.placed_on.values())) > 1 and len(set(self.devices.values())) == 1:
            self.notes.append(
                f"the resolution places the components on {len(set(self.placed_on.values()))} devices "
                f"({', '.join(f'{c} on {k}' for c, k in self.placed_on.items())}); here they all run on "
                f"{self.device} (simulated devices, or an explicit device)"
            )

    def device_of(self, component: str) -> torch.device:
        """The torch device ``component`` runs on."""
        return self.devices[component]

    def hand_over(self, tensor: torch.Tensor, what: str, to: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``tensor`` (``what``: codes, conditioning, latents), moved once to the device of component ``to``
        (and cast to ``dtype``); the current phase's details record where it came from and went (the codes
        come one tensor a clip: ``tensors`` counts them, ``bytes`` adds them up)."""
        target = self.device_of(to)
        details = self.details(self._current.name) if self._current is not None else {}
        earlier = details.setdefault("received", {}).get(what, {})
        details["received"][what] = {
            "from": str(tensor.device),
            "to": str(target),
            "placed": self.placed_on[to],
            "moved": tensor.device != target,
            "bytes": earlier.get("bytes", 0) + tensor.numel() * tensor.element_size(),
            "tensors": earlier.get("tensors", 0) + 1,
        }
        return tensor.to(target, dtype) if dtype is not None else tensor.to(target)

    def _drop_device_savings(self) -> None:
        dropped = {
            key: value
            for key, value in self.plan.items()
            if key.split(".")[0] in MEMORY_SAVINGS and key.count(".") == 1 and value != "none"
        }
        self.plan.update(dict.fromkeys(dropped, "none"))
        note = (
            f"the resolution is for {self.resolution.reading.device.name}, but torch cannot reach it: running on "
            "the CPU"
        )
        if dropped:
            listed = ", ".join(f"{k}={v}" for k, v in dropped.items())
            note += (
                f", without the plan's device-memory savings ({listed}): the CPU has no device memory to save "
                "and quanto's CPU kernels are slower"
            )
        self.notes.append(note)

    # ----------------------------------------------------------------------------------- components
    def component(self, name: str, build: Callable[[], torch.nn.Module]) -> Any:
        """Build (or load) on the CPU, then apply the plan: precision, attention, quantization, placement.

        Typed ``Any``: the components are transformers' and diffusers' classes, each with its own API
        (``generate``, ``config``, ``decode``), which ``torch.nn.Module`` does not describe."""
        path = self.sources.get(name)
        with quiet_diffusers():
            if path:
                loaded = load_checkpoint(path, component=name, dtype=self.plan.get(f"precision.{name}"))
                self.loaded[name] = loaded
                model = loaded.model
                self.details(name)["checkpoint"] = {
                    "path": loaded.path,
                    "layout": loaded.layout,
                    "tensors": loaded.tensors,
                    "bytes_read": loaded.bytes_read,
                    "seconds": round(loaded.seconds, 4),
                }
            else:
                model = build()
            self.models[name] = model
            applied = apply_plan(model, name, self.plan, device=self.device_of(name))
        self.applied[name] = applied
        self.details(name)["applied"] = list(applied.steps)
        if self.fault is not None:
            self.fault(name, self.attempts.get(name, 0))
        return applied.model

    def codebook_size(self) -> int:
        """Codes the DiT's FSQ code book holds: the LM may write only those (the real LM's tokenizer has
        65,535 code tokens, the code book 64,000)."""
        path = self.sources.get("dit")
        if path is None:
            config = dit_config(self.resolution.adjusted.dit_model, self.options.size)
            return math.prod(config["fsq_input_levels"])
        sniffed = sniff(path)
        if sniffed.layout == "diffusers":
            tokenizer = Path(path) / "audio_tokenizer" / "config.json"
            if not tokenizer.is_file():
                raise CheckpointError(
                    f"{path}: no audio_tokenizer/ (an older conversion): the LM's codes cannot reach this DiT; "
                    "run without the LM (--lm none) or convert again"
                )
            levels = json.loads(tokenizer.read_text(encoding="utf-8")).get("fsq_input_levels") or [8, 8, 8, 5, 5, 5]
        else:
            levels = dit_part_configs(sniffed.config)["audio_tokenizer"]["fsq_input_levels"]
        return math.prod(levels)

    def tokenizer(self, name: str) -> Any:
        """The tokenizer loaded with component ``name``'s checkpoint, or None (built components)."""
        loaded = self.loaded.get(name)
        return None if loaded is None else loaded.tokenizer

    def free(self, name: str) -> None:
        """After an out-of-memory error in phase ``name``: drop what the phase built and return the device
        memory to the allocator's pool (the failed attempt's tensors went with its exception)."""
        self.models.pop(name, None)
        self.applied.pop(name, None)
        self.loaded.pop(name, None)
        self._current = None
        gc.collect()
        empty_cache(self.device_of(name))

    def allocator_now(self, component: str) -> tuple[int, int, int, int] | None:
        """(device free, device total, reserved, allocated) bytes now on ``component``'s device, where it has
        a caching allocator torch reads (CUDA/ROCm, XPU); None elsewhere."""
        device = self.device_of(component)
        if device.type not in ("cuda", "xpu"):
            return None
        backend = getattr(torch, device.type)
        free, total = backend.mem_get_info(device)
        return (
            int(free),
            int(total),
            int(backend.memory_reserved(device)),
            int(backend.memory_allocated(device)),
        )

    def leave(self, name: str) -> None:
        """End of a phase: the component leaves the device if the plan offloads it, or is freed if
        the plan releases it (unified memory, where moving it to the CPU frees nothing)."""
        offload = self.plan.get(f"offload.{name}", "none")
        if offload == "release":
            self.models.pop(name, None)
            self.applied.pop(name, None)
            self.loaded.pop(name, None)
            gc.collect()
            empty_cache(self.device_of(name))
            self.details(name)["released"] = "freed after its phase (offload.release)"
            return
        if offload == "none" or self.device_of(name).type == "cpu":
            return
        applied = self.applied.get(name)
        if applied is not None and hasattr(applied, "offload"):
            applied.offload()
        elif offload == "model":
            self.models[name].to("cpu")
        self.details(name)["offloaded"] = f"back to the CPU after its phase ({offload} offload)"

    def release(self) -> None:
        """Drop every model and tensor this run holds; return device memory to the allocator's pool."""
        self.models.clear()
        self.applied.clear()
        self.loaded.clear()
        gc.collect()
        for device in set(self.devices.values()):
            empty_cache(device)

    def dtype_of(self, model: torch.nn.Module) -> torch.dtype:
        """The floating-point dtype ``model`` computes in (its first floating parameter's)."""
        for parameter in model.parameters():
            if parameter.dtype.is_floating_point:
                return parameter.dtype
        return torch.float32

    # ----------------------------------------------------------------------------------- measuring
    def details(self, name: str) -> dict[str, Any]:
        """The current phase's details (``name`` must be the phase running)."""
        if self._current is None or self._current.name != name:
            raise RuntimeError(f"phase {name!r} is not running")
        return self._current.details

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Measure a phase: time and peak memory, reported as ``phase.report`` when the block ends."""
        self.cancel.check()
        device = self.device_of(name)
        phase = Phase(name, str(device))
        phase.details["placed_on"] = self.placed_on[name]
        self._current = phase
        self.progress(name, 0, 0)
        self.on_device[name] = tuple(
            c
            for c in self.applied
            if c != name
            and self.device_of(c) == device
            and self.plan.get(f"offload.{c}", "none") in ("none", "release")
        )
        try:
            with self.memory_probe(device) as memory:
                started = time.perf_counter()
                yield phase
                seconds = time.perf_counter() - started
        finally:
            self._current = None
        if self.attempts.get(name):
            phase.details["attempt"] = "retried after running out of device memory"
        phase.report = PhaseReport(
            name,
            str(device),
            round(seconds, 4),
            memory.peak,
            memory.measure,
            dict(phase.details),
            memory.reserved_peak,
        )
        done = self._counted.get(name) or 1
        self.progress(name, done, done)

    def bar(self, name: str, total: int, unit: str) -> tqdm:
        return tqdm(total=total, desc=f"{name:<12}", unit=unit, disable=not self.options.progress, leave=False)

    def progress(self, phase: str, done: int, total: int) -> None:
        self._counted[phase] = done
        if self.on_progress is not None:
            self.on_progress(phase, done, total)


class Phase:
    """A phase while it runs: its details grow, its report is set when it ends."""

    def __init__(self, name: str, device: str) -> None:
        self.name = name
        self.device = device
        self.details: dict[str, Any] = {}
        self.report: PhaseReport | None = None

    def finished(self) -> PhaseReport:
        if self.report is None:
            raise RuntimeError(f"phase {self.name!r} has not finished")
        return self.report


class PeakMemory:
    """Peak memory during a block: ``max_memory_allocated`` (and ``max_memory_reserved``) on CUDA and XPU,
    else host RSS sampled every 5 ms. ``allocator`` says which: only an allocator's peaks are recorded
    beside the memory model's predictions."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None
        self.reserved_peak: int | None = None
        self.measure = ""
        self.allocator = device.type in ("cuda", "xpu")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type in ("cuda", "xpu"):
            backend = getattr(torch, self.device.type)
            backend.synchronize(self.device)
            backend.reset_peak_memory_stats(self.device)
            self.measure = f"torch.{self.device.type}.max_memory_allocated"
        else:
            self.measure = "peak host RSS during the phase"
            self.peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._observe(rss_bytes())

    def _observe(self, current: int | None) -> None:
        if current is not None and (self.peak is None or current > self.peak):
            self.peak = current

    def __exit__(self, *exc: object) -> None:
        if self.device.type in ("cuda", "xpu"):
            backend = getattr(torch, self.device.type)
            backend.synchronize(self.device)
            self.peak = backend.max_memory_allocated(self.device)
            self.reserved_peak = backend.max_memory_reserved(self.device)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._observe(rss_bytes())


def checkpoint_sources(resolution: Resolution, options: RunOptions, lm: str | None) -> dict[str, str]:
    """Component → folder for a run: ``options.checkpoints`` as a mapping is taken as given; a folder (the
    options', else the request's ``--checkpoints``) must hold every component the run loads — the DiT the
    request chose, the VAE, the text encoder and, when it runs, the LM of the plan's size.

    :raises CheckpointError: naming what the folder lacks, or why one of its folders cannot load."""
    given = options.checkpoints
    if isinstance(given, Mapping):
        return {str(k): str(v) for k, v in given.items()}
    folder = given if given is not None else resolution.request.checkpoints
    if folder is None:
        return {}
    catalogue = scan(folder)
    dit = resolution.adjusted.dit_model
    missing = catalogue.missing(dit, lm)
    if missing:
        wanted = f"DiT {dit}" + (f", LM {lm}" if lm else "")
        raise CheckpointError(
            f"{folder}: a run of {wanted} needs {', '.join(missing)}, which the folder lacks "
            f"(`acestep-core models --checkpoints {folder}` lists what it holds)"
        )
    sources = {}
    for component, name in (("dit", dit), ("vae", None), ("text_encoder", None), ("lm", lm)):
        if component == "lm" and lm is None:
            continue
        found = catalogue.find(component, name)
        assert found is not None  # missing() said every one is there
        if found.problem:
            raise CheckpointError(found.problem)
        sources[component] = found.path
    return sources


def rss_bytes() -> int | None:
    """This process's resident memory now (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def device_for(resolution: Resolution) -> torch.device:
    """The torch device for a resolution's reading (its DiT's), where torch can reach it; else the CPU.

    ROCm is ``cuda`` to torch (HIP builds answer ``torch.cuda``); Intel GPUs are ``xpu``."""
    return torch_device(
        resolution.reading.device.backend,
        resolution.reading.device.index,
        simulated=resolution.reading.device.simulated,
    )


def run_devices(resolution: Resolution) -> list[torch.device]:
    """Every torch device a resolution's run uses (each component's, as :func:`device_for` maps one), in a
    fixed order: what a caller that runs one run per device at a time must hold (several with a layout)."""
    reading = resolution.reading
    found = {
        str(device): device
        for device in (
            torch_device(d.backend, d.index, simulated=d.simulated) for d in map(reading.device_of, COMPONENTS)
        )
    }
    return [found[key] for key in sorted(found)]


class DeviceGoneError(ResolutionError):
    """A device the resolution placed a component on is not there now (unplugged, hidden by
    ``CUDA_VISIBLE_DEVICES``, another card in its place): plan again."""


def devices_for(resolution: Resolution, *, torch_module: Any = torch) -> dict[str, torch.device]:
    """Each component's torch device, from the resolution's placement.

    A device of a backend this torch cannot reach at all (a replayed or simulated machine, a CPU-only
    torch) falls back to the CPU, as one device does. A device of a backend torch does reach, but which is
    not there now (an ordinal past ``device_count()``, or another card's UUID at its ordinal), is
    :class:`DeviceGoneError`, one message naming the device, the components placed on it and what torch
    sees now."""
    reading = resolution.reading
    placed: dict[str, DeviceMemory] = {c: reading.device_of(c) for c in COMPONENTS}
    devices = {
        c: torch_device(d.backend, d.index, simulated=d.simulated, torch_module=torch_module) for c, d in placed.items()
    }
    for key, memory in {d.key: d for d in placed.values()}.items():
        target = devices[next(c for c, d in placed.items() if d.key == key)]
        problem = _gone(memory, target, torch_module)
        if problem is not None:
            on = ", ".join(c for c, d in placed.items() if d.key == key)
            raise DeviceGoneError(
                f"{memory.describe()}, which the plan places the {on} on, {problem}; plan again "
                "(`acestep-core devices` lists what is there now)"
            )
    return devices


def _gone(memory: DeviceMemory, target: torch.device, torch_module: Any) -> str | None:
    """Why the planned device is not the one torch reaches at its ordinal; None when it is."""
    if memory.simulated or target.type != "cuda" or memory.index is None:
        return None
    count = torch_module.cuda.device_count()
    if memory.index >= count:
        plural = "s" if count != 1 else ""
        return f"is not visible now: torch sees {count} CUDA device{plural} ({_listing(count, torch_module)})"
    if memory.uuid and memory.uuid.upper().startswith("GPU-"):
        found = str(getattr(torch_module.cuda.get_device_properties(memory.index), "uuid", "") or "")
        if found and found.lower() not in memory.uuid.lower():
            there = _listing(count, torch_module)
            return f"is not the device at cuda:{memory.index} now (torch finds GPU-{found} there: {there})"
    return None


def _listing(count: int, torch_module: Any) -> str:
    return "; ".join(f"cuda:{i} = {torch_module.cuda.get_device_name(i)}" for i in range(count)) or "none"


def torch_device(
    backend: str, index: int | None = None, *, simulated: bool = False, torch_module: Any = torch
) -> torch.device:
    """The torch device for a reading's ``backend`` and ordinal where this torch can reach it, else the CPU."""
    ordinal = 0 if simulated or index is None else index
    if backend in ("cuda", "rocm") and torch_module.cuda.is_available():
        return torch.device("cuda", ordinal)
    if backend == "mps" and torch_module.backends.mps.is_available():
        return torch.device("mps")
    xpu = getattr(torch_module, "xpu", None)
    if backend == "xpu" and xpu is not None and xpu.is_available():
        return torch.device("xpu", ordinal)
    return torch.device("cpu")


def empty_cache(device: torch.device) -> None:
    """Return freed blocks of ``device``'s caching allocator to the system (CUDA/ROCm, MPS, XPU)."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
    elif device.type == "xpu" and hasattr(torch, "xpu"):
        torch.xpu.empty_cache()


@contextlib.contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers logs a warning at every dtype cast of a model built without ``from_pretrained``."""
    before = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(before)


def clean_caption(text: str) -> str:
    """The caption with only the characters the embedded tokenizer knows."""
    return "".join(c for c in text if c in TOKENIZER_CHARS)
