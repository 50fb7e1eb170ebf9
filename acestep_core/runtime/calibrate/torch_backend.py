"""The calibrate backend that runs the real components (``models.build_*``) with torch."""

from __future__ import annotations

import gc
import math
import platform
from typing import Any

import diffusers
import torch
import transformers
from diffusers.utils import logging as diffusers_logging

from acestep_core.runtime import models
from acestep_core.runtime.calibrate.search import (
    CONDITION_TOKENS,
    CONTEXT_GB,
    NEW_TOKENS,
    PROMPT_OVERHEAD_TOKENS,
    SAFETY_MARGIN_GB,
    OutOfMemory,
    Trial,
)
from acestep_core.runtime.models import latent_frames
from acestep_core.runtime.vae_decode import decode
from acestep_core.vocabulary import CODES_PER_SECOND, GIB, MIB, VAE_HOP, VAE_TILE_FRAMES, VAE_TILE_OVERLAP


def cuda_available() -> bool:
    """CUDA, or ROCm (a HIP build of torch answers ``torch.cuda``)."""
    return torch.cuda.is_available()


def xpu_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    return xpu is not None and xpu.is_available()


def auto_device() -> str:
    """The device calibrate measures by default: CUDA/ROCm, else an Intel XPU, else the CPU."""
    if cuda_available():
        return "cuda"
    if xpu_available():
        return "xpu"
    return "cpu"


def gpu_platform() -> str:
    """How the GPU torch sees is reached, in words (``CUDA 13.0``, ``ROCm 6.4``, ``XPU``)."""
    hip = getattr(torch.version, "hip", None)
    if cuda_available():
        return f"ROCm {hip}" if hip else f"CUDA {torch.version.cuda}"
    return "XPU" if xpu_available() else "none"


class TorchBackend:
    """Real components (``models.build_*``) on a device.

    On CUDA (ROCm included: torch calls it ``cuda``) and Intel XPU each card is emulated with
    ``set_per_process_memory_fraction`` and the peak read from ``max_memory_allocated`` (the same
    calls exist in ``torch.cuda`` and ``torch.xpu``); on a CPU the footprint is estimated against
    ``card × cpu_unit_bytes``.
    """

    def __init__(
        self,
        device: str = "cuda",
        *,
        sizes: str = "real",
        dtype: str = "bf16",
        context_gb: float = CONTEXT_GB,
        margin_gb: float = SAFETY_MARGIN_GB,
        cpu_unit_bytes: int = MIB,
    ) -> None:
        self.torch = torch
        self.device = torch.device(device)
        self.on_cuda = self.device.type in ("cuda", "xpu")
        """On a GPU whose allocator can be capped (CUDA, ROCm or XPU); False on the CPU."""
        self.gpu: Any = getattr(torch, self.device.type) if self.on_cuda else None
        if self.on_cuda and self.device.index is None:
            # set_per_process_memory_fraction and the memory statistics need an explicit ordinal
            self.device = torch.device(self.device.type, self.gpu.current_device())
        self.sizes = sizes
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        self.context_gb = context_gb
        self.margin_gb = margin_gb
        self.unit_bytes = GIB if self.on_cuda else cpu_unit_bytes
        self.kind = f"torch-{self.device.type}-{sizes}-{dtype}"
        self._phase: str | None = None
        self._model: Any = None
        self._weights = 0
        self.last_reserved: int | None = None
        """``max_memory_reserved`` of the last trial (a GPU's allocator); None on the CPU or after an OOM."""
        if self.gpu is not None:
            self.gpu.init()
            self.total_bytes = self.gpu.get_device_properties(self.device).total_memory

    def cap_bytes(self, card_gb: float) -> int:
        return int((card_gb - self.context_gb - self.margin_gb) * self.unit_bytes)

    def environment(self) -> dict[str, Any]:
        torch = self.torch
        environment: dict[str, Any] = {
            "device": "CPU" if not self.on_cuda else self.gpu.get_device_name(self.device),
            "driver": None,
            "cuda_runtime": torch.version.cuda,
            "platform": gpu_platform() if self.on_cuda else "cpu",
            "sizes": self.sizes,
            "dtype": str(self.dtype),
            "python": platform.python_version(),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "diffusers": diffusers.__version__,
            },
            "budget": "allocator capped (set_per_process_memory_fraction)"
            if self.on_cuda
            else f"estimated footprint against card x {self.unit_bytes} bytes (CPU)",
        }
        if self.on_cuda:
            environment["total_bytes"] = self.total_bytes
            try:
                import pynvml  # only to name the driver in the results; absent without NVIDIA

                pynvml.nvmlInit()
                environment["driver"] = pynvml.nvmlSystemGetDriverVersion()
                pynvml.nvmlShutdown()
            except Exception as error:  # noqa: BLE001 - the driver version is a nice-to-have
                environment["driver"] = f"unknown ({type(error).__name__})"
        return environment

    # ----- models
    def _load(self, phase: str) -> Any:
        if phase.split(":")[0] == (self._phase or "").split(":")[0] and (
            phase.startswith("vae") or phase == self._phase
        ):
            return self._model
        self._unload()
        diffusers_logging.set_verbosity_error()
        torch = self.torch
        kind, _, size = phase.partition(":")
        self._set_cap(None)
        if kind == "vae":
            # built on the CPU and moved, as the pipeline does: weight norm's computed weights are plain
            # attributes that .to(device) leaves on the CPU (built on the device they stay there in fp32)
            model = models.build_vae(self.sizes, dtype=self.dtype).to(self.device)
        else:
            with torch.device(self.device):
                if kind == "lm":
                    model = models.build_lm("tiny" if self.sizes == "tiny" else size, dtype=self.dtype)
                else:
                    model = models.build_dit(self.sizes, dtype=self.dtype)
        self._phase, self._model = phase, model
        self._weights = sum(p.numel() * p.element_size() for p in model.parameters()) + sum(
            b.numel() * b.element_size() for b in model.buffers()
        )
        return model

    def _unload(self) -> None:
        self._model = None
        self._phase = None
        gc.collect()
        if self.on_cuda:
            self.gpu.empty_cache()

    def close(self) -> None:
        self._unload()
        self._set_cap(None)

    def _set_cap(self, card_gb: float | None) -> None:
        if not self.on_cuda:
            return
        fraction = 1.0 if card_gb is None else max(0.0, min(1.0, self.cap_bytes(card_gb) / self.total_bytes))
        self.gpu.set_per_process_memory_fraction(fraction, self.device)

    # ----- trials
    def run(self, trial: Trial) -> int:
        torch = self.torch
        model = self._load(trial.phase)
        self.last_reserved = None
        if self.on_cuda:
            gc.collect()
            self.gpu.empty_cache()
            self.gpu.synchronize(self.device)
            self.gpu.reset_peak_memory_stats(self.device)
            self._set_cap(trial.card_gb)
        try:
            with torch.inference_mode():
                held = self._workload(model, trial)
            if self.on_cuda:
                self.gpu.synchronize(self.device)
                self.last_reserved = int(self.gpu.max_memory_reserved(self.device))
                return int(self.gpu.max_memory_allocated(self.device))
            needed = self._weights + held
            if needed > self.cap_bytes(trial.card_gb):
                raise OutOfMemory(
                    f"estimated footprint {needed} bytes over the fake budget {self.cap_bytes(trial.card_gb)} (CPU)"
                )
            return needed
        except torch.OutOfMemoryError as error:
            raise OutOfMemory(str(error).split("\n")[0]) from None
        finally:
            if self.on_cuda:
                self._set_cap(None)
                gc.collect()
                self.gpu.empty_cache()

    def _workload(self, model: Any, trial: Trial) -> int:
        """Run the phase; return the bytes of what it held (the CPU estimate beyond the weights)."""
        torch = self.torch
        kind = trial.phase.split(":")[0]
        batch, frames = trial.batch, latent_frames(trial.duration_s)
        element = torch.finfo(self.dtype).bits // 8
        if kind == "lm":
            config = model.config
            prompt = trial.duration_s * CODES_PER_SECOND + PROMPT_OVERHEAD_TOKENS
            ids = torch.randint(0, config.vocab_size, (batch, prompt), device=self.device)
            output = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
            tokens = output.shape[1]
            kv = 2 * config.num_hidden_layers * batch * tokens * config.num_key_value_heads * config.head_dim * element
            return kv + batch * config.vocab_size * 4 + ids.numel() * 8
        if kind == "dit":
            config = model.config
            encoder_width = config.encoder_hidden_size or config.hidden_size
            condition = CONDITION_TOKENS if self.sizes == "real" else 64
            latents = torch.randn(batch, frames, config.audio_acoustic_hidden_dim, device=self.device, dtype=self.dtype)
            context = torch.randn(
                batch,
                frames,
                config.in_channels - config.audio_acoustic_hidden_dim,
                device=self.device,
                dtype=self.dtype,
            )
            encoder = torch.randn(batch, condition, encoder_width, device=self.device, dtype=self.dtype)
            timestep = torch.full((batch,), 0.5, device=self.device, dtype=self.dtype)
            out = model(latents, timestep, timestep, encoder, context, return_dict=False)[0]
            hidden = batch * math.ceil(frames / config.patch_size) * config.hidden_size * element
            return (latents.numel() + context.numel() + encoder.numel() + out.numel()) * element + 4 * hidden
        latents = torch.randn(batch, 64, frames, device=self.device, dtype=self.dtype)
        tiled = trial.phase != "vae:full"
        audio = decode(model, latents, tiled=tiled, tile_frames=VAE_TILE_FRAMES, overlap=VAE_TILE_OVERLAP)
        one_item = audio[:1].numel() * element
        working = 3 * 2 * (VAE_TILE_FRAMES + 2 * VAE_TILE_OVERLAP) * VAE_HOP * element if tiled else 3 * one_item
        # decoded items go to the CPU one by one (the one decode path): one item on the device at a time
        return one_item + working + latents.numel() * element
