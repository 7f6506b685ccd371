"""Runs INSIDE the emulated arm64 userland: the runtime's Predictor on an exported model directory.

    python3 guest_predict.py MODEL_DIR OUT.npz

Writes golden logits recomputed here (golden.npz inputs through the Predictor's session), the Predictor's
logits for a few sentences, the runtime's own golden check and the platform it ran on.
"""

import json
import platform
import sys

import numpy as np

from runtime.predictor import Predictor

SENTENCES = ["a gripping, beautifully acted film.", "dull and far too long.", "ok", "word " * 40]


def main(model_dir: str, out: str) -> None:
    predictor = Predictor(model_dir, threads=1)
    with np.load(f"{model_dir}/golden.npz") as golden:
        feeds = {name: golden[name].astype(np.int64) for name in predictor.input_names}
    golden_logits = predictor.session.run([predictor.output_name], feeds)[0]
    check = predictor.check_golden(min_sqnr_db=20.0)
    logits = predictor.logits(SENTENCES)
    labels = [r["label"] for r in predictor.predict(SENTENCES)]
    import onnxruntime

    info = {"machine": platform.machine(), "onnxruntime": onnxruntime.__version__, "check": check, "labels": labels}
    np.savez(out, golden_logits=golden_logits, logits=logits, info=np.array(json.dumps(info)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
