"""Quantization applied to the real components (issue #23): every backend × scheme through ``apply_plan`` on the
CPU, the bytes the plan predicts equal to what the quantized module holds (tiny and real-size builds), the
modules quantized the ones the plan counts, and the shipped quality figures reproduced."""

from __future__ import annotations

import dataclasses
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchao")
pytest.importorskip("optimum.quanto")

from acestep_core.checkpoints import LM_FOLDERS, TEXT_ENCODER_FOLDER, dit_original_name  # noqa: E402
from acestep_core.optimize import quantization as quant  # noqa: E402
from acestep_core.optimize.memory import DTYPE_BYTES, lm_weight_bytes  # noqa: E402
from acestep_core.runtime import quantization as measure  # noqa: E402
from acestep_core.runtime.apply import (  # noqa: E402
    PlanOrderError,
    apply_plan,
    quantize_component,
    quantized_modules,
    weight_bytes,
)
from acestep_core.runtime.models.fixtures import write_lm, write_text_encoder  # noqa: E402
from acestep_core.runtime.models.loader import load_checkpoint  # noqa: E402
from acestep_core.vocabulary import DIT_MODELS  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]
KINDS = ("dit", "lm", "text_encoder")
FOLDERS = {"lm": LM_FOLDERS["0.6B"], "text_encoder": TEXT_ENCODER_FOLDER}


def _applied(kind: str, scheme: str, *, dtype: str = "bf16"):
    model = measure.build(kind, "tiny", dtype=dtype)
    apply_plan(model, kind, measure.plan_for(kind, scheme, dtype=dtype), device="cpu")
    return model


@pytest.mark.parametrize("scheme", measure.SCHEME_ORDER)
@pytest.mark.parametrize("kind", KINDS)
def test_the_plans_bytes_are_what_the_quantized_tiny_component_holds(kind: str, scheme: str) -> None:
    model = _applied(kind, scheme)
    assert quantized_modules(model)
    assert weight_bytes(model) == measure.predicted_bytes(kind, "tiny", scheme)
    assert weight_bytes(model) < measure.predicted_bytes(kind, "tiny", "none")


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize("scheme", measure.SCHEME_ORDER)
def test_scales_follow_each_backends_dtype_rule(scheme: str, dtype: str) -> None:
    """torchao's scales are float32 whatever the weights; quanto's are in the weights' dtype."""
    model = _applied("dit", scheme, dtype=dtype)
    assert weight_bytes(model) == measure.predicted_bytes("dit", "tiny", scheme, dtype=dtype)


@pytest.mark.parametrize(
    ("kind", "scheme"),
    [("dit", s) for s in measure.SCHEME_ORDER]
    + [(k, s) for k in ("lm", "text_encoder") for s in ("w8a8_dynamic", "qint4")],
)
def test_the_plans_bytes_are_exact_on_real_size_meta_builds(kind: str, scheme: str) -> None:
    predicted, held = measure.meta_bytes(kind, "real", scheme)
    assert predicted == held
    assert held < measure.meta_bytes(kind, "real", "none")[1]


@pytest.mark.slow
@pytest.mark.parametrize("exclude", [None, ()], ids=["default", "nothing-excluded"])
@pytest.mark.parametrize("scheme", measure.SCHEME_ORDER)
@pytest.mark.parametrize("variant", ["turbo", "xl-turbo"])
def test_every_dit_family_and_scheme_is_exact_on_real_size_meta_builds(
    variant: str, scheme: str, exclude: tuple[str, ...] | None
) -> None:
    """The 2B and the XL (its condition encoder, tokenizer and detokenizer 2048 wide under a 2560-wide decoder),
    with the default exclusions and with nothing excluded (the codec's and the condition encoder's Linear layers
    quantized too): the plan's bytes are what the quantized build holds. base / sft hold the same modules as
    their family's turbo (``test_every_dit_variant_holds_the_linear_layers_the_plan_names``)."""
    predicted, held = measure.meta_bytes("dit", "real", scheme, exclude=exclude, variant=variant)
    assert predicted == held


def _linears(model: torch.nn.Module) -> set[tuple[str, int, int]]:
    return {(n, m.out_features, m.in_features) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("variant", DIT_MODELS)
def test_every_dit_variant_holds_the_linear_layers_the_plan_names(variant: str) -> None:
    """Every Linear of every DiT variant, by name and shape, tiny and real size (meta): the decoder's, the condition
    encoder's and the audio codec's, at the encoder widths."""
    for size in ("tiny", "real"):
        model = measure.build("dit", size, variant=variant, device="meta" if size == "real" else "cpu")
        named = {
            (layer.name, layer.out_features, layer.in_features)
            for layer in quant.dit_linears(measure.shape_of("dit", size, variant=variant))
        }
        assert named == _linears(model), (variant, size)
        assert any(name.startswith("audio_token_detokenizer.") for name, _, _ in named)


def _upstream_quantizes(module: str) -> bool:
    """upstream ACE-Step's ``_dit_filter_fn`` (acestep/core/generation/handler/init_service_loader.py), on the
    module's name in the original checkpoint: under ``decoder.``, and no ``tokenizer`` / ``detokenizer`` part."""
    parts = dit_original_name(f"{module}.weight").removesuffix(".weight").split(".")
    return parts[0] == "decoder" and not any(part in ("tokenizer", "detokenizer") for part in parts)


@pytest.mark.parametrize("variant", ["turbo", "xl-sft"])
@pytest.mark.parametrize("scheme", ["int8_weight_only", "qint8"])
def test_the_dit_quantizes_upstreams_set_less_the_embedders_and_the_plan_counts_it(variant: str, scheme: str) -> None:
    """By default the DiT quantizes what upstream quantizes (the decoder's Linear layers: not the condition
    encoder, the audio tokenizer or the detokenizer) less the timestep and condition embedders; with
    ``UPSTREAM_DIT_EXCLUDE`` exactly upstream's set. apply_plan quantizes those modules and the plan's bytes are
    what the model then holds."""
    upstream = {
        name for name, _, _ in _linears(measure.build("dit", "tiny", variant=variant)) if _upstream_quantizes(name)
    }
    assert upstream and not any(name.startswith(("condition_encoder.", "audio_")) for name in upstream)
    embedders = {name for name in upstream if name.startswith(("time_embed", "condition_embedder"))}
    assert embedders
    for exclude, expected in ((None, upstream - embedders), (quant.UPSTREAM_DIT_EXCLUDE, upstream)):
        model = measure.build("dit", "tiny", variant=variant)
        apply_plan(model, "dit", measure.plan_for("dit", scheme, exclude=exclude), device="cpu")
        assert set(quantized_modules(model)) == expected
        assert weight_bytes(model) == measure.predicted_bytes("dit", "tiny", scheme, exclude=exclude, variant=variant)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["lm", "text_encoder"])
def test_the_rotary_buffers_are_counted_in_the_dtype_the_plan_runs(kind: str, dtype: str, tmp_path) -> None:
    """transformers' Qwen3 rotary embedding holds ``inv_freq`` and ``original_inv_freq`` (head_dim / 2 values each).
    Built by ``runtime.models`` they follow ``.to(dtype)``; loaded from a checkpoint they stay float32 until
    ``apply_plan``'s precision step converts them: either way the component runs holding head_dim values in its
    dtype, which the plan counts (not one float32 buffer: that is the same bytes in bf16, half of them in fp32)."""
    shape = measure.shape_of(kind, "tiny")
    folder = tmp_path / FOLDERS[kind]
    (write_lm if kind == "lm" else write_text_encoder)(folder)
    loaded = load_checkpoint(folder, component=kind, dtype=dtype).model
    assert {str(b.dtype) for n, b in loaded.named_buffers() if "rotary" in n} == {"torch.float32"}
    apply_plan(loaded, kind, {f"precision.{kind}": dtype}, device="cpu")
    for model in (measure.build(kind, "tiny", dtype=dtype), loaded):
        rotary = [b for n, b in model.named_buffers() if "rotary" in n]
        assert sum(b.numel() for b in rotary) == shape.buffer_values == shape.head_dim
        assert sum(b.numel() * b.element_size() for b in rotary) == shape.buffer_values * DTYPE_BYTES[dtype]
        vocab = model.config.vocab_size
        expected = lm_weight_bytes(
            dataclasses.replace(shape, vocab=vocab), dtype=dtype, quantize_lm_head=False, exclude=()
        )
        assert weight_bytes(model) == expected, (kind, dtype)


@pytest.mark.parametrize(
    ("kind", "exclude"),
    [
        ("dit", ("layers.1.*", "*.to_q", "condition_encoder.timbre*")),
        ("dit", ()),
        ("lm", ("model.layers.0.*", "lm_head")),
    ],
)
def test_a_users_exclusions_are_counted_exactly(kind: str, exclude: tuple[str, ...]) -> None:
    """Patterns that name one layer's index, a suffix, or nothing: the plan counts what apply_plan leaves."""
    model = measure.build(kind, "tiny")
    apply_plan(model, kind, measure.plan_for(kind, "int8_weight_only", exclude=exclude), device="cpu")
    assert weight_bytes(model) == measure.predicted_bytes(kind, "tiny", "int8_weight_only", exclude=exclude)


@pytest.mark.parametrize("inputs", [64, 160, 192, 200, 256])
def test_quanto_int4_groups_as_the_plan_counts_them(inputs: int) -> None:
    layer = torch.nn.Sequential(torch.nn.Linear(inputs, 32, bias=False)).to(torch.bfloat16)
    quantize_component(layer, "qint4", [])
    assert weight_bytes(layer) == quant.SCHEMES["qint4"].linear_bytes(32, inputs, 2)


@pytest.mark.parametrize("scheme", ["int8_weight_only", "qint8"])
def test_the_modules_quantized_are_the_ones_the_plan_counts(scheme: str) -> None:
    """The DiT's decoder Linear layers less the embedders (upstream's set and ours), the LM's less its tied head."""
    dit = _applied("dit", scheme)
    counted = quant.quantized_linears(quant.dit_linears(measure.shape_of("dit", "tiny")), quant.DEFAULT_EXCLUDE["dit"])
    assert set(quantized_modules(dit)) == {layer.name for layer in counted}
    assert not any(
        layer.name.startswith(("condition_encoder", "time_embed", "condition_embedder")) for layer in counted
    )
    lm = _applied("lm", scheme)
    counted = quant.quantized_linears(quant.lm_linears(measure.shape_of("lm", "tiny")), ["lm_head"])
    assert set(quantized_modules(lm)) == {layer.name for layer in counted} and "lm_head" not in quantized_modules(lm)
    assert lm.lm_head.weight is lm.model.embed_tokens.weight  # still tied


@pytest.mark.parametrize("scheme", ["int8_weight_only", "w8a8_dynamic", "qint8"])
def test_the_shipped_quality_figures_are_reproduced(scheme: str) -> None:
    """What the plan reports is what this build measures now (seeded, CPU), within 0.5 dB."""
    for kind in ("dit", "lm"):
        reference_model = measure.build(kind, "tiny")
        inputs = measure.fixed_inputs(kind, reference_model)
        reference = measure.forward(kind, reference_model, inputs)
        output = measure.forward(kind, _applied(kind, scheme), inputs)
        shipped = quant.quality(kind, scheme)
        assert measure.snr_db(output, reference) == pytest.approx(shipped["snr_db"], abs=0.5)
        if kind == "lm":
            assert measure.next_token_agreement(output, reference) == pytest.approx(
                shipped["next_token_agreement"], abs=0.01
            )


@pytest.mark.parametrize("scheme", ["fp8_weight_only", "qfloat8"])
def test_fp8_weights_run_on_the_cpu(scheme: str) -> None:
    """Both backends dequantize fp8 weights on the CPU: it runs (slower), so the plan does not refuse it there."""
    reference_model = measure.build("dit", "tiny")
    inputs = measure.fixed_inputs("dit", reference_model)
    output = measure.forward("dit", _applied("dit", scheme), inputs)
    assert torch.isfinite(output).all()
    assert measure.snr_db(output, measure.forward("dit", reference_model, inputs)) > quant.LOSSY_BELOW_DB


def test_torchao_weights_take_the_same_offload_and_order_rules() -> None:
    dit = measure.build("dit", "tiny", dtype="fp32")
    plan = measure.plan_for("dit", "int8_weight_only", dtype="fp32") | {"offload.dit": "group", "compile": True}
    applied = apply_plan(dit, "dit", plan, device="cpu")
    assert any("(torchao, int8 weights" in step for step in applied.steps)
    assert not any("contiguous inputs" in step for step in applied.steps)  # quanto's CPU kernel only
    assert applied.steps[-1].startswith("compile skipped")
    inputs = measure.fixed_inputs("dit", dit)
    assert torch.isfinite(measure.forward("dit", dit, inputs)).all()
    with pytest.raises(PlanOrderError, match="load it on the CPU"):
        apply_plan(
            measure.build("dit", "tiny").to("meta"), "dit", measure.plan_for("dit", "w8a8_dynamic"), device="cpu"
        )


def test_importing_the_runtime_prints_none_of_the_expected_import_warnings() -> None:
    code = "import acestep_core.runtime.models, torchao.quantization"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for noise in ("Failed to load", "Unable to import `torchao`", "register_constant"):
        assert noise not in result.stderr, result.stderr


def test_the_gpu_script_dry_run_prints_the_table_and_writes_it(tmp_path, capsys) -> None:
    module = runpy.run_path(str(ROOT / "benchmarks" / "gpu_quant.py"))
    assert module["main"]([str(tmp_path), "--dry-run", "--repeats", "1", "--kinds", "lm"]) == 0
    rows = json.loads((tmp_path / "gpu_quant.json").read_text())["rows"]
    assert [row["scheme"] for row in rows] == ["none", *measure.SCHEME_ORDER]
    assert all(row["predicted_bytes"] == row["held_bytes"] for row in rows)
    out = capsys.readouterr().out
    assert "CPU (dry run)" in out and "int8_weight_only" in out and "next tok" in out


def test_the_cpu_benchmark_prints_every_scheme() -> None:
    script = ROOT / "benchmarks" / "bench_quant.py"
    result = subprocess.run(
        [sys.executable, str(script), "--kinds", "lm", "--repeats", "1", "--no-meta"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("lm ")]
    assert [line.split()[3] for line in lines] == ["none", *measure.SCHEME_ORDER]
    assert all(" exact " in line for line in lines)
