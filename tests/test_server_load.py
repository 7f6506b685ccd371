"""benchmarks/load.py end to end on the tiny model: bounded (2 configs x 2 levels, 1 s each, <= 20 requests), loopback only."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_load_script_writes_results(informative_export_fp32, tmp_path):
    out = tmp_path / "load"
    subprocess.run([sys.executable, "benchmarks/load.py", str(informative_export_fp32), "--configs", "1x2", "1x1b1", "--rounds", "2", "--max-length", "16",
                    "--clients", "1", "4", "--seconds", "1", "--max-requests", "20", "--warmup", "2",
                    "--out", str(out)], cwd=REPO, check=True, capture_output=True, timeout=120)
    result = json.loads(out.with_suffix(".json").read_text())
    assert [(row["clients"], row["workers"], row["max_batch_texts"]) for row in result["rows"]] == [
        (1, 2, 64), (1, 1, 1), (4, 2, 64), (4, 1, 1)]
    for row in result["rows"]:
        assert row["statuses"] == {"200": row["requests"]} and 0 < row["requests"] <= 20
        assert row["p50_ms"] <= row["p99_ms"] and row["max_length"] == 16
        assert row["texts_served"] == row["requests"]
    assert "127.0.0.1" in result["server_commands"][0] and result["machine"]["cpu"] and result["versions"]["onnxruntime"]
    assert "| 1x2, 64 | 16 | 4 |" in out.with_suffix(".md").read_text()
