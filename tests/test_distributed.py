"""`accelerate launch` / torchrun with several processes: the same training loop, split across ranks.

Two CPU processes (gloo) stand in for two GPUs: each takes half of every epoch's batches, gradients
are averaged, only rank 0 writes files, and the learning-rate schedule spans the run's real steps.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest


def test_two_processes_train_one_model(tmp_path):
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    worker = Path(__file__).parent / "ddp_worker.py"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=280)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    # Both ranks share one stdout, so their lines may run together.
    ranks = [json.loads(m) for m in re.findall(r"RESULT (\{[^}]*\})", proc.stdout)]
    assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["world"] for r in ranks} == {2}
    # 48 examples in batches of 8: 6 batches per epoch, 3 per rank, 2 epochs -> 6 optimizer steps each.
    assert [r["steps"] for r in ranks] == [6, 6]
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9, abs=1e-9)  # one model, not two
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in logged if "lr" in r}
    assert sorted(lrs) == list(range(1, 7))  # rank 0 alone writes the log, once per step
    # Linear decay over the 6 real steps: half the peak after step 3, zero at the end.
    assert lrs[3] == pytest.approx(0.5e-3) and lrs[6] == 0.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 6
