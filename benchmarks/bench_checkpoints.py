"""Loading ACE-Step 1.5's checkpoints, and what the real ones hold. Prints measured figures; asserts nothing.

Usage: python benchmarks/bench_checkpoints.py [--json] [--shard-params N]

1. Tiny folders in every real layout, written by ``acestep_core.runtime.models.fixtures``: the time to
   write them, then for each its load time and the peak host RSS the load adds (each load in a fresh
   process, RSS sampled every 5 ms, the process's RSS before the load subtracted).
2. An XL-layout folder of four fp32 shards (``--shard-params``, default ≈150 M parameters: large enough
   that the allocator's noise is small beside it) loaded with ``dtype=bf16``: the peak RSS the load adds
   against the model's bf16 size, beside the naive way (read every shard whole, then cast).
3. Real-size parameter counts per component from meta-device builds of the loader's classes, beside
   upstream's own constants (``acestep/gpu_config.py``: DiT 4.7, XL 9.0, LM 1.2 / 3.4 / 8.0, VAE 0.33,
   text encoder 1.2 "GB", which are GiB) with the difference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from acestep_core.vocabulary import GIB, MIB

UPSTREAM_GB = {
    "DiT 2B (turbo/base/sft)": 4.7,
    "DiT XL (turbo/base/sft)": 9.0,
    "LM 0.6B": 1.2,
    "LM 1.7B": 3.4,
    "LM 4B": 8.0,
    "text encoder (Qwen3-Embedding-0.6B)": 1.2,
    "VAE (AutoencoderOobleck)": 0.33,
}
XL_GGUF_BF16_MB = 9516
"""Published size of an XL DiT as a BF16 GGUF (weights in bf16 + the silence latent in fp32; MB = MiB):
hf.co/scragnog/ace-step-1.5-gguf-merge-models (same architecture as upstream's XL)."""

LOAD = r"""
import json, sys, threading, time
import torch
from acestep_core.runtime.models.loader import load_checkpoint, parameter_bytes
from acestep_core.runtime.pipeline.session import rss_bytes
torch.set_num_threads(1)
path, dtype, naive = sys.argv[1], (sys.argv[2] if sys.argv[2] != "none" else None), sys.argv[3] == "naive"
peak = [0]; stop = threading.Event()
def sample():
    while not stop.wait(0.005):
        peak[0] = max(peak[0], rss_bytes() or 0)
before = rss_bytes() or 0
peak[0] = before
thread = threading.Thread(target=sample, daemon=True); thread.start()
started = time.perf_counter()
if naive:
    from pathlib import Path
    from safetensors.torch import load_file
    state = {}
    for shard in sorted(Path(path).glob("model-*.safetensors")):
        state.update(load_file(str(shard)))
    cast = {name: tensor.to(torch.bfloat16) for name, tensor in state.items()}
    held = sum(t.numel() * t.element_size() for t in cast.values())
else:
    model = load_checkpoint(path, dtype=dtype).model
    held = parameter_bytes(model)
seconds = time.perf_counter() - started
stop.set(); thread.join()
peak[0] = max(peak[0], rss_bytes() or 0)
print(json.dumps({"seconds": seconds, "added_rss": peak[0] - before, "held_bytes": held}))
"""


def load_in_fresh_process(path: Path, dtype: str | None, *, naive: bool = False) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOAD, str(path), dtype or "none", "naive" if naive else "loader"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def tiny_layouts(root: Path) -> dict:
    from acestep_core.runtime.models.fixtures import write_checkpoints

    started = time.perf_counter()
    written = write_checkpoints(root, dits=("turbo", "sft", "xl-turbo"), lms=("0.6B",), diffusers=True)
    seconds = time.perf_counter() - started
    rows = []
    for folder in ("acestep-v15-turbo", "acestep-v15-xl-turbo", "acestep-v15-turbo-diffusers", "vae",
                   "Qwen3-Embedding-0.6B", "acestep-5Hz-lm-0.6B"):  # fmt: skip
        from acestep_core.checkpoints import sniff

        measured = load_in_fresh_process(root / folder, None)
        rows.append({"folder": folder, "layout": sniff(root / folder).layout, **measured})
    return {"write_seconds": seconds, "folders_written": len(written), "loads": rows}


def sharded_load(root: Path, target_params: int) -> dict:
    import torch

    from acestep_core.optimize.components import dit_shape_from_config
    from acestep_core.runtime.models import dit_config
    from acestep_core.runtime.models.fixtures import write_dit

    config = dit_config("xl-turbo", "tiny")
    layers = 2
    while True:  # the tiny XL's shape, widened until it holds about target_params
        config.update(
            hidden_size=640, intermediate_size=2432, num_attention_heads=5, num_key_value_heads=1, head_dim=128,
            encoder_hidden_size=512, encoder_intermediate_size=1536, encoder_num_attention_heads=4,
            encoder_num_key_value_heads=1, text_hidden_dim=64, fsq_dim=512, num_hidden_layers=layers,
            layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)],
        )  # fmt: skip
        if dit_shape_from_config(config).params >= target_params or layers > 64:
            break
        layers += 2
    folder = root / "acestep-v15-xl-turbo"
    started = time.perf_counter()
    written = write_dit(folder, "xl-turbo", config=config, dtype=torch.float32)
    write_seconds = time.perf_counter() - started
    bf16 = sum(t.numel() * 2 for t in written.state_dict().values() if t.is_floating_point())
    fp32_on_disk = sum(p.stat().st_size for p in folder.glob("model-*.safetensors"))
    del written
    ours = load_in_fresh_process(folder, "bf16")
    naive = load_in_fresh_process(folder, "bf16", naive=True)
    return {
        "parameters": dit_shape_from_config(config).params,
        "write_seconds": write_seconds,
        "fp32_on_disk_bytes": fp32_on_disk,
        "bf16_bytes": bf16,
        "loader": ours,
        "naive": naive,
    }


def real_counts() -> list[dict]:
    import torch

    from acestep_core.runtime.models import build_lm, build_text_encoder, build_vae, dit_config, dit_from_config

    def count(model: torch.nn.Module) -> tuple[int, int]:
        tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
        params = sum(p.numel() for p in model.parameters())
        return params, sum(t.numel() * t.element_size() for t in tensors.values())

    rows = []
    with torch.device("meta"):
        builds = {
            "DiT 2B (turbo/base/sft)": dit_from_config(dit_config("turbo", "real")),
            "DiT XL (turbo/base/sft)": dit_from_config(dit_config("xl-turbo", "real")),
            "LM 0.6B": build_lm("0.6B"),
            "LM 1.7B": build_lm("1.7B"),
            "LM 4B": build_lm("4B"),
            "text encoder (Qwen3-Embedding-0.6B)": build_text_encoder("real"),
            "VAE (AutoencoderOobleck)": build_vae("real"),
        }
        for name, model in builds.items():
            params, weight_bytes = count(model.to(torch.bfloat16))
            upstream = UPSTREAM_GB[name]
            rows.append(
                {
                    "component": name,
                    "parameters": params,
                    "bf16_bytes": weight_bytes,
                    "bf16_gib": weight_bytes / GIB,
                    "upstream_gb": upstream,
                    "difference_gib": weight_bytes / GIB - upstream,
                    "vocabulary": getattr(getattr(model, "config", None), "vocab_size", None)
                    if name.startswith("LM")
                    else None,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--shard-params", type=int, default=150_000_000, help="parameters of the sharded XL load")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        tiny = tiny_layouts(root / "tiny")
        sharded = sharded_load(root / "sharded", args.shard_params)
    counts = real_counts()
    if args.json:
        print(json.dumps({"tiny": tiny, "sharded": sharded, "real_counts": counts}, indent=1))
        return 0
    print(f"1. tiny layouts: {tiny['folders_written']} folders written in {tiny['write_seconds']:.1f} s")
    print(f"   {'folder':<30} {'layout':<18} {'load s':>7} {'RSS added':>10} {'weights':>10}")
    for row in tiny["loads"]:
        print(
            f"   {row['folder']:<30} {row['layout']:<18} {row['seconds']:>7.3f} "
            f"{row['added_rss'] / MIB:>6.1f} MiB {row['held_bytes'] / MIB:>6.2f} MiB"
        )
    bf16 = sharded["bf16_bytes"]
    ours, naive = sharded["loader"], sharded["naive"]
    print(
        f"\n2. XL layout, 4 fp32 shards ({sharded['parameters']:,} parameters, "
        f"{sharded['fp32_on_disk_bytes'] / MIB:.0f} MiB on disk) loaded as bf16 ({bf16 / MIB:.0f} MiB):"
    )
    print(
        f"   loader (tensor by tensor, cast while reading): {ours['seconds']:.2f} s, RSS added "
        f"{ours['added_rss'] / MIB:.0f} MiB = {ours['added_rss'] / bf16:.2f} × the bf16 size"
    )
    print(
        f"   naive (every shard read whole, then cast):     {naive['seconds']:.2f} s, RSS added "
        f"{naive['added_rss'] / MIB:.0f} MiB = {naive['added_rss'] / bf16:.2f} × the bf16 size"
    )
    print("\n3. real sizes (meta-device builds of the loader's classes), bf16 weights and buffers")
    print(f"   {'component':<37} {'parameters':>15} {'bf16 GiB':>9} {'upstream':>9} {'difference':>11}")
    for row in counts:
        vocab = f"  vocabulary {row['vocabulary']:,}" if row["vocabulary"] else ""
        print(
            f"   {row['component']:<37} {row['parameters']:>15,} {row['bf16_gib']:>9.3f} "
            f"{row['upstream_gb']:>6.2f} GB {row['difference_gib']:>+8.3f} GiB{vocab}"
        )
    xl = next(r for r in counts if r["component"].startswith("DiT XL"))
    gguf = (xl["parameters"] * 2 + 15000 * 64 * 4) / MIB
    print(
        f"   cross-check: the XL in bf16 with its fp32 silence latent is {gguf:,.1f} MiB; a published BF16 GGUF "
        f"of the XL is {XL_GGUF_BF16_MB:,} MB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
