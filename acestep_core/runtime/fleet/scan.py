"""``fleet scan``: what every GPU of a Ray cluster is, read by the card itself.

One Ray task per GPU, each running in a placement group of its own that reserves one GPU of its node
for the whole scan, so that no two tasks share a card even when one finishes before the next is placed
(a plain ``num_gpus=1`` task hands its GPU back on return, and Ray may give it to the next task). The
``CUDA_VISIBLE_DEVICES`` Ray gives the task is what the detection plugins map (the same way a serving
replica will see its card). A node without GPUs gets one task that reports it as a CPU worker. A task
that raises or does not answer within the timeout is listed with its error; the scan still completes.

``simulate`` gives GPU slots simulated sizes (``MAX_CUDA_VRAM`` in the task's ``runtime_env``), in
the order the slots are listed, and only that many slots are scanned; on a local instance it also
declares that many logical GPUs, so a heterogeneous fleet can be tried on CPUs.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from acestep_core.resolve import resolve
from acestep_core.types import MemoryReading, Tier, to_jsonable

DEFAULT_TIMEOUT_S = 60.0
SIMULATE_VARIABLE = "MAX_CUDA_VRAM"
LOCAL_ADDRESS = "127.0.0.1"
"""Asked of a local instance; Ray 2.60 on Linux replaces it by the host's IP unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (see the README's network notes)."""


@dataclass(frozen=True)
class FleetDevice:
    """One GPU (or one CPU worker) of the fleet, as its own detection read it."""

    node_id: str
    node_ip: str
    kind: Literal["gpu", "cpu"]
    slot: int | None = None
    """The GPU's place among its node's GPU tasks (0, 1, ...); None for a CPU worker."""
    host: str | None = None
    accelerator_type: str | None = None
    """Ray's ``accelerator_type`` resource of the node (e.g. ``A10G``), used to pin a class's replicas."""
    ray_gpu_ids: tuple[str, ...] = ()
    cuda_visible_devices: str | None = None
    """What Ray set for the task, and what the detection mapped to a device."""
    simulated_gb: str | None = None
    reading: MemoryReading | None = None
    table: str | None = None
    tier: str | None = None
    """The tier's name (``tier4``): the class a serving replica on this card belongs to."""
    tier_label: str | None = None
    limits: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    seconds: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = to_jsonable(self)
        device = self.reading.device if self.reading else None
        data["device"] = None if device is None else device.name
        data["total_gib"] = None if device is None or device.total_gib is None else round(device.total_gib, 2)
        data["free_gib"] = None if device is None or device.free_gib is None else round(device.free_gib, 2)
        return data


@dataclass(frozen=True)
class FleetScan:
    devices: tuple[FleetDevice, ...]
    address: str
    seconds: float

    @property
    def gpus(self) -> tuple[FleetDevice, ...]:
        return tuple(d for d in self.devices if d.kind == "gpu")

    @property
    def failed(self) -> tuple[FleetDevice, ...]:
        return tuple(d for d in self.devices if d.error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "seconds": round(self.seconds, 3),
            "gpus": len(self.gpus),
            "failed": len(self.failed),
            "devices": [d.to_dict() for d in self.devices],
        }


def connect(
    address: str | None = None,
    *,
    simulate: Sequence[str] = (),
    num_cpus: int | None = None,
    object_store_memory: int | None = None,
    log_to_driver: bool = True,
) -> str:
    """Join the Ray cluster at ``address``, or start a local instance on 127.0.0.1 (with
    ``len(simulate)`` logical GPUs when simulating). Returns the cluster's address; an existing connection
    is kept. Without ``log_to_driver`` the workers' logs stay in Ray's log folder (stdout is ours: ``--json``)."""
    if not ray.is_initialized():
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "log_to_driver": log_to_driver,
        }
        if address:
            try:
                ray.init(address=address, **options)
            except ConnectionError as error:
                raise ConnectionError(f"{error}{_auth_hint()}") from None
        else:
            ray.init(
                address="local",  # a new instance, never a `ray start` cluster found on the machine
                num_cpus=num_cpus,
                num_gpus=len(simulate) if simulate else None,
                object_store_memory=object_store_memory,
                _node_ip_address=LOCAL_ADDRESS,
                **options,
            )
    return ray.get_runtime_context().gcs_address


def _auth_hint() -> str:
    """Why a connection to an explicit address may fail: Ray turns token authentication on for a local
    ``ray.init()`` by itself, but a client given an address only uses it when ``RAY_AUTH_MODE=token``."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return " (with RAY_AUTH_MODE=token: is the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN?)"
    return (
        " (if the cluster uses token authentication, as `ray start` does when RAY_AUTH_MODE=token or "
        "~/.ray/auth_token exists, set RAY_AUTH_MODE=token here too)"
    )


def scan(
    address: str | None = None,
    *,
    simulate: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    tiers: str | None = None,
) -> FleetScan:
    """Detect every GPU (one task each) and every GPU-less node of the cluster."""
    started = time.perf_counter()
    cluster = connect(address, simulate=simulate)
    planned: list[tuple[FleetDevice, dict[str, Any]]] = []
    sizes = list(simulate)
    for node in sorted((n for n in ray.nodes() if n.get("Alive")), key=lambda n: n["NodeManagerAddress"]):
        node_id, node_ip, resources = node["NodeID"], node["NodeManagerAddress"], node.get("Resources", {})
        gpus = int(resources.get("GPU", 0))
        accelerator = next((k.partition(":")[2] for k in resources if k.startswith("accelerator_type:")), None)
        if gpus == 0:
            planned.append((FleetDevice(node_id, node_ip, "cpu"), {"num_cpus": 0}))
        for slot in range(gpus):
            if simulate and not sizes:
                break
            size = sizes.pop(0) if sizes else None
            device = FleetDevice(node_id, node_ip, "gpu", slot, accelerator_type=accelerator, simulated_gb=size)
            env = {"runtime_env": {"env_vars": {SIMULATE_VARIABLE: size}}} if size else {}
            planned.append((device, {"num_gpus": 1, "num_cpus": 0, **env}))
    pending: list[tuple[Any, FleetDevice]] = []
    devices: dict[int, FleetDevice] = {}
    groups: list[PlacementGroup] = []
    try:
        for position, (device, options) in enumerate(planned):
            try:
                pending.append(
                    (_detect.options(scheduling_strategy=_placement(device, groups), **options).remote(tiers), device)
                )
            except Exception as error:  # noqa: BLE001 - a node Ray cannot place a task on is that node's error
                devices[position] = _with(device, error=f"detection could not be started: {_cause(error)}")
        ready, _ = (
            ray.wait([ref for ref, _ in pending], num_returns=len(pending), timeout=timeout_s) if pending else ([], [])
        )
        done = set(ready)
        answers = iter(pending)
        for position in range(len(planned)):
            if position in devices:
                continue
            ref, device = next(answers)
            if ref not in done:
                ray.cancel(ref, force=True)
                hint = " (is the GPU held by another Ray task or actor?)" if device.kind == "gpu" else ""
                devices[position] = _with(device, error=f"detection did not answer within {timeout_s:g} s{hint}")
                continue
            try:
                devices[position] = _with(device, **ray.get(ref))
            except Exception as error:  # noqa: BLE001 - any failure on a node is that node's reported error
                devices[position] = _with(device, error=f"detection failed: {_cause(error)}")
    finally:
        for group in groups:
            remove_placement_group(group)
    return FleetScan(
        devices=tuple(devices[i] for i in range(len(planned))), address=cluster, seconds=time.perf_counter() - started
    )


def _placement(device: FleetDevice, groups: list[PlacementGroup]) -> Any:
    """A GPU task gets a one-GPU placement group on its node (kept until the scan ends); a CPU worker's
    task is pinned to its node."""
    if device.kind == "cpu":
        return NodeAffinitySchedulingStrategy(node_id=device.node_id, soft=False)
    group = placement_group([{"GPU": 1, f"node:{device.node_ip}": 0.001}], strategy="STRICT_PACK")
    groups.append(group)
    return PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=0)


@ray.remote(max_retries=0)
def _detect(tiers: str | None) -> dict[str, Any]:
    """Runs on the node, on the GPU Ray gave the task: a fresh detection of this process's device."""
    started = time.perf_counter()
    resolution = resolve(tiers=tiers, redetect=True)
    return {
        "host": socket.gethostname(),
        "ray_gpu_ids": tuple(str(i) for i in ray.get_gpu_ids()),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "reading": resolution.reading,
        "table": resolution.table,
        "tier": resolution.tier.name,
        "tier_label": resolution.tier.label,
        "limits": limits_of(resolution.tier),
        "notes": resolution.reading.notes,
        "seconds": round(time.perf_counter() - started, 3),
    }


def limits_of(tier: Tier) -> dict[str, Any]:
    return {
        "max_duration_with_lm_s": tier.max_duration_with_lm_s,
        "max_duration_without_lm_s": tier.max_duration_without_lm_s,
        "max_batch_with_lm": tier.max_batch_with_lm,
        "max_batch_without_lm": tier.max_batch_without_lm,
        "lm_models": list(tier.lm_models),
    }


def _with(device: FleetDevice, **changes: Any) -> FleetDevice:
    import dataclasses

    return dataclasses.replace(device, **changes)


def _cause(error: BaseException) -> str:
    """The node's own exception in one line, not Ray's wrapped traceback."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    return f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"


def render(result: FleetScan) -> str:
    """The fleet as a table, one line per device, errors in place of a tier."""
    header = f"{'node':<16} {'device':<34} {'total':>9} {'free':>9}  {'tier':<22} {'table':<8} limits"
    lines = [f"fleet at {result.address}: {len(result.gpus)} GPU(s), {len(result.failed)} failed", header]
    for device in result.devices:
        where = device.node_ip + ("" if device.slot is None else f" #{device.slot}")
        if device.error:
            lines.append(f"{where:<16} {device.kind.upper() + ' worker':<34} error: {device.error}")
            continue
        data = device.to_dict()
        name = "CPU worker" if device.kind == "cpu" else str(data["device"])
        total = "-" if data["total_gib"] is None else f"{data['total_gib']:.2f} GiB"
        free = "-" if data["free_gib"] is None else f"{data['free_gib']:.2f} GiB"
        limits = device.limits
        lm = ",".join(limits.get("lm_models", [])) or "none"
        summary = (
            f"{limits.get('max_duration_with_lm_s')} s × {limits.get('max_batch_with_lm')} with LM, "
            f"{limits.get('max_duration_without_lm_s')} s × {limits.get('max_batch_without_lm')} without; LM {lm}"
        )
        tier = f"{device.tier_label} ({device.tier})"
        lines.append(f"{where:<16} {name[:34]:<34} {total:>9} {free:>9}  {tier:<22} {device.table or '':<8} {summary}")
    return "\n".join(lines)
