"""``fleet serve``: a Ray Serve application, one deployment per tier class, and a router in front.

- **Replicas** (:class:`FleetReplica`): each holds one GPU (``num_gpus=1``), resolves its own device in
  its constructor and refuses to start when that device's tier is not the class it was placed for.
  Each request is resolved again on the replica (its own card) and run by the reference pipeline, or
  only planned (``plan_only``).
- **Router** (:class:`FleetRouter`, the ingress): for each request, :func:`acestep_core.routing.route`
  decides the class from every class's reading and load; Serve sends it to a replica of that class (its
  router prefers the less loaded of two sampled replicas). A replica that dies mid-request is
  retried once on a class that can still run it (the same class when it has another replica), and
  the decision record says so. No replica running → 503 with each class's state; a body the
  validator refuses → 400 with its message; a request no running class can run → 422.

The HTTP body is a JSON object: the request (``duration_s``, ``batch_size``, ``lm_model``, ``lm``) and
run options (``plan_only``, ``steps``, ``seed``, ``caption``, ``audio``: the WAV bytes in base64).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayActorError
from starlette.requests import Request
from starlette.responses import JSONResponse

from acestep_core.resolve import resolve
from acestep_core.routing import FleetClass, NoReplicaError, UnrunnableError, route
from acestep_core.runtime.fleet.scan import SIMULATE_VARIABLE, FleetScan
from acestep_core.types import GenerationRequest, MemoryReading
from acestep_core.vocabulary import GIB

REQUEST_FIELDS = ("duration_s", "batch_size", "lm_model", "lm")
RUN_FIELDS: Mapping[str, type] = {"plan_only": bool, "steps": int, "seed": int, "caption": str, "audio": bool}
MAX_STEPS = 200
STATUS_TTL_S = 1.0
"""How long the router trusts its view of which replicas are running."""


class BadRequestError(ValueError):
    """A request body the router refuses (HTTP 400); the message says what to change."""


class PlacementError(RuntimeError):
    """A replica whose device is not of the class it was placed for: it refuses to start."""


@dataclass(frozen=True)
class ServeOptions:
    tiers: str | None = None
    plan_only: bool = False
    """Replicas only resolve (no model run): routing and serving overhead alone."""
    size: str = "tiny"
    out_dir: str | None = None
    """Where replicas write WAV files (on their node); default: a temporary directory."""
    torch_threads: int | None = None
    max_ongoing_requests: int = 8
    """Requests a replica accepts at once; generations on one replica still run one at a time."""
    constructor_retries: int = 3
    """Replicas Serve starts in place of one that refused or failed to start, before it gives up."""


@dataclass(frozen=True)
class ClassSpec:
    """One deployment: the tier its replicas must have, a reading of its cards, how many replicas."""

    name: str
    tier: str
    reading: MemoryReading
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment for the replicas (``runtime_env``): ``MAX_CUDA_VRAM`` for a simulated class."""
    resources: Mapping[str, float] = field(default_factory=dict)
    """Ray resources that pin the replicas to this class's nodes (``accelerator_type:...``)."""
    num_gpus: float = 1


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
        resolution = resolve(tiers=tiers, environ={SIMULATE_VARIABLE: size}, redetect=True)
        tier = resolution.tier.name
        known = by_tier.get(tier)
        if known is None or (resolution.reading.device.total_bytes or 0) < (known.reading.device.total_bytes or 0):
            replicas = 1 if known is None else known.replicas + 1
            by_tier[tier] = ClassSpec(tier, tier, resolution.reading, replicas, {SIMULATE_VARIABLE: size})
        else:
            by_tier[tier] = dataclasses.replace(known, replicas=known.replicas + 1)
    return sorted(by_tier.values(), key=lambda s: s.reading.device.total_bytes or 0)


def parse_body(raw: bytes | str | Mapping[str, Any]) -> tuple[GenerationRequest, dict[str, Any]]:
    """The request and run options of a body, or :class:`BadRequestError` with the validator's message."""
    if isinstance(raw, Mapping):
        body: Any = raw
    else:
        try:
            body = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise BadRequestError(f"the body is not JSON: {error}") from None
    if not isinstance(body, Mapping):
        raise BadRequestError(
            f'the body must be a JSON object such as {{"duration_s": 120}}, not {type(body).__name__}'
        )
    unknown = sorted(set(body) - set(REQUEST_FIELDS) - set(RUN_FIELDS))
    if unknown:
        raise BadRequestError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join((*REQUEST_FIELDS, *RUN_FIELDS))}"
        )
    fields = {k: body[k] for k in REQUEST_FIELDS if k in body}
    if fields.get("lm_model") is not None and not isinstance(fields["lm_model"], str):
        raise BadRequestError(f'lm_model must be an LM size such as "1.7B" or null, not {fields["lm_model"]!r}')
    try:
        request = GenerationRequest(**fields)
    except (TypeError, ValueError) as error:
        raise BadRequestError(str(error)) from None
    options = {k: body[k] for k in RUN_FIELDS if k in body}
    for key, value in options.items():
        kind = RUN_FIELDS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadRequestError(f"{key} must be a {kind.__name__}, not {value!r}")
    if not 1 <= options.get("steps", 1) <= MAX_STEPS:
        raise BadRequestError(f"steps must be between 1 and {MAX_STEPS}, not {options['steps']}")
    return request, options


def request_fields(request: GenerationRequest) -> dict[str, Any]:
    return {name: getattr(request, name) for name in REQUEST_FIELDS}


# --------------------------------------------------------------------------------------------- replica
class FleetReplica:
    """One GPU of a class: decides for its own card, then runs (or plans) what it is sent."""

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
        self._generation = asyncio.Lock()
        if options.torch_threads and not options.plan_only:
            from acestep_core.runtime.fleet.generation import set_threads

            set_threads(options.torch_threads)

    async def describe(self) -> dict[str, Any]:
        return self.identity | {"generating": self.generating}

    async def run(self, fields: Mapping[str, Any], run: Mapping[str, Any], request_id: str) -> dict[str, Any]:
        resolution = resolve(GenerationRequest(**fields), tiers=self.options.tiers)
        if self.options.plan_only or run.get("plan_only"):
            return {"replica": self.identity, "resolution": resolution.to_dict(), "clips": [], "plan_only": True}
        from acestep_core.runtime.fleet.generation import run_request

        out_dir = os.path.join(self.options.out_dir or os.path.join(tempfile.gettempdir(), "acestep-fleet"), request_id)
        async with self._generation:
            self.generating += 1
            try:
                data = await asyncio.to_thread(run_request, resolution, run, out_dir=out_dir, size=self.options.size)
            finally:
                self.generating -= 1
        return {"replica": self.identity, **data, "plan_only": False}


# --------------------------------------------------------------------------------------------- router
class FleetRouter:
    """The ingress: routes each request with :func:`route`, retries once when a replica dies."""

    def __init__(self, specs: Sequence[ClassSpec], handles: Mapping[str, Any], options: ServeOptions) -> None:
        self.specs = list(specs)
        self.handles = dict(handles)
        self.options = options
        self.in_flight = {s.name: 0 for s in specs}
        self.app = serve.get_replica_context().app_name
        self._status: tuple[float, dict[str, tuple[int, str]]] = (0.0, {})

    async def __call__(self, http: Request) -> JSONResponse:
        if http.method == "GET":
            return JSONResponse(await self.fleet())
        if http.method != "POST":
            return JSONResponse({"error": f"{http.method} is not served: POST a request, GET the fleet"}, 405)
        status, body = await self.submit(await http.body())
        return JSONResponse(body, status)

    async def fleet(self) -> dict[str, Any]:
        running = await self._running()
        return {
            "classes": [
                {
                    "name": s.name,
                    "tier": s.tier,
                    "replicas": s.replicas,
                    "running": running[s.name][0],
                    "state": running[s.name][1],
                    "memory_gib": _gib(s.reading.device.total_bytes),
                    "in_flight": self.in_flight[s.name],
                }
                for s in self.specs
            ]
        }

    async def submit(self, body: bytes | str | Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """``(HTTP status, response)`` for one request body; every failure is a message, never a traceback."""
        try:
            request, run = parse_body(body)
        except BadRequestError as error:
            return 400, {"error": str(error)}
        started = time.perf_counter()
        request_id = uuid.uuid4().hex[:12]
        running = await self._running()
        classes = [FleetClass(s.name, s.reading, running[s.name][0], self.in_flight[s.name]) for s in self.specs]
        attempts: list[dict[str, Any]] = []
        for _ in range(2):
            try:
                decision = route(request, classes, tiers=self.options.tiers)
            except NoReplicaError as error:
                states = "; ".join(f"{s.name}: {running[s.name][1]}" for s in self.specs)
                return 503, {"error": f"{error}. Deployments: {states}", "attempts": attempts}
            except UnrunnableError as error:
                return 422, {"error": str(error), "attempts": attempts}
            target = decision.target
            self.in_flight[target] += 1
            try:
                result = await self.handles[target].run.remote(request_fields(request), run, request_id)
            except RayActorError as error:
                attempts.append(
                    {"class": target, "tier": decision.tier, "error": f"replica died mid-request: {_first_line(error)}"}
                )
                classes = [dataclasses.replace(c, replicas=c.replicas - 1) if c.name == target else c for c in classes]
                continue
            except Exception as error:  # noqa: BLE001 - the replica's own failure, reported in words
                return 500, {
                    "error": f"the {target} replica failed: {_first_line(error)}",
                    "route": decision.to_dict(),
                    "attempts": attempts,
                }
            finally:
                self.in_flight[target] -= 1
            attempts.append(
                {"class": target, "tier": decision.tier, "replica": result["replica"]["replica"], "ok": True}
            )
            return 200, {
                "request_id": request_id,
                "route": decision.to_dict(),
                "retried": len(attempts) > 1,
                "attempts": attempts,
                **result,
                "total_seconds": round(time.perf_counter() - started, 3),
            }
        return 503, {
            "error": "the replica running this request died, and so did the one it was retried on",
            "attempts": attempts,
        }

    async def _running(self) -> dict[str, tuple[int, str]]:
        """Deployment name → (running replicas, state in words), from Serve's controller (cached briefly)."""
        cached_at, cached = self._status
        if time.monotonic() - cached_at < STATUS_TTL_S and cached:
            return cached
        status = await asyncio.to_thread(serve.status)
        app = status.applications.get(self.app)
        found = {}
        for spec in self.specs:
            deployment = app.deployments.get(spec.name) if app else None
            if deployment is None:
                found[spec.name] = (0, "not deployed")
                continue
            count = sum(n for state, n in deployment.replica_states.items() if state == "RUNNING")
            message = f"{deployment.status.value}, {count} of {spec.replicas} running"
            found[spec.name] = (count, message + (f": {deployment.message}" if deployment.message else ""))
        self._status = (time.monotonic(), found)
        return found


def build_app(specs: Sequence[ClassSpec], options: ServeOptions = ServeOptions()) -> Any:
    """The Serve application: one :class:`FleetReplica` deployment per class, :class:`FleetRouter` in front."""
    if not specs:
        raise ValueError("no GPU class to serve: the scan found no working GPU (try --simulate 8,16,24 on CPUs)")
    replica: Any = serve.deployment(FleetReplica)
    handles = {}
    for spec in specs:
        actor: dict[str, Any] = {"num_gpus": spec.num_gpus, "num_cpus": 0}
        if spec.env:
            actor["runtime_env"] = {"env_vars": dict(spec.env)}
        if spec.resources:
            actor["resources"] = dict(spec.resources)
        handles[spec.name] = replica.options(
            name=spec.name,
            num_replicas=spec.replicas,
            ray_actor_options=actor,
            max_ongoing_requests=options.max_ongoing_requests,
            max_constructor_retry_count=max(options.constructor_retries, spec.replicas),
        ).bind(spec.name, spec.tier, options)
    router: Any = serve.deployment(FleetRouter)
    router = router.options(name="router", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000)
    return router.bind(list(specs), handles, options)


def _gib(total: int | None) -> str:
    return "CPU" if total is None else f"{total / GIB:.2f} GiB"


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"
