"""The GPU check script runs on the CPU in its dry-run mode and writes what it prints."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_detection.py"


def test_gpu_detection_dry_run_writes_its_figures(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("ACESTEP_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    module = runpy.run_path(str(BENCHMARK))
    assert module["main"]([str(tmp_path), "--dry-run", "--runs", "1"]) == 0
    summary = json.loads((tmp_path / "gpu_detection.json").read_text())["summary"]
    assert summary["plugin_total_bytes"] == 85_520_809_984
    assert summary["plugin_tier"] == "unlimited" and summary["plugin_answered_by"] == "cuda"
    assert summary["plugin_imported_torch"] is False
    assert summary["by_prefix"]["uuid"] == summary["by_uuid"]["uuid"] == "GPU-ca2e940d-eca6-3135-2782-dabd4713068e"
    assert "CUDA_VISIBLE_DEVICES=GPU-ca2e940d" in capsys.readouterr().out
