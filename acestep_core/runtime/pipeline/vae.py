"""The VAE phase: latents → 48 kHz stereo audio through the one decode path (each item moved to the CPU)."""

from __future__ import annotations

import torch

from acestep_core.runtime.models import build_vae
from acestep_core.runtime.pipeline.records import PhaseReport
from acestep_core.runtime.pipeline.session import RunSession
from acestep_core.runtime.vae_decode import decode_with_plan


def run_vae(session: RunSession, latents: torch.Tensor) -> tuple[PhaseReport, torch.Tensor]:
    size = session.options.size
    with session.phase("vae") as phase:
        vae = session.component("vae", lambda: build_vae(size))
        latents = session.hand_over(latents, "latents", "vae", session.dtype_of(vae))
        items = latents.shape[0]
        bar = session.bar("vae", items, "clips")

        def done(count: int) -> None:
            bar.update(1)
            session.progress("vae", count, items)
            session.cancel.check()

        session.cancel.check()
        audio = decode_with_plan(vae, latents, session.plan, on_item=done).float()
        bar.close()
        name = session.loaded["vae"].path if "vae" in session.loaded else size
        phase.details.update({"decode": session.plan.get("vae.decode", "full"), "model": f"AutoencoderOobleck {name}"})
        session.leave("vae")
    return phase.finished(), audio
