"""Surgery on tiny random BERTs, and the artifact round trip."""

import json

import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering, BertForSequenceClassification, BertModel

from kronedge.artifact import ArtifactError, atomic_directory, load_artifact, save_artifact
from kronedge.layers import KronShape, KroneckerEmbedding, KroneckerLinear
from kronedge.planner import KronConfig, NoMatchingLayersError
from kronedge.surgery import kronize_, layout_config
from kronedge.teachers import minilm_dir

TINY = dict(vocab_size=97, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, intermediate_size=36,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny(cls=BertForSequenceClassification, **extra):
    torch.manual_seed(0)
    return cls(BertConfig(**TINY, **extra)).eval()


def inputs(batch=2, seq=9):
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, TINY["vocab_size"], (batch, seq), generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long)}


def full_rank_config():
    """Shapes whose rank-r sum is exact: surgery must then leave the outputs unchanged."""
    shapes = {"bert.embeddings.word_embeddings": KronShape(97, 6, 1, 4, rank=4)}
    for i in range(2):
        p = f"bert.encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name] = KronShape(4, 6, 6, 4, rank=24)
        shapes[p + "intermediate.dense"] = KronShape(6, 4, 6, 6, rank=24)
        shapes[p + "output.dense"] = KronShape(4, 6, 6, 6, rank=24)
    return KronConfig(layer_shapes=shapes)


@pytest.mark.parametrize("cls", [BertModel, BertForSequenceClassification, BertForQuestionAnswering])
def test_surgery_keeps_output_shapes(cls):
    model = tiny(cls)
    expected = model(**inputs())
    plan = kronize_(model, KronConfig(compression=2.5))
    got = model(**inputs())
    for key in expected.keys():
        assert got[key].shape == expected[key].shape
    assert sum(isinstance(m, KroneckerLinear) for m in model.modules()) == 12
    assert sum(isinstance(m, KroneckerEmbedding) for m in model.modules()) == 1
    assert sum(p.numel() for p in model.parameters()) == plan.params_student


def test_full_rank_surgery_keeps_outputs():
    model = tiny()
    expected = model(**inputs()).logits
    kronize_(model, full_rank_config())
    assert torch.allclose(model(**inputs()).logits, expected, atol=1e-5)


def test_surgery_leaves_head_pooler_and_position_embeddings_dense():
    model = tiny()
    kronize_(model, KronConfig(compression=2.5))
    assert type(model.classifier) is torch.nn.Linear
    assert type(model.bert.pooler.dense) is torch.nn.Linear
    assert type(model.bert.embeddings.position_embeddings) is torch.nn.Embedding
    assert type(model.bert.embeddings.token_type_embeddings) is torch.nn.Embedding


def test_custom_filter_and_empty_selection():
    model = tiny()
    plan = kronize_(model, KronConfig(compression=1.1), filter_fn=lambda m, fqn: fqn.endswith("intermediate.dense"))
    assert [l.role for l in plan.layers] == ["ffn_up", "ffn_up"]
    with pytest.raises(NoMatchingLayersError):
        kronize_(tiny(), KronConfig(compression=2), filter_fn=lambda m, fqn: "nothing" in fqn)


def test_layout_is_recorded_in_the_config():
    model = tiny()
    plan = kronize_(model, KronConfig(compression=2.5))
    config = layout_config(model.config)
    assert config.layer_shapes == plan.layer_shapes
    assert layout_config(BertConfig(**TINY)) is None


def test_artifact_round_trip_is_bit_exact(tmp_path):
    model = tiny()
    kronize_(model, KronConfig(compression=2.5))
    out = save_artifact(model, tmp_path / "art", minilm_dir(), {"teacher": "test"})
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "kronedge.json", "tokenizer.json"}
    loaded = load_artifact(out)
    original = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original[name]), name
    x = inputs()
    assert torch.equal(loaded(**x).logits, model(**x).logits)
    assert json.loads((out / "kronedge.json").read_text())["head"] == "sequence-classification"


def test_artifact_errors_name_the_file(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="kronedge.json is missing"):
        load_artifact(tmp_path / "empty")
    model = tiny()
    kronize_(model, KronConfig(compression=2.5))
    out = save_artifact(model, tmp_path / "art", minilm_dir(), {})
    (out / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="model.safetensors is corrupt"):
        load_artifact(out)


def test_atomic_directory_leaves_old_artifact_on_failure(tmp_path):
    target = tmp_path / "art"
    with atomic_directory(target, "a.txt") as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_directory(target, "a.txt") as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["art"]


def test_atomic_directory_replaces_only_an_earlier_output(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    (tmp_path / "file.txt").write_text("the user's")
    (tmp_path / "empty").mkdir()
    refused = {mine: "holds no manifest.json", tmp_path / "file.txt": "is a file", tmp_path: "working directory",
               tmp_path / "file.txt" / "sub": "file.txt is a file, not a directory"}
    monkeypatch.chdir(tmp_path / "empty")
    refused[tmp_path / "empty"] = "working directory"
    for target, why in refused.items():
        with pytest.raises(ArtifactError, match=why):
            with atomic_directory(target, "manifest.json") as tmp:
                (tmp / "manifest.json").write_text("{}")
    assert (mine / "notes.txt").read_text() == "the user's" and (tmp_path / "file.txt").read_text() == "the user's"
    monkeypatch.chdir(tmp_path)
    with atomic_directory(tmp_path / "empty", "manifest.json") as tmp:  # empty: fine
        (tmp / "manifest.json").write_text("{}")
    with atomic_directory(tmp_path / "empty", "manifest.json") as tmp:  # an earlier output: replaced
        (tmp / "manifest.json").write_text('{"second": 1}')
    assert (tmp_path / "empty" / "manifest.json").read_text() == '{"second": 1}'
