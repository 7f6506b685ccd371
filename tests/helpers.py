"""The suite's one tiny BERT, and models built from it whose outputs depend on the input.

A freshly initialised tiny BERT (initializer_range 0.02) gives nearly the same logits for every text: a
constant output scores ~40 dB SQNR against it and every label is the same, so parity, golden and int8 checks
built on it cannot fail. :func:`informative_bert` trains the tiny model for a few deterministic steps on
labelled toy sentences, so that its logits move by whole units between inputs and both labels occur.

The vocabulary is BERT's uncased WordPiece (30522), the packaged MiniLM tokenizer's, so real text tokenises
to valid ids. Fixtures that save and export these models live in the root ``conftest.py`` (shared with device_tests/).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

LABELS = ("negative", "positive")

# Opposite sentiment, a few shared words, lengths 1 to ~20 tokens: the probe set and the training set.
# Index i is negative when i is even, positive when i is odd.
PROBE_TEXTS = (
    "a dull, lifeless and far too long film.",
    "a gripping, funny and beautifully acted film.",
    "the plot is thin and the acting is wooden.",
    "an absolute joy from start to finish.",
    "boring.",
    "wonderful.",
    "i hated every minute of this tedious mess.",
    "i loved every minute of this charming story.",
    "the worst movie of the year, painful to watch.",
    "the best movie of the year, a delight to watch.",
    "awful script, bad jokes, terrible ending.",
    "brilliant script, great jokes, perfect ending.",
)
PROBE_LABELS = tuple(i % 2 for i in range(len(PROBE_TEXTS)))

# Awkward inputs for the tokenizer path: longer than max_length, empty, non-ASCII, one word.
EDGE_TEXTS = (
    "the plot is thin, " * 30 + "but the cast is great",
    "",
    "Ünïcödé and emoji 🎬 work too",
    "ok",
)
PAIRS = (("A man is playing a guitar.", "Someone plays music."), ("It rains.", "The weather is dry " * 40))

# The margins every informative model must clear (asserted by the session fixtures).
MIN_LOGIT_SPREAD = 1.0  # std over texts of each logit column; the tightest fp32 tolerance is atol 1e-4
MAX_CONSTANT_SQNR_DB = 10.0  # a constant (the mean row) or shuffled output scores below this; floors are 15-25 dB


# The one tiny BERT of the suite: hidden 48, 2 layers, 4 heads, FFN 96, BERT's vocabulary.
# initializer_range 0.2 (not BERT's 0.02) so that even untrained weights give input-dependent logits.
TINY_FIELDS = dict(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                   max_position_embeddings=64, type_vocab_size=2, num_labels=2, initializer_range=0.2,
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_bert_config(**overrides):
    """The suite's tiny BertConfig (``TINY_FIELDS`` with labels negative/positive), with ``overrides``."""
    from transformers import BertConfig

    fields = dict(TINY_FIELDS, id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)})
    fields.update(overrides)
    return BertConfig(**fields)


def tiny_spec(directory, **overrides) -> str:
    """A ``random:PATH.json`` model spec (what the CLI takes) for the tiny config, written under ``directory``."""
    import json

    path = Path(directory) / "tiny.json"
    path.write_text(json.dumps({**TINY_FIELDS, **overrides}))
    return f"random:{path}"


def tokenizer_dir() -> Path:
    from kronedge.teachers import minilm_dir

    return minilm_dir()


def encode(texts, max_length: int = 32) -> dict:
    """int64 numpy inputs for ``texts``, padded to the longest, with the packaged tokenizer."""
    from exporters.export import encode as export_encode

    return export_encode(tokenizer_dir() / "tokenizer.json", list(texts), max_length)


def torch_logits(model, texts, max_length: int = 32) -> np.ndarray:
    """The torch model's logits for ``texts`` (strings or (a, b) pairs), one at a time (no padding)."""
    import torch

    rows = []
    model.eval()
    with torch.no_grad():
        for text in texts:
            feeds = encode([text], max_length)
            rows.append(model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits[0].numpy())
    return np.stack(rows)


def sqnr_db(reference, test) -> float:
    from runtime.contract import sqnr

    return sqnr(reference, test)


def tiny_bert(kronecker: bool = False, seed: int = 0, train_steps: int = 0, **overrides):
    """A tiny BertForSequenceClassification, optionally kronized, optionally trained on the probe texts.

    Args:
        kronecker: kronize (``KronConfig(compression=7, embedding_k=8)``) before training.
        seed: torch seed for the weights (and the training order).
        train_steps: full-batch Adam steps on ``PROBE_TEXTS``/``PROBE_LABELS``; 0 leaves the weights random.
        **overrides: BertConfig fields (see :func:`tiny_bert_config`).
    """
    import torch
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_bert_config(**overrides))
    if kronecker:
        from kronedge.planner import KronConfig
        from kronedge.surgery import kronize_

        kronize_(model, KronConfig(compression=7, embedding_k=8))
    if train_steps:
        _train(model, train_steps)
    return model.eval()


def informative_bert(kronecker: bool = True, seed: int = 0):
    """A tiny BERT (kronized by default) whose labels on ``PROBE_TEXTS`` include every label."""
    return tiny_bert(kronecker=kronecker, seed=seed, train_steps=60)


def training_set() -> tuple[list[str], list[int]]:
    """The probe texts plus the exporter's golden sentences (used when no task is given), so that
    golden.npz of an informative export is informative too."""
    from exporters.export import SAMPLE_SENTENCES

    # SAMPLE_SENTENCES: charming (positive), paper-thin (negative), joy (positive), "not good" (negative).
    return list(PROBE_TEXTS) + list(SAMPLE_SENTENCES), list(PROBE_LABELS) + [1, 0, 1, 0]


def _train(model, steps: int) -> None:
    import torch

    texts, labels = training_set()
    feeds = {k: torch.from_numpy(v) for k, v in encode(texts).items()}
    labels = torch.tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss = model(**feeds, labels=labels).loss
        loss.backward()
        optimizer.step()
    model.eval()


def check_informative(logits: np.ndarray, labels=LABELS) -> None:
    """Assert that ``logits`` (texts x labels) can tell a working model from a broken one.

    Every label is predicted somewhere; each column varies by far more than any fp32 tolerance; a constant
    output (the mean row) and a shuffled one (rows rolled by one) each score under MAX_CONSTANT_SQNR_DB,
    below every int8 floor of the suite.
    """
    logits = np.asarray(logits, np.float64)
    predicted = set(np.argmax(logits, axis=1).tolist())
    assert predicted == set(range(len(labels))), f"predicted labels {sorted(predicted)}, need all of {len(labels)}"
    spread = logits.std(axis=0).min()
    assert spread >= MIN_LOGIT_SPREAD, f"logits vary by std {spread:.3g} < {MIN_LOGIT_SPREAD} across texts"
    constant = np.broadcast_to(logits.mean(axis=0), logits.shape)
    shuffled = np.roll(logits, 1, axis=0)
    for name, broken in (("constant", constant), ("shuffled", shuffled)):
        score = sqnr_db(logits, broken)
        assert score < MAX_CONSTANT_SQNR_DB, f"a {name} output still scores {score:.1f} dB"
    assert math.isfinite(spread)


# ---- deliberate breakage: what the tests that can fail are shown to catch ----------------------------
BREAKS = ("constant", "shuffled")


def break_outputs(logits: np.ndarray, how: str) -> np.ndarray:
    """A wrong answer of the right shape: every row the mean row ("constant"), or rows rolled by one
    ("shuffled": each input gets another input's answer)."""
    logits = np.asarray(logits)
    if how == "constant":
        return np.broadcast_to(logits.mean(axis=0, keepdims=True), logits.shape).astype(logits.dtype)
    if how == "shuffled":
        return np.roll(logits, 1, axis=0) if len(logits) > 1 else logits[:, ::-1].copy()
    raise ValueError(f"unknown break {how!r}; choose one of {BREAKS}")


class BrokenSession:
    """Wraps an ORT session (``predictor.session = BrokenSession(predictor.session, "constant")``) and
    breaks its outputs with :func:`break_outputs`; inputs and metadata pass through."""

    def __init__(self, session, how: str):
        self.session, self.how = session, how

    def __getattr__(self, name):
        return getattr(self.session, name)

    def run(self, output_names, feeds, *args, **kwargs):
        return [break_outputs(out, self.how) for out in self.session.run(output_names, feeds, *args, **kwargs)]


def corrupt_weight(onnx_path, out_path, name_part: str = "word_embeddings.a") -> list[str]:
    """Copy an ONNX model with the sign bit of every element flipped in the weight matrices (2-D or more;
    scales, zero points and shape constants are left alone) whose names contain ``name_part``, as a
    corrupted file or a bad kernel would. Works on fp32 and int8 graphs. Returns the names changed."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(onnx_path)
    changed = []
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if name_part not in tensor.name or values.ndim < 2 or values.dtype not in (np.float32, np.int8, np.uint8):
            continue
        if values.dtype == np.float32:
            broken = -values
        else:  # the top bit: int8 v -> v -/+ 128, uint8 around a zero point of ~128 -> about -v
            broken = (values.view(np.uint8) ^ 0x80).view(values.dtype)
        tensor.CopyFrom(numpy_helper.from_array(broken, tensor.name))
        changed.append(tensor.name)
    assert changed, f"no weight matrix of {onnx_path} contains {name_part!r}"
    onnx.save(model, out_path)
    return changed


def refresh_manifest_hashes(model_dir) -> None:
    """Re-hash every file into manifest.json (as a re-export would), so a deliberately changed model is
    judged on its outputs, not refused for its hash."""
    from runtime.contract import MANIFEST_FILE, Manifest, file_table

    path = Path(model_dir) / MANIFEST_FILE
    manifest = Manifest.load(path)
    Manifest.from_dict({**manifest.to_dict(), "files": file_table(model_dir)}).write(path)


def micro_bert(seed=0, layers=2, hidden=24, heads=4, dropout=0.0, labels=2):
    """A random BertForSequenceClassification over a 60-token vocabulary, for loss and training-loop tests
    that need no tokenizer (far smaller than :func:`tiny_bert`)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=60, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=2 * hidden, max_position_embeddings=32, num_labels=labels,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return BertForSequenceClassification(config).eval()


def micro_data(n=48):
    """``n`` seeded token sequences of 4-9 ids below 60 (``Encoded``), labelled by the parity of their second id."""
    import torch

    from kronedge.training import Encoded

    g = torch.Generator().manual_seed(0)
    ids = [[2] + torch.randint(3, 60, (int(l),), generator=g).tolist() for l in torch.randint(3, 9, (n,), generator=g)]
    return Encoded(ids, [[0] * len(x) for x in ids], [int(x[1] % 2) for x in ids])


def one_line_error(args: list[str]) -> str:
    """``kronedge ARGS`` through typer's runner: asserts exit code 1 and one line 'error: ...' (no traceback), and
    returns that line."""
    from typer.testing import CliRunner

    from kronedge.cli import app

    result = CliRunner().invoke(app, args, env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]
