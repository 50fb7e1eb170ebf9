"""Hostile output paths, nothing of the user's lost, and signals (issue #9).

Every output path is checked before any work starts (the work is replaced by a tripwire that fails
the test if reached); a run never overwrites or leaves behind what it should not; Ctrl-C exits 130
and a closed pipe exits quietly, without a traceback.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import interruptible_python  # noqa: E402

from acestep_core.runtime.calibrate import search  # noqa: E402
from acestep_core.runtime.cli import generate as generate_cli  # noqa: E402
from acestep_core.runtime.pipeline import CancelHandle, GenerationCancelledError  # noqa: E402
from acestep_core.runtime.pipeline.output import write_clips  # noqa: E402
from acestep_core.runtime.pipeline.records import ClipReport  # noqa: E402

pipeline_run = importlib.import_module("acestep_core.runtime.pipeline.run")  # the module, not its run()
SAMPLE_RATE = 48_000
CALIBRATE_CONFIG = {
    "context_gb": search.CONTEXT_GB,
    "margin_gb": search.SAFETY_MARGIN_GB,
    "backend": "torch-cpu-tiny-fp32",
}
"""What a CPU calibrate run's raw file records as its settings (so a resume reaches its rows)."""


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any generation, comparison or measurement reached fails the test: a refusal must come first."""

    def tripwire(*_: object, **__: object) -> None:
        raise AssertionError("work started before the output path was checked")

    import acestep_core.compare
    import acestep_core.runtime.pipeline

    monkeypatch.setattr(acestep_core.runtime.pipeline, "generate", tripwire)
    monkeypatch.setattr(acestep_core.compare, "compare_tables", tripwire)
    monkeypatch.setattr(search.Calibrator, "run", tripwire)


def one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# --------------------------------------------------------------------------------------------- output paths
@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: (d / "song.wav").write_bytes(b"mine") and d / "song.wav", "exists and is not a folder"),
        (lambda d: (d / "f").write_text("x") and d / "f" / "sub", "is a file, so no folder can be made under it"),
        (lambda d: "", "an empty path"),
        (lambda d: (d / "full").mkdir() or ((d / "full" / "notes.txt").write_text("x") and d / "full"), "is not empty"),
        pytest.param(
            lambda d: Path("/proc/sys/acestep-out"),
            "is not writable",
            marks=pytest.mark.skipif(not Path("/proc/sys").is_dir(), reason="needs Linux's read-only /proc/sys"),
        ),
    ],
)
def test_generate_checks_its_output_folder_first(cli, no_work, tmp_path: Path, make, needle: str) -> None:
    out = str(make(tmp_path))
    code, out_text, err = cli("generate", "--out", out, "--steps", "1")
    assert code == 2 and out_text == ""
    one_line(err, "--out", needle)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits: the read-only mount case covers root")
def test_generate_refuses_a_folder_without_write_permission(cli, no_work, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    code, _, err = cli("generate", "--out", str(folder))
    assert code == 2 and "is not writable" in err


READ_ONLY_MOUNT_CHILD = """
import sys

class NoWork:  # the pipeline (and torch with it) is imported only once the output folder passed
    def find_spec(self, name, path=None, target=None):
        if name in ("acestep_core.runtime.pipeline", "torch"):
            raise SystemExit(f"work started before the output path was checked ({name} imported)")

sys.meta_path.insert(0, NoWork())
from acestep_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_generate_refuses_a_folder_on_a_read_only_mount_even_as_root(tmp_path: Path) -> None:
    """The same refusal where no permission bit is involved, so that it holds for root (as CI runs):
    the empty folder is bind-mounted read-only in a mount namespace of the child's own (``unshare``;
    as another user, a user namespace makes the child root there), which nobody can write into."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux's unshare for a private read-only mount")
    folder = tmp_path / "ro"
    folder.mkdir()
    namespace = [unshare, "--mount"] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user", "--mount"]
    probe = subprocess.run([*namespace, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel or container refuses a private mount namespace: {probe.stderr.strip()}")
    mount_then_run = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    command = [sys.executable, "-c", READ_ONLY_MOUNT_CHILD, "generate", "--out", str(folder), "--steps", "1"]
    done = subprocess.run(
        [*namespace, "sh", "-c", mount_then_run, "sh", str(folder), *command],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    one_line(done.stderr, "--out", str(folder), "is not writable")
    assert list(folder.iterdir()) == []


def test_compare_checks_the_plot_path_first(cli, no_work, tmp_path: Path) -> None:
    code, _, err = cli("tiers", "compare", "default", "default", "--plot", str(tmp_path / "missing" / "x.png"))
    assert code == 2
    one_line(err, "--plot", "missing", "does not exist")
    code, _, err = cli("tiers", "compare", "default", "default", "--plot", str(tmp_path))
    assert code == 2 and "is a folder" in err


def test_new_refuses_a_file_as_its_folder_and_an_existing_package(cli, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("mine")
    code, _, err = cli("tiers", "new", "x", "--dir", str(target))
    assert code == 2
    one_line(err, "--dir", "exists and is not a folder")
    (tmp_path / "acestep-core-tiers-x").mkdir()
    (tmp_path / "acestep-core-tiers-x" / "keep.txt").write_text("mine")
    code, _, err = cli("tiers", "new", "x", "--dir", str(tmp_path))
    assert code == 2 and "exists already" in err
    assert (tmp_path / "acestep-core-tiers-x" / "keep.txt").read_text() == "mine" and target.read_text() == "mine"


def test_calibrate_refuses_a_file_and_a_table_it_did_not_write(cli, no_work, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("mine")
    code, _, err = cli("calibrate", "--out", str(target), "--device", "cpu")
    assert code == 2
    one_line(err, "--out", "exists and is not a folder")
    own = tmp_path / "own"
    own.mkdir()
    (own / "tiers.toml").write_text("# my hand-tuned table\n")
    code, _, err = cli("calibrate", "--out", str(own), "--device", "cpu")
    assert code == 2
    one_line(err, "tiers.toml", "not written by acestep-core calibrate", "--overwrite")
    assert (own / "tiers.toml").read_text() == "# my hand-tuned table\n"


def test_calibrate_may_replace_its_own_table(tmp_path: Path) -> None:
    (tmp_path / "tiers.toml").write_text(search.WRITTEN_BY + " (cpu) on x.\n")
    assert search.written_by_calibrate(tmp_path / "tiers.toml")
    assert not search.written_by_calibrate(tmp_path)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("[]", "not a calibrate measurements file"),
        ("null", "not a calibrate measurements file"),
        ('{"config": {}, "measurements": [', "not JSON (truncated?)"),
        (
            json.dumps({"config": CALIBRATE_CONFIG, "measurements": [{"card_gb": 20}]}),
            "measurements[0] has unknown keys",
        ),
        (
            json.dumps(
                {
                    "config": CALIBRATE_CONFIG,
                    "measurements": [
                        {
                            "card_gb": 20.0,
                            "phase": "dit",
                            "duration_s": 10,
                            "batch": 1,
                            "fits": "yes",
                            "peak_bytes": 1,
                            "cap_bytes": 1,
                            "seconds": 0.1,
                        }
                    ],
                }
            ),
            "fits = 'yes' is not bool",
        ),
        (json.dumps({"config": CALIBRATE_CONFIG, "measurements": ["row"]}), "measurements[0] is str"),
    ],
)
def test_calibrate_refuses_to_resume_from_a_broken_raw_file(
    cli, no_work, tmp_path: Path, raw: str, needle: str
) -> None:
    (tmp_path / "measurements.json").write_text(raw)
    code, _, err = cli("calibrate", "--out", str(tmp_path), "--device", "cpu", "--no-progress")
    assert code == 2
    one_line(err, "measurements.json", "cannot resume from it", needle)
    assert (tmp_path / "measurements.json").read_text() == raw, "the broken file is left for the user to look at"


# --------------------------------------------------------------------------------------------- nothing lost
def test_without_out_each_run_gets_a_fresh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = generate_cli.output_folder(None, overwrite=False)
    assert first.parent == Path("acestep-out") and first.name.startswith("run-") and not first.exists()
    first.mkdir(parents=True)
    second = generate_cli.output_folder(None, overwrite=False)
    assert second != first and not second.exists()


class TripAfter(CancelHandle):
    """Cancelled after ``n`` checks: here, after the first clip is written."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def check(self) -> None:
        self.n -= 1
        if self.n < 0:
            self.cancel()
        super().check()


def test_a_cancel_while_writing_removes_the_clips_written(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("mine")
    audio = torch.rand(3, 2, SAMPLE_RATE)
    with pytest.raises(GenerationCancelledError) as caught:
        write_clips(tmp_path, audio, [1.0, 1.0, 1.0], None, cancel=TripAfter(1))
    assert caught.value.removed == (str(tmp_path / "clip_00.wav"),)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"], "the clip and any temporary are gone"


def test_clips_are_written_whole_under_their_names(tmp_path: Path) -> None:
    clips = write_clips(tmp_path, torch.rand(2, 2, SAMPLE_RATE), [0.5, 1.0], None)
    assert [Path(c.path).name for c in clips] == ["clip_00.wav", "clip_01.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_00.wav", "clip_01.wav"]


def test_ctrl_c_message_says_what_was_removed(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's message after a cancel names the clips the run removed, and a folder it created is gone."""

    def execute(session: object, out: Path) -> tuple[list, list[ClipReport]]:
        return [], write_clips(out, torch.rand(2, 2, SAMPLE_RATE), [1.0, 1.0], None, cancel=TripAfter(1))

    monkeypatch.setattr(pipeline_run, "_execute", execute)
    out = tmp_path / "new"
    code, _, err = cli("generate", "--out", str(out), "--no-progress")
    assert code == 130
    assert f"the clips it had written were removed: {out / 'clip_00.wav'}" in err
    assert "no files were written" not in err and not out.exists()


def test_overwrite_replaces_earlier_clips_and_keeps_other_files(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def execute(session: object, out: Path) -> tuple[list, list[ClipReport]]:
        return [], write_clips(out, torch.rand(1, 2, SAMPLE_RATE), [1.0], None)

    monkeypatch.setattr(pipeline_run, "_execute", execute)
    for name in ("clip_00.wav", "clip_03.wav", "notes.txt"):
        (tmp_path / name).write_bytes(b"earlier")
    code, _, err = cli("generate", "--out", str(tmp_path), "--no-progress")
    assert code == 2 and "is not empty" in err and (tmp_path / "clip_00.wav").read_bytes() == b"earlier"
    code, out, _ = cli("generate", "--out", str(tmp_path), "--overwrite", "--no-progress", "--json")
    assert code == 0 and json.loads(out)["removed_stale"] == ["clip_03.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_00.wav", "notes.txt"]
    assert (tmp_path / "clip_00.wav").read_bytes() != b"earlier" and (tmp_path / "notes.txt").read_bytes() == b"earlier"


# --------------------------------------------------------------------------------------------- signals
def test_ctrl_c_anywhere_exits_130_without_a_traceback(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import acestep_core.cli.resolution

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(acestep_core.cli.resolution, "resolve", interrupted)
    code, out, err = cli("plan", "--duration", "30")
    assert code == 130 and out == "" and err.strip() == "acestep-core: error: interrupted"


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAX_", "ACESTEP_CORE_"))}
    return env | {"ACESTEP_CORE_TIERS": "default", "OMP_NUM_THREADS": "1"}


SCRIPT = "import sys; from acestep_core.cli import main; sys.exit(main(sys.argv[1:]))"


def test_a_closed_pipe_is_a_quiet_exit() -> None:
    """``acestep-core tiers compare ... | head -1``: the reader is gone before the output is written."""
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "tiers", "compare", "default", "default"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )
    assert process.stdout is not None
    process.stdout.close()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141, err
    assert err == b"", err.decode(errors="replace")


def test_ctrl_c_during_calibrate_exits_130_and_keeps_a_resumable_file(tmp_path: Path) -> None:
    """Ctrl-C once calibrate has written its first measurement (the raw file appears: its word that
    trials are under way), with many trials left to interrupt."""
    process = subprocess.Popen(
        interruptible_python(
            SCRIPT,
            *("calibrate", "--out", str(tmp_path), "--device", "cpu", "--no-full-vae"),
            *("--cards", "20,40,60,80", "--durations", "10,20,30,40"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_child_env(),
    )
    raw = tmp_path / "measurements.json"
    deadline = time.monotonic() + 600
    while not raw.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            _, err = process.communicate()
            pytest.fail(f"calibrate wrote no measurement (exit {process.returncode}): {err.decode(errors='replace')}")
        time.sleep(0.2)  # polling for the file, not guessing when to signal
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err.decode(errors="replace")[-2000:]
    assert b"Traceback" not in err and b"interrupted" in err
    assert isinstance(json.loads(raw.read_text())["measurements"], list), "the raw file stays whole (written by rename)"
