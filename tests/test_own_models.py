"""Models a user brings: other encoders, other heads, missing or slow tokenizers, small position tables.

Each case once ended in a traceback, a silently wrong model or score, or an error that came only after training.
"""

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

import helpers
from kronedge.cli import app

runner = CliRunner()


def _save_tokenizer(directory, files=("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                      "special_tokens_map.json")):
    for name in files:
        if (helpers.tokenizer_dir() / name).is_file():
            shutil.copy(helpers.tokenizer_dir() / name, directory / name)


def _saved_classifier(directory, labels=("negative", "positive"), **overrides):
    """A tiny BertForSequenceClassification saved as save_pretrained writes it, with the packaged tokenizer."""
    model = helpers.tiny_bert(num_labels=len(labels), id2label=dict(enumerate(labels)),
                              label2id={name: i for i, name in enumerate(labels)}, **overrides)
    model.save_pretrained(directory)
    _save_tokenizer(directory)
    return model


def test_an_encoder_that_is_not_bert_is_refused_before_anything_loads(in_tmp):
    """A RoBERTa's weights fit BertModel and would load, computing something else (its positions are offset)."""
    from transformers import RobertaConfig

    RobertaConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=4, intermediate_size=96).save_pretrained(
        in_tmp / "roberta")
    for command in (["plan", "roberta", "--compression", "5"], ["kronize", "roberta", "--compression", "5", "--out", "k"],
                    ["export", "roberta", "--out", "e"]):
        assert "roberta is a model of type 'roberta'; kronedge compresses BERT encoders only" in helpers.one_line_error(command)
    assert not (in_tmp / "k").exists() and not (in_tmp / "e").exists()


def test_a_head_for_other_labels_is_replaced_for_a_new_task_and_refused_for_scoring(in_tmp):
    from kronedge.teachers import load_teacher

    saved = _saved_classifier(in_tmp / "three", labels=("neg", "neu", "pos"))
    loaded = load_teacher("three", head="sequence-classification", num_labels=2).model  # was a size-mismatch traceback
    assert loaded.config.num_labels == 2 and loaded.classifier.out_features == 2
    torch.testing.assert_close(loaded.bert.encoder.layer[0].output.dense.weight,
                               saved.bert.encoder.layer[0].output.dense.weight)  # the encoder still loads
    assert "three answers ['neg', 'neu', 'pos'], not sst2's labels" in helpers.one_line_error(["eval", "three", "--task", "sst2"])
    result = runner.invoke(app, ["kronize", "three", "--compression", "3", "--structure", "svd", "--out", "k"])
    assert result.exit_code == 0, result.output
    assert json.loads((in_tmp / "k" / "config.json").read_text())["id2label"] == {"0": "neg", "1": "neu", "2": "pos"}


def test_a_folder_without_a_tokenizer_gets_bert_uncased_only_when_its_vocabulary_fits(in_tmp, caplog):
    from kronedge.teachers import load_teacher

    helpers.tiny_bert().save_pretrained(in_tmp / "uncased")  # 30522 rows: bert-base-uncased's vocabulary
    with caplog.at_level("WARNING", logger="kronedge.teachers"):
        assert load_teacher("uncased", head="sequence-classification").tokenizer_dir == helpers.tokenizer_dir()
    assert "has no tokenizer files: using bert-base-uncased's vocabulary" in caplog.text
    helpers.tiny_bert(vocab_size=21128).save_pretrained(in_tmp / "chinese")  # served, it failed on token ids
    message = helpers.one_line_error(["kronize", "chinese", "--compression", "3", "--out", "k"])
    assert "chinese has no tokenizer files" in message and "21128-token vocabulary" in message


def test_a_slow_tokenizer_alone_is_converted_for_the_runtime(in_tmp):
    """vocab.txt without tokenizer.json (an older save): the artifact and the export carry tokenizer.json."""
    from tokenizers import Tokenizer

    model = helpers.tiny_bert()
    model.save_pretrained(in_tmp / "slow")
    _save_tokenizer(in_tmp / "slow", files=("vocab.txt", "tokenizer_config.json"))
    result = runner.invoke(app, ["kronize", "slow", "--compression", "3", "--structure", "svd", "--out", "k"])
    assert result.exit_code == 0, result.output
    reference = Tokenizer.from_file(str(helpers.tokenizer_dir() / "tokenizer.json"))
    converted = Tokenizer.from_file(str(in_tmp / "k" / "tokenizer.json"))
    reference.no_padding(), converted.no_padding()  # the packaged file pads to 128
    text = "An UNUSUAL sentence, with punctuation!"
    assert converted.encode(text).ids == reference.encode(text).ids  # lower-cased as the teacher's was
    from exporters.export import export_model

    export_model("slow", in_tmp / "e", max_length=32, ort_format=False)
    assert (in_tmp / "e" / "tokenizer.json").is_file()


def test_export_defaults_to_the_positions_a_small_model_has_and_names_the_flag(in_tmp):
    from exporters.config import ExportError, ExportOptions, resolve_max_length

    config = helpers.tiny_bert_config(max_position_embeddings=64)
    options = ExportOptions()
    resolve_max_length(options, config)
    assert options.max_length == 64
    with pytest.raises(ExportError, match="--max-length 100 exceeds the model's 64 positions: pass --max-length 64"):
        resolve_max_length(ExportOptions(max_length=100), config)
    assert ExportOptions(max_length=40).max_length == 40


def test_a_model_with_one_token_type_exports_and_is_refused_for_pairs(in_tmp):
    from exporters.export import export_model
    from exporters.validate import random_inputs

    assert not random_inputs(2, 16, 100, type_vocab=1)["token_type_ids"].any()
    assert random_inputs(2, 16, 100)["token_type_ids"].any()
    _saved_classifier(in_tmp / "one", type_vocab_size=1)
    manifest = json.loads((export_model("one", in_tmp / "e", ort_format=False) / "manifest.json").read_text())
    assert manifest["validation"]["fp32"]["passed"] and manifest["max_length"] == 64  # segment ids 0 only
    spec = helpers.tiny_spec(in_tmp, type_vocab_size=1)
    assert "rte pairs two texts, but" in helpers.one_line_error(["compress", "--teacher", spec, "--task", "rte",
                                                         "--max-length", "64"])


def test_relative_positions_are_refused_before_training(in_tmp):
    spec = helpers.tiny_spec(in_tmp, position_embedding_type="relative_key")
    message = helpers.one_line_error(["compress", "--teacher", spec, "--max-length", "64"])
    assert "absolute position embeddings only, got 'relative_key'" in message and not (in_tmp / "runs").exists()


def test_a_glue_score_follows_the_heads_label_names(in_tmp):
    _saved_classifier(in_tmp / "swapped", labels=("positive", "negative"))
    message = helpers.one_line_error(["eval", "swapped", "--task", "sst2", "--limit", "8"])
    assert "orders its labels ['positive', 'negative'], sst2 orders them ['negative', 'positive']" in message
    message = helpers.one_line_error(["compress", "--teacher", "swapped", "--max-length", "64"])
    assert "its answers would be swapped" in message
    _saved_classifier(in_tmp / "upper", labels=("NEGATIVE", "POSITIVE"))  # as many hub heads name them
    result = runner.invoke(app, ["eval", "upper", "--task", "sst2", "--limit", "8"])
    assert result.exit_code == 0, result.output


def test_a_head_nobody_named_is_scored_on_a_file_in_the_datas_sorted_order(in_tmp):
    """As compress and finetune train such a head; it was refused with 'needs at least two labels, got []'."""
    helpers.tiny_bert(num_labels=2).save_pretrained(in_tmp / "unnamed")
    _save_tokenizer(in_tmp / "unnamed")
    config = json.loads((in_tmp / "unnamed" / "config.json").read_text())
    config.pop("id2label", None), config.pop("label2id", None)
    (in_tmp / "unnamed" / "config.json").write_text(json.dumps(config))
    (in_tmp / "dev.csv").write_text("text,label\nfine film,pos\ndull film,neg\nbad film,neg\n")
    result = runner.invoke(app, ["eval", "unnamed", "--validation", "dev.csv"])
    assert result.exit_code == 0, result.output
    (in_tmp / "three.csv").write_text("text,label\nfine film,pos\ndull film,neg\nok film,meh\n")
    result = runner.invoke(app, ["eval", "unnamed", "--validation", "three.csv"], env={"COLUMNS": "400"})
    assert result.exit_code == 1 and "error: unnamed's head names no labels and has 2 outputs, but the data has 3" in (
        result.output)


def test_an_int8_export_is_checked_on_the_artifacts_own_file_while_it_is_there(in_tmp):
    """Without --task the int8 check ran on generic sample sentences run together; a student of your own file is now
    checked on that file's text (a default student measured 19.0 dB on the samples and 29.7 dB on its own reviews,
    with the same dev accuracy in int8 as in fp32)."""
    from exporters.export import _own_task_data
    from kronedge.pipeline import kronize_teacher
    from kronedge.planner import KronConfig

    art = kronize_teacher(helpers.tiny_spec(in_tmp), KronConfig(compression=3, structure="svd"), in_tmp / "art")[0]
    (in_tmp / "reviews.csv").write_text("text,label\nfine film,pos\ndull film,neg\na quiet gem,pos\n")
    recipe = json.loads((art / "kronedge.json").read_text())
    recipe["compress_config"] = {"source": {"task": None, "data_dir": None, "files": {
        "version": 1, "train": str(in_tmp / "reviews.csv"), "validation": str(in_tmp / "reviews.csv")}}}
    (art / "kronedge.json").write_text(json.dumps(recipe))
    source = {"kind": "kronedge-artifact", "path": str(art)}
    assert list(_own_task_data(source).texts) == ["fine film", "dull film", "a quiet gem"]
    (in_tmp / "reviews.csv").unlink()  # moved or deleted since: the sample sentences stand in
    assert _own_task_data(source) is None
    assert _own_task_data({"kind": "hub", "path": "x"}) is None


def test_a_preset_on_an_odd_width_names_the_flags_that_fix_it(in_tmp):
    spec = helpers.tiny_spec(in_tmp, hidden_size=52, intermediate_size=104)  # 52 is no multiple of kb21's k=16
    message = helpers.one_line_error(["plan", spec, "--preset", "kb21"])
    assert "embedding width 52 is not divisible by k=16: pass --embedding-k with one of [2, 4, 13, 26, 52]" in message
