"""Detection through the cuda plugin (NVML) vs through torch, on the real GPU, in fresh processes.

Usage: python benchmarks/gpu_detection.py OUTDIR [--runs N] [--dry-run]

For each path, N (default 5) fresh child processes detect the GPU; each prints its answer and then
waits on stdin, so the parent reads NVML's ``used`` memory while the child is still alive. Printed
and written to OUTDIR/gpu_detection.json:

* wall time from process start to the answer (median), plugin vs torch, and the ratio;
* VRAM each path took (NVML used while the child lives − before it started);
* the tier each figure gives (the plugin's NVML total vs torch's total_memory);
* whether the plugin's cuda:0 has the UUID torch reports for cuda:0;
* the plugin's answer with CUDA_VISIBLE_DEVICES set to the GPU's UUID and to a UUID prefix.

It also writes OUTDIR/gpu_detection_recording.json, this GPU recorded in the replay form.
``--dry-run`` (no GPU needed) replays the bundled H100 recording and skips every torch/CUDA part.
Budget: about 45 s on an H100 (torch's import dominates).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from acestep_core.vocabulary import GIB, MIB

PLUGIN_CHILD = r"""
import time
start = time.perf_counter()
import json, os, sys
from acestep_core import DetectOptions, resolve
replay = sys.argv[1] or None
resolution = resolve(detect_options=DetectOptions(replay=replay, environ=dict(os.environ)), environ=os.environ)
seconds = time.perf_counter() - start
device = resolution.reading.device
print(json.dumps({
    "seconds_in_process": seconds, "name": device.name, "index": device.index, "uuid": device.uuid,
    "total_bytes": device.total_bytes, "free_bytes": device.free_bytes, "reserved_bytes": device.reserved_bytes,
    "mig": device.mig, "tier": resolution.tier.name, "plugin": resolution.decided_by("detect_memory"),
    "visible": [d.uuid for d in resolution.reading.visible], "notes": list(resolution.reading.notes),
    "torch_imported": "torch" in sys.modules, "libcuda_loaded": "libcuda" in open("/proc/self/maps").read(),
}), flush=True)
sys.stdin.readline()
"""

TORCH_CHILD = r"""
import time
start = time.perf_counter()
import json, sys
import torch
props = torch.cuda.get_device_properties(0)
free, total = torch.cuda.mem_get_info(0)
seconds = time.perf_counter() - start
print(json.dumps({
    "seconds_in_process": seconds, "name": props.name, "uuid": "GPU-" + str(props.uuid),
    "total_memory": props.total_memory, "mem_get_info_free": free, "mem_get_info_total": total,
    "compute_capability": [props.major, props.minor], "torch": torch.__version__,
}), flush=True)
sys.stdin.readline()
"""


class Vram:
    """NVML ``used`` of GPU 0 (v2 where the driver has it), read from this (parent) process."""

    def __init__(self, dry_run: bool) -> None:
        if dry_run:
            from acestep_core_cuda.replay import load_recording

            self.nvml: Any = load_recording("h100-80gb").nvml()
        else:
            import pynvml

            self.nvml = pynvml
        self.nvml.nvmlInit()
        self.handle = self.nvml.nvmlDeviceGetHandleByIndex(0)

    def used(self) -> int:
        from acestep_core_cuda.nvml import read_memory

        memory = read_memory(self.nvml, self.handle)
        return 0 if memory is None else memory.used

    def close(self) -> None:
        self.nvml.nvmlShutdown()


def run_child(code: str, args: list[str], vram: Vram, env: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    before = vram.used()
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = child.stdout.readline() if child.stdout else ""
        wall = time.perf_counter() - start
        during = vram.used()
        if not line:
            raise RuntimeError(f"child gave no answer: {child.stderr.read() if child.stderr else ''}")
        answer = json.loads(line)
    finally:
        if child.stdin:
            child.stdin.write("\n")
            child.stdin.flush()
        child.wait(timeout=timeout)
    return {**answer, "wall_s": wall, "vram_taken_bytes": during - before}


def tier_for_total(total_bytes: int) -> str:
    from acestep_core_tiers_default import register_tier_tables, select_tier

    from acestep_core import DeviceMemory, MemoryReading

    device = DeviceMemory(backend="cuda", name="torch figure", index=0, total_bytes=total_bytes)
    return select_tier(MemoryReading(device=device, visible=(device,)), register_tier_tables()).name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dry-run", action="store_true", help="no GPU: replay the bundled H100 recording, skip torch")
    args = parser.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    replay = "h100-80gb" if args.dry_run else ""
    base_env = {
        k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "MAX_CUDA_VRAM")
    }
    vram = Vram(args.dry_run)
    results: dict[str, Any] = {"dry_run": args.dry_run, "runs": args.runs}
    try:
        plugin_runs = [run_child(PLUGIN_CHILD, [replay], vram, base_env) for _ in range(args.runs)]
        results["plugin"] = plugin_runs
        first = plugin_runs[0]
        uuid = first["uuid"] or ""
        prefix = uuid[: len("GPU-") + 8]
        results["visible_by_uuid"] = run_child(PLUGIN_CHILD, [replay], vram, {**base_env, "CUDA_VISIBLE_DEVICES": uuid})
        results["visible_by_prefix"] = run_child(
            PLUGIN_CHILD, [replay], vram, {**base_env, "CUDA_VISIBLE_DEVICES": prefix}
        )
        results["visible_prefix_used"] = prefix
        if not args.dry_run:
            results["torch"] = [run_child(TORCH_CHILD, [], vram, base_env, timeout=120) for _ in range(args.runs)]
            from acestep_core_cuda.replay import record

            recording = record(
                vram.nvml,
                description="recorded by benchmarks/gpu_detection.py",
                source="benchmarks/gpu_detection.py on the lent GPU machine",
            )
            (args.outdir / "gpu_detection_recording.json").write_text(json.dumps(recording, indent=1))
    finally:
        vram.close()
    summary = summarise(results)
    results["summary"] = summary
    results["elapsed_s"] = time.perf_counter() - began
    (args.outdir / "gpu_detection.json").write_text(json.dumps(results, indent=1))
    print_table(summary, results)
    return 0


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    plugin = results["plugin"]
    first = plugin[0]
    summary: dict[str, Any] = {
        "plugin_wall_s_median": statistics.median(r["wall_s"] for r in plugin),
        "plugin_in_process_s_median": statistics.median(r["seconds_in_process"] for r in plugin),
        "plugin_vram_taken_bytes_max": max(r["vram_taken_bytes"] for r in plugin),
        "plugin_total_bytes": first["total_bytes"],
        "plugin_reserved_bytes": first["reserved_bytes"],
        "plugin_tier": first["tier"],
        "plugin_answered_by": first["plugin"],
        "plugin_imported_torch": any(r["torch_imported"] for r in plugin),
        "plugin_loaded_libcuda": any(r["libcuda_loaded"] for r in plugin),
        "plugin_uuid": first["uuid"],
        "by_uuid": {k: results["visible_by_uuid"][k] for k in ("name", "uuid", "index", "total_bytes", "tier")},
        "by_prefix": {k: results["visible_by_prefix"][k] for k in ("name", "uuid", "index", "total_bytes", "tier")},
    }
    torch_runs = results.get("torch")
    if torch_runs:
        tfirst = torch_runs[0]
        summary |= {
            "torch_wall_s_median": statistics.median(r["wall_s"] for r in torch_runs),
            "torch_in_process_s_median": statistics.median(r["seconds_in_process"] for r in torch_runs),
            "torch_vram_taken_bytes_median": statistics.median(r["vram_taken_bytes"] for r in torch_runs),
            "torch_total_memory": tfirst["total_memory"],
            "torch_tier": tier_for_total(tfirst["total_memory"]),
            "torch_uuid": tfirst["uuid"],
            "uuid_match": tfirst["uuid"] == first["uuid"],
            "nvml_total_minus_reserved_equals_torch_total": (first["total_bytes"] or 0) - (first["reserved_bytes"] or 0)
            == tfirst["total_memory"],
        }
        summary["speedup_wall"] = summary["torch_wall_s_median"] / summary["plugin_wall_s_median"]
    return summary


def print_table(summary: dict[str, Any], results: dict[str, Any]) -> None:
    def size(value: Any) -> str:
        return "-" if value is None else f"{value / GIB:.3f} GiB ({value:,} B)"

    rows = [
        ("mode", "DRY RUN (replayed H100, no torch)" if results["dry_run"] else "real GPU"),
        ("runs per path", results["runs"]),
        ("plugin: wall, fresh process (median)", f"{summary['plugin_wall_s_median']:.3f} s"),
        ("plugin: inside the process (median)", f"{summary['plugin_in_process_s_median']:.3f} s"),
        ("plugin: VRAM taken (max)", f"{summary['plugin_vram_taken_bytes_max'] / MIB:.0f} MiB"),
        (
            "plugin: torch imported / libcuda loaded",
            f"{summary['plugin_imported_torch']} / {summary['plugin_loaded_libcuda']}",
        ),
        ("plugin: total (NVML)", size(summary["plugin_total_bytes"])),
        ("plugin: reserved (NVML v2)", size(summary["plugin_reserved_bytes"])),
        ("plugin: tier", f"{summary['plugin_tier']} (answered by {summary['plugin_answered_by']})"),
        ("plugin: cuda:0 UUID", summary["plugin_uuid"]),
    ]
    if "torch_wall_s_median" in summary:
        rows += [
            ("torch: wall, fresh process (median)", f"{summary['torch_wall_s_median']:.3f} s"),
            ("torch: inside the process (median)", f"{summary['torch_in_process_s_median']:.3f} s"),
            ("torch: VRAM taken (median)", f"{summary['torch_vram_taken_bytes_median'] / MIB:.0f} MiB"),
            ("torch: total_memory", size(summary["torch_total_memory"])),
            ("torch: tier", summary["torch_tier"]),
            ("torch: cuda:0 UUID (matches plugin)", f"{summary['torch_uuid']} ({summary['uuid_match']})"),
            ("NVML total − reserved == torch total", summary["nvml_total_minus_reserved_equals_torch_total"]),
            ("speed-up (torch wall / plugin wall)", f"{summary['speedup_wall']:.1f}×"),
        ]
    rows += [
        (
            "CUDA_VISIBLE_DEVICES=<uuid>",
            f"{summary['by_uuid']['name']} cuda:{summary['by_uuid']['index']} {summary['by_uuid']['uuid']} → "
            f"{summary['by_uuid']['tier']}",
        ),
        (
            f"CUDA_VISIBLE_DEVICES={results['visible_prefix_used']}",
            f"{summary['by_prefix']['name']} cuda:{summary['by_prefix']['index']} {summary['by_prefix']['uuid']} "
            f"→ {summary['by_prefix']['tier']}",
        ),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
