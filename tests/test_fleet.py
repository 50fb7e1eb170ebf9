"""The fleet on a local Ray instance (CPU only): a simulated heterogeneous fleet of 8, 16 and 24 GB
replicas (``MAX_CUDA_VRAM`` per deployment through ``runtime_env``) running the reference pipeline with
the tiny models, the scan, and the failure behaviour. One Ray instance for the whole module."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
pytest.importorskip("torch")

from acestep_core.cli import main  # noqa: E402
from acestep_core.runtime.fleet.scan import scan  # noqa: E402
from acestep_core.runtime.fleet.serve import (  # noqa: E402
    ClassSpec,
    ServeOptions,
    build_app,
    classes_from_scan,
    simulated_specs,
)

pytestmark = pytest.mark.slow

LOGICAL_GPUS = ["8", "16", "24", "8", "24"]
"""Slots of the local instance: the scan sees these five; the apps below hold them one each."""
BOUND_S = 240.0
"""No wait in this module is longer: a hung replica fails the test instead of hanging CI."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet-clips")


@pytest.fixture(scope="module")
def cluster() -> Any:
    port = free_port()
    ray.init(
        num_cpus=2,
        num_gpus=len(LOGICAL_GPUS),
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="WARNING",
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def fleet_scan(cluster: str) -> Any:
    return scan(simulate=LOGICAL_GPUS, timeout_s=BOUND_S)


def deploy(name: str, specs: list[ClassSpec], *, wait: bool = True, out_dir: Path | None = None, **options: Any) -> str:
    serve.run_many(
        [
            serve.RunTarget(
                build_app(specs, ServeOptions(torch_threads=1, out_dir=str(out_dir) if out_dir else None, **options)),
                name=name,
                route_prefix=f"/{name}",
            )
        ],
        wait_for_applications_running=wait,
    )
    return f"/{name}"


@pytest.fixture(scope="module")
def mixed(cluster: str, clips_dir: Path) -> str:
    """8, 16 and 24 GB classes, one replica each, running the pipeline."""
    return cluster + deploy("mixed", simulated_specs(["8", "16", "24"]), out_dir=clips_dir)


@pytest.fixture(scope="module")
def only_8(cluster: str) -> str:
    return cluster + deploy("only8", simulated_specs(["8"]))


def post(url: str, body: Any, *, timeout: float = BOUND_S) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --------------------------------------------------------------------------------------------- scan
def test_scan_lists_every_simulated_gpu_with_its_tier(fleet_scan: Any) -> None:
    gpus = fleet_scan.gpus
    assert [d.simulated_gb for d in gpus] == LOGICAL_GPUS
    assert [d.tier for d in gpus] == ["tier4", "tier6", "unlimited", "tier4", "unlimited"]
    assert not fleet_scan.failed
    assert sorted(d.cuda_visible_devices for d in gpus) == ["0", "1", "2", "3", "4"], "one Ray GPU per task"
    assert all(d.reading.device.total_bytes == int(float(d.simulated_gb) * 2**30) for d in gpus)
    assert gpus[0].limits["max_duration_with_lm_s"] == 240 and gpus[2].limits["max_batch_with_lm"] == 8
    classes = classes_from_scan(fleet_scan)
    assert [(c.name, c.replicas, dict(c.env)) for c in classes] == [
        ("tier4", 2, {"MAX_CUDA_VRAM": "8"}),
        ("tier6", 1, {"MAX_CUDA_VRAM": "16"}),
        ("unlimited", 2, {"MAX_CUDA_VRAM": "24"}),
    ]


def test_fleet_scan_json_on_the_local_instance(cluster: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["fleet", "scan", "--simulate", ",".join(LOGICAL_GPUS), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["gpus"] == len(LOGICAL_GPUS) and report["failed"] == 0
    assert [(d["simulated_gb"], d["tier"], d["total_gib"]) for d in report["devices"]] == [
        ("8", "tier4", 8.0),
        ("16", "tier6", 16.0),
        ("24", "unlimited", 24.0),
        ("8", "tier4", 8.0),
        ("24", "unlimited", 24.0),
    ]


def test_a_node_whose_detection_fails_is_listed_with_its_error(cluster: str) -> None:
    result = scan(simulate=LOGICAL_GPUS, tiers="no-such-table", timeout_s=BOUND_S)
    assert len(result.devices) == len(LOGICAL_GPUS) and len(result.failed) == len(LOGICAL_GPUS)
    assert all("no tier table named 'no-such-table'" in d.error for d in result.devices)


@ray.remote(num_gpus=1, num_cpus=0)
class GpuHolder:
    def gpu(self) -> str:
        return str(ray.get_gpu_ids()[0])


def test_a_gpu_held_elsewhere_is_reported_not_scanned_twice_through_another_card(cluster: str) -> None:
    """Four of five GPUs are free: a task per GPU must not finish on a card and hand it to the fifth."""
    holder = GpuHolder.remote()  # type: ignore[attr-defined]
    held = ray.get(holder.gpu.remote(), timeout=BOUND_S)
    try:
        result = scan(simulate=LOGICAL_GPUS, timeout_s=20)  # the held GPU's slot waits all of it
    finally:
        ray.kill(holder)
    answered = [d.cuda_visible_devices for d in result.gpus if not d.error]
    assert len(answered) == 4 and len(set(answered)) == 4 and held not in answered
    [busy] = result.failed
    assert "held by another Ray task or actor" in (busy.error or "")


def test_gpu_less_nodes_are_cpu_workers_and_an_unreachable_node_is_listed_with_its_error(
    cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    alive = [n for n in ray.nodes() if n["Alive"]]
    without_gpus = [dict(n, Resources={k: v for k, v in n["Resources"].items() if k != "GPU"}) for n in alive]
    ghost = dict(without_gpus[0], NodeID="ab" * 28, NodeManagerAddress="127.0.0.9")
    monkeypatch.setattr(ray, "nodes", lambda: [*without_gpus, ghost])
    result = scan(timeout_s=20)
    by_node = {d.node_id: d for d in result.devices}
    worker, missing = by_node[alive[0]["NodeID"]], by_node[ghost["NodeID"]]
    assert worker.kind == "cpu" and worker.error is None and worker.reading.device.backend == "cpu"
    assert worker.tier == "tier1", "a CPU gets the first tier"
    assert missing.kind == "cpu" and missing.error and missing.reading is None
    assert len(result.failed) == 1


# --------------------------------------------------------------------------------------------- routing
def test_600_s_by_8_reaches_the_24_gb_class_unclamped(mixed: str) -> None:
    status, body = post(mixed, {"duration_s": 600, "batch_size": 8, "plan_only": True})
    assert status == 200, body
    assert body["route"]["target"] == "unlimited" and not body["route"]["clamped"]
    assert body["replica"]["tier"] == "unlimited" and body["replica"]["total_gib"] == 24.0
    adjusted = body["resolution"]["adjusted"]
    assert (adjusted["duration_s"], adjusted["batch_size"]) == (600, 8), "the replica's own resolution agrees"
    classes = {c["name"]: c for c in body["route"]["classes"]}
    assert classes["tier4"]["duration_s"] == 240 and classes["tier6"]["duration_s"] == 480


def test_120_s_by_1_reaches_the_8_gb_class_and_runs_the_pipeline(mixed: str, clips_dir: Path) -> None:
    status, body = post(mixed, {"duration_s": 120, "batch_size": 1, "steps": 1, "audio": True})
    assert status == 200, body
    assert body["route"]["target"] == "tier4" and body["replica"]["tier"] == "tier4" and not body["retried"]
    assert body["replica"]["cuda_visible_devices"] is not None, "the replica holds one Ray GPU"
    [clip] = body["clips"]
    assert clip["duration_s"] == 120 and clip["samples"] == 120 * 48000
    assert [p["name"] for p in body["phases"]] == ["lm", "text_encoder", "dit", "vae"]
    path = Path(clip["path"])
    assert path.parent.parent == clips_dir, "one folder per request under the replicas' out_dir"
    with wave.open(str(path)) as wav:
        assert wav.getnframes() == 120 * 48000
    assert len(clip["wav_base64"]) > 120 * 48000 * 4


def test_a_replica_killed_mid_request_is_retried_once_elsewhere(mixed: str) -> None:
    handle = serve.get_deployment_handle("tier4", app_name="mixed")
    victim = handle.describe.remote().result(timeout_s=BOUND_S)
    answer: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: answer.update(zip(("status", "body"), post(mixed, {"duration_s": 20, "steps": 1}), strict=True))
    )
    thread.start()
    deadline = time.monotonic() + BOUND_S
    while not handle.describe.remote().result(timeout_s=BOUND_S)["generating"]:
        assert time.monotonic() < deadline and thread.is_alive(), "the request never started on the 8 GB replica"
        time.sleep(0.2)
    ray.kill(ray.get_actor(victim["actor"], namespace="serve"), no_restart=False)
    thread.join(BOUND_S)
    assert answer["status"] == 200, answer
    body = answer["body"]
    assert body["retried"] and len(body["attempts"]) == 2
    first, second = body["attempts"]
    assert first["class"] == "tier4" and "died" in first["error"]
    assert second["ok"] and second["class"] == "tier6" and second["replica"] != victim["replica"]
    assert body["replica"]["tier"] == "tier6" and len(body["clips"]) == 1


# --------------------------------------------------------------------------------------------- clamps and errors
def test_an_8_gb_only_fleet_clamps_600_s_to_240_s_and_says_so(only_8: str) -> None:
    status, body = post(only_8, {"duration_s": 600, "plan_only": True})
    assert status == 200, body
    assert body["route"]["clamped"] and body["resolution"]["adjusted"]["duration_s"] == 240
    assert any("600 s exceeds the 240 s limit" in w for w in body["route"]["clamps"])
    assert any("600 s exceeds the 240 s limit" in w for w in body["resolution"]["warnings"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "the body is not JSON"),
        ([1, 2], "must be a JSON object"),
        ({"duration_s": -5}, "duration_s must be a positive, finite number"),
        ({"batch_size": "two"}, "batch_size must be an integer"),
        ({"lm": "maybe"}, "lm must be 'auto', 'on' or 'off'"),
        ({"length": 30}, "unknown field(s) length"),
        ({"steps": 0}, "steps must be between 1"),
    ],
)
def test_bad_bodies_get_a_4xx_with_the_validators_message(only_8: str, body: Any, message: str) -> None:
    status, answer = post(only_8, body)
    assert status == 400 and message in answer["error"]
    assert "Traceback" not in answer["error"]


def test_a_replica_placed_on_the_wrong_card_refuses_and_requests_get_503(cluster: str) -> None:
    [spec] = simulated_specs(["24"])
    wrong = ClassSpec(spec.name, spec.tier, spec.reading, env={"MAX_CUDA_VRAM": "8"})
    url = cluster + deploy("wrong", [wrong], wait=False, constructor_retries=1)
    deadline = time.monotonic() + BOUND_S
    while serve.status().applications["wrong"].deployments.get("unlimited") is None or (
        serve.status().applications["wrong"].deployments["unlimited"].status.value != "DEPLOY_FAILED"
    ):
        assert time.monotonic() < deadline, serve.status().applications["wrong"]
        time.sleep(0.5)
    status, body = post(url, {"duration_s": 30})
    assert status == 503
    assert "no replica is running" in body["error"] and "refuses to start" in body["error"]
    assert "Tier 4 (tier4), not unlimited" in body["error"]


def test_fleet_serve_command_scans_deploys_and_routes(cluster: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Last in the module: it frees the GPUs the apps above hold, and the command shuts Serve down."""
    for name in ("mixed", "only8", "wrong"):
        serve.delete(name)
    port = cluster.rsplit(":", 1)[1]
    argv = ["fleet", "serve", "--simulate", "8,24", "--plan-only", "--port", port, "--for", "12", "--json"]
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(main(argv)))
    thread.start()
    deadline = time.monotonic() + BOUND_S
    while True:
        try:
            with urllib.request.urlopen(cluster + "/", timeout=10) as response:
                fleet = json.loads(response.read())
            if all(c["running"] for c in fleet["classes"]):
                break
        except (OSError, json.JSONDecodeError):  # not up yet: refused, reset or timed out
            pass
        assert time.monotonic() < deadline and thread.is_alive(), "fleet serve never came up"
        time.sleep(0.5)
    assert [(c["name"], c["replicas"]) for c in fleet["classes"]] == [("tier4", 1), ("unlimited", 1)]
    assert post(cluster + "/", {"duration_s": 600, "batch_size": 8})[1]["route"]["target"] == "unlimited"
    assert post(cluster + "/", {"duration_s": 120})[1]["replica"]["tier"] == "tier4"
    thread.join(BOUND_S)
    assert exit_code == [0]
    summary, _ = json.JSONDecoder().raw_decode(capsys.readouterr().out)
    assert summary["url"] == f"{cluster}/" and [c["name"] for c in summary["classes"]] == ["tier4", "unlimited"]
