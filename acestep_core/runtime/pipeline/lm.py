"""The LM phase: chain of thought and audio codes, the duration kept inside the tier by
:class:`~acestep_core.runtime.decoding.DurationConstraint`."""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from acestep_core.runtime.decoding import DurationConstraint, audio_code_range, token_texts
from acestep_core.runtime.models import CODES_PER_SECOND, build_lm, build_tokenizer
from acestep_core.runtime.pipeline.records import PhaseReport
from acestep_core.runtime.pipeline.session import RunSession, clean_caption

TINY_CODES = 1024
"""Audio-code tokens of the embedded tokenizer (the real LM has 64,000)."""
REAL_CODES = 64000
COT_TOKEN_BUDGET = 32
"""Generated chain-of-thought tokens after which ``</think>`` is forced (random weights never close it)."""


class _ProgressAndCancel(StoppingCriteria):
    """Counts generated tokens for the progress bar and stops generation when the run is cancelled."""

    def __init__(self, session: RunSession, bar: Any, budget: int) -> None:
        self.session = session
        self.bar = bar
        self.budget = budget
        self.generated = 0
        """Counted here: a disabled tqdm bar (``progress=False``) does not count."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        self.generated += 1
        self.bar.update(1)
        self.session.progress("lm", self.generated, self.budget)
        stop = self.session.cancel.cancelled
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


def run_lm(
    session: RunSession, batch: int, duration_s: float | None, max_duration_s: int
) -> tuple[PhaseReport, list[float], list[list[int]]]:
    """Generate ``batch`` rows of chain of thought + codes; the durations are what the codes cover."""
    size = session.options.size
    lm_model = session.resolution.plan.value("ladder.lm_model", session.resolution.adjusted.lm_model)
    forced = None if duration_s is None else max(1, round(duration_s))
    loading = "lm" in session.sources
    with session.phase("lm") as phase:
        built = None if loading else build_tokenizer(TINY_CODES if size == "tiny" else REAL_CODES)
        lm_size = "tiny" if size == "tiny" else lm_model
        vocab = built.get_vocab_size() if built is not None and lm_size == "tiny" else None
        lm = session.component("lm", lambda: build_lm(lm_size, vocab_size=vocab))
        tokenizer = built if built is not None else session.tokenizer("lm")
        texts = token_texts(tokenizer)
        eos = tokenizer.token_to_id("<|endoftext|>")
        code_tokens = audio_code_range(texts)
        codebook = session.codebook_size()
        constraint = DurationConstraint(
            texts,
            code_token_ids=range(code_tokens.start, code_tokens.start + min(len(code_tokens), codebook)),
            think_open_id=tokenizer.token_to_id("<think>"),
            think_close_id=tokenizer.token_to_id("</think>"),
            eos_token_id=eos,
            max_duration_s=max_duration_s,
            min_duration_s=min(10, max_duration_s),
            forced_duration_s=forced,
            max_cot_tokens=COT_TOKEN_BUDGET,
            codes_per_second=CODES_PER_SECOND,
        )
        caption = session.options.caption if loading else clean_caption(session.options.caption)
        prompt = f"{caption}\n<think>\nduration:"
        ids = torch.tensor([tokenizer.encode(prompt).ids] * batch, device=session.device)
        budget = COT_TOKEN_BUDGET + 8 + (forced or max_duration_s) * CODES_PER_SECOND + 2
        bar = session.bar("lm", budget, "tokens")
        torch.manual_seed(session.options.seed)
        output = lm.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            top_k=0,
            max_new_tokens=budget,
            logits_processor=LogitsProcessorList([constraint]),
            stopping_criteria=StoppingCriteriaList([_ProgressAndCancel(session, bar, budget)]),
            eos_token_id=eos,
            pad_token_id=eos,
        )
        bar.close()
        session.cancel.check()
        session.notes.append(
            "the prompt is written up to `duration:` and `</think>` is forced after "
            f"{COT_TOKEN_BUDGET} tokens of chain of thought (a random-weight LM writes neither); "
            "its codes reach the DiT through the DiT's audio tokenizer (FSQ code book) and detokenizer"
        )
        rows = output[:, ids.shape[1] :].tolist()
        del output, ids
        codes = [_codes_after_thinking(row, constraint) for row in rows]
        durations = [len(c) / CODES_PER_SECOND for c in codes]
        stand_in = f" (stand-in for {lm_model})" if lm_size == "tiny" and not loading else ""
        chosen = f"chosen by the LM within [{constraint.min_duration_s}, {max_duration_s}] s"
        phase.details.update(
            {
                "model": f"Qwen3ForCausalLM {session.loaded['lm'].name if loading else lm_size}{stand_in}",
                "vocabulary": int(lm.config.vocab_size),
                "audio_codes": f"{len(constraint.code_ids)} of the tokenizer's {len(code_tokens)} "
                "(the DiT's code book)",
                "duration_field": "forced to the request" if forced else chosen,
                "max_duration_s": max_duration_s,
                "durations_s": durations,
                "codes": [len(c) for c in codes],
                "generated_tokens": max(len(r) for r in rows),
            }
        )
        session.leave("lm")
    return phase.finished(), durations, codes


def _codes_after_thinking(row: list[int], constraint: DurationConstraint) -> list[int]:
    if constraint.think_close_id not in row:
        return []
    code_ids = constraint.code_ids
    return [t - code_ids.start for t in row[row.index(constraint.think_close_id) + 1 :] if t in code_ids]
