"""The fleet's request bounds without Ray: every hostile body is refused with a 4xx and one message
before anything is resolved, and every bound is configurable."""

from __future__ import annotations

import json

import pytest

from acestep_core.runtime.fleet.limits import (
    BodyError,
    RequestLimits,
    json_depth,
    parse_body,
    token_counter,
)

HOSTILE = [
    pytest.param(b"x" * (64 * 1024 + 1), 413, "the limit is 65,536", id="body over 64 KiB"),
    pytest.param(b"", 400, "the body is empty", id="empty body"),
    pytest.param(b"   \n", 400, "the body is empty", id="blank body"),
    pytest.param(b"{}", 400, "missing required field(s) duration_s", id="empty object"),
    pytest.param(b"{not json", 400, "the body is not JSON", id="not JSON"),
    pytest.param(b"[1, 2]", 400, "must be a JSON object", id="array"),
    pytest.param(b'{"duration_s": 1e309}', 400, "duration_s must be a finite number", id="duration 1e309"),
    pytest.param(b'{"duration_s": NaN}', 400, "NaN is not a number JSON allows", id="NaN"),
    pytest.param(b'{"duration_s": -Infinity}', 400, "-Infinity is not a number JSON allows", id="-Infinity"),
    pytest.param(b'{"duration_s": 1' + b"0" * 4400 + b"}", 400, "an integer of 4,401 digits", id="4,401 digits"),
    pytest.param(b'{"duration_s": 1' + b"0" * 309 + b"}", 400, "an integer of 310 digits", id="10**309"),
    pytest.param(b'{"duration_s": 30, "seed": 18446744073709551616}', 400, "integers are limited", id="seed 2**64"),
    pytest.param(b'{"duration_s": 30, "seed": 9223372036854775808}', 400, "integers are limited", id="seed 2**63"),
    pytest.param(b'{"duration_s": 30, "seed": -1}', 400, "seed must be between 0", id="negative seed"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, 413, "the limit is 65,536", id="nested 100k deep (over size)"),
    pytest.param(b"[" * 30_000 + b"]" * 30_000, 400, "nests 30000 levels deep", id="nested 30k deep"),
    pytest.param(b'{"duration_s": {"a": 1}}', 400, "nests 2 levels deep", id="nested object"),
    pytest.param(b'{"duration_s": 30, "caption": "' + b"a" * 300 + b'"}', 400, "caption is 300 tokens", id="caption"),
    pytest.param(
        b'{"duration_s": 30, "caption": "a", "lyrics": "' + b"la " * 400 + b'"}',
        400,
        "caption + lyrics are 1,201 tokens",
        id="lyrics over the prompt budget",
    ),
    pytest.param(b'{"duration_s": 30, "steps": 0}', 400, "steps must be between 1 and 200", id="steps 0"),
    pytest.param(b'{"duration_s": 30, "steps": true}', 400, "steps must be a whole number", id="steps true"),
    pytest.param(b'{"duration_s": 30, "batch_size": 65}', 400, "batch_size must be at most 64", id="batch 65"),
    pytest.param(b'{"duration_s": 7200}', 400, "duration_s must be at most 3600 s", id="duration 2 h"),
    pytest.param(b'{"duration_s": -5}', 400, "duration_s must be a positive, finite number", id="duration -5"),
    pytest.param(b'{"duration_s": 30, "length": 30}', 400, "unknown field(s) length", id="unknown field"),
    pytest.param(b'{"duration_s": 30, "lm": "maybe"}', 400, "lm must be 'auto', 'on' or 'off'", id="lm"),
    pytest.param(b'{"duration_s": 30, "lm_model": 4}', 400, "lm_model must be an LM size", id="lm_model"),
    pytest.param(b'{"duration_s": 30, "dit_model": 2}', 400, "dit_model must be a DiT", id="dit_model type"),
    pytest.param(b'{"duration_s": 30, "dit_model": "sd3"}', 400, "dit_model must be one of turbo", id="dit_model"),
    pytest.param(b'{"duration_s": "\xff"}', 400, "the body is not JSON", id="not UTF-8"),
]


@pytest.mark.parametrize(("body", "status", "message"), HOSTILE)
def test_each_hostile_body_gets_its_4xx_and_one_message(body: bytes, status: int, message: str) -> None:
    with pytest.raises(BodyError) as refused:
        parse_body(body)
    assert refused.value.status == status
    assert message in str(refused.value), str(refused.value)
    assert "\n" not in str(refused.value) and "Traceback" not in str(refused.value)
    assert len(str(refused.value)) < 400


def test_a_good_body_parses_and_counts_its_tokens() -> None:
    parsed = parse_body(json.dumps({"duration_s": None, "batch_size": 2, "caption": "lo-fi", "lyrics": "la la"}))
    assert parsed.request.duration_s is None and parsed.request.batch_size == 2
    assert parsed.tokens == {"caption": 5, "lyrics": 5} and not parsed.plan_only
    at_the_limit = parse_body(json.dumps({"duration_s": 30, "caption": "a" * 256, "seed": 2**63 - 1}))
    assert at_the_limit.tokens["caption"] == 256
    assert parse_body(json.dumps({"duration_s": 30, "dit_model": "xl-sft"})).request.dit_model == "xl-sft"


def test_non_ascii_text_is_counted_as_its_utf8_bytes_an_upper_bound() -> None:
    assert token_counter(None)("é") == 2
    with pytest.raises(BodyError, match="caption is 258 tokens, counted as UTF-8 bytes"):
        parse_body(json.dumps({"duration_s": 30, "caption": "é" * 129}, ensure_ascii=False))


def test_every_limit_is_configurable() -> None:
    loose = RequestLimits(max_body_bytes=10**6, max_caption_tokens=1000, max_prompt_tokens=5000, max_steps=1000)
    assert parse_body(json.dumps({"duration_s": 30, "caption": "a" * 900, "steps": 500}), loose).run["steps"] == 500
    tight = RequestLimits(max_body_bytes=32, required=("duration_s", "caption"), max_depth=1)
    with pytest.raises(BodyError, match="limit is 32") as refused:
        parse_body(json.dumps({"duration_s": 30, "caption": "x" * 40}), tight)
    assert refused.value.status == 413
    with pytest.raises(BodyError, match="missing required field"):
        parse_body(b'{"duration_s": 30}', tight)
    assert parse_body(b"{}", RequestLimits(required=())).request.duration_s is None
    with pytest.raises(ValueError, match="max_steps must be a positive number"):
        RequestLimits(max_steps=0)
    with pytest.raises(ValueError, match="unknown field"):
        RequestLimits(required=("nope",))


def test_a_tokenizer_file_counts_tokens_exactly(tmp_path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = tokenizers.Tokenizer(WordLevel({"la": 0, "[UNK]": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    limits = RequestLimits(tokenizer=str(path), max_prompt_tokens=100)
    assert parse_body(json.dumps({"duration_s": 30, "lyrics": "la " * 100}), limits).tokens == {"lyrics": 100}
    with pytest.raises(BodyError, match="caption \\+ lyrics are 101 tokens; the LM's prompt budget is 100"):
        parse_body(json.dumps({"duration_s": 30, "lyrics": "la " * 101}), limits)


def test_json_depth_skips_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": "[[[{{{"}') == 1
    assert json_depth(b'{"a": "\\"[[["}') == 1
    assert json_depth(b"[[1], [[2]]]") == 3
