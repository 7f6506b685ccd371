"""Write a small QNLI-style pair task built from SQuAD v1.1 dev, for measuring `compress` on a few thousand pairs.

QNLI (GLUE) was made from SQuAD the same way: a (question, sentence of the paragraph) pair is "entailment" when the
sentence holds the answer span. Here each question gives one positive pair (the sentence with the first answer's start)
and one negative (another sentence of the same paragraph), so the classes are balanced; train and validation come from
disjoint articles. Output: CSV files (question, sentence, label) outside git, e.g.

    python benchmarks/make_qnli_small.py ../shared/data/squad/dev-v1.1.json.gz /tmp/qnli-small --train 6000 --validation 1000
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import random
import re
from pathlib import Path

SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(context: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of each sentence of a paragraph."""
    out, start = [], 0
    for match in SENTENCE_END.finditer(context):
        out.append((start, match.start(), context[start:match.start()]))
        start = match.end()
    out.append((start, len(context), context[start:]))
    return [s for s in out if len(s[2].split()) >= 4]


def pairs(articles: list[dict], rng: random.Random) -> list[tuple[str, str, str]]:
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            sents = sentences(paragraph["context"])
            if len(sents) < 2:
                continue
            for qa in paragraph["qas"]:
                answer = qa["answers"][0]
                at = answer["answer_start"]
                holding = [s for s in sents if s[0] <= at and at + len(answer["text"]) <= s[1]]
                if not holding:
                    continue  # the answer crosses a sentence boundary
                others = [s for s in sents if s is not holding[0] and answer["text"] not in s[2]]
                if not others:
                    continue
                rows.append((qa["question"], holding[0][2], "entailment"))
                rows.append((qa["question"], rng.choice(others)[2], "not_entailment"))
    return rows


def load_articles(squad: Path) -> list[dict]:
    """The articles of a SQuAD v1.1 JSON file (.json or .json.gz)."""
    opener = gzip.open if squad.suffix == ".gz" else open
    with opener(squad, "rt", encoding="utf-8") as f:
        return json.load(f)["data"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad", type=Path, help="SQuAD v1.1 JSON (.json or .json.gz)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=6000, help="training pairs (at most)")
    parser.add_argument("--validation", type=int, default=1000, help="validation pairs (at most)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    articles = load_articles(args.squad)
    rng = random.Random(args.seed)
    rng.shuffle(articles)
    n_dev = max(1, len(articles) // 5)  # disjoint articles: no paragraph is in both splits
    splits = {"validation": pairs(articles[:n_dev], rng), "train": pairs(articles[n_dev:], rng)}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, limit in (("train", args.train), ("validation", args.validation)):
        rows = splits[name]
        rng.shuffle(rows)
        rows = rows[:limit]
        with open(args.out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["question", "sentence", "label"])
            writer.writerows(rows)
        print(f"{args.out / name}.csv: {len(rows)} pairs")


if __name__ == "__main__":
    main()
