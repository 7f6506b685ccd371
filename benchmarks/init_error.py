"""How close each factorisation starts to the teacher: relative Frobenius error of the initial weights.

For every compressed layer the student's dense equivalent W' is rebuilt from its factors (sum of
A_r ⊗ B_r for Kronecker layers, U V for truncated-SVD layers) and compared with the teacher's W:
error = ||W - W'||_F / ||W||_F, averaged per layer kind. Both students are built by the same code
`kronedge compress` uses (`build_student`), at equal parameter budgets, so this explains the
starting points behind the accuracy table. Seconds on a CPU, no data needed.

    python benchmarks/init_error.py --teacher builtin:minilm --compressions 5 10 --ranks 1 4
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
KINDS = ("word_embeddings", "query", "key", "value", "attention.output", "intermediate", "output")


def kind_of(name: str) -> str:
    if name.endswith("word_embeddings"):
        return "word_embeddings"
    if name.endswith("attention.output.dense"):
        return "attention.output"
    for kind in ("query", "key", "value", "intermediate"):
        if f".{kind}" in name:
            return kind
    return "output"


def dense_equivalent(module):
    """The dense weight a factorised module computes (teacher layout: Linear (out, in), Embedding (V, d))."""
    import torch

    from kronedge.layers import KroneckerEmbedding, KroneckerLinear
    from kronedge.lowrank import LowRankEmbedding, LowRankLinear

    with torch.no_grad():
        if isinstance(module, KroneckerLinear):
            return sum(torch.kron(module.a[r], module.b[r]) for r in range(module.a.shape[0]))
        if isinstance(module, KroneckerEmbedding):
            v = module.a.shape[0]
            return torch.einsum("vjr,rk->vjk", module.a, module.b).reshape(v, -1)
        if isinstance(module, LowRankLinear):
            return module.u @ module.v
        if isinstance(module, LowRankEmbedding):
            return module.a @ module.b
    return None


def errors(teacher, student) -> dict[str, float]:
    teacher_modules = dict(teacher.named_modules())
    per_kind = defaultdict(list)
    for name, module in student.named_modules():
        approx = dense_equivalent(module)
        if approx is None:
            continue
        w = teacher_modules[name].weight.detach()
        per_kind[kind_of(name)].append(float((w - approx).norm() / w.norm()))
    return {k: sum(v) / len(v) for k, v in per_kind.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="builtin:minilm")
    parser.add_argument("--compressions", nargs="+", type=float, default=[5.0, 10.0])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 4], help="Kronecker sums per layer to try")
    parser.add_argument("--out", type=Path, default=RESULTS / "init_error.json")
    args = parser.parse_args(argv)

    from kronedge.artifact import write_json_atomic
    from kronedge.students import build_student, core_params, student_config
    from kronedge.training import versions as _versions
    from kronedge.pipeline import kron_config
    from kronedge.teachers import load_teacher

    teacher = load_teacher(args.teacher).model.eval()
    rows = []
    for compression in args.compressions:
        for method, rank in [("kronecker", r) for r in args.ranks] + [("svd", 1)]:
            try:
                student, _ = build_student(teacher, student_config(method, kron_config(compression=compression, rank=rank)))
            except ValueError as e:  # a rank the planner cannot place at this budget
                print(f"[init-error] {compression}x {method} rank {rank}: {e}")
                continue
            row = {"compression_target": compression, "method": method, "kron_rank": rank if method == "kronecker" else None,
                   "params": core_params(student), "compression": round(core_params(teacher) / core_params(student), 3),
                   "relative_error": errors(teacher, student)}
            rows.append(row)
            print(f"[init-error] {compression}x {method}{f' rank {rank}' if method == 'kronecker' else ''}: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in row["relative_error"].items()))
    command = "python benchmarks/init_error.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"teacher": args.teacher, "command": command, "versions": _versions(), "platform": platform.platform()}
    write_json_atomic(args.out, {**meta, "rows": rows})
    lines = ["# Initial approximation error: nearest Kronecker product vs truncated SVD", "",
             f"Teacher `{args.teacher}`. Command: `{command}`. Versions: {meta['versions']}.", "",
             "||W - W'||_F / ||W||_F of each compressed layer's starting weights against the teacher's, mean per "
             "layer kind (0 = exact, 1 = as far as zeros). Both students come from `build_student` at the same "
             "parameter budget.", "",
             "| target | method | params | compression | " + " | ".join(KINDS) + " |",
             "|---:|---|---:|---:|" + "---:|" * len(KINDS)]
    for r in rows:
        label = f"kronecker, {r['kron_rank']} sum(s)" if r["method"] == "kronecker" else "truncated SVD"
        cells = " | ".join(f"{r['relative_error'][k]:.3f}" if k in r["relative_error"] else "-" for k in KINDS)
        lines.append(f"| {r['compression_target']:g}x | {label} | {r['params']:,} | {r['compression']:.2f}x | {cells} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"[init-error] wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
