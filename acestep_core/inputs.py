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
        if not text.isascii():  # float() would read '８' (full-width) or '٨' as 8
            raise ValueError(text)
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

    A FIFO, a device (``/dev/zero``), a directory or a socket is refused before it is read, so a
    read can neither hang nor run out of memory. The file is opened without blocking and judged by
    what was opened (``fstat``), so a FIFO swapped in after a look at the path cannot hang it either.

    :raises InputFileError: naming ``path`` and the problem.
    """
    path = Path(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except IsADirectoryError:  # where a folder cannot be opened at all
        raise InputFileError(f"{path}: cannot read a folder as a {what} file") from None
    except OSError as error:
        raise InputFileError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    try:
        return _read_limited(descriptor, path, limit=limit, what=what).decode("utf-8")
    except UnicodeDecodeError:
        raise InputFileError(f"{path}: not a text file (not UTF-8); give a {what} file") from None
    finally:
        os.close(descriptor)


def _read_limited(descriptor: int, path: Path, *, limit: int, what: str) -> bytes:
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise InputFileError(f"{path}: cannot read a folder as a {what} file")
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(f"{path}: not a regular file (a pipe, device or socket); give a {what} file")
        if info.st_size > limit:
            raise InputFileError(f"{path}: {info.st_size} bytes is too large for a {what} (limit {limit} bytes)")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(descriptor, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as error:
        raise InputFileError(f"{path}: cannot read the {what}: {error.strerror or error}") from None
    if size > limit:
        raise InputFileError(f"{path}: too large for a {what} (limit {limit} bytes)")
    return b"".join(chunks)


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


def parse_index(text: str) -> int | None:
    """A device index written in ASCII digits (``"0"``, ``"12"``), else None.

    ``str.isdigit`` also accepts ``'²'`` and ``'١'``, and ``int`` reads a full-width ``'１'`` as 1: an
    index is held to ASCII digits, as CUDA and every driver read them."""
    stripped = text.strip()
    if not stripped or not stripped.isascii() or not stripped.isdigit():
        return None
    return int(stripped)


TRUE_SPELLINGS = ("1", "true", "yes", "on")
"""What switches on an ``ACESTEP_CORE_*`` switch variable (case and surrounding spaces ignored); any
other value, empty included, leaves it off."""


def env_flag(value: str | None) -> bool:
    """Whether a switch variable's value turns it on: one of :data:`TRUE_SPELLINGS`. The one reader of
    every ``ACESTEP_CORE_*`` switch (``DEBUG``, ``NO_CACHE``, ``DISABLE_PLUGIN_AUTOLOAD``,
    ``TRACE_PLUGINS``), so they all agree on what "on" is."""
    return value is not None and value.strip().lower() in TRUE_SPELLINGS


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


def output_file_problem(
    path: str | Path, *, overwrite: bool = False, suffixes: tuple[str, ...] | None = None
) -> str | None:
    """Why file ``path`` cannot be written (its folder must exist), or None.

    Nothing of the user's is replaced unless ``overwrite``: an existing file, or a symbolic link
    (whose target would be written through), is a problem without it. ``suffixes`` (``(".png",
    ".svg")``) are the formats the writer can produce, judged by the name's extension."""
    if str(path).strip() == "":
        return "an empty path; name a file"
    target = Path(path)
    if target.is_dir():
        return "is a folder; name a file"
    if suffixes is not None and target.suffix.lower() not in suffixes:
        found = f"the extension {target.suffix!r}" if target.suffix else "no extension"
        return f"{found} names no format this can write; use {', '.join(suffixes)}"
    if target.is_symlink() and not overwrite:
        return "is a symbolic link; give another name, or --overwrite to replace the link (not its target)"
    if target.exists():
        if not target.is_file():
            return "exists and is not a regular file"
        if not overwrite:
            return "exists; give a new name, or --overwrite to replace it"
        return None if os.access(target, os.W_OK) else "is not writable"
    parent = target.parent
    if not parent.exists():
        return f"its folder {str(parent)!r} does not exist"
    if not parent.is_dir():
        return f"{str(parent)!r} is not a folder"
    return _unwritable(parent, f"its folder {str(parent)!r} is not writable")


def write_file(path: str | Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file beside it, then a rename).

    Without ``overwrite`` the rename never replaces anything: a file or link that appeared at
    ``path`` since it was checked raises :class:`FileExistsError`. With it, a link at ``path`` is
    replaced by the file, its target left alone."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.partial")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(descriptor, "wb") as handle:
            handle.write(data)
        if overwrite:
            os.replace(temporary, target)
        else:
            _link_new(temporary, target, data)
    finally:
        temporary.unlink(missing_ok=True)


def _link_new(temporary: Path, target: Path, data: bytes) -> None:
    """``target`` made from ``temporary`` only if nothing is there: a hard link (atomic, refuses an
    existing name) or, on a file system without links, an exclusive create."""
    try:
        os.link(temporary, target)
    except FileExistsError:
        raise
    except OSError:
        with open(target, "xb") as handle:
            handle.write(data)


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
