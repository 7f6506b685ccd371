"""Write a small many-class task built from SQuAD v1.1 dev, for measuring `compress` on a few thousand examples.

Intent and topic classifiers are what an edge app most often runs: one short text, one of many labels. Here the text
is a SQuAD question and its label is the Wikipedia article it was asked about (the 20 articles with the most
questions by default, at most 250 questions each), split at random per article into train and validation. With
``--smallest`` the classes are imbalanced, as real intents are. Output: CSV files (text, label) outside git, e.g.

    python benchmarks/make_topic_small.py ../shared/data/squad/dev-v1.1.json.gz /tmp/topic-small
    python benchmarks/make_topic_small.py ../shared/data/squad/dev-v1.1.json.gz /tmp/topic-imbalanced --per-class 500 --smallest 20
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

from make_qnli_small import load_articles  # the same SQuAD file, read the same way


def questions_by_article(articles: list[dict]) -> dict[str, list[str]]:
    return {a["title"]: [qa["question"].strip() for p in a["paragraphs"] for qa in p["qas"]] for a in articles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad", type=Path, help="SQuAD v1.1 JSON (.json or .json.gz)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", type=int, default=20, help="the articles with the most questions")
    parser.add_argument("--per-class", type=int, default=250, help="questions per article (at most)")
    parser.add_argument("--smallest", type=int, default=None,
                        help="imbalanced classes: the counts fall geometrically from --per-class (the largest "
                             "article) to this many (the smallest)")
    parser.add_argument("--validation-share", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    by_article = questions_by_article(load_articles(args.squad))
    rng = random.Random(args.seed)
    chosen = sorted(by_article, key=lambda t: (-len(by_article[t]), t))[:args.classes]
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "validation": []}
    for rank, title in enumerate(chosen):
        questions = sorted(set(q for q in by_article[title] if q))
        rng.shuffle(questions)
        ratio = (args.smallest / args.per_class) ** (rank / max(1, len(chosen) - 1)) if args.smallest else 1.0
        questions = questions[:max(2, round(args.per_class * ratio))]
        n_dev = round(len(questions) * args.validation_share)
        splits["validation"] += [(q, title) for q in questions[:n_dev]]
        splits["train"] += [(q, title) for q in questions[n_dev:]]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        rng.shuffle(rows)
        with open(args.out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        print(f"{args.out / name}.csv: {len(rows)} questions, {len({r[1] for r in rows})} classes")


if __name__ == "__main__":
    main()
