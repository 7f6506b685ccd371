"""Where each structure starts: paper Kronecker shapes, the SVD corner and the searched structure.

For each target compression and structure the teacher is kronized exactly as `kronedge kronize`
does (`kronize_` with or without calibration statistics), then scored against the teacher on
held-out text it was not calibrated on:
  - per layer kind, the relative error of the weights (||W - W_hat||^2 / ||W||^2) and on the layer's
    held-out inputs (||(W - W_hat) X||^2 / ||W X||^2, X = the teacher's activations);
  - the relative error of the model's last hidden states, ||h_student - h_teacher||^2 / ||h_teacher||^2,
    the starting point distillation works from;
  - params, GFLOPs at sequence 128, and the seconds the plan took.

    python benchmarks/structure_search.py --teacher builtin:minilm --compressions 5 10 20 \
        --calibration sst2 --heldout-task sst2 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

# (label, structure, allocation, data-aware fit)
VARIANTS = (
    ("paper", "paper", "global", False),
    ("paper + data-aware fit", "paper", "global", True),
    ("svd", "svd", "global", False),
    ("svd + data-aware fit", "svd", "global", True),
    ("search, uniform", "search", "uniform", True),
    ("search, global", "search", "global", True),  # the default: budget pooled per role, guarded by the corners
    ("search, across roles", "search", "across-roles", True),
)


def heldout_texts(task: str, limit: int) -> list:
    from kronedge.data import load_task

    texts = load_task(task, split="dev").texts
    return texts[:: max(1, len(texts) // limit)][:limit]


def hidden_error(teacher, student, tokenizer, texts) -> float:
    import torch

    num = den = 0.0
    with torch.no_grad():
        for text in texts:
            pair = tuple(text) if isinstance(text, (tuple, list)) else (text,)
            enc = tokenizer(*pair, truncation=True, max_length=128, return_tensors="pt")
            h_t = teacher(**enc).last_hidden_state
            h_s = student(**enc).last_hidden_state
            num += float(((h_s - h_t) ** 2).sum())
            den += float((h_t ** 2).sum())
    return num / den


def layer_errors(teacher, plan, heldout_stats) -> dict[str, dict[str, float]]:
    from kronedge.structure import fit_report

    modules = dict(teacher.named_modules())
    per_role = defaultdict(lambda: defaultdict(list))
    for layer in plan.layers:
        report = fit_report(layer.name, modules[layer.name].weight, layer.kron, heldout_stats)
        per_role[layer.role]["weights"].append(report.error_plain)
        if report.error_weighted is not None:  # the word embeddings are fitted and scored unweighted
            per_role[layer.role]["heldout_inputs"].append(report.error_weighted)
    return {role: {k: sum(v) / len(v) for k, v in d.items()} for role, d in per_role.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="builtin:minilm")
    parser.add_argument("--compressions", nargs="+", type=float, default=[5.0, 10.0, 20.0])
    parser.add_argument("--calibration", default="sst2", help="calibration text (GLUE task, corpus or file)")
    parser.add_argument("--heldout-task", default="sst2", help="GLUE task whose dev split scores the starts")
    parser.add_argument("--heldout", type=int, default=128, help="held-out sentences")
    parser.add_argument("--variants", nargs="+", default=[v[0] for v in VARIANTS])
    parser.add_argument("--out", type=Path, default=RESULTS / "structure_search.json")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoTokenizer

    from kronedge.calibration import HOLDOUT_EVERY, calibration_texts, collect_input_stats
    from kronedge.planner import KronConfig
    from kronedge.surgery import kronize_
    from kronedge.teachers import load_teacher

    torch.manual_seed(0)
    loaded = load_teacher(args.teacher, head="base")
    teacher = loaded.model.eval()
    tokenizer = AutoTokenizer.from_pretrained(loaded.tokenizer_dir)
    # with a held-out share, as compress collects them for a search (the fits use every text)
    stats = collect_input_stats(teacher, tokenizer, calibration_texts(args.calibration), holdout_every=HOLDOUT_EVERY)
    heldout = heldout_texts(args.heldout_task, args.heldout)
    heldout_stats = collect_input_stats(teacher, tokenizer, heldout)

    rows = []
    for compression in args.compressions:
        for label in args.variants:
            structure, allocation, aware = next(v[1:] for v in VARIANTS if v[0] == label)
            student = copy.deepcopy(teacher)
            start = time.perf_counter()
            plan = kronize_(student, KronConfig(compression=compression, structure=structure, allocation=allocation),
                            stats=stats if aware else None)
            seconds = time.perf_counter() - start
            row = {"target": compression, "variant": label, "structure": structure, "allocation": allocation,
                   "data_aware": aware, "params": plan.params_student, "compression": round(plan.compression, 3),
                   "gflops_seq128": round(plan.flops_student / 1e9, 3), "plan_seconds": round(seconds, 1),
                   "hidden_error": hidden_error(teacher, student.eval(), tokenizer, heldout),
                   "layers": layer_errors(teacher, plan, heldout_stats),
                   "shapes": sorted({str(l.kron) for l in plan.layers})[:8]}
            rows.append(row)
            write_results(args, argv, rows, len(heldout))
            print(f"[structure] {compression:g}x {label}: hidden {row['hidden_error']:.3f}, "
                  f"{row['compression']}x, {row['gflops_seq128']} GFLOPs, {seconds:.0f} s", flush=True)

def write_results(args, argv, rows, heldout_count) -> None:
    """Both result files, rewritten after every row so a long run keeps what it has measured."""
    from kronedge.artifact import write_json_atomic
    from runtime.hostinfo import machine, versions

    command = "python benchmarks/structure_search.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    host = {**machine(), "versions": versions(("torch", "transformers", "numpy"))}
    meta = {"teacher": args.teacher, "command": command, "host": host, "platform": platform.platform(),
            "load_average": [round(x, 1) for x in os.getloadavg()], "calibration": args.calibration,
            "heldout": f"{args.heldout_task} dev, {heldout_count} texts"}
    write_json_atomic(args.out, {**meta, "rows": rows})
    roles = ("embedding", "attention", "ffn_up", "ffn_down")
    lines = ["# Starting points of the structures (no training)", "",
             f"Teacher `{args.teacher}`; calibration text `{args.calibration}` (256 texts); scored on held-out "
             f"{meta['heldout']}. Command: `{command}`.", "",
             f"Machine: {json.dumps(meta['host'])}; load average when written {meta['load_average']} "
             "(a shared machine: plan seconds are not speeds).", "",
             "`hidden` = ||h_student - h_teacher||^2 / ||h_teacher||^2 of the last hidden states on the held-out text: "
             "the start distillation works from, of the student exactly as built (this is where the data-aware fit "
             "shows). Per layer kind: what the row's factor shapes can reach, refitted on the held-out statistics "
             "(relative squared error of the weights / on the layer's held-out inputs), so rows with the same shapes "
             "show the same figures whatever their fit. Lower is better; 1 = as far as zeros.", "",
             "| target | structure | compression | GFLOPs@128 | hidden | " + " | ".join(roles) + " | plan s |",
             "|---:|---|---:|---:|---:|" + "---|" * len(roles) + "---:|"]
    for r in rows:
        cells = " | ".join(f"{r['layers'][k]['weights']:.3f} / " + (f"{r['layers'][k]['heldout_inputs']:.3f}"
                                                                    if "heldout_inputs" in r["layers"][k] else "-")
                           if k in r["layers"] else "-" for k in roles)
        lines.append(f"| {r['target']:g}x | {r['variant']} | {r['compression']:.2f}x | {r['gflops_seq128']:.2f} | "
                     f"{r['hidden_error']:.3f} | {cells} | {r['plan_seconds']:.0f} |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
