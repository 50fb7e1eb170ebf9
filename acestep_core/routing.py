"""Which card of a fleet should run a request: the routing rule, as a pure function.

A fleet is a set of **classes**: the replicas whose cards fall in one tier, described by one of their
readings (the smallest card's). For each class, :func:`route` asks the plugin system what the request
becomes there (:func:`acestep_core.resolve` with the class's reading: the same tier, clamps and plan
the replica itself will compute) and picks:

1. the **smallest** class that runs the request **unclamped** (no clamp, no lowered plan), so that big
   cards stay free for the requests only they can run; between equally small classes, the one with
   the least load per running replica;
2. if no class runs it unclamped, the **largest** class, and the clamps it applies are reported.

:func:`route_soonest` is the same rule aware of queues, for a fleet that knows what each class is
running: among the classes that run the request unclamped it picks the one that can **start it
soonest** — a class with an idle replica starts it now; a busy one when its queue (the expected
seconds of the work it holds, from each request's plan: :func:`expected_work`) clears — so a request
spills over to a larger idle class instead of waiting behind a long one on the smallest; between equal
waits, the smallest class still wins.

Classes with no running replica are skipped; a class whose plan refuses the request (nothing fits
even after every memory-saving step) cannot take it. No running replica anywhere is
:class:`NoReplicaError` (a server answers 503); replicas running but none able to run the request is
:class:`UnrunnableError` (422). Ray Serve only executes this rule (``acestep_core.runtime.fleet``);
anything else can call it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from acestep_core.plugins import PluginManager
from acestep_core.record import Record
from acestep_core.resolve import resolve
from acestep_core.types import GIB, GenerationRequest, MemoryReading, Overrides, Resolution, to_jsonable


class NoReplicaError(RuntimeError):
    """No class of the fleet has a running replica. The message lists each class's state."""


class UnrunnableError(RuntimeError):
    """Replicas are running, but every one of their plans refuses the request. The message says why."""


class FleetClass(Record):
    """One tier class of a fleet: its name (the deployment's), a reading of its cards, and its load."""

    name: str
    reading: MemoryReading
    """A device of the class; with several card sizes in one tier, the smallest (the conservative one)."""
    replicas: int = 1
    """Replicas running now; 0 = the class is down and is skipped."""
    in_flight: int = 0
    """Requests the class is serving now (the tie-break between equally small classes)."""
    queued_s: float = 0.0
    """Expected seconds of the work the class holds (running and waiting), for :func:`route_soonest`."""

    @property
    def memory_bytes(self) -> int:
        """The class's size for ordering: the device's total memory (0 for a CPU)."""
        return self.reading.device.total_bytes or 0

    @property
    def load(self) -> float:
        return self.in_flight / self.replicas if self.replicas > 0 else float("inf")

    @property
    def wait_s(self) -> float:
        """When the class could start one more request: now with an idle replica, else when its queue,
        shared among its replicas, clears."""
        if self.replicas <= 0:
            return float("inf")
        if self.in_flight < self.replicas:
            return 0.0
        return self.queued_s / self.replicas


class ClassVerdict(Record):
    """What one class would do with the request."""

    name: str
    memory_gib: float | None
    replicas: int
    in_flight: int
    tier: str | None = None
    """The tier's label, e.g. ``Tier 4``; None for a class that is down (not resolved)."""
    duration_s: float | None = None
    batch_size: int | None = None
    lm_model: str | None = None
    clamps: tuple[str, ...] = ()
    """Every clamp the class applies: the adjusted request's warnings, then the plan's lowerings."""
    refused: str | None = None
    """Why the class's plan refuses the request (nothing fits), or None."""
    wait_s: float | None = None
    """When the class could start the request (:func:`route_soonest` only)."""

    @property
    def down(self) -> bool:
        return self.replicas <= 0

    @property
    def can_run(self) -> bool:
        return not self.down and self.refused is None

    @property
    def unclamped(self) -> bool:
        return self.can_run and not self.clamps


class RouteDecision(Record):
    """Where a request goes, why, and what every class would have done with it."""

    target: str
    """The chosen class's name."""
    tier: str
    clamped: bool
    clamps: tuple[str, ...]
    reason: str
    verdicts: tuple[ClassVerdict, ...]
    resolution: Resolution
    """The chosen class's resolution, as the router computed it."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "tier": self.tier,
            "clamped": self.clamped,
            "clamps": list(self.clamps),
            "reason": self.reason,
            "classes": [to_jsonable(v) | {"unclamped": v.unclamped, "down": v.down} for v in self.verdicts],
        }


def clamps_of(resolution: Resolution) -> tuple[str, ...]:
    """What a resolution takes away from the request: clamps and refusals of ``adjust_request``, and
    the plan's warnings (a batch or duration the memory ladder lowered). Reading notes and plugin
    problems are not clamps."""
    return resolution.adjusted.warnings + tuple(s.reason for s in resolution.plan if s.warning)


def route(
    request: GenerationRequest,
    classes: Sequence[FleetClass],
    *,
    overrides: Overrides | None = None,
    tiers: str | None = None,
    manager: PluginManager | None = None,
    environ: Mapping[str, str] | None = None,
) -> RouteDecision:
    """The class that should run ``request`` (see the module's docstring for the rule).

    :param classes: the fleet; a class with ``replicas == 0`` is skipped.
    :param overrides, tiers, manager, environ: as for :func:`acestep_core.resolve`; the same values the
        replicas resolve with, so that the router's answer is the replica's.
    :raises NoReplicaError: no class has a running replica.
    :raises UnrunnableError: every running class's plan refuses the request.
    """
    return _decide(request, classes, soonest=False, overrides=overrides, tiers=tiers, manager=manager, environ=environ)


def route_soonest(
    request: GenerationRequest,
    classes: Sequence[FleetClass],
    *,
    overrides: Overrides | None = None,
    tiers: str | None = None,
    manager: PluginManager | None = None,
    environ: Mapping[str, str] | None = None,
    cache: MutableMapping[tuple[GenerationRequest, str], Resolution] | None = None,
) -> RouteDecision:
    """As :func:`route`, but among the classes that run ``request`` unclamped, the one that can start
    it soonest (:attr:`FleetClass.wait_s`: its replicas, requests in flight and queued seconds); between
    equal waits, the smallest, then the least loaded. A request no class runs unclamped goes to the
    largest class, as with :func:`route` (the one place it runs as asked for the most).

    :param cache: resolutions by (request, class name), kept by a caller that routes many requests over
        the same classes, tiers and plugins (a resolution depends on nothing else; queues are not in it).
    """
    return _decide(
        request,
        classes,
        soonest=True,
        overrides=overrides,
        tiers=tiers,
        manager=manager,
        environ=environ,
        cache=cache,
    )


def expected_work(resolution: Resolution) -> float:
    """The work a resolved request holds a replica for, in **clip-seconds**: the audio it produces
    (duration × batch; the tier's ceiling when the LM chooses the duration). A fleet turns it into
    seconds with each class's measured seconds per clip-second."""
    adjusted = resolution.adjusted
    batch = int(resolution.plan.value("ladder.batch_size", adjusted.batch_size))
    duration = adjusted.duration_s
    if duration is None:
        duration = resolution.tier.max_duration_s(adjusted.lm_on)
    if "ladder.duration_s" in resolution.plan:
        duration = min(duration, float(resolution.plan.value("ladder.duration_s")))
    return float(duration) * batch


def _decide(
    request: GenerationRequest,
    classes: Sequence[FleetClass],
    *,
    soonest: bool,
    overrides: Overrides | None,
    tiers: str | None,
    manager: PluginManager | None,
    environ: Mapping[str, str] | None,
    cache: MutableMapping[tuple[GenerationRequest, str], Resolution] | None = None,
) -> RouteDecision:
    if not classes:
        raise NoReplicaError("the fleet has no replica classes")
    verdicts: list[ClassVerdict] = []
    resolutions: dict[str, Resolution] = {}
    for fleet_class in classes:
        if fleet_class.replicas <= 0:
            verdicts.append(_verdict(fleet_class))
            continue
        key = (request, fleet_class.name)
        resolution = cache.get(key) if cache is not None else None
        if resolution is None:
            resolution = resolve(
                request, overrides=overrides, tiers=tiers, manager=manager, environ=environ, reading=fleet_class.reading
            )
            if cache is not None:
                cache[key] = resolution
        resolutions[fleet_class.name] = resolution
        verdicts.append(_verdict(fleet_class, resolution, soonest=soonest))
    by_name = {c.name: c for c in classes}
    runnable = [v for v in verdicts if v.can_run]
    if not runnable:
        states = "; ".join(_state(v) for v in verdicts)
        if all(v.down for v in verdicts):
            raise NoReplicaError(f"no replica is running in any class ({states})")
        raise UnrunnableError(f"no running class can run this request ({states})")
    unclamped = [v for v in runnable if v.unclamped]
    asked = _describe(request.duration_s, request.batch_size)
    if unclamped and soonest:
        smallest = min(unclamped, key=lambda v: (by_name[v.name].memory_bytes, v.name))
        chosen = min(
            unclamped,
            key=lambda v: (by_name[v.name].wait_s, by_name[v.name].memory_bytes, by_name[v.name].load, v.name),
        )
        where = f"{chosen.name} ({chosen.tier}, {_gib(chosen.memory_gib)})"
        if chosen.name == smallest.name:
            reason = f"{where} is the smallest class that runs {asked} unclamped, and {_start(chosen)}"
        else:
            reason = (
                f"{where} runs {asked} unclamped and {_start(chosen)}; the smaller {smallest.name} would start it "
                f"in ≈{by_name[smallest.name].wait_s:.0f} s (its queue)"
            )
    elif unclamped:
        chosen = min(unclamped, key=lambda v: (by_name[v.name].memory_bytes, by_name[v.name].load, v.name))
        reason = (
            f"{chosen.name} ({chosen.tier}, {_gib(chosen.memory_gib)}) is the smallest class that runs {asked} "
            "unclamped"
        )
    else:
        chosen = max(runnable, key=lambda v: (by_name[v.name].memory_bytes, -by_name[v.name].load))
        granted = _describe(chosen.duration_s, chosen.batch_size or 0)
        reason = (
            f"no class runs {asked} unclamped; {chosen.name} ({chosen.tier}, {_gib(chosen.memory_gib)}), the "
            f"largest, runs {granted}"
        )
    return RouteDecision(
        target=chosen.name,
        tier=chosen.tier or "",
        clamped=bool(chosen.clamps),
        clamps=chosen.clamps,
        reason=reason,
        verdicts=tuple(verdicts),
        resolution=resolutions[chosen.name],
    )


def _verdict(fleet_class: FleetClass, resolution: Resolution | None = None, *, soonest: bool = False) -> ClassVerdict:
    total = fleet_class.reading.device.total_bytes
    base = ClassVerdict(
        name=fleet_class.name,
        memory_gib=None if total is None else round(total / GIB, 2),
        replicas=fleet_class.replicas,
        in_flight=fleet_class.in_flight,
        wait_s=round(fleet_class.wait_s, 3) if soonest and not fleet_class.replicas <= 0 else None,
    )
    if resolution is None:
        return base
    refusal = resolution.plan["ladder.refused"].reason if resolution.plan.value("ladder.refused") else None
    adjusted = resolution.adjusted
    return dataclasses.replace(
        base,
        tier=resolution.tier.label,
        duration_s=adjusted.duration_s,
        batch_size=adjusted.batch_size,
        lm_model=adjusted.lm_model,
        clamps=clamps_of(resolution),
        refused=refusal,
    )


def _start(verdict: ClassVerdict) -> str:
    wait = verdict.wait_s or 0.0
    return "has an idle replica" if wait == 0 else f"could start it in ≈{wait:.0f} s, the soonest"


def _state(verdict: ClassVerdict) -> str:
    if verdict.down:
        return f"{verdict.name}: no replica running"
    if verdict.refused:
        return f"{verdict.name}: {verdict.refused}"
    return f"{verdict.name}: can run it"


def _describe(duration_s: float | None, batch_size: int) -> str:
    duration = "the LM's choice of duration" if duration_s is None else f"{duration_s:g} s"
    return f"{duration} × {batch_size}"


def _gib(gib: float | None) -> str:
    return "CPU" if gib is None else f"{gib:g} GiB"
