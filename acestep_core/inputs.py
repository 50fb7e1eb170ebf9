"""What users hand in, read defensively: memory sizes, files with limits, output paths checked before work.

Pure Python (no torch). The command line treats a bad value as a usage error; the environment treats
the same value as a warning and ignores it. Both use the parsers here, so they accept the same values.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

from acestep_core.vocabulary import MIB

MIN_MEMORY_GB = 0.001
"""The smallest simulated device, about 1 MiB (a smaller figure rounds towards zero bytes)."""
MAX_MEMORY_GB = 1024.0**2
"""The largest simulated device: 1 PiB (larger figures overflow what a device reading can hold)."""
MEMORY_ACCEPTED = f"give a positive number of GB from {MIN_MEMORY_GB:g} to {MAX_MEMORY_GB:.0f}, such as 8"

TABLE_SIZE_LIMIT = MIB
"""A tier table is a few KB; 1 MiB leaves room for comments and refuses /dev/zero-like inputs."""
RECORDING_SIZE_LIMIT = 8 << 20
"""A recording of a few GPUs is a few KB; 8 MiB leaves room for large multi-GPU MIG boxes."""
RESULTS_SIZE_LIMIT = 64 << 20
"""calibrate's raw measurements: thousands of rows at most."""
MAX_NESTING = 32
"""Deepest nesting accepted in a table or recording (theirs is 3 or 4); deeper is refused before any
recursive code (the TOML parser, validation, rendering) can run out of stack."""


class InputFileError(ValueError):
    """A file that cannot be read as asked (missing, not a regular file, too large, not text)."""


def clip(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (with an ellipsis and the length) for a message."""
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} characters)"


def parse_memory_gb(raw: object) -> float:
    """A memory size in GB, as ``--vram`` and ``MAX_CUDA_VRAM`` take it.

    :raises ValueError: ``'abc' is not a memory size (not a number): give …`` for anything but a finite
        number in [:data:`MIN_MEMORY_GB`, :data:`MAX_MEMORY_GB`] ('', '8GB', '-1', 'nan', '1e400', '1e300', '1e-300').
    """
    text = str(raw)
    try:
        gb = float(text.strip())
    except ValueError:
        reason = "not a number"
    else:
        if not math.isfinite(gb):
            reason = "not a finite number"
        elif not MIN_MEMORY_GB <= gb <= MAX_MEMORY_GB:
            reason = "out of range"
        else:
            return gb
    raise ValueError(f"{clip(text)!r} is not a memory size ({reason}): {MEMORY_ACCEPTED}")


def read_text_limited(path: str | Path, *, limit: int, what: str) -> str:
    """The UTF-8 text of a regular file no larger than ``limit`` bytes.

    A FIFO, a device (``/dev/zero``), a directory or a socket is refused before it is opened, so a
    read can neither hang nor run out of memory.

    :raises InputFileError: naming ``path`` and the problem.
    """
    path = Path(path)
    try:
        info = path.stat()
    except OSError as error:
        raise InputFileError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError(f"{path}: cannot read a folder as a {what} file")
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(f"{path}: not a regular file (a pipe, device or socket); give a {what} file")
    if info.st_size > limit:
        raise InputFileError(f"{path}: {info.st_size} bytes is too large for a {what} (limit {limit} bytes)")
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise InputFileError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    if len(data) > limit:
        raise InputFileError(f"{path}: too large for a {what} (limit {limit} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: not a text file (not UTF-8); give a {what} file") from None


def nesting_depth(value: object, limit: int = MAX_NESTING) -> int:
    """How deeply lists and mappings nest in ``value`` (iteratively, so any depth is safe to ask);
    counting stops once past ``limit``."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((child, depth + 1) for child in item)
    return deepest


# --------------------------------------------------------------------------------------------- output paths
def output_dir_problem(path: str | Path, *, must_be_empty: bool = False) -> str | None:
    """Why files cannot be written into folder ``path`` (created if missing), or None.

    Checked before any work starts: '' (which would mean the current folder), an existing file, a
    path under a file, a folder that cannot be written, and (``must_be_empty``) a folder holding files.
    """
    if str(path).strip() == "":
        return "an empty path; name a folder"
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            return "exists and is not a folder"
        if must_be_empty and any(folder.iterdir()):
            return "is not empty"
        return _unwritable(folder, "is not writable")
    return _creatable(folder)


def output_file_problem(path: str | Path) -> str | None:
    """Why file ``path`` cannot be written (its folder must exist), or None."""
    if str(path).strip() == "":
        return "an empty path; name a file"
    target = Path(path)
    if target.is_dir():
        return "is a folder; name a file"
    if target.exists():
        if not target.is_file():
            return "exists and is not a regular file"
        return None if os.access(target, os.W_OK) else "is not writable"
    parent = target.parent
    if not parent.exists():
        return f"its folder {str(parent)!r} does not exist"
    if not parent.is_dir():
        return f"{str(parent)!r} is not a folder"
    return _unwritable(parent, f"its folder {str(parent)!r} is not writable")


def _creatable(folder: Path) -> str | None:
    """Why ``folder`` (missing) cannot be created: the nearest existing ancestor must be a writable folder."""
    ancestor = folder.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{str(ancestor)!r} is a file, so no folder can be made under it"
    return _unwritable(ancestor, f"cannot create it: {str(ancestor)!r} is not writable")


def _unwritable(folder: Path, problem: str) -> str | None:
    """``problem`` unless a file can really be created in ``folder`` (permissions, a read-only mount,
    root's rights: asking the file system is the only answer that holds for all of them)."""
    try:
        import tempfile  # only when an output path is checked: its import is costly for every start-up

        handle, probe = tempfile.mkstemp(prefix=".acestep-write-check-", dir=folder)
    except OSError:
        return problem
    os.close(handle)
    os.unlink(probe)
    return None
