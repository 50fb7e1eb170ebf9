"""What a replica runs: the reference pipeline on a resolved request. Imported by a replica only when it
generates, so that plan-only replicas and the router never load torch."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from acestep_core.runtime.pipeline import DEFAULT_CAPTION, generate
from acestep_core.types import Resolution


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def run_request(resolution: Resolution, run: Mapping[str, Any], *, out_dir: str, size: str) -> dict[str, Any]:
    """Run ``resolution`` and return the pipeline's report; with ``run["audio"]`` each clip's WAV bytes
    in base64 too."""
    result = generate(
        resolution=resolution,
        out_dir=out_dir,
        size=size,
        steps=run.get("steps", 8),
        seed=run.get("seed", 0),
        caption=run.get("caption") or DEFAULT_CAPTION,
        progress=False,
    )
    data = result.to_dict()
    if run.get("audio"):
        for clip in data["clips"]:
            clip["wav_base64"] = base64.b64encode(Path(clip["path"]).read_bytes()).decode("ascii")
    return data
