"""One vocabulary (issue #10 point 3): every shared constant is defined in acestep_core/vocabulary.py
and nowhere else; the modules that used to define their own copies now use these objects."""

from __future__ import annotations

import ast
import operator
from pathlib import Path
from typing import get_args

from acestep_core import vocabulary
from acestep_core.vocabulary import PLAN_KEYS, PlanKey

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = (
    ROOT / "acestep_core",
    *sorted(package.parent for package in (ROOT / "plugins").glob("*/acestep_core_*/__init__.py")),
    *sorted(package.parent for package in (ROOT / "examples").glob("*/acestep_core_*/__init__.py")),
    ROOT / "benchmarks",
)
"""Every package folder (the core with its runtime, each plugin, each example) and the benchmarks."""
SOURCES = sorted(
    path
    for folder in FOLDERS
    for path in folder.rglob("*.py")
    if path != ROOT / "acestep_core" / "vocabulary.py" and ".venv" not in path.parts
)
UNITS = {"MIB": vocabulary.MIB, "GIB": vocabulary.GIB}
"""The only vocabulary names folded into an expression: ``808 * MIB`` is the context's size written again."""
DISTINCTIVE = 1000
"""Numbers from here up (and tuples of words) are flagged wherever an expression equals them: such a
value does not occur by chance. Smaller numbers (5, 10, 25, 32, 256, 600) are flagged where a constant,
a class field or a parameter default is bound to one."""
COINCIDENCES = {
    ("acestep_core/runtime/fleet/cli.py", "HIGHEST_PORT"): "the largest TCP port, not audio codes",
    ("acestep_core/runtime/fleet/limits.py", "CAPTION_TOKENS"): "caption tokens, not latent frames",
    ("acestep_core/runtime/fleet/serve.py", "HISTORY"): "runs a replica remembers, not MiB",
    ("acestep_core/runtime/fleet/serve.py", "stage_gpus"): "the share of a GPU a stage replica takes, not GiB",
    (
        "acestep_core/optimize/memory.py",
        "vocab",
    ): "Qwen3-Embedding's tokenizer length, where the LM's audio codes begin",
    ("acestep_core/optimize/memory.py", "pool_window"): "latent frames the DiT's attention pooler folds into one code",
    ("acestep_core/runtime/models/loader.py", "LISTED"): "names shown in a message, not codes per second",
    ("benchmarks/gpu_checkpoints.py", "TENSOR_ROUNDING"): "the caching allocator's block size in bytes, not MiB",
    ("plugins/cuda/acestep_core_cuda/replay.py", "MAX_GPUS"): "GPUs a recording may list, not latent frames",
    ("acestep_core/compat/gpu_config.py", "MLX_VAE_CHUNK_DEFAULT"): "upstream's MLX VAE chunk in frames, not MiB",
    ("acestep_core/compat/gpu_config.py", "HALF"): "the LM's share of a device (a fraction), not GiB",
    ("acestep_core/compat/gpu_config.py", "SIMULATED_CONTEXT_GB"): "upstream's simulated CUDA context, not our margin",
    ("acestep_core/cli/terminal.py", "LINE_LIMIT"): "characters a terminal line keeps, not seconds",
    ("acestep_core/inputs.py", "MAX_NESTING"): "levels of nesting in a file, not latent frames",
    ("acestep_core/optimize/memory.py", "DEFAULT_COT_TOKENS"): "the LM's chain-of-thought tokens, not frames",
    ("acestep_core/optimize/memory.py", "time_freq"): "the DiT's timestep-embedding width, not frames",
    ("acestep_core/runtime/pipeline/lm.py", "COT_TOKEN_BUDGET"): "tokens, not latent frames",
    ("acestep_core/runtime/pipeline/text_encoder.py", "MAX_CAPTION_TOKENS"): "caption tokens, not frames",
    ("acestep_core/runtime/ui/client.py", "PAUSE_MS"): "milliseconds of a pause in typing, not seconds of audio",
    ("benchmarks/gpu_memory.py", "CAPTION_TOKENS"): "caption tokens, not frames",
    ("acestep_core/optimize/corrections.py", "MAX_OBSERVATIONS_PER_DEVICE"): "store entries a device keeps, not frames",
    ("acestep_core/runtime/quantization.py", "DEFAULT_REPEATS"): "timed forwards a scheme, not codes per second",
}
"""Constants whose value equals a vocabulary value by coincidence, each with what it counts instead."""


def vocabulary_values() -> dict[object, list[str]]:
    """Each shared value (numbers, and tuples of words) → the vocabulary names that hold it; the byte
    constants also in MiB and GiB, as a module would write them again (``CONTEXT_GB = 0.8``)."""
    values: dict[object, list[str]] = {}
    for name, value in vars(vocabulary).items():
        if not name.isupper() or name.startswith("_"):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values.setdefault(_key(value), []).append(name)
            if name.endswith("_BYTES"):
                values.setdefault(_key(value // vocabulary.MIB), []).append(f"{name} in MiB")
                values.setdefault(_key(value / vocabulary.GIB), []).append(f"{name} in GiB")
        elif isinstance(value, tuple) and value and all(isinstance(item, str) for item in value):
            values.setdefault(_key(value), []).append(name)
    return values


def _key(value: object) -> object:
    return (type(value).__name__, value)


class _NotConstantError(Exception):
    pass


_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
}


def fold(node: ast.AST) -> object:
    """The value of a constant expression (numbers, strings, the units, arithmetic, tuples and lists of
    them), or :class:`_NotConstantError`."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float, str):
        return node.value
    if isinstance(node, ast.Name) and node.id in UNITS:
        return UNITS[node.id]
    if isinstance(node, ast.Attribute) and node.attr in UNITS:
        return UNITS[node.attr]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = fold(node.operand)
        if type(value) in (int, float):
            return -value  # type: ignore[operator]
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(fold(element) for element in node.elts)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = fold(node.left), fold(node.right)
        too_large = isinstance(node.op, (ast.Pow, ast.LShift)) and abs(right) > 64  # type: ignore[arg-type]
        if type(left) in (int, float) and type(right) in (int, float) and not too_large:
            try:
                return _OPERATORS[type(node.op)](left, right)
            except ArithmeticError:
                pass
    raise _NotConstantError


def _value_of(node: ast.AST) -> object | None:
    if isinstance(node, (ast.Name, ast.Attribute)):
        return None  # a reference (to the vocabulary's object, or anything else) is no copy
    try:
        return fold(node)
    except _NotConstantError:
        return None


def _bindings(tree: ast.Module) -> list[tuple[str, ast.AST]]:
    """Module constants, class fields and parameter defaults, with the name each is bound to."""
    found: list[tuple[str, ast.AST]] = []
    bodies = [tree.body, *(node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef))]
    for body in bodies:
        for statement in body:
            if isinstance(statement, ast.Assign):
                found += [(ast.unparse(target), statement.value) for target in statement.targets]
            elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                found.append((ast.unparse(statement.target), statement.value))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = node.args
            positional = arguments.posonlyargs + arguments.args
            found += [
                (a.arg, d)
                for a, d in zip(
                    positional[len(positional) - len(arguments.defaults) :], arguments.defaults, strict=True
                )
            ]
            found += [
                (a.arg, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True) if d is not None
            ]
    return found


def copies_of_the_vocabulary(source: str, where: str = "<string>") -> list[str]:
    """Where ``source`` writes a vocabulary value again instead of using the vocabulary's name."""
    values = vocabulary_values()
    tree = ast.parse(source)
    found = []
    excused = {id(bound) for name, bound in _bindings(tree) if (where, name) in COINCIDENCES}
    for node in ast.walk(tree):
        value = _value_of(node)
        distinctive = isinstance(value, tuple) or (type(value) in (int, float) and abs(value) >= DISTINCTIVE)  # type: ignore[arg-type]
        if distinctive and _key(value) in values and id(node) not in excused:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)[:50]} is {', '.join(values[_key(value)])}")
    for name, bound in _bindings(tree):
        value = _value_of(bound)
        if type(value) not in (int, float) or abs(value) >= DISTINCTIVE or _key(value) not in values:  # type: ignore[arg-type]
            continue
        if (where, name) not in COINCIDENCES:
            found.append(f"{where}:{bound.lineno}: {name} = {ast.unparse(bound)} is {', '.join(values[_key(value)])}")
    return found


def test_the_guard_compares_values_not_names() -> None:
    assert copies_of_the_vocabulary("GiB = 1 << 30") == ["<string>:1: 1 << 30 is GIB"]
    assert copies_of_the_vocabulary("CONTEXT_BYTES = 808 << 20") == ["<string>:1: 808 << 20 is CUDA_CONTEXT_BYTES"]
    assert copies_of_the_vocabulary("X = 808 * MIB") == ["<string>:1: 808 * MIB is CUDA_CONTEXT_BYTES"]
    assert copies_of_the_vocabulary("def f(total):\n    return total / 1024**3") == ["<string>:2: 1024 ** 3 is GIB"]
    assert copies_of_the_vocabulary("STAGES = ['lm', 'text_encoder', 'dit', 'vae']")[0].endswith(
        "is COMPONENTS, PHASES"
    )
    assert copies_of_the_vocabulary("class Decode:\n    frames: int = 256") == [
        "<string>:2: frames = 256 is VAE_TILE_FRAMES"
    ]
    assert copies_of_the_vocabulary("def fit(shortest=10): ...") == ["<string>:1: shortest = 10 is MIN_DURATION_S"]
    assert copies_of_the_vocabulary("CONTEXT_MIB = 808") == [
        "<string>:1: CONTEXT_MIB = 808 is CUDA_CONTEXT_BYTES in MiB"
    ]
    assert copies_of_the_vocabulary("MARGIN_GB = 0.5") == ["<string>:1: MARGIN_GB = 0.5 is SAFETY_MARGIN_BYTES in GiB"]
    # the vocabulary's own objects, and values that only look alike, pass
    assert (
        copies_of_the_vocabulary("from acestep_core.vocabulary import GIB\nLIMIT = GIB\nX = 2 * GIB\nY = 256.5") == []
    )
    assert copies_of_the_vocabulary("def f(x):\n    return x[256]\nTIMEOUT = 10.0") == []


def test_there_is_a_source_in_every_folder_the_guard_covers() -> None:
    covered = {folder: [path for path in SOURCES if folder in path.parents] for folder in FOLDERS}
    assert all(covered.values()), [folder for folder, paths in covered.items() if not paths]
    assert {folder.name for folder in FOLDERS} >= {
        "acestep_core",
        "acestep_core_cuda",
        "acestep_core_simulated",
        "acestep_core_tiers_default",
        "acestep_core_tiers_8tier",
        "benchmarks",
    }


def test_no_package_or_benchmark_writes_a_vocabulary_value_again() -> None:
    found = [
        copy
        for path in SOURCES
        for copy in copies_of_the_vocabulary(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert found == [], "use acestep_core.vocabulary's names (or list a coincidence in COINCIDENCES, with why)"


def test_every_listed_coincidence_is_still_there() -> None:
    """An entry whose constant was renamed or removed would silently exempt a future copy."""
    for where, name in COINCIDENCES:
        tree = ast.parse((ROOT / where).read_text(encoding="utf-8"))
        assert name in {bound for bound, _ in _bindings(tree)}, (where, name)


def test_the_modules_share_the_vocabularys_objects() -> None:
    import acestep_core
    from acestep_core import tables, types
    from acestep_core.optimize import ladder, memory, plan, readings

    assert acestep_core.GIB is types.GIB is memory.GIB is vocabulary.GIB
    assert acestep_core.COMPONENTS is vocabulary.COMPONENTS and memory.PHASES is vocabulary.PHASES
    assert acestep_core.LM_SIZES is tables.LM_SIZES is vocabulary.LM_SIZES
    assert memory.CUDA_CONTEXT_BYTES == 808 * vocabulary.MIB and memory.SAFETY_MARGIN_BYTES == 512 * vocabulary.MIB
    assert ladder.MIN_DURATION_S == tables.MIN_DURATION_S == vocabulary.MIN_DURATION_S
    assert ladder.VAE_TILES[0] == (vocabulary.VAE_TILE_FRAMES, vocabulary.VAE_TILE_OVERLAP)
    assert readings.TILE_FRAMES_IN_READINGS == vocabulary.VAE_TILE_FRAMES
    assert plan.choices_from_plan({}).tile_frames == vocabulary.VAE_TILE_FRAMES
    assert acestep_core.PLAN_KEYS is vocabulary.PLAN_KEYS


def test_components_and_phases_run_in_one_order() -> None:
    assert vocabulary.COMPONENTS == ("lm", "text_encoder", "dit", "vae") == vocabulary.PHASES
    assert vocabulary.LATENT_RATE_HZ == 25 and vocabulary.CODES_PER_SECOND == 5


def test_literal_types_and_value_tuples_agree() -> None:
    assert get_args(vocabulary.Quantization) == vocabulary.QUANTIZATIONS
    assert get_args(vocabulary.Offload) == vocabulary.OFFLOADS
    assert get_args(vocabulary.Attention) == vocabulary.ATTENTIONS
    assert get_args(vocabulary.LmSize) == vocabulary.LM_SIZES


def test_every_plan_key_has_a_type_and_says_what_it_is() -> None:
    for key, spec in PLAN_KEYS.items():
        assert isinstance(spec, PlanKey) and str(spec) == spec.description and spec.description, key
    for component in vocabulary.COMPONENTS:
        assert PLAN_KEYS[f"offload.{component}"].choices == vocabulary.OFFLOADS
        assert PLAN_KEYS[f"precision.{component}"].choices == vocabulary.PRECISIONS
    assert PLAN_KEYS["compile"].check(True) is None and PLAN_KEYS["compile"].check(1) is not None
    assert PLAN_KEYS["vae.tile_frames"].check(0) is not None and PLAN_KEYS["vae.tile_frames"].check(64) is None
    assert PLAN_KEYS["lm.gpu_memory_ratio"].check(float("nan")) is not None
    assert PLAN_KEYS["ladder.refused"].check(False) is None and PLAN_KEYS["ladder.refused"].check(True) is not None
    assert not PLAN_KEYS["memory.phases"].settable and PLAN_KEYS["offload.vae"].settable


def test_adjustment_and_setting_are_one_kind_of_record() -> None:
    from acestep_core import Adjustment, Setting
    from acestep_core.types import Decided

    change = Adjustment("batch_size", 8, 2, "over the limit")
    setting = Setting("compile", False, "off on this tier")
    for record, subject, outcome in ((change, "batch_size", 2), (setting, "compile", False)):
        assert isinstance(record, Decided)
        assert (record.subject, record.outcome) == (subject, outcome)
        assert record.attributed("tiers_default").plugin == "tiers_default"
        assert record.attributed("x").attributed("y").plugin == "x"  # an author, once named, stays
