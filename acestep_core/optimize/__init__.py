"""Deciding the optimizations: a memory model, the degrade ladder and the plan per hardware.

Pure Python: the resolution imports it at every start-up. Applying a plan to real models is running,
in :mod:`acestep_core.runtime.apply` and :mod:`acestep_core.runtime.vae_decode`.
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
