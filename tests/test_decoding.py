"""The duration constraint: valid durations, exact code counts, untouched text, live limits, any tokenizer."""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")

from acestep_core.runtime.decoding import DurationConstraint, audio_code_range, token_texts  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_CODES = 64
WORDS = ("duration", "bpm", "caption", "keyscale", "language", "timesignature", "major", "minor", "synth", "pop")
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :.,-'\n"
PROMPT = "<think>\nbpm: 120\ncaption: a synth pop track\nduration:"


def make_tokenizer(kind: str) -> tokenizers.Tokenizer:
    """``digits``: one token per digit (as Qwen3); ``bpe``: digits merged up to three, with a space in
    front and a newline behind; ``space``: a space merged with one digit, and ``: `` merges."""
    tokens = list(CHARS)
    for word in WORDS:
        tokens += [word[:n] for n in range(2, len(word) + 1)]
    if kind == "bpe":
        tokens += [str(n) for n in range(10, 1000)]
        tokens += [f" {n}" for n in range(0, 1000)]
        tokens += [f"{n}\n" for n in range(0, 1000)]
        tokens += [": ", ": 1", ": 2", ": 7", ": 70"]
    elif kind == "space":
        tokens += [f" {d}" for d in range(10)] + [": ", ": 3"]
    tokens = list(dict.fromkeys(tokens))
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [(t[:-1], t[-1]) for t in sorted(tokens, key=len) if len(t) > 1]
    for left, _ in merges:
        assert left in vocab, left
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=merges))
    tok.add_special_tokens(["<think>", "</think>", "<|endoftext|>"] + [f"<|audio_code_{i}|>" for i in range(N_CODES)])
    return tok


@pytest.fixture(scope="module", params=["digits", "bpe", "space"])
def vocab(request: pytest.FixtureRequest) -> tuple[tokenizers.Tokenizer, list[str]]:
    tok = make_tokenizer(request.param)
    return tok, token_texts(tok)


def constraint(tok: tokenizers.Tokenizer, texts: list[str], **kwargs) -> DurationConstraint:
    defaults = {"max_duration_s": 14, "max_cot_tokens": 6}
    return DurationConstraint(
        texts,
        code_token_ids=audio_code_range(texts),
        think_open_id=tok.token_to_id("<think>"),
        think_close_id=tok.token_to_id("</think>"),
        eos_token_id=tok.token_to_id("<|endoftext|>"),
        **(defaults | kwargs),
    )


def text_of(texts: list[str], token: int) -> str:
    """A token's text; ids of the padded model vocabulary past the tokenizer's have none."""
    return texts[token] if token < len(texts) else ""


def field_value(texts: list[str], generated: list[int]) -> str:
    """The text the LM wrote after ``duration:`` up to and including the newline."""
    text = ""
    for token in generated:
        text += text_of(texts, token)
        if "\n" in text:
            return text[: text.index("\n") + 1]
    return text


def check_row(texts: list[str], proc: DurationConstraint, generated: list[int], low: int, high: int) -> int:
    body = field_value(texts, generated)
    match = re.fullmatch(r" ?([1-9]\d*)\n", body)
    assert match, f"field {body!r} is not an integer line"
    duration = int(match.group(1))
    assert low <= duration <= high
    close = generated.index(proc.think_close_id)
    codes = generated[close + 1 : close + 1 + duration * 5]
    assert all(t in proc.code_ids for t in codes), "only codes after </think>"
    assert generated[close + 1 + duration * 5] == proc.eos_token_id, "EOS right after duration × 5 codes"
    return duration


def drive(
    proc: DurationConstraint, tok: tokenizers.Tokenizer, *, seed: int, batch: int, steps: int = 200, on_step=None
) -> list[list[int]]:
    """Generate with random logits (a stand-in for any model), sampling from the processed scores."""
    generator = torch.Generator().manual_seed(seed)
    prompt = tok.encode(PROMPT).ids
    ids = torch.tensor([prompt] * batch)
    vocab_size = len(proc.texts) + 5  # a model vocabulary padded past the tokenizer's
    eos = proc.eos_token_id
    for step in range(steps):
        scores = torch.randn(batch, vocab_size, generator=generator) * 4
        out = proc(ids, scores)
        if on_step is not None:
            on_step(step, ids[:, len(prompt) :].tolist(), scores, out)
        assert torch.isfinite(out.max(dim=-1).values).all(), "every row keeps a token to sample"
        token = torch.multinomial(out.softmax(-1), 1, generator=generator)
        ids = torch.cat([ids, token], dim=1)
        if (ids[:, len(prompt) :] == eos).any(dim=1).all():
            break
    return [row[len(prompt) :] for row in ids.tolist()]


@pytest.mark.parametrize("seed", range(12))
def test_random_logits_always_give_a_valid_duration_and_exact_codes(vocab, seed: int) -> None:
    tok, texts = vocab
    proc = constraint(tok, texts, max_duration_s=11 + seed % 5)
    for row in drive(proc, tok, seed=seed, batch=4):
        check_row(texts, proc, row, 10, proc.max_duration_s)


def test_the_limit_blocks_early_and_is_reachable(vocab) -> None:
    tok, texts = vocab
    proc = constraint(tok, texts, max_duration_s=240)
    assert proc.field_body_ok(" 2") and proc.field_body_ok(" 24") and proc.field_body_ok(" 240\n")
    assert not proc.field_body_ok(" 241"), "241 can only lead to 241 or 241x, past 240"
    assert not proc.field_body_ok(" 241\n") and not proc.field_body_ok(" 9\n") and not proc.field_body_ok(" 05")
    assert proc.field_body_ok(" 9") and proc.field_body_ok(" 25"), "9 can still become 90-99; 25 is in range"
    proc.max_duration_s = 24
    assert not proc.field_body_ok(" 3"), "3 is under 10 and 30 is past 24: blocked before it is sampled"
    assert not proc.field_body_ok(" 25") and proc.field_body_ok(" 2") and not proc.field_body_ok(" 2\n")
    assert not proc.field_body_ok("  1") and not proc.field_body_ok(" 12\n\n") and not proc.field_body_ok(" \n")
    proc.max_duration_s = 600
    assert proc.field_body_ok(" 600\n") and not proc.field_body_ok(" 601\n") and not proc.field_body_ok(" 7000")


@pytest.mark.parametrize("digits", ["١٢٠", "１２０", "²", "12٠"])
def test_only_ascii_digits_make_a_duration(vocab, digits: str) -> None:
    """``\\d`` matches Arabic-Indic and full-width digits, which ``int()`` reads as 120 (or fails on
    '²'): the field accepts ASCII digits only, as a duration line is parsed downstream."""
    tok, texts = vocab
    proc = constraint(tok, texts, max_duration_s=240)
    assert proc.field_body_ok(" 120\n")
    assert not proc.field_body_ok(f" {digits}") and not proc.field_body_ok(f" {digits}\n")


def test_seen_durations_cover_the_range(vocab) -> None:
    tok, texts = vocab
    proc = constraint(tok, texts, max_duration_s=13)
    seen = set()
    for seed in range(6):
        for row in drive(proc, tok, seed=100 + seed, batch=8):
            seen.add(check_row(texts, proc, row, 10, 13))
        proc.reset()
    assert len(seen) >= 3, seen


def test_forced_duration_is_written(vocab) -> None:
    tok, texts = vocab
    proc = constraint(tok, texts, max_duration_s=14, forced_duration_s=12)
    for row in drive(proc, tok, seed=7, batch=4):
        assert check_row(texts, proc, row, 12, 12) == 12


def test_text_outside_the_field_is_unchanged(vocab) -> None:
    tok, texts = vocab
    proc = constraint(tok, texts, max_cot_tokens=None)
    close, think = proc.think_close_id, proc.think_open_id
    untouched = 0

    def on_step(step: int, generated: list[list[int]], scores, out) -> None:
        nonlocal untouched
        for row, tokens in enumerate(generated):
            text = "".join("\n" if t == think else text_of(texts, t) for t in tokens)
            in_field = "\n" not in text
            line = "duration:" + text if in_field else text.rsplit("\n", 1)[-1]
            if in_field or close in tokens:
                continue
            changed = (out[row] != scores[row]).nonzero().flatten().tolist()
            assert out[row, proc.eos_token_id] == -torch.inf, "no EOS inside the chain of thought"
            if line == "duration":  # a token such as ": 7" would enter the field here
                assert all(texts[i].startswith(":") for i in changed if i != proc.eos_token_id)
                continue
            assert changed == [proc.eos_token_id], f"text {text!r} was constrained"
            untouched += 1

    drive(proc, tok, seed=3, batch=4, steps=45, on_step=on_step)
    assert untouched > 50


def codes_after_close(proc: DurationConstraint, row: list[int]) -> int:
    close = row.index(proc.think_close_id)
    tail = row[close + 1 :]
    count = next(i for i, t in enumerate(tail) if t not in proc.code_ids)
    assert tail[count] == proc.eos_token_id
    return count


@pytest.mark.parametrize("seed", range(4))
def test_changing_the_max_mid_run_takes_effect(vocab, seed: int) -> None:
    tok, texts = vocab
    proc = constraint(tok, texts, max_duration_s=600, max_cot_tokens=4)

    def lower_inside_the_field(step: int, generated, scores, out) -> None:
        if step == 0:  # the first digit was chosen under 600; every later token sees 11
            proc.max_duration_s = 11

    for row in drive(proc, tok, seed=seed, batch=4, on_step=lower_inside_the_field):
        digits = field_value(texts, row).strip()
        written = int(digits)
        assert written <= 600, "digits chosen under 600 may stand, and no digit is added past the new max"
        assert codes_after_close(proc, row) == min(max(written, 10), 11) * 5, "codes follow the new max"

    proc = constraint(tok, texts, max_duration_s=14, max_cot_tokens=4)

    def lower_during_codes(step: int, generated, scores, out) -> None:
        if step == 25:
            proc.max_duration_s = 10

    for row in drive(proc, tok, seed=seed, batch=4, on_step=lower_during_codes):
        assert codes_after_close(proc, row) <= 10 * 5 + 1, "codes stop at the new budget (+ the one sampled that step)"


def test_a_random_weight_tiny_lm_under_generate(vocab) -> None:
    from transformers import LogitsProcessorList

    from acestep_core.runtime.models import build_lm

    tok, texts = vocab
    lm = build_lm("tiny", vocab_size=len(texts) + 8)
    prompt = torch.tensor([tok.encode(PROMPT).ids] * 4)
    eos = tok.token_to_id("<|endoftext|>")
    for seed in range(4):
        proc = constraint(tok, texts, max_duration_s=12, max_cot_tokens=5)
        torch.manual_seed(seed)
        out = lm.generate(
            prompt,
            do_sample=True,
            max_new_tokens=5 + 12 * 5 + 20,
            logits_processor=LogitsProcessorList([proc]),
            eos_token_id=eos,
            pad_token_id=eos,
        )
        for row in out[:, prompt.shape[1] :].tolist():
            check_row(texts, proc, row, 10, 12)
        assert all(r.codes == r.target_codes for r in proc.rows())


def test_audio_code_range_and_errors() -> None:
    tok = make_tokenizer("digits")
    texts = token_texts(tok)
    codes = audio_code_range(texts)
    assert len(codes) == N_CODES and texts[codes[0]] == "<|audio_code_0|>"
    with pytest.raises(ValueError):
        audio_code_range(texts[: codes[0]])
    with pytest.raises(ValueError):
        constraint(tok, texts, max_duration_s=5)
