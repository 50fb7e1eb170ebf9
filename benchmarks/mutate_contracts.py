"""Does the liar property need every contract rule? Switch each rule off in turn, run the property, and
report whether it caught the lie (the property failed) or missed it (the property still passed).

The property is ``test_whatever_a_plugin_answers_the_resolution_keeps_every_contract`` in
``tests/test_core_boundaries.py``: one plugin, of a drawn name, lies in every hook at once. The rules
are the named rules of the contracts declared beside each hookspec
(:data:`acestep_core.hookspecs.RULES`); switching one off removes it from every contract that has it,
in a fresh process, so nothing else changes. Each run first checks the property passes with every
rule on: a property that fails anyway would catch every mutation and prove nothing.

    .venv/bin/python benchmarks/mutate_contracts.py                 # every rule, 300 examples each
    .venv/bin/python benchmarks/mutate_contracts.py --rules authorship,table-valid --json

Hypothesis runs without its example database, so a mutation is caught by this run's own examples,
never by a failure remembered from an earlier one, and without shrinking (the first failing example
is reported as found: shrinking one took minutes). Exit status 0 when every rule is caught; "caught
by" is the first line of the failure (an assertion of the property, or an error a lie caused).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROPERTY = "tests/test_core_boundaries.py::test_whatever_a_plugin_answers_the_resolution_keeps_every_contract"
CHILD = """
import sys
from hypothesis import Phase, settings
settings.register_profile("mutation", database=None, phases=[Phase.explicit, Phase.generate])
settings.load_profile("mutation")
from acestep_core import hookspecs
rule = sys.argv[1]
if rule:
    assert rule in hookspecs.RULES, rule
    for contract in hookspecs.CONTRACTS.values():  # a frozen record: this tool breaks it on purpose
        object.__setattr__(contract, "rules", tuple(r for r in contract.rules if r.name != rule))
import pytest
sys.exit(pytest.main(["-p", "no:cacheprovider", "-p", "no:warnings", "-q", "-x", "--no-header", "-rN", sys.argv[2]]))
"""


def run(rule: str, cache: str) -> dict[str, object]:
    started = time.perf_counter()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    environ["ACESTEP_CORE_CACHE_DIR"] = cache
    result = subprocess.run(
        [sys.executable, "-c", CHILD, rule, PROPERTY],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    output = result.stdout + result.stderr
    caught_by = next((line[1:].strip() for line in output.splitlines() if line.startswith("E ")), "")
    return {
        "rule": rule or "(none: every rule on)",
        "hooks": [name for name, c in _contracts().items() if any(r.name == rule for r in c.rules)],
        "property": {0: "passed", 1: "failed"}.get(result.returncode, f"error (exit {result.returncode})"),
        "seconds": round(time.perf_counter() - started, 1),
        "caught_by": caught_by[:160],
        "output_tail": output[-2000:] if result.returncode not in (0, 1) else "",
    }


def _contracts() -> dict[str, object]:
    from acestep_core.hookspecs import CONTRACTS

    return dict(CONTRACTS)


def main() -> int:
    from acestep_core.hookspecs import RULES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", help=f"comma-separated rules to switch off (default all: {', '.join(RULES)})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    rules = [r.strip() for r in args.rules.split(",")] if args.rules else list(RULES)
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        parser.error(f"--rules: unknown {unknown}; the rules are {', '.join(RULES)}")

    rows = []
    with tempfile.TemporaryDirectory(prefix="mutate-contracts-") as cache:
        for rule in ["", *rules]:
            row = run(rule, cache)
            rows.append(row)
            if not args.json:
                _print_row(row)
            if not rule and row["property"] != "passed":
                print("the property fails with every rule on: no mutation can be judged", file=sys.stderr)
                print(row["output_tail"] or row["caught_by"], file=sys.stderr)
                return 1
    judged = rows[1:]
    caught = [row for row in judged if row["property"] == "failed"]
    if args.json:
        print(json.dumps({"property": PROPERTY, "rows": rows, "caught": len(caught), "rules": len(judged)}, indent=2))
    else:
        print(f"\n{len(caught)} of {len(judged)} rules caught (the property fails without each)")
    return 0 if len(caught) == len(judged) else 1


def _print_row(row: dict[str, object]) -> None:
    if row["rule"].startswith("(none"):  # type: ignore[union-attr]
        print(f"baseline, every rule on: the property {row['property']} ({row['seconds']} s)\n")
        print(f"{'rule switched off':<30} {'hooks':<45} {'result':<7} {'s':>6}  caught by")
        return
    result = {"failed": "caught", "passed": "MISSED"}.get(str(row["property"]), str(row["property"]))
    hooks = ", ".join(row["hooks"])  # type: ignore[arg-type]
    print(f"{row['rule']:<30} {hooks:<45} {result:<7} {row['seconds']:>6}  {row['caught_by']}", flush=True)
    if row["output_tail"]:
        print(row["output_tail"], file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
