"""The reference pipeline: how a generation drives the framework, end to end.

::

    resolve(request)            tier, clamps and plan (the same call the CLI, the API and any UI make)
      → LM                      chain of thought + audio codes, under DurationConstraint
      → text encoder            the caption's embedding
      → DiT                     denoise latents: length from the duration, batch from the adjusted batch
      → VAE                     latents → 48 kHz stereo audio
      → WAV files               int16, written with the standard library

Each component is built (or loaded from a local checkpoint) on the CPU, has the plan applied, runs
its phase on the device and leaves it as the plan's ``offload.<component>`` says. Every phase reports
its device, time and peak memory; :class:`GenerationResult` holds them with the decisions behind them.

**The embedded models have random weights: the audio is noise.** The run shows and measures the flow;
with checkpoints (``checkpoints={"vae": DIR, ...}``) the same code runs trained models. Two stand-ins
are stated in every report: the random-weight LM gets its prompt up to ``duration:`` (a trained LM
writes the whole chain of thought itself), and the LM's codes reach the DiT through a fixed random
code embedding rather than ACE-Step's trained detokenizer.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import threading
import time
import wave
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acestep_core.models import (
    CODES_PER_SECOND,
    LATENT_CHANNELS,
    SAMPLE_RATE,
    build_dit,
    build_lm,
    build_text_encoder,
    build_tokenizer,
    build_vae,
    latent_frames,
    load_component,
)
from acestep_core.resolve import ResolutionError, resolve
from acestep_core.types import DetectOptions, GenerationRequest, Overrides, Resolution, to_jsonable

DEFAULT_DURATION_S = 30
"""Duration when the LM is off and the user gave none (clamped to the tier)."""
DEFAULT_CAPTION = "An upbeat synth-pop track with bright pads"
TINY_CODES = 1024
"""Audio-code tokens of the embedded tokenizer (the real LM has 64,000)."""
REAL_CODES = 64000
COT_TOKEN_BUDGET = 32
"""Generated chain-of-thought tokens after which ``</think>`` is forced (random weights never close it)."""
SIZES = ("tiny", "real")
PHASES = ("lm", "text_encoder", "dit", "vae")


class GenerationCancelledError(RuntimeError):
    """A run was cancelled through its :class:`CancelHandle` (or Ctrl-C); its memory is released."""


class CancelHandle:
    """Cancel a running generation from another thread: ``handle.cancel()``; the run stops at the next
    token, denoising step or decoded item, releases its models and raises :class:`GenerationCancelledError`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise GenerationCancelledError("generation cancelled")


@dataclass(frozen=True)
class PhaseReport:
    """One phase of a run: where it ran, how long, how much memory, and what shaped it."""

    name: str
    device: str
    seconds: float
    peak_bytes: int | None
    peak_measure: str
    """``torch.cuda.max_memory_allocated`` (device) or ``peak host RSS during the phase``."""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipReport:
    path: str
    duration_s: float
    samples: int
    codes: int | None


@dataclass(frozen=True)
class GenerationResult:
    """What a run produced and why: the resolution, the WAV files, each phase, the notes to read."""

    resolution: Resolution
    clips: tuple[ClipReport, ...]
    phases: tuple[PhaseReport, ...]
    size: str
    seconds: float
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution.to_dict(),
            "size": self.size,
            "seconds": self.seconds,
            "clips": to_jsonable(self.clips),
            "phases": to_jsonable(self.phases),
            "notes": list(self.notes),
            "decisions": decision_lines(self.resolution),
        }


ProgressCallback = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------- API
def generate(
    request: GenerationRequest | None = None,
    *,
    out_dir: str | Path,
    overrides: Overrides | None = None,
    detect_options: DetectOptions | None = None,
    tiers: str | None = None,
    environ: Mapping[str, str] | None = None,
    resolution: Resolution | None = None,
    **options: Any,
) -> GenerationResult:
    """Resolve ``request`` on this machine (exactly as ``acestep-core plan`` does) and run it.

    :param resolution: an already-made resolution (the CLI passes its own); else one is made here
        with :func:`acestep_core.resolve` from the other arguments.
    :param options: passed to :func:`run` (``size``, ``seed``, ``steps``, ``cancel``, ``progress``,
        ``on_progress``, ``caption``, ``checkpoints``, ``device``).
    """
    if resolution is None:
        resolution = resolve(request, overrides=overrides, detect_options=detect_options, tiers=tiers, environ=environ)
    return run(resolution, out_dir=out_dir, **options)


def run(
    resolution: Resolution,
    *,
    out_dir: str | Path,
    size: str = "tiny",
    seed: int = 0,
    steps: int = 8,
    caption: str = DEFAULT_CAPTION,
    cancel: CancelHandle | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    checkpoints: Mapping[str, str | Path] | None = None,
    device: str | None = None,
) -> GenerationResult:
    """Run a resolved request through LM → text encoder → DiT → VAE and write one WAV per batch item.

    :param size: ``tiny`` (the embedded CPU-sized models) or ``real`` (the real shapes: the LM the
        resolution chose, ACE-Step's DiT and VAE, Qwen3-Embedding-0.6B), random weights either way.
    :param steps: denoising steps (8: the turbo DiT).
    :param cancel: a :class:`CancelHandle`; :param on_progress: called as ``(phase, done, total)``.
    :param checkpoints: component → local directory of a trained checkpoint (see :func:`load_component`).
    :param device: ``cpu`` / ``cuda:0``; default: the resolution's device when torch can reach it.
    :raises GenerationCancelledError: when cancelled; every model is released first.
    """
    import torch

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    refusal = resolution.plan.value("ladder.refused")
    if refusal:
        raise ResolutionError(resolution.plan["ladder.refused"].reason)
    started = time.perf_counter()
    cancel = cancel or CancelHandle()
    out = Path(out_dir)
    run_state = _Run(resolution, size, torch.device(device) if device else _device_for(resolution), seed, steps, caption,
                     cancel, progress, on_progress, dict(checkpoints or {}))
    try:
        with torch.inference_mode():
            phases, clips = run_state.execute(out)
    finally:
        run_state.release()
    return GenerationResult(resolution, tuple(clips), tuple(phases), size, time.perf_counter() - started, tuple(run_state.notes))


# --------------------------------------------------------------------------------------------- the run
def run_limits(resolution: Resolution) -> tuple[int, float | None, int]:
    """The batch, the asked duration (None: the LM chooses) and the duration ceiling a run uses: the
    adjusted request's, lowered further where the plan's ladder had to (``ladder.batch_size``,
    ``ladder.duration_s``) so that the predicted peak fits the device."""
    adjusted, tier, plan = resolution.adjusted, resolution.tier, resolution.plan
    ceiling = tier.max_duration_s(adjusted.lm_on)
    duration = adjusted.duration_s
    if "ladder.duration_s" in plan:
        ceiling = min(ceiling, int(plan.value("ladder.duration_s")))
        duration = None if duration is None else min(duration, ceiling)
    return int(plan.value("ladder.batch_size", adjusted.batch_size)), duration, ceiling


class _Run:
    def __init__(self, resolution: Resolution, size: str, device: Any, seed: int, steps: int, caption: str,
                 cancel: CancelHandle, progress: bool, on_progress: ProgressCallback | None,
                 checkpoints: dict[str, str | Path]) -> None:
        self.resolution = resolution
        self.plan = resolution.plan.as_dict()
        self.size = size
        self.device = device
        self.seed = seed
        self.steps = steps
        self.caption = caption
        self.cancel = cancel
        self.progress = progress
        self.on_progress = on_progress
        self.checkpoints = checkpoints
        self.models: dict[str, Any] = {}
        self.batch, self.duration_s, self.max_duration_s = run_limits(resolution)
        self.applied: dict[str, Any] = {}
        self.notes: list[str] = ["random weights: the audio is noise; this run demonstrates and measures the flow"
                                 if len(checkpoints) < 4 else "trained checkpoints loaded for every component"]
        if resolution.reading.device.is_accelerator and device.type == "cpu":
            dropped = {k: v for k, v in self.plan.items()
                       if k.split(".")[0] in ("quantization", "offload") and k.count(".") == 1 and v != "none"}
            self.plan.update(dict.fromkeys(dropped, "none"))
            self.notes.append(
                f"the resolution is for {resolution.reading.device.name}, but torch cannot reach it: running on the CPU"
                + (f", without the plan's device-memory savings ({', '.join(f'{k}={v}' for k, v in dropped.items())}): "
                   "the CPU has no device memory to save and quanto's CPU kernels are slower" if dropped else ""))

    # ----------------------------------------------------------------------------------- phases
    def execute(self, out: Path) -> tuple[list[PhaseReport], list[ClipReport]]:
        import torch

        adjusted = self.resolution.adjusted
        batch = self.batch
        generator = torch.Generator().manual_seed(self.seed)
        phases: list[PhaseReport] = []
        codes: list[list[int]] | None = None
        if adjusted.lm_on:
            report, durations, codes = self._lm_phase(batch)
            phases.append(report)
        else:
            durations = [self._duration_without_lm()] * batch
        report, conditioning = self._text_phase(batch)
        phases.append(report)
        report, latents = self._dit_phase(batch, durations, codes, conditioning, generator)
        phases.append(report)
        report, audio = self._vae_phase(latents)
        phases.append(report)
        clips = write_clips(out, audio, durations, codes)
        return phases, clips

    def _lm_phase(self, batch: int) -> tuple[PhaseReport, list[float], list[list[int]]]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        from acestep_core.decoding import DurationConstraint, audio_code_range, token_texts

        adjusted = self.resolution.adjusted
        max_duration = self.max_duration_s
        forced = None if self.duration_s is None else max(1, round(self.duration_s))
        with self._phase("lm") as phase:
            tokenizer = build_tokenizer(TINY_CODES if self.size == "tiny" else REAL_CODES)
            texts = token_texts(tokenizer)
            lm_size = "tiny" if self.size == "tiny" else adjusted.lm_model
            lm = self._component("lm", lambda: build_lm(lm_size, vocab_size=len(texts) if lm_size == "tiny" else None))
            eos = tokenizer.token_to_id("<|endoftext|>")
            constraint = DurationConstraint(
                texts, code_token_ids=audio_code_range(texts), think_open_id=tokenizer.token_to_id("<think>"),
                think_close_id=tokenizer.token_to_id("</think>"), eos_token_id=eos,
                max_duration_s=max_duration, min_duration_s=min(10, max_duration), forced_duration_s=forced,
                max_cot_tokens=COT_TOKEN_BUDGET, codes_per_second=CODES_PER_SECOND,
            )
            prompt = f"{_clean(self.caption)}\n<think>\nduration:"
            ids = torch.tensor([tokenizer.encode(prompt).ids] * batch, device=self._device_of(lm))
            budget = COT_TOKEN_BUDGET + 8 + (forced or max_duration) * CODES_PER_SECOND + 2
            bar = self._bar("lm", budget, "tokens")
            run = self

            class _Watch(StoppingCriteria):
                def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                    bar.update(1)
                    run._report("lm", bar.n, budget)
                    return torch.full((input_ids.shape[0],), run.cancel.cancelled, dtype=torch.bool, device=input_ids.device)

            torch.manual_seed(self.seed)
            output = lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, max_new_tokens=budget,
                                 logits_processor=LogitsProcessorList([constraint]),
                                 stopping_criteria=StoppingCriteriaList([_Watch()]), eos_token_id=eos, pad_token_id=eos)
            bar.close()
            self.cancel.check()
            self.notes.append("random-weight LM: the prompt is written up to `duration:` and `</think>` is forced after "
                              f"{COT_TOKEN_BUDGET} tokens of chain of thought (a trained LM writes both itself); "
                              "its codes reach the DiT through a fixed random code embedding")
            rows = output[:, ids.shape[1]:].tolist()
            del output, ids
            code_ids = constraint.code_ids
            codes = [[t - code_ids.start for t in row[row.index(constraint.think_close_id) + 1:] if t in code_ids]
                     if constraint.think_close_id in row else [] for row in rows]
            durations = [len(c) / CODES_PER_SECOND for c in codes]
            phase.details.update({
                "model": f"Qwen3ForCausalLM {lm_size}" + (f" (stand-in for {adjusted.lm_model})" if lm_size == "tiny" else ""),
                "duration_field": "forced to the request" if forced else f"chosen by the LM within [{constraint.min_duration_s}, {max_duration}] s",
                "max_duration_s": max_duration,
                "durations_s": durations,
                "codes": [len(c) for c in codes],
                "generated_tokens": max(len(r) for r in rows),
            })
            self._leave("lm")
        return phase.report, durations, codes

    def _duration_without_lm(self) -> float:
        if self.duration_s is not None:
            return float(self.duration_s)
        duration = min(DEFAULT_DURATION_S, self.max_duration_s)
        self.notes.append(f"no duration asked and the LM is off: {duration} s")
        return float(duration)

    def _text_phase(self, batch: int) -> tuple[PhaseReport, Any]:
        import torch

        with self._phase("text_encoder") as phase:
            encoder = self._component("text_encoder", lambda: build_text_encoder(self.size))
            tokenizer = build_tokenizer(0)
            ids = torch.tensor([tokenizer.encode(_clean(self.caption)).ids[:256] or [0]], device=self._device_of(encoder))
            hidden = encoder(ids).last_hidden_state.expand(batch, -1, -1).contiguous()
            phase.details.update({"caption_tokens": ids.shape[1], "model": f"Qwen3Model {self.size}"})
            self._leave("text_encoder")
        return phase.report, hidden

    def _dit_phase(self, batch: int, durations: list[float], codes: list[list[int]] | None, conditioning: Any,
                   generator: Any) -> tuple[PhaseReport, Any]:
        import torch

        frames = latent_frames(max(durations))
        with self._phase("dit") as phase:
            dit = self._component("dit", lambda: build_dit(self.size))
            device, dtype = self._device_of(dit), self._dtype_of(dit)
            conditioning = _fit_width(conditioning, dit.config.encoder_hidden_size or dit.config.hidden_size, self.seed)
            conditioning = conditioning.to(device, dtype)
            context = _context_latents(codes, batch, frames, dit.config.in_channels - LATENT_CHANNELS, self.seed).to(device, dtype)
            latents = torch.randn(batch, frames, LATENT_CHANNELS, generator=generator).to(device, dtype)
            schedule = torch.linspace(1.0, 0.0, self.steps + 1)
            bar = self._bar("dit", self.steps, "steps")
            for step in range(self.steps):
                self.cancel.check()
                t = torch.full((batch,), float(schedule[step]), device=device, dtype=dtype)
                velocity = dit(latents, t, t, conditioning, context).sample
                latents = latents + (schedule[step + 1] - schedule[step]).item() * velocity
                bar.update(1)
                self._report("dit", step + 1, self.steps)
            bar.close()
            phase.details.update({"latent_frames": frames, "batch": batch, "steps": self.steps,
                                  "model": f"AceStepTransformer1DModel {self.size}"})
            latents = latents.transpose(1, 2).contiguous()
            self._leave("dit")
        return phase.report, latents

    def _vae_phase(self, latents: Any) -> tuple[PhaseReport, Any]:
        import torch

        with self._phase("vae") as phase:
            vae = self._component("vae", lambda: build_vae(self.size))
            latents = latents.to(self._device_of(vae), self._dtype_of(vae))
            bar = self._bar("vae", latents.shape[0], "clips")
            items = []
            for index in range(latents.shape[0]):
                self.cancel.check()
                items.append(_decode(vae, latents[index:index + 1], self.plan).float().cpu())
                bar.update(1)
                self._report("vae", index + 1, latents.shape[0])
            bar.close()
            audio = torch.cat(items)
            phase.details.update({"decode": self.plan.get("vae.decode", "full"), "model": f"AutoencoderOobleck {self.size}"})
            self._leave("vae")
        return phase.report, audio

    # ----------------------------------------------------------------------------------- components
    def _component(self, name: str, build: Callable[[], Any]) -> Any:
        """Build (or load) on the CPU, then apply the plan: precision, attention, quantization, placement."""
        path = self.checkpoints.get(name)
        with _quiet_diffusers():
            model = load_component(name, path) if path else build()
        self.models[name] = model
        try:
            from acestep_core.optimize.apply import apply_plan
        except ImportError:  # the optimizations package is optional: plain precision and placement
            apply_plan = None
        if apply_plan is not None:
            with _quiet_diffusers():
                applied = apply_plan(model, name, self.plan, device=self.device)
            self.applied[name] = applied
            self._phase_details(name)["applied"] = list(applied.steps)
            return applied.model
        dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(self.plan.get(f"precision.{name}", "fp32"))
        import torch

        model.to(device=self.device, dtype=getattr(torch, dtype or "float32"))
        self._phase_details(name)["applied"] = [f"{dtype} on {self.device}"]
        return model

    def _leave(self, name: str) -> None:
        """End of a phase: the component leaves the device if the plan offloads it."""
        offload = self.plan.get(f"offload.{name}", "none")
        applied = self.applied.get(name)
        if offload == "none" or self.device.type == "cpu":
            return
        if applied is not None and hasattr(applied, "offload"):
            applied.offload()
        elif offload == "model":
            self.models[name].to("cpu")
        self._phase_details(name)["offloaded"] = f"back to the CPU after its phase ({offload} offload)"

    def release(self) -> None:
        """Drop every model and tensor this run holds; return device memory to the allocator's pool."""
        self.models.clear()
        self.applied.clear()
        gc.collect()
        with contextlib.suppress(Exception):
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def _device_of(self, model: Any) -> Any:
        """Where ``model`` computes: always the run's device. Under offload hooks its parameters sit on
        the CPU between calls (the hook moves them in), so they cannot say where inputs belong."""
        return self.device

    def _dtype_of(self, model: Any) -> Any:
        for parameter in model.parameters():
            if parameter.dtype.is_floating_point:
                return parameter.dtype
        import torch

        return torch.float32

    # ----------------------------------------------------------------------------------- reporting
    _current: _Phase | None = None

    def _phase_details(self, name: str) -> dict[str, Any]:
        assert self._current is not None and self._current.name == name
        return self._current.details

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[_Phase]:
        self.cancel.check()
        phase = _Phase(name, str(self.device))
        self._current = phase
        with _PeakMemory(self.device) as memory:
            started = time.perf_counter()
            yield phase
            seconds = time.perf_counter() - started
        phase.report = PhaseReport(name, str(self.device), round(seconds, 4), memory.peak, memory.measure, dict(phase.details))
        self._current = None

    def _bar(self, name: str, total: int, unit: str) -> Any:
        from tqdm import tqdm

        return tqdm(total=total, desc=f"{name:<12}", unit=unit, disable=not self.progress, leave=False)

    def _report(self, phase: str, done: int, total: int) -> None:
        if self.on_progress is not None:
            self.on_progress(phase, done, total)


class _Phase:
    def __init__(self, name: str, device: str) -> None:
        self.name = name
        self.device = device
        self.details: dict[str, Any] = {}
        self.report: PhaseReport | None = None


class _PeakMemory:
    """Peak memory during a block: ``max_memory_allocated`` on CUDA, else host RSS sampled every 5 ms."""

    def __init__(self, device: Any) -> None:
        self.device = device
        self.peak: int | None = None
        self.measure = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _PeakMemory:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.measure = "torch.cuda.max_memory_allocated"
        else:
            self.measure = "peak host RSS during the phase"
            self.peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            current = rss_bytes()
            if current is not None and (self.peak is None or current > self.peak):
                self.peak = current

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            current = rss_bytes()
            if current is not None and (self.peak is None or current > self.peak):
                self.peak = current


def rss_bytes() -> int | None:
    """This process's resident memory now (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------------------- helpers
def _device_for(resolution: Resolution) -> Any:
    import torch

    device = resolution.reading.device
    if device.backend in ("cuda", "rocm") and not device.simulated and torch.cuda.is_available():
        return torch.device("cuda", device.index or 0)
    if device.backend in ("cuda", "rocm") and device.simulated and torch.cuda.is_available():
        return torch.device("cuda", 0)
    if device.backend == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """diffusers logs a warning at every dtype cast of a model built without ``from_pretrained``."""
    from diffusers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def _decode(vae: Any, latents: Any, plan: Mapping[str, Any]) -> Any:
    try:
        from acestep_core.optimize.vae import decode_with_plan
    except ImportError:  # no optimizations package: a whole decode
        return vae.decode(latents).sample
    return decode_with_plan(vae, latents, plan)


def _clean(text: str) -> str:
    from acestep_core.models import TOKENIZER_CHARS

    return "".join(c for c in text if c in TOKENIZER_CHARS)


def _fixed_random(rows: int, cols: int, seed: int) -> Any:
    import torch

    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) / math.sqrt(cols)


def _fit_width(hidden: Any, width: int, seed: int) -> Any:
    """Stand-in for ACE-Step's condition encoder where the text encoder's width differs from the DiT's."""
    if hidden.shape[-1] == width:
        return hidden
    return hidden.float() @ _fixed_random(hidden.shape[-1], width, seed + 1).to(hidden.device)


def _context_latents(codes: list[list[int]] | None, batch: int, frames: int, channels: int, seed: int) -> Any:
    """The DiT's context: source latents from the LM's codes (a fixed random code embedding, each 5 Hz
    code held for 5 latent frames) and a chunk mask of ones. Without the LM the source is silence."""
    import torch

    half = channels // 2
    source = torch.zeros(batch, frames, half)
    if codes:
        table = _fixed_random(max(max((max(c) for c in codes if c), default=0) + 1, 1), half, seed + 2)
        for row, row_codes in enumerate(codes):
            if row_codes:
                hints = table[torch.tensor(row_codes)].repeat_interleave(frames // max(len(row_codes), 1) or 1, dim=0)
                source[row, : min(frames, hints.shape[0])] = hints[:frames]
    return torch.cat([source, torch.ones(batch, frames, channels - half)], dim=-1)


def write_clips(out: Path, audio: Any, durations: list[float], codes: list[list[int]] | None) -> list[ClipReport]:
    """One 16-bit stereo WAV per batch item, cut to its duration, peak-normalised."""
    out.mkdir(parents=True, exist_ok=True)
    clips = []
    for index, duration in enumerate(durations):
        samples = round(duration * SAMPLE_RATE)
        item = audio[index, :, :samples].float()
        peak = float(item.abs().max()) or 1.0
        pcm = (item / peak * 32767 * 0.9).round().clamp(-32768, 32767).to(dtype=_int16()).T.contiguous()
        path = out / f"clip_{index:02d}.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(item.shape[0])
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(pcm.numpy().tobytes())
        clips.append(ClipReport(str(path), duration, samples, None if codes is None else len(codes[index])))
    return clips


def _int16() -> Any:
    import torch

    return torch.int16


def decision_lines(resolution: Resolution) -> list[str]:
    """The decisions that shaped a run, one line each: tier, clamps, overrides, the plan."""
    tier = resolution.tier
    lines = [f"tier: {tier.label} ({tier.vram_label()}) from table {resolution.table!r} "
             f"[{resolution.decided_by('select_tier')}]"]
    lines += [f"clamp: {change.reason} [{change.plugin}]" for change in resolution.adjusted.changes]
    lines += [f"override: {o.key} = {o.value!r} (the tier gave {o.default!r})" for o in resolution.overrides]
    for key in ("attention", "compile", *(f"precision.{c}" for c in PHASES), *(f"offload.{c}" for c in PHASES),
                *(f"quantization.{c}" for c in PHASES), "vae.decode", "memory.predicted_peak_gib"):
        if key in resolution.plan:
            setting = resolution.plan[key]
            lines.append(f"plan: {key} = {setting.value!r}: {setting.reason} [{setting.plugin}]")
    return lines


def render_report(result: GenerationResult) -> str:
    """The closing report, as text."""
    adjusted = result.resolution.adjusted
    lines = [f"generated {len(result.clips)} clip(s) in {result.seconds:.2f} s "
             f"({result.size} models; LM {adjusted.lm_model or 'off'}, batch {adjusted.batch_size})"]
    lines.append(f"{'phase':<13}{'device':<9}{'time':>9}  peak memory")
    for phase in result.phases:
        peak = "?" if phase.peak_bytes is None else f"{phase.peak_bytes / 2**20:,.0f} MiB"
        lines.append(f"{phase.name:<13}{phase.device:<9}{phase.seconds:>8.2f}s  {peak} ({phase.peak_measure})")
        for key, value in phase.details.items():
            lines.append(f"{'':<13}{key}: {value}")
    lines.append("clips")
    lines += [f"  {c.path}  {c.duration_s:g} s, {c.samples} samples" + ("" if c.codes is None else f", {c.codes} codes")
              for c in result.clips]
    lines.append("decisions")
    lines += [f"  {line}" for line in decision_lines(result.resolution)]
    if result.resolution.warnings:
        lines.append("warnings")
        lines += [f"  ! {w}" for w in result.resolution.warnings]
    lines.append("notes")
    lines += [f"  * {note}" for note in result.notes]
    return "\n".join(lines)


__all__ = [
    "CancelHandle",
    "ClipReport",
    "GenerationCancelledError",
    "GenerationResult",
    "PhaseReport",
    "decision_lines",
    "generate",
    "render_report",
    "rss_bytes",
    "run",
]
