"""A plan applied to tiny real models (Qwen3ForCausalLM, AceStepTransformer1DModel, AutoencoderOobleck):
attention, dtypes, quanto weights, offload hooks and compile are the planned ones, outputs stay close."""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("optimum.quanto")

from acestep_core import DeviceMemory, GenerationRequest, MemoryReading, resolve  # noqa: E402
from acestep_core.runtime.apply import PlanOrderError, apply_plan, quantized_modules, weight_bytes  # noqa: E402
from acestep_core.runtime.models import build_dit, build_lm  # noqa: E402

INT8_TOLERANCE = 0.02
"""int8 weights: largest output difference relative to the largest output (measured ≈0.2-0.7%)."""

warnings.filterwarnings("ignore", message=".*experimental feature.*")


def _dit_inputs(batch: int = 2, frames: int = 32):
    generator = torch.Generator().manual_seed(1)
    return (
        torch.randn(batch, frames, 64, generator=generator),
        torch.rand(batch, generator=generator),
        torch.rand(batch, generator=generator),
        torch.randn(batch, 10, 64, generator=generator),
        torch.randn(batch, frames, 128, generator=generator),
    )


def _dit_out(dit, inputs):
    x, t, r, enc, ctx = inputs
    with torch.no_grad():
        return dit(x, t, r, enc, ctx).sample.float()


def _relative(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _turing_plan() -> dict:
    device = DeviceMemory(backend="cuda", name="T4", index=0, total_bytes=16 * 2**30, compute_capability=(7, 5))
    import acestep_core_tiers_default
    from conftest import FixedDevice

    from acestep_core.plugins import build_plugin_manager

    manager = build_plugin_manager(
        environ={},
        entry_points=[],
        plugins=[("tiers_default", acestep_core_tiers_default), ("fixed", FixedDevice(MemoryReading(device=device)))],
    )
    return resolve(GenerationRequest(duration_s=30, lm="on", lm_model="0.6B"), manager=manager).plan.as_dict()


def test_pre_ampere_plan_gives_sdpa_fp16_lm_and_fp32_dit() -> None:
    plan = _turing_plan() | {
        "offload.lm": "none",
        "offload.dit": "none",
        "quantization.lm": "none",
        "quantization.dit": "none",
        "compile": False,
    }
    lm = apply_plan(build_lm("tiny"), "lm", plan, device="cpu")
    assert lm.model.config._attn_implementation == "sdpa"
    assert {p.dtype for p in lm.model.parameters()} == {torch.float16}
    dit = apply_plan(build_dit("tiny"), "dit", plan, device="cpu")
    assert {p.dtype for p in dit.model.parameters()} == {torch.float32}
    assert "attention backend native" in dit.steps


def test_eager_attention_when_asked() -> None:
    lm = apply_plan(build_lm("tiny"), "lm", {"attention": "eager", "precision.lm": "fp32"}, device="cpu")
    assert lm.model.config._attn_implementation == "eager"


def test_lm_int8_quantizes_linears_but_not_the_tied_head_and_stays_close() -> None:
    torch.manual_seed(0)
    model = build_lm("tiny")
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    with torch.no_grad():
        reference = model(ids).logits
    before = weight_bytes(model)
    plan = {
        "precision.lm": "fp32",
        "quantization.lm": "int8",
        "quantization.exclude.lm": ["lm_head"],
        "offload.lm": "none",
    }
    apply_plan(model, "lm", plan, device="cpu")
    names = quantized_modules(model)
    assert names and "lm_head" not in names
    assert all(name.startswith("model.layers.") for name in names)
    assert len(names) == model.config.num_hidden_layers * 7
    with torch.no_grad():
        assert _relative(model(ids).logits, reference) < INT8_TOLERANCE
    assert weight_bytes(model) < before


def test_dit_int8_with_exclusions_and_the_native_backend() -> None:
    torch.manual_seed(0)
    dit = build_dit("tiny")
    inputs = _dit_inputs()
    reference = _dit_out(dit, inputs)
    plan = {
        "precision.dit": "fp32",
        "attention.dit": "native",
        "quantization.dit": "int8",
        "quantization.exclude.dit": ["time_embed*", "time_embed_r*", "condition_embedder"],
    }
    applied = apply_plan(dit, "dit", plan, device="cpu")
    names = quantized_modules(dit)
    assert names and not any(n.startswith(("time_embed", "condition_embedder")) for n in names)
    assert "attention backend native" in applied.steps
    assert _relative(_dit_out(dit, inputs), reference) < INT8_TOLERANCE


def test_load_on_cpu_quantize_then_offload_in_that_order(monkeypatch) -> None:
    """The offload hook is installed on a model whose weights are already quantized (quanto #376)."""
    import acestep_core.runtime.apply as apply_module

    seen: dict[str, object] = {}
    original = apply_module.cpu_offload_with_hook

    def spy(model, execution_device=None, prev_module_hook=None):
        seen["quantized_at_offload"] = len(quantized_modules(model))
        seen["device_at_offload"] = next(model.parameters()).device.type
        return original(model, execution_device=execution_device, prev_module_hook=prev_module_hook)

    monkeypatch.setattr(apply_module, "cpu_offload_with_hook", spy)
    torch.manual_seed(0)
    model = build_lm("tiny")
    ids = torch.randint(0, model.config.vocab_size, (1, 12))
    with torch.no_grad():
        reference = model(ids).logits
    plan = {
        "precision.lm": "fp32",
        "quantization.lm": "int8",
        "quantization.exclude.lm": ["lm_head"],
        "offload.lm": "model",
    }
    applied = apply_plan(model, "lm", plan, device="cpu")
    assert seen == {"quantized_at_offload": 2 * 7, "device_at_offload": "cpu"}
    assert applied.hook is not None and hasattr(model, "_hf_hook")
    with torch.no_grad():
        assert _relative(model(ids).logits, reference) < INT8_TOLERANCE
    applied.offload()
    assert next(model.parameters()).device.type == "cpu"


def test_a_model_already_on_another_device_is_refused_before_quantizing() -> None:
    model = build_lm("tiny").to("meta")
    with pytest.raises(PlanOrderError, match="load it on the CPU"):
        apply_plan(model, "lm", {"quantization.lm": "int8", "offload.lm": "model"}, device="cpu")


def test_group_offload_installs_hooks_and_keeps_the_output() -> None:
    torch.manual_seed(0)
    dit = build_dit("tiny")
    inputs = _dit_inputs()
    reference = _dit_out(dit, inputs)
    applied = apply_plan(dit, "dit", {"precision.dit": "fp32", "offload.dit": "group"}, device="cpu")
    assert any(hasattr(m, "_diffusers_hook") for m in dit.modules())
    assert "group offload" in applied.steps[-1]
    assert _relative(_dit_out(dit, inputs), reference) < 1e-5


def test_model_offload_chains_lm_then_dit() -> None:
    lm = apply_plan(build_lm("tiny"), "lm", {"precision.lm": "fp32", "offload.lm": "model"}, device="cpu")
    dit = apply_plan(
        build_dit("tiny"), "dit", {"precision.dit": "fp32", "offload.dit": "model"}, device="cpu", chain_after=lm
    )
    assert dit.hook.hook.prev_module_hook is lm.hook


def test_compile_path_runs_and_matches() -> None:
    torch.manual_seed(0)
    dit = build_dit("tiny")
    inputs = _dit_inputs()
    reference = _dit_out(dit, inputs)
    applied = apply_plan(
        dit, "dit", {"precision.dit": "fp32", "compile": True}, device="cpu", compile_backend="aot_eager"
    )
    assert "compiled (aot_eager)" in applied.steps
    assert _relative(_dit_out(dit, inputs), reference) < 1e-5


def test_group_offload_of_quantized_weights_skips_compile_and_sequential_is_refused() -> None:
    dit = build_dit("tiny")
    applied = apply_plan(
        dit,
        "dit",
        {"precision.dit": "fp32", "quantization.dit": "int8", "offload.dit": "group", "compile": True},
        device="cpu",
    )
    assert applied.steps[-1].startswith("compile skipped")
    with pytest.raises(ValueError, match="sequential offload does not combine"):
        apply_plan(build_dit("tiny"), "dit", {"quantization.dit": "int8", "offload.dit": "sequential"}, device="cpu")
