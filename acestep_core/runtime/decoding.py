"""Constrained decoding of the 5Hz LM: its ``duration:`` field and its audio codes stay inside the tier.

ACE-Step 1.5's LM writes chain-of-thought metadata, one ``field: value`` line each, between
``<think>`` and ``</think>``, then audio codes (5 a second of audio), then EOS. An unconstrained LM
may write ``duration: 600`` on a card whose tier allows 120 s, and then 3,000 codes whose KV cache
runs out of memory. :class:`DurationConstraint` is a ``transformers`` logits processor that:

* while the LM writes the ``duration:`` line, allows only token sequences that spell an integer in
  ``[min_duration_s, max_duration_s]`` followed by a newline. It blocks early: a digit (or a
  multi-digit token, or a space merged with digits) that could only lead past the limit is never
  sampled. With ``forced_duration_s`` the field can only spell that value;
* leaves every other token of the text alone, with two exceptions: a token that would itself enter
  the field (``": 7"`` after ``duration``) is checked like the field's own tokens, and EOS is not
  allowed inside the chain of thought (it would end the clip before a single code);
* after ``</think>``, allows only audio-code tokens and forces EOS after exactly duration × 5 codes
  (the duration the field holds, clamped to the current maximum), so generation never runs past
  the tier's budget;
* reads ``max_duration_s`` at every step, so a live change takes effect at once.

It works from each token's decoded text, so it does not care how a tokenizer splits digits: one
token per digit (Qwen3), several digits per token, or a space merged with the first digit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from acestep_core.vocabulary import CODES_PER_SECOND, MIN_DURATION_S

FIELD = "duration:"
FIELD_BODY = re.compile(r"( ?)([0-9]*)(\n?)\Z")
CANDIDATE = re.compile(r" ?[0-9]*\n?\Z")
"""ASCII digits only: ``\\d`` also matches Arabic-Indic or full-width digits, which ``int()`` reads as a
number the constraint never meant to allow."""
LINE_KEEP = 64
"""Characters of the current line kept per row: only its start decides whether it is the field."""

TEXT, FIELD_LINE, CODES, DONE = "text", "field", "codes", "done"


def token_texts(tokenizer: Any, size: int | None = None) -> list[str]:
    """Each token id's decoded text, for a ``tokenizers.Tokenizer`` or a ``transformers`` tokenizer.

    :param size: how many ids to decode (default: the tokenizer's whole vocabulary, added tokens included).
    """
    if hasattr(tokenizer, "decode_batch"):  # tokenizers.Tokenizer
        count = tokenizer.get_vocab_size(with_added_tokens=True) if size is None else size
        return list(tokenizer.decode_batch([[i] for i in range(count)], skip_special_tokens=False))
    count = len(tokenizer) if size is None else size
    return list(tokenizer.batch_decode([[i] for i in range(count)], skip_special_tokens=False))


@dataclass(frozen=True)
class RowState:
    """Where one sequence of the batch stands (see :meth:`DurationConstraint.rows`)."""

    phase: str
    """``text`` (chain of thought or before it), ``field`` (writing the duration), ``codes`` or ``done``."""
    duration_s: int | None
    """The duration the field holds once its newline is written."""
    codes: int
    """Audio codes written so far."""
    target_codes: int | None
    """Codes the row will write (duration × 5, clamped to the current maximum); None before the code phase."""


class _Row:
    __slots__ = ("codes", "cot_tokens", "duration", "line", "phase", "think_open")

    def __init__(self) -> None:
        self.phase = TEXT
        self.think_open = False
        self.line = ""
        self.duration: int | None = None
        self.codes = 0
        self.cot_tokens = 0


class DurationConstraint:
    """A ``transformers`` ``LogitsProcessor`` for the LM's duration field and its code phase.

    :param token_texts: each token id's decoded text (see :func:`token_texts`); ids past its end
        (a model vocabulary padded beyond the tokenizer's) are never allowed in a constrained step.
    :param code_token_ids: the ids of the audio-code tokens, contiguous (``range(first, last + 1)``).
    :param think_open_id: the id of ``<think>``; :param think_close_id: the id of ``</think>``.
    :param eos_token_id: the id that ends generation.
    :param max_duration_s: the largest duration the field may spell (the tier's max with LM, or an
        override); change it on a live processor with the attribute of the same name.
    :param min_duration_s: the smallest (10 s, ACE-Step's lower bound).
    :param forced_duration_s: the user's fixed duration: the field can spell only this value.
    :param max_cot_tokens: force ``</think>`` once the chain of thought has run this many generated
        tokens (never inside the field); None = no budget.
    :param codes_per_second: audio codes per second of audio (5).

    One processor serves one ``generate`` call; call :meth:`reset` (or build another) for the next.
    A row whose field was never written gets ``forced_duration_s`` or else ``max_duration_s`` seconds of
    codes. When a live change lowers the max below digits already written, the field ends at once
    and the codes follow the new max.
    """

    def __init__(
        self,
        token_texts: Sequence[str],
        *,
        code_token_ids: range,
        think_open_id: int,
        think_close_id: int,
        eos_token_id: int,
        max_duration_s: int,
        min_duration_s: int = MIN_DURATION_S,
        forced_duration_s: int | None = None,
        max_cot_tokens: int | None = None,
        codes_per_second: int = CODES_PER_SECOND,
    ) -> None:
        if code_token_ids.step != 1 or len(code_token_ids) == 0:
            raise ValueError("code_token_ids must be a non-empty contiguous range")
        if forced_duration_s is not None and forced_duration_s < 1:
            raise ValueError(f"forced_duration_s must be 1 or more, not {forced_duration_s}")
        self.texts = list(token_texts)
        self.code_ids = code_token_ids
        self.think_open_id = think_open_id
        self.think_close_id = think_close_id
        self.eos_token_id = eos_token_id
        self.min_duration_s = min_duration_s
        self.max_duration_s = max_duration_s
        self.forced_duration_s = forced_duration_s
        self.max_cot_tokens = max_cot_tokens
        self.codes_per_second = codes_per_second
        self.candidates = [(i, t) for i, t in enumerate(self.texts) if t and CANDIDATE.match(t)]
        """Tokens that can appear inside the field: digits, spaces, newlines and their merges."""
        self.entering = {
            k: [
                (i, t[len(FIELD) - k :])
                for i, t in enumerate(self.texts)
                if t.startswith(FIELD[k:]) and len(t) > len(FIELD) - k
            ]
            for k in range(len(FIELD) + 1)
        }
        """For a line that already holds ``FIELD[:k]``: tokens that complete the label and go on into the
        value, with the part that lands in the value."""
        self._allowed_cache: dict[tuple[Any, ...], list[int]] = {}
        self._masks: dict[tuple[str, Any, int], Any] = {}
        self.reset()

    # ------------------------------------------------------------------------------------- state
    def reset(self) -> None:
        """Forget every row: the next call starts a new generation."""
        self._rows: list[_Row] = []
        self._seen = 0

    @property
    def max_duration_s(self) -> int:
        return self._max_duration_s

    @max_duration_s.setter
    def max_duration_s(self, value: int) -> None:
        if value < self.min_duration_s:
            raise ValueError(f"max_duration_s {value} is below min_duration_s {self.min_duration_s}")
        self._max_duration_s = int(value)

    def rows(self) -> list[RowState]:
        """Each row's phase, duration and codes so far."""
        return [
            RowState(r.phase, r.duration, r.codes, self._target(r) if r.phase in (CODES, DONE) else None)
            for r in self._rows
        ]

    def _target(self, row: _Row) -> int:
        if self.forced_duration_s is not None:
            duration = row.duration if row.duration is not None else self.forced_duration_s
        else:  # a field cut short by a live max change may hold a value under the minimum
            duration = max(row.duration if row.duration is not None else self.max_duration_s, self.min_duration_s)
        return min(duration, self.max_duration_s) * self.codes_per_second

    def _advance(self, input_ids: Any) -> None:
        batch, length = input_ids.shape
        if len(self._rows) != batch or length <= self._seen:
            self._rows = [_Row() for _ in range(batch)]
            prompt = True
            new = input_ids.tolist()
        else:
            prompt = False
            new = input_ids[:, self._seen :].tolist()
        for row, tokens in zip(self._rows, new, strict=True):
            for token in tokens:
                self._step(row, token, generated=not prompt)
        self._seen = length

    def _step(self, row: _Row, token: int, *, generated: bool) -> None:
        if row.phase == DONE:
            return
        if row.phase == CODES:
            if token in self.code_ids:
                row.codes += 1
            elif token == self.eos_token_id:
                row.phase = DONE
            return
        if token == self.think_open_id:
            row.think_open, row.line = True, ""
            return
        if token == self.think_close_id:
            row.phase = CODES
            return
        if generated and row.think_open:
            row.cot_tokens += 1
        text = self.texts[token] if token < len(self.texts) else ""
        if "\n" in text:
            if row.phase == FIELD_LINE or (row.line + text).startswith(FIELD):
                body = (row.line + text)[len(FIELD) :].split("\n", 1)[0]
                digits = body.strip()
                row.duration = int(digits) if digits.isascii() and digits.isdigit() else row.duration
            row.line = text.rsplit("\n", 1)[1][:LINE_KEEP]
        else:
            row.line = (row.line + text)[:LINE_KEEP]
        row.phase = FIELD_LINE if row.think_open and row.line.startswith(FIELD) else TEXT

    # ------------------------------------------------------------------------------------- rules
    def field_body_ok(self, body: str) -> bool:
        """Whether ``body`` (the text after ``duration:``, a final newline meaning "done") can still
        become a valid duration line under the current limits."""
        match = FIELD_BODY.match(body)
        if match is None:
            return False
        digits, done = match.group(2), bool(match.group(3))
        if digits.startswith("0"):
            return False
        if self.forced_duration_s is not None:
            wanted = str(self.forced_duration_s)
            return digits == wanted if done else wanted.startswith(digits)
        low, high = self.min_duration_s, self.max_duration_s
        if done:
            return bool(digits) and low <= int(digits) <= high
        if not digits:
            return True
        return _can_reach(int(digits), low, high)

    def _field_allowed(self, body: str) -> list[int]:
        key = ("field", body, self.min_duration_s, self._max_duration_s, self.forced_duration_s)
        allowed = self._allowed_cache.get(key)
        if allowed is None:
            allowed = [i for i, t in self.candidates if self.field_body_ok(body + t)]
            if not allowed:  # only after a live max change below digits already written: end the line
                allowed = [i for i, t in self.candidates if t.strip(" ") == "\n" and FIELD_BODY.match(body + t)]
            if not allowed:
                raise ValueError(f"the vocabulary has no token to end the duration line after {body!r}")
            self._allowed_cache[key] = allowed
        return allowed

    def _entering_blocked(self, line: str) -> list[int]:
        k = len(line)
        if k > len(FIELD) or not FIELD.startswith(line):
            return []
        key = ("enter", k, self.min_duration_s, self._max_duration_s, self.forced_duration_s)
        blocked = self._allowed_cache.get(key)
        if blocked is None:
            blocked = [i for i, rest in self.entering[k] if not self.field_body_ok(rest)]
            self._allowed_cache[key] = blocked
        return blocked

    def _mask(self, name: str, ids: Any, scores: Any) -> Any:
        key = (name, scores.device, scores.shape[-1])
        mask = self._masks.get(key)
        if mask is None:
            mask = torch.zeros(scores.shape[-1], dtype=torch.bool)
            mask[list(ids)] = True
            mask = mask.to(scores.device)
            self._masks[key] = mask
        return mask

    # ------------------------------------------------------------------------------------- call
    def __call__(self, input_ids: Any, scores: Any) -> Any:
        self._advance(input_ids)
        codes_mask = self._mask("codes", self.code_ids, scores)
        eos_mask = self._mask("eos", [self.eos_token_id], scores)
        close_mask = self._mask("close", [self.think_close_id], scores)
        phases = [self._phase_rule(row) for row in self._rows]
        if all(p == "codes" for p in phases):
            return scores.masked_fill(~codes_mask, -torch.inf)
        if all(p is None for p in phases):
            return scores
        scores = scores.clone()
        for index, (row, rule) in enumerate(zip(self._rows, phases, strict=True)):
            if rule is None:
                continue
            if rule == "codes":
                scores[index].masked_fill_(~codes_mask, -torch.inf)
            elif rule == "eos":
                scores[index].masked_fill_(~eos_mask, -torch.inf)
            elif rule == "close":
                scores[index].masked_fill_(~close_mask, -torch.inf)
            elif rule == "field":
                allowed = self._field_allowed(row.line[len(FIELD) :])
                keep = torch.full_like(scores[index], -torch.inf)
                keep[allowed] = scores[index, allowed]
                scores[index] = keep
            elif rule == "entering":
                blocked = self._entering_blocked(row.line)
                scores[index, [*blocked, self.eos_token_id]] = -torch.inf
            elif rule == "no-eos":
                scores[index, self.eos_token_id] = -torch.inf
        return scores

    def _phase_rule(self, row: _Row) -> str | None:
        if row.phase == DONE:
            return "eos"
        if row.phase == CODES:
            return "eos" if row.codes >= self._target(row) else "codes"
        if row.phase == FIELD_LINE:
            return "field"
        if not row.think_open:
            return None
        if self.max_cot_tokens is not None and row.cot_tokens >= self.max_cot_tokens:
            return "close"
        if len(row.line) <= len(FIELD) and FIELD.startswith(row.line) and self._entering_blocked(row.line):
            return "entering"
        return "no-eos"


def _can_reach(prefix: int, low: int, high: int) -> bool:
    """Whether some integer in [low, high] starts with the decimal digits of ``prefix``."""
    scale = 1
    while prefix * scale <= high:
        if (prefix + 1) * scale - 1 >= low:
            return True
        scale *= 10
    return False


def audio_code_range(token_texts: Sequence[str], prefix: str = "<|audio_code_") -> range:
    """The contiguous id range of the ``<|audio_code_N|>`` tokens in a vocabulary, N ascending."""
    ids = [i for i, t in enumerate(token_texts) if t.startswith(prefix)]
    if not ids:
        raise ValueError(f"no {prefix}N|> tokens in the vocabulary")
    first, last = ids[0], ids[-1]
    if last - first + 1 != len(ids) or token_texts[first] != f"{prefix}0|>":
        raise ValueError("the audio-code tokens are not contiguous from <|audio_code_0|>")
    return range(first, last + 1)
