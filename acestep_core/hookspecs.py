"""Hook specifications: the contract between acestep-core and its plugins.

A resolution runs the hooks in one direction::

    register_tier_tables ─┐
    detect_memory ────────┴─▶ select_tier ─▶ adjust_request ─▶ configure_optimizations ─▶ apply

Implement a hook by writing a function of the same name (any subset of its arguments) decorated with
:data:`acestep_core.hookimpl`, in a module your distribution names under the ``acestep_core``
entry-point group.

How the core calls hooks differs from plain pluggy in one way: **one plugin can never stop the
pipeline.** The core calls the implementations of a hook one at a time, in pluggy's order (last
registered first; ``tryfirst`` / ``trylast`` reorder). An implementation that raises, or returns a
value of the wrong type, is reported by name (``acestep-core plugins``, ``Resolution.problems``) and
skipped, and the call goes on with the next one. Wrappers (``wrapper=True``) are not supported.

An implementation may raise :class:`acestep_core.SettingIgnored` to reject a user's setting (a bad
``MAX_CUDA_VRAM``, say): the core shows its message as a warning, with no traceback, and goes on.
"""

from __future__ import annotations

import pluggy

from acestep_core.types import (
    AdjustedRequest,
    DetectOptions,
    GenerationRequest,
    MemoryReading,
    Setting,
    Tier,
    TierTable,
)

PROJECT = "acestep_core"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

PLAN_KEYS: dict[str, str] = {
    "attention": "attention backend: 'flash_attention_2', 'sdpa' or 'eager'",
    "compile": "torch.compile the DiT (and LM where it helps): true / false",
    "lm.gpu_memory_ratio": "fraction of device memory the LM (weights + KV cache) may take, 0-1",
    **{f"offload.{c}": f"CPU offload of the {c}: 'none', 'model' (between phases), 'group', 'sequential'"
       for c in ("lm", "dit", "text_encoder", "vae")},
    **{f"quantization.{c}": f"weight quantization of the {c}: 'none', 'int8', 'int4', 'fp8'"
       for c in ("lm", "dit", "text_encoder", "vae")},
    "attention.dit": "the DiT's diffusers attention backend (set_attention_backend): 'flash', 'native' (SDPA) or '_native_math'",
    **{f"precision.{c}": f"compute dtype of the {c}: 'bf16', 'fp16' or 'fp32'" for c in ("lm", "dit", "text_encoder", "vae")},
    **{f"quantization.exclude.{c}": f"module-name patterns (fnmatch) left unquantized in the {c}, e.g. ['lm_head']"
       for c in ("lm", "dit", "text_encoder")},
    "vae.decode": "VAE decode: 'full' (the whole clip at once) or 'tiled'",
    "vae.tile_frames": "latent frames a VAE tile (25 a second of audio)",
    "vae.tile_overlap": "latent frames of context decoded on each side of a tile and cropped away",
    "memory.phases": "predicted peak device memory per phase (GiB): lm, text_encoder, dit, vae",
    "memory.predicted_peak_gib": "the largest phase's predicted peak (GiB)",
    "memory.budget_gib": "device memory the run may use: total − CUDA context − margin (GiB); None on a CPU",
    "ladder.rungs": "the rungs taken to fit the budget, in order (each with its reason)",
    "ladder.batch_size": "present when the ladder lowered the batch to fit: the batch to run",
    "ladder.duration_s": "present when the ladder shortened the clip to fit: the longest duration to run",
    "ladder.refused": "false, or the numbers of a run that cannot fit: predicted, budget and shortfall (GiB and bytes), phase",
}
"""The optimization plan's keys. A plugin may add keys of its own; prefix them with its name."""


@hookspec
def register_tier_tables() -> TierTable | list[TierTable] | None:
    """Offer tier tables: the data a tier plugin ships.

    Tier tables are data, not code, so that a community tuning is a TOML file in a package and
    never needs to re-implement the rules; this hook is how such packages hand their tables in.

    :return: a :class:`~acestep_core.TierTable`, a list of them, or None. A table file that
        fails validation should be loaded with :func:`acestep_core.load_table`, whose
        :class:`~acestep_core.TableError` the core reports (naming the plugin) and skips.

    Collected: every plugin's tables are gathered. The core picks one active table: the one the
    caller names (``--tiers NAME``, ``ACESTEP_CORE_TIERS``, the API), else the only table from
    outside the built-in ``default``, else ``default``; two third-party tables with no choice made
    is an error that lists them.
    """


@hookspec(firstresult=True)
def detect_memory(options: DetectOptions) -> MemoryReading | None:
    """Read the memory of the device the pipeline will use.

    :param options: the caller's wishes: which device, a simulated size, a recording to replay,
        and the environment to read (never ``os.environ`` directly).
    :return: a :class:`~acestep_core.MemoryReading`, or None to let the next plugin try.

    First result wins. The ``simulated`` plugin runs first (``tryfirst``) and answers only when
    simulation is asked for; hardware plugins answer otherwise. When no plugin answers the core
    assumes a CPU. Implementations must not import torch or open a CUDA context unless nothing
    cheaper can answer: detection runs at every start-up.
    """


@hookspec(firstresult=True)
def select_tier(reading: MemoryReading, table: TierTable) -> Tier | None:
    """Choose the tier for a reading from the active table.

    :param reading: what ``detect_memory`` returned (or the core's CPU default).
    :param table: the active tier table.
    :return: one of ``table.tiers`` (or a tier of the plugin's own), or None to pass.

    First result wins. The default rule (``tiers_default``) is documented in that plugin.
    """


@hookspec(firstresult=True)
def adjust_request(request: GenerationRequest, tier: Tier, reading: MemoryReading) -> AdjustedRequest | None:
    """Fit a request to a tier: clamp durations and batch sizes, choose or refuse the LM.

    :param request: what the user asked for.
    :param tier: the selected tier, with the user's overrides already applied to its limits.
    :param reading: the memory reading the tier came from (for messages).
    :return: an :class:`~acestep_core.AdjustedRequest` with one :class:`~acestep_core.Adjustment`
        per change, or None to pass.

    First result wins.
    """


@hookspec
def configure_optimizations(
    adjusted: AdjustedRequest, tier: Tier, reading: MemoryReading
) -> list[Setting] | None:
    """Propose optimization settings for the run.

    :param adjusted: the request as it will run.
    :param tier: the selected tier (its ``optimizations`` hold the table's defaults).
    :param reading: the device the run will use.
    :return: a list of :class:`~acestep_core.Setting` records (keys in :data:`PLAN_KEYS`), or None.

    Collected, then merged key by key: for each key the first plugin in call order that proposes
    it decides, so a hardware-aware plugin marked ``tryfirst`` can settle ``attention`` while the
    tier plugin settles the rest. The user's overrides are applied after the merge and always win.
    """
