"""One ``kronedge bench`` run: describe the models, measure them (host or emulated), add peak RSS,
instruction counts, compute floors and profiles, and return the report dict (schema ``kronedge-bench/2``)."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from runtime import hostinfo

from .. import bench_core
from . import drivers, floor, profile, report
from .config import BenchConfig, BenchError
from .describe import ModelInfo, describe_model

SCHEMA = "kronedge-bench/2"  # /2 adds the compute floor and profile fields to /1; no /1 field changed
log = logging.getLogger(__name__)


class Bench:
    """The state of one bench run: its config, its models and what has been measured so far."""

    def __init__(self, model_dirs: Sequence[str | os.PathLike], config: BenchConfig,
                 names: Optional[Sequence[str]] = None, progress: Optional[Callable[[str], None]] = None):
        if not model_dirs:
            raise BenchError("give at least one model directory")
        if names is not None and len(names) != len(model_dirs):
            raise BenchError(f"{len(names)} names for {len(model_dirs)} models")
        self.config = config
        self.progress = progress
        self.load_at_start = list(os.getloadavg())
        self.models = [describe_model(p, names[i] if names else None, seq=max(config.seqs))
                       for i, p in enumerate(model_dirs)]
        self._unique_names()
        self.core_models = [{"name": m.name, "path": m.path, "vocab": m.vocab} for m in self.models]
        self.environment: dict = {}
        self.rows: list[dict] = []
        self.probes: dict[str, dict] = {}  # group key -> {precision: {p50_ms, gflops}}
        self.qemu_version: Optional[str] = None
        self.qenv = None  # the emulated userland, for target arm64
        for info in self.models:
            if info.positions and max(config.seqs) > info.positions:
                raise BenchError(f"--seq {max(config.seqs)} is longer than the {info.positions} positions {info.name} "
                                 "can embed; ask for at most that")
            exported = (info.manifest or {}).get("max_length")
            if exported and max(config.seqs) > exported:
                log.warning(f"{info.name} was exported for at most {exported} tokens; --seq {max(config.seqs)} "
                            "times longer inputs than its runtime ever runs (the Predictor truncates at that length)")

    def say(self, msg: str) -> None:
        log.info(msg)
        if self.progress:
            self.progress(msg)

    def _unique_names(self) -> None:
        seen: dict[str, int] = {}
        for info in self.models:
            if info.name in seen:
                seen[info.name] += 1
                info.name = f"{info.name}#{seen[info.name]}"
            else:
                seen[info.name] = 1

    def run(self) -> dict:
        if self.config.emulated:
            cells = self._measure_emulated()
        else:
            with tempfile.TemporaryDirectory(prefix="kronedge-probe-") as tmp:
                cells = self._measure_host(Path(tmp))
        for cell in cells:
            for info, stats in zip(self.models, cell["models"], strict=True):
                self.rows.append(self._row(info, cell, stats))
        if self.config.rss:
            self._add_rss()
        if self.config.instructions:
            self._add_instructions()
        if self.config.profile:
            self._add_profiles()
        report.add_ratios(self.rows)
        return self._report()

    def _measure_host(self, scratch: Path) -> list[dict]:
        cfg = self.config
        self.environment = bench_core.environment()
        paths = floor.build_probes(scratch, cfg.probe_size) if cfg.floor else {}
        probes = [{"name": floor.PROBE_NAMES[prec], "path": str(p), "vocab": 1} for prec, p in paths.items()]
        cells = []
        for cell in cfg.grid():
            self.say(f"measuring {len(self.models)} models at threads={cell['threads']} batch={cell['batch']} "
                     f"seq={cell['seq']}" + (" (+ 2 GEMM probes)" if probes else ""))
            stats = bench_core.measure(self.core_models + probes, cell["batch"], cell["seq"], cell["threads"],
                                       cfg.warmup, cfg.iters, list(cfg.disabled_optimizers))
            n = len(self.models)
            cells.append({**cell, "models": stats[:n]})
            if probes:
                by_prec = dict(zip(paths, stats[n:], strict=True))
                rates = floor.rates_from_probe(by_prec, cfg.probe_size)
                self.probes[report.group_key(cell)] = {
                    prec: {"p50_ms": by_prec[prec]["p50_ms"], "gflops": rates.get(prec)} for prec in by_prec}
        return cells

    def _measure_emulated(self) -> list[dict]:
        from .. import qemu

        cfg = self.config
        self.qenv = qemu.ensure(plugin=cfg.instructions, log=self.say)
        self.qemu_version = qemu.qemu_version(self.qenv.qemu_static or self.qenv.qemu_plugin_host)
        self.say(f"measuring {len(self.models)} models under qemu-aarch64 -cpu {cfg.cpu} (emulated)")
        measured, _ = drivers.run_guest(self.qenv, cfg.cpu, {
            "mode": "measure", "models": self.core_models, "rows": cfg.grid(), "warmup": cfg.warmup,
            "iters": cfg.iters, "disabled_optimizers": list(cfg.disabled_optimizers)})
        self.environment = measured["environment"]
        return measured["rows"]

    def _row(self, info: ModelInfo, cell: dict, stats: dict) -> dict:
        cfg, env = self.config, self.environment
        flops, flops_note = info.flops_at(cell["seq"])  # the row's own length, not the longest of the bench
        entry = {
            "model": info.name, "baseline": info is self.models[0], "threads": cell["threads"], "batch": cell["batch"],
            "seq": cell["seq"], **{k: stats[k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms",
                                                        "n", "load_ms", "throughput_seq_per_s")},
            "file_bytes": info.file_bytes, "file_mb": info.file_bytes / 1e6, "params": info.params,
            "flops": flops, "flops_note": flops_note, "quantization": info.quantization,
            "onnxruntime": env["onnxruntime"], "provider": env["provider"], "target": cfg.target,
            "cpu": (f"{cfg.cpu} (QEMU {self.qemu_version} TCG, emulated)" if cfg.emulated else hostinfo.cpu_model()),
            "emulated": cfg.emulated, "latency_kind": "emulated wall time" if cfg.emulated else "wall time",
            "peak_rss_mb": None, "instructions": None, "profile": None,
        }
        gemm = info.gemm_flops(cell["batch"], cell["seq"])
        entry.update(gemm_flops=gemm.total if gemm and gemm.complete else None,
                     gemm_flops_fp32=gemm.fp32 if gemm else None, gemm_flops_int8=gemm.int8 if gemm else None)
        probes = self.probes.get(report.group_key(cell))
        if probes:
            rates = {prec: p["gflops"] for prec, p in probes.items()}
            entry["gemm_rate_gflops"] = rates
            entry.update(floor.compute_floor(gemm, rates, stats["p50_ms"]).to_row())
        else:
            entry.update(gemm_rate_gflops=None, compute_floor_ms=None, floor_fraction=None,
                         floor_note="emulated: no floor" if cfg.emulated else "floor not measured (--no-floor)")
        return entry

    def _by_name(self, name: str) -> dict:
        return self.core_models[[m.name for m in self.models].index(name)]

    def _add_rss(self) -> None:
        for entry in self.rows:
            self.say(f"peak RSS: {entry['model']} threads={entry['threads']} batch={entry['batch']} seq={entry['seq']}")
            res = drivers.run_host({"mode": "rss", "models": [self._by_name(entry["model"])], "batch": entry["batch"],
                                    "seq": entry["seq"], "threads": entry["threads"]})
            entry["peak_rss_mb"] = res["peak_rss_mb"]

    def _add_instructions(self) -> None:
        cfg, counted = self.config, {}
        for b in cfg.batches:
            for s in cfg.seqs:
                for model in self.core_models:
                    self.say(f"counting instructions: {model['name']} batch={b} seq={s} under {cfg.cpu} (1 thread)")
                    _, guest = drivers.run_guest(self.qenv, cfg.cpu, {"mode": "count", "models": [model], "batch": b,
                                                                      "seq": s, "threads": 1, "warmup": 1}, count=True)
                    if len(guest.regions) != 1:
                        raise drivers.BenchProcessError(f"expected one counted region, got {guest.regions}")
                    counted[(model["name"], b, s)] = guest.regions[0]
        for entry in self.rows:
            entry["instructions"] = counted.get((entry["model"], entry["batch"], entry["seq"]))
            entry["instructions_note"] = "guest instructions of one inference, 1 ORT thread, marker thread only"

    def _add_profiles(self) -> None:
        cfg = self.config
        for entry in self.rows:
            model = self._by_name(entry["model"])
            self.say(f"profiling {entry['model']} threads={entry['threads']} batch={entry['batch']} seq={entry['seq']}")
            entry["profile"] = profile.profile_model(model["path"], model["vocab"], entry["batch"], entry["seq"],
                                                     entry["threads"], cfg.profile_runs, max(cfg.warmup, 1),
                                                     cfg.disabled_optimizers)

    def _report(self) -> dict:
        cfg = self.config
        return {
            "schema": SCHEMA,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": " ".join(sys.argv) if sys.argv and "kronedge" in sys.argv[0] else None,
            "machine": {"host_cpu": hostinfo.cpu_model(),
                        "host_flags": hostinfo.cpu_flags(hostinfo.KERNEL_FLAG_PREFIXES),
                        "logical_cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_avg_at_start": self.load_at_start, "load_avg_at_end": list(os.getloadavg()),
                        "target": cfg.target, "emulated_cpu": cfg.cpu if cfg.emulated else None,
                        "qemu": self.qemu_version},
            "environment": self.environment,
            "settings": {**cfg.to_dict(), "interleaved": True,
                         "session": "runtime.predictor.create_session (arena off, sequential, ORT_ENABLE_ALL)"
                                    + (", x64 int8 precision mode (s8 weights run as u8: no VNNI here)"
                                       if not cfg.emulated and hostinfo.host_saturates_s8_weights() else "")},
            "floor": ({"definition": floor.FLOOR_DEFINITION.format(n=cfg.probe_size), "probe_size": cfg.probe_size,
                       "probe_weight_type": floor.probe_weight_type(), "probes": self.probes} if self.probes else None),
            "baseline": self.models[0].name,
            "models": [m.to_dict() for m in self.models],
            "rows": self.rows,
            "speedup_matrix": report.speedup_matrix(self.rows),
        }


def run_bench(model_dirs: Sequence[str | os.PathLike], *, names: Optional[Sequence[str]] = None,
              log: Optional[Callable[[str], None]] = None, **options) -> dict:
    """Measure every model at every (threads, batch, seq); the first model is the baseline.

    Args:
        model_dirs: exported model directories (or .onnx files); the first is the baseline.
        names: labels for the models (default: directory names).
        log: optional progress callback (messages also go to this module's logger).
        **options: :class:`BenchConfig` fields: seqs, batches, threads, warmup, iters, target, cpu,
            instructions, rss, disabled_optimizers, floor, probe_size, profile, profile_runs.

    Example:
        >>> report = run_bench(["runs/dense-fp32", "runs/kb21-int8"], seqs=[128], threads=[1], profile=True)
        >>> report["rows"][1]["speedup_vs_baseline"], report["rows"][1]["floor_fraction"]
    """
    unknown = set(options) - set(BenchConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"run_bench() got unknown options {sorted(unknown)}")
    return Bench(model_dirs, BenchConfig(**options), names=names, progress=log).run()
