"""What a fleet accepts: every bound on a request body, and the parser that applies them.

A body is refused with one message and a 4xx status (:class:`BodyError`) before anything is
resolved or run: too large (413), not JSON, nested, an integer too long or out of range, a number
that is not finite, an unknown or missing field, a caption or lyrics over the LM's prompt budget
(400). Every bound is a field of :class:`RequestLimits`, configurable per application (the ``limits``
argument of :func:`acestep_core.runtime.fleet.app.app`).

Text is bounded in **tokens**, as the models read it: the caption goes through the text encoder and
the DiT's condition (≤256 tokens, the model's own limit), and caption + lyrics are the LM's prompt,
which the memory plan budgets at :data:`acestep_core.optimize.memory.DEFAULT_PROMPT_TOKENS` tokens.
With ``tokenizer`` (the LM checkpoint's ``tokenizer.json``) tokens are counted exactly; without one,
a text's UTF-8 bytes are counted instead: an upper bound for a byte-level BPE tokenizer such as
Qwen3's (a token covers at least one byte), and exact for the reference pipeline's one-token-a-character
tokenizer on ASCII.

Imports nothing heavy (no Ray, no torch): the parser is tested on its own.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

from acestep_core.optimize.memory import DEFAULT_PROMPT_TOKENS
from acestep_core.types import GenerationRequest

REQUEST_FIELDS = ("duration_s", "batch_size", "lm_model", "lm", "dit_model")
RUN_FIELDS: Mapping[str, type] = {
    "plan_only": bool,
    "steps": int,
    "seed": int,
    "caption": str,
    "lyrics": str,
    "audio": bool,
}
CAPTION_TOKENS = 256
"""The caption the DiT's condition encoder reads (ACE-Step 1.5: caption ≤256 tokens)."""
PROMPT_TEMPLATE_TOKENS = 24
"""Tokens of the LM prompt that are not the user's (the reference prompt's ``<think>`` and field names)."""


class BodyError(ValueError):
    """A body the fleet refuses: ``status`` (400, 413) and one message saying what to change."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RequestLimits:
    """Every bound on a request; the defaults are what ``fleet serve`` and the config use."""

    max_body_bytes: int = 64 * 1024
    """The whole HTTP body (a 413 above it); a request is a few fields, lyrics the longest."""
    max_caption_tokens: int = CAPTION_TOKENS
    max_prompt_tokens: int = DEFAULT_PROMPT_TOKENS - PROMPT_TEMPLATE_TOKENS
    """Caption + lyrics: the LM's prompt the memory plan budgets (1,024 tokens) less the template's own."""
    max_depth: int = 1
    """JSON nesting: 1 = one object of plain values (every field is a number, string, boolean or null)."""
    max_integer: int = 2**63 - 1
    """The largest integer in absolute value (any field); a longer literal is refused before it is parsed."""
    max_seed: int = 2**63 - 1
    max_steps: int = 200
    max_batch_size: int = 64
    """Above any tier's limit (they are clamped there); a bound on what is even resolved."""
    max_duration_s: float = 3600.0
    """As ``max_batch_size``: tiers clamp to their own limit (≤600 s); this refuses the absurd."""
    required: tuple[str, ...] = ("duration_s",)
    """Fields a body must name (``"duration_s": null`` lets the LM choose): an empty body is refused."""
    tokenizer: str | None = None
    """A ``tokenizer.json`` (the LM checkpoint's) to count tokens exactly; None: count UTF-8 bytes."""

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("required", "tokenizer"):
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"limit {item.name} must be a positive number, not {value!r}")
        unknown = sorted(set(self.required) - set(REQUEST_FIELDS) - set(RUN_FIELDS))
        if unknown:
            raise ValueError(f"limit required names unknown field(s) {', '.join(unknown)}")

    def to_dict(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)} | {"required": list(self.required)}


@dataclass(frozen=True)
class ParsedBody:
    """A body the limits accepted: the request, the run options, and the tokens its text takes."""

    request: GenerationRequest
    run: Mapping[str, Any]
    tokens: Mapping[str, int] = field(default_factory=dict)

    @property
    def plan_only(self) -> bool:
        return bool(self.run.get("plan_only"))


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_INTEGER_DIGITS = re.compile(r"-?\d+")


def parse_body(raw: bytes | str, limits: RequestLimits = RequestLimits()) -> ParsedBody:
    """The request and run options of an HTTP body, or :class:`BodyError` naming what is wrong."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > limits.max_body_bytes:
        raise BodyError(f"the body is {len(data):,} bytes; the limit is {limits.max_body_bytes:,}", 413)
    if not data.strip():
        raise BodyError(f'the body is empty: send a JSON object such as {{"duration_s": 120}}{_needs(limits)}')
    depth = json_depth(data)
    if depth > limits.max_depth:
        raise BodyError(
            f"the body nests {depth} levels deep; the limit is {limits.max_depth} "
            "(one object whose fields are numbers, strings, booleans or null)"
        )
    try:
        body = json.loads(data, parse_int=_integer(limits), parse_constant=_no_constant)
    except BodyError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise BodyError(f"the body is not JSON: {_short(error)}") from None
    if not isinstance(body, dict):
        raise BodyError(f'the body must be a JSON object such as {{"duration_s": 120}}, not {type(body).__name__}')
    return parse_fields(body, limits)


def parse_fields(body: Mapping[str, Any], limits: RequestLimits = RequestLimits()) -> ParsedBody:
    """As :func:`parse_body`, for a body already decoded (the limits on its fields still apply)."""
    unknown = sorted(set(body) - set(REQUEST_FIELDS) - set(RUN_FIELDS))
    if unknown:
        known = ", ".join((*REQUEST_FIELDS, *RUN_FIELDS))
        raise BodyError(f"unknown field(s) {', '.join(_name(u) for u in unknown)}; known: {known}")
    missing = [name for name in limits.required if name not in body]
    if missing:
        raise BodyError(f"missing required field(s) {', '.join(missing)}{_needs(limits)}")
    for name, value in body.items():
        if isinstance(value, (dict, list)):
            raise BodyError(
                f"{name} must be a plain value, not a JSON {'object' if isinstance(value, dict) else 'array'}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise BodyError(f"{name} must be a finite number, not {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > limits.max_integer:
            raise BodyError(f"{name} is out of range: integers are limited to ±{limits.max_integer:,}")
    fields_ = {k: body[k] for k in REQUEST_FIELDS if k in body}
    if fields_.get("lm_model") is not None and not isinstance(fields_["lm_model"], str):
        raise BodyError(f'lm_model must be an LM size such as "1.7B" or null, not {fields_["lm_model"]!r}')
    if fields_.get("dit_model") is not None and not isinstance(fields_["dit_model"], str):
        raise BodyError(f'dit_model must be a DiT such as "turbo" or "xl-sft", or null, not {fields_["dit_model"]!r}')
    duration = fields_.get("duration_s")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration > limits.max_duration_s:
        raise BodyError(f"duration_s must be at most {limits.max_duration_s:g} s, not {duration:g}")
    batch = fields_.get("batch_size")
    if isinstance(batch, int) and not isinstance(batch, bool) and batch > limits.max_batch_size:
        raise BodyError(f"batch_size must be at most {limits.max_batch_size}, not {batch}")
    try:
        request = GenerationRequest(**fields_)
    except (TypeError, ValueError) as error:
        raise BodyError(str(error)) from None
    run = {k: body[k] for k in RUN_FIELDS if k in body}
    for key, value in run.items():
        kind = RUN_FIELDS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BodyError(f"{key} must be a {_kind(kind)}, not {_short_value(value)}")
    if not 1 <= run.get("steps", 1) <= limits.max_steps:
        raise BodyError(f"steps must be between 1 and {limits.max_steps}, not {run['steps']}")
    if not 0 <= run.get("seed", 0) <= limits.max_seed:
        raise BodyError(f"seed must be between 0 and {limits.max_seed:,}, not {run['seed']}")
    tokens = _count_text(run, limits)
    return ParsedBody(request, run, tokens)


def _count_text(run: Mapping[str, Any], limits: RequestLimits) -> dict[str, int]:
    count = token_counter(limits.tokenizer)
    how = "tokens" if limits.tokenizer else "tokens, counted as UTF-8 bytes: at most one token a byte"
    tokens = {name: count(run[name]) for name in ("caption", "lyrics") if run.get(name)}
    caption = tokens.get("caption", 0)
    if caption > limits.max_caption_tokens:
        raise BodyError(f"caption is {caption:,} {how}; the limit is {limits.max_caption_tokens:,} tokens")
    prompt = sum(tokens.values())
    if prompt > limits.max_prompt_tokens:
        raise BodyError(
            f"caption + lyrics are {prompt:,} {how}; the LM's prompt budget is {limits.max_prompt_tokens:,} tokens"
        )
    return tokens


@lru_cache(maxsize=4)
def token_counter(tokenizer: str | None) -> Callable[[str], int]:
    """Tokens of a text: the ``tokenizer.json``'s count, or the UTF-8 bytes (an upper bound)."""
    if tokenizer is None:
        return lambda text: len(text.encode("utf-8", "surrogatepass"))
    from tokenizers import Tokenizer

    loaded = Tokenizer.from_file(tokenizer)
    return lambda text: len(loaded.encode(text, add_special_tokens=False).ids)


def json_depth(data: bytes) -> int:
    """How deep the JSON text nests objects and arrays (strings skipped), without parsing it."""
    depth = deepest = 0
    for byte in _STRING.sub(b'""', data):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def _integer(limits: RequestLimits) -> Callable[[str], int]:
    longest = len(str(limits.max_integer))

    def parse(text: str) -> int:
        if len(text.lstrip("-")) > longest:
            raise BodyError(
                f"an integer of {len(text.lstrip('-')):,} digits; integers are limited to ±{limits.max_integer:,}"
            )
        return int(text)

    return parse


def _no_constant(name: str) -> float:
    raise BodyError(f"{name} is not a number JSON allows; numbers must be finite")


def _needs(limits: RequestLimits) -> str:
    if not limits.required:
        return ""
    return f" (required: {', '.join(limits.required)}; " + '"duration_s": null lets the LM choose)'


def _kind(kind: type) -> str:
    return {bool: "boolean (true or false)", int: "whole number", str: "string"}.get(kind, kind.__name__)


def _name(name: str) -> str:
    return name if len(name) <= 40 else name[:40] + "…"


def _short_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "…"


def _short(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]
