"""Session fixtures shared by tests/ and device_tests/: one informative tiny model, saved and exported once.

"Informative" means the outputs depend on the input (see tests/helpers.py): each fixture asserts it, so a
test built on these fixtures fails when a runtime returns a constant, shuffles its answers, or runs a
corrupted graph.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Each xdist worker gets its share of the cores for torch (and the CLI subprocesses it starts): N workers
    # each spinning up every core's OpenMP threads oversubscribe the machine and slow the suite down.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
sys.path.insert(0, str(Path(__file__).resolve().parent / "tests"))  # the shared test helpers, for both suites

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import helpers  # noqa: E402

INFORMATIVE_MAX_LENGTH = 32

# The heaviest test files first, by their heaviest mark (emulated CPUs, several processes, slow), then by
# number of tests. `.ci/run` passes --no-loadscope-reorder, so xdist hands the files out in this order and
# the workers end together instead of one running a long file after the other has finished.
_COST_MARKS = ("device", "distributed", "slow")


def pytest_collection_modifyitems(items):
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)

    def cost(tests) -> tuple[int, int]:
        marks = {mark.name for test in tests for mark in test.iter_markers()}
        heaviest = next((i for i, name in enumerate(_COST_MARKS) if name in marks), len(_COST_MARKS))
        return heaviest, -len(tests)

    items[:] = [item for _, tests in sorted(files.items(), key=lambda kv: cost(kv[1])) for item in tests]


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    """A test that runs CLI commands in an empty working directory (what they write lands there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def probe_texts() -> list[str]:
    """Real-ish sentences on which the informative model predicts every label, logits varying by whole units."""
    return list(helpers.PROBE_TEXTS)


@pytest.fixture(scope="session")
def informative_model(probe_texts):
    """The trained tiny kronized BERT (torch). Shared: deep-copy it before changing any weight."""
    model = helpers.informative_bert()
    helpers.check_informative(helpers.torch_logits(model, probe_texts, INFORMATIVE_MAX_LENGTH))
    return model


@pytest.fixture(scope="session")
def informative_torch_logits(informative_model, probe_texts) -> np.ndarray:
    """The torch logits of ``probe_texts``, one text at a time (no padding): the parity reference."""
    return helpers.torch_logits(informative_model, probe_texts, INFORMATIVE_MAX_LENGTH)


@pytest.fixture(scope="session")
def informative_artifact(informative_model, tmp_path_factory):
    """A kronedge artifact directory (kronedge.json, model.safetensors, tokenizer) of the informative model."""
    from kronedge.artifact import save_artifact

    path = tmp_path_factory.mktemp("informative") / "artifact"
    return save_artifact(informative_model, path, helpers.tokenizer_dir(),
                         {"teacher": "tests/helpers.py:informative_bert", "kron_config": None})


def _checked_export(artifact, out, probe_texts, **kwargs):
    from exporters.export import export_model
    from runtime.predictor import Predictor

    path = export_model(artifact, out, max_length=INFORMATIVE_MAX_LENGTH, **kwargs)
    with np.load(path / "golden.npz") as golden:
        helpers.check_informative(golden["logits"])
    helpers.check_informative(Predictor(path, threads=1).logits(probe_texts))
    return path


@pytest.fixture(scope="session")
def informative_export_fp32(informative_artifact, probe_texts, tmp_path_factory):
    """``kronedge export`` of the informative artifact: x86_64, fp32, portable, with model.ort, max_length 32."""
    return _checked_export(informative_artifact, tmp_path_factory.mktemp("informative") / "fp32", probe_texts)


@pytest.fixture(scope="session")
def informative_pair_export(informative_export_fp32, tmp_path_factory):
    """The fp32 export declared as a pair task (RTE-like labels): only the manifest changes."""
    import shutil

    from runtime.contract import MANIFEST_FILE, Manifest

    dst = shutil.copytree(informative_export_fp32, tmp_path_factory.mktemp("informative") / "pair")
    manifest = Manifest.load(dst / MANIFEST_FILE).to_dict()
    manifest.update(task="rte", pair_input=True, labels=["entailment", "not_entailment"])
    Manifest.from_dict(manifest).write(dst / MANIFEST_FILE)
    return dst


@pytest.fixture(scope="session")
def informative_export_int8(informative_artifact, probe_texts, tmp_path_factory):
    """The same artifact exported for arm64 with dynamic int8 (validated against torch by SQNR at export)."""
    return _checked_export(informative_artifact, tmp_path_factory.mktemp("informative") / "int8", probe_texts,
                           target="arm64", quantize="int8")


@pytest.fixture(scope="session")
def host_export_int8(informative_export_int8, informative_artifact, probe_texts, tmp_path_factory):
    """A dynamic int8 export whose model.onnx and model.ort this host both computes exactly, for tests that run
    int8 numbers here: the arm64 one, except on an x86 host without VNNI, where a model.ort (optimised ahead of time)
    keeps the saturating products of s8 weights: there it is the x86_64 export with u8 weights (--no-vnni)."""
    from runtime.hostinfo import host_saturates_s8_weights

    if not host_saturates_s8_weights():
        return informative_export_int8
    return _checked_export(informative_artifact, tmp_path_factory.mktemp("informative") / "int8-host", probe_texts,
                           target="x86_64", quantize="int8", vnni=False)
