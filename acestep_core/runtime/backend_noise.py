"""Warnings the ML libraries print at import that say nothing to our users.

diffusers imports torchao whenever it is installed (the ``ml`` extra installs it for quantization), and
that import alone logs: one line per CUDA kernel library a CPU build of torch cannot load, a deprecation
from torch for each Enum torchao registers, and diffusers' note that torchao moved a tensor class it looks
for. A plan that quantizes nothing would open with five lines of noise on every command; one that does
quantize is told by our own code what ran. Each filter drops exactly these messages from exactly the
logger that writes them, and nothing else.
"""

from __future__ import annotations

import logging
import re

IMPORT_NOISE = {
    "torchao": re.compile(r"Failed to load .*torchao.*\.so\b"),
    "torch.utils._pytree": re.compile(r"<enum '\w+'> is an Enum subclass and is now natively supported"),
    "diffusers.quantizers.torchao.torchao_quantizer": re.compile(r"Unable to import `torchao` Tensor objects"),
}
"""The logger, and the pattern of the import-time messages dropped from it."""


class _DropMatching(logging.Filter):
    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.search(record.getMessage()) is None


def silence_import_noise() -> None:
    """Install the filters (idempotent: a logger gets each pattern once)."""
    for name, pattern in IMPORT_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMatching) and f.pattern is pattern for f in logger.filters):
            logger.addFilter(_DropMatching(pattern))
