"""``acestep-core calibrate``: measure what a device runs and write a tier table from it.

:mod:`.search` holds the bounded search, the resumable raw file and the table builder (pure Python);
:mod:`.torch_backend` runs the real components on a device.
"""

from acestep_core.runtime.calibrate.search import (
    RAW_FILE,
    TABLE_FILE,
    Backend,
    CalibrationConfig,
    CalibrationResult,
    Calibrator,
    CardResult,
    FootprintBackend,
    Measurement,
    OutOfMemory,
    Trial,
    build_table,
    choose_corner,
    combine,
    staircase,
)

__all__ = [
    "RAW_FILE",
    "TABLE_FILE",
    "Backend",
    "CalibrationConfig",
    "CalibrationResult",
    "Calibrator",
    "CardResult",
    "FootprintBackend",
    "Measurement",
    "OutOfMemory",
    "Trial",
    "build_table",
    "choose_corner",
    "combine",
    "staircase",
]
