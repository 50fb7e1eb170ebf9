"""The fleet's costs, printed (not asserted):

1. routing overhead per request: the router's decision (``route()`` over an 8/16/24 GB fleet, no
   generation) against one direct ``resolve()`` of the same request — medians of ``--repeats`` calls;
2. requests per second through the Serve app over HTTP with plan-only replicas (they resolve, run no
   model) at 1, 2 and 4 replicas, on a local Ray instance with simulated 24 GB cards.

    python benchmarks/bench_fleet.py [--repeats 200] [--requests 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from acestep_core import DetectOptions, GenerationRequest, MemoryReading, resolve
from acestep_core.routing import FleetClass, route
from acestep_core.vocabulary import MIB

SIZES = ("8", "16", "24")
REQUEST = GenerationRequest(duration_s=120, batch_size=1)


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
    one_class = median_ms(lambda: route(REQUEST, classes[:1]), repeats)
    print(f"routing overhead (median of {repeats}, {REQUEST.duration_s:g} s × {REQUEST.batch_size}, no generation)")
    print(f"  direct resolve() (cached detection)      {direct:8.3f} ms")
    print(f"  route() over 1 class                     {one_class:8.3f} ms   {one_class / direct:5.2f}× resolve")
    print(f"  route() over {len(classes)} classes (8/16/24 GB)     {routed:8.3f} ms   {routed / direct:5.2f}× resolve")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str) -> float:
    data = json.dumps({"duration_s": REQUEST.duration_s, "batch_size": REQUEST.batch_size}).encode()
    started = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, data=data, method="POST"), timeout=60) as response:
        body = json.loads(response.read())
    assert body["plan_only"] and body["route"]["target"] == "unlimited", body
    return time.perf_counter() - started


def throughput(requests: int, concurrency: int) -> None:
    import ray
    from ray import serve

    from acestep_core.runtime.fleet.serve import ServeOptions, build_app, simulated_specs

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    port = free_port()
    ray.init(
        num_cpus=os.cpu_count(),
        num_gpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="ERROR",
        log_to_driver=False,
        object_store_memory=100 * MIB,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}/"
    print(
        f"\nrequests/s through Serve over HTTP, plan-only 24 GB replicas ({requests} requests, {concurrency} at once,"
        f" {os.cpu_count()} CPU cores)"
    )
    try:
        for replicas in (1, 2, 4):
            [spec] = simulated_specs(["24"])
            spec = type(spec)(spec.name, spec.tier, spec.reading, replicas, spec.env)
            serve.run(
                build_app([spec], ServeOptions(plan_only=True, max_ongoing_requests=16)), name="bench", route_prefix="/"
            )
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda _: post(url), range(concurrency * 2)))
                started = time.perf_counter()
                latencies = list(pool.map(lambda _: post(url), range(requests)))
                wall = time.perf_counter() - started
            print(
                f"  {replicas} replica(s): {requests / wall:7.1f} requests/s   median latency "
                f"{statistics.median(latencies) * 1000:6.1f} ms"
            )
            serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200, help="calls per routing median (default: 200)")
    parser.add_argument("--requests", type=int, default=200, help="HTTP requests per replica count (default: 200)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default: 8)")
    parser.add_argument("--skip-serve", action="store_true", help="only the routing overhead (no Ray)")
    args = parser.parse_args(argv)
    routing_overhead(args.repeats)
    if not args.skip_serve:
        throughput(args.requests, args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())
