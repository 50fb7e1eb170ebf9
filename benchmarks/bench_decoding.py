"""Benchmark: DurationConstraint's overhead per generated token, and the embedded generate's wall time.

    .venv/bin/python benchmarks/bench_decoding.py

1. The tiny LM on the CPU generates a chain of thought and 30 s of codes (150) under the constraint;
   every processor call is timed (between device synchronisations on a GPU), and the rest of each
   step is the model's. Goal: processor ≤ 5% of the step.
2. ``acestep-core generate --duration 30 --batch 2`` as the API runs it on this CPU (the CPU tier:
   batch 1, LM off), and the same request planned for a simulated 16 GB card (LM on, batch 2).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any


def measure_overhead(
    size: str, *, device: Any, dtype: Any, batch: int, duration_s: int, repeats: int = 3
) -> dict[str, Any]:
    """Generate under the constraint ``repeats`` times (the first is a warm-up); time the processor."""
    import torch
    from transformers import LogitsProcessorList

    from acestep_core.runtime.decoding import DurationConstraint, audio_code_range, token_texts
    from acestep_core.runtime.models import build_lm, build_tokenizer

    tokenizer = build_tokenizer(1024 if size == "tiny" else 64000)
    texts = token_texts(tokenizer)
    with torch.device(device):
        lm = build_lm(size, dtype=dtype, vocab_size=len(texts) if size == "tiny" else None)
    eos = tokenizer.token_to_id("<|endoftext|>")
    prompt = torch.tensor([tokenizer.encode("A synth-pop track\n<think>\nduration:").ids] * batch, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    class Timed:
        def __init__(self, inner: DurationConstraint) -> None:
            self.inner, self.seconds, self.calls = inner, 0.0, 0

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            sync()
            start = time.perf_counter()
            out = self.inner(input_ids, scores)
            sync()
            self.seconds += time.perf_counter() - start
            self.calls += 1
            return out

    samples = []
    for _ in range(repeats):
        processor = Timed(
            DurationConstraint(
                texts,
                code_token_ids=audio_code_range(texts),
                think_open_id=tokenizer.token_to_id("<think>"),
                think_close_id=tokenizer.token_to_id("</think>"),
                eos_token_id=eos,
                max_duration_s=600,
                forced_duration_s=duration_s,
                max_cot_tokens=32,
            )
        )
        torch.manual_seed(0)
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            out = lm.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=True,
                top_k=0,
                max_new_tokens=32 + 8 + duration_s * 5 + 2,
                logits_processor=LogitsProcessorList([processor]),
                eos_token_id=eos,
                pad_token_id=eos,
            )
        sync()
        wall = time.perf_counter() - start
        samples.append((wall, processor.seconds, processor.calls, out.shape[1] - prompt.shape[1]))
    wall, proc_s, calls, tokens = min(samples[1:] or samples, key=lambda s: s[0])
    model_s = wall - proc_s
    return {
        "lm": size,
        "batch": batch,
        "tokens": tokens,
        "processor_calls": calls,
        "step_ms": round(1e3 * wall / calls, 3),
        "model_ms_per_token": round(1e3 * model_s / calls, 3),
        "processor_us_per_token": round(1e6 * proc_s / calls, 1),
        "overhead_pct": round(100 * proc_s / model_s, 2),
    }


def time_generate(environ: dict[str, str], repeats: int = 2) -> dict[str, Any]:
    from acestep_core import GenerationRequest
    from acestep_core.runtime.pipeline import generate

    walls, result = [], None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = generate(
                GenerationRequest(duration_s=30, batch_size=2), out_dir=out, environ=environ, progress=False
            )
            walls.append(time.perf_counter() - start)
    assert result is not None
    adjusted = result.resolution.adjusted
    return {
        "request": "30 s × 2",
        "granted": f"{adjusted.duration_s:g} s × {adjusted.batch_size}, LM {adjusted.lm_model or 'off'}",
        "wall_s": [round(w, 2) for w in walls],
        "median_s": round(statistics.median(walls), 2),
        "phases_s": {p.name: p.seconds for p in result.phases},
    }


def main() -> None:
    import torch

    torch.set_num_threads(1)  # tiny matrices: a thread pool only adds contention (and this machine is shared)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    for batch in (1, 4):
        print(
            "processor overhead (tiny LM, CPU, fp32):",
            measure_overhead("tiny", device=torch.device("cpu"), dtype=torch.float32, batch=batch, duration_s=30),
        )
    print("generate, this CPU's tier:", time_generate({}))
    print("generate, planned for a simulated 16 GB card:", time_generate({"MAX_CUDA_VRAM": "16"}))


if __name__ == "__main__":
    main()
