"""How much of other text a task's kept vocabulary (``compress --vocabulary task``) covers, and what the tokens left
out read instead.

    python benchmarks/vocab_coverage.py [--task sst2] [--neighbours 12]

Keeps the tokens of the task's training text (as ``compress`` does), then reports the share of the dev split's and
of WikiText-2's (stage 1's default corpus) tokens and sentences outside it, and the nearest kept token of the first
dev tokens left out (cosine in MiniLM's word embedding, as ``TrimmedEmbedding`` picks it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.hostinfo import provenance  # noqa: E402


def outside(tokenizer, texts, kept: set[int]) -> tuple[float, float, list[int]]:
    """(share of tokens outside ``kept``, share of texts with at least one, the ids outside in order of appearance)."""
    encoded = [ids for ids in tokenizer(list(texts), truncation=True, max_length=128)["input_ids"]]
    missing = [i for ids in encoded for i in ids if i not in kept]
    tokens = sum(len(ids) for ids in encoded)
    return len(missing) / tokens, sum(any(i not in kept for i in ids) for ids in encoded) / len(encoded), missing


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--neighbours", type=int, default=12)
    args = parser.parse_args()
    print("\n".join(provenance(sys.argv, ("torch", "transformers"))))

    from kronedge.data import load_corpus, load_task
    from kronedge.teachers import load_teacher
    from kronedge.training import load_tokenizer
    from kronedge.vocab import KeptVocabulary

    teacher = load_teacher("builtin:minilm")
    tokenizer = load_tokenizer(teacher.tokenizer_dir)
    vocabulary = KeptVocabulary.of_texts(tokenizer, load_task(args.task, "train").texts, 128)
    kept = set(vocabulary.keep_ids)
    print(f"\n{args.task} train keeps {len(kept):,} of {tokenizer.vocab_size:,} tokens\n")
    print("| text | tokens outside | texts with one outside |\n|---|---|---|")
    dev_missing = []
    for name, texts in ((f"{args.task} dev", load_task(args.task, "dev").texts), ("WikiText-2 (stage 1)", load_corpus())):
        flat = [t if isinstance(t, str) else " ".join(t) for t in texts]
        tokens, sentences, missing = outside(tokenizer, flat, kept)
        dev_missing = dev_missing or missing
        print(f"| {name} | {tokens:.1%} | {sentences:.1%} |")

    trimmed = vocabulary.trim_(teacher.model)
    keep_ids = sorted(kept)
    firsts = list(dict.fromkeys(dev_missing))[:args.neighbours]
    pairs = [f"{tokenizer.convert_ids_to_tokens(i)} -> {tokenizer.convert_ids_to_tokens(keep_ids[int(trimmed.row_of_id[i])])}"
             for i in firsts]
    print(f"\nfirst dev tokens left out and what they read: {', '.join(pairs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
