"""The runtime on emulated Raspberry Pi CPUs: outputs match the x86 golden logits written at export.

fp32 must match tightly (same ORT version and graph: x86 and aarch64 agree to ~1e-6); int8 by signal-to-noise
(dynamic int8 takes different kernels on ARM, e.g. SDOT on the A76) and by agreeing on every predicted label.
The model is the suite's informative tiny BERT (tests/helpers.py): its logits vary by whole units between
the probe sentences and both labels occur, so a guest that returned a constant, shuffled its answers or ran
a corrupted weight would fail here. Emulated wall time is never asserted on (it is not Pi speed).
"""

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from kronedge import qemu
from runtime.contract import GOLDEN_MIN_SQNR_DB, sqnr

import helpers  # tests/helpers.py: the root conftest puts tests/ on the path

pytestmark = pytest.mark.device

ROOT = Path(__file__).resolve().parents[1]

# Same default as device_tests/conftest.py (not imported from it: the root conftest has that module name too).
CPUS = [c.strip() for c in os.environ.get("KRONEDGE_DEVICE_CPUS", "cortex-a72,cortex-a53,cortex-a76").split(",")
        if c.strip()]

GUEST = Path(__file__).with_name("guest_predict.py")
SENTENCES = list(helpers.PROBE_TEXTS) + ["ok", "word " * 40]
# The host's int8 decisions are clear-cut on these sentences (asserted below), so the guest must agree on
# every label: a margin this wide is not flipped by ARM's int8 kernels, only by a broken model or runtime.
MIN_HOST_MARGIN = 0.5


@pytest.fixture(scope="module")
def exported(qemu_env, informative_export_fp32, informative_export_int8):
    """The suite's informative tiny kronized BERT, exported fp32 (x86_64 target) and int8 (arm64 preset) by
    the root conftest; asks for ``qemu_env`` so that it is skipped where the device tests are."""
    return {"fp32": informative_export_fp32, "int8": informative_export_int8}


def sqnr_db(ref, got) -> float:
    return sqnr(ref, got)


@pytest.fixture(scope="module")
def guest_runs(qemu_env, exported, tmp_path_factory):
    """One emulated run per CPU model predicting with both exports, made on first use: {cpu: {"fp32": ..., "int8": ...}}."""
    return functools.cache(lambda cpu: run_guest(qemu_env, cpu, exported, tmp_path_factory.mktemp(cpu)))


def run_guest(env, cpu, model_dirs: dict, tmp_path) -> dict:
    texts = tmp_path / "texts.json"
    texts.write_text(json.dumps(SENTENCES))
    outs = {kind: tmp_path / f"{cpu}-{kind}.npz" for kind in model_dirs}
    pairs = [str(x) for kind in model_dirs for x in (model_dirs[kind], outs[kind])]
    res = qemu.run_python(env, cpu, GUEST, [texts, *pairs], pythonpath=[ROOT], timeout=600)
    assert res.returncode == 0, f"guest run failed under {cpu}:\n{res.stderr[-4000:]}"
    results = {}
    for kind, out in outs.items():
        with np.load(out) as data:
            results[kind] = {k: data[k] for k in ("golden_logits", "logits")}
            results[kind]["info"] = json.loads(str(data["info"]))
    return results


def host_outputs(model_dir):
    from runtime.predictor import Predictor

    predictor = Predictor(model_dir, threads=1)
    logits = predictor.logits(SENTENCES)
    helpers.check_informative(logits[:len(helpers.PROBE_TEXTS)])
    return logits, [r["label"] for r in predictor.predict(SENTENCES)]


@pytest.mark.parametrize("cpu", CPUS)
def test_fp32_matches_x86_golden(guest_runs, exported, cpu):
    model_dir = exported["fp32"]
    got = guest_runs(cpu)["fp32"]
    assert got["info"]["machine"] == "aarch64"
    with np.load(Path(model_dir) / "golden.npz") as golden:
        expected = golden["logits"]
    np.testing.assert_allclose(got["golden_logits"], expected, rtol=1e-5, atol=1e-5,
                               err_msg=f"fp32 logits under {cpu} differ from the x86 golden logits")
    host_logits, host_labels = host_outputs(model_dir)
    np.testing.assert_allclose(got["logits"], host_logits, rtol=1e-5, atol=1e-5)
    assert got["info"]["labels"] == host_labels


@pytest.mark.parametrize("cpu", CPUS)
def test_int8_matches_x86_golden_by_sqnr(guest_runs, exported, cpu):
    model_dir = exported["int8"]
    got = guest_runs(cpu)["int8"]
    with np.load(Path(model_dir) / "golden.npz") as golden:
        expected = golden["logits"]
    assert sqnr_db(expected, got["golden_logits"]) >= GOLDEN_MIN_SQNR_DB, (
        f"int8 under {cpu}: SQNR {sqnr_db(expected, got['golden_logits']):.1f} dB vs x86 golden")
    host_logits, host_labels = host_outputs(model_dir)
    assert sqnr_db(host_logits, got["logits"]) >= GOLDEN_MIN_SQNR_DB
    probes = len(helpers.PROBE_TEXTS)
    margins = np.abs(host_logits[:probes, 0] - host_logits[:probes, 1])
    assert margins.min() >= MIN_HOST_MARGIN, f"host margins {margins.round(2)}: the label check would be a coin toss"
    assert got["info"]["labels"][:probes] == host_labels[:probes], f"labels under {cpu} differ from the host's"


def test_instruction_count_is_repeatable(qemu_env_plugin, exported):
    """Two counted runs of one inference under the Pi 4 model agree (the note saw them identical): the count in
    the bench report, and a second guest process counting the same inference as the bench does."""
    from kronedge import qemu
    from kronedge.benchmark import drivers, run_bench
    from kronedge.benchmark.describe import describe_model

    report = run_bench([exported["int8"]], seqs=[16], batches=[1], threads=[1], warmup=0, iters=1,
                       target="arm64", cpu="cortex-a72", instructions=True)
    counted = report["rows"][0]["instructions"]
    info = describe_model(exported["int8"], seq=16)
    model = {"name": info.name, "path": info.path, "vocab": info.vocab}  # as Bench hands a model to bench_core
    _, guest = drivers.run_guest(qemu.ensure(plugin=True), "cortex-a72", {
        "mode": "count", "models": [model], "batch": 1, "seq": 16, "threads": 1, "warmup": 1}, count=True)
    assert counted > 0 and len(guest.regions) == 1
    assert abs(counted - guest.regions[0]) <= 0.001 * counted, (counted, guest.regions)


def test_bench_target_arm64_labels_emulated(qemu_env, exported):
    from kronedge.benchmark import run_bench, to_markdown

    report = run_bench([exported["fp32"], exported["int8"]], seqs=[16], batches=[1], threads=[1], warmup=1, iters=2,
                       target="arm64", cpu="cortex-a72")
    assert all(r["emulated"] and "emulated" in r["cpu"] and r["latency_kind"] == "emulated wall time"
               for r in report["rows"])
    assert "EMULATED" in to_markdown(report)
