"""Accuracy benchmark: KroneckerBERT with both KD stages vs its ablations and baselines at equal size.

For every task and compression level it trains, from the same fine-tuned MiniLM teacher:
  kronecker-kd         nearest-Kronecker init, stage 1 (general KD on WikiText-2) + stage 2 (task KD)
  kronecker-no-stage1  the same without stage 1
  kronecker-no-kd      nearest-Kronecker init + plain fine-tuning on the labels (no KD at all)
  svd-kd               truncated-SVD factors of the same layers at (at most) the same parameters, same KD
  dense-small-kd       a narrower, shallower dense BERT at the same size (sliced from the teacher), same KD
and writes one row per run to benchmarks/results/accuracy.json (rows already there are kept and
skipped, so an interrupted benchmark continues where it stopped) plus a Markdown table.

Not a test: real data, real teacher, minutes per row on a CPU.

    python benchmarks/accuracy.py --tasks sst2 rte --compressions 5.5 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Run order: the headline comparison first, so a benchmark cut short still answers it.
METHODS = ["kronecker-kd", "svd-kd", "kronecker-no-kd", "kronecker-no-stage1", "dense-small-kd"]
TABLE_ORDER = ["kronecker-kd", "kronecker-no-stage1", "kronecker-no-kd", "svd-kd", "dense-small-kd"]
RESULTS = ROOT / "benchmarks" / "results"

# method -> CompressConfig overrides
RECIPES = {
    "kronecker-kd": dict(method="kronecker", stage1=True, stage2_kd=True),
    "kronecker-no-stage1": dict(method="kronecker", stage1=False, stage2_kd=True),
    "kronecker-no-kd": dict(method="kronecker", stage1=False, stage2_kd=False),
    "svd-kd": dict(method="svd", stage1=True, stage2_kd=True),
    "dense-small-kd": dict(method="dense-small", stage1=True, stage2_kd=True),
}

# Per-task budgets that fit a shared 2-core CPU; every method of a task gets the same.
TASK_DEFAULTS = {
    "sst2": dict(teacher_epochs=1, teacher_lr=5e-5, stage2_epochs=1, max_length=128),
    "rte": dict(teacher_epochs=3, teacher_lr=3e-5, stage2_epochs=2, max_length=128),
    "cola": dict(teacher_epochs=3, teacher_lr=5e-5, stage2_epochs=2, max_length=64),
}


def machine() -> dict:
    import os

    import torch

    from kronedge.training import cpu_has_bf16

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "bf16": cpu_has_bf16(),
            "platform": platform.platform(), "note": "2-core machine shared with other jobs while measuring"}


def _stderr(row: dict) -> float:
    n = row.get("dev_examples") or {"sst2": 872, "rte": 277, "cola": 1043}.get(row["task"], 0)
    p = row["value"]
    return (p * (1 - p) / n) ** 0.5 if n and row["metric"] == "accuracy" else float("nan")


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Accuracy benchmark (GLUE dev)", "",
             f"Teacher: `{meta['teacher']}` fine-tuned per task. Machine: {meta['machine']['cpu']}, "
             f"{meta['machine']['cores']} cores (shared), torch threads {meta['machine']['torch_threads']}, "
             f"bf16 autocast: {meta['machine']['bf16']}. Versions: {meta['versions']}.", "",
             "Commands (each row also records its own `kronedge compress` command):", "",
             *[f"    {c}" for c in meta["commands"]], "",
             "Params are embedding + encoder parameters (no pooler, no head); compression = teacher / student.",
             "± is one binomial standard error of an accuracy on the dev set (sqrt(p(1-p)/n)): differences "
             "smaller than about two of them are within run-to-run noise. One seed per row.",
             "", "| task | method | params | compression | metric | value | teacher | % of teacher | train s |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|"]
    def order(r):
        return (r["task"], r["method"] != "teacher", r.get("target_compression", 1.0), r.get("budget") == "default",
                ["teacher", *TABLE_ORDER].index(r["method"]))

    for r in sorted(rows, key=order):
        method = r["method"] + (" (default recipe)" if r.get("budget") == "default" else "")
        lines.append(f"| {r['task']} | {method} | {r['params']:,} | {r['compression']:.2f}x | {r['metric']} | "
                     f"{r['value']:.4f} ± {_stderr(r):.4f} | {r['teacher_value']:.4f} | {100 * r['value'] / r['teacher_value']:.1f}% | "
                     f"{r['train_seconds']:.0f} |")
    lines += ["", "Budgets (same for every method of a task): " + json.dumps(meta["budgets"]), ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "rte"])
    parser.add_argument("--compressions", nargs="+", type=float, default=[5.5, 10.0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--teacher", default="builtin:minilm")
    parser.add_argument("--stage1-examples", type=int, default=2000)
    parser.add_argument("--stage2-examples", type=int, default=8000)
    parser.add_argument("--stage1-lr", type=float, default=5e-4)
    parser.add_argument("--stage2-lr", type=float, default=2e-4)
    parser.add_argument("--loss-weights", default="", help="KD loss weights as for kronedge compress, e.g. attention=0.1")
    parser.add_argument("--default-run", type=Path, default=None,
                        help="run dir of a finished `kronedge compress` (the default recipe) to add as its own row")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-accuracy")
    args = parser.parse_args(argv)

    import torch

    from kronedge.artifact import write_json_atomic
    from kronedge.commands.distill import _weights
    from kronedge.compress import CompressConfig, _versions, compress, finetune
    from kronedge.data import get_task
    from kronedge.training import TrainConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    command = "python benchmarks/accuracy.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    weights = _weights(args.loss_weights)
    budgets = {"stage1_examples": args.stage1_examples, "stage2_examples": args.stage2_examples,
               "stage1_lr": args.stage1_lr, "stage2_lr": args.stage2_lr, "loss_weights": weights or "all 1",
               "per_task": TASK_DEFAULTS}
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    rows = previous.get("rows", [])
    earlier = previous.get("commands", []) + ([previous["command"]] if "command" in previous else [])
    commands = [c for c in earlier if c != command] + [command]
    meta = {"teacher": args.teacher, "commands": commands, "versions": _versions(), "machine": machine(),
            "budgets": budgets}

    def save():
        write_json_atomic(args.out, {**meta, "rows": rows})
        args.out.with_suffix(".md").write_text(markdown(rows, meta))

    def have(task, method, compression) -> bool:
        return any(r["task"] == task and r["method"] == method and r.get("budget", "benchmark") == "benchmark" and
                   (method == "teacher" or abs(r["target_compression"] - compression) < 1e-9) for r in rows)

    for task in args.tasks:
        spec = get_task(task)
        td = TASK_DEFAULTS.get(task, TASK_DEFAULTS["rte"])
        tconf = TrainConfig(epochs=td["teacher_epochs"], lr=td["teacher_lr"], batch_size=32, max_length=td["max_length"])
        ft = finetune(args.teacher, task, config=tconf)
        teacher_value = ft.metrics[spec.primary_metric]
        # With compress's own teacher recipe (1 epoch, lr 5e-5, 128 tokens) the spec resolves to the same
        # cached teacher, so `kronedge compress` with the same options reproduces (and resumes) a row.
        same_recipe = (td["teacher_epochs"], td["teacher_lr"], td["max_length"]) == (1, 5e-5, 128)
        teacher_spec = args.teacher if same_recipe else str(ft.path)
        if not have(task, "teacher", None):
            from kronedge.compress import core_params
            from kronedge.teachers import load_teacher

            params = core_params(load_teacher(str(ft.path), head="sequence-classification", num_labels=spec.num_labels).model)
            rows.append({"task": task, "method": "teacher", "params": params, "compression": 1.0, "target_compression": 1.0,
                         "metric": spec.primary_metric, "value": teacher_value, "teacher_value": teacher_value,
                         "train_seconds": round(ft.seconds, 1), "train_examples": ft.train_examples,
                         "command": f"kronedge finetune {args.teacher} --task {task} --epochs {td['teacher_epochs']} "
                                    f"--lr {td['teacher_lr']} --max-length {td['max_length']}"})
            save()
        for compression in args.compressions:
            for method in args.methods:
                if have(task, method, compression):
                    print(f"[bench] {task} {method} {compression}x: already measured, skipped", flush=True)
                    continue
                recipe = RECIPES[method]
                config = CompressConfig(teacher=teacher_spec, task=task, compression=compression,
                                        stage1_examples=args.stage1_examples, stage2_examples=args.stage2_examples,
                                        stage1_lr=args.stage1_lr, stage2_lr=args.stage2_lr,
                                        stage2_epochs=td["stage2_epochs"], max_length=td["max_length"],
                                        loss_weights=weights, **recipe)
                print(f"[bench] {task} {method} {compression}x ...", flush=True)
                t = time.perf_counter()
                run_dir = args.runs / f"{task}-{compression:g}x-{method}"
                result = compress(config, out=None, run_dir=run_dir, resume=True)
                flags = []
                if not recipe["stage1"]:
                    flags.append("--no-stage1")
                if not recipe["stage2_kd"]:
                    flags.append("--no-kd")
                rows.append({
                    "task": task, "method": method, "budget": "benchmark", "params": result.params_student, "compression": result.compression,
                    "target_compression": compression, "metric": spec.primary_metric,
                    "value": result.student_metrics[spec.primary_metric], "teacher_value": teacher_value,
                    "value_before_training": result.init_metrics[spec.primary_metric],
                    "train_seconds": result.train_seconds, "wall_seconds": round(time.perf_counter() - t, 1),
                    "precision": result.precision, "seconds": result.seconds,
                    "command": (f"kronedge compress --teacher {teacher_spec} --task {task} --compression {compression:g} "
                                f"--method {recipe['method']} {' '.join(flags)} --stage1-examples {args.stage1_examples} "
                                f"--stage2-examples {args.stage2_examples} --stage1-lr {args.stage1_lr:g} "
                                f"--stage2-lr {args.stage2_lr:g} --stage2-epochs {td['stage2_epochs']} "
                                f"--max-length {td['max_length']} "
                                + (f"--loss-weights {args.loss_weights} " if args.loss_weights else "")
                                + f"--run-dir {run_dir.relative_to(ROOT)}").replace("  ", " "),
                })
                save()
                print(f"[bench] {task} {method} {compression}x: {spec.primary_metric} "
                      f"{rows[-1]['value']:.4f} (teacher {teacher_value:.4f}), {result.compression:.2f}x, "
                      f"{result.train_seconds:.0f} s", flush=True)
    if args.default_run is not None:
        result = json.loads((args.default_run / "result.json").read_text())
        used = json.loads((args.default_run / "compress_config.json").read_text())
        rows[:] = [r for r in rows if r.get("budget") != "default"]
        rows.append({
            "task": used["task"], "method": "kronecker-kd", "budget": "default", "params": result["params_student"],
            "compression": result["compression"], "target_compression": used["compression"],
            "metric": result["primary_metric"], "value": result["student_metrics"][result["primary_metric"]],
            "teacher_value": result["teacher_metrics"][result["primary_metric"]],
            "value_before_training": result["init_metrics"][result["primary_metric"]],
            "train_seconds": result["train_seconds"], "seconds": result["seconds"], "precision": result["precision"],
            "command": "kronedge compress  # the built-in default recipe: " + json.dumps(
                {k: used[k] for k in ("stage1_examples", "stage2_examples", "stage1_lr", "stage2_lr", "loss_weights")}),
        })
    save()


if __name__ == "__main__":
    main()
