"""The text-encoder phase: the caption's embedding, shared by every batch item."""

from __future__ import annotations

import torch

from acestep_core.runtime.models import build_text_encoder, build_tokenizer
from acestep_core.runtime.pipeline.records import PhaseReport
from acestep_core.runtime.pipeline.session import RunSession, clean_caption

MAX_CAPTION_TOKENS = 256


def run_text_encoder(session: RunSession, batch: int) -> tuple[PhaseReport, torch.Tensor]:
    size = session.options.size
    with session.phase("text_encoder") as phase:
        encoder = session.component("text_encoder", lambda: build_text_encoder(size))
        tokenizer = session.tokenizer("text_encoder")
        caption = session.options.caption
        if tokenizer is None:
            tokenizer, caption = build_tokenizer(0), clean_caption(caption)
        tokens = tokenizer.encode(caption).ids[:MAX_CAPTION_TOKENS] or [0]
        ids = torch.tensor([tokens], device=session.device_of("text_encoder"))
        hidden = encoder(ids).last_hidden_state.expand(batch, -1, -1).contiguous()
        name = session.loaded["text_encoder"].name if "text_encoder" in session.loaded else size
        phase.details.update({"caption_tokens": ids.shape[1], "model": f"Qwen3Model {name}"})
        session.leave("text_encoder")
    return phase.finished(), hidden
