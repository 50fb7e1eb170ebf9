"""The fleet as a standard Ray Serve application: ``acestep_core.runtime.fleet.app:app``.

An application builder with typed arguments (:class:`FleetArgs`, a Pydantic model Serve validates), so
the fleet deploys the way any Serve application does::

    serve run acestep_core.runtime.fleet.app:app simulate='["8","16","24"]' plan_only=true
    acestep-core fleet serve --simulate 8,16,24 --print-config > fleet.yaml   # classes from a scan
    serve run fleet.yaml            # or: serve deploy fleet.yaml (a running cluster)

The classes are given (``classes``, as ``fleet serve --print-config`` writes them from a scan: each
with its reading) or simulated (``simulate``: card sizes resolved here as their replicas will). The
builder runs no Ray task, so ``serve deploy`` can build it anywhere on the cluster.

No ``from __future__ import annotations`` here: Serve reads the builder's annotation at run time to
validate the arguments against :class:`FleetArgs`.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from acestep_core.runtime.fleet.limits import RequestLimits
from acestep_core.runtime.fleet.serve import ClassSpec, ServeOptions, build_app, simulated_specs
from acestep_core.types import DeviceMemory, MemoryReading, to_jsonable

APP_NAME = "acestep-fleet"
IMPORT_PATH = "acestep_core.runtime.fleet.app:app"
_DEFAULT_LIMITS = RequestLimits()


class LimitsArgs(BaseModel):
    """Every bound on a request (see :class:`~acestep_core.runtime.fleet.limits.RequestLimits`)."""

    model_config = ConfigDict(extra="forbid")

    max_body_bytes: int = Field(default=_DEFAULT_LIMITS.max_body_bytes, gt=0)
    max_caption_tokens: int = Field(default=_DEFAULT_LIMITS.max_caption_tokens, gt=0)
    max_prompt_tokens: int = Field(default=_DEFAULT_LIMITS.max_prompt_tokens, gt=0)
    max_depth: int = Field(default=_DEFAULT_LIMITS.max_depth, gt=0)
    max_integer: int = Field(default=_DEFAULT_LIMITS.max_integer, gt=0)
    max_seed: int = Field(default=_DEFAULT_LIMITS.max_seed, gt=0)
    max_steps: int = Field(default=_DEFAULT_LIMITS.max_steps, gt=0)
    max_batch_size: int = Field(default=_DEFAULT_LIMITS.max_batch_size, gt=0)
    max_duration_s: float = Field(default=_DEFAULT_LIMITS.max_duration_s, gt=0)
    required: list[str] = Field(default_factory=lambda: list(_DEFAULT_LIMITS.required))
    tokenizer: str | None = None

    def limits(self) -> RequestLimits:
        return RequestLimits(**(self.model_dump() | {"required": tuple(self.required)}))


class ClassArgs(BaseModel):
    """One tier class: its cards, where its replicas may run, how many."""

    model_config = ConfigDict(extra="forbid")

    name: str
    tier: str | None = None
    """The tier every replica must have (default: the tier ``reading`` or ``simulate_gb`` resolves to)."""
    replicas: int = Field(default=1, ge=1)
    min_replicas: int | None = Field(default=None, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    """Both set: Serve autoscales the class between them, one generation a replica."""
    lm_replicas: int | None = Field(default=None, ge=1)
    render_replicas: int | None = Field(default=None, ge=1)
    """With ``stages``: each stage's replicas (default: ``replicas``)."""
    simulate_gb: str | None = None
    """A simulated card: ``MAX_CUDA_VRAM`` for the replicas (and the reading, resolved here)."""
    reading: dict[str, Any] | None = None
    """The class's smallest card as ``fleet scan --json`` read it (``device``, ``visible``, ``notes``)."""
    accelerator_type: str | None = None
    """Pin the replicas to nodes with this Ray ``accelerator_type`` (e.g. ``A10G``)."""
    num_gpus: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _card(self) -> "ClassArgs":
        if (self.simulate_gb is None) == (self.reading is None):
            raise ValueError(f"class {self.name!r} needs exactly one of simulate_gb or reading")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError(f"class {self.name!r}: give both min_replicas and max_replicas, or neither")
        if self.min_replicas is not None and self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(
                f"class {self.name!r}: min_replicas {self.min_replicas} > max_replicas {self.max_replicas}"
            )
        return self


class FleetArgs(BaseModel):
    """The application's arguments (``args:`` in a Serve config, ``key=value`` after ``serve run``)."""

    model_config = ConfigDict(extra="forbid")

    classes: list[ClassArgs] = Field(default_factory=list)
    simulate: list[str] = Field(default_factory=list)
    """Simulated card sizes in GB (``["8", "16", "24"]``), grouped into classes by tier; instead of ``classes``."""
    tiers: str | None = None
    plan_only: bool = False
    size: Literal["tiny", "real"] = "tiny"
    out_dir: str | None = None
    torch_threads: int | None = Field(default=None, ge=1)
    ingress_replicas: int = Field(default=2, ge=1)
    max_ongoing_requests: int = Field(default=16, ge=1)
    request_timeout_s: float = Field(default=900.0, gt=0)
    accept_timeout_s: float = Field(default=2.0, gt=0)
    health_check_period_s: float = Field(default=2.0, gt=0)
    stages: bool = False
    stage_gpus: float = Field(default=0.5, gt=0, le=1)
    stand_in_s: float | None = Field(default=None, gt=0)
    """Benchmarks only: each stage waits this long instead of running the models (a labelled stand-in)."""
    limits: LimitsArgs = Field(default_factory=lambda: LimitsArgs())

    @model_validator(mode="after")
    def _fleet(self) -> "FleetArgs":
        if bool(self.classes) == bool(self.simulate):
            raise ValueError("give the fleet's classes (classes: [...]) or simulated card sizes (simulate: [...])")
        return self


def app(args: FleetArgs | Mapping[str, Any]) -> Any:
    """The Serve application for ``args`` (Serve validates them against :class:`FleetArgs`)."""
    if not isinstance(args, FleetArgs):
        args = FleetArgs.model_validate(dict(args))
    return build_app(specs_of(args), options_of(args))


def options_of(args: FleetArgs) -> ServeOptions:
    return ServeOptions(
        tiers=args.tiers,
        plan_only=args.plan_only,
        size=args.size,
        out_dir=args.out_dir,
        torch_threads=args.torch_threads,
        max_ongoing_requests=args.max_ongoing_requests,
        ingress_replicas=args.ingress_replicas,
        limits=args.limits.limits(),
        request_timeout_s=args.request_timeout_s,
        accept_timeout_s=args.accept_timeout_s,
        health_check_period_s=args.health_check_period_s,
        stages=args.stages,
        stage_gpus=args.stage_gpus,
        stand_in_s=args.stand_in_s,
    )


def specs_of(args: FleetArgs) -> list[ClassSpec]:
    """The classes to deploy: the given ones (each checked against its tier) or the simulated sizes."""
    if args.simulate:
        return simulated_specs(args.simulate, tiers=args.tiers)
    specs = []
    for item in args.classes:
        if item.simulate_gb is not None:
            [simulated] = simulated_specs([item.simulate_gb], tiers=args.tiers)
            reading, env, tier = simulated.reading, dict(simulated.env), simulated.tier
        else:
            reading, env = reading_from_dict(item.reading or {}), {}
            tier = _tier_of(reading, args.tiers)
        if item.tier is not None and item.tier != tier:
            raise ValueError(f"class {item.name!r} says tier {item.tier!r}, but its card is {tier!r}")
        resources = {f"accelerator_type:{item.accelerator_type}": 0.001} if item.accelerator_type else {}
        autoscaling = None if item.min_replicas is None else (item.min_replicas, item.max_replicas or item.min_replicas)
        specs.append(
            ClassSpec(
                item.name,
                tier,
                reading,
                item.replicas,
                env,
                resources,
                item.num_gpus,
                autoscaling,
                item.lm_replicas,
                item.render_replicas,
            )
        )
    return sorted(specs, key=lambda s: s.reading.device.total_bytes or 0)


def class_args(spec: ClassSpec) -> dict[str, Any]:
    """A class as a config file holds it (the inverse of :func:`specs_of` for one class)."""
    entry: dict[str, Any] = {"name": spec.name, "tier": spec.tier, "replicas": spec.replicas}
    simulated = spec.env.get("MAX_CUDA_VRAM")
    if simulated is not None:
        entry["simulate_gb"] = simulated
    else:
        entry["reading"] = to_jsonable(spec.reading)
    accelerator = next((k.partition(":")[2] for k in spec.resources if k.startswith("accelerator_type:")), None)
    if accelerator:
        entry["accelerator_type"] = accelerator
    if spec.autoscaling is not None:
        entry["min_replicas"], entry["max_replicas"] = spec.autoscaling
    return entry


def serve_config(
    specs: Sequence[ClassSpec],
    args: Mapping[str, Any],
    *,
    name: str = APP_NAME,
    route_prefix: str = "/",
    host: str = "127.0.0.1",
    port: int = 8000,
) -> dict[str, Any]:
    """A Serve config file (``serve run`` / ``serve deploy``) for these classes and arguments."""
    arguments = {"classes": [class_args(s) for s in specs], **{k: v for k, v in args.items() if v is not None}}
    FleetArgs.model_validate(arguments)
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": host, "port": port},
        "applications": [{"name": name, "route_prefix": route_prefix, "import_path": IMPORT_PATH, "args": arguments}],
    }


def reading_from_dict(data: Mapping[str, Any]) -> MemoryReading:
    """A reading from its JSON form (``to_jsonable(reading)``, ``fleet scan --json``'s ``reading``)."""
    try:
        device = _device(data["device"])
        visible = tuple(_device(item) for item in data.get("visible", ()))
        return MemoryReading(device=device, visible=visible or (device,), notes=tuple(data.get("notes", ())))
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"a class's reading must be a reading as `fleet scan --json` writes it: {error}") from None


def _device(data: Mapping[str, Any]) -> DeviceMemory:
    known = {f.name for f in dataclasses.fields(DeviceMemory)}
    values = {k: v for k, v in data.items() if k in known}
    if values.get("compute_capability") is not None:
        values["compute_capability"] = tuple(values["compute_capability"])
    return DeviceMemory(**values)


def _tier_of(reading: MemoryReading, tiers: str | None) -> str:
    from acestep_core.resolve import resolve

    return resolve(tiers=tiers, reading=reading).tier.name
