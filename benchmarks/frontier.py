"""The accuracy / size / speed frontier of the structures: paper Kronecker, searched Kronecker, SVD,
a smaller dense BERT, and shallower searched students, against TinyBERT-4L-312's shape.

Per point: int8 `model.onnx` bytes, x86 latency at 1 ORT thread (batch 1, seq 128, all models
interleaved in one `kronedge bench` so a load change hits them alike), executed cortex-a72 (Pi 4)
instructions of one inference under QEMU, and, when `--runs` names trained `kronedge compress`
artifacts, the dev metric per task (SST-2 accuracy, CoLA MCC; mean over seeds). Speed and size do not depend on the weights, so
the speed students are built without training: `kronedge kronize` of the teacher (its real weights,
which the search needs to pick shapes), the dense-small student sliced from it, and the reference
with random weights.

    python benchmarks/frontier.py --work /tmp/frontier [--points svd-5x search-5x ...] [--runs RUN_DIR ...]

Writes benchmarks/results/frontier.{json,md,png}; every row carries the commands that made it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("KRONEDGE_QEMU_CACHE", str(ROOT / "device_tests" / ".cache"))
RESULTS = ROOT / "benchmarks" / "results"
REFERENCE = "tinybert-4l-312"

class Point(NamedTuple):
    label: str
    method: str  # kronecker | dense-small | reference
    structure: str | None
    compression: float | None  # counts against the full teacher
    layers: int | None = None  # kept encoder layers
    ffn: str = "factored"  # or "neurons" (--ffn neurons)
    vocabulary: str = "full"  # or "task" (--vocabulary task: its speed student is a trained run, see build)


POINTS = [
    *[Point(f"paper-{c}x", "kronecker", "paper", c) for c in (5, 10, 20)],
    *[Point(f"svd-{c}x", "kronecker", "svd", c) for c in (5, 10, 20)],
    Point("svd-5.5x", "kronecker", "svd", 5.5),  # what `kronedge compress` built by default before session 17
    *[Point(f"search-{c}x", "kronecker", "search", c) for c in (5, 10, 20)],
    *[Point(f"dense-small-{c}x", "dense-small", None, c) for c in (5, 10, 20)],
    Point("search-10x-3L", "kronecker", "search", 10, 3),
    Point("search-20x-3L", "kronecker", "search", 20, 3),
    Point("search-20x-2L", "kronecker", "search", 20, 2),
    *[Point(f"neurons-{c}x", "kronecker", "svd", c, ffn="neurons") for c in (10, 20)],
    Point("neurons-20x-3L", "kronecker", "svd", 20, 3, "neurons"),
    Point("neurons-taskvocab-20x", "kronecker", "svd", 20, ffn="neurons", vocabulary="task"),
    # `compress --structure search` with the default levers: the FFN's width is searched too (ffn_width.md)
    Point("search-neurons-taskvocab-20x", "kronecker", "search", 20, ffn="neurons", vocabulary="task"),
    Point(REFERENCE, "reference", None, None),
]


def label_of(method: str, structure: str | None, target, layers: int | None, ffn: str = "factored",
             vocabulary: str | None = None) -> str:
    """The point label of a trained run's settings (the inverse of POINTS)."""
    if method == "dense-small":
        return f"dense-small-{target}x"
    base = structure or "svd"
    if ffn == "neurons":  # the points' neurons students have SVD's other layers; another structure is named
        base = "neurons" if base == "svd" else f"{base}-neurons"
    if vocabulary == "task":
        base += "-taskvocab"
    return f"{base}-{target}x" + (f"-{layers}L" if layers else "")


def sh(cmd: list[str], log: list[str]) -> None:
    log.append(shlex.join(cmd))
    print("$", log[-1], flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def build(point, teacher: str, work: Path, calibration: str, runs: list[Path]) -> tuple[Path, list[str]]:
    """The untrained artifact of one point, and the commands that made it.

    A task-vocabulary point's embedding keeps the rows of the tokens in a task's training text, which only `compress`
    reads, so its speed student is a trained run of that point among ``runs`` (SST-2's, lowest seed, first): size
    and speed depend on its shapes, not on its weights."""
    label, method, structure, compression, layers, ffn, vocabulary = point
    out = work / "artifacts" / label
    commands: list[str] = []
    if vocabulary == "task":
        trained = sorted((r for r in runs if _run_label(r) == label), key=lambda r: (_run_task(r) != "sst2", str(r)))
        if not trained:
            raise SystemExit(f"{label}: give a trained `kronedge compress ... --vocabulary task` artifact of this point "
                             "in --runs; its speed student is that artifact")
        commands.append(f"# the trained artifact {trained[0]} (`kronedge compress` of the point; see its kronedge.json)")
        return trained[0], commands
    if method == "kronecker":
        cmd = ["kronedge", "kronize", teacher, "--compression", str(compression), "--structure", structure,
               "--out", str(out)]
        if structure == "search" or ffn == "neurons":  # to pick shapes or neurons; the rest do not depend on it
            cmd += ["--calibration", calibration]
        if ffn != "factored":
            cmd += ["--ffn", ffn]
        if layers is not None:
            cmd += ["--layers", str(layers)]
        if not out.exists():
            sh(cmd, commands)
        else:
            commands.append(shlex.join(cmd))
        return out, commands
    py = (f"python benchmarks/frontier.py --work {work} --points {label}  # "
          + ("dense_small_student(teacher, core params of the paper plan)" if method == "dense-small"
             else "load_teacher('random:tinybert-4l-312') saved as an artifact"))
    commands.append(py)
    if out.exists():
        return out, commands
    from kronedge.artifact import save_artifact
    from kronedge.kron_config import KronConfig
    from kronedge.students import DenseSmallStudent, build_student
    from kronedge.teachers import load_teacher

    spec = teacher if method == "dense-small" else f"random:{REFERENCE}"
    loaded = load_teacher(spec, head="sequence-classification", num_labels=2, seed=0)
    model = loaded.model
    if method == "dense-small":
        model, _ = build_student(model, DenseSmallStudent(KronConfig(compression=compression)))
    save_artifact(model.eval(), out, loaded.tokenizer_dir, {"teacher": spec, "method": method, "training": None})
    return out, commands


def export(artifact: Path, target: str, work: Path, commands: list[str]) -> Path:
    out = work / f"exports-{target}" / artifact.name
    # The speed students are untrained, with a random head: their logits are near zero, so the int8 SQNR check of a
    # trained model (20 dB) does not apply; 10 dB still catches a broken graph.
    cmd = ["kronedge", "export", str(artifact), "--target", target, "--quantize", "int8", "--sqnr-floor", "10",
           "--out", str(out)]
    if not (out / "model.onnx").exists():
        sh(cmd, commands)
    else:
        commands.append(shlex.join(cmd))
    return out


def _run_label(run: Path) -> str:
    """The point label of a trained compress artifact."""
    c = json.loads((run / "kronedge.json").read_text())["compress_config"]
    target = c.get("compression")
    target = int(target) if float(target).is_integer() else target
    return label_of(c.get("method", "kronecker"), c.get("structure", "svd"), target, c.get("layers"),
                    c.get("ffn") or "factored", c.get("vocabulary"))


def _run_task(run: Path) -> str | None:
    return json.loads((run / "kronedge.json").read_text()).get("task")


def accuracy(runs: list[Path]) -> dict[str, dict[str, dict]]:
    """Dev metric per point label and task, mean over the seeds found among ``runs`` (compress artifacts)."""
    found: dict[str, dict[str, list]] = {}
    for run in runs:
        recipe = json.loads((run / "kronedge.json").read_text())
        c = recipe["compress_config"]
        label = _run_label(run)
        metrics = recipe["metrics"]
        primary = metrics["primary"]
        found.setdefault(label, {}).setdefault(recipe.get("task"), []).append(
            {"run": str(run), "seed": c.get("seed"), "value": metrics["student"][primary], "metric": primary,
             "teacher": metrics["teacher"][primary]})
    return {label: {task: {"mean": sum(r["value"] for r in rs) / len(rs), "runs": rs} for task, rs in tasks.items()}
            for label, tasks in found.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="builtin:minilm")
    parser.add_argument("--calibration", default="sst2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/kronedge-frontier"))
    parser.add_argument("--points", nargs="+", default=[p.label for p in POINTS])
    parser.add_argument("--iters", type=int, default=30, help="timed x86 runs per model")
    parser.add_argument("--no-arm", action="store_true", help="skip the emulated cortex-a72 instruction counts")
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="trained compress artifacts (accuracy)")
    parser.add_argument("--out", type=Path, default=RESULTS / "frontier.json")
    parser.add_argument("--accuracy-from", type=Path,
                        help="an earlier frontier.json whose measured metrics to keep for points without --runs "
                             "(to re-measure speed after an export change; training does not depend on it)")
    parser.add_argument("--reuse-bench", action="store_true",
                        help="keep WORK's bench-x86.json / bench-a72.json when they hold every point (e.g. to add runs)")
    args = parser.parse_args(argv)

    known = {p.label: p for p in POINTS}
    unknown = [name for name in args.points if name not in known]
    if unknown:
        parser.error(f"unknown points {unknown}; choose among {list(known)}")
    points = [known[name] for name in args.points]
    rows, x86, arm = [], [], []
    for point in points:
        artifact, commands = build(point, args.teacher, args.work, args.calibration, args.runs)
        x86.append(export(artifact, "x86_64", args.work, commands))
        if not args.no_arm:
            arm.append(export(artifact, "arm64", args.work, commands))
        rows.append({"point": point.label, "method": point.method, "structure": point.structure,
                     "target": point.compression, "layers": point.layers, "ffn": point.ffn,
                     "vocabulary": point.vocabulary, "commands": commands})
    names = [r["point"] for r in rows]
    speed = args.work / "bench-x86.json"
    bench_cmds = []
    bench(["kronedge", "bench", *map(str, x86), *sum((["--name", n] for n in names), []), "--seq", "128",
           "--threads", "1", "--iters", str(args.iters), "--no-rss", "-o", str(speed)], bench_cmds, speed, names,
          args.reuse_bench)
    by_name = {r["model"]: r for r in json.loads(speed.read_text())["rows"]}
    counts = {}
    if not args.no_arm:
        insn = args.work / "bench-a72.json"
        bench(["kronedge", "bench", *map(str, arm), *sum((["--name", n] for n in names), []), "--target", "arm64",
               "--cpu", "cortex-a72", "--instructions", "--seq", "128", "--threads", "1", "--warmup", "1", "--iters",
               "1", "-o", str(insn)], bench_cmds, insn, names, args.reuse_bench)
        counts = {r["model"]: r["instructions"] for r in json.loads(insn.read_text())["rows"]}
    acc = accuracy(args.runs)
    earlier = carried_accuracy(args.accuracy_from, acc) if args.accuracy_from else {}
    acc = {point: {**earlier.get(point, {}), **acc.get(point, {})} for point in {*earlier, *acc}}
    for row in rows:
        b = by_name[row["point"]]
        row.update({"int8_bytes": b["file_bytes"], "params": b["params"], "x86_p50_ms": round(b["p50_ms"], 3),
                    "x86_p90_ms": round(b["p90_ms"], 3), "a72_instructions": counts.get(row["point"]),
                    "accuracy": acc.get(row["point"])})
    write(args, argv, rows, bench_cmds, json.loads(speed.read_text()))


def carried_accuracy(path: Path, measured: dict) -> dict[str, dict]:
    """The metrics of an earlier frontier.json per point and task, for every (point, task) without a new run; each
    entry keeps the command that first measured it (an entry carried before keeps its own ``carried_from``)."""
    earlier = json.loads(path.read_text())
    carried: dict[str, dict] = {}
    for row in earlier["rows"]:
        for task, entry in (row.get("accuracy") or {}).items():
            if task not in measured.get(row["point"], {}):
                carried.setdefault(row["point"], {})[task] = {"carried_from": earlier["command"], **entry}
    return carried


def bench(cmd: list[str], log: list[str], out: Path, names: list[str], reuse: bool) -> None:
    """Run one ``kronedge bench`` command, or with ``reuse`` keep its earlier output when it covers ``names``."""
    if reuse and out.exists() and set(names) <= {r["model"] for r in json.loads(out.read_text())["rows"]}:
        log.append(json.loads(out.read_text())["command"])
        return
    sh(cmd, log)


def _cell(accuracy: dict | None, task: str) -> str:
    entry = (accuracy or {}).get(task)
    if entry is None:
        return "-"
    values = [r["value"] for r in entry["runs"]]
    spread = f" ±{(max(values) - min(values)) / 2:.4f}" if len(values) > 1 else ""
    return f"{entry['mean']:.4f}{spread} ({len(values)})"


def write(args, argv, rows, bench_cmds, speed) -> None:
    from kronedge.artifact import write_json_atomic

    command = "python benchmarks/frontier.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    meta = {"command": command, "bench_commands": bench_cmds, "machine": speed["machine"],
            "environment": speed["environment"], "load_average": [round(x, 1) for x in os.getloadavg()],
            "teacher": args.teacher, "reference": f"random:{REFERENCE}"}
    write_json_atomic(args.out, {**meta, "rows": rows})
    ref = next((r for r in rows if r["point"] == REFERENCE), None)
    lines = ["# Frontier: metric, int8 bytes, x86 latency, cortex-a72 instructions", "",
             f"Command: `{command}`. Speed: `{bench_cmds[0]}`" + (f"; instructions: `{bench_cmds[1]}`" if len(bench_cmds) > 1 else ""), "",
             f"Machine: {json.dumps(speed['machine'])}; load average when written {meta['load_average']} (a shared "
             "2-core machine: all models are timed interleaved, batch 1, seq 128, 1 ORT thread).", "",
             f"Versions: {json.dumps(speed['environment'])}.", "",
             "Speed students are untrained (`kronedge kronize` of the teacher; size and speed do not depend on the "
             "weights), except a task-vocabulary point's, which is its trained SST-2 run (its rows come from the "
             "training text); the metric columns are the mean dev metric (SST-2 accuracy, CoLA Matthews correlation) of "
             "trained `kronedge compress` runs of the same point, ± half the range of the seeds and (the number of "
             "seeds) (runs listed in frontier.json), '-' where none was run."
             + (f" Metrics of points without new runs are carried from `{args.accuracy_from}` (each entry names the "
                "command that measured it: `carried_from` in frontier.json); only speed and size were re-measured."
                if args.accuracy_from else ""), "",
             "| point | params | int8 MB | x86 p50 ms | a72 instructions (M) | SST-2 dev | CoLA dev MCC | vs TinyBERT bytes / ms / insn |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        a = r["accuracy"]
        insn = r["a72_instructions"]
        rel = "-"
        if ref is not None:
            rel = f"{r['int8_bytes'] / ref['int8_bytes']:.2f} / {r['x86_p50_ms'] / ref['x86_p50_ms']:.2f} / " + (
                f"{insn / ref['a72_instructions']:.2f}" if insn and ref["a72_instructions"] else "-")
        lines.append(f"| {r['point']} | {r['params']:,} | {r['int8_bytes'] / 1e6:.2f} | {r['x86_p50_ms']:.1f} | "
                     f"{insn / 1e6 if insn else float('nan'):,.0f} | "
                     f"{_cell(a, 'sst2')} | {_cell(a, 'cola')} | {rel} |")
    lines += ["", "Commands per row (build, export x86_64, export arm64):", ""]
    lines += [f"- {r['point']}: " + "; ".join(f"`{c}`" for c in r["commands"]) for r in rows]
    md = args.out.with_suffix(".md")
    # A hand-written "## Notes" section (what the numbers mean) survives a re-run; the table above it is regenerated.
    notes = md.read_text().partition("\n## Notes")[2] if md.exists() else ""
    md.write_text("\n".join(lines) + "\n" + ("\n## Notes" + notes if notes else ""))
    plot(rows, args.out.with_suffix(".png"))
    print("\n".join(lines))


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = (("sst2", "SST-2 dev accuracy"), ("cola", "CoLA dev MCC"))
    axes_x = (("int8_bytes", "int8 model.onnx (MB)"), ("x86_p50_ms", "x86 p50 ms, 1 thread, seq 128"))
    fig, axes = plt.subplots(len(tasks), len(axes_x), figsize=(11, 8.4))
    for row_axes, (task, ylabel) in zip(axes, tasks):
        for ax, (key, xlabel) in zip(row_axes, axes_x):
            for r in rows:
                entry = (r["accuracy"] or {}).get(task)
                if entry is None:
                    continue
                x = r[key] / 1e6 if key == "int8_bytes" else r[key]
                ax.scatter([x], [entry["mean"]])
                ax.annotate(r["point"], (x, entry["mean"]), fontsize=7)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{ylabel} (mean of seeds)")
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
