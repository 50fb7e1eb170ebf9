"""Compare two tier tables: sweep memory sizes and report where they decide differently.

Sizes are GiB and are placed in a tier exactly as a simulated size is (``TierTable.tier_for``):
each tier's class tolerance applies, the real-card tolerance does not, so the comparison is of the
tables' ranges.
"""

from __future__ import annotations

from dataclasses import field
from pathlib import Path
from typing import Any

from acestep_core.inputs import write_file
from acestep_core.record import Record
from acestep_core.types import Tier, TierTable

REAL_CARDS_GB: tuple[float, ...] = (4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 80)
"""Memory sizes of cards people own, always part of the sweep."""
SWEEP_MAX_GB = 80.0
SWEEP_STEP_GB = 0.25

COMPARED_FIELDS: tuple[str, ...] = (
    "max_duration_with_lm_s",
    "max_duration_without_lm_s",
    "max_batch_with_lm",
    "max_batch_without_lm",
    "lm_models",
    "lm_memory_gb",
    "lm_default_on",
    "recommended_lm",
    "optimizations",
)


class Difference(Record):
    """At one memory size (or a range of them): the tier each table picks and every field that differs."""

    from_gb: float
    to_gb: float
    tier_a: str
    tier_b: str
    fields: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from_gb": self.from_gb,
            "to_gb": self.to_gb,
            "tier_a": self.tier_a,
            "tier_b": self.tier_b,
            "differences": {name: {"a": a, "b": b} for name, (a, b) in self.fields.items()},
        }


class Comparison(Record):
    a: TierTable
    b: TierTable
    ranges: tuple[Difference, ...]
    """Contiguous sweep ranges where the decisions differ."""
    cards: tuple[Difference, ...]
    """Every real card size, whether or not the tables differ there (``fields`` empty when equal)."""

    @property
    def identical(self) -> bool:
        return not self.ranges and not any(card.fields for card in self.cards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"name": self.a.name, "source": self.a.source, "tiers": len(self.a.tiers)},
            "b": {"name": self.b.name, "source": self.b.source, "tiers": len(self.b.tiers)},
            "identical": self.identical,
            "sweep": {"from_gb": 0.0, "to_gb": SWEEP_MAX_GB, "step_gb": SWEEP_STEP_GB, "cards_gb": list(REAL_CARDS_GB)},
            "ranges": [r.to_dict() for r in self.ranges],
            "cards": [c.to_dict() for c in self.cards],
        }


def tier_for(table: TierTable, gib: float) -> Tier | None:
    return table.tier_for(gib)


def sweep_sizes(step_gb: float = SWEEP_STEP_GB, max_gb: float = SWEEP_MAX_GB) -> list[float]:
    steps = round(max_gb / step_gb)
    return sorted({round(i * step_gb, 6) for i in range(steps + 1)} | set(map(float, REAL_CARDS_GB)))


def differing_fields(a: Tier | None, b: Tier | None) -> dict[str, tuple[Any, Any]]:
    if a is None or b is None:
        return {"tier": (a.name if a else None, b.name if b else None)} if a is not b else {}
    found = {}
    for name in COMPARED_FIELDS:
        value_a, value_b = _plain(getattr(a, name)), _plain(getattr(b, name))
        if value_a != value_b:
            found[name] = (value_a, value_b)
    return found


def compare_tables(a: TierTable, b: TierTable, *, step_gb: float = SWEEP_STEP_GB) -> Comparison:
    """Sweep 0-80 GiB (and every size in :data:`REAL_CARDS_GB`) through both tables."""
    ranges: list[Difference] = []
    for gib in sweep_sizes(step_gb):
        tier_a, tier_b = tier_for(a, gib), tier_for(b, gib)
        fields = differing_fields(tier_a, tier_b)
        if not fields:
            continue
        name_a, name_b = _name(tier_a), _name(tier_b)
        last = ranges[-1] if ranges else None
        if (
            last
            and (last.tier_a, last.tier_b) == (name_a, name_b)
            and last.fields == fields
            and gib - last.to_gb <= step_gb + 1e-9
        ):
            ranges[-1] = Difference(last.from_gb, gib, name_a, name_b, fields)
        else:
            ranges.append(Difference(gib, gib, name_a, name_b, fields))
    cards = []
    for gib in REAL_CARDS_GB:
        tier_a, tier_b = tier_for(a, gib), tier_for(b, gib)
        cards.append(Difference(float(gib), float(gib), _name(tier_a), _name(tier_b), differing_fields(tier_a, tier_b)))
    return Comparison(a, b, tuple(ranges), tuple(cards))


def render_comparison(comparison: Comparison) -> str:
    a, b = comparison.a, comparison.b
    lines = [
        f"A = {a.name!r} ({len(a.tiers)} tiers, {a.source or 'no source'})",
        f"B = {b.name!r} ({len(b.tiers)} tiers, {b.source or 'no source'})",
    ]
    if comparison.identical:
        lines.append("the two tables decide the same at every size from 0 to 80 GB")
        return "\n".join(lines)
    lines.append("")
    lines.append("where they differ (sizes in GB, swept every 0.25 GB)")
    for diff in comparison.ranges:
        where = f"{diff.from_gb:g}" if diff.from_gb == diff.to_gb else f"{diff.from_gb:g}-{diff.to_gb:g}"
        lines.append(f"  {where:<12} A {diff.tier_a:<12} B {diff.tier_b}")
        lines.extend(f"  {'':<12}   {name}: {_show(va)} → {_show(vb)}" for name, (va, vb) in diff.fields.items())
    lines.append("")
    lines.append("real cards")
    for card in comparison.cards:
        status = (
            "same"
            if not card.fields
            else ", ".join(f"{name} {_show(va)} → {_show(vb)}" for name, (va, vb) in card.fields.items())
        )
        lines.append(f"  {card.from_gb:>5g} GB  A {card.tier_a:<12} B {card.tier_b:<12} {status}")
    return "\n".join(lines)


PLOT_FORMATS = (".png", ".svg", ".pdf")
"""The file formats :func:`plot_comparison` writes, by extension (matplotlib's Agg, SVG and PDF backends)."""


def plot_comparison(comparison: Comparison, path: str | Path, *, overwrite: bool = False) -> Path:
    """Max duration and max batch against memory for both tables (with and without the LM), as a
    PNG, SVG or PDF (by ``path``'s extension). Written whole or not at all; an existing file is
    replaced only with ``overwrite`` (:func:`acestep_core.inputs.write_file`)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sweep_sizes()
    figure, (durations, batches) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for table, colour in ((comparison.a, "tab:blue"), (comparison.b, "tab:orange")):
        tiers = [tier_for(table, gib) for gib in sizes]
        for lm_on, style in ((True, "-"), (False, "--")):
            suffix = "with LM" if lm_on else "without LM"
            limits = (
                (durations, [t.max_duration_s(lm_on) if t else 0 for t in tiers]),
                (batches, [t.max_batch(lm_on) if t else 0 for t in tiers]),
            )
            for axis, values in limits:
                axis.step(sizes, values, where="post", color=colour, linestyle=style, label=f"{table.name} {suffix}")
    durations.set_ylabel("max duration (s)")
    batches.set_ylabel("max batch")
    batches.set_xlabel("device memory (GB)")
    for axis in (durations, batches):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
        for card in REAL_CARDS_GB:
            axis.axvline(card, color="grey", alpha=0.15, linewidth=0.8)
    durations.set_title(f"tier tables: {comparison.a.name!r} vs {comparison.b.name!r}")
    figure.tight_layout()
    path = Path(path)
    image = io.BytesIO()
    figure.savefig(image, dpi=100, format=path.suffix.lower().lstrip("."))
    plt.close(figure)
    write_file(path, image.getvalue(), overwrite=overwrite)
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "items"):
        return dict(value)
    return value


def _name(tier: Tier | None) -> str:
    return tier.name if tier else "(none)"


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    return str(value)
