"""How close a student starts to its teacher, before any training: dev accuracy, agreement with the teacher's
predictions and the KL of its logits, for the student ``compress --compression C`` would build (SVD corners, kept
FFN neurons, the task vocabulary), optionally with ``--ffn-to-embedding``.

    python benchmarks/start_agreement.py $TEACHER --task sst2 --compression 20 [--ffn-to-embedding 0.5]

``benchmarks/results/role_split.md`` used it (with ``role_split.patch`` applied for the attention rows) to check
whether the starting point ranks the role splits as distillation does: it does not.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("teacher", help="a fine-tuned teacher directory with the task's head")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--compression", type=float, default=20.0)
    parser.add_argument("--ffn-to-embedding", type=float, default=None)
    args = parser.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kronedge.artifact import load_artifact
    from kronedge.data import load_task
    from kronedge.kron_config import KronConfig
    from kronedge.pipeline import kronize_teacher

    torch.set_num_threads(1)
    config = KronConfig(compression=args.compression, structure="svd", ffn="neurons",
                        ffn_to_embedding=args.ffn_to_embedding)
    with tempfile.TemporaryDirectory() as tmp:
        path, plan = kronize_teacher(args.teacher, config, f"{tmp}/student", calibration=args.task, vocabulary="task")
        student = load_artifact(path).eval()
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)
    dev = load_task(args.task, split="dev")
    correct = agree = 0
    kl = 0.0
    with torch.no_grad():
        for i in range(0, len(dev.texts), 64):
            texts = dev.texts[i:i + 64]
            pair = [list(t) for t in zip(*texts)] if isinstance(texts[0], tuple) else [texts]
            enc = tokenizer(*pair, padding=True, truncation=True, max_length=128, return_tensors="pt")
            s, t = student(**enc).logits, teacher(**enc).logits
            correct += int((s.argmax(-1) == torch.tensor(dev.labels[i:i + 64])).sum())
            agree += int((s.argmax(-1) == t.argmax(-1)).sum())
            kl += float(torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True,
                                                   reduction="sum"))
    n = len(dev.texts)
    ranks = {l.role: l.kron.rank for l in plan.layers}
    print(json.dumps({"compression": round(plan.compression_full, 2), "ranks": ranks, "accuracy": round(correct / n, 4),
                      "agreement": round(agree / n, 4), "kl": round(kl / n, 4)}))


if __name__ == "__main__":
    main()
