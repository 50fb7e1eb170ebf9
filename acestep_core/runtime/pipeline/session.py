"""What one run holds while it runs: its device, its components, the phase being measured.

Each component is built (or loaded from a checkpoint folder, :func:`load_checkpoint`) on the CPU, has the
plan applied, runs its phase on the device and leaves it as the plan's ``offload.<component>`` says. Every
phase is measured (:class:`PeakMemory`) and reported as a :class:`PhaseReport`.
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
from acestep_core.runtime.apply import apply_plan
from acestep_core.runtime.models import TOKENIZER_CHARS, dit_config
from acestep_core.runtime.models.loader import LoadedCheckpoint, load_checkpoint
from acestep_core.runtime.pipeline.records import CancelHandle, PhaseReport, ProgressCallback, RunOptions
from acestep_core.types import Resolution

MEMORY_SAVINGS = ("quantization", "offload")
"""Plan key groups that only save device memory: dropped when the run falls back to the CPU."""


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
    ) -> None:
        self.resolution = resolution
        self.options = options
        self.cancel = cancel
        self.on_progress = on_progress
        self.device = torch.device(options.device) if options.device else device_for(resolution)
        self.plan: dict[str, Any] = resolution.plan.as_dict()
        self.models: dict[str, Any] = {}
        self.applied: dict[str, Any] = {}
        self.loaded: dict[str, LoadedCheckpoint] = {}
        self.sources = checkpoint_sources(resolution, options, lm)
        """Component → the folder it is loaded from (the others are built with random weights)."""
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
        if resolution.reading.device.is_accelerator and self.device.type == "cpu":
            self._drop_device_savings()

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
            applied = apply_plan(model, name, self.plan, device=self.device)
        self.applied[name] = applied
        self.details(name)["applied"] = list(applied.steps)
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

    def leave(self, name: str) -> None:
        """End of a phase: the component leaves the device if the plan offloads it, or is freed if
        the plan releases it (unified memory, where moving it to the CPU frees nothing)."""
        offload = self.plan.get(f"offload.{name}", "none")
        if offload == "release":
            self.models.pop(name, None)
            self.applied.pop(name, None)
            self.loaded.pop(name, None)
            gc.collect()
            empty_cache(self.device)
            self.details(name)["released"] = "freed after its phase (offload.release)"
            return
        if offload == "none" or self.device.type == "cpu":
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
        empty_cache(self.device)

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
        phase = Phase(name, str(self.device))
        self._current = phase
        self.progress(name, 0, 0)
        with PeakMemory(self.device) as memory:
            started = time.perf_counter()
            yield phase
            seconds = time.perf_counter() - started
        phase.report = PhaseReport(
            name, str(self.device), round(seconds, 4), memory.peak, memory.measure, dict(phase.details)
        )
        self._current = None
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
    """Peak memory during a block: ``max_memory_allocated`` on CUDA, else host RSS sampled every 5 ms."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None
        self.measure = ""
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
    """The torch device for a resolution's reading, where torch can reach it; else the CPU.

    ROCm is ``cuda`` to torch (HIP builds answer ``torch.cuda``); Intel GPUs are ``xpu``."""
    return torch_device(
        resolution.reading.device.backend,
        resolution.reading.device.index,
        simulated=resolution.reading.device.simulated,
    )


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
