"""How well FFNs of each kept-neuron width rebuild the teacher's FFN outputs at a compression target: the numbers
the FFN width is chosen by (``kronedge.neurons.width_errors``; `compress` by default, `--structure svd|search`).

    python benchmarks/ffn_width_errors.py TEACHER [--task sst2 | --train FILE.csv] [--compression 5.7 20]
        [--vocabulary task]

Per target, the mean relative error of the six (or twelve) FFNs on the held-out calibration tokens (every 4th of 256
training texts, fitted on the rest; ``--train`` reads a CSV's ``text`` column instead of a GLUE task), for the
dense count k (all budget in k exact neurons, the down map refitted) and the wider widths (their maps factored as
SVD corners at the factored FFN's budgets); the last column is the factored FFN at the teacher's full width.
``--vocabulary task`` trims the word embedding to the training text's tokens first, as ``compress`` does by
default, which raises every budget.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.hostinfo import provenance  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("teacher")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--train", type=Path, help="a CSV with a 'text' column (your own data) instead of --task")
    parser.add_argument("--compression", type=float, nargs="+", default=[5.7, 20.0])
    parser.add_argument("--vocabulary", choices=("full", "task"), default="task")
    args = parser.parse_args()
    print("\n".join(provenance(sys.argv, ("torch", "transformers"))))

    from kronedge.calibration import DEFAULT_CALIBRATION_TEXTS, HOLDOUT_EVERY, collect_input_stats, strided_sample
    from kronedge.data import load_task
    from kronedge.kron_config import KronConfig
    from kronedge.neurons import neurons_for, pick_width, width_errors
    from kronedge.structure import GUARD_MARGIN
    from kronedge.teachers import load_teacher
    from kronedge.training import load_tokenizer
    from kronedge.vocab import KeptVocabulary

    loaded = load_teacher(args.teacher, head="base")
    tokenizer = load_tokenizer(loaded.tokenizer_dir)
    if args.train is not None:
        import csv

        with args.train.open(newline="", encoding="utf-8") as f:
            texts = [row["text"] for row in csv.DictReader(f)]
    else:
        texts = load_task(args.task, split="train").texts
    stats = collect_input_stats(loaded.model, tokenizer, strided_sample(texts, DEFAULT_CALIBRATION_TEXTS),
                                holdout_every=HOLDOUT_EVERY)
    model = loaded.model
    if args.vocabulary == "task":
        model = copy.deepcopy(model)
        KeptVocabulary.of_texts(tokenizer, texts, 128).trim_(model)
    print(f"\n{args.teacher}, {args.train or args.task} calibration, vocabulary {args.vocabulary}; a wider width is kept where it "
          f"starts {100 * GUARD_MARGIN:.0f}% below the dense count\n")
    for target in args.compression:
        config = KronConfig(compression=target, structure="search", ffn="neurons")
        k = neurons_for(model, config)
        errors = width_errors(model, config, stats, k)
        pick = pick_width(errors, k)
        print(f"{target}x: " + ", ".join(f"{w}{' (dense)' if w == k else ''}: {e:.4f}" for w, e in errors.items())
              + f" -> keeps {pick}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
