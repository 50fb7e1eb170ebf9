"""The fleet on one local Ray instance (CPU only, shared by the whole module): simulated 8, 16 and 24 GB
replicas (``MAX_CUDA_VRAM`` per deployment through ``runtime_env``) running the reference pipeline with
the tiny models, or labelled stand-in stages where only the scheduling is under test.

Nothing here waits by sleeping: every wait polls a condition with a generous deadline (``BOUND_S``), and
what is asserted is order and causality (who started after whom stopped), not speed — except the one
figure the issue sets, a killed replica's request answered within 5 s of the kill, which is measured
without the rerouted work's own seconds."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
pytest.importorskip("torch")

from acestep_core.cli import main  # noqa: E402
from acestep_core.runtime.fleet.app import app  # noqa: E402
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
"""The slots the scan tests read (the first five of the instance's GPUs)."""
INSTANCE_GPUS = 12
"""Logical GPUs of the local instance: the scan's five, then the applications below, one or a share each."""
CONSOLE_SCRIPT = Path(sys.executable).with_name("acestep-core")
BOUND_S = 240.0
"""No wait in this module is longer: a hung replica fails the test instead of hanging CI."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], what: str, *, bound_s: float = BOUND_S) -> Any:
    """Poll ``condition`` until it returns something true; fail naming ``what`` after ``bound_s``."""
    deadline = time.monotonic() + bound_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up after {bound_s:g} s waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fleet-clips")


@pytest.fixture(scope="module")
def cluster(session_home: str) -> Iterator[str]:
    """A local instance started in the test run's HOME, like every child process the tests start: Ray
    turns token authentication on when ``~/.ray/auth_token`` exists, and a cluster that found the
    user's token would refuse the children, which cannot see it."""
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("HOME", session_home)
        yield from _local_instance()


def _local_instance() -> Iterator[str]:
    port = free_port()
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=INSTANCE_GPUS,
        object_store_memory=100 * 2**20,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def gcs(cluster: str) -> str:
    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="module")
def fleet_scan(cluster: str) -> Any:
    return scan(simulate=LOGICAL_GPUS, timeout_s=BOUND_S)


def deploy(name: str, target: Any, *, wait: bool = True) -> str:
    serve.run_many([serve.RunTarget(target, name=name, route_prefix=f"/{name}")], wait_for_applications_running=wait)
    return f"/{name}"


def fleet_app(name: str, args: dict[str, Any], *, wait: bool = True) -> str:
    return deploy(name, app({"torch_threads": 1, "ingress_replicas": 1, **args}), wait=wait)


def post(url: str, body: Any, *, timeout: float = BOUND_S) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``call`` in a thread; its result (or exception) and the moment it returned land in the dict."""
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["result"] = call()
        except Exception as error:  # noqa: BLE001 - reported to the test
            out["error"] = error
        out["at"] = time.monotonic()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def replica(app_name: str, deployment: str) -> Any:
    return serve.get_deployment_handle(deployment, app_name=app_name)


def describe(app_name: str, deployment: str) -> dict[str, Any]:
    return replica(app_name, deployment).describe.remote().result(timeout_s=BOUND_S)


def history(app_name: str, deployment: str) -> list[dict[str, Any]]:
    return replica(app_name, deployment).history.remote().result(timeout_s=BOUND_S)


def assert_never_overlapping(records: list[dict[str, Any]]) -> None:
    """Each generation on a replica started after the one before it had stopped (worker-thread times)."""
    ordered = sorted(records, key=lambda r: r["started"])
    for before, after in itertools.pairwise(ordered):
        assert before["stopped"] <= after["started"], f"two generations at once on one replica: {before} {after}"


# --------------------------------------------------------------------------------------------- scan
def test_scan_lists_every_simulated_gpu_with_its_tier(fleet_scan: Any) -> None:
    gpus = fleet_scan.gpus
    assert [d.simulated_gb for d in gpus] == LOGICAL_GPUS
    assert [d.tier for d in gpus] == ["tier4", "tier6", "unlimited", "tier4", "unlimited"]
    assert not fleet_scan.failed
    assert len({d.cuda_visible_devices for d in gpus}) == 5, "one Ray GPU per task"
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
    """Four GPUs are left free for five slots: a task per GPU must not finish on a card and hand it on."""
    holders = [GpuHolder.remote() for _ in range(INSTANCE_GPUS - 4)]  # type: ignore[attr-defined]
    held = {ray.get(h.gpu.remote(), timeout=BOUND_S) for h in holders}
    try:
        result = scan(simulate=LOGICAL_GPUS, timeout_s=20)  # the fifth slot waits all of it
    finally:
        for holder in holders:
            ray.kill(holder)
    answered = [d.cuda_visible_devices for d in result.gpus if not d.error]
    assert len(answered) == 4 and len(set(answered)) == 4 and not held & set(answered)
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


# --------------------------------------------------------------------------------------------- a mixed fleet
@pytest.fixture(scope="class")
def mixed(cluster: str, clips_dir: Path) -> Iterator[str]:
    """8, 16 and 24 GB classes, one replica each, running the pipeline; two routers."""
    args = {"simulate": ["8", "16", "24"], "out_dir": str(clips_dir), "ingress_replicas": 2}
    yield cluster + fleet_app("mixed", args)
    serve.delete("mixed")


class TestMixedFleet:
    def test_600_s_by_8_reaches_the_24_gb_class_unclamped(self, mixed: str) -> None:
        status, body = post(mixed, {"duration_s": 600, "batch_size": 8, "plan_only": True})
        assert status == 200, body
        assert body["route"]["target"] == "unlimited" and not body["route"]["clamped"]
        assert body["replica"]["tier"] == "unlimited" and body["replica"]["total_gib"] == 24.0
        adjusted = body["resolution"]["adjusted"]
        assert (adjusted["duration_s"], adjusted["batch_size"]) == (600, 8), "the replica's own resolution agrees"
        classes = {c["name"]: c for c in body["route"]["classes"]}
        assert classes["tier4"]["duration_s"] == 240 and classes["tier6"]["duration_s"] == 480

    def test_20_s_by_1_reaches_the_8_gb_class_and_runs_the_pipeline(self, mixed: str, clips_dir: Path) -> None:
        status, body = post(mixed, {"duration_s": 20, "batch_size": 1, "steps": 1, "audio": True})
        assert status == 200, body
        assert body["route"]["target"] == "tier4" and body["replica"]["tier"] == "tier4" and not body["retried"]
        assert body["replica"]["cuda_visible_devices"] is not None, "the replica holds one Ray GPU"
        [clip] = body["clips"]
        assert clip["duration_s"] == 20 and clip["samples"] == 20 * 48000
        assert [p["name"] for p in body["phases"]] == ["lm", "text_encoder", "dit", "vae"]
        path = Path(clip["path"])
        assert path.parent.parent == clips_dir, "one folder per request under the replicas' out_dir"
        with wave.open(str(path)) as wav:
            assert wav.getnframes() == 20 * 48000
        assert len(clip["wav_base64"]) > 20 * 48000 * 4

    @pytest.mark.parametrize(
        ("body", "status", "message"),
        [
            (b"x" * (64 * 1024 + 1), 413, "the limit is 65,536"),
            (b"", 400, "the body is empty"),
            (b"{}", 400, "missing required field(s) duration_s"),
            (b'{"duration_s": 1e309}', 400, "duration_s must be a finite number"),
            (b'{"duration_s": 1' + b"0" * 4400 + b"}", 400, "an integer of 4,401 digits"),
            (b"[" * 30_000 + b"]" * 30_000, 400, "nests 30000 levels deep"),
            (b'{"duration_s": 30, "seed": 18446744073709551616}', 400, "integers are limited"),
            (json.dumps({"duration_s": 30, "caption": "a" * 60_000}).encode(), 400, "caption is 60,000 tokens"),
            (b'{"duration_s": 30, "length": 30}', 400, "unknown field(s) length"),
            (b'{"duration_s": 30, "steps": 0}', 400, "steps must be between 1"),
        ],
        ids=[
            "10 MB-ish body",
            "empty",
            "{}",
            "1e309",
            "4,401 digits",
            "nested",
            "seed 2**64",
            "caption",
            "unknown",
            "steps",
        ],
    )
    def test_each_hostile_body_gets_its_4xx_with_one_message(
        self, mixed: str, body: bytes, status: int, message: str
    ) -> None:
        answer_status, answer = post(mixed, body, timeout=60)
        assert answer_status == status and message in answer["error"], answer
        assert set(answer) == {"error"} and "Traceback" not in answer["error"]

    def test_a_body_streamed_without_a_length_is_cut_at_the_limit(self, mixed: str) -> None:
        """Chunked transfer: no Content-Length to refuse up front; the router stops reading at the limit."""
        host, port = mixed.split("//")[1].split("/")[0].split(":")
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(b"POST /mixed HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            chunk = b"x" * 8192
            with contextlib.suppress(OSError):  # the server may answer and close before the last chunk
                for _ in range(16):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sock.sendall(b"0\r\n\r\n")
            reply = b""
            while data := sock.recv(65536):
                reply += data
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert b"the limit" in reply

    def test_get_lists_classes_limits_and_queues(self, mixed: str) -> None:
        with urllib.request.urlopen(mixed, timeout=60) as response:
            fleet = json.loads(response.read())
        assert [c["name"] for c in fleet["classes"]] == ["tier4", "tier6", "unlimited"]
        assert fleet["limits"]["max_caption_tokens"] == 256 and fleet["limits"]["max_prompt_tokens"] == 1000
        assert all(c["running"] == 1 and c["in_flight"] == 0 for c in fleet["classes"])


# --------------------------------------------------------------------------------------------- one replica
@pytest.fixture(scope="class")
def only_8(cluster: str, clips_dir: Path) -> Iterator[str]:
    yield cluster + fleet_app("only8", {"simulate": ["8"], "out_dir": str(clips_dir / "only8")})
    serve.delete("only8")


class TestOneReplica:
    def test_an_8_gb_only_fleet_clamps_600_s_to_240_s_and_says_so(self, only_8: str) -> None:
        status, body = post(only_8, {"duration_s": 600, "plan_only": True})
        assert status == 200, body
        assert body["route"]["clamped"] and body["resolution"]["adjusted"]["duration_s"] == 240
        assert any("600 s exceeds the 240 s limit" in w for w in body["route"]["clamps"])
        assert any("600 s exceeds the 240 s limit" in w for w in body["resolution"]["warnings"])

    def test_a_client_disconnect_cancels_the_generation_and_frees_the_replica_only_when_it_stopped(
        self, only_8: str, clips_dir: Path
    ) -> None:
        """A long generation whose client goes away is cancelled down to the pipeline's phase loop (the LM's
        token loop raises GenerationCancelledError); a second request on the same, only replica starts after
        the first has stopped, never beside it."""
        before = len(history("only8", "tier4"))
        host, port = only_8.split("//")[1].split("/")[0].split(":")
        body = json.dumps({"duration_s": 240, "steps": 8}).encode()
        sock = socket.create_connection((host, int(port)), timeout=60)
        sock.sendall(
            b"POST /only8 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        wait_until(lambda: describe("only8", "tier4")["generating"], "the long generation to start")
        sock.close()
        second = post(only_8, {"duration_s": 10, "steps": 1})
        assert second[0] == 200, second
        records = history("only8", "tier4")[before:]
        cancelled, done = records
        assert cancelled["outcome"] == "cancelled" and cancelled["raised"] == "GenerationCancelledError", cancelled
        assert done["outcome"] == "done" and done["request_id"] == second[1]["request_id"]
        assert cancelled["stopped"] <= done["started"], "the second generation began before the first had stopped"
        assert_never_overlapping(history("only8", "tier4"))
        assert not Path(cancelled["out_dir"]).exists(), "the cancelled request's folder is gone"
        assert Path(second[1]["clips"][0]["path"]).is_file()


# --------------------------------------------------------------------------------------------- stand-in stages
STAND_IN_S = 1.5
"""Each stage of the scheduling tests waits this long instead of running models (a labelled stand-in)."""


@pytest.fixture(scope="class")
def standin(cluster: str, clips_dir: Path) -> Iterator[str]:
    args = {
        "simulate": ["8", "16"],
        "stand_in_s": STAND_IN_S,
        "ingress_replicas": 2,
        "out_dir": str(clips_dir / "standin"),
        "request_timeout_s": 120,
    }
    yield cluster + fleet_app("standin", args)
    serve.delete("standin")


class TestStandInStages:
    def test_a_busy_small_class_spills_the_next_request_over_to_the_idle_larger_one(self, standin: str) -> None:
        first, first_out = in_thread(lambda: post(standin, {"duration_s": 20}))
        wait_until(lambda: describe("standin", "tier4")["generating"], "the first request to run on the 8 GB class")
        tickets = replica("standin", "ledger").snapshot.remote().result(timeout_s=BOUND_S)["tickets"]
        assert [tuple(t) for t in tickets.values()] == [("tier4", 20.0)], (
            "the routers share the queue through the ledger"
        )
        status, body = post(standin, {"duration_s": 20})
        first.join(BOUND_S)
        assert status == 200 and first_out["result"][0] == 200, (body, first_out)
        assert first_out["result"][1]["route"]["target"] == "tier4"
        assert body["route"]["target"] == "tier6", body["route"]
        assert "the smaller tier4 would start it in" in body["route"]["reason"]
        verdicts = {v["name"]: v for v in body["route"]["classes"]}
        assert verdicts["tier4"]["wait_s"] > 0 and verdicts["tier6"]["wait_s"] == 0

    def test_a_killed_replicas_request_is_rerouted_and_answered_within_5_s_of_the_kill(self, standin: str) -> None:
        victim = describe("standin", "tier4")
        thread, out = in_thread(lambda: post(standin, {"duration_s": 20}))
        wait_until(lambda: describe("standin", "tier4")["generating"], "the request to run on the 8 GB replica")
        killed_at = time.monotonic()
        ray.kill(ray.get_actor(victim["actor"], namespace="serve"), no_restart=False)
        thread.join(BOUND_S)
        status, body = out["result"]
        assert status == 200, body
        first, second = body["attempts"]
        assert (
            first["class"] == "tier4" and "died mid-request" in first["error"] and first["replica"] == victim["replica"]
        )
        assert second["ok"] and second["class"] == "tier6" and body["retried"]
        rerouted_work_s = body["seconds"]
        assert body["stand_in"] and rerouted_work_s >= 2 * STAND_IN_S
        answered_after_s = out["at"] - killed_at - rerouted_work_s
        assert answered_after_s < 5.0, f"answered {answered_after_s:.2f} s after the kill, beyond the rerouted work"


@pytest.fixture(scope="class")
def slow(cluster: str, clips_dir: Path) -> Iterator[str]:
    """One class whose (stand-in) work outlasts the server's timeout."""
    args = {"simulate": ["8"], "stand_in_s": 60, "request_timeout_s": 2, "out_dir": str(clips_dir / "slow")}
    yield cluster + fleet_app("slow", args)
    serve.delete("slow")


class TestServerTimeout:
    def test_a_request_past_the_server_timeout_is_cancelled_its_output_removed_and_answered_504(
        self, slow: str
    ) -> None:
        """Two requests: the first runs and is cancelled at the 2 s timeout; the second, queued behind it on
        the only replica, gets the card only once the first has stopped, and is cancelled in turn."""
        before = len(history("slow", "tier4"))
        first, first_out = in_thread(lambda: post(slow, {"duration_s": 20}))
        wait_until(lambda: describe("slow", "tier4")["generating"], "the first request to run")
        second, second_out = in_thread(lambda: post(slow, {"duration_s": 20}))
        for thread in (first, second):
            thread.join(BOUND_S)
        for out in (first_out, second_out):
            status, body = out["result"]
            assert status == 504 and "did not finish within 2 s" in body["error"], body
        records = wait_until(
            lambda: (found := history("slow", "tier4")[before:]) and len(found) >= 2 and found[:2],
            "both cancelled generations to be recorded",
        )
        assert [r["outcome"] for r in records] == ["cancelled", "cancelled"], records
        assert all(r["stopped"] - r["started"] < 60 for r in records), "each stand-in stopped when cancelled"
        assert records[0]["stopped"] <= records[1]["started"], "the queued request got the card before it was free"
        assert all(r["removed_output"] and not Path(r["out_dir"]).exists() for r in records)
        assert_never_overlapping(history("slow", "tier4"))


# --------------------------------------------------------------------------------------------- two stages
@pytest.fixture(scope="class")
def staged(cluster: str, clips_dir: Path) -> Iterator[str]:
    args = {
        "classes": [{"name": "tier4", "simulate_gb": "8", "lm_replicas": 1, "render_replicas": 2}],
        "stages": True,
        "ingress_replicas": 1,
        "out_dir": str(clips_dir / "staged"),
    }
    yield cluster + fleet_app("staged", args)
    serve.delete("staged")


class TestTwoStages:
    def test_two_stages_run_the_pipeline_scale_apart_and_overlap(self, staged: str) -> None:
        deployments = serve.status().applications["staged"].deployments
        running = {name: deployments[name].replica_states.get("RUNNING", 0) for name in ("tier4-lm", "tier4-render")}
        assert running == {"tier4-lm": 1, "tier4-render": 2}, "each stage has its own replicas"
        runs = [in_thread(lambda: post(staged, {"duration_s": 10, "steps": 1})) for _ in range(2)]
        for thread, _ in runs:
            thread.join(BOUND_S)
        bodies = [out["result"][1] for _, out in runs]
        assert all(out["result"][0] == 200 for _, out in runs), bodies
        for body in bodies:
            assert [p["name"] for p in body["phases"]] == ["lm", "text_encoder", "dit", "vae"]
            assert body["stages"]["lm"]["role"] == "lm" and body["stages"]["render"]["role"] == "render"
            assert Path(body["clips"][0]["path"]).is_file()
        lm = sorted(history("staged", "tier4-lm"), key=lambda r: r["started"])[-2:]
        assert_never_overlapping(lm)
        renders = {r["request_id"]: r for r in _all_histories("staged", "tier4-render", 2)}
        first_render = renders[lm[0]["request_id"]]
        assert lm[1]["started"] < first_render["stopped"], "the second LM ran while the first render ran"


def _all_histories(app_name: str, deployment: str, replicas: int) -> list[dict[str, Any]]:
    """Every replica's history (a handle call reaches one replica; ask until each has answered)."""
    seen: dict[str, list[dict[str, Any]]] = {}

    def ask() -> bool:
        handle = replica(app_name, deployment)
        who = handle.describe.remote().result(timeout_s=BOUND_S)["replica"]
        seen[who] = handle.history.remote().result(timeout_s=BOUND_S)
        return len(seen) >= replicas

    wait_until(ask, f"every {deployment} replica's history")
    return [r for records in seen.values() for r in records]


# --------------------------------------------------------------------------------------------- deploying it
def test_a_replica_placed_on_the_wrong_card_refuses_and_requests_get_503(cluster: str) -> None:
    [spec] = simulated_specs(["24"])
    wrong = ClassSpec(spec.name, spec.tier, spec.reading, env={"MAX_CUDA_VRAM": "8"})
    url = cluster + deploy(
        "wrong", build_app([wrong], ServeOptions(constructor_retries=1, ingress_replicas=1)), wait=False
    )

    def failed() -> bool:
        deployment = serve.status().applications["wrong"].deployments.get("unlimited")
        return deployment is not None and deployment.status.value == "DEPLOY_FAILED"

    wait_until(failed, "the misplaced replica to be refused")
    wait_until(lambda: _answers(url), "the router to answer")
    status, body = post(url, {"duration_s": 30})
    assert status == 503
    assert "no replica is running" in body["error"] and "refuses to start" in body["error"]
    assert "Tier 4 (tier4), not unlimited" in body["error"]
    serve.delete("wrong")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=30):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def cli(*args: str, env: dict[str, str] | None = None, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CONSOLE_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=BOUND_S,
        env={**os.environ, **(env or {})},
        **options,
    )


def test_serve_run_with_the_printed_config_serves_a_request(cluster: str, gcs: str, tmp_path: Path) -> None:
    port = cluster.rsplit(":", 1)[1]
    printed = cli(
        "fleet", "serve", "--simulate", "8", "--plan-only", "--ingress-replicas", "1",
        "--port", port, "--name", "fromconfig", "--route-prefix", "/fromconfig", "--print-config",
    )  # fmt: skip
    assert printed.returncode == 0, printed.stderr
    config = tmp_path / "fleet.yaml"
    config.write_text(printed.stdout)
    assert "import_path: acestep_core.runtime.fleet.app:app" in printed.stdout
    deployed = subprocess.run(
        [sys.executable, "-c", "from ray.serve.scripts import cli; cli()", "run", str(config), "--non-blocking"],
        capture_output=True,
        text=True,
        timeout=BOUND_S,
        env={**os.environ, "RAY_ADDRESS": gcs},
    )
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    try:
        wait_until(lambda: serve.status().applications.get("fromconfig") is not None, "the config's application")
        wait_until(
            lambda: serve.status().applications["fromconfig"].status.value == "RUNNING", "the application to run"
        )
        status, body = post(cluster + "/fromconfig", {"duration_s": 600, "plan_only": True})
        assert status == 200, body
        assert body["replica"]["tier"] == "tier4" and body["resolution"]["adjusted"]["duration_s"] == 240
    finally:
        serve.delete("fromconfig")


def test_fleet_serve_exits_on_sigterm_deleting_only_its_own_application(cluster: str, gcs: str) -> None:
    """Another team's application on the same cluster survives our exit; SIGTERM exits 0, no stack dump."""

    @serve.deployment(ray_actor_options={"num_cpus": 0})
    def bystander(request: Any) -> str:
        return "still here"

    deploy("bystander", bystander.bind())
    port = cluster.rsplit(":", 1)[1]
    ours = cluster + "/ours"
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "fleet", "serve", "--address", gcs, "--simulate", "8",
         "--plan-only", "--ingress-replicas", "1", "--port", port, "--name", "ours", "--route-prefix", "/ours",
         "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        summary = _summary(process)  # printed once the application serves
        assert summary["url"] == ours and summary["app"] == "ours"
        status, body = post(ours, {"duration_s": 120, "plan_only": True})
        assert status == 200 and body["replica"]["tier"] == "tier4", body
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=BOUND_S)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-3000:]
    assert "stopped (SIGTERM)" in stderr and "Traceback" not in stderr
    applications = serve.status().applications
    assert "ours" not in applications and "bystander" in applications
    with urllib.request.urlopen(cluster + "/bystander", timeout=60) as response:
        assert response.read() == b"still here"
    serve.delete("bystander")


def _summary(process: subprocess.Popen[str]) -> dict[str, Any]:
    """The command's JSON summary, which it prints once its application serves (read with a bound)."""
    assert process.stdout is not None and process.stderr is not None
    fd, data = process.stdout.fileno(), b""
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline and process.poll() is None:
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 65536)
            data += chunk
            with contextlib.suppress(ValueError):
                return json.loads(data)
    process.kill()
    pytest.fail(f"fleet serve printed no summary: {data!r} {process.stderr.read()[-3000:]}")


def test_ray_address_with_simulate_joins_that_cluster_and_says_so(gcs: str) -> None:
    result = cli("fleet", "scan", "--simulate", "8,16", "--json", env={"RAY_ADDRESS": gcs})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RAY_ADDRESS=" in result.stderr and "sizes that cluster's own GPU slots" in result.stderr
    assert "Traceback" not in result.stderr
    assert [d["tier"] for d in json.loads(result.stdout)["devices"]] == ["tier4", "tier6"]
    too_many = cli("fleet", "scan", "--simulate", ",".join(["8"] * (INSTANCE_GPUS + 1)), env={"RAY_ADDRESS": gcs})
    assert too_many.returncode == 2 and "has 12" in too_many.stderr and "unset RAY_ADDRESS" in too_many.stderr
