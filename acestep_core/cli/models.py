"""``acestep-core models``: what a checkpoints folder holds, what this tier allows, what a run still needs.

Deciding side: no torch. Parameters, dtypes and bytes come from the safetensors headers
(:mod:`acestep_core.checkpoints`); the documented counts of models not on disk from the memory model.
"""

from __future__ import annotations

import argparse
from typing import Any

from acestep_core.checkpoints import (
    CHECKPOINTS_ENV,
    DIT_FOLDERS,
    LM_FOLDERS,
    TEXT_ENCODER_FOLDER,
    VAE_FOLDER,
    Catalogue,
    CheckpointError,
    FoundModel,
    scan,
)
from acestep_core.cli import EXIT_FAILURE, EXIT_OK, print_json
from acestep_core.cli.resolution import add_request_options, add_resolution_options, resolve_from_args
from acestep_core.optimize.memory import DIT_SHAPES, LM_SHAPES, TEXT_ENCODER_SHAPE, VAE_SHAPE
from acestep_core.types import Resolution, Tier
from acestep_core.vocabulary import DIT_MODELS, GIB, LM_SIZES, MIB

EXAMPLES = f"""\
examples:
  acestep-core models --checkpoints ~/ACE-Step-1.5/checkpoints
      every model the folder holds (variant, layout, parameters, dtype on disk, size), which this
      machine's tier allows and why, and which folders a full run still lacks
  MAX_CUDA_VRAM=12 acestep-core models --dit xl-sft --lm 1.7B --json
      the same for a 12 GB card and an XL sft run, as JSON ({CHECKPOINTS_ENV} names the folder)

Without a folder the documented models are listed with their real-size counts. Nothing is loaded: the
figures are read from the safetensors headers (no torch), and a folder that cannot load (a truncated
file, a missing shard, a config that disagrees with its weights) says why.
"""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "models",
        help="the checkpoints a folder holds, which this tier allows, and what a full run still needs",
        description="List ACE-Step 1.5's models: those in the checkpoints folder (read from their files' "
        "headers, without loading them) and the documented ones, each with what this machine's tier allows "
        "and why, and the folders the requested run still needs.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_request_options(parser)
    add_resolution_options(parser)
    parser.set_defaults(handler=run_models)


def run_models(args: argparse.Namespace) -> int:
    resolution = resolve_from_args(args)
    folder = resolution.request.checkpoints
    catalogue: Catalogue | None = None
    problem = None
    if folder is not None:
        try:
            catalogue = scan(folder)
        except CheckpointError as error:
            problem = str(error)
    report = models_report(resolution, catalogue)
    if problem is not None:
        report["problem"] = problem
    if args.json:
        print_json(report)
    else:
        print(render(report))
    return EXIT_FAILURE if problem is not None else EXIT_OK


def models_report(resolution: Resolution, catalogue: Catalogue | None) -> dict[str, Any]:
    """The listing as data: one row per model (found or documented), the run's needs, the folders skipped."""
    tier = resolution.tier
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    known: list[tuple[str, str]] = [("dit", str(name)) for name in DIT_MODELS]
    known += [("lm", str(size)) for size in LM_SIZES]
    known += [("text_encoder", TEXT_ENCODER_FOLDER), ("vae", VAE_FOLDER)]
    for component, name in known:
        found = catalogue.find(component, None if component in ("text_encoder", "vae") else name) if catalogue else None
        if found is not None:
            seen.add(found.path)
        rows.append(_row(component, name, found, tier))
    for extra in catalogue.models if catalogue else ():
        if extra.path not in seen:
            rows.append(_row(extra.component, extra.name, extra, tier))
    adjusted = resolution.adjusted
    lm = resolution.plan.value("ladder.lm_model") if "ladder.lm_model" in resolution.plan else adjusted.lm_model
    missing = catalogue.missing(adjusted.dit_model, lm) if catalogue else None
    return {
        "checkpoints": catalogue.root if catalogue else resolution.request.checkpoints,
        "table": resolution.table,
        "tier": tier.name,
        "tier_label": f"{tier.label} ({tier.vram_label()})",
        "models": rows,
        "run": {"dit": adjusted.dit_model, "lm": lm, "missing": missing},
        "skipped": [{"path": path, "why": why} for path, why in (catalogue.skipped if catalogue else ())],
        "warnings": list(resolution.warnings),
    }


def _row(component: str, name: str, found: FoundModel | None, tier: Tier) -> dict[str, Any]:
    allowed, why = _allowed(component, name, tier)
    documented = _documented(component, name)
    row: dict[str, Any] = {
        "component": component,
        "name": name,
        "folder": _upstream_folder(component, name),
        "allowed": allowed,
        "why": why,
        "documented_parameters": documented,
        "found": found is not None,
    }
    if found is not None:
        row |= {
            "path": found.path,
            "layout": found.layout,
            "parameters": found.parameters,
            "dtypes": list(found.dtypes),
            "bytes": found.bytes,
            "problem": found.problem,
        }
        if found.audio_codes is not None:
            row["audio_codes"] = found.audio_codes
    return row


def _allowed(component: str, name: str, tier: Tier) -> tuple[bool, str]:
    where = f"{tier.label} ({tier.vram_label()})"
    if component == "dit":
        family = name if name in DIT_MODELS else "turbo"
        if family in tier.dit_models:
            return True, f"{where} allows it (dit_models)"
        return False, f"{where} allows {', '.join(tier.dit_models)} only"
    if component == "lm":
        if name in tier.lm_models:
            return True, f"{where} allows it (lm_models)"
        return False, (f"{where} allows {', '.join(tier.lm_models)} only" if tier.lm_models else f"{where}: no LM")
    return True, "every run loads it"


def _documented(component: str, name: str) -> int | None:
    if component == "dit":
        return DIT_SHAPES[name].params if name in DIT_SHAPES else None
    if component == "lm":
        return LM_SHAPES[name].params if name in LM_SHAPES else None
    return TEXT_ENCODER_SHAPE.params if component == "text_encoder" else VAE_SHAPE.params


def _upstream_folder(component: str, name: str) -> str:
    if component == "dit":
        return DIT_FOLDERS.get(name, f"acestep-v15-{name}")
    if component == "lm":
        return LM_FOLDERS.get(name, name)
    return name


def render(report: dict[str, Any]) -> str:
    folder = report["checkpoints"] or f"none (--checkpoints DIR or {CHECKPOINTS_ENV}): documented models only"
    lines = [f"checkpoints  {folder}", f"tier         {report['tier_label']} from table {report['table']!r}", ""]
    header = ("component", "model", "allowed", "layout", "parameters", "dtype", "size", "folder")
    table = [header]
    for row in report["models"]:
        if row["found"]:
            size = _size(row["bytes"])
            values = (row["layout"], f"{row['parameters']:,}", "/".join(row["dtypes"]) or "-", size, row["path"])
        else:
            documented = row["documented_parameters"]
            params = f"({documented:,})" if documented else "-"
            values = ("-", params, "-", "not found", row["folder"])
        table.append((row["component"], row["name"], "yes" if row["allowed"] else "no", *values))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header) - 1)]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in table]
    lines.append("(parameters in brackets: the documented real size; the model is not in the folder)")
    notes = [f"  {r['component']} {r['name']}: {r['why']}" for r in report["models"] if not r["allowed"]]
    notes += [
        f"  {r['component']} {r['name']}: cannot load: {r['problem']}" for r in report["models"] if r.get("problem")
    ]
    if notes:
        lines += ["", "why", *notes]
    run = report["run"]
    wanted = f"DiT {run['dit']}" + (f", LM {run['lm']}" if run["lm"] else ", no LM")
    if run["missing"] is None:
        lines += ["", f"a full run ({wanted}) needs: the folders above, from a checkpoints folder"]
    elif run["missing"]:
        lines += ["", f"a full run ({wanted}) is missing: {', '.join(run['missing'])}"]
    else:
        lines += ["", f"a full run ({wanted}): everything is there"]
    if report["skipped"]:
        lines += ["", "skipped (no ACE-Step component)"]
        lines += [f"  {item['path']}: {item['why']}" for item in report["skipped"]]
    if report.get("problem"):
        lines += ["", f"! {report['problem']}"]
    if report["warnings"]:
        lines += ["", "warnings", *(f"  ! {warning}" for warning in report["warnings"])]
    return "\n".join(lines)


def _size(count: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count / 1024:.1f} KiB"
