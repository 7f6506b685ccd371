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

    from runtime.hostinfo import cpu_model

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "bf16": cpu_has_bf16(),
            "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    else:
        info["note"] = "2-core machine shared with other jobs while measuring"
    return info


def describe_machine(m: dict) -> str:
    if m.get("gpu"):
        return f"{m['gpu']} ({m['cores']} CPU cores, {m['cpu']})"
    return f"{m['cpu']}, {m['cores']} cores (shared), torch threads {m['torch_threads']}, bf16 autocast: {m['bf16']}"


def _stderr(row: dict) -> float:
    n = row.get("dev_examples") or {"sst2": 872, "rte": 277, "cola": 1043}.get(row["task"], 0)
    p = row["value"]
    return (p * (1 - p) / n) ** 0.5 if n and row["metric"] == "accuracy" else float("nan")


TABLE_HEAD = ["| task | method | params | compression | metric | value | teacher | % of teacher | train s |",
              "|---|---|---:|---:|---|---:|---:|---:|---:|"]


def _table_row(r: dict, method: str) -> str:
    err = _stderr(r)
    spread = f" ± {err:.4f}" if err == err else ""  # no binomial error for correlations
    return (f"| {r['task']} | {method} | {r['params']:,} | {r['compression']:.2f}x | {r['metric']} | "
            f"{r['value']:.4f}{spread} | {r['teacher_value']:.4f} | {100 * r['value'] / r['teacher_value']:.1f}% | "
            f"{r['train_seconds']:.0f} |")


def markdown(rows: list[dict], meta: dict) -> str:
    """One table for the CPU benchmark budget (and the default recipe), then one per other budget."""
    lines = ["# Accuracy benchmark (GLUE dev)", "",
             f"Teacher: `{meta['teacher']}` fine-tuned per task. CPU machine: {describe_machine(meta['machine'])}. "
             f"Versions: {meta['versions']}.", "",
             "Commands (each row also records its own `kronedge compress` command):", "",
             *[f"    {c}" for c in meta["commands"]], "",
             "Params are embedding + encoder parameters (no pooler, no head); compression = teacher / student.",
             "± is one binomial standard error of an accuracy on the dev set (sqrt(p(1-p)/n)): differences "
             "smaller than about two of them are within run-to-run noise. The best epoch on dev is kept, as in "
             "the paper's dev-set figures.", ""]
    if meta.get("findings"):
        lines += ["## What the rows show", "", *[f"- {f}" for f in meta["findings"]], ""]
    lines += ["## CPU budget (one seed per row)", "", *TABLE_HEAD]

    def order(r):
        return (r["task"], r["method"] != "teacher", r.get("target_compression", 1.0), r.get("budget") == "default",
                ["teacher", *TABLE_ORDER].index(r["method"]), r.get("seed", 0))

    cpu = [r for r in rows if r.get("budget", "benchmark") in ("benchmark", "default")]
    for r in sorted(cpu, key=order):
        lines.append(_table_row(r, r["method"] + (" (default recipe)" if r.get("budget") == "default" else "")))
    lines += ["", "Budget (same for every method of a task): " + json.dumps(meta["budgets"]), ""]
    others = sorted({r.get("budget", "benchmark") for r in rows} - {"benchmark", "default"})
    for budget in others:
        group = sorted((r for r in rows if r.get("budget") == budget), key=order)
        first = next(r for r in group if r["method"] != "teacher") if any(r["method"] != "teacher" for r in group) else group[0]
        lines += [f"## Budget `{budget}`", "", f"Machine: {describe_machine(first.get('machine', meta['machine']))}. "
                  f"Versions: {first.get('versions', meta['versions'])}.", "",
                  "Recipe: " + json.dumps(first.get("recipe", {})), "", *TABLE_HEAD]
        for r in group:
            label = r["method"] + (f" (seed {r['seed']})" if r.get("seed") else "")
            if r.get("epochs_run") is not None:
                label += f", {r['epochs_run']} ep"
            lines.append(_table_row(r, label))
        lines += [""] + [f"Note ({r['method']}): {r['note']}" for r in group if r.get("note")]
        lines += [f"Command ({r['method']}): `{r['command']}`" for r in group
                  if r["method"] != "teacher" and len(group) <= 2] + [""]
    return "\n".join(lines)


def _stage_epochs(run_dir: Path, stage: str) -> int | None:
    """Epochs a stage actually ran (a time budget may have trimmed them)."""
    metrics = run_dir / stage / "metrics.json"
    if not metrics.is_file():
        return None
    history = json.loads(metrics.read_text()).get("history") or []
    return len(history) or None


def merge(parts: list[Path], out: Path) -> None:
    """Add the rows of other runs' result files (e.g. from a GPU machine) to ``out``, skipping duplicates."""
    from kronedge.artifact import write_json_atomic

    base = json.loads(out.read_text())
    def key(r):
        return r["task"], r["method"], r.get("budget", "benchmark"), r.get("target_compression"), r.get("seed", 0)

    have = {key(r) for r in base["rows"]}
    added = 0
    for part in parts:
        data = json.loads(part.read_text())
        for r in data["rows"]:
            if key(r) not in have:
                base["rows"].append(r)
                have.add(key(r))
                added += 1
        base["commands"] += [c for c in data.get("commands", []) if c not in base["commands"]]
    write_json_atomic(out, base)
    out.with_suffix(".md").write_text(markdown(base["rows"], base))
    print(f"[bench] merged {added} new rows from {len(parts)} file(s) into {out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="*", default=["sst2", "rte"],
                        help="tasks to measure (none: only --default-run / --finding)")
    parser.add_argument("--finding", action="append", default=[],
                        help="a finding to add under the tables (with the command that measured it)")
    parser.add_argument("--compressions", nargs="+", type=float, default=[5.5, 10.0])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--teacher", default="builtin:minilm",
                        help="teacher spec; one that already has the task's head (a fine-tuned dir) is used as is")
    parser.add_argument("--stage1-examples", type=int, default=2000, help="0 = all")
    parser.add_argument("--stage2-examples", type=int, default=8000, help="0 = all")
    parser.add_argument("--stage1-lr", type=float, default=5e-4)
    parser.add_argument("--stage2-lr", type=float, default=2e-4)
    parser.add_argument("--stage1-epochs", type=int, default=1)
    parser.add_argument("--stage2-epochs", type=int, default=None, help="default: per task (TASK_DEFAULTS)")
    parser.add_argument("--corpus", default=None, help="stage-1 corpus (default: WikiText-2 validation split)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rank", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="minutes for each row's training (a teacher fine-tune included, as for kronedge compress)")
    parser.add_argument("--min-steps", type=int, default=600,
                        help="teacher fine-tune and stage 2 train at least this many steps (0 = off: fixed epochs)")
    parser.add_argument("--patience", type=int, default=2, help="early stop after this many epochs without a "
                        "better dev score (0 = never)")
    parser.add_argument("--budget", default="benchmark",
                        help="name of this budget; rows are keyed by (task, method, compression, budget, seed)")
    parser.add_argument("--loss-weights", default="", help="KD loss weights as for kronedge compress, e.g. attention=0.1")
    parser.add_argument("--default-run", type=Path, default=None,
                        help="run dir of a finished `kronedge compress` (the default recipe) to add as its own row")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="only merge the rows of these result files into --out and rewrite the table")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "accuracy.json")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-accuracy")
    args = parser.parse_args(argv)
    if args.merge:
        merge(args.merge, args.out)
        return

    import torch

    from kronedge.artifact import write_json_atomic
    from kronedge.commands.distill import _weights
    from kronedge.compress import CompressConfig, compress
    from kronedge.evaluation import evaluate_artifact
    from kronedge.finetune import default_teacher_config, finetune, teacher_has_head
    from kronedge.students import core_params
    from kronedge.training import versions as _versions
    from kronedge.data import get_task
    from kronedge.teachers import load_teacher

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
    here, versions = machine(), _versions()
    meta = {"teacher": args.teacher, "commands": commands, "versions": previous.get("versions", versions),
            "machine": previous.get("machine", here), "budgets": previous.get("budgets", budgets),
            "findings": previous.get("findings", []) + [f for f in args.finding if f not in previous.get("findings", [])]}

    def save():
        write_json_atomic(args.out, {**meta, "rows": rows})
        args.out.with_suffix(".md").write_text(markdown(rows, meta))

    def have(task, method, compression) -> bool:
        return any(r["task"] == task and r["method"] == method and r.get("budget", "benchmark") == args.budget and
                   r.get("seed", 0) == (0 if method == "teacher" else args.seed) and
                   (method == "teacher" or abs(r["target_compression"] - compression) < 1e-9) for r in rows)

    for task in args.tasks:
        spec = get_task(task)
        td = TASK_DEFAULTS.get(task, TASK_DEFAULTS["rte"])
        stage2_epochs = args.stage2_epochs or td["stage2_epochs"]
        if teacher_has_head(args.teacher, task):
            # An already fine-tuned teacher (e.g. copied to a GPU machine): scored here, not retrained.
            teacher_spec, ft = args.teacher, None
            scored = evaluate_artifact(args.teacher, task)
            teacher_value, teacher_seconds, teacher_examples = scored[spec.primary_metric], 0.0, None
            teacher_command = f"kronedge eval {args.teacher} --task {task}"
        else:
            # compress's teacher recipe (more epochs on small data, early stopping) with this task's budget.
            tconf = default_teacher_config(epochs=td["teacher_epochs"], lr=td["teacher_lr"], max_length=td["max_length"],
                                           min_steps=args.min_steps or None, patience=args.patience or None)
            ft = finetune(args.teacher, task, config=tconf)
            teacher_value, teacher_seconds, teacher_examples = ft.metrics[spec.primary_metric], ft.seconds, ft.train_examples
            # With compress's own teacher recipe (1 epoch, lr 5e-5, 128 tokens) the spec resolves to the same
            # cached teacher, so `kronedge compress` with the same options reproduces (and resumes) a row.
            same_recipe = (td["teacher_epochs"], td["teacher_lr"], td["max_length"]) == (1, 5e-5, 128)
            teacher_spec = args.teacher if same_recipe else str(ft.path)
            teacher_command = (f"kronedge finetune {args.teacher} --task {task} --epochs {td['teacher_epochs']} "
                               f"--lr {td['teacher_lr']} --max-length {td['max_length']} --min-steps {args.min_steps} "
                               f"--patience {args.patience}")
        teacher_path = Path(teacher_spec) if ft is None else ft.path
        recipe_text = {"stage1_examples": args.stage1_examples or "all", "stage1_epochs": args.stage1_epochs,
                       "corpus": args.corpus or "wikitext-2", "stage2_examples": args.stage2_examples or "all",
                       "stage2_epochs_max": stage2_epochs, "stage1_lr": args.stage1_lr, "stage2_lr": args.stage2_lr,
                       "batch_size": args.batch_size, "rank": args.rank, "precision": args.precision,
                       "time_budget_min": args.time_budget, "loss_weights": weights or "all 1",
                       "min_steps": args.min_steps or None, "patience": args.patience or None}
        extra = {} if args.budget == "benchmark" else {"machine": here, "versions": versions, "recipe": recipe_text}
        if not have(task, "teacher", None):
            params = core_params(load_teacher(str(teacher_path), head="sequence-classification",
                                              num_labels=spec.num_labels).model)
            rows.append({"task": task, "method": "teacher", "budget": args.budget, "params": params, "compression": 1.0,
                         "target_compression": 1.0, "metric": spec.primary_metric, "value": teacher_value,
                         "teacher_value": teacher_value, "train_seconds": round(teacher_seconds, 1),
                         "train_examples": teacher_examples, "command": teacher_command, **extra})
            save()
        for compression in args.compressions:
            for method in args.methods:
                if have(task, method, compression):
                    print(f"[bench] {task} {method} {compression}x ({args.budget}): already measured, skipped", flush=True)
                    continue
                recipe = RECIPES[method]
                config = CompressConfig(teacher=teacher_spec, task=task, compression=compression, rank=args.rank,
                                        corpus=args.corpus, stage1_examples=args.stage1_examples or None,
                                        stage1_epochs=args.stage1_epochs, stage2_examples=args.stage2_examples or None,
                                        stage1_lr=args.stage1_lr, stage2_lr=args.stage2_lr, stage2_epochs=stage2_epochs,
                                        batch_size=args.batch_size, max_length=td["max_length"], seed=args.seed,
                                        precision=args.precision, loss_weights=weights,
                                        time_budget_s=args.time_budget * 60 if args.time_budget else None,
                                        min_steps=args.min_steps or None, patience=args.patience or None, **recipe)
                print(f"[bench] {task} {method} {compression}x ({args.budget}, seed {args.seed}) ...", flush=True)
                t = time.perf_counter()
                run_dir = args.runs / f"{task}-{compression:g}x-{method}" if args.budget == "benchmark" else \
                    args.runs / f"{task}-{compression:g}x-{method}-{args.budget}-seed{args.seed}"
                result = compress(config, out=None, run_dir=run_dir, resume=True)
                flags = []
                if not recipe["stage1"]:
                    flags.append("--no-stage1")
                if not recipe["stage2_kd"]:
                    flags.append("--no-kd")
                options = {"--rank": args.rank if args.rank != 1 else None, "--corpus": args.corpus,
                           "--stage1-epochs": args.stage1_epochs if args.stage1_epochs != 1 else None,
                           "--batch-size": args.batch_size if args.batch_size != 32 else None,
                           "--seed": args.seed or None, "--precision": None if args.precision == "auto" else args.precision,
                           "--time-budget": args.time_budget,
                           "--min-steps": args.min_steps if args.min_steps != 600 else None,
                           "--patience": args.patience if args.patience != 2 else None}
                more = " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in options.items() if v is not None)
                try:
                    shown_dir = run_dir.relative_to(ROOT)
                except ValueError:
                    shown_dir = run_dir
                rows.append({
                    "task": task, "method": method, "budget": args.budget, "seed": args.seed,
                    "params": result.params_student, "compression": result.compression,
                    "target_compression": compression, "metric": spec.primary_metric,
                    "value": result.student_metrics[spec.primary_metric], "teacher_value": teacher_value,
                    "value_before_training": result.init_metrics[spec.primary_metric],
                    "train_seconds": result.train_seconds, "wall_seconds": round(time.perf_counter() - t, 1),
                    "precision": result.precision, "seconds": result.seconds,
                    "epochs_run": _stage_epochs(run_dir, "stage2"), "stage1_epochs_run": _stage_epochs(run_dir, "stage1"),
                    "command": (f"kronedge compress --teacher {teacher_spec} --task {task} --compression {compression:g} "
                                f"--method {recipe['method']} {' '.join(flags)} --stage1-examples {args.stage1_examples} "
                                f"--stage2-examples {args.stage2_examples} --stage1-lr {args.stage1_lr:g} "
                                f"--stage2-lr {args.stage2_lr:g} --stage2-epochs {stage2_epochs} "
                                f"--max-length {td['max_length']} {more} "
                                + (f"--loss-weights {args.loss_weights} " if args.loss_weights else "")
                                + f"--run-dir {shown_dir}").replace("  ", " "),
                    **extra,
                })
                save()
                print(f"[bench] {task} {method} {compression}x: {spec.primary_metric} "
                      f"{rows[-1]['value']:.4f} (teacher {teacher_value:.4f}), {result.compression:.2f}x, "
                      f"{result.train_seconds:.0f} s, stage-2 epochs {rows[-1]['epochs_run']}", flush=True)
    if args.default_run is not None:
        result = json.loads((args.default_run / "result.json").read_text())
        used = json.loads((args.default_run / "compress_config.json").read_text())
        rows[:] = [r for r in rows if r.get("budget") != "default" or r["task"] != used["task"]]
        rows.append({
            "task": used["task"], "method": "kronecker-kd", "budget": "default", "params": result["params_student"],
            "compression": result["compression"], "target_compression": used["compression"],
            "metric": result["primary_metric"], "value": result["student_metrics"][result["primary_metric"]],
            "teacher_value": result["teacher_metrics"][result["primary_metric"]],
            "value_before_training": result["init_metrics"][result["primary_metric"]],
            "train_seconds": result["train_seconds"], "seconds": result["seconds"], "precision": result["precision"],
            "command": "kronedge compress  # the built-in default recipe: " + json.dumps(
                {k: used.get(k) for k in ("teacher", "stage1_examples", "stage2_examples", "stage1_lr", "stage2_lr",
                                          "loss_weights", "min_steps", "patience", "time_budget_s")}),
            "warnings": result.get("warnings", []),
        })
    save()


if __name__ == "__main__":
    main()
