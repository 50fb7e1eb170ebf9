"""What ``Record`` trades: defining a record class against building and hashing its instances.

Times, in one process and one run, the same seven-field record declared as a ``Record`` subclass and as
``@dataclass(frozen=True)``: defining the class (what every start-up pays for each record on its path),
building an instance by keyword and positionally, ``dataclasses.replace`` and ``hash``. Medians of
``--repeats`` rounds; printed, not asserted.

    .venv/bin/python benchmarks/bench_records.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import timeit
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from acestep_core.record import Record

CLASSES = 200
INSTANCES = 20_000


def define_record() -> type:
    class Sample(Record):
        name: str
        label: str
        min_gb: float
        max_gb: float | None = None
        batch: int = 1
        models: tuple[str, ...] = ()
        extra: dict[str, int] = field(default_factory=dict, compare=False)

    return Sample


def define_dataclass() -> type:
    @dataclass(frozen=True)
    class Sample:
        name: str
        label: str
        min_gb: float
        max_gb: float | None = None
        batch: int = 1
        models: tuple[str, ...] = ()
        extra: dict[str, int] = field(default_factory=dict, compare=False)

    return Sample


def median_us(work: Callable[[], Any], number: int, repeats: int) -> float:
    return statistics.median(timeit.repeat(work, number=number, repeat=repeats)) / number * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="rounds of each measurement (default 7)")
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; medians of {args.repeats} rounds, microseconds")
    print(f"  {'':<38} {'Record':>10} {'dataclass':>10} {'ratio':>7}")
    kinds = {"Record": define_record, "dataclass": define_dataclass}
    cls = {name: define() for name, define in kinds.items()}
    samples = {name: c(name="tier4", label="Tier 4", min_gb=8.0, models=("0.6B",)) for name, c in cls.items()}
    rows: list[tuple[str, dict[str, float]]] = [
        ("define the class", {n: median_us(d, CLASSES, args.repeats) for n, d in kinds.items()}),
        (
            "build an instance (keywords)",
            {
                n: median_us(lambda c=c: c(name="tier4", label="Tier 4", min_gb=8.0), INSTANCES, args.repeats)
                for n, c in cls.items()
            },
        ),
        (
            "build an instance (positional)",
            {
                n: median_us(lambda c=c: c("tier4", "Tier 4", 8.0, 12.0), INSTANCES, args.repeats)
                for n, c in cls.items()
            },
        ),
        (
            "dataclasses.replace",
            {
                n: median_us(lambda s=s: dataclasses.replace(s, batch=2), INSTANCES, args.repeats)
                for n, s in samples.items()
            },
        ),
        ("hash", {n: median_us(lambda s=s: hash(s), INSTANCES, args.repeats) for n, s in samples.items()}),
    ]
    for label, figures in rows:
        ours, theirs = figures["Record"], figures["dataclass"]
        print(f"  {label:<38} {ours:10.2f} {theirs:10.2f} {ours / theirs:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
