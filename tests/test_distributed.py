"""`accelerate launch` / torchrun with several processes: the same training loop, split across ranks.

Two CPU processes (gloo) stand in for two GPUs: each takes half of every epoch's batches, gradients
are averaged, only rank 0 writes files, and the learning-rate schedule spans the run's real steps.
The ranks are real processes forked from the preloaded forkserver (tests/preloaded.py) with the variables
torchrun gives each worker (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, ...): what the loop reads is that
environment (the launcher is torch's), and forking skips three interpreter start-ups with their imports of torch.
"""

import json
import re
import socket

import pytest

from preloaded import Child

pytestmark = pytest.mark.distributed

WORLD = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_one_model(tmp_path):
    port = str(_free_port())
    ranks = []
    for rank in range(WORLD):
        env = {"ACCELERATE_USE_CPU": "1", "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_WORLD_SIZE": str(WORLD),
               "GROUP_RANK": "0", "GROUP_WORLD_SIZE": "1"}
        ranks.append(Child("ddp_worker:main", str(tmp_path / "run"), logs=tmp_path / f"rank{rank}", env=env))
    codes = [child.wait(280) for child in ranks]
    assert codes == [0] * WORLD, "\n".join(child.stdout()[-2000:] + child.stderr()[-4000:] for child in ranks)
    ranks = [json.loads(m) for child in ranks for m in re.findall(r"RESULT (\{[^}]*\})", child.stdout())]
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
