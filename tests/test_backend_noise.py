"""The ML libraries' import-time noise is dropped, and only it (acestep_core.runtime.backend_noise)."""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys

import pytest

from acestep_core.runtime.backend_noise import silence_import_noise


def test_only_the_listed_messages_are_dropped(caplog: pytest.LogCaptureFixture) -> None:
    silence_import_noise()
    silence_import_noise()
    logger = logging.getLogger("torchao")
    assert len(logger.filters) == len([f for f in logger.filters if f.__class__.__name__ == "_DropMatching"]) == 1
    with caplog.at_level(logging.WARNING):
        logger.warning("Failed to load /x/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: Could not load")
        logger.warning("Failed to quantize layer 3")
        logging.getLogger("torch.utils._pytree").warning(
            "<enum 'KernelPreference'> is an Enum subclass and is now natively supported by torch.compile"
        )
        logging.getLogger("torch.utils._pytree").warning("something else about pytrees")
    assert [record.getMessage() for record in caplog.records] == [
        "Failed to quantize layer 3",
        "something else about pytrees",
    ]


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
def test_importing_the_runtime_with_torchao_installed_prints_nothing() -> None:
    code = "import acestep_core.runtime.models, acestep_core.runtime.apply"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
