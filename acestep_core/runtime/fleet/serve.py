"""The Serve application behind ``fleet serve``: replicas per tier class, a ledger, and routers in front.

- **Replicas** (:class:`FleetReplica`; with stages, :class:`LmStage` and :class:`RenderStage`): each
  holds one GPU (or a share of one), resolves its own device in its constructor and refuses to start
  when that device's tier is not the class it was placed for. A replica runs **one generation at a
  time**: the work runs in a thread under the replica's lock, and when the caller goes away (a client
  disconnect, the server's timeout, a router cancelling) the pipeline's
  :class:`~acestep_core.runtime.pipeline.CancelHandle` is set, the lock is kept until the thread has
  stopped, and the request's output folder is removed. Each replica keeps a history of when its work
  started and stopped (:meth:`FleetReplica.history`).
- **Router** (:class:`FleetRouter`, the ingress, several replicas): bounds the body
  (:mod:`.limits`), routes with :func:`acestep_core.routing.route_soonest` from every class's running
  replicas (Serve's status), queue (the :class:`FleetLedger`) and recent losses, and streams the request
  to a replica of the chosen class. A replica must accept the request within ``accept_timeout_s``;
  one that dies or does not accept is reported in ``attempts`` and the request goes at once to another
  class that can run it (or is answered 503 with each class's state) — never left waiting for a
  replacement. A request that runs past ``request_timeout_s`` is cancelled and answered 504.
- **Ledger** (:class:`FleetLedger`, one replica): what every router has sent where and not yet seen
  finish, each class's measured seconds per clip-second, and recent losses; the routers read it a few
  times a second so that their queue view is the fleet's, not their own.

With ``stages`` each class is two deployments, ``<class>-lm`` and ``<class>-render`` (text encoder, DiT,
VAE), chained by the router through their handles: a request's render runs while the next request's LM
runs, and each stage has its own replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ray
from ray import serve
from ray.exceptions import RayActorError
from starlette.requests import Request
from starlette.responses import JSONResponse

from acestep_core.resolve import resolve
from acestep_core.routing import FleetClass, NoReplicaError, UnrunnableError, expected_work, route_soonest
from acestep_core.runtime.fleet.limits import (
    REQUEST_FIELDS,
    RUN_FIELDS,
    BodyError,
    RequestLimits,
    parse_body,
)
from acestep_core.runtime.fleet.scan import SIMULATE_VARIABLE, FleetScan
from acestep_core.types import GenerationRequest, MemoryReading
from acestep_core.vocabulary import GIB

__all__ = [
    "REQUEST_FIELDS",
    "RUN_FIELDS",
    "ClassSpec",
    "FleetLedger",
    "FleetReplica",
    "FleetRouter",
    "LmStage",
    "PlacementError",
    "RenderStage",
    "ServeOptions",
    "build_app",
    "classes_from_scan",
    "simulated_specs",
]

STATUS_TTL_S = 1.0
"""How long a router trusts Serve's view of which replicas are running."""
LEDGER_TTL_S = 0.2
"""How long a router trusts its copy of the ledger."""
LOST_NOTICE_S = 2.0
"""After a replica of a class dies, how long the router counts it out before trusting Serve's status
again (Serve's controller marks a crashed replica unhealthy within about a second)."""
HISTORY = 512
"""Generations a replica remembers (start, stop, outcome)."""
RESOLUTIONS_KEPT = 4096
"""Distinct (request, class) resolutions a router keeps before starting afresh."""
DEFAULT_RATE = 1.0
"""Seconds per clip-second assumed for a class before one of its generations has been measured."""

T = TypeVar("T")


class PlacementError(RuntimeError):
    """A replica whose device is not of the class it was placed for: it refuses to start."""


@dataclass(frozen=True)
class ServeOptions:
    """How the application serves (the typed arguments of :func:`acestep_core.runtime.fleet.app.app`)."""

    tiers: str | None = None
    plan_only: bool = False
    """Replicas only resolve (no model run): routing and serving overhead alone."""
    size: str = "tiny"
    out_dir: str | None = None
    """Where replicas write WAV files (on their node); default: a temporary directory."""
    torch_threads: int | None = None
    max_ongoing_requests: int = 16
    """Requests a replica accepts at once (the rest wait in Serve's router); its generations still run one
    at a time, the others waiting on its lock."""
    constructor_retries: int = 3
    """Replicas Serve starts in place of one that refused or failed to start, before it gives up."""
    ingress_replicas: int = 2
    limits: RequestLimits = field(default_factory=RequestLimits)
    request_timeout_s: float = 900.0
    """A request still running after this long is cancelled (its generation stops) and answered 504."""
    accept_timeout_s: float = 2.0
    """How long a class's replicas may take to accept a request (a replica takes it into its queue at once
    when it is alive and not full) before the router tries another class, or answers 503."""
    health_check_period_s: float = 2.0
    stages: bool = False
    stage_gpus: float = 0.5
    """The share of a card each stage replica takes: 0.5 puts an LM and a render replica on each card."""
    stand_in_s: float | None = None
    """Replace each stage's work by a wait of this many seconds (a labelled stand-in, for benchmarks)."""


@dataclass(frozen=True)
class ClassSpec:
    """One tier class: the tier its replicas must have, a reading of its cards, how many replicas."""

    name: str
    tier: str
    reading: MemoryReading
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment for the replicas (``runtime_env``): ``MAX_CUDA_VRAM`` for a simulated class."""
    resources: Mapping[str, float] = field(default_factory=dict)
    """Ray resources that pin the replicas to this class's nodes (``accelerator_type:...``)."""
    num_gpus: float = 1
    autoscaling: tuple[int, int] | None = None
    """(min, max) replicas: Serve scales the class between them (one generation a replica)."""
    lm_replicas: int | None = None
    render_replicas: int | None = None
    """With stages: each stage's replicas (default: ``replicas``)."""

    def deployments(self, stages: bool) -> tuple[str, ...]:
        return (f"{self.name}-lm", f"{self.name}-render") if stages else (self.name,)


def classes_from_scan(result: FleetScan) -> list[ClassSpec]:
    """One class per tier found among the scanned GPUs (failed ones left out), smallest first. A class
    is described by its smallest card; simulated cards of one class all simulate that size."""
    by_tier: dict[str, list[Any]] = {}
    for device in result.gpus:
        if device.error is None and device.tier and device.reading is not None:
            by_tier.setdefault(device.tier, []).append(device)
    specs = []
    for tier, devices in by_tier.items():
        smallest = min(devices, key=lambda d: d.reading.device.total_bytes or 0)
        env = {SIMULATE_VARIABLE: smallest.simulated_gb} if smallest.simulated_gb else {}
        types = {d.accelerator_type for d in devices}
        others = {d.accelerator_type for d in result.gpus if d.tier != tier}
        accelerator = next(iter(types)) if len(types) == 1 else None
        resources = {f"accelerator_type:{accelerator}": 0.001} if accelerator and accelerator not in others else {}
        specs.append(ClassSpec(tier, tier, smallest.reading, len(devices), env, resources))
    return sorted(specs, key=lambda s: s.reading.device.total_bytes or 0)


def simulated_specs(sizes: Sequence[str], *, tiers: str | None = None) -> list[ClassSpec]:
    """Classes for simulated cards (``["8", "16", "24"]``): each size resolved here as its replicas will
    (``MAX_CUDA_VRAM`` in their ``runtime_env``), grouped by tier, smallest first."""
    by_tier: dict[str, ClassSpec] = {}
    for size in sizes:
        resolution = resolve(tiers=tiers, environ={SIMULATE_VARIABLE: str(size)}, redetect=True)
        tier = resolution.tier.name
        known = by_tier.get(tier)
        if known is None or (resolution.reading.device.total_bytes or 0) < (known.reading.device.total_bytes or 0):
            replicas = 1 if known is None else known.replicas + 1
            by_tier[tier] = ClassSpec(tier, tier, resolution.reading, replicas, {SIMULATE_VARIABLE: str(size)})
        else:
            by_tier[tier] = dataclasses.replace(known, replicas=known.replicas + 1)
    return sorted(by_tier.values(), key=lambda s: s.reading.device.total_bytes or 0)


def request_fields(request: GenerationRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in REQUEST_FIELDS}


# --------------------------------------------------------------------------------------------- replicas
class _Worker:
    """What every replica shares: its placement check, its identity, and one generation at a time."""

    role = "both"

    def __init__(self, class_name: str, expected_tier: str, options: ServeOptions) -> None:
        self.class_name, self.options = class_name, options
        resolution = resolve(tiers=options.tiers, redetect=True)
        device = resolution.reading.device
        if resolution.tier.name != expected_tier:
            raise PlacementError(
                f"replica of class {class_name!r} refuses to start: its device ({device.name}, "
                f"{_gib(device.total_bytes)}) is {resolution.tier.label} ({resolution.tier.name}), not {expected_tier}"
            )
        self.reading, self.tier, self.table = resolution.reading, resolution.tier, resolution.table
        context = ray.get_runtime_context()
        self.identity = {
            "class": class_name,
            "role": self.role,
            "replica": serve.get_replica_context().replica_id.unique_id,
            "actor": context.get_actor_name(),
            "node": context.get_node_id(),
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "device": device.name,
            "total_gib": None if device.total_gib is None else round(device.total_gib, 2),
            "tier": self.tier.name,
            "tier_label": self.tier.label,
            "table": self.table,
        }
        self.generating = 0
        self.waiting = 0
        self._lock = asyncio.Lock()
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.generation: Any = None
        if not options.plan_only:
            # torch and the pipeline load here, while the replica starts, never on its event loop while it
            # serves: an import of several seconds there would keep every other request from being accepted.
            from acestep_core.runtime.fleet import generation

            self.generation = generation
            if options.torch_threads and options.stand_in_s is None:
                generation.set_threads(options.torch_threads)

    async def describe(self) -> dict[str, Any]:
        return self.identity | {"generating": self.generating, "waiting": self.waiting}

    async def history(self) -> list[dict[str, Any]]:
        """Every generation this replica ran: request id, ``started``/``stopped`` (wall clock, taken in
        the worker thread when the work began and returned), ``outcome``, its output folder and whether
        the folder was removed."""
        return list(self._history)

    def _resolve(self, fields: Mapping[str, Any]) -> Any:
        return resolve(GenerationRequest(**fields), tiers=self.options.tiers)

    def _out_dir(self, request_id: str) -> str:
        root = self.options.out_dir or os.path.join(tempfile.gettempdir(), "acestep-fleet")
        return os.path.join(root, request_id)

    async def _exclusive(
        self, request_id: str, work: Callable[[Any], T], *, out_dir: str | None = None, stage: str = "both"
    ) -> T:
        """Run ``work(cancel)`` in a worker thread, one at a time on this replica.

        If this coroutine is cancelled (the caller went away), the cancel handle is set, the lock is
        held until the thread has returned, the output folder is removed, and the cancellation goes on."""
        generation = self.generation
        cancel = generation.CancelHandle()
        record: dict[str, Any] = {"request_id": request_id, "stage": stage, "out_dir": out_dir}
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        try:
            self.generating += 1

            def body() -> T:
                record["started"] = time.time()
                try:
                    return work(cancel)
                except generation.GenerationCancelledError:
                    record["raised"] = "GenerationCancelledError"
                    raise
                finally:
                    record["stopped"] = time.time()

            task = asyncio.ensure_future(asyncio.to_thread(body))
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                cancel.cancel()
                await _until_done(task)
                record["outcome"] = "cancelled"
                record["removed_output"] = generation.remove_output(out_dir) if out_dir else False
                raise
            except BaseException as error:
                record["outcome"] = f"failed: {type(error).__name__}"
                raise
            record["outcome"] = "done"
            return result
        finally:
            self.generating -= 1
            self._history.append(record)
            self._lock.release()

    def _stand_in(self, seconds: float, out_dir: str | None) -> Callable[[Any], dict[str, Any]]:
        stand_in = self.generation.stand_in

        def work(cancel: Any) -> dict[str, Any]:
            if out_dir:
                os.makedirs(out_dir, exist_ok=True)
                with open(os.path.join(out_dir, ".stand-in.partial"), "wb"):
                    pass
            took = stand_in(seconds, cancel)
            return {"stand_in": True, "seconds": took, "clips": [], "phases": []}

        return work


class FleetReplica(_Worker):
    """One card of a class: decides for its own card, then runs (or plans) what it is sent, streaming
    ``accepted``, ``started`` and ``result`` events."""

    async def run(self, fields: Mapping[str, Any], run: Mapping[str, Any], request_id: str) -> AsyncIterator[Any]:
        yield {"event": "accepted", "replica": self.identity["replica"]}
        resolution = self._resolve(fields)
        if self.options.plan_only or run.get("plan_only"):
            yield {"event": "result", "replica": self.identity, "resolution": resolution.to_dict(), "clips": []}
            return
        out_dir = self._out_dir(request_id)
        if self.options.stand_in_s is not None:
            work = self._stand_in(2 * self.options.stand_in_s, out_dir)
        else:
            run_request = self.generation.run_request
            size = self.options.size

            def work(cancel: Any) -> dict[str, Any]:
                return run_request(resolution, run, out_dir=out_dir, size=size, cancel=cancel)

        data = await self._exclusive(request_id, work, out_dir=out_dir)
        yield {"event": "result", "replica": self.identity, **data}


class LmStage(_Worker):
    """The first stage of a two-stage class: the LM's codes (JSON), one request at a time."""

    role = "lm"

    async def run(self, fields: Mapping[str, Any], run: Mapping[str, Any], request_id: str) -> AsyncIterator[Any]:
        yield {"event": "accepted", "replica": self.identity["replica"]}
        resolution = self._resolve(fields)
        if self.options.plan_only or run.get("plan_only"):
            yield {"event": "result", "replica": self.identity, "resolution": resolution.to_dict(), "clips": []}
            return
        if self.options.stand_in_s is not None:
            work = self._stand_in(self.options.stand_in_s, None)
        else:
            run_lm_stage = self.generation.run_lm_stage
            size = self.options.size

            def work(cancel: Any) -> dict[str, Any]:
                return run_lm_stage(resolution, run, size=size, cancel=cancel)

        data = await self._exclusive(request_id, work, stage="lm")
        yield {"event": "result", "replica": self.identity, "lm": data}


class RenderStage(_Worker):
    """The second stage of a two-stage class: text encoder, DiT, VAE and the WAV files."""

    role = "render"

    async def run(
        self, fields: Mapping[str, Any], run: Mapping[str, Any], request_id: str, lm: Mapping[str, Any]
    ) -> AsyncIterator[Any]:
        yield {"event": "accepted", "replica": self.identity["replica"]}
        resolution = self._resolve(fields)
        out_dir = self._out_dir(request_id)
        if self.options.stand_in_s is not None:
            work = self._stand_in(self.options.stand_in_s, out_dir)
        else:
            run_render_stage = self.generation.run_render_stage
            size = self.options.size

            def work(cancel: Any) -> dict[str, Any]:
                return run_render_stage(resolution, run, lm, out_dir=out_dir, size=size, cancel=cancel)

        data = await self._exclusive(request_id, work, out_dir=out_dir, stage="render")
        yield {"event": "result", "replica": self.identity, **data}


async def _until_done(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to finish, whatever else is cancelled meanwhile: the work must have stopped
    before the replica takes the next one."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
    with contextlib.suppress(BaseException):
        task.result()


# --------------------------------------------------------------------------------------------- ledger
class FleetLedger:
    """The fleet's queue, shared by every router replica: tickets admitted and not finished, each class's
    measured seconds per clip-second, and losses (a replica died, or none accepted) with their age."""

    def __init__(self) -> None:
        self.tickets: dict[str, tuple[str, float, float]] = {}
        """ticket → (class, clip-seconds, admitted at)."""
        self.rates: dict[str, float] = {}
        self.losses: deque[tuple[str, str, float]] = deque(maxlen=256)
        """(loss id, class, when) of each replica lost mid-request."""

    async def admit(self, ticket: str, class_name: str, work: float) -> None:
        self.tickets[ticket] = (class_name, work, time.monotonic())

    async def finish(self, ticket: str, seconds: float | None = None) -> None:
        entry = self.tickets.pop(ticket, None)
        if entry is None or seconds is None or entry[1] <= 0:
            return
        class_name, work, _ = entry
        rate = seconds / work
        known = self.rates.get(class_name)
        self.rates[class_name] = rate if known is None else 0.7 * known + 0.3 * rate

    async def lost(self, loss: str, class_name: str) -> None:
        self.losses.append((loss, class_name, time.monotonic()))

    async def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "tickets": {t: (c, w) for t, (c, w, _) in self.tickets.items()},
            "rates": dict(self.rates),
            "losses": [(loss, c, now - at) for loss, c, at in self.losses],
        }


# --------------------------------------------------------------------------------------------- router
class ReplicaLost(Exception):  # noqa: N818 - an outcome the router handles, not a failure it reports
    """A class's replica died mid-request, or none of its replicas accepted the request in time."""

    def __init__(self, kind: str, message: str, replica: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.replica = kind, replica


class FleetRouter:
    """The ingress: bounds and routes each request, streams it to a replica, reroutes when one is lost."""

    def __init__(
        self, specs: Sequence[ClassSpec], handles: Mapping[str, Any], ledger: Any, options: ServeOptions
    ) -> None:
        self.specs = list(specs)
        self.handles = dict(handles)
        self.ledger = ledger
        self.options = options
        self.app = serve.get_replica_context().app_name
        self._status: tuple[float, dict[str, tuple[int, str]]] = (0.0, {})
        self._ledger: tuple[float, dict[str, Any]] = (0.0, {"tickets": {}, "rates": {}, "losses": []})
        self._mine: dict[str, tuple[str, float]] = {}
        self._finished: deque[str] = deque(maxlen=4096)
        self._losses: deque[tuple[str, str, float]] = deque(maxlen=256)
        self._resolutions: dict[tuple[GenerationRequest, str], Any] = {}
        """What each class makes of a request, by (request, class): fixed for the application's life."""

    async def __call__(self, http: Request) -> JSONResponse:
        if http.method == "GET":
            return JSONResponse(await self.fleet())
        if http.method != "POST":
            return JSONResponse({"error": f"{http.method} is not served: POST a request, GET the fleet"}, 405)
        limit = self.options.limits.max_body_bytes
        declared = http.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return JSONResponse({"error": f"the body is {int(declared):,} bytes; the limit is {limit:,}"}, 413)
        body = bytearray()
        async for chunk in http.stream():
            body += chunk
            if len(body) > limit:
                return JSONResponse({"error": f"the body is over {limit:,} bytes, the limit"}, 413)
        status, answer = await self.submit(bytes(body))
        return JSONResponse(answer, status)

    async def fleet(self) -> dict[str, Any]:
        running = await self._running()
        view = {c.name: c for c in await self._classes(running)}
        return {
            "app": self.app,
            "stages": self.options.stages,
            "limits": self.options.limits.to_dict(),
            "request_timeout_s": self.options.request_timeout_s,
            "classes": [
                {
                    "name": s.name,
                    "tier": s.tier,
                    "replicas": s.replicas,
                    "running": view[s.name].replicas,
                    "state": "; ".join(f"{d}: {running[d][1]}" for d in s.deployments(self.options.stages)),
                    "memory_gib": _gib(s.reading.device.total_bytes),
                    "in_flight": view[s.name].in_flight,
                    "queued_s": round(view[s.name].queued_s, 3),
                }
                for s in self.specs
            ],
        }

    async def submit(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, response)`` for one request body; every failure is a message, never a traceback."""
        try:
            parsed = parse_body(body, self.options.limits)
        except BodyError as error:
            return error.status, {"error": str(error)}
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:12]
        attempts: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(self.options.request_timeout_s):
                status, answer = await self._serve(parsed.request, parsed.run, request_id, attempts)
        except TimeoutError:
            return 504, {
                "error": f"the request did not finish within {self.options.request_timeout_s:g} s (request_timeout_s);"
                " its generation was cancelled",
                "request_id": request_id,
                "attempts": attempts,
            }
        if status == 200:
            answer["total_seconds"] = round(time.perf_counter() - started, 3)
        if parsed.run.get("lyrics"):
            answer.setdefault("notes", []).append(
                "lyrics were checked against the LM's prompt budget; the reference pipeline's models do not read them"
            )
        return status, answer

    async def _serve(
        self, request: GenerationRequest, run: Mapping[str, Any], request_id: str, attempts: list[dict[str, Any]]
    ) -> tuple[int, dict[str, Any]]:
        plan_only = self.options.plan_only or bool(run.get("plan_only"))
        excluded: dict[str, int] = {}
        for _ in range(len(self.specs) + 1):
            running = await self._running()
            classes = [
                dataclasses.replace(c, replicas=max(0, c.replicas - excluded.get(c.name, 0)))
                for c in await self._classes(running)
            ]
            try:
                if len(self._resolutions) > RESOLUTIONS_KEPT:
                    self._resolutions.clear()
                decision = route_soonest(request, classes, tiers=self.options.tiers, cache=self._resolutions)
            except NoReplicaError as error:
                if attempts:
                    tried = "; ".join(a["error"] for a in attempts if "error" in a)
                    return 503, {"error": f"no class that can run the request took it: {tried}", "attempts": attempts}
                states = "; ".join(
                    f"{d}: {running[d][1]}" for s in self.specs for d in s.deployments(self.options.stages)
                )
                return 503, {"error": f"{error}. Deployments: {states}", "attempts": attempts}
            except UnrunnableError as error:
                return 422, {"error": str(error), "attempts": attempts}
            target = decision.target
            work = 0.0 if plan_only else expected_work(decision.resolution)
            ticket = f"{request_id}-{len(attempts)}"
            if work:
                self._admit(ticket, target, work)
            seconds = None
            try:
                result = await self._attempt(target, request, run, request_id)
                seconds = result.get("seconds")  # the work's own, without its wait in the queue
            except ReplicaLost as lost:
                attempts.append({"class": target, "tier": decision.tier, "error": str(lost), "replica": lost.replica})
                if lost.kind == "died":
                    self._lose(ticket, target)
                    excluded[target] = excluded.get(target, 0) + 1
                else:  # alive and full, or down without Serve knowing yet: not for this request
                    excluded[target] = 10**6
                continue
            except Exception as error:  # noqa: BLE001 - the replica's own failure, reported in words
                return 500, {
                    "error": f"the {target} replica failed: {_first_line(error)}",
                    "route": decision.to_dict(),
                    "attempts": attempts,
                }
            finally:
                if work:
                    self._finish(ticket, seconds)
            attempts.append(
                {"class": target, "tier": decision.tier, "replica": result["replica"]["replica"], "ok": True}
            )
            return 200, {
                "request_id": request_id,
                "route": decision.to_dict(),
                "retried": len(attempts) > 1,
                "attempts": attempts,
                "plan_only": plan_only,
                **result,
            }
        return 503, {
            "error": "every class that could run this request lost a replica while trying",
            "attempts": attempts,
        }

    async def _attempt(
        self, target: str, request: GenerationRequest, run: Mapping[str, Any], request_id: str
    ) -> dict[str, Any]:
        fields = request_fields(request)
        plan_only = self.options.plan_only or bool(run.get("plan_only"))
        if not self.options.stages:
            return await self._stream(self.handles[target], target, (fields, run, request_id))
        lm_stage, render_stage = self.handles[f"{target}-lm"], self.handles[f"{target}-render"]
        if plan_only:
            # Both stages resolve the same request on the same tier: the LM stage answers.
            return await self._stream(lm_stage, f"{target}-lm", (fields, {**run, "plan_only": True}, request_id))
        first = await self._stream(lm_stage, f"{target}-lm", (fields, run, request_id))
        rendered = await self._stream(render_stage, f"{target}-render", (fields, run, request_id, first["lm"]))
        rendered["stages"] = {"lm": first["replica"], "render": rendered["replica"]}
        return rendered

    async def _stream(self, handle: Any, deployment: str, args: tuple[Any, ...]) -> dict[str, Any]:
        """Send one request to a deployment and wait for its result; :class:`ReplicaLost` if no replica
        accepts it within ``accept_timeout_s`` or the replica dies. Cancelled (client gone, timeout),
        it cancels the replica's work."""
        stream = handle.options(stream=True).run.remote(*args)
        replica = None
        finished = False
        try:
            try:
                accepted = await asyncio.wait_for(anext(stream), self.options.accept_timeout_s)
            except TimeoutError:
                raise ReplicaLost(
                    "not accepted",
                    f"no replica of {deployment} accepted the request within {self.options.accept_timeout_s:g} s "
                    "(accept_timeout_s): down or full",
                ) from None
            replica = accepted.get("replica")
            result = None
            async for event in stream:
                if event.get("event") == "result":
                    result = event
            finished = True
        except RayActorError as error:
            raise ReplicaLost(
                "died", f"the {deployment} replica died mid-request: {_first_line(error)}", replica
            ) from None
        finally:
            if not finished:
                stream.cancel()
        if result is None:
            raise RuntimeError(f"{deployment} ended the request without a result")
        result.pop("event")
        return result

    # ----------------------------------------------------------------------------------- the fleet's state
    async def _classes(self, running: Mapping[str, tuple[int, str]]) -> list[FleetClass]:
        """Every class as :func:`route_soonest` sees it: replicas running (less recent losses), requests in
        flight and their expected seconds (the ledger's tickets and this router's own)."""
        ledger = await self._ledger_view()
        finished = set(self._finished)
        tickets = {t: tuple(e) for t, e in ledger["tickets"].items() if t not in finished} | self._mine
        now = time.monotonic()
        recent = {loss: c for loss, c, age in ledger["losses"] if age < LOST_NOTICE_S}
        recent |= {loss: c for loss, c, at in self._losses if now - at < LOST_NOTICE_S}
        classes = []
        for spec in self.specs:
            count = min(running[d][0] for d in spec.deployments(self.options.stages))
            count = max(0, count - sum(1 for c in recent.values() if c == spec.name))
            work = [w for c, w in tickets.values() if c == spec.name]
            rate = ledger["rates"].get(spec.name, DEFAULT_RATE)
            classes.append(FleetClass(spec.name, spec.reading, count, len(work), sum(work) * rate))
        return classes

    def _admit(self, ticket: str, target: str, work: float) -> None:
        self._mine[ticket] = (target, work)
        self.ledger.admit.remote(ticket, target, work)

    def _finish(self, ticket: str, seconds: float | None) -> None:
        self._mine.pop(ticket, None)
        self._finished.append(ticket)
        self.ledger.finish.remote(ticket, seconds)

    def _lose(self, loss: str, target: str) -> None:
        """A replica of ``target`` died: counted out here and, through the ledger, by every router until
        Serve's status has had time to say so."""
        self._losses.append((loss, target, time.monotonic()))
        self.ledger.lost.remote(loss, target)
        self._status = (0.0, {})

    async def _ledger_view(self) -> dict[str, Any]:
        fetched_at, cached = self._ledger
        if time.monotonic() - fetched_at < LEDGER_TTL_S:
            return cached
        try:
            snapshot = await asyncio.wait_for(self.ledger.snapshot.remote(), timeout=1.0)
        except Exception:  # noqa: BLE001 - without the ledger, this router's own view still routes
            snapshot = {"tickets": {}, "rates": cached.get("rates", {}), "losses": []}
        self._ledger = (time.monotonic(), snapshot)
        return snapshot

    async def _running(self) -> dict[str, tuple[int, str]]:
        """Deployment name → (running replicas, state in words), from Serve's controller (cached briefly)."""
        cached_at, cached = self._status
        if time.monotonic() - cached_at < STATUS_TTL_S and cached:
            return cached
        status = await asyncio.to_thread(serve.status)
        app = status.applications.get(self.app)
        found = {}
        for spec in self.specs:
            for name in spec.deployments(self.options.stages):
                deployment = app.deployments.get(name) if app else None
                if deployment is None:
                    found[name] = (0, "not deployed")
                    continue
                count = sum(n for state, n in deployment.replica_states.items() if state == "RUNNING")
                message = f"{deployment.status.value}, {count} running"
                found[name] = (count, message + (f": {deployment.message}" if deployment.message else ""))
        self._status = (time.monotonic(), found)
        return found


# --------------------------------------------------------------------------------------------- the app
def build_app(specs: Sequence[ClassSpec], options: ServeOptions = ServeOptions()) -> Any:
    """The Serve application: per class a :class:`FleetReplica` deployment (with stages, an
    :class:`LmStage` and a :class:`RenderStage`), the :class:`FleetLedger`, and :class:`FleetRouter`
    replicas in front."""
    if not specs:
        raise ValueError("no GPU class to serve: the scan found no working GPU (try --simulate 8,16,24 on CPUs)")
    handles: dict[str, Any] = {}
    for spec in specs:
        if options.stages:
            lm_replicas = spec.lm_replicas or spec.replicas
            render_replicas = spec.render_replicas or spec.replicas
            handles[f"{spec.name}-lm"] = _deployment(LmStage, f"{spec.name}-lm", spec, options, lm_replicas)
            handles[f"{spec.name}-render"] = _deployment(
                RenderStage, f"{spec.name}-render", spec, options, render_replicas
            )
        else:
            handles[spec.name] = _deployment(FleetReplica, spec.name, spec, options, spec.replicas)
    ledger: Any = serve.deployment(FleetLedger)
    ledger = ledger.options(
        name="ledger", num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=10_000
    ).bind()
    router: Any = serve.deployment(FleetRouter)
    router = router.options(
        name="router",
        num_replicas=options.ingress_replicas,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=1000,
    )
    return router.bind(list(specs), handles, ledger, options)


def _deployment(cls: type, name: str, spec: ClassSpec, options: ServeOptions, replicas: int) -> Any:
    gpus = spec.num_gpus * (options.stage_gpus if options.stages else 1)
    actor: dict[str, Any] = {"num_gpus": gpus, "num_cpus": 0}
    if spec.env:
        actor["runtime_env"] = {"env_vars": dict(spec.env)}
    if spec.resources:
        actor["resources"] = dict(spec.resources)
    scaling: dict[str, Any] = {"num_replicas": replicas}
    if spec.autoscaling is not None:
        low, high = spec.autoscaling
        scaling = {
            "autoscaling_config": {
                "min_replicas": low,
                "initial_replicas": max(low, min(replicas, high)),
                "max_replicas": high,
                "target_ongoing_requests": 1,
            }
        }
    deployment: Any = serve.deployment(cls)
    return deployment.options(
        name=name,
        ray_actor_options=actor,
        max_ongoing_requests=options.max_ongoing_requests,
        max_constructor_retry_count=max(options.constructor_retries, replicas),
        health_check_period_s=options.health_check_period_s,
        **scaling,
    ).bind(spec.name, spec.tier, options)


def _gib(total: int | None) -> str:
    return "CPU" if total is None else f"{total / GIB:.2f} GiB"


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"
