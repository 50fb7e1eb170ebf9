"""Which GPUs CUDA — and so torch — will see, in which order: NVML numbers to CUDA ordinals.

NVML numbers every GPU in PCI order. CUDA numbers only the visible ones, in ``CUDA_DEVICE_ORDER``:

* ``PCI_BUS_ID``: PCI order, as NVML.
* ``FASTEST_FIRST`` (the default, also for an unknown value): CUDA's own heuristic, which NVIDIA does
  not publish. GPUs of one model tie and keep PCI order, so the mapping is exact there. For
  different models the plugin *estimates* the order (CUDA cores × maximum SM clock, ties in PCI
  order) and says so in a note.

``CUDA_VISIBLE_DEVICES`` is read as CUDA reads it: a comma-separated list of indices (into the
ordered list above), ``GPU-<uuid>`` or ``MIG-<uuid>`` names, or unambiguous prefixes of them
(``GPU-ca2e``). The first entry that names no device (``-1``, ``7`` on a 2-GPU box, an ambiguous
prefix) ends the list; a device named twice hides every device (as torch models it); an empty
value hides every device. A GPU with MIG on is replaced by its MIG instances, and a process sees
at most one MIG instance (CUDA's limit). Devices are matched by UUID, never by index alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from acestep_core.plugin_api import parse_index
from acestep_core_cuda.nvml import NvmlGpu

ORDER_ENV = "CUDA_DEVICE_ORDER"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class CudaView:
    """The devices CUDA will number 0, 1, … (MIG instances or whole GPUs), and how that was decided."""

    devices: tuple[NvmlGpu, ...]
    order: str
    """``PCI_BUS_ID`` or ``FASTEST_FIRST``."""
    exact: bool
    """False where the numbering rests on the plugin's estimate of CUDA's fastest-first order."""
    notes: tuple[str, ...] = ()

    def describe(self, environ: Mapping[str, str]) -> str:
        visible = environ.get(VISIBLE_ENV)
        shown = "unset" if visible is None else repr(visible)
        return f"{VISIBLE_ENV} {shown}, {ORDER_ENV} {self.order}{'' if self.exact else ' (order estimated)'}"


def cuda_order(gpus: Sequence[NvmlGpu], environ: Mapping[str, str]) -> tuple[list[NvmlGpu], str, bool, list[str]]:
    """Physical GPUs in CUDA's order: (ordered, order name, exact, notes)."""
    raw = environ.get(ORDER_ENV, "").strip()
    notes: list[str] = []
    if raw and raw not in ("PCI_BUS_ID", "FASTEST_FIRST"):
        notes.append(
            f"{ORDER_ENV}={raw!r} is neither PCI_BUS_ID nor FASTEST_FIRST; CUDA uses its default, FASTEST_FIRST"
        )
    order = "PCI_BUS_ID" if raw == "PCI_BUS_ID" else "FASTEST_FIRST"
    by_pci = sorted(gpus, key=lambda gpu: ((gpu.pci_bus_id or "").lower(), gpu.nvml_index))
    if order == "PCI_BUS_ID" or len({gpu.name for gpu in gpus}) <= 1:
        return by_pci, order, True, notes
    if any(gpu.cuda_cores is None or gpu.max_sm_clock_mhz is None for gpu in gpus):
        notes.append(
            f"{ORDER_ENV} is FASTEST_FIRST and the GPUs differ, but NVML gives no core count or clock to estimate "
            f"CUDA's order: PCI order is assumed. Set {ORDER_ENV}=PCI_BUS_ID, or name GPUs by UUID in "
            f"{VISIBLE_ENV}, for an exact mapping"
        )
        return by_pci, order, False, notes
    fastest = sorted(by_pci, key=lambda gpu: -(gpu.cuda_cores or 0) * (gpu.max_sm_clock_mhz or 0))
    ranking = ", ".join(f"{gpu.name} {gpu.cuda_cores}×{gpu.max_sm_clock_mhz} MHz" for gpu in fastest)
    notes.append(
        f"{ORDER_ENV} is FASTEST_FIRST and the GPUs differ: CUDA's heuristic is not published, so the order "
        "is the plugin's "
        f"estimate (CUDA cores × max SM clock: {ranking}). Set {ORDER_ENV}=PCI_BUS_ID, or name GPUs by UUID "
        f"in {VISIBLE_ENV}, for an exact mapping"
    )
    return fastest, order, False, notes


def cuda_view(gpus: Sequence[NvmlGpu], environ: Mapping[str, str]) -> CudaView:
    """The devices CUDA will see, numbered as CUDA numbers them."""
    ordered, order, exact, notes = cuda_order(gpus, environ)
    raw = environ.get(VISIBLE_ENV)
    if raw is None:
        chosen, by_position = list(ordered), True
    else:
        chosen, by_position, note = parse_visible(raw, ordered)
        if note:
            notes.append(note)
    devices = _expand_mig(chosen, notes)
    if not by_position:  # every device named by UUID: the order no longer matters
        exact = True
        notes = [n for n in notes if not n.startswith(f"{ORDER_ENV} is FASTEST_FIRST")]
    elif not exact and raw is not None:  # an index picked a GPU out of the estimated order: say which rests on it
        notes.append(
            f"{VISIBLE_ENV}={raw!r} picks GPUs by position in that estimated order, so which GPU it names "
            f"({', '.join(f'{d.name} {d.uuid}' for d in devices) or 'none'}) rests on the estimate; "
            f"UUIDs in {VISIBLE_ENV} or {ORDER_ENV}=PCI_BUS_ID make it exact"
        )
    return CudaView(devices=tuple(devices), order=order, exact=exact, notes=tuple(notes))


def parse_visible(raw: str, ordered: Sequence[NvmlGpu]) -> tuple[list[NvmlGpu], bool, str | None]:
    """``CUDA_VISIBLE_DEVICES`` → (devices in its order, whether any entry was an index, a note)."""
    if not raw.strip(ASCII_SPACE):
        return [], False, f"{VISIBLE_ENV} is empty: CUDA sees no GPU"
    chosen: list[NvmlGpu] = []
    by_index = False
    notes: list[str] = []
    for entry in (part.strip(ASCII_SPACE) for part in raw.split(",")):
        device, is_index, problem = match_entry(entry, ordered)
        if device is None:
            kept = ", ".join(repr(d.uuid) for d in chosen) or "nothing"
            notes.append(
                f"{VISIBLE_ENV}={raw!r}: entry {entry!r} {problem}, so CUDA ignores it and every entry after it "
                f"(visible: {kept})"
            )
            return chosen, by_index, "; ".join(notes)
        if any(device.uuid == earlier.uuid for earlier in chosen):
            return [], False, f"{VISIBLE_ENV}={raw!r} names {device.name} ({device.uuid}) twice: CUDA then sees no GPU"
        if is_index and (note := index_note(entry)):
            notes.append(f"{VISIBLE_ENV}={raw!r}: {note}")
        chosen.append(device)
        by_index = by_index or is_index
    return chosen, by_index, "; ".join(notes) or None


ASCII_SPACE = " \t\n\v\f\r"
"""What C's ``isspace`` (and so ``strtoul``) skips around an entry; a no-break space is no space to it."""
LEADING_INDEX = re.compile(r"\+?[0-9]+")
"""An entry's index as CUDA reads it, like C's ``strtoul``: an optional ``+`` and the leading ASCII
digits, the rest of the entry ignored (``1gpu`` is 1). torch's model of the rule says so
(``torch/cuda/__init__.py``, ``_parse_visible_devices``: "CUDA_VISIBLE_DEVICES uses something like
strtoul which makes ``1gpu2,2ampere`` is equivalent to ``1,2``"); ``strtoul`` reads only the digits
0-9, so ``'１'`` (full-width) or ``'٣'`` is no index and, like ``-1``, ends the list."""


def index_note(entry: str) -> str | None:
    """Said when CUDA reads only the front of an index entry (``0abc`` is index 0)."""
    digits = LEADING_INDEX.match(entry)
    if digits is None or digits.end() == len(entry):
        return None
    return (
        f"entry {entry!r} is read as index {int(digits.group())}: CUDA reads the leading digits (as C's strtoul "
        f"does) and ignores {entry[digits.end() :]!r}"
    )


def match_entry(entry: str, ordered: Sequence[NvmlGpu]) -> tuple[NvmlGpu | None, bool, str]:
    """One ``CUDA_VISIBLE_DEVICES`` entry → (device, whether it was an index, why none matched)."""
    lowered = entry.lower()
    if lowered.startswith("mig-gpu-"):
        return (
            None,
            False,
            "is the legacy MIG-GPU-<uuid>/<gi>/<ci> form, which the plugin does not map (use the MIG-<uuid> "
            "names of `nvidia-smi -L`)",
        )
    if lowered.startswith(("gpu-", "mig-")):
        pool = list(ordered) if lowered.startswith("gpu-") else [m for gpu in ordered for m in gpu.mig_devices]
        matches = [device for device in pool if device.uuid.lower().startswith(lowered)]
        if len(matches) == 1:
            return matches[0], False, ""
        if matches:
            return None, False, f"is an ambiguous UUID prefix (it matches {len(matches)} devices)"
        return None, False, "matches no device's UUID"
    digits = LEADING_INDEX.match(entry)
    if digits is None:
        return None, True, "is neither an index nor a GPU-/MIG- UUID (an index is ASCII digits)"
    index = int(digits.group())
    if index >= len(ordered):
        return (
            None,
            True,
            f"is index {index}, but there {'is' if len(ordered) == 1 else 'are'} only {len(ordered)} GPU(s)",
        )
    return ordered[index], True, ""


def _expand_mig(chosen: Sequence[NvmlGpu], notes: list[str]) -> list[NvmlGpu]:
    devices: list[NvmlGpu] = []
    for device in chosen:
        if device.mig_enabled and not device.is_mig_instance:
            if not device.mig_devices:
                notes.append(
                    f"MIG is on for {device.name} ({device.uuid}) but it has no MIG instance: CUDA sees nothing there"
                )
            devices.extend(device.mig_devices)
        else:
            devices.append(device)
    instances = [d for d in devices if d.is_mig_instance]
    if len(instances) > 1:
        notes.append(
            f"CUDA enumerates one MIG instance per process: {instances[0].name} ({instances[0].uuid}) is visible, "
            f"{len(instances) - 1} other MIG instance(s) are not (choose one with {VISIBLE_ENV}=MIG-<uuid>)"
        )
        devices = [d for d in devices if not d.is_mig_instance or d is instances[0]]
    return devices


def select(devices: Sequence[NvmlGpu], selector: str | None) -> tuple[int, str | None]:
    """The position (CUDA ordinal) of the device the pipeline will use, and a note when the
    selector matched nothing. ``selector``: an ordinal, or a UUID or its prefix (``GPU-``/``MIG-``
    optional, as torch's ``props.uuid`` has none)."""
    if selector is None or not selector.strip():
        return 0, None
    wanted = selector.strip().lower()
    index = parse_index(wanted)
    if index is not None:
        if index < len(devices):
            return index, None
        problem = f"there {'is' if len(devices) == 1 else 'are'} only {len(devices)} visible device(s)"
    elif not wanted.isascii():
        problem = "it is neither an index (ASCII digits) nor a UUID prefix"
    else:
        bare = re.sub(r"^(gpu|mig)-", "", wanted)
        matches = [i for i, d in enumerate(devices) if re.sub(r"^(gpu|mig)-", "", d.uuid.lower()).startswith(bare)]
        if len(matches) == 1:
            return matches[0], None
        problem = f"it matches {len(matches)} visible devices" if matches else "no visible device has that UUID"
    return 0, f"device {selector!r} not used: {problem}; using cuda:0 ({devices[0].name}, {devices[0].uuid})"
