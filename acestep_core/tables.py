"""Tier tables as data: load a TOML file, validate it, render it as Markdown.

A table file mirrors :class:`~acestep_core.Tier` field for field::

    [table]
    name = "default"
    description = "..."
    real_card_tolerance = 0.05      # optional
    monotone_limits = true          # optional; false lets limits fall as memory grows (reproductions only)

    [[tiers]]
    name = "tier3"
    label = "Tier 3"
    min_gb = 6
    max_gb = 8                      # omit on the last tier: unbounded
    max_inclusive = false           # optional; true only for a "≤N GB" first tier
    max_duration_with_lm_s = 240
    max_duration_without_lm_s = 360
    max_batch_with_lm = 1
    max_batch_without_lm = 2
    lm_models = ["0.6B"]
    lm_default_on = true
    lm_memory_gb = { "0.6B" = 3 }   # optional per size; missing = no fixed allocation
    recommended_lm = "0.6B"         # optional: the LM `auto` loads; default the largest allowed
    dit_models = ["turbo", "base", "sft"]   # optional: the DiTs allowed; default the 2B ones
    optimizations = { flash_attention = true, cpu_offload = true, compile = true, quantization = "int8" }
    # optimizations.quantize_components = ["dit"]: the components the tier's quantization applies to (and the
    # ladder's int8 rung may take); default every one with Linear layers (lm, text_encoder, dit)
    # optional, for tables that reproduce another implementation exactly:
    class_tolerance_gb = 0.5        # a size this much below min_gb counts as min_gb (simulated too)
    lm_memory_ratio_min = [[0, 0.1], [24, 0.2]]   # floor of lm.gpu_memory_ratio from a device size on
    lm_memory_ratio_max = 0.9       # its ceiling

Any tier may set ``max_inclusive = true``; the next tier then starts just above that bound.
The tier ``name`` is its stable id (letters, digits, ``._-``), the label is free text.

Every problem is reported at once, each with its tier, field and a fix (:class:`TableError`).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from acestep_core import cache
from acestep_core.inputs import MAX_NESTING, TABLE_SIZE_LIMIT, InputFileError, nesting_depth, read_text_limited
from acestep_core.record import Record
from acestep_core.types import PRE_XL_DIT_MODELS, Tier, TierTable
from acestep_core.vocabulary import (
    DIT_MODELS,
    LM_SIZES,
    MAX_DURATION_S,
    MIN_DURATION_S,
    QUANTIZATIONS,
    QUANTIZED_COMPONENTS,
)

_TABLE_KEYS = {"name": str, "description": str, "real_card_tolerance": float, "monotone_limits": bool}
_TIER_KEYS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "label": str,
    "min_gb": float,
    "max_gb": float,
    "max_inclusive": bool,
    "max_duration_with_lm_s": int,
    "max_duration_without_lm_s": int,
    "max_batch_with_lm": int,
    "max_batch_without_lm": int,
    "lm_models": list,
    "lm_default_on": bool,
    "lm_memory_gb": dict,
    "optimizations": dict,
    "recommended_lm": str,
    "class_tolerance_gb": float,
    "lm_memory_ratio_min": (int, float, list),
    "lm_memory_ratio_max": float,
    "dit_models": list,
}
_OPTIONAL_TIER_KEYS = {
    "dit_models",
    "max_gb",
    "max_inclusive",
    "lm_memory_gb",
    "optimizations",
    "label",
    "recommended_lm",
    "class_tolerance_gb",
    "lm_memory_ratio_min",
    "lm_memory_ratio_max",
}
TIER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
OPTIMIZATION_KEYS: dict[str, type] = {
    "flash_attention": bool,
    "cpu_offload": bool,
    "dit_cpu_offload": bool,
    "compile": bool,
    "quantization": str,
    "quantize_components": list,
}
_LIMIT_FIELDS = (
    "max_duration_with_lm_s",
    "max_duration_without_lm_s",
    "max_batch_with_lm",
    "max_batch_without_lm",
)


class TableProblem(Record):
    tier: str | None
    field: str | None
    message: str
    fix: str

    def __str__(self) -> str:
        where = ".".join(part for part in (self.tier, self.field) if part) or "table"
        return f"{where}: {self.message} — fix: {self.fix}"


class TableError(ValueError):
    """A tier table that cannot be used; ``problems`` lists every reason."""

    def __init__(self, source: str, problems: list[TableProblem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid tier table {source}: {len(problems)} problem(s)\n{lines}")


def load_table(path: str | Path) -> TierTable:
    """Read and validate a table file. Raises :class:`TableError` listing every problem."""
    path = Path(path)
    try:
        text = read_text_limited(path, limit=TABLE_SIZE_LIMIT, what="tier table")
    except InputFileError as error:
        problem = str(error).removeprefix(f"{path}: ")
        raise TableError(str(path), [TableProblem(None, None, problem, "give a TOML tier table file")]) from None
    return parse_table(text, source=str(path))


TABLE_CACHE_FORMAT = 1
"""Part of every cached table's origin: raise it when parsing or validation changes what a text gives,
so that no table parsed by older code is taken from the cache."""


def parse_table(text: str, source: str = "<string>", *, environ: Mapping[str, str] | None = None) -> TierTable:
    """Parse and validate a table from TOML text.

    The parsed data is kept in the cache (:mod:`acestep_core.cache`, one file per ``source``, keyed
    by a content hash of ``text``), so that a start-up that reads the same tables as the last one
    imports no TOML parser. A cached value is validated exactly as parsed text is; one that fails,
    or any other bad file, is a miss: the text is parsed again. Only a valid table is cached."""
    if not text.strip():
        raise TableError(source, [TableProblem(None, None, "the file is empty", "start from `acestep-core tiers new`")])
    environ = os.environ if environ is None else environ
    name = f"toml-{zlib.crc32(source.encode()):08x}.json"
    origin = [TABLE_CACHE_FORMAT, cache.content_hash(text)]
    cached = cache.read(name, origin, environ)
    if isinstance(cached, dict) and nesting_depth(cached) <= MAX_NESTING:
        try:
            return table_from_dict(cached, source=source)
        except Exception:  # noqa: BLE001 - a cached value its text would not give: a miss
            pass
    data = _parse_toml(text, source)
    table = table_from_dict(data, source=source)
    cache.write(name, origin, data, environ)
    return table


def _parse_toml(text: str, source: str) -> dict[str, Any]:
    import tomllib  # only when the cache does not hold this text

    too_deep = TableError(
        source, [TableProblem(None, None, f"nested more than {MAX_NESTING} levels deep", "a tier table nests 3 levels")]
    )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TableError(
            source, [TableProblem(None, None, f"not valid TOML: {error}", "fix the TOML syntax")]
        ) from None
    except RecursionError:
        raise too_deep from None
    if nesting_depth(data) > MAX_NESTING:
        raise too_deep
    return data


def table_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> TierTable:
    problems: list[TableProblem] = []
    for key in data:
        if key not in ("table", "tiers"):
            problems.append(TableProblem(None, key, "unknown top-level key", "keep only [table] and [[tiers]]"))
    header = data.get("table")
    if not isinstance(header, Mapping):
        problems.append(TableProblem(None, "table", "missing [table] section", 'add [table] with name = "..."'))
        header = {}
    _check_keys(header, _TABLE_KEYS, required={"name"}, tier=None, problems=problems)
    tier_rows = data.get("tiers")
    if not isinstance(tier_rows, list) or not tier_rows:
        problems.append(TableProblem(None, "tiers", "no [[tiers]] rows", "add one [[tiers]] block per tier"))
        tier_rows = []
    tiers = [_tier(row, position, problems) for position, row in enumerate(tier_rows)]
    tolerance = header.get("real_card_tolerance", 0.05)
    tolerance_ok = _is_number(tolerance) and 0 <= tolerance < 0.5  # also refuses nan
    if _is_number(tolerance) and not tolerance_ok:
        problems.append(TableProblem(None, "real_card_tolerance", f"{tolerance} is outside [0, 0.5)", "use 0.05"))
    built = [tier for tier in tiers if tier is not None]
    if len(built) == len(tiers):
        problems.extend(
            check_table_sanity(
                built,
                monotone_limits=header.get("monotone_limits", True) is not False,
                real_card_tolerance=float(tolerance) if tolerance_ok else 0.0,
            )
        )
    if problems:
        raise TableError(source, problems)
    return TierTable(
        name=header["name"],
        description=header.get("description", ""),
        real_card_tolerance=float(tolerance),
        tiers=tuple(built),
        source=source,
        monotone_limits=header.get("monotone_limits", True) is not False,
    )


def table_as_data(table: TierTable) -> dict[str, Any]:
    """A table as the TOML data it would be read from (what :func:`table_to_toml` writes)."""
    header: dict[str, Any] = {
        "name": table.name,
        "description": table.description,
        "real_card_tolerance": table.real_card_tolerance,
    }
    rows = []
    for tier in table.tiers:
        row: dict[str, Any] = {"name": tier.name, "label": tier.label, "min_gb": tier.min_gb}
        if tier.max_gb is not None:
            row["max_gb"] = tier.max_gb
        row["max_inclusive"] = tier.max_inclusive
        row |= {limit: getattr(tier, limit) for limit in _LIMIT_FIELDS}
        row["lm_models"] = list(tier.lm_models) if isinstance(tier.lm_models, (list, tuple)) else tier.lm_models
        row["lm_default_on"] = tier.lm_default_on
        row["lm_memory_gb"] = dict(tier.lm_memory_gb) if isinstance(tier.lm_memory_gb, Mapping) else tier.lm_memory_gb
        row["optimizations"] = (
            dict(tier.optimizations) if isinstance(tier.optimizations, Mapping) else tier.optimizations
        )
        if tier.recommended_lm is not None:
            row["recommended_lm"] = tier.recommended_lm
        if tier.class_tolerance_gb:
            row["class_tolerance_gb"] = tier.class_tolerance_gb
        row["lm_memory_ratio_min"] = [list(step) for step in tier.lm_memory_ratio_min]
        row["lm_memory_ratio_max"] = tier.lm_memory_ratio_max
        row["dit_models"] = list(tier.dit_models) if isinstance(tier.dit_models, (list, tuple)) else tier.dit_models
        rows.append(row)
    if not table.monotone_limits:
        header["monotone_limits"] = False
    return {"table": header, "tiers": rows}


def validate_table(table: Any, source: str = "<code>") -> TierTable:
    """Check a table built in code (not read from TOML) by exactly the rules a TOML table meets, and
    return it as parsed from those data; raises :class:`TableError` listing every problem."""
    if not isinstance(table, TierTable):
        raise TableError(
            source, [TableProblem(None, None, f"{type(table).__name__} is not a TierTable", "return a TierTable")]
        )
    tiers = table.tiers if isinstance(table.tiers, (list, tuple)) else ()
    if not all(isinstance(tier, Tier) for tier in tiers) or not tiers:
        raise TableError(
            table.source or source,
            [TableProblem(None, "tiers", "not a non-empty tuple of Tier", "build it with parse_table")],
        )
    return table_from_dict(table_as_data(table), source=table.source or source)


class TableShape(Record):
    """What the sanity rules look at: the tiers in order, and the table-wide parameters."""

    tiers: tuple[Tier, ...]
    monotone_limits: bool = True
    real_card_tolerance: float = 0.0

    def pairs(self) -> Iterator[tuple[Tier, Tier]]:
        """Each tier with the one above it."""
        return itertools.pairwise(self.tiers)


SanityRule = Callable[[TableShape], Iterator[TableProblem]]


def check_table_sanity(
    tiers: Sequence[Tier], *, monotone_limits: bool = True, real_card_tolerance: float = 0.0
) -> list[TableProblem]:
    """The rules a table must keep beyond its schema (:data:`SANITY_RULES`, each one function):
    coverage, ranges, monotone limits, tolerances that stay within a tier, LMs that fit."""
    shape = TableShape(tuple(tiers), monotone_limits, real_card_tolerance)
    return [problem for rule in SANITY_RULES for problem in rule(shape)]


def _unique_names(shape: TableShape) -> Iterator[TableProblem]:
    names = [t.name for t in shape.tiers]
    for name in sorted({n for n in names if names.count(n) > 1}):
        yield TableProblem(name, "name", "name used by more than one tier", "give every tier its own name")


def _starts_at_zero(shape: TableShape) -> Iterator[TableProblem]:
    first = shape.tiers[0] if shape.tiers else None
    if first is not None and first.min_gb != 0:
        yield TableProblem(
            first.name, "min_gb", f"first tier starts at {first.min_gb} GB, leaving a gap from 0", "set min_gb = 0"
        )


def _contiguous(shape: TableShape) -> Iterator[TableProblem]:
    for lower, upper in shape.pairs():
        if lower.max_gb is None:
            yield TableProblem(lower.name, "max_gb", "unbounded tier is not the last", f"set max_gb = {upper.min_gb}")
        elif upper.min_gb > lower.max_gb:
            yield TableProblem(
                upper.name,
                "min_gb",
                f"gap: {lower.name} ends at {lower.max_gb} GB, {upper.name} starts at {upper.min_gb} GB",
                f"set min_gb = {lower.max_gb}",
            )
        elif upper.min_gb < lower.max_gb:
            yield TableProblem(
                upper.name,
                "min_gb",
                f"overlap: {lower.name} runs to {lower.max_gb} GB, {upper.name} starts at {upper.min_gb} GB",
                f"set min_gb = {lower.max_gb}",
            )


def _class_tolerance_within_the_tier_below(shape: TableShape) -> Iterator[TableProblem]:
    for lower, upper in shape.pairs():
        if not upper.class_tolerance_gb:
            continue
        if lower.max_inclusive:
            yield TableProblem(
                upper.name,
                "class_tolerance_gb",
                f"{lower.name} includes {lower.max_gb} GB, so sizes below it cannot belong to {upper.name}",
                f"set max_inclusive = false on {lower.name} or remove class_tolerance_gb",
            )
        if upper.class_tolerance_gb >= upper.min_gb - lower.min_gb:
            yield TableProblem(
                upper.name,
                "class_tolerance_gb",
                f"{upper.class_tolerance_gb:g} GB reaches past {lower.name}'s whole range",
                f"use less than {upper.min_gb - lower.min_gb:g}",
            )


def _real_card_tolerance_within_the_tier_below(shape: TableShape) -> Iterator[TableProblem]:
    """The fractional tolerance widens every boundary a tier below does not include: at each, it must
    stay inside that tier's range, as ``class_tolerance_gb`` must, or a detected card jumps a tier."""
    widened = [(lower, upper) for lower, upper in shape.pairs() if upper.min_gb > 0 and not lower.max_inclusive]
    if not shape.real_card_tolerance or not widened:
        return
    largest = min((upper.min_gb - lower.min_gb) / upper.min_gb for lower, upper in widened)
    for lower, upper in widened:
        slack = shape.real_card_tolerance * upper.min_gb
        if slack >= upper.min_gb - lower.min_gb:
            yield TableProblem(
                None,
                "real_card_tolerance",
                f"{shape.real_card_tolerance:g} of {upper.name}'s boundary {upper.min_gb:g} GB is {slack:g} GB, "
                f"which reaches past {lower.name}'s whole range ({lower.min_gb:g}-{upper.min_gb:g} GB): a detected "
                f"{lower.min_gb:g} GB card would get {upper.name}",
                f"use less than {largest:.4g}",
            )


def _monotone_limits(shape: TableShape) -> Iterator[TableProblem]:
    if not shape.monotone_limits:
        return
    for lower, upper in shape.pairs():
        for limit in _comparable_limits(lower, upper):
            if getattr(upper, limit) < getattr(lower, limit):
                yield TableProblem(
                    upper.name,
                    limit,
                    f"{getattr(upper, limit)} is below {lower.name}'s {getattr(lower, limit)}: limits must not fall "
                    "as memory grows",
                    f"set {limit} >= {getattr(lower, limit)}",
                )


def _keeps_lm_models(shape: TableShape) -> Iterator[TableProblem]:
    return _keeps_models(shape, "lm_models")


def _keeps_dit_models(shape: TableShape) -> Iterator[TableProblem]:
    return _keeps_models(shape, "dit_models")


def _keeps_models(shape: TableShape, field: str) -> Iterator[TableProblem]:
    """A tier allows every model (``field``: ``lm_models`` or ``dit_models``) the tier below it allows."""
    for lower, upper in shape.pairs():
        lost = [m for m in getattr(lower, field) if m not in getattr(upper, field)]
        if lost:
            yield TableProblem(upper.name, field, f"drops {lost} that {lower.name} allows", f"add {lost} to {field}")


def _last_unbounded(shape: TableShape) -> Iterator[TableProblem]:
    last = shape.tiers[-1] if shape.tiers else None
    if last is not None and last.max_gb is not None:
        yield TableProblem(
            last.name,
            "max_gb",
            f"last tier ends at {last.max_gb} GB: larger devices match no tier",
            "remove max_gb from the last tier",
        )


def _max_above_min(shape: TableShape) -> Iterator[TableProblem]:
    for tier in shape.tiers:
        if tier.max_gb is not None and tier.max_gb <= tier.min_gb:
            yield TableProblem(
                tier.name, "max_gb", f"max_gb {tier.max_gb} is not above min_gb {tier.min_gb}", "make max_gb > min_gb"
            )


def _inclusive_needs_a_bound(shape: TableShape) -> Iterator[TableProblem]:
    for tier in shape.tiers:
        if tier.max_inclusive and tier.max_gb is None:
            yield TableProblem(
                tier.name, "max_inclusive", "an unbounded tier has no upper bound to include", "remove max_inclusive"
            )


def _limits_in_range(shape: TableShape) -> Iterator[TableProblem]:
    for tier in shape.tiers:
        for limit in _LIMIT_FIELDS:
            value = getattr(tier, limit)
            if limit.startswith("max_duration") and not MIN_DURATION_S <= value <= MAX_DURATION_S:
                yield TableProblem(
                    tier.name,
                    limit,
                    f"{value} s is outside {MIN_DURATION_S}-{MAX_DURATION_S} s",
                    f"use a value in {MIN_DURATION_S}..{MAX_DURATION_S}",
                )
            if limit.startswith("max_batch") and value < 1:
                yield TableProblem(tier.name, limit, f"batch {value} is below 1", "use 1 or more")


def _lm_memory_for_allowed_models(shape: TableShape) -> Iterator[TableProblem]:
    for tier in shape.tiers:
        for model in tier.lm_memory_gb:
            if model not in tier.lm_models:
                yield TableProblem(
                    tier.name,
                    "lm_memory_gb",
                    f"allocation for {model}, which lm_models does not allow",
                    f"add {model} to lm_models or drop its allocation",
                )


def _lm_memory_fits_the_smallest_card(shape: TableShape) -> Iterator[TableProblem]:
    for tier in shape.tiers:
        for model, gb in tier.lm_memory_gb.items():
            if gb > tier.min_gb:
                yield TableProblem(
                    tier.name,
                    "lm_memory_gb",
                    f"{model} gets {gb} GB but the smallest device in this tier has {tier.min_gb} GB",
                    f"lower lm_memory_gb.{model} to at most {tier.min_gb}",
                )


def _first_tier_has_no_class_tolerance(shape: TableShape) -> Iterator[TableProblem]:
    first = shape.tiers[0] if shape.tiers else None
    if first is not None and first.class_tolerance_gb:
        yield TableProblem(
            first.name,
            "class_tolerance_gb",
            "the first tier has no lower boundary to widen",
            "remove class_tolerance_gb",
        )


def _lm_default_needs_an_lm(shape: TableShape) -> Iterator[TableProblem]:
    for tier in shape.tiers:
        if tier.lm_default_on and not tier.lm_models:
            yield TableProblem(
                tier.name, "lm_default_on", "LM on by default but no LM allowed", "set lm_default_on = false"
            )


SANITY_RULES: tuple[SanityRule, ...] = (
    _unique_names,
    _starts_at_zero,
    _contiguous,
    _class_tolerance_within_the_tier_below,
    _real_card_tolerance_within_the_tier_below,
    _monotone_limits,
    _keeps_lm_models,
    _keeps_dit_models,
    _last_unbounded,
    _max_above_min,
    _inclusive_needs_a_bound,
    _limits_in_range,
    _lm_memory_for_allowed_models,
    _lm_memory_fits_the_smallest_card,
    _first_tier_has_no_class_tolerance,
    _lm_default_needs_an_lm,
)
"""Every rule a table keeps beyond its schema, in the order their problems are listed."""


def _comparable_limits(lower: Tier, upper: Tier) -> tuple[str, ...]:
    """With-LM limits mean nothing on a tier with no LM, so they are compared only between LM tiers."""
    if lower.lm_models and upper.lm_models:
        return _LIMIT_FIELDS
    return tuple(limit for limit in _LIMIT_FIELDS if limit.endswith("without_lm") or limit.endswith("without_lm_s"))


def _tier(row: Any, position: int, problems: list[TableProblem]) -> Tier | None:
    if not isinstance(row, Mapping):
        problems.append(TableProblem(f"tiers[{position}]", None, "is not a table", "write it as a [[tiers]] block"))
        return None
    name: str = row["name"] if isinstance(row.get("name"), str) else f"tiers[{position}]"
    before = len(problems)
    _check_keys(row, _TIER_KEYS, required=set(_TIER_KEYS) - _OPTIONAL_TIER_KEYS, tier=name, problems=problems)
    models = row.get("lm_models", [])
    if isinstance(models, list):
        for model in models:
            if model not in LM_SIZES:
                problems.append(
                    TableProblem(name, "lm_models", f"unknown LM size {model!r}", f"use sizes from {list(LM_SIZES)}")
                )
        if isinstance(models, list) and [m for m in LM_SIZES if m in models] != models:
            problems.append(
                TableProblem(
                    name, "lm_models", "sizes not listed smallest first, or repeated", f"order them as {list(LM_SIZES)}"
                )
            )
    dits = row.get("dit_models", list(PRE_XL_DIT_MODELS))
    if isinstance(dits, list):
        unknown = [d for d in dits if d not in DIT_MODELS]
        if unknown:
            problems.append(
                TableProblem(name, "dit_models", f"unknown DiT {unknown[0]!r}", f"use names from {list(DIT_MODELS)}")
            )
        elif not dits:
            problems.append(
                TableProblem(name, "dit_models", "allows no DiT (every run needs one)", 'list at least "turbo"')
            )
        elif [d for d in DIT_MODELS if d in dits] != dits:
            problems.append(
                TableProblem(
                    name, "dit_models", "not listed in order, or repeated", f"order them as {list(DIT_MODELS)}"
                )
            )
    memory = row.get("lm_memory_gb", {})
    if isinstance(memory, Mapping):
        for model, gb in memory.items():
            if not _is_number(gb) or not math.isfinite(gb) or gb <= 0:
                problems.append(
                    TableProblem(
                        name, f"lm_memory_gb.{model}", f"{gb!r} is not a positive number of GB", "write e.g. 3"
                    )
                )
    optimizations = row.get("optimizations", {})
    if isinstance(optimizations, Mapping):
        _check_keys(
            optimizations, OPTIMIZATION_KEYS, required=set(), tier=name, problems=problems, prefix="optimizations."
        )
        quantization = optimizations.get("quantization")
        if isinstance(quantization, str) and quantization not in QUANTIZATIONS:
            problems.append(
                TableProblem(
                    name, "optimizations.quantization", f"unknown {quantization!r}", f"use one of {list(QUANTIZATIONS)}"
                )
            )
        quantized = optimizations.get("quantize_components")
        if isinstance(quantized, list) and (
            any(c not in QUANTIZED_COMPONENTS for c in quantized) or len(set(quantized)) != len(quantized)
        ):
            problems.append(
                TableProblem(
                    name,
                    "optimizations.quantize_components",
                    f"{quantized!r} is not a list of distinct components with Linear layers",
                    f'use names from {list(QUANTIZED_COMPONENTS)}, e.g. ["dit"]',
                )
            )
    for key in ("min_gb", "max_gb", "class_tolerance_gb"):
        value: Any = row.get(key)
        if _is_number(value) and (value < 0 or not math.isfinite(value)):
            problems.append(TableProblem(name, key, f"{value} is not a finite size >= 0", "use GB, e.g. 8"))
    if isinstance(row.get("name"), str) and not TIER_ID.fullmatch(row["name"]):
        problems.append(
            TableProblem(
                name,
                "name",
                "is not a stable id (letters, digits, '.', '_', '-'; no spaces)",
                'write e.g. name = "tier4" and put words in label',
            )
        )
    recommended = row.get("recommended_lm")
    if isinstance(recommended, str) and isinstance(models, list) and recommended not in models:
        fix = "remove recommended_lm (this tier allows no LM)" if not models else f"use one of {models}"
        problems.append(
            TableProblem(name, "recommended_lm", f"{recommended!r} is not among this tier's lm_models", fix)
        )
    ceiling = row.get("lm_memory_ratio_max", 0.9)
    if _is_number(ceiling) and not 0 < ceiling <= 1:
        problems.append(TableProblem(name, "lm_memory_ratio_max", f"{ceiling} is outside (0, 1]", "use e.g. 0.9"))
    floors = _ratio_steps(row.get("lm_memory_ratio_min", []), name, problems)
    if _is_number(ceiling) and floors and max(floor for _, floor in floors) > ceiling:
        problems.append(
            TableProblem(
                name,
                "lm_memory_ratio_min",
                f"a floor above the ceiling {ceiling:g}",
                "keep every floor <= lm_memory_ratio_max",
            )
        )
    if len(problems) > before:
        return None
    return Tier(
        name=row["name"],
        label=row.get("label", row["name"]),
        min_gb=float(row["min_gb"]),
        max_gb=float(row["max_gb"]) if "max_gb" in row else None,
        max_inclusive=row.get("max_inclusive", False),
        max_duration_with_lm_s=row["max_duration_with_lm_s"],
        max_duration_without_lm_s=row["max_duration_without_lm_s"],
        max_batch_with_lm=row["max_batch_with_lm"],
        max_batch_without_lm=row["max_batch_without_lm"],
        lm_models=tuple(models),
        lm_memory_gb={m: float(gb) for m, gb in memory.items()},
        lm_default_on=row["lm_default_on"],
        optimizations=dict(optimizations),
        recommended_lm=recommended,
        class_tolerance_gb=float(row.get("class_tolerance_gb", 0.0)),
        lm_memory_ratio_min=floors,
        lm_memory_ratio_max=float(ceiling),
        dit_models=tuple(dits),
    )


def _ratio_steps(value: Any, name: str, problems: list[TableProblem]) -> tuple[tuple[float, float], ...]:
    """``0.1`` or ``[[0, 0.1], [24, 0.2]]`` → ((0, 0.1), (24, 0.2)); a problem for anything else."""
    if _is_number(value):
        value = [[0, value]]
    fix = "write a ratio such as 0.1, or steps [[from_gb, ratio], ...] with from_gb ascending"
    if not isinstance(value, list):
        return ()
    steps: list[tuple[float, float]] = []
    for step in value:
        if not (isinstance(step, list) and len(step) == 2 and all(_is_number(v) for v in step)):
            problems.append(TableProblem(name, "lm_memory_ratio_min", f"{step!r} is not a [from_gb, ratio] pair", fix))
            return ()
        from_gb, floor = float(step[0]), float(step[1])
        if not (math.isfinite(from_gb) and from_gb >= 0 and 0 <= floor < 1) or (steps and from_gb <= steps[-1][0]):
            problems.append(
                TableProblem(
                    name, "lm_memory_ratio_min", f"{step!r}: sizes must ascend from 0 and ratios lie in [0, 1)", fix
                )
            )
            return ()
        steps.append((from_gb, floor))
    return tuple(steps)


def _check_keys(
    row: Mapping[str, Any],
    schema: Mapping[str, type | tuple[type, ...]],
    *,
    required: set[str],
    tier: str | None,
    problems: list[TableProblem],
    prefix: str = "",
) -> None:
    for key in row:
        if key not in schema:
            problems.append(
                TableProblem(tier, prefix + key, "unknown key", f"remove it; known keys: {', '.join(schema)}")
            )
    for key in sorted(required - set(row)):
        problems.append(TableProblem(tier, prefix + key, "missing", f"add {key} = <{_type_name(schema[key])}>"))
    for key, expected in schema.items():
        if key in row and not _has_type(row[key], expected):
            problems.append(
                TableProblem(
                    tier,
                    prefix + key,
                    f"{row[key]!r} is not {_type_name(expected)}",
                    f"write {key} as {_type_name(expected)}",
                )
            )


def _has_type(value: Any, expected: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return _is_number(value)
    return isinstance(value, expected)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(expected: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return names.get(expected, str(expected)) if isinstance(expected, type) else "a value"


# --------------------------------------------------------------------------------------------- render
def render_markdown(table: TierTable) -> str:
    """The table as the upstream document writes it (the document is generated from the data)."""
    rows = [
        "| VRAM | Tier | LM mode | Max duration | Max batch | LM memory | Recommended LM | DiT |",
        "|------|------|---------|--------------|-----------|-----------|----------------|-----|",
    ]
    for tier in table.tiers:
        rows.append(
            "| "
            + " | ".join(
                (
                    tier.vram_label(),
                    tier.label,
                    _lm_mode(tier),
                    _with_without(
                        tier, _minutes(tier.max_duration_with_lm_s), _minutes(tier.max_duration_without_lm_s)
                    ),
                    _with_without(tier, str(tier.max_batch_with_lm), str(tier.max_batch_without_lm)),
                    _lm_memory(tier),
                    _recommended(tier),
                    ", ".join(tier.dit_models),
                )
            )
            + " |"
        )
    return "\n".join(rows) + "\n"


def _lm_mode(tier: Tier) -> str:
    if not tier.lm_models:
        return "unavailable"
    if tier.lm_models == LM_SIZES and not tier.lm_memory_gb:
        return "all models"
    if len(tier.lm_models) == 1:
        return f"{tier.lm_models[0]} (optional)"
    return " / ".join(tier.lm_models)


def _recommended(tier: Tier) -> str:
    if tier.recommended_lm is None:
        return "-"
    return tier.recommended_lm if tier.lm_default_on else f"{tier.recommended_lm} (LM off by default)"


def _lm_memory(tier: Tier) -> str:
    if not tier.lm_models:
        return "-"
    if not tier.lm_memory_gb:
        return "unlimited"
    if len(tier.lm_models) == 1:
        return f"{tier.lm_memory_gb[tier.lm_models[0]]:g}GB"
    return ", ".join(f"{m}: {gb:g}GB" for m, gb in tier.lm_memory_gb.items())


def _with_without(tier: Tier, with_lm: str, without_lm: str) -> str:
    if not tier.lm_models or with_lm == without_lm:
        return without_lm
    return f"with LM: {with_lm} / without LM: {without_lm}"


def _minutes(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


# --------------------------------------------------------------------------------------------- write
def table_to_toml(table: TierTable, *, header_comment: str = "") -> str:
    """The table as a TOML file that :func:`parse_table` reads back to an equal table."""
    lines = [f"# {line}" if line else "#" for line in header_comment.splitlines()]
    if lines:
        lines.append("")
    lines += [
        "[table]",
        f"name = {_toml(table.name)}",
        f"description = {_toml(table.description)}",
        f"real_card_tolerance = {_toml(table.real_card_tolerance)}",
    ]
    if not table.monotone_limits:
        lines.append("monotone_limits = false")
    for tier in table.tiers:
        lines += [
            "",
            "[[tiers]]",
            f"name = {_toml(tier.name)}",
            f"label = {_toml(tier.label)}",
            f"min_gb = {_toml(tier.min_gb)}",
        ]
        if tier.max_gb is not None:
            lines.append(f"max_gb = {_toml(tier.max_gb)}")
        if tier.max_inclusive:
            lines.append("max_inclusive = true")
        lines += [f"{limit} = {getattr(tier, limit)}" for limit in _LIMIT_FIELDS]
        lines.append(f"lm_models = {_toml(list(tier.lm_models))}")
        lines.append(f"lm_default_on = {_toml(tier.lm_default_on)}")
        if tier.recommended_lm is not None:
            lines.append(f"recommended_lm = {_toml(tier.recommended_lm)}")
        if tier.dit_models != PRE_XL_DIT_MODELS:
            lines.append(f"dit_models = {_toml(list(tier.dit_models))}")
        if tier.class_tolerance_gb:
            lines.append(f"class_tolerance_gb = {_toml(tier.class_tolerance_gb)}")
        if tier.lm_memory_ratio_min:
            lines.append(f"lm_memory_ratio_min = {_toml([list(step) for step in tier.lm_memory_ratio_min])}")
        if tier.lm_memory_ratio_max != 0.9:
            lines.append(f"lm_memory_ratio_max = {_toml(tier.lm_memory_ratio_max)}")
        if tier.lm_memory_gb:
            lines.append(f"lm_memory_gb = {_toml(dict(tier.lm_memory_gb))}")
        if tier.optimizations:
            lines.append(f"optimizations = {_toml(dict(tier.optimizations))}")
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value.is_integer() else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")
