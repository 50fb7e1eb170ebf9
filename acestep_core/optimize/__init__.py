"""Optimizations that really run: a memory model, the plan it checks, and (for the pipeline) the
code that applies a plan to real models.

This package's top level is pure Python: the resolution imports it at every start-up. The modules
that touch torch — :mod:`acestep_core.optimize.apply` (attention, precision, quantization, offload,
compile) and :mod:`acestep_core.optimize.vae` (tiled decode) — are imported only by the pipeline.
"""

from acestep_core.optimize.ladder import Abilities, LadderResult, Refusal, Rung, fit
from acestep_core.optimize.memory import (
    Budget,
    Choices,
    Prediction,
    RunShape,
    device_budget,
    predict,
)
from acestep_core.optimize.plan import check_resolution, choices_from_plan, plan_settings, run_shape

__all__ = [
    "Abilities",
    "Budget",
    "Choices",
    "LadderResult",
    "Prediction",
    "Refusal",
    "RunShape",
    "Rung",
    "check_resolution",
    "choices_from_plan",
    "device_budget",
    "fit",
    "plan_settings",
    "predict",
    "run_shape",
]
