"""One rank of tests/test_distributed.py: distil a tiny student as one of several processes, print a JSON summary."""

import json

import torch

from helpers import micro_bert, micro_data
from kronedge.distill import DistillConfig, Distiller
from kronedge.training import TrainConfig, train_loop


def main(run_dir: str) -> None:
    teacher, student = micro_bert(0), micro_bert(1)
    config = TrainConfig(epochs=2, batch_size=8, lr=1e-3, precision="fp32", log_every=1, warmup_ratio=0.0)
    result = train_loop(student, micro_data(), Distiller(teacher, student, DistillConfig.task(attention=0.1)), config,
                        run_dir, eval_fn=lambda m: {"score": 1.0}, primary_metric="score")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    checksum = sum(float(p.detach().double().sum()) for p in student.parameters())
    print("RESULT " + json.dumps({"rank": rank, "world": world, "steps": result.steps, "checksum": checksum}), flush=True)
