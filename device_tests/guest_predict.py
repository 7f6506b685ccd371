"""Runs INSIDE the emulated arm64 userland: the runtime's Predictor on exported model directories.

    python3 guest_predict.py TEXTS.json MODEL_DIR OUT.npz [MODEL_DIR OUT.npz ...]

Writes, per model, golden logits recomputed here (golden.npz inputs through the Predictor's session), the
Predictor's logits for the sentences of TEXTS.json (a JSON list), the runtime's own golden check and the platform
it ran on. Several models share one emulated interpreter: its start-up is most of a small model's cost.
"""

import json
import platform
import sys

import numpy as np

from runtime.contract import GOLDEN_FILE, load_golden
from runtime.predictor import Predictor


def predict(model_dir: str, out: str, sentences: list[str]) -> None:
    predictor = Predictor(model_dir, threads=1)
    golden = load_golden(f"{model_dir}/{GOLDEN_FILE}")
    feeds = {name: golden[name] for name in predictor.input_names}
    golden_logits = predictor.session.run([predictor.output_name], feeds)[0]
    check = predictor.check_golden()
    logits = predictor.logits(sentences)
    labels = [r["label"] for r in predictor.predict(sentences)]
    import onnxruntime

    info = {"machine": platform.machine(), "onnxruntime": onnxruntime.__version__, "check": check, "labels": labels}
    np.savez(out, golden_logits=golden_logits, logits=logits, info=np.array(json.dumps(info)))


def main(texts_file: str, *pairs: str) -> None:
    sentences = json.loads(open(texts_file, encoding="utf-8").read())
    assert pairs and len(pairs) % 2 == 0, "give MODEL_DIR OUT.npz pairs after TEXTS.json"
    for model_dir, out in zip(pairs[::2], pairs[1::2]):
        predict(model_dir, out, sentences)


if __name__ == "__main__":
    main(*sys.argv[1:])
