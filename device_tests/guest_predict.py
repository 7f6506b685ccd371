"""Runs INSIDE the emulated arm64 userland: the runtime's Predictor on an exported model directory.

    python3 guest_predict.py MODEL_DIR OUT.npz [TEXTS.json]

Writes golden logits recomputed here (golden.npz inputs through the Predictor's session), the Predictor's
logits for the sentences of TEXTS.json (a JSON list; a few built-in ones without it), the runtime's own
golden check and the platform it ran on.
"""

import json
import platform
import sys

import numpy as np

from runtime.contract import GOLDEN_FILE, load_golden
from runtime.predictor import Predictor

SENTENCES = ["a gripping, beautifully acted film.", "dull and far too long.", "ok", "word " * 40]


def main(model_dir: str, out: str, texts_file: str | None = None) -> None:
    sentences = json.loads(open(texts_file, encoding="utf-8").read()) if texts_file else SENTENCES
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


if __name__ == "__main__":
    main(*sys.argv[1:4])
