"""Token-frequency weighting of the word-embedding fit, by rank: the static errors of each fit.

Session 7 stopped weighting the embedding fit by the task's token counts (clearly better at 10x and 20x),
and session 8 measured the weighted fit ahead on CoLA at the default 5.7x (`small_tasks.md`). The lead was a
weighting that depends on the embedding's rank. This script asks whether the fit's own errors show a regime
change with rank that such a rule could rest on. For MiniLM's word embeddings E (30522 x 384) and the rank-r
truncated SVD (the svd structure's embedding at 5.7x, 10x and 20x: r = 63, 32, 12) it fits E three ways --
plain, weighted by 0.5 * count / total + 0.5 / v (the fit before session 7), and by square-root counts --
and reports each fit's relative error under four token weightings: uniform over the vocabulary, the train
split's token frequencies, the dev split's, and only the dev tokens the train split never contains.

    python benchmarks/embedding_fit_errors.py --data ../shared/data/glue
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
RANKS = (63, 32, 12)
# task: (train file, dev file, text column, header row, train rows used by the default compress)
TASKS = {"cola": ("CoLA/train.tsv", "CoLA/dev.tsv", 3, False, None),
         "sst2": ("SST-2/train.tsv", "SST-2/dev.tsv", 0, True, 20000)}


def token_counts(tokenizer, path: Path, column: int, header: bool, limit: int | None, vocab: int) -> np.ndarray:
    rows = list(csv.reader(path.open(encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE))
    texts = [row[column] for row in rows[1 if header else 0:]][:limit]
    counts = np.zeros(vocab)
    for ids in tokenizer(texts)["input_ids"]:
        np.add.at(counts, ids, 1)
    return counts


def weighted_fit(table: np.ndarray, weights: np.ndarray, rank: int) -> np.ndarray:
    """argmin over rank-r T of sum_t w_t ||e_t - t_t||^2: the SVD of diag(sqrt w) E, rows scaled back."""
    root = np.sqrt(weights)[:, None]
    u, s, vt = np.linalg.svd(table * root, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vt[:rank] / root


def relative_error(table: np.ndarray, fitted: np.ndarray, weights: np.ndarray) -> float:
    return float(((table - fitted) ** 2 * weights[:, None]).sum() / (table ** 2 * weights[:, None]).sum())


def measure(data: Path) -> dict:
    from transformers import AutoModel, AutoTokenizer

    from kronedge.teachers import minilm_dir

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    table = AutoModel.from_pretrained(minilm_dir()).embeddings.word_embeddings.weight.detach().double().numpy()
    vocab = table.shape[0]
    rows = []
    for task, (train, dev, column, header, limit) in TASKS.items():
        train_counts = token_counts(tokenizer, data / train, column, header, limit, vocab)
        dev_counts = token_counts(tokenizer, data / dev, column, header, None, vocab)
        unseen = (dev_counts > 0) & (train_counts == 0)
        scores = {"uniform": np.full(vocab, 1.0 / vocab), "train": train_counts / train_counts.sum(),
                  "dev": dev_counts / dev_counts.sum(), "dev_unseen_in_train": unseen.astype(float)}
        root_counts = np.sqrt(train_counts)
        fits = {"plain": scores["uniform"], "weighted": 0.5 * scores["train"] + 0.5 / vocab,
                "sqrt": 0.5 * root_counts / root_counts.sum() + 0.5 / vocab}
        for rank in RANKS:
            for fit, weights in fits.items():
                fitted = weighted_fit(table, weights, rank)
                rows.append({"task": task, "rank": rank, "fit": fit,
                             **{name: relative_error(table, fitted, w) for name, w in scores.items()}})
        rows.append({"task": task, "dev_mass_unseen_in_train": float(scores["dev"][unseen].sum()),
                     "dev_types_unseen_in_train": int(unseen.sum())})
    from runtime import hostinfo

    return {"command": "python " + " ".join(sys.argv), "python": platform.python_version(),
            "cpu": hostinfo.cpu_model(), "versions": hostinfo.versions(("numpy", "transformers", "tokenizers")),
            "rows": rows}


def to_markdown(result: dict) -> str:
    lines = [f"Command: `{result['command']}`; CPU {result['cpu']}, Python {result['python']}, {result['versions']}", "",
             "| task | rank | fit | uniform | train freq. | dev freq. | dev tokens unseen in train |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for row in result["rows"]:
        if "fit" in row:
            lines.append(f"| {row['task']} | {row['rank']} | {row['fit']} | {row['uniform']:.3f} | {row['train']:.3f} | "
                         f"{row['dev']:.3f} | {row['dev_unseen_in_train']:.3f} |")
    for row in result["rows"]:
        if "fit" not in row:
            lines.append(f"\n{row['task']}: dev tokens never seen in train: {row['dev_types_unseen_in_train']} types, "
                         f"{row['dev_mass_unseen_in_train']:.1%} of the dev tokens.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "glue")
    parser.add_argument("--out", type=Path, default=RESULTS / "embedding_fit_errors.json")
    args = parser.parse_args()
    result = measure(args.data)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
