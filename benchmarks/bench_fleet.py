"""The fleet's costs, printed (not asserted). Every figure is measured in this run, on this machine:

1. routing overhead per request: ``route()`` / ``route_soonest()`` over an 8/16/24 GB fleet (no
   generation) against one direct ``resolve()`` of the same request — medians of ``--repeats`` calls;
2. plan-only requests per second through Serve over HTTP at 1, 2 and 4 router (ingress) replicas, in
   front of an 8/16/24 GB fleet of plan-only replicas, two a class (they resolve, run no model);
3. p50 / p99 latency of ``--requests`` plan-only requests, ``--concurrency`` at once (2 routers);
4. time from a replica's death to the rerouted answer: a request running on the 8 GB class (a stand-in
   stage of ``--stand-in`` s) whose replica is killed is answered from the 16 GB class; printed with
   and without the rerouted work's own seconds;
5. two stages against one: the same card (one simulated 24 GB GPU) serving ``--stage-requests``
   requests either as one replica doing both phases, or as an LM replica and a render replica sharing
   it (``stage_gpus`` 0.5), each phase a **stand-in** that waits ``--stand-in`` s (measured lengths
   printed); and the same with each stage on a card of its own against two one-stage replicas.
6. ``--network``: what a local Ray 2.60 instance started as ``fleet serve`` starts it listens on
   (``ss -ltnp``), as Ray configures it and with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (loopback),
   and whether each port answers an HTTP GET without a token.

    python benchmarks/bench_fleet.py [--requests 500] [--concurrency 16] [--stand-in 0.5] [--network]
    python benchmarks/bench_fleet.py --skip-serve          # 1. only (no Ray)
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from acestep_core import DetectOptions, GenerationRequest, MemoryReading, resolve
from acestep_core.routing import FleetClass, route, route_soonest
from acestep_core.vocabulary import MIB

SIZES = ("8", "16", "24")
REQUEST = GenerationRequest(duration_s=120, batch_size=1)
CAVEAT = "(2 shared CPU cores: Ray's processes, the routers, the replicas and this client all compete for them)"


def simulated_reading(size: str) -> MemoryReading:
    return resolve(detect_options=DetectOptions(environ={"MAX_CUDA_VRAM": size}), redetect=True).reading


def median_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def routing_overhead(repeats: int) -> None:
    classes = [FleetClass(f"gb{size}", simulated_reading(size)) for size in SIZES]
    direct_options = DetectOptions(environ={"MAX_CUDA_VRAM": "8"})
    direct = median_ms(lambda: resolve(REQUEST, detect_options=direct_options), repeats)
    routed = median_ms(lambda: route(REQUEST, classes), repeats)
    soonest = median_ms(lambda: route_soonest(REQUEST, classes), repeats)
    cache: dict[Any, Any] = {}
    cached = median_ms(lambda: route_soonest(REQUEST, classes, cache=cache), repeats)
    one_class = median_ms(lambda: route(REQUEST, classes[:1]), repeats)
    print(f"1. routing overhead (median of {repeats}, {REQUEST.duration_s:g} s × {REQUEST.batch_size}, no generation)")
    print(f"  direct resolve() (cached detection)      {direct:8.3f} ms")
    print(f"  route() over 1 class                     {one_class:8.3f} ms   {one_class / direct:5.2f}× resolve")
    print(f"  route() over {len(classes)} classes (8/16/24 GB)     {routed:8.3f} ms   {routed / direct:5.2f}× resolve")
    print(
        f"  route_soonest() over {len(classes)} classes          {soonest:8.3f} ms   {soonest / direct:5.2f}× resolve"
    )
    print(f"  route_soonest(), the router's cache warm {cached:8.3f} ms   {cached / direct:5.2f}× resolve")


# --------------------------------------------------------------------------------------------- Serve
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict[str, Any], timeout: float = 300) -> tuple[int, dict[str, Any], float]:
    data = json.dumps(body).encode()
    started = time.perf_counter()
    request = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
            status = response.status
    except urllib.error.HTTPError as error:
        status, answer = error.code, json.loads(error.read())
    return status, answer, time.perf_counter() - started


class Fleet:
    """A local Ray instance with simulated GPUs and Serve on a free port; applications by name."""

    def __init__(self, gpus: int) -> None:
        import ray
        from ray import serve

        logging.getLogger("ray.serve").setLevel(logging.WARNING)
        self.ray, self.serve = ray, serve
        self.port = free_port()
        ray.init(
            address="local",
            num_cpus=os.cpu_count(),
            num_gpus=gpus,
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            object_store_memory=100 * MIB,
        )
        serve.start(http_options={"host": "127.0.0.1", "port": self.port})

    def deploy(self, name: str, args: dict[str, Any]) -> str:
        from acestep_core.runtime.fleet.app import app

        self.serve.run(app(args), name=name, route_prefix=f"/{name}")
        return f"http://127.0.0.1:{self.port}/{name}"

    def delete(self, name: str) -> None:
        self.serve.delete(name)

    def handle(self, app_name: str, deployment: str) -> Any:
        return self.serve.get_deployment_handle(deployment, app_name=app_name)

    def close(self) -> None:
        self.serve.shutdown()
        self.ray.shutdown()


def load(url: str, body: dict[str, Any], requests: int, concurrency: int) -> tuple[float, list[float], int]:
    """``requests`` posts, ``concurrency`` at once: (wall seconds, latencies, failures)."""
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: post(url, body), range(concurrency * 2)))  # warm every path
        started = time.perf_counter()
        results = list(pool.map(lambda _: post(url, body), range(requests)))
        wall = time.perf_counter() - started
    failures = sum(1 for status, _, _ in results if status != 200)
    return wall, [seconds for _, _, seconds in results], failures


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def throughput(fleet: Fleet, requests: int, concurrency: int) -> None:
    plan = {"duration_s": 120, "plan_only": True}
    classes = [{"name": f"gb{size}", "simulate_gb": size, "replicas": 2} for size in SIZES]
    print(
        f"\n2. plan-only requests/s through Serve over HTTP, an 8/16/24 GB fleet (2 replicas a class) behind N routers "
        f"({requests} requests, {concurrency} at once, {os.cpu_count()} CPU cores)\n   {CAVEAT}"
    )
    for routers in (1, 2, 4):
        url = fleet.deploy("bench", {"classes": classes, "plan_only": True, "ingress_replicas": routers})
        wall, latencies, failures = load(url, plan, requests, concurrency)
        p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
        print(
            f"  {routers} router(s): {requests / wall:7.1f} requests/s   p50 {p50:6.1f} ms   p99 {p99:7.1f} ms"
            f"   failures {failures}"
        )
        fleet.delete("bench")
    print(f"\n3. latency under a bounded load: {requests} plan-only requests, {concurrency} at once, 2 routers")
    url = fleet.deploy("bench", {"classes": classes, "plan_only": True, "ingress_replicas": 2})
    wall, latencies, failures = load(url, plan, requests, concurrency)
    print(
        f"  p50 {percentile(latencies, 0.5) * 1000:.1f} ms   p99 {percentile(latencies, 0.99) * 1000:.1f} ms   "
        f"max {max(latencies) * 1000:.1f} ms   {requests / wall:.1f} requests/s   failures {failures} of {requests}"
    )
    fleet.delete("bench")


def reroute(fleet: Fleet, stand_in_s: float, kills: int) -> None:
    print(
        f"\n4. a replica killed mid-request: time from the kill to the rerouted answer ({kills} kills; each "
        f"phase a stand-in of {stand_in_s:g} s, so a request holds a replica {2 * stand_in_s:g} s)"
    )
    url = fleet.deploy("reroute", {"simulate": ["8", "16"], "stand_in_s": stand_in_s, "ingress_replicas": 2})
    tier4 = fleet.handle("reroute", "tier4")
    for kill in range(kills):
        victim = _until(lambda: _describe(tier4), "a running 8 GB replica")
        out: dict[str, Any] = {}

        def request(out: dict[str, Any] = out) -> None:
            out.update(answer=post(url, {"duration_s": 20}), at=time.monotonic())

        thread = threading.Thread(target=request)
        thread.start()
        _until(lambda: (_describe(tier4) or {}).get("generating"), "the request to run on the 8 GB replica")
        killed_at = time.monotonic()
        fleet.ray.kill(fleet.ray.get_actor(victim["actor"], namespace="serve"), no_restart=False)
        thread.join(300)
        status, body, _ = out["answer"]
        after = out["at"] - killed_at
        work = body.get("seconds", 0.0)
        path = " → ".join(a["class"] + (" (died)" if "error" in a else "") for a in body.get("attempts", []))
        print(
            f"  kill {kill + 1}: HTTP {status} {after:6.2f} s after the kill, of which {work:5.2f} s the rerouted "
            f"stand-in's own work: {after - work:5.2f} s to reroute   [{path}]"
        )
        _until(lambda: _running(fleet, "reroute", "tier4"), "Serve to replace the killed replica")
    fleet.delete("reroute")


def stages(fleet: Fleet, stand_in_s: float, requests: int, concurrency: int) -> None:
    body = {"duration_s": 60}
    print(
        f"\n5. two stages against one: {requests} requests, {concurrency} at once; each phase a STAND-IN that "
        f"waits {stand_in_s:g} s (no model runs; it uses no CPU, as GPU work would not)"
    )
    layouts = [
        ("one card, one stage (both phases)", {"classes": [{"name": "unlimited", "simulate_gb": "24"}]}, False),
        (
            "one card, two stages (LM + render at 0.5 GPU each)",
            {"classes": [{"name": "unlimited", "simulate_gb": "24"}], "stages": True, "stage_gpus": 0.5},
            True,
        ),
        (
            "two cards, one stage (2 replicas)",
            {"classes": [{"name": "unlimited", "simulate_gb": "24", "replicas": 2}]},
            False,
        ),
        (
            "two cards, two stages (LM card + render card)",
            {"classes": [{"name": "unlimited", "simulate_gb": "24"}], "stages": True, "stage_gpus": 1.0},
            True,
        ),
    ]
    per_minute: list[float] = []
    for label, args, staged in layouts:
        url = fleet.deploy("stages", {**args, "stand_in_s": stand_in_s, "ingress_replicas": 1})
        with ThreadPoolExecutor(concurrency) as pool:
            started = time.perf_counter()
            results = list(pool.map(lambda _, url=url: post(url, body), range(requests)))
            wall = time.perf_counter() - started
        failures = sum(1 for status, _, _ in results if status != 200)
        lengths = _stage_lengths(fleet, "stages", ["unlimited-lm", "unlimited-render"] if staged else ["unlimited"])
        rate = requests / wall * 60
        per_minute.append(rate)
        measured = ", ".join(f"{name} {statistics.mean(values):.3f} s" for name, values in lengths.items())
        print(f"  {label:<52} {rate:7.1f} requests/min   failures {failures}   measured stage length: {measured}")
        fleet.delete("stages")
    print(
        f"  two stages / one stage on one card: {per_minute[1] / per_minute[0]:.2f}×   "
        f"on two cards: {per_minute[3] / per_minute[2]:.2f}×"
    )


def _stage_lengths(fleet: Fleet, app_name: str, deployments: list[str]) -> dict[str, list[float]]:
    lengths: dict[str, list[float]] = {}
    for deployment in deployments:
        seen: dict[str, list[dict[str, Any]]] = {}
        handle = fleet.handle(app_name, deployment)
        for _ in range(20):  # a handle call reaches one replica; ask until each has answered
            who = handle.describe.remote().result(timeout_s=60)["replica"]
            seen[who] = handle.history.remote().result(timeout_s=60)
        lengths[deployment] = [r["stopped"] - r["started"] for records in seen.values() for r in records]
    return lengths


def _describe(handle: Any) -> dict[str, Any] | None:
    try:
        return handle.describe.remote().result(timeout_s=5)
    except Exception:  # noqa: BLE001 - not running yet
        return None


def _running(fleet: Fleet, app_name: str, deployment: str) -> bool:
    status = fleet.serve.status().applications[app_name].deployments[deployment]
    return status.replica_states.get("RUNNING", 0) >= 1


def _until(condition: Callable[[], Any], what: str, bound_s: float = 300) -> Any:
    deadline = time.monotonic() + bound_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.1)
    return value


# --------------------------------------------------------------------------------------------- network
def network() -> None:
    print("\n6. what a local Ray 2.60 instance (as `fleet serve` starts it, Serve on 127.0.0.1) listens on (ss -ltnp)")
    for label, env in (
        ("as Ray configures it", {}),
        ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0", {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}),
    ):
        result = subprocess.run(
            [sys.executable, __file__, "--network-probe"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **env},
        )
        print(f"  {label}:")
        print("\n".join("    " + line for line in result.stdout.splitlines()) or result.stderr[-2000:])


def network_probe() -> None:
    """Run in a subprocess: start the instance, list its listening sockets, probe each one."""
    from acestep_core.runtime.fleet.scan import connect

    connect(simulate=["8"], log_to_driver=False)
    import ray
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    def hello(request: Any) -> str:
        return "hi"

    serve.run(hello.bind(), name="probe", route_prefix="/probe")
    print(f"node IP {ray.util.get_node_ip_address()}, GCS {ray.get_runtime_context().gcs_address}")
    mine = _descendants(os.getpid())
    rows = []
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
        found = re.findall(r'\("([^"]+)",pid=(\d+)', line)
        if not found or int(found[0][1]) not in mine:
            continue
        local = line.split()[3]
        host, port = local.rsplit(":", 1)
        process = found[0][0] if int(found[0][1]) != os.getpid() else "driver (this process)"
        scope = (
            "loopback"
            if "127.0.0.1" in host or host == "[::1]"
            else "ALL interfaces"
            if host in ("*", "0.0.0.0", "[::]")
            else f"host IP {host}"
        )
        rows.append((scope, local, process, _probe(int(port))))
    for scope, local, process, answer in sorted(rows):
        print(f"{scope:<22} {local:<28} {process:<22} {answer}")
    serve.shutdown()
    ray.shutdown()


def _descendants(pid: int) -> set[int]:
    table = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in table.splitlines():
        child, parent = (int(x) for x in line.split())
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(children.get(current, []))
    return found


def _probe(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
            return f"HTTP GET /metrics without a token: {response.status}"
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code} without a token"
    except http.client.HTTPException:
        return "not HTTP (gRPC)"
    except OSError as error:
        return type(getattr(error, "reason", error)).__name__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200, help="calls per routing median (default: 200)")
    parser.add_argument("--requests", type=int, default=500, help="HTTP requests per load (default: 500)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight at once (default: 16)")
    parser.add_argument("--stand-in", type=float, default=0.5, help="seconds each stand-in phase waits (default: 0.5)")
    parser.add_argument("--stage-requests", type=int, default=40, help="requests per stage layout (default: 40)")
    parser.add_argument("--kills", type=int, default=3, help="replica kills to time (default: 3)")
    parser.add_argument("--skip-serve", action="store_true", help="only the routing overhead (no Ray)")
    parser.add_argument("--network", action="store_true", help="also list what Ray's processes listen on")
    parser.add_argument("--only", choices=("throughput", "reroute", "stages", "network"), help="one part only")
    parser.add_argument("--network-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.network_probe:
        network_probe()
        return 0
    if args.only in (None, "throughput"):
        routing_overhead(args.repeats)
    if args.skip_serve:
        return 0
    if args.only == "network":
        network()
        return 0
    fleet = Fleet(gpus=8)  # 6 for the throughput fleet; the others need fewer
    try:
        if args.only in (None, "throughput"):
            throughput(fleet, args.requests, args.concurrency)
        if args.only in (None, "reroute"):
            reroute(fleet, args.stand_in, args.kills)
        if args.only in (None, "stages"):
            stages(fleet, args.stand_in, args.stage_requests, max(4, min(args.concurrency, 8)))
    finally:
        fleet.close()
    if args.network:
        network()
    return 0


if __name__ == "__main__":
    sys.exit(main())
