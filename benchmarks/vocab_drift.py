"""What a task vocabulary (``compress --vocabulary task``, the default for small students) costs on text unlike the
task's: how often students agree with their teacher on text sets whose tokens the task's training text lacks.

    python benchmarks/vocab_drift.py TEACHER --student task=DIR --student full=DIR [--task sst2 | --train FILE.csv]
        [--dev sst2] [--texts NAME=FILE ...] [--wikitext N] [--squad FILE] [--limit N]

Per text set: the share of its tokens outside the kept vocabulary (the training text's tokens, as ``compress`` keeps
them), the share of texts holding one, and per student its agreement with the teacher's label (all texts, and the
texts holding a token outside), the mean |p_student - p_teacher| of the teacher's label, and the accuracy where
the set has labels (``--dev``: a GLUE task's dev split). ``--texts`` reads one text per line; ``--squad`` the
questions and the first sentence of each context of a SQuAD json(.gz). Compare students that differ only in their
vocabulary, e.g. two ``compress`` runs with and without ``--vocabulary full``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.hostinfo import provenance  # noqa: E402


def squad_texts(path: Path, limit: int) -> dict[str, list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        articles = json.load(f)["data"]
    paragraphs = [p for a in articles for p in a["paragraphs"]]
    questions = [q["question"] for p in paragraphs for q in p["qas"]]
    sentences = [p["context"].split(". ")[0] for p in paragraphs]
    step = max(1, len(questions) // limit)
    return {"SQuAD questions": questions[::step][:limit], "Wikipedia (SQuAD contexts)": sentences[:limit]}


def probabilities(model, tokenizer, texts: list[str], batch: int = 64):
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], truncation=True, max_length=128, padding=True, return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits.float(), -1))
    return torch.cat(out)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("teacher", help="the fine-tuned teacher's folder")
    parser.add_argument("--student", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--task", default="sst2", help="the GLUE task whose training text sets the kept vocabulary")
    parser.add_argument("--train", type=Path, help="a CSV with a 'text' column (your own data) instead of --task")
    parser.add_argument("--dev", help="a GLUE task whose dev split is one labelled text set")
    parser.add_argument("--texts", action="append", default=[], metavar="NAME=FILE", help="one text per line")
    parser.add_argument("--wikitext", type=int, default=0, help="this many WikiText-2 chunks (stage 1's corpus)")
    parser.add_argument("--squad", type=Path, help="a SQuAD v1.1 json(.gz): its questions and context sentences")
    parser.add_argument("--limit", type=int, default=1000, help="texts per set at most")
    args = parser.parse_args()
    print("\n".join(provenance(sys.argv, ("torch", "transformers"))))

    import torch

    from kronedge.artifact import load_artifact
    from kronedge.data import load_corpus, load_task
    from kronedge.teachers import load_teacher
    from kronedge.training import load_tokenizer
    from kronedge.vocab import task_vocabulary

    torch.set_num_threads(1)
    teacher = load_teacher(args.teacher, head="sequence-classification")
    tokenizer = load_tokenizer(teacher.tokenizer_dir)
    students = {name: load_artifact(path) for name, path in (s.split("=", 1) for s in args.student)}
    if args.train is not None:
        import csv

        with args.train.open(newline="", encoding="utf-8") as f:
            train = [row["text"] for row in csv.DictReader(f)]
    else:
        train = load_task(args.task, split="train").texts
    kept = set(task_vocabulary(tokenizer, train, 128))
    print(f"\nkept vocabulary: {len(kept):,} of {tokenizer.vocab_size:,} tokens ({args.train or args.task} training text)\n")

    sets: dict[str, tuple[list[str], list[int] | None]] = {}
    if args.dev:
        dev = load_task(args.dev, split="dev")
        sets[f"{args.dev} dev"] = (dev.texts[:args.limit], dev.labels[:args.limit])
    for spec in args.texts:
        name, path = spec.split("=", 1)
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        sets[name] = (lines[:args.limit], None)
    if args.squad:
        sets.update({name: (texts, None) for name, texts in squad_texts(args.squad, args.limit).items()})
    if args.wikitext:
        sets["WikiText-2 chunks"] = (load_corpus()[:min(args.wikitext, args.limit)], None)

    names = list(students)
    header = "| text set | texts | tokens outside | texts with one outside | " + " | ".join(
        f"{n}: agrees (with one outside) | {n}: mean abs dp" + (" | " + f"{n}: accuracy" if args.dev else "")
        for n in names) + " |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for set_name, (texts, labels) in sets.items():
        ids = tokenizer(texts, truncation=True, max_length=128)["input_ids"]
        tokens = sum(len(x) for x in ids)
        outside = torch.tensor([any(i not in kept for i in x) for x in ids])
        share = sum(i not in kept for x in ids for i in x) / tokens
        p_teacher = probabilities(teacher.model, tokenizer, texts)
        label_teacher = p_teacher.argmax(-1)
        cells = []
        for name in names:
            p = probabilities(students[name], tokenizer, texts)
            agree = (p.argmax(-1) == label_teacher).float()
            gap = (p.gather(1, label_teacher[:, None]) - p_teacher.gather(1, label_teacher[:, None])).abs().mean()
            on_outside = f"{agree[outside].mean():.1%}" if outside.any() else "-"
            cell = f"{agree.mean():.1%} ({on_outside}) | {gap:.3f}"
            if args.dev:
                acc = (p.argmax(-1) == torch.tensor(labels)).float().mean() if labels is not None else None
                cell += f" | {acc:.2%}" if acc is not None else " | -"
            cells.append(cell)
        print(f"| {set_name} | {len(texts)} | {share:.1%} | {outside.float().mean():.1%} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
