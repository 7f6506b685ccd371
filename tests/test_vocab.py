"""A task's vocabulary (``kronedge.vocab``): the word embedding keeps only the rows of the tokens a task uses,
the budget still counts against the full teacher, and the row map survives save, load and export."""

import copy

import helpers
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from kronedge.artifact import load_artifact, save_artifact
from kronedge.layers import KroneckerEmbedding
from kronedge.planner import KronConfig, plan_model
from kronedge.recipe import CompressConfig
from kronedge.students import KroneckerStudent, build_student, core_params
from kronedge.surgery import kronize_
from kronedge.teachers import minilm_dir
from kronedge.training import TrainingError, load_tokenizer
from kronedge.vocab import (KeptVocabulary, TrimmedEmbedding, VocabularyError, dropped_params, task_vocabulary,
                            trim_vocabulary_)

UNK = 100  # [UNK] in BERT's uncased WordPiece


def texts_vocabulary(texts=helpers.PROBE_TEXTS) -> KeptVocabulary:
    return KeptVocabulary.of_texts(load_tokenizer(minilm_dir()), texts)


def test_kept_ids_read_the_teacher_rows_and_the_rest_read_unk():
    torch.manual_seed(0)
    dense = nn.Embedding(50, 6, padding_idx=0)
    trimmed = TrimmedEmbedding.from_dense(dense, keep_ids=[0, 3, 7, 9, 20], unk_id=9, fallback="unk")
    assert (trimmed.num_embeddings, trimmed.vocab_size, dropped_params(trimmed)) == (5, 50, 45 * 6)
    assert dropped_params(dense) == 0
    ids = torch.tensor([[3, 7, 20, 0]])
    assert torch.equal(trimmed(ids), dense(ids))
    dropped = torch.tensor([[1, 8, 49]])
    assert torch.equal(trimmed(dropped), dense(torch.tensor([[9, 9, 9]])))
    assert not torch.equal(trimmed(dropped), dense(dropped))
    assert trimmed.padding_idx == 0  # the pad id's row, renumbered


def test_an_id_left_out_reads_its_nearest_kept_token_but_never_a_special_one():
    torch.manual_seed(0)
    dense = nn.Embedding(40, 8)
    with torch.no_grad():
        dense.weight[30] = 3 * dense.weight[5]  # cosine 1 with kept token 5
        dense.weight[31] = dense.weight[1] + 1e-3 * dense.weight[31]  # nearest to special token 1
    trimmed = TrimmedEmbedding.from_dense(dense, keep_ids=[0, 1, 2, 5, 8, 13], unk_id=2, special_ids=[0, 1])
    row = {i: int(trimmed.row_of_id[i]) for i in range(40)}
    assert row[30] == row[5]
    assert row[31] not in (row[0], row[1], row[2])
    unit = nn.functional.normalize(dense.weight.detach(), dim=1)
    for i in set(range(40)) - {0, 1, 2, 5, 8, 13}:  # brute force: the most similar of the ordinary kept tokens
        best = max((5, 8, 13), key=lambda k: float(unit[i] @ unit[k]))
        assert row[i] == row[best], i


def test_a_pad_id_left_out_freezes_no_real_row_and_meta_weights_are_refused():
    trimmed = TrimmedEmbedding.from_dense(nn.Embedding(50, 6, padding_idx=0), keep_ids=[3, 7, 9], unk_id=9)
    assert trimmed.padding_idx is None  # id 0 reads a real token's row, whose gradient must flow
    with pytest.raises(VocabularyError, match="meta"):
        TrimmedEmbedding.from_dense(nn.Embedding(50, 6, device="meta"), [3, 9], 9)


def test_a_layout_with_fewer_rows_than_the_table_is_fitted_by_no_one():
    from kronedge.kron_shape import KronShape
    from kronedge.planner import PlanError

    model = helpers.tiny_bert()
    name = "bert.embeddings.word_embeddings"
    with pytest.raises(PlanError, match="fewer rows"):
        kronize_(model, KronConfig(layer_shapes={name: KronShape(1000, 1, 1, 48, 4)}),
                 filter_fn=lambda module, fqn: fqn == name)


def test_a_budget_beyond_the_kept_rows_is_left_unspent_not_doubled():
    # 62 kept ids: the target buys more than every dense matrix holds; no factor pair may hold more than its matrix
    model = helpers.tiny_bert()
    texts_vocabulary().trim_(model)
    plan = plan_model(model, KronConfig(compression=6, structure="svd"))
    for layer in plan.layers:
        assert layer.kron.params <= layer.dense_shape[0] * layer.dense_shape[1], layer.name
    assert plan.compression > 6  # the plan says what it reached


@pytest.mark.parametrize("keep,unk,fallback,message", [
    ([1, 2], 9, "nearest", "UNK"), ([3, 50], 3, "nearest", r"\[0, 50\)"), ([], 0, "nearest", r"\[0, 50\)"),
    ([3, 4], 3, "random", "fallback must be one of")])
def test_a_vocabulary_that_cannot_work_is_refused(keep, unk, fallback, message):
    with pytest.raises(VocabularyError, match=message):
        TrimmedEmbedding.from_dense(nn.Embedding(50, 6), keep, unk, fallback)


def test_task_vocabulary_covers_singles_pairs_and_special_tokens():
    tokenizer = load_tokenizer(minilm_dir())
    ids = task_vocabulary(tokenizer, ["a good film", ("the cat", "sat down")])
    expected = set(tokenizer.all_special_ids)
    for text in ("a good film", "the cat", "sat down"):
        expected.update(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert ids == sorted(expected)
    assert tokenizer.convert_tokens_to_ids("guitar") not in ids


def test_the_budget_counts_the_full_teacher_and_gives_the_dropped_rows_as_rank():
    model = helpers.tiny_bert()
    config = KronConfig(compression=8, structure="svd")
    full = plan_model(model, config)
    trimmed_model = copy.deepcopy(model)
    # a third of the vocabulary: enough rows that the budget buys rank rather than whole rows
    trim_vocabulary_(trimmed_model, [*range(0, 30522, 3), UNK], UNK)
    trimmed = plan_model(trimmed_model, config)

    assert trimmed.params_teacher == full.params_teacher
    # both plans meet the target and spend most of it; the row map's entries are counted in the student
    for plan in (full, trimmed):
        assert 8 <= plan.compression < 8 * 1.2
    embedding = trimmed.layers[0]
    assert embedding.kind == "embedding" and embedding.row_map == 30522
    assert embedding.params_before == 30522 * 48 and embedding.params_after == embedding.kron.params + 30522
    assert embedding.to_dict()["row_map"] == 30522 and "row_map" not in full.layers[0].to_dict()
    for before, after in zip(full.layers, trimmed.layers):
        assert after.kron.rank > before.kron.rank, after.name
    kronize_(trimmed_model, config)
    assert core_params(trimmed_model) == pytest.approx(trimmed.params_student - _dense_outside_core(trimmed_model))


def _dense_outside_core(model) -> int:
    return sum(p.numel() for m in (model.bert.pooler, model.classifier) for p in m.parameters())


def test_the_kronecker_student_keeps_the_row_map_through_save_and_load(tmp_path):
    teacher = helpers.tiny_bert(seed=1)
    vocabulary = texts_vocabulary()
    student, plan = build_student(teacher, KroneckerStudent(KronConfig(compression=6, structure="svd"), vocabulary=vocabulary))
    embedding = student.bert.embeddings.word_embeddings
    assert isinstance(embedding, KroneckerEmbedding) and embedding.vocab_size == 30522
    assert embedding.num_embeddings == len(vocabulary.keep_ids) == plan.layers[0].kron.m1
    assert not isinstance(teacher.bert.embeddings.word_embeddings, TrimmedEmbedding)  # the teacher is untouched

    kept = torch.tensor([vocabulary.keep_ids[5:9]])
    dropped = torch.tensor([[max(vocabulary.keep_ids) + 1, 25000, 30521]])
    assert not set(dropped[0].tolist()) & set(vocabulary.keep_ids)
    # each id left out reads the row of a kept token: the one nearest to it in the teacher's embedding
    ordinary = [i for i in vocabulary.keep_ids if i not in vocabulary.special_ids]
    unit = nn.functional.normalize(teacher.bert.embeddings.word_embeddings.weight.detach(), dim=1)
    nearest = torch.tensor([[ordinary[int((unit[ordinary] @ unit[i]).argmax())] for i in dropped[0].tolist()]])
    assert torch.equal(embedding(dropped), embedding(nearest))
    assert not torch.equal(embedding(kept), embedding(torch.full_like(kept, UNK)))

    out = save_artifact(student, tmp_path / "art", minilm_dir(), {"teacher": "test"})
    loaded = load_artifact(out)
    for name, tensor in student.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    x = {"input_ids": torch.cat([kept, dropped], 1), "attention_mask": torch.ones(1, 7, dtype=torch.long)}
    # the weights are bit-exact; the products may differ in the last bit with the loaded tensors' alignment
    torch.testing.assert_close(loaded(**x).logits, student(**x).logits, rtol=0, atol=1e-6)


def test_the_export_reads_ids_through_the_row_map(tmp_path):
    from exporters.export import export_model
    from runtime.predictor import create_session

    student, _ = build_student(helpers.informative_bert(kronecker=False),
                               KroneckerStudent(KronConfig(compression=6, structure="svd"), vocabulary=texts_vocabulary()))
    student.eval()
    out = export_model(student, tmp_path / "fp32", tokenizer_dir=minilm_dir(), max_length=32, ort_format=False)
    session = create_session(out / "model.onnx")
    names = [i.name for i in session.get_inputs()]
    # texts outside the kept vocabulary: their words read another row, in torch and in the graph alike
    texts = ["a guitar concert in the rain", "quantum chromodynamics lecture"] + list(helpers.PROBE_TEXTS[:2])
    feeds = helpers.encode(texts)
    expected = student(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.detach().numpy()
    got = session.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    full = helpers.informative_bert(kronecker=False)(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
    assert not np.allclose(got, full.detach().numpy(), atol=1e-2)  # not the untrimmed model's answer

    untrimmed = export_model(helpers.informative_bert(kronecker=True), tmp_path / "untrimmed", tokenizer_dir=minilm_dir(),
                             max_length=32, ort_format=False)
    gathers = [sum(n.op_type == "Gather" for n in onnx.load(d / "model.onnx").graph.node) for d in (out, untrimmed)]
    assert gathers[0] == gathers[1] + 1  # the row map: one Gather in front of the table's

    int8 = export_model(student, tmp_path / "int8", tokenizer_dir=minilm_dir(), max_length=32, quantize="int8")
    quantized = create_session(int8 / "model.ort")
    assert helpers.sqnr_db(expected, quantized.run(None, {k: v for k, v in feeds.items() if k in names})[0]) > 20


def test_trimming_needs_the_model_to_have_one_word_embedding():
    with pytest.raises(VocabularyError, match="word embedding"):
        trim_vocabulary_(nn.Sequential(nn.Linear(2, 2)), [0], 0)


@pytest.mark.parametrize("fields,message", [
    ({"vocabulary": "tiny"}, "vocabulary must be full or one of"),
    ({"vocabulary": "task", "method": "svd"}, "needs --method kronecker"),
    ({"vocabulary": "task", "general_student": "auto"}, "no --general-student"),
])
def test_compress_refuses_a_task_vocabulary_it_cannot_build(fields, message):
    with pytest.raises(TrainingError, match=message):
        CompressConfig(**fields)


def test_full_is_none_and_auto_is_task_where_the_student_is_made_from_its_teacher():
    # None keeps earlier recipes' cache keys and resumable runs valid (result_settings drops unset fields)
    assert CompressConfig(vocabulary="full").vocabulary is None is CompressConfig(method="svd").vocabulary
    assert CompressConfig().vocabulary == "task"
    for fixed_shapes in (dict(preset="kb21", compression=None), dict(structure="paper"), dict(calibration=False),
                         dict(embedding_share=0.2), dict(method="dense-small")):
        assert CompressConfig(**fixed_shapes).vocabulary is None, fixed_shapes
    assert CompressConfig(vocabulary="task").student_config(vocabulary=texts_vocabulary()).vocabulary is not None


def test_compress_on_a_pair_file_keeps_both_sides_and_the_unlabelled_text(tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    import test_byo_data as byo
    from kronedge.cli import app

    monkeypatch.chdir(tmp_path)
    train, dev, options = byo.nli(tmp_path)
    (tmp_path / "more.txt").write_text("an orchestra rehearses\tmusicians practise\nit rains\tthe street is dry\n")
    args = ["compress", "--teacher", helpers.tiny_spec(tmp_path), "--train", train, "--validation", dev, *options,
            *byo.COMMON, "--vocabulary", "task", "--unlabelled", "more.txt", "--out", "art"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    recipe = json.loads((tmp_path / "art" / "kronedge.json").read_text())
    tokenizer = load_tokenizer(minilm_dir())
    texts = [t for a, b, _ in byo.NLI for t in (a, b)] + ["an orchestra rehearses", "musicians practise"]
    expected = task_vocabulary(tokenizer, texts)
    assert recipe["vocabulary"] == {"kept": len(expected), "of": 30522}
    assert tokenizer.convert_tokens_to_ids("orchestra") in expected  # from --unlabelled
    embedding = load_artifact(tmp_path / "art").bert.embeddings.word_embeddings
    assert embedding.num_embeddings == len(expected) and embedding.vocab_size == 30522


def test_plan_and_kronize_with_the_task_vocabulary_build_the_layers_compress_builds(tmp_path):
    from kronedge.artifact import read_recipe
    from kronedge.calibration import calibration_texts
    from kronedge.kron_config import PlanError
    from kronedge.pipeline import kronize_teacher, plan_teacher
    from kronedge.teachers import load_teacher

    text = tmp_path / "texts.txt"
    text.write_text("\n\n".join(helpers.PROBE_TEXTS))
    spec, config = helpers.tiny_spec(tmp_path), KronConfig(compression=6, structure="svd")
    plan = plan_teacher(spec, config, calibration=str(text), vocabulary="task")
    full = plan_teacher(spec, config, calibration=str(text))

    # compress's student: the same teacher trimmed to the text's tokens, then kronized
    vocabulary = KeptVocabulary.of_texts(load_tokenizer(minilm_dir()), calibration_texts(str(text), limit=None), 128)
    _, built = build_student(load_teacher(spec, head="base").model, KroneckerStudent(config, vocabulary=vocabulary))
    assert plan.layer_shapes == built.layer_shapes
    assert plan.layers[0].kron.m1 == len(vocabulary.keep_ids) < 30522 and full.layers[0].kron.m1 == 30522
    assert sum(l.kron.rank for l in plan.layers) > sum(l.kron.rank for l in full.layers)  # the rows left out pay

    path, _ = kronize_teacher(spec, config, tmp_path / "art", calibration=str(text), vocabulary="task")
    assert load_artifact(path).bert.embeddings.word_embeddings.num_embeddings == len(vocabulary.keep_ids)
    assert read_recipe(path)["vocabulary"] == {"kept": len(vocabulary.keep_ids), "of": 30522}
    with pytest.raises(PlanError, match="give one"):
        plan_teacher(spec, config, vocabulary="task")
    with pytest.raises(PlanError, match="must be full"):
        kronize_teacher(spec, config, tmp_path / "other", vocabulary="tasks")
    assert "give one" in helpers.one_line_error(["plan", spec, "--compression", "6", "--vocabulary", "task"])
