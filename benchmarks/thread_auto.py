"""What ``threads="auto"`` (the server's default) picks for each model on this machine, a few times over.

    python benchmarks/thread_auto.py MODEL_DIR [MODEL_DIR ...] [--repeats 3]

Each repeat loads a fresh Predictor with ``threads="auto"`` (runtime.threads: every candidate count timed
interleaved on one 64-token input) and prints its choice and the p50 per candidate, so that the choice's
stability on a noisy machine can be read off.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.hostinfo import provenance  # noqa: E402
from runtime.predictor import Predictor  # noqa: E402
from runtime.threads import AUTO  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("\n".join(provenance(sys.argv, ("onnxruntime", "numpy", "tokenizers"))))
    for model in args.models:
        for _ in range(args.repeats):
            trial = Predictor(model, threads=AUTO).thread_trial
            print(f"{Path(model).name}: {json.dumps(trial.to_dict() if trial else {'threads': 1, 'note': 'one core'})}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
