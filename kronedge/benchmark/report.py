"""Reading a bench report: ratios between models, and the Markdown and terminal renderings of it."""

from __future__ import annotations

PROFILE_TOP = 8  # op types shown per model in the Markdown profile tables (the JSON keeps them all)


def group_key(entry: dict) -> str:
    return f"threads={entry['threads']},batch={entry['batch']},seq={entry['seq']}"


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(group_key(r), []).append(r)
    return out


def add_ratios(rows: list[dict]) -> None:
    """Ratios of every row to the baseline row of its grid cell (speedup = baseline p50 / p50)."""
    base = {group_key(r): r for r in rows if r["baseline"]}
    for r in rows:
        b = base[group_key(r)]
        r["speedup_vs_baseline"] = b["p50_ms"] / r["p50_ms"] if r["p50_ms"] else None
        r["latency_ratio_vs_baseline"] = r["p50_ms"] / b["p50_ms"] if b["p50_ms"] else None
        r["size_ratio_vs_baseline"] = r["file_bytes"] / b["file_bytes"] if b["file_bytes"] else None
        r["params_ratio_vs_baseline"] = (r["params"] / b["params"]) if r["params"] and b["params"] else None
        r["instructions_ratio_vs_baseline"] = (r["instructions"] / b["instructions"]
                                               if r.get("instructions") and b.get("instructions") else None)


def speedup_matrix(rows: list[dict]) -> dict:
    """{group: {model_a: {model_b: p50_b / p50_a}}}: how many times faster a is than b."""
    return {g: {a["model"]: {b["model"]: b["p50_ms"] / a["p50_ms"] for b in rs} for a in rs}
            for g, rs in groups(rows).items()}


def _fmt(v, spec=".1f") -> str:
    return "—" if v is None else format(v, spec)


def _quant_text(q) -> str:
    return "fp32" if not q else (q if isinstance(q, str) else q.get("name") or q.get("mode") or "int8")


def _floor_cells(r: dict) -> list[str]:
    g, fraction = r.get("gemm_flops"), r.get("floor_fraction")
    return [_fmt(g and g / 1e9, ".3f"), _fmt(r.get("compute_floor_ms"), ".2f"),
            _fmt(fraction and 100 * fraction, ".1f") + ("%" if fraction else "")]


def _measured_cells(r: dict, has_insn: bool, has_floor: bool) -> list[str]:
    """The measured columns shared by the Markdown and the terminal table: latency to size ratio."""
    cells = [_fmt(r["p50_ms"], ".2f"), _fmt(r["p90_ms"], ".2f"), _fmt(r["p99_ms"], ".2f"),
             _fmt(r["throughput_seq_per_s"], ".1f"), _fmt(r["peak_rss_mb"], ".0f"),
             _fmt(r["speedup_vs_baseline"], ".2f") + "x", _fmt(r["size_ratio_vs_baseline"], ".3f")]
    if has_floor:
        cells += _floor_cells(r)
    if has_insn:
        cells += [_fmt(r.get("instructions") and r["instructions"] / 1e9, ".4f"),
                  _fmt(r.get("instructions_ratio_vs_baseline"), ".3f")]
    return cells


def _measured_heads(has_insn: bool, has_floor: bool, short: bool = False) -> list[str]:
    heads = (["p50 ms", "p90 ms", "p99 ms", "seq/s", "RSS MB", "speedup", "size"] if short else
             ["p50 ms", "p90 ms", "p99 ms", "seq/s", "peak RSS MB", "speedup vs baseline", "size vs baseline"])
    if has_floor:
        heads += ["GEMM GFLOP", "floor ms", "of floor"] if short else ["GEMM GFLOPs", "compute floor ms", "floor / p50"]
    if has_insn:
        heads += ["G instr", "instr ratio"] if short else ["instructions (G)", "instr. vs baseline"]
    return heads


def _probe_line(report: dict, g: str) -> str:
    probe = (report.get("floor") or {}).get("probes", {}).get(g)
    if not probe:
        return ""
    return ("GEMM probe rates (p50, interleaved with the models): "
            + ", ".join(f"{prec} {_fmt(p['gflops'], '.1f')} GFLOP/s ({_fmt(p['p50_ms'], '.2f')} ms)"
                        for prec, p in probe.items()))


def _header(report: dict) -> list[str]:
    m, e, s = report["machine"], report["environment"], report["settings"]
    emulated = m["target"] == "arm64"
    where = f"EMULATED {m['emulated_cpu']} under QEMU {m['qemu']}" if emulated else "host"
    lines = [f"# kronedge bench ({where})", ""]
    if report.get("command"):
        lines += [f"Command: `{report['command']}`", ""]
    load = ", ".join(f"{x:.2f}" for x in m["load_avg_at_start"])
    end = f", at end {', '.join(f'{x:.2f}' for x in m['load_avg_at_end'])}" if m.get("load_avg_at_end") else ""
    lines += [f"- created {report['created_utc']}; host CPU {m['host_cpu']} ({m['logical_cpus']} logical), "
              f"{m['platform']}; load average (1/5/15 min) at start {load}{end}",
              f"- CPU flags: {' '.join(m.get('host_flags') or []) or 'unknown'}",
              f"- onnxruntime {e['onnxruntime']} ({e['provider']}), numpy {e['numpy']}, python {e['python']}",
              f"- warm-up {s['warmup']}, {s['iters']} measured runs per model, interleaved; baseline (ratios): "
              f"**{report['baseline']}**"]
    if report.get("floor"):
        lines.append(f"- {report['floor']['definition']}")
    if emulated:
        lines.append("- **Latencies are EMULATED wall times** (QEMU TCG on x86): they are not Raspberry Pi speed.")
    return lines + [""]


def _profile_md(rs: list[dict]) -> list[str]:
    lines = []
    for r in rs:
        p = r.get("profile")
        if not p:
            continue
        lines += [f"Profile of **{r['model']}** ({p['runs']} runs, ORT profiler, graph after ORT's fusions): "
                  f"{p['nodes']} nodes, kernel time {p['kernel_ms']:.2f} ms of {p['model_run_mean_ms']:.2f} ms "
                  f"per run (means); GEMM kernels {100 * p['gemm_share']:.0f}%, attention ops "
                  f"{100 * p['attention_share']:.0f}% of kernel time",
                  "", "| op type | nodes | ms / inference | share of kernel time |", "|---|---|---|---|"]
        lines += [f"| {op['op']} | {op['nodes']} | {op['ms']:.3f} | {_fmt(op['share'] and 100 * op['share'], '.1f')}% |"
                  for op in p["ops"][:PROFILE_TOP]]
        rest = p["ops"][PROFILE_TOP:]
        if rest:
            lines.append(f"| {len(rest)} other op types | {sum(o['nodes'] for o in rest)} | "
                         f"{sum(o['ms'] for o in rest):.3f} | {100 * sum(o['share'] or 0 for o in rest):.1f}% |")
        lines.append("")
    return lines


def to_markdown(report: dict) -> str:
    emulated = report["machine"]["target"] == "arm64"
    lines = _header(report)
    for g, rs in groups(report["rows"]).items():
        lines += [f"## {g}" + (" (emulated)" if emulated else ""), ""]
        has_insn = any(r.get("instructions") for r in rs)
        has_floor = any(r.get("compute_floor_ms") is not None for r in rs)
        head = ["model", "quant", "file MB", "params M", "GFLOPs", *_measured_heads(has_insn, has_floor)]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rs:
            cells = [r["model"], str(_quant_text(r["quantization"])), _fmt(r["file_mb"], ".2f"),
                     _fmt(r["params"] and r["params"] / 1e6, ".2f"), _fmt(r["flops"] and r["flops"] / 1e9, ".2f"),
                     *_measured_cells(r, has_insn, has_floor)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if _probe_line(report, g):
            lines += [_probe_line(report, g), ""]
        lines += _profile_md(rs)
    return "\n".join(lines)


def print_table(report: dict, console) -> None:
    from rich.table import Table

    emulated = report["machine"]["target"] == "arm64"
    for g, rs in groups(report["rows"]).items():
        title = f"{g} · ORT {rs[0]['onnxruntime']} · {rs[0]['cpu']}" + (" · EMULATED wall times" if emulated else "")
        table = Table(title=title)
        has_insn = any(r.get("instructions") for r in rs)
        has_floor = any(r.get("compute_floor_ms") is not None for r in rs)
        for c in ["model", "file MB", "params M", *_measured_heads(has_insn, has_floor, short=True)]:
            table.add_column(c, justify="left" if c == "model" else "right")
        for r in rs:
            table.add_row(r["model"] + (" (base)" if r["baseline"] else ""), _fmt(r["file_mb"], ".2f"),
                          _fmt(r["params"] and r["params"] / 1e6, ".2f"), *_measured_cells(r, has_insn, has_floor))
        console.print(table)
        if _probe_line(report, g):
            console.print(_probe_line(report, g) + "; floor = GEMM FLOPs / these rates", highlight=False)
        for r in rs:
            if r.get("profile"):
                top = ", ".join(f"{op['op']} {100 * (op['share'] or 0):.0f}% ({op['nodes']})"
                                for op in r["profile"]["ops"][:6])
                console.print(f"profile {r['model']}: {top}", highlight=False)
