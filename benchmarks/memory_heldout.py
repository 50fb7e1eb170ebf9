"""The memory model against every shipped reading, like with like: one line per distinct configuration.

Usage: python benchmarks/memory_heldout.py [--json] [--fit]

Allocated predictions are compared with allocated readings and reserved with reserved ones. Each line is a
distinct configuration (a workload: replicas and repeated caps share it) with its rows, the worst error and
the bounds it is held to: held-out allocated −5 % … +15 %, reserved −5 % … +25 %; fit rows, and held-out
rows that repeat a fit experiment (``replica of``), ±10 %; a trial that ran out of memory is a lower bound
(only under-prediction is judged). A row is left unasserted only with a reason whose numbers it carries.
The closing lines count the distinct held-out configurations per kind and give the worst errors.
``--json``: every row (config_id, kind, predicted_bytes, measured_bytes, error_pct, asserted, reason,
split, replica_of, ...) and the summary. ``--fit`` prints the fit table too. Exit 1 when an asserted row
is out of its bounds.
"""

from __future__ import annotations

import argparse
import json
import sys

from acestep_core.optimize.readings import fit_rows, held_out_rows, render, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog="example: python benchmarks/memory_heldout.py --json > heldout.json"
    )
    parser.add_argument("--json", action="store_true", help="every row and the summary as JSON")
    parser.add_argument("--fit", action="store_true", help="print the fit table too")
    args = parser.parse_args(argv)
    held = held_out_rows()
    fit = fit_rows()
    info = summary([*fit, *held])
    if args.json:
        print(json.dumps({"rows": [r.as_json() for r in [*fit, *held]], "summary": info}, indent=1))
    else:
        if args.fit:
            print(render(fit, title="FIT (±10 %)") + "\n")
        for kind in ("allocated", "reserved"):
            rows = [r for r in held if r.kind == kind]
            bounds = "−5 % … +15 %" if kind == "allocated" else "−5 % … +25 %"
            print(render(rows, title=f"HELD-OUT {kind.upper()} (bounds {bounds}; replicas ±10 %)") + "\n")
        for key, entry in info.items():
            if not isinstance(entry, dict):
                continue
            split, kind = key.split("_")
            line = (
                f"{split:<7} {kind:<9} {entry['rows']:>3} rows, {entry['configurations']:>2} configurations "
                f"({entry['heldout_configurations']} held-out, {entry['replica_configurations']} replicas of fit "
                f"experiments), {entry['lower_bound_rows']} out-of-memory lower bounds, "
                f"{entry['not_asserted_rows']} not asserted"
            )
            if "worst_under_pct" in entry:
                line += (
                    f"; worst under {entry['worst_under_pct']:+.1f} % ({entry['worst_under']}), "
                    f"worst over {entry['worst_over_pct']:+.1f} % ({entry['worst_over']})"
                )
            print(line)
        print(f"distinct held-out configurations: {info['distinct_heldout_configurations']}")
        if info["outside_bounds"]:
            print("OUT OF BOUNDS: " + "; ".join(info["outside_bounds"]))
    return 1 if info["outside_bounds"] else 0


if __name__ == "__main__":
    sys.exit(main())
